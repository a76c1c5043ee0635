"""A real SIGTERM: checkpoint within the grace period, retryable exit code, exact resume."""

from __future__ import annotations

import signal
import subprocess
import sys

import tensorflow as tf

from helpers import assert_checkpoints_equal, ckpt, cli_env, seqtrain
from trainer.errors import EXIT_PREEMPTED

ARGS = [
    "--set", "train.steps=300", "--set", "train.batch_size=8", "--set", "train.steps_per_loop=2",
    "--set", "train.checkpoint_every=1000", "--set", "train.eval_every=1000",
    "--set", "train.log_every=2", "--set", "train.eval_batches=1", "--set", "model.units=8",
    "--set", "model.dropout=0.2", "--set", "data.vocab_size=64", "--set", "data.sequence_length=12",
]


def test_sigterm_saves_exits_retryable_and_resumes_exactly(tmp_path):
    run = tmp_path / "preempted"
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer.cli", "train", "--model-dir", str(run), *ARGS],
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Wait until training is under way, then preempt it like a node drain would.
    for line in proc.stdout:
        if line.startswith("step 4/"):
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
    assert "retryable code 143" in err and "Traceback" not in err
    saved = tf.train.latest_checkpoint(str(run / "checkpoints"))
    assert saved is not None, "no checkpoint was written on SIGTERM"
    stopped_at = int(saved.rsplit("-", 1)[1])
    assert 4 <= stopped_at < 300
    assert not (run / "export").exists()

    resumed = seqtrain("train", "--model-dir", str(run), *ARGS)
    assert f"resumed from {saved} at step {stopped_at}" in resumed.stdout

    reference = tmp_path / "uninterrupted"
    seqtrain("train", "--model-dir", str(reference), *ARGS)
    assert_checkpoints_equal(ckpt(run, 300), ckpt(reference, 300), must_have=("optimizer", "rng"))
