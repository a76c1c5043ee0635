"""The best checkpoint and early stopping (Keras' ModelCheckpoint(save_best_only) and
EarlyStopping, Model Garden's best-checkpoint exporter, in one place).

After each evaluation the run compares `train.best_metric` with the best so far.
A better value saves the weights to MODEL_DIR/checkpoints/best/ (one checkpoint,
outside the `keep_checkpoints` rotation); `train.early_stopping_patience`
evaluations without improvement stop the run. The record lives in metrics.json
under "best", so a resume keeps the best so far and its patience count:

    "best": {"metric": "accuracy", "goal": "max", "value": 0.93, "step": 400,
             "evals_since": 2}

At the end the export is made from the best weights.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile

import tensorflow as tf

from trainer import registry, storage
from trainer.errors import UserError

log = logging.getLogger(__name__)

BEST_DIR = "best"
_LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "perplexity", "error")


def resolve(config) -> tuple[str, str]:
    """(metric, goal) that a run is judged by."""
    spec = registry.spec(config.task.name)
    metric = config.train.best_metric or spec.headline_metric or "loss"
    goal = config.train.best_goal
    if goal == "auto":
        if metric == spec.headline_metric:
            goal = spec.headline_goal
        else:
            goal = "min" if any(w in metric.lower() for w in _LOWER_IS_BETTER) else "max"
    return metric, goal


@dataclasses.dataclass
class BestTracker:
    """Tracks the best eval value; saves its weights; says when patience ran out."""

    metric: str
    goal: str
    patience: int
    value: float | None = None
    step: int | None = None
    evals_since: int = 0

    @classmethod
    def for_run(cls, config, previous_record: dict | None) -> "BestTracker":
        metric, goal = resolve(config)
        tracker = cls(metric, goal, config.train.early_stopping_patience)
        rec = previous_record or {}
        if rec.get("metric") == metric and rec.get("goal") == goal:
            tracker.value, tracker.step = rec.get("value"), rec.get("step")
            tracker.evals_since = int(rec.get("evals_since") or 0)
        return tracker

    def update(self, metrics: dict, step: int) -> bool:
        """Records one evaluation; True if it is the new best."""
        if self.metric not in metrics:
            raise UserError(
                f"train.best_metric={self.metric!r} is not computed by this task's evaluation "
                f"(it has {', '.join(sorted(metrics))}). Set train.best_metric to one of those.")
        value = float(metrics[self.metric])
        if math.isnan(value):
            self.evals_since += 1
            return False
        better = self.value is None or (value > self.value if self.goal == "max"
                                        else value < self.value)
        if better:
            self.value, self.step, self.evals_since = value, step, 0
        else:
            self.evals_since += 1
        return better

    @property
    def exhausted(self) -> bool:
        return self.patience > 0 and self.evals_since >= self.patience

    def record(self) -> dict | None:
        if self.value is None:
            return None
        return {"metric": self.metric, "goal": self.goal, "value": self.value,
                "step": self.step, "evals_since": self.evals_since}


class BestCheckpoint:
    """The weights of the best evaluation: MODEL_DIR/checkpoints/best/ckpt-STEP.

    A collective under MultiWorkerMirrored like every save: every worker calls
    `save` (they all computed the same all-reduced metrics); non-chief workers
    write to a temp dir.
    """

    def __init__(self, model, ckpt_dir: str, is_chief: bool):
        self.dir = storage.join(ckpt_dir, BEST_DIR)
        self._checkpoint = tf.train.Checkpoint(model=model)
        write_dir = self.dir if is_chief else tempfile.mkdtemp(prefix="seqtrain-worker-best-")
        self._is_chief = is_chief
        self._write_dir = write_dir
        self._manager = None

    def save(self, step: int) -> str:
        with storage.writing(self._write_dir):
            if self._manager is None:
                self._manager = tf.train.CheckpointManager(
                    self._checkpoint, self._write_dir, max_to_keep=1, checkpoint_name="ckpt")
            path = self._manager.save(checkpoint_number=step)
        if not self._is_chief:
            storage.rmtree(self._write_dir)
        return path

    def restore_into(self, model) -> str | None:
        """Loads the best weights into `model` (built outside any strategy); their path or None."""
        path = tf.train.latest_checkpoint(self.dir)
        if path is None:
            return None
        tf.train.Checkpoint(model=model).restore(path).expect_partial()
        return path
