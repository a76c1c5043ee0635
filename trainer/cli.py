"""The `seqtrain` command line. Click commands only: parse, build config, call a library function.

The inference commands (`predict`, `generate`, `translate`, a user task's own) are not
here: each task declares them in its spec (trainer/registry.py) and `_Group` adds them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import warnings  # noqa: E402

# google.api_core warns on every import that it will stop supporting this Python in
# 2027; a user error must stay one paragraph.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core")

import click  # noqa: E402

from trainer.errors import (  # noqa: E402
    EXIT_PREEMPTED, EXIT_USER_ERROR, EXIT_WORKER_LOST, Preempted, UserError, WorkerLost)

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _Group(click.Group):
    """Turns user mistakes into one clean paragraph and a permanent exit code, and adds the
    inference commands the registered tasks declare."""

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *_registry_call(lambda r: r.commands())})

    def get_command(self, ctx, name):
        return super().get_command(ctx, name) or _task_command(name)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(EXIT_USER_ERROR)
        except Preempted as e:
            kind = "retryable code" if e.exit_code == EXIT_PREEMPTED else "code"
            click.echo(f"seqtrain: {e}; exiting with {kind} {e.exit_code} (run the same "
                       "command again to resume)", err=True)
            # Everything is saved and closed. Interpreter teardown with TF can take
            # seconds that a preemption deadline does not have.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(e.exit_code)
        except KeyboardInterrupt:  # Ctrl-C before training started: nothing to save
            click.echo("seqtrain: interrupted (SIGINT) before training started; nothing was "
                       "saved.", err=True)
            ctx.exit(130)
        except WorkerLost as e:
            click.echo(f"seqtrain: lost another worker ({e}); exiting with retryable code "
                       f"{EXIT_WORKER_LOST}: start every worker again (the same commands) to "
                       "resume from the last checkpoint", err=True)
            ctx.exit(EXIT_WORKER_LOST)


class _UserClickError(click.ClickException):
    """A UserError raised while click parses (before `_Group.invoke` can catch it)."""

    exit_code = EXIT_USER_ERROR


def _registry_call(fn):
    from trainer import registry

    try:
        return fn(registry)
    except UserError as e:
        raise _UserClickError(str(e)) from None


def _task_command(name: str) -> click.Command | None:
    """`seqtrain NAME --model-dir DIR ...` as the registered tasks declare it, or None."""
    decls = _registry_call(lambda r: r.commands()).get(name)
    if not decls:
        return None

    def serve(model_dir, **params):
        from trainer.serving import inference

        handler = inference.command_for(model_dir, name).load_handler()
        for line in handler(model_dir, **params):
            click.echo(line)

    declared = decls[0][1]
    return click.Command(name, callback=serve, help=declared.help, params=[
        click.Option(["--model-dir"], required=True, metavar="DIR"), *declared.params])


@click.group(cls=_Group, context_settings=CONTEXT)
@click.option("-v", "--verbose", is_flag=True,
              help="Log at INFO level and show TensorFlow's start-up messages.")
def main(verbose: bool) -> None:
    """seqtrain: production training jobs for recurrent sequence models."""
    if not verbose:
        from trainer import quiet

        quiet.install()
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


class _SetAliases(click.Command):
    """Reads `--section.key=VALUE` as `--set section.key=VALUE`.

    Vertex AI hyperparameter tuning appends each trial's values as `--<parameterId>=<value>`
    and seqtrain's parameter ids are config keys (trainer/jobs/tune.py).
    """

    _ALIAS = re.compile(r"^--((?:task|data|model|train|runtime)\.[A-Za-z0-9_.]+)=(.*)$", re.S)

    def parse_args(self, ctx, args):
        out = []
        for arg in args:
            m = self._ALIAS.match(arg)
            out += ["--set", f"{m.group(1)}={m.group(2)}"] if m else [arg]
        return super().parse_args(ctx, out)


def config_options(f):
    f = click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
                     help="Override a config value (YAML-parsed); repeatable.")(f)
    f = click.option("--config", "config_file", metavar="FILE.yaml",
                     help="YAML config file (local or gs://).")(f)
    f = click.option("--task", help="Task name (see `seqtrain tasks`).")(f)
    return f


@main.command()
def tasks() -> None:
    """List the registered tasks."""
    from trainer import registry

    for name in registry.names():
        click.echo(f"{name:<24} {registry.spec(name).description}")


@main.command("config")
@click.option("--task", default="text_classification", show_default=True)
@click.option("--plain", is_flag=True, help="Without comments.")
def show_config(task: str, plain: bool) -> None:
    """Print the full default config of a task as YAML."""
    from trainer import experiment

    click.echo(experiment.default_config(task).to_yaml(comments=not plain))


@main.command(cls=_SetAliases)
@config_options
@click.option("--model-dir", metavar="DIR", help="Run directory (local or gs://). "
              "Default: ./runs/<task>-<time>. Resumes if it holds a checkpoint.")
@click.option("--stop-at", type=int, metavar="STEP",
              help="Checkpoint and exit once this step is reached (train.steps unchanged).")
def train(task, config_file, overrides, model_dir, stop_at) -> None:
    """Train a task; resume automatically from MODEL_DIR's latest checkpoint."""
    if stop_at is not None and stop_at < 1:
        raise UserError(f"--stop-at must be a step >= 1, got {stop_at}: it checkpoints and exits "
                        "once training reaches that global step. Omit it to train to "
                        "train.steps.")
    from trainer import cluster, experiment, run_dir, storage

    info = cluster.from_environ()
    # An existing run's own config.yaml is the base layer: a resume needs only --model-dir.
    explicit = model_dir or os.environ.get("AIP_MODEL_DIR", "").strip()
    dirs = cluster.resolve_dirs(model_dir) if explicit else None
    base = run_dir.RunDir(dirs.model_dir).file(run_dir.CONFIG) if dirs else None
    if base and not (storage.isdir(dirs.model_dir) and storage.exists(base)):
        base = None
    if base:
        run_dir.RunDir(dirs.model_dir).read_config_dict()  # a clear error if it is damaged
        if dirs.source == "flag":  # resuming by --model-dir: where the run keeps its files
            recorded = run_dir.RunDir.open(dirs.model_dir)
            dirs = dataclasses.replace(dirs, checkpoint_dir=recorded.checkpoint_dir,
                                       log_dir=recorded.log_dir)
    cfg = experiment.load(task, config_file, overrides, base_file=base)
    if info.is_evaluator:
        click.echo("seqtrain: this task has the evaluator role; seqtrain evaluates on the chief "
                   "during training, so there is nothing to do here.")
        return
    # TensorFlow is imported once the config is known to be valid: a mistyped --set
    # is reported in a fraction of a second.
    from trainer import runner, train_lib

    if dirs is None:
        # A default dir is only safe for one process: workers must share one dir.
        default = None if info.is_multi_worker else runner.default_model_dir(cfg.task.name)
        dirs = cluster.resolve_dirs(model_dir, default=default)
    result = train_lib.train(cfg, dirs.model_dir, checkpoint_dir=dirs.checkpoint_dir,
                             log_dir=dirs.log_dir, stop_at=stop_at)
    if info.is_chief:
        _print_result(cfg, result)


