"""The README's shell commands, run verbatim as a user types them.

Every line of every ```bash block in README.md is either run here or listed in
NOT_RUN with its reason; a README line in neither place fails the test, so a new
command cannot slip in untested. Commands run in subprocesses through `bash -c`
from a fresh temporary working directory, so the README's relative paths
(`runs/a`, `my.yaml`, `reviews.txt`) are used as written. Training commands are
shortened only by documented `--set` overrides appended to the line (SHORTEN);
the README text itself is never rewritten.

Not run (NOT_RUN), one reason each:
- the two Quickstart commands: they create a venv and install the package; CI's
  `.ci/run` runs the test command itself on a fresh clone;
- `tensorboard --logdir runs/`: starts a server that runs until stopped;
- the `seqtrain runs compare gs://...` line: needs a real gs:// bucket and credentials.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"

NOT_RUN = {
    'python3 -m venv .venv && . .venv/bin/activate && pip install . && seqtrain train':
        "installs the package into a new venv (CI runs the install and the tests itself)",
    'python3 -m venv .venv && . .venv/bin/activate && pip install ".[test]" && python -m pytest -q':
        "the whole suite in a new venv: .ci/run runs exactly this line",
    "tensorboard --logdir runs/": "starts a server that runs until stopped",
    "seqtrain runs compare gs://my-bucket/sweeps/tc": "needs a real gs:// bucket and credentials",
    "python -m pytest -q tests/run/test_train.py": "a test module, not a user command (run by the suite)",
}

# Tiny shapes for every training command: documented config keys only.
TINY = ["model.units=8", "train.checkpoint_every=2", "train.eval_every=4", "train.eval_batches=2",
        "train.log_every=2", "runtime.jit_compile=false"]
# Per command (matched by its start), the steps it is shortened to. The resume
# pair keeps its meaning: the first run stops early, the second continues.
STEPS = {
    "seqtrain train --model-dir runs/a --set train.steps=600": 4,
    "seqtrain train --model-dir runs/a --set train.steps=2000": 6,
}
DEFAULT_STEPS = 4


def readme_commands() -> list[str]:
    """Logical command lines of the README's ```bash blocks (continuations joined, comments cut)."""
    lines, text = [], README.read_text(encoding="utf-8")
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", "", block)
        for line in joined.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()  # trailing comments ("# later:")
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def shorten(line: str) -> str:
    """Appends the documented `--set` overrides that make a training command tiny."""
    if not line.startswith("seqtrain train"):
        return line
    steps = next((n for prefix, n in STEPS.items() if line.startswith(prefix)), DEFAULT_STEPS)
    return line + "".join(f" --set {kv}" for kv in TINY + [f"train.steps={steps}"])


