"""trainer/jobs: specs validate offline and give each pod the TF_CONFIG its platform would.

Reference formats are written down in tests/cluster/test_cluster.py's docstring.
"""

from __future__ import annotations

import glob
import json
import os
import shlex

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner
from kubeflow.training import ApiClient

from trainer import cluster, experiment
from trainer.cluster import from_environ, resolve_dirs
from trainer.jobs import render
from trainer.jobs.cli import job

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K8S_VERSION = kubernetes_validate.latest_version()
IMAGE = "us-docker.pkg.dev/proj/seqtrain/seqtrain:0.1.0"
WORKERS, GPUS = 3, 2
OVERRIDES = ("train.batch_size=96", "train.steps=500", "model.units=16",
             "runtime.preemption_grace_secs=40", "data.vocab_size=999")


def request(platform: str, **kw) -> render.JobRequest:
    args = dict(platform=platform, image=IMAGE, model_dir=f"gs://bkt/runs/{platform}",
                workers=WORKERS, gpus_per_worker=GPUS, task="text_classification",
                overrides=OVERRIDES, name=f"tc-{platform}", namespace="ml")
    if platform == "tpu":
        args.update(workers=1, gpus_per_worker=0)
    args.update(kw)
    return render.JobRequest(**args)


@pytest.fixture(scope="module")
def specs() -> dict[str, list[dict]]:
    """Each platform rendered once, parsed back from the YAML text."""
    return {p: [d for d in yaml.safe_load_all(render.render(request(p))) if d is not None]
            for p in render.PLATFORMS}


@pytest.fixture(scope="module")
def expected_config():
    return experiment.load("text_classification", None, OVERRIDES)


def by_kind(objects: list[dict]) -> dict[str, dict]:
    return {obj["kind"]: obj for obj in objects}


def pod_template(obj: dict) -> dict:
    """The pod template of a Job, or of a TFJob replica spec."""
    return obj["template"] if "template" in obj else obj["spec"]["template"]


# ---------------------------------------------------------------------------
# Offline schema validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("platform", ["tfjob", "k8s", "tpu"])
def test_core_kubernetes_objects_validate_strictly(specs, platform):
    kinds = []
    for obj in specs[platform]:
        if obj["apiVersion"] == "kubeflow.org/v1":
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        kinds.append(obj["kind"])
    assert kinds == {"tfjob": ["ConfigMap"], "k8s": ["ConfigMap", "Service", "Job"],
                     "tpu": ["ConfigMap", "Job"]}[platform]


@pytest.mark.parametrize("platform", ["tfjob", "k8s", "tpu"])
def test_pods_run_with_least_privilege(specs, platform):
    """Non-root, no privilege escalation, no capabilities, RuntimeDefault seccomp."""
    templates = []
    for obj in specs[platform]:
        if obj["kind"] == "TFJob":
            templates += [r["template"] for r in obj["spec"]["tfReplicaSpecs"].values()]
        elif obj["kind"] == "Job":
            templates.append(pod_template(obj))
    assert templates
    for template in templates:
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's USER
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def test_tfjob_survives_the_kubeflow_sdk_models_and_pod_schema(specs):
    tfjob = by_kind(specs["tfjob"])["TFJob"]
    client = ApiClient()
    model = client._ApiClient__deserialize(tfjob, "KubeflowOrgV1TFJob")
    # The SDK drops fields its published models do not know: a lossless round trip
    # means every field we wrote is a real TFJob field with the right shape.
    assert client.sanitize_for_serialization(model) == tfjob
    assert model.spec.run_policy.backoff_limit == 3
    for rtype, replica in tfjob["spec"]["tfReplicaSpecs"].items():
        assert rtype in ("Chief", "Worker")
        template = {"apiVersion": "v1", "kind": "PodTemplate",
                    "metadata": {"name": f"tc-tfjob-{rtype.lower()}"},
                    "template": replica["template"]}
        kubernetes_validate.validate(template, K8S_VERSION, strict=True)


def test_tfjob_shape(specs, expected_config):
    replicas = by_kind(specs["tfjob"])["TFJob"]["spec"]["tfReplicaSpecs"]
    assert {r: s["replicas"] for r, s in replicas.items()} == {"Chief": 1, "Worker": WORKERS - 1}
    for spec in replicas.values():
        assert spec["restartPolicy"] == "ExitCode"
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        assert container["name"] == "tensorflow"
        gpus = {"nvidia.com/gpu": str(GPUS)}
        assert container["resources"] == {"limits": gpus, "requests": gpus}
        assert pod["terminationGracePeriodSeconds"] > expected_config.runtime.preemption_grace_secs


