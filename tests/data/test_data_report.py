"""Each task's data_report(): JSON-able, counts what was read, warns naming the knob."""

from __future__ import annotations

import json

import pytest

from trainer import experiment, registry
from trainer.data import report


def _prepared(task: str, *overrides: str):
    cfg = experiment.load(task, None, overrides)
    t = registry.get(task)(cfg)
    t.prepare()
    return t, json.loads(json.dumps(t.data_report()))  # JSON round trip: runtime.json-ready


def test_text_classification_counts_rows_labels_skips_and_oov(tmp_path):
    path = tmp_path / "d.csv"
    rows = [f"word{i} common,{'ab'[i % 2]}" for i in range(40)] + [",a", "lonely,"]
    path.write_text("text,label\n" + "\n".join(rows) + "\n\n")
    _, rep = _prepared("text_classification", f"data.train_path={path}",
                       "data.eval_fraction=0.25")
    assert rep["source"] == "file"
    (f,) = rep["files"]
    assert f["rows"] == 42 and f["rows_used"] == 40
    assert f["skipped"] == {"blank lines": 1, "empty text": 1, "empty label": 1}
    assert rep["train"]["rows"] + rep["eval"]["rows"] == 40
    assert sum(rep["train"]["labels"].values()) == rep["train"]["rows"]
    # eval rows hold a word seen only there (wordN) and a known one (common)
    assert rep["eval"]["oov_rate"] == pytest.approx(0.5)
    assert any("train.steps=600" in w and "--set train.steps=" in w for w in rep["warnings"])


def test_bundled_default_is_reported_without_warnings():
    _, rep = _prepared("text_classification")
    assert rep["source"] == "bundled" and rep["warnings"] == []
    assert rep["train"]["rows"] > 5000


def test_forecasting_reports_windows_and_warns_on_a_short_series(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("y\n" + "\n".join(str(i % 12) for i in range(144)) + "\n")
    _, rep = _prepared("forecasting", f"data.path={path}")
    assert rep["series"]["length"] == 144
    assert rep["train"] == {"rows": 115, "windows": 67}
    assert any("only 67 training windows for data.window=48" in w and "data.window=" in w
               for w in rep["warnings"])


def test_translation_warns_on_word_level_learning_rate(tmp_path):
    _, rep = _prepared("translation", "data.toy_size=300", "data.tokenize=word")
    assert any("train.learning_rate=0.01" in w and "train.learning_rate=0.001" in w
               for w in rep["warnings"])
    assert rep["source"] == "toy" and rep["train"]["pairs"] + rep["eval"]["pairs"] == 300
    assert 0.0 <= rep["eval"]["source_oov_rate"] < 1.0


def test_text_generation_reports_characters_windows_and_oov(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("abcabcabc " * 50 + "xyz" * 10)
    _, rep = _prepared("text_generation", f"data.path={path}", "data.seq_len=20")
    assert rep["source"] == "file" and rep["train"]["chars"] + rep["eval"]["chars"] == 530
    assert rep["eval"]["oov_rate"] > 0.0  # x, y, z appear only in the eval tail


def test_report_text_prefixes_lines_and_warnings():
    text = report.text({"lines": ["read x"], "warnings": ["too small"]})
    assert text == "seqtrain: data: read x\nseqtrain: warning: too small"
