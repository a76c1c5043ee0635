"""`seqtrain prepare` and implicit preparation for translation
(trainer/data/prepare_parallel.py, parallel_prepared.py).

As for the other tasks (tests/data/test_prepared_tasks.py): a run from the prepared
directory trains on exactly the examples of a run from the corpus, so the checkpoints
are bitwise equal (Mirrored on 2 logical CPUs, each replica reading its own slice).
In-process checks compare every training example, the eval split, the references and
the assets with the in-memory path on real-format corpora.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import random

import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY
from helpers import MIRRORED, assert_checkpoints_equal, ckpt, seqtrain, user_error
from trainer import experiment, registry
from trainer.data import parallel, prepare_parallel, prepared, token_counts
from trainer.errors import DataError

WORDS = ["Tom", "isn't", "«très»", "naïve", "Straße", '"quoted', 'say "hi"', "it's", "ÉTÉ",
         "été", "dog.", "(ok)", "¿qué?", "x\u00a0y", "日本語", "the", "a-b", "[UNK]"]
SMALL = ["--set", "model.embedding_dim=8", "--set", "train.steps=4"]


def _tatoeba(path, n, seed=0, crlf=False):
    """A header-less Tatoeba/ManyThings-like file: source, target, then an attribution
    column; repeated sources (several translations), quotes inside texts, CRLF and a
    byte-order mark when `crlf`."""
    rng = random.Random(seed)
    sources = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5)))
               for _ in range(n // 2)]
    lines = []
    for i in range(n):
        target = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8)))
        lines.append(f"{rng.choice(sources)}\t{target}\tCC-BY 2.0 (France) Attribution: "
                     f"tatoeba.org #{i} (CK) & #{i + 7} (Aiji)")
    nl = "\r\n" if crlf else "\n"
    path.write_text("\ufeff" * crlf + nl.join(lines) + nl, encoding="utf-8", newline="")


def _task(overrides):
    task = registry.get("translation")(experiment.load("translation", None, overrides))
    task.prepare()
    return task


def _data_files(run_dir):
    root = run_dir / "data"
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("read", ["arrays-in-memory", "pread-per-example", "sources-spilled"])
@pytest.mark.parametrize("case", ["word_reverse_limit", "eval_file", "toy_numbers"])
def test_examples_equal_in_memory(tmp_path, monkeypatch, case, read):
    """Every training example, the eval split, references, samples, assets and the
    dropped counts equal the in-memory path's (shards of a few hundred bytes), whether
    the run reads the prepared arrays into memory (a split within
    prepared.IN_MEMORY_BYTES) or a pread per example (a larger one), and when the
    preparation's count of distinct sources spills to many sorted runs (7 per run)."""
    if read == "pread-per-example":
        monkeypatch.setattr(prepared, "IN_MEMORY_BYTES", 0)
    if read == "sources-spilled":
        monkeypatch.setattr(token_counts, "MAX_ENTRIES", 7)
    if case == "toy_numbers":
        over = ["data.source=toy", "data.toy=numbers", "data.toy_size=400", "runtime.seed=9"]
    else:
        _tatoeba(tmp_path / "train.tsv", 400, seed=1, crlf=True)
        over = [f"data.path={tmp_path}/train.tsv", "data.max_target_length=30"]
        if case == "eval_file":
            _tatoeba(tmp_path / "eval.tsv", 60, seed=2)
            over += [f"data.eval_path={tmp_path}/eval.tsv", "data.lowercase=true"]
        else:
            over += ["data.tokenize=word", "data.reverse=true", "data.max_pairs=300",
                     "data.max_source_length=6", "data.min_count=2", "runtime.seed=3"]
    cfg = experiment.load("translation", None, over)
    prepare_parallel.prepare(cfg.data, str(tmp_path / "prep"), shard_mb=0.0005,
                             seed=cfg.runtime.seed, log=lambda m: None)
    a, b = _task(over), _task([*over, f"data.prepared_dir={tmp_path}/prep"])
    assert a.assets() == b.assets() and a.dropped == b.dropped
    if case == "word_reverse_limit":
        assert a.dropped["train"] > 0
    ea, eb = a.train_examples(), b.train_examples()
    assert ea.count == eb.count
    ids = tf.random.shuffle(tf.range(ea.count, dtype=tf.int64), seed=1)
    for x, y in zip(tf.nest.flatten(ea.gather(ids)), tf.nest.flatten(eb.gather(ids))):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x.numpy(), y.numpy())
    want, got = (list(t.dataset("eval").as_numpy_iterator()) for t in (a, b))
    assert len(got) == len(want) > 0
    for p, q in zip(want, got):
        for x, y in zip(tf.nest.flatten(p), tf.nest.flatten(q)):
            assert x.dtype == y.dtype and np.array_equal(x, y)
    assert a._references(10**6) == b._references(10**6)
    assert np.array_equal(a._eval_sources(0), b._eval_sources(0))
    assert np.array_equal(a._eval_sources(5), b._eval_sources(5))
    assert a.eval_sources[:8] == b.eval_sources[:8]
    ra, rb = a.data_report(), b.data_report()
    assert ra["lines"][-2:] == rb["lines"][-2:] and ra["train"] == rb["train"]


