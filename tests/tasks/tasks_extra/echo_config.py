"""Config of the test-only `echo` task: recall a sequence's first value at its end.

A task from outside seqtrain, as a user would write one (docs/tasks.md): this module
is TF-free and named in SEQTRAIN_TASK_MODULES; the Task is in echo_task.py, and
its inference command `seqtrain echo` is declared here.
"""

from __future__ import annotations

import dataclasses

import click

from trainer.config import field
from trainer.models.configs import RecurrentConfig
from trainer.registry import Command, TaskSpec
from trainer.serving.inference import inputs_argument


@dataclasses.dataclass(frozen=True)
class EchoData:
    length: int = field(5, "Values per sequence.", min=1)
    examples: int = field(256, "Training sequences (uniform in [-1, 1], from runtime.seed).",
                          min=1)


@dataclasses.dataclass(frozen=True)
class EchoModel(RecurrentConfig):
    bidirectional: bool = field(False, "Wrap each recurrent layer in Bidirectional.")


SPEC = TaskSpec(
    name="echo",
    description="Test-only: a recurrent model recalls a sequence's first value at its end.",
    data=EchoData,
    model=EchoModel,
    module="tasks_extra.echo_task",
    train_defaults=dict(steps=20, batch_size=16, learning_rate=1e-2, eval_every=10,
                        checkpoint_every=10, eval_batches=2),
    headline_metric="mse",
    headline_goal="min",
    commands=(Command(
        "echo",
        help="""Recall the first value of each sequence with an echo export.

    Each input is `data.length` numbers separated by commas; `-` reads standard
    input and @FILE a file, one sequence a line.
    """,
        handler="tasks_extra.echo_task:echo_lines",
        params=(click.Option(["--digits"], type=click.IntRange(0, 9), default=3,
                             show_default=True, help="Decimals printed."),
                inputs_argument("sequences")),
    ),),
)
