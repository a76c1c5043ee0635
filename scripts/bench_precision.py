"""Training throughput per `runtime.precision`, through seqtrain's own step functions.

For each precision (float32, mixed_float16, mixed_bfloat16) one worker
process, so the Keras policy is set once per process as the trainer does:

  1. times a 2048^3 float32 matmul right before and right after every row
     below (best of 3 each; the row's yardstick is the better of the two), so
     a row and its yardstick see about the same machine load;
  2. builds large recurrent layers (LSTM 512 and GRU 512, batch 128, 25 time
     steps, input width = units) as a one-layer model with a float32 Dense
     head and times `loop.StepFunctions.train_steps` on them: forward,
     backward, loss scaling (mixed_float16) and an Adam update;
  3. builds the default config of each registered task (`seqtrain config
     --task T`, only `runtime.precision` changed) exactly as `seqtrain train`
     does (task.prepare, build_model, build_optimizer, the real tf.data input
     pipeline, `StepFunctions`, op determinism) and times `train_steps`.

Each timing is one untimed call (tracing) and then --repeats calls of --steps
steps each. The fastest call is reported, like the fastest matmul: on a shared
machine the fastest run is the one least disturbed by other processes.
`--threads N` pins TF's intra- and inter-op pools (default: TF's choice, one
thread per core); with other load on the machine, `--threads 1` is steadier,
because a 2-thread matmul waits for its slower thread.

Reported per row and precision:
  examples/s  : global batch * steps / seconds.
  vs fp32     : examples/s divided by the float32 worker's.
  vs fp32 (n) : the same ratio after dividing each side by its own row's
                matmul rate: a load-normalized ratio. On a shared machine the
                load changes between workers; this column cancels part of it.
  % of matmul : the recurrent layer's FLOP/s as a share of the fp32 matmul
                rate measured around the row, in the same process (large-layer
                rows only). Counted FLOPs: per time step and example, forward =
                gates * 2 * (in + H) * H (LSTM 4 gates, GRU 3), forward +
                backward = 3 * forward. The Dense head, activations and the
                optimizer are not counted.

The numbers are for this machine and its load. A CPU has no cuDNN: these rows
time the generic Keras LSTM/GRU kernels. Mixed precision is built for GPU
tensor cores; on a CPU the half-precision rows measure whatever TF's CPU
kernels do with float16/bfloat16 (the first line printed lists the CPU's
AVX-512/AMX flags, if any), so read them as measurements, not expectations.

Example:
  python scripts/bench_precision.py --steps 10 --repeats 3
  python scripts/bench_precision.py --tasks text_classification --layers lstm --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
TASKS = ("text_classification", "forecasting", "multistep_forecasting", "text_generation",
         "translation")
GATES = {"lstm": 4, "gru": 3}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See the module docstring for what is measured and how FLOPs are counted.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--precisions", default=",".join(PRECISIONS),
                   help="comma-separated runtime.precision values (default: all three)")
    p.add_argument("--tasks", default=",".join(TASKS),
                   help="comma-separated registered tasks at their default config; "
                        "'none' skips them (default: all)")
    p.add_argument("--layers", default="lstm,gru",
                   help="comma-separated large layers to time: lstm, gru or none")
    p.add_argument("--units", type=int, default=512, help="large-layer units (default 512)")
    p.add_argument("--batch", type=int, default=128, help="large-layer batch (default 128)")
    p.add_argument("--time-steps", type=int, default=25,
                   help="large-layer sequence length (default 25)")
    p.add_argument("--steps", type=int, default=10, help="train steps per timed call")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per row (fastest)")
    p.add_argument("--threads", type=int, default=0,
                   help="TF intra- and inter-op threads; 0 (default) lets TF choose")
    p.add_argument("--matmul", type=int, default=2048, help="matmul size N for N^3 (default 2048)")
    p.add_argument("--json", default="", help="also write all results to this JSON file")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(run_worker(args.worker, args)), flush=True)
        return
    precisions = _split(args.precisions)
    if "float32" not in precisions:
        precisions.insert(0, "float32")  # the reference for every ratio
    print(f"machine: {os.cpu_count()} CPUs, {_cpu_name()}, Python {platform.python_version()}")
    results = {}
    for precision in precisions:
        load = os.getloadavg()[0]
        print(f"... {precision} (load average {load:.2f})", flush=True)
        res = spawn_worker(precision, args)
        res["load_before"] = load
        results[precision] = res
    print()
    print(report(results, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


def spawn_worker(precision: str, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", precision,
           "--tasks", args.tasks, "--layers", args.layers, "--units", str(args.units),
           "--batch", str(args.batch), "--time-steps", str(args.time_steps),
           "--steps", str(args.steps), "--repeats", str(args.repeats),
           "--threads", str(args.threads),
           "--matmul", str(args.matmul)]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
               CUDA_VISIBLE_DEVICES=os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"worker {precision} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# ----------------------------------------------------------------------------
# Worker: one precision per process.
# ----------------------------------------------------------------------------


def run_worker(precision: str, args) -> dict:
    import tensorflow as tf

    from trainer import precision as precision_lib

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    tf.random.set_seed(0)
    tf.config.experimental.enable_op_determinism()  # what runtime.deterministic=true does
    out = {"precision": precision, "tensorflow": tf.__version__, "rows": {}}
    precision_lib.set_policy(precision)
    jobs = [(f"{kind.upper()} {args.units}", time_large_layer, kind)
            for kind in _split(args.layers)]
    jobs += [(task, time_task, task) for task in _split(args.tasks)]
    before = matmul_rate(args.matmul)
    for row, fn, what in jobs:
        result = fn(what, precision, args)
        after = matmul_rate(args.matmul)
        result["matmul_flops_around"] = [before, after]
        result["matmul_flops"] = max(before, after)
        out["rows"][row] = result
        before = after
    return out


def matmul_rate(n: int) -> float:
    """FLOP/s of an n x n x n float32 matmul (best of 3 after a warm-up)."""
    import tensorflow as tf

    a = tf.random.normal([n, n], dtype=tf.float32)
    b = tf.random.normal([n, n], dtype=tf.float32)
    mm = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    float(mm(a, b))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        float(mm(a, b))
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def _time_steps(fns, iterator, args) -> list[float]:
    import tensorflow as tf

    n = tf.constant(args.steps, tf.int32)
    float(fns.train_steps(iterator, n)[0])  # traces and warms up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        float(fns.train_steps(iterator, n)[0])
        times.append(time.perf_counter() - t0)
    return times


def time_large_layer(kind: str, precision: str, args) -> dict:
    """One recurrent layer (input width = units) and a float32 head, MSE, Adam."""
    import keras
    import tensorflow as tf

    from trainer import loop

    class Regression:  # the two Task methods StepFunctions uses
        def loss(self, model, features, labels):
            pred = tf.cast(model(features, training=True), tf.float32)
            return tf.reduce_mean(tf.square(pred - labels), axis=-1)

    h, b, t = args.units, args.batch, args.time_steps
    keras.utils.set_random_seed(0)
    layer = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[kind](h)
    inputs = keras.Input((t, h))
    model = keras.Model(inputs, keras.layers.Dense(1, dtype="float32")(layer(inputs)))
    optimizer = keras.optimizers.Adam(1e-3)
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    strategy = tf.distribute.get_strategy()
    fns = loop.StepFunctions(task=Regression(), model=model, optimizer=optimizer,
                             strategy=strategy, global_batch=b, clipnorm=None, clipvalue=None,
                             jit_compile=False)
    x = tf.random.normal([1, b, t, h])  # [replicas, per-replica batch, ...]
    y = tf.random.normal([1, b, 1])
    iterator = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
    times = _time_steps(fns, iterator, args)
    secs = min(times)
    flops_per_step = 3 * GATES[kind] * 2 * (h + h) * h * t * b
    return {"examples_per_sec": b * args.steps / secs, "secs": times,
            "flops_per_sec": flops_per_step * args.steps / secs,
            "config": f"{kind.upper()} {h}, batch {b}, {t} steps, in={h}",
            "compute_dtype": layer.compute_dtype}


def time_task(name: str, precision: str, args) -> dict:
    """The task's default config, built and stepped as `seqtrain train` does."""
    import keras
    import tensorflow as tf

    from trainer import experiment, loop, registry, runner
    from trainer.data import sampling

    config = experiment.load(task=name, overrides=[f"runtime.precision={precision}"])
    task = registry.get(name)(config)
    task.prepare()
    keras.utils.set_random_seed(config.runtime.seed)
    model = task.build_model()
    optimizer = runner.build_optimizer(config)
    optimizer.build(model.trainable_variables)
    t = config.train
    fns = loop.StepFunctions(task=task, model=model, optimizer=optimizer,
                             strategy=tf.distribute.get_strategy(), global_batch=t.batch_size,
                             clipnorm=t.clipnorm, clipvalue=t.clipvalue,
                             jit_compile=config.runtime.jit_compile)
    ds = sampling.replica_dataset(task.train_examples(), seed=config.runtime.seed,
                                  global_batch=t.batch_size, first_step=0, replica_ids=[0],
                                  num_replicas=1)
    times = _time_steps(fns, iter(ds), args)
    m = config.model
    return {"examples_per_sec": t.batch_size * args.steps / min(times),
            "secs": times,
            "config": f"{getattr(m, 'cell', '?')} {getattr(m, 'units', '?')}"
                      f" x{getattr(m, 'layers', 1)}, batch {t.batch_size}"}