def _held_by_drawing(count, n_pairs, eval_fraction, seed):
    """The held-out sources as runs made before this file's streaming split drew them:
    sorted distinct sources, a seeded permutation, drawn one by one until their pairs
    reach the target. Existing runs' eval splits depend on it staying so."""
    sources = sorted(count)
    order = np.random.default_rng(seed).permutation(len(sources))
    wanted, held, total = max(1, round(eval_fraction * n_pairs)), set(), 0
    for i in order:
        if total >= wanted:
            break
        held.add(sources[i])
        total += count[sources[i]]
    return held


@pytest.mark.parametrize("seed", range(6))
def test_the_held_out_sources_are_drawn_as_before(seed):
    rng = random.Random(seed)
    count = collections.Counter({"".join(rng.choice("ab é日\t") for _ in range(rng.randint(1, 6))):
                                 rng.randint(1, 4) for _ in range(rng.randint(1, 60))})
    n = sum(count.values())
    for fraction in (0.0, 0.1, 0.5, 1.0):
        assert parallel.held_sources(count, n, fraction, seed) == _held_by_drawing(
            count, n, fraction, seed)


TRICKY = {  # name: (file bytes, data config changes)
    "bom_crlf_extra_columns": ("\ufeffHi.\tSalut !\tCC-BY\r\nJe dis « oui ».\tI say \"yes\".\t\t"
                               "x\r\n".encode(), {}),
    "no_final_newline_reverse": ("日本語\tété\nñ\t\"q\" x\nx\ty\t\nz\ty".encode(), {"reverse": True}),
    "limit_stops_before_a_bad_line": (b"a\tb\nc\td\nno tab\n", {"max_pairs": 2}),
    "cr_and_u2028_inside_a_line": ("a\rb\tc\u2028d\ne\tf\r\r\n".encode(), {}),
    "nbsp_only_line": ("a\tb\n\u00a0\nc\td\n".encode(), {}),
    "blank_last_line": (b"a\tb\n\n", {}),
    "whitespace_only": (b" \n\t\r\n", {}),
    "long_line": (b"a\tb\n" + b"x\t" + b"y" * 40 + b"\nno tab\n", {"max_field_bytes": 30}),
    "long_line_then_limit": (b"a\tb\n" + b"x\t" + b"y" * 40 + b"\n", {"max_field_bytes": 30,
                                                                    "max_pairs": 1}),
    "latin1": ("a\tb\ncaf\u00e9\tc\n".encode("latin-1"), {}),
    "latin1_declared": ("a\tb\ncaf\u00e9\tc\n".encode("latin-1"), {"encoding": "latin-1"}),
}


@pytest.mark.parametrize("name", sorted(TRICKY))
def test_streamed_lines_read_as_read_tsv(tmp_path, name):
    """The streaming reader gives `read_tsv`'s pairs, or its error, at every chunk size."""
    raw, changes = TRICKY[name]
    path = str(tmp_path / "c.tsv")
    (tmp_path / "c.tsv").write_bytes(raw)
    d = dataclasses.replace(experiment.load("translation", None, [f"data.path={path}"]).data,
                            **changes)

    def outcome(read):
        try:
            return read()
        except DataError as e:
            return f"DataError: {e}"

    want = outcome(lambda: parallel.read_tsv(
        path, reverse=d.reverse, limit=d.max_pairs, encoding=d.encoding,
        max_field_bytes=d.max_field_bytes))
    for chunk in (1, 2, 3, 5, 4096):
        got = outcome(lambda: list(prepare_parallel._Tsv(
            d, path, "data.path", d.max_pairs, chunk_bytes=chunk).pairs(lambda b: None)))
        assert got == want, (chunk, got, want)


