"""Figures of trends along one axis (data size, condition number), with the spread over seeds.

A claim that holds only from some scale on is shown as a trend: the key quantity against the axis it
depends on (the cost of an update against the training-set size, a loss ratio against the condition
number), one line per arm through the mean over seeds, a band from the lowest to the highest seed,
reference lines (ratio 1: no difference), fitted power laws, and the measured crossover as a shaded
bracket between the two sizes it lies between. The experiments compute every number; the functions
here only draw them (:class:`Trend`, :class:`TrendPanel`, :func:`plot_trends`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ravine.plots._style import color, panel_grid, reference_lines

__all__ = ["Trend", "TrendPanel", "plot_trends"]


@dataclass
class Trend:
    """One arm along the axis: ``x`` (``n``), ``y`` (``n`` or ``(n, seeds)``), drawn as the mean over seeds
    with a band from the lowest to the highest seed (no band for one seed).

    ``color`` is a palette index or a colour string; ``linestyle="--"`` and ``marker=None`` suit a fitted
    line; ``spread`` names what the columns of ``y`` are (``"seeds"``, ``"starts"``) in the legend.
    Non-finite values (a run that diverged, a size where nothing was measured) are left out.
    """

    label: str
    x: Sequence[float] | np.ndarray
    y: Sequence[float] | Sequence[Sequence[float]] | np.ndarray
    color: int | str | None = None
    linestyle: str = "-"
    marker: str | None = "o"
    spread: str = "seeds"


@dataclass
class TrendPanel:
    """One axes of trends: title, axis labels (with units), log scales, reference lines and spans.

    ``hlines``/``vlines`` are ``(value, label)`` pairs drawn as labelled dotted/dashed lines; ``spans`` are
    ``(low, high, label)`` shaded x-intervals (a crossover bracketed between two measured sizes); ``note``
    is a short grey text in the lower right corner.
    """

    title: str
    xlabel: str
    ylabel: str
    trends: list[Trend]
    logx: bool = True
    logy: bool = False
    hlines: list[tuple[float, str]] = field(default_factory=list)
    vlines: list[tuple[float, str]] = field(default_factory=list)
    spans: list[tuple[float, float, str]] = field(default_factory=list)
    note: str = ""


def _seed_matrix(y: Sequence[float] | Sequence[Sequence[float]] | np.ndarray, n: int) -> np.ndarray:
    m = np.asarray(y, dtype=float)
    if m.ndim == 1:
        m = m[:, None]
    if m.ndim != 2 or m.shape[0] != n:
        raise ValueError(f"y must have shape ({n},) or ({n}, seeds), got {np.asarray(y).shape}")
    return m


def _stats(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max over the finite seeds of each row (NaN where a row has none)."""
    mean = np.full(m.shape[0], np.nan)
    lo, hi = mean.copy(), mean.copy()
    for i, row in enumerate(m):
        row = row[np.isfinite(row)]
        if len(row):
            mean[i], lo[i], hi[i] = row.mean(), row.min(), row.max()
    return mean, lo, hi


def _draw(ax, panel: TrendPanel) -> None:
    for i, t in enumerate(panel.trends):
        x = np.asarray(t.x, dtype=float)
        mean, lo, hi = _stats(_seed_matrix(t.y, len(x)))
        keep = np.isfinite(x) & np.isfinite(mean)
        if panel.logy:
            keep &= mean > 0
        c = t.color if isinstance(t.color, str) else color(i if t.color is None else t.color)
        seeds = _seed_matrix(t.y, len(x)).shape[1]
        label = t.label + (f" (mean, band: {seeds} {t.spread})" if seeds > 1 else "")
        ax.plot(x[keep], mean[keep], color=c, linestyle=t.linestyle, marker=t.marker, markersize=4, label=label)
        if seeds > 1 and keep.any():
            ax.fill_between(x[keep], lo[keep], hi[keep], color=c, alpha=0.18, linewidth=0)
    reference_lines(ax, panel.hlines, panel.vlines)
    for lo_x, hi_x, lab in panel.spans:
        ax.axvspan(lo_x, hi_x, color="0.5", alpha=0.15, linewidth=0)
        ax.annotate(
            lab,
            (math.sqrt(lo_x * hi_x) if panel.logx else (lo_x + hi_x) / 2, 0.02),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            color="0.25",
            ha="center",
            va="bottom",
        )
    if panel.logx:
        ax.set_xscale("log")
    if panel.logy:
        ax.set_yscale("log")
    ax.set_title(panel.title, fontsize=10)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    ax.grid(True, alpha=0.3, which="both" if panel.logx else "major", linewidth=0.5)
    if panel.trends:
        ax.legend(fontsize=7, loc="best", framealpha=0.85)
    if panel.note:
        ax.text(
            0.99, 0.99, panel.note, transform=ax.transAxes, fontsize=7, ha="right", va="top", color="0.3", wrap=True
        )


def plot_trends(
    path: str | os.PathLike, panels: Sequence[TrendPanel], suptitle: str = "", ncols: int | None = None
) -> Path:
    """Draw ``panels`` (up to 3 per row unless ``ncols`` says otherwise) and save the figure atomically.

    Args:
        path: where the PNG goes (written to a temporary name, then renamed).
        panels: the panels, left to right, then the next row.
        suptitle: one line above the panels (the setting: model, data, budget); empty for none.
        ncols: panels per row (default: all in one row, at most 3).

    Returns:
        ``path`` as a :class:`pathlib.Path`.
    """
    return panel_grid(path, panels, _draw, suptitle, ncols)
