#!/usr/bin/env python
"""Benchmarks `seqtrain prepare` (text_generation) on a generated plain-text corpus.

Side by side in one run, each in its own fresh process that reports its own peak RSS
(`resource.getrusage(RUSAGE_SELF).ru_maxrss` at exit):

1. `seqtrain prepare` of the corpus (three streaming passes): seconds, MB/s of source,
   peak RSS;
2. the same `seqtrain prepare` again: the content key matches, so it only hashes the
   source and verifies the shards (the cost of a reuse);
3. opening the prepared dataset for training (`chars_prepared.open_corpus`: SHA-256 of
   every shard, then memory-mapping) and gathering 2000 batches of 64 random windows
   of 101 tokens: verification MB/s and peak RSS, reading windows with `os.pread`
   (what training does) and, side by side, through `np.load(mmap_mode="r")`;
4. the in-memory path the task uses without data.prepared_dir (`task.prepare()`: the
   whole text decoded, vocabulary fitted with a Counter, ids encoded): seconds and peak
   RSS, the baseline the prepared path's memory is compared with. Skipped with
   --no-baseline;
5. with --train-steps N: `seqtrain train` of the default text_generation model for N
   steps from the prepared corpus and, side by side, from a prepared --small-mb
   corpus generated the same way (10 MB by default): peak RSS of each training
   process and the difference (the issue's target: within +100 MB).
   --reuse-prepared skips steps 1-4 and reuses WORK_DIR/corpus.txt and
   WORK_DIR/prepared from an earlier run with the same --work-dir.

The corpus is generated (random words from a fixed list, including non-ASCII
letters, lines of 6-14 words; seeded) and streamed to disk, never held in memory.

Example (figures in docs/prepared.md):
  python scripts/bench_data.py --mb 200 --work-dir /tmp/bench_data
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_REPORT_PEAK = """
import atexit, json, resource, sys
atexit.register(lambda: print("PEAK_RSS_MB=%.1f" % (
    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), file=sys.stderr))
"""

_PREPARE = _REPORT_PEAK + """
sys.argv[0] = "seqtrain"
from trainer.cli import main
main()
"""

_OPEN_AND_GATHER = _REPORT_PEAK + """
import time, numpy as np
from trainer import experiment
from trainer.data import chars_prepared
cfg = experiment.load("text_generation", None, sys.argv[2:])
t = time.perf_counter()
corpus = chars_prepared.open_corpus(cfg.data)
opened = time.perf_counter() - t
rng = np.random.default_rng(0)
n = len(corpus.train) - 101
if sys.argv[1] == "--mmap":  # the same windows read through np.load(mmap_mode="r") instead
    from trainer.data import prepared
    corpus.train = prepared.TokenStream([np.load(s.path, mmap_mode="r")
                                         for s in corpus.train.shards])
t = time.perf_counter()
for _ in range(2000):
    corpus.train.windows(rng.integers(0, n, 64), 101)
gather = time.perf_counter() - t
print(json.dumps({"open_secs": opened, "verify_secs": corpus.dataset.verify_secs,
                  "verified_mb": corpus.dataset.verified_bytes / 2**20,
                  "gather_2000x64_secs": gather}))
