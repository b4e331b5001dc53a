"""Where a chain's state lives in a torch optimizer: one private layout that the adapter and the
fused engine share.

A chain's state is a tree (``{"step": n, "parts": [...]}``, see :mod:`ravine.optim.base`) whose
per-parameter lists (``exp_avg``, ``momentum_buffer``...) torch stores per parameter, in
``optimizer.state[p]``. The *layout* of a chain is that tree with each list replaced by a
:class:`Slot`: the key under which each parameter keeps its tensor (torch's name, numbered when two
parts use the same one). :func:`assemble` builds a chain's state from the per-parameter dicts,
:func:`scatter` writes it back; :func:`by_slot` reads a state back slot by slot.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .base import State, Transform

__all__ = [
    "Slot",
    "layout_of",
    "slot_names",
    "assemble",
    "scatter",
    "by_slot",
    "first_state",
    "leaves",
    "clips_globally",
    "check_global_clip",
    "check_structure",
]


class Slot:
    """A per-parameter list in a state layout, stored in ``optimizer.state[p][name]``."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


def _lists(state: State) -> Iterator[str]:
    """The names of the per-parameter lists of a state tree, depth first."""
    for k, v in state.items():
        if k == "parts":
            for part in v:
                yield from _lists(part)
        elif isinstance(v, list):
            yield k


def _layout(state: State) -> dict:
    """Replace each per-parameter list by a named slot; names are torch's unless they clash."""
    names = list(_lists(state))
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
                out[k] = Slot(k if names.count(k) == 1 else f"{k}.{i}")
        return out

    return build(state)


_LAYOUTS: dict[str, dict] = {}


def layout_of(t: Transform) -> tuple[str, dict]:
    """The structure key of ``t`` (what fixes its state layout) and its layout, cached by key."""
    structure = repr(t.structure())
    layout = _LAYOUTS.get(structure)
    if layout is None:
        layout = _LAYOUTS[structure] = _layout(t.init([]))
    return structure, layout


def _slots(layout: dict) -> Iterator[tuple[dict, str, Slot]]:
    """Every slot of a layout with the layout node holding it and its key there, depth first."""
    for k, v in layout.items():
        if k == "parts":
            for part in v:
                yield from _slots(part)
        elif isinstance(v, Slot):
            yield layout, k, v


def slot_names(layout: dict) -> list[str]:
    """The names under which each parameter keeps its state tensors."""
    return [slot.name for _, _, slot in _slots(layout)]


def assemble(layout: dict, per_param: list[dict], step: Any) -> State:
    """The chain state of the parameters whose state dicts are ``per_param``, at ``step``."""
    out: State = {}
    for k, v in layout.items():
        if k == "parts":
            out[k] = [assemble(p, per_param, step) for p in v]
        elif k == "step":
            out[k] = step
        else:
            out[k] = [d[v.name] for d in per_param]
    return out


def scatter(layout: dict, state: State, per_param: list[dict]) -> None:
    """Write the per-parameter lists of a chain state into the parameters' state dicts."""
    for k, v in layout.items():
        if k == "parts":
            for lp, sp in zip(v, state["parts"]):
                scatter(lp, sp, per_param)
        elif isinstance(v, Slot):
            for d, tensor in zip(per_param, state[k]):
                d[v.name] = tensor


def by_slot(layout: dict, state: State) -> list[dict[str, Any]]:
    """Invert :func:`assemble`: per list position, slot name -> tensor."""
    columns: dict[str, list] = {}

    def visit(lay: dict, s: State) -> None:
        for k, v in lay.items():
            if k == "parts":
                for lp, sp in zip(v, s["parts"]):
                    visit(lp, sp)
            elif isinstance(v, Slot):
                columns[v.name] = s[k]

    visit(layout, state)
    n = len(next(iter(columns.values()))) if columns else 0
    return [{k: v[i] for k, v in columns.items()} for i in range(n)]


def first_state(state: State) -> State:
    """The state of a chain's first primitive."""
    while "parts" in state:
        state = state["parts"][0]
    return state


def leaves(t: Transform) -> list[Transform]:
    """The primitives of a (possibly nested) chain, in the order they run."""
    if t.parts:
        return [leaf for p in t.parts for leaf in leaves(p)]
    return [t]


def _global_clip(leaf: Transform) -> bool:
    hp = leaf.hyperparams
    return leaf.name == "clip_by_global_norm" and not hp.get("per_row") and not hp.get("per_group")


def clips_globally(t: Transform) -> bool:
    """Whether ``t`` starts by clipping to the norm of every param group's gradients: the optimizer
    then computes that norm and hands it to the clip as its state's ``total_norm``."""
    return _global_clip(leaves(t)[0])


def check_global_clip(t: Transform, groups: int) -> None:
    """Refuse a clip over all param groups that does not see the gradients (is not first)."""
    if groups > 1 and any(_global_clip(leaf) for leaf in leaves(t)[1:]):
        raise ValueError(
            "clip_by_global_norm clips the gradients of all param groups together, so with several "
            "groups it must come first in the chain; use clip_by_global_norm(..., per_group=True) "
            "to clip each group by its own norm where it stands"
        )


def check_structure(d: dict, structure: str) -> None:
    """Raise if a parameter's state was made by a chain of another structure."""
    if d.setdefault("structure", structure) != structure:
        raise ValueError(
            "the optimizer's structure changed after training started (a structural "
            "hyperparameter such as momentum=0 -> >0, amsgrad or weight_decay=0 -> >0 was "
            f"changed): was {d['structure']}, now {structure}"
        )
