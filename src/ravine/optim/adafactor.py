"""Adafactor (Shazeer & Stern 2018, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost")
as ``torch.optim.Adafactor`` computes it: a second moment stored as row and column averages, an
update clipped by its RMS, a step size relative to the weights' RMS.

The transforms :func:`scale_by_factored_rms`, :func:`clip_by_block_rms` and
:func:`scale_by_param_rms`, the named optimizer :func:`adafactor` and the torch-style class
:class:`Adafactor`. The transforms reduce over whole tensors (rows, columns, RMS), so they are not
elementwise and do not run on the fused path: ``fused=True``/``"flat"`` raise naming them,
``fused=None`` runs them unfused.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._constraints import check_hyper
from .adapter import Optimizer
from .base import Hyper, Params, State, Transform, chain, is_number, resolve, transform
from .transforms import add_decayed_weights, scale, scale_by_learning_rate

__all__ = ["scale_by_factored_rms", "clip_by_block_rms", "scale_by_param_rms", "adafactor", "Adafactor"]


def _empty(p: Tensor) -> Tensor:
    return p.new_zeros((0,))


@transform()
def scale_by_factored_rms(beta2_decay: Hyper = -0.8, eps1: float | None = None) -> Transform:
    """Adafactor's preconditioner: ``u = g / sqrt(max(v_hat, eps1^2))``, with ``v_hat`` the
    second moment of ``g``, factored for matrices.

    The decay rate rises with the step ``t``: ``v = lerp(v, g^2, t^beta2_decay)`` (so ``v = g^2`` at
    ``t = 1`` and ``1 - beta2_t = t^-0.8`` by default; no bias correction is needed).
    For a tensor of two or more dimensions (factored along the last two, as torch), only the
    row means ``R = lerp(R, mean_{-1}(g^2), ...)`` and column means ``C = lerp(C, mean_{-2}(g^2), ...)``
    are kept (``n + m`` numbers for an ``n x m`` matrix instead of ``n m``), and
    ``v_hat = R C / max(mean(R), eps1)``: the rank-1 estimate. Vectors keep ``v`` in full.
    ``eps1=None`` is the dtype's machine epsilon (torch's default).

    State: ``row_var``, ``col_var`` (matrices) and ``variance`` (vectors), torch's names; the
    factors a parameter does not use are empty tensors.
    """
    where = "scale_by_factored_rms: "
    check_hyper("beta2_decay", beta2_decay, where=where)
    if eps1 is not None:
        check_hyper("eps1", eps1, where=where)

    def init(params: Params) -> State:
        rows, cols, full = [], [], []
        for p in params:
            if p.dim() > 1:
                rows.append(p.new_zeros((*p.shape[:-1], 1)))
                cols.append(p.new_zeros((*p.shape[:-2], 1, p.shape[-1])))
                full.append(_empty(p))
            else:
                rows.append(_empty(p))
                cols.append(_empty(p))
                full.append(torch.zeros_like(p, memory_format=torch.preserve_format))
        return {"step": 0, "row_var": rows, "col_var": cols, "variance": full}

    def update(g: Params, state: State, params: Params | None = None) -> tuple[Params, State]:
        step = state["step"]
        w = (step + 1) ** resolve(beta2_decay, step)  # 1 - beta2_t
        for gi, r, c, v in zip(g, state["row_var"], state["col_var"], state["variance"]):
            e = torch.finfo(gi.dtype).eps if eps1 is None else eps1
            if gi.dim() > 1:
                r.lerp_(torch.linalg.vector_norm(gi, dim=-1, keepdim=True).square_().div_(gi.size(-1)), w)
                c.lerp_(torch.linalg.vector_norm(gi, dim=-2, keepdim=True).square_().div_(gi.size(-2)), w)
                est = (r @ c).div_(r.mean(dim=-2, keepdim=True).clamp_(min=e))
            else:
                v.lerp_(gi * gi, w)
                est = v.clone()
            gi.mul_(est.clamp_(min=e * e).rsqrt_())
        return g, {
            "step": step + 1,
            "row_var": state["row_var"],
            "col_var": state["col_var"],
            "variance": state["variance"],
        }

    return Transform(init, update)


def _rms(x: Tensor) -> Tensor:
    return torch.linalg.vector_norm(x) / x.numel() ** 0.5


@transform()
def clip_by_block_rms(d: Hyper = 1.0) -> Transform:
    """``u = g / max(1, RMS(g) / d)`` for each tensor: no update has an RMS above ``d``.

    Adafactor's update clipping (Shazeer & Stern 2018, torch's ``d``): the preconditioner
    divides by a second moment that lags behind, so a sudden large gradient would otherwise give
    a step far larger than usual.
    """
    check_hyper("d", d, where="clip_by_block_rms: ")

    def init(params: Params) -> State:
        return {"step": 0}

    def update(g: Params, state: State, params: Params | None = None) -> tuple[Params, State]:
        step = state["step"]
        dd = resolve(d, step)
        for x in g:
            x.div_(torch.clamp(_rms(x) / dd, min=1.0))
        return g, {"step": step + 1}

    return Transform(init, update)


@transform()
def scale_by_param_rms(eps2: Hyper = 1e-3) -> Transform:
    """``u = max(eps2, RMS(p)) * g`` for each tensor: a step relative to the weights' own size.

    Adafactor's relative step (Shazeer & Stern 2018): with the learning rate ``rho`` after it,
    a step changes each weight matrix by about the fraction ``rho`` of its RMS; ``eps2`` is the
    floor for weights that start at zero. The RMS is that of the parameter before this step.
    """
    where = "scale_by_param_rms: "
    check_hyper("eps2", eps2, where=where)

    def init(params: Params) -> State:
        return {"step": 0}

    def update(g: Params, state: State, params: Params | None = None) -> tuple[Params, State]:
        if params is None:
            raise ValueError("scale_by_param_rms needs the parameters: call update(updates, state, params)")
        step = state["step"]
        e = resolve(eps2, step)
        for x, p in zip(g, params):
            x.mul_(torch.clamp(_rms(p), min=e))
        return g, {"step": step + 1}

    return Transform(init, update)


class _RelativeStep:
    """Adafactor's step size ``rho_t = min(lr, 1 / sqrt(t))`` (1-based ``t``; ``step`` is 0-based)."""

    def __init__(self, lr: Hyper):
        self.lr = lr

    def __call__(self, step: int) -> Any:
        lr = resolve(self.lr, step)
        cap = (step + 1) ** -0.5
        return min(lr, cap) if is_number(lr) else torch.clamp(lr, max=cap)


