"""Exact token counts in bounded memory (trainer/data/token_counts.py), and the labelled
preparation fitting the same vocabulary when its counts spill to disk."""

from __future__ import annotations

import json
import os
import random
from collections import Counter

import pytest

from trainer import experiment
from trainer.data import prepare_labelled, token_counts
from trainer.data.token_counts import SpillingCounter


def _tokens(n, seed):
    """Zipf-like tokens with many ties, non-ASCII, and the bytes of the reserved tokens."""
    rng = random.Random(seed)
    pool = [f"w{i}".encode() for i in range(300)] + ["straße".encode(), "ΟΔΟΣ".encode(),
                                                    b"[UNK]", b""]
    return [pool[min(int(rng.paretovariate(0.8)) - 1, len(pool) - 1)] if rng.random() < 0.7
            else rng.choice(pool) for _ in range(n)]


@pytest.mark.parametrize("max_entries", [1, 7, 50, 10_000])
def test_counts_and_ranking_equal_a_counter(tmp_path, max_entries):
    want = Counter()
    with SpillingCounter(max_entries=max_entries, tmp_dir=str(tmp_path)) as counts:
        for batch in range(40):
            toks = _tokens(97, batch)
            want.update(toks)
            counts.update(toks)
        spilled = len(counts.runs)
        assert (spilled > 0) == (max_entries < len(want))
        assert dict(counts.items()) == dict(want)
        ranked = sorted(want.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
        for n in (1, 5, 64, len(want) + 3):
            assert counts.top(n) == ranked[:n]
        assert counts.top(10, exclude=[b"[UNK]", b"w0"]) == [
            kv for kv in ranked if kv[0] not in (b"[UNK]", b"w0")][:10]
    assert os.listdir(tmp_path) == []  # the runs are removed


def test_a_prepared_vocabulary_is_the_same_when_the_counts_spill(tmp_path, monkeypatch):
    rng = random.Random(2)
    words = [f"tok{i}" for i in range(400)] + ["naïve", "Straße", "\"quoted\""]
    lines = ["text,label"] + [
        '"' + " ".join(rng.choice(words) for _ in range(rng.randint(1, 12))).replace('"', '""')
        + '",' + rng.choice(["pos", "neg"]) for _ in range(500)]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = experiment.load("text_classification", None, [
        f"data.train_path={tmp_path}/train.csv", "data.vocab_size=120"])

    def vocab(out, max_entries):
        monkeypatch.setattr(token_counts, "MAX_ENTRIES", max_entries)
        prepare_labelled.prepare(cfg.data, str(tmp_path / out), seed=0, log=lambda m: None)
        return json.loads((tmp_path / out / "vocab.json").read_text())

    assert vocab("small", 16) == vocab("large", 1 << 20)
