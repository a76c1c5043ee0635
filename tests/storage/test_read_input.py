"""storage.read_input on gs:// (the GCS emulator): the --config file, @FILE inputs and data
paths give the same answers for a missing object, a "directory" prefix, a non-UTF-8 object
and a readable one as they do on a local disk (the local cases are in tests/cli/test_bad_inputs.py
and tests/data/test_tables.py)."""

from __future__ import annotations

import pytest

from trainer import experiment
from trainer.data import tables
from trainer.errors import ConfigError, DataError, UserError
from trainer.serving import inference


def test_config_inputs_and_data_on_gcs(gcs):
    bucket = gcs.new_bucket()
    gcs.write_object(bucket, "conf/c.yaml", b"train:\n  steps: 5\n")
    gcs.write_object(bucket, "latin.txt", b"hello\ncaf\xe9\n")
    gcs.write_object(bucket, "in.txt", b"good film\n\nbad film\n")
    gcs.write_object(bucket, "d.csv", b"text,label\ngood,pos\n")
    root = f"gs://{bucket}"
    with gcs.applied():
        assert experiment.read_yaml(f"{root}/conf/c.yaml") == {"train": {"steps": 5}}
        assert inference.expand_inputs([f"@{root}/in.txt"]) == ["good film", "bad film"]
        table = tables.read_table(f"{root}/d.csv", header=True, key="data.train_path")
        assert table.rows == [(2, ["good", "pos"])]
        cases = [
            (lambda: experiment.read_yaml(f"{root}/nope.yaml"), ConfigError,
             f"config file '{root}/nope.yaml' does not exist. Check the --config path"),
            (lambda: experiment.read_yaml(f"{root}/conf"), ConfigError,
             f"config file '{root}/conf' is a directory; pass a YAML file to --config."),
            (lambda: experiment.read_yaml(f"{root}/latin.txt"), ConfigError,
             f"config file '{root}/latin.txt' is not UTF-8: line 2, byte offset 9 (column 4)"),
            (lambda: inference.expand_inputs([f"@{root}/nope.txt"]), UserError,
             f"input file @{root}/nope.txt does not exist. @FILE reads one input a line"),
            (lambda: inference.expand_inputs([f"@{root}/conf"]), UserError,
             f"input file @{root}/conf is a directory; @FILE needs a text file."),
            (lambda: tables.read_table(f"{root}/nope.csv", key="data.train_path"), DataError,
             f"data.train_path='{root}/nope.csv' does not exist. Check the path"),
            (lambda: tables.read_table(f"{root}/conf", key="data.train_path"), DataError,
             f"data.train_path='{root}/conf' is a directory; point data.train_path at a file"),
        ]
        for call, kind, start in cases:
            with pytest.raises(kind) as e:
                call()
            assert str(e.value).startswith(start), (start, str(e.value))
