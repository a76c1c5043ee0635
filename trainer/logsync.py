"""`runtime.log_sync=local_then_sync`: write logs locally, upload them periodically.

TF's gs:// writer re-uploads a whole event file on every flush, and TensorBoard
reading many small remote writes is slow. With this mode the summary writers
write to a local dir and `LogSync` copies new or changed files to the run
dir every `every_secs`, plus once more when training ends (normally, by an
error, or stopped by SIGTERM/SIGINT), and from the preemption watchdog before a
forced exit (it registers with `trainer.preemption`, the one signal owner):

    with LogSync(local_dir, storage.join(model_dir, "logs"), every_secs=60):
        train(...)

Only the chief runs it. Upload errors are logged and retried next period;
they never stop training.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import tensorflow as tf

from trainer import storage
from trainer.errors import UserError

log = logging.getLogger(__name__)

FINAL_ATTEMPTS = 3  # tries of the final sync before giving up on a file


class LogSync:
    """Mirrors the files under a local dir to a local or gs:// dir.

    A file is uploaded when its size or modification time differs from when it
    was last uploaded by this object; nothing is ever deleted remotely. The
    periodic uploads run on a daemon thread; the final one runs in the thread
    that leaves the `with` block, or in the preemption watchdog's thread.

    Attributes:
      uploads: files uploaded so far (a file uploaded twice counts twice).
      failures: failed upload attempts so far.
      last_error: the latest upload error, or None.
    """

    def __init__(self, local_dir: str, remote_dir: str, every_secs: float = 60,
                 stop_signal=None):
        if storage.is_remote(local_dir):
            raise UserError(f"LogSync's local_dir must be a local path, got {local_dir!r}.")
        if not every_secs or every_secs <= 0:
            raise UserError(f"runtime.log_sync_every_secs must be positive, got {every_secs}.")
        if not storage.is_remote(remote_dir) and (
                os.path.abspath(remote_dir) == os.path.abspath(local_dir)):
            raise UserError(f"log sync would copy {local_dir!r} onto itself; give the remote "
                            "dir a different path.")
        self.local_dir = os.path.abspath(local_dir)
        self.remote_dir = remote_dir.rstrip("/")
        self.every_secs = every_secs
        self.uploads = 0
        self.failures = 0
        self.last_error: Exception | None = None
        self._synced: dict[str, tuple[int, int]] = {}  # rel path -> (size, mtime_ns)
        self._made_dirs: set[str] = set()
        self._lock = threading.RLock()  # RLock: SIGTERM may land inside a sync
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if stop_signal is not None:
            stop_signal.on_forced_exit(self.final_sync)

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> "LogSync":
        os.makedirs(self.local_dir, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="seqtrain-logsync", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 2 * self.every_secs))
        self.final_sync()
        # Never swallow the body's exception (returning None re-raises it).

    def _run(self) -> None:
        while not self._stop.wait(self.every_secs):
            self._sync_logging_errors()

    def final_sync(self) -> None:
        """Uploads what changed, retrying failed files a few times. Never raises."""
        for attempt in range(FINAL_ATTEMPTS):
            if self._sync_logging_errors() == 0:
                return
            time.sleep(0.5 * 2**attempt)
        log.error("log sync: some files under %s were not uploaded to %s: %s",
                  self.local_dir, self.remote_dir, self.last_error)

    # ----------------------------------------------------------------- sync
    def sync(self) -> tuple[int, int]:
        """Uploads new and changed files once. Returns (uploaded, failed)."""
        with self._lock:
            uploaded = failed = 0
            for rel, path in self._local_files():
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue  # removed since the listing
                signature = (st.st_size, st.st_mtime_ns)
                if self._synced.get(rel) == signature:
                    continue
                try:
                    self._upload(path, rel)
                except Exception as e:  # noqa: BLE001 - transient: retried next period
                    failed += 1
                    self.failures += 1
                    self.last_error = e
                    log.warning("log sync: uploading %s failed (%s: %s); will retry",
                                path, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
                    continue
                # The signature from *before* the copy: a write that raced the
                # copy changes it again, so the file is sent again next time.
                self._synced[rel] = signature
                uploaded += 1
                self.uploads += 1
            return uploaded, failed

    def _sync_logging_errors(self) -> int:
        """One sync that never raises; returns the number of failed files."""
        try:
            return self.sync()[1]
        except Exception as e:  # noqa: BLE001 - e.g. the local dir vanished
            self.last_error = e
            self.failures += 1
            log.warning("log sync of %s failed: %s; will retry", self.local_dir, e)
            return 1

    def _local_files(self):
        for dirpath, _, names in os.walk(self.local_dir):
            for name in sorted(names):
                path = os.path.join(dirpath, name)
                yield os.path.relpath(path, self.local_dir).replace(os.sep, "/"), path

    def _upload(self, path: str, rel: str) -> None:
        dest = storage.join(self.remote_dir, *rel.split("/"))
        parent = dest.rsplit("/", 1)[0] if storage.is_remote(dest) else os.path.dirname(dest)
        try:
            if parent not in self._made_dirs:
                tf.io.gfile.makedirs(parent)
                self._made_dirs.add(parent)
            if storage.is_remote(dest):
                # A GCS object appears only when its upload completes: already atomic.
                tf.io.gfile.copy(path, dest, overwrite=True)
            else:
                # Readers (TensorBoard) must never see a half-copied local file.
                tmp = f"{dest}.logsync-tmp"
                tf.io.gfile.copy(path, tmp, overwrite=True)
                tf.io.gfile.rename(tmp, dest, overwrite=True)
        except Exception:
            self._made_dirs.discard(parent)  # it may be what went missing
            raise
