"""Google Cloud Storage tools for the jobs TF's gs:// filesystem does badly.

TF's filesystem is right for checkpoints and event files, but it cannot tell
"no credentials" from "no bucket" from "no permission" quickly (it retries
for minutes), and it lists a bucket one directory level per request. These
helpers use the `google-cloud-storage` client instead:

- `preflight`: fail in seconds, with a fix, before a job starts training;
- `list_runs`: the seqtrain runs under a local or gs:// prefix;
- `stage`: upload a local file to gs:// with a verified checksum.

The client honours `STORAGE_EMULATOR_HOST` (tests point it at an emulator,
see tests/gcs_emulator.py); then no credentials are needed.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import logging
import os
import posixpath
import re
import uuid

import yaml

from trainer import storage
from trainer.errors import UserError
from trainer.run_dir import CHECKPOINTS, CONFIG, METRICS, RUNTIME

log = logging.getLogger(__name__)

# Per request: (connect, read) seconds. Preflight must answer within seconds.
REQUEST_TIMEOUT = (3.05, 10.0)
# Preflight's total time per call, retries included.
PREFLIGHT_DEADLINE_SECS = 12.0
_SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"
_CKPT_INDEX = re.compile(rf"^(.*?){CHECKPOINTS}/ckpt-(\d+)\.index$")


def split_uri(uri: str) -> tuple[str, str]:
    """Splits `gs://bucket/some/name` into `("bucket", "some/name")`."""
    if not str(uri).startswith("gs://"):
        raise UserError(f"expected a gs://BUCKET/PATH URI, got {uri!r}.")
    bucket, _, name = uri[len("gs://"):].partition("/")
    if not bucket:
        raise UserError(f"{uri!r} names no bucket; expected gs://BUCKET/PATH.")
    return bucket, name


# ---------------------------------------------------------------- preflight
def preflight(paths: list[str], need_write: list[str] = ()) -> None:
    """Checks, within seconds, that a job will be able to use its gs:// paths.

    For every bucket named by a gs:// path in `paths` or `need_write`: the
    credentials load and work, the bucket exists and can be read. For every
    path in `need_write`, a small marker object is written under it and
    deleted again. Local paths are ignored. Runs on the chief, before training.

    Raises:
      UserError: naming the bucket and the likely fix (create the bucket or
        fix its name, grant a role, or set up credentials).
    """
    remote = [p for p in [*paths, *need_write] if str(p).startswith("gs://")]
    if not remote:
        return
    client, principal = _client(remote)
    checked: set[str] = set()
    for path in remote:
        bucket, _ = split_uri(path)
        if bucket not in checked:
            _check_readable(client, bucket, path, principal)
            checked.add(bucket)
    for path in dict.fromkeys(p for p in need_write if str(p).startswith("gs://")):
        _check_writable(client, path, principal)


def _client(paths: list[str]):
    """A storage client with short retries, and a name for its principal."""
    from google.cloud import storage as gcs_storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return gcs_storage.Client(), "the emulator's anonymous user"
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, project = google.auth.default(scopes=[_SCOPE])
    except DefaultCredentialsError as e:
        raise UserError(
            f"no usable Google Cloud credentials for {', '.join(dict.fromkeys(paths))}: {e} "
            "On a workstation run `gcloud auth application-default login`; in a job, "
            "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or run "
            "on a VM or pod that has a service account attached (Workload Identity)."
        ) from None
    principal = getattr(credentials, "service_account_email", None) or "these credentials"
    return gcs_storage.Client(project=project, credentials=credentials), principal


def _retry():
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_delay(initial=0.2, maximum=1.0).with_timeout(
        PREFLIGHT_DEADLINE_SECS / 2
    )


def _check_readable(client, bucket: str, path: str, principal: str) -> None:
    from google.api_core import exceptions as gexc

    def read():
        try:
            client.get_bucket(bucket, timeout=REQUEST_TIMEOUT, retry=_retry())
        except gexc.Forbidden:
            # roles/storage.objectAdmin has no storage.buckets.get: listing
            # is what a training job actually needs.
            blobs = client.list_blobs(
                bucket, max_results=1, timeout=REQUEST_TIMEOUT, retry=_retry())
            next(iter(blobs), None)

    try:
        _explained(read, bucket, path, principal, "read")
    except _Transient as e:
        log.warning("preflight could not check gs://%s (%s); going on", bucket, e)


def _check_writable(client, path: str, principal: str) -> None:
    from google.api_core import exceptions as gexc

    bucket, prefix = split_uri(path)
    name = posixpath.join(prefix.rstrip("/"), f".seqtrain-preflight-{uuid.uuid4().hex}")
    blob = client.bucket(bucket).blob(name.lstrip("/"))

    def write():
        try:
            blob.upload_from_string(
                b"seqtrain preflight: safe to delete\n",
                if_generation_match=0,
                timeout=REQUEST_TIMEOUT,
                retry=_retry(),
            )
        except gexc.PreconditionFailed:
            pass  # an earlier attempt of this same upload succeeded
        try:
            blob.delete(timeout=REQUEST_TIMEOUT, retry=_retry())
        except gexc.NotFound:
            pass
        except gexc.Forbidden as e:
            raise UserError(
                f"{principal} can create objects in gs://{bucket} but not delete them "
                f"({_reason(e)}). seqtrain deletes old checkpoints and rewrites files, so "
                f"grant roles/storage.objectAdmin on the bucket: `gcloud storage buckets "
                f"add-iam-policy-binding gs://{bucket} "
                f"--member=serviceAccount:{_member(principal)} "
                f"--role=roles/storage.objectAdmin`. (Left behind: gs://{bucket}/{blob.name})"
            ) from None

    try:
        _explained(write, bucket, path, principal, "write")
    except _Transient as e:
        log.warning("preflight could not test writing to %s (%s); going on", path, e)


class _Transient(Exception):
    """GCS could not be reached or kept failing: not the user's mistake."""