def test_single_worker_tfjob_has_only_a_chief():
    tfjob = by_kind(render.build(request("tfjob", workers=1, gpus_per_worker=0)))["TFJob"]
    assert list(tfjob["spec"]["tfReplicaSpecs"]) == ["Chief"]
    (container,) = pod_template(tfjob["spec"]["tfReplicaSpecs"]["Chief"])["spec"]["containers"]
    assert "resources" not in container


def test_indexed_job_failure_policy(specs):
    spec = by_kind(specs["k8s"])["Job"]["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == \
        ("Indexed", WORKERS, WORKERS)
    assert spec["backoffLimitPerIndex"] == 3 and spec["maxFailedIndexes"] == 0
    assert pod_template(by_kind(specs["k8s"])["Job"])["spec"]["restartPolicy"] == "Never"
    ignore, fail = spec["podFailurePolicy"]["rules"]
    assert ignore == {"action": "Ignore",
                      "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert fail["action"] == "FailJob"
    assert fail["onExitCodes"]["operator"] == "In"
    assert fail["onExitCodes"]["values"] == list(range(1, 128))  # 143 not in it: retried


# ---------------------------------------------------------------------------
# Every pod's TF_CONFIG equals what its platform would inject
# ---------------------------------------------------------------------------


def operator_tf_configs(tfjob: dict) -> dict[tuple[str, int], str]:
    """TF_CONFIG per (replica type, index), as the TFJob operator's genTFConfigJSONStr makes it."""
    name, ns = tfjob["metadata"]["name"], tfjob["metadata"]["namespace"]
    specs_ = tfjob["spec"]["tfReplicaSpecs"]
    cluster_spec = {}
    for rtype, spec in specs_.items():
        ports = pod_template(spec)["spec"]["containers"][0].get("ports", [])
        port = next((p["containerPort"] for p in ports if p["name"] == "tfjob-port"), 2222)
        rt = rtype.lower()
        cluster_spec[rt] = [f"{name}-{rt}-{i}.{ns}.svc:{port}" for i in range(spec["replicas"])]
    return {
        (rtype.lower(), i): json.dumps({"cluster": cluster_spec,
                                        "task": {"type": rtype.lower(), "index": i},
                                        "environment": "cloud"})
        for rtype, spec in specs_.items() for i in range(spec["replicas"])
    }


def test_tfjob_pods_read_the_operator_tf_config(specs):
    configs = operator_tf_configs(by_kind(specs["tfjob"])["TFJob"])
    assert len(configs) == WORKERS
    for (role, index), tf_config in configs.items():
        info = from_environ({"TF_CONFIG": tf_config})
        assert (info.task_type, info.task_index) == (role, index)
        assert info.num_workers == WORKERS and info.is_training_worker
        assert info.is_chief == (role == "chief")


def test_indexed_job_pods_get_the_tfjob_roles(specs):
    objects = by_kind(specs["k8s"])
    service, job_obj = objects["Service"], objects["Job"]
    pod = pod_template(job_obj)
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    port = container["ports"][0]["containerPort"]
    # Kubernetes DNS: pod i of Indexed Job J is host J-i; with subdomain S and a headless
    # Service S selecting it, it resolves as J-i.S in the namespace.
    assert service["metadata"]["name"] == pod["spec"]["subdomain"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == port
    job_name, sub = job_obj["metadata"]["name"], pod["spec"]["subdomain"]
    hosts = [f"{job_name}-{i}.{sub}:{port}" for i in range(WORKERS)]
    assert env[cluster.ENV_WORKER_HOSTS] == ",".join(hosts)

    # Same roles a TFJob with 1 Chief + (N-1) Workers gets, with these pods' host names.
    tfjob = by_kind(specs["tfjob"])["TFJob"]
    roles = [("chief", 0)] + [("worker", i) for i in range(WORKERS - 1)]
    for index, (role, role_index) in enumerate(roles):
        expected = json.loads(operator_tf_configs(tfjob)[(role, role_index)])
        expected["cluster"] = {"chief": hosts[:1], "worker": hosts[1:]}
        info = from_environ({**env, cluster.ENV_COMPLETION_INDEX: str(index)})
        assert info.tf_config == expected


def vertex_environment(spec: dict, pool: int, index: int) -> dict[str, str]:
    """What Vertex AI injects into replica `index` of worker pool `pool` of this CustomJob."""
    pools = {f"workerpool{p}": [f"cmle-training-workerpool{p}-4f1e2d-{i}:2222"
                                for i in range(wps["replicaCount"])]
             for p, wps in enumerate(spec["workerPoolSpecs"])}
    base = spec["baseOutputDirectory"]["outputUriPrefix"]
    return {
        "CLUSTER_SPEC": json.dumps({"cluster": pools, "environment": "cloud",
                                    "task": {"type": f"workerpool{pool}", "index": index}}),
        "AIP_MODEL_DIR": f"{base}/model/",
        "AIP_CHECKPOINT_DIR": f"{base}/checkpoints/",
        "AIP_TENSORBOARD_LOG_DIR": f"{base}/logs/",
    }


def test_vertex_replicas_get_vertex_tf_config_and_aip_dirs(specs):
    (spec,) = specs["vertex"]
    pools = spec["workerPoolSpecs"]
    assert [p["replicaCount"] for p in pools] == [1, WORKERS - 1]
    assert pools[0]["machineSpec"] == {"machineType": "n1-standard-8",
                                       "acceleratorType": "NVIDIA_TESLA_T4",
                                       "acceleratorCount": GPUS}
    assert spec["scheduling"] == {"restartJobOnWorkerRestart": True}
    chief = ["cmle-training-workerpool0-4f1e2d-0:2222"]
    workers = [f"cmle-training-workerpool1-4f1e2d-{i}:2222" for i in range(WORKERS - 1)]
    replicas = [(0, 0, "chief", 0)] + [(1, i, "worker", i) for i in range(WORKERS - 1)]
    for pool, index, role, role_index in replicas:
        env = vertex_environment(spec, pool, index)
        vertex_tf_config = {"cluster": {"chief": chief, "worker": workers},
                            "task": {"type": role, "index": role_index}, "environment": "cloud"}
        assert from_environ(env).tf_config == vertex_tf_config
        args = pools[pool]["containerSpec"]["args"]
        assert "--model-dir" not in args  # the trainer maps AIP_* instead
        assert resolve_dirs(None, env) == cluster.Dirs(
            "gs://bkt/runs/vertex/model", "gs://bkt/runs/vertex/checkpoints",
            "gs://bkt/runs/vertex/logs", "AIP_MODEL_DIR")


def test_tpu_job_targets_a_single_host_slice(specs):
    job_obj = by_kind(specs["tpu"])["Job"]
    pod = pod_template(job_obj)["spec"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
                                   "cloud.google.com/gke-tpu-topology": "2x4"}
    assert pod["containers"][0]["resources"]["limits"] == {"google.com/tpu": "8"}
    cfg = yaml.safe_load(by_kind(specs["tpu"])["ConfigMap"]["data"]["config.yaml"])
    assert (cfg["runtime"]["strategy"], cfg["runtime"]["tpu"]) == ("tpu", "local")


# ---------------------------------------------------------------------------
# The config travels intact
# ---------------------------------------------------------------------------


def test_configmap_and_args_rebuild_the_validated_config(specs, expected_config, tmp_path):
    config_map = by_kind(specs["k8s"])["ConfigMap"]
    path = tmp_path / "config.yaml"
    path.write_text(config_map["data"]["config.yaml"])
    (container,) = pod_template(by_kind(specs["k8s"])["Job"])["spec"]["containers"]
    args = container["args"]
    assert args[:2] == ["train", "--task"] and args[args.index("--config") + 1] == \
        render.CONFIG_PATH
    assert args[args.index("--model-dir") + 1] == "gs://bkt/runs/k8s"
    assert experiment.load(None, str(path)) == expected_config

    vertex_args = specs["vertex"][0]["workerPoolSpecs"][0]["containerSpec"]["args"]
    sets = [vertex_args[i + 1] for i, a in enumerate(vertex_args) if a == "--set"]
    assert vertex_args[:3] == ["train", "--task", "text_classification"]
    assert experiment.load("text_classification", None, sets) == expected_config


def test_config_overrides_round_trip_awkward_values():
    cfg = experiment.load("text_classification", None,
                      ["runtime.tpu='true'", "train.clipnorm=0.5", "data.train_path='a b: c'"])
    sets = render.config_overrides(cfg)
    assert experiment.load("text_classification", None, sets) == cfg


# ---------------------------------------------------------------------------
# CLI: clean errors with exit code 2, --out, checked-in examples
# ---------------------------------------------------------------------------

BASE = ["render", "--image", IMAGE, "--model-dir", "gs://bkt/run"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--platform", "k8s", "--set", "train.nope=1"], "unknown config key 'train.nope'"),
        (["--platform", "k8s", "--workers", "3", "--set", "runtime.strategy=mirrored"],
         "runtime.strategy='mirrored' with --workers 3"),
        (["--platform", "vertex", "--workers", "3"], "does not divide evenly across 3 replicas"),
        (["--platform", "tfjob", "--name", "Bad_Name"], "--name 'Bad_Name'"),
        (["--platform", "tpu", "--tpu-topology", "4x4"], "single-host slices only"),
        (["--platform", "tpu", "--tpu-type", "tpu-v9"], "--tpu-type 'tpu-v9'"),
        (["--platform", "k8s", "--config", "/nonexistent/c.yaml"], "does not exist"),
        (["--platform", "tfjob", "--accelerator-type", "nvidia-l4"], "--gpus-per-worker >= 1"),
        (["--platform", "k8s", "--set", "runtime.strategy=tpu"], "needs --platform tpu"),
        (["--platform", "vertex", "--gpus-per-worker", "1", "--accelerator-type", "NVIDIA_L4"],
         "pass the matching --machine-type"),
        (["--platform", "tpu", "--set", "runtime.strategy=mirrored"],
         "runtime.strategy='mirrored'"),
    ],
)
def test_cli_errors_are_clean_user_errors(args, fragment):
    result = CliRunner().invoke(job, BASE + args)
    assert result.exit_code == 2, result.output
    assert fragment in result.output and "Traceback" not in result.output


def test_cli_rejects_local_model_dir():
    result = CliRunner().invoke(job, ["render", "--platform", "vertex", "--image", IMAGE,
                                      "--model-dir", "/tmp/run"])
    assert result.exit_code == 2 and "gs:// URI" in result.output


def test_cli_out_writes_the_same_spec(tmp_path):
    out = tmp_path / "job.yaml"
    args = BASE + ["--platform", "tfjob", "--workers", "2", "--out", str(out)]
    result = CliRunner().invoke(job, args)
    assert result.exit_code == 0, result.output
    req = request("tfjob", workers=2, gpus_per_worker=0, task=None, overrides=(), name=None,
                  namespace="default", model_dir="gs://bkt/run")
    assert out.read_text() == render.render(req)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "jobs", "*.yaml"))))
