"""Config of the `translation` task: the parallel corpus, tokenization and the seq2seq model.

No TensorFlow here (see trainer/registry.py); the Task is in trainer/tasks/translation.py.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import click

from trainer.config import field, prepare_mode_field
from trainer.data import tables
from trainer.errors import ConfigError
from trainer.models.configs import Seq2SeqConfig
from trainer.registry import Command, TaskSpec
from trainer.serving.inference import inputs_argument


@dataclasses.dataclass(frozen=True)
class TranslationData:
    source: Literal["auto", "toy", "tsv", "file"] = field(
        "auto", "auto: data.path if set, else the toy corpus; toy: generated from runtime.seed "
        "(data.toy); tsv|file: the file data.path."
    )
    toy: Literal["dates", "numbers"] = field(
        "dates", "Toy corpus: dates (human formats -> YYYY-MM-DD) or numbers (words -> digits)."
    )
    toy_size: int = field(20000, "Distinct pairs generated for source=toy (train + eval).", min=2)
    path: str = field(
        "", "File of 'source<TAB>target' lines (local or gs://; no quoting, further columns "
        "are ignored); setting it trains on it (source=auto)."
    )
    encoding: str = field("utf-8", "Text encoding of data.path / data.eval_path.")
    max_field_bytes: int = field(tables.DEFAULT_MAX_FIELD_BYTES,
                                 "Longest allowed line; longer ones are an error.", min=1)
    eval_path: str = field(
        "", "source=tsv: optional separate eval file; empty holds out data.eval_fraction."
    )
    eval_fraction: float = field(
        0.1, "Share of pairs held out for eval (grouped by source sentence).", min=0
    )
    reverse: bool = field(False, "source=tsv: translate the 2nd column into the 1st.")
    max_pairs: int = field(0, "source=tsv: read only the first N pairs of data.path; 0 = all.",
                           min=0)
    tokenize: Literal["char", "word"] = field(
        "char", "Token level: char, or word (punctuation split off as tokens)."
    )
    lowercase: bool = field(False, "Lowercase both sides before tokenizing.")
    max_source_length: int = field(
        48, "Longest source in tokens; longer pairs are dropped (count is logged).", min=1
    )
    max_target_length: int = field(
        48, "Longest target in tokens (END excluded); longer pairs are dropped; "
        "also the decoding limit.", min=1
    )
    max_vocab: int = field(
        8000, "Most tokens per vocabulary, 4 specials included; rarer ones map to [UNK].", min=5
    )
    min_count: int = field(1, "Tokens seen fewer times in training map to [UNK].", min=1)
    prepared_dir: str = field(
        "", "A prepared dataset (`seqtrain prepare --out DIR`, local or gs://) to train from "
        "instead of reading the corpus: checksums verified at open, pairs read in place. Its "
        "files (or toy corpus), reading, split, tokenization, length and vocabulary keys "
        "(and runtime.seed, which draws the eval split and the toy corpus) must match this "
        "config. Empty: read the corpus.", resume_ok=True)
    prepare: Literal["auto", "off"] = prepare_mode_field()

    def validate(self, path: str) -> None:
        if not 0.0 < self.eval_fraction < 1.0:
            raise ConfigError(f"{path}.eval_fraction must be in (0, 1), got {self.eval_fraction}.")
        if self.source in ("tsv", "file") and not self.path:
            raise ConfigError(
                f"{path}.source={self.source} needs {path}.path: a file of 'source<TAB>target' "
                "lines (local or gs://)."
            )
        if self.source == "auto" and self.eval_path and not self.path:
            raise ConfigError(f"{path}.eval_path is set without {path}.path; set both.")
        if self.source == "toy":
            for name in ("path", "eval_path"):
                if getattr(self, name):
                    raise ConfigError(
                        f"{path}.{name}={getattr(self, name)!r} is ignored with "
                        f"{path}.source=toy; set {path}.source=auto (or tsv) to train on "
                        "the file, or drop it."
                    )


SPEC = TaskSpec(
    name="translation",
    description="Seq2seq translation (LSTM encoder-decoder, attention): toy dates or a TSV corpus.",
    data=TranslationData,
    model=Seq2SeqConfig,
    module="trainer.tasks.translation",
    train_defaults={
        "steps": 1500,
        "batch_size": 64,
        # Measured: with correct (densified) Adam on the embeddings, 3e-3 reached 0.75-0.87
        # exact match on the toy dates after 300 steps, 1e-2 reached 0.9995.
        "learning_rate": 1e-2,
        "eval_every": 500,
        "checkpoint_every": 500,
        "eval_batches": 16,
    },
    headline_metric="exact_match",
    headline_goal="max",
    commands=(Command(
        "translate",
        help="""Translate raw strings with a translation export.

    `-` reads standard input and @FILE a file, one sentence a line.
    """,
        handler="trainer.serving.translator:translate_lines",
        params=(
            click.Option(["--attention-png"], metavar="FILE.png",
                         help="Also write the first input's attention weights as a heatmap."),
            inputs_argument("texts"),
        )),),
    prepare="trainer.data.prepare_parallel:prepare",
)
