"""`train` preparing its data implicitly (data.prepare=auto, trainer/data/auto_prepare.py),
`seqtrain prepare --out gs://...` (trainer/data/prepared_writer.py) and
data.vocab_sample_mb.

CLI tests run `seqtrain` in subprocesses from a temporary working directory with a
relative --model-dir; the gs:// tests run against the emulator of tests/gcs_emulator.py,
which answers `if_generation_match=0` with 412 as real GCS does.
"""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest

from conftest import TINY
from helpers import MIRRORED, assert_checkpoints_equal, ckpt, seqtrain, user_error
from trainer import experiment
from trainer.data import chars, prepare_chars, prepared, text
from trainer.errors import UserError

SMALL = ["--set", "data.seq_len=16", "--set", "model.units=8", "--set", "model.embedding_dim=8",
         "--set", "data.sample_length=0", "--set", "data.path=corpus.txt"]
WORDS = ["the", "quick", "brown", "fox", "ΟΔΟΣ", "naïve", "Straße", "dog"]


def _lines(n, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(10)) for _ in range(n)]


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _train(cwd, *extra, steps=4, model_dir="run", env=None):
    return seqtrain("train", "--task", "text_generation", *TINY, *SMALL, "--set",
                    f"train.steps={steps}", *extra, "--model-dir", model_dir, cwd=cwd, env=env)


def _data_files(run_dir):
    """{relative path: (size, mtime_ns)} under MODEL_DIR/data."""
    root = run_dir / "data"
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def test_implicit_prepare_trains_on_the_same_examples_and_a_resume_reuses_it(tmp_path):
    """Mirrored on 2 logical CPUs: prepared implicitly == read into memory, bit for bit;
    the resume hashes the source, verifies and reuses the directory (nothing rewritten)."""
    _write(tmp_path / "corpus.txt", _lines(600))
    seqtrain("train", "--task", "text_generation", *TINY, *SMALL, *MIRRORED, "--set",
             "train.steps=4", "--set", "data.prepare=off", "--model-dir", "memory", cwd=tmp_path)
    first = seqtrain("train", "--task", "text_generation", *TINY, *SMALL, *MIRRORED, "--set",
                     "train.steps=4", "--model-dir", "run", cwd=tmp_path)
    assert not (tmp_path / "memory" / "data").exists()
    [key_dir] = os.listdir(tmp_path / "run" / "data")
    manifest = json.loads((tmp_path / "run" / "data" / key_dir / "manifest.json").read_text())
    assert key_dir == manifest["content_key"][:16]
    assert f"prepared data: 0.03 MB of source into {os.path.join('run', 'data', key_dir)}" in \
        first.stdout, first.stdout
    assert f"read prepared dataset {os.path.join('run', 'data', key_dir)}" in first.stdout
    runtime = json.loads((tmp_path / "run" / "runtime.json").read_text())
    assert runtime["prepared"] == {"dir": os.path.join("data", key_dir),
                                   "content_key": manifest["content_key"], "reused": False}
    assert "prepared_dir: ''" in (tmp_path / "run" / "config.yaml").read_text()  # the user's
    assert_checkpoints_equal(ckpt(tmp_path / "memory", 4), ckpt(tmp_path / "run", 4))
    assert [json.loads((tmp_path / r / "metrics.json").read_text())["metrics"]
            for r in ("memory", "run")][0] == json.loads(
        (tmp_path / "run" / "metrics.json").read_text())["metrics"]

    before = _data_files(tmp_path / "run")
    resumed = seqtrain("train", "--task", "text_generation", *TINY, *SMALL, *MIRRORED, "--set",
                       "train.steps=6", "--model-dir", "run", cwd=tmp_path)
    assert f"prepared data: reused {os.path.join('run', 'data', key_dir)}" in resumed.stdout
    assert "resumed from" in resumed.stdout
    assert _data_files(tmp_path / "run") == before  # not one file rewritten
    assert json.loads((tmp_path / "run" / "runtime.json").read_text())["prepared"]["reused"]

    # Evaluation reads what the run prepared: it works without the source.
    os.rename(tmp_path / "corpus.txt", tmp_path / "moved.txt")
    evaluated = seqtrain("evaluate", "--model-dir", "run", cwd=tmp_path)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    loss = float(evaluated.stdout.split("loss: ")[1].split()[0])  # one replica, not two:
    assert abs(loss - metrics["loss"]) < 1e-3, (evaluated.stdout, metrics)  # reduction order
    assert _data_files(tmp_path / "run") == before


