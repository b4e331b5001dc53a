"""The gradient-transformation abstraction: ``Transform``, ``chain``, hyperparameters, list ops.

A transform is an ``init`` / ``update`` pair over lists of tensors (Optax's model)::

    state = t.init(params)                       # explicit state: a dict, nothing hidden
    updates, state = t.update(grads, state, params)
    apply_updates(params, updates)               # p += u; updates already carry -lr

State conventions (they make ``state_dict`` round trips and batching possible):

- every state is a ``dict`` with ``"step"``, the number of updates done so far (a Python int);
- a value that is a ``list`` holds one tensor per parameter (``exp_avg``, ``momentum_buffer``...),
  named as torch names the same state, so checkpoints map onto torch's per-parameter format;
- any other value is *information* about the last update (``"norm"``, ``"clipped"``): logged, never saved;
- a chain's state is ``{"step": n, "parts": [state of each component]}``;
- the one input a state may carry is ``"total_norm"``, which :class:`ravine.optim.Optimizer` puts
  in the state of a leading ``clip_by_global_norm``: the gradient norm over all param groups.

``update`` may overwrite the tensors of its ``updates`` argument in place (that is what keeps a
chain from allocating a parameter-sized temporary per component); pass copies if you still need
the gradients. The :class:`ravine.optim.Optimizer` adapter does this for you, so ``p.grad`` is left
as torch leaves it.

Hyperparameters are resolved at each update by :func:`resolve`: a float, a *schedule* (any
callable ``step -> float``, step 0 being the first update), or a tensor that broadcasts against
each parameter (so ``lr`` of shape ``(B, 1)`` steps ``B`` configurations stored as rows of a
``(B, 2)`` parameter in one program).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .._validation import Options, check
from ._constraints import check_flag

Params = list[Tensor]
State = dict[str, Any]
Hyper = float | Tensor | Callable[[int], float]

_FUSABLE = Options((False, True, "matrix"))

__all__ = [
    "Transform",
    "chain",
    "apply_updates",
    "resolve",
    "chain_info",
    "transform",
]


@dataclasses.dataclass(frozen=True)
class Transform:
    """A gradient transformation: ``init(params) -> state`` and
    ``update(updates, state, params) -> (updates, state)``.

    ``hyperparams`` maps each hyperparameter name to the value it was built with, and
    ``with_hyperparams(**kw)`` rebuilds the same transform with some of them replaced (the state
    layout is unchanged as long as structural options such as ``amsgrad`` are kept). The torch
    adapter uses this to run one chain with per-group hyperparameters.

    What a transform declares about itself: ``fusable`` / ``compilable`` (set by
    ``@transform(fusable=...)`` where a primitive is defined: whether the fused path may run it on
    flat buffers, and compile it; ``fusable="matrix"``: per parameter, on its view of the flat
    buffers) and ``needs`` (hyperparameters left ``None`` that the torch
    adapter fills from the param group, e.g. AdamW's ``lr_peak`` in the paper's convention).
    """

    init: Callable[[Params], State]
    update: Callable[..., tuple[Params, State]]
    name: str = "transform"
    hyperparams: dict[str, Any] = dataclasses.field(default_factory=dict)
    factory: Callable[..., Transform] | None = None
    # hyperparameters that are structure, not numbers (masks, forms): never treated as schedules.
    static: frozenset[str] = frozenset()
    # the components of a chain (empty for a primitive): what ``structure`` describes.
    parts: tuple[Transform, ...] = ()
    # a primitive whose math is elementwise (or a reduction over all coordinates), so that it
    # computes the same on flat buffers (see ravine.optim.fused); ``"matrix"``: its math acts on
    # each parameter's tensor as a whole (Muon's Newton-Schulz), so the fused path runs it on each
    # parameter's view of the flat buffers; ``compilable``: and it traces into one graph (no branch
    # on data).
    fusable: bool | str = False
    compilable: bool = False
    # hyperparameters that, left ``None``, the torch adapter fills with a value of the param group
    # that only it knows ("lr_peak": where the group's learning rate peaks).
    needs: frozenset[str] = frozenset()

    def structure(self) -> tuple:
        """What fixes the state layout: component names and structural options, recursively."""
        static = tuple(sorted((k, repr(v)) for k, v in self.hyperparams.items()
                              if k in self.static and not callable(v)))
        return (self.name, static, tuple(p.structure() for p in self.parts))

    def with_hyperparams(self, **kwargs: Any) -> Transform:
        """The same transform rebuilt by its factory with some hyperparameters replaced (unknown
        names raise ``ValueError``)."""
        unknown = sorted(set(kwargs) - set(self.hyperparams))
        if unknown:
            raise ValueError(
                f"{self.name}: unknown hyperparameter(s) {unknown}; allowed: {sorted(self.hyperparams)}"
            )
        if self.factory is None:
            raise TypeError(f"{self.name} was not built by a factory and cannot be rebuilt")
        return self.factory(**{**self.hyperparams, **kwargs})

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={_short(v)}" for k, v in self.hyperparams.items())
        return f"{self.name}({hp})"


def _short(v: Any) -> str:
    if isinstance(v, Tensor):
        return f"tensor{tuple(v.shape)}"
    if isinstance(v, Transform):
        return repr(v)
    if callable(v):
        return getattr(v, "__name__", None) or type(v).__name__
    return repr(v)


def transform(
    *, static: Sequence[str] = (), fusable: bool | str = False, compilable: bool | None = None
) -> Callable[[Callable[..., Transform]], Callable[..., Transform]]:
    """Decorator for transform factories: records the call's arguments as ``hyperparams``.

    The wrapped factory's signature is the hyperparameter list; calling ``with_hyperparams`` calls
    the factory again with updated values. ``static`` names the hyperparameters that are structure
    (forms, masks), not numbers. A primitive declares here whether the fused path may run it:
    ``fusable=True`` when its math is elementwise (or a reduction over all coordinates), so that it
    computes the same on one flat buffer as on a list of tensors; ``fusable="matrix"`` when its math
    acts on each parameter's tensor as a whole (it depends on the shape: Muon's Newton-Schulz
    iteration) and keeps no per-parameter state: the fused path then hands it each parameter's
    view of the flat buffers, and compiles it batched over the parameters of one shape
    (``torch.vmap``), so its ``update`` must also be correct applied to one tensor at a time;
    ``compilable`` (default: as ``fusable``) when it also traces into one ``torch.compile`` graph
    (no Python branch on data).

    A parameter annotated ``bool`` (``nesterov``, ``amsgrad``, ``maximize``...) must be given a bool:
    anything else raises ``TypeError`` naming it (``nesterov="no"`` is truthy and would switch the
    option on), through :func:`ravine.optim._constraints.check_flag`.
    """

    check("fusable", fusable, _FUSABLE, where="transform: ")

    def wrap(fn: Callable[..., Transform]) -> Callable[..., Transform]:
        sig = inspect.signature(fn)
        flags = [k for k, prm in sig.parameters.items() if prm.annotation in (bool, "bool")]

        @functools.wraps(fn)
        def build(*args: Any, **kwargs: Any) -> Transform:
            try:
                bound = sig.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{fn.__name__}: {exc}; signature is {fn.__name__}{sig}") from None
            bound.apply_defaults()
            hp = dict(bound.arguments)
            for k in flags:
                hp[k] = check_flag(k, hp[k], where=f"{fn.__name__}: ")
            t = fn(**hp)
            # a named chain keeps the structural names of its parts that it exposes itself
            inner = {k for k in hp if k in t.static}
            return dataclasses.replace(
                t,
                name=fn.__name__,
                hyperparams=hp,
                factory=build,
                static=frozenset(static) | inner,
                fusable=fusable,
                compilable=bool(fusable) if compilable is None else compilable,
                needs=frozenset(k for k in hp if k in t.needs),
            )

        build.hyperparam_names = tuple(sig.parameters)  # type: ignore[attr-defined]
        return build

    return wrap


# --------------------------------------------------------------------------------------------
# hyperparameters


def resolve(value: Hyper, step: int) -> float | Tensor:
    """The value of a hyperparameter at ``step`` (0 = first update): schedules are called."""
    if callable(value) and not isinstance(value, Tensor):
        return value(step)
    return value


def is_number(x: Any) -> bool:
    """A real Python/numpy number (not a bool, not a tensor). On the hot path of every update."""
    t = type(x)
    if t is float or t is int:
        return True
    if t is bool or t is Tensor:
        return False
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


# --------------------------------------------------------------------------------------------
# list ops: torch._foreach_* when the coefficient is a Python number (one dispatch for the whole
# list), a per-tensor loop when it is a tensor that broadcasts against each parameter.


def scalar(x: Any) -> bool:
    return is_number(x)


def mul_(xs: Params, s: float | Tensor) -> None:
    if scalar(s):
        if s != 1:
            torch._foreach_mul_(xs, s)
    else:
        for x in xs:
            x.mul_(s)


def add_(xs: Params, ys: Params, alpha: float | Tensor = 1.0) -> None:
    """x += alpha * y."""
    if scalar(alpha):
        if alpha != 0:
            torch._foreach_add_(xs, ys, alpha=alpha)
    else:
        for x, y in zip(xs, ys):
            x.addcmul_(y, alpha)


def lerp_(xs: Params, ys: Params, w: float | Tensor) -> None:
    """x += w * (y - x)."""
    if scalar(w):
        torch._foreach_lerp_(xs, ys, w)
    else:
        for x, y in zip(xs, ys):
            x.lerp_(y, w.to(x.dtype) if isinstance(w, Tensor) else w)


def addcmul_(xs: Params, ys: Params, zs: Params, value: float | Tensor = 1.0) -> None:
    """x += value * y * z."""
    if scalar(value):
        torch._foreach_addcmul_(xs, ys, zs, value=value)
    else:
        for x, y, z in zip(xs, ys, zs):
            x.addcmul_(y * value, z)


def sqrt(x: float | Tensor) -> float | Tensor:
    return math.sqrt(x) if scalar(x) else torch.sqrt(x)


def power(base: float | Tensor, exponent: int) -> float | Tensor:
    return base**exponent


def zeros_like(params: Params) -> Params:
    return [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params]


def tensor_norms(xs: Params, ord: float = 2.0) -> Tensor:
    """The norm of each tensor (2-norm by default), stacked into one vector (on the first tensor's device).

    The 2-norms are the one gradient pass that both the clip norm and the finiteness check read: a
    tensor whose 2-norm is finite holds no inf or nan. The converse does not hold: the sum of
    squares of large finite values overflows (a float32 tensor of ten 1e20s has 2-norm ``inf``, in
    torch as here), which :func:`finite_tensors` tells apart with ``ord=inf`` (the largest
    ``|x|``, which cannot overflow and is ``nan`` where a ``nan`` is).
    """
    norms = torch._foreach_norm(xs, ord)
    return torch.stack([n.to(norms[0].device) for n in norms])


def finite_tensors(xs: Params, norms: Tensor | None = None) -> Tensor:
    """Per tensor of ``xs``, whether every element is finite (a bool vector).

    ``norms`` are their 2-norms (:func:`tensor_norms`) when already computed (the clip norm's pass):
    a finite one proves its tensor finite, so only the tensors whose 2-norm is not finite are read
    again, by their largest ``|x|``. Finite gradients whose 2-norm overflows count as finite: only
    a real inf or nan makes a tensor non-finite. One device sync where some 2-norm is not finite.
    """
    if norms is None:
        norms = tensor_norms(xs)
    ok = norms.isfinite()
    if bool(ok.all()):
        return ok
    suspects = [int(i) for i in (~ok).nonzero().flatten()]
    ok[suspects] = tensor_norms([xs[i] for i in suspects], math.inf).to(ok.device).isfinite()
    return ok


def global_norm(xs: Params) -> Tensor:
    """``sqrt(sum_i ||x_i||^2)`` as ``torch.nn.utils.clip_grad_norm_`` computes it: the norm of the
    per-tensor norms."""
    return torch.linalg.vector_norm(tensor_norms(xs), 2.0)


# --------------------------------------------------------------------------------------------
# chain and application


def _merge_hyperparams(parts: Sequence[Transform]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Merge the parts' hyperparameters into one namespace.

    A name used by one part (or by several with the same value) keeps its name; a name used by
    several parts with different values becomes ``"<index>.<name>"`` for each of them.
    Returns the merged dict and, per part, the map from merged key to the part's own name.
    """
    owners: dict[str, list[int]] = {}
    for i, t in enumerate(parts):
        for k in t.hyperparams:
            owners.setdefault(k, []).append(i)
    merged: dict[str, Any] = {}
    keymaps: list[dict[str, str]] = [{} for _ in parts]
    for k, idx in owners.items():
        values = [parts[i].hyperparams[k] for i in idx]
        same = all(_same(values[0], v) for v in values[1:])
        if same:
            merged[k] = values[0]
            for i in idx:
                keymaps[i][k] = k
        else:
            for i in idx:
                merged[f"{i}.{k}"] = parts[i].hyperparams[k]
                keymaps[i][f"{i}.{k}"] = k
    return merged, keymaps


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return a is b
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - exotic objects: identity is the only safe equality
        return a is b


def chain(*transforms: Transform) -> Transform:
    """Apply transforms in sequence: the updates of one are the input of the next.

    ``chain(scale_by_adam(), add_decayed_weights(0.01), scale_by_learning_rate(1e-3))`` is AdamW.
    The chain's hyperparameters are the union of its parts' (see ``_merge_hyperparams`` for
    clashing names), so ``chain(...).with_hyperparams(lr=...)`` reaches the part that has ``lr``.
    """
    for i, t in enumerate(transforms):
        if not isinstance(t, Transform):
            raise TypeError(f"chain: argument {i} must be a ravine.optim.Transform, got {type(t).__name__}")
    parts = list(transforms)
    merged, keymaps = _merge_hyperparams(parts)

    def init(params: Params) -> State:
        return {"step": 0, "parts": [t.init(params) for t in parts]}

    def update(updates: Params, state: State, params: Params | None = None) -> tuple[Params, State]:
        new_parts = []
        for t, s in zip(parts, state["parts"]):
            updates, s = t.update(updates, s, params)
            new_parts.append(s)
        return updates, {"step": state["step"] + 1, "parts": new_parts}

    def factory(**kw: Any) -> Transform:
        rebuilt = []
        for t, km in zip(parts, keymaps):
            own = {km[k]: v for k, v in kw.items() if k in km}
            rebuilt.append(t.with_hyperparams(**own) if own else t)
        return chain(*rebuilt)

    static = frozenset(k for t, km in zip(parts, keymaps) for k, own in km.items() if own in t.static)
    needs = frozenset(k for t, km in zip(parts, keymaps) for k, own in km.items() if own in t.needs)
    return Transform(init, update, "chain", merged, factory, static, tuple(parts), needs=needs)


def chain_info(state: State) -> dict[str, Any]:
    """Information the last update left in a (possibly nested) state: clip ``norm``, ``clipped``.

    Where several components report the same key, the first (earliest in the chain) wins: that
    is the norm of the raw gradient when clipping comes first.
    """
    info: dict[str, Any] = {}

    def visit(s: State) -> None:
        for k, v in s.items():
            if k == "parts":
                for p in v:
                    visit(p)
            elif k != "step" and not isinstance(v, list):
                info.setdefault(k, v)

    visit(state)
    return info


def params_with_grad(group: dict[str, Any]) -> Params:
    """The parameters of a torch param group that have a gradient (dense only: the adapters' rule)."""
    params = [p for p in group["params"] if p.grad is not None]
    for p in params:
        if p.grad.is_sparse:
            raise TypeError("ravine.optim.Optimizer does not support sparse gradients")
    return params


@torch.no_grad()
def apply_updates(params: Params, updates: Params) -> None:
    """``params[i] += updates[i]`` in place (updates already carry the sign and learning rate)."""
    if len(params) != len(updates):
        raise ValueError(f"apply_updates: got {len(params)} params but {len(updates)} updates")
    torch._foreach_add_(params, updates)
