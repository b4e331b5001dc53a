"""Loss-landscape slices of real networks: lines and planes through parameter space.

A slice evaluates the loss ``L(w)`` of a network at the points

    w(a)    = w0 + a d1                     (``line``)
    w(a, b) = w0 + a d1 + b d2              (``plane``)

of a grid of coordinates ``a`` (and ``b``), where ``w0`` is the centre (the model's weights, or the
origin of a plane built from checkpoints) and ``d1``, ``d2`` are directions in parameter space. Every
point is rebuilt from the centre by that formula, never by walking in place (no accumulated drift).

Directions (:class:`Directions`):

* :func:`random_directions` -- Gaussian directions, optionally normalized as in Li et al. (2018),
  "Visualizing the Loss Landscape of Neural Nets": ``norm="filter"`` rescales each output
  filter/row ``d[i]`` of a direction to the norm of the same filter of the weights,
  ``d[i] <- d[i] * ||w[i]|| / ||d[i]||`` (the first dimension of a parameter indexes its filters:
  the output channels of a convolution, the rows of a linear layer); ``norm="layer"`` rescales a
  whole parameter tensor, ``d <- d * ||w|| / ||d||``; ``norm="none"`` leaves the Gaussian alone.
  Biases and other 0-/1-D parameters (norm-layer scales and shifts) are zeroed by default, as with
  Li et al.'s ``--xignore biasbn``; ``bias_bn="keep"`` normalizes them like the rest and
  ``bias_bn="weights"`` sets them to the weights themselves (what Li et al.'s code does when
  ``biasbn`` is not ignored).
* :func:`toward` -- the displacement ``w_other - w0`` to another checkpoint: a line with
  ``span=(0, 1)`` is Goodfellow et al.'s (2015) linear interpolation between two solutions.
* :func:`through` -- the plane through three checkpoints ``wa, wb, wc`` (origin ``wa``, directions
  the Gram-Schmidt orthonormalization of ``wb - wa`` and ``wc - wa``), with the three points'
  coordinates.
* :func:`pca` -- the plane of the top two principal components of a training trajectory
  ``(w_i - w_final)`` (Li et al., section 7), with each iterate's coordinates, its distance off the
  plane (a projected path can look short and direct while the iterates lie far from the plane) and
  the explained variance.

Paths between two solutions (mode connectivity): :func:`interpolate` is the straight line from ``a``
to ``b`` (a line with origin ``a``), :func:`fit_bezier` fits a quadratic Bezier curve of low loss
between them (Garipov et al. 2018), :func:`evaluate_curve` gives the loss along it, and
:func:`barrier` the height of the loss barrier along either.

Speed. Grid points are evaluated many at a time: the parameter sets of ``K`` points are stacked into
tensors with a leading dimension ``K`` and the model runs once per data (micro-)batch under
``torch.func.vmap(torch.func.functional_call(...))``. Passes are sized to ``max_memory_mb`` (on a
CPU, to a few MiB so activations stay in cache; with ``batch_norm="eval"`` the data are split into
micro-batches, which leaves the mean loss exact). Input-layer identity: a linear layer
(``nn.Linear``, ``nn.Conv1d/2d/3d``) whose input does not depend on any parameter -- the first layer
of an MLP or CNN, whatever module wraps it -- has an output linear in the grid coordinates,
``X (W + a D1 + b D2)^T + (c + a e1 + b e2) = Z0 + a P1 + b P2``; ``Z0, P1, P2`` are computed once per
data batch (and cached for tensor data) and combined per point, so only the later layers run per
point. Which layers qualify is found while running: inside ``vmap`` a tensor that depends on the
stacked parameters carries a batch dimension, the data do not. This is exact up to floating-point
rounding and switched off with ``shortcut=False``; ``result.info["shortcut_layers"]`` names the layers
it applied to. Models that ``vmap`` cannot batch (data-dependent control flow, random ops) fall back,
with a warning, to one ``functional_call`` per point. ``vectorize=False`` also runs one pass per point
(large matrix products, no batching overhead) and keeps the identity for the (layer, call) pairs a
tiny batched probe found; on a CPU, where a grid point's cost is its matrix products either way,
this is as fast as or faster than batching (see ``benchmarks/landscape.py``); on an accelerator,
batching many points per pass is what fills the device.

Modes. Dropout is always off. Batch norm uses its evaluation (running) statistics by default
(``batch_norm="eval"``); ``batch_norm="recompute"`` normalizes every point with the statistics of the
data it is evaluated on (train-mode normalization, as during training; with tensor data and
``batch_size=None`` that is the whole data set at that point), without updating any running buffer.
The model's mode flags, parameters and buffers are exactly as they were after every call.

Where this differs from the peers: tomgoldstein/loss-landscape and the ``loss-landscapes`` package
evaluate one point per pass and move the weights in place (the latter by repeated additions, which
drift); ``loss-landscapes`` scales the directions to a fraction of the model norm rather than using
Li et al.'s unit span; neither records the batch-norm mode or the data subset with the result.

The package, one concern a file: ``_directions`` (the directions and the states they come from),
``_evaluate`` (data batches, modes, and the batched evaluator with the input-layer identity),
``_result`` (:class:`Landscape` and its files), ``_slice`` (:func:`line`, :func:`plane`, resuming),
``_paths`` (mode connectivity: lines and Bezier curves between two solutions, barriers).
"""

from ravine.landscape._directions import (
    Directions,
    load_state,
    normalize_direction,
    pca,
    random_directions,
    through,
    toward,
)
from ravine.landscape._paths import (
    BARRIER_REFERENCES,
    BezierCurve,
    barrier,
    bezier,
    evaluate_curve,
    fit_bezier,
    interpolate,
)
from ravine.landscape._result import Landscape, accuracy
from ravine.landscape._slice import line, plane

__all__ = [
    "BARRIER_REFERENCES",
    "BezierCurve",
    "Directions",
    "Landscape",
    "accuracy",
    "barrier",
    "bezier",
    "evaluate_curve",
    "fit_bezier",
    "interpolate",
    "line",
    "load_state",
    "normalize_direction",
    "pca",
    "plane",
    "random_directions",
    "through",
    "toward",
]
