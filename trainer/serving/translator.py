"""The translation export: `Translator`, strings in and out, and `seqtrain translate`.

`Translator` is the serving graph that the translation task saves: tokenization,
vocabulary lookup, greedy decoding and detokenization in one graph. Its
`translate` signature: `translate(texts=[B] string) -> {"translation": [B] string,
"source_tokens", "target_tokens", "attention": [B, T, S] float32 (with
model.attention=additive)}`.
"""

from __future__ import annotations

import posixpath
from typing import Sequence

import tensorflow as tf

from trainer import plots, storage
from trainer.data import parallel
from trainer.data.parallel import END, PAD, UNK
from trainer.errors import UserError, first_line
from trainer.models.rng import rng_state_variables
from trainer.models.seq2seq import Seq2Seq
from trainer.serving import inference

# Sentences per call of the decoder (eval decoding and `seqtrain translate`).
DECODE_BATCH = 256


class Translator(tf.Module):
    """What `task.export` saves: tokenization, the model and greedy decoding in one graph."""

    def __init__(self, model: Seq2Seq, source_vocab: parallel.Vocab,
                 target_vocab: parallel.Vocab, tokenize: str, lowercase: bool, max_length: int):
        super().__init__(name="translator")
        self.model = model
        # Keras RNN layers with dropout draw their dropout masks even in
        # inference, so the graph reads the SeedGenerator states; they are not
        # in the model's object graph and must be tracked here to be saved.
        self.seed_states = rng_state_variables(model)
        self.source_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(source_vocab.tokens),
                tf.range(len(source_vocab), dtype=tf.int64)),
            default_value=UNK)
        self.target_tokens = tf.constant(target_vocab.tokens)
        self.source_tokens = tf.constant(source_vocab.tokens)
        self.mode = tokenize
        self.lowercase = lowercase
        self.max_length = max_length
        self.with_attention = model.cfg.attention != "none"

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="texts")])
    def translate(self, texts):
        tokens = parallel.tf_tokenize(texts, self.mode, self.lowercase)
        ids = tf.cast(self.source_table.lookup(tokens), tf.int32).to_tensor(default_value=PAD)
        # One extra PAD column: empty inputs still have a time step, and masking
        # makes padding invisible to the outputs.
        source = tf.pad(ids, [[0, 0], [0, 1]])
        out_ids, attention = self.model.greedy_decode(source, self.max_length)
        keep = tf.logical_and(tf.not_equal(out_ids, PAD), tf.not_equal(out_ids, END))
        words = tf.gather(self.target_tokens, tf.ragged.boolean_mask(out_ids, keep))
        # Decoded steps up to and including END, for labelling attention rows.
        steps = tf.reduce_sum(tf.cast(tf.not_equal(out_ids, PAD), tf.int32), axis=1)
        step_tokens = tf.RaggedTensor.from_tensor(tf.gather(self.target_tokens, out_ids), steps)
        out = {
            "translation": parallel.tf_detokenize(words, self.mode),
            "source_tokens": tf.gather(self.source_tokens, ids),
            "source_lengths": tf.reduce_sum(tf.cast(tf.not_equal(ids, PAD), tf.int32), axis=1),
            "target_tokens": step_tokens.to_tensor(default_value=""),
            "target_lengths": steps,
        }
        if self.with_attention:
            out["attention"] = attention
        return out


def translate(model_dir: str, texts: Sequence[str]) -> list[str]:
    """Translates `texts` with the SavedModel in MODEL_DIR/export (greedy decoding).

    Args:
      model_dir: a finished translation run (local or gs://).
      texts: source sentences; an empty list returns [].

    Returns:
      One translation per text, in order.

    Raises:
      UserError: no export, not a translation run, or a text that is not a string.
    """
    texts = _check_texts(texts)
    loaded = _load_export(model_dir)
    out = []
    for i in range(0, len(texts), DECODE_BATCH):
        result = loaded.signatures["translate"](texts=tf.constant(texts[i:i + DECODE_BATCH]))
        out += [t.decode("utf-8") for t in result["translation"].numpy()]
    return out


def attention_heatmap(model_dir: str, text: str, out_png: str) -> str:
    """Writes the attention weights of translating `text` as a heatmap PNG.

    Args:
      model_dir: a finished translation run trained with model.attention=additive.
      text: one source sentence.
      out_png: output path (local or gs://); parent directories are created.

    Returns:
      `out_png`.

    Raises:
      UserError: no export, not a translation run, or a model without attention.
    """
    (text,) = _check_texts([text])
    loaded = _load_export(model_dir)
    result = loaded.signatures["translate"](texts=tf.constant([text]))
    if "attention" not in result:
        raise UserError(
            f"--model-dir {model_dir!r} was trained with model.attention=none, so it has no "
            "attention weights to plot. Train with model.attention=additive."
        )
    n_src = int(result["source_lengths"][0])
    if not n_src:
        raise UserError(f"cannot plot attention for {text!r}: it has no tokens. Pass a sentence.")
    n_tgt = int(result["target_lengths"][0])
    src = [t.decode("utf-8") for t in result["source_tokens"][0, :n_src].numpy()]
    tgt = [t.decode("utf-8") for t in result["target_tokens"][0, :n_tgt].numpy()]
    png = plots.heatmap_png(result["attention"][0, :n_tgt, :n_src].numpy(), src, tgt,
                      title=result["translation"][0].numpy().decode("utf-8"))
    parent = posixpath.dirname(out_png)
    try:
        if parent and not storage.exists(parent):
            storage.makedirs(parent)
        with tf.io.gfile.GFile(out_png, "wb") as f:
            f.write(png)
    except (OSError, tf.errors.OpError) as e:
        raise UserError(f"--attention-png {out_png} cannot be written: {first_line(e)}. Name "
                        "a file in a directory you can write.") from None
    return out_png


def _check_png_path(out_png: str) -> None:
    """Refuses, before anything is translated, a heatmap path that cannot be a file."""
    if storage.isdir(out_png):
        raise UserError(f"--attention-png {out_png} is a directory; name a file in it, for "
                        f"example {out_png.rstrip('/')}/attention.png.")
    parent = posixpath.dirname(out_png)
    if parent and storage.exists(parent) and not storage.isdir(parent):
        raise UserError(f"--attention-png {out_png}: {parent} is a file, not a directory.")


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise UserError(f"text #{i + 1} to translate must be a string, got {t!r}.")
    return texts


def _load_export(model_dir: str):
    export_dir = inference.require(model_dir, "translate", "translation")
    loaded = inference.load_export(export_dir, model_dir)
    if "translate" not in loaded.signatures:
        raise UserError(
            f"{export_dir!r} has no `translate` signature: it was not exported by the "
            "translation task. Retrain with --task translation."
        )
    return loaded


def translate_lines(model_dir: str, texts: list[str], attention_png: str | None):
    """`seqtrain translate` output: source and translation, tab-separated, one pair a line;
    then, with `attention_png`, where the heatmap was written (after the translations)."""
    if attention_png:
        _check_png_path(attention_png)
    for src, out in zip(texts, translate(model_dir, texts)):
        yield f"{src}\t{out}"
    if attention_png:
        yield f"attention heatmap: {attention_heatmap(model_dir, texts[0], attention_png)}"
