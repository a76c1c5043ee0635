"""`seqtrain prepare` for labelled lines (text_classification), in bounded memory.

The in-memory path (trainer/tasks/text_classification.py) reads the rows with
trainer/data/text.py, splits them with `text.split` (a seeded permutation of the
usable rows: the first `max(1, round(N * data.eval_fraction))` are eval, in that
order; or every row of data.eval_path), adapts a Keras `TextVectorization` on the
training texts and maps labels to ids in `text.label_sort_key` order. Here the
same happens in three streaming passes over the files:

  1. hash the files, count the usable rows (non-empty text and label); the split
     follows (a permutation of N row numbers: 8 bytes per row, not the rows);
  2. tokenize every row (`words`: TextVectorization's default standardization and
     split, done on bytes without TensorFlow), count the training tokens and
     labels, and the tokens of each split;
  3. encode each row with the fitted vocabulary and stream the ids into the arrays.

Per split the dataset holds `<split>.tokens` (every row's ids, in file order, not
truncated: one prepared dataset serves any data.sequence_length), `<split>.offsets`
(int64, rows + 1: row i is tokens[offsets[i]:offsets[i+1]]), `<split>.labels`
(int32 class ids) and, when the split is drawn at random, `<split>.order` (int64:
example k is row order[k], the in-memory path's example order). Read by
trainer/data/labelled_prepared.py.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import time
from collections import Counter
from typing import Callable

import numpy as np

from trainer import storage
from trainer.data import prepared_writer, table_stream, text as text_data
from trainer.data.prepared_writer import Progress, changed_error, recorded_config
from trainer.data.token_counts import SpillingCounter
from trainer.errors import DataError

TASK = "text_classification"
# The data keys that change the rows, the split, the vocabulary or the labels.
# data.sequence_length only pads or truncates at training time.
CONTENT_KEYS = ("format", "header", "text_column", "label_column", "encoding",
                "max_field_bytes", "eval_fraction", "vocab_size")
MASK, OOV = "", "[UNK]"  # TextVectorization's reserved ids 0 and 1
# TextVectorization's "lower_and_strip_punctuation": tf.strings.lower (ASCII letters
# only) and removing these ASCII characters; "whitespace" splits at ASCII white space
# (what bytes.lower, bytes.translate and bytes.split do).
_PUNCTUATION = b'!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\''


def words(text: str) -> list[bytes]:
    """The tokens a default Keras TextVectorization makes of `text` (UTF-8 bytes)."""
    return text.encode("utf-8").lower().translate(None, _PUNCTUATION).split()


def fit_vocabulary(counts: SpillingCounter, max_tokens: int) -> list[str]:
    """IndexLookup.finalize_state's rule: by count, most frequent first, ties broken by
    the token's bytes in descending order; the mask and OOV tokens first."""
    ranked = counts.top(max_tokens - 2, exclude=(MASK.encode(), OOV.encode()))
    return [MASK, OOV] + [t.decode("utf-8") for t, _ in ranked]


def describe(d) -> dict:
    """The files a text_classification data config names, without reading them."""
    if not d.train_path:
        return {"kind": "bundled", "name": "reviews.csv"}
    return {"kind": "file", "train_path": _where(d.train_path),
            "eval_path": _where(d.eval_path) if d.eval_path else ""}


def content_config(d, seed: int) -> dict:
    """The content-defining keys, and the split seed (runtime.seed) when the eval
    split is drawn from the training file."""
    return {**{k: getattr(d, k) for k in CONTENT_KEYS},
            "split_seed": None if d.eval_path else seed}


def _where(path: str) -> str:
    return path if storage.is_remote(path) else os.path.abspath(path)


