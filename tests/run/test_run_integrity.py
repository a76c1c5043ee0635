"""Run integrity as users meet it: `seqtrain` in a subprocess, from a temporary working
directory, with relative paths; two writers; signals; damaged run dirs; a full disk.

Every comparison of a resumed run is bitwise against an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import yaml

from helpers import assert_checkpoints_equal, checkpoint_values, cli_env, tree_hash

TINY = [
    "--set", "train.batch_size=8", "--set", "train.steps_per_loop=2",
    "--set", "train.checkpoint_every=4", "--set", "train.eval_every=1000",
    "--set", "train.log_every=2", "--set", "train.eval_batches=1", "--set", "model.units=8",
    "--set", "model.dropout=0.2", "--set", "data.vocab_size=64", "--set", "data.sequence_length=12",
]


def seqtrain(cwd, *args, check=True, timeout=300):
    proc = subprocess.run([sys.executable, "-m", "trainer.cli", *args], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"seqtrain {' '.join(args)} exited {proc.returncode}\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def start(cwd, *args):
    return subprocess.Popen([sys.executable, "-m", "trainer.cli", *args], cwd=cwd, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(proc, prefix, timeout=180):
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        if line.startswith(prefix):
            return line
        assert time.monotonic() < deadline, f"no line starting {prefix!r}"
    raise AssertionError(f"process ended before a line starting {prefix!r}: "
                         f"{proc.stderr.read()[-3000:]}")


def weights(ckpt_prefix) -> dict:
    return checkpoint_values(ckpt_prefix)


def assert_bitwise(a, b):
    assert_checkpoints_equal(a, b, must_have=("optimizer", "rng"))


def clean_error(proc):
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def test_relative_dotdot_and_symlinked_model_dirs_resume_bitwise(tmp_path):
    """The README's `--model-dir runs/a`, resumed with nothing but --model-dir."""
    steps = ["--set", "train.steps=8", *TINY]
    seqtrain(tmp_path, "train", "--model-dir", "runs/reference", *steps)

    first = seqtrain(tmp_path, "train", "--model-dir", "runs/a", *steps, "--stop-at", "4")
    assert "stopped at step 4 of 8" in first.stdout
    resumed = seqtrain(tmp_path, "train", "--model-dir", "runs/a")  # config.yaml is the base
    assert "resumed from runs/a/checkpoints/ckpt-4 at step 4" in resumed.stdout
    assert_bitwise(tmp_path / "runs/reference/checkpoints/ckpt-8",
                   tmp_path / "runs/a/checkpoints/ckpt-8")

    # Stopped through one relative path, resumed through `../` and a symlink.
    seqtrain(tmp_path, "train", "--model-dir", "./runs/b", *steps, "--stop-at", "4")
    os.symlink(tmp_path / "runs" / "b", tmp_path / "link-b")
    (tmp_path / "sub").mkdir()
    resumed = seqtrain(tmp_path / "sub", "train", "--model-dir", "../link-b")
    assert "resumed from ../link-b/checkpoints/ckpt-4 at step 4" in resumed.stdout
    assert_bitwise(tmp_path / "runs/reference/checkpoints/ckpt-8",
                   tmp_path / "runs/b/checkpoints/ckpt-8")
    assert not (tmp_path / "runs/b/lease.json").exists()


