"""Stateless sampling (trainer/data/sampling.py): the ids of global batch s are a
pure function of (seed, s), a fresh permutation of all N examples per epoch."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from trainer.data import sampling

N, B = 37, 8  # batches straddle epochs: 37 is not a multiple of 8


def _stream(seed: int, steps: int, n: int = N, b: int = B) -> np.ndarray:
    return np.concatenate([sampling.example_ids(seed, s, b, n).numpy() for s in range(steps)])


def test_each_epoch_is_a_permutation_of_all_examples():
    ids = _stream(seed=3, steps=(3 * N) // B + 1)
    for e in range(3):
        assert sorted(ids[e * N:(e + 1) * N]) == list(range(N)), e


def test_ids_are_the_documented_index_shuffle_of_position_and_epoch():
    """id = index_shuffle(p % N, seed=[seed, p // N], max_index=N - 1), p = s * B + i."""
    ids = _stream(seed=3, steps=12)
    for p in (0, 5, N - 1, N, 2 * N + 3, len(ids) - 1):
        want = tf.random.experimental.index_shuffle(p % N, [3, p // N], N - 1)
        assert ids[p] == int(want), p


def test_reproducible_and_seed_dependent():
    a, b = _stream(seed=3, steps=10), _stream(seed=3, steps=10)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, _stream(seed=4, steps=10))


def test_epochs_are_different_permutations():
    ids = _stream(seed=3, steps=(3 * N) // B + 1)
    epochs = [tuple(ids[e * N:(e + 1) * N]) for e in range(3)]
    assert len(set(epochs)) == 3
    assert epochs[0] != tuple(range(N))  # actually shuffled


def test_replica_slices_make_up_the_global_batch():
    for replicas in (1, 2, 4):
        per = B // replicas
        for step in (0, 4, 9):  # 4 and 9 straddle an epoch boundary
            parts = [sampling.example_ids(7, step, B, N, start=r * per, count=per).numpy()
                     for r in range(replicas)]
            np.testing.assert_array_equal(np.concatenate(parts),
                                          sampling.example_ids(7, step, B, N).numpy())


def test_memory_is_constant_in_the_number_of_examples():
    """N = 2**40 examples: an id array of that size would be 8 TB; ids still come at once."""
    n = 2**40
    ids = sampling.example_ids(1, 10**9, 16, n).numpy()
    assert ids.dtype == np.int64 and len(set(ids)) == 16
    assert ((ids >= 0) & (ids < n)).all()


def test_replica_dataset_yields_only_its_slice_from_the_first_step():
    data = np.arange(N, dtype=np.int32) * 10
    examples = sampling.tensor_examples((data, data + 1))
    ds = sampling.replica_dataset(examples, seed=5, global_batch=B, first_step=3,
                                  replica_ids=[1], num_replicas=2)
    for step, (features, labels, ids) in zip(range(3, 6), ds.as_numpy_iterator()):
        want = sampling.example_ids(5, step, B, N, start=4, count=4).numpy()
        np.testing.assert_array_equal(ids, want)
        np.testing.assert_array_equal(features, data[want])
        np.testing.assert_array_equal(labels, data[want] + 1)


def test_no_examples_is_refused():
    try:
        sampling.Examples(0, lambda ids: ids)
    except ValueError as e:
        assert "count must be >= 1, got 0" in str(e)
    else:
        raise AssertionError("Examples(0) was accepted")
    assert tf.executing_eagerly()
