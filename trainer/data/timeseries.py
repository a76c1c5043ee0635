"""Time-series loading, splitting, normalization and tf.data windowing.

A series is a float32 array `[time, features]`. Everything here runs on the
host and is a deterministic function of its arguments (TensorFlow is imported only
by the windowing functions, so `seqtrain prepare` can read series without it): the synthetic series
comes from a seeded numpy generator, CSV rows are sorted with a stable sort,
and windows are cut in order inside tf.data.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import TYPE_CHECKING, Sequence

import numpy as np

from trainer.data import tables

if TYPE_CHECKING:
    import tensorflow as tf
from trainer.errors import DataError

# series_sines.csv: synthetic_series(length=2000, features=1, components=3,
# noise=0.1, seed=0) as column `value`, with hourly ISO timestamps in `time`
# starting 2024-01-01T00:00.
BUNDLED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bundled")


@dataclasses.dataclass(frozen=True)
class Series:
    """A multivariate series and the names of its columns."""

    values: np.ndarray  # [time, features], float32, sorted by time
    columns: tuple[str, ...]
    target: str  # the column that is forecast; one of `columns`
    origin: str  # where it came from, for error messages

    @property
    def target_index(self) -> int:
        return self.columns.index(self.target)


@dataclasses.dataclass(frozen=True)
class Stats:
    """Per-column normalization statistics, fitted on the training part only."""

    columns: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


# ----------------------------------------------------------------------------
# Sources.
# ----------------------------------------------------------------------------


def synthetic_series(
    length: int, features: int, components: int, noise: float, seed: int
) -> Series:
    """Each column is a sum of `components` sines plus Gaussian noise.

    Periods are drawn between 8 and 120 steps, amplitudes between 0.2 and 1,
    phases uniformly; the generator is `numpy.random.default_rng(seed)`.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=np.float64)[:, None]
    cols = []
    for _ in range(features):
        periods = rng.uniform(8.0, 120.0, size=components)
        amps = rng.uniform(0.2, 1.0, size=components)
        phases = rng.uniform(0.0, 2 * np.pi, size=components)
        clean = (amps * np.sin(2 * np.pi * t / periods + phases)).sum(axis=1)
        cols.append(clean + noise * rng.standard_normal(length))
    names = tuple(f"y{i}" for i in range(features))
    values = np.stack(cols, axis=1).astype(np.float32)
    return Series(values, names, names[0], f"synthetic series ({length} steps)")


def bundled_path(name: str) -> str:
    """Path of a CSV shipped under trainer/data/bundled/."""
    return os.path.join(BUNDLED_DIR, f"{name}.csv")


def bundled_names() -> list[str]:
    return sorted(
        f[: -len(".csv")]
        for f in os.listdir(BUNDLED_DIR)
        if f.startswith("series") and f.endswith(".csv")
    )


def read_csv_series(path: str, columns: Sequence[str] = (), target: str = "",
                    time_column: str = "", **kwargs) -> Series:
    """`read_series` without the read report."""
    return read_series(path, columns, target, time_column, **kwargs)[0]


