"""Text classification: TextVectorization -> Embedding -> (Bi)LSTM -> Dense.

The vectorizer is adapted on the training split only, runs in the input
pipeline (not on the accelerator), right-pads with id 0 so masks keep cuDNN
eligible, and is exported with the model so the export takes raw strings.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.ops import control_flow_util  # no public API says "tracing for XLA"

from trainer import registry
from trainer.data import labelled_prepared, text as text_data, report as data_report, sampling
from trainer.errors import DataError
from trainer.models.rnn import recurrent_stack
from trainer.tasks.base import EXPORT_OPTIONS, Task


@registry.register("text_classification")
class TextClassificationTask(Task):
    prepared: labelled_prepared.PreparedRows | None = None  # data.prepared_dir, opened

    def prepare(self) -> None:
        d = self.config.data
        self.prepared = None
        if d.prepared_dir:
            return self._open_prepared()
        files = []
        if not d.train_path:  # source auto or bundled
            texts, labels, rep = text_data.read_labelled(
                text_data.bundled_path("reviews.csv"), fmt="csv", text_column="text",
                label_column="label", header=True)
            files.append(rep)
        else:
            texts, labels, rep = self._read(d.train_path, "data.train_path")
            files.append(rep)
        if d.eval_path:
            tr_x, tr_y = texts, labels
            ev_x, ev_y, rep = self._read(d.eval_path, "data.eval_path")
            files.append(rep)
        else:
            tr_x, tr_y, ev_x, ev_y = text_data.split(texts, labels, d.eval_fraction,
                                                     self.config.runtime.seed)
        self.labels = sorted(set(tr_y), key=text_data.label_sort_key)
        if len(self.labels) < 2:
            raise DataError(
                f"the training data has a single class ({self.labels[0]!r}) in column "
                f"{d.label_column!r}; classification needs at least two. Check the label column.")
        unknown = sorted(set(ev_y) - set(self.labels))
        if unknown:
            raise DataError(
                f"the eval split has labels not seen in training: {unknown[:5]}. "
                "Make sure every class appears in the training data.")
        self.vectorizer = keras.layers.TextVectorization(
            max_tokens=d.vocab_size, output_sequence_length=d.sequence_length,
            name="vectorizer")
        self.vectorizer.adapt(tf.constant(tr_x))  # training split only
        index = {label: i for i, label in enumerate(self.labels)}
        self._splits = {
            "train": (self._vectorize(tr_x), np.array([index[y] for y in tr_y], np.int32)),
            "eval": (self._vectorize(ev_x), np.array([index[y] for y in ev_y], np.int32)),
        }
        self._report = self._build_report(files, tr_y, ev_y)

    def _open_prepared(self) -> None:
        """Rows, vocabulary and labels of `data.prepared_dir` (verified, read in place)."""
        d = self.config.data
        self.prepared = p = labelled_prepared.open_rows(d, self.config.runtime.seed)
        self.labels = p.labels
        self.vectorizer = keras.layers.TextVectorization(
            max_tokens=d.vocab_size, output_sequence_length=d.sequence_length,
            vocabulary=p.vocabulary, name="vectorizer")
        self.vectorizer(tf.constant([""]))  # built, as `adapt` leaves it (export tracks it)
        stats, ds = p.stats, p.dataset
        train_counts, eval_counts = stats["labels"]["train"], stats["labels"]["eval"]
        rows = stats["rows"]
        eval_tokens = stats["tokens"]["eval"]
        oov = stats["eval_oov"] / eval_tokens if eval_tokens else 0.0
        t = self.config.train
        # How each source was read when it was prepared, then where it is read from now.
        lines = [src["read"] for src in ds.manifest["sources"] if src.get("read")] + [
                 f"read prepared dataset {d.prepared_dir} (content key {ds.content_key[:16]}..., "
                 f"{ds.verified_bytes / 2**20:.1f} MB verified in {ds.verify_secs:.2f} s)",
                 f"train {rows['train']} rows, eval {rows['eval']} rows; labels (train) "
                 f"{data_report.short_counts(train_counts)}",
                 f"vocabulary {len(p.vocabulary)} tokens; eval OOV rate {oov:.1%} (of "
                 f"{eval_tokens} eval tokens, untruncated)"]
        warnings = [w for w in [data_report.epochs_warning(t.steps, t.batch_size, rows["train"],
                                                           "rows")] if w]
        self._report = {
            "task": self.name, "source": "prepared",
            "files": [{"prepared_dir": d.prepared_dir, "content_key": ds.content_key,
                       "sources": ds.manifest["sources"],
                       "verify_secs": round(ds.verify_secs, 3)}],
            "train": {"rows": rows["train"], "labels": train_counts},
            "eval": {"rows": rows["eval"], "labels": eval_counts, "oov_rate": oov,
                     "tokens": eval_tokens},
            "warnings": warnings, "lines": lines}

    def _read(self, path: str, key: str):
        d = self.config.data
        return text_data.read_labelled(
            path, fmt=d.format, text_column=d.text_column, label_column=d.label_column,
            header=d.header, encoding=d.encoding, max_field_bytes=d.max_field_bytes, key=key)

    def _build_report(self, files, tr_y, ev_y) -> dict:
        ids = self._splits["eval"][0]
        tokens = int(np.count_nonzero(ids))
        oov = float(np.count_nonzero(ids == 1) / tokens) if tokens else 0.0
        t = self.config.train
        train_counts, eval_counts = data_report.counts(tr_y), data_report.counts(ev_y)
        source = "file" if self.config.data.train_path else "bundled"
        lines = [f["summary"] for f in files] + [
            f"train {len(tr_y)} rows, eval {len(ev_y)} rows; labels (train) "
            f"{data_report.short_counts(train_counts)}",
            f"vocabulary {len(self.vectorizer.get_vocabulary())} tokens; eval OOV rate "
            f"{oov:.1%} (of {tokens} eval tokens)"]
        warnings = [w for w in [data_report.epochs_warning(t.steps, t.batch_size, len(tr_y),
                                                           "rows")] if w]
        return {"task": self.name, "source": source, "files": files,
                "train": {"rows": len(tr_y), "labels": train_counts},
                "eval": {"rows": len(ev_y), "labels": eval_counts, "oov_rate": oov,
                         "tokens": tokens},
                "warnings": warnings, "lines": lines}

    def data_report(self) -> dict:
        return self._report

    def _vectorize(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.vectorizer(tf.constant(texts)), dtype=np.int32)

    def assets(self) -> dict[str, str]:
        return {
            "vocab.txt": "\n".join(self.vectorizer.get_vocabulary()) + "\n",
            "labels.txt": "\n".join(self.labels) + "\n",
        }

    def dataset(self, split: str) -> tf.data.Dataset:
        if self.prepared:
            return labelled_prepared.dataset(self.prepared.splits[split],
                                             self.config.data.sequence_length)
        ids, labels = self._splits[split]
        return tf.data.Dataset.from_tensor_slices((ids, labels))

    def preview_features(self, ids) -> str:
        """One example's tokens (for `seqtrain data inspect`)."""
        vocab = self.vectorizer.get_vocabulary()
        return " ".join(vocab[i] for i in ids.tolist() if i)

    def train_examples(self) -> sampling.Examples:
        if self.prepared:
            return labelled_prepared.examples(self.prepared.splits["train"],
                                              self.config.data.sequence_length)
        return sampling.tensor_examples(self._splits["train"])

    def build_model(self) -> keras.Model:
        m = self.config.model
        vocab = len(self.vectorizer.get_vocabulary())
        # Any length: training trims each batch's trailing padding (see _trim_padding).
        ids = keras.Input(shape=(None,), dtype="int32", name="ids")
        x = keras.layers.Embedding(vocab, m.embedding_dim, mask_zero=True, name="embedding")(ids)
        x = recurrent_stack(x, m, return_sequences=False, name="encoder")
        x = keras.layers.Dense(m.dense_units, activation="relu", name="dense")(x)
        x = keras.layers.Dropout(m.dropout, name="dropout")(x)
        logits = keras.layers.Dense(len(self.labels), dtype="float32", name="logits")(x)
        return keras.Model(ids, logits, name="text_classifier")

    def loss(self, model, features, labels):
        logits = model(_trim_padding(features), training=True)
        return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)

    def eval_metrics(self, model, features, labels, weights):
        logits = model(_trim_padding(features), training=False)
        per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
        n = tf.reduce_sum(weights)
        return {"loss": (tf.reduce_sum(per_example * weights), n),
                "accuracy": (tf.reduce_sum(correct * weights), n)}

    def export(self, model, export_dir: str) -> None:
        vectorizer, labels = self.vectorizer, tf.constant(self.labels)
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.track(vectorizer)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="texts")])
        def serve(texts):
            ids = tf.cast(vectorizer(texts), tf.int32)
            probs = tf.nn.softmax(model(ids, training=False), axis=-1)
            class_id = tf.argmax(probs, axis=-1, output_type=tf.int32)
            return {"probabilities": probs, "class_id": class_id,
                    "label": tf.gather(labels, class_id),
                    "probability": tf.reduce_max(probs, axis=-1)}

        archive.add_endpoint("serve", serve)
        archive.write_out(export_dir, options=EXPORT_OPTIONS, verbose=False)

    def export_metadata(self) -> dict:
        return {"labels": self.labels}

    def summary_line(self, metrics: dict) -> str:
        return f"accuracy={metrics.get('accuracy', float('nan')):.4f} loss={metrics.get('loss', float('nan')):.4f}"


def _trim_padding(ids):
    """The batch without the timesteps that are padding in every row.

    Texts are right-padded with id 0 to data.sequence_length, and the recurrent layers
    skip masked steps (the state is carried through them, in both directions), so
    cutting the all-padding tail changes no output or gradient, only the loop length.

    Not under XLA (`runtime.jit_compile=true`): the cut length depends on the ids, so
    XLA would take them as a compile-time constant and compile the step again for
    nearly every batch (it did: one compilation per step). The masks give the same
    result on the whole padded batch.
    """
    if _compiling_with_xla():
        return ids
    positions = tf.range(1, tf.shape(ids)[1] + 1)
    used = tf.reduce_max(tf.where(ids != 0, positions[tf.newaxis, :], 0))
    return ids[:, :tf.maximum(used, 1)]


def _compiling_with_xla() -> bool:
    """The current trace is inside a `tf.function(jit_compile=True)`."""
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())
