"""Every seqtrain path on gs://, end to end, through the real CLI against the GCS emulator.

Each `seqtrain` call is a fresh subprocess given `gcs.env`, exactly as a job
on a cluster would run: TF's native gs:// filesystem writes checkpoints, event
files and the export; google-cloud-storage runs the preflight, `runs list` and
`stage`. Results are copied back out of the emulator's store, parsed with
TF's and TensorBoard's own readers, and compared with a local run.

The runs are independent chains of CLI calls, started together by one
module-scoped fixture and run on a few background threads, so their waits
(TF's retry jitter under injected 503s) overlap with the others' CPU work:

  reference  local, uninterrupted: the weights every gs:// run must reproduce
  main       gs://: --stop-at 5, resume + SIGTERM (exit 143), resume to the
             end + export, then `predict` and `evaluate` on gs://
  data       CSV uploaded with `seqtrain stage`, trained from gs:// with
             runtime.log_sync=local_then_sync and the model dir on gs://
  fault-10   10% of its bucket's requests answer 503: --stop-at 5, then a
             resume under the same faults
  fault-20   a whole run while 20% of its bucket's requests answer 503
  preflight  a missing and a read-only bucket: exit 2, one line, nothing written
"""

from __future__ import annotations

import concurrent.futures
import csv
import io
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
import uuid

import pytest
import yaml
from tensorflow.core.protobuf import saved_model_pb2

from helpers import (REPO, assert_checkpoints_equal, assert_user_error, checkpoint_values,
                     cli_env, read_scalars, run_cli_process)
from trainer.errors import EXIT_PREEMPTED

STEPS = 10
# Tiny and deterministic. Dropout on, so a bitwise-equal resume also proves the
# dropout RNG states came back from GCS.
COMMON = [
    "--set", f"train.steps={STEPS}", "--set", "train.batch_size=8",
    "--set", "train.steps_per_loop=2", "--set", "train.checkpoint_every=4",
    "--set", "train.eval_every=10", "--set", "train.log_every=2",
    "--set", "train.eval_batches=2", "--set", "model.units=8", "--set", "model.dropout=0.25",
    "--set", "data.vocab_size=64", "--set", "data.sequence_length=12",
]
KEEP = 3  # train.keep_checkpoints default
PARALLEL = 4  # chains at a time (2 cores; the fault runs mostly wait out retry backoff)
FAULT_RATES = (0.1, 0.2)

# A tiny labelled corpus with words the bundled one does not have, so the
# vocabulary proves the data came from the staged file.
PREDICT_TEXTS = ["great food", "rude staff"]
GOOD = ["splendid", "marvellous", "tasty", "friendly", "cosy", "fresh"]
BAD = ["dreadful", "soggy", "rude", "cold", "stale", "noisy"]


