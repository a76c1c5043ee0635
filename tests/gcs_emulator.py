"""A real Google Cloud Storage emulator on loopback, for TF's `gs://` and the Python client.

TensorFlow's native `gs://` filesystem has its endpoints hard-coded
(`https://www.googleapis.com/...`, `https://storage.googleapis.com/...`) and
talks through libcurl, so it cannot be pointed at an emulator directly. This
module serves `gcp-storage-emulator`'s storage engine on 127.0.0.1 twice:

* an **API port**, plain HTTP, for the `google-cloud-storage` client
  (`STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT`);
* a **proxy port** that answers `CONNECT *.googleapis.com:443`, terminates TLS
  with a certificate from a throw-away `trustme` CA, and then serves the same
  storage over that tunnel. libcurl reaches it through `https_proxy` and trusts
  it through `CURL_CA_BUNDLE`.

Both ports share one in-memory store, so an object written by TF is visible to
the Python client and to the test's own `read_object`. The servers run as
daemon threads inside the pytest process; a subprocess reaches them when it is
started with `env={**os.environ, **gcs.env}`.

The emulator has gaps that TF's client falls into (1-4 are in
shared/FACTS.md); they are mended here, at the HTTP layer, without patching the
installed package:

1. an empty media upload body (TF's "directory" objects) crashed `len(None)`;
2. resumable-upload `Location` URLs were built with `http://`, which sends TF
   out of the TLS tunnel: requests that came through the tunnel get
   `https://<Host>` URLs;
3. TF's libcurl sends `Transfer-Encoding: chunked` *and* `Content-Length`;
   the body is de-chunked here first (RFC 9112: Transfer-Encoding wins);
4. a resumable-upload status answer said `Range: bytes=0-0` when nothing was
   persisted; real GCS sends no `Range` then, and TF resumes from byte 0;
5. TF 2.21 asks `GET /storage/v1/b/<bucket>/storageLayout` before renaming a
   directory (hierarchical-namespace buckets); the emulator answered 404 and
   `tf.io.gfile.rename(dir, ...)` failed. A flat-bucket layout is returned.

Controls for tests: `set_fault_rate` answers a seeded share of API requests
with HTTP 503 (never more than `max_consecutive` in a row, so a client that
retries always gets through), and `set_read_only` makes a bucket answer writes
with HTTP 403 as real GCS does for a principal without `storage.objects.create`.

Usage in a test::

    def test_x(gcs):
        bucket = gcs.new_bucket()
        subprocess.run([sys.executable, "-m", "trainer.cli", "train", ...,
                        f"--model-dir=gs://{bucket}/run"],
                       env={**os.environ, **gcs.env}, check=True)
        assert "run/config.yaml" in gcs.list_objects(bucket)

Run `python tests/gcs_emulator.py` to start one by hand and print its env.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import os
import random
import re
import shutil
import socketserver
import ssl
import tempfile
import threading
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from urllib.parse import urlparse

import pytest
import trustme
from gcp_storage_emulator import server as emu_server
from gcp_storage_emulator.handlers import buckets as emu_buckets
from gcp_storage_emulator.storage import Storage

log = logging.getLogger(__name__)

# Hosts TF's gs:// filesystem talks to (tsl/platform/cloud/gcs_file_system.cc).
GOOGLE_HOSTS = ("www.googleapis.com", "storage.googleapis.com")

# Short but real retry delays for TF's GCS client (defaults: 1 s initial,
# 32 s max). Retries stay on; only the wait shrinks.
_TF_RETRY_ENV = {
    "GCS_RETRY_CONFIG_INIT_DELAY_TIME_US": "20000",
    "GCS_RETRY_CONFIG_MAX_DELAY_TIME_US": "200000",
}

_WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
_BUCKET_IN_PATH = re.compile(r"/b/([-.\w]+)")
_DEST_BUCKET_IN_PATH = re.compile(r"/(?:copyTo|rewriteTo)/b/([-.\w]+)")
_API_PREFIXES = ("storage", "upload", "download", "batch", "b", "wipe")
_STORAGE_LAYOUT = re.compile(r"/storage/v1/b/([-.\w]+)/storageLayout")


class GcsEmulator:
    """A GCS emulator plus TLS CONNECT proxy on loopback, with test controls.

    Attributes:
      env: environment variables that point TF's `gs://` filesystem and the
        `google-cloud-storage` client at this emulator. Merge them into a
        subprocess environment (`env={**os.environ, **gcs.env}`) or apply
        them in-process with `with gcs.applied():`.
      api_url: `http://127.0.0.1:PORT`, the Python client's endpoint.
      proxy_url: `http://127.0.0.1:PORT`, the CONNECT proxy for libcurl.
      ca_path: PEM file of the test CA that signed the proxy's certificate.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._storage = _MemoryStorage(use_memory_fs=True, data_dir=tempfile.gettempdir())
        # Fault rules: None -> every bucket without its own rule.
        self._fault_rules: dict[str | None, _FaultRule] = {}
        self._read_only: set[str] = set()
        self._bucket_names = itertools.count()
        self.stats = {"requests": 0, "faults": 0, "forbidden": 0, "connects": 0}
        self._faults_by_bucket: dict[str, int] = {}
        self._requests_by_bucket: dict[str, int] = {}
        self._authorizations: list[str | None] = []
        # Handler crashes (bugs in the emulator or a request it cannot parse).
        # Tests assert this stays empty; each entry is "METHOD path: error".
        self.server_errors: list[str] = []
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self._tmpdir: str | None = None
        self.api_url = ""
        self.proxy_url = ""
        self.ca_path = ""
        self.env: dict[str, str] = {}

    # ----------------------------------------------------------------- life
    def start(self) -> "GcsEmulator":
        self._tmpdir = tempfile.mkdtemp(prefix="gcs-emulator-")
        ca = trustme.CA()
        self.ca_path = os.path.join(self._tmpdir, "test-ca.pem")
        ca.cert_pem.write_to_path(self.ca_path)
        leaf = ca.issue_cert(*GOOGLE_HOSTS, "*.googleapis.com")
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(self._tls)

        api = self._serve("api")
        proxy = self._serve("proxy")
        self.api_url = "http://127.0.0.1:%d" % api.server_address[1]
        self.proxy_url = "http://127.0.0.1:%d" % proxy.server_address[1]
        self.env = {
            "https_proxy": self.proxy_url,
            "HTTPS_PROXY": self.proxy_url,
            "no_proxy": "127.0.0.1,localhost",
            "NO_PROXY": "127.0.0.1,localhost",
            "CURL_CA_BUNDLE": self.ca_path,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "seqtrain-test-token",
            "NO_GCE_CHECK": "true",
            "STORAGE_EMULATOR_HOST": self.api_url,
            "GOOGLE_CLOUD_PROJECT": "seqtrain-test",
            **_TF_RETRY_ENV,
        }
        return self

    def stop(self) -> None:
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self._servers.clear()
        self._threads.clear()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> "GcsEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self, role: str) -> _Server:
        emulator = self

        class Handler(_GcsHandler):
            pass

        Handler.emulator = emulator
        Handler.role = role
        srv = _Server(("127.0.0.1", 0), Handler)
        t = threading.Thread(
            target=srv.serve_forever, name=f"gcs-emulator-{role}", daemon=True
        )
        t.start()
        self._servers.append(srv)
        self._threads.append(t)
        return srv

    @contextlib.contextmanager
    def applied(self):
        """Applies `env` to this process's `os.environ` for the block, then restores it.

        TF's gs:// filesystem reads its settings the first time a process touches
        a gs:// path, and libcurl reads `https_proxy` per connection: in-process
        TF gs:// calls must run inside this block. Outside it, HTTPS from this
        process (e.g. `requests`) is not routed through the proxy.
        """
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            yield self
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    # ------------------------------------------------------------- controls
    def create_bucket(self, name: str) -> str:
        """Creates bucket `name` (no error if it exists) and returns its name.

        Deleted objects are removed at once (no soft delete), as on a bucket
        with soft delete turned off.
        """
        with self._lock:
            resource = emu_buckets.create_bucket(name, self._storage)
            if resource:
                resource["softDeletePolicy"] = {"retentionDurationSeconds": "0"}
                self._storage.buckets[name] = resource
        return name

    def new_bucket(self, prefix: str = "seqtrain-test") -> str:
        """Creates a bucket with a name unique in this session and returns it."""
        return self.create_bucket(f"{prefix}-{next(self._bucket_names)}")

    def set_fault_rate(
        self,
        p: float,
        seed: int = 0,
        max_consecutive: int = 2,
        max_faults: int | None = None,
        bucket: str | None = None,
    ) -> None:
        """Answers a share `p` of GCS requests with HTTP 503 from now on.

        The draw is seeded, so a run is repeatable for a given request order.
        At most `max_consecutive` requests in a row fail (so TF's and the Python
        client's retries always succeed), and at most `max_faults` in total
        when given. With `bucket`, the rule applies to requests on that bucket
        only and overrides the global one there. `p=0` turns the rule off.
        CONNECT handshakes and bucket-less requests of a bucket rule are never
        failed.

        Mind that TF's gs:// client waits up to ~1 s of random jitter before
        each retry whatever GCS_RETRY_CONFIG_* says, so every injected fault
        costs a TF process about 0.5 s.
        """
        if not 0.0 <= p < 1.0:
            raise ValueError(f"fault rate must be in [0, 1), got {p}")
        with self._lock:
            if p == 0.0:
                self._fault_rules.pop(bucket, None)
            else:
                self._fault_rules[bucket] = _FaultRule(
                    p, random.Random(seed), max_consecutive, max_faults
                )

    def set_read_only(self, bucket: str, flag: bool = True) -> None:
        """Makes `bucket` answer every write (upload, patch, delete, copy into)
        with HTTP 403 while `flag` is true. Reads and listings still work."""
        with self._lock:
            if flag:
                self._read_only.add(bucket)
            else:
                self._read_only.discard(bucket)

    @contextlib.contextmanager
    def faults(self, p: float, bucket: str | None = None, **kwargs):
        """`set_fault_rate(p, ..., bucket=bucket)` for the block, then no faults there."""
        self.set_fault_rate(p, bucket=bucket, **kwargs)
        try:
            yield self
        finally:
            self.set_fault_rate(0.0, bucket=bucket)

    def faults_injected(self, bucket: str | None = None) -> int:
        """How many 503s were injected so far, in all or on one bucket."""
        with self._lock:
            if bucket is None:
                return self.stats["faults"]
            return self._faults_by_bucket.get(bucket, 0)

    def _saw_authorization(self, value: str | None) -> None:
        with self._lock:
            self._authorizations.append(value)

    def authorizations(self) -> list[str | None]:
        """The Authorization header of every GCS request so far (None when absent)."""
        with self._lock:
            return list(self._authorizations)

    def requests_seen(self, bucket: str) -> int:
        """How many requests reached `bucket` so far (faulted ones included)."""
        with self._lock:
            return self._requests_by_bucket.get(bucket, 0)

    @contextlib.contextmanager
    def read_only(self, bucket: str):
        """`set_read_only(bucket, True)` for the block, then writable again."""
        self.set_read_only(bucket, True)
        try:
            yield self
        finally:
            self.set_read_only(bucket, False)

    def reset_controls(self) -> None:
        """Turns off fault injection and makes every bucket writable."""
        with self._lock:
            self._fault_rules.clear()
            self._read_only.clear()

    # ---------------------------------------------------- direct data access
    def list_objects(self, bucket: str, prefix: str = "") -> list[str]:
        """Names of the live objects in `bucket` that start with `prefix`, sorted."""
        with self._lock:
            if bucket not in self._storage.buckets:
                raise KeyError(f"no bucket {bucket!r} in the emulator")
            names = self._storage.objects.get(bucket, {})
            return sorted(n for n in names if n.startswith(prefix))

    def read_object(self, bucket: str, name: str) -> bytes:
        """The bytes of object `name`; KeyError if it does not exist."""
        with self._lock:
            if name not in self._storage.objects.get(bucket, {}):
                raise KeyError(f"no object gs://{bucket}/{name} in the emulator")
            return self._storage.get_file(bucket, name)

    def object_metadata(self, bucket: str, name: str) -> dict:
        """The JSON resource of object `name` (size, crc32c, md5Hash, updated...)."""
        with self._lock:
            try:
                return dict(self._storage.objects[bucket][name])
            except KeyError:
                raise KeyError(f"no object gs://{bucket}/{name} in the emulator")

    def write_object(
        self, bucket: str, name: str, data: bytes, updated: datetime | None = None
    ) -> None:
        """Stores `data` as object `name`, bypassing HTTP, faults and read-only.

        `updated` sets the object's modification time (default: now), for
        tests about "newest" files.
        """
        from gcp_storage_emulator.handlers import objects as emu_objects

        if isinstance(data, str):
            data = data.encode()
        with self._lock:
            obj = emu_objects._make_object_resource(
                self.api_url, bucket, name, "application/octet-stream", str(len(data))
            )
            obj = emu_objects._checksums(data, obj)
            if updated is not None:
                stamp = updated.astimezone(timezone.utc).strftime(
                    "%Y-%m-%dT%H:%M:%S.%fZ"
                )
                obj["updated"] = obj["timeCreated"] = stamp
            self._storage.create_file(bucket, name, data, obj)

    # ----------------------------------------------------- request decisions
    def _decide(self, method: str, path: str, body: bytes) -> HTTPStatus | None:
        """Returns 503/403 if this request must fail, else None."""
        bucket = _request_bucket(path)
        with self._lock:
            self.stats["requests"] += 1
            if bucket:
                self._requests_by_bucket[bucket] = self._requests_by_bucket.get(bucket, 0) + 1
            rule = self._fault_rules.get(bucket) or self._fault_rules.get(None)
            if rule is not None and rule.fires():
                self.stats["faults"] += 1
                if bucket:
                    self._faults_by_bucket[bucket] = (
                        self._faults_by_bucket.get(bucket, 0) + 1
                    )
                return HTTPStatus.SERVICE_UNAVAILABLE
            if method in _WRITE_METHODS and self._read_only:
                if _target_bucket(path, body) & self._read_only:
                    self.stats["forbidden"] += 1
                    return HTTPStatus.FORBIDDEN
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client never blocks stop()
    request_queue_size = 128  # TF opens connections in bursts; 5 would drop SYNs


