"""The cluster this process belongs to, and where its outputs go, read from the environment.

Nothing here imports TensorFlow: the trainer calls `from_environ()` and
`resolve_dirs()` before it builds a strategy, and `seqtrain job render` uses
the same constants to write job specs.

Cluster precedence (the first one present wins, the rest are ignored):

1. `TF_CONFIG`: Kubeflow TFJob, Vertex AI (for TensorFlow jobs), `seqtrain
   launch`, or hand-written. Used as is. An empty value or `{}` counts as absent.
2. `CLUSTER_SPEC`: Vertex AI's own description of the worker pools. Mapped
   onto TF_CONFIG roles exactly as Vertex maps them: workerpool0 -> chief,
   workerpool1 -> worker, workerpool3 -> evaluator (not part of the training
   cluster). workerpool2 (parameter servers / Reduction Server) is rejected:
   seqtrain trains with synchronous all-reduce only.
3. `SEQTRAIN_WORKER_HOSTS` + `JOB_COMPLETION_INDEX`: a plain Kubernetes Indexed
   Job (see `jobs/k8s.yaml`). Hosts are the comma-separated `host:port` of every
   pod, index 0 first; pod 0 is the chief and pod i > 0 is worker i-1, the same
   roles a TFJob with one Chief and N-1 Workers gets.
4. Nothing: a single process.

When the cluster came from 2 or 3, `ClusterInfo.tf_config` holds the TF_CONFIG
that was synthesized; the strategy builder exports it (`export_tf_config`)
before creating MultiWorkerMirroredStrategy, so TF sees the cluster validated here.

Output directory precedence (`resolve_dirs`):

1. An explicit model dir (`--model-dir` flag or config) wins over everything:
   checkpoints go to MODEL_DIR/checkpoints, TensorBoard logs to MODEL_DIR/train
   and MODEL_DIR/eval, and any AIP_* variables are ignored.
2. Otherwise Vertex AI's `AIP_MODEL_DIR` (set from the CustomJob's
   `baseOutputDirectory`) is the model dir, `AIP_CHECKPOINT_DIR` the checkpoint
   dir and `AIP_TENSORBOARD_LOG_DIR` the TensorBoard root (train/ and eval/ under it).
3. Otherwise the caller's default, if it passed one; else a UserError.
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
from typing import Mapping

from trainer.errors import UserError
from trainer.run_dir import CHECKPOINTS

ROLES = ("chief", "worker", "ps", "evaluator")
TRAINING_ROLES = ("chief", "worker")

# Vertex AI worker pools, in the order of CustomJobSpec.workerPoolSpecs[].
VERTEX_POOL_ROLES = {
    "workerpool0": "chief",
    "workerpool1": "worker",
    "workerpool2": "ps",
    "workerpool3": "evaluator",
}

# Port every pod listens on for TF's gRPC collectives. 2222 is also the TFJob
# operator's default (kubeflow.org/v1 TFJobDefaultPort, port name "tfjob-port").
DEFAULT_PORT = 2222

# Environment of a Kubernetes Indexed Job (jobs/k8s.yaml).
ENV_WORKER_HOSTS = "SEQTRAIN_WORKER_HOSTS"
ENV_COMPLETION_INDEX = "JOB_COMPLETION_INDEX"  # set by Kubernetes in Indexed Jobs

_TF_CONFIG_HINT = (
    'Expected JSON like {"cluster": {"chief": ["host0:2222"], "worker": ["host1:2222"]}, '
    '"task": {"type": "worker", "index": 0}}.'
)


@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    """Where this process sits in the cluster."""

    tf_config: dict | None  # parsed (possibly synthesized) TF_CONFIG, None if single process
    task_type: str | None  # chief | worker | evaluator | None
    task_index: int
    num_workers: int  # processes that train: chief + workers
    source: str  # "TF_CONFIG" | "CLUSTER_SPEC" | "INDEXED_JOB" | "none"

    @property
    def is_chief(self) -> bool:
        """The process that writes to the model dir."""
        if self.tf_config is None:
            return True
        if self.task_type == "chief":
            return True
        has_chief = bool(self.tf_config.get("cluster", {}).get("chief"))
        return not has_chief and self.task_type == "worker" and self.task_index == 0

    @property
    def is_evaluator(self) -> bool:
        """A side-car evaluator task (TFJob `Evaluator`, Vertex workerpool3).

        It is not part of the training cluster; seqtrain evaluates inside the
        training loop, so the trainer logs a message and exits 0 for it.
        """
        return self.task_type == "evaluator"

    @property
    def is_training_worker(self) -> bool:
        """True for a single process, the chief and workers: they join the all-reduce."""
        return self.tf_config is None or self.task_type in TRAINING_ROLES

    @property
    def is_multi_worker(self) -> bool:
        return self.num_workers > 1

    @property
    def worker_id(self) -> str:
        return "single" if self.tf_config is None else f"{self.task_type}-{self.task_index}"

    def export_tf_config(self, environ: dict | None = None) -> None:
        """Writes `tf_config` to TF_CONFIG, where TF's cluster resolvers read it.

        Needed when the cluster came from CLUSTER_SPEC or an Indexed Job. Call it
        before creating the strategy. A single process leaves TF_CONFIG untouched.
        """
        environ = os.environ if environ is None else environ
        if self.tf_config is not None:
            environ["TF_CONFIG"] = json.dumps(self.tf_config)


def from_environ(environ: Mapping[str, str] | None = None) -> ClusterInfo:
    """Reads the cluster from TF_CONFIG, CLUSTER_SPEC or an Indexed Job's env.

    See the module docstring for the precedence.

    Raises:
      UserError: malformed JSON, unknown roles, bad indices, parameter servers.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get("TF_CONFIG", "").strip()
    if raw and raw != "{}":
        return _info_from_tf_config(_load_json(raw, "TF_CONFIG", _TF_CONFIG_HINT), "TF_CONFIG")
    raw = environ.get("CLUSTER_SPEC", "").strip()
    if raw and raw != "{}":
        return _info_from_tf_config(tf_config_from_cluster_spec(raw), "CLUSTER_SPEC")
    hosts = environ.get(ENV_WORKER_HOSTS, "").strip()
    if hosts:
        tf_config = tf_config_for_indexed_job(hosts, environ.get(ENV_COMPLETION_INDEX))
        return _info_from_tf_config(tf_config, "INDEXED_JOB")
    return ClusterInfo(None, None, 0, 1, "none")


