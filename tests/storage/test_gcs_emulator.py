"""Proves the GCS emulator fixture with TF's own gs:// code and with raw HTTP.

The TF checks run in a subprocess that is given only `gcs.env`, exactly as a
`seqtrain train --model-dir gs://...` subprocess would be.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys

import pytest
import requests


# Runs in a fresh interpreter against each gs://<bucket>/<prefix> root given on
# the command line. Prints one JSON line per root with what it saw; the test
# compares that with the emulator's own store.
TF_SCRIPT = r"""
import hashlib, json, sys
import numpy as np
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator as ea


def exercise(root):
    out = {}
    # 1. Plain objects: 0 B, small, ~3 MB; read back identical.
    tf.io.gfile.makedirs(root + "/blobs")
    rng = np.random.default_rng(7)
    digests = {}
    for n in (0, 249, 3 * 1024 * 1024 + 11):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        path = f"{root}/blobs/b{n}"
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(data)
        with tf.io.gfile.GFile(path, "rb") as f:
            assert f.read() == data, f"{n}-byte object read back different"
        assert tf.io.gfile.stat(path).length == n
        digests[f"b{n}"] = hashlib.sha256(data).hexdigest()
    out["digests"] = digests
    out["listdir"] = sorted(tf.io.gfile.listdir(root + "/blobs"))
    # A directory rename (TF first asks for the bucket's storage layout).
    with tf.io.gfile.GFile(root + "/export.tmp/saved.pb", "wb") as f:
        f.write(b"model")
    tf.io.gfile.rename(root + "/export.tmp", root + "/export")
    out["renamed"] = tf.io.gfile.listdir(root + "/export")

    # 2. CheckpointManager: 3 saves, keep 2, restore the newest into new variables.
    v = tf.Variable(tf.zeros([64, 64]))
    step = tf.Variable(0, dtype=tf.int64)
    ckpt = tf.train.Checkpoint(v=v, step=step)
    mgr = tf.train.CheckpointManager(ckpt, root + "/ckpt", max_to_keep=2)
    for i in range(1, 4):
        v.assign(tf.fill([64, 64], float(i)))
        step.assign(i * 10)
        mgr.save(checkpoint_number=i * 10)
    out["kept"] = [p.rsplit("/", 1)[1] for p in mgr.checkpoints]
    v2 = tf.Variable(tf.zeros([64, 64]))
    step2 = tf.Variable(0, dtype=tf.int64)
    latest = tf.train.latest_checkpoint(root + "/ckpt")
    tf.train.Checkpoint(v=v2, step=step2).restore(latest).assert_consumed()
    out["latest"] = latest.rsplit("/", 1)[1]
    out["restored_step"] = int(step2.numpy())
    out["restored_value"] = float(v2.numpy().mean())

    # 3. A summary writer, read back with TensorBoard's own EventAccumulator.
    writer = tf.summary.create_file_writer(root + "/logs")
    with writer.as_default():
        for s in range(12):
            tf.summary.scalar("loss", 1.0 / (s + 1), step=s)
            if s == 5:
                writer.flush()
    writer.close()
    acc = ea.EventAccumulator(root + "/logs", size_guidance={ea.TENSORS: 0})
    acc.Reload()
    events = acc.Tensors("loss")
    out["loss_steps"] = [e.step for e in events]
    out["loss_values"] = [float(tf.make_ndarray(e.tensor_proto)) for e in events]
    return out


for root in sys.argv[1:]:
    print("RESULT " + json.dumps({"root": root, **exercise(root)}), flush=True)
