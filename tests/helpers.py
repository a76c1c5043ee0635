"""The checks many tests share: one implementation each.

* `seqtrain(...)`: the CLI in a fresh process, from a given working directory;
* `checkpoint_values` / `assert_checkpoints_equal`: bitwise comparison of two
  runs' saved state (model, optimizer slots, step, RNG states);
* `assert_resume_is_exact`: a run cut with `--stop-at` and resumed equals an
  uninterrupted one, bit for bit;
* `read_scalars`: event-file scalars through `trainer.summaries.read_scalars`;
* `run_without_trainer`: code (loading an export) in a fresh interpreter that
  must never import `trainer`;
* `tree_hash`, `assert_user_error`, `user_error`: exit 2, one paragraph naming
  the problem, no traceback, model dir byte-for-byte unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from trainer import summaries
from trainer.errors import EXIT_USER_ERROR

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Quiet TF logs in subprocesses; never let a test touch a real GPU/TPU or cloud.
BASE_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "CUDA_VISIBLE_DEVICES": "",
    "PYTHONUNBUFFERED": "1",
}

MIRRORED = ["--set", "runtime.strategy=mirrored", "--set", "runtime.cpu_replicas=2"]


# ------------------------------------------------------------------ processes
def cli_env(extra: dict | None = None) -> dict:
    """The environment of a CLI subprocess: this checkout first on the path, no cluster."""
    env = dict(os.environ)
    env.pop("TF_CONFIG", None)
    env.pop("TPU_NAME", None)
    # Importing trainer in this process set it; the CLI must set it itself.
    env.pop("TF_CPU_ALLOCATOR_USE_BFC", None)
    env.update(BASE_ENV)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    if extra:
        env.update(extra)
    return env


def seqtrain(*args: str, env: dict | None = None, check: bool = True, timeout: int = 600,
             cwd: str | os.PathLike | None = None, input_text: str | None = None,
             memory_gib: int | None = None) -> subprocess.CompletedProcess:
    """Runs `seqtrain ARGS` in a fresh Python process from `cwd` (default: the repo),
    with `input_text` on its standard input and, if given, its address space capped at
    `memory_gib` (RLIMIT_AS: a real allocation failure, without loading the machine)."""
    def cap_memory():
        limit = memory_gib * 2**30
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = subprocess.run(
        [sys.executable, "-m", "trainer.cli", *map(str, args)],
        env=cli_env(env), capture_output=True, text=True, timeout=timeout,
        cwd=str(cwd) if cwd else REPO, input=input_text,
        preexec_fn=cap_memory if memory_gib else None,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"seqtrain {' '.join(map(str, args))} (cwd {cwd or REPO}) exited {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


run_cli_process = seqtrain  # the name older tests import from conftest


def run_without_trainer(code: str, *args: str, timeout: int = 180) -> dict:
    """Runs `code` in a new interpreter with no `trainer` on the path, from `/`.

    `code` prints one JSON line last; it is returned parsed. Fails if `trainer`
    got imported along the way (an export must load with TensorFlow alone).
    """
    env = cli_env()
    env.pop("PYTHONPATH", None)
    check = ("\nimport sys as _sys\n"
             "if 'trainer' in _sys.modules: raise SystemExit('trainer was imported')\n")
    proc = subprocess.run([sys.executable, "-c", code + check, *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd="/")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- checkpoints
NOT_STATE = ("save_counter", "_CHECKPOINTABLE", "iterator")


def ckpt(run: str | os.PathLike, step: int) -> str:
    """The prefix of checkpoint `step` of the run in `run`."""
    return os.path.join(str(run), "checkpoints", f"ckpt-{step}")


def checkpoint_values(path: str | os.PathLike, exclude=NOT_STATE) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint (a prefix, or a dir: its latest) but `exclude`d prefixes."""
    reader = tf.train.load_checkpoint(str(path))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if not name.startswith(exclude)}


def assert_checkpoints_equal(a, b, must_have=("optimizer",), exclude=NOT_STATE) -> dict:
    """Checkpoints `a` and `b` hold the same names and bit-identical values.

    `must_have`: name fragments that must occur (e.g. "rng" for dropout state),
    so an empty or partial checkpoint cannot pass. Returns `a`'s values.
    """
    va = a if isinstance(a, dict) else checkpoint_values(a, exclude)
    vb = b if isinstance(b, dict) else checkpoint_values(b, exclude)
    assert va, f"no tensors in {a}"
    assert sorted(va) == sorted(vb), (sorted(set(va) ^ set(vb)))
    for fragment in must_have:
        assert any(fragment in name for name in va), (fragment, sorted(va))
    differ = [name for name in sorted(va) if not _bitwise_equal(va[name], vb[name])]
    assert not differ, f"{len(differ)} of {len(va)} tensors differ: {differ[:8]}"
    return va


