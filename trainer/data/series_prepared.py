"""Training from a prepared series (trainer/data/prepare_series.py), read in place.

`open_series` opens `data.prepared_dir` (trainer/data/prepared.py verifies the
values and statistics) and refuses one prepared from another file or with another
content-defining config than the run's. Windows are read by id: window k of rows
`[base, ...)` is rows `base + k*stride ..` + window + horizon, one `os.pread` per window
(`prepared.TokenStream.read`), inside one `tf.numpy_function` per replica batch, as
for character windows; rows that fit `prepared.IN_MEMORY_BYTES` are read once and cut
by the in-memory path's own gather (`timeseries.window_examples`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from trainer.data import prepared, sampling, timeseries
from trainer.data.prepare_series import TASKS, content_config, resolve, stats_from, task_of


@dataclasses.dataclass
class PreparedSeries:
    """A verified prepared series: normalized float32 rows, read by row range."""

    dataset: prepared.PreparedDataset
    values: prepared.TokenStream  # rows x columns, flattened
    columns: tuple[str, ...]
    target: str
    stats: timeseries.Stats
    split: int  # the first validation row

    @property
    def length(self) -> int:
        return len(self.values) // len(self.columns)

    @property
    def target_index(self) -> int:
        return self.columns.index(self.target)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Normalized rows `[start, stop)`, float32 [rows, columns]."""
        f = len(self.columns)
        return self.values.read(start * f, stop * f).reshape(-1, f)

    def windows(self, starts: np.ndarray, size: int) -> np.ndarray:
        """float32 [n, size, columns]: rows `starts[i] .. starts[i] + size - 1`."""
        out = np.empty((len(starts), size, len(self.columns)), np.float32)
        for i, s in enumerate(np.asarray(starts, np.int64).reshape(-1).tolist()):
            out[i] = self.rows(s, s + size)
        return out


def open_series(d) -> PreparedSeries:
    """Opens `d.prepared_dir` for a run of a series task with data config `d`.

    Raises:
      DataError: not a series dataset, damaged, or prepared from another file or
        with another content-defining config.
    """
    descriptor, path, _ = resolve(d)
    ds = prepared.open_for_run(d, task_of(d), descriptor, content_config(d),
                               kind="the series", accept=TASKS, paths=lambda: [path])
    s = ds.manifest["stats"]
    return PreparedSeries(ds, ds.splits["values"], tuple(s["columns"]), s["target"],
                          stats_from(ds.texts["normalization.json"]), s["rows"]["train"])


def window_examples(series: PreparedSeries, base: int, stop: int, window: int, horizon: int,
                    stride: int = 1) -> sampling.Examples:
    """Windows of rows `[base, stop)` as `timeseries.window_examples` cuts them (by that
    function, from the rows read into memory, when they fit `prepared.IN_MEMORY_BYTES`)."""
    if _fits(series, base, stop):
        return timeseries.window_examples(series.rows(base, stop), window, horizon,
                                          series.target_index, stride)
    n = timeseries.num_windows(stop - base, window, horizon, stride)
    return sampling.Examples(n, lambda k: _gather(series, base + k * stride, window, horizon))


def window_dataset(series: PreparedSeries, base: int, stop: int, window: int, horizon: int,
                   stride: int = 1, chunk: int = 256) -> tf.data.Dataset:
    """Every window of rows `[base, stop)` in order, as `timeseries.window_dataset`."""
    if _fits(series, base, stop):
        return timeseries.window_dataset(series.rows(base, stop), window, horizon,
                                          series.target_index, stride)
    n = timeseries.num_windows(stop - base, window, horizon, stride)
    return (tf.data.Dataset.range(n).batch(chunk)
            .map(lambda k: _gather(series, base + k * stride, window, horizon)).unbatch())


def _fits(series: PreparedSeries, base: int, stop: int) -> bool:
    return (stop - base) * len(series.columns) * 4 <= prepared.IN_MEMORY_BYTES


def _gather(series: PreparedSeries, starts, window: int, horizon: int):
    size, f, t = window + horizon, len(series.columns), series.target_index
    w = tf.numpy_function(lambda s: series.windows(s, size), [starts], tf.float32,
                          stateful=False)
    w = tf.ensure_shape(w, [None, size, f])
    return w[:, :window], w[:, window:, t]
