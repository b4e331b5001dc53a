"""The compiled step: a whole chain, over the flat buffers of every param group, as one graph.

The chain's ``update`` is traced by ``torch.compile(fullgraph=True, dynamic=True)``. Every numeric
hyperparameter of every primitive (learning rate, betas, eps, weight decay, clip norm...) and the
step are 0-dim tensors (:func:`_tensorise`), so schedules, torch LR schedulers and per-group values
cause no recompilation. A post-grad pass (:func:`_scalar_frontier_pass`) computes the 0-dim values
(bias corrections ``1 - beta^t``, ``1 - beta``...) once in a tiny kernel before the elementwise one:
inlined, inductor's C++ backend re-evaluates ``pow``/``sqrt`` per vector of floats (errno-preserving
libm calls are not hoisted), which makes the kernel several times slower.
"""

from __future__ import annotations

import functools
import math
import operator
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .. import transforms as _transforms
from .._state import assemble, by_slot, clips_globally, first_state, leaves
from ..base import Transform, chain, chain_info, global_norm, is_number, resolve, tensor_norms
from .flat import FlatGroup

__all__ = ["Compiled", "compiler_problem", "signature"]


def _tensorisable(leaf: Transform, name: str, value: Any) -> bool:
    """Numbers, schedules and tensors become tensors; structure (static names, bools) stays.

    Zeros too: a transform treats a Python 0 as "skip this term" and a tensor 0 as a term that
    adds ``0 * x``; the results agree (for finite ``x``), and a learning rate that a scheduler
    takes to 0 then costs no recompilation.
    """
    if name in leaf.static or isinstance(value, bool):
        return False
    return isinstance(value, Tensor) or callable(value) or is_number(value)


def signature(t: Transform) -> tuple:
    """What fixes the tensorised transform: the structure plus which hyperparameters are tensors."""
    sig = []
    for leaf in leaves(t):
        sig.append((leaf.name, tuple((k, _tensorisable(leaf, k, v)) for k, v in leaf.hyperparams.items())))
    return (repr(t.structure()), tuple(sig))


def _hyper_values(t: Transform, step: int) -> list[Any]:
    """The numeric hyperparameters of ``t``'s primitives at ``step``, in tensorisation order."""
    out: list[Any] = []
    for leaf in leaves(t):
        for k, v in leaf.hyperparams.items():
            if _tensorisable(leaf, k, v):
                out.append(resolve(v, step))
        if leaf.name == "scale_by_schedule":
            out.append(leaf.hyperparams["schedule"](step))
    return out


def _tensorise(t: Transform, device: torch.device, step: int) -> tuple[Transform, list[Tensor]]:
    """Rebuild ``t`` with every numeric hyperparameter replaced by a 0-dim float64 tensor.

    Returns the rebuilt transform and the tensors, in the order of :func:`_hyper_values`, holding
    the values at ``step``; each step refills them. ``scale_by_schedule(s)`` becomes
    ``scale(tensor)`` (the same ``u = s(t-1) * g`` with the value supplied per step).
    """
    tensors: list[Tensor] = []
    values = iter(_hyper_values(t, step))

    def new() -> Tensor:
        v = next(values)
        x = torch.zeros((), dtype=torch.float64, device=device)
        if isinstance(v, Tensor):
            x.copy_(v.detach().reshape(()))
        else:
            x.fill_(float(v))
        tensors.append(x)
        return x

    def rebuild(node: Transform) -> Transform:
        if node.parts:
            return chain(*[rebuild(p) for p in node.parts])
        kw = {k: (new() if _tensorisable(node, k, v) else v) for k, v in node.hyperparams.items()}
        if node.name == "scale_by_schedule":
            return _transforms.scale(new())
        assert node.factory is not None
        return node.factory(**kw)

    return rebuild(t), tensors


