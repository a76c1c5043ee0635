"""Character corpora for language modelling: loading, vocabulary, windows.

A corpus comes from one explicit source (`data.source`):

  * `bundled`: a small public-domain text shipped in `trainer/data/bundled/`
    (`corpus_<name>.txt`; each has a `corpus_<name>.source` note saying where
    the text comes from). `sonnets` is Shakespeare's Sonnets 1-60 (first
    printed 1609; public domain everywhere).
  * `file`: a text file, local or `gs://` (read through `tf.io.gfile`).
  * `url`: an https file downloaded with `requests` into a cache directory,
    with retries, a size limit and a SHA-256 recorded at the first download and
    re-checked on every reuse (plain http only with `data.allow_http`).

Characters are Unicode code points mapped to integer ids by `CharVocab`
(0 = padding, 1 = out-of-vocabulary). The encoded corpus is one small integer
array (1 byte per character for vocabularies up to 256), and training windows
are slices of it made inside `tf.data`, so memory stays O(corpus size) instead
of the O(corpus x window x vocab) of one-hot arrays.

TensorFlow is imported only by the functions that use it: `seqtrain prepare`
(trainer/data/prepare_chars.py) reads, fits and encodes without it.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import posixpath
import re
import time
import uuid
from typing import TYPE_CHECKING

import numpy as np

from trainer import storage
from trainer.errors import DataError
from trainer.redact import REDACTED, redact

if TYPE_CHECKING:  # imported where used: see the module docstring
    import tensorflow as tf

    from trainer.data import sampling

log = logging.getLogger(__name__)

PAD_ID = 0
OOV_ID = 1
_RESERVED = 2  # ids below this are not characters

_BUNDLED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bundled")
_ENCODE_CHUNK = 1 << 20  # characters encoded per numpy pass (bounds peak memory)


# ----------------------------------------------------------------------------
# Sources.
# ----------------------------------------------------------------------------


def bundled_names() -> list[str]:
    """Names of the bundled corpora (`corpus_<name>.txt`)."""
    return sorted(
        f[len("corpus_"):-len(".txt")]
        for f in os.listdir(_BUNDLED_DIR)
        if f.startswith("corpus_") and f.endswith(".txt")
    )


def read_bundled(name: str) -> str:
    """Text of a bundled corpus."""
    if name not in bundled_names():
        raise DataError(
            f"data.bundled_name={name!r} is not a bundled corpus. "
            f"Available: {', '.join(bundled_names()) or '(none)'}."
        )
    return decode(storage.read_bytes(os.path.join(_BUNDLED_DIR, f"corpus_{name}.txt")),
                  "utf-8", f"bundled corpus {name!r}")


def read_file(path: str, encoding: str = "utf-8", key: str = "data.path") -> str:
    """Text of a local or gs:// file.

    Raises:
      DataError: the file is missing, a directory, empty or not `encoding`.
    """
    if not path:
        raise DataError(f"{key} is empty; set it to a text file (local path or gs://).")
    data = storage.read_input(path, f"{key}={path!r}", error=DataError,
                              missing="Point it at a text file.",
                              directory="point it at a text file.",
                              empty="the corpus needs text.")
    return decode(data, encoding, f"{key}={path!r}")


def decode(data: bytes, encoding: str, where: str) -> str:
    try:
        return data.decode(encoding)
    except LookupError:
        raise DataError(
            f"data.encoding={encoding!r} is not a known text encoding (for example utf-8)."
        ) from None
    except UnicodeDecodeError as e:
        raise decode_error(where, encoding, e.start, data[e.start:e.start + 1]) from None


def decode_error(where: str, encoding: str, offset: int, byte: bytes,
                 line: int | None = None) -> DataError:
    """The error for bytes at `offset` (0-based; `line` 1-based) that are not `encoding`."""
    at = f" (line {line})" if line is not None else ""
    return DataError(
        f"{where} is not valid {encoding}: byte {offset}{at} ({byte!r}) "
        "cannot be decoded. Set data.encoding to the file's encoding "
        "(for example latin-1) or re-save the file as UTF-8."
    )


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "seqtrain")


class _Retryable(Exception):
    """A download failure that may succeed on a later attempt."""


def download(
    url: str,
    *,
    cache_dir: str = "",
    sha256: str = "",
    max_bytes: int = 50_000_000,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 30.0,
    allow_http: bool = False,
) -> tuple[str, str]:
    """Downloads `url` into `cache_dir` (once); returns the cached file's path and SHA-256.

    The body is streamed to a temporary name and renamed only when it is
    complete, within `max_bytes` and matches `sha256` (when given), so the
    cache never holds a half-written or wrong file. The SHA-256 of every
    download is recorded next to it (`<file>.sha256`); a cached file is reused
    only if it still matches that record (and `sha256`, when given), otherwise
    it is downloaded again. Connection errors, timeouts, HTTP 429 and 5xx are
    retried `retries` times with exponential backoff (`backoff`, 2*`backoff`, ...).
    Plain http:// (also after a redirect) needs `allow_http`.

    Raises:
      DataError: unreachable after all retries, HTTP error, too large, insecure
        scheme, or checksum mismatch. The message names the URL (query string
        redacted) and the key to change.
    """
    import requests  # only the url source needs it

    shown = redact(url)
    if not url.startswith("https://") and not (allow_http and url.startswith("http://")):
        raise DataError(f"data.url={shown!r} is not https://; plain http needs "
                        "data.allow_http=true (the download is then not authenticated).")
    cache_dir = cache_dir or default_cache_dir()
    sha256 = sha256.lower()
    if _redacted(url):
        return _cached_by_redacted_url(url, cache_dir, sha256)
    base = re.sub(r"[^A-Za-z0-9._-]", "_", posixpath.basename(url.split("?")[0])) or "corpus"
    path = storage.join(cache_dir, f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{base}")
    record = f"{path}.sha256"
    if storage.exists(path):
        actual = _file_sha256(path)
        recorded = storage.read_text(record).strip() if storage.exists(record) else ""
        if actual == (sha256 or recorded):
            return path, actual
        log.warning("cached download %s does not match its recorded SHA-256 (%s); downloading "
                    "data.url=%s again.", path, "data.sha256" if sha256 else record, shown)
    storage.makedirs(cache_dir)

    errors: list[str] = []
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            digest = _fetch(requests, url, path, sha256=sha256, max_bytes=max_bytes,
                            timeout=timeout, allow_http=allow_http)
            storage.write_text(record, digest + "\n")
            # The URL without its secrets: how a run whose config.yaml holds the redacted
            # URL finds this download again (see _cached_by_redacted_url).
            storage.write_text(f"{path}.url", shown + "\n")
            return path, digest
        except _Retryable as e:
            errors.append(str(e))
    raise DataError(
        f"could not download data.url={shown!r} after {retries + 1} attempts "
        f"(last error: {redact(errors[-1])}). Check the URL and your network or proxy, "
        "raise data.download_retries, or download the file yourself and use "
        "data.source=file with data.path."
    )


def _redacted(url: str) -> bool:
    """A URL whose credentials were replaced by REDACTED (a resumed run's config.yaml)."""
    return REDACTED in url and redact(url) == url


def _cached_by_redacted_url(url: str, cache_dir: str, sha256: str) -> tuple[str, str]:
    """The cached download of a URL that config.yaml keeps only without its query string:
    a resume or an evaluation uses it when it is still in the cache and intact."""
    found = {}
    if storage.isdir(cache_dir):
        for name in storage.listdir(cache_dir):
            if not name.endswith(".url"):
                continue
            path = storage.join(cache_dir, name[:-len(".url")])
            if (storage.read_text(storage.join(cache_dir, name)).strip() != url
                    or not storage.exists(path) or not storage.exists(f"{path}.sha256")):
                continue
            actual = _file_sha256(path)
            if actual == storage.read_text(f"{path}.sha256").strip() and actual == (sha256 or actual):
                found[actual] = path
    if len(found) == 1:
        ((digest, path),) = found.items()
        return path, digest
    why = ("no intact download of it is left in data.cache_dir=" + repr(cache_dir) if not found
           else f"{len(found)} different downloads of it are cached")
    raise DataError(
        f"data.url={url!r} was recorded without its query string, which can hold a credential "
        f"(seqtrain never writes it to the run), and {why}. Pass the URL again: "
        "--set data.url='https://...' (with data.sha256 to pin the content).")


def _fetch(requests, url: str, path: str, *, sha256: str, max_bytes: int, timeout: float,
           allow_http: bool) -> str:
    import tensorflow as tf

    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    shown = redact(url)
    try:
        try:
            resp = requests.get(url, stream=True, timeout=timeout)
        except (requests.ConnectionError, requests.Timeout) as e:
            raise _Retryable(f"{type(e).__name__}: {redact(_short(e))}") from None
        except requests.RequestException as e:
            raise DataError(f"data.url={shown!r} cannot be fetched: {redact(_short(e))}.") from None
        with resp:
            if resp.url.startswith("http://") and not allow_http:
                raise DataError(f"data.url={shown!r} redirected to plain http "
                                f"({redact(resp.url)!r}); set data.allow_http=true to accept it.")
            if resp.status_code == 429 or resp.status_code >= 500:
                raise _Retryable(f"HTTP {resp.status_code} {resp.reason}")
            if resp.status_code != 200:
                raise DataError(
                    f"data.url={shown!r} answered HTTP {resp.status_code} {resp.reason}. "
                    "Fix the URL (or the server's permissions)."
                )
            declared = int(resp.headers.get("Content-Length") or 0)
            if declared > max_bytes:
                raise _too_big(url, f"{declared} bytes (Content-Length)", max_bytes)
            digest, total = hashlib.sha256(), 0
            with tf.io.gfile.GFile(tmp, "wb") as f:
                try:
                    for chunk in resp.iter_content(chunk_size=1 << 16):
                        total += len(chunk)
                        if total > max_bytes:
                            raise _too_big(url, f"more than {max_bytes} bytes", max_bytes)
                        digest.update(chunk)
                        f.write(chunk)
                except (requests.ConnectionError, requests.Timeout,
                        requests.exceptions.ChunkedEncodingError) as e:
                    raise _Retryable(f"transfer interrupted: {_short(e)}") from None
        if sha256 and digest.hexdigest() != sha256:
            raise DataError(
                f"data.url={shown!r} downloaded {total} bytes with SHA-256 "
                f"{digest.hexdigest()}, but data.sha256={sha256}. The file changed or the "
                "checksum is wrong: fix data.sha256 (or set it to '' to skip the check)."
            )
        tf.io.gfile.rename(tmp, path, overwrite=True)
        return digest.hexdigest()
    finally:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)


