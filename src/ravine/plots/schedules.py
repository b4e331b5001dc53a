"""Figures of learning-rate schedules: the rate against the step, with each schedule's phases."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from ravine._validation import Interval, check
from ravine.plots._style import color, save

#: One light colour per phase name, the same in every figure (other names are light grey).
PHASE_COLORS = {
    "warmup": "#fdd49e",
    "stable": "#c7e9c0",
    "decay": "#c6dbef",
    "anneal": "#c6dbef",
    "cooldown": "#dadaeb",
}
_OTHER_PHASE = "#e0e0e0"


def _phase_color(name: str) -> str:
    return PHASE_COLORS.get(name, _OTHER_PHASE)


def plot_schedules(
    schedules: Mapping[str, Callable[[int], float]] | Callable[[int], float],
    steps: int,
    path: str | os.PathLike,
    *,
    title: str | None = None,
    log_y: bool = False,
) -> Path:
    """Plot learning rate against step for each schedule and save the figure to ``path``.

    Args:
        schedules: ``{label: schedule}`` (or one schedule, labelled by its repr). Each is evaluated at
            steps ``0 .. steps - 1``.
        steps: number of steps to draw, ``>= 1``.
        path: output file; the format follows the suffix (``.png``, ``.svg``, ``.pdf``); written
            atomically.
        title: figure title (default: "Learning-rate schedules", or the schedule's repr for one).
        log_y: logarithmic learning-rate axis (zeros are not drawn).

    Phases (a schedule's ``phases`` attribute: warmup, stable, decay...) are shaded behind the curve
    when there is one schedule, and drawn as one labelled bar per schedule under the axes otherwise.
    Returns the path written.
    """
    import matplotlib.pyplot as plt

    if callable(schedules) and not isinstance(schedules, Mapping):
        schedules = {repr(schedules): schedules}
    if not isinstance(schedules, Mapping) or not schedules:
        raise ValueError(f"plot_schedules: schedules must be a non-empty {{label: schedule}} dict, got {schedules!r}")
    for label, s in schedules.items():
        if not callable(s):
            raise TypeError(f"plot_schedules: schedules[{label!r}] must be a callable step -> float, got {s!r}")
    steps = check("steps", steps, Interval.finite(int, 1), where="plot_schedules: ")

    x = np.arange(steps)
    curves = {label: np.array([float(s(int(t))) for t in x]) for label, s in schedules.items()}
    phased = {
        label: [p for p in getattr(s, "phases", ()) if p.start < steps]
        for label, s in schedules.items()
        if getattr(s, "phases", ())
    }
    single = len(schedules) == 1
    bars = not single and bool(phased)

    if bars:
        fig, (ax, axp) = plt.subplots(
            2,
            1,
            figsize=(8, 4.6 + 0.3 * len(schedules)),
            sharex=True,
            gridspec_kw={"height_ratios": [5, 0.45 * len(schedules) + 0.3], "hspace": 0.08},
        )
    else:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        axp = None

    if single and phased:
        seen: set[str] = set()
        for p in next(iter(phased.values())):
            ax.axvspan(
                p.start - 0.5,
                min(p.end, steps) - 0.5,
                color=_phase_color(p.name),
                alpha=0.6,
                lw=0,
                label=p.name if p.name not in seen else None,
            )
            seen.add(p.name)

    for i, (label, y) in enumerate(curves.items()):
        yy = np.where(y > 0, y, np.nan) if log_y else y
        ax.plot(
            x,
            yy,
            color=color(i),
            lw=1.8,
            label=None if single else label,
            drawstyle="default" if steps > 60 else "steps-mid",
        )

    ax.set_ylabel("learning rate")
    if log_y:
        ax.set_yscale("log")
    else:
        top = max((float(np.nanmax(y)) for y in curves.values() if np.isfinite(y).any()), default=0.0)
        ax.set_ylim(0, top * 1.12 if top > 0 else 1.0)
    ax.set_xlim(-0.5, steps - 0.5)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8, framealpha=0.9)
    if title is None:
        title = next(iter(schedules)) if single else "Learning-rate schedules"
    ax.set_title("\n".join(textwrap.wrap(title, 110)), fontsize=10 if single else 12)

    if axp is not None:
        labels = list(schedules)
        for row, label in enumerate(labels):
            for p in phased.get(label, []):
                end = min(p.end, steps)
                axp.broken_barh(
                    [(p.start - 0.5, end - p.start)],
                    (row - 0.38, 0.76),
                    facecolors=_phase_color(p.name),
                    edgecolors=color(row),
                    linewidth=1.0,
                )
                if (end - p.start) / steps > 0.06:
                    axp.text((p.start + end - 1) / 2, row, p.name, ha="center", va="center", fontsize=7)
        axp.set_yticks(range(len(labels)), labels, fontsize=8)
        for row, tick in enumerate(axp.get_yticklabels()):
            tick.set_color(color(row))
        axp.set_ylim(len(labels) - 0.5, -0.5)
        axp.set_xlabel("step (0 = first update)")
        axp.tick_params(axis="y", length=0)
        for side in ("top", "right"):
            axp.spines[side].set_visible(False)
    else:
        ax.set_xlabel("step (0 = first update)")
    return save(fig, path)
