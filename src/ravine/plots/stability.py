"""Edge-of-Stability figures: a run's sharpness against its optimizer's stability threshold, and its loss.

Drawn from data only (the measurements come from ``ravine.curvature.SharpnessMonitor`` records): one
column per run, the sharpness and its threshold (dashed, labelled with its value) on top, the training
loss below on a log axis, so a reader sees the sharpness rise, meet the threshold and hover there while
the loss keeps falling, not monotonically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ravine.plots._style import color, plt, save

__all__ = ["StabilityPanel", "plot_stability"]


@dataclass
class StabilityPanel:
    """One run's column of :func:`plot_stability`.

    ``steps``/``sharpness``/``threshold``: the measurements (NaN or ``None`` where nothing was measured);
    ``sharpness_label`` names the quantity (``"λmax(H)"``, ``"λmax(P⁻¹H)"``), ``threshold_label`` the rule
    (``"2/η"``); ``loss_steps``/``loss``: the training loss per step; ``reached_step``: where the
    sharpness first reached the threshold (a dotted vertical line), if it did; ``reached_label`` says
    what "reached" means; ``ylabel``: this column's sharpness axis label (default: the figure's);
    ``color``: palette index.
    """

    title: str
    steps: Sequence[float]
    sharpness: Sequence[float | None]
    threshold: Sequence[float | None]
    sharpness_label: str
    threshold_label: str
    loss_steps: Sequence[float]
    loss: Sequence[float | None]
    reached_step: float | None = None
    reached_label: str = "threshold reached"
    ylabel: str | None = None
    color: int = 0


def _array(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def plot_stability(
    path: str | os.PathLike,
    panels: Sequence[StabilityPanel],
    *,
    suptitle: str = "",
    loss_label: str = "training loss",
    sharpness_axis: str = "sharpness",
) -> Path:
    """Sharpness against its threshold (top row) and the training loss (bottom row), one column per run.

    Args:
        path: where to save the figure (PNG, SVG or PDF by suffix).
        panels: the runs, one :class:`StabilityPanel` each.
        suptitle: a title over the whole figure.
        loss_label: the loss axis label (name the loss and its units).
        sharpness_axis: the sharpness axis label.

    Returns:
        The saved path.
    """
    if not panels:
        raise ValueError("panels must hold at least one StabilityPanel")
    n = len(panels)
    with plt.rc_context({"font.size": 12}):
        return _draw(path, panels, suptitle, loss_label, sharpness_axis, n)


def _draw(
    path: str | os.PathLike,
    panels: Sequence[StabilityPanel],
    suptitle: str,
    loss_label: str,
    sharpness_axis: str,
    n: int,
) -> Path:
    fig, axes = plt.subplots(
        2, n, figsize=(max(3.8 * n, 9.0), 6.4), squeeze=False, gridspec_kw={"height_ratios": [3, 2]}, sharex="col"
    )
    for j, p in enumerate(panels):
        top, bottom = axes[0, j], axes[1, j]
        steps = _array(p.steps)
        sharp, thr = _array(p.sharpness), _array(p.threshold)
        top.plot(steps, sharp, color=color(p.color), lw=1.6, marker=".", ms=3, label=p.sharpness_label)
        finite = np.isfinite(thr)
        if finite.any():
            value = thr[finite][-1]
            top.plot(
                steps[finite], thr[finite], color="black", ls="--", lw=1.2, label=f"{p.threshold_label} = {value:.4g}"
            )
            hi = np.nanmax(np.concatenate([sharp[np.isfinite(sharp)], thr[finite]]))
            top.set_ylim(0, 1.3 * hi if math.isfinite(hi) and hi > 0 else None)
        if p.reached_step is not None:
            for ax in (top, bottom):
                ax.axvline(p.reached_step, color="0.5", ls=":", lw=1)
            top.annotate(
                p.reached_label,
                (p.reached_step, 0.96),
                xycoords=("data", "axes fraction"),
                xytext=(4, 0),
                textcoords="offset points",
                fontsize=10,
                va="top",
                color="0.35",
            )
        top.set_title(p.title, fontsize=12)
        top.legend(loc="lower right", fontsize=10, framealpha=0.9)
        top.grid(alpha=0.3)
        loss = _array(p.loss)
        ok = np.isfinite(loss) & (loss > 0)
        bottom.plot(_array(p.loss_steps)[ok], loss[ok], color=color(p.color), lw=1.0)
        bottom.set_yscale("log")
        bottom.grid(alpha=0.3, which="both")
        bottom.set_xlabel("step (full-batch updates)")
        if p.ylabel is not None or j == 0:
            top.set_ylabel(p.ylabel if p.ylabel is not None else sharpness_axis)
        if j == 0:
            bottom.set_ylabel(loss_label)
    if suptitle:
        fig.suptitle(suptitle, fontsize=13)
    fig.tight_layout()
    return save(fig, path)
