#!/usr/bin/env python
"""Mutation smoke: break the code on purpose and check that the tests notice.

Each mutant is one textual change to a file of the `trainer` package, located by
a regular expression that must match exactly once. For each mutant the whole
checkout (minus .git and caches) is copied to a temporary directory, the change
is applied to the copy only (the working tree is never edited), and the tests
named for it run against the copy (PYTHONPATH and working directory point at it).

  killed    the tests failed: good
  SURVIVED  the tests passed with the code broken: the tests do not check this
  STALE     the pattern no longer matches (the code was rewritten) or its test file moved:
            update the mutant
  ERROR     pytest could not run (exit code other than 0 or 1)

Exit status 0 only if every mutant selected was killed.

  python scripts/mutation_smoke.py            # all mutants
  python scripts/mutation_smoke.py --list
  python scripts/mutation_smoke.py --check    # every pattern still matches once (fast)
  python scripts/mutation_smoke.py --only data-position-restarts --only fused-backward
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # relative to the repo
    pattern: str  # regex; must match exactly once
    replacement: str
    tests: tuple[str, ...]  # pytest arguments
    what: str


MUTANTS = [
    Mutant("checkpoint-path-join-doubled", "trainer/checkpoints.py",
           r'storage\.join\(ckpt_dir, f"ckpt-\{s\}"\)',
           'storage.join(ckpt_dir, storage.join(ckpt_dir, f"ckpt-{s}"))',
           ("tests/run/test_resume.py", "-k", "text_classification and default"),
           "the checkpoint dir joined twice onto a discovered checkpoint (the relative "
           "--model-dir resume bug): absolute paths still work, relative ones do not"),
    Mutant("data-position-restarts", "trainer/loop.py",
           r"iter\(self\.distributed_dataset\(int\(self\.step\.numpy\(\)\)\)\)",
           "iter(self.distributed_dataset(0))",
           ("tests/run/test_resume.py", "-k", "text_classification and default"),
           "the input no longer starts at the restored step: a resume restarts the data"),
    Mutant("gradient-all-reduce-skipped", "trainer/loop.py",
           r"grads = ctx\.all_reduce\(SUM, grads\)",
           "grads = list(grads)",
           ("tests/models/test_mixed_precision.py", "-k", "clipnorm_under_mirrored"),
           "loop._aggregate_and_clip no longer sums the replicas' gradients before clipping "
           "(reached under Mirrored with clipping or a loss scale; the test compares clipped "
           "Mirrored training with one device)"),
    Mutant("fused-backward", "trainer/models/fused_lstm.py",
           r"d_c = d_c_new \* f\b",
           "d_c = d_c_new",
           ("tests/models/test_fused_lstm.py", "-k", "finite_differences or matches_keras"),
           "the fused LSTM backward pass forgets the forget gate on the cell-state path"),
    Mutant("text-left-padded", "trainer/tasks/text_classification.py",
           r"return np\.asarray\(self\.vectorizer\(tf\.constant\(texts\)\), dtype=np\.int32\)",
           "return np.asarray(self.vectorizer(tf.constant(texts)), dtype=np.int32)[:, ::-1]",
           ("tests/data/test_text_data.py", "-k", "integer_labels"),
           "token ids left-padded instead of right-padded"),
    Mutant("task-flag-ignored", "trainer/experiment.py",
           r"name = task or _task_name_from\(layers\)",
           "name = _task_name_from(layers)",
           ("tests/cli/test_config.py", "-k", "task_flag"),
           "experiment.load ignores its task argument and uses the default task"),
    Mutant("toy-dates-two-formats", "trainer/data/parallel.py",
           r"_DATE_FORMATS\[int\(rng\.integers\(len\(_DATE_FORMATS\)\)\)\]",
           "_DATE_FORMATS[int(rng.integers(len(_DATE_FORMATS))) % 2]",
           ("tests/data/test_parallel_data.py", "-k", "toy_dates"),
           "the toy date corpus uses two surface forms instead of ten"),
    Mutant("batch-not-split", "trainer/distribute.py",
           r"return global_batch // replicas",
           "return global_batch",
           ("tests/cluster/test_distribute.py", "-k", "batch_size"),
           "check_batch_size returns the global batch as the per-replica batch"),
    Mutant("cosine-floor", "trainer/runner.py",
           r"alpha=0\.0, warmup_target",
           "alpha=0.1, warmup_target",
           ("tests/run/test_optimizers.py", "-k", "schedules"),
           "the cosine schedule decays to 10% of the learning rate instead of 0"),
    Mutant("adamw-without-decay", "trainer/runner.py",
           r"keras\.optimizers\.AdamW\(lr, weight_decay=t\.weight_decay\)",
           "keras.optimizers.AdamW(lr)",
           ("tests/run/test_optimizers.py", "-k", "formula"),
           "train.weight_decay is not passed to AdamW"),
    Mutant("evaluator-trains", "trainer/cli.py",
           r'(nothing to do here\."\)\n)(\s+)return\n',
           r'\1\2pass\n',
           ("tests/cluster/test_distribute.py", "-k", "evaluator"),
           "the evaluator role goes on to train instead of exiting"),
    Mutant("credentials-principal-lost", "trainer/gcs.py",
           r'principal = getattr\(credentials, "service_account_email", None\) or "these credentials"',
           'principal = "these credentials"',
           ("tests/storage/test_gcs_tools.py", "-k", "service_account"),
           "errors no longer name the service account the key file loaded"),
    Mutant("credentials-skip-auth", "trainer/gcs.py",
           r'return gcs_storage\.Client\(project=project, credentials=credentials\), principal',
           "from google.auth.credentials import AnonymousCredentials\n"
           "    return gcs_storage.Client(project=project, credentials=AnonymousCredentials()), "
           "principal",
           ("tests/storage/test_gcs_tools.py", "-k", "service_account"),
           "the loaded credentials are not used for GCS requests"),
    Mutant("logsync-own-sigterm-handler", "trainer/logsync.py",
           r"(def __enter__\(self\) -> \"LogSync\":\n)",
           r"\1        import signal; signal.signal(signal.SIGTERM, lambda *a: None)\n",
           ("tests/run/test_logsync.py", "-k", "one_owner"),
           "LogSync installs a SIGTERM handler of its own again"),
    Mutant("logsync-not-registered", "trainer/logsync.py",
           r"stop_signal\.on_forced_exit\(self\.final_sync\)",
           "pass",
           ("tests/run/test_logsync.py", "-k", "forced_exit"),
           "LogSync no longer registers its final upload with the preemption watchdog"),
    Mutant("profile-window-not-split", "trainer/profiling.py",
           r"for edge in \(self\.first - 1, self\.last\)",
           "for edge in (self.last,)",
           ("tests/run/test_profiling.py", "-k", "exactly_the_window"),
           "the outer loop no longer splits after step A-1, so the trace misses step A (or "
           "holds steps before it)"),
    Mutant("predict-probabilities-misordered", "trainer/serving/classifier.py",
           r'\[float\(p\) for p in out\["probability"\]\.numpy\(\)\]',
           '[float(p) for p in out["probability"].numpy()][::-1]',
           ("tests/run/test_train.py", "-k", "predict_and_evaluate"),
           "`seqtrain predict` pairs each text with another text's probability (the old "
           "0.5 <= p <= 1 range check could not see it)"),
    Mutant("lost-peer-not-retryable", "trainer/distribute.py",
           r"except PEER_ERRORS as e:",
           "except () as e:",
           ("tests/cluster/test_lost_peer.py", "-k", "worker-1"),
           "a killed peer ends the survivor with a traceback and exit 1 instead of the "
           "retryable 144"),
]


def _copy(dest: str) -> None:
    shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", ".venv", ".pytest_cache", "*.egg-info"))


def stale(m: Mutant, root: str = REPO) -> str | None:
    """Why the mutant no longer applies to the code under `root` (None if it applies)."""
    path = os.path.join(root, m.file)
    if not os.path.exists(path):
        return f"{m.file} does not exist"
    for arg in m.tests:  # a moved test file: caught by --check, not first by a full run
        test_file = arg.split("::")[0]
        if test_file.startswith("tests/") and not os.path.exists(os.path.join(root, test_file)):
            return f"its test {test_file} does not exist"
    with open(path, encoding="utf-8") as f:
        hits = len(re.findall(m.pattern, f.read()))
    return None if hits == 1 else f"pattern {m.pattern!r} matches {hits} times in {m.file}"


def run_mutant(m: Mutant, timeout: int) -> tuple[str, str]:
    """Returns (status, detail)."""
    with tempfile.TemporaryDirectory(prefix=f"mutant-{m.name}-") as tmp:
        copy = os.path.join(tmp, "repo")
        _copy(copy)
        why = stale(m, copy)
        if why:
            return "STALE", why
        path = os.path.join(copy, m.file)
        source = open(path).read()
        with open(path, "w") as f:
            f.write(re.sub(m.pattern, m.replacement, source))
        env = dict(os.environ, PYTHONPATH=copy, PYTHONDONTWRITEBYTECODE="1")
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-n", "0", "-p", "no:cacheprovider",
               *m.tests]
        try:
            proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return "ERROR", f"timed out after {timeout} s"
        summary = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
        if proc.returncode == 0:
            return "SURVIVED", summary
        if proc.returncode == 1:
            failed = [ln for ln in proc.stdout.splitlines() if ln.startswith("FAILED")]
            why = [ln.strip() for ln in proc.stdout.splitlines() if ln.startswith("E  ")]
            return "killed", "\n         ".join(
                [failed[0] if failed else summary] + [w[:200] for w in why[:2]])
        return "ERROR", f"pytest exited {proc.returncode}: {summary}\n{proc.stderr[-1500:]}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only this mutant (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--check", action="store_true",
                        help="only check that every mutant still applies (no tests run)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per mutant")
    args = parser.parse_args(argv)
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:30s} {m.file}: {m.what}")
        return 0
    if args.check:
        problems = [f"STALE    {m.name}: {why}" for m in MUTANTS if (why := stale(m))]
        print("\n".join(problems) or f"all {len(MUTANTS)} mutants apply")
        return 1 if problems else 0
    unknown = set(args.only) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"--only {sorted(unknown)}: no such mutant; known: "
                     f"{', '.join(m.name for m in MUTANTS)}")
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    results = []
    for m in chosen:
        t0 = time.monotonic()
        status, detail = run_mutant(m, args.timeout)
        results.append(status)
        print(f"{status:8s} {m.name:30s} {time.monotonic() - t0:6.0f} s  "
              f"[{' '.join(m.tests)}]\n         {detail}", flush=True)
    bad = [s for s in results if s != "killed"]
    print(f"\n{len(results) - len(bad)} of {len(results)} mutants killed"
          + (f"; {len(bad)} not: {sorted(set(bad))}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
