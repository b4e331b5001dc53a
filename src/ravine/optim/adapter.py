"""The torch adapter: run any transform as a real ``torch.optim.Optimizer``.

The choices it makes, one per question a torch user asks:

- **Per-group hyperparameters.** The transform's hyperparameters are the optimizer's ``defaults``;
  a param group may override any of them (``{"params": biases, "weight_decay": 0.0}``). At each
  step every group runs ``transform.with_hyperparams(**group values)`` on its own parameters, so
  one chain serves all groups. A hyperparameter that a transform leaves for the optimizer to fill
  (``Transform.needs``: AdamW's ``lr_peak`` in the paper's convention) is filled from the group.
- **Clipping spans all groups.** A chain that starts with ``clip_by_global_norm`` clips by the
  norm of the gradients of every param group, as ``torch.nn.utils.clip_grad_norm_`` over all
  parameters (nanoGPT's decay/no-decay groups clip as one); ``per_group=True`` clips each group
  by its own norm.
- **One source of truth for the learning rate.** ``group["lr"]`` always holds the learning rate
  of the coming step, as in torch, so every ``torch.optim.lr_scheduler`` works. A hyperparameter
  given as a ravine schedule (a callable of the step) is evaluated by the adapter before each step
  and written into the group; if anything else (a torch scheduler) has changed that value in the
  meantime, the step raises instead of silently overriding one with the other.
- **State in torch's format.** ``optimizer.state[p]`` holds each parameter's tensors under torch's
  names (``exp_avg``, ``exp_avg_sq``, ``momentum_buffer``, ``square_avg``, ``sum``) and ``step``,
  so ``state_dict`` / ``load_state_dict`` are torch's own; schedules are pure functions of that
  step, so a resumed run continues bit for bit. Callables in groups are not saved (they are not
  data); the ones of the optimizer being loaded into are kept.
- **Gradients are not modified.** Transforms work in place on a copy of the gradients kept in a
  reusable buffer; ``p.grad`` is left as torch leaves it.
- **Non-finite gradients.** ``nonfinite="skip"`` (default) skips the whole step (no parameter or
  state changes), counts it in ``skipped_steps`` and warns naming the parameter; ``"raise"``
  raises ``FloatingPointError``; ``"apply"`` applies the step as torch would. The check reads the
  per-tensor gradient norms that the global clip norm is made of: one pass for both. Only a real
  inf or nan counts: finite gradients whose 2-norm overflows the dtype (a float32 gradient of
  1e20s) are applied as torch applies them, unless the chain clips by the global norm: that norm
  is then ``inf`` (as ``clip_grad_norm_``'s, which would scale the gradients to 0) and the step is
  skipped with a warning that names the overflow (``"apply"``: clipped to 0, as torch does).
- **Data parallel, not sharded.** Under ``DistributedDataParallel`` and inside torch's
  ``ZeroRedundancyOptimizer`` every rank steps as one process on the global batch. Sharded
  parameters (``DTensor``: FSDP2's ``fully_shard``, tensor parallelism) are refused with a
  ``TypeError``: each rank would clip by the norm of its own shard only.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from .._validation import Options, check
from ._state import assemble, check_global_clip, check_structure, clips_globally, first_state, layout_of, scatter
from .alias import torch_adagrad, torch_adam, torch_adamw, torch_rmsprop, torch_sgd
from .base import Transform, apply_updates, chain_info, finite_tensors, params_with_grad, tensor_norms
from .fused import FUSED_MODES, FusedEngine

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad"]

_NONFINITE = Options(("skip", "raise", "apply"))
_OVERFLOW = (
    "the global gradient norm is not finite although every gradient is (its sum of squares overflows the dtype; "
    "torch.nn.utils.clip_grad_norm_ returns inf there too and scales the gradients to 0)"
)


def _peak_lr(group: dict[str, Any], advance: bool) -> float:
    """Where the group's learning rate peaks: its ravine schedule's ``peak``, a torch scheduler's
    ``initial_lr``, else its first value (with a warning once it is exceeded)."""
    schedule = group["schedules"].get("lr")
    peak = (getattr(schedule, "peak", None) if schedule is not None else None) or group.get("initial_lr")
    if peak is not None:
        return peak
    # nothing says where the learning rate peaks: take the first one (right for a constant lr)
    peak = group.setdefault("first_lr", group["lr"])
    if advance and group["lr"] > peak and not group.get("warned_lr_peak"):
        group["warned_lr_peak"] = True
        warnings.warn(
            f"lr_peak (where the learning rate peaks) defaults to the group's first learning rate {peak!r}, "
            f"but group['lr'] is now {group['lr']!r}: pass lr_peak=... (the schedule's peak) when you set "
            "group['lr'] yourself, or use a ravine schedule or a torch LR scheduler",
            RuntimeWarning,
            stacklevel=5,
        )
    return peak


def _scheduled(name: str, schedule: Callable[[int], float], step: int) -> float:
    """The value of a group's ravine schedule at ``step``, which must be a finite number."""
    value = float(schedule(step))
    if not math.isfinite(value):
        label = getattr(schedule, "__name__", None) or repr(schedule)
        raise ValueError(
            f"the schedule of group[{name!r}] ({label}) returned {value!r} at step {step}: "
            f"a schedule must return a finite number"
        )
    return value


