"""The fused engine: decides, step by step, which param groups run on flat buffers and how (one
compiled graph, or eagerly), and talks to its optimizer only through :class:`Host`."""

from __future__ import annotations

import warnings
from typing import Any, Protocol

import torch
from torch import Tensor

from ..._validation import Options
from .._state import assemble, by_slot, check_structure, clips_globally, first_state, layout_of, leaves
from ..base import Transform, apply_updates, chain_info
from .compiled import Compiled, compiler_problem, signature
from .flat import FlatGroup
from .matrix import MatrixRunner, has_matrix, matrix_problem, on_views

__all__ = ["FUSED_MODES", "Host", "FusedEngine", "check_fusable"]

FUSED_MODES = Options((False, True, None, "flat", "compile"))


class Host(Protocol):
    """What the engine needs from the optimizer that owns it (:class:`ravine.optim.Optimizer`
    hands over a small object with these members)."""

    @property
    def state(self) -> dict[Tensor, dict]:
        """Per-parameter state, torch's ``optimizer.state``."""

    @property
    def nonfinite(self) -> str:
        """``"skip"``, ``"raise"`` or ``"apply"``."""

    def transform_at(self, group: dict, step: int, advance: bool = True) -> Transform:
        """The chain of a param group at ``step`` (``advance``: move its schedules to ``step``)."""

    def unfused_plans(self, group: dict, params: list[Tensor]) -> list[tuple[Transform, list[Tensor], int]]:
        """The unfused path's steps for a group: (chain, parameters, step), one per step count."""

    def update(self, t: Transform, params: list[Tensor], step: int, total_norm: Tensor | None) -> dict[str, Any]:
        """The unfused step of ``params``; returns the chain's info."""

    def check(self, units: list[tuple[list[Tensor], bool]]) -> Tensor | None | bool:
        """One pass over the gradients: ``False`` if the step is skipped (counted, warned or
        raised), else the global clip norm of the units that clip globally (``None`` if none)."""

    def reject(self) -> None:
        """Count, warn or raise for a step the compiled graph refused (non-finite gradients)."""

    def release(self, params: list[Tensor]) -> None:
        """Free the unfused path's gradient copies of ``params`` (they now live in flat buffers)."""


def check_fusable(t: Transform, compile: bool = False) -> str | None:
    """Why ``t`` cannot run on flat buffers (``None`` if it can).

    Every primitive must declare itself fusable (``@transform(fusable=True)``, or
    ``fusable="matrix"``: run per parameter, see :mod:`~ravine.optim.fused.matrix`); ``compile=True``
    also requires each elementwise one to trace into one graph (``compilable``; a matrix primitive
    that does not is run eagerly). Per-parameter options (masks, ``per_row``) and tensor
    hyperparameters of more than one element depend on the parameters' shapes and make a chain
    ineligible.
    """
    for leaf in leaves(t):
        if not leaf.fusable:
            return f"{leaf.name} is not an elementwise primitive (it does not declare itself fusable)"
        if leaf.fusable == "matrix":
            why = matrix_problem(leaf, compile)
            if why is not None:
                return why
            continue
        if compile and not leaf.compilable:
            return f"{leaf.name} has a data-dependent branch and cannot be compiled into one kernel"
        hp = leaf.hyperparams
        if hp.get("per_row"):
            return f"{leaf.name}(per_row=True) reduces per row of each tensor"
        if hp.get("mask") is not None:
            return f"{leaf.name} has a mask (per-parameter selection)"
        for k, v in hp.items():
            if isinstance(v, Tensor) and (v.numel() != 1 or v.dim() > 1):
                return f"{leaf.name}: hyperparameter {k} is a tensor of shape {tuple(v.shape)}, not a scalar"
    return None


def _shape_problem(params: list[Tensor]) -> str | None:
    """Why these parameters cannot share one flat buffer (``None`` if they can)."""
    seen: set[tuple] = set()
    for p in params:
        if p.is_sparse or p.layout != torch.strided:
            return "a parameter is not a dense strided tensor"
        if not p.is_contiguous():
            return f"a parameter of shape {tuple(p.shape)} is not contiguous"
        if p.grad is not None and (p.grad.is_sparse or p.grad.dtype != p.dtype):
            return "a gradient is sparse or of another dtype than its parameter"
        key = (p.device, p.untyped_storage().data_ptr())
        if key in seen:
            return "two parameters share memory (tied views)"
        seen.add(key)
    return None


