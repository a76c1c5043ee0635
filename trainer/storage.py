"""Path helpers over `tf.io.gfile`, so every path may be local or `gs://`.

Nothing in seqtrain uses `open`, `os.path`, `shutil` or `pathlib` on a path
that a user can set; it goes through these helpers instead.
"""

from __future__ import annotations

import contextlib
import errno
import json
import posixpath
import shutil
import uuid

import tensorflow as tf

from trainer.errors import UserError


def is_remote(path: str) -> bool:
    return "://" in str(path)


def join(*parts: str) -> str:
    if is_remote(parts[0]):
        return posixpath.join(*parts)
    import os

    return os.path.join(*parts)


def exists(path: str) -> bool:
    return tf.io.gfile.exists(path)


def isdir(path: str) -> bool:
    return tf.io.gfile.isdir(path)


def makedirs(path: str) -> None:
    tf.io.gfile.makedirs(path)


def listdir(path: str) -> list[str]:
    return [p.rstrip("/") for p in tf.io.gfile.listdir(path)]


def read_text(path: str) -> str:
    with tf.io.gfile.GFile(path, "r") as f:
        return f.read()


def read_bytes(path: str) -> bytes:
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()


def write_text(path: str, text: str) -> None:
    """Writes a whole file atomically where the filesystem allows it.

    Local paths are written to a temp name and renamed, so a killed process
    never leaves a half-written file. On GCS an object only becomes visible
    once its upload completes, so a direct write is already atomic.
    """
    if is_remote(path):
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(text)
        return
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def write_json(path: str, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str):
    return json.loads(read_text(path))


def rmtree(path: str) -> None:
    if tf.io.gfile.exists(path):
        tf.io.gfile.rmtree(path)


def remove(path: str) -> None:
    if tf.io.gfile.exists(path):
        tf.io.gfile.remove(path)


_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)
_DISK_TEXTS = ("No space left on device", "Disk quota exceeded", "Permission denied",
               "Read-only file system")


def is_disk_error(e: BaseException) -> bool:
    """Whether `e` means the file system is full or not writable by this process."""
    if isinstance(e, OSError) and e.errno in _DISK_ERRNOS:
        return True
    return isinstance(e, (OSError, tf.errors.OpError)) and any(t in str(e) for t in _DISK_TEXTS)


@contextlib.contextmanager
def writing(path: str):
    """Turns "disk full" / "permission denied" while writing under `path` into a UserError.

    The message names the path and, for local paths, the free space, so the
    user can fix it; what was written before stays intact.
    """
    try:
        yield
    except (OSError, tf.errors.OpError) as e:
        if not is_disk_error(e):
            raise
        raise UserError(disk_error_message(path, e)) from None


def disk_error_message(path: str, e: BaseException) -> str:
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    free = ""
    if not is_remote(path):
        import os

        probe = os.path.abspath(path)
        while probe and not os.path.exists(probe):
            probe = os.path.dirname(probe)
        try:
            usage = shutil.disk_usage(probe)
            free = f" ({usage.free / 2**20:.1f} MiB free of {usage.total / 2**20:.0f} MiB there)"
        except OSError:
            pass
    return (f"cannot write under {path}{free}: {reason}. Free some space or fix the "
            "permissions of that directory (or pass another --model-dir), then run the same "
            "command again: the checkpoints saved so far are intact and the run resumes.")
