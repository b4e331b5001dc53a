"""Batched optimizer trajectories and hyperparameter sweeps on the 2D surfaces of :mod:`ravine.surfaces`.

Nothing here implements an update rule. Every step is taken by a transform of :mod:`ravine.optim`, with
``params = [xy]`` where ``xy`` has shape ``(R, 2)`` (one row per configuration) and hyperparameters that
differ between rows given as tensors of shape ``(R, 1)``. A whole sweep of 4096 ``(lr, beta)`` pairs is then
one ``(4096, 2)`` tensor stepped by one transform: no Python loop over configurations.

One step ``k`` (``k = 0 .. steps-1``) for every row::

    g_k    = grad f(xy_k) + sigma * xi_k          # xi_k ~ N(0, I), sigma = noise / sqrt(batch_size)
    u_k    = transform.update([g_k], state)       # clip -> optimizer -> schedule multiplier
    xy_k+1 = xy_k + u_k                           # ravine.optim.apply_updates's arithmetic

Conventions and choices (documented here once):

- float64 by default (``dtype``), so that sweeps, stability boundaries and comparisons with torch.optim are
  exact to rounding; the device follows ``device`` (CPU by default).
- Gradients: the surface's closed-form gradient where it has one, else autograd over the batch.
- Divergence: a row whose loss is not finite, or whose position is not finite or lies more than
  :data:`DIVERGENCE_FACTOR` times the domain's width (height) from the domain's centre, is marked diverged
  at that step ``k`` (``diverged_at = k``, the index into ``positions``) and frozen there: its position and
  loss stay at their step-``k`` values, its gradient norms become NaN, and the other rows continue. :func:`run`
  and :func:`sweep` share one engine, which steps every row and reads divergence, the freeze and the
  tolerance off its record of the steps (rows are independent, so a diverged row stepping on changes
  nothing else).
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
- Engines: the loop above steps eagerly, a few tensor operations of ``ravine.optim`` at a time, which on these
  tiny tensors costs their dispatch (about 70 ms for 6 optimizers x 500 steps). ``run(..., compile=True)``
  steps the same transforms as a ``torch.compile`` program of :data:`COMPILE_BLOCK` steps per call (about 10x
  less; compiled once per structure and kept, see :func:`run`); the two agree to rounding.
- Clipping: ``{"kind": "norm", "max": c}`` is ``ravine.optim.clip_by_global_norm(c, per_row=True)`` (one
  norm per configuration), ``{"kind": "value", "max": c}`` is ``ravine.optim.clip_by_value(c)``; both come
  first in the chain (on the raw, noisy gradient), as ``clip_grad_norm_`` before ``optimizer.step()``.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import types
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.utils._pytree as pytree

import ravine.optim as ro
import ravine.schedules as rsch
from ravine._validation import Interval, Options, check
from ravine.optim.fused.compiled import compiler_problem
from ravine.parallel import Executor, InProcess, Task, values
from ravine.surfaces import Surface
from ravine.surfaces import get as get_surface

__all__ = ["Trajectories", "Sweep", "Stopped", "run", "sweep", "compile_status", "tol_criterion", "DIVERGENCE_FACTOR",
           "MAX_STEPS", "MAX_RUNS", "STOP_CHECK_STEPS", "COMPILE_BLOCK", "COMPILE_CACHE", "COMPILE_MAX_CHAINS"]

DIVERGENCE_FACTOR = 1e3
"""A run is diverged once it is this many domain widths (heights) away from the domain's centre."""
MAX_STEPS = 1_000_000
"""The most steps one :func:`run` or :func:`sweep` takes."""
MAX_RUNS = 1 << 20
"""The most cells of one :func:`sweep`."""

OptimizerSpec = str | dict[str, Any] | ro.Transform

STOP_CHECK_STEPS = 32
"""How often (in steps) :func:`run` and :func:`sweep` call their ``should_stop`` callback."""


class Stopped(RuntimeError):
    """Raised by :func:`run` / :func:`sweep` when their ``should_stop`` callback returned true.

    The playground server stops the work of a client that disconnected this way: it checks a flag every
    :data:`STOP_CHECK_STEPS` steps, so the work stops within that many steps of the flag being set.
    """


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
    engine: str = "eager"
    """``"compiled"`` (a compiled program stepped the runs, see :func:`run`'s ``compile``) or ``"eager"``; when
    ``compile`` was asked for and the runs were stepped eagerly, ``extra["compile"]`` says why."""

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
        """JSON-safe: lists, NaN/inf as None."""
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


def tol_criterion(surface: Surface) -> str:
    """What ``steps_to_tol`` measures on ``surface``: ``"loss_gap"`` (``loss - f_min <= tol``) where its global
    minimum is known, else ``"grad_norm"`` (``||grad f|| <= tol``: a stationary point)."""
    return "loss_gap" if surface.global_minimum is not None else "grad_norm"


# ----------------------------------------------------------------------------------------------- arguments
_STEPS = Interval(int, 0, MAX_STEPS)
_NONNEGATIVE = Interval(float, 0, None)
_BATCH_SIZE = Interval(int, 1, 1 << 40)
_SEED = Interval(int, -(1 << 63), (1 << 63) - 1)
_RUN_COUNT = Interval(int, 1, 1024)  # optimizers of one run, values of one sweep axis
_GRID_CELLS = Interval(int, 1, MAX_RUNS)
_CLIP_KIND = Options(("norm", "value"))
_CLIP_MAX = Interval(float, 0, None, closed="right")


def _as_surface(surface: Surface | str) -> Surface:
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


def _noise_std(noise: float, batch_size: int | None) -> float:
    """``sigma = noise / sqrt(batch_size)``: the noise of a mean over ``batch_size`` samples."""
    return noise / math.sqrt(batch_size) if batch_size else noise


@dataclass(frozen=True)
class _Multiplier:
    """``m(t) = s(t) / peak``: a schedule as a learning-rate multiplier, tabulated over the run's steps."""

    schedule: Callable[[int], float]
    peak: float
    table: list[float]

    def __call__(self, step: int) -> float:
        return self.table[step] if step < len(self.table) else float(self.schedule(step)) / self.peak


