"""Renders ready-to-submit job specs that run `seqtrain train`.

The config is built and validated with `trainer.experiment.load` first, so a bad
config fails here and not an hour later on a cluster. It then travels with
the job, frozen at render time:

* tfjob / k8s / tpu: the fully resolved config in a ConfigMap, mounted at
  /etc/seqtrain/config.yaml and read with `train --config`.
* vertex: `--set key=value` container args for every key that differs from
  the task default (a CustomJob has no ConfigMaps); the renderer checks that
  these args rebuild exactly the same config.

Roles come from the environment the platform injects (TF_CONFIG, CLUSTER_SPEC,
or SEQTRAIN_WORKER_HOSTS + JOB_COMPLETION_INDEX); see trainer/cluster.py.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import shlex
from typing import Any

import yaml

from trainer import cluster, config, experiment
from trainer.errors import EXIT_PREEMPTED, UserError
from trainer.jobs import tune

PLATFORMS = ("tfjob", "k8s", "vertex", "tpu")
CONFIG_DIR = "/etc/seqtrain"
CONFIG_PATH = f"{CONFIG_DIR}/config.yaml"
# Extra seconds Kubernetes waits after SIGTERM beyond the trainer's own save budget.
GRACE_MARGIN_SECS = 30
# Largest TPU slice that is one host (one pod), in chips, per GKE accelerator label.
TPU_CHIPS_PER_HOST = {
    "tpu-v4-podslice": 4,
    "tpu-v5-lite-podslice": 8,
    "tpu-v5p-slice": 4,
    "tpu-v6e-slice": 8,
}
DEFAULT_TPU = ("tpu-v5-lite-podslice", "2x4")
DEFAULT_VERTEX_MACHINE = "n1-standard-8"
DEFAULT_VERTEX_GPU = "NVIDIA_TESLA_T4"
# GPUs that attach to N1 machines; the others come with their own machine family.
N1_GPUS = ("NVIDIA_TESLA_T4", "NVIDIA_TESLA_V100", "NVIDIA_TESLA_P100", "NVIDIA_TESLA_P4")
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@dataclasses.dataclass(frozen=True)
class JobRequest:
    """What `seqtrain job render` was asked for (one field per flag)."""

    platform: str
    image: str
    model_dir: str
    workers: int = 1
    gpus_per_worker: int = 0
    task: str | None = None
    config_file: str | None = None
    overrides: tuple[str, ...] = ()
    name: str | None = None
    namespace: str = "default"
    machine_type: str | None = None
    accelerator_type: str | None = None
    tpu_type: str | None = None
    tpu_topology: str | None = None
    backoff_limit: int = 3
    evaluator: bool = False
    tune: tuple[str, ...] = ()
    metric: str | None = None
    goal: str | None = None
    trials: int = 10
    parallel: int = 2


def render(req: JobRequest) -> str:
    """The spec as YAML text (several documents for the Kubernetes platforms).

    Raises:
      UserError: bad flags or an invalid config (ConfigError).
    """
    objects, name = _build(req)
    return _header(req, name) + "---\n".join(_dump(obj) for obj in objects)


def build(req: JobRequest) -> list[dict]:
    """The spec as plain dicts, in the order they should be applied."""
    return _build(req)[0]


def _build(req: JobRequest) -> tuple[list[dict], str]:
    _check_flags(req)
    params = _check_tuning(req)
    if req.evaluator:  # the side-car evaluator evaluates; the trainer only trains
        req = dataclasses.replace(req, overrides=tuple(req.overrides) + (tune.EVAL_IN_LOOP_OFF,))
    cfg = experiment.load(req.task, req.config_file, req.overrides)
    if req.platform == "tpu":
        cfg = _force_tpu(req, cfg)
    _check_config(req, cfg)
    name = req.name or default_name(cfg.task.name)
    _check_name(req, name)
    if req.platform == "vertex":
        spec = _vertex(req, cfg)
        if req.evaluator:
            _add_vertex_evaluator(req, spec)
        if params:
            return [_tuning_job(req, cfg, params, name, spec)], name
        return [spec], name
    objects = [_config_map(req, cfg, name)]
    if req.platform == "tfjob":
        objects.append(_tfjob(req, cfg, name))
        if req.evaluator:
            _add_tfjob_evaluator(req, cfg, name, objects[-1])
        if params:
            objects[-1] = _tuning_job(req, cfg, params, name, objects[-1])
    elif req.platform == "k8s":
        objects += [_headless_service(req, name), _indexed_job(req, cfg, name)]
    else:
        objects.append(_tpu_job(req, cfg, name))
    if req.evaluator and req.platform in ("k8s", "tpu"):
        objects.append(_evaluator_job(req, cfg, name))
    return objects, name


def default_name(task: str) -> str:
    return "seqtrain-" + task.replace("_", "-").lower()


def config_overrides(cfg: config.ExperimentConfig) -> list[str]:
    """`key.path=value` strings that turn the task default into `cfg`."""
    default = config.to_dict(experiment.default_config(cfg.task.name))
    return [f"{path}={_flow(value)}" for path, value in _leaf_diff(default, cfg.to_dict(), "")]


# ----------------------------------------------------------------------------
# Platforms
# ----------------------------------------------------------------------------


def _tfjob(req: JobRequest, cfg, name: str) -> dict:
    """Kubeflow TFJob: one Chief + N-1 Workers; the operator injects TF_CONFIG."""

    def replica(count: int) -> dict:
        return {
            "replicas": count,
            # 1-127 permanent, 128-255 (143 = preempted after saving) restart the pod.
            "restartPolicy": "ExitCode",
            "template": {
                "metadata": {"labels": _labels(name, cfg)},
                "spec": _pod_spec(req, cfg, name, container_name="tensorflow",
                                  port_name="tfjob-port"),
            },
        }

    replicas = {"Chief": replica(1)}
    if req.workers > 1:
        replicas["Worker"] = replica(req.workers - 1)
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "TFJob",
        "metadata": _metadata(req, cfg, name),
        "spec": {
            "runPolicy": {"backoffLimit": req.backoff_limit, "cleanPodPolicy": "Running"},
            "tfReplicaSpecs": replicas,
        },
    }


def _headless_service(req: JobRequest, name: str) -> dict:
    """Gives pod i of the Indexed Job the DNS name `<name>-<i>.<name>`."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": req.namespace,
                     "labels": {"app.kubernetes.io/name": "seqtrain",
                                "app.kubernetes.io/instance": name}},
        "spec": {
            "clusterIP": "None",
            # Publish DNS before pods are Ready: workers dial each other at startup.
            "publishNotReadyAddresses": True,
            "selector": {"seqtrain/job": name},
            "ports": [{"name": "tf-grpc", "port": cluster.DEFAULT_PORT,
                       "targetPort": cluster.DEFAULT_PORT}],
        },
    }


