"""The fused execution path of :class:`ravine.optim.Optimizer`: a whole chain as one pass over memory.

``Optimizer(params, transform, fused=True)`` runs the *same* transforms as the unfused path (their
source stays the single definition of the math) on different data:

1. **Flat buffers.** The parameters of a param group are packed, per (device, dtype), into one
   contiguous 1-D buffer and each parameter becomes a view into it (``p.data`` is re-pointed, the
   ``Parameter`` objects stay the same). Gradients are copied into (or, see below, *land in*) a flat
   gradient buffer, and every per-parameter state tensor (``exp_avg``, ``momentum_buffer``...) is a
   view into a flat state buffer. A chain then runs on lists of one tensor per (device, dtype)
   instead of one per parameter: the per-tensor overhead of a 2000-tensor model disappears.
2. **One kernel** (``fused=True`` where ``torch.compile`` works, i.e. inductor with a C++ compiler on
   CPU or triton on GPU): the chain's ``update`` is traced by ``torch.compile(fullgraph=True)``
   over the flat buffers. Every numeric hyperparameter of every primitive (learning rate, betas,
   eps, weight decay, clip norm, momentum...) and the step are passed as 0-dim tensors, so
   schedules, torch LR schedulers and per-group values cause no recompilation (the graph is
   dynamic in the buffer lengths). Inductor fuses the clip norm into one reduction and the rest
   of the chain (clip scale folded in, bias corrections, weight decay, the parameter update) into
   one elementwise kernel: for ``clip_by_global_norm -> adamw`` it reads gradient, parameter and
   both moments and writes the three of them (28 bytes per float32 parameter) after one read of
   the gradient for the norm (4 bytes); ``clip_grad_norm_`` + torch's fused AdamW moves 40
   (measured: about 0.8x torch's time). A post-grad pass computes the 0-dim values (bias corrections
   ``1 - beta^t``, ``1 - beta``...) once in a tiny kernel before the big one: inlined, inductor's
   C++ backend re-evaluated ``pow``/``sqrt`` per vector of 16 floats (errno-preserving libm calls
   are not hoisted), which made the kernel 3x slower.
3. **The non-finite check** (``nonfinite="skip"``/``"raise"``, the default) is folded into the
   same graph: every param group is stepped by one compiled call, the writes are masked
   (``torch.where(finite, new, old)``) and ``finite`` is reduced over all groups' gradients, so a
   skipped step leaves parameters and state untouched (all or nothing) without a pass of its own
   when every chain starts with ``clip_by_global_norm``: the clip norm of the raw gradient is the
   check (a group whose gradients are finite but whose global norm overflows the dtype is skipped
   too, with a warning saying so). A chain that does not clip needs one more read of the
   gradient for the check (4 bytes per float32 parameter: what torch's fused optimizers pay for
   GradScaler's ``found_inf``). ``nonfinite="apply"`` (torch's semantics) checks nothing, and one
   graph, compiled once, serves every group whose chain has the same structure.

Fallback: ``fused="flat"`` (and ``fused=True`` when compilation is unavailable or fails, with a
warning) runs the chain eagerly with torch's foreach ops on the flat buffers: one op per pass for
the whole group instead of one per tensor, no compiler needed. ``fused=None`` (auto) uses the flat
path where the chain is eligible and the unfused path otherwise; it never compiles (a first
compilation costs seconds to a minute).

Eligible chains are built from the elementwise primitives of :mod:`ravine.optim.transforms`
(``scale``, ``scale_by_learning_rate``, ``scale_by_schedule``, ``trace``, ``scale_by_rms``,
``scale_by_adam``, ``scale_by_rss``, ``add_decayed_weights`` and ``add_l2`` without a mask,
``clip_by_global_norm`` without ``per_row``, ``clip_by_value`` (flat path only), ``identity``) with
float, schedule or one-element tensor hyperparameters. Anything that depends on parameter shapes
(unit-wise ``clip_adaptive``, masks, ``per_row``, broadcast tensor hyperparameters) or that is a
user-written transform is not: ``fused=True`` raises ``ValueError`` naming it, ``fused=None`` falls
back to the unfused path.

Gradients (compiled path) land in the flat buffer: after a compiled step, ``p.grad`` is a view
into the flat gradient buffer (same values). ``zero_grad(set_to_none=False)`` zeroes those views
in place and autograd then accumulates straight into the flat buffer, so the next step copies
nothing. With torch's default ``set_to_none=True`` each step copies the fresh gradients in (8 more
bytes per parameter, as the unfused path does) and re-points ``p.grad``, which frees autograd's
tensors early. The chain never writes into that buffer (its in-place updates act on a copy that
inductor fuses away), so ``p.grad`` stays what autograd computed. The flat path copies the
gradients into its buffer and works there in place, leaving ``p.grad`` alone (one parameter-sized
buffer either way, as the unfused path's gradient copies).

Numbers: the flat path runs the unfused path's operations on longer tensors (bit-identical in the
tests, except that a clip norm is the norm of one flat vector instead of the norm of per-tensor
norms); the compiled path differs by float rounding (fused arithmetic). State is the unfused
path's, in torch's format (views), so ``state_dict`` round trips between fused and unfused
optimizers. Parameters' version counters are bumped each step, as an in-place update would.

Caveats: parameters are views into one buffer, so code that replaces ``p.data`` (``model.to``,
``model.half()``) after the first fused step breaks the sharing; the next step detects it and
rebuilds the buffers (a copy). Parameters sharing memory with each other (tied views), sparse or
non-contiguous parameters make a group ineligible.
"""

