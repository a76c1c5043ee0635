"""The translation task: model invariants in process, training and export through the CLI.

In-process tests use tiny random or briefly trained models. End-to-end tests
run `seqtrain` in real processes; exports are loaded in a fresh Python process
that never imports `trainer`.
"""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY
from helpers import (assert_checkpoints_equal, ckpt, read_scalars, run_without_trainer,
                     user_error)
from trainer import experiment
from trainer import registry
from trainer.data import parallel
from trainer.data.parallel import END, START
from trainer.errors import DataError, UserError
from trainer.models.seq2seq import Seq2Seq, Seq2SeqConfig, greedy_choice

MIRRORED = ["--set", "runtime.strategy=mirrored", "--set", "runtime.cpu_replicas=2"]
SMALL = ["--set", "data.toy_size=300", "--set", "model.embedding_dim=8"]


# ---- model invariants (in process) --------------------------------------------------

MODEL_VARIANTS = [
    dict(cell="lstm", bidirectional=True, attention="additive", layers=1),
    dict(cell="gru", bidirectional=False, attention="none", layers=2),
    dict(cell="lstm", bidirectional=True, attention="additive", layers=2),
]


@pytest.mark.filterwarnings("ignore:You are using a softmax over axis -1")  # 1-token source
@pytest.mark.parametrize("variant", MODEL_VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_right_padding_never_changes_real_positions(variant):
    keras.utils.set_random_seed(3)
    model = Seq2Seq(Seq2SeqConfig(units=8, embedding_dim=8, **variant), 20, 15).build_for(9, 7)
    rng = np.random.default_rng(0)
    lengths = [(3, 2), (9, 7), (1, 1), (6, 4)]
    source = np.zeros([4, 9], np.int32)
    target = np.zeros([4, 7], np.int32)
    for row, (s, t) in enumerate(lengths):
        source[row, :s] = rng.integers(4, 20, s)
        target[row, :t] = [START] + list(rng.integers(4, 15, t - 1))
    padded_memory = model.encode(source)
    padded_logits, padded_attention = model.forward(source, target)
    for row, (s, t) in enumerate(lengths):
        alone = model.encode(source[row:row + 1, :s])
        np.testing.assert_allclose(padded_memory["outputs"][row, :s], alone["outputs"][0],
                                   atol=1e-5)
        for got, want in zip(tf.nest.flatten(padded_memory["states"]),
                             tf.nest.flatten(alone["states"])):
            np.testing.assert_allclose(got[row], want[0], atol=1e-5)
        logits, attention = model.forward(source[row:row + 1, :s], target[row:row + 1, :t])
        np.testing.assert_allclose(padded_logits[row, :t], logits[0], atol=1e-5)
        if attention is not None:
            np.testing.assert_allclose(padded_attention[row, :t, :s], attention[0], atol=1e-5)
            np.testing.assert_allclose(padded_attention[row, :t, s:], 0.0, atol=1e-6)


@pytest.mark.parametrize("variant", MODEL_VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_checkpoint_holds_every_weight(tmp_path, variant):
    """Keras 3 layers kept in Python lists are invisible to tf.train.Checkpoint."""
    keras.utils.set_random_seed(1)
    model = Seq2Seq(Seq2SeqConfig(units=8, embedding_dim=8, **variant), 20, 15).build_for(5, 4)
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    saved = [n for n, _ in tf.train.list_variables(path) if n.startswith("model/")]
    assert len(saved) == len(model.weights)

    keras.utils.set_random_seed(2)
    other = Seq2Seq(Seq2SeqConfig(units=8, embedding_dim=8, **variant), 20, 15).build_for(5, 4)
    tf.train.Checkpoint(model=other).read(path).assert_consumed()
    inputs = {"source": tf.constant([[5, 6, 7, 0, 0]]), "target_in": tf.constant([[1, 4, 5, 0]])}
    np.testing.assert_array_equal(model(inputs), other(inputs))


def _briefly_trained_task(steps: int = 60):
    """A numbers->digits model trained a few steps in process (variable-length outputs)."""
    keras.utils.set_random_seed(0)
    cfg = experiment.load(task="translation", overrides=[
        "model.units=16", "model.embedding_dim=8", "data.toy=numbers", "data.toy_size=600"])
    task = registry.get("translation")(cfg)
    task.prepare()
    model = task.build_model()
    optimizer = keras.optimizers.Adam(0.01)

    @tf.function
    def train_step(features, labels):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(task.loss(model, features, labels))
        optimizer.apply(tape.gradient(loss, model.trainable_variables),
                        model.trainable_variables)

    for features, labels in task.dataset("train").shuffle(1000, seed=1).repeat().batch(32).take(steps):
        train_step(features, labels)
    return task, model


def test_batched_greedy_decode_equals_step_by_step_decode():
    task, model = _briefly_trained_task()
    sources = task._arrays["eval"][0]["source"][:8]  # padded to the longest source
    ids, attention = task.decode_ids(model, sources)
    forward = tf.function(model.forward, reduce_retracing=True)
    max_length = task.config.data.max_target_length + 1
    ended_at = set()
    for row, source in enumerate(sources):
        alone = source[source != 0][None]
        prefix = [START]
        for _ in range(max_length):  # the textbook loop: rerun the decoder on the prefix
            logits, weights = forward(tf.constant(alone), tf.constant([prefix]))
            prefix.append(int(greedy_choice(logits[:, -1])[0]))
            if prefix[-1] == END:
                break
        n = len(prefix) - 1
        assert ids[row, :n].tolist() == prefix[1:], row
        assert not ids[row, n:].any()
        np.testing.assert_allclose(attention[row, :n, :alone.shape[1]], weights[0], atol=1e-5)
        ended_at.add(n)
    assert len(ended_at) > 1, "outputs should end at different steps"


def _prepared(tmp_path, lines: list[str], *overrides: str):
    corpus = tmp_path / "corpus.tsv"
    corpus.write_text("".join(line + "\n" for line in lines))
    cfg = experiment.load(task="translation", overrides=[
        "data.source=tsv", f"data.path={corpus}", "data.tokenize=word", *overrides])
    task = registry.get("translation")(cfg)
    task.prepare()
    return task


def test_long_pairs_are_dropped_and_counted(tmp_path):
    lines = [f"w{i} x y\tv{i}" for i in range(40)] + ["a b c d e f\tshort", "s\tt t t t t"]
    task = _prepared(tmp_path, lines, "data.max_source_length=3", "data.max_target_length=4",
                     "data.eval_fraction=0.25")
    assert sum(task.dropped.values()) == 2
    assert task.source_length == 3 and task.target_length == 1
    features, labels = task._arrays["train"]
    assert features["source"].shape[1] == 3 and labels.shape[1] == 2
    # the vocabulary is fitted on the training split only
    train_words = {task.source_vocab.tokens[i] for i in features["source"].ravel() if i > 3}
    assert set(task.source_vocab.tokens[4:]) == train_words
    eval_only = {f"w{i}" for i in range(40)} - train_words
    assert eval_only and not eval_only & set(task.source_vocab.tokens)


def test_all_pairs_too_long_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="all .* train pairs were dropped.*max_source_length=2"):
        _prepared(tmp_path, [f"a b c {i}\tx" for i in range(10)], "data.max_source_length=2")


def test_export_with_dropout_without_attention(tmp_path):
    """Exports translate; without attention the heatmap is a clean UserError."""
    cfg = experiment.load(task="translation", overrides=[
        "data.toy_size=100", "model.units=8", "model.cell=gru", "model.bidirectional=false",
        "model.attention=none", "model.layers=2", "model.dropout=0.1",
        "model.recurrent_dropout=0.1"])  # RNN dropout draws RNG even in inference graphs
    task = registry.get("translation")(cfg)
    task.prepare()
    task.export(task.build_model(), str(tmp_path / "run" / "export"))
    (tmp_path / "run" / "config.yaml").write_text(cfg.to_yaml())  # as `seqtrain train` writes
    from trainer.serving import translator

    out = translator.translate(str(tmp_path / "run"), ["3 may 2001", "", "\u00e9\u00e9 unknown"])
    assert len(out) == 3 and all(isinstance(t, str) for t in out)
    assert translator.translate(str(tmp_path / "run"), []) == []
    with pytest.raises(UserError, match="model.attention=none"):
        translator.attention_heatmap(str(tmp_path / "run"), "3 may 2001", str(tmp_path / "a.png"))


# ---- end to end through the CLI --------------------------------------------------------


def _metrics(run) -> dict:
    return json.loads((run / "metrics.json").read_text())


FRESH_TRANSLATE = """
import json, sys
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
out = loaded.signatures["translate"](texts=tf.constant(sys.argv[2:]))
print(json.dumps({"translations": [t.decode() for t in out["translation"].numpy()],
                  "keys": sorted(out)}))
"""


def _fresh_translate(export_dir: str, texts: list[str]) -> dict:
    return run_without_trainer(FRESH_TRANSLATE, export_dir, *texts)


def _numbers_tsv(path, n: int = 300) -> list[str]:
    """Tatoeba-style word-level corpus: 'number words<TAB>d i g i t s<TAB>attribution'."""
    pairs = parallel.toy_pairs("numbers", n, seed=5)
    path.write_text("".join(f"{s}\t{' '.join(t)}\tCC-BY #{i}\n" for i, (s, t) in enumerate(pairs)))
    return [s for s, _ in pairs[:2]]


def _event_tags(log_dir) -> set[str]:
    tags = set()
    for f in log_dir.iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(f)):
            tags |= {v.tag for v in event.summary.value}
    return tags


