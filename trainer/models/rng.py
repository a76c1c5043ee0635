"""The RNG state of a Keras model: what `tf.train.Checkpoint(model=...)` does not save.

Keras 3 keeps each dropout/RNN layer's RNG in a `SeedGenerator` whose state
variable is not part of the model's checkpoint graph; checkpoints track these
variables explicitly (exact resume), and the samplers reseed them.
"""

from __future__ import annotations

import keras


def rng_state_variables(model: keras.Model) -> list:
    """The SeedGenerator state variables of every layer in `model`."""
    seen, out = set(), []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for gen in getattr(layer, "_seed_generators", []) or []:
            state = gen.state
            if id(state) not in seen:
                seen.add(id(state))
                out.append(state)
    return out