# ------------------------------------------------------------------ runner
class _Runs:
    """Starts the chains of CLI calls and hands their results to the tests."""

    def __init__(self, gcs, tmp):  # noqa: F811
        self.gcs, self.tmp = gcs, tmp
        self.bucket = gcs.new_bucket("seqtrain-e2e")  # main and data runs, staged CSV
        self.fault_buckets = {p: gcs.new_bucket("seqtrain-e2e-faults") for p in FAULT_RATES}
        self.read_only_bucket = gcs.new_bucket("seqtrain-e2e-ro")
        self.missing_bucket = f"seqtrain-e2e-missing-{uuid.uuid4().hex[:8]}"  # never created
        self.main = f"gs://{self.bucket}/exp/main"
        self.data = f"gs://{self.bucket}/exp/data"
        self.reference = str(tmp / "reference")
        self.timings: dict[str, float] = {}
        self.notes: list[str] = []
        self._pool = concurrent.futures.ThreadPoolExecutor(PARALLEL, "seqtrain-e2e")
        # Longest chains first: they set the wall time. The preflight is short.
        self._futures = {name: self._pool.submit(fn) for name, fn in (
            ("main", self._main_chain),
            ("fault-0.1", lambda: self._fault_chain(0.1, cut_at=5)),
            ("fault-0.2", lambda: self._fault_chain(0.2, cut_at=None)),
            ("preflight", self._preflight_chain),
            ("reference", self._reference_chain),
            ("data", self._data_chain),
        )}

    def result(self, name: str) -> dict:
        return self._futures[name].result(timeout=600)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for p in FAULT_RATES:
            self.gcs.set_fault_rate(0.0, bucket=self.fault_buckets[p])
        self.gcs.set_read_only(self.read_only_bucket, False)

    # -- helpers
    def cli(self, label: str, *args, check: bool = True, env: dict | None = None):
        t0 = time.monotonic()
        proc = run_cli_process(*args, env={**self.gcs.env, **(env or {})}, check=check)
        self.timings[label] = time.monotonic() - t0
        stalls = proc.stderr.count("has been stuck at")  # libcurl's idle-timeout aborts
        if stalls:
            self.notes.append(f"{label}: {stalls} GCS request(s) stalled and were retried")
        return proc

    def train(self, label: str, model_dir: str, *extra, check: bool = True, env=None):
        return self.cli(label, "train", "--model-dir", model_dir, *COMMON, *extra,
                        check=check, env=env)

    # -- chains
    def _reference_chain(self) -> dict:
        self.train("reference", self.reference)
        predict = self.cli("reference: predict", "predict", "--model-dir", self.reference,
                           *PREDICT_TEXTS)
        return {"run": self.reference, "predict": predict}

    def _main_chain(self) -> dict:
        out = {"run": self.main}
        out["leg1"] = self.train("main: --stop-at 5", self.main, "--stop-at", "5")
        out["leg2"] = self._sigterm_leg("main: resume, SIGTERM", self.main)
        out["leg3"] = self.train("main: resume to the end", self.main)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:  # read-only users of the run
            predict = pool.submit(self.cli, "main: predict", "predict", "--model-dir", self.main,
                                  *PREDICT_TEXTS)
            evaluate = pool.submit(self.cli, "main: evaluate", "evaluate", "--model-dir",
                                   self.main)
            out["predict"], out["evaluate"] = predict.result(), evaluate.result()
        return out

    def _sigterm_leg(self, label: str, model_dir: str) -> dict:
        """Resumes, then SIGTERMs at the first progress line, like a node drain."""
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "trainer.cli", "train", "--model-dir", model_dir, *COMMON],
            env=cli_env(self.gcs.env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, cwd=REPO)
        seen, signalled = [], False
        try:
            for line in proc.stdout:
                seen.append(line)
                if line.startswith("step "):
                    proc.send_signal(signal.SIGTERM)
                    signalled = True
                    break
            out, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        self.timings[label] = time.monotonic() - t0
        saved = [line for line in (seen + out.splitlines()) if line.startswith("SIGTERM:")]
        self.notes.append(f"SIGTERM after the first progress line: {saved} exit {proc.returncode}")
        return {"returncode": proc.returncode, "stdout": "".join(seen) + out, "stderr": err,
                "signalled": signalled}

    def _fault_chain(self, p: float, cut_at: int | None) -> dict:
        bucket = self.fault_buckets[p]
        run = f"gs://{bucket}/run"
        out = {"run": run, "bucket": bucket}
        with self.gcs.faults(p, bucket=bucket, seed=int(p * 100)):
            if cut_at:
                out["leg1"] = self.train(f"faults {p:.0%}: --stop-at {cut_at}", run,
                                         "--stop-at", str(cut_at))
            out["last"] = self.train(f"faults {p:.0%}: " + ("resume" if cut_at else "whole run"),
                                     run)
        out["faults"] = self.gcs.faults_injected(bucket)
        out["requests"] = self.gcs.requests_seen(bucket)
        self.notes.append(f"{p:.0%} fault rate: {out['faults']} injected 503s on gs://{bucket}")
        return out

    def _data_chain(self) -> dict:
        csv_path = self.tmp / "reviews.csv"
        csv_path.write_text(_corpus())
        out = {"csv": csv_path}
        out["stage"] = self.cli("data: stage", "stage", str(csv_path), f"gs://{self.bucket}/data/")
        uri = f"gs://{self.bucket}/data/reviews.csv"
        tmpdir = self.tmp / "data-run-tmp"  # the trainer's local log dir lands here
        tmpdir.mkdir()
        out["tmpdir"] = tmpdir
        out["train"] = self.cli(
            "data: train from gs:// CSV, local_then_sync", "train", "--model-dir", self.data,
            *COMMON,
            "--set", "data.source=file", "--set", f"data.train_path={uri}",
            "--set", "runtime.log_sync=local_then_sync",
            env={"TMPDIR": str(tmpdir)})
        return out

    def _preflight_chain(self) -> dict:
        out = {}
        ro = self.read_only_bucket
        self.gcs.set_read_only(ro)
        for name, model_dir in (("missing", f"gs://{self.missing_bucket}/run"),
                                ("read-only", f"gs://{ro}/run")):
            t0 = time.monotonic()
            out[name] = self.train(f"preflight: {name}", model_dir, check=False)
            out[name + "-secs"] = time.monotonic() - t0
        return out