def read_series(
    path: str, columns: Sequence[str] = (), target: str = "", time_column: str = "", *,
    fmt: str = "auto", header="auto", encoding: str = "utf-8",
    max_field_bytes: int = tables.DEFAULT_MAX_FIELD_BYTES,
) -> tuple[Series, dict]:
    """Reads numeric columns of a CSV/TSV (local or gs://) and a read report.

    Args:
      path: CSV or TSV file; with a header its first row names the columns,
        without one (data.header=false) columns are numbered from 0.
      columns: input columns; empty means every column except `time_column`.
      target: the column to forecast; empty means the first input column. It
        is added to the inputs if `columns` does not list it.
      time_column: optional column to sort the rows by (numbers or ISO 8601
        dates/times); empty keeps the file order.

    Raises:
      DataError: missing or empty file, unknown column, non-numeric value,
        unparseable time value.
    """
    table = tables.read_table(path, fmt=fmt, header=header, encoding=encoding,
                              max_field_bytes=max_field_bytes, key="data.path",
                              names=(*columns, target, time_column))
    if table.format not in ("csv", "tsv"):
        raise DataError(f"data.path={path!r} was read as {table.format} "
                        f"({table.format_reason}); a series needs a CSV or TSV file. "
                        "Set data.format=csv or data.format=tsv.")
    header_names = table.columns

    def index_of(name, key: str) -> int:
        return table.column(name, key)

    time_idx = index_of(time_column, "data.time_column") if time_column else None
    if columns:
        idx = [index_of(name, "data.columns") for name in columns]
    else:
        idx = [i for i in range(len(header_names)) if i != time_idx]
    if target:
        t_idx = index_of(target, "data.target")
        if t_idx not in idx:
            idx.append(t_idx)
    else:
        t_idx = idx[0] if idx else None
    if not idx:
        raise DataError(
            f"{path!r} has no value columns besides data.time_column={time_column!r}."
        )
    names = [header_names[i] for i in idx]
    body = [row for _, row in table.rows]
    lines = [line for line, _ in table.rows]
    values = np.empty((len(body), len(idx)), dtype=np.float32)
    for j, col in enumerate(idx):
        for i, row in enumerate(body):
            values[i, j] = _parse_float(row[col], names[j], lines[i], path, bool(columns),
                                        time_column)
    if time_idx is not None:
        keys = _time_keys([row[time_idx] for row in body], time_column, path)
        values = values[np.argsort(keys, kind="stable")]
    report = table.report()
    report["summary"] = table.describe()
    report["columns_used"], report["target"] = names, header_names[t_idx]
    return Series(values, tuple(names), header_names[t_idx], f"CSV {path!r}"), report


def _parse_float(cell: str, column: str, line: int, path: str, chosen: bool,
                 time_column: str = "") -> float:
    try:
        value = float(cell)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value):
        if chosen:
            hint = "Fix or fill the value"
        elif not time_column and _is_time(cell):
            hint = (f"It looks like a date or time: set data.time_column={column} to sort the "
                    "rows by it (it is then not an input)")
        elif not time_column:
            hint = ("If it is a date/time column, set data.time_column to its name; otherwise "
                    "fix the value or list only numeric columns in data.columns")
        else:
            hint = "Fix or fill the value, or list only numeric columns in data.columns"
        raise DataError(
            f"column {column!r} of {path!r} has a non-numeric value {cell!r} on line "
            f"{line}. Every input column must hold finite numbers. {hint}."
        )
    return value


def _time_keys(cells: list[str], column: str, path: str) -> np.ndarray:
    """Sort keys for a time column: numbers, or ISO 8601 dates/times."""
    try:
        return np.array([float(c) for c in cells])
    except ValueError:
        pass
    try:
        return np.array([np.datetime64(c.strip()) for c in cells]).astype("datetime64[ns]")
    except ValueError:
        bad = next(c for c in cells if not _is_time(c))
        raise DataError(
            f"data.time_column={column!r} of {path!r} has the value {bad!r}, which is "
            "neither a number nor an ISO 8601 date/time (e.g. 2024-01-31 or "
            "2024-01-31T12:00). Convert the column or unset data.time_column."
        ) from None


def _is_time(cell: str) -> bool:
    try:
        np.datetime64(cell.strip())
        return True
    except ValueError:
        return False
    except Exception:  # numpy raises other types for some garbage strings
        return False


# ----------------------------------------------------------------------------
# Split, statistics, windows.
# ----------------------------------------------------------------------------


def split_point(
    series: Series, window: int, horizon: int, val_fraction: float, horizon_key: str = ""
) -> int:
    """Index of the first validation row (a split by time).

    Training windows lie inside `[0, split)`. Validation windows predict
    targets inside `[split, end)` and may read their inputs from the last
    `window` training rows, so no validation target is ever trained on.

    Args:
      horizon_key: config key of the horizon for messages ("" if it is fixed).

    Raises:
      DataError: either part is too short for one window (+ horizon).
    """
    return split_rows(len(series.values), series.origin, window, horizon, val_fraction,
                      horizon_key)


def split_rows(total: int, origin: str, window: int, horizon: int, val_fraction: float,
               horizon_key: str = "") -> int:
    """`split_point` of a series of `total` rows described as `origin`."""
    split = int(round(total * (1.0 - val_fraction)))
    need = window + horizon
    h_name = horizon_key or "horizon"
    lower = f"data.window or {horizon_key}" if horizon_key else "data.window"
    if total < need + horizon:
        raise DataError(
            f"the {origin} has {total} rows, but one training example needs "
            f"data.window + {h_name} = {window} + {horizon} = {need} rows and validation "
            f"{horizon} more ({need + horizon} in all). Use a longer series or lower {lower}."
        )
    if split < need or total - split < horizon:
        raise DataError(
            f"the {origin} has {total} rows; data.val_fraction={val_fraction} "
            f"leaves {split} for training and {total - split} for validation, but "
            f"training needs at least data.window + {h_name} = {need} rows and "
            f"validation at least {horizon}. Adjust data.val_fraction, lower {lower}, "
            "or use a longer series."
        )
    return split