class _MemoryStorage(Storage):
    """The emulator's in-memory storage without its metadata file.

    `Storage` re-serialises the metadata of every object in every bucket on
    each write, which makes a long test session quadratic; in memory there is
    nothing to persist.
    """

    def _write_config_to_file(self):
        pass


class _FaultRule:
    """A seeded share of failures, never more than `max_consecutive` in a row."""

    def __init__(self, p, rng, max_consecutive, max_faults):
        self.p, self.rng = p, rng
        self.max_consecutive, self.max_faults = max_consecutive, max_faults
        self.consecutive = self.injected = 0

    def fires(self) -> bool:
        hit = self.rng.random() < self.p
        capped = self.max_faults is not None and self.injected >= self.max_faults
        if hit and not capped and self.consecutive < self.max_consecutive:
            self.consecutive += 1
            self.injected += 1
            return True
        self.consecutive = 0
        return False


def _storage_layout(response, storage, bucket: str) -> None:
    """Gap 5: TF asks for a bucket's storage layout before renaming a directory
    (to use hierarchical-namespace folder renames); the emulator has no such
    route. Answer as real GCS does for a flat bucket, and TF copies and
    deletes object by object."""
    if storage.get_bucket(bucket) is None:
        response.status = HTTPStatus.NOT_FOUND
        response.json({"error": {"code": 404, "message": "The specified bucket does not exist."}})
        return
    response.json({"kind": "storage#storageLayout", "bucket": bucket, "location": "US",
                   "locationType": "multi-region",
                   "hierarchicalNamespace": {"enabled": False}})


