"""Streaming a table file (CSV, TSV, JSONL) row by row, in bounded memory.

The same reading as trainer/data/tables.py (`read_table`), without holding the file:
the format is resolved from the extension or the first line, a byte-order mark is
dropped, CSV is RFC 4180 (lines split only at \\n, \\r and \\r\\n, as
`io.StringIO(newline="")` does), TSV has no quoting, JSONL lines are `str.splitlines`
lines, blank rows are skipped, a long field and a decode error name the line (and the
byte offset). `seqtrain prepare` reads its sources through this several times (hash
and count, fit, encode) and memory holds one chunk and one row.

No TensorFlow here (it is imported only to read gs:// files, through trainer/storage.py).
"""

from __future__ import annotations

import codecs
import dataclasses
import io
import json
from typing import Callable, Iterator

from trainer import storage
from trainer.data import tables
from trainer.errors import DataError

CHUNK_BYTES = 8 << 20


@dataclasses.dataclass
class Head:
    """What is known of a table before its rows: format, header, column names.

    For JSONL, `columns` are the keys of the first object only (the full set is
    known after a pass, `Scan.columns`): rows are dicts, looked up by key.
    """

    path: str
    format: str
    format_reason: str
    header: bool
    columns: list[str]

    def column(self, wanted, key: str) -> int:
        """Index of a column by name or 0-based index (tables.Table.column's rule)."""
        return tables.Table(self.path, self.format, self.format_reason, self.header,
                            self.columns, []).column(wanted, key)


def stream(path: str, *, fmt: str = "auto", header="auto", encoding: str = "utf-8",
           max_field_bytes: int = tables.DEFAULT_MAX_FIELD_BYTES, key: str = "data.path",
           names=(), on_bytes: Callable[[bytes], None] = lambda b: None,
           chunk_bytes: int = CHUNK_BYTES) -> tuple[Head, Iterator[tuple[int, object]]]:
    """(head, rows) of a table file; rows are `(1-based line, fields)`, fields a list of
    strings (CSV/TSV) or a dict (JSONL). `on_bytes` sees every byte read.

    Raises (while iterating, for the parts after the head):
      DataError: as `tables.read_table` (missing, directory or empty file, bad encoding,
        oversized field, malformed rows), naming the file, the line and the key.
    """
    if not path:
        raise DataError(f"{key} is empty; set it to a data file (local path or gs://).")
    if not storage.exists(path):
        raise DataError(f"{key}={path!r} does not exist. Check the path (relative paths are "
                        "relative to the directory you run seqtrain from).")
    if storage.isdir(path):
        raise DataError(f"{key}={path!r} is a directory; point {key} at a file inside it.")
    text = _decoded(path, encoding, on_bytes, chunk_bytes)
    first = _first_text(text, path, key)
    fmt, reason = tables._resolve_format(path, first[0] if first else "", fmt)
    chunks = _chain(first, text)
    if fmt == "jsonl":
        return _jsonl(path, chunks, reason, max_field_bytes)
    if fmt == "text":
        raise DataError(f"{key}={path!r} was read as plain text ({reason}); a CSV, TSV or "
                        "JSONL file is needed here. Set data.format.")
    records = _delimited(path, _csv_lines(chunks), fmt, max_field_bytes)
    lead = []
    for record in records:
        lead.append(record)
        if len(lead) == 2:
            break
    if not lead:
        raise DataError(f"{key}={path!r} has no rows (only blank lines).")
    has_header = tables._has_header(lead, header, names)
    if has_header:
        columns = [c.strip() for c in lead[0][1]]
        lead = lead[1:]
    else:
        columns = [str(i) for i in range(len(lead[0][1]))]
    head = Head(path, fmt, reason, has_header, columns)
    return head, _checked(head, lead, records, key, lead[0][0] if lead else 0)


def _checked(head: Head, lead, records, key: str, first_line: int):
    delim = "tab" if head.format == "tsv" else "comma"
    n = len(head.columns)
    seen = False
    for line, fields in _chain(lead, records):
        seen = True
        if len(fields) != n:
            hint = ("Quote fields that contain a comma (RFC 4180: \"a, b\")."
                    if head.format == "csv"
                    else "TSV has no quoting: a tab inside a text splits it; replace it.")
            first = first_line if not head.header else 0
            raise DataError(
                f"{head.path!r} line {line} has {len(fields)} {delim}-separated fields but "
                f"{'the header has' if head.header else 'line ' + str(first) + ' has'} "
                f"{n}. {hint} (Read as {head.format}: {head.format_reason}; set data.format "
                "if wrong.)")
        yield line, fields
    if not seen and head.header:
        raise DataError(f"{key}={head.path!r} has a header ({', '.join(head.columns)}) but "
                        "no data rows. Add rows, or set data.header=false if that line is data.")