@pytest.mark.parametrize("strategy", ["default", "mirrored"])
def test_train_resume_export_translate(run_cli, tmp_path, strategy):
    run = tmp_path / "run"
    if strategy == "default":  # toy dates, char level, with dropout, XLA as on CPU by default
        extra = SMALL + ["--set", "model.dropout=0.1", "--set", "runtime.jit_compile=auto"]
        texts = ["the 3rd of march 2021", "Mar 3, 2021"]
    else:  # a word-level TSV corpus under Mirrored on 2 CPUs
        texts = _numbers_tsv(tmp_path / "numbers.tsv")
        extra = SMALL[2:] + MIRRORED + ["--set", "data.source=tsv", "--set", "data.tokenize=word",
                                        "--set", f"data.path={tmp_path / 'numbers.tsv'}"]
    run_cli("train", "--task", "translation", *TINY, *extra, "--model-dir", str(run))
    assert _metrics(run)["step"] == 6
    for name in ("config.yaml", "runtime.json", "assets/translation_vocab.json",
                 "export/saved_model.pb", "export/assets.extra/seqtrain.json"):
        assert (run / name).exists(), name
    info = json.loads((run / "runtime.json").read_text())
    assert info["replicas"] == (2 if strategy == "mirrored" else 1)
    if strategy == "default":
        assert info["jit_compile"] is True and "auto" in info["jit_compile_reason"]  # CPU default
    else:
        assert info["jit_compile"] is False  # TINY's runtime.jit_compile=false
    vocab = json.loads((run / "assets" / "translation_vocab.json").read_text())
    assert vocab["source"][:4] == list(parallel.SPECIALS)
    assert vocab["tokenize"] == ("char" if strategy == "default" else "word")

    resumed = run_cli("train", "--task", "translation", *TINY, *extra, "--set", "train.steps=10",
                      "--model-dir", str(run))
    assert "resumed from" in resumed.stdout and "at step 6" in resumed.stdout
    metrics = _metrics(run)
    assert metrics["step"] == 10
    for key in ("loss", "token_accuracy", "exact_match", "bleu"):
        assert np.isfinite(metrics["metrics"][key]), key
    assert {"samples", "attention"} <= _event_tags(run / "eval")
    if strategy == "default":  # exact resume: 6 + 4 steps == 10 steps, bit for bit
        straight = tmp_path / "straight"
        run_cli("train", "--task", "translation", *TINY, *extra, "--set", "train.steps=10",
                "--model-dir", str(straight))
        assert_checkpoints_equal(ckpt(run, 10), ckpt(straight, 10), must_have=("model/", "rng"))

    png = tmp_path / "plots" / "attention.png"
    out = run_cli("translate", "--model-dir", str(run), "--attention-png", str(png), *texts)
    lines = out.stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in lines[:2]] == texts
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    fresh = _fresh_translate(str(run / "export"), texts)
    assert {"translation", "attention", "source_tokens", "target_tokens"} <= set(fresh["keys"])
    assert fresh["translations"] == [line.split("\t", 1)[1] for line in lines[:2]]