def _precondition_failed(request, method: str, storage, body: bytes) -> bool:
    """Gap 6: the emulator ignores `ifGenerationMatch` (checked: a second create with
    ifGenerationMatch=0 overwrote the first). Real GCS answers 412 when the object's
    generation differs (0: the object must not exist). seqtrain's gs:// writer lease
    depends on it."""
    wanted = request.query.get("ifGenerationMatch")
    if not wanted:
        return False
    path = urlparse(request.path).path if "://" in request.path else request.path.split("?")[0]
    m = re.search(r"/b/([^/]+)/o(?:/(.+))?$", path)
    if not m:
        return False
    bucket, name = m.group(1), m.group(2)
    if name is None:  # an upload: the name is in the query or the multipart metadata
        name = (request.query.get("name") or [None])[0]
        if name is None:
            found = re.search(rb'"name"\s*:\s*"([^"]+)"', body or b"")
            name = found.group(1).decode() if found else None
    if name is None:
        return False
    from urllib.parse import unquote

    meta = storage.objects.get(bucket, {}).get(unquote(name))
    current = int(meta.get("generation", 0)) if meta else 0
    return int(wanted[0]) != current


def _request_bucket(path: str) -> str | None:
    """The bucket a request is about (the source bucket for copies), if any."""
    path = urlparse(path).path
    found = _BUCKET_IN_PATH.search(path)
    if found:
        return found.group(1)
    first = path.strip("/").split("/", 1)[0]
    if first and first not in _API_PREFIXES:  # storage.googleapis.com/<bucket>/...
        return first
    return None