def run(line: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # The console script installed beside this interpreter (the venv's bin, active or not).
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    seqtrain = shutil.which("seqtrain", path=env["PATH"])
    assert seqtrain, "the seqtrain console script must be installed beside this Python"
    proc = subprocess.run(["bash", "-c", "set -o pipefail; " + shorten(line)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (f"README command failed (exit {proc.returncode}): {line}\n"
                                  f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


def test_every_readme_command_is_run_or_listed():
    commands = readme_commands()
    run_here = [c for c in commands if c not in NOT_RUN]
    assert set(run_here) == set(RUN_ORDER), (
        "README commands and this test disagree.\n"
        f"in the README, not run here: {sorted(set(run_here) - set(RUN_ORDER))}\n"
        f"run here, not in the README: {sorted(set(RUN_ORDER) - set(run_here))}")
    assert not set(NOT_RUN) - set(commands), f"stale NOT_RUN entries: {set(NOT_RUN) - set(commands)}"


# The order commands run in: a command that reads a run comes after the one that made it.
RUN_ORDER = [
    "seqtrain tasks",
    "seqtrain config --task forecasting",
    "seqtrain config --task text_classification > my.yaml",
    "seqtrain train --config my.yaml --set train.steps=2000 --set model.cell=gru "
    "--set model.layers=2 --model-dir runs/gru2",
    "seqtrain train --model-dir runs/a --set train.steps=600",
    "seqtrain train --model-dir runs/a --set train.steps=2000",
    "seqtrain data inspect --model-dir runs/a --step 1234",
    "printf 'loved it\\nnever again\\n' > reviews.txt",
    'seqtrain predict --model-dir runs/a "great food, friendly staff" @reviews.txt',
    "seqtrain train --task text_generation --model-dir runs/gen",
    'seqtrain generate --model-dir runs/gen --prompt "The " --length 100 --num-samples 4 --seed 1',
    "seqtrain train --task translation --model-dir runs/dates",
    'echo "march 3, 2021" | seqtrain translate --model-dir runs/dates - --attention-png attention.png',
    "seqtrain runs list",
    "seqtrain runs compare runs",
    "seqtrain evaluate --model-dir runs/a",
    "seqtrain job render --platform tfjob --image IMAGE --workers 2 --gpus-per-worker 1 "
    "--model-dir gs://my-bucket/runs/tc --out job.yaml",
    "seqtrain job render --platform vertex --image IMAGE --model-dir gs://my-bucket/sweeps/tc "
    "--tune train.learning_rate=1e-4:1e-2:log --tune model.units=32,64 "
    "--metric accuracy --goal max --trials 12 --parallel 3 --out tune.yaml",
]


@pytest.mark.timeout(900)
def test_readme_commands_run_from_a_fresh_directory(tmp_path):
    """All runnable README commands, in order, in one working directory (runs share dirs)."""
    out = {line: run(line, tmp_path) for line in RUN_ORDER}

    inspected = out["seqtrain data inspect --model-dir runs/a --step 1234"].stdout
    assert inspected.startswith("global batch 1234 of runs/a") and "\nids: " in inspected, inspected

    # The resume pair: the first run stops at its steps, the second resumes from it.
    first = out["seqtrain train --model-dir runs/a --set train.steps=600"]
    assert "resumed from" not in first.stdout
    second = out["seqtrain train --model-dir runs/a --set train.steps=2000"]
    assert re.search(r"resumed from \S*runs/a/checkpoints/ckpt-4 at step 4", second.stdout), second.stdout
    assert "finished at step 6" in second.stdout, second.stdout

    # What the tour says lands where, and what the inference commands print.
    assert (tmp_path / "my.yaml").read_text().startswith("# seqtrain config")
    assert "model.cell" not in out["seqtrain tasks"].stdout and "translation" in out["seqtrain tasks"].stdout
    for run_dir in ("gru2", "a", "gen", "dates"):
        assert (tmp_path / "runs" / run_dir / "export").is_dir(), run_dir
    gru_config = (tmp_path / "runs/gru2/config.yaml").read_text()
    assert re.search(r"cell: gru\b", gru_config) and re.search(r"layers: 2\b", gru_config)
    predicted = out['seqtrain predict --model-dir runs/a "great food, friendly staff" @reviews.txt'].stdout
    assert len(predicted.strip().splitlines()) == 3, predicted  # the argument and the file's two lines
    translated = out['echo "march 3, 2021" | seqtrain translate --model-dir runs/dates - '
                     '--attention-png attention.png'].stdout
    assert translated.startswith("march 3, 2021\t"), translated  # the input, a tab, its translation
    generated = out['seqtrain generate --model-dir runs/gen --prompt "The " --length 100 '
                    '--num-samples 4 --seed 1'].stdout
    assert generated.count("==> prompt") == 4, generated
    assert (tmp_path / "attention.png").stat().st_size > 0
    listing = out["seqtrain runs list"].stdout
    for run_dir in ("gru2", "a", "gen", "dates"):
        assert re.search(rf"^{run_dir}\s", listing, flags=re.M), listing
    assert "kind: TFJob" in (tmp_path / "job.yaml").read_text()
    assert "HyperparameterTuningJob" in (tmp_path / "tune.yaml").read_text() or \
        "studySpec" in (tmp_path / "tune.yaml").read_text()
