"""`evaluate` and `evaluate --watch`: a run's checkpoints on its eval split.

`evaluate_model` is also the in-loop evaluation of training (trainer/train_lib.py).
"""

from __future__ import annotations

import time

from trainer import checkpoints, distribute, preemption, summaries, tuning
from trainer.best import BestCheckpoint, BestTracker
from trainer.errors import UserError
from trainer.run_dir import RunDir
from trainer.runner import evaluation_run, printer


def evaluate_model(steps, task, model, eval_ds, step: int, model_dir: str, writers,
                   is_chief: bool, stop: preemption.StopSignal | None = None,
                   best: BestTracker | None = None) -> dict | None:
    """Runs the eval split on every replica and aggregates the metric sums.

    Returns None if a stop was requested mid-way in a single-worker run (the
    partial metrics are dropped; the stop checkpoint matters more).
    """
    sums: dict[str, list[float]] = {}
    single_worker = distribute.num_workers(steps.strategy) <= 1
    for batch in eval_ds:
        if stop is not None and stop.requested and single_worker:
            return None
        for name, (num, den) in steps.eval_batch(batch).items():
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
    run = evaluation_run(RunDir.open(model_dir))
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
    say = printer(verbose)
    run_dir = _wait_for_run(model_dir, poll_secs, say)
    done = int(run_dir.read_metrics().get("step") or 0)
    total = int((run_dir.read_config_dict().get("train") or {}).get("steps") or 0)
    if total and done >= total and not checkpoints.discover(run_dir.checkpoint_dir):
        # metrics.json says done, so no checkpoint will come (checked before the writers)
        raise UserError(f"{model_dir} has no checkpoint to evaluate in "
                        f"{run_dir.checkpoint_dir} (its metrics.json is at step {done}); "
                        "train it first.")
    run = evaluation_run(run_dir)
    writers = summaries.Writers(run_dir.log_dir, eval_only=True)
    best = BestTracker.for_run(run.config, run_dir.read_metrics().get("best"))
    best_ckpt = BestCheckpoint(run.model, run_dir.checkpoint_dir, is_chief=True)
    metrics: dict = {}
    try:
        while True:
            total = int((run_dir.read_config_dict().get("train") or {}).get("steps") or 0)
            newest = checkpoints.discover(run_dir.checkpoint_dir)
            if newest and newest[0][0] > done:
                run.checkpointer.skipped.clear()
                try:
                    step = run.checkpointer.restore()
                except UserError:
                    if checkpoints.discover(run_dir.checkpoint_dir) != newest:
                        continue  # the trainer rotated them away while we read: look again
                    raise
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
    say(f"evaluated the final step {done} of {run_dir.model_dir}" if metrics else
        f"nothing to evaluate: {run_dir.model_dir}'s final step {done} was already evaluated "
        "(metrics.json)")
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