def test_changed_source_bad_or_new_vocabulary_is_refused_same_vocabulary_is_prepared_again(
        tmp_path):
    lines = _lines(300)
    _write(tmp_path / "corpus.txt", lines)
    _train(tmp_path)
    [old_key] = os.listdir(tmp_path / "run" / "data")

    # Not UTF-8: refused while hashing the source, before anything is written.
    good = (tmp_path / "corpus.txt").read_bytes()
    (tmp_path / "corpus.txt").write_bytes(good + b"caf\xe9\n")
    user_error("train", "--task", "text_generation", *TINY, *SMALL, "--set", "train.steps=6",
               "--model-dir", "run", cwd=tmp_path, model_dir="run",
               expect=("data.path='corpus.txt' is not valid utf-8",))
    # A new character: prepared, then refused by the vocabulary check; the new
    # directory is removed again (the model dir is byte-for-byte as it was).
    _write(tmp_path / "corpus.txt", ["zzz " + lines[0], *lines[1:]])
    user_error("train", "--task", "text_generation", *TINY, *SMALL, "--set", "train.steps=6",
               "--model-dir", "run", cwd=tmp_path, model_dir="run",
               expect=("the data changed since", "'vocab.json'"))
    assert os.listdir(tmp_path / "run" / "data") == [old_key]
    # Same characters, another order: a new content key, prepared beside the old one
    # (what the in-memory path would train on), and the resume goes on.
    _write(tmp_path / "corpus.txt", lines[::-1])
    out = _train(tmp_path, steps=6)
    assert "prepared data: 0.02 MB of source into" in out.stdout and "resumed from" in out.stdout
    assert len(os.listdir(tmp_path / "run" / "data")) == 2
    new_key = json.loads((tmp_path / "run" / "runtime.json").read_text())["prepared"]["dir"]
    assert old_key not in new_key


def test_bad_source_on_a_new_model_dir_writes_nothing(tmp_path):
    (tmp_path / "corpus.txt").write_bytes(("first line\n" * 300 + "caf\xe9\n").encode("latin-1"))
    user_error("train", "--task", "text_generation", *TINY, *SMALL, "--model-dir", "runs/new",
               cwd=tmp_path, model_dir="runs/new",
               expect=("data.path='corpus.txt' is not valid utf-8", "data.encoding"))
    # Nor the parent it would have made for it: the working dir is as it was.
    assert sorted(os.listdir(tmp_path)) == ["corpus.txt"]


def test_vocab_sample_fits_a_prefix_in_both_paths(tmp_path):
    """The vocabulary of the first N characters: characters first seen later are OOV,
    identically when preparing and in memory."""
    text = "ab ba\n" * 200 + "xyz\n" * 50
    (tmp_path / "c.txt").write_text(text)
    mb = 100 / 2**20  # the first 100 characters
    cfg = experiment.load("text_generation", None, [f"data.path={tmp_path}/c.txt",
                                                    f"data.vocab_sample_mb={mb}"])
    out = prepare_chars.prepare(cfg.data, str(tmp_path / "p"), log=lambda m: None)
    assert out["manifest"]["data_config"]["vocab_sample_mb"] == mb
    ds = prepared.open_dataset(str(tmp_path / "p"))
    vocab = chars.CharVocab.from_json(ds.vocab_text)
    assert vocab.chars == "\n ab"
    full = prepare_chars.prepare(experiment.load("text_generation", None, [
        f"data.path={tmp_path}/c.txt"]).data, str(tmp_path / "f"), log=lambda m: None)
    assert "vocab_sample_mb" not in full["manifest"]["data_config"]  # the default's key
    assert full["content_key"] != out["content_key"]
    train = ds.splits["train"].read(0, len(ds.splits["train"]))
    assert (train == chars.OOV_ID).sum() == text[:int(len(text) * 0.9)].count("x") * 3

    from trainer import registry  # the in-memory path (imports TensorFlow)

    task = registry.get("text_generation")(experiment.load(
        "text_generation", None, [f"data.path={tmp_path}/c.txt", f"data.vocab_sample_mb={mb}",
                                  "data.seq_len=8"]))
    task.prepare()
    assert task.vocab.to_json() == ds.vocab_text
    assert np.array_equal(task.train_ids, train)


