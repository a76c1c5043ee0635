"""A fused SimpleRNN time loop for training on CPU, organised like `fused_lstm.py`.

`h_t = tanh(x_t @ W + b + h_{t-1} @ U)`: the input projection of all
timesteps is one matmul before the loop, the loop does only `h @ U`, the bias
and the tanh, and a hand-written gradient runs the loop backwards doing only
`da @ U^T`, then gets `dU` from all timesteps in one matmul. Weights and their
layout are `keras.layers.SimpleRNN`'s.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from trainer.models.fused import (TRACES, FusedLoop, batch_major, bias_or_zeros, column_sums,
                                   input_projection, mask_placeholder)


def simple_rnn_sequence(zx, h0, recurrent_kernel, mask=None, zero_output_for_mask=False,
                        bias=None):
    """Runs the tanh recurrence over precomputed input projections.

    Masked timesteps keep the previous state, like Keras' loop.

    Args:
      zx: [T, B, U] time-major `x_t @ W`.
      h0: [B, U] initial state.
      recurrent_kernel: [U, U].
      mask: None or a [T, B, 1] tensor of 0/1 in zx's dtype.
      zero_output_for_mask: masked timesteps output zeros instead of the
        previous output.
      bias: None or the [U] bias, added to `zx[t]` in the loop.

    Returns:
      (outputs [T, B, U], h_T).
    """
    masked = mask is not None

    @tf.custom_gradient
    def run(zx, h0, rk, b, mask):
        TRACES["simple_rnn"] += 1
        steps = tf.shape(zx)[0]
        arrays = [tf.TensorArray(zx.dtype, size=steps) for _ in range(2 if masked else 1)]

        def body(t, h, y, arrays):
            h_new = tf.tanh(zx[t] + tf.matmul(h, rk) + b)
            if masked:
                keep = mask[t] > 0
                y = tf.where(keep, h_new, tf.zeros_like(h_new) if zero_output_for_mask else y)
                h_new = tf.where(keep, h_new, h)
            else:
                y = h_new
            saved = (y, h_new) if masked else (y,)
            return t + 1, h_new, y, [a.write(t, v) for a, v in zip(arrays, saved)]

        _, h_last, _, arrays = tf.while_loop(
            lambda t, *_: t < steps, body, (0, h0, tf.zeros_like(h0), arrays))
        ys = arrays[0].stack()
        # hs[t] is tanh(...) of step t wherever the mask keeps it (the only
        # steps whose derivative is used).
        hs = arrays[1].stack() if masked else ys
        for v in (ys, hs):  # stack() loses the static time dimension
            v.set_shape(zx.shape[:1].concatenate(h0.shape))

        def grad(d_ys, d_h_last):
            TRACES["simple_rnn_grad"] += 1
            d_a_array = tf.TensorArray(zx.dtype, size=steps)

            def back(t, d_h, d_y, d_a_array):
                if masked:  # a masked step passes d_h (and d_y) through to t - 1
                    m = mask[t]
                    g_y = d_ys[t] + d_y
                    d_h_new, d_h_carry = m * (g_y + d_h), (1 - m) * d_h
                    d_y = tf.zeros_like(d_y) if zero_output_for_mask else (1 - m) * g_y
                else:
                    d_h_new = d_ys[t] + d_h
                h_t = hs[t]
                d_a = d_h_new * (1 - h_t * h_t)
                d_h = tf.matmul(d_a, rk, transpose_b=True)
                if masked:
                    d_h += d_h_carry
                return t - 1, d_h, d_y, d_a_array.write(t, d_a)

            _, d_h0, _, d_a_array = tf.while_loop(
                lambda t, *_: t >= 0, back,
                (steps - 1, d_h_last, tf.zeros_like(h0), d_a_array))
            d_a = d_a_array.stack()
            units = tf.shape(h0)[1]
            h_prev = tf.concat([h0[None], hs[:-1]], 0)
            d_rk = tf.matmul(tf.reshape(h_prev, [-1, units]), tf.reshape(d_a, [-1, units]),
                             transpose_a=True)
            return d_a, d_h0, d_rk, column_sums(d_a), tf.zeros_like(mask)

        return (ys, h_last), grad

    return run(zx, h0, recurrent_kernel, bias_or_zeros(bias, zx),
               mask_placeholder(mask, zx.dtype))


@keras.saving.register_keras_serializable(package="seqtrain")
class FusedSimpleRNN(FusedLoop, keras.layers.SimpleRNN):
    """`keras.layers.SimpleRNN` that trains through `simple_rnn_sequence` on CPU-only hosts.

    Falls back to Keras' own loop when a GPU or TPU is visible, and for
    options the fused loop does not implement: activations other than tanh,
    recurrent dropout, unroll.
    """

    def fusable(self) -> bool:
        """The layer's options are ones `simple_rnn_sequence` implements."""
        cell = self.cell
        return (not self.unroll and not cell.recurrent_dropout
                and cell.activation is keras.activations.tanh)

    def fused_loop(self, sequences, initial_state, mask, training):
        cell = self.cell
        zx, mask = input_projection(self, sequences, mask, training)
        h0 = initial_state[0] if isinstance(initial_state, (list, tuple)) else initial_state
        ys, h = simple_rnn_sequence(zx, h0, tf.cast(cell.recurrent_kernel, zx.dtype), mask,
                                    self.zero_output_for_mask, cell.bias)
        return (*batch_major(ys), [h])
