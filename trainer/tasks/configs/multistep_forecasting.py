"""Config of the `multistep_forecasting` task: forecasting's sections plus the horizon and head.

No TensorFlow here (see trainer/registry.py); the Task is in trainer/tasks/multistep_forecasting.py.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from trainer.config import field
from trainer.registry import TaskSpec
from trainer.tasks.configs.forecasting import SPEC as FORECASTING
from trainer.tasks.configs.forecasting import ForecastingData, ForecastingModel


@dataclasses.dataclass(frozen=True)
class MultistepData(ForecastingData):
    horizon: int = field(12, "Forecast horizon H: predict the next H values.", min=1)


@dataclasses.dataclass(frozen=True)
class MultistepModel(ForecastingModel):
    head: Literal["encoder_decoder", "direct"] = field(
        "encoder_decoder",
        "encoder_decoder: RepeatVector + LSTM decoder + TimeDistributed Dense; direct: Dense(H).",
    )
    decoder_units: int = field(0, "Units of the decoder LSTM (encoder_decoder); 0: model.units.",
                               min=0)


SPEC = TaskSpec(
    name="multistep_forecasting",
    description="Multi-step time-series forecast (encoder-decoder or direct head), per-step metrics.",
    data=MultistepData,
    model=MultistepModel,
    module="trainer.tasks.multistep_forecasting",
    train_defaults=FORECASTING.train_defaults,
    headline_metric="mse",
    headline_goal="min",
    commands=FORECASTING.commands,
    prepare=FORECASTING.prepare,
)
