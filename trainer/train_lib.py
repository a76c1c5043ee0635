"""`train` and `evaluate`: one run of a task, from config to export.

Everything a user can get wrong (config, cluster env, data, a resume that
changes the model) is checked before the model dir is touched, so a failed
start leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import platform
import signal
import sys
import tempfile
import time
import uuid
from typing import Any, NamedTuple

import keras
import tensorflow as tf

from trainer import checkpoints, cluster as cluster_lib, config as config_lib, distribute
from trainer import loop, precision, preemption, redact, registry, storage, summaries, tuning
from trainer.best import BestCheckpoint, BestTracker
from trainer.data import report as data_report
from trainer.errors import Preempted, UserError
from trainer.logsync import LogSync
from trainer.run_dir import RunDir

log = logging.getLogger(__name__)


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

    Writes nothing. Raises UserError for anything the user can fix.
    """
    strategy = distribute.build_strategy(config.runtime, cluster)
    per_replica_batch = distribute.check_batch_size(config.train.batch_size, strategy)
    precision.check_compatible(config)
    precision.set_policy(config.runtime.precision)
    if config.runtime.deterministic:
        tf.config.experimental.enable_op_determinism()

    task = registry.get(config.task.name)(config)
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
    report = precision.cudnn_report(model, task.padding)
    precision.check_forced_cudnn(report, config.model)
    xla = XlaDecision(*precision.resolve_jit_compile(
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
        model=model, optimizer=optimizer, step=step_var, ckpt_dir=run_dir.checkpoint_dir, keep=config.train.keep_checkpoints,
        is_chief=cluster.is_chief)
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
               stop=stop)


def train(config: config_lib.ExperimentConfig, model_dir: str, *, checkpoint_dir: str | None = None,
          log_dir: str | None = None, stop_at: int | None = None, verbose: bool = True) -> dict:
    """Trains `config` into `model_dir`, resuming from its newest readable checkpoint.

    Args:
      config: validated, frozen experiment config.
      model_dir: local path (relative or absolute) or gs:// URI.
      checkpoint_dir: defaults to MODEL_DIR/checkpoints (Vertex sets AIP_CHECKPOINT_DIR).
      log_dir: TensorBoard root, gets train/ and eval/; defaults to MODEL_DIR.
      stop_at: stop (after checkpointing) once this global step is reached,
        without changing `train.steps`; used to time-slice long jobs.
      verbose: print progress and the final summary.

    Returns:
      {"step", "metrics", "model_dir", "checkpoint", "export_dir", "log_dir"}.

    Raises:
      UserError: bad config, data, environment or resume, a second writer, a
        full disk; nothing was written unless the message says otherwise.
      Preempted: SIGTERM/SIGINT was received and a checkpoint was saved.
      WorkerLost: another worker of a multi-worker run died (retryable).
    """
    cluster = cluster_lib.from_environ()
    run_dir = RunDir(model_dir, checkpoint_dir=checkpoint_dir, log_dir=log_dir)
    previous = run_dir.inspect(config)
    _preflight(config, model_dir)
    if stop_at is not None and stop_at < 1:
        raise UserError(f"--stop-at must be a step >= 1, got {stop_at}.")
    with contextlib.ExitStack() as held:
        lease = None
        if cluster.is_chief:  # one writer per run: before anything is written
            lease = held.enter_context(_lease(run_dir, config))
        t0 = time.perf_counter()
        run = build_run(config, run_dir, cluster, previous=previous)
        run.startup["build_secs"] = time.perf_counter() - t0
        with distribute.peer_errors_as_worker_lost(run.workers), storage.writing(model_dir):
            t0 = time.perf_counter()
            restored = _restore(run, previous)
            run.startup["restore_secs"] = time.perf_counter() - t0
            _start_writing(run, restored)
            return _train_loop(run, stop_at, verbose, restored, lease)


def _lease(run_dir: RunDir, config):
    """The writer lease, taken before anything is written (a new local dir is made for it)."""
    created = not storage.is_remote(run_dir.model_dir) and not os.path.exists(run_dir.model_dir)
    if created:
        os.makedirs(run_dir.model_dir)
    lease = run_dir.lease(config.runtime.lease_timeout_secs)
    try:
        lease.acquire()
    except BaseException:
        _remove_if_empty(run_dir.model_dir, created)
        raise

    @contextlib.contextmanager
    def holding():
        try:
            yield lease
        finally:
            lease.release()
            _remove_if_empty(run_dir.model_dir, created)
    return holding()


