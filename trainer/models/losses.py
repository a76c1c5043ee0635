"""Losses the sequence tasks share."""

from __future__ import annotations

import tensorflow as tf


def masked_token_cross_entropy(logits, labels, pad_id: int):
    """Cross-entropy per target position [B, T], and the mask of real (non-`pad_id`) tokens.

    Computed as one_hot * log_softmax in float32 rather than with the sparse op:
    the same numbers on every device and under op determinism (exact resume).
    """
    logits = tf.cast(logits, tf.float32)
    onehot = tf.one_hot(labels, tf.shape(logits)[-1], dtype=tf.float32)
    token_loss = -tf.reduce_sum(onehot * tf.nn.log_softmax(logits), axis=-1)
    return token_loss, tf.cast(tf.not_equal(labels, pad_id), tf.float32)
