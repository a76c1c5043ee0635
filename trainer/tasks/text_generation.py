"""Character-level language model and a stateful sampler.

Data: a bundled public-domain text, a text file (local or gs://) or a URL
(`trainer/data/chars.py`). The last `data.eval_fraction` of the corpus is the
eval split; the vocabulary is fitted on the training split only (unseen
characters map to an OOV id) and saved as `assets/vocab.json`. Examples are
windows of integer ids: inputs `chars[i:i+T]`, targets `chars[i+1:i+T+1]`.

Model: Embedding(mask_zero) -> stacked LSTM/GRU/SimpleRNN (return_sequences,
never bidirectional: a causal LM must not see the future) -> Dense(vocab).

Metrics: per-character `loss` (nats; perplexity = exp(loss)), `accuracy` and
`bits_per_char`. Each evaluation logs sampled text at a few temperatures to
TensorBoard.

Sampling (`CharSampler`, exported as a SavedModel with a `generate`
signature): the prompt runs through the network once to get every layer's
recurrent state; then a `tf.while_loop` feeds one character at a time through
the cells, carrying the states, so each new character costs one cell step.
Draws use `tf.random.stateless_categorical`, so a seed fixes the text.
"""

from __future__ import annotations

import math
import secrets

import keras
import tensorflow as tf

from trainer import checkpoints, registry, storage
from trainer.data import chars, report as data_report, sampling
from trainer.errors import ConfigError, UserError
from trainer.redact import redact
from trainer.models.rnn import RecurrentConfig, recurrent_stack
from trainer.tasks.base import Task

EXPORT_META = "seqtrain_export.json"


