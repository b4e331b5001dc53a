"""Figures of the 2D world: surfaces with trajectories, loss curves, sweep heatmaps, animated GIFs.

Every function draws what :mod:`ravine.simulate` computed; nothing is recomputed here except the surface's
values on a grid for the contours. Colours follow :func:`ravine.plots._style.color` (one per run, in order).

- :func:`plot_contour` draws filled contours at quantile levels of the surface's values on its domain (so
  that a banana valley and a steep wall are both visible), the global minima as white stars, local minima as
  hollow stars, saddles as plus signs, each run's path in its colour, the start as a white-edged circle, and
  a large ``X`` where a diverged run left the box (or where it diverged, if that is inside).
- :func:`plot_losses`: loss minus the known minimum on a log scale against the step (raw loss on a linear
  scale when the surface has no known minimum); an ``X`` at the step a run diverged.
- :func:`plot_sweep`: a heatmap of a :class:`ravine.simulate.Sweep` (final loss gap on a log colour scale, or
  steps to tolerance), log axes for geometric value ranges, diverged cells hatched in grey, a labelled
  colour bar.
- :func:`save_trajectories_figure` puts contour and losses side by side; :func:`save_gif` animates the paths
  with matplotlib's pillow writer (no ffmpeg needed).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.patches import Patch

from ravine._io import atomic_path
from ravine._validation import Interval, Options, check
from ravine.plots._style import color, plt, save

__all__ = [
    "plot_contour",
    "plot_losses",
    "plot_sweep",
    "save_trajectories_figure",
    "save_sweep_figure",
    "save_gif",
]


def _contour_levels(Z: np.ndarray, n: int = 24) -> np.ndarray:
    finite = Z[np.isfinite(Z)]
    levels = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, n)))
    if levels.size < 3:
        lo, hi = float(finite.min()), float(finite.max())
        levels = np.linspace(lo, hi if hi > lo else lo + 1.0, n)
    return levels


def _exit_point(path: np.ndarray, k: int, domain) -> np.ndarray:
    """Where a diverged run left the box: its last point inside before step ``k`` (or at ``k``)."""
    (x0, x1), (y0, y1) = domain
    seg = path[: k + 1]
    inside = np.isfinite(seg).all(axis=1) & (seg[:, 0] >= x0) & (seg[:, 0] <= x1) & (seg[:, 1] >= y0) & (
        seg[:, 1] <= y1
    )
    idx = np.flatnonzero(inside)
    return seg[idx[-1]] if idx.size else seg[0]


def _draw_surface(ax, surface, n: int = 300, colorbar: bool = True, image: bool = False):
    """Banded contours of ``surface`` (``image=True``: the same bands as one image, much faster to redraw)."""
    X, Y, Z = surface.grid(n)
    levels = _contour_levels(Z)
    # one colour per band (BoundaryNorm): with quantile levels every band is equally visible
    norm = mcolors.BoundaryNorm(levels, ncolors=256, extend="both")
    if image:
        (x0, x1), (y0, y1) = surface.domain
        cf = ax.imshow(Z, origin="lower", extent=(x0, x1, y0, y1), cmap="viridis", norm=norm, alpha=0.9,
                       interpolation="nearest", aspect="auto")
    else:
        cf = ax.contourf(X, Y, Z, levels=levels, cmap="viridis", norm=norm, alpha=0.9, extend="both")
        ax.contour(X, Y, Z, levels=levels, colors="k", linewidths=0.3, alpha=0.35)
    if colorbar:
        cb = ax.figure.colorbar(cf, ax=ax, fraction=0.046, pad=0.03)
        cb.set_label("f(x, y)  (contours at quantiles of the values)")
        ticks = levels[:: max(1, len(levels) // 6)]
        cb.set_ticks(ticks)
        cb.set_ticklabels([f"{t:.3g}" for t in ticks])
    for minimum in surface.minima:
        glob = minimum.kind == "global"
        ax.plot(minimum.x, minimum.y, marker="*", ms=16 if glob else 11, mfc="white" if glob else "none",
                mec="black" if glob else "white", mew=1.2, ls="none", zorder=6)
    for s in surface.saddles:
        ax.plot(s.x, s.y, marker="P", ms=10, mfc="white", mec="black", ls="none", zorder=6)
    (x0, x1), (y0, y1) = surface.domain
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_aspect("equal" if max(x1 - x0, y1 - y0) / min(x1 - x0, y1 - y0) <= 4 else "auto")
    return cf


def _marker_legend(surface) -> list:
    handles = [plt.Line2D([], [], marker="o", ms=8, mfc="white", mec="black", ls="none", label="start")]
    if any(m.kind == "global" for m in surface.minima):
        handles.append(plt.Line2D([], [], marker="*", ms=13, mfc="white", mec="black", ls="none",
                                  label="global minimum"))
    if any(m.kind == "local" for m in surface.minima):
        handles.append(plt.Line2D([], [], marker="*", ms=10, mfc="none", mec="grey", ls="none",
                                  label="local minimum"))
    if surface.saddles:
        handles.append(plt.Line2D([], [], marker="P", ms=9, mfc="white", mec="black", ls="none",
                                  label="saddle point"))
    return handles


def plot_contour(tr, ax=None, n: int = 300, title: str | None = None, legend: bool = True):
    """Contour of ``tr.surface`` with every trajectory of ``tr`` (a :class:`ravine.simulate.Trajectories`).

    Returns the axes. Pass ``ax`` to draw into an existing figure.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 6))
    surface = tr.surface
    _draw_surface(ax, surface, n)
    handles = []
    for i, label in enumerate(tr.labels):
        c = color(i)
        path = tr.positions[i]
        k = int(tr.diverged_at[i])
        shown = path[: k + 1] if k >= 0 else path
        ax.plot(shown[:, 0], shown[:, 1], "-", color=c, lw=1.8, zorder=4)
        step = max(1, len(shown) // 40)
        ax.plot(shown[::step, 0], shown[::step, 1], "o", color=c, ms=2.5, zorder=4)
        text = label
        if k >= 0:
            px, py = _exit_point(path, k, surface.domain)
            ax.plot(px, py, marker="X", ms=15, color=c, mec="black", mew=1.0, ls="none", zorder=7)
            text += f"  (diverged at step {k})"
        else:
            ax.plot(path[-1, 0], path[-1, 1], marker="o", ms=6, color=c, mec="black", ls="none", zorder=7)
        handles.append(plt.Line2D([], [], color=c, lw=2, label=text))
    starts = np.unique(tr.positions[:, 0, :], axis=0)
    ax.plot(starts[:, 0], starts[:, 1], marker="o", ms=9, mfc="white", mec="black", mew=1.4, ls="none", zorder=8)
    if any(tr.diverged):
        handles.append(plt.Line2D([], [], marker="X", ms=10, color="grey", mec="black", ls="none",
                                  label="where a diverged run left"))
    handles += _marker_legend(surface)
    if legend:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=8,
                  frameon=False)
    noise = f", gradient noise {tr.noise:g}" if tr.noise else ""
    ax.set_title(title or f"{surface.name}: {tr.steps} steps from ({surface.start[0]:g}, {surface.start[1]:g})"
                 f"{noise}", fontsize=11)
    return ax


