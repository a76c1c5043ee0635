"""A task from outside seqtrain gets its own CLI command without touching trainer/cli.py.

The `echo` task (tests/tasks/tasks_extra/) is registered the way a user registers one, through
SEQTRAIN_TASK_MODULES (docs/tasks.md). It is trained, exported and served through
`seqtrain` in subprocesses from a temporary working directory with a relative --model-dir.
Also: the one export metadata file, and how older exports' files are still read.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO, seqtrain, user_error

from trainer.errors import UserError
from trainer.serving import metadata

PLUGIN = {"PYTHONPATH": os.pathsep.join([REPO, os.path.join(REPO, "tests", "tasks")]),
          "SEQTRAIN_TASK_MODULES": "tasks_extra.echo_config"}
TRAIN = ["train", "--task", "echo", "--model-dir", "run", "--set", "train.steps=120",
         "--set", "train.steps_per_loop=20", "--set", "model.units=16", "--set", "model.cell=gru",
         "--set", "train.eval_every=60", "--set", "train.checkpoint_every=60",
         "--set", "train.log_every=60"]
SEQUENCES = ["0.8,0,0,0,0", "-0.8,0.1,0.1,0.1,0.1"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("plugin")
    seqtrain(*TRAIN, cwd=cwd, env=PLUGIN)
    return cwd


def test_a_registered_user_task_trains_exports_and_serves_its_command(workdir):
    meta = json.loads((workdir / "run/export/assets.extra/seqtrain.json").read_text())
    assert meta == {"format": 1, "task": "echo", "commands": ["echo"], "length": 5}
    assert json.loads((workdir / "run/metrics.json").read_text())["metrics"]["mse"] < 0.1

    (workdir / "more.txt").write_text("0.2,0,0,0,0\n")
    out = seqtrain("echo", "--model-dir", "run", "--digits", "4", "--", *SEQUENCES, "@more.txt",
                   cwd=workdir, env=PLUGIN).stdout.splitlines()
    assert [line.split("\t")[0] for line in out] == SEQUENCES + ["0.2,0,0,0,0"]
    recalled = [float(line.split("\t")[1]) for line in out]
    assert all(len(line.split("\t")[1].split(".")[1]) == 4 for line in out)
    # It learned to recall the first value, and prints exactly what the export computes.
    assert abs(recalled[0] - 0.8) < 0.25 and abs(recalled[1] + 0.8) < 0.25
    loaded = tf.saved_model.load(str(workdir / "run/export"))
    direct = loaded.serve(tf.constant([[0.8, 0, 0, 0, 0], [-0.8, .1, .1, .1, .1],
                                       [0.2, 0, 0, 0, 0]], tf.float32)).numpy()
    np.testing.assert_allclose(recalled, np.round(direct, 4), atol=1e-4)
    absolute = seqtrain("echo", "--model-dir", str(workdir / "run"), "--digits", "4", "--",
                        *SEQUENCES, "@more.txt", cwd=workdir, env=PLUGIN).stdout.splitlines()
    assert absolute == out


def test_the_user_command_and_the_run_refuse_what_they_do_not_serve(workdir):
    user_error("echo", "--model-dir", "run", "1,2", model_dir="run", cwd=workdir, env=PLUGIN,
               expect=("input 1", "'1,2'", "5 comma-separated numbers"))
    user_error("generate", "--model-dir", "run", model_dir="run", cwd=workdir, env=PLUGIN,
               expect=("'echo' run", "seqtrain echo --model-dir run"))
    # Without the variable, the run's task is unknown and the error says how to register it.
    user_error("predict", "--model-dir", "run", "x", model_dir="run", cwd=workdir,
               expect=("task 'echo'", "SEQTRAIN_TASK_MODULES"))


def test_a_bad_task_module_is_one_paragraph_naming_the_variable(tmp_path):
    for module, expect in (("no_such.module", "cannot be imported"),
                           ("trainer.cli", "defines no `SPEC")):
        env = {**PLUGIN, "SEQTRAIN_TASK_MODULES": module}
        for args in (["tasks"], ["--help"]):
            user_error(*args, cwd=tmp_path, env=env,
                       expect=("SEQTRAIN_TASK_MODULES", repr(module), expect))


def _installed(site, name, entry_points):
    """A distribution as pip installs it: a .dist-info directory on sys.path."""
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[seqtrain.tasks]\n" + entry_points)
    return os.pathsep.join([str(site), PLUGIN["PYTHONPATH"]])


def test_an_installed_distribution_registers_its_task_through_the_entry_point_group(tmp_path):
    path = _installed(tmp_path / "site", "echo_plugin", "echo = tasks_extra.echo_config\n")
    listed = seqtrain("tasks", cwd=tmp_path, env={"PYTHONPATH": path})
    assert "echo" in [line.split()[0] for line in listed.stdout.splitlines()], listed.stdout
    helped = seqtrain("echo", "--help", cwd=tmp_path, env={"PYTHONPATH": path})
    assert "--digits" in helped.stdout
    # Named by the variable too: loaded once, not "declared twice".
    both = seqtrain("tasks", cwd=tmp_path, env={"PYTHONPATH": path,
                                                 "SEQTRAIN_TASK_MODULES": "tasks_extra.echo_config"})
    assert both.stdout == listed.stdout

    broken = _installed(tmp_path / "broken", "bad_plugin", "gone = no_such.config\n")
    user_error("tasks", cwd=tmp_path, env={"PYTHONPATH": broken},
               expect=("seqtrain.tasks entry point 'gone' of bad_plugin", "'no_such.config'",
                       "cannot be imported", "uninstall"))


def test_export_metadata_reads_the_one_file_and_older_exports(tmp_path):
    metadata.write(str(tmp_path / "new"), "forecasting", ["predict"], {"window": 4})
    assert metadata.read(str(tmp_path / "new")) == {
        "format": 1, "task": "forecasting", "commands": ["predict"], "window": 4}
    with pytest.raises(ValueError, match="task"):
        metadata.write(str(tmp_path / "bad"), "forecasting", ["predict"], {"task": "x"})
    # Exports written before seqtrain.json: text_generation's and forecasting's files.
    (tmp_path / "gen").mkdir()
    (tmp_path / "gen/seqtrain_export.json").write_text('{"task": "text_generation", "chars": "ab"}')
    assert metadata.read(str(tmp_path / "gen"))["chars"] == "ab"
    (tmp_path / "fc/assets.extra").mkdir(parents=True)
    (tmp_path / "fc/assets.extra/normalization.json").write_text('{"window": 3, "columns": ["y"]}')
    assert metadata.read(str(tmp_path / "fc"))["columns"] == ["y"]
    (tmp_path / "none").mkdir()
    with pytest.raises(UserError, match="assets.extra/seqtrain.json"):
        metadata.read(str(tmp_path / "none"))
    (tmp_path / "future/assets.extra").mkdir(parents=True)
    (tmp_path / "future/assets.extra/seqtrain.json").write_text('{"format": 2, "task": "x"}')
    with pytest.raises(UserError, match="format 2"):
        metadata.read(str(tmp_path / "future"))
