"""Precision, XLA and clipping, end to end.

* every registered task trains a few steps with a finite, falling loss under
  each `runtime.precision`;
* the dtypes are the intended ones: float32 outputs and loss everywhere, the
  LossScaleOptimizer (and a scaled loss) only under mixed_float16, recurrent
  layers computing in float16/bfloat16 on float32 variables;
* a mixed_float16 run cut with `--stop-at` and resumed is bitwise identical to
  an uninterrupted one, loss-scale state included;
* `runtime.jit_compile=true` with `train.steps_per_loop>1` compiles with XLA
  and reaches the same weights as the plain run under the default strategy,
  Mirrored on 2 logical CPUs and MultiWorkerMirrored with 2 local workers;
* `train.clipnorm` clips the global norm of the all-reduced gradient, and its
  threshold follows the loss scale;
* in-process: a float16 overflow skips the step and halves the loss scale
  (with clipping too), and an embedding row hit twice in a batch gets the Adam
  update of its summed gradient.

Cost: one process per precision trains all five tasks in-process through
`train_lib.train` (the same function the CLI calls); everything else runs the
CLI. The independent jobs run concurrently, at most three at a time. Runs use
`train.steps=1000` with `--stop-at 12`, so no eval or export is paid for.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import random
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from helpers import (REPO, assert_checkpoints_equal, checkpoint_values, cli_env, read_scalars,
                     seqtrain)

PRECISIONS = ["float32", "mixed_float16", "mixed_bfloat16"]
TASKS = ["text_classification", "forecasting", "multistep_forecasting", "text_generation",
         "translation"]
STOP = 12

# The loop: a few steps per tf.function call, a summary per call, no eval or
# export before train.steps (never reached: runs stop at STOP).
COMMON = ["train.steps=1000", "train.batch_size=16", "train.steps_per_loop=4",
          "train.log_every=4", "train.eval_every=1000", "train.checkpoint_every=1000",
          "train.learning_rate=0.03"]

# Tiny model and data per task (the same knobs each task's own tests turn).
# text_classification trains on a small, easy CSV written below: the bundled
# reviews hinge on negations and do not move a tiny model in 12 steps.
TINY = {
    "text_classification": ["data.source=file", "data.train_path={easy_csv}",
                            "data.sequence_length=8", "model.units=8", "model.embedding_dim=8",
                            "model.dense_units=8"],
    "forecasting": ["data.window=16", "data.synthetic_length=400", "model.units=8",
                    "model.layers=1"],
    "multistep_forecasting": ["data.window=16", "data.horizon=3", "data.synthetic_length=400",
                              "model.units=8", "model.layers=1"],
    "text_generation": ["data.seq_len=16", "data.sample_length=0", "model.layers=1",
                        "model.units=16", "model.embedding_dim=8"],
    "translation": ["data.toy_size=300", "model.units=8", "model.embedding_dim=8"],
}

# Clipping: SGD (its update is proportional to the gradient, unlike Adam's),
# and a threshold below both the global and the per-replica gradient norms.
CLIP = ["train.optimizer=sgd", "train.learning_rate=0.1", "train.clipnorm=0.05"]

# Runs N configs with `train_lib.train` in one process, then probes the dtypes
# of each task's model under the precision. argv[1] is a JSON spec.
HELPER = r'''
import json, sys
spec = json.loads(sys.argv[1])
import keras, numpy as np, tensorflow as tf
from trainer import experiment, kernels, loop, precision, registry, runner, train_lib

# The control of the clipping test (runs with "per_replica_clip"): clip each
# replica's partial gradient and let the Keras optimizer sum them, which is
# what `clipnorm` on a Keras optimizer does under a strategy, instead of
# all-reducing first.
PER_REPLICA = [False]
init = loop.StepFunctions.__init__
def patched_init(self, **kw):
    init(self, **kw)
    if PER_REPLICA[0]:
        self.reduce_first = False
loop.StepFunctions.__init__ = patched_init

for run in spec["runs"]:
    PER_REPLICA[0] = run.get("per_replica_clip", False)
    cfg = experiment.load(task=run["task"], overrides=run["sets"])
    train_lib.train(cfg, run["model_dir"], stop_at=run["stop_at"], verbose=False)

def rnn_dtypes(model):
    out = []
    for layer, where in kernels._recurrent_layers(model):
        x = tf.random.normal([2, 3, layer.cell.kernel.shape[0]])
        y = tf.nest.flatten(layer(x))[0]
        out.append({"layer": where, "compute": layer.compute_dtype,
                    "variables": sorted({str(v.dtype) for v in layer.weights}),
                    "output": y.dtype.name})
    return out

probes = {}
for task_name, sets in spec.get("probe", {}).items():
    cfg = experiment.load(task=task_name, overrides=sets)
    precision.set_policy(cfg.runtime.precision)
    task = registry.get(task_name)(cfg)
    task.prepare()
    keras.utils.set_random_seed(0)
    model = task.build_model()
    optimizer = runner.build_optimizer(cfg)
    optimizer.build(model.trainable_variables)
    fns = loop.StepFunctions(task=task, model=model, optimizer=optimizer,
                             strategy=tf.distribute.get_strategy(), global_batch=4,
                             clipnorm=None, clipvalue=None, jit_compile=False)
    features, labels = next(iter(task.dataset("train").batch(4)))
    outputs = model(features, training=False)
    loss, grads = fns._grad_fn(features, labels)  # the step's loss and (scaled) gradients
    with tf.GradientTape() as tape:
        plain = tf.reduce_sum(tf.cast(task.loss(model, features, labels), tf.float32)) / 4
    plain_grads = tape.gradient(plain, model.trainable_variables)
    dense = lambda gs: [tf.convert_to_tensor(g) for g in gs]
    probes[task_name] = {
        "policy": keras.mixed_precision.global_policy().name,
        "optimizer": type(optimizer).__name__,
        "loss_scaled": fns.loss_scaled,
        "outputs": sorted({t.dtype.name for t in tf.nest.flatten(outputs)}),
        "loss": loss.dtype.name,
        "grads": sorted({g.dtype.name for g in grads}),
        "grad_scale": float(tf.linalg.global_norm(dense(grads))
                            / tf.linalg.global_norm(dense(plain_grads))),
        "rnn": rnn_dtypes(model),
    }
print("RESULT " + json.dumps({"probes": probes}))
'''


# ----------------------------------------------------------------------------
# The runs, built once for the module.
# ----------------------------------------------------------------------------


def _sets(task, easy_csv, *extra):
    return COMMON + [s.format(easy_csv=easy_csv) for s in TINY[task]] + list(extra)


def _cli_args(sets):
    return [arg for s in sets for arg in ("--set", s)]


def _write_easy_csv(path):
    """240 short reviews whose label is given by one sentiment word."""
    rng = random.Random(0)
    pos, neg = ["great", "good", "lovely", "superb", "tasty"], ["bad", "awful", "rude", "poor",
                                                                "bland"]
    filler = ["the", "food", "was", "staff", "service", "really", "quite", "and", "very", "place"]
    rows = ["text,label"]
    for i in range(240):
        words = rng.sample(filler, 4) + [rng.choice(pos if i % 2 else neg)]
        rng.shuffle(words)
        rows.append(" ".join(words) + "," + ("positive" if i % 2 else "negative"))
    path.write_text("\n".join(rows) + "\n")


def _helper(spec, env=None):
    proc = subprocess.run([sys.executable, "-c", HELPER, json.dumps(spec)], env=cli_env(env),
                          capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def _cli(*args, env=None):
    return seqtrain(*args, env=env, timeout=900)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    easy = root / "easy.csv"
    _write_easy_csv(easy)
    d = {name: str(root / name) for name in (
        "resumed", "jit-default", "jit-mirrored", "jit-multi_worker",
        "clip-default", "noclip-default", "clip-init", "clip-default-f16", "clip-mirrored",
        "clip-per-replica")}
    tc = lambda *extra: _sets("text_classification", easy, *extra)  # noqa: E731
    # XLA's "Compiled cluster using XLA!" is an INFO log line.
    xla_env = {"TF_CPP_MIN_LOG_LEVEL": "0"}
    jit = ["runtime.jit_compile=true", "train.steps_per_loop=6", "train.log_every=6"]

    def matrix(precision):
        spec = {"runs": [], "probe": {}}
        for task in TASKS:
            sets = _sets(task, easy, f"runtime.precision={precision}")
            spec["runs"].append({"task": task, "sets": sets, "stop_at": STOP,
                                 "model_dir": str(root / f"{task}-{precision}")})
            spec["probe"][task] = sets
        clip_runs = {"float32": [("clip-default", CLIP), ("noclip-default", CLIP[:2]),
                                 ("clip-init", [*CLIP, "train.learning_rate=0.0"])],
                     "mixed_float16": [("clip-default-f16", CLIP)]}.get(precision, [])
        for name, extra in clip_runs:
            spec["runs"].append({"task": "text_classification", "stop_at": STOP,
                                 "sets": tc(f"runtime.precision={precision}", *extra),
                                 "model_dir": d[name]})
        return _helper(spec)

    def mirrored_clip():
        return _helper({"runs": [
            {"task": "text_classification", "stop_at": STOP, "model_dir": d[name],
             "sets": tc("runtime.cpu_replicas=2", *CLIP), "per_replica_clip": per_replica}
            for name, per_replica in (("clip-mirrored", False), ("clip-per-replica", True))]})

    def resume():
        args = ["train", "--task", "text_classification", "--model-dir", d["resumed"],
                *_cli_args(tc("runtime.precision=mixed_float16"))]
        first = _cli(*args, "--stop-at", "5")
        second = _cli(*args, "--stop-at", str(STOP))
        return first.stdout + second.stdout

    def train_jit(name, *extra):
        return _cli("train", "--task", "text_classification", "--model-dir", d[name],
                    *_cli_args(tc(*jit, *extra)), "--stop-at", str(STOP), env=xla_env).stderr

    def launch_jit():
        return _cli("launch", "--workers", "2", "--", "train", "--task", "text_classification",
                    "--model-dir", d["jit-multi_worker"], *_cli_args(tc(*jit)),
                    "--stop-at", str(STOP), env=xla_env).stdout

    jobs = {
        "jit-multi_worker-log": launch_jit,  # 2 processes: start it first
        "float32": lambda: matrix("float32"),
        "mixed_float16": lambda: matrix("mixed_float16"),
        "mixed_bfloat16": lambda: matrix("mixed_bfloat16"),
        "resume-log": resume,
        "jit-default-log": lambda: train_jit("jit-default"),
        "jit-mirrored-log": lambda: train_jit("jit-mirrored", "runtime.cpu_replicas=2",
                                              "runtime.precision=mixed_float16"),
        "clip-mirrored": mirrored_clip,
    }
    out = {"root": root, "dirs": d}
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(fn) for name, fn in jobs.items()}
        for name, fut in futures.items():
            try:
                out[name] = fut.result()
            except AssertionError as e:  # reported by the tests that need this job
                out[name] = e
    return out


def _get(runs, job):
    value = runs[job]
    if isinstance(value, Exception):
        pytest.fail(f"job {job!r} failed:\n{value}")
    return value


def _losses(run_dir):
    return read_scalars(f"{run_dir}/train", "loss")


def _checkpoint(run_dir, step=STOP):
    """Every saved value (model, optimizer incl. loss scale, step, RNG states)."""
    return checkpoint_values(f"{run_dir}/checkpoints/ckpt-{step}")


def _weights(run_dir):
    """The model's trainable variables (the checkpoint tracks them via the optimizer)."""
    return {k: v for k, v in _checkpoint(run_dir).items()
            if k.startswith("optimizer/_trainable_variables/")}