@registry.register("text_generation")
class TextGenerationTask(Task):
    """Character LM (Embedding -> RNN stack -> Dense) with a stateful sampler."""

    inference_command = "generate"
    xla_on_cpu = True

    # ---- host side ---------------------------------------------------------
    def prepare(self) -> None:
        d = self.config.data
        text = self._read_corpus()
        if d.lowercase:
            text = text.lower()
        train, held_out = chars.split_tail(text, d.eval_fraction)
        self.vocab = chars.CharVocab.fit(train, d.min_char_count)
        self.train_ids = self._checked_ids(train, "training", len(text))
        self.eval_ids = self._checked_ids(held_out, "eval", len(text))
        self.eval_text_head = held_out[:40]

    def _read_corpus(self) -> str:
        d = self.config.data
        self._files = []
        if d.source == "bundled" or not (d.path or d.url):
            self._files.append({"source": "bundled", "name": d.bundled_name})
            return chars.read_bundled(d.bundled_name)
        if d.path:
            text = chars.read_file(d.path, d.encoding)
            self._files.append({"path": d.path, "format": "text", "chars": len(text)})
            return text
        path, digest = chars.download(
            d.url, cache_dir=d.cache_dir, sha256=d.sha256, max_bytes=d.max_bytes,
            retries=d.download_retries, backoff=d.download_backoff, timeout=d.download_timeout,
            allow_http=d.allow_http)
        text = chars.read_file(path, d.encoding,
                               key=f"downloaded data.url={redact(d.url)!r} ({path})")
        self._files.append({"url": redact(d.url), "cache": path, "sha256": digest,
                            "chars": len(text)})
        return text

    def data_report(self) -> dict:
        d, t = self.config.data, self.config.train
        n_train, n_eval = len(self.train_ids), len(self.eval_ids)
        windows = chars.num_windows(n_train, d.seq_len, d.shift)
        oov = float((self.eval_ids == chars.OOV_ID).mean()) if n_eval else 0.0
        where = self._files[0]
        origin = (f"bundled corpus {where['name']!r}" if "name" in where else
                  f"{where.get('path') or where.get('url')}")
        lines = [f"read {origin}: {n_train + n_eval} characters"
                 + (f" (SHA-256 {where['sha256'][:16]}...)" if "sha256" in where else ""),
                 f"train {n_train} chars -> {windows} windows of data.seq_len={d.seq_len} "
                 f"every data.shift={d.shift}; eval {n_eval} chars; vocabulary "
                 f"{self.vocab.size} ids; eval OOV rate {oov:.2%}"]
        warnings = [w for w in [data_report.epochs_warning(t.steps, t.batch_size, windows,
                                                           "windows")] if w]
        return {"task": self.name, "source": "bundled" if "name" in where else
                "url" if "url" in where else "file", "files": self._files,
                "train": {"chars": n_train, "windows": windows},
                "eval": {"chars": n_eval, "oov_rate": oov, "vocab_size": self.vocab.size},
                "warnings": warnings, "lines": lines}

    def _checked_ids(self, text: str, split: str, total: int):
        d = self.config.data
        if len(text) < d.seq_len + 1:
            raise chars.DataError(
                f"the {split} split has {len(text)} characters (corpus {total}, "
                f"data.eval_fraction={d.eval_fraction}), fewer than one window of "
                f"data.seq_len+1={d.seq_len + 1}. Lower data.seq_len, adjust "
                "data.eval_fraction, or use a longer corpus.")
        return self.vocab.encode(text)

    def assets(self) -> dict[str, str]:
        return {"vocab.json": self.vocab.to_json()}

    def dataset(self, split: str) -> tf.data.Dataset:
        """Training windows every `data.shift` chars; eval windows do not overlap."""
        d = self.config.data
        if split == "train":
            return chars.window_dataset(self.train_ids, d.seq_len, d.shift)
        if split == "eval":
            return chars.window_dataset(self.eval_ids, d.seq_len, d.seq_len)
        raise ValueError(f"unknown split {split!r}")

    def preview_features(self, ids) -> str:
        """One window's input characters (for `seqtrain data inspect`)."""
        return repr(self.vocab.decode(ids.tolist()))

    def train_examples(self) -> sampling.Examples:
        """Every window start of the training split (every `data.shift` chars), by id."""
        d = self.config.data
        return chars.window_examples(self.train_ids, d.seq_len, d.shift)

    # ---- model -------------------------------------------------------------
    def build_model(self) -> keras.Model:
        cfg = self.config.model
        ids = keras.Input((None,), dtype="int32", name="ids")
        x = keras.layers.Embedding(self.vocab.size, cfg.embedding_dim, mask_zero=True,
                                   name="embedding")(ids)
        x = recurrent_stack(x, cfg, return_sequences=True, name="rnn")
        if cfg.dropout:
            x = keras.layers.Dropout(cfg.dropout, name="head_dropout")(x)
        logits = keras.layers.Dense(self.vocab.size, dtype="float32", name="logits")(x)
        return keras.Model(ids, logits, name=self.name)

    def loss(self, model, features, labels):
        """Mean cross-entropy over each window's real characters. Runs on devices."""
        ce, mask = _token_ce(model(features, training=True), labels)
        return tf.reduce_sum(ce * mask, 1) / tf.maximum(tf.reduce_sum(mask, 1), 1.0)

    def eval_metrics(self, model, features, labels, weights):
        """Per-character sums; weight-0 padding examples count for nothing. Runs on devices."""
        logits = model(features, training=False)
        ce, mask = _token_ce(logits, labels)
        w = mask * tf.cast(weights, tf.float32)[:, None]
        n = tf.reduce_sum(w)
        nats = tf.reduce_sum(ce * w)
        hits = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
        return {
            "loss": (nats, n),
            "accuracy": (tf.reduce_sum(hits * w), n),
            "bits_per_char": (nats / math.log(2.0), n),
        }

    def summary_line(self, metrics: dict) -> str:
        parts = [f"{k}={metrics[k]:.4f}" for k in ("loss", "bits_per_char", "accuracy")
                 if k in metrics]
        if "loss" in metrics:
            parts.insert(1, f"perplexity={math.exp(min(metrics['loss'], 50.0)):.3f}")
        return ", ".join(parts)

    # ---- host-side evaluation and export -----------------------------------
    def on_eval_end(self, model, step: int, model_dir: str) -> dict:
        """Logs sampled text at each `data.sample_temperatures` to TensorBoard."""
        d = self.config.data
        if not d.sample_length:
            return {}
        sampler = self.sampler(model)
        prompt = d.sample_prompt or self.eval_text_head
        for i, temp in enumerate(d.sample_temperatures):
            out = sampler.generate(tf.constant([prompt]), tf.constant(d.sample_length),
                                   tf.constant(temp, tf.float32),
                                   tf.constant(self.config.runtime.seed + step + i, tf.int64))
            text = out["text"][0].numpy().decode("utf-8", "replace")
            tf.summary.text(f"samples/temperature_{temp:g}", _markdown(text), step=step)
        return {}

    def sampler(self, model: keras.Model) -> CharSampler:
        """The stateful sampler over `model`'s weights (cached per model)."""
        cached = getattr(self, "_sampler", None)
        if cached is None or cached[0] is not model:
            self._sampler = (model, CharSampler(model, self.config.model, self.vocab.chars))
        return self._sampler[1]

    def export(self, model: keras.Model, export_dir: str) -> None:
        """SavedModel with `generate` (strings in/out) and `next_char_logits`."""
        sampler = CharSampler(model, self.config.model, self.vocab.chars)
        tf.saved_model.save(sampler, export_dir, signatures={
            "generate": sampler.generate.get_concrete_function(),
            "next_char_logits": sampler.next_char_logits.get_concrete_function(),
        })
        storage.write_json(storage.join(export_dir, EXPORT_META), {
            "task": self.name, "chars": self.vocab.chars,
            "cell": self.config.model.cell, "layers": self.config.model.layers,
        })


