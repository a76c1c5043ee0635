"""`seqtrain job render --tune` and `--evaluator`, loaded through the platforms' own client
models, with every trial's command line parsed back by `seqtrain train` and the config loader.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml
from google.cloud.aiplatform_v1.types import CustomJobSpec, HyperparameterTuningJob
from kubeflow.training import ApiClient
from kubeflow_katib_api.models import V1beta1Experiment

from trainer import cli, experiment, tuning
from trainer.errors import UserError
from trainer.jobs import render

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K8S_VERSION = kubernetes_validate.latest_version()
TUNE = ("train.learning_rate=1e-4:1e-2:log", "model.units=16,32", "model.cell=lstm,gru",
        "model.layers=1:3")
BASE = ("train.steps=300", "train.batch_size=32")


def request(platform: str, **kw) -> render.JobRequest:
    args = dict(platform=platform, image="example.com/seqtrain:1", model_dir="gs://bkt/sweep",
                task="text_classification", overrides=BASE, tune=TUNE, trials=8, parallel=3)
    args.update(kw)
    return render.JobRequest(**args)


def objects(req) -> list[dict]:
    return [d for d in yaml.safe_load_all(render.render(req)) if d is not None]


def train_config(args: list[str], config_text: str | None, tmp_path):
    """Parses a container's args with the real `seqtrain train` command, then loads the config."""
    assert args[0] == "train"
    if config_text is not None:
        path = tmp_path / "config.yaml"
        path.write_text(config_text)
        args = [str(path) if a == render.CONFIG_PATH else a for a in args]
    ctx = cli.train.make_context("train", list(args[1:]))
    p = ctx.params
    return experiment.load(p["task"], p["config_file"], p["overrides"]), p


# ---------------------------------------------------------------- Vertex
def test_vertex_tuning_job_loads_as_a_hyperparameter_tuning_job(tmp_path):
    (spec,) = objects(request("vertex"))
    job = HyperparameterTuningJob.from_json(json.dumps(spec))  # unknown fields raise
    assert (job.max_trial_count, job.parallel_trial_count) == (8, 3)
    (metric,) = job.study_spec.metrics
    assert (metric.metric_id, metric.goal.name) == ("accuracy", "MAXIMIZE")
    params = {p.parameter_id: p for p in job.study_spec.parameters}
    lr = params["train.learning_rate"]
    assert (lr.double_value_spec.min_value, lr.double_value_spec.max_value) == (1e-4, 1e-2)
    assert lr.scale_type.name == "UNIT_LOG_SCALE"
    assert list(params["model.units"].categorical_value_spec.values) == ["16", "32"]
    assert list(params["model.cell"].categorical_value_spec.values) == ["lstm", "gru"]
    layers = params["model.layers"].integer_value_spec
    assert (layers.min_value, layers.max_value) == (1, 3)
    assert HyperparameterTuningJob.to_dict(job)["trial_job_spec"]["base_output_directory"][
        "output_uri_prefix"] == "gs://bkt/sweep"

    # Each trial runs the pool's args plus `--<parameterId>=<value>`, as Vertex appends them.
    args = list(job.trial_job_spec.worker_pool_specs[0].container_spec.args)
    for trial in ({"train.learning_rate": "0.0001", "model.units": "32", "model.cell": "gru",
                   "model.layers": "3"},
                  {"train.learning_rate": "0.00731", "model.units": "16", "model.cell": "lstm",
                   "model.layers": "1"}):
        cfg, _ = train_config(args + [f"--{k}={v}" for k, v in trial.items()], None, tmp_path)
        assert cfg.train.learning_rate == float(trial["train.learning_rate"])
        assert (cfg.model.units, cfg.model.cell) == (int(trial["model.units"]), trial["model.cell"])
        assert cfg.model.layers == int(trial["model.layers"])
        assert (cfg.train.steps, cfg.train.batch_size) == (300, 32)


