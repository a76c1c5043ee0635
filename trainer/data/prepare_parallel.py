"""`seqtrain prepare` for parallel text (translation), in bounded memory.

The in-memory path (trainer/tasks/translation.py) reads `source<TAB>target` lines with
`parallel.read_tsv` (data.reverse, the first data.max_pairs pairs), holds out eval
pairs by source sentence (`parallel.split_pairs`; or every pair of data.eval_path),
tokenizes both sides, drops pairs longer than data.max_source_length /
data.max_target_length, fits both vocabularies on the kept training pairs and pads to
the longest kept pair of either split. Here the same happens in three streaming passes:

  1. hash the files and parse every line (`parallel.pair_of_line`, the reader's own
     line parser, so a bad line is the same error); count each distinct source's
     pairs, from which the held-out sources follow (`parallel.held_indices`, the
     draw of `parallel.held_sources`);
  2. tokenize, drop the over-long pairs, count the training tokens of each side, the
     tokens of each split and the longest kept pair;
  3. encode with the fitted vocabularies and stream the ids into the arrays.

Memory: one chunk and one line, the vocabularies' counts and, for the split, the
distinct sources of data.path counted in a `token_counts.SpillingCounter` (bounded:
sorted runs spill to temporary files and are merged back in sorted order, which is the
order the split's seeded permutation draws from), then one int64 count and one
permutation entry per distinct source (16 bytes) and the held-out sources' texts
(about data.eval_fraction of them). With data.eval_path nothing is held per source.

Per split the dataset holds `<split>.source` and `<split>.target` (every kept pair's
ids, in file order, without START/END or padding) with their offsets indexes
`<split>.source_offsets` / `<split>.target_offsets` (int64, pairs + 1); example k of
a split is its k-th kept pair, as in memory. The eval split also keeps its references
as text (`eval.references`, UTF-8 bytes, and `eval.reference_offsets`): BLEU and exact
match compare with the detokenized reference, not with its ids ([UNK] would differ).
The vocabularies are vocab.json; the padded lengths are in the manifest's stats.

The toy corpora (data.source=toy, or no data.path) are prepared too: they are
generated from runtime.seed (`parallel.toy_pairs`, a few MB at most), hashed as the
TSV they would be (so a change of the generator makes a new content key) and then go
through the same passes, so a run reads them in place like any corpus and trains on
exactly the examples of the in-memory path. Read by trainer/data/parallel_prepared.py.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import time
from typing import Callable, Iterator

import numpy as np

from trainer import storage
from trainer.data import parallel, prepared_writer, table_stream
from trainer.data.prepared_writer import Progress, changed_error, recorded_config
from trainer.data.token_counts import SpillingCounter
from trainer.errors import DataError

TASK = "translation"
# The data keys that change the pairs, the split, the tokens or the vocabularies.
TOKEN_KEYS = ("eval_fraction", "tokenize", "lowercase", "max_source_length",
              "max_target_length", "max_vocab", "min_count")
FILE_KEYS = ("encoding", "max_field_bytes", "reverse", "max_pairs")
TOY_KEYS = ("toy", "toy_size")
SAMPLES = 8  # eval sources kept as text for the samples table (on_eval_end shows 8)


def is_toy(d) -> bool:
    """The toy corpus is read when no file is named (data.source toy, or auto)."""
    return not d.path


def describe(d) -> dict:
    """The files a translation data config names, without reading them."""
    if is_toy(d):
        return {"kind": "toy"}
    return {"kind": "file", "path": _where(d.path),
            "eval_path": _where(d.eval_path) if d.eval_path else ""}


def content_config(d, seed: int) -> dict:
    """The content-defining keys, and runtime.seed where it draws the split (and, for
    the toy corpus, the pairs)."""
    keys = TOKEN_KEYS + (TOY_KEYS if is_toy(d) else FILE_KEYS)
    return {**{k: getattr(d, k) for k in keys},
            "split_seed": None if d.eval_path else seed}


def _where(path: str) -> str:
    return path if storage.is_remote(path) else os.path.abspath(path)


class _Tsv:
    """One `source<TAB>target` file, read line by line as `parallel.read_tsv` reads it."""

    def __init__(self, d, path: str, key: str, limit: int,
                 chunk_bytes: int = table_stream.CHUNK_BYTES):
        self.path, self.key, self.limit, self.d = path, key, limit, d
        self.chunk_bytes = chunk_bytes
        name = f"parallel corpus {path!r}"
        if not storage.exists(path):
            raise DataError(
                f"{name} does not exist. Set data.path to a UTF-8 text file with one "
                "'source<TAB>target' pair per line (local or gs://), or use data.source=toy.")
        if storage.isdir(path):
            raise DataError(f"{name} is a directory; point data.path at a file of "
                            "'source<TAB>target' lines.")

    def size(self) -> int:
        return storage.size(self.path)

    def pairs(self, on_bytes) -> Iterator[tuple[str, str]]:
        """(source, target) of the first `limit` lines (all with 0). The whole file is
        read (and fed to `on_bytes`) in any case; a bad line is raised once the file is
        read, so an empty file is named as such, as `read_tsv` does."""
        d, seen = self.d, {"text": False}

        def feed(data: bytes) -> None:
            on_bytes(data)
            seen["text"] = seen["text"] or bool(data.strip())

        chunks = table_stream._decoded(self.path, d.encoding, feed, self.chunk_bytes)
        error, n = None, 0
        for number, line in enumerate(_lines(chunks, d.max_field_bytes), start=1):
            if error is not None or (self.limit and n >= self.limit):
                continue  # the rest is only hashed
            try:
                if isinstance(line, int):  # over data.max_field_bytes: only its length kept
                    raise parallel.too_long(self.path, number, line, d.max_field_bytes)
                pair = parallel.pair_of_line(self.path, number, line, reverse=d.reverse,
                                             max_field_bytes=d.max_field_bytes)
            except DataError as e:
                error = e
                continue
            n += 1
            yield pair
        if not seen["text"]:
            raise DataError(f"parallel corpus {self.path!r} is empty; expected one "
                            "'source<TAB>target' pair per line.")
        if error is not None:
            raise error
        self.described = (f"read {self.path}: {n} pairs as tsv (source<TAB>target, "
                          "no quoting)")


def _lines(chunks: Iterator[str], max_chars: int) -> Iterator[str | int]:
    """The text split at "\\n" (the last line's newline is optional), BOM dropped; a
    line longer than `max_chars` + 1 is given as its length (memory stays bounded)."""
    carry, long_len, first = "", -1, True
    for chunk in chunks:
        if first:
            chunk, first = chunk.removeprefix("\ufeff"), False
        parts = chunk.split("\n")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if long_len >= 0:
                long_len += len(part)
            else:
                carry += part
                if len(carry) > max_chars + 1:
                    long_len, carry = len(carry), ""
            if last:
                break
            if long_len >= 0:
                yield long_len - (1 if part.endswith("\r") else 0)
            else:
                yield carry
            carry, long_len = "", -1
    if long_len >= 0:
        yield long_len
    elif carry:
        yield carry


class _Toy:
    """The toy corpus, generated from the seed and hashed as its TSV text."""

    def __init__(self, d, seed: int):
        self.path, self.key = f"toy:{d.toy}", "data.toy"
        self.list = parallel.toy_pairs(d.toy, d.toy_size, seed)
        self.described = ""

    def size(self) -> int:
        return sum(len(f"{s}\t{t}\n".encode("utf-8")) for s, t in self.list)

    def pairs(self, on_bytes) -> Iterator[tuple[str, str]]:
        for s, t in self.list:
            on_bytes(f"{s}\t{t}\n".encode("utf-8"))
            yield s, t


def prepare(d, out_dir: str, *, seed: int, shard_mb: float = 256,
            log: Callable[[str], None] = print, progress_mb: float = 64) -> dict:
    """Prepares the pairs of translation data config `d` into `out_dir` (or finds them there).

    `seed` is runtime.seed: the in-memory path draws the eval split (and the toy
    corpus) with it.

    Raises:
      DataError / UserError: a bad source, or `out_dir` holding something else.
    """
    started = time.perf_counter()
    if is_toy(d):
        files = [_Toy(d, seed)]
    else:
        files = [_Tsv(d, d.path, "data.path", d.max_pairs)]
        if d.eval_path:
            files.append(_Tsv(d, d.eval_path, "data.eval_path", 0))
    sizes = [f.size() for f in files]
    progress = Progress(sum(sizes), log, progress_mb)
    prepared_writer.check_out_dir(out_dir, None)

    # Pass 1: hash, parse, count the pairs of each distinct source (for the split).
    digests = [hashlib.sha256() for _ in files]
    progress.start("pass 1/3 (hash, read pairs)")
    with SpillingCounter() as per_source:
        n_pairs = [_read_pairs(f, digest, progress, per_source if i == 0 and not d.eval_path
                               else None)
                   for i, (f, digest) in enumerate(zip(files, digests))]
        sources = [{"path": f.path, "bytes": n, "sha256": h.hexdigest(),
                    **({"read": f.described} if f.described else {})}
                   for f, n, h in zip(files, sizes, digests)]
        config = content_config(d, seed)
        summary, reused = prepared_writer.name_or_reuse(TASK, out_dir, sources, config, started)
        if reused:
            return reused
        held = set() if d.eval_path else _held(d, per_source, n_pairs[0], seed)
    key, out_dir = summary["content_key"], summary["out"]

    def split_of(i: int, source: str) -> str:
        return "eval" if i or source in held else "train"

    # Pass 2: tokenize, drop over-long pairs, count tokens (training: per token).
    counts = {"source": collections.Counter(), "target": collections.Counter()}
    pairs = {s: 0 for s in ("train", "eval")}
    kept, longest = dict(pairs), {s: [0, 0] for s in pairs}
    tokens = {s: {"source": 0, "target": 0} for s in pairs}
    ref_bytes, samples, lengths = 0, [], [0, 0]
    again = [hashlib.sha256() for _ in files]
    progress.start("pass 2/3 (tokenize, fit the vocabularies on the training split)")
    for i, (f, digest) in enumerate(zip(files, again)):
        for source, target in f.pairs(_feed(digest, progress)):
            split = split_of(i, source)
            pairs[split] += 1
            s, t = _tokens(d, source, target)
            longest[split] = [max(longest[split][0], len(s)), max(longest[split][1], len(t))]
            if not _fits(d, s, t):
                continue
            kept[split] += 1
            tokens[split]["source"] += len(s)
            tokens[split]["target"] += len(t)
            lengths = [max(lengths[0], len(s)), max(lengths[1], len(t))]
            if split == "train":
                counts["source"].update(s)
                counts["target"].update(t)
            else:
                ref_bytes += len(parallel.detokenize(t, d.tokenize).encode("utf-8"))
                if len(samples) < SAMPLES:
                    samples.append(parallel.detokenize(s, d.tokenize))
    if [h.hexdigest() for h in again] != [s["sha256"] for s in sources]:
        raise changed_error([f.path for f in files])
    for split in ("train", "eval"):
        if not kept[split]:
            raise DataError(
                f"all {pairs[split]} {split} pairs were dropped as too long or empty: the "
                f"longest has {longest[split][0]} source and {longest[split][1]} target "
                f"tokens, the limits are data.max_source_length={d.max_source_length} and "
                f"data.max_target_length={d.max_target_length}. Raise them.")
    vocabs = {side: parallel.Vocab.from_counts(counts[side], d.max_vocab, d.min_count)
              for side in counts}
    del counts

    # Pass 3: encode into the arrays.
    dtype = np.uint16 if max(map(len, vocabs.values())) <= 1 << 16 else np.int32
    arrays = {"eval.references": (np.uint8, ref_bytes),
              "eval.reference_offsets": (np.int64, kept["eval"] + 1)}
    for split in ("train", "eval"):
        for side in ("source", "target"):
            arrays[f"{split}.{side}"] = (dtype, tokens[split][side])
            arrays[f"{split}.{side}_offsets"] = (np.int64, kept[split] + 1)
    writer = prepared_writer.Writer.for_arrays(out_dir, arrays, shard_mb, dtype)
    third = [hashlib.sha256() for _ in files]
    progress.start("pass 3/3 (encode, write arrays)")
    eval_oov = 0
    try:
        for name in arrays:
            if name.endswith("offsets"):
                writer.add(name, np.zeros(1, np.int64))
        batch = _Batch(writer)
        for i, (f, digest) in enumerate(zip(files, third)):
            for source, target in f.pairs(_feed(digest, progress)):
                split = split_of(i, source)
                s, t = _tokens(d, source, target)
                if not _fits(d, s, t):
                    continue
                ids = vocabs["source"].encode(s), vocabs["target"].encode(t)
                ref = parallel.detokenize(t, d.tokenize) if split == "eval" else None
                if ref is not None:
                    eval_oov += ids[0].count(parallel.UNK)
                batch.add(split, ids, ref)
        batch.flush()
        if [h.hexdigest() for h in third] != [s["sha256"] for s in sources]:
            raise changed_error([f.path for f in files])
        dropped = {s: pairs[s] - kept[s] for s in pairs}
        manifest = writer.commit({
            "task": TASK, "content_key": key, "source": describe(d), "sources": sources,
            "data_config": config, "config": recorded_config(d),
            "stats": {"rows": kept, "pairs": pairs, "dropped": dropped, "tokens": tokens,
                      "source_length": lengths[0], "target_length": lengths[1],
                      "vocab_sizes": {k: len(v) for k, v in vocabs.items()},
                      "eval_source_oov": eval_oov, "eval_samples": samples},
        }, json.dumps({side: list(v.tokens) for side, v in vocabs.items()},
                      ensure_ascii=False) + "\n")
    except BaseException as e:
        raise writer.failed(e) from None
    return {**summary, "reused": False, "manifest": manifest,
            "seconds": time.perf_counter() - started}


def _read_pairs(f, digest, progress, per_source: SpillingCounter | None) -> int:
    """Pass 1 over one file: hashes it, parses every line and counts each source's pairs
    into `per_source` (if given). Returns the number of pairs."""
    n, batch = 0, []
    for source, _ in f.pairs(_feed(digest, progress)):
        n += 1
        if per_source is not None:
            batch.append(source.encode("utf-8", "surrogatepass"))
            if len(batch) >= 4096:
                per_source.update(batch)
                batch = []
    if per_source is not None:
        per_source.update(batch)
    return n


def _held(d, per_source: SpillingCounter, n_pairs: int, seed: int) -> set[str]:
    """The held-out sources (`parallel.held_sources`' draw), from the counts in sorted order."""
    counts = np.fromiter((c for _, c in per_source.items()), np.int64)
    held = set(parallel.held_indices(counts, n_pairs, d.eval_fraction, seed).tolist())
    if len(held) == len(counts) and not is_toy(d):
        raise DataError(
            f"data.path={d.path!r} has {n_pairs} pair(s) with {len(counts)} distinct "
            f"source(s): too few to hold out data.eval_fraction={d.eval_fraction} for eval "
            "and still train. Add pairs or set data.eval_path.")
    del counts
    return {s.decode("utf-8", "surrogatepass")
            for i, (s, _) in enumerate(per_source.items()) if i in held}


def _tokens(d, source: str, target: str) -> tuple[list[str], list[str]]:
    return (parallel.tokenize(source, d.tokenize, d.lowercase),
            parallel.tokenize(target, d.tokenize, d.lowercase))


def _fits(d, s: list[str], t: list[str]) -> bool:
    """The in-memory path's filter (TranslationTask._tokenize_and_filter)."""
    return 0 < len(s) <= d.max_source_length and 0 < len(t) <= d.max_target_length


class _Batch:
    """Pairs buffered per split and written as arrays every few thousand pairs."""

    def __init__(self, writer, size: int = 4096):
        self.writer, self.size = writer, size
        self.ends = {s: {"source": 0, "target": 0, "ref": 0} for s in ("train", "eval")}
        self.parts = {s: self._empty() for s in ("train", "eval")}

    @staticmethod
    def _empty() -> dict:
        return {"source": [], "target": [], "source_offsets": [], "target_offsets": [],
                "references": [], "reference_offsets": []}

    def add(self, split: str, ids: tuple[list[int], list[int]], ref: str | None) -> None:
        parts, ends = self.parts[split], self.ends[split]
        for side, values in zip(("source", "target"), ids):
            parts[side].extend(values)
            ends[side] += len(values)
            parts[f"{side}_offsets"].append(ends[side])
        if ref is not None:
            data = ref.encode("utf-8")
            parts["references"].append(data)
            ends["ref"] += len(data)
            parts["reference_offsets"].append(ends["ref"])
        if len(parts["source_offsets"]) >= self.size:
            self._write(split)

    def flush(self) -> None:
        for split in self.parts:
            self._write(split)

    def _write(self, split: str) -> None:
        parts = self.parts[split]
        if parts["source_offsets"]:
            for side in ("source", "target"):
                self.writer.add(f"{split}.{side}", np.asarray(parts[side]))
                self.writer.add(f"{split}.{side}_offsets",
                                np.asarray(parts[f"{side}_offsets"], np.int64))
            if split == "eval":
                self.writer.add("eval.references",
                                np.frombuffer(b"".join(parts["references"]), np.uint8))
                self.writer.add("eval.reference_offsets",
                                np.asarray(parts["reference_offsets"], np.int64))
        self.parts[split] = self._empty()


def _feed(digest, progress):
    def on_bytes(data: bytes) -> None:
        digest.update(data)
        progress.add(len(data))
    return on_bytes
