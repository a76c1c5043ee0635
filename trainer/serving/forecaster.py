"""`seqtrain predict` on a forecasting or multistep_forecasting export."""

from __future__ import annotations

import json

import numpy as np
import tensorflow as tf

from trainer.errors import UserError
from trainer.serving import inference, metadata


def predict_lines(model_dir: str, inputs: list[str]) -> list[str]:
    """Forecasts for raw windows, one per input line.

    Each input is one window of raw values, time-major: `data.window` x features
    numbers separated by commas or spaces, or a JSON list (flat or [window][features]).
    Columns are in the order of the export metadata's `columns`.
    Output: the forecast (H comma-separated values for multi-step).
    """
    export_dir = inference.require(model_dir, "predict")
    meta = metadata.read(export_dir)
    window, columns = int(meta["window"]), list(meta["columns"])
    need = window * len(columns)
    batch = []
    for i, text in enumerate(inputs, 1):
        values = _parse_window(text, i)
        if len(values) != need:
            raise UserError(
                f"input {i} has {len(values)} numbers, but this model reads windows of "
                f"{window} steps x {len(columns)} column(s) ({', '.join(columns)}) = {need} "
                "numbers, time-major, separated by commas or spaces (or a JSON list).")
        batch.append(np.asarray(values, np.float32).reshape(window, len(columns)))
    loaded = tf.saved_model.load(export_dir)
    out = np.asarray(loaded.serve(tf.constant(np.stack(batch)))["forecast"])
    return [",".join(f"{v:.6g}" for v in np.atleast_1d(row)) for row in out]


def _parse_window(text: str, number: int) -> list[float]:
    text = text.strip()
    try:
        if text.startswith("["):
            values = [float(v) for v in np.asarray(json.loads(text), dtype=np.float64).ravel()]
        else:
            values = [float(v) for v in text.replace(",", " ").split()]
    except (ValueError, TypeError, json.JSONDecodeError):
        raise UserError(
            f"input {number} is not a window of numbers: {text[:80]!r}. Give the raw values "
            "separated by commas or spaces, or a JSON list.") from None
    if not all(np.isfinite(values)):
        raise UserError(f"input {number} holds NaN or infinity; forecasts need finite values.")
    return values


