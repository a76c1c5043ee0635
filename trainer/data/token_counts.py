"""Exact token counts in bounded memory, for fitting a vocabulary on a corpus of any size.

A `collections.Counter` of a natural-language corpus grows with its distinct tokens
(names, numbers, misspellings: millions in a few GB of text), which would make a
streaming preparation's memory grow with the corpus after all. `SpillingCounter`
holds at most `max_entries` tokens in memory; when it is full, it writes them, sorted,
to a temporary run file and starts again. The counts are then read back by a k-way
merge of the runs (`heapq.merge`), equal tokens summed, and only the top `n` kept
(`heapq.nlargest`): memory is O(max_entries + n + runs), the counts are exact, and the
ranking is the one a `Counter` would give.
"""

from __future__ import annotations

import heapq
import os
import shutil
import struct
import tempfile
from collections import Counter
from typing import BinaryIO, Iterable, Iterator

# About 100 bytes each in a Counter of short bytes tokens: ~100 MB at most.
MAX_ENTRIES = 1 << 20
_HEADER = struct.Struct("<IQ")  # token length, count


class SpillingCounter:
    """Counts of bytes tokens; `update` as `Counter.update`, `top` for the ranking."""

    def __init__(self, max_entries: int = 0, tmp_dir: str | None = None):
        self.max_entries = max_entries or MAX_ENTRIES
        self.tmp_dir = tmp_dir
        self.counts: Counter = Counter()
        self._dir: str | None = None
        self.runs: list[str] = []

    def update(self, tokens: Iterable[bytes]) -> None:
        self.counts.update(tokens)
        if len(self.counts) > self.max_entries:
            self._spill()

    def top(self, n: int, exclude: Iterable[bytes] = ()) -> list[tuple[bytes, int]]:
        """The `n` (token, count) pairs of highest count, ties broken by the token's bytes,
        larger first: `sorted(counts.items(), key=(count, token), reverse=True)[:n]`."""
        skip = set(exclude)
        pairs = (kv for kv in self.items() if kv[0] not in skip)
        return heapq.nlargest(n, pairs, key=lambda kv: (kv[1], kv[0]))

    def close(self) -> None:
        """Removes the run files (also done by `top`'s caller through `with`)."""
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir, self.runs = None, []

    def __enter__(self) -> "SpillingCounter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _spill(self) -> None:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="seqtrain-counts-", dir=self.tmp_dir)
        path = os.path.join(self._dir, f"run-{len(self.runs):05d}")
        with open(path, "wb") as f:
            for token, count in sorted(self.counts.items()):
                f.write(_HEADER.pack(len(token), count))
                f.write(token)
        self.runs.append(path)
        self.counts = Counter()

    def items(self) -> Iterator[tuple[bytes, int]]:
        """Every (token, total count), in the tokens' byte order (for UTF-8 tokens, the
        order `sorted` gives their decoded strings). Can be read more than once."""
        files = [open(path, "rb") for path in self.runs]
        try:
            streams = [_read_run(f) for f in files] + [iter(sorted(self.counts.items()))]
            token, total = None, 0
            for t, c in heapq.merge(*streams):
                if t == token:
                    total += c
                    continue
                if token is not None:
                    yield token, total
                token, total = t, c
            if token is not None:
                yield token, total
        finally:
            for f in files:
                f.close()


def _read_run(f: BinaryIO) -> Iterator[tuple[bytes, int]]:
    while header := f.read(_HEADER.size):
        length, count = _HEADER.unpack(header)
        yield f.read(length), count