def _schedule_function(schedule: Any, steps: int) -> Callable[[int], float]:
    """A callable as it is; a dict ``{"name": ..., **params}`` through :func:`ravine.schedules.get`."""
    if callable(schedule):
        return schedule
    if not isinstance(schedule, dict):
        raise TypeError(
            "schedule must be None, a dict {'name': ..., **params} of ravine.schedules, or a callable "
            f"step -> float, got {type(schedule).__name__}"
        )
    params = dict(schedule)
    name = params.pop("name", None)
    if not isinstance(name, str):
        raise ValueError(f"schedule must have a 'name' (a ravine.schedules name), got {schedule!r}")
    known = {p.name for p in rsch.parameters(name)} if name in rsch.names() else set()
    if "peak" in known:  # the multiplier is normalised by the peak anyway
        params.setdefault("peak", 1.0)
    if "total_steps" in known:  # a decay over the whole run unless told otherwise
        params.setdefault("total_steps", max(steps, 1))
    try:
        return rsch.get(name, **params)
    except TypeError as exc:
        raise ValueError(f"schedule: {exc}") from None


def _multiplier(schedule: Any, steps: int) -> _Multiplier | None:
    """The multiplier of a schedule argument (see the module docstring), or None for no schedule."""
    if schedule is None:
        return None
    fn = _schedule_function(schedule, steps)
    peak = getattr(fn, "peak", None)
    if not isinstance(peak, (int, float)) or isinstance(peak, bool) or not math.isfinite(peak) or peak <= 0:
        peak = max([float(fn(t)) for t in range(steps)] if steps else [1.0])
        if not math.isfinite(peak) or peak <= 0:
            raise ValueError(f"schedule must have a positive finite maximum over the run, got {peak!r}")
    peak = float(peak)
    table = [float(fn(t)) / peak for t in range(steps)]
    if any(not math.isfinite(v) or v < 0 for v in table):
        raise ValueError("schedule must return finite values >= 0 at every step")
    return _Multiplier(fn, peak, table)


