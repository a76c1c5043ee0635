"""The test-only `echo` task (config and command in echo_config.py) and `seqtrain echo`."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from trainer import registry
from trainer.data import sampling
from trainer.errors import UserError
from trainer.models.rnn import recurrent_stack
from trainer.serving import inference, metadata
from trainer.tasks.base import Task


@registry.register("echo")
class EchoTask(Task):
    def prepare(self) -> None:
        d = self.config.data
        rng = np.random.default_rng(self.config.runtime.seed)
        self._x = {split: rng.uniform(-1, 1, (n, d.length, 1)).astype(np.float32)
                   for split, n in (("train", d.examples), ("eval", 64))}

    def dataset(self, split: str) -> tf.data.Dataset:
        x = self._x[split]
        return tf.data.Dataset.from_tensor_slices((x, x[:, 0]))

    def train_examples(self) -> sampling.Examples:
        x = self._x["train"]
        return sampling.tensor_examples((x, x[:, 0]))

    def build_model(self) -> keras.Model:
        inputs = keras.Input((self.config.data.length, 1), name="sequence")
        x = recurrent_stack(inputs, self.config.model, return_sequences=False, name="rnn")
        return keras.Model(inputs, keras.layers.Dense(1, dtype="float32", name="first")(x))

    def loss(self, model, features, labels):
        return tf.reduce_mean(tf.square(model(features, training=True) - labels), -1)

    def eval_metrics(self, model, features, labels, weights):
        sq = tf.reduce_mean(tf.square(model(features, training=False) - labels), -1)
        return {"mse": (tf.reduce_sum(sq * weights), tf.reduce_sum(weights))}

    def export(self, model, export_dir: str) -> None:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", lambda x: model(x[:, :, None], training=False)[:, 0],
                             input_signature=[tf.TensorSpec([None, self.config.data.length],
                                                            tf.float32)])
        archive.write_out(export_dir, verbose=False)

    def export_metadata(self) -> dict:
        return {"length": self.config.data.length}


def echo_lines(model_dir: str, sequences: list[str], digits: int) -> list[str]:
    """`seqtrain echo`: each input sequence and the first value the model recalls."""
    export_dir = inference.require(model_dir, "echo")
    length = metadata.read(export_dir)["length"]
    rows = []
    for i, text in enumerate(sequences, 1):
        try:
            row = [float(v) for v in text.split(",")]
        except ValueError:
            row = []
        if len(row) != length:
            raise UserError(f"input {i} ({text!r}) is not {length} comma-separated numbers; "
                            "this model reads sequences of that length (data.length).")
        rows.append(row)
    loaded = tf.saved_model.load(export_dir)
    recalled = loaded.serve(tf.constant(rows, tf.float32)).numpy()
    return [f"{text}\t{value:.{digits}f}" for text, value in zip(sequences, recalled)]
