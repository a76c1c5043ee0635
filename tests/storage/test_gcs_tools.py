"""trainer/gcs.py and trainer/gcs_cli.py against the real GCS emulator and real files."""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.server
import json
import os
import threading
import time
import urllib.parse

import google_crc32c
import pytest
import tensorflow as tf
import yaml
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import jwt as google_jwt

from trainer import gcs as gcs_lib
from trainer import storage
from trainer.errors import EXIT_USER_ERROR, UserError
from trainer.cli import main
from trainer.gcs_cli import runs, stage


# ---------------------------------------------------------------- preflight
def test_preflight_passes_on_a_writable_bucket_and_leaves_nothing(gcs, tmp_path):
    bucket = gcs.new_bucket()
    t0 = time.monotonic()
    with gcs.applied():
        gcs_lib.preflight([f"gs://{bucket}/run", str(tmp_path)],
                          need_write=[f"gs://{bucket}/run"])
    assert time.monotonic() - t0 < 5
    assert gcs.list_objects(bucket) == []  # the marker was deleted again


def test_preflight_names_a_missing_bucket_and_how_to_create_it(gcs):
    with gcs.applied(), pytest.raises(UserError) as e:
        gcs_lib.preflight(["gs://no-such-bucket-xyz/run"], need_write=[])
    msg = str(e.value)
    assert "gs://no-such-bucket-xyz" in msg and "does not exist" in msg
    assert "gcloud storage buckets create" in msg and "gsutil mb" in msg


def test_preflight_read_only_bucket_fails_writes_only(gcs):
    bucket = gcs.new_bucket()
    with gcs.applied(), gcs.read_only(bucket):
        gcs_lib.preflight([f"gs://{bucket}/data.txt"], need_write=[])  # reading is fine
        t0 = time.monotonic()
        with pytest.raises(UserError) as e:
            gcs_lib.preflight([f"gs://{bucket}/run"], need_write=[f"gs://{bucket}/run"])
        assert time.monotonic() - t0 < 5
    msg = str(e.value)
    assert f"gs://{bucket}" in msg and "roles/storage.objectAdmin" in msg
    assert "storage.objects.create" in msg  # GCS's own reason is kept...
    assert "\n" not in msg and "{" not in msg and len(msg) < 700  # ...without the JSON


def test_preflight_survives_transient_503s(gcs):
    bucket = gcs.new_bucket()
    # 90% of requests fail, never more than 2 in a row (seeded: 3 faults here).
    with gcs.applied(), gcs.faults(0.9, bucket=bucket, seed=5):
        gcs_lib.preflight([f"gs://{bucket}/run"], need_write=[f"gs://{bucket}/run"])
    assert gcs.faults_injected(bucket) >= 3
    assert gcs.list_objects(bucket) == []


def test_preflight_without_credentials_says_how_to_log_in(monkeypatch, tmp_path):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing-key.json"))
    # Local paths never need credentials.
    gcs_lib.preflight([str(tmp_path)], need_write=[str(tmp_path)])
    with pytest.raises(UserError) as e:
        gcs_lib.preflight(["gs://some-bucket/run"], need_write=["gs://some-bucket/run"])
    msg = str(e.value)
    assert "gcloud auth application-default login" in msg
    assert "GOOGLE_APPLICATION_CREDENTIALS" in msg and "gs://some-bucket/run" in msg


GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"