def test_prepare_cli_and_train_bitwise_equal_then_translate(tmp_path):
    _tatoeba(tmp_path / "fra.txt", 300, crlf=True)
    data = ["--set", "data.path=fra.txt", "--set", "data.max_target_length=30"]
    out = seqtrain("prepare", "--task", "translation", *data, "--shard-mb", "0.001",
                   "--out", "prep/fra", cwd=tmp_path)
    assert "prepared translation into" in out.stdout, out.stdout
    m = json.loads((tmp_path / "prep" / "fra" / "manifest.json").read_text())
    assert m["data_config"]["split_seed"] == 42 and m["stats"]["dropped"]["train"] > 0
    assert m["sources"][0]["read"] == ("read fra.txt: 300 pairs as tsv (source<TAB>target, "
                                       "no quoting)")
    assert len(m["splits"]["train.target"]["shards"]) > 3  # pairs straddle shards
    rows = m["stats"]["rows"]
    assert f"rows        : train {rows['train']}, eval {rows['eval']}" in out.stdout
    sizes = m["stats"]["vocab_sizes"]
    assert f"vocabularies source {sizes['source']}, target {sizes['target']} ids" in out.stdout
    again = seqtrain("prepare", "--task", "translation", *data, "--out", "prep/fra",
                     cwd=tmp_path)
    assert again.stdout.startswith("reused:")

    args = ["train", "--task", "translation", *TINY, *MIRRORED, *SMALL, *data]
    seqtrain(*args, "--set", "data.prepare=off", "--model-dir", "direct", cwd=tmp_path)
    run = seqtrain(*args, "--set", "data.prepared_dir=prep/fra", "--model-dir", "prep_run",
                   cwd=tmp_path)
    assert "read prepared dataset prep/fra" in run.stdout, run.stdout
    assert not (tmp_path / "direct" / "data").exists()
    assert_checkpoints_equal(ckpt(tmp_path / "direct", 4), ckpt(tmp_path / "prep_run", 4))
    metrics = [json.loads((tmp_path / r / "metrics.json").read_text())["metrics"]
               for r in ("direct", "prep_run")]
    assert metrics[0] == metrics[1] and "bleu" in metrics[0]
    vocab = "assets/translation_vocab.json"
    assert (tmp_path / "direct" / vocab).read_text() == (tmp_path / "prep_run" / vocab).read_text()

    # The export of the prepared run serves (its vocabulary came from the prepared dir).
    texts = ["Tom «très» naïve", 'say "hi" 日本語']
    said = [seqtrain("translate", "--model-dir", r, *texts, cwd=tmp_path).stdout
            for r in ("direct", "prep_run")]
    assert said[0] == said[1] and said[0].splitlines()[0].split("\t")[0] == texts[0]