def _indexed_job(req: JobRequest, cfg, name: str) -> dict:
    """batch/v1 Indexed Job: pod i computes its TF_CONFIG from its completion index."""
    env = [{"name": cluster.ENV_WORKER_HOSTS,
            "value": cluster.worker_hosts(name, name, req.workers)}]
    pod = _pod_spec(req, cfg, name, container_name="trainer", port_name="tf-grpc", env=env)
    pod["subdomain"] = name
    pod["restartPolicy"] = "Never"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(req, cfg, name),
        "spec": {
            "completionMode": "Indexed",
            "completions": req.workers,
            "parallelism": req.workers,
            # Each index may be retried backoffLimit times; any index failing fails the job
            # (the all-reduce needs every worker).
            "backoffLimitPerIndex": req.backoff_limit,
            "maxFailedIndexes": 0,
            "podReplacementPolicy": "Failed",
            "podFailurePolicy": _pod_failure_policy("trainer"),
            "template": {"metadata": {"labels": _labels(name, cfg)}, "spec": pod},
        },
    }


def _tpu_job(req: JobRequest, cfg, name: str) -> dict:
    """One pod on a single-host GKE TPU slice, TPUStrategy on the local TPU."""
    accelerator, topology = req.tpu_type or DEFAULT_TPU[0], req.tpu_topology or DEFAULT_TPU[1]
    pod = _pod_spec(req, cfg, name, container_name="trainer", port_name=None,
                    resources={"google.com/tpu": str(_tpu_chips(topology))})
    pod["restartPolicy"] = "Never"
    pod["nodeSelector"] = {
        "cloud.google.com/gke-tpu-accelerator": accelerator,
        "cloud.google.com/gke-tpu-topology": topology,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(req, cfg, name),
        "spec": {
            "completions": 1,
            "parallelism": 1,
            "backoffLimit": req.backoff_limit,
            "podReplacementPolicy": "Failed",
            "podFailurePolicy": _pod_failure_policy("trainer"),
            "template": {"metadata": {"labels": _labels(name, cfg)}, "spec": pod},
        },
    }


