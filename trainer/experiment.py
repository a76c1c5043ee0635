"""Builds an experiment's config from its layers, through the task registry.

A config is built in three layers, each overriding the one before:

    task default (registered dataclasses) <- YAML file <- `--set key.path=value`

and, on resume, the run's own config.yaml under all three. The result is
validated against the schema in `trainer.config` (unknown keys and wrong types
are errors that name the key), frozen, and written to `MODEL_DIR/config.yaml`
by the trainer.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Sequence

import yaml

from trainer import config, registry, storage
from trainer.errors import ConfigError


def load(
    task: str | None = None,
    config_file: str | None = None,
    overrides: Sequence[str] = (),
    base_file: str | None = None,
) -> config.ExperimentConfig:
    """Builds, validates and freezes an experiment config.

    Args:
      task: task name; wins over `task.name` in the file and overrides.
      config_file: optional YAML path (local or gs://).
      overrides: `key.path=value` strings, values parsed as YAML.
      base_file: a run's own config.yaml when resuming it: the layer under
        `config_file` and `overrides`, so a resume needs no flags again.

    Raises:
      ConfigError: malformed YAML, unknown keys, wrong types or values.
    """
    layers: list[dict] = []
    if base_file:
        layers.append(read_yaml(base_file))
    if config_file:
        layers.append(read_yaml(config_file))
    layers.append(parse_overrides(overrides))
    name = task or _task_name_from(layers)
    ran = (layers[0].get("task") or {}) if base_file else {}
    ran = ran.get("name") if isinstance(ran, dict) else None
    if ran not in (None, name):
        raise ConfigError(
            f"{os.path.dirname(base_file) or '.'} holds a {ran} run; a "
            f"resume keeps its task, so task {name!r} cannot train there. Use a new --model-dir "
            f"for a {name} run.")
    spec = registry.spec(name)
    merged = config.to_dict(default_config(name))
    for layer in layers:
        _deep_merge(merged, layer, path="")
    merged.setdefault("task", {})["name"] = name
    return config.from_dict(merged, spec.data, spec.model)


def default_config(task: str) -> config.ExperimentConfig:
    """The registered default config of a task."""
    spec = registry.spec(task)
    return config.ExperimentConfig(
        task=config.TaskSection(name=task),
        data=spec.data(),
        model=spec.model(),
        train=dataclasses.replace(config.TrainConfig(), **spec.train_defaults),
        runtime=config.RuntimeConfig(),
    )


def read_yaml(path: str) -> dict:
    text = storage.read_input(
        path, f"config file {path!r}", error=ConfigError, text=True,
        missing="Check the --config path (`seqtrain config > my.yaml` writes a starting file).",
        directory="pass a YAML file to --config.")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(
            f"config file {path!r} is not valid YAML{where}: {problem}. "
            "Fix the syntax (`seqtrain config` prints a valid starting file)."
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path!r} must be a YAML mapping with sections "
            f"{', '.join(_SECTIONS)}; got a {type(data).__name__}."
        )
    return data


def parse_overrides(overrides: Sequence[str]) -> dict:
    """Turns `["train.steps=10", "model.units=[1,2]"]` into a nested dict."""
    out: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(
                f"--set {item!r} is not of the form key.path=value "
                "(for example --set train.steps=200)."
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw  # not valid YAML: keep the raw string, type check decides
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r} conflicts with another --set of {part!r}.")
        node[parts[-1]] = value
    return out


_SECTIONS = ("task", "data", "model", "train", "runtime")


def _task_name_from(layers: list[dict]) -> str:
    name = config.TaskSection().name
    for layer in layers:
        section = layer.get("task")
        if isinstance(section, dict) and "name" in section:
            name = section["name"]
    if not isinstance(name, str):
        raise ConfigError(f"task.name must be a string, got {name!r}.")
    return name


def _deep_merge(base: dict, layer: Mapping, path: str) -> None:
    for key, value in layer.items():
        key_path = f"{path}{key}"
        if key not in base:
            valid = ", ".join(base) if base else "(none)"
            raise ConfigError(
                f"unknown config key {key_path!r}. Valid keys at this level: {valid}."
            )
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"config key {key_path!r} is a section; expected a mapping, got {value!r}."
                )
            _deep_merge(base[key], value, key_path + ".")
        else:
            base[key] = value
