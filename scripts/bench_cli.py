#!/usr/bin/env python
"""Wall time of the commands that neither train nor load a model, vs `import tensorflow`.

Each command runs as a fresh `seqtrain` process (the installed console script
with this checkout first on PYTHONPATH) from a temporary working directory that
holds a small runs/ tree and a config file, exactly as a user types it. The
baseline is `python -c "import tensorflow"` in the same interpreter. The sides
alternate within each repeat, so both see the same machine load; the ratio is
the median command time over the median baseline time (target: <= 0.25).

Example:
  python scripts/bench_cli.py --repeats 5
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
RENDER = ["job", "render", "--image", "example.com/seqtrain:1", "--model-dir", "gs://b/run"]
COMMANDS = {
    "seqtrain --help": ["--help"],
    "seqtrain tasks": ["tasks"],
    "seqtrain config --task translation": ["config", "--task", "translation"],
    "seqtrain runs list": ["runs", "list"],
    "seqtrain runs compare runs": ["runs", "compare", "runs"],
    "seqtrain job render --platform tfjob": RENDER + ["--platform", "tfjob", "--workers", "2",
                                                      "--config", "small.yaml"],
    "seqtrain stage (bad destination)": ["stage", "small.yaml", "not-a-bucket"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="Runs of each side.")
    parser.add_argument("--json", help="Also write the results to this file.")
    args = parser.parse_args()

    env = {**os.environ, "PYTHONPATH": REPO}
    entry = os.path.join(os.path.dirname(sys.executable), "seqtrain")
    with tempfile.TemporaryDirectory() as cwd:
        _make_workdir(cwd)
        baseline, times = [], {name: [] for name in COMMANDS}
        for _ in range(args.repeats):
            baseline.append(_time([sys.executable, "-c", "import tensorflow"], cwd, env))
            for name, argv in COMMANDS.items():
                times[name].append(_time([entry, *argv], cwd, env))
    base = statistics.median(baseline)
    print(f"machine: {_cpu()}; python {platform.python_version()}; {args.repeats} repeats")
    print(f"{'command':<40} {'median s':>9} {'ratio':>6}")
    baseline_name = 'python -c "import tensorflow"'
    print(f"{baseline_name:<40} {base:>9.3f} {1:>6.2f}")
    results = {"baseline_s": base, "commands": {}}
    for name, ts in times.items():
        t = statistics.median(ts)
        results["commands"][name] = {"median_s": t, "ratio": t / base}
        print(f"{name:<40} {t:>9.3f} {t / base:>6.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


def _time(cmd: list[str], cwd: str, env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if "Traceback" in done.stderr:
        raise SystemExit(f"{cmd} failed:\n{done.stderr}")
    return elapsed


def _make_workdir(cwd: str) -> None:
    sys.path.insert(0, REPO)
    from trainer import experiment

    with open(os.path.join(cwd, "small.yaml"), "w") as f:
        f.write("train:\n  steps: 20\n  batch_size: 8\n")
    for i, lr in enumerate((0.01, 0.003, 0.001)):
        run = os.path.join(cwd, "runs", f"run-{i}")
        os.makedirs(os.path.join(run, "checkpoints"))
        cfg = experiment.load("multistep_forecasting", None, [f"train.learning_rate={lr}"])
        with open(os.path.join(run, "config.yaml"), "w") as f:
            f.write(cfg.to_yaml())
        with open(os.path.join(run, "metrics.json"), "w") as f:
            json.dump({"step": 100, "metrics": {"mse": 0.5 - lr, "mse_h1": 0.3, "mse_h12": 0.6}},
                      f)


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return platform.processor() or "unknown CPU"
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    model = info.get("Model name", "?").strip()
    return f"{model}, {info.get('CPU(s)', '?').strip()} CPUs"


if __name__ == "__main__":
    main()
