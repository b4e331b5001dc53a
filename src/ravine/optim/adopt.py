"""ADOPT (Taniguchi et al. 2024, "ADOPT: Modified Adam Can Converge with Any beta2 with the Optimal
Rate"): Adam with the second moment of the *previous* steps and the momentum taken after the
normalisation. The transform :func:`scale_by_adopt`, the named optimizer :func:`adopt` and the
torch-style class :class:`ADOPT` (pytorch-optimizer's ``ADOPT`` signature).

Adam divides the momentum by ``sqrt(v_t)``, and ``v_t`` contains the current gradient: the two are
correlated, which is why Adam can diverge unless ``beta2`` is chosen for the problem (Reddi et
al. 2018). ADOPT normalises the gradient by ``v_{t-1}`` (independent of ``g_t``) *before* the
momentum, so the momentum averages already-normalised gradients.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._constraints import check_hyper
from .adapter import Optimizer
from .alias import _betas
from .base import (
    Hyper,
    Params,
    State,
    Transform,
    addcmul_,
    chain,
    is_number,
    lerp_,
    mul_,
    resolve,
    transform,
    zeros_like,
)
from .transforms import add_decayed_weights, add_l2, scale, scale_by_learning_rate

__all__ = ["scale_by_adopt", "adopt", "ADOPT"]


@transform(fusable=True)
def scale_by_adopt(
    b1: Hyper = 0.9, b2: Hyper = 0.9999, eps: Hyper = 1e-6, clip_exponent: Hyper | None = 0.25
) -> Transform:
    """ADOPT's direction (Taniguchi et al. 2024; the clipped form of its official code), before the
    learning rate.

    First step (``t = 1``): ``v = g^2`` and ``u = 0`` (nothing is known about the scale yet). Then:
    ``n = clip(g / max(sqrt(v), eps), t^clip_exponent)`` (normalised by the second moment of the
    *previous* steps; ``clip(x, c)`` clamps to ``[-c, c]``; ``clip_exponent=None``: no clipping),
    ``m = b1 * m + (1 - b1) * n``, ``u = m``, and only then ``v = b2 * v + (1 - b2) * g^2``.

    Where it differs from Adam: no bias correction (``v`` starts at ``g_1^2``, ``m`` averages
    normalised gradients), ``eps`` bounds ``sqrt(v)`` from below instead of being added to it (as
    the reference implementations), and ``b2 = 0.9999`` by default. Elementwise: it runs on the
    fused path. State: ``exp_avg`` (``m``), ``exp_avg_sq`` (``v``).
    """
    where = "scale_by_adopt: "
    check_hyper("b1", b1, where=where)
    check_hyper("b2", b2, where=where)
    check_hyper("eps", eps, where=where)
    if clip_exponent is not None:
        check_hyper("clip_exponent", clip_exponent, where=where)

    def init(params: Params) -> State:
        return {"step": 0, "exp_avg": zeros_like(params), "exp_avg_sq": zeros_like(params)}

    def update(g: Params, state: State, params: Params | None = None) -> tuple[Params, State]:
        step = state["step"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        new = {"step": step + 1, "exp_avg": m, "exp_avg_sq": v}
        if not isinstance(step, Tensor) and step == 0:
            addcmul_(v, g, g, 1.0)  # v = g^2 (v is 0)
            torch._foreach_zero_(g)
            return g, new
        beta1, beta2, e = resolve(b1, step), resolve(b2, step), resolve(eps, step)
        normed = torch._foreach_sqrt(v)
        if is_number(e):
            torch._foreach_clamp_min_(normed, e)
        else:
            normed = [torch.clamp(x, min=e.to(x.dtype)) for x in normed]
        for ni, gi in zip(normed, g):
            torch.div(gi, ni, out=ni)
        if clip_exponent is not None:
            t = step + 1 if not isinstance(step, Tensor) else (step + 1).to(torch.float64)
            c = t ** resolve(clip_exponent, step)
            if is_number(c):
                torch._foreach_clamp_min_(normed, -c)
                torch._foreach_clamp_max_(normed, c)
            else:
                normed = [torch.clamp(x, -c.to(x.dtype), c.to(x.dtype)) for x in normed]
        if isinstance(step, Tensor):
            # the compiled (fused) path, where the step is a 0-dim tensor: the first-step rule
            # without a branch on data (v = lerp(v, g^2, 1) = g^2 exactly, m kept, u = 0)
            first = step == 0
            for mi, ni in zip(m, normed):
                mi.copy_(torch.where(first, mi, mi.lerp(ni, torch.as_tensor(1 - beta1, dtype=mi.dtype))))
            w = torch.where(first, 1.0, torch.as_tensor(1 - beta2, dtype=torch.float64, device=step.device))
            for vi, gi in zip(v, g):
                vi.lerp_(gi * gi, w.to(vi.dtype))
            for gi, mi in zip(g, m):
                gi.copy_(torch.where(first, torch.zeros_like(mi), mi))
            return g, new
        lerp_(m, normed, 1 - beta1)
        mul_(v, beta2)
        addcmul_(v, g, g, 1 - beta2)
        torch._foreach_copy_(g, m)
        return g, new

    return Transform(init, update)


@transform(static=("decoupled_weight_decay",))
def adopt(
    lr: Hyper = 1e-3,
    b1: Hyper = 0.9,
    b2: Hyper = 0.9999,
    eps: Hyper = 1e-6,
    weight_decay: Hyper = 0.0,
    decoupled_weight_decay: bool = False,
    clip_exponent: Hyper | None = 0.25,
) -> Transform:
    """ADOPT (Taniguchi et al. 2024): ``p = p - lr * m`` with ``m`` the momentum of gradients
    normalised by the previous steps' second moment; see :func:`scale_by_adopt`.

    Weight decay as the reference implementations: coupled by default (``g = g + weight_decay * p``
    before everything, i.e. :func:`~ravine.optim.add_l2`), or decoupled
    (``decoupled_weight_decay=True``: the weights shrink by ``lr * weight_decay`` per step, the first
    step included, as AdamW). Defaults as the paper's and pytorch-optimizer's.
    """
    parts: list[Transform] = []
    if not decoupled_weight_decay:
        parts.append(add_l2(weight_decay))
    parts.append(scale_by_adopt(b1, b2, eps, clip_exponent))
    if decoupled_weight_decay:
        parts.append(add_decayed_weights(weight_decay))
    parts.append(scale_by_learning_rate(lr))
    return chain(*parts)


@transform(static=("decoupled_weight_decay",))
def _reference_adopt(
    lr: Hyper = 1e-3,
    betas: tuple[float, float] = (0.9, 0.9999),
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    eps: float = 1e-6,
    clip_exponent: float | None = 0.25,
    maximize: bool = False,
) -> Transform:
    """:func:`adopt` under pytorch-optimizer's names (``betas``), so param groups may set them."""
    where = "ADOPT: "
    check_hyper("lr", lr, where=where)
    b1, b2 = _betas(betas, where)
    t = adopt(lr, b1, b2, eps, weight_decay, decoupled_weight_decay, clip_exponent)
    return chain(scale(-1.0), t) if maximize else t


