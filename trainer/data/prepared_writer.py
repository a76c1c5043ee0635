"""Writing a prepared dataset (the layout is in trainer/data/prepared.py): shards
streamed to a temporary sibling directory, renamed into place when complete.

A `gs://` output is written locally first (a temporary directory), then each shard and
the vocabulary are uploaded with the precondition `if_generation_match=0` (create only,
never overwrite) and the manifest last, the same way: a dataset whose manifest exists
is complete, and two preparers writing one directory cannot clobber each other's
objects (the loser of the manifest finds the winner's dataset, reuses it if it has
the same content key, and is refused otherwise).

No TensorFlow here for local outputs: `seqtrain prepare` runs in the memory of the data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import uuid
from typing import Callable

import numpy as np

from trainer import storage
from trainer.data.prepared import (FORMAT, MANIFEST, VERSION, VOCAB, content_key, is_keyed,
                                   keyed, open_dataset, read_manifest)
from trainer.errors import DataError, UserError, first_line
from trainer.redact import redact


class Writer:
    """Writes a prepared dataset into a temporary directory beside `out_dir`, then
    renames it into place (`commit`); a gs:// `out_dir` is staged in a local temporary
    directory and uploaded at `commit` (see the module docstring).

    Shards are streamed: `add(name, values)` appends to the array's current shard
    file and starts a new one every `shard_tokens` elements (or `shard_bytes`),
    hashing bytes as they are written, so memory holds one chunk, never an array.

    Each array (a split's tokens, an offsets index, labels...) is declared up front
    with its element count; `dtype` is every array's type unless `dtypes` names
    another for it. The manifest's `splits` maps each array's name to its element
    count (`tokens`), dtype and shards.
    """

    def __init__(self, out_dir: str, *, dtype, counts: dict[str, int], shard_tokens: int = 0,
                 dtypes: dict | None = None, shard_bytes: int = 0):
        self.remote = storage.is_remote(out_dir)
        if self.remote:
            self.out_dir = out_dir.rstrip("/")
            self.tmp = tempfile.mkdtemp(prefix="seqtrain-prepare-")
        else:
            self.out_dir = os.path.abspath(out_dir)
            parent = os.path.dirname(self.out_dir)
            os.makedirs(parent, exist_ok=True)
            self.tmp = os.path.join(parent, f".{os.path.basename(self.out_dir)}.tmp-"
                                            f"{uuid.uuid4().hex[:8]}")
            os.makedirs(self.tmp)
        self.dtype = np.dtype(dtype)
        self.dtypes = {n: np.dtype((dtypes or {}).get(n, dtype)) for n in counts}
        self.limits = {n: max(1, int(shard_tokens) if shard_tokens
                              else int(shard_bytes) // self.dtypes[n].itemsize) for n in counts}
        self.counts = counts
        self.shards: dict[str, list[dict]] = {s: [] for s in counts}
        self._open: dict[str, tuple] = {}  # split -> (file, digest, info, remaining)

    @classmethod
    def for_arrays(cls, out_dir: str, arrays: dict[str, tuple], shard_mb: float,
                   dtype) -> "Writer":
        """A writer of named arrays `{name: (dtype, element count)}` in shards of
        `shard_mb` MB (`dtype`: the manifest's token dtype)."""
        return cls(out_dir, dtype=dtype, counts={k: n for k, (_, n) in arrays.items()},
                   dtypes={k: t for k, (t, _) in arrays.items()},
                   shard_bytes=int(shard_mb * 2**20))

    def add(self, split: str, tokens: np.ndarray) -> None:
        tokens = np.ascontiguousarray(tokens, dtype=self.dtypes[split])
        while len(tokens):
            f, digest, info, remaining = self._current(split)
            part, tokens = tokens[:remaining], tokens[remaining:]
            data = part.tobytes()
            f.write(data)
            digest.update(data)
            info["tokens"] += len(part)
            self._open[split] = (f, digest, info, remaining - len(part))
            if remaining == len(part):
                self._close(split)

    def _current(self, split: str):
        if split not in self._open:
            index = len(self.shards[split])
            written = sum(s["tokens"] for s in self.shards[split])
            n = min(self.limits[split], self.counts[split] - written)
            if n <= 0:
                raise CountMismatch(f"more tokens than the {self.counts[split]} declared for "
                                    f"split {split!r}")
            name = f"{split}-{index:05d}.npy"
            f = open(os.path.join(self.tmp, name), "wb")
            header = _npy_header(self.dtypes[split], n)
            f.write(header)
            digest = hashlib.sha256(header)
            self._open[split] = (f, digest, {"file": name, "tokens": 0}, n)
        return self._open[split]

    def _close(self, split: str) -> None:
        f, digest, info, _ = self._open.pop(split)
        f.close()
        info["sha256"] = digest.hexdigest()
        self.shards[split].append(info)

    def commit(self, manifest: dict, vocab_text: str | None,
               files: dict[str, str] | None = None) -> dict:
        """Writes vocab.json, the other text `files` ({name: text}, e.g. labels,
        statistics) and manifest.json (shards filled in), renames (or uploads) into
        place. Returns the manifest now at `out_dir`: another preparer's, if one
        published the same dataset (same content key) there first.

        Raises:
          UserError: another preparer published a different dataset at `out_dir`
            meanwhile, or a gs:// upload failed.
        """
        for split, n in self.counts.items():
            written = sum(s["tokens"] for s in self.shards[split])
            if split in self._open or written != n:
                raise CountMismatch(f"split {split!r}: {written} tokens written, {n} declared")
        texts = {VOCAB: vocab_text} if vocab_text is not None else {}
        for name, text in {**texts, **(files or {})}.items():
            with open(os.path.join(self.tmp, name), "w", encoding="utf-8") as f:
                f.write(text)
        manifest = {**manifest, "format": FORMAT, "version": VERSION, "dtype": self.dtype.str,
                    "vocab": VOCAB if vocab_text is not None else None,
                    "vocab_sha256": hashlib.sha256(vocab_text.encode("utf-8")).hexdigest()
                    if vocab_text is not None else None,
                    "files": {name: hashlib.sha256(text.encode("utf-8")).hexdigest()
                              for name, text in (files or {}).items()},
                    "splits": {s: {"tokens": n, "dtype": self.dtypes[s].str,
                                   "shards": self.shards[s]}
                               for s, n in self.counts.items()}}
        with open(os.path.join(self.tmp, MANIFEST), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
            f.write("\n")
        if self.remote:
            try:
                return _publish(self.tmp, self.out_dir, manifest)
            finally:
                shutil.rmtree(self.tmp, ignore_errors=True)
        try:
            if os.path.isdir(self.out_dir):  # an empty directory (checked by the caller)
                os.rmdir(self.out_dir)
            os.rename(self.tmp, self.out_dir)
        except OSError:  # another preparer renamed its dataset into place first
            existing = read_manifest(self.out_dir) if os.path.isdir(self.out_dir) else None
            if existing is None:
                raise
            self.abort()
            _same_key(self.out_dir, existing, manifest["content_key"])
            return existing
        return manifest

    def failed(self, e: BaseException, sources: list[str] = ()) -> BaseException:
        """Removes the temporary directory after `e` and returns what to raise: a disk
        full or unwritable --out becomes a UserError naming it; other counts than an
        earlier pass of `sources` made, the "source changed" error naming them."""
        self.abort()
        if isinstance(e, CountMismatch) and sources:
            return changed_error(list(sources))
        if isinstance(e, OSError) and storage.is_disk_error(e):
            return UserError(
                f"cannot write the prepared dataset for --out {self.out_dir!r}: "
                f"{first_line(e)}. Free some space there or pick a writable --out; nothing "
                "was left behind.")
        return e

    def abort(self) -> None:
        for f, *_ in self._open.values():
            f.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _same_key(out_dir: str, existing: dict, key: str) -> None:
    if existing.get("content_key") != key:
        raise UserError(
            f"--out {out_dir!r}: another preparation published a different dataset there "
            f"while this one ran (content key {str(existing.get('content_key'))[:16]}..., "
            f"this one {key[:16]}...); nothing of this one was kept. Prepare into another "
            "directory.")


def _publish(local_dir: str, out_uri: str, manifest: dict) -> dict:
    """Uploads a complete local dataset to `out_uri`: data files, then the manifest,
    each created only if absent (`if_generation_match=0`).

    A data object that already exists is accepted only if its bytes are ours (same
    CRC32C: a concurrent preparer of the same content key wrote it); the manifest
    decides which preparer won.
    """
    from google.api_core import exceptions as gexc

    from trainer import gcs

    client, principal = gcs._client([out_uri])
    bucket_name, prefix = gcs.split_uri(out_uri)
    bucket = client.bucket(bucket_name)
    names = [s["file"] for info in manifest["splits"].values() for s in info["shards"]]
    names += ([VOCAB] if manifest.get("vocab") else []) + sorted(manifest.get("files") or {})
    for name in [*names, MANIFEST]:
        path, blob = os.path.join(local_dir, name), bucket.blob(f"{prefix}/{name}")
        uri = f"gs://{bucket_name}/{prefix}/{name}"

        def upload() -> bool:
            try:
                blob.upload_from_filename(path, checksum="crc32c", if_generation_match=0)
            except gexc.PreconditionFailed:  # it exists (this upload's retry, or another's)
                return False
            return True

        try:
            created = gcs._explained(upload, bucket_name, uri, principal, "write")
        except gcs._Transient as e:
            raise UserError(f"could not upload {name} to {uri}: {e}. Check the network and "
                            "run the command again.") from None
        if created:
            continue
        if name == MANIFEST:
            existing = read_manifest(out_uri) or {}
            _same_key(out_uri, existing, manifest["content_key"])
            return existing
        blob.reload()
        if blob.crc32c != gcs._local_checksums(path)[0]:
            raise UserError(
                f"--out {out_uri!r}: {name} already exists there with other bytes: another "
                "preparation is writing a different dataset into this directory. Prepare "
                "into another directory.")
    return manifest


def _npy_header(dtype: np.dtype, n: int) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
              "shape": (n,)})
    return buf.getvalue()


def name_or_reuse(task: str, out_dir: str, sources: list[dict], config: dict, started: float,
                  cache_dir: str = "") -> tuple[dict, dict | None]:
    """The summary of preparing `sources` (each with its "bytes") with content-defining
    `config` into `out_dir` ({key} filled in: summary["out"], summary["content_key"]),
    and, when `out_dir` already holds that dataset, verified, the result a preparer
    returns instead of preparing it again (else None)."""
    key = content_key(task, sources, config)
    out_dir = keyed(out_dir, key)
    summary = {"content_key": key, "out": out_dir,
               "source_bytes": sum(s["bytes"] for s in sources), "sources": sources}
    existing = check_out_dir(out_dir, key)
    if existing is None:
        return summary, None
    open_dataset(out_dir, key="--out", cache_dir=cache_dir)  # verify it
    return summary, {**summary, "reused": True, "manifest": existing,
                     "seconds": time.perf_counter() - started}


def check_out_dir(out_dir: str, key: str | None) -> dict | None:
    """The manifest already at `out_dir` if it holds the dataset with `key` (reuse),
    None if `out_dir` is free (missing or empty). With `key` None, only refuses a file
    or a directory holding other files (a check before the source is read).

    Raises:
      UserError: `out_dir` holds another dataset or other files.
    """
    if not out_dir.strip():
        raise UserError("--out is empty; name a directory for the prepared dataset (for "
                        "example --out prepared/{key}, which the content key fills in).")
    if is_keyed(out_dir):
        if key is None:  # named by the key: nothing to check before the source is read
            return None
        out_dir = keyed(out_dir, key)
    if not storage.exists(out_dir):
        return None
    if not storage.isdir(out_dir):
        raise UserError(f"--out {out_dir!r} is a file; pass a directory for the prepared "
                        "dataset.")
    manifest = read_manifest(out_dir)
    if manifest is None:
        if storage.listdir(out_dir):
            raise UserError(
                f"--out {out_dir!r} is not empty and holds no prepared dataset "
                f"({MANIFEST} is missing); seqtrain prepare never overwrites other files. "
                "Pass a new or empty directory.")
        return None
    if key is None:
        return manifest
    if manifest.get("content_key") != key:
        src = ", ".join(s.get("path", "?") for s in manifest.get("sources", []))
        raise UserError(
            f"--out {out_dir!r} already holds another prepared dataset (content key "
            f"{str(manifest.get('content_key'))[:16]}..., from {src or '?'}, data config "
            f"{json.dumps(manifest.get('data_config'), sort_keys=True)}); these sources and "
            f"this data config make content key {key[:16]}.... A prepared dataset is "
            "immutable: pass another --out, or delete that directory first.")
    return manifest


class Progress:
    """Prints `prepare: <pass> <done> of <total> MB (<rate> MB/s)` every `every_mb` MB."""

    def __init__(self, total_bytes: int, log: Callable[[str], None], every_mb: float = 64):
        self.total, self.log, self.every = total_bytes, log, every_mb * 2**20
        self.label, self.done, self.next, self.started = "", 0, self.every, time.perf_counter()

    def start(self, label: str) -> None:
        self.label, self.done, self.next = label, 0, self.every
        self.started = time.perf_counter()

    def add(self, n: int) -> None:
        self.done += n
        if self.done >= self.next:
            self.next += self.every
            secs = max(time.perf_counter() - self.started, 1e-9)
            self.log(f"prepare: {self.label}: {self.done / 2**20:.0f} of "
                     f"{self.total / 2**20:.0f} MB ({self.done / 2**20 / secs:.1f} MB/s)")


class CountMismatch(ValueError):
    """More or fewer elements written than declared: the source changed between passes
    (or a preparer's own bug, when it has no source to blame)."""


def changed_error(files: list[str]) -> DataError:
    return DataError(f"the source ({', '.join(files)}) changed while it was being prepared "
                     "(its size or SHA-256 differs between the passes); nothing was written. "
                     "Prepare it again once it is no longer being written to.")


def recorded_config(d) -> dict:
    """The whole data section that produced the dataset (URL query strings redacted)."""
    out = dataclasses.asdict(d)
    if "url" in out:
        out["url"] = redact(out["url"])
    return out