from __future__ import annotations

import functools
import operator
import types
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .._validation import Options
from . import transforms as _transforms
from .adapter import _assemble, _layout, _slots
from .base import Transform, apply_updates, chain, chain_info, is_number, params_with_grad, resolve

if TYPE_CHECKING:
    from .adapter import Optimizer

__all__ = ["FUSED_MODES", "check_fusable", "FusedEngine", "peak_step_memory"]

FUSED_MODES = Options((False, True, None, "flat", "compile"))

# primitives whose math is elementwise (or a global reduction over all coordinates): flattening
# parameters does not change what they compute.
_FLAT_OK = {
    "identity",
    "scale",
    "scale_by_learning_rate",
    "scale_by_schedule",
    "trace",
    "scale_by_rms",
    "scale_by_adam",
    "scale_by_rss",
    "add_decayed_weights",
    "add_l2",
    "clip_by_global_norm",
    "clip_by_value",
}
# ... and those that trace into one graph without a data-dependent branch.
_COMPILE_OK = _FLAT_OK - {"clip_by_value"}


def _leaves(t: Transform) -> list[Transform]:
    if t.parts:
        return [leaf for p in t.parts for leaf in _leaves(p)]
    return [t]


def check_fusable(t: Transform, compile: bool = False) -> str | None:
    """Why ``t`` cannot run on flat buffers (``None`` if it can).

    ``compile=True`` also requires every primitive to trace into one graph.
    """
    allowed = _COMPILE_OK if compile else _FLAT_OK
    for leaf in _leaves(t):
        fac = leaf.factory
        if fac is None or getattr(fac, "__module__", None) != _transforms.__name__ or leaf.name not in _FLAT_OK:
            return f"{leaf.name} is not one of ravine's elementwise primitives ({sorted(_FLAT_OK)})"
        if leaf.name not in allowed:
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


# ------------------------------------------------------------------------------------------------
# tensorised transforms: the same primitives, with every numeric hyperparameter a 0-dim tensor