def _vertex(req: JobRequest, cfg) -> dict:
    """CustomJobSpec for `gcloud ai custom-jobs create --config`.

    No --model-dir arg: Vertex derives AIP_MODEL_DIR, AIP_CHECKPOINT_DIR and
    AIP_TENSORBOARD_LOG_DIR from baseOutputDirectory and the trainer maps them.
    """
    overrides = config_overrides(cfg)
    if experiment.load(cfg.task.name, None, overrides) != cfg:
        raise RuntimeError(f"--set args {overrides} do not rebuild the rendered config")
    args = ["train", "--task", cfg.task.name]
    for item in overrides:
        args += ["--set", item]
    machine = {"machineType": req.machine_type or DEFAULT_VERTEX_MACHINE}
    if req.gpus_per_worker:
        machine["acceleratorType"] = req.accelerator_type or DEFAULT_VERTEX_GPU
        machine["acceleratorCount"] = req.gpus_per_worker

    def pool(count: int) -> dict:
        return {"machineSpec": dict(machine), "replicaCount": count,
                "containerSpec": {"imageUri": req.image, "args": list(args)}}

    pools = [pool(1)] + ([pool(req.workers - 1)] if req.workers > 1 else [])
    spec: dict[str, Any] = {
        "workerPoolSpecs": pools,
        "baseOutputDirectory": {"outputUriPrefix": req.model_dir},
    }
    if req.workers > 1:
        # MultiWorkerMirrored cannot lose a worker mid-step: restart them all together.
        spec["scheduling"] = {"restartJobOnWorkerRestart": True}
    return spec


# ----------------------------------------------------------------------------
# Side-car evaluator and tuning (trainer/jobs/tune.py)
# ----------------------------------------------------------------------------


def evaluator_args(model_dir: str | None) -> list[str]:
    """The evaluator's command: evaluate each new checkpoint until the final step."""
    return ["evaluate", "--watch"] + (["--model-dir", model_dir] if model_dir else [])


def _add_tfjob_evaluator(req: JobRequest, cfg, name: str, tfjob: dict) -> None:
    """An `Evaluator` replica: TF_CONFIG task type evaluator, outside the training cluster."""
    pod = _pod_spec(req, cfg, name, container_name="tensorflow", port_name="tfjob-port")
    pod["containers"][0]["args"] = evaluator_args(req.model_dir)
    tfjob["spec"]["tfReplicaSpecs"]["Evaluator"] = {
        "replicas": 1,
        "restartPolicy": "ExitCode",
        "template": {"metadata": {"labels": _labels(name, cfg)}, "spec": pod},
    }


