"""Checkpointer: fallback to an older checkpoint, model-mismatch errors, tracking check."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import checkpoints
from trainer.errors import UserError
from trainer.models.rng import rng_state_variables


def _model(units=3):
    inp = keras.Input((4,))
    x = keras.layers.Dropout(0.5, seed=1)(keras.layers.Dense(units)(inp))
    return keras.Model(inp, keras.layers.Dense(1)(x))


def _checkpointer(tmp_path, model):
    opt = keras.optimizers.Adam()
    opt.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64)
    return checkpoints.Checkpointer(model=model, optimizer=opt, step=step,
                                    ckpt_dir=str(tmp_path / "ckpt"), keep=3, is_chief=True), step


def test_a_checkpoint_with_an_input_iterator_from_earlier_versions_restores(tmp_path):
    """Earlier versions saved the tf.data iterator as the data position; the step is
    the data position now, and such a checkpoint still restores everything else."""
    model = _model()
    opt = keras.optimizers.Adam()
    opt.build(model.trainable_variables)
    it = iter(tf.data.Dataset.range(100))
    next(it)
    old = tf.train.Checkpoint(model=model, optimizer=opt, step=tf.Variable(7, dtype=tf.int64),
                              rng=rng_state_variables(model), iterator=it)
    old.save(str(tmp_path / "ckpt" / "ckpt"))
    assert any(k.startswith("iterator") for k, _ in
               tf.train.list_variables(str(tmp_path / "ckpt" / "ckpt-1")))
    fresh = _model()
    ck, step = _checkpointer(tmp_path, fresh)
    assert ck.restore() == 1 and int(step.numpy()) == 7
    for a, b in zip(model.weights, fresh.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


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
    assert len(rng_state_variables(model)) == 1


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


# ---------------------------------------------------------------------------
# The corruption matrix: each damage either falls back (with a warning naming the
# checkpoint passed over) or is a UserError; never another exception, never None
# (None would mean "start from step 0").

def _two_checkpoints(tmp_path, rel_dir=None):
    model = _model()
    ck, _ = _checkpointer(tmp_path, model)
    ck.save(4)
    at4 = [w.numpy().copy() for w in model.weights]
    model.weights[0].assign(model.weights[0] + 1.0)
    ck.save(8)
    at8 = [w.numpy().copy() for w in model.weights]
    return tmp_path / "ckpt", at4, at8


def _data(d, step):
    return next(d.glob(f"ckpt-{step}.data-*"))


def _flip(path):
    """One bit changed mid-file: the tensor bundle's checksum fails while reading."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    # name: (damage, expected restored step)
    "newest data file deleted": (lambda d: _data(d, 8).unlink(), 4),
    "newest data file truncated": (lambda d: _data(d, 8).write_bytes(_data(d, 8).read_bytes()[:7]), 4),
    "newest data file bit-flipped": (lambda d: _flip(_data(d, 8)), 4),
    "newest index emptied": (lambda d: (d / "ckpt-8.index").write_bytes(b""), 4),
    "newest index truncated": (
        lambda d: (d / "ckpt-8.index").write_bytes((d / "ckpt-8.index").read_bytes()[:40]), 4),
    "newest index garbage": (lambda d: (d / "ckpt-8.index").write_bytes(b"\x00garbage" * 50), 4),
    "newest index deleted": (lambda d: (d / "ckpt-8.index").unlink(), 4),
    "state file emptied": (lambda d: (d / "checkpoint").write_text(""), 8),
    "state file garbage": (lambda d: (d / "checkpoint").write_text("garbage ::: {{"), 8),
    "state file deleted": (lambda d: (d / "checkpoint").unlink(), 8),
    "state file names a missing newer one": (
        lambda d: (d / "checkpoint").write_text(
            'model_checkpoint_path: "ckpt-12"\nall_model_checkpoint_paths: "ckpt-4"\n'
            'all_model_checkpoint_paths: "ckpt-8"\nall_model_checkpoint_paths: "ckpt-12"\n'), 8),
}


@pytest.mark.parametrize("damage", sorted(CORRUPTIONS))
def test_damage_falls_back_to_the_newest_readable_checkpoint(tmp_path, damage, caplog):
    d, at4, at8 = _two_checkpoints(tmp_path)
    apply, expected = CORRUPTIONS[damage]
    apply(d)
    fresh = _model()
    ck, step = _checkpointer(tmp_path, fresh)
    with caplog.at_level("WARNING"):
        assert ck.restore() == expected
    want = at4 if expected == 4 else at8
    for a, b in zip(want, fresh.weights):
        np.testing.assert_array_equal(a, b.numpy())
    assert ck.restored_path.endswith(f"ckpt-{expected}")
    if expected == 4 or "missing newer" in damage:
        skipped = "ckpt-8" if expected == 4 else "ckpt-12"
        assert any(skipped in r.getMessage() for r in caplog.records), caplog.text
    # The next save works and repairs a damaged state file.
    ck.save(expected + 1)
    assert tf.train.latest_checkpoint(str(d)).endswith(f"ckpt-{expected + 1}")