STATS_CHUNK_ROWS = 1 << 20


def fit_stats(series: Series, split: int) -> Stats:
    """Mean and standard deviation of each column over rows `[0, split)`."""
    train = series.values[:split]
    return stats_of(lambda: (train[i:i + STATS_CHUNK_ROWS]
                             for i in range(0, split, STATS_CHUNK_ROWS)), series.columns)


def stats_of(chunks, columns) -> Stats:
    """Mean and standard deviation per column of the rows that `chunks()` yields (each
    call yields them again, in blocks of STATS_CHUNK_ROWS rows but the last), in
    float64: sums of each block added in order, then the squared deviations likewise.

    One rule for the in-memory series and `seqtrain prepare`, which streams the rows
    (trainer/data/prepare_series.py), so both get the same bits. Up to
    STATS_CHUNK_ROWS rows it is exactly `np.mean` / `np.std` of the whole block.
    """
    total, n = None, 0
    for block in chunks():
        part = np.add.reduce(block.astype(np.float64), axis=0)
        total = part if total is None else total + part
        n += len(block)
    mean = total / n
    squares = None
    for block in chunks():
        x = block.astype(np.float64) - mean
        part = np.add.reduce(x * x, axis=0)
        squares = part if squares is None else squares + part
    std = np.sqrt(squares / n)
    std = np.where(std < 1e-8, 1.0, std)  # a constant column is only centred
    return Stats(tuple(columns), tuple(map(float, mean)), tuple(map(float, std)))


def normalize(values: np.ndarray, stats: Stats) -> np.ndarray:
    mean = np.asarray(stats.mean, dtype=np.float64)
    std = np.asarray(stats.std, dtype=np.float64)
    return ((values - mean) / std).astype(np.float32)


def window_dataset(
    values: np.ndarray, window: int, horizon: int, target_index: int, stride: int = 1,
    chunk: int = 256,
) -> tf.data.Dataset:
    """`(inputs [window, features], targets [horizon])` for every window in order.

    Window k reads rows `[k*stride, k*stride + window)` and predicts column
    `target_index` at rows `[k*stride + window, k*stride + window + horizon)`.

    Like `keras.utils.timeseries_dataset_from_array`, windows are cut by index
    inside tf.data: start positions are batched `chunk` at a time, one gather
    cuts that many windows, and `unbatch` yields them one by one. Memory stays
    O(series + chunk * window), and the per-window cost is about 15x lower than
    `Dataset.window` + `flat_map` (which builds a dataset per window).
    """
    import tensorflow as tf

    size = window + horizon
    n = num_windows(len(values), window, horizon, stride)
    data = tf.constant(values, dtype=tf.float32)
    offsets = tf.range(size, dtype=tf.int64)

    def cut(starts):
        w = tf.gather(data, starts[:, None] + offsets)  # [chunk, window + horizon, features]
        return w[:, :window], w[:, window:, target_index]

    starts = tf.data.Dataset.range(0, n * stride, stride)
    return starts.batch(chunk).map(cut).unbatch()


def window_examples(values: np.ndarray, window: int, horizon: int, target_index: int,
                    stride: int = 1):
    """Window k of `window_dataset` (rows from k*stride) as example id k, cut by one gather
    (a `sampling.Examples`)."""
    import tensorflow as tf

    from trainer.data import sampling

    size = window + horizon
    data = tf.constant(values, dtype=tf.float32)
    offsets = tf.range(size, dtype=tf.int64)

    def gather(k):
        w = tf.gather(data, k[:, None] * stride + offsets)  # [n, window + horizon, features]
        return w[:, :window], w[:, window:, target_index]

    return sampling.Examples(num_windows(len(values), window, horizon, stride), gather)


def num_windows(length: int, window: int, horizon: int, stride: int = 1) -> int:
    return max(0, (length - window - horizon) // stride + 1)
