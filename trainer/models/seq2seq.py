"""Recurrent encoder-decoder with optional additive attention, greedy decoding, serving.

Training runs the decoder with teacher forcing over the whole target. Decoding
runs the same weights one step at a time: `greedy_decode` is a batched
`tf.while_loop` that stops per sequence at END and overall when every
sequence has ended or at `max_length`.

Padding is PAD (0) on the right only. Masks are passed explicitly to every
recurrent layer and to the attention, so padded positions never change the
outputs at real positions, and LSTM/GRU stay eligible for cuDNN.

The serving graph that the translation task exports is `Translator` in
trainer/serving/translator.py.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from trainer.data.parallel import END, PAD, START
from trainer.models.configs import Seq2SeqConfig  # noqa: F401  (re-exported)
from trainer.models.rnn import make_rnn_layer


class Seq2Seq(keras.Model):
    """Encoder-decoder. `call({"source", "target_in"})` returns float32 logits."""

    def __init__(self, cfg: Seq2SeqConfig, source_vocab_size: int, target_vocab_size: int,
                 **kwargs):
        super().__init__(name="seq2seq", **kwargs)
        self.cfg = cfg
        self.source_embedding = keras.layers.Embedding(
            source_vocab_size, cfg.embedding_dim, name="source_embedding")
        self.target_embedding = keras.layers.Embedding(
            target_vocab_size, cfg.embedding_dim, name="target_embedding")
        # Layers are direct attributes, not lists: tf.train.Checkpoint does not see
        # layers inside the lists Keras 3 tracks (their weights would be missing
        # from checkpoints while assert_existing_objects_matched still passes).
        for i in range(cfg.layers):
            layer = make_rnn_layer(cfg, return_sequences=True, return_state=True,
                                   name=f"encoder_{cfg.cell}_{i}")
            if cfg.bidirectional:
                layer = keras.layers.Bidirectional(layer, name=f"encoder_bi_{i}")
                for part in self._state_names():
                    setattr(self, f"bridge_{i}_{part}",
                            keras.layers.Dense(cfg.units, name=f"bridge_{i}_{part}"))
            setattr(self, f"encoder_{i}", layer)
            setattr(self, f"decoder_{i}", make_rnn_layer(
                cfg, return_sequences=True, return_state=True, name=f"decoder_{cfg.cell}_{i}"))
        if cfg.attention == "additive":
            self.attention_query = keras.layers.Dense(
                cfg.units, use_bias=False, name="attention_query")
            self.attention_key = keras.layers.Dense(
                cfg.units, use_bias=False, name="attention_key")
            self.attention = keras.layers.AdditiveAttention(name="attention")
            self.attention_output = keras.layers.Dense(
                cfg.units, activation="tanh", name="attention_output")
        self.head_dropout = keras.layers.Dropout(cfg.dropout, name="head_dropout")
        self.logits = keras.layers.Dense(target_vocab_size, dtype="float32", name="logits")

    def _state_names(self) -> tuple[str, ...]:
        return ("h", "c") if self.cfg.cell == "lstm" else ("h",)

    @property
    def encoder_layers(self) -> list:
        return [getattr(self, f"encoder_{i}") for i in range(self.cfg.layers)]

    @property
    def decoder_layers(self) -> list:
        return [getattr(self, f"decoder_{i}") for i in range(self.cfg.layers)]

    def _bridges(self, i: int) -> list:
        return [getattr(self, f"bridge_{i}_{part}") for part in self._state_names()]

    def build_for(self, source_length: int, target_length: int) -> "Seq2Seq":
        """Creates every variable by one call on dummy inputs (the loop needs them up front)."""
        self({"source": tf.ones([1, source_length], tf.int32),
              "target_in": tf.ones([1, target_length], tf.int32)})
        return self

    # ---- training path (teacher forcing) ------------------------------------

    def call(self, inputs, training=False):
        logits, _ = self.forward(inputs["source"], inputs["target_in"], training=training)
        return logits

    def forward(self, source, target_in, training=False):
        """Teacher-forced logits [B, T, V] (float32) and attention [B, T, S] or None."""
        memory = self.encode(source, training=training)
        target_mask = tf.not_equal(target_in, PAD)
        x = self.target_embedding(target_in)
        for layer, state in zip(self.decoder_layers, memory["states"]):
            x = layer(x, initial_state=state, mask=target_mask, training=training)[0]
        return self._head(x, memory, target_mask, training)

    def encode(self, source, training=False) -> dict:
        """Encoder outputs, attention keys, source mask and per-layer decoder initial states."""
        mask = tf.not_equal(source, PAD)
        x = self.source_embedding(source)
        states = []
        for i, layer in enumerate(self.encoder_layers):
            x, *state = layer(x, mask=mask, training=training)
            if self.cfg.bidirectional:
                half = len(state) // 2
                state = [
                    bridge(tf.concat([fw, bw], axis=-1))
                    for bridge, fw, bw in zip(self._bridges(i), state[:half], state[half:])
                ]
            states.append(list(state))
        memory = {"outputs": x, "mask": mask, "states": states}
        if self.cfg.attention == "additive":
            memory["keys"] = self.attention_key(x)
        return memory

    def _head(self, x, memory, query_mask, training):
        attention = None
        if self.cfg.attention == "additive":
            context, attention = self.attention(
                [self.attention_query(x), memory["outputs"], memory["keys"]],
                mask=[query_mask, memory["mask"]],
                return_attention_scores=True,
            )
            x = self.attention_output(tf.concat([x, tf.cast(context, x.dtype)], axis=-1))
            attention = tf.cast(attention, tf.float32)
        x = self.head_dropout(x, training=training)
        return self.logits(x), attention

    # ---- inference path (one step at a time) ---------------------------------

    def decode_step(self, tokens, states, memory):
        """One decoder step for a batch: tokens [B] -> logits [B, V], states, attention [B, S]."""
        x = self.target_embedding(tokens)
        new_states = []
        for layer, state in zip(self.decoder_layers, states):
            x, state = layer.cell(x, state, training=False)
            new_states.append(list(state))
        logits, attention = self._head(x[:, None, :], memory, None, training=False)
        return logits[:, 0], new_states, None if attention is None else attention[:, 0]

    def greedy_decode(self, source, max_length: int):
        """Batched greedy decoding; wrap it in `tf.function` (the loop is a tf.while_loop).

        Args:
          source: int32 [B, S], right-padded with PAD.
          max_length: most tokens generated per sequence, END included.

        Returns:
          ids: int32 [B, L] with L <= max_length; END then PAD after each sequence ends.
          attention: float32 [B, L, S] (zeros without attention).
        """
        memory = self.encode(source, training=False)
        batch = tf.shape(source)[0]
        source_len = tf.shape(source)[1]
        ids = tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[None])
        attn = tf.TensorArray(tf.float32, size=0, dynamic_size=True,
                              element_shape=[None, None])

        def keep_going(t, tokens, states, done, ids, attn):
            return tf.logical_not(tf.reduce_all(done))

        def step(t, tokens, states, done, ids, attn):
            logits, states, weights = self.decode_step(tokens, states, memory)
            next_tokens = greedy_choice(logits)
            next_tokens = tf.where(done, PAD, next_tokens)
            if weights is None:
                weights = tf.zeros([batch, source_len], tf.float32)
            weights = tf.where(done[:, None], 0.0, weights)
            done = tf.logical_or(done, tf.equal(next_tokens, END))
            return t + 1, next_tokens, states, done, ids.write(t, next_tokens), attn.write(t, weights)

        start = tf.fill([batch], START)
        done = tf.zeros([batch], tf.bool)
        _, _, _, _, ids, attn = tf.while_loop(
            keep_going, step, (0, start, memory["states"], done, ids, attn),
            maximum_iterations=max_length,
        )
        return tf.transpose(ids.stack(), [1, 0]), tf.transpose(attn.stack(), [1, 0, 2])


def greedy_choice(logits):
    """Argmax over the vocabulary, never PAD or START (the decoder must not emit them)."""
    allowed = tf.range(tf.shape(logits)[-1]) > START  # PAD=0 and START=1 come first
    return tf.argmax(tf.where(allowed, logits, logits.dtype.min), axis=-1, output_type=tf.int32)