def _evaluator_job(req: JobRequest, cfg, name: str) -> dict:
    """Plain Kubernetes: a one-pod Job beside the training job, on the same model dir."""
    eval_name = f"{name}-eval"
    pod = _pod_spec(req, cfg, name, container_name="evaluator", port_name=None)
    pod["containers"][0]["args"] = evaluator_args(req.model_dir)
    pod["restartPolicy"] = "Never"
    labels = {**_labels(name, cfg), "seqtrain/role": "evaluator"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": eval_name, "namespace": req.namespace, "labels": labels},
        "spec": {
            "completions": 1,
            "parallelism": 1,
            "backoffLimit": req.backoff_limit,
            "podReplacementPolicy": "Failed",
            "podFailurePolicy": _pod_failure_policy("evaluator"),
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def _add_vertex_evaluator(req: JobRequest, spec: dict) -> None:
    """Worker pool 3 (Vertex's evaluator pool); pools 1 and 2 stay as placeholders if unused.

    No --model-dir: the evaluator reads the same AIP_MODEL_DIR/AIP_CHECKPOINT_DIR as the
    trainer, which differ per tuning trial.
    """
    pools = spec["workerPoolSpecs"]
    chief = pools[0]
    while len(pools) < 3:
        pools.append({})
    pools.append({"machineSpec": {"machineType": chief["machineSpec"]["machineType"]},
                  "replicaCount": 1,
                  "containerSpec": {"imageUri": req.image, "args": evaluator_args(None)}})


def _tuning_job(req: JobRequest, cfg, params, name: str, job: dict) -> dict:
    metric, goal = _tuning_metric(req, cfg)
    if req.platform == "vertex":
        return tune.vertex_tuning_job(name, job, params, metric, goal, req.trials, req.parallel)
    return tune.katib_experiment(name, req.namespace, job, params, metric, goal, req.trials,
                                 req.parallel, req.model_dir)


def _tuning_metric(req: JobRequest, cfg) -> tuple[str, str]:
    from trainer import registry

    spec = registry.spec(cfg.task.name)
    metric = req.metric or spec.headline_metric
    goal = req.goal or (spec.headline_goal if metric == spec.headline_metric else None)
    if goal is None:
        raise UserError(f"--metric {metric} is not {cfg.task.name}'s headline metric "
                        f"({spec.headline_metric}); say which way is better with --goal max|min.")
    return metric, goal


def _check_tuning(req: JobRequest):
    if not req.tune:
        if req.metric or req.goal:
            raise UserError("--metric and --goal choose what --tune optimizes; add --tune "
                            "KEY=... (or drop them).")
        return []
    if req.platform not in ("vertex", "tfjob"):
        raise UserError(f"--tune renders a Vertex HyperparameterTuningJob (--platform vertex) "
                        f"or a Katib Experiment (--platform tfjob), got --platform {req.platform}.")
    if req.evaluator:
        raise UserError("--tune with --evaluator: the tuning services read the metric from the "
                        "chief, so tune with in-loop evaluation (drop --evaluator).")
    if req.goal not in (None, *tune.GOALS):
        raise UserError(f"--goal must be max or min, got {req.goal!r}.")
    if req.trials < 1 or not 1 <= req.parallel <= req.trials:
        raise UserError(f"--trials must be >= 1 and --parallel between 1 and --trials; got "
                        f"--trials {req.trials}, --parallel {req.parallel}.")
    return tune.parse_tune(req.tune, req.task, req.config_file, req.overrides)


# ----------------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------------


# Least privilege for every rendered pod. The image runs as UID/GID 10001 (Dockerfile);
# stating it lets the kubelet verify runAsNonRoot without inspecting the image.
POD_SECURITY = {
    "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


def _pod_spec(req, cfg, name, *, container_name, port_name, env=None, resources=None) -> dict:
    if resources is None and req.gpus_per_worker:
        resources = {"nvidia.com/gpu": str(req.gpus_per_worker)}  # quantities are strings
    container: dict[str, Any] = {
        "name": container_name,
        "image": req.image,
        "args": ["train", "--task", cfg.task.name, "--config", CONFIG_PATH,
                 "--model-dir", req.model_dir],
    }
    if env:
        container["env"] = env
    if port_name:
        container["ports"] = [{"name": port_name, "containerPort": cluster.DEFAULT_PORT}]
    if resources:
        container["resources"] = {"limits": dict(resources), "requests": dict(resources)}
    container["volumeMounts"] = [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}]
    container["securityContext"] = copy.deepcopy(CONTAINER_SECURITY)
    pod: dict[str, Any] = {
        # Longer than the trainer's own save budget, so SIGKILL never cuts a checkpoint.
        "terminationGracePeriodSeconds": cfg.runtime.preemption_grace_secs + GRACE_MARGIN_SECS,
        "securityContext": copy.deepcopy(POD_SECURITY),
        "containers": [container],
        "volumes": [{"name": "config", "configMap": {"name": f"{name}-config"}}],
    }
    selector = {}
    if req.machine_type:
        selector["node.kubernetes.io/instance-type"] = req.machine_type
    if req.accelerator_type:
        selector["cloud.google.com/gke-accelerator"] = req.accelerator_type
    if selector:
        pod["nodeSelector"] = selector
    return pod


def _pod_failure_policy(container: str) -> dict:
    """Exit 1-127 fails the job (user error, bug); 128-255 (143 preempted) retries."""
    return {"rules": [
        # Node preemption, eviction, drain: retry without using up backoffLimit.
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "FailJob", "onExitCodes": {
            "containerName": container, "operator": "In", "values": _Flow(range(1, 128))}},
    ]}


def _config_map(req: JobRequest, cfg, name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-config", "namespace": req.namespace,
                     "labels": _labels(name, cfg)},
        "data": {"config.yaml": cfg.to_yaml()},
    }


