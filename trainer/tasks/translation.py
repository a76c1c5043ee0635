"""Sequence-to-sequence translation: a recurrent encoder-decoder with attention.

Data: a toy corpus generated from the seed (human-written dates -> ISO dates,
or numbers in words -> digits) or a tab-separated parallel corpus
(`source<TAB>target` per line, the Tatoeba / ManyThings format; local or
gs://). Source and target vocabularies (char- or word-level) are fitted on
the training split only and saved as `assets/translation_vocab.json`.

Metrics: teacher-forced `loss` and `token_accuracy` on every replica; on the
chief, `exact_match` and corpus `bleu` (sacrebleu) of batched greedy decoding
of the eval split (its first `train.eval_batches` global batches if set).

The export is a SavedModel with a `translate` signature, strings in and out
(`Translator` in trainer/serving/translator.py, which also holds `translate()`
and `attention_heatmap()`, the library functions behind `seqtrain translate`).
"""

from __future__ import annotations

import json
import logging

import keras
import numpy as np
import tensorflow as tf

from trainer import plots, registry
from trainer.data import parallel, parallel_prepared, report as data_report, sampling
from trainer.data.parallel import END, PAD
from trainer.errors import DataError
from trainer.serving.translator import DECODE_BATCH, Translator
from trainer.models.losses import masked_token_cross_entropy
from trainer.models.seq2seq import Seq2Seq
from trainer.tasks.base import EXPORT_OPTIONS, Task

log = logging.getLogger(__name__)

VOCAB_ASSET = "translation_vocab.json"
# Word-level vocabularies are large and sparse: the char-level default rate (1e-2)
# learned nothing on a word-level corpus (issue 12). A smaller rate is the usual cure.
WORD_LR_LIMIT = 5e-3
WORD_LR = 1e-3


