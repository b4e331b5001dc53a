"""Shared figure conventions: the Agg backend, one palette, atomic saves, labelled reference lines, panel grids."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from ravine._io import atomic_path  # noqa: E402

# One colour per optimizer, stable across every figure of the project (tab10 order).
PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]


def color(i: int) -> str:
    """The colour of the i-th series."""
    return PALETTE[i % len(PALETTE)]


def save(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save ``fig`` to ``path`` atomically (temporary file in the same folder, then rename).

    The format follows the suffix (``.png``, ``.svg``, ``.pdf``). The figure is closed afterwards.
    """
    path = Path(path)
    suffix = path.suffix or ".png"
    try:
        with atomic_path(path, suffix=suffix) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=suffix.lstrip("."))
    finally:
        plt.close(fig)
    return path


def reference_lines(ax, hlines=(), vlines=()) -> None:
    """Labelled reference lines: ``hlines`` as ``(y, label)`` dotted across, ``vlines`` as ``(x, label)`` dashed."""
    for y, lab in hlines:
        ax.axhline(y, color="0.35", linestyle=":", linewidth=1)
        ax.annotate(lab, (0.01, y), xycoords=("axes fraction", "data"), fontsize=7, color="0.3", va="bottom")
    for x, lab in vlines:
        ax.axvline(x, color="0.35", linestyle="--", linewidth=1)
        ax.annotate(lab, (x, 0.98), xycoords=("data", "axes fraction"), fontsize=7, color="0.3", rotation=90,
                    va="top", ha="right")


def panel_grid(
    path: str | os.PathLike,
    panels: Sequence[Any],
    draw: Callable[[Any, Any], None],
    suptitle: str = "",
    ncols: int | None = None,
    panel_size: tuple[float, float] = (4.8, 3.8),
) -> Path:
    """Draw ``panels`` on a grid of axes with ``draw(ax, panel)`` and save the figure.

    Args:
        path: where to write it (the format from the suffix).
        panels: what each axis shows, in reading order (at least one).
        draw: draws one panel on one axis.
        suptitle: one line above the panels; empty for none.
        ncols: panels per row (default: all in one row, at most 3); unused axes are hidden.
        panel_size: width and height of one panel in inches.

    Returns:
        ``path`` as a :class:`pathlib.Path`.
    """
    if not panels:
        raise ValueError("panels must not be empty")
    n = len(panels)
    ncols = ncols or min(n, 3)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        draw(ax, panel)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    return save(fig, path)