def test_a_second_writer_is_refused_and_a_killed_holder_is_taken_over(tmp_path):
    args = ["train", "--model-dir", "runs/shared", "--set", "train.steps=1000000",
            "--set", "train.checkpoint_every=20", *TINY[4:]]
    holder = start(tmp_path, *args)
    try:
        wait_for_line(holder, "step ")
        before = time.monotonic()
        second = seqtrain(tmp_path, *args, check=False)
        message = clean_error(second)
        assert time.monotonic() - before < 60
        assert f"pid {holder.pid}" in message and "in use by another writer" in message
        assert holder.poll() is None  # the first writer was not disturbed
        lease = json.loads((tmp_path / "runs/shared/lease.json").read_text())
        assert lease["pid"] == holder.pid
        while not list((tmp_path / "runs/shared/checkpoints").glob("ckpt-*.index")):
            time.sleep(0.2)
    finally:
        holder.kill()  # kill -9: the lease file stays, its lock dies with the process
        holder.communicate()
    assert (tmp_path / "runs/shared/lease.json").exists()
    # Take over: resume to the next checkpoint boundary and stop there.
    ckpts = sorted(int(p.name[5:-6]) for p in
                   (tmp_path / "runs/shared/checkpoints").glob("ckpt-*.index"))
    again = seqtrain(tmp_path, "train", "--model-dir", "runs/shared",
                     "--stop-at", str(ckpts[-1] + 2))
    assert "taking over the lease" in again.stderr
    assert f"at step {ckpts[-1]}" in again.stdout
    assert not (tmp_path / "runs/shared/lease.json").exists()


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_inside_a_long_compiled_loop_saves_and_resumes_bitwise(tmp_path, sig, code):
    """One compiled loop of 100000 steps: the stop must land at the next step, not the
    end of the loop, and the exit must come within the grace period."""
    run = ["--set", "train.steps=1000000", "--set", "train.steps_per_loop=100000",
           "--set", "train.checkpoint_every=1000000", "--set", "runtime.preemption_grace_secs=15",
           *TINY[4:]]
    proc = start(tmp_path, "train", "--model-dir", "runs/p", *run)
    wait_for_line(proc, "seqtrain: text_classification in runs/p")
    time.sleep(4)
    sent = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    took = time.monotonic() - sent
    assert proc.returncode == code, err[-3000:]
    assert took < 15, f"exit took {took:.1f} s, beyond the 15 s grace"
    assert "Traceback" not in err and f"{signal.Signals(sig).name} received" in err
    saved = tf.train.latest_checkpoint(str(tmp_path / "runs/p/checkpoints"))
    assert saved is not None
    k = int(saved.rsplit("-", 1)[1])
    assert 0 < k < 100000  # stopped inside the first loop
    if sig == signal.SIGINT:
        return
    resumed = seqtrain(tmp_path, "train", "--model-dir", "runs/p", "--stop-at", str(k + 3))
    assert f"resumed from runs/p/checkpoints/ckpt-{k} at step {k}" in resumed.stdout
    seqtrain(tmp_path, "train", "--model-dir", "runs/straight", *run, "--stop-at", str(k + 3))
    assert_bitwise(tmp_path / f"runs/straight/checkpoints/ckpt-{k + 3}",
                   tmp_path / f"runs/p/checkpoints/ckpt-{k + 3}")


def test_lost_checkpoints_are_refused_not_restarted_and_nothing_is_written(tmp_path):
    seqtrain(tmp_path, "train", "--model-dir", "runs/r", "--set", "train.steps=12", *TINY,
             "--stop-at", "8")
    for f in (tmp_path / "runs/r/checkpoints").iterdir():
        f.unlink()
    before = tree_hash(tmp_path / "runs/r")
    proc = seqtrain(tmp_path, "train", "--model-dir", "runs/r", check=False)
    message = clean_error(proc)
    assert "checkpoint at step 8" in message and "runtime.json" in message
    assert "step 0" in message and "Delete" not in message
    assert tree_hash(tmp_path / "runs/r") == before


def test_damaged_newest_checkpoint_falls_back_with_a_warning_and_leftovers_go(tmp_path):
    seqtrain(tmp_path, "train", "--model-dir", "runs/d", "--set", "train.steps=12", *TINY,
             "--stop-at", "8")
    (tmp_path / "runs/d/checkpoints/ckpt-8.index").write_bytes(b"garbage")
    (tmp_path / "runs/d/checkpoints/checkpoint").write_text("")
    (tmp_path / "runs/d/export.tmp-0123abcd").mkdir()  # a kill during an export
    proc = seqtrain(tmp_path, "train", "--model-dir", "runs/d", "--stop-at", "10")
    assert "resumed from runs/d/checkpoints/ckpt-4 at step 4" in proc.stdout
    assert "ckpt-8 is unreadable" in proc.stderr
    assert not (tmp_path / "runs/d/export.tmp-0123abcd").exists()
    assert (tmp_path / "runs/d/checkpoints/ckpt-10.index").exists()


