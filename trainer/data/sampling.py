"""Stateless sampling: the examples of global batch `s` are a pure function of (seed, s).

Global batch `s` holds the example positions `p = s * B + i` (i < B). Position
`p` lies in epoch `e = p // N` and reads example

    id = index_shuffle(p % N, seed=[seed, e], max_index=N - 1)

`tf.random.experimental.index_shuffle` is a stateless bijection of
[0, N - 1] computed per index, so each epoch is a fresh permutation of all N
examples, no array of size N is ever built, and a batch may straddle two
epochs. There is no shuffle buffer and no iterator state: the data position
is the step. A replica computes only its own slice of positions, so the ids of
each global batch do not depend on how many replicas or workers share it.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf
from tensorflow.python.ops import gen_random_index_shuffle_ops

_SEED_PAD = 498247692  # what tf.random.experimental.index_shuffle prepends to a [2] seed


@dataclasses.dataclass(frozen=True)
class Examples:
    """A task's training examples, addressable by id.

    Attributes:
      count: N, the number of examples (ids are 0..N-1).
      gather: maps an int64 id vector [n] to a `(features, labels)` batch of n
        examples. It runs inside tf.data, so it must be TF ops only.
      preview: optional host-side text of one example's features (for
        `seqtrain data inspect`).
    """

    count: int
    gather: Callable[[tf.Tensor], tuple]
    preview: Callable[[tuple], str] | None = None

    def __post_init__(self):
        if self.count < 1:
            raise ValueError(f"Examples.count must be >= 1, got {self.count}")


def tensor_examples(arrays, preview=None) -> Examples:
    """Examples held as arrays with a leading example axis: `(features, labels)`."""
    tensors = tf.nest.map_structure(tf.convert_to_tensor, arrays)
    count = int(tf.nest.flatten(tensors)[0].shape[0])
    return Examples(count, lambda ids: tf.nest.map_structure(
        lambda t: tf.gather(t, ids), tensors), preview)


def ragged_rows(tokens, offsets) -> Callable[[tf.Tensor, int], tuple[tf.Tensor, tf.Tensor]]:
    """Rows of a prepared ragged split (`prepared.TokenStream`s of ids and of int64 row
    offsets), read into memory once, as TensorFlow ops: `rows(k, length)` gives the ids of
    rows `k` (int64 [B]) cut or right-padded with 0 to `length` (int32 [B, length]), and
    their true lengths (int64 [B])."""
    # One 0 past the tokens: where a row is shorter than the length asked (the padding).
    ids = tf.constant(np.append(tokens.read(0, len(tokens)).astype(np.int32), np.int32(0)))
    starts = tf.constant(offsets.read(0, len(offsets)).astype(np.int64))
    pad = len(tokens)

    def rows(k, length):
        start, stop = tf.gather(starts, k), tf.gather(starts, k + 1)
        index = start[:, None] + tf.range(length, dtype=tf.int64)
        return tf.gather(ids, tf.where(index < stop[:, None], index, pad)), stop - start

    return rows


def example_ids(seed: int, step, global_batch: int, num_examples: int, *,
                start=0, count: int | None = None) -> tf.Tensor:
    """Ids (int64 [count]) of positions `start .. start+count-1` of global batch `step`.

    `start`/`count` select a slice of the batch (a replica's share); the
    default is the whole batch. Pure: the same arguments give the same ids.
    """
    count = global_batch if count is None else count
    step = tf.cast(step, tf.int64)
    positions = step * global_batch + tf.cast(start, tf.int64) + tf.range(count, dtype=tf.int64)
    n = tf.constant(num_examples, tf.int64)
    epochs = positions // n
    # The public index_shuffle documents a per-element seed [n, 2] but in TF 2.21
    # pads it on the wrong axis (to [n + 1, 2]); the raw op takes [n, 3]. The
    # leading constant is the one that function prepends to a [2] seed, so each
    # id equals index_shuffle(p % N, seed=[seed, e], max_index=N - 1).
    seeds = tf.stack([tf.fill([count], tf.constant(_SEED_PAD, tf.int64)),
                      tf.fill([count], tf.constant(seed, tf.int64)), epochs], axis=1)
    return gen_random_index_shuffle_ops.random_index_shuffle(
        positions % n, seed=seeds, max_index=n - 1, rounds=4)


def replica_dataset(examples: Examples, *, seed: int, global_batch: int, first_step: int,
                    replica_ids: list[int], num_replicas: int,
                    observe: Callable | None = None) -> tf.data.Dataset:
    """The batches of `replica_ids` for global batches first_step, first_step + 1, ...

    Elements come step by step and, within a step, in the order of
    `replica_ids` (one per-replica batch each): `(features, labels, ids)`,
    `ids` being the int64 example ids of that replica's slice. Only these
    replicas' examples are gathered: B / R per replica per step.

    `observe(step, replica, ids, rows)`, if given, is called on the host for
    each gathered batch (trainer/data/input_log.py), `rows` being the leading
    size of the gathered features.
    """
    if global_batch % num_replicas:
        raise ValueError(f"global batch {global_batch} does not divide across "
                         f"{num_replicas} replicas")
    per_replica = global_batch // num_replicas
    local = tf.constant(replica_ids, tf.int64)
    k = len(replica_ids)

    def element(i):
        step = first_step + i // k
        replica = local[i % k]
        ids = example_ids(seed, step, global_batch, examples.count,
                          start=replica * per_replica, count=per_replica)
        features, labels = examples.gather(ids)
        if observe is not None:
            rows = tf.shape(tf.nest.flatten(features)[0], out_type=tf.int64)[0]
            seen = tf.numpy_function(observe, [step, replica, ids, rows], tf.int64,
                                     stateful=True)
            with tf.control_dependencies([seen]):
                ids = tf.identity(ids)
        return features, labels, ids

    ds = tf.data.Dataset.range(tf.int64.max).map(
        element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.deterministic = True
    # Each pipeline already reads only its own replicas' slices.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
