"""Tests for trainer/tasks/text_generation.py.

In-process tests check the model, loss, metrics and the stateful sampler on
tiny random models; CLI tests train for a few steps in real subprocesses
(default strategy and Mirrored over 2 logical CPUs), resume, export, and
sample with `seqtrain generate` and with a process that never imports trainer.
"""

from __future__ import annotations

import collections
import functools
import http.server
import json
import math
import os
import threading

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, TINY
from helpers import run_without_trainer, user_error
from trainer import experiment
from trainer.data import chars
from trainer.errors import ConfigError, DataError, UserError
from trainer.serving import char_sampler
from trainer.tasks import text_generation as tg

SMALL = ["--set", "data.seq_len=16", "--set", "model.layers=2", "--set", "data.sample_length=20"]


def make_task(*overrides: str, prepare: bool = True) -> tg.TextGenerationTask:
    cfg = experiment.load(task="text_generation", overrides=[
        "model.units=8", "model.embedding_dim=8", "data.seq_len=16", *overrides])
    task = tg.TextGenerationTask(cfg)
    if prepare:
        task.prepare()
    return task


def ids_of(task, text: str) -> tf.Tensor:
    return tf.constant(task.vocab.encode(text).astype(np.int32))[None]


# ----------------------------------------------------------------------------
# Model, loss and metrics (in process).
# ----------------------------------------------------------------------------


def test_datasets_are_shifted_windows_of_train_and_tail():
    task = make_task("data.shift=5")
    f, t = next(iter(task.dataset("train")))
    text = chars.read_bundled("sonnets")
    assert task.vocab.decode(f.numpy()) == text[:16]
    assert task.vocab.decode(t.numpy()) == text[1:17]
    n_eval = int(round(len(text) * 0.1))
    assert len(task.eval_ids) == n_eval
    evals = list(task.dataset("eval"))
    assert len(evals) == chars.num_windows(n_eval, 16, 16)  # eval windows do not overlap
    assert task.vocab.decode(evals[1][0].numpy()) == text[len(text) - n_eval + 16:][:16]
    assert json.loads(task.assets()["vocab.json"])["chars"] == task.vocab.chars


def test_model_layout_and_float32_logits():
    task = make_task("runtime.precision=mixed_bfloat16")
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = task.build_model()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    names = [layer.name for layer in model.layers]
    assert names[:2] == ["ids", "embedding"] and names[-1] == "logits"
    assert "rnn_lstm_0" in names and "rnn_lstm_1" in names
    assert not any("bi" in n for n in names)
    out = model(ids_of(task, "Shall I"))
    assert out.dtype == tf.float32 and out.shape == (1, 7, task.vocab.size)


def test_loss_ignores_right_padding_and_eval_weights():
    task = make_task()
    model = task.build_model()
    text = "From fairest creatures"
    ids = task.vocab.encode(text).astype(np.int32)
    f, t = ids[:-1], ids[1:]
    n = len(f)
    padded_f = np.zeros((2, n + 5), np.int32)
    padded_t = np.zeros((2, n + 5), np.int32)
    padded_f[0, :n], padded_t[0, :n] = f, t
    padded_f[1, :8], padded_t[1, :8] = f[:8], t[:8]
    loss = task.loss(model, tf.constant(padded_f), tf.constant(padded_t)).numpy()
    want0 = task.loss(model, tf.constant(f[None]), tf.constant(t[None])).numpy()[0]
    want1 = task.loss(model, tf.constant(f[None, :8]), tf.constant(t[None, :8])).numpy()[0]
    np.testing.assert_allclose(loss, [want0, want1], rtol=1e-5)

    # Weight-0 rows (the loop's eval padding) add nothing.
    batch = np.stack([f, f[::-1]]), np.stack([t, t[::-1]])
    m_both = task.eval_metrics(model, *map(tf.constant, batch), tf.constant([1.0, 0.0]))
    m_one = task.eval_metrics(model, tf.constant(f[None]), tf.constant(t[None]), tf.constant([1.0]))
    for k in ("loss", "accuracy", "bits_per_char"):
        np.testing.assert_allclose([float(v) for v in m_both[k]], [float(v) for v in m_one[k]],
                                   rtol=1e-5)
    num, den = m_one["loss"]
    assert float(den) == n
    np.testing.assert_allclose(float(num) / n, want0, rtol=1e-5)
    np.testing.assert_allclose(float(m_one["bits_per_char"][0]), float(num) / math.log(2),
                               rtol=1e-6)


