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
    # The cause comes last, after whatever the stopped workers printed.
    assert out.splitlines()[-3:] == [
        "[launch] worker-1 failed first (exit code 3); its last lines:",
        "[launch]   cluster " + out.split("[worker-1] cluster ", 1)[1].split("\n", 1)[0],
        "[launch]   worker 1 failing"]
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


def test_two_launched_workers_each_materialise_half_of_every_global_batch(tmp_path):
    """`seqtrain launch --workers 2 -- train` (from a temporary working directory, relative
    model dir), with the input pipelines' opt-in record (SEQTRAIN_INPUT_LOG,
    trainer/data/input_log.py): per step, each worker gathered B/2 examples (the rows of
    the features its real pipeline built), its own replica's slice, and together
    exactly the ids of global batch s, as `seqtrain data inspect` shows them."""
    from helpers import seqtrain
    from trainer.data import sampling

    batch, steps = 8, 4
    seqtrain("launch", "--workers", "2", "--", "train", "--task", "text_generation",
             "--model-dir", "runs/two", "--set", f"train.steps={steps}",
             "--set", f"train.batch_size={batch}", "--set", "train.steps_per_loop=2",
             "--set", "train.eval_every=100", "--set", "train.eval_batches=1",
             "--set", "model.units=8", "--set", "data.seq_len=12", "--set", "runtime.seed=3",
             cwd=tmp_path, env={"SEQTRAIN_INPUT_LOG": "input-log"})
    logs = sorted((tmp_path / "input-log").glob("input-pipeline*.jsonl"))
    assert [p.name.split("-pid")[0] for p in logs] == ["input-pipeline0", "input-pipeline1"]
    read = {}  # (worker, step) -> (replica, rows, ids)
    for worker, path in enumerate(logs):
        for line in path.read_text().splitlines():
            r = json.loads(line)
            assert (worker, r["step"]) not in read, "a step gathered twice by one worker"
            read[worker, r["step"]] = (r["replica"], r["rows"], r["ids"])
    # Prefetching reads ahead past the last step, never behind the first.
    assert min(s for _, s in read) == 0
    inspect = seqtrain("data", "inspect", "--model-dir", "runs/two", "--step", "3",
                       "--replica", "1", cwd=tmp_path).stdout.splitlines()
    assert "replica 1 of 2, 4 of train.batch_size=8 examples" in inspect[0]
    n = int(inspect[0].split(" examples an epoch")[0].rsplit("(", 1)[1])
    assert inspect[1] == "ids: " + " ".join(map(str, read[1, 3][2]))
    for step in range(steps):
        for worker in (0, 1):
            replica, rows, ids = read[worker, step]
            assert (replica, rows, len(ids)) == (worker, batch // 2, batch // 2), (worker, step)
        together = read[0, step][2] + read[1, step][2]
        assert together == sampling.example_ids(3, step, batch, n).numpy().tolist(), step
        assert len(set(together)) == batch
