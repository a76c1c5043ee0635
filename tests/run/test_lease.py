"""The writer lease (trainer/lease.py) on a local dir and on gs:// (the emulator, with its
ignored preconditions mended in front of it: tests/gcs_emulator.py gap 6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from trainer.lease import Lease, LeaseHeld

HOLD = r"""
import sys, time
from trainer.lease import Lease
Lease(sys.argv[1], timeout=30).acquire()
print("held", flush=True)
time.sleep(600)
"""


def _holder(path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, path], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_local_lease_refuses_a_live_holder_and_takes_over_a_killed_one(tmp_path):
    path = str(tmp_path / "lease.json")
    holder = _holder(path)
    try:
        with pytest.raises(LeaseHeld, match=f"pid {holder.pid}"):
            Lease(path, timeout=30).acquire()
    finally:
        holder.kill()  # kill -9: the lock dies with the process, the file stays
        holder.wait()
    assert os.path.exists(path)
    lease = Lease(path, timeout=30).acquire()
    assert json.loads(open(path).read())["pid"] == os.getpid()
    lease.release()
    assert not os.path.exists(path)


def test_local_lease_respects_a_fresh_lease_from_another_host(tmp_path):
    """On a shared file system flock cannot see another host: the refresh time decides."""
    path = tmp_path / "lease.json"
    other = {"host": "another-host", "pid": 7, "run_id": "x", "command": "seqtrain train",
             "started": "t", "refreshed": "t", "refreshed_unix": time.time()}
    path.write_text(json.dumps(other))
    with pytest.raises(LeaseHeld, match="another-host"):
        Lease(str(path), timeout=30).acquire()
    other["refreshed_unix"] = time.time() - 60  # not refreshed within the timeout: taken over
    path.write_text(json.dumps(other))
    Lease(str(path), timeout=30).acquire().release()


def test_gcs_lease_is_exclusive_refreshed_and_taken_over_when_stale(gcs):
    with gcs.applied():
        _gcs_lease_scenario(gcs)


def _gcs_lease_scenario(gcs):
    bucket = gcs.new_bucket()
    uri = f"gs://{bucket}/runs/x/lease.json"
    name = "runs/x/lease.json"
    first = Lease(uri, timeout=2).acquire()
    content = json.loads(gcs.read_object(bucket, name))
    assert content["pid"] == os.getpid() and content["run_id"] == first.run_id
    # Another live writer (another host) holds it now: a new start is refused...
    other = dict(content, host="another-host", pid=7, run_id="other")
    gcs.write_object(bucket, name, json.dumps(other).encode())
    with pytest.raises(LeaseHeld, match="another-host"):
        Lease(uri, timeout=2).acquire()
    # ...and the first holder's refresh notices it lost the lease (generation changed).
    assert first._backend.refresh(first.holder()) is False
    first._stop.set()
    # Not refreshed for longer than the timeout: taken over through a generation precondition.
    time.sleep(2.5)
    second = Lease(uri, timeout=2).acquire()
    assert json.loads(gcs.read_object(bucket, name))["run_id"] == second.run_id
    second.release()
    assert name not in gcs.list_objects(bucket)


def test_gcs_create_precondition_is_enforced_by_the_mended_emulator(gcs):
    from google.api_core import exceptions as gexc
    from google.cloud import storage

    bucket = gcs.new_bucket()
    with gcs.applied():
        blob = storage.Client().bucket(bucket).blob("only-once")
        blob.upload_from_string("a", if_generation_match=0)
        with pytest.raises(gexc.PreconditionFailed):
            blob.upload_from_string("b", if_generation_match=0)
    assert gcs.read_object(bucket, "only-once") == b"a"
