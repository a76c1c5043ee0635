"""text_classification's padding trim: the loop runs only as long as the batch's longest text,
with the same outputs and gradients as over the whole padded length."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from trainer import experiment, registry
from trainer.tasks.text_classification import _trim_padding


def test_trim_keeps_every_used_step_and_at_least_one():
    ids = tf.constant([[5, 3, 0, 0, 0, 0], [7, 0, 0, 0, 0, 0]])
    assert _trim_padding(ids).numpy().tolist() == [[5, 3], [7, 0]]
    assert _trim_padding(tf.zeros([2, 6], tf.int32)).shape == (2, 1)
    full = tf.constant([[1, 2, 3], [4, 0, 0]])
    assert _trim_padding(full).numpy().tolist() == full.numpy().tolist()


@pytest.mark.parametrize("kernel", ["fused", "keras"])
def test_trimmed_batch_gives_the_same_loss_and_gradients(kernel):
    cfg = experiment.load("text_classification", None, [
        f"model.cpu_kernel={kernel}", "model.units=8", "model.embedding_dim=4",
        "model.dense_units=4", "data.sequence_length=20"])
    task = registry.get("text_classification")(cfg)
    task.prepare()
    tf.keras.utils.set_random_seed(1)
    model = task.build_model()
    ids, labels = task._splits["train"]
    ids, labels = tf.constant(ids[:16]), tf.constant(labels[:16])
    assert int(tf.shape(_trim_padding(ids))[1]) < 20  # the bundled reviews are short

    def loss_and_grads(features):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
                labels, model(features, training=True), from_logits=True))
        return loss, tape.gradient(loss, model.trainable_variables)

    full_loss, full_grads = loss_and_grads(ids)
    trim_loss, trim_grads = loss_and_grads(_trim_padding(ids))
    np.testing.assert_allclose(trim_loss.numpy(), full_loss.numpy(), rtol=1e-6)
    for g_full, g_trim, v in zip(full_grads, trim_grads, model.trainable_variables):
        np.testing.assert_allclose(tf.convert_to_tensor(g_trim).numpy(),
                                   tf.convert_to_tensor(g_full).numpy(),
                                   rtol=1e-5, atol=1e-7, err_msg=v.path)


XLA_COMPILES = r'''
import glob, json, os, sys
os.environ["XLA_FLAGS"] = "--xla_dump_to=" + sys.argv[1] + " --xla_dump_hlo_module_re=.*step.*"
import tensorflow as tf
from trainer.tasks.text_classification import _trim_padding

@tf.function(jit_compile=True)
def step(ids):
    return tf.reduce_sum(tf.cast(_trim_padding(ids), tf.float32))

sums = [float(step(tf.constant([[5] * used + [0] * (6 - used)] * 2))) for used in (1, 3, 6)]
print(json.dumps({"sums": sums,
                  "compiles": len(glob.glob(sys.argv[1] + "/*before_optimizations.txt"))}))
'''


def test_under_xla_the_step_compiles_once_whatever_the_padding(tmp_path):
    """The trim's length depends on the ids; traced for XLA it would make them a
    compile-time constant and compile the step again for each new length (once per
    step in practice). Under XLA the whole padded batch goes through (the masks give
    the same result), so batches of any used length share one compilation."""
    import json
    import subprocess
    import sys

    from helpers import REPO, cli_env

    proc = subprocess.run([sys.executable, "-c", XLA_COMPILES, str(tmp_path)], env=cli_env(),
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["sums"] == [10.0, 30.0, 60.0]
    assert out["compiles"] == 1, out
