"""Path helpers over `tf.io.gfile`, so every path may be local or `gs://`.

Nothing in seqtrain uses `open`, `os.path`, `shutil` or `pathlib` on a path
that a user can set; it goes through these helpers instead.

TensorFlow is imported on the first call that needs it: the reads that commands
like `seqtrain job render --config FILE` do on local files run without it.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid


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


def write_text(path: str, text: str) -> None:
    """Writes a whole file atomically where the filesystem allows it.

    Local paths are written to a temp name and renamed, so a killed process
    never leaves a half-written file. On GCS an object only becomes visible
    once its upload completes, so a direct write is already atomic.
    """
    if is_remote(path):
        with _gfile().GFile(path, "w") as f:
            f.write(text)
        return
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with _gfile().GFile(tmp, "w") as f:
        f.write(text)
    _gfile().rename(tmp, path, overwrite=True)


def write_json(path: str, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str):
    return json.loads(read_text(path))


def rmtree(path: str) -> None:
    if _gfile().exists(path):
        _gfile().rmtree(path)


def _gfile():
    import tensorflow as tf  # deferred: see the module docstring

    return tf.io.gfile