class _File:
    """One labelled file: where it is, how to read it, its rows' (text, label)."""

    def __init__(self, d, path: str, key: str, bundled: bool):
        self.path, self.key = path, key
        if bundled:
            self.kw = dict(fmt="csv", header=True, encoding="utf-8",
                           max_field_bytes=text_data.tables.DEFAULT_MAX_FIELD_BYTES)
            self.wanted = ("text", "label")
        else:
            self.kw = dict(fmt=d.format, header=d.header, encoding=d.encoding,
                           max_field_bytes=d.max_field_bytes)
            self.wanted = (d.text_column, d.label_column)

    def rows(self, on_bytes):
        """(text, label) of each row, and the skipped counts by reason (filled as read)."""
        head, records = table_stream.stream(self.path, key=self.key, names=self.wanted,
                                            on_bytes=on_bytes, **self.kw)
        self.skipped: dict[str, int] = {}
        cols = None if head.format == "jsonl" else self._columns(head)
        used, self.records = 0, 0
        counts: collections.Counter = collections.Counter()
        first = None
        for _, row in records:
            self.records += 1
            t, lab = cols or self.wanted
            text = table_stream.field_of(row, t if cols else str(t))
            label = table_stream.field_of(row, lab if cols else str(lab)).strip()
            if first is None:
                first = (",".join(row) if isinstance(row, list) else str(row), label or None)
            reason = "empty label" if not label else "empty text" if not text.strip() else None
            if reason:
                self.skipped[reason] = self.skipped.get(reason, 0) + 1
                continue
            used += 1
            counts[label] += 1
            yield text, label
        if first is not None:
            text_data.tables.check_first_row_label(
                self.path, self.key, self.kw.get("header"), head.header, *first, counts)
        # How the file was read, as the in-memory path's start output says it.
        self.described = text_data.tables.describe_read(
            self.path, self.records, head.format, head.format_reason, head.header) + (
            "; skipped " + ", ".join(f"{n} ({r})" for r, n in self.skipped.items())
            if self.skipped else "")  # as the in-memory reader's summary says it
        if head.format == "jsonl":
            for wanted, ck in zip(self.wanted, ("data.text_column", "data.label_column")):
                if str(wanted) not in head.columns:
                    raise DataError(
                        f"{self.path!r} has no key {wanted!r} ({ck}); its objects have the "
                        f"keys {', '.join(head.columns)}. Set --set {ck}=<key>.")
        if not used:
            raise DataError(f"{self.key}={self.path!r} has no row with both a text and a "
                            f"label ({', '.join(f'{n} {r}' for r, n in self.skipped.items())})"
                            ". Check data.text_column and data.label_column.")

    def _columns(self, head) -> tuple[int, int]:
        defaults = {"text": 0, "label": 1}
        cols = []
        for wanted, ck in zip(self.wanted, ("data.text_column", "data.label_column")):
            if not head.header and str(wanted) in defaults and len(head.columns) >= 2:
                wanted = defaults[str(wanted)]
            cols.append(head.column(wanted, ck))
        return tuple(cols)


