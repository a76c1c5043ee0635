"""End to end: train, resume, export under the default, Mirrored and MultiWorker strategies.

Everything is real: subprocesses running the CLI, 2 logical CPU devices for
Mirrored, 2 worker processes on loopback for MultiWorkerMirrored, checkpoints
and event files on disk read back with TF's and TensorBoard's own readers.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from helpers import (assert_checkpoints_equal, ckpt, read_scalars, run_cli_process,
                     run_without_trainer)

COMMON = [
    "--set", "train.steps=10", "--set", "train.batch_size=8", "--set", "train.steps_per_loop=2",
    "--set", "train.checkpoint_every=4", "--set", "train.eval_every=10", "--set", "train.log_every=2",
    "--set", "train.eval_batches=2", "--set", "model.units=8",
    "--set", "data.vocab_size=64", "--set", "data.sequence_length=12",
]
# Dropout on, so exact resume must also restore the dropout RNG state.
DROPOUT = ["--set", "model.dropout=0.25"]
MIRRORED = ["--set", "runtime.cpu_replicas=2"]


def _train(model_dir, *extra, env=None):
    return run_cli_process("train", "--model-dir", str(model_dir), *COMMON, *extra, env=env)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs per strategy, built once per module.

    `<strategy>` is an uninterrupted run without dropout (dropout masks are
    drawn per replica, so with dropout the strategies legitimately diverge);
    `<strategy>-full` / `<strategy>-resumed` are the same run with dropout,
    uninterrupted and cut at step 5 then resumed.
    """
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, extra in (("default", []), ("mirrored", MIRRORED)):
        out[name] = root / name
        _train(out[name], *extra)
        full, cut = root / f"{name}-full", root / f"{name}-cut"
        _train(full, *extra, *DROPOUT)
        _train(cut, *extra, *DROPOUT, "--stop-at", "5")
        out[f"{name}-first-leg"] = read_scalars(cut / "train", "loss")
        out[f"{name}-resume-stdout"] = _train(cut, *extra, *DROPOUT).stdout
        out[f"{name}-full"], out[f"{name}-resumed"] = full, cut
    mw = root / "multi_worker"
    proc = run_cli_process("launch", "--workers", "2", "--", "train", "--model-dir", str(mw),
                           *COMMON)
    out["multi_worker"], out["multi_worker-stdout"] = mw, proc.stdout
    return out


@pytest.mark.parametrize("strategy", ["default", "mirrored"])
def test_interrupted_and_resumed_run_is_bitwise_identical(runs, strategy):
    assert "resumed from" in runs[f"{strategy}-resume-stdout"]
    # model, optimizer slots, step and the dropout RNG states are all covered
    assert_checkpoints_equal(ckpt(runs[f"{strategy}-full"], 10),
                             ckpt(runs[f"{strategy}-resumed"], 10), must_have=("rng", "optimizer"))


def test_runs_write_checkpoints_logs_and_runtime_info(runs):
    for name, replicas, workers in (("default", 1, 1), ("mirrored", 2, 1), ("multi_worker", 2, 2)):
        run = runs[name]
        ckpts = sorted(p.name for p in (run / "checkpoints").glob("ckpt-*.index"))
        assert ckpts == ["ckpt-10.index", "ckpt-4.index", "ckpt-8.index"], (name, ckpts)
        info = json.loads((run / "runtime.json").read_text())
        assert info["replicas"] == replicas and info["workers"] == workers, (name, info)
        assert info["versions"]["tensorflow"].startswith("2.21")
        assert [r["eligible"] for r in info["cudnn"]] == [True, True]
        assert info["jit_compile"] is False  # measured slower with XLA for this task on CPU
        assert info["cpu_allocator"] == "bfc", info  # set by the CLI itself (cli_env drops it)
        losses = read_scalars(run / "train", "loss")
        assert sorted(losses) == [2, 4, 6, 8, 10]
        assert all(np.isfinite(v) for v in losses.values())
        for tag in ("learning_rate", "steps_per_sec", "examples_per_sec"):
            assert sorted(read_scalars(run / "train", tag)) == [2, 4, 6, 8, 10]
        evals = read_scalars(run / "eval", "accuracy")
        assert list(evals) == [10] and 0.0 <= evals[10] <= 1.0
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["step"] == 10 and metrics["metrics"]["accuracy"] == pytest.approx(evals[10])
        assert (run / "assets" / "vocab.txt").read_text().splitlines()[:2] == ["", "[UNK]"]