def _remove_if_empty(path: str, created: bool) -> None:
    """A failed start leaves no trace: remove the dir it made for its lease."""
    if created and os.path.isdir(path) and not os.listdir(path):
        os.rmdir(path)


def _restore(run: Run, previous) -> str | None:
    """Restores the newest readable checkpoint; refuses to silently start over.

    Returns the restored checkpoint path, or None for a fresh start.
    """
    config = run.config
    step = run.checkpointer.restore()
    ckpt_dir = run.run_dir.checkpoint_dir
    if step is None:
        if previous is not None and previous.progress_step > 0:
            raise UserError(
                f"{run.run_dir.model_dir} recorded a checkpoint at step {previous.progress_step} "
                f"({previous.progress_source}), but {ckpt_dir} holds no checkpoint now. Starting "
                "again from step 0 would silently discard that progress. Put the checkpoints "
                "back (on Vertex AI: the same AIP_CHECKPOINT_DIR), or use a new --model-dir to "
                "start over.")
        if checkpoints.has_checkpoint_files(ckpt_dir):
            raise UserError(
                f"{ckpt_dir} holds checkpoint files but no complete checkpoint (no ckpt-N.index "
                "file). Restore the missing files, or use a new --model-dir to start over.")
        return None
    _apply_resume_hparams(run.optimizer, config)
    return run.checkpointer.restored_path


def _apply_resume_hparams(optimizer, config) -> None:
    """A constant learning rate is an optimizer variable: the restored value would win
    over the config. Set it from the config, so a changed `train.learning_rate` takes
    effect on resume (schedules are computed from the config and the step anyway)."""
    t = config.train
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if t.lr_schedule == "constant" and not t.warmup_steps:
        inner.learning_rate = t.learning_rate


def _start_writing(run: Run, restored: str | None) -> None:
    """Everything validated and restored: from here on the model dir is written."""
    if not run.cluster.is_chief:
        return
    for path in run.run_dir.remove_leftovers():
        log.warning("removed %s, left by a writer that was killed", path)
    info = runtime_info(run.config, run.strategy, run.cluster, run.cudnn, run.xla)
    info["data"] = run.task.data_report()
    if restored:
        info["last_checkpoint"] = {"step": int(run.step_var.numpy()),
                                   "path": os.path.basename(restored), "time": _utc()}
    run.run_dir.write_start(run.config, run.assets, info)


