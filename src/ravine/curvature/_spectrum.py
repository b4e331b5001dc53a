"""The rest of the spectrum: the index (inertia) of a critical point, the trace, the density.

- :func:`critical_point_kind`: minimum / maximum / saddle / degenerate from the eigenvalues;
- :func:`hessian_index`: the fraction of negative eigenvalues from the dense Hessian (small models);
- :func:`hessian_trace`: Hutchinson's and Hutch++ (Meyer, Musco, Musco & Woodruff 2021) estimators
  with a standard error;
- :func:`spectral_density`: stochastic Lanczos quadrature with Gaussian broadening (Ghorbani,
  Krishnan & Xiao 2019; PyHessian's ``density``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ravine._validation import Interval, Options, check
from ravine.curvature._eigen import _generator, _Lanczos
from ravine.curvature._operator import HessianOperator, LossFn, _operator

__all__ = [
    "critical_point_kind",
    "IndexResult",
    "hessian_index",
    "TraceResult",
    "hessian_trace",
    "DensityResult",
    "spectral_density",
]

_TRACE_METHODS = Options(("hutch++", "hutchinson"))
_POSITIVE = Interval.finite(float, 0, low_open=True)


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
    tol = check("tol", tol, Interval.finite(float, 0))
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
    rtol = check("rtol", rtol, Interval.finite(float, 0))
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
    check("method", method, _TRACE_METHODS)
    gen = _generator(seed)
    start = op.num_hvps
    if method == "hutchinson":
        num_probes = check("num_probes", num_probes, Interval.finite(int, 2))
        z = _rademacher(op.dim, num_probes, gen, op.device, op.dtype)
        samples = torch.stack([z[:, i] @ op.matvec(z[:, i]) for i in range(num_probes)])
        samples = samples.to(device="cpu", dtype=torch.float64)
        est = float(samples.mean())
        se = float(samples.std(unbiased=True)) / math.sqrt(num_probes)
        return TraceResult(est, se, op.num_hvps - start, method, samples)
    num_probes = check("num_probes", num_probes, Interval.finite(int, 3))
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
    num_iter = check("num_iter", num_iter, Interval.finite(int, 1))
    num_probes = check("num_probes", num_probes, Interval.finite(int, 1))
    num_points = check("num_points", num_points, Interval.finite(int, 2))
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
    sigma = check("sigma", sigma, _POSITIVE)
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