def test_files_deleted_during_a_restore_leave_nothing_for_the_next_one(tmp_path, monkeypatch):
    """An evaluator reads a live run: the trainer rotates the newest checkpoint away while
    TF is reading it. The one before is then restored, and so is a newer one later. (A
    tf.train.Checkpoint whose restore failed part-way replayed that restore at the next
    one and failed it with the deleted files' error; seen in CI's evaluate --watch test.)"""
    from tensorflow.python.checkpoint import functional_saver

    d, at4, _ = _two_checkpoints(tmp_path)
    read = functional_saver.io_ops.restore_v2

    def rotated_while_read(*args, **kwargs):
        for p in d.glob("ckpt-8.*"):
            p.unlink()
        return read(*args, **kwargs)

    fresh = _model()
    ck, step = _checkpointer(tmp_path, fresh)
    monkeypatch.setattr(functional_saver.io_ops, "restore_v2", rotated_while_read)
    assert ck.restore() == 4
    monkeypatch.setattr(functional_saver.io_ops, "restore_v2", read)
    for a, b in zip(at4, fresh.weights):
        np.testing.assert_array_equal(a, b.numpy())
    assert "ckpt-8" in ck.skipped[0]
    # The trainer writes a newer one; the same checkpointer restores it.
    newer = _model()
    newer.weights[0].assign(newer.weights[0] + 2.0)
    _checkpointer(tmp_path, newer)[0].save(12)
    ck.skipped.clear()
    assert ck.restore() == 12 and not ck.skipped
    for a, b in zip(newer.weights, fresh.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_every_checkpoint_unreadable_is_a_user_error_naming_each(tmp_path):
    d, _, _ = _two_checkpoints(tmp_path)
    for step in (4, 8):
        (d / f"ckpt-{step}.index").write_bytes(b"garbage")
    ck, _ = _checkpointer(tmp_path, _model())
    with pytest.raises(UserError) as e:
        ck.restore()
    msg = str(e.value)
    assert "none of the 2 checkpoint(s)" in msg and "ckpt-4" in msg and "ckpt-8" in msg
    assert "Delete" not in msg  # never advise deleting checkpoints


def test_restore_writes_nothing(tmp_path):
    d, _, _ = _two_checkpoints(tmp_path)
    (d / "checkpoint").write_text("garbage")
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    ck, _ = _checkpointer(tmp_path, _model())
    assert ck.restore() == 8
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before


def test_a_relative_checkpoint_dir_restores(tmp_path, monkeypatch):
    """The README's `--model-dir runs/a`: a relative dir, discovered from the files."""
    monkeypatch.chdir(tmp_path)
    rel = os.path.join("runs", "a", "checkpoints")

    def checkpointer(model):
        opt = keras.optimizers.Adam()
        opt.build(model.trainable_variables)
        return checkpoints.Checkpointer(
            model=model, optimizer=opt, step=tf.Variable(0, dtype=tf.int64),
            ckpt_dir=rel, keep=3, is_chief=True)

    model = _model()
    checkpointer(model).save(3)
    fresh = _model()
    again = checkpointer(fresh)
    assert again.restore() == 3
    assert again.restored_path == os.path.join(rel, "ckpt-3")
    for a, b in zip(model.weights, fresh.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_save_killed_before_its_rename_is_not_a_checkpoint(tmp_path):
    """kill -9 during the first save leaves only TF's staging dir: nothing was saved, so the
    run may start from step 0 (found by scripts/chaos.py; it used to be refused forever)."""
    staging = tmp_path / "ckpt" / "ckpt-10_temp"
    staging.mkdir(parents=True)
    (staging / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"partial")
    assert checkpoints.discover(str(tmp_path / "ckpt")) == []
    assert not checkpoints.has_checkpoint_files(str(tmp_path / "ckpt"))
    (tmp_path / "ckpt" / "ckpt-20.data-00000-of-00001").write_bytes(b"orphan")
    assert checkpoints.has_checkpoint_files(str(tmp_path / "ckpt"))  # this one is refused
