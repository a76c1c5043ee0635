"""trainer/data/timeseries.py and the forecasting tasks' data side, in process."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import config as config_lib, experiment
from trainer import registry
from trainer.data import timeseries
from trainer.errors import DataError


def _numpy_windows(values, window, horizon, target, stride):
    xs, ys = [], []
    for start in range(0, len(values) - window - horizon + 1, stride):
        xs.append(values[start:start + window])
        ys.append(values[start + window:start + window + horizon, target])
    return np.array(xs), np.array(ys)


@pytest.mark.parametrize("window,horizon,stride,chunk", [
    (5, 1, 1, 256), (7, 3, 2, 256), (4, 4, 3, 2), (1, 1, 1, 3), (6, 2, 1, 5)])
def test_windows_match_numpy_reference(window, horizon, stride, chunk):
    values = np.arange(60, dtype=np.float32).reshape(20, 3) + 0.5
    ds = timeseries.window_dataset(values, window, horizon, target_index=1, stride=stride,
                                   chunk=chunk)
    assert ds.element_spec[0].shape == (window, 3)
    assert ds.element_spec[1].shape == (horizon,)
    got = list(ds.as_numpy_iterator())
    want_x, want_y = _numpy_windows(values, window, horizon, 1, stride)
    assert len(got) == len(want_x) == timeseries.num_windows(20, window, horizon, stride)
    np.testing.assert_array_equal(np.stack([x for x, _ in got]), want_x)
    np.testing.assert_array_equal(np.stack([y for _, y in got]), want_y)


def test_synthetic_series_is_seeded():
    a = timeseries.synthetic_series(300, 2, 3, 0.1, seed=7)
    b = timeseries.synthetic_series(300, 2, 3, 0.1, seed=7)
    c = timeseries.synthetic_series(300, 2, 3, 0.1, seed=8)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.allclose(a.values, c.values)
    assert a.values.shape == (300, 2) and a.values.dtype == np.float32
    assert a.columns == ("y0", "y1") and a.target == "y0"


def test_stats_use_the_training_part_only():
    values = np.concatenate([np.zeros(80), np.full(20, 100.0)]).astype(np.float32)[:, None]
    values[:80, 0] = np.linspace(-1, 1, 80)
    series = timeseries.Series(values, ("v",), "v", "test series")
    split = timeseries.split_point(series, window=10, horizon=1, val_fraction=0.2)
    assert split == 80
    stats = timeseries.fit_stats(series, split)
    assert stats.mean[0] == pytest.approx(values[:80, 0].mean(), abs=1e-6)
    assert stats.std[0] == pytest.approx(values[:80, 0].std(), rel=1e-6)


def _write(tmp_path, text, name="s.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_csv_sorted_by_numeric_and_iso_time_columns(tmp_path):
    path = _write(tmp_path, "t,a,b\n3,30,300\n1,10,100\n2,20,200\n10,99,999\n")
    s = timeseries.read_csv_series(path, time_column="t")
    assert s.columns == ("a", "b") and s.target == "a"
    np.testing.assert_array_equal(s.values[:, 0], [10, 20, 30, 99])  # 10 sorts after 3

    path = _write(tmp_path, "when,x\n2024-01-03,3\n2024-01-01T12:00,1.5\n2023-12-31,0\n", "d.csv")
    s = timeseries.read_csv_series(path, time_column="when")
    np.testing.assert_array_equal(s.values[:, 0], [0, 1.5, 3])


def test_csv_column_choice_adds_the_target(tmp_path):
    path = _write(tmp_path, "a,b,c\n1,2,x\n4,5,y\n")
    s = timeseries.read_csv_series(path, columns=("a",), target="b")
    assert s.columns == ("a", "b") and s.target_index == 1
    np.testing.assert_array_equal(s.values, [[1, 2], [4, 5]])


def test_csv_with_byte_order_mark(tmp_path):
    path = _write(tmp_path, "\ufefft,value\n1,2.5\n0,1.5\n")
    s = timeseries.read_csv_series(path, time_column="t")
    assert s.columns == ("value",)
    np.testing.assert_array_equal(s.values[:, 0], [1.5, 2.5])


@pytest.mark.parametrize("text,kwargs,expected", [
    ("", {}, "is empty"),
    ("a,b\n", {}, "no data rows"),
    ("a,b\n1,2\n", {"target": "z"}, "data.target='z' is not a column"),
    ("a,b\n1,2\n", {"columns": ("a", "q")}, "data.columns='q' is not a column"),
    ("a,b\n1,2\n", {"time_column": "t"}, "data.time_column='t' is not a column"),
    ("a,b\n1,2\n3,oops\n", {}, "non-numeric value 'oops' on line 3"),
    ("a,b\n1,2\n3,\n", {}, "non-numeric value '' on line 3"),
    ("a,b\n1,2\n3\n", {}, "line 3 has 1 comma-separated fields"),
    ("t,a\nmonday,1\n", {"time_column": "t"}, "neither a number nor an ISO 8601"),
])
def test_csv_errors_name_the_problem(tmp_path, text, kwargs, expected):
    path = _write(tmp_path, text)
    with pytest.raises(DataError, match=expected.replace("(", r"\(")) as e:
        timeseries.read_csv_series(path, **kwargs)
    assert path in str(e.value)


def test_missing_file():
    with pytest.raises(DataError, match="does not exist"):
        timeseries.read_csv_series("/nonexistent/dir/series.csv")


def test_series_too_short_names_lengths_and_keys():
    series = timeseries.Series(np.zeros((30, 1), np.float32), ("v",), "v", "test series")
    with pytest.raises(DataError, match=r"30 rows.*data.window \+ data.horizon = 40 \+ 1"):
        timeseries.split_point(series, 40, 1, 0.2, horizon_key="data.horizon")
    with pytest.raises(DataError, match=r"data.horizon = 10 \+ 50.*lower data.window or "
                                        r"data.horizon"):
        timeseries.split_point(series, 10, 50, 0.2, horizon_key="data.horizon")
    with pytest.raises(DataError, match=r"leaves 3 for training.*data.val_fraction"):
        timeseries.split_point(series, 10, 1, 0.9)


# ---- the tasks' data side (host code, no training) -------------------------


def _task(name, *overrides):
    cfg = experiment.load(task=name, overrides=["model.units=4", "model.layers=1", *overrides])
    task = registry.get(name)(cfg)
    task.prepare()
    return task


def test_eval_windows_predict_only_validation_rows():
    task = _task("multistep_forecasting", "data.synthetic_length=200", "data.window=12",
                 "data.horizon=3", "data.val_fraction=0.25")
    assert task.split == 150
    raw = task.normalized[:, 0]
    evals = list(task.dataset("eval").as_numpy_iterator())
    assert len(evals) == 50 - 3 + 1
    first_x, first_y = evals[0]
    np.testing.assert_array_equal(first_x[:, 0], raw[138:150])  # context from training rows
    np.testing.assert_array_equal(first_y, raw[150:153])  # targets from validation rows
    np.testing.assert_array_equal(evals[-1][1], raw[197:200])
    trains = list(task.dataset("train").as_numpy_iterator())
    assert len(trains) == 150 - 15 + 1  # no training target reaches the validation part
    np.testing.assert_array_equal(trains[-1][1], raw[147:150])


def test_assets_hold_train_only_stats_and_are_deterministic():
    a = _task("forecasting", "data.synthetic_length=300", "data.window=10")
    b = _task("forecasting", "data.synthetic_length=300", "data.window=10")
    assert a.assets() == b.assets()
    meta = json.loads(a.assets()["normalization.json"])
    train = a.series.values[:240, 0].astype(np.float64)
    assert meta["train_rows"] == 240 and meta["val_rows"] == 60
    assert meta["mean"][0] == pytest.approx(train.mean()) and meta["std"][0] == pytest.approx(
        train.std())
    assert meta["mean"][0] != pytest.approx(a.series.values[:, 0].mean(), abs=1e-9)


def test_eval_metrics_match_numpy_on_raw_scale():
    task = _task("multistep_forecasting", "data.synthetic_length=200", "data.window=8",
                 "data.horizon=2", "model.head=direct")
    model = task.build_model()
    x, y = next(iter(task.dataset("eval").batch(16)))
    w = tf.constant([1.0] * 12 + [0.0] * 4)
    out = {k: float(n) / float(d) for k, (n, d) in task.eval_metrics(model, x, y, w).items()}
    sd, mean = task.target_std, task.target_mean
    pred = model(x).numpy()[:12] * sd + mean
    true = y.numpy()[:12] * sd + mean
    naive = x.numpy()[:12, -1:, 0] * sd + mean
    assert out["mse"] == pytest.approx(np.mean((pred - true) ** 2), rel=1e-4)
    assert out["mae"] == pytest.approx(np.mean(np.abs(pred - true)), rel=1e-4)
    assert out["naive_mse"] == pytest.approx(np.mean((naive - true) ** 2), rel=1e-4)
    assert out["mse_h2"] == pytest.approx(np.mean((pred[:, 1] - true[:, 1]) ** 2), rel=1e-4)
    assert out["skill"] == pytest.approx(1 - out["mse"] / out["naive_mse"], rel=1e-4)


def test_layer_units_build_a_50_20_style_stack():
    task = _task("forecasting", "data.synthetic_length=200", "data.window=8",
                 "model.layer_units=[6, 4]")
    model = task.build_model()
    rnn = [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]
    assert [(layer.name, layer.units, layer.return_sequences) for layer in rnn] == [
        ("encoder0_lstm_0", 6, True), ("encoder1_lstm_0", 4, False)]
    assert model.output.dtype == "float32"


def test_config_errors():
    with pytest.raises(config_lib.ConfigError, match="data.source=csv needs data.path"):
        experiment.load(task="forecasting", overrides=["data.source=csv"])
    with pytest.raises(config_lib.ConfigError, match=r"data.val_fraction must be in \(0, 1\)"):
        experiment.load(task="forecasting", overrides=["data.val_fraction=1.5"])
    with pytest.raises(config_lib.ConfigError, match="series_sines"):
        experiment.load(task="forecasting", overrides=["data.source=bundled",
                                                       "data.bundled=nope"])
