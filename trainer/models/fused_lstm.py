"""A fused LSTM time loop for training on CPU.

Without cuDNN, `keras.layers.LSTM` runs Keras' generic RNN loop: every
timestep computes `x_t @ W + h @ U`, and TensorFlow differentiates the loop,
so the backward pass also accumulates `dW` and `dU` one small matmul per
timestep. `lstm_sequence` is organised the way the cuDNN kernel is:

- the input projection `X @ W` of all timesteps is one matmul before the
  loop (its gradient gives `dX` and `dW` as whole-sequence matmuls; the bias
  is added in the loop and `db` is one matmul with a row of ones);
- the forward loop only does `h @ U` and the gate arithmetic, and saves the
  gates;
- a hand-written gradient runs the loop backwards doing only `dz @ U^T`, then
  gets `dU` from all timesteps in one matmul.

The math, the weights and their layout are those of `keras.layers.LSTM`, so
checkpoints do not depend on which loop trained them. `FusedLSTM` uses it
only on CPU-only hosts; with a GPU or TPU visible it is Keras' LSTM (cuDNN or
XLA as before). On the 2-core test VM it made seqtrain's text_generation step
(LSTM 256 x 2, 100 timesteps, batch 64) 1.36x faster than `fit` with the stock
layer, from 0.83x before; see `scripts/bench_train.py`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from trainer.models.fused import (TRACES, FusedLoop, batch_major, bias_or_zeros, column_sums,
                                   input_projection, mask_placeholder)


def lstm_sequence(zx, h0, c0, recurrent_kernel, mask=None, zero_output_for_mask=False,
                  bias=None):
    """Runs the LSTM recurrence over precomputed input projections.

    Gate order and activations are Keras' (i, f, c, o; sigmoid gates, tanh
    cell). Masked timesteps keep the previous state, like Keras' loop.

    Args:
      zx: [T, B, 4U] time-major `x_t @ W`.
      h0, c0: [B, U] initial state.
      recurrent_kernel: [U, 4U].
      mask: None or a [T, B, 1] tensor of 0/1 in zx's dtype.
      zero_output_for_mask: masked timesteps output zeros instead of the
        previous output.
      bias: None or the [4U] bias, added to `zx[t]` in the loop.

    Returns:
      (outputs [T, B, U], h_T, c_T).
    """
    masked = mask is not None

    @tf.custom_gradient
    def run(zx, h0, c0, rk, b, mask):
        TRACES["lstm"] += 1
        steps = tf.shape(zx)[0]
        units = tf.shape(h0)[1]
        arrays = [tf.TensorArray(zx.dtype, size=steps) for _ in range(4 if masked else 3)]

        def body(t, h, c, y, arrays):
            z = zx[t] + tf.matmul(h, rk) + b
            z_if, z_g, z_o = tf.split(z, [2 * units, units, units], axis=1)
            s_if = tf.sigmoid(z_if)
            g = tf.tanh(z_g)
            o = tf.sigmoid(z_o)
            i, f = tf.split(s_if, 2, axis=1)
            c_new = f * c + i * g
            h_new = o * tf.tanh(c_new)
            if masked:
                keep = mask[t] > 0
                c_new = tf.where(keep, c_new, c)
                y = tf.where(keep, h_new, tf.zeros_like(h_new) if zero_output_for_mask else y)
                h_new = tf.where(keep, h_new, h)
            else:
                y = h_new
            saved = (tf.concat([s_if, g, o], 1), c_new, y) + ((h_new,) if masked else ())
            return t + 1, h_new, c_new, y, [a.write(t, v) for a, v in zip(arrays, saved)]

        _, h_last, c_last, _, arrays = tf.while_loop(
            lambda t, *_: t < steps, body, (0, h0, c0, tf.zeros_like(h0), arrays))
        gates, cs, ys = (a.stack() for a in arrays[:3])
        hs = arrays[3].stack() if masked else ys
        # TensorArray.stack() loses the static time dimension; layers after
        # this one (TimeDistributed, Reshape) need it.
        for v in (cs, ys, hs):
            v.set_shape(zx.shape[:1].concatenate(h0.shape))

        def grad(d_ys, d_h_last, d_c_last):
            TRACES["lstm_grad"] += 1
            c_prev_all = tf.concat([c0[None], cs[:-1]], 0)
            d_z_array = tf.TensorArray(zx.dtype, size=steps)

            def back(t, d_h, d_c, d_y, d_z_array):
                s_if, g, o = tf.split(gates[t], [2 * units, units, units], axis=1)
                i, f = tf.split(s_if, 2, axis=1)
                if masked:  # a masked step passes d_h, d_c (and d_y) through to t - 1
                    m = mask[t]
                    g_y = d_ys[t] + d_y
                    d_h_new, d_c_new = m * (g_y + d_h), m * d_c
                    d_h_carry, d_c_carry = (1 - m) * d_h, (1 - m) * d_c
                    d_y = tf.zeros_like(d_y) if zero_output_for_mask else (1 - m) * g_y
                else:
                    d_h_new, d_c_new = d_ys[t] + d_h, d_c
                tanh_c = tf.tanh(cs[t])
                d_c_new += d_h_new * o * (1 - tanh_c * tanh_c)
                d_if = tf.concat([d_c_new * g, d_c_new * c_prev_all[t]], 1) * s_if * (1 - s_if)
                d_z = tf.concat([d_if, d_c_new * i * (1 - g * g),
                                 d_h_new * tanh_c * o * (1 - o)], 1)
                d_h = tf.matmul(d_z, rk, transpose_b=True)
                d_c = d_c_new * f
                if masked:
                    d_h, d_c = d_h + d_h_carry, d_c + d_c_carry
                return t - 1, d_h, d_c, d_y, d_z_array.write(t, d_z)

            _, d_h0, d_c0, _, d_z_array = tf.while_loop(
                lambda t, *_: t >= 0, back,
                (steps - 1, d_h_last, d_c_last, tf.zeros_like(h0), d_z_array))
            d_z = d_z_array.stack()
            h_prev = tf.concat([h0[None], hs[:-1]], 0)
            d_rk = tf.matmul(tf.reshape(h_prev, [-1, units]), tf.reshape(d_z, [-1, 4 * units]),
                             transpose_a=True)
            return d_z, d_h0, d_c0, d_rk, column_sums(d_z), tf.zeros_like(mask)

        return (ys, h_last, c_last), grad

    return run(zx, h0, c0, recurrent_kernel, bias_or_zeros(bias, zx),
               mask_placeholder(mask, zx.dtype))


@keras.saving.register_keras_serializable(package="seqtrain")
class FusedLSTM(FusedLoop, keras.layers.LSTM):
    """`keras.layers.LSTM` that trains through `lstm_sequence` on CPU-only hosts.

    Falls back to Keras' own loop (cuDNN when eligible) when a GPU or TPU is
    visible, and for options the fused loop does not implement: activations
    other than tanh/sigmoid, recurrent dropout, unroll.
    """

    def fusable(self) -> bool:
        """The layer's options are ones `lstm_sequence` implements."""
        cell = self.cell
        return (not self.unroll and not cell.recurrent_dropout
                and cell.activation is keras.activations.tanh
                and cell.recurrent_activation is keras.activations.sigmoid)

    def fused_loop(self, sequences, initial_state, mask, training):
        cell = self.cell
        zx, mask = input_projection(self, sequences, mask, training)
        ys, h, c = lstm_sequence(zx, initial_state[0], initial_state[1],
                                 tf.cast(cell.recurrent_kernel, zx.dtype), mask,
                                 self.zero_output_for_mask, cell.bias if cell.use_bias else None)
        return (*batch_major(ys), [h, c])
