"""Strategy choice from runtime config + environment, and its error paths."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import REPO, cli_env, seqtrain, user_error
from trainer import cluster as cluster_lib, config as config_lib, distribute

SINGLE = cluster_lib.from_environ({})
TWO_WORKERS = cluster_lib.from_environ({"TF_CONFIG": json.dumps({
    "cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", "index": 0}})})
ONE_WORKER = cluster_lib.from_environ({"TF_CONFIG": json.dumps({
    "cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 0}})})


def rt(**kw):
    return config_lib.RuntimeConfig(**kw)


@pytest.mark.parametrize("runtime,cluster,gpus,env,expected", [
    (rt(), SINGLE, 0, {}, "default"),
    (rt(), SINGLE, 1, {}, "default"),
    (rt(), SINGLE, 2, {}, "mirrored"),
    (rt(cpu_replicas=2), SINGLE, 0, {}, "mirrored"),
    (rt(), TWO_WORKERS, 0, {}, "multi_worker"),
    (rt(), ONE_WORKER, 0, {}, "default"),
    (rt(cpu_replicas=2), TWO_WORKERS, 4, {}, "multi_worker"),  # a cluster beats local GPUs
    (rt(tpu="my-tpu"), TWO_WORKERS, 8, {}, "tpu"),  # a TPU beats everything
    (rt(), SINGLE, 0, {"TPU_NAME": "v4-8"}, "tpu"),
    (rt(strategy="one_device"), SINGLE, 2, {"TPU_NAME": "v4-8"}, "one_device"),  # explicit wins
])
def test_auto_resolution_order(monkeypatch, runtime, cluster, gpus, env, expected):
    monkeypatch.delenv("TPU_NAME", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert distribute.resolve_name(runtime, cluster, num_gpus=gpus) == expected


BATCH_CHECK = """
import json
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from trainer import distribute
from trainer.errors import ConfigError
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = {"replicas": strategy.num_replicas_in_sync,
       "per_replica": [distribute.check_batch_size(b, strategy) for b in (2, 10, 64)]}
try:
    distribute.check_batch_size(7, strategy)
except ConfigError as e:
    out["error"] = str(e)
print(json.dumps(out))
"""


def test_batch_size_check_under_two_replicas():
    """The global batch is split across 2 real replicas, and an odd one is refused."""
    proc = subprocess.run([sys.executable, "-c", BATCH_CHECK], env=cli_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2 and out["per_replica"] == [1, 5, 32]
    assert out["error"] == ("train.batch_size=7 (global) does not divide across 2 replicas. "
                            "Use a multiple of 2, for example --set train.batch_size=6 or 8.")


def test_multi_worker_without_a_cluster_is_an_error(tmp_path):
    user_error("train", "--model-dir", "r", "--set", "runtime.strategy=multi_worker",
               cwd=tmp_path, model_dir="r", expect=("needs a cluster: set TF_CONFIG",))


def test_a_cluster_with_a_single_process_strategy_is_an_error(tmp_path):
    tf_config = json.dumps({"cluster": {"worker": ["localhost:1", "localhost:2"]},
                            "task": {"type": "worker", "index": 0}})
    user_error("train", "--model-dir", "r", "--set", "runtime.strategy=mirrored",
               env={"TF_CONFIG": tf_config}, cwd=tmp_path, model_dir="r",
               expect=("names 2 workers", "runtime.strategy=multi_worker"))


def test_tpu_name_from_environment_is_used_in_the_error(tmp_path):
    user_error("train", "--model-dir", "r", env={"TPU_NAME": "no-such-tpu-here"}, cwd=tmp_path,
               model_dir="r", expect=("runtime.strategy=tpu could not reach a TPU",
                                      "TPU_NAME='no-such-tpu-here'"))


def test_evaluator_role_exits_0_without_writing(tmp_path):
    """TF_CONFIG naming this process the evaluator: `train` says so, exits 0, writes nothing."""
    tf_config = json.dumps({"cluster": {"chief": ["localhost:1"], "worker": ["localhost:2"],
                                        "evaluator": ["localhost:3"]},
                            "task": {"type": "evaluator", "index": 0}})
    proc = seqtrain("train", "--model-dir", "run", "--set", "train.steps=2",
                    env={"TF_CONFIG": tf_config}, cwd=tmp_path)
    # That line and nothing else: no strategy, no cluster, no training start line.
    assert proc.stdout.strip() == (
        "seqtrain: this task has the evaluator role; seqtrain evaluates on the chief during "
        "training, so there is nothing to do here."), proc.stdout
    assert not [ln for ln in proc.stderr.splitlines()
                if ln.startswith(("WARNING tensorflow", "ERROR tensorflow"))], proc.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no model dir, nothing else


# TF's texts of a lost peer: a failed collective RPC (measured on loopback) and the
# coordination service's heartbeat check (scripts/chaos.py f).
RPC_LOST = """Graph execution error:

Detected at node while/adam/CollectiveReduceV2 defined at (most recent call last):
  File "trainer/loop.py", line 109, in _train_steps

Collective ops is aborted by: recvmsg:Connection reset by peer
Additional GRPC error information from remote target /job:worker/replica:0/task:1 while \
calling /tensorflow.WorkerService/RecvBuf:
The error could be from a previous operation. Restart your program to reset."""
HEARTBEAT_LOST = ("Graph execution error:\n\nThe following tasks are unhealthy (stopped sending "
                  "heartbeats):\n/job:worker/replica:0/task:0\nThe tasks have crashed.")


@pytest.mark.parametrize("text,me,expected", [
    (RPC_LOST, 0, "worker 1 (localhost:2): recvmsg:Connection reset by peer"),
    (HEARTBEAT_LOST, 1, "worker 0 (localhost:1): The following tasks are unhealthy "
                        "(stopped sending heartbeats):"),
    ("Graph execution error:\n\nsocket closed", 0, "socket closed"),  # no task named
])
def test_a_lost_peer_is_named_with_its_address_and_cause(text, me, expected):
    spec = {"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker",
                                                                          "index": me}}
    me_cluster = cluster_lib.from_environ({"TF_CONFIG": json.dumps(spec)})
    assert distribute.lost_peer(text, me_cluster) == expected