def test_only_the_chief_writes(runs, tmp_path):
    # Worker 1 saved its share of each collective checkpoint to a temp dir and
    # deleted it: the model dir holds one set of checkpoints and one log dir each.
    run = runs["multi_worker"]
    names = sorted(p.name for p in run.iterdir())
    sessions = [n for n in names if n.startswith("events.out.tfevents.")]
    assert len(sessions) == 1  # the chief's HParams session at the log root, nobody else's
    assert [n for n in names if n not in sessions] == [
        "assets", "checkpoints", "config.yaml", "data", "eval", "export", "metrics.json",
        "runtime.json", "train"]
    # The chief's prepared data (worker 1 prepared its own copy in its local cache).
    assert len(list((run / "data").iterdir())) == 1
    assert len(list((run / "train").iterdir())) == 1
    out = runs["multi_worker-stdout"]
    assert "[worker-0] " in out and "[worker-1] " in out
    assert "finished at step 10" in out


def test_loss_trajectories_agree_across_strategies(runs):
    """Same global batch and seed: the same examples reach the same weights.

    Tolerance: 1e-3 relative. The replicas sum partial gradients in a different
    order than one device does, so bit-equality is not expected across strategies.
    """
    ref = read_scalars(runs["default"] / "train", "loss")
    for name in ("mirrored", "multi_worker"):
        other = read_scalars(runs[name] / "train", "loss")
        assert sorted(other) == sorted(ref)
        for step in ref:
            assert other[step] == pytest.approx(ref[step], rel=1e-3), (name, step)


def test_first_leg_logged_until_the_stop(runs):
    assert sorted(runs["default-first-leg"]) == [2, 4, 5]


SERVE = """
import json, sys
import tensorflow as tf
m = tf.saved_model.load(sys.argv[1])
out = m.serve(tf.constant(sys.argv[2:]))
print(json.dumps({"probabilities": out["probabilities"].numpy().tolist(),
                  "probability": out["probability"].numpy().tolist(),
                  "label": [l.decode() for l in out["label"].numpy()]}))
"""
TEXTS = ["the food was great", "the service was awful", "great food", "rude staff"]


def _served(run) -> dict:
    """The export's answers for TEXTS, from plain TensorFlow in a process without trainer."""
    return run_without_trainer(SERVE, str(run / "export"), *TEXTS)


def test_export_predicts_in_a_process_without_trainer(runs):
    out = _served(runs["default"])
    labels = (runs["default"] / "assets" / "labels.txt").read_text().split()
    probs = np.array(out["probabilities"])
    assert probs.shape == (len(TEXTS), len(labels))
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    # The label is the class of the largest probability, and `probability` is that value.
    assert out["label"] == [labels[i] for i in probs.argmax(1)]
    np.testing.assert_allclose(out["probability"], probs.max(1), rtol=1e-6)


def test_predict_and_evaluate_commands(runs):
    run = runs["default"]
    out = run_cli_process("predict", "--model-dir", str(run), *TEXTS)
    rows = [line.split("\t") for line in out.stdout.strip().splitlines()]
    assert [r[2] for r in rows] == TEXTS
    # The command prints what the export computes for each text, in order.
    served = _served(run)
    assert [r[0] for r in rows] == served["label"]
    assert [float(r[1]) for r in rows] == [round(p, 4) for p in served["probability"]]
    ev = run_cli_process("evaluate", "--model-dir", str(run))
    assert f"step 10 ({run}/checkpoints/ckpt-10)" in ev.stdout and "accuracy: " in ev.stdout


def test_raising_steps_continues_the_run(runs, tmp_path):
    """A finished 10-step run raised to 12 steps equals a straight 12-step run, bitwise."""
    run = tmp_path / "more"
    shutil.copytree(runs["default"], run)
    longer = ["--set", "train.steps=12", "--set", "train.eval_every=12"]
    out = _train(run, *longer)
    assert f"resumed from {run}/checkpoints/ckpt-10 at step 10" in out.stdout
    assert "finished at step 12" in out.stdout
    straight = tmp_path / "straight"
    _train(straight, *longer)
    assert_checkpoints_equal(ckpt(run, 12), ckpt(straight, 12))


def test_a_lower_or_equal_step_count_trains_nothing_and_says_why(runs, tmp_path):
    """A resume at or past `train.steps` trains no step, keeps every checkpoint and
    says so (exit 0, like Orbit's controller), from a relative model dir."""
    shutil.copytree(runs["default"], tmp_path / "done")
    before = sorted(p.name for p in (tmp_path / "done/checkpoints").iterdir())
    lower = run_cli_process("train", "--model-dir", "done", *COMMON, "--set", "train.steps=6",
                            cwd=tmp_path)
    assert ("nothing to train: the run is at step 10, past train.steps=6 (train.steps counts "
            "from step 0, not from the resume)") in lower.stdout, lower.stdout
    same = run_cli_process("train", "--model-dir", "done", *COMMON, cwd=tmp_path)
    assert ("nothing to train: the run already finished at step 10 (train.steps=10)"
            in same.stdout), same.stdout
    assert sorted(p.name for p in (tmp_path / "done/checkpoints").iterdir()) == before
    assert_checkpoints_equal(ckpt(tmp_path / "done", 10), ckpt(runs["default"], 10))
