"""Bad input: a clear one-paragraph message, exit code 2, no traceback, untouched model dir."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from conftest import TINY
from helpers import assert_user_error, run_cli_process, tree_hash
from trainer import cli


def _fails(model_dir, *args, env=None, expect=(), subprocess=False):
    """Runs `train` expecting a user error.

    Errors raised before a strategy exists run in-process through click's
    runner (fast); those that need their own TF runtime (logical devices,
    TF_CONFIG, TPU) run in a fresh process.
    """
    before = tree_hash(model_dir)
    argv = ["train", "--model-dir", str(model_dir), *args]
    if subprocess:
        proc = run_cli_process(*argv, env=env, check=False)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    else:
        result = CliRunner().invoke(cli.main, argv, env=env)
        code, out, err = result.exit_code, result.stdout, result.stderr
        assert result.exc_info is None or result.exc_info[0] is SystemExit, result.exc_info
    message = assert_user_error(code, out, err, expect)
    assert tree_hash(model_dir) == before, "the model dir was modified"
    return message


def _csv(path, rows):
    path.write_text("\n".join(rows) + ("\n" if rows else ""))
    return str(path)


def test_malformed_yaml(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("train:\n  steps: [1, 2\n")
    _fails(tmp_path / "run", "--config", str(cfg), expect=("not valid YAML", "line"))


def test_unknown_key_lists_valid_keys(tmp_path):
    msg = _fails(tmp_path / "run", "--set", "train.stepz=3", expect=("'train.stepz'",))
    assert "Valid keys at this level:" in msg and "steps" in msg and "batch_size" in msg


def test_unknown_section(tmp_path):
    _fails(tmp_path / "run", "--set", "trian.steps=3", expect=("'trian'", "runtime"))


def test_wrong_type_names_key_value_and_type(tmp_path):
    _fails(tmp_path / "run", "--set", "train.steps=abc", expect=("'train.steps'", "'abc'", "int"))


def test_bad_choice(tmp_path):
    _fails(tmp_path / "run", "--set", "model.cell=transformer",
           expect=("'model.cell'", "lstm|gru|simple_rnn"))


def test_batch_that_does_not_divide_across_replicas(tmp_path):
    _fails(tmp_path / "run", *TINY, "--set", "train.batch_size=7", "--set", "runtime.cpu_replicas=2",
           expect=("train.batch_size=7", "2 replicas", "train.batch_size=6"), subprocess=True)


def test_missing_data_file(tmp_path):
    _fails(tmp_path / "run", "--set", "data.source=file",
           "--set", f"data.train_path={tmp_path / 'nope.csv'}", expect=("does not exist",))


def test_empty_data_file(tmp_path):
    path = _csv(tmp_path / "empty.csv", [])
    _fails(tmp_path / "run", "--set", "data.source=file", "--set", f"data.train_path={path}",
           expect=("is empty",))


def test_missing_label_column(tmp_path):
    path = _csv(tmp_path / "d.csv", ["text,category", "good,pos", "bad,neg"])
    _fails(tmp_path / "run", "--set", "data.source=file", "--set", f"data.train_path={path}",
           expect=("data.label_column='label' is not a column", "its columns are: text, category"))


def test_single_class_dataset(tmp_path):
    path = _csv(tmp_path / "d.csv", ["text,label"] + [f"text {i},pos" for i in range(20)])
    _fails(tmp_path / "run", "--set", "data.source=file", "--set", f"data.train_path={path}",
           expect=("single class", "'pos'"))


def test_malformed_tf_config(tmp_path):
    _fails(tmp_path / "run", *TINY, env={"TF_CONFIG": '{"cluster": {"worker": ["localhost:1"]'},
           expect=("TF_CONFIG", "not valid JSON"), subprocess=True)


def test_model_dir_that_is_not_a_seqtrain_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("my notes")
    _fails(run, *TINY, expect=("not a seqtrain run",))


def test_unreachable_tpu(tmp_path):
    _fails(tmp_path / "run", *TINY, "--set", "runtime.strategy=tpu",
           expect=("runtime.strategy=tpu", "TPU"), subprocess=True)


def test_nccl_without_gpus(tmp_path):
    _fails(tmp_path / "run", *TINY, "--set", "runtime.cpu_replicas=2",
           "--set", "runtime.all_reduce=nccl", expect=("nccl needs GPUs",), subprocess=True)


def test_unknown_task_lists_tasks(tmp_path):
    _fails(tmp_path / "run", "--task", "sentiment", expect=("unknown task 'sentiment'",
                                                            "text_classification"))


def _reviews(path, words):
    rows = ["text,label"] + [f"the {w} was good,pos" for w in words] + [
        f"the {w} was bad,neg" for w in words]
    return _csv(path, rows)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    data = _reviews(root / "data.csv", ["food", "room", "staff", "view", "bed", "menu"] * 4)
    run = root / "run"
    args = ["--set", "data.source=file", "--set", f"data.train_path={data}", *TINY]
    run_cli_process("train", "--model-dir", str(run), *args, "--set", "train.steps=2",
                    "--set", "train.eval_every=2")
    return run, root / "data.csv", args


def test_resume_with_changed_model_config(tiny_run):
    run, _, args = tiny_run
    msg = _fails(run, *args, "--set", "train.steps=4", "--set", "model.units=16",
                 "--set", "model.cell=gru")
    assert "model.units: 8 -> 16" in msg and "model.cell: 'lstm' -> 'gru'" in msg


def test_resume_with_changed_vocabulary(tiny_run):
    run, data, args = tiny_run
    original = data.read_text()
    try:
        _reviews(data, ["pool", "wifi", "soup", "desk", "lamp", "door"] * 4)
        _fails(run, *args, "--set", "train.steps=4", expect=("data changed", "vocab.txt"))
    finally:
        data.write_text(original)
