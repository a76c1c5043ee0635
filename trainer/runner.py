"""A run, built once: strategy, task, model, optimizer, step functions, checkpointer, data.

`build_run` is shared by every mode: training (trainer/train_lib.py), evaluation
and the side-car evaluator (trainer/evaluator.py) and the export at the end of a
run. Everything a user can get wrong (config, cluster env, data, a resume that
changes the model) is checked while building, before the model dir is touched.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import sys
import uuid
from typing import Any, NamedTuple

import keras
import tensorflow as tf

from trainer import checkpoints, cluster as cluster_lib, config as config_lib, distribute
from trainer import kernels, loop, precision, preemption, redact, registry, storage
from trainer.best import BestCheckpoint
from trainer.data import auto_prepare, report as data_report
from trainer.run_dir import RunDir
from trainer.serving import metadata


def default_model_dir(task: str) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{task}-{stamp}")


class XlaDecision(NamedTuple):
    """Whether each replica's loss and gradients are XLA-compiled, and why."""

    enabled: bool
    reason: str


@dataclasses.dataclass
class Run:
    """Everything a mode needs, built once by `build_run` (train, evaluate, export)."""

    config: config_lib.ExperimentConfig
    run_dir: RunDir
    cluster: cluster_lib.ClusterInfo
    strategy: tf.distribute.Strategy
    task: Any
    model: keras.Model
    optimizer: Any
    steps: loop.StepFunctions
    checkpointer: checkpoints.Checkpointer
    step_var: tf.Variable
    train_iterator: loop.TrainInput | None  # None when not training
    eval_ds: tf.data.Dataset
    assets: dict
    cudnn: list
    xla: XlaDecision
    stop: preemption.StopSignal | None
    # What `train` prepared implicitly (data.prepare=auto): trainer/data/auto_prepare.py.
    prepared: dict | None = None
    # Time to first step, by phase (seconds): build (strategy, data, model), restore,
    # first compiled loop (tracing, XLA compilation, its steps).
    startup: dict = dataclasses.field(default_factory=dict)

    @property
    def workers(self) -> int:
        return distribute.num_workers(self.strategy)

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync


def build_run(config, run_dir: RunDir, cluster, *, previous=None, training: bool = True) -> Run:
    """Builds the strategy, task, model, optimizer, step functions, checkpointer and data.

    Writes nothing, except, when training with data.prepare=auto, the prepared data
    (the chief under MODEL_DIR/data/, other workers in their local cache; after all
    its sources were read and checked). Raises UserError for anything the user can fix.
    """
    strategy = distribute.build_strategy(config.runtime, cluster)
    per_replica_batch = distribute.check_batch_size(config.train.batch_size, strategy)
    precision.check_compatible(config)
    precision.set_policy(config.runtime.precision)
    if config.runtime.deterministic:
        tf.config.experimental.enable_op_determinism()

    prepared, task_config = None, config
    if training:
        prepared = auto_prepare.prepare(config, run_dir.data_dir, is_chief=cluster.is_chief)
        if prepared and cluster.is_chief:
            print(auto_prepare.summary(prepared, prepared["out"]), flush=True)
        task_config = auto_prepare.with_prepared_dir(config, prepared and prepared["out"])
    else:  # evaluation reads what the run prepared (never prepares)
        task_config = auto_prepare.with_prepared_dir(config, auto_prepare.recorded(
            config, run_dir.read_runtime(), run_dir.resolve))
    task = registry.get(config.task.name)(task_config)
    task.prepare()
    if training and cluster.is_chief and task.data_report():  # say what was read
        print(data_report.text(task.data_report()), flush=True)
    assets = task.assets()
    run_dir.check_assets(assets, previous)

    keras.utils.set_random_seed(config.runtime.seed)
    with strategy.scope():
        model = task.build_model()
        optimizer = build_optimizer(config)
        optimizer.build(model.trainable_variables)
    report = kernels.cudnn_report(model, task.padding)
    kernels.check_forced_cudnn(report, config.model)
    xla = XlaDecision(*loop.resolve_jit_compile(
        config.runtime.jit_compile, report, xla_on_cpu=task.xla_on_cpu,
        on_tpu=isinstance(strategy, tf.distribute.TPUStrategy)))

    replicas = strategy.num_replicas_in_sync
    stop = preemption.StopSignal(config.runtime.preemption_grace_secs) if training else None
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    iterator = None
    if training:  # the data position is step_var: the iterator is made at the restored step
        iterator = loop.TrainInput(task.train_examples(), strategy, seed=config.runtime.seed,
                                   global_batch=config.train.batch_size, step=step_var)
    ckpt = checkpoints.Checkpointer(
        model=model, optimizer=optimizer, step=step_var, ckpt_dir=run_dir.checkpoint_dir,
        keep=config.train.keep_checkpoints, is_chief=cluster.is_chief)
    steps = loop.StepFunctions(
        task=task, model=model, optimizer=optimizer, strategy=strategy,
        global_batch=config.train.batch_size, clipnorm=config.train.clipnorm,
        clipvalue=config.train.clipvalue, jit_compile=xla.enabled,
        stop_variable=stop.variable if stop else None)
    eval_ds = loop.make_eval_dataset(
        task.dataset("eval"), per_replica_batch=per_replica_batch, replicas=replicas,
        max_batches=config.train.eval_batches if training else 0)
    return Run(config=config, run_dir=run_dir, cluster=cluster, strategy=strategy, task=task,
               model=model, optimizer=optimizer, steps=steps, checkpointer=ckpt, step_var=step_var,
               train_iterator=iterator, eval_ds=eval_ds, assets=assets, cudnn=report, xla=xla,
               stop=stop, prepared=prepared)