def test_a_changed_learning_rate_takes_effect_on_resume(tmp_path):
    seqtrain(tmp_path, "train", "--model-dir", "runs/lr", "--set", "train.steps=8", *TINY,
             "--stop-at", "4")
    seqtrain(tmp_path, "train", "--model-dir", "runs/lr", "--set", "train.learning_rate=0")
    assert "learning_rate: 0" in (tmp_path / "runs/lr/config.yaml").read_text()
    a = weights(tmp_path / "runs/lr/checkpoints/ckpt-4")
    b = weights(tmp_path / "runs/lr/checkpoints/ckpt-8")
    assert float(b["optimizer/_learning_rate/.ATTRIBUTES/VARIABLE_VALUE"]) == 0.0
    model = [n for n in a if n.startswith("optimizer/_trainable_variables/")]
    assert len(model) >= 4
    for name in model:  # Adam with a zero learning rate moves nothing
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_a_full_disk_is_exit_2_and_the_older_checkpoint_stays(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI and these machines run as root)")
    args = ["--set", "train.steps=40", *TINY, "--set", "train.keep_checkpoints=10"]
    seqtrain(tmp_path, "train", "--model-dir", "probe", *args, "--stop-at", "4")
    used = sum(p.stat().st_size for p in (tmp_path / "probe").rglob("*") if p.is_file())
    ckpt = sum(p.stat().st_size for p in (tmp_path / "probe/checkpoints").glob("ckpt-4.*"))
    mnt = tmp_path / "small"
    mnt.mkdir()
    size_kib = (used + ckpt // 2) // 1024 + 64
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(mnt)],
                   check=True)
    try:
        proc = seqtrain(tmp_path, "train", "--model-dir", "small/run", *args, check=False)
        message = clean_error(proc)
        assert "small/run" in message and "MiB free" in message
        saved = tf.train.latest_checkpoint(str(mnt / "run/checkpoints"))
        assert saved is not None and saved.endswith("ckpt-4")
        tf.train.load_checkpoint(saved)  # readable
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_peer_that_never_starts_exits_144_after_cluster_wait_secs(tmp_path):
    """MultiWorkerMirrored blocks holding the GIL until all workers join; the wait is
    reported and bounded without Python threads (a reporter process and a C timer)."""
    from trainer.launch import free_ports

    ports = free_ports(2)
    tf_config = {"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                 "task": {"type": "worker", "index": 0}}
    env = cli_env({"TF_CONFIG": json.dumps(tf_config)})
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "trainer.cli", "train", "--model-dir", "runs/mw",
                           "--set", "train.steps=4", "--set", "runtime.cluster_wait_secs=12"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    took = time.monotonic() - t0
    assert proc.returncode == 144, proc.stderr[-3000:]
    assert f"waiting for workers localhost:{ports[1]}" in proc.stderr
    assert "gave up waiting for workers after 12 s" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert took >= 12


def test_a_vertex_split_run_is_found_by_every_command_from_its_model_dir(tmp_path):
    """Vertex AI puts checkpoints and logs beside the model dir (AIP_*); runtime.json
    records where, so evaluate, runs list and a manual resume find them."""
    env = {"AIP_MODEL_DIR": "base/model", "AIP_CHECKPOINT_DIR": "base/checkpoints",
           "AIP_TENSORBOARD_LOG_DIR": "base/logs"}
    args = ["--set", "train.steps=8", *TINY]
    proc = subprocess.run([sys.executable, "-m", "trainer.cli", "train", *args, "--stop-at", "4"],
                          cwd=tmp_path, env=cli_env(env), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "base/checkpoints/ckpt-4.index").exists()
    assert not (tmp_path / "base/model/checkpoints").exists()
    evaluated = seqtrain(tmp_path, "evaluate", "--model-dir", "base/model")
    assert "step 4 (base/checkpoints/ckpt-4)" in evaluated.stdout
    listed = seqtrain(tmp_path, "runs", "list", "base", "--json")
    assert json.loads(listed.stdout.splitlines()[0])["step"] == 4
    resumed = seqtrain(tmp_path, "train", "--model-dir", "base/model")
    assert "resumed from base/checkpoints/ckpt-4 at step 4" in resumed.stdout
    assert (tmp_path / "base/checkpoints/ckpt-8.index").exists()


def test_a_run_from_before_a_new_data_key_resumes_at_its_default_and_refuses_another(tmp_path):
    """config.yaml of a run written before `data.vocab_sample_mb` existed lacks the key:
    the default reproduces what that version did, so the resume goes on; another value
    would train on other ids and is refused."""
    from trainer import experiment, run_dir
    from trainer.errors import UserError

    cfg = experiment.load("text_generation")
    older = cfg.to_dict()
    del older["data"]["vocab_sample_mb"]
    (tmp_path / run_dir.CONFIG).write_text(yaml.safe_dump(older, sort_keys=False))
    assert run_dir.RunDir(str(tmp_path)).inspect(cfg) is not None
    with pytest.raises(UserError, match=r"data\.vocab_sample_mb: None -> 1"):
        run_dir.RunDir(str(tmp_path)).inspect(
            experiment.load("text_generation", overrides=["data.vocab_sample_mb=1"]))


def test_a_diverged_run_stops_before_saving_and_resumes_from_the_last_good_checkpoint(tmp_path):
    """Non-finite weights are never checkpointed: exit 2 naming the rate, the checkpoints
    byte for byte as they were, and a resume with a sane rate continues from them."""
    series = ["--task", "forecasting", "--set", "model.units=8", "--set", "model.layers=1",
              "--set", "train.steps=12", "--set", "train.eval_every=1000",
              "--set", "train.checkpoint_every=4", "--set", "train.steps_per_loop=2",
              "--set", "data.window=8", "--set", "data.synthetic_length=300",
              "--set", "train.optimizer=sgd"]
    seqtrain(tmp_path, "train", "--model-dir", "runs/nan", *series, "--stop-at", "4")
    before = tree_hash(tmp_path / "runs/nan/checkpoints")
    blown = seqtrain(tmp_path, "train", "--model-dir", "runs/nan",
                     "--set", "train.learning_rate=1e9", check=False)
    msg = clean_error(blown)
    assert "training diverged" in msg and "are no longer finite" in msg, msg
    assert "the last checkpoint, step 4, is as it was" in msg and "1000000000.0" in msg, msg
    assert tree_hash(tmp_path / "runs/nan/checkpoints") == before
    json.loads((tmp_path / "runs/nan/runtime.json").read_text())  # strict JSON still
    again = seqtrain(tmp_path, "train", "--model-dir", "runs/nan",
                     "--set", "train.learning_rate=0.01")
    assert "resumed from runs/nan/checkpoints/ckpt-4 at step 4" in again.stdout
    assert "finished at step 12" in again.stdout


def test_json_records_write_a_non_finite_number_as_null(tmp_path):
    """metrics.json and runtime.json stay strict JSON (readable by any parser) when an eval
    metric is NaN or infinite."""
    from trainer import storage

    storage.write_json(str(tmp_path / "m.json"),
                       {"metrics": {"mse": float("nan"), "skill": float("-inf")},
                        "steps": [1.5, float("inf")], "step": 4})

    def strict(name):
        raise ValueError(name)

    record = json.loads((tmp_path / "m.json").read_text(), parse_constant=strict)
    assert record == {"metrics": {"mse": None, "skill": None}, "steps": [1.5, None], "step": 4}


@pytest.mark.parametrize("change", [["train.lr_schedule=cosine"], ["train.warmup_steps=2"]])
def test_switching_a_constant_rate_to_a_schedule_on_resume_is_refused_by_name(tmp_path, change):
    """The README lets a resume change the rate; a constant rate is a checkpointed variable
    and a schedule is not, so that one switch is refused before anything is written."""
    seqtrain(tmp_path, "train", "--model-dir", "runs/sched", "--set", "train.steps=8", *TINY,
             "--stop-at", "2")
    before = tree_hash(tmp_path / "runs/sched")
    proc = seqtrain(tmp_path, "train", "--model-dir", "runs/sched",
                    *[a for c in change for a in ("--set", c)], check=False)
    msg = clean_error(proc)
    key, value = change[0].split("=")
    assert f"{key}: " in msg and "a resume cannot switch between them" in msg, msg
    assert "does not match the model" not in msg
    assert tree_hash(tmp_path / "runs/sched") == before