def _check_not_sharded(params: list[Tensor], group: int) -> None:
    """Refuse ``DTensor`` parameters (FSDP2, tensor parallelism), which the transforms don't support."""
    dtensor = getattr(sys.modules.get("torch.distributed.tensor"), "DTensor", None)
    if dtensor is None:  # torch.distributed.tensor not imported: no parameter can be a DTensor
        return
    for i, p in enumerate(params):
        if isinstance(p, dtensor):
            raise TypeError(
                f"param group {group}: params[{i}] is a DTensor (sharded by FSDP2's fully_shard or tensor "
                f"parallelism), got placements {tuple(p.placements)}; ravine.optim.Optimizer supports plain tensors "
                "only (global-norm clipping and the foreach/flat steps would see one shard), so use "
                "DistributedDataParallel, "
                "optionally with torch.distributed.optim.ZeroRedundancyOptimizer, or torch.optim under FSDP2"
            )


# what a transform may ask the optimizer to fill in (Transform.needs): name -> value from a group
_GROUP_VALUES: dict[str, Callable[[dict[str, Any], bool], Any]] = {"lr_peak": _peak_lr}


class _Host:
    """The optimizer as its fused engine sees it (the members of ``ravine.optim.fused.Host``)."""

    def __init__(self, opt: Optimizer):
        self.opt = opt

    @property
    def state(self) -> dict[Tensor, dict]:
        return self.opt.state

    @property
    def nonfinite(self) -> str:
        return self.opt.nonfinite

    def transform_at(self, group: dict, step: int, advance: bool = True) -> Transform:
        return self.opt._transform_at(group, step, advance)

    def unfused_plans(self, group: dict, params: list[Tensor]) -> list[tuple[Transform, list[Tensor], int]]:
        return self.opt._plans(group, params)

    def update(self, t: Transform, params: list[Tensor], step: int, total_norm: Tensor | None) -> dict[str, Any]:
        return self.opt._update(t, params, step, total_norm)

    def check(self, units: list[tuple[list[Tensor], bool]]) -> Tensor | None | bool:
        return self.opt._check(units)

    def reject(self) -> None:
        self.opt._reject()

    def release(self, params: list[Tensor]) -> None:
        for p in params:
            self.opt._buffers.pop(p, None)


#: Options of the whole optimizer that a param group may repeat (with the same value) but not change.
_OPTIONS = ("nonfinite", "fused")