def _print_result(cfg, result: dict) -> None:
    from trainer.run_dir import CONFIG, RUNTIME

    d = result["model_dir"]
    click.echo(f"\nRun {cfg.task.name} finished at step {result['step']} in {d}")
    click.echo(f"  checkpoints : {result['checkpoint']}")
    click.echo(f"  tensorboard : tensorboard --logdir {result['log_dir']}")
    click.echo(f"  export      : {result['export_dir'] or '(not yet: train to train.steps)'}")
    click.echo(f"  config      : {d}/{CONFIG}, runtime: {d}/{RUNTIME}")
    if result.get("best"):
        b = result["best"]
        click.echo(f"  best        : {b['metric']}={b['value']:.4f} at step {b['step']} "
                   "(the export holds these weights)")
    if result["metrics"]:
        from trainer import registry, runs_table

        names = runs_table.ordered_metrics(result["metrics"], registry.spec(cfg.task.name))
        click.echo("  eval        : " + ", ".join(
            f"{k}={result['metrics'][k]:.4f}" for k in names))


@main.command()
@click.option("--model-dir", metavar="DIR",
              help="The run (local or gs://). Default on Vertex AI: AIP_MODEL_DIR.")
@click.option("--watch", is_flag=True,
              help="Evaluate each new checkpoint once until the final step (a side-car "
                   "evaluator; pair it with train.eval_in_loop=false).")
