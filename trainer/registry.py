"""Task registry: task name -> its spec (TF-free) and its Task class (imported on demand).

A task is two modules and one line:

* `trainer/tasks/configs/<name>.py`: its `data`/`model` config dataclasses and a
  `SPEC = TaskSpec(...)` (name, description, train defaults). No TensorFlow, so
  `seqtrain tasks`, `config` and `job render` answer without importing it.
* `trainer/tasks/<name>.py`: the Task class, bound to the spec with `@register(name)`.
* its config module's name in `trainer/tasks/__init__.py` (`SPECS`).

`spec(name)` reads only config modules; `get(name)` imports the Task module.
"""

from __future__ import annotations

import dataclasses
import importlib

from trainer.errors import ConfigError

_SPECS: dict[str, "TaskSpec"] = {}
_TASKS: dict[str, type] = {}


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
            s = importlib.import_module(module).SPEC
            if s.name in _SPECS:
                raise ValueError(f"task {s.name!r} is declared twice ({module})")
            _SPECS[s.name] = s
    return _SPECS
