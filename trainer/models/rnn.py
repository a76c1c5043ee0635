"""Recurrent building blocks shared by every task's model.

The options mirror Keras' LSTM/GRU/SimpleRNN arguments. The defaults keep
LSTM and GRU eligible for the fused cuDNN kernel on a GPU (see
`trainer/precision.py` for the eligibility report).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import keras

from trainer.config import field
from trainer.errors import ConfigError
from trainer.models.fused_gru import FusedGRU
from trainer.models.fused_lstm import FusedLSTM
from trainer.models.fused_simple_rnn import FusedSimpleRNN


@dataclasses.dataclass(frozen=True)
class RecurrentConfig:
    """Options of a (stacked, optionally bidirectional) recurrent encoder."""

    cell: Literal["lstm", "gru", "simple_rnn"] = field("lstm", "Recurrent cell type.")
    units: int = field(64, "Units per recurrent layer (per direction).", min=1)
    layers: int = field(1, "Stacked recurrent layers.", min=1)
    bidirectional: bool = field(True, "Wrap each recurrent layer in Bidirectional.")
    dropout: float = field(0.0, "Dropout on recurrent-layer inputs and before the head.", min=0)
    recurrent_dropout: float = field(
        0.0, "Dropout on the recurrent state. > 0 disables the cuDNN kernel.", min=0
    )
    activation: str = field("tanh", "Cell activation. cuDNN needs tanh.")
    recurrent_activation: str = field(
        "sigmoid", "Gate activation (lstm/gru). cuDNN needs sigmoid."
    )
    use_bias: bool = field(True, "Use bias vectors. cuDNN needs true.")
    unroll: bool = field(False, "Unroll the time loop. cuDNN needs false.")
    reset_after: bool = field(True, "GRU reset-gate convention. cuDNN needs true.")
    use_cudnn: bool | Literal["auto"] = field(
        "auto",
        "auto: fused kernel when eligible; true: error if ineligible; false: never.",
    )
    cpu_kernel: Literal["fused", "keras"] = field(
        "fused",
        "Training loop of every cell on hosts without GPU/TPU. fused: seqtrain's loop "
        "(whole-sequence input projection and weight gradients; same math and weights); "
        "keras: Keras' loop.",
    )

    def validate(self, path: str) -> None:
        for name in ("dropout", "recurrent_dropout"):
            rate = getattr(self, name)
            if not 0.0 <= rate < 1.0:
                raise ConfigError(f"{path}.{name} must be in [0, 1), got {rate}.")
        for name in ("activation", "recurrent_activation"):
            try:
                keras.activations.get(getattr(self, name))
            except ValueError:
                raise ConfigError(
                    f"{path}.{name}={getattr(self, name)!r} is not a Keras activation "
                    "(for example tanh, sigmoid, relu)."
                ) from None


def make_rnn_layer(
    cfg: RecurrentConfig,
    *,
    units: int | None = None,
    return_sequences: bool = False,
    return_state: bool = False,
    stateful: bool = False,
    name: str | None = None,
) -> keras.layers.Layer:
    """One Keras recurrent layer (not wrapped in Bidirectional)."""
    kwargs = dict(
        units=units or cfg.units,
        activation=cfg.activation,
        use_bias=cfg.use_bias,
        dropout=cfg.dropout,
        recurrent_dropout=cfg.recurrent_dropout,
        return_sequences=return_sequences,
        return_state=return_state,
        stateful=stateful,
        unroll=cfg.unroll,
        name=name,
    )
    fused = cfg.cpu_kernel == "fused"
    if cfg.cell == "lstm":
        lstm = FusedLSTM if fused else keras.layers.LSTM
        return lstm(
            recurrent_activation=cfg.recurrent_activation, use_cudnn=cfg.use_cudnn, **kwargs
        )
    if cfg.cell == "gru":
        gru = FusedGRU if fused else keras.layers.GRU
        return gru(
            recurrent_activation=cfg.recurrent_activation,
            reset_after=cfg.reset_after,
            use_cudnn=cfg.use_cudnn,
            **kwargs,
        )
    return (FusedSimpleRNN if fused else keras.layers.SimpleRNN)(**kwargs)


def recurrent_stack(x, cfg: RecurrentConfig, *, return_sequences: bool = False, name: str = "rnn"):
    """Applies `cfg.layers` stacked recurrent layers to `x` (functional API).

    Every layer but the last returns sequences; the last returns sequences
    only if `return_sequences`. Keras propagates the input mask through.
    """
    for i in range(cfg.layers):
        seq = return_sequences or i < cfg.layers - 1
        layer = make_rnn_layer(cfg, return_sequences=seq, name=f"{name}_{cfg.cell}_{i}")
        if cfg.bidirectional:
            layer = keras.layers.Bidirectional(layer, name=f"{name}_bi_{i}")
        x = layer(x)
    return x