def test_implicit_prepare_of_the_toy_corpus_then_a_resume_reuses_it(tmp_path):
    """data.prepare=auto on the toy corpus: the run equals the in-memory run bit for bit,
    and the resume finds MODEL_DIR/data/<key>/ and rewrites nothing."""
    toy = [*TINY, *SMALL, "--set", "data.toy_size=300"]
    seqtrain("train", "--task", "translation", *toy, "--set", "data.prepare=off",
             "--model-dir", "memory", cwd=tmp_path)
    first = seqtrain("train", "--task", "translation", *toy, "--model-dir", "run", cwd=tmp_path)
    [key_dir] = os.listdir(tmp_path / "run" / "data")
    manifest = json.loads((tmp_path / "run" / "data" / key_dir / "manifest.json").read_text())
    assert key_dir == manifest["content_key"][:16]
    assert manifest["data_config"]["toy_size"] == 300 and manifest["source"] == {"kind": "toy"}
    where = os.path.join("run", "data", key_dir)
    assert f"into {where}" in first.stdout and f"read prepared dataset {where}" in first.stdout
    assert_checkpoints_equal(ckpt(tmp_path / "memory", 4), ckpt(tmp_path / "run", 4))
    # `evaluate` reads the eval pairs the run prepared: the same numbers as from memory.
    evaluated = [seqtrain("evaluate", "--model-dir", r, cwd=tmp_path).stdout.splitlines()[1:]
                 for r in ("memory", "run")]
    assert evaluated[0] == evaluated[1] and evaluated[0][0].startswith("  loss: "), evaluated

    before = _data_files(tmp_path / "run")
    resumed = seqtrain("train", "--task", "translation", *toy, "--set", "train.steps=6",
                       "--model-dir", "run", cwd=tmp_path)
    assert f"prepared data: reused {where}" in resumed.stdout, resumed.stdout
    assert "resumed from" in resumed.stdout
    assert _data_files(tmp_path / "run") == before
    assert json.loads((tmp_path / "run" / "runtime.json").read_text())["prepared"]["reused"]
    # "What did step 2 train on?" reads the prepared pairs.
    shown = seqtrain("data", "inspect", "--model-dir", "run", "--step", "2", "--preview", "2",
                     cwd=tmp_path).stdout.splitlines()
    assert shown[1].startswith("ids: ") and len(shown[1].split()) == 1 + 8
    source, target = shown[2].split(": ", 1)[1].split(" -> ")
    assert len(target) == 10 and target[4] == target[7] == "-", shown  # an ISO date


BAD_LINES = [("no tab here", "line 4 has no tab"), ("\t", "line 4 is empty"),
             ("x\t ", "line 4 has an empty target (2nd column)")]
GOOD = ["Hi.\tSalut !", 'He said "no".\tIl a dit « non ».', "Run!\tCours !"]


def test_a_bad_corpus_is_exit_2_and_leaves_the_model_dir_as_it_was(tmp_path):
    for line, expect in BAD_LINES:
        (tmp_path / "bad.tsv").write_text("\n".join(GOOD + [line] + GOOD) + "\n",
                                          encoding="utf-8")
        user_error("prepare", "--task", "translation", "--set", "data.path=bad.tsv", "--out",
                   "prep", cwd=tmp_path, expect=(f"parallel corpus 'bad.tsv' {expect}",))
        assert not (tmp_path / "prep").exists()
    user_error("prepare", "--task", "translation", "--set", "data.path=missing.tsv", "--out",
               "prep", cwd=tmp_path, expect=("parallel corpus 'missing.tsv' does not exist",
                                             "data.source=toy"))
    user_error("train", "--task", "translation", *TINY, "--set", "data.path=bad.tsv",
               "--model-dir", "runs/new", cwd=tmp_path, model_dir="runs/new",
               expect=(expect,))
    # An existing run whose corpus went bad: refused, its directory untouched.
    (tmp_path / "ok.tsv").write_text("\n".join(GOOD * 4) + "\n", encoding="utf-8")
    seqtrain("train", "--task", "translation", *TINY, "--set", "train.steps=2",
             "--set", "data.path=ok.tsv", "--model-dir", "run", cwd=tmp_path)
    (tmp_path / "ok.tsv").write_bytes((tmp_path / "bad.tsv").read_bytes())
    user_error("train", "--task", "translation", *TINY, "--set", "train.steps=4",
               "--set", "data.path=ok.tsv", "--model-dir", "run", cwd=tmp_path,
               model_dir="run", expect=(f"parallel corpus 'ok.tsv' {expect}",))


def test_mismatched_prepared_dir_is_refused(tmp_path):
    _tatoeba(tmp_path / "fra.txt", 60)
    seqtrain("prepare", "--task", "translation", "--set", "data.path=fra.txt", "--out", "prep",
             cwd=tmp_path)
    train = ["train", "--task", "translation", *TINY, "--set", "data.path=fra.txt",
             "--set", "data.prepared_dir=prep", "--model-dir", "run"]
    user_error(*train, "--set", "data.tokenize=word", cwd=tmp_path, model_dir="run",
               expect=("data.prepared_dir='prep' does not match this run's config",
                       "data.tokenize='word' (prepared with 'char')", "NEW_DIR"))
    user_error(*train, "--set", "runtime.seed=7", cwd=tmp_path, model_dir="run",
               expect=("runtime.seed=7 (prepared with 42)",))
