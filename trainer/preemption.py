"""The one owner of SIGTERM and SIGINT: stop at the next step, save, exit retryably.

Python runs a signal handler only between bytecodes, so while one compiled
multi-step `tf.function` call runs, a handler would wait for the whole call
(tens of seconds with long loops). Instead the C-level wakeup fd
(`signal.set_wakeup_fd`) wakes a watcher thread the moment a signal lands. The
thread sets `stop`, a variable the compiled loop reads at every step (and sums
across all workers with the loss, so every worker stops at the same step),
prints what happens next, and arms a watchdog: if the checkpoint is not saved
within `grace_secs`, the process says so and exits with the same code before
the node's SIGKILL lands.

Others that must act before a forced exit (the log sync's final upload)
register with `on_forced_exit` instead of installing handlers of their own.

Exit codes: SIGTERM 143 (retryable), SIGINT 130 (Ctrl-C; a second Ctrl-C exits
at once).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

import tensorflow as tf

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_WATCHDOG_MARGIN_SECS = 0.5  # exit this much before the grace ends, before the SIGKILL


def exit_code(signum: int) -> int:
    return 128 + signum


class StopSignal:
    """Turns SIGTERM / SIGINT into a stop request the compiled training loop sees.

    Create it outside any strategy scope (a plain variable, one per process);
    `install()` from the main thread, `uninstall()` when training ends.

    Attributes:
      variable: int32 variable, 1 once a stop was requested; read inside the loop.
      signum: the first signal received, or None.
    """

    def __init__(self, grace_secs: float):
        self.grace = float(grace_secs)
        self.variable = tf.Variable(0, dtype=tf.int32, trainable=False, name="stop_requested")
        self.signum: int | None = None
        self.last_checkpoint: str | None = None  # named by the watchdog's message
        self._saved = threading.Event()
        self._callbacks: list = []
        self._previous: dict = {}
        self._pipe: tuple[int, int] | None = None
        self._old_wakeup_fd: int | None = None
        self._thread: threading.Thread | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def on_forced_exit(self, callback) -> None:
        """Registers `callback()` to run (bounded by the grace) before a watchdog exit."""
        self._callbacks.append(callback)

    def saved(self) -> None:
        """The loop saved its stop checkpoint: the watchdog now only bounds the teardown."""
        self._saved.set()

    # ------------------------------------------------------------ lifecycle
    def install(self) -> "StopSignal":
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set from the main thread
        r, w = os.pipe()
        os.set_blocking(w, False)
        self._pipe = (r, w)
        self._old_wakeup_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        for s in SIGNALS:
            self._previous[s] = signal.signal(s, self._python_handler)
        self._thread = threading.Thread(target=self._watch, name="seqtrain-signals", daemon=True)
        self._thread.start()
        return self

    def uninstall(self) -> None:
        if self._pipe is None:
            return
        for s, previous in self._previous.items():
            signal.signal(s, previous if previous is not None else signal.SIG_DFL)
        signal.set_wakeup_fd(self._old_wakeup_fd if self._old_wakeup_fd is not None else -1)
        r, w = self._pipe
        self._pipe = None
        os.close(w)  # the watcher's read returns b"" and it ends
        if self._thread is not None:
            self._thread.join(timeout=5)
        os.close(r)

    def __enter__(self) -> "StopSignal":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.uninstall()

    # ------------------------------------------------------------ internals
    def _python_handler(self, signum, frame) -> None:
        """Runs later, between bytecodes; the watcher thread has already acted."""

    def _watch(self) -> None:
        r = self._pipe[0]
        while True:
            try:
                data = os.read(r, 64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum in SIGNALS:
                    self._on_signal(signum)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            if signum == signal.SIGINT:
                _say(f"seqtrain: second {name}: exiting now without a checkpoint "
                     f"(exit {exit_code(signum)}).")
                os._exit(exit_code(signum))
            return
        self.signum = signum
        self.variable.assign(1)
        _say(f"seqtrain: {name} received: stopping after the current step and saving a "
             f"checkpoint (within runtime.preemption_grace_secs={self.grace:g} s), then exiting "
             f"with {exit_code(signum)} so the job can resume.")
        threading.Thread(target=self._watchdog, args=(signum,), name="seqtrain-watchdog",
                         daemon=True).start()

    def _watchdog(self, signum: int) -> None:
        deadline = time.monotonic() + max(0.1, self.grace - _WATCHDOG_MARGIN_SECS)
        reserve = 0.5 * len(self._callbacks)  # time left for the callbacks
        if not self._saved.wait(max(0.0, deadline - time.monotonic() - reserve)):
            _say(f"seqtrain: could not stop and save within runtime.preemption_grace_secs="
                 f"{self.grace:g} s (a step or the save took longer); exiting with "
                 f"{exit_code(signum)} now. The job resumes from "
                 f"{self.last_checkpoint or 'its last saved checkpoint'}; give the job a longer "
                 "termination grace period and raise runtime.preemption_grace_secs to match.")
            for callback in self._callbacks:
                runner = threading.Thread(target=callback, daemon=True)
                runner.start()
                runner.join(max(0.0, deadline - time.monotonic()))
            os._exit(exit_code(signum))
        # Saved: the process is on its way out. If tearing down (closing writers,
        # the final log upload, interpreter exit) would overrun the grace, leave
        # now with the same code rather than be SIGKILLed by the node.
        time.sleep(max(0.0, deadline - time.monotonic()))
        _say(f"seqtrain: checkpoint saved; exiting with {exit_code(signum)} at the end of "
             f"the {self.grace:g} s grace period.")
        os._exit(exit_code(signum))


def _say(text: str) -> None:
    try:
        sys.stdout.flush()
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - never let reporting stop the exit
        pass
