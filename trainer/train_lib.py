"""`train`: one run of a task, from config to export.

The run is built by trainer/runner.py before the model dir is touched, so a
failed start leaves nothing half-written; `_train_loop` is the outer loop.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
import signal
import tempfile
import time

import tensorflow as tf

from trainer import checkpoints, cluster as cluster_lib, config as config_lib, distribute
from trainer import profiling, storage, summaries
from trainer.data import auto_prepare, report as data_report
from trainer.best import BestCheckpoint, BestTracker
from trainer.errors import Preempted, UserError, first_line
from trainer.evaluator import evaluate_model
from trainer.logsync import LogSync
from trainer.run_dir import EXPORT, RunDir
from trainer.runner import Run, build_run, export, printer, runtime_info, strategy_name

log = logging.getLogger(__name__)


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
        # Before the build, which may prepare the data into MODEL_DIR/data/.
        before = run_dir.snapshot() if cluster.is_chief else None
        t0 = time.perf_counter()
        # Building creates the variables, which a multi-worker strategy broadcasts.
        with distribute.peer_errors_as_worker_lost(cluster.num_workers, cluster):
            run = _build(config, run_dir, cluster, previous)
        run.startup["build_secs"] = time.perf_counter() - t0
        with (distribute.peer_errors_as_worker_lost(run.workers, cluster),
              storage.writing(model_dir)):
            t0 = time.perf_counter()
            restored = _restore(run, previous)
            run.startup["restore_secs"] = time.perf_counter() - t0
            _start_writing(run, restored)
            try:
                return _train_loop(run, stop_at, verbose, restored, lease)
            except FirstStepOutOfMemory:
                if before is not None:  # nothing trained: leave the dirs as they were
                    run.run_dir.roll_back(before)
                raise


def _build(config, run_dir: RunDir, cluster, previous) -> Run:
    """`build_run`; when it prepares the data into the model dir (data.prepare=auto) and
    then fails (a bad model config, a resume whose vocabulary changed, an interrupt),
    what it wrote under MODEL_DIR/data/ is removed: a failed start leaves the model dir
    as it was. (Only there: a side-car evaluator may be writing elsewhere meanwhile.)"""
    if not (cluster.is_chief and auto_prepare.wanted(config)):
        return build_run(config, run_dir, cluster, previous=previous)
    data_dir = run_dir.data_dir
    existed, before = storage.exists(data_dir), storage.tree(data_dir)
    try:
        return build_run(config, run_dir, cluster, previous=previous)
    except BaseException:
        for rel in sorted(storage.tree(data_dir) - before):  # a dir before its contents
            path = storage.join(data_dir, rel)
            (storage.rmtree if storage.isdir(path) else storage.remove)(path)
        if not existed:
            storage.rmtree(data_dir)
        raise


def _lease(run_dir: RunDir, config):
    """The writer lease, taken before anything is written (a new local dir is made for it)."""
    created = _missing_dirs(run_dir.model_dir)
    if created:
        try:
            os.makedirs(run_dir.model_dir)
        except OSError as e:  # a parent is a file, a read-only or virtual file system
            _remove_if_empty(created)
            raise UserError(f"--model-dir {run_dir.model_dir} cannot be created: "
                            f"{e.strerror or e} ({e.filename or run_dir.model_dir}). Choose a "
                            "directory you can write (its parents must be directories).") from None
    lease = run_dir.lease(config.runtime.lease_timeout_secs)
    try:
        lease.acquire()
    except BaseException:
        _remove_if_empty(created)
        raise

    @contextlib.contextmanager
    def holding():
        try:
            yield lease
        finally:
            lease.release()
            _remove_if_empty(created)
    return holding()


def _missing_dirs(model_dir: str) -> list[str]:
    """The local model dir and those of its parents that do not exist yet, deepest first."""
    missing, path = [], os.path.abspath(model_dir)
    if storage.is_remote(model_dir):
        return missing
    while not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def _remove_if_empty(created: list[str]) -> None:
    """A failed start leaves no trace: remove the dirs it made for its lease (the model
    dir, and parents such as `runs/` of `runs/new`), each only while it is empty."""
    for made in created:
        if not (os.path.isdir(made) and not os.listdir(made)):
            return
        os.rmdir(made)


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
    if config_lib.constant_rate(t.lr_schedule, t.warmup_steps):
        inner.learning_rate = t.learning_rate


def _start_writing(run: Run, restored: str | None) -> None:
    """Everything validated and restored: from here on the model dir is written."""
    if not run.cluster.is_chief:
        return
    for path in run.run_dir.remove_leftovers():
        log.warning("removed %s, left by a writer that was killed", path)
    info = runtime_info(run.config, run.strategy, run.cluster, run.cudnn, run.xla)
    info["data"] = run.task.data_report()
    if run.prepared:
        info["prepared"] = {"dir": run.run_dir.relative(run.prepared["out"]),
                            "content_key": run.prepared["content_key"],
                            "reused": run.prepared["reused"]}
    if restored:
        info["last_checkpoint"] = {"step": int(run.step_var.numpy()),
                                   "path": os.path.basename(restored), "time": _utc()}
    run.run_dir.write_start(run.config, run.assets, info)


def _train_loop(run: Run, stop_at: int | None, verbose: bool, restored, lease) -> dict:
    """The outer loop: steps, summaries, evals and checkpoints, top to bottom."""
    config, cluster, task, run_dir = run.config, run.cluster, run.task, run.run_dir
    is_chief = cluster.is_chief
    say = printer(verbose and is_chief)
    role = "chief" if is_chief else "non-chief, writes nothing to the model dir"
    print(f"seqtrain: {config.task.name} in {run_dir.model_dir}: {strategy_name(run.strategy)}, "
          f"{run.replicas} replica(s), XLA {'on' if run.xla.enabled else 'off'}, "
          f"worker {cluster.worker_id} ({role})", flush=True)

    stack = contextlib.ExitStack()
    log_root = _log_root(config, run_dir.log_dir, is_chief, stack, run.stop)
    writers = summaries.Writers(log_root)
    step = int(run.step_var.numpy())
    total = config.train.steps
    end = min(total, stop_at) if stop_at else total
    if restored is not None:
        say(f"resumed from {restored} at step {step}")
        if step >= end:
            say(_nothing_to_train(step, total, stop_at))
    if is_chief:
        writers.write_config(config, step)
        if task.data_report():
            writers.text("data", data_report.markdown(task.data_report()), step)

    progress = summaries.Progress(total, step, config.train.log_every, enabled=verbose and is_chief)
    profile = profiling.ProfileWindow(  # every worker splits its loops at the window's edges
        config.runtime.profile_steps, write_root=log_root, shown_root=run_dir.log_dir,
        start_step=step, say=progress.message, record=run_dir.record_profile)
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
                    _to_boundary(step, config.train.eval_every), profile.to_edge(step))
            with profile.loop(step, n):  # starts the trace before step A
                t0 = time.perf_counter()
                loss, done, stopped = _run_steps(run, n, first=first_loop)
            if first_loop:
                _report_startup(run, time.perf_counter() - t0, done, writers, step + done, say)
            first_loop = False
            elapsed = time.perf_counter() - t0
            if not math.isfinite(loss):
                _refuse_diverged(run, loss, step + done, last_saved)
            prev_step, step = step, step + done
            run.step_var.assign(step)
            profile.after_steps(step)  # stops it after step B
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
        profile.stop(step)  # a run that ends or fails inside the window
        run.stop.uninstall()
        progress.done()
        writers.close()
        stack.close()  # final log upload for log_sync=local_then_sync

    if stop_at and step < total:
        say(f"stopped at step {step} of {total} (--stop-at); run again to continue")
    if not metrics and is_chief:
        metrics = run_dir.read_metrics().get("metrics", {})
    export_dir = run_dir.file(EXPORT)
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


def _nothing_to_train(step: int, total: int, stop_at: int | None) -> str:
    """Why a resumed run trains no step (Orbit's controller returns the same way)."""
    if step > total:
        return (f"nothing to train: the run is at step {step}, past train.steps={total} "
                "(train.steps counts from step 0, not from the resume); raise it to train "
                "on")
    if step == total:
        return (f"nothing to train: the run already finished at step {step} "
                f"(train.steps={total}); raise train.steps to train on")
    return f"nothing to train: the run is already at step {step}, at or past --stop-at {stop_at}"


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


def _refuse_diverged(run: Run, loss: float, step: int, last_saved: int | None) -> None:
    """A non-finite loss whose step left non-finite weights ends the run before they are
    saved (Keras' TerminateOnNaN, without the save). A non-finite loss with finite weights
    (a float16 overflow the loss scale skipped) trains on."""
    bad = [v.path for v in run.model.trainable_variables
           if not bool(tf.reduce_all(tf.math.is_finite(v)))]
    if not bad:
        return
    t = run.config.train
    kept = (f"the last checkpoint, step {last_saved}, is as it was" if last_saved is not None
            else "no checkpoint was written")
    raise UserError(
        f"training diverged: the loss was {loss} in the steps up to {step} and "
        f"{len(bad)} weight(s) are no longer finite (first: {bad[0]}). Stopped without "
        f"saving; {kept}. Lower train.learning_rate (now {t.learning_rate}), or set "
        f"train.clipnorm, then train again with the same --model-dir.")


def _save(run: Run, step: int) -> None:
    path = run.checkpointer.save(step)
    run.stop.last_checkpoint = path
    if run.cluster.is_chief:
        run.run_dir.record_checkpoint(step, path)


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
        batch = run.config.train.batch_size
        raise FirstStepOutOfMemory(
            f"out of memory in the first training step with train.batch_size={batch} "
            f"({_oom_line(e)}). Nothing was trained and the model dir is as it was. Use a "
            f"smaller train.batch_size (for example --set train.batch_size={max(1, batch // 2)}"
            "), a smaller model or shorter sequences, or more replicas.") from None
    return float(loss), int(done), bool(stopped)


class FirstStepOutOfMemory(UserError):
    """The first compiled loop ran out of memory: a start to undo, not a run to resume."""


def _oom_line(e: Exception) -> str:
    """TF's own line: "OOM when allocating tensor with shape[...]" (a kernel) or "Out of
    memory while trying to allocate N GiB" (XLA), else the first line."""
    for line in str(e).splitlines():
        if "OOM when allocating" in line or "Out of memory while" in line:
            return line.strip().split(" on /")[0].rstrip(".")[:300]
    return first_line(e)



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
