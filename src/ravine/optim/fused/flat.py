"""Flat buffers: the parameters, gradients and state of one param group as one tensor per
(device, dtype), every parameter and state tensor a view into them (see :mod:`ravine.optim.fused`)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._state import scatter, slot_names

__all__ = ["FlatGroup"]


class FlatGroup:
    """Flat buffers of one param group: per (device, dtype) bucket a parameter buffer, a gradient
    buffer and one buffer per state slot; parameters, ``p.grad`` and state are views into them."""

    def __init__(
        self,
        params: list[Tensor],
        state: dict,
        layout: Any,
        structure: str,
        init: Callable[[list[Tensor]], dict],
        step: int,
        adopt_grads: bool,
    ):
        self.params = list(params)
        # compiled path: ``p.grad`` become views of the gradient buffer (the chain never writes
        # it). Flat path: the chain works in place in that buffer, so gradients are copied in.
        self.adopt_grads = adopt_grads
        # the chain's in-place work buffer when a group that adopts the gradients runs eagerly
        self.work: list[Tensor] | None = None
        self.layout = layout
        slots = slot_names(layout)
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
        # per parameter: its bucket, offset and shape (where its views lie in any flat buffer)
        self.spans: list[tuple[int, int, torch.Size]] = [None] * len(params)  # type: ignore[list-item]
        self.grad_views: list[Tensor] = [None] * len(params)  # type: ignore[list-item]
        for k, idx in enumerate(self.buckets):
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
                self.spans[i] = (k, off, p.shape)
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

    def gather_grads(self) -> None:
        """Bring the gradients into the flat gradient buffer (copy only those not already there)."""
        grads = [p.grad for p in self.params]
        if not self.adopt_grads:
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

    def views(self, flat: list[Tensor]) -> list[Tensor]:
        """Each parameter's view (its shape, in the parameters' order) of one flat tensor per bucket."""
        return [flat[k][off : off + shape.numel()].view(shape) for k, off, shape in self.spans]

    def work_buffers(self) -> list[Tensor]:
        """A reusable buffer per bucket for the chain to work in (the gradient buffer is ``p.grad``)."""
        if self.work is None:
            self.work = [torch.empty_like(g) for g in self.flat_grads]
        return self.work


def _flat_state(state: dict, slots: list[str], layout: Any) -> dict[str, Tensor]:
    """The one-tensor lists of a transform's ``init([flat])`` by slot name."""
    per: list[dict] = [{}]
    scatter(layout, state, per)
    return {s: per[0][s] for s in slots}