def _target_bucket(path: str, body: bytes) -> set[str]:
    """Buckets a write request would change (destination for copies)."""
    path = urlparse(path).path
    dest = _DEST_BUCKET_IN_PATH.findall(path)
    if dest:
        return set(dest)
    if path.startswith("/batch/"):
        return set(_BUCKET_IN_PATH.findall(body.decode("latin-1")))
    found = _BUCKET_IN_PATH.findall(path)
    if found:
        return {found[0]}
    first = path.strip("/").split("/", 1)[0]
    if first and first not in _API_PREFIXES:  # XML API: PUT /<bucket>/<object>
        return {first}
    return set()


class _Request(emu_server.Request):
    """The emulator's request, with gaps 1 and 2 mended."""

    def __init__(self, handler, method: str, scheme: str):
        super().__init__(handler, method)
        host = handler.headers.get("Host")
        if scheme == "https" and host:
            # Gap 2: keep resumable-upload and media links inside the tunnel.
            self._base_url = f"https://{host}"
            self._full_url = self._base_url + self._path
            self._parsed_url = urlparse(self._full_url)

    @property
    def data(self):
        data = super().data
        if data is None and (
            self.query.get("uploadType") == ["media"] or self.method == "PUT"
        ):
            return b""  # Gap 1: an empty upload is an empty object, not None.
        return data


