"""What the fused CPU loops (LSTM, GRU, SimpleRNN) share.

Each fused layer is the Keras layer it subclasses, with `inner_loop`
replaced on hosts without a GPU or TPU. The pieces here are the same for all
three: where they run, the whole-sequence input projection before the loop,
and `TRACES`, the record of which loop actually ran.
"""

from __future__ import annotations

import collections

import tensorflow as tf

# How many times each fused loop's Python body ran, by name ("lstm",
# "lstm_grad", "gru", "gru_grad", "simple_rnn", "simple_rnn_grad"). The body
# runs once per eager call and once per trace inside a tf.function, and the
# `_grad` entries count the hand-written backward pass the same way. Tests
# read it to assert that the fused kernel ran, not Keras' loop.
TRACES: collections.Counter = collections.Counter()


def cpu_only() -> bool:
    """No GPU or TPU is visible: the fused loops replace Keras' loop."""
    return not (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def input_projection(layer, sequences, mask, training):
    """Time-major `x_t @ W` for all timesteps (one matmul) and the mask.

    The input bias is added inside each loop instead, where the step's gate
    arithmetic reads `zx[t]` anyway, rather than as a separate pass over
    [T, B, G] (docs/benchmarks.md, "Where a fused step's time goes").

    Applies the cell's input dropout first (one mask per sequence, as Keras'
    loop and its cuDNN path do) and reverses time for `go_backwards`.

    Args:
      layer: the recurrent layer (its `cell` holds `kernel` and `dropout`).
      sequences: [B, T, E] batch-major inputs.
      mask: None, or a [B, T] boolean mask (or a list holding it).
      training: whether dropout applies.

    Returns:
      (zx [T, B, G], mask None or [T, B, 1] of 0/1 in the inputs' dtype).
    """
    if isinstance(mask, (list, tuple)):
        mask = mask[0]
    cell = layer.cell
    dtype = sequences.dtype
    if training and cell.dropout:
        sequences = sequences * cell.get_dropout_mask(sequences[:, 0, :])[:, None, :]
    x = tf.transpose(sequences, [1, 0, 2])
    zx = tf.einsum("tbe,eg->tbg", x, tf.cast(cell.kernel, dtype))
    if mask is not None:
        mask = tf.cast(tf.transpose(mask)[:, :, None], dtype)
    if layer.go_backwards:
        zx = tf.reverse(zx, [0])
        mask = None if mask is None else tf.reverse(mask, [0])
    return zx, mask


def column_sums(d):
    """[..., G] -> [G]: the sums over every leading axis, as one matmul with a row of
    ones (a bias gradient). XLA's CPU reduction of a [T * B, G] tensor runs slower
    than the dot. Accumulates in float32 under mixed precision."""
    wide = d.dtype in (tf.float16, tf.bfloat16)
    flat = tf.reshape(tf.cast(d, tf.float32) if wide else d, [-1, tf.shape(d)[-1]])
    sums = tf.matmul(tf.ones([1, tf.shape(flat)[0]], flat.dtype), flat)[0]
    return tf.cast(sums, d.dtype) if wide else sums


def bias_or_zeros(bias, zx):
    """The bias a loop adds to `zx[t]`, or zeros of its width when there is none."""
    return tf.zeros(tf.shape(zx)[-1:], zx.dtype) if bias is None else tf.cast(bias, zx.dtype)


def mask_placeholder(mask, dtype):
    """custom_gradient functions need tensors: an empty one stands for "no mask"."""
    return tf.zeros([0], dtype) if mask is None else mask


def batch_major(ys):
    """[T, B, U] -> the (last output, [B, T, U] outputs) pair `inner_loop` returns."""
    return ys[-1], tf.transpose(ys, [1, 0, 2])


class FusedLoop:
    """Mixin before a Keras recurrent layer: its `inner_loop` runs the layer's
    `fused_loop` when the layer's options allow it (`fusable`) on a host without a GPU
    or TPU, and Keras' own loop (cuDNN when eligible) otherwise."""

    def fuses(self) -> bool:
        """This call will run the fused loop (options, and a host without GPU/TPU)."""
        return self.fusable() and cpu_only()

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not self.fuses():
            return super().inner_loop(sequences, initial_state, mask, training=training)
        return self.fused_loop(sequences, initial_state, mask, training)