# ----------------------------------------------------------------------------
# Report.
# ----------------------------------------------------------------------------


def report(results: dict, args) -> str:
    ref = results["float32"]
    rows = list(ref["rows"])
    precisions = list(results)
    lines = []
    head = "| row | config |"
    rule = "|---|---|"
    for p in precisions:
        head += f" {p} ex/s | vs fp32 | vs fp32 (n) | % of matmul |"
        rule += "---:|---:|---:|---:|"
    lines += [head, rule]
    for row in rows:
        line = f"| {row} | {ref['rows'][row]['config']} |"
        r0 = ref["rows"][row]
        for p in precisions:
            r = results[p]["rows"][row]
            ratio = r["examples_per_sec"] / r0["examples_per_sec"]
            normed = ratio * r0["matmul_flops"] / r["matmul_flops"]
            share = (f"{100 * r['flops_per_sec'] / r['matmul_flops']:.0f}%"
                     if "flops_per_sec" in r else "")
            line += f" {r['examples_per_sec']:,.0f} | {ratio:.2f}x | {normed:.2f}x | {share} |"
        lines.append(line)
    lines.append("")
    lines.append("fp32 %d^3 matmul around each row, GFLOP/s (min-max per worker): %s" % (
        args.matmul, ", ".join(
            f"{p} {min(_rates(results[p])) / 1e9:.0f}-{max(_rates(results[p])) / 1e9:.0f}"
            for p in precisions)))
    threads = f"{args.threads} TF thread(s)" if args.threads else "TF's default threads"
    lines.append(f"{args.steps} steps per timed call, fastest of {args.repeats} calls, {threads}; "
                 "load average before each worker: " + ", ".join(
                     f"{p} {results[p]['load_before']:.2f}" for p in precisions))
    return "\n".join(lines)


def _rates(result: dict) -> list[float]:
    return [x for r in result["rows"].values() for x in r["matmul_flops_around"]]


def _split(text: str) -> list[str]:
    return [s for s in (x.strip() for x in text.split(",")) if s and s != "none"]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor() or "unknown CPU"
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines()
                 if ln.startswith("model name")), "unknown CPU")
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines()
                  if ln.startswith("flags")), [])
    simd = [f for f in ("avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_fp16",
                        "amx_bf16") if f in flags]
    return f"{name} ({' '.join(simd) or 'no AVX2'})"


if __name__ == "__main__":
    main()
