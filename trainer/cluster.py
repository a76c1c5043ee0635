"""The cluster this process belongs to, read from the environment.

`TF_CONFIG` (Kubeflow TFJob, `seqtrain launch`, hand-written) names the
cluster and this task's role. Only the chief writes to the model dir.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping

from trainer.errors import UserError

ROLES = ("chief", "worker", "ps", "evaluator")


@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    """Where this process sits in the cluster."""

    tf_config: dict | None  # parsed (possibly synthesized) TF_CONFIG, None if single process
    task_type: str | None  # chief | worker | ps | evaluator | None
    task_index: int
    num_workers: int  # processes that train: chief + workers
    source: str  # "TF_CONFIG" | "none"

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
    def is_multi_worker(self) -> bool:
        return self.num_workers > 1

    @property
    def worker_id(self) -> str:
        return "single" if self.tf_config is None else f"{self.task_type}-{self.task_index}"


def from_environ(environ: Mapping[str, str] | None = None) -> ClusterInfo:
    """Reads TF_CONFIG. Raises UserError if it is malformed."""
    environ = os.environ if environ is None else environ
    raw = environ.get("TF_CONFIG", "").strip()
    if not raw:
        return ClusterInfo(None, None, 0, 1, "none")
    return _parse_tf_config(raw, "TF_CONFIG")


def _parse_tf_config(raw: str, source: str) -> ClusterInfo:
    hint = (
        'Expected JSON like {"cluster": {"worker": ["host0:port", "host1:port"]}, '
        '"task": {"type": "worker", "index": 0}}.'
    )
    try:
        tf_config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise UserError(f"{source} is not valid JSON ({e.msg} at char {e.pos}). {hint}") from None
    if not isinstance(tf_config, dict) or not isinstance(tf_config.get("cluster"), dict):
        raise UserError(f"{source} has no 'cluster' mapping. {hint}")
    cluster = tf_config["cluster"]
    for role, addrs in cluster.items():
        if role not in ROLES:
            raise UserError(
                f"{source} cluster has unknown role {role!r}; valid roles: {', '.join(ROLES)}."
            )
        if not isinstance(addrs, list) or not all(isinstance(a, str) and ":" in a for a in addrs):
            raise UserError(
                f"{source} cluster.{role} must be a list of 'host:port' strings, got {addrs!r}."
            )
    task = tf_config.get("task")
    if not isinstance(task, dict) or "type" not in task:
        raise UserError(f"{source} has no 'task' with a 'type'. {hint}")
    task_type = task["type"]
    index = task.get("index", 0)
    if task_type not in cluster:
        raise UserError(
            f"{source} task.type {task_type!r} is not a role in its cluster "
            f"({', '.join(cluster) or 'empty'})."
        )
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[task_type]):
        raise UserError(
            f"{source} task.index {index!r} is out of range for role {task_type!r} "
            f"with {len(cluster[task_type])} address(es)."
        )
    if "ps" in cluster:
        raise UserError(
            f"{source} names parameter servers ('ps'); seqtrain trains with synchronous "
            "all-reduce (MultiWorkerMirrored) and does not support ParameterServerStrategy. "
            "Use chief/worker roles only."
        )
    num_workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    return ClusterInfo(tf_config, task_type, index, num_workers, source)
