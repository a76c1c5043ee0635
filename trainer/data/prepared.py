"""Prepared datasets: immutable token arrays on disk, read in place.

A prepared dataset is a directory written once by `seqtrain prepare`:

    manifest.json        format version, task, content key, the data config that
                         produced it, the sources (path, bytes, SHA-256), per array
                         (`splits`) its element count, dtype and shards (file,
                         count, SHA-256), other text files (`files`), statistics
    vocab.json           the fitted vocabulary (task-specific text)
    <array>-NNNNN.npy    fixed-dtype 1-D arrays (`np.load(mmap_mode="r")`): a split's
                         tokens, or, for tasks of variable-length examples, a split's
                         tokens plus an offsets index and labels (see the task's
                         prepare module)

The content key is the SHA-256 of the source hashes and the content-defining data
config, so preparing the same inputs again finds the directory already holds them.
A directory is written under a temporary sibling name and renamed into place when
complete (trainer/data/prepared_writer.py); an existing directory holding a different
dataset is never overwritten.

`open_dataset` verifies the SHA-256 of every shard when it opens them (reading each
byte once: the cost is one sequential read of the prepared data at hashing speed,
figures in docs/prepared.md), checks each header with `np.load(mmap_mode="r")`, and
then reads windows with `os.pread` (see `FileShard`), so resident memory holds the
windows being read, not the corpus. Shards under `gs://` are copied once into a local
cache directory (verified on every open like a local shard) and read from there.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import os
import time
from typing import Callable

import numpy as np

from trainer import storage
from trainer.errors import DataError, UserError


class NothingToPrepare(UserError):
    """The data config names data generated at every run (e.g. the synthetic series):
    `seqtrain prepare` refuses it, and `train`'s implicit preparation skips it."""

FORMAT = "seqtrain-prepared"
VERSION = 1
MANIFEST = "manifest.json"
VOCAB = "vocab.json"
_HASH_BLOCK = 8 << 20
# An output path may end in this placeholder: the preparation names its directory by
# the content key's first KEY_CHARS hex digits (`keyed`), so datasets of different
# sources or data configs sit side by side (`train`'s implicit MODEL_DIR/data/{key}).
KEY_PLACEHOLDER = "{key}"
KEY_CHARS = 16


