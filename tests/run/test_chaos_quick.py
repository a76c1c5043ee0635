"""The short form of scripts/chaos.py (scenario a), so the chaos script cannot rot.

Two kill -9 trials at seeded random moments, one with an absolute and one with a relative
--model-dir, each resumed with only --model-dir and compared bitwise (checkpoint and export)
with an uninterrupted run. The full form and its figures: docs/reliability-figures.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO, cli_env


def test_chaos_quick_kill9_trials_resume_bitwise(tmp_path):
    out = tmp_path / "chaos.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "chaos.py"), "--quick", "--scenarios", "a",
         "--trials", "2", "--out", "chaos.json"],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    trials = report["results"]["a"]
    assert len(trials) == 2
    assert {t["model_dir"].startswith("/") for t in trials} == {True, False}
    for t in trials:
        assert t["ok"] and t["bitwise"] and t["resume_rcs"][-1] == 0, t
        assert t["killed_rc"] in (-9, 0) and t["phase"], t
    assert "a" in proc.stdout.split("scenario  trials")[1]  # the summary table
