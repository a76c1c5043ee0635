"""Shared test fixtures. Tests use real strategies, real processes and real files."""

from __future__ import annotations

import pytest
from gcs_emulator import gcs  # noqa: F401  (the GCS emulator fixture)

from helpers import BASE_ENV, REPO, cli_env, run_cli_process, seqtrain  # noqa: F401

# Tiny settings shared by tests that run the trainer: a few steps, tiny model, no XLA
# compilation (runtime.jit_compile=auto turns it on for four tasks on CPU, and compiling
# was about 40% of a tiny translation run: 23.5 s against 14.2 s). The default XLA path
# keeps its own runs: test_resume.py, test_translation.py's default-strategy resume,
# test_mixed_precision.py.
TINY = [
    "--set", "train.steps=6",
    "--set", "train.batch_size=8",
    "--set", "train.steps_per_loop=2",
    "--set", "train.checkpoint_every=4",
    "--set", "train.eval_every=6",
    "--set", "train.log_every=2",
    "--set", "train.eval_batches=2",
    "--set", "model.units=8",
    "--set", "runtime.jit_compile=false",
]


@pytest.fixture
def run_cli():
    """`run_cli(*args, env=None, check=True)`: seqtrain in a subprocess."""
    return run_cli_process


# --dist loadscope hands whole modules to the two workers in collection order. xdist's
# default reorders them by test count, which put the heaviest modules (the README tour,
# chaos, signals, lost peers, early stopping: 1-2 long tests each) last, so one worker
# ran them alone at the end. These start first instead (longest first, so the end of a
# run is made of short modules); the rest keep their order (pytest.ini turns xdist's
# reordering off). Roughly heaviest first by the trainer processes each module starts;
# refresh from the `--durations` table CI prints when a module's cost changes a lot.
HEAVY_FIRST = [
    "test_resume.py", "test_run_integrity.py", "test_readme.py", "test_mixed_precision.py",
    "test_gcs_e2e.py", "test_translation.py", "test_train.py", "test_forecasting.py",
    "test_text_generation.py", "test_chaos_quick.py", "test_signals_more.py",
    "test_lost_peer.py", "test_profiling.py", "test_bad_inputs.py", "test_best.py", "test_evaluator.py",
    "test_preemption.py", "test_docs_data.py", "test_launch.py",
]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: modules stay whole