class Optimizer(torch.optim.Optimizer):
    """Run a ravine transform (e.g. ``chain(clip_by_global_norm(1.0), adamw(3e-4))``) in torch.

    Args:
        params: parameters or param-group dicts, as for any torch optimizer. A group may set any
            hyperparameter of ``transform`` (see ``transform.hyperparams``).
        transform: a :class:`ravine.optim.Transform`.
        nonfinite: ``"skip"`` (default), ``"raise"`` or ``"apply"``; see the module docstring.
        fused: ``False`` (default): one foreach op per transform pass over the parameter list.
            ``True``: parameters, gradients and state in flat buffers and the chain compiled by
            ``torch.compile`` into one kernel (the flat path, with a warning, where compilation is
            unavailable); ``"flat"``: flat buffers without compiling; ``"compile"``: compile or
            raise; ``None``: the flat path where the chain allows it, else unfused. Same numbers
            to float rounding and the same ``state_dict``; see :mod:`ravine.optim.fused`.

    After each ``step()``, ``stats`` holds what the chain reported (floats and bools):

    - ``grad_norm``: the global gradient norm before clipping (with ``clip_by_global_norm``
      first in the chain: over all param groups, ``clip_grad_norm_``'s return value);
    - ``clipped_norm``: the global norm after clipping, ``grad_norm * min(1, max_norm / (grad_norm + 1e-6))``;
    - ``clipped``: whether the step was clipped;
    - ``clip_fraction``: the fraction of units clipped (``clip_adaptive`` only);
    - ``groups``: the same per param group (and per step count within a group).

    The top-level keys are those of the first group that reports them; after a skipped step there
    are none (``groups`` is empty). ``skipped_steps`` counts the steps skipped for non-finite
    gradients.
    """

    def __init__(
        self, params: Iterable[Any], transform: Transform, *, nonfinite: str = "skip", fused: bool | str | None = False
    ):
        if not isinstance(transform, Transform):
            raise TypeError(
                f"transform must be a ravine.optim.Transform (e.g. ravine.optim.adamw(1e-3)), "
                f"got {type(transform).__name__}"
            )
        check("nonfinite", nonfinite, _NONFINITE)
        check("fused", fused, FUSED_MODES)
        unknown = sorted(set(transform.needs) - set(_GROUP_VALUES))
        if unknown:
            raise ValueError(f"{transform.name} needs {unknown}; the optimizer provides {sorted(_GROUP_VALUES)}")
        self.transform = transform
        self.nonfinite = nonfinite
        self.fused = fused
        self.skipped_steps = 0
        self._stats: list[dict[str, Any]] = []
        self._buffers: dict[Tensor, Tensor] = {}  # the unfused path's gradient copies
        self._fused = None if fused is False else FusedEngine(fused)
        self._host = _Host(self)
        super().__init__(params, dict(transform.hyperparams))

    # -- groups and hyperparameters ------------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group, as ``torch.optim.Optimizer.add_param_group``; its keys must be
        hyperparameters of the chain. A group may repeat the optimizer's own options (``nonfinite``,
        ``fused``) with the optimizer's values, as ``ZeroRedundancyOptimizer`` does with every
        constructor keyword; they are options of the whole optimizer, so a different value is refused."""
        for k in _OPTIONS:
            if k in param_group and param_group[k] != getattr(self, k):
                raise ValueError(
                    f"param group sets {k}={param_group[k]!r}, but {k} is an option of the whole optimizer "
                    f"(here {getattr(self, k)!r}): it cannot differ between groups"
                )
        param_group = {k: v for k, v in param_group.items() if k not in _OPTIONS}
        unknown = sorted(
            k
            for k in param_group
            if k not in self.transform.hyperparams and k not in ("params", "param_names", "initial_lr")
        )
        if unknown:
            raise ValueError(
                f"param group sets unknown hyperparameter(s) {unknown}; "
                f"{self.transform.name} accepts {sorted(self.transform.hyperparams)}"
            )
        super().add_param_group(param_group)
        _check_not_sharded(self.param_groups[-1]["params"], len(self.param_groups) - 1)
        check_global_clip(self.transform, len(self.param_groups))
        group = self.param_groups[-1]
        schedules: dict[str, Callable[[int], float]] = {}
        for k in self.transform.hyperparams:
            v = group[k]
            if callable(v) and not isinstance(v, Tensor) and k not in self.transform.static:
                schedules[k] = v
        group["schedules"] = schedules
        group["scheduled_values"] = {}
        for k, fn in schedules.items():
            group[k] = _scheduled(k, fn, 0)
            group["scheduled_values"][k] = group[k]
        # check the group's values now rather than at the first step
        self._transform_at(group, step=0, advance=False)

    def _transform_at(self, group: dict[str, Any], step: int, advance: bool = True) -> Transform:
        """The chain with the group's hyperparameters at ``step``; ``advance`` writes the group's
        ravine schedules' values at ``step`` into it (after checking nothing else changed them)."""
        schedules = group.get("schedules", {})
        written = group.setdefault("scheduled_values", {})
        for k, fn in schedules.items():
            if k in written and group[k] != written[k]:
                raise RuntimeError(
                    f"group[{k!r}] is a ravine schedule, but something else (a torch LR scheduler?) "
                    f"changed it from {written[k]!r} to {group[k]!r}; use either a ravine schedule or a "
                    f"torch scheduler for {k!r}, not both"
                )
            if advance:
                group[k] = _scheduled(k, fn, step)
                written[k] = group[k]
        values = {k: group[k] for k in self.transform.hyperparams}
        t = self.transform.with_hyperparams(**values)
        filled = {k: _GROUP_VALUES[k](group, advance) for k in t.needs if values.get(k) is None}
        return self.transform.with_hyperparams(**(values | filled)) if filled else t

    def _plans(self, group: dict[str, Any], params: list[Tensor]) -> list[tuple[Transform, list[Tensor], int]]:
        """(chain, parameters, step) for each step count among the group's parameters: parameters
        that have stepped a different number of times (e.g. unused for a while) are stepped in
        separate calls, so bias corrections and schedules see each one's own step."""
        by_step: dict[int, list[Tensor]] = {}
        for p in params:
            by_step.setdefault(int(self.state[p].get("step", 0)), []).append(p)
        return [(self._transform_at(group, step), ps, step) for step, ps in sorted(by_step.items())]

    # -- the step ------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every param group; ``closure`` re-evaluates the loss, as in torch, and its
        loss is returned."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = [(i, group, params) for i, group in enumerate(self.param_groups) if (params := params_with_grad(group))]
        if self._fused is not None:
            self._stats = self._fused.step(self._host, work)
            return loss
        plans = [plan for _, group, params in work for plan in self._plans(group, params)]
        total = self._check([([p.grad for p in ps], clips_globally(t)) for t, ps, _ in plans])
        if total is False:
            self._stats = []
            return loss
        self._stats = [self._update(t, ps, step, total if clips_globally(t) else None) for t, ps, step in plans]
        return loss

    def _check(self, units: list[tuple[list[Tensor], bool]]) -> Tensor | None | bool:
        """One pass over the gradients of a step, ``units`` of (gradients, whether they are clipped
        by the global norm): ``False`` if the step is skipped (see ``nonfinite``), else the global
        norm of the clipped units (``None`` if there are none)."""
        grads = [g for gs, _ in units for g in gs]
        clipped = [i for i, clip in enumerate(clip for gs, clip in units for _ in gs) if clip]
        if not grads or (self.nonfinite == "apply" and not clipped):
            return None
        norms = tensor_norms(grads)
        total = None
        if clipped:
            total = torch.linalg.vector_norm(norms if len(clipped) == len(grads) else norms[clipped], 2.0)
        if self.nonfinite != "apply":
            finite = norms.isfinite().all() if total is None else norms.isfinite().all() & total.isfinite()
            if not bool(finite):  # one device sync for the whole check
                # a real inf/nan, or finite gradients whose sum of squares overflows: an overflowed
                # clip norm skips the step (named by _reject); an overflowed norm of a gradient that
                # is not clipped does not, and the step is applied as torch applies it
                if (total is not None and not bool(total.isfinite())) or not bool(finite_tensors(grads, norms).all()):
                    self._reject()
                    return False
        return total

    def _reject(self) -> None:
        """Skip (or raise) for non-finite gradients, naming the first parameter that has one."""
        where = [
            (gi, pi) for gi, g in enumerate(self.param_groups) for pi, p in enumerate(g["params"]) if p.grad is not None
        ]
        finite = finite_tensors([self.param_groups[gi]["params"][pi].grad for gi, pi in where])
        if bool(finite.all()):  # each gradient is finite, their global norm is not
            self._skip(_OVERFLOW)
            return
        gi, pi = where[int((~finite).nonzero()[0, 0])]
        self._skip(f"non-finite gradient (inf or nan) in parameter {self._param_name(gi, pi)}")

    def _skip(self, what: str) -> None:
        if self.nonfinite == "raise":
            raise FloatingPointError(what)
        self.skipped_steps += 1
        warnings.warn(
            f"skipped optimizer step: {what} ({self.skipped_steps} skipped so far)", RuntimeWarning, stacklevel=5
        )

    def _param_name(self, group_index: int, index: int) -> str:
        group = self.param_groups[group_index]
        names = group.get("param_names")
        if names is not None and index < len(names):
            return repr(names[index])
        p = group["params"][index]
        return f"group {group_index} param {index} (shape {tuple(p.shape)})"

    def _update(self, t: Transform, params: list[Tensor], step: int, total_norm: Tensor | None) -> dict[str, Any]:
        """The unfused step of ``params`` (all at ``step``) by the chain ``t``; returns its info."""
        structure, layout = layout_of(t)
        fresh = [p for p in params if "step" not in self.state[p]]
        if fresh:
            fresh_state = [self.state[p] for p in fresh]
            scatter(layout, t.init(fresh), fresh_state)
            for d in fresh_state:
                d["step"] = 0
                d["structure"] = structure
        for p in params:
            check_structure(self.state[p], structure)
        per_param = [self.state[p] for p in params]
        state = assemble(layout, per_param, step)
        if total_norm is not None:
            first_state(state)["total_norm"] = total_norm
        grads = []
        for p in params:
            buf = self._buffers.get(p)
            if buf is None or buf.shape != p.grad.shape or buf.dtype != p.grad.dtype:
                buf = self._buffers[p] = torch.empty_like(p.grad, memory_format=torch.preserve_format)
            grads.append(buf)
        torch._foreach_copy_(grads, [p.grad for p in params])
        updates, new_state = t.update(grads, state, params)
        apply_updates(params, updates)
        scatter(layout, new_state, per_param)
        for d in per_param:
            d["step"] = step + 1
        return chain_info(new_state)

    @property
    def stats(self) -> dict[str, Any]:
        """What the last step reported (see the class docstring for the keys)."""
        groups = []
        for s in self._stats:
            g = {}
            for k, v in s.items():
                if isinstance(v, Tensor):
                    v = v.item() if v.numel() == 1 else v.detach().cpu()
                g["grad_norm" if k == "norm" else k] = v
            groups.append(g)
        out: dict[str, Any] = {"groups": groups}
        for g in groups:
            for k, v in g.items():
                out.setdefault(k, v)
        return out

    # -- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The state in ``torch.optim``'s per-parameter format (schedules and other callables left out)."""
        sd = super().state_dict()
        for g in sd["param_groups"]:
            for k in [k for k, v in g.items() if callable(v) or k == "schedules"]:
                del g[k]
        sd["state"] = {k: {n: v for n, v in s.items() if n != "structure"} for k, s in sd["state"].items()}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state saved by ``state_dict`` (ravine's or a matching torch optimizer's); this
        optimizer's schedules are kept."""
        keep = [
            {k: v for k, v in g.items() if callable(v) and not isinstance(v, Tensor)} | {"schedules": g["schedules"]}
            for g in self.param_groups
        ]
        super().load_state_dict(state_dict)
        if self._fused is not None:
            self._fused.reset()
        for g, kept in zip(self.param_groups, keep):
            g.update(kept)
            g.setdefault("scheduled_values", {})
            for k, v in self.defaults.items():  # a checkpoint from before a hyperparameter existed
                g.setdefault(k, v)
        for group in self.param_groups:
            structure, _ = layout_of(self._transform_at(group, 0, advance=False))
            for p in group["params"]:
                d = self.state.get(p)
                if d and "step" in d:
                    d["step"] = int(d["step"])
                    d["structure"] = structure


