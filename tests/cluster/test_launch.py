"""The local multi-worker launcher: TF_CONFIG per worker, prefixed output, fail-fast."""

from __future__ import annotations

import io
import json
import sys
import time

from trainer import launch

WORKER = r"""
import json, os, sys, time
cfg = json.loads(os.environ["TF_CONFIG"])
i = cfg["task"]["index"]
print("cluster", json.dumps(cfg["cluster"]), "index", i, flush=True)
if sys.argv[1] == "fail-one" and i == 1:
    print("worker 1 failing", flush=True)
    sys.exit(3)
if sys.argv[1] == "fail-one":
    time.sleep(600)  # would hang forever in a collective without the launcher
print("done", i, flush=True)
"""


def _run(tmp_path, mode, workers=2):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = io.StringIO()
    t0 = time.monotonic()
    code = launch.run_local([mode], workers, grace=3, stream=out,
                            program=[sys.executable, str(script)])
    return code, out.getvalue(), time.monotonic() - t0


def test_each_worker_gets_its_own_tf_config_and_prefix(tmp_path):
    code, out, _ = _run(tmp_path, "ok", workers=3)
    assert code == 0
    clusters = set()
    for i in range(3):
        lines = [line for line in out.splitlines() if line.startswith(f"[worker-{i}] cluster")]
        assert len(lines) == 1 and lines[0].endswith(f"index {i}")
        clusters.add(lines[0].split("cluster ", 1)[1].rsplit(" index", 1)[0])
        assert f"[worker-{i}] done {i}" in out
    (cluster,) = clusters  # every worker sees the same cluster
    workers = json.loads(cluster)["worker"]
    assert len(set(workers)) == 3 and all(w.startswith("localhost:") for w in workers)


def test_a_failing_worker_stops_the_others(tmp_path):
    code, out, elapsed = _run(tmp_path, "fail-one")
    assert code == 3
    assert "[worker-1] worker 1 failing" in out
    assert "[launch] worker-1 exited with code 3; stopping the others" in out
    assert "[worker-0] done" not in out
    assert elapsed < 60  # worker 0 was stopped, not waited for


def test_launch_propagates_a_user_error_exit_code(run_cli):
    proc = run_cli("launch", "--workers", "2", "--", "train", "--model-dir", "/tmp/unused",
                   "--set", "train.steps=abc", check=False)
    assert proc.returncode == 2
    assert "[worker-" in proc.stdout and "expects int, got 'abc'" in proc.stdout
    assert "Traceback" not in proc.stdout


def test_free_ports_are_distinct():
    ports = launch.free_ports(4)
    assert len(set(ports)) == 4