def plot_losses(tr, ax=None, title: str | None = None, legend: bool = True):
    """Loss against step for every run of ``tr``; log scale of ``loss - f_min`` when ``f_min`` is known."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    gmin = tr.surface.global_minimum
    steps = np.arange(tr.losses.shape[1])
    for i, label in enumerate(tr.labels):
        c = color(i)
        k = int(tr.diverged_at[i])
        loss = tr.losses[i] if k < 0 else tr.losses[i, : k + 1]
        s = steps[: len(loss)]
        if gmin is not None:
            gap = np.maximum(loss - gmin.value, 1e-300)
            gap = np.where(np.isfinite(gap), gap, np.nan)
            ax.semilogy(s, gap, color=c, lw=1.8, label=label)
            if k >= 0:
                last = gap[np.isfinite(gap)]
                ax.semilogy([k], [last[-1] if last.size else 1.0], "X", ms=12, color=c, mec="black")
        else:
            ax.plot(s, np.where(np.isfinite(loss), loss, np.nan), color=c, lw=1.8, label=label)
            if k >= 0:
                ax.plot([k], [loss[np.isfinite(loss)][-1]], "X", ms=12, color=c, mec="black")
    if gmin is not None:
        ax.set_ylabel(f"f - f_min  (f_min = {gmin.value:.4g}, log scale)")
        gaps = tr.losses - gmin.value
        lo = np.nanmin(np.where(np.isfinite(gaps) & (gaps > 0), gaps, np.nan)) if np.any(gaps > 0) else np.nan
        hi = np.nanmax(np.where(np.isfinite(gaps) & (gaps > 0), gaps, np.nan)) if np.any(gaps > 0) else np.nan
        if np.isfinite(lo) and np.isfinite(hi):
            ax.set_ylim(max(lo * 0.5, 1e-16), max(hi * 3.0, lo))
        if np.isfinite(lo) and tr.tol >= lo * 0.5:
            ax.axhline(tr.tol, color="grey", ls=":", lw=1)
            ax.text(0.99, tr.tol, f"tol = {tr.tol:g}", transform=ax.get_yaxis_transform(), ha="right",
                    va="bottom", fontsize=8, color="grey", clip_on=True)
    else:
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_ylabel("f(x, y)  (no known minimum; symmetric log scale)")
    ax.set_xlabel("step")
    ax.grid(True, which="both", alpha=0.25)
    if legend:
        ax.legend(fontsize=8)
    ax.set_title(title or f"{tr.surface.name}: loss per step (X: diverged)", fontsize=11)
    return ax


def save_trajectories_figure(tr, path: str | os.PathLike, title: str | None = None) -> Path:
    """Contour with trajectories (left) and loss curves (right), saved atomically to ``path``."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(15, 6.6), gridspec_kw={"width_ratios": [1.15, 1], "wspace": 0.45})
    plot_contour(tr, ax=a)
    plot_losses(tr, ax=b, legend=False)
    desc = tr.surface.description
    if len(desc) > 120:
        cut = desc.rfind(" ", 0, 120)
        desc = desc[:cut] + "\n" + desc[cut + 1:]
    fig.suptitle((title + "\n" if title else "") + desc, fontsize=10, color="dimgrey", y=1.0)
    return save(fig, path)


