"""trainer/cluster.py: roles from TF_CONFIG, Vertex CLUSTER_SPEC and Indexed Jobs; output dirs.

Reference formats (what the platforms inject), written down here as the oracle:

* Kubeflow TFJob operator (kubeflow/training-operator, pkg/controller.v1/tensorflow/
  tensorflow.go, genTFConfigJSONStr/genClusterSpec): for replica type R (lower-cased)
  and index i of TFJob J in namespace NS,
  `{"cluster": {"chief": ["J-chief-0.NS.svc:2222"], "worker": ["J-worker-0.NS.svc:2222", ...]},
    "task": {"type": "worker", "index": i}, "environment": "cloud"}`
  (port 2222 = TFJobDefaultPort unless the container declares port "tfjob-port").
* Vertex AI: CLUSTER_SPEC is `{"cluster": {"workerpool0": [...], "workerpool1": [...]},
  "environment": "cloud", "task": {"type": "workerpool1", "index": i, "trial": ...}}`;
  its TF_CONFIG names the same hosts with roles chief/worker/ps and leaves the
  evaluator out of "cluster" ("evaluator is not part of the training cluster").
"""

from __future__ import annotations

import json

import pytest

from trainer import cluster
from trainer.cluster import ClusterInfo, UserError, from_environ, resolve_dirs

CHIEF = ["cmle-training-workerpool0-ab12cd-0:2222"]
WORKERS = ["cmle-training-workerpool1-ab12cd-0:2222", "cmle-training-workerpool1-ab12cd-1:2222"]
EVALUATOR = ["cmle-training-workerpool3-ab12cd-0:2222"]


def cluster_spec(pool: str, index: int, **extra_pools) -> str:
    pools = {"workerpool0": CHIEF, "workerpool1": WORKERS, **extra_pools}
    return json.dumps({
        "cluster": pools,
        "environment": "cloud",
        "task": {"type": pool, "index": index},
        "job": '{"worker_pool_specs": []}',
    })


# ---------------------------------------------------------------------------
# Single process and TF_CONFIG
# ---------------------------------------------------------------------------


def test_no_cluster_is_a_single_training_chief():
    info = from_environ({})
    assert info == ClusterInfo(None, None, 0, 1, "none")
    assert info.is_chief and info.is_training_worker and not info.is_multi_worker
    assert not info.is_evaluator and info.worker_id == "single"


@pytest.mark.parametrize("raw", ["", "   ", "{}"])
def test_empty_tf_config_counts_as_absent(raw):
    assert from_environ({"TF_CONFIG": raw}).source == "none"


def test_tf_config_chief_and_workers():
    tf_config = {"cluster": {"chief": ["c:2222"], "worker": ["w0:2222", "w1:2222"]},
                 "task": {"type": "worker", "index": 1}, "environment": "cloud"}
    info = from_environ({"TF_CONFIG": json.dumps(tf_config)})
    assert info.tf_config == tf_config and info.source == "TF_CONFIG"
    assert (info.task_type, info.task_index, info.num_workers) == ("worker", 1, 3)
    assert not info.is_chief and info.is_multi_worker and info.worker_id == "worker-1"


def test_worker_zero_is_chief_when_cluster_has_no_chief():
    tf_config = {"cluster": {"worker": ["w0:1", "w1:1"]}, "task": {"type": "worker", "index": 0}}
    assert from_environ({"TF_CONFIG": json.dumps(tf_config)}).is_chief


@pytest.mark.parametrize("cluster_has_evaluator", [False, True])
def test_evaluator_is_not_a_training_worker(cluster_has_evaluator):
    # TF/Vertex leave the evaluator out of "cluster"; newer TFJob operators list it.
    pools = {"chief": ["c:2222"], "worker": ["w:2222"]}
    if cluster_has_evaluator:
        pools["evaluator"] = ["e:2222"]
    tf_config = {"cluster": pools, "task": {"type": "evaluator", "index": 0}}
    info = from_environ({"TF_CONFIG": json.dumps(tf_config)})
    assert info.is_evaluator and not info.is_training_worker and not info.is_chief
    assert info.num_workers == 2