class _DecayRate:
    """``lr_t * weight_decay``: torch's Adafactor decays by the learning rate, not by ``rho_t``."""

    def __init__(self, lr: Hyper, weight_decay: Hyper):
        self.lr, self.weight_decay = lr, weight_decay

    def __call__(self, step: int) -> Any:
        return resolve(self.lr, step) * resolve(self.weight_decay, step)


@transform()
def adafactor(
    lr: Hyper = 1e-2,
    beta2_decay: Hyper = -0.8,
    eps1: float | None = None,
    eps2: Hyper = 1e-3,
    d: Hyper = 1.0,
    weight_decay: Hyper = 0.0,
) -> Transform:
    """Adafactor as ``torch.optim.Adafactor`` (Shazeer & Stern 2018, without first moment):

    ``U = g / sqrt(max(v_hat, eps1^2))`` (:func:`scale_by_factored_rms`),
    ``U = U / max(1, RMS(U) / d)`` (:func:`clip_by_block_rms`),
    ``p = p - max(eps2, RMS(p)) * rho_t * U - lr * weight_decay * p`` (:func:`scale_by_param_rms`)
    with ``rho_t = min(lr, 1 / sqrt(t))``: ``lr`` caps a relative step that decays as
    ``1 / sqrt(t)``, it is not the step itself.

    Conventions as torch's (which differ from the paper's and from other libraries'): the decay
    rate is ``1 - beta2_t = t^beta2_decay``; ``eps1`` (``None``: the dtype's machine epsilon) bounds
    the second moment from below as ``eps1^2`` and the row-mean normaliser as ``eps1``; ``eps2``
    bounds the weights' RMS; the weight decay is decoupled and scaled by ``lr``, not by ``rho_t``;
    there is no momentum (torch has none). torch's ``eps=(eps1, eps2)`` is split in two here.
    """
    where = "adafactor: "
    check_hyper("lr", lr, where=where)
    check_hyper("weight_decay", weight_decay, where=where)
    decay = _DecayRate(lr, weight_decay) if callable(lr) or callable(weight_decay) else lr * weight_decay
    return chain(
        scale_by_factored_rms(beta2_decay, eps1),
        clip_by_block_rms(d),
        scale_by_param_rms(eps2),
        scale_by_learning_rate(_RelativeStep(lr)),
        add_decayed_weights(decay, convention="decoupled"),
    )


@transform()
def _reference_adafactor(
    lr: Hyper = 1e-2,
    beta2_decay: float = -0.8,
    eps: tuple[float | None, float] = (None, 1e-3),
    d: float = 1.0,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> Transform:
    """:func:`adafactor` under ``torch.optim.Adafactor``'s names (``eps`` a pair)."""
    try:
        eps1, eps2 = eps
    except (TypeError, ValueError):
        raise ValueError(f"Adafactor: eps must be a pair (eps1 or None, eps2), got {eps!r}") from None
    t = adafactor(lr, beta2_decay, eps1, eps2, d, weight_decay)
    return chain(scale(-1.0), t) if maximize else t


class Adafactor(Optimizer):
    """``torch.optim.Adafactor``'s signature and defaults, computed by :func:`adafactor`'s chain.

    Args:
        params: parameters or param groups, as for any torch optimizer.
        lr: the cap of the relative step ``min(lr, 1 / sqrt(t))``.
        beta2_decay: the second moment's decay rate is ``1 - t^beta2_decay``.
        eps: ``(eps1, eps2)``: the floor of the second moment (``None``: the dtype's epsilon) and of
            the weights' RMS.
        d: the update's RMS is clipped to ``d``.
        weight_decay: decoupled: each step multiplies the weights by ``1 - lr * weight_decay``.
        maximize: ascend the objective instead (the gradient is negated first).
        nonfinite: see :class:`ravine.optim.Optimizer`.
        fused: see :class:`ravine.optim.Optimizer`; Adafactor is not elementwise, so only ``False``
            and ``None`` (which runs it unfused) accept it.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        beta2_decay: float = -0.8,
        eps: tuple[float | None, float] = (None, 1e-3),
        d: float = 1.0,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        nonfinite: str = "skip",
        fused: bool | str | None = False,
    ):
        t = _reference_adafactor(lr, beta2_decay, eps, d, weight_decay, maximize)
        super().__init__(params, t, nonfinite=nonfinite, fused=fused)
