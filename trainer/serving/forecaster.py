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
        values = _parse_window(text, i, (window, len(columns)))
        if len(values) != need:
            raise UserError(
                f"input {i} has {len(values)} numbers, but this model reads windows of "
                f"{window} steps x {len(columns)} column(s) ({', '.join(columns)}) = {need} "
                "numbers, time-major, separated by commas or spaces (or a JSON list).")
        batch.append(np.asarray(values, np.float32).reshape(window, len(columns)))
    loaded = inference.load_export(export_dir, model_dir)
    out = np.asarray(loaded.serve(tf.constant(np.stack(batch)))["forecast"])
    return [",".join(f"{v:.6g}" for v in np.atleast_1d(row)) for row in out]


def _parse_window(text: str, number: int, shape: tuple[int, int]) -> list[float]:
    """The numbers of one input: flat (commas, spaces or a flat JSON list) or a JSON list
    of `shape` ([window][features]). JSON booleans are not numbers."""
    text = text.strip()
    try:
        if text.startswith("["):
            parsed = json.loads(text)
            array = np.asarray(parsed, dtype=object)
            if any(isinstance(v, bool) or not isinstance(v, (int, float))
                   for v in array.ravel()):
                raise ValueError("not a number")
            if array.ndim > 1 and array.shape != shape:
                raise UserError(
                    f"input {number} is a JSON list of shape {list(array.shape)}, but this "
                    f"model reads [window][features] = {list(shape)} (or a flat list of "
                    f"{shape[0] * shape[1]} numbers, time-major).")
            values = [float(v) for v in array.astype(np.float64).ravel()]
        else:
            values = [float(v) for v in text.replace(",", " ").split()]
    except (ValueError, TypeError, json.JSONDecodeError):
        raise UserError(
            f"input {number} is not a window of numbers: {text[:80]!r}. Give the raw values "
            "separated by commas or spaces, or a JSON list.") from None
    if not all(np.isfinite(values)):
        raise UserError(f"input {number} holds NaN or infinity; forecasts need finite values.")
    return values


