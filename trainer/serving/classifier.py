"""`seqtrain predict` on a text_classification export."""

from __future__ import annotations

import tensorflow as tf

from trainer.serving import inference


def predict(model_dir: str, texts: list[str]) -> list[tuple[str, float]]:
    """(label, probability) for each raw string, from MODEL_DIR/export."""
    export_dir = inference.require(model_dir, "predict", "text_classification")
    loaded = inference.load_export(export_dir, model_dir)
    out = loaded.serve(tf.constant(texts))
    labels = [b.decode() for b in out["label"].numpy()]
    return list(zip(labels, [float(p) for p in out["probability"].numpy()]))


def predict_lines(model_dir: str, inputs: list[str]) -> list[str]:
    """`seqtrain predict` output: label, probability and the text, tab-separated."""
    return [f"{label}\t{prob:.4f}\t{text}"
            for text, (label, prob) in zip(inputs, predict(model_dir, inputs))]
