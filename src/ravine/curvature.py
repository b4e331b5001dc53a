"""Curvature of a network's loss: Hessian-vector products, eigenvalues, trace, density, sharpness.

Everything here is built on one object, :class:`HessianOperator`: the Hessian

    H = d^2/dw^2 L(w),    L(w) = (1/N) sum_b n_b L_b(w)

of the *mean loss over the whole dataset* with respect to the model's trainable parameters ``w``
(flattened into one vector of length ``P``, in ``model.named_parameters()`` order), where ``L_b`` is
``loss_fn(model(X_b), y_b)`` on batch ``b`` of size ``n_b`` and ``N = sum_b n_b``. ``loss_fn`` must
average over its batch (``reduction="mean"``, the default of torch's losses); batches of unequal size
are then weighted by their size, so a DataLoader and the full batch give the same ``H``.

The operator never materialises ``H``: ``matvec(v)`` computes ``H v`` by forward-over-reverse
differentiation, ``torch.func.jvp`` of ``torch.func.grad`` of ``torch.func.functional_call`` (Pearlmutter's
trick; the curvlinops style), or by double backward (``torch.autograd.grad`` of ``<grad L, v>``) as a
fallback for modules without forward-mode rules. One ``matvec`` is one Hessian-vector product ("HVP")
over the whole dataset and costs about two gradient evaluations.

Model state. Every evaluation runs the model in evaluation mode (batch norm uses its running
statistics, dropout is off) and restores each submodule's own ``training`` flag afterwards. The
parameters and buffers are *copied* when the operator is built (cast to ``dtype`` when one is asked
for), so the user's model is never modified, its ``.grad`` fields are never touched, and the curvature
is that of the snapshot. Computation follows the device of the model's parameters; float32 by
default, ``dtype=torch.float64`` for tight numerics.

Algorithms on top of the operator:

- :func:`hessian_eigenvalues`: extreme eigenpairs by Lanczos with full reorthogonalization and
  thick restarts (Wu & Simon 2000), or power iteration with deflation (what PyHessian does);
- :func:`hessian_index`: the fraction of negative eigenvalues from the dense Hessian (small models);
- :func:`hessian_trace`: Hutchinson's and Hutch++ (Meyer, Musco, Musco & Woodruff 2021) estimators
  with a standard error;
- :func:`spectral_density`: stochastic Lanczos quadrature with Gaussian broadening (Ghorbani,
  Krishnan & Xiao 2019; PyHessian's ``density``);
- sharpness: :func:`sam_sharpness` (Foret et al. 2021), :func:`keskar_sharpness` (Keskar et al. 2017),
  :func:`preconditioned_sharpness` for Adam (Cohen et al. 2022), :func:`stability_threshold`
  (2/lr for GD, 38/lr for Adam with beta1 = 0.9) and the summary :func:`sharpness`.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp
from torch.func import grad as func_grad
from torch.func import grad_and_value as func_grad_and_value

from ravine._validation import Interval, Options, check

__all__ = [
    "HessianOperator",
    "EigenResult",
    "IndexResult",
    "TraceResult",
    "DensityResult",
    "SamSharpness",
    "KeskarSharpness",
    "PreconditionedSharpness",
    "SharpnessReport",
    "evaluation_mode",
    "hessian_eigenvalues",
    "hessian_index",
    "hessian_trace",
    "spectral_density",
    "sam_sharpness",
    "keskar_sharpness",
    "adam_preconditioner",
    "preconditioned_sharpness",
    "stability_threshold",
    "max_stable_lr",
    "critical_point_kind",
    "sharpness",
]

_METHODS = ("auto", "fwd_rev", "double_backward")
_WHICH = ("largest", "smallest", "both")
_EIG_METHODS = ("lanczos", "power")
_TRACE_METHODS = ("hutch++", "hutchinson")

LossFn = Callable[[Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------------------------------
# model mode and data
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule of ``model`` in evaluation mode, and restore each one's flag on exit.

    Unlike ``model.train(was_training)``, this restores mixed states exactly (a frozen batch-norm
    layer in eval mode inside a model in train mode stays so).
    """
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


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


