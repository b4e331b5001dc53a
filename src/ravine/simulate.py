"""Batched optimizer trajectories and hyperparameter sweeps on the 2D surfaces of :mod:`ravine.surfaces`.

Nothing here implements an update rule. Every step is taken by a transform of :mod:`ravine.optim`, with
``params = [xy]`` where ``xy`` has shape ``(R, 2)`` (one row per configuration) and hyperparameters that
differ between rows given as tensors of shape ``(R, 1)``. A whole sweep of 4096 ``(lr, beta)`` pairs is then
one ``(4096, 2)`` tensor stepped by one transform: no Python loop over configurations.

One step ``k`` (``k = 0 .. steps-1``) for every live row::

    g_k    = grad f(xy_k) + sigma * xi_k          # xi_k ~ N(0, I), sigma = noise / sqrt(batch_size)
    u_k    = transform.update([g_k], state)       # clip -> optimizer -> schedule multiplier
    xy_k+1 = xy_k + u_k                           # ravine.optim.apply_updates's arithmetic, masked per row

Conventions and choices (documented here once):

- float64 by default (``dtype``), so that sweeps, stability boundaries and comparisons with torch.optim are
  exact to rounding; the device follows ``device`` (CPU by default).
- Gradients: the surface's closed-form gradient where it has one, else autograd over the batch.
- Divergence: a row whose loss is not finite, or whose position is not finite or lies more than
  :data:`DIVERGENCE_FACTOR` times the domain's width (height) from the domain's centre, is marked diverged
  at that step ``k`` (``diverged_at = k``, the index into ``positions``) and frozen there: its position and
  loss stay at their step-``k`` values, its gradient norms become NaN, and the other rows continue.
- Noise (SGD emulation): Gaussian noise of standard deviation ``noise / sqrt(batch_size)`` added to the exact
  gradient. With an ``int`` seed all rows share one noise sequence (common random numbers: the differences
  between runs come from the optimizers, not from luck, and a sweep cell equals the same configuration run
  alone); a list of seeds gives each row its own ``torch.Generator``.
- Tolerance: ``steps_to_tol`` is the first step ``k`` with ``loss_k - f_min <= tol`` where ``f_min`` is the
  surface's global minimum value; on surfaces with no known minimum (saddles, parsed expressions) it is the
  first step with ``||grad f(xy_k)|| <= tol`` (a stationary point), see ``tol_criterion``.
- Learning-rate schedules multiply the learning rate: ``lr_t = lr * s(t) / peak`` where ``s`` is a
  ``ravine.schedules`` schedule (``{"name": ..., **params}``) or any callable ``step -> float`` and
  ``peak`` is the schedule's ``peak`` attribute if it has one, else its maximum over the run's steps. It is
  applied as ``ravine.optim.scale_by_schedule`` at the end of the chain, which scales every update by the
  multiplier: the same as scaling ``lr`` for all the named optimizers (their updates are ``-lr * d``).
- Clipping: ``{"kind": "norm", "max": c}`` is ``ravine.optim.clip_by_global_norm(c, per_row=True)`` (one
  norm per configuration), ``{"kind": "value", "max": c}`` is ``ravine.optim.clip_by_value(c)``; both come
  first in the chain (on the raw, noisy gradient), as ``clip_grad_norm_`` before ``optimizer.step()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import ravine.optim as ro
from ravine.surfaces import Surface
from ravine.surfaces import get as get_surface

__all__ = ["Trajectories", "Sweep", "run", "sweep", "DIVERGENCE_FACTOR", "MAX_STEPS", "MAX_RUNS"]

#: A run is diverged once it is this many domain widths (heights) away from the domain's centre.
DIVERGENCE_FACTOR = 1e3
MAX_STEPS = 1_000_000
MAX_RUNS = 1 << 20

OptimizerSpec = str | dict[str, Any] | ro.Transform


# ----------------------------------------------------------------------------------------------- results
def _json_array(a: np.ndarray) -> list:
    """A nested list with NaN/inf replaced by None (JSON has neither)."""
    a = np.asarray(a)
    if a.dtype.kind == "f":
        obj = a.astype(object)
        obj[~np.isfinite(a)] = None
        return obj.tolist()
    return a.tolist()


@dataclass
class Trajectories:
    """The result of :func:`run`: one row per optimizer configuration.

    Arrays (numpy): ``positions`` ``(R, steps+1, 2)``, ``losses`` ``(R, steps+1)``, ``grad_norms``
    ``(R, steps)`` (norm of the possibly noisy gradient used at each step, before clipping; NaN after a run
    diverged), ``lrs`` ``(R, steps)`` (learning rate of each step, schedule included; NaN when a transform
    has no numeric ``lr``), ``clipped`` ``(R, steps)`` bool, ``diverged`` ``(R,)`` bool, ``diverged_at``
    ``(R,)`` int (-1 if never), ``steps_to_tol`` ``(R,)`` int (-1 if never).
    """

    surface: Surface
    labels: list[str]
    specs: list[dict[str, Any]]
    positions: np.ndarray
    losses: np.ndarray
    grad_norms: np.ndarray
    lrs: np.ndarray
    clipped: np.ndarray
    diverged: np.ndarray
    diverged_at: np.ndarray
    steps_to_tol: np.ndarray
    steps: int
    tol: float
    tol_criterion: str
    noise: float = 0.0
    batch_size: int | None = None
    seed: int | list[int] = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def final_losses(self) -> np.ndarray:
        """``losses[:, -1]`` with NaN where the run diverged."""
        out = self.losses[:, -1].copy()
        out[self.diverged] = np.nan
        return out

    def summary(self) -> list[dict[str, Any]]:
        """One dict per run: label, final position and loss, steps to tolerance, diverged-at."""
        rows = []
        for i, label in enumerate(self.labels):
            rows.append({
                "label": label,
                "final_x": float(self.positions[i, -1, 0]),
                "final_y": float(self.positions[i, -1, 1]),
                "final_loss": float(self.final_losses[i]),
                "steps_to_tol": int(self.steps_to_tol[i]),
                "diverged_at": int(self.diverged_at[i]),
                "clipped_steps": int(self.clipped[i].sum()),
            })
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: lists, NaN/inf as None."""
        return {
            "surface": self.surface.to_dict(),
            "labels": list(self.labels),
            "specs": self.specs,
            "steps": self.steps,
            "tol": self.tol,
            "tol_criterion": self.tol_criterion,
            "noise": self.noise,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "positions": _json_array(self.positions),
            "losses": _json_array(self.losses),
            "grad_norms": _json_array(self.grad_norms),
            "lrs": _json_array(self.lrs),
            "clipped": self.clipped.tolist(),
            "diverged": self.diverged.tolist(),
            "diverged_at": self.diverged_at.tolist(),
            "steps_to_tol": self.steps_to_tol.tolist(),
        }


