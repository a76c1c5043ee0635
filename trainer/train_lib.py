"""`train` and `evaluate`: one run of a task, from config to export.

Everything a user can get wrong (config, cluster env, data, a resume that
changes the model) is checked before the model dir is touched, so a failed
start leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import platform
import sys
import tempfile
import time
import uuid

import keras
import tensorflow as tf
import yaml

from trainer import checkpoints, cluster as cluster_lib, config as config_lib, distribute
from trainer import loop, precision, preemption, registry, storage, summaries
from trainer.data import report as data_report
from trainer.errors import Preempted, UserError, WorkerLost
from trainer.logsync import LogSync

log = logging.getLogger(__name__)

# Keys a resume may not change: they define the model, its data and its variables.
FROZEN_ON_RESUME = ("task", "data", "model", "runtime.precision", "train.optimizer")


def default_model_dir(task: str) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{task}-{stamp}")


def train(config: config_lib.ExperimentConfig, model_dir: str, *, checkpoint_dir: str | None = None,
          log_dir: str | None = None, stop_at: int | None = None, verbose: bool = True) -> dict:
    """Trains `config` into `model_dir`, resuming from its latest checkpoint.

    Args:
      config: validated, frozen experiment config.
      model_dir: local path or gs:// URI.
      checkpoint_dir: defaults to MODEL_DIR/checkpoints (Vertex sets AIP_CHECKPOINT_DIR).
      log_dir: TensorBoard root, gets train/ and eval/; defaults to MODEL_DIR.
      stop_at: stop (after checkpointing) once this global step is reached,
        without changing `train.steps`; used to time-slice long jobs.
      verbose: print progress and the final summary.

    Returns:
      {"step", "metrics", "model_dir", "checkpoint", "export_dir", "log_dir"}.

    Raises:
      UserError: bad config, data, environment or resume; nothing was written.
      Preempted: SIGTERM was received and a checkpoint was saved.
      WorkerLost: another worker of a multi-worker run died (retryable).
    """
    cluster = cluster_lib.from_environ()
    ckpt_dir = checkpoint_dir or storage.join(model_dir, "checkpoints")
    log_dir = log_dir or model_dir
    previous = _inspect_model_dir(model_dir, config)
    _preflight(config, model_dir)
    strategy = distribute.build_strategy(config.runtime, cluster)
    replicas = strategy.num_replicas_in_sync
    per_replica_batch = distribute.check_batch_size(config.train.batch_size, strategy)
    is_chief = cluster.is_chief
    say = _printer(verbose and is_chief)

    precision.check_compatible(config)
    precision.set_policy(config.runtime.precision)
    if config.runtime.deterministic:
        tf.config.experimental.enable_op_determinism()

    task = registry.get(config.task.name)(config)
    task.prepare()
    if is_chief and task.data_report():  # issue 12: say what was read, warn on small data
        print(data_report.text(task.data_report()), flush=True)
    assets = task.assets()
    _check_assets(model_dir, assets, previous)

    keras.utils.set_random_seed(config.runtime.seed)
    with strategy.scope():
        model = task.build_model()
        optimizer = build_optimizer(config)
        optimizer.build(model.trainable_variables)
    report = precision.cudnn_report(model, task.padding)
    precision.check_forced_cudnn(report, config.model)
    jit = precision.resolve_jit_compile(
        config.runtime.jit_compile, report, xla_on_cpu=task.xla_on_cpu,
        on_tpu=isinstance(strategy, tf.distribute.TPUStrategy))
    if is_chief:
        precision.warn_ineligible(report)

    # ---- validated: from here on the model dir is written -----------------
    if is_chief:
        storage.makedirs(model_dir)
        storage.write_text(storage.join(model_dir, "config.yaml"), config.to_yaml())
        for name, text in assets.items():
            storage.makedirs(storage.join(model_dir, "assets"))
            storage.write_text(storage.join(model_dir, "assets", name), text)
        storage.write_json(storage.join(model_dir, "runtime.json"),
                           runtime_info(config, strategy, cluster, report, jit))

    role = "chief" if is_chief else "non-chief, writes nothing to the model dir"
    print(f"seqtrain: {config.task.name} in {model_dir}: {_strategy_name(strategy)}, "
          f"{replicas} replica(s), XLA {'on' if jit[0] else 'off'}, "
          f"worker {cluster.worker_id} ({role})", flush=True)

    train_ds = loop.make_train_dataset(
        task.dataset("train"), per_replica_batch=per_replica_batch, replicas=replicas,
        shuffle_buffer=config.train.shuffle_buffer, seed=config.runtime.seed)
    iterator = iter(train_ds)
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    ckpt = checkpoints.Checkpointer(
        model=model, optimizer=optimizer, step=step_var, iterator=iterator,
        ckpt_dir=ckpt_dir, keep=config.train.keep_checkpoints, is_chief=is_chief)
    same_input = previous is None or (
        previous["replicas"] in (None, replicas)
        and previous["batch_size"] == config.train.batch_size)
    restored = ckpt.restore(with_iterator=same_input)
    if restored is not None and not same_input:
        log.warning("replicas or batch size changed since the checkpoint: model and optimizer "
                    "are restored, the input pipeline restarts (not bitwise-exact).")

    fns = loop.StepFunctions(
        task=task, model=model, optimizer=optimizer, strategy=strategy,
        global_batch=config.train.batch_size, clipnorm=config.train.clipnorm,
        clipvalue=config.train.clipvalue, jit_compile=jit[0])
    eval_ds = loop.make_eval_dataset(
        task.dataset("eval"), per_replica_batch=per_replica_batch, replicas=replicas,
        max_batches=config.train.eval_batches)

    stack = contextlib.ExitStack()
    writers = summaries.Writers(_log_root(config, log_dir, is_chief, stack))
    step = int(step_var.numpy())
    total = config.train.steps
    end = min(total, stop_at) if stop_at else total
    if restored is not None:
        say(f"resumed from {ckpt.latest()} at step {step}")
    if is_chief:
        writers.write_config(config, step)

    preempt = preemption.PreemptionFlag(config.runtime.preemption_grace_secs)
    progress = summaries.Progress(total, step, config.train.log_every, enabled=verbose and is_chief)
    metrics: dict = {}
    last_saved = restored
    workers = distribute.num_workers(strategy)
    try:
        while step < end:
            n = min(config.train.steps_per_loop, end - step,
                    _to_boundary(step, config.train.checkpoint_every),
                    _to_boundary(step, config.train.eval_every))
            t0 = time.perf_counter()
            loss = _run_steps(fns, iterator, n, workers)
            elapsed = time.perf_counter() - t0
            prev_step, step = step, step + n
            step_var.assign(step)
            progress.update(step, loss, n / elapsed)
            if _crossed(prev_step, step, config.train.log_every) or step == end:
                writers.scalars(writers.train, {
                    "loss": loss,
                    "learning_rate": float(_current_lr(optimizer)),
                    "steps_per_sec": n / elapsed,
                    "examples_per_sec": n * config.train.batch_size / elapsed,
                }, step)
            if step % config.train.eval_every == 0 or step == total:
                metrics = evaluate_model(fns, task, model, eval_ds, step, model_dir, writers,
                                         is_chief)
                progress.message(f"eval @ step {step}: {task.summary_line(metrics)}")
            if step % config.train.checkpoint_every == 0 or step == end:
                ckpt.save(step)
                last_saved = step
            if preempt.agreed(strategy, workers):
                if last_saved != step:
                    ckpt.save(step)
                progress.message(f"SIGTERM: checkpoint saved at step {step}; exiting to resume")
                raise Preempted(step)
    finally:
        preempt.uninstall()
        progress.done()
        writers.close()
        stack.close()  # final log upload for log_sync=local_then_sync

    if stop_at and step < total:
        say(f"stopped at step {step} of {total} (--stop-at); run again to continue")
    if not metrics and is_chief:
        metrics = _read_metrics(model_dir)
    export_dir = storage.join(model_dir, "export")
    if step >= total and is_chief:
        export(task, model, export_dir)
    result = {
        "step": step,
        "metrics": metrics,
        "model_dir": model_dir,
        "checkpoint": ckpt.latest(),
        "export_dir": export_dir if storage.exists(export_dir) else None,
        "log_dir": log_dir,
    }
    return result


def evaluate_model(fns, task, model, eval_ds, step: int, model_dir: str, writers,
                   is_chief: bool) -> dict:
    """Runs the eval split on every replica and aggregates the metric sums."""
    sums: dict[str, list[float]] = {}
    for batch in eval_ds:
        for name, (num, den) in fns.eval_batch(batch).items():
            acc = sums.setdefault(name, [0.0, 0.0])
            acc[0] += float(num)
            acc[1] += float(den)
    metrics = {k: (n / d if d else float("nan")) for k, (n, d) in sums.items()}
    if is_chief:
        with writers.eval.as_default(step=step):
            metrics.update(task.on_eval_end(model, step, model_dir) or {})
        writers.scalars(writers.eval, metrics, step)
        storage.write_json(storage.join(model_dir, "metrics.json"), {
            "step": step, "metrics": metrics,
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat()})
    return metrics


def evaluate(model_dir: str, verbose: bool = True) -> dict:
    """Evaluates the latest checkpoint of a run on its eval split."""
    config = load_run_config(model_dir)
    cluster = cluster_lib.ClusterInfo(None, None, 0, 1, "none")
    runtime = config.runtime
    strategy = distribute.build_strategy(
        config_lib.RuntimeConfig(**{**config_lib.to_dict(runtime), "strategy": "default",
                                    "cpu_replicas": 1}), cluster)
    precision.set_policy(runtime.precision)
    task = registry.get(config.task.name)(config)
    task.prepare()
    _check_assets(model_dir, task.assets(), {"assets": True})
    keras.utils.set_random_seed(runtime.seed)
    model = task.build_model()
    optimizer = build_optimizer(config)
    optimizer.build(model.trainable_variables)
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False)
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step_var)
    latest = tf.train.latest_checkpoint(storage.join(model_dir, "checkpoints"))
    if latest is None:
        raise UserError(f"{model_dir} has no checkpoint to evaluate; train it first.")
    ckpt.restore(latest).expect_partial()
    fns = loop.StepFunctions(task=task, model=model, optimizer=optimizer, strategy=strategy,
                             global_batch=config.train.batch_size, clipnorm=None, clipvalue=None,
                             jit_compile=False)
    eval_ds = loop.make_eval_dataset(task.dataset("eval"),
                                     per_replica_batch=config.train.batch_size, replicas=1)
    writers = summaries.Writers(None)
    metrics = evaluate_model(fns, task, model, eval_ds, int(step_var.numpy()), model_dir,
                             writers, is_chief=False)
    return {"step": int(step_var.numpy()), "metrics": metrics, "checkpoint": latest}


def export(task, model, export_dir: str) -> None:
    """Exports a copy of `model` built outside any strategy, atomically where possible."""
    copy = task.build_model()
    copy.set_weights(model.get_weights())
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


def runtime_info(config, strategy, cluster, cudnn_report, jit: tuple[bool, str]) -> dict:
    return {
        "strategy": _strategy_name(strategy),
        "replicas": strategy.num_replicas_in_sync,
        "workers": distribute.num_workers(strategy),
        "cluster": {"source": cluster.source, "task_type": cluster.task_type,
                    "task_index": cluster.task_index},
        "precision": config.runtime.precision,
        "all_reduce": config.runtime.all_reduce,
        "jit_compile": jit[0],
        "jit_compile_reason": jit[1],
        "deterministic": config.runtime.deterministic,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                     "python": platform.python_version()},
        "devices": [d.name for d in tf.config.list_logical_devices()],
        "physical_devices": [d.name for d in tf.config.list_physical_devices()],
        "cudnn": cudnn_report,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "argv": sys.argv,
    }


def load_run_config(model_dir: str) -> config_lib.ExperimentConfig:
    path = storage.join(model_dir, "config.yaml")
    if not storage.exists(path):
        raise UserError(
            f"{model_dir} is not a seqtrain run (no config.yaml). Pass the --model-dir "
            "of a run made by `seqtrain train`.")
    return config_lib.load(config_file=path)


# ----------------------------------------------------------------------------


def _inspect_model_dir(model_dir: str, config) -> dict | None:
    """Refuses a dir that is not a seqtrain run, or a resume that changes the model."""
    if not storage.exists(model_dir):
        return None
    if not storage.isdir(model_dir):
        raise UserError(f"--model-dir {model_dir} exists and is a file, not a directory.")
    config_path = storage.join(model_dir, "config.yaml")
    if not storage.exists(config_path):
        if storage.listdir(model_dir):
            raise UserError(
                f"--model-dir {model_dir} exists, is not empty and is not a seqtrain run "
                "(no config.yaml). Choose a new or empty directory.")
        return None
    old = _read_run_file(config_path, yaml.safe_load) or {}
    new = config.to_dict()
    changed = [k for k in config_lib.diff(old, new)
               if any(k == f or k.startswith(f + ".") for f in FROZEN_ON_RESUME)
               and not config_lib.resume_ok(config, k)]
    if changed:
        details = ", ".join(f"{k}: {_get(old, k)!r} -> {_get(new, k)!r}" for k in changed)
        raise UserError(
            f"--model-dir {model_dir} holds a run whose config differs in keys that define "
            f"the model or its data ({details}). A resume must keep them; use a new "
            "--model-dir for a different model, or restore those values.")
    runtime_path = storage.join(model_dir, "runtime.json")
    replicas = (_read_run_file(runtime_path, json.loads).get("replicas")
                if storage.exists(runtime_path) else None)
    return {"replicas": replicas, "batch_size": old.get("train", {}).get("batch_size"),
            "assets": True}


def _read_run_file(path: str, parse):
    """A run's config.yaml / runtime.json, or a UserError if it is damaged (issue 12)."""
    try:
        data = parse(storage.read_text(path))
    except (ValueError, yaml.YAMLError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise UserError(
            f"{path} is damaged ({type(e).__name__}: {str(e).splitlines()[0][:120]}), so this run "
            "cannot be resumed safely. Restore the file from a copy, or train into a new "
            "--model-dir.") from None
    if data is not None and not isinstance(data, dict):
        raise UserError(f"{path} is damaged (not a mapping). Restore it from a copy, or train "
                        "into a new --model-dir.")
    return data


def _check_assets(model_dir: str, assets: dict, previous) -> None:
    if previous is None:
        return
    for name, text in assets.items():
        path = storage.join(model_dir, "assets", name)
        if storage.exists(path) and storage.read_text(path) != text:
            raise UserError(
                f"the data changed since {model_dir} was trained: the fitted asset {name!r} "
                "(for example the vocabulary) differs from the saved one. Resume with the "
                "original data, or use a new --model-dir.")


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


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(part)
    return d


def _strategy_name(strategy) -> str:
    name = type(strategy).__name__
    return "DefaultStrategy" if name == "_DefaultDistributionStrategy" else name


def _log_root(config, log_dir: str, is_chief: bool, stack: contextlib.ExitStack) -> str | None:
    """Where the summary writers write: log_dir, or a local dir synced to it."""
    if not is_chief:
        return None
    if config.runtime.log_sync == "direct":
        return log_dir
    local = tempfile.mkdtemp(prefix="seqtrain-logs-")
    stack.callback(storage.rmtree, local)  # runs last: after LogSync's final upload
    stack.enter_context(LogSync(local, log_dir, every_secs=config.runtime.log_sync_every_secs))
    return local


def _run_steps(fns, iterator, n: int, workers: int) -> float:
    try:
        return float(fns.train_steps(iterator, tf.constant(n, tf.int32)))
    except tf.errors.ResourceExhaustedError as e:  # issue 12: OOM is a config problem
        raise UserError(
            f"out of memory running training steps with train.batch_size={fns.global_batch} "
            f"({_first_line(e)}). Lower it, for example --set train.batch_size="
            f"{max(1, fns.global_batch // 2)}, or use a smaller model.") from None
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
            tf.errors.CancelledError, tf.errors.AbortedError) as e:
        if workers <= 1:
            raise
        # A peer died mid-collective. Exiting retryably lets the cluster restart
        # the job, which resumes from the last checkpoint.
        raise WorkerLost(_first_line(e)) from None


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _to_boundary(step: int, every: int) -> int:
    return every - step % every


def _crossed(prev: int, now: int, every: int) -> bool:
    return prev // every != now // every


def _current_lr(optimizer):
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    lr = inner.learning_rate
    # A constant rate is a (possibly mirrored) variable; a schedule gives a tensor.
    return tf.convert_to_tensor(getattr(lr, "value", lr))


def _read_metrics(model_dir: str) -> dict:
    path = storage.join(model_dir, "metrics.json")
    return storage.read_json(path).get("metrics", {}) if storage.exists(path) else {}


def _printer(enabled: bool):
    def say(text: str) -> None:
        if enabled:
            print(text, flush=True)
    return say