@dataclass(frozen=True)
class _Clip:
    """``clip={"kind": ..., "max": ...}``: the transform that goes first in every chain, and what it clips."""

    transform: ro.Transform
    kind: str
    max: float

    def hits(self, norm: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        """Which rows the transform changes: their norm (``kind="norm"``) or a coordinate (of ``g``, needed for
        ``kind="value"``) is above ``max``."""
        if self.kind == "norm":
            return norm > self.max
        assert g is not None
        return (g.abs() > self.max).any(-1)


def _parse_clip(clip: Any) -> _Clip | None:
    if clip is None:
        return None
    if not isinstance(clip, dict) or set(clip) != {"kind", "max"}:
        raise ValueError(f"clip must be None or {{'kind': 'norm'|'value', 'max': float}}, got {clip!r}")
    kind = check("clip['kind']", clip["kind"], _CLIP_KIND)
    max_ = check("clip['max']", clip["max"], _CLIP_MAX)
    transform = ro.clip_by_global_norm(max_, per_row=True) if kind == "norm" else ro.clip_by_value(max_)
    return _Clip(transform, kind, max_)


# ----------------------------------------------------------------------------------------------- specs
@dataclass
class _Spec:
    """One optimizer configuration of :func:`run`, parsed and checked."""

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

    def batch_key(self) -> tuple | None:
        """Specs with equal keys can share one batched transform (only their numeric values differ)."""
        if self.name is None:
            return None
        numeric = {k for k, v in self.hyper.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        static = tuple(sorted((k, repr(v)) for k, v in self.hyper.items() if k not in numeric))
        return (self.name, tuple(sorted(numeric)), static)


def _format_value(v: Any) -> str:
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
        label = name + " " + " ".join(f"{k}={_format_value(v)}" for k, v in shown.items())
    ro.get(name, **spec)  # validate every value now, with ravine.optim's messages
    return _Spec(label=str(label), name=name, hyper=spec)


@dataclass(frozen=True)
class _Batch:
    """Consecutive rows stepped by one transform (several specs of one optimizer, or a single spec)."""

    transform: ro.Transform
    rows: int


def _batched_transform(specs: list[_Spec], dtype: torch.dtype, device: torch.device) -> ro.Transform:
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


def _batch(specs: list[_Spec], dtype: torch.dtype, device: torch.device) -> tuple[list[_Batch], list[int]]:
    """Specs that can share a batched transform, as batches, and the order of their rows (spec indices)."""
    shared: dict[tuple, list[int]] = {}
    alone: list[list[int]] = []
    for i, s in enumerate(specs):
        key = s.batch_key()
        if key is None:
            alone.append([i])
        else:
            shared.setdefault(key, []).append(i)
    batches, order = [], []
    for members in [*shared.values(), *alone]:
        batches.append(_Batch(_batched_transform([specs[i] for i in members], dtype, device), len(members)))
        order.extend(members)
    return batches, order


# ----------------------------------------------------------------------------------------------- engine
#: How many (step, row) cells of record a sweep keeps at once: it reads and reuses its record in blocks of
#: steps, so its memory does not grow with ``steps``.
_BLOCK_CELLS = 1 << 20


@dataclass(frozen=True)
class _Setup:
    """What the engine steps, besides the starting points (rows grouped batch by batch)."""

    surface: Surface
    batches: list[_Batch]
    steps: int
    noise_std: float
    seeds: int | list[int]  # one generator shared by all rows, or one per row (in row order)
    clip: _Clip | None
    multiplier: _Multiplier | None
    tol: float


@dataclass
class _Outcome:
    """What the engine returns; the per-step arrays (step first, row second) only when recorded."""

    diverged_at: torch.Tensor  # (R,), -1 for never
    steps_to_tol: torch.Tensor  # (R,), -1 for never
    final_loss: torch.Tensor  # (R,), NaN where diverged
    positions: torch.Tensor | None = None  # (steps+1, R, 2)
    losses: torch.Tensor | None = None  # (steps+1, R)
    grad_norms: torch.Tensor | None = None  # (steps, R)
    clipped: torch.Tensor | None = None  # (steps, R)


class _Noise:
    """``g + sigma * xi_k`` with ``xi_k ~ N(0, I)``: one generator shared by all rows, or one per row."""

    def __init__(self, std: float, seeds: int | list[int], like: torch.Tensor):
        self.std, self.dtype, self.device = std, like.dtype, like.device
        seeds = [seeds] if isinstance(seeds, int) else seeds
        self.generators = [torch.Generator(device=like.device).manual_seed(int(s)) for s in seeds]

    def _draw(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(1, 2, generator=generator, dtype=self.dtype, device=self.device)

    def draw(self) -> torch.Tensor:
        """The next step's ``sigma * xi_k``: shape ``(1, 2)`` (shared) or ``(R, 2)`` (one generator per row)."""
        if len(self.generators) == 1:
            xi = self._draw(self.generators[0])
        else:
            xi = torch.cat([self._draw(gen) for gen in self.generators])
        return self.std * xi

    def __call__(self, g: torch.Tensor) -> torch.Tensor:
        return g if self.std == 0 else g + self.draw()


def _chain(transform: ro.Transform, clip: _Clip | None, multiplier: _Multiplier | None) -> ro.Transform:
    """``clip -> transform -> scale by the schedule's multiplier``, each part only where asked for."""
    parts = [clip.transform] if clip is not None else []
    parts.append(transform)
    if multiplier is not None:
        parts.append(ro.scale_by_schedule(multiplier))
    return ro.chain(*parts) if len(parts) > 1 else transform


class _Stepper:
    """Every batch's chain with its state; a call moves every row one step: ``xy + u``.

    The rows live in one ``(R, 2)`` tensor ``xy`` and each batch's parameters are a view of its rows, moved in
    place (``xy[rows] += u``, what ``ravine.optim.apply_updates`` computes): one step is each chain's update and
    one addition per batch, with no tensor assembled from the parts.
    """

    def __init__(self, setup: _Setup, xy0: torch.Tensor):
        self.sizes = [b.rows for b in setup.batches]
        self.chains = [_chain(b.transform, setup.clip, setup.multiplier) for b in setup.batches]
        self.xy = xy0.clone()
        self.xys = list(self.xy.split_with_sizes(self.sizes)) if len(self.sizes) > 1 else [self.xy]
        self.states = [chain.init([xy]) for chain, xy in zip(self.chains, self.xys)]

    def __call__(self, g: torch.Tensor) -> torch.Tensor:
        gs = g.split_with_sizes(self.sizes) if len(self.sizes) > 1 else (g,)
        for i, (chain, gi, xy) in enumerate(zip(self.chains, gs, self.xys)):
            (u,), self.states[i] = chain.update([gi], self.states[i], [xy])
            xy.add_(u)
        return self.xy


class _Record:
    """Steps as the engine writes them down: the whole run, kept (:func:`run`), or a reused block (:func:`sweep`).

    ``exact_norms`` (``||grad f(xy_k)||``, for the gradient-norm tolerance) only where the surface has no
    known minimum; ``grad_norms`` (of the possibly noisy gradient) and ``clipped`` only in a kept record.
    """

    def __init__(self, length: int, like: torch.Tensor, exact_norms: bool, kept: bool):
        rows, dtype, device = like.shape[0], like.dtype, like.device
        self.kept = kept
        self.positions = torch.empty(length, rows, 2, dtype=dtype, device=device)
        self.losses = torch.empty(length, rows, dtype=dtype, device=device)
        self.exact_norms = torch.empty(length, rows, dtype=dtype, device=device) if exact_norms else None
        per_step = length if kept else 0
        self.grad_norms = torch.empty(per_step, rows, dtype=dtype, device=device)
        self.clipped = torch.zeros(per_step, rows, dtype=torch.bool, device=device)

    def point(self, i: int, xy: torch.Tensor, v: torch.Tensor, g: torch.Tensor) -> None:
        self.positions[i] = xy
        self.losses[i] = v
        if self.exact_norms is not None:
            self.exact_norms[i] = torch.linalg.vector_norm(g, dim=-1)

    def gradient(self, i: int, g: torch.Tensor, clip: _Clip | None) -> None:
        if not self.kept:
            return
        norm = torch.linalg.vector_norm(g, dim=-1)
        self.grad_norms[i] = norm
        if clip is not None:
            self.clipped[i] = clip.hits(norm, g)


def _first_true(mask: torch.Tensor) -> torch.Tensor:
    """Index of the first True along dim 0 for every column, -1 where there is none."""
    hit = mask.any(0)
    first = mask.to(torch.int8).argmax(0)
    return torch.where(hit, first, torch.full_like(first, -1))


class _Ledger:
    """Divergence, steps to tolerance and the freeze, read off the record one block of steps at a time.

    Row ``r`` diverges at the first step ``d`` whose loss is not finite, or whose position is not finite or
    more than ``limit`` from the domain's centre. Nothing from ``d`` on counts as within tolerance, and a kept
    record holds the step-``d`` position and loss from ``d`` on, NaN gradient norms and nothing clipped.
    """

    def __init__(self, surface: Surface, tol: float, xy0: torch.Tensor):
        rows, dtype, device = xy0.shape[0], xy0.dtype, xy0.device
        (x0, x1), (y0, y1) = surface.domain
        self.centre = torch.tensor([(x0 + x1) / 2, (y0 + y1) / 2], dtype=dtype, device=device)
        self.limit = torch.tensor([DIVERGENCE_FACTOR * (x1 - x0), DIVERGENCE_FACTOR * (y1 - y0)], dtype=dtype,
                                  device=device)
        minimum = surface.global_minimum
        self.f_min = None if minimum is None else minimum.value  # None: the gradient-norm criterion
        self.tol = tol
        self.diverged_at = torch.full((rows,), -1, dtype=torch.int64, device=device)
        self.steps_to_tol = torch.full((rows,), -1, dtype=torch.int64, device=device)
        self.frozen_xy = torch.zeros(rows, 2, dtype=dtype, device=device)
        self.frozen_loss = torch.zeros(rows, dtype=dtype, device=device)

    def read(self, first_step: int, record: _Record, count: int) -> None:
        """Book steps ``first_step .. first_step + count - 1``, rows ``0 .. count - 1`` of ``record``."""
        positions, losses = record.positions[:count], record.losses[:count]
        ok = ((positions - self.centre).abs() <= self.limit).all(-1) & (losses.abs() < math.inf)
        bad = _first_true(~ok)
        newly = (self.diverged_at < 0) & (bad >= 0)
        self.diverged_at = torch.where(newly, first_step + bad, self.diverged_at)

        if self.f_min is not None:
            at_tol = losses - self.f_min <= self.tol
        else:
            assert record.exact_norms is not None
            at_tol = record.exact_norms[:count] <= self.tol
        hit = first_step + _first_true(at_tol)  # a first hit at or after d means no hit before d either
        first = (self.steps_to_tol < 0) & (hit >= first_step) & ((self.diverged_at < 0) | (hit < self.diverged_at))
        self.steps_to_tol = torch.where(first, hit, self.steps_to_tol)

        if record.kept:
            at, rows = bad.clamp(min=0), torch.arange(bad.shape[0], device=bad.device)
            self.frozen_xy = torch.where(newly[:, None], positions[at, rows], self.frozen_xy)
            self.frozen_loss = torch.where(newly, losses[at, rows], self.frozen_loss)
            self._freeze(first_step, record, count)

    def _freeze(self, first_step: int, record: _Record, count: int) -> None:
        steps = first_step + torch.arange(count, device=self.diverged_at.device)
        frozen = (steps[:, None] >= self.diverged_at[None, :]) & (self.diverged_at >= 0)[None, :]
        record.positions[:count] = torch.where(frozen[..., None], self.frozen_xy, record.positions[:count])
        record.losses[:count] = torch.where(frozen, self.frozen_loss, record.losses[:count])
        record.grad_norms[:count].masked_fill_(frozen, math.nan)
        record.clipped[:count].masked_fill_(frozen, False)


def _simulate(
    setup: _Setup,
    xy0: torch.Tensor,
    record: bool,
    progress: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> _Outcome:
    """Step the rows of ``xy0`` ``setup.steps`` times; with ``record``, return every step too.

    The loop only steps and writes down; the bookkeeping (:class:`_Ledger`) reads the record afterwards, a
    block of steps at a time. That is exact because rows are independent (every transform here acts row by
    row: the optimizers are elementwise, norm clipping is per row, noise is drawn per row or shared), so a
    row that diverged may go on stepping without touching the others (the ledger ignores it from the step it
    diverged, and freezes it there in a kept record). With ``record`` the record is the whole run, kept; a
    sweep reuses blocks of at most ``_BLOCK_CELLS / rows`` steps.
    """
    surface, steps = setup.surface, setup.steps
    length = steps + 1 if record else max(1, min(steps + 1, _BLOCK_CELLS // xy0.shape[0]))
    ledger = _Ledger(surface, setup.tol, xy0)
    rec = _Record(length, xy0, exact_norms=ledger.f_min is None, kept=record)
    noise = _Noise(setup.noise_std, setup.seeds, xy0)
    stepper = _Stepper(setup, xy0)
    xy = stepper.xy
    with torch.no_grad():
        for k in range(steps + 1):
            i = k % length
            v, g = surface.value_and_grad(xy)
            if k == 0 and not torch.isfinite(v).all():
                raise ValueError("the loss at the start point is not finite; choose another start")
            rec.point(i, xy, v, g)
            if should_stop is not None and k % STOP_CHECK_STEPS == 0 and should_stop():
                raise Stopped(f"stopped at step {k} of {steps}: should_stop() returned true")
            if k < steps:
                g = noise(g)
                rec.gradient(i, g, setup.clip)
                xy = stepper(g)
            if i == length - 1 or k == steps:
                ledger.read(k - i, rec, i + 1)
                if progress is not None:
                    progress(k)
    final_loss = torch.where(ledger.diverged_at >= 0, math.nan, v)
    if not record:
        return _Outcome(ledger.diverged_at, ledger.steps_to_tol, final_loss)
    return _Outcome(ledger.diverged_at, ledger.steps_to_tol, final_loss, rec.positions, rec.losses,
                    rec.grad_norms[:-1], rec.clipped[:-1])


# ----------------------------------------------------------------------------------------------- compiled
COMPILE_BLOCK = 32
"""Steps per call of a compiled program (:func:`run` with ``compile``); it divides :data:`STOP_CHECK_STEPS`."""
COMPILE_CACHE = 32
"""How many compiled programs a process keeps (the least recently used goes first)."""
COMPILE_MAX_CHAINS = 8
"""The most optimizer structures (runs that cannot share one batched transform) a compiled program holds: its
compilation grows with them (a minute and more beyond that on a CPU); more are stepped eagerly."""

_COMPILE = Options((False, True, "ready"))


def _map_state(fn: Callable[[str | None, Any], Any], state: Any, key: str | None = None) -> Any:
    """``state`` (dicts, lists and tuples of tensors and numbers) with every leaf ``x`` under key ``k``
    replaced by ``fn(k, x)``."""
    if isinstance(state, dict):
        return {k: _map_state(fn, v, k) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_map_state(fn, v, key) for v in state)
    return fn(key, state)


def _tensor_step(key: str | None, x: Any) -> Any:
    """A state's step counter as a 0-dim tensor (as the fused path passes it): the same graph for every step."""
    return torch.tensor(x, dtype=torch.int64) if key == "step" and isinstance(x, int) else x


def _like(state: Any, template: Any) -> Any:
    """``state`` cut to the keys of ``template`` (recursively): a transform's state after an update holds the
    step's statistics too (a clip's norm), which the next update does not read."""
    if isinstance(template, dict):
        return {k: _like(state[k], v) for k, v in template.items()}
    if isinstance(template, (list, tuple)):
        return type(template)(_like(a, b) for a, b in zip(state, template))
    return state


def _leaves(t: ro.Transform) -> list[ro.Transform]:
    return [leaf for p in t.parts for leaf in _leaves(p)] if t.parts else [t]


def _numeric(leaf: ro.Transform, name: str, value: Any) -> bool:
    """A hyperparameter a compiled program takes as a tensor (its value varies, the program does not)."""
    if name in leaf.static or isinstance(value, bool):
        return False
    return isinstance(value, float) or (isinstance(value, torch.Tensor) and value.is_floating_point())


def _hyper_values(t: ro.Transform) -> list[Any]:
    return [v for leaf in _leaves(t) for k, v in leaf.hyperparams.items() if _numeric(leaf, k, v)]


def _chain_key(t: ro.Transform) -> tuple[tuple | None, str]:
    """What fixes a chain's compiled graph: its primitives, their structural values and the shapes of its
    numeric hyperparameters; ``None`` and why where a primitive cannot be compiled (it declares so, it has no
    factory to rebuild it with tensors, or a hyperparameter is a schedule)."""
    key = []
    for leaf in _leaves(t):
        if not leaf.compilable or leaf.factory is None:
            return None, f"{leaf.name} does not compile"
        items = []
        for k, v in leaf.hyperparams.items():
            if callable(v) and not isinstance(v, torch.Tensor):
                return None, f"{leaf.name}'s {k} is a schedule (a compiled program takes numbers)"
            items.append((k, ("tensor", tuple(v.shape) if isinstance(v, torch.Tensor) else ())) if _numeric(leaf, k, v)
                         else (k, repr(v)))
        key.append((leaf.name, tuple(items)))
    return tuple(key), ""


def _tensorised(t: ro.Transform, dtype: torch.dtype, device: torch.device) -> tuple[ro.Transform, list[torch.Tensor]]:
    """``t`` rebuilt by its primitives' factories with every numeric hyperparameter a tensor of its own (0-dim
    for a number, the given shape for a tensor), and those tensors in :func:`_hyper_values`'s order."""
    tensors: list[torch.Tensor] = []

    def rebuild(node: ro.Transform) -> ro.Transform:
        if node.parts:
            return ro.chain(*[rebuild(p) for p in node.parts])
        kw = {}
        for k, v in node.hyperparams.items():
            if _numeric(node, k, v):
                kw[k] = torch.as_tensor(v, dtype=dtype, device=device).detach().clone()
                tensors.append(kw[k])
            else:
                kw[k] = v
        assert node.factory is not None
        return node.factory(**kw)

    return rebuild(t), tensors


def _program_key(setup: _Setup, xy0: torch.Tensor) -> tuple[tuple | None, str]:
    """The key of the compiled program that steps ``setup`` (``None`` and why, where none can)."""
    surface_key = setup.surface.program_key()
    if len(setup.batches) > COMPILE_MAX_CHAINS:
        return None, f"{len(setup.batches)} optimizer structures (a program holds at most {COMPILE_MAX_CHAINS})"
    chains = []
    for b in setup.batches:
        chain_key, why = _chain_key(_chain(b.transform, setup.clip, None))
        if chain_key is None:
            return None, why
        chains.append((chain_key, b.rows))
    noise = None if setup.noise_std == 0 else ("shared" if isinstance(setup.seeds, int) else "per row")
    return (surface_key, tuple(chains), noise, setup.multiplier is not None, xy0.dtype, str(xy0.device),
            COMPILE_BLOCK), ""


class _BlockTable:
    """A schedule's multipliers over one block of steps, ``step -> values[step - first]``: the callable of the
    ``scale_by_schedule`` that ends a compiled chain. Its tensors are the graph's inputs, refilled before each
    call (the step is the transform's own counter, a tensor there)."""

    def __init__(self, block: int, dtype: torch.dtype, device: torch.device):
        self.values = torch.zeros(block, dtype=dtype, device=device)
        self.first = torch.zeros((), dtype=torch.int64, device=device)

    def fill(self, first: int, values: list[float]) -> None:
        self.first.fill_(first)
        self.values.copy_(torch.tensor(values, dtype=self.values.dtype))

    def __call__(self, step: Any) -> torch.Tensor:
        return self.values.gather(0, (step - self.first).reshape(1)).reshape(())  # traced without a branch


class _Program:
    """:data:`COMPILE_BLOCK` steps of every batch's chain, with the surface's gradient and what the record
    keeps, as one ``torch.compile`` graph (its numeric hyperparameters are tensors refilled per call).

    One call of the graph replaces :data:`COMPILE_BLOCK` iterations of :func:`_simulate`'s loop (a few hundred
    tensor operations dispatched one by one); the chains are ``ravine.optim``'s transforms, traced, ending as
    in :func:`_chain` with a ``scale_by_schedule`` whose schedule reads the block's multipliers from tensors
    (:class:`_BlockTable`). Results equal the eager loop's to rounding (the compiler may fuse arithmetic
    differently).
    """

    count = 0

    def __init__(self, setup: _Setup, xy0: torch.Tensor):
        dtype, device = xy0.dtype, xy0.device
        self.sizes = [b.rows for b in setup.batches]
        self.exact_norms = setup.surface.global_minimum is None
        self.block = COMPILE_BLOCK
        self.schedule = _BlockTable(self.block, dtype, device) if setup.multiplier is not None else None
        self.chains, self.hypers = [], []
        for b in setup.batches:
            chain, hypers = _tensorised(_chain(b.transform, setup.clip, None), dtype, device)
            self.chains.append(ro.chain(chain, ro.scale_by_schedule(self.schedule)) if self.schedule else chain)
            self.hypers.append(hypers)
        self.lock = threading.Lock()
        self.ready = False
        self.treespec: Any = None
        body = self._body(setup.surface)
        # a code object of its own: torch.compile caches its graphs per code object
        _Program.count += 1
        code = body.__code__.replace(co_name=f"ravine_simulate_block_{_Program.count}")
        body = types.FunctionType(code, body.__globals__, code.co_name, body.__defaults__, body.__closure__)
        self.fn = torch.compile(body, fullgraph=True, dynamic=False, options={"cpp_wrapper": True})

    def _body(self, surface: Surface) -> Callable:
        chains, sizes, exact, block = self.chains, self.sizes, self.exact_norms, self.block

        def body(xy: torch.Tensor, flat: list, noise: torch.Tensor | None) -> tuple:
            # the chains update their state in place: on copies (the inputs stay as they were)
            template = pytree.tree_unflatten(flat, self.treespec)
            states = pytree.tree_unflatten([x.clone() for x in flat], self.treespec)
            positions, losses, exact_norms, grad_norms = [], [], [], []
            for j in range(block):
                v, g = surface.value_and_grad(xy, "auto" if surface.has_closed_form_grad else "functional")
                positions.append(xy)
                losses.append(v)
                if exact:
                    exact_norms.append(torch.linalg.vector_norm(g, dim=-1))
                if noise is not None:
                    g = g + noise[j]
                grad_norms.append(torch.linalg.vector_norm(g, dim=-1))
                moved = []
                for i, (chain, gi, xi) in enumerate(zip(chains, g.split(sizes), xy.split(sizes))):
                    (u,), states[i] = chain.update([gi.clone()], states[i], [xi])
                    moved.append(xi + u)
                xy = torch.cat(moved) if len(moved) > 1 else moved[0]
            return (xy, pytree.tree_leaves(_like(states, template)), torch.stack(positions), torch.stack(losses),
                    torch.stack(exact_norms) if exact else None, torch.stack(grad_norms))

        return body

    def __call__(self, setup: _Setup, xy0: torch.Tensor, should_stop: Callable[[], bool] | None) -> _Outcome:
        """:func:`_simulate` of ``setup`` from ``xy0`` with a kept record, a block of steps per call."""
        steps, K = setup.steps, self.block
        ledger = _Ledger(setup.surface, setup.tol, xy0)
        rec = _Record(steps + 1, xy0, exact_norms=self.exact_norms, kept=True)
        noise = _Noise(setup.noise_std, setup.seeds, xy0)
        table = setup.multiplier.table if setup.multiplier is not None else None
        with self.lock, torch.no_grad():
            for b, hypers in zip(setup.batches, self.hypers):
                for x, v in zip(hypers, _hyper_values(_chain(b.transform, setup.clip, None))):
                    x.copy_(v) if isinstance(v, torch.Tensor) else x.fill_(v)
            xy = xy0.clone()
            states = [_map_state(_tensor_step, c.init([x])) for c, x in zip(self.chains, xy.split(self.sizes))]
            states, self.treespec = pytree.tree_flatten(states)  # one list of tensors: cheaper guards
            for k0 in range(0, steps + 1, K):  # the last block may step past `steps`: those steps are not kept
                if k0 and should_stop is not None and k0 % STOP_CHECK_STEPS == 0 and should_stop():
                    raise Stopped(f"stopped at step {k0} of {steps}: should_stop() returned true")
                draws = torch.stack([noise.draw() for _ in range(K)]) if noise.std != 0 else None
                if self.schedule is not None and table is not None:
                    self.schedule.fill(k0, [table[k] if k < steps else 0.0 for k in range(k0, k0 + K)])
                xy, states, positions, losses, exact_norms, grad_norms = self.fn(xy, states, draws)
                self.ready = True
                n, m = min(K, steps + 1 - k0), max(0, min(K, steps - k0))
                if k0 == 0:
                    if not torch.isfinite(losses[0]).all():
                        raise ValueError("the loss at the start point is not finite; choose another start")
                    if should_stop is not None and should_stop():
                        raise Stopped(f"stopped at step 0 of {steps}: should_stop() returned true")
                rec.positions[k0:k0 + n] = positions[:n]
                rec.losses[k0:k0 + n] = losses[:n]
                if rec.exact_norms is not None and exact_norms is not None:
                    rec.exact_norms[k0:k0 + n] = exact_norms[:n]
                rec.grad_norms[k0:k0 + m] = grad_norms[:m]
        if setup.clip is not None:
            rec.clipped[:steps] = setup.clip.hits(rec.grad_norms[:steps])
        ledger.read(0, rec, steps + 1)
        final_loss = torch.where(ledger.diverged_at >= 0, math.nan, rec.losses[steps])
        return _Outcome(ledger.diverged_at, ledger.steps_to_tol, final_loss, rec.positions, rec.losses,
                        rec.grad_norms[:-1], rec.clipped[:-1])


_PROGRAMS: OrderedDict[tuple, _Program] = OrderedDict()
_FAILED: dict[tuple, str] = {}
_PROGRAMS_LOCK = threading.Lock()


def _program(setup: _Setup, xy0: torch.Tensor, create: bool) -> tuple[_Program | None, str]:
    """The compiled program for ``setup`` (created, not yet compiled, when ``create``), or ``None`` and why."""
    key, why = _program_key(setup, xy0)
    if key is None:
        return None, why
    with _PROGRAMS_LOCK:
        if key in _FAILED:
            return None, _FAILED[key]
        program = _PROGRAMS.get(key)
        if program is not None:
            _PROGRAMS.move_to_end(key)
            return (program, "") if create or program.ready else (None, "not ready")
        if not create:
            return None, "not ready"
        problem = compiler_problem()
        if problem is not None:
            _FAILED[key] = problem
            return None, problem
        program = _PROGRAMS[key] = _Program(setup, xy0)
        while len(_PROGRAMS) > COMPILE_CACHE:
            _PROGRAMS.popitem(last=False)
        return program, ""


def _compiled(setup: _Setup, xy0: torch.Tensor, mode: Any, should_stop: Callable[[], bool] | None
              ) -> tuple[_Outcome | None, str]:
    """:func:`_simulate` by a compiled program where ``mode`` asks for one and one can (or is ready, for
    ``"ready"``); else ``(None, why not)``. A failed compilation is remembered and warned of."""
    program, why = _program(setup, xy0, create=mode is True)
    if program is None:
        return None, why
    try:
        return program(setup, xy0, should_stop), ""
    except Exception as exc:  # noqa: BLE001 - before the first call returned, the compiler failed
        if program.ready or isinstance(exc, Stopped):  # the run's own errors (a non-finite start), a stop
            raise
        key, _ = _program_key(setup, xy0)
        why = f"compilation failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        with _PROGRAMS_LOCK:
            _FAILED[key] = why  # type: ignore[index]
            _PROGRAMS.pop(key, None)  # type: ignore[arg-type]
        warnings.warn(f"ravine.simulate: {why}; stepping eagerly", RuntimeWarning, stacklevel=3)
        return None, why


def compile_status() -> dict[str, int]:
    """This process's compiled programs (:func:`run` with ``compile``): ``ready``, ``compiling`` (created, first
    call not finished) and ``failed``."""
    with _PROGRAMS_LOCK:
        ready = sum(p.ready for p in _PROGRAMS.values())
        return {"ready": ready, "compiling": len(_PROGRAMS) - ready, "failed": len(_FAILED)}


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
    should_stop: Callable[[], bool] | None = None,
    compile: bool | str = False,
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
        noise: Gaussian gradient noise of standard deviation ``noise / sqrt(batch_size)``.
        seed: an int gives all runs one shared noise sequence, a list of ints one generator per run.
        batch_size: the batch the noise emulates (``None``: the noise's std is ``noise`` itself).
        schedule: learning-rate multiplier, see the module docstring. For a dict, ``peak`` defaults to 1 and
            ``total_steps`` (where the schedule has one) to ``steps``.
        clip: ``{"kind": "norm" | "value", "max": float}``, see the module docstring.
        tol: tolerance of ``steps_to_tol``.
        dtype: of the simulation (float64 by default).
        device: of the simulation (CPU by default).
        should_stop: called every :data:`STOP_CHECK_STEPS` steps (from step 0); when it returns true the
            run stops and raises :class:`Stopped` (a server stops the work of a client that left).
        compile: ``False`` (default): step eagerly, one tensor operation at a time. ``True``: step with a
            program compiled by ``torch.compile`` (:data:`COMPILE_BLOCK` steps of every run per call; several
            times faster on these tiny tensors), compiled on first use of this structure (surface, optimizers,
            their structural options, clipping, schedule, noise; 2 to 90 s on a CPU, less from inductor's disk
            cache) and kept for later calls (:data:`COMPILE_CACHE` per process). Their numeric hyperparameters,
            start, steps and seed vary freely. ``"ready"``: the compiled program where this process has one
            ready, else eagerly (and ``extra["compile"]`` is ``"not ready"``): what a server's workers do,
            compiling apart (a compilation holds the interpreter for seconds: another thread of the process
            would stall). Results equal the eager ones to rounding. Where no program can be compiled (a
            schedule as a hyperparameter, value clipping, more than :data:`COMPILE_MAX_CHAINS` optimizer
            structures, no compiler) the runs are stepped eagerly and ``extra["compile"]`` says why. A surface
            without a closed-form gradient (a parsed expression) is differentiated by ``torch.func.grad`` in
            the program.

    Returns:
        :class:`Trajectories` (numpy arrays).

    Raises:
        Stopped: ``should_stop()`` returned true.
    """
    surface = _as_surface(surface)
    compile = check("compile", compile, _COMPILE)
    if isinstance(optimizers, (str, dict, ro.Transform)):
        optimizers = [optimizers]
    optimizers = list(optimizers)
    check("len(optimizers)", len(optimizers), _RUN_COUNT)
    steps = check("steps", steps, _STEPS)
    noise = check("noise", noise, _NONNEGATIVE)
    tol = check("tol", tol, _NONNEGATIVE)
    if batch_size is not None:
        batch_size = check("batch_size", batch_size, _BATCH_SIZE)
    R = len(optimizers)
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        seeds: int | list[int] = int(seed)
    else:
        seeds = [int(s) for s in seed]
        if len(seeds) != R:
            raise ValueError(f"seed must be an int or a list of {R} ints (one per run), got {len(seeds)}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    specs = [_parse_spec(s, surface, i) for i, s in enumerate(optimizers)]
    multiplier = _multiplier(schedule, steps)
    xy0 = _starts(surface, start, R, dtype, device)

    # rows are reordered batch by batch for the engine, and back afterwards
    batches, order = _batch(specs, dtype, device)
    row_seeds = seeds if isinstance(seeds, int) else [seeds[i] for i in order]
    setup = _Setup(surface, batches, steps, _noise_std(noise, batch_size), row_seeds, _parse_clip(clip), multiplier,
                   tol)
    perm = torch.tensor(order, device=device)
    out, why = (None, "") if compile is False else _compiled(setup, xy0[perm], compile, should_stop)
    if out is None:
        out = _simulate(setup, xy0[perm], record=True, should_stop=should_stop)
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(R, device=device)

    assert out.positions is not None and out.losses is not None
    assert out.grad_norms is not None and out.clipped is not None
    mult = np.asarray(multiplier.table if multiplier is not None else np.ones(steps))
    lrs = np.array([s.lr for s in specs], dtype=np.float64)[:, None] * mult[None, :]
    diverged_at = out.diverged_at[inverse].cpu().numpy()
    return Trajectories(
        surface=surface,
        labels=[s.label for s in specs],
        specs=[_spec_dict(s) for s in specs],
        positions=out.positions.permute(1, 0, 2)[inverse].cpu().numpy(),
        losses=out.losses.T[inverse].cpu().numpy(),
        grad_norms=out.grad_norms.T[inverse].cpu().numpy(),
        lrs=lrs,
        clipped=out.clipped.T[inverse].cpu().numpy(),
        diverged=diverged_at >= 0,
        diverged_at=diverged_at,
        steps_to_tol=out.steps_to_tol[inverse].cpu().numpy(),
        steps=steps,
        tol=tol,
        tol_criterion=tol_criterion(surface),
        noise=noise,
        batch_size=batch_size,
        seed=seeds,
        engine="eager" if compile is False or why else "compiled",
        extra={"compile": why} if why else {},
    )


def _sweep_bands(
    executor: Executor, surface: Surface, y: tuple[str, Sequence[float]], kw: dict[str, Any], progress: Any
) -> Sweep:
    """:func:`sweep` with its ``y`` values cut into bands, one task each; the bands' grids stacked in order."""
    allowed = ro.hyperparam_names(check("optimizer", kw["optimizer"], Options(ro.names())))
    y_name, y_values = _axis(y, "y", allowed)
    check("the number of grid cells", _axis(kw["x"], "x", allowed)[1].size * y_values.size, _GRID_CELLS)
    bands = [b for b in np.array_split(y_values, min(len(y_values), 2 * executor.workers)) if len(b)]
    tasks = [Task(f"{y_name} {b[0]:g}..{b[-1]:g}", sweep, (surface,), {**kw, "y": (y_name, b)}) for b in bands]
    parts = values(executor.run(tasks))  # TaskError naming the bands that failed
    if progress is not None:
        progress(kw["steps"])
    first = parts[0]
    return dataclasses.replace(
        first,
        y_values=np.concatenate([p.y_values for p in parts]),
        final_loss=np.concatenate([p.final_loss for p in parts]),
        steps_to_tol=np.concatenate([p.steps_to_tol for p in parts]),
        diverged_at=np.concatenate([p.diverged_at for p in parts]),
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
    check("number of values", vals.size, _RUN_COUNT, where=f"{which}: ")
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
    progress: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    executor: Executor | None = None,
) -> Sweep:
    """A grid of one optimizer's hyperparameters, run as one batched tensor program.

    Cell ``(i, j)`` runs ``optimizer`` with ``{x_name: x_values[j], y_name: y_values[i], **fixed}`` from
    ``start`` (default ``surface.start``). All ``ny * nx`` configurations are the rows of one ``(ny*nx, 2)``
    tensor stepped by one ``ravine.optim`` transform whose swept hyperparameters are ``(ny*nx, 1)`` tensors.
    Each cell equals :func:`run` of the same configuration alone (same seed, noise shared as in ``run``).
    ``lr`` defaults to the surface's suggested learning rate when neither an axis nor ``fixed`` gives it.
    ``progress``, if given, is called with the number of steps done after each block of steps (for a
    progress bar); it changes no number. ``should_stop``, if given, is called every :data:`STOP_CHECK_STEPS`
    steps; when it returns true the sweep raises :class:`Stopped`. ``executor`` (:mod:`ravine.parallel`: a
    process pool or Ray; default here) runs bands of ``y`` values as separate sweeps elsewhere: each cell
    is the same batched program's row either way, so the grid is the same (``progress`` is then called
    once, at the end).

    Returns:
        :class:`Sweep` with ``final_loss`` (NaN where diverged), ``steps_to_tol`` and ``diverged_at``.
    """
    if executor is not None and not isinstance(executor, InProcess):
        kw = dict(optimizer=optimizer, x=x, steps=steps, start=start, fixed=fixed, noise=noise, seed=seed, tol=tol,
                  batch_size=batch_size, schedule=schedule, clip=clip, dtype=dtype, device=device)
        return _sweep_bands(executor, _as_surface(surface), y, kw, progress)
    surface = _as_surface(surface)
    check("optimizer", optimizer, Options(ro.names()))
    allowed = ro.hyperparam_names(optimizer)
    x_name, x_values = _axis(x, "x", allowed)
    y_name, y_values = _axis(y, "y", allowed)
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
    steps = check("steps", steps, _STEPS)
    noise = check("noise", noise, _NONNEGATIVE)
    tol = check("tol", tol, _NONNEGATIVE)
    seed = check("seed", seed, _SEED)
    if batch_size is not None:
        batch_size = check("batch_size", batch_size, _BATCH_SIZE)
    nx, ny = x_values.size, y_values.size
    check("the number of grid cells", nx * ny, _GRID_CELLS)
    device = torch.device(device) if device is not None else torch.device("cpu")
    hyper: dict[str, Any] = dict(fixed)
    hyper[x_name] = torch.as_tensor(np.tile(x_values, ny), dtype=dtype, device=device).unsqueeze(1)
    hyper[y_name] = torch.as_tensor(np.repeat(y_values, nx), dtype=dtype, device=device).unsqueeze(1)
    if "lr" not in hyper:
        hyper["lr"] = surface.default_lr(optimizer, **fixed)
    transform = ro.get(optimizer, **hyper)
    xy0 = _starts(surface, start, nx * ny, dtype, device)
    setup = _Setup(surface, [_Batch(transform, nx * ny)], steps, _noise_std(noise, batch_size), seed, _parse_clip(clip),
                   _multiplier(schedule, steps), tol)
    out = _simulate(setup, xy0, record=False, progress=progress, should_stop=should_stop)
    fixed_used = {k: v for k, v in hyper.items() if k not in (x_name, y_name)}
    return Sweep(
        surface=surface,
        optimizer=optimizer,
        x_name=x_name,
        x_values=x_values,
        y_name=y_name,
        y_values=y_values,
        final_loss=out.final_loss.reshape(ny, nx).cpu().numpy(),
        steps_to_tol=out.steps_to_tol.reshape(ny, nx).cpu().numpy(),
        diverged_at=out.diverged_at.reshape(ny, nx).cpu().numpy(),
        steps=steps,
        tol=tol,
        tol_criterion=tol_criterion(surface),
        fixed=fixed_used,
        start=tuple(float(v) for v in xy0[0].tolist()),  # type: ignore[arg-type]
    )
