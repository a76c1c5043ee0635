"""TensorFlow's CPU tensors come from the BFC pool in every process that imports
`trainer` first (trainer/__init__.py), and an explicit setting in the environment wins."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import cli_env

PROBE = ("import trainer.runner as r, tensorflow as tf; tf.ones([256, 256]); "
         "print(r.cpu_allocator())")


@pytest.mark.parametrize("setting,expected", [(None, "bfc"), ("false", "malloc")])
def test_the_pool_is_the_default_and_the_environment_wins(setting, expected):
    env = cli_env({} if setting is None else {"TF_CPU_ALLOCATOR_USE_BFC": setting})
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == expected
