"""Extreme eigenpairs of a Hessian: Lanczos (full reorthogonalization, thick restarts) and power iteration.

Both solvers take a ``matvec`` (any symmetric linear operator on flat vectors), so the preconditioned
sharpness and the spectral density reuse them; :func:`hessian_eigenvalues` runs them on a
:class:`~ravine.curvature.HessianOperator`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ravine._validation import Interval, Options, check
from ravine.curvature._operator import HessianOperator, LossFn, _operator

__all__ = ["EigenResult", "hessian_eigenvalues"]

_WHICH = Options(("largest", "smallest", "both"))
_EIG_METHODS = Options(("lanczos", "power"))
_POSITIVE = Interval.finite(float, 0, low_open=True)


def _generator(seed: object) -> torch.Generator:
    """A CPU generator seeded with ``seed``: random starts and probes are the same on every device."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__} {seed!r}")
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    return gen


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
    v0: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, int, bool]:
    capacity = min(dim, max_basis)
    lz = _Lanczos(matvec, dim, capacity, device, dtype)
    if v0 is None:
        v0 = torch.randn(dim, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    lz.start(v0)
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
    v0: Tensor | None = None,
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
        if v0 is not None and not found:
            v = v0
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
    v0: Tensor | None = None,
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
    more HVPs than ``"largest"`` (``EigenResult.num_hvps`` counts them), and in float32 a ``tol``
    below ~1e-4 may be out of reach (use ``dtype=torch.float64``). When the basis reaches
    ``max_basis`` vectors (default ``max(40, 2n + 20)`` for ``n`` wanted pairs; memory
    ``max_basis * P`` numbers) it thick-restarts
    from the wanted Ritz vectors plus neighbours. ``method="power"``: power iteration with deflation
    and a shift for the algebraic extremes (converges at rate ``|lambda_2 / lambda_1|``; PyHessian's
    algorithm, but stopped by the same residual test instead of a relative change of ``theta``).

    ``max_iter`` caps the HVPs in total (a warning is raised and ``converged=False`` if reached).
    ``seed`` fixes the random start (drawn on the CPU, so every device gives the same run).
    ``v0`` (a flat nonzero vector of length ``P``) replaces the random start: a warm start from a
    previous top eigenvector (``EigenResult.vectors[0]``) converges in fewer HVPs when ``H`` has
    changed little (what ``SharpnessMonitor`` does).
    ``hvp`` and ``dtype`` are :class:`HessianOperator`'s ``method`` and ``dtype``; ``model`` may also
    be a ready :class:`HessianOperator` (then ``loss_fn`` and ``data`` are ignored). On in-memory
    data the operator builds the gradient graph once and each HVP is one backward pass through it
    (:class:`HessianOperator`'s ``cache_graph``, bounded by its ``max_graph_mb``); on a DataLoader
    each HVP is forward-over-reverse.

    Differs from PyHessian's ``eigenvalues``: Lanczos instead of power iteration (far fewer HVPs for
    the same accuracy, and several pairs at once), the algebraically largest value even when the
    most negative one is larger in magnitude, and a residual-based stopping rule.
    """
    op = _operator(model, loss_fn, data, hvp, dtype)
    k = check("k", k, Interval.finite(int, 1))
    check("which", which, _WHICH)
    check("method", method, _EIG_METHODS)
    tol = check("tol", tol, _POSITIVE)
    max_iter = check("max_iter", max_iter, Interval.finite(int, 1))
    n_want = 2 * k if which == "both" else k
    if n_want > op.dim:
        raise ValueError(
            f"k={k} with which={which!r} asks for {n_want} eigenpairs but the Hessian is {op.dim}x{op.dim}"
        )
    if max_basis is None:
        max_basis = max(40, 2 * n_want + 20)
    else:
        max_basis = check("max_basis", max_basis, Interval.finite(int, n_want + 2))
    gen = _generator(seed)
    if v0 is not None:
        v0 = op._check_vector("v0", v0)
        if not bool(torch.isfinite(v0).all()) or float(v0.norm()) == 0.0:
            raise ValueError("v0 must be a finite nonzero vector (the start of the iteration)")
    start = op.num_hvps
    if method == "lanczos":
        vals, vecs, res, _, converged = _lanczos_extreme(
            op.matvec, op.dim, n_want, which, tol, max_iter, max_basis, gen, op.device, op.dtype, v0
        )
    else:
        vals, vecs, res, _, converged = _power_extreme(
            op.matvec, op.dim, k, which, tol, max_iter, gen, op.device, op.dtype, v0
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