def _tensorisable(leaf: Transform, name: str, value: Any) -> bool:
    """Numbers, schedules and tensors become tensors; structure (static names, bools) stays.

    Zeros too: a transform treats a Python 0 as "skip this term" and a tensor 0 as a term that
    adds ``0 * x``; the results agree (for finite ``x``), and a learning rate that a scheduler
    takes to 0 then costs no recompilation.
    """
    if name in leaf.static or isinstance(value, bool):
        return False
    return isinstance(value, Tensor) or callable(value) or is_number(value)


def _signature(t: Transform) -> tuple:
    """What fixes the tensorised transform: the structure plus which hyperparameters are tensors."""
    sig = []
    for leaf in _leaves(t):
        sig.append((leaf.name, tuple((k, _tensorisable(leaf, k, v)) for k, v in leaf.hyperparams.items())))
    return (repr(t.structure()), tuple(sig))


def _hyper_values(t: Transform, step: int) -> list[Any]:
    """The numeric hyperparameters of ``t``'s primitives at ``step``, in tensorisation order."""
    out: list[Any] = []
    for leaf in _leaves(t):
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


# ------------------------------------------------------------------------------------------------
# the flat buffers of one param group


class _FlatGroup:
    """Flat buffers of one param group: per (device, dtype) bucket a parameter buffer, a gradient
    buffer and one buffer per state slot; parameters, ``p.grad`` and state are views into them."""

    def __init__(
        self,
        params: list[Tensor],
        slots: list[str],
        state: dict,
        layout: Any,
        structure: str,
        init: Callable[[list[Tensor]], dict],
        step: int,
        land: bool,
    ):
        self.params = list(params)
        # compiled path: ``p.grad`` become views of the gradient buffer (the chain never writes
        # it). Flat path: the chain works in place in that buffer, so gradients are copied in.
        self.land = land
        self.layout = layout
        self.structure = structure
        self.step = step
        keys: list[tuple[torch.device, torch.dtype]] = []
        members: dict[tuple, list[int]] = {}
        for i, p in enumerate(params):
            key = (p.device, p.dtype)
            if key not in members:
                keys.append(key)
                members[key] = []
            members[key].append(i)
        self.buckets = [members[k] for k in keys]
        self.flat_params: list[Tensor] = []
        self.flat_grads: list[Tensor] = []
        self.flat_state: dict[str, list[Tensor]] = {s: [] for s in slots}
        self.param_views: list[Tensor] = [None] * len(params)  # type: ignore[list-item]
        self.grad_views: list[Tensor] = [None] * len(params)  # type: ignore[list-item]
        for idx in self.buckets:
            ps = [params[i] for i in idx]
            total = sum(p.numel() for p in ps)
            fp = torch.empty(total, dtype=ps[0].dtype, device=ps[0].device)
            fg = torch.zeros_like(fp)
            # fresh state for the whole bucket at once (no per-parameter temporaries), then the
            # existing state of parameters that have some is copied over it.
            fresh = _flat_state(init([fp]), slots, layout)
            off = 0
            for i, p in zip(idx, ps):
                n = p.numel()
                pv = fp[off : off + n].view_as(p)
                pv.copy_(p.detach())
                p.data = pv
                self.param_views[i] = pv
                self.grad_views[i] = fg[off : off + n].view_as(p)
                d = state[p]
                for s in slots:
                    sv = fresh[s][off : off + n].view_as(p)
                    old = d.get(s)
                    if old is not None:
                        sv.copy_(old)
                    d[s] = sv
                d["step"] = step
                d["structure"] = structure
                off += n
            self.flat_params.append(fp)
            self.flat_grads.append(fg)
            for s in slots:
                self.flat_state[s].append(fresh[s])
        self.ptrs = [p.data_ptr() for p in self.param_views]
        self.ids = [id(p) for p in self.params]

    def intact(self, params: list[Tensor], state: dict) -> bool:
        """Same parameters, still views into the buffers, state still the buffers' views."""
        if list(map(id, params)) != self.ids or list(map(Tensor.data_ptr, params)) != self.ptrs:
            return False
        d = state.get(params[0])
        return bool(d) and d.get("step") == self.step

    def land_grads(self) -> None:
        """Bring the gradients into the flat gradient buffer (copy only those not already there)."""
        grads = [p.grad for p in self.params]
        if not self.land:
            torch._foreach_copy_(self.grad_views, grads)
            return
        if all(map(operator.is_, grads, self.grad_views)):
            return
        todo_src, todo_dst, todo_p = [], [], []
        for p, g, gv in zip(self.params, grads, self.grad_views):
            if g is not gv:
                todo_src.append(g)
                todo_dst.append(gv)
                todo_p.append(p)
        if todo_src:
            torch._foreach_copy_(todo_dst, todo_src)
            for p, gv in zip(todo_p, todo_dst):
                p.grad = gv

    def state_lists(self) -> list[dict[str, Tensor]]:
        return [{s: self.flat_state[s][k] for s in self.flat_state} for k in range(len(self.buckets))]


