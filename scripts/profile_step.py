"""Where one training step of a task spends its time, op by op (CPU).

Builds the run the way `seqtrain train` does (`runner.build_run`: the strategy, the
task on its own data, the model, optimizer, XLA decision and step functions, in a
temporary model dir) and runs its own compiled step (`StepFunctions.train_steps`, one
step per call, the run's input pipeline): times it, then records `--steps` steps with
`tf.profiler` and reads the trace back (the XLA runtime's per-thunk events):
thread-milliseconds per step by op, summed over the intra-op threads, with the HLO
name's numeric suffix dropped (`MatMul.24` and `MatMul.25` count as `MatMul`).

Reading it: the wall time of a step is the critical path, the op column is work.
Ops inside a recurrent loop show up once per timestep (the `/step` count), so a
loop of T steps and L layers shows T x L matmuls in each direction. Without XLA
the ops are TensorFlow kernels (`scope/op:Type`), and `ParallelFor` is the part of
their work other threads did. The profiler can drop some events of a very short
trace (a tiny model's steps of a few milliseconds), so counts there are approximate.

Example (the figures in docs/benchmarks.md, "Where a fused step's time goes"):
  python scripts/profile_step.py --task text_generation
  python scripts/profile_step.py --task text_generation --set model.cell=gru
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--task", default="text_generation")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--repeats", type=int, default=7, help="Timed steps (median reported).")
    p.add_argument("--steps", type=int, default=3, help="Profiled steps.")
    p.add_argument("--top", type=int, default=25, help="Ops listed.")
    args = p.parse_args()

    sys.path.insert(0, REPO)
    import tensorflow as tf

    from trainer import cluster, experiment, runner
    from trainer.run_dir import RunDir

    config = experiment.load(task=args.task, overrides=args.overrides)
    with tempfile.TemporaryDirectory() as model_dir:
        run = runner.build_run(config, RunDir(model_dir), cluster.ClusterInfo(None, None, 0, 1,
                                                                              "none"))

        def step():
            run.steps.train_steps(run.train_iterator, 1)[0].numpy()

        step()  # trace and compile
        walls, cpus = [], []
        for _ in range(args.repeats):
            w, c = time.perf_counter(), time.process_time()
            step()
            walls.append(time.perf_counter() - w)
            cpus.append(time.process_time() - c)
        print(f"{args.task} {' '.join(args.overrides)} (XLA {'on' if run.xla.enabled else 'off'}): "
              f"step {statistics.median(walls) * 1e3:.0f} ms wall, "
              f"{statistics.median(cpus) * 1e3:.0f} ms CPU (medians of {args.repeats}); "
              f"{os.cpu_count()} CPUs")

        with tempfile.TemporaryDirectory() as log_dir:
            tf.profiler.experimental.start(log_dir)
            for _ in range(args.steps):
                step()
            tf.profiler.experimental.stop()
            totals, counts = _op_totals(log_dir)
    per_step = sum(totals.values()) / args.steps
    print(f"ops: {per_step:.0f} thread-ms per step in all; by op (thread-ms per step, events "
          "per step):")
    for name, ms in totals.most_common(args.top):
        print(f"  {ms / args.steps:8.1f} ms {counts[name] // args.steps:6d}/step  {name[:90]}")


# Events that wrap others (XLA's and TensorFlow's executors, the compiled call, the
# thread pool) or mark their ends.
_WRAPPERS = re.compile(r"ThunkExecutor|SlinkyThreadPool|ThreadpoolListener|ExecutorState|"
                       r"CpuExecutable|BlockUntilReady|^end: ")


def _op_totals(log_dir: str) -> tuple[collections.Counter, collections.Counter]:
    """Thread-ms and event counts by op name from the host plane of the profile."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    path = sorted(glob.glob(os.path.join(log_dir, "**", "*.xplane.pb"), recursive=True))[-1]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    plane = next(p for p in space.planes if p.name == "/host:CPU")
    names = {k: v.name for k, v in plane.event_metadata.items()}
    totals: collections.Counter = collections.Counter()
    counts: collections.Counter = collections.Counter()
    for line in plane.lines:
        if line.name == "python":  # the Python thread's spans contain the whole step
            continue
        for event in line.events:
            name = names.get(event.metadata_id, "?")
            if _WRAPPERS.search(name):
                continue
            name = re.sub(r"\.\d+$", "", name)
            totals[name] += event.duration_ps / 1e9
            counts[name] += 1
    return totals, counts


if __name__ == "__main__":
    main()