def _metadata(req: JobRequest, cfg, name: str) -> dict:
    return {"name": name, "namespace": req.namespace, "labels": _labels(name, cfg)}


def _labels(name: str, cfg) -> dict:
    return {"app.kubernetes.io/name": "seqtrain", "app.kubernetes.io/instance": name,
            "seqtrain/job": name, "seqtrain/task": cfg.task.name}


# ----------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------


def _check_flags(req: JobRequest) -> None:
    if req.platform not in PLATFORMS:
        raise UserError(f"--platform {req.platform!r} is not one of {', '.join(PLATFORMS)}.")
    if not req.image or any(c.isspace() for c in req.image):
        raise UserError(f"--image must be a container image reference, got {req.image!r}.")
    if req.workers < 1 or req.gpus_per_worker < 0 or req.backoff_limit < 0:
        raise UserError(
            f"--workers must be >= 1 and --gpus-per-worker, --backoff-limit >= 0; got "
            f"{req.workers}, {req.gpus_per_worker}, {req.backoff_limit}."
        )
    scheme = req.model_dir.split("://", 1)[0] if "://" in req.model_dir else ""
    if not scheme or (req.platform == "vertex" and scheme != "gs"):
        need = "a gs:// URI" if req.platform == "vertex" else "a remote URI such as gs://bucket/run"
        raise UserError(
            f"--model-dir must be {need} for --platform {req.platform}, got {req.model_dir!r}: "
            "pods are ephemeral, so checkpoints must outlive them for resume to work."
        )
    if req.platform != "vertex" and not _DNS_LABEL.match(req.namespace or ""):
        raise UserError(f"--namespace must be a DNS-1123 label, got {req.namespace!r}.")
    if req.accelerator_type and not req.gpus_per_worker:
        raise UserError(
            f"--accelerator-type {req.accelerator_type!r} needs --gpus-per-worker >= 1."
        )
    if (req.platform == "vertex" and req.accelerator_type not in (None, *N1_GPUS)
            and not req.machine_type):
        raise UserError(
            f"--accelerator-type {req.accelerator_type} does not attach to the default "
            f"{DEFAULT_VERTEX_MACHINE}; pass the matching --machine-type (for example "
            "g2-standard-12 for NVIDIA_L4, a2-highgpu-1g for NVIDIA_TESLA_A100)."
        )
    if req.platform != "tpu" and (req.tpu_type or req.tpu_topology):
        raise UserError("--tpu-type/--tpu-topology only apply to --platform tpu.")
    if req.platform == "tpu":
        _check_tpu_flags(req)


