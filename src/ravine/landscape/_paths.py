"""Paths between two solutions and the loss barrier along them (mode connectivity).

Two trained networks ``a`` and ``b`` (same architecture, different seeds) are joined by

* the straight line ``w(t) = (1 - t) a + t b``, ``t`` in ``[0, 1]`` (Goodfellow, Vinyals & Saxe 2015,
  "Qualitatively characterizing neural network optimization problems"): :func:`interpolate`, which
  is :func:`ravine.landscape.line` with the origin at ``a`` and the direction ``b - a``;
* a quadratic Bezier curve ``phi_theta(t) = (1 - t)^2 a + 2 t (1 - t) theta + t^2 b`` whose control
  point ``theta`` is fitted by SGD on ``E_{t ~ U(0, 1)} L(phi_theta(t))`` (Garipov, Izmailov,
  Podoprikhin, Vetrov & Wilson 2018, "Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs";
  Draxler et al. 2018 find such paths with a nudged elastic band): :func:`fit_bezier` returns a
  :class:`BezierCurve`, :func:`evaluate_curve` the loss along it. The curve starts at the line
  (``theta = (a + b) / 2``), so the fit can only lower the expected loss from the line's.

:func:`barrier` reads the height of the loss barrier from a profile ``L(t)``:

* ``reference="max"`` (default): ``max_t L(t) - max(L(0), L(1))``, the rise above the worse
  endpoint; 0 when the path never climbs above both ends (e.g. a convex loss on a line);
* ``"mean"``: ``max_t L(t) - (L(0) + L(1)) / 2`` (Frankle, Dziugaite, Roy & Carbin 2020's error
  barrier);
* ``"linear"``: ``max_t [L(t) - ((1 - t) L(0) + t L(1))]`` (Entezari et al. 2022), the largest excess
  over the chord; ``<= 0`` for a convex loss along a line.

Every function works on any ``nn.Module`` and leaves its parameters, buffers and mode flags as
found. Losses are evaluated with dropout off and batch norm on its running statistics (evaluation
mode), the convention of :func:`ravine.landscape.line`'s default; Garipov et al. recompute batch-norm
statistics at each point of the curve, which matters only for networks with batch norm.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from ravine._validation import Interval, Options, check
from ravine.landscape._directions import Directions, _as_vectors, _check_seed, _norm, _params
from ravine.landscape._evaluate import _batches, _slice_mode
from ravine.landscape._result import Landscape
from ravine.landscape._slice import _name, line

__all__ = ["BARRIER_REFERENCES", "BezierCurve", "barrier", "bezier", "evaluate_curve", "fit_bezier", "interpolate"]

BARRIER_REFERENCES = ("max", "mean", "linear")
"""The values :func:`barrier`'s ``reference`` takes: what the peak of a path is measured from."""


def _check_t(t: Any) -> float:
    if isinstance(t, bool) or not isinstance(t, int | float):
        raise TypeError(f"t must be a number in [0, 1], got {type(t).__name__} {t!r}")
    return check("t", float(t), Interval(float, 0.0, 1.0, closed="both"))


def bezier(a: Mapping[str, Tensor], theta: Mapping[str, Tensor], b: Mapping[str, Tensor], t: float) -> OrderedDict:
    """The point ``phi_theta(t) = (1 - t)^2 a + 2 t (1 - t) theta + t^2 b`` of a quadratic Bezier curve.

    Args:
        a: the start, a mapping ``name -> tensor`` (a state dict of parameters).
        theta: the control point, with the same names and shapes.
        b: the end, with the same names and shapes.
        t: the curve parameter in ``[0, 1]``; ``phi(0) = a`` and ``phi(1) = b`` exactly.

    Returns:
        An ``OrderedDict`` in ``a``'s order. At ``t = 0`` and ``t = 1`` the tensors are ``a``'s and
        ``b``'s values themselves (copies), not a rounded combination.
    """
    t = _check_t(t)
    if t == 0.0:
        return OrderedDict((n, v.clone()) for n, v in a.items())
    if t == 1.0:
        return OrderedDict((n, b[n].clone()) for n in a)
    c0, c1, c2 = (1.0 - t) ** 2, 2.0 * t * (1.0 - t), t * t
    return OrderedDict((n, c0 * v + c1 * theta[n] + c2 * b[n]) for n, v in a.items())


