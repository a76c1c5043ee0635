#!/usr/bin/env python
"""`seqtrain launch --workers W` against a raw MultiWorkerMirrored custom loop, side by side.

Both sides train the same model on the same data with the same global batch and
optimizer, as W local worker processes (TF_CONFIG on loopback), and report the
steady-state examples/s of the chief: the loops after the first (tracing) one,
startup excluded.

* seqtrain: `seqtrain launch --workers W -- train --task forecasting` on a
  generated CSV series (`data.path`), with `model.cpu_kernel=keras` and
  `runtime.jit_compile=false` so that its model is the same stock Keras stack as
  the raw side's (seqtrain's defaults would swap in its fused kernels and XLA;
  this measures the framework: input pipeline, loop, all-reduce). Its
  examples/s come from the progress lines (steps/s of each compiled loop).
* raw: the script below, plain TF/Keras only (no seqtrain import): the CSV
  read with numpy, normalised with the training part's mean/std, windows of
  48 -> next value as arrays, `tf.data` from_tensor_slices -> shuffle -> repeat
  -> batch(B) -> `strategy.experimental_distribute_dataset`, the textbook
  MultiWorkerMirrored custom loop (`strategy.run` + `strategy.reduce`) with the
  same number of steps per `tf.function` call as seqtrain's `steps_per_loop`.
  Model: Input(48, 1) -> LSTM(32, sequences) -> LSTM(32) -> Dense(1), Adam(3e-3)
  built up front, loss = sum of per-example MSE / global batch (seqtrain's
  forecasting defaults).

For each W, the sides alternate (which goes first flips per repeat); the table
gives medians and the median of the per-pair ratios seqtrain / raw (target >=
0.9), in examples per second of wall time and per CPU-second of worker 0 (its
process's user + system time over the same loops, all threads: seqtrain's read
from /proc at each progress line, so the time between loops counts too; the raw
loop's from `time.process_time()` around each call). On a machine that other jobs
load, wall-clock ratios swing with their load; the CPU column measures the work. W > 1 on a 2-core machine shares the cores between the workers, so the
figures measure overhead, not scaling.

Example (figures in docs/benchmarks.md):
  python scripts/bench_scaling.py --workers 1,2 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WINDOW = 48

RAW_WORKER = r"""
import json, os, sys, time
import numpy as np
import tensorflow as tf
import keras

csv, batch, steps, per_loop, seed = sys.argv[1], *map(int, sys.argv[2:6])
strategy = tf.distribute.MultiWorkerMirroredStrategy()  # TF_CONFIG: the cluster
task = json.loads(os.environ["TF_CONFIG"])["task"]
series = np.loadtxt(csv, delimiter=",", skiprows=1, dtype=np.float32)
split = int(round(len(series) * 0.8))
mean, std = series[:split].mean(), series[:split].std()
train = (series[:split] - mean) / std
W = 48
starts = np.arange(len(train) - W)
x = np.stack([train[s:s + W] for s in starts])[..., None]
y = train[starts + W][:, None]
ds = (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed).repeat()
      .batch(batch, drop_remainder=True))
it = iter(strategy.experimental_distribute_dataset(ds))
keras.utils.set_random_seed(seed)
with strategy.scope():
    model = keras.Sequential([keras.Input((W, 1)), keras.layers.LSTM(32, return_sequences=True),
                              keras.layers.LSTM(32), keras.layers.Dense(1)])
    optimizer = keras.optimizers.Adam(3e-3)
    optimizer.build(model.trainable_variables)

def replica_step(features, labels):
    with tf.GradientTape() as tape:
        pred = model(features, training=True)
        loss = tf.reduce_sum(tf.reduce_mean(tf.square(pred - labels), axis=-1)) / batch
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply(grads, model.trainable_variables)
    return loss

@tf.function
def train_loop(n):
    total = tf.constant(0.0)
    for _ in tf.range(n):
        features, labels = next(it)
        loss = strategy.run(replica_step, args=(features, labels))
        total += strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
    return total / tf.cast(n, tf.float32)

