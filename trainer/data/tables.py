"""Reading a user's table file exactly: CSV, TSV, JSONL or plain text, local or gs://.

One reader for every task, so every task speaks the same data vocabulary:

* `data.format` auto|csv|tsv|jsonl|text. `auto` uses the extension (.csv, .tsv/.tab,
  .jsonl/.ndjson/.json) and otherwise looks at the first line (a tab: tsv, a comma:
  csv, neither: text). The choice and its reason are in the read report.
* CSV follows RFC 4180 (fields may be quoted, `""` is a quote inside a quoted field).
  TSV has **no** quoting: a `"` is an ordinary character (Python's csv module would
  otherwise merge lines into one field, see docs/data.md).
* `data.header` true|false|auto. Without a header, columns are named by their
  0-based index ("0", "1", ...), and column keys accept those indices.
* `data.encoding`: a decode error names the file, the line and the byte offset.
* `data.max_field_bytes`: a longer field is an error naming the line and the key.

Everything here runs on the host. Errors are `DataError`s naming the file and the
config key to change.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from typing import Iterator

from trainer import storage
from trainer.errors import DataError

FORMATS = ("auto", "csv", "tsv", "jsonl", "text")
DEFAULT_MAX_FIELD_BYTES = 1 << 20  # 1 MiB: far above any sentence, far below a mistake


@dataclasses.dataclass
class Table:
    """Rows of one file, as strings, with what was assumed to read them."""

    path: str
    format: str
    format_reason: str
    header: bool
    columns: list[str]  # names, or "0", "1", ... without a header
    rows: list[tuple[int, list[str]]]  # (1-based line number, fields)
    blank_lines: int = 0

    def report(self) -> dict:
        return {"path": self.path, "format": self.format, "format_reason": self.format_reason,
                "header": self.header, "columns": self.columns, "rows": len(self.rows),
                "skipped": {"blank lines": self.blank_lines} if self.blank_lines else {}}

    def describe(self) -> str:
        """One line for the start output."""
        return describe_read(self.path, len(self.rows), self.format, self.format_reason,
                             self.header, self.blank_lines)

    def column(self, wanted, key: str) -> int:
        """Index of a column given by name or by 0-based index (int or digit string)."""
        text = str(wanted).strip()
        if text in self.columns:
            return self.columns.index(text)
        # "Label" for label: the one column whose name differs only by case.
        folded = [i for i, c in enumerate(self.columns)
                  if c.strip().casefold() == text.casefold()]
        if self.header and len(folded) == 1:
            return folded[0]
        if text.isdigit() and int(text) < len(self.columns):
            return int(text)
        how = ("its columns are: " + ", ".join(self.columns) if self.header else
               f"it was read without a header, so columns are numbered 0..{len(self.columns) - 1}"
               " (set data.header=true if its first line names the columns)")
        raise DataError(f"{key}={wanted!r} is not a column of {self.path!r}; {how}. "
                        f"Set {key} to one of them.")


def read_file_bytes(path: str, key: str) -> bytes:
    """The bytes of a data file, with clear errors for missing, directory, unreadable and
    empty."""
    if not path:
        raise DataError(f"{key} is empty; set it to a data file (local path or gs://).")
    return storage.read_input(
        path, f"{key}={path!r}", error=DataError,
        missing="Check the path (relative paths are relative to the directory you run "
                "seqtrain from).",
        directory=f"point {key} at a file inside it.",
        empty="it needs at least one row of data.")


def decode(raw: bytes, encoding: str, path: str) -> str:
    """Decodes a whole file; an error names the line and byte offset of the bad byte."""
    try:
        text = raw.decode(encoding)
    except LookupError:
        raise DataError(f"data.encoding={encoding!r} is not a known text encoding "
                        "(for example utf-8, latin-1, cp1252).") from None
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path!r} is not valid {encoding}: {storage.undecodable_at(raw, e)}. Set "
            "data.encoding to the file's encoding (for example latin-1 or cp1252) or re-save "
            "it as UTF-8 (`iconv -f latin1 -t utf-8`).") from None
    return text.removeprefix("\ufeff")  # spreadsheet exports add a byte-order mark


def read_table(path: str, *, fmt: str = "auto", header="auto", encoding: str = "utf-8",
               max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES, key: str = "data.path",
               names=()) -> Table:
    """Reads a CSV/TSV/JSONL/text file into string rows.

    Args:
      fmt: one of FORMATS.
      header: True, False or "auto". Auto takes the first line as a header if it
        holds one of `names`, or if it has a non-numeric cell where the second row
        is numeric.
      names: column names the caller will look up (helps `header="auto"`).

    Raises:
      DataError: missing/empty/directory file, bad encoding, an oversized field,
        malformed rows. The message names the file, the line and the key to change.
    """
    raw = read_file_bytes(path, key)
    text = decode(raw, encoding, path)
    fmt, reason = _resolve_format(path, text, fmt)
    if fmt == "jsonl":
        return _read_jsonl(path, text, reason, max_field_bytes)
    if fmt == "text":
        rows, blank = [], 0
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                blank += 1
                continue
            _check_size(line, path, i, max_field_bytes)
            rows.append((i, [line]))
        return Table(path, "text", reason, False, ["0"], rows, blank)
    records, blank = _delimited(path, text, fmt, max_field_bytes)
    if not records:
        raise DataError(f"{key}={path!r} has no rows (only blank lines).")
    has_header = _has_header(records, header, names)
    if has_header:
        columns = [c.strip() for c in records[0][1]]
        records = records[1:]
        if not records:
            raise DataError(f"{key}={path!r} has a header ({', '.join(columns)}) but no data rows."
                            " Add rows, or set data.header=false if that line is data.")
    else:
        columns = [str(i) for i in range(len(records[0][1]))]
    delim = "tab" if fmt == "tsv" else "comma"
    for line, fields in records:
        if len(fields) != len(columns):
            hint = ("Quote fields that contain a comma (RFC 4180: \"a, b\")." if fmt == "csv"
                    else "TSV has no quoting: a tab inside a text splits it; replace it.")
            raise DataError(
                f"{path!r} line {line} has {len(fields)} {delim}-separated fields but "
                f"{'the header has' if has_header else 'line ' + str(records[0][0]) + ' has'} "
                f"{len(columns)}. {hint} (Read as {fmt}: {reason}; set data.format if wrong.)")
    return Table(path, fmt, reason, has_header, columns, records, blank)


def _resolve_format(path: str, text: str, fmt: str) -> tuple[str, str]:
    if fmt != "auto":
        return fmt, "data.format"
    lower = path.lower()
    for ext, name in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "jsonl"),
                      (".tsv", "tsv"), (".tab", "tsv"), (".csv", "csv")):
        if lower.endswith(ext):
            return name, f"extension {ext}"
    first = next((line for line in text.splitlines() if line.strip()), "")
    if "\t" in first:
        return "tsv", "auto: first line has tabs"
    if first.lstrip().startswith("{"):
        return "jsonl", "auto: first line is a JSON object"
    if "," in first:
        return "csv", "auto: first line has commas"
    return "text", "auto: no tabs or commas in the first line"


def _delimited(path: str, text: str, fmt: str, max_field_bytes: int):
    records, blank = [], 0
    for start, fields in delimited_rows(path, io.StringIO(text, newline=""), fmt,
                                        max_field_bytes):
        if fields is None:
            blank += 1
        else:
            records.append((start, fields))
    return records, blank


def describe_read(path: str, rows: int, fmt: str, reason: str, header: bool,
                  blank_lines: int = 0) -> str:
    """The start output's line for a table read from `path` (in memory or prepared)."""
    head = "with a header" if header else "without a header (columns by index)"
    skipped = f", {blank_lines} blank line(s) skipped" if blank_lines else ""
    return f"read {path}: {rows} rows as {fmt} ({reason}), {head}{skipped}"


