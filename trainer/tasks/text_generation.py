"""Character-level language model and a stateful sampler.

Data: a bundled public-domain text, a text file (local or gs://) or a URL
(`trainer/data/chars.py`), or the same corpus prepared by `seqtrain prepare` and
read in place from `data.prepared_dir` (trainer/data/chars_prepared.py; the same
ids, vocabulary and splits, docs/prepared.md). The last `data.eval_fraction` of
the corpus is the eval split; the vocabulary is fitted on the training split only (unseen
characters map to an OOV id) and saved as `assets/vocab.json`. Examples are
windows of integer ids: inputs `chars[i:i+T]`, targets `chars[i+1:i+T+1]`.

Model: Embedding(mask_zero) -> stacked LSTM/GRU/SimpleRNN (return_sequences,
never bidirectional: a causal LM must not see the future) -> Dense(vocab).

Metrics: per-character `loss` (nats; perplexity = exp(loss)), `accuracy` and
`bits_per_char`. Each evaluation logs sampled text at a few temperatures to
TensorBoard.

Sampling: the export is a `CharSampler` (trainer/serving/char_sampler.py), a
SavedModel with a `generate` signature, served by `seqtrain generate`.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from trainer import registry
from trainer.data import chars, chars_prepared, report as data_report, sampling
from trainer.redact import redact
from trainer.serving.char_sampler import CharSampler
from trainer.models.losses import masked_token_cross_entropy
from trainer.models.rnn import recurrent_stack
from trainer.tasks.base import EXPORT_OPTIONS, Task


@registry.register("text_generation")
class TextGenerationTask(Task):
    """Character LM (Embedding -> RNN stack -> Dense) with a stateful sampler."""

    xla_on_cpu = True
    prepared: chars_prepared.PreparedCorpus | None = None  # data.prepared_dir, opened

    # ---- host side ---------------------------------------------------------
    def prepare(self) -> None:
        d = self.config.data
        self.prepared = None
        if d.prepared_dir:
            return self._open_prepared()
        text = self._read_corpus()
        if d.lowercase:
            text = text.lower()
        train, held_out = chars.split_tail(text, d.eval_fraction)
        self.vocab = chars.CharVocab.fit(
            train[:chars.vocab_sample_size(len(train), d.vocab_sample_mb)], d.min_char_count)
        self.train_ids = self._checked_ids(train, "training", len(text))
        self.eval_ids = self._checked_ids(held_out, "eval", len(text))
        self.eval_text_head = held_out[:40]

    def _open_prepared(self) -> None:
        """The tokens and vocabulary of `data.prepared_dir` (verified, read in place)."""
        d = self.config.data
        self.prepared = chars_prepared.open_corpus(d)
        self.vocab = self.prepared.vocab
        stats = self.prepared.stats
        for split, stream in (("training", self.prepared.train), ("eval", self.prepared.eval)):
            if len(stream) < d.seq_len + 1:
                raise chars.DataError(
                    f"the {split} split of data.prepared_dir={d.prepared_dir!r} has "
                    f"{len(stream)} characters (corpus {stats['chars']}), fewer than one "
                    f"window of data.seq_len+1={d.seq_len + 1}. Lower data.seq_len or "
                    "prepare a longer corpus.")
        self.eval_text_head = stats["eval_head"]
        ds = self.prepared.dataset
        self._files = [{"prepared_dir": d.prepared_dir, "content_key": ds.content_key,
                        "sources": ds.manifest["sources"], "chars": stats["chars"],
                        "verify_secs": round(ds.verify_secs, 3)}]

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
        if self.prepared:
            return self._prepared_report()
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

    def _prepared_report(self) -> dict:
        d, t = self.config.data, self.config.train
        stats, ds = self.prepared.stats, self.prepared.dataset
        n_train, n_eval = len(self.prepared.train), len(self.prepared.eval)
        windows = chars.num_windows(n_train, d.seq_len, d.shift)
        oov = stats["eval_oov"] / n_eval if n_eval else 0.0
        sources = ds.manifest.get("sources", [])
        # The source as the in-memory path names it, then where it is read from now.
        lines = ([f"read {sources[0]['path']}: {stats['chars']} characters (SHA-256 "
                  f"{sources[0]['sha256'][:16]}...)"] if len(sources) == 1 else []) + [
                 f"read prepared dataset {d.prepared_dir} (content key {ds.content_key[:16]}..., "
                 f"{ds.verified_bytes / 2**20:.1f} MB of shards verified in "
                 f"{ds.verify_secs:.2f} s): {stats['chars']} characters",
                 f"train {n_train} chars -> {windows} windows of data.seq_len={d.seq_len} "
                 f"every data.shift={d.shift}; eval {n_eval} chars; vocabulary "
                 f"{self.vocab.size} ids; eval OOV rate {oov:.2%}"]
        warnings = [w for w in [data_report.epochs_warning(t.steps, t.batch_size, windows,
                                                           "windows")] if w]
        return {"task": self.name, "source": "prepared", "files": self._files,
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
        if self.prepared:
            stream = {"train": self.prepared.train, "eval": self.prepared.eval}.get(split)
            if stream is None:
                raise ValueError(f"unknown split {split!r}")
            return chars_prepared.window_dataset(
                stream, d.seq_len, d.shift if split == "train" else d.seq_len)
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
        if self.prepared:
            return chars_prepared.window_examples(self.prepared.train, d.seq_len, d.shift)
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
        logits = model(features, training=True)
        ce, mask = masked_token_cross_entropy(logits, labels, chars.PAD_ID)
        return tf.reduce_sum(ce * mask, 1) / tf.maximum(tf.reduce_sum(mask, 1), 1.0)

    def eval_metrics(self, model, features, labels, weights):
        """Per-character sums; weight-0 padding examples count for nothing. Runs on devices."""
        logits = model(features, training=False)
        ce, mask = masked_token_cross_entropy(logits, labels, chars.PAD_ID)
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
        }, options=EXPORT_OPTIONS)

    def export_metadata(self) -> dict:
        return {"chars": self.vocab.chars, "cell": self.config.model.cell,
                "layers": self.config.model.layers}



def _markdown(text: str) -> str:
    """TensorBoard renders text as markdown; an indented code block keeps it verbatim."""
    return "\n".join("    " + line for line in text.split("\n"))