def _chain(first, rest):
    yield from first
    yield from rest


def _first_text(text: Iterator[str], path: str, key: str) -> list[str]:
    """The chunks up to the first non-blank line (to resolve the format), BOM dropped."""
    held, joined = [], ""
    for chunk in text:
        held.append(chunk.removeprefix("\ufeff") if not held else chunk)
        joined += held[-1]
        lines = joined.splitlines()
        if any(line.strip() for line in lines[:-1]) or (
                lines and lines[-1].strip() and joined.endswith(("\n", "\r"))):
            break
    if not joined.strip():
        raise DataError(f"{key}={path!r} is empty; it needs at least one row of data.")
    return [joined]


def _decoded(path: str, encoding: str, on_bytes, chunk_bytes: int) -> Iterator[str]:
    """The file's text in chunks; a decode error names the line and byte offset as
    `tables.decode` does."""
    try:
        decoder = codecs.getincrementaldecoder(encoding)("strict")
    except LookupError:
        raise DataError(f"data.encoding={encoding!r} is not a known text encoding "
                        "(for example utf-8, latin-1, cp1252).") from None
    offset, lines, last_nl = 0, 0, -1  # bytes before `data`, newlines, offset of the last
    with storage.open_read(path) as f:
        while True:
            data = f.read(chunk_bytes)
            on_bytes(data)
            buffered = getattr(decoder, "buffer", b"")
            try:
                text = decoder.decode(data, final=not data)
            except UnicodeDecodeError as e:
                seen = buffered + data
                start = offset - len(buffered) + e.start
                before = seen[:e.start]
                line = lines - buffered.count(b"\n") + before.count(b"\n") + 1
                nl = before.rfind(b"\n")
                line_start = (offset - len(buffered) + nl + 1 if nl >= 0 else last_nl + 1)
                raise DataError(
                    f"{path!r} is not valid {encoding}: line {line}, byte offset {start} "
                    f"(column {start - line_start + 1}) holds {seen[e.start:e.start + 1]!r}. "
                    "Set data.encoding to the file's encoding (for example latin-1 or cp1252) "
                    "or re-save it as UTF-8 (`iconv -f latin1 -t utf-8`).") from None
            nl = data.rfind(b"\n")
            if nl >= 0:
                last_nl = offset + nl
            offset += len(data)
            lines += data.count(b"\n")
            if text:
                yield text
            if not data:
                return


def _csv_lines(chunks: Iterator[str]) -> Iterator[str]:
    """Lines ending at \n, \r or \r\n (ends kept), as `io.StringIO(newline="")`."""
    carry = ""
    for chunk in chunks:
        buf = carry + chunk
        cut = max(buf.rfind("\n"), buf.rfind("\r", 0, len(buf) - 1)) + 1  # a final \r may
        carry = buf[cut:]                                                # precede a \n
        if cut:
            yield from io.StringIO(buf[:cut], newline="")
    if carry:
        yield from io.StringIO(carry, newline="")


def _delimited(path: str, lines: Iterator[str], fmt: str, max_field_bytes: int):
    return ((start, fields) for start, fields in
            tables.delimited_rows(path, lines, fmt, max_field_bytes) if fields is not None)


def _jsonl(path: str, chunks: Iterator[str], reason: str, max_field_bytes: int):
    head = Head(path, "jsonl", reason, True, [])

    def rows():
        line_no, carry = 0, ""
        seen = False
        for chunk in _chain(chunks, [None]):
            if chunk is None:  # the end: the last line needs no terminator
                lines, carry = ([carry] if carry else []), ""
            else:
                lines, carry = (carry + chunk).splitlines(keepends=True), ""
                if lines and (lines[-1].splitlines() == [lines[-1]] or lines[-1].endswith("\r")):
                    carry = lines.pop()  # unterminated, or a \r that a \n may follow
            for raw in lines:
                line_no += 1
                line = (raw.splitlines() or [""])[0]
                if not line.strip():
                    continue
                tables._check_size(line, path, line_no, max_field_bytes)
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path!r} line {line_no} is not valid JSON ({e.msg} at "
                                    f"column {e.colno}). JSONL needs one JSON object per "
                                    "line.") from None
                if not isinstance(obj, dict):
                    raise DataError(f"{path!r} line {line_no} must be a JSON object, got "
                                    f"{type(obj).__name__}.")
                for k in obj:
                    if k not in head.columns:
                        head.columns.append(k)
                seen = True
                yield line_no, obj
        if not seen:
            raise DataError(f"{path!r} has no JSON objects (only blank lines).")

    return head, rows()


def field_of(row, column) -> str:
    """A row's field: `row[index]` for CSV/TSV, the JSONL object's key (missing or null
    is "", as `tables.read_table` fills it)."""
    if isinstance(row, dict):
        value = row.get(column)
        return "" if value is None else str(value)
    return row[column]
