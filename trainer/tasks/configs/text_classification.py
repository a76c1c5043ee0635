"""Config of the `text_classification` task: data files, vocabulary and the BiLSTM classifier.

No TensorFlow here (see trainer/registry.py); the Task is in trainer/tasks/text_classification.py.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from trainer.config import field, prepare_mode_field
from trainer.data import tables
from trainer.errors import DataError
from trainer.models.configs import RecurrentConfig
from trainer.registry import TaskSpec
from trainer.serving.inference import predict_command


@dataclasses.dataclass(frozen=True)
class DataConfig:
    source: Literal["auto", "bundled", "file"] = field(
        "auto", "auto: data.train_path if set, else the bundled review corpus; "
        "bundled; file: your CSV/TSV/JSONL files.")
    train_path: str = field("", "Training file (CSV, TSV or JSONL); local or gs://.")
    eval_path: str = field("", "Eval file; empty splits data.eval_fraction off the training file.")
    format: Literal["auto", "csv", "tsv", "jsonl"] = field(
        "auto", "File format; auto: the extension, else the first line (tabs: tsv, commas: csv).")
    header: bool | Literal["auto"] = field(
        "auto", "Whether the first line names the columns; false numbers columns from 0. "
        "true|false|auto.")
    text_column: str | int = field(
        "text", "Column / JSON key holding the text (a 0-based index without a header).")
    label_column: str | int = field(
        "label", "Column / JSON key holding the label (a 0-based index without a header).")
    encoding: str = field("utf-8", "Text encoding of the files (e.g. utf-8, latin-1, cp1252).")
    max_field_bytes: int = field(tables.DEFAULT_MAX_FIELD_BYTES,
                                 "Longest allowed field; longer ones are an error.", min=1)
    eval_fraction: float = field(0.15, "Share of rows held out for eval when eval_path is empty.", min=0)
    vocab_size: int = field(2000, "Max vocabulary size, including padding and OOV.", min=3)
    sequence_length: int = field(32, "Tokens per example (right-padded or truncated).", min=1)
    prepared_dir: str = field(
        "", "A prepared dataset (`seqtrain prepare --out DIR`, local or gs://) to train from "
        "instead of reading the files: checksums verified at open, rows read in place. Its "
        "files, reading keys, eval_fraction, vocab_size (and runtime.seed, which draws the "
        "eval split) must match this config. Empty: read the files.", resume_ok=True)
    prepare: Literal["auto", "off"] = prepare_mode_field()

    def validate(self, path: str) -> None:
        if self.source == "file" and not self.train_path:
            raise DataError(f"{path}.source=file needs {path}.train_path (a CSV, TSV or JSONL file).")
        if self.source == "bundled" and (self.train_path or self.eval_path):
            raise DataError(
                f"{path}.source=bundled ignores {path}.train_path/{path}.eval_path; set "
                f"{path}.source=auto (or file) to train on your file, or drop the path.")
        if self.eval_path and not self.train_path:
            raise DataError(f"{path}.eval_path is set without {path}.train_path; set both.")
        if not 0 < self.eval_fraction < 1:
            raise DataError(f"{path}.eval_fraction must be in (0, 1), got {self.eval_fraction}.")


@dataclasses.dataclass(frozen=True)
class ModelConfig(RecurrentConfig):
    embedding_dim: int = field(32, "Embedding size.", min=1)
    dense_units: int = field(32, "Units of the Dense(relu) layer before the classifier.", min=1)


SPEC = TaskSpec(
    name="text_classification",
    description="TextVectorization -> Embedding -> BiLSTM -> Dense; CSV/TSV/JSONL or bundled reviews",
    data=DataConfig,
    model=ModelConfig,
    module="trainer.tasks.text_classification",
    train_defaults=dict(steps=600, batch_size=64, steps_per_loop=50, checkpoint_every=200,
                        eval_every=200, learning_rate=3e-3),
    headline_metric="accuracy",
    headline_goal="max",
    commands=(predict_command("trainer.serving.classifier:predict_lines"),),
    prepare="trainer.data.prepare_labelled:prepare",
)
