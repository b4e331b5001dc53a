"""The playground's view as a captioned figure, in the page's colours.

:data:`PAGE_STYLE` is the one definition of the playground's colours: the page reads it from
``GET /api/style`` and :func:`playground_figure` draws with it, so a PNG exported from the page
(``POST /api/export/png``) and the figure its Python snippet saves look like the page.
:func:`playground_figure` draws from data only (a contour grid and per-run arrays); the snippet feeds it
``ravine.simulate.run``'s result through :func:`runs_from_trajectories`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure

from ravine.plots._style import plt  # noqa: F401  (the Agg backend)

#: The playground's colours: one per run (a run's default colour is ``palette[i]``), the contour's fill
#: (a colour scale over the log of the loss gap) and lines, the minima, diverged marks and the start.
PAGE_STYLE: dict[str, Any] = {
    "palette": [
        "#2f5fd0", "#d6402b", "#1b9e5a", "#8e44ad", "#e08a00", "#0f9bb5", "#8c564b", "#d63384",
        "#5b6b00", "#34495e", "#b8860b", "#006d77", "#9c27b0", "#ef6c00", "#37474f", "#2e7d32",
    ],
    "contour_colorscale": [(0.0, "#ffffff"), (0.5, "#e4e9f4"), (1.0, "#b4bfd6")],
    "contour_line": "rgba(60,70,100,0.35)",
    "minimum": "#f2b705",
    "diverged": "#c62828",
    "start": "#111111",
}
#: Contour levels of the page: this many bands from the grid's :data:`FLOOR_QUANTILE` quantile of
#: ``log10(f - min f + eps)`` up.
LEVELS = 28
#: The quantile of the grid where the lowest band starts (a band closer to the minimum is thinner than
#: the grid and draws as a broken line).
FLOOR_QUANTILE = 0.02
#: The exported figure's size in inches (1800 x 1100 pixels at :data:`DPI`).
FIGSIZE = (12.0, 22.0 / 3.0)
#: Dots per inch of the exported figure.
DPI = 150


def _rgba(css: str) -> tuple[float, float, float, float]:
    """A CSS ``#rrggbb`` or ``rgba(r,g,b,a)`` colour as a matplotlib RGBA tuple."""
    css = css.strip()
    if css.startswith("#"):
        return tuple(int(css[i : i + 2], 16) / 255 for i in (1, 3, 5)) + (1.0,)  # type: ignore[return-value]
    r, g, b, a = (float(v) for v in css[css.index("(") + 1 : css.index(")")].split(","))
    return (r / 255, g / 255, b / 255, a)


