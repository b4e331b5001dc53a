"""Evaluating a model's mean loss at many points ``w0 + sum_k c_k d_k`` of a grid, fast and exactly.

The data as re-iterable batches, the model's modes during a slice (dropout off, batch norm in the
requested mode, every flag restored), and :class:`_Evaluator`: ``vmap`` of ``functional_call``
over stacked parameter sets, or one call per point, with the input-layer identity
(``X (W + a D1 + b D2)^T = Z0 + a P1 + b P2``) where it applies. The package docstring
(:mod:`ravine.landscape`) explains the speed and mode rules.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from ravine._nn import evaluation_mode
from ravine._validation import Interval, check


def _batches(
    data: Any, device: torch.device, subset: int | Sequence[int] | None, batch_size: int | None, seed: int
) -> tuple[Callable[[], Iterable[tuple[Tensor, Tensor]]], dict[str, Any]]:
    """A re-iterable source of ``(x, y)`` batches on ``device`` and its description."""
    if isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        x, y = data
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"data: inputs have {x.shape[0]} samples but targets {y.shape[0]}")
        n_all = x.shape[0]
        if n_all == 0:
            raise ValueError("data: no samples")
        indices: Any = "all"
        if subset is not None:
            if isinstance(subset, int) and not isinstance(subset, bool):
                check("subset", subset, Interval(int, 1, n_all))
                gen = torch.Generator().manual_seed(seed)
                idx = torch.randperm(n_all, generator=gen)[:subset].sort().values
            else:
                idx = torch.as_tensor(list(subset), dtype=torch.long)
                if idx.numel() == 0 or idx.min() < 0 or idx.max() >= n_all:
                    raise ValueError(f"subset indices must be non-empty and within [0, {n_all}), got {subset!r}")
            x, y = x[idx], y[idx]
            indices = idx.tolist()
        x, y = x.to(device), y.to(device)
        n = x.shape[0]
        bs = n if batch_size is None else check("batch_size", batch_size, Interval.finite(int, 1))
        chunks = [(x[i : i + bs], y[i : i + bs]) for i in range(0, n, bs)]
        desc = {"source": "tensors", "n": n, "indices": indices, "batches": len(chunks)}
        return (lambda: chunks), desc
    if subset is not None or batch_size is not None:
        raise ValueError("subset and batch_size apply to data given as (inputs, targets) tensors only")
    if isinstance(data, Iterable) and not isinstance(data, Tensor | str | bytes):
        if iter(data) is data:
            raise TypeError("data is a one-shot iterator; pass a re-iterable (a DataLoader or a list of batches)")
        n = 0
        nb = 0
        for batch in data:
            if not (isinstance(batch, tuple | list) and len(batch) == 2):
                raise TypeError("data batches must be (inputs, targets) pairs")
            n += len(batch[0])
            nb += 1
        if n == 0:
            raise ValueError("data: no samples")

        def gen() -> Iterable[tuple[Tensor, Tensor]]:
            for xb, yb in data:
                yield xb.to(device), yb.to(device)

        return gen, {"source": type(data).__name__, "n": n, "indices": "all", "batches": nb}
    raise TypeError(
        f"data must be an (inputs, targets) pair of tensors or a re-iterable of such batches, got {type(data).__name__}"
    )


@contextlib.contextmanager
def _slice_mode(model: nn.Module, batch_norm: str) -> Iterator[None]:
    """Dropout off, batch norm in the requested mode; every flag restored afterwards.

    ``"eval"``: the whole model in evaluation mode. ``"recompute"``: batch-norm layers in training
    mode (normalize with the batch's statistics) with ``track_running_stats`` off (update no buffer).
    """
    with evaluation_mode(model):
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if batch_norm != "recompute":
            norms = []
        tracks = [m.track_running_stats for m in norms]
        for m in norms:
            m.training, m.track_running_stats = True, False
        try:
            yield
        finally:
            for m, track in zip(norms, tracks):
                m.track_running_stats = track


def _activation_bytes(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], x: Tensor) -> int:
    """Bytes of every module output in one forward pass of ``x`` (an estimate of activation memory)."""
    total = 0

    def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
        nonlocal total
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, Tensor):
                total += t.numel() * t.element_size()

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        functional_call(model, (dict(params), dict(buffers)), (x,))
    finally:
        for h in handles:
            h.remove()
    return total


# Layers whose output is linear in their weights: when such a layer's input does not depend on any
# parameter (it is the data, or a parameter-free function of it), its output at a grid point is
# f(x; W + a D1 + b D2) = f(x; W) + a f(x; D1) + b f(x; D2) exactly (bias included).
_INPUT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _is_batched(t: Tensor) -> bool:
    """True when ``t`` carries a vmap batch dimension (it depends on the vmapped parameters)."""
    return bool(torch._C._functorch.is_batchedtensor(t))


def _patchable(model: nn.Module, centre: Mapping[str, Tensor], shortcut: bool) -> dict[str, tuple[nn.Module, bool]]:
    """Layers the batched pass patches: ``name -> (module, eligible for the input-layer identity)``.

    Exact ``nn.Linear``/``nn.ConvNd`` instances without an instance-level ``forward``; eligible when
    ``shortcut`` and their parameters are their own entries of ``centre`` (not tied elsewhere).
    """
    if not hasattr(torch._C, "_functorch") or not hasattr(torch._C._functorch, "is_batchedtensor"):
        return {}
    out = {}
    for name, m in model.named_modules():
        if type(m) not in _INPUT_LAYERS or "forward" in m.__dict__:
            continue
        names = [f"{name}.{p}" if name else p for p, _ in m.named_parameters(recurse=False)]
        own = (f"{name}.weight" if name else "weight") in names and all(n in centre for n in names)
        out[name] = (m, shortcut and own)
    return out


class _InputLayerShortcut:
    """Patches ``forward`` of linear layers while the batched pass runs (restored on exit).

    * A layer eligible for the input-layer identity and called with a parameter-independent input
      returns ``[1, c_1, c_2] @ [Z0; P1; P2]`` (one small matrix product per pass) from products
      computed once per data batch (cached for tensor data), instead of one product per grid point.
    * Any other ``nn.Linear`` call with a 2-D input and a bias runs ``addmm(bias, x, W^T)``, the
      same function as ``F.linear`` with the bias add fused (under ``vmap`` ``F.linear`` with batched
      weights becomes a batched product followed by a separate addition).
    * Everything else, and every call outside the batched pass, runs the layer's own ``forward``.
    """

    def __init__(self, layers, centre, dirs, cacheable, cache_bytes):
        self.layers, self.centre, self.dirs = layers, centre, dirs
        self.cacheable, self.cache_bytes = cacheable, cache_bytes
        self.cache: dict[tuple, Tensor] = {}
        self.cached = 0
        self.coeffs: Tensor | None = None
        self.scalars: list[float] | None = None  # the coefficients as numbers, in the per-point loop
        self.rows: dict[tuple, tuple[tuple[float, ...], Tensor]] = {}  # per call: Z0 + c_2 P2, its c_2
        self.key: tuple = ()
        self.calls: dict[str, int] = {}
        self.used: set[str] = set()
        self.used_calls: set[tuple[str, int]] = set()
        # None: decide by the input's vmap batch dimension; a set: the (layer, call index) pairs to
        # replace (the per-point loop, where inputs carry no batch dimension, uses the probe's set)
        self.allowed: set[tuple[str, int]] | None = None

    def __enter__(self) -> _InputLayerShortcut:
        for name, (m, eligible) in self.layers.items():
            m.forward = self._patched(name, m, eligible, type(m).forward.__get__(m))
        return self

    def __exit__(self, *exc: object) -> None:
        for m, _ in self.layers.values():
            m.__dict__.pop("forward", None)

    def _apply(self, m: nn.Module, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        if isinstance(m, nn.Linear):
            return nn.functional.linear(x, w, b)
        return m._conv_forward(x, w, b)

    def _patched(self, name: str, m: nn.Module, eligible: bool, original: Callable[[Tensor], Tensor]):
        is_linear = isinstance(m, nn.Linear)

        def forward(x: Tensor) -> Tensor:
            if self.coeffs is None and self.scalars is None or not isinstance(x, Tensor):
                return original(x)
            if eligible:
                count = self.calls.get(name, 0)
                self.calls[name] = count + 1
                if self.allowed is None and not _is_batched(x) or self.allowed and (name, count) in self.allowed:
                    out = self._identity(name, count, m, x)
                    if out is not None:
                        return out
            if is_linear and x.dim() == 2 and m.bias is not None:
                return torch.addmm(m.bias, x, m.weight.t())
            return original(x)

        return forward

    def _identity(self, name: str, count: int, m: nn.Module, x: Tensor) -> Tensor | None:
        """``Z0 + sum_k c_k P_k`` for this call, or ``None`` (per-point loop, products not cacheable:
        three products per point would cost more than the layer itself)."""
        key = (*self.key, name, count)
        stacked = self.cache.get(key)
        if stacked is None:
            prefix = f"{name}." if name else ""
            wn, bn = f"{prefix}weight", f"{prefix}bias"
            has_b = m.bias is not None
            if self.scalars is not None and not self.cacheable:
                return None
            stacked = torch.stack(
                [self._apply(m, x, v[wn], v[bn] if has_b else None) for v in (self.centre, *self.dirs)]
            )
            size = stacked.numel() * stacked.element_size()
            if self.cacheable and self.cached + size <= self.cache_bytes:
                self.cache[key] = stacked
                self.cached += size
            elif self.scalars is not None:
                return None
        self.used.add(name)
        self.used_calls.add((name, count))
        if self.scalars is None:
            coef = torch.cat([self.coeffs.new_ones(1), self.coeffs])
            return (coef @ stacked.reshape(stacked.shape[0], -1)).reshape(stacked.shape[1:])
        # One point (the per-point loop): (Z0 + c_2 P2 + ...) + c_1 P1, where the bracket is computed
        # once per row of the grid (kept while c_2.. stay the same), so each point costs one scaled
        # addition, whose output stays in cache for the next layer (a 1-row matrix product would
        # stream it out to memory).
        a, tail = self.scalars[0], tuple(self.scalars[1:])
        base = stacked[0]
        if tail:
            held = self.rows.get(key)
            if held is None or held[0] != tail:
                base = stacked[0].clone()
                for k, c in enumerate(tail):
                    base.add_(stacked[k + 2], alpha=c)
                self.rows[key] = (tail, base)
            else:
                base = held[1]
        return torch.add(base, stacked[1], alpha=a)


# On a CPU, a batched pass is fastest when its activations stay in cache: passes are sized to this
# many bytes (stacked parameters plus activations), splitting the data into micro-batches, unless
# max_memory_mb is smaller. On other devices a pass fills max_memory_mb.
_CPU_PASS_BYTES = 16 * 2**20


def _moved(w: Tensor, moves: list[tuple[int, Tensor]], row: list[float]) -> Tensor:
    """``w + sum_k row[k] d_k`` over ``moves = [(k, d_k)]`` (``w`` itself when there is none)."""
    for j, (k, d) in enumerate(moves):
        w = torch.add(w, d, alpha=row[k]) if j == 0 else w.add_(d, alpha=row[k])
    return w


class _Evaluator:
    """Evaluates mean loss (and metric) at points ``w0 + sum_k c_k d_k`` for a block of coefficients.

    Paths: ``"vmap"`` (``vmap`` of ``functional_call`` over stacked parameter sets, with the
    input-layer identity where it applies) or ``"loop"`` (one call of the model per point). With
    ``batch_norm="eval"`` the loss of a batch is an exact size-weighted mean of its parts, so a batch
    may be split into micro-batches; with ``"recompute"`` batches are kept whole (the statistics are
    those of the batch).
    """

    def __init__(
        self, model, loss_fn, metric, batches, centre, dirs, max_memory_mb, shortcut, vectorize, split, cacheable
    ):
        self.model = model
        self.loss_fn = loss_fn
        self.metric = metric
        self.batches = batches
        self.centre = centre
        self.dirs = dirs
        self.split = split
        self.buffers = OrderedDict((n, b.detach()) for n, b in model.named_buffers())
        self.budget = int(max_memory_mb * 2**20)
        first = next(iter(centre.values()))
        self.target = min(self.budget, _CPU_PASS_BYTES) if first.device.type == "cpu" else self.budget
        self.path = "vmap" if vectorize else "loop"
        self.vectorize_probe = not vectorize  # a per-point loop by choice may still use the identity
        self.loop_layers: set[tuple[str, int]] | None = None
        self.loop_terms: list[tuple[str, Tensor, list[tuple[int, Tensor]]]] | None = None
        self.slots: list[tuple[nn.Module, str]] | None = None  # parameter slots of the per-point loop
        self.mmap_warmed = False
        layers = _patchable(model, centre, shortcut)
        self.shortcut = _InputLayerShortcut(layers, centre, dirs, cacheable, self.budget // 4)
        self.param_bytes = sum(p.numel() * p.element_size() for p in centre.values())
        self.sample_bytes: float | None = None
        self.max_batch = 0

    def plan(self, remaining: int) -> tuple[int, int]:
        """``(points per pass, samples per micro-batch)`` within the pass size."""
        if self.path == "loop":
            return min(remaining, 64), 0
        if self.sample_bytes is None:
            x = next(iter(self.batches()))[0]
            self.max_batch = max(len(xb) for xb, _ in self.batches())
            # every module's output, and as much again for temporaries
            self.sample_bytes = 2 * _activation_bytes(self.model, self.centre, self.buffers, x) / len(x)
        pb, sb = 2 * self.param_bytes, self.sample_bytes
        nb_min = self.max_batch if not self.split else min(self.max_batch, 256)
        k = max(1, min(remaining, int(self.target // (pb + nb_min * sb))))
        nb = self.max_batch if not self.split else int(max(nb_min, (self.target / k - pb) // sb))
        if self.split and nb >= self.max_batch:
            # everything fits: grow the point chunk instead
            nb = self.max_batch
            k = max(k, min(remaining, int(self.target // (pb + nb * sb))))
        return k, max(1, min(nb, self.max_batch))

    # stacked parameters of K points, each rebuilt from the centre
    def _stack(self, coeffs: Tensor) -> dict[str, Tensor]:
        out = {}
        for n, w in self.centre.items():
            shape = (-1,) + (1,) * w.dim()
            t = w.unsqueeze(0) + coeffs[:, 0].to(w.dtype).reshape(shape) * self.dirs[0][n].unsqueeze(0)
            for k in range(1, len(self.dirs)):
                t = t + coeffs[:, k].to(w.dtype).reshape(shape) * self.dirs[k][n].unsqueeze(0)
            out[n] = t
        return out

    def _values(self, out: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        loss = self.loss_fn(out, y)
        if not isinstance(loss, Tensor) or loss.dim() != 0:
            raise ValueError("loss_fn must return a scalar tensor (the mean over the batch)")
        if self.metric is None:
            return loss, loss.new_zeros(())
        met = self.metric(out, y)
        if not isinstance(met, Tensor) or met.dim() != 0:
            raise ValueError("metric must return a scalar tensor (the mean over the batch)")
        return loss, met.to(loss.dtype)

    def evaluate(self, coeffs: Tensor, micro: int, n_total: int, batches=None) -> tuple[Tensor, Tensor]:
        """Mean loss and metric over all data at each row of ``coeffs`` (K, n_dirs)."""
        if self.path == "loop" and batches is None:
            return self._loop(coeffs, n_total)
        stacked = self._stack(coeffs)
        dtype = next(iter(self.centre.values())).dtype
        sc = self.shortcut

        def f(p, c, xb, yb):
            sc.coeffs, sc.calls = c, {}
            try:
                return self._values(functional_call(self.model, (p, self.buffers), (xb,)), yb)
            finally:
                sc.coeffs = None

        batched = vmap(f, in_dims=(0, 0, None, None))
        loss_sum = coeffs.new_zeros(coeffs.shape[0], dtype=torch.float64)
        met_sum = torch.zeros_like(loss_sum)
        with sc:
            for bi, (x, y) in enumerate(self.batches() if batches is None else batches):
                step = micro if self.split else len(x)
                for i in range(0, len(x), step):
                    sc.key = (bi, i, step)
                    ls, ms = batched(stacked, coeffs.to(dtype), x[i : i + step], y[i : i + step])
                    loss_sum += ls.double() * len(y[i : i + step])
                    met_sum += ms.double() * len(y[i : i + step])
        return loss_sum / n_total, met_sum / n_total

    def _probe(self) -> set[tuple[str, int]]:
        """``(layer, call index)`` pairs that receive a parameter-independent input, found by one tiny
        batched pass (two points, two samples): outside ``vmap`` nothing tells data from activations."""
        sc = self.shortcut
        if not any(eligible for _, eligible in sc.layers.values()):
            return set()
        x, y = next(iter(self.batches()))
        coeffs = torch.zeros(2, len(self.dirs), dtype=torch.float64, device=x.device)
        saved_cache, sc.cacheable = sc.cacheable, False
        try:
            self.evaluate(coeffs, 2, max(len(x), 1), batches=[(x[:2], y[:2])])
        except (RuntimeError, NotImplementedError):
            return set()
        finally:
            sc.cacheable = saved_cache
        used, sc.used, sc.used_calls = set(sc.used_calls), set(), set()
        return used

    @contextlib.contextmanager
    def _placed(self, p: dict[str, Tensor]) -> Iterator[Callable[[Tensor], Any]]:
        """The model with the point's tensors ``p`` as its parameters, as a function of the input.

        When every parameter is registered once (no tied weights), the tensors are put in the owning
        modules' parameter slots for the point and the originals put back afterwards: the model
        itself is called, without ``functional_call``'s per-call bookkeeping. Otherwise (tied
        weights, which ``functional_call`` unties) each call goes through ``functional_call``.
        """
        if self.slots is None:
            names = [n for n, _ in self.model.named_parameters(remove_duplicate=False)]
            self.slots = []
            if names == list(self.centre):
                for n in names:
                    owner, _, attr = n.rpartition(".")
                    self.slots.append((self.model.get_submodule(owner), attr))
        if not self.slots:
            yield lambda x: functional_call(self.model, (p, self.buffers), (x,))
            return
        originals = [m._parameters[a] for m, a in self.slots]
        try:
            for (m, a), t in zip(self.slots, p.values()):
                m._parameters[a] = t
            yield self.model
        finally:
            for (m, a), t in zip(self.slots, originals):
                m._parameters[a] = t

    def _raise_mmap_threshold(self) -> None:
        """Allocate and free (untouched) one block the size of a pass's activations, once, on a CPU.

        glibc's ``malloc`` serves blocks above its mmap threshold (128 KiB at start) with fresh pages
        from the kernel, which fault on first touch, and raises the threshold to the size of such a
        block when it is freed. Until something in the process has freed a block that large, every
        activation of every point can come as fresh pages: measured up to 1.1 ms of page faults per
        point (+30%) on the benchmark's MLP in a new process. The untouched block costs no page.
        """
        first = next(iter(self.centre.values()))
        if self.mmap_warmed or first.device.type != "cpu":
            return
        self.mmap_warmed = True
        x = next(iter(self.batches()))[0]
        size = min(_activation_bytes(self.model, self.centre, self.buffers, x), 32 * 2**20)
        block = torch.empty(size, dtype=torch.uint8)
        del block

    def _terms(self) -> list[tuple[str, Tensor, list[tuple[int, Tensor]]]]:
        """Per parameter: its name, its centre and the directions that move it (``(k, d_k)``, nonzero)."""
        if self.loop_terms is None:
            self.loop_terms = [
                (n, w, [(k, d[n]) for k, d in enumerate(self.dirs) if bool(d[n].any())]) for n, w in self.centre.items()
            ]
        return self.loop_terms

    def _loop(self, coeffs: Tensor, n_total: int) -> tuple[Tensor, Tensor]:
        """One call of the model per point; the input-layer identity only for the layers the probe
        found (when batching works but was not asked for).

        A point's parameters are ``(w0 + c_2 d_2) + c_1 d_1``, the bracket built once per row of the
        grid, by scaled additions (``torch.add`` with ``alpha``) that skip the directions that are zero
        for a tensor (biases of filter-normalized directions); the per-point values are gathered and
        summed once at the end.
        """
        if self.loop_layers is None:
            self.loop_layers = self._probe() if self.vectorize_probe else set()
        sc = self.shortcut
        sc.allowed = set(self.loop_layers)
        terms = self._terms()
        self._raise_mmap_threshold()
        rows = coeffs.tolist()
        losses: list[Tensor] = []
        mets: list[Tensor] = []
        sizes: list[int] = []
        try:
            with sc:
                tail: tuple[float, ...] | None = None
                bases: list[Tensor] = []
                for row in rows:
                    if tuple(row[1:]) != tail:  # a new row of the grid: w0 + c_2 d_2 + ...
                        tail = tuple(row[1:])
                        bases = [_moved(w, [(k, d) for k, d in moves if k > 0], row) for _, w, moves in terms]
                    p = {
                        n: torch.add(base, moves[0][1], alpha=row[0]) if moves and moves[0][0] == 0 else base
                        for (n, _, moves), base in zip(terms, bases)
                    }
                    sizes.clear()
                    with self._placed(p) as call:
                        for bi, (x, y) in enumerate(self.batches()):
                            sc.scalars, sc.calls, sc.key = row, {}, (bi, 0, len(x))
                            try:
                                loss, met = self._values(call(x), y)
                            finally:
                                sc.scalars = None
                            losses.append(loss)
                            mets.append(met)
                            sizes.append(len(y))
        finally:
            sc.allowed = None
        weights = torch.tensor(sizes, dtype=torch.float64, device=coeffs.device)
        shape = (len(rows), len(sizes))
        loss_sum = torch.stack(losses).double().reshape(shape) @ weights
        met_sum = torch.stack(mets).double().reshape(shape) @ weights
        return loss_sum / n_total, met_sum / n_total