# ----------------------------------------------------------------------------
# Vertex AI CLUSTER_SPEC
# ----------------------------------------------------------------------------


def tf_config_from_cluster_spec(raw: str) -> dict:
    """The TF_CONFIG Vertex AI injects next to a CLUSTER_SPEC, built from it.

    Vertex's CLUSTER_SPEC is
    `{"cluster": {"workerpool0": [...], "workerpool1": [...]}, "environment": "cloud",
    "task": {"type": "workerpool1", "index": 0, "trial": "..."}, "job": ...}`.
    The result maps pools to roles and leaves the evaluator out of `cluster`,
    as Vertex's TF_CONFIG does ("evaluator is not part of the training cluster").

    Raises:
      UserError: malformed JSON, unknown pools, workerpool2, a bad task.
    """
    hint = (
        'Expected Vertex AI\'s JSON like {"cluster": {"workerpool0": ["host0:2222"], '
        '"workerpool1": ["host1:2222"]}, "task": {"type": "workerpool1", "index": 0}}.'
    )
    spec = _load_json(raw, "CLUSTER_SPEC", hint)
    cluster = spec.get("cluster")
    if not isinstance(cluster, dict) or not cluster:
        raise UserError(f"CLUSTER_SPEC has no 'cluster' mapping of worker pools. {hint}")
    for pool, addrs in cluster.items():
        if pool not in VERTEX_POOL_ROLES:
            raise UserError(
                f"CLUSTER_SPEC cluster has unknown worker pool {pool!r}; valid pools: "
                f"{', '.join(VERTEX_POOL_ROLES)}."
            )
        _check_addresses(addrs, f"CLUSTER_SPEC cluster.{pool}")
    if cluster.get("workerpool2"):
        raise UserError(
            "CLUSTER_SPEC has a workerpool2 (parameter servers or Reduction Server, "
            f"{len(cluster['workerpool2'])} replica(s)); seqtrain trains with synchronous "
            "all-reduce (MultiWorkerMirrored) and supports workerpool0 (chief), workerpool1 "
            "(workers) and workerpool3 (evaluator) only. Remove workerPoolSpecs[2]."
        )
    chief = cluster.get("workerpool0") or []
    if len(chief) != 1:
        raise UserError(
            f"CLUSTER_SPEC workerpool0 must hold exactly one replica (the chief), got {chief!r}. "
            "Set workerPoolSpecs[0].replicaCount to 1 and put the other workers in pool 1."
        )
    task = spec.get("task")
    if not isinstance(task, dict) or task.get("type") not in VERTEX_POOL_ROLES:
        raise UserError(
            f"CLUSTER_SPEC task must be a mapping with type one of "
            f"{', '.join(VERTEX_POOL_ROLES)}; got {task!r}. {hint}"
        )
    pool = task["type"]
    index = task.get("index", 0)
    _check_index(index, len(cluster.get(pool) or []), "CLUSTER_SPEC task.index", pool)

    tf_cluster = {"chief": list(chief)}
    if cluster.get("workerpool1"):
        tf_cluster["worker"] = list(cluster["workerpool1"])
    tf_task = {"type": VERTEX_POOL_ROLES[pool], "index": index}
    if "trial" in task:
        tf_task["trial"] = task["trial"]
    return {"cluster": tf_cluster, "task": tf_task, "environment": "cloud"}


