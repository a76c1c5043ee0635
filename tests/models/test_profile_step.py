"""The short form of scripts/profile_step.py, so the profile reader cannot rot: it
parses the profiler's trace files, whose layout belongs to TensorFlow, not to us.
The full form and its figures: docs/benchmarks.md, "Where a fused step's time goes"."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import REPO, cli_env


def test_profile_step_lists_the_fused_loops_ops(tmp_path):
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "profile_step.py"), "--task",
         "text_generation", *[a for s in ("model.units=8", "model.layers=1", "data.seq_len=12",
                                          "model.embedding_dim=8") for a in ("--set", s)],
         "--repeats", "1", "--steps", "2", "--top", "40"],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "(XLA on): step" in proc.stdout
    ops = {m.group(2): int(m.group(1))
           for m in re.finditer(r"ms\s+(\d+)/step  (\S+)", proc.stdout)}
    # One recurrent matmul per timestep in each direction (12 forward, 12 backward) and a
    # few whole-sequence dots. The profiler can drop some events of a trace this short
    # (seen: 20 of 24 matmuls), so only their order of magnitude is checked.
    assert ops.get("MatMul", 0) > 2 * ops.get("dot", 0) > 0, proc.stdout