def delimited_rows(path: str, lines: Iterator[str], fmt: str, max_field_bytes: int):
    """(first line number, fields) of each CSV/TSV record of `lines`, fields None for a
    blank record; the one parser of the in-memory and the streaming readers.

    Raises:
      DataError: a quoting error or a field over `max_field_bytes`, naming the line.
    """
    kwargs = ({"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv"
              else {"delimiter": ","})
    old = csv.field_size_limit(max_field_bytes)
    reader = csv.reader(lines, **kwargs)
    try:
        while True:
            start = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                if "field larger than field limit" in str(e):
                    raise _too_big(path, start, max_field_bytes) from None
                raise DataError(f"{path!r} line {start} is not valid {fmt.upper()}: {e}. "
                                "Fix the quoting, or set data.format=tsv for a tab-separated "
                                "file without quoting.") from None
            if not any(f.strip() for f in fields):
                yield start, None
                continue
            for f in fields:
                if len(f) > max_field_bytes:  # the csv limit counts characters
                    raise _too_big(path, start, max_field_bytes)
            yield start, fields
    finally:
        csv.field_size_limit(old)


def _read_jsonl(path: str, text: str, reason: str, max_field_bytes: int) -> Table:
    rows, keys, blank = [], {}, 0
    objects = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            blank += 1
            continue
        _check_size(line, path, i, max_field_bytes)
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path!r} line {i} is not valid JSON ({e.msg} at column {e.colno})."
                            " JSONL needs one JSON object per line.") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path!r} line {i} must be a JSON object, got "
                            f"{type(obj).__name__}.")
        keys.update(dict.fromkeys(obj))
        objects.append((i, obj))
    columns = list(keys)
    for i, obj in objects:
        rows.append((i, ["" if obj.get(k) is None else str(obj[k]) for k in columns]))
    if not rows:
        raise DataError(f"{path!r} has no JSON objects (only blank lines).")
    return Table(path, "jsonl", reason, True, columns, rows, blank)