class ADOPT(Optimizer):
    """pytorch-optimizer's ``ADOPT`` signature and defaults, computed by :func:`adopt`'s chain.

    Args:
        params: parameters or param groups, as for any torch optimizer.
        lr: learning rate.
        betas: ``(b1, b2)``: the momentum and second-moment decay rates.
        weight_decay: coupled L2 (added to the gradient), or decoupled with ``decoupled_weight_decay``.
        decoupled_weight_decay: pytorch-optimizer's ``weight_decouple``: shrink the weights by
            ``lr * weight_decay`` each step instead.
        eps: lower bound of ``sqrt(v)``.
        clip_exponent: the normalised gradient is clipped to ``[-t^e, t^e]`` at step ``t``
            (pytorch-optimizer's default ``clip_lambda = step ** 0.25``); ``None``: no clipping.
        maximize: ascend the objective instead (the gradient is negated first).
        nonfinite: see :class:`ravine.optim.Optimizer`.
        fused: see :class:`ravine.optim.Optimizer` (ADOPT is elementwise: every mode runs it).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.9999),
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        eps: float = 1e-6,
        clip_exponent: float | None = 0.25,
        *,
        maximize: bool = False,
        nonfinite: str = "skip",
        fused: bool | str | None = False,
    ):
        t = _reference_adopt(lr, betas, weight_decay, decoupled_weight_decay, eps, clip_exponent, maximize)
        super().__init__(params, t, nonfinite=nonfinite, fused=fused)