class _GcsHandler(emu_server.RequestHandler):
    """Serves GCS requests over HTTP, or over TLS after a CONNECT (proxy role)."""

    protocol_version = "HTTP/1.1"  # keep-alive and `Expect: 100-continue`
    timeout = 60  # idle keep-alive connections give their thread back
    # Headers and body go out in separate writes; without TCP_NODELAY each
    # keep-alive answer waits ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    emulator: GcsEmulator
    role: str  # "api" or "proxy"

    def __init__(self, *args, **kwargs):
        self._scheme = "http"
        self._tls_socket = None
        super().__init__(self.emulator._storage, *args, **kwargs)

    # -------------------------------------------------------------- proxy
    def do_CONNECT(self):
        host, _, port = self.path.rpartition(":")
        if self.role != "proxy" or self._tls_socket is not None:
            self.send_error(HTTPStatus.METHOD_NOT_ALLOWED, "not a proxy port")
            return
        if host not in GOOGLE_HOSTS or port != "443":
            # Only Google storage is emulated; other HTTPS must not silently
            # reach a fake server.
            self.send_error(HTTPStatus.FORBIDDEN, f"{self.path} is not emulated")
            return
        with self.emulator._lock:
            self.emulator.stats["connects"] += 1
        self.send_response(HTTPStatus.OK, "Connection established")
        self.end_headers()
        self.wfile.flush()
        try:
            tls = self.emulator._tls.wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError) as e:
            log.warning("TLS handshake with %s failed: %s", self.client_address, e)
            self.close_connection = True
            return
        self._tls_socket = tls
        self.connection = tls
        self.rfile = tls.makefile("rb", self.rbufsize)
        self.wfile = socketserver._SocketWriter(tls)
        self._scheme = "https"
        self.close_connection = False

    def finish(self):
        try:
            super().finish()
        finally:
            if self._tls_socket is not None:
                self._tls_socket.close()

    # ---------------------------------------------------------------- GCS
    def do_GET(self):
        self._handle_gcs("GET")

    def do_POST(self):
        self._handle_gcs("POST")

    def do_PUT(self):
        self._handle_gcs("PUT")

    def do_PATCH(self):
        self._handle_gcs("PATCH")

    def do_DELETE(self):
        self._handle_gcs("DELETE")

    def _handle_gcs(self, method: str) -> None:
        if self.role == "proxy" and self._scheme != "https":
            self._drain_and_error(HTTPStatus.BAD_REQUEST, "send CONNECT first")
            return
        body = self._read_body()
        self.emulator._saw_authorization(self.headers.get("Authorization"))
        verdict = self.emulator._decide(method, self.path, body)
        if verdict is not None:
            self._send_gcs_error(verdict, method)
            return
        # Hand the emulator a plain Content-Length body (gap 3 is mended by
        # _read_body, which de-chunks before Content-Length is considered).
        del self.headers["Transfer-Encoding"]
        del self.headers["Content-Length"]
        self.headers["Content-Length"] = str(len(body))
        socket_rfile, self.rfile = self.rfile, io.BytesIO(body)
        self._body = body
        try:
            response = self._route(method)
        finally:
            self.rfile = socket_rfile
        response.close()

    def _route(self, method: str) -> emu_server.Response:
        override = self.headers.get("x-http-method-override")
        if override:
            method = override
        request = _Request(self, method, self._scheme)
        response = emu_server.Response(self)
        storage = self.emulator._storage
        with self.emulator._lock:
            try:
                layout = _STORAGE_LAYOUT.fullmatch(request.path)
                if layout and method == "GET":
                    _storage_layout(response, storage, layout.group(1))
                    return response
                handler = self._find_handler(request, method)
                if handler is None:
                    response.status = HTTPStatus.NOT_IMPLEMENTED
                    return response
                if _precondition_failed(request, method, storage, self._body):
                    response.status = HTTPStatus.PRECONDITION_FAILED
                    response.json({"error": {"code": 412, "message": "At least one of the "
                                             "pre-conditions you specified did not hold.",
                                             "errors": [{"reason": "conditionNotMet"}]}})
                    return response
                handler(request, response, storage)
                upload_id = request.query.get("upload_id")
                if (
                    int(response.status) == 308
                    and upload_id
                    and storage.get_resumable_byte_count(upload_id[0]) == 0
                ):
                    # Gap 4: nothing persisted yet -> no Range header at all.
                    response._headers.pop("Range", None)
            except Exception as e:  # noqa: BLE001 - reported, answered as 500
                msg = f"{method} {self.path}: {type(e).__name__}: {e}"
                log.exception("emulator handler failed: %s", msg)
                self.emulator.server_errors.append(msg)
                response = emu_server.Response(self)
                response.status = HTTPStatus.INTERNAL_SERVER_ERROR
                response.json({"error": {"code": 500, "message": msg}})
        return response

    @staticmethod
    def _find_handler(request, method):
        for regex, handlers in emu_server.HANDLERS:
            match = re.fullmatch(regex, request.path)
            if not match:
                continue
            request.set_match(match)
            handler = handlers.get(method)
            if (
                handler is None
                and method == "POST"
                and request.query.get("uploadType")
                and request.path.endswith("/o")
            ):
                handler = emu_server.objects.insert
            return handler
        return None

    def _read_body(self) -> bytes:
        """Reads the whole request body; chunked framing wins over Content-Length."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _drain_and_error(self, status: HTTPStatus, message: str) -> None:
        self._read_body()
        self.send_error(status, message)

    def _send_gcs_error(self, status: HTTPStatus, method: str) -> None:
        if status == HTTPStatus.FORBIDDEN:
            perm = "storage.objects.delete" if method == "DELETE" else (
                "storage.objects.create"
            )
            message = (
                "seqtrain-test@seqtrain-test.iam.gserviceaccount.com does not have "
                f"{perm} access to the Google Cloud Storage object. Permission "
                f"'{perm}' denied on resource (or it may not exist)."
            )
            reason = "forbidden"
        else:
            message = "Injected fault: backend temporarily unavailable."
            reason = "backendError"
        payload = json.dumps(
            {
                "error": {
                    "code": int(status),
                    "message": message,
                    "errors": [
                        {"domain": "global", "reason": reason, "message": message}
                    ],
                }
            }
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args):  # noqa: A002 - base class signature
        log.debug("%s %s", self.role, format % args)


# ------------------------------------------------------------------ pytest
_shared: GcsEmulator | None = None
_shared_lock = threading.Lock()


def shared_emulator(config=None) -> GcsEmulator:
    """The one emulator of this process, started on first use.

    When `config` (a pytest Config) is given, the emulator is stopped when the
    pytest run ends.
    """
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = GcsEmulator().start()
            if config is not None:
                config.add_cleanup(_stop_shared)
        return _shared


def _stop_shared() -> None:
    global _shared
    with _shared_lock:
        if _shared is not None:
            _shared.stop()
            _shared = None


@pytest.fixture(scope="session")
def gcs(request) -> GcsEmulator:
    """The session's GCS emulator (see GcsEmulator).

    Tests share it, so each should make its own bucket (`gcs.new_bucket()`)
    and undo the controls it sets (`with gcs.faults(0.1):`,
    `with gcs.read_only(bucket):`).
    """
    emulator = shared_emulator(request.config)
    emulator.reset_controls()
    return emulator


if __name__ == "__main__":
    import time

    logging.basicConfig(level=logging.INFO)
    with GcsEmulator() as em:
        em.create_bucket("seqtrain-dev")
        print("bucket gs://seqtrain-dev created; export these to use it:")
        for key, value in em.env.items():
            print(f"export {key}={value}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
