"""Plots of evaluations and inference (matplotlib on the Agg canvas; host side): PNG bytes."""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np


def heatmap_png(weights: np.ndarray, source_tokens: Sequence[str],
                target_tokens: Sequence[str], title: str = "") -> bytes:
    """Attention heatmap (rows: generated tokens, columns: source tokens) as PNG bytes."""
    label = lambda t: "␣" if t == " " else t  # noqa: E731
    fig = _figure(1, size=(max(3.0, 0.3 * len(source_tokens) + 1.5),
                           max(2.5, 0.3 * len(target_tokens) + 1.2)))
    ax = fig.axes[0]
    ax.imshow(np.asarray(weights, np.float32), cmap="viridis", vmin=0.0, vmax=1.0,
              aspect="auto")
    ax.set_xticks(range(len(source_tokens)), [label(t) for t in source_tokens], rotation=90)
    ax.set_yticks(range(len(target_tokens)), [label(t) for t in target_tokens])
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title, fontsize=9)
    return _png(fig)


def one_step_png(times, actual, forecast, naive, title: str) -> bytes:
    """Actual vs next-step forecast (and the naive forecast) over validation rows."""
    fig = _figure(1)
    ax = fig.axes[0]
    ax.plot(times, actual, color="black", lw=1.2, label="actual")
    ax.plot(times, forecast, color="tab:blue", lw=1.0, label="forecast")
    ax.plot(times, naive, color="tab:gray", lw=0.8, ls=":", label="naive (last value)")
    ax.set_xlabel("time step")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=8)
    return _png(fig)


def multi_step_png(panels, title: str) -> bytes:
    """One panel per example: input context, actual future, forecast and naive forecast.

    Args:
      panels: list of `(context_times, context, future_times, actual, forecast, naive)`.
    """
    fig = _figure(len(panels))
    for ax, (ct, context, ft, actual, forecast, naive) in zip(fig.axes, panels):
        ax.plot(ct, context, color="black", lw=1.0, label="input")
        ax.plot(np.r_[ct[-1], ft], np.r_[context[-1], actual], color="black", lw=1.2, ls="--",
                label="actual")
        ax.plot(ft, forecast, color="tab:blue", lw=1.2, marker=".", label="forecast")
        ax.plot(ft, naive, color="tab:gray", lw=0.8, ls=":", label="naive (last value)")
    fig.axes[0].set_title(title, fontsize=9)
    fig.axes[0].legend(loc="upper left", fontsize=8)
    fig.axes[-1].set_xlabel("time step")
    return _png(fig)


def _figure(rows: int, size: tuple[float, float] | None = None):
    """A figure on the Agg canvas, without pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size or (8, 2.6 * rows), dpi=80)
    FigureCanvasAgg(fig)
    fig.subplots(rows, 1, squeeze=False)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()
