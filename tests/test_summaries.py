"""TensorBoard writing (read back with TensorBoard's reader) and the progress display."""

from __future__ import annotations

import io

from tensorboard.backend.event_processing import event_accumulator

from trainer import config as config_lib, summaries


def test_config_text_hparams_and_scalars_are_readable(tmp_path):
    writers = summaries.Writers(str(tmp_path))
    cfg = config_lib.load(None, None, ["model.units=7"])
    writers.write_config(cfg, step=0)
    writers.scalars(writers.eval, {"accuracy": 0.75}, step=3)
    writers.close()
    acc = event_accumulator.EventAccumulator(str(tmp_path / "train"))
    acc.Reload()
    assert {"config", "_hparams_/session_start_info"} <= set(acc.Tags()["tensors"])
    text = acc.Tensors("config")[0].tensor_proto.string_val[0].decode()
    assert "units: 7" in text
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")
    ev = event_accumulator.EventAccumulator(str(tmp_path / "eval"))
    ev.Reload()
    (event,) = ev.Tensors("accuracy")
    assert event.step == 3
    assert summaries.read_scalars(str(tmp_path / "eval"), "accuracy") == {3: 0.75}


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_rewrites_one_line():
    out = FakeTTY()
    p = summaries.Progress(total_steps=100, start_step=0, log_every=50, enabled=True, stream=out)
    p.update(10, 0.5, 20.0)
    p.update(20, 0.4, 20.0)
    p.done()
    text = out.getvalue()
    assert text.count("\r") == 2 and "step 20/100  loss 0.4000  20.0 steps/s  ETA 0:04" in text


def test_progress_in_a_log_prints_plain_lines_at_the_interval():
    out = io.StringIO()
    p = summaries.Progress(total_steps=100, start_step=0, log_every=50, enabled=True, stream=out)
    for step in range(10, 101, 10):
        p.update(step, 1.0, 10.0)
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["50/100", "100/100"]
    assert "\r" not in out.getvalue()
