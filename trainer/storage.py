"""Path helpers over `tf.io.gfile`, so every path may be local or `gs://`.

Nothing in seqtrain uses `open`, `os.path`, `shutil` or `pathlib` on a path
that a user can set; it goes through these helpers instead.
"""

from __future__ import annotations

import json
import posixpath
import uuid

import tensorflow as tf


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
