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


# The real task and the real input pipeline of a training run (loop.TrainInput under
# the strategy `seqtrain train` builds), in a fresh process per replica count.
PIPELINE_IDS = """
import json, sys
import numpy as np
import tensorflow as tf
from trainer import cluster, distribute, experiment, loop, registry
from trainer.data import sampling

replicas, first_step, steps = (int(a) for a in sys.argv[1:4])
cfg = experiment.load("text_generation", overrides=[
    "data.seq_len=12", "train.batch_size=8", "runtime.seed=11",
    f"runtime.cpu_replicas={replicas}"])
strategy = distribute.build_strategy(cfg.runtime, cluster.from_environ())  # TF_CONFIG: workers
task = registry.get("text_generation")(cfg)
task.prepare()
examples = task.train_examples()
train_input = loop.TrainInput(examples, strategy, global_batch=8, seed=11,
                              step=tf.Variable(first_step, dtype=tf.int64))
iterator = train_input.iterator()
corpus = task.train_ids.astype(np.int32)
out = {"replicas": strategy.num_replicas_in_sync, "examples": examples.count, "batches": []}
for _ in range(steps):
    features, labels, ids = next(iterator)
    per_replica = []
    for f, y, i in zip(*(strategy.experimental_local_results(t) for t in (features, labels, ids))):
        i = i.numpy()
        # the examples are the windows the ids name: start = id (data.shift=1)
        windows = np.stack([corpus[k:k + 13] for k in i])
        assert (f.numpy() == windows[:, :-1]).all() and (y.numpy() == windows[:, 1:]).all()
        per_replica.append(i.tolist())
    out["batches"].append(per_replica)
print(json.dumps(out))
"""


def _pipeline_ids(replicas: int, first_step: int, steps: int, workers: int = 1) -> list[dict]:
    """One dict per worker process (`workers` > 1: MultiWorkerMirrored on loopback)."""
    import json
    import socket
    import subprocess
    import sys

    from helpers import REPO, cli_env

    envs = [cli_env()]
    if workers > 1:
        ports = []
        for _ in range(workers):
            with socket.socket() as s:
                s.bind(("localhost", 0))
                ports.append(s.getsockname()[1])
        hosts = [f"localhost:{p}" for p in ports]
        envs = [cli_env({"TF_CONFIG": json.dumps({"cluster": {"worker": hosts},
                                                  "task": {"type": "worker", "index": i}})})
                for i in range(workers)]
    procs = [subprocess.Popen([sys.executable, "-c", PIPELINE_IDS, str(replicas),
                               str(first_step), str(steps)], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for env in envs]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def test_global_batches_hold_the_same_ids_on_1_and_2_mirrored_replicas_and_after_a_resume():
    """The ids each replica's pipeline produced, per global batch, for one replica and
    for two Mirrored replicas (2 logical CPUs), from step 0 and from a resume at step
    3 under the other replica count: identical, and each replica got only its half."""
    (one,) = _pipeline_ids(1, 0, 6)
    (two,) = _pipeline_ids(2, 0, 6)
    (resumed,) = _pipeline_ids(2, 3, 3)
    assert (one["replicas"], two["replicas"]) == (1, 2)
    n = one["examples"]
    assert n > 30000  # every window start of the training split, not a buffer's worth
    glob = lambda batches: [sum(b, []) for b in batches]  # noqa: E731
    assert all(len(b) == 1 and len(b[0]) == 8 for b in one["batches"])
    assert all(len(b) == 2 and len(b[0]) == len(b[1]) == 4 for b in two["batches"])
    assert glob(one["batches"]) == glob(two["batches"])
    assert glob(resumed["batches"]) == glob(two["batches"])[3:]
    pure = [sampling.example_ids(11, s, 8, n).numpy().tolist() for s in range(6)]
    assert glob(one["batches"]) == pure


def test_data_inspect_prints_the_ids_and_text_of_a_global_batch(tmp_path):
    """`seqtrain data inspect` on a run dir (its config.yaml and runtime.json), from the
    run's working directory with a relative --model-dir."""
    import json

    from helpers import seqtrain
    from trainer import experiment

    run = tmp_path / "runs" / "chars"
    run.mkdir(parents=True)
    cfg = experiment.load("text_generation", None, ["data.seq_len=12", "train.batch_size=8",
                                                     "runtime.seed=5"])
    (run / "config.yaml").write_text(cfg.to_yaml())
    (run / "runtime.json").write_text(json.dumps({"replicas": 2}))
    out = seqtrain("data", "inspect", "--model-dir", "runs/chars", "--step", "7",
                   "--replica", "1", "--preview", "2", cwd=tmp_path).stdout.splitlines()
    from trainer import registry
    task = registry.get("text_generation")(cfg)
    task.prepare()
    n = task.train_examples().count
    want = sampling.example_ids(5, 7, 8, n, start=4, count=4).numpy()
    assert out[0].startswith("global batch 7 of runs/chars (text_generation")
    assert "replica 1 of 2, 4 of train.batch_size=8 examples" in out[0]
    assert out[1] == "ids: " + " ".join(map(str, want))
    first = task.vocab.decode(task.train_ids[want[0]:want[0] + 12].tolist())
    assert out[2] == f"  {want[0]}: {first!r}"
    assert out[4] == "  ... 2 more"
    bad = seqtrain("data", "inspect", "--model-dir", "runs/chars", "--step", "7",
                   "--replica", "2", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "--replica 2 is out of range" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_two_workers_each_read_only_their_half_of_the_same_global_batches():
    """Two MultiWorkerMirrored workers (one replica each, loopback): worker w's pipeline
    produced exactly replica w's slice, 4 of the 8 examples of each global batch, and
    together they are the global batches one replica reads."""
    workers = _pipeline_ids(1, 0, 4, workers=2)
    assert [w["replicas"] for w in workers] == [2, 2]
    for w in workers:
        assert all(len(b) == 1 and len(b[0]) == 4 for b in w["batches"])  # B / W each
    n = workers[0]["examples"]
    pure = [sampling.example_ids(11, s, 8, n).numpy().tolist() for s in range(4)]
    assert [a[0] + b[0] for a, b in zip(workers[0]["batches"], workers[1]["batches"])] == pure
