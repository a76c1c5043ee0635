"""Every task's resume is exact: a run stopped with --stop-at and resumed equals an
uninterrupted run bit for bit (model, optimizer slots, step, dropout RNG states),
under the default strategy and Mirrored on 2 logical CPUs.

The default-strategy runs use relative --model-dir values from a temporary working
directory, as users type them; the Mirrored ones use absolute paths.

Cost: three trainer processes per case. text_classification's exact resume (dropout
on, default and Mirrored, a cut inside a compiled loop, crossing checkpoints) is
test_train.py's `test_interrupted_and_resumed_run_is_bitwise_identical`, and its
relative and symlinked model dirs are test_run_integrity.py's, so it is not repeated
here. XLA (`runtime.jit_compile=auto` turns it on for the other four tasks on CPU)
costs one compilation per replica per process: it stays on where it is cheap
(forecasting and multistep_forecasting under both strategies, text_generation under
the default one) and is off for translation and Mirrored text_generation, where
compiling was a third of the case and the resume path is the same (translation's exact
resume with XLA on: test_translation.py's `test_train_resume_export_translate[default]`).
"""

from __future__ import annotations

import pytest

from helpers import (MIRRORED, assert_checkpoints_equal, assert_resume_is_exact,
                     checkpoint_values, ckpt, seqtrain)

# The stop falls inside a 2-step compiled loop call, and the resumed leg crosses a
# checkpoint (step 4). No in-loop eval: it ran at the last step of both legs alike,
# so it proved nothing about the resume (the evaluation itself has its own tests).
STEPS, STOP = 8, 3
LOOP = ["train.batch_size=8", "train.steps_per_loop=2", "train.log_every=2",
        "train.checkpoint_every=4", "train.eval_in_loop=false",
        f"train.steps={STEPS}", "model.dropout=0.1"]
NO_XLA = ["runtime.jit_compile=false"]
TINY = {
    "text_classification": ["data.vocab_size=64", "data.sequence_length=8", "model.units=8",
                            "model.embedding_dim=8"],
    "forecasting": ["data.window=12", "data.synthetic_length=200", "model.units=8",
                    "model.layers=1"],
    "multistep_forecasting": ["data.window=12", "data.horizon=2", "data.synthetic_length=200",
                              "model.units=8", "model.layers=1"],
    "text_generation": ["data.seq_len=12", "data.sample_length=0", "model.layers=1",
                        "model.units=8", "model.embedding_dim=8"],
    "translation": ["data.toy_size=120", "model.units=8", "model.embedding_dim=8"],
}


CASES = [  # (task, strategy, extra settings)
    ("forecasting", "default", []), ("forecasting", "mirrored", []),
    ("multistep_forecasting", "default", []), ("multistep_forecasting", "mirrored", []),
    ("text_generation", "default", []), ("text_generation", "mirrored", NO_XLA),
    ("translation", "default", NO_XLA), ("translation", "mirrored", NO_XLA),
]


@pytest.mark.parametrize("task,strategy,extra", CASES, ids=[f"{t}-{s}" for t, s, _ in CASES])
def test_resume_equals_an_uninterrupted_run_bitwise(tmp_path, task, strategy, extra):
    sets = LOOP + TINY[task] + extra
    args = ["train", "--task", task, *[a for s in sets for a in ("--set", s)]]
    if strategy == "mirrored":
        args += MIRRORED
        cut, straight = str(tmp_path / "cut"), str(tmp_path / "straight")
    else:
        cut, straight = "runs/cut", "straight"  # relative to the working directory
    assert_resume_is_exact(args, steps=STEPS, stop_at=STOP, cut=cut, straight=straight,
                           cwd=tmp_path, must_have=("optimizer", "rng"))


@pytest.mark.parametrize("change", [["runtime.cpu_replicas=2"], ["train.batch_size=16"]],
                         ids=["replicas", "batch_size"])
def test_changed_replicas_or_batch_resumes_from_the_step(tmp_path, change):
    """The data position is the step (a stateless order), so a resume with another
    replica count or batch size needs no special case: the model, the optimizer and
    the step are restored and the input continues at global batch 4 of the new
    setup, with no warning. The resumed leg trains at learning rate 0 (a changed rate
    takes effect on resume), so its weights must still be the checkpoint's, bit for
    bit, and Adam's step count continues from the checkpoint's."""
    args = ["train", "--task", "text_classification",
            *[a for s in LOOP + TINY["text_classification"] for a in ("--set", s)]]
    seqtrain(*args, "--model-dir", "run", "--stop-at", "4", cwd=tmp_path)
    resumed = seqtrain(*args, "--model-dir", "run", "--set", "train.learning_rate=0.0",
                       *[a for s in change for a in ("--set", s)], cwd=tmp_path)
    assert "resumed from run/checkpoints/ckpt-4 at step 4" in resumed.stdout, resumed.stdout
    assert "changed" not in resumed.stderr and "restarts" not in resumed.stderr
    before = checkpoint_values(ckpt(tmp_path / "run", 4))
    after = checkpoint_values(ckpt(tmp_path / "run", STEPS))
    saved = checkpoint_values(ckpt(tmp_path / "run", STEPS), exclude=())
    assert "step/.ATTRIBUTES/VARIABLE_VALUE" in saved
    assert not any(k.startswith("iterator") for k in saved)  # the step is the data position
    model = lambda values: {k: v for k, v in values.items()  # noqa: E731
                            if k.startswith("optimizer/_trainable_variables/")}
    assert model(before)
    assert_checkpoints_equal(model(before), model(after), must_have=())
    iterations = "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"
    assert (before[iterations], after[iterations]) == (4, STEPS)
