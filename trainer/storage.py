"""Path helpers over `tf.io.gfile`, so every path may be local or `gs://`.

Nothing in seqtrain uses `open`, `os.path`, `shutil` or `pathlib` on a path
that a user can set; it goes through these helpers instead.

TensorFlow is imported on the first call that needs it: the reads that commands
like `seqtrain job render --config FILE` do on local files run without it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import posixpath
import shutil
import sys
import uuid

from trainer.errors import UserError, first_line

def is_remote(path: str) -> bool:
    return "://" in str(path)


def join(*parts: str) -> str:
    if is_remote(parts[0]):
        return posixpath.join(*parts)
    return os.path.join(*parts)


def exists(path: str) -> bool:
    if not is_remote(path):
        return os.path.exists(path)
    return _gfile().exists(path)


def isdir(path: str) -> bool:
    if not is_remote(path):
        return os.path.isdir(path)
    return _gfile().isdir(path)


def makedirs(path: str) -> None:
    _gfile().makedirs(path)


def listdir(path: str) -> list[str]:
    return [p.rstrip("/") for p in _gfile().listdir(path)]


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def read_bytes(path: str) -> bytes:
    if not is_remote(path):
        with open(path, "rb") as f:
            return f.read()
    with _gfile().GFile(path, "rb") as f:
        return f.read()


def read_input(path: str, name: str, *, missing: str, directory: str, empty: str | None = None,
               text: bool = False, error: type[UserError] = UserError) -> bytes | str:
    """The bytes (or, with `text`, the UTF-8 text) of a file the user named, local or gs://.

    Every failure is one `error` paragraph that starts with `name`, says what is wrong
    and ends with the fix the caller suggests for it.

    Args:
      name: how the messages name the input, with the path as the user typed it:
        "config file 'c.yaml'", "input file @in.txt", "data.train_path='r.csv'".
      missing: the fix for a path that does not exist.
      directory: the fix for a path that is a directory.
      empty: the fix for a file with nothing but white space in it; None accepts one.
      text: decode as UTF-8 (a byte-order mark is kept); False returns the bytes.

    Raises:
      `error` (a UserError): missing, a directory, unreadable (permissions, I/O or a
        GCS error), empty (if `empty` is given) or, with `text`, not UTF-8.
    """
    try:
        kind = "missing" if not exists(path) else "directory" if isdir(path) else "file"
        raw = read_bytes(path) if kind == "file" else b""
    except _io_errors() as e:
        raise error(f"{name} cannot be read: {first_line(e, 200)}. Check that this user may "
                    "read it (`ls -l` it; on gs://, the account needs storage.objects.get)."
                    ) from None
    if kind == "missing":
        raise error(f"{name} does not exist. {missing}")
    if kind == "directory":
        raise error(f"{name} is a directory; {directory}")
    if empty is not None and not raw.strip():
        raise error(f"{name} is empty; {empty}")
    if not text:
        return raw
    return decode_utf8(raw, name, "Re-save it as UTF-8 (`iconv -f latin1 -t utf-8`).", error)


def decode_utf8(raw: bytes, name: str, fix: str, error: type[UserError] = UserError) -> str:
    """`raw` as UTF-8, or `error` naming `name`, where decoding failed, and `fix`."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{name} is not UTF-8: {undecodable_at(raw, e)}. {fix}") from None


def undecodable_at(raw: bytes, e: UnicodeDecodeError) -> str:
    """Where `raw` failed to decode, as messages quote it:
    "line 3, byte offset 14 (column 4) holds b'\\xe9'"."""
    line = raw[:e.start].count(b"\n") + 1
    column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
    return (f"line {line}, byte offset {e.start} (column {column}) holds "
            f"{raw[e.start:e.start + 1]!r}")


def _io_errors() -> tuple[type[BaseException], ...]:
    """What a failed read raises: OSError locally, tf.errors.OpError through gfile."""
    tf_errors = getattr(sys.modules.get("tensorflow"), "errors", None)
    return (OSError, tf_errors.OpError) if tf_errors is not None else (OSError,)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str, data: bytes) -> None:
    """Writes a whole file atomically where the filesystem allows it.

    Local paths are written to a temp name and renamed, so a killed process
    never leaves a half-written file. On GCS an object only becomes visible
    once its upload completes, so a direct write is already atomic.
    """
    if is_remote(path):
        with _gfile().GFile(path, "wb") as f:
            f.write(data)
        return
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with _gfile().GFile(tmp, "wb") as f:
        f.write(data)
    _gfile().rename(tmp, path, overwrite=True)


def tree(root: str) -> set[str]:
    """Every file and dir below `root`, as paths relative to it (empty if it is missing)."""
    if not exists(root):
        return set()
    found = set()
    for top, dirs, files in _gfile().walk(root):
        rel = os.path.relpath(top, root) if not is_remote(root) else top[len(root):].strip("/")
        for name in [*dirs, *files]:
            found.add(name.rstrip("/") if rel in ("", ".") else f"{rel}/{name.rstrip('/')}")
    return found


def write_json(path: str, obj) -> None:
    """Strict JSON: a NaN or infinite number (a diverged metric) is written as null."""
    write_text(path, json.dumps(_finite(obj), indent=2, sort_keys=True, default=str,
                                allow_nan=False) + "\n")


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def read_json(path: str):
    return json.loads(read_text(path))


def open_read(path: str):
    """A binary file object for streaming reads (`.read(n)`), local or gs://."""
    if not is_remote(path):
        return open(path, "rb")
    return _gfile().GFile(path, "rb")


def glob(pattern: str) -> list[str]:
    """Paths matching `pattern` (local or gs://), sorted."""
    if not is_remote(pattern):
        import glob as globlib

        return sorted(globlib.glob(pattern))
    return sorted(_gfile().glob(pattern))


def size(path: str) -> int:
    """Size of a file in bytes."""
    if not is_remote(path):
        return os.path.getsize(path)
    return _gfile().stat(path).length


def copy_to_local(src: str, dst: str) -> None:
    """Copies `src` (local or gs://) to the local path `dst` under a temporary name
    renamed when complete, so `dst` is either absent or a whole copy."""
    tmp = f"{dst}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        _gfile().copy(src, tmp, overwrite=True)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def rmtree(path: str) -> None:
    if _gfile().exists(path):
        _gfile().rmtree(path)


def _gfile():
    import tensorflow as tf  # deferred: see the module docstring

    return tf.io.gfile


def remove(path: str) -> None:
    if _gfile().exists(path):
        _gfile().remove(path)


_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)
_DISK_TEXTS = ("No space left on device", "Disk quota exceeded", "Permission denied",
               "Read-only file system")


def is_disk_error(e: BaseException) -> bool:
    """Whether `e` means the file system is full or not writable by this process."""
    if isinstance(e, OSError) and e.errno in _DISK_ERRNOS:
        return True
    return isinstance(e, _io_errors()) and any(t in str(e) for t in _DISK_TEXTS)


@contextlib.contextmanager
def writing(path: str):
    """Turns "disk full" / "permission denied" while writing under `path` into a UserError.

    The message names the path and, for local paths, the free space, so the
    user can fix it; what was written before stays intact.
    """
    try:
        yield
    except Exception as e:  # noqa: BLE001 - re-raised unless it is a disk error
        if not is_disk_error(e):
            raise
        raise UserError(disk_error_message(path, e)) from None


def disk_error_message(path: str, e: BaseException) -> str:
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    free = ""
    if not is_remote(path):
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