@dataclass
class Sweep:
    """The result of :func:`sweep`: arrays of shape ``(ny, nx)``, row ``i`` is ``y_values[i]``, column ``j``
    is ``x_values[j]``. ``final_loss`` is NaN where the run diverged; ``steps_to_tol`` and ``diverged_at``
    are -1 for never."""

    surface: Surface
    optimizer: str
    x_name: str
    x_values: np.ndarray
    y_name: str
    y_values: np.ndarray
    final_loss: np.ndarray
    steps_to_tol: np.ndarray
    diverged_at: np.ndarray
    steps: int
    tol: float
    tol_criterion: str
    fixed: dict[str, Any]
    start: tuple[float, float]

    @property
    def diverged(self) -> np.ndarray:
        return self.diverged_at >= 0

    def best(self) -> dict[str, Any]:
        """The cell that reaches tolerance first (ties: lower final loss), else the lowest final loss."""
        stt = np.where(self.steps_to_tol >= 0, self.steps_to_tol, np.iinfo(np.int64).max).astype(np.float64)
        loss = np.where(np.isfinite(self.final_loss), self.final_loss, np.inf)
        order = np.lexsort((loss.ravel(), stt.ravel()))
        i, j = np.unravel_index(order[0], self.final_loss.shape)
        return {
            self.x_name: float(self.x_values[j]),
            self.y_name: float(self.y_values[i]),
            "final_loss": float(self.final_loss[i, j]),
            "steps_to_tol": int(self.steps_to_tol[i, j]),
            "diverged_at": int(self.diverged_at[i, j]),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "surface": self.surface.to_dict(),
            "optimizer": self.optimizer,
            "x_name": self.x_name,
            "x_values": self.x_values.tolist(),
            "y_name": self.y_name,
            "y_values": self.y_values.tolist(),
            "final_loss": _json_array(self.final_loss),
            "steps_to_tol": self.steps_to_tol.tolist(),
            "diverged_at": self.diverged_at.tolist(),
            "steps": self.steps,
            "tol": self.tol,
            "tol_criterion": self.tol_criterion,
            "fixed": {k: (v if isinstance(v, (int, float, str, bool)) or v is None else repr(v))
                      for k, v in self.fixed.items()},
            "start": list(self.start),
        }


# ----------------------------------------------------------------------------------------------- checks
def _check_int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= int(value) <= hi:
        raise ValueError(f"{name} must be an int in [{lo}, {hi}], got {value!r}")
    return int(value)


