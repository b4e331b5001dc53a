"""Figures of the claim experiments: multi-panel line plots, lr x weight-decay heatmaps, grouped bars.

The experiments (:mod:`ravine.experiments.claims`) describe what to draw as plain data (:class:`Series`,
:class:`Panel`, :class:`Heatmap`, :class:`Bars`); the functions here draw it with the project's
palette and save it atomically (:func:`ravine.plots._style.save`). Non-finite values (diverged runs) are
left out of line plots, marked with a cross in heatmaps and reported in the panel's note.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ravine.plots._style import color, panel_grid, plt, reference_lines, save

__all__ = ["Series", "Panel", "Heatmap", "Bars", "plot_panels", "plot_heatmaps", "plot_bars"]


@dataclass
class Series:
    """One line: ``x`` and ``y`` arrays, a label, and optional colour index / line style / markers."""

    label: str
    x: Sequence[float] | np.ndarray
    y: Sequence[float] | np.ndarray
    color: int | str | None = None
    linestyle: str = "-"
    marker: str | None = None
    alpha: float = 1.0
    linewidth: float = 1.6
    markevery: Sequence[int] | None = None


@dataclass
class Panel:
    """One axes: title, axis labels, log scales, its series, reference lines and a small note."""

    title: str
    xlabel: str
    ylabel: str
    series: list[Series]
    logx: bool = False
    logy: bool = False
    hlines: list[tuple[float, str]] = field(default_factory=list)
    vlines: list[tuple[float, str]] = field(default_factory=list)
    note: str = ""
    ylim: tuple[float | None, float | None] | None = None
    legend: bool = True


@dataclass
class Heatmap:
    """A grid ``z[i_y, i_x]`` over log-spaced ``x_values``/``y_values`` with optional marked points.

    ``points`` are ``(x, y)`` pairs drawn as white dots joined by a line (e.g. the best weight decay of
    each learning rate) and ``fit`` an optional ``(slope, intercept)`` of ``log10 y = slope log10 x + b``.
    """

    title: str
    z: np.ndarray
    x_values: Sequence[float]
    y_values: Sequence[float]
    x_label: str
    y_label: str
    points: list[tuple[float, float]] = field(default_factory=list)
    fit: tuple[float, float] | None = None


@dataclass
class Bars:
    """Grouped bars: ``values[group][category]``, with optional error half-widths of the same shape."""

    title: str
    ylabel: str
    groups: list[str]
    categories: list[str]
    values: np.ndarray
    errors: np.ndarray | None = None
    ylim: tuple[float | None, float | None] | None = None
    hlines: list[tuple[float, str]] = field(default_factory=list)


def _finite(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _draw_panel(ax, panel: Panel) -> None:
    dropped = []
    for i, s in enumerate(panel.series):
        x = np.asarray(s.x, dtype=float)
        y = np.asarray(s.y, dtype=float)
        xf, yf = _finite(x, y)
        if panel.logy:
            keep = yf > 0
            xf, yf = xf[keep], yf[keep]
        if len(xf) < len(x):
            dropped.append(s.label)
        c = s.color if isinstance(s.color, str) else color(i if s.color is None else s.color)
        ax.plot(
            xf,
            yf,
            label=s.label,
            color=c,
            linestyle=s.linestyle,
            marker=s.marker,
            alpha=s.alpha,
            linewidth=s.linewidth,
            markersize=4,
            markevery=s.markevery,
        )
    reference_lines(ax, panel.hlines, panel.vlines)
    if panel.logx:
        ax.set_xscale("log")
    if panel.logy:
        ax.set_yscale("log")
    if panel.ylim is not None:
        ax.set_ylim(*panel.ylim)
    ax.set_title(panel.title, fontsize=10)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    ax.grid(True, alpha=0.3)
    if panel.legend and panel.series:
        ax.legend(fontsize=7, loc="best", framealpha=0.8)
    note = panel.note
    if dropped:
        note = (note + "; " if note else "") + "non-finite values omitted: " + ", ".join(dropped[:4])
    if note:
        ax.text(0.99, 0.01, note, transform=ax.transAxes, fontsize=7, ha="right", va="bottom", color="0.3", wrap=True)


def plot_panels(path: str | os.PathLike, panels: Sequence[Panel], suptitle: str = "", ncols: int | None = None) -> Path:
    """Draw ``panels`` side by side (``ncols`` per row, default all in one row up to 3) and save a PNG."""
    return panel_grid(path, panels, _draw_panel, suptitle, ncols, panel_size=(4.6, 3.6))


def plot_heatmaps(path: str | os.PathLike, maps: Sequence[Heatmap], cbar_label: str, suptitle: str = "") -> Path:
    """Draw one heatmap per entry of ``maps`` with a shared colour scale (2nd-90th percentile of the
    finite values, so one diverged corner does not wash out the rest); non-finite cells get an ``x``."""
    if not maps:
        raise ValueError("maps must not be empty")
    vals = np.concatenate([np.asarray(hm.z, dtype=float).ravel() for hm in maps])
    vals = vals[np.isfinite(vals)]
    vmin, vmax = (np.percentile(vals, 2), np.percentile(vals, 90)) if len(vals) else (0.0, 1.0)
    if vmax <= vmin:
        vmax = vmin + 1e-9
    # wspace: room for each panel's own y label between the panels
    fig, axes = plt.subplots(1, len(maps), figsize=(5.0 * len(maps), 4.2), squeeze=False, gridspec_kw={"wspace": 0.35})
    im = None
    for ax, hm in zip(axes.flat, maps):
        z = np.asarray(hm.z, dtype=float)
        lx, ly = np.log10(np.asarray(hm.x_values, float)), np.log10(np.asarray(hm.y_values, float))
        im = ax.imshow(
            np.clip(z, vmin, vmax),
            origin="lower",
            aspect="auto",
            cmap="viridis_r",
            vmin=vmin,
            vmax=vmax,
            extent=_extent(lx, ly),
        )
        for iy in range(z.shape[0]):
            for ix in range(z.shape[1]):
                if not np.isfinite(z[iy, ix]):
                    ax.plot(lx[ix], ly[iy], "x", color="red", markersize=8)
        if hm.points:
            px, py = zip(*hm.points)
            ax.plot(
                np.log10(px),
                np.log10(py),
                "o-",
                color="white",
                markeredgecolor="black",
                markersize=6,
                linewidth=1.2,
                label="best per column",
            )
        if hm.fit is not None:
            slope, icpt = hm.fit
            ax.plot(lx, slope * lx + icpt, "--", color="orange", linewidth=1.5, label=f"fit: slope {slope:.2f}")
        if hm.points or hm.fit is not None:
            ax.legend(fontsize=7, loc="upper right")
        ax.set_xticks(lx)
        ax.set_xticklabels([f"{v:.0e}" for v in hm.x_values], fontsize=7, rotation=30)
        ax.set_yticks(ly)
        ax.set_yticklabels([f"{v:.0e}" for v in hm.y_values], fontsize=7)
        ax.set_xlabel(hm.x_label)
        ax.set_ylabel(hm.y_label)
        ax.set_title(hm.title, fontsize=10)
    fig.colorbar(im, ax=list(axes.flat), label=cbar_label, shrink=0.9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    return save(fig, path)


def _extent(lx: np.ndarray, ly: np.ndarray) -> tuple[float, float, float, float]:
    def edges(v: np.ndarray) -> tuple[float, float]:
        if len(v) == 1:
            return v[0] - 0.5, v[0] + 0.5
        d0, d1 = v[1] - v[0], v[-1] - v[-2]
        return v[0] - d0 / 2, v[-1] + d1 / 2

    x0, x1 = edges(lx)
    y0, y1 = edges(ly)
    return x0, x1, y0, y1


def plot_bars(path: str | os.PathLike, bars: Sequence[Bars], suptitle: str = "") -> Path:
    """Draw grouped bar charts side by side (one colour per category, error bars when given)."""
    if not bars:
        raise ValueError("bars must not be empty")
    fig, axes = plt.subplots(1, len(bars), figsize=(4.8 * len(bars), 3.8), squeeze=False)
    for ax, b in zip(axes.flat, bars):
        v = np.asarray(b.values, dtype=float)
        ng, nc = v.shape
        width = 0.8 / nc
        x = np.arange(ng)
        for j in range(nc):
            err = None if b.errors is None else np.asarray(b.errors, float)[:, j]
            ax.bar(
                x + (j - (nc - 1) / 2) * width,
                np.nan_to_num(v[:, j], nan=0.0),
                width,
                yerr=err,
                # one category: colour each group's bar; several: one colour per category
                color=[color(i) for i in range(ng)] if nc == 1 else color(j),
                label=b.categories[j],
                capsize=3,
            )
        for y, lab in b.hlines:
            ax.axhline(y, color="0.3", linestyle=":", linewidth=1.2)
            ax.annotate(lab, (0.01, y), xycoords=("axes fraction", "data"), fontsize=7, color="0.3", va="bottom")
        ax.set_xticks(x)
        ax.set_xticklabels(b.groups, fontsize=8)
        ax.set_ylabel(b.ylabel)
        ax.set_title(b.title, fontsize=10)
        if b.ylim is not None:
            ax.set_ylim(*b.ylim)
        ax.grid(True, axis="y", alpha=0.3)
        if nc > 1:
            ax.legend(fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    return save(fig, path)