"""

_IN_MEMORY = _REPORT_PEAK + """
import time
from trainer import experiment
from trainer.tasks.text_generation import TextGenerationTask
cfg = experiment.load("text_generation", None, sys.argv[1:])
t = time.perf_counter()
task = TextGenerationTask(cfg)
task.prepare()
print(json.dumps({"secs": time.perf_counter() - t, "train_chars": len(task.train_ids)}))
"""

WORDS = ("the and of to in that it with as his her for was shall thee thou love "
         "time beauty summer naïve café Straße ΟΔΟΣ λόγος").split()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mb", type=float, default=20.0, help="Corpus size in MB (default 20).")
    p.add_argument("--shard-mb", type=float, default=64.0, help="Shard size for prepare.")
    p.add_argument("--work-dir", default="", help="Where to write (default: a temp dir, "
                   "removed at the end).")
    p.add_argument("--no-baseline", action="store_true",
                   help="Skip the in-memory baseline (it holds the whole corpus).")
    p.add_argument("--train-steps", type=int, default=0,
                   help="Also train the default text_generation model this many steps on the "
                        "prepared corpus and on a --small-mb one; report both peak RSS.")
    p.add_argument("--small-mb", type=float, default=10.0,
                   help="Size of the small corpus for --train-steps (default 10).")
    p.add_argument("--reuse-prepared", action="store_true",
                   help="With --work-dir: reuse its corpus.txt and prepared/ (only --train-steps).")
    args = p.parse_args()
    work = args.work_dir or tempfile.mkdtemp(prefix="bench_data_")
    os.makedirs(work, exist_ok=True)
    try:
        run(args, work)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


def run(args, work: str) -> None:
    corpus = os.path.join(work, "corpus.txt")
    out = os.path.join(work, "prepared")
    if args.reuse_prepared:
        if not (os.path.exists(corpus) and os.path.isdir(out)):
            raise SystemExit(f"--reuse-prepared: no corpus.txt and prepared/ in {work}")
        return train_rss(args, work, corpus, out)
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    size = generate(corpus, int(args.mb * 2**20))
    print(f"generated {corpus}: {size / 2**20:.1f} MB in {time.perf_counter() - t:.1f} s")
    data = ["--set", f"data.path={corpus}"]
    results = {"source_mb": size / 2**20}

    r = child(_PREPARE, ["prepare", "--task", "text_generation", *data, "--out", out,
                         "--shard-mb", str(args.shard_mb)], work)
    results["prepare"] = {"secs": r["secs"], "mb_per_s": size / 2**20 / r["secs"],
                          "peak_rss_mb": r["peak"]}
    r = child(_PREPARE, ["prepare", "--task", "text_generation", *data, "--out", out], work)
    assert "reused" in r["stdout"], r["stdout"]
    results["reuse"] = {"secs": r["secs"], "peak_rss_mb": r["peak"]}
    for mode in ("--pread", "--mmap"):
        r = child(_OPEN_AND_GATHER, [mode, f"data.path={corpus}", f"data.prepared_dir={out}"],
                  work)
        opened = json.loads(r["stdout"].strip().splitlines()[-1])
        results["open" if mode == "--pread" else "open_mmap"] = {
            **opened, "verify_mb_per_s": opened["verified_mb"] / opened["verify_secs"],
            "peak_rss_mb": r["peak"]}
    if not args.no_baseline:
        r = child(_IN_MEMORY, [f"data.path={corpus}"], work)
        results["in_memory"] = {**json.loads(r["stdout"].strip().splitlines()[-1]),
                                "peak_rss_mb": r["peak"]}
    print(json.dumps(results, indent=2))
    report(results)
    if args.train_steps:
        train_rss(args, work, corpus, out)


def train_rss(args, work: str, corpus: str, out: str) -> None:
    """Peak RSS of training from the prepared corpus against a --small-mb one."""
    small = os.path.join(work, "small.txt")
    small_out = os.path.join(work, "prepared-small")
    shutil.rmtree(small_out, ignore_errors=True)
    generate(small, int(args.small_mb * 2**20))
    child(_PREPARE, ["prepare", "--task", "text_generation", "--set", f"data.path={small}",
                     "--out", small_out], work)
    results = {}
    for name, (src, prep) in (("small", (small, small_out)), ("large", (corpus, out)),
                              ("small_again", (small, small_out))):
        model_dir = os.path.join(work, f"run-{name}")
        shutil.rmtree(model_dir, ignore_errors=True)
        r = child(_PREPARE, ["train", "--task", "text_generation", "--model-dir", model_dir,
                             "--set", f"data.path={src}", "--set", f"data.prepared_dir={prep}",
                             "--set", f"train.steps={args.train_steps}",
                             "--set", f"train.steps_per_loop={max(1, args.train_steps // 2)}",
                             "--set", f"train.eval_every={args.train_steps}",
                             "--set", "train.eval_batches=2"], work)
        shutil.rmtree(model_dir, ignore_errors=True)
        results[name] = {"source_mb": os.path.getsize(src) / 2**20, "secs": r["secs"],
                         "peak_rss_mb": r["peak"]}
    print(json.dumps({"train": results}, indent=2))
    smalls = [results["small"]["peak_rss_mb"], results["small_again"]["peak_rss_mb"]]
    print(f"train {args.train_steps} steps: peak RSS {results['large']['peak_rss_mb']:.0f} MB "
          f"from {results['large']['source_mb']:.0f} MB, {smalls[0]:.0f} / {smalls[1]:.0f} MB "
          f"from {results['small']['source_mb']:.0f} MB (before / after); difference "
          f"{results['large']['peak_rss_mb'] - max(smalls):+.0f} MB against the larger")


def generate(path: str, nbytes: int) -> int:
    rng = random.Random(0)
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < nbytes:
            block = "\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14)))
                              for _ in range(2000)) + "\n"
            f.write(block)
            written += len(block.encode("utf-8"))
    return os.path.getsize(path)


def child(code: str, argv: list[str], cwd: str) -> dict:
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *argv], cwd=cwd, env=env,
                          capture_output=True, text=True)
    secs = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"{argv[:2]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    peak = [float(line.split("=")[1]) for line in proc.stderr.splitlines()
            if line.startswith("PEAK_RSS_MB=")][-1]
    return {"secs": secs, "peak": peak, "stdout": proc.stdout}


def report(r: dict) -> None:
    p, o = r["prepare"], r["open"]
    print(f"\nsource {r['source_mb']:.0f} MB")
    print(f"prepare     : {p['secs']:.1f} s ({p['mb_per_s']:.1f} MB/s of source, whole process "
          f"incl. imports), peak RSS {p['peak_rss_mb']:.0f} MB")
    print(f"reuse       : {r['reuse']['secs']:.1f} s, peak RSS {r['reuse']['peak_rss_mb']:.0f} MB")
    print(f"open+verify : {o['verify_secs']:.2f} s for {o['verified_mb']:.0f} MB of shards "
          f"({o['verify_mb_per_s']:.0f} MB/s); 2000 gathers of 64 random windows: "
          f"{o['gather_2000x64_secs']:.2f} s; peak RSS {o['peak_rss_mb']:.0f} MB (the same "
          f"windows through the memory map: {r['open_mmap']['gather_2000x64_secs']:.2f} s, "
          f"{r['open_mmap']['peak_rss_mb']:.0f} MB)")
    if "in_memory" in r:
        m = r["in_memory"]
        print(f"in-memory   : task.prepare() {m['secs']:.1f} s, peak RSS {m['peak_rss_mb']:.0f} MB "
              f"(prepare/in-memory peak RSS: {p['peak_rss_mb'] / m['peak_rss_mb']:.2f}; "
              f"open/in-memory: {o['peak_rss_mb'] / m['peak_rss_mb']:.2f})")


if __name__ == "__main__":
    main()