# ----------------------------------------------------------------------------
# The stateful sampler agrees with the training model.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru", "simple_rnn"])
def test_sampler_steps_match_full_prefix_model(cell):
    task = make_task(f"model.cell={cell}", "model.layers=2")
    model = task.build_model()
    sampler = task.sampler(model)
    text = "When forty winters shall besiege thy brow"
    # The model is causal: its output at position i-1 is its next-char logits
    # for the prefix text[:i]. One call gives them all; spot-check with a real
    # truncated prefix too.
    full = model(ids_of(task, text))[0].numpy()
    np.testing.assert_allclose(model(ids_of(task, text[:9]))[0, -1], full[8], atol=1e-6)
    logits, states = sampler.prime(sampler.encode(tf.constant([text[:5]])))
    assert len(states) == 2 and all(len(s) == (2 if cell == "lstm" else 1) for s in states)
    for i in range(5, len(text)):
        np.testing.assert_allclose(logits[0], full[i - 1], atol=1e-5, err_msg=f"{text[:i]!r}")
        logits, states = sampler.step(tf.constant(task.vocab.encode(text[i]).astype(np.int32)),
                                      states)


def test_export_with_dropout_loads_and_samples(tmp_path):
    # Keras cells read their dropout SeedGenerator state even in inference;
    # the export must track it or tf.saved_model.save refuses the graph.
    task = make_task("model.dropout=0.3", "model.layers=1")
    model = task.build_model()
    task.export(model, str(tmp_path / "export"))
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    out = loaded.signatures["generate"](
        prompts=tf.constant(["Thy"]), length=tf.constant(5), temperature=tf.constant(1.0),
        seed=tf.constant(3, tf.int64))
    assert len(out["text"].numpy()[0].decode()) == 8


def test_sampler_right_pads_batched_prompts():
    task = make_task("model.layers=2")
    sampler = task.sampler(task.build_model())
    prompts = ["Th", "Shall I compare thee", "", "\u65e5 unknown first"]
    batch = sampler.next_char_logits(tf.constant(prompts))["logits"].numpy()
    for row, prompt in zip(batch, prompts):
        alone = sampler.next_char_logits(tf.constant([prompt]))["logits"].numpy()[0]
        np.testing.assert_allclose(row, alone, atol=1e-5)


def test_generate_is_seeded_and_low_temperature_is_greedy():
    task = make_task("model.layers=2")
    model = task.build_model()
    head = model.get_layer("logits")
    head.kernel.assign(head.kernel * 20.0)  # spread the random logits: no near-ties
    sampler = task.sampler(model)

    def sample(prompt, n, temp, seed):
        out = sampler.generate(tf.constant([prompt]), tf.constant(n), tf.constant(temp),
                               tf.constant(seed, tf.int64))
        return out["text"][0].numpy().decode()

    a = sample("Thy ", 40, 1.0, 7)
    assert a.startswith("Thy ") and len(a) == 44
    assert sample("Thy ", 40, 1.0, 7) == a
    assert sample("Thy ", 40, 1.0, 8) != a
    assert sample("Thy ", 0, 1.0, 7) == "Thy "
    # A longer sample (past one chunk of draws) continues the shorter one.
    assert sample("Thy ", 150, 1.0, 7)[:44] == a
    # A row's text does not depend on the rows drawn with it: row 0 of a batch of
    # three is the single sample; the other rows are their own draws.
    rows = [t.decode() for t in sampler.generate(
        tf.constant(["Thy "] * 3), tf.constant(40), tf.constant(1.0),
        tf.constant(7, tf.int64))["text"].numpy()]
    assert rows[0] == a and len(set(rows)) == 3

    greedy = "Thy "
    for _ in range(8):  # argmax over real characters of the full-prefix model
        logits = model(ids_of(task, greedy))[0, -1].numpy()
        greedy += task.vocab.chars[int(np.argmax(logits[2:]))]
    assert sample("Thy ", 8, 1e-6, 3) == greedy


