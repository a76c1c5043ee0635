"""Config layering, strict validation, freezing and the `config` command."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from trainer import config as config_lib, experiment
from trainer.errors import ConfigError


def test_layers_default_then_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  steps: 50\n  batch_size: 16\nmodel:\n  units: 12\n")
    cfg = experiment.load(None, str(path), ["train.steps=70", "model.layers=2"])
    assert cfg.train.steps == 70  # --set beats the file
    assert cfg.train.batch_size == 16  # the file beats the default
    assert cfg.model.units == 12 and cfg.model.layers == 2
    assert cfg.train.learning_rate == 3e-3  # text_classification's registered default
    assert cfg.task.name == "text_classification"


def test_overrides_are_parsed_as_yaml():
    cfg = experiment.load(None, None, ["train.clipnorm=1", "model.bidirectional=false",
                                       "runtime.tpu=my-tpu", "train.clipvalue=null"])
    assert cfg.train.clipnorm == 1.0 and isinstance(cfg.train.clipnorm, float)
    assert cfg.model.bidirectional is False
    assert cfg.runtime.tpu == "my-tpu" and cfg.train.clipvalue is None


def test_exponent_floats_without_a_dot(tmp_path):
    # YAML 1.1 (PyYAML) reads `1e-3` as a string; float keys accept it anyway.
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rate: 1e-3\n")
    cfg = experiment.load(None, str(path), ["train.clipnorm=5E+0"])
    assert cfg.train.learning_rate == 1e-3 and cfg.train.clipnorm == 5.0
    with pytest.raises(ConfigError, match="'train.learning_rate' expects float"):
        experiment.load(None, None, ["train.learning_rate=fast"])


@pytest.mark.parametrize("task,has,lacks", [
    ("forecasting", "window", "vocab_size"),
    ("translation", "max_source_length", "window"),
    ("text_generation", "seq_len", "vocab_size"),
])
def test_task_flag_picks_the_task_sections(task, has, lacks):
    """A task other than the default: its own data and model sections, not the default's."""
    cfg = experiment.load(task, None, [])
    assert cfg.task.name == task
    assert hasattr(cfg.data, has) and not hasattr(cfg.data, lacks)
    assert cfg.to_dict()["data"] == experiment.load(task, None, []).to_dict()["data"]
    assert cfg.to_dict()["data"] != experiment.load(None, None, []).to_dict()["data"]


def test_frozen():
    cfg = experiment.load(None, None, [])
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.steps = 3


@pytest.mark.parametrize("override,fragments", [
    ("train.stepz=1", ["'train.stepz'", "Valid keys at this level: steps, batch_size"]),
    ("model.units=eight", ["'model.units'", "int", "'eight'"]),
    ("model.units=1e3", ["'model.units'", "int", "'1e3'"]),
    ("model.units=0", ["'model.units'", ">= 1"]),
    ("train.steps=true", ["'train.steps'", "int"]),
    ("runtime.strategy=horovod", ["'runtime.strategy'", "auto|default|one_device"]),
    ("model.dropout=1.5", ["model.dropout", "[0, 1)"]),
    ("train=3", ["'train'", "section"]),
    ("novalue", ["key.path=value"]),
    ("train.weight_decay=0.1", ["train.optimizer=adamw"]),
])
def test_bad_values_name_the_key(override, fragments):
    with pytest.raises(ConfigError) as e:
        experiment.load(None, None, [override])
    for fragment in fragments:
        assert fragment in str(e.value)


def test_non_mapping_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        experiment.load(None, str(path), [])


def test_default_config_yaml_round_trips(run_cli, tmp_path):
    text = run_cli("config").stdout
    assert "# Total optimizer steps" in text
    path = tmp_path / "start.yaml"
    path.write_text(text)
    assert experiment.load(None, str(path), []) == experiment.default_config("text_classification")
    assert yaml.safe_load(experiment.default_config("text_classification").to_yaml())["train"]["steps"] == 600


def test_diff_lists_changed_paths():
    a = {"model": {"units": 8, "cell": "lstm"}, "train": {"steps": 1}}
    b = {"model": {"units": 16, "cell": "lstm"}, "train": {"steps": 2}}
    assert config_lib.diff(a, b) == ["model.units", "train.steps"]


def test_tasks_command_lists_every_task(run_cli):
    names = [line.split()[0] for line in run_cli("tasks").stdout.splitlines()]
    assert "text_classification" in names and names == sorted(names)