def _dist(a, b):
    """L2 distance between two sets of weights, over all variables."""
    assert a and a.keys() == b.keys(), (sorted(a), sorted(b))
    return float(np.sqrt(sum(np.square(a[k] - b[k]).sum() for k in a)))


# ----------------------------------------------------------------------------
# Each precision trains each task.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("task", TASKS)
def test_task_trains_with_a_finite_falling_loss(runs, task, precision):
    _get(runs, precision)
    run = runs["root"] / f"{task}-{precision}"
    losses = _losses(run)
    assert sorted(losses) == [4, 8, 12], losses
    assert all(math.isfinite(v) for v in losses.values()), losses
    assert losses[12] < 0.97 * losses[4], losses
    info = json.loads((run / "runtime.json").read_text())
    assert info["precision"] == precision
    assert (run / "checkpoints" / f"ckpt-{STOP}.index").exists()


# ----------------------------------------------------------------------------
# Dtypes: outputs, loss, optimizer, recurrent layers.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("task", TASKS)
def test_dtypes_under_each_precision(runs, task, precision):
    probe = _get(runs, precision)["probes"][task]
    assert probe["policy"] == precision
    # Outputs, the loss the loop reduces and the gradients are float32 always.
    assert probe["outputs"] == ["float32"] and probe["loss"] == "float32"
    assert probe["grads"] == ["float32"]
    compute = {"float32": "float32", "mixed_float16": "float16",
               "mixed_bfloat16": "bfloat16"}[precision]
    assert probe["rnn"], "no recurrent layer found"
    for layer in probe["rnn"]:
        assert layer["compute"] == compute and layer["output"] == compute, layer
        assert layer["variables"] == ["float32"], layer
    if precision == "mixed_float16":
        # The LossScaleOptimizer is used and the step differentiates loss * scale.
        assert probe["optimizer"] == "LossScaleOptimizer" and probe["loss_scaled"]
        assert probe["grad_scale"] == pytest.approx(2.0**15, rel=0.02)
    else:
        assert probe["optimizer"] == "Adam" and not probe["loss_scaled"]
        assert probe["grad_scale"] == pytest.approx(1.0, rel=1e-3)


