"""The experiment config schema: typed fields with help, coercion, strict validation.

The sections are frozen dataclasses (task-specific `data` and `model` sections
live beside each task); `from_dict` coerces a plain dict into them, and unknown
keys and wrong types are errors that name the key. Building a config from its
layers (defaults <- YAML <- `--set`) is `trainer.experiment`'s job.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any, Literal, Mapping

import yaml

from trainer.errors import ConfigError


def field(default, help: str, *, min: float | None = None,  # noqa: A002
          max: float | None = None, resume_ok: bool = False, parse=None):  # noqa: A002
    """A dataclass field with a one-line help string and an optional minimum and maximum.

    `resume_ok=True` marks a `data`/`model` key that a resume may change because
    it does not change the data or the model (a cache dir, a retry count...).
    `parse(value, key_path)` turns a raw YAML/--set value into the field's typed
    value (or raises ConfigError) before the type check, for fields with a
    shorthand such as `--set runtime.profile_steps=5,8`.
    """
    meta = {"help": help, "resume_ok": resume_ok}
    if min is not None:
        meta["min"] = min
    if max is not None:
        meta["max"] = max
    if parse is not None:
        meta["parse"] = parse
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# ----------------------------------------------------------------------------
# Sections shared by every task. Task-specific `data` and `model` sections live
# next to each task (trainer/tasks/configs/*.py) and are tied to it by the registry.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TaskSection:
    name: str = field("text_classification", "Registered task name (`seqtrain tasks`).")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = field(1000, "Total optimizer steps. Raise it on resume to train longer.", min=1)
    batch_size: int = field(64, "Global batch size, split evenly across all replicas.", min=1)
    steps_per_loop: int = field(
        50, "Steps run inside one tf.function call (fewer host round trips).", min=1
    )
    checkpoint_every: int = field(200, "Save a checkpoint every N steps (and at the end).", min=1)
    keep_checkpoints: int = field(3, "How many recent checkpoints to keep.", min=1)
    eval_every: int = field(200, "Evaluate every N steps (and at the end).", min=1)
    eval_batches: int = field(
        0, "Limit evaluation to N global batches; 0 evaluates the whole eval split.", min=0
    )
    eval_in_loop: bool = field(
        True, "Evaluate on the chief during training; false when a separate evaluator "
        "(`seqtrain evaluate --watch`) evaluates the checkpoints."
    )
    best_metric: str = field(
        "", "Eval metric that picks the best checkpoint (kept outside the rotation, exported at "
        "the end). Empty: the task's headline metric (`seqtrain runs list` shows it first)."
    )
    best_goal: Literal["auto", "max", "min"] = field(
        "auto", "Whether a higher or lower best_metric is better; auto: the task's direction "
        "for its headline metric, min for names with loss/mse/mae/perplexity, else max."
    )
    early_stopping_patience: int = field(
        0, "Stop after this many evaluations without a better best_metric (0: never).", min=0
    )
    log_every: int = field(
        50, "Write train summaries / plain log lines every N steps.", min=1
    )
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = field("adam", "Optimizer.")
    learning_rate: float = field(1e-3, "Peak learning rate.", min=0)
    lr_schedule: Literal["constant", "cosine"] = field(
        "constant", "Learning-rate schedule after warmup."
    )
    warmup_steps: int = field(0, "Linear warmup steps.", min=0)
    weight_decay: float = field(0.0, "Decoupled weight decay (adamw only).", min=0)
    clipnorm: float | None = field(
        None, "Clip gradients by their global norm (computed after the all-reduce).", min=0
    )
    clipvalue: float | None = field(None, "Clip each gradient element to [-v, v].", min=0)
    shuffle_buffer: int = field(
        10000, "Unused (kept so older configs load): training samples a stateless seeded "
        "permutation of all examples per epoch, with no buffer.", min=1)


def _prepare_mode(value, path: str):
    """YAML 1.1 reads a bare `off` as false (and `on` as true): take them as meant."""
    if isinstance(value, bool):
        return "auto" if value else "off"
    return value


def prepare_mode_field():
    """`data.prepare` of a task that can be prepared (its spec names `prepare`):
    trainer/data/auto_prepare.py reads it."""
    return field(
        "auto", "auto: with data.prepared_dir empty, `train` prepares the data into "
        "MODEL_DIR/data/<content key>/ (reused while the sources and the content-defining "
        "data keys are unchanged) and trains from it (data generated at every start, such as "
        "the synthetic series, is not prepared); off: read the source into memory at every "
        "start. Both train on the same examples.", resume_ok=True, parse=_prepare_mode)


def _step_window(value, path: str) -> tuple:
    """`"A,B"`, `[A, B]`, or empty/none (off) -> `(A, B)` or `()`; 1 <= A <= B."""
    accepted = ("Accepted: two steps A,B with 1 <= A <= B <= train.steps (--set "
                f"{path}=5,8 or, in YAML, [5, 8]), or empty/none to profile nothing.")
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "off")):
        return ()
    parts = value.split(",") if isinstance(value, str) else value
    if isinstance(parts, (list, tuple)) and len(parts) == 0:
        return ()
    steps = []
    if isinstance(parts, (list, tuple)) and len(parts) == 2:
        for part in parts:
            if isinstance(part, str) and re.fullmatch(r"\s*\d+\s*", part):
                part = int(part)
            if isinstance(part, bool) or not isinstance(part, int):
                break
            steps.append(part)
    if len(steps) != 2:
        raise ConfigError(f"config key {path!r} got {value!r}, which is not two steps. {accepted}")
    first, last = steps
    if first < 1:
        raise ConfigError(f"config key {path!r} got {value!r}: the first step must be >= 1 "
                          f"(steps count from 1). {accepted}")
    if last < first:
        raise ConfigError(f"config key {path!r} got {value!r}: the last step ({last}) comes "
                          f"before the first ({first}). {accepted}")
    return (first, last)


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    strategy: Literal["auto", "default", "one_device", "mirrored", "multi_worker", "tpu"] = field(
        "auto", "tf.distribute strategy; `auto` picks TPU > multi-worker > mirrored > default."
    )
    cpu_replicas: int = field(
        1, "Split the CPU into N logical devices (N Mirrored replicas without GPUs).", min=1
    )
    all_reduce: Literal["auto", "nccl", "ring"] = field(
        "auto", "Cross-device all-reduce for mirrored/multi_worker."
    )
    tpu: str = field("", "TPU name or grpc:// address; empty reads TPU_NAME.")
    seed: int = field(42, "Seed for weights, dropout and data shuffling (0 to 2**32 - 1).",
                      min=0, max=2**32 - 1)
    deterministic: bool = field(
        True, "Enable TF op determinism (needed for bitwise-exact resume)."
    )
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = field(
        "float32", "Keras mixed-precision policy."
    )
    jit_compile: bool | Literal["auto"] = field(
        "auto",
        "Compile each replica's loss and gradients with XLA. auto: on CPU for the tasks where "
        "it measured faster; off on GPU and TPU. true|false|auto.",
    )
    gpu_memory_growth: bool = field(True, "Allocate GPU memory on demand.")
    log_sync: Literal["direct", "local_then_sync"] = field(
        "direct", "TensorBoard events: write directly, or locally then upload periodically."
    )
    log_sync_every_secs: int = field(60, "Upload interval for log_sync=local_then_sync.", min=1)
    preemption_grace_secs: int = field(
        25, "After SIGTERM/SIGINT: seconds to finish the current step and save before exiting "
        "(keep it below the job's termination grace period).", min=1
    )
    lease_timeout_secs: int = field(
        300, "A run's writer lease not refreshed for this long is taken over by a new trainer "
        "(a dead holder on the same host is taken over at once).", min=10
    )
    cluster_wait_secs: int = field(
        900, "Multi-worker: how long to wait for all workers to join before exiting 144.", min=1
    )
    profile_steps: tuple[int, ...] = field(
        (), "Steps A,B (1-based, inclusive) to trace with the TensorFlow profiler on the chief, "
        "into the train/ TensorBoard logs (Profile tab); empty: off. Keep the window short.",
        parse=_step_window,
    )


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """The whole config. `data` and `model` types depend on the task."""

    task: TaskSection
    data: Any
    model: Any
    train: TrainConfig
    runtime: RuntimeConfig

    def to_dict(self) -> dict:
        return to_dict(self)

    def to_yaml(self, comments: bool = False) -> str:
        if comments:
            return _commented_yaml(self)
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ----------------------------------------------------------------------------
# Dict <-> dataclass with strict types.
# ----------------------------------------------------------------------------


def from_dict(d: Mapping, data_cls: type, model_cls: type) -> ExperimentConfig:
    types_by_section = {
        "task": TaskSection,
        "data": data_cls,
        "model": model_cls,
        "train": TrainConfig,
        "runtime": RuntimeConfig,
    }
    kwargs = {}
    for section, cls in types_by_section.items():
        kwargs[section] = _build(cls, d.get(section, {}), section)
    cfg = ExperimentConfig(**kwargs)
    _cross_checks(cfg)
    return cfg


def _build(cls: type, d: Any, path: str):
    if not isinstance(d, Mapping):
        raise ConfigError(f"config key {path!r} must be a mapping, got {d!r}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key {path + '.' + unknown[0]!r}. "
            f"Valid keys at this level: {', '.join(fields)}."
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        key_path = f"{path}.{name}"
        if name in d:
            raw = d[name]
            if "parse" in f.metadata:
                raw = f.metadata["parse"](raw, key_path)
            value = _coerce(raw, hints[name], key_path)
            lo = f.metadata.get("min")
            if lo is not None and value is not None and value < lo:
                raise ConfigError(f"config key {key_path!r} must be >= {lo}, got {value!r}.")
            hi = f.metadata.get("max")
            if hi is not None and value is not None and value > hi:
                raise ConfigError(f"config key {key_path!r} must be <= {hi}, got {value!r}.")
            kwargs[name] = value
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(path)
    return obj


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + "|".join(str(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(value, tp, path: str):
    origin = typing.get_origin(tp)

    def fail():
        raise ConfigError(
            f"config key {path!r} expects {_type_name(tp)}, got {value!r} "
            f"({type(value).__name__})."
        )

    if origin is Literal:
        if value not in typing.get_args(tp) or isinstance(value, bool):
            fail()
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        if float in args and isinstance(value, float) and not math.isfinite(value):
            return _coerce(value, float, path)  # raises the finite-number error
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError:
                pass
        fail()
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            fail()
        (inner,) = typing.get_args(tp)[:1]
        return tuple(_coerce(v, inner, f"{path}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            fail()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail()
        return value
    if tp is float:
        # PyYAML follows YAML 1.1, which reads `1e-3` (no dot) as a string.
        if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail()
        if not math.isfinite(value):
            raise ConfigError(
                f"config key {path!r} must be a finite number, got {value!r} "
                "(NaN and infinities are refused: training would diverge silently).")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            fail()
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    raise TypeError(f"unsupported config type {tp!r} at {path}")


def constant_rate(lr_schedule: str, warmup_steps: int | None) -> bool:
    """Whether train.lr_schedule/warmup_steps give a constant learning rate, which the
    optimizer keeps as a variable (saved in checkpoints), rather than a schedule of the
    step (not saved)."""
    return lr_schedule == "constant" and not warmup_steps


def _cross_checks(cfg: ExperimentConfig) -> None:
    t = cfg.train
    if t.warmup_steps >= t.steps and t.warmup_steps > 0:
        raise ConfigError(
            f"train.warmup_steps ({t.warmup_steps}) must be smaller than train.steps ({t.steps})."
        )
    window = cfg.runtime.profile_steps
    if window and window[1] > t.steps:
        raise ConfigError(
            f"config key 'runtime.profile_steps' got {window[0]},{window[1]}: its last step "
            f"{window[1]} is past train.steps ({t.steps}). Accepted: two steps A,B with "
            "1 <= A <= B <= train.steps, or empty/none to profile nothing.")
    for key in ("clipnorm", "clipvalue"):
        if getattr(t, key) == 0:
            raise ConfigError(
                f"train.{key}=0 would clip every gradient to zero, so nothing would train. "
                f"Give a positive threshold, or leave train.{key} unset (null) not to clip.")
    if t.weight_decay and t.optimizer != "adamw":
        raise ConfigError(
            f"train.weight_decay={t.weight_decay} needs train.optimizer=adamw, "
            f"got {t.optimizer!r}."
        )


def to_dict(obj) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def resume_ok(cfg: ExperimentConfig, dotted: str) -> bool:
    """Whether the field at `section.key` is marked as changeable on resume."""
    section, _, key = dotted.partition(".")
    obj = getattr(cfg, section, None)
    if obj is None or not dataclasses.is_dataclass(obj) or "." in key:
        return False
    fields = {f.name: f for f in dataclasses.fields(obj)}
    return key in fields and fields[key].metadata.get("resume_ok", False)


def new_key_at_default(cfg: ExperimentConfig, old: Mapping, dotted: str) -> bool:
    """Whether `section.key` is absent from an older run's config dict `old` (the field
    was added since that run was written) and `cfg` holds the field's default there,
    which by the schema's rule reproduces what older versions did."""
    section, _, key = dotted.partition(".")
    if "." in key or key in (old.get(section) or {}):
        return False
    obj = getattr(cfg, section, None)
    if obj is None or not dataclasses.is_dataclass(obj):
        return False
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if key not in fields:
        return False
    f = fields[key]
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        return False
    return getattr(obj, key) == default


def diff(old: Mapping, new: Mapping, prefix: str = "") -> list[str]:
    """Key paths whose values differ between two config dicts."""
    keys = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            keys += diff(a, b, f"{prefix}{k}.")
        elif a != b:
            keys.append(f"{prefix}{k}")
    return keys


def _commented_yaml(cfg: ExperimentConfig) -> str:
    lines = [f"# seqtrain config for task {cfg.task.name!r}.",
             "# Every key is optional; unknown keys are errors.", ""]
    for section in dataclasses.fields(cfg):
        value = getattr(cfg, section.name)
        lines.append(f"{section.name}:")
        for f in dataclasses.fields(value):
            dumped = yaml.safe_dump(to_dict(getattr(value, f.name)), default_flow_style=True)
            dumped = dumped.strip().removesuffix("...").strip()
            help_text = f.metadata.get("help", "")
            lines.append(f"  {f.name}: {dumped}" + (f"  # {help_text}" if help_text else ""))
        lines.append("")
    return "\n".join(lines)
