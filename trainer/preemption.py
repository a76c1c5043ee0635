"""SIGTERM handling: finish the current loop, checkpoint, exit with a retryable code."""

from __future__ import annotations

import os
import signal
import threading

import tensorflow as tf

from trainer.errors import EXIT_PREEMPTED


class PreemptionFlag:
    """SIGTERM sets a flag; the loop saves a checkpoint and exits retryably.

    A watchdog ends the process with the retryable code if saving takes longer
    than the grace period, so the node's own SIGKILL never lands first with a
    misleading exit status.
    """

    def __init__(self, grace_secs: int):
        self.grace = grace_secs
        self.flag = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.flag = True
        timer = threading.Timer(self.grace, lambda: os._exit(EXIT_PREEMPTED))
        timer.daemon = True
        timer.start()

    def agreed(self, strategy, workers: int) -> bool:
        """True on every worker once any worker was signalled (a collective if >1)."""
        if workers <= 1:
            return self.flag
        value = 1.0 if self.flag else 0.0
        per_replica = strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(value))
        return float(strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)) > 0

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
