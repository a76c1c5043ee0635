"""`runtime.profile_steps=A,B`: a TensorFlow profiler trace of steps A..B.

The outer training loop asks a `ProfileWindow` where to split its compiled
multi-step loops (after step A-1 and after step B, on every worker, so all
workers run the same loops), starts the profiler before step A and stops it
after step B. Only the chief traces. The trace goes to the train/ TensorBoard
dir, where TensorBoard's Profile tab (the `profile` extra) looks for it:

    LOG_ROOT/train/plugins/profile/<YYYY_MM_DD_HH_MM_SS>/<host>.xplane.pb

With `runtime.log_sync=local_then_sync` the trace is written to the local log
dir and uploaded with the event files; with `direct` it is written straight to
the log dir, local or gs://.
"""

from __future__ import annotations

import contextlib
import logging

import tensorflow as tf

from trainer import storage

log = logging.getLogger(__name__)

NO_EDGE = 1 << 62  # "no window edge ahead": never the smallest loop length


class ProfileWindow:
    """Where a run's profile window starts and ends, and the profiler session in it.

    Runs on the host, in the outer loop, between compiled loops.
    """

    def __init__(self, steps: tuple[int, ...], *, write_root: str | None, shown_root: str | None,
                 start_step: int, say, record=None):
        """
        Args:
          steps: `runtime.profile_steps`, `(A, B)` or `()` for off.
          write_root: the log root the summary writers write to (a local dir under
            log sync); None on non-chief workers, which split their loops alike but
            never trace.
          shown_root: the run's log root as the user knows it (where log sync uploads).
          start_step: the global step the run starts (or resumes) at.
          say: prints one line (the chief's printer).
          record: `record(steps, session_dir)` notes a finished trace (runtime.json).
        """
        self.first, self.last = steps if steps else (0, 0)
        self.enabled = bool(steps)
        self._write_dir = storage.join(write_root, "train") if write_root else None
        self._shown_root = shown_root or write_root or ""
        self._synced = bool(write_root and shown_root and write_root != shown_root)
        self._say = say
        self._record = record
        self._active_from: int | None = None  # first step of the running trace
        self._before: set[str] = set()
        if self.enabled and start_step >= self.last:
            say(f"runtime.profile_steps={self.first},{self.last}: this run is at step "
                f"{start_step}, past the window; nothing is profiled")

    def to_edge(self, step: int) -> int:
        """Steps from `step` to the next window edge (after step A-1, after step B)."""
        if not self.enabled:
            return NO_EDGE
        ahead = [edge - step for edge in (self.first - 1, self.last) if edge > step]
        return min(ahead) if ahead else NO_EDGE

    @contextlib.contextmanager
    def loop(self, step: int, n: int):
        """Around one compiled loop of `n` steps after `step`: starts the trace when the
        loop is inside the window, and marks the loop as one `train` event of the trace
        (its `step_num` is the loop's last step), as Keras marks its train steps."""
        self._start(step)
        if self._active_from is None:
            yield
            return
        with tf.profiler.experimental.Trace("train", step_num=step + n, _r=1):
            yield

    def _start(self, step: int) -> None:
        """Starts the trace when the next step is inside the window (step A, or a resume
        inside the window)."""
        if (self._write_dir is None or self._active_from is not None
                or not self.first - 1 <= step < self.last):
            return
        self._before = set(_sessions(self._write_dir))
        try:
            tf.profiler.experimental.start(self._write_dir)
        except tf.errors.AlreadyExistsError:  # someone else's session: ours would be partial
            log.warning("runtime.profile_steps: another profiler session is running; "
                        "steps %d..%d are not profiled", step + 1, self.last)
            self._write_dir = None
            return
        self._active_from = step + 1

    def after_steps(self, step: int) -> None:
        """Stops the trace once step B has run."""
        if self._active_from is not None and step >= self.last:
            self.stop(step)

    def stop(self, step: int) -> None:
        """Stops a running trace (also when the run ends or fails inside the window)."""
        if self._active_from is None:
            return
        first, self._active_from = self._active_from, None
        write_dir, self._write_dir = self._write_dir, None  # one trace per process
        try:
            tf.profiler.experimental.stop()  # writes the .xplane.pb
            new = sorted(set(_sessions(write_dir)) - self._before)
        except Exception as e:  # noqa: BLE001 - a lost trace must not fail the training run
            log.warning("runtime.profile_steps: writing the trace of steps %d..%d to %s failed "
                        "(%s: %s); training goes on", first, step, write_dir, type(e).__name__,
                        str(e).splitlines()[0] if str(e) else "")
            return
        session = new[-1] if new else ""
        where = storage.join(self._shown_root, "train", "plugins", "profile", session)
        if step < first:
            self._say(f"profiler: stopped before step {first} ran; the trace in {where} "
                      "holds no training step")
            return
        synced = " (uploaded with the logs)" if self._synced else ""
        self._say(f"profiler: steps {first}..{step} traced into {where}{synced}; view it with "
                  f"`tensorboard --logdir {self._shown_root}`, Profile tab (pip install "
                  "'seqtrain[profile]')")
        if self._record is not None:
            self._record([first, step], where)


def _sessions(train_dir: str) -> list[str]:
    profile_dir = storage.join(train_dir, "plugins", "profile")
    if not tf.io.gfile.isdir(profile_dir):
        return []
    return [name.rstrip("/") for name in tf.io.gfile.listdir(profile_dir)]