def _flat_state(state: dict, slots: list[str], layout: Any) -> dict[str, Tensor]:
    """The one-tensor lists of a transform's ``init([flat])`` by slot name."""
    per: list[dict] = [{}]
    from .adapter import _scatter

    _scatter(layout, state, per)
    return {s: per[0][s] for s in slots}


# ------------------------------------------------------------------------------------------------
# compiled step


def _compiled_body(ts: list[Transform], layouts: list[Any], masked: bool) -> Callable:
    """The function ``torch.compile`` traces: one step of the chains ``ts`` (one per param group)
    on their groups' flat buffers. ``masked``: the step's writes are ``where(finite, new, old)``
    with ``finite`` reduced over every group's gradients (all or nothing)."""

    # a chain that starts with a global-norm clip computes the norm of the raw gradient anyway: its
    # finiteness is the check (inductor does not merge two norms of the same buffer: a second
    # one would be a second read of the gradient)
    clip_first = []
    for t in ts:
        first = _leaves(t)[0]
        clip_first.append(first.name == "clip_by_global_norm" and not first.hyperparams.get("per_row"))

    def body(steps: list[Tensor], grads: list[list[Tensor]], params: list[list[Tensor]], states: list[list[dict]]):
        infos, news, finites = [], [], []
        for t, layout, clip, step, g, p, state in zip(ts, layouts, clip_first, steps, grads, params, states):
            u = [x.clone() for x in g]  # the chain works in place on a copy; inductor fuses it away
            if masked and not clip:
                norms = torch._foreach_norm(g, 2.0)
                finites.append(torch.stack([n.to(torch.float32) for n in norms]).isfinite().all())
            work = [{k: v.clone() for k, v in d.items()} for d in state] if masked else state
            updates, new = t.update(u, _assemble(layout, work, step), p)
            if masked and clip:
                finites.append(_first_state(new)["norm"].isfinite())
            infos.append(chain_info(new))
            news.append((updates, _by_slot(layout, new)))
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


def _first_state(state: dict) -> dict:
    """The state of a chain's first primitive."""
    while "parts" in state:
        state = state["parts"][0]
    return state


def _by_slot(layout: Any, state: dict) -> list[dict[str, Tensor]]:
    """Invert ``_assemble`` for one-tensor-per-bucket lists: per bucket, slot name -> tensor."""
    from .adapter import _Slot

    out: dict[str, list[Tensor]] = {}

    def visit(lay: dict, s: dict) -> None:
        for k, v in lay.items():
            if k == "parts":
                for lp, sp in zip(v, s["parts"]):
                    visit(lp, sp)
            elif isinstance(v, _Slot):
                out[v.name] = s[k]

    visit(layout, state)
    n = len(next(iter(out.values()))) if out else 0
    return [{k: v[i] for k, v in out.items()} for i in range(n)]


