"""docs/data.md: every file it shows is written, every command it shows runs, verbatim.

Commands run as users type them: `seqtrain ...` in a fresh process from a temporary
working directory holding the doc's files, relative paths. Only `--set` overrides of
the run's length and size (`train.*`, `model.units`, `model.layers`) and
`runtime.jit_compile=false` are appended to `train` commands to keep the runs short:
what the doc shows (reading the files, the commands' outputs) does not depend on them.
"""

from __future__ import annotations

import json
import os
import re
import shlex

import pytest
from tensorboard.backend.event_processing import event_accumulator

from conftest import REPO, run_cli_process

DOC = os.path.join(REPO, "docs", "data.md")
SHORT = ["--set", "train.steps=4", "--set", "train.batch_size=4", "--set",
         "train.steps_per_loop=2", "--set", "train.eval_every=4", "--set",
         "train.checkpoint_every=4", "--set", "train.log_every=2", "--set", "train.eval_batches=1",
         # Tiny models, no XLA compile (jit_compile=auto turns it on for some tasks on CPU).
         "--set", "model.units=8", "--set", "model.layers=1", "--set", "runtime.jit_compile=false"]


def _doc():
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    files = dict(re.findall(r"^```\w+ file=(\S+)\n(.*?)^```", text, flags=re.M | re.S))
    commands = [line[2:] for block in re.findall(r"^```console\n(.*?)^```", text, re.M | re.S)
                for line in block.splitlines() if line.startswith("$ ")]
    return files, commands


def test_doc_shows_files_and_commands_for_every_task():
    files, commands = _doc()
    assert {"reviews.tsv", "tickets.csv", "airline.csv", "pairs.tsv", "sonnet18.txt"} <= set(files)
    tasks = {shlex.split(c)[shlex.split(c).index("--task") + 1] for c in commands if "--task" in c}
    assert tasks == {"text_classification", "forecasting", "translation", "text_generation"}
    assert all(c.startswith("seqtrain ") for c in commands)


def test_every_command_in_the_doc_runs(tmp_path):
    files, commands = _doc()
    for name, content in files.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
    outputs = []
    for command in commands:
        argv = shlex.split(command)[1:]
        if argv[0] == "train":
            argv += SHORT
        proc = run_cli_process(*argv, cwd=str(tmp_path), check=False)
        assert proc.returncode == 0, (command, proc.stdout[-3000:], proc.stderr[-3000:])
        assert "Traceback" not in proc.stderr, proc.stderr
        outputs.append((argv, proc.stdout))
    by_dir = {}
    for argv, out in outputs:
        model_dir = argv[argv.index("--model-dir") + 1]
        by_dir.setdefault(model_dir, []).append((argv[0], out))
    # each train says what it read (the file, the format it assumed, the rows)
    for name, model_dir in (("reviews.tsv", "runs/reviews"), ("tickets.csv", "runs/tickets"),
                            ("airline.csv", "runs/airline"), ("pairs.tsv", "runs/fr"),
                            ("sonnet18.txt", "runs/sonnet")):
        train_out = dict(by_dir[model_dir])["train"]
        assert f"seqtrain: data: read {name}" in train_out, train_out
    reviews = dict(by_dir["runs/reviews"])["train"]
    assert "16 rows as tsv" in reviews and "without a header" in reviews
    assert "only 23 training windows for data.window=6" in dict(by_dir["runs/airline"])["train"]
    predicted = dict(by_dir["runs/reviews"])["predict"].strip().splitlines()
    assert [line.split("\t")[2] for line in predicted] == ['a "great" film', "dull and slow"]
    assert {line.split("\t")[0] for line in predicted} <= {"pos", "neg"}
    forecast = dict(by_dir["runs/airline"])["predict"].strip().splitlines()
    assert len(forecast) == 1 and float(forecast[0]) == pytest.approx(float(forecast[0]))
    translated = dict(by_dir["runs/fr"])["translate"].strip().splitlines()
    assert [line.split("\t")[0] for line in translated] == ["Hello!", "Thanks."]
    assert dict(by_dir["runs/sonnet"])["generate"].startswith("Shall I")
    # what was read is kept with the run: runtime.json and TensorBoard's Text tab
    runtime = json.loads((tmp_path / "runs/airline/runtime.json").read_text())
    assert runtime["data"]["files"][0]["rows"] == 36, runtime["data"]
    acc = event_accumulator.EventAccumulator(str(tmp_path / "runs/airline/train"))
    acc.Reload()
    shown = acc.Tensors("data")[0].tensor_proto.string_val[0].decode()
    assert "read airline.csv" in shown and "only 23 training windows" in shown, shown
    assert '"rows": 36' in shown, shown  # the whole report, not only the printed lines
