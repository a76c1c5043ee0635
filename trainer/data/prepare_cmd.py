"""`seqtrain prepare`: write a task's data as a prepared dataset, and say what was done.

The click command is in trainer/cli.py. The task's spec names its preparation
function (`TaskSpec.prepare`); for local sources nothing here imports TensorFlow, so
preparing takes the memory of the data, not of a TensorFlow process.
"""

from __future__ import annotations

import os
from typing import Callable

from trainer import experiment, registry
from trainer.errors import UserError


def run(task: str | None, config_file: str | None, overrides, out: str, *, shard_mb: float,
        progress_mb: float = 64,
        log: Callable[[str], None]) -> list[str]:
    """Prepares the data of the config (defaults <- --config <- --set) into `out`.

    `log` receives progress lines; the returned lines summarise the result.

    Raises:
      UserError: an unknown or unpreparable task, a bad config or source, or `out`
        holding another dataset.
    """
    cfg = experiment.load(task, config_file, overrides)
    name = cfg.task.name
    spec = registry.spec(name)
    if not spec.prepare:
        able = [n for n in registry.names() if registry.spec(n).prepare]
        raise UserError(f"--task {name}: seqtrain prepare does not support this task yet (it "
                        f"reads its source at every run). Tasks it supports: {', '.join(able)}.")
    if cfg.data.prepared_dir:
        raise UserError(f"data.prepared_dir={cfg.data.prepared_dir!r} is set: that is where a "
                        "run reads a prepared dataset, not what seqtrain prepare reads. Drop "
                        "it here (the output is --out).")
    result = spec.load_prepare()(cfg.data, out, shard_mb=shard_mb, log=log,
                                 progress_mb=progress_mb, seed=cfg.runtime.seed)
    return summary_lines(name, result)


def summary_lines(task: str, r: dict) -> list[str]:
    m = r["manifest"]
    where = r["out"] if "://" in r["out"] else os.path.abspath(r["out"])
    mb = r["source_bytes"] / 2**20
    files = r["sources"]
    origin = files[0]["path"] if len(files) == 1 else f"{len(files)} files ({files[0]['path']} ...)"
    splits = m["splits"]
    shards = sum(len(s["shards"]) for s in splits.values())
    if r["reused"]:
        head = (f"reused: {where} already holds this dataset (same content key), verified "
                f"{shards} shard(s); nothing was written")
    else:
        head = f"prepared {task} into {where}"
    return [head,
            f"  source      : {origin}, {mb:.2f} MB, {r['seconds']:.2f} s "
            f"({mb / max(r['seconds'], 1e-9):.1f} MB/s of source)",
            _counts_line(m, shards),
            f"  content key : {r['content_key']}",
            f"  train with  : --set data.prepared_dir={r['out']}"]


def _counts_line(m: dict, shards: int) -> str:
    """Tokens of a token stream (text_generation), else examples (rows) per split."""
    splits, stats = m["splits"], m.get("stats", {})
    if "train" in splits:
        return (f"  tokens      : train {splits['train']['tokens']}, eval "
                f"{splits['eval']['tokens']} ({m['dtype']}), {shards} shard(s); vocabulary "
                f"{stats.get('vocab_size', '?')} ids")
    rows = stats.get("rows", {})
    extra = (f"; vocabulary {stats['vocab_size']} ids" if "vocab_size" in stats else
             "; vocabularies " + ", ".join(f"{k} {v}" for k, v in stats["vocab_sizes"].items())
             + " ids" if "vocab_sizes" in stats else "")  # translation: source and target
    return (f"  rows        : train {rows.get('train')}, eval {rows.get('eval')}, "
            f"{len(splits)} arrays in {shards} shard(s){extra}")
