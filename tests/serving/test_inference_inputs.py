"""Inference commands read `-` (stdin) and @FILE, and `predict` serves forecasting exports."""

from __future__ import annotations

import numpy as np

from conftest import run_cli_process

SHORT = ["--set", "train.steps=4", "--set", "train.batch_size=4", "--set",
         "train.steps_per_loop=2", "--set", "train.eval_every=4", "--set",
         "train.checkpoint_every=4", "--set", "model.units=4", "--set", "data.window=5"]


def test_predict_on_a_forecasting_export_reads_args_stdin_and_files(tmp_path):
    t = np.arange(80)
    rows = [f"{i},{10 + np.sin(i / 3):.4f},{i % 7}" for i in t]
    (tmp_path / "s.csv").write_text("t,y,dow\n" + "\n".join(rows) + "\n")
    run_cli_process("train", "--task", "forecasting", "--set", "data.path=s.csv",
                    "--set", "data.time_column=t", "--set", "data.target=y", *SHORT,
                    "--model-dir", "run", cwd=str(tmp_path))
    # windows: 5 steps x 2 columns (y, dow), time-major
    w1 = "10,1, 10.3,2, 10.6,3, 10.8,4, 10.9,5"
    w2 = "[[9,0],[9.2,1],[9.5,2],[9.7,3],[9.9,4]]"
    (tmp_path / "windows.txt").write_text(f"{w1}\n\n{w2}\n")
    by_arg = run_cli_process("predict", "--model-dir", "run", w1, w2, cwd=str(tmp_path))
    by_stdin = run_cli_process("predict", "--model-dir", "run", "-", cwd=str(tmp_path),
                               input_text=f"{w1}\n{w2}\n")
    by_file = run_cli_process("predict", "--model-dir", "run", "@windows.txt",
                              cwd=str(tmp_path))
    lines = by_arg.stdout.strip().splitlines()
    assert len(lines) == 2 and all(np.isfinite(float(x)) for x in lines)
    assert by_stdin.stdout == by_arg.stdout == by_file.stdout
    bad = run_cli_process("predict", "--model-dir", "run", "1,2,3", cwd=str(tmp_path),
                          check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "input 1 has 3 numbers" in bad.stderr and "5 steps x 2 column(s) (y, dow) = 10" \
        in bad.stderr
