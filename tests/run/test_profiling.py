"""`runtime.profile_steps=A,B`: a real profiler trace of exactly steps A..B, through the CLI.

Each run is `seqtrain train` in a subprocess from a temporary working directory.
The trace is read back with TensorFlow's own XPlane proto: it must hold host
events (the ops of the training loop), and its "train" step markers (one per
compiled loop, `step_num` = the loop's last step) must be exactly the loops
inside the window, which proves the outer loop split at A-1 and B. Bad values
are in the table of tests/cli/test_bad_inputs.py.
"""

from __future__ import annotations

import glob
import json
import os

from tensorflow.tsl.profiler.protobuf import xplane_pb2

from helpers import seqtrain

TINY = ["--set", "train.batch_size=8", "--set", "train.eval_batches=1",
        "--set", "train.log_every=1", "--set", "model.units=8",
        "--set", "data.vocab_size=64", "--set", "data.sequence_length=12"]


def _sessions(run: str) -> list[str]:
    return sorted(glob.glob(os.path.join(run, "train", "plugins", "profile", "*")))


def _read_trace(data: bytes) -> tuple[int, list[int]]:
    """(host events, step_num of each "train" step marker) of one .xplane.pb."""
    space = xplane_pb2.XSpace()
    space.ParseFromString(data)
    host = [p for p in space.planes if p.name == "/host:CPU"]
    assert host, [p.name for p in space.planes]
    plane = host[0]
    names = {m.id: m.name for m in plane.event_metadata.values()}
    stats = {m.id: m.name for m in plane.stat_metadata.values()}
    events = [e for line in plane.lines for e in line.events]
    # The loop's ops ran on the host: an LSTM of the model, not just profiler bookkeeping.
    assert any("lstm" in names.get(e.metadata_id, "") for e in events), sorted(
        set(names.values()))[:40]
    markers = sorted(s.int64_value for e in events if names.get(e.metadata_id) == "train"
                     for s in e.stats if stats.get(s.metadata_id) == "step_num")
    return len(events), markers


def _trace(session: str) -> tuple[int, list[int]]:
    files = glob.glob(os.path.join(session, "*.xplane.pb"))
    assert len(files) == 1, os.listdir(session)
    with open(files[0], "rb") as f:
        return _read_trace(f.read())


def _profiles(run) -> list[dict]:
    with open(os.path.join(run, "runtime.json")) as f:
        return json.load(f).get("profiles", [])


def test_trace_covers_exactly_the_window_and_a_resume_past_it_adds_none(tmp_path):
    """Relative --model-dir: steps 2..3 of 4, in loops of up to 4 steps."""
    args = ["train", *TINY, "--set", "train.steps=4", "--set", "train.steps_per_loop=4",
            "--set", "runtime.profile_steps=2,3", "--model-dir", "run"]
    out = seqtrain(*args, cwd=tmp_path).stdout
    (session,) = _sessions(str(tmp_path / "run"))
    name = os.path.basename(session)
    shown = os.path.join("run", "train", "plugins", "profile", name)  # as the user typed it
    assert f"profiler: steps 2..3 traced into {shown}" in out, out
    events, markers = _trace(session)
    assert events > 100
    assert markers == [3]  # one loop, steps 2..3: split after step 1, stopped after step 3
    assert _profiles(tmp_path / "run") == [
        {"steps": [2, 3], "dir": f"train/plugins/profile/{name}",
         "time": _profiles(tmp_path / "run")[0]["time"]}]

    # The resume keeps profile_steps from the run's config.yaml; step 4 is past the window.
    out = seqtrain("train", "--set", "train.steps=6", "--model-dir", "run", cwd=tmp_path).stdout
    assert out.count("past the window; nothing is profiled") == 1, out
    assert "profiler:" not in out
    assert _sessions(str(tmp_path / "run")) == [session]
    assert len(_profiles(tmp_path / "run")) == 1


def test_a_run_stopped_inside_the_window_and_resumed_traces_both_parts(tmp_path):
    """Absolute --model-dir, one step per loop: --stop-at 3 ends inside the window 2..4
    (the trace is stopped on the way out); the resume traces step 4 (current step to B)."""
    run = str(tmp_path / "abs" / "run")
    args = ["train", *TINY, "--set", "train.steps=5", "--set", "train.steps_per_loop=1",
            "--set", "runtime.profile_steps=2,4", "--model-dir", run]
    out = seqtrain(*args, "--stop-at", "3", cwd=tmp_path).stdout
    assert "profiler: steps 2..3 traced into" in out, out
    (first,) = _sessions(run)
    assert _trace(first)[1] == [2, 3]

    out = seqtrain(*args, cwd=tmp_path).stdout
    assert "profiler: steps 4..4 traced into" in out, out
    (second,) = [s for s in _sessions(run) if s != first]
    assert _trace(second)[1] == [4]
    assert [p["steps"] for p in _profiles(run)] == [[2, 3], [4, 4]]


def test_trace_lands_in_a_gs_log_dir_written_directly_and_through_log_sync(gcs, tmp_path):
    """A gs:// model dir: the profiler writes through TF's GCS filesystem (`direct`), or
    into the local log dir that log sync uploads (`local_then_sync`). Either way the
    trace is where TensorBoard looks: gs://.../train/plugins/profile/<session>/."""
    bucket = gcs.new_bucket()
    for mode in ("direct", "local_then_sync"):
        out = seqtrain("train", *TINY, "--set", "train.steps=3", "--set", "train.steps_per_loop=3",
                       "--set", "runtime.profile_steps=2,3", "--set", f"runtime.log_sync={mode}",
                       "--model-dir", f"gs://{bucket}/{mode}", cwd=tmp_path, env=gcs.env).stdout
        traces = [name for name in gcs.list_objects(bucket, f"{mode}/train/plugins/profile/")
                  if name.endswith(".xplane.pb")]
        assert len(traces) == 1, (mode, gcs.list_objects(bucket, mode))
        session = traces[0].rsplit("/", 1)[0]
        assert f"profiler: steps 2..3 traced into gs://{bucket}/{session}" in out, out
        events, markers = _read_trace(gcs.read_object(bucket, traces[0]))
        assert events > 100 and markers == [3], (mode, markers)
        runtime = json.loads(gcs.read_object(bucket, f"{mode}/runtime.json"))
        assert runtime["profiles"][0]["dir"] == f"gs://{bucket}/{session}"


def test_two_workers_trace_on_the_chief_only(tmp_path):
    """MultiWorkerMirrored on two local processes: both split their loops at the window's
    edges (or a collective would hang), and only worker 0 traces."""
    proc = seqtrain("launch", "--workers", "2", "--", "train", *TINY, "--set", "train.steps=4",
                    "--set", "train.steps_per_loop=4", "--set", "runtime.profile_steps=2,3",
                    "--model-dir", "mw", cwd=tmp_path)
    lines = [line for line in proc.stdout.splitlines() if "profiler: steps 2..3" in line]
    assert len(lines) == 1 and lines[0].startswith("[worker-0]"), proc.stdout[-3000:]
    (session,) = _sessions(str(tmp_path / "mw"))
    assert _trace(session)[1] == [3]
    assert "step 4/4" in proc.stdout
