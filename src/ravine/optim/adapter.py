"""The torch adapter: run any transform as a real ``torch.optim.Optimizer``.

Design answers (see ``design.md``):

- **Per-group hyperparameters.** The transform's hyperparameters are the optimizer's ``defaults``;
  a param group may override any of them (``{"params": biases, "weight_decay": 0.0}``). At each
  step every group runs ``transform.with_hyperparams(**group values)`` on its own parameters, so
  one chain serves all groups. A chain therefore reduces (global-norm clipping) over the
  parameters of one group: with several groups, clip over each group, or keep one group.
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
  raises ``FloatingPointError``; ``"apply"`` applies the step as torch would.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from .._validation import Options, check
from .alias import torch_adagrad, torch_adam, torch_adamw, torch_rmsprop, torch_sgd
from .base import State, Transform, apply_updates, chain_info, params_with_grad

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad"]

_NONFINITE = Options(("skip", "raise", "apply"))


class _Slot:
    """A per-parameter list in a state layout, stored in ``optimizer.state[p][name]``."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


def _layout(state: State) -> Any:
    """Replace each per-parameter list by a named slot; names are torch's unless they clash."""
    counts: dict[str, int] = {}

    def count(s: State) -> None:
        for k, v in s.items():
            if k == "parts":
                for p in v:
                    count(p)
            elif isinstance(v, list):
                counts[k] = counts.get(k, 0) + 1

    count(state)
    seen: dict[str, int] = {}

    def build(s: State) -> dict:
        out: dict[str, Any] = {}
        for k, v in s.items():
            if k == "parts":
                out[k] = [build(p) for p in v]
            elif k == "step":
                out[k] = None
            elif isinstance(v, list):
                i = seen.get(k, 0)
                seen[k] = i + 1
                out[k] = _Slot(k if counts[k] == 1 else f"{k}.{i}")
        return out

    return build(state)


def _slots(layout: Any) -> list[str]:
    names: list[str] = []

    def visit(s: dict) -> None:
        for k, v in s.items():
            if k == "parts":
                for p in v:
                    visit(p)
            elif isinstance(v, _Slot):
                names.append(v.name)

    visit(layout)
    return names


def _assemble(layout: dict, per_param: list[dict], step: int) -> State:
    out: State = {}
    for k, v in layout.items():
        if k == "parts":
            out[k] = [_assemble(p, per_param, step) for p in v]
        elif k == "step":
            out[k] = step
        else:
            out[k] = [d[v.name] for d in per_param]
    return out


