"""The learning-rate range test (Smith 2017, "Cyclical learning rates"; fastai's ``lr_find``).

:func:`lr_find` trains a model for at most ``steps`` updates while the learning rate grows
exponentially from ``start`` to ``end``, records the loss of every batch, smooths it, stops once the
smoothed loss has blown up, puts the model, the optimizer, the gradients, the batch sampler and the
random number generators back exactly as they were, and suggests learning rates by the three known
rules (:func:`suggest`). :func:`lr_find_config` runs it on a harness :class:`TrainConfig` (what
``ravine lr-find`` does).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

import ravine.optim as ro
from ravine._nn import training_mode
from ravine._validation import Interval, check

from ._checks import integer
from .config import DTYPES, TrainConfig

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["lr_find", "lr_find_config", "suggest", "LRFindResult", "Suggestion", "SUGGESTION_RULES"]

SUGGESTION_RULES = ("steepest", "valley", "minimum/10")

_LR = Interval(float, 0, None, closed="neither")
_SMOOTH = Interval(float, 0, 1, closed="right")
_STOP_FACTOR = Interval(float, 1, None, closed="neither")


@dataclass(frozen=True)
class Suggestion:
    """A suggested learning rate and the rule that gave it.

    Attributes:
        rule: ``"steepest"``, ``"valley"`` or ``"minimum/10"`` (see :func:`suggest`).
        lr: the suggested learning rate.
        index: the index into the result's ``lrs``/``smoothed`` of the point the rule picked (for
            ``"minimum/10"``: of the minimum, whose learning rate is divided by 10).
        description: the rule in one sentence, for a legend or a report.
    """

    rule: str
    lr: float
    index: int
    description: str


@dataclass
class LRFindResult:
    """What :func:`lr_find` measured.

    Attributes:
        lrs: the learning rate of each recorded step (the ramp, cut where the test stopped).
        losses: the loss of each step's batch, computed before that step's update (fastai's
            convention: ``losses[k]`` is plotted against ``lrs[k]``, the rate the update after it used).
        smoothed: the debiased exponential moving average of ``losses`` (see :func:`lr_find`).
        stop_lr: the ramp's learning rate at the step whose loss stopped the test (its smoothed
            value exceeded ``stop_factor`` times its best, or it was not finite; that step's update
            was not applied, so the blow-up came from the rates before it); None when it ran the
            whole ramp. On gradient descent with a quadratic of largest curvature ``lambda`` it is
            always above ``2 / lambda``: no update at a rate up to that can raise the loss.
        stop_reason: ``"diverged"`` (the smoothed loss passed the limit), ``"nonfinite"`` or
            ``"completed"``.
        suggestions: :class:`Suggestion` by rule name (fewer than three when too few steps
            remain after trimming; see :func:`suggest`).
        settings: the arguments of the test (start, end, steps, smooth, stop_factor).
    """

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    stop_lr: float | None
    stop_reason: str
    suggestions: dict[str, Suggestion]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def best_lr(self) -> float:
        """The learning rate at the minimum of the smoothed loss."""
        return float(self.lrs[int(np.nanargmin(self.smoothed))])

    @property
    def suggested(self) -> float | None:
        """The ``"valley"`` suggestion (fastai's default), else ``"minimum/10"``; None without either."""
        for rule in ("valley", "minimum/10"):
            if rule in self.suggestions:
                return self.suggestions[rule].lr
        return None

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready Python values (non-finite losses as None)."""

        def num(v: float) -> float | None:
            return float(v) if math.isfinite(v) else None

        return {
            "lrs": [float(v) for v in self.lrs],
            "losses": [num(v) for v in self.losses],
            "smoothed": [num(v) for v in self.smoothed],
            "stop_lr": self.stop_lr,
            "stop_reason": self.stop_reason,
            "best_lr": self.best_lr if len(self.lrs) else None,
            "suggested": self.suggested,
            "suggestions": {
                k: {"lr": s.lr, "index": s.index, "rule": s.description} for k, s in self.suggestions.items()
            },
            "settings": dict(self.settings),
        }

    def plot(self, path: str | os.PathLike | None = None, *, title: str | None = None) -> Figure:
        """Draw the test with :func:`ravine.plots.lr_find.plot_lr_find` (suggestions marked).

        Args:
            path: where to save the figure (PNG/SVG/PDF by suffix); None to only return it.
            title: the figure's title (default: a summary of the test).

        Returns:
            The matplotlib figure (closed when saved to ``path``).
        """
        from ravine.plots.lr_find import plot_lr_find

        marks = {name: (s.lr, s.description) for name, s in self.suggestions.items()}
        return plot_lr_find(self.lrs, self.losses, self.smoothed, marks, path=path, stop_lr=self.stop_lr, title=title)


# ------------------------------------------------------------------------------------- suggestions

_DESCRIPTIONS = {
    "steepest": "steepest descent of the smoothed loss against log lr",
    "valley": "fastai's valley: half way down the longest descending run of the smoothed loss",
    "minimum/10": "the lr of the smoothed loss's minimum, divided by 10",
}


def _valley(losses: np.ndarray) -> int:
    """fastai's ``valley``, step for step: ``lds[i]`` is the length of the longest decreasing (not
    necessarily contiguous) subsequence ending at ``i``; the longest ends at ``max_end`` and is taken
    to start ``lds[max_end]`` points earlier; the pick is
    ``max_start + int(sections) + int(sections / 2)`` with ``sections = (max_end - max_start) / 3``."""
    n = len(losses)
    lds = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return max_start + int(sections) + int(sections / 2)


def suggest(
    lrs: Iterable[float], smoothed: Iterable[float], skip_start: int | None = None, skip_end: int = 5
) -> dict[str, Suggestion]:
    """Learning rates suggested from a range test's smoothed loss, by three published rules.

    As fastai's ``lr_find`` (and ``torch-lr-finder``) do, the first ``skip_start`` points (default
    ``len // 10``) and the last ``skip_end`` (default 5: the blow-up) are left out first; the rules
    then read what remains, indices counting in the full arrays:

    - ``"steepest"`` (fastai's ``steep``; Smith 2017's "where the loss falls fastest"): the ``lr``
      at the most negative slope ``(L[i+1] - L[i]) / (log lr[i+1] - log lr[i])``;
    - ``"valley"`` (fastai's default ``valley``): the longest decreasing subsequence of the
      smoothed loss ends at ``e`` and has ``n`` points; with ``s = e - n`` (fastai's convention: one
      before its first point) and ``d = (e - s) / 3``, the point ``s + int(d) + int(d / 2)``, about
      half way down in index (where the loss falls steadily, past the flat start);
    - ``"minimum/10"`` (fastai's ``minimum``): the learning rate of the smallest smoothed loss,
      divided by 10 (an order of magnitude below where the loss stops improving).

    Args:
        lrs: the learning rates of the test, increasing.
        smoothed: the smoothed loss at each of them.
        skip_start: points left out at the start (default ``len(lrs) // 10``).
        skip_end: points left out at the end (default 5).

    Returns:
        ``{rule: Suggestion}``; a rule that needs more points than remain (two for ``"steepest"``,
        one for the others) is left out, and nothing is suggested from non-finite losses.
    """
    lr = np.asarray(list(lrs), dtype=float)
    loss = np.asarray(list(smoothed), dtype=float)
    if lr.shape != loss.shape or lr.ndim != 1:
        raise ValueError(f"lrs and smoothed must be 1D of one length, got shapes {lr.shape} and {loss.shape}")
    n = len(lr)
    lo = n // 10 if skip_start is None else integer("skip_start", skip_start, Interval(int, 0, None))
    hi = n - integer("skip_end", skip_end, Interval(int, 0, None))
    keep = np.arange(lo, max(lo, hi))
    keep = keep[np.isfinite(loss[keep])]
    out: dict[str, Suggestion] = {}
    if len(keep) >= 2:
        slopes = np.diff(loss[keep]) / np.diff(np.log(lr[keep]))
        i = int(keep[int(np.argmin(slopes))])
        out["steepest"] = Suggestion("steepest", float(lr[i]), i, _DESCRIPTIONS["steepest"])
    if len(keep) >= 1:
        i = int(keep[_valley(loss[keep])])
        out["valley"] = Suggestion("valley", float(lr[i]), i, _DESCRIPTIONS["valley"])
        i = int(keep[int(np.argmin(loss[keep]))])
        out["minimum/10"] = Suggestion("minimum/10", float(lr[i]) / 10, i, _DESCRIPTIONS["minimum/10"])
    return out


# ---------------------------------------------------------------------------------------- the test


def _batches(data: Any) -> Iterator[tuple[Any, Any]]:
    """One ``(x, y)`` batch forever, or the batches of an iterable, starting over when it ends."""
    if isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        while True:
            yield data[0], data[1]
    if not isinstance(data, Iterable):
        raise TypeError(f"data must be an (x, y) pair of tensors or an iterable of them, got {type(data).__name__}")
    while True:
        empty = True
        for batch in data:
            empty = False
            yield batch
        if empty:
            raise ValueError("data yielded no batch")


def _snapshot(model: nn.Module, optimizer: torch.optim.Optimizer, data: Any) -> dict[str, Any]:
    return {
        "model": copy.deepcopy(model.state_dict(keep_vars=False)),
        "grads": [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()],
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "groups": [dict(g) for g in optimizer.param_groups],  # the values themselves (load_state_dict adds keys)
        "attrs": {
            k: copy.deepcopy(getattr(optimizer, k)) for k in ("skipped_steps", "_stats") if hasattr(optimizer, k)
        },
        "data": copy.deepcopy(data.state_dict())
        if hasattr(data, "state_dict") and hasattr(data, "load_state_dict")
        else None,
    }


def _restore(snap: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, data: Any) -> None:
    with torch.no_grad():
        model.load_state_dict(snap["model"])
    for p, g in zip(model.parameters(), snap["grads"]):
        p.grad = g
    optimizer.load_state_dict(snap["optimizer"])
    for group, saved in zip(optimizer.param_groups, snap["groups"]):
        group.clear()
        group.update(saved)
    for k, v in snap["attrs"].items():
        setattr(optimizer, k, v)
    if snap["data"] is not None:
        data.load_state_dict(snap["data"])


def _rng_devices(model: nn.Module) -> list[int]:
    return sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})


def lr_find(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    data: Any,
    optimizer: torch.optim.Optimizer,
    start: float = 1e-7,
    end: float = 10,
    steps: int = 100,
    smooth: float = 0.05,
    stop_factor: float = 4,
    *,
    grad_clip: ro.Transform | None = None,
) -> LRFindResult:
    """Run the learning-rate range test and give everything back as it was.

    Update ``k = 0 .. steps-1`` trains one batch with learning rate
    ``lr_k = start * (end / start) ** (k / (steps - 1))`` (an exponential ramp from ``start`` to
    exactly ``end``) written into every param group (a group keeps its ratio to the first group's
    initial ``lr``, so layer-wise rates stay layer-wise). The loss ``l_k`` of the batch is recorded
    before the update, and smoothed as fastai does, by a debiased exponential moving average with
    ``beta = 1 - smooth``::

        a_k = beta * a_{k-1} + (1 - beta) * l_k,   a_{-1} = 0,   smoothed_k = a_k / (1 - beta ** (k + 1))

    (``smooth=1`` is no smoothing). The test stops, before that step's update, when ``l_k`` is not
    finite or when ``smoothed_k > stop_factor * min_{j<=k} smoothed_j`` (fastai's rule, for losses
    that are positive, as cross-entropy and squared errors are).

    Afterwards the parameters and buffers, the gradients, the optimizer's state and param groups
    (``load_state_dict``; ravine's ``skipped_steps`` too), a batch sampler's position (when ``data``
    has ``state_dict``/``load_state_dict``, as ``ravine.experiments.data.BatchSampler`` does) and
    every module's train/eval flag are restored exactly, and the whole test runs inside
    ``torch.random.fork_rng``, so the caller's random streams (dropout, sampling) continue as if it had
    not run. The model trains in training mode.

    Args:
        model: the network; its parameters are those of ``optimizer``.
        loss_fn: ``loss_fn(model(x), y) -> scalar tensor``.
        data: one ``(x, y)`` batch used at every step, or an iterable of batches (started over
            when it ends). Floating inputs are cast to the model's dtype; both go to its device.
        optimizer: any ``torch.optim.Optimizer`` (``ravine.optim.Optimizer`` included) whose groups
            hold a numeric ``lr``.
        start: the first learning rate, > 0.
        end: the last learning rate, > start.
        steps: the length of the ramp, >= 2.
        smooth: weight of the newest loss in the moving average, in (0, 1].
        stop_factor: stop when the smoothed loss exceeds this multiple of its best, > 1.
        grad_clip: a ``ravine.optim`` clipping transform (``clip_by_global_norm``,
            ``clip_by_value``) applied to the gradients in place before every step, as the harness
            does for optimizers that take no chain; None (default) for none.

    Returns:
        An :class:`LRFindResult` with the recorded curve, where it stopped and the suggestions of
        :func:`suggest`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable (output, target) -> scalar tensor, got {loss_fn!r}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if grad_clip is not None and not isinstance(grad_clip, ro.Transform):
        raise TypeError(f"grad_clip must be a ravine.optim transform or None, got {type(grad_clip).__name__}")
    start = check("start", start, _LR)
    end = check("end", end, Interval(float, start, None, closed="neither"))
    steps = integer("steps", steps, Interval(int, 2, None))
    smooth = check("smooth", smooth, _SMOOTH)
    stop_factor = check("stop_factor", stop_factor, _STOP_FACTOR)
    base = [g.get("lr") for g in optimizer.param_groups]
    for i, lr in enumerate(base):
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
            raise ValueError(f"optimizer.param_groups[{i}]['lr'] must be a number > 0 for the range test, got {lr!r}")
    ratios = [lr / base[0] for lr in base]
    params = list(model.parameters())
    if not params:
        raise ValueError("model has no parameters")
    device, dtype = params[0].device, params[0].dtype
    lrs_ramp = start * (end / start) ** (np.arange(steps) / (steps - 1))

    snap = _snapshot(model, optimizer, data)
    beta = 1.0 - smooth
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    avg, best = 0.0, math.inf
    stop_reason, stop_lr = "completed", None
    try:
        with torch.random.fork_rng(devices=_rng_devices(model)), training_mode(model):
            batches = _batches(data)
            for k, lr in enumerate(lrs_ramp):
                x, y = next(batches)
                x = x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device)
                y = y.to(device)
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(x), y)
                value = float(loss.detach())
                avg = beta * avg + (1 - beta) * value
                s = avg / (1 - beta ** (k + 1))
                lrs.append(float(lr))
                losses.append(value)
                smoothed.append(s)
                if not math.isfinite(value) or not math.isfinite(s):
                    stop_reason, stop_lr = "nonfinite", float(lr)
                    break
                if s > stop_factor * best:
                    stop_reason, stop_lr = "diverged", float(lr)
                    break
                best = min(best, s)
                loss.backward()
                if grad_clip is not None:
                    grads = [p.grad for p in params if p.grad is not None]
                    grad_clip.update(grads, grad_clip.init(grads))
                for g, r in zip(optimizer.param_groups, ratios):
                    g["lr"] = float(lr) * r
                optimizer.step()
    finally:
        _restore(snap, model, optimizer, data)
    lr_arr, sm_arr = np.asarray(lrs), np.asarray(smoothed)
    return LRFindResult(
        lrs=lr_arr,
        losses=np.asarray(losses),
        smoothed=sm_arr,
        stop_lr=stop_lr,
        stop_reason=stop_reason,
        suggestions=suggest(lr_arr, sm_arr),
        settings={"start": start, "end": end, "steps": steps, "smooth": smooth, "stop_factor": stop_factor},
    )


def lr_find_config(
    config: TrainConfig | dict[str, Any],
    start: float = 1e-7,
    end: float = 10,
    steps: int = 100,
    smooth: float = 0.05,
    stop_factor: float = 4,
) -> LRFindResult:
    """:func:`lr_find` on the model, data and optimizer a harness config describes.

    The model, optimizer (``layer_lr_decay`` groups included) and batch sampler are built exactly as
    :func:`ravine.experiments.train` builds them (same seeds, device and dtype); ``config.clip`` is
    applied as in training (first in a ravine optimizer's chain, else to the gradients before the
    step: ``grad_clip``); ``config.schedule`` and ``steps`` are not
    used: the ramp sets the learning rate. Nothing is written to disk.

    Args:
        config: a :class:`TrainConfig` or its dict.
        start: the first learning rate, > 0.
        end: the last learning rate, > start.
        steps: the length of the ramp, >= 2.
        smooth: weight of the newest loss in the moving average, in (0, 1].
        stop_factor: stop when the smoothed loss exceeds this multiple of its best, > 1.

    Returns:
        The :class:`LRFindResult`.
    """
    from . import data as _data
    from . import models as _models
    from .train import _make_optimizer, _param_groups, loss_fn, resolve_model_kwargs

    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig or a dict, got {type(config).__name__}")
    device = torch.device(config.device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        dataset = _data.load(config.data, seed=config.data_seed, **config.data_kwargs)
        torch.manual_seed(config.seed)
        kwargs = resolve_model_kwargs(config.model, config.model_kwargs, dataset.dims)
        model = _models.build(config.model, **kwargs).to(device=device, dtype=DTYPES[config.dtype])
        groups = _param_groups(model, config.optimizer_kwargs.get("lr"), config.layer_lr_decay)
        opt, grad_clip = _make_optimizer(config, model, groups, None)
        sampler = dataset.sampler(config.batch_size, seed=config.seed)
        torch.manual_seed(config.seed + 1)  # dropout, as in training
        return lr_find(model, loss_fn, sampler, opt, start, end, steps, smooth, stop_factor, grad_clip=grad_clip)
