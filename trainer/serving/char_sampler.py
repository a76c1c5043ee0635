"""The text_generation export: a stateful character sampler, and `seqtrain generate`.

`CharSampler` is what the task exports as a SavedModel with a `generate`
signature: the prompt runs through the network once to get every layer's
recurrent state; then a `tf.while_loop` feeds one character at a time through
the cells, carrying the states, so each new character costs one cell step.

The character loop runs XLA-compiled, `CHUNK` characters per call (`_draw_chunk`):
one cell step is a few small ops, and outside XLA their per-op overhead is most
of the step's time (scripts/bench_generate.py; figures in docs/benchmarks.md).
Chunks of a fixed size compile once per batch size, whatever `length` is asked.
Draws are Gumbel-max: the loop takes the argmax of the scaled logits plus a
[rows, CHUNK, vocab] block of Gumbel noise made before each chunk from
`tf.random.stateless_uniform` seeded by (seed, chunk start) (`_gumbel_noise`;
XLA has no kernel for the int64-seeded `stateless_categorical`), so a seed
fixes each row's text whatever `length` is asked and however many rows are
drawn together.
"""

from __future__ import annotations

import math
import secrets

import keras
import tensorflow as tf

from trainer.data import chars
from trainer.errors import UserError
from trainer.models.configs import RecurrentConfig
from trainer.models.rng import rng_state_variables
from trainer.serving import inference, metadata

CHUNK = 64  # characters drawn per XLA-compiled call; a call past `length` is cut


