#!/usr/bin/env python
"""Benchmarks the text_generation task against the textbook char-RNN recipe.

Everything is measured side by side in one run, on one trained model:

1. Training throughput: `seqtrain train` (custom loop, `train_lib.train`) vs
   Keras `model.fit` on the same model, the same batches (same seed, same
   shuffle) and the same number of steps; final loss = loss on the same eval
   split afterwards. For reference, also the textbook one-hot model
   (one-hot [T, V] windows -> LSTM -> softmax, one target per window) with fit.
2. Sampling speed: the exported stateful sampler (the `seqtrain generate`
   path: SavedModel `generate` signature, one cell step per character) vs the
   textbook sampler that rebuilds a one-hot window of the last T characters
   and calls `model.predict` for every character. The textbook model is a
   one-hot LSTM of the same size whose weights are copied from the trained
   model (first-layer kernel = embedding @ kernel), so both sample the same
   network; the script checks that their next-char distributions agree.
   Batched sampling: N samples of the same prompt in one signature call
   (`seqtrain generate --num-samples N`), aggregate chars/s against one
   sample per call, both measured in the same process (--num-samples).
3. Peak memory of data preparation on a multi-megabyte corpus (the bundled
   sonnets repeated): seqtrain's encode + tf.data windows (through the
   loop's shuffled, batched input pipeline) vs the textbook one-hot X/y numpy
   arrays. Each runs in its own subprocess; peak RSS (VmHWM) minus the RSS
   after imports is reported.

Each measurement runs in a fresh subprocess (`bench_generate.py _worker ...`).

Example:
  python scripts/bench_generate.py --work-dir /tmp/bench_tg
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--work-dir", default="/tmp/bench_generate", help="Runs and corpus go here.")
    p.add_argument("--units", type=int, default=128, help="LSTM units (both models).")
    p.add_argument("--layers", type=int, default=1, help="Stacked LSTM layers (both models).")
    p.add_argument("--seq-len", type=int, default=40, help="Window T (Keras example: maxlen=40).")
    p.add_argument("--batch", type=int, default=64, help="Batch size for training.")
    p.add_argument("--train-steps", type=int, default=300, help="Optimizer steps per trainer.")
    p.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate (all trainers).")
    p.add_argument("--gen-chars", type=int, default=2000, help="Characters per stateful sample.")
    p.add_argument("--num-samples", default="1,8,64",
                   help="Comma-separated batch sizes N for batched sampling: N samples per "
                        "call of the signature (`seqtrain generate --num-samples N`), aggregate "
                        "chars/s compared with N=1 in the same process.")
    p.add_argument("--baseline-export", default="",
                   help="Another export of the same run (e.g. written by an older commit's "
                        "task.export from the same checkpoint): its `generate` is timed at "
                        "every N beside the run's own export, and the ratio reported.")
    p.add_argument("--textbook-chars", type=int, default=100,
                   help="Characters sampled with the per-character model.predict loop.")
    p.add_argument("--corpus-mb", type=float, default=3.0, help="Corpus size for the memory test.")
    p.add_argument("--mem-step", type=int, default=3,
                   help="Window shift for the memory test (Keras example: step=3).")
    p.add_argument("--skip", nargs="*", default=[], choices=["train", "sample", "memory"],
                   help="Parts to skip.")
    args = p.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    cfg = vars(args)
    print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}; "
          f"LSTM {args.units}x{args.layers}, T={args.seq_len}, batch {args.batch}", flush=True)

    run_dir = os.path.join(args.work_dir, "seqtrain_run")
    if "train" not in args.skip:
        ours = _worker("train_seqtrain", cfg)
        fit = _worker("train_fit", cfg)
        onehot = _worker("train_onehot_fit", cfg)
        print("\n== training: same model, same batches, same steps ==")
        _row("seqtrain train (custom loop)", ours)
        _row("keras model.fit, same model", fit)
        _row("textbook one-hot model.fit", onehot)
        print(f"  seqtrain / fit examples/s ratio: "
              f"{ours['examples_per_sec'] / fit['examples_per_sec']:.2f}x")
        print(f"  seqtrain / one-hot fit supervised chars/s ratio: "
              f"{ours['chars_per_sec'] / onehot['chars_per_sec']:.2f}x")
    if "sample" not in args.skip:
        if not os.path.exists(os.path.join(run_dir, "export")):
            sys.exit(f"{run_dir}/export is missing: run without --skip train first")
        ours = _worker("sample_stateful", cfg)
        book = _worker("sample_textbook", cfg)
        print("\n== sampling: same trained weights ==")
        print(f"  stateful SavedModel signature : {ours['chars_per_sec']:10.1f} chars/s "
              f"({ours['chars']} chars)")
        print(f"  seqtrain generate() incl. load: {ours['library_chars_per_sec']:10.1f} chars/s "
              f"(load {ours['load_secs']:.2f} s)")
        print(f"  textbook one-hot predict loop : {book['chars_per_sec']:10.1f} chars/s "
              f"({book['chars']} chars)")
        print(f"  same loop, tf.function(model) : {book['direct_chars_per_sec']:10.1f} chars/s "
              "(window re-run, no predict overhead)")
        print(f"  next-char distributions agree to max |dp| = {book['max_prob_diff']:.2e}")
        print(f"  speedup (signature / textbook): "
              f"{ours['chars_per_sec'] / book['chars_per_sec']:.0f}x; "
              f"vs the direct-call loop: "
              f"{ours['chars_per_sec'] / book['direct_chars_per_sec']:.1f}x")
        print(f"\n== batched sampling: N samples in one signature call, {args.gen_chars} chars "
              "each; 3 pairs of calls (N=1, N) back to back, medians) ==")
        print(f"  {'N':>4} {'aggregate chars/s':>18} {'N=1 chars/s':>12} {'ratio':>8} "
              f"{'ratio / N':>10} {'matmul ceiling':>15}")
        for n, rate, single, ratio, ceiling, _ in ours["batched"]:
            print(f"  {n:>4} {rate:>18.0f} {single:>12.0f} {ratio:>7.1f}x {ratio / n:>10.2f} "
                  f"{ceiling:>14.1f}x")
        if args.baseline_export:
            print(f"\n== the run's export vs --baseline-export {args.baseline_export} (same "
                  "weights; the two called alternately, medians of 3) ==")
            print(f"  {'N':>4} {'export chars/s':>15} {'baseline chars/s':>17} {'ratio':>8}")
            for n, rate, _, _, _, base in ours["batched"]:
                print(f"  {n:>4} {rate:>15.0f} {base:>17.0f} {rate / base:>7.2f}x")
        print("  matmul ceiling: N x the N=1 sampler's step time / the model's matmuls alone "
              "at N (the best ratio this CPU allows)")
    if "memory" not in args.skip:
        corpus = _make_corpus(args.work_dir, args.corpus_mb)
        cfg["corpus"] = corpus
        ours = _worker("memory_seqtrain", cfg)
        book = _worker("memory_textbook", cfg)
        print(f"\n== data preparation memory: {os.path.getsize(corpus) / 1e6:.1f} MB corpus, "
              f"T={args.seq_len}, shift={args.mem_step} ({book['examples']} windows) ==")
        for name, r in (("seqtrain ids + tf.data", ours), ("textbook one-hot X/y", book)):
            print(f"  {name:24s}: peak +{r['peak_delta_mb']:8.1f} MB above imports "
                  f"(peak RSS {r['peak_mb']:.0f} MB), {r['secs']:.1f} s")
        print(f"  textbook / seqtrain peak-delta ratio: "
              f"{book['peak_delta_mb'] / ours['peak_delta_mb']:.0f}x")


def _row(name: str, r: dict) -> None:
    print(f"  {name:30s}: {r['examples_per_sec']:8.1f} examples/s, "
          f"{r['chars_per_sec']:9.0f} supervised chars/s, eval loss {r['eval_loss']:.4f}, "
          f"wall {r['wall_secs']:.1f} s")


def _worker(name: str, cfg: dict) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "_worker", name,
                           json.dumps(cfg)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"worker {name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _make_corpus(work_dir: str, mb: float) -> str:
    # Read the bundled file directly: the parent process stays free of TensorFlow.
    with open(os.path.join(REPO, "trainer", "data", "bundled", "corpus_sonnets.txt"),
              encoding="utf-8") as f:
        text = f.read()
    path = os.path.join(work_dir, f"corpus_{mb:g}mb.txt")
    if not os.path.exists(path):
        reps = int(mb * 1e6 / len(text)) + 1
        with open(path, "w", encoding="utf-8") as f:
            f.write(text * reps)
    return path


# ----------------------------------------------------------------------------
# Workers (each in its own process; prints one JSON line).
# ----------------------------------------------------------------------------


def _overrides(cfg: dict) -> list[str]:
    return [f"model.units={cfg['units']}", f"model.layers={cfg['layers']}", "model.cell=lstm",
            f"data.seq_len={cfg['seq_len']}", "data.shift=1", "data.sample_length=0",
            f"train.batch_size={cfg['batch']}", f"train.steps={cfg['train_steps']}",
            f"train.learning_rate={cfg['lr']}", "train.steps_per_loop=50", "train.log_every=50",
            f"train.eval_every={cfg['train_steps']}",
            f"train.checkpoint_every={cfg['train_steps']}", "train.eval_batches=0",
            "runtime.strategy=default"]


def _eval_ds(task, batch):
    return task.dataset("eval").batch(batch)


def w_train_seqtrain(cfg: dict) -> dict:
    import shutil

    import numpy as np

    from trainer import experiment, summaries, train_lib

    run_dir = os.path.join(cfg["work_dir"], "seqtrain_run")
    shutil.rmtree(run_dir, ignore_errors=True)
    config = experiment.load(task="text_generation", overrides=_overrides(cfg))
    t0 = time.perf_counter()
    result = train_lib.train(config, run_dir, verbose=False)
    wall = time.perf_counter() - t0
    rates = summaries.read_scalars(os.path.join(run_dir, "train"), "examples_per_sec")
    steady = [rates[step] for step in sorted(rates)[1:]]  # the first loop includes tracing
    eps = float(np.median(steady))
    return {"examples_per_sec": eps, "chars_per_sec": eps * cfg["seq_len"],
            "eval_loss": result["metrics"]["loss"], "wall_secs": wall}


def w_train_fit(cfg: dict) -> dict:
    import keras
    import tensorflow as tf

    from trainer import experiment, registry
    from trainer.data import sampling

    config = experiment.load(task="text_generation", overrides=_overrides(cfg))
    tf.config.experimental.enable_op_determinism()
    task = registry.get("text_generation")(config)
    task.prepare()
    keras.utils.set_random_seed(config.runtime.seed)
    model = task.build_model()
    model.compile(keras.optimizers.Adam(cfg["lr"]),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # The very batches seqtrain sees on one replica: the same stateless order.
    ds = sampling.replica_dataset(task.train_examples(), seed=config.runtime.seed,
                                  global_batch=cfg["batch"], first_step=0, replica_ids=[0],
                                  num_replicas=1).map(lambda f, l, ids: (f, l))
    timer = _batch_timer(skip=50)
    t0 = time.perf_counter()
    model.fit(ds, steps_per_epoch=cfg["train_steps"], epochs=1, verbose=0, callbacks=[timer])
    wall = time.perf_counter() - t0
    eps = timer.rate(cfg["batch"])
    loss = float(model.evaluate(_eval_ds(task, cfg["batch"]), verbose=0))
    return {"examples_per_sec": eps, "chars_per_sec": eps * cfg["seq_len"], "eval_loss": loss,
            "wall_secs": wall}


def w_train_onehot_fit(cfg: dict) -> dict:
    """The textbook: one-hot [T, V] windows, predict only the char after each."""
    import keras
    import numpy as np

    from trainer import experiment, registry

    config = experiment.load(task="text_generation", overrides=_overrides(cfg))
    task = registry.get("text_generation")(config)
    task.prepare()
    T, V = cfg["seq_len"], task.vocab.size
    x, y = _onehot_xy(task.train_ids, T, 3, V)
    keras.utils.set_random_seed(config.runtime.seed)
    model = _onehot_model(cfg, T, V)
    model.compile(keras.optimizers.Adam(cfg["lr"]), "categorical_crossentropy")
    batches = cfg["train_steps"] * cfg["batch"]
    order = np.random.default_rng(0).permutation(np.resize(np.arange(len(x)), batches))
    timer = _batch_timer(skip=50)
    t0 = time.perf_counter()
    model.fit(x[order], y[order], batch_size=cfg["batch"], epochs=1, shuffle=False, verbose=0,
              callbacks=[timer])
    wall = time.perf_counter() - t0
    eps = timer.rate(cfg["batch"])
    ex, ey = _onehot_xy(task.eval_ids, T, 1, V)
    loss = float(model.evaluate(ex, ey, batch_size=256, verbose=0))
    return {"examples_per_sec": eps, "chars_per_sec": eps, "eval_loss": loss,
            "wall_secs": wall}


def w_sample_stateful(cfg: dict) -> dict:
    import tensorflow as tf

    from trainer.serving.char_sampler import generate

    run_dir = os.path.join(cfg["work_dir"], "seqtrain_run")
    t0 = time.perf_counter()
    loaded = tf.saved_model.load(os.path.join(run_dir, "export"))
    load_secs = time.perf_counter() - t0
    sig = loaded.signatures["generate"]

    def call(n):
        return sig(prompts=tf.constant(["Shall I compare thee"]), length=tf.constant(n),
                   temperature=tf.constant(0.8), seed=tf.constant(1, tf.int64))

    call(10)  # warm-up
    t0 = time.perf_counter()
    call(cfg["gen_chars"])["text"].numpy()
    secs = time.perf_counter() - t0
    t0 = time.perf_counter()
    generate(run_dir, "Shall I compare thee", cfg["gen_chars"], 0.8, 1)
    lib_secs = time.perf_counter() - t0

    base_sig = (tf.saved_model.load(cfg["baseline_export"]).signatures["generate"]
                if cfg["baseline_export"] else None)

    def rate(n, sig=sig):  # aggregate chars/s of n samples in one call
        prompts = tf.constant(["Shall I compare thee"] * n)
        t0 = time.perf_counter()
        sig(prompts=prompts, length=tf.constant(cfg["gen_chars"]), temperature=tf.constant(0.8),
            seed=tf.constant(1, tf.int64))["text"].numpy()
        return n * cfg["gen_chars"] / (time.perf_counter() - t0)

    # The floor of a step at N: the model's matmuls alone (every 2-D weight but the
    # embedding, which is a gather), `gen_chars` times in one while loop, XLA-compiled
    # like the sampler's loop. Each product feeds the next iteration's input, so XLA
    # cannot hoist it out of the loop.
    weights = [tf.constant(0.01, shape=shape) for name, shape in tf.train.list_variables(
        os.path.join(run_dir, "export", "variables", "variables"))
        if len(shape) == 2 and "embedding" not in name]

    @tf.function(jit_compile=True)
    def matmuls_only(xs):
        def body(t, xs):
            return t + 1, [x + 1e-6 * tf.reduce_mean(tf.matmul(x, w), axis=1, keepdims=True)
                           for x, w in zip(xs, weights)]
        return tf.while_loop(lambda t, _: t < cfg["gen_chars"], body, (0, xs))[1]

    def floor_secs(n):
        t0 = time.perf_counter()
        [x.numpy() for x in matmuls_only([tf.fill([n, w.shape[0]], 0.5) for w in weights])]
        return time.perf_counter() - t0

    batched = []
    for n in (int(n) for n in cfg["num_samples"].split(",")):
        rate(n)  # warm-up at this batch size
        floor_secs(n)
        if base_sig is not None:
            rate(n, base_sig)
        runs = [(rate(1), rate(n), floor_secs(n), rate(n, base_sig) if base_sig else 0.0)
                for _ in range(3)]  # side by side
        pairs = [r[:3] for r in runs]
        base = statistics.median(r[3] for r in runs)
        # The best ratio the sampler could reach: N samples in the time of the matmuls
        # alone, against its own single-sample rate.
        ceilings = [n * cfg["gen_chars"] / f / s for s, _, f in pairs]
        batched.append((n, statistics.median(b for _, b, _ in pairs),
                        statistics.median(s for s, _, _ in pairs),
                        statistics.median(b / s for s, b, _ in pairs),
                        statistics.median(ceilings), base))
    return {"chars": cfg["gen_chars"], "chars_per_sec": cfg["gen_chars"] / secs,
            "library_chars_per_sec": cfg["gen_chars"] / lib_secs, "load_secs": load_secs,
            "batched": batched}


def w_sample_textbook(cfg: dict) -> dict:
    import numpy as np
    import tensorflow as tf

    from trainer import registry, runner

    run_dir = os.path.join(cfg["work_dir"], "seqtrain_run")
    config = runner.load_run_config(run_dir)
    task = registry.get("text_generation")(config)
    task.prepare()
    model = task.build_model()
    tf.train.Checkpoint(model=model).restore(
        tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))).expect_partial()
    T, V = cfg["seq_len"], task.vocab.size
    book = _onehot_model(cfg, T, V)
    _copy_weights(model, book, cfg["layers"])

    # Same network: on a T-char window both give the same next-char distribution.
    window = task.eval_ids[:T].astype(np.int32)
    ours = tf.nn.softmax(model(window[None])[0, -1]).numpy()
    theirs = book.predict(_onehot(window, V)[None], verbose=0)[0]
    max_diff = float(np.abs(ours - theirs).max())

    # The textbook loop (Keras lstm_text_generation example).
    sentence = list(window)
    rng = np.random.default_rng(1)
    book.predict(_onehot(np.array(sentence), V)[None], verbose=0)  # warm-up
    t0 = time.perf_counter()
    for _ in range(cfg["textbook_chars"]):
        x_pred = np.zeros((1, T, V), dtype=np.float32)
        for t, char_id in enumerate(sentence):
            x_pred[0, t, char_id] = 1.0
        preds = book.predict(x_pred, verbose=0)[0]
        sentence = sentence[1:] + [_sample(preds, 0.8, rng)]
    secs = time.perf_counter() - t0

    # The same loop with a compiled direct call instead of `predict`: separates
    # predict's per-call overhead from re-running the whole window.
    direct = tf.function(lambda x: book(x, training=False))
    direct(tf.constant(x_pred))
    t0 = time.perf_counter()
    for _ in range(cfg["textbook_chars"]):
        x_pred = np.zeros((1, T, V), dtype=np.float32)
        for t, char_id in enumerate(sentence):
            x_pred[0, t, char_id] = 1.0
        preds = direct(tf.constant(x_pred)).numpy()[0]
        sentence = sentence[1:] + [_sample(preds, 0.8, rng)]
    direct_secs = time.perf_counter() - t0
    return {"chars": cfg["textbook_chars"], "chars_per_sec": cfg["textbook_chars"] / secs,
            "direct_chars_per_sec": cfg["textbook_chars"] / direct_secs,
            "max_prob_diff": max_diff}


def w_memory_seqtrain(cfg: dict) -> dict:
    import tensorflow as tf  # noqa: F401  (imports count toward the baseline)

    from trainer.data import chars, sampling

    base = _rss_mb()
    t0 = time.perf_counter()
    text = chars.read_file(cfg["corpus"])
    vocab = chars.CharVocab.fit(text)
    ids = vocab.encode(text)
    del text
    n = chars.num_windows(len(ids), cfg["seq_len"], cfg["mem_step"])
    batches = sampling.replica_dataset(
        chars.window_examples(ids, cfg["seq_len"], cfg["mem_step"]), seed=0,
        global_batch=cfg["batch"], first_step=0, replica_ids=[0], num_replicas=1)
    for _ in batches.take(200):  # feed some steps
        pass
    return {"examples": n, "peak_delta_mb": _hwm_mb() - base, "peak_mb": _hwm_mb(),
            "secs": time.perf_counter() - t0}


def w_memory_textbook(cfg: dict) -> dict:
    """Keras' lstm_text_generation data prep: sentences, then one-hot x and y."""
    import numpy as np

    base = _rss_mb()
    t0 = time.perf_counter()
    with open(cfg["corpus"], encoding="utf-8") as f:
        text = f.read()
    chars_ = sorted(set(text))
    char_indices = {c: i for i, c in enumerate(chars_)}
    maxlen, step = cfg["seq_len"], cfg["mem_step"]
    sentences, next_chars = [], []
    for i in range(0, len(text) - maxlen, step):
        sentences.append(text[i:i + maxlen])
        next_chars.append(text[i + maxlen])
    x = np.zeros((len(sentences), maxlen, len(chars_)), dtype=bool)
    y = np.zeros((len(sentences), len(chars_)), dtype=bool)
    # Vectorized per block of sentences (same arrays as the example's loop, faster).
    lookup = np.zeros(0x110000, dtype=np.int32)
    for c, i in char_indices.items():
        lookup[ord(c)] = i
    for start in range(0, len(sentences), 20000):
        block = sentences[start:start + 20000]
        cps = np.frombuffer("".join(block).encode("utf-32-le"), "<u4").reshape(len(block), maxlen)
        rows = np.arange(start, start + len(block))[:, None]
        x[rows, np.arange(maxlen)[None, :], lookup[cps]] = True
        y[rows[:, 0], lookup[[ord(c) for c in next_chars[start:start + len(block)]]]] = True
    return {"examples": len(sentences), "peak_delta_mb": _hwm_mb() - base, "peak_mb": _hwm_mb(),
            "secs": time.perf_counter() - t0, "x_mb": x.nbytes / 1e6}


