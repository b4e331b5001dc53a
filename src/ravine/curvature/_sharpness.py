"""Sharpness: how much the loss rises near a point, and the curvature at which training turns unstable.

:func:`sam_sharpness` (Foret et al. 2021), :func:`keskar_sharpness` (Keskar et al. 2017),
:func:`preconditioned_sharpness` for Adam (Cohen et al. 2022), :func:`stability_threshold` (``2 / lr``
for GD, ``38 / lr`` for Adam with ``beta1 = 0.9``) and its inverse :func:`max_stable_lr`, and the
summary :func:`sharpness`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ravine._validation import Interval, Options, check
from ravine.curvature._eigen import EigenResult, _generator, _lanczos_extreme, hessian_eigenvalues
from ravine.curvature._operator import HessianOperator, LossFn, _operator
from ravine.curvature._spectrum import TraceResult, hessian_trace

__all__ = [
    "SamSharpness",
    "sam_sharpness",
    "KeskarSharpness",
    "keskar_sharpness",
    "adam_preconditioner",
    "PreconditionedSharpness",
    "preconditioned_sharpness",
    "stability_threshold",
    "max_stable_lr",
    "StabilityRule",
    "stability_rule",
    "SharpnessReport",
    "sharpness",
]


@dataclass
class SamSharpness:
    """``value = L(w + e) - L(w)`` at ``e = rho g / ||g||``; ``first_order = rho ||g||``."""

    value: float
    loss: float
    perturbed_loss: float
    grad_norm: float
    first_order: float
    rho: float


def sam_sharpness(
    model: nn.Module | HessianOperator,
    loss_fn: LossFn | None = None,
    data: object = None,
    *,
    rho: float = 0.05,
    hvp: str = "auto",
    dtype: torch.dtype | None = None,
) -> SamSharpness:
    """SAM's sharpness ``max_{||e||_2 <= rho} L(w + e) - L(w)`` by its first-order ascent step.

    Foret et al. (2021) solve the inner maximization to first order: ``e* = rho g / ||g||`` with
    ``g = grad L(w)`` (the full-data gradient here, not a mini-batch one), and report
    ``L(w + e*) - L(w)``; ``first_order = rho ||g||`` is the linearised value. At ``g = 0`` the
    value is 0 (a second-order method is then needed: see ``hessian_eigenvalues``; near a
    minimum ``max ~ rho^2 lambda_max / 2``). Costs one gradient and one loss evaluation.
    """
    op = _operator(model, loss_fn, data, hvp, dtype)
    rho = check("rho", rho, _POSITIVE)
    loss, g = op.loss_and_gradient()
    gnorm = float(g.norm())
    if gnorm == 0.0:
        return SamSharpness(0.0, loss, loss, 0.0, 0.0, rho)
    w = op.flatten(op.params)
    perturbed = op.loss(w + (rho / gnorm) * g)
    return SamSharpness(perturbed - loss, loss, perturbed, gnorm, rho * gnorm, rho)


@dataclass
class KeskarSharpness:
    """Keskar et al.'s sharpness in percent, ``100 (max_loss - loss) / (1 + loss)``."""

    value: float
    loss: float
    max_loss: float
    eps: float
    steps: int