def _token_ce(logits, labels):
    """Per-token cross-entropy [batch, T] and a mask of non-padding targets."""
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return ce, tf.cast(tf.not_equal(labels, chars.PAD_ID), tf.float32)


def _markdown(text: str) -> str:
    """TensorBoard renders text as markdown; an indented code block keeps it verbatim."""
    return "\n".join("    " + line for line in text.split("\n"))


# ----------------------------------------------------------------------------
# Stateful sampler.
# ----------------------------------------------------------------------------


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
        self.seed_states = checkpoints.rng_state_variables(model)
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

        def body(t, logits, states, out):
            scaled = logits / temperature + self.banned
            draw_seed = tf.stack([seed, tf.cast(t, tf.int64)])
            nxt = tf.random.stateless_categorical(scaled, 1, draw_seed, dtype=tf.int32)[:, 0]
            logits, states = self.step(nxt, states)
            return t + 1, logits, states, out.write(t, nxt)

        out = tf.TensorArray(tf.int32, size=length, element_shape=[None])
        _, _, _, out = tf.while_loop(
            lambda t, *_: t < length, body, (tf.constant(0), logits, states, out))
        # Stacking an empty TensorArray needs a static element shape; skip it.
        new_ids = tf.cond(length > 0, lambda: tf.transpose(out.stack()),
                          lambda: tf.zeros([batch, 0], tf.int32))
        new_text = tf.strings.reduce_join(tf.gather(self.id_to_char, new_ids), axis=1)
        return {"text": tf.strings.join([prompts, new_text])}


# ----------------------------------------------------------------------------
# Library entry point of `seqtrain generate`.
# ----------------------------------------------------------------------------


def generate(model_dir: str, prompt: str, length: int, temperature: float,
             seed: int | None = None) -> str:
    """Loads MODEL_DIR/export and returns `prompt` plus `length` sampled characters.

    One sample of `generate_batch`; see there for the arguments and errors.
    """
    return generate_batch(model_dir, [prompt], length, temperature, seed)[0]


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
        num_samples, or a non-empty prompt with no known characters.
    """
    from trainer.tasks import inference

    if isinstance(length, bool) or not isinstance(length, int) or not (
            0 <= length <= inference.MAX_GENERATE_LENGTH):
        raise UserError(f"--length must be an integer from 0 to {inference.MAX_GENERATE_LENGTH}, "
                        f"got {length!r}.")
    if not (isinstance(temperature, (int, float)) and temperature > 0
            and math.isfinite(temperature)):
        raise UserError(f"--temperature must be a number > 0, got {temperature!r} "
                        "(for example 0.5 or 1.0).")
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise UserError(f"--length must be an integer >= 0, got {length!r}.")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise UserError(f"--num-samples must be an integer >= 1, got {num_samples!r}.")
    if not prompts:
        raise UserError("no prompt given: pass --prompt TEXT (repeat it for several prompts), "
                        "or --prompt '' to start from the initial state.")
    inference.require(model_dir, "generate", "text_generation")
    export_dir = storage.join(model_dir, "export")
    meta = storage.read_json(storage.join(export_dir, EXPORT_META))
    vocab = chars.CharVocab(meta["chars"])
    for prompt in prompts:
        if prompt and vocab.count_known(prompt) == 0:
            sample = "".join(vocab.chars[:40])
            raise UserError(
                f"--prompt {prompt!r} has no character the model knows. Use characters from its "
                f"training corpus, for example {sample!r}.")
    if seed is None:
        seed = secrets.randbits(63)
    loaded = tf.saved_model.load(export_dir)
    rows = [p for p in prompts for _ in range(num_samples)]
    out = loaded.signatures["generate"](
        prompts=tf.constant(rows), length=tf.constant(length, tf.int32),
        temperature=tf.constant(temperature, tf.float32), seed=tf.constant(seed, tf.int64))
    # The signature joins the prompt's own bytes with the new text, so the
    # prompt comes back exactly as given (characters outside the vocabulary too).
    return [t.decode("utf-8") for t in out["text"].numpy()]


def _run_task(model_dir: str) -> str:
    cfg = storage.join(model_dir, "config.yaml")
    if not storage.exists(cfg):
        return "no config.yaml either"
    import yaml

    task = (yaml.safe_load(storage.read_text(cfg)) or {}).get("task", {}).get("name")
    return f"its config.yaml says task {task!r}"
