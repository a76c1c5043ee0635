"""The export metadata file: `export/assets.extra/seqtrain.json`, one format for every task.

`assets.extra/` is the SavedModel directory TF Serving leaves alone. The file holds

    {"format": 1, "task": NAME, "commands": [the seqtrain commands serving it],
     ...the task's own keys (Task.export_metadata: vocabulary, window, columns...)}

Exports written before this file existed kept their metadata under other names;
`read` still finds those.
"""

from __future__ import annotations

from trainer import storage
from trainer.errors import UserError

FILE = "assets.extra/seqtrain.json"
FORMAT = 1
# Older exports' metadata files, merged by `read` when FILE is absent.
_LEGACY = ("seqtrain_export.json", "assets.extra/translation.json",
           "assets.extra/normalization.json", "assets.extra.json")


def write(export_dir: str, task: str, commands: list[str], extra: dict) -> None:
    """Writes the metadata of the export in `export_dir`."""
    reserved = {"format", "task", "commands"} & set(extra)
    if reserved:
        raise ValueError(f"Task.export_metadata may not set {sorted(reserved)}: the framework "
                         "writes those keys")
    storage.makedirs(storage.join(export_dir, "assets.extra"))
    storage.write_json(storage.join(export_dir, FILE),
                       {"format": FORMAT, "task": task, "commands": commands, **extra})


def read(export_dir: str) -> dict:
    """The metadata of the export in `export_dir` (an older export's files merged).

    Raises:
      UserError: no metadata file, or one in a newer format.
    """
    path = storage.join(export_dir, FILE)
    if storage.exists(path):
        meta = storage.read_json(path)
        if meta.get("format", FORMAT) > FORMAT:
            raise UserError(f"{path!r} has metadata format {meta['format']}; this seqtrain reads "
                            f"format {FORMAT}. Upgrade seqtrain to serve this export.")
        return meta
    meta: dict = {}
    for name in _LEGACY:
        legacy = storage.join(export_dir, name)
        if storage.exists(legacy):
            meta.update(storage.read_json(legacy))
    if not meta:
        raise UserError(f"{export_dir!r} has no {FILE}: it was not written by `seqtrain train`. "
                        "Retrain the run to export it again.")
    return meta
