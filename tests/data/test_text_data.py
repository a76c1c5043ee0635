"""Labelled text files (CSV/TSV/JSONL) and the text_classification data side."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainer import experiment
from trainer.data import text
from trainer.errors import DataError
from trainer.tasks.text_classification import TextClassificationTask


def test_csv_tsv_and_jsonl_read_the_same_rows(tmp_path):
    rows = [("good food, really", "pos"), ("bad \"service\"", "neg")]
    csv_path = tmp_path / "d.csv"
    csv_path.write_text('text,label\n"good food, really",pos\n"bad ""service""",neg\n')
    tsv_path = tmp_path / "d.tsv"
    tsv_path.write_text("label\ttext\n" + "".join(f"{y}\t{x}\n" for x, y in rows))
    jsonl_path = tmp_path / "d.jsonl"
    jsonl_path.write_text("".join(json.dumps({"text": x, "label": y}) + "\n" for x, y in rows))
    for path in (csv_path, tsv_path, jsonl_path):
        texts, labels, _ = text.read_labelled(str(path), fmt="auto", text_column="text",
                                           label_column="label")
        assert list(zip(texts, labels)) == rows, path


def test_integer_labels_sort_numerically(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [{"body": f"w{i} w{i % 3}", "y": i % 11} for i in range(60)]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    cfg = experiment.load("text_classification", None, [
        "data.source=file", f"data.train_path={path}", "data.text_column=body",
        "data.label_column=y", "data.vocab_size=40", "data.eval_fraction=0.1"])
    task = TextClassificationTask(cfg)
    task.prepare()
    assert task.labels == [str(i) for i in range(11)]
    assert task.assets()["labels.txt"].splitlines()[:3] == ["0", "1", "2"]
    ids, labels = task._splits["train"]
    assert ids.shape[1] == cfg.data.sequence_length and ids.dtype == np.int32
    # right padding with id 0 (cuDNN-eligible masks): each row's tokens are a
    # prefix, then only zeros. The texts have 2 words, so every row is padded.
    lengths = (ids != 0).sum(1)
    assert (lengths == 2).all(), lengths
    np.testing.assert_array_equal(ids != 0, np.arange(ids.shape[1]) < lengths[:, None])


def test_split_is_deterministic_and_disjoint():
    texts = [f"t{i}" for i in range(100)]
    labels = ["a", "b"] * 50
    a = text.split(texts, labels, 0.2, seed=1)
    b = text.split(texts, labels, 0.2, seed=1)
    assert a == b and len(a[2]) == 20 and not set(a[0]) & set(a[2])
    assert text.split(texts, labels, 0.2, seed=2)[2] != a[2]


def test_malformed_jsonl_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": oops}\n')
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        text.read_labelled(str(path), fmt="auto", text_column="text", label_column="label")


def test_vocabulary_is_fitted_on_the_training_split_only(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\n" + "".join(f"common word{i},{'ab'[i % 2]}\n" for i in range(40)))
    eval_path = tmp_path / "e.csv"
    eval_path.write_text("text,label\nunseenword common,a\nother unseen,b\n")
    cfg = experiment.load("text_classification", None, [
        "data.source=file", f"data.train_path={path}", f"data.eval_path={eval_path}"])
    task = TextClassificationTask(cfg)
    task.prepare()
    vocab = task.assets()["vocab.txt"].split("\n")
    assert "common" in vocab and "unseenword" not in vocab and "unseen" not in vocab


def test_a_header_is_found_whatever_the_case_of_its_names(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("Text,LABEL\ngood movie,pos\nbad movie,neg\ngreat film,pos\n")
    texts, labels, report = text.read_labelled(str(path), fmt="auto", text_column="text",
                                               label_column="label")
    assert report["header"] and labels == ["pos", "neg", "pos"]
    assert (report["text_column"], report["label_column"]) == ("Text", "LABEL")


def test_a_first_line_whose_label_occurs_once_is_refused_as_a_likely_header(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("review,sentiment\ngood movie,pos\nbad movie,neg\ngreat film,pos\n")
    with pytest.raises(DataError, match="looks like a header"):
        text.read_labelled(str(path), fmt="auto", text_column="text", label_column="label")
    # Said outright, the same line is data (a class of one example) or a header.
    _, labels, _ = text.read_labelled(str(path), fmt="auto", text_column="text",
                                      label_column="label", header=False)
    assert labels[0] == "sentiment"
    _, labels, _ = text.read_labelled(str(path), fmt="auto", text_column="review",
                                      label_column="sentiment", header=True)
    assert labels == ["pos", "neg", "pos"]
    # Every label once (too few rows to tell): read as data, as before.
    path.write_text("a b,x\nc d,y\ne f,z\n")
    assert text.read_labelled(str(path), fmt="auto", text_column="text",
                              label_column="label")[1] == ["x", "y", "z"]