def _check_choice(name: str, value: object, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def _check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return value


def _check_positive_float(name: str, value: object, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number; got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}; got {value!r}")
    return v


def _generator(seed: object) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer; got {type(seed).__name__}")
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    return gen


# --------------------------------------------------------------------------------------------------
# the operator
# --------------------------------------------------------------------------------------------------


class HessianOperator:
    """The Hessian of a model's mean loss over a dataset, as a linear operator on flat vectors.

    Parameters
    ----------
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
        every product: an HVP is then one backward pass through that graph instead of a forward and
        a backward (about 1.8x cheaper on the benchmark MLP; PyHessian's single-batch trick). Needs
        in-memory data (``(X, y)`` or a list of batches) and keeps the activations and gradient
        graphs of *all* batches alive, so it is off by default; implies ``double_backward``.

    Attributes: ``shape == (P, P)``, ``dim == P``, ``dtype``, ``device``, ``names``, ``shapes``,
    ``num_hvps`` (Hessian-vector products computed so far; one per vector and full data pass) and
    ``method`` (the method in use). ``matvec``/``@`` take a flat vector of length ``P``;
    ``matmat`` a ``(P, m)`` matrix; ``dense()`` builds ``H`` column by column for small models.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: object,
        *,
        method: str = "auto",
        dtype: torch.dtype | None = None,
        cache_graph: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable (output, target) -> scalar; got {loss_fn!r}")
        self._method = _check_choice("method", method, _METHODS)
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
        if not isinstance(cache_graph, bool):
            raise TypeError(f"cache_graph must be True or False; got {cache_graph!r}")
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
        self.cache_graph = cache_graph
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
        return torch.cat([t.reshape(-1).to(device=self.device, dtype=self.dtype) for t in tensors])

    def unflatten(self, vector: Tensor) -> list[Tensor]:
        """Split a flat vector of length ``P`` into tensors shaped like the trainable parameters."""
        vector = self._check_vector("vector", vector)
        return [c.view(s) for c, s in zip(vector.split(self._numels), self.shapes)]

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
                acc.add_(torch.cat([gi.reshape(-1) for gi in g]), alpha=n)
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
        if self.cache_graph:
            return self._matvec_cached(vs)
        acc = torch.zeros(self.dim, device=self.device, dtype=self.dtype)
        count = 0
        with evaluation_mode(self.model), torch.enable_grad():
            for x, y, n in self._batches():
                hv = self._hvp_batch(vs, x, y)
                acc.add_(torch.cat([h.reshape(-1) for h in hv]), alpha=n)
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
        _check_positive_int("max_dim", max_dim)
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


# --------------------------------------------------------------------------------------------------
# Lanczos with full reorthogonalization (and thick restarts)
# --------------------------------------------------------------------------------------------------


class _Lanczos:
    """A Krylov basis ``V`` (rows, orthonormal) and the projected matrix ``T = V^T H V``.

    Column ``j`` of ``T`` is the vector of Gram-Schmidt coefficients of ``H v_j`` against
    ``v_0..v_j`` (classical Gram-Schmidt applied twice, i.e. full reorthogonalization); the leftover
    ``w = H v_j - V c`` has norm ``beta`` and becomes the next basis vector. From a plain start ``T``
    is tridiagonal (``alpha`` on the diagonal, ``beta`` beside it, the other coefficients are
    rounding noise that full reorthogonalization keeps out of the basis). After a thick restart the
    kept Ritz vectors give an arrowhead block, which the same coefficients produce automatically.
    Invariant throughout: ``H V_m = V_m T_m + beta v_{m} e_m^T``, so the residual of the Ritz pair
    ``(theta_i, V^T s_i)`` is ``|beta s_{m,i}|``.
    """

    def __init__(self, matvec: Callable[[Tensor], Tensor], dim: int, capacity: int, device, dtype):
        self.matvec = matvec
        self.dim = dim
        self.capacity = capacity
        self.V = torch.zeros(capacity + 1, dim, device=device, dtype=dtype)
        self.T = torch.zeros(capacity, capacity, dtype=torch.float64)
        self.m = 0  # processed columns (basis vectors whose H-image is in T)
        self.beta = 0.0
        self.w: Tensor | None = None
        self.eps = torch.finfo(dtype).eps

    def _orthogonalize(self, w: Tensor, k: int) -> tuple[Tensor, Tensor]:
        basis = self.V[:k]
        c = basis @ w
        w = w - basis.T @ c
        c2 = basis @ w
        w = w - basis.T @ c2
        return w, c + c2

    def start(self, v: Tensor) -> None:
        self.V[0] = v / v.norm()
        self.m = 0

    def step(self) -> None:
        j = self.m
        w = self.matvec(self.V[j])
        w, c = self._orthogonalize(w, j + 1)
        coeffs = c.to(device="cpu", dtype=torch.float64)
        self.T[: j + 1, j] = coeffs
        self.T[j, : j + 1] = coeffs
        self.w = w
        self.beta = float(w.norm())
        self.m = j + 1

    def ritz(self) -> tuple[Tensor, Tensor]:
        return torch.linalg.eigh(self.T[: self.m, : self.m])

    def breakdown(self, scale: float) -> bool:
        # rounding level of a fully reorthogonalized residual: a few eps * ||H|| (sqrt(m) for the m
        # Gram-Schmidt coefficients); not sqrt(P), which would end real Krylov spaces of large models
        return self.beta <= 10 * self.eps * max(scale, 1e-30) * math.sqrt(max(self.m, 1))

    def push_residual(self) -> None:
        assert self.w is not None
        self.V[self.m] = self.w / self.beta

    def push_random(self, gen: torch.Generator) -> bool:
        """Continue from a random vector orthogonal to the basis (after an invariant subspace)."""
        if self.m >= self.dim:
            return False
        for _ in range(3):
            r = torch.randn(self.dim, generator=gen, dtype=torch.float64).to(self.V)
            r, _ = self._orthogonalize(r, self.m)
            norm = float(r.norm())
            if norm > 1e3 * self.eps:
                self.V[self.m] = r / norm
                self.beta = 0.0
                return True
        return False

    def restart(self, keep: Tensor, theta: Tensor, s: Tensor) -> None:
        """Keep the Ritz vectors ``keep`` and continue from the residual direction (thick restart)."""
        m, l = self.m, len(keep)
        y = s[:, keep].T.to(self.V) @ self.V[:m]
        assert self.w is not None
        nxt = self.w / self.beta if self.beta > 0 else None
        self.V[:l] = y
        self.T.zero_()
        self.T[:l, :l] = torch.diag(theta[keep])
        self.m = l
        if nxt is not None:
            self.V[l] = nxt


def _wanted(theta: Tensor, n: int, which: str) -> Tensor:
    """Indices (into ascending ``theta``) of the ``n`` wanted Ritz values, in output order."""
    m = len(theta)
    if which == "largest":
        return torch.arange(m - 1, m - 1 - n, -1)
    if which == "smallest":
        return torch.arange(0, n)
    top = torch.arange(m - 1, m - 1 - (n - n // 2), -1)
    bottom = torch.arange(n // 2 - 1, -1, -1)
    return torch.cat([top, bottom])  # all descending


def _lanczos_extreme(
    matvec: Callable[[Tensor], Tensor],
    dim: int,
    n_want: int,
    which: str,
    tol: float,
    max_iter: int,
    max_basis: int,
    gen: torch.Generator,
    device,
    dtype,
) -> tuple[Tensor, Tensor, Tensor, int, bool]:
    capacity = min(dim, max_basis)
    lz = _Lanczos(matvec, dim, capacity, device, dtype)
    lz.start(torch.randn(dim, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype))
    n_matvec = 0
    while True:
        lz.step()
        n_matvec += 1
        theta, s = lz.ritz()
        scale = float(theta.abs().max())
        full = lz.m >= dim
        if lz.m >= n_want:
            idx = _wanted(theta, n_want, which)
            res = (lz.beta * s[lz.m - 1, idx]).abs()
            if full:
                res = torch.zeros_like(res)
            # relative accuracy tol for each wanted value, absolute tol^2 ||H|| for the tiny ones
            bound = tol * torch.clamp(theta[idx].abs(), min=tol * max(scale, 1e-30))
            converged = bool((res <= bound).all())
            if converged or n_matvec >= max_iter:
                vecs = s[:, idx].T.to(device=device, dtype=dtype) @ lz.V[: lz.m]
                return theta[idx], vecs, res, n_matvec, converged
        elif n_matvec >= max_iter:
            raise ValueError(f"max_iter={max_iter} is too small to find {n_want} eigenpairs")
        if lz.breakdown(scale):
            if not lz.push_random(gen):  # the whole space is spanned: exact
                idx = _wanted(theta, min(n_want, lz.m), which)
                vecs = s[:, idx].T.to(device=device, dtype=dtype) @ lz.V[: lz.m]
                return theta[idx], vecs, torch.zeros(len(idx), dtype=torch.float64), n_matvec, True
        elif lz.m >= capacity:
            # thick restart: keep the wanted pairs and as many neighbours again (at most m - 1)
            n_keep = min(lz.m - 1, n_want + max(1, (capacity - n_want) // 2))
            keep = _wanted(theta, n_keep, which) if which != "both" else _wanted_both_keep(theta, n_keep)
            lz.restart(keep, theta, s)
        else:
            lz.push_residual()


def _wanted_both_keep(theta: Tensor, n_keep: int) -> Tensor:
    m = len(theta)
    top = torch.arange(m - 1, m - 1 - (n_keep - n_keep // 2), -1)
    bottom = torch.arange(0, n_keep // 2)
    return torch.cat([top, bottom])


def _orthogonalize_against(v: Tensor, basis: list[Tensor]) -> Tensor:
    for _ in range(2):
        for q in basis:
            v = v - (q @ v) * q
    return v


def _power_extreme(
    matvec: Callable[[Tensor], Tensor],
    dim: int,
    k: int,
    which: str,
    tol: float,
    max_iter: int,
    gen: torch.Generator,
    device,
    dtype,
) -> tuple[Tensor, Tensor, Tensor, int, bool]:
    """Power iteration with deflation and a spectral shift for the algebraic extremes.

    For each wanted eigenpair: iterate ``v <- (H - sigma I) v / ||.||`` in the complement of the
    pairs found so far. Plain power iteration (``sigma = 0``) finds the eigenvalue of largest
    *magnitude*; if that has the wrong sign for ``which`` it is used as the shift ``sigma`` and the
    iteration continues, which then converges to the algebraically largest (or smallest) one.
    Stops when the residual ``||H v - theta v|| <= tol * |theta|`` (``theta = v^T H v``).
    """
    targets = [which] * k if which != "both" else ["largest"] * k + ["smallest"] * k
    found: list[Tensor] = []
    values: list[float] = []
    residuals: list[float] = []
    n_matvec = 0
    all_converged = True
    for target in targets:
        v = torch.randn(dim, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
        v = _orthogonalize_against(v, found)
        v = v / v.norm()
        sigma = 0.0
        theta, res, converged = 0.0, float("inf"), False
        while n_matvec < max_iter:
            w = _orthogonalize_against(matvec(v), found)
            n_matvec += 1
            theta = float(v @ w)
            res = float((w - theta * v).norm())
            if res <= tol * max(abs(theta), 1e-30):
                wrong_sign = (target == "largest" and theta < 0) or (target == "smallest" and theta > 0)
                if sigma == 0.0 and wrong_sign and len(found) + 1 < dim:
                    sigma = theta  # converged to the other end: shift it to zero and go on
                    v = torch.randn(dim, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
                    v = _orthogonalize_against(v, found)
                    v = v / v.norm()
                    continue
                converged = True
                break
            u = w - sigma * v
            norm = float(u.norm())
            if norm == 0.0:
                converged = True
                break
            v = u / norm
        all_converged = all_converged and converged
        found.append(v)
        values.append(theta)
        residuals.append(res)
        if n_matvec >= max_iter and not converged:
            break
    vals = torch.tensor(values, dtype=torch.float64)
    vecs = torch.stack(found)
    res_t = torch.tensor(residuals, dtype=torch.float64)
    if which == "largest" or which == "both":
        order = torch.argsort(vals, descending=True)
    else:
        order = torch.argsort(vals)
    return vals[order], vecs[order], res_t[order], n_matvec, all_converged


# --------------------------------------------------------------------------------------------------
# eigenvalues and index
# --------------------------------------------------------------------------------------------------


@dataclass
class EigenResult:
    """Extreme eigenpairs of a Hessian.

    ``values``: CPU float64 tensor; descending for ``which="largest"`` and ``"both"`` (the ``k``
    largest then the ``k`` smallest), ascending (most negative first) for ``"smallest"``.
    ``vectors``: ``(n, P)`` tensor of unit eigenvectors (rows) on the model's device, sign arbitrary;
    :meth:`vector_as_params` reshapes one like the parameters. ``residuals``: ``||H y - theta y||``
    of each pair (a bound on each value's error). ``num_hvps``: Hessian-vector products used.
    """

    values: Tensor
    vectors: Tensor
    residuals: Tensor
    num_hvps: int
    converged: bool
    which: str
    method: str
    names: list[str] = field(default_factory=list)
    shapes: list[torch.Size] = field(default_factory=list)

    def vector_as_params(self, i: int) -> list[Tensor]:
        """Eigenvector ``i`` as a list of tensors shaped like the model's trainable parameters."""
        if not 0 <= i < len(self.vectors):
            raise IndexError(f"i must be in [0, {len(self.vectors)}); got {i}")
        sizes = [math.prod(s) for s in self.shapes]
        return [c.view(s) for c, s in zip(self.vectors[i].split(sizes), self.shapes)]


def hessian_eigenvalues(
    model: nn.Module | HessianOperator,
    loss_fn: LossFn | None = None,
    data: object = None,
    k: int = 1,
    which: str = "largest",
    *,
    method: str = "lanczos",
    tol: float = 1e-3,
    max_iter: int = 1000,
    max_basis: int | None = None,
    seed: int = 0,
    hvp: str = "auto",
    dtype: torch.dtype | None = None,
) -> EigenResult:
    """Extreme eigenvalues and eigenvectors of the loss Hessian.

    ``which="largest"`` gives the ``k`` algebraically largest (``lambda_max`` first: the sharpness);
    ``"smallest"`` the ``k`` algebraically smallest (negative values are directions of negative
    curvature: the point is a saddle, not a minimum); ``"both"`` both ends (``2k`` pairs).

    ``method="lanczos"`` (default): Lanczos with full reorthogonalization from a Gaussian start;
    after each HVP the Ritz pairs of the projected matrix ``T`` are computed, and iteration stops
    when every wanted pair's residual ``r_i = |beta_m s_{m,i}| = ||H y_i - theta_i y_i||`` satisfies
    ``r_i <= tol * max(|theta_i|, tol * ||H||)`` (``||H||`` estimated by ``max_j |theta_j|``): each
    value to relative accuracy ``tol``, and values smaller than ``tol * ||H||`` in magnitude (the
    bulk near zero) to absolute accuracy ``tol^2 ||H||``. Since ``|lambda - theta| <= r_i``, and
    ``<= r_i^2 / gap`` for an isolated eigenvalue, values are usually far more accurate than ``tol``.
    The bottom of a network's spectrum is a dense cluster near zero, so ``"smallest"`` needs many
    more HVPs than ``"largest"`` (on the benchmark MLP: about 160 against 7), and in float32 a
    ``tol`` below ~1e-4 may be out of reach (use ``dtype=torch.float64``). When the basis reaches
    ``max_basis`` vectors (default
    ``max(40, 2n + 20)`` for ``n`` wanted pairs; memory ``max_basis * P`` numbers) it thick-restarts
    from the wanted Ritz vectors plus neighbours. ``method="power"``: power iteration with deflation
    and a shift for the algebraic extremes (converges at rate ``|lambda_2 / lambda_1|``; PyHessian's
    algorithm, but stopped by the same residual test instead of a relative change of ``theta``).

    ``max_iter`` caps the HVPs in total (a warning is raised and ``converged=False`` if reached).
    ``seed`` fixes the random start (drawn on the CPU, so every device gives the same run).
    ``hvp`` and ``dtype`` are :class:`HessianOperator`'s ``method`` and ``dtype``; ``model`` may also
    be a ready :class:`HessianOperator` (then ``loss_fn`` and ``data`` are ignored).

    Differs from PyHessian's ``eigenvalues``: Lanczos instead of power iteration (far fewer HVPs for
    the same accuracy, and several pairs at once), the algebraically largest value even when the
    most negative one is larger in magnitude, and a residual-based stopping rule.
    """
    op = _operator(model, loss_fn, data, hvp, dtype)
    _check_positive_int("k", k)
    _check_choice("which", which, _WHICH)
    _check_choice("method", method, _EIG_METHODS)
    tol = _check_positive_float("tol", tol)
    _check_positive_int("max_iter", max_iter)
    n_want = 2 * k if which == "both" else k
    if n_want > op.dim:
        raise ValueError(
            f"k={k} with which={which!r} asks for {n_want} eigenpairs but the Hessian is {op.dim}x{op.dim}"
        )
    if max_basis is None:
        max_basis = max(40, 2 * n_want + 20)
    else:
        _check_positive_int("max_basis", max_basis, minimum=n_want + 2)
    gen = _generator(seed)
    start = op.num_hvps
    if method == "lanczos":
        vals, vecs, res, _, converged = _lanczos_extreme(
            op.matvec, op.dim, n_want, which, tol, max_iter, max_basis, gen, op.device, op.dtype
        )
    else:
        vals, vecs, res, _, converged = _power_extreme(
            op.matvec, op.dim, k, which, tol, max_iter, gen, op.device, op.dtype
        )
    if not converged:
        warnings.warn(
            f"hessian_eigenvalues ({method}) did not converge to tol={tol} within max_iter={max_iter} "
            f"HVPs; largest residual {float(res.max()):.3g}",
            RuntimeWarning,
            stacklevel=2,
        )
    return EigenResult(
        values=vals.to(dtype=torch.float64, device="cpu"),
        vectors=vecs,
        residuals=res.to(dtype=torch.float64, device="cpu"),
        num_hvps=op.num_hvps - start,
        converged=converged,
        which=which,
        method=method,
        names=list(op.names),
        shapes=list(op.shapes),
    )


@dataclass
class IndexResult:
    """Inertia of a (small) Hessian: ``index = num_negative / dim``, with the full spectrum."""

    index: float
    num_negative: int
    num_zero: int
    num_positive: int
    dim: int
    threshold: float
    eigenvalues: Tensor


def hessian_index(
    model: nn.Module | HessianOperator,
    loss_fn: LossFn | None = None,
    data: object = None,
    *,
    rtol: float | None = None,
    max_dim: int = 4096,
    hvp: str = "auto",
    dtype: torch.dtype | None = None,
) -> IndexResult:
    """The index of a critical point: the fraction of the Hessian's eigenvalues that are negative.

    Builds the dense Hessian (``P`` HVPs, so ``P <= max_dim``) and takes ``torch.linalg.eigvalsh``.
    An eigenvalue counts as negative below ``-rtol * max|lambda|`` and as zero within
    ``+-rtol * max|lambda|`` (default ``rtol = 1000 * eps`` of the dtype: rounding of the HVPs).
    Index 0 at a point of zero gradient is a minimum (or flat), index > 0 a saddle (Dauphin et al.
    2014 find the index grows with the loss along training).
    """
    op = _operator(model, loss_fn, data, hvp, dtype)
    h = op.dense(max_dim=max_dim)
    lam = torch.linalg.eigvalsh(h).to(device="cpu", dtype=torch.float64)
    if rtol is None:
        rtol = 1000 * torch.finfo(op.dtype).eps
    rtol = _check_positive_float("rtol", rtol, allow_zero=True)
    thr = rtol * float(lam.abs().max())
    neg = int((lam < -thr).sum())
    pos = int((lam > thr).sum())
    return IndexResult(
        index=neg / op.dim,
        num_negative=neg,
        num_zero=op.dim - neg - pos,
        num_positive=pos,
        dim=op.dim,
        threshold=thr,
        eigenvalues=lam,
    )


# --------------------------------------------------------------------------------------------------
# trace
# --------------------------------------------------------------------------------------------------


@dataclass
class TraceResult:
    """A stochastic trace estimate ``estimate +- stderr`` from ``num_hvps`` HVPs."""

    estimate: float
    stderr: float
    num_hvps: int
    method: str
    samples: Tensor


def _rademacher(dim: int, m: int, gen: torch.Generator, device, dtype) -> Tensor:
    z = torch.randint(0, 2, (dim, m), generator=gen, dtype=torch.int8)
    return (z.to(dtype=dtype) * 2 - 1).to(device)


def hessian_trace(
    model: nn.Module | HessianOperator,
    loss_fn: LossFn | None = None,
    data: object = None,
    *,
    method: str = "hutch++",
    num_probes: int = 99,
    seed: int = 0,
    hvp: str = "auto",
    dtype: torch.dtype | None = None,
) -> TraceResult:
    """Estimate ``tr(H)`` with ``num_probes`` Hessian-vector products.

    ``"hutchinson"``: ``mean_i z_i^T H z_i`` over Rademacher probes ``z_i`` (unbiased, variance
    ``2 (||H||_F^2 - sum_i H_ii^2) / m``); ``stderr`` is the sample standard deviation over sqrt(m).

    ``"hutch++"`` (Meyer, Musco, Musco & Woodruff 2021, Algorithm 1): split the budget into
    ``s = m // 3`` probes ``S`` and ``t = m - 2s`` probes ``G`` (Rademacher); ``Q = orth(H S)``;
    ``tr(H) ~ tr(Q^T H Q) + mean_j g_j'^T H g_j'`` with ``g_j' = (I - Q Q^T) g_j``. The top of the
    spectrum is captured exactly and Hutchinson only sees the remainder: error ``O(1/m)`` instead of
    ``O(1/sqrt(m))``. ``stderr`` is the standard error of the Hutchinson part given ``Q`` (the
    low-rank part has none). When ``s >= P`` the trace is exact (``stderr = 0``).

    ``samples``: the per-probe quadratic forms of the Hutchinson part (CPU float64).
    """
    op = _operator(model, loss_fn, data, hvp, dtype)
    _check_choice("method", method, _TRACE_METHODS)
    gen = _generator(seed)
    start = op.num_hvps
    if method == "hutchinson":
        _check_positive_int("num_probes", num_probes, minimum=2)
        z = _rademacher(op.dim, num_probes, gen, op.device, op.dtype)
        samples = torch.stack([z[:, i] @ op.matvec(z[:, i]) for i in range(num_probes)])
        samples = samples.to(device="cpu", dtype=torch.float64)
        est = float(samples.mean())
        se = float(samples.std(unbiased=True)) / math.sqrt(num_probes)
        return TraceResult(est, se, op.num_hvps - start, method, samples)
    _check_positive_int("num_probes", num_probes, minimum=3)
    s_count = num_probes // 3
    t_count = num_probes - 2 * s_count
    s = _rademacher(op.dim, s_count, gen, op.device, op.dtype)
    g = _rademacher(op.dim, t_count, gen, op.device, op.dtype)
    q, _ = torch.linalg.qr(op.matmat(s))  # (P, min(P, s))
    low_rank = float(torch.trace(q.T @ op.matmat(q)))
    if q.shape[1] >= op.dim:
        empty = torch.zeros(0, dtype=torch.float64)
        return TraceResult(low_rank, 0.0, op.num_hvps - start, method, empty)
    g = g - q @ (q.T @ g)
    samples = torch.stack([g[:, j] @ op.matvec(g[:, j]) for j in range(t_count)])
    samples = samples.to(device="cpu", dtype=torch.float64)
    est = low_rank + float(samples.mean())
    se = float(samples.std(unbiased=True)) / math.sqrt(t_count) if t_count > 1 else float("nan")
    return TraceResult(est, se, op.num_hvps - start, method, samples)


# --------------------------------------------------------------------------------------------------
# spectral density
# --------------------------------------------------------------------------------------------------


@dataclass
class DensityResult:
    """A smoothed spectral density ``phi(t)`` of the Hessian on ``grid`` (CPU float64 tensors).

    ``nodes``/``weights``: per probe, the Gauss quadrature nodes (Ritz values) and weights
    (squared first components of the Ritz vectors, summing to 1). ``sigma``: the Gaussian width.
    """

    grid: Tensor
    density: Tensor
    nodes: list[Tensor]
    weights: list[Tensor]
    sigma: float
    num_hvps: int


def spectral_density(
    model: nn.Module | HessianOperator,
    loss_fn: LossFn | None = None,
    data: object = None,
    *,
    num_iter: int = 80,
    num_probes: int = 1,
    num_points: int = 1000,
    sigma: float | None = None,
    grid: Tensor | None = None,
    seed: int = 0,
    hvp: str = "auto",
    dtype: torch.dtype | None = None,
) -> DensityResult:
    """Eigenvalue density of the Hessian by stochastic Lanczos quadrature (SLQ).

    For each of ``num_probes`` random unit vectors ``v`` (normalized Rademacher), ``num_iter``
    Lanczos steps with full reorthogonalization give ``T = S diag(theta) S^T``; the Gauss quadrature
    ``v^T f(H) v ~ sum_j tau_j f(theta_j)`` with ``tau_j = S_{0j}^2`` turns it into a density
    estimate (Ghorbani, Krishnan & Xiao 2019; Lin, Saad & Yang 2016)::

        phi(t) = (1 / num_probes) sum_probes sum_j tau_j N(t; theta_j, sigma^2)

    which integrates to 1 (the density of eigenvalues divided by ``P``). ``sigma`` defaults to
    ``(theta_max - theta_min) / 200`` over all nodes; the grid (``num_points`` points) spans the
    nodes with ``5 sigma`` of margin unless ``grid`` is given. ``num_iter`` is capped at ``P``; a
    Krylov space that becomes invariant earlier ends the probe (the quadrature is then exact).

    Same algorithm as PyHessian's ``density`` + ``density_generate``; differs in the width
    (PyHessian uses a variance ``1e-5 * max(1, range)``, too narrow for a plot on a coarse grid).
    """
    op = _operator(model, loss_fn, data, hvp, dtype)
    _check_positive_int("num_iter", num_iter)
    _check_positive_int("num_probes", num_probes)
    _check_positive_int("num_points", num_points, minimum=2)
    gen = _generator(seed)
    start = op.num_hvps
    steps = min(num_iter, op.dim)
    nodes: list[Tensor] = []
    weights: list[Tensor] = []
    for _ in range(num_probes):
        lz = _Lanczos(op.matvec, op.dim, steps, op.device, op.dtype)
        lz.start(_rademacher(op.dim, 1, gen, op.device, op.dtype)[:, 0])
        while True:
            lz.step()
            theta, s = lz.ritz()
            if lz.m >= steps or lz.breakdown(float(theta.abs().max())):
                break
            lz.push_residual()
        nodes.append(theta)
        weights.append(s[0, :] ** 2)
    all_nodes = torch.cat(nodes)
    lo, hi = float(all_nodes.min()), float(all_nodes.max())
    if sigma is None:
        spread = hi - lo
        sigma = spread / 200 if spread > 0 else max(abs(hi), 1.0) * 1e-3
    sigma = _check_positive_float("sigma", sigma)
    if grid is None:
        grid_t = torch.linspace(lo - 5 * sigma, hi + 5 * sigma, num_points, dtype=torch.float64)
    else:
        if not isinstance(grid, Tensor) or grid.dim() != 1 or len(grid) < 2:
            raise ValueError(f"grid must be a 1-D tensor of at least 2 points; got {grid!r}")
        grid_t = grid.detach().to(device="cpu", dtype=torch.float64)
    density = torch.zeros_like(grid_t)
    norm = 1.0 / (sigma * math.sqrt(2 * math.pi))
    for th, w in zip(nodes, weights):
        z = (grid_t[:, None] - th[None, :]) / sigma
        density += (norm * torch.exp(-0.5 * z**2)) @ w
    density /= num_probes
    return DensityResult(grid_t, density, nodes, weights, sigma, op.num_hvps - start)


# --------------------------------------------------------------------------------------------------
# sharpness
# --------------------------------------------------------------------------------------------------


@dataclass
class SamSharpness:
    """``value = L(w + e) - L(w)`` at ``e = rho g / ||g||``; ``first_order = rho ||g||``."""

    value: float
    loss: float
    perturbed_loss: float
    grad_norm: float
    first_order: float
    rho: float


def sam_sharpness(
    model: nn.Module | HessianOperator,
    loss_fn: LossFn | None = None,
    data: object = None,
    *,
    rho: float = 0.05,
    hvp: str = "auto",
    dtype: torch.dtype | None = None,
) -> SamSharpness:
    """SAM's sharpness ``max_{||e||_2 <= rho} L(w + e) - L(w)`` by its first-order ascent step.

    Foret et al. (2021) solve the inner maximization to first order: ``e* = rho g / ||g||`` with
    ``g = grad L(w)`` (the full-data gradient here, not a mini-batch one), and report
    ``L(w + e*) - L(w)``; ``first_order = rho ||g||`` is the linearised value. At ``g = 0`` the
    value is 0 (a second-order method is then needed: see ``hessian_eigenvalues``; near a
    minimum ``max ~ rho^2 lambda_max / 2``). Costs one gradient and one loss evaluation.
    """
    op = _operator(model, loss_fn, data, hvp, dtype)
    rho = _check_positive_float("rho", rho)
    loss, g = op.loss_and_gradient()
    gnorm = float(g.norm())
    if gnorm == 0.0:
        return SamSharpness(0.0, loss, loss, 0.0, 0.0, rho)
    w = op.flatten(op.params)
    perturbed = op.loss(w + (rho / gnorm) * g)
    return SamSharpness(perturbed - loss, loss, perturbed, gnorm, rho * gnorm, rho)


@dataclass
class KeskarSharpness:
    """Keskar et al.'s sharpness in percent, ``100 (max_loss - loss) / (1 + loss)``."""

    value: float
    loss: float
    max_loss: float
    eps: float
    steps: int


def keskar_sharpness(
    model: nn.Module | HessianOperator,
    loss_fn: LossFn | None = None,
    data: object = None,
    *,
    eps: float = 1e-3,
    steps: int = 10,
    hvp: str = "auto",
    dtype: torch.dtype | None = None,
) -> KeskarSharpness:
    """Keskar et al. (2017)'s epsilon-sharpness over the box ``|e_i| <= eps (|w_i| + 1)``.

    ``phi(w, eps) = 100 * (max_{e in C_eps} L(w + e) - L(w)) / (1 + L(w))`` (their Metric 2.1 with
    ``A = I``: the full parameter space). Keskar et al. maximize with L-BFGS-B; here by projected
    steepest ascent in the box's own (weighted max-)norm: the first point is the exact maximizer of
    the linearised loss over the box, ``e = r * sign(g)`` with ``r = eps (|w| + 1)``; each further
    step is ``e <- clip(e + r/2 * sign(grad L(w + e)), -r, r)``. ``steps`` gradient evaluations in
    all; the largest loss seen is reported, so the value is a lower bound on the true maximum (as
    every such estimate is). Defaults: ``eps = 1e-3`` (Keskar's value; they also use 5e-4).
    """
    op = _operator(model, loss_fn, data, hvp, dtype)
    eps = _check_positive_float("eps", eps)
    _check_positive_int("steps", steps)
    w = op.flatten(op.params)
    r = eps * (w.abs() + 1)
    loss, g = op.loss_and_gradient()
    e = r * torch.sign(g)
    best = loss
    for i in range(steps):
        value, g = op.loss_and_gradient(w + e)
        best = max(best, value)
        if i + 1 < steps:
            e = torch.clamp(e + 0.5 * r * torch.sign(g), -r, r)
    return KeskarSharpness(100.0 * (best - loss) / (1.0 + loss), loss, best, eps, steps)


def adam_preconditioner(
    optimizer: torch.optim.Optimizer | None = None,
    params: Sequence[Tensor] | None = None,
    *,
    exp_avg_sq: Sequence[Tensor] | None = None,
    step: int | float | Tensor | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> list[Tensor]:
    """Adam's diagonal preconditioner ``P = (1 - beta1^t) (sqrt(v_t / (1 - beta2^t)) + eps)``.

    Adam's step is ``w <- w - lr P^{-1} m_t`` with the *uncorrected* first moment ``m_t``; this
    ``P`` is Cohen et al. (2022, "Adaptive Gradient Methods at the Edge of Stability", Sec. 2)'s
    preconditioner, free of the learning rate. Either from an optimizer (torch's ``Adam``/``AdamW``
    or ravine's, whose per-parameter state holds ``"exp_avg_sq"`` and ``"step"``; ``amsgrad`` uses
    ``"max_exp_avg_sq"``; ``betas`` (or ravine's ``b1``/``b2``) and ``eps`` come from each parameter's
    group; a group with ``bias_correction=False`` gives ``P = sqrt(v_t) + eps``) for the tensors
    ``params`` (the model's trainable parameters, in order), or from explicit ``exp_avg_sq``,
    ``step``, ``betas`` and ``eps``.
    """
    if optimizer is not None:
        if params is None:
            raise ValueError("params (the model's trainable parameters) are needed with optimizer=")
        group_of = {}
        for group in optimizer.param_groups:
            for p in group["params"]:
                group_of[id(p)] = group
        out = []
        for i, p in enumerate(params):
            if id(p) not in group_of:
                raise ValueError(f"parameter {i} (shape {tuple(p.shape)}) is not in the optimizer's groups")
            group = group_of[id(p)]
            state = optimizer.state.get(p, {})
            if "exp_avg_sq" not in state or "step" not in state:
                raise ValueError(
                    f"parameter {i} (shape {tuple(p.shape)}) has no 'exp_avg_sq'/'step' in the optimizer "
                    "state; take at least one optimizer step first (or pass exp_avg_sq= and step=)"
                )
            v = state["exp_avg_sq"]
            if group.get("amsgrad", False) and "max_exp_avg_sq" in state:
                v = state["max_exp_avg_sq"]
            b1, b2 = _group_betas(group, betas)
            g_eps = float(group.get("eps", eps))
            if not group.get("bias_correction", True):  # ravine's adam(bias_correction=False)
                out.append(v.detach().sqrt() + g_eps)
            else:
                out.append(_adam_p(v, state["step"], b1, b2, g_eps))
        return out
    if exp_avg_sq is None or step is None:
        raise ValueError("give either optimizer= (with params=) or both exp_avg_sq= and step=")
    b1, b2 = betas
    return [_adam_p(v, step, float(b1), float(b2), float(eps)) for v in exp_avg_sq]


def _group_betas(group: dict, default: tuple[float, float]) -> tuple[float, float]:
    """``(beta1, beta2)`` of a param group: torch's ``"betas"`` or ravine's ``"b1"``/``"b2"``."""
    if "betas" in group:
        b1, b2 = group["betas"]
    else:
        b1, b2 = group.get("b1", default[0]), group.get("b2", default[1])
    return float(b1), float(b2)


def _adam_p(v: Tensor, step: int | float | Tensor, b1: float, b2: float, eps: float) -> Tensor:
    t = float(step)
    if not t >= 1:
        raise ValueError(f"step must be >= 1 (Adam steps taken); got {step!r}")
    if not isinstance(v, Tensor):
        raise TypeError(f"exp_avg_sq entries must be tensors; got {type(v).__name__}")
    return (1 - b1**t) * ((v.detach() / (1 - b2**t)).sqrt() + eps)


@dataclass
class PreconditionedSharpness:
    """``lambda_max(P^{-1} H)`` (``value``), with Adam's stability threshold when ``lr`` is known."""

    value: float
    threshold: float | None
    lr: float | None
    beta1: float
    eigen: EigenResult


def preconditioned_sharpness(
    model: nn.Module | HessianOperator,
    loss_fn: LossFn | None = None,
    data: object = None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    preconditioner: Sequence[Tensor] | None = None,
    exp_avg_sq: Sequence[Tensor] | None = None,
    step: int | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    lr: float | None = None,
    tol: float = 1e-3,
    max_iter: int = 1000,
    seed: int = 0,
    hvp: str = "auto",
    dtype: torch.dtype | None = None,
) -> PreconditionedSharpness:
    """Adam's preconditioned sharpness ``lambda_max(P^{-1} H)`` (Cohen et al. 2022).

    ``P^{-1} H`` is similar to the symmetric ``P^{-1/2} H P^{-1/2}``, whose largest eigenvalue is
    found by Lanczos (:func:`hessian_eigenvalues`). ``P`` is taken from, in this order:
    ``preconditioner`` (the diagonal ``P`` itself, tensors shaped like the trainable parameters),
    ``optimizer`` (an Adam/AdamW-like optimizer over this model's parameters, see
    :func:`adam_preconditioner`), or ``exp_avg_sq`` + ``step`` (+ ``betas``, ``eps``).

    Cohen et al. find full-batch Adam trains at the *adaptive edge of stability*: ``value`` rises to
    and hovers at ``(2 + 2 beta1) / ((1 - beta1) lr)``, which is ``38 / lr`` for ``beta1 = 0.9``
    (``threshold``, when ``lr`` is known, from the optimizer's single learning rate or ``lr=``);
    the analogue for plain gradient descent is ``lambda_max(H)`` at ``2 / lr``.
    """
    if isinstance(model, HessianOperator):
        op = model
        module = model.model
    else:
        op = _operator(model, loss_fn, data, hvp, dtype)
        module = model
    beta1 = float(betas[0])
    if preconditioner is not None:
        pre = list(preconditioner)
    elif optimizer is not None:
        named = dict(module.named_parameters())
        pre = adam_preconditioner(optimizer, [named[n] for n in op.names])
        lrs = {g.get("lr") for g in optimizer.param_groups}
        if lr is None and len(lrs) == 1:
            only = lrs.pop()
            lr = float(only) if isinstance(only, (int, float)) and not isinstance(only, bool) else None
        b1s = {_group_betas(g, betas)[0] for g in optimizer.param_groups}
        if len(b1s) == 1:
            beta1 = b1s.pop()
    else:
        pre = adam_preconditioner(exp_avg_sq=exp_avg_sq, step=step, betas=betas, eps=eps)
    d = op.flatten(pre)
    if not bool((d > 0).all()):
        raise ValueError("the preconditioner must be positive everywhere; got entries <= 0")
    inv_sqrt = d.rsqrt()

    def matvec(v: Tensor) -> Tensor:
        return inv_sqrt * op.matvec(inv_sqrt * v)

    _check_positive_float("tol", tol)
    _check_positive_int("max_iter", max_iter)
    gen = _generator(seed)
    start = op.num_hvps
    vals, vecs, res, _, converged = _lanczos_extreme(
        matvec, op.dim, 1, "largest", tol, max_iter, 40, gen, op.device, op.dtype
    )
    if not converged:
        warnings.warn(
            f"preconditioned_sharpness did not converge within max_iter={max_iter} HVPs",
            RuntimeWarning,
            stacklevel=2,
        )
    eig = EigenResult(
        vals, vecs, res, op.num_hvps - start, converged, "largest", "lanczos", list(op.names), list(op.shapes)
    )
    threshold = None
    if lr is not None:
        threshold = stability_threshold(lr, "adam", beta1=beta1)
    return PreconditionedSharpness(float(vals[0]), threshold, lr, beta1, eig)


_STABILITY_OPTIMIZERS = Options(("gd", "momentum", "adam"))
_POSITIVE = Interval(float, 0, None, closed="neither")
_BETA1 = Interval(float, 0, 1, closed="left")


def _stability_constant(optimizer: str, beta1: float) -> float:
    """``c`` in the stability rule ``lr * lambda < c`` of full-batch training on a quadratic."""
    check("optimizer", optimizer, _STABILITY_OPTIMIZERS)
    beta1 = check("beta1", beta1, _BETA1)
    if optimizer == "gd":
        return 2.0
    if optimizer == "momentum":
        return 2.0 + 2.0 * beta1
    return (2.0 + 2.0 * beta1) / (1.0 - beta1)


def stability_threshold(lr: float, optimizer: str = "gd", *, beta1: float = 0.9) -> float:
    """The curvature at which full-batch training of a quadratic turns unstable.

    Training with learning rate ``lr`` on ``f(w) = lambda w^2 / 2`` is stable exactly while
    ``lr * lambda < c``, so the threshold is ``c / lr``:

    - ``"gd"``: ``c = 2``, threshold ``2 / lr`` (compare with ``lambda_max(H)``; Cohen et al. 2021,
      Edge of Stability);
    - ``"momentum"`` (heavy ball ``m <- beta1 m + g``, ``w <- w - lr m``): ``c = 2 + 2 beta1``;
    - ``"adam"``: ``c = (2 + 2 beta1) / (1 - beta1)``, ``38 / lr`` at ``beta1 = 0.9`` (compare with
      the preconditioned sharpness; Cohen et al. 2022); the same rule as an EMA momentum
      ``m <- beta1 m + (1 - beta1) g`` on the preconditioned quadratic.

    :func:`max_stable_lr` is the same rule solved for ``lr``.
    """
    lr = check("lr", lr, _POSITIVE)
    return _stability_constant(optimizer, beta1) / lr


def max_stable_lr(lambda_max: float, optimizer: str = "gd", *, beta1: float = 0.9) -> float | None:
    """The largest stable learning rate for curvature ``lambda_max``: :func:`stability_threshold` inverted.

    ``c / lambda_max`` with the same ``c`` as :func:`stability_threshold` (``2 / lambda_max`` for
    gradient descent): on the local quadratic model, a larger ``lr`` makes the iterates grow along
    the top eigenvector. ``None`` when ``lambda_max <= 0`` (no positive curvature: no step size is
    unstable on the quadratic model) or when ``lambda_max`` is not finite.
    """
    c = _stability_constant(optimizer, beta1)
    if isinstance(lambda_max, bool) or not isinstance(lambda_max, (int, float)):
        raise TypeError(f"lambda_max must be a number, got {type(lambda_max).__name__} {lambda_max!r}")
    if not math.isfinite(lambda_max) or lambda_max <= 0:
        return None
    return c / lambda_max


def critical_point_kind(eigenvalues: Sequence[float] | Tensor, *, tol: float = 1e-12) -> str:
    """What a critical point is, from its Hessian's eigenvalues (second-derivative test).

    With ``scale = max_i |lambda_i|`` and ``tiny = tol * scale`` (eigenvalues within ``tiny`` of
    zero count as zero, the rounding of an exact Hessian):

    - ``"minimum"``: every ``lambda_i > tiny`` (positive definite);
    - ``"maximum"``: every ``lambda_i < -tiny`` (negative definite);
    - ``"saddle"``: some ``lambda_i < -tiny`` and some ``lambda_j > tiny`` (indefinite);
    - ``"degenerate"``: otherwise (a zero eigenvalue and no sign change: the test is inconclusive);
    - ``"undefined"``: an eigenvalue is NaN or infinite (or there are none).

    The playground labels a 2D surface's points with it; for a network see :func:`hessian_index`.
    """
    lam = [float(v) for v in (eigenvalues.reshape(-1).tolist() if isinstance(eigenvalues, Tensor) else eigenvalues)]
    tol = check("tol", tol, Interval(float, 0, None, closed="left"))
    if not lam or not all(math.isfinite(v) for v in lam):
        return "undefined"
    tiny = tol * max(max(abs(v) for v in lam), 1e-300)
    lo, hi = min(lam), max(lam)
    if lo > tiny:
        return "minimum"
    if hi < -tiny:
        return "maximum"
    if lo < -tiny and hi > tiny:
        return "saddle"
    return "degenerate"


@dataclass
class SharpnessReport:
    """Several sharpness measures of one model at one point (see :func:`sharpness`)."""

    loss: float
    lambda_max: float
    trace: TraceResult
    sam: SamSharpness
    keskar: KeskarSharpness
    gd_threshold: float | None = None
    adam: PreconditionedSharpness | None = None
    num_hvps: int = 0


def sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    data: object,
    *,
    lr: float | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    rho: float = 0.05,
    eps: float = 1e-3,
    keskar_steps: int = 10,
    trace_probes: int = 99,
    tol: float = 1e-3,
    seed: int = 0,
    hvp: str = "auto",
    dtype: torch.dtype | None = None,
) -> SharpnessReport:
    """All sharpness measures at once: ``lambda_max`` (Lanczos), ``tr(H)`` (Hutch++), SAM's
    first-order sharpness (``rho``), Keskar's epsilon-sharpness (``eps``, ``keskar_steps``), and,
    with an Adam-like ``optimizer``, the preconditioned sharpness with its ``38 / lr`` threshold.
    ``gd_threshold = 2 / lr`` when ``lr`` is given (or the optimizer has one learning rate).
    One operator (one parameter snapshot) serves every measure.
    """
    op = HessianOperator(model, loss_fn, data, method=hvp, dtype=dtype)
    lam = hessian_eigenvalues(op, k=1, which="largest", tol=tol, seed=seed)
    tr = hessian_trace(op, num_probes=trace_probes, seed=seed)
    sam = sam_sharpness(op, rho=rho)
    kes = keskar_sharpness(op, eps=eps, steps=keskar_steps)
    adam = None
    if optimizer is not None:
        adam = preconditioned_sharpness(op, optimizer=optimizer, lr=lr, tol=tol, seed=seed)
        if lr is None:
            lr = adam.lr
    gd = stability_threshold(lr, "gd") if lr is not None else None
    return SharpnessReport(
        loss=sam.loss,
        lambda_max=float(lam.values[0]),
        trace=tr,
        sam=sam,
        keskar=kes,
        gd_threshold=gd,
        adam=adam,
        num_hvps=op.num_hvps,
    )
