"""The short form of scripts/bench_train.py: one tiny repeat of one task, both sides.

No timing is asserted (the machines are noisy; docs/benchmarks.md holds the
figures): the script must run both sides on the same data and model, report the
ratio, and give the textbook side TensorFlow's own CPU allocator and seqtrain its
pool."""

from __future__ import annotations

import re
import subprocess
import sys

from helpers import REPO, cli_env


def test_bench_train_runs_both_sides_and_reports_the_ratio(tmp_path):
    proc = subprocess.run(
        [sys.executable, f"{REPO}/scripts/bench_train.py", "--task", "forecasting",
         "--steps", "6", "--repeats", "1", "--set", "model.units=8", "--set", "model.layers=1",
         "--set", "data.window=12", "--set", "data.synthetic_length=300",
         "--set", "train.steps_per_loop=2"],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "== forecasting: 6 steps of batch" in out, out
    assert "CPU allocator: textbook malloc, seqtrain bfc ==" in out, out
    rows = {m.group(1): m.group(2) for m in
            re.finditer(r"^  (textbook|seqtrain) +([0-9. ]+)$", out, flags=re.M)}
    assert set(rows) == {"textbook", "seqtrain"}, out
    assert all(float(v) > 0 for v in rows["seqtrain"].split()[:2]), rows
    assert re.search(r"forecasting +ex/s +\d+\.\d\dx", out), out