# ---------------------------------------------------------------------------
# Precedence between sources
# ---------------------------------------------------------------------------


def test_tf_config_wins_over_cluster_spec_and_indexed_job():
    tf_config = {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}
    env = {
        "TF_CONFIG": json.dumps(tf_config),
        "CLUSTER_SPEC": cluster_spec("workerpool0", 0),
        "SEQTRAIN_WORKER_HOSTS": "x-0.x:2222,x-1.x:2222",
        "JOB_COMPLETION_INDEX": "0",
    }
    info = from_environ(env)
    assert info.source == "TF_CONFIG" and info.tf_config == tf_config


def test_cluster_spec_wins_over_indexed_job_and_empty_tf_config():
    env = {
        "TF_CONFIG": "{}",
        "CLUSTER_SPEC": cluster_spec("workerpool1", 1),
        "SEQTRAIN_WORKER_HOSTS": "x-0.x:2222",
        "JOB_COMPLETION_INDEX": "0",
    }
    info = from_environ(env)
    assert info.source == "CLUSTER_SPEC" and info.tf_config["cluster"]["worker"] == WORKERS


def test_completion_index_without_hosts_is_a_single_process():
    assert from_environ({"JOB_COMPLETION_INDEX": "3"}).source == "none"


# ---------------------------------------------------------------------------
# Vertex AI CLUSTER_SPEC -> the TF_CONFIG Vertex injects
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pool, index, vertex_task",
    [
        ("workerpool0", 0, {"type": "chief", "index": 0}),
        ("workerpool1", 0, {"type": "worker", "index": 0}),
        ("workerpool1", 1, {"type": "worker", "index": 1}),
        ("workerpool3", 0, {"type": "evaluator", "index": 0}),
    ],
)
def test_cluster_spec_maps_to_vertex_tf_config(pool, index, vertex_task):
    vertex_tf_config = {"cluster": {"chief": CHIEF, "worker": WORKERS},
                        "task": vertex_task, "environment": "cloud"}
    info = from_environ({"CLUSTER_SPEC": cluster_spec(pool, index, workerpool3=EVALUATOR)})
    assert info.source == "CLUSTER_SPEC"
    assert info.tf_config == vertex_tf_config
    assert info.num_workers == 3
    assert info.is_chief == (pool == "workerpool0")
    assert info.is_evaluator == (pool == "workerpool3")


def test_cluster_spec_single_replica_and_trial_id():
    raw = json.dumps({"cluster": {"workerpool0": CHIEF},
                      "task": {"type": "workerpool0", "index": 0, "trial": "7"}})
    info = from_environ({"CLUSTER_SPEC": raw})
    assert info.tf_config == {"cluster": {"chief": CHIEF},
                              "task": {"type": "chief", "index": 0, "trial": "7"},
                              "environment": "cloud"}
    assert info.is_chief and not info.is_multi_worker


def test_export_tf_config_writes_the_synthesized_cluster():
    info = from_environ({"CLUSTER_SPEC": cluster_spec("workerpool1", 0)})
    environ: dict = {}
    info.export_tf_config(environ)
    assert json.loads(environ["TF_CONFIG"]) == info.tf_config
    assert from_environ(environ) == ClusterInfo(info.tf_config, "worker", 0, 3, "TF_CONFIG")
    single: dict = {}
    from_environ({}).export_tf_config(single)
    assert single == {}


def test_tensorflow_reads_the_synthesized_tf_config(monkeypatch):
    """TF's own resolver (what MultiWorkerMirroredStrategy uses) accepts our TF_CONFIG."""
    import tensorflow as tf

    for pool, index, role, tf_index in [("workerpool1", 1, "worker", 1),
                                        ("workerpool3", 0, "evaluator", 0)]:
        info = from_environ({"CLUSTER_SPEC": cluster_spec(pool, index, workerpool3=EVALUATOR)})
        monkeypatch.setenv("TF_CONFIG", json.dumps(info.tf_config))
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        assert (resolver.task_type, resolver.task_id) == (role, tf_index)
        assert resolver.cluster_spec().as_dict() == {"chief": CHIEF, "worker": WORKERS}


