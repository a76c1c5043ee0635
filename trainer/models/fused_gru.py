"""A fused GRU time loop for training on CPU, organised like `fused_lstm.py`.

The input projection `X @ W` of all timesteps is one matmul before the loop;
the loop does only `h @ U`, the biases and the gate arithmetic and saves the
gates; a hand-written gradient runs the loop backwards doing only the `@ U^T`
products, then gets `dU` and the bias gradients from all timesteps at once.
Both of Keras' conventions are implemented:

- `reset_after=True` (Keras' default, cuDNN's): `hh = tanh(x_h + r * (h @ U_h + b_rh))`,
  bias of shape [2, 3U] (input row, recurrent row);
- `reset_after=False`: `hh = tanh(x_h + (r * h) @ U_h)`, bias of shape [3U].

Gate order (z, r, h), activations and weight layout are `keras.layers.GRU`'s,
so checkpoints do not depend on which loop trained them.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from trainer.models.fused import (TRACES, FusedLoop, batch_major, bias_or_zeros, column_sums,
                                   input_projection, mask_placeholder)


def gru_sequence(zx, h0, recurrent_kernel, recurrent_bias=None, mask=None,
                 zero_output_for_mask=False, reset_after=True, input_bias=None):
    """Runs the GRU recurrence over precomputed input projections.

    Masked timesteps keep the previous state, like Keras' loop.

    Args:
      zx: [T, B, 3U] time-major `x_t @ W` (gate order z, r, h).
      h0: [B, U] initial state.
      recurrent_kernel: [U, 3U].
      recurrent_bias: None or [3U], added to `h @ U` (reset_after only).
      mask: None or a [T, B, 1] tensor of 0/1 in zx's dtype.
      zero_output_for_mask: masked timesteps output zeros instead of the
        previous output.
      reset_after: the reset gate multiplies `h @ U_h` (True) or `h` (False).
      input_bias: None or the [3U] input bias, added to `zx[t]` in the loop.

    Returns:
      (outputs [T, B, U], h_T).
    """
    masked = mask is not None
    has_rb = recurrent_bias is not None
    if has_rb and not reset_after:
        raise ValueError("recurrent_bias applies only with reset_after=True")

    @tf.custom_gradient
    def run(zx, h0, rk, rb, b_in, mask):
        TRACES["gru"] += 1
        steps = tf.shape(zx)[0]
        units = tf.shape(h0)[1]
        rk_zr, rk_h = rk[:, :2 * units], rk[:, 2 * units:]
        arrays = [tf.TensorArray(zx.dtype, size=steps) for _ in range(3 if masked else 2)]

        def body(t, h, y, arrays):
            x_zr, x_h = tf.split(zx[t] + b_in, [2 * units, units], axis=1)
            if reset_after:
                m = tf.matmul(h, rk)
                if has_rb:
                    m += rb
                m_zr, m_h = tf.split(m, [2 * units, units], axis=1)
                zr = tf.sigmoid(x_zr + m_zr)
                z, r = tf.split(zr, 2, axis=1)
                hh = tf.tanh(x_h + r * m_h)
                gates = tf.concat([zr, hh, m_h], 1)
            else:
                zr = tf.sigmoid(x_zr + tf.matmul(h, rk_zr))
                z, r = tf.split(zr, 2, axis=1)
                hh = tf.tanh(x_h + tf.matmul(r * h, rk_h))
                gates = tf.concat([zr, hh], 1)
            h_new = hh + z * (h - hh)
            if masked:
                keep = mask[t] > 0
                y = tf.where(keep, h_new, tf.zeros_like(h_new) if zero_output_for_mask else y)
                h_new = tf.where(keep, h_new, h)
            else:
                y = h_new
            saved = (gates, y) + ((h_new,) if masked else ())
            return t + 1, h_new, y, [a.write(t, v) for a, v in zip(arrays, saved)]

        _, h_last, _, arrays = tf.while_loop(
            lambda t, *_: t < steps, body, (0, h0, tf.zeros_like(h0), arrays))
        gates, ys = arrays[0].stack(), arrays[1].stack()
        hs = arrays[2].stack() if masked else ys
        for v in (ys, hs):  # stack() loses the static time dimension
            v.set_shape(zx.shape[:1].concatenate(h0.shape))

        def grad(d_ys, d_h_last):
            TRACES["gru_grad"] += 1
            h_prev_all = tf.concat([h0[None], hs[:-1]], 0)
            d_zx_array = tf.TensorArray(zx.dtype, size=steps)

            def back(t, d_h, d_y, d_zx_array):
                if reset_after:
                    zr, hh, m_h = tf.split(gates[t], [2 * units, units, units], axis=1)
                else:
                    zr, hh = tf.split(gates[t], [2 * units, units], axis=1)
                z, r = tf.split(zr, 2, axis=1)
                h_prev = h_prev_all[t]
                if masked:  # a masked step passes d_h (and d_y) through to t - 1
                    m = mask[t]
                    g_y = d_ys[t] + d_y
                    d_h_new, d_h_carry = m * (g_y + d_h), (1 - m) * d_h
                    d_y = tf.zeros_like(d_y) if zero_output_for_mask else (1 - m) * g_y
                else:
                    d_h_new = d_ys[t] + d_h
                d_a_h = d_h_new * (1 - z) * (1 - hh * hh)
                if reset_after:
                    d_zr = tf.concat([d_h_new * (h_prev - hh), d_a_h * m_h], 1) * zr * (1 - zr)
                    d_m = tf.concat([d_zr, d_a_h * r], 1)
                    d_h = d_h_new * z + tf.matmul(d_m, rk, transpose_b=True)
                else:
                    d_rh = tf.matmul(d_a_h, rk_h, transpose_b=True)
                    d_zr = tf.concat([d_h_new * (h_prev - hh), d_rh * h_prev], 1) * zr * (1 - zr)
                    d_h = d_h_new * z + d_rh * r + tf.matmul(d_zr, rk_zr, transpose_b=True)
                if masked:
                    d_h += d_h_carry
                return t - 1, d_h, d_y, d_zx_array.write(t, tf.concat([d_zr, d_a_h], 1))

            _, d_h0, _, d_zx_array = tf.while_loop(
                lambda t, *_: t >= 0, back,
                (steps - 1, d_h_last, tf.zeros_like(h0), d_zx_array))
            d_zx = d_zx_array.stack()
            # Weight gradients from all timesteps at once.
            d_zr_all, d_a_h_all = tf.split(d_zx, [2 * units, units], axis=2)
            r_all = gates[:, :, units:2 * units]
            flat = lambda v: tf.reshape(v, [-1, tf.shape(v)[2]])  # noqa: E731
            if reset_after:
                d_m_all = tf.concat([d_zr_all, d_a_h_all * r_all], 2)
                d_rk = tf.matmul(flat(h_prev_all), flat(d_m_all), transpose_a=True)
                d_rb = column_sums(d_m_all) if has_rb else tf.zeros_like(rb)
            else:
                d_rk = tf.concat([
                    tf.matmul(flat(h_prev_all), flat(d_zr_all), transpose_a=True),
                    tf.matmul(flat(r_all * h_prev_all), flat(d_a_h_all), transpose_a=True)], 1)
                d_rb = tf.zeros_like(rb)
            return d_zx, d_h0, d_rk, d_rb, column_sums(d_zx), tf.zeros_like(mask)

        return (ys, h_last), grad

    rb = recurrent_bias if has_rb else tf.zeros([0], zx.dtype)
    return run(zx, h0, recurrent_kernel, rb, bias_or_zeros(input_bias, zx),
               mask_placeholder(mask, zx.dtype))


@keras.saving.register_keras_serializable(package="seqtrain")
class FusedGRU(FusedLoop, keras.layers.GRU):
    """`keras.layers.GRU` that trains through `gru_sequence` on CPU-only hosts.

    Falls back to Keras' own loop (cuDNN when eligible) when a GPU or TPU is
    visible, and for options the fused loop does not implement: activations
    other than tanh/sigmoid, recurrent dropout, unroll, and input dropout
    with `implementation=1` (three separate masks).
    """

    def fusable(self) -> bool:
        """The layer's options are ones `gru_sequence` implements."""
        cell = self.cell
        return (not self.unroll and not cell.recurrent_dropout
                and not (cell.dropout and cell.implementation == 1)
                and cell.activation is keras.activations.tanh
                and cell.recurrent_activation is keras.activations.sigmoid)

    def fused_loop(self, sequences, initial_state, mask, training):
        cell = self.cell
        input_bias = recurrent_bias = None
        if cell.use_bias:
            if cell.reset_after:
                input_bias, recurrent_bias = cell.bias[0], cell.bias[1]
            else:
                input_bias = cell.bias
        zx, mask = input_projection(self, sequences, mask, training)
        h0 = initial_state[0] if isinstance(initial_state, (list, tuple)) else initial_state
        ys, h = gru_sequence(
            zx, h0, tf.cast(cell.recurrent_kernel, zx.dtype),
            None if recurrent_bias is None else tf.cast(recurrent_bias, zx.dtype),
            mask, self.zero_output_for_mask, cell.reset_after, input_bias)
        return (*batch_major(ys), [h])
