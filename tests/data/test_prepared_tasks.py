"""`seqtrain prepare` for labelled lines and series (trainer/data/prepare_labelled.py,
prepare_series.py, labelled_prepared.py, series_prepared.py, table_stream.py).

The strongest check is the one tests/test_prepared.py makes for characters: a run
from the prepared directory trains on exactly the examples of a run from the source,
so the checkpoints are bitwise equal (Mirrored on 2 logical CPUs, each replica
reading its own slice). In-process checks compare every training example, the eval
split and the assets with the in-memory path on files chunking could get wrong.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY
from helpers import MIRRORED, assert_checkpoints_equal, ckpt, seqtrain, user_error
from trainer import experiment, registry
from trainer.data import prepare_labelled, prepare_series, prepared, tables, table_stream
from trainer.errors import DataError

WORDS = ["good", "Bad", "movie!", "naïve", "ÉTÉ", "été", "plot,", "it's", "a-b", "x_y", "(ok)",
         "Straße", "the", "The", "dull", "fun", "[UNK]", "x\u00a0y"]


def _labelled(path, rows=400, seed=0, fmt="csv"):
    rng = random.Random(seed)
    lines = ["text,label"] if fmt == "csv" else []
    for i in range(rows):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40)))
        label = rng.choice(["pos", "neg", "10", "2"])
        if fmt == "csv":
            lines.append('"' + text.replace('"', '""') + '",' + label if rng.random() < .5
                         else f'"{text}\n second line",{label}' if rng.random() < .1
                         else f'{text.replace(",", " ")},{label}')
            if i % 97 == 0:
                lines.append(",neg")  # empty text: skipped, counted
        else:
            lines.append(json.dumps({"label": label, "text": text, "id": i}))
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")


def _series(path, rows=700, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    order = rng.permutation(rows)  # rows out of time order: sorted by data.time_column
    day = np.datetime64("2024-01-01T00:00") + t.astype("timedelta64[h]")
    a = np.sin(t / 9.0) * 3 + rng.standard_normal(rows) * 0.1
    b = np.cos(t / 17.0) + 100
    lines = ["when,a,b,unused"] + [f"{day[i]},{float(a[i])!r},{float(b[i])!r},x" for i in order]
    path.write_text("\n".join(lines) + "\n")


def _task(name, overrides):
    task = registry.get(name)(experiment.load(name, None, overrides))
    task.prepare()
    return task


def assert_same_examples(name, overrides, prepared_dir):
    """Every training example, the eval split and the assets equal the in-memory path's."""
    a, b = _task(name, overrides), _task(name, [*overrides, f"data.prepared_dir={prepared_dir}"])
    assert a.assets() == b.assets()
    ea, eb = a.train_examples(), b.train_examples()
    assert ea.count == eb.count
    ids = tf.random.shuffle(tf.range(ea.count, dtype=tf.int64), seed=1)
    for x, y in zip(tf.nest.flatten(ea.gather(ids)), tf.nest.flatten(eb.gather(ids))):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x.numpy(), y.numpy())
    got = list(b.dataset("eval").as_numpy_iterator())
    want = list(a.dataset("eval").as_numpy_iterator())
    assert len(got) == len(want)
    for p, q in zip(want, got):
        for x, y in zip(p, q):
            assert x.dtype == y.dtype and np.array_equal(x, y)
    return a, b


# ---- text_classification -----------------------------------------------------------


def test_labelled_prepare_cli_and_train_bitwise_equal(tmp_path):
    _labelled(tmp_path / "reviews.csv")
    data = ["--set", "data.train_path=reviews.csv", "--set", "data.vocab_size=20",
            "--set", "data.sequence_length=12"]
    out = seqtrain("prepare", "--task", "text_classification", *data, "--shard-mb", "0.001",
                   "--out", "prep/reviews", cwd=tmp_path)
    assert "prepared text_classification into" in out.stdout
    assert "rows        : train 340, eval 60" in out.stdout, out.stdout
    m = json.loads((tmp_path / "prep" / "reviews" / "manifest.json").read_text())
    assert m["data_config"]["split_seed"] == 42 and m["stats"]["skipped"] == [{"empty text": 5}]
    # The run's data report shows how each source was read, skips included.
    assert m["sources"][0]["skipped"] == {"empty text": 5}
    assert m["sources"][0]["read"].endswith("; skipped 5 (empty text)"), m["sources"][0]
    assert len(m["splits"]["train.tokens"]["shards"]) > 3  # rows straddle shards
    again = seqtrain("prepare", "--task", "text_classification", *data, "--out",
                     "prep/reviews", cwd=tmp_path)
    assert again.stdout.startswith("reused:")

    args = ["train", "--task", "text_classification", *TINY, *MIRRORED, *data,
            "--set", "train.steps=4", "--set", "model.embedding_dim=8",
            "--set", "model.dense_units=8"]
    seqtrain(*args, "--model-dir", "direct", cwd=tmp_path)
    run = seqtrain(*args, "--set", "data.prepared_dir=prep/reviews", "--model-dir", "prep_run",
                   cwd=tmp_path)
    assert "read prepared dataset prep/reviews" in run.stdout, run.stdout
    assert_checkpoints_equal(ckpt(tmp_path / "direct", 4), ckpt(tmp_path / "prep_run", 4))
    metrics = [json.loads((tmp_path / r / "metrics.json").read_text())["metrics"]
               for r in ("direct", "prep_run")]
    assert metrics[0] == metrics[1]
    for asset in ("vocab.txt", "labels.txt"):
        assert ((tmp_path / "direct" / "assets" / asset).read_text()
                == (tmp_path / "prep_run" / "assets" / asset).read_text())


