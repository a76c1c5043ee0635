"""A worker of a raw TF_CONFIG MultiWorkerMirrored run is killed -9 mid-step: the
survivor exits with the retryable 144, says which peer it lost and what to do, and
the model dir keeps a readable checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from helpers import checkpoint_values, cli_env
from trainer.launch import free_ports

TINY = ["--task", "text_classification", "--set", "train.batch_size=8",
        "--set", "model.units=8", "--set", "model.embedding_dim=8", "--set", "model.dense_units=8",
        "--set", "data.vocab_size=64", "--set", "data.sequence_length=12",
        "--set", "train.steps=100000", "--set", "train.steps_per_loop=2",
        "--set", "train.checkpoint_every=4", "--set", "train.eval_every=100000",
        "--set", "train.log_every=2", "--set", "train.eval_batches=0"]

# How long the survivor may take to exit after the kill. A collective in flight fails
# at once (the dead peer's socket is reset: 1-3 s measured here); otherwise TF's
# coordination service notices the missing heartbeats after its default
# heartbeat_timeout (10 s, kDefaultHeartbeatTimeoutMs in tsl's coordination_service.cc)
# and tells the survivor within kServiceToClientTimeoutMs (10 s): at most ~20 s, as
# scripts/chaos.py f measured (4.0 and 20.8 s). The rest is margin for a loaded 2-core CI.
EXIT_BOUND_SECS = 45


@pytest.mark.parametrize("victim", [1, 0], ids=["worker-1-killed", "chief-killed"])
def test_a_killed_peer_makes_the_survivor_exit_144_naming_it(tmp_path, victim):
    ports = free_ports(2)
    workers = []
    for index in range(2):
        tf_config = {"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                     "task": {"type": "worker", "index": index}}
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "trainer.cli", "train", "--model-dir", "runs/mw", *TINY],
            cwd=tmp_path, env=cli_env({"TF_CONFIG": json.dumps(tf_config)}),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    chief, survivor = workers[0], workers[1 - victim]
    try:
        for line in chief.stdout:  # the chief logs progress; both are in the loop by then
            if line.startswith("step ") and (tmp_path / "runs/mw/checkpoints/checkpoint").exists():
                break
        else:
            raise AssertionError(f"no progress after a checkpoint: {chief.stderr.read()[-3000:]}")
        time.sleep(0.5)  # a few compiled loops further: mid-step, not at the save
        workers[victim].kill()
        killed = time.monotonic()
        _, err = survivor.communicate(timeout=EXIT_BOUND_SECS + 60)
        took = time.monotonic() - killed
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()

    assert survivor.returncode == 144, err[-3000:]
    assert took <= EXIT_BOUND_SECS, f"survivor exited {took:.1f} s after the kill"
    assert "Traceback" not in err, err[-3000:]
    said = [line for line in err.splitlines() if "lost another worker" in line]
    assert len(said) == 1, err[-3000:]
    assert f"worker {victim} (localhost:{ports[victim]})" in said[0], said[0]
    assert "retryable code 144" in said[0] and "start every worker again" in said[0], said[0]
    assert "Graph execution error" not in said[0]

    saved = tf.train.latest_checkpoint(str(tmp_path / "runs/mw/checkpoints"))
    assert saved is not None and int(saved.rsplit("-", 1)[1]) >= 4, saved
    values = checkpoint_values(saved)  # every tensor reads back
    assert any("optimizer" in name for name in values), sorted(values)