def _too_big(url: str, got: str, max_bytes: int) -> DataError:
    return DataError(
        f"data.url={redact(url)!r} is {got}, over data.max_bytes={max_bytes}. "
        "Raise data.max_bytes if the file is right."
    )


def _short(e: Exception) -> str:
    return str(e).split("\n")[0][:300]


def _file_sha256(path: str) -> str:
    import tensorflow as tf

    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------
# Vocabulary and encoding.
# ----------------------------------------------------------------------------


class CharVocab:
    """Code point <-> id map. 0 is padding, 1 is out-of-vocabulary."""

    def __init__(self, chars: str):
        self.chars = chars  # in id order, starting at id 2
        self._codepoints = np.array([ord(c) for c in chars], dtype=np.uint32)
        self._order = np.argsort(self._codepoints)
        self._sorted = self._codepoints[self._order]
        self._ids = (self._order + _RESERVED).astype(np.int32)

    @classmethod
    def fit(cls, text: str, min_count: int = 1) -> CharVocab:
        """Characters seen at least `min_count` times, sorted by code point."""
        counts = collections.Counter(text)
        return cls("".join(sorted(c for c, n in counts.items() if n >= min_count)))

    @property
    def size(self) -> int:
        """Number of ids, including padding and OOV."""
        return len(self.chars) + _RESERVED

    def id_dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.size <= 256 else np.uint16 if self.size <= 65536
                        else np.int32)

    def encode(self, text: str) -> np.ndarray:
        """Ids of `text` in the smallest integer dtype; memory O(len(text))."""
        out = np.empty(len(text), dtype=self.id_dtype())
        for start in range(0, len(text), _ENCODE_CHUNK):
            chunk = text[start:start + _ENCODE_CHUNK]
            cps = np.frombuffer(chunk.encode("utf-32-le"), dtype="<u4")
            pos = np.minimum(np.searchsorted(self._sorted, cps), max(len(self._sorted) - 1, 0))
            if len(self._sorted):
                ids = np.where(self._sorted[pos] == cps, self._ids[pos], OOV_ID)
            else:
                ids = np.full(len(cps), OOV_ID)
            out[start:start + len(chunk)] = ids
        return out

    def decode(self, ids) -> str:
        return "".join(self.chars[i - _RESERVED] for i in ids if i >= _RESERVED)

    def count_known(self, text: str) -> int:
        return int(np.count_nonzero(self.encode(text) >= _RESERVED))

    def to_json(self) -> str:
        return json.dumps({"chars": self.chars, "pad_id": PAD_ID, "oov_id": OOV_ID},
                          sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> CharVocab:
        return cls(json.loads(text)["chars"])


# ----------------------------------------------------------------------------
# Splits and windows.
# ----------------------------------------------------------------------------


def vocab_sample_size(n_train: int, sample_mb: float) -> int:
    """How many leading characters of the training split the vocabulary is fitted on:
    all of them, or the first `data.vocab_sample_mb` x 2^20 when that is set (a bounded
    fit; characters first seen later map to the OOV id, so ids can differ from the
    full fit's)."""
    return n_train if not sample_mb else min(n_train, int(sample_mb * 2**20))


def split_tail(text: str, eval_fraction: float) -> tuple[str, str]:
    """(train, eval): eval is the last `eval_fraction` of the corpus."""
    n_eval = int(round(len(text) * eval_fraction))
    return text[:len(text) - n_eval], text[len(text) - n_eval:]


def num_windows(length: int, seq_len: int, shift: int) -> int:
    """How many (seq_len + 1)-character windows start every `shift` characters."""
    if length < seq_len + 1:
        return 0
    return (length - seq_len - 1) // shift + 1


def window_examples(ids: np.ndarray, seq_len: int, shift: int) -> sampling.Examples:
    """Window k (of every window start k*shift in the corpus) is example id k.

    `gather(k)` cuts `(ids[s:s+T], ids[s+1:s+T+1])`, s = k * shift, with one
    gather from the corpus held once as a constant: sampling a window start
    anywhere in the corpus costs the same as reading the next one.
    """
    import tensorflow as tf

    from trainer.data import sampling

    n = num_windows(len(ids), seq_len, shift)
    corpus = tf.constant(ids)
    offsets = tf.range(seq_len + 1, dtype=tf.int64)

    def gather(k):
        w = tf.cast(tf.gather(corpus, k[:, None] * shift + offsets), tf.int32)
        return w[:, :-1], w[:, 1:]

    return sampling.Examples(n, gather)


def window_dataset(ids: np.ndarray, seq_len: int, shift: int) -> tf.data.Dataset:
    """Unbatched `(ids[i:i+T], ids[i+1:i+T+1])` int32 pairs, i = 0, shift, 2*shift...

    The windows are slices of one constant tensor made on the fly, so the
    pipeline holds the corpus once. The order is deterministic.
    """
    import tensorflow as tf

    n = num_windows(len(ids), seq_len, shift)
    corpus = tf.constant(ids)

    def window(i):
        start = i * shift
        w = tf.cast(corpus[start:start + seq_len + 1], tf.int32)
        w = tf.ensure_shape(w, [seq_len + 1])
        return w[:-1], w[1:]

    return tf.data.Dataset.range(n).map(
        window, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
