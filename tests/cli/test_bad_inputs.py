"""Bad inputs, table-driven: each is one clear paragraph, exit 2, no traceback, no damage.

Every case runs `seqtrain ARGV` from its own temporary working directory (relative
paths, as users type them) and asserts:
  * exit code 2 (a user error: retrying will not help);
  * exactly one `Error: ` paragraph on stderr, naming the input and the fix (fragments);
  * no "Traceback" anywhere;
  * the model dir unchanged byte for byte (a new one is not even created).

The cases run in one batch process (tests/cli_batch.py calls `trainer.cli:main`,
the console script's function, per case) to pay TensorFlow's start-up once;
`test_batch_runner_matches_real_processes` checks that a few cases give the same
result as separate `python -m trainer.cli` processes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, cli_env, run_cli_process
from helpers import user_error

TC = ["--set", "train.steps=2", "--set", "train.batch_size=2"]  # text_classification, tiny
FC = ["--task", "forecasting", "--set", "train.steps=2", "--set", "train.batch_size=2"]
TG = ["--task", "text_generation", "--set", "train.steps=2"]
TR = ["--task", "translation", "--set", "train.steps=2"]
REVIEWS = b"text,label\ngood film,pos\nbad film,neg\nfine,pos\nawful,neg\n"
TEN_MB = b"text,label\n" + b"x" * (10 * 1024 * 1024) + b",pos\nshort,neg\n"


@dataclasses.dataclass
class Case:
    id: str
    argv: list[str]
    expect: tuple[str, ...]  # fragments of the one Error paragraph (input and fix)
    files: dict = dataclasses.field(default_factory=dict)  # relative path -> bytes | "DIR"
    model_dir: str | None = "run"  # relative; must stay byte-for-byte unchanged
    existing_run: str | None = None  # task: pre-create a run dir for that task's defaults
    stdin: str = ""


def _run(task: str, extra: dict | None = None, **kw) -> dict:
    return {"existing_run": task, **({"files": extra} if extra else {}), **kw}


CASES = [
    # ---- config values --------------------------------------------------------------------
    Case("lr-nan", ["train", *TC, "--set", "train.learning_rate=.nan", "--model-dir", "run"],
         ("train.learning_rate", "finite number", "nan")),
    Case("lr-inf", ["train", *TC, "--set", "train.learning_rate=.inf", "--model-dir", "run"],
         ("train.learning_rate", "finite number", "inf")),
    Case("yaml-minus-inf", ["train", "--config", "c.yaml", "--model-dir", "run"],
         ("train.clipnorm", "finite"), files={"c.yaml": b"train:\n  clipnorm: -.inf\n"}),
    Case("lr-exponent-overflow", ["train", *TC, "--set", "train.learning_rate=1e999",
                                  "--model-dir", "run"], ("train.learning_rate", "finite")),
    Case("unknown-key", ["train", "--set", "train.stepz=3", "--model-dir", "run"],
         ("'train.stepz'", "Valid keys at this level", "steps")),
    Case("unknown-section", ["train", "--set", "trian.steps=3", "--model-dir", "run"],
         ("'trian'", "Valid keys")),
    Case("wrong-type-int", ["train", "--set", "train.steps=abc", "--model-dir", "run"],
         ("train.steps", "expects int", "'abc'")),
    Case("wrong-type-bool", ["train", "--set", "runtime.deterministic=maybe", "--model-dir",
                             "run"], ("runtime.deterministic", "expects bool")),
    Case("below-minimum", ["train", "--set", "train.batch_size=0", "--model-dir", "run"],
         ("train.batch_size", ">= 1", "0")),
    Case("bad-literal", ["train", "--set", "train.optimizer=adamx", "--model-dir", "run"],
         ("train.optimizer", "adam|adamw|sgd|rmsprop", "adamx")),
    Case("set-without-equals", ["train", "--set", "train.steps", "--model-dir", "run"],
         ("--set 'train.steps'", "key.path=value")),
    Case("unknown-task", ["train", "--task", "nosuch", "--model-dir", "run"],
         ("unknown task 'nosuch'", "text_classification")),
    Case("warmup-too-long", ["train", *TC, "--set", "train.warmup_steps=5", "--model-dir", "run"],
         ("train.warmup_steps (5)", "train.steps (2)")),
    Case("profile-steps-from-0", ["train", *TC, "--set", "runtime.profile_steps=0,2",
                                  "--model-dir", "run"],
         ("runtime.profile_steps", "'0,2'", "first step must be >= 1", "A,B", "empty/none")),
    Case("profile-steps-reversed", ["train", *TC, "--set", "runtime.profile_steps=2,1",
                                    "--model-dir", "run"],
         ("runtime.profile_steps", "'2,1'", "last step (1) comes before the first (2)", "A,B")),
    Case("profile-steps-past-train-steps", ["train", *TC, "--set", "runtime.profile_steps=1,5",
                                            "--model-dir", "run"],
         ("runtime.profile_steps", "got 1,5", "past train.steps (2)", "A,B")),
    Case("profile-steps-one-number", ["train", *TC, "--set", "runtime.profile_steps=5",
                                      "--model-dir", "run"],
         ("runtime.profile_steps", "got 5", "not two steps", "--set runtime.profile_steps=5,8")),
    Case("profile-steps-yaml-three", ["train", "--config", "c.yaml", "--model-dir", "run"],
         ("runtime.profile_steps", "[1, 2, 3]", "not two steps", "[5, 8]"),
         files={"c.yaml": b"train:\n  steps: 5\nruntime:\n  profile_steps: [1, 2, 3]\n"}),
    Case("stop-at-0", ["train", *TC, "--stop-at", "0", "--model-dir", "run"],
         ("--stop-at", ">= 1", "got 0")),
    Case("stop-at-negative", ["train", *TC, "--stop-at", "-1", "--model-dir", "run"],
         ("--stop-at", ">= 1", "got -1")),
    # ---- the --config file ----------------------------------------------------------------
    Case("config-missing", ["train", "--config", "nope.yaml", "--model-dir", "run"],
         ("'nope.yaml'", "does not exist", "seqtrain config")),
    Case("config-missing-absolute", ["train", "--config", "/nonexistent/c.yaml", "--model-dir",
                                     "run"], ("'/nonexistent/c.yaml'", "does not exist")),
    Case("config-is-dir", ["train", "--config", "conf", "--model-dir", "run"],
         ("'conf'", "is a directory", "YAML file"), files={"conf": "DIR"}),
    Case("config-not-utf8", ["train", "--config", "c.yaml", "--model-dir", "run"],
         ("'c.yaml'", "not UTF-8", "line 2", "Re-save"),
         files={"c.yaml": b"train:\n  steps: 5 # \xe9t\xe9\n"}),
    # /proc/self/mem exists and is a file, but reading it from offset 0 fails (EIO) even as
    # root: a real unreadable file (chmod 000 does not stop root).
    Case("config-unreadable", ["train", "--config", "/proc/self/mem", "--model-dir", "run"],
         ("config file '/proc/self/mem'", "cannot be read", "Input/output error", "ls -l")),
    Case("config-bad-yaml", ["train", "--config", "c.yaml", "--model-dir", "run"],
         ("'c.yaml'", "not valid YAML", "line"), files={"c.yaml": b"train:\n  steps: [1, 2\n"}),
    Case("config-is-list", ["train", "--config", "c.yaml", "--model-dir", "run"],
         ("'c.yaml'", "YAML mapping"), files={"c.yaml": b"- train\n- steps\n"}),
    # ---- text_classification data ---------------------------------------------------------
    Case("data-missing", ["train", *TC, "--set", "data.train_path=reviews.csv", "--model-dir",
                          "run"], ("data.train_path='reviews.csv'", "does not exist")),
    Case("data-missing-absolute", ["train", *TC, "--set", "data.train_path=/nonexistent/r.csv",
                                   "--model-dir", "run"],
         ("data.train_path='/nonexistent/r.csv'", "does not exist")),
    Case("data-is-dir", ["train", *TC, "--set", "data.train_path=data", "--model-dir", "run"],
         ("data.train_path='data'", "is a directory"), files={"data": "DIR"}),
    Case("data-empty", ["train", *TC, "--set", "data.train_path=d.csv", "--model-dir", "run"],
         ("'d.csv'", "is empty"), files={"d.csv": b""}),
    Case("data-header-with-other-names", ["train", *TC, "--set", "data.train_path=d.csv",
                                          "--model-dir", "run"],
         ("data.train_path='d.csv'", "('review,sentiment')", "label 'sentiment' occurs nowhere "
          "else", "data.header=true", "data.label_column", "data.header=false"),
         files={"d.csv": b"review,sentiment\n" + REVIEWS.split(b"\n", 1)[1]}),
    Case("data-header-with-other-names-unprepared",
         ["train", *TC, "--set", "data.train_path=d.csv", "--set", "data.prepare=off",
          "--model-dir", "run"], ("data.train_path='d.csv'", "looks like a header"),
         files={"d.csv": b"review,sentiment\n" + REVIEWS.split(b"\n", 1)[1]}),
    Case("eval-header-with-other-names",
         ["train", *TC, "--set", "data.train_path=d.csv", "--set", "data.eval_path=e.csv",
          "--model-dir", "run"], ("data.eval_path='e.csv'", "label 'sentiment'"),
         files={"d.csv": REVIEWS, "e.csv": b"review,sentiment\n" + REVIEWS.split(b"\n", 1)[1]}),
    Case("data-header-only", ["train", *TC, "--set", "data.train_path=d.csv", "--model-dir",
                              "run"], ("'d.csv'", "header", "no data rows", "data.header"),
         files={"d.csv": b"text,label\n"}),
    Case("label-column-missing", ["train", *TC, "--set", "data.train_path=d.csv",
                                  "--set", "data.label_column=sentiment", "--model-dir", "run"],
         ("data.label_column='sentiment'", "text, label"), files={"d.csv": REVIEWS}),
    Case("data-not-utf8", ["train", *TC, "--set", "data.train_path=d.csv", "--model-dir", "run"],
         ("'d.csv'", "not valid utf-8", "line 3", "byte offset", "data.encoding"),
         files={"d.csv": b"text,label\ngood,pos\ncaf\xe9 bad,neg\n"}),
    Case("data-unknown-encoding", ["train", *TC, "--set", "data.train_path=d.csv",
                                   "--set", "data.encoding=klingon", "--model-dir", "run"],
         ("data.encoding='klingon'", "utf-8"), files={"d.csv": REVIEWS}),
    Case("data-10mb-field", ["train", *TC, "--set", "data.train_path=d.csv", "--model-dir", "run"],
         ("'d.csv'", "line 2", "data.max_field_bytes"), files={"d.csv": TEN_MB}),
    Case("data-extra-field", ["train", *TC, "--set", "data.train_path=d.csv", "--model-dir",
                              "run"], ("'d.csv'", "line 3", "3 comma-separated", "Quote"),
         files={"d.csv": b"text,label\ngood,pos\ngood, really,pos\n"}),
    Case("data-single-class", ["train", *TC, "--set", "data.train_path=d.csv", "--model-dir",
                               "run"], ("single class", "label column"),
         files={"d.csv": b"text,label\n" + b"".join(b"t%d,pos\n" % i for i in range(20))}),
    Case("data-bad-jsonl", ["train", *TC, "--set", "data.train_path=d.jsonl", "--model-dir",
                            "run"], ("'d.jsonl'", "line 2", "not valid JSON"),
         files={"d.jsonl": b'{"text": "a", "label": "x"}\n{"text": oops}\n'}),
    Case("data-format-literal", ["train", *TC, "--set", "data.format=xml", "--model-dir", "run"],
         ("data.format", "auto|csv|tsv|jsonl", "xml")),
    Case("data-header-literal", ["train", *TC, "--set", "data.header=maybe", "--model-dir",
                                 "run"], ("data.header", "bool", "maybe")),
    Case("source-file-no-path", ["train", *TC, "--set", "data.source=file", "--model-dir", "run"],
         ("data.source=file needs data.train_path",)),
    Case("source-bundled-with-path", ["train", *TC, "--set", "data.source=bundled", "--set",
                                      "data.train_path=d.csv", "--model-dir", "run"],
         ("data.source=bundled ignores", "source=auto"), files={"d.csv": REVIEWS}),
    Case("plain-text-for-labels", ["train", *TC, "--set", "data.train_path=notes.txt",
                                   "--model-dir", "run"], ("'notes.txt'", "plain text", "CSV"),
         files={"notes.txt": b"just some words\nmore words\n"}),
    # ---- forecasting data -----------------------------------------------------------------
    Case("date-column", ["train", *FC, "--set", "data.path=air.csv", "--model-dir", "run"],
         ("'1949-01'", "data.time_column=Month"),
         files={"air.csv": b"Month,Passengers\n1949-01,112\n1949-02,118\n1949-03,132\n"}),
    Case("series-too-short", ["train", *FC, "--set", "data.path=s.csv", "--model-dir", "run"],
         ("6 rows", "data.window"), files={"s.csv": b"y\n1\n2\n3\n4\n5\n6\n"}),
    Case("series-non-numeric", ["train", *FC, "--set", "data.path=s.csv", "--model-dir", "run"],
         ("'n/a'", "line 3", "data.time_column"), files={"s.csv": b"y\n1\nn/a\n3\n"}),
    Case("series-target-missing", ["train", *FC, "--set", "data.path=s.csv", "--set",
                                   "data.target=sales", "--model-dir", "run"],
         ("data.target='sales'", "y"), files={"s.csv": b"y\n1\n2\n3\n"}),
    Case("series-source-conflict", ["train", *FC, "--set", "data.source=synthetic", "--set",
                                    "data.path=s.csv", "--model-dir", "run"],
         ("data.source=synthetic ignores data.path", "source=auto")),
    # ---- translation and text_generation data ---------------------------------------------
    Case("corpus-no-tab", ["train", *TR, "--set", "data.path=pairs.tsv", "--model-dir", "run"],
         ("'pairs.tsv'", "line 2", "no tab"), files={"pairs.tsv": b"hi\thola\nbye adios\n"}),
    Case("corpus-missing", ["train", *TR, "--set", "data.path=pairs.tsv", "--model-dir", "run"],
         ("'pairs.tsv'", "does not exist")),
    Case("corpus-not-utf8", ["train", *TR, "--set", "data.path=pairs.tsv", "--model-dir", "run"],
         ("'pairs.tsv'", "line 2", "byte offset", "data.encoding"),
         files={"pairs.tsv": b"hi\thola\ncoffee\tcaf\xe9\n"}),
    Case("url-plain-http", ["train", *TG, "--set", "data.url=http://example.com/a.txt?sig=s3cr3t",
                            "--model-dir", "run"], ("https://", "data.allow_http=true", "REDACTED")),
    Case("url-ftp", ["train", *TG, "--set", "data.url=ftp://example.com/a.txt", "--model-dir",
                     "run"], ("data.url must start with https://",)),
    Case("text-file-empty", ["train", *TG, "--set", "data.path=c.txt", "--model-dir", "run"],
         ("data.path='c.txt'", "is empty"), files={"c.txt": b""}),
    # data.prepare=auto (the default) streams the source before writing MODEL_DIR/data/
    Case("text-file-not-utf8", ["train", *TG, "--set", "data.path=c.txt", "--model-dir", "run"],
         ("data.path='c.txt'", "not valid utf-8", "line 2", "data.encoding"),
         files={"c.txt": b"abc\ncaf\xe9\n"}),
    Case("prepare-mode-unknown", ["train", *TG, "--set", "data.prepare=sometimes",
                                  "--model-dir", "run"], ("data.prepare", "auto|off", "sometimes")),
    Case("vocab-sample-negative", ["train", *TG, "--set", "data.vocab_sample_mb=-1",
                                   "--model-dir", "run"], ("data.vocab_sample_mb", "-1")),
    # ---- an existing model dir ------------------------------------------------------------
    Case("run-config-corrupt", ["train", *FC, "--model-dir", "run"],
         ("config.yaml is damaged", "new --model-dir"),
         **_run("forecasting", {"run/config.yaml": b"task: {name: [forecasting\n"})),
    Case("run-runtime-truncated", ["train", *FC, "--model-dir", "run"],
         ("runtime.json is damaged", "JSONDecodeError", "new --model-dir"),
         **_run("forecasting", {"run/runtime.json": b'{"replicas": 1, "strat'})),
    Case("run-dir-is-file", ["train", *TC, "--model-dir", "run"], ("exists and is a file",),
         files={"run": b"not a dir"}),
    Case("run-dir-foreign", ["train", *TC, "--model-dir", "run"],
         ("not a seqtrain run", "new or empty"), files={"run/notes.txt": b"mine"}),
    Case("evaluate-not-a-run", ["evaluate", "--model-dir", "run"], ("not a seqtrain run",),
         files={"run/notes.txt": b"mine"}),
    # ---- inference commands ---------------------------------------------------------------
    Case("generate-length-huge", ["generate", "--model-dir", "run", "--length", "3000000000"],
         ("--length", "0 to 1000000", "3000000000"), **_run("text_generation")),
    Case("generate-temperature-zero", ["generate", "--model-dir", "run", "--temperature", "0"],
         ("--temperature", "> 0"), **_run("text_generation")),
    Case("predict-no-dir", ["predict", "--model-dir", "nothing", "hi"],
         ("'nothing'", "does not exist"), model_dir="nothing"),
    Case("predict-on-generation-run", ["predict", "--model-dir", "run", "hi"],
         ("'text_generation' run", "seqtrain generate --model-dir run"),
         **_run("text_generation")),
    Case("translate-on-classifier-run", ["translate", "--model-dir", "run", "hi"],
         ("'text_classification' run", "seqtrain predict --model-dir run"),
         **_run("text_classification")),
    Case("generate-on-forecasting-run", ["generate", "--model-dir", "run"],
         ("'forecasting' run", "seqtrain predict --model-dir run"), **_run("forecasting")),
    Case("predict-before-export", ["predict", "--model-dir", "run", "hi"],
         ("no export", "seqtrain train --model-dir run"), **_run("text_classification")),
    Case("predict-input-file-missing", ["predict", "--model-dir", "run", "@inputs.txt"],
         ("@inputs.txt", "does not exist", "@@text"), **_run("text_classification")),
    Case("predict-input-file-is-dir", ["predict", "--model-dir", "run", "@inputs"],
         ("@inputs", "is a directory"),
         **_run("text_classification", {"inputs": "DIR"})),
    Case("predict-input-file-unreadable", ["predict", "--model-dir", "run", "@/proc/self/mem"],
         ("input file @/proc/self/mem", "cannot be read", "ls -l"),
         **_run("text_classification")),
    Case("translate-input-not-utf8", ["translate", "--model-dir", "run", "@in.txt"],
         ("@in.txt", "not UTF-8", "line 2"),
         **_run("translation", {"in.txt": b"hello\ncaf\xe9\n"})),
    # Python keeps argv's undecodable bytes as lone surrogates ("\udce9" is the byte 0xe9).
    Case("predict-arg-not-utf8", ["predict", "--model-dir", "run", "caf\udce9"],
         ("argument 1 is not UTF-8", "b'\\xe9'", "iconv"), **_run("text_classification")),
    Case("predict-stdin-not-utf8", ["predict", "--model-dir", "run", "-"],
         ("standard input is not UTF-8", "b'\\xe9'"), stdin="caf\udce9 good\n",
         **_run("text_classification")),
    Case("generate-prompt-not-utf8", ["generate", "--model-dir", "run", "--prompt", "caf\udce9"],
         ("--prompt b'caf\\xe9' is not UTF-8",), **_run("text_generation")),
    Case("generate-seed-out-of-range", ["generate", "--model-dir", "run", "--seed",
                                        "99999999999999999999"],
         ("--seed", "0 to 2**63 - 1", "99999999999999999999"), **_run("text_generation")),
    Case("generate-temperature-subnormal", ["generate", "--model-dir", "run", "--temperature",
                                            "1e-45"],
         ("--temperature", "smallest normal float32", "1e-45"), **_run("text_generation")),
    Case("seed-negative", ["train", *TC, "--set", "runtime.seed=-1", "--model-dir", "run"],
         ("runtime.seed", ">= 0", "-1")),
    Case("seed-past-32-bits", ["train", *TC, "--set", "runtime.seed=4294967296",
                               "--model-dir", "run"], ("runtime.seed", "<= 4294967295")),
    Case("model-dir-under-a-file", ["train", *TC, "--model-dir", "f.csv/run"],
         ("--model-dir f.csv/run cannot be created", "Not a directory"),
         files={"f.csv": REVIEWS}, model_dir="f.csv"),
    Case("inspect-step-huge", ["data", "inspect", "--model-dir", "run", "--step",
                               "100000000000000000000"],
         ("--step", "0 to 2**40", "100000000000000000000"), **_run("text_classification")),
    Case("resume-with-another-seed", ["train", "--model-dir", "run", "--set", "runtime.seed=7"],
         ("--model-dir run holds a run", "runtime.seed: 42 -> 7"), **_run("text_classification")),
    Case("resume-with-another-task", ["train", "--model-dir", "run", "--task", "forecasting"],
         ("run holds a text_classification run", "task 'forecasting' cannot train there",
          "new --model-dir"), **_run("text_classification")),
    Case("evaluate-watch-without-checkpoints", ["evaluate", "--model-dir", "run", "--watch",
                                                "--poll-secs", "0.1"],
         ("run has no checkpoint to evaluate", "metrics.json is at step 2", "train it first"),
         **_run("text_classification", {"run/metrics.json": b'{"step": 2, "metrics": {}}'})),
    Case("translate-attention-png-is-a-dir", ["translate", "--model-dir", "run",
                                              "--attention-png", "pngs", "hello"],
         ("--attention-png pngs is a directory", "pngs/attention.png"),
         **_run("translation", {"pngs": "DIR"})),
    Case("job-render-out-is-a-run-file", ["job", "render", "--platform", "tfjob", "--image",
                                          "img", "--model-dir", "gs://b/r", "--out",
                                          "run/config.yaml"],
         ("--out run/config.yaml is a file of the run in run",), **_run("text_classification")),
    Case("clipvalue-zero", ["train", *TC, "--set", "train.clipvalue=0", "--model-dir", "run"],
         ("train.clipvalue=0", "clip every gradient to zero", "unset (null)")),
    Case("prepare-out-empty", ["prepare", "--task", "text_classification", "--out", ""],
         ("--out is empty", "--out prepared/{key}"), model_dir=None),
    Case("predict-empty-stdin", ["predict", "--model-dir", "run", "-"],
         ("no inputs", "standard input"), stdin="\n\n", **_run("text_classification")),
]


def _write_files(root, files: dict) -> None:
    for rel, content in files.items():
        path = os.path.join(root, rel)
        if content == "DIR":
            os.makedirs(path, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content)


def _existing_run(root, task: str) -> None:
    """A run dir as `seqtrain train` leaves it before the export: config, runtime, a checkpoint."""
    from trainer import experiment

    run = os.path.join(root, "run")
    os.makedirs(os.path.join(run, "checkpoints"))
    with open(os.path.join(run, "config.yaml"), "w") as f:
        overrides = ["train.steps=2", "train.batch_size=2"] if task != "translation" else []
        f.write(experiment.load(task, None, overrides).to_yaml())
    with open(os.path.join(run, "runtime.json"), "w") as f:
        json.dump({"replicas": 1}, f)
    with open(os.path.join(run, "checkpoints", "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "ckpt-1"\n')


def _tree(path: str):
    """{relative path: sha256 | "dir"} of a tree, None if it does not exist."""
    if not os.path.lexists(path):
        return None
    if os.path.isfile(path):
        with open(path, "rb") as f:
            return {".": hashlib.sha256(f.read()).hexdigest()}
    out = {}
    for d, dirs, files in os.walk(path):
        for name in dirs:
            out[os.path.relpath(os.path.join(d, name), path)] = "dir"
        for name in files:
            with open(os.path.join(d, name), "rb") as f:
                out[os.path.relpath(os.path.join(d, name), path)] = hashlib.sha256(
                    f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Sets up every case's working dir, runs all of them in one batch process."""
    base = tmp_path_factory.mktemp("bad_inputs")
    cases, before = [], {}
    for case in CASES:
        cwd = base / case.id
        cwd.mkdir()
        if case.existing_run:
            _existing_run(str(cwd), case.existing_run)
        _write_files(str(cwd), case.files)
        if case.model_dir:
            before[case.id] = _tree(str(cwd / case.model_dir))
        cases.append({"argv": case.argv, "cwd": str(cwd), "stdin": case.stdin})
    (base / "cases.json").write_text(json.dumps(cases))
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "cli_batch.py"), str(base / "cases.json"),
         str(base / "results.json")], env=cli_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    results = json.loads((base / "results.json").read_text())
    return {case.id: (result, before.get(case.id), base / case.id)
            for case, result in zip(CASES, results)}


