"""Checkpoint save / restore / fallback for exact resume.

A checkpoint holds everything that determines the rest of the run:
the model, the optimizer (incl. loss-scale state), the global step and the
dropout RNG states. The step is also the data position (the training order is
stateless, trainer/data/sampling.py), so no input iterator is saved; the
`iterator` of checkpoints written by earlier versions is ignored on restore. Keras 3 keeps each
dropout/RNN layer's RNG in a `SeedGenerator` whose state variable is not part
of the model's checkpoint graph, so those variables are tracked explicitly.

Only the chief writes to MODEL_DIR/checkpoints. Under MultiWorkerMirrored every
worker must take part in each save (it is a collective), so the others save to
a private temp dir and delete it straight away. All workers restore from the
chief's directory.
"""

from __future__ import annotations

import logging
import re
import tempfile

import keras
import tensorflow as tf

from trainer import storage
from trainer.errors import UserError, first_line
from trainer.models.rng import rng_state_variables

log = logging.getLogger(__name__)


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

    def __init__(self, *, model, optimizer, step, ckpt_dir: str, keep: int, is_chief: bool):
        self.ckpt_dir = ckpt_dir
        check_trackable(model)
        self._objects = dict(model=model, optimizer=optimizer, step=step,
                             rng=rng_state_variables(model))
        self.checkpoint = tf.train.Checkpoint(**self._objects)
        self._is_chief = is_chief
        self._keep = keep
        self._write_dir = ckpt_dir if is_chief else tempfile.mkdtemp(prefix="seqtrain-worker-ckpt-")
        self._manager = None  # made at the first save: its constructor reads the state file
        self.restored_path: str | None = None
        self.skipped: list[str] = []  # "path: reason" of unreadable checkpoints passed over

    def latest(self) -> str | None:
        """The newest checkpoint this run saved or restored."""
        if self._manager is not None and self._manager.latest_checkpoint:
            return self._manager.latest_checkpoint
        return self.restored_path

    def restore(self) -> int | None:
        """Restores the newest readable checkpoint of the chief's directory.

        Checkpoints are found from the files themselves (`ckpt-N.index`), not
        only from the `checkpoint` state file, so a damaged or missing state
        file loses nothing. Any checkpoint that cannot be read (a save cut short
        by a dying node, a truncated or deleted file) is skipped with a warning
        naming it; the newest readable one wins. Returns its step, or None when
        the directory holds no checkpoint at all. Nothing is written. Values
        the run does not have (the input iterator older versions saved) are
        left unread.

        Each attempt restores through a new `tf.train.Checkpoint`: one whose
        restore failed part-way (its files deleted or damaged under it) keeps
        that restore's deferred `save_counter` position and replays it first at
        the next restore, failing an intact checkpoint with the old one's error.

        Raises:
          UserError: checkpoints exist but none can be read, or the newest
            readable one does not match the model being built.
        """
        candidates = discover(self.ckpt_dir)
        if not candidates:
            return None
        for step, path in candidates:
            try:
                tf.train.load_checkpoint(path)  # the index must parse
                checkpoint = tf.train.Checkpoint(**self._objects)
                status = checkpoint.restore(path)
                status.assert_existing_objects_matched()
                status.expect_partial()
            except (AssertionError, tf.errors.InvalidArgumentError) as e:
                raise UserError(_mismatch(path, e)) from None
            except ValueError as e:
                if "shape" not in str(e):
                    self._skip(path, e)
                    continue
                raise UserError(_mismatch(path, e)) from None
            except Exception as e:  # noqa: BLE001 - any reader failure: try the one before
                self._skip(path, e)
                continue
            if self.skipped:
                log.warning("restored the older checkpoint %s; passed over: %s", path,
                            "; ".join(self.skipped))
            self.checkpoint, self.restored_path = checkpoint, path
            return step
        raise UserError(
            f"none of the {len(candidates)} checkpoint(s) in {self.ckpt_dir} can be read "
            f"({'; '.join(self.skipped)}). Their files are damaged or incomplete: restore "
            "them from a backup, or move this --model-dir aside and start the run again.")

    def _skip(self, path: str, e: BaseException) -> None:
        reason = f"{path}: {type(e).__name__}: {first_line(e, 400)}"
        log.warning("checkpoint %s is unreadable (%s: %s); trying the one before", path,
                    type(e).__name__, first_line(e, 400))
        self.skipped.append(reason)

    def save(self, step: int) -> str:
        """Saves at `step`. A collective under MultiWorkerMirrored: every worker calls it.

        Raises:
          UserError: the disk is full or not writable (the earlier checkpoints
            stay intact: TF writes to a temp name and renames).
        """
        with storage.writing(self._write_dir):
            if self._manager is None:
                self._manager = self._make_manager()
            path = self._manager.save(checkpoint_number=step)
        if not self._is_chief:
            storage.rmtree(self._write_dir)
            storage.makedirs(self._write_dir)
        return path

    def _make_manager(self):
        if self._is_chief:
            _repair_state_file(self._write_dir)
        return tf.train.CheckpointManager(
            self.checkpoint, self._write_dir, max_to_keep=self._keep, checkpoint_name="ckpt")


