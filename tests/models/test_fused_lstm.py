"""The fused CPU LSTM loop computes exactly what keras.layers.LSTM computes.

Outputs, states and every gradient (inputs, initial states, kernel,
recurrent kernel, bias) are compared in float64 against the stock layer with
the same weights, over the options the tasks use: masks with right padding,
go_backwards and Bidirectional, zero_output_for_mask, return_state with a
given initial state, and input dropout. Each comparison also asserts, through
`fused.TRACES`, that the fused forward and backward passes ran and that the
stock layer did not run them.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import experiment
from trainer import kernels, registry
from trainer.models import fused
from trainer.models.fused_lstm import FusedLSTM, lstm_sequence

# With a GPU visible FusedLSTM steps aside for Keras (cuDNN). Hide GPUs in
# this process before any op so the comparisons are fused vs stock on any
# machine; if an earlier module already started the runtime this cannot take
# effect, and the TRACES assertions below fail instead of passing vacuously.
try:
    tf.config.set_visible_devices([], "GPU")
except RuntimeError:
    pass

B, T, E, U = 3, 5, 4, 6
LENGTHS = np.array([5, 3, 1])  # right padding


def _run(cls, *, bidirectional=False, return_sequences=True, go_backwards=False,
         zero_output=None, masked=True, dropout=0.0, training=True):
    """Output and gradients of sum(output * w) for a one-layer model of `cls`."""
    keras.utils.set_random_seed(1)
    layer = cls(U, return_sequences=return_sequences, go_backwards=go_backwards,
                dropout=dropout, seed=3, dtype="float64")
    if zero_output is not None:
        layer.zero_output_for_mask = zero_output
    if bidirectional:
        layer = keras.layers.Bidirectional(layer, dtype="float64")
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(B, T, E)))
    mask = tf.constant(np.arange(T)[None] < LENGTHS[:, None]) if masked else None
    layer(x, mask=mask)  # build
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, mask=mask, training=training)
        loss = tf.reduce_sum(y * np.random.default_rng(1).normal(size=y.shape))
    grads = tape.gradient(loss, [x] + layer.trainable_variables)
    return [y.numpy()] + [g.numpy() for g in grads]


def _traced(fn):
    """fn()'s result, and how many times the fused LSTM forward/backward ran in it."""
    before = (fused.TRACES["lstm"], fused.TRACES["lstm_grad"])
    out = fn()
    return out, (fused.TRACES["lstm"] - before[0], fused.TRACES["lstm_grad"] - before[1])


CASES = [
    dict(masked=False),
    dict(masked=False, return_sequences=False),
    dict(),
    dict(zero_output=True),
    dict(return_sequences=False),
    dict(go_backwards=True),
    dict(go_backwards=True, zero_output=True),
    dict(bidirectional=True),
    dict(bidirectional=True, return_sequences=False),
    dict(dropout=0.4),
    dict(dropout=0.4, training=False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items())
                         or "plain")
def test_matches_keras_lstm(case):
    stock, stock_runs = _traced(lambda: _run(keras.layers.LSTM, **case))
    out, runs = _traced(lambda: _run(FusedLSTM, **case))
    directions = 2 if case.get("bidirectional") else 1
    # build + forward with tape: 2 forward runs per direction, one backward.
    assert stock_runs == (0, 0) and runs == (2 * directions, directions)
    assert len(stock) == len(out) >= 4
    for a, b in zip(stock, out):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)
    assert np.abs(stock[1]).sum() > 0  # the gradient is not trivially zero


def test_initial_state_and_return_state_gradients():
    """The seq2seq decoder's use: states in, states out, gradients into both."""
    rng = np.random.default_rng(2)
    x, h0, c0 = (tf.constant(rng.normal(size=s)) for s in ((B, T, E), (B, U), (B, U)))
    results = []
    for cls in (keras.layers.LSTM, FusedLSTM):
        keras.utils.set_random_seed(1)
        layer = cls(U, return_sequences=True, return_state=True, dtype="float64")

        def step():
            with tf.GradientTape() as tape:
                tape.watch([x, h0, c0])
                y, h, c = layer(x, initial_state=[h0, c0])
                loss = tf.reduce_sum(y * y) + tf.reduce_sum(1.3 * h) + tf.reduce_sum(c * c)
            return [y, h, c] + tape.gradient(loss, [x, h0, c0] + layer.trainable_variables)

        out, runs = _traced(step)
        assert runs == ((0, 0) if cls is keras.layers.LSTM else (1, 1))
        results.append(out)
    for a, b in zip(*results):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=0, atol=1e-12)