def _train_loop(run: Run, stop_at: int | None, verbose: bool, restored, lease) -> dict:
    """The outer loop: steps, summaries, evals and checkpoints, top to bottom."""
    config, cluster, task, run_dir = run.config, run.cluster, run.task, run.run_dir
    is_chief = cluster.is_chief
    say = _printer(verbose and is_chief)
    role = "chief" if is_chief else "non-chief, writes nothing to the model dir"
    print(f"seqtrain: {config.task.name} in {run_dir.model_dir}: {_strategy_name(run.strategy)}, "
          f"{run.replicas} replica(s), XLA {'on' if run.xla.enabled else 'off'}, "
          f"worker {cluster.worker_id} ({role})", flush=True)

    stack = contextlib.ExitStack()
    writers = summaries.Writers(_log_root(config, run_dir.log_dir, is_chief, stack, run.stop))
    step = int(run.step_var.numpy())
    total = config.train.steps
    end = min(total, stop_at) if stop_at else total
    if restored is not None:
        say(f"resumed from {restored} at step {step}")
    if is_chief:
        writers.write_config(config, step)

    progress = summaries.Progress(total, step, config.train.log_every, enabled=verbose and is_chief)
    best = BestTracker.for_run(config, run_dir.read_metrics().get("best"))
    best_ckpt = BestCheckpoint(run.model, run_dir.checkpoint_dir, is_chief)
    early_stop = best.exhausted  # a resumed run that already stopped early stays stopped
    if early_stop:
        say(f"this run stopped early at step {step} (train.early_stopping_patience="
            f"{best.patience}); raise the patience to train on")
    metrics: dict = {}
    last_saved = step if restored is not None else None
    ckpt = run.checkpointer
    first_loop = True
    stopped = False
    run.stop.install()
    try:
        while step < end and not early_stop:
            if run.stop.requested and run.workers <= 1:
                break  # multi-worker: the next step's all-reduce carries the stop to all
            if lease is not None and lease.lost:
                raise UserError(f"{lease.lost}. Stopped without saving so as not to overwrite "
                                "the other writer's checkpoints.")
            n = min(config.train.steps_per_loop, end - step,
                    _to_boundary(step, config.train.checkpoint_every),
                    _to_boundary(step, config.train.eval_every))
            t0 = time.perf_counter()
            loss, done, stopped = _run_steps(run, n, first=first_loop)
            if first_loop:
                _report_startup(run, time.perf_counter() - t0, done, writers, step + done, say)
            first_loop = False
            elapsed = time.perf_counter() - t0
            prev_step, step = step, step + done
            run.step_var.assign(step)
            progress.update(step, loss, done / elapsed)
            if _crossed(prev_step, step, config.train.log_every) or step == end:
                writers.scalars(writers.train, {
                    "loss": loss,
                    "learning_rate": float(_current_lr(run.optimizer)),
                    "steps_per_sec": done / elapsed,
                    "examples_per_sec": done * config.train.batch_size / elapsed,
                }, step)
            if stopped:  # this process or another worker was signalled (all-reduced flag)
                break
            if config.train.eval_in_loop and (step % config.train.eval_every == 0
                                              or step == total):
                evaluated = evaluate_model(run.steps, task, run.model, run.eval_ds, step,
                                           run_dir.model_dir, writers, is_chief, stop=run.stop,
                                           best=best)
                if evaluated is not None:
                    metrics = evaluated
                    progress.message(f"eval @ step {step}: {task.summary_line(metrics)}")
                    if best.step == step:
                        best_ckpt.save(step)
                    early_stop = best.exhausted
            if step % config.train.checkpoint_every == 0 or step == end or early_stop:
                _save(run, step)
                last_saved = step
            if early_stop:
                say(f"early stopping at step {step}: {best.metric} has not improved for "
                    f"{best.evals_since} evaluations (train.early_stopping_patience="
                    f"{best.patience}); the best, {best.metric}={best.value:.4f} at step "
                    f"{best.step}, is in {best_ckpt.dir} and becomes the export")
                break
        if stopped or run.stop.requested:
            # Every worker gets here at the same step (the flag is all-reduced with the
            # loss), so the save below, a collective, is made by all of them.
            if last_saved != step:
                _save(run, step)
            run.stop.saved()
            signum = run.stop.signum or signal.SIGTERM  # a peer was signalled: preempted too
            name = signal.Signals(signum).name
            who = "" if run.stop.signum else " (received by another worker)"
            progress.message(f"{name}{who}: checkpoint saved at step {step}; exiting to resume")
            raise Preempted(step, signum)
    finally:
        run.stop.uninstall()
        progress.done()
        writers.close()
        stack.close()  # final log upload for log_sync=local_then_sync

    if stop_at and step < total:
        say(f"stopped at step {step} of {total} (--stop-at); run again to continue")
    if not metrics and is_chief:
        metrics = run_dir.read_metrics().get("metrics", {})
    export_dir = run_dir.file("export")
    if (step >= total or early_stop) and is_chief:
        with storage.writing(run_dir.model_dir):
            export(task, run.model, export_dir, best_ckpt)
    return {
        "best": best.record(),
        "early_stopped": early_stop,
        "step": step,
        "metrics": metrics,
        "model_dir": run_dir.model_dir,
        "checkpoint": ckpt.latest(),
        "export_dir": export_dir if storage.exists(export_dir) else None,
        "log_dir": run_dir.log_dir,
    }


def _report_startup(run: Run, first_loop_secs: float, steps: int, writers, step: int,
                    say) -> None:
    """Time to first step: in the start output, runtime.json and TensorBoard."""
    run.startup["first_loop_secs"] = first_loop_secs
    run.startup["first_loop_steps"] = steps
    total = run.startup.get("build_secs", 0) + run.startup.get("restore_secs", 0) + first_loop_secs
    run.startup["time_to_first_step_secs"] = total
    say(f"first step after {total:.1f} s: build {run.startup.get('build_secs', 0):.1f} s "
        f"(strategy, data, model), restore {run.startup.get('restore_secs', 0):.1f} s, first "
        f"compiled loop of {steps} step(s) {first_loop_secs:.1f} s (tracing"
        f"{', XLA compilation' if run.xla.enabled else ''})")
    if run.cluster.is_chief:
        writers.scalars(writers.train, {f"startup/{k}": v for k, v in run.startup.items()}, step)
        runtime = run.run_dir.read_runtime()
        runtime["startup"] = dict(run.startup)
        run.run_dir.write_runtime(runtime)


