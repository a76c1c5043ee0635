"""cuDNN eligibility report and precision policy checks."""

from __future__ import annotations

import dataclasses

import keras
import pytest

from trainer import config as config_lib, experiment, kernels, loop, precision
from trainer.errors import ConfigError
from trainer.models.rnn import RecurrentConfig, make_rnn_layer

BASE = RecurrentConfig(units=4, bidirectional=False)

# (cell, overrides, expected reasons; [] means eligible)
TABLE = [
    ("lstm", {}, []),
    ("gru", {}, []),
    ("lstm", {"activation": "relu"}, ["activation=relu (needs tanh)"]),
    ("gru", {"recurrent_activation": "hard_sigmoid"},
     ["recurrent_activation=hard_sigmoid (needs sigmoid)"]),
    ("lstm", {"recurrent_dropout": 0.1}, ["recurrent_dropout=0.1 (needs 0)"]),
    ("lstm", {"unroll": True}, ["unroll=true (needs false)"]),
    ("gru", {"use_bias": False}, ["use_bias=false (needs true)"]),
    ("gru", {"reset_after": False}, ["reset_after=false (GRU needs true)"]),
    ("lstm", {"use_cudnn": False}, ["use_cudnn=false"]),
    ("lstm", {"activation": "relu", "unroll": True, "recurrent_dropout": 0.2},
     ["activation=relu (needs tanh)", "recurrent_dropout=0.2 (needs 0)", "unroll=true (needs false)"]),
    ("simple_rnn", {}, ["SimpleRNN has no cuDNN kernel (only LSTM and GRU do)"]),
    ("lstm", {"reset_after": False}, []),  # reset_after only matters for GRU
]


@pytest.mark.parametrize("cell,overrides,expected", TABLE)
def test_eligibility_table(cell, overrides, expected):
    cfg = dataclasses.replace(BASE, cell=cell, **overrides)
    layer = make_rnn_layer(cfg, return_sequences=False, name="rnn")
    assert kernels.ineligibility_reasons(layer) == expected


def test_left_padding_is_reported():
    layer = make_rnn_layer(BASE)
    assert kernels.ineligibility_reasons(layer, padding="left") == [
        "inputs are left-padded (needs right padding or no mask)"]


def test_report_walks_bidirectional_and_stacks():
    cfg = dataclasses.replace(BASE, bidirectional=True, layers=2, recurrent_dropout=0.1)
    from trainer.models.rnn import recurrent_stack
    inp = keras.Input((5, 3))
    model = keras.Model(inp, recurrent_stack(inp, cfg, name="enc"))
    report = kernels.cudnn_report(model)
    assert [r["layer"] for r in report] == [
        "enc_bi_0/forward", "enc_bi_0/backward", "enc_bi_1/forward", "enc_bi_1/backward"]
    assert all(r["reasons"] == ["recurrent_dropout=0.1 (needs 0)"] for r in report)
    assert "NOT eligible" in kernels.format_report(report)


def test_forced_cudnn_with_an_ineligible_layer_is_an_error():
    cfg = dataclasses.replace(BASE, use_cudnn=True, recurrent_dropout=0.1)
    layer = make_rnn_layer(cfg, name="rnn")
    report = [{"layer": "rnn", "type": "LSTM", "eligible": False,
               "reasons": kernels.ineligibility_reasons(layer)}]
    with pytest.raises(ConfigError, match="model.use_cudnn=true.*recurrent_dropout=0.1"):
        kernels.check_forced_cudnn(report, cfg)
    kernels.check_forced_cudnn(report, dataclasses.replace(cfg, use_cudnn="auto"))


def test_check_command_reports_each_layer(run_cli):
    out = run_cli("check", "--set", "model.recurrent_dropout=0.1", "--set", "model.units=4").stdout
    assert "encoder_bi_0/forward" in out and "NOT eligible: recurrent_dropout=0.1 (needs 0)" in out
    ok = run_cli("check", "--set", "model.units=4").stdout
    assert ok.count("cuDNN eligible") == 2


def test_use_cudnn_true_with_recurrent_dropout_is_rejected_before_training(run_cli, tmp_path):
    proc = run_cli("train", "--model-dir", str(tmp_path / "run"), "--set", "model.use_cudnn=true",
                   "--set", "model.recurrent_dropout=0.2", "--set", "model.units=4", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "model.use_cudnn=true" in proc.stderr and "recurrent_dropout=0.2" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_stateful_under_mixed_float16_is_refused():
    @dataclasses.dataclass(frozen=True)
    class StatefulModel(RecurrentConfig):
        stateful: bool = True

    cfg = dataclasses.replace(experiment.default_config("text_classification"),
                              model=StatefulModel(),
                              runtime=config_lib.RuntimeConfig(precision="mixed_float16"))
    with pytest.raises(ConfigError, match="stateful RNN under runtime.precision=mixed_float16"):
        precision.check_compatible(cfg)


ELIGIBLE = [{"layer": "enc/forward", "type": "LSTM", "eligible": True, "reasons": []}]
GENERIC = [{"layer": "rnn", "type": "SimpleRNN", "eligible": False,
            "reasons": ["SimpleRNN has no cuDNN kernel (only LSTM and GRU do)"]}]


@pytest.mark.parametrize("setting,report,xla_on_cpu,gpu,tpu,expected", [
    ("auto", ELIGIBLE, True, False, False, True),    # CPU, task measured faster with XLA
    ("auto", ELIGIBLE, False, False, False, False),  # CPU, task measured slower with XLA
    ("auto", ELIGIBLE, True, True, False, False),    # GPU: cuDNN, which XLA cannot compile
    ("auto", GENERIC, True, True, False, False),     # GPU, no cuDNN layer: not measured, off
    ("auto", ELIGIBLE, True, False, True, False),    # TPU compiles the step itself
    (True, ELIGIBLE, False, False, False, True),     # explicit wins on CPU
    (False, ELIGIBLE, True, False, False, False),
    (True, GENERIC, False, True, False, True),       # GPU, generic kernel: compilable
    (False, ELIGIBLE, True, True, False, False),
])
def test_jit_compile_resolution(monkeypatch, setting, report, xla_on_cpu, gpu, tpu, expected):
    import tensorflow as tf

    if gpu:  # this machine has no GPU: present one logical GPU to the resolver
        monkeypatch.setattr(tf.config, "list_logical_devices",
                            lambda kind=None: ["/device:GPU:0"] if kind == "GPU" else [])
    jit, why = loop.resolve_jit_compile(setting, report, xla_on_cpu=xla_on_cpu, on_tpu=tpu)
    assert jit is expected and why


def test_jit_compile_true_next_to_cudnn_on_gpu_is_refused(monkeypatch):
    import tensorflow as tf

    monkeypatch.setattr(tf.config, "list_logical_devices",
                        lambda kind=None: ["/device:GPU:0"] if kind == "GPU" else [])
    with pytest.raises(ConfigError, match="XLA cannot compile.*enc/forward.*use_cudnn=false"):
        loop.resolve_jit_compile(True, ELIGIBLE, xla_on_cpu=True, on_tpu=False)


@pytest.mark.parametrize("task,expected", [("text_classification", "no"), ("translation", "yes")])
def test_check_reports_the_xla_decision(run_cli, task, expected):
    out = run_cli("check", "--task", task, "--set", "model.units=4").stdout
    assert f"XLA-compiled step on this machine: {expected} (auto:" in out