def test_toy_dates_exact_match_far_above_chance(run_cli, tmp_path):
    """200 steps (well under a minute on 2 cores) learn dates in ten formats -> ISO.

    Chance: a date guessed uniformly among the corpus' days is right with
    p0 = 1/parallel._DAYS; over the n evaluated examples, exact match must clear
    p0 by 5 binomial standard deviations. Learning is measured against the same
    run's earlier eval (step 50), not a copied number.
    """
    run = tmp_path / "run"
    run_cli("train", "--task", "translation", "--set", "data.toy_size=3000",
            "--set", "model.units=32", "--set", "model.embedding_dim=16",
            "--set", "train.steps=200", "--set", "train.batch_size=64",
            "--set", "train.learning_rate=0.01", "--set", "train.steps_per_loop=50",
            "--set", "train.eval_every=50", "--set", "train.checkpoint_every=200",
            "--set", "train.log_every=50", "--set", "train.eval_batches=4",
            "--model-dir", str(run))
    metrics = _metrics(run)["metrics"]
    n, p0 = 4 * 64, 1 / parallel._DAYS
    assert metrics["exact_match"] > p0 + 5 * math.sqrt(p0 * (1 - p0) / n), metrics
    exact = read_scalars(run / "eval", "exact_match")
    bleu = read_scalars(run / "eval", "bleu")
    assert sorted(exact) == [50, 100, 150, 200]
    assert exact[200] > exact[50] and bleu[200] > bleu[50], (exact, bleu)

    # The translate command agrees with the eval measure: on 10 unseen dates it
    # gets at least what exact match predicts minus 5 binomial deviations.
    unseen = parallel.toy_pairs("dates", 10, seed=999)
    out = run_cli("translate", "--model-dir", str(run), *[s for s, _ in unseen])
    got = [line.split("\t")[1] for line in out.stdout.strip().splitlines()]
    em = metrics["exact_match"]
    correct = sum(g == t for g, (_, t) in zip(got, unseen))
    assert correct >= max(1, 10 * em - 5 * math.sqrt(10 * em * (1 - em))), list(zip(unseen, got))


