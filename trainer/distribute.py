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
import socket
import sys
import threading
import time

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
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


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
def peer_errors_as_worker_lost(workers: int):
    """In a multi-worker run, a lost peer anywhere inside (a step, an eval, the
    stop agreement, a save or a restore) becomes `WorkerLost`: exit 144, which
    `restartPolicy: ExitCode` retries, instead of a traceback and exit 1."""
    try:
        yield
    except PEER_ERRORS as e:
        if workers <= 1:
            raise
        raise WorkerLost(_first_line(e)) from None


class ClusterWait:
    """Says which peers a multi-worker start is waiting for, and gives up in time.

    MultiWorkerMirrored blocks silently in its first collective until every
    worker is up. While it waits this prints "waiting for workers host:port ..."
    (the peers whose port does not answer yet) every `every_secs`, and after
    `timeout_secs` exits with the retryable code 144. Call `ready()` once the
    first collective has completed.
    """

    def __init__(self, cluster: ClusterInfo, timeout_secs: float, every_secs: float = 30.0):
        self.timeout = float(timeout_secs)
        self.every = float(every_secs)
        spec = (cluster.tf_config or {}).get("cluster", {})
        me = spec.get(cluster.task_type or "", [None] * (cluster.task_index + 1))
        mine = me[cluster.task_index] if cluster.task_index < len(me) else None
        self.peers = [a for role in ("chief", "worker") for a in spec.get(role, []) if a != mine]
        self._done = threading.Event()
        self._thread = None
        if cluster.is_multi_worker and self.peers:
            self._thread = threading.Thread(target=self._run, name="seqtrain-cluster-wait",
                                            daemon=True)
            self._thread.start()

    def ready(self) -> None:
        self._done.set()

    def _run(self) -> None:
        start = time.monotonic()
        while not self._done.wait(min(self.every, max(0.0, start + self.timeout - time.monotonic()))):
            waited = time.monotonic() - start
            missing = [a for a in self.peers if not _answers(a)]
            if waited >= self.timeout:
                _say(f"seqtrain: gave up waiting for workers after {waited:.0f} s "
                     f"(runtime.cluster_wait_secs={self.timeout:g}); not answering: "
                     f"{', '.join(missing) or '(all answer, but the cluster did not form)'}. "
                     f"Exiting with the retryable code {EXIT_WORKER_LOST}.")
                os._exit(EXIT_WORKER_LOST)
            _say(f"seqtrain: waiting for workers {', '.join(missing) or '(all ports answer)'} "
                 f"({waited:.0f} s of runtime.cluster_wait_secs={self.timeout:g})")


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


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