def keskar_sharpness(
    model: nn.Module | HessianOperator,
    loss_fn: LossFn | None = None,
    data: object = None,
    *,
    eps: float = 1e-3,
    steps: int = 10,
    hvp: str = "auto",
    dtype: torch.dtype | None = None,
) -> KeskarSharpness:
    """Keskar et al. (2017)'s epsilon-sharpness over the box ``|e_i| <= eps (|w_i| + 1)``.

    ``phi(w, eps) = 100 * (max_{e in C_eps} L(w + e) - L(w)) / (1 + L(w))`` (their Metric 2.1 with
    ``A = I``: the full parameter space). Keskar et al. maximize with L-BFGS-B; here by projected
    steepest ascent in the box's own (weighted max-)norm: the first point is the exact maximizer of
    the linearised loss over the box, ``e = r * sign(g)`` with ``r = eps (|w| + 1)``; each further
    step is ``e <- clip(e + r/2 * sign(grad L(w + e)), -r, r)``. ``steps`` gradient evaluations in
    all; the largest loss seen is reported, so the value is a lower bound on the true maximum (as
    every such estimate is). Defaults: ``eps = 1e-3`` (Keskar's value; they also use 5e-4).
    """
    op = _operator(model, loss_fn, data, hvp, dtype)
    eps = check("eps", eps, _POSITIVE)
    steps = check("steps", steps, Interval.finite(int, 1))
    w = op.flatten(op.params)
    r = eps * (w.abs() + 1)
    loss, g = op.loss_and_gradient()
    e = r * torch.sign(g)
    best = loss
    for i in range(steps):
        value, g = op.loss_and_gradient(w + e)
        best = max(best, value)
        if i + 1 < steps:
            e = torch.clamp(e + 0.5 * r * torch.sign(g), -r, r)
    return KeskarSharpness(100.0 * (best - loss) / (1.0 + loss), loss, best, eps, steps)