def _compiled_body(ts: list[Transform], layouts: list[Any], masked: bool) -> Callable:
    """The function ``torch.compile`` traces: one step of the chains ``ts`` (one per param group)
    on their groups' flat buffers.

    The chains that clip first by the global norm clip by the norm of all their groups' gradients
    (``total``, computed here unless given). ``masked``: the step's writes are
    ``where(finite, new, old)`` with ``finite`` reduced over every group's gradients (all or
    nothing); the global clip norm is that check for the groups it covers (inductor does not merge
    two norms of the same buffer: a second one would be a second read of the gradient), the largest
    ``|g|`` for the others (a 2-norm would overflow for large finite gradients, which torch applies).
    """
    clip_first = [clips_globally(t) for t in ts]

    def body(
        steps: list[Tensor],
        grads: list[list[Tensor]],
        params: list[list[Tensor]],
        states: list[list[dict]],
        total: Tensor | None,
    ) -> tuple[Tensor | None, list[dict]]:
        finites = []
        if total is None and any(clip_first):
            total = global_norm([x for g, clip in zip(grads, clip_first) if clip for x in g])
        if masked and any(clip_first):
            finites.append(total.isfinite())
        infos, news = [], []
        for t, layout, clip, step, g, p, state in zip(ts, layouts, clip_first, steps, grads, params, states):
            u = [x.clone() for x in g]  # the chain works in place on a copy; inductor fuses it away
            if masked and not clip:  # the largest |g|: only a real inf/nan, never an overflow, skips
                finites.append(tensor_norms(g, math.inf).isfinite().all())
            work = [{k: v.clone() for k, v in d.items()} for d in state] if masked else state
            chain_state = assemble(layout, work, step)
            if clip:
                first_state(chain_state)["total_norm"] = total
            updates, new = t.update(u, chain_state, p)
            infos.append(chain_info(new))
            news.append((updates, by_slot(layout, new)))
        finite = torch.stack(finites).all() if masked else None
        for p, state, (updates, new_state) in zip(params, states, news):
            if masked:
                for d, k_new in zip(state, new_state):
                    for k, v in d.items():
                        v.copy_(torch.where(finite, k_new[k], v))
                for x, dx in zip(p, updates):
                    x.copy_(torch.where(finite, x + dx, x))
            else:
                for d, k_new in zip(state, new_state):
                    for k, v in d.items():
                        if k_new[k] is not v:
                            v.copy_(k_new[k])
                torch._foreach_add_(p, updates)
        return finite, infos

    return body


def _scalar_frontier_pass(graph: torch.fx.Graph) -> None:
    """Compute every 0-dim value the elementwise kernel needs once, before the kernel.

    Inductor inlines 0-dim arithmetic (``beta ** t``, ``sqrt(1 - beta2 ** t)``, ``1 / bc1``, the
    clip coefficient) into the consumer's loop body, where the C++ backend's errno-preserving
    ``pow``/``sqrt`` cannot be hoisted: evaluated once per vector of floats, they dominate the
    AdamW kernel. This post-grad pass routes the 0-dim values consumed by
    parameter-sized nodes through one opaque op, so they are computed in a tiny kernel first and
    the big kernel only loads them.
    """

    def numel(n: Any) -> int | None:
        v = n.meta.get("val") if isinstance(n, torch.fx.Node) else None
        return v.numel() if isinstance(v, Tensor) else None

    def scalar(n: Any) -> bool:
        return numel(n) == 1 and n.meta["val"].dim() == 0

    # the 0-dim values computable before any parameter-sized work (from hyperparameters and the
    # step only), moved to the top of the graph in their order; values that depend on a
    # reduction (the clip coefficient) stay where they are, inline.
    early: list[torch.fx.Node] = []
    ok: set[torch.fx.Node] = set()
    anchor = None
    for n in graph.nodes:
        if n.op == "placeholder":
            anchor = n
            if scalar(n):
                ok.add(n)
        elif n.op == "call_function" and scalar(n) and all(a in ok for a in n.all_input_nodes):
            ok.add(n)
            early.append(n)
    frontier = [n for n in early if any((numel(u) or 0) > 1 for u in n.users)]
    if not frontier or anchor is None:
        return
    for n in early:
        anchor.append(n)
        anchor = n
    with graph.inserting_after(anchor):
        packed = graph.call_function(torch.ops.ravine.materialize_scalars.default, (frontier,))
        packed.meta["val"] = [f.meta["val"] for f in frontier]
    for i, f in enumerate(frontier):
        with graph.inserting_after(packed):
            item = graph.call_function(operator.getitem, (packed, i))
            item.meta["val"] = f.meta["val"]
        for u in list(f.users):
            if u is not packed and (numel(u) or 0) > 1:
                u.replace_input_with(f, item)
    graph.lint()