_INDEX = re.compile(r"^ckpt-(\d+)\.index$")


def discover(ckpt_dir: str) -> list[tuple[int, str]]:
    """[(step, path prefix)] of the checkpoints in `ckpt_dir`, newest first.

    Reads the directory listing, plus the state file's list when it parses
    (so a checkpoint whose index went missing is reported, not ignored).
    """
    if not storage.isdir(ckpt_dir):
        return []
    steps = {int(m.group(1)) for n in storage.listdir(ckpt_dir) if (m := _INDEX.match(n))}
    for name in _state_names(ckpt_dir):
        m = re.fullmatch(r"ckpt-(\d+)", name)
        if m:
            steps.add(int(m.group(1)))
    return [(s, storage.join(ckpt_dir, f"ckpt-{s}")) for s in sorted(steps, reverse=True)]


def has_checkpoint_files(ckpt_dir: str) -> bool:
    """Whether anything checkpoint-like is in `ckpt_dir` (even unreadable).

    TF's `ckpt-N_temp/` staging dirs do not count: a kill during a save leaves
    one, and until it is renamed into place nothing was saved (it is removed
    as a leftover at the next start).
    """
    if not storage.isdir(ckpt_dir):
        return False
    return any(n == "checkpoint" or (n.startswith("ckpt-") and not n.endswith("_temp"))
               for n in storage.listdir(ckpt_dir))


def _state_names(ckpt_dir: str) -> list[str]:
    """Checkpoint basenames listed in the state file; [] if it is missing or damaged."""
    try:
        state = tf.train.get_checkpoint_state(ckpt_dir)
    except Exception:  # noqa: BLE001 - an empty or damaged state file
        return []
    if state is None:
        return []
    return [p.replace("\\", "/").rsplit("/", 1)[-1] for p in state.all_model_checkpoint_paths]


def _repair_state_file(ckpt_dir: str) -> None:
    """Rewrites a missing or damaged `checkpoint` state file from the files present.

    CheckpointManager fails on an empty state file and forgets the checkpoints
    of a garbled one (then never prunes them). Only readable-looking
    checkpoints (an index file present) are listed.
    """
    if not storage.isdir(ckpt_dir):
        return
    names = sorted((int(m.group(1)) for n in storage.listdir(ckpt_dir) if (m := _INDEX.match(n))))
    if not names:
        return
    listed = _state_names(ckpt_dir)
    if listed and all(storage.exists(storage.join(ckpt_dir, n + ".index")) for n in listed):
        return
    lines = [f'model_checkpoint_path: "ckpt-{names[-1]}"']
    lines += [f'all_model_checkpoint_paths: "ckpt-{s}"' for s in names]
    storage.write_text(storage.join(ckpt_dir, "checkpoint"), "\n".join(lines) + "\n")


def _mismatch(path: str, e: BaseException) -> str:
    return (f"checkpoint {path} does not match the model being built: {first_line(e, 400)}. "
            "The model changed since it was saved; use a new --model-dir, or restore the "
            "original model config.")