def _corpus(rows: int = 160) -> str:
    rng = random.Random(3)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["text", "label"])
    for i in range(rows):
        words, label = (GOOD, "pos") if i % 2 else (BAD, "neg")
        w.writerow([" ".join(rng.choice(words) for _ in range(rng.randint(3, 8))), label])
    return buf.getvalue()


@pytest.fixture(scope="module")
def runs(gcs, tmp_path_factory):  # noqa: F811
    r = _Runs(gcs, tmp_path_factory.mktemp("gcs-e2e"))
    yield r
    r.close()
    print("\nseqtrain gs:// e2e process wall times:")
    for label, secs in r.timings.items():
        print(f"  {secs:6.1f} s  {label}")
    for note in r.notes:
        print(f"  {note}")


# ------------------------------------------------------------------ readers
# TF's readers are not pointed at gs:// from this process: the emulator serves
# from this process's own threads, and `tf.train.load_checkpoint` (its C++
# NewCheckpointReader) keeps the GIL while it talks to GCS, which deadlocks. Objects are copied out of the
# emulator's store instead; the subprocesses (each resume, `evaluate`,
# `predict`) read checkpoints and the export through TF's gs:// themselves.
def _split(uri: str) -> tuple[str, str]:
    bucket, _, name = uri[len("gs://"):].partition("/")
    return bucket, name


def _objects(gcs, uri: str) -> list[str]:  # noqa: F811
    """Object names under gs:// `uri`, relative to it."""
    bucket, prefix = _split(uri.rstrip("/") + "/")
    return [n[len(prefix):] for n in gcs.list_objects(bucket, prefix)]


def _read(gcs, uri: str) -> bytes:  # noqa: F811
    return gcs.read_object(*_split(uri))


def _local(runs, path: str) -> str:
    """A local copy of the gs:// dir `path` (a local `path` is returned as is)."""
    if not path.startswith("gs://"):
        return path
    dest = runs.tmp / "downloads" / uuid.uuid4().hex
    for rel in _objects(runs.gcs, path):
        if not rel or rel.endswith("/"):
            continue  # TF's empty "directory" objects
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_read(runs.gcs, f"{path.rstrip('/')}/{rel}"))
    return str(dest)


def _weights(runs, run: str, step: int) -> dict:
    """Every tensor of checkpoint `step` but the iterator and counters, read with TF."""
    return checkpoint_values(os.path.join(_local(runs, f"{run}/checkpoints"), f"ckpt-{step}"))


def _scalars(runs, log_dir: str, tag: str) -> dict:
    """{step: value} of `tag` over every event file, from a local copy."""
    return read_scalars(_local(runs, log_dir), tag)


def _ckpt_numbers(names: list[str]) -> list[int]:
    return sorted(int(n[len("checkpoints/ckpt-"):-len(".index")]) for n in names
                  if n.startswith("checkpoints/ckpt-") and n.endswith(".index"))