times, cpu = [], []
for i in range(steps // per_loop):
    t, c = time.perf_counter(), time.process_time()
    loss = float(train_loop(tf.constant(per_loop)))
    times.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
if task["index"] == 0:
    print("RAW " + json.dumps({"loop_secs": times, "loop_cpu_secs": cpu, "loss": loss,
                               "params": model.count_params()}), flush=True)
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", default="1,2", help="Comma-separated worker counts.")
    p.add_argument("--repeats", type=int, default=3, help="Alternating pairs per W.")
    p.add_argument("--steps", type=int, default=600, help="Training steps per run.")
    p.add_argument("--steps-per-loop", type=int, default=100,
                   help="Steps per compiled call (both sides).")
    p.add_argument("--batch", type=int, default=32, help="Global batch (forecasting's default).")
    p.add_argument("--rows", type=int, default=20000, help="Rows of the generated series.")
    p.add_argument("--seqtrain-set", action="append", default=[], metavar="KEY=VALUE",
                   help="Extra --set for the seqtrain side (repeatable), e.g. "
                        "runtime.deterministic=false.")
    args = p.parse_args()
    if args.steps % args.steps_per_loop or args.steps < 3 * args.steps_per_loop:
        raise SystemExit("--steps must be a multiple of --steps-per-loop, at least 3 loops")
    work = tempfile.mkdtemp(prefix="bench_scaling_")
    try:
        csv = os.path.join(work, "series.csv")
        write_series(csv, args.rows)
        rows = []
        for w in map(int, args.workers.split(",")):
            got = {"seqtrain": [], "raw": []}
            for r in range(args.repeats):
                sides = ("seqtrain", "raw") if r % 2 == 0 else ("raw", "seqtrain")
                for side in sides:
                    load = os.getloadavg()[0]
                    exs, ex_cpu = (run_seqtrain if side == "seqtrain" else run_raw)(
                        args, csv, w, work)
                    got[side].append((exs, ex_cpu))
                    print(f"W={w} repeat {r} {side}: {exs:,.0f} examples/s, {ex_cpu:,.0f} per "
                          f"CPU-second of worker 0 (load {load:.1f})", flush=True)
            wall = [a[0] / b[0] for a, b in zip(got["seqtrain"], got["raw"])]
            cpu = [a[1] / b[1] for a, b in zip(got["seqtrain"], got["raw"])]
            rows.append((w, *(statistics.median(x[k] for x in got[side])
                              for side in ("seqtrain", "raw") for k in (0, 1)),
                         wall, cpu))
        print("\n| workers | seqtrain ex/s | raw ex/s | seqtrain / raw: pairs | median "
              "| ex per CPU-s: seqtrain | raw | seqtrain / raw: pairs | median |")
        print("|---:|---:|---:|---|---:|---:|---:|---|---:|")
        for w, s, s_cpu, r, r_cpu, wall, cpu in rows:
            print(f"| {w} | {s:,.0f} | {r:,.0f} | {', '.join(f'{x:.2f}' for x in wall)} | "
                  f"{statistics.median(wall):.2f} | {s_cpu:,.0f} | {r_cpu:,.0f} | "
                  f"{', '.join(f'{x:.2f}' for x in cpu)} | {statistics.median(cpu):.2f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_series(path: str, rows: int) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(rows, dtype=np.float64)
    y = (np.sin(t / 17) + 0.5 * np.sin(t / 5.3 + 1) + 0.3 * np.sin(t / 41 + 2)
         + 0.1 * rng.standard_normal(rows))
    with open(path, "w") as f:
        f.write("y\n")
        f.writelines(f"{v:.6f}\n" for v in y)


def env() -> dict:
    e = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
         "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
    e.pop("TF_CONFIG", None)
    return e


def run_seqtrain(args, csv: str, workers: int, work: str) -> float:
    model_dir = os.path.join(work, f"run-{time.monotonic_ns()}")
    L = args.steps_per_loop
    cmd = [sys.executable, "-m", "trainer.cli", "launch", "--workers", str(workers), "--",
           "train", "--task", "forecasting", "--model-dir", model_dir,
           "--set", f"data.path={csv}", "--set", f"data.window={WINDOW}",
           "--set", "model.cpu_kernel=keras", "--set", "runtime.jit_compile=false",
           "--set", f"train.batch_size={args.batch}", "--set", f"train.steps={args.steps}",
           "--set", f"train.steps_per_loop={L}", "--set", f"train.log_every={L}",
           "--set", f"train.eval_every={args.steps}",
           "--set", f"train.checkpoint_every={args.steps}", "--set", "train.eval_batches=1"]
    for kv in args.seqtrain_set:
        cmd += ["--set", kv]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=work)
    out, rates, cpu_at = [], [], []  # cpu_at: worker-0's CPU seconds at each progress line
    chief = None
    for line in proc.stdout:
        out.append(line)
        m = re.match(r"\[worker-0\] step (\d+)/\d+ .*?([\d.]+) steps/s", line)
        if m:
            chief = chief or _worker_pid(proc.pid, 0)
            rates.append((int(m.group(1)), float(m.group(2))))
            cpu_at.append(_cpu_secs(chief))
    proc.wait()
    text = "".join(out)
    if proc.returncode:
        raise SystemExit(f"seqtrain launch failed ({proc.returncode}):\n{text[-3000:]}")
    if len(rates) != args.steps // L:
        raise SystemExit(f"expected {args.steps // L} progress lines:\n{text[-3000:]}")
    later = rates[1:]  # the first loop traces the step
    secs = sum(L / sps for _, sps in later)
    shutil.rmtree(model_dir, ignore_errors=True)
    n = len(later) * L * args.batch
    return n / secs, n / (cpu_at[-1] - cpu_at[0])


def _worker_pid(launcher: int, index: int) -> int:
    """The pid of `seqtrain launch`'s worker `index` (its TF_CONFIG task index)."""
    for child in open(f"/proc/{launcher}/task/{launcher}/children").read().split():
        environ = open(f"/proc/{child}/environ", "rb").read().split(b"\0")
        config = [e[len(b"TF_CONFIG="):] for e in environ if e.startswith(b"TF_CONFIG=")]
        if config and json.loads(config[0])["task"]["index"] == index:
            return int(child)
    raise SystemExit(f"no worker {index} under the launcher {launcher}")


def _cpu_secs(pid: int) -> float:
    """User + system CPU seconds of process `pid` (all its threads), from /proc."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_raw(args, csv: str, workers: int, work: str) -> float:
    ports = []
    for _ in range(workers):
        with socket.socket() as s:
            s.bind(("localhost", 0))
            ports.append(s.getsockname()[1])
    hosts = [f"localhost:{p}" for p in ports]
    script = os.path.join(work, "raw_worker.py")  # a file: AutoGraph reads the loop's source
    with open(script, "w") as f:
        f.write(RAW_WORKER)
    procs = []
    for i in range(workers):
        e = {**env(), "TF_CONFIG": json.dumps({"cluster": {"worker": hosts},
                                               "task": {"type": "worker", "index": i}})}
        procs.append(subprocess.Popen(
            [sys.executable, script, csv, str(args.batch), str(args.steps),
             str(args.steps_per_loop), "0"], env=e, cwd=work, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    outs = [p.communicate() for p in procs]
    for p, (out, err) in zip(procs, outs):
        if p.returncode:
            raise SystemExit(f"raw worker failed ({p.returncode}):\n{err[-3000:]}")
    line = [x for x in outs[0][0].splitlines() if x.startswith("RAW ")][-1]
    r = json.loads(line[4:])
    n = (len(r["loop_secs"]) - 1) * args.steps_per_loop * args.batch
    return n / sum(r["loop_secs"][1:]), n / sum(r["loop_cpu_secs"][1:])


if __name__ == "__main__":
    main()
