"""Task registry: maps a task name to its Task class.

Each module under `trainer/tasks/` registers itself with `@register`. Adding
a task means adding one file and one import line in `trainer/tasks/__init__.py`.
"""

from __future__ import annotations

from trainer.errors import ConfigError

_TASKS: dict[str, type] = {}


def register(name: str):
    """Class decorator: `@register("text_classification")`."""

    def wrap(cls):
        if name in _TASKS:
            raise ValueError(f"task {name!r} is registered twice")
        cls.name = name
        _TASKS[name] = cls
        return cls

    return wrap


def get(name: str) -> type:
    """The Task class registered under `name`.

    Raises:
      ConfigError: no such task; the message lists the registered names.
    """
    _import_tasks()
    if name not in _TASKS:
        raise ConfigError(
            f"unknown task {name!r}. Registered tasks: {', '.join(sorted(_TASKS))}."
        )
    return _TASKS[name]


def names() -> list[str]:
    _import_tasks()
    return sorted(_TASKS)


def _import_tasks() -> None:
    import trainer.tasks  # noqa: F401  (modules register on import)
