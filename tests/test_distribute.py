"""Strategy choice from runtime config + environment, and its error paths."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli_process
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


def test_batch_size_check():
    import tensorflow as tf
    strategy = tf.distribute.get_strategy()
    assert distribute.check_batch_size(10, strategy) == 10


def test_multi_worker_without_a_cluster_is_an_error(tmp_path):
    proc = run_cli_process("train", "--model-dir", str(tmp_path / "r"),
                           "--set", "runtime.strategy=multi_worker", check=False)
    assert proc.returncode == 2 and "needs a cluster: set TF_CONFIG" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_a_cluster_with_a_single_process_strategy_is_an_error(tmp_path):
    tf_config = json.dumps({"cluster": {"worker": ["localhost:1", "localhost:2"]},
                            "task": {"type": "worker", "index": 0}})
    proc = run_cli_process("train", "--model-dir", str(tmp_path / "r"), "--set",
                           "runtime.strategy=mirrored", env={"TF_CONFIG": tf_config}, check=False)
    assert proc.returncode == 2 and "names 2 workers" in proc.stderr
    assert "runtime.strategy=multi_worker" in proc.stderr


def test_tpu_name_from_environment_is_used_in_the_error(tmp_path):
    proc = run_cli_process("train", "--model-dir", str(tmp_path / "r"),
                           env={"TPU_NAME": "no-such-tpu-here"}, check=False)
    assert proc.returncode == 2
    assert "runtime.strategy=tpu could not reach a TPU" in proc.stderr
    assert "TPU_NAME='no-such-tpu-here'" in proc.stderr and "Traceback" not in proc.stderr