@click.option("--poll-secs", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="With --watch: how often to look for a new checkpoint.")
def evaluate(model_dir, watch, poll_secs) -> None:
    """Evaluate a run's newest checkpoint on its eval split (or every new one with --watch)."""
    from trainer import cluster
    from trainer.run_dir import RunDir

    model_dir = cluster.resolve_dirs(model_dir).model_dir
    if not watch:
        RunDir.open(model_dir)  # not a run: say so before TensorFlow's import (seconds)
    from trainer import evaluator

    if watch:
        result = evaluator.evaluate_watch(model_dir, poll_secs=poll_secs)
        if result.get("best"):
            b = result["best"]
            click.echo(f"best {b['metric']}={b['value']:.4f} at step {b['step']}")
        return
    result = evaluator.evaluate(model_dir)
    click.echo(f"step {result['step']} ({result['checkpoint']})")
    for k, v in sorted(result["metrics"].items()):
        click.echo(f"  {k}: {v:.4f}")


@main.command()
@config_options
def check(task, config_file, overrides) -> None:
    """Report, per recurrent layer, whether it takes the cuDNN kernel on a GPU."""
    from trainer import experiment, kernels

    cfg = experiment.load(task, config_file, overrides)
    click.echo(kernels.report_text(cfg))


@main.command(cls=_SetAliases)
@config_options
@click.option("--out", required=True, metavar="DIR",
              help="Directory for the prepared dataset, local or gs:// (new, empty, or "
                   "holding this same dataset, which is then reused); '{key}' in it becomes "
                   "the content key's first 16 hex digits.")
@click.option("--shard-mb", type=click.FloatRange(min=0.001), default=256.0, show_default=True,
              help="Size of each shard file.")
@click.option("--progress-mb", type=click.FloatRange(min=0.01), default=64.0, show_default=True,
              hidden=True)
def prepare(task, config_file, overrides, out, shard_mb, progress_mb) -> None:
    """Write a task's data as a prepared dataset: verified arrays read in place.

    Train from it with --set data.prepared_dir=DIR (same config otherwise). `train`
    also prepares by itself into MODEL_DIR/data/ (data.prepare=auto, the default).
    """
    from trainer.data import prepare_cmd

    for line in prepare_cmd.run(task, config_file, overrides, out, shard_mb=shard_mb,
                                progress_mb=progress_mb,
                                log=lambda m: click.echo(m, err=True)):
        click.echo(line)


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--workers", "-n", type=int, required=True, help="Local worker processes.")
@click.option("--grace", type=float, default=10.0, show_default=True,
              help="Seconds to wait after SIGTERM before killing the other workers.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, required=True)
def launch(workers, grace, args) -> None:
    """Run `seqtrain ARGS` as N local workers with their own TF_CONFIG.

    Example: seqtrain launch --workers 2 -- train --model-dir runs/mw
    """
    from trainer import launch as launch_lib

    sys.exit(launch_lib.run_local(list(args), workers, grace=grace))


from trainer.data.cli import data  # noqa: E402
from trainer.gcs_cli import runs, stage  # noqa: E402
from trainer.jobs.cli import job  # noqa: E402

main.add_command(data)
main.add_command(job)
main.add_command(runs)
main.add_command(stage)

if __name__ == "__main__":
    main()
