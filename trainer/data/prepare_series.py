"""`seqtrain prepare` for series (forecasting, multistep_forecasting), in bounded memory.

The in-memory path (trainer/tasks/forecasting.py) reads the CSV/TSV with
`timeseries.read_series` (numeric columns as float32, rows sorted by
data.time_column with a stable sort), splits it by time at
`round(rows * (1 - data.val_fraction))`, fits mean and standard deviation per column
on the training rows (`timeseries.stats_of`) and normalizes the whole series. Here:

  1. stream the file once: hash it, parse each value (the same messages for a bad
     cell) into a temporary float32 file in file order, and keep the time keys (8
     bytes per row; a second read parses them as dates when they are not numbers);
  2. the time order (identity when the file is already sorted, which needs no key
     array beyond the check), the split, the statistics over the training rows read
     back in blocks of `timeseries.STATS_CHUNK_ROWS` rows (the in-memory rule);
  3. normalize block by block into the `values` array (float32, rows x columns
     flattened, in time order).

data.window, data.stride and data.horizon only cut windows at training time, so one
prepared dataset serves both series tasks and any window. Read by
trainer/data/series_prepared.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from typing import Callable

import numpy as np

from trainer import storage
from trainer.data import prepared, prepared_writer, table_stream, timeseries
from trainer.data.prepared_writer import Progress, recorded_config
from trainer.errors import DataError

TASKS = ("forecasting", "multistep_forecasting")  # one prepared format for both
CONTENT_KEYS = ("format", "header", "encoding", "max_field_bytes", "columns", "target",
                "time_column", "val_fraction")
_BLOCK_ROWS = 1 << 16


def task_of(d) -> str:
    return "multistep_forecasting" if hasattr(d, "horizon") else "forecasting"


def resolve(d) -> tuple[dict, str, str]:
    """(descriptor, file, time column) of a series data config, without reading it.

    Raises:
      NothingToPrepare: the synthetic series (generated at every run).
    """
    if d.source == "synthetic" or (d.source == "auto" and not d.path):
        raise prepared.NothingToPrepare(
            f"data.source={d.source!r}{'' if d.path else ' without data.path'} is the synthetic "
            "series, generated from runtime.seed at every run: there is nothing to prepare. "
            "Set data.path to a CSV/TSV file (or data.source=bundled) to prepare a series.")
    if d.source == "bundled":
        return ({"kind": "bundled", "name": d.bundled}, timeseries.bundled_path(d.bundled),
                d.time_column or "time")
    where = d.path if storage.is_remote(d.path) else os.path.abspath(d.path)
    return {"kind": "file", "path": where}, d.path, d.time_column


def content_config(d) -> dict:
    return {k: list(getattr(d, k)) if k == "columns" else getattr(d, k) for k in CONTENT_KEYS}


def prepare(d, out_dir: str, *, shard_mb: float = 256, log: Callable[[str], None] = print,
            progress_mb: float = 64, seed: int = 0) -> dict:
    """Prepares the series of data config `d` into `out_dir` (or finds it there).

    Raises:
      DataError / UserError: the synthetic source, a bad file, or `out_dir` holding
        something else.
    """
    del seed  # the series does not depend on it
    started = time.perf_counter()
    descriptor, path, time_column = resolve(d)
    size = storage.size(path) if storage.exists(path) else 0
    progress = Progress(size, log, progress_mb)
    prepared_writer.check_out_dir(out_dir, None)
    # The parsed values wait in a temporary file beside the output (a local temporary
    # directory for gs://) until the statistics are known.
    if storage.is_remote(out_dir):
        parent = None
    else:
        parent = os.path.dirname(os.path.abspath(out_dir))
        os.makedirs(parent, exist_ok=True)
    fd, raw_path = tempfile.mkstemp(prefix=".series.raw-", dir=parent)
    try:
        with os.fdopen(fd, "wb") as raw:
            digest = hashlib.sha256()
            progress.start("hash, parse values")
            info = _parse(d, path, time_column, raw, _feed(digest, progress))
        sources = [{"path": path, "bytes": size, "sha256": digest.hexdigest()}]
        config = content_config(d)
        summary, reused = prepared_writer.name_or_reuse("series", out_dir, sources, config,
                                                        started)
        if reused:
            return reused
        key, out_dir = summary["content_key"], summary["out"]
        if info["dates"]:
            info["keys"] = _date_keys(path, d, time_column, info, progress)
        manifest = _write(d, out_dir, raw_path, info, shard_mb, {
            "task": task_of(d), "kind": "series", "content_key": key, "source": descriptor,
            "sources": sources, "data_config": config, "config": recorded_config(d)})
    finally:
        os.unlink(raw_path)
    return {**summary, "reused": False, "manifest": manifest,
            "seconds": time.perf_counter() - started}


def _stream(d, path: str, time_column: str, on_bytes):
    head, rows = table_stream.stream(
        path, fmt=d.format, header=d.header, encoding=d.encoding,
        max_field_bytes=d.max_field_bytes, key="data.path",
        names=(*d.columns, d.target, time_column), on_bytes=on_bytes)
    if head.format not in ("csv", "tsv"):
        raise DataError(f"data.path={path!r} was read as {head.format} "
                        f"({head.format_reason}); a series needs a CSV or TSV file. "
                        "Set data.format=csv or data.format=tsv.")
    return head, rows


def _parse(d, path: str, time_column: str, raw, on_bytes) -> dict:
    """Pass 1: values (float32, file order) into `raw`; time keys if numeric."""
    head, rows = _stream(d, path, time_column, on_bytes)
    time_idx = head.column(time_column, "data.time_column") if time_column else None
    if d.columns:
        idx = [head.column(name, "data.columns") for name in d.columns]
    else:
        idx = [i for i in range(len(head.columns)) if i != time_idx]
    if d.target:
        t_idx = head.column(d.target, "data.target")
        if t_idx not in idx:
            idx.append(t_idx)
    else:
        t_idx = idx[0] if idx else None
    if not idx:
        raise DataError(f"{path!r} has no value columns besides data.time_column="
                        f"{time_column!r}.")
    names = [head.columns[i] for i in idx]
    chosen = bool(d.columns)
    keys, dates, block, n = [], False, [], 0
    for line, row in rows:
        block.append([timeseries._parse_float(row[c], names[j], line, path, chosen, time_column)
                      for j, c in enumerate(idx)])
        if time_idx is not None and not dates:
            try:
                keys.append(float(row[time_idx]))
            except ValueError:
                dates, keys = True, []
        if len(block) >= _BLOCK_ROWS:
            raw.write(np.asarray(block, np.float32).tobytes())
            n, block = n + len(block), []
    if block:
        raw.write(np.asarray(block, np.float32).tobytes())
        n += len(block)
    report = {"path": path, "format": head.format, "format_reason": head.format_reason,
              "header": head.header, "columns_used": names, "target": head.columns[t_idx],
              "rows": n}
    return {"rows": n, "columns": names, "target": head.columns[t_idx], "report": report,
            "time_idx": time_idx, "dates": dates,
            "keys": np.asarray(keys, np.float64) if time_idx is not None else None}


def _date_keys(path: str, d, time_column: str, info: dict, progress) -> np.ndarray:
    """A second read: the time column as ISO dates (`timeseries._time_keys`' rule)."""
    progress.start("parse the time column as dates")
    _, rows = _stream(d, path, time_column, lambda b: progress.add(len(b)))
    keys = np.empty(info["rows"], "datetime64[ns]")
    for i, (_, row) in enumerate(rows):
        cell = row[info["time_idx"]]
        try:
            keys[i] = np.datetime64(cell.strip())
        except ValueError:
            raise DataError(
                f"data.time_column={time_column!r} of {path!r} has the value {cell!r}, which "
                "is neither a number nor an ISO 8601 date/time (e.g. 2024-01-31 or "
                "2024-01-31T12:00). Convert the column or unset data.time_column.") from None
    return keys


def _write(d, out_dir: str, raw_path: str, info: dict, shard_mb: float, manifest: dict
           ) -> dict:
    """Pass 2: the time order, split, statistics; the normalized `values` array."""
    n, f = info["rows"], len(info["columns"])
    order = None
    if info["keys"] is not None:
        keys = info.pop("keys")
        if len(keys) > 1 and not np.all(keys[1:] >= keys[:-1]):
            order = np.argsort(keys, kind="stable")  # timeseries.read_series' sort
        del keys
    split = int(round(n * (1.0 - d.val_fraction)))
    if not 0 < split < n:
        raise DataError(
            f"the series in {info['report']['path']!r} has {n} rows; data.val_fraction="
            f"{d.val_fraction} leaves {split} for training and {n - split} for validation. "
            "Adjust data.val_fraction or use a longer series.")
    # In file order the blocks are read (not mapped: a mapping's pages would count in
    # resident memory); out of order they are gathered through a mapping.
    mm = np.memmap(raw_path, np.float32, "r", shape=(n, f)) if order is not None else None

    def blocks(stop: int, size: int):
        for i in range(0, stop, size):
            j = min(stop, i + size)
            if mm is None:
                yield np.fromfile(raw_path, np.float32, count=(j - i) * f,
                                  offset=i * f * 4).reshape(-1, f)
            else:
                yield np.asarray(mm[order[i:j]])

    stats = timeseries.stats_of(lambda: blocks(split, timeseries.STATS_CHUNK_ROWS),
                                info["columns"])
    writer = prepared_writer.Writer(out_dir, dtype=np.float32, counts={"values": n * f},
                                    shard_bytes=int(shard_mb * 2**20))
    try:
        for block in blocks(n, _BLOCK_ROWS):
            writer.add("values", timeseries.normalize(block, stats).reshape(-1))
        t = info["columns"].index(info["target"])
        return writer.commit({**manifest, "stats": {
            "rows": {"train": split, "eval": n - split}, "length": n,
            "columns": info["columns"], "target": info["target"], "target_index": t,
            "sorted_by_time": order is not None, "read": info["report"]}},
            None, {"normalization.json": stats.to_json()})
    except BaseException as e:
        raise writer.failed(e) from None


def _feed(digest, progress):
    def on_bytes(data: bytes) -> None:
        digest.update(data)
        progress.add(len(data))
    return on_bytes


def stats_from(text: str) -> timeseries.Stats:
    s = json.loads(text)
    return timeseries.Stats(tuple(s["columns"]), tuple(s["mean"]), tuple(s["std"]))