def _scatter(layout: dict, state: State, per_param: list[dict]) -> None:
    for k, v in layout.items():
        if k == "parts":
            for lp, sp in zip(v, state["parts"]):
                _scatter(lp, sp, per_param)
        elif isinstance(v, _Slot):
            for d, tensor in zip(per_param, state[k]):
                d[v.name] = tensor


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

    After each ``step()``: ``stats`` holds ``grad_norm`` and ``clipped`` when the chain clips
    (per group: ``stats["groups"]``), and ``skipped_steps`` counts skipped steps.
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
        self.transform = transform
        self.nonfinite = nonfinite
        self.skipped_steps = 0
        self._stats: list[dict[str, Any]] = []
        self._buffers: dict[Tensor, Tensor] = {}
        self._layouts: dict[str, Any] = {}
        from .fused import FUSED_MODES, FusedEngine

        check("fused", fused, FUSED_MODES)
        self.fused = fused
        self._fused = None if fused is False else FusedEngine(self, fused)
        super().__init__(params, dict(transform.hyperparams))

    # -- groups and hyperparameters ------------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
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
        group = self.param_groups[-1]
        schedules: dict[str, Callable[[int], float]] = {}
        for k in self.transform.hyperparams:
            v = group[k]
            if callable(v) and not isinstance(v, Tensor) and k not in self.transform.static:
                schedules[k] = v
        group["schedules"] = schedules
        group["scheduled_values"] = {}
        for k, fn in schedules.items():
            group[k] = float(fn(0))
            group["scheduled_values"][k] = group[k]
        # check the group's values now rather than at the first step
        self._group_transform(group, step=0, advance=False)

    def _group_transform(self, group: dict[str, Any], step: int, advance: bool = True) -> Transform:
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
                group[k] = float(fn(step))
                written[k] = group[k]
        hp = {k: group[k] for k in self.transform.hyperparams}
        if "lr_peak" in hp and hp["lr_peak"] is None and hp.get("decay_convention") == "decoupled":
            sched = schedules.get("lr")
            peak = (getattr(sched, "peak", None) if sched is not None else None) or group.get("initial_lr")
            if peak is None:
                # nothing says where the learning rate peaks: take the first one (right for a constant lr)
                peak = group.setdefault("first_lr", group["lr"])
                if advance and group["lr"] > peak and not group.get("warned_lr_peak"):
                    group["warned_lr_peak"] = True
                    warnings.warn(
                        f"decoupled weight decay assumes the learning rate peaks at its first value {peak!r}, "
                        f"but group['lr'] is now {group['lr']!r}: pass lr_peak=... (the schedule's peak) when "
                        "you set group['lr'] yourself, or use a ravine schedule or a torch LR scheduler",
                        RuntimeWarning,
                        stacklevel=4,
                    )
            hp["lr_peak"] = peak
        return self.transform.with_hyperparams(**hp)

    # -- the step ------------------------------------------------------------------------------

    def _param_name(self, group_index: int, group: dict, index: int) -> str:
        names = group.get("param_names")
        if names is not None and index < len(names):
            return repr(names[index])
        p = group["params"][index]
        return f"group {group_index} param {index} (shape {tuple(p.shape)})"

    def _check_finite(self) -> bool:
        """True if every gradient is finite; otherwise raise or warn as ``nonfinite`` says."""
        grads, where = [], []
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                if p.grad is not None:
                    grads.append(p.grad)
                    where.append((gi, pi))
        if not grads:
            return True
        norms = torch._foreach_norm(grads)
        finite = torch.stack([n.to(norms[0].device, torch.float32) for n in norms]).isfinite()
        if bool(finite.all()):
            return True
        k = int((~finite).nonzero()[0, 0])
        gi, pi = where[k]
        name = self._param_name(gi, self.param_groups[gi], pi)
        if self.nonfinite == "raise":
            raise FloatingPointError(f"non-finite gradient (inf or nan) in parameter {name}")
        self.skipped_steps += 1
        warnings.warn(
            f"skipped optimizer step: non-finite gradient (inf or nan) in parameter {name} "
            f"({self.skipped_steps} skipped so far)",
            RuntimeWarning,
            stacklevel=3,
        )
        return False

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._fused is not None:
            self._stats = self._fused.step()
            return loss
        if self.nonfinite != "apply" and not self._check_finite():
            self._stats = []
            return loss
        stats = []
        for group in self.param_groups:
            params = params_with_grad(group)
            if not params:
                continue
            # params that have stepped a different number of times (e.g. unused for a while) are
            # stepped in separate calls, so bias corrections and schedules see each one's own step.
            by_step: dict[int, list[Tensor]] = {}
            for p in params:
                by_step.setdefault(int(self.state[p].get("step", 0)), []).append(p)
            for step, ps in sorted(by_step.items()):
                t = self._group_transform(group, step)
                stats.append(self._update(t, ps, step))
        self._stats = stats
        return loss

    def _update(self, t: Transform, params: list[Tensor], step: int) -> dict[str, Any]:
        structure = repr(t.structure())
        layout = self._layouts.get(structure)
        if layout is None:
            layout = self._layouts[structure] = _layout(t.init([]))
        fresh = [p for p in params if "step" not in self.state[p]]
        if fresh:
            fresh_state = [self.state[p] for p in fresh]
            _scatter(layout, t.init(fresh), fresh_state)
            for d in fresh_state:
                d["step"] = 0
                d["structure"] = structure
        for p in params:
            if self.state[p].setdefault("structure", structure) != structure:
                raise ValueError(
                    "the optimizer's structure changed after training started (a structural "
                    "hyperparameter such as momentum=0 -> >0, amsgrad or weight_decay=0 -> >0 was "
                    f"changed): was {self.state[p]['structure']}, now {structure}"
                )
        per_param = [self.state[p] for p in params]
        state = _assemble(layout, per_param, step)
        grads = []
        for p in params:
            buf = self._buffers.get(p)
            if buf is None or buf.shape != p.grad.shape or buf.dtype != p.grad.dtype:
                buf = self._buffers[p] = torch.empty_like(p.grad, memory_format=torch.preserve_format)
            grads.append(buf)
        torch._foreach_copy_(grads, [p.grad for p in params])
        updates, new_state = t.update(grads, state, params)
        apply_updates(params, updates)
        _scatter(layout, new_state, per_param)
        for d in per_param:
            d["step"] = step + 1
        return chain_info(new_state)

    @property
    def stats(self) -> dict[str, Any]:
        """What the last step reported: ``grad_norm`` and ``clipped`` of the first group that
        clips, and ``groups`` with every group's report (floats and bools)."""
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
        sd = super().state_dict()
        for g in sd["param_groups"]:
            for k in [k for k, v in g.items() if callable(v) or k == "schedules"]:
                del g[k]
        sd["state"] = {k: {n: v for n, v in s.items() if n != "structure"} for k, s in sd["state"].items()}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
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
        for group in self.param_groups:
            t = self._group_transform(group, 0, advance=False)
            for p in group["params"]:
                d = self.state.get(p)
                if d and "step" in d:
                    d["step"] = int(d["step"])
                    d["structure"] = repr(t.structure())


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
