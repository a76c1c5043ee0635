"""Config of the `text_generation` task: the corpus, windows, samples and the character LM.

No TensorFlow here (see trainer/registry.py); the Task is in trainer/tasks/text_generation.py.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import click

from trainer.config import field, prepare_mode_field
from trainer.redact import redact
from trainer.errors import ConfigError
from trainer.models.configs import RecurrentConfig
from trainer.registry import Command, TaskSpec
from trainer.tasks.configs import bundled_names


@dataclasses.dataclass(frozen=True)
class TextGenerationData:
    source: Literal["auto", "bundled", "file", "url"] = field(
        "auto", "auto: data.url if set, else data.path if set, else bundled; bundled: a "
        "public-domain text shipped with seqtrain; file: data.path; url: data.url.")
    bundled_name: str = field(
        "sonnets", "Bundled corpus for source=bundled (trainer/data/bundled/corpus_<name>.txt).")
    path: str = field("", "Text file (local or gs://) for source=file.")
    url: str = field("", "https URL of a text file; setting it trains on it (source=auto).")
    allow_http: bool = field(False, "Allow a plain http:// data.url (no transport security).")
    sha256: str = field("", "Expected SHA-256 (hex) of the download; empty records it at the first "
                        "download and re-verifies the cached copy on every reuse.")
    cache_dir: str = field("", "Download cache directory; empty means ~/.cache/seqtrain.",
                           resume_ok=True)
    max_bytes: int = field(50_000_000, "Refuse downloads larger than this many bytes.", min=1,
                           resume_ok=True)
    download_retries: int = field(3, "Retries after a connection error, timeout, 429 or 5xx.",
                                  min=0, resume_ok=True)
    download_backoff: float = field(1.0, "Seconds before the first retry; doubles each time.",
                                    min=0, resume_ok=True)
    download_timeout: float = field(30.0, "Seconds to wait for the server per attempt.", min=0,
                                   resume_ok=True)
    prepared_dir: str = field(
        "", "A prepared dataset (`seqtrain prepare --out DIR`, local or gs://) to train from "
        "instead of reading the source: checksums verified at open, windows read in place. "
        "Its source and "
        "encoding/lowercase/eval_fraction/min_char_count must match this config. Empty: read "
        "the source.", resume_ok=True)
    prepare: Literal["auto", "off"] = prepare_mode_field()
    vocab_sample_mb: float = field(
        0.0, "Fit the vocabulary on the first N x 2^20 characters of the training split only "
        "(faster on huge corpora; characters first seen later become OOV, so ids can differ "
        "from the full fit). 0: the whole training split.", min=0)
    encoding: str = field("utf-8", "Text encoding of the file or download.")
    lowercase: bool = field(False, "Lowercase the corpus (smaller vocabulary).")
    seq_len: int = field(100, "Characters per training window (the unroll length).", min=1)
    shift: int = field(1, "Characters between the starts of consecutive training windows.", min=1)
    eval_fraction: float = field(0.1, "Tail fraction of the corpus held out for evaluation.")
    min_char_count: int = field(
        1, "Characters seen fewer times in the training split map to the OOV id.", min=1)
    sample_prompt: str = field("", "Prompt for samples logged at eval; empty: start of eval split.",
                              resume_ok=True)
    sample_length: int = field(200, "Characters generated per logged sample.", min=0,
                               resume_ok=True)
    sample_temperatures: tuple[float, ...] = field(
        (0.5, 1.0), "Temperatures of the samples logged at each evaluation.", resume_ok=True)

    def validate(self, path: str) -> None:
        if self.source == "file" and not self.path:
            raise ConfigError(
                f"{path}.source=file needs {path}.path (a text file, local or gs://).")
        if self.source == "bundled" and (self.path or self.url):
            raise ConfigError(
                f"{path}.source=bundled ignores {path}.path/{path}.url; set {path}.source=auto "
                "to train on your file, or drop them.")
        if self.path and self.url:
            raise ConfigError(f"{path}.path and {path}.url are both set; keep one.")
        if self.source == "url" or self.url:
            ok = ("https://", "http://") if self.allow_http else ("https://",)
            if not self.url.startswith(ok):
                extra = (f" (plain http:// needs {path}.allow_http=true)"
                         if self.url.startswith("http://") else "")
                raise ConfigError(
                    f"{path}.url must start with https://{extra}, got {redact(self.url)!r}.")
        uses_bundled = self.source == "bundled" or (
            self.source == "auto" and not (self.path or self.url))
        names = bundled_names("corpus_", ".txt", strip_prefix=True)
        if uses_bundled and self.bundled_name not in names:
            raise ConfigError(
                f"{path}.bundled_name={self.bundled_name!r} is not a bundled corpus. "
                f"Available: {', '.join(names)}.")
        if self.sha256 and not (len(self.sha256) == 64
                                and all(c in "0123456789abcdefABCDEF" for c in self.sha256)):
            raise ConfigError(f"{path}.sha256 must be 64 hex digits or empty, got {self.sha256!r}.")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ConfigError(f"{path}.eval_fraction must be in (0, 1), got {self.eval_fraction}.")
        if any(t <= 0 for t in self.sample_temperatures):
            raise ConfigError(
                f"{path}.sample_temperatures must all be > 0, "
                f"got {list(self.sample_temperatures)}.")


@dataclasses.dataclass(frozen=True)
class TextGenerationModel(RecurrentConfig):
    units: int = field(256, "Units per recurrent layer.", min=1)
    layers: int = field(2, "Stacked recurrent layers.", min=1)
    bidirectional: bool = field(
        False, "Must stay false: a causal language model cannot look ahead.")
    embedding_dim: int = field(64, "Character embedding size.", min=1)

    def validate(self, path: str) -> None:
        super().validate(path)
        if self.bidirectional:
            raise ConfigError(
                f"{path}.bidirectional=true is not possible for text_generation: a causal "
                "language model predicts each character from the ones before it, and a "
                f"backward layer would see the answer. Set {path}.bidirectional=false.")


SPEC = TaskSpec(
    name="text_generation",
    description="Character-level language model with a stateful O(1)-per-char sampler.",
    data=TextGenerationData,
    model=TextGenerationModel,
    module="trainer.tasks.text_generation",
    # Sized for the bundled corpus (~37k chars): its eval loss bottoms out near
    # 500 steps (1.94 nats/char) and rises after (3.93 at 3000). A larger
    # corpus wants more train.steps.
    train_defaults=dict(
        steps=500, batch_size=64, learning_rate=2e-3,
        eval_every=100, checkpoint_every=250, log_every=100, eval_batches=20,
    ),
    headline_metric="loss",
    prepare="trainer.data.prepare_chars:prepare",
    headline_goal="min",
    commands=(Command(
        "generate",
        help="""Sample text from a text_generation export.

    With one prompt and one sample the text is printed as is; otherwise each
    sample follows a `==> prompt P, sample S <==` line.
    """,
        handler="trainer.serving.char_sampler:generate_lines",
        params=(
            click.Option(["--prompt", "prompts"], multiple=True,
                         help="Text to start from (default: empty). Repeat for several prompts."),
            click.Option(["--length"], default=200, show_default=True, type=int,
                         help="Characters to generate (0 to 1,000,000)."),
            click.Option(["--temperature"], default=1.0, show_default=True, type=float),
            click.Option(["--seed"], type=int, default=None,
                         help="Sampling seed (same seed, same text)."),
            click.Option(["--num-samples"], default=1, show_default=True, type=int,
                         help="Samples per prompt, all drawn in one batched call of the sampler."),
        )),),
)
