"""trainer/logsync.py with real temp dirs, a real SIGTERM and the GCS emulator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator as ea

from trainer.logsync import LogSync

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s")


def _read(path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def test_periodic_sync_uploads_new_and_changed_files(tmp_path):
    local, remote = tmp_path / "local", tmp_path / "remote"
    with LogSync(str(local), str(remote), every_secs=0.1) as sync:
        (local / "train").mkdir(parents=True)
        (local / "train" / "events").write_bytes(b"one")
        _wait_for(lambda: _read(remote / "train" / "events") == b"one")
        uploads = sync.uploads
        time.sleep(0.5)  # several periods with nothing new
        assert sync.uploads == uploads
        with open(local / "train" / "events", "ab") as f:
            f.write(b"-two")
        (local / "eval").mkdir()
        (local / "eval" / "events").write_bytes(b"eval")
        _wait_for(lambda: _read(remote / "train" / "events") == b"one-two")
        _wait_for(lambda: _read(remote / "eval" / "events") == b"eval")
    assert sync.failures == 0
    assert sorted(p.name for p in remote.rglob("*") if p.is_file()) == ["events", "events"]


def test_sync_uploads_only_changed_files(tmp_path):
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    (local / "a").write_bytes(b"a")
    (local / "b").write_bytes(b"b")
    sync = LogSync(str(local), str(remote), every_secs=60)
    assert sync.sync() == (2, 0)
    assert sync.sync() == (0, 0)
    (local / "a").write_bytes(b"a2")  # size changes
    assert sync.sync() == (1, 0)
    os.utime(local / "b", ns=(0, 10**18))  # only mtime changes
    assert sync.sync() == (1, 0)
    assert _read(remote / "a") == b"a2" and _read(remote / "b") == b"b"
    assert not list(remote.glob("*logsync-tmp"))


def test_final_sync_runs_when_the_body_raises(tmp_path):
    local, remote = tmp_path / "local", tmp_path / "remote"
    with pytest.raises(ValueError, match="boom"):
        with LogSync(str(local), str(remote), every_secs=3600):
            (local / "last.txt").write_bytes(b"written just before the crash")
            raise ValueError("boom")
    assert _read(remote / "last.txt") == b"written just before the crash"


def test_upload_errors_are_retried_and_never_raise(tmp_path):
    local, remote = tmp_path / "local", tmp_path / "remote"
    remote.write_bytes(b"a file where the remote dir should be")
    with LogSync(str(local), str(remote), every_secs=0.1) as sync:
        (local / "events").write_bytes(b"payload")
        _wait_for(lambda: sync.failures >= 2)  # failed twice, training goes on
        remote.unlink()  # the "outage" ends
        _wait_for(lambda: _read(remote / "events") == b"payload")
    assert sync.last_error is not None


def test_log_sync_leaves_signals_to_their_one_owner(tmp_path):
    """LogSync installs no signal handler of its own (trainer.preemption owns SIGTERM)."""
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with LogSync(str(tmp_path / "local"), str(tmp_path / "remote"), every_secs=3600):
        assert {s: signal.getsignal(s) for s in before} == before
    assert {s: signal.getsignal(s) for s in before} == before


CHILD = r"""
import os, sys, time
from trainer.logsync import LogSync
from trainer.preemption import StopSignal
local, remote = sys.argv[1], sys.argv[2]
stop = StopSignal(grace_secs=2).install()
with LogSync(local, remote, every_secs=3600, stop_signal=stop):
    with open(os.path.join(local, "events"), "wb") as f:
        f.write(b"from the child")
    print("ready", flush=True)
    time.sleep(120)  # never saves: the watchdog must force the exit
print("the stop was ignored", flush=True)
"""


def test_a_forced_exit_uploads_the_logs_first(tmp_path):
    """SIGTERM, and the loop never reaches its checkpoint: the preemption watchdog
    exits retryably within the grace, running LogSync's final upload first."""
    local, remote = tmp_path / "local", tmp_path / "remote"
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(local), str(remote)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert _read(remote / "events") is None  # every_secs=3600: nothing synced yet
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, (out, err[-2000:])
    assert "the stop was ignored" not in out
    assert _read(remote / "events") == b"from the child"


def test_sync_to_gcs_emulator_with_a_real_summary_writer(gcs, tmp_path):
    bucket = gcs.new_bucket()
    local = tmp_path / "logs"
    remote = f"gs://{bucket}/run/logs"
    with gcs.applied():
        with LogSync(str(local), remote, every_secs=0.2) as sync:
            writer = tf.summary.create_file_writer(str(local / "train"))
            with writer.as_default():
                for step in range(5):
                    tf.summary.scalar("loss", 1.0 / (step + 1), step=step)
            writer.flush()
            _wait_for(lambda: gcs.list_objects(bucket, "run/logs/train/events"))
            with writer.as_default():
                for step in range(5, 10):
                    tf.summary.scalar("loss", 1.0 / (step + 1), step=step)
            writer.close()
        acc = ea.EventAccumulator(f"{remote}/train", size_guidance={ea.TENSORS: 0})
        acc.Reload()
    assert [e.step for e in acc.Tensors("loss")] == list(range(10))
    (event_file,) = (local / "train").iterdir()
    name = f"run/logs/train/{event_file.name}"
    assert gcs.read_object(bucket, name) == event_file.read_bytes()
    assert sync.failures == 0 and sync.uploads >= 2