def _check_float(name: str, value: Any, lo: float, hi: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a number in [{lo:g}, {hi:g}], got {value!r}")
    v = float(value)
    if not (lo <= v <= hi):
        raise ValueError(f"{name} must be a number in [{lo:g}, {hi:g}], got {value!r}")
    return v


def _surface(surface: Surface | str) -> Surface:
    if isinstance(surface, Surface):
        return surface
    if isinstance(surface, str):
        return get_surface(surface)
    raise TypeError(f"surface must be a ravine.surfaces.Surface or a name, got {type(surface).__name__}")


def _starts(surface: Surface, start: Any, rows: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if start is None:
        start = surface.start
    s = torch.as_tensor(np.asarray(start, dtype=np.float64), dtype=dtype, device=device)
    if s.shape == (2,):
        s = s.expand(rows, 2)
    if s.shape != (rows, 2):
        raise ValueError(f"start must be (x, y) or an array of shape ({rows}, 2), got shape {tuple(s.shape)}")
    if not torch.isfinite(s).all():
        raise ValueError(f"start must be finite, got {start!r}")
    return s.clone()


def _schedule_multiplier(schedule: Any, steps: int) -> Callable[[int], float] | None:
    """``m(t) = s(t) / peak`` for a schedule spec (see the module docstring), or None."""
    if schedule is None:
        return None
    if isinstance(schedule, dict):
        spec = dict(schedule)
        name = spec.pop("name", None)
        if not isinstance(name, str):
            raise ValueError(f"schedule must have a 'name' (a ravine.schedules name), got {schedule!r}")
        try:
            import ravine.schedules as rsch
        except ImportError as exc:  # pragma: no cover - the schedules layer ships with ravine
            raise ValueError(f"schedule {name!r} needs ravine.schedules, which is not importable: {exc}") from None
        known = {p.name for p in rsch.parameters(name)} if name in rsch.names() else set()
        if "peak" in known:  # the multiplier is normalised by the peak anyway
            spec.setdefault("peak", 1.0)
        if "total_steps" in known:  # a decay over the whole run unless told otherwise
            spec.setdefault("total_steps", max(steps, 1))
        try:
            fn = rsch.get(name, **spec)
        except TypeError as exc:
            raise ValueError(f"schedule: {exc}") from None
    elif callable(schedule):
        fn = schedule
    else:
        raise TypeError(
            "schedule must be None, a dict {'name': ..., **params} of ravine.schedules, or a callable "
            f"step -> float, got {type(schedule).__name__}"
        )
    peak = getattr(fn, "peak", None)
    if not isinstance(peak, (int, float)) or isinstance(peak, bool) or not math.isfinite(peak) or peak <= 0:
        values = [float(fn(t)) for t in range(steps)] if steps else [1.0]
        peak = max(values)
        if not math.isfinite(peak) or peak <= 0:
            raise ValueError(f"schedule must have a positive finite maximum over the run, got {peak!r}")
    peak = float(peak)
    table = [float(fn(t)) / peak for t in range(steps)]
    if any(not math.isfinite(v) or v < 0 for v in table):
        raise ValueError("schedule must return finite values >= 0 at every step")

    def multiplier(step: int) -> float:
        return table[step] if step < len(table) else float(fn(step)) / peak

    multiplier.table = table  # type: ignore[attr-defined]
    return multiplier


def _clip_transform(clip: Any) -> tuple[ro.Transform | None, str, float]:
    if clip is None:
        return None, "", 0.0
    if not isinstance(clip, dict) or set(clip) - {"kind", "max"} or "kind" not in clip or "max" not in clip:
        raise ValueError(f"clip must be None or {{'kind': 'norm'|'value', 'max': float}}, got {clip!r}")
    kind = clip["kind"]
    mx = _check_float("clip['max']", clip["max"], 0.0)
    if mx <= 0:
        raise ValueError(f"clip['max'] must be > 0, got {clip['max']!r}")
    if kind == "norm":
        return ro.clip_by_global_norm(mx, per_row=True), kind, mx
    if kind == "value":
        return ro.clip_by_value(mx), kind, mx
    raise ValueError(f"clip['kind'] must be 'norm' or 'value', got {kind!r}")


# ----------------------------------------------------------------------------------------------- specs
@dataclass
class _Spec:
    label: str
    name: str | None  # named optimizer, or None for a Transform object
    hyper: dict[str, Any]  # hyperparameters given (lr filled in from the surface when missing)
    transform: ro.Transform | None = None

    @property
    def lr(self) -> float:
        lr = self.hyper.get("lr") if self.name is not None else (
            self.transform.hyperparams.get("lr") if self.transform is not None else None
        )
        return float(lr) if isinstance(lr, (int, float)) and not isinstance(lr, bool) else math.nan

    def group_key(self) -> tuple | None:
        """Specs with equal keys can share one batched transform (only their numeric values differ)."""
        if self.name is None:
            return None
        numeric = {k for k, v in self.hyper.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        static = tuple(sorted((k, repr(v)) for k, v in self.hyper.items() if k not in numeric))
        return (self.name, tuple(sorted(numeric)), static)


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _parse_spec(spec: OptimizerSpec, surface: Surface, index: int) -> _Spec:
    if isinstance(spec, ro.Transform):
        return _Spec(label=repr(spec), name=None, hyper=dict(spec.hyperparams), transform=spec)
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict):
        raise TypeError(
            f"optimizers[{index}] must be a name, a dict {{'name': ..., hyperparameters}} or a "
            f"ravine.optim.Transform, got {type(spec).__name__}"
        )
    spec = dict(spec)
    name = spec.pop("name", None)
    label = spec.pop("label", None)
    if not isinstance(name, str) or name not in ro.names():
        raise ValueError(f"optimizers[{index}]: unknown optimizer {name!r}; allowed: {', '.join(ro.names())}")
    allowed = ro.hyperparam_names(name)
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise ValueError(f"optimizers[{index}] ({name}): unknown hyperparameter(s) {unknown}; allowed: {list(allowed)}")
    given = dict(spec)
    if "lr" not in spec:
        spec = {"lr": surface.default_lr(name, **spec), **spec}
    if label is None:
        shown = {"lr": spec["lr"], **given}
        label = name + " " + " ".join(f"{k}={_fmt(v)}" for k, v in shown.items())
    ro.get(name, **spec)  # validate every value now, with ravine.optim's messages
    return _Spec(label=str(label), name=name, hyper=spec)


def _group_transform(specs: list[_Spec], dtype: torch.dtype, device: torch.device) -> ro.Transform:
    """One transform for specs of the same optimizer: differing numeric hyperparameters become (G, 1)."""
    first = specs[0]
    if first.name is None:
        assert first.transform is not None
        return first.transform
    if len(specs) == 1:
        return ro.get(first.name, **first.hyper)
    hyper: dict[str, Any] = {}
    for k, v in first.hyper.items():
        values = [s.hyper[k] for s in specs]
        if isinstance(v, (int, float)) and not isinstance(v, bool) and any(w != v for w in values):
            hyper[k] = torch.tensor(values, dtype=dtype, device=device).unsqueeze(1)
        else:
            hyper[k] = v
    return ro.get(first.name, **hyper)


# ----------------------------------------------------------------------------------------------- engine
@dataclass
class _Outcome:
    positions: torch.Tensor | None  # (steps+1, R, 2)
    losses: torch.Tensor | None  # (steps+1, R)
    grad_norms: torch.Tensor | None  # (steps, R)
    clipped: torch.Tensor | None  # (steps, R)
    final_xy: torch.Tensor  # (R, 2)
    final_loss: torch.Tensor  # (R,)
    diverged_at: torch.Tensor  # (R,)
    steps_to_tol: torch.Tensor  # (R,)


def _engine(
    surface: Surface,
    groups: list[tuple[ro.Transform, int]],
    xy0: torch.Tensor,
    steps: int,
    sigma: float,
    seeds: int | list[int],
    clip: tuple[ro.Transform | None, str, float],
    multiplier: Callable[[int], float] | None,
    tol: float,
    record: bool,
) -> _Outcome:
    """Step ``groups`` (transform, number of rows) over the rows of ``xy0`` (grouped contiguously)."""
    dtype, device = xy0.dtype, xy0.device
    R = xy0.shape[0]
    clip_t, clip_kind, clip_max = clip
    transforms = []
    for t, _ in groups:
        parts = ([clip_t] if clip_t is not None else []) + [t]
        if multiplier is not None:
            parts.append(ro.scale_by_schedule(multiplier))
        transforms.append(ro.chain(*parts) if len(parts) > 1 else t)
    bounds = [0]
    for _, n in groups:
        bounds.append(bounds[-1] + n)
    xys = [xy0[a:b].clone() for a, b in zip(bounds[:-1], bounds[1:])]
    states = [t.init([x]) for t, x in zip(transforms, xys)]

    gmin = surface.global_minimum
    use_loss_tol = gmin is not None
    fmin = gmin.value if gmin is not None else 0.0
    (x0, x1), (y0, y1) = surface.domain
    centre = torch.tensor([(x0 + x1) / 2, (y0 + y1) / 2], dtype=dtype, device=device)
    limit = torch.tensor([DIVERGENCE_FACTOR * (x1 - x0), DIVERGENCE_FACTOR * (y1 - y0)], dtype=dtype, device=device)

    if isinstance(seeds, int):
        gens = [torch.Generator(device=device).manual_seed(seeds)]
    else:
        gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    alive = torch.ones(R, dtype=torch.bool, device=device)
    diverged_at = torch.full((R,), -1, dtype=torch.int64, device=device)
    stt = torch.full((R,), -1, dtype=torch.int64, device=device)
    if record:
        positions = torch.empty(steps + 1, R, 2, dtype=dtype, device=device)
        losses = torch.empty(steps + 1, R, dtype=dtype, device=device)
        grad_norms = torch.empty(steps, R, dtype=dtype, device=device)
        clipped = torch.zeros(steps, R, dtype=torch.bool, device=device)
    else:
        positions = losses = grad_norms = clipped = None
    nan = torch.tensor(math.nan, dtype=dtype, device=device)

    single = len(xys) == 1
    xy = xys[0] if single else torch.cat(xys)
    if record:
        return _engine_recorded(
            surface, groups, transforms, states, xys, xy, steps, sigma, gens, clip_kind, clip_max, tol,
            use_loss_tol, fmin, centre, limit, positions, losses, grad_norms, clipped,
        )
    v = g = None
    with torch.no_grad():
        for k in range(steps + 1):
            v, g = surface.value_and_grad(xy)
            if k == 0 and not torch.isfinite(v).all():
                raise ValueError("the loss at the start point is not finite; choose another start")
            # divergence: non-finite loss or position, or far outside the domain
            bad = ~torch.isfinite(v) | ((xy - centre).abs() > limit).any(-1) | ~torch.isfinite(xy).all(-1)
            newly = bad & alive
            diverged_at = torch.where(newly, k, diverged_at)
            alive = alive & ~bad
            crit = (v - fmin <= tol) if use_loss_tol else (torch.linalg.vector_norm(g, dim=-1) <= tol)
            stt = torch.where(crit & alive & (stt < 0), k, stt)
            if record:
                positions[k] = xy
                losses[k] = v
            if k == steps:
                break
            if sigma > 0:
                if len(gens) == 1:
                    xi = torch.randn(1, 2, generator=gens[0], dtype=dtype, device=device)
                else:
                    xi = torch.cat([torch.randn(1, 2, generator=gen, dtype=dtype, device=device) for gen in gens])
                g = g + sigma * xi
            if record:
                grad_norms[k] = torch.where(alive, torch.linalg.vector_norm(g, dim=-1), nan)
                if clip_kind == "norm":
                    clipped[k] = (torch.linalg.vector_norm(g, dim=-1) > clip_max) & alive
                elif clip_kind == "value":
                    clipped[k] = (g.abs() > clip_max).any(-1) & alive
            live = alive.unsqueeze(1)
            gs = [g] if single else list(torch.split(g, [n for _, n in groups]))
            new_xys = []
            for i, (t, gi) in enumerate(zip(transforms, gs)):
                (u,), states[i] = t.update([gi], states[i], [xys[i]])
                new_xys.append(xys[i] + u)
            if single:
                xy = torch.where(live, new_xys[0], xy)
                xys = [xy]
            else:
                xy = torch.where(live, torch.cat(new_xys), xy)
                xys = list(torch.split(xy, [n for _, n in groups]))
    final_loss = torch.where(diverged_at >= 0, nan, v)
    return _Outcome(positions, losses, grad_norms, clipped, xy, final_loss, diverged_at, stt)


def _first(mask: torch.Tensor) -> torch.Tensor:
    """Index of the first True along dim 0 for every column, -1 where there is none."""
    hit = mask.any(0)
    first = mask.to(torch.int8).argmax(0)
    return torch.where(hit, first, torch.full_like(first, -1))


def _engine_recorded(
    surface, groups, transforms, states, xys, xy, steps, sigma, gens, clip_kind, clip_max, tol,
    use_loss_tol, fmin, centre, limit, positions, losses, grad_norms, clipped,
) -> _Outcome:
    """The engine when every step is recorded anyway: the per-step bookkeeping moves after the loop.

    Rows are independent (no transform reduces across rows), so a row that diverges may go on
    stepping without touching the others; afterwards the recorded arrays are scanned for the first
    bad step (non-finite loss or position, or beyond ``limit``) and everything from there on is
    frozen exactly as the step-by-step engine freezes it. Half the tensor operations per step, which is
    what a request of the playground pays.
    """
    dtype, device = xy.dtype, xy.device
    single = len(xys) == 1
    sizes = [n for _, n in groups]
    exact_norms = None if use_loss_tol else torch.empty_like(grad_norms)
    with torch.no_grad():
        for k in range(steps + 1):
            v, g = surface.value_and_grad(xy)
            if k == 0 and not torch.isfinite(v).all():
                raise ValueError("the loss at the start point is not finite; choose another start")
            positions[k] = xy
            losses[k] = v
            if k == steps:
                break
            if exact_norms is not None:
                exact_norms[k] = torch.linalg.vector_norm(g, dim=-1)
            if sigma > 0:
                if len(gens) == 1:
                    xi = torch.randn(1, 2, generator=gens[0], dtype=dtype, device=device)
                else:
                    xi = torch.cat([torch.randn(1, 2, generator=gen, dtype=dtype, device=device) for gen in gens])
                g = g + sigma * xi
            grad_norms[k] = torch.linalg.vector_norm(g, dim=-1)
            if clip_kind == "value":
                clipped[k] = (g.abs() > clip_max).any(-1)
            gs = [g] if single else list(torch.split(g, sizes))
            new_xys = []
            for i, (t, gi) in enumerate(zip(transforms, gs)):
                (u,), states[i] = t.update([gi], states[i], [xys[i]])
                new_xys.append(xys[i] + u)
            xy = new_xys[0] if single else torch.cat(new_xys)
            xys = [xy] if single else list(torch.split(xy, sizes))
        # the bookkeeping of the step-by-step engine, on the whole record at once
        ok = ((positions - centre).abs() <= limit).all(-1) & (losses.abs() < math.inf)
        diverged_at = _first(~ok)
        rows = torch.nonzero(diverged_at >= 0).flatten()
        steps_idx = torch.arange(steps + 1, device=device)
        after = steps_idx[:, None] >= diverged_at.clamp(min=0)[None, :]  # (steps+1, R): frozen from d on
        after[:, diverged_at < 0] = False
        if len(rows):
            d = diverged_at[rows]
            positions[:, rows] = torch.where(after[:, rows, None], positions[d, rows][None], positions[:, rows])
            losses[:, rows] = torch.where(after[:, rows], losses[d, rows][None], losses[:, rows])
        if clip_kind == "norm":
            clipped.copy_(grad_norms > clip_max)
        grad_norms.masked_fill_(after[:-1], math.nan)
        clipped.masked_fill_(after[:-1], False)
        crit = (losses - fmin <= tol) if use_loss_tol else torch.cat([exact_norms, exact_norms[-1:]]) <= tol
        if not use_loss_tol:
            crit[-1] = torch.linalg.vector_norm(g, dim=-1) <= tol  # the last point's exact gradient
        stt = _first(crit & ~after)
        final_loss = torch.where(diverged_at >= 0, math.nan, losses[-1])
    return _Outcome(positions, losses, grad_norms, clipped, positions[-1], final_loss, diverged_at, stt)


# ----------------------------------------------------------------------------------------------- run
def run(
    surface: Surface | str,
    optimizers: Sequence[OptimizerSpec] | OptimizerSpec,
    start: Sequence[float] | np.ndarray | None = None,
    steps: int = 500,
    noise: float = 0.0,
    seed: int | Sequence[int] = 0,
    batch_size: int | None = None,
    schedule: dict[str, Any] | Callable[[int], float] | None = None,
    clip: dict[str, Any] | None = None,
    tol: float = 1e-6,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
) -> Trajectories:
    """Run several optimizer configurations on ``surface`` from one start, stepped together.

    Args:
        surface: a :class:`ravine.surfaces.Surface` or a built-in name.
        optimizers: specifications, one per run: a name (``"adam"``), a dict ``{"name": "adam", "lr": 0.1,
            "b1": 0.9, "label": "..."}`` with the hyperparameter names of ``ravine.optim``'s named optimizers,
            or a ``ravine.optim.Transform``. A named spec without ``lr`` gets the surface's suggested
            learning rate (:meth:`Surface.default_lr`), not ravine.optim's default (which is tuned for
            networks, not for these surfaces). Specs of the same optimizer with the same structure are
            stepped as one batched transform (their differing hyperparameters become ``(G, 1)`` tensors).
        start: ``(x, y)`` for every run (default ``surface.start``) or an array ``(R, 2)``, one per run.
        steps: number of updates (``positions`` has ``steps + 1`` rows, the start included).
        noise, batch_size, seed: Gaussian gradient noise of std ``noise / sqrt(batch_size)``; an int seed
            gives all runs one shared noise sequence, a list of ints one generator per run.
        schedule: learning-rate multiplier, see the module docstring. For a dict, ``peak`` defaults to 1 and
            ``total_steps`` (where the schedule has one) to ``steps``.
        clip: ``{"kind": "norm" | "value", "max": float}``, see the module docstring.
        tol: tolerance of ``steps_to_tol``.
        dtype, device: of the simulation (float64 on CPU by default).

    Returns:
        :class:`Trajectories` (numpy arrays).
    """
    surface = _surface(surface)
    if isinstance(optimizers, (str, dict, ro.Transform)):
        optimizers = [optimizers]
    optimizers = list(optimizers)
    if not 1 <= len(optimizers) <= 1024:
        raise ValueError(f"optimizers must hold between 1 and 1024 specifications, got {len(optimizers)}")
    steps = _check_int("steps", steps, 0, MAX_STEPS)
    noise = _check_float("noise", noise, 0.0)
    tol = _check_float("tol", tol, 0.0)
    if batch_size is not None:
        batch_size = _check_int("batch_size", batch_size, 1, 1 << 40)
    R = len(optimizers)
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        seeds: int | list[int] = int(seed)
    else:
        seeds = [int(s) for s in seed]
        if len(seeds) != R:
            raise ValueError(f"seed must be an int or a list of {R} ints (one per run), got {len(seeds)}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    specs = [_parse_spec(s, surface, i) for i, s in enumerate(optimizers)]
    clip_info = _clip_transform(clip)
    multiplier = _schedule_multiplier(schedule, steps)
    xy0 = _starts(surface, start, R, dtype, device)

    # group specs that can share one batched transform; rows are reordered group by group
    order: list[int] = []
    groups: list[tuple[ro.Transform, int]] = []
    keyed: dict[tuple, list[int]] = {}
    singles: list[list[int]] = []
    for i, s in enumerate(specs):
        key = s.group_key()
        if key is None:
            singles.append([i])
        else:
            keyed.setdefault(key, []).append(i)
    for members in [*keyed.values(), *singles]:
        groups.append((_group_transform([specs[i] for i in members], dtype, device), len(members)))
        order.extend(members)
    perm = torch.tensor(order, device=device)
    if not isinstance(seeds, int):
        seeds = [seeds[i] for i in order]
    sigma = noise / math.sqrt(batch_size) if batch_size else noise
    out = _engine(surface, groups, xy0[perm], steps, sigma, seeds, clip_info, multiplier, tol, record=True)
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(R, device=device)

    assert out.positions is not None and out.losses is not None
    assert out.grad_norms is not None and out.clipped is not None
    positions = out.positions.permute(1, 0, 2)[inverse].cpu().numpy()
    losses = out.losses.T[inverse].cpu().numpy()
    grad_norms = out.grad_norms.T[inverse].cpu().numpy()
    clipped = out.clipped.T[inverse].cpu().numpy()
    diverged_at = out.diverged_at[inverse].cpu().numpy()
    steps_to_tol = out.steps_to_tol[inverse].cpu().numpy()
    # freeze diverged rows from the step they diverged
    for r in np.flatnonzero(diverged_at >= 0):
        k = int(diverged_at[r])
        positions[r, k + 1:] = positions[r, k]
        losses[r, k + 1:] = losses[r, k]
        grad_norms[r, k:] = np.nan
        clipped[r, k:] = False
    mult = np.asarray(multiplier.table if multiplier is not None else np.ones(steps))  # type: ignore[attr-defined]
    lrs = np.array([s.lr for s in specs], dtype=np.float64)[:, None] * mult[None, :]
    return Trajectories(
        surface=surface,
        labels=[s.label for s in specs],
        specs=[_spec_dict(s) for s in specs],
        positions=positions,
        losses=losses,
        grad_norms=grad_norms,
        lrs=lrs,
        clipped=clipped,
        diverged=diverged_at >= 0,
        diverged_at=diverged_at,
        steps_to_tol=steps_to_tol,
        steps=steps,
        tol=tol,
        tol_criterion="loss_gap" if surface.global_minimum is not None else "grad_norm",
        noise=noise,
        batch_size=batch_size,
        seed=seeds if isinstance(seeds, int) else [int(s) for s in seed],  # type: ignore[union-attr]
    )


def _spec_dict(s: _Spec) -> dict[str, Any]:
    def safe(v: Any) -> Any:
        return v if isinstance(v, (int, float, str, bool)) or v is None else repr(v)

    if s.name is None:
        return {"name": s.transform.name if s.transform is not None else "transform", "label": s.label,
                **{k: safe(v) for k, v in s.hyper.items()}}
    return {"name": s.name, "label": s.label, **{k: safe(v) for k, v in s.hyper.items()}}


# ----------------------------------------------------------------------------------------------- sweep
def _axis(arg: Any, which: str, allowed: Sequence[str]) -> tuple[str, np.ndarray]:
    if not (isinstance(arg, (tuple, list)) and len(arg) == 2 and isinstance(arg[0], str)):
        raise ValueError(f"{which} must be a pair (hyperparameter name, values), got {arg!r}")
    name, values = arg
    if name not in allowed:
        raise ValueError(f"{which}: {name!r} is not a hyperparameter of this optimizer; allowed: {list(allowed)}")
    vals = np.asarray(values, dtype=np.float64).ravel()
    if not 1 <= vals.size <= 1024:
        raise ValueError(f"{which}: between 1 and 1024 values allowed, got {vals.size}")
    if not np.isfinite(vals).all():
        raise ValueError(f"{which}: values must be finite, got {values!r}")
    return name, vals


def sweep(
    surface: Surface | str,
    optimizer: str = "momentum",
    x: tuple[str, Sequence[float]] = ("lr", np.geomspace(1e-3, 1.0, 32)),
    y: tuple[str, Sequence[float]] = ("beta", np.linspace(0.0, 0.99, 32)),
    steps: int = 500,
    start: Sequence[float] | None = None,
    fixed: dict[str, Any] | None = None,
    noise: float = 0.0,
    seed: int = 0,
    tol: float = 1e-6,
    batch_size: int | None = None,
    schedule: dict[str, Any] | Callable[[int], float] | None = None,
    clip: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
) -> Sweep:
    """A grid of one optimizer's hyperparameters, run as one batched tensor program.

    Cell ``(i, j)`` runs ``optimizer`` with ``{x_name: x_values[j], y_name: y_values[i], **fixed}`` from
    ``start`` (default ``surface.start``). All ``ny * nx`` configurations are the rows of one ``(ny*nx, 2)``
    tensor stepped by one ``ravine.optim`` transform whose swept hyperparameters are ``(ny*nx, 1)`` tensors.
    Each cell equals :func:`run` of the same configuration alone (same seed, noise shared as in ``run``).
    ``lr`` defaults to the surface's suggested learning rate when neither an axis nor ``fixed`` gives it.

    Returns:
        :class:`Sweep` with ``final_loss`` (NaN where diverged), ``steps_to_tol`` and ``diverged_at``.
    """
    surface = _surface(surface)
    if not isinstance(optimizer, str) or optimizer not in ro.names():
        raise ValueError(f"optimizer must be one of {', '.join(ro.names())}, got {optimizer!r}")
    allowed = ro.hyperparam_names(optimizer)
    x_name, xv = _axis(x, "x", allowed)
    y_name, yv = _axis(y, "y", allowed)
    if x_name == y_name:
        raise ValueError(f"x and y must sweep different hyperparameters, got {x_name!r} twice")
    fixed = dict(fixed or {})
    clash = sorted({x_name, y_name} & set(fixed))
    unknown = sorted(set(fixed) - set(allowed))
    if clash or unknown:
        raise ValueError(
            f"fixed: {'swept' if clash else 'unknown'} hyperparameter(s) {clash or unknown}; "
            f"allowed: {[a for a in allowed if a not in (x_name, y_name)]}"
        )
    steps = _check_int("steps", steps, 0, MAX_STEPS)
    noise = _check_float("noise", noise, 0.0)
    tol = _check_float("tol", tol, 0.0)
    seed = _check_int("seed", seed, -(1 << 63), (1 << 63) - 1)
    if batch_size is not None:
        batch_size = _check_int("batch_size", batch_size, 1, 1 << 40)
    nx, ny = xv.size, yv.size
    if nx * ny > MAX_RUNS:
        raise ValueError(f"the grid has {nx * ny} cells; at most {MAX_RUNS} allowed")
    device = torch.device(device) if device is not None else torch.device("cpu")
    hyper: dict[str, Any] = dict(fixed)
    hyper[x_name] = torch.as_tensor(np.tile(xv, ny), dtype=dtype, device=device).unsqueeze(1)
    hyper[y_name] = torch.as_tensor(np.repeat(yv, nx), dtype=dtype, device=device).unsqueeze(1)
    if "lr" not in hyper:
        hyper["lr"] = surface.default_lr(optimizer, **fixed)
    transform = ro.get(optimizer, **hyper)
    clip_info = _clip_transform(clip)
    multiplier = _schedule_multiplier(schedule, steps)
    xy0 = _starts(surface, start, nx * ny, dtype, device)
    sigma = noise / math.sqrt(batch_size) if batch_size else noise
    out = _engine(surface, [(transform, nx * ny)], xy0, steps, sigma, seed, clip_info, multiplier, tol, record=False)
    fixed_out = {k: v for k, v in hyper.items() if k not in (x_name, y_name)}
    return Sweep(
        surface=surface,
        optimizer=optimizer,
        x_name=x_name,
        x_values=xv,
        y_name=y_name,
        y_values=yv,
        final_loss=out.final_loss.reshape(ny, nx).cpu().numpy(),
        steps_to_tol=out.steps_to_tol.reshape(ny, nx).cpu().numpy(),
        diverged_at=out.diverged_at.reshape(ny, nx).cpu().numpy(),
        steps=steps,
        tol=tol,
        tol_criterion="loss_gap" if surface.global_minimum is not None else "grad_norm",
        fixed=fixed_out,
        start=tuple(float(v) for v in xy0[0].tolist()),  # type: ignore[arg-type]
    )