# ---------------------------------------------------------------------------------------------
# torch-compatible classes: torch's signatures and defaults, the chains of ravine.optim.alias;
# ``nonfinite`` and ``fused`` as in Optimizer (torch's ``fused`` picks its own kernel; ours the fused path)


class SGD(Optimizer):
    """torch.optim.SGD's signature and defaults, computed by ``torch_sgd``'s chain."""

    def __init__(
        self,
        params,
        lr=1e-3,
        momentum=0.0,
        dampening=0.0,
        weight_decay=0.0,
        nesterov=False,
        *,
        maximize=False,
        nonfinite="skip",
        fused=False,
    ):
        super().__init__(
            params,
            torch_sgd(lr, momentum, dampening, weight_decay, nesterov, maximize),
            nonfinite=nonfinite,
            fused=fused,
        )


class Adam(Optimizer):
    """torch.optim.Adam's signature and defaults, computed by ``torch_adam``'s chain."""

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        amsgrad=False,
        *,
        maximize=False,
        decoupled_weight_decay=False,
        nonfinite="skip",
        fused=False,
    ):
        super().__init__(
            params,
            torch_adam(lr, tuple(betas), eps, weight_decay, amsgrad, maximize, decoupled_weight_decay),
            nonfinite=nonfinite,
            fused=fused,
        )


