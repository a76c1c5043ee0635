"""The commands that neither train nor load a model never import TensorFlow, and
TensorFlow's start-up noise stays off stderr unless `seqtrain -v`.

Each command runs as `seqtrain` would, in a fresh interpreter from a temporary
working directory; the interpreter reports at exit whether `tensorflow` was
imported. (No timing here: scripts/bench_cli.py measures the speed.)
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys

import pytest
import yaml

from trainer import experiment, quiet

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Runs the real click entry point, then prints whether TensorFlow got imported.
PROBE = """
import atexit, sys
atexit.register(lambda: print("TF_IMPORTED=%s" % ("tensorflow" in sys.modules), file=sys.stderr))
sys.argv[0] = "seqtrain"
from trainer.cli import main
main()
"""


def seqtrain(args, cwd, probe=True, env=None, path=ROOT):
    env = {**os.environ, **(env or {}), "PYTHONPATH": path}
    entry = os.path.join(os.path.dirname(sys.executable), "seqtrain")  # the console script
    cmd = [sys.executable, "-c", PROBE, *args] if probe else [entry, *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _write_run(path, task, overrides, metrics=None, best=None):
    os.makedirs(path)
    cfg = experiment.load(task, None, overrides)
    with open(os.path.join(path, "config.yaml"), "w") as f:
        f.write(cfg.to_yaml())
    if metrics is not None:
        record = {"step": 100, "metrics": metrics, "time": "2026-11-29T10:00:00+00:00"}
        if best:
            record["best"] = best
        with open(os.path.join(path, "metrics.json"), "w") as f:
            json.dump(record, f)


@pytest.fixture
def workdir(tmp_path):
    """A working directory with runs/ (two runs of a sweep) and a config file."""
    _write_run(tmp_path / "runs" / "lr-a", "multistep_forecasting", ["train.learning_rate=0.01"],
               {"mse": 0.5, "mse_h10": 0.9, "mse_h2": 0.4, "mse_h1": 0.3, "skill": 0.2})
    _write_run(tmp_path / "runs" / "lr-b", "multistep_forecasting", ["train.learning_rate=0.003"],
               {"mse": 0.6, "mse_h1": 0.35}, best={"metric": "mse", "value": 0.25, "step": 40})
    (tmp_path / "small.yaml").write_text(yaml.safe_dump({"train": {"steps": 20}}))
    (tmp_path / "corpus.txt").write_text("Shall I compare thee to a summer's day?\n" * 50)
    (tmp_path / "model.txt").write_text("weights")
    return tmp_path


RENDER = ["job", "render", "--image", "example.com/seqtrain:1", "--model-dir", "gs://b/run"]


@pytest.mark.parametrize("args,code", [
    (["--help"], 0),
    (["tasks"], 0),
    (["config", "--task", "translation"], 0),
    (["runs", "list"], 0),
    (["runs", "list", "runs/lr-a", "--json"], 0),
    (["runs", "compare", "runs"], 0),
    (RENDER + ["--platform", "k8s", "--config", "small.yaml", "--workers", "2"], 0),
    (RENDER + ["--platform", "vertex", "--task", "text_generation", "--set",
               "data.bundled_name=sonnets"], 0),
    (RENDER + ["--platform", "tfjob", "--task", "forecasting", "--set", "model.units=0"], 2),
    (RENDER + ["--platform", "tfjob", "--tune", "train.learning_rate=1e-4:1e-2:log",
               "--tune", "model.cell=lstm,gru", "--metric", "loss", "--goal", "min"], 0),
    (RENDER + ["--platform", "k8s", "--evaluator"], 0),
    (["stage", "model.txt", "not-a-bucket"], 2),
    (["runs", "list", "no-such-dir"], 2),
    (["data", "inspect", "--help"], 0),
    (["prepare", "--help"], 0),
    (["prepare", "--task", "text_generation", "--set", "data.path=corpus.txt", "--out", "p"], 0),
    (["prepare", "--task", "forecasting", "--out", "prepared"], 2),
    (["prepare", "--task", "forecasting", "--set", "data.source=bundled", "--out", "p"], 0),
    (["prepare", "--task", "text_classification", "--out", "p"], 0),
    (["prepare", "--task", "translation", "--set", "data.toy_size=200", "--out", "p"], 0),
    (["prepare", "--task", "translation", "--set", "data.path=corpus.txt", "--out", "p"], 2),
    (["prepare", "--task", "text_generation", "--set", "data.prepared_dir=p", "--out", "p"], 2),
    (["data", "inspect", "--model-dir", "runs/lr-a", "--step", "-1"], 2),
    (["data", "inspect", "--model-dir", "no-such-run", "--step", "3"], 2),
    (["evaluate", "--model-dir", "no-such-run"], 2),
])
def test_command_answers_without_importing_tensorflow(workdir, args, code):
    result = seqtrain(args, cwd=workdir)
    assert result.returncode == code, result.stderr
    assert "TF_IMPORTED=False" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    if code:
        assert result.stderr.startswith(("Error:", "error:")), result.stderr


def test_a_user_task_and_its_command_answer_without_importing_tensorflow(workdir):
    """A task registered through SEQTRAIN_TASK_MODULES (tests/tasks/tasks_extra/, docs/tasks.md)."""
    env = {"SEQTRAIN_TASK_MODULES": "tasks_extra.echo_config"}
    listed = seqtrain(["tasks"], cwd=workdir, env=env,
                      path=os.pathsep.join([ROOT, os.path.join(ROOT, "tests", "tasks")]))
    helped = seqtrain(["echo", "--help"], cwd=workdir, env=env,
                      path=os.pathsep.join([ROOT, os.path.join(ROOT, "tests", "tasks")]))
    assert listed.stdout.startswith("echo ") and "--digits" in helped.stdout, helped.stderr
    for result in (listed, helped):
        assert result.returncode == 0 and "TF_IMPORTED=False" in result.stderr, result.stderr


def test_stage_and_runs_list_on_gcs_without_tensorflow(workdir, gcs):  # noqa: F811
    bucket = gcs.new_bucket()
    staged = seqtrain(["stage", "runs/lr-a/config.yaml", f"gs://{bucket}/exp/lr-a/"],
                      cwd=workdir, env=gcs.env)
    assert staged.returncode == 0, staged.stderr
    assert f"gs://{bucket}/exp/lr-a/config.yaml" in staged.stdout
    listed = seqtrain(["runs", "list", f"gs://{bucket}/exp"], cwd=workdir, env=gcs.env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split()[:3] == ["lr-a", "multistep_forecasting", "-"]
    for result in (staged, listed):
        assert "TF_IMPORTED=False" in result.stderr, result.stderr


def test_runs_list_orders_headline_first_then_horizons_numerically(workdir):
    result = seqtrain(["runs", "list"], cwd=workdir)  # no PREFIX: runs/
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["RUN", "TASK", "STEP", "METRICS"]
    row_a = next(line for line in lines if line.startswith("lr-a"))
    # mse is multistep_forecasting's headline; then h1, h2 (not h10) by number.
    assert "mse=0.5 mse_h1=0.3 mse_h2=0.4 @100" in row_a


def test_runs_compare_ranks_by_best_metric_and_shows_differing_hparams(workdir):
    result = seqtrain(["runs", "compare", "runs"], cwd=workdir)
    assert result.returncode == 0, result.stderr
    header, first, second = result.stdout.splitlines()
    assert header.split() == ["RUN", "TASK", "train.learning_rate", "BEST", "STEP", "AGE"]
    # lr-b's kept best (0.25 at step 40) beats lr-a's latest 0.5; lower mse is better.
    assert first.split()[:5] == ["lr-b", "multistep_forecasting", "0.003", "mse=0.25", "40"]
    assert second.split()[:5] == ["lr-a", "multistep_forecasting", "0.01", "mse=0.5", "100"]
    by_skill = seqtrain(["runs", "compare", "runs", "--metric", "skill"], cwd=workdir)
    assert by_skill.stdout.splitlines()[1].split()[3] == "skill=0.2"
    typo = seqtrain(["runs", "compare", "runs", "--metric", "skil"], cwd=workdir)
    assert typo.returncode == 2 and typo.stdout == "", typo
    assert "--metric 'skil': no run here records it" in typo.stderr and "skill" in typo.stderr


def test_runs_table_age_is_relative_to_now():
    from trainer import runs_table

    updated = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    run = {"name": "r", "task": "translation", "config": {}, "metrics": {"exact_match": 0.5},
           "metrics_step": 10, "step": 10, "best": None, "updated": updated, "error": None}
    table = runs_table.compare_table([run], now=updated + datetime.timedelta(hours=5, minutes=3))
    assert table.splitlines()[1].split() == ["r", "translation", "exact_match=0.5", "10", "5h"]


# ---------------------------------------------------------------- TF start-up noise
# Lines TensorFlow 2.21 printed on these machines (FACTS.md) and on GPU builds.
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795985646.806660    5478 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
    "I0000 00:00:1795985646.867994    5478 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
    "with the appropriate compiler flags.",
    "I0000 00:00:1732000000.123456    4242 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results due to floating-point round-off errors from "
    "different computation orders. To turn them off, set the environment variable "
    "`TF_ENABLE_ONEDNN_OPTS=0`.",
    "E0000 00:00:1795985650.834116    5478 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
]
REAL = [
    "Error: runs/x is not a seqtrain run (no config.yaml).",
    "W0000 00:00:1795985650.834116    5478 cuda_executor.cc:1000] out of memory on GPU 0",
    "/usr/lib/python3/keras/src/layers/rnn/lstm.py:200: UserWarning: Do not pass an "
    "`input_shape`",
    "2026-11-29 10:00:00.000000: W tensorflow/core/framework/op_kernel.cc:1816] OP_REQUIRES "
    "failed at save_restore_v2_ops.cc:142 : NOT_FOUND",
]


@pytest.mark.parametrize("line", NOISE)
def test_known_startup_lines_are_noise(line):
    assert quiet.is_noise(line + "\n")


@pytest.mark.parametrize("line", REAL)
def test_other_lines_are_not_noise(line):
    assert not quiet.is_noise(line + "\n")


def test_tensorflow_startup_lines_hidden_unless_verbose(tmp_path):
    """A command that imports TensorFlow prints only its own error; `-v` shows the rest."""
    _write_run(tmp_path / "runs" / "untrained", "forecasting", [])
    args = ["evaluate", "--model-dir", "runs/untrained"]
    result = seqtrain(args, cwd=tmp_path, probe=False)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "Error: runs/untrained has no checkpoint to evaluate in runs/untrained/checkpoints; "
        "train it first."]
    verbose = seqtrain(["-v", *args], cwd=tmp_path, probe=False)
    assert verbose.returncode == 2
    assert "absl::InitializeLog()" in verbose.stderr
    assert verbose.stderr.splitlines()[-1] == result.stderr.splitlines()[-1]