def _save(run: Run, step: int) -> None:
    path = run.checkpointer.save(step)
    run.stop.last_checkpoint = path
    if run.cluster.is_chief:
        run.run_dir.record_checkpoint(step, path)


def evaluate_model(fns, task, model, eval_ds, step: int, model_dir: str, writers,
                   is_chief: bool, stop: preemption.StopSignal | None = None,
                   best: BestTracker | None = None) -> dict | None:
    """Runs the eval split on every replica and aggregates the metric sums.

    Returns None if a stop was requested mid-way in a single-worker run (the
    partial metrics are dropped; the stop checkpoint matters more).
    """
    sums: dict[str, list[float]] = {}
    single_worker = distribute.num_workers(fns.strategy) <= 1
    for batch in eval_ds:
        if stop is not None and stop.requested and single_worker:
            return None
        for name, (num, den) in fns.eval_batch(batch).items():
            acc = sums.setdefault(name, [0.0, 0.0])
            acc[0] += float(num)
            acc[1] += float(den)
    metrics = {k: (n / d if d else float("nan")) for k, (n, d) in sums.items()}
    if is_chief:
        with writers.eval.as_default(step=step):
            metrics.update(task.on_eval_end(model, step, model_dir) or {})
    if best is not None:
        best.update(metrics, step)  # on every worker: the metrics are all-reduced
    if is_chief:
        writers.scalars(writers.eval, metrics, step)
        RunDir(model_dir).write_metrics(step, metrics, best=best.record() if best else None)
        tuning.report(metrics, step)
    return metrics


def evaluate(model_dir: str, verbose: bool = True) -> dict:
    """Evaluates the newest readable checkpoint of a run on its eval split.

    Finds the checkpoints where the run's runtime.json says they are (Vertex AI
    puts them outside the model dir), with the same fallback as a resume.
    """
    run = _evaluation_run(RunDir.open(model_dir))
    if run.checkpointer.restore() is None:
        raise UserError(f"{model_dir} has no checkpoint to evaluate in "
                        f"{run.run_dir.checkpoint_dir}; train it first.")
    step = int(run.step_var.numpy())
    metrics = evaluate_model(run.steps, run.task, run.model, run.eval_ds, step, model_dir,
                             summaries.Writers(None), is_chief=False)
    return {"step": step, "metrics": metrics, "checkpoint": run.checkpointer.restored_path}


def evaluate_watch(model_dir: str, *, poll_secs: float = 10.0, verbose: bool = True) -> dict:
    """A continuous evaluator (Keras' SidecarEvaluator, Model Garden's continuous_eval).

    Evaluates each new checkpoint once, writing eval/ summaries, metrics.json and
    the best checkpoint, until the run's final step (its config.yaml's
    `train.steps`, re-read each time, so a trainer resumed with more steps is
    followed) has been evaluated. Survives the trainer's restarts and its
    checkpoint rotation: it always takes the newest readable checkpoint, and a
    restarted evaluator skips steps metrics.json already has.
    """
    say = _printer(verbose)
    run_dir = _wait_for_run(model_dir, poll_secs, say)
    run = _evaluation_run(run_dir)
    writers = summaries.Writers(run_dir.log_dir, eval_only=True)
    best = BestTracker.for_run(run.config, run_dir.read_metrics().get("best"))
    best_ckpt = BestCheckpoint(run.model, run_dir.checkpoint_dir, is_chief=True)
    done = int(run_dir.read_metrics().get("step") or 0)
    metrics: dict = {}
    try:
        while True:
            total = int((run_dir.read_config_dict().get("train") or {}).get("steps") or 0)
            newest = checkpoints.discover(run_dir.checkpoint_dir)
            if newest and newest[0][0] > done:
                run.checkpointer.skipped.clear()
                step = run.checkpointer.restore()
                if step is not None and step > done:
                    metrics = evaluate_model(run.steps, run.task, run.model, run.eval_ds, step,
                                             run_dir.model_dir, writers, True, best=best)
                    if best.step == step:
                        best_ckpt.save(step)
                    done = step
                    say(f"eval @ step {step} ({run.checkpointer.restored_path}): "
                        f"{run.task.summary_line(metrics)}")
                    continue
            if total and done >= total:
                break
            time.sleep(poll_secs)
    finally:
        writers.close()
    say(f"evaluated the final step {done} of {run_dir.model_dir}")
    return {"step": done, "metrics": metrics, "best": best.record()}