@dataclass
class BezierCurve:
    """A fitted quadratic Bezier curve between two solutions (see :func:`fit_bezier`).

    ``a``, ``theta``, ``b``: the endpoints and the control point (``name -> tensor``, detached).
    ``history``: the training loss of each SGD step (one minibatch at one random ``t``), the noisy
    objective the fit descended. ``settings``: the fit's hyperparameters (steps, lr, momentum,
    batch size, seed).
    """

    a: OrderedDict
    theta: OrderedDict
    b: OrderedDict
    history: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)

    def point(self, t: float) -> OrderedDict:
        """The curve's point ``phi_theta(t)`` as a state dict of parameters.

        Args:
            t: the curve parameter in ``[0, 1]``.

        Returns:
            :func:`bezier` of ``(a, theta, b, t)``.
        """
        return bezier(self.a, self.theta, self.b, t)

    @property
    def bend(self) -> float:
        """``||theta - (a + b) / 2||``: how far the control point moved off the straight line's midpoint
        (0 for the line itself; ``phi(1/2) - (a + b)/2 = (theta - (a + b)/2) / 2``)."""
        return _norm(OrderedDict((n, self.theta[n] - 0.5 * (v + self.b[n])) for n, v in self.a.items()))


def _endpoints(model: nn.Module, a: Any, b: Any) -> tuple[OrderedDict, OrderedDict, OrderedDict]:
    params = _params(model)
    return params, _as_vectors(a, params, what="a"), _as_vectors(b, params, what="b")


def interpolate(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data: Any,
    a: Any,
    b: Any,
    steps: int = 21,
    **kwargs: Any,
) -> Landscape:
    """The loss along the straight line ``(1 - t) a + t b`` for ``t`` in ``linspace(0, 1, steps)``.

    Goodfellow et al. (2015)'s interpolation between two solutions: :func:`ravine.landscape.line`
    with its origin at ``a`` and direction ``b - a`` over ``span=(0, 1)``, so the grid's ends are the
    two solutions' losses and every point is rebuilt from ``a`` (no drift).

    Args:
        model: the architecture (its own weights are not used, and are left unchanged).
        loss_fn: ``loss_fn(output, target)``, the batch mean.
        data: ``(inputs, targets)`` tensors or a re-iterable of batches, as for ``line``.
        a: the start: a state dict, an ``nn.Module``, a checkpoint path or a flat vector.
        b: the end, in any of the same forms.
        steps: number of grid points, ``>= 2``; ``t = 0`` and ``t = 1`` are always included.
        **kwargs: passed on to :func:`ravine.landscape.line` (``metric``, ``subset``, ``batch_size``,
            ``batch_norm``, ``max_memory_mb``, ``out``, ``shortcut``, ``vectorize``).

    Returns:
        A line :class:`Landscape` whose ``x`` is ``t``; ``directions["kind"] == "interpolation"``.
    """
    for key in ("direction", "span", "steps"):
        if key in kwargs:
            raise TypeError(f"interpolate() sets {key!r} itself (the line from a to b over t in [0, 1])")
    _, va, vb = _endpoints(model, a, b)
    d = OrderedDict((n, vb[n] - v) for n, v in va.items())
    dirs = Directions(
        (d,),
        {"kind": "interpolation", "distance": _norm(d)},
        origin=va,
        points={"a": [0.0], "b": [1.0]},
    )
    return line(model, loss_fn, data, dirs, span=(0.0, 1.0), steps=steps, **kwargs)


def _check_pair(data: Any) -> tuple[Tensor, Tensor]:
    if not (isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(t, Tensor) for t in data)):
        raise TypeError(f"data must be an (inputs, targets) pair of tensors, got {type(data).__name__}")
    x, y = data
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"data must hold as many targets as inputs (>= 1), got {x.shape[0]} and {y.shape[0]}")
    return x, y