# ---------------------------------------------------------------- Katib
def test_katib_experiment_loads_and_each_trial_is_a_valid_train_command(tmp_path):
    config_map, experiment = objects(request("tfjob", workers=2))
    assert config_map["kind"] == "ConfigMap"
    model = V1beta1Experiment.from_dict(experiment)
    # The pydantic models ignore unknown fields: a lossless round trip means every
    # field we wrote is a real Experiment field with the right type.
    assert model.to_dict() == experiment
    spec = model.spec
    assert (spec.objective.type, spec.objective.objective_metric_name) == ("maximize", "accuracy")
    assert (spec.max_trial_count, spec.parallel_trial_count) == (8, 3)
    assert spec.metrics_collector_spec.collector.kind == "StdOut"
    space = {p.name: (p.parameter_type, p.feasible_space) for p in spec.parameters}
    assert space["train_learning_rate"][0] == "double"
    assert space["train_learning_rate"][1].distribution == "logUniform"
    assert space["model_units"][0] == "discrete" and space["model_units"][1].list == ["16", "32"]
    assert space["model_cell"][1].list == ["lstm", "gru"]
    assert (space["model_layers"][1].min, space["model_layers"][1].max) == ("1", "3")

    trial_job = experiment["spec"]["trialTemplate"]["trialSpec"]
    refs = {p["name"]: p["reference"] for p in experiment["spec"]["trialTemplate"]["trialParameters"]}
    # The trial spec is a TFJob (the training operator's own models, lossless).
    client = ApiClient()
    tfjob = {**trial_job, "metadata": {"name": "t"}}
    assert client.sanitize_for_serialization(
        client._ApiClient__deserialize(tfjob, "KubeflowOrgV1TFJob")) == tfjob
    values = {"trialName": "sweep-abc12", "train_learning_rate": "0.0042",
              "model_units": "32", "model_cell": "gru", "model_layers": "2"}
    assert set(refs) == set(values) and refs["trialName"] == "${trialSpec.Name}"
    for replica in ("Chief", "Worker"):
        container = trial_job["spec"]["tfReplicaSpecs"][replica]["template"]["spec"]["containers"][0]
        assert container["command"] == ["seqtrain"]
        assert {"name": tuning.KATIB_METRIC_ENV, "value": "accuracy"} in container["env"]
        args = [re.sub(r"\$\{trialParameters\.(\w+)\}", lambda m: values[m.group(1)], a)
                for a in container["args"]]
        cfg, params = train_config(args, config_map["data"]["config.yaml"], tmp_path)
        assert params["model_dir"] == "gs://bkt/sweep/sweep-abc12"  # one run dir per trial
        assert (cfg.train.learning_rate, cfg.model.units, cfg.model.cell, cfg.model.layers) == (
            0.0042, 32, "gru", 2)
        assert (cfg.train.steps, cfg.train.batch_size) == (300, 32)


@pytest.mark.parametrize("flags,message", [
    (dict(tune=("train.nope=1,2",)), "'train.nope' is not a config key"),
    (dict(tune=("model.cell=lstm:gru",)), "a range is min:max"),
    (dict(tune=("model.units=16,0",)), "value 0 is refused"),
    (dict(tune=("train.learning_rate=0:1e-2:log",)), "min > 0 with :log"),
    (dict(tune=("model.units=16",)), "at least two different values"),
    (dict(platform="k8s"), "--platform k8s"),
    (dict(metric="bleu"), "--goal max|min"),
    (dict(parallel=9), "--parallel between 1 and --trials"),
    (dict(evaluator=True), "drop --evaluator"),
])
def test_bad_tuning_flags_are_user_errors(flags, message):
    with pytest.raises(UserError, match=re.escape(message)):
        render.render(request(flags.pop("platform", "tfjob"), **flags))


