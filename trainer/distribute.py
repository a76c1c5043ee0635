"""The one place that turns runtime config + environment into a strategy.

`build_strategy` must run before any other TF op: splitting the CPU into
logical devices, GPU memory growth and multi-worker collectives can only be
configured before the TF runtime initializes.

`runtime.strategy=auto` chooses, in order:
  1. TPU when one is configured (`runtime.tpu` or `TPU_NAME`);
  2. MultiWorkerMirrored when the cluster (TF_CONFIG) has more than one worker;
  3. Mirrored when there is more than one GPU, or `runtime.cpu_replicas > 1`;
  4. otherwise the default strategy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import sys

import tensorflow as tf

from trainer.cluster import ClusterInfo
from trainer.config import RuntimeConfig
from trainer.errors import EXIT_WORKER_LOST, ConfigError, UserError, WorkerLost

log = logging.getLogger(__name__)


def build_strategy(runtime: RuntimeConfig, cluster: ClusterInfo) -> tf.distribute.Strategy:
    """Configures devices and returns the strategy named by `runtime.strategy`.

    Raises:
      UserError: the strategy cannot run here (no TPU, NCCL without GPUs, a
        multi-worker strategy without a cluster...).
    """
    gpus = tf.config.list_physical_devices("GPU")
    _configure_devices(runtime, gpus)
    name = resolve_name(runtime, cluster, num_gpus=len(gpus))
    if name == "tpu":
        return _tpu_strategy(runtime)
    if name == "multi_worker":
        return _multi_worker_strategy(runtime, cluster, num_gpus=len(gpus))
    if cluster.is_multi_worker:
        raise ConfigError(
            f"TF_CONFIG names {cluster.num_workers} workers but runtime.strategy={name!r} "
            "trains a single process. Use runtime.strategy=multi_worker (or auto)."
        )
    if name == "mirrored":
        return _mirrored_strategy(runtime, num_gpus=len(gpus))
    if name == "one_device":
        device = "/gpu:0" if gpus else "/cpu:0"
        return tf.distribute.OneDeviceStrategy(device)
    return tf.distribute.get_strategy()


def resolve_name(runtime: RuntimeConfig, cluster: ClusterInfo, num_gpus: int) -> str:
    """The concrete strategy name that `runtime.strategy` (maybe `auto`) means here."""
    if runtime.strategy != "auto":
        return runtime.strategy
    if runtime.tpu or os.environ.get("TPU_NAME"):
        return "tpu"
    if cluster.is_multi_worker:
        return "multi_worker"
    if num_gpus > 1 or runtime.cpu_replicas > 1:
        return "mirrored"
    return "default"


def check_batch_size(global_batch: int, strategy: tf.distribute.Strategy) -> int:
    """The per-replica batch size. Fails loudly when it does not divide."""
    replicas = strategy.num_replicas_in_sync
    if global_batch % replicas:
        lower = global_batch - global_batch % replicas
        raise ConfigError(
            f"train.batch_size={global_batch} (global) does not divide across "
            f"{replicas} replicas. Use a multiple of {replicas}, for example "
            f"--set train.batch_size={lower or replicas} or {lower + replicas}."
        )
    return global_batch // replicas


def num_workers(strategy: tf.distribute.Strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and resolver:
        spec = resolver.cluster_spec().as_dict()
        return len(spec.get("chief", [])) + len(spec.get("worker", []))
    return 1


# ----------------------------------------------------------------------------


def _configure_devices(runtime: RuntimeConfig, gpus: list) -> None:
    try:
        if gpus and runtime.gpu_memory_growth:
            for gpu in gpus:
                tf.config.experimental.set_memory_growth(gpu, True)
        if runtime.cpu_replicas > 1:
            if gpus:
                log.warning(
                    "runtime.cpu_replicas=%d is ignored: %d GPU(s) are visible and "
                    "replicas run on them.", runtime.cpu_replicas, len(gpus))
            else:
                (cpu,) = tf.config.list_physical_devices("CPU")[:1]
                tf.config.set_logical_device_configuration(
                    cpu, [tf.config.LogicalDeviceConfiguration()] * runtime.cpu_replicas
                )
    except RuntimeError as e:  # the TF runtime was initialized too early
        raise RuntimeError(
            "build_strategy() must run before any other TF op; the TF runtime was "
            f"already initialized ({e})."
        ) from e


def _mirrored_strategy(runtime: RuntimeConfig, num_gpus: int) -> tf.distribute.Strategy:
    if num_gpus:
        devices = [f"/gpu:{i}" for i in range(num_gpus)]
    else:
        devices = [f"/cpu:{i}" for i in range(runtime.cpu_replicas)]
    if runtime.all_reduce == "nccl":
        if not num_gpus:
            raise ConfigError(
                "runtime.all_reduce=nccl needs GPUs, and none are visible. "
                "Use runtime.all_reduce=auto (or ring) on CPU."
            )
        cross_device_ops = tf.distribute.NcclAllReduce()
    elif runtime.all_reduce == "ring":
        # Single-host Mirrored has no ring implementation; hierarchical copy is
        # TF's non-NCCL GPU all-reduce. On CPU it falls back to one device.
        cross_device_ops = (
            tf.distribute.HierarchicalCopyAllReduce() if num_gpus
            else tf.distribute.ReductionToOneDevice()
        )
    else:
        cross_device_ops = None if num_gpus else tf.distribute.ReductionToOneDevice()
    return tf.distribute.MirroredStrategy(devices, cross_device_ops=cross_device_ops)


def _multi_worker_strategy(runtime, cluster: ClusterInfo, num_gpus: int):
    if cluster.tf_config is None:
        raise ConfigError(
            "runtime.strategy=multi_worker needs a cluster: set TF_CONFIG (or run under "
            "`seqtrain launch --workers N -- train ...`, a TFJob or Vertex AI)."
        )
    if runtime.all_reduce == "nccl" and not num_gpus:
        raise ConfigError(
            "runtime.all_reduce=nccl needs GPUs, and none are visible. "
            "Use runtime.all_reduce=ring (or auto) on CPU workers."
        )
    # The resolver reads TF_CONFIG; a config synthesized from CLUSTER_SPEC or an
    # Indexed Job is exported so TF sees the same cluster we validated.
    cluster.export_tf_config()
    impl = {
        "auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
        "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
        "ring": tf.distribute.experimental.CommunicationImplementation.RING,
    }[runtime.all_reduce]
    options = tf.distribute.experimental.CommunicationOptions(implementation=impl)
    waiting = ClusterWait(cluster, runtime.cluster_wait_secs)
    try:  # blocks until every worker has joined
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    finally:
        waiting.ready()


def _tpu_strategy(runtime: RuntimeConfig) -> tf.distribute.Strategy:
    tpu = runtime.tpu or os.environ.get("TPU_NAME", "")
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, OSError, tf.errors.OpError) as e:
        # OSError: resolving a TPU by name asks the GCE metadata server, which
        # only answers on Google Cloud.
        raise UserError(
            f"runtime.strategy=tpu could not reach a TPU (runtime.tpu={runtime.tpu!r}, "
            f"TPU_NAME={os.environ.get('TPU_NAME', '')!r}): {str(e).strip()}. "
            "Set runtime.tpu to the TPU name (resolved through the GCE metadata server, so "
            "only on Google Cloud), a grpc://host:8470 address, or 'local' on a TPU VM; or "
            "choose another runtime.strategy."
        ) from None
    return tf.distribute.TPUStrategy(resolver)


# Errors a collective raises when a peer vanished (killed, partitioned, restarted).
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
               tf.errors.CancelledError, tf.errors.AbortedError)


@contextlib.contextmanager
def peer_errors_as_worker_lost(workers: int, cluster: ClusterInfo | None = None):
    """In a multi-worker run, a lost peer anywhere inside (a step, an eval, the
    stop agreement, a save or a restore) becomes `WorkerLost`: exit 144, which
    `restartPolicy: ExitCode` retries, instead of a traceback and exit 1. Its
    message names the peer (from `cluster`) and the cause."""
    try:
        yield
    except PEER_ERRORS as e:
        if workers <= 1:
            raise
        raise WorkerLost(lost_peer(str(e), cluster)) from None


def lost_peer(error: str, cluster: ClusterInfo | None) -> str:
    """"worker 1 (localhost:2223): <cause>" from a collective's error text.

    TF's first line is only "Graph execution error:"; the peer is the task it
    names (`/job:worker/replica:0/task:1`, from a failed RPC or the coordination
    service's heartbeat check) other than this one, the cause the abort reason.
    """
    spec = ((cluster.tf_config if cluster else None) or {}).get("cluster", {})
    me = (cluster.task_type, cluster.task_index) if cluster else None
    peer = next((f"{job} {int(i)}" + _address(spec, job, int(i))
                 for job, i in re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", error)
                 if (job, int(i)) != me), None)
    cause = re.search(r"aborted by: (.+)", error) or re.search(
        r"(The following tasks are unhealthy[^\n]*)", error)
    cause = cause.group(1).strip() if cause else _first_line_of(error)
    return f"{peer}: {cause}" if peer else cause


def _address(spec: dict, job: str, index: int) -> str:
    addresses = spec.get(job, [])
    return f" ({addresses[index]})" if index < len(addresses) else ""


class ClusterWait:
    """Says which peers a multi-worker start is waiting for, and gives up in time.

    MultiWorkerMirrored's start blocks in C++ *holding the GIL* until every
    worker is up (no registration deadline), so no Python thread of this
    process can act meanwhile. Two things that need no GIL do instead:
    a small child process prints "waiting for workers host:port ..." (the
    peers whose port does not answer) every min(30, timeout/4) s, and a POSIX
    timer whose expiry runs `_exit(144)` on a C thread ends the process with
    the retryable code after `timeout_secs`. `ready()` (once the strategy
    exists) cancels both.
    """

    def __init__(self, cluster: ClusterInfo, timeout_secs: float, every_secs: float = 30.0):
        spec = (cluster.tf_config or {}).get("cluster", {})
        me = spec.get(cluster.task_type or "", [])
        mine = me[cluster.task_index] if cluster.task_index < len(me) else None
        self.peers = [a for role in ("chief", "worker") for a in spec.get(role, []) if a != mine]
        self._child = None
        self._timer = None
        if cluster.is_multi_worker and self.peers:
            import subprocess

            self._timer = _ExitTimer(timeout_secs, EXIT_WORKER_LOST)
            self._child = subprocess.Popen(
                [sys.executable, "-c", _WAIT_REPORTER, str(os.getpid()), str(every_secs),
                 str(timeout_secs), str(EXIT_WORKER_LOST), *self.peers],
                stdin=subprocess.DEVNULL)

    def ready(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._child is not None and self._child.poll() is None:
            self._child.kill()
            self._child.wait()
        self._child = None


class _ExitTimer:
    """`_exit(code)` after `secs`, run by a C thread (SIGEV_THREAD): works while the GIL is held.

    Linux/glibc only; elsewhere it does nothing (the wait is then unbounded, as TF's).
    """

    def __init__(self, secs: float, code: int):
        import ctypes

        self._libc = None
        try:
            libc = ctypes.CDLL(None, use_errno=True)

            class SigEvent(ctypes.Structure):  # struct sigevent on 64-bit Linux (64 bytes)
                _fields_ = [("value", ctypes.c_void_p), ("signo", ctypes.c_int),
                            ("notify", ctypes.c_int), ("function", ctypes.c_void_p),
                            ("attribute", ctypes.c_void_p), ("pad", ctypes.c_int * 8)]

            class TimeSpec(ctypes.Structure):
                _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]

            class ITimerSpec(ctypes.Structure):
                _fields_ = [("interval", TimeSpec), ("value", TimeSpec)]

            event = SigEvent(value=code, notify=2,  # SIGEV_THREAD: call function(value)
                             function=ctypes.cast(libc._exit, ctypes.c_void_p).value)
            self._id = ctypes.c_void_p()
            if libc.timer_create(1, ctypes.byref(event), ctypes.byref(self._id)) != 0:
                return  # CLOCK_MONOTONIC
            whole = int(secs)
            spec = ITimerSpec(TimeSpec(0, 0), TimeSpec(whole, int((secs - whole) * 1e9)))
            if libc.timer_settime(self._id, 0, ctypes.byref(spec), None) != 0:
                libc.timer_delete(self._id)
                return
            self._libc = libc
        except (OSError, AttributeError):
            log.warning("no POSIX timer here: runtime.cluster_wait_secs is not enforced")

    def cancel(self) -> None:
        if self._libc is not None:
            self._libc.timer_delete(self._id)
            self._libc = None


_WAIT_REPORTER = r"""
import os, socket, sys, time
parent, every, limit, code = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
peers = sys.argv[5:]
def answers(a):
    host, _, port = a.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=2).close()
        return True
    except (OSError, ValueError):
        return False
start = time.monotonic()
every = min(every, max(1.0, limit / 4))
while True:
    time.sleep(max(0.05, min(every, start + limit - 0.5 - time.monotonic())))
    if os.getppid() != parent:
        break
    missing = [a for a in peers if not answers(a)]
    if time.monotonic() - start >= limit - 0.5:
        sys.stderr.write("seqtrain: gave up waiting for workers after %.0f s "
                         "(runtime.cluster_wait_secs=%g); not answering: %s. Exiting with the "
                         "retryable code %s.\n" % (time.monotonic() - start, limit,
                                                   ", ".join(missing) or "(none)", code))
        sys.stderr.flush()
        break
    sys.stderr.write("seqtrain: waiting for workers %s (%.0f s of runtime.cluster_wait_secs=%g)\n"
                     % (", ".join(missing) or "(all ports answer; the cluster is forming)",
                        time.monotonic() - start, limit))
    sys.stderr.flush()
"""


def _answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
            return True
    except (OSError, ValueError):
        return False


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _first_line_of(text: str) -> str:
    lines = [line for line in text.strip().splitlines()
             if line.strip() and line.strip() != "Graph execution error:"]
    return (lines or ["(no message)"])[0][:300]