@registry.register("translation")
class TranslationTask(Task):
    xla_on_cpu = True
    prepared: parallel_prepared.PreparedPairs | None = None  # data.prepared_dir, opened

    def __init__(self, config):
        super().__init__(config)
        self.dropped: dict[str, int] = {}  # over-long pairs dropped, per split
        self._decoders: dict[int, tuple] = {}  # id(model) -> (model, greedy tf.function)

    # ---- data (host) ---------------------------------------------------------

    def prepare(self) -> None:
        """Reads the pairs, drops over-long ones, fits both vocabularies on train (or
        opens `data.prepared_dir`, where all of that was done)."""
        d = self.config.data
        self.prepared = None
        if d.prepared_dir:
            return self._open_prepared()
        train_pairs, eval_pairs = self._read_splits()
        train = self._tokenize_and_filter(train_pairs, "train")
        evals = self._tokenize_and_filter(eval_pairs, "eval")
        self.source_vocab = parallel.Vocab.fit((s for s, _ in train), d.max_vocab, d.min_count)
        self.target_vocab = parallel.Vocab.fit((t for _, t in train), d.max_vocab, d.min_count)
        # Pad to the longest kept example, not the configured maximum: same
        # shapes for every batch, without decoding dozens of padding steps.
        self.source_length = max(len(s) for s, _ in train + evals)
        self.target_length = max(len(t) for _, t in train + evals)
        self._arrays = {
            split: parallel.encode_pairs(pairs, self.source_vocab, self.target_vocab,
                                         self.source_length, self.target_length)
            for split, pairs in (("train", train), ("eval", evals))
        }
        self.eval_references = [parallel.detokenize(t, d.tokenize) for _, t in evals]
        self.eval_sources = [parallel.detokenize(s, d.tokenize) for s, _ in evals]
        src = self._arrays["eval"][0]["source"]
        tokens = int(np.count_nonzero(src))
        self._counts = {"train": len(train), "eval": len(evals), "source_tokens": tokens,
                        "oov": int(np.count_nonzero(src == parallel.UNK))}

    def _open_prepared(self) -> None:
        """Pairs, vocabularies and lengths of `data.prepared_dir` (verified, read in place)."""
        d = self.config.data
        self.prepared = p = parallel_prepared.open_pairs(d, self.config.runtime.seed)
        stats, ds = p.stats, p.dataset
        self.source_vocab, self.target_vocab = p.source_vocab, p.target_vocab
        self.source_length, self.target_length = stats["source_length"], stats["target_length"]
        self.dropped = {s: stats["dropped"][s] for s in ("train", "eval")}
        for split, n in self.dropped.items():
            if n:
                log.warning("translation: dropped %d of %d %s pairs longer than "
                            "data.max_source_length=%d / data.max_target_length=%d tokens.",
                            n, stats["pairs"][split], split, d.max_source_length,
                            d.max_target_length)
        self.eval_sources = list(stats["eval_samples"])
        self._counts = {"train": stats["rows"]["train"], "eval": stats["rows"]["eval"],
                        "source_tokens": stats["tokens"]["eval"]["source"],
                        "oov": stats["eval_source_oov"]}
        # How each source was read when it was prepared, then where it is read from now.
        self._files = [{"prepared_dir": d.prepared_dir, "content_key": ds.content_key,
                        "sources": ds.manifest["sources"],
                        "verify_secs": round(ds.verify_secs, 3),
                        "summary": "\n".join(
                            [src["read"] for src in ds.manifest["sources"] if src.get("read")]
                            + [f"read prepared dataset {d.prepared_dir} (content key "
                               f"{ds.content_key[:16]}..., {ds.verified_bytes / 2**20:.1f} MB "
                               f"verified in {ds.verify_secs:.2f} s)"])}]

    def _read_splits(self):
        d = self.config.data
        seed = self.config.runtime.seed
        self._files = []
        if not d.path:  # source toy, or auto without a file
            return parallel.split_pairs(parallel.toy_pairs(d.toy, d.toy_size, seed),
                                        d.eval_fraction, seed)
        pairs = self._read(d.path, d.max_pairs)
        if d.eval_path:
            return pairs, self._read(d.eval_path, 0)
        train, evals = parallel.split_pairs(pairs, d.eval_fraction, seed)
        if not train:
            raise DataError(
                f"data.path={d.path!r} has {len(pairs)} pair(s) with "
                f"{len({s for s, _ in pairs})} distinct source(s): too few to hold out "
                f"data.eval_fraction={d.eval_fraction} for eval and still train. "
                "Add pairs or set data.eval_path."
            )
        return train, evals

    def _read(self, path: str, limit: int):
        d = self.config.data
        pairs = parallel.read_tsv(path, reverse=d.reverse, limit=limit, encoding=d.encoding,
                                  max_field_bytes=d.max_field_bytes)
        self._files.append({"path": path, "format": "tsv", "pairs": len(pairs),
                            "summary": f"read {path}: {len(pairs)} pairs as tsv "
                                       "(source<TAB>target, no quoting)"})
        return pairs

    def data_report(self) -> dict:
        d, t, c = self.config.data, self.config.train, self._counts
        n_train, n_eval, tokens = c["train"], c["eval"], c["source_tokens"]
        oov = c["oov"] / tokens if tokens else 0.0
        lines = [line for f in self._files for line in f["summary"].split("\n")] + [
            f"train {n_train} pairs, eval {n_eval} pairs"
            + (f"; dropped as too long: {self.dropped}" if any(self.dropped.values()) else ""),
            f"{d.tokenize}-level vocabularies: source {len(self.source_vocab)}, target "
            f"{len(self.target_vocab)}; eval source OOV rate {oov:.1%}"]
        warnings = []
        if d.tokenize == "word" and t.learning_rate >= WORD_LR_LIMIT:
            warnings.append(
                f"train.learning_rate={t.learning_rate:g} with data.tokenize=word is known to "
                "learn nothing (measured: BLEU 0.0 at the default 1e-2 on a word-level "
                f"corpus). Try --set train.learning_rate={WORD_LR:g}.")
        epochs = data_report.epochs_warning(t.steps, t.batch_size, n_train, "pairs")
        if epochs:
            warnings.append(epochs)
        source = "prepared" if self.prepared else "file" if d.path else "toy"
        return {"task": self.name, "source": source, "files": self._files,
                "train": {"pairs": n_train, "dropped": self.dropped.get("train", 0)},
                "eval": {"pairs": n_eval, "dropped": self.dropped.get("eval", 0),
                         "source_oov_rate": oov, "source_tokens": tokens},
                "warnings": warnings, "lines": lines}

    def _tokenize_and_filter(self, pairs, split: str):
        d = self.config.data
        kept, longest = [], [0, 0]
        for source, target in pairs:
            s = parallel.tokenize(source, d.tokenize, d.lowercase)
            t = parallel.tokenize(target, d.tokenize, d.lowercase)
            longest = [max(longest[0], len(s)), max(longest[1], len(t))]
            if 0 < len(s) <= d.max_source_length and 0 < len(t) <= d.max_target_length:
                kept.append((s, t))
        dropped = len(pairs) - len(kept)
        if not kept:
            raise DataError(
                f"all {len(pairs)} {split} pairs were dropped as too long or empty: the "
                f"longest has {longest[0]} source and {longest[1]} target tokens, the limits are "
                f"data.max_source_length={d.max_source_length} and "
                f"data.max_target_length={d.max_target_length}. Raise them."
            )
        if dropped:
            log.warning("translation: dropped %d of %d %s pairs longer than "
                        "data.max_source_length=%d / data.max_target_length=%d tokens.",
                        dropped, len(pairs), split, d.max_source_length, d.max_target_length)
        self.dropped[split] = dropped
        return kept

    def assets(self) -> dict[str, str]:
        d = self.config.data
        vocab = {
            "tokenize": d.tokenize,
            "lowercase": d.lowercase,
            "source_length": self.source_length,
            "target_length": self.target_length,
            "source": list(self.source_vocab.tokens),
            "target": list(self.target_vocab.tokens),
        }
        return {VOCAB_ASSET: json.dumps(vocab, ensure_ascii=False, indent=1) + "\n"}

    def dataset(self, split: str) -> tf.data.Dataset:
        """Features {source [S], target_in [T+1]} and labels [T+1], int32, right-padded."""
        if self.prepared:
            return parallel_prepared.dataset(self.prepared.splits[split], self.source_length,
                                             self.target_length)
        features, labels = self._arrays[split]
        return tf.data.Dataset.from_tensor_slices((features, labels))

    def train_examples(self) -> sampling.Examples:
        if self.prepared:
            return parallel_prepared.examples(self.prepared.splits["train"],
                                              self.source_length, self.target_length)
        return sampling.tensor_examples(self._arrays["train"])

    def _eval_sources(self, limit: int) -> np.ndarray:
        """int32 [n, S]: the first `limit` eval sources (all with 0), padded."""
        if not self.prepared:
            return self._arrays["eval"][0]["source"][: limit or None]
        pairs = self.prepared.splits["eval"]
        n = min(limit or len(pairs), len(pairs))
        return pairs.gather(np.arange(n), self.source_length, self.target_length)[0]

    def _references(self, n: int) -> list[str]:
        if not self.prepared:
            return self.eval_references[:n]
        return self.prepared.references(n)

    def preview_features(self, features) -> str:
        """One pair as `source -> target` text (for `seqtrain data inspect`)."""
        mode = self.config.data.tokenize
        source = parallel.detokenize(self.source_vocab.decode(features["source"]), mode)
        target = parallel.detokenize(self.target_vocab.decode(features["target_in"]), mode)
        return f"{source} -> {target}"

    # ---- model ---------------------------------------------------------------

    def build_model(self) -> keras.Model:
        model = Seq2Seq(self.config.model, len(self.source_vocab), len(self.target_vocab))
        return model.build_for(self.source_length, self.target_length + 1)

    def loss(self, model, features, labels):
        """Per-example mean token cross-entropy. Runs on devices under a strategy."""
        logits = model(features, training=True)
        token_loss, mask = masked_token_cross_entropy(logits, labels, PAD)
        return tf.reduce_sum(token_loss * mask, -1) / tf.maximum(tf.reduce_sum(mask, -1), 1.0)

    def eval_metrics(self, model, features, labels, weights):
        """Teacher-forced token loss and accuracy sums. Runs on devices under a strategy."""
        logits = model(features, training=False)
        token_loss, mask = masked_token_cross_entropy(logits, labels, PAD)
        mask = mask * tf.cast(weights, tf.float32)[:, None]
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels),
                          tf.float32)
        tokens = tf.reduce_sum(mask)
        return {
            "loss": (tf.reduce_sum(token_loss * mask), tokens),
            "token_accuracy": (tf.reduce_sum(correct * mask), tokens),
        }

    def summary_line(self, metrics: dict) -> str:
        keys = [k for k in ("loss", "token_accuracy", "exact_match", "bleu") if k in metrics]
        return ", ".join(f"{k}={metrics[k]:.4f}" for k in keys)

    # ---- host-side evaluation (chief) -----------------------------------------

    def on_eval_end(self, model, step: int, model_dir: str) -> dict:
        """Greedy-decodes the eval split: exact match, BLEU, samples and an attention map."""
        import sacrebleu

        limit = self.config.train.eval_batches * self.config.train.batch_size
        sources = self._eval_sources(limit)
        ids, attention = self.decode_ids(model, sources)
        hyps = [parallel.detokenize(self.target_vocab.decode(row), self.config.data.tokenize)
                for row in ids]
        refs = self._references(len(hyps))
        exact = float(np.mean([h == r for h, r in zip(hyps, refs)]))
        bleu = sacrebleu.corpus_bleu(hyps, [refs]).score
        rows = ["| source | reference | greedy |", "|---|---|---|"] + [
            f"| {_md(s)} | {_md(r)} | {_md(h)} |"
            for s, r, h in zip(self.eval_sources[:8], refs, hyps)
        ]
        tf.summary.text("samples", "\n".join(rows), step=step)
        if self.config.model.attention != "none":
            png = self._heatmap_of(sources[0], ids[0], attention[0])
            tf.summary.image("attention", tf.image.decode_png(png, channels=4)[None], step=step)
        return {"exact_match": exact, "bleu": bleu}

    def decode_ids(self, model, sources: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Batched greedy decoding of int32 sources [N, S] -> ids [N, L], attention [N, L, S]."""
        decode = self._decoder(model)
        ids, attention = [], []
        length = self.config.data.max_target_length + 1
        for i in range(0, len(sources), DECODE_BATCH):
            out_ids, out_attn = decode(tf.constant(sources[i:i + DECODE_BATCH]))
            pad = length - out_ids.shape[1]
            ids.append(np.pad(out_ids.numpy(), [(0, 0), (0, pad)]))
            attention.append(np.pad(out_attn.numpy(), [(0, 0), (0, pad), (0, 0)]))
        return np.concatenate(ids), np.concatenate(attention)

    def _decoder(self, model):
        if id(model) not in self._decoders:
            length = self.config.data.max_target_length + 1
            fn = tf.function(lambda source: model.greedy_decode(source, length),
                             input_signature=[tf.TensorSpec([None, None], tf.int32)])
            self._decoders[id(model)] = (model, fn)  # holding the model keeps its id unique
        return self._decoders[id(model)][1]

    def _heatmap_of(self, source_ids, out_ids, attention) -> bytes:
        src = [self.source_vocab.tokens[i] for i in source_ids if i != PAD]
        n = next((i + 1 for i, t in enumerate(out_ids) if t in (END, PAD)), len(out_ids))
        tgt = [self.target_vocab.tokens[i] for i in out_ids[:n]]
        return plots.heatmap_png(attention[:n, : len(src)], src, tgt)

    # ---- export (chief) --------------------------------------------------------

    def export(self, model, export_dir: str) -> None:
        """SavedModel with a `translate` signature (strings in and out), no trainer needed."""
        d = self.config.data
        translator = Translator(model, self.source_vocab, self.target_vocab, d.tokenize,
                                d.lowercase, d.max_target_length + 1)
        tf.saved_model.save(translator, export_dir, signatures={
            "translate": translator.translate, "serving_default": translator.translate},
            options=EXPORT_OPTIONS)

    def export_metadata(self) -> dict:
        d = self.config.data
        return {"tokenize": d.tokenize, "lowercase": d.lowercase,
                "attention": self.config.model.attention,
                "max_decode_length": d.max_target_length + 1}



def _md(text: str) -> str:
    return text.replace("|", "\\|") or " "
