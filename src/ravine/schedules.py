"""Learning-rate schedules: pure functions of the step, and their use with torch.

A schedule is a callable ``s(step) -> float``. ``step`` counts optimizer updates from 0: ``s(0)`` is
the learning rate of the *first* update, ``s(t)`` that of update ``t + 1``. Every schedule here is a
small frozen dataclass: it holds only its parameters, is pure (the same step always gives the same
value), pickles, prints as the call that builds it, and exposes ``peak`` (its largest value),
``total_steps`` (the length of the run it describes, ``None`` when it runs forever) and ``phases``
(named step ranges, used to shade plots).

Conventions (pinned by the tests)
---------------------------------
- **The first update never has learning rate 0 by default.** A warmup of ``W`` steps occupies steps
  ``0 .. W-1`` and is linear from ``start`` at step 0 to ``peak`` at step ``W-1``, the last step of the
  warmup. The default ``start`` is ``peak / W``, which makes the ramp ``peak * (t + 1) / W``: the same
  increments as everyone else's ramp, without spending the first update at 0 (a known pain point:
  HF transformers' and optax's warmups return exactly 0 at step 0, so the first batch of every run
  moves nothing but the optimizer's moment estimates). It is also exactly the original Transformer's
  ("Noam") warmup, whose step counter starts at 1.
- **Reproducing HF transformers / optax.** Their ``num_warmup_steps = w`` counts the steps strictly
  before the peak (the peak falls on step ``w``). Here ``warmup_steps`` counts the steps up to and
  including the peak, so HF's ``get_cosine_schedule_with_warmup(w, T)`` is
  ``warmup_cosine(peak, w + 1, T, start=0.0)`` at every step, and ``get_linear_schedule_with_warmup``
  is ``wsd(peak, w + 1, 0, T - w - 1, start=0.0)``. ``start=`` sets the first update's value explicitly
  (``start=0.0`` is their convention; ``start=final`` reproduces HF's WSD with ``min_lr_ratio``).
  ``warmup_steps`` of 0 and of 1 both mean "no warmup": step 0 already has the peak.
- **Decay ends at ``final`` after the run and stays there.** A decay runs from the peak step
  ``p`` to ``(total_steps, final)``, so the last update (step ``total_steps - 1``) still has a small
  positive rate when ``final = 0`` (like HF, optax and ``CosineAnnealingLR``), and every step
  ``>= total_steps`` returns ``final``. ``one_cycle`` follows torch's ``OneCycleLR`` instead (its last
  update, step ``total_steps - 1``, already has the final value) because matching that scheduler
  exactly is its purpose.
- A negative (or non-finite) step raises ``ValueError``; every invalid parameter raises
  ``ValueError``/``TypeError`` naming the schedule, the argument, the value received and what is allowed.

Registry: :func:`names` lists the schedule names, :func:`get` builds one from keyword parameters
(what the ``ravine schedule`` command and the playground use) and :func:`parameters` describes the
parameters of a name.

With torch: :func:`to_torch` wraps a schedule (or one per parameter group) as a real
``torch.optim.lr_scheduler.LRScheduler`` that writes ``group["lr"]``; :func:`layerwise_lr_groups`
builds ELECTRA/BEiT layer-wise learning-rate-decay groups for fine-tuning and
:func:`param_groups_no_decay` excludes biases and normalization weights from weight decay.

This module imports only the standard library, numpy and torch.
"""

from __future__ import annotations

import bisect
import dataclasses
import fnmatch
import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from ravine._validation import Interval, Options, check

__all__ = [
    "DECAY_SHAPES",
    "Phase",
    "Schedule",
    "constant",
    "linear_warmup",
    "cosine_decay",
    "warmup_cosine",
    "linear_decay",
    "wsd",
    "inverse_sqrt",
    "step_decay",
    "exponential_decay",
    "one_cycle",
    "join",
    "names",
    "get",
    "parameters",
    "evaluate",
    "ScheduleLR",
    "to_torch",
    "layerwise_lr_groups",
    "param_groups_no_decay",
    "no_decay_param_names",
]

#: Shapes of the decay phase of :func:`wsd`, as functions of the decay progress u in [0, 1].
DECAY_SHAPES: tuple[str, ...] = ("linear", "cosine", "1-sqrt")
ANNEAL_STRATEGIES: tuple[str, ...] = ("cos", "linear")


class Phase(NamedTuple):
    """A named range of steps ``[start, end)`` of a schedule (e.g. ``Phase("warmup", 0, 100)``)."""

    name: str
    start: int
    end: int


# --------------------------------------------------------------------------------------------
# validation helpers


_STEP = Interval.finite(float, 0)