# ----------------------------------------------------------------------------
# Kubernetes Indexed Job
# ----------------------------------------------------------------------------


def tf_config_for_indexed_job(hosts: str, completion_index: str | None) -> dict:
    """TF_CONFIG for pod `completion_index` of an Indexed Job with these hosts.

    Pod 0 is the chief and pod i > 0 is worker i-1: the TF_CONFIG equals what
    the TFJob operator injects into a TFJob with one Chief and N-1 Workers,
    with the pods' DNS names in place of the operator's per-replica Services.

    Raises:
      UserError: empty or malformed hosts, missing or out-of-range index.
    """
    addrs = [h.strip() for h in hosts.split(",")]
    _check_addresses(addrs, ENV_WORKER_HOSTS)
    if len(set(addrs)) != len(addrs):
        raise UserError(f"{ENV_WORKER_HOSTS} names a host twice: {hosts!r}.")
    if completion_index is None or not completion_index.strip().isdigit():
        raise UserError(
            f"{ENV_WORKER_HOSTS} is set but {ENV_COMPLETION_INDEX}={completion_index!r} is not "
            "a non-negative integer. Kubernetes sets it in Jobs with completionMode: Indexed; "
            "render the spec with `seqtrain job render --platform k8s`."
        )
    index = int(completion_index)
    _check_index(index, len(addrs), ENV_COMPLETION_INDEX, f"{ENV_WORKER_HOSTS} hosts")
    cluster = {"chief": addrs[:1]}
    if len(addrs) > 1:
        cluster["worker"] = addrs[1:]
    task = {"type": "chief", "index": 0} if index == 0 else {"type": "worker", "index": index - 1}
    return {"cluster": cluster, "task": task, "environment": "cloud"}


def worker_hosts(job_name: str, service: str, num_workers: int, port: int = DEFAULT_PORT) -> str:
    """SEQTRAIN_WORKER_HOSTS for an Indexed Job: `<job>-<i>.<service>:<port>`, comma-separated.

    Kubernetes names pod i of an Indexed Job `<job>-<i>` and, with
    `subdomain: <service>` and a headless Service of that name, resolves it as
    `<job>-<i>.<service>` inside the namespace.
    """
    return ",".join(f"{job_name}-{i}.{service}:{port}" for i in range(num_workers))


# ----------------------------------------------------------------------------
# TF_CONFIG validation
# ----------------------------------------------------------------------------


def _load_json(raw: str, source: str, hint: str) -> dict:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise UserError(
            f"{source} is not valid JSON ({e.msg} at char {e.pos}): {raw[:200]!r}. {hint}"
        ) from None
    if not isinstance(value, dict):
        raise UserError(f"{source} must be a JSON object, got {type(value).__name__}. {hint}")
    return value