# ----------------------------------------------------------------------------
# Helpers.
# ----------------------------------------------------------------------------


def _onehot(ids, V):
    import numpy as np

    out = np.zeros((len(ids), V), dtype=np.float32)
    out[np.arange(len(ids)), ids] = 1.0
    return out


def _onehot_xy(ids, T, step, V):
    import numpy as np

    starts = np.arange(0, len(ids) - T, step)
    x = np.zeros((len(starts), T, V), dtype=bool)
    x[np.arange(len(starts))[:, None], np.arange(T)[None], ids[starts[:, None] + np.arange(T)]] = 1
    y = np.zeros((len(starts), V), dtype=bool)
    y[np.arange(len(starts)), ids[starts + T]] = 1
    return x, y


def _onehot_model(cfg, T, V):
    import keras

    inputs = keras.Input((T, V))
    x = inputs
    for i in range(cfg["layers"]):
        x = keras.layers.LSTM(cfg["units"], return_sequences=i < cfg["layers"] - 1)(x)
    return keras.Model(inputs, keras.layers.Dense(V, activation="softmax")(x))


def _copy_weights(model, book, layers):
    """Embedding+LSTM -> one-hot LSTM: onehot @ (E @ K) == lookup(E) @ K."""
    emb = model.get_layer("embedding").get_weights()[0]
    book_lstms = [layer for layer in book.layers if layer.__class__.__name__ == "LSTM"]
    for i in range(layers):
        kernel, recurrent, bias = model.get_layer(f"rnn_lstm_{i}").get_weights()
        book_lstms[i].set_weights([emb @ kernel if i == 0 else kernel, recurrent, bias])
    book.layers[-1].set_weights(model.get_layer("logits").get_weights())


def _sample(preds, temperature, rng):
    import numpy as np

    preds = np.log(np.asarray(preds, dtype=np.float64) + 1e-12) / temperature
    p = np.exp(preds - preds.max())
    return int(rng.choice(len(p), p=p / p.sum()))


def _batch_timer(skip: int):
    """A Keras callback measuring examples/s over the batches after the first `skip`."""
    import keras

    class BatchTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times: list[float] = []

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter())

        def rate(self, batch_size: int) -> float:
            t = self.times[skip:] if len(self.times) > skip + 1 else self.times
            return (len(t) - 1) * batch_size / (t[-1] - t[0])

    return BatchTimer()


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def _hwm_mb() -> float:
    return _status_mb("VmHWM")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "_worker":
        sys.path.insert(0, REPO)
        fn = globals()[f"w_{sys.argv[2]}"]
        print(json.dumps(fn(json.loads(sys.argv[3]))))
    else:
        main()