class _TokenEndpoint:
    """A local OAuth 2.0 token endpoint for a service-account key (RFC 7523 JWT bearer).

    It verifies each assertion's RS256 signature with the key's public half and
    answers with a fresh access token, recording the verified claims.
    """

    def __init__(self, public_pem: bytes):
        endpoint = self
        self.public_pem, self.claims, self.tokens = public_pem, [], []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                form = urllib.parse.parse_qs(
                    self.rfile.read(int(self.headers["Content-Length"])).decode())
                assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
                # google-auth addresses the assertion to Google's token endpoint
                # whatever token_uri says; the key file's token_uri is where it goes.
                claims = google_jwt.decode(form["assertion"][0], certs=endpoint.public_pem,
                                           audience=GOOGLE_TOKEN_AUDIENCE)
                token = f"ya29.test-{len(endpoint.tokens)}-{os.urandom(4).hex()}"
                endpoint.claims.append(claims)
                endpoint.tokens.append(token)
                body = json.dumps({"access_token": token, "expires_in": 3600,
                                   "token_type": "Bearer"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_preflight_loads_a_service_account_key_file(gcs, tmp_path, monkeypatch):  # noqa: F811
    """The real credential branch: GOOGLE_APPLICATION_CREDENTIALS names a generated
    service-account key whose token_uri is a local endpoint; google.auth.default
    loads it, signs a JWT, trades it for a token, and the storage client sends
    that token to GCS (the emulator behind the TLS proxy, reached as
    storage.googleapis.com, no STORAGE_EMULATOR_HOST). Errors name the account."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    tokens = _TokenEndpoint(public_pem)
    email = "seqtrain-ci@seqtrain-test.iam.gserviceaccount.com"
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps({
        "type": "service_account", "project_id": "seqtrain-test", "private_key_id": "k1",
        "private_key": pem, "client_email": email, "client_id": "1",
        "token_uri": tokens.url}))
    for name, value in gcs.env.items():
        monkeypatch.setenv(name, value)
    for name in ("STORAGE_EMULATOR_HOST", "GOOGLE_AUTH_TOKEN_FOR_TESTING"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", gcs.ca_path)  # the proxy's test CA
    bucket, read_only = gcs.new_bucket(), gcs.new_bucket()
    gcs.set_read_only(read_only)
    seen = len(gcs.authorizations())
    try:
        gcs_lib.preflight([f"gs://{bucket}/run"], need_write=[f"gs://{bucket}/run"])
        with pytest.raises(UserError) as e:
            gcs_lib.preflight([f"gs://{read_only}/run"], need_write=[f"gs://{read_only}/run"])
    finally:
        gcs.set_read_only(read_only, False)
        tokens.close()
    assert tokens.claims, "the token endpoint was never asked"
    for claims in tokens.claims:
        assert claims["iss"] == email and claims["aud"] == GOOGLE_TOKEN_AUDIENCE
        assert "https://www.googleapis.com/auth/devstorage.read_write" in claims["scope"].split()
    sent = gcs.authorizations()[seen:]
    assert sent and set(sent) <= {f"Bearer {t}" for t in tokens.tokens}, sent
    assert f"{email} may not write gs://{read_only}/run" in str(e.value)
    assert gcs.list_objects(bucket) == [] and gcs.list_objects(read_only) == []


# ---------------------------------------------------------------- list_runs
def _make_run(root: str, task: str, steps=(), metrics=None) -> None:
    """A run dir as the trainer leaves it: config.yaml, real checkpoints, metrics.json."""
    storage.makedirs(root)
    storage.write_text(storage.join(root, "config.yaml"),
                       yaml.safe_dump({"task": {"name": task}, "train": {"steps": 100}}))
    if steps:
        v = tf.Variable(0.0)
        mgr = tf.train.CheckpointManager(tf.train.Checkpoint(v=v),
                                         storage.join(root, "checkpoints"), max_to_keep=None,
                                         checkpoint_name="ckpt")
        for s in steps:
            v.assign(float(s))
            mgr.save(checkpoint_number=s)
    if metrics is not None:
        storage.write_json(storage.join(root, "metrics.json"), metrics)


METRICS = {"step": 8, "metrics": {"accuracy": 0.75, "loss": 0.5123456, "auc": 0.8},
           "time": "2026-11-27T10:00:00+00:00"}


def test_list_runs_local(tmp_path):
    root = str(tmp_path / "runs")
    _make_run(os.path.join(root, "a"), "text_classification", steps=[4, 8], metrics=METRICS)
    _make_run(os.path.join(root, "group", "b"), "forecasting")
    os.makedirs(os.path.join(root, "not-a-run", "train"))
    with open(os.path.join(root, "not-a-run", "train", "events.out"), "wb") as f:
        f.write(b"x")
    stamps = {"a/config.yaml": 1000, "a/checkpoints/ckpt-4.index": 2000,
              "a/checkpoints/ckpt-8.index": 3000, "a/metrics.json": 2500,
              "group/b/config.yaml": 1500}
    for rel, secs in stamps.items():
        os.utime(os.path.join(root, rel), (secs, secs))

    found = gcs_lib.list_runs(root)
    assert [r["name"] for r in found] == ["a", "group/b"]
    a, b = found
    assert a["run_dir"] == os.path.join(root, "a")
    assert (a["task"], a["step"], a["metrics_step"]) == ("text_classification", 8, 8)
    assert a["metrics"] == METRICS["metrics"] and a["error"] is None
    assert a["updated"] == datetime.datetime.fromtimestamp(3000, datetime.timezone.utc)
    assert (b["task"], b["step"], b["metrics"]) == ("forecasting", None, {})
    assert b["updated"] == datetime.datetime.fromtimestamp(1500, datetime.timezone.utc)

    # The prefix may be a run itself; a broken metrics.json is reported, not fatal.
    with open(os.path.join(root, "a", "metrics.json"), "w") as f:
        f.write("{not json")
    (only,) = gcs_lib.list_runs(os.path.join(root, "a"))
    assert only["name"] == "." and only["step"] == 8 and "metrics.json" in only["error"]


def test_list_runs_on_gcs(gcs):
    bucket = gcs.new_bucket()
    with gcs.applied():
        _make_run(f"gs://{bucket}/exp/a", "translation", steps=[3, 12], metrics=METRICS)
        _make_run(f"gs://{bucket}/exp/b", "text_generation")
        _make_run(f"gs://{bucket}/other/c", "forecasting")  # outside the prefix
        found = gcs_lib.list_runs(f"gs://{bucket}/exp")
        assert gcs_lib.list_runs(f"gs://{bucket}/exp/") == found
    assert [r["run_dir"] for r in found] == [f"gs://{bucket}/exp/a", f"gs://{bucket}/exp/b"]
    a, b = found
    assert (a["task"], a["step"], a["metrics"]) == ("translation", 12, METRICS["metrics"])
    assert (b["task"], b["step"]) == ("text_generation", None)
    names = ["exp/a/config.yaml", "exp/a/metrics.json", "exp/a/checkpoints/ckpt-3.index",
             "exp/a/checkpoints/ckpt-12.index"]
    newest = max(_updated(gcs.object_metadata(bucket, n)) for n in names)
    assert a["updated"] == newest


def _updated(meta: dict) -> datetime.datetime:
    return datetime.datetime.strptime(meta["updated"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc)


def test_list_runs_missing_prefix_is_a_user_error(gcs, tmp_path):
    with pytest.raises(UserError, match="no directory"):
        gcs_lib.list_runs(str(tmp_path / "nope"))
    with gcs.applied(), pytest.raises(UserError, match="does not exist"):
        gcs_lib.list_runs("gs://no-such-bucket-xyz/runs")


# -------------------------------------------------------------------- stage
def test_stage_round_trips_bytes_and_checksums(gcs, tmp_path):
    bucket = gcs.new_bucket()
    data = os.urandom(1_500_000)
    src = tmp_path / "corpus.txt"
    src.write_bytes(data)
    with gcs.applied():
        result = gcs_lib.stage(str(src), f"gs://{bucket}/data/")
    assert result["uri"] == f"gs://{bucket}/data/corpus.txt"
    assert result["size"] == len(data)
    assert gcs.read_object(bucket, "data/corpus.txt") == data
    crc = base64.b64encode(google_crc32c.Checksum(data).digest()).decode()
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    assert (result["crc32c"], result["md5"]) == (crc, md5)
    meta = gcs.object_metadata(bucket, "data/corpus.txt")
    assert (meta["crc32c"], meta["md5Hash"]) == (crc, md5)


def test_stage_user_errors(gcs, tmp_path):
    bucket = gcs.new_bucket()
    src = tmp_path / "f.bin"
    src.write_bytes(b"abc")
    with gcs.applied():
        with pytest.raises(UserError, match="does not exist"):
            gcs_lib.stage(str(tmp_path / "missing.bin"), f"gs://{bucket}/x")
        with pytest.raises(UserError, match="must be a gs://"):
            gcs_lib.stage(str(src), str(tmp_path / "elsewhere"))
        with pytest.raises(UserError, match="gsutil mb"):
            gcs_lib.stage(str(src), "gs://no-such-bucket-xyz/f.bin")
        with gcs.read_only(bucket), pytest.raises(UserError, match="objectAdmin"):
            gcs_lib.stage(str(src), f"gs://{bucket}/f.bin")
    assert gcs.list_objects(bucket) == []


# ---------------------------------------------------------------------- CLI
def test_cli_runs_list_prints_a_table(gcs, tmp_path):
    root = str(tmp_path / "runs")
    _make_run(os.path.join(root, "first"), "text_classification", steps=[8], metrics=METRICS)
    result = CliRunner().invoke(runs, ["list", root])
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split() == ["RUN", "TASK", "STEP", "METRICS", "UPDATED", "(UTC)"]
    assert row.split()[:6] == ["first", "text_classification", "8", "accuracy=0.75",
                               "auc=0.8", "loss=0.5123"]

    as_json = CliRunner().invoke(runs, ["list", "--json", root])
    assert json.loads(as_json.stdout)["step"] == 8

    bucket = gcs.new_bucket()
    with gcs.applied():
        _make_run(f"gs://{bucket}/r1", "forecasting", steps=[2])
        result = CliRunner().invoke(runs, ["list", f"gs://{bucket}"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].split()[:4] == ["r1", "forecasting", "2", "-"]


def test_cli_stage_and_clean_user_errors(gcs, tmp_path):
    bucket = gcs.new_bucket()
    src = tmp_path / "vocab.txt"
    src.write_text("a\nb\n")
    with gcs.applied():
        ok = CliRunner().invoke(stage, [str(src), f"gs://{bucket}/assets/"])
        # Errors through the console script's group, the CLI's one error printer.
        missing = CliRunner().invoke(main, ["stage", str(tmp_path / "nope.txt"),
                                            f"gs://{bucket}/x"])
        no_bucket = CliRunner().invoke(main, ["runs", "list", "gs://no-such-bucket-xyz"])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.startswith(f"gs://{bucket}/assets/vocab.txt  4 bytes  crc32c=")
    assert gcs.read_object(bucket, "assets/vocab.txt") == b"a\nb\n"
    for bad in (missing, no_bucket):
        assert bad.exit_code == EXIT_USER_ERROR
        assert bad.stderr.startswith("Error: ") and bad.stderr.count("\n") == 1
        assert "Traceback" not in bad.output
