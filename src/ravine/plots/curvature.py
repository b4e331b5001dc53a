"""Figures of Hessian curvature: the spectral density (log scale) with the extreme eigenvalues marked."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ravine.curvature import DensityResult, EigenResult
from ravine.plots._style import color, plt, save


def plot_spectral_density(
    result: DensityResult,
    path: str | os.PathLike | None = None,
    *,
    eigenvalues: EigenResult | Sequence[float] | None = None,
    threshold: float | None = None,
    threshold_label: str = "2 / lr",
    title: str | None = None,
    floor: float = 1e-8,
    ax=None,
):
    """Plot the SLQ density ``phi(lambda)`` of :func:`ravine.curvature.spectral_density` on a log axis.

    The density is drawn on a logarithmic y axis (as Ghorbani et al. 2019 and PyHessian do: the bulk
    near zero and the few outliers differ by many orders of magnitude), clipped below at
    ``floor * max(phi)`` so empty regions stay visible. ``eigenvalues`` (an
    :class:`~ravine.curvature.EigenResult` or numbers, e.g. Lanczos' top-k) are marked as ticks on the
    axis; ``threshold`` draws a vertical line (e.g. the gradient-descent stability limit ``2 / lr``).

    Returns the figure; saves it atomically to ``path`` when one is given (the figure is then closed).
    Pass ``ax`` to draw into an existing axes (nothing is saved unless ``path`` is given).
    """
    if not isinstance(result, DensityResult):
        raise TypeError(f"result must be a DensityResult from spectral_density; got {type(result).__name__}")
    if not (isinstance(floor, (int, float)) and 0 < floor < 1):
        raise ValueError(f"floor must be a number in (0, 1); got {floor!r}")
    grid = result.grid.detach().cpu().numpy()
    density = result.density.detach().cpu().numpy()
    top = float(density.max()) if density.size else 1.0
    low = max(top * floor, np.finfo(float).tiny)
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
    else:
        fig = ax.figure
    ax.semilogy(grid, np.maximum(density, low), color=color(0), lw=1.5, label="SLQ density")
    ax.fill_between(grid, low, np.maximum(density, low), color=color(0), alpha=0.15, lw=0)
    if eigenvalues is not None:
        vals = eigenvalues.values.tolist() if isinstance(eigenvalues, EigenResult) else list(eigenvalues)
        for i, v in enumerate(vals):
            ax.axvline(
                float(v),
                ymax=0.08,
                color=color(3),
                lw=1.5,
                label="Lanczos eigenvalues" if i == 0 else None,
            )
    if threshold is not None:
        ax.axvline(float(threshold), color=color(2), ls="--", lw=1.2, label=f"{threshold_label} = {threshold:.3g}")
    ax.set_ylim(low, top * 3)
    ax.set_xlabel("eigenvalue $\\lambda$ of the Hessian")
    ax.set_ylabel("density $\\phi(\\lambda)$ (log scale)")
    probes = len(result.nodes)
    steps = max((len(n) for n in result.nodes), default=0)
    ax.set_title(title or f"Hessian spectral density (SLQ: {probes} probe(s) x {steps} Lanczos steps)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    if path is not None:
        save(fig, Path(path))
    return fig