class CharSampler(tf.Module):
    """Prompt -> text with the trained weights, one cell step per new character.

    Shares the model's Embedding, recurrent cells and Dense head. `generate`
    and `next_char_logits` take a batch of prompts; shorter prompts are
    right-padded with id 0 and masked, so each row's state is the state after
    its own last character.
    """

    def __init__(self, model: keras.Model, cfg: RecurrentConfig, vocab_chars: str):
        super().__init__(name="char_sampler")
        self.embedding = model.get_layer("embedding")
        self.cells = [model.get_layer(f"rnn_{cfg.cell}_{i}").cell for i in range(cfg.layers)]
        self.head = model.get_layer("logits")
        # Sequence wrappers around the same cells (same weights) for the prompt.
        self.prompt_rnns = [keras.layers.RNN(c, return_sequences=True, return_state=True)
                            for c in self.cells]
        # Keras RNN cells with dropout read their SeedGenerator state even in
        # inference; those variables are outside the model's object graph and
        # must be tracked here or tf.saved_model.save refuses the graph.
        self.seed_states = rng_state_variables(model)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant([ord(c) for c in vocab_chars], tf.int32),
                tf.range(len(vocab_chars), dtype=tf.int32) + chars.OOV_ID + 1),
            default_value=chars.OOV_ID)
        self.id_to_char = tf.constant(["", ""] + list(vocab_chars))
        # Never sample padding or OOV: they have no text.
        self.banned = tf.constant([-1e9, -1e9] + [0.0] * len(vocab_chars), tf.float32)

    def encode(self, prompts):
        """[B] strings -> right-padded ids [B, L + 1].

        One extra padding column keeps an empty prompt well-defined: masked
        steps leave the state alone, so it starts from the initial state.
        """
        cps = tf.strings.unicode_decode(prompts, "UTF-8", errors="replace")
        ids = tf.ragged.map_flat_values(self.table.lookup, cps).to_tensor(chars.PAD_ID)
        return tf.pad(ids, [[0, 0], [0, 1]], constant_values=chars.PAD_ID)

    def prime(self, ids):
        """Runs the prompts once: next-char logits [B, V] and every layer's states."""
        x = self.embedding(ids)
        mask = tf.not_equal(ids, chars.PAD_ID)
        states = []
        for rnn in self.prompt_rnns:
            x, *layer_states = rnn(x, mask=mask)
            states.append(tuple(layer_states))
        # The top layer's first state is its output at each row's last real step.
        return self.head(states[-1][0]), tuple(states)

    def step(self, ids, states):
        """One character per row [B] -> next logits and the new states."""
        # tf.identity drops the Keras mask the Embedding attaches (cells take none).
        x = tf.identity(self.embedding(ids))
        new_states = []
        for cell, layer_states in zip(self.cells, states):
            x, layer_states = cell(x, list(layer_states), training=False)
            new_states.append(tuple(layer_states))
        return self.head(x), tuple(new_states)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="prompts")])
    def next_char_logits(self, prompts):
        logits, _ = self.prime(self.encode(prompts))
        return {"logits": logits}

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name="prompts"),
        tf.TensorSpec([], tf.int32, name="length"),
        tf.TensorSpec([], tf.float32, name="temperature"),
        tf.TensorSpec([], tf.int64, name="seed"),
    ])
    def generate(self, prompts, length, temperature, seed):
        """Prompt + `length` sampled characters per row; the seed fixes the draws."""
        tf.debugging.assert_positive(temperature, message="temperature must be > 0")
        tf.debugging.assert_non_negative(length, message="length must be >= 0")
        logits, states = self.prime(self.encode(prompts))
        batch = tf.shape(prompts)[0]
        chunks = (length + CHUNK - 1) // CHUNK

        def body(c, logits, states, out):
            ids, logits, states = self._draw_chunk(
                self._gumbel_noise(batch, c * CHUNK, seed), logits, states, temperature)
            return c + 1, logits, states, out.write(c, ids)

        out = tf.TensorArray(tf.int32, size=chunks, element_shape=[CHUNK, None])
        _, _, _, out = tf.while_loop(
            lambda c, *_: c < chunks, body, (tf.constant(0), logits, states, out))
        # Concatenating an empty TensorArray needs a static element shape; skip it.
        new_ids = tf.cond(length > 0, lambda: tf.transpose(out.concat()[:length]),
                          lambda: tf.zeros([batch, 0], tf.int32))
        new_text = tf.strings.reduce_join(tf.gather(self.id_to_char, new_ids), axis=1)
        return {"text": tf.strings.join([prompts, new_text])}

    def _gumbel_noise(self, batch, t0, seed):
        """Gumbel noise [B, CHUNK, V] for characters t0 .. t0 + CHUNK - 1, the banned ids
        included: argmax(scaled logits + noise) is a draw from their softmax.

        One block per chunk, seeded by (seed, t0), made outside XLA: TensorFlow's own
        kernels draw and take the logs vectorised, about 6 ns per value on the test
        CPU, where XLA's code took about 30 ns inside the loop's argmax and 115 ns as
        one block. Laid out [B, CHUNK, V], a row's noise does not depend on how many
        rows are drawn with it. The block is B x CHUNK x V floats: 1.6 MB for 64 rows
        of a 100-character vocabulary, 160 MB for 64 rows of 10,000 characters.
        """
        uniform = tf.random.stateless_uniform(
            tf.stack([batch, CHUNK, tf.shape(self.banned)[0]]),
            tf.stack([seed, tf.cast(t0, tf.int64)]), minval=1e-20, maxval=1.0)
        return self.banned - tf.math.log(-tf.math.log(uniform))

    @tf.function(jit_compile=True)
    def _draw_chunk(self, noise, logits, states, temperature):
        """The chunk's characters (ids [CHUNK, B]) given its noise (`_gumbel_noise`),
        then the logits and states after them."""
        def body(i, logits, states, out):
            nxt = tf.argmax(logits / temperature + noise[:, i], axis=1, output_type=tf.int32)
            logits, states = self.step(nxt, states)
            return i + 1, logits, states, out.write(i, nxt)

        out = tf.TensorArray(tf.int32, size=CHUNK, element_shape=[None])
        _, logits, states, out = tf.while_loop(
            lambda i, *_: i < CHUNK, body, (tf.constant(0), logits, states, out))
        return out.stack(), logits, states


# ----------------------------------------------------------------------------
# Library entry point of `seqtrain generate`.
# ----------------------------------------------------------------------------

MAX_CALL_MB = 2048  # what one `generate` call may hold for its rows (noise block, ids)


def _check_call_size(prompts: int, num_samples: int, length: int, vocab_ids: int) -> None:
    """Refuses, before the export is loaded, a call whose rows would need more than
    MAX_CALL_MB: each row holds a CHUNK x vocabulary block of noise (uniform draws and
    Gumbel values, 8 bytes each) and its `length` ids (4 bytes each)."""
    rows = prompts * num_samples
    mb = rows * (CHUNK * vocab_ids * 8 + length * 4) / 2**20
    if mb > MAX_CALL_MB:
        raise UserError(
            f"{prompts} prompt(s) x --num-samples {num_samples} = {rows} samples of --length "
            f"{length} with this model's {vocab_ids}-id vocabulary need about {mb:,.0f} MB in "
            f"one call (at most {MAX_CALL_MB:,} MB). Lower --num-samples or --length, or pass "
            "fewer --prompt values, and run several commands with different --seed values.")


