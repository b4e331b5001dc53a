"""Schedule-Free AdamW (Defazio et al. 2024, "The Road Less Scheduled"): no learning-rate schedule,
two sets of weights, and an optimizer that keeps them apart for you.

Schedule-Free keeps three sequences: ``z`` (the SGD-like "base" iterate), ``x`` (an average of the
``z``'s, the weights to *evaluate*) and ``y`` (the interpolation between them where the gradient is
taken, the weights to *train*). With ``t`` the 0-based step, ``d_t`` the AdamW direction at ``y``::

    v   = b2 v + (1 - b2) g^2                     (g = grad f(y_t))
    d_t = g / (sqrt(v / (1 - b2^(t+1))) + eps) + weight_decay * y_t
    z_{t+1} = z_t - lr_t d_t
    x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}
    y_{t+1} = (1 - b1) z_{t+1} + b1 x_{t+1}

with ``lr_t = lr * min(1, (t+1)/warmup_steps)``, ``c_{t+1} = w_t / sum_{i<=t} w_i`` and weights
``w_t = (t+1)^r * max_{i<=t}(lr_i)^weight_lr_power``. The parameters hold ``y``; ``x`` is never
stored, it is ``x = (y - (1 - b1) z) / b1`` (the ``schedulefree`` package's ``.eval()`` swap). The
step on ``y`` written without ``x`` (what :func:`schedule_free` computes)::

    y_{t+1} = y_t + c (z_t - y_t) + lr_t (b1 (1 - c) - 1) d_t

The chain: :func:`scale_by_debiased_rms` (the direction ``g / (sqrt(v_hat) + eps)``),
``add_decayed_weights`` (weight decay at ``y``) and :func:`schedule_free` (the ``z``/``y`` averaging),
so ``schedule_free_adamw`` has the numbers of ``schedulefree.AdamWScheduleFree`` (tested to 1e-10
in float64, in both ``y`` and ``x``).

**The train/eval swap, made hard to get wrong.** With :class:`ScheduleFreeAdamW` the model always
holds the training weights ``y`` (there is no ``train()``/``eval()`` mode to forget), and:

- ``with opt.eval_params(): evaluate(model)`` puts the evaluation weights ``x`` into the model for
  the block and restores ``y`` bit for bit afterwards (also on an exception); ``step()`` inside the
  block raises;
- ``opt.eval_weights()`` returns ``x`` as new tensors without touching the model;
- checkpoints: ``torch.save(opt.checkpoint(model), path)`` stores the model with its training
  weights ``y`` (``"model"``), with its evaluation weights ``x`` (``"eval_model"``, the one to
  ship) and the optimizer's state, and is right whether it is called inside ``eval_params()`` or
  outside; ``opt.load_checkpoint(model, torch.load(path, weights_only=True))`` resumes the run
  exactly. The usual ``model.state_dict()`` + ``opt.state_dict()`` pair is right outside the block
  (the model holds ``y`` there); inside it ``opt.state_dict()`` raises rather than let a resume
  start from ``x``.

Not fused: the averaging weight needs two numbers per parameter (``weight_sum``, ``lr_max``) kept as
state, which the flat buffers do not hold; ``fused=True`` raises naming it, ``fused=None`` runs it
unfused. The 2D world runs it like any elementwise optimizer (``ravine.optim.get(
"schedule_free_adamw")``), rows of a batch independent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

from ._constraints import check_hyper
from .adapter import Optimizer
from .base import (
    Hyper,
    Params,
    State,
    Transform,
    add_,
    addcmul_,
    chain,
    mul_,
    power,
    resolve,
    scalar,
    transform,
    zeros_like,
)
from .transforms import add_decayed_weights

__all__ = [
    "scale_by_debiased_rms",
    "schedule_free",
    "schedule_free_adamw",
    "schedule_free_eval",
    "ScheduleFreeAdamW",
]


@transform(fusable=True)
def scale_by_debiased_rms(b2: Hyper = 0.999, eps: Hyper = 1e-8) -> Transform:
    """Adam's second moment alone: ``v = b2 v + (1 - b2) g^2``, ``u = g / (sqrt(v / (1 - b2^t)) + eps)``.

    Adam without its first moment (Schedule-Free's averaging replaces momentum), with the bias
    correction inside the square root as ``schedulefree`` computes it. State: ``exp_avg_sq``.

    Args:
        b2: decay rate of the running mean of ``g^2``, in ``[0, 1)``.
        eps: added to the denominator, ``>= 0``.

    Returns:
        The transform.
    """
    where = "scale_by_debiased_rms: "
    check_hyper("b2", b2, where=where)
    check_hyper("eps", eps, where=where)

    def init(params: Params) -> State:
        return {"step": 0, "exp_avg_sq": zeros_like(params)}

    def update(g: Params, state: State, params: Params | None = None) -> tuple[Params, State]:
        step = state["step"]
        beta2, e = resolve(b2, step), resolve(eps, step)
        v = state["exp_avg_sq"]
        mul_(v, beta2)
        addcmul_(v, g, g, 1 - beta2)
        bc2 = 1 - power(beta2, step + 1)
        for gi, vi in zip(g, v):
            gi.div_(torch.div(vi, bc2).sqrt_().add_(e))
        return g, {"step": step + 1, "exp_avg_sq": v}

    return Transform(init, update)


def _max(a: Any, b: Any) -> Any:
    if scalar(a) and scalar(b):
        return max(a, b)
    return torch.maximum(torch.as_tensor(a), torch.as_tensor(b))


def _average_weight(weight: Any, weight_sum: Any) -> Any:
    """``c = weight / weight_sum`` (0 while the sum is 0, as ``schedulefree``)."""
    if scalar(weight_sum):
        return weight / weight_sum if weight_sum != 0 else 0.0
    return torch.where(weight_sum != 0, weight / torch.where(weight_sum != 0, weight_sum, 1.0), 0.0)


@transform()
def schedule_free(
    lr: Hyper = 0.0025, b1: Hyper = 0.9, warmup_steps: int | Tensor = 0, r: Hyper = 0.0, weight_lr_power: Hyper = 2.0
) -> Transform:
    """Schedule-Free's averaging (Defazio et al. 2024) of an incoming direction ``d``, as the update of ``y``.

    ``z = z - lr_t d``; ``u = c (z_old - y) + lr_t (b1 (1 - c) - 1) d``, so ``y + u`` is the new
    interpolation point ``(1 - b1) z + b1 x`` (see the module docstring for ``x``, ``c`` and
    ``lr_t``). The direction is whatever comes before it in a chain (AdamW's in
    :func:`schedule_free_adamw`, the raw gradient for Schedule-Free SGD). It is the last
    component of a chain: it applies the learning rate itself.

    State: ``z`` (starts at the parameters) and, per parameter, ``weight_sum`` and ``lr_max``
    (numbers, or tensors when a hyperparameter is a tensor), so ``state_dict`` resumes exactly.

    Args:
        lr: learning rate, ``>= 0``.
        b1: interpolation between ``z`` and ``x`` (the momentum-like coefficient), in ``[0, 1)``.
        warmup_steps: linear warmup of the learning rate over this many steps.
        r: polynomial weighting of the average, ``w_t`` grows as ``(t+1)^r``.
        weight_lr_power: ``w_t`` grows as the largest learning rate so far to this power.

    Returns:
        The transform.
    """
    where = "schedule_free: "
    check_hyper("lr", lr, where=where)
    check_hyper("b1", b1, where=where)
    check_hyper("warmup_steps", warmup_steps, where=where)
    if isinstance(warmup_steps, Tensor) and not torch.equal(warmup_steps, warmup_steps.round()):
        fractional = warmup_steps[warmup_steps != warmup_steps.round()].unique().tolist()
        raise ValueError(f"{where}warmup_steps must be whole numbers of steps, got {fractional}")
    check_hyper("r", r, where=where)
    check_hyper("weight_lr_power", weight_lr_power, where=where)

    def init(params: Params) -> State:
        return {
            "step": 0,
            "z": [p.detach().clone(memory_format=torch.preserve_format) for p in params],
            "weight_sum": [0.0 for _ in params],
            "lr_max": [-1.0 for _ in params],
        }

    def update(d: Params, state: State, params: Params | None = None) -> tuple[Params, State]:
        if params is None:
            raise ValueError("schedule_free needs the parameters: call update(updates, state, params)")
        k = state["step"]
        if scalar(warmup_steps):
            sched = (k + 1) / warmup_steps if k < warmup_steps else 1.0
        else:  # one warmup per row (a batch of runs in the 2D world)
            sched = torch.where(warmup_steps > k, (k + 1) / warmup_steps.clamp(min=1), 1.0)
        lr_t = resolve(lr, k) * sched
        beta1 = resolve(b1, k)
        lr_max = [_max(m, lr_t) for m in state["lr_max"]]
        power_k, power_lr = resolve(r, k), resolve(weight_lr_power, k)
        weights = [((k + 1) ** power_k) * (m**power_lr) for m in lr_max]
        weight_sum = [s + w for s, w in zip(state["weight_sum"], weights)]
        ckp1 = [_average_weight(w, s) for w, s in zip(weights, weight_sum)]
        z = state["z"]
        z_minus_y = torch._foreach_sub(z, params)
        add_(z, d, -lr_t)
        same = all(scalar(c) for c in ckp1) and len(set(ckp1)) <= 1
        if same and ckp1 and scalar(lr_t) and scalar(beta1):
            c = ckp1[0]
            mul_(d, lr_t * (beta1 * (1 - c) - 1))
            add_(d, z_minus_y, c)
        else:
            for di, zy, c in zip(d, z_minus_y, ckp1):
                di.mul_(lr_t * (beta1 * (1 - c) - 1))
                di.add_(zy * c)
        new = {"step": k + 1, "z": z, "weight_sum": weight_sum, "lr_max": lr_max}
        return d, new

    return Transform(init, update)


@transform()
def schedule_free_adamw(
    lr: Hyper = 0.0025,
    b1: Hyper = 0.9,
    b2: Hyper = 0.999,
    warmup_steps: int | Tensor = 0,
    weight_decay: Hyper = 0.0,
    eps: Hyper = 1e-8,
    r: Hyper = 0.0,
    weight_lr_power: Hyper = 2.0,
) -> Transform:
    """Schedule-Free AdamW (Defazio et al. 2024): ``scale_by_debiased_rms -> add_decayed_weights -> schedule_free``.

    The update rule is in the module docstring; the defaults are ``schedulefree.AdamWScheduleFree``'s
    (``lr=0.0025``, ``betas=(0.9, 0.999)``, ``eps=1e-8``, ``weight_decay=0``, ``warmup_steps=0``,
    ``r=0``, ``weight_lr_power=2``). Weight decay is applied at ``y``, to the normalised direction
    (before the learning rate), as there. Use no learning-rate schedule (the averaging replaces it;
    warmup is ``warmup_steps``). The parameters this chain steps are ``y``; evaluate at
    :func:`schedule_free_eval` (in a torch loop: :class:`ScheduleFreeAdamW`'s ``eval_params()``).

    Args:
        lr: learning rate.
        b1: interpolation coefficient between ``z`` and the average ``x``.
        b2: decay rate of the second moment.
        warmup_steps: linear learning-rate warmup over this many steps.
        weight_decay: decoupled weight decay, applied at ``y``.
        eps: added to the denominator.
        r: polynomial weighting of the average.
        weight_lr_power: the average weights grow as the largest learning rate to this power.

    Returns:
        The chain.
    """
    return chain(
        scale_by_debiased_rms(b2, eps),
        add_decayed_weights(weight_decay),
        schedule_free(lr, b1, warmup_steps, r, weight_lr_power),
    )


def schedule_free_eval(params: Iterable[Tensor], z: Iterable[Tensor], b1: float | Tensor) -> list[Tensor]:
    """The evaluation weights ``x = (y - (1 - b1) z) / b1`` from the training weights ``y``.

    Computed as ``schedulefree`` does (``y.lerp(z, 1 - 1/b1)``); the inputs are not modified.

    Args:
        params: the training weights ``y`` (what a Schedule-Free chain steps).
        z: the chain's ``z`` state, one tensor per parameter.
        b1: the interpolation coefficient of the chain, ``> 0``.

    Returns:
        New tensors holding ``x``, one per parameter.
    """
    if scalar(b1) and b1 <= 0:
        raise ValueError(f"schedule_free_eval: b1 must be in (0, 1), got {b1!r}")
    w = 1 - 1 / b1
    return [torch.lerp(y.detach(), zi.to(y.device), w) for y, zi in zip(params, z)]


# ---------------------------------------------------------------------------------------------
# the torch optimizer

class ScheduleFreeAdamW(Optimizer):
    """Schedule-Free AdamW as a torch optimizer whose model always holds the training weights.

    ``schedulefree.AdamWScheduleFree``'s signature and defaults (param groups set ``b1``/``b2``,
    the chain's names, rather than ``betas``). No ``train()``/``eval()`` calls: the parameters hold
    ``y`` except inside :meth:`eval_params`; see the module docstring for evaluation and
    checkpoints.

    Args:
        params: parameters or param-group dicts.
        lr: learning rate.
        betas: ``(b1, b2)``.
        eps: added to the denominator.
        weight_decay: decoupled weight decay at ``y``.
        warmup_steps: linear learning-rate warmup.
        r: polynomial weighting of the average.
        weight_lr_power: the average weights grow as the largest learning rate to this power.
        nonfinite: as :class:`ravine.optim.Optimizer`.
        fused: as :class:`ravine.optim.Optimizer` (``True`` raises: the chain is not fusable).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.0025,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        *,
        nonfinite: str = "skip",
        fused: bool | str | None = False,
    ):
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"ScheduleFreeAdamW: betas must be a pair (beta1, beta2), got {betas!r}") from None
        chain_ = schedule_free_adamw(lr, b1, b2, warmup_steps, weight_decay, eps, r, weight_lr_power)
        self._train_copy: dict[Tensor, Tensor] | None = None  # y of each parameter inside eval_params()
        super().__init__(params, chain_, nonfinite=nonfinite, fused=fused)

    # -- the two sets of weights ------------------------------------------------------------

    def _params(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    @torch.no_grad()
    def _eval_of(self, group: dict, p: Tensor) -> Tensor:
        """``x`` of one parameter (a copy of ``y`` if it has not been stepped), from ``y``."""
        y = p if self._train_copy is None else self._train_copy[p]
        z = self.state.get(p, {}).get("z")
        return y.detach().clone() if z is None else schedule_free_eval([y], [z], group["b1"])[0]

    def eval_weights(self) -> list[Tensor]:
        """The evaluation weights ``x`` of every parameter, in ``param_groups`` order (new tensors).

        A parameter that has not been stepped yet is its own ``x`` (a copy). The model is untouched.

        Returns:
            One tensor per parameter of each group, in order.
        """
        return [self._eval_of(g, p) for g in self.param_groups for p in g["params"]]

    def train_weights(self) -> list[Tensor]:
        """The training weights ``y`` of every parameter, in ``param_groups`` order (new tensors),
        inside ``eval_params()`` as well as outside.

        Returns:
            One tensor per parameter of each group, in order.
        """
        if self._train_copy is None:
            return [p.detach().clone() for p in self._params()]
        return [self._train_copy[p].clone() for p in self._params()]

    @contextlib.contextmanager
    def eval_params(self) -> Iterator[None]:
        """Context manager: the parameters hold the evaluation weights ``x`` inside the block.

        On leaving (normally or by an exception) they hold exactly the training weights ``y`` they
        held before (restored from a copy, not recomputed). ``step()``, ``state_dict()`` and
        ``load_state_dict()`` inside the block raise (use :meth:`checkpoint`, which is right in
        both places). Blocks do not nest.

        Returns:
            A context manager (use ``with opt.eval_params(): ...``).
        """
        if self._train_copy is not None:
            raise RuntimeError("ScheduleFreeAdamW.eval_params() blocks do not nest")
        params = self._params()
        x = self.eval_weights()
        self._train_copy = {p: p.detach().clone() for p in params}
        with torch.no_grad():
            torch._foreach_copy_(params, x)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(params, [self._train_copy[p] for p in params])
            self._train_copy = None

    def _refuse_in_eval(self, what: str) -> None:
        if self._train_copy is not None:
            raise RuntimeError(
                f"ScheduleFreeAdamW.{what} inside eval_params(): the parameters hold the evaluation "
                "weights x there; call it after the block (they hold the training weights y), or save "
                "with opt.checkpoint(model), which stores both sets whichever block it is called in"
            )

    # -- the optimizer ----------------------------------------------------------------------

    def step(self, closure: Any = None) -> Any:
        """One Schedule-Free step of the training weights ``y``; raises inside ``eval_params()``.

        Args:
            closure: re-evaluates the loss, as in torch.

        Returns:
            The closure's loss, or ``None``.
        """
        self._refuse_in_eval("step()")
        return super().step(closure)

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state (``z``, ``exp_avg_sq``, the averaging weights) in torch's format;
        raises inside ``eval_params()``, where a model saved with it would hold ``x``.

        Returns:
            The state dict.
        """
        self._refuse_in_eval("state_dict()")
        return super().state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state saved by :meth:`state_dict` (raises inside ``eval_params()``).

        Args:
            state_dict: what :meth:`state_dict` returned.
        """
        self._refuse_in_eval("load_state_dict()")
        super().load_state_dict(state_dict)

    # -- checkpoints ------------------------------------------------------------------------

    def checkpoint(self, model: torch.nn.Module) -> dict[str, Any]:
        """A checkpoint of ``model`` and this optimizer that is right inside or outside ``eval_params()``.

        Args:
            model: the module whose parameters this optimizer steps.

        Returns:
            ``{"model": ..., "eval_model": ..., "optimizer": ...}``: the model's ``state_dict``
            with the training weights ``y`` (resume from it with :meth:`load_checkpoint`), the
            same with the evaluation weights ``x`` (ship this one), and the optimizer's state.
            Buffers (e.g. batch-norm statistics) are the model's current ones in both.
        """
        y = dict(zip(self._params(), self.train_weights()))
        x = dict(zip(self._params(), self.eval_weights()))
        train, evaluate = {}, {}
        for key, v in model.state_dict(keep_vars=True).items():
            train[key] = y[v].clone() if v in y else v.detach().clone()
            evaluate[key] = x[v] if v in x else v.detach().clone()
        return {"model": train, "eval_model": evaluate, "optimizer": Optimizer.state_dict(self)}

    def load_checkpoint(self, model: torch.nn.Module, checkpoint: dict[str, Any]) -> None:
        """Resume from :meth:`checkpoint`: the model gets the training weights, this optimizer its state.

        Args:
            model: the module whose parameters this optimizer steps.
            checkpoint: what :meth:`checkpoint` returned (e.g. after ``torch.save``/``torch.load``).
        """
        self._refuse_in_eval("load_checkpoint()")
        model.load_state_dict(checkpoint["model"])
        self.load_state_dict(checkpoint["optimizer"])
