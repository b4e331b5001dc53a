"""Figures of the warmup and weight-decay claims: trends along depth, learning rate and weight decay.

The ``warmup`` experiment measures Post-LN and Pre-LN transformers at several depths, with and
without warmup; ``adamw-vs-l2`` measures the test loss over a learning-rate x weight-decay grid. The
functions here draw what those experiments computed, with every trend's spread over seeds, on
:mod:`ravine.plots.scaling`'s trend panels (a line through the mean over seeds, a band from the
lowest to the highest seed, labelled reference lines); they compute nothing themselves.

Arrays ``(n, seeds)`` hold one row per axis value and one column per seed; NaN marks a run that
produced no value (it is left out of the mean and the band).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from ravine.plots._style import panel_grid
from ravine.plots.scaling import Trend, TrendPanel
from ravine.plots.scaling import _draw as _draw_trends

__all__ = ["plot_warmup_depth", "plot_warmup_mechanism", "plot_weight_decay"]

_NORM_COLOR = {"post": 3, "pre": 0}


def _plot(path: str | os.PathLike, panels: list[TrendPanel], suptitle: str, integer_x: Sequence[bool]) -> Path:
    """:func:`ravine.plots.scaling.plot_trends`'s layout, with whole-number ticks on the x axes of the
    panels flagged in ``integer_x`` (depths and block indices are counts, not continua)."""

    def draw(ax, item: tuple[TrendPanel, bool]) -> None:
        panel, integer = item
        _draw_trends(ax, panel)
        if integer:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))

    return panel_grid(path, list(zip(panels, integer_x)), draw, suptitle)


def _arm(norm: str, warmup: bool) -> str:
    return f"{'Post' if norm == 'post' else 'Pre'}-LN, {'warmup' if warmup else 'no warmup'}"


def plot_warmup_depth(
    path: str | os.PathLike,
    depths: Sequence[int],
    losses: Mapping[tuple[str, bool, float], np.ndarray],
    failure: Mapping[tuple[str, bool], Sequence[float]],
    fail_line: float,
    uniform: float,
    suptitle: str = "",
) -> Path:
    """Final test loss against depth, one panel per peak learning rate, and the failure rate.

    Args:
        path: Where the PNG goes.
        depths: The depths measured (layers), the x axis.
        losses: ``{(norm, warmup, lr): (len(depths), seeds) array}`` of final test losses (nats/char);
            ``norm`` is ``"post"`` or ``"pre"``, ``warmup`` a bool. One panel per distinct ``lr``.
        failure: ``{(norm, warmup): failure rate per depth}`` over all learning rates and seeds.
        fail_line: The loss above which a run counts as failed, drawn as a labelled line.
        uniform: The loss of a uniform prediction (``ln V``), drawn as a labelled line.
        suptitle: The setting, one line above the panels.

    Returns:
        ``path`` as a :class:`pathlib.Path`.
    """
    lrs = sorted({lr for _, _, lr in losses})
    arms = [(n, w) for n in ("post", "pre") for w in (False, True)]
    panels = [
        TrendPanel(
            f"final test loss, peak lr {lr:g}",
            "depth (layers)",
            "test loss (nats/char)",
            [
                Trend(_arm(n, w), depths, losses[(n, w, lr)], _NORM_COLOR[n], "--" if w else "-", "s" if w else "o")
                for n, w in arms
                if (n, w, lr) in losses
            ],
            logx=False,
            hlines=[(fail_line, "failure line"), (uniform, "uniform prediction, ln V")],
        )
        for lr in lrs
    ]
    panels.append(
        TrendPanel(
            "failure rate (all lrs and seeds)",
            "depth (layers)",
            "fraction of runs failed",
            [
                Trend(_arm(n, w), depths, list(failure[(n, w)]), _NORM_COLOR[n], "--" if w else "-", "s" if w else "o")
                for n, w in arms
                if (n, w) in failure
            ],
            logx=False,
            hlines=[(0.0, "none"), (1.0, "all")],
        )
    )
    return _plot(path, panels, suptitle, [True] * len(panels))


def plot_warmup_mechanism(
    path: str | os.PathLike,
    depths: Sequence[int],
    grad_by_block: Mapping[tuple[str, int], np.ndarray],
    output_change: Mapping[str, np.ndarray],
    loss_change: Mapping[str, np.ndarray],
    lr: float,
    suptitle: str = "",
) -> Path:
    """At initialization: gradient norm by block (Xiong et al.), and what Adam's first step does (Liu et al.).

    Args:
        path: Where the PNG goes.
        depths: The depths measured (layers).
        grad_by_block: ``{(norm, depth): (depth, seeds) array}``: the gradient norm of each block's
            parameters, block 1 nearest the input.
        output_change: ``{norm: (len(depths), seeds) array}``: relative change ``|h_1 - h_0| / |h_0|`` of
            the head's input after the first Adam step.
        loss_change: ``{norm: (len(depths), seeds) array}``: loss after minus before that step (nats).
        lr: The learning rate of that first step (for the titles).
        suptitle: One line above the panels.

    Returns:
        ``path`` as a :class:`pathlib.Path`.
    """
    styles = ["-", "--", ":", "-."]
    grads = [
        Trend(
            f"{'Post' if n == 'post' else 'Pre'}-LN, {d} layers",
            list(range(1, d + 1)),
            grad_by_block[(n, d)],
            _NORM_COLOR[n],
            styles[i % len(styles)],
        )
        for n in ("post", "pre")
        for i, d in enumerate(depths)
        if (n, d) in grad_by_block
    ]
    per_norm = [("post", "Post-LN"), ("pre", "Pre-LN")]
    panels = [
        TrendPanel(
            "gradient norm by block at initialization",
            "block (1 = nearest the input)",
            "|dL/dW_block|",
            grads,
            logx=False,
            logy=True,
        ),
        TrendPanel(
            f"first Adam step (lr {lr:g}): change of the head's input",
            "depth (layers)",
            "|h_1 - h_0| / |h_0|",
            [Trend(lab, depths, output_change[n], _NORM_COLOR[n]) for n, lab in per_norm if n in output_change],
            logx=False,
        ),
        TrendPanel(
            f"first Adam step (lr {lr:g}): loss change on its batch",
            "depth (layers)",
            "loss after - before (nats)",
            [Trend(lab, depths, loss_change[n], _NORM_COLOR[n]) for n, lab in per_norm if n in loss_change],
            logx=False,
            hlines=[(0.0, "no change")],
        ),
    ]
    return _plot(path, panels, suptitle, [True] * len(panels))


def plot_weight_decay(
    path: str | os.PathLike,
    lrs: Sequence[float],
    wds: Sequence[float],
    scores: Mapping[str, np.ndarray],
    ridges: Mapping[str, tuple[Sequence[float], np.ndarray]],
    notes: Mapping[str, str] | None = None,
    suptitle: str = "",
) -> Path:
    """Test loss against weight decay at each learning rate (one panel per method), and the best weight
    decay against the learning rate (the ridge of each grid, in its own convention).

    Args:
        path: Where the PNG goes.
        lrs: The peak learning rates of the grid.
        wds: The weight decays of the grid (x axis of the per-method panels).
        scores: ``{method label: (seeds, len(lrs), len(wds)) array}`` of final test losses (nats).
        ridges: ``{label: (best weight decay per lr, (len(lrs), seeds) array of each seed's own best)}``;
            the first is drawn as the ridge, the second as a dotted line with its seed band.
        notes: ``{method label: short note}`` shown in that method's panel.
        suptitle: One line above the panels.

    Returns:
        ``path`` as a :class:`pathlib.Path`.
    """
    notes = notes or {}
    panels = []
    for label, z in scores.items():
        z = np.asarray(z, dtype=float)
        panels.append(
            TrendPanel(
                label,
                "weight decay",
                "final test loss (nats)",
                [Trend(f"lr {lr:.2g}", wds, z[:, i, :].T, i) for i, lr in enumerate(lrs)],
                note=notes.get(label, ""),
            )
        )
    ridge = []
    for k, (label, (best, by_seed)) in enumerate(ridges.items()):
        ridge.append(Trend(label, lrs, list(best), k))
        ridge.append(Trend(f"{label}, per seed", lrs, np.asarray(by_seed, dtype=float), k, ":", "."))
    panels.append(
        TrendPanel(
            "best weight decay against learning rate",
            "peak learning rate",
            "best weight decay (its own convention)",
            ridge,
            logy=True,
        )
    )
    return _plot(path, panels, suptitle, [False] * len(panels))
