"""An opt-in record of what each training input pipeline materialised (for evidence and tests).

With `SEQTRAIN_INPUT_LOG=DIR` in the environment, every training input pipeline
(loop.TrainInput, one per worker) appends one JSON line per replica batch it
gathers to `DIR/input-pipeline<P>-pid<PID>.jsonl`:

    {"step": s, "replica": r, "rows": n, "ids": [...]}

`rows` is the leading size of the features the task's `gather` returned, so the
file counts the examples the real pipeline built, not the ids it meant to. The
pipeline prefetches, so a worker records a few steps past the last one trained.
Unset (the default), nothing is recorded and the pipeline has no extra op.
"""

from __future__ import annotations

import json
import os
import threading

ENV = "SEQTRAIN_INPUT_LOG"


def recorder(pipeline_id: int):
    """The host function the pipeline calls per replica batch, or None when not enabled."""
    root = os.environ.get(ENV)
    if not root:
        return None
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, f"input-pipeline{pipeline_id}-pid{os.getpid()}.jsonl")
    lock = threading.Lock()  # the map runs its calls in parallel

    def record(step, replica, ids, rows):
        line = json.dumps({"step": int(step), "replica": int(replica), "rows": int(rows),
                           "ids": [int(i) for i in ids]})
        with lock, open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        return rows

    return record
