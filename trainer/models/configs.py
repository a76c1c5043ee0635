"""Config dataclasses of the recurrent model families (no TensorFlow, no Keras).

They are the `model` sections of the task configs (trainer/tasks/configs/), which
`seqtrain config`, `tasks` and `job render` read without importing TensorFlow.
The builders that use them live in trainer/models/rnn.py and seq2seq.py.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from trainer.config import field
from trainer.errors import ConfigError

# keras.activations' built-in names (Keras 3.15), so validating a config needs no Keras
# import; any other name is looked up in Keras itself (custom registered activations).
KERAS_ACTIVATIONS = frozenset((
    "celu elu exponential gelu glu hard_shrink hard_sigmoid hard_silu hard_swish hard_tanh "
    "leaky_relu linear log_sigmoid log_softmax mish relu relu6 selu sigmoid silu soft_shrink "
    "softmax softplus softsign sparse_plus sparse_sigmoid sparsemax squareplus swish tanh "
    "tanh_shrink threshold").split())


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
            if not _is_activation(getattr(self, name)):
                raise ConfigError(
                    f"{path}.{name}={getattr(self, name)!r} is not a Keras activation "
                    "(for example tanh, sigmoid, relu)."
                )


@dataclasses.dataclass(frozen=True)
class Seq2SeqConfig(RecurrentConfig):
    """Encoder-decoder options.

    The shared recurrent options apply to both the encoder and the decoder,
    except `bidirectional`, which applies to the encoder only (its two final
    states are concatenated and projected to the decoder size).
    """

    units: int = field(64, "Units per recurrent layer (encoder per direction, decoder).", min=1)
    bidirectional: bool = field(
        True, "Bidirectional encoder (final states projected to the decoder size); "
        "the decoder is always unidirectional.")
    embedding_dim: int = field(32, "Token embedding size (source and target).", min=1)
    attention: Literal["none", "additive"] = field(
        "additive", "Decoder attention over encoder outputs: none | additive (Bahdanau)."
    )


def _is_activation(name: str) -> bool:
    if name in KERAS_ACTIVATIONS:
        return True
    import keras  # imports TensorFlow; only for names outside the built-in list

    try:
        keras.activations.get(name)
    except ValueError:
        return False
    return True
