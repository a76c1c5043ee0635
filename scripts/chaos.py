"""Chaos runs against the real `seqtrain` CLI: kills, corruption, two writers, signals,
lost workers, a peer that never starts, a full disk.

Every scenario runs `python -m trainer.cli` (what `seqtrain` runs) in subprocesses from
temporary working directories, and every resumed run is compared bitwise with an
uninterrupted one (all checkpoint variables except save_counter/_CHECKPOINTABLE/iterator,
and the export's variables). Results: a summary table on stdout and JSON in --out.

    python scripts/chaos.py --out chaos.json                 # every scenario, full form
    python scripts/chaos.py --quick --scenarios a --trials 2 --out quick.json
    python scripts/chaos.py --scenarios b,c,g --out some.json

Scenarios: a kill -9 at random moments; b corruption matrix; c two writers; d SIGTERM on
text_generation's defaults; e SIGINT; f lost workers (launch and raw TF_CONFIG); g a peer
that never starts; h a full disk (needs root for `mount -t tmpfs`).
Exit code: 0 if every trial behaved as the contract says, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP = ("save_counter", "_CHECKPOINTABLE", "iterator")

# text_classification at its default model size, few steps: saves (3.5 MB) and the
# export (seconds) take measurable time.
TC = ["--task", "text_classification", "--set", "train.steps=40", "--set", "train.steps_per_loop=5",
      "--set", "train.checkpoint_every=10", "--set", "train.eval_every=20",
      "--set", "train.log_every=5", "--set", "train.eval_batches=2"]
TC_TINY = [*TC, "--set", "model.units=8", "--set", "model.embedding_dim=8",
           "--set", "model.dense_units=8"]  # the --quick form of scenario a
TINY = ["--task", "text_classification", "--set", "train.batch_size=8",
        "--set", "model.units=8", "--set", "model.embedding_dim=8", "--set", "model.dense_units=8",
        "--set", "data.vocab_size=64", "--set", "data.sequence_length=12"]


# ---------------------------------------------------------------- processes

def env(extra=None) -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "TPU_NAME")}
    e.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    e.update(extra or {})
    return e


class Proc:
    """`seqtrain ARGS` in a subprocess; stdout/stderr lines collected with their times."""

    def __init__(self, cwd, args, extra_env=None):
        self.args = list(args)
        self.t0 = time.monotonic()
        self.p = subprocess.Popen([sys.executable, "-m", "trainer.cli", *args], cwd=cwd,
                                  env=env(extra_env), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        self.pid = self.p.pid
        self.lines: list[tuple[float, str, str]] = []
        self.exit_time = None
        self._readers = [threading.Thread(target=self._read, args=(s, n), daemon=True)
                         for s, n in ((self.p.stdout, "out"), (self.p.stderr, "err"))]
        for t in self._readers:
            t.start()

    def _read(self, stream, name):
        for line in stream:
            self.lines.append((time.monotonic() - self.t0, name, line.rstrip("\n")))

    def wait(self, timeout=900) -> int:
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = self.p.wait()
            self.lines.append((time.monotonic() - self.t0, "err", f"chaos: killed after {timeout} s"))
        if self.exit_time is None:
            self.exit_time = time.monotonic() - self.t0
        for t in self._readers:
            t.join(timeout=10)
        return rc

    def text(self, name=None) -> str:
        return "\n".join(l for _, n, l in self.lines if name in (None, n))

    def find(self, needle, name=None):
        return next(((t, l) for t, n, l in list(self.lines) if needle in l and name in (None, n)),
                    None)

    def wait_for(self, needle, timeout=300) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.find(needle):
                return True
            if self.p.poll() is not None:
                time.sleep(0.2)
                return bool(self.find(needle))
            time.sleep(0.05)
        return False

    def tail(self, n=8) -> str:
        return "\n".join(l for _, _, l in self.lines[-n:])


def run(cwd, args, extra_env=None, timeout=900):
    p = Proc(cwd, args, extra_env)
    rc = p.wait(timeout)
    return rc, p


# ---------------------------------------------------------------- checkpoints

def variables(prefix) -> dict:
    import tensorflow as tf
    reader = tf.train.load_checkpoint(str(prefix))
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
            if not n.startswith(SKIP)}


def bitwise(a, b) -> str | None:
    """None when the two checkpoints (or exports) hold identical bytes, else why not."""
    try:
        va, vb = variables(a), variables(b)
    except Exception as e:  # noqa: BLE001 (the report names the reader error)
        return f"unreadable: {type(e).__name__}: {str(e)[:200]}"
    if va.keys() != vb.keys():
        return f"different variables: {sorted(set(va) ^ set(vb))[:5]}"
    diff = [n for n in va if va[n].tobytes() != vb[n].tobytes()]
    return f"{len(diff)} of {len(va)} variables differ, e.g. {diff[:3]}" if diff else None


def compare_run(ref_dir, dir_, step, export=True) -> str | None:
    why = bitwise(os.path.join(ref_dir, "checkpoints", f"ckpt-{step}"),
                  os.path.join(dir_, "checkpoints", f"ckpt-{step}"))
    if why is None and export:
        why = same_tensors(os.path.join(ref_dir, "export", "variables", "variables"),
                           os.path.join(dir_, "export", "variables", "variables"))
        why = why and f"export: {why}"
    return why


def same_tensors(a, b) -> str | None:
    """None when two SavedModels' variables hold the same tensors. An export names its
    variables `_all_variables/N` in an order that differs from process to process, so the
    tensors are compared as a multiset of (dtype, shape, bytes)."""
    try:
        va, vb = variables(a), variables(b)
    except Exception as e:  # noqa: BLE001
        return f"unreadable: {type(e).__name__}: {str(e)[:200]}"

    def digests(v):
        return sorted(hashlib.sha256(f"{t.dtype}{t.shape}".encode() + t.tobytes()).hexdigest()
                      for t in v.values())
    da, db = digests(va), digests(vb)
    return None if da == db else f"{len(set(da) ^ set(db))} tensors differ of {len(da)}"


def latest_step(ckpt_dir) -> int | None:
    steps = [int(f[5:-6]) for f in os.listdir(ckpt_dir)
             if f.startswith("ckpt-") and f.endswith(".index")] if os.path.isdir(ckpt_dir) else []
    return max(steps) if steps else None


def tree_hash(root) -> str:
    h = hashlib.sha256()
    for dirpath, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            h.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def resume_until_done(cwd, model_dir, full_args, attempts=3):
    """Reruns with only --model-dir (the full command if nothing was written) until exit 0."""
    rcs = []
    for _ in range(attempts):
        only_dir = os.path.exists(os.path.join(cwd, model_dir, "config.yaml"))
        args = ["train", "--model-dir", model_dir] + ([] if only_dir else full_args)
        rc, p = run(cwd, args)
        rcs.append(rc)
        if rc == 0:
            return rcs, p, only_dir
    return rcs, p, only_dir


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


# ---------------------------------------------------------------- a. kill -9

def fs_phase(model_dir) -> str | None:
    try:
        if any(n.startswith("export.tmp-") for n in os.listdir(model_dir)):
            return "export"
        ck = os.path.join(model_dir, "checkpoints")
        if os.path.isdir(ck) and any("_temp" in n or ".tmp" in n for n in os.listdir(ck)):
            return "save"
    except FileNotFoundError:
        pass
    return None


def out_phase(proc, model_dir, total=40, every_eval=20, every_ckpt=10) -> str:
    lines = [l for _, n, l in list(proc.lines) if n == "out"]
    if not any(l.startswith("seqtrain: text_classification in") for l in lines):
        return "startup"
    if any(l.startswith("Run text_classification finished") for l in lines):
        return "finished"
    marks = [l for l in lines if l.startswith(("step ", "eval @ step "))]
    if not marks:
        return "train (first loop)"
    last = marks[-1]
    n = int(last.split("step ")[1].split("/")[0].split(":")[0])
    saved = os.path.exists(os.path.join(model_dir, "checkpoints", f"ckpt-{n}.index"))
    if last.startswith("step ") and (n % every_eval == 0 or n == total):
        return "eval"
    if (n % every_ckpt == 0 or n == total) and not saved:
        return "save"
    return "export" if n == total else "train"


def scenario_a(work, trials, seed, targeted, quick):
    rng = random.Random(seed)
    args = TC_TINY if quick else TC
    results = []
    t = time.monotonic()
    rc, ref = run(work, ["train", "--model-dir", os.path.join(work, "ref"), *args])
    wall = time.monotonic() - t
    if rc != 0:
        return [{"trial": "reference", "ok": False, "outcome": f"reference exit {rc}",
                 "detail": ref.tail()}]
    rel_forms = ["runs/x{}", "./x{}", "../x{}"]
    kinds = ["uniform"] * trials + ["save", "export"][:targeted]
    for i, kind in enumerate(kinds):
        cwd = os.path.join(work, f"t{i}", "cwd")
        os.makedirs(cwd)
        model_dir = rel_forms[(i // 2) % 3].format(i) if i % 2 else os.path.join(work, f"t{i}", "abs")
        mdir = os.path.join(cwd, model_dir)
        kill_at = rng.uniform(0.0, wall) if kind == "uniform" else None
        p = Proc(cwd, ["train", "--model-dir", model_dir, *args])
        phase_fs = None
        while p.p.poll() is None:
            el = time.monotonic() - p.t0
            phase_fs = fs_phase(mdir)
            if (kind == "uniform" and el >= kill_at) or (kind != "uniform" and phase_fs == kind):
                break
            time.sleep(0.002)
        killed = p.p.poll() is None
        phase = phase_fs or out_phase(p, mdir)
        if killed:
            p.p.kill()
        rc = p.wait()
        at = p.exit_time
        rcs, res, only_dir = resume_until_done(cwd, model_dir, args)
        why = compare_run(os.path.join(work, "ref"), mdir, 40) if rcs[-1] == 0 else "resume failed"
        leftovers = [n for n in os.listdir(mdir) if ".tmp-" in n] if os.path.isdir(mdir) else []
        resumed = res.find("resumed from")
        if not resumed and res.exit_time and rcs == [0]:
            # A rerun from step 0 is a whole run under the current load: kill moments are
            # drawn over that wall time (other jobs on a shared machine slow runs down).
            wall = res.exit_time
        ok = why is None and not leftovers and (not killed or rc == -9)
        results.append({
            "trial": i, "kind": kind, "model_dir": model_dir, "kill_at_s": round(at, 2),
            "wall_estimate_s": round(wall, 1),
            "phase": phase if killed else "finished before the kill", "killed_rc": rc,
            "resume_rcs": rcs, "resumed_with_only_model_dir": only_dir,
            "resumed_line": resumed[1] if resumed else None, "leftovers": leftovers,
            "bitwise": why is None, "ok": ok,
            "outcome": "bitwise equal" if ok else (why or f"leftovers {leftovers}"),
            "detail": None if ok else res.tail(12)})
        print(f"  a[{i}] {kind:7s} {model_dir:28s} kill@{at:5.1f}s {results[-1]['phase']:18s} "
              f"resume {rcs} -> {results[-1]['outcome']}", flush=True)
    for r in results:
        r["reference_wall_s"] = round(wall, 1)
    return results


# ---------------------------------------------------------------- b. corruption

def _corrupt(case, mdir):
    ck = os.path.join(mdir, "checkpoints")
    newest = f"ckpt-{latest_step(ck)}"
    index = os.path.join(ck, newest + ".index")
    state = os.path.join(ck, "checkpoint")
    if case == "deleted .data":
        os.remove(os.path.join(ck, newest + ".data-00000-of-00001"))
    elif case == "truncated .index":
        data = open(index, "rb").read()
        open(index, "wb").write(data[: len(data) // 2])
    elif case == "emptied .index":
        open(index, "wb").close()
    elif case == "garbage .index":
        open(index, "wb").write(os.urandom(777))
    elif case == "truncated .data":
        d = os.path.join(ck, newest + ".data-00000-of-00001")
        data = open(d, "rb").read()
        open(d, "wb").write(data[:100])
    elif case == "emptied state file":
        open(state, "w").close()
    elif case == "garbage state file":
        open(state, "wb").write(b"\x00\xffnot a proto {{{" + os.urandom(64))
    elif case == "state file names a missing checkpoint":
        open(state, "w").write('model_checkpoint_path: "ckpt-99"\n'
                               'all_model_checkpoint_paths: "ckpt-99"\n')
    elif case == "checkpoints/ emptied, progress recorded":
        for f in os.listdir(ck):
            os.remove(os.path.join(ck, f))
    elif case == "all checkpoints corrupt":
        for f in os.listdir(ck):
            if f.endswith(".index"):
                open(os.path.join(ck, f), "wb").write(b"garbage")


CASES = ["deleted .data", "truncated .data", "truncated .index", "emptied .index",
         "garbage .index", "emptied state file", "garbage state file",
         "state file names a missing checkpoint", "checkpoints/ emptied, progress recorded",
         "all checkpoints corrupt"]


def scenario_b(work, quick):
    base_args = [*TINY, "--set", "train.steps=16", "--set", "train.steps_per_loop=2",
                 "--set", "train.checkpoint_every=4", "--set", "train.eval_every=1000",
                 "--set", "train.eval_batches=1"]
    rc, p = run(work, ["train", "--model-dir", "base", *base_args, "--stop-at", "12"])
    if rc != 0:
        return [{"trial": "base", "ok": False, "outcome": f"base run exit {rc}", "detail": p.tail()}]
    results = []
    for i, case in enumerate(CASES[:4] + CASES[-2:] if quick else CASES):
        name = f"c{i}"
        shutil.copytree(os.path.join(work, "base"), os.path.join(work, name))
        _corrupt(case, os.path.join(work, name))
        before = tree_hash(os.path.join(work, name))
        rc, p = run(work, ["train", "--model-dir", name, "--stop-at", "14"])
        resumed = p.find("resumed from")
        step = int(resumed[1].rsplit("at step ", 1)[1]) if resumed else 0
        warned = p.find("is unreadable") or p.find("Warning") or p.find("warning")
        errors = [l for _, n, l in p.lines if n == "err" and l.startswith("Error: ")]
        unchanged = tree_hash(os.path.join(work, name)) == before
        if rc == 0 and step > 0:
            outcome, ok = f"fell back: resumed at step {step}" + (" (warned)" if warned else ""), True
        elif rc == 2:
            outcome = "exit 2" + ("" if unchanged else " BUT the model dir changed")
            ok = unchanged and "Traceback" not in p.text("err") and len(errors) == 1
        elif rc == 0:
            outcome, ok = "SILENT RESTART from step 0", False
        else:
            outcome, ok = f"exit {rc}", False
        results.append({"trial": case, "rc": rc, "resumed_step": step, "warned": bool(warned),
                        "error": errors[0][:400] if errors else None,
                        "warning": warned[1][:300] if warned else None,
                        "ok": ok, "outcome": outcome, "detail": None if ok else p.tail(10)})
        print(f"  b {case:42s} -> {outcome}", flush=True)
    return results


# ---------------------------------------------------------------- c. two writers

def scenario_c(work, quick):
    args = [*TC, "--set", f"train.steps={200 if quick else 400}", "--set",
            "train.checkpoint_every=50", "--set", "train.eval_every=100"]
    total = 200 if quick else 400
    first = Proc(work, ["train", "--model-dir", "runs/shared", *args])
    first.wait_for("seqtrain: text_classification in")
    t = time.monotonic()
    rc2, second = run(work, ["train", "--model-dir", "runs/shared", *args])
    second_s = time.monotonic() - t
    first_alive = first.p.poll() is None
    rc1 = first.wait()
    rc_solo, solo = run(work, ["train", "--model-dir", "runs/solo", *args])
    why = compare_run(os.path.join(work, "runs/solo"), os.path.join(work, "runs/shared"), total)
    err = [l for _, n, l in second.lines if n == "err" and l.startswith("Error: ")]
    ok = rc2 == 2 and first_alive and rc1 == 0 and rc_solo == 0 and why is None
    out = {"trial": "two writers", "second_rc": rc2, "second_exit_s": round(second_s, 1),
           "first_still_running_when_second_exited": first_alive, "first_rc": rc1,
           "second_error": err[0][:400] if err else None, "bitwise_vs_solo": why is None,
           "ok": ok, "outcome": f"second exit {rc2} after {second_s:.1f} s; first "
                               + ("bitwise = solo" if why is None else why)}
    print(f"  c {out['outcome']}", flush=True)
    return [out]


# ---------------------------------------------------------------- d/e. signals

def signal_trial(work, name, sig, base_args, rng, window, compare, grace=25.0,
                 during_compile=False):
    p = Proc(work, ["train", "--model-dir", f"runs/{name}", *base_args])
    # The first "step N/" line: training started (the first compiled loop, traced and
    # compiled, is done). A signal during that first compile: see --during-compile.
    if not p.wait_for(" in runs/" if during_compile else "step ", timeout=900):
        return {"trial": name, "ok": False, "outcome": "did not start", "detail": p.tail()}
    time.sleep(rng.uniform(*window))
    last = [l for _, n, l in list(p.lines) if n == "out" and l.startswith("step ")]
    sent = time.monotonic()
    p.p.send_signal(sig)
    rc = p.wait(timeout=120)
    took = time.monotonic() - sent
    k = latest_step(os.path.join(work, f"runs/{name}", "checkpoints"))
    code = 128 + sig
    r = {"trial": name, "signal": signal.Signals(sig).name, "during_first_compile": during_compile,
         "rc": rc, "exit_after_signal_s":
         round(took, 2), "last_step_line_before": last[-1] if last else None,
         "checkpoint_step": k, "traceback": "Traceback" in p.text("err"),
         "message": (p.find("checkpoint saved at step") or (0, None))[1]}
    ok = rc == code and took < grace and k is not None and not r["traceback"]
    outcome = f"exit {rc} in {took:.1f} s, checkpoint at step {k}"
    if ok and compare:
        stop = k + 3
        rcr, res = run(work, ["train", "--model-dir", f"runs/{name}", "--stop-at", str(stop)])
        rcs, straight = run(work, ["train", "--model-dir", f"runs/{name}-straight", *base_args,
                                   "--stop-at", str(stop)])
        why = (compare_run(os.path.join(work, f"runs/{name}-straight"),
                           os.path.join(work, f"runs/{name}"), stop, export=False)
               if rcr == rcs == 0 else f"resume exit {rcr}, straight exit {rcs}")
        r["resume_bitwise_at"] = stop
        r["bitwise"] = why is None
        ok = why is None
        outcome += f"; resumed to {stop}: " + ("bitwise" if ok else why)
    r.update(ok=ok, outcome=outcome, detail=None if ok else p.tail(10))
    print(f"  {name}: {outcome}", flush=True)
    return r


def scenario_d(work, trials, seed, during_compile):
    rng = random.Random(seed)
    return [signal_trial(work, f"term{i}", signal.SIGTERM, ["--task", "text_generation"], rng,
                         (1.0, 12.0) if during_compile else (0.0, 20.0), compare=True,
                         during_compile=during_compile) for i in range(trials)]


def scenario_e(work, trials, seed):
    rng = random.Random(seed + 1)
    args = [*TC, "--set", "train.steps=100000", "--set", "train.steps_per_loop=1000",
            "--set", "train.checkpoint_every=100000", "--set", "train.eval_every=100000"]
    return [signal_trial(work, f"int{i}", signal.SIGINT, args, rng, (0.0, 8.0), compare=False)
            for i in range(trials)]


# ---------------------------------------------------------------- f. lost workers

def children(pid) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(c) for c in f.read().split()]
    return out


def worker_index(pid) -> int | None:
    try:
        environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return None
    for kv in environ:
        if kv.startswith(b"TF_CONFIG="):
            return json.loads(kv[10:])["task"]["index"]
    return None


def alive(pid) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


F_ARGS = [*TINY, "--set", "train.steps=60", "--set", "train.steps_per_loop=2",
          "--set", "train.checkpoint_every=20", "--set", "train.eval_every=40",
          "--set", "train.log_every=2", "--set", "train.eval_batches=0"]


def launch_trial(work, name, when):
    """A 2-worker launch; one worker killed -9 during `when` (step, eval, save)."""
    mdir = os.path.join(work, "runs", name)
    p = Proc(work, ["launch", "--workers", "2", "--", "train", "--model-dir", f"runs/{name}", *F_ARGS])
    workers = {}
    deadline = time.monotonic() + 600
    while not {0, 1} <= set(workers) and time.monotonic() < deadline and p.p.poll() is None:
        workers = {worker_index(c): c for c in children(p.pid)}  # also a log filter: None
        time.sleep(0.2)
    victim = workers.get(1 if when != "save" else 0)
    hit = None
    while p.p.poll() is None and time.monotonic() < deadline and victim:
        outs = [l for _, n, l in list(p.lines) if l.startswith("[worker-0] ")]
        steps = [l for l in outs if l.startswith("[worker-0] step ")]
        evals = [l for l in outs if "eval @ step" in l]
        if when == "step" and len(steps) >= 3:
            hit = f"after {steps[-1][11:40]!r}"
        elif when == "eval" and any(l.startswith("[worker-0] step 40/") for l in steps):
            hit = "eval at step 40" if not evals else "eval finished before the kill"
        elif when == "save" and fs_phase(mdir) == "save":
            hit = "chief writing ckpt temp files"
        if hit:
            break
        time.sleep(0.002 if when == "save" else 0.05)
    if not hit:
        rc = p.wait()
        return {"trial": name, "ok": False, "outcome": f"no {when} window caught (launch exit {rc})",
                "detail": p.tail(12)}
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    rc = p.wait(timeout=180)
    launch_s = time.monotonic() - killed_at
    while any(alive(w) for w in workers.values()) and time.monotonic() - killed_at < 120:
        time.sleep(0.1)
    all_s = time.monotonic() - killed_at
    survivor = [l for _, _, l in p.lines if l.startswith("[launch] ")]
    rcs = []
    for _ in range(3):
        rcr, res = run(work, ["launch", "--workers", "2", "--", "train", "--model-dir", f"runs/{name}"])
        rcs.append(rcr)
        if rcr == 0:
            break
    rerun_errors = [l for _, _, l in res.lines if "Error" in l or "Traceback" in l][-3:]
    why = compare_run(os.path.join(work, "runs/f-ref"), mdir, 60) if rcs[-1] == 0 else "rerun failed"
    ok = rc == 144 and all_s <= 30 and why is None
    out = {"trial": name, "killed": f"worker-{1 if when != 'save' else 0}", "during": hit,
           "launch_rc": rc, "launch_exit_s": round(launch_s, 1), "all_exited_s": round(all_s, 1),
           "launch_lines": survivor, "rerun_rcs": rcs, "rerun_errors": rerun_errors, "bitwise": why is None, "ok": ok,
           "outcome": f"launch {rc} in {launch_s:.1f} s, all gone in {all_s:.1f} s; rerun "
                      + ("bitwise" if why is None else why),
           "detail": None if ok else p.tail(15) + "\n--- rerun ---\n" + res.tail(8)}
    print(f"  f {name} ({hit}): {out['outcome']}", flush=True)
    return out


def raw_tf_config_trial(work):
    """Two workers started by hand with TF_CONFIG; worker 1 killed -9 mid-step."""
    ports = free_ports(2)
    args = ["train", "--model-dir", "runs/raw", *F_ARGS, "--set", "train.steps=100000"]
    ps = [Proc(work, args, {"TF_CONFIG": tf_config(ports, i)}) for i in range(2)]
    started = ps[0].wait_for("step ", timeout=600)
    time.sleep(2)
    killed_at = time.monotonic()
    ps[1].p.kill()
    try:
        rc = ps[0].p.wait(timeout=300)
    except subprocess.TimeoutExpired:
        ps[0].p.kill()
        rc = "still running after 300 s (killed)"
    took = time.monotonic() - killed_at
    ps[0].wait()
    ps[1].wait()
    last = [l for _, n, l in ps[0].lines if n == "err"][-3:]
    ok = started and rc == 144
    out = {"trial": "raw TF_CONFIG, worker-1 killed mid-step", "survivor_rc": rc,
           "survivor_exit_s": round(took, 1), "survivor_last_stderr": last, "ok": ok,
           "traceback": "Traceback" in ps[0].text("err"),
           "outcome": f"survivor exit {rc} after {took:.1f} s", "detail": None if ok else ps[0].tail(10)}
    print(f"  f raw: {out['outcome']}", flush=True)
    return out


def scenario_f(work, quick):
    rc, ref = run(work, ["launch", "--workers", "2", "--", "train", "--model-dir", "runs/f-ref", *F_ARGS])
    if rc != 0:
        return [{"trial": "f reference", "ok": False, "outcome": f"exit {rc}", "detail": ref.tail(15)}]
    results = [launch_trial(work, f"f-{w}", w) for w in (["step"] if quick else ["step", "eval", "save"])]
    results.append(raw_tf_config_trial(work))
    return results


# ---------------------------------------------------------------- g. peer never starts

def scenario_g(work, wait_secs=20):
    ports = free_ports(2)
    p = Proc(work, ["train", "--model-dir", "runs/alone", *TINY, "--set", "train.steps=10",
                    "--set", f"runtime.cluster_wait_secs={wait_secs}"], {"TF_CONFIG": tf_config(ports, 0)})
    rc = p.wait(timeout=wait_secs * 10)
    waits = [(round(t, 1), l) for t, _, l in p.lines if "waiting for workers" in l]
    took = p.exit_time
    ok = rc == 144 and wait_secs <= took <= wait_secs + 40 and len(waits) >= 2
    out = {"trial": f"cluster_wait_secs={wait_secs}", "rc": rc, "exit_s": round(took, 1),
           "waiting_lines": waits[:8], "last_stderr": [l for _, n, l in p.lines if n == "err"][-2:],
           "ok": ok, "outcome": f"exit {rc} after {took:.1f} s with {len(waits)} waiting line(s)",
           "detail": None if ok else p.tail(10)}
    print(f"  g {out['outcome']}", flush=True)
    return [out]


# ---------------------------------------------------------------- h. disk full

def scenario_h(work):
    if os.geteuid() != 0:
        return [{"trial": "tmpfs", "ok": False, "outcome": "not run: mounting a tmpfs needs root"}]
    args = [*TINY, "--set", "train.steps=40", "--set", "train.steps_per_loop=2",
            "--set", "train.checkpoint_every=4", "--set", "train.eval_every=1000",
            "--set", "train.eval_batches=1", "--set", "train.keep_checkpoints=10"]
    rc, _ = run(work, ["train", "--model-dir", "probe", *args, "--stop-at", "4"])
    probe = os.path.join(work, "probe")
    used = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(probe) for f in fs)
    ck = os.path.join(probe, "checkpoints")
    ckpt = sum(os.path.getsize(os.path.join(ck, f)) for f in os.listdir(ck) if f.startswith("ckpt-4."))
    mnt = os.path.join(work, "small")
    os.makedirs(mnt)
    size_kib = (used + ckpt // 2) // 1024 + 64
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", mnt], check=True)
    try:
        rc, p = run(work, ["train", "--model-dir", "small/run", *args])
        import tensorflow as tf
        saved = tf.train.latest_checkpoint(os.path.join(mnt, "run/checkpoints"))
        readable = None
        try:
            readable = saved is not None and bool(variables(saved))
        except Exception as e:  # noqa: BLE001
            readable = f"{type(e).__name__}"
        errors = [l for _, n, l in p.lines if n == "err" and l.startswith("Error: ")]
        ok = (rc == 2 and bool(errors) and "small/run" in errors[0] and "MiB free" in errors[0]
              and readable is True and "Traceback" not in p.text("err"))
        out = {"trial": f"tmpfs {size_kib} KiB", "rc": rc, "error": errors[0][:500] if errors else None,
               "older_checkpoint": saved and os.path.basename(saved), "readable": readable,
               "ok": ok, "outcome": f"exit {rc}, kept {saved and os.path.basename(saved)} "
                                    f"(readable: {readable})", "detail": None if ok else p.tail(10)}
    finally:
        subprocess.run(["umount", mnt], check=True)
    print(f"  h {out['outcome']}", flush=True)
    return [out]


# ---------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--scenarios", default="a,b,c,d,e,f,g,h",
                    help="comma-separated scenario letters (default: all)")
    ap.add_argument("--quick", action="store_true",
                    help="short form: fewer trials and cases, no targeted kills")
    ap.add_argument("--trials", type=int, default=None,
                    help="random-moment kill trials for a (default 20; quick 3); "
                         "SIGTERM trials for d max(1, trials // 20), SIGINT trials for e max(1, trials // 10)")
    ap.add_argument("--seed", type=int, default=11, help="seed of the kill moments")
    ap.add_argument("--out", required=True, help="JSON results file")
    ap.add_argument("--during-compile", action="store_true",
                    help="d: send SIGTERM during the first compiled loop's tracing (a step that "
                         "may not fit in the grace) instead of after training started")
    ap.add_argument("--keep", action="store_true", help="keep the temporary working dirs")
    a = ap.parse_args(argv)
    wanted = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    bad = [s for s in wanted if s not in "abcdefgh" or len(s) != 1]
    if bad:
        ap.error(f"--scenarios: unknown {bad}; expected letters a-h, e.g. a,b,c")
    trials = a.trials if a.trials is not None else (3 if a.quick else 20)
    root = tempfile.mkdtemp(prefix="seqtrain-chaos-")
    results, timings = {}, {}
    try:
        for s in wanted:
            work = os.path.join(root, s)
            os.makedirs(work)
            print(f"scenario {s} ...", flush=True)
            t = time.monotonic()
            results[s] = {
                "a": lambda: scenario_a(work, trials, a.seed, 0 if a.quick else 2, a.quick),
                "b": lambda: scenario_b(work, a.quick),
                "c": lambda: scenario_c(work, a.quick),
                "d": lambda: scenario_d(work, max(1, trials // 20), a.seed, a.during_compile),
                "e": lambda: scenario_e(work, max(1, trials // 10), a.seed),
                "f": lambda: scenario_f(work, a.quick),
                "g": lambda: scenario_g(work),
                "h": lambda: scenario_h(work),
            }[s]()
            timings[s] = round(time.monotonic() - t, 1)
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "quick": a.quick,
              "seed": a.seed, "machine": _machine(), "seconds": timings, "results": results}
    with open(a.out, "w") as f:
        json.dump(report, f, indent=1, default=str)
    print(f"\n{'scenario':9s} {'trials':>6s} {'ok':>4s} {'failed':>6s} {'secs':>7s}  outcomes")
    failed = 0
    for s, rs in results.items():
        bad = [r for r in rs if not r["ok"]]
        failed += len(bad)
        outcomes = sorted({str(r["outcome"]) for r in rs})
        print(f"{s:9s} {len(rs):6d} {len(rs) - len(bad):4d} {len(bad):6d} {timings[s]:7.1f}  "
              f"{'; '.join(outcomes)[:160]}")
    print(f"JSON: {a.out}")
    return 1 if failed else 0


def _machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        keep = ("Model name", "CPU(s):", "Thread(s) per core")
        return "; ".join(" ".join(l.split()) for l in out.splitlines() if l.startswith(keep))
    except OSError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
