"""Curvature of a network's loss: Hessian-vector products, eigenvalues, trace, density, sharpness.

Everything here is built on one object, :class:`HessianOperator`: the Hessian of the model's mean
loss over a whole dataset as a linear operator on flat parameter vectors (Hessian-vector products by
forward-over-reverse differentiation; the model is copied, never modified, and evaluated in
evaluation mode). The package holds, one concern a file:

- ``_operator``: :class:`HessianOperator` (the math and the model-state rules are in its module);
- ``_eigen``: the eigen-solvers, :func:`hessian_eigenvalues` by Lanczos with full
  reorthogonalization and thick restarts (Wu & Simon 2000) or power iteration with deflation (what
  PyHessian does);
- ``_spectrum``: :func:`critical_point_kind` (the second-derivative test), :func:`hessian_index`
  (the fraction of negative eigenvalues, from the dense Hessian of a small model),
  :func:`hessian_trace` (Hutchinson and Hutch++) and :func:`spectral_density` (stochastic Lanczos
  quadrature);
- ``_sharpness``: :func:`sam_sharpness` (Foret et al. 2021), :func:`keskar_sharpness` (Keskar et
  al. 2017), :func:`preconditioned_sharpness` for Adam (Cohen et al. 2022),
  :func:`stability_threshold` (``2 / lr`` for GD, ``38 / lr`` for Adam with ``beta1 = 0.9``) and
  its inverse :func:`max_stable_lr`, :func:`stability_rule` (the one map from an optimizer and its
  hyperparameters to its rule: GD, heavy-ball and EMA momentum, Adam), and the summary :func:`sharpness`;
- ``_monitor``: :class:`SharpnessMonitor`, the Edge-of-Stability monitor for a training loop (every
  few steps: ``lambda_max``, the optimizer's threshold from its current hyperparameters, their ratio,
  Adam's preconditioned sharpness; warm-started, leaving the model, gradients and RNG untouched).

:func:`evaluation_mode` (every submodule in eval mode, each flag restored) is
:func:`ravine._nn.evaluation_mode`, re-exported.
"""

from ravine._nn import evaluation_mode
from ravine.curvature._eigen import EigenResult, hessian_eigenvalues
from ravine.curvature._monitor import SharpnessMonitor
from ravine.curvature._operator import HessianOperator
from ravine.curvature._sharpness import (
    KeskarSharpness,
    PreconditionedSharpness,
    SamSharpness,
    SharpnessReport,
    StabilityRule,
    adam_preconditioner,
    keskar_sharpness,
    max_stable_lr,
    preconditioned_sharpness,
    sam_sharpness,
    sharpness,
    stability_rule,
    stability_threshold,
)
from ravine.curvature._spectrum import (
    DensityResult,
    IndexResult,
    TraceResult,
    critical_point_kind,
    hessian_index,
    hessian_trace,
    spectral_density,
)

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
    "StabilityRule",
    "stability_rule",
    "SharpnessMonitor",
    "critical_point_kind",
    "sharpness",
]
