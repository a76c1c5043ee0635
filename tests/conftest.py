"""Shared test fixtures. Tests use real strategies, real processes and real files."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from gcs_emulator import gcs  # noqa: F401  (the GCS emulator fixture)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Quiet TF logs in subprocesses; never let a test touch a real GPU/TPU or cloud.
BASE_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "CUDA_VISIBLE_DEVICES": "",
    "PYTHONUNBUFFERED": "1",
}

# Tiny settings shared by tests that run the trainer: a few steps, tiny model.
TINY = [
    "--set", "train.steps=6",
    "--set", "train.batch_size=8",
    "--set", "train.steps_per_loop=2",
    "--set", "train.checkpoint_every=4",
    "--set", "train.eval_every=6",
    "--set", "train.log_every=2",
    "--set", "train.eval_batches=2",
    "--set", "model.units=8",
]


def cli_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.pop("TF_CONFIG", None)
    env.pop("TPU_NAME", None)
    env.update(BASE_ENV)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    if extra:
        env.update(extra)
    return env


def run_cli_process(*args: str, env: dict | None = None, check: bool = True, timeout: int = 300,
                    cwd: str | None = None, input_text: str | None = None
                    ) -> subprocess.CompletedProcess:
    """Runs `seqtrain ARGS` in a fresh Python process (stdin: `input_text`) and returns it."""
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.cli", *args],
        env=cli_env(env), capture_output=True, text=True, timeout=timeout, cwd=cwd or REPO,
        input=input_text,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"seqtrain {' '.join(args)} exited {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


@pytest.fixture
def run_cli():
    """`run_cli(*args, env=None, check=True)`: seqtrain in a subprocess."""
    return run_cli_process