# How a run reads a prepared split: the arrays into memory and in-graph gathers (a
# split within prepared.IN_MEMORY_BYTES, as every file of these tests), or a pread
# per example (a larger one). Both must give the in-memory path's examples.
READS = {"arrays-in-memory": prepared.IN_MEMORY_BYTES, "pread-per-example": 0}


@pytest.mark.parametrize("read", READS)
@pytest.mark.parametrize("case", ["csv", "jsonl_with_eval_file"])
def test_labelled_examples_equal_in_memory(tmp_path, monkeypatch, case, read):
    monkeypatch.setattr(prepared, "IN_MEMORY_BYTES", READS[read])
    if case == "csv":
        _labelled(tmp_path / "train.csv", rows=300, seed=3)
        over = [f"data.train_path={tmp_path}/train.csv", "data.vocab_size=9",
                "data.sequence_length=7", "runtime.seed=5", "data.eval_fraction=0.3"]
    else:
        _labelled(tmp_path / "train.jsonl", rows=200, seed=4, fmt="jsonl")
        _labelled(tmp_path / "eval.jsonl", rows=50, seed=5, fmt="jsonl")
        over = [f"data.train_path={tmp_path}/train.jsonl",
                f"data.eval_path={tmp_path}/eval.jsonl", "data.sequence_length=50"]
    cfg = experiment.load("text_classification", None, over)
    prepare_labelled.prepare(cfg.data, str(tmp_path / "prep"), shard_mb=0.0005,
                             seed=cfg.runtime.seed, log=lambda m: None)
    assert_same_examples("text_classification", over, str(tmp_path / "prep"))


def test_labelled_mismatches_are_clear_errors(tmp_path):
    _labelled(tmp_path / "reviews.csv", rows=120)
    seqtrain("prepare", "--task", "text_classification", "--set", "data.train_path=reviews.csv",
             "--out", "prep", cwd=tmp_path)
    train = ["train", "--task", "text_classification", *TINY, "--set",
             "data.train_path=reviews.csv", "--set", "data.prepared_dir=prep",
             "--model-dir", "run"]
    user_error(*train, "--set", "runtime.seed=7", cwd=tmp_path, model_dir="run",
               expect=("data.prepared_dir='prep' does not match this run's config",
                       "runtime.seed=7 (prepared with 42)", "NEW_DIR"))
    user_error(*train, "--set", "data.vocab_size=50", cwd=tmp_path, model_dir="run",
               expect=("data.vocab_size=50 (prepared with 2000)",))
    seqtrain("prepare", "--task", "forecasting", "--set", "data.source=bundled", "--out",
             "series", cwd=tmp_path)
    user_error(*[a.replace("=prep", "=series") for a in train], cwd=tmp_path, model_dir="run",
               expect=("data.prepared_dir='series' was prepared for task 'forecasting', not "
                       "text_classification", "seqtrain prepare --task text_classification"))


