"""`seqtrain launch`: N local worker processes, each with its own TF_CONFIG.

Used to run MultiWorkerMirroredStrategy on one machine (and by the tests).
Each output line is prefixed with its worker. If any worker fails, the others
are stopped (SIGTERM, then SIGKILL after a grace period) instead of hanging in
a collective, and the failing worker's last lines are repeated at the end: the
cause, not the others' reports of a lost peer, is what the output ends with. Exit code: 144 (retryable) when the first failing worker died by
a signal or lost a peer, else that worker's own code (2 for a user error, 143
after a forwarded SIGTERM).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from trainer.errors import EXIT_PREEMPTED, EXIT_WORKER_LOST, UserError


TAIL_LINES = 8  # of the failing worker, repeated at the end


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tf_configs(n: int, ports: list[int]) -> list[dict]:
    workers = [f"localhost:{p}" for p in ports]
    return [{"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
            for i in range(n)]


def run_local(args: list[str], workers: int, *, grace: float = 10.0, stream=None,
              program: list[str] | None = None) -> int:
    """Runs `seqtrain ARGS` in `workers` processes; returns the exit code.

    `program` replaces `python -m trainer.cli` (for launching other binaries).
    """
    program = program or [sys.executable, "-m", "trainer.cli"]
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}.")
    if args and args[0] == "--":
        args = args[1:]
    stream = stream or sys.stdout
    lock = threading.Lock()
    procs: list[subprocess.Popen] = []
    for i, tf_config in enumerate(tf_configs(workers, free_ports(workers))):
        env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), PYTHONUNBUFFERED="1")
        procs.append(subprocess.Popen(
            [*program, *args], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True))
    tails = [collections.deque(maxlen=TAIL_LINES) for _ in procs]
    pumps = [threading.Thread(target=_pump, args=(p, f"[worker-{i}] ", stream, lock, tail),
                              daemon=True)
             for i, (p, tail) in enumerate(zip(procs, tails))]
    for t in pumps:
        t.start()

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        failed, code = _wait(procs, grace, stream, lock)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for t in pumps:
            t.join(timeout=5)
    # A preempted worker (143, everything saved) is no failure to explain.
    if failed is not None and tails[failed] and procs[failed].returncode != EXIT_PREEMPTED:
        print(f"[launch] worker-{failed} failed first (exit code {procs[failed].returncode}); "
              "its last lines:", file=stream)
        stream.writelines(f"[launch]   {line}" for line in tails[failed])
        stream.flush()
    return code


def _wait(procs, grace: float, stream, lock) -> tuple[int | None, int]:
    """(the first failing worker or None, the exit code)."""
    while True:
        codes = [p.poll() for p in procs]
        failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            i, code = failed[0]
            with lock:
                print(f"[launch] worker-{i} exited with code {code}; stopping the others",
                      file=stream, flush=True)
            _stop(procs, grace)
            # A worker killed by a signal (kill -9, OOM killer) is a lost peer:
            # restarting the whole job resumes from the last checkpoint.
            return i, EXIT_WORKER_LOST if code < 0 else code
        if all(c == 0 for c in codes):
            return None, 0
        time.sleep(0.2)


def _stop(procs, grace: float) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _pump(proc, prefix: str, stream, lock, tail: collections.deque) -> None:
    for line in proc.stdout:
        tail.append(line)
        with lock:
            stream.write(prefix + line)
            stream.flush()