def test_there_are_at_least_40_distinct_cases():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(outcomes, case):
    result, before, cwd = outcomes[case.id]
    err = result["stderr"]
    assert result["code"] == 2, (result["code"], result["stdout"][-2000:], err[-4000:])
    assert "Traceback" not in err and "Traceback" not in result["stdout"], err
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, err  # one paragraph: a single Error line
    for fragment in case.expect:
        assert fragment in errors[0], (fragment, errors[0])
    if case.model_dir:
        assert _tree(str(cwd / case.model_dir)) == before, "the model dir was modified"


@pytest.mark.parametrize("case_id", ["lr-nan", "config-not-utf8", "predict-empty-stdin",
                                     "predict-arg-not-utf8"])
def test_batch_runner_matches_real_processes(outcomes, case_id):
    """The batch gives what a separate `seqtrain` process gives (exit code and message)."""
    case = next(c for c in CASES if c.id == case_id)
    batch, _, cwd = outcomes[case_id]
    proc = subprocess.run([sys.executable, "-m", "trainer.cli", *case.argv], cwd=cwd,
                          env=cli_env(), input=case.stdin, capture_output=True, text=True,
                          timeout=300)
    line = lambda text: [x for x in text.splitlines() if x.startswith("Error: ")]  # noqa: E731
    assert (proc.returncode, line(proc.stderr)) == (batch["code"], line(batch["stderr"]))


