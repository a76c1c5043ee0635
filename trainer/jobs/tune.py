"""Tuning sweeps and side-car evaluators around the specs of trainer/jobs/render.py.

`seqtrain job render --tune KEY=v1,v2 | KEY=min:max[:log] --metric M --goal max|min
--trials N --parallel P` wraps the training job:

* vertex: a HyperparameterTuningJob whose trialJobSpec is the CustomJob spec.
  Vertex appends `--KEY=VALUE` to each trial's args (the parameter id is the
  config key); `seqtrain train` reads those as `--set KEY=VALUE`. Each trial
  gets its own AIP_MODEL_DIR under baseOutputDirectory.
* tfjob: a Katib Experiment whose trialTemplate is the TFJob; each trial runs
  `train ... --model-dir DIR/<trial name> --set KEY=${trialParameters.X}`.

Both report the metric through trainer/tuning.py (hypertune file on Vertex,
`name=value` stdout lines for Katib's StdOut collector).

`--evaluator` adds a process that runs `seqtrain evaluate --watch` on the run's
checkpoints (TFJob Evaluator replica, a separate Job on plain Kubernetes, worker
pool 3 on Vertex) and renders the trainer's config with `train.eval_in_loop=false`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing

from trainer import experiment
from trainer.errors import ConfigError, UserError

GOALS = ("max", "min")
EVAL_IN_LOOP_OFF = "train.eval_in_loop=false"
TRIAL_DIR_PARAM = "trialName"
KATIB_METRIC_ENV = "SEQTRAIN_TUNE_METRIC"  # trainer/tuning.py prints name=value lines when set


@dataclasses.dataclass(frozen=True)
class Param:
    """One tuned config key: a list of values, or a range (ints or floats, maybe log)."""

    key: str
    kind: str  # "int" | "float" | "str" | "bool"
    values: tuple = ()  # list form
    low: float | None = None  # range form
    high: float | None = None
    log: bool = False

    @property
    def is_range(self) -> bool:
        return self.low is not None


def parse_tune(items: tuple[str, ...], task: str | None, config_file: str | None,
               overrides: tuple[str, ...]) -> list[Param]:
    """Parses `--tune` flags and checks every value against the config schema.

    Raises:
      UserError: malformed flag, unknown key, a value the config refuses.
    """
    params, seen = [], set()
    for item in items:
        key, sep, spec = item.partition("=")
        key = key.strip()
        if not sep or not key or not spec.strip():
            raise UserError(
                f"--tune {item!r} is not KEY=v1,v2,... or KEY=min:max[:log] (for example "
                "--tune train.learning_rate=1e-4:1e-2:log or --tune model.cell=lstm,gru).")
        if key in seen:
            raise UserError(f"--tune names {key!r} twice; give each key once.")
        seen.add(key)
        kind = _kind(key, task, config_file, overrides, item)
        param = _parse_spec(item, key, kind, spec.strip())
        for value in ([param.low, param.high] if param.is_range else param.values):
            _check_value(param, value, task, config_file, overrides, item)
        params.append(param)
    return params


def set_item(key: str, value) -> str:
    """`key=value` for `--set`, written so the config loader reads the same value back."""
    if isinstance(value, bool):
        return f"{key}={'true' if value else 'false'}"
    return f"{key}={value}"


# ----------------------------------------------------------------------------
# Vertex: HyperparameterTuningJob
# ----------------------------------------------------------------------------


def vertex_tuning_job(name: str, custom_job_spec: dict, params: list[Param], metric: str,
                      goal: str, trials: int, parallel: int) -> dict:
    """The HyperparameterTuningJob resource (REST body) around a CustomJobSpec."""
    return {
        "displayName": name,
        "studySpec": {
            "metrics": [{"metricId": metric, "goal": "MAXIMIZE" if goal == "max" else "MINIMIZE"}],
            "parameters": [_vertex_param(p) for p in params],
        },
        "maxTrialCount": trials,
        "parallelTrialCount": parallel,
        "trialJobSpec": custom_job_spec,
    }


def _vertex_param(p: Param) -> dict:
    if p.is_range and p.kind == "int":
        out = {"parameterId": p.key,
               "integerValueSpec": {"minValue": int(p.low), "maxValue": int(p.high)}}
    elif p.is_range:
        out = {"parameterId": p.key, "doubleValueSpec": {"minValue": p.low, "maxValue": p.high}}
    elif p.kind == "float":
        return {"parameterId": p.key, "discreteValueSpec": {"values": list(p.values)}}
    else:
        # Integers as categories: a discrete spec would pass `--model.units=64.0`, which an
        # int key refuses; a category passes the text as written.
        return {"parameterId": p.key,
                "categoricalValueSpec": {"values": [_text(v) for v in p.values]}}
    out["scaleType"] = "UNIT_LOG_SCALE" if p.log else "UNIT_LINEAR_SCALE"
    return out


# ----------------------------------------------------------------------------
# Katib: Experiment wrapping the TFJob
# ----------------------------------------------------------------------------


def katib_experiment(name: str, namespace: str, tfjob: dict, params: list[Param], metric: str,
                     goal: str, trials: int, parallel: int, model_dir: str) -> dict:
    """A Katib v1beta1 Experiment whose trials are copies of `tfjob` with `--set` overrides."""
    trial_job = {"apiVersion": tfjob["apiVersion"], "kind": tfjob["kind"],
                 "spec": _trial_spec(tfjob["spec"], params, model_dir, metric)}
    trial_params = [{"name": TRIAL_DIR_PARAM, "description": "Katib's trial name (run dir)",
                     "reference": "${trialSpec.Name}"}]
    trial_params += [{"name": _katib_name(p.key), "description": f"config key {p.key}",
                      "reference": _katib_name(p.key)} for p in params]
    return {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/name": "seqtrain",
                                "app.kubernetes.io/instance": name}},
        "spec": {
            "objective": {"type": "maximize" if goal == "max" else "minimize",
                          "objectiveMetricName": metric},
            "algorithm": {"algorithmName": "random"},
            "maxTrialCount": trials,
            "parallelTrialCount": parallel,
            "maxFailedTrialCount": max(1, trials // 4),
            "metricsCollectorSpec": {"collector": {"kind": "StdOut"}},
            "parameters": [_katib_param(p) for p in params],
            "trialTemplate": {
                "primaryContainerName": "tensorflow",
                # The chief evaluates and prints the metric (the label Katib's TFJob example uses).
                "primaryPodLabels": {"training.kubeflow.org/job-role": "master"},
                "successCondition": 'status.conditions.#(type=="Succeeded")#|#(status=="True")#',
                "failureCondition": 'status.conditions.#(type=="Failed")#|#(status=="True")#',
                "trialParameters": trial_params,
                "trialSpec": trial_job,
            },
        },
    }


def _trial_spec(spec: dict, params: list[Param], model_dir: str, metric: str) -> dict:
    import copy

    spec = copy.deepcopy(spec)
    for replica in spec["tfReplicaSpecs"].values():
        container = replica["template"]["spec"]["containers"][0]
        args = list(container["args"])
        i = args.index("--model-dir")
        args[i + 1] = f"{model_dir.rstrip('/')}/${{trialParameters.{TRIAL_DIR_PARAM}}}"
        for p in params:
            args += ["--set", f"{p.key}=${{trialParameters.{_katib_name(p.key)}}}"]
        # Katib's StdOut collector wraps the container's command, so name it explicitly.
        container["command"] = ["seqtrain"]
        container["args"] = args
        container.setdefault("env", []).append({"name": KATIB_METRIC_ENV, "value": metric})
    return spec


def _katib_param(p: Param) -> dict:
    if p.is_range:
        low, high = (int(p.low), int(p.high)) if p.kind == "int" else (p.low, p.high)
        space = {"min": _text(low), "max": _text(high)}
        if p.log:
            space["distribution"] = "logUniform"
        return {"name": _katib_name(p.key), "parameterType": "int" if p.kind == "int" else "double",
                "feasibleSpace": space}
    kind = "discrete" if p.kind in ("int", "float") else "categorical"
    return {"name": _katib_name(p.key), "parameterType": kind,
            "feasibleSpace": {"list": [_text(v) for v in p.values]}}


def _katib_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", key)


# ----------------------------------------------------------------------------
# Parsing and checks
# ----------------------------------------------------------------------------


def _kind(key: str, task, config_file, overrides, item: str) -> str:
    cfg = experiment.load(task, config_file, overrides)
    section, _, name = key.partition(".")
    obj = getattr(cfg, section, None) if section in ("data", "model", "train", "runtime") else None
    fields = {f.name: f for f in dataclasses.fields(obj)} if obj is not None else {}
    if name not in fields:
        valid = ", ".join(f"{section}.{f}" for f in fields) if fields else \
            "data.*, model.*, train.*, runtime.*"
        raise UserError(f"--tune {item!r}: {key!r} is not a config key. Valid keys: {valid}.")
    tp = typing.get_type_hints(type(obj))[name]
    for kind, py in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if tp is py or py in typing.get_args(tp):
            return kind
    if typing.get_origin(tp) is typing.Literal:
        return "str"
    raise UserError(f"--tune {item!r}: {key!r} holds a list or section; tune a single value.")


def _parse_spec(item: str, key: str, kind: str, spec: str) -> Param:
    import yaml

    if ":" in spec and "," not in spec:
        parts = spec.split(":")
        if kind not in ("int", "float") or len(parts) not in (2, 3) or (
                len(parts) == 3 and parts[2] != "log"):
            raise UserError(
                f"--tune {item!r}: a range is min:max or min:max:log on a number key; "
                f"{key} holds {kind} values, so list them instead: {key}=a,b,c.")
        try:
            low, high = (float(p) for p in parts[:2])
        except ValueError:
            raise UserError(f"--tune {item!r}: min and max must be numbers.") from None
        if kind == "int" and not (low.is_integer() and high.is_integer()):
            raise UserError(f"--tune {item!r}: {key} is an integer key; use whole numbers.")
        log = len(parts) == 3
        if not (math.isfinite(low) and math.isfinite(high) and low < high) or (log and low <= 0):
            raise UserError(f"--tune {item!r}: need min < max (and min > 0 with :log).")
        return Param(key, kind, low=low, high=high, log=log)
    values = tuple(yaml.safe_load(v) if v.strip() else "" for v in spec.split(","))
    if len(values) < 2 or len(set(map(repr, values))) != len(values):
        raise UserError(f"--tune {item!r}: list at least two different values.")
    if kind == "float":
        values = tuple(float(v) if isinstance(v, (int, float)) and not isinstance(v, bool)
                       else v for v in values)
    return Param(key, kind, values=values)


def _check_value(param: Param, value, task, config_file, overrides, item: str) -> None:
    if param.kind == "int" and isinstance(value, float):
        value = int(value)
    try:
        experiment.load(task, config_file, tuple(overrides) + (set_item(param.key, value),))
    except ConfigError as e:
        raise UserError(f"--tune {item!r}: value {value!r} is refused: {e}") from None


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return repr(value)
    return str(value)