def test_mixed_bfloat16_checkpoints_hold_float32_variables(runs):
    _get(runs, "mixed_bfloat16")
    run = runs["root"] / "translation-mixed_bfloat16"
    reader = tf.train.load_checkpoint(str(run / "checkpoints" / f"ckpt-{STOP}"))
    dtypes = {k: v for k, v in reader.get_variable_to_dtype_map().items()
              if k.startswith("optimizer/_trainable_variables/")}
    assert dtypes and set(dtypes.values()) == {tf.float32}


# ----------------------------------------------------------------------------
# mixed_float16: exact resume, loss-scale state included.
# ----------------------------------------------------------------------------


def test_mixed_float16_resume_is_bitwise_exact_including_the_loss_scale(runs):
    log = _get(runs, "resume-log")
    _get(runs, "mixed_float16")
    assert "resumed from" in log
    cut = _checkpoint(runs["dirs"]["resumed"], 5)
    # The loss-scale state is in the checkpoint, with the cut's step count.
    assert cut["optimizer/step_counter/.ATTRIBUTES/VARIABLE_VALUE"] == 5
    assert cut["optimizer/dynamic_scale/.ATTRIBUTES/VARIABLE_VALUE"] == 2.0**15
    full = _checkpoint(runs["root"] / "text_classification-mixed_float16")
    resumed = _checkpoint(runs["dirs"]["resumed"])
    assert_checkpoints_equal(full, resumed, must_have=("optimizer", "dynamic_scale"))
    # Without the restored counter the resumed run would count 12 - 5 = 7.
    assert resumed["optimizer/step_counter/.ATTRIBUTES/VARIABLE_VALUE"] == STOP
    assert resumed["optimizer/inner_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"] == STOP


