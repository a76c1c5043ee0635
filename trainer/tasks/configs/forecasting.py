"""Config of the `forecasting` task: the series source, windows and the LSTM stack.

No TensorFlow here (see trainer/registry.py); the Task is in trainer/tasks/forecasting.py.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from trainer.config import field, prepare_mode_field
from trainer.data import tables
from trainer.errors import ConfigError
from trainer.models.configs import RecurrentConfig
from trainer.registry import TaskSpec
from trainer.serving.inference import predict_command
from trainer.tasks.configs import bundled_names


@dataclasses.dataclass(frozen=True)
class ForecastingData:
    source: Literal["auto", "synthetic", "bundled", "csv", "file"] = field(
        "auto",
        "auto: data.path if set, else synthetic; synthetic: seeded sum of sines; bundled: a "
        "CSV shipped with seqtrain; csv|file: data.path.",
    )
    path: str = field("", "CSV/TSV file (local or gs://); setting it trains on it (source=auto).")
    format: Literal["auto", "csv", "tsv"] = field(
        "auto", "File format; auto: the extension, else the first line (tabs: tsv).")
    header: bool | Literal["auto"] = field(
        "auto", "Whether the first line names the columns; false numbers them from 0. "
        "true|false|auto.")
    encoding: str = field("utf-8", "Text encoding of data.path (e.g. utf-8, latin-1).")
    max_field_bytes: int = field(tables.DEFAULT_MAX_FIELD_BYTES,
                                 "Longest allowed field; longer ones are an error.", min=1)
    bundled: str = field(
        "series_sines", "Bundled CSV name for source=bundled (trainer/data/bundled/<name>.csv)."
    )
    columns: tuple[str, ...] = field(
        (), "Input columns of the CSV; empty uses every column except data.time_column."
    )
    target: str = field(
        "", "Column to forecast (added to the inputs if missing); empty: first input column."
    )
    time_column: str = field(
        "", "CSV column to sort rows by (numbers or ISO 8601); empty keeps file order "
        "(bundled files: `time`)."
    )
    prepared_dir: str = field(
        "", "A prepared dataset (`seqtrain prepare --out DIR`, local or gs://) to train from "
        "instead of reading the file: checksums verified at open, windows read in place. Its "
        "file and format/header/encoding/columns/target/time_column/val_fraction must match "
        "this config. Empty: read the file.", resume_ok=True)
    prepare: Literal["auto", "off"] = prepare_mode_field()
    window: int = field(48, "Input window length in time steps.", min=1)
    stride: int = field(1, "Time steps between the starts of consecutive training windows.", min=1)
    val_fraction: float = field(
        0.2, "Last fraction of the series (by time) used for validation.", min=0
    )
    synthetic_length: int = field(3000, "Length of the synthetic series.", min=2)
    synthetic_features: int = field(1, "Columns of the synthetic series (target is y0).", min=1)
    synthetic_components: int = field(3, "Sines summed per synthetic column.", min=1)
    synthetic_noise: float = field(0.1, "Std of the Gaussian noise on the synthetic series.", min=0)

    def validate(self, path: str) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(
                f"{path}.val_fraction must be in (0, 1), got {self.val_fraction}."
            )
        if self.source in ("csv", "file") and not self.path:
            raise ConfigError(
                f"{path}.source={self.source} needs {path}.path (a CSV file, local or gs://)."
            )
        if self.source in ("synthetic", "bundled") and self.path:
            raise ConfigError(
                f"{path}.source={self.source} ignores {path}.path={self.path!r}; set "
                f"{path}.source=auto (or csv) to train on the file, or drop {path}.path."
            )
        names = bundled_names("series", ".csv", strip_prefix=False)
        if self.source == "bundled" and self.bundled not in names:
            raise ConfigError(
                f"{path}.bundled={self.bundled!r} is not a bundled series. Available: "
                f"{', '.join(names)}."
            )


@dataclasses.dataclass(frozen=True)
class ForecastingModel(RecurrentConfig):
    units: int = field(32, "Units per recurrent layer.", min=1)
    layers: int = field(2, "Stacked recurrent layers (all but the last return sequences).", min=1)
    bidirectional: bool = field(False, "Wrap each recurrent layer in Bidirectional.")
    layer_units: tuple[int, ...] = field(
        (), "Units of each recurrent layer, e.g. [50, 20]; overrides model.units and model.layers."
    )

    def validate(self, path: str) -> None:
        super().validate(path)
        if any(u < 1 for u in self.layer_units):
            raise ConfigError(
                f"{path}.layer_units must be positive integers, got {list(self.layer_units)}."
            )


SPEC = TaskSpec(
    name="forecasting",
    description="Next-step time-series forecast (LSTM stack -> Dense) vs a naive baseline.",
    data=ForecastingData,
    model=ForecastingModel,
    module="trainer.tasks.forecasting",
    train_defaults=dict(
        steps=2000, batch_size=32, learning_rate=3e-3, steps_per_loop=50,
        eval_every=500, checkpoint_every=500, log_every=100,
    ),
    headline_metric="mse",
    headline_goal="min",
    commands=(predict_command("trainer.serving.forecaster:predict_lines"),),
    prepare="trainer.data.prepare_series:prepare",
)