def _assert_same_weights(runs, run_a: str, run_b: str, step: int = STEPS) -> None:
    # model, optimizer slots and the dropout RNG states are all in there
    assert_checkpoints_equal(_weights(runs, run_a, step), _weights(runs, run_b, step),
                             must_have=("optimizer", "rng"))


def _assert_complete_run(gcs, run: str, ckpts: list[int]) -> list[str]:  # noqa: F811
    """A finished run on gs://: every file present, no temp leftovers. Returns the names."""
    names = _objects(gcs, run)
    for required in ("config.yaml", "runtime.json", "metrics.json", "assets/vocab.txt",
                     "assets/labels.txt", "checkpoints/checkpoint", "export/saved_model.pb",
                     "export/variables/variables.index"):
        assert required in names, (required, names)
    assert _ckpt_numbers(names) == ckpts, names
    for n in ckpts:
        assert f"checkpoints/ckpt-{n}.data-00000-of-00001" in names
    assert [n for n in names if n.startswith("train/events.out.tfevents.")]
    assert [n for n in names if n.startswith("eval/events.out.tfevents.")]
    leftovers = [n for n in names if "_temp" in n or ".tmp" in n or ".seqtrain-preflight" in n]
    assert not leftovers, leftovers
    state = _read(gcs, f"{run}/checkpoints/checkpoint").decode()
    assert f'model_checkpoint_path: "ckpt-{ckpts[-1]}"' in state or (
        f'model_checkpoint_path: "{run}/checkpoints/ckpt-{ckpts[-1]}"' in state), state
    metrics = json.loads(_read(gcs, f"{run}/metrics.json"))
    assert metrics["step"] == STEPS and 0.0 <= metrics["metrics"]["accuracy"] <= 1.0
    return names


def _no_server_errors(gcs, *buckets) -> None:  # noqa: F811
    mine = [e for e in gcs.server_errors if any(f"/{b}" in e for b in buckets)]
    assert not mine, mine


