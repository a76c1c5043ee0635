"""Which kernel or loop each recurrent layer runs, and `seqtrain check`.

Keras 3 LSTM/GRU on the TF backend take the fused cuDNN kernel on a GPU only
when activation=tanh, recurrent_activation=sigmoid, recurrent_dropout=0,
unroll=False, use_bias=True, (GRU) reset_after=True, and the inputs are
unmasked or strictly right-padded. `use_cudnn` can force it on or off. On a
host without GPU/TPU, seqtrain's fused layers (trainer/models/fused_*.py) run
their own CPU loop where they can.
"""

from __future__ import annotations


import keras
import tensorflow as tf

from trainer import registry
from trainer.errors import ConfigError
from trainer.loop import resolve_jit_compile
from trainer.models.fused_gru import FusedGRU
from trainer.models.fused_lstm import FusedLSTM
from trainer.models.fused_simple_rnn import FusedSimpleRNN



def cudnn_report(model: keras.Model, padding: str = "right") -> list[dict]:
    """One entry per recurrent layer: its loop, and is it eligible for the cuDNN kernel.

    `loop` is the loop the layer runs on this machine ("fused", "cudnn" or
    "keras"), decided by the same test the layer's `inner_loop` makes;
    `cpu_loop` is the one it runs on a host without GPU/TPU.

    Args:
      model: a built Keras model.
      padding: how the task pads masked inputs ("right" or "none").
    """
    report = []
    for layer, where in _recurrent_layers(model):
        reasons = ineligibility_reasons(layer, padding)
        fused = isinstance(layer, _FUSED)
        if fused and layer.fuses():
            loop = "fused"
        elif not reasons and tf.config.list_logical_devices("GPU"):
            loop = "cudnn"
        else:
            loop = "keras"
        report.append({
            "layer": where,
            "type": _kind(layer),
            "eligible": not reasons,
            "reasons": reasons,
            "loop": loop,
            # What runs on a host without GPU/TPU (trainer/models/fused_*.py).
            "cpu_loop": "fused" if fused and layer.fusable() else "keras",
        })
    return report


_FUSED = (FusedLSTM, FusedGRU, FusedSimpleRNN)


def ineligibility_reasons(layer, padding: str = "right") -> list[str]:
    """Why `layer` would not take the fused cuDNN kernel (empty list: it would)."""
    kind = _kind(layer)
    if kind not in ("LSTM", "GRU"):
        return [f"{kind} has no cuDNN kernel (only LSTM and GRU do)"]
    cell = layer.cell
    reasons = []
    if getattr(layer, "use_cudnn", "auto") is False:
        reasons.append("use_cudnn=false")
    if _act_name(cell.activation) != "tanh":
        reasons.append(f"activation={_act_name(cell.activation)} (needs tanh)")
    if _act_name(cell.recurrent_activation) != "sigmoid":
        reasons.append(
            f"recurrent_activation={_act_name(cell.recurrent_activation)} (needs sigmoid)"
        )
    if cell.recurrent_dropout:
        reasons.append(f"recurrent_dropout={cell.recurrent_dropout} (needs 0)")
    if layer.unroll:
        reasons.append("unroll=true (needs false)")
    if not cell.use_bias:
        reasons.append("use_bias=false (needs true)")
    if kind == "GRU" and not cell.reset_after:
        reasons.append("reset_after=false (GRU needs true)")
    if padding not in ("right", "none"):
        reasons.append(f"inputs are {padding}-padded (needs right padding or no mask)")
    return reasons


def check_forced_cudnn(report: list[dict], model_config) -> None:
    """`model.use_cudnn=true` with an ineligible layer is an error before training."""
    if getattr(model_config, "use_cudnn", "auto") is not True:
        return
    bad = [r for r in report if not r["eligible"]]
    if bad:
        details = "; ".join(f"{r['layer']}: {', '.join(r['reasons'])}" for r in bad)
        raise ConfigError(
            f"model.use_cudnn=true but these layers cannot use the cuDNN kernel: {details}. "
            "Change those options, or set model.use_cudnn=auto to fall back silently."
        )


def format_report(report: list[dict]) -> str:
    if not report:
        return "no recurrent layers"
    lines = []
    for r in report:
        status = "cuDNN eligible" if r["eligible"] else "NOT eligible: " + "; ".join(r["reasons"])
        cpu = "" if r["loop"] == r["cpu_loop"] else f" ({r['cpu_loop']} on a CPU-only host)"
        lines.append(f"{r['layer']:<40} {r['type']:<10} loop {r['loop']:<6} {status}{cpu}")
    return "\n".join(lines)


# `seqtrain check`: the report of a configured model, without training.


def cudnn_report_for(config) -> list[dict]:
    """Builds the configured model (on the default strategy) and reports each RNN layer."""
    task = registry.get(config.task.name)(config)
    task.prepare()
    model = task.build_model()
    report = cudnn_report(model, task.padding)
    return report


def report_text(config) -> str:
    report = cudnn_report_for(config)
    lines = [f"task {config.task.name}: per recurrent layer, the training loop that runs on "
             "this machine (fused: seqtrain's CPU loop, model.cpu_kernel; cudnn; keras: Keras' "
             "generic loop) and the cuDNN fast path eligibility (applies on GPU)",
             format_report(report)]
    if config.model.use_cudnn is True and any(not r["eligible"] for r in report):
        lines.append("model.use_cudnn=true: `seqtrain train` will refuse this config.")
    task_cls = registry.get(config.task.name)
    try:
        jit, why = resolve_jit_compile(
            config.runtime.jit_compile, report, xla_on_cpu=task_cls.xla_on_cpu, on_tpu=False)
        lines.append(f"XLA-compiled step on this machine: {'yes' if jit else 'no'} ({why})")
    except ConfigError as e:
        lines.append(f"`seqtrain train` will refuse this config on this machine: {e}")
    return "\n".join(lines)


def _recurrent_layers(model):
    """(layer, path) for every RNN layer, looking inside Bidirectional wrappers."""
    for layer in _walk(model):
        if isinstance(layer, keras.layers.Bidirectional):
            yield layer.forward_layer, f"{layer.name}/forward"
            yield layer.backward_layer, f"{layer.name}/backward"
        elif isinstance(layer, keras.layers.RNN):
            yield layer, layer.name


def _walk(layer):
    for sub in getattr(layer, "layers", []) or []:
        if isinstance(sub, (keras.layers.Bidirectional, keras.layers.RNN)):
            yield sub
        else:
            yield from _walk(sub)


def _kind(layer) -> str:
    """The Keras layer type (FusedLSTM is an LSTM, and so on)."""
    for base in (keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN):
        if isinstance(layer, base):
            return base.__name__
    return type(layer).__name__


def _act_name(fn) -> str:
    return getattr(fn, "__name__", str(fn))