def fit_bezier(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data: Any,
    a: Any,
    b: Any,
    *,
    steps: int = 500,
    lr: float = 0.05,
    momentum: float = 0.9,
    batch_size: int | None = 128,
    seed: int = 0,
    theta0: Any = None,
) -> BezierCurve:
    """Fit the control point of a quadratic Bezier curve from ``a`` to ``b`` of low loss (Garipov et al. 2018).

    Minimizes ``E_{t ~ U(0, 1)} L(phi_theta(t))`` over ``theta`` by SGD: each step draws one ``t``
    uniformly and one minibatch, and steps ``theta`` along ``-grad_theta L(phi_theta(t)) = -2 t (1 - t)
    grad_w L(w)`` at ``w = phi_theta(t)`` (``ravine.optim.sgd``, torch's heavy-ball momentum). The
    endpoints stay fixed. ``theta`` starts at ``(a + b) / 2``, where the curve is the straight line.

    Args:
        model: the architecture; evaluated with ``torch.func.functional_call`` in evaluation mode (its
            own weights, buffers and mode flags are left unchanged).
        loss_fn: ``loss_fn(output, target)``, the batch mean, differentiable.
        data: the training data, an ``(inputs, targets)`` pair of tensors (minibatches are drawn from it).
        a: the start: a state dict, an ``nn.Module``, a checkpoint path or a flat vector.
        b: the end, in any of the same forms.
        steps: number of SGD steps, ``>= 1``.
        lr: the learning rate, ``> 0``.
        momentum: heavy-ball momentum in ``[0, 1)``.
        batch_size: minibatch size (drawn without replacement within a step); ``None`` for the whole data.
        seed: seeds the draws of ``t`` and of the minibatches (a private generator; torch's global
            RNG is not touched).
        theta0: the initial control point (same forms as ``a``); default ``(a + b) / 2``.

    Returns:
        A :class:`BezierCurve` with the fitted ``theta`` and the per-step training losses.
    """
    import ravine.optim as ro

    steps = check("steps", steps, Interval.finite(int, 1))
    lr = check("lr", lr, Interval.finite(float, 0, low_open=True))
    momentum = check("momentum", momentum, Interval(float, 0.0, 1.0, closed="left"))
    _check_seed(seed)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable (output, target) -> scalar, got {type(loss_fn).__name__}")
    params, va, vb = _endpoints(model, a, b)
    x, y = _check_pair(data)
    first = next(iter(params.values()))
    x, y = x.to(first.device), y.to(first.device)
    if x.is_floating_point():
        x = x.to(first.dtype)
    n = x.shape[0]
    bs = n if batch_size is None else min(check("batch_size", batch_size, Interval.finite(int, 1)), n)
    if theta0 is None:
        start = OrderedDict((k, 0.5 * (v + vb[k])) for k, v in va.items())
    else:
        start = _as_vectors(theta0, params, what="theta0")
    theta = OrderedDict((k, v.detach().clone().requires_grad_(True)) for k, v in start.items())
    opt = ro.Optimizer(list(theta.values()), ro.sgd(lr=lr, momentum=momentum))
    buffers = dict(model.named_buffers())
    gen = torch.Generator().manual_seed(seed)
    history = np.empty(steps)
    with _slice_mode(model, "eval"):
        for i in range(steps):
            t = float(torch.rand((), generator=gen, dtype=torch.float64))
            idx = torch.randperm(n, generator=gen)[:bs].to(x.device) if bs < n else None
            xb, yb = (x, y) if idx is None else (x[idx], y[idx])
            c0, c1, c2 = (1.0 - t) ** 2, 2.0 * t * (1.0 - t), t * t
            w = {k: c0 * v + c1 * theta[k] + c2 * vb[k] for k, v in va.items()}
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(functional_call(model, {**w, **buffers}, (xb,)), yb)
            loss.backward()
            opt.step()
            history[i] = float(loss.detach())
    settings = {"steps": steps, "lr": lr, "momentum": momentum, "batch_size": batch_size, "seed": seed}
    fitted = OrderedDict((k, v.detach()) for k, v in theta.items())
    return BezierCurve(va, fitted, vb, history, settings)


