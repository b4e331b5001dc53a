"""Primitive gradient transformations. Each docstring states its update rule.

Notation: ``g`` is the incoming update (the gradient, for the first transform of a chain), ``u``
the outgoing one, ``p`` the parameter, ``t`` the 1-based step of the update being made. All
hyperparameters accept a float, a schedule (callable of the 0-based step) or a broadcastable tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ._constraints import check_hyper, check_option
from .base import (
    Hyper,
    Params,
    State,
    Transform,
    add_,
    addcmul_,
    global_norm,
    lerp_,
    mul_,
    power,
    resolve,
    scalar,
    sqrt,
    transform,
    zeros_like,
)

__all__ = [
    "identity",
    "scale",
    "scale_by_learning_rate",
    "scale_by_schedule",
    "trace",
    "scale_by_rms",
    "scale_by_adam",
    "scale_by_rss",
    "add_decayed_weights",
    "add_l2",
    "clip_by_global_norm",
    "clip_by_value",
    "clip_adaptive",
    "add_noise",
]


def _stateless(apply: Callable[[Params, int, Params | None], Params]) -> tuple[Callable, Callable]:
    def init(params: Params) -> State:
        return {"step": 0}

    def update(updates: Params, state: State, params: Params | None = None) -> tuple[Params, State]:
        updates = apply(updates, state["step"], params)
        return updates, {"step": state["step"] + 1}

    return init, update


def _need_params(name: str, params: Params | None) -> Params:
    if params is None:
        raise ValueError(f"{name} needs the parameters: call update(updates, state, params)")
    return params


@transform(fusable=True)
def identity() -> Transform:
    """``u = g``."""
    return Transform(*_stateless(lambda u, step, p: u))


@transform(fusable=True)
def scale(factor: Hyper) -> Transform:
    """``u = factor * g``."""
    check_hyper("factor", factor, where="scale: ")

    def apply(u: Params, step: int, p: Params | None) -> Params:
        mul_(u, resolve(factor, step))
        return u

    return Transform(*_stateless(apply))


@transform(fusable=True)
def scale_by_learning_rate(lr: Hyper, flip_sign: bool = True) -> Transform:
    """``u = -lr_t * g`` (``+lr_t`` with ``flip_sign=False``); ``lr_t = lr(t-1)`` for a schedule."""
    check_hyper("lr", lr, where="scale_by_learning_rate: ")
    sign = -1.0 if flip_sign else 1.0

    def apply(u: Params, step: int, p: Params | None) -> Params:
        mul_(u, sign * resolve(lr, step))
        return u

    return Transform(*_stateless(apply))


@transform(static=("schedule",), fusable=True)
def scale_by_schedule(schedule: Callable[[int], float]) -> Transform:
    """``u = schedule(t-1) * g``: a multiplier that follows the step (warmup, decay...)."""
    if not callable(schedule):
        raise TypeError(f"scale_by_schedule: schedule must be callable step -> float, got {schedule!r}")

    def apply(u: Params, step: int, p: Params | None) -> Params:
        mul_(u, schedule(step))
        return u

    return Transform(*_stateless(apply))


@transform(static=("form", "nesterov"), fusable=True)
def trace(beta: Hyper = 0.9, form: str = "ema", dampening: Hyper = 0.0, nesterov: bool = False) -> Transform:
    """Momentum: a velocity that accumulates the incoming updates.

    ``form="ema"`` (the chapter's): ``v = beta * v + (1 - beta) * g`` (v starts at 0), ``u = v``;
    with Nesterov, ``u = beta * v + (1 - beta) * g``. Learning rate ``eta`` on this form equals
    learning rate ``eta * (1 - beta)`` on the heavy-ball form (the velocity is scaled by ``1-beta``).

    ``form="heavy_ball"`` (torch.optim.SGD's): ``b = g`` at the first step, then
    ``b = beta * b + (1 - dampening) * g``; ``u = b``, or ``u = g + beta * b`` with Nesterov.

    State: ``momentum_buffer`` (torch's name).
    """
    where = "trace: "
    check_option("form", form, where=where)
    check_hyper("beta", beta, where=where)
    check_hyper("dampening", dampening, where=where)
    if nesterov and form == "heavy_ball" and scalar(dampening) and dampening != 0:
        raise ValueError(f"{where}nesterov=True requires dampening=0 (as torch), got dampening={dampening!r}")
    if nesterov and scalar(beta) and beta == 0:
        raise ValueError(f"{where}nesterov=True requires momentum beta > 0, got beta=0")

    def init(params: Params) -> State:
        return {"step": 0, "momentum_buffer": zeros_like(params)}

    def update(g: Params, state: State, params: Params | None = None) -> tuple[Params, State]:
        step = state["step"]
        b = resolve(beta, step)
        bufs = state["momentum_buffer"]
        if form == "ema":
            lerp_(bufs, g, 1 - b)  # v = b v + (1-b) g
            if nesterov:
                lerp_(g, bufs, b)  # u = (1-b) g + b v
            else:
                torch._foreach_copy_(g, bufs)
        else:
            if isinstance(step, Tensor):
                # compiled (fused) path, where the step is a 0-dim tensor: the same first-step rule
                # (b = g, then b = beta * b + (1 - dampening) * g) without a data-dependent branch.
                d = 1 - resolve(dampening, step)
                for bi, gi in zip(bufs, g):
                    bi.copy_(torch.where(step == 0, gi, bi * b + gi * d))
            elif step == 0:
                torch._foreach_copy_(bufs, g)
            else:
                mul_(bufs, b)
                add_(bufs, g, 1 - resolve(dampening, step))
            if nesterov:
                add_(g, bufs, b)
            else:
                torch._foreach_copy_(g, bufs)
        return g, {"step": step + 1, "momentum_buffer": bufs}

    return Transform(init, update)


@transform(static=("centered",), fusable=True)
def scale_by_rms(beta: Hyper = 0.999, eps: Hyper = 1e-8, centered: bool = False) -> Transform:
    """RMSProp's preconditioner: divide each coordinate by its running RMS.

    ``s = beta * s + (1 - beta) * g^2``; ``u = g / (sqrt(s) + eps)``; with ``centered=True``,
    ``m = beta * m + (1 - beta) * g`` and ``u = g / (sqrt(s - m^2) + eps)`` (torch's ``centered``).
    The chapter's code uses beta=0.999, eps=1e-8; torch.optim.RMSprop's default alpha is 0.99.
    State: ``square_avg`` and ``grad_avg`` (torch's names).
    """
    where = "scale_by_rms: "
    check_hyper("beta", beta, where=where)
    check_hyper("eps", eps, where=where)

    def init(params: Params) -> State:
        s: State = {"step": 0, "square_avg": zeros_like(params)}
        if centered:
            s["grad_avg"] = zeros_like(params)
        return s

    def update(g: Params, state: State, params: Params | None = None) -> tuple[Params, State]:
        step = state["step"]
        b, e = resolve(beta, step), resolve(eps, step)
        sq = state["square_avg"]
        mul_(sq, b)
        addcmul_(sq, g, g, 1 - b)
        new = {"step": step + 1, "square_avg": sq}
        if centered:
            ga = state["grad_avg"]
            lerp_(ga, g, 1 - b)
            new["grad_avg"] = ga
            denom = torch._foreach_addcmul(sq, ga, ga, value=-1)
            torch._foreach_sqrt_(denom)
        else:
            denom = torch._foreach_sqrt(sq)
        _add_scalar_(denom, e)
        torch._foreach_div_(g, denom)
        return g, new

    return Transform(init, update)


def _add_scalar_(xs: Params, s: float | Tensor) -> None:
    if scalar(s):
        torch._foreach_add_(xs, s)
    else:
        for x in xs:
            x.add_(s)


@transform(static=("bias_correction", "amsgrad"), fusable=True)
def scale_by_adam(
    b1: Hyper = 0.9,
    b2: Hyper = 0.999,
    eps: Hyper = 1e-8,
    bias_correction: bool = True,
    amsgrad: bool = False,
) -> Transform:
    """Adam's direction (Kingma & Ba 2015), before the learning rate.

    ``m = b1 * m + (1 - b1) * g`` (momentum: the mean of the gradient),
    ``v = b2 * v + (1 - b2) * g^2`` (RMSProp: its uncentred variance),
    ``m_hat = m / (1 - b1^t)``, ``v_hat = v / (1 - b2^t)`` (bias correction: both start at 0, so
    without it the first steps are scaled by ``(1-b1)/sqrt(1-b2)``: 3.2x too large at the defaults),
    ``u = m_hat / (sqrt(v_hat) + eps)``. With ``amsgrad``, ``v_max = max(v_max, v)`` replaces ``v``
    in the denominator (torch's variant: the maximum of the raw, not bias-corrected, estimates).
    ``bias_correction=False`` drops both corrections. State: ``exp_avg``, ``exp_avg_sq``,
    ``max_exp_avg_sq`` (torch's names).
    """
    where = "scale_by_adam: "
    check_hyper("b1", b1, where=where)
    check_hyper("b2", b2, where=where)
    check_hyper("eps", eps, where=where)

    def init(params: Params) -> State:
        s: State = {"step": 0, "exp_avg": zeros_like(params), "exp_avg_sq": zeros_like(params)}
        if amsgrad:
            s["max_exp_avg_sq"] = zeros_like(params)
        return s

    def update(g: Params, state: State, params: Params | None = None) -> tuple[Params, State]:
        step = state["step"]
        t = step + 1
        beta1, beta2, e = resolve(b1, step), resolve(b2, step), resolve(eps, step)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        lerp_(m, g, 1 - beta1)
        mul_(v, beta2)
        addcmul_(v, g, g, 1 - beta2)
        new = {"step": t, "exp_avg": m, "exp_avg_sq": v}
        if amsgrad:
            vmax = state["max_exp_avg_sq"]
            torch._foreach_maximum_(vmax, v)
            new["max_exp_avg_sq"] = vmax
            v = vmax
        if bias_correction:
            bc1, bc2_sqrt = 1 - power(beta1, t), sqrt(1 - power(beta2, t))
        else:
            bc1, bc2_sqrt = 1.0, 1.0
        # u = (m / bc1) / (sqrt(v) / sqrt(bc2) + eps), written into g without temporaries.
        for gi, vi in zip(g, v):
            torch.sqrt(vi, out=gi)
        mul_(g, 1 / bc2_sqrt if scalar(bc2_sqrt) else bc2_sqrt.reciprocal())
        _add_scalar_(g, e)
        for gi, mi in zip(g, m):
            torch.div(mi, gi, out=gi)
        mul_(g, 1 / bc1 if scalar(bc1) else bc1.reciprocal())
        return g, new

    return Transform(init, update)


@transform(fusable=True)
def scale_by_rss(eps: Hyper = 1e-10, initial_accumulator_value: float = 0.0) -> Transform:
    """Adagrad's preconditioner: ``s = s + g^2``, ``u = g / (sqrt(s) + eps)``.

    State: ``sum`` (torch's name), initialised to ``initial_accumulator_value``.
    """
    where = "scale_by_rss: "
    check_hyper("eps", eps, where=where)
    check_hyper("initial_accumulator_value", initial_accumulator_value, where=where)

    def init(params: Params) -> State:
        return {
            "step": 0,
            "sum": [torch.full_like(p, initial_accumulator_value, memory_format=torch.preserve_format) for p in params],
        }

    def update(g: Params, state: State, params: Params | None = None) -> tuple[Params, State]:
        step = state["step"]
        s = state["sum"]
        addcmul_(s, g, g, 1.0)
        denom = torch._foreach_sqrt(s)
        _add_scalar_(denom, resolve(eps, step))
        torch._foreach_div_(g, denom)
        return g, {"step": step + 1, "sum": s}

    return Transform(init, update)


def _mask_list(mask: Any, params: Params, where: str) -> list[bool]:
    if mask is None:
        return [True] * len(params)
    m = mask(params) if callable(mask) else mask
    m = list(m)
    if len(m) != len(params):
        raise ValueError(f"{where}mask has {len(m)} entries but there are {len(params)} parameters")
    return [bool(x) for x in m]


@transform(static=("mask", "convention"), fusable=True)
def add_decayed_weights(
    weight_decay: Hyper = 0.0,
    mask: Sequence[bool] | Callable[[Params], Sequence[bool]] | None = None,
    convention: str = "torch",
) -> Transform:
    """Decoupled weight decay (Loshchilov & Hutter): ``u = g + weight_decay * p``.

    Placed *after* the preconditioner (``scale_by_adam``) and *before* the learning rate, so each
    step shrinks weights by ``lr * weight_decay``: torch's AdamW (``convention="torch"``), whose
    effective decay moves with the learning rate.

    ``convention="decoupled"`` is the paper's: place it *after* ``scale_by_learning_rate`` with
    ``weight_decay = lambda * eta_t`` (``eta_t`` the schedule multiplier): the decay is
    ``u = g - weight_decay * p``, independent of the base learning rate. :func:`ravine.optim.adamw`
    builds both placements; this primitive only fixes the sign (``+`` before a sign-flipping
    learning rate, ``-`` after it).

    ``mask``: booleans (or a callable ``params -> booleans``) selecting the parameters to decay;
    use it to exclude biases and norm weights.
    """
    where = "add_decayed_weights: "
    check_hyper("weight_decay", weight_decay, where=where)
    check_option("convention", convention, where=where)
    return _add_weights(weight_decay, mask, 1.0 if convention == "torch" else -1.0, where)


def _add_weights(weight_decay: Hyper, mask: Any, sign: float, where: str) -> Transform:
    """``u = g + sign * weight_decay * p`` on the masked parameters: decay and L2 alike."""

    def apply(u: Params, step: int, params: Params | None) -> Params:
        params = _need_params(where.rstrip(": "), params)
        wd = resolve(weight_decay, step)
        if scalar(wd) and wd == 0:
            return u
        keep = _mask_list(mask, params, where)
        us = [x for x, k in zip(u, keep) if k]
        ps = [p for p, k in zip(params, keep) if k]
        if us:
            add_(us, ps, sign * wd if scalar(wd) else wd * sign)
        return u

    return Transform(*_stateless(apply))


@transform(static=("mask",), fusable=True)
def add_l2(
    weight_decay: Hyper = 0.0,
    mask: Sequence[bool] | Callable[[Params], Sequence[bool]] | None = None,
) -> Transform:
    """Coupled L2 regularisation: ``u = g + weight_decay * p``, placed *before* the preconditioner.

    The same arithmetic as :func:`add_decayed_weights`, at a different place: the decay term then
    goes through Adam's ``1/sqrt(v)`` scaling, so weights with large gradients are decayed less.
    That is torch's ``Adam(weight_decay=...)`` and ``SGD(weight_decay=...)``, and what AdamW fixes.
    """
    where = "add_l2: "
    check_hyper("weight_decay", weight_decay, where=where)
    return _add_weights(weight_decay, mask, 1.0, where)


def _global_norm(u: Params, per_row: bool) -> Tensor:
    if per_row:
        total = sum(x.reshape(x.shape[0], -1).square().sum(dim=1, keepdim=True) for x in u)
        return total.sqrt()
    return global_norm(u)


@transform(static=("per_row", "per_group"), fusable=True)
def clip_by_global_norm(max_norm: Hyper = 1.0, per_row: bool = False, per_group: bool = False) -> Transform:
    """Rescale all updates together when their global norm exceeds ``max_norm``.

    ``n = sqrt(sum_i ||g_i||^2)``; ``u = g * min(1, max_norm / (n + 1e-6))`` exactly as
    ``torch.nn.utils.clip_grad_norm_``. Direction is kept, only the step length is capped: the
    standard cure for the rare huge gradients of recurrent nets and early transformer training.

    Which norm: called directly (``update`` on one list of tensors), the norm of that list. Inside
    :class:`ravine.optim.Optimizer`, the norm of the gradients of *all* param groups, as
    ``clip_grad_norm_(model.parameters())``: the clip must then come first in the chain (it clips
    the gradient) unless there is one param group. ``per_group=True`` clips each param group by its
    own norm instead. ``per_row=True`` treats dim 0 of every tensor as independent problems (rows
    of a batched 2D simulation): one norm per row.

    After each update the state holds ``norm`` (``n``, before clipping), ``clipped_norm`` (the norm
    after it, ``n * min(1, max_norm / (n + 1e-6))``) and ``clipped`` (whether it clipped), for
    logging. The optimizer supplies its norm as the state's ``total_norm``, an input the update does
    not return.
    """
    where = "clip_by_global_norm: "
    check_hyper("max_norm", max_norm, where=where)

    def init(params: Params) -> State:
        return {"step": 0}

    def update(u: Params, state: State, params: Params | None = None) -> tuple[Params, State]:
        step = state["step"]
        mx = resolve(max_norm, step)
        if not u:
            return u, {"step": step + 1}
        n = state.get("total_norm")
        if n is None:
            n = _global_norm(u, per_row)
        coef = torch.clamp(mx / (n + 1e-6), max=1.0)
        clipped = n > mx
        # clip_grad_norm_ always multiplies by the clamped coefficient (compiled code does too). On CPU,
        # reading it costs no sync, and where it is exactly 1 the multiply changes nothing: skip that pass.
        if per_row or n.device.type != "cpu" or torch.compiler.is_compiling() or bool(coef < 1):
            if per_row:
                for x in u:
                    x.mul_(coef.reshape(coef.shape[0], *([1] * (x.dim() - 1))).to(x.dtype))
            else:
                torch._foreach_mul_(u, coef.to(u[0].dtype))
        return u, {"step": step + 1, "norm": n, "clipped_norm": n * coef, "clipped": clipped}

    return Transform(init, update)


@transform(fusable=True, compilable=False)
def clip_by_value(clip: Hyper = 1.0) -> Transform:
    """Clamp each coordinate: ``u = clamp(g, -clip, clip)`` (``torch.nn.utils.clip_grad_value_``).

    Unlike norm clipping this changes the direction. State info: ``norm`` (pre-clip global
    norm) and ``clipped`` (whether any coordinate was clamped).
    """
    where = "clip_by_value: "
    check_hyper("clip", clip, where=where)

    def init(params: Params) -> State:
        return {"step": 0}

    def update(u: Params, state: State, params: Params | None = None) -> tuple[Params, State]:
        step = state["step"]
        c = resolve(clip, step)
        if not u:
            return u, {"step": step + 1}
        n = _global_norm(u, False)
        amax = torch.stack([x.abs().max() for x in u]).max()
        if scalar(c):
            torch._foreach_clamp_min_(u, -c)
            torch._foreach_clamp_max_(u, c)
        else:
            for x in u:
                torch.clamp(x, -c, c, out=x)
        return u, {"step": step + 1, "norm": n, "clipped": bool((amax > c).any())}

    return Transform(init, update)


@transform()
def clip_adaptive(clipping: Hyper = 0.01, eps: float = 1e-3) -> Transform:
    """Adaptive gradient clipping, unit-wise (Brock et al. 2021, NFNets).

    For each unit ``i`` (output row of a weight matrix or filter of a conv kernel; a whole bias
    vector counts as one unit): ``max_i = clipping * max(||p_i||, eps)``; if
    ``||g_i|| > max_i`` then ``u_i = g_i * max_i / ||g_i||`` else ``u_i = g_i``. Clips the
    gradient relative to the size of the weights it updates. Info: ``clipped`` (any unit),
    ``clip_fraction`` (fraction of units clipped), ``norm`` (pre-clip global norm).
    """
    where = "clip_adaptive: "
    check_hyper("clipping", clipping, where=where)
    check_hyper("eps", eps, where=where)

    def init(params: Params) -> State:
        return {"step": 0}

    def update(u: Params, state: State, params: Params | None = None) -> tuple[Params, State]:
        params = _need_params("clip_adaptive", params)
        step = state["step"]
        c = resolve(clipping, step)
        n = _global_norm(u, False) if u else torch.zeros(())
        units = 0
        hit = 0
        for g, p in zip(u, params):
            pn = _unit_norm(p).clamp(min=eps)
            gn = _unit_norm(g)
            mx = pn * c
            trigger = gn > mx
            scale = torch.where(trigger, mx / gn.clamp(min=1e-6), torch.ones_like(gn))
            g.mul_(scale)
            units += trigger.numel()
            hit += int(trigger.sum())
        frac = hit / units if units else 0.0
        return u, {"step": step + 1, "norm": n, "clipped": hit > 0, "clip_fraction": frac}

    return Transform(init, update)


def _unit_norm(x: Tensor) -> Tensor:
    """Per-unit norm broadcastable against ``x``: dims 1.. reduced; 0-d/1-d tensors are one unit."""
    if x.dim() <= 1:
        return torch.linalg.vector_norm(x).reshape([1] * x.dim())
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.dim())), keepdim=True)


@transform(static=("seed",))
def add_noise(eta: float = 0.01, gamma: float = 0.55, seed: int = 0) -> Transform:
    """Gradient noise (Neelakantan et al. 2015; Optax's ``add_noise``): ``u = g + sigma_t * xi_t``.

    ``sigma_t^2 = eta / (t + 1)^gamma`` for the ``t``-th update (``t = 0, 1, ...``: the variance of the
    first update is ``eta``; ``gamma = 0`` keeps it constant), ``xi_t ~ N(0, I)``. The draws of update
    ``t`` come from a ``torch.Generator`` seeded with ``seed * 1_000_003 + t``, tensor after tensor, so
    the noise is a function of the step alone: a resumed run draws the same numbers. Chain it before
    the optimizer: ``chain(add_noise(0.01, 0.55), sgd(lr=0.1))``.
    """
    check_hyper("eta", eta, where="add_noise: ")
    check_hyper("gamma", gamma, where="add_noise: ")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"add_noise: seed must be an integer >= 0, got {seed!r}")

    def apply(updates: Params, step: int, params: Params | None) -> Params:
        if eta == 0:
            return updates
        sigma = (eta / (step + 1) ** gamma) ** 0.5
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        return [u + sigma * torch.randn(u.shape, generator=gen, dtype=u.dtype).to(u.device) for u in updates]

    return Transform(*_stateless(apply))
