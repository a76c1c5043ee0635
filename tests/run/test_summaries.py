"""TensorBoard writing (read back with TensorBoard's reader) and the progress display."""

from __future__ import annotations

import io

from tensorboard.backend.event_processing import event_accumulator

from trainer import experiment, summaries


def test_config_text_hparams_and_scalars_are_readable(tmp_path):
    writers = summaries.Writers(str(tmp_path))
    cfg = experiment.load(None, None, ["model.units=7"])
    writers.write_config(cfg, step=0)
    writers.scalars(writers.eval, {"accuracy": 0.75}, step=3)
    writers.close()
    acc = event_accumulator.EventAccumulator(str(tmp_path / "train"))
    acc.Reload()
    assert "config" in acc.Tags()["tensors"]
    text = acc.Tensors("config")[0].tensor_proto.string_val[0].decode()
    assert "units: 7" in text
    session = event_accumulator.EventAccumulator(str(tmp_path))  # the log root
    session.Reload()
    assert "_hparams_/session_start_info" in session.PluginTagToContent("hparams")
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


def test_hparams_session_groups_carry_eval_metrics(tmp_path):
    """Two runs under one logdir, read the way TensorBoard's HParams tab reads them."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

    for run, lr, acc in [("a", 0.01, 0.75), ("b", 0.001, 0.5)]:
        writers = summaries.Writers(str(tmp_path / run))
        writers.write_config(experiment.load(None, None, [f"train.learning_rate={lr}"]), step=0)
        writers.scalars(writers.train, {"loss": 1.0}, step=5)
        writers.scalars(writers.eval, {"accuracy": acc, "loss": 0.875}, step=5)
        writers.close()

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(tmp_path))
    mux.Reload()
    tb = base_plugin.TBContext(
        logdir=str(tmp_path), multiplexer=mux,
        data_provider=data_provider.MultiplexerDataProvider(mux, str(tmp_path)))
    request = api_pb2.ListSessionGroupsRequest(
        start_index=0, slice_size=10, allowed_statuses=[api_pb2.STATUS_UNKNOWN])
    response = list_session_groups.Handler(
        context.RequestContext(), backend_context.Context(tb), "", request).run()

    groups = {g.sessions[0].name: g for g in response.session_groups}  # one session each
    assert set(groups) == {"a", "b"}
    for name, lr, acc in [("a", 0.01, 0.75), ("b", 0.001, 0.5)]:
        group = groups[name]
        assert group.hparams["train.learning_rate"].number_value == lr
        metrics = {(m.name.group, m.name.tag): m.value for m in group.metric_values}
        assert metrics[("eval", "accuracy")] == acc
        assert metrics[("eval", "loss")] == 0.875 and metrics[("train", "loss")] == 1.0

