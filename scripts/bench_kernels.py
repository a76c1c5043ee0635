#!/usr/bin/env python
"""Training-step time of seqtrain's fused CPU loops vs Keras' generic loop, per cell.

For each cell (lstm, gru, gru with reset_after=false, simple_rnn) the script
builds two copies of the same model with `trainer.models.rnn.recurrent_stack`
(the tasks' builder): `model.cpu_kernel=fused` (trainer/models/fused_*.py)
and `model.cpu_kernel=keras` (the stock Keras layer), with the same initial
weights. The model is `--layers` stacked recurrent layers on float inputs
[batch, timesteps, features] and a Dense(1) head on the last output; a step
is one `tf.function` computing the MSE loss, its gradients and an SGD update.

Both sides run in this one process, interleaved: each repeat times
`--steps` steps of one side then the other, alternating which goes first,
after a warm-up call that traces. Reported per cell: the median milliseconds
per step of each side and the median of the per-repeat ratios keras/fused
(> 1: the fused loop is faster). Compare ratios, not absolute times, and
state the machine (`lscpu`).

Example:
  python scripts/bench_kernels.py --units 256 --batch 64 --timesteps 100 --layers 2
  python scripts/bench_kernels.py --masked --bidirectional --units 64 --batch 32 --timesteps 200
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CELLS = ("lstm", "gru", "gru_reset_before", "simple_rnn")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--cells", default=",".join(CELLS),
                   help=f"Comma-separated subset of {', '.join(CELLS)}.")
    p.add_argument("--units", type=int, default=256)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--timesteps", type=int, default=100)
    p.add_argument("--features", type=int, default=64)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--bidirectional", action="store_true")
    p.add_argument("--masked", action="store_true",
                   help="Right-padded inputs: lengths uniform in [timesteps/2, timesteps].")
    p.add_argument("--jit", action="store_true", help="XLA-compile both steps.")
    p.add_argument("--steps", type=int, default=10, help="Timed steps per side per repeat.")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    cells = args.cells.split(",")
    for c in cells:
        if c not in CELLS:
            p.error(f"--cells: {c!r} is not one of {', '.join(CELLS)}")

    sys.path.insert(0, REPO)
    import tensorflow as tf  # imported after argument errors

    print(f"machine: {_cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"TF {tf.__version__}")
    bidi = " bidirectional" if args.bidirectional else ""
    print(f"shape: units {args.units} x {args.layers} layer(s){bidi}, "
          f"batch {args.batch}, {args.timesteps} timesteps, {args.features} features, "
          f"{'masked (right-padded)' if args.masked else 'no mask'}, jit {args.jit}; "
          f"{args.repeats} repeats x {args.steps} steps")
    print(f"{'cell':<18} {'keras ms/step':>14} {'fused ms/step':>14} {'keras/fused':>12}")
    for cell in cells:
        keras_ms, fused_ms, ratios = _bench(cell, args)
        print(f"{cell:<18} {statistics.median(keras_ms):>14.1f} "
              f"{statistics.median(fused_ms):>14.1f} {statistics.median(ratios):>11.2f}x",
              flush=True)


def _bench(cell: str, args):
    import keras
    import numpy as np
    import tensorflow as tf

    from trainer.models import fused
    from trainer.models.rnn import RecurrentConfig, recurrent_stack

    base = RecurrentConfig(cell="gru" if cell.startswith("gru") else cell, units=args.units,
                           layers=args.layers, bidirectional=args.bidirectional,
                           reset_after=cell != "gru_reset_before")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, args.timesteps, args.features))
    if args.masked:  # zero the padding; a Masking layer turns it into the mask
        lengths = rng.integers(args.timesteps // 2, args.timesteps + 1, size=args.batch)
        x *= np.arange(args.timesteps)[None, :, None] < lengths[:, None, None]
    x = tf.constant(x, tf.float32)
    y = tf.constant(rng.normal(size=(args.batch, 1)), tf.float32)

    steps = {}
    for kernel in ("keras", "fused"):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((args.timesteps, args.features))
        h = keras.layers.Masking(0.0)(inputs) if args.masked else inputs
        h = recurrent_stack(h, dataclasses.replace(base, cpu_kernel=kernel))
        steps[kernel] = _step_fn(keras.Model(inputs, keras.layers.Dense(1)(h)), args.jit)
    key = base.cell
    traced = fused.TRACES[key]
    for fn in steps.values():  # warm-up: trace (and compile)
        fn(x, y)
    if fused.TRACES[key] == traced:  # never compare Keras with itself
        sys.exit(f"the fused {key} loop did not run (GPU or TPU visible?); nothing to compare")

    times = {"keras": [], "fused": []}
    for r in range(args.repeats):
        order = ("keras", "fused") if r % 2 == 0 else ("fused", "keras")
        for kernel in order:
            start = time.perf_counter()
            for _ in range(args.steps):
                loss = steps[kernel](x, y)
            float(loss)
            times[kernel].append(1000 * (time.perf_counter() - start) / args.steps)
    ratios = [k / f for k, f in zip(times["keras"], times["fused"])]
    return times["keras"], times["fused"], ratios


def _step_fn(model, jit: bool):
    """One training step: MSE loss, gradients, SGD update."""
    import tensorflow as tf

    variables = model.trainable_variables

    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        for v, g in zip(variables, tape.gradient(loss, variables)):
            v.assign_sub(0.01 * g)
        return loss

    return tf.function(step, jit_compile=jit)


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
