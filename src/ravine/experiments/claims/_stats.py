"""Small, exact statistics the verdicts use (pure numpy; no training here)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def num(x: Any) -> float:
    """A float from a measurement; ``None`` (how JSON stores NaN/inf) becomes NaN."""
    if x is None:
        return float("nan")
    return float(x)


def finite_or(x: Any, fallback: float) -> float:
    """``x`` as a float, or ``fallback`` when it is missing or not finite (a diverged run)."""
    v = num(x)
    return v if math.isfinite(v) else fallback


def ratio(a: Any, b: Any) -> float:
    """``a / b``; NaN when either is missing/non-finite or ``b == 0``."""
    a, b = num(a), num(b)
    if not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return float("nan")
    return a / b


def linear_fit(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares line ``y = slope * x + intercept`` and Pearson's r, over finite pairs.

    Returns NaNs when fewer than two finite pairs exist or ``x`` is constant; ``r`` is NaN when ``y``
    is constant (the slope is then 0).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    if len(x) < 2 or np.ptp(x) == 0:
        return float("nan"), float("nan"), float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    slope = float((xc * yc).sum() / (xc * xc).sum())
    icpt = float(y.mean() - slope * x.mean())
    denom = math.sqrt(float((xc * xc).sum() * (yc * yc).sum()))
    r = float((xc * yc).sum() / denom) if denom > 0 else float("nan")
    return slope, icpt, r


def argmin_log_interp(values: Sequence[float], losses: Sequence[float]) -> tuple[float, bool]:
    """The minimizer of ``losses`` over log-spaced ``values``, refined by a parabola through the best
    point and its two neighbours in ``log10(value)``; returns ``(best_value, at_edge)``.

    Non-finite losses (diverged runs) count as +inf. ``at_edge`` is True when the best grid point is
    the first or last (the true optimum may lie outside the grid; no refinement then). The parabola's
    vertex is clamped to the neighbours' interval.
    """
    v = np.log10(np.asarray(values, dtype=float))
    loss = np.asarray([num(x) for x in losses], dtype=float)
    loss = np.where(np.isfinite(loss), loss, np.inf)
    if not np.isfinite(loss).any():
        return float("nan"), True
    i = int(np.argmin(loss))
    if i == 0 or i == len(v) - 1:
        return float(10 ** v[i]), True
    x0, x1, x2 = v[i - 1], v[i], v[i + 1]
    y0, y1, y2 = loss[i - 1], loss[i], loss[i + 1]
    if not (np.isfinite(y0) and np.isfinite(y2)):
        return float(10**x1), False
    denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
    b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / denom
    xv = -b / (2 * a) if a > 0 else x1
    return float(10 ** float(np.clip(xv, x0, x2))), False


def count_spikes(loss: Sequence[float], factor: float = 2.0, window: int = 20, warmup: int = 10) -> int:
    """Number of loss spikes: steps ``t >= warmup`` whose loss exceeds ``factor`` times the median of the
    preceding ``window`` losses (a non-finite loss counts as a spike; consecutive spike steps count
    once, as one event)."""
    y = np.asarray([num(v) for v in loss], dtype=float)
    events, inside = 0, False
    for t in range(max(warmup, 1), len(y)):
        prev = y[max(0, t - window) : t]
        prev = prev[np.isfinite(prev)]
        if len(prev) == 0:
            break  # everything before was non-finite: the run is dead, not spiking
        spike = (not np.isfinite(y[t])) or y[t] > factor * float(np.median(prev))
        if spike and not inside:
            events += 1
        inside = spike
    return events


def interp_at(x_query: float, x: Sequence[float], y: Sequence[float]) -> float:
    """Linear interpolation of ``y(x)`` at ``x_query`` over finite points with increasing ``x``;
    NaN outside the range."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    if len(x) == 0 or x_query < x[0] or x_query > x[-1]:
        return float("nan")
    return float(np.interp(x_query, x, y))
