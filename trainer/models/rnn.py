"""Recurrent building blocks shared by every task's model.

The options mirror Keras' LSTM/GRU/SimpleRNN arguments. The defaults keep
LSTM and GRU eligible for the fused cuDNN kernel on a GPU (see
`trainer/kernels.py` for the eligibility report).
"""

from __future__ import annotations

import keras

from trainer.models.configs import RecurrentConfig
from trainer.models.fused_gru import FusedGRU
from trainer.models.fused_lstm import FusedLSTM
from trainer.models.fused_simple_rnn import FusedSimpleRNN


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