def contour_levels(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The page's contour: ``log10(z - min z + eps)`` and its :data:`LEVELS` levels from the floor quantile up.

    Args:
        z: the loss on the grid (NaN where not finite).

    Returns:
        ``(log_gap, levels)``.
    """
    z = np.asarray(z, dtype=np.float64)
    finite = z[np.isfinite(z)]
    if finite.size == 0:
        return z, np.linspace(0.0, 1.0, LEVELS + 1)
    lo, span = float(finite.min()), max(1e-12, float(finite.max() - finite.min()))
    t = np.log10(z - lo + max(1e-12, 1e-4 * span))
    flat = np.sort(t[np.isfinite(t)])
    zlo, zhi = flat[int(FLOOR_QUANTILE * (flat.size - 1))], flat[-1]
    return t, np.linspace(zlo, max(zhi, zlo + 1e-9), LEVELS + 1)


def runs_from_trajectories(tr: Any, labels: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The runs of a ``ravine.simulate.Trajectories`` as :func:`playground_figure` takes them.

    Args:
        tr: the result of ``ravine.simulate.run``.
        labels: one legend label per run (default: the simulator's labels).

    Returns:
        One dict per run: ``label``, ``x``, ``y``, ``loss``, ``grad_norm``, ``diverged_at`` (``None``: never),
        ``clipped_steps``.
    """
    labels = list(labels) if labels is not None else list(tr.labels)
    return [
        {
            "label": labels[j],
            "x": np.asarray(tr.positions[j][:, 0], dtype=np.float64),
            "y": np.asarray(tr.positions[j][:, 1], dtype=np.float64),
            "loss": np.asarray(tr.losses[j], dtype=np.float64),
            "grad_norm": np.asarray(tr.grad_norms[j], dtype=np.float64),
            "diverged_at": int(tr.diverged_at[j]) if int(tr.diverged_at[j]) >= 0 else None,
            "clipped_steps": [int(k) for k in np.flatnonzero(np.asarray(tr.clipped[j]))],
        }
        for j in range(len(labels))
    ]


def _floats(values: Any) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def playground_figure(
    grid: tuple[Any, Any, Any],
    runs: Sequence[Mapping[str, Any]],
    *,
    title: str,
    domain: tuple[tuple[float, float], tuple[float, float]],
    settings: Sequence[str] = (),
    caption: Sequence[str] = (),
    colors: Sequence[str] = (),
    minima: Sequence[tuple[float, float]] = (),
    global_min: float | None = None,
) -> Any:
    """The playground's view as one figure: the contour with the runs, their loss and gradient norm, the
    settings and the "what you are seeing" caption, in the page's colours (:data:`PAGE_STYLE`).

    Args:
        grid: ``(x, y, z)``: the contour grid, ``x`` of length n (columns), ``y`` of length m (rows) and
            ``z`` of shape ``(m, n)`` (or ``X, Y`` meshes as ``Surface.grid`` returns them).
        runs: per run ``label``, ``x``, ``y``, ``loss``, ``grad_norm`` (sequences, ``None``/NaN where not
            finite), ``diverged_at`` (``None``: never) and ``clipped_steps``.
        title: the contour's title (the surface).
        domain: ``((xmin, xmax), (ymin, ymax))`` shown, at one unit of y per unit of x.
        settings: lines of text listing the settings.
        caption: sentences saying what the runs show.
        colors: one colour per run (``#rrggbb``; default: the page's palette in order).
        minima: known minima ``(x, y)``, drawn as stars.
        global_min: the loss's known minimum (the loss panel shows ``loss - global_min``).

    Returns:
        A matplotlib ``Figure`` of :data:`FIGSIZE` inches (save it at :data:`DPI`).
    """
    palette = PAGE_STYLE["palette"]
    cols = [colors[i] if i < len(colors) else palette[i % len(palette)] for i in range(len(runs))]
    x, y, z = (np.asarray(a, dtype=np.float64) for a in grid)
    if x.ndim == 2:
        x, y = x[0, :], y[:, 0]
    t, levels = contour_levels(z)
    cmap = LinearSegmentedColormap.from_list(
        "ravine_page", [(p, c) for p, c in PAGE_STYLE["contour_colorscale"]]
    )

    # a Figure of its own, not pyplot's: the server draws in threads, and pyplot's figure registry is global
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    outer = fig.add_gridspec(2, 1, height_ratios=[5.0, 0.75])
    top = outer[0].subgridspec(2, 2, width_ratios=[1.25, 1.0])
    ax = fig.add_subplot(top[:, 0])
    ax_loss = fig.add_subplot(top[0, 1])
    ax_grad = fig.add_subplot(top[1, 1], sharex=ax_loss)
    ax_text = fig.add_subplot(outer[1])
    ax_text.axis("off")

    tc = np.where(np.isfinite(t), t, levels[-1])
    ax.contourf(x, y, np.clip(tc, levels[0], levels[-1]), levels=levels, cmap=cmap, extend="neither")
    ax.contour(x, y, tc, levels=levels, colors=[_rgba(PAGE_STYLE["contour_line"])], linewidths=0.5,
               linestyles="solid")
    if minima:
        ax.plot(*np.asarray(minima, dtype=np.float64).T, "*", ms=13, color=PAGE_STYLE["minimum"],
                mec="#6b5200", mew=0.8, zorder=5, label="minima")
    fmin = global_min if global_min is not None else 0.0
    steps = 1
    for r, c in zip(runs, cols):
        rx, ry, loss = _floats(r["x"]), _floats(r["y"]), _floats(r["loss"])
        end = r["diverged_at"] + 1 if r.get("diverged_at") is not None else len(rx)
        label = r["label"] + (f" (diverged @ {r['diverged_at']})" if r.get("diverged_at") is not None else "")
        ax.plot(rx[:end], ry[:end], ".-", color=c, lw=1.6, ms=3, label=label, zorder=3)
        finite = np.flatnonzero(np.isfinite(rx[:end]) & np.isfinite(ry[:end]))
        if finite.size:
            k = finite[-1]
            if r.get("diverged_at") is not None:
                ax.plot(rx[k], ry[k], "x", color=PAGE_STYLE["diverged"], ms=12, mew=2.5, zorder=6)
            else:
                ax.plot(rx[k], ry[k], "o", color=c, mec="white", mew=1.2, ms=8, zorder=6)
        clipped = [s for s in r.get("clipped_steps", ()) if s < end]
        if clipped:
            ax.plot(rx[clipped], ry[clipped], "D", mfc="none", mec=c, ms=6, zorder=4)
        steps = max(steps, len(loss) - 1)
        if global_min is not None:
            gap = np.maximum(loss - fmin, 1e-16)
            ax_loss.semilogy(np.arange(len(gap))[:end], gap[:end], color=c, lw=1.5, label=r["label"])
        else:  # no known minimum: the loss itself, on a linear axis
            ax_loss.plot(np.arange(len(loss))[:end], loss[:end], color=c, lw=1.5, label=r["label"])
        g = _floats(r["grad_norm"])
        gend = min(len(g), end)
        ax_grad.semilogy(np.arange(gend), np.where(g > 0, g, np.nan)[:gend], color=c, lw=1.3)
    if runs:
        sx, sy = _floats(runs[0]["x"])[0], _floats(runs[0]["y"])[0]
        ax.plot(sx, sy, "o", mfc="none", mec=PAGE_STYLE["start"], ms=11, mew=2.2, zorder=7, label="start")
    (x0, x1), (y0, y1) = domain
    ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel="x", ylabel="y", title=title, aspect="equal")
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.12), ncol=4, fontsize=8, frameon=False)
    ax_loss.set(ylabel="loss − min" if global_min is not None else "loss", xlim=(0, steps))
    ax_loss.tick_params(labelbottom=False)
    ax_grad.set(xlabel="step", ylabel="‖gradient‖")
    for a in (ax_loss, ax_grad):
        a.grid(alpha=0.3)
    text = ["Settings: " + "; ".join(settings)] if settings else []
    if caption:
        text += ["What you are seeing:"] + ["• " + s for s in caption]
    wrapped = "\n".join(textwrap.fill(line, 190, subsequent_indent="   ") for line in text)
    ax_text.text(0.0, 1.0, wrapped, va="top", ha="left", fontsize=8.5, transform=ax_text.transAxes)
    return fig