def test_checked_in_examples_are_current(path):
    with open(path) as f:
        text = f.read()
    command = text.splitlines()[1].removeprefix("#").strip()
    argv = shlex.split(command)
    assert argv[:3] == ["seqtrain", "job", "render"]
    result = CliRunner().invoke(job, argv[2:])
    assert result.exit_code == 0, result.output
    assert result.stdout == text, (
        f"{os.path.relpath(path, REPO)} is stale; regenerate it with: "
        f"{command} --out {os.path.relpath(path, REPO)}"
    )


def test_examples_cover_every_platform():
    names = {os.path.basename(p) for p in glob.glob(os.path.join(REPO, "jobs", "*.yaml"))}
    assert {f"{p}.yaml" for p in render.PLATFORMS} <= names


def test_cli_out_refuses_a_directory_and_a_run_s_own_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs/a/checkpoints").mkdir(parents=True)
    (tmp_path / "runs/a/config.yaml").write_text("task:\n  name: text_classification\n")
    args = BASE + ["--platform", "tfjob"]
    for out, fragment in (("runs", "--out runs is a directory"),
                          ("runs/a/config.yaml", "is a file of the run in runs/a")):
        result = CliRunner().invoke(job, args + ["--out", out])
        assert result.exit_code == 2 and fragment in result.output, result.output
        assert result.output.startswith("Error: ") and "Traceback" not in result.output
    assert (tmp_path / "runs/a/config.yaml").read_text().startswith("task:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # no temp file left
    ok = CliRunner().invoke(job, args + ["--out", "runs/job.yaml"])
    assert ok.exit_code == 0 and (tmp_path / "runs/job.yaml").exists(), ok.output