def content_key(task: str, sources: list[dict], data_config: dict) -> str:
    """SHA-256 of what determines the prepared tokens: the task, each source's bytes
    (by hash and size, in order) and the content-defining data config."""
    blob = json.dumps({"format": FORMAT, "version": VERSION, "task": task,
                       "sources": [[s["sha256"], s["bytes"]] for s in sources],
                       "data_config": data_config}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def keyed(out_dir: str, key: str) -> str:
    """`out_dir` with its `{key}` placeholder replaced by the content key's prefix.

    A preparation function calls this once it knows the content key (after hashing the
    sources) and before checking or writing `out_dir`; paths without the placeholder
    are returned unchanged.
    """
    return out_dir.replace(KEY_PLACEHOLDER, key[:KEY_CHARS])


def is_keyed(out_dir: str) -> bool:
    return KEY_PLACEHOLDER in out_dir


def file_sha256(path: str) -> tuple[str, int]:
    """(SHA-256 hex, size in bytes) of a local or gs:// file, read in 8 MiB blocks."""
    digest, size = hashlib.sha256(), 0
    with storage.open_read(path) as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def same_bytes(paths: list[str], manifest: dict) -> bool:
    """Whether `paths` hold, in order, exactly the bytes the dataset was prepared from.

    A dataset names its sources by path, but what it holds depends only on their bytes:
    the same file moved or copied elsewhere, or another run's identical file whose
    dataset a worker's shared cache already holds under the same content key, is the
    same source. Sizes are compared first; the files are hashed only when they agree.
    """
    recorded = manifest.get("sources") or []
    if not paths or len(paths) != len(recorded):
        return False
    for path, s in zip(paths, recorded):
        if not storage.exists(path) or storage.size(path) != s.get("bytes"):
            return False
    return all(file_sha256(path)[0] == s.get("sha256") for path, s in zip(paths, recorded))


def read_manifest(prepared_dir: str) -> dict | None:
    """The manifest of `prepared_dir`, or None if it has none."""
    path = storage.join(prepared_dir, MANIFEST)
    if not storage.exists(path):
        return None
    try:
        manifest = storage.read_json(path)
    except ValueError as e:
        raise DataError(f"{path} is not valid JSON ({e}); the prepared dataset is damaged. "
                        "Delete the directory and run `seqtrain prepare` again.") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise DataError(
            f"{path} is not a {FORMAT} manifest of version {VERSION} (format "
            f"{manifest.get('format')!r}, version {manifest.get('version')!r}). Prepare the "
            "data again with this seqtrain (`seqtrain prepare --out NEW_DIR`).")
    return manifest


# ----------------------------------------------------------------------------
# Reading.
# ----------------------------------------------------------------------------


class FileShard:
    """A 1-D token array in an `.npy` file, read with `os.pread` (no mapping).

    Why not read through the memory map: on this kind of machine one batch of 64
    random 101-token windows read through `np.load(mmap_mode="r")` mapped about 70 MB
    of the file into the process (the kernel maps whole cached folios around each
    fault), so resident memory grew to the size of the corpus within a few steps,
    and even releasing the maps after every batch peaked at +90 MB (figures in
    docs/prepared.md). A `pread` per window copies only the window's bytes.
    """

    def __init__(self, path: str, offset: int, count: int, dtype: np.dtype):
        self.path, self.offset, self.count, self.dtype = path, offset, count, np.dtype(dtype)
        self.fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.count

    def read(self, start: int, stop: int) -> np.ndarray:
        size = self.dtype.itemsize
        data = os.pread(self.fd, (stop - start) * size, self.offset + start * size)
        if len(data) != (stop - start) * size:
            raise DataError(f"{self.path} is shorter than its manifest says (read "
                            f"{len(data)} bytes at token {start}); prepare the data again.")
        return np.frombuffer(data, self.dtype)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# A run reads the arrays it trains on into memory when together they take at most this
# many bytes, and cuts examples from them with in-graph gathers, as the in-memory path
# does; larger ones are read in place, a `pread` per example. Small data sets are the
# common case, and for a small model the per-example reads cost a quarter of the step's
# CPU (forecasting's default model: docs/benchmarks.md, the multi-worker section).
# Well below the +100 MB that training on a large prepared corpus may add to its peak RSS.
IN_MEMORY_BYTES = 32 << 20


class TokenStream:
    """One split's tokens: the concatenation of its shards (`FileShard`s, or arrays)."""

    def __init__(self, shards: list):
        self.shards = shards
        sizes = np.array([len(s) for s in shards], np.int64)
        self.ends = np.cumsum(sizes)
        self.begins = self.ends - sizes
        # Python ints for `read`, called once or more per example: numpy's per-call cost
        # on scalars (searchsorted, int()) was most of the time of a variable-length gather.
        self._ends, self._begins = self.ends.tolist(), self.begins.tolist()

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    @property
    def nbytes(self) -> int:
        return sum(len(s) * s.dtype.itemsize for s in self.shards)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Tokens start..stop-1 (a copy), across shard boundaries."""
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"tokens {start}..{stop} outside 0..{len(self)}")
        j = bisect.bisect_right(self._ends, start)
        if start < stop <= self._ends[j]:  # within one shard (the common case)
            begin = self._begins[j]
            return np.array(_read(self.shards[j], start - begin, stop - begin))
        parts, pos = [], start
        while pos < stop:
            j = int(np.searchsorted(self.ends, pos, side="right"))
            end = min(stop, int(self.ends[j]))
            parts.append(_read(self.shards[j], pos - int(self.begins[j]),
                               end - int(self.begins[j])))
            pos = end
        return np.concatenate(parts) if parts else np.empty(0, np.int32)

    def windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """int32 [n, length]: the tokens of each window `starts[i] .. starts[i]+length-1`,
        one read per window (two for a window that straddles two shards)."""
        starts = np.asarray(starts, np.int64).reshape(-1)
        out = np.empty((len(starts), length), np.int32)
        if len(starts) and (starts.min() < 0 or starts.max() + length > len(self)):
            raise IndexError(f"a window of {length} tokens from {starts.max()} is outside "
                             f"the {len(self)} tokens of this split")
        first = np.searchsorted(self.ends, starts, side="right")
        last = np.searchsorted(self.ends, starts + length - 1, side="right")
        local = (starts - self.begins[first]).tolist()
        for i, (j, k, start) in enumerate(zip(first.tolist(), last.tolist(), local)):
            out[i] = (_read(self.shards[j], start, start + length) if j == k
                      else self.read(int(starts[i]), int(starts[i]) + length))
        return out

    def close(self) -> None:
        for shard in self.shards:
            if isinstance(shard, FileShard):
                shard.close()


def _read(shard, start: int, stop: int) -> np.ndarray:
    return shard.read(start, stop) if isinstance(shard, FileShard) else shard[start:stop]


@dataclasses.dataclass
class PreparedDataset:
    """An opened, verified prepared dataset."""

    path: str               # as given (local or gs://)
    local_path: str         # where the shards are mapped from
    manifest: dict
    vocab_text: str
    splits: dict[str, TokenStream]  # every array of the manifest, by name
    verify_secs: float      # time spent hashing the shards at open
    verified_bytes: int
    texts: dict[str, str] = dataclasses.field(default_factory=dict)  # manifest `files`

    @property
    def content_key(self) -> str:
        return self.manifest["content_key"]


def open_dataset(prepared_dir: str, *, cache_dir: str = "", key: str = "data.prepared_dir"
                 ) -> PreparedDataset:
    """Opens `prepared_dir` (local or gs://), verifying every shard's SHA-256.

    Raises:
      DataError: missing, not a prepared dataset, or a shard/vocabulary whose bytes do
        not match the manifest (named, with the fix).
    """
    if not storage.exists(prepared_dir):
        raise DataError(f"{key}={prepared_dir!r} does not exist. Create it with `seqtrain "
                        f"prepare --task TASK --out {prepared_dir}` (same config), or clear "
                        f"{key} to read the source directly.")
    manifest = read_manifest(prepared_dir)
    if manifest is None:
        raise DataError(f"{key}={prepared_dir!r} holds no {MANIFEST}: it is not a prepared "
                        "dataset (or its preparation did not finish). Run `seqtrain prepare "
                        f"--out {prepared_dir}` again.")
    local = prepared_dir
    if storage.is_remote(prepared_dir):
        local = _local_copy(prepared_dir, manifest, cache_dir)
    fix = ("Delete the prepared directory and run `seqtrain prepare` again." if local ==
           prepared_dir else f"Delete the local cache copy {local} (it is copied again from "
           f"{prepared_dir}); if that does not help, prepare the data again.")
    started, nbytes = time.perf_counter(), 0
    splits = {}
    for split, info in manifest["splits"].items():
        arrays = []
        for shard in info["shards"]:
            path = os.path.join(local, shard["file"])
            nbytes += _verify(path, shard["sha256"], f"{key}={prepared_dir!r}: shard "
                                                     f"{shard['file']}", fix)
            arr = np.load(path, mmap_mode="r")  # parses and checks the header; not read
            dtype = info.get("dtype", manifest["dtype"])
            if arr.ndim != 1 or len(arr) != shard["tokens"] or arr.dtype.str != dtype:
                raise DataError(f"{key}={prepared_dir!r}: shard {shard['file']} holds "
                                f"{arr.shape} {arr.dtype}, the manifest says {shard['tokens']} "
                                f"values of {dtype}. Prepare the data again.")
            arrays.append(FileShard(path, arr.offset, len(arr), arr.dtype))
            del arr
        splits[split] = TokenStream(arrays)
    vocab_text = ""
    if manifest.get("vocab"):
        vocab_path = os.path.join(local, manifest["vocab"])
        _verify(vocab_path, manifest["vocab_sha256"],
                f"{key}={prepared_dir!r}: {manifest['vocab']}", fix)
        with open(vocab_path, encoding="utf-8") as f:
            vocab_text = f.read()
    texts = {}
    for name, sha in manifest.get("files", {}).items():
        path = os.path.join(local, name)
        _verify(path, sha, f"{key}={prepared_dir!r}: {name}", fix)
        with open(path, encoding="utf-8") as f:
            texts[name] = f.read()
    return PreparedDataset(prepared_dir, local, manifest, vocab_text, splits,
                           time.perf_counter() - started, nbytes, texts)


def _verify(path: str, expected: str, what: str, fix: str) -> int:
    if not os.path.exists(path):
        raise DataError(f"{what} is missing: the prepared dataset is incomplete. {fix}")
    actual, size = file_sha256(path)
    if actual != expected:
        raise DataError(
            f"{what} is damaged: its SHA-256 is {actual[:16]}..., the manifest records "
            f"{expected[:16]}.... {fix}")
    return size


def _local_copy(prepared_dir: str, manifest: dict, cache_dir: str) -> str:
    """A local copy of a gs:// prepared dataset, one per content key.

    One directory per content key and shard layout. Each file is copied under a
    temporary name and renamed, so a present file is a
    complete copy; `open_dataset` then verifies it like a local shard (a damaged
    cache copy is named in that error, with the fix: delete it).
    """
    from trainer.data.chars import default_cache_dir

    # By content key *and* layout: the same content prepared with another --shard-mb has
    # other shard files under the same names.
    layout = hashlib.sha256(json.dumps([manifest["splits"], manifest["vocab_sha256"]],
                                       sort_keys=True).encode()).hexdigest()
    local = os.path.join(cache_dir or default_cache_dir(), "prepared",
                         f"{manifest['content_key']}-{layout[:16]}")
    os.makedirs(local, exist_ok=True)
    names = [s["file"] for info in manifest["splits"].values() for s in info["shards"]]
    for name in [*names, *([manifest["vocab"]] if manifest.get("vocab") else []),
                 *manifest.get("files", {})]:
        dst = os.path.join(local, name)
        if os.path.exists(dst):
            continue
        storage.copy_to_local(storage.join(prepared_dir, name), dst)
    return local


def open_for_run(d, task: str, source: dict, config: dict, *, kind: str = "the data",
                 command: str = "", accept: tuple = (),
                 paths: Callable[[], list[str]] | None = None) -> PreparedDataset:
    """Opens `d.prepared_dir` for a run of `task` whose data config makes `source` (the
    prepare module's `describe`) and content-defining `config`. `paths` lists the
    files `source` names: a file source at another path is accepted when its bytes are
    the ones prepared (`same_bytes`).

    Raises:
      DataError: another task's dataset, damaged, or prepared from other sources or
        with another content-defining config (each differing key named, both values).
    """
    ds = open_dataset(d.prepared_dir, cache_dir=getattr(d, "cache_dir", ""))
    m, where = ds.manifest, f"data.prepared_dir={d.prepared_dir!r}"
    if m.get("task") != task and not (accept and m.get("task") in accept):
        raise DataError(f"{where} was prepared for task {m.get('task')!r}, not {task}. "
                        f"Prepare this task's data into another directory: seqtrain prepare "
                        f"--task {task} --out NEW_DIR (same config), or train --task "
                        f"{m.get('task')}.")
    prep = m.get("data_config", {})
    diffs = [f"{_key(k)}={_show(v)} (prepared with {_show(prep.get(k))})"
             for k, v in config.items() if prep.get(k) != v]
    if source != m.get("source") and not moved(source, m, paths):
        diffs.insert(0, f"{kind} {json.dumps(source, sort_keys=True)} (prepared from "
                        f"{json.dumps(m.get('source'), sort_keys=True)})")
    if diffs:
        raise DataError(
            f"{where} does not match this run's config: {'; '.join(diffs)}. These change "
            "what was prepared. Set them as prepared, or prepare this config into a new "
            f"directory: seqtrain prepare --task {task} {command}--out NEW_DIR.")
    return ds


def moved(source: dict, manifest: dict, paths: Callable[[], list[str]] | None) -> bool:
    """Whether a file source that differs from the recorded one only by where its files
    are holds the prepared bytes (`same_bytes`)."""
    recorded = manifest.get("source") or {}
    if paths is None or not source.get("kind") == "file" == recorded.get("kind"):
        return False
    try:
        return same_bytes(paths(), manifest)
    except DataError:  # no such file: the mismatch is reported as it is
        return False


def _key(k: str) -> str:
    return "runtime.seed" if k == "split_seed" else f"data.{k}"


def _show(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    return repr(v) if isinstance(v, str) else json.dumps(v) if isinstance(v, (list, tuple)) \
        else str(v)
