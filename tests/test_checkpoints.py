"""Checkpointer: fallback to an older checkpoint, model-mismatch errors, tracking check."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import checkpoints
from trainer.errors import UserError


def _model(units=3):
    inp = keras.Input((4,))
    x = keras.layers.Dropout(0.5, seed=1)(keras.layers.Dense(units)(inp))
    return keras.Model(inp, keras.layers.Dense(1)(x))


def _checkpointer(tmp_path, model, iterator=None):
    opt = keras.optimizers.Adam()
    opt.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64)
    it = iterator if iterator is not None else iter(tf.data.Dataset.range(100))
    return checkpoints.Checkpointer(model=model, optimizer=opt, step=step, iterator=it,
                                    ckpt_dir=str(tmp_path / "ckpt"), keep=3, is_chief=True), step


def test_restore_falls_back_to_an_older_checkpoint_when_the_newest_is_corrupt(tmp_path):
    model = _model()
    ck, step = _checkpointer(tmp_path, model)
    first = [w.numpy().copy() for w in model.weights]
    ck.save(5)
    model.weights[0].assign(model.weights[0] + 1.0)
    ck.save(9)
    # A node died mid-upload: the newest data file is truncated.
    data = next((tmp_path / "ckpt").glob("ckpt-9.data-*"))
    data.write_bytes(data.read_bytes()[:10])
    fresh = _model()
    ck2, _ = _checkpointer(tmp_path, fresh)
    assert ck2.restore() == 5
    for a, b in zip(first, fresh.weights):
        np.testing.assert_array_equal(a, b.numpy())


def test_rng_states_are_saved(tmp_path):
    model = _model()
    ck, _ = _checkpointer(tmp_path, model)
    path = ck.save(1)
    names = [n for n, _ in tf.train.list_variables(path)]
    assert any(n.startswith("rng/") for n in names)
    assert len(checkpoints.rng_state_variables(model)) == 1


def test_a_changed_model_is_a_user_error(tmp_path):
    ck, _ = _checkpointer(tmp_path, _model(units=3))
    ck.save(2)
    other, _ = _checkpointer(tmp_path, _model(units=5))
    with pytest.raises(UserError, match="does not match the model being built"):
        other.restore()


def test_nothing_to_restore(tmp_path):
    ck, _ = _checkpointer(tmp_path, _model())
    assert ck.restore() is None


def test_weights_hidden_in_a_python_list_are_refused():
    class Listy(keras.Model):
        def __init__(self):
            super().__init__()
            self.stack = [keras.layers.Dense(3), keras.layers.Dense(1)]

        def call(self, x):
            for layer in self.stack:
                x = layer(x)
            return x

    model = Listy()
    model(tf.zeros((1, 4)))
    with pytest.raises(RuntimeError, match="not tracked by tf.train.Checkpoint"):
        checkpoints.check_trackable(model)
