"""Training throughput of seqtrain's `forecasting` task vs the textbook Keras snippet.

Both sides get the same series (a CSV written here from the synthetic sum of
sines), the same train/validation split by time, the same normalization
(train mean/std), the same model (LSTM(50, return_sequences) -> LSTM(20) ->
Dense(1)), Adam with the same learning rate, batch 32 and the same number of
optimizer steps. The textbook side builds numpy window arrays, `compile`s and
`fit`s; seqtrain runs `train_lib.train` (custom loop, tf.data windows,
`train.steps_per_loop` steps per tf.function call).

Reported per side (median over --repeats, each run in its own process; the
two sides of a repeat run back to back with the same seed for weights and
shuffling, and repeat r uses seed --seed + r; the data is the same throughout):
  examples/s : batch * steps / seconds spent in training steps (fit() for the
               textbook; the loop's timed train_steps calls for seqtrain, read
               from its TensorBoard `steps_per_sec` scalars). Tracing counts.
  wall s     : the whole run after imports (seqtrain: also checkpoints, eval,
               plot and SavedModel export; textbook: fit + predict).
  val MSE    : on the validation windows, original units of the series.

Example:
  python scripts/bench_forecasting.py --epochs 20 --repeats 3
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


def main() -> None:
    args = parse_args()
    if args.worker:
        result = {"textbook": run_textbook, "seqtrain": run_seqtrain}[args.worker](args)
        print("RESULT " + json.dumps(result), flush=True)
        return

    with tempfile.TemporaryDirectory(prefix="bench_forecasting_") as tmp:
        csv_path = os.path.join(tmp, "series.csv")
        length, split = write_series(csv_path, args)
        train_windows = split - args.window
        steps = args.epochs * (train_windows // args.batch_size)
        print(f"series: {length} rows, {train_windows} training windows of {args.window}, "
              f"{length - split} validation windows; {args.epochs} epochs = {steps} steps of "
              f"batch {args.batch_size}")
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
              f"Python {platform.python_version()}")
        results: dict[str, list[dict]] = {"textbook": [], "seqtrain": []}
        for r in range(args.repeats):
            for side in ("textbook", "seqtrain"):
                res = run_worker(side, csv_path, steps, tmp, r, args, seed=args.seed + r)
                results[side].append(res)
                print(f"  run {r + 1} {side:<9} {res['examples_per_sec']:8.0f} examples/s  "
                      f"train {res['train_seconds']:6.2f} s  wall {res['wall_seconds']:6.2f} s  "
                      f"val MSE {res['val_mse']:.5f}", flush=True)
        report(results, args)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=20, help="Textbook epochs (sets the step count).")
    p.add_argument("--train-windows", type=int, default=704,
                   help="Training windows (a multiple of --batch-size keeps steps equal).")
    p.add_argument("--window", type=int, default=49, help="Input window length.")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate (both).")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--steps-per-loop", type=int, default=100,
                   help="seqtrain train.steps_per_loop.")
    p.add_argument("--repeats", type=int, default=1, help="Runs per side (median reported).")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="Extra seqtrain config override; repeatable.")
    # Internal: run one side in this process.
    p.add_argument("--worker", choices=["textbook", "seqtrain"], help=argparse.SUPPRESS)
    p.add_argument("--csv", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    return p.parse_args()


def write_series(path: str, args) -> tuple[int, int]:
    """The synthetic series as `t,value`; returns (rows, first validation row)."""
    sys.path.insert(0, REPO)
    from trainer.data.timeseries import synthetic_series

    split = args.train_windows + args.window
    length = split
    while round(length * (1 - args.val_fraction)) < split:
        length += 1
    if round(length * (1 - args.val_fraction)) != split:
        raise SystemExit("choose --train-windows/--val-fraction with an exact split")
    series = synthetic_series(length, 1, 3, 0.1, seed=args.seed)
    with open(path, "w") as f:  # a local temp file this script owns
        f.write("t,value\n")
        f.writelines(f"{i},{v:.6f}\n" for i, v in enumerate(series.values[:, 0]))
    return length, split


def run_worker(side: str, csv_path: str, steps: int, tmp: str, r: int, args,
               seed: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, "--csv", csv_path,
           "--steps", str(steps), "--model-dir", os.path.join(tmp, f"run-{r}"),
           "--window", str(args.window), "--batch-size", str(args.batch_size),
           "--learning-rate", str(args.learning_rate), "--val-fraction", str(args.val_fraction),
           "--steps-per-loop", str(args.steps_per_loop), "--seed", str(seed)]
    for o in args.overrides:
        cmd += ["--set", o]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{side} run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def report(results: dict, args) -> None:
    med = {side: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
           for side, runs in results.items()}
    t, s = med["textbook"], med["seqtrain"]
    print(f"\nmedian of {args.repeats} run(s) per side:")
    print(f"  {'':<9} {'examples/s':>11} {'train s':>8} {'wall s':>8} {'val MSE':>9}"
          f" {'naive MSE':>10}")
    for side, m in med.items():
        print(f"  {side:<9} {m['examples_per_sec']:11.0f} {m['train_seconds']:8.2f} "
              f"{m['wall_seconds']:8.2f} {m['val_mse']:9.5f} {m['naive_mse']:10.5f}")
    pairs = [b["examples_per_sec"] / a["examples_per_sec"]
             for a, b in zip(results["textbook"], results["seqtrain"])]
    print(f"  seqtrain/textbook examples/s: {s['examples_per_sec'] / t['examples_per_sec']:.2f}x"
          f" (ratio of medians); per repeat: {', '.join(f'{p:.2f}x' for p in pairs)};"
          f" median {statistics.median(pairs):.2f}x")
    print(f"  wall: seqtrain {t['wall_seconds'] / s['wall_seconds']:.2f}x faster;"
          f"  val MSE seqtrain/textbook: {s['val_mse'] / t['val_mse']:.3f} (< 1 is better)")


# ----------------------------------------------------------------------------
# The two sides. Each runs in its own process.
# ----------------------------------------------------------------------------


def run_textbook(args) -> dict:
    """The classic snippet: numpy windows, Sequential, compile, fit."""
    import numpy as np
    import keras

    t0 = time.perf_counter()
    series = np.loadtxt(args.csv, delimiter=",", skiprows=1, usecols=1, dtype="float32")
    split = round(len(series) * (1 - args.val_fraction))
    mean, std = series[:split].mean(), series[:split].std()
    z = (series - mean) / std
    w = args.window
    x_train = np.array([z[i:i + w] for i in range(split - w)])[..., None]
    y_train = z[w:split]
    x_val = np.array([z[i:i + w] for i in range(split - w, len(z) - w)])[..., None]
    y_val = series[split:]

    keras.utils.set_random_seed(args.seed)
    model = keras.Sequential([
        keras.Input((w, 1)),
        keras.layers.LSTM(50, return_sequences=True),
        keras.layers.LSTM(20),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate), loss="mse")
    epochs = args.steps // (len(x_train) // args.batch_size)
    t1 = time.perf_counter()
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=epochs, verbose=0)
    train_seconds = time.perf_counter() - t1
    pred = model.predict(x_val, verbose=0)[:, 0] * std + mean
    return {
        "examples_per_sec": args.steps * args.batch_size / train_seconds,
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - t0,
        "val_mse": float(np.mean((pred - y_val) ** 2)),
        "naive_mse": float(np.mean((series[split - 1:-1] - y_val) ** 2)),
    }


def run_seqtrain(args) -> dict:
    """`forecasting` on the same CSV through train_lib.train."""
    sys.path.insert(0, REPO)
    from trainer import config as config_lib, train_lib

    overrides = [
        "data.source=csv", f"data.path={args.csv}", "data.time_column=t",
        f"data.window={args.window}", f"data.val_fraction={args.val_fraction}",
        "model.layer_units=[50, 20]",
        f"train.steps={args.steps}", f"train.batch_size={args.batch_size}",
        f"train.learning_rate={args.learning_rate}",
        f"train.steps_per_loop={args.steps_per_loop}", f"train.log_every={args.steps_per_loop}",
        f"train.eval_every={args.steps}", f"train.checkpoint_every={args.steps}",
        f"runtime.seed={args.seed}", *args.overrides,
    ]
    cfg = config_lib.load(task="forecasting", overrides=overrides)
    t0 = time.perf_counter()
    result = train_lib.train(cfg, args.model_dir, verbose=False)
    wall = time.perf_counter() - t0
    train_seconds = _loop_seconds(os.path.join(args.model_dir, "train"))
    return {
        "examples_per_sec": args.steps * args.batch_size / train_seconds,
        "train_seconds": train_seconds,
        "wall_seconds": wall,
        "val_mse": result["metrics"]["mse"],
        "naive_mse": result["metrics"]["naive_mse"],
    }


def _loop_seconds(train_log_dir: str) -> float:
    """Seconds inside the loop's train_steps calls, from its steps_per_sec scalars."""
    import tensorflow as tf

    rates = {}
    for name in tf.io.gfile.listdir(train_log_dir):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(train_log_dir, name)):
            for value in event.summary.value:
                if value.tag == "steps_per_sec":
                    rates[event.step] = float(tf.make_ndarray(value.tensor))
    seconds, prev = 0.0, 0
    for step in sorted(rates):
        seconds += (step - prev) / rates[step]
        prev = step
    return seconds


if __name__ == "__main__":
    main()
