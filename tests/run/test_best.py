"""Best checkpoint and early stopping through the CLI, from a temporary working dir."""

from __future__ import annotations

import hashlib
import json

import tensorflow as tf

from helpers import seqtrain

ARGS = ["--set", "train.steps=200", "--set", "train.eval_every=4", "--set", "train.steps_per_loop=4",
        "--set", "train.checkpoint_every=100", "--set", "train.learning_rate=0.05",
        "--set", "model.units=8", "--set", "train.batch_size=16", "--set", "train.eval_batches=4",
        "--set", "train.early_stopping_patience=2", "--set", "train.best_metric=loss"]


def _hashes_of_checkpoint(prefix) -> set[str]:
    reader = tf.train.load_checkpoint(str(prefix))
    return {hashlib.sha256(reader.get_tensor(n).tobytes()).hexdigest()
            for n in reader.get_variable_to_shape_map()
            if n.startswith("model/") and reader.get_variable_to_dtype_map()[n] != tf.variant}


def _hashes_of_export(path) -> set[str]:
    loaded = tf.saved_model.load(str(path))
    return {hashlib.sha256(v.numpy().tobytes()).hexdigest() for v in loaded.variables}


def test_early_stopping_exports_the_best_checkpoint_and_stays_stopped(tmp_path):
    out = seqtrain("train", "--model-dir", "runs/es", *ARGS, cwd=tmp_path).stdout
    record = json.loads((tmp_path / "runs/es/metrics.json").read_text())["best"]
    assert record["metric"] == "loss" and record["goal"] == "min" and record["evals_since"] == 2
    assert f"early stopping at step {json.loads((tmp_path / 'runs/es/metrics.json').read_text())['step']}" in out
    evals = [float(line.split("loss=")[1]) for line in out.splitlines()
             if line.startswith("eval @ step")]
    assert abs(record["value"] - min(evals)) < 1e-4  # printed with 4 decimals
    assert all(e > record["value"] for e in evals[-2:])  # the last two did not improve
    best = tf.train.latest_checkpoint(str(tmp_path / "runs/es/checkpoints/best"))
    assert best.endswith(f"ckpt-{record['step']}")
    best_weights = _hashes_of_checkpoint(best)
    assert best_weights and best_weights <= _hashes_of_export(tmp_path / "runs/es/export")
    # The rotation's last checkpoint is a different (later, worse) state.
    last = tf.train.latest_checkpoint(str(tmp_path / "runs/es/checkpoints"))
    assert int(last.rsplit("-", 1)[1]) > record["step"]
    # Running it again does not train past the stop; raising the patience would.
    again = seqtrain("train", "--model-dir", "runs/es", cwd=tmp_path).stdout
    assert "stopped early" in again and "eval @ step" not in again