def _edges(values: np.ndarray) -> tuple[np.ndarray, bool]:
    """Cell edges for pcolormesh, geometric midpoints when the values are positive and log-spaced."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 1:
        d = abs(v[0]) * 0.5 or 0.5
        return np.array([v[0] - d, v[0] + d]), False
    log = bool((v > 0).all() and v.max() / v.min() >= 50)
    w = np.log(v) if log else v
    mid = (w[1:] + w[:-1]) / 2
    edges = np.concatenate([[w[0] - (mid[0] - w[0])], mid, [w[-1] + (w[-1] - mid[-1])]])
    return (np.exp(edges) if log else edges), log


def plot_sweep(sw, ax=None, metric: str = "final_loss", title: str | None = None):
    """Heatmap of a :class:`ravine.simulate.Sweep`.

    ``metric="final_loss"``: ``log10(final loss - f_min)`` (raw final loss, linear, when ``f_min`` is
    unknown); ``metric="steps_to_tol"``: steps to reach the tolerance, with cells that never reached it in
    white. Diverged cells are grey with hatching in both.
    """
    check("metric", metric, Options(("final_loss", "steps_to_tol")))
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 6))
    xe, xlog = _edges(sw.x_values)
    ye, ylog = _edges(sw.y_values)
    diverged = sw.diverged_at >= 0
    gmin = sw.surface.global_minimum
    if metric == "final_loss":
        if gmin is not None:
            data = np.log10(np.maximum(sw.final_loss - gmin.value, 1e-300))
            data = np.maximum(data, -16.0)
            label = f"log10(final loss - f_min) after {sw.steps} steps"
        else:
            data = sw.final_loss.copy()
            label = f"final loss after {sw.steps} steps"
        cmap = plt.get_cmap("viridis_r").copy()  # bright = good in both heatmaps
    else:
        data = np.where(sw.steps_to_tol >= 0, sw.steps_to_tol, np.nan).astype(np.float64)
        crit = "loss - f_min" if sw.tol_criterion == "loss_gap" else "|grad|"
        label = f"steps until {crit} <= {sw.tol:g}"
        cmap = plt.get_cmap("viridis_r").copy()
    data = np.where(diverged, np.nan, data)
    cmap = cmap.with_extremes(bad="white")
    finite = data[np.isfinite(data)]
    norm = mcolors.Normalize(vmin=finite.min(), vmax=finite.max()) if finite.size else None
    mesh = ax.pcolormesh(xe, ye, np.ma.masked_invalid(data), cmap=cmap, norm=norm, shading="flat")
    cb = ax.figure.colorbar(mesh, ax=ax, fraction=0.046, pad=0.03)
    cb.set_label(label)
    if diverged.any():
        dmask = np.where(diverged, 1.0, np.nan)
        ax.pcolormesh(xe, ye, np.ma.masked_invalid(dmask), cmap=mcolors.ListedColormap(["#bdbdbd"]),
                      shading="flat")
        xc = np.sqrt(xe[1:] * xe[:-1]) if xlog else (xe[1:] + xe[:-1]) / 2
        yc = np.sqrt(ye[1:] * ye[:-1]) if ylog else (ye[1:] + ye[:-1]) / 2
        if diverged.shape[0] > 1 and diverged.shape[1] > 1:
            hatch = ax.contourf(xc, yc, diverged.astype(float), levels=[0.5, 1.5], colors="none", hatches=["xx"])
            for coll in getattr(hatch, "collections", [hatch]):
                coll.set_edgecolor("#6d6d6d")
                coll.set_linewidth(0.0)
    if xlog:
        ax.set_xscale("log")
    if ylog:
        ax.set_yscale("log")
    ax.set_xlim(xe[0], xe[-1])
    ax.set_ylim(ye[0], ye[-1])
    ax.set_xlabel(sw.x_name)
    ax.set_ylabel(sw.y_name)
    handles = [Patch(facecolor="#bdbdbd", edgecolor="#6d6d6d", hatch="xx",
                     label=f"diverged ({int(diverged.sum())} of {diverged.size})")]
    if metric == "steps_to_tol":
        never = (~diverged & (sw.steps_to_tol < 0)).sum()
        handles.append(Patch(facecolor="white", edgecolor="grey", label=f"not within tol ({int(never)})"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.11), ncol=2, fontsize=8, frameon=False)
    fixed = ", ".join(f"{k}={v:g}" for k, v in sw.fixed.items() if isinstance(v, float))
    ax.set_title(title or f"{sw.optimizer} on {sw.surface.name}: {sw.y_name} vs {sw.x_name}"
                 + (f"\n({fixed}, start ({sw.start[0]:g}, {sw.start[1]:g}))" if fixed else ""), fontsize=11)
    return ax


def save_sweep_figure(sw, path: str | os.PathLike, title: str | None = None) -> Path:
    """Heatmaps of final loss and steps to tolerance, saved atomically to ``path``.

    When no cell reached the tolerance the second map would be blank, so only the final loss is drawn
    (its title says so).
    """
    if (np.asarray(sw.steps_to_tol) >= 0).any():
        fig, (a, b) = plt.subplots(1, 2, figsize=(16, 6.4), gridspec_kw={"wspace": 0.4})
        plot_sweep(sw, ax=a, metric="final_loss")
        plot_sweep(sw, ax=b, metric="steps_to_tol")
    else:
        fig, a = plt.subplots(figsize=(8.5, 6.4))
        plot_sweep(sw, ax=a, metric="final_loss")
        a.set_title(a.get_title() + "\n(no cell reached the tolerance)", fontsize=10)
    if title:
        fig.suptitle(title)
    return save(fig, path)


def save_gif(tr, path: str | os.PathLike, frames: int = 60, fps: int = 12, n: int = 200) -> Path:
    """Animate the trajectories of ``tr`` over the surface's contours and write a GIF (pillow writer).

    ``frames`` snapshots are taken at evenly spaced steps; the file is written to a temporary name in the
    same folder and renamed.
    """
    from matplotlib.animation import FuncAnimation, PillowWriter

    frames = check("frames", frames, Interval(int, 2, 1000))
    fps = check("fps", fps, Interval(int, 1, 60))
    path = Path(path)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    surface = tr.surface
    _draw_surface(ax, surface, n, colorbar=False, image=True)
    total = tr.positions.shape[1] - 1
    marks = np.unique(np.linspace(0, total, frames).round().astype(int))
    lines, heads = [], []
    for i, label in enumerate(tr.labels):
        (ln,) = ax.plot([], [], "-", color=color(i), lw=1.8, label=label, zorder=4)
        (hd,) = ax.plot([], [], "o", color=color(i), mec="black", ms=7, zorder=6)
        lines.append(ln)
        heads.append(hd)
    x0 = tr.positions[:, 0, :]
    ax.plot(x0[:, 0], x0[:, 1], "o", ms=8, mfc="white", mec="black", ls="none", zorder=7)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, fontsize=8, frameon=False)
    title = ax.set_title("")

    def draw(frame: int):
        k = int(marks[frame])
        for i, (ln, hd) in enumerate(zip(lines, heads)):
            d = int(tr.diverged_at[i])
            upto = k if d < 0 else min(k, d)
            p = tr.positions[i, : upto + 1]
            ln.set_data(p[:, 0], p[:, 1])
            if d >= 0 and k >= d:
                px, py = _exit_point(tr.positions[i], d, surface.domain)
                hd.set_data([px], [py])
                hd.set_marker("X")
                hd.set_markersize(13)
            else:
                hd.set_data([p[-1, 0]], [p[-1, 1]])
        title.set_text(f"{surface.name}: step {k} of {total}")
        return [*lines, *heads, title]

    anim = FuncAnimation(fig, draw, frames=len(marks), blit=False)
    try:
        with atomic_path(path, suffix=".gif") as tmp:
            anim.save(tmp, writer=PillowWriter(fps=fps), dpi=80)
    finally:
        plt.close(fig)
    return path
