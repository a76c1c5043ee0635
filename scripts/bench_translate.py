"""seqtrain's translation task vs the textbook Keras seq2seq recipe, side by side.

One run, one process, the same toy data (dates -> ISO by default):

Training, same model architecture, same initial weights, same batches count:
  seqtrain : `train_lib.train` (custom loop, `train.steps_per_loop` steps per
             tf.function call, masked per-example loss).
  textbook : the keras.io snippet: `model.compile(Adam, sparse CE over every
             position)` + `model.fit` on a shuffled, repeated tf.data of the
             same arrays, `steps_per_epoch=steps`.
  Reported: examples/s over the whole training call (tracing included) and in
  steady state (after the first tenth of the steps), and the final eval
  metrics of both models computed by the same code: teacher-forced masked
  token accuracy and greedy exact match on the whole eval split.

Decoding, both on the model seqtrain trained:
  batched  : `Seq2Seq.greedy_decode` in one tf.function (tf.while_loop),
             batches of 256 sentences.
  textbook : `decode_sequence` from keras.io: an encoder inference model and a
             decoder step model, `model.predict` once per sentence and then
             once per generated token.
  Reported: sentences/s, and how often the two produce the same output.

Example:
  python scripts/bench_translate.py --steps 300 --textbook-sentences 20
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--toy", choices=["dates", "numbers"], default="dates", help="toy corpus")
    p.add_argument("--toy-size", type=int, default=5000, help="pairs generated (train + eval)")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps for both trainers")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=0.01)
    p.add_argument("--units", type=int, default=32, help="model.units")
    p.add_argument("--embedding-dim", type=int, default=16)
    p.add_argument("--attention", choices=["none", "additive"], default="additive")
    p.add_argument("--steps-per-loop", type=int, default=50, help="seqtrain train.steps_per_loop")
    p.add_argument("--textbook-sentences", type=int, default=20,
                   help="sentences decoded by the (slow) per-token predict loop")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--model-dir", default="", help="seqtrain run dir (default: a temp dir)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="extra seqtrain config override (repeatable)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    # 3: with op determinism on, every predict() logs a harmless C++ "NodeDef mentions
    # attribute use_unbounded_threadpool" error line, which would drown the report.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, REPO)
    import keras
    import tensorflow as tf

    from trainer import experiment, registry, train_lib

    overrides = [
        "data.source=toy", f"data.toy={args.toy}", f"data.toy_size={args.toy_size}",
        f"model.units={args.units}", f"model.embedding_dim={args.embedding_dim}",
        f"model.attention={args.attention}", f"train.steps={args.steps}",
        f"train.batch_size={args.batch_size}", f"train.learning_rate={args.learning_rate}",
        f"train.steps_per_loop={args.steps_per_loop}", f"train.log_every={args.steps_per_loop}",
        f"train.eval_every={args.steps}", f"train.checkpoint_every={args.steps}",
        "train.eval_batches=4", f"runtime.seed={args.seed}", *args.overrides,
    ]
    config = experiment.load(task="translation", overrides=overrides)
    model_dir = args.model_dir or tempfile.mkdtemp(prefix="bench_translate_")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
          f"Python {platform.python_version()}, TF {tf.__version__}, Keras {keras.__version__}")

    # ---- training: seqtrain ---------------------------------------------------
    t0 = time.perf_counter()
    train_lib.train(config, model_dir, verbose=False)
    seq_wall = time.perf_counter() - t0
    seq_steady = _steady_examples_per_sec(os.path.join(model_dir, "train"))

    task = registry.get("translation")(config)
    task.prepare()
    features, labels = task._arrays["train"]
    n_train, n_eval = len(labels), len(task._arrays["eval"][1])
    print(f"data: toy {args.toy}, {n_train} train / {n_eval} eval pairs, source length "
          f"{task.source_length}, target length {task.target_length}; {args.steps} steps of "
          f"batch {args.batch_size}")
    trained = task.build_model()
    tf.train.Checkpoint(model=trained).restore(
        tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))).expect_partial()

    # ---- training: textbook model.fit ------------------------------------------
    keras.utils.set_random_seed(args.seed)
    textbook = task.build_model()  # same architecture and initial weights as seqtrain's
    textbook.compile(optimizer=keras.optimizers.Adam(args.learning_rate),
                     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ds = (tf.data.Dataset.from_tensor_slices((features, labels))
          .shuffle(10000, seed=args.seed).repeat().batch(args.batch_size))
    timer = _BatchTimer(args.steps)
    t0 = time.perf_counter()
    textbook.fit(ds, epochs=1, steps_per_epoch=args.steps, verbose=0, callbacks=[timer.callback])
    fit_wall = time.perf_counter() - t0
    fit_steady = timer.examples_per_sec(args.batch_size)

    t0 = time.perf_counter()
    task.export(trained, os.path.join(tempfile.mkdtemp(prefix="bench_translate_export_"), "e"))
    export_secs = time.perf_counter() - t0
    seq_metrics = _evaluate(task, trained)
    fit_metrics = _evaluate(task, textbook)
    differ = int((seq_metrics["ids"] != fit_metrics["ids"]).any(axis=1).sum())
    examples = args.steps * args.batch_size
    print("\ntraining (same model, data, steps)")
    print(f"  {'':<22}{'wall s':>9}{'ex/s all':>10}{'ex/s steady':>13}{'token acc':>11}"
          f"{'exact match':>13}")
    for name, wall, steady, m in (("seqtrain train_lib", seq_wall, seq_steady, seq_metrics),
                                  ("textbook model.fit", fit_wall, fit_steady, fit_metrics)):
        print(f"  {name:<22}{wall:>9.1f}{examples / wall:>10.0f}{steady:>13.0f}"
              f"{m['token_accuracy']:>11.4f}{m['exact_match']:>13.4f}")
    print(f"  seqtrain / textbook: {fit_wall / seq_wall:.2f}x examples/s over the whole call "
          f"(seqtrain's includes checkpoint, eval and export), {seq_steady / fit_steady:.2f}x "
          "in steady state")
    print(f"  (of seqtrain's wall time, the SavedModel export alone takes about "
          f"{export_secs:.1f} s)")
    print(f"  the two models' greedy outputs differ on {differ}/{n_eval} eval sentences")

    # ---- decoding on the model seqtrain trained ------------------------------------
    sources = task._arrays["eval"][0]["source"]
    task.decode_ids(trained, sources[:8])  # trace once
    times = []
    for _ in range(3):  # best of 3: the machine may be shared
        t0 = time.perf_counter()
        ids, _ = task.decode_ids(trained, sources)
        times.append(time.perf_counter() - t0)
    batched_rate = len(sources) / min(times)

    n = min(args.textbook_sentences, len(sources))
    decode_sequence = _textbook_decoder(trained, task.config.data.max_target_length + 1)
    decode_sequence(sources[0])  # let predict() build its functions once
    t0 = time.perf_counter()
    slow = [decode_sequence(s) for s in sources[:n]]
    slow_rate = n / (time.perf_counter() - t0)
    same = sum(
        list(row[: len(out)]) == out for row, out in zip(ids[:n], slow))
    print("\ndecoding (same trained model)")
    print(f"  batched tf.function while_loop : {batched_rate:>9.1f} sentences/s "
          f"({len(sources)} sentences, batches of 256, best of 3)")
    print(f"  textbook per-token predict()   : {slow_rate:>9.2f} sentences/s ({n} sentences)")
    print(f"  ratio: {batched_rate / slow_rate:.0f}x; identical outputs on {same}/{n}")
    print(f"\nseqtrain run: {model_dir}")


class _BatchTimer:
    """Timestamps of fit's batch ends, for steady-state throughput."""

    def __init__(self, steps: int):
        import keras

        class Callback(keras.callbacks.Callback):
            def on_train_batch_end(cb, batch, logs=None):  # noqa: N805
                self.times.append(time.perf_counter())

        self.times: list[float] = []
        self.skip = max(1, steps // 10)
        self.callback = Callback()

    def examples_per_sec(self, batch: int) -> float:
        t = self.times[self.skip - 1:]
        return (len(t) - 1) * batch / (t[-1] - t[0])


def _steady_examples_per_sec(train_log_dir: str) -> float:
    """Mean of the loop's `examples_per_sec` scalars, after the first (tracing) interval."""
    from trainer import summaries

    rates = summaries.read_scalars(train_log_dir, "examples_per_sec")
    values = [rates[step] for step in sorted(rates)]
    values = values[1:] or values
    return sum(values) / len(values)

def _evaluate(task, model) -> dict:
    """Masked teacher-forced token accuracy and greedy exact match on the whole eval split."""
    import numpy as np

    from trainer.data import parallel

    features, labels = task._arrays["eval"]
    logits = np.concatenate([
        model({k: v[i:i + 256] for k, v in features.items()}).numpy()
        for i in range(0, len(labels), 256)])
    mask = labels != parallel.PAD
    token_accuracy = float(((logits.argmax(-1) == labels) & mask).sum() / mask.sum())
    ids, _ = task.decode_ids(model, features["source"])
    hyps = [parallel.detokenize(task.target_vocab.decode(row), task.config.data.tokenize)
            for row in ids]
    exact = float(np.mean([h == r for h, r in zip(hyps, task.eval_references)]))
    return {"token_accuracy": token_accuracy, "exact_match": exact, "ids": ids}


def _textbook_decoder(seq2seq, max_length: int):
    """keras.io's decode_sequence: encoder/decoder inference models, predict() per token."""
    import keras
    import numpy as np
    import tensorflow as tf

    from trainer.data.parallel import END, START

    class EncoderModel(keras.Model):
        def call(self, source):
            memory = seq2seq.encode(source)
            return [memory["outputs"], memory.get("keys", memory["outputs"]),
                    tf.cast(memory["mask"], tf.float32), *tf.nest.flatten(memory["states"])]

    class DecoderStepModel(keras.Model):
        def call(self, inputs):
            token, outputs, keys, mask, *flat = inputs
            memory = {"outputs": outputs, "keys": keys, "mask": tf.cast(mask, tf.bool)}
            states = tf.nest.pack_sequence_as(structure, flat)
            logits, new_states, _ = seq2seq.decode_step(token[:, 0], states, memory)
            return [logits, *tf.nest.flatten(new_states)]

    per_layer = 2 if seq2seq.cfg.cell == "lstm" else 1
    structure = [[0] * per_layer for _ in range(seq2seq.cfg.layers)]
    encoder_model, decoder_model = EncoderModel(), DecoderStepModel()

    def decode_sequence(source_row):
        source = source_row[None]  # padded to a fixed length, as in keras.io (no retracing)
        outputs, keys, mask, *states = encoder_model.predict(source, verbose=0)
        target_seq = np.array([[START]], np.int32)
        decoded = []
        while len(decoded) < max_length:
            logits, *states = decoder_model.predict(
                [target_seq, outputs, keys, mask, *states], verbose=0)
            logits[0, :START + 1] = -np.inf  # like greedy_choice: never PAD or START
            token = int(np.argmax(logits[0]))
            decoded.append(token)
            if token == END:
                break
            target_seq = np.array([[token]], np.int32)
        return decoded

    return decode_sequence


if __name__ == "__main__":
    main()
