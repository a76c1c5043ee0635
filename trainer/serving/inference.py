"""Shared plumbing of the inference commands (predict, generate, translate, a task's own).

TF-free: the CLI uses it to find the task that serves a command.

* `command_for`: the run in --model-dir exists and its task declares the command;
  otherwise a UserError naming the run's task and the command that serves it.
* `require`: that, and the run has an export.
* `expand_inputs`: command-line inputs where `-` reads stdin and `@FILE` reads a
  file (local or gs://), one input a line; `inputs_argument` is the click
  argument that expands them as the command line is parsed.
"""

from __future__ import annotations

import sys
from typing import Iterable

import click

from trainer import registry, run_dir, storage
from trainer.errors import UserError, first_line

# Generation is O(length) cell steps, and the whole text is held in memory.
MAX_GENERATE_LENGTH = 1_000_000


def run_task(model_dir: str) -> str:
    """The task name of the run in `model_dir`, from its config.yaml.

    Raises:
      UserError: not a directory, not a seqtrain run, unreadable config.yaml.
    """
    if not storage.exists(model_dir):
        raise UserError(f"--model-dir {model_dir!r} does not exist. Pass the directory of a "
                        "run made by `seqtrain train`.")
    if not storage.isdir(model_dir):
        raise UserError(f"--model-dir {model_dir!r} is a file, not a run directory.")
    run = run_dir.RunDir(model_dir)
    if not storage.exists(run.file(run_dir.CONFIG)):
        raise UserError(f"--model-dir {model_dir!r} is not a seqtrain run (no {run_dir.CONFIG}). "
                        "Pass the --model-dir of a run made by `seqtrain train`.")
    section = run.read_config_dict().get("task")
    task = section.get("name") if isinstance(section, dict) else None
    if not isinstance(task, str):
        raise UserError(f"{run.file(run_dir.CONFIG)!r} names no task (task.name); the run's "
                        "config was damaged. Restore it, or retrain into a new --model-dir.")
    return task


def command_for(model_dir: str, command: str, expected: str | None = None) -> registry.Command:
    """The declaration of `seqtrain COMMAND` by the task of the run in `model_dir`.

    Args:
      expected: a task name the caller needs exactly (None: any task serving `command`).

    Raises:
      UserError: no such run, an unknown task, or a task that `command` does not serve.
    """
    task = run_task(model_dir)
    try:
        spec = registry.spec(task)
    except UserError:
        raise UserError(f"--model-dir {model_dir!r} is a run of task {task!r}, which this "
                        f"seqtrain does not know (registered: {', '.join(registry.names())}). "
                        "A task from outside seqtrain needs its distribution installed "
                        f"(entry-point group {registry.ENTRY_POINT_GROUP}) or its config "
                        f"module in {registry.MODULES_ENV}.") from None
    served = {c.name: c for c in spec.commands}
    if command not in served or (expected and task != expected):
        use = " or ".join(f"`seqtrain {name} --model-dir {model_dir} ...`" for name in served)
        raise UserError(f"--model-dir {model_dir!r} holds a {task!r} run; `seqtrain {command}` "
                        f"does not serve that task. Use {use or 'none'}.")
    return served[command]


def require(model_dir: str, command: str, expected: str | None = None) -> str:
    """Checks that `seqtrain COMMAND` can serve the run in `model_dir`; returns its export dir.

    Raises:
      UserError: as `command_for`, or the run has no export yet.
    """
    command_for(model_dir, command, expected)
    export_dir = storage.join(model_dir, run_dir.EXPORT)
    if not storage.exists(storage.join(export_dir, "saved_model.pb")):
        raise UserError(
            f"--model-dir {model_dir!r} has no {run_dir.EXPORT}/saved_model.pb yet: the export "
            "is written when training reaches train.steps. Finish it with `seqtrain train "
            f"--model-dir {model_dir}`.")
    return export_dir


def load_export(export_dir: str, model_dir: str):
    """The SavedModel in `export_dir`; a damaged one (files missing or cut short) is a
    UserError that says how to write it again."""
    import tensorflow as tf

    try:
        return tf.saved_model.load(export_dir)
    except (OSError, ValueError, tf.errors.OpError) as e:
        raise UserError(
            f"the export in {export_dir} cannot be loaded ({first_line(e)[:300]}): it is "
            f"damaged or incomplete. `seqtrain train --model-dir {model_dir}` writes it again "
            "from the run's final checkpoint.") from None


def inputs_argument(name: str = "inputs") -> click.Argument:
    """The INPUTS argument of an inference command: `-` and @FILE expanded while parsing."""
    return click.Argument([name], nargs=-1, required=True,
                          callback=lambda ctx, param, value: expand_inputs(value))


def expand_inputs(args: Iterable[str], stdin=None) -> list[str]:
    """`-` reads stdin, `@FILE` reads a file (one input a line; blank lines skipped).

    `@@text` passes the literal `@text`.

    Raises:
      UserError: a missing, directory or non-UTF-8 file, or no input at all.
    """
    out: list[str] = []
    for n, arg in enumerate(args, 1):
        if arg == "-":
            out += _lines(_read_stdin(stdin or sys.stdin))
        elif arg.startswith("@@"):
            out.append(check_utf8(arg[1:], f"argument {n}"))
        elif arg.startswith("@") and len(arg) > 1:
            out += _lines(_read_input_file(
                check_utf8(arg[1:], f"the file name of argument {n}")))
        else:
            out.append(check_utf8(arg, f"argument {n}"))
    if not out:
        raise UserError("no inputs: pass them as arguments, `-` to read standard input, or "
                        "@FILE to read a file (one input a line).")
    return out


def check_utf8(text: str, name: str) -> str:
    """`text` as Python decoded it from argv or stdin (undecodable bytes kept as lone
    surrogates), if it was UTF-8."""
    storage.decode_utf8(text.encode("utf-8", "surrogateescape"), name, NOT_UTF8_FIX)
    return text


NOT_UTF8_FIX = "Pass UTF-8 text (`iconv -f latin1 -t utf-8` converts it)."


def _read_stdin(stream) -> str:
    if hasattr(stream, "buffer"):
        return storage.decode_utf8(stream.buffer.read(), "standard input", NOT_UTF8_FIX)
    return check_utf8(stream.read(), "standard input")


def _read_input_file(path: str) -> str:
    return storage.read_input(
        path, f"input file @{path}", text=True,
        missing="@FILE reads one input a line (use @@text for a literal text starting with @).",
        directory="@FILE needs a text file.")


def _lines(text: str) -> list[str]:
    return [line.rstrip("\r") for line in text.removeprefix("\ufeff").split("\n")
            if line.strip()]


def predict_command(handler: str) -> registry.Command:
    """`seqtrain predict`, shared by the tasks whose inputs are one line each."""
    return registry.Command(
        "predict",
        help="""Run a text_classification or forecasting export on INPUTS.

    Each input is a text (classification) or a window of numbers (forecasting).
    `-` reads standard input and @FILE a file, one input a line.
    """,
        handler=handler, params=(inputs_argument(),))
