"""The figure of a learning-rate range test: loss against learning rate (log axis), suggestions marked."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ravine.plots._style import color, plt, save

__all__ = ["plot_lr_find"]


def plot_lr_find(
    lrs: Sequence[float],
    losses: Sequence[float],
    smoothed: Sequence[float],
    suggestions: Mapping[str, tuple[float, str]],
    path: str | os.PathLike | None = None,
    *,
    stop_lr: float | None = None,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Plot a range test (:func:`ravine.experiments.lr_find`): raw and smoothed loss against lr.

    The raw loss is drawn faint, the smoothed loss solid, on a logarithmic lr axis; the y axis is
    cut a little above the first smoothed loss so the blow-up at the end does not flatten the curve.
    Each suggestion is a vertical dashed line and a dot on the smoothed curve, labelled with its
    rule and value; ``stop_lr`` (where the test stopped) is a grey dotted line.

    Args:
        lrs: learning rates, increasing.
        losses: the raw loss at each.
        smoothed: the smoothed loss at each.
        suggestions: ``{rule: (lr, description)}``.
        path: where to save the figure (format by suffix); None to only return it.
        stop_lr: where the test stopped (None: it ran the whole ramp).
        title: the title (default: "Learning-rate range test").
        ax: an existing matplotlib axes to draw into.

    Returns:
        The matplotlib figure (closed when saved to ``path``).
    """
    lr = np.asarray(lrs, dtype=float)
    raw = np.asarray(losses, dtype=float)
    sm = np.asarray(smoothed, dtype=float)
    if not (lr.shape == raw.shape == sm.shape) or lr.ndim != 1 or len(lr) == 0:
        raise ValueError(
            f"lrs, losses and smoothed must be non-empty 1D arrays of one length, got {lr.shape}, {raw.shape}, "
            f"{sm.shape}"
        )
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
    else:
        fig = ax.figure
    ax.plot(lr, raw, color=color(0), alpha=0.3, lw=1, label="loss")
    ax.plot(lr, sm, color=color(0), lw=2, label="smoothed loss")
    finite = sm[np.isfinite(sm)]
    if finite.size:
        low, high = float(finite.min()), float(finite[0])
        span = max(high - low, abs(high) * 1e-3, 1e-12)
        ax.set_ylim(low - 0.1 * span, high + 0.3 * span)
    for i, (rule, (value, description)) in enumerate(suggestions.items()):
        c = color(i + 1)
        ax.axvline(value, color=c, ls="--", lw=1.2, label=f"{rule}: {value:.3g} ({description})")
        y = float(np.interp(math.log(value), np.log(lr), sm)) if len(lr) > 1 else float(sm[0])
        if math.isfinite(y):
            ax.plot([value], [y], "o", color=c, ms=6)
    if stop_lr is not None:
        ax.axvline(stop_lr, color="#7f7f7f", ls=":", lw=1.2, label=f"stopped (loss blew up): {stop_lr:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(title or "Learning-rate range test")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), fontsize="x-small", ncol=1)
    if path is not None:
        save(fig, Path(path))
    return fig