@pytest.mark.parametrize("content,message", [
    (None, "does not exist"),
    ("", "is empty"),
    ("Go.\tVe.\n\nHi.\tHola.\n", "line 2 is empty"),
    ("Go.\tVe.\nHi. Hola.\n", "line 2 has no tab"),
])
def test_bad_corpus_is_a_clean_cli_error(run_cli, tmp_path, content, message):
    corpus = tmp_path / "corpus.tsv"
    if content is not None:
        corpus.write_text(content)
    user_error("train", "--task", "translation", *TINY, "--set", "data.source=tsv",
               "--set", f"data.path={corpus}", "--model-dir", "run", cwd=tmp_path,
               model_dir="run", expect=(message, str(corpus)))
    assert not (tmp_path / "run").exists()


def test_config_and_translate_errors_are_clean(run_cli, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text("task:\n  name: text_generation\n")
    cases = [
        (["train", "--task", "translation", "--set", "data.source=tsv",
          "--model-dir", str(tmp_path / "run")], "data.source=tsv needs data.path"),
        (["translate", "--model-dir", str(tmp_path / "nothing"), "hi"],
         "does not exist"),
        (["translate", "--model-dir", str(other), "hi"],
         "holds a 'text_generation' run; `seqtrain translate` does not serve that task. "
         "Use `seqtrain generate"),
    ]
    for args, message in cases:
        user_error(*args, model_dir=args[args.index("--model-dir") + 1], expect=(message,))


def test_corpus_model_dir_and_heatmap_on_gcs(run_cli, gcs, tmp_path):  # noqa: F811
    """data.path, --model-dir and the heatmap PNG on gs:// (the GCS emulator)."""
    bucket = gcs.new_bucket()
    pairs = parallel.toy_pairs("dates", 200, seed=3)
    gcs.write_object(bucket, "data/dates.tsv", "".join(f"{s}\t{t}\n" for s, t in pairs))
    gcs.write_object(bucket, "data/bad.tsv", "a\tb\nno tab\n")
    proc = run_cli("train", "--task", "translation", *TINY, "--set", "data.source=tsv",
                   "--set", f"data.path=gs://{bucket}/data/bad.tsv",
                   "--model-dir", f"gs://{bucket}/bad", env=gcs.env, check=False)
    assert proc.returncode == 2 and f"gs://{bucket}/data/bad.tsv' line 2 has no tab" in proc.stderr

    run = f"gs://{bucket}/run"
    run_cli("train", "--task", "translation", *TINY, "--set", "data.source=tsv",
            "--set", f"data.path=gs://{bucket}/data/dates.tsv", "--model-dir", run, env=gcs.env)
    run_cli("translate", "--model-dir", run, "--attention-png", f"gs://{bucket}/plots/a.png",
            pairs[0][0], env=gcs.env)
    objects = gcs.list_objects(bucket)
    for name in ("run/assets/translation_vocab.json", "run/export/saved_model.pb",
                 "run/export/assets.extra/seqtrain.json", "plots/a.png"):
        assert name in objects, (name, objects)
    assert gcs.read_object(bucket, "plots/a.png").startswith(b"\x89PNG")
    assert not [o for o in objects if o.startswith("bad/")]
