"""trainer/data/tables.py: user files are read exactly, and what was assumed is reported."""

from __future__ import annotations

import pytest

from trainer.data import tables, text, timeseries
from trainer.errors import DataError


def test_tsv_with_quotes_keeps_every_row(tmp_path):
    """TSV has no quoting: a `"` inside a text must not merge the following lines."""
    path = tmp_path / "reviews.tsv"
    rows = [(f'he said "great {i}' if i % 7 == 0 else f"plain {i}", "ab"[i % 2])
            for i in range(1000)]
    path.write_text("text\tlabel\n" + "".join(f"{x}\t{y}\n" for x, y in rows))
    texts, labels, report = text.read_labelled(str(path), fmt="auto", text_column="text",
                                               label_column="label")
    assert list(zip(texts, labels)) == rows
    assert report["rows"] == 1000 and report["format"] == "tsv"
    assert report["format_reason"] == "extension .tsv"


def test_headerless_txt_is_sniffed_as_tsv_with_columns_by_index(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("great film\tpos\nawful, just awful\tneg\n")
    texts, labels, report = text.read_labelled(str(path), fmt="auto", text_column="text",
                                               label_column="label")
    assert texts == ["great film", "awful, just awful"] and labels == ["pos", "neg"]
    assert report["header"] is False and report["format"] == "tsv"
    assert "first line has tabs" in report["summary"] and "without a header" in report["summary"]
    # explicit indices work too, in any order
    texts, labels, _ = text.read_labelled(str(path), fmt="tsv", header=False, text_column=1,
                                          label_column="0")
    assert texts == ["pos", "neg"]


def test_csv_follows_rfc4180(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b'text,label\r\n"line one\r\nline two, with comma",a\r\n"say ""hi""",b\r\n')
    texts, labels, _ = text.read_labelled(str(path), fmt="auto", text_column="text",
                                          label_column="label")
    assert texts == ["line one\r\nline two, with comma", 'say "hi"'] and labels == ["a", "b"]


def test_decode_error_names_file_line_and_offset(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(b"text,label\ncaf\xe9,a\n")
    with pytest.raises(DataError, match=r"line 2, byte offset 14.*data.encoding") as e:
        text.read_labelled(str(path), fmt="auto", text_column="text", label_column="label")
    assert str(path) in str(e.value)
    texts, _, _ = text.read_labelled(str(path), fmt="auto", text_column="text",
                                     label_column="label", encoding="latin-1")
    assert texts == ["café"]


def test_missing_directory_unreadable_and_empty_files_name_the_key(tmp_path):
    (tmp_path / "empty.csv").write_bytes(b" \n")
    for path, fragment in [(tmp_path / "nope.csv", "does not exist. Check the path"),
                           (tmp_path, "is a directory; point data.train_path at a file"),
                           ("/proc/self/mem", "cannot be read: [Errno 5]"),  # EIO, even as root
                           (tmp_path / "empty.csv", "is empty; it needs at least one row")]:
        with pytest.raises(DataError) as e:
            tables.read_table(str(path), key="data.train_path")
        assert str(e.value).startswith(f"data.train_path={str(path)!r} {fragment}"), e.value


def test_field_size_limit_is_configurable(tmp_path):
    path = tmp_path / "big.tsv"
    path.write_text("text\tlabel\n" + "x" * 5000 + "\ta\nshort\tb\n")
    with pytest.raises(DataError, match=r"line 2 .*data.max_field_bytes=1000"):
        tables.read_table(str(path), header=True, max_field_bytes=1000)
    assert len(tables.read_table(str(path), header=True, max_field_bytes=10000).rows) == 2


def test_wrong_field_count_names_the_line_and_format(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\ngood, really good,pos\n")
    with pytest.raises(DataError, match=r"line 2 has 3 comma-separated fields.*header has 2.*"
                                        r"Quote fields"):
        tables.read_table(str(path), names=("text", "label"))


def test_blank_lines_are_counted_as_skipped(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\n\na,x\n\n\nb,y\n,z\n")
    texts, _, report = text.read_labelled(str(path), fmt="auto", text_column="text",
                                          label_column="label")
    assert texts == ["a", "b"]
    assert report["skipped"] == {"blank lines": 3, "empty text": 1}


def test_date_column_error_suggests_time_column(tmp_path):
    path = tmp_path / "airline.csv"
    path.write_text("Month,Passengers\n1949-01,112\n1949-02,118\n1949-03,132\n")
    with pytest.raises(DataError, match=r"'1949-01'.*set data.time_column=Month"):
        timeseries.read_csv_series(str(path))
    s = timeseries.read_csv_series(str(path), time_column="Month")
    assert s.columns == ("Passengers",) and s.values[:, 0].tolist() == [112, 118, 132]


def test_headerless_series_by_index(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("3,30\n1,10\n2,20\n")
    s, report = timeseries.read_series(str(path), time_column="0", target="1")
    assert report["header"] is False and s.values[:, 0].tolist() == [10, 20, 30]
