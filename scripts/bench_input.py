#!/usr/bin/env python
"""Input-only throughput per worker against the examples/s each task's training step consumes.

For each task's default config, in a fresh process per task (one worker, the
default strategy: the worker reads the whole global batch B; with W workers each
reads B / W and the step also consumes B / W per worker per step, so the ratio
carries over), side by side in that process and alternating which goes first:

* **input**: the real training input pipeline alone (`loop.TrainInput`, the
  stateless sampler of trainer/data/sampling.py and the task's `gather`), its
  iterator drained for `--input-steps` global batches: examples/s;
* **step**: the task's default training step through seqtrain's own compiled
  loop (`loop.StepFunctions.train_steps`, fed by the same kind of pipeline,
  XLA as `runtime.jit_compile=auto` decides), `--train-steps` steps per call
  after a first (compiling) call: examples/s.

The ratio input / step is the headroom of the input pipeline (issue 13's target:
>= 10x). text_generation reads from a prepared directory (`--prepared-dir`, or the
bundled corpus prepared into a temporary one); the tasks named in `--prepared` read
their default data prepared into a temporary directory (what `train` does with
data.prepare=auto); the other tasks read it from memory, all through the stateless
sampler (their `train_examples`).

Example (figures in docs/prepared.md):
  python scripts/bench_input.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ("text_generation", "text_classification", "translation", "forecasting",
         "multistep_forecasting")

_CHILD = r"""
import json, sys, time
import tensorflow as tf
from trainer import experiment, kernels, loop, registry, runner

task_name, overrides, repeats, input_steps, train_steps = json.loads(sys.argv[1])
cfg = experiment.load(task_name, None, overrides)
B = cfg.train.batch_size
strategy = tf.distribute.get_strategy()
task = registry.get(task_name)(cfg)
task.prepare()
examples = task.train_examples()
with strategy.scope():
    model = task.build_model()
    optimizer = runner.build_optimizer(cfg)
    optimizer.build(model.trainable_variables)
xla, _ = loop.resolve_jit_compile(cfg.runtime.jit_compile, kernels.cudnn_report(model, task.padding),
                                  xla_on_cpu=task.xla_on_cpu, on_tpu=False)
steps = loop.StepFunctions(task=task, model=model, optimizer=optimizer, strategy=strategy,
                           global_batch=B, clipnorm=cfg.train.clipnorm,
                           clipvalue=cfg.train.clipvalue, jit_compile=xla)
step_var = tf.Variable(0, dtype=tf.int64)

def pipeline(first):
    return loop.TrainInput(examples, strategy, global_batch=B, seed=cfg.runtime.seed,
                           step=tf.Variable(first, dtype=tf.int64))

train_input = pipeline(0)
steps.train_steps(train_input, tf.constant(train_steps, tf.int32))  # trace/compile
n_input = 0

def measure_input():
    global n_input
    it = pipeline(n_input * input_steps + 10**6).iterator()
    n_input += 1
    next(it)  # the first element starts the pipeline's threads
    t = time.perf_counter()
    for _ in range(input_steps):
        features, labels, ids = next(it)
    tf.nest.map_structure(lambda x: x.numpy(), features)
    return input_steps * B / (time.perf_counter() - t)

def measure_step():
    t = time.perf_counter()
    loss, done, _ = steps.train_steps(train_input, tf.constant(train_steps, tf.int32))
    float(loss)
    return int(done) * B / (time.perf_counter() - t)

out = {"task": task_name, "batch": B, "xla": xla, "examples": examples.count,
       "input": [], "step": []}
for r in range(repeats):
    order = (measure_input, measure_step) if r % 2 == 0 else (measure_step, measure_input)
    for f in order:
        out["input" if f is measure_input else "step"].append(f())
print("RESULT " + json.dumps(out))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", default=",".join(TASKS), help="Comma-separated tasks.")
    p.add_argument("--repeats", type=int, default=3, help="Alternating pairs per task.")
    p.add_argument("--input-steps", type=int, default=200,
                   help="Global batches drained per input measurement.")
    p.add_argument("--train-steps", type=int, default=10, help="Steps per step measurement.")
    p.add_argument("--prepared-dir", default="",
                   help="A text_generation prepared dir (with --corpus, its source); default: "
                        "the bundled corpus prepared into a temporary directory.")
    p.add_argument("--corpus", default="", help="data.path the prepared dir was made from.")
    p.add_argument("--prepared", default="",
                   help="Comma-separated tasks (besides text_generation) whose default data is "
                        "prepared into a temporary directory and read from there.")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_input_") as tmp:
        for task in args.tasks.split(","):
            overrides = []
            if task == "text_generation":
                overrides = _prepared(args, tmp)
            elif task in args.prepared.split(","):
                out = os.path.join(tmp, f"prepared_{task}")
                subprocess.run([sys.executable, "-m", "trainer.cli", "prepare", "--task", task,
                                "--out", out], env=_env(), check=True, capture_output=True)
                overrides = [f"data.prepared_dir={out}"]
            r = _child([task, overrides, args.repeats, args.input_steps, args.train_steps])
            r["prepared"] = bool(overrides)
            rows.append(r)
            print(json.dumps(r), flush=True)
    print("\n| task | global batch | XLA | input ex/s per worker | step ex/s | input / step |")
    print("|---|---:|---|---:|---:|---:|")
    for r in rows:
        i, s = statistics.median(r["input"]), statistics.median(r["step"])
        print(f"| {r['task']}{' (prepared)' if r['prepared'] else ''} | {r['batch']} | {'on' if r['xla'] else 'off'} | {i:,.0f} | "
              f"{s:,.0f} | {i / s:.0f}x |")


def _prepared(args, tmp: str) -> list[str]:
    if args.prepared_dir:
        data = [f"data.path={args.corpus}"] if args.corpus else []
        return [*data, f"data.prepared_dir={args.prepared_dir}"]
    out = os.path.join(tmp, "prepared")
    subprocess.run([sys.executable, "-m", "trainer.cli", "prepare", "--task", "text_generation",
                    "--out", out], env=_env(), check=True, capture_output=True)
    return [f"data.prepared_dir={out}"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def _child(spec: list) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(spec)], env=_env(),
                          capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{spec[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


if __name__ == "__main__":
    main()
