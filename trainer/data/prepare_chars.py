"""`seqtrain prepare` for character corpora: stream, fit, encode, shard in bounded memory.

`prepare` turns the corpus of a text_generation data config into a prepared dataset
(trainer/data/prepared.py) in bounded memory, reading the sources in chunks three
times:

  1. hash every source file (SHA-256) and count its characters (after lowercasing);
     the content key follows, and a directory already holding it is reused;
  2. count each character of the training split (the first `total - round(total *
     data.eval_fraction)` characters, `chars.split_tail`'s rule) and fit the
     vocabulary exactly as `CharVocab.fit` does on the in-memory text;
  3. encode the text chunk by chunk and stream the ids into `train-*` and `eval-*`
     shards.

Chunks are cut just after white space, so lowercasing chunk by chunk equals
lowercasing the whole text (Python's only context-dependent lowercase rule, the final
sigma, looks at the letters around a sigma and stops at white space). A prepared run
therefore trains on the same ids with the same vocabulary as one that reads the
source directly.

No TensorFlow here (it is imported only to read gs:// sources): preparing runs in the
memory of the data, not of a TensorFlow process. Training reads the result through
trainer/data/chars_prepared.py.
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import os
import time
from typing import Callable, Iterator

import numpy as np

from trainer import storage
from trainer.data import chars, prepared_writer
from trainer.data.prepared_writer import Progress, changed_error, recorded_config
from trainer.errors import DataError
from trainer.redact import redact

TASK = "text_generation"
# The data keys that change the tokens or the vocabulary. data.seq_len and data.shift
# only cut windows from the tokens, so one prepared dataset serves any of them.
CONTENT_KEYS = ("encoding", "lowercase", "eval_fraction", "min_char_count")
CHUNK_BYTES = 8 << 20
# Lowercasing may cut the text just after one of these: they are neither cased nor
# case-ignorable, so the final-sigma rule never looks across them.
_SAFE_CUTS = ("\n", " ", "\t")
EVAL_HEAD_CHARS = 40  # the default sample prompt: the start of the eval split


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a corpus comes from: what the config says, and the files to read."""

    descriptor: dict      # {"kind": "bundled"|"file"|"url", ...}: compared at training
    files: list[str]      # local or gs:// paths, read in this order
    encoding: str


def describe(d) -> dict:
    """The corpus a text_generation data config names, without reading it."""
    if d.source == "bundled" or not (d.path or d.url):
        return {"kind": "bundled", "name": d.bundled_name}
    if d.path:
        return {"kind": "file", "path": d.path if storage.is_remote(d.path)
                else os.path.abspath(d.path)}
    return {"kind": "url", "url": redact(d.url)}


def resolve(d) -> Source:
    """The files of the corpus (a glob in data.path matches several, read sorted).

    Raises:
      DataError: no such bundled corpus, no file matches, a directory, an empty file,
        or a failed download.
    """
    descriptor = describe(d)
    if descriptor["kind"] == "bundled":
        if d.bundled_name not in chars.bundled_names():
            raise DataError(f"data.bundled_name={d.bundled_name!r} is not a bundled corpus. "
                            f"Available: {', '.join(chars.bundled_names())}.")
        path = os.path.join(os.path.dirname(chars.__file__), "bundled",
                            f"corpus_{d.bundled_name}.txt")
        return Source(descriptor, [path], "utf-8")
    if descriptor["kind"] == "url":
        path, _ = chars.download(
            d.url, cache_dir=d.cache_dir, sha256=d.sha256, max_bytes=d.max_bytes,
            retries=d.download_retries, backoff=d.download_backoff,
            timeout=d.download_timeout, allow_http=d.allow_http)
        return Source(descriptor, [path], d.encoding)
    return Source(descriptor, _expand(d.path), d.encoding)


def _expand(path: str) -> list[str]:
    if any(c in path for c in "*?["):
        files = [f for f in storage.glob(path) if not storage.isdir(f)]
        if not files:
            raise DataError(f"data.path={path!r} matches no file. Check the pattern (it is "
                            "a glob: *, ? and [..] match file names).")
        return files
    if not storage.exists(path):
        raise DataError(f"data.path={path!r} does not exist. Point it at a text file "
                        "(or a glob such as 'corpus/*.txt').")
    if storage.isdir(path):
        raise DataError(f"data.path={path!r} is a directory; point it at a text file or a "
                        f"glob such as '{path.rstrip('/')}/*.txt'.")
    return [path]


