"""Labelled text files: CSV, TSV or JSONL, local or gs:// (read by trainer/data/tables.py).

Files are read through `tf.io.gfile`, so a `gs://` path works exactly like a
local one. Labels may be strings or integers; they are mapped to class ids by
sorted order of their string form (`labels.txt` in the model dir records it).
"""

from __future__ import annotations

import collections
import os

import numpy as np

from trainer.data import tables
from trainer.errors import DataError

BUNDLED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bundled")


def bundled_path(name: str) -> str:
    return os.path.join(BUNDLED_DIR, name)


def read_labelled(path: str, *, fmt: str, text_column, label_column, header="auto",
                  encoding: str = "utf-8", max_field_bytes: int = tables.DEFAULT_MAX_FIELD_BYTES,
                  key: str = "data.train_path") -> tuple[list[str], list[str], dict]:
    """Reads (texts, labels-as-strings, read report) from a CSV/TSV/JSONL file.

    Without a header, columns are numbered from 0; the default column names
    then mean column 0 (text) and column 1 (label). Rows whose text or label is
    empty are skipped and counted in the report.

    Raises:
      DataError: missing or empty file, missing columns, malformed rows.
    """
    table = tables.read_table(path, fmt=fmt, header=header, encoding=encoding,
                              max_field_bytes=max_field_bytes, key=key,
                              names=(text_column, label_column))
    if table.format == "text":
        raise DataError(
            f"{key}={path!r} was read as plain text ({table.format_reason}), but "
            "classification needs a text and a label per row. Use a CSV, TSV or JSONL file, "
            "or set data.format.")
    defaults = {"text": 0, "label": 1}
    cols = []
    for wanted, ck in ((text_column, "data.text_column"), (label_column, "data.label_column")):
        if not table.header and str(wanted) in defaults and len(table.columns) >= 2:
            wanted = defaults[str(wanted)]
        if table.format == "jsonl" and str(wanted) not in table.columns:
            raise DataError(
                f"{path!r} has no key {wanted!r} ({ck}); its objects have the keys "
                f"{', '.join(table.columns)}. Set --set {ck}=<key>.")
        cols.append(table.column(wanted, ck))
    t_idx, l_idx = cols
    texts, labels, skipped = [], [], {}
    for _, row in table.rows:
        text, label = row[t_idx], row[l_idx].strip()
        reason = "empty label" if not label else "empty text" if not text.strip() else None
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        texts.append(text)
        labels.append(label)
    if table.rows:
        first = table.rows[0][1]
        tables.check_first_row_label(
            path, key, header, table.header, ",".join(first),
            first[l_idx].strip() if len(first) > l_idx else None, collections.Counter(labels))
    report = table.report()
    report["skipped"].update(skipped)
    report["text_column"], report["label_column"] = table.columns[t_idx], table.columns[l_idx]
    report["rows_used"] = len(texts)
    report["summary"] = table.describe() + (
        "; skipped " + ", ".join(f"{n} ({r})" for r, n in skipped.items()) if skipped else "")
    if not texts:
        raise DataError(f"{key}={path!r} has no row with both a text and a label "
                        f"({', '.join(f'{n} {r}' for r, n in skipped.items())}). Check "
                        "data.text_column and data.label_column.")
    return texts, labels, report


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


def label_sort_key(label: str):
    """Class ids follow this order of the label strings: integers by value, then text."""
    return (0, int(label), "") if label.lstrip("-").isdigit() else (1, 0, label)