# ----------------------------------------------------------------------------
# Config and data errors (in process).
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("override,match", [
    ("model.bidirectional=true", "bidirectional=true is not possible.*causal"),
    ("data.source=file", "needs data.path"),
    ("data.source=url", "data.url must start with https://"),
    ("data.url=http://example.com/a.txt", r"plain http:// needs data.allow_http=true"),
    ("data.sha256=abc", "64 hex digits"),
    ("data.eval_fraction=0", r"eval_fraction must be in \(0, 1\)"),
    ("data.bundled_name=nope", "not a bundled corpus. Available: .*sonnets"),
    ("data.sample_temperatures=[1.0, 0]", "sample_temperatures must all be > 0"),
])
def test_config_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        make_task(override, prepare=False)


def test_data_errors(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("x" * 15)
    with pytest.raises(DataError, match=r"training split has 13 characters \(corpus 15.*"
                                         r"data.seq_len\+1=17.*Lower data.seq_len"):
        make_task("data.source=file", f"data.path={short}")
    short.write_text("x" * 30)
    with pytest.raises(DataError, match=r"eval split has 3 characters.*data.eval_fraction"):
        make_task("data.source=file", f"data.path={short}", "data.seq_len=8")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="is empty"):
        make_task("data.source=file", f"data.path={tmp_path / 'empty.txt'}")
    with pytest.raises(DataError, match="does not exist"):
        make_task("data.source=file", f"data.path={tmp_path / 'missing.txt'}")


def test_url_source_downloads_into_cache(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "corpus.txt").write_text(chars.read_bundled("sonnets")[:3000])
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/corpus.txt"
        task = make_task("data.source=url", f"data.url={url}", "data.allow_http=true",
                         f"data.cache_dir={tmp_path / 'c'}")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert len(task.train_ids) + len(task.eval_ids) == 3000
    # the file, its recorded SHA-256 and its URL without query (how a resume finds it)
    body, *sidecars = sorted(os.listdir(tmp_path / "c"))
    assert sidecars == [body + ".sha256", body + ".url"]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_generate_library_errors(tmp_path):
    with pytest.raises(UserError, match="not a seqtrain run"):
        char_sampler.generate(str(tmp_path), "a", 5, 1.0, 0)
    other = tmp_path / "other"
    (other / "export").mkdir(parents=True)
    (other / "export" / "saved_model.pb").write_bytes(b"")
    (other / "config.yaml").write_text("task: {name: forecasting}\n")
    with pytest.raises(UserError, match="holds a 'forecasting' run.*seqtrain predict"):
        char_sampler.generate(str(other), "a", 5, 1.0, 0)


# ----------------------------------------------------------------------------
# End to end through the CLI.
# ----------------------------------------------------------------------------


def _metrics(run) -> dict:
    with open(os.path.join(run, "metrics.json")) as f:
        return json.load(f)


def _tiny(*extra):
    return ["train", "--task", "text_generation", *TINY, *SMALL, *extra]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """An uninterrupted 6-step run and one stopped at step 4 then resumed."""
    from conftest import run_cli_process as run

    base = tmp_path_factory.mktemp("tg")
    whole, resumed = str(base / "whole"), str(base / "resumed")
    run(*_tiny("--model-dir", whole))
    run(*_tiny("--set", "train.steps=4", "--model-dir", resumed))
    second = run(*_tiny("--model-dir", resumed))
    return whole, resumed, second.stdout


def test_resume_matches_uninterrupted_run(tiny_runs):
    whole, resumed, log = tiny_runs
    assert "resumed from" in log and "step 4" in log
    a, b = _metrics(whole), _metrics(resumed)
    assert a["step"] == b["step"] == 6
    assert a["metrics"] == b["metrics"]  # bitwise: data and sampling are deterministic
    for run in (whole, resumed):
        assert os.path.exists(os.path.join(run, "export", "saved_model.pb"))
        assert os.path.exists(os.path.join(run, "assets", "vocab.json"))


