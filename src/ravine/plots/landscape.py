"""Figures of loss-landscape slices (:mod:`ravine.landscape`): contours, a 3D surface, 1D curves.

Every function takes :class:`ravine.landscape.Landscape` results, returns the matplotlib figure, and
when ``path`` is given saves it atomically (:func:`ravine.plots._style.save`, which closes the figure)
and returns the path instead. Unfilled grid points (a partial, resumable grid) are masked. The centre
of a plane, ``(0, 0)``, is marked with a black star; named points carried by the directions (three
checkpoints, a PCA trajectory) are drawn on top.

``log=True`` spaces contour levels (and colours) geometrically between the smallest and largest
loss, which resolves the basin around a minimum that linear levels flatten into one colour.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.ticker import FuncFormatter
from mpl_toolkits.axes_grid1 import make_axes_locatable

from ravine.plots._style import color, plt, save

__all__ = ["contour", "surface", "curves"]


def _values(ls, which: str) -> np.ndarray:
    if which not in ("loss", "metric"):
        raise ValueError(f"which must be 'loss' or 'metric', got {which!r}")
    z = ls.loss if which == "loss" else ls.metric
    if z is None:
        raise ValueError("which='metric' needs a landscape computed with a metric")
    return np.where(ls.filled, z, np.nan)


def _label(ls, which: str) -> str:
    if which == "metric":
        return ls.metric_name or "metric"
    return f"loss ({ls.info.get('loss_fn', 'loss')})" if ls.info.get("loss_fn") else "loss"


def _dir_label(ls) -> str:
    d = ls.directions
    kind = d.get("kind", "?")
    if kind == "random":
        return f"random, {d.get('norm')}-normalized, seed {d.get('seed')}"
    if kind == "pca":
        ev = d.get("explained_variance", [0, 0])
        return f"PCA of {d.get('n_iterates')} iterates ({100 * ev[0]:.1f}% + {100 * ev[1]:.1f}% variance)"
    return kind


def _levels(z: np.ndarray, levels: int, log: bool):
    finite = z[np.isfinite(z)]
    if finite.size == 0:
        raise ValueError("landscape has no finite values to draw")
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        hi = lo + max(abs(lo), 1.0) * 1e-6
    if log:
        if lo <= 0:
            raise ValueError(f"log=True needs positive values; the smallest is {lo!r}")
        return np.geomspace(lo, hi, levels), mcolors.LogNorm(lo, hi)
    return np.linspace(lo, hi, levels), mcolors.Normalize(lo, hi)


def _check_plane(ls) -> None:
    if getattr(ls, "kind", None) != "plane":
        raise ValueError(f"expected a plane landscape, got kind={getattr(ls, 'kind', type(ls).__name__)!r}")


def _finish(fig, path):
    if path is not None:
        return save(fig, path)
    return fig


def _mark_points(ax, ls, three_d: bool = False, z_of=None) -> None:
    pts = ls.points or {}
    traj = pts.get("trajectory")
    if traj is not None and not three_d:
        t = np.asarray(traj)
        ax.plot(
            t[:, 0],
            t[:, 1],
            "-o",
            color="white",
            ms=3.5,
            lw=1.2,
            mec="black",
            mew=0.5,
            label="trajectory (projected)",
            zorder=4,
        )
    for name, xy in pts.items():
        if name in ("trajectory", "final", "start", "end") or len(xy) != 2:
            continue
        if three_d:
            ax.scatter([xy[0]], [xy[1]], [z_of(xy)], color="white", edgecolor="black", s=30, zorder=5)
        else:
            ax.plot(*xy, "o", color="white", mec="black", ms=6, zorder=5)
            ax.annotate(
                name,
                xy,
                xytext=(4, 4),
                textcoords="offset points",
                fontsize=9,
                color="black",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.7, "lw": 0},
            )


def contour(
    ls,
    *,
    filled: bool = True,
    levels: int = 30,
    log: bool = False,
    which: str = "loss",
    title: str | None = None,
    ax=None,
    path: str | os.PathLike | None = None,
):
    """Contour (``filled=False``) or filled contour (default) of a plane, with the centre marked.

    ``levels``: number of levels, linear or (``log=True``) geometric between the extreme values.
    ``which``: ``"loss"`` or ``"metric"``. Axes are the coordinates along ``d1`` and ``d2``; the
    title names the directions and the batch-norm mode.
    """
    _check_plane(ls)
    if not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be an int >= 2, got {levels!r}")
    z = _values(ls, which)
    lv, norm = _levels(z, levels, log)
    own = ax is None
    fig, ax = plt.subplots(figsize=(6.2, 5.0)) if own else (ax.figure, ax)
    zm = np.ma.masked_invalid(z)
    if filled:
        cs = ax.contourf(ls.x, ls.y, zm, levels=lv, norm=norm, cmap="viridis")
        ax.contour(ls.x, ls.y, zm, levels=lv[:: max(1, levels // 10)], colors="white", linewidths=0.4, alpha=0.6)
    else:
        cs = ax.contour(ls.x, ls.y, zm, levels=lv, norm=norm, cmap="viridis", linewidths=1.0)
        ax.clabel(cs, lv[:: max(1, levels // 6)], fontsize=7, fmt="%.3g")
    cax = make_axes_locatable(ax).append_axes("right", size="4%", pad=0.12)
    cb = fig.colorbar(cs, cax=cax)
    ticks = lv[:: max(1, len(lv) // 7)]
    cb.set_ticks(ticks)
    cb.set_ticklabels([f"{t:.3g}" for t in ticks])
    cb.ax.minorticks_off()
    cb.set_label(_label(ls, which) + (" (log levels)" if log else ""))
    _mark_points(ax, ls)
    ax.plot(0, 0, "*", color="black", ms=12, mec="white", mew=0.8, label="centre", zorder=6)
    ax.set_xlabel("coordinate along d1")
    ax.set_ylabel("coordinate along d2")
    ax.set_xlim(ls.x[0], ls.x[-1])
    ax.set_ylim(ls.y[0], ls.y[-1])
    ax.set_aspect("equal" if _similar_spans(ls) else "auto")
    sub = f"batch norm: {ls.batch_norm}, n = {ls.data.get('n')}"
    if ls.off_plane is not None and len(ls.off_plane):
        sub += f"; iterates up to {float(np.max(ls.off_plane)):.3g} off the plane"
    ax.set_title(title or f"{_dir_label(ls)}\n{sub}", fontsize=10)
    ax.legend(loc="upper right", fontsize=8, framealpha=0.8)
    return _finish(fig, path) if own else fig


def _similar_spans(ls) -> bool:
    sx, sy = np.ptp(ls.x), np.ptp(ls.y)
    return 0.5 <= sx / sy <= 2.0


def surface(
    ls,
    *,
    log: bool = False,
    which: str = "loss",
    title: str | None = None,
    elev: float = 35.0,
    azim: float = -60.0,
    path: str | os.PathLike | None = None,
):
    """3D surface of a plane (``log=True`` draws ``log10`` of the values), the centre marked."""
    _check_plane(ls)
    z = _values(ls, which)
    if log:
        if np.nanmin(z) <= 0:
            raise ValueError(f"log=True needs positive values; the smallest is {np.nanmin(z)!r}")
        z = np.log10(z)
    xx, yy = np.meshgrid(ls.x, ls.y)
    fig = plt.figure(figsize=(7.0, 5.4))
    ax = fig.add_subplot(projection="3d")
    surf = ax.plot_surface(
        xx, yy, np.ma.masked_invalid(z), cmap="viridis", linewidth=0, antialiased=True, rstride=1, cstride=1, alpha=0.95
    )
    j, i = np.argmin(np.abs(ls.x)), np.argmin(np.abs(ls.y))
    if np.isfinite(z[i, j]):
        ax.scatter(
            [ls.x[j]],
            [ls.y[i]],
            [z[i, j]],
            marker="*",
            s=120,
            color="black",
            depthshade=False,
            label="centre",
            zorder=10,
        )
        ax.legend(loc="upper left", fontsize=8)
    ax.set_xlabel("d1")
    ax.set_ylabel("d2")
    lab = _label(ls, which)
    ax.set_zlabel(f"log10 {lab}" if log else lab)
    ax.view_init(elev=elev, azim=azim)
    fig.colorbar(surf, ax=ax, shrink=0.6, pad=0.1)
    ax.set_title(title or f"{_dir_label(ls)}; batch norm: {ls.batch_norm}", fontsize=10)
    return _finish(fig, path)


def curves(
    lines,
    labels: Sequence[str] | None = None,
    *,
    which: str = "loss",
    log: bool = False,
    title: str | None = None,
    xlabel: str = "coordinate along the direction",
    path: str | os.PathLike | None = None,
):
    """Several 1D slices on one axis: each a line ``Landscape`` (or a ``(x, values)`` pair).

    ``labels`` default to the directions' descriptions. Named points of a line (``start``/``end`` of a
    Goodfellow interpolation) are marked. ``log=True`` uses a logarithmic value axis.
    """
    if (
        not isinstance(lines, Sequence)
        or isinstance(lines, tuple)
        and len(lines) == 2
        and not hasattr(lines[0], "kind")
    ):
        lines = [lines]
    if len(lines) == 0:
        raise ValueError("curves needs at least one line")
    if labels is not None and len(labels) != len(lines):
        raise ValueError(f"labels has {len(labels)} entries for {len(lines)} lines")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for k, item in enumerate(lines):
        if hasattr(item, "kind"):
            if item.kind != "line":
                raise ValueError(f"curves draws line landscapes; item {k} is a {item.kind!r}")
            x, y = item.x, _values(item, which)
            label = labels[k] if labels else _dir_label(item)
            marks = [v[0] for n, v in (item.points or {}).items() if len(v) == 1]
        else:
            x, y = (np.asarray(v, dtype=float) for v in item)
            label = labels[k] if labels else f"line {k}"
            marks = []
        ax.plot(x, y, color=color(k), lw=1.8, label=label)
        for m in marks:
            ym = np.interp(m, x, y)
            ax.plot(m, ym, "o", color=color(k), mec="black", ms=6, zorder=4)
    ax.axvline(0.0, color="0.6", lw=0.8, ls=":", zorder=0)
    if log:
        ax.set_yscale("log")
        fmt = FuncFormatter(lambda v, _: f"{v:.3g}")
        ax.yaxis.set_major_formatter(fmt)
        ax.yaxis.set_minor_formatter(fmt)
    ax.set_xlabel(xlabel)
    first = lines[0]
    ax.set_ylabel(_label(first, which) if hasattr(first, "kind") else which)
    ax.set_title(title or "loss along 1D slices", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, path)
