"""forecasting and multistep_forecasting end to end, through the `seqtrain` CLI.

Each test runs real training processes on tiny models; exports are loaded in
a fresh Python process that never imports `trainer`.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import REPO, TINY
from helpers import run_without_trainer, user_error

MIRRORED = ["--set", "runtime.strategy=mirrored", "--set", "runtime.cpu_replicas=2"]
SMALL_DATA = ["--set", "data.window=16", "--set", "data.synthetic_length=400"]
BUNDLED = os.path.join(REPO, "trainer", "data", "bundled", "series_sines.csv")


def _metrics(model_dir) -> dict:
    return json.loads((model_dir / "metrics.json").read_text())


PREDICT = """
import json, sys
import numpy as np, tensorflow as tf
export, window, features = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model = tf.saved_model.load(export)
x = np.random.default_rng(0).normal(size=(3, window, features)).astype("float32")
y = model.signatures["serving_default"](window=tf.constant(x))["forecast"].numpy()
y2 = model.serve(x)["forecast"].numpy()
print(json.dumps({"shape": list(y.shape), "finite": bool(np.isfinite(y).all()),
                  "same": bool(np.allclose(y, y2))}))
"""


def _shuffled_csv(tmp_path, rows: int = 400) -> tuple[str, np.ndarray]:
    """A CSV with an integer time column in random order; returns (path, sorted values)."""
    rng = np.random.default_rng(1)
    t = np.arange(rows)
    values = np.sin(t / 7.0) * 3 + 10 + 0.1 * rng.standard_normal(rows)
    other = np.cos(t / 5.0)
    order = rng.permutation(rows)
    lines = ["other,t,value"] + [f"{other[i]:.6f},{t[i]},{values[i]:.6f}" for i in order]
    path = tmp_path / "shuffled.csv"
    path.write_text("\n".join(lines) + "\n")
    sorted_values = np.stack([np.round(values, 6), np.round(other, 6)], axis=1)
    return str(path), sorted_values


@pytest.mark.parametrize("task,strategy", [
    ("forecasting", "default"),
    ("forecasting", "mirrored"),
    ("multistep_forecasting", "default"),
    ("multistep_forecasting", "mirrored"),
])
def test_train_resume_export(run_cli, tmp_path, task, strategy):
    run = tmp_path / "run"
    extra = list(SMALL_DATA) + (MIRRORED if strategy == "mirrored" else [])
    features, horizon, sorted_values = 1, 1, None
    if task == "multistep_forecasting":
        head = "direct" if strategy == "mirrored" else "encoder_decoder"
        extra += ["--set", "data.horizon=3", "--set", f"model.head={head}"]
        horizon = 3
    elif strategy == "default":  # a user CSV whose time column is out of order
        path, sorted_values = _shuffled_csv(tmp_path)
        extra += ["--set", "data.source=csv", "--set", f"data.path={path}",
                  "--set", "data.time_column=t", "--set", "data.target=value"]
        features = 2

    run_cli("train", "--task", task, *TINY, *extra, "--model-dir", str(run))
    assert _metrics(run)["step"] == 6
    for name in ("config.yaml", "runtime.json", "assets/normalization.json", "export",
                 "plots/forecast-step6.png"):
        assert (run / name).exists(), name
    assert list((run / "eval").iterdir()), "no TensorBoard eval events"
    replicas = json.loads((run / "runtime.json").read_text())["replicas"]
    assert replicas == (2 if strategy == "mirrored" else 1)

    resumed = run_cli("train", "--task", task, *TINY, *extra, "--set", "train.steps=10",
                      "--model-dir", str(run))
    assert "resumed from" in resumed.stdout and "at step 6" in resumed.stdout
    metrics = _metrics(run)
    assert metrics["step"] == 10
    for key in ("mse", "mae", "naive_mse", "skill"):
        assert np.isfinite(metrics["metrics"][key]), key
    if horizon > 1:
        assert {"mse_h1", "mse_h3", "naive_mse_h3"} <= set(metrics["metrics"])
    assert (run / "plots" / "forecast-step10.png").exists()

    meta = json.loads((run / "assets" / "normalization.json").read_text())
    if sorted_values is not None:  # stats of the first train_rows rows *after* sorting by t
        assert meta["columns"] == ["other", "value"] and meta["target"] == "value"
        train = sorted_values[: meta["train_rows"]]
        np.testing.assert_allclose(meta["mean"], [train[:, 1].mean(), train[:, 0].mean()],
                                   rtol=1e-5)
        np.testing.assert_allclose(meta["std"], [train[:, 1].std(), train[:, 0].std()],
                                   rtol=1e-4)

    out = run_without_trainer(PREDICT, str(run / "export"), "16", str(features))
    assert out == {"shape": [3] if horizon == 1 else [3, horizon], "finite": True,
                   "same": True}


CHECK_EXPORT = """
import json, sys
import numpy as np, tensorflow as tf
export, csv_path, window, train_rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
series = np.genfromtxt(csv_path, delimiter=",", skip_header=1, usecols=1, dtype="float32")
idx = np.arange(train_rows - window, len(series) - window)[:, None] + np.arange(window)
x, y = series[idx][..., None], series[train_rows:]
model = tf.saved_model.load(export)  # keep a reference while calling it
pred = model.serve(x)["forecast"].numpy()
print(json.dumps({"mse": float(np.mean((pred - y) ** 2)),
                  "naive_mse": float(np.mean((x[:, -1, 0] - y) ** 2))}))
