"""`seqtrain generate --num-samples N` and several `--prompt`s: one batched sampler call.

The run is a tiny GRU text_generation model (model.cell=gru, so the fused
GRU loop trains it and the export samples through the same cells), trained
and sampled from a temporary working directory with a relative --model-dir.
"""

from __future__ import annotations

import os
import re

import pytest
from conftest import TINY, run_cli_process

HEADER = re.compile(r"^==> prompt (\d+), sample (\d+) <==$", re.M)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("gen")
    run_cli_process("train", "--task", "text_generation", "--model-dir", "run", *TINY,
                    "--set", "model.cell=gru", "--set", "data.seq_len=16",
                    "--set", "data.sample_length=0", cwd=str(cwd))
    return str(cwd)


def _samples(stdout: str) -> list[tuple[int, int, str]]:
    """(prompt number, sample number, text) per `==>` block."""
    parts = HEADER.split(stdout)
    assert parts[0] == ""
    # Each block is the header's newline, the text, and echo's newline.
    assert all(b[0] == b[-1] == "\n" for b in parts[3::3])
    return [(int(p), int(s), b[1:-1]) for p, s, b in zip(parts[1::3], parts[2::3], parts[3::3])]


def test_several_prompts_and_samples_in_one_call(workdir):
    args = ["generate", "--model-dir", "run", "--prompt", "Shall I", "--prompt", "Thy",
            "--num-samples", "3", "--length", "25", "--seed", "5"]
    out = run_cli_process(*args, cwd=workdir).stdout
    samples = _samples(out)
    assert [(p, s) for p, s, _ in samples] == [(p, s) for p in (1, 2) for s in (1, 2, 3)]
    for p, _, text in samples:
        prompt = ("Shall I", "Thy")[p - 1]
        assert text.startswith(prompt) and len(text) == len(prompt) + 25
    # The rows draw different characters (one seed, independent rows).
    assert len({text for p, _, text in samples if p == 1}) == 3
    assert run_cli_process(*args, cwd=workdir).stdout == out  # same seed, same texts
    absolute = [a if a != "run" else os.path.join(workdir, "run") for a in args]
    assert run_cli_process(*absolute).stdout == out


def test_one_prompt_one_sample_prints_the_bare_text(workdir):
    out = run_cli_process("generate", "--model-dir", "run", "--prompt", "Thy", "--length", "10",
                          "--seed", "1", cwd=workdir).stdout
    assert "==>" not in out and out.startswith("Thy") and len(out.rstrip("\n")) == 13


@pytest.mark.parametrize("value,expect", [
    ("0", "--num-samples must be an integer >= 1, got 0"),
    ("-2", "--num-samples must be an integer >= 1, got -2"),
    # Four million rows would need a noise block of gigabytes: refused before loading.
    ("4000000", "1 prompt(s) x --num-samples 4000000 = 4000000 samples of --length 12"),
])
def test_bad_num_samples_is_exit_2(workdir, value, expect):
    before = sorted(os.listdir(os.path.join(workdir, "run")))
    proc = run_cli_process("generate", "--model-dir", "run", "--prompt", "a", "--num-samples",
                           value, "--length", "12", cwd=workdir, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert expect in proc.stderr
    assert sorted(os.listdir(os.path.join(workdir, "run"))) == before