def evaluation_run(run_dir: RunDir) -> Run:
    """The run of `run_dir` built for evaluation: one process, default strategy."""
    config = run_dir.read_config()
    runtime = dataclasses.replace(config.runtime, strategy="default", cpu_replicas=1)
    config = dataclasses.replace(config, runtime=runtime)
    cluster = cluster_lib.ClusterInfo(None, None, 0, 1, "none")
    return build_run(config, run_dir, cluster, previous=run_dir.inspect(config), training=False)


def export(task, model, export_dir: str, best: BestCheckpoint | None = None) -> None:
    """Exports a copy of `model` built outside any strategy, atomically where possible.

    With a best checkpoint, the copy gets the best weights instead of the last.
    """
    copy = task.build_model()
    copy.set_weights(model.get_weights())
    if best is not None:
        best.restore_into(copy)
    if storage.is_remote(export_dir):
        storage.rmtree(export_dir)
        _export_with_metadata(task, copy, export_dir)
        return
    tmp = f"{export_dir}.tmp-{uuid.uuid4().hex[:8]}"
    _export_with_metadata(task, copy, tmp)
    storage.rmtree(export_dir)
    tf.io.gfile.rename(tmp, export_dir)


def _export_with_metadata(task, model, export_dir: str) -> None:
    task.export(model, export_dir)
    commands = [c.name for c in registry.spec(task.name).commands]
    metadata.write(export_dir, task.name, commands, task.export_metadata())


def build_optimizer(config):
    t = config.train
    if config_lib.constant_rate(t.lr_schedule, t.warmup_steps):
        lr = t.learning_rate
    elif t.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(
            0.0 if t.warmup_steps else t.learning_rate, decay_steps=t.steps - t.warmup_steps,
            alpha=0.0, warmup_target=t.learning_rate if t.warmup_steps else None,
            warmup_steps=t.warmup_steps)
    else:  # constant after a warmup; alpha=1 makes the cosine part flat
        lr = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=1, alpha=1.0, warmup_target=t.learning_rate,
            warmup_steps=t.warmup_steps)
    optimizer = {
        "adam": lambda: keras.optimizers.Adam(lr),
        "adamw": lambda: keras.optimizers.AdamW(lr, weight_decay=t.weight_decay),
        "sgd": lambda: keras.optimizers.SGD(lr, momentum=0.9),
        "rmsprop": lambda: keras.optimizers.RMSprop(lr),
    }[t.optimizer]()
    if config.runtime.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def runtime_info(config, strategy, cluster, cudnn_report, xla: XlaDecision) -> dict:
    return {
        "strategy": strategy_name(strategy),
        "replicas": strategy.num_replicas_in_sync,
        "workers": distribute.num_workers(strategy),
        "cluster": {"source": cluster.source, "task_type": cluster.task_type,
                    "task_index": cluster.task_index},
        "precision": config.runtime.precision,
        "all_reduce": config.runtime.all_reduce,
        "jit_compile": xla.enabled,
        "jit_compile_reason": xla.reason,
        "deterministic": config.runtime.deterministic,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                     "python": platform.python_version()},
        "devices": [d.name for d in tf.config.list_logical_devices()],
        "physical_devices": [d.name for d in tf.config.list_physical_devices()],
        "cudnn": cudnn_report,
        "cpu_allocator": cpu_allocator(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "argv": redact.redact(sys.argv),  # no signed-URL tokens in the run dir
        "pid": os.getpid(),
    }


def cpu_allocator() -> str:
    """Which allocator TensorFlow's CPU tensors come from (trainer/__init__.py picks the
    pool): "bfc" or "malloc"."""
    try:
        tf.config.experimental.get_memory_info("CPU:0")
    except ValueError:  # "Allocator stats not available": the default allocator
        return "malloc"
    return "bfc"


def load_run_config(model_dir: str) -> config_lib.ExperimentConfig:
    return RunDir.open(model_dir).read_config()


def strategy_name(strategy) -> str:
    name = type(strategy).__name__
    return "DefaultStrategy" if name == "_DefaultDistributionStrategy" else name


def printer(enabled: bool):
    def say(text: str) -> None:
        if enabled:
            print(text, flush=True)
    return say
