"""The Hessian of a model's mean loss as a linear operator: :class:`HessianOperator`.

    H = d^2/dw^2 L(w),    L(w) = (1/N) sum_b n_b L_b(w)

of the *mean loss over the whole dataset* with respect to the model's trainable parameters ``w``
(flattened into one vector of length ``P``, in ``model.named_parameters()`` order), where ``L_b`` is
``loss_fn(model(X_b), y_b)`` on batch ``b`` of size ``n_b`` and ``N = sum_b n_b``. ``loss_fn`` must
average over its batch (``reduction="mean"``, the default of torch's losses); batches of unequal size
are then weighted by their size, so a DataLoader and the full batch give the same ``H``.

The operator never materialises ``H``: ``matvec(v)`` computes ``H v`` by forward-over-reverse
differentiation, ``torch.func.jvp`` of ``torch.func.grad`` of ``torch.func.functional_call``
(Pearlmutter's trick; the curvlinops style), or by double backward (``torch.autograd.grad`` of
``<grad L, v>``) as a fallback for modules without forward-mode rules. One ``matvec`` is one
Hessian-vector product ("HVP") over the whole dataset and costs about two gradient evaluations.
When the data is in memory and its gradient graph fits a memory bound (``max_graph_mb``), the
graph is built once (``create_graph=True``) and every later product is one backward pass through
it (``cache_graph``, on by default where it applies); a DataLoader, or a graph too large, keeps
forward-over-reverse, which re-runs the forward pass per product and holds no graph.

Model state. Every evaluation runs the model in evaluation mode (batch norm uses its running
statistics, dropout is off) and restores each submodule's own ``training`` flag afterwards
(:func:`ravine._nn.evaluation_mode`). The parameters and buffers are *copied* when the operator is
built (cast to ``dtype`` when one is asked for), so the user's model is never modified, its ``.grad``
fields are never touched, and the curvature is that of the snapshot. Computation follows the device
of the model's parameters; float32 by default, ``dtype=torch.float64`` for tight numerics.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp
from torch.func import grad as func_grad
from torch.func import grad_and_value as func_grad_and_value

from ravine._nn import evaluation_mode, flatten, unflatten
from ravine._validation import Interval, Options, check

__all__ = ["HessianOperator", "LossFn"]

LossFn = Callable[[Tensor, Tensor], Tensor]

_METHODS = Options(("auto", "fwd_rev", "double_backward"))


def _is_pair(obj: object) -> bool:
    return isinstance(obj, (tuple, list)) and len(obj) == 2


def _is_tensor_pair(obj: object) -> bool:
    return _is_pair(obj) and all(isinstance(t, Tensor) for t in obj)  # type: ignore[union-attr]


def _normalize_data(data: object) -> Sequence[tuple[Tensor, Tensor]] | Iterable:
    """Accept ``(X, y)``, a list of ``(X, y)`` batches, or a re-iterable such as a DataLoader."""
    if _is_tensor_pair(data):
        return [(data[0], data[1])]  # type: ignore[index]
    if isinstance(data, Tensor):
        raise TypeError(
            "data must be a pair (X, y) of tensors, a list of (X, y) batches or a DataLoader; "
            f"got a single tensor of shape {tuple(data.shape)}"
        )
    if isinstance(data, (tuple, list)):
        if len(data) == 0:
            raise ValueError("data must hold at least one (X, y) batch; got an empty sequence")
        for i, batch in enumerate(data):
            if not _is_tensor_pair(batch):
                raise TypeError(
                    f"data[{i}] must be a pair (X, y) of tensors; got {type(batch).__name__}"
                    + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
                )
        return [(b[0], b[1]) for b in data]
    if isinstance(data, Iterable):
        if iter(data) is data:
            raise TypeError(
                "data must be re-iterable (curvature needs many passes over it); got a one-shot "
                f"iterator of type {type(data).__name__}; pass a list of batches or a DataLoader"
            )
        return data
    raise TypeError(
        f"data must be a pair (X, y) of tensors, a list of (X, y) batches or a DataLoader; got {type(data).__name__}"
    )


class HessianOperator:
    """The Hessian of a model's mean loss over a dataset, as a linear operator on flat vectors.

    Args:
        model: any ``nn.Module``; its trainable parameters (``requires_grad=True``) are the variables.
            The model is never modified: parameters and buffers are copied when the operator is built.
        loss_fn: ``loss_fn(model(X), y) -> scalar``, the *mean* over the batch (e.g.
            ``nn.CrossEntropyLoss()``). Must be traceable by ``torch.func`` for ``method="fwd_rev"``.
        data: ``(X, y)`` tensors, a list of ``(X, y)`` batches, or a DataLoader (re-iterated on every
            product). Batches are moved to the parameters' device; floating inputs and targets are cast
            to ``dtype``. ``H`` is the Hessian of ``(1/N) sum_b n_b loss_b``.
        method: ``"fwd_rev"`` (forward-over-reverse, ``jvp(grad(L))``), ``"double_backward"`` (reverse
            over reverse), or ``"auto"`` (default: ``fwd_rev``, switching for good to
            ``double_backward`` if the first product raises because an operation lacks a forward-mode
            rule). Both give the same numbers up to rounding.
        dtype: ``None`` (the parameters' dtype) or a floating dtype such as ``torch.float64``; a cast
            copy of the parameters and floating buffers is used.
        cache_graph: build each batch's gradient graph once (``create_graph=True``) and reuse it for
            every product: an HVP is then one backward pass through that graph instead of a forward
            and a backward (PyHessian's single-batch trick; ``benchmarks/curvature.py`` measures the
            gain). It keeps the activations and gradient graphs of *all* batches alive. ``None``
            (default): decided at the first product, on when the data is in memory (``(X, y)`` or a
            list of batches, not a DataLoader), ``method`` is not ``"fwd_rev"`` and the graph's
            estimated size is at most ``max_graph_mb``; otherwise products run forward-over-reverse
            (re-running the forward pass each time). ``True`` forces it (in-memory data only; implies
            ``double_backward``), ``False`` turns it off.
        max_graph_mb: the bound for ``cache_graph=None``, in MiB (default 1024). The graph's size is
            estimated before it is built as twice the bytes of every module output in a forward pass
            over all the data (scaled from the first 16 samples; the tensors a gradient graph keeps
            measured 0.8x to 1.8x of that on MLPs and CNNs) plus twice the parameters.

    Attributes: ``shape == (P, P)``, ``dim == P``, ``dtype``, ``device``, ``names``, ``shapes``,
    ``num_hvps`` (Hessian-vector products computed so far; one per vector and full data pass),
    ``method`` (the method in use), ``cache_graph`` (``None`` until the first product decides) and
    ``graph_bytes_estimate`` (the estimate that decided it, or ``None``). ``matvec``/``@`` take a
    flat vector of length ``P``; ``matmat`` a ``(P, m)`` matrix; ``dense()`` builds ``H`` column by
    column for small models.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: object,
        *,
        method: str = "auto",
        dtype: torch.dtype | None = None,
        cache_graph: bool | None = None,
        max_graph_mb: float = 1024,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable (output, target) -> scalar; got {loss_fn!r}")
        self._method = check("method", method, _METHODS)
        if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
            raise TypeError(f"dtype must be None or a floating torch.dtype; got {dtype!r}")
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("model has no trainable parameters (none with requires_grad=True)")
        dtypes = {p.dtype for _, p in named}
        if dtype is None:
            if len(dtypes) > 1:
                raise ValueError(
                    f"model's trainable parameters mix dtypes {sorted(map(str, dtypes))}; pass dtype= "
                    "to compute in one of them"
                )
            dtype = named[0][1].dtype
            if not dtype.is_floating_point:
                raise TypeError(f"model's parameters must be floating point; got {dtype}")
        self.model = model
        self.loss_fn = loss_fn
        self.dtype: torch.dtype = dtype
        self.device: torch.device = named[0][1].device
        self.names: list[str] = [n for n, _ in named]
        self.shapes: list[torch.Size] = [p.shape for _, p in named]
        self._numels = [p.numel() for _, p in named]
        self.dim = sum(self._numels)
        self.params: list[Tensor] = [p.detach().to(device=self.device, dtype=dtype, copy=True) for _, p in named]
        trainable = set(self.names)
        constants: dict[str, Tensor] = {}
        for n, p in model.named_parameters():
            if n not in trainable:  # frozen parameters: constants, cast with the rest
                constants[n] = p.detach().to(dtype=dtype, copy=True) if p.is_floating_point() else p
        for n, b in model.named_buffers():
            if b.is_floating_point():
                constants[n] = b.detach().to(dtype=dtype, copy=True)
            else:
                constants[n] = b.detach().clone()
        self._constants = constants
        self._data = _normalize_data(data)
        self.num_hvps = 0
        if cache_graph is not None and not isinstance(cache_graph, bool):
            raise TypeError(f"cache_graph must be None, True or False; got {cache_graph!r}")
        self.max_graph_mb = check("max_graph_mb", max_graph_mb, Interval.finite(float, 0))
        if cache_graph:
            if self._method == "fwd_rev":
                raise ValueError(
                    "cache_graph=True reuses a gradient graph, which only method='double_backward' (or "
                    "'auto') can do; got method='fwd_rev'"
                )
            if not isinstance(self._data, list):
                raise ValueError(
                    "cache_graph=True needs in-memory data ((X, y) or a list of batches) since every "
                    f"batch's graph is kept; got {type(data).__name__}"
                )
            self._method = "double_backward"
        if cache_graph is None and (self._method == "fwd_rev" or not isinstance(self._data, list)):
            cache_graph = False
        self._auto_cache = cache_graph is None
        self.cache_graph: bool | None = cache_graph
        self.graph_bytes_estimate: int | None = None
        self._graphs: list[tuple[list[int], tuple[Tensor, ...], int]] | None = None
        self._leaves: list[Tensor] | None = None

    # ---- shapes and conversions --------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int]:
        return (self.dim, self.dim)

    @property
    def method(self) -> str:
        """The HVP method in use (``"auto"`` resolves to one of the two after the first product)."""
        return self._method

    def flatten(self, tensors: Sequence[Tensor]) -> Tensor:
        """Concatenate tensors shaped like the trainable parameters into one flat vector."""
        tensors = list(tensors)
        if len(tensors) != len(self.shapes):
            raise ValueError(f"expected {len(self.shapes)} tensors shaped like the parameters; got {len(tensors)}")
        for i, (t, s) in enumerate(zip(tensors, self.shapes)):
            if not isinstance(t, Tensor) or t.shape != s:
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"tensor {i} ({self.names[i]}) must have shape {tuple(s)}; got {got}")
        return flatten([t.to(self.device) for t in tensors], dtype=self.dtype)

    def unflatten(self, vector: Tensor) -> list[Tensor]:
        """Split a flat vector of length ``P`` into tensors shaped like the trainable parameters."""
        vector = self._check_vector("vector", vector)
        return unflatten(vector, self.params)

    def _check_vector(self, name: str, v: object) -> Tensor:
        if not isinstance(v, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape ({self.dim},); got {type(v).__name__}")
        if v.shape != (self.dim,):
            raise ValueError(f"{name} must have shape ({self.dim},); got {tuple(v.shape)}")
        return v.to(device=self.device, dtype=self.dtype)

    # ---- data and functional model -----------------------------------------------------------

    def _batches(self) -> Iterator[tuple[Tensor, Tensor, int]]:
        seen = False
        for i, batch in enumerate(self._data):
            if not _is_tensor_pair(batch):
                raise TypeError(f"batch {i} of data must be a pair (X, y) of tensors; got {type(batch).__name__}")
            x, y = batch[0], batch[1]
            if x.dim() == 0:
                raise ValueError(f"batch {i}: X must have a batch dimension; got a 0-d tensor")
            n = int(x.shape[0])
            if n == 0:
                continue
            x = x.to(self.device)
            y = y.to(self.device)
            if x.is_floating_point():
                x = x.to(self.dtype)
            if y.is_floating_point():
                y = y.to(self.dtype)
            seen = True
            yield x, y, n
        if not seen:
            raise ValueError("data yielded no non-empty batch")

    def _loss(self, params: Sequence[Tensor], x: Tensor, y: Tensor) -> Tensor:
        tensors = dict(self._constants)
        tensors.update(zip(self.names, params))
        out = functional_call(self.model, tensors, (x,))
        loss = self.loss_fn(out, y)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError(
                "loss_fn must return a scalar tensor (the mean over the batch); got "
                + (f"shape {tuple(loss.shape)}" if isinstance(loss, Tensor) else type(loss).__name__)
            )
        return loss.reshape(())

    def _point(self, flat: Tensor | None) -> list[Tensor]:
        return self.params if flat is None else self.unflatten(flat)

    def loss(self, point: Tensor | None = None) -> float:
        """Mean loss over the data at ``point`` (a flat parameter vector; default: the snapshot)."""
        params = self._point(point)
        total, count = 0.0, 0
        with evaluation_mode(self.model), torch.no_grad():
            for x, y, n in self._batches():
                total += float(self._loss(params, x, y)) * n
                count += n
        return total / count

    def loss_and_gradient(self, point: Tensor | None = None) -> tuple[float, Tensor]:
        """Mean loss and its flat gradient over the data at ``point`` (default: the snapshot)."""
        params = self._point(point)
        gfun = func_grad_and_value(self._loss)
        total, count = 0.0, 0
        acc = torch.zeros(self.dim, device=self.device, dtype=self.dtype)
        with evaluation_mode(self.model), torch.enable_grad():
            for x, y, n in self._batches():
                g, value = gfun(list(params), x, y)
                acc.add_(flatten(g), alpha=n)
                total += float(value) * n
                count += n
        return total / count, acc / count

    # ---- Hessian-vector products -------------------------------------------------------------

    def _hvp_fwd_rev(self, vs: list[Tensor], x: Tensor, y: Tensor) -> list[Tensor]:
        gfun = func_grad(self._loss)
        k = len(self.params)
        if y.is_floating_point():
            # A floating target gets an explicit (materialised) zero tangent: without one, some loss
            # backward formulas (F.mse_loss's in torch 2.x) try to write into an immutable ZeroTensor.
            primals = (*self.params, y)
            tangents = (*vs, torch.zeros_like(y))
            _, hv = jvp(lambda *a: gfun(list(a[:k]), x, a[k]), primals, tangents)
        else:
            _, hv = jvp(lambda *p: gfun(list(p), x, y), tuple(self.params), tuple(vs))
        return list(hv)

    def _hvp_double_backward(self, vs: list[Tensor], x: Tensor, y: Tensor) -> list[Tensor]:
        leaves = [p.detach().requires_grad_(True) for p in self.params]
        loss = self._loss(leaves, x, y)
        if not loss.requires_grad:
            return [torch.zeros_like(p) for p in self.params]
        grads = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
        terms = [(g * v).sum() for g, v in zip(grads, vs) if g is not None and g.requires_grad]
        if not terms:
            return [torch.zeros_like(p) for p in self.params]
        dot = torch.stack(terms).sum()
        hv = torch.autograd.grad(dot, leaves, allow_unused=True)
        return [torch.zeros_like(p) if h is None else h for h, p in zip(hv, self.params)]

    def _hvp_batch(self, vs: list[Tensor], x: Tensor, y: Tensor) -> list[Tensor]:
        if self._method == "fwd_rev":
            return self._hvp_fwd_rev(vs, x, y)
        if self._method == "double_backward":
            return self._hvp_double_backward(vs, x, y)
        try:  # "auto": the first product decides
            out = self._hvp_fwd_rev(vs, x, y)
            self._method = "fwd_rev"
            return out
        except (NotImplementedError, RuntimeError) as err:
            warnings.warn(
                f"forward-over-reverse HVP failed ({type(err).__name__}: {str(err)[:200]}); "
                "falling back to double backward",
                RuntimeWarning,
                stacklevel=4,
            )
            self._method = "double_backward"
            return self._hvp_double_backward(vs, x, y)

    def _build_graphs(self) -> None:
        """Gradient graphs of every batch, built once (``create_graph=True``) for ``cache_graph``."""
        leaves = [p.detach().requires_grad_(True) for p in self.params]
        graphs = []
        total = 0
        with evaluation_mode(self.model), torch.enable_grad():
            for x, y, n in self._batches():
                total += n
                loss = self._loss(leaves, x, y)
                if not loss.requires_grad:
                    continue
                grads = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
                keep = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
                graphs.append((keep, tuple(grads[i] for i in keep), n))
        self._leaves, self._graphs, self._graph_total = leaves, graphs, total

    def _estimate_graph_bytes(self) -> int | None:
        """Estimated bytes of the cached gradient graphs (see ``max_graph_mb``), from a forward pass
        of the first batch's first 16 samples; ``None`` if that pass fails."""
        assert isinstance(self._data, list)
        total = 0

        def hook(_m: nn.Module, _inp: object, out: object) -> None:
            nonlocal total
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, Tensor):
                    total += t.numel() * t.element_size()

        try:
            x, y, _ = next(self._batches())
            n_all = sum(int(b[0].shape[0]) for b in self._data)
            head = x[: min(16, len(x))]
            handles = [m.register_forward_hook(hook) for m in self.model.modules()]
            try:
                with evaluation_mode(self.model), torch.no_grad():
                    tensors = dict(self._constants)
                    tensors.update(zip(self.names, self.params))
                    functional_call(self.model, tensors, (head,))
            finally:
                for h in handles:
                    h.remove()
        except (RuntimeError, NotImplementedError, ValueError, TypeError):
            return None
        param_bytes = sum(p.numel() * p.element_size() for p in self.params)
        return int(2 * total * n_all / len(head) + 2 * param_bytes)

    def _use_cache(self) -> bool:
        """Resolve ``cache_graph=None`` at the first product: in memory and within ``max_graph_mb``."""
        if self.cache_graph is None:
            self.graph_bytes_estimate = self._estimate_graph_bytes()
            est = self.graph_bytes_estimate
            self.cache_graph = est is not None and est <= self.max_graph_mb * 2**20
        return self.cache_graph

    def _matvec_cached(self, vs: list[Tensor]) -> Tensor:
        if self._graphs is None:
            self._build_graphs()
        assert self._graphs is not None and self._leaves is not None
        acc = torch.zeros(self.dim, device=self.device, dtype=self.dtype)
        offsets = [0]
        for k in self._numels:
            offsets.append(offsets[-1] + k)
        for keep, grads, n in self._graphs:
            if not keep:
                continue
            hv = torch.autograd.grad(
                grads, self._leaves, grad_outputs=[vs[i] for i in keep], retain_graph=True, allow_unused=True
            )
            for j, h in enumerate(hv):
                if h is not None:
                    acc[offsets[j] : offsets[j + 1]].add_(h.reshape(-1), alpha=n)
        self.num_hvps += 1
        return acc / self._graph_total

    def matvec(self, v: Tensor) -> Tensor:
        """``H v`` for a flat vector ``v`` of length ``P`` (one HVP over the whole data)."""
        vs = self.unflatten(self._check_vector("v", v))
        if self._use_cache():
            if not self._auto_cache or self._graphs is not None:
                return self._matvec_cached(vs)
            try:  # chosen automatically: the first build decides, as method="auto" does
                out = self._matvec_cached(vs)
                self._method = "double_backward"
                return out
            except (RuntimeError, NotImplementedError) as err:
                self._graphs = self._leaves = None
                self.cache_graph = False
                warnings.warn(
                    f"building the gradient graph to reuse failed ({type(err).__name__}: {str(err)[:200]}); "
                    "computing each product afresh",
                    RuntimeWarning,
                    stacklevel=2,
                )
        acc = torch.zeros(self.dim, device=self.device, dtype=self.dtype)
        count = 0
        with evaluation_mode(self.model), torch.enable_grad():
            for x, y, n in self._batches():
                hv = self._hvp_batch(vs, x, y)
                acc.add_(flatten(hv), alpha=n)
                count += n
        self.num_hvps += 1
        return acc / count

    def __matmul__(self, other: Tensor) -> Tensor:
        if isinstance(other, Tensor) and other.dim() == 2:
            return self.matmat(other)
        return self.matvec(other)

    def matmat(self, vectors: Tensor) -> Tensor:
        """``H V`` for a ``(P, m)`` matrix ``V`` (``m`` HVPs, one column at a time)."""
        if not isinstance(vectors, Tensor) or vectors.dim() != 2 or vectors.shape[0] != self.dim:
            got = tuple(vectors.shape) if isinstance(vectors, Tensor) else type(vectors).__name__
            raise ValueError(f"vectors must be a tensor of shape ({self.dim}, m); got {got}")
        cols = [self.matvec(vectors[:, j]) for j in range(vectors.shape[1])]
        if not cols:
            return torch.zeros(self.dim, 0, device=self.device, dtype=self.dtype)
        return torch.stack(cols, dim=1)

    def dense(self, max_dim: int = 4096) -> Tensor:
        """The full ``(P, P)`` Hessian, built from ``P`` HVPs with unit vectors (small models only).

        Raises ``ValueError`` when ``P > max_dim``. The result is symmetrised, ``(H + H^T) / 2``.
        """
        max_dim = check("max_dim", max_dim, Interval.finite(int, 1))
        if self.dim > max_dim:
            raise ValueError(
                f"the dense Hessian has {self.dim}x{self.dim} entries, above max_dim={max_dim}; "
                "use hessian_eigenvalues/hessian_trace/spectral_density, or raise max_dim"
            )
        h = self.matmat(torch.eye(self.dim, device=self.device, dtype=self.dtype))
        return (h + h.T) / 2


def _operator(
    model: nn.Module | HessianOperator,
    loss_fn: LossFn | None,
    data: object,
    method: str,
    dtype: torch.dtype | None,
) -> HessianOperator:
    if isinstance(model, HessianOperator):
        return model
    return HessianOperator(model, loss_fn, data, method=method, dtype=dtype)  # type: ignore[arg-type]
