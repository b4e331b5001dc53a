"""Named optimizers, each a one-line chain of the primitives in :mod:`ravine.optim.transforms`.

Two families:

- the chapter's optimizers (``gd``, ``sgd``, ``momentum``, ``nesterov``, ``rmsprop``, ``adam``,
  ``adamw``, ``adam_l2``, ``adagrad``): learning rate first, the chapter's names and forms by
  default (EMA momentum, RMSProp with beta=0.999 as in its code);
- ``torch_*`` factories with torch.optim's argument names and defaults, behind the classes
  :class:`ravine.optim.SGD`, ``Adam``... (the chain is the definition of the math; nothing of
  torch's code is copied).

An ablation is one line: Adam without its second moment is
``chain(trace(0.9), scale_by_learning_rate(lr))``, i.e. EMA momentum.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from ._constraints import check_hyper, check_option
from .base import Hyper, Transform, chain, is_number, resolve, transform
from .transforms import (
    add_decayed_weights,
    add_l2,
    scale,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rms,
    scale_by_rss,
    trace,
)

__all__ = [
    "gd",
    "sgd",
    "momentum",
    "nesterov",
    "rmsprop",
    "adam",
    "adamw",
    "adam_l2",
    "adagrad",
    "get",
    "names",
    "hyperparam_names",
]


def _nonzero(x: Any) -> bool:
    """True unless ``x`` is the number 0 (tensors and schedules always count as present)."""
    return not (is_number(x) and x == 0)


@transform()
def gd(lr: Hyper = 0.1) -> Transform:
    """Gradient descent: ``p = p - lr * g``.

    The same rule as :func:`sgd`; the difference is the data (the full-batch gradient here, a
    mini-batch estimate there), which the training loop or simulator decides.
    """
    return chain(scale_by_learning_rate(lr))


@transform()
def sgd(lr: Hyper = 0.01, momentum: Hyper = 0.0, nesterov: bool = False, weight_decay: Hyper = 0.0) -> Transform:
    """Stochastic gradient descent with torch's heavy-ball momentum and coupled L2.

    ``d = g + weight_decay * p``; ``b = momentum * b + d`` (``b = d`` at the first step);
    ``p = p - lr * b`` (Nesterov: ``p = p - lr * (d + momentum * b)``).
    """
    if nesterov and is_number(momentum) and momentum == 0:
        raise ValueError("sgd: nesterov=True requires momentum > 0, got momentum=0")
    parts: list[Transform] = []
    if _nonzero(weight_decay):
        parts.append(add_l2(weight_decay))
    if _nonzero(momentum):
        parts.append(trace(momentum, form="heavy_ball", nesterov=nesterov))
    parts.append(scale_by_learning_rate(lr))
    return chain(*parts)


@transform(static=("form",))
def momentum(
    lr: Hyper = 0.01, beta: Hyper = 0.9, form: str = "ema", nesterov: bool = False, dampening: Hyper = 0.0
) -> Transform:
    """Momentum. ``form="ema"`` (the chapter's, default): ``v = beta v + (1-beta) g``, ``p = p - lr v``.

    ``form="heavy_ball"`` (torch's): ``b = beta b + (1 - dampening) g``, ``p = p - lr b``.
    Equivalence: the EMA velocity is ``(1 - beta)`` times the heavy-ball buffer (both start from
    zero; heavy ball's first-step rule ``b = g`` is the same thing when dampening is 0), so EMA
    momentum with learning rate ``eta`` takes exactly the steps of heavy-ball momentum with learning
    rate ``eta * (1 - beta)``, i.e. of ``torch.optim.SGD(lr=eta * (1 - beta), momentum=beta)``. On a
    constant slope the EMA step tends to ``eta * g``, the heavy-ball step to ``eta * g / (1 - beta)``.
    """
    return chain(trace(beta, form=form, nesterov=nesterov, dampening=dampening), scale_by_learning_rate(lr))


@transform(static=("form",))
def nesterov(lr: Hyper = 0.01, beta: Hyper = 0.9, form: str = "ema") -> Transform:
    """Nesterov momentum: the step looks ahead along the velocity (``momentum(..., nesterov=True)``).

    EMA form: ``v = beta v + (1-beta) g``, ``p = p - lr ((1-beta) g + beta v)``.
    """
    return chain(trace(beta, form=form, nesterov=True), scale_by_learning_rate(lr))


@transform(static=("centered",))
def rmsprop(
    lr: Hyper = 0.001, beta: Hyper = 0.999, eps: Hyper = 1e-8, centered: bool = False, momentum: Hyper = 0.0
) -> Transform:
    """RMSProp as in the chapter: ``s = beta s + (1-beta) g^2``, ``p = p - lr g / (sqrt(s) + eps)``.

    ``momentum > 0`` adds torch's buffer ``b = momentum b + g / (sqrt(s) + eps)``, ``p = p - lr b``.
    torch.optim.RMSprop calls ``beta`` ``alpha`` and defaults it to 0.99.
    """
    parts = [scale_by_rms(beta, eps, centered)]
    if _nonzero(momentum):
        parts.append(trace(momentum, form="heavy_ball"))
    parts.append(scale_by_learning_rate(lr))
    return chain(*parts)


@transform(static=("bias_correction", "amsgrad"))
def adam(
    lr: Hyper = 0.001,
    b1: Hyper = 0.9,
    b2: Hyper = 0.999,
    eps: Hyper = 1e-8,
    bias_correction: bool = True,
    amsgrad: bool = False,
) -> Transform:
    """Adam: ``p = p - lr * m_hat / (sqrt(v_hat) + eps)``; see :func:`scale_by_adam`.

    Momentum (``m``) damps oscillation, the second moment (``v``) gives each coordinate its own
    step size, bias correction undoes the zero initialisation of both.
    """
    return chain(scale_by_adam(b1, b2, eps, bias_correction, amsgrad), scale_by_learning_rate(lr))


class _DecayMultiplier:
    """``eta_t = lr(t) / peak``: the schedule multiplier of Loshchilov & Hutter's decoupled decay."""

    def __init__(self, lr: Hyper, peak: float, weight_decay: Hyper):
        self.lr, self.peak, self.weight_decay = lr, peak, weight_decay

    def __call__(self, step: int) -> Any:
        return resolve(self.weight_decay, step) * resolve(self.lr, step) / self.peak


@transform(static=("decay_convention", "mask", "bias_correction", "amsgrad"))
def adamw(
    lr: Hyper = 0.001,
    b1: Hyper = 0.9,
    b2: Hyper = 0.999,
    eps: Hyper = 1e-8,
    weight_decay: Hyper = 0.01,
    decay_convention: str = "torch",
    mask: Sequence[bool] | Callable | None = None,
    bias_correction: bool = True,
    amsgrad: bool = False,
    lr_peak: float | None = None,
) -> Transform:
    """AdamW: Adam with weight decay decoupled from the gradient (Loshchilov & Hutter 2019).

    ``decay_convention="torch"`` (torch.optim.AdamW):
    ``p = p - lr_t * (m_hat / (sqrt(v_hat) + eps) + weight_decay * p)``: weights shrink by
    ``lr_t * weight_decay`` per step, so the decay strength moves with the learning rate.

    ``decay_convention="decoupled"`` (the paper's Algorithm 2):
    ``p = p - lr_t * m_hat / (sqrt(v_hat) + eps) - eta_t * weight_decay * p`` with
    ``eta_t = lr_t / lr_peak`` the schedule multiplier (1 for a constant learning rate), so the
    decay is independent of the base learning rate: its best value no longer moves along a
    diagonal when the learning rate changes. ``lr_peak`` defaults to the schedule's ``peak``
    attribute (ravine schedules have one) or the constant learning rate; in
    :class:`ravine.optim.Optimizer`, to the peak of the param group's learning rate (its ravine
    schedule's, or a torch scheduler's ``initial_lr``). Typical values of ``weight_decay`` are then
    ~1e-4, not 1e-2.

    ``mask`` selects the parameters to decay (exclude biases and norm weights).
    """
    check_option("decay_convention", decay_convention, where="adamw: ")
    direction = scale_by_adam(b1, b2, eps, bias_correction, amsgrad)
    if decay_convention == "torch":
        return chain(direction, add_decayed_weights(weight_decay, mask), scale_by_learning_rate(lr))
    check_hyper("weight_decay", weight_decay, where="adamw: ")
    # left None, the peak is the learning rate's own; a torch optimizer knows better (its groups'
    # schedules and scheduler): say so, and it passes its value (see Transform.needs)
    needs = frozenset({"lr_peak"}) if lr_peak is None else frozenset()
    if lr_peak is None:
        lr_peak = getattr(lr, "peak", None) if callable(lr) else lr
    if callable(lr) and lr_peak is None:
        raise ValueError(
            "adamw: decay_convention='decoupled' with a schedule needs its peak: pass lr_peak=... "
            "or use a ravine.schedules schedule (they expose .peak)"
        )
    peak = lr_peak
    if is_number(peak):  # a tensor learning rate is its own peak, row by row
        check_hyper("lr_peak", peak, where="adamw: ")
    decay = _DecayMultiplier(lr, peak, weight_decay) if (callable(lr) or callable(weight_decay)) else (
        weight_decay * lr / peak
    )
    t = chain(direction, scale_by_learning_rate(lr), add_decayed_weights(decay, mask, convention="decoupled"))
    return dataclasses.replace(t, needs=needs)


@transform(static=("bias_correction", "amsgrad"))
def adam_l2(
    lr: Hyper = 0.001,
    b1: Hyper = 0.9,
    b2: Hyper = 0.999,
    eps: Hyper = 1e-8,
    weight_decay: Hyper = 0.01,
    bias_correction: bool = True,
    amsgrad: bool = False,
) -> Transform:
    """Adam with coupled L2 (torch's ``Adam(weight_decay=...)``): ``g = g + weight_decay * p`` first.

    The decay then passes through ``1/sqrt(v_hat)``: what AdamW was invented to avoid.
    """
    return chain(
        add_l2(weight_decay), scale_by_adam(b1, b2, eps, bias_correction, amsgrad), scale_by_learning_rate(lr)
    )


class _AdagradLR:
    """torch's Adagrad learning-rate decay: ``lr / (1 + step * lr_decay)``, 0-based step."""

    def __init__(self, lr: Hyper, lr_decay: float):
        self.lr, self.lr_decay = lr, lr_decay

    def __call__(self, step: int) -> Any:
        return resolve(self.lr, step) / (1 + step * self.lr_decay)


@transform()
def adagrad(
    lr: Hyper = 0.01, eps: Hyper = 1e-10, initial_accumulator_value: float = 0.0, lr_decay: float = 0.0
) -> Transform:
    """Adagrad (Duchi et al. 2011): ``s = s + g^2``, ``p = p - lr_t g / (sqrt(s) + eps)``,
    ``lr_t = lr / (1 + (t-1) lr_decay)`` (torch's decay)."""
    check_hyper("lr_decay", lr_decay, where="adagrad: ")
    rate = _AdagradLR(lr, lr_decay) if lr_decay != 0 else lr
    return chain(scale_by_rss(eps, initial_accumulator_value), scale_by_learning_rate(rate))


# ------------------------------------------------------------------------------------------------
# torch-compatible factories (torch's names and defaults), behind the Optimizer classes


def _torch_prefix(maximize: bool, weight_decay: Any) -> list[Transform]:
    """What torch does to the gradient first: negate it (``maximize``), add coupled L2."""
    parts: list[Transform] = [scale(-1.0)] if maximize else []
    if _nonzero(weight_decay):
        parts.append(add_l2(weight_decay))
    return parts


@transform()
def torch_sgd(
    lr: Hyper = 1e-3,
    momentum: Hyper = 0.0,
    dampening: Hyper = 0.0,
    weight_decay: Hyper = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
) -> Transform:
    """torch.optim.SGD as a chain: ``[scale(-1)] -> add_l2 -> trace(heavy_ball) -> lr``."""
    where = "SGD: "
    check_hyper("lr", lr, where=where)
    check_hyper("momentum", momentum, where=where)
    check_hyper("weight_decay", weight_decay, where=where)
    if nesterov and (not _nonzero(momentum) or _nonzero(dampening)):
        raise ValueError(
            f"{where}nesterov=True requires momentum > 0 and dampening = 0, got momentum={momentum!r}, "
            f"dampening={dampening!r}"
        )
    parts = _torch_prefix(maximize, weight_decay)
    if _nonzero(momentum):
        parts.append(trace(momentum, form="heavy_ball", dampening=dampening, nesterov=nesterov))
    parts.append(scale_by_learning_rate(lr))
    return chain(*parts)


def _betas(betas: Any, where: str) -> tuple[Any, Any]:
    try:
        b1, b2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"{where}betas must be a pair (beta1, beta2), got {betas!r}") from None
    check_hyper("betas[0]", b1, where=where, key="betas")
    check_hyper("betas[1]", b2, where=where, key="betas")
    return b1, b2


@transform()
def torch_adam(
    lr: Hyper = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
) -> Transform:
    """torch.optim.Adam as a chain (coupled L2 unless ``decoupled_weight_decay``)."""
    where = "Adam: "
    check_hyper("lr", lr, where=where)
    b1, b2 = _betas(betas, where)
    check_hyper("eps", eps, where=where)
    check_hyper("weight_decay", weight_decay, where=where)
    parts = _torch_prefix(maximize, 0.0 if decoupled_weight_decay else weight_decay)
    parts.append(scale_by_adam(b1, b2, eps, True, amsgrad))
    if _nonzero(weight_decay) and decoupled_weight_decay:
        parts.append(add_decayed_weights(weight_decay))
    parts.append(scale_by_learning_rate(lr))
    return chain(*parts)


@transform()
def torch_adamw(
    lr: Hyper = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    maximize: bool = False,
) -> Transform:
    """torch.optim.AdamW as a chain: ``[scale(-1)] -> scale_by_adam -> add_decayed_weights -> lr``."""
    return torch_adam(lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay=True)


@transform()
def torch_rmsprop(
    lr: Hyper = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    maximize: bool = False,
) -> Transform:
    """torch.optim.RMSprop as a chain: ``[scale(-1)] -> add_l2 -> scale_by_rms -> [trace] -> lr``."""
    where = "RMSprop: "
    check_hyper("lr", lr, where=where)
    check_hyper("alpha", alpha, where=where)
    check_hyper("momentum", momentum, where=where)
    check_hyper("weight_decay", weight_decay, where=where)
    parts = _torch_prefix(maximize, weight_decay)
    parts.append(scale_by_rms(alpha, eps, centered))
    if _nonzero(momentum):
        # torch's buffer starts at zero: b = momentum * 0 + g equals the heavy-ball first-step rule.
        parts.append(trace(momentum, form="heavy_ball"))
    parts.append(scale_by_learning_rate(lr))
    return chain(*parts)


@transform()
def torch_adagrad(
    lr: Hyper = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    maximize: bool = False,
) -> Transform:
    """torch.optim.Adagrad as a chain: ``[scale(-1)] -> add_l2 -> scale_by_rss -> lr/(1+(t-1)lr_decay)``."""
    where = "Adagrad: "
    check_hyper("lr", lr, where=where)
    check_hyper("weight_decay", weight_decay, where=where)
    parts = _torch_prefix(maximize, weight_decay)
    parts.append(adagrad(lr, eps, initial_accumulator_value, lr_decay))
    return chain(*parts)


# ------------------------------------------------------------------------------------------------
# registry

_NAMED = {
    "gd": gd,
    "sgd": sgd,
    "momentum": momentum,
    "nesterov": nesterov,
    "rmsprop": rmsprop,
    "adam": adam,
    "adamw": adamw,
    "adam_l2": adam_l2,
    "adagrad": adagrad,
}


# The optimizers defined in their own modules (``schedule_free``, ``lion``, ``adopt``, ``soap``,
# ``adafactor``, ``muon``) define torch classes on :mod:`ravine.optim.adapter`, which imports this
# module, so this module cannot import them: ``ravine.optim`` registers them once it has imported
# everything (``_register``). Elementwise ones are listed by ``names()``; matrix ones on request.
_ELEMENTWISE: dict[str, Callable[..., Transform]] = {}
_MATRIX: dict[str, Callable[..., Transform]] = {}


def _register(name: str, factory: Callable[..., Transform], *, elementwise: bool) -> None:
    """Make ``factory`` a named optimizer of :func:`get` (and of :func:`names` if ``elementwise``)."""
    if name in _NAMED or name in _ELEMENTWISE or name in _MATRIX:
        raise ValueError(f"an optimizer named {name!r} is already registered")
    (_ELEMENTWISE if elementwise else _MATRIX)[name] = factory


def names(matrix: bool = False) -> list[str]:
    """Names of the optimizers accepted by :func:`get`.

    Args:
        matrix: also list the optimizers that precondition whole matrices (``soap``, ``adafactor``,
            ``muon``). They are left out by default because the 2D world (``ravine.simulate``, the playground) steps a
            batch of points as the rows of one tensor, which such an optimizer would mix.

    Returns:
        The names: the chapter's optimizers first, then the newer elementwise ones.
    """
    out = list(_NAMED) + list(_ELEMENTWISE)
    return out + list(_MATRIX) if matrix else out


def hyperparam_names(name: str) -> tuple[str, ...]:
    """The hyperparameters a named optimizer accepts (its signature, learning rate first)."""
    return _lookup(name).hyperparam_names  # type: ignore[attr-defined]


def _lookup(name: str) -> Callable[..., Transform]:
    factory = _NAMED.get(name) or _ELEMENTWISE.get(name) or _MATRIX.get(name)
    if factory is None:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {names(matrix=True)}")
    return factory


def get(name: str, **hyperparams: Any) -> Transform:
    """Build a named optimizer: ``get("adam", lr=0.1, b1=0.8)``.

    Unknown names or hyperparameters raise ``ValueError`` listing what is allowed.
    """
    factory = _lookup(name)
    allowed = factory.hyperparam_names  # type: ignore[attr-defined]
    unknown = sorted(set(hyperparams) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown hyperparameter(s) {unknown}; allowed: {list(allowed)}")
    return factory(**hyperparams)