def _check_tpu_flags(req: JobRequest) -> None:
    if req.gpus_per_worker or req.machine_type:
        raise UserError(
            "--gpus-per-worker, --accelerator-type and --machine-type do not apply to "
            "--platform tpu; choose the slice with --tpu-type and --tpu-topology."
        )
    accelerator = req.tpu_type or DEFAULT_TPU[0]
    if accelerator not in TPU_CHIPS_PER_HOST:
        raise UserError(
            f"--tpu-type {accelerator!r} is not a known GKE TPU accelerator; use one of "
            f"{', '.join(TPU_CHIPS_PER_HOST)}."
        )
    topology = req.tpu_topology or DEFAULT_TPU[1]
    chips = _tpu_chips(topology)
    if req.workers != 1 or chips > TPU_CHIPS_PER_HOST[accelerator]:
        raise UserError(
            f"--platform tpu renders single-host slices only; got --workers {req.workers} and "
            f"--tpu-topology {topology} ({chips} chips, {accelerator} has at most "
            f"{TPU_CHIPS_PER_HOST[accelerator]} per host). TensorFlow's TPUStrategy reaches a "
            "multi-host slice through a named Cloud TPU, which GKE does not provide; use a "
            "Cloud TPU VM pod slice for that (jobs/README.md)."
        )


def _tpu_chips(topology: str) -> int:
    if not re.fullmatch(r"[1-9]\d*(x[1-9]\d*){1,2}", topology or ""):
        raise UserError(f"--tpu-topology must look like 2x4 or 2x2x1, got {topology!r}.")
    return math.prod(int(d) for d in topology.split("x"))


def _force_tpu(req: JobRequest, cfg):
    """The config with TPUStrategy on the pod's own TPU (runtime.tpu=local)."""
    runtime = cfg.runtime
    if runtime.strategy not in ("auto", "tpu") or runtime.tpu not in ("", "local"):
        raise UserError(
            f"--platform tpu runs runtime.strategy=tpu with runtime.tpu=local; the config sets "
            f"runtime.strategy={runtime.strategy!r}, runtime.tpu={runtime.tpu!r}. Leave them "
            "at their defaults (or set exactly those values)."
        )
    forced = ("runtime.strategy=tpu", "runtime.tpu=local")
    return experiment.load(req.task, req.config_file, tuple(req.overrides) + forced)


def _check_config(req: JobRequest, cfg) -> None:
    strategy = cfg.runtime.strategy
    if req.platform == "tpu":
        replicas = _tpu_chips(req.tpu_topology or DEFAULT_TPU[1])
    else:
        if req.workers > 1 and strategy not in ("auto", "multi_worker"):
            raise UserError(
                f"runtime.strategy={strategy!r} with --workers {req.workers} would train "
                f"{req.workers} unconnected copies; use runtime.strategy=auto or multi_worker."
            )
        if strategy == "tpu":
            raise UserError(
                f"runtime.strategy=tpu needs --platform tpu, got --platform {req.platform}."
            )
        replicas = req.workers * max(req.gpus_per_worker, 1)
    if cfg.train.batch_size % replicas:
        raise UserError(
            f"train.batch_size={cfg.train.batch_size} (global) does not divide evenly across "
            f"{replicas} replicas; use a multiple of {replicas}."
        )


