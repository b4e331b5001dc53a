"""Muon (Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks"; Liu et al.
2025, "Muon is Scalable for LLM Training"): momentum, then each weight matrix's update replaced by
the nearest semi-orthogonal matrix, computed by a Newton-Schulz iteration.

What is here: the transforms :func:`orthogonalize` (the Newton-Schulz step) and
:func:`scale_by_shape` (the learning-rate adjustment by the matrix's shape); the named optimizer
:func:`muon`; :func:`muon_with_adamw`, one chain for a whole model (Muon for the hidden matrices,
AdamW for the rest, chosen per param group by ``use_muon``); :func:`muon_param_groups`, which makes
those groups from a model; and the torch-style classes :class:`Muon` (``torch.optim.Muon``'s
signature) and :class:`MuonWithAdamW`.

Muon is not elementwise (it multiplies matrices): its two per-matrix primitives declare
``fusable="matrix"``, so on the fused path (``ravine.optim.fused.matrix``) the momentum, weight
decay and learning rate run on the flat buffers and the Newton-Schulz iteration on each
parameter's 2D view of them: eagerly with ``fused="flat"``/``None`` (the unfused numbers, bit for
bit), compiled and batched per shape with ``fused=True`` (bfloat16 rounding apart); the AdamW groups
of :func:`muon_with_adamw` run their own fused path.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._validation import Options, check
from ._constraints import CONSTRAINTS, check_hyper, check_option
from .adapter import Optimizer
from .alias import _betas, adamw
from .base import Hyper, Params, State, Transform, chain, is_number, transform
from .transforms import add_decayed_weights, scale_by_learning_rate, trace

__all__ = [
    "NS_COEFFICIENTS",
    "newton_schulz",
    "shape_ratio",
    "orthogonalize",
    "scale_by_shape",
    "muon",
    "muon_with_adamw",
    "muon_param_groups",
    "Muon",
    "MuonWithAdamW",
]

NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)
"""Keller Jordan's quintic coefficients ``(a, b, c)``: a large slope ``a`` at zero, so that small
singular values grow fast; after five iterations the singular values lie roughly in ``[0.7, 1.2]``
instead of at 1 (the iteration does not converge, which Jordan found does not hurt training)."""

_NS_DTYPES = Options((torch.bfloat16, torch.float16, torch.float32, torch.float64, None))


def _check_matrix(x: Tensor, index: int, where: str) -> None:
    if x.dim() != 2:
        raise ValueError(
            f"{where}Muon orthogonalizes 2D weight matrices only, got a tensor of shape {tuple(x.shape)} "
            f"(parameter {index} of the group); optimize biases, norms, embeddings and the output head "
            "with AdamW (ravine.optim.muon_param_groups(model) splits a model that way)"
        )


def newton_schulz(
    x: Tensor,
    steps: int = 5,
    coefficients: Sequence[float] = NS_COEFFICIENTS,
    eps: float = 1e-7,
    dtype: torch.dtype | None = torch.bfloat16,
) -> Tensor:
    """The Newton-Schulz iteration on one matrix: approximately ``U V^T`` for ``x = U S V^T``.

    ``X = x / max(||x||_F, eps)`` (so every singular value is at most 1), transposed so that it is
    wide; then ``steps`` times ``A = X X^T``, ``B = b A + c A A``, ``X = a X + B X``: each step maps a
    singular value ``s`` to ``a s + b s^3 + c s^5``. Computed in ``dtype`` (``None``: ``x``'s own),
    returned in that dtype.

    Args:
        x: a 2D tensor.
        steps: the number of iterations.
        coefficients: ``(a, b, c)``; ``(1.5, -0.5, 0)`` is the classic cubic iteration, which
            converges to ``U V^T`` exactly.
        eps: lower bound of the Frobenius norm that ``x`` is divided by.
        dtype: the dtype of the computation (bfloat16 as torch and the reference code).

    Returns:
        The orthogonalized matrix, of ``x``'s shape.
    """
    a, b, c = coefficients
    y = x.to(dtype) if dtype is not None else x.clone()
    tall = x.size(0) > x.size(1)
    if tall:
        y = y.T
    y = y.div_(y.norm().clamp(min=eps))
    for _ in range(steps):
        gram = y @ y.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        y = torch.addmm(y, poly, y, beta=a)
    return y.T if tall else y


@transform(static=("ns_steps", "ns_coefficients", "ns_dtype"), fusable="matrix")
def orthogonalize(
    ns_steps: int = 5,
    ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    eps: float = 1e-7,
    ns_dtype: torch.dtype | None = torch.bfloat16,
) -> Transform:
    """``u = NS(g)``: each 2D update replaced by its Newton-Schulz orthogonalization (see
    :func:`newton_schulz`), ``U S' V^T`` with ``S'`` near the identity for ``g = U S V^T``.

    Every direction of the update gets the same size whatever the gradient's spectrum: the rare
    directions that SGD and Adam barely move along are amplified. A ``ValueError`` for any update
    that is not a matrix. The result is cast back to the update's dtype (torch adds the bfloat16
    result to the parameter directly: the same numbers). Not elementwise: on the fused path it
    runs on each parameter's view of the flat buffers (``fusable="matrix"``), compiled with
    ``fused=True`` as one batched iteration over the stacked ``(k, m, n)`` matrices of each shape.
    """
    where = "orthogonalize: "
    check("ns_steps", ns_steps, CONSTRAINTS["ns_steps"], where=where)
    try:
        coefficients = tuple(float(v) for v in ns_coefficients)
    except (TypeError, ValueError):
        coefficients = ()
    if len(coefficients) != 3:
        raise ValueError(f"{where}ns_coefficients must be three numbers (a, b, c), got {ns_coefficients!r}")
    check_hyper("eps", eps, where=where)
    check("ns_dtype", ns_dtype, _NS_DTYPES, where=where)

    def init(params: Params) -> State:
        return {"step": 0}

    def update(g: Params, state: State, params: Params | None = None) -> tuple[Params, State]:
        for i, x in enumerate(g):
            _check_matrix(x, i, where)
        out = [newton_schulz(x, ns_steps, coefficients, eps, ns_dtype).to(x.dtype) for x in g]
        return out, {"step": state["step"] + 1}

    return Transform(init, update)


def shape_ratio(shape: Sequence[int], adjust_lr: str | None) -> float:
    """The factor :func:`scale_by_shape` multiplies a ``(A, B)`` matrix's update by.

    Args:
        shape: the matrix's shape ``(A, B)`` (rows = fan-out of a ``nn.Linear`` weight).
        adjust_lr: ``"original"``: ``sqrt(max(1, A / B))`` (Keller Jordan's);
            ``"match_rms_adamw"``: ``0.2 * sqrt(max(A, B))`` (Moonlight's); ``None``: 1.

    Returns:
        The factor.
    """
    rows, cols = shape[0], shape[1]
    if adjust_lr == "original":
        return math.sqrt(max(1.0, rows / cols))
    if adjust_lr == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return 1.0


@transform(static=("adjust_lr",), fusable="matrix", compilable=False)
def scale_by_shape(adjust_lr: str | None = "original") -> Transform:
    """``u = ratio(A, B) * g`` for each ``(A, B)`` matrix: the learning-rate adjustment of Muon.

    An orthogonalized ``(A, B)`` matrix has RMS ``1 / sqrt(max(A, B))``, so the same learning rate
    moves matrices of different shapes by different amounts. ``"original"`` (Keller Jordan):
    ``sqrt(max(1, A / B))``, tall matrices get a larger step. ``"match_rms_adamw"`` (Liu et al.
    2025, Moonlight): ``0.2 * sqrt(max(A, B))``, the update's RMS becomes 0.2, about AdamW's, so
    AdamW's learning rate and weight decay can be reused. ``None``: no adjustment. It depends on
    each parameter's shape, so the fused path runs it on each parameter's view (``fusable="matrix"``,
    eagerly: one multiplication per matrix).
    """
    check_option("adjust_lr", adjust_lr, where="scale_by_shape: ")

    def init(params: Params) -> State:
        return {"step": 0}

    def update(g: Params, state: State, params: Params | None = None) -> tuple[Params, State]:
        for x in g:
            if x.dim() >= 2:
                x.mul_(shape_ratio(x.shape, adjust_lr))
        return g, {"step": state["step"] + 1}

    return Transform(init, update)


@transform(static=("nesterov", "momentum_form", "ns_steps", "ns_coefficients", "adjust_lr", "ns_dtype"))
def muon(
    lr: Hyper = 1e-3,
    momentum: Hyper = 0.95,
    nesterov: bool = True,
    ns_steps: int = 5,
    ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    weight_decay: Hyper = 0.1,
    adjust_lr: str | None = "original",
    eps: float = 1e-7,
    momentum_form: str = "ema",
    ns_dtype: torch.dtype | None = torch.bfloat16,
) -> Transform:
    """Muon: ``p = p - lr * ratio(A, B) * NS(b) - lr * weight_decay * p`` for each ``(A, B)`` matrix.

    ``b`` is the momentum buffer of the gradients; with ``momentum_form="ema"`` (default),
    ``B = momentum * B + (1 - momentum) * g`` and ``b = (1 - momentum) * g + momentum * B`` with
    Nesterov (``b = B`` without): what ``torch.optim.Muon`` of torch 2.13 computes and what the
    reference code (Keller Jordan's ``muon.py``) does with ``lerp``. ``momentum_form="heavy_ball"``:
    ``B = momentum * B + g`` and ``b = g + momentum * B`` (the formula in torch's docstring and in
    the reference code's first version). The two differ only by the factor ``1 / (1 - momentum)``
    of every ``b``, which the Newton-Schulz normalisation divides out: the updates are the same
    except where ``||b||_F`` is below ``eps`` (and for bfloat16 rounding). ``momentum=0``: ``b = g``, no
    buffer (as torch's, with or without Nesterov).

    ``NS`` is :func:`orthogonalize` (``ns_steps`` quintic iterations with ``ns_coefficients``, in
    ``ns_dtype``, bfloat16 as torch; ``None``: the parameter's dtype), ``ratio`` is
    :func:`scale_by_shape` (``adjust_lr``). The weight decay is decoupled and uses the *unadjusted*
    learning rate, as torch's. Differences from ``torch.optim.Muon``: ``adjust_lr=None`` means no
    adjustment here (torch's ``adjust_lr_fn=None`` means ``"original"``, this function's default);
    :class:`Muon` keeps torch's meaning. For 2D parameters only: a ``ValueError`` names any other
    shape (use :func:`muon_with_adamw` and :func:`muon_param_groups` for a whole model).
    """
    where = "muon: "
    check_hyper("momentum", momentum, where=where)
    check_option("momentum_form", momentum_form, where=where)
    check_option("adjust_lr", adjust_lr, where=where)
    check("ns_steps", ns_steps, CONSTRAINTS["ns_steps"], where=where)
    # momentum 0: the buffer is the gradient, with or without Nesterov (as torch's)
    no_momentum = is_number(momentum) and momentum == 0
    return chain(
        *([] if no_momentum else [trace(momentum, form=momentum_form, nesterov=nesterov)]),
        orthogonalize(ns_steps, ns_coefficients, eps, ns_dtype),
        scale_by_shape(adjust_lr),
        add_decayed_weights(weight_decay),
        scale_by_learning_rate(lr),
    )


@transform(static=("use_muon", "nesterov", "momentum_form", "ns_steps", "ns_coefficients", "adjust_lr", "ns_dtype"))
def muon_with_adamw(
    lr: Hyper = 0.02,
    momentum: Hyper = 0.95,
    nesterov: bool = True,
    ns_steps: int = 5,
    ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    weight_decay: Hyper = 0.0,
    adjust_lr: str | None = "original",
    b1: Hyper = 0.9,
    b2: Hyper = 0.95,
    eps: Hyper = 1e-10,
    use_muon: bool = True,
    momentum_form: str = "ema",
    ns_dtype: torch.dtype | None = torch.bfloat16,
) -> Transform:
    """Muon for the param groups with ``use_muon=True``, AdamW for the others: one chain, one optimizer.

    The reference code's ``MuonWithAuxAdam``: a group's ``use_muon`` picks its chain, and its
    ``lr``/``weight_decay`` are those of that chain (Muon's learning rate is typically ~0.02 with
    ``adjust_lr="original"``, AdamW's ~3e-4). A Muon group runs :func:`muon` (``momentum``,
    ``nesterov``, ``ns_*``, ``adjust_lr``, ``momentum_form``), an AdamW group
    :func:`~ravine.optim.adamw` with ``b1``, ``b2``, ``eps`` (the reference code's defaults 0.9,
    0.95, 1e-10) in torch's decay convention. Build the groups with :func:`muon_param_groups`.
    """
    check_hyper("lr", lr, where="muon_with_adamw: ")
    if use_muon:
        return muon(
            lr, momentum, nesterov, ns_steps, ns_coefficients, weight_decay, adjust_lr, 1e-7, momentum_form, ns_dtype
        )
    return adamw(lr, b1, b2, eps, weight_decay)


def _output_head(model: nn.Module) -> nn.Module | None:
    """The last ``nn.Linear`` registered in the model: its output layer by convention."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def muon_param_groups(
    model: nn.Module,
    *,
    lr: float = 0.02,
    weight_decay: float = 0.0,
    adamw_lr: float = 3e-4,
    adamw_weight_decay: float = 0.0,
    head: str | nn.Module | None = None,
) -> list[dict[str, Any]]:
    """Split a model's parameters into a Muon group (hidden weight matrices) and an AdamW group.

    Muon is for the 2D weights of hidden layers. To AdamW go: every parameter that is not 2D
    (biases, norm weights, convolution kernels), the weights of embedding modules
    (``nn.Embedding``/``nn.EmbeddingBag``, also when tied to the output layer), and the output
    head: ``head`` (a submodule or its name in ``model.named_modules()``), by default the last
    ``nn.Linear`` registered in the model. Each parameter appears once (tied weights included), with
    its name in ``param_names``.

    Args:
        model: the network.
        lr: the Muon group's learning rate.
        weight_decay: the Muon group's weight decay.
        adamw_lr: the AdamW group's learning rate.
        adamw_weight_decay: the AdamW group's weight decay.
        head: the output layer (module or name); ``None``: the last ``nn.Linear``.

    Returns:
        Param groups with ``use_muon`` set (empty groups left out), for :class:`MuonWithAdamW` or
        ``Optimizer(groups, muon_with_adamw())``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"muon_param_groups: model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(head, str):
        modules = dict(model.named_modules())
        if head not in modules:
            raise ValueError(
                f"muon_param_groups: head {head!r} is not a submodule of the model; its modules with "
                f"parameters are {[n for n, m in modules.items() if n and list(m.parameters(recurse=False))]}"
            )
        head = modules[head]
    elif head is None:
        head = _output_head(model)
    elif not isinstance(head, nn.Module):
        raise TypeError(f"muon_param_groups: head must be a module, its name or None, got {type(head).__name__}")
    to_adamw: set[int] = set()
    for m in model.modules():
        if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) or m is head:
            to_adamw.update(id(p) for p in m.parameters(recurse=False))
    hidden: tuple[list, list] = ([], [])
    other: tuple[list, list] = ([], [])
    for name, p in model.named_parameters():  # tied parameters are listed once
        if not p.requires_grad:
            continue
        params, names = hidden if p.dim() == 2 and id(p) not in to_adamw else other
        params.append(p)
        names.append(name)
    groups = []
    if hidden[0]:
        groups.append(
            {"params": hidden[0], "param_names": hidden[1], "use_muon": True, "lr": lr, "weight_decay": weight_decay}
        )
    if other[0]:
        groups.append(
            {
                "params": other[0],
                "param_names": other[1],
                "use_muon": False,
                "lr": adamw_lr,
                "weight_decay": adamw_weight_decay,
            }
        )
    return groups


def _check_groups(opt: Optimizer, where: str) -> None:
    for gi, group in enumerate(opt.param_groups):
        if not group.get("use_muon", True):
            continue
        for pi, p in enumerate(group["params"]):
            if p.dim() != 2:
                raise ValueError(
                    f"{where}Muon takes 2D parameters only, got shape {tuple(p.shape)} for "
                    f"{opt._param_name(gi, pi)}; put it in an AdamW group "
                    "(ravine.optim.muon_param_groups(model) splits a model that way)"
                )


@transform(static=("nesterov", "ns_steps", "ns_coefficients", "adjust_lr_fn"))
def _reference_muon(
    lr: Hyper = 1e-3,
    weight_decay: float = 0.1,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    eps: float = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
) -> Transform:
    """:func:`muon` under ``torch.optim.Muon``'s names, where ``adjust_lr_fn=None`` is ``"original"``."""
    check_option("adjust_lr", adjust_lr_fn, where="Muon: adjust_lr_fn: ")
    return muon(lr, momentum, nesterov, ns_steps, ns_coefficients, weight_decay, adjust_lr_fn or "original", eps)


class Muon(Optimizer):
    """``torch.optim.Muon``'s signature and defaults, computed by :func:`muon`'s chain.

    The state is torch's (``momentum_buffer``), so a ``torch.optim.Muon`` checkpoint loads. Every
    parameter must be 2D (checked here, as torch does, and in each added group).

    Args:
        params: 2D parameters or param groups, as for any torch optimizer.
        lr: learning rate.
        weight_decay: decoupled: each step multiplies the weights by ``1 - lr * weight_decay``.
        momentum: the momentum coefficient.
        nesterov: Nesterov momentum.
        ns_coefficients: the Newton-Schulz coefficients ``(a, b, c)``.
        eps: lower bound of the norm the update is divided by before the iteration.
        ns_steps: the number of Newton-Schulz iterations.
        adjust_lr_fn: ``None`` or ``"original"`` (Keller Jordan's ``sqrt(max(1, A/B))``),
            ``"match_rms_adamw"`` (``0.2 sqrt(max(A, B))``).
        nonfinite: see :class:`ravine.optim.Optimizer`.
        fused: see :class:`ravine.optim.Optimizer`; the Newton-Schulz step runs on each matrix's
            view of the flat buffers (compiled per shape with ``True``), see :func:`orthogonalize`.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
        *,
        nonfinite: str = "skip",
        fused: bool | str | None = False,
    ):
        t = _reference_muon(lr, weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn)
        super().__init__(params, t, nonfinite=nonfinite, fused=fused)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group, as ``torch.optim.Optimizer.add_param_group``; its parameters must be 2D."""
        super().add_param_group(param_group)
        _check_groups(self, "Muon: ")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state saved by this class or by ``torch.optim.Muon``.

        torch's Muon keeps no step count: its checkpoint loads as if each parameter had taken one
        step (its momentum buffer is kept; Muon's update does not depend on the count, only a
        ravine schedule given for a hyperparameter would see it restart there).
        """
        state = {
            k: ({**s, "step": 1} if "momentum_buffer" in s and "step" not in s else s)
            for k, s in state_dict["state"].items()
        }
        super().load_state_dict({**state_dict, "state": state})


class MuonWithAdamW(Optimizer):
    """Muon for the hidden matrices and AdamW for everything else, in one optimizer (the reference
    code's ``MuonWithAuxAdam``), computed by :func:`muon_with_adamw`'s chain.

    ``MuonWithAdamW(model)`` splits the model with :func:`muon_param_groups`; or pass param groups
    that each set ``use_muon``. The Muon groups must hold 2D parameters only.

    Args:
        params: a ``torch.nn.Module`` (split by :func:`muon_param_groups` with ``lr``,
            ``weight_decay``, ``adamw_lr``, ``adamw_weight_decay``) or param groups with ``use_muon``.
        lr: the Muon groups' learning rate.
        weight_decay: the Muon groups' weight decay.
        adamw_lr: the AdamW group's learning rate (when ``params`` is a module).
        adamw_weight_decay: the AdamW group's weight decay (when ``params`` is a module).
        momentum: Muon's momentum coefficient.
        betas: AdamW's ``(b1, b2)``.
        eps: AdamW's epsilon.
        adjust_lr: Muon's learning-rate adjustment by shape (see :func:`scale_by_shape`).
        nonfinite: see :class:`ravine.optim.Optimizer`.
        fused: see :class:`ravine.optim.Optimizer`; the Muon groups run as :class:`Muon` does,
            the AdamW group on AdamW's fused path.
    """

    def __init__(
        self,
        params: nn.Module | Iterable[Any],
        lr: float = 0.02,
        weight_decay: float = 0.0,
        adamw_lr: float = 3e-4,
        adamw_weight_decay: float = 0.0,
        momentum: float = 0.95,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-10,
        adjust_lr: str | None = "original",
        *,
        nonfinite: str = "skip",
        fused: bool | str | None = False,
    ):
        if isinstance(params, nn.Module):
            params = muon_param_groups(
                params, lr=lr, weight_decay=weight_decay, adamw_lr=adamw_lr, adamw_weight_decay=adamw_weight_decay
            )
        b1, b2 = _betas(betas, "MuonWithAdamW: ")
        t = muon_with_adamw(lr, momentum, True, 5, NS_COEFFICIENTS, weight_decay, adjust_lr, b1, b2, eps)
        super().__init__(params, t, nonfinite=nonfinite, fused=fused)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group (``use_muon`` picks Muon or AdamW); a Muon group's parameters must be 2D."""
        super().add_param_group(param_group)
        _check_groups(self, "MuonWithAdamW: ")