def test_lstm_sequence_gradient_matches_finite_differences():
    """The hand-written backward pass against TF's numeric gradient, with a mask."""
    rng = np.random.default_rng(3)
    zx = tf.constant(rng.normal(size=(4, 2, 12)))
    h0, c0 = tf.constant(rng.normal(size=(2, 3))), tf.constant(rng.normal(size=(2, 3)))
    rk = tf.constant(rng.normal(size=(3, 12)) * 0.5)
    mask = tf.constant([[[1.0], [1.0]], [[1.0], [0.0]], [[1.0], [0.0]], [[0.0], [0.0]]],
                       tf.float64)

    bias = tf.constant(rng.normal(size=(12,)))

    def f(zx, h0, c0, rk, bias):
        ys, h, c = lstm_sequence(zx, h0, c0, rk, mask, bias=bias)
        return tf.reduce_sum(ys * ys) + tf.reduce_sum(h) + tf.reduce_sum(c * c)

    theoretical, numerical = tf.test.compute_gradient(f, [zx, h0, c0, rk, bias], delta=1e-5)
    for t, n in zip(theoretical, numerical):
        np.testing.assert_allclose(t, n, rtol=0, atol=1e-8)


@pytest.mark.parametrize("option,value", [("recurrent_dropout", 0.2), ("activation", "relu"),
                                          ("unroll", True)])
def test_options_the_loop_does_not_implement_fall_back_to_keras(option, value):
    layer = FusedLSTM(U, **{option: value})
    layer.build((B, T, E))
    assert not layer.fusable()
    stock = keras.layers.LSTM(U, **{option: value})
    stock.build((B, T, E))
    stock.set_weights(layer.get_weights())
    x = np.random.default_rng(0).normal(size=(B, T, E)).astype("float32")
    out, runs = _traced(lambda: layer(x))
    assert runs == (0, 0)
    np.testing.assert_allclose(out, stock(x), atol=1e-6)


def _model(task_name, *overrides):
    config = experiment.load(task=task_name, overrides=list(overrides))
    task = registry.get(task_name)(config)
    task.prepare()
    keras.utils.set_random_seed(0)
    return task.build_model()


def test_cpu_kernel_option_and_checkpoint_interchange(tmp_path):
    """model.cpu_kernel picks the loop; checkpoints move between the two models."""
    small = ["model.units=8", "model.layers=1", "model.embedding_dim=4", "data.seq_len=12"]
    fast = _model("text_generation", *small)
    stock = _model("text_generation", *small, "model.cpu_kernel=keras")
    assert type(fast.get_layer("rnn_lstm_0")) is FusedLSTM
    assert type(stock.get_layer("rnn_lstm_0")) is keras.layers.LSTM
    report = kernels.cudnn_report(fast)
    assert [(r["type"], r["eligible"], r["cpu_loop"], r["loop"]) for r in report] == [
        ("LSTM", True, "fused", "fused")]
    assert [(r["cpu_loop"], r["loop"]) for r in kernels.cudnn_report(stock)] == [
        ("keras", "keras")]

    path = tf.train.Checkpoint(model=fast).save(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(model=stock).restore(path).assert_existing_objects_matched()
    ids = np.random.default_rng(0).integers(1, 10, size=(2, 12)).astype("int32")
    expected = stock(ids)
    out, runs = _traced(lambda: fast(ids))
    assert runs[0] == 1
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_traced_output_keeps_static_time_dimension():
    """TimeDistributed/Reshape after the layer need the static shape (multistep decoder)."""
    layer = FusedLSTM(U, return_sequences=True)
    fn = tf.function(lambda x: layer(x, training=True))
    out = fn.get_concrete_function(tf.TensorSpec([None, T, E], tf.float32)).structured_outputs
    assert out.shape.as_list() == [None, T, U]


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
def test_gradient_through_the_final_state_alone(graph):
    """An encoder whose outputs are unused: only h_T, c_T carry gradient."""
    x = tf.constant(np.random.default_rng(4).normal(size=(B, T, E)))
    grads = []
    for cls in (keras.layers.LSTM, FusedLSTM):
        keras.utils.set_random_seed(1)
        layer = cls(U, return_sequences=True, return_state=True, dtype="float64")
        layer.build((B, T, E))

        def state_grads(x):
            with tf.GradientTape() as tape:
                _, h, c = layer(x, training=True)
                loss = tf.reduce_sum(h * h) + tf.reduce_sum(c)
            return tape.gradient(loss, layer.trainable_variables)

        out, runs = _traced(lambda: tf.function(state_grads)(x) if graph else state_grads(x))
        assert runs == ((0, 0) if cls is keras.layers.LSTM else (1, 1))
        grads.append(out)
    for a, b in zip(*grads):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=0, atol=1e-12)