def _check_name(req: JobRequest, name: str) -> None:
    suffix = {"tfjob": f"-worker-{req.workers - 1}", "k8s": f"-{req.workers - 1}"}.get(
        req.platform, "-config")
    if req.platform == "vertex":
        return  # the display name is passed to gcloud, not part of the spec
    if not _DNS_LABEL.match(name) or len(name) + len(suffix) > 63:
        raise UserError(
            f"--name {name!r} must be a lowercase DNS label (letters, digits, '-', starting "
            f"with a letter) of at most {63 - len(suffix)} characters, since pods are named "
            f"'{name}{suffix}'."
        )


# ----------------------------------------------------------------------------
# YAML
# ----------------------------------------------------------------------------


class _Flow(list):
    """A list written on one line, e.g. the 127 permanent exit codes."""


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data):  # no &id001 anchors for shared dicts
        return True


def _repr_str(dumper: yaml.SafeDumper, data: str):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _repr_str)
_Dumper.add_representer(
    _Flow, lambda d, data: d.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True))


def _dump(obj: dict) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=100)


def _flow(value) -> str:
    """A value as one line of YAML that `--set key=<it>` parses back to the same value."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf)
    return text.strip().removesuffix("...").strip()


def _leaf_diff(old: dict, new: dict, prefix: str):
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(old.get(key), dict):
            yield from _leaf_diff(old[key], value, f"{prefix}{key}.")
        elif old.get(key) != value:
            yield f"{prefix}{key}", value


def command_line(req: JobRequest) -> str:
    """The `seqtrain job render` command that reproduces `req`."""
    parts = ["seqtrain", "job", "render", "--platform", req.platform, "--image", req.image,
             "--workers", str(req.workers)]
    if req.gpus_per_worker:
        parts += ["--gpus-per-worker", str(req.gpus_per_worker)]
    for flag, value in [("--task", req.task), ("--config", req.config_file),
                        ("--name", req.name), ("--machine-type", req.machine_type),
                        ("--accelerator-type", req.accelerator_type),
                        ("--tpu-type", req.tpu_type), ("--tpu-topology", req.tpu_topology)]:
        if value:
            parts += [flag, value]
    for item in req.overrides:
        parts += ["--set", item]
    if req.namespace != "default" and req.platform != "vertex":
        parts += ["--namespace", req.namespace]
    if req.backoff_limit != 3:
        parts += ["--backoff-limit", str(req.backoff_limit)]
    if req.evaluator:
        parts += ["--evaluator"]
    for item in req.tune:
        parts += ["--tune", item]
    if req.tune:
        for flag, value in [("--metric", req.metric), ("--goal", req.goal)]:
            if value:
                parts += [flag, value]
        parts += ["--trials", str(req.trials), "--parallel", str(req.parallel)]
    parts += ["--model-dir", req.model_dir]
    return shlex.join(parts)


def _header(req: JobRequest, name: str) -> str:
    if req.platform == "vertex" and req.tune:
        submit = ("POST it as JSON to https://REGION-aiplatform.googleapis.com/v1/projects/"
                  "PROJECT/locations/REGION/hyperparameterTuningJobs (a HyperparameterTuningJob)")
    elif req.platform == "vertex":
        submit = f"gcloud ai custom-jobs create --region=REGION --display-name={name} --config=FILE"
    else:
        submit = "kubectl apply -f FILE"
    if req.platform == "vertex":
        retry = ("# Retries: Vertex restarts a replica that exits non-zero (all replicas together "
                 "with restartJobOnWorkerRestart); the trainer resumes from AIP_CHECKPOINT_DIR.")
    else:
        retry = (f"# Exit codes: 0 done, 1-127 permanent failure (2 = user error), "
                 f"{EXIT_PREEMPTED} preempted after saving a checkpoint (retried; resumes).")
    lines = [
        f"# seqtrain job spec ({req.platform}); generated, edit the command and re-render:",
        f"#   {command_line(req)}",
        f"# Submit: {submit}",
        retry,
    ]
    return "\n".join(lines) + "\n"