# ---------------------------------------------------------------------------
# Kubernetes Indexed Job -> the TF_CONFIG a TFJob with Chief + Workers gets
# ---------------------------------------------------------------------------


def test_indexed_job_roles_match_tfjob_operator():
    hosts = cluster.worker_hosts("run7", "run7", 3)
    assert hosts == "run7-0.run7:2222,run7-1.run7:2222,run7-2.run7:2222"
    addrs = hosts.split(",")
    expected_tasks = [{"type": "chief", "index": 0}, {"type": "worker", "index": 0},
                      {"type": "worker", "index": 1}]
    for i, task in enumerate(expected_tasks):
        info = from_environ({"SEQTRAIN_WORKER_HOSTS": hosts, "JOB_COMPLETION_INDEX": str(i)})
        assert info.source == "INDEXED_JOB"
        assert info.tf_config == {"cluster": {"chief": addrs[:1], "worker": addrs[1:]},
                                  "task": task, "environment": "cloud"}
        assert info.is_chief == (i == 0) and info.num_workers == 3


def test_indexed_job_with_one_pod_is_not_multi_worker():
    info = from_environ({"SEQTRAIN_WORKER_HOSTS": "solo-0.solo:2222", "JOB_COMPLETION_INDEX": "0"})
    assert info.tf_config["cluster"] == {"chief": ["solo-0.solo:2222"]}
    assert info.is_chief and not info.is_multi_worker


# ---------------------------------------------------------------------------
# Malformed input: one UserError naming the variable and the bad value
# ---------------------------------------------------------------------------

_TF = "TF_CONFIG"


def _tf(cluster_, task):
    return {_TF: json.dumps({"cluster": cluster_, "task": task})}


