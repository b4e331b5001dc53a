"""Figures of the landscape claims: where runs end on a 2D surface, plateaus, curvature along training.

The experiments ``sgd-noise``, ``saddles`` and ``adam-landscape`` (:mod:`ravine.experiments.claims`)
describe what to draw as plain data and :func:`plot_grid` draws it in one figure:

- :class:`SurfacePanel`: a 2D surface's banded contours (the same drawing as
  :func:`ravine.plots.surfaces.plot_contour`: minima as stars, saddles as plus signs) with clouds of
  points (:class:`Points`: start and end points of many runs, e.g. with and without gradient noise)
  and paths (:class:`Path2D`: e.g. Adam's and gradient descent's steps on the narrow valley);
- any :class:`ravine.plots.experiments.Panel` (lines: loss plateaus with and without noise, the
  Hessian's smallest eigenvalue and index along training, condition numbers of ``H`` and ``P^-1 H``).

Nothing is computed here except the surface's values on a grid for the contours.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from ravine.plots._style import color, panel_grid, plt
from ravine.plots.experiments import Panel, _draw_panel
from ravine.plots.surfaces import _draw_surface

__all__ = ["Points", "Path2D", "SurfacePanel", "plot_grid"]


@dataclass
class Points:
    """A cloud of 2D points ``xy`` (shape ``(N, 2)``) drawn as markers with one legend entry."""

    label: str
    xy: Sequence[Sequence[float]] | np.ndarray
    color: int | str | None = None
    marker: str = "o"
    size: float = 16.0
    alpha: float = 0.8


@dataclass
class Path2D:
    """One trajectory ``xy`` (shape ``(T, 2)``) drawn as a line with a dot at every step."""

    label: str
    xy: Sequence[Sequence[float]] | np.ndarray
    color: int | str | None = None
    marker: str | None = "."


@dataclass
class SurfacePanel:
    """One axes: the contours of ``surface`` (a :class:`ravine.surfaces.Surface`) with points and paths.

    ``xlim``/``ylim`` zoom into part of the surface's domain (default: the whole domain).
    """

    title: str
    surface: object
    points: list[Points] = field(default_factory=list)
    paths: list[Path2D] = field(default_factory=list)
    note: str = ""
    xlim: tuple[float, float] | None = None
    ylim: tuple[float, float] | None = None


def _color(c: int | str | None, i: int) -> str:
    return c if isinstance(c, str) else color(i if c is None else c)


def _draw_surface_panel(ax, panel: SurfacePanel) -> None:
    _draw_surface(ax, panel.surface, n=200, colorbar=False)
    for i, pts in enumerate(panel.points):
        xy = np.asarray(pts.xy, dtype=float).reshape(-1, 2)
        ax.scatter(
            xy[:, 0],
            xy[:, 1],
            s=pts.size,
            marker=pts.marker,
            color=_color(pts.color, i),
            alpha=pts.alpha,
            edgecolors="white",
            linewidths=0.4,
            label=pts.label,
            zorder=5,
        )
    for i, p in enumerate(panel.paths):
        xy = np.asarray(p.xy, dtype=float).reshape(-1, 2)
        keep = np.isfinite(xy).all(axis=1)
        c = _color(p.color, i + len(panel.points))
        ax.plot(xy[keep, 0], xy[keep, 1], color=c, marker=p.marker, ms=3, lw=1.4, label=p.label, zorder=5)
        if keep.any():
            ax.plot(*xy[keep][0], marker="o", ms=7, mfc="white", mec=c, ls="none", zorder=6)
    minima = getattr(panel.surface, "minima", [])
    handles, labels = ax.get_legend_handles_labels()
    if any(m.kind == "global" for m in minima):
        handles.append(plt.Line2D([], [], marker="*", ms=11, mfc="white", mec="black", ls="none"))
        labels.append("global minimum")
    if any(m.kind == "local" for m in minima):
        handles.append(plt.Line2D([], [], marker="*", ms=9, mfc="none", mec="grey", ls="none"))
        labels.append("local minimum")
    if getattr(panel.surface, "saddles", []):
        handles.append(plt.Line2D([], [], marker="P", ms=8, mfc="white", mec="black", ls="none"))
        labels.append("saddle point")
    if handles:
        ax.legend(handles, labels, fontsize=7, loc="best", framealpha=0.85)
    if panel.xlim is not None:
        ax.set_xlim(*panel.xlim)
    if panel.ylim is not None:
        ax.set_ylim(*panel.ylim)
    ax.set_title(panel.title, fontsize=10)
    if panel.note:
        ax.text(
            0.99,
            0.01,
            panel.note,
            transform=ax.transAxes,
            fontsize=7,
            ha="right",
            va="bottom",
            color="0.1",
            bbox={"facecolor": "white", "alpha": 0.75, "edgecolor": "none", "pad": 1.5},
        )


def plot_grid(
    path: str | os.PathLike, panels: Sequence[SurfacePanel | Panel], suptitle: str = "", ncols: int | None = None
) -> Path:
    """Draw ``panels`` (surface panels and line panels, in order, ``ncols`` per row, default up to 3) and
    save the figure atomically.

    Args:
        path: where to write the figure (PNG by its suffix).
        panels: :class:`SurfacePanel` or :class:`ravine.plots.experiments.Panel` entries.
        suptitle: a title over all panels.
        ncols: panels per row (default ``min(len(panels), 3)``).

    Returns:
        The path written.
    """
    for i, p in enumerate(panels):
        if not isinstance(p, (SurfacePanel, Panel)):
            raise TypeError(f"panels[{i}] must be a SurfacePanel or a Panel, got {type(p).__name__}")
    return panel_grid(path, panels, _draw_any, suptitle, ncols, panel_size=(4.8, 3.9))


def _draw_any(ax, panel: SurfacePanel | Panel) -> None:
    """A surface panel, or a line panel with whole-number x ticks where x counts (seeds, steps of 5)."""
    if isinstance(panel, SurfacePanel):
        _draw_surface_panel(ax, panel)
        return
    _draw_panel(ax, panel)
    xs = [np.asarray(s.x, dtype=float) for s in panel.series]
    whole = xs and all(np.all(np.isfinite(x) & (x == np.round(x))) for x in xs)
    if whole and not panel.logx and np.ptp(np.concatenate(xs)) <= 20:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # seeds, counts: no 0.25 ticks