"""


def test_beats_naive_baseline_on_bundled_data(run_cli, tmp_path):
    """A small budget on the bundled series beats the last-value forecast; the raw
    export reproduces the validation MSE from the raw CSV."""
    run = tmp_path / "run"
    run_cli("train", "--task", "forecasting", "--set", "data.source=bundled",
            "--set", "model.layers=1", "--set", "model.units=16",
            "--set", "train.steps=300", "--set", "train.steps_per_loop=100",
            "--set", "train.eval_every=300", "--set", "train.checkpoint_every=300",
            "--model-dir", str(run))
    metrics = _metrics(run)["metrics"]
    # The baseline is measured on the same windows: the last-value forecast.
    assert metrics["mse"] < metrics["naive_mse"], metrics
    assert metrics["skill"] == pytest.approx(1 - metrics["mse"] / metrics["naive_mse"], abs=1e-5)

    meta = json.loads((run / "assets" / "normalization.json").read_text())
    out = run_without_trainer(CHECK_EXPORT, str(run / "export"), BUNDLED, str(meta["window"]),
                        str(meta["train_rows"]))
    assert out["naive_mse"] == pytest.approx(metrics["naive_mse"], rel=1e-3)
    assert out["mse"] == pytest.approx(metrics["mse"], rel=1e-3)


@pytest.mark.parametrize("case", ["empty", "missing_column", "non_numeric", "too_short",
                                  "horizon_too_large"])
def test_bad_inputs_exit_cleanly(run_cli, tmp_path, case):
    csv = tmp_path / "series.csv"
    good = "t,value\n" + "".join(f"{i},{np.sin(i / 3):.4f}\n" for i in range(60))
    task, sets, expected = "forecasting", [], ""
    if case == "empty":
        csv.write_text("")
        expected = "is empty"
    elif case == "missing_column":
        csv.write_text(good)
        sets, expected = ["data.target=price"], "data.target='price' is not a column"
    elif case == "non_numeric":
        csv.write_text(good.replace("\n5,", "\n5,n/a"))
        expected = "non-numeric value"
    elif case == "too_short":
        csv.write_text(good)
        sets, expected = ["data.window=100"], "data.window + horizon = 100 + 1"
    else:
        csv.write_text(good)
        task = "multistep_forecasting"
        sets, expected = ["data.window=10", "data.horizon=80"], "data.horizon = 10 + 80"
    args = ["train", "--task", task, "--set", "data.source=csv", "--set", f"data.path={csv}",
            "--set", "data.time_column=t"]
    for s in sets:
        args += ["--set", s]
    user_error(*args, "--model-dir", "run", cwd=tmp_path, model_dir="run",
               expect=(expected, str(csv)))


def test_csv_and_model_dir_on_gcs(run_cli, gcs, tmp_path):  # noqa: F811
    """data.path and --model-dir on gs:// (the GCS emulator): CSV read, plots and
    export written through tf.io.gfile."""
    bucket = gcs.new_bucket()
    gcs.write_object(bucket, "data/series.csv",
                     "t,value\n" + "".join(f"{i},{np.sin(i / 4):.5f}\n" for i in range(120)))
    run_cli("train", "--task", "multistep_forecasting", *TINY, "--set", "data.source=csv",
            "--set", f"data.path=gs://{bucket}/data/series.csv", "--set", "data.time_column=t",
            "--set", "data.window=12", "--set", "data.horizon=2", "--set", "model.layers=1",
            "--model-dir", f"gs://{bucket}/run", env=gcs.env)
    objects = gcs.list_objects(bucket, "run/")
    for name in ("run/assets/normalization.json", "run/plots/forecast-step6.png",
                 "run/export/saved_model.pb", "run/export/assets.extra/seqtrain.json"):
        assert name in objects, (name, objects)
    assert gcs.read_object(bucket, "run/plots/forecast-step6.png").startswith(b"\x89PNG")
    assert json.loads(gcs.read_object(bucket, "run/metrics.json"))["step"] == 6