def _real(
    owner: str,
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float in the interval, or the error ``ravine._validation`` words."""
    interval = Interval.finite(float, low, high, low_open=low_open, high_open=high_open)
    return check(name, value, interval, where=f"{owner}: ")


def _count(owner: str, name: str, value: Any, minimum: int = 0) -> int:
    """``value`` as an int >= ``minimum`` (integral floats such as ``1e3`` are accepted)."""
    return check(name, value, Interval.finite(int, minimum), where=f"{owner}: ")


def _check_step(step: Any) -> float:
    """The step as a number >= 0; ints stay exact, finite floats are accepted (plots, sub-steps)."""
    if isinstance(step, torch.Tensor):
        if step.numel() != 1:
            raise TypeError(f"step must be a scalar, got a tensor of shape {tuple(step.shape)}")
        step = step.item()
    if isinstance(step, numbers.Integral) and not isinstance(step, bool) and step >= 0:
        return int(step)
    return check("step", step, _STEP)


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


# --------------------------------------------------------------------------------------------
# shared pieces of math


def _ramp(t: float, peak: float, warmup_steps: int, start: float | None) -> float:
    """Linear warmup: ``start`` at step 0, ``peak`` at step ``warmup_steps - 1``, ``peak`` after.

    ``start`` defaults to ``peak / warmup_steps`` so the ramp is ``peak * (t + 1) / warmup_steps``.
    """
    end = warmup_steps - 1
    if end <= 0 or t >= end:
        return peak
    s = peak / warmup_steps if start is None else start
    return s + (peak - s) * (t / end)


def _shape(u: float, shape: str) -> float:
    """Decay factor from 1 (u = 0) to 0 (u = 1)."""
    if shape == "linear":
        return 1.0 - u
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * u))
    return 1.0 - math.sqrt(u)  # "1-sqrt"


def _decay(t: float, anchor: int, end: int, peak: float, final: float, shape: str) -> float:
    """``peak`` at step ``anchor`` down to ``final`` at step ``end`` (and after), shaped by ``shape``."""
    if t <= anchor:
        return peak
    if t >= end:
        return final
    u = (t - anchor) / (end - anchor)
    return final + (peak - final) * _shape(u, shape)


def _check_start(owner: str, start: Any, peak: float) -> float | None:
    if start is None:
        return None
    return _real(owner, "start", start, 0.0, peak)


def _check_final(owner: str, final: Any, peak: float) -> float:
    return _real(owner, "final", final, 0.0, peak)


# --------------------------------------------------------------------------------------------
# the schedules


class Schedule:
    """Base class of ravine's schedules: ``__call__`` validates the step, ``_value`` does the math.

    Subclasses are frozen dataclasses (``repr=False``) that define ``name`` (their public factory
    name), ``_value(t)``, ``peak`` (the largest value), ``total_steps`` (``None`` for schedules that
    run forever) and, where meaningful, ``phases``.
    """

    name: ClassVar[str] = "schedule"
    #: allowed values of string parameters (for the CLI and the playground)
    choices: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __call__(self, step: int) -> float:
        return float(self._value(_check_step(step)))

    def _value(self, t: float) -> float:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    @property
    def phases(self) -> tuple[Phase, ...]:
        """Named step ranges ``[start, end)`` (empty when the schedule has none)."""
        return ()

    def __repr__(self) -> str:
        args = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
        return f"{self.name}({args})"


def _phases(*items: tuple[str, int, int]) -> tuple[Phase, ...]:
    return tuple(Phase(n, a, b) for n, a, b in items if b > a)


@dataclasses.dataclass(frozen=True, repr=False)
class Constant(Schedule):
    """``s(t) = value`` for every step.

    Args:
        value: the learning rate, ``>= 0``.
    """

    value: float
    name: ClassVar[str] = "constant"

    @property
    def total_steps(self) -> None:
        """``None``: this schedule has no end."""
        return None

    def __post_init__(self) -> None:
        _set(self, "value", _real(self.name, "value", self.value, 0.0))

    @property
    def peak(self) -> float:  # type: ignore[override]
        return self.value

    def _value(self, t: float) -> float:
        return self.value


@dataclasses.dataclass(frozen=True, repr=False)
class LinearWarmup(Schedule):
    """Linear warmup to ``peak``, then constant.

    ``s(t) = start + (peak - start) * t / (W - 1)`` for ``t < W - 1`` and ``peak`` from step ``W - 1``
    on, with ``W = warmup_steps`` and ``start = peak / W`` by default (so ``s(t) = peak * (t+1) / W``).
    HF's ``get_constant_schedule_with_warmup(w)`` is ``linear_warmup(peak, w + 1, start=0.0)``; torch's
    ``LinearLR(start_factor=f, total_iters=n)`` is ``linear_warmup(peak, n + 1, start=f * peak)``.

    Args:
        peak: the learning rate after warmup, ``>= 0``.
        warmup_steps: steps of the warmup, the peak included, ``>= 0`` (0 and 1: no warmup).
        start: the value at step 0, in ``[0, peak]``; default ``peak / warmup_steps``.
    """

    peak: float
    warmup_steps: int
    start: float | None = None
    name: ClassVar[str] = "linear_warmup"

    @property
    def total_steps(self) -> None:
        """``None``: this schedule has no end."""
        return None

    def __post_init__(self) -> None:
        n = self.name
        _set(self, "peak", _real(n, "peak", self.peak, 0.0))
        _set(self, "warmup_steps", _count(n, "warmup_steps", self.warmup_steps))
        _set(self, "start", _check_start(n, self.start, self.peak))

    @property
    def phases(self) -> tuple[Phase, ...]:
        return _phases(("warmup", 0, self.warmup_steps))

    def _value(self, t: float) -> float:
        return _ramp(t, self.peak, self.warmup_steps, self.start)


@dataclasses.dataclass(frozen=True, repr=False)
class _Decay(Schedule):
    """A decay from ``peak`` at step 0 to ``final`` at ``total_steps`` (and after); ``shape`` picks the curve."""

    peak: float
    total_steps: int
    final: float = 0.0
    shape: ClassVar[str] = "linear"

    def __post_init__(self) -> None:
        n = self.name
        _set(self, "peak", _real(n, "peak", self.peak, 0.0))
        _set(self, "total_steps", _count(n, "total_steps", self.total_steps, 1))
        _set(self, "final", _check_final(n, self.final, self.peak))

    @property
    def phases(self) -> tuple[Phase, ...]:
        return _phases(("decay", 0, self.total_steps))

    def _value(self, t: float) -> float:
        return _decay(t, 0, self.total_steps, self.peak, self.final, self.shape)


@dataclasses.dataclass(frozen=True, repr=False)
class CosineDecay(_Decay):
    """Cosine decay from ``peak`` at step 0 to ``final`` at step ``total_steps`` (and after).

    ``s(t) = final + (peak - final) * (1 + cos(pi * min(t, T) / T)) / 2`` with ``T = total_steps``:
    torch's ``CosineAnnealingLR(T_max=T, eta_min=final)`` over its first period, and optax's
    ``cosine_decay_schedule(peak, T, alpha=final / peak)``. Unlike ``CosineAnnealingLR``, it does not
    rise again after ``T`` (use :func:`join` for restarts).

    Args:
        peak: value at step 0, ``>= 0``.
        total_steps: steps of the decay, ``>= 1``.
        final: value from step ``total_steps`` on, in ``[0, peak]`` (default 0).
    """

    name: ClassVar[str] = "cosine_decay"
    shape: ClassVar[str] = "cosine"


@dataclasses.dataclass(frozen=True, repr=False)
class LinearDecay(_Decay):
    """Linear decay from ``peak`` at step 0 to ``final`` at step ``total_steps`` (and after).

    ``s(t) = peak + (final - peak) * min(t, T) / T``: torch's
    ``LinearLR(start_factor=1, end_factor=final / peak, total_iters=T)``.

    Args:
        peak: value at step 0, ``>= 0``.
        total_steps: steps of the decay, ``>= 1``.
        final: value from step ``total_steps`` on, in ``[0, peak]`` (default 0).
    """

    name: ClassVar[str] = "linear_decay"
    shape: ClassVar[str] = "linear"


@dataclasses.dataclass(frozen=True, repr=False)
class WarmupCosine(Schedule):
    """Linear warmup, then cosine decay to ``final`` at ``total_steps``.

    With ``W = warmup_steps``, ``T = total_steps`` and the peak step ``p = max(W - 1, 0)``:

    - ``t < p``: the warmup ramp ``start + (peak - start) * t / p`` (``start = peak / W`` by default);
    - ``p <= t < T``: ``final + (peak - final) * (1 + cos(pi * (t - p) / (T - p))) / 2``;
    - ``t >= T``: ``final``.

    HF's ``get_cosine_schedule_with_warmup(opt, w, T)`` (``num_cycles=0.5``) with ``lr = peak`` is
    ``warmup_cosine(peak, w + 1, T, start=0.0)``; with ``min_lr_rate = m`` it is
    ``warmup_cosine(peak, w + 1, T, final=m * peak, start=0.0)``. optax's
    ``warmup_cosine_decay_schedule(0, peak, w, T, end_value)`` is the same schedule.
    ``warmup_cosine(peak, W, T, final)`` equals ``wsd(peak, W, 0, T - W, final, "cosine")``.

    Args:
        peak: the largest value, reached at step ``W - 1``, ``>= 0``.
        warmup_steps: steps of the warmup, the peak included, in ``[0, total_steps]``.
        total_steps: length of the run, ``>= 1``; the value is ``final`` from this step on.
        final: the value after the decay, in ``[0, peak]`` (default 0).
        start: the value at step 0, in ``[0, peak]``; default ``peak / warmup_steps``.
    """

    peak: float
    warmup_steps: int
    total_steps: int
    final: float = 0.0
    start: float | None = None
    name: ClassVar[str] = "warmup_cosine"

    def __post_init__(self) -> None:
        n = self.name
        _set(self, "peak", _real(n, "peak", self.peak, 0.0))
        _set(self, "total_steps", _count(n, "total_steps", self.total_steps, 1))
        w = _count(n, "warmup_steps", self.warmup_steps)
        if w > self.total_steps:
            raise ValueError(
                f"{n}: warmup_steps must be in [0, total_steps={self.total_steps}] (the warmup is part of "
                f"the run), got {self.warmup_steps!r}"
            )
        _set(self, "warmup_steps", w)
        _set(self, "final", _check_final(n, self.final, self.peak))
        _set(self, "start", _check_start(n, self.start, self.peak))

    @property
    def phases(self) -> tuple[Phase, ...]:
        return _phases(("warmup", 0, self.warmup_steps), ("decay", self.warmup_steps, self.total_steps))

    def _value(self, t: float) -> float:
        p = max(self.warmup_steps - 1, 0)
        if t < p:
            return _ramp(t, self.peak, self.warmup_steps, self.start)
        return _decay(t, p, self.total_steps, self.peak, self.final, "cosine")


@dataclasses.dataclass(frozen=True, repr=False)
class WSD(Schedule):
    """Warmup-stable-decay ("trapezoidal"): the three phases of training.

    With ``W, S, D`` the three step counts, ``N = W + S + D`` and the last peak step
    ``p = max(W + S - 1, 0)``:

    - ``t < W - 1``: the linear warmup ramp (``start = peak / W`` by default);
    - ``W - 1 <= t <= p``: ``peak`` (the end of warmup and the ``S`` stable steps);
    - ``p < t < N``: ``final + (peak - final) * f((t - p) / (N - p))`` with
      ``f(u) = 1 - u`` (``"linear"``), ``(1 + cos(pi u)) / 2`` (``"cosine"``) or ``1 - sqrt(u)``
      (``"1-sqrt"``, Hägele et al. 2024); the ``D`` decay steps are all below the peak;
    - ``t >= N``: ``final``.

    HF's ``get_wsd_schedule(opt, w, d, num_stable_steps=s, decay_type=shape, min_lr_ratio=m)`` with
    ``lr = peak`` is ``wsd(peak, w + 1, s, d - 1, final=m * peak, decay_shape=shape, start=m * peak)``
    (HF counts the first decay step, which still has the peak, as a decay step).

    Args:
        peak: the plateau value, ``>= 0``.
        warmup_steps: steps of the warmup, the peak included, ``>= 0``.
        stable_steps: steps at the peak after the warmup, ``>= 0``.
        decay_steps: steps of the decay, ``>= 0``.
        final: the value after the decay, in ``[0, peak]`` (default 0).
        decay_shape: one of ``DECAY_SHAPES`` (default ``"linear"``).
        start: the value at step 0, in ``[0, peak]``; default ``peak / warmup_steps``.
    """

    peak: float
    warmup_steps: int
    stable_steps: int
    decay_steps: int
    final: float = 0.0
    decay_shape: str = "linear"
    start: float | None = None
    name: ClassVar[str] = "wsd"
    choices: ClassVar[dict[str, tuple[str, ...]]] = {"decay_shape": DECAY_SHAPES}

    def __post_init__(self) -> None:
        n = self.name
        _set(self, "peak", _real(n, "peak", self.peak, 0.0))
        for k in ("warmup_steps", "stable_steps", "decay_steps"):
            _set(self, k, _count(n, k, getattr(self, k)))
        if self.warmup_steps + self.stable_steps + self.decay_steps < 1:
            raise ValueError(f"{n}: warmup_steps + stable_steps + decay_steps must be >= 1, got 0")
        _set(self, "final", _check_final(n, self.final, self.peak))
        check("decay_shape", self.decay_shape, Options(DECAY_SHAPES), where=f"{n}: ")
        _set(self, "start", _check_start(n, self.start, self.peak))

    @property
    def total_steps(self) -> int:  # type: ignore[override]
        return self.warmup_steps + self.stable_steps + self.decay_steps

    @property
    def phases(self) -> tuple[Phase, ...]:
        w, s = self.warmup_steps, self.warmup_steps + self.stable_steps
        return _phases(("warmup", 0, w), ("stable", w, s), ("decay", s, self.total_steps))

    def _value(self, t: float) -> float:
        if t < self.warmup_steps - 1:
            return _ramp(t, self.peak, self.warmup_steps, self.start)
        p = max(self.warmup_steps + self.stable_steps - 1, 0)
        return _decay(t, p, self.total_steps, self.peak, self.final, self.decay_shape)


@dataclasses.dataclass(frozen=True, repr=False)
class InverseSqrt(Schedule):
    """Linear warmup, then decay proportional to the inverse square root of the step.

    With ``W = warmup_steps``, ``p = max(W - 1, 0)`` and ``tau = timescale`` (default ``max(W, 1)``):
    the warmup ramp for ``t < p``, then ``s(t) = peak * sqrt(tau / (t - p + tau))``.

    With the defaults this is exactly the original Transformer schedule (Vaswani et al. 2017,
    "Noam"), ``d_model**-0.5 * min(n**-0.5, n * W**-1.5)`` at ``n = t + 1`` (their step counter starts
    at 1), for ``peak = (d_model * W)**-0.5``. HF's ``get_inverse_sqrt_schedule(opt, w, timescale)``
    is ``inverse_sqrt(peak, w + 1, timescale=timescale, start=0.0)`` (HF's default timescale is
    ``w``, ours is ``W``: pass it explicitly to reproduce HF).

    Args:
        peak: the value at the end of warmup, ``>= 0``.
        warmup_steps: steps of the warmup, the peak included, ``>= 0``.
        timescale: ``tau > 0``: after ``tau`` more steps the rate is ``peak / sqrt(2)``.
        start: the value at step 0, in ``[0, peak]``; default ``peak / warmup_steps``.
    """

    peak: float
    warmup_steps: int
    timescale: float | None = None
    start: float | None = None
    name: ClassVar[str] = "inverse_sqrt"

    @property
    def total_steps(self) -> None:
        """``None``: this schedule has no end."""
        return None

    def __post_init__(self) -> None:
        n = self.name
        _set(self, "peak", _real(n, "peak", self.peak, 0.0))
        _set(self, "warmup_steps", _count(n, "warmup_steps", self.warmup_steps))
        if self.timescale is not None:
            _set(self, "timescale", _real(n, "timescale", self.timescale, 0.0, low_open=True))
        _set(self, "start", _check_start(n, self.start, self.peak))

    @property
    def phases(self) -> tuple[Phase, ...]:
        return _phases(("warmup", 0, self.warmup_steps))

    def _value(self, t: float) -> float:
        p = max(self.warmup_steps - 1, 0)
        if t < p:
            return _ramp(t, self.peak, self.warmup_steps, self.start)
        tau = self.timescale if self.timescale is not None else float(max(self.warmup_steps, 1))
        return self.peak * math.sqrt(tau / (t - p + tau))


@dataclasses.dataclass(frozen=True, repr=False)
class StepDecay(Schedule):
    """Piecewise constant: multiply by ``gamma`` every ``step_size`` steps, or at each milestone.

    ``s(t) = peak * gamma ** floor(t / step_size)`` (torch's ``StepLR``), or with ``milestones``
    ``s(t) = peak * gamma ** #{m in milestones : m <= t}`` (torch's ``MultiStepLR``). Give exactly one
    of ``step_size`` and ``milestones``.

    Args:
        peak: value at step 0, ``>= 0``.
        step_size: steps between two decays, ``>= 1``.
        gamma: the factor, in ``(0, 1]`` (default 0.1).
        milestones: strictly increasing steps ``>= 1`` at which the rate is multiplied by ``gamma``.
    """

    peak: float
    step_size: int | None = None
    gamma: float = 0.1
    milestones: tuple[int, ...] | None = None
    name: ClassVar[str] = "step_decay"

    @property
    def total_steps(self) -> None:
        """``None``: this schedule has no end."""
        return None

    def __post_init__(self) -> None:
        n = self.name
        _set(self, "peak", _real(n, "peak", self.peak, 0.0))
        _set(self, "gamma", _real(n, "gamma", self.gamma, 0.0, 1.0, low_open=True))
        if (self.step_size is None) == (self.milestones is None):
            raise ValueError(
                f"{n}: give exactly one of step_size and milestones, got step_size={self.step_size!r}, "
                f"milestones={self.milestones!r}"
            )
        if self.step_size is not None:
            _set(self, "step_size", _count(n, "step_size", self.step_size, 1))
        else:
            if isinstance(self.milestones, (str, bytes)) or not isinstance(self.milestones, Iterable):
                raise TypeError(f"{n}: milestones must be a sequence of integers, got {self.milestones!r}")
            ms = tuple(_count(n, "milestones[]", m, 1) for m in self.milestones)
            if not ms or any(b <= a for a, b in zip(ms, ms[1:], strict=False)):
                raise ValueError(
                    f"{n}: milestones must be a non-empty, strictly increasing sequence of integers >= 1, "
                    f"got {self.milestones!r}"
                )
            _set(self, "milestones", ms)

    def _value(self, t: float) -> float:
        if self.step_size is not None:
            k = math.floor(t / self.step_size)
        else:
            k = bisect.bisect_right(self.milestones, t)  # type: ignore[arg-type]
        return self.peak * self.gamma**k


@dataclasses.dataclass(frozen=True, repr=False)
class ExponentialDecay(Schedule):
    """``s(t) = max(final, peak * gamma ** (t / transition_steps))``.

    With ``transition_steps = 1`` this is torch's ``ExponentialLR(gamma)``; otherwise optax's
    ``exponential_decay(peak, transition_steps, gamma, end_value=final)`` (continuous, not staircase:
    use :func:`step_decay` for a staircase).

    Args:
        peak: value at step 0, ``>= 0``.
        gamma: factor per ``transition_steps`` steps, in ``(0, 1]``.
        transition_steps: steps over which the rate is multiplied by ``gamma``, ``>= 1`` (default 1).
        final: a floor, in ``[0, peak]`` (default 0).
    """

    peak: float
    gamma: float
    transition_steps: int = 1
    final: float = 0.0
    name: ClassVar[str] = "exponential_decay"

    @property
    def total_steps(self) -> None:
        """``None``: this schedule has no end."""
        return None

    def __post_init__(self) -> None:
        n = self.name
        _set(self, "peak", _real(n, "peak", self.peak, 0.0))
        _set(self, "gamma", _real(n, "gamma", self.gamma, 0.0, 1.0, low_open=True))
        _set(self, "transition_steps", _count(n, "transition_steps", self.transition_steps, 1))
        _set(self, "final", _check_final(n, self.final, self.peak))

    def _value(self, t: float) -> float:
        return max(self.final, self.peak * self.gamma ** (t / self.transition_steps))


@dataclasses.dataclass(frozen=True, repr=False)
class OneCycle(Schedule):
    """The 1cycle policy (Smith & Topin 2018), exactly torch's ``OneCycleLR`` formula.

    ``initial = peak / div_factor``, ``min = initial / final_div_factor``, ``T = total_steps``.
    Phases end (inclusive, possibly fractional) at ``e1 = pct_start * T - 1`` (``initial -> peak``) and
    ``T - 1`` (``peak -> min``); with ``three_phase`` at ``e1``, ``e2 = 2 * pct_start * T - 2``
    (``peak -> initial``) and ``T - 1`` (``initial -> min``). Inside a phase from ``a`` to ``b`` with
    values ``x -> y``, ``pct = (t - a) / (b - a)`` and the value is
    ``y + (x - y) * (1 + cos(pi * pct)) / 2`` (``anneal="cos"``) or ``x + (y - x) * pct``
    (``"linear"``). Differences from torch: steps after ``T - 1`` return ``min`` (torch raises after
    ``T``), and momentum cycling is not part of a learning-rate schedule.

    Args:
        peak: ``max_lr``, ``>= 0``.
        total_steps: length of the cycle, ``>= 2``; step ``T - 1`` has the minimum.
        pct_start: fraction of the steps spent increasing, in ``(0, 1)`` with ``pct_start * T > 1``
            (and ``< (T + 1) / (2T)`` with ``three_phase``), default 0.3.
        anneal: ``"cos"`` (default) or ``"linear"``.
        div_factor: ``initial = peak / div_factor``, ``>= 1`` (default 25), so that ``peak`` is the largest
            value (torch's ``OneCycleLR`` also takes values in ``(0, 1)``, which start above ``max_lr``).
        final_div_factor: ``min = initial / final_div_factor``, ``>= 1`` (default 1e4): the last phase
            anneals downwards.
        three_phase: come back down to ``initial`` before annealing to ``min`` (default False).
    """

    peak: float
    total_steps: int
    pct_start: float = 0.3
    anneal: str = "cos"
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    three_phase: bool = False
    name: ClassVar[str] = "one_cycle"
    choices: ClassVar[dict[str, tuple[str, ...]]] = {"anneal": ANNEAL_STRATEGIES}

    def __post_init__(self) -> None:
        n = self.name
        _set(self, "peak", _real(n, "peak", self.peak, 0.0))
        T = _count(n, "total_steps", self.total_steps, 2)
        _set(self, "total_steps", T)
        pct = _real(n, "pct_start", self.pct_start, 0.0, 1.0, low_open=True, high_open=True)
        _set(self, "pct_start", pct)
        check("anneal", self.anneal, Options(ANNEAL_STRATEGIES), where=f"{n}: ")
        _set(self, "div_factor", _real(n, "div_factor", self.div_factor, 0.0, low_open=True))
        _set(self, "final_div_factor", _real(n, "final_div_factor", self.final_div_factor, 0.0, low_open=True))
        # factors below 1 would start above the peak or anneal upwards: ``peak`` must stay the largest value
        # (torch accepts them; nothing the 1cycle policy means needs them)
        _real(n, "div_factor", self.div_factor, 1.0)
        _real(n, "final_div_factor", self.final_div_factor, 1.0)
        if not isinstance(self.three_phase, bool):
            raise TypeError(f"{n}: three_phase must be True or False, got {self.three_phase!r}")
        if pct * T <= 1:
            raise ValueError(
                f"{n}: pct_start * total_steps must be > 1 (the rising phase needs a step after step 0), "
                f"got pct_start={self.pct_start!r} with total_steps={T}"
            )
        if self.three_phase and not pct < (T + 1) / (2 * T):
            raise ValueError(
                f"{n}: with three_phase=True, pct_start must be < (total_steps + 1) / (2 * total_steps) = "
                f"{(T + 1) / (2 * T):g} so that the last phase is not empty, got {self.pct_start!r}"
            )

    @property
    def _segments(self) -> list[tuple[str, float, float, float]]:
        """(phase name, end step, start value, end value) as torch builds ``_schedule_phases``."""
        T, pct = self.total_steps, self.pct_start
        initial = self.peak / self.div_factor
        low = initial / self.final_div_factor
        if self.three_phase:
            return [
                ("warmup", pct * T - 1, initial, self.peak),
                ("cooldown", 2 * pct * T - 2, self.peak, initial),
                ("anneal", T - 1, initial, low),
            ]
        return [("warmup", pct * T - 1, initial, self.peak), ("anneal", T - 1, self.peak, low)]

    @property
    def phases(self) -> tuple[Phase, ...]:
        out, a = [], 0
        for name, end, _, _ in self._segments:
            b = min(math.floor(end) + 1, self.total_steps)
            out.append((name, a, b))
            a = b
        return _phases(*out)

    def _value(self, t: float) -> float:
        segs = self._segments
        if t >= self.total_steps - 1:
            return segs[-1][3]
        start = 0.0
        for i, (_, end, x, y) in enumerate(segs):
            if t <= end or i == len(segs) - 1:
                pct = (t - start) / (end - start)
                if self.anneal == "cos":
                    return y + (x - y) / 2.0 * (math.cos(math.pi * pct) + 1)
                return (y - x) * pct + x
            start = end
        raise AssertionError("unreachable")  # pragma: no cover


@dataclasses.dataclass(frozen=True, repr=False)
class Join(Schedule):
    """Schedules one after the other (optax's ``join_schedules``).

    With boundaries ``b_1 < ... < b_{k-1}``: ``s(t) = schedules[0](t)`` for ``t < b_1`` and
    ``s(t) = schedules[i](t - b_i)`` for ``b_i <= t < b_{i+1}``: each later schedule sees its own step
    counter, starting at 0 at its boundary.

    Args:
        schedules: ``k >= 1`` callables ``step -> float``.
        boundaries: ``k - 1`` strictly increasing integers ``>= 1``.
    """

    schedules: tuple[Callable[[int], float], ...]
    boundaries: tuple[int, ...]
    name: ClassVar[str] = "join"

    def __post_init__(self) -> None:
        n = self.name
        if isinstance(self.schedules, (str, bytes)) or not isinstance(self.schedules, Iterable):
            raise TypeError(f"{n}: schedules must be a sequence of callables, got {self.schedules!r}")
        scheds = tuple(self.schedules)
        if not scheds:
            raise ValueError(f"{n}: schedules must contain at least one schedule, got an empty sequence")
        for i, s in enumerate(scheds):
            if not callable(s):
                raise TypeError(f"{n}: schedules[{i}] must be a callable step -> float, got {s!r}")
        if isinstance(self.boundaries, (str, bytes)) or not isinstance(self.boundaries, Iterable):
            raise TypeError(f"{n}: boundaries must be a sequence of integers, got {self.boundaries!r}")
        bs = tuple(_count(n, "boundaries[]", b, 1) for b in self.boundaries)
        if len(bs) != len(scheds) - 1:
            raise ValueError(
                f"{n}: boundaries must have len(schedules) - 1 = {len(scheds) - 1} entries, "
                f"got {len(bs)}: {self.boundaries!r}"
            )
        if any(b <= a for a, b in zip(bs, bs[1:], strict=False)):
            raise ValueError(f"{n}: boundaries must be strictly increasing, got {self.boundaries!r}")
        _set(self, "schedules", scheds)
        _set(self, "boundaries", bs)

    @property
    def peak(self) -> float | None:  # type: ignore[override]
        peaks = [getattr(s, "peak", None) for s in self.schedules]
        return None if any(p is None for p in peaks) else max(peaks)

    @property
    def total_steps(self) -> int | None:  # type: ignore[override]
        last = getattr(self.schedules[-1], "total_steps", None)
        if last is None:
            return None
        return (self.boundaries[-1] if self.boundaries else 0) + last

    @property
    def phases(self) -> tuple[Phase, ...]:
        out = []
        starts = (0, *self.boundaries)
        ends = (*self.boundaries, None)
        for s, a, b in zip(self.schedules, starts, ends, strict=True):
            for ph in getattr(s, "phases", ()):
                lo = ph.start + a
                hi = ph.end + a if b is None else min(ph.end + a, b)
                out.append((ph.name, lo, hi))
        return _phases(*out)

    def _value(self, t: float) -> float:
        i = bisect.bisect_right(self.boundaries, t)
        offset = self.boundaries[i - 1] if i > 0 else 0
        return float(self.schedules[i](t - offset))


# Public factory names: the classes themselves (their repr reads like the call that built them).
constant = Constant
linear_warmup = LinearWarmup
cosine_decay = CosineDecay
warmup_cosine = WarmupCosine
linear_decay = LinearDecay
wsd = WSD
inverse_sqrt = InverseSqrt
step_decay = StepDecay
exponential_decay = ExponentialDecay
one_cycle = OneCycle


def join(schedules: Sequence[Callable[[int], float]], boundaries: Sequence[int]) -> Join:
    """Concatenate ``schedules`` at ``boundaries`` (optax's ``join_schedules``); see :class:`Join`."""
    return Join(tuple(schedules), tuple(boundaries))


# --------------------------------------------------------------------------------------------
# registry

_REGISTRY: dict[str, type[Schedule]] = {
    cls.name: cls
    for cls in (
        Constant,
        LinearWarmup,
        CosineDecay,
        WarmupCosine,
        LinearDecay,
        WSD,
        InverseSqrt,
        StepDecay,
        ExponentialDecay,
        OneCycle,
    )
}


class Parameter(NamedTuple):
    """One parameter of a named schedule: ``kind`` is ``"float"``, ``"int"``, ``"str"``, ``"bool"``
    or ``"ints"`` (a sequence of integers); ``default`` is ``None`` when ``required``."""

    name: str
    kind: str
    required: bool
    default: Any
    optional: bool  # None is an allowed value
    choices: tuple[str, ...] | None


def names() -> list[str]:
    """The names :func:`get` accepts, in a fixed order."""
    return list(_REGISTRY)


def _lookup(name: str) -> type[Schedule]:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown schedule {name!r}; valid names: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def _kind(annotation: str) -> str:
    a = annotation.replace(" ", "")
    if a.startswith("tuple"):
        return "ints"
    return a.split("|")[0]


def parameters(name: str) -> list[Parameter]:
    """The parameters of schedule ``name``, in signature order (for command lines and forms)."""
    cls = _lookup(name)
    out = []
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING
        out.append(
            Parameter(
                name=f.name,
                kind=_kind(str(f.type)),
                required=required,
                default=None if required else f.default,
                optional="None" in str(f.type),
                choices=cls.choices.get(f.name),
            )
        )
    return out


def get(name: str, **params: Any) -> Schedule:
    """Build the schedule called ``name`` (one of :func:`names`) from keyword ``params``.

    Unknown names raise ``ValueError`` listing the valid ones; unknown or missing parameters raise
    ``TypeError`` listing the schedule's parameters.
    """
    cls = _lookup(name)
    spec = parameters(name)
    known = [p.name for p in spec]
    extra = [k for k in params if k not in known]
    if extra:
        raise TypeError(f"{name}: unexpected parameter(s) {', '.join(extra)}; its parameters are {', '.join(known)}")
    missing = [p.name for p in spec if p.required and p.name not in params]
    if missing:
        raise TypeError(f"{name}: missing required parameter(s) {', '.join(missing)}")
    return cls(**params)


def evaluate(schedule: Callable[[int], float], steps: int | Iterable[int]) -> np.ndarray:
    """``schedule`` at steps ``0 .. steps - 1`` (or at the given steps) as a float64 array."""
    if isinstance(steps, numbers.Integral) and not isinstance(steps, bool):
        n = _count("evaluate", "steps", steps)
        steps = range(n)
    return np.array([float(schedule(int(t))) for t in steps], dtype=np.float64)


# --------------------------------------------------------------------------------------------
# torch


class ScheduleLR(LRScheduler):
    """A torch ``LRScheduler`` driven by ravine schedules (built by :func:`to_torch`).

    After construction and after each ``scheduler.step()``, ``group["lr"]`` holds the value for the
    next optimizer update: ``schedule(last_epoch)``, with ``last_epoch = 0`` before the first update.
    So the usual loop ``optimizer.step(); scheduler.step()`` uses ``schedule(0), schedule(1), ...``.

    ``relative=False`` (default): the schedule's values are absolute learning rates, written to every
    group (the groups' own ``lr`` is replaced). ``relative=True``: the schedule is a *shape*; group
    ``i`` gets ``schedule(t) * initial_lr_i / schedule.peak``, so each group peaks at the ``lr`` it was
    created with (layer-wise learning rates, a smaller rate for the head...). With
    ``schedule.peak == 1`` this is torch's ``LambdaLR``.

    ``state_dict()`` holds only numbers and strings (loadable with ``torch.load(weights_only=True)``):
    the step counter, base rates and the schedules' reprs. ``load_state_dict`` restores the step,
    keeps the schedules given to the constructor (schedules are code, not state; it warns if they
    differ from the saved ones) and, because the schedule is a closed form, writes
    ``group["lr"] = schedule(step)`` at once: resuming works whether the optimizer's state was loaded
    before or after the scheduler was built (torch's own schedulers need the latter order).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: Callable[[int], float] | Sequence[Callable[[int], float]],
        *,
        relative: bool = False,
        last_epoch: int = -1,
    ) -> None:
        n_groups = len(optimizer.param_groups)
        if callable(schedule):
            scheds = [schedule] * n_groups
        elif isinstance(schedule, Sequence) and not isinstance(schedule, (str, bytes)):
            scheds = list(schedule)
            if len(scheds) != n_groups:
                raise ValueError(
                    f"to_torch: schedule must be one callable or one per param group ({n_groups}), got {len(scheds)}"
                )
        else:
            raise TypeError(f"to_torch: schedule must be a callable step -> float, got {schedule!r}")
        for i, s in enumerate(scheds):
            if not callable(s):
                raise TypeError(f"to_torch: schedule[{i}] must be a callable step -> float, got {s!r}")
        if not isinstance(relative, bool):
            raise TypeError(f"to_torch: relative must be True or False, got {relative!r}")
        if relative:
            for i, s in enumerate(scheds):
                peak = getattr(s, "peak", None)
                if peak is None or not peak > 0:
                    raise ValueError(
                        f"to_torch: relative=True needs schedules with a peak > 0 (schedule for group {i} "
                        f"has peak={peak!r})"
                    )
        self.schedules = scheds
        self.relative = relative
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        """Each group's learning rate at ``last_epoch``: ``s(t)``, or ``s(t) * base_lr / s.peak`` when ``relative``."""
        t = self.last_epoch
        if self.relative:
            return [
                float(s(t)) * float(base) / float(s.peak)  # type: ignore[attr-defined]
                for s, base in zip(self.schedules, self.base_lrs, strict=True)
            ]
        return [float(s(t)) for s in self.schedules]

    _get_closed_form_lr = get_lr

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state (the schedules saved by ``repr``, so a resumed run can warn on a change)."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "schedules")}
        state["schedules"] = [repr(s) for s in self.schedules]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the step count and write this scheduler's learning rates into the optimizer's
        groups; warns when the saved schedules differ from these."""
        state = dict(state_dict)
        saved = state.pop("schedules", None)
        mine = [repr(s) for s in self.schedules]
        if saved is not None and list(saved) != mine:
            warnings.warn(
                f"ScheduleLR.load_state_dict: the checkpoint was saved with schedules {saved}, this "
                f"scheduler uses {mine}; continuing at step {state.get('last_epoch')} with this one",
                UserWarning,
                stacklevel=2,
            )
        self.__dict__.update(state)
        with torch.no_grad():
            for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
                if isinstance(group["lr"], torch.Tensor):
                    group["lr"].fill_(lr)
                else:
                    group["lr"] = lr
        self._last_lr = [
            g["lr"].clone() if isinstance(g["lr"], torch.Tensor) else g["lr"] for g in self.optimizer.param_groups
        ]


def to_torch(
    optimizer: torch.optim.Optimizer,
    schedule: Callable[[int], float] | Sequence[Callable[[int], float]],
    *,
    relative: bool = False,
    last_epoch: int = -1,
) -> ScheduleLR:
    """A torch ``LRScheduler`` that sets ``group["lr"] = schedule(step)``; see :class:`ScheduleLR`.

    Example::

        opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
        sched = to_torch(opt, warmup_cosine(3e-4, 100, 10_000))
        for batch in data:
            loss(batch).backward(); opt.step(); opt.zero_grad(); sched.step()

    ``schedule`` is one callable for every group or a sequence with one per group. Use this when the
    learning rate is owned by torch's ``group["lr"]`` (any torch optimizer, or ``ravine.optim``'s
    torch adapter with a float lr). Do not also give the same schedule to a ravine transform: the
    rate would be applied twice.
    """
    return ScheduleLR(optimizer, schedule, relative=relative, last_epoch=last_epoch)


# --------------------------------------------------------------------------------------------
# parameter groups


def _is_norm(module: nn.Module) -> bool:
    from torch.nn.modules.batchnorm import _NormBase

    norm_types: tuple[type, ...] = (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, _NormBase)
    if hasattr(nn, "RMSNorm"):
        norm_types += (nn.RMSNorm,)
    return isinstance(module, norm_types) or "Norm" in type(module).__name__


def _matches(name: str, patterns: Iterable[str]) -> bool:
    for pat in patterns:
        if any(ch in pat for ch in "*?["):
            if fnmatch.fnmatchcase(name, pat):
                return True
        elif name == pat or name.endswith("." + pat):
            return True
    return False


def _check_model(owner: str, model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{owner}: model must be a torch.nn.Module, got {type(model).__name__}")


def _check_patterns(owner: str, no_decay_names: Any) -> tuple[str, ...]:
    if isinstance(no_decay_names, str) or not isinstance(no_decay_names, Iterable):
        raise TypeError(f"{owner}: no_decay_names must be a sequence of strings, got {no_decay_names!r}")
    pats = tuple(no_decay_names)
    for p in pats:
        if not isinstance(p, str):
            raise TypeError(f"{owner}: no_decay_names must contain strings, got {p!r}")
    return pats


def no_decay_param_names(model: nn.Module, no_decay_names: Iterable[str] = ()) -> set[str]:
    """Names of the parameters that should not get weight decay (common practice, documented here).

    A parameter is excluded from weight decay when any of these holds:

    - its name ends with ``bias``;
    - it belongs to a normalization layer: ``LayerNorm``, ``GroupNorm``, ``RMSNorm``, every
      ``BatchNorm``/``InstanceNorm``, or any module whose class name contains ``Norm`` (custom
      LayerNorm/RMSNorm classes);
    - it has fewer than 2 dimensions (scales, gains, scalars: timm's and nanoGPT's rule);
    - its name matches one of ``no_decay_names`` (``fnmatch`` patterns such as ``"*pos_embed"``; a
      pattern without wildcards matches the full name or its last dotted components), or is listed by
      the model's ``no_weight_decay()`` method (timm's convention, e.g. ``{"pos_embed", "cls_token"}``).

    Embedding matrices keep weight decay (as in HF transformers, timm and nanoGPT); add their names to
    ``no_decay_names`` to exclude them.
    """
    _check_model("no_decay_param_names", model)
    patterns = list(_check_patterns("no_decay_param_names", no_decay_names))
    hook = getattr(model, "no_weight_decay", None)
    if callable(hook):
        patterns.extend(str(n) for n in hook())
    out: set[str] = set()
    for mod_name, module in model.named_modules():
        norm = _is_norm(module)
        for p_name, p in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if norm or p_name.endswith("bias") or p.ndim < 2 or _matches(full, patterns):
                out.add(full)
    return out


def param_groups_no_decay(
    model: nn.Module,
    weight_decay: float,
    lr: float | None = None,
    no_decay_names: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Two torch param groups: decayed weights, and biases/norm weights with ``weight_decay=0``.

    Returns ``[{"params", "param_names", "weight_decay": weight_decay}, {..., "weight_decay": 0.0}]``
    (``"lr"`` added to both when ``lr`` is given; an empty group is left out). The rule that selects
    the no-decay parameters is :func:`no_decay_param_names`. Parameters with ``requires_grad=False``
    are left out (frozen); tied parameters appear once. ``"param_names"`` is the key torch's
    optimizers use for named parameters.
    """
    _check_model("param_groups_no_decay", model)
    wd = _real("param_groups_no_decay", "weight_decay", weight_decay, 0.0)
    if lr is not None:
        lr = _real("param_groups_no_decay", "lr", lr, 0.0)
    skip = no_decay_param_names(model, no_decay_names)
    groups = []
    for decay in (True, False):
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and (n not in skip) == decay]
        if not named:
            continue
        g: dict[str, Any] = {
            "params": [p for _, p in named],
            "param_names": [n for n, _ in named],
            "weight_decay": wd if decay else 0.0,
        }
        if lr is not None:
            g["lr"] = lr
        groups.append(g)
    return groups


def _param_children(module: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in module.named_children() if any(True for _ in m.parameters())]


def _find_layers(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The container of repeated blocks: among the ``ModuleList``/``Sequential`` modules whose 2+
    parameter-owning children are all of one class, the one holding the most parameter elements
    (then the most children; ties: the outermost)."""
    best: tuple[str, nn.Module] | None = None
    best_score = (0, 0)
    for name, module in model.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)):
            continue
        kids = _param_children(module)
        if len(kids) < 2 or len({type(m) for _, m in kids}) != 1:
            continue
        score = (sum(p.numel() for p in module.parameters()), len(kids))
        if score > best_score:
            best, best_score = (name, module), score
    return best


def layerwise_lr_groups(
    model: nn.Module,
    base_lr: float,
    decay: float,
    *,
    weight_decay: float | None = None,
    no_decay_names: Iterable[str] = (),
    layers: str | nn.Module | None = None,
) -> list[dict[str, Any]]:
    """Layer-wise learning-rate decay for fine-tuning (ELECTRA, Clark et al. 2020; BEiT, Bao et al. 2022).

    The top of the network keeps ``base_lr``; each layer below gets ``decay`` times the rate of the
    layer above: ``lr(layer_id) = base_lr * decay ** (top - layer_id)``. Pretrained low layers (generic
    features) move less than the task-specific top.

    How depth is assigned (``layer_id``):

    1. The *block container* is ``layers`` (a submodule or its dotted name, e.g. ``"encoder.layer"``)
       or, by default, found in the module tree: among the ``nn.ModuleList``/``nn.Sequential`` modules
       (the model itself included) whose parameter-owning children are 2 or more and all of one
       class (a stack of identical blocks: ``blocks``, ``h``, ``encoder.layer``; or the layers of a
       plain ``Sequential`` MLP), the one holding the most parameter elements, so the stack of
       blocks wins over an MLP inside a block. An encoder-decoder has two stacks and only one is
       found: pass ``layers=`` (the other stack then counts as embeddings or head by its position).
    2. The ``k``-th parameter-owning child of the container (0-based) has ``layer_id = k + 1``.
    3. Parameters registered before the container in ``model.named_parameters()`` order (embeddings,
       ``cls_token``, ``pos_embed``) get ``layer_id = 0``, the deepest; parameters after it (final
       norm, head) get ``L + 1`` with ``L`` blocks. ``top`` is the largest ``layer_id`` present.
    4. Without a container of 2+ identical blocks, each parameter-owning top-level child of the model
       is a layer, in registration order (parameters owned by the model itself: ``layer_id = 0``).

    This is BEiT's ``get_layer_id_for_vit`` rule (``layer_decay ** (num_layers + 1 - layer_id)``),
    generalized to any module tree.

    With ``weight_decay`` given, each layer is split into a decayed group and a ``weight_decay=0``
    group by :func:`no_decay_param_names`; with ``None`` (default) groups carry no ``weight_decay`` key
    and the optimizer's default applies to all. Returns torch param-group dicts, deepest layer first,
    with keys ``params``, ``param_names``, ``lr``, ``lr_scale`` (``decay ** (top - layer_id)``),
    ``layer_id`` and maybe ``weight_decay``. Frozen parameters (``requires_grad=False``) are left out.
    Combine with ``to_torch(optimizer, schedule, relative=True)`` so a schedule scales every group.
    """
    owner = "layerwise_lr_groups"
    _check_model(owner, model)
    base_lr = _real(owner, "base_lr", base_lr, 0.0)
    decay = _real(owner, "decay", decay, 0.0, 1.0, low_open=True)
    if weight_decay is not None:
        weight_decay = _real(owner, "weight_decay", weight_decay, 0.0)
    patterns = _check_patterns(owner, no_decay_names)

    if layers is None:
        found = _find_layers(model)
    elif isinstance(layers, str):
        try:
            found = (layers, model.get_submodule(layers))
        except AttributeError:
            raise ValueError(f"{owner}: layers={layers!r} is not a submodule of the model") from None
    elif isinstance(layers, nn.Module):
        found = next(((n, m) for n, m in model.named_modules() if m is layers), None)
        if found is None:
            raise ValueError(f"{owner}: layers (a {type(layers).__name__}) is not a submodule of the model")
    else:
        raise TypeError(f"{owner}: layers must be a submodule, its dotted name or None, got {layers!r}")

    named = list(model.named_parameters())
    ids: dict[str, int] = {}
    if found is not None:
        cname, container = found
        blocks = _param_children(container)
        if not blocks:
            raise ValueError(f"{owner}: layers={cname!r} has no children with parameters")
        prefix = f"{cname}." if cname else ""
        block_of = {f"{prefix}{bn}.": k + 1 for k, (bn, _) in enumerate(blocks)}
        first = next((i for i, (n, _) in enumerate(named) if any(n.startswith(b) for b in block_of)), len(named))
        for i, (n, _) in enumerate(named):
            k = next((v for b, v in block_of.items() if n.startswith(b)), None)
            ids[n] = k if k is not None else (0 if i < first else len(blocks) + 1)
    else:
        children = {f"{cn}.": k for k, (cn, _) in enumerate(_param_children(model))}
        for n, _ in named:
            ids[n] = next((v for c, v in children.items() if n.startswith(c)), 0)

    trainable = [(n, p) for n, p in named if p.requires_grad]
    if not trainable:
        raise ValueError(f"{owner}: the model has no trainable parameters")
    top = max(ids[n] for n, _ in trainable)
    skip = no_decay_param_names(model, patterns) if weight_decay is not None else set()
    groups: list[dict[str, Any]] = []
    for layer_id in sorted({ids[n] for n, _ in trainable}):
        scale = decay ** (top - layer_id)
        kinds = (True, False) if weight_decay is not None else (None,)
        for kind in kinds:
            members = [(n, p) for n, p in trainable if ids[n] == layer_id and (kind is None or (n not in skip) == kind)]
            if not members:
                continue
            g: dict[str, Any] = {
                "params": [p for _, p in members],
                "param_names": [n for n, _ in members],
                "lr": base_lr * scale,
                "lr_scale": scale,
                "layer_id": layer_id,
            }
            if kind is not None:
                g["weight_decay"] = weight_decay if kind else 0.0
            groups.append(g)
    return groups