# ----------------------------------------------------------------------------
# Streaming text.
# ----------------------------------------------------------------------------


def iter_text(source: Source, lowercase: bool, *, on_bytes: Callable[[int, bytes], None]
              = lambda i, b: None, chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    """The corpus text (the files concatenated, lowercased if asked) in chunks.

    `on_bytes(file_index, raw_bytes)` sees every byte read. When lowercasing, a
    chunk ends just after white space when the text has some (see the module
    docstring). Memory holds about one chunk.

    Raises:
      DataError: an unknown encoding, or bytes that are not `source.encoding`,
        naming the file, the byte offset and the line.
    """
    pending = ""
    for index, path in enumerate(source.files):
        try:
            decoder = codecs.getincrementaldecoder(source.encoding)("strict")
        except LookupError:
            raise DataError(f"data.encoding={source.encoding!r} is not a known text encoding "
                            "(for example utf-8).") from None
        offset = lines = 0
        with storage.open_read(path) as f:
            while True:
                data = f.read(chunk_bytes)
                on_bytes(index, data)
                buffered = getattr(decoder, "buffer", b"")
                try:
                    text = decoder.decode(data, final=not data)
                except UnicodeDecodeError as e:
                    seen = buffered + data
                    raise chars.decode_error(
                        f"data.path={path!r}", source.encoding, offset - len(buffered) + e.start,
                        seen[e.start:e.start + 1], lines + seen[:e.start].count(b"\n") + 1
                        - buffered.count(b"\n")) from None
                offset += len(data)
                lines += data.count(b"\n")
                pending += text
                if not lowercase:
                    if pending:
                        yield pending
                    pending = ""
                else:
                    cut = max(pending.rfind(c) for c in _SAFE_CUTS) + 1
                    if not cut and len(pending) > max(4 * chunk_bytes, 1 << 16):
                        cut = len(pending)  # no white space for a long stretch: bound memory
                    if cut:
                        yield pending[:cut].lower()
                        pending = pending[cut:]
                if not data:
                    break
        if offset == 0:
            raise DataError(f"data.path={path!r} is empty (0 bytes); the corpus needs text.")
    if pending:
        yield pending.lower() if lowercase else pending


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


# ----------------------------------------------------------------------------
# Preparation.
# ----------------------------------------------------------------------------


def prepare(d, out_dir: str, *, shard_mb: float = 256, log: Callable[[str], None] = print,
            progress_mb: float = 64, seed: int = 0) -> dict:
    """Prepares the corpus of data config `d` into `out_dir` (or finds it there).

    Returns a summary: content key, counts, bytes read, seconds, whether it was reused.

    Raises:
      DataError / UserError: a bad source, or `out_dir` holding something else.
    """
    started = time.perf_counter()
    source = resolve(d)
    sizes = [storage.size(p) for p in source.files]
    progress = Progress(sum(sizes), log, progress_mb)
    prepared_writer.check_out_dir(out_dir, None)  # other files there: refuse before reading

    # Pass 1: hash and count.
    digests = [hashlib.sha256() for _ in source.files]
    total = 0
    progress.start("pass 1/3 (hash, count characters)")

    def hash_bytes(i, data):
        digests[i].update(data)
        progress.add(len(data))

    for text in iter_text(source, d.lowercase, on_bytes=hash_bytes):
        total += len(text)
    sources = [{"path": p, "bytes": n, "sha256": h.hexdigest()}
               for p, n, h in zip(source.files, sizes, digests)]
    config = content_config(d, source.descriptor)
    summary, reused = prepared_writer.name_or_reuse(TASK, out_dir, sources, config, started,
                                                    d.cache_dir)
    if reused:
        return reused
    key, out_dir = summary["content_key"], summary["out"]

    n_eval = int(round(total * d.eval_fraction))
    n_train = total - n_eval
    if n_train == 0 or total == 0:
        raise DataError(f"the corpus ({', '.join(source.files)}) has {total} characters, "
                        f"which leaves {n_train} for training at data.eval_fraction="
                        f"{d.eval_fraction}. Use a longer corpus or a smaller eval_fraction.")

    # Pass 2: the vocabulary of the training split (CharVocab.fit's rule), or of its
    # first data.vocab_sample_mb (chars.vocab_sample): then the pass stops there.
    fit_chars = chars.vocab_sample_size(n_train, d.vocab_sample_mb)
    counts = np.zeros(0x110000, np.int64)
    seen = 0
    progress.start("pass 2/3 (fit the vocabulary on the training split)")
    for text in iter_text(source, d.lowercase, on_bytes=lambda i, b: progress.add(len(b))):
        take = text[:max(0, fit_chars - seen)]
        if take:
            counts += np.bincount(_codepoints(take), minlength=len(counts))
        seen += len(text)
        if seen >= fit_chars:
            break
    known = np.nonzero(counts >= d.min_char_count)[0]
    vocab = chars.CharVocab("".join(map(chr, known)))
    encode = _encoder(vocab, known)

    # Pass 3: encode into shards (hashing the source again: it must not have changed).
    dtype = vocab.id_dtype()
    writer = prepared_writer.Writer(out_dir, dtype=dtype,
                                    counts={"train": n_train, "eval": n_eval},
                                    shard_tokens=int(shard_mb * 2**20) // dtype.itemsize)
    eval_oov, eval_head, pos = 0, "", 0
    again = [hashlib.sha256() for _ in source.files]
    progress.start("pass 3/3 (encode, write shards)")

    def rehash(i, data):
        again[i].update(data)
        progress.add(len(data))

    try:
        for text in iter_text(source, d.lowercase, on_bytes=rehash):
            if pos + len(text) > total:
                raise changed_error(source.files)
            cut = max(0, min(len(text), n_train - pos))
            if cut:
                writer.add("train", encode(text[:cut]))
            if cut < len(text):
                held_out = text[cut:]
                ids = encode(held_out)
                eval_oov += int(np.count_nonzero(ids == chars.OOV_ID))
                if len(eval_head) < EVAL_HEAD_CHARS:
                    eval_head += held_out[:EVAL_HEAD_CHARS - len(eval_head)]
                writer.add("eval", ids)
            pos += len(text)
        if pos != total or [h.hexdigest() for h in again] != [s["sha256"] for s in sources]:
            raise changed_error(source.files)
        manifest = writer.commit({
            "task": TASK, "content_key": key, "source": source.descriptor,
            "sources": sources, "data_config": config, "config": recorded_config(d),
            "stats": {"chars": total, "train_chars": n_train, "eval_chars": n_eval,
                      "vocab_size": vocab.size, "eval_oov": eval_oov, "eval_head": eval_head},
        }, vocab.to_json())
    except BaseException as e:
        raise writer.failed(e) from None
    return {**summary, "reused": False, "manifest": manifest,
            "seconds": time.perf_counter() - started}


def content_config(d, descriptor: dict) -> dict:
    """The data keys recorded as the content-defining config (and hashed into the key).

    data.vocab_sample_mb appears only when set, so the default (the full fit) keeps the
    keys of datasets prepared before it existed.
    """
    config = {k: getattr(d, k) for k in CONTENT_KEYS}
    if descriptor["kind"] == "bundled":
        config["encoding"] = "utf-8"  # bundled corpora are UTF-8 whatever data.encoding says
    if d.vocab_sample_mb:
        config["vocab_sample_mb"] = d.vocab_sample_mb
    return config


def _encoder(vocab: chars.CharVocab, codepoints: np.ndarray):
    """`vocab.encode` as one table lookup per character (a code point -> id table of
    1.1 M entries), ~7x faster than its binary search; the same ids."""
    table = np.full(0x110000, chars.OOV_ID, vocab.id_dtype())
    reserved = vocab.size - len(vocab.chars)  # ids below are padding and OOV
    table[codepoints] = np.arange(len(codepoints)) + reserved

    def encode(text: str) -> np.ndarray:
        return table[_codepoints(text)]

    return encode