def _wait_for_run(model_dir: str, poll_secs: float, say) -> RunDir:
    """The evaluator may start before the trainer has written config.yaml."""
    said = False
    while True:
        try:
            return RunDir.open(model_dir)
        except UserError:
            if not said:
                say(f"waiting for a run in {model_dir} (config.yaml) ...")
                said = True
            time.sleep(poll_secs)


def _evaluation_run(run_dir: RunDir) -> Run:
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
        task.export(copy, export_dir)
        return
    tmp = f"{export_dir}.tmp-{uuid.uuid4().hex[:8]}"
    task.export(copy, tmp)
    storage.rmtree(export_dir)
    tf.io.gfile.rename(tmp, export_dir)


def build_optimizer(config):
    t = config.train
    if t.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(
            0.0 if t.warmup_steps else t.learning_rate, decay_steps=t.steps - t.warmup_steps,
            alpha=0.0, warmup_target=t.learning_rate if t.warmup_steps else None,
            warmup_steps=t.warmup_steps)
    elif t.warmup_steps:
        # alpha=1 makes the cosine part constant: linear warmup, then flat.
        lr = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=1, alpha=1.0, warmup_target=t.learning_rate,
            warmup_steps=t.warmup_steps)
    else:
        lr = t.learning_rate
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
        "strategy": _strategy_name(strategy),
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
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "argv": redact.redact(sys.argv),  # no signed-URL tokens in the run dir
        "pid": os.getpid(),
    }


def load_run_config(model_dir: str) -> config_lib.ExperimentConfig:
    return RunDir.open(model_dir).read_config()


# ----------------------------------------------------------------------------


def _preflight(config, model_dir: str) -> None:
    data_paths = [v for v in config_lib.to_dict(config.data).values()
                  if isinstance(v, str) and v.startswith("gs://")]
    remote = [p for p in (model_dir, *data_paths) if p.startswith("gs://")]
    if not remote:
        return
    try:
        from trainer import gcs
    except ImportError:  # google-cloud-storage missing
        return
    gcs.preflight(remote, need_write=[model_dir] if storage.is_remote(model_dir) else [])


def _strategy_name(strategy) -> str:
    name = type(strategy).__name__
    return "DefaultStrategy" if name == "_DefaultDistributionStrategy" else name


def _log_root(config, log_dir: str, is_chief: bool, stack: contextlib.ExitStack,
              stop) -> str | None:
    """Where the summary writers write: log_dir, or a local dir synced to it."""
    if not is_chief:
        return None
    if config.runtime.log_sync == "direct":
        return log_dir
    local = tempfile.mkdtemp(prefix="seqtrain-logs-")
    stack.callback(storage.rmtree, local)  # runs last: after LogSync's final upload
    stack.enter_context(LogSync(local, log_dir, every_secs=config.runtime.log_sync_every_secs,
                                stop_signal=stop))
    return local


def _run_steps(run: Run, n: int, first: bool) -> tuple[float, int, bool]:
    """One compiled loop of up to n steps: (mean loss, steps run, stop requested)."""
    try:
        loss, done, stopped = run.steps.train_steps(run.train_iterator, tf.constant(n, tf.int32))
    except tf.errors.ResourceExhaustedError as e:
        if not first:
            raise
        raise UserError(
            f"out of memory in the first training step with train.batch_size="
            f"{run.config.train.batch_size} ({_first_line(e)}). Use a smaller "
            "train.batch_size (or a smaller model / data.sequence_length), or more replicas."
        ) from None
    return float(loss), int(done), bool(stopped)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def _to_boundary(step: int, every: int) -> int:
    return every - step % every


def _crossed(prev: int, now: int, every: int) -> bool:
    return prev // every != now // every


def _current_lr(optimizer):
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    lr = inner.learning_rate
    # A constant rate is a (possibly mirrored) variable; a schedule gives a tensor.
    return tf.convert_to_tensor(getattr(lr, "value", lr))


def _printer(enabled: bool):
    def say(text: str) -> None:
        if enabled:
            print(text, flush=True)
    return say
