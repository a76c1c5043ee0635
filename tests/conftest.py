"""Shared test fixtures. Tests use real strategies, real processes and real files."""

from __future__ import annotations

import pytest
from gcs_emulator import gcs  # noqa: F401  (the GCS emulator fixture)

from helpers import BASE_ENV, REPO, cli_env, run_cli_process, seqtrain  # noqa: F401

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


@pytest.fixture
def run_cli():
    """`run_cli(*args, env=None, check=True)`: seqtrain in a subprocess."""
    return run_cli_process
