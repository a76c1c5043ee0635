"""`train`'s implicit preparation (`data.prepare=auto`): prepare once, then read in place.

When a task can be prepared (its spec names a `prepare` function) and the run sets no
`data.prepared_dir`, a training start prepares the data into the model dir, under
`data/<content key prefix>/` (trainer/run_dir.py names it), and the task then reads
it as if `data.prepared_dir` pointed there. The directory is named by the content key
(the sources' SHA-256 and the content-defining data config), so:

* a restart or resume with the same sources hashes them, finds the directory, verifies
  its shards and reuses it: nothing is written;
* a changed source (or content-defining key) makes another key: it is prepared into
  a new directory beside the old one, exactly as the in-memory path would read the
  changed source (and a resume whose vocabulary then differs is refused by the run
  dir's asset check, which rolls the new directory back).

Where it runs: on every worker, before the task is built (after the writer lease is
taken, in `train`). Only the chief writes into the model dir; every other worker
prepares into its own local cache (`data.cache_dir`/prepared-work/<key>/), reused by
later starts on that machine. Why not have the others wait for the chief's copy: a
worker cannot know which directory to wait for without hashing the sources itself
(the key names it), a wait needs a timeout that a long preparation can exceed, and a
gs:// model dir would then be copied back down to every worker anyway. Preparing is
deterministic, so every worker's copy holds the same bytes (the content key proves
it); this is what the in-memory path costs each worker today, once per machine.

Evaluation (`seqtrain evaluate`, `data inspect`) never prepares: it reads the
directory the run's runtime.json records, or the source when there is none.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Callable

from trainer import registry, storage
from trainer.data.prepared import KEY_PLACEHOLDER, MANIFEST, NothingToPrepare

SHARD_MB = 256  # as `seqtrain prepare --shard-mb`'s default
PROGRESS_MB = 64


def wanted(config) -> bool:
    """Whether a training start of `config` prepares implicitly."""
    d = config.data
    return (bool(registry.spec(config.task.name).prepare) and not getattr(d, "prepared_dir", "")
            and getattr(d, "prepare", "auto") == "auto")


def prepare(config, data_root: str, *, is_chief: bool,
            log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)
            ) -> dict | None:
    """Prepares (or finds and verifies) the run's data; None when not `wanted`.

    Args:
      data_root: the model dir's data dir (the chief's destination).
      is_chief: the chief writes under `data_root`; other workers into their local cache.
      log: receives the progress lines of a long preparation.

    Returns:
      The preparation's summary (content_key, out, reused, manifest, ...), or None for
      data generated at every run (the synthetic series).

    Raises:
      UserError / DataError: a bad source, raised before anything is written.
    """
    if not wanted(config):
        return None
    d = config.data
    if is_chief:
        out = storage.join(data_root, KEY_PLACEHOLDER)
    else:
        from trainer.data.chars import default_cache_dir

        # data.cache_dir where the task has one (character corpora), else the default.
        cache = getattr(d, "cache_dir", "") or default_cache_dir()
        out = os.path.join(cache, "prepared-work", KEY_PLACEHOLDER)
    try:
        return registry.spec(config.task.name).load_prepare()(
            d, out, shard_mb=SHARD_MB, log=log, progress_mb=PROGRESS_MB,
            seed=config.runtime.seed)
    except NothingToPrepare:  # data generated at every run (the synthetic series)
        return None


def recorded(config, runtime: dict, resolve: Callable[[str], str]) -> str | None:
    """For evaluation: the prepared dir a training start recorded in runtime.json, if
    this config would prepare implicitly and the directory is still there."""
    record = runtime.get("prepared") or {}
    if not wanted(config) or not record.get("dir"):
        return None
    path = resolve(record["dir"])
    return path if storage.exists(storage.join(path, MANIFEST)) else None


def with_prepared_dir(config, prepared_dir: str | None):
    """`config` whose data section reads `prepared_dir` (the task's view of the run;
    config.yaml keeps the user's config, with data.prepared_dir empty)."""
    if not prepared_dir:
        return config
    return dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                prepared_dir=prepared_dir))


def summary(result: dict, shown: str) -> str:
    """One line for the training log."""
    key = result["content_key"][:16]
    if result["reused"]:
        return f"prepared data: reused {shown} (content key {key}..., verified)"
    mb = result["source_bytes"] / 2**20
    return (f"prepared data: {mb:.2f} MB of source into {shown} (content key {key}...) in "
            f"{result['seconds']:.2f} s; later starts reuse it")
