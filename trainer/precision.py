"""The mixed-precision (dtype) policy: set it once, refuse known-bad combinations.

Which recurrent kernel or loop each layer runs (cuDNN eligibility, the fused
CPU loops, `seqtrain check`) is trainer/kernels.py; whether the step is
XLA-compiled is decided beside the step builder (trainer/loop.py).
"""

from __future__ import annotations

import keras

from trainer.errors import ConfigError


def set_policy(precision: str) -> None:
    """Sets the global Keras dtype policy. Call once, before building models."""
    keras.mixed_precision.set_global_policy(precision)


def check_compatible(config) -> None:
    """Refuses known-bad combinations before training starts."""
    model = config.model
    if config.runtime.precision == "mixed_float16" and getattr(model, "stateful", False):
        raise ConfigError(
            "a stateful RNN under runtime.precision=mixed_float16 fails in several Keras "
            "versions (keras-team/keras#20605). Use runtime.precision=float32 or "
            "mixed_bfloat16, or model.stateful=false."
        )