class AdamW(Optimizer):
    """torch.optim.AdamW's signature and defaults, computed by ``torch_adamw``'s chain."""

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=1e-2,
        amsgrad=False,
        *,
        maximize=False,
        nonfinite="skip",
        fused=False,
    ):
        super().__init__(
            params,
            torch_adamw(lr, tuple(betas), eps, weight_decay, amsgrad, maximize),
            nonfinite=nonfinite,
            fused=fused,
        )


class RMSprop(Optimizer):
    """torch.optim.RMSprop's signature and defaults, computed by ``torch_rmsprop``'s chain."""

    def __init__(
        self,
        params,
        lr=1e-2,
        alpha=0.99,
        eps=1e-8,
        weight_decay=0.0,
        momentum=0.0,
        centered=False,
        *,
        maximize=False,
        nonfinite="skip",
        fused=False,
    ):
        super().__init__(
            params,
            torch_rmsprop(lr, alpha, eps, weight_decay, momentum, centered, maximize),
            nonfinite=nonfinite,
            fused=fused,
        )


class Adagrad(Optimizer):
    """torch.optim.Adagrad's signature and defaults, computed by ``torch_adagrad``'s chain."""

    def __init__(
        self,
        params,
        lr=1e-2,
        lr_decay=0.0,
        weight_decay=0.0,
        initial_accumulator_value=0.0,
        eps=1e-10,
        *,
        maximize=False,
        nonfinite="skip",
        fused=False,
    ):
        super().__init__(
            params,
            torch_adagrad(lr, lr_decay, weight_decay, initial_accumulator_value, eps, maximize),
            nonfinite=nonfinite,
            fused=fused,
        )