def _has_header(records, header, names) -> bool:
    if header is True or header is False:
        return header
    first = [c.strip().casefold() for c in records[0][1]]
    if any(str(n).strip().casefold() in first for n in names if n):
        return True
    if len(records) < 2:  # a lone row of names is a header without data
        return not any(_is_number(c) for c in first)
    second = records[1][1]
    return any(not _is_number(a) and _is_number(b) for a, b in zip(first, second))


def check_first_row_label(path: str, key: str, header, table_header: bool, first_row: str,
                          first_label: str | None, counts: dict) -> None:
    """A first line read as data under `data.header=auto` whose label occurs nowhere else is
    almost always a header with other names ("review,sentiment"): refused, not trained on
    as an extra class."""
    if (header != "auto" or table_header or first_label is None or counts.get(first_label) != 1
            or sum(counts.values()) < 3 or all(n == 1 for n in counts.values())):
        return
    raise DataError(
        f"the first line of {key}={path!r} ({first_row[:120]!r}) was read as data, but its label "
        f"{first_label!r} occurs nowhere else in the file, so it looks like a header naming "
        "other columns than data.text_column and data.label_column. If it is a header, set "
        "data.header=true and name the columns (for example --set data.text_column=<name> "
        "--set data.label_column=<name>); if it is a row, set data.header=false.")


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _check_size(text: str, path: str, line: int, limit: int) -> None:
    if len(text) > limit:
        raise _too_big(path, line, limit)


def _too_big(path: str, line: int, limit: int) -> DataError:
    return DataError(
        f"{path!r} line {line} has a field longer than data.max_field_bytes={limit}. Raise "
        "data.max_field_bytes if that is right; a stray quote in a CSV makes one huge field "
        "(for tab-separated files set data.format=tsv, which has no quoting).")
