"""Training from prepared labelled lines (trainer/data/prepare_labelled.py), read in place.

`open_rows` opens `data.prepared_dir` (trainer/data/prepared.py verifies every array)
and refuses one prepared for another task, from other files or with another
content-defining config than the run's. Examples are read by id: example k of a split
is row `order[k]` (or row k), whose ids are `tokens[offsets[row]:offsets[row + 1]]`,
each read with `os.pread` (trainer/data/prepared.py, `FileShard`), so a run holds the
rows it reads, not the corpus. Reading happens in one `tf.numpy_function` per replica
batch, as for character windows. A split whose arrays fit `prepared.IN_MEMORY_BYTES` is
read once and gathered by TensorFlow ops instead (`_in_graph`, the same examples).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import tensorflow as tf

from trainer.data import prepared, sampling
from trainer.data.prepare_labelled import TASK, content_config, describe


@dataclasses.dataclass
class Rows:
    """One split's rows: variable-length token ids and a label each."""

    tokens: prepared.TokenStream
    offsets: prepared.TokenStream
    labels: prepared.TokenStream
    order: prepared.TokenStream | None  # example k -> row; None: row k

    def __len__(self) -> int:
        return len(self.labels)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64).reshape(-1)
        if self.order is None:
            return ids
        return np.array([self.order.read(k, k + 1)[0] for k in ids.tolist()], np.int64)

    def gather(self, ids: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
        """(int32 [n, length] ids right-padded with 0 or truncated, int32 [n] labels)."""
        rows = self.rows(ids)
        out = np.zeros((len(rows), length), np.int32)
        labels = np.empty(len(rows), np.int32)
        for i, r in enumerate(rows.tolist()):
            start, stop = self.offsets.read(r, r + 2).tolist()
            ids_ = self.tokens.read(start, min(stop, start + length))
            out[i, :len(ids_)] = ids_
            labels[i] = self.labels.read(r, r + 1)[0]
        return out, labels


@dataclasses.dataclass
class PreparedRows:
    """A verified prepared text_classification dataset, opened for a run."""

    dataset: prepared.PreparedDataset
    vocabulary: list[str]
    labels: list[str]
    splits: dict[str, Rows]

    @property
    def stats(self) -> dict:
        return self.dataset.manifest["stats"]


def open_rows(d, seed: int) -> PreparedRows:
    """Opens `d.prepared_dir` for a run with data config `d` and runtime.seed `seed`.

    Raises:
      DataError: not a text_classification dataset, damaged, or prepared from other
        files or with another content-defining config (or split seed).
    """
    ds = prepared.open_for_run(d, TASK, describe(d), content_config(d, seed),
                               kind="the files",
                               paths=lambda: [p for p in (d.train_path, d.eval_path) if p])
    vocab = json.loads(ds.vocab_text)
    a = ds.splits
    splits = {s: Rows(a[f"{s}.tokens"], a[f"{s}.offsets"], a[f"{s}.labels"],
                      a.get(f"{s}.order")) for s in ("train", "eval")}
    return PreparedRows(ds, vocab["tokens"], vocab["labels"], splits)


def examples(rows: Rows, length: int) -> sampling.Examples:
    """The split's rows as examples by id: `(ids [length], label)`."""
    return sampling.Examples(len(rows), _gather_fn(rows, length))


def dataset(rows: Rows, length: int, batch: int = 256) -> tf.data.Dataset:
    """Unbatched `(ids, label)` examples 0..n-1 in order (the eval split's order)."""
    return tf.data.Dataset.range(len(rows)).batch(batch).map(_gather_fn(rows, length)).unbatch()


def _gather_fn(rows: Rows, length: int):
    """Example ids -> (ids, labels): in-graph from the arrays read into memory when they
    fit `prepared.IN_MEMORY_BYTES`, else a `pread` per row on the host."""
    arrays = [rows.tokens, rows.offsets, rows.labels, *([rows.order] if rows.order else [])]
    if sum(a.nbytes for a in arrays) <= prepared.IN_MEMORY_BYTES:
        return _in_graph(rows, length)

    def gather(k):
        ids, labels = tf.numpy_function(lambda k: rows.gather(k, length), [k],
                                        [tf.int32, tf.int32], stateful=False)
        return tf.ensure_shape(ids, [None, length]), tf.ensure_shape(labels, [None])

    return gather


def _in_graph(rows: Rows, length: int):
    """`Rows.gather` as TensorFlow ops on the split's arrays (one copy in memory)."""
    def whole(stream):
        return stream.read(0, len(stream)).astype(np.int64)

    ids = sampling.ragged_rows(rows.tokens, rows.offsets)
    labels = tf.constant(whole(rows.labels).astype(np.int32))
    order = tf.constant(whole(rows.order)) if rows.order is not None else None

    def gather(k):
        r = tf.gather(order, k) if order is not None else tf.cast(k, tf.int64)
        return ids(r, length)[0], tf.gather(labels, r)

    return gather
