"""One writer per run: a lease on the model dir, held by the chief while it trains.

A lease is a small JSON file (`lease.json` in the model dir) naming its holder
(host, pid, start time, a run id) and when it was last refreshed.

- Local paths: the file is created if missing and locked with `flock`. The
  kernel drops the lock when the holder dies, even by kill -9, so a crashed
  run never blocks the next one. The lock only covers one host: on a shared
  file system the content decides too, and a lease refreshed from another
  host within `timeout` is respected.
- gs:// paths: the object is created with the precondition
  `if_generation_match=0` (it must not exist) and refreshed with
  `if_generation_match=<its generation>`, so exactly one writer wins each
  race. A lease not refreshed within `timeout` (or whose holder pid is dead on
  this host) is taken over, again through a generation precondition.

A holder refreshes every `timeout / 4` seconds on a daemon thread. If it finds
that someone else took its lease over (it stalled for longer than `timeout`),
`lost` is set and the training loop stops with a clear error.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import threading
import time
import uuid

from trainer.errors import UserError

log = logging.getLogger(__name__)


class LeaseHeld(UserError):
    """Another live process holds the run's lease."""


def _now() -> float:
    return time.time()


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lease:
    """The writer lease of one model dir. Use `acquire()`, then `release()`."""

    def __init__(self, path: str, *, timeout: float, command: str = "seqtrain train"):
        self.path = path
        self.timeout = float(timeout)
        self.command = command
        self.run_id = uuid.uuid4().hex
        self.started = _now()
        self.lost: str | None = None  # set when another writer took the lease over
        self.took_over: dict | None = None  # the stale holder replaced, if any
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._backend = _GcsBackend(path) if path.startswith("gs://") else _LocalBackend(path)

    # ----------------------------------------------------------------- API
    def holder(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "run_id": self.run_id,
                "command": self.command, "started": _iso(self.started),
                "refreshed": _iso(_now()), "refreshed_unix": _now()}

    def acquire(self) -> "Lease":
        """Takes the lease or raises LeaseHeld naming the holder and what to do."""
        current = self._backend.try_take(self.holder(), self._is_stale)
        if current is not None:
            raise LeaseHeld(self._held_message(current))
        self._thread = threading.Thread(target=self._refresh_loop, name="seqtrain-lease",
                                        daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.lost is None:
            try:
                self._backend.release(self.run_id)
            except Exception as e:  # noqa: BLE001 - a stale lease is taken over later anyway
                log.warning("could not remove the lease %s: %s", self.path, e)

    def __enter__(self) -> "Lease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # ------------------------------------------------------------ internals
    def _is_stale(self, content: dict | None, age_secs: float | None) -> bool:
        """Whether an existing lease may be taken over."""
        if not content:
            return True  # empty or unreadable: a holder died while writing it
        same_host = content.get("host") == socket.gethostname()
        pid = content.get("pid")
        if same_host and isinstance(pid, int) and (pid == os.getpid() or not _pid_alive(pid)):
            # Dead, or our own pid from an earlier incarnation (a restarted container).
            return True
        refreshed = content.get("refreshed_unix")
        if age_secs is None and isinstance(refreshed, (int, float)):
            age_secs = _now() - refreshed
        return age_secs is not None and age_secs > self.timeout

    def _refresh_loop(self) -> None:
        every = max(1.0, self.timeout / 4)
        while not self._stop.wait(every):
            try:
                if not self._backend.refresh(self.holder()):
                    self.lost = (f"the lease {self.path} was taken over by another writer "
                                 "(this process stalled longer than runtime.lease_timeout_secs)")
                    log.error("%s; stopping", self.lost)
                    return
            except Exception as e:  # noqa: BLE001 - transient: try again next period
                log.warning("refreshing the lease %s failed: %s; will retry", self.path, e)

    def _held_message(self, c: dict) -> str:
        model_dir = os.path.dirname(self.path) if not self.path.startswith("gs://") \
            else self.path.rsplit("/", 1)[0]
        return (
            f"--model-dir {model_dir} is in use by another writer: {c.get('command', 'seqtrain')} "
            f"pid {c.get('pid')} on host {c.get('host')}, started {c.get('started')}, lease "
            f"refreshed {c.get('refreshed')} ({self.path}). Two trainers on one run would "
            "overwrite each other's checkpoints. Wait for it to finish, stop it, or use another "
            f"--model-dir. A holder that died is taken over automatically (immediately on the "
            f"same host, else after runtime.lease_timeout_secs={int(self.timeout)} s).")


class _LocalBackend:
    def __init__(self, path: str):
        self.path = path
        self._fd: int | None = None

    def try_take(self, holder: dict, is_stale) -> dict | None:
        import fcntl

        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                content = _read_fd(fd)
                os.close(fd)
                return content or {"host": "?", "pid": "?", "started": "?",
                                   "refreshed": "(being written)"}
            # The path may have been unlinked and re-created by a releasing holder
            # between our open and our lock: then our lock guards a dead inode.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            content = _read_fd(fd)
            if content and content.get("host") != socket.gethostname() and \
                    not is_stale(content, None):
                # Held from another host of a shared file system: flock cannot see it.
                os.close(fd)
                return content
            if content:
                log.warning("taking over the lease of %s pid %s on %s (last refreshed %s): "
                            "its holder is gone", content.get("command", "seqtrain"),
                            content.get("pid"), content.get("host"), content.get("refreshed"))
            self._fd = fd
            self._write(holder)
            return None
        raise UserError(f"could not lock {self.path}: it keeps being replaced by another process.")

    def refresh(self, holder: dict) -> bool:
        if self._fd is None:
            return False
        current = _read_fd(self._fd)
        if current and current.get("run_id") != holder["run_id"]:
            return False
        self._write(holder)
        return True

    def release(self, run_id: str) -> None:
        if self._fd is None:
            return
        try:
            content = _read_fd(self._fd)
            if not content or content.get("run_id") == run_id:
                os.unlink(self.path)  # unlink while still holding the lock
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None

    def _write(self, holder: dict) -> None:
        data = (json.dumps(holder, indent=2, sort_keys=True) + "\n").encode()
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.ftruncate(self._fd, 0)
        os.write(self._fd, data)
        os.fsync(self._fd)


def _read_fd(fd: int) -> dict | None:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while True:
        b = os.read(fd, 65536)
        if not b:
            break
        chunks.append(b)
    try:
        content = json.loads(b"".join(chunks).decode() or "null")
    except (ValueError, UnicodeDecodeError):
        return None
    return content if isinstance(content, dict) else None


class _GcsBackend:
    """The same lease as an object, made exclusive by generation preconditions."""

    def __init__(self, uri: str):
        from trainer import gcs

        self.uri = uri
        self.bucket_name, self.name = gcs.split_uri(uri)
        self._client = None
        self.generation: int | None = None

    def _blob(self):
        from trainer import gcs

        if self._client is None:
            self._client, _ = gcs._client([self.uri])
        return self._client.bucket(self.bucket_name).blob(self.name)

    def _upload(self, holder: dict, match: int) -> bool:
        from google.api_core import exceptions as gexc

        blob = self._blob()
        try:
            blob.upload_from_string(json.dumps(holder, indent=2, sort_keys=True) + "\n",
                                    content_type="application/json", if_generation_match=match)
        except gexc.PreconditionFailed:
            return False
        self.generation = blob.generation
        return True

    def _read(self) -> tuple[dict | None, int | None, float | None]:
        """(content, generation, age in seconds) of the lease object; Nones if there is none."""
        from google.api_core import exceptions as gexc

        self._blob()  # makes the client
        blob = self._client.bucket(self.bucket_name).get_blob(self.name)
        if blob is None:
            return None, None, None
        generation = int(blob.generation)
        age = (_now() - blob.updated.timestamp()) if blob.updated else None
        try:
            data = blob.download_as_bytes(if_generation_match=generation)
        except (gexc.NotFound, gexc.PreconditionFailed):
            return None, None, None  # changed under us: the caller tries again
        try:
            content = json.loads(data.decode() or "null")
        except (ValueError, UnicodeDecodeError):
            content = None
        return (content if isinstance(content, dict) else None), generation, age

    def try_take(self, holder: dict, is_stale) -> dict | None:
        for _ in range(5):
            if self._upload(holder, match=0):
                return None
            content, generation, age = self._read()
            if generation is None:
                continue  # released in between: try to create it again
            if not is_stale(content, age):
                return content or {"host": "?", "pid": "?", "started": "?", "refreshed": "?"}
            if self._upload(holder, match=generation):
                log.warning("took over the stale lease %s of pid %s on %s (last refreshed %s)",
                            self.uri, (content or {}).get("pid"), (content or {}).get("host"),
                            (content or {}).get("refreshed"))
                return None
        raise UserError(f"could not take the lease {self.uri}: it keeps changing. "
                        "Another writer is racing for this --model-dir.")

    def refresh(self, holder: dict) -> bool:
        return self.generation is not None and self._upload(holder, match=self.generation)

    def release(self, run_id: str) -> None:
        from google.api_core import exceptions as gexc

        if self.generation is None:
            return
        try:
            self._blob().delete(if_generation_match=self.generation)
        except (gexc.NotFound, gexc.PreconditionFailed):
            pass