def test_yaml_config_round_trip_is_not_a_bad_input(tmp_path):
    """Control: the same machinery accepts a good config (the suite is not vacuous)."""
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"train": {"steps": 2}}))
    proc = run_cli_process("check", "--config", "c.yaml", cwd=str(tmp_path), check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]


# Out of memory is produced for real: the CLI process's address space is capped at 8 GiB
# (a tiny run maps far less), and the first activation of the first step, the embedded
# batch (65536 windows x 100 characters x 2048 floats = 50 GiB), cannot be allocated, so
# TensorFlow's allocator itself refuses it (no smaller allocation can fail first).
OOM = ["--task", "text_generation", "--set", "runtime.jit_compile=false",
       "--set", "model.embedding_dim=2048"]


def test_out_of_memory_at_the_first_step_names_the_batch_size_and_leaves_no_trace(tmp_path):
    message = user_error("train", *OOM, "--model-dir", "runs/oom", "--set", "train.steps=2",
                         "--set", "train.batch_size=65536",
                         cwd=tmp_path, model_dir="runs/oom", memory_gib=8,
                         expect=("out of memory in the first training step",
                                 "train.batch_size=65536", "--set train.batch_size=32768"))
    assert "OOM when allocating" in message, message  # TensorFlow's own reason is kept
    assert not (tmp_path / "runs" / "oom").exists()


def test_out_of_memory_on_resume_puts_the_run_back_as_it_was(tmp_path):
    """A run resumed with a batch that does not fit: runtime.json, config.yaml and the logs
    written at the start are undone, so the run resumes later exactly as before."""
    run_cli_process("train", *OOM, "--model-dir", "runs/r", "--set", "train.steps=2",
                    "--set", "train.batch_size=4", cwd=tmp_path)
    user_error("train", *OOM, "--model-dir", "runs/r", "--set", "train.steps=4",
               "--set", "train.batch_size=65536", cwd=tmp_path, model_dir="runs/r",
               memory_gib=8, expect=("out of memory in the first training step",
                                     "train.batch_size=65536"))