# ----------------------------------------------------------------------------
# XLA and several steps per tf.function call, under every strategy.
# ----------------------------------------------------------------------------

# (job, precision of the run, replicas, workers, L2 weight tolerance vs the plain run).
# float32: summation order only (~1e-6 here). mixed_float16: float16 rounding
# that Adam's normalized steps carry into the weights; 12 plain fp16 steps land
# ~0.01 from fp32, a mishandled gradient lands ~1 away (bfloat16: ~2).
JIT = [
    ("jit-default", "float32", 1, 1, 1e-5),
    ("jit-mirrored", "mixed_float16", 2, 1, 0.05),
    ("jit-multi_worker", "float32", 2, 2, 1e-5),
]


@pytest.mark.parametrize("job,precision,replicas,workers,tol", JIT,
                         ids=[j[0] for j in JIT])
def test_jit_compile_with_steps_per_loop(runs, job, precision, replicas, workers, tol):
    log = _get(runs, f"{job}-log")
    _get(runs, precision)
    run = runs["dirs"][job]
    assert "Compiled cluster using XLA!" in log
    info = json.loads(open(f"{run}/runtime.json").read())
    assert info["jit_compile"] is True and info["precision"] == precision
    assert (info["replicas"], info["workers"]) == (replicas, workers)
    losses = _losses(run)
    assert sorted(losses) == [6, 12] and all(math.isfinite(v) for v in losses.values())
    assert losses[12] < losses[6]
    # The same 12 steps without XLA, 4 steps per call, default strategy.
    plain = runs["root"] / f"text_classification-{precision}"
    assert _dist(_weights(run), _weights(plain)) < tol
    if precision == "mixed_float16":
        ckpt = _checkpoint(run)
        assert ckpt["optimizer/step_counter/.ATTRIBUTES/VARIABLE_VALUE"] == STOP


# ----------------------------------------------------------------------------
# Clipping.
# ----------------------------------------------------------------------------


def test_clipnorm_under_mirrored_clips_the_global_norm_after_the_all_reduce(runs):
    """Relative comparisons, no copied numbers.

    Two replicas that all-reduce first and then clip differ from one device only
    in the order of float32 summation: relative rounding ~1e-7 per operation over
    12 steps, far below 1e-4 of the distance training moved the weights. Both
    controls (no clipping; clipping each replica's partial gradient) must land
    100 times farther away than that noise, so they are distinguishable from it.
    """
    for job in ("float32", "clip-mirrored"):
        _get(runs, job)
    d = runs["dirs"]
    single = _weights(d["clip-default"])
    moved = _dist(single, _weights(d["clip-init"]))  # learning rate 0: the initial weights
    noise = _dist(single, _weights(d["clip-mirrored"]))
    assert noise < 1e-4 * moved, (noise, moved)
    no_clip = _dist(single, _weights(d["noclip-default"]))
    per_replica = _dist(single, _weights(d["clip-per-replica"]))
    assert no_clip > 100 * noise and no_clip > 1e-3 * moved, (no_clip, noise, moved)
    assert per_replica > 100 * noise and per_replica > 1e-3 * moved, (per_replica, noise, moved)