def _explained(fn, bucket: str, path: str, principal: str, access: str):
    """Runs `fn`, turning GCS answers into UserErrors that say what to do."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    try:
        return fn()
    except gexc.NotFound:
        raise UserError(
            f"GCS bucket gs://{bucket} does not exist (needed for {path}). Check the bucket "
            f"name and that it is in the project you expect, or create it: `gcloud storage "
            f"buckets create gs://{bucket} --location=REGION` (or `gsutil mb -l REGION "
            f"gs://{bucket}`)."
        ) from None
    except gexc.Forbidden as e:
        role = "roles/storage.objectAdmin" if access == "write" else (
            "roles/storage.objectViewer (roles/storage.objectAdmin if the job also writes there)"
        )
        raise UserError(
            f"{principal} may not {access} {path} in bucket gs://{bucket} ({_reason(e)}). "
            f"Grant it {role} on the bucket: `gcloud storage buckets add-iam-policy-binding "
            f"gs://{bucket} --member=serviceAccount:{_member(principal)} "
            f"--role={role.split()[0]}`, or "
            "use a bucket it can already write to."
        ) from None
    except gexc.Unauthorized as e:
        raise UserError(
            f"GCS rejected the credentials for gs://{bucket} ({_reason(e)}). Run `gcloud auth "
            "application-default login` again, or point GOOGLE_APPLICATION_CREDENTIALS at a "
            "valid service-account key."
        ) from None
    except auth_exc.RefreshError as e:
        raise UserError(
            f"the Google Cloud credentials could not be refreshed ({e}). Run `gcloud auth "
            "application-default login` again, or point GOOGLE_APPLICATION_CREDENTIALS at a "
            "valid service-account key."
        ) from None
    except gexc.BadRequest as e:
        raise UserError(
            f"GCS refused the request for {path}: {_reason(e)}. Check the bucket and object "
            "names (a bucket name is 3-63 lowercase letters, digits, '-', '_' and '.')."
        ) from None
    except (gexc.GoogleAPICallError, gexc.RetryError, auth_exc.TransportError,
            OSError) as e:  # 5xx/429 after retries, timeouts, no network (requests' are OSErrors)
        raise _Transient(f"{type(e).__name__}: {e}") from e


def _member(principal: str) -> str:
    return principal if "@" in principal else "SA_EMAIL"


def _reason(e) -> str:
    """GCS's own one-line reason for an API error, without URL and JSON noise."""
    response = getattr(e, "response", None)
    try:
        return response.json()["error"]["message"].rstrip(".")
    except Exception:  # noqa: BLE001 - no JSON body: fall back to the exception
        pass
    for err in getattr(e, "errors", None) or ():
        if isinstance(err, dict) and err.get("message"):
            return err["message"]
    text = " ".join(str(getattr(e, "message", None) or e).split())
    text = text if len(text) <= 300 else text[:297] + "..."
    return text.rstrip(".")