# ---------------------------------------------------------------- preflight
@pytest.mark.parametrize("case", ["missing", "read-only"])
def test_preflight_errors_exit_2_with_one_line_and_write_nothing(runs, case):
    res = runs.result("preflight")
    proc = res[case]
    msg = assert_user_error(proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    if case == "missing":
        bucket = runs.missing_bucket
        assert f"GCS bucket gs://{bucket} does not exist" in msg
        assert "gcloud storage buckets create" in msg
        with pytest.raises(KeyError):  # nothing created it along the way
            runs.gcs.list_objects(bucket)
    else:
        bucket = runs.read_only_bucket
        assert f"may not write gs://{bucket}/run" in msg
        assert "roles/storage.objectAdmin" in msg and "storage.objects.create" in msg
        assert runs.gcs.list_objects(bucket) == []
    # Seconds, not minutes: most of it is starting Python and importing TensorFlow
    # while the other chains share the cores; the preflight's checks give up after 12 s.
    assert res[case + "-secs"] < 90, res[case + "-secs"]


# --------------------------------------------- train -> stop -> SIGTERM -> end
def test_stop_at_then_sigterm_then_resume_on_gcs(runs):
    main = runs.result("main")
    run = main["run"]
    assert "stopped at step 5 of 10 (--stop-at)" in main["leg1"].stdout
    leg2 = main["leg2"]
    assert leg2["signalled"], leg2["stdout"]
    assert f"resumed from {run}/checkpoints/ckpt-5 at step 5" in leg2["stdout"]
    assert leg2["returncode"] == EXIT_PREEMPTED, leg2["stderr"][-3000:]
    assert "retryable code 143" in leg2["stderr"] and "Traceback" not in leg2["stderr"]
    stopped = int(leg2["stdout"].split("SIGTERM: checkpoint saved at step ")[1].split(";")[0])
    assert 5 < stopped < STEPS
    leg3 = main["leg3"].stdout
    assert f"resumed from {run}/checkpoints/ckpt-{stopped} at step {stopped}" in leg3
    assert f"finished at step {STEPS} in {run}" in leg3 and f"export      : {run}/export" in leg3

    # Saves in order: 4 and 5 (first leg), the SIGTERM one, 8 unless that was it, 10.
    saved = [4, 5, stopped] + ([8] if stopped < 8 else []) + [STEPS]
    names = _assert_complete_run(runs.gcs, run, sorted(saved[-KEEP:]))
    assert len([n for n in names if n.startswith("train/events")]) == 3  # one per start

    config = yaml.safe_load(_read(runs.gcs, f"{run}/config.yaml"))
    assert config["task"]["name"] == "text_classification"
    assert config["train"]["steps"] == STEPS and config["model"]["dropout"] == 0.25
    info = json.loads(_read(runs.gcs, f"{run}/runtime.json"))
    assert info["versions"]["tensorflow"].startswith("2.21") and run in info["argv"]
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString(_read(runs.gcs, f"{run}/export/saved_model.pb"))
    (graph,) = saved_model.meta_graphs
    assert {"serve", "serving_default"} <= set(graph.signature_def)
    _no_server_errors(runs.gcs, runs.bucket)


def test_resumed_gcs_run_equals_an_uninterrupted_local_run_bitwise(runs):
    main, ref = runs.result("main"), runs.result("reference")
    _assert_same_weights(runs, main["run"], ref["run"])


def test_event_files_on_gcs_read_back_with_tensorboard(runs):
    main, ref = runs.result("main"), runs.result("reference")
    run = main["run"]
    loss = _scalars(runs, f"{run}/train", "loss")
    stopped = int(main["leg2"]["stdout"].split("checkpoint saved at step ")[1].split(";")[0])
    # Every 2 steps and at each stop: 2 4 5 | 7 (8) | (8) 10, whether SIGTERM hit at 7 or 8.
    assert stopped in (7, 8) and sorted(loss) == [2, 4, 5, 7, 8, 10]
    ref_loss = _scalars(runs, os.path.join(ref["run"], "train"), "loss")
    for step in (2, 4, 10):  # the same loop boundaries in both runs
        assert loss[step] == pytest.approx(ref_loss[step], rel=1e-6), step
    for tag in ("learning_rate", "steps_per_sec", "examples_per_sec"):
        assert sorted(_scalars(runs, f"{run}/train", tag)) == sorted(loss)
    acc = _scalars(runs, f"{run}/eval", "accuracy")
    assert list(acc) == [STEPS]
    metrics = json.loads(_read(runs.gcs, f"{run}/metrics.json"))
    assert metrics["metrics"]["accuracy"] == pytest.approx(acc[STEPS])
    assert acc[STEPS] == pytest.approx(_scalars(runs, os.path.join(ref["run"], "eval"),
                                                "accuracy")[STEPS])


def test_predict_and_evaluate_read_the_run_from_gcs(runs):
    main, ref = runs.result("main"), runs.result("reference")
    rows = [line.split("\t") for line in main["predict"].stdout.strip().splitlines()]
    assert [r[2] for r in rows] == PREDICT_TEXTS
    # The gs:// run's weights equal the local run's, so must its export's answers.
    assert main["predict"].stdout == ref["predict"].stdout
    ev = main["evaluate"].stdout
    assert f"step {STEPS} ({main['run']}/checkpoints/ckpt-{STEPS})" in ev and "accuracy" in ev


# ------------------------------------------------ data from gs://, log sync
def test_training_data_staged_to_and_read_from_gcs(runs):
    data = runs.result("data")
    local = data["csv"].read_bytes()
    uri = f"gs://{runs.bucket}/data/reviews.csv"
    assert data["stage"].stdout.startswith(f"{uri}  {len(local)} bytes  crc32c=")
    assert _read(runs.gcs, uri) == local
    assert f"finished at step {STEPS} in {runs.data}" in data["train"].stdout
    vocab = _read(runs.gcs, f"{runs.data}/assets/vocab.txt").decode().splitlines()
    assert set(GOOD + BAD) <= set(vocab)  # fitted on the staged file, not the bundled corpus
    labels = _read(runs.gcs, f"{runs.data}/assets/labels.txt").decode().split()
    assert labels == ["neg", "pos"]
    config = yaml.safe_load(_read(runs.gcs, f"{runs.data}/config.yaml"))
    assert config["data"]["train_path"] == uri and config["data"]["source"] == "file"
    _assert_complete_run(runs.gcs, runs.data, [4, 8, 10])


def test_local_then_sync_uploads_the_event_files_to_gcs(runs):
    data = runs.result("data")
    names = _objects(runs.gcs, runs.data)
    train = [n for n in names if n.startswith("train/events.out.tfevents.")]
    evals = [n for n in names if n.startswith("eval/events.out.tfevents.")]
    assert len(train) == 1 and len(evals) == 1, names
    assert not [n for n in names if "logsync-tmp" in n]
    # The final upload happened after the last write: every step is there.
    assert sorted(_scalars(runs, f"{runs.data}/train", "loss")) == [2, 4, 6, 8, 10]
    assert list(_scalars(runs, f"{runs.data}/eval", "accuracy")) == [STEPS]
    # ...and the trainer removed its local copy afterwards.
    assert not [p for p in os.listdir(data["tmpdir"]) if p.startswith("seqtrain-logs-")]


# ------------------------------------------------------------ 503 faults
@pytest.mark.parametrize("p", FAULT_RATES)
def test_transient_503s_lose_nothing(runs, p):
    res, ref = runs.result(f"fault-{p}"), runs.result("reference")
    run = res["run"]
    # The injected share follows the emulator's rule: each request fails with
    # probability p, never more than 2 in a row, a Markov chain whose stationary
    # fault rate is r = p(1+p)/(1+p+p^2). Within 5 standard deviations of n*r.
    n, faults = res["requests"], res["faults"]
    r = p * (1 + p) / (1 + p + p * p)
    assert abs(faults - n * r) <= 5 * math.sqrt(n * r * (1 - r)), (faults, n, r)
    assert faults > 0
    if "leg1" in res:  # cut under faults, then restored from gs:// under faults
        assert "stopped at step 5" in res["leg1"].stdout
        assert f"resumed from {run}/checkpoints/ckpt-5 at step 5" in res["last"].stdout
        ckpts = [5, 8, 10]
    else:
        ckpts = [4, 8, 10]
    assert f"finished at step {STEPS}" in res["last"].stdout
    _assert_complete_run(runs.gcs, run, ckpts)
    for n in ckpts:  # every checkpoint kept is whole and readable
        _weights(runs, run, n)
    _assert_same_weights(runs, run, ref["run"])
    loss = _scalars(runs, f"{run}/train", "loss")
    ref_loss = _scalars(runs, os.path.join(ref["run"], "train"), "loss")
    expected = [2, 4, 5, 7, 8, 10] if "leg1" in res else [2, 4, 6, 8, 10]
    assert sorted(loss) == expected
    for step in (2, 4, 10):
        assert loss[step] == pytest.approx(ref_loss[step], rel=1e-6)
    assert list(_scalars(runs, f"{run}/eval", "accuracy")) == [STEPS]
    _no_server_errors(runs.gcs, res["bucket"])


# -------------------------------------------------------------- runs list
def test_runs_list_shows_the_gcs_runs(runs):
    for chain in ("main", "data"):
        runs.result(chain)
    proc = runs.cli("runs list", "runs", "list", f"gs://{runs.bucket}/exp")
    header, *rows = proc.stdout.strip().splitlines()
    assert header.split()[:4] == ["RUN", "TASK", "STEP", "METRICS"]
    by_name = {row.split()[0]: row.split() for row in rows}
    assert sorted(by_name) == ["data", "main"]
    for name, run in (("data", runs.data), ("main", runs.main)):
        cols = by_name[name]
        assert cols[1:3] == ["text_classification", str(STEPS)]
        metrics = json.loads(_read(runs.gcs, f"{run}/metrics.json"))["metrics"]
        assert f"accuracy={metrics['accuracy']:.4g}" in cols
        assert f"loss={metrics['loss']:.4g}" in cols
