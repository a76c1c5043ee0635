"""The run directory: its layout, its files, the resume check and the writer lease.

This module is the one owner of a model dir's names. Everything else asks it:

    MODEL_DIR/
      config.yaml      the config the run uses (the base of a resume)
      runtime.json     strategy, devices, versions, where checkpoints and logs are,
                       the last checkpoint saved and the profiler traces taken
      metrics.json     the latest eval metrics
      assets/          fitted vocabularies, normalisation statistics
      checkpoints/     ckpt-N.* (or AIP_CHECKPOINT_DIR on Vertex AI)
      train/ eval/     TensorBoard event files (or AIP_TENSORBOARD_LOG_DIR); profiler
                       traces in train/plugins/profile/
      export/          the SavedModel, written when the run finishes
      data/<key>/      the data prepared by `train` (data.prepare=auto), one directory
                       per content key (trainer/data/auto_prepare.py)
      lease.json       present while a trainer holds the run (see trainer/lease.py)

Paths may be local (relative or absolute) or gs://.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re

import yaml

from trainer import config as config_lib, experiment, storage
from trainer.errors import UserError, first_line
from trainer.lease import Lease
from trainer.redact import redact

CONFIG = "config.yaml"
RUNTIME = "runtime.json"
METRICS = "metrics.json"
ASSETS = "assets"
CHECKPOINTS = "checkpoints"
EXPORT = "export"
DATA = "data"
LEASE = "lease.json"

# Keys a resume may not change: they define the model, its data and its variables (the
# seed draws the eval split and the order of the examples, whose position is the step).
FROZEN_ON_RESUME = ("task", "data", "model", "runtime.precision", "runtime.seed",
                    "train.optimizer")

# runtime.json keys that are the run's history, not this start's: a restart keeps them.
_KEPT_ON_RESTART = ("profiles",)

# Files a killed writer can leave behind: storage.write_text's "NAME.tmp-XXXXXXXX",
# the trainer's "export.tmp-XXXXXXXX", TF's "ckpt-N_temp/" and log sync's temp copies.
_LEFTOVER = re.compile(r"(\.tmp-[0-9a-f]{8}$|_temp$|\.logsync-tmp$)")
# Under MODEL_DIR/data/: a prepared dataset (its content key's first 16 hex digits), or
# the temporary dir of a preparation that was killed (trainer/data/prepared_writer.py).
_PREPARED = re.compile(r"^([0-9a-f]{16}|\.[0-9a-f]{16}\.tmp-[0-9a-f]{8})$")


@dataclasses.dataclass(frozen=True)
class Previous:
    """What an existing run says about itself."""

    config: dict
    progress_step: int  # the furthest step the run recorded (a checkpoint or an eval)
    progress_source: str  # the file that recorded it


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """See RunDir.snapshot: the paths under each dir, and the bytes of the run's own files."""
    trees: dict[str, set[str]]
    files: dict[str, bytes]


