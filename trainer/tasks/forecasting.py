"""Single-step time-series forecasting: predict the next value from a window.

Data: a synthetic sum of sines, a bundled CSV, or a user CSV (local or gs://).
The series is split by time (the last `data.val_fraction` is validation),
normalized with mean/std fitted on the training part only, and cut into
windows with tf.data. The model is a stacked LSTM followed by a Dense head.

Metrics are on the original scale of the target column: `mse`, `mae`, the
naive last-value forecast's `naive_mse`/`naive_mae` on the same windows, and
`skill = 1 - mse / naive_mse` (> 0 means the model beats the naive forecast).

The export takes raw windows `[batch, window, features]` (columns in the order
of `assets/normalization.json`) and returns raw-scale forecasts.
"""

from __future__ import annotations

import dataclasses
import json

import keras
import numpy as np
import tensorflow as tf

from trainer import plots, registry, storage
from trainer.data import report as data_report, sampling, series_prepared, tables, timeseries
from trainer.models.rnn import recurrent_stack
from trainer.tasks.base import EXPORT_OPTIONS, Task
from trainer.tasks.configs.forecasting import ForecastingModel


def encoder(inputs, cfg: ForecastingModel):
    """The stacked recurrent encoder; returns the last layer's final output."""
    if not cfg.layer_units:
        return recurrent_stack(inputs, cfg, name="encoder")
    x, last = inputs, len(cfg.layer_units) - 1
    for i, units in enumerate(cfg.layer_units):
        one = dataclasses.replace(cfg, units=units, layers=1)
        x = recurrent_stack(x, one, return_sequences=i < last, name=f"encoder{i}")
    return x


