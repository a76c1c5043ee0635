"""`seqtrain check`: the cuDNN eligibility of a configured model, without training."""

from __future__ import annotations

from trainer import precision, registry


def cudnn_report_for(config) -> list[dict]:
    """Builds the configured model (on the default strategy) and reports each RNN layer."""
    task = registry.get(config.task.name)(config)
    task.prepare()
    model = task.build_model()
    report = precision.cudnn_report(model, task.padding)
    return report


def report_text(config) -> str:
    report = cudnn_report_for(config)
    lines = [f"task {config.task.name}: cuDNN fast path per recurrent layer "
             "(applies on GPU; CPU runs the generic kernel)", precision.format_report(report)]
    if config.model.use_cudnn is True and any(not r["eligible"] for r in report):
        lines.append("model.use_cudnn=true: `seqtrain train` will refuse this config.")
    return "\n".join(lines)
