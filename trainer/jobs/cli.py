"""`seqtrain job ...`: click commands only; the work is in trainer/jobs/render.py.

Register onto the main group with `main.add_command(job)`.
"""

from __future__ import annotations

import posixpath
import sys

import click

from trainer.errors import EXIT_USER_ERROR, UserError
from trainer.jobs import render as render_lib


@click.group(name="job")
def job() -> None:
    """Render job specs that run `seqtrain train` on a cluster."""


@job.command(name="render")
@click.option("--platform", required=True, type=click.Choice(render_lib.PLATFORMS),
              help="tfjob (Kubeflow), k8s (Indexed Job), vertex (CustomJob), tpu (GKE TPU slice).")
@click.option("--image", required=True, help="Container image with seqtrain installed.")
@click.option("--model-dir", required=True,
              help="gs:// dir for checkpoints and TensorBoard logs (Vertex: baseOutputDirectory).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Training processes (pods/replicas): one chief plus N-1 workers.")
@click.option("--gpus-per-worker", type=click.IntRange(min=0), default=0, show_default=True,
              help="GPUs per pod/replica (nvidia.com/gpu, Vertex acceleratorCount).")
@click.option("--task", default=None, help="Registered task name (`seqtrain tasks`).")
@click.option("--config", "config_file", default=None, help="Config YAML (local or gs://).")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Config override, repeatable.")
@click.option("--name", default=None, help="Job name; default seqtrain-<task>.")
@click.option("--namespace", default="default", show_default=True,
              help="Kubernetes namespace (tfjob, k8s, tpu).")
@click.option("--machine-type", default=None,
              help="Vertex machineType (default n1-standard-8); on Kubernetes a "
                   "node.kubernetes.io/instance-type nodeSelector.")
@click.option("--accelerator-type", default=None,
              help="Vertex acceleratorType (default NVIDIA_TESLA_T4); on GKE a "
                   "cloud.google.com/gke-accelerator nodeSelector (e.g. nvidia-l4).")
@click.option("--tpu-type", default=None,
              help="GKE TPU accelerator (default tpu-v5-lite-podslice).")
@click.option("--tpu-topology", default=None, help="GKE TPU topology (default 2x4).")
@click.option("--backoff-limit", type=click.IntRange(min=0), default=3, show_default=True,
              help="Retries of retryable exits: Job backoffLimit(PerIndex), TFJob "
                   "runPolicy.backoffLimit.")
@click.option("--evaluator", is_flag=True,
              help="Add a process running `seqtrain evaluate --watch` (TFJob Evaluator, a "
                   "separate Job on k8s/tpu, worker pool 3 on Vertex); the trainer then skips "
                   "in-loop evaluation (train.eval_in_loop=false).")
@click.option("--tune", multiple=True, metavar="KEY=v1,v2|KEY=min:max[:log]",
              help="Tune a config key (repeatable): renders a Vertex HyperparameterTuningJob "
                   "(vertex) or a Katib Experiment (tfjob).")
@click.option("--metric", default=None,
              help="Eval metric to optimize; default: the task's headline metric.")
@click.option("--goal", type=click.Choice(("max", "min")), default=None,
              help="Whether a higher or lower --metric is better; default: the task's.")
@click.option("--trials", type=click.IntRange(min=1), default=10, show_default=True,
              help="Tuning trials in total.")
@click.option("--parallel", type=click.IntRange(min=1), default=2, show_default=True,
              help="Tuning trials at a time.")
@click.option("--out", default=None, help="Write the spec to this file instead of stdout.")
def render(out: str | None, **flags) -> None:
    """Print a ready-to-submit job spec for a validated config."""
    flags["overrides"] = tuple(flags["overrides"])
    flags["tune"] = tuple(flags["tune"])
    try:
        text = render_lib.render(render_lib.JobRequest(**flags))
        if out:
            from trainer import storage  # imports TensorFlow; only needed here

            _check_out(out, storage)
            storage.write_text(out, text)
            click.echo(f"wrote {out}", err=True)
        else:
            click.echo(text, nl=False)
    except UserError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(EXIT_USER_ERROR)


def _check_out(out: str, storage) -> None:
    """--out names a file that is not one of a run's own (a spec over config.yaml breaks
    the run); re-rendering over an earlier spec is fine."""
    from trainer import run_dir

    if storage.isdir(out):
        raise UserError(f"--out {out} is a directory; name a file in it, for example "
                        f"{out.rstrip('/')}/job.yaml.")
    parent = posixpath.dirname(out) or "."
    if (posixpath.basename(out) in (run_dir.CONFIG, run_dir.RUNTIME, run_dir.METRICS,
                                    run_dir.LEASE)
            and storage.exists(posixpath.join(parent, run_dir.CONFIG))
            and storage.isdir(posixpath.join(parent, run_dir.CHECKPOINTS))):
        raise UserError(f"--out {out} is a file of the run in {parent}; the spec would replace "
                        "it and break the run. Write the spec elsewhere, for example "
                        "--out job.yaml.")


if __name__ == "__main__":
    job()