def evaluate_curve(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data: Any,
    curve: BezierCurve,
    steps: int = 21,
    *,
    metric: Callable[[Tensor, Tensor], Tensor] | None = None,
    subset: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    seed: int = 0,
) -> Landscape:
    """The loss (and ``metric``) along a :class:`BezierCurve` at ``t`` in ``linspace(0, 1, steps)``.

    Each point ``phi_theta(t)`` is evaluated with ``torch.func.functional_call`` on all of ``data``
    (dropout off, batch norm on its running statistics); the value is the size-weighted mean of the
    batch means, i.e. the mean over the data, as in :func:`ravine.landscape.line`.

    Args:
        model: the architecture (left unchanged).
        loss_fn: ``loss_fn(output, target)``, the batch mean.
        data: ``(inputs, targets)`` tensors or a re-iterable of batches.
        curve: the curve, from :func:`fit_bezier`.
        steps: number of points, ``>= 2``; ``t = 0`` and ``t = 1`` are the endpoints exactly.
        metric: an optional second function of ``(output, target)`` averaged the same way
            (e.g. :func:`ravine.landscape.accuracy`).
        subset: evaluate on a subset of tensor data: a count drawn with ``seed``, or indices.
        batch_size: split tensor data into batches of this size (``None``: one batch).
        seed: seeds the draw of ``subset``.

    Returns:
        A line :class:`Landscape` whose ``x`` is ``t``; ``directions["kind"] == "bezier"``.
    """
    if not isinstance(curve, BezierCurve):
        raise TypeError(f"curve must be a BezierCurve (from fit_bezier), got {type(curve).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable (output, target) -> scalar, got {type(loss_fn).__name__}")
    _check_seed(seed)
    steps = check("steps", steps, Interval.finite(int, 2))
    params = _params(model)
    first = next(iter(params.values()))
    batches, desc = _batches(data, first.device, subset, batch_size, seed)
    buffers = dict(model.named_buffers())
    ts = np.linspace(0.0, 1.0, steps)
    loss = np.full(steps, np.nan)
    met = np.full(steps, np.nan) if metric is not None else None
    with torch.no_grad(), _slice_mode(model, "eval"):
        for i, t in enumerate(ts):
            w = curve.point(float(t))
            w = {k: v.to(device=params[k].device, dtype=params[k].dtype) for k, v in w.items()}
            total, total_m, count = 0.0, 0.0, 0
            for xb, yb in batches():
                xb, yb = xb.to(first.device), yb.to(first.device)
                if xb.is_floating_point():
                    xb = xb.to(first.dtype)
                out = functional_call(model, {**w, **buffers}, (xb,))
                k = len(xb)
                total += float(loss_fn(out, yb)) * k
                if metric is not None:
                    total_m += float(metric(out, yb)) * k
                count += k
            loss[i] = total / count
            if met is not None:
                met[i] = total_m / count
    info = {
        "dtype": str(first.dtype).removeprefix("torch."),
        "device": str(first.device),
        "n_params": int(sum(p.numel() for p in params.values())),
        "loss_fn": _name(loss_fn),
        "grid": [ts.tolist()],
        "path": "functional_call",
        "fit": dict(curve.settings),
    }
    return Landscape(
        kind="line",
        x=ts,
        y=None,
        loss=loss,
        metric=met,
        filled=np.ones(steps, dtype=bool),
        directions={"kind": "bezier", "bend": curve.bend},
        data=desc,
        seed=seed if subset is not None else None,
        batch_norm="eval",
        metric_name=_name(metric),
        points={"a": [0.0], "b": [1.0]},
        info=info,
    )


def barrier(profile: Any, t: Sequence[float] | None = None, reference: str = "max") -> float:
    """The height of the loss barrier along a path ``L(t)``, ``t`` from 0 (one solution) to 1 (the other).

    Args:
        profile: a line :class:`Landscape` (from :func:`interpolate` or :func:`evaluate_curve`; its
            ``x`` is ``t``) or a 1-D sequence of losses at increasing ``t`` whose first and last
            entries are the endpoints.
        t: the positions of a sequence's losses (default: evenly spaced on ``[0, 1]``); only
            ``reference="linear"`` uses them. Ignored for a ``Landscape``.
        reference: what the peak is measured from: ``"max"`` (default) the worse endpoint,
            ``max_t L(t) - max(L(0), L(1))``; ``"mean"`` the endpoints' mean (Frankle et al. 2020);
            ``"linear"`` the chord, ``max_t [L(t) - ((1 - t) L(0) + t L(1))]`` (Entezari et al. 2022).

    Returns:
        The barrier (same units as the loss). With the endpoints on the grid, ``"max"`` and ``"linear"``
        give ``>= 0``; NaN if any loss is NaN, ``inf`` if the path crosses an infinite loss.
    """
    check("reference", reference, Options(BARRIER_REFERENCES))
    if isinstance(profile, Landscape):
        if profile.kind != "line":
            raise ValueError(f"profile must be a line Landscape, got kind {profile.kind!r}")
        loss, t = np.asarray(profile.loss, dtype=float), np.asarray(profile.x, dtype=float)
    else:
        loss = np.asarray(profile, dtype=float)
        if loss.ndim != 1 or len(loss) < 2:
            raise ValueError(f"profile must be a 1-D sequence of at least 2 losses, got shape {loss.shape}")
        t = np.linspace(0.0, 1.0, len(loss)) if t is None else np.asarray(t, dtype=float)
        if t.shape != loss.shape:
            raise ValueError(f"t must have one position per loss ({len(loss)}), got shape {t.shape}")
    if np.isnan(loss).any():
        return math.nan
    if np.isinf(loss).any():
        return math.inf
    l0, l1 = loss[0], loss[-1]
    if reference == "max":
        return float(loss.max() - max(l0, l1))
    if reference == "mean":
        return float(loss.max() - 0.5 * (l0 + l1))
    span = t[-1] - t[0]
    if not span > 0:
        raise ValueError(f"t must increase from the first to the last point, got {t[0]} .. {t[-1]}")
    s = (t - t[0]) / span
    return float((loss - ((1.0 - s) * l0 + s * l1)).max())
