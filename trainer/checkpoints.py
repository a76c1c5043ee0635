"""Checkpoint save / restore / fallback for exact resume.

A checkpoint holds everything that determines the rest of the run:
the model, the optimizer (incl. loss-scale state), the global step, the
`tf.data` iterator position and the dropout RNG states. Keras 3 keeps each
dropout/RNN layer's RNG in a `SeedGenerator` whose state variable is not part
of the model's checkpoint graph, so those variables are tracked explicitly.

Only the chief writes to MODEL_DIR/checkpoints. Under MultiWorkerMirrored every
worker must take part in each save (it is a collective), so the others save to
a private temp dir and delete it straight away. All workers restore from the
chief's directory.
"""

from __future__ import annotations

import logging
import tempfile

import keras
import tensorflow as tf

from trainer import storage
from trainer.errors import UserError

log = logging.getLogger(__name__)


def rng_state_variables(model: keras.Model) -> list:
    """The SeedGenerator state variables of every layer in `model`."""
    seen, out = set(), []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for gen in getattr(layer, "_seed_generators", []) or []:
            state = gen.state
            if id(state) not in seen:
                seen.add(id(state))
                out.append(state)
    return out


def check_trackable(model: keras.Model) -> None:
    """Fails if some model weights are invisible to `tf.train.Checkpoint`.

    Keras 3 layers kept in a plain Python list attribute are not part of the
    checkpoint graph: the checkpoint would silently miss their weights and a
    resume would re-initialize them.
    """
    tracked = {id(obj) for obj in tf.train.TrackableView(model).descendants()}
    missing = [w.path for w in model.weights if id(w) not in tracked]
    if missing:
        raise RuntimeError(
            f"{len(missing)} weights of model {model.name!r} are not tracked by "
            f"tf.train.Checkpoint (e.g. {missing[:3]}). Keep Keras layers as direct "
            "attributes of the model, not inside plain Python lists or dicts.")


class Checkpointer:
    """Owns the tf.train.Checkpoint and its manager for one run."""

    def __init__(self, *, model, optimizer, step, iterator, ckpt_dir: str, keep: int,
                 is_chief: bool):
        self.ckpt_dir = ckpt_dir
        check_trackable(model)
        self._rng = rng_state_variables(model)
        self._objects = dict(model=model, optimizer=optimizer, step=step, rng=self._rng)
        self.checkpoint = tf.train.Checkpoint(iterator=iterator, **self._objects)
        self._is_chief = is_chief
        write_dir = ckpt_dir if is_chief else tempfile.mkdtemp(prefix="seqtrain-worker-ckpt-")
        self._write_dir = write_dir
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, write_dir, max_to_keep=keep, checkpoint_name="ckpt"
        )

    def latest(self) -> str | None:
        return tf.train.latest_checkpoint(self.ckpt_dir)

    def restore(self, *, with_iterator: bool = True) -> int | None:
        """Restores the newest readable checkpoint of the chief's directory.

        Falls back to older checkpoints if the newest cannot be read (a save
        cut short by a dying node). Returns the checkpoint number, or None
        when there is nothing to restore.

        Raises:
          UserError: checkpoints exist but none matches this model.
        """
        state = tf.train.get_checkpoint_state(self.ckpt_dir)
        if state is None or not state.all_model_checkpoint_paths:
            return None
        target = self.checkpoint if with_iterator else tf.train.Checkpoint(**self._objects)
        errors = []
        for path in reversed(list(state.all_model_checkpoint_paths)):
            path = _resolve(self.ckpt_dir, path)
            try:
                status = target.restore(path)
                status.assert_existing_objects_matched()
                if with_iterator:
                    status.assert_consumed()
                else:
                    status.expect_partial()
                if errors:
                    log.warning("restored the older checkpoint %s; newer ones were unreadable: %s",
                                path, "; ".join(errors))
                return int(path.rsplit("-", 1)[1])
            except (tf.errors.NotFoundError, tf.errors.DataLossError,
                    tf.errors.OutOfRangeError, IndexError) as e:
                # Missing or truncated files (IndexError: "Read less bytes
                # than requested"): a save cut short. Try the one before.
                errors.append(f"{path}: {type(e).__name__}")
                continue
            except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as e:
                raise UserError(
                    f"checkpoint {path} does not match the model being built: "
                    f"{_first_line(e)}. The model changed since it was saved; use a new "
                    "--model-dir, or restore the original model config."
                ) from None
        raise UserError(
            f"no readable checkpoint in {self.ckpt_dir} ({'; '.join(errors)}). "
            "Delete the broken checkpoints or use a new --model-dir."
        )

    def save(self, step: int) -> str:
        """Saves at `step`. A collective under MultiWorkerMirrored: every worker calls it."""
        path = self.manager.save(checkpoint_number=step)
        if not self._is_chief:
            storage.rmtree(self._write_dir)
            storage.makedirs(self._write_dir)
        return path


def _resolve(ckpt_dir: str, path: str) -> str:
    if storage.is_remote(path) or path.startswith("/"):
        return path
    return storage.join(ckpt_dir, path)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:400]
