"""The fused CPU GRU and SimpleRNN loops compute exactly what Keras' layers compute.

Outputs, states and every gradient (inputs, initial state, kernel, recurrent
kernel, bias) are compared in float64 against the stock layer with the same
weights, over the options the tasks use: masks with right padding,
go_backwards and Bidirectional, zero_output_for_mask, return_state with a
given initial state, input dropout, no bias, and GRU's `reset_after` both
ways. Every comparison also asserts, through `fused.TRACES`, that the fused
forward and backward passes ran and that the stock layer did not run them.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import experiment
from trainer import kernels, registry
from trainer.models import fused
from trainer.models.fused_gru import FusedGRU, gru_sequence
from trainer.models.fused_simple_rnn import FusedSimpleRNN, simple_rnn_sequence

# With a GPU visible the fused layers step aside for Keras (cuDNN). Hide GPUs
# in this process before any op so the comparisons are fused vs stock on any
# machine; if an earlier module already started the runtime this cannot take
# effect, and the TRACES assertions below fail instead of passing vacuously.
try:
    tf.config.set_visible_devices([], "GPU")
except RuntimeError:
    pass

B, T, E, U = 3, 5, 4, 6
LENGTHS = np.array([5, 3, 1])  # right padding

# name -> (stock class, fused class, layer kwargs, TRACES key)
CELLS = {
    "gru": (keras.layers.GRU, FusedGRU, {}, "gru"),
    "gru_reset_before": (keras.layers.GRU, FusedGRU, {"reset_after": False}, "gru"),
    "simple_rnn": (keras.layers.SimpleRNN, FusedSimpleRNN, {}, "simple_rnn"),
}


def _run(cls, kwargs, *, bidirectional=False, return_sequences=True, go_backwards=False,
         zero_output=None, masked=True, dropout=0.0, training=True, use_bias=True):
    """Output and gradients of sum(output * w) for a one-layer model of `cls`."""
    keras.utils.set_random_seed(1)
    layer = cls(U, return_sequences=return_sequences, go_backwards=go_backwards,
                dropout=dropout, seed=3, use_bias=use_bias, dtype="float64",
                bias_initializer="random_normal", **kwargs)
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


def _traced(key, fn):
    """fn()'s result, and how many times the fused forward/backward of `key` ran in it."""
    before = (fused.TRACES[key], fused.TRACES[key + "_grad"])
    out = fn()
    return out, (fused.TRACES[key] - before[0], fused.TRACES[key + "_grad"] - before[1])


CASES = [
    dict(masked=False),
    dict(masked=False, return_sequences=False),
    dict(masked=False, use_bias=False),
    dict(),
    dict(use_bias=False),
    dict(zero_output=True),
    dict(zero_output=True, return_sequences=False),
    dict(return_sequences=False),
    dict(go_backwards=True),
    dict(go_backwards=True, zero_output=True),
    dict(bidirectional=True),
    dict(bidirectional=True, return_sequences=False),
    dict(dropout=0.4),
    dict(dropout=0.4, training=False),
]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items())
                         or "plain")
