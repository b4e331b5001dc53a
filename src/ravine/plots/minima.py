"""Figures of minima: paths between solutions (mode connectivity), sharp vs flat minima side by side,
sharpness measures per run, and a function-preserving rescaling against raw and normalized sharpness.

Every function takes plain data (numbers, arrays, mappings of them), draws with the project's palette
and saves the PNG atomically (:func:`ravine.plots._style.save`), returning its path. The claim
experiments ``local-minima`` and ``sharp-flat`` (:mod:`ravine.experiments.claims`) compute the data.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.ticker import FuncFormatter, MaxNLocator

from ravine.plots._style import color, plt, save

__all__ = ["plot_connectivity", "plot_measures", "plot_reparametrization", "plot_slices"]


def _positive(y: Any) -> np.ndarray:
    y = np.asarray(y, dtype=float)
    return np.where(np.isfinite(y) & (y > 0), y, np.nan)


_PLAIN = FuncFormatter(lambda v, _pos: f"{v:.3g}")


def _plain(ax, axis: str = "y") -> None:
    """Log-axis tick labels as plain numbers (``0.05``, ``2``), minor ticks too when the range is short."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(_PLAIN)
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    if lo > 0 and hi / lo < 6:
        target.set_minor_formatter(_PLAIN)
    target.get_offset_text().set_visible(False)


def _hline(ax, y: float, label: str) -> None:
    ax.axhline(y, color="0.35", linestyle=":", linewidth=1)
    ax.annotate(label, (0.01, y), xycoords=("axes fraction", "data"), fontsize=7, color="0.3", va="bottom")


def plot_connectivity(
    path: str | os.PathLike,
    t: Sequence[float],
    lines: Mapping[str, Sequence[float]],
    curves: Mapping[str, Sequence[float]],
    seeds: Sequence[int],
    train_loss: Sequence[float],
    test_loss: Sequence[float],
    test_acc: Sequence[float],
    *,
    init_loss: float,
    threshold: float,
    suptitle: str = "",
) -> Path:
    """Loss along the straight line and the fitted curve between pairs of solutions, and the per-seed results.

    Args:
        path: where to save the PNG.
        t: the path parameter of every profile (0 = first solution, 1 = second).
        lines: pair label -> training loss along the straight line.
        curves: pair label -> training loss along the fitted curve (same labels as ``lines``).
        seeds: the seeds of the solutions.
        train_loss: each seed's final training loss (nats).
        test_loss: each seed's final test loss (nats).
        test_acc: each seed's final test accuracy (fraction).
        init_loss: the training loss at initialization, drawn as a reference line.
        threshold: the barrier threshold (nats above the endpoints), drawn as a reference line.
        suptitle: the figure's title.

    Returns:
        ``path``.
    """
    t = np.asarray(t, dtype=float)
    fig, axes = plt.subplots(1, 3, figsize=(12.5, 3.8), gridspec_kw={"width_ratios": [1.5, 1, 1]})
    ax = axes[0]
    for i, name in enumerate(lines):
        lab_l, lab_c = ("straight line", "fitted Bezier curve") if i == 0 else ("_", "_")
        ax.plot(t, _positive(lines[name]), color="0.55", linestyle="--", linewidth=1.2, label=lab_l)
        ax.plot(t, _positive(curves[name]), color=color(0), linewidth=1.6, alpha=0.85, label=lab_c)
    ends = [float(np.asarray(v, dtype=float)[[0, -1]].max()) for v in lines.values()]
    _hline(ax, init_loss, f"loss at initialization ({init_loss:.2f})")
    if ends:
        _hline(ax, float(np.mean(ends)) + threshold, f"endpoints + barrier threshold ({threshold:.3g})")
    ax.set_yscale("log")
    ax.set_xlabel("t  (0 = one solution, 1 = the other)")
    ax.set_ylabel("training loss (nats)")
    ax.set_title(f"training loss along {len(lines)} paths between solutions", fontsize=10)
    ax.legend(fontsize=8, loc="lower center", framealpha=0.85)
    ax.grid(True, alpha=0.3)

    x = np.asarray(seeds, dtype=float)
    ax = axes[1]
    ax.plot(x, _positive(test_loss), "o", color=color(3), label="test")
    ax.plot(x, _positive(train_loss), "s", color=color(0), label="train")
    mean = float(np.nanmean(np.asarray(test_loss, dtype=float)))
    _hline(ax, mean, f"mean test loss {mean:.3f}")
    ax.set_yscale("log")
    ax.set_xlabel("seed")
    ax.set_ylabel("final loss (nats)")
    ax.set_title("final loss per seed", fontsize=10)
    ax.legend(fontsize=8, loc="center right")
    ax.grid(True, alpha=0.3)

    ax = axes[2]
    acc = 100 * np.asarray(test_acc, dtype=float)
    ax.plot(x, acc, "o", color=color(3))
    lo, hi = float(np.nanmin(acc)), float(np.nanmax(acc))
    pad = max(1.0, 0.5 * (hi - lo))
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("seed")
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title(f"final test accuracy per seed (range {hi - lo:.2f} points)", fontsize=10)
    ax.grid(True, alpha=0.3)
    for a in axes[1:]:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    return save(fig, path)


