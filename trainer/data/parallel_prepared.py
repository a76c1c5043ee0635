"""Training from prepared parallel text (trainer/data/prepare_parallel.py), read in place.

`open_pairs` opens `data.prepared_dir` (trainer/data/prepared.py verifies every array)
and refuses one prepared for another task, from other files or with another
content-defining config than the run's. Example k of a split is its k-th kept pair:
the source ids `source[source_offsets[k]:source_offsets[k + 1]]`, the target ids
likewise, each read with `os.pread` (trainer/data/prepared.py, `FileShard`), so a run
holds the pairs it reads, not the corpus. They are padded as `parallel.encode_pairs`
pads them (START + target in, target + END out), in one `tf.numpy_function` per
replica batch. A split whose arrays fit `prepared.IN_MEMORY_BYTES` is read once and
gathered by TensorFlow ops instead (`_in_graph`, the same examples).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import tensorflow as tf

from trainer.data import parallel, prepared, sampling
from trainer.data.prepare_parallel import TASK, content_config, describe


@dataclasses.dataclass
class Pairs:
    """One split's pairs: variable-length source and target ids."""

    source: prepared.TokenStream
    source_offsets: prepared.TokenStream
    target: prepared.TokenStream
    target_offsets: prepared.TokenStream

    def __len__(self) -> int:
        return len(self.source_offsets) - 1

    def gather(self, ids: np.ndarray, source_length: int, target_length: int):
        """int32 source [n, S], target_in [n, T+1], labels [n, T+1], right-padded."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        source = np.zeros((len(ids), source_length), np.int32)
        target_in = np.zeros((len(ids), target_length + 1), np.int32)
        labels = np.zeros((len(ids), target_length + 1), np.int32)
        for i, k in enumerate(ids.tolist()):
            s = _row(self.source, self.source_offsets, k)
            t = _row(self.target, self.target_offsets, k)
            source[i, :len(s)] = s
            target_in[i, 0] = parallel.START
            target_in[i, 1:len(t) + 1] = t
            labels[i, :len(t)] = t
            labels[i, len(t)] = parallel.END
        return source, target_in, labels


def _row(tokens: prepared.TokenStream, offsets: prepared.TokenStream, k: int) -> np.ndarray:
    start, stop = offsets.read(k, k + 2).tolist()
    return tokens.read(start, stop)


@dataclasses.dataclass
class PreparedPairs:
    """A verified prepared translation dataset, opened for a run."""

    dataset: prepared.PreparedDataset
    source_vocab: parallel.Vocab
    target_vocab: parallel.Vocab
    splits: dict[str, Pairs]

    @property
    def stats(self) -> dict:
        return self.dataset.manifest["stats"]

    def references(self, n: int) -> list[str]:
        """The first `n` eval references, as the in-memory path detokenizes them."""
        a = self.dataset.splits
        n = min(n, len(a["eval.reference_offsets"]) - 1)
        ends = a["eval.reference_offsets"].read(0, n + 1).tolist()
        data = a["eval.references"].read(0, ends[-1]).tobytes()
        return [data[ends[i]:ends[i + 1]].decode("utf-8") for i in range(n)]


def open_pairs(d, seed: int) -> PreparedPairs:
    """Opens `d.prepared_dir` for a run with data config `d` and runtime.seed `seed`.

    Raises:
      DataError: not a translation dataset, damaged, or prepared from other files or
        with another content-defining config (or seed).
    """
    ds = prepared.open_for_run(d, TASK, describe(d), content_config(d, seed),
                               kind="the corpus")
    vocab = json.loads(ds.vocab_text)
    a = ds.splits
    splits = {s: Pairs(a[f"{s}.source"], a[f"{s}.source_offsets"], a[f"{s}.target"],
                       a[f"{s}.target_offsets"]) for s in ("train", "eval")}
    return PreparedPairs(ds, parallel.Vocab(tuple(vocab["source"])),
                         parallel.Vocab(tuple(vocab["target"])), splits)


def examples(pairs: Pairs, source_length: int, target_length: int) -> sampling.Examples:
    """The split's pairs as examples by id: `({source, target_in}, labels)`."""
    return sampling.Examples(len(pairs), _gather_fn(pairs, source_length, target_length))


def dataset(pairs: Pairs, source_length: int, target_length: int,
            batch: int = 256) -> tf.data.Dataset:
    """Unbatched examples 0..n-1 in order (the eval split's order)."""
    return tf.data.Dataset.range(len(pairs)).batch(batch).map(
        _gather_fn(pairs, source_length, target_length)).unbatch()


def _gather_fn(pairs: Pairs, source_length: int, target_length: int):
    """Example ids -> examples: in-graph from the arrays read into memory when they fit
    `prepared.IN_MEMORY_BYTES`, else `Pairs.gather` (a `pread` per row) on the host."""
    arrays = (pairs.source, pairs.source_offsets, pairs.target, pairs.target_offsets)
    if sum(a.nbytes for a in arrays) <= prepared.IN_MEMORY_BYTES:
        return _in_graph(pairs, source_length, target_length)

    def gather(k):
        source, target_in, labels = tf.numpy_function(
            lambda k: pairs.gather(k, source_length, target_length), [k],
            [tf.int32, tf.int32, tf.int32], stateful=False)
        return ({"source": tf.ensure_shape(source, [None, source_length]),
                 "target_in": tf.ensure_shape(target_in, [None, target_length + 1])},
                tf.ensure_shape(labels, [None, target_length + 1]))

    return gather


def _in_graph(pairs: Pairs, source_length: int, target_length: int):
    """`Pairs.gather` as TensorFlow ops on the split's arrays (one copy in memory)."""
    source = sampling.ragged_rows(pairs.source, pairs.source_offsets)
    target = sampling.ragged_rows(pairs.target, pairs.target_offsets)

    def gather(k):
        k = tf.cast(k, tf.int64)
        src, _ = source(k, source_length)
        tgt, n = target(k, target_length + 1)  # the ids, then 0s
        at_end = tf.range(target_length + 1, dtype=tf.int64)[None, :] == n[:, None]
        labels = tf.where(at_end, tf.constant(parallel.END, tf.int32), tgt)
        start = tf.fill([tf.shape(k)[0], 1], tf.constant(parallel.START, tf.int32))
        return ({"source": src, "target_in": tf.concat([start, tgt[:, :target_length]], 1)},
                labels)

    return gather
