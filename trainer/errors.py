"""Errors a user can fix, and the process exit codes seqtrain uses.

Exit codes follow the convention of Kubeflow's `restartPolicy: ExitCode`:
1-127 are permanent failures (do not restart), 128-255 are retryable.
"""

EXIT_USER_ERROR = 2  # bad config, bad data, bad flags: restarting will not help
EXIT_PREEMPTED = 143  # 128 + SIGTERM: a checkpoint was saved, restart to resume
EXIT_WORKER_LOST = 144  # another worker died mid-step: restart all to resume


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name if it has none), cut to
    `limit` characters: how a cause is quoted inside a one-paragraph message."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:limit]


class UserError(Exception):
    """A mistake in config, flags, data or environment that the user can fix.

    The CLI prints the message (one paragraph, no traceback) and exits with
    `EXIT_USER_ERROR`. Messages name what was wrong, the value received and
    what would be accepted.
    """


class ConfigError(UserError):
    """An invalid configuration value, key or file."""


class DataError(UserError):
    """Missing, empty or malformed input data."""


class Preempted(Exception):
    """Raised after SIGTERM (or SIGINT) once the stop checkpoint is saved.

    `exit_code` is 128 + the signal number: 143 for SIGTERM (retryable), 130
    for SIGINT (Ctrl-C).
    """

    def __init__(self, step: int, signum: int = 15):
        name = {15: "SIGTERM", 2: "SIGINT"}.get(signum, f"signal {signum}")
        super().__init__(f"stopped by {name} at step {step}; checkpoint saved")
        self.step = step
        self.exit_code = 128 + signum


class WorkerLost(Exception):
    """Another worker of a multi-worker run died; the run must be restarted."""
