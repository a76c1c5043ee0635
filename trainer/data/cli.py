"""`seqtrain data inspect`: click objects only; the work is in trainer/data/inspect.py.

Nothing is imported from TensorFlow until a command runs (so --help is instant).
"""

from __future__ import annotations

import click



@click.group()
def data() -> None:
    """Look at a run's training data."""


@data.command("inspect")
@click.option("--model-dir", required=True, metavar="DIR", help="A run (local or gs://).")
@click.option("--step", required=True, type=int, metavar="N",
              help="Global batch N: what the training step from N to N+1 read.")
@click.option("--replica", type=int, default=None, metavar="R",
              help="Only replica R's slice of that batch (R < the run's replica count).")
@click.option("--preview", type=click.IntRange(min=0), default=8, show_default=True,
              help="How many examples to show as text.")
def inspect(model_dir, step, replica, preview) -> None:
    """Print the example ids and a preview of global batch N of a run.

    The training order is a pure function of the run's config (seed, batch size,
    data) and N, so this needs neither a checkpoint nor a replay of the input.
    """
    from trainer.data import inspect as inspect_lib

    inspect_lib.check_args(step, replica)  # a UserError is printed by the CLI's one printer
    for line in inspect_lib.batch_lines(model_dir, step, replica, preview):
        click.echo(line)