def _bitwise_equal(x, y) -> bool:
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    if x.dtype == object:
        return x.tolist() == y.tolist()
    return x.tobytes() == y.tobytes()


def assert_resume_is_exact(args, *, steps: int, stop_at: int, cut: str, straight: str,
                           cwd=None, env=None, must_have=("optimizer",)) -> dict:
    """Trains `args` straight to `steps` in `straight`; in `cut`, stops at `stop_at` then
    resumes to the end. The final checkpoints must be bitwise equal. Both model dirs
    may be relative to `cwd`. Returns the processes' stdout by leg."""
    args = [str(a) for a in args]
    out = {"straight": seqtrain(*args, "--model-dir", straight, cwd=cwd, env=env).stdout,
           "first": seqtrain(*args, "--model-dir", cut, "--stop-at", stop_at, cwd=cwd,
                             env=env).stdout}
    assert f"stopped at step {stop_at} of {steps}" in out["first"], out["first"][-2000:]
    out["resume"] = seqtrain(*args, "--model-dir", cut, cwd=cwd, env=env).stdout
    assert f"at step {stop_at}" in out["resume"] and "resumed from" in out["resume"], \
        out["resume"][-2000:]
    base = Path(cwd or REPO)
    assert_checkpoints_equal(ckpt(base / cut, steps), ckpt(base / straight, steps),
                             must_have=must_have)
    return out


# -------------------------------------------------------------------- events
def read_scalars(log_dir: str | os.PathLike, tag: str) -> dict[int, float]:
    """{step: value} of `tag` from every event file in `log_dir` (the trainer's own reader)."""
    return summaries.read_scalars(str(log_dir), tag)


# --------------------------------------------------------------- user errors
# TensorFlow's import logs these before absl is initialized; TF_CPP_MIN_LOG_LEVEL
# cannot silence them (FACTS.md), so they are not part of our message. Nor are
# Python warnings raised by libraries on import (google.api_core's FutureWarning
# about Python 3.11's end of life): a `file:line: XWarning: ...` line and the
# indented source line after it.
_TF_NOISE = re.compile(r"^(WARNING: All log messages before absl|[IWEF]\d{4} \d\d:\d\d:)")
_PY_WARNING = re.compile(r"^\S+:\d+: \w*Warning: ")


def _our_lines(err: str) -> list[str]:
    lines, skip_source = [], False
    for line in err.splitlines():
        if skip_source and line.startswith("  "):
            skip_source = False
            continue
        skip_source = bool(_PY_WARNING.match(line))
        if not skip_source and not _TF_NOISE.match(line):
            lines.append(line)
    return lines


def tree_hash(path: str | os.PathLike) -> dict | None:
    """{relative path: sha256 or 'dir'} of everything under `path`; None if it is absent."""
    path = Path(path)
    if not path.exists():
        return None
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)):
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(path.rglob("*"))}


def assert_user_error(code: int, out: str, err: str, expect=()) -> str:
    """Exit 2; stderr is one paragraph starting 'Error: ' holding every `expect`ed
    fragment; no traceback anywhere. Returns the message."""
    assert code == EXIT_USER_ERROR, (code, out[-2000:], err[-3000:])
    assert "Traceback" not in err and "Traceback" not in out, err[-3000:]
    ours = _our_lines(err)
    while ours and not ours[-1].strip():
        ours.pop()
    assert ours and ours[0].startswith("Error: "), err[-3000:]
    assert all(line.strip() for line in ours), f"more than one paragraph:\n{err}"
    message = "\n".join(ours)
    for fragment in expect:
        assert fragment in message, (fragment, message)
    return message


def user_error(*args: str, model_dir=None, expect=(), cwd=None, env=None,
               memory_gib: int | None = None) -> str:
    """Runs `seqtrain ARGS` expecting a user error; `model_dir` (if given) must be left
    exactly as it was (absent stays absent). Returns the message."""
    where = Path(cwd or REPO) / model_dir if model_dir is not None else None
    before = tree_hash(where) if where is not None else None
    proc = seqtrain(*args, cwd=cwd, env=env, check=False, memory_gib=memory_gib)
    message = assert_user_error(proc.returncode, proc.stdout, proc.stderr, expect)
    if where is not None:
        assert tree_hash(where) == before, f"{where} was modified by a failed start"
    return message