@registry.register("forecasting")
class ForecastingTask(Task):
    """Stacked LSTM -> Dense forecast of the next value of one column."""

    xla_on_cpu = True
    padding = "none"

    # ---- host side ---------------------------------------------------------
    horizon_key = ""  # config key of the horizon; forecasting predicts one step

    @property
    def horizon(self) -> int:
        return 1

    prepared: series_prepared.PreparedSeries | None = None  # data.prepared_dir, opened

    def prepare(self) -> None:
        d = self.config.data
        self.prepared = None
        if d.prepared_dir:
            self._open_prepared()
        else:
            self.series = self._read_series()
            self.length = len(self.series.values)
            self.split = timeseries.split_point(
                self.series, d.window, self.horizon, d.val_fraction, self.horizon_key
            )
            self.stats = timeseries.fit_stats(self.series, self.split)
            self.normalized = timeseries.normalize(self.series.values, self.stats)
        t = self.series.target_index
        self.target_mean, self.target_std = self.stats.mean[t], self.stats.std[t]

    def _open_prepared(self) -> None:
        """The normalized series of `data.prepared_dir` (verified, read in place)."""
        d = self.config.data
        self.prepared = p = series_prepared.open_series(d)
        ds = p.dataset
        sources = [src["path"] for src in ds.manifest.get("sources", [])]
        # Name the user's file: a length error is about it, not the prepared copy.
        origin = (f"series {sources[0]!r} (prepared in {d.prepared_dir!r})" if sources
                  else f"prepared series {d.prepared_dir!r}")
        # Rows are read on demand (`_rows`); the Series keeps names, not values.
        self.series = timeseries.Series(np.empty((0, len(p.columns)), np.float32), p.columns,
                                        p.target, origin)
        self.length, self.stats = p.length, p.stats
        self.split = timeseries.split_rows(self.length, origin, d.window, self.horizon,
                                           d.val_fraction, self.horizon_key)
        read = ds.manifest.get("stats", {}).get("read")  # how prepare read the file
        self._files = ([{**read, "summary": tables.describe_read(
            read["path"], read["rows"], read["format"], read["format_reason"], read["header"])}]
            if read else [])
        self._files += [{"prepared_dir": d.prepared_dir, "content_key": ds.content_key,
                        "sources": ds.manifest["sources"],
                        "verify_secs": round(ds.verify_secs, 3),
                        "summary": f"read prepared dataset {d.prepared_dir} (content key "
                                   f"{ds.content_key[:16]}..., {ds.verified_bytes / 2**20:.1f} "
                                   f"MB verified in {ds.verify_secs:.2f} s)"}]

    def _rows(self, start: int, stop: int) -> np.ndarray:
        """Normalized rows `[start, stop)` (host side)."""
        if self.prepared:
            return self.prepared.rows(start, stop)
        return self.normalized[start:stop]

    def _raw_target(self, start: int, stop: int) -> np.ndarray:
        """The target column on its original scale, rows `[start, stop)` (for plots; from a
        prepared dataset it is the normalized value scaled back, float64)."""
        t = self.series.target_index
        if self.prepared:
            return self._rows(start, stop)[:, t] * self.target_std + self.target_mean
        return self.series.values[start:stop, t]

    def _read_series(self) -> timeseries.Series:
        d = self.config.data
        self._files = []
        if d.source == "synthetic" or (d.source == "auto" and not d.path):
            return timeseries.synthetic_series(
                d.synthetic_length, d.synthetic_features, d.synthetic_components,
                d.synthetic_noise, seed=self.config.runtime.seed,
            )
        if d.source == "bundled":  # bundled files all have a `time` column
            path, time_column = timeseries.bundled_path(d.bundled), d.time_column or "time"
        else:
            path, time_column = d.path, d.time_column
        series, report = timeseries.read_series(
            path, d.columns, d.target, time_column, fmt=d.format, header=d.header,
            encoding=d.encoding, max_field_bytes=d.max_field_bytes)
        self._files.append(report)
        return series

    def data_report(self) -> dict:
        d = self.config.data
        length = self.length
        train_windows = timeseries.num_windows(self.split, d.window, self.horizon, d.stride)
        eval_windows = timeseries.num_windows(length - self.split + d.window, d.window,
                                              self.horizon)
        lines = [f["summary"] for f in self._files] + [
            f"series {self.series.origin}: {length} steps x {len(self.series.columns)} "
            f"column(s) ({', '.join(self.series.columns)}), target {self.series.target!r}",
            f"train rows {self.split} -> {train_windows} windows of data.window={d.window}; "
            f"eval rows {length - self.split} -> {eval_windows} windows"]
        warnings = []
        need = data_report.MIN_WINDOWS_PER_WINDOW * d.window
        if train_windows < need:
            better = max(1, (self.split - self.horizon + 1) // (data_report.MIN_WINDOWS_PER_WINDOW
                                                                + 1))
            hint = (f" Try --set data.window={min(better, d.window - 1)}" if better < d.window
                    else "")
            warnings.append(
                f"only {train_windows} training windows for data.window={d.window} (fewer than "
                f"{data_report.MIN_WINDOWS_PER_WINDOW} x the window): the model may not beat "
                f"the naive forecast (compare skill).{hint}, or use a longer series.")
        # No epochs warning here: stride-1 windows overlap almost entirely, so passes over
        # them say little about overfitting; the windows-per-window check above does.
        source = ("prepared" if self.prepared else "file" if d.path else
                  "synthetic" if d.source == "auto" else d.source)
        return {"task": self.name, "source": source, "files": self._files,
                "series": {"length": length, "columns": list(self.series.columns),
                           "target": self.series.target},
                "train": {"rows": self.split, "windows": train_windows},
                "eval": {"rows": length - self.split, "windows": eval_windows},
                "warnings": warnings, "lines": lines}

    def assets(self) -> dict[str, str]:
        meta = dict(
            json.loads(self.stats.to_json()),
            target=self.series.target, window=self.config.data.window, horizon=self.horizon,
            train_rows=self.split, val_rows=self.length - self.split,
        )
        return {"normalization.json": json.dumps(meta, indent=2, sort_keys=True) + "\n"}

    def dataset(self, split: str) -> tf.data.Dataset:
        """Windows of the normalized series; eval windows predict validation rows."""
        d = self.config.data
        if self.prepared:
            base, stop, stride = ((0, self.split, d.stride) if split == "train"
                                  else (self.split - d.window, self.length, 1))
            return series_prepared.window_dataset(self.prepared, base, stop, d.window,
                                                  self.horizon, stride)
        if split == "train":
            values, stride = self.normalized[: self.split], d.stride
        else:  # inputs may reach back into training rows; targets never do
            values, stride = self.normalized[self.split - d.window:], 1
        return timeseries.window_dataset(
            values, d.window, self.horizon, self.series.target_index, stride
        )

    def train_examples(self) -> sampling.Examples:
        """Every training window (one every `data.stride` rows), by id."""
        d = self.config.data
        if self.prepared:
            return series_prepared.window_examples(self.prepared, 0, self.split, d.window,
                                                   self.horizon, d.stride)
        return timeseries.window_examples(self.normalized[: self.split], d.window, self.horizon,
                                          self.series.target_index, d.stride)

    # ---- model -------------------------------------------------------------
    def build_model(self) -> keras.Model:
        cfg = self.config.model
        inputs = keras.Input((self.config.data.window, len(self.series.columns)), name="window")
        x = encoder(inputs, cfg)
        if cfg.dropout:
            x = keras.layers.Dropout(cfg.dropout, name="head_dropout")(x)
        outputs = keras.layers.Dense(self.horizon, dtype="float32", name="forecast")(x)
        return keras.Model(inputs, outputs, name=self.name)

    def loss(self, model, features, labels):
        """Mean squared error over the horizon, normalized units. Runs on devices."""
        pred = tf.cast(model(features, training=True), tf.float32)
        return tf.reduce_mean(tf.square(pred - labels), axis=-1)

    def eval_metrics(self, model, features, labels, weights):
        """Raw-scale errors of the model and the naive forecast. Runs on devices."""
        pred = tf.cast(model(features, training=False), tf.float32)
        naive = features[:, -1:, self.series.target_index]  # last value, [batch, 1]
        err, naive_err = pred - labels, tf.cast(naive, tf.float32) - labels
        w = tf.broadcast_to(weights[:, None], tf.shape(labels))
        count = tf.reduce_sum(w)
        sd, var = self.target_std, self.target_std**2
        sq, naive_sq = tf.square(err) * w, tf.square(naive_err) * w
        out = {
            "mse": (tf.reduce_sum(sq) * var, count),
            "mae": (tf.reduce_sum(tf.abs(err) * w) * sd, count),
            "naive_mse": (tf.reduce_sum(naive_sq) * var, count),
            "naive_mae": (tf.reduce_sum(tf.abs(naive_err) * w) * sd, count),
            "skill": (tf.reduce_sum(naive_sq - sq), tf.reduce_sum(naive_sq)),
        }
        if self.horizon > 1:
            for h in range(self.horizon):
                n = tf.reduce_sum(weights)
                out[f"mse_h{h + 1}"] = (tf.reduce_sum(sq[:, h]) * var, n)
                out[f"naive_mse_h{h + 1}"] = (tf.reduce_sum(naive_sq[:, h]) * var, n)
        return out

    def summary_line(self, metrics: dict) -> str:
        keys = [k for k in ("mse", "mae", "naive_mse", "skill") if k in metrics]
        return ", ".join(f"{k}={metrics[k]:.4f}" for k in keys)

    # ---- host-side evaluation ----------------------------------------------
    def on_eval_end(self, model, step: int, model_dir: str) -> dict:
        """Forecast-vs-actual plot: PNG under MODEL_DIR/plots and a TensorBoard image."""
        png = self._plot(model, step)
        plot_dir = storage.join(model_dir, "plots")
        storage.makedirs(plot_dir)
        with tf.io.gfile.GFile(storage.join(plot_dir, f"forecast-step{step}.png"), "wb") as f:
            f.write(png)
        tf.summary.image("forecast", tf.image.decode_png(png, channels=4)[None], step=step)
        return {}

    def _predict_raw(self, model, inputs: np.ndarray) -> np.ndarray:
        """Raw-scale forecasts `[n, horizon]` for normalized windows (host side)."""
        out = [
            np.asarray(model(inputs[i:i + 256], training=False), dtype=np.float64)
            for i in range(0, len(inputs), 256)
        ]
        return np.concatenate(out) * self.target_std + self.target_mean

    def _val_windows(self, limit: int) -> tuple[np.ndarray, int]:
        """Up to `limit` normalized validation input windows and the first target row."""
        w = self.config.data.window
        n = min(limit, self.length - self.split - self.horizon + 1)
        start = self.split - w
        idx = np.arange(n)[:, None] + np.arange(w)[None, :]
        return self._rows(start, start + n + w - 1)[idx], self.split

    def _plot(self, model, step: int) -> bytes:
        inputs, first = self._val_windows(limit=200)
        pred = self._predict_raw(model, inputs)[:, 0]
        actual = self._raw_target(first - 1, first + len(pred))
        times = np.arange(first, first + len(pred))
        return plots.one_step_png(
            times, actual[1:], pred, actual[:-1],
            title=f"{self.name}: next-step forecast of {self.series.target!r}, step {step}",
        )

    # ---- export ------------------------------------------------------------
    def export(self, model, export_dir: str) -> None:
        """SavedModel: `serve(window=[batch, window, features] raw) -> {"forecast"}`."""
        window, features = self.config.data.window, len(self.series.columns)
        mean = tf.constant(self.stats.mean, tf.float32)
        std = tf.constant(self.stats.std, tf.float32)
        t_mean, t_std = self.target_mean, self.target_std
        squeeze = self.horizon == 1

        def serve(window_values):
            x = (window_values - mean) / std
            y = tf.cast(model(x, training=False), tf.float32) * t_std + t_mean
            return {"forecast": y[:, 0] if squeeze else y}

        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serve", serve,
            input_signature=[tf.TensorSpec([None, window, features], tf.float32, name="window")],
        )
        archive.write_out(export_dir, options=EXPORT_OPTIONS, verbose=False)

    def export_metadata(self) -> dict:
        """The normalization statistics, window and columns (`seqtrain predict` reads them)."""
        return json.loads(self.assets()["normalization.json"])