def _scalar_frontier_pass(graph: torch.fx.Graph) -> None:
    """Compute every 0-dim value the elementwise kernel needs once, before the kernel.

    Inductor inlines 0-dim arithmetic (``beta ** t``, ``sqrt(1 - beta2 ** t)``, ``1 / bc1``, the
    clip coefficient) into the consumer's loop body, where the C++ backend's errno-preserving
    ``pow``/``sqrt`` cannot be hoisted: evaluated once per vector of 16 floats, they made the
    AdamW kernel 3x slower than torch's. This post-grad pass routes the 0-dim values consumed by
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


class _Compiled:
    """Tensorised transforms (one per param group), their hyperparameter tensors and the compiled
    step. Unmasked, a one-group graph is shared by every group whose chain has the same signature;
    masked, one graph steps all groups."""

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
        _Compiled.count += 1
        code = body.__code__.replace(co_name=f"ravine_fused_step_{_Compiled.count}")
        body = types.FunctionType(code, body.__globals__, code.co_name, body.__defaults__, body.__closure__)
        self.fn = torch.compile(
            body, fullgraph=True, dynamic=True, options={"post_grad_custom_post_pass": _scalar_pass()}
        )
        self.ready = False

    def __call__(self, ts: list[Transform], steps: list[int], flats: list[_FlatGroup]):
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
        )


# ------------------------------------------------------------------------------------------------
# the engine the adapter dispatches to


@functools.cache
def _compiler_problem() -> str | None:
    """Why ``torch.compile`` cannot be used here (``None`` if it can, as far as can be told)."""
    try:
        import torch._inductor  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means no compiler
        return f"torch inductor is unavailable ({exc})"
    if not hasattr(torch, "compile"):
        return "this torch has no torch.compile"
    return None


class FusedEngine:
    """Runs :class:`ravine.optim.Optimizer` steps on flat buffers (see the module docstring)."""

    def __init__(self, opt: Optimizer, mode: bool | str):
        self.opt = opt
        self.mode = mode  # True / "compile" / "flat" / None (auto: flat where eligible)
        self.groups: dict[int, _FlatGroup] = {}
        self.compiled: dict[tuple, _Compiled] = {}
        self.broken: dict[tuple, str] = {}
        self.warned = False

    def reset(self) -> None:
        """Forget the flat buffers (after ``load_state_dict`` replaced the state tensors)."""
        self.groups.clear()

    def want_compile(self) -> bool:
        return self.mode in (True, "compile")

    # -- eligibility ----------------------------------------------------------------------------

    def _eligible(self, t: Transform, params: list[Tensor]) -> str | None:
        why = check_fusable(t)
        if why is not None:
            return why
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

    # -- the step -------------------------------------------------------------------------------

    def step(self) -> list[dict[str, Any]]:
        opt = self.opt
        plans: list[tuple] = []
        for gi, group in enumerate(opt.param_groups):
            params = params_with_grad(group)
            if not params:
                continue
            steps = {int(opt.state[p].get("step", 0)) for p in params}
            flat = self.groups.get(gi)
            usable = len(params) == len(group["params"]) and len(steps) == 1
            if usable and flat is not None and not flat.intact(params, opt.state):
                flat = None
            if usable and flat is None:
                step = steps.pop()
                steps.add(step)
                t = opt._group_transform(group, step, advance=False)
                why = self._eligible(t, params)
                if why is None:
                    flat = self._build(t, params, step)
                    self.groups[gi] = flat
                elif self.mode in (True, "compile", "flat"):
                    raise ValueError(f"fused={self.mode!r}: this param group cannot run fused: {why}")
            if not usable or flat is None:
                self.groups.pop(gi, None)
                plans.append((group, params, None))
            else:
                plans.append((group, params, flat))

        for _, _, flat in plans:
            if flat is not None:
                flat.land_grads()

        # one compiled graph for all groups, writes masked by the finiteness of every gradient: the
        # all-or-nothing skip without a separate pass over the gradients when the chains clip first
        fold = (
            self.opt.nonfinite != "apply"
            and bool(plans)
            and all(flat is not None for _, _, flat in plans)
            and self.want_compile()
        )
        if fold:
            flats = [flat for _, _, flat in plans]
            ts = [opt._group_transform(group, flat.step) for group, _, flat in plans]
            infos = self._run_compiled(ts, flats, masked=True)
            if infos is False:  # non-finite: nothing was written
                self._skipped()
                return []
            if infos is None:  # not compiled: the flat path, checked first
                if not self._all_finite(plans) and not opt._check_finite():
                    return []
                infos = [self._run_flat(t, flat, flat.step) for t, flat in zip(ts, flats)]
            for flat in flats:
                self._advance(flat)
            return list(infos)

        if self.opt.nonfinite != "apply" and not self._all_finite(plans):
            if not opt._check_finite():
                return []
        stats: list[dict[str, Any]] = []
        for group, params, flat in plans:
            if flat is None:
                by_step: dict[int, list[Tensor]] = {}
                for p in params:
                    by_step.setdefault(int(opt.state[p].get("step", 0)), []).append(p)
                for step, ps in sorted(by_step.items()):
                    stats.append(opt._update(opt._group_transform(group, step), ps, step))
                continue
            t = opt._group_transform(group, flat.step)
            infos = self._run_compiled([t], [flat], masked=False) if self.want_compile() else None
            stats.append(infos[0] if infos else self._run_flat(t, flat, flat.step))
            self._advance(flat)
        return stats

    def _advance(self, flat: _FlatGroup) -> None:
        flat.step += 1
        for p in flat.params:
            self.opt.state[p]["step"] = flat.step
        # the update wrote the flat buffer, not the parameters' own tensors: bump their version
        # counters as an in-place update would (autograd checks saved tensors by it)
        torch.autograd.graph.increment_version(flat.params)

    def _skipped(self) -> None:
        """A masked step found a non-finite gradient or gradient norm and wrote nothing."""
        if not self.opt._check_finite():  # counts, warns or raises, naming the parameter
            return
        # every gradient is finite, but a chain's global clip norm overflowed the float range
        msg = (
            "the global gradient norm of a param group is not finite although every gradient is "
            "(its sum of squares overflows the dtype)"
        )
        if self.opt.nonfinite == "raise":
            raise FloatingPointError(f"non-finite gradient norm: {msg}")
        self.opt.skipped_steps += 1
        warnings.warn(f"skipped optimizer step: {msg}", RuntimeWarning, stacklevel=4)

    def _all_finite(self, plans: list[tuple]) -> bool:
        tensors: list[Tensor] = []
        for _, params, flat in plans:
            if flat is None:
                tensors.extend(p.grad for p in params)
            else:
                tensors.extend(flat.flat_grads)
        if not tensors:
            return True
        norms = torch._foreach_norm(tensors)
        return bool(torch.stack([n.to(norms[0].device, torch.float32) for n in norms]).isfinite().all())

    def _build(self, t: Transform, params: list[Tensor], step: int) -> _FlatGroup:
        opt = self.opt
        structure = repr(t.structure())
        layout = opt._layouts.get(structure)
        if layout is None:
            layout = opt._layouts[structure] = _layout(t.init([]))
        for p in params:
            d = opt.state[p]
            if "step" in d and d.setdefault("structure", structure) != structure:
                raise ValueError(
                    "the optimizer's structure changed after training started (a structural "
                    "hyperparameter such as momentum=0 -> >0, amsgrad or weight_decay=0 -> >0 was "
                    f"changed): was {d['structure']}, now {structure}"
                )
        flat = _FlatGroup(params, _slots(layout), opt.state, layout, structure, t.init, step, self.want_compile())
        # the unfused path's gradient copies are not needed any more
        for p in params:
            opt._buffers.pop(p, None)
        return flat

    def _run_flat(self, t: Transform, flat: _FlatGroup, step: int) -> dict[str, Any]:
        if flat.land:  # the gradient buffer holds p.grad: work on a copy
            work = self._work(flat)
            torch._foreach_copy_(work, flat.flat_grads)
        else:
            work = flat.flat_grads
        state = _assemble(flat.layout, flat.state_lists(), step)
        updates, new = t.update(work, state, flat.flat_params)
        apply_updates(flat.flat_params, updates)
        for per_bucket, cur in zip(_by_slot(flat.layout, new), flat.state_lists()):
            for k, v in cur.items():
                if per_bucket[k] is not v:
                    v.copy_(per_bucket[k])
        return chain_info(new)

    def _work(self, flat: _FlatGroup) -> list[Tensor]:
        """A reusable work buffer per bucket (only when a compiled group runs the flat path)."""
        w = getattr(flat, "work", None)
        if w is None:
            w = flat.work = [torch.empty_like(g) for g in flat.flat_grads]  # type: ignore[attr-defined]
        return w

    def _run_compiled(self, ts: list[Transform], flats: list[_FlatGroup], masked: bool) -> Any:
        """Run the compiled step of the groups ``flats`` (chains ``ts``): their infos; ``None`` if
        compilation is unavailable (the caller runs the flat path), ``False`` if the step was
        skipped for non-finite gradients (masked only)."""
        why = next((w for w in (check_fusable(t, compile=True) for t in ts) if w is not None), None)
        devices = {g.device for f in flats for g in f.flat_grads}
        if why is None and len(devices) > 1:
            why = "parameters on several devices"
        if why is None:
            why = _compiler_problem()
        device = next(iter(devices))
        key = (tuple(map(_signature, ts)), str(device), masked, tuple(len(f.buckets) for f in flats))
        why = why or self.broken.get(key)
        if why is not None:
            if self.mode == "compile":
                raise ValueError(f"fused='compile': cannot compile this chain: {why}")
            self._warn(why)
            return None
        steps = [f.step for f in flats]
        c = self.compiled.get(key)
        if c is None:
            c = self.compiled[key] = _Compiled(ts, [f.layout for f in flats], device, masked, steps)
        if not c.ready:
            try:
                finite, infos = c(ts, steps, flats)
            except Exception as exc:  # noqa: BLE001 - a compiler failure of any kind: run the flat path
                if self.mode == "compile":
                    raise
                self.broken[key] = f"torch.compile failed: {type(exc).__name__}: {str(exc)[:300]}"
                self._warn(self.broken[key])
                return None
            c.ready = True
        else:
            finite, infos = c(ts, steps, flats)
        if masked and not bool(finite):
            return False
        return infos

    def _warn(self, why: str) -> None:
        if not self.warned:
            self.warned = True
            warnings.warn(f"fused=True: running the flat (uncompiled) fused path: {why}", RuntimeWarning, stacklevel=4)


# ------------------------------------------------------------------------------------------------
# measurement


def peak_step_memory(fn: Callable[[], Any], device: torch.device | str = "cpu") -> int:
    """Peak bytes allocated by ``fn()`` beyond what was allocated before it (its temporaries).

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the bytes
    allocated before. Other devices: the events of ``torch.profiler.profile(profile_memory=True)``,
    each with its *self* memory (allocations minus frees not inside a child event) placed at its
    start when positive and at its end when negative, replayed in time order; the peak of the
    running sum (an upper bound: frees are counted as late as possible). Memory kept after ``fn``
    returns (new state) counts too, so measure a step after the first.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return max(0, torch.cuda.max_memory_allocated(device) - before)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e.time_range.start if e.self_cpu_memory_usage > 0 else e.time_range.end, e.self_cpu_memory_usage)
        for e in prof.events()
        if e.self_cpu_memory_usage
    )
    run = peak = 0
    for _, b in events:
        run += b
        peak = max(peak, run)
    return int(peak)
