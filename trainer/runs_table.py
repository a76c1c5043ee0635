"""Terminal tables of runs for `seqtrain runs list` and `runs compare` (no TensorFlow).

The input is `trainer.gcs.list_runs`' records. Metric order: the task's headline
metric (trainer/registry.py `TaskSpec.headline_metric`) first, then the others by
name with numbers compared as numbers (`mse_h2` before `mse_h10`).
"""

from __future__ import annotations

import datetime
import re

from trainer.errors import UserError


def headline_metrics(run: dict, limit: int) -> str:
    """`name=value ...` of a run's first `limit` metrics in display order."""
    if run["error"] and not run["metrics"]:
        return f"({run['error']})"
    names = ordered_metrics(run["metrics"], _spec_of(run["task"]))[:limit]
    text = " ".join(f"{k}={_num(run['metrics'][k])}" for k in names) or "-"
    if run["metrics"] and run["metrics_step"] is not None and run["metrics_step"] != run["step"]:
        text += f" @{run['metrics_step']}"
    return text


def ordered_metrics(metrics: dict, spec=None) -> list[str]:
    """Metric names: the headline first, then natural order (h1, h2, ..., h10)."""
    head = spec.headline_metric if spec is not None else ""
    return sorted(metrics, key=lambda k: (k != head, natural_key(k)))


def natural_key(name: str) -> tuple:
    """Sort key comparing digit runs as numbers: mse_h2 < mse_h10."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def compare_table(found: list[dict], metric: str | None = None,
                  now: datetime.datetime | None = None) -> str:
    """RUN, TASK, the config keys that differ between runs, BEST, STEP, AGE; best first.

    BEST is metrics.json's `best` record when it is for the ranked metric, else
    the metric's latest eval value; STEP is the step it was measured at.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    flats = [_full_config(run) for run in found]
    varying = _varying_keys(flats)
    hidden = varying[MAX_HPARAM_COLUMNS:]
    varying = varying[:MAX_HPARAM_COLUMNS]
    scored = [(run, *_best(run, metric)) for run in found]
    recorded = sorted({k for run in found for k in run["metrics"]}, key=natural_key)
    if metric and recorded and all(value is None for _, _, value, _, _ in scored):
        raise UserError(f"--metric {metric!r}: no run here records it. Their metrics are "
                        f"{', '.join(recorded)}; rank by one of those.")
    goals = {goal for _, _, _, _, goal in scored if goal}
    sign = -1 if goals == {"max"} else 1  # mixed directions: keep the listing order

    def rank(item):
        _, _, value, _, _ = item
        return (value is None, sign * value if value is not None and len(goals) == 1 else 0)

    rows = [("RUN", "TASK", *varying, "BEST", "STEP", "AGE")]
    flat_of = {id(run): flat for run, flat in zip(found, flats)}
    for run, name, value, step, _ in sorted(scored, key=rank):
        flat = flat_of[id(run)]
        rows.append((
            run["name"], run["task"] or "?",
            *(_short(flat.get(k, "-")) for k in varying),
            f"{name}={_num(value)}" if value is not None else "-",
            "-" if step is None else str(step),
            _age(now - run["updated"]),
        ))
    table = render(rows)
    if hidden:
        table += (f"\n({len(hidden)} more config keys differ: {', '.join(hidden[:5])}"
                  f"{', ...' if len(hidden) > 5 else ''}; see each run's config.yaml)")
    return table


def render(rows: list[tuple]) -> str:
    """Left-aligned columns two spaces apart, no trailing blanks."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


MAX_HPARAM_COLUMNS = 6
# Keys that differ between runs without being hyperparameters.
_NOT_HPARAMS = ("task.name",)
_SECTION_ORDER = {"train": 0, "model": 1, "data": 2, "runtime": 3}


def _varying_keys(flats: list[dict]) -> list[str]:
    """Config keys whose values differ between runs: train first, then model, data, runtime."""
    keys = {k for f in flats for k in f if k not in _NOT_HPARAMS}
    varying = [k for k in keys if len({repr(f.get(k)) for f in flats}) > 1]
    return sorted(varying, key=lambda k: (_SECTION_ORDER.get(k.split(".")[0], 9), k))


def _full_config(run: dict) -> dict:
    """The run's config.yaml, flattened, over its task's defaults (older runs lack newer keys)."""
    flat = {}
    spec = _spec_of(run["task"])
    if spec is not None:
        from trainer import experiment

        flat = _flatten(experiment.default_config(spec.name).to_dict())
    flat.update(_flatten(run["config"]))
    return flat


def _best(run: dict, metric: str | None):
    """(metric name, value, step, goal) of a run; value None when it has none."""
    spec = _spec_of(run["task"])
    name = metric or (spec.headline_metric if spec else "")
    goal = spec.headline_goal if spec and name == spec.headline_metric else None
    best = run.get("best") or {}
    if best.get("metric") == name and isinstance(best.get("value"), (int, float)):
        return name, best["value"], best.get("step"), goal
    value = run["metrics"].get(name)
    if not isinstance(value, (int, float)):
        return name, None, None, goal
    return name, value, run["metrics_step"], goal


def _spec_of(task: str | None):
    from trainer import registry
    from trainer.errors import ConfigError

    try:
        return registry.spec(task) if task else None
    except ConfigError:
        return None  # a run of a task this version does not know


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _short(value) -> str:
    text = _num(value) if isinstance(value, float) else str(value)
    return text if len(text) <= 24 else text[:21] + "..."


def _num(v) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def _age(delta: datetime.timedelta) -> str:
    secs = max(int(delta.total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"
