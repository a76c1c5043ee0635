"""Signal paths the other tests do not reach: the grace-period watchdog, and two workers
agreeing on one stop step when only one of them is signalled."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import tensorflow as tf

from helpers import cli_env


def _children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(c) for c in f.read().split()]
    return out


def test_the_watchdog_exits_within_the_grace_when_a_step_outlasts_it(tmp_path):
    """A step that takes longer than runtime.preemption_grace_secs: the process says so and
    exits 143 before the node's SIGKILL would; the earlier checkpoint stays readable."""
    args = ["train", "--task", "text_generation", "--model-dir", "runs/slow",
            "--set", "data.seq_len=600", "--set", "train.batch_size=512",
            "--set", "train.steps=1000", "--set", "train.steps_per_loop=1",
            "--set", "train.checkpoint_every=1", "--set", "train.eval_every=1000",
            "--set", "runtime.preemption_grace_secs=1", "--set", "runtime.jit_compile=false"]
    proc = subprocess.Popen([sys.executable, "-m", "trainer.cli", *args], cwd=tmp_path,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    for line in proc.stdout:
        if line.startswith("first step after"):
            break
    # Step 1 is saved (checkpoint_every=1); then step 2, seconds long, runs.
    index = tmp_path / "runs/slow/checkpoints/ckpt-1.index"
    while not index.exists():
        time.sleep(0.05)
    time.sleep(1.0)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    took = time.monotonic() - sent
    assert proc.returncode == 143, err[-3000:]
    assert took < 3, f"exited {took:.1f} s after SIGTERM with a 1 s grace"
    assert "could not stop and save within runtime.preemption_grace_secs=1 s" in err
    saved = tf.train.latest_checkpoint(str(tmp_path / "runs/slow/checkpoints"))
    assert saved is not None and saved.endswith("ckpt-1")
    assert "resumes from runs/slow/checkpoints/ckpt-1" in err  # names what a restart resumes
    tf.train.load_checkpoint(saved)


def test_two_workers_stop_at_the_same_step_when_only_one_is_signalled(tmp_path):
    args = ["launch", "--workers", "2", "--", "train", "--model-dir", "runs/mw",
            "--set", "train.steps=100000", "--set", "train.steps_per_loop=10000",
            "--set", "train.checkpoint_every=100000", "--set", "train.eval_every=100000",
            "--set", "train.batch_size=8", "--set", "model.units=8",
            "--set", "runtime.preemption_grace_secs=20"]
    launcher = subprocess.Popen([sys.executable, "-m", "trainer.cli", *args], cwd=tmp_path,
                                env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    lines = []
    for line in launcher.stdout:
        lines.append(line)
        if "seqtrain: text_classification in runs/mw" in line and "worker-1" in line:
            break
    time.sleep(5)  # inside the first 10000-step compiled loop on both workers
    workers = _children(launcher.pid)
    assert len(workers) == 2
    tf_configs = {}
    for pid in workers:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        tf_configs[pid] = env[b"TF_CONFIG"]
    worker1 = next(pid for pid, cfg in tf_configs.items() if b'"index": 1' in cfg)
    os.kill(worker1, signal.SIGTERM)  # only worker 1 is preempted
    rest, _ = launcher.communicate(timeout=180)
    out = "".join(lines) + rest
    assert launcher.returncode == 143, out[-4000:]
    stops = re.findall(r"\[worker-(\d)\] seqtrain: stopped by SIGTERM at step (\d+)", out)
    assert sorted(w for w, _ in stops) == ["0", "1"], out[-4000:]
    assert len({s for _, s in stops}) == 1  # one step for both
    step = int(stops[0][1])
    assert 0 < step < 10000  # inside the loop, not at its end
    assert "received by another worker" in out
    assert (tmp_path / f"runs/mw/checkpoints/ckpt-{step}.index").exists()