# --------------------------------------------------------------------- gs:// out
def test_prepare_out_gs_uploads_manifest_last_and_reuses(gcs, tmp_path):
    _write(tmp_path / "corpus.txt", _lines(200))
    bucket = gcs.new_bucket()
    env = gcs.env
    first = seqtrain("prepare", "--task", "text_generation", "--set", "data.path=corpus.txt",
                     "--shard-mb", "0.004", "--out", f"gs://{bucket}/prep", cwd=tmp_path,
                     env=env)
    assert f"prepared text_generation into gs://{bucket}/prep" in first.stdout
    seqtrain("prepare", "--task", "text_generation", "--set", "data.path=corpus.txt",
             "--shard-mb", "0.004", "--out", "local", cwd=tmp_path)
    names = sorted(os.listdir(tmp_path / "local"))
    assert sorted(gcs.list_objects(bucket, "prep/")) == [f"prep/{n}" for n in names]
    for n in names:  # byte for byte the local preparation
        assert gcs.read_object(bucket, f"prep/{n}") == (tmp_path / "local" / n).read_bytes()
    assert not [p for p in os.listdir(tmp_path) if "tmp" in p]
    generations = {n: gcs.object_metadata(bucket, f"prep/{n}")["generation"] for n in names}
    again = seqtrain("prepare", "--task", "text_generation", "--set", "data.path=corpus.txt",
                     "--out", f"gs://{bucket}/prep", cwd=tmp_path, env=env)
    assert again.stdout.startswith("reused:")
    assert {n: gcs.object_metadata(bucket, f"prep/{n}")["generation"] for n in names} == \
        generations


def test_implicit_prepare_into_a_gs_model_dir_and_reuse(gcs, tmp_path):
    _write(tmp_path / "corpus.txt", _lines(200))
    bucket = gcs.new_bucket()
    run = f"gs://{bucket}/runs/a"
    first = _train(tmp_path, "--set", "data.cache_dir=cache", steps=2, model_dir=run,
                   env=gcs.env)
    objects = gcs.list_objects(bucket, "runs/a/data/")
    [manifest] = [o for o in objects if o.endswith("/manifest.json")]
    key_dir = manifest.split("/")[3]
    assert f"MB of source into {run}/data/{key_dir}" in first.stdout, first.stdout
    assert sorted(o.split("/")[-1] for o in objects) == [
        "eval-00000.npy", "manifest.json", "train-00000.npy", "vocab.json"]
    generations = {o: gcs.object_metadata(bucket, o)["generation"] for o in objects}
    again = _train(tmp_path, "--set", "data.cache_dir=cache", model_dir=run, env=gcs.env)
    assert f"prepared data: reused {run}/data/{key_dir}" in again.stdout
    assert "resumed from" in again.stdout
    assert {o: gcs.object_metadata(bucket, o)["generation"]
            for o in gcs.list_objects(bucket, "runs/a/data/")} == generations
    assert json.loads(gcs.read_object(bucket, "runs/a/runtime.json"))["prepared"]["dir"] == \
        f"{run}/data/{key_dir}"


@pytest.mark.parametrize("racer_lowercase", [False, True])
def test_two_preparers_of_one_gs_dir_never_clobber(gcs, tmp_path, racer_lowercase):
    """A second preparer publishes into the same gs:// directory while this one encodes
    (pass 3): the same dataset is accepted (its objects are byte-identical, its manifest
    wins); a different one is refused, and the winner's objects are untouched."""
    _write(tmp_path / "corpus.txt", _lines(200))
    bucket = gcs.new_bucket()
    out = f"gs://{bucket}/prep"
    ours = experiment.load("text_generation", None, [f"data.path={tmp_path}/corpus.txt"]).data
    racer = experiment.load("text_generation", None, [
        f"data.path={tmp_path}/corpus.txt", f"data.lowercase={str(racer_lowercase).lower()}"]).data
    raced = []

    def race(line):
        if "pass 3/3" in line and not raced:
            raced.append(prepare_chars.prepare(racer, out, shard_mb=0.004, log=lambda m: None))

    with gcs.applied():
        if racer_lowercase:
            with pytest.raises(UserError, match="already exists there with other bytes"):
                prepare_chars.prepare(ours, out, shard_mb=0.004, progress_mb=0.001, log=race)
        else:
            result = prepare_chars.prepare(ours, out, shard_mb=0.004, progress_mb=0.001,
                                           log=race)
            # the racer's manifest, as read back from the bucket (412 on ours)
            assert result["manifest"] == json.loads(gcs.read_object(bucket, "prep/manifest.json"))
            assert result["content_key"] == raced[0]["content_key"]
        ds = prepared.open_dataset(out, cache_dir=str(tmp_path / "cache"))
    assert raced and ds.content_key == raced[0]["content_key"]  # the winner's, intact
    manifest = json.loads(gcs.read_object(bucket, "prep/manifest.json"))
    assert manifest["data_config"]["lowercase"] is racer_lowercase


