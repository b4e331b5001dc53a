"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"): the sign of an
interpolated momentum. The transform :func:`scale_by_lion`, the named optimizer :func:`lion` and the
torch-style class :class:`Lion` (pytorch-optimizer's ``Lion`` signature).

Lion keeps one state tensor (Adam keeps two) and every coordinate of its update is ``+-1`` before
the learning rate, so its updates have a larger norm than Adam's: the paper uses a learning rate
3-10x smaller than AdamW's and a weight decay 3-10x larger (the product ``lr * weight_decay`` is
what shrinks the weights).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._constraints import check_hyper
from .adapter import Optimizer
from .alias import _betas
from .base import Hyper, Params, State, Transform, chain, is_number, lerp_, resolve, transform, zeros_like
from .transforms import add_decayed_weights, scale, scale_by_learning_rate

__all__ = ["scale_by_lion", "lion", "Lion"]


def _lerp(xs: Params, ys: Params, w: float | Tensor) -> Params:
    """``x + w * (y - x)`` into new tensors."""
    if is_number(w):
        return list(torch._foreach_lerp(xs, ys, w))
    return [x.lerp(y, w.to(x.dtype)) for x, y in zip(xs, ys)]


@transform(fusable=True)
def scale_by_lion(b1: Hyper = 0.9, b2: Hyper = 0.99) -> Transform:
    """Lion's direction, before the learning rate.

    ``c = b1 * m + (1 - b1) * g`` (the interpolation that is signed),
    ``u = sign(c)``, then ``m = b2 * m + (1 - b2) * g`` (the momentum that is kept: a longer memory,
    ``b2 > b1``). ``m`` starts at 0. Elementwise, so it runs on the fused path. State: ``exp_avg``
    (pytorch-optimizer's name; optax calls it ``mu``).
    """
    where = "scale_by_lion: "
    check_hyper("b1", b1, where=where)
    check_hyper("b2", b2, where=where)

    def init(params: Params) -> State:
        return {"step": 0, "exp_avg": zeros_like(params)}

    def update(g: Params, state: State, params: Params | None = None) -> tuple[Params, State]:
        step = state["step"]
        beta1, beta2 = resolve(b1, step), resolve(b2, step)
        m = state["exp_avg"]
        if is_number(beta1) and is_number(beta2) and beta2 > 0:
            # without a temporary the size of the parameters: m is updated first, then
            # c = b1 m_old + (1 - b1) g = (b1 / b2) m_new + (1 - b1 / b2) g, written into g
            lerp_(m, g, 1 - beta2)
            torch._foreach_lerp_(g, m, beta1 / beta2)
            torch._foreach_sign_(g)
            return g, {"step": step + 1, "exp_avg": m}
        c = _lerp(m, g, 1 - beta1)
        torch._foreach_sign_(c)
        lerp_(m, g, 1 - beta2)
        return c, {"step": step + 1, "exp_avg": m}

    return Transform(init, update)


@transform()
def lion(lr: Hyper = 1e-4, b1: Hyper = 0.9, b2: Hyper = 0.99, weight_decay: Hyper = 0.0) -> Transform:
    """Lion (Chen et al. 2023): ``p = p - lr * (sign(b1 m + (1 - b1) g) + weight_decay * p)``,
    ``m = b2 m + (1 - b2) g``.

    A chain of :func:`scale_by_lion`, :func:`~ravine.optim.add_decayed_weights` (decoupled decay,
    scaled by the learning rate as in the paper and in pytorch-optimizer's ``Lion``) and the
    learning rate. Defaults as the paper's and pytorch-optimizer's (lr 1e-4, betas 0.9 and 0.99).
    """
    return chain(scale_by_lion(b1, b2), add_decayed_weights(weight_decay), scale_by_learning_rate(lr))


@transform()
def _reference_lion(
    lr: Hyper = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0, maximize: bool = False
) -> Transform:
    """:func:`lion` under pytorch-optimizer's names (``betas``), so param groups may set them."""
    where = "Lion: "
    check_hyper("lr", lr, where=where)
    b1, b2 = _betas(betas, where)
    t = lion(lr, b1, b2, weight_decay)
    return chain(scale(-1.0), t) if maximize else t


class Lion(Optimizer):
    """pytorch-optimizer's ``Lion`` signature and defaults (decoupled weight decay scaled by the
    learning rate), computed by :func:`lion`'s chain.

    Args:
        params: parameters or param groups, as for any torch optimizer.
        lr: learning rate.
        betas: ``(b1, b2)``: the interpolation that is signed, the momentum that is kept.
        weight_decay: decoupled weight decay: each step multiplies the weights by ``1 - lr * weight_decay``.
        maximize: ascend the objective instead (the gradient is negated first).
        nonfinite: see :class:`ravine.optim.Optimizer`.
        fused: see :class:`ravine.optim.Optimizer` (Lion is elementwise: every mode runs it).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        nonfinite: str = "skip",
        fused: bool | str | None = False,
    ):
        t = _reference_lion(lr, betas, weight_decay, maximize)
        super().__init__(params, t, nonfinite=nonfinite, fused=fused)