@pytest.mark.parametrize(
    "env, fragments",
    [
        ({_TF: '{"cluster": {'}, ["TF_CONFIG is not valid JSON", '{"cluster": {']),
        ({_TF: "[1, 2]"}, ["TF_CONFIG must be a JSON object", "list"]),
        ({_TF: '{"task": {"type": "worker"}}'}, ["TF_CONFIG has no 'cluster'"]),
        (_tf({"master": ["m:1"]}, {"type": "master"}), ["unknown role 'master'", "chief"]),
        (_tf({"worker": ["hostonly"]}, {"type": "worker"}), ["cluster.worker", "hostonly"]),
        (_tf({"worker": ["h:port"]}, {"type": "worker"}), ["host:port", "h:port"]),
        (_tf({"worker": []}, {"type": "worker"}), ["non-empty list"]),
        (_tf({"worker": ["a:1"]}, {"index": 0}), ["no 'task' with a 'type'"]),
        (_tf({"worker": ["a:1"]}, {"type": "chief", "index": 0}), ["task.type 'chief'"]),
        (_tf({"worker": ["a:1"]}, {"type": "worker", "index": 1}), ["task.index 1", "[0, 0]"]),
        (_tf({"worker": ["a:1"]}, {"type": "worker", "index": -1}), ["task.index -1"]),
        (_tf({"worker": ["a:1"]}, {"type": "worker", "index": "0"}), ["task.index '0'"]),
        (_tf({"worker": ["a:1"]}, {"type": "worker", "index": True}), ["task.index True"]),
        (_tf({"worker": ["a:1"], "ps": ["p:1"]}, {"type": "worker"}), ["parameter servers"]),
        (_tf({"evaluator": ["e:1"]}, {"type": "evaluator"}), ["no chief or worker"]),
        ({"CLUSTER_SPEC": "workerpool0"}, ["CLUSTER_SPEC is not valid JSON", "workerpool0"]),
        ({"CLUSTER_SPEC": '{"task": {}}'}, ["CLUSTER_SPEC has no 'cluster'"]),
        ({"CLUSTER_SPEC": cluster_spec("workerpool0", 0, workerpool2=["ps:2222"])},
         ["workerpool2", "synchronous all-reduce"]),
        ({"CLUSTER_SPEC": cluster_spec("workerpool0", 0, workerpool9=["x:2222"])},
         ["unknown worker pool 'workerpool9'"]),
        ({"CLUSTER_SPEC": json.dumps({"cluster": {"workerpool0": CHIEF + WORKERS},
                                      "task": {"type": "workerpool0", "index": 0}})},
         ["workerpool0 must hold exactly one replica"]),
        ({"CLUSTER_SPEC": json.dumps({"cluster": {"workerpool1": WORKERS},
                                      "task": {"type": "workerpool1", "index": 0}})},
         ["workerpool0 must hold exactly one replica", "[]"]),
        ({"CLUSTER_SPEC": cluster_spec("chief", 0)}, ["CLUSTER_SPEC task", "'chief'"]),
        ({"CLUSTER_SPEC": cluster_spec("workerpool1", 2)}, ["task.index 2", "'workerpool1'"]),
        ({"SEQTRAIN_WORKER_HOSTS": "a-0.a:2222,a-1.a:2222"}, ["JOB_COMPLETION_INDEX=None"]),
        ({"SEQTRAIN_WORKER_HOSTS": "a-0.a:2222", "JOB_COMPLETION_INDEX": "x"},
         ["JOB_COMPLETION_INDEX='x'"]),
        ({"SEQTRAIN_WORKER_HOSTS": "a-0.a:2222,a-1.a:2222", "JOB_COMPLETION_INDEX": "2"},
         ["JOB_COMPLETION_INDEX 2", "[0, 1]"]),
        ({"SEQTRAIN_WORKER_HOSTS": "a-0.a:2222,,a-2.a:2222", "JOB_COMPLETION_INDEX": "0"},
         ["SEQTRAIN_WORKER_HOSTS must be", "''"]),
        ({"SEQTRAIN_WORKER_HOSTS": "a:1,a:1", "JOB_COMPLETION_INDEX": "0"}, ["a host twice"]),
    ],
)
def test_malformed_environment_is_a_user_error(env, fragments):
    with pytest.raises(UserError) as err:
        from_environ(env)
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


# ---------------------------------------------------------------------------
# Output dirs: explicit flag > AIP_* > default
# ---------------------------------------------------------------------------

AIP = {
    "AIP_MODEL_DIR": "gs://bkt/job7/model/",
    "AIP_CHECKPOINT_DIR": "gs://bkt/job7/checkpoints/",
    "AIP_TENSORBOARD_LOG_DIR": "gs://bkt/job7/logs/",
}


def test_flag_wins_over_vertex_environment():
    dirs = resolve_dirs("gs://mine/run1", AIP)
    assert dirs == cluster.Dirs("gs://mine/run1", "gs://mine/run1/checkpoints",
                                "gs://mine/run1", "flag")


def test_vertex_environment_maps_each_dir():
    assert resolve_dirs(None, AIP) == cluster.Dirs(
        "gs://bkt/job7/model", "gs://bkt/job7/checkpoints", "gs://bkt/job7/logs",
        "AIP_MODEL_DIR")
    assert resolve_dirs("", AIP, default="runs/x").source == "AIP_MODEL_DIR"


def test_aip_model_dir_alone_keeps_the_usual_layout():
    dirs = resolve_dirs(None, {"AIP_MODEL_DIR": "gs://bkt/m/"})
    assert (dirs.checkpoint_dir, dirs.log_dir) == ("gs://bkt/m/checkpoints", "gs://bkt/m")


def test_default_and_missing_model_dir(tmp_path):
    dirs = resolve_dirs(None, {}, default=str(tmp_path / "run"))
    assert dirs == cluster.Dirs(str(tmp_path / "run"), str(tmp_path / "run" / "checkpoints"),
                                str(tmp_path / "run"), "default")
    with pytest.raises(UserError, match="--model-dir"):
        resolve_dirs(None, {"AIP_CHECKPOINT_DIR": "gs://b/c/"})