def _info_from_tf_config(tf_config: dict, source: str) -> ClusterInfo:
    cluster = tf_config.get("cluster")
    if not isinstance(cluster, dict):
        raise UserError(f"{source} has no 'cluster' mapping. {_TF_CONFIG_HINT}")
    for role, addrs in cluster.items():
        if role not in ROLES:
            raise UserError(
                f"{source} cluster has unknown role {role!r}; valid roles: {', '.join(ROLES)}."
            )
        _check_addresses(addrs, f"{source} cluster.{role}")
    if cluster.get("ps"):
        raise UserError(
            f"{source} names parameter servers ('ps'); seqtrain trains with synchronous "
            "all-reduce (MultiWorkerMirrored) and does not support ParameterServerStrategy. "
            "Use chief/worker roles only."
        )
    task = tf_config.get("task")
    if not isinstance(task, dict) or "type" not in task:
        raise UserError(f"{source} has no 'task' with a 'type'. {_TF_CONFIG_HINT}")
    task_type = task["type"]
    index = task.get("index", 0)
    if task_type == "evaluator" and "evaluator" not in cluster:
        # TF and Vertex leave the evaluator out of the training cluster.
        _check_index(index, None, f"{source} task.index", "evaluator")
    else:
        if task_type not in cluster or task_type == "ps":
            raise UserError(
                f"{source} task.type {task_type!r} is not a training role in its cluster "
                f"({', '.join(cluster) or 'empty'})."
            )
        _check_index(index, len(cluster[task_type]), f"{source} task.index", task_type)
    num_workers = sum(len(cluster.get(role, [])) for role in TRAINING_ROLES)
    if num_workers == 0:
        raise UserError(f"{source} cluster has no chief or worker addresses. {_TF_CONFIG_HINT}")
    return ClusterInfo(tf_config, task_type, index, num_workers, source)


def _check_addresses(addrs, what: str) -> None:
    ok = isinstance(addrs, list) and bool(addrs)
    for a in addrs if ok else ():
        host, sep, port = a.rpartition(":") if isinstance(a, str) else ("", "", "")
        ok = ok and bool(host) and bool(sep) and port.isdigit()
    if not ok:
        raise UserError(
            f"{what} must be a non-empty list of 'host:port' strings, got {addrs!r}."
        )


def _check_index(index, size: int | None, what: str, role: str) -> None:
    """`size` None means any non-negative index is valid (the evaluator)."""
    valid = isinstance(index, int) and not isinstance(index, bool) and index >= 0
    if valid and size is not None:
        valid = index < size
    if valid:
        return
    if size is None:
        raise UserError(f"{what} must be a non-negative integer for {role!r}, got {index!r}.")
    raise UserError(
        f"{what} {index!r} is out of range for {role!r} with {size} address(es); "
        f"expected an integer in [0, {size - 1}]."
    )


# ----------------------------------------------------------------------------
# Output directories
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Dirs:
    """Where a run writes. The trainer writes TensorBoard logs to log_dir/train and log_dir/eval."""

    model_dir: str
    checkpoint_dir: str
    log_dir: str
    source: str  # "flag" | "AIP_MODEL_DIR" | "default"


def resolve_dirs(
    model_dir_flag: str | None,
    environ: Mapping[str, str] | None = None,
    default: str | None = None,
) -> Dirs:
    """Model, checkpoint and TensorBoard dirs: explicit flag > Vertex AIP_* > default.

    Args:
      model_dir_flag: `--model-dir` (or the config's model dir); None or "" if unset.
      environ: defaults to os.environ.
      default: used when neither the flag nor AIP_MODEL_DIR is set.

    Raises:
      UserError: no model dir anywhere and no default.
    """
    environ = os.environ if environ is None else environ
    if model_dir_flag:
        model_dir = _strip(model_dir_flag)
        return Dirs(model_dir, _join(model_dir, CHECKPOINTS), model_dir, "flag")
    aip_model_dir = environ.get("AIP_MODEL_DIR", "").strip()
    if aip_model_dir:
        model_dir = _strip(aip_model_dir)
        checkpoint_dir = environ.get("AIP_CHECKPOINT_DIR", "").strip()
        log_dir = environ.get("AIP_TENSORBOARD_LOG_DIR", "").strip()
        return Dirs(
            model_dir,
            _strip(checkpoint_dir) if checkpoint_dir else _join(model_dir, CHECKPOINTS),
            _strip(log_dir) if log_dir else model_dir,
            "AIP_MODEL_DIR",
        )
    if default:
        model_dir = _strip(default)
        return Dirs(model_dir, _join(model_dir, CHECKPOINTS), model_dir, "default")
    raise UserError(
        "no model dir: pass --model-dir DIR (a local path or gs://bucket/path), or run on "
        "Vertex AI with baseOutputDirectory set so that AIP_MODEL_DIR is defined."
    )


def _strip(path: str) -> str:
    path = path.strip()
    stripped = path.rstrip("/")
    if not stripped or stripped.endswith(":/") or stripped.endswith(":"):
        return path  # "/" or "gs://bucket/" keeps its slash
    return stripped


def _join(base: str, name: str) -> str:
    # Same rule as trainer.storage.join, without importing TensorFlow here.
    return posixpath.join(base, name) if "://" in base else os.path.join(base, name)
