"""`seqtrain evaluate --watch`: a side-car evaluator next to a trainer that skips in-loop eval."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from helpers import cli_env, read_scalars

TRAIN = ["--set", "train.steps=24", "--set", "train.checkpoint_every=6", "--set", "train.eval_every=6",
         "--set", "train.steps_per_loop=2", "--set", "train.batch_size=8", "--set", "model.units=8",
         "--set", "train.eval_batches=2", "--set", "train.eval_in_loop=false",
         "--set", "train.keep_checkpoints=1"]


def test_watch_evaluates_new_checkpoints_until_the_final_step(tmp_path):
    env = cli_env()
    # The evaluator starts first (it waits for the run's config.yaml if it is early).
    evaluator = subprocess.Popen(
        [sys.executable, "-m", "trainer.cli", "evaluate", "--model-dir", "runs/w", "--watch",
         "--poll-secs", "0.5"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    trainer = subprocess.run([sys.executable, "-m", "trainer.cli", "train", "--model-dir",
                              "runs/w", *TRAIN], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=600)
    assert trainer.returncode == 0, trainer.stderr[-3000:]
    assert "eval @ step" not in trainer.stdout  # the trainer left evaluation to the evaluator
    out, err = evaluator.communicate(timeout=600)
    assert evaluator.returncode == 0, err[-3000:]
    steps = [int(line.split()[3]) for line in out.splitlines() if line.startswith("eval @ step")]
    assert steps and steps == sorted(set(steps)) and steps[-1] == 24  # each once, ends at the end
    metrics = json.loads((tmp_path / "runs/w/metrics.json").read_text())
    assert metrics["step"] == 24 and "accuracy" in metrics["metrics"]
    assert metrics["best"]["metric"] == "accuracy"
    assert set(read_scalars(tmp_path / "runs/w/eval", "accuracy")) == set(steps)
    # A restarted evaluator has nothing left to do and ends at once.
    again = subprocess.run([sys.executable, "-m", "trainer.cli", "evaluate", "--model-dir",
                            "runs/w", "--watch", "--poll-secs", "0.5"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "eval @ step" not in again.stdout