"""


def test_tf_native_gcs_through_emulator_with_0_10_20_percent_faults(gcs):
    """TF's own gs:// code in a subprocess, with 0%, 10% and 20% of requests failing.

    One subprocess (one TF import) works through three buckets in turn, each
    with its own fault rate.
    """
    rates = (0.0, 0.1, 0.2)
    buckets = {rate: gcs.new_bucket() for rate in rates}
    env = {**os.environ, **gcs.env, "TF_CPP_MIN_LOG_LEVEL": "2"}
    # TF adds 0-1 s of random jitter to every retry delay unless the initial
    # delay is 0 (tsl RetryingUtils::CallWithRetries); at ~0.5 s per injected
    # fault that would be most of this test's time. Retries stay on (10 max).
    env["GCS_RETRY_CONFIG_INIT_DELAY_TIME_US"] = "0"
    try:
        for rate, bucket in buckets.items():
            gcs.set_fault_rate(rate, seed=int(rate * 100) + 1, bucket=bucket)
        proc = subprocess.run(
            [sys.executable, "-c", TF_SCRIPT, *(f"gs://{b}/run" for b in buckets.values())],
            env=env, capture_output=True, text=True, timeout=240,
        )
    finally:
        for bucket in buckets.values():
            gcs.set_fault_rate(0.0, bucket=bucket)
    assert proc.returncode == 0, proc.stderr[-4000:]
    outs = [json.loads(ln[len("RESULT "):]) for ln in proc.stdout.splitlines()
            if ln.startswith("RESULT ")]
    assert [o["root"] for o in outs] == [f"gs://{b}/run" for b in buckets.values()]

    for out, bucket in zip(outs, buckets.values()):
        _check_tf_run(gcs, bucket, out)
    assert gcs.faults_injected(buckets[0.0]) == 0
    assert gcs.faults_injected(buckets[0.1]) >= 5
    assert gcs.faults_injected(buckets[0.2]) > gcs.faults_injected(buckets[0.1])
    assert gcs.server_errors == []


def _check_tf_run(gcs, bucket: str, out: dict) -> None:
    # Objects: what TF read back matched what it wrote, and so do the bytes
    # the emulator stored (no chunk framing, no truncation).
    assert out["listdir"] == ["b0", "b249", "b3145739"]
    assert out["renamed"] == ["saved.pb"]
    assert gcs.read_object(bucket, "run/export/saved.pb") == b"model"
    assert gcs.list_objects(bucket, "run/export.tmp") == []
    for name, digest in out["digests"].items():
        stored = gcs.read_object(bucket, f"run/blobs/{name}")
        assert hashlib.sha256(stored).hexdigest() == digest, name

    # Checkpoints: pruned to the last two, restore gives the last save.
    assert out["kept"] == ["ckpt-20", "ckpt-30"]
    assert out["latest"] == "ckpt-30"
    assert out["restored_step"] == 30 and out["restored_value"] == 3.0
    ckpt_objects = gcs.list_objects(bucket, "run/ckpt/")
    assert not [n for n in ckpt_objects if "ckpt-10" in n or "_temp" in n]
    assert "run/ckpt/ckpt-30.index" in ckpt_objects
    assert "run/ckpt/checkpoint" in ckpt_objects

    # TensorBoard read every step back.
    assert out["loss_steps"] == list(range(12))
    assert out["loss_values"] == pytest.approx([1.0 / (s + 1) for s in range(12)])


def test_fault_injection_is_seeded_and_bounded(gcs):
    bucket = gcs.new_bucket()
    gcs.write_object(bucket, "x", b"payload")
    url = f"{gcs.api_url}/storage/v1/b/{bucket}/o/x"

    def statuses():
        with requests.Session() as s:
            return [s.get(url, timeout=5).status_code for _ in range(200)]

    with gcs.faults(0.3, seed=3, max_consecutive=2):
        first = statuses()
    with gcs.faults(0.3, seed=3, max_consecutive=2):
        second = statuses()
    assert first == second  # same seed, same answers
    assert set(first) == {200, 503}
    share = first.count(503) / len(first)
    assert 0.15 < share < 0.35, share
    runs = "".join("x" if c == 503 else "." for c in first).split(".")
    assert max(len(r) for r in runs) <= 2  # a retrying client always gets through
    assert requests.get(url, timeout=5).status_code == 200  # off again


def test_read_only_bucket_refuses_writes_with_403(gcs):
    bucket = gcs.new_bucket()
    gcs.write_object(bucket, "keep", b"old")
    upload = f"{gcs.api_url}/upload/storage/v1/b/{bucket}/o"
    with gcs.read_only(bucket):
        r = requests.post(
            upload, params={"uploadType": "media", "name": "new"}, data=b"x", timeout=5
        )
        assert r.status_code == 403
        assert r.json()["error"]["errors"][0]["reason"] == "forbidden"
        d = requests.delete(f"{gcs.api_url}/storage/v1/b/{bucket}/o/keep", timeout=5)
        assert d.status_code == 403
        g = requests.get(f"{gcs.api_url}/storage/v1/b/{bucket}/o/keep", timeout=5)
        assert g.status_code == 200  # reads still work
    assert gcs.list_objects(bucket) == ["keep"]
    r = requests.post(
        upload, params={"uploadType": "media", "name": "new"}, data=b"x", timeout=5
    )
    assert r.status_code == 200
    assert gcs.read_object(bucket, "new") == b"x"


def test_emulator_gaps_are_mended_through_the_tls_proxy(gcs):
    """Each of the four gaps in FACTS.md, checked over the real CONNECT + TLS path."""
    bucket = gcs.new_bucket()
    tunnel = {"https": gcs.proxy_url}
    upload = f"https://www.googleapis.com/upload/storage/v1/b/{bucket}/o"
    with requests.Session() as s:
        s.proxies, s.verify, s.trust_env = tunnel, gcs.ca_path, False
        # 1. An empty media upload is an empty object.
        r = s.post(upload, params={"uploadType": "media", "name": "dir/"}, timeout=5)
        assert r.status_code == 200, r.text
        assert gcs.read_object(bucket, "dir/") == b""
        # 2. The resumable session URL stays https on the real host name.
        r = s.post(upload, params={"uploadType": "resumable", "name": "big"}, timeout=5)
        location = r.headers["Location"]
        assert location.startswith("https://www.googleapis.com/upload/"), location
        # 4. Nothing persisted yet: the status answer has no Range header.
        r = s.put(location, headers={"Content-Range": "bytes */*"}, timeout=5)
        assert r.status_code == 308 and "Range" not in r.headers
    # 3. Chunked framing wins over a Content-Length sent alongside it.
    payload = os.urandom(5000)
    host = gcs.api_url.removeprefix("http://")
    conn = http.client.HTTPConnection(host, timeout=5)
    path = location.removeprefix("https://www.googleapis.com")
    conn.putrequest("PUT", path)
    conn.putheader("Transfer-Encoding", "chunked")
    conn.putheader("Content-Length", str(len(payload)))
    conn.putheader("Content-Range", f"bytes 0-{len(payload) - 1}/{len(payload)}")
    conn.endheaders()
    for i in range(0, len(payload), 1500):
        piece = payload[i : i + 1500]
        conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
    conn.send(b"0\r\n\r\n")
    assert conn.getresponse().status == 200
    assert gcs.read_object(bucket, "big") == payload
    assert gcs.server_errors == []


def test_proxy_refuses_hosts_it_does_not_emulate(gcs):
    with pytest.raises(requests.exceptions.ProxyError):
        requests.get(
            "https://example.com/",
            proxies={"https": gcs.proxy_url},
            verify=gcs.ca_path,
            timeout=5,
        )
