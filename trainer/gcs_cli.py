"""`seqtrain runs list|compare [PREFIX]` and `seqtrain stage LOCAL DEST`.

Click objects only; the work is in trainer/gcs.py (listing, upload) and
trainer/runs_table.py (tables). trainer/cli.py adds `runs` and `stage` to the
main `seqtrain` group. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import json

import click


_HEADLINE_METRICS = 3


@click.group()
def runs() -> None:
    """Inspect seqtrain runs in a local directory or under gs://BUCKET/PATH."""


@runs.command("list")
@click.argument("prefix", default="runs", required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run instead of a table.")
def list_runs(prefix: str, as_json: bool) -> None:
    """List the runs under PREFIX (default: runs): task, step, eval metrics, last update.

    Each task's headline metric comes first; horizon metrics sort h1, h2, ..., h10.
    """
    from trainer import gcs

    found = gcs.list_runs(prefix)
    if as_json:
        for run in found:
            record = {k: v for k, v in run.items() if k != "config"}
            click.echo(json.dumps({**record, "updated": run["updated"].isoformat()},
                                  sort_keys=True))
        return
    if not found:
        click.echo(f"no seqtrain runs (directories with config.yaml) under {prefix}")
        return
    click.echo(format_table(found))


@runs.command("compare")
@click.argument("prefix", default="runs", required=False)
@click.option("--metric", default=None,
              help="Eval metric to rank by; default: the task's headline metric.")
def compare_runs(prefix: str, metric: str | None) -> None:
    """Compare the runs under PREFIX: task, the hparams that differ, best metric, step, age.

    Runs are ranked best first by the metric (each task's headline metric unless
    --metric is given); runs without it come last.
    """
    from trainer import gcs
    from trainer.runs_table import compare_table

    found = gcs.list_runs(prefix)
    if not found:
        click.echo(f"no seqtrain runs (directories with config.yaml) under {prefix}")
        return
    click.echo(compare_table(found, metric))


def format_table(found: list[dict]) -> str:
    """The `runs list` table: RUN, TASK, STEP, METRICS, UPDATED (UTC)."""
    from trainer.runs_table import headline_metrics, render

    rows = [("RUN", "TASK", "STEP", "METRICS", "UPDATED (UTC)")]
    for run in found:
        rows.append((
            run["name"],
            run["task"] or "?",
            "-" if run["step"] is None else str(run["step"]),
            headline_metrics(run, _HEADLINE_METRICS),
            run["updated"].strftime("%Y-%m-%d %H:%M:%S"),
        ))
    return render(rows)


@click.command()
@click.argument("local")
@click.argument("dest")
def stage(local: str, dest: str) -> None:
    """Upload file LOCAL to gs:// DEST, verifying its CRC32C and MD5.

    A DEST ending in / gets LOCAL's file name appended.
    """
    from trainer import gcs

    result = gcs.stage(local, dest)
    click.echo(f"{result['uri']}  {result['size']} bytes  crc32c={result['crc32c']}  "
               f"md5={result['md5']}")
