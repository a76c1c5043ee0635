"""`seqtrain data inspect`: which examples global batch N of a run holds.

The training order is stateless (trainer/data/sampling.py), so the ids of any
global batch follow from the run's config.yaml alone (seed, batch size, data):
no checkpoint and no replay of the input pipeline is needed.
"""

from __future__ import annotations

from trainer.errors import UserError
from trainer.run_dir import RunDir

PREVIEW_CHARS = 60


def check_args(step: int, replica: int | None) -> None:
    """Refuses a negative step or replica before anything heavy is imported."""
    if not 0 <= step <= 2**40:  # far past any run; the sampler's int64 step x batch holds it
        raise UserError(f"--step must be a global batch number from 0 to 2**40, got {step}.")
    if replica is not None and replica < 0:
        raise UserError(f"--replica must be a replica index >= 0, got {replica}.")


def batch_lines(model_dir: str, step: int, replica: int | None = None,
                preview: int = 8) -> list[str]:
    """Human lines: the example ids of global batch `step` (or one replica's slice of
    it), then a preview of the first `preview` examples.

    Raises:
      UserError: not a run, or `replica` outside the run's recorded replica count.
    """
    check_args(step, replica)
    run_dir = RunDir.open(model_dir)
    config = run_dir.read_config()
    batch = config.train.batch_size
    start, count, who = 0, batch, "all replicas"
    if replica is not None:
        replicas = run_dir.read_runtime().get("replicas")
        if not replicas:
            raise UserError(f"--replica needs the run's replica count, which {model_dir}/"
                            "runtime.json does not record (the run has not started yet). "
                            "Leave out --replica to see the whole global batch.")
        if replica >= replicas:
            raise UserError(f"--replica {replica} is out of range: the run has {replicas} "
                            f"replica(s), so use 0..{replicas - 1}.")
        count = batch // replicas
        start, who = replica * count, f"replica {replica} of {replicas}"

    import tensorflow as tf

    from trainer import registry
    from trainer.data import auto_prepare, sampling

    # what the run prepared (data.prepare=auto), if it did: the same examples, read in place
    task = registry.get(config.task.name)(auto_prepare.with_prepared_dir(config, (
        auto_prepare.recorded(config, run_dir.read_runtime(), run_dir.resolve))))
    task.prepare()
    examples = task.train_examples()
    ids = sampling.example_ids(config.runtime.seed, step, batch, examples.count,
                               start=start, count=count).numpy()
    epoch = (step * batch + start) // examples.count
    lines = [f"global batch {step} of {model_dir} ({config.task.name}, read by the training "
             f"step from {step} to {step + 1}): {who}, {len(ids)} of train.batch_size={batch} "
             f"examples, epoch {epoch} ({examples.count} examples an epoch), runtime.seed="
             f"{config.runtime.seed}",
             "ids: " + " ".join(str(i) for i in ids)]
    shown = ids[:preview]
    features, _ = examples.gather(tf.constant(shown, tf.int64))
    for i, example_id in enumerate(shown):
        lines.append(f"  {example_id}: {_preview(task, features, i)}")
    if len(ids) > len(shown):
        lines.append(f"  ... {len(ids) - len(shown)} more")
    return lines


def _preview(task, features, i: int) -> str:
    """One example's features as text: the task's own rendering, else the numbers."""
    import numpy as np
    import tensorflow as tf

    one = tf.nest.map_structure(lambda t: t[i].numpy(), features)
    render = getattr(task, "preview_features", None)  # optional: text tasks have one
    text = render(one) if render else " ".join(
        np.array2string(np.asarray(a).ravel()[:12], precision=3, separator=",")
        for a in tf.nest.flatten(one))
    text = text.replace("\n", "\\n")
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS - 3] + "..."
