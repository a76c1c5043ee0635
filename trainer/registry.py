"""Task registry: task name -> its spec (TF-free) and its Task class (imported on demand).

A task is two modules and one line:

* a config module (seqtrain's own: `trainer/tasks/configs/<name>.py`): its
  `data`/`model` config dataclasses and a `SPEC = TaskSpec(...)` (name,
  description, train defaults, inference commands). No TensorFlow, so
  `seqtrain tasks`, `config`, `--help` and `job render` answer without importing it.
* a Task module: the Task class, bound to the spec with `@register(name)`.
* the config module's name in `trainer/tasks/__init__.py` (`SPECS`), or, for a
  task outside seqtrain, in an installed distribution's `seqtrain.tasks` entry-point
  group or the environment variable `SEQTRAIN_TASK_MODULES` (comma-separated module
  names; see docs/tasks.md).

`spec(name)` reads only config modules; `get(name)` imports the Task module.
"""

from __future__ import annotations

import dataclasses
import importlib
import os

from trainer.errors import ConfigError

# Config modules of tasks defined outside seqtrain, comma-separated.
MODULES_ENV = "SEQTRAIN_TASK_MODULES"
# The entry-point group through which an installed distribution declares its tasks'
# config modules: `[project.entry-points."seqtrain.tasks"] echo = "pkg.echo_config"`.
ENTRY_POINT_GROUP = "seqtrain.tasks"

_SPECS: dict[str, "TaskSpec"] = {}
_TASKS: dict[str, type] = {}


@dataclasses.dataclass(frozen=True)
class Command:
    """A `seqtrain NAME --model-dir DIR ...` command that serves a task's export.

    Declared in the task's config module, so `seqtrain --help` lists it without
    importing TensorFlow; the handler's module is imported when the command runs.
    Tasks may share a command (`predict`) if they declare the same params.
    """

    name: str
    help: str  # the command's --help text (first line: the summary)
    handler: str  # "module:function", called as function(model_dir, **params) -> iterable of lines
    params: tuple = ()  # click.Parameter objects after --model-dir

    def load_handler(self):
        module, _, function = self.handler.partition(":")
        return getattr(importlib.import_module(module), function)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What the framework knows about a task without importing TensorFlow."""

    name: str
    description: str
    data: type  # the `data` section dataclass
    model: type  # the `model` section dataclass
    module: str  # the module defining the Task class, imported by `get`
    train_defaults: dict = dataclasses.field(default_factory=dict)
    # The eval metric a run is judged by (`runs list` shows it first, tuning's default)
    # and whether higher ("max") or lower ("min") is better.
    headline_metric: str = ""
    headline_goal: str = "max"
    # The commands that serve this task's export (`seqtrain predict`, `generate`, ...).
    commands: tuple[Command, ...] = ()
    # `seqtrain prepare` for this task: "module:function", called as
    # function(data_config, out_dir, shard_mb=, log=, progress_mb=, seed=runtime.seed)
    # -> summary dict (see trainer/data/prepare_cmd.py; text_classification's eval split
    # is drawn with the seed). `out_dir` may end in "{key}": the function replaces it
    # with `prepared.keyed(out_dir, key)` once it knows the content key (the summary's
    # "out" is the result). Such a task's data config has `prepared_dir` and
    # `prepare: ... = config.prepare_mode_field()`, and `train` prepares it implicitly
    # (trainer/data/auto_prepare.py). Empty: the task reads its source at every run.
    prepare: str = ""

    def load_prepare(self):
        module, _, function = self.prepare.partition(":")
        return getattr(importlib.import_module(module), function)


def spec(name: str) -> TaskSpec:
    """The spec registered under `name` (TensorFlow is not imported).

    Raises:
      ConfigError: no such task; the message lists the registered names.
    """
    specs = _load_specs()
    if name not in specs:
        raise ConfigError(
            f"unknown task {name!r}. Registered tasks: {', '.join(sorted(specs))}."
        )
    return specs[name]


def names() -> list[str]:
    return sorted(_load_specs())


def commands() -> dict[str, list[tuple[str, Command]]]:
    """Command name -> [(task name, its declaration)] over the registered tasks.

    Raises:
      ValueError: two tasks declare one command name with different params.
    """
    out: dict[str, list[tuple[str, Command]]] = {}
    for task in names():
        for cmd in spec(task).commands:
            out.setdefault(cmd.name, []).append((task, cmd))
    for name, decls in out.items():
        params = {t: [p.name for p in c.params] for t, c in decls}
        if len({tuple(p) for p in params.values()}) > 1:
            raise ValueError(f"tasks declare `seqtrain {name}` with different params: {params}")
    return out


def get(name: str) -> type:
    """The Task class registered under `name`; imports its module (and TensorFlow).

    Raises:
      ConfigError: no such task; the message lists the registered names.
    """
    s = spec(name)
    if name not in _TASKS:
        importlib.import_module(s.module)
    if name not in _TASKS:
        raise RuntimeError(f"{s.module} defines no Task class with @register({name!r})")
    return _TASKS[name]


def register(name: str):
    """Class decorator binding a Task class to its spec: `@register("forecasting")`.

    Sets the class attributes the loop reads from the spec (`name`, `description`,
    `DataConfig`, `ModelConfig`, `train_defaults`).
    """

    def wrap(cls):
        if name in _TASKS:
            raise ValueError(f"task {name!r} is registered twice")
        s = spec(name)
        cls.name, cls.description = name, s.description
        cls.DataConfig, cls.ModelConfig = s.data, s.model
        cls.train_defaults = dict(s.train_defaults)
        _TASKS[name] = cls
        return cls

    return wrap


def _load_specs() -> dict[str, TaskSpec]:
    if not _SPECS:
        from trainer.tasks import SPECS

        for module in SPECS:
            _add(importlib.import_module(module).SPEC, module)
        for module, origin in _extra_modules():
            _add(_import_spec_module(module, origin).SPEC, module)
    return _SPECS


def _add(s: TaskSpec, module: str) -> None:
    if s.name in _SPECS:
        raise ConfigError(f"task {s.name!r} is declared twice (again in {module}); give the "
                          "task in that module another name.")
    _SPECS[s.name] = s


def _extra_modules() -> list[tuple[str, str]]:
    """(config module, where it was named) of the tasks defined outside seqtrain: the
    installed distributions' entry points first, then the environment variable. A
    module named by both is loaded once."""
    from importlib import metadata

    found: dict[str, str] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist else "an installed distribution"
        found.setdefault(ep.value.strip(),
                         f"the {ENTRY_POINT_GROUP} entry point {ep.name!r} of {dist}")
    for m in os.environ.get(MODULES_ENV, "").split(","):
        if m.strip():
            found.setdefault(m.strip(), MODULES_ENV)
    return list(found.items())


def _import_spec_module(module: str, origin: str):
    fix = ("Fix or uninstall that distribution." if origin != MODULES_ENV else
           "It takes comma-separated module names importable from PYTHONPATH.")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(
            f"{origin} names {module!r}, which cannot be imported ({e}). {fix} Each names a "
            "task's config module, defining `SPEC = registry.TaskSpec(...)`.") from None
    if not isinstance(getattr(mod, "SPEC", None), TaskSpec):
        raise ConfigError(
            f"{origin} names {module!r}, which defines no `SPEC = registry.TaskSpec(...)`; "
            "name the task's config module there, not its Task module.")
    return mod