# ---------------------------------------------------------------- list_runs
def list_runs(prefix: str) -> list[dict]:
    """The seqtrain runs under a local or gs:// `prefix`, sorted by run dir.

    A run is a directory holding `config.yaml`. Each run is a dict with:
      run_dir: its full path; name: its path relative to `prefix` ("." for
      `prefix` itself); task: `task.name` from config.yaml (None if unreadable);
      step: highest N of `checkpoints/ckpt-N.index` (None without checkpoints);
      metrics: `metrics.json`'s metrics ({} if missing); metrics_step: the step
      they were measured at; best: metrics.json's `best` record ({"metric", "value",
      "step"}) or None; config: config.yaml as a dict; updated: newest modification time (aware UTC
      datetime) of config.yaml, checkpoint indexes and metrics.json; error: a
      note when config.yaml or metrics.json could not be read, else None.

    Raises:
      UserError: if `prefix` (a local dir, or a gs:// bucket) does not exist.
    """
    if str(prefix).startswith("gs://"):
        files, read = _gcs_files(prefix)
    else:
        files, read = _local_files(prefix)
    runs = {}
    for rel in files:
        if _is_named(rel, CONFIG):
            run = rel[: -len(CONFIG)]
            runs[run] = {"steps": [], "mtimes": [files[rel]]}
    for rel, mtime in files.items():
        m = _CKPT_INDEX.match(rel)
        if m and m.group(1) in runs:
            runs[m.group(1)]["steps"].append(int(m.group(2)))
            runs[m.group(1)]["mtimes"].append(mtime)
        elif _is_named(rel, METRICS) and rel[: -len(METRICS)] in runs:
            runs[rel[: -len(METRICS)]]["mtimes"].append(mtime)
    return [_describe(prefix, run, info, files, read) for run, info in sorted(runs.items())]


def _describe(prefix: str, run: str, info: dict, files: dict, read) -> dict:
    base = prefix.rstrip("/")
    out = {
        "run_dir": f"{base}/{run.rstrip('/')}" if run else base,
        "name": run.rstrip("/") or ".",
        "task": None,
        "step": max(info["steps"]) if info["steps"] else None,
        "metrics": {},
        "metrics_step": None,
        "best": None,  # metrics.json's "best": {"metric", "value", "step"} when the run keeps one
        "config": {},
        "updated": max(info["mtimes"]),
        "error": None,
    }
    problems = []
    try:
        config = yaml.safe_load(read(run + CONFIG)) or {}
        out["config"] = config if isinstance(config, dict) else {}
        out["task"] = (config.get("task") or {}).get("name")
    except Exception as e:  # noqa: BLE001 - one bad run must not hide the others
        problems.append(f"{CONFIG} unreadable: {e}")
    if out["step"] is None and run + RUNTIME in files:
        # Checkpoints kept outside the model dir (Vertex AI's AIP_CHECKPOINT_DIR): the
        # run's runtime.json records its last checkpoint.
        try:
            last = (json.loads(read(run + RUNTIME)).get("last_checkpoint") or {})
            out["step"] = last.get("step")
        except Exception as e:  # noqa: BLE001
            problems.append(f"{RUNTIME} unreadable: {e}")
    if run + METRICS in files:
        try:
            metrics = json.loads(read(run + METRICS))
            out["metrics"] = dict(metrics.get("metrics") or {})
            out["metrics_step"] = metrics.get("step")
            out["best"] = metrics.get("best") if isinstance(metrics.get("best"), dict) else None
        except Exception as e:  # noqa: BLE001
            problems.append(f"{METRICS} unreadable: {e}")
    out["error"] = "; ".join(problems) or None
    return out


def _is_named(rel: str, base: str) -> bool:
    return rel == base or rel.endswith("/" + base)


def _relevant(rel: str) -> bool:
    return (_is_named(rel, CONFIG) or _is_named(rel, METRICS) or _is_named(rel, RUNTIME)
            or bool(_CKPT_INDEX.match(rel)))


