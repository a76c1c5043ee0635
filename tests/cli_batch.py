"""Runs several `seqtrain` command lines in one process, each in its own working directory.

Usage: python tests/cli_batch.py CASES.json RESULTS.json

CASES.json is a list of {"argv": [...], "cwd": DIR, "stdin": TEXT}. Each case goes
through `trainer.cli:main`, the function behind the `seqtrain` console script,
exactly as the console script calls it (`sys.argv` parsing, `sys.exit` codes). One
process for many cases saves TensorFlow's start-up per case; an exception escaping
`main` is recorded with its traceback, as the console script would print it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import traceback


def run_one(main, case: dict) -> dict:
    out, err = io.StringIO(), io.StringIO()
    old_cwd, old_stdin = os.getcwd(), sys.stdin
    os.chdir(case["cwd"])
    sys.stdin = io.StringIO(case.get("stdin", ""))
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(args=case["argv"], prog_name="seqtrain")
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:  # noqa: BLE001  (what the console script would show)
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(old_cwd)
        sys.stdin = old_stdin
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def main_batch(cases_path: str, results_path: str) -> None:
    from trainer.cli import main

    with open(cases_path) as f:
        cases = json.load(f)
    results = [run_one(main, case) for case in cases]
    with open(results_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main_batch(sys.argv[1], sys.argv[2])
