"""`seqtrain check`: the cuDNN eligibility of a configured model, without training."""

from __future__ import annotations

from trainer import precision, registry
from trainer.errors import ConfigError


def cudnn_report_for(config) -> list[dict]:
    """Builds the configured model (on the default strategy) and reports each RNN layer."""
    task = registry.get(config.task.name)(config)
    task.prepare()
    model = task.build_model()
    report = precision.cudnn_report(model, task.padding)
    return report


def report_text(config) -> str:
    report = cudnn_report_for(config)
    lines = [f"task {config.task.name}: per recurrent layer, the training loop that runs on "
             "this machine (fused: seqtrain's CPU loop, model.cpu_kernel; cudnn; keras: Keras' "
             "generic loop) and the cuDNN fast path eligibility (applies on GPU)",
             precision.format_report(report)]
    if config.model.use_cudnn is True and any(not r["eligible"] for r in report):
        lines.append("model.use_cudnn=true: `seqtrain train` will refuse this config.")
    task_cls = registry.get(config.task.name)
    try:
        jit, why = precision.resolve_jit_compile(
            config.runtime.jit_compile, report, xla_on_cpu=task_cls.xla_on_cpu, on_tpu=False)
        lines.append(f"XLA-compiled step on this machine: {'yes' if jit else 'no'} ({why})")
    except ConfigError as e:
        lines.append(f"`seqtrain train` will refuse this config on this machine: {e}")
    return "\n".join(lines)