def test_generate_cli_is_seeded_and_matches_plain_tf_load(tiny_runs, run_cli):
    run = tiny_runs[0]
    args = ["generate", "--model-dir", run, "--prompt", "Shall I", "--length", "30",
            "--temperature", "0.8"]
    a = run_cli(*args, "--seed", "3").stdout
    assert a.startswith("Shall I") and len(a.rstrip("\n")) == 37
    assert run_cli(*args, "--seed", "3").stdout == a
    assert run_cli(*args, "--seed", "4").stdout != a

    # The export loads with plain TensorFlow in a process that never imports trainer.
    script = (
        "import json, sys, tensorflow as tf\n"
        "m = tf.saved_model.load(sys.argv[1])\n"
        "out = m.signatures['generate'](prompts=tf.constant(['Shall I']),"
        " length=tf.constant(30), temperature=tf.constant(0.8),"
        " seed=tf.constant(3, tf.int64))['text'][0].numpy().decode()\n"
        "print(json.dumps(out))\n")
    assert run_without_trainer(script, os.path.join(run, "export")) + "\n" == a


def test_generate_cli_errors(tiny_runs, run_cli):
    run = tiny_runs[0]
    user_error("generate", "--model-dir", run, "--prompt", "a", "--temperature", "0",
               model_dir=run, expect=("--temperature must be a number > 0",))
    user_error("generate", "--model-dir", run, "--prompt", "\u65e5\u672c", model_dir=run,
               expect=("no character the model knows",))


def test_mirrored_two_cpus_train_export_generate(tmp_path, run_cli):
    run = str(tmp_path / "mirrored")
    run_cli(*_tiny("--set", "runtime.strategy=mirrored", "--set", "runtime.cpu_replicas=2",
                   "--model-dir", run))
    with open(os.path.join(run, "runtime.json")) as f:
        assert json.load(f)["replicas"] == 2
    metrics = _metrics(run)["metrics"]
    assert math.isfinite(metrics["loss"]) and 0 <= metrics["accuracy"] <= 1
    out = run_cli("generate", "--model-dir", run, "--prompt", "Thy", "--length", "12",
                  "--seed", "1").stdout
    assert out.startswith("Thy") and len(out.rstrip("\n")) == 15


def test_short_corpus_is_a_clear_cli_error(tmp_path, run_cli):
    short = tmp_path / "short.txt"
    short.write_text("tiny corpus\n")
    user_error(*_tiny("--set", "data.source=file", "--set", f"data.path={short}",
                      "--model-dir", "run"), cwd=tmp_path, model_dir="run",
               expect=("fewer than one window", "data.seq_len"))
    assert not os.path.exists(tmp_path / "run")


def test_quality_loss_beats_the_unigram_baseline(tmp_path, run_cli):
    """120 steps learn more than character frequencies: the eval loss (nats per
    character) is below the entropy of the corpus' own character distribution,
    the best any model without context can do (and below log(vocab), uniform)."""
    run = str(tmp_path / "quality")
    run_cli("train", "--task", "text_generation", "--model-dir", run,
            "--set", "train.steps=120", "--set", "train.batch_size=32",
            "--set", "train.steps_per_loop=30", "--set", "train.eval_every=120",
            "--set", "train.checkpoint_every=120", "--set", "train.log_every=60",
            "--set", "train.eval_batches=4", "--set", "train.learning_rate=0.01",
            "--set", "model.units=64", "--set", "model.layers=1",
            "--set", "data.seq_len=32", "--set", "data.sample_length=40")
    with open(os.path.join(run, "assets", "vocab.json")) as f:
        vocab_size = len(json.load(f)["chars"]) + 2
    corpus = open(os.path.join(REPO, "trainer", "data", "bundled", "corpus_sonnets.txt"),
                  encoding="utf-8").read()
    freq = np.array(list(collections.Counter(corpus).values()), np.float64) / len(corpus)
    unigram = float(-(freq * np.log(freq)).sum())
    loss = _metrics(run)["metrics"]["loss"]
    assert unigram < math.log(vocab_size)
    assert loss < unigram, (loss, unigram, math.log(vocab_size))