def _tc(*extra, model_dir, path):
    """A tiny text_classification run on `path` (the bundled reviews' bytes)."""
    return ["train", "--task", "text_classification", *TINY, "--set", "data.sequence_length=8",
            "--set", f"data.train_path={path}", "--model-dir", model_dir, *extra]


def test_a_prepared_dataset_accepts_its_source_at_another_path_with_the_same_bytes(
        tmp_path):
    """A prepared dataset names its sources by path but holds their bytes: the same
    file at another path (copied to another machine, a colleague's copy) trains on it
    through data.prepared_dir; other bytes there are refused, naming both files, with
    the model dir unchanged."""
    reviews = open(text.bundled_path("reviews.csv"), "rb").read()
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "reviews.csv").write_bytes(reviews)
    seqtrain(*_tc("--stop-at", "2", model_dir="run", path="a/reviews.csv"), cwd=tmp_path)
    [key] = os.listdir(tmp_path / "run" / "data")
    explicit = ["--set", f"data.prepared_dir=run/data/{key}"]
    out = seqtrain(*_tc(*explicit, "--stop-at", "2", model_dir="other", path="b/reviews.csv"),
                   cwd=tmp_path)
    assert f"read prepared dataset run/data/{key}" in out.stdout
    # Same size, other bytes: not the prepared source.
    (tmp_path / "b" / "reviews.csv").write_bytes(reviews.replace(b"great", b"GREAT", 1))
    user_error(*_tc(*explicit, model_dir="other", path="b/reviews.csv"),
               cwd=tmp_path, model_dir="other",
               expect=("does not match this run's config", "b/reviews.csv",
                       "prepared from", "a/reviews.csv"))


def test_a_worker_whose_cache_holds_the_key_from_another_path_trains(tmp_path):
    """A non-chief worker prepares into its machine's cache (data.cache_dir or
    $XDG_CACHE_HOME/seqtrain), shared by every job there: a dataset another job
    prepared there from identical bytes at another path is reused, not refused (the
    refusal stopped worker 1 and left worker 0 in a collective)."""
    reviews = open(text.bundled_path("reviews.csv"), "rb").read()
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "reviews.csv").write_bytes(reviews)
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    seqtrain("prepare", "--task", "text_classification", "--set", "data.sequence_length=8",
             "--set", "data.train_path=a/reviews.csv",
             "--out", "cache/seqtrain/prepared-work/{key}", cwd=tmp_path, env=env)
    launch = ["launch", "--workers", "2", "--"]
    out = seqtrain(*launch, *_tc("--stop-at", "2", model_dir="run", path="b/reviews.csv"),
                   cwd=tmp_path, env=env).stdout
    assert "Traceback" not in out and "[worker-0]   config      : run/config.yaml" in out
    assert os.listdir(tmp_path / "cache" / "seqtrain" / "prepared-work") == os.listdir(
        tmp_path / "run" / "data")


def test_a_start_killed_while_preparing_leaves_a_dir_the_next_start_takes(tmp_path):
    """kill -9 during the implicit preparation, before config.yaml exists, leaves
    MODEL_DIR/data/ with a complete dataset and/or the writer's temporary dir (found by
    scripts/chaos.py): the next start is a new run that reuses the dataset and removes
    the temporary dir. A dir whose data/ holds anything else is still refused."""
    import shutil

    (tmp_path / "reviews.csv").write_bytes(open(text.bundled_path("reviews.csv"), "rb").read())
    seqtrain(*_tc("--stop-at", "1", model_dir="done", path="reviews.csv"), cwd=tmp_path)
    [key] = os.listdir(tmp_path / "done" / "data")
    killed = tmp_path / "killed" / "data"
    shutil.copytree(tmp_path / "done" / "data" / key, killed / key)
    (killed / f".{key}.tmp-0123abcd").mkdir()
    (killed / f".{key}.tmp-0123abcd" / "train.tokens-00000.npy").write_bytes(b"\x93NUMPY")
    out = seqtrain(*_tc("--stop-at", "1", model_dir="killed", path="reviews.csv"), cwd=tmp_path)
    assert f"prepared data: reused killed/data/{key}" in out.stderr + out.stdout
    assert os.listdir(killed) == [key]
    assert (tmp_path / "killed" / "config.yaml").exists()

    (tmp_path / "mine" / "data").mkdir(parents=True)
    (tmp_path / "mine" / "data" / "reviews.csv").write_text("text,label\n")
    user_error(*_tc(model_dir="mine", path="reviews.csv"), cwd=tmp_path, model_dir="mine",
               expect=("is not empty and is not a seqtrain run",))