def test_table_stream_reads_as_read_table(tmp_path):
    """CRLF, quoted commas and newlines, a BOM, \\u2028 and form feeds inside fields, blank
    lines, JSONL keys that appear late: the same rows at every chunk size."""
    rng = random.Random(2)
    cells = ["a", "b,c", 'say "hi"', "multi\nline", "x\r\ny", "naïve", " ", "\u2028s", "f\x0cq"]
    rows = ["text,label"] + [",".join('"' + rng.choice(cells).replace('"', '""') + '"'
                                      for _ in range(2)) for _ in range(150)]
    files = {"a.csv": "\ufeff" + "\r\n".join(rows) + "\r\n\r\n",
             "b.tsv": "".join(f"t{i}\t" + rng.choice(["x", 'y "q']) + "\n" for i in range(60)),
             "c.jsonl": "\n".join(json.dumps({"t": i} if i % 5 else {"t": i, "late": None})
                                  if i % 7 else "" for i in range(60)) + "\r\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8", newline="")
        want = tables.read_table(str(tmp_path / name))
        for chunk in (1, 2, 7, 1 << 20):
            head, records = table_stream.stream(str(tmp_path / name), chunk_bytes=chunk)
            got = list(records)
            if head.format == "jsonl":
                got = [(line, [table_stream.field_of(o, k) for k in head.columns])
                       for line, o in got]
            assert (head.format, head.header, head.columns, got) == (
                want.format, want.header, want.columns, want.rows), (name, chunk)
    (tmp_path / "bad.csv").write_bytes(b"a,b\n" * 30 + b"c,\xff\n")
    with pytest.raises(DataError) as want:
        tables.read_table(str(tmp_path / "bad.csv"))
    for chunk in (1, 5, 1 << 20):
        with pytest.raises(DataError) as got:
            list(table_stream.stream(str(tmp_path / "bad.csv"), chunk_bytes=chunk)[1])
        assert str(got.value) == str(want.value)


# ---- forecasting and multistep_forecasting -----------------------------------------


def test_series_prepare_cli_and_train_bitwise_equal(tmp_path):
    _series(tmp_path / "load.csv")
    data = ["--set", "data.path=load.csv", "--set", "data.time_column=when", "--set",
            "data.columns=[a,b]", "--set", "data.window=12"]
    out = seqtrain("prepare", "--task", "forecasting", *data, "--shard-mb", "0.002",
                   "--out", "prep", cwd=tmp_path)
    assert "rows        : train 560, eval 140" in out.stdout, out.stdout
    m = json.loads((tmp_path / "prep" / "manifest.json").read_text())
    assert m["stats"]["sorted_by_time"] and len(m["splits"]["values"]["shards"]) > 2
    args = ["train", "--task", "forecasting", *TINY, *MIRRORED, *data, "--set",
            "train.steps=4"]
    seqtrain(*args, "--model-dir", "direct", cwd=tmp_path)
    run = seqtrain(*args, "--set", "data.prepared_dir=prep", "--model-dir", "prep_run",
                   cwd=tmp_path)
    assert "read prepared dataset prep" in run.stdout, run.stdout
    assert_checkpoints_equal(ckpt(tmp_path / "direct", 4), ckpt(tmp_path / "prep_run", 4))
    metrics = [json.loads((tmp_path / r / "metrics.json").read_text())["metrics"]
               for r in ("direct", "prep_run")]
    assert metrics[0] == metrics[1]
    assert ((tmp_path / "direct" / "assets" / "normalization.json").read_text()
            == (tmp_path / "prep_run" / "assets" / "normalization.json").read_text())
    # The same prepared series serves multistep_forecasting, any window and horizon.
    over = [f"data.path={tmp_path}/load.csv", "data.time_column=when", "data.columns=[a,b]",
            "data.window=5", "data.horizon=3", "data.stride=2"]
    assert_same_examples("multistep_forecasting", over, str(tmp_path / "prep"))
    user_error(*args, "--set", "data.prepared_dir=prep", "--set", "data.val_fraction=0.3",
               "--model-dir", "bad", cwd=tmp_path, model_dir="bad",
               expect=("data.val_fraction=0.3 (prepared with 0.2)",))
    user_error("prepare", "--task", "forecasting", "--out", "synthetic", cwd=tmp_path,
               model_dir="synthetic", expect=("synthetic series", "nothing to prepare",
                                              "data.path"))


@pytest.mark.parametrize("read", READS)
def test_series_numeric_time_and_file_order(tmp_path, monkeypatch, read):
    """Numeric time keys already in order (no sort), a target outside data.columns."""
    monkeypatch.setattr(prepared, "IN_MEMORY_BYTES", READS[read])
    rng = np.random.default_rng(1)
    lines = ["t\tx\ty"] + [f"{i * 0.5}\t{v:.6f}\t{w:.3f}" for i, (v, w) in
                           enumerate(rng.standard_normal((300, 2)))]
    (tmp_path / "s.tsv").write_text("\n".join(lines) + "\n")
    over = [f"data.path={tmp_path}/s.tsv", "data.time_column=t", "data.columns=[x]",
            "data.target=y", "data.window=6", "data.val_fraction=0.25"]
    cfg = experiment.load("forecasting", None, over)
    prepare_series.prepare(cfg.data, str(tmp_path / "p"), shard_mb=0.001, log=lambda m: None)
    m = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert not m["stats"]["sorted_by_time"] and m["stats"]["columns"] == ["x", "y"]
    assert_same_examples("forecasting", over, str(tmp_path / "p"))
