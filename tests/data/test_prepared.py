"""Prepared datasets (trainer/data/prepared.py, prepare_chars.py, chars_prepared.py and
`seqtrain prepare`; tests/cli/test_cli_fast.py checks that preparing imports no TensorFlow).

CLI tests run `seqtrain prepare` and `train` in subprocesses from a temporary working
directory with relative paths; in-process tests check the streaming reader against the
in-memory one on the cases chunking could get wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import random

import numpy as np
import pytest

from conftest import TINY
from helpers import REPO, MIRRORED, assert_checkpoints_equal, ckpt, seqtrain, user_error
from trainer import experiment
from trainer.data import chars, prepare_chars, prepare_labelled, prepared
from trainer.errors import DataError

SMALL = ["--set", "data.seq_len=16", "--set", "model.units=8", "--set", "model.embedding_dim=8",
         "--set", "data.sample_length=0"]


def _corpus(path, lines=2500, seed=0):
    rng = random.Random(seed)
    words = ["the", "quick", "brown", "fox", "ΟΔΟΣ", "naïve", "Straße", "dog",
             "ΣΊΣΥΦΟΣ"]
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(10))
                              for _ in range(lines)) + "\n", encoding="utf-8")


def _prepare(cwd, *extra, out="prep"):
    return seqtrain("prepare", "--task", "text_generation", "--set", "data.path=corpus.txt",
                    *extra, "--out", out, cwd=cwd)


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_prepare_cli_manifest_checksums_and_reuse(tmp_path):
    _corpus(tmp_path / "corpus.txt")
    first = _prepare(tmp_path, "--set", "data.lowercase=true", "--shard-mb", "0.03",
                     "--progress-mb", "0.05")
    assert "prepared text_generation into" in first.stdout
    assert "prepare: pass 3/3 (encode, write shards):" in first.stderr  # progress lines
    m = json.loads((tmp_path / "prep" / "manifest.json").read_text())
    assert m["content_key"] in first.stdout and "MB/s" in first.stdout
    text = (tmp_path / "corpus.txt").read_text(encoding="utf-8").lower()
    assert m["sources"] == [{"path": "corpus.txt", "bytes": os.path.getsize(
        tmp_path / "corpus.txt"), "sha256": _sha(tmp_path / "corpus.txt")}]
    assert m["source"] == {"kind": "file", "path": str(tmp_path / "corpus.txt")}
    assert m["data_config"] == {"encoding": "utf-8", "lowercase": True, "eval_fraction": 0.1,
                                "min_char_count": 1}
    assert m["stats"]["chars"] == len(text)
    train, held_out = chars.split_tail(text, 0.1)
    vocab = chars.CharVocab.fit(train)
    assert (tmp_path / "prep" / "vocab.json").read_text() == vocab.to_json()
    for split, want in (("train", train), ("eval", held_out)):
        shards = m["splits"][split]["shards"]
        assert m["splits"][split]["tokens"] == len(want) == sum(s["tokens"] for s in shards)
        for s in shards:
            assert _sha(tmp_path / "prep" / s["file"]) == s["sha256"]
        ids = np.concatenate([np.load(tmp_path / "prep" / s["file"]) for s in shards])
        assert np.array_equal(ids, vocab.encode(want))  # same ids as the in-memory path
    assert len(m["splits"]["train"]["shards"]) > 3  # windows straddle shards below

    before = {p: _sha(tmp_path / "prep" / p) for p in os.listdir(tmp_path / "prep")}
    again = _prepare(tmp_path, "--set", "data.lowercase=true")
    assert again.stdout.startswith("reused:") and m["content_key"] in again.stdout
    assert {p: _sha(tmp_path / "prep" / p) for p in os.listdir(tmp_path / "prep")} == before
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]

    # Another config into the same directory: refused, nothing touched.
    message = user_error("prepare", "--task", "text_generation", "--set", "data.path=corpus.txt",
                         "--out", "prep", cwd=tmp_path, model_dir="prep",
                         expect=("--out 'prep' already holds another prepared dataset",
                                 "pass another --out"))
    assert m["content_key"][:16] in message


def test_train_from_prepared_equals_train_from_source(tmp_path):
    """Mirrored on 2 logical CPUs both ways: each replica gathers its own slice."""
    _corpus(tmp_path / "corpus.txt", lines=600)
    _prepare(tmp_path, "--shard-mb", "0.005")  # ~5 KB shards: many windows straddle two
    args = ["train", "--task", "text_generation", *TINY, *SMALL, *MIRRORED, "--set",
            "train.steps=4", "--set", "data.path=corpus.txt"]
    seqtrain(*args, "--set", "data.prepare=off", "--model-dir", "direct", cwd=tmp_path)
    from_prep = seqtrain(*args, "--set", "data.prepared_dir=prep", "--model-dir", "prep_run",
                         cwd=tmp_path)
    assert "read prepared dataset prep (content key" in from_prep.stdout, from_prep.stdout
    assert json.loads((tmp_path / "prep_run" / "runtime.json").read_text())["replicas"] == 2
    assert_checkpoints_equal(ckpt(tmp_path / "direct", 4), ckpt(tmp_path / "prep_run", 4))
    metrics = [json.loads((tmp_path / r / "metrics.json").read_text())["metrics"]
               for r in ("direct", "prep_run")]
    assert metrics[0] == metrics[1]  # the eval split too
    assert ((tmp_path / "direct" / "assets" / "vocab.json").read_text()
            == (tmp_path / "prep_run" / "assets" / "vocab.json").read_text())


def test_corrupted_shard_and_mismatched_config_are_clear_errors(tmp_path):
    _corpus(tmp_path / "corpus.txt", lines=300)
    _prepare(tmp_path)
    train = ["train", "--task", "text_generation", *TINY, *SMALL, "--set",
             "data.path=corpus.txt", "--set", "data.prepared_dir=prep", "--model-dir", "run"]
    user_error(*train, "--set", "data.lowercase=true", cwd=tmp_path, model_dir="run",
               expect=("data.prepared_dir='prep' does not match this run's data config",
                       "data.lowercase=true (prepared with false)", "NEW_DIR"))
    user_error(*[a.replace("data.path=corpus.txt", "data.path=other.txt") for a in train],
               cwd=tmp_path, model_dir="run", expect=("the corpus", "other.txt",
                                                     "prepared from", "corpus.txt"))
    shard = tmp_path / "prep" / "train-00000.npy"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"shard train-00000.npy is damaged: its SHA-256"):
        prepared.open_dataset(str(tmp_path / "prep"))
    user_error(*train, cwd=tmp_path, model_dir="run",
               expect=("train-00000.npy is damaged", "seqtrain prepare"))


def test_prepare_bad_inputs_exit_2(tmp_path):
    user_error("prepare", "--task", "text_generation", "--set", "data.path=missing.txt",
               "--out", "p", cwd=tmp_path, model_dir="p",
               expect=("data.path='missing.txt' does not exist",))
    bad = ("first line\n" * 2000 + "caf\xe9\n").encode("latin-1")  # 0xe9 at byte 22003, line 2001
    (tmp_path / "latin.txt").write_bytes(bad)
    user_error("prepare", "--task", "text_generation", "--set", "data.path=latin.txt",
               "--out", "p", cwd=tmp_path, model_dir="p",
               expect=("data.path='latin.txt' is not valid utf-8: byte 22003 (line 2001)",
                       "data.encoding"))
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "notes.txt").write_text("mine")
    _corpus(tmp_path / "corpus.txt", lines=50)
    user_error("prepare", "--task", "text_generation", "--set", "data.path=corpus.txt",
               "--out", "p", cwd=tmp_path, model_dir="p",
               expect=("--out 'p' is not empty and holds no prepared dataset",))
    # Every seqtrain task prepares; a task from outside may not (its spec names no prepare).
    plugin = {"PYTHONPATH": os.pathsep.join([REPO, os.path.join(REPO, "tests", "tasks")]),
              "SEQTRAIN_TASK_MODULES": "tasks_extra.echo_config"}
    user_error("prepare", "--task", "echo", "--out", "q", cwd=tmp_path, env=plugin,
               model_dir="q", expect=("does not support this task yet", "translation"))


@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
def test_streaming_text_equals_whole_text_lowercased(tmp_path, chunk):
    """Chunks cut after newlines: the final-sigma rule and multibyte characters split
    across reads come out as `text.lower()` of the whole file."""
    text = "ΟΔΟΣ\nΣΟΦΟΣ ΛΟΓΟΣ\nΣ\nΑΣ.\nnaïve Straße İ\n" * 5 + "tail ΟΔΟΣ"
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    source = prepare_chars.Source({}, [str(path)], "utf-8")
    got = "".join(prepare_chars.iter_text(source, True, chunk_bytes=chunk))
    assert got == text.lower()
    assert "".join(prepare_chars.iter_text(source, False, chunk_bytes=chunk)) == text


def test_decode_error_offset_and_line_across_chunks(tmp_path):
    good = "ab\nçd\n".encode() * 10  # multibyte characters and newlines before the bad byte
    path = tmp_path / "x.txt"
    path.write_bytes(good + b"\xff tail")
    source = prepare_chars.Source({}, [str(path)], "utf-8")
    for chunk in (1, 2, 5, 1 << 20):
        with pytest.raises(DataError, match=rf"byte {len(good)} \(line 21\) \(b'\\xff'\)"):
            list(prepare_chars.iter_text(source, False, chunk_bytes=chunk))


def test_token_stream_windows_across_shards():
    ids = np.arange(50, dtype=np.uint16)
    stream = prepared.TokenStream([ids[:7], ids[7:8], ids[8:30], ids[30:]])
    starts = np.array([0, 5, 6, 7, 28, 39, 30])
    got = stream.windows(starts, 11)
    assert np.array_equal(got, starts[:, None] + np.arange(11))
    with pytest.raises(IndexError):
        stream.windows(np.array([40]), 11)


def test_glob_over_several_files_concatenates_sorted(tmp_path):
    (tmp_path / "b.txt").write_text("second file\n" * 20)
    (tmp_path / "a.txt").write_text("first file\n" * 20)
    cfg = experiment.load("text_generation", None, [f"data.path={tmp_path}/*.txt"])
    out = prepare_chars.prepare(cfg.data, str(tmp_path / "out"), log=lambda m: None)
    assert [s["path"] for s in out["sources"]] == [str(tmp_path / "a.txt"),
                                                   str(tmp_path / "b.txt")]
    ds = prepared.open_dataset(str(tmp_path / "out"))
    text = "first file\n" * 20 + "second file\n" * 20
    vocab = chars.CharVocab.from_json(ds.vocab_text)
    assert vocab.decode(ds.splits["train"].read(0, len(ds.splits["train"]))) == \
        chars.split_tail(text, 0.1)[0]


def test_gs_source_and_gs_prepared_dir_through_a_verified_local_cache(gcs, tmp_path):
    _corpus(tmp_path / "corpus.txt", lines=200)
    bucket = gcs.new_bucket()
    gcs.write_object(bucket, "text/corpus.txt", (tmp_path / "corpus.txt").read_bytes())
    local = experiment.load("text_generation", None, [f"data.path={tmp_path}/corpus.txt"])
    prepare_chars.prepare(local.data, str(tmp_path / "prep"), shard_mb=0.004, log=print)
    for name in os.listdir(tmp_path / "prep"):
        gcs.write_object(bucket, f"prep/{name}", (tmp_path / "prep" / name).read_bytes())
    with gcs.applied():
        remote = experiment.load("text_generation", None,
                                 [f"data.path=gs://{bucket}/text/corpus.txt"])
        out = prepare_chars.prepare(remote.data, str(tmp_path / "from_gs"), log=print)
        assert out["sources"][0]["path"] == f"gs://{bucket}/text/corpus.txt"
        before = gcs.requests_seen(bucket)
        ds = prepared.open_dataset(f"gs://{bucket}/prep", cache_dir=str(tmp_path / "cache"))
        seen = gcs.requests_seen(bucket)
        again = prepared.open_dataset(f"gs://{bucket}/prep", cache_dir=str(tmp_path / "cache"))
        copies = len(ds.manifest["splits"]["train"]["shards"]) + 2  # + eval shard + vocab
        assert seen - before > copies  # every file was fetched once...
        assert gcs.requests_seen(bucket) - seen < copies  # ...and not again: cached
    want = prepared.open_dataset(str(tmp_path / "prep"))
    from_gs = prepared.open_dataset(str(tmp_path / "from_gs"))
    assert from_gs.manifest["splits"]["train"]["tokens"] == want.manifest["splits"]["train"][
        "tokens"]
    for split in ("train", "eval"):
        n = len(want.splits[split])
        assert len(ds.splits[split].shards) > 1 or split == "eval"
        for got in (ds, again, from_gs):
            assert np.array_equal(got.splits[split].read(0, n), want.splits[split].read(0, n))
    [cache] = os.listdir(tmp_path / "cache" / "prepared")  # content key + shard layout
    assert cache.startswith(ds.content_key + "-")
    cached = tmp_path / "cache" / "prepared" / cache / "train-00000.npy"
    data = bytearray(cached.read_bytes())
    data[-1] ^= 1
    cached.write_bytes(bytes(data))
    with gcs.applied(), pytest.raises(DataError, match="Delete the local cache copy"):
        prepared.open_dataset(f"gs://{bucket}/prep", cache_dir=str(tmp_path / "cache"))


def test_a_source_changed_during_preparation_leaves_nothing(tmp_path):
    _corpus(tmp_path / "corpus.txt", lines=200)
    cfg = experiment.load("text_generation", None, [f"data.path={tmp_path}/corpus.txt"])

    def append_during_pass_2(line):  # the progress callback runs between reads
        if "pass 2/3" in line:
            with open(tmp_path / "corpus.txt", "a") as f:
                f.write("more text\n")

    with pytest.raises(DataError, match="changed while it was being prepared"):
        prepare_chars.prepare(cfg.data, str(tmp_path / "out"), progress_mb=0.001,
                              log=append_during_pass_2)
    assert sorted(os.listdir(tmp_path)) == ["corpus.txt"]  # no out dir, no temp dir


def test_a_labelled_source_rewritten_before_the_last_pass_is_the_changed_source_error(
        tmp_path):
    """Same rows, longer texts: the writer is handed more tokens than passes 1-2 counted,
    which is reported as the source having changed (not as the writer's own count)."""
    rows = ["text,label"] + [f"row {i} text,{'ab'[i % 2]}" for i in range(300)]
    (tmp_path / "reviews.csv").write_text("\n".join(rows) + "\n")
    cfg = experiment.load("text_classification", None,
                          [f"data.train_path={tmp_path}/reviews.csv"])

    pass_2 = []

    def replace_after_pass_2(line):  # its last progress line: pass 2 has read the file
        pass_2.append("pass 2/3" in line)
        if sum(pass_2) == 2:
            longer = [r.replace(" text,", " much longer text,") for r in rows]
            (tmp_path / "new.csv").write_text("\n".join(longer) + "\n")
            os.replace(tmp_path / "new.csv", tmp_path / "reviews.csv")

    with pytest.raises(DataError, match="changed while it was being prepared"):
        prepare_labelled.prepare(cfg.data, str(tmp_path / "out"), progress_mb=0.001, seed=0,
                                 log=replace_after_pass_2)
    assert sum(pass_2) == 2
    assert sorted(os.listdir(tmp_path)) == ["reviews.csv"]
