"""Reports the tuned eval metric to hyperparameter-tuning services (no TensorFlow).

Two contracts, each active only when its service asks for it:

* Vertex AI hyperparameter tuning (the cloudml-hypertune contract): Vertex sets
  `CLOUD_ML_HP_METRIC_TAG` to the study's metric id; each report appends a JSON
  line `{"<tag>": "<value>", "global_step": "<step>", "timestamp": <secs>,
  "trial": "<CLOUD_ML_TRIAL_ID or 0>"}` to `CLOUD_ML_HP_METRIC_FILE` (default
  /tmp/hypertune/output.metrics), which is rewritten whole with the last 100
  entries, as the `hypertune` package does.
* Katib's StdOut metrics collector: the Experiment that `seqtrain job render
  --tune --platform tfjob` writes sets `SEQTRAIN_TUNE_METRIC`; each report then
  prints `<name>=<value>` on its own stdout line. (Katib's TensorFlowEvent
  collector can read the `eval/` TensorBoard events instead; nothing to do here.)

The training loop calls `report(metrics, step)` on the chief after each evaluation.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time

HYPERTUNE_TAG_ENV = "CLOUD_ML_HP_METRIC_TAG"
HYPERTUNE_FILE_ENV = "CLOUD_ML_HP_METRIC_FILE"
HYPERTUNE_DEFAULT_FILE = "/tmp/hypertune/output.metrics"
KATIB_METRIC_ENV = "SEQTRAIN_TUNE_METRIC"
_KEEP = 100  # entries kept in the hypertune file, as cloudml-hypertune does

_entries: collections.deque = collections.deque(maxlen=_KEEP)


def report(metrics: dict, step: int, environ=None) -> None:
    """Reports the metric(s) the tuning services asked for, if any, from one evaluation.

    Args:
      metrics: {name: value} of one evaluation.
      step: the training step it was measured at.
      environ: defaults to os.environ.

    Raises:
      UserError: a service asks for a metric this task does not compute (the
        message lists the ones it does), so a misnamed study fails at the first
        evaluation instead of after all its trials.
    """
    environ = os.environ if environ is None else environ
    for env in (HYPERTUNE_TAG_ENV, KATIB_METRIC_ENV):
        name = environ.get(env, "").strip()
        if not name:
            continue
        if name not in metrics:
            from trainer.errors import UserError

            raise UserError(
                f"{env}={name!r} asks to report eval metric {name!r}, but this run's "
                f"evaluation computes {', '.join(sorted(metrics)) or 'no metrics'}. Use one "
                "of those as the tuning metric (--metric in `seqtrain job render --tune`).")
        if env == HYPERTUNE_TAG_ENV:
            write_hypertune(name, metrics[name], step, environ)
        else:
            print_katib(name, metrics[name])


def report_metric(name: str, value: float, step: int, environ=None) -> None:
    """Reports one metric in both formats whose service is active (see the module doc)."""
    report({name: value}, step, environ)


def write_hypertune(tag: str, value: float, step: int, environ=None) -> str:
    """Appends one cloudml-hypertune entry; returns the metrics file's path."""
    environ = os.environ if environ is None else environ
    path = environ.get(HYPERTUNE_FILE_ENV) or HYPERTUNE_DEFAULT_FILE
    _entries.append({
        "timestamp": time.time(),
        "trial": str(environ.get("CLOUD_ML_TRIAL_ID", 0)),
        tag: str(float(value)),
        "global_step": str(int(step) if step else 0),
    })
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:  # a local file inside the trial's container, never gs://
        for entry in _entries:
            f.write(json.dumps(entry, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def print_katib(name: str, value: float) -> None:
    """One `name=value` line on stdout, the format of Katib's StdOut collector."""
    print(f"{name}={float(value)!r}", file=sys.stdout, flush=True)