def _gcs_files(prefix: str):
    """{relative name: updated} of the relevant objects, and a reader."""
    from google.api_core import exceptions as gexc

    bucket_name, name = split_uri(prefix)
    name = name.rstrip("/") + "/" if name.strip("/") else ""
    client, principal = _client([prefix])
    files = {}

    def listing():
        for blob in client.list_blobs(
            bucket_name, prefix=name, timeout=REQUEST_TIMEOUT,
            fields="items(name,updated),nextPageToken",
        ):
            rel = blob.name[len(name):]
            if _relevant(rel):
                files[rel] = blob.updated

    try:
        _explained(listing, bucket_name, prefix, principal, "read")
    except _Transient as e:
        raise UserError(f"could not list {prefix}: {e}. Check the network and retry.") from None
    bucket = client.bucket(bucket_name)

    def read(rel: str) -> bytes:
        try:
            return bucket.blob(name + rel).download_as_bytes(timeout=REQUEST_TIMEOUT)
        except gexc.NotFound:
            raise FileNotFoundError(f"gs://{bucket_name}/{name}{rel}") from None

    return files, read


def _local_files(prefix: str):
    # A local directory (gs:// goes to _gcs_files): os.walk, so listing needs no TensorFlow.
    if not storage.isdir(prefix):
        raise UserError(f"no directory {prefix!r} to list runs in; pass a directory that "
                        "holds seqtrain runs (or a gs://BUCKET/PATH).")
    root = prefix.rstrip("/")
    files = {}
    for dirpath, _, names in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        for n in names:
            if _relevant(rel_dir + n):
                mtime_ns = os.stat(os.path.join(dirpath, n)).st_mtime_ns
                files[rel_dir + n] = datetime.datetime.fromtimestamp(
                    mtime_ns / 1e9, tz=datetime.timezone.utc)

    def read(rel: str) -> bytes:
        return storage.read_bytes(storage.join(root, *rel.split("/")))

    return files, read


# -------------------------------------------------------------------- stage
def stage(local_path: str, gs_dest: str) -> dict:
    """Uploads local file `local_path` to `gs_dest` and verifies its checksums.

    A `gs_dest` ending in "/" (or naming only a bucket) gets the file's base
    name appended. The client sends the CRC32C with the upload, so GCS refuses
    corrupted bytes; the stored object's CRC32C and MD5 are then compared with
    the local file's.

    Returns:
      {"uri", "size", "crc32c", "md5", "generation"}; checksums are base64, as
      `gcloud storage objects describe` shows them.

    Raises:
      UserError: the local file is missing, the destination is not gs://, the
        bucket is missing or not writable, or the checksums disagree.
    """
    if storage.is_remote(local_path):
        raise UserError(f"stage uploads a local file, got {local_path!r}. To copy between "
                        "buckets use `gcloud storage cp SRC DEST`.")
    if not os.path.isfile(local_path):
        what = "is a directory" if os.path.isdir(local_path) else "does not exist"
        raise UserError(f"local file {local_path!r} {what}; pass the path of a file to upload.")
    if not str(gs_dest).startswith("gs://"):
        raise UserError(f"the destination must be a gs://BUCKET/PATH URI, got {gs_dest!r}.")
    bucket_name, name = split_uri(gs_dest)
    if not name or name.endswith("/"):
        name += os.path.basename(local_path)
    crc, md5, size = _local_checksums(local_path)
    client, principal = _client([gs_dest])
    blob = client.bucket(bucket_name).blob(name)
    uri = f"gs://{bucket_name}/{name}"

    def upload():
        from google.cloud.storage.retry import DEFAULT_RETRY

        blob.upload_from_filename(local_path, checksum="crc32c", timeout=(3.05, 120),
                                  retry=DEFAULT_RETRY)
        blob.reload(timeout=REQUEST_TIMEOUT)

    try:
        _explained(upload, bucket_name, uri, principal, "write")
    except _Transient as e:
        raise UserError(f"could not upload {local_path} to {uri}: {e}. Check the network "
                        "and run the command again.") from None
    remote_md5 = blob.md5_hash  # None for composite objects; CRC32C always exists
    if blob.crc32c != crc or blob.size != size or (remote_md5 and remote_md5 != md5):
        blob.delete(timeout=REQUEST_TIMEOUT)
        raise UserError(
            f"{uri} does not match {local_path} after upload (size {blob.size} vs {size}, "
            f"crc32c {blob.crc32c} vs {crc}); the object was deleted. Run the command again; "
            "if it keeps failing, check that the file is not being written meanwhile.")
    return {"uri": uri, "size": size, "crc32c": crc, "md5": md5,
            "generation": blob.generation}


def _local_checksums(path: str) -> tuple[str, str, int]:
    import google_crc32c

    crc, md5, size = google_crc32c.Checksum(), hashlib.md5(), 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            crc.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    b64 = lambda digest: base64.b64encode(digest).decode("ascii")  # noqa: E731
    return b64(crc.digest()), b64(md5.digest()), size
