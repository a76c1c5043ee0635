#!/usr/bin/env python
"""Training throughput of every seqtrain task vs the textbook `compile` + `fit` snippet.

For each task both sides get the same data, the same model (the task's own
`build_model()`, built after the same `keras.utils.set_random_seed`, so the
same initial weights), Adam with the same learning rate, the same batch size
and the same number of optimizer steps. The textbook side builds it with
`model.cpu_kernel=keras`, i.e. with the stock Keras LSTM/GRU/SimpleRNN layers;
seqtrain uses its default (`fused`, trainer/models/fused_*.py: same layers,
weights and math, a different training loop on CPU; `--set model.cell=gru`
compares the GRU loops).

  textbook : the plain snippet. The task's training split as numpy arrays
             (shuffled and tiled to steps x batch examples), `model.compile(
             Adam, <the usual Keras loss>)`, `model.fit(x, y, batch_size)`.
             Keras defaults: no op determinism; `jit_compile="auto"`, which
             Keras turns off on a CPU-only machine. TensorFlow's default CPU
             allocator (the worker imports `trainer`, which would pick the
             BFC pool: the script sets TF_CPU_ALLOCATOR_USE_BFC=false).
  seqtrain : `train_lib.train` with the task's defaults (custom loop,
             `train.steps_per_loop` steps per tf.function call,
             `runtime.jit_compile=auto`, op determinism on, TensorFlow's BFC
             pool for CPU tensors).

Reported per side (medians over --repeats; each run in its own process, the
two sides of a repeat back to back, in alternating order):
  ex/s       : steps x batch / seconds spent training, tracing and XLA
               compilation included (textbook: the `fit` call; seqtrain: its
               timed `train_steps` calls, from its TensorBoard scalars).
  ex/s steady: the same after the first tenth of the steps (seqtrain: after
               its first `train_steps` call).
  ex/cpu-s   : steady-state examples per second of the process's CPU time
               (all its threads; input pipeline included). On a machine shared
               with other jobs the wall-clock rates mostly measure how much of
               the CPU each side was given (a side running more threads gets a
               larger share); this column measures the work per example.
  wall       : the whole run after imports. seqtrain's also holds what the
               textbook does not do: checkpoint, eval, TensorBoard, export.
  metric     : the task's headline eval metric on the whole eval split,
               computed by the same code for both models (the task's
               `eval_metrics`, and greedy exact match for translation).

The ratio column is seqtrain / textbook ex/s, median of the per-repeat ratios.

Example:
  python scripts/bench_train.py --task all --steps 300 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ("text_classification", "forecasting", "multistep_forecasting", "text_generation",
         "translation")
# The headline metric per task, and whether higher is better.
HEADLINE = {"text_classification": ("accuracy", True), "forecasting": ("mse", False),
            "multistep_forecasting": ("mse", False), "text_generation": ("loss", False),
            "translation": ("exact_match", True)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--task", default="all", choices=("all",) + TASKS)
    p.add_argument("--steps", type=int, default=300,
                   help="Optimizer steps for both sides; 0 uses each task's default train.steps.")
    p.add_argument("--seed", type=int, default=42,
                   help="runtime.seed of repeat 0; repeat r uses seed + r (both sides).")
    p.add_argument("--repeats", type=int, default=3, help="Runs per side (medians reported).")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="Config override for both sides (the model and data are shared).")
    p.add_argument("--worker", choices=("textbook", "seqtrain"), help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        result = (run_textbook if args.worker == "textbook" else run_seqtrain)(args)
        print("RESULT " + json.dumps(result), flush=True)
        return

    print(f"machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
          f"load average {os.getloadavg()[0]:.2f}, Python {platform.python_version()}; "
          f"{args.steps or 'default'} steps, {args.repeats} repeat(s) per side", flush=True)
    tasks = TASKS if args.task == "all" else (args.task,)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        for task in tasks:
            runs: dict[str, list[dict]] = {"textbook": [], "seqtrain": []}
            for r in range(args.repeats):
                order = ("textbook", "seqtrain") if r % 2 == 0 else ("seqtrain", "textbook")
                for side in order:
                    runs[side].append(_worker(side, task, os.path.join(tmp, f"{task}-{r}"),
                                              args, args.seed + r))
            rows.append((task, runs))
            _report(task, runs)
    print("\nsummary (seqtrain / textbook, median of per-repeat ratios):")
    for task, runs in rows:
        ratios = _ratios(runs)
        cpu = _ratios(runs, "steady_examples_per_cpu_sec")
        print(f"  {task:<22} ex/s {statistics.median(ratios):5.2f}x  "
              f"(per repeat: {', '.join(f'{x:.2f}x' for x in ratios)}); steady ex per CPU-s "
              f"{statistics.median(cpu):5.2f}x")
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _worker(side: str, task: str, model_dir: str, args, seed: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, "--task", task,
           "--steps", str(args.steps), "--model-dir", model_dir]
    for o in [f"runtime.seed={seed}", *args.overrides]:
        cmd += ["--set", o]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if side == "textbook":  # TensorFlow's own allocator, as the plain snippet gets it
        env["TF_CPU_ALLOCATOR_USE_BFC"] = "false"
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{side} {task} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _ratios(runs: dict, key: str = "examples_per_sec") -> list[float]:
    return [s[key] / t[key]
            for t, s in zip(runs["textbook"], runs["seqtrain"])]


def _report(task: str, runs: dict) -> None:
    name, higher = HEADLINE[task]
    med = {side: {k: statistics.median(r[k] for r in rs) for k in rs[0]
                  if isinstance(rs[0][k], (int, float))} for side, rs in runs.items()}
    info = runs["seqtrain"][0]
    print(f"\n== {task}: {info['steps']} steps of batch {info['batch_size']}, "
          f"{info['train_examples']} train examples, "
          f"seqtrain XLA {'on' if info['jit_compile'] else 'off'}, "
          f"steps_per_loop {info['steps_per_loop']}; CPU allocator: textbook "
          f"{runs['textbook'][0]['cpu_allocator']}, seqtrain {info['cpu_allocator']} ==")
    print(f"  {'':<9}{'ex/s':>8}{'ex/s steady':>13}{'ex/cpu-s':>10}{'train s':>9}{'wall s':>8}"
          f"{name:>13}")
    for side, m in med.items():
        print(f"  {side:<9}{m['examples_per_sec']:8.0f}{m['steady_examples_per_sec']:13.0f}"
              f"{m['steady_examples_per_cpu_sec']:10.0f}"
              f"{m['train_seconds']:9.2f}{m['wall_seconds']:8.2f}{m[name]:13.4f}")
    ratios = _ratios(runs)
    t, s = med["textbook"][name], med["seqtrain"][name]
    better = (s >= t) if higher else (s <= t)
    print(f"  seqtrain / textbook ex/s: median {statistics.median(ratios):.2f}x "
          f"(per repeat {', '.join(f'{x:.2f}x' for x in ratios)}); steady "
          f"{med['seqtrain']['steady_examples_per_sec'] / med['textbook']['steady_examples_per_sec']:.2f}x;"
          f" per CPU-second {statistics.median(_ratios(runs, 'steady_examples_per_cpu_sec')):.2f}x;"
          f" {name} {s:.4f} vs {t:.4f} ({'same or better' if better else 'worse'})")


# ----------------------------------------------------------------------------
# The two sides. Each runs in its own process and prints one RESULT line.
# ----------------------------------------------------------------------------


def _load(args, *extra):
    sys.path.insert(0, REPO)
    from trainer import experiment

    defaults = experiment.load(task=args.task, overrides=args.overrides).train
    steps = args.steps = args.steps or defaults.steps
    spl = defaults.steps_per_loop
    return experiment.load(task=args.task, overrides=[
        f"train.steps={steps}", f"train.log_every={spl}", f"train.eval_every={steps}",
        f"train.checkpoint_every={steps}", "train.eval_batches=0", *args.overrides, *extra])


def run_textbook(args) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from trainer import registry

    t0 = time.perf_counter()
    config = _load(args, "model.cpu_kernel=keras")  # the stock Keras recurrent layers
    task = registry.get(args.task)(config)
    task.prepare()
    x, y = _as_numpy(task.dataset("train"))
    n = len(y)
    batch, steps = config.train.batch_size, args.steps
    order = np.random.default_rng(config.runtime.seed).permutation(
        np.resize(np.arange(n), steps * batch))
    x, y = tf.nest.map_structure(lambda a: a[order], x), y[order]

    keras.utils.set_random_seed(config.runtime.seed)
    model = task.build_model()
    loss = ("mse" if "forecasting" in args.task
            else keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.compile(optimizer=keras.optimizers.Adam(config.train.learning_rate), loss=loss)
    times: list[float] = []
    cpus: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter())
            cpus.append(time.process_time())

    t1 = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=[Timer()])
    train_seconds = time.perf_counter() - t1
    skip = max(1, steps // 10)
    steady = (len(times) - skip) * batch / (times[-1] - times[skip - 1])
    steady_cpu = (len(cpus) - skip) * batch / (cpus[-1] - cpus[skip - 1])
    metrics = _metrics(task, model, args.model_dir)
    return {"examples_per_sec": steps * batch / train_seconds, "steady_examples_per_sec": steady,
            "steady_examples_per_cpu_sec": steady_cpu,
            "train_seconds": train_seconds, "wall_seconds": time.perf_counter() - t0,
            **metrics, **_info(config, n, False)}


def run_seqtrain(args) -> dict:
    import tensorflow as tf

    from trainer import loop, registry, train_lib

    # CPU seconds of each compiled loop call (the wall seconds come from the run's
    # own steps_per_sec scalars below): (steps run, process CPU seconds).
    cpu_calls: list[tuple[int, float]] = []
    train_steps = loop.StepFunctions.train_steps

    def timed(self, data, num_steps):
        start = time.process_time()
        out = train_steps(self, data, num_steps)
        done = int(out[1])  # waits for the loop to finish
        cpu_calls.append((done, time.process_time() - start))
        return out

    loop.StepFunctions.train_steps = timed
    t0 = time.perf_counter()
    config = _load(args)
    train_lib.train(config, args.model_dir, verbose=False)
    wall = time.perf_counter() - t0
    intervals = _loop_intervals(os.path.join(args.model_dir, "train"))
    train_seconds = sum(secs for _, secs in intervals)
    later = intervals[1:] or intervals  # a single call: no steady interval to separate
    steady = (sum(n for n, _ in later) * config.train.batch_size
              / sum(secs for _, secs in later))
    later_cpu = cpu_calls[1:] or cpu_calls
    steady_cpu = (sum(n for n, _ in later_cpu) * config.train.batch_size
                  / sum(secs for _, secs in later_cpu))
    with open(os.path.join(args.model_dir, "runtime.json")) as f:
        jit = json.load(f)["jit_compile"]

    # Evaluate the trained weights with the same code as the textbook side.
    task = registry.get(args.task)(config)
    task.prepare()
    model = task.build_model()
    tf.train.Checkpoint(model=model).restore(
        tf.train.latest_checkpoint(os.path.join(args.model_dir, "checkpoints"))).expect_partial()
    metrics = _metrics(task, model, args.model_dir)
    n = sum(1 for _ in task.dataset("train"))
    return {"examples_per_sec": args.steps * config.train.batch_size / train_seconds,
            "steady_examples_per_sec": steady, "steady_examples_per_cpu_sec": steady_cpu,
            "train_seconds": train_seconds, "wall_seconds": wall, **metrics,
            **_info(config, n, jit)}


def _info(config, train_examples: int, jit: bool) -> dict:
    from trainer import runner

    return {"steps": config.train.steps, "batch_size": config.train.batch_size,
            "train_examples": train_examples,
            "steps_per_loop": config.train.steps_per_loop, "jit_compile": jit,
            "cpu_allocator": runner.cpu_allocator()}


def _as_numpy(ds):
    """A whole unbatched (features, labels) dataset as numpy arrays."""
    import tensorflow as tf

    import numpy as np

    chunks = [tf.nest.map_structure(lambda t: t.numpy(), b) for b in ds.batch(4096)]
    return tf.nest.map_structure(lambda *parts: np.concatenate(parts), *chunks)


def _metrics(task, model, model_dir: str) -> dict:
    """The loop's own eval on the whole eval split (plus exact match and BLEU for translation)."""
    import tensorflow as tf

    from trainer import evaluator, loop

    batch = task.config.train.batch_size
    fns = loop.StepFunctions(task=task, model=model, optimizer=None,
                             strategy=tf.distribute.get_strategy(), global_batch=batch,
                             clipnorm=None, clipvalue=None, jit_compile=False)
    eval_ds = loop.make_eval_dataset(task.dataset("eval"), per_replica_batch=batch, replicas=1)
    out = evaluator.evaluate_model(fns, task, model, eval_ds, 0, model_dir, None, is_chief=False)
    if task.name == "translation":  # greedy decoding: exact match and BLEU
        out.update(task.on_eval_end(model, 0, os.path.join(model_dir, "bench-eval")))
    return out


def _loop_intervals(train_log_dir: str) -> list[tuple[int, float]]:
    """(steps, seconds) of each logged interval of the loop's train_steps calls."""
    from trainer import summaries

    rates = summaries.read_scalars(train_log_dir, "steps_per_sec")
    out, prev = [], 0
    for step in sorted(rates):
        out.append((step - prev, (step - prev) / rates[step]))
        prev = step
    return out


if __name__ == "__main__":
    main()
