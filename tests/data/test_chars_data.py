"""Tests for trainer/data/chars.py: sources, vocabulary, windows, downloads.

Downloads run against a real HTTP server on 127.0.0.1 in a thread.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import socket
import threading

import numpy as np
import pytest

from trainer.data import chars
from trainer.errors import DataError

from helpers import seqtrain, user_error

# ----------------------------------------------------------------------------
# Vocabulary and encoding.
# ----------------------------------------------------------------------------


def test_vocab_fit_encode_decode_roundtrip():
    vocab = chars.CharVocab.fit("hello world")
    assert vocab.chars == " dehlorw"
    assert vocab.size == len(vocab.chars) + 2
    ids = vocab.encode("hello world")
    assert ids.dtype == np.uint8
    assert ids.min() >= 2  # 0 is padding, 1 is OOV
    assert vocab.decode(ids) == "hello world"


def test_vocab_maps_unseen_and_rare_chars_to_oov():
    vocab = chars.CharVocab.fit("aaab", min_count=2)
    assert vocab.chars == "a"
    assert vocab.encode("abz").tolist() == [2, chars.OOV_ID, chars.OOV_ID]
    assert vocab.count_known("zzz") == 0
    assert vocab.count_known("za") == 1


def test_vocab_unicode_and_json_roundtrip():
    text = "naïve café — 日本語 🙂\n"
    vocab = chars.CharVocab.fit(text)
    again = chars.CharVocab.from_json(vocab.to_json())
    assert again.chars == vocab.chars
    assert again.decode(again.encode(text)) == text


def test_encode_is_chunked_and_exact(monkeypatch):
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(list("abcdefg\n é"), size=10_001))
    vocab = chars.CharVocab.fit(text)
    whole = vocab.encode(text)
    monkeypatch.setattr(chars, "_ENCODE_CHUNK", 97)
    assert np.array_equal(vocab.encode(text), whole)
    assert vocab.decode(whole) == text


def test_large_vocab_uses_wider_ids():
    text = "".join(chr(0x4E00 + i) for i in range(300))
    vocab = chars.CharVocab.fit(text)
    ids = vocab.encode(text)
    assert ids.dtype == np.uint16
    assert vocab.decode(ids) == text


# ----------------------------------------------------------------------------
# Splits and windows.
# ----------------------------------------------------------------------------


def test_split_tail():
    train, held_out = chars.split_tail("abcdefghij", 0.3)
    assert (train, held_out) == ("abcdefg", "hij")


@pytest.mark.parametrize("length,seq_len,shift,expected", [
    (10, 4, 1, 6), (10, 4, 4, 2), (5, 4, 1, 1), (4, 4, 1, 0), (11, 4, 3, 3),
])
def test_num_windows(length, seq_len, shift, expected):
    assert chars.num_windows(length, seq_len, shift) == expected


def test_window_dataset_inputs_and_shifted_targets():
    ids = np.arange(2, 14, dtype=np.uint8)  # 12 ids
    ds = chars.window_dataset(ids, seq_len=4, shift=3)
    windows = [(f.numpy().tolist(), t.numpy().tolist()) for f, t in ds]
    assert windows == [
        ([2, 3, 4, 5], [3, 4, 5, 6]),
        ([5, 6, 7, 8], [6, 7, 8, 9]),
        ([8, 9, 10, 11], [9, 10, 11, 12]),
    ]
    f, t = ds.element_spec
    assert f.shape == (4,) and f.dtype.name == "int32" and t.shape == (4,)
    # Deterministic: a second pass gives the same stream.
    assert [(f.numpy().tolist(), t.numpy().tolist()) for f, t in ds] == windows


# ----------------------------------------------------------------------------
# Files and bundled corpora.
# ----------------------------------------------------------------------------


def test_bundled_sonnets():
    assert "sonnets" in chars.bundled_names()
    text = chars.read_bundled("sonnets")
    assert len(text) > 30_000
    assert "Shall I compare thee to a summer's day?" in text
    with pytest.raises(DataError, match="Available: .*sonnets"):
        chars.read_bundled("nope")


def test_read_file_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        chars.read_file(str(tmp_path / "missing.txt"))
    with pytest.raises(DataError, match="is a directory"):
        chars.read_file(str(tmp_path))
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataError, match="is empty"):
        chars.read_file(str(tmp_path / "empty.txt"))
    (tmp_path / "latin.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(DataError, match="not valid utf-8.*data.encoding"):
        chars.read_file(str(tmp_path / "latin.txt"))
    assert chars.read_file(str(tmp_path / "latin.txt"), "latin-1") == "café"
    with pytest.raises(DataError, match="not a known text encoding"):
        chars.read_file(str(tmp_path / "latin.txt"), "no-such-codec")


# ----------------------------------------------------------------------------
# Downloads against a real local HTTP server.
# ----------------------------------------------------------------------------

BODY = ("From fairest creatures we desire increase,\n" * 50).encode()


class _Server:
    """A scripted HTTP server on 127.0.0.1: `plan` lists the status per request."""

    def __init__(self):
        self.plan: list[int] = []
        self.requests = 0
        self.body = BODY
        self.send_length = True
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                server.requests += 1
                status = server.plan.pop(0) if server.plan else 200
                if status != 200:
                    msg = b"try again later"
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                if server.send_length:
                    self.send_header("Content-Length", str(len(server.body)))
                else:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(server.body)
                if not server.send_length:
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/sonnets.txt"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


def _download(url, cache, **kw):
    kw.setdefault("backoff", 0.01)
    kw.setdefault("timeout", 5.0)
    kw.setdefault("allow_http", True)  # the local test server speaks plain http
    return chars.download(url, cache_dir=str(cache), **kw)[0]


def test_download_caches_and_verifies_checksum(server, tmp_path):
    digest = hashlib.sha256(BODY).hexdigest()
    path = _download(server.url, tmp_path / "cache", sha256=digest)
    with open(path, "rb") as f:
        assert f.read() == BODY
    assert server.requests == 1
    assert _download(server.url, tmp_path / "cache", sha256=digest) == path
    assert server.requests == 1  # served from the cache
    name = os.path.basename(path)  # the download, its SHA-256 and its URL without query
    assert sorted(os.listdir(tmp_path / "cache")) == [name, name + ".sha256", name + ".url"]


def test_download_retries_after_503(server, tmp_path):
    server.plan = [503, 503]
    path = _download(server.url, tmp_path / "cache", retries=3)
    assert server.requests == 3
    with open(path, "rb") as f:
        assert f.read() == BODY


def test_download_gives_up_after_retries(server, tmp_path):
    server.plan = [503] * 10
    with pytest.raises(DataError, match=r"after 3 attempts.*HTTP 503.*data.download_retries"):
        _download(server.url, tmp_path / "cache", retries=2)
    assert server.requests == 3
    assert os.listdir(tmp_path / "cache") == []


def test_download_404_is_not_retried(server, tmp_path):
    server.plan = [404]
    with pytest.raises(DataError, match="HTTP 404"):
        _download(server.url, tmp_path / "cache", retries=3)
    assert server.requests == 1


def test_download_checksum_mismatch_leaves_no_file(server, tmp_path):
    with pytest.raises(DataError, match="SHA-256.*data.sha256"):
        _download(server.url, tmp_path / "cache", sha256="0" * 64)
    assert os.listdir(tmp_path / "cache") == []


def test_download_size_limit(server, tmp_path):
    with pytest.raises(DataError, match="Content-Length.*data.max_bytes=100"):
        _download(server.url, tmp_path / "cache", max_bytes=100)
    # Without a Content-Length the limit is enforced while streaming.
    server.send_length = False
    with pytest.raises(DataError, match="more than 100 bytes.*data.max_bytes"):
        _download(server.url, tmp_path / "cache", max_bytes=100)
    assert os.listdir(tmp_path / "cache") == []
    assert os.path.exists(_download(server.url, tmp_path / "cache", max_bytes=len(BODY)))


def test_download_unreachable_port(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError, match=r"could not download.*after 2 attempts.*ConnectionError"):
        _download(f"http://127.0.0.1:{port}/x.txt", tmp_path / "cache", retries=1)
    assert os.listdir(tmp_path / "cache") == []


def test_stale_cache_is_replaced_when_checksum_differs(server, tmp_path):
    path = _download(server.url, tmp_path / "cache")
    with open(path, "wb") as f:
        f.write(b"corrupted")
    digest = hashlib.sha256(BODY).hexdigest()
    assert _download(server.url, tmp_path / "cache", sha256=digest) == path
    assert server.requests == 2
    with open(path, "rb") as f:
        assert f.read() == BODY


def test_cache_is_reverified_against_the_recorded_sha256(server, tmp_path):
    """No data.sha256 given: the digest recorded at the first download guards the cache."""
    path = _download(server.url, tmp_path / "cache")
    with open(path + ".sha256") as f:
        assert f.read().strip() == hashlib.sha256(BODY).hexdigest()
    assert _download(server.url, tmp_path / "cache") == path
    assert server.requests == 1  # intact: reused
    with open(path, "wb") as f:
        f.write(b"tampered")
    assert _download(server.url, tmp_path / "cache") == path
    assert server.requests == 2  # changed since recorded: fetched again
    with open(path, "rb") as f:
        assert f.read() == BODY


def test_plain_http_needs_allow_http_and_messages_hide_the_query(server, tmp_path):
    url = server.url + "?X-Goog-Signature=secret123"
    with pytest.raises(DataError, match="data.allow_http=true") as e:
        chars.download(url, cache_dir=str(tmp_path / "cache"))
    assert "secret123" not in str(e.value) and "REDACTED" in str(e.value)
    assert server.requests == 0


def test_a_signed_url_never_reaches_the_run_and_a_resume_finds_the_download(server, tmp_path):
    """Through the CLI from a working dir: the signature is in no file of the run (config.yaml,
    runtime.json, event files); a resume with no flags reuses the cached download; with the
    cache gone it asks for the URL again (exit 2, run unchanged); given it, it resumes."""
    secret = "X-Goog-Signature=s3cr3tt0ken"
    tiny = ["--set", "data.seq_len=16", "--set", "model.units=8", "--set", "model.layers=1",
            "--set", "model.embedding_dim=4", "--set", "train.batch_size=4",
            "--set", "train.steps=4", "--set", "train.eval_every=2",
            "--set", "train.checkpoint_every=2", "--set", "train.steps_per_loop=2"]
    args = ["train", "--task", "text_generation", "--model-dir", "runs/u",
            "--set", f"data.url={server.url}?{secret}", "--set", "data.allow_http=true",
            "--set", "data.cache_dir=cache", *tiny]
    seqtrain(*args, "--stop-at", "2", cwd=tmp_path)
    assert _files_holding(tmp_path / "runs", b"s3cr3tt0ken") == []
    assert "?REDACTED" in (tmp_path / "runs/u/config.yaml").read_text()

    seqtrain("train", "--model-dir", "runs/u", "--stop-at", "3", cwd=tmp_path)  # cache reused
    assert server.requests == 1
    shutil.rmtree(tmp_path / "cache")
    user_error("train", "--model-dir", "runs/u", cwd=tmp_path, model_dir="runs/u",
               expect=("recorded without its query string", "--set data.url="))
    done = seqtrain("train", "--model-dir", "runs/u", "--set",
                    f"data.url={server.url}?X-Goog-Signature=anewtoken", cwd=tmp_path)
    assert "resumed from" in done.stdout and server.requests == 2
    assert (tmp_path / "runs/u/export").is_dir()
    assert _files_holding(tmp_path / "runs", b"anewtoken") == []


def _files_holding(root, secret: bytes) -> list:
    return [p for p in root.rglob("*") if p.is_file() and secret in p.read_bytes()]
