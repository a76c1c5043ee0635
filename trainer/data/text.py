"""Labelled text files: CSV, TSV or JSONL, local or gs://.

Files are read through `tf.io.gfile`, so a `gs://` path works exactly like a
local one. Labels may be strings or integers; they are mapped to class ids by
sorted order of their string form (`labels.txt` in the model dir records it).
"""

from __future__ import annotations

import csv
import io
import json
import os

import numpy as np

from trainer import storage
from trainer.errors import DataError

BUNDLED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bundled")


def bundled_path(name: str) -> str:
    return os.path.join(BUNDLED_DIR, name)


def read_labelled(path: str, *, fmt: str, text_column: str, label_column: str) -> tuple[list[str], list[str]]:
    """Reads (texts, labels-as-strings) from a CSV/TSV/JSONL file.

    Raises:
      DataError: missing or empty file, missing columns, malformed rows.
    """
    if not storage.exists(path):
        raise DataError(f"data file {path!r} does not exist. Check data.train_path / data.eval_path.")
    raw = storage.read_text(path)
    if not raw.strip():
        raise DataError(f"data file {path!r} is empty; it needs a header and at least one row.")
    fmt = _infer_format(path) if fmt == "auto" else fmt
    rows = _jsonl_rows(path, raw) if fmt == "jsonl" else _delimited_rows(path, raw, fmt)
    if not rows:
        raise DataError(f"data file {path!r} has a header but no rows.")
    columns = list(rows[0][1].keys())
    for col, key in ((text_column, "data.text_column"), (label_column, "data.label_column")):
        if col not in columns:
            raise DataError(
                f"data file {path!r} has no column {col!r} ({key}). "
                f"Available columns: {', '.join(map(str, columns))}. Set --set {key}=<name>.")
    texts, labels = [], []
    for line_no, row in rows:
        text, label = row.get(text_column), row.get(label_column)
        if text is None or label is None or str(label).strip() == "":
            raise DataError(
                f"{path!r} line {line_no}: missing {text_column!r} or {label_column!r} value.")
        texts.append(str(text))
        labels.append(str(label).strip())
    return texts, labels


def split(texts: list[str], labels: list[str], fraction: float, seed: int):
    """A deterministic shuffled split: (train_texts, train_labels, eval_texts, eval_labels)."""
    order = np.random.default_rng(seed).permutation(len(texts))
    n_eval = max(1, int(round(len(texts) * fraction)))
    if n_eval >= len(texts):
        raise DataError(
            f"data.eval_fraction={fraction} leaves no training rows out of {len(texts)}; "
            "lower it or provide data.eval_path.")
    ev, tr = order[:n_eval], order[n_eval:]
    pick = lambda xs, idx: [xs[i] for i in idx]  # noqa: E731
    return pick(texts, tr), pick(labels, tr), pick(texts, ev), pick(labels, ev)


def _infer_format(path: str) -> str:
    lower = path.lower()
    if lower.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if lower.endswith((".tsv", ".tab")):
        return "tsv"
    return "csv"


def _delimited_rows(path: str, raw: str, fmt: str):
    reader = csv.DictReader(io.StringIO(raw), delimiter="\t" if fmt == "tsv" else ",")
    if not reader.fieldnames:
        raise DataError(f"data file {path!r} has no header row.")
    rows = []
    for row in reader:
        if None in row:
            raise DataError(
                f"{path!r} line {reader.line_num}: more fields than the header "
                f"({len(reader.fieldnames)}). Quote fields that contain the delimiter.")
        if any(v is not None and v != "" for v in row.values()):
            rows.append((reader.line_num, row))
    return rows


def _jsonl_rows(path: str, raw: str):
    rows = []
    for i, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path!r} line {i} is not valid JSON: {e.msg}.") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path!r} line {i} must be a JSON object, got {type(obj).__name__}.")
        rows.append((i, obj))
    return rows