def test_matches_keras(cell, case):
    stock_cls, fused_cls, kwargs, key = CELLS[cell]
    stock, stock_runs = _traced(key, lambda: _run(stock_cls, kwargs, **case))
    out, runs = _traced(key, lambda: _run(fused_cls, kwargs, **case))
    directions = 2 if case.get("bidirectional") else 1
    # build + forward with tape: 2 forward runs per direction, one backward.
    assert stock_runs == (0, 0) and runs == (2 * directions, directions)
    assert len(stock) == len(out) >= 4
    for a, b in zip(stock, out):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)
    assert np.abs(stock[1]).sum() > 0  # the gradient is not trivially zero


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
def test_initial_state_and_return_state_gradients(cell, graph):
    """The seq2seq decoder's use: a state in, a state out, gradients into both."""
    stock_cls, fused_cls, kwargs, key = CELLS[cell]
    rng = np.random.default_rng(2)
    x, h0 = tf.constant(rng.normal(size=(B, T, E))), tf.constant(rng.normal(size=(B, U)))
    results = []
    for cls in (stock_cls, fused_cls):
        keras.utils.set_random_seed(1)
        layer = cls(U, return_sequences=True, return_state=True, dtype="float64",
                    bias_initializer="random_normal", **kwargs)
        layer.build((B, T, E))

        def step(x, h0):
            with tf.GradientTape() as tape:
                tape.watch([x, h0])
                y, h = layer(x, initial_state=[h0], training=True)
                loss = tf.reduce_sum(y * y) + tf.reduce_sum(1.3 * h * h)
            return [y, h] + tape.gradient(loss, [x, h0] + layer.trainable_variables)

        out, runs = _traced(key, lambda: (tf.function(step) if graph else step)(x, h0))
        assert runs == ((0, 0) if cls is stock_cls else (1, 1))
        results.append(out)
    for a, b in zip(*results):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_gradient_through_the_final_state_alone(cell):
    """An encoder whose outputs are unused: only h_T carries gradient."""
    stock_cls, fused_cls, kwargs, key = CELLS[cell]
    x = tf.constant(np.random.default_rng(4).normal(size=(B, T, E)))
    grads = []
    for cls in (stock_cls, fused_cls):
        keras.utils.set_random_seed(1)
        layer = cls(U, return_sequences=True, return_state=True, dtype="float64", **kwargs)
        layer.build((B, T, E))
        with tf.GradientTape() as tape:
            _, h = layer(x, training=True)
            loss = tf.reduce_sum(h * h)
        grads.append(tape.gradient(loss, layer.trainable_variables))
    for a, b in zip(*grads):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=0, atol=1e-12)


MASK = tf.constant([[[1.0], [1.0]], [[1.0], [0.0]], [[1.0], [0.0]], [[0.0], [0.0]]], tf.float64)


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("variant", ["reset_after", "reset_after_no_bias", "reset_before"])
def test_gru_sequence_gradient_matches_finite_differences(variant, masked):
    """The hand-written backward pass against TF's numeric gradient."""
    rng = np.random.default_rng(3)
    zx, h0 = tf.constant(rng.normal(size=(4, 2, 9))), tf.constant(rng.normal(size=(2, 3)))
    rk = tf.constant(rng.normal(size=(3, 9)) * 0.5)
    rb = tf.constant(rng.normal(size=(9,)))
    b_in = tf.constant(rng.normal(size=(9,)))
    reset_after = variant != "reset_before"
    with_bias = variant == "reset_after"
    mask = MASK if masked else None

    def f(zx, h0, rk, rb, b_in):
        ys, h = gru_sequence(zx, h0, rk, rb if with_bias else None, mask,
                             reset_after=reset_after, input_bias=b_in)
        return tf.reduce_sum(ys * ys) + tf.reduce_sum(h)

    theoretical, numerical = tf.test.compute_gradient(f, [zx, h0, rk, rb, b_in], delta=1e-5)
    for t, n in zip(theoretical, numerical):
        np.testing.assert_allclose(t, n, rtol=0, atol=1e-8)
    assert np.abs(theoretical[2]).sum() > 0


@pytest.mark.parametrize("zero_output", [False, True])
@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_simple_rnn_sequence_gradient_matches_finite_differences(masked, zero_output):
    rng = np.random.default_rng(5)
    zx, h0 = tf.constant(rng.normal(size=(4, 2, 3))), tf.constant(rng.normal(size=(2, 3)))
    rk = tf.constant(rng.normal(size=(3, 3)) * 0.5)
    bias = tf.constant(rng.normal(size=(3,)))

    def f(zx, h0, rk, bias):
        ys, h = simple_rnn_sequence(zx, h0, rk, MASK if masked else None, zero_output, bias)
        return tf.reduce_sum(ys * ys) + tf.reduce_sum(h)

    theoretical, numerical = tf.test.compute_gradient(f, [zx, h0, rk, bias], delta=1e-5)
    for t, n in zip(theoretical, numerical):
        np.testing.assert_allclose(t, n, rtol=0, atol=1e-8)