def test_clipnorm_threshold_follows_the_loss_scale(runs):
    """Clipping the scaled gradients at clipnorm * scale equals clipping the true ones.

    A threshold not multiplied by the scale (2**15) would shrink every update
    about 30000-fold, leaving the fp16 run near its initial weights.
    """
    _get(runs, "float32")
    _get(runs, "mixed_float16")
    d = runs["dirs"]
    f32, f16 = _weights(d["clip-default"]), _weights(d["clip-default-f16"])
    moved = _dist(f32, _weights(d["clip-init"]))  # learning rate 0: the initial weights
    assert _dist(f32, f16) < moved / 10


# ----------------------------------------------------------------------------
# In-process: the loop's float16 overflow path and embedding gradients.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("clipnorm", [None, 1.0])
def test_float16_overflow_skips_the_step_and_halves_the_loss_scale(clipnorm):
    """The scaled gradient overflows float16: no weight changes, the scale halves.

    With clipping, the infinite global norm turns every gradient into NaN;
    the LossScaleOptimizer must still skip the step rather than apply it.
    The layers carry their own mixed_float16 policy, so no global state changes.
    """
    import keras

    from trainer import loop

    class Task:
        def loss(self, model, features, labels):
            return 1e4 * model(features)[:, 0]  # * 2**15 > float16 max (65504)

    keras.utils.set_random_seed(2)
    x = keras.Input((4,))
    hidden = keras.layers.Dense(4, dtype="mixed_float16")(x)
    model = keras.Model(x, keras.layers.Dense(1, dtype="float32")(hidden))
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1))
    optimizer.build(model.trainable_variables)
    fns = loop.StepFunctions(task=Task(), model=model, optimizer=optimizer,
                             strategy=tf.distribute.get_strategy(), global_batch=1,
                             clipnorm=clipnorm, clipvalue=None, jit_compile=False)
    before = [w.copy() for w in model.get_weights()]
    batch = (tf.ones([1, 4]), tf.zeros([1]))  # one replica's (features, labels)
    loss, _, _ = fns.train_steps(iter(tf.data.Dataset.from_tensors(batch)), tf.constant(1))
    assert np.isfinite(float(loss))
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert float(optimizer.dynamic_scale.numpy()) == 2.0**14
    assert int(optimizer.step_counter.numpy()) == 0
    assert int(optimizer.iterations.numpy()) == 0  # the inner optimizer did not step


def test_repeated_tokens_get_the_adam_update_of_their_summed_gradient():
    """Adam's first step moves every coordinate with a gradient by the learning rate.

    Keras 3's Adam, given an IndexedSlices with a repeated row, squares the
    rows one by one; the loop densifies embedding gradients first, on every
    strategy and precision, so the repeated token 1 gets the true Adam step.
    """
    import keras

    from trainer import loop

    class Task:
        def loss(self, model, features, labels):
            return tf.square(model(features)[:, 0] - labels)

    keras.utils.set_random_seed(1)
    ids = keras.Input((3,), dtype="int32")
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(5, 2)(ids))
    model = keras.Model(ids, keras.layers.Dense(1, use_bias=False)(x))
    model.layers[-1].set_weights([np.array([[1.0], [-2.0]], "float32")])
    optimizer = keras.optimizers.Adam(0.1)
    optimizer.build(model.trainable_variables)
    fns = loop.StepFunctions(task=Task(), model=model, optimizer=optimizer,
                             strategy=tf.distribute.get_strategy(), global_batch=1,
                             clipnorm=None, clipvalue=None, jit_compile=False)
    before = model.layers[1].get_weights()[0].copy()
    batch = (tf.constant([[1, 1, 2]]), tf.constant([5.0]))  # token 1 twice
    fns.train_steps(iter(tf.data.Dataset.from_tensors(batch)), tf.constant(1))
    step = model.layers[1].get_weights()[0] - before
    np.testing.assert_allclose(np.abs(step[[1, 2]]), 0.1, rtol=1e-4)
    np.testing.assert_array_equal(step[[0, 3, 4]], 0.0)