class RunDir:
    """A model dir and where its checkpoints and TensorBoard logs go."""

    def __init__(self, model_dir: str, *, checkpoint_dir: str | None = None,
                 log_dir: str | None = None):
        self.model_dir = model_dir
        self.checkpoint_dir = checkpoint_dir or storage.join(model_dir, CHECKPOINTS)
        self.log_dir = log_dir or model_dir

    @classmethod
    def open(cls, model_dir: str) -> "RunDir":
        """An existing run, with the checkpoint and log dirs its runtime.json records."""
        run = cls(model_dir)
        if not storage.exists(run.file(CONFIG)):
            raise UserError(
                f"{model_dir} is not a seqtrain run (no {CONFIG}). Pass the --model-dir of a "
                "run made by `seqtrain train`.")
        dirs = run.read_runtime().get("dirs") or {}
        return cls(model_dir, checkpoint_dir=run._from_record(dirs.get("checkpoints")),
                   log_dir=run._from_record(dirs.get("logs")))

    def file(self, *names: str) -> str:
        return storage.join(self.model_dir, *names)

    @property
    def data_dir(self) -> str:
        """Where `train` prepares the run's data (one subdirectory per content key)."""
        return self.file(DATA)

    def relative(self, path: str) -> str:
        """`path` as runtime.json records it (relative to the model dir when local)."""
        return self._to_record(path)

    def resolve(self, value: str) -> str:
        """A path runtime.json records, usable from the current working directory."""
        return self._from_record(value)

    # ---------------------------------------------------------------- reading
    def read_config_dict(self) -> dict:
        path = self.file(CONFIG)
        try:
            data = yaml.safe_load(storage.read_text(path))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise UserError(
                f"{path} is damaged ({type(e).__name__}: {first_line(e)}). It records the run's "
                "config, the base of a resume: restore it from a copy or the config you trained "
                "with (`seqtrain config` prints the defaults), or use a new --model-dir.") from None
        if not isinstance(data, dict):
            raise UserError(f"{path} is damaged: expected a YAML mapping, got "
                            f"{type(data).__name__}. Restore it, or use a new --model-dir.")
        return data

    def read_config(self) -> config_lib.ExperimentConfig:
        """The run's own config, validated (as `seqtrain train` wrote it)."""
        return experiment.load(config_file=self.file(CONFIG))

    def read_runtime(self) -> dict:
        return self._read_json(RUNTIME)

    def read_metrics(self) -> dict:
        return self._read_json(METRICS)

    def _read_json(self, name: str) -> dict:
        path = self.file(name)
        if not storage.exists(path):
            return {}
        try:
            data = json.loads(storage.read_text(path))
        except (ValueError, UnicodeDecodeError) as e:
            raise UserError(
                f"{path} is damaged ({type(e).__name__}: {first_line(e)}). seqtrain rewrites "
                "it at the next start: delete that one file and run the command again (the "
                "checkpoints are found without it), or train into a new --model-dir.") from None
        return data if isinstance(data, dict) else {}

    # ------------------------------------------------------------ the resume
    def inspect(self, config) -> Previous | None:
        """Refuses a dir that is not a seqtrain run, or a resume that changes the model.

        Returns None for a new (missing or empty) run dir.
        """
        if not storage.exists(self.model_dir):
            return None
        if not storage.isdir(self.model_dir):
            raise UserError(f"--model-dir {self.model_dir} exists and is a file, not a directory.")
        if not storage.exists(self.file(CONFIG)):
            # A start killed before it wrote config.yaml may have left its lease and the
            # data it was preparing (data/<key>/, or a writer's temporary dir): still new.
            if [n for n in storage.listdir(self.model_dir)
                    if n != LEASE and not (n == DATA and self._only_prepared_data())]:
                raise UserError(
                    f"--model-dir {self.model_dir} exists, is not empty and is not a seqtrain "
                    f"run (no {CONFIG}). Choose a new or empty directory.")
            return None
        old = self.read_config_dict()
        new = config.to_dict()
        changed = [k for k in config_lib.diff(redact(old), redact(new))  # as config.yaml has it
                   if any(k == f or k.startswith(f + ".") for f in FROZEN_ON_RESUME)
                   and not config_lib.resume_ok(config, k)
                   and not config_lib.new_key_at_default(config, old, k)]
        if changed:
            details = ", ".join(f"{k}: {_get(old, k)!r} -> {_get(new, k)!r}" for k in changed)
            raise UserError(
                f"--model-dir {self.model_dir} holds a run whose config differs in keys that "
                f"define the model or its data ({details}). A resume must keep them; use a new "
                "--model-dir for a different model, or restore those values.")
        was, now = _rate_is_variable(old), _rate_is_variable(new)
        if was != now:
            keys = ", ".join(f"{k}: {_get(old, k)!r} -> {_get(new, k)!r}"
                             for k in ("train.lr_schedule", "train.warmup_steps")
                             if _get(old, k) != _get(new, k))
            raise UserError(
                f"--model-dir {self.model_dir} was trained with "
                f"{'a constant learning rate' if was else 'a schedule'} and this start asks "
                f"for {'a constant one' if now else 'a schedule'} ({keys}). A constant rate without warmup is an optimizer variable saved in "
                "the checkpoints and a schedule is not, so a resume cannot switch between them. "
                "Keep train.lr_schedule and train.warmup_steps as they were (train.learning_rate "
                "and a schedule's other settings may change), or use a new --model-dir.")
        runtime = self.read_runtime()
        metrics = self.read_metrics()
        steps = [(int((runtime.get("last_checkpoint") or {}).get("step") or 0), RUNTIME),
                 (int(metrics.get("step") or 0), METRICS)]
        step, source = max(steps)
        return Previous(config=old, progress_step=step, progress_source=source)

    def check_assets(self, assets: dict, previous: Previous | None) -> None:
        """Refuses a resume whose fitted assets (vocabularies...) differ from the saved ones."""
        if previous is None:
            return
        for name, text in assets.items():
            path = self.file(ASSETS, name)
            if storage.exists(path) and storage.read_text(path) != text:
                raise UserError(
                    f"the data changed since {self.model_dir} was trained: the fitted asset "
                    f"{name!r} (for example the vocabulary) differs from the saved one. Resume "
                    "with the original data, or use a new --model-dir.")

    # ---------------------------------------------------------------- writing
    def lease(self, timeout: float) -> Lease:
        return Lease(self.file(LEASE), timeout=timeout)

    def _only_prepared_data(self) -> bool:
        """MODEL_DIR/data/ holds only what `train`'s implicit preparation writes there."""
        return all(_PREPARED.match(n) for n in storage.listdir(self.data_dir))

    def remove_leftovers(self) -> list[str]:
        """Deletes temp files and dirs a killed writer left; returns their paths."""
        removed = []
        for d in dict.fromkeys([self.model_dir, self.checkpoint_dir, self.data_dir]):
            if not storage.isdir(d):
                continue
            for name in storage.listdir(d):
                if _LEFTOVER.search(name):
                    path = storage.join(d, name)
                    if storage.isdir(path):
                        storage.rmtree(path)
                    else:
                        storage.remove(path)
                    removed.append(path)
        return removed

    def snapshot(self) -> "Snapshot":
        """What the run's dirs hold before a start writes anything, so that a start that
        fails in its first step (out of memory) can leave them as they were."""
        roots = dict.fromkeys([self.model_dir, self.log_dir, self.checkpoint_dir])
        kept = {name: storage.read_bytes(self.file(name)) for name in (CONFIG, RUNTIME, METRICS)
                if storage.exists(self.file(name))}
        return Snapshot({root: storage.tree(root) for root in roots}, kept)

    def roll_back(self, snapshot: "Snapshot") -> None:
        """Removes what was written since `snapshot` and puts back the files it rewrote."""
        with storage.writing(self.model_dir):
            for root, before in snapshot.trees.items():
                for rel in sorted(storage.tree(root) - before):  # a dir before its contents
                    path = storage.join(root, rel)
                    if storage.isdir(path):
                        storage.rmtree(path)
                    else:
                        storage.remove(path)
            for name, data in snapshot.files.items():
                storage.write_bytes(self.file(name), data)

    def write_start(self, config, assets: dict, runtime: dict) -> None:
        """Writes config.yaml, the assets and runtime.json at the start of a run."""
        with storage.writing(self.model_dir):
            storage.makedirs(self.model_dir)
            # URL credentials (a signed URL's query) are never written: a resume finds the
            # download in the cache by the redacted URL, or asks for the URL again.
            storage.write_text(self.file(CONFIG), redact(config.to_yaml()))
            if assets:
                storage.makedirs(self.file(ASSETS))
            for name, text in assets.items():
                storage.write_text(self.file(ASSETS, name), text)
            kept = {k: v for k, v in self.read_runtime().items() if k in _KEPT_ON_RESTART}
            self.write_runtime({**kept, **runtime, "dirs": {
                "checkpoints": self._to_record(self.checkpoint_dir),
                "logs": self._to_record(self.log_dir)}})

    def write_runtime(self, runtime: dict) -> None:
        with storage.writing(self.model_dir):
            storage.write_json(self.file(RUNTIME), runtime)

    def record_checkpoint(self, step: int, path: str) -> None:
        """Notes the last checkpoint in runtime.json: progress evidence for the next start."""
        runtime = self.read_runtime()
        runtime["last_checkpoint"] = {"step": step, "path": os.path.basename(path), "time": _utc()}
        self.write_runtime(runtime)

    def record_profile(self, steps: list[int], trace_dir: str) -> None:
        """Notes a profiler trace (`runtime.profile_steps`) in runtime.json's "profiles"."""
        runtime = self.read_runtime()
        runtime.setdefault("profiles", []).append(
            {"steps": steps, "dir": self._to_record(trace_dir), "time": _utc()})
        self.write_runtime(runtime)

    def write_metrics(self, step: int, metrics: dict, best: dict | None = None) -> None:
        """The latest eval metrics, and the best so far (see trainer/best.py)."""
        record = {"step": step, "metrics": metrics, "time": _utc()}
        if best is not None:
            record["best"] = best
        with storage.writing(self.model_dir):
            storage.write_json(self.file(METRICS), record)

    # ------------------------------------------------------------- internals
    def _to_record(self, path: str) -> str:
        """A dir as runtime.json records it: relative to the model dir when inside it."""
        if storage.is_remote(path) or storage.is_remote(self.model_dir):
            return path
        # Relative to the model dir (e.g. "checkpoints", "../checkpoints"): right from any
        # working directory, and after the whole tree is moved.
        return os.path.relpath(os.path.abspath(path), os.path.abspath(self.model_dir))

    def _from_record(self, value: str | None) -> str | None:
        if not value:
            return None
        if storage.is_remote(value) or os.path.isabs(value):
            return value
        return os.path.normpath(storage.join(self.model_dir, value))


def _rate_is_variable(config: dict) -> bool:
    train = config.get("train") or {}
    return config_lib.constant_rate(train.get("lr_schedule", "constant"),
                                    train.get("warmup_steps"))


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(part)
    return d


def _utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()