def test_tune_through_the_cli_from_a_working_directory(tmp_path):
    (tmp_path / "base.yaml").write_text("train:\n  steps: 40\n")
    env = {**os.environ, "PYTHONPATH": REPO}
    seqtrain = os.path.join(os.path.dirname(sys.executable), "seqtrain")
    common = [seqtrain, "job", "render", "--platform", "vertex", "--image", "img",
              "--model-dir", "gs://b/s", "--config", "base.yaml", "--task", "forecasting"]
    ok = subprocess.run(common + ["--tune", "model.units=8,16", "--trials", "2",
                                  "--out", "tune.yaml"], cwd=tmp_path, env=env,
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    spec = yaml.safe_load((tmp_path / "tune.yaml").read_text())
    assert spec["studySpec"]["metrics"] == [{"metricId": "mse", "goal": "MINIMIZE"}]
    bad = subprocess.run(common + ["--tune", "model.units"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "--tune 'model.units' is not KEY=v1,v2" in bad.stderr


# ---------------------------------------------------------------- evaluator
def _container(template: dict) -> dict:
    return template["spec"]["containers"][0]


def test_tfjob_evaluator_replica(tmp_path):
    config_map, tfjob = objects(request("tfjob", tune=(), workers=2, evaluator=True))
    replicas = tfjob["spec"]["tfReplicaSpecs"]
    assert list(replicas) == ["Chief", "Worker", "Evaluator"]
    evaluator = replicas["Evaluator"]
    assert evaluator["replicas"] == 1
    assert _container(evaluator["template"])["args"] == [
        "evaluate", "--watch", "--model-dir", "gs://bkt/sweep"]
    client = ApiClient()
    assert client.sanitize_for_serialization(
        client._ApiClient__deserialize(tfjob, "KubeflowOrgV1TFJob")) == tfjob
    cfg, _ = train_config(_container(replicas["Chief"]["template"])["args"],
                          config_map["data"]["config.yaml"], tmp_path)
    assert cfg.train.eval_in_loop is False  # the evaluator evaluates, the trainer trains


@pytest.mark.parametrize("platform", ["k8s", "tpu"])
def test_kubernetes_evaluator_is_a_separate_job(platform):
    req = request(platform, tune=(), evaluator=True, name="tc")
    objs = objects(req)
    for obj in objs:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    jobs = [o for o in objs if o["kind"] == "Job"]
    assert [j["metadata"]["name"] for j in jobs] == ["tc", "tc-eval"]
    eval_pod = jobs[1]["spec"]["template"]["spec"]
    assert _container(jobs[1]["spec"]["template"])["args"] == [
        "evaluate", "--watch", "--model-dir", "gs://bkt/sweep"]
    assert "google.com/tpu" not in json.dumps(eval_pod)  # evaluation needs no accelerator
    config_text = next(o for o in objs if o["kind"] == "ConfigMap")["data"]["config.yaml"]
    assert yaml.safe_load(config_text)["train"]["eval_in_loop"] is False


def test_vertex_evaluator_is_worker_pool_3(tmp_path):
    (spec,) = objects(request("vertex", tune=(), evaluator=True, workers=2))
    job = CustomJobSpec.from_json(json.dumps(spec))
    pools = job.worker_pool_specs
    assert len(pools) == 4 and pools[2].replica_count == 0
    assert list(pools[3].container_spec.args) == ["evaluate", "--watch"]  # AIP_MODEL_DIR
    cfg, _ = train_config(list(pools[0].container_spec.args), None, tmp_path)
    assert cfg.train.eval_in_loop is False


# ---------------------------------------------------------------- reporting
def test_report_writes_the_hypertune_file_format(tmp_path):
    path = tmp_path / "hypertune" / "output.metrics"
    env = {tuning.HYPERTUNE_TAG_ENV: "accuracy", tuning.HYPERTUNE_FILE_ENV: str(path),
           "CLOUD_ML_TRIAL_ID": "7"}
    tuning.report({"accuracy": 0.75, "loss": 0.5}, step=100, environ=env)
    tuning.report({"accuracy": 0.8125, "loss": 0.4}, step=200, environ=env)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [{k: v for k, v in e.items() if k != "timestamp"} for e in lines][-2:] == [
        {"accuracy": "0.75", "global_step": "100", "trial": "7"},
        {"accuracy": "0.8125", "global_step": "200", "trial": "7"}]
    assert all(isinstance(e["timestamp"], float) for e in lines)


def test_report_prints_katib_stdout_lines(capsys):
    env = {tuning.KATIB_METRIC_ENV: "mse"}
    tuning.report({"mse": 0.125, "mae": 0.3}, step=10, environ=env)
    assert capsys.readouterr().out == "mse=0.125\n"
    # Katib's default StdOut filter: ([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)
    tuning.report({"mse": 1e-05}, step=20, environ=env)
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)", line), line


def test_report_is_silent_without_a_tuning_service(capsys, tmp_path):
    tuning.report({"accuracy": 0.5}, step=1, environ={})
    assert capsys.readouterr().out == ""


def test_report_of_a_metric_the_task_does_not_compute_is_a_user_error():
    with pytest.raises(UserError, match="computes accuracy, loss"):
        tuning.report({"accuracy": 0.5, "loss": 1.0}, step=1,
                      environ={tuning.KATIB_METRIC_ENV: "bleu"})