def plot_slices(
    path: str | os.PathLike,
    line_x: Sequence[float],
    lines: Mapping[str, Sequence[float]],
    plane_x: Sequence[float],
    planes: Mapping[str, Any],
    *,
    suptitle: str = "",
) -> Path:
    """Li et al. (2018)'s figure: 1D slices of several minima overlaid, and their 2D slices side by side.

    The 2D panels share one set of logarithmic contour levels and one colour bar, so equal colours
    are equal losses in every panel.

    Args:
        path: where to save the PNG.
        line_x: the coordinate along the (filter-normalized) direction of every 1D slice.
        lines: label -> loss along the 1D slice.
        plane_x: the coordinates of the square 2D grid (both axes).
        planes: label -> 2D array ``loss[i, j]`` at ``(plane_x[j], plane_x[i])``.
        suptitle: the figure's title.

    Returns:
        ``path``.
    """
    n = len(planes)
    fig, axes = plt.subplots(1, 1 + n, figsize=(4.0 * (1 + n), 3.7))
    fig.subplots_adjust(wspace=0.32)
    ax = axes[0]
    lx = np.asarray(line_x, dtype=float)
    for i, (name, y) in enumerate(lines.items()):
        ax.plot(lx, _positive(y), color=color(i), linewidth=1.8, label=name)
    ax.set_yscale("log")
    _plain(ax)
    ax.set_xlabel("coordinate along a filter-normalized direction")
    ax.set_ylabel("training loss (nats)")
    ax.set_title("1D slices (same random direction)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    px = np.asarray(plane_x, dtype=float)
    zs = [np.asarray(z, dtype=float) for z in planes.values()]
    finite = np.concatenate([z[np.isfinite(z) & (z > 0)] for z in zs])
    lo, hi = float(finite.min()), float(finite.max())
    levels = np.geomspace(lo, hi * (1 + 1e-9), 25)
    norm = mcolors.LogNorm(vmin=lo, vmax=hi)
    cs = None
    for k, (ax, (name, z)) in enumerate(zip(axes[1:], zip(planes, zs))):
        cs = ax.contourf(
            px, px, np.ma.masked_invalid(np.where(z > 0, z, np.nan)), levels=levels, norm=norm, cmap="viridis"
        )
        ax.contour(px, px, z, levels=levels[::3], colors="white", linewidths=0.4, alpha=0.6)
        ax.plot(0, 0, "*", color="black", ms=11, mec="white", mew=0.8)
        ax.set_aspect("equal")
        ax.set_xlabel("coordinate along d1")
        if k == 0:
            ax.set_ylabel("coordinate along d2")
        else:
            ax.tick_params(labelleft=False)
        ax.set_title(name, fontsize=10)
    cb = fig.colorbar(cs, ax=list(axes[1:]), shrink=0.9, pad=0.02)
    ticks = levels[::4]
    cb.set_ticks(ticks)
    cb.set_ticklabels([f"{v:.3g}" for v in ticks])
    cb.ax.minorticks_off()
    cb.set_label("training loss (nats, log levels)")
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    return save(fig, path)


def _paired(ax, runs: Mapping[str, Mapping[str, Any]], key: str, groups: Sequence[str], labels: Sequence[str]) -> None:
    seeds = sorted({int(v["seed"]) for v in runs.values()})
    for s in seeds:
        ys = [
            next((float(v[key]) for v in runs.values() if v["seed"] == s and v["batch"] == g), np.nan) for g in groups
        ]
        ax.plot(range(len(groups)), _positive(ys), color="0.6", linewidth=0.8, zorder=1)
    for i, g in enumerate(groups):
        ys = [float(v[key]) for v in runs.values() if v["batch"] == g]
        ax.plot([i] * len(ys), _positive(ys), "o", color=color(i), zorder=2, label=labels[i])
    ax.set_xticks(range(len(groups)), labels)
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_yscale("log")
    _plain(ax)
    ax.grid(True, alpha=0.3, axis="y")


def plot_measures(
    path: str | os.PathLike,
    runs: Mapping[str, Mapping[str, Any]],
    *,
    groups: Sequence[str],
    group_labels: Sequence[str],
    target: float,
    gd_threshold: float | None = None,
    corr: float = float("nan"),
    suptitle: str = "",
) -> Path:
    """Sharpness measures of each run by group (lines join the runs of one seed), the generalization gap
    against the top eigenvalue, and the top eigenvalue during training.

    Args:
        path: where to save the PNG.
        runs: run label -> a mapping with ``batch`` (its group), ``seed``, ``lambda_max``, ``trace``,
            ``sam``, ``keskar``, ``gap`` and optionally ``lambda_history`` (``{"step": [...],
            "lambda_max": [...]}``: the top eigenvalue during training).
        groups: the group names in ``runs``' ``batch`` field, in display order.
        group_labels: their labels.
        target: the matched training loss, for the titles.
        gd_threshold: the stability threshold (``2 / lr`` for plain SGD), drawn on the training-time
            panel when given.
        corr: Pearson's r of ``log lambda_max`` and the gap, shown in that panel's title.
        suptitle: the figure's title.

    Returns:
        ``path``.
    """
    fig, axes = plt.subplots(2, 3, figsize=(11.5, 6.9))
    specs = [
        ("lambda_max", "top Hessian eigenvalue", "lambda_max"),
        ("trace", "Hessian trace (Hutch++)", "tr(H)"),
        ("sam", "SAM sharpness (rho = 0.05)", "L(w + e) - L(w)  (nats)"),
        ("keskar", "Keskar sharpness (eps = 1e-3)", "sharpness (%)"),
    ]
    for ax, (key, title, ylabel) in zip(axes.flat, specs):
        _paired(ax, runs, key, groups, group_labels)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
    ax = axes[1, 1]
    for i, g in enumerate(groups):
        sel = [v for v in runs.values() if v["batch"] == g]
        ax.plot([v["lambda_max"] for v in sel], [v["gap"] for v in sel], "o", color=color(i), label=group_labels[i])
    ax.set_xscale("log")
    _plain(ax, "x")
    ax.set_xlabel("lambda_max")
    ax.set_ylabel("test - train loss (nats)")
    ax.set_title(f"generalization gap vs sharpness (r = {corr:.2f} in log lambda)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    ax = axes[1, 2]
    for v in runs.values():
        h = v.get("lambda_history") or {}
        if len(h.get("step", [])):
            i = list(groups).index(v["batch"])
            ax.plot(h["step"], _positive(h["lambda_max"]), color=color(i), alpha=0.7, linewidth=1.2)
    for i, lab in enumerate(group_labels):
        ax.plot([], [], color=color(i), label=lab)
    if gd_threshold is not None:
        _hline(ax, gd_threshold, f"2 / lr = {gd_threshold:.3g}")
    ax.set_yscale("log")
    _plain(ax)
    ax.set_xlabel("step")
    ax.set_ylabel("lambda_max (256 training samples)")
    ax.set_title("top eigenvalue during training", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, alpha=0.3)
    fig.suptitle(suptitle or f"Sharpness at training loss <= {target:g}", fontsize=11)
    fig.tight_layout()
    return save(fig, path)


def plot_reparametrization(
    path: str | os.PathLike,
    alphas: Sequence[float],
    lambda_max: Sequence[float],
    line_x: Sequence[float],
    lines: Mapping[str, Sequence[float]],
    *,
    suptitle: str = "",
) -> Path:
    """Raw sharpness against a function-preserving rescaling, and the filter-normalized slices that ignore it.

    Args:
        path: where to save the PNG.
        alphas: the rescaling factors (1 = the original network).
        lambda_max: the top Hessian eigenvalue at each factor.
        line_x: the coordinate along the filter-normalized direction.
        lines: label -> loss along the filter-normalized 1D slice (the original and each rescaling).
        suptitle: the figure's title.

    Returns:
        ``path``.
    """
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.7))
    ax = axes[0]
    labels = [f"a = {a:g}" + (" (original)" if a == 1 else "") for a in alphas]
    ax.bar(range(len(alphas)), lambda_max, color=[color(i) for i in range(len(alphas))])
    for i, v in enumerate(lambda_max):
        ax.annotate(f"{v:.3g}", (i, v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(alphas)), labels)
    ax.set_ylim(0, 1.12 * max(lambda_max))
    ax.set_ylabel("lambda_max (training loss)")
    ax.set_title("raw sharpness: same function, different numbers", fontsize=10)
    ax.grid(True, alpha=0.3, axis="y")
    ax = axes[1]
    lx = np.asarray(line_x, dtype=float)
    styles = ["-", "--", ":", "-."]
    for i, (name, y) in enumerate(lines.items()):
        ax.plot(
            lx, _positive(y), color=color(i), linestyle=styles[i % len(styles)], linewidth=2.2 - 0.4 * i, label=name
        )
    ax.set_yscale("log")
    _plain(ax)
    ax.set_xlabel("coordinate along a filter-normalized direction")
    ax.set_ylabel("training loss (nats)")
    ax.set_title("filter-normalized 1D slices: identical", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    return save(fig, path)
