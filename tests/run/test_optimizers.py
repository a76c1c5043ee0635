"""runner.build_optimizer: learning-rate schedules and optimizers against their formulas.

The formulas are written out here in numpy, independently of Keras:
cosine decay (Loshchilov & Hutter 2017) after a linear warmup, Adam with
decoupled weight decay (AdamW, Loshchilov & Hutter 2019) and RMSprop.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from trainer import experiment
from trainer.runner import build_optimizer

LR, STEPS = 0.1, 20


def _optimizer(*overrides):
    cfg = experiment.load(None, None, [f"train.learning_rate={LR}", f"train.steps={STEPS}",
                                       *overrides])
    return build_optimizer(cfg)


def _lr_at(optimizer, step: int) -> float:
    optimizer.iterations.assign(step)
    return float(optimizer.learning_rate)


def _cosine(step, warmup):
    if step < warmup:
        return LR * step / warmup
    return LR * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (STEPS - warmup)))


@pytest.mark.parametrize("overrides,formula", [
    ([], lambda s: LR),
    (["train.lr_schedule=cosine"], lambda s: _cosine(s, 0)),
    (["train.lr_schedule=cosine", "train.warmup_steps=5"], lambda s: _cosine(s, 5)),
    (["train.warmup_steps=5"], lambda s: LR * min(s, 5) / 5),
], ids=["constant", "cosine", "cosine+warmup", "warmup"])
def test_learning_rate_schedules(overrides, formula):
    optimizer = _optimizer(*overrides)
    got = [_lr_at(optimizer, s) for s in range(STEPS + 1)]
    np.testing.assert_allclose(got, [formula(s) for s in range(STEPS + 1)], rtol=1e-5,
                               atol=1e-7)


GRADS = [np.array([0.5, -1.0, 2.0], np.float32), np.array([-0.25, 0.5, 1.0], np.float32),
         np.array([1.0, 1.0, -3.0], np.float32)]
START = np.array([1.0, -2.0, 0.5], np.float32)


def _apply(optimizer) -> list[np.ndarray]:
    var = tf.Variable(START)
    optimizer.build([var])
    out = []
    for g in GRADS:
        optimizer.apply([tf.constant(g)], [var])
        out.append(var.numpy().copy())
    return out


def _adam_reference(weight_decay: float) -> list[np.ndarray]:
    b1, b2, eps = 0.9, 0.999, 1e-7
    x, m, v, out = START.astype(np.float64), 0.0, 0.0, []
    for t, g in enumerate(GRADS, start=1):
        x = x - LR * weight_decay * x  # decoupled: decay the weight, not the gradient
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        x = x - LR * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
        out.append(x.copy())
    return out


def _rmsprop_reference() -> list[np.ndarray]:
    rho, eps = 0.9, 1e-7
    x, v, out = START.astype(np.float64), 0.0, []
    for g in GRADS:
        v = rho * v + (1 - rho) * g * g
        x = x - LR * g / np.sqrt(v + eps)
        out.append(x.copy())
    return out


@pytest.mark.parametrize("name,overrides,reference", [
    ("adam", [], lambda: _adam_reference(0.0)),
    ("adamw", ["train.optimizer=adamw", "train.weight_decay=0.5"], lambda: _adam_reference(0.5)),
    ("rmsprop", ["train.optimizer=rmsprop"], _rmsprop_reference),
])
def test_optimizer_updates_follow_the_formula(name, overrides, reference):
    optimizer = _optimizer(*overrides)
    got, want = _apply(optimizer), reference()
    for step, (g, w) in enumerate(zip(got, want), start=1):
        np.testing.assert_allclose(g, w, rtol=1e-5, err_msg=f"{name} step {step}")
    if name == "adamw":  # the decay is really applied: plain Adam lands elsewhere
        assert np.abs(got[-1] - _adam_reference(0.0)[-1]).max() > 0.1
