"""Primitives that act on each parameter's tensor as a whole (``@transform(fusable="matrix")``,
Muon's Newton-Schulz step) on the fused path.

The rest of the chain runs on the flat buffers (one tensor per bucket); a matrix primitive is
handed each parameter's view of those buffers instead, in the parameters' order, so it computes
what it computes unfused. Two ways to run it:

- eagerly (``fused="flat"``, ``None``, and primitives that do not declare ``compilable``): its own
  ``update`` on the list of views: the unfused path's operations on the same values, so the same
  numbers bit for bit;
- compiled (``fused=True``/``"compile"``): the parameters are grouped by shape, each group's views
  are stacked into one ``(k, m, n)`` tensor and the primitive's ``update`` of *one* tensor runs
  over the stack through ``torch.compile(torch.vmap(...))``: one batched kernel per shape (for
  Newton-Schulz, batched matrix products), a compiled function per (primitive, shape, dtype,
  device). The numbers then differ from the unfused ones by the rounding of the batched, fused
  arithmetic (for Muon's bfloat16 iteration that is bfloat16 rounding, ~1e-2 relative on single
  entries of the update; in float64, ~1e-12).

A matrix primitive keeps no per-parameter state (its state is its step: the stacks are built per
call) and, compiled, has numbers or structure for hyperparameters (they are constants of its
compiled function); :func:`matrix_problem` names what breaks either rule.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._state import leaves
from ..base import Params, State, Transform, chain
from .flat import FlatGroup

__all__ = ["MatrixRunner", "has_matrix", "matrix_problem", "on_views"]


def has_matrix(t: Transform) -> bool:
    """Whether the chain ``t`` holds a primitive that runs per parameter (``fusable="matrix"``)."""
    return any(leaf.fusable == "matrix" for leaf in leaves(t))


def matrix_problem(leaf: Transform, compile: bool) -> str | None:
    """Why the matrix primitive ``leaf`` cannot run on the fused path (``None`` if it can)."""
    lists = [k for k, v in leaf.init([]).items() if isinstance(v, list)]
    if lists:
        return f"{leaf.name} runs per parameter and keeps per-parameter state ({', '.join(lists)})"
    if compile and leaf.compilable:
        for k, v in leaf.hyperparams.items():
            if k not in leaf.static and (isinstance(v, Tensor) or (callable(v) and not isinstance(v, type))):
                return f"{leaf.name}: hyperparameter {k} is a schedule or tensor; compiled per matrix, it takes numbers"
    return None


class MatrixRunner:
    """The compiled per-shape functions of the matrix primitives of one optimizer.

    Args:
        mode: the optimizer's ``fused`` mode (``"compile"`` raises where ``True`` warns and runs
            the primitive eagerly).
        problem: returns why ``torch.compile`` cannot be used here (``None`` if it can).
        warn: called with the reason, once, when the primitive runs eagerly instead.
    """

    def __init__(self, mode: Any, problem: Callable[[], str | None], warn: Callable[[str], None]):
        self.mode = mode
        self.problem = problem
        self.warn = warn
        self.fns: dict[tuple, Callable[[Tensor], Tensor]] = {}
        self.ready: set[tuple] = set()
        self.broken: dict[tuple, str] = {}

    def function(self, leaf: Transform, key: tuple) -> Callable[[Tensor], Tensor]:
        """The compiled, batched ``update`` of ``leaf`` for a stack of parameters of one shape."""
        fn = self.fns.get(key)
        if fn is None:

            def body(x: Tensor) -> Tensor:
                return leaf.update([x], {"step": 0}, None)[0][0]

            # a code object of its own per key: dynamo's recompile limit is per code object
            code = body.__code__.replace(co_name=f"ravine_matrix_{leaf.name}_{len(self.fns)}")
            body = types.FunctionType(code, body.__globals__, code.co_name, None, body.__closure__)
            fn = self.fns[key] = torch.compile(torch.vmap(body), fullgraph=True, dynamic=False)
        return fn

    def run(self, leaf: Transform, views: Params, state: State, params: Params) -> tuple[Params, State]:
        """``leaf.update`` of ``views`` (the parameters' own shapes), batched per shape and compiled."""
        why = self.problem()
        if why is not None:
            if self.mode == "compile":
                raise ValueError(f"fused='compile': cannot compile {leaf.name}: {why}")
            self.warn(why)
            return leaf.update(views, state, params)
        groups: dict[tuple, list[int]] = {}
        for i, v in enumerate(views):
            groups.setdefault((tuple(v.shape), v.dtype, str(v.device)), []).append(i)
        sig = (leaf.name, repr(sorted(leaf.hyperparams.items())))
        out: list[Tensor | None] = [None] * len(views)
        for shape_key, idx in groups.items():
            key = (sig, *shape_key)
            if key in self.broken:
                self.warn(self.broken[key])
                res, _ = leaf.update([views[i] for i in idx], state, [params[i] for i in idx])
                out_group = res
            else:
                stack = torch.stack([views[i] for i in idx])
                try:
                    batched = self.function(leaf, key)(stack)
                except Exception as exc:  # noqa: BLE001 - a compiler failure of any kind: run eagerly
                    # the primitive's own refusal (a shape it does not take) is raised eagerly
                    res, _ = leaf.update([views[i] for i in idx], state, [params[i] for i in idx])
                    if self.mode == "compile":
                        raise
                    self.broken[key] = f"torch.compile failed for {leaf.name}: {type(exc).__name__}: {str(exc)[:300]}"
                    self.warn(self.broken[key])
                    out_group = res
                else:
                    self.ready.add(key)
                    out_group = list(batched.unbind(0))
            for i, x in zip(idx, out_group):
                out[i] = x
        _, new_state = leaf.update([], state, [])
        return out, new_state  # type: ignore[return-value]


def _on_views(leaf: Transform, flat: FlatGroup, runner: MatrixRunner | None) -> Transform:
    """``leaf`` as a transform of the flat buffers: it runs on each parameter's view of them."""

    def init(params: Params) -> State:
        return leaf.init([])

    def update(u: Params, state: State, params: Params | None = None) -> tuple[Params, State]:
        views = flat.views(u)
        if runner is not None and leaf.compilable:
            out, new = runner.run(leaf, views, state, flat.param_views)
        else:
            out, new = leaf.update(views, state, flat.param_views)
        for v, x in zip(views, out):
            if x is not v:
                v.copy_(x)
        return u, new

    return Transform(init, update, leaf.name, leaf.hyperparams, None, leaf.static)


def on_views(t: Transform, flat: FlatGroup, runner: MatrixRunner | None) -> Transform:
    """The chain ``t`` (same nesting, so the same state layout) with each matrix primitive handed
    the per-parameter views of ``flat``'s buffers: compiled by ``runner``, or eagerly if ``None``."""
    if t.parts:
        return chain(*[on_views(p, flat, runner) for p in t.parts])
    return _on_views(t, flat, runner) if t.fusable == "matrix" else t