def prepare(d, out_dir: str, *, seed: int, shard_mb: float = 256,
            log: Callable[[str], None] = print, progress_mb: float = 64) -> dict:
    """Prepares the labelled rows of data config `d` into `out_dir` (or finds them there).

    `seed` is runtime.seed: the in-memory path draws the eval split with it (required:
    a preparation with another seed than the run's would be refused when opened).

    Raises:
      DataError / UserError: a bad source, or `out_dir` holding something else.
    """
    started = time.perf_counter()
    bundled = not d.train_path
    files = [_File(d, text_data.bundled_path("reviews.csv") if bundled else d.train_path,
                   "data.train_path", bundled)]
    if d.eval_path:
        files.append(_File(d, d.eval_path, "data.eval_path", False))
    sizes = [storage.size(f.path) if storage.exists(f.path) else 0 for f in files]
    progress = Progress(sum(sizes), log, progress_mb)
    prepared_writer.check_out_dir(out_dir, None)

    # Pass 1: hash, count the usable rows.
    digests = [hashlib.sha256() for _ in files]
    progress.start("pass 1/3 (hash, count rows)")
    rows = []
    for f, digest in zip(files, digests):
        rows.append(sum(1 for _ in f.rows(_feed(digest, progress))))
    sources = [{"path": f.path, "bytes": n, "sha256": h.hexdigest(), "read": f.described,
                "skipped": dict(f.skipped)} for f, n, h in zip(files, sizes, digests)]
    config = content_config(d, seed)
    summary, reused = prepared_writer.name_or_reuse(TASK, out_dir, sources, config, started)
    if reused:
        return reused
    key, out_dir = summary["content_key"], summary["out"]

    # The split: which split each row of the training file goes to, and example order.
    n = rows[0]
    if d.eval_path:
        in_eval = np.zeros(n, bool)
        orders = {}
    else:
        order = np.random.default_rng(seed).permutation(n)  # text.split's draw
        n_eval = max(1, int(round(n * d.eval_fraction)))
        if n_eval >= n:
            raise DataError(
                f"data.eval_fraction={d.eval_fraction} leaves no training rows out of {n}; "
                "lower it or provide data.eval_path.")
        in_eval = np.zeros(n, bool)
        in_eval[order[:n_eval]] = True
        before = np.cumsum(in_eval) - in_eval  # eval rows before each row
        orders = {"train": (np.arange(n) - before)[order[n_eval:]],
                  "eval": before[order[:n_eval]]}
        del order, before

    # Pass 2: tokenize, count training tokens and labels, tokens per split.
    # The token counts spill to sorted temporary runs past a bound (token_counts.py):
    # exact, in memory that does not grow with the corpus' distinct tokens.
    counts = SpillingCounter()
    labels = {"train": Counter(), "eval": Counter()}
    n_tokens = {"train": 0, "eval": 0}
    again = [hashlib.sha256() for _ in files]
    progress.start("pass 2/3 (fit the vocabulary on the training split)")
    with counts:
        for i, (f, digest) in enumerate(zip(files, again)):
            for r, (text, label) in enumerate(f.rows(_feed(digest, progress))):
                split = _split(i, r, in_eval, files)
                toks = words(text)
                n_tokens[split] += len(toks)
                labels[split][label] += 1
                if split == "train":
                    counts.update(toks)
        if [h.hexdigest() for h in again] != [s["sha256"] for s in sources]:
            raise changed_error([f.path for f in files])
        vocab = fit_vocabulary(counts, d.vocab_size)
    class_names = sorted(labels["train"], key=text_data.label_sort_key)
    if len(class_names) < 2:
        raise DataError(
            f"the training data has a single class ({class_names[0]!r}) in column "
            f"{d.label_column!r}; classification needs at least two. Check the label column.")
    unknown = sorted(set(labels["eval"]) - set(class_names))
    if unknown:
        raise DataError(
            f"the eval split has labels not seen in training: {unknown[:5]}. "
            "Make sure every class appears in the training data.")
    index = {t.encode("utf-8"): i for i, t in enumerate(vocab)}
    label_id = {name: i for i, name in enumerate(class_names)}

    # Pass 3: encode into the arrays.
    n_rows = {"train": int(n - in_eval.sum()) if not d.eval_path else n,
              "eval": int(in_eval.sum()) if not d.eval_path else rows[1]}
    dtype = np.uint16 if len(vocab) <= 1 << 16 else np.int32
    arrays = {}
    for split in ("train", "eval"):
        arrays.update({f"{split}.tokens": (dtype, n_tokens[split]),
                       f"{split}.offsets": (np.int64, n_rows[split] + 1),
                       f"{split}.labels": (np.int32, n_rows[split])})
        if split in orders:
            arrays[f"{split}.order"] = (np.int64, n_rows[split])
    writer = prepared_writer.Writer.for_arrays(out_dir, arrays, shard_mb, dtype)
    third = [hashlib.sha256() for _ in files]
    progress.start("pass 3/3 (encode, write arrays)")
    eval_oov = 0
    try:
        for split in orders:
            writer.add(f"{split}.order", orders[split])
        ends = {"train": 0, "eval": 0}
        for split in ends:
            writer.add(f"{split}.offsets", np.zeros(1, np.int64))
        for i, (f, digest) in enumerate(zip(files, third)):
            batch = _Batch(writer)
            for r, (text, label) in enumerate(f.rows(_feed(digest, progress))):
                split = _split(i, r, in_eval, files)
                ids = [index.get(t, 1) for t in words(text)]
                if split == "eval":
                    eval_oov += ids.count(1)
                ends[split] += len(ids)
                batch.add(split, ids, ends[split], label_id[label])
            batch.flush()
        if [h.hexdigest() for h in third] != [s["sha256"] for s in sources]:
            raise changed_error([f.path for f in files])
        manifest = writer.commit({
            "task": TASK, "content_key": key, "source": describe(d), "sources": sources,
            "data_config": config, "config": recorded_config(d),
            "stats": {"rows": n_rows, "tokens": n_tokens, "vocab_size": len(vocab),
                      "labels": {s: dict(sorted(c.items())) for s, c in labels.items()},
                      "skipped": [f.skipped for f in files], "eval_oov": eval_oov},
        }, json.dumps({"tokens": vocab, "labels": class_names}, ensure_ascii=False) + "\n")
    except BaseException as e:
        raise writer.failed(e, [f.path for f in files]) from None
    return {**summary, "reused": False, "manifest": manifest,
            "seconds": time.perf_counter() - started}


def _split(i: int, row: int, in_eval: np.ndarray, files) -> str:
    """The split of row `row` of file `i` (the eval file: every row)."""
    if i:
        return "eval"
    if row >= len(in_eval):  # more rows than pass 1 counted
        raise changed_error([f.path for f in files])
    return "eval" if in_eval[row] else "train"


class _Batch:
    """Rows buffered per split and written as arrays every few thousand rows."""

    def __init__(self, writer, size: int = 4096):
        self.writer, self.size = writer, size
        self.parts = {s: ([], [], []) for s in ("train", "eval")}

    def add(self, split: str, ids: list[int], end: int, label: int) -> None:
        tokens, offsets, labels = self.parts[split]
        tokens.extend(ids)
        offsets.append(end)
        labels.append(label)
        if len(offsets) >= self.size:
            self._write(split)

    def flush(self) -> None:
        for split in self.parts:
            self._write(split)

    def _write(self, split: str) -> None:
        tokens, offsets, labels = self.parts[split]
        if offsets:
            self.writer.add(f"{split}.tokens", np.asarray(tokens))
            self.writer.add(f"{split}.offsets", np.asarray(offsets, np.int64))
            self.writer.add(f"{split}.labels", np.asarray(labels, np.int32))
        self.parts[split] = ([], [], [])


def _feed(digest, progress):
    def on_bytes(data: bytes) -> None:
        digest.update(data)
        progress.add(len(data))
    return on_bytes
