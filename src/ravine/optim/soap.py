"""SOAP (Vyas et al. 2024, "SOAP: Improving and Stabilizing Shampoo using Adam"): Adam run in the
eigenbasis of Shampoo's preconditioner.

For a matrix parameter ``W`` (m x n) with gradient ``G``, SOAP keeps Shampoo's two statistics
``L = s L + (1 - s) G G^T`` (m x m) and ``R = s R + (1 - s) G^T G`` (n x n), their eigenvectors
``Q_L``, ``Q_R``, and runs Adam on the rotated gradient ``G' = Q_L^T G Q_R``::

    m  = b1 m + (1 - b1) G                       (first moment, in the original basis)
    v  = b2 v + (1 - b2) (Q_L^T G Q_R)^2         (second moment, in the eigenbasis)
    N  = Q_L ((Q_L^T m Q_R) / (sqrt(v) + eps)) Q_R^T
    u  = N * sqrt(1 - b2^t) / (1 - b1^t)

then ``L``, ``R`` are updated with ``G``, and every ``precondition_frequency`` steps the eigenbases
are refreshed by one step of power iteration and a QR decomposition (``Q <- qr(S Q)``, columns
ordered by the estimated eigenvalues ``diag(Q^T S Q)``, ``v`` permuted to follow them). A tensor of
any rank is treated the same way with one statistic per dimension (``tensordot`` over the others);
a dimension larger than ``max_precondition_dim`` and, unless ``precondition_1d``, a 1-D tensor
(biases, norm weights) are not rotated, so SOAP there is Adam (with SOAP's bias correction).

As the paper's code (and ``pytorch_optimizer.SOAP``, the reference of the tests), the first step
only builds the statistics from the first gradient and computes the eigenbases by ``eigh`` (it
moves no parameter); Adam's steps start at the second, with ``t`` counting them. Where ravine
differs from that code, on purpose:

- weight decay is torch AdamW's (``p = p - lr (u + weight_decay p)``, a chain's
  ``add_decayed_weights``, from the first call on); the reference decays after the step,
  ``p = (p - lr u)(1 - lr weight_decay)``, and not on its first call: a difference of order
  ``lr * weight_decay`` on the first step and ``lr^2 * weight_decay * |u|`` per step after it;
- the QR refresh runs in the parameter's dtype when it is float32 or wider (the reference always
  casts to float32, which would cost a float64 run its precision); below float32 (bf16, fp16) it
  runs in float32, as the reference.

Parity with ``pytorch_optimizer.SOAP`` (weight decay 0, tested over 60 steps on tensors of rank 0
to 3): parameters agree to 1e-12 in float64 before the first refresh and to 1e-5 with refreshes
every 5 steps (float32 and float64). That holds where the statistics have distinct eigenvalues;
where they do not (the rank-deficient statistics of a few small batches), an eigenbasis is not
unique, and any two implementations drift apart from rounding-level differences. Not fused
(matrix products and eigendecompositions are not elementwise), and not in the 2D world (a batch of
points stacked as rows would be preconditioned as one matrix, mixing the rows).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._constraints import check_hyper
from .adapter import Optimizer
from .base import Hyper, Params, State, Transform, chain, resolve, transform
from .transforms import add_decayed_weights, scale_by_learning_rate

__all__ = ["scale_by_soap", "soap", "SOAP"]


def _project(x: Tensor, qs: list[Tensor | None], back: bool = False) -> Tensor:
    """Rotate each dimension of ``x`` by its basis (``Q^T x`` forward, ``Q x`` back); a ``None``
    basis leaves its dimension as it is. Each contraction moves the dimension to the end, so after
    all of them the dimensions are in their original order."""
    for q in qs:
        if q is None:
            x = x.permute(*range(1, x.dim()), 0)
        else:
            x = torch.tensordot(x, q, dims=[[0], [1 if back else 0]])
    return x


def _statistics(g: Tensor, precondition_1d: bool, max_dim: int) -> list[Tensor | None]:
    """Zero statistics, one (size x size) matrix per dimension that is preconditioned, else ``None``."""
    if g.dim() == 1:
        ok = precondition_1d and g.shape[0] <= max_dim
        return [torch.zeros(g.shape[0], g.shape[0], dtype=g.dtype, device=g.device) if ok else None]
    return [torch.zeros(n, n, dtype=g.dtype, device=g.device) if n <= max_dim else None for n in g.shape]


def _accumulate(gg: list[Tensor | None], g: Tensor, beta: float | Tensor) -> None:
    """``S_i = beta S_i + (1 - beta) G_(i) G_(i)^T`` for each preconditioned dimension ``i``."""
    for i, s in enumerate(gg):
        if s is None:
            continue
        if g.dim() == 1:
            outer = g.unsqueeze(1) @ g.unsqueeze(0)
        else:
            others = [*itertools.chain(range(i), range(i + 1, g.dim()))]
            outer = torch.tensordot(g, g, dims=[others, others])
        s.lerp_(outer.to(s.dtype), 1 - beta)


def _eigenbases(gg: list[Tensor | None]) -> list[Tensor | None]:
    """Eigenvectors of each statistic, largest eigenvalue first (``eigh`` of ``S + 1e-30 I``)."""
    out: list[Tensor | None] = []
    for s in gg:
        if s is None:
            out.append(None)
            continue
        eye = torch.eye(s.shape[0], dtype=s.dtype, device=s.device)
        try:
            _, q = torch.linalg.eigh(s + 1e-30 * eye)
        except RuntimeError:  # eigh did not converge in the dtype: retry in float64
            _, q = torch.linalg.eigh(s.double() + 1e-30 * eye.double())
            q = q.to(s.dtype)
        out.append(torch.flip(q, dims=[1]))
    return out


def _refresh(gg: list[Tensor | None], qs: list[Tensor | None], v: Tensor) -> tuple[list[Tensor | None], Tensor]:
    """One power-iteration step and a QR per dimension; ``v`` is permuted to the new column order."""
    out: list[Tensor | None] = []
    for i, (s, q) in enumerate(zip(gg, qs)):
        if s is None:
            out.append(None)
            continue
        sq = s @ q
        order = torch.argsort((q * sq).sum(dim=0), descending=True)
        v = v.index_select(i, order)
        power = sq.index_select(1, order)
        work = torch.promote_types(power.dtype, torch.float32)
        qr, _ = torch.linalg.qr(power.to(work))
        out.append(qr.to(power.dtype))
    return out, v


@transform(static=("precondition_1d", "max_precondition_dim"))
def scale_by_soap(
    b1: Hyper = 0.95,
    b2: Hyper = 0.95,
    shampoo_beta: float | None = None,
    eps: Hyper = 1e-8,
    precondition_frequency: int = 10,
    max_precondition_dim: int = 10000,
    precondition_1d: bool = False,
    bias_correction: bool = True,
) -> Transform:
    """SOAP's direction before the learning rate: Adam in the eigenbasis of Shampoo's statistics.

    The update rule is in the module docstring; ``u = 0`` at the first call (it only builds the
    statistics and eigenbases). State per parameter: ``exp_avg``, ``exp_avg_sq`` (in the
    eigenbasis), ``GG`` (the statistics, one matrix or ``None`` per dimension) and ``Q`` (their
    eigenbases), the reference code's names.

    Args:
        b1: decay rate of the first moment.
        b2: decay rate of the second moment (in the eigenbasis).
        shampoo_beta: decay rate of the statistics ``GG``; ``None``: ``b2``.
        eps: added to the denominator.
        precondition_frequency: steps between refreshes of the eigenbases.
        max_precondition_dim: dimensions larger than this are not rotated.
        precondition_1d: rotate 1-D tensors too (a full matrix statistic for a bias).
        bias_correction: scale by ``sqrt(1 - b2^t) / (1 - b1^t)``.

    Returns:
        The transform.
    """
    where = "scale_by_soap: "
    check_hyper("b1", b1, where=where)
    check_hyper("b2", b2, where=where)
    if shampoo_beta is not None:
        check_hyper("shampoo_beta", shampoo_beta, where=where)
    check_hyper("eps", eps, where=where)
    check_hyper("precondition_frequency", precondition_frequency, where=where)
    check_hyper("max_precondition_dim", max_precondition_dim, where=where)

    def init(params: Params) -> State:
        return {
            "step": 0,
            "exp_avg": [torch.zeros_like(p) for p in params],
            "exp_avg_sq": [torch.zeros_like(p) for p in params],
            "GG": [_statistics(p, precondition_1d, max_precondition_dim) for p in params],
            "Q": [None for _ in params],
        }

    def update(g: Params, state: State, params: Params | None = None) -> tuple[Params, State]:
        step = state["step"]
        beta1, beta2, e = resolve(b1, step), resolve(b2, step), resolve(eps, step)
        sb = beta2 if shampoo_beta is None else shampoo_beta
        ms, vs, ggs, qss = state["exp_avg"], list(state["exp_avg_sq"]), state["GG"], list(state["Q"])
        out: list[Tensor] = []
        for i, gi in enumerate(g):
            if step == 0 or qss[i] is None:
                _accumulate(ggs[i], gi, sb)
                qss[i] = _eigenbases(ggs[i])
                out.append(torch.zeros_like(gi))
                continue
            ms[i].lerp_(gi, 1 - beta1)
            vs[i].lerp_(_project(gi, qss[i]).square(), 1 - beta2)
            denom = vs[i].sqrt().add_(e)
            direction = _project(_project(ms[i], qss[i]) / denom, qss[i], back=True)
            if bias_correction:
                direction.mul_((1 - beta2**step) ** 0.5 / (1 - beta1**step))
            out.append(direction)
            _accumulate(ggs[i], gi, sb)
            if step % precondition_frequency == 0:
                qss[i], vs[i] = _refresh(ggs[i], qss[i], vs[i])
        return out, {"step": step + 1, "exp_avg": ms, "exp_avg_sq": vs, "GG": ggs, "Q": qss}

    return Transform(init, update)


@transform(static=("precondition_1d", "max_precondition_dim"))
def soap(
    lr: Hyper = 3e-3,
    b1: Hyper = 0.95,
    b2: Hyper = 0.95,
    shampoo_beta: float | None = None,
    eps: Hyper = 1e-8,
    weight_decay: Hyper = 0.01,
    precondition_frequency: int = 10,
    max_precondition_dim: int = 10000,
    precondition_1d: bool = False,
) -> Transform:
    """SOAP (Vyas et al. 2024): ``scale_by_soap -> add_decayed_weights -> scale_by_learning_rate``.

    Defaults are the paper's code's (``lr=3e-3``, ``betas=(0.95, 0.95)``, ``weight_decay=0.01``,
    ``precondition_frequency=10``); the differences from it (weight decay placement, QR dtype) are
    in the module docstring.

    Args:
        lr: learning rate.
        b1: decay rate of the first moment.
        b2: decay rate of the second moment.
        shampoo_beta: decay rate of the preconditioner statistics; ``None``: ``b2``.
        eps: added to the denominator.
        weight_decay: decoupled weight decay (torch AdamW's convention).
        precondition_frequency: steps between refreshes of the eigenbases.
        max_precondition_dim: dimensions larger than this are not rotated.
        precondition_1d: rotate 1-D tensors too.

    Returns:
        The chain.
    """
    return chain(
        scale_by_soap(b1, b2, shampoo_beta, eps, precondition_frequency, max_precondition_dim, precondition_1d),
        add_decayed_weights(weight_decay),
        scale_by_learning_rate(lr),
    )


class SOAP(Optimizer):
    """SOAP as a torch optimizer: ``pytorch_optimizer.SOAP``'s signature and defaults (param groups
    set ``b1``/``b2``, the chain's names, rather than ``betas``), computed by :func:`soap`'s chain.

    Args:
        params: parameters or param-group dicts.
        lr: learning rate.
        betas: ``(b1, b2)``.
        shampoo_beta: decay rate of the preconditioner statistics; ``None``: ``b2``.
        weight_decay: decoupled weight decay (torch AdamW's convention, see the module docstring).
        precondition_frequency: steps between refreshes of the eigenbases.
        max_precondition_dim: dimensions larger than this are not rotated.
        precondition_1d: rotate 1-D tensors too.
        eps: added to the denominator.
        nonfinite: as :class:`ravine.optim.Optimizer`.
        fused: as :class:`ravine.optim.Optimizer` (``True`` raises: the chain is not elementwise).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.95, 0.95),
        shampoo_beta: float | None = None,
        weight_decay: float = 1e-2,
        precondition_frequency: int = 10,
        max_precondition_dim: int = 10000,
        precondition_1d: bool = False,
        eps: float = 1e-8,
        *,
        nonfinite: str = "skip",
        fused: bool | str | None = False,
    ):
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"SOAP: betas must be a pair (beta1, beta2), got {betas!r}") from None
        t = soap(
            lr, b1, b2, shampoo_beta, eps, weight_decay, precondition_frequency, max_precondition_dim, precondition_1d
        )
        super().__init__(params, t, nonfinite=nonfinite, fused=fused)