@functools.cache
def _scalar_pass() -> Any:
    """The inductor pass object (built on first use: importing inductor is not free)."""
    from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files

    @torch.library.custom_op("ravine::materialize_scalars", mutates_args=())
    def materialize_scalars(xs: list[Tensor]) -> list[Tensor]:
        """Copies of 0-dim tensors, computed once (an opaque op inductor cannot inline)."""
        return [x.clone() for x in xs]

    @materialize_scalars.register_fake
    def _(xs: list[Tensor]) -> list[Tensor]:
        return [torch.empty_like(x) for x in xs]

    class ScalarPass(CustomGraphPass):
        def __call__(self, graph: torch.fx.Graph) -> None:
            _scalar_frontier_pass(graph)

        def uuid(self) -> Any:
            return get_hash_for_files((__file__,))

    return ScalarPass()


class Compiled:
    """Tensorised transforms (one per param group), their hyperparameter tensors and the compiled
    step of those groups. A one-group graph is shared by every group whose chain has the same
    signature."""

    count = 0

    def __init__(self, ts: list[Transform], layouts: list[Any], device: torch.device, masked: bool, steps: list[int]):
        self.transforms, self.hypers = [], []
        for t, step in zip(ts, steps):
            tt, hy = _tensorise(t, device, step)
            self.transforms.append(tt)
            self.hypers.append(hy)
        self.steps = [torch.zeros((), dtype=torch.int64, device=device) for _ in ts]
        body = _compiled_body(self.transforms, layouts, masked)
        # a code object of its own: dynamo caches compiled graphs per code object (at most
        # ``recompile_limit`` each), so every chain signature gets its own cache.
        Compiled.count += 1
        code = body.__code__.replace(co_name=f"ravine_fused_step_{Compiled.count}")
        body = types.FunctionType(code, body.__globals__, code.co_name, body.__defaults__, body.__closure__)
        self.fn = torch.compile(
            body, fullgraph=True, dynamic=True, options={"post_grad_custom_post_pass": _scalar_pass()}
        )
        self.ready = False

    def __call__(
        self, ts: list[Transform], steps: list[int], flats: list[FlatGroup], total: Tensor | None = None
    ) -> tuple[Tensor | None, list[dict]]:
        """Step the groups ``flats`` (chains ``ts`` at ``steps``); ``total``: their global clip norm
        if it was computed outside. Returns ``finite`` (masked graphs) and each group's info."""
        for t, step, hypers, st in zip(ts, steps, self.hypers, self.steps):
            for x, v in zip(hypers, _hyper_values(t, step)):
                if isinstance(v, Tensor):
                    x.copy_(v.detach().reshape(()))
                else:
                    x.fill_(float(v))
            st.fill_(step)
        return self.fn(
            self.steps,
            [f.flat_grads for f in flats],
            [f.flat_params for f in flats],
            [f.state_lists() for f in flats],
            total,
        )


@functools.cache
def compiler_problem() -> str | None:
    """Why ``torch.compile`` cannot be used here (``None`` if it can, as far as can be told)."""
    try:
        import torch._inductor  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means no compiler
        return f"torch inductor is unavailable ({exc})"
    if not hasattr(torch, "compile"):
        return "this torch has no torch.compile"
    return None