def generate(model_dir: str, prompt: str, length: int, temperature: float,
             seed: int | None = None) -> str:
    """Loads MODEL_DIR/export and returns `prompt` plus `length` sampled characters.

    One sample of `generate_batch`; see there for the arguments and errors.
    """
    return generate_batch(model_dir, [prompt], length, temperature, seed)[0]


FLOAT32_TINY = 1.1754943508222875e-38  # numpy.finfo(numpy.float32).tiny


def generate_batch(model_dir: str, prompts: list[str], length: int, temperature: float,
                   seed: int | None = None, num_samples: int = 1) -> list[str]:
    """Samples `num_samples` continuations of every prompt in one call of the export.

    All rows (each prompt repeated `num_samples` times) go through the
    exported `generate` signature as one batch, so N samples cost about one
    sample's sequential steps, each a wider matmul.

    Args:
      model_dir: a finished text_generation run (local or gs://).
      prompts: starting texts (at least one). An empty one starts from the
        initial state; otherwise each needs at least one character of the
        vocabulary.
      length: characters to generate per sample (>= 0).
      temperature: > 0; lower is more conservative, 1.0 samples the model as is.
      seed: fixes the sampled texts; None draws a fresh random seed.
      num_samples: samples per prompt (>= 1).

    Returns:
      Prompt + new text per row, prompt-major: the samples of prompts[0]
      first.

    Raises:
      UserError: no export, not a text_generation run, bad length/temperature/
        num_samples, a non-empty prompt with no known characters, or a call whose
        rows would hold more than MAX_CALL_MB (`_check_call_size`).
    """
    if isinstance(length, bool) or not isinstance(length, int) or not (
            0 <= length <= inference.MAX_GENERATE_LENGTH):
        raise UserError(f"--length must be an integer from 0 to {inference.MAX_GENERATE_LENGTH}, "
                        f"got {length!r}.")
    # The sampler computes in float32, which flushes subnormal numbers to zero.
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)
            and temperature >= FLOAT32_TINY):
        raise UserError(f"--temperature must be a number > 0 (at least {FLOAT32_TINY:.2g}, the "
                        f"smallest normal float32), got {temperature!r} (for example 0.5 or 1.0).")
    if seed is not None and not 0 <= seed < 2**63:
        raise UserError(f"--seed must be an integer from 0 to 2**63 - 1, got {seed}.")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise UserError(f"--num-samples must be an integer >= 1, got {num_samples!r}.")
    if not prompts:
        raise UserError("no prompt given: pass --prompt TEXT (repeat it for several prompts), "
                        "or --prompt '' to start from the initial state.")
    for prompt in prompts:
        inference.check_utf8(prompt, f"--prompt {prompt.encode('utf-8', 'surrogateescape')!r}")
    export_dir = inference.require(model_dir, "generate", "text_generation")
    meta = metadata.read(export_dir)
    vocab = chars.CharVocab(meta["chars"])
    for prompt in prompts:
        if prompt and vocab.count_known(prompt) == 0:
            sample = "".join(vocab.chars[:40])
            raise UserError(
                f"--prompt {prompt!r} has no character the model knows. Use characters from its "
                f"training corpus, for example {sample!r}.")
    _check_call_size(len(prompts), num_samples, length, vocab.size)
    if seed is None:
        seed = secrets.randbits(63)
    loaded = inference.load_export(export_dir, model_dir)
    rows = [p for p in prompts for _ in range(num_samples)]
    out = loaded.signatures["generate"](
        prompts=tf.constant(rows), length=tf.constant(length, tf.int32),
        temperature=tf.constant(temperature, tf.float32), seed=tf.constant(seed, tf.int64))
    # The signature joins the prompt's own bytes with the new text, so the
    # prompt comes back exactly as given (characters outside the vocabulary too).
    return [t.decode("utf-8") for t in out["text"].numpy()]


def generate_lines(model_dir: str, prompts: tuple[str, ...], length: int, temperature: float,
                   seed: int | None, num_samples: int) -> list[str]:
    """`seqtrain generate` output: one sample as is; several each after a header line."""
    prompts = list(prompts) or [""]
    texts = generate_batch(model_dir, prompts, length, temperature, seed, num_samples)
    if len(texts) == 1:
        return texts
    out = []
    for i, text in enumerate(texts):
        p, s = divmod(i, num_samples)
        out.append(f"==> prompt {p + 1}, sample {s + 1} <==\n{text}")
    return out
