"""The Task interface: what a task supplies to the task-agnostic loop.

A task owns its data, preprocessing, model, loss, metrics and export. It
never creates or inspects a strategy: the loop builds the model inside
`strategy.scope()` and calls `loss`/`eval_metrics` on each replica. Task code
may read `tf.distribute.get_strategy().num_replicas_in_sync` and nothing more.

Lifecycle (see trainer/runner.py and trainer/train_lib.py):

    task = TaskCls(config)
    task.prepare()                  # host: read data, fit vocab / statistics
    task.assets()                   # host: saved to MODEL_DIR/assets, checked on resume
    task.train_examples()           # host: training examples addressable by id
    task.dataset("eval")            # host: unbatched, fixed-shape (features, labels)
    with strategy.scope():
        model = task.build_model()
    task.loss(...)                  # With distribution strategies, runs on devices.
    task.eval_metrics(...)          # With distribution strategies, runs on devices.
    task.on_eval_end(...)           # host, chief only: BLEU, plots, samples
    task.export(model, export_dir)  # host, chief only: SavedModel on raw inputs
    task.export_metadata()          # host, chief only: saved beside it (trainer/serving/metadata.py)

The commands that serve the export (`seqtrain predict`, `generate`, ...) are
declared in the task's spec (`TaskSpec.commands`, TF-free; trainer/registry.py).
"""

from __future__ import annotations

from typing import ClassVar

import keras
import tensorflow as tf

from trainer.config import ExperimentConfig
from trainer.data import sampling

# Exports serve inference; training resumes from checkpoints. Not saving the custom
# gradients of the fused CPU loops keeps an export from tracing them (the largest part
# of a small run's export time), and serving never differentiates.
EXPORT_OPTIONS = tf.saved_model.SaveOptions(experimental_custom_gradients=False)


class Task:
    name: ClassVar[str]  # set by @registry.register
    DataConfig: ClassVar[type]
    ModelConfig: ClassVar[type]
    train_defaults: ClassVar[dict] = {}
    description: ClassVar[str] = ""
    # How sequence inputs are padded: "right" (cuDNN-eligible with masks) or "none".
    padding: ClassVar[str] = "right"
    # runtime.jit_compile=auto compiles the step with XLA on CPU for tasks that set
    # this: each value is what measured faster, default config with jit_compile
    # true vs false (README, "Compiled steps").
    xla_on_cpu: ClassVar[bool] = False

    def __init__(self, config: ExperimentConfig):
        self.config = config

    # ---- host side ---------------------------------------------------------
    def prepare(self) -> None:
        """Reads the data and fits preprocessing on the training split only.

        Raises:
          DataError: missing, empty or malformed data (message says how to fix).
        """

    def data_report(self) -> dict:
        """What `prepare` read, JSON-able (see trainer/data/report.py): files, rows,
        rows skipped and why, split sizes, warnings, and human `lines`."""
        return {}

    def assets(self) -> dict[str, str]:
        """Fitted preprocessing state as {file name: text}.

        Written to MODEL_DIR/assets on a fresh run. On resume the loop compares
        them with the saved copies and refuses to continue if they differ (for
        example a changed vocabulary).
        """
        return {}

    def dataset(self, split: str) -> tf.data.Dataset:
        """Unbatched, fixed-shape `(features, labels)` examples of a split, in order.

        The loop evaluates the "eval" split in this order; training reads
        `train_examples` instead.
        """
        raise NotImplementedError

    def train_examples(self) -> sampling.Examples:
        """The training examples, addressable by id (0..N-1), fixed-shape.

        The loop samples them in a stateless seeded order (trainer/data/sampling.py):
        each replica gathers only the ids of its own slice of each global batch,
        so the data position is the step and no iterator is checkpointed.
        """
        raise NotImplementedError

    # ---- model -------------------------------------------------------------
    def build_model(self) -> keras.Model:
        """Builds the Keras model. Runs inside `strategy.scope()`.

        The final layer should use dtype="float32" so outputs and losses stay
        float32 under mixed precision.
        """
        raise NotImplementedError

    def loss(self, model: keras.Model, features, labels) -> tf.Tensor:
        """Per-example training loss, shape [per_replica_batch].

        With distribution strategies, this method runs on devices. The loop
        sums it and divides by the global batch size.
        """
        raise NotImplementedError

    def eval_metrics(self, model: keras.Model, features, labels, weights) -> dict:
        """{name: (numerator, denominator)} partial sums over one batch.

        With distribution strategies, this method runs on devices. `weights` is
        1.0 for real examples and 0.0 for the padding that fills the last batch.
        The loop sums both parts across replicas and batches; the metric is
        numerator / denominator.
        """
        raise NotImplementedError

    def on_eval_end(self, model: keras.Model, step: int, model_dir: str) -> dict:
        """Host-side extra evaluation on the chief (BLEU, plots, samples).

        Returns extra scalar metrics. May write images/text with `tf.summary`
        (an eval summary writer is the default writer while this runs).
        """
        return {}

    def export(self, model: keras.Model, export_dir: str) -> None:
        """Writes a SavedModel that takes raw inputs (strings, floats)."""
        raise NotImplementedError

    def export_metadata(self) -> dict:
        """JSON-able facts the inference commands need beside the SavedModel (a vocabulary,
        the window and columns...). The framework adds the task name and its commands and
        writes them as export/assets.extra/seqtrain.json (trainer/serving/metadata.py)."""
        return {}

    def summary_line(self, metrics: dict) -> str:
        """One human line of the headline eval metrics."""
        return ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
