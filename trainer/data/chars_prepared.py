"""Training from a prepared character corpus: verified, memory-mapped, read in place.

`open_corpus` opens `data.prepared_dir` (trainer/data/prepared.py verifies every
shard) and refuses one prepared from another corpus or with other content-defining
keys (trainer/data/prepare_chars.py CONTENT_KEYS) than the run's config.

Training reads windows from the memory-mapped shards with `tf.numpy_function`
inside tf.data: one call per replica batch (B / R windows), not per example, so the
host Python cost is one call per replica per step.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from trainer.data import chars, prepared, sampling
from trainer.data.prepare_chars import CONTENT_KEYS, TASK, content_config, describe, resolve
from trainer.errors import DataError


@dataclasses.dataclass
class PreparedCorpus:
    """A verified prepared character corpus, opened for a run."""

    dataset: prepared.PreparedDataset
    vocab: chars.CharVocab
    train: prepared.TokenStream
    eval: prepared.TokenStream

    @property
    def stats(self) -> dict:
        return self.dataset.manifest["stats"]


def open_corpus(d) -> PreparedCorpus:
    """Opens `d.prepared_dir` for a run with data config `d`.

    Raises:
      DataError: not a text_generation dataset, damaged, or prepared with a
        different source or content-defining data config than this run's.
    """
    ds = prepared.open_dataset(d.prepared_dir, cache_dir=d.cache_dir)
    m = ds.manifest
    where = f"data.prepared_dir={d.prepared_dir!r}"
    if m.get("task") != TASK:
        raise DataError(f"{where} was prepared for task {m.get('task')!r}, not {TASK}. "
                        f"Prepare it with `seqtrain prepare --task {TASK}`.")
    ours = content_config(d, m["source"])
    defaults = {"vocab_sample_mb": 0}  # recorded only when set
    diffs = [f"data.{k}={_show(ours.get(k, defaults.get(k)))} (prepared with "
             f"{_show(m['data_config'].get(k, defaults.get(k)))})"
             for k in dict.fromkeys([*CONTENT_KEYS, *ours, *m["data_config"]])
             if m["data_config"].get(k) != ours.get(k)]
    if describe(d) != m["source"] and not prepared.moved(
            describe(d), m, lambda: resolve(d).files):
        diffs.insert(0, f"the corpus {_source_text(describe(d))} (prepared from "
                        f"{_source_text(m['source'])})")
    if diffs:
        raise DataError(
            f"{where} does not match this run's data config: {'; '.join(diffs)}. These "
            "change the tokens or the vocabulary (data.seq_len and data.shift do not). Set "
            "them as prepared, or prepare this config into a new directory: seqtrain "
            "prepare --task text_generation --config ... --out NEW_DIR.")
    return PreparedCorpus(ds, chars.CharVocab.from_json(ds.vocab_text), ds.splits["train"],
                          ds.splits["eval"])


def _show(v) -> str:
    return str(v).lower() if isinstance(v, bool) else repr(v) if isinstance(v, str) else str(v)


def _source_text(s: dict) -> str:
    return {"bundled": lambda: f"bundled {s.get('name')!r}", "file": lambda: repr(s.get("path")),
            "url": lambda: repr(s.get("url"))}.get(s.get("kind"), lambda: repr(s))()


def window_examples(stream: prepared.TokenStream, seq_len: int, shift: int
                    ) -> sampling.Examples:
    """Window k (tokens k*shift .. k*shift+seq_len) is example id k, as `chars.window_examples`.

    `gather` reads the windows of one id batch from the mapped shards in one
    `tf.numpy_function` call (host Python inside tf.data).
    """
    n = chars.num_windows(len(stream), seq_len, shift)
    return sampling.Examples(n, lambda k: _gather(stream, k, seq_len, shift))


def window_dataset(stream: prepared.TokenStream, seq_len: int, shift: int,
                   batch: int = 1024) -> tf.data.Dataset:
    """Unbatched `(ids[i:i+T], ids[i+1:i+T+1])` int32 pairs, i = 0, shift, ..., as
    `chars.window_dataset`, read `batch` windows per numpy call."""
    n = chars.num_windows(len(stream), seq_len, shift)
    return (tf.data.Dataset.range(n).batch(batch)
            .map(lambda k: _gather(stream, k, seq_len, shift)).unbatch())


def _gather(stream, k, seq_len: int, shift: int):
    def read(ids):
        return stream.windows(ids * shift, seq_len + 1)

    w = tf.numpy_function(read, [k], tf.int32, stateful=False)
    w = tf.ensure_shape(w, [None, seq_len + 1])
    return w[:, :-1], w[:, 1:]
