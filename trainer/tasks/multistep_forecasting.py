"""Multi-step time-series forecasting: predict the next `data.horizon` values.

Same data, split, normalization and export contract as `forecasting`
(trainer/tasks/forecasting.py); the targets are the next H values of the
target column. Two heads (`model.head`):

  encoder_decoder: LSTM stack -> RepeatVector(H) -> LSTM(return_sequences)
                   -> TimeDistributed(Dense(1))
  direct:          LSTM stack -> Dense(H)

Metrics (original scale of the target): overall `mse`/`mae`, per horizon step
`mse_h1`..`mse_hH`, and the naive last-value forecast repeated over the
horizon (`naive_mse`, `naive_mse_h1`..), plus `skill = 1 - mse / naive_mse`.
"""

from __future__ import annotations

import keras
import numpy as np

from trainer import plots, registry
from trainer.models.rnn import make_rnn_layer
from trainer.tasks.forecasting import ForecastingTask, encoder


@registry.register("multistep_forecasting")
class MultistepForecastingTask(ForecastingTask):
    """Forecast of the next H values (encoder-decoder or direct head)."""

    horizon_key = "data.horizon"

    @property
    def horizon(self) -> int:
        return self.config.data.horizon

    def build_model(self) -> keras.Model:
        cfg, h = self.config.model, self.horizon
        inputs = keras.Input((self.config.data.window, len(self.series.columns)), name="window")
        x = encoder(inputs, cfg)
        if cfg.dropout:
            x = keras.layers.Dropout(cfg.dropout, name="head_dropout")(x)
        if cfg.head == "direct":
            outputs = keras.layers.Dense(h, dtype="float32", name="forecast")(x)
        else:
            x = keras.layers.RepeatVector(h, name="repeat")(x)
            x = make_rnn_layer(cfg, units=cfg.decoder_units or cfg.units,
                               return_sequences=True, name=f"decoder_{cfg.cell}")(x)
            x = keras.layers.TimeDistributed(
                keras.layers.Dense(1, dtype="float32", name="forecast_dense"),
                name="forecast_steps")(x)
            outputs = keras.layers.Reshape((h,), dtype="float32", name="forecast")(x)
        return keras.Model(inputs, outputs, name=self.name)

    def summary_line(self, metrics: dict) -> str:
        h = self.horizon
        keys = ["mse", "naive_mse", "skill", "mse_h1", f"mse_h{h}"]
        return ", ".join(f"{k}={metrics[k]:.4f}" for k in dict.fromkeys(keys) if k in metrics)

    def _plot(self, model, step: int) -> bytes:
        """Three validation windows (start, middle, end): context, actual, forecast."""
        w, h = self.config.data.window, self.horizon
        first = self.split
        count = self.length - self.split - h + 1  # validation windows
        picks = np.unique(np.linspace(0, count - 1, num=3).astype(int))
        inputs = np.stack([self._rows(first + p - w, first + p) for p in picks.tolist()])
        pred = self._predict_raw(model, inputs)
        panels = []
        for p, forecast in zip(picks.tolist(), pred):
            start = first + p  # first forecast row
            ct, ft = np.arange(start - w, start), np.arange(start, start + h)
            raw = self._raw_target(start - w, start + h)
            panels.append((ct, raw[:w], ft, raw[w:], forecast, np.full(h, raw[w - 1])))
        return plots.multi_step_png(
            panels,
            title=f"{self.name} ({self.config.model.head}, H={h}): {self.series.target!r}, "
                  f"step {step}",
        )
