"""`seqtrain runs list PREFIX` and `seqtrain stage LOCAL DEST`.

Click objects only; the work is in trainer/gcs.py. trainer/cli.py adds `runs`
and `stage` to the main `seqtrain` group.
"""

from __future__ import annotations

import functools
import json

import click

from trainer.errors import EXIT_USER_ERROR, UserError

_HEADLINE_METRICS = 3


def _user_errors(f):
    """Prints a UserError as one paragraph and exits with EXIT_USER_ERROR."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except UserError as e:
            click.echo(f"Error: {e}", err=True)
            raise click.exceptions.Exit(EXIT_USER_ERROR) from None

    return wrapper


@click.group()
def runs() -> None:
    """Inspect seqtrain runs in a local directory or under gs://BUCKET/PATH."""


@runs.command("list")
@click.argument("prefix")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run instead of a table.")
@_user_errors
def list_runs(prefix: str, as_json: bool) -> None:
    """List the runs under PREFIX: task, latest step, latest eval metrics, last update."""
    from trainer import gcs

    found = gcs.list_runs(prefix)
    if as_json:
        for run in found:
            click.echo(json.dumps({**run, "updated": run["updated"].isoformat()}, sort_keys=True))
        return
    if not found:
        click.echo(f"no seqtrain runs (directories with config.yaml) under {prefix}")
        return
    click.echo(format_table(found))


def format_table(found: list[dict]) -> str:
    """The `runs list` table: RUN, TASK, STEP, METRICS, UPDATED (UTC)."""
    rows = [("RUN", "TASK", "STEP", "METRICS", "UPDATED (UTC)")]
    for run in found:
        rows.append((
            run["name"],
            run["task"] or "?",
            "-" if run["step"] is None else str(run["step"]),
            _headline(run),
            run["updated"].strftime("%Y-%m-%d %H:%M:%S"),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _headline(run: dict) -> str:
    if run["error"] and not run["metrics"]:
        return f"({run['error']})"
    items = sorted(run["metrics"].items())[:_HEADLINE_METRICS]
    text = " ".join(f"{k}={_num(v)}" for k, v in items) or "-"
    if run["metrics"] and run["metrics_step"] is not None and run["metrics_step"] != run["step"]:
        text += f" @{run['metrics_step']}"
    return text


def _num(v) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else str(v)


@click.command()
@click.argument("local")
@click.argument("dest")
@_user_errors
def stage(local: str, dest: str) -> None:
    """Upload file LOCAL to gs:// DEST, verifying its CRC32C and MD5.

    A DEST ending in / gets LOCAL's file name appended.
    """
    from trainer import gcs

    result = gcs.stage(local, dest)
    click.echo(f"{result['uri']}  {result['size']} bytes  crc32c={result['crc32c']}  "
               f"md5={result['md5']}")