@pytest.mark.parametrize("cell,option,value", [
    ("gru", "recurrent_dropout", 0.2), ("gru", "activation", "relu"), ("gru", "unroll", True),
    ("gru", "recurrent_activation", "hard_sigmoid"),
    ("simple_rnn", "recurrent_dropout", 0.2), ("simple_rnn", "activation", "relu"),
])
def test_options_the_loop_does_not_implement_fall_back_to_keras(cell, option, value):
    stock_cls, fused_cls, _, key = CELLS[cell]
    layer = fused_cls(U, **{option: value})
    layer.build((B, T, E))
    assert not layer.fusable()
    stock = stock_cls(U, **{option: value})
    stock.build((B, T, E))
    stock.set_weights(layer.get_weights())
    x = np.random.default_rng(0).normal(size=(B, T, E)).astype("float32")
    out, runs = _traced(key, lambda: layer(x))
    assert runs == (0, 0)
    np.testing.assert_allclose(out, stock(x), atol=1e-6)


def _model(task_name, *overrides):
    config = experiment.load(task=task_name, overrides=list(overrides))
    task = registry.get(task_name)(config)
    task.prepare()
    keras.utils.set_random_seed(0)
    return task.build_model()


@pytest.mark.parametrize("cell,fused_cls,stock_cls", [
    ("gru", FusedGRU, keras.layers.GRU), ("simple_rnn", FusedSimpleRNN, keras.layers.SimpleRNN)])
def test_cell_option_picks_the_fused_layer_and_checkpoints_interchange(
        tmp_path, cell, fused_cls, stock_cls):
    """model.cell + model.cpu_kernel pick the loop; checkpoints move between the two models."""
    small = ["model.units=8", "model.layers=1", "model.embedding_dim=4", "data.seq_len=12",
             f"model.cell={cell}"]
    fast = _model("text_generation", *small)
    stock = _model("text_generation", *small, "model.cpu_kernel=keras")
    assert type(fast.get_layer(f"rnn_{cell}_0")) is fused_cls
    assert type(stock.get_layer(f"rnn_{cell}_0")) is stock_cls
    assert [(r["cpu_loop"], r["loop"]) for r in kernels.cudnn_report(fast)] == [
        ("fused", "fused")]
    assert [(r["cpu_loop"], r["loop"]) for r in kernels.cudnn_report(stock)] == [
        ("keras", "keras")]

    path = tf.train.Checkpoint(model=fast).save(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(model=stock).restore(path).assert_existing_objects_matched()
    ids = np.random.default_rng(0).integers(1, 10, size=(2, 12)).astype("int32")
    expected = stock(ids)
    out, runs = _traced(cell, lambda: fast(ids))
    assert runs[0] == 1
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_report_shows_the_loop_that_runs_when_a_gpu_is_visible(monkeypatch):
    """On a GPU host the fused layers step aside: cuDNN when eligible, else Keras' loop."""
    model = _model("text_classification", "model.units=4", "model.cell=gru")
    on_cpu = kernels.cudnn_report(model)
    assert {(r["cpu_loop"], r["loop"]) for r in on_cpu} == {("fused", "fused")}
    monkeypatch.setattr(tf.config, "list_logical_devices",
                        lambda kind=None: ["/device:GPU:0"] if kind == "GPU" else [])
    assert {(r["cpu_loop"], r["loop"]) for r in kernels.cudnn_report(model)} == {
        ("fused", "cudnn")}
    left = kernels.cudnn_report(model, padding="left")
    assert {(r["cpu_loop"], r["loop"]) for r in left} == {("fused", "keras")}
    assert "loop keras" in kernels.format_report(left)