def adam_preconditioner(
    optimizer: torch.optim.Optimizer | None = None,
    params: Sequence[Tensor] | None = None,
    *,
    exp_avg_sq: Sequence[Tensor] | None = None,
    step: int | float | Tensor | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> list[Tensor]:
    """Adam's diagonal preconditioner ``P = (1 - beta1^t) (sqrt(v_t / (1 - beta2^t)) + eps)``.

    Adam's step is ``w <- w - lr P^{-1} m_t`` with the *uncorrected* first moment ``m_t``; this
    ``P`` is Cohen et al. (2022, "Adaptive Gradient Methods at the Edge of Stability", Sec. 2)'s
    preconditioner, free of the learning rate. Either from an optimizer (torch's ``Adam``/``AdamW``
    or ravine's, whose per-parameter state holds ``"exp_avg_sq"`` and ``"step"``; ``amsgrad`` uses
    ``"max_exp_avg_sq"``; ``betas`` (or ravine's ``b1``/``b2``) and ``eps`` come from each parameter's
    group; a group with ``bias_correction=False`` gives ``P = sqrt(v_t) + eps``) for the tensors
    ``params`` (the model's trainable parameters, in order), or from explicit ``exp_avg_sq``,
    ``step``, ``betas`` and ``eps``.
    """
    if optimizer is not None:
        if params is None:
            raise ValueError("params (the model's trainable parameters) are needed with optimizer=")
        group_of = {}
        for group in optimizer.param_groups:
            for p in group["params"]:
                group_of[id(p)] = group
        out = []
        for i, p in enumerate(params):
            if id(p) not in group_of:
                raise ValueError(f"parameter {i} (shape {tuple(p.shape)}) is not in the optimizer's groups")
            group = group_of[id(p)]
            state = optimizer.state.get(p, {})
            if "exp_avg_sq" not in state or "step" not in state:
                raise ValueError(
                    f"parameter {i} (shape {tuple(p.shape)}) has no 'exp_avg_sq'/'step' in the optimizer "
                    "state; take at least one optimizer step first (or pass exp_avg_sq= and step=)"
                )
            v = state["exp_avg_sq"]
            if group.get("amsgrad", False) and "max_exp_avg_sq" in state:
                v = state["max_exp_avg_sq"]
            b1, b2 = _group_betas(group, betas)
            g_eps = float(group.get("eps", eps))
            if not group.get("bias_correction", True):  # ravine's adam(bias_correction=False)
                out.append(v.detach().sqrt() + g_eps)
            else:
                out.append(_adam_p(v, state["step"], b1, b2, g_eps))
        return out
    if exp_avg_sq is None or step is None:
        raise ValueError("give either optimizer= (with params=) or both exp_avg_sq= and step=")
    b1, b2 = betas
    return [_adam_p(v, step, float(b1), float(b2), float(eps)) for v in exp_avg_sq]


def _group_betas(group: dict, default: tuple[float, float]) -> tuple[float, float]:
    """``(beta1, beta2)`` of a param group: torch's ``"betas"`` or ravine's ``"b1"``/``"b2"``."""
    if "betas" in group:
        b1, b2 = group["betas"]
    else:
        b1, b2 = group.get("b1", default[0]), group.get("b2", default[1])
    return float(b1), float(b2)


def _adam_p(v: Tensor, step: int | float | Tensor, b1: float, b2: float, eps: float) -> Tensor:
    t = float(step)
    if not t >= 1:
        raise ValueError(f"step must be >= 1 (Adam steps taken); got {step!r}")
    if not isinstance(v, Tensor):
        raise TypeError(f"exp_avg_sq entries must be tensors; got {type(v).__name__}")
    return (1 - b1**t) * ((v.detach() / (1 - b2**t)).sqrt() + eps)


@dataclass
class PreconditionedSharpness:
    """``lambda_max(P^{-1} H)`` (``value``), with Adam's stability threshold when ``lr`` is known."""

    value: float
    threshold: float | None
    lr: float | None
    beta1: float
    eigen: EigenResult


def preconditioned_sharpness(
    model: nn.Module | HessianOperator,
    loss_fn: LossFn | None = None,
    data: object = None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    preconditioner: Sequence[Tensor] | None = None,
    exp_avg_sq: Sequence[Tensor] | None = None,
    step: int | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    lr: float | None = None,
    tol: float = 1e-3,
    max_iter: int = 1000,
    seed: int = 0,
    hvp: str = "auto",
    dtype: torch.dtype | None = None,
    v0: Tensor | None = None,
) -> PreconditionedSharpness:
    """Adam's preconditioned sharpness ``lambda_max(P^{-1} H)`` (Cohen et al. 2022).

    ``P^{-1} H`` is similar to the symmetric ``P^{-1/2} H P^{-1/2}``, whose largest eigenvalue is
    found by Lanczos (:func:`hessian_eigenvalues`). ``P`` is taken from, in this order:
    ``preconditioner`` (the diagonal ``P`` itself, tensors shaped like the trainable parameters),
    ``optimizer`` (an Adam/AdamW-like optimizer over this model's parameters, see
    :func:`adam_preconditioner`), or ``exp_avg_sq`` + ``step`` (+ ``betas``, ``eps``).

    Cohen et al. find full-batch Adam trains at the *adaptive edge of stability*: ``value`` rises to
    and hovers at ``(2 + 2 beta1) / ((1 - beta1) lr)``, which is ``38 / lr`` for ``beta1 = 0.9``
    (``threshold``, when ``lr`` is known, from the optimizer's single learning rate or ``lr=``);
    the analogue for plain gradient descent is ``lambda_max(H)`` at ``2 / lr``.

    ``v0`` (a flat nonzero vector of length ``P``, in the coordinates of ``P^{-1/2} H P^{-1/2}``, e.g. a
    previous result's ``eigen.vectors[0]``) replaces Lanczos's random start: a warm start.
    """
    if isinstance(model, HessianOperator):
        op = model
        module = model.model
    else:
        op = _operator(model, loss_fn, data, hvp, dtype)
        module = model
    beta1 = float(betas[0])
    if preconditioner is not None:
        pre = list(preconditioner)
    elif optimizer is not None:
        named = dict(module.named_parameters())
        pre = adam_preconditioner(optimizer, [named[n] for n in op.names])
        lrs = {g.get("lr") for g in optimizer.param_groups}
        if lr is None and len(lrs) == 1:
            only = lrs.pop()
            lr = float(only) if isinstance(only, (int, float)) and not isinstance(only, bool) else None
        b1s = {_group_betas(g, betas)[0] for g in optimizer.param_groups}
        if len(b1s) == 1:
            beta1 = b1s.pop()
    else:
        pre = adam_preconditioner(exp_avg_sq=exp_avg_sq, step=step, betas=betas, eps=eps)
    d = op.flatten(pre)
    if not bool((d > 0).all()):
        raise ValueError("the preconditioner must be positive everywhere; got entries <= 0")
    inv_sqrt = d.rsqrt()

    def matvec(v: Tensor) -> Tensor:
        return inv_sqrt * op.matvec(inv_sqrt * v)

    tol = check("tol", tol, _POSITIVE)
    max_iter = check("max_iter", max_iter, Interval.finite(int, 1))
    gen = _generator(seed)
    if v0 is not None:
        v0 = op._check_vector("v0", v0)
        if not bool(torch.isfinite(v0).all()) or float(v0.norm()) == 0.0:
            raise ValueError("v0 must be a finite nonzero vector (the start of the iteration)")
    start = op.num_hvps
    vals, vecs, res, _, converged = _lanczos_extreme(
        matvec, op.dim, 1, "largest", tol, max_iter, 40, gen, op.device, op.dtype, v0
    )
    if not converged:
        warnings.warn(
            f"preconditioned_sharpness did not converge within max_iter={max_iter} HVPs",
            RuntimeWarning,
            stacklevel=2,
        )
    eig = EigenResult(
        vals, vecs, res, op.num_hvps - start, converged, "largest", "lanczos", list(op.names), list(op.shapes)
    )
    threshold = None
    if lr is not None:
        threshold = stability_threshold(lr, "adam", beta1=beta1)
    return PreconditionedSharpness(float(vals[0]), threshold, lr, beta1, eig)


_STABILITY_OPTIMIZERS = Options(("gd", "momentum", "adam"))
_POSITIVE = Interval.finite(float, 0, low_open=True)
_BETA1 = Interval(float, 0, 1, closed="left")


def _stability_constant(optimizer: str, beta1: float) -> float:
    """``c`` in the stability rule ``lr * lambda < c`` of full-batch training on a quadratic."""
    check("optimizer", optimizer, _STABILITY_OPTIMIZERS)
    beta1 = check("beta1", beta1, _BETA1)
    if optimizer == "gd":
        return 2.0
    if optimizer == "momentum":
        return 2.0 + 2.0 * beta1
    return (2.0 + 2.0 * beta1) / (1.0 - beta1)


def stability_threshold(lr: float, optimizer: str = "gd", *, beta1: float = 0.9) -> float:
    """The curvature at which full-batch training of a quadratic turns unstable.

    Training with learning rate ``lr`` on ``f(w) = lambda w^2 / 2`` is stable exactly while
    ``lr * lambda < c``, so the threshold is ``c / lr``:

    - ``"gd"``: ``c = 2``, threshold ``2 / lr`` (compare with ``lambda_max(H)``; Cohen et al. 2021,
      Edge of Stability);
    - ``"momentum"`` (heavy ball ``m <- beta1 m + g``, ``w <- w - lr m``): ``c = 2 + 2 beta1``;
    - ``"adam"``: ``c = (2 + 2 beta1) / (1 - beta1)``, ``38 / lr`` at ``beta1 = 0.9`` (compare with
      the preconditioned sharpness; Cohen et al. 2022); the same rule as an EMA momentum
      ``m <- beta1 m + (1 - beta1) g`` on the preconditioned quadratic.

    :func:`max_stable_lr` is the same rule solved for ``lr``.
    """
    lr = check("lr", lr, _POSITIVE)
    return _stability_constant(optimizer, beta1) / lr


def max_stable_lr(lambda_max: float, optimizer: str = "gd", *, beta1: float = 0.9) -> float | None:
    """The largest stable learning rate for curvature ``lambda_max``: :func:`stability_threshold` inverted.

    ``c / lambda_max`` with the same ``c`` as :func:`stability_threshold` (``2 / lambda_max`` for
    gradient descent): on the local quadratic model, a larger ``lr`` makes the iterates grow along
    the top eigenvector. ``None`` when ``lambda_max <= 0`` (no positive curvature: no step size is
    unstable on the quadratic model) or when ``lambda_max`` is not finite.
    """
    c = _stability_constant(optimizer, beta1)
    if isinstance(lambda_max, bool) or not isinstance(lambda_max, (int, float)):
        raise TypeError(f"lambda_max must be a number, got {type(lambda_max).__name__} {lambda_max!r}")
    if not math.isfinite(lambda_max) or lambda_max <= 0:
        return None
    return c / lambda_max


# names -> family of the stability rule (ravine.optim's registry names, its transforms' names, torch's classes)
_GD_NAMES = ("gd",)
_SGD_NAMES = ("sgd", "torch_sgd", "SGD")
_MOMENTUM_NAMES = ("momentum",)
_ADAM_NAMES = ("adam", "adamw", "adam_l2", "torch_adam", "torch_adamw", "Adam", "AdamW")


@dataclass(frozen=True)
class StabilityRule:
    """An optimizer's stability rule on the local quadratic model (what :func:`stability_rule` returns).

    Full-batch training with learning rate ``lr`` is stable on the quadratic while
    ``(sharpness + shift) * lr * lr_scale < constant``, where ``sharpness`` is ``lambda_max(H)``
    (``curvature == "hessian"``: GD, heavy-ball and EMA momentum) or Adam's preconditioned sharpness
    ``lambda_max(P^{-1} H)`` (``curvature == "preconditioned"``). ``kind`` is ``"gd"``,
    ``"heavy_ball"``, ``"ema_momentum"``, ``"adam"``, or ``None`` when no closed-form rule is known
    (Nesterov momentum, RMSProp, Adagrad, Lion, ...: then ``constant`` is NaN and every method returns
    ``None``). ``text`` states the rule for people (``"2(1+β)/λmax (heavy ball, β = 0.9)"``).
    """

    name: str
    kind: str | None
    curvature: str | None
    constant: float
    beta: float | None = None
    lr_scale: float = 1.0
    shift: float = 0.0
    text: str = ""

    def threshold(self, lr: float) -> float | None:
        """The sharpness at which a step of ``lr`` turns unstable: ``constant / (lr lr_scale) - shift``.

        Args:
            lr: the learning rate (``> 0``).

        Returns:
            The threshold to compare ``sharpness`` with, or ``None`` when the rule has no closed form.
        """
        if self.kind is None:
            return None
        lr = check("lr", lr, _POSITIVE)
        return self._rule_threshold(lr * self.lr_scale) - self.shift

    def ratio(self, sharpness: float, lr: float) -> float | None:
        """``(sharpness + shift) lr lr_scale / constant``: 1 exactly at the threshold, above 1 unstable.

        Args:
            sharpness: ``lambda_max(H)``, or the preconditioned sharpness for ``curvature == "preconditioned"``.
            lr: the learning rate (``> 0``).

        Returns:
            The ratio, or ``None`` when the rule has no closed form or ``sharpness`` is not finite.
        """
        if self.kind is None or not math.isfinite(sharpness):
            return None
        lr = check("lr", lr, _POSITIVE)
        return (sharpness + self.shift) / self._rule_threshold(lr * self.lr_scale)

    def max_lr(self, sharpness: float) -> float | None:
        """The largest stable learning rate at ``sharpness``: :func:`max_stable_lr` of ``(sharpness + shift) lr_scale``.

        Args:
            sharpness: ``lambda_max(H)``, or the preconditioned sharpness for ``curvature == "preconditioned"``.

        Returns:
            The limit, or ``None`` (no closed-form rule, or no positive curvature: no limit).
        """
        if self.kind is None:
            return None
        curvature = (sharpness + self.shift) * self.lr_scale
        if self.kind == "gd":
            return max_stable_lr(curvature)
        if self.kind == "adam":
            return max_stable_lr(curvature, "adam", beta1=self.beta)
        return max_stable_lr(curvature, "momentum", beta1=self.beta)

    def _rule_threshold(self, lr: float) -> float:
        if self.kind == "gd":
            return stability_threshold(lr)
        if self.kind == "adam":
            return stability_threshold(lr, "adam", beta1=self.beta)
        return stability_threshold(lr, "momentum", beta1=self.beta)


def _optimizer_name(optimizer: torch.optim.Optimizer) -> str:
    """The rule's name for a torch optimizer: ravine's transform name, else the torch class name."""
    transform = getattr(optimizer, "transform", None)
    name = getattr(transform, "name", None)
    return name if isinstance(name, str) else type(optimizer).__name__


def stability_rule(
    optimizer: str | torch.optim.Optimizer, hyperparams: dict | None = None, *, group: int = 0
) -> StabilityRule:
    """The one map from an optimizer and its hyperparameters to its stability rule.

    The rule is :func:`stability_threshold`'s (full-batch training on the local quadratic model),
    mapped to the optimizer's own parametrization:

    - ``gd``, and SGD without momentum (``"sgd"``, ``"torch_sgd"``, ``torch.optim.SGD``): ``lambda_max < 2 / lr``;
      coupled L2 weight decay ``wd`` adds ``wd`` to every eigenvalue: ``lambda_max + wd < 2 / lr``;
    - heavy ball (SGD with momentum ``mu``; ``ravine.optim.momentum(form="heavy_ball")``; buffer
      ``b <- beta b + (1 - d) g`` with dampening ``d``): ``(lambda_max + wd) (1 - d) lr < 2 (1 + beta)``;
    - EMA momentum (``ravine.optim.momentum``, the chapter's ``v <- beta v + (1 - beta) g``): heavy ball
      at learning rate ``lr (1 - beta)``, so ``lambda_max < 2 (1 + beta) / ((1 - beta) lr)``;
    - Adam and AdamW (``"adam"``, ``"adamw"``, ``"adam_l2"``, torch's and ravine's classes): the
      preconditioned sharpness ``lambda_max(P^{-1} H) < (2 + 2 beta1) / ((1 - beta1) lr)``, ``38 / lr``
      at ``beta1 = 0.9`` (Cohen et al. 2022; weight decay is left out of this rule);
    - Nesterov momentum and every other optimizer: no closed-form rule (``kind=None``).

    Args:
        optimizer: a name (ravine.optim's registry names, its transforms' names such as
            ``"torch_sgd"``, or torch's class names ``"SGD"``, ``"Adam"``, ``"AdamW"``) with
            ``hyperparams``, or a ``torch.optim.Optimizer`` (torch's, or ``ravine.optim.Optimizer``),
            whose name and *current* hyperparameters (``param_groups[group]``, after any scheduler)
            are read.
        hyperparams: the optimizer's hyperparameters by name (``momentum``, ``dampening``,
            ``weight_decay``, ``nesterov``, ``beta``, ``form``, ``betas`` or ``b1``); missing ones take
            torch's defaults (no momentum, no decay; ravine's ``momentum`` uses ``beta=0.9``, ``form="ema"``).
            Ignored when ``optimizer`` is a torch optimizer.
        group: the param group read from a torch optimizer.

    Returns:
        The :class:`StabilityRule`; ``rule.threshold(lr)`` is the sharpness limit, ``rule.max_lr(lambda_max)``
        the learning-rate limit.
    """
    if isinstance(optimizer, torch.optim.Optimizer):
        groups = optimizer.param_groups
        group = check("group", group, Interval(int, 0, len(groups), closed="left"))
        name, hp = _optimizer_name(optimizer), dict(groups[group])
    elif isinstance(optimizer, str):
        name, hp = optimizer, dict(hyperparams or {})
    else:
        raise TypeError(f"optimizer must be a name or a torch.optim.Optimizer, got {type(optimizer).__name__}")
    wd = float(hp.get("weight_decay", 0.0) or 0.0)
    if name in _GD_NAMES or (name in _SGD_NAMES and not hp.get("nesterov") and not hp.get("momentum")):
        shift = wd if name in _SGD_NAMES else 0.0
        extra = f" + {wd:g}" if shift else ""
        return StabilityRule(
            name,
            "gd",
            "hessian",
            2.0,
            shift=shift,
            text=f"2/(λmax{extra}) (gradient descent)" if shift else "2/λmax (gradient descent)",
        )
    if name in _SGD_NAMES and not hp.get("nesterov"):
        mu, d = float(hp["momentum"]), float(hp.get("dampening", 0.0) or 0.0)
        extra = f" + {wd:g}" if wd else ""
        damp = f"(1−{d:g})" if d else ""
        text = f"2(1+μ)/({damp}λmax{extra}) (heavy ball, μ = {mu:g})"
        return StabilityRule(name, "heavy_ball", "hessian", 2.0 + 2.0 * mu, mu, 1.0 - d, wd, text)
    if name in _MOMENTUM_NAMES and not hp.get("nesterov"):
        beta = float(hp.get("beta", 0.9))
        if hp.get("form", "ema") == "heavy_ball":
            d = float(hp.get("dampening", 0.0) or 0.0)
            damp = f"(1−{d:g})" if d else ""
            text = f"2(1+β)/({damp}λmax) (heavy ball, β = {beta:g})"
            return StabilityRule(name, "heavy_ball", "hessian", 2.0 + 2.0 * beta, beta, 1.0 - d, 0.0, text)
        text = f"2(1+β)/((1−β)λmax) (EMA momentum, β = {beta:g})"
        return StabilityRule(name, "ema_momentum", "hessian", 2.0 + 2.0 * beta, beta, 1.0 - beta, 0.0, text)
    if name in _ADAM_NAMES:
        b1 = _group_betas(hp, (0.9, 0.999))[0]
        c = _stability_constant("adam", b1)
        text = (
            f"no fixed lr limit: {name} preconditions its steps (the limit is on the preconditioned curvature: "
            f"lr < (2+2β1)/((1−β1) λmax(P⁻¹H)) = {c:g}/λmax(P⁻¹H) at β1 = {b1:g})"
        )
        return StabilityRule(name, "adam", "preconditioned", c, b1, text=text)
    if name in _SGD_NAMES + _MOMENTUM_NAMES + ("nesterov",):
        return StabilityRule(name, None, None, math.nan, text="no closed-form lr limit drawn for Nesterov momentum")
    return StabilityRule(
        name,
        None,
        None,
        math.nan,
        text=f"no fixed lr limit: {name} preconditions its steps (the limit is on the preconditioned curvature)"
        if isinstance(optimizer, str)
        else f"no closed-form stability rule known for {name}",
    )


@dataclass
class SharpnessReport:
    """Several sharpness measures of one model at one point (see :func:`sharpness`)."""

    loss: float
    lambda_max: float
    trace: TraceResult
    sam: SamSharpness
    keskar: KeskarSharpness
    gd_threshold: float | None = None
    adam: PreconditionedSharpness | None = None
    num_hvps: int = 0


def sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    data: object,
    *,
    lr: float | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    rho: float = 0.05,
    eps: float = 1e-3,
    keskar_steps: int = 10,
    trace_probes: int = 99,
    tol: float = 1e-3,
    seed: int = 0,
    hvp: str = "auto",
    dtype: torch.dtype | None = None,
) -> SharpnessReport:
    """All sharpness measures at once: ``lambda_max`` (Lanczos), ``tr(H)`` (Hutch++), SAM's
    first-order sharpness (``rho``), Keskar's epsilon-sharpness (``eps``, ``keskar_steps``), and,
    with an Adam-like ``optimizer``, the preconditioned sharpness with its ``38 / lr`` threshold.
    ``gd_threshold = 2 / lr`` when ``lr`` is given (or the optimizer has one learning rate).
    One operator (one parameter snapshot) serves every measure.
    """
    op = HessianOperator(model, loss_fn, data, method=hvp, dtype=dtype)
    lam = hessian_eigenvalues(op, k=1, which="largest", tol=tol, seed=seed)
    tr = hessian_trace(op, num_probes=trace_probes, seed=seed)
    sam = sam_sharpness(op, rho=rho)
    kes = keskar_sharpness(op, eps=eps, steps=keskar_steps)
    adam = None
    if optimizer is not None:
        adam = preconditioned_sharpness(op, optimizer=optimizer, lr=lr, tol=tol, seed=seed)
        if lr is None:
            lr = adam.lr
    gd = stability_threshold(lr, "gd") if lr is not None else None
    return SharpnessReport(
        loss=sam.loss,
        lambda_max=float(lam.values[0]),
        trace=tr,
        sam=sam,
        keskar=kes,
        gd_threshold=gd,
        adam=adam,
        num_hvps=op.num_hvps,
    )