class FusedEngine:
    """Runs the steps of an optimizer on flat buffers (see :mod:`ravine.optim.fused`).

    ``groups`` maps a param group's index to its :class:`FlatGroup`; ``compiled`` caches the
    compiled steps by (chain signatures, device, masked, buckets); ``broken`` remembers
    the ones whose compilation failed.
    """

    def __init__(self, mode: bool | str | None):
        self.mode = mode  # True / "compile" / "flat" / None (auto: flat where eligible)
        self.groups: dict[int, FlatGroup] = {}
        self.compiled: dict[tuple, Compiled] = {}
        self.broken: dict[tuple, str] = {}
        self.warned = False
        # the compiled per-shape functions of matrix primitives (Muon's Newton-Schulz step)
        self.matrix = MatrixRunner(mode, compiler_problem, self._warn)

    def reset(self) -> None:
        """Forget the flat buffers (after ``load_state_dict`` replaced the state tensors)."""
        self.groups.clear()

    def want_compile(self) -> bool:
        return self.mode in (True, "compile")

    # -- the step -------------------------------------------------------------------------------

    def step(self, host: Host, work: list[tuple[int, dict, list[Tensor]]]) -> list[dict[str, Any]]:
        """One optimizer step of the groups ``work`` (index, group, parameters with a gradient)."""
        plans = [(group, params, self._flat(host, index, group, params)) for index, group, params in work]
        for _, _, flat in plans:
            if flat is not None:
                flat.gather_grads()
        if plans and all(flat is not None for _, _, flat in plans) and self.want_compile():
            # every group in one graph: one global clip norm, and the check folded into it
            flats = [flat for _, _, flat in plans]
            ts = [host.transform_at(group, flat.step) for group, _, flat in plans]
            infos = self._run_compiled(ts, flats, masked=host.nonfinite != "apply")
            if infos is False:  # non-finite: nothing was written
                host.reject()
                return []
            if infos is not None:
                for flat in flats:
                    self._advance(host, flat)
                return infos
            runs = [[(t, flat.params, flat.step)] for t, flat in zip(ts, flats)]
        else:
            runs = [
                [(host.transform_at(group, flat.step), flat.params, flat.step)]
                if flat is not None
                else host.unfused_plans(group, params)
                for group, params, flat in plans
            ]
        return self._run_eager(host, plans, runs)

    def _run_eager(self, host: Host, plans: list[tuple], runs: list[list[tuple]]) -> list[dict[str, Any]]:
        """Each group on its own (``runs``: per group, its (chain, parameters, step) calls):
        unfused, flat, or a one-group compiled graph."""
        units = []
        for (_, _, flat), group_runs in zip(plans, runs):
            for t, params, _ in group_runs:
                grads = flat.flat_grads if flat is not None else [p.grad for p in params]
                units.append((grads, clips_globally(t)))
        total = host.check(units)
        if total is False:
            return []
        stats: list[dict[str, Any]] = []
        for (_, _, flat), group_runs in zip(plans, runs):
            for t, params, step in group_runs:
                norm = total if clips_globally(t) else None
                if flat is None:
                    stats.append(host.update(t, params, step, norm))
                    continue
                infos = self._run_compiled([t], [flat], masked=False, total=norm) if self.want_compile() else None
                stats.append(infos[0] if infos else self._run_flat(t, flat, norm))
                self._advance(host, flat)
        return stats

    def _flat(self, host: Host, index: int, group: dict, params: list[Tensor]) -> FlatGroup | None:
        """The group's flat buffers, built or rebuilt if needed; ``None``: it runs unfused this step
        (some parameters have no gradient or another step count, or the chain is not eligible)."""
        steps = {int(host.state[p].get("step", 0)) for p in params}
        if len(params) != len(group["params"]) or len(steps) != 1:
            self.groups.pop(index, None)
            return None
        flat = self.groups.get(index)
        if flat is not None and flat.intact(params, host.state):
            return flat
        (step,) = steps
        t = host.transform_at(group, step, advance=False)
        why = check_fusable(t) or _shape_problem(params)
        if why is not None:
            if self.mode in (True, "compile", "flat"):
                raise ValueError(f"fused={self.mode!r}: this param group cannot run fused: {why}")
            self.groups.pop(index, None)
            return None
        structure, layout = layout_of(t)
        for p in params:
            if "step" in host.state[p]:
                check_structure(host.state[p], structure)
        flat = self.groups[index] = FlatGroup(
            params, host.state, layout, structure, t.init, step, adopt_grads=self.want_compile()
        )
        host.release(params)
        return flat

    def _advance(self, host: Host, flat: FlatGroup) -> None:
        flat.step += 1
        for p in flat.params:
            host.state[p]["step"] = flat.step
        # the update wrote the flat buffer, not the parameters' own tensors: bump their version
        # counters as an in-place update would (autograd checks saved tensors by it)
        torch.autograd.graph.increment_version(flat.params)

    def _run_flat(self, t: Transform, flat: FlatGroup, total: Tensor | None) -> dict[str, Any]:
        """The chain eagerly on the flat buffers (foreach ops over one tensor per bucket); its
        matrix primitives on the parameters' views, compiled per shape when compiling."""
        if has_matrix(t):
            t = on_views(t, flat, self.matrix if self.want_compile() else None)
        if flat.adopt_grads:  # the gradient buffer holds p.grad: work on a copy
            work = flat.work_buffers()
            torch._foreach_copy_(work, flat.flat_grads)
        else:
            work = flat.flat_grads
        state = assemble(flat.layout, flat.state_lists(), flat.step)
        if total is not None:
            first_state(state)["total_norm"] = total
        updates, new = t.update(work, state, flat.flat_params)
        apply_updates(flat.flat_params, updates)
        for per_bucket, cur in zip(by_slot(flat.layout, new), flat.state_lists()):
            for k, v in cur.items():
                if per_bucket[k] is not v:
                    v.copy_(per_bucket[k])
        return chain_info(new)

    def _run_compiled(
        self, ts: list[Transform], flats: list[FlatGroup], masked: bool, total: Tensor | None = None
    ) -> Any:
        """Run the compiled step of the groups ``flats`` (chains ``ts``): their infos; ``None`` if
        compilation is unavailable (the caller runs the flat path), ``False`` if the step was
        skipped for non-finite gradients (masked only). A chain with a matrix primitive runs
        on the flat path (``None``), which compiles that primitive per shape."""
        if any(map(has_matrix, ts)):
            return None
        why = next((w for w in (check_fusable(t, compile=True) for t in ts) if w is not None), None)
        devices = {g.device for f in flats for g in f.flat_grads}
        if why is None and len(devices) > 1:
            why = "parameters on several devices"
        if why is None:
            why = compiler_problem()
        device = next(iter(devices))
        # (a norm given or not: dynamo guards on it, one more graph under the same code object)
        key = (tuple(map(signature, ts)), str(device), masked, tuple(len(f.buckets) for f in flats))
        why = why or self.broken.get(key)
        if why is not None:
            if self.mode == "compile":
                raise ValueError(f"fused='compile': cannot compile this chain: {why}")
            self._warn(why)
            return None
        steps = [f.step for f in flats]
        compiled = self.compiled.get(key)
        if compiled is None:
            compiled = self.compiled[key] = Compiled(ts, [f.layout for f in flats], device, masked, steps)
        if not compiled.ready:
            try:
                finite, infos = compiled(ts, steps, flats, total)
            except Exception as exc:  # noqa: BLE001 - a compiler failure of any kind: run the flat path
                if self.mode == "compile":
                    raise
                self.broken[key] = f"torch.compile failed: {type(exc).__name__}: {str(exc)[:300]}"
                self._warn(self.broken[key])
                return None
            compiled.ready = True
        else:
            finite, infos = compiled(ts, steps, flats, total)
        if masked and not bool(finite):
            return False
        return infos

    def _warn(self, why: str) -> None:
        if not self.warned:
            self.warned = True
            warnings.warn(f"fused=True: running the flat (uncompiled) fused path: {why}", RuntimeWarning, stacklevel=5)
