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
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from ravine._io import atomic_path, write_text
from ravine._nn import evaluation_mode, flatten, unflatten
from ravine._validation import Interval, Options, check

__all__ = [
    "Directions",
    "Landscape",
    "accuracy",
    "line",
    "load_state",
    "normalize_direction",
    "pca",
    "plane",
    "random_directions",
    "through",
    "toward",
]

_NORMS = Options(("filter", "layer", "none"))
_BIAS_BN = Options(("zero", "keep", "weights"))
_BN_MODES = Options(("eval", "recompute"))
_FORMAT = "ravine.landscape/1"

StateLike = Mapping[str, Tensor] | nn.Module | str | os.PathLike | Tensor | np.ndarray


# ----------------------------------------------------------------------------------------------
# parameters, state dicts and flat vectors


def _params(model: nn.Module) -> OrderedDict[str, Tensor]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = OrderedDict((n, p.detach()) for n, p in model.named_parameters())
    if not params:
        raise ValueError("model has no parameters; a loss landscape needs at least one")
    return params


def load_state(source: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict from a file without executing anything.

    ``.safetensors`` files are read with ``safetensors.torch.load_file``; a directory is read from its
    ``model.safetensors``; anything else with ``torch.load(..., weights_only=True)``.
    """
    path = Path(source)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(source)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise TypeError(f"checkpoint {str(source)!r} holds a {type(state).__name__}, expected a state dict")
    return dict(state)


def _as_vectors(source: StateLike, ref: Mapping[str, Tensor], *, what: str = "state") -> OrderedDict[str, Tensor]:
    """``source`` as tensors named, shaped, typed and placed like ``ref`` (the model's parameters).

    ``source`` may be a mapping (a state dict: extra keys such as buffers are ignored), a module, a
    checkpoint path, or a flat vector of length ``sum(p.numel())`` in ``named_parameters`` order
    (``torch.nn.utils.parameters_to_vector``'s layout).
    """
    if isinstance(source, nn.Module):
        source = dict(source.named_parameters())
    elif isinstance(source, str | os.PathLike):
        source = load_state(source)
    if isinstance(source, np.ndarray):
        source = torch.from_numpy(source)
    out: OrderedDict[str, Tensor] = OrderedDict()
    if isinstance(source, Tensor):
        n = sum(p.numel() for p in ref.values())
        if source.dim() != 1 or source.numel() != n:
            raise ValueError(
                f"{what} given as a flat vector must be 1-D of length {n} (the model's parameter count), "
                f"got shape {tuple(source.shape)}"
            )
        for (name, p), chunk in zip(ref.items(), unflatten(source, list(ref.values()))):
            out[name] = chunk.to(device=p.device, dtype=p.dtype)
        return out
    if not isinstance(source, Mapping):
        raise TypeError(
            f"{what} must be a state dict, an nn.Module, a checkpoint path or a flat tensor, "
            f"got {type(source).__name__}"
        )
    missing = [n for n in ref if n not in source]
    if missing:
        raise ValueError(f"{what} lacks parameters of the model: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    for name, p in ref.items():
        t = source[name]
        if not isinstance(t, Tensor):
            t = torch.as_tensor(t)
        if tuple(t.shape) != tuple(p.shape):
            raise ValueError(f"{what}[{name!r}] has shape {tuple(t.shape)}, the model's parameter has {tuple(p.shape)}")
        out[name] = t.detach().to(device=p.device, dtype=p.dtype)
    return out


def _flat(v: Mapping[str, Tensor], dtype: torch.dtype | None = None) -> Tensor:
    return flatten(list(v.values()), dtype=dtype)


def _check_seed(seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__} {seed!r}")


def _dot(u: Mapping[str, Tensor], v: Mapping[str, Tensor]) -> float:
    return float(sum((a.double() * v[n].double()).sum() for n, a in u.items()))


def _norm(u: Mapping[str, Tensor]) -> float:
    return math.sqrt(_dot(u, u))


def _fingerprint(tensors: Iterable[Mapping[str, Tensor]]) -> str:
    """SHA-256 of names, shapes, dtypes and bytes: identifies a centre or a set of directions."""
    h = hashlib.sha256()
    for mapping in tensors:
        for name, t in mapping.items():
            t = t.detach().to("cpu").contiguous()
            h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# directions


@dataclass
class Directions:
    """One or two directions in parameter space, with where they come from.

    ``vectors``: one (line) or two (plane) mappings ``name -> tensor`` shaped like the model's
    parameters. ``origin``: the centre ``w0`` of the slice when it is not the model's own weights
    (the first of three checkpoints, the last iterate of a trajectory). ``description``: a JSON-able
    account stored with every result. ``points``: named coordinates to mark on a figure (e.g. the
    three checkpoints, or ``"trajectory"``: an ``(n, 2)`` list). ``off_plane``: for a trajectory, each
    iterate's Euclidean distance from the plane. ``explained_variance``: for PCA, the fraction of
    variance of each of the two components.
    """

    vectors: tuple[OrderedDict[str, Tensor], ...]
    description: dict[str, Any]
    origin: OrderedDict[str, Tensor] | None = None
    points: dict[str, Any] = field(default_factory=dict)
    off_plane: np.ndarray | None = None
    explained_variance: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.vectors) not in (1, 2):
            raise ValueError(f"Directions holds 1 or 2 vectors, got {len(self.vectors)}")


def normalize_direction(
    direction: Mapping[str, Tensor],
    weights: Mapping[str, Tensor],
    norm: str = "filter",
    bias_bn: str = "zero",
) -> OrderedDict[str, Tensor]:
    """Normalize ``direction`` against ``weights`` as Li et al. (2018), returning a new mapping.

    For a parameter with two or more dimensions (a linear layer's ``(out, in)`` weight, a
    convolution's ``(out, in, kh, kw)`` kernel), filter ``i`` is the slice ``[i]`` along the first
    dimension:

    * ``norm="filter"``: ``d[i] <- d[i] * ||w[i]|| / ||d[i]||`` for each filter ``i``;
    * ``norm="layer"``:  ``d <- d * ||w|| / ||d||`` for the whole tensor;
    * ``norm="none"``:   ``d`` unchanged.

    0-/1-D parameters (biases, batch/layer-norm scales and shifts) follow ``bias_bn``: ``"zero"``
    (default; Li et al.'s ``biasbn`` ignore option) sets them to zero, ``"keep"`` normalizes them by
    the same rule (under ``"filter"`` each entry is its own filter, so ``d_i <- sign(d_i) |w_i|``),
    ``"weights"`` sets ``d = w`` (Li et al.'s code when ``biasbn`` is not ignored). A filter whose
    direction is exactly zero stays zero (Li et al. add ``1e-10`` to the denominator instead).
    """
    check("norm", norm, _NORMS)
    check("bias_bn", bias_bn, _BIAS_BN)
    out: OrderedDict[str, Tensor] = OrderedDict()
    for name, d in direction.items():
        w = weights[name]
        if d.shape != w.shape:
            raise ValueError(f"direction[{name!r}] has shape {tuple(d.shape)}, weights {tuple(w.shape)}")
        if d.dim() <= 1:
            if bias_bn == "zero":
                out[name] = torch.zeros_like(d)
                continue
            if bias_bn == "weights":
                out[name] = w.clone()
                continue
        if norm == "none":
            out[name] = d.clone()
        elif norm == "layer":
            dn = d.norm()
            out[name] = d * (w.norm() / dn) if dn > 0 else torch.zeros_like(d)
        else:
            d2 = d.reshape(d.shape[0], -1) if d.dim() >= 1 else d.reshape(1, 1)
            w2 = w.reshape(w.shape[0], -1) if w.dim() >= 1 else w.reshape(1, 1)
            dn = d2.norm(dim=1, keepdim=True)
            wn = w2.norm(dim=1, keepdim=True)
            scale = torch.where(dn > 0, wn / torch.where(dn > 0, dn, torch.ones_like(dn)), torch.zeros_like(dn))
            out[name] = (d2 * scale).reshape(d.shape)
    return out


def random_directions(
    model: nn.Module,
    n: int = 2,
    norm: str = "filter",
    bias_bn: str = "zero",
    seed: int = 0,
) -> Directions:
    """``n`` (1 or 2) Gaussian directions, normalized by :func:`normalize_direction`.

    The Gaussian entries are drawn on the CPU in float32 from ``torch.Generator().manual_seed(seed)``,
    direction after direction, parameter after parameter in ``named_parameters`` order, then cast to
    each parameter's dtype and device; the same seed gives the same directions on any device.
    Defaults: ``norm="filter"``, ``bias_bn="zero"`` (Li et al. 2018 with ``biasbn`` ignored).
    The two directions are not orthogonalized (in high dimension they are nearly orthogonal; Li et
    al. do not orthogonalize either).
    """
    check("n", n, Interval(int, 1, 2))
    _check_seed(seed)
    check("norm", norm, _NORMS)
    check("bias_bn", bias_bn, _BIAS_BN)
    params = _params(model)
    gen = torch.Generator().manual_seed(seed)
    vectors = []
    for _ in range(n):
        raw = OrderedDict(
            (
                name,
                torch.randn(p.shape, generator=gen, dtype=torch.float32).to(device=p.device, dtype=p.dtype),
            )
            for name, p in params.items()
        )
        vectors.append(normalize_direction(raw, params, norm=norm, bias_bn=bias_bn))
    desc = {"kind": "random", "norm": norm, "bias_bn": bias_bn, "seed": seed, "n": n}
    return Directions(tuple(vectors), desc)


def toward(model: nn.Module, other: StateLike, *, label: str | None = None) -> Directions:
    """The direction ``d = w_other - w_model`` from the model's weights to another checkpoint.

    ``line(model, ..., toward(model, other), span=(0, 1))`` is Goodfellow et al.'s (2015) linear
    interpolation ``(1 - a) w_model + a w_other``: its endpoints are the two models' losses.
    ``other``: a state dict, a module, a checkpoint path (safetensors or ``torch.load`` with
    ``weights_only=True``) or a flat vector. Points ``"start"`` (0) and ``"end"`` (1) are recorded.
    """
    params = _params(model)
    target = _as_vectors(other, params, what="other")
    d = OrderedDict((n, target[n] - p) for n, p in params.items())
    if label is None:
        label = str(other) if isinstance(other, str | os.PathLike) else type(other).__name__
    desc = {"kind": "toward", "target": label, "distance": _norm(d)}
    return Directions((d,), desc, points={"start": [0.0], "end": [1.0]})


def through(model: nn.Module, a: StateLike, b: StateLike, c: StateLike) -> Directions:
    """The plane through three checkpoints, with orthonormal directions and the points' coordinates.

    Origin ``wa``; ``d1 = (wb - wa) / ||wb - wa||``; ``d2 = r / ||r||`` with
    ``r = (wc - wa) - <wc - wa, d1> d1`` (Gram-Schmidt). Coordinates: ``a = (0, 0)``,
    ``b = (||wb - wa||, 0)``, ``c = (<wc - wa, d1>, ||r||)``. Coordinates are Euclidean distances in
    parameter space, so pick ``span`` to cover them. ``model`` supplies names, shapes, dtype and device.
    Raises ``ValueError`` when the three points are (numerically) collinear.
    """
    ref = _params(model)
    wa = _as_vectors(a, ref, what="a")
    wb = _as_vectors(b, ref, what="b")
    wc = _as_vectors(c, ref, what="c")
    u = OrderedDict((n, wb[n] - wa[n]) for n in ref)
    v = OrderedDict((n, wc[n] - wa[n]) for n in ref)
    nu = _norm(u)
    if nu == 0:
        raise ValueError("through: checkpoints a and b are identical; they do not span a direction")
    d1 = OrderedDict((n, t / nu) for n, t in u.items())
    cx = _dot(v, d1)
    r = OrderedDict((n, v[n] - cx * d1[n]) for n in ref)
    nr = _norm(r)
    if nr <= 1e-6 * max(_norm(v), 1e-300):
        raise ValueError("through: checkpoints a, b and c are collinear; they do not span a plane")
    d2 = OrderedDict((n, t / nr) for n, t in r.items())
    desc = {"kind": "through", "origin": "a", "orthonormal": True}
    points = {"a": [0.0, 0.0], "b": [nu, 0.0], "c": [cx, nr]}
    return Directions((d1, d2), desc, origin=wa, points=points)


def pca(
    model: nn.Module,
    trajectory: Sequence[StateLike],
    final: StateLike | None = None,
    center: bool = True,
) -> Directions:
    """The plane of the top two principal components of a trajectory, as Li et al. (2018, sec. 7).

    With ``w_f`` the final weights (``final`` or the last iterate) and ``m_i = w_i - w_f`` the rows of
    ``M`` (n x P), the directions are the top two right singular vectors ``v1, v2`` of ``M`` after
    subtracting the column mean when ``center`` (default, as Li et al.'s use of
    ``sklearn.decomposition.PCA``), of ``M`` itself otherwise. The plane passes through ``w_f``
    (the origin). Each iterate's coordinates are ``(<m_i, v1>, <m_i, v2>)``, its distance off the plane
    is ``||m_i - <m_i, v1> v1 - <m_i, v2> v2||``, and ``explained_variance`` is ``s_k^2 / sum s^2``
    of the (centred) singular values. Signs are fixed so the largest-magnitude entry of each
    direction is positive. The SVD runs in float64 on the Gram matrix ``M M^T`` (n x n), so memory is
    ``O(n P)``. ``trajectory``: state dicts, modules, checkpoint paths or flat vectors.
    """
    ref = _params(model)
    if isinstance(trajectory, Tensor | np.ndarray) and np.ndim(trajectory) == 2:
        trajectory = list(trajectory)
    if not isinstance(trajectory, Sequence) or len(trajectory) < 3:
        got = len(trajectory) if isinstance(trajectory, Sequence) else type(trajectory).__name__
        raise ValueError(f"trajectory must be a sequence of at least 3 iterates, got {got}")
    rows = [_flat(_as_vectors(w, ref, what=f"trajectory[{i}]"), torch.float64) for i, w in enumerate(trajectory)]
    wf = _flat(_as_vectors(final, ref, what="final"), torch.float64) if final is not None else rows[-1]
    m = torch.stack([r - wf for r in rows])
    mc = m - m.mean(0, keepdim=True) if center else m
    gram = mc @ mc.T
    evals, evecs = torch.linalg.eigh(gram)
    order = torch.argsort(evals, descending=True)
    evals, evecs = evals[order].clamp_min(0), evecs[:, order]
    if evals[1] <= 1e-12 * max(float(evals[0]), 1e-300):
        raise ValueError("pca: the trajectory spans fewer than two dimensions; no plane to show")
    s = evals[:2].sqrt()
    v = (mc.T @ evecs[:, :2]) / s  # (P, 2) right singular vectors
    for k in range(2):
        if v[v[:, k].abs().argmax(), k] < 0:
            v[:, k] = -v[:, k]
    coords = m @ v
    off = (m - coords @ v.T).norm(dim=1)
    explained = (evals[:2] / evals.sum()).numpy()
    first = next(iter(ref.values()))
    vecs = tuple(_as_vectors(v[:, k].to(first.dtype), ref, what="pca direction") for k in range(2))
    origin = _as_vectors(wf.to(first.dtype), ref, what="final")
    desc = {
        "kind": "pca",
        "n_iterates": len(rows),
        "center": bool(center),
        "explained_variance": [float(x) for x in explained],
    }
    points = {"trajectory": coords.numpy().tolist(), "final": [0.0, 0.0]}
    return Directions(vecs, desc, origin=origin, points=points, off_plane=off.numpy(), explained_variance=explained)


# ----------------------------------------------------------------------------------------------
# result


@dataclass
class Landscape:
    """A computed (or partially computed) line or plane of loss values.

    ``x`` (and ``y`` for a plane): the grid coordinates along ``d1`` (and ``d2``). ``loss``: shape
    ``(len(x),)`` for a line, ``(len(y), len(x))`` for a plane with ``loss[i, j] = L(w0 + x[j] d1 +
    y[i] d2)`` (matplotlib's ``contour(x, y, loss)`` layout). ``metric``: same shape, when a metric
    was given (e.g. :func:`accuracy`). ``filled``: which entries are computed (all, once complete).
    ``directions``: the directions' description; ``data``: the samples used (``n``, ``indices`` or
    ``"all"``); ``seed``; ``batch_norm`` (``"eval"`` or ``"recompute"``); ``dropout`` (always
    ``"off"``); ``points``: named coordinates to mark (the centre is always ``(0, 0)``);
    ``off_plane``: for a PCA plane, each iterate's distance off it; ``info``: dtype, device, parameter
    count, fingerprints of centre and directions, loss and metric names, evaluation path, timing.
    """

    kind: str
    x: np.ndarray
    y: np.ndarray | None
    loss: np.ndarray
    metric: np.ndarray | None
    filled: np.ndarray
    directions: dict[str, Any]
    data: dict[str, Any]
    seed: int | None
    batch_norm: str
    dropout: str = "off"
    metric_name: str | None = None
    points: dict[str, Any] = field(default_factory=dict)
    off_plane: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """True when every grid point is computed."""
        return bool(self.filled.all())

    def _metadata(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "kind": self.kind,
            "directions": self.directions,
            "data": self.data,
            "seed": self.seed,
            "batch_norm": self.batch_norm,
            "dropout": self.dropout,
            "metric_name": self.metric_name,
            "points": self.points,
            "info": self.info,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the grid to ``path`` (``.npz``) and its metadata to ``path`` with suffix ``.json``.

        The ``.npz`` holds ``x``, ``y``, ``loss``, ``metric``, ``filled``, ``off_plane`` and the
        metadata JSON (so the ``.npz`` alone is complete); the ``.json`` is a readable copy. Both are
        written atomically (:func:`ravine._io.atomic_path`: a temporary file in the same folder, renamed).
        """
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"path must end in .npz, got {str(path)!r}")
        meta = json.dumps(self._metadata(), indent=1, sort_keys=True)
        arrays = {
            "x": self.x,
            "loss": self.loss,
            "filled": self.filled,
            "metadata": np.frombuffer(meta.encode(), dtype=np.uint8),
        }
        if self.y is not None:
            arrays["y"] = self.y
        if self.metric is not None:
            arrays["metric"] = self.metric
        if self.off_plane is not None:
            arrays["off_plane"] = self.off_plane
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        write_text(path.with_suffix(".json"), meta + "\n", fsync=False)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Landscape:
        """Read a landscape written by :meth:`save` (nothing is unpickled)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"landscape file {str(path)!r} does not exist")
        with np.load(path, allow_pickle=False) as z:
            if "metadata" not in z.files:
                raise ValueError(f"{str(path)!r} is not a ravine landscape file (no metadata)")
            meta = json.loads(z["metadata"].tobytes().decode())
            if meta.get("format") != _FORMAT:
                raise ValueError(f"{str(path)!r} has format {meta.get('format')!r}, expected {_FORMAT!r}")
            arr = {k: z[k] for k in z.files}
        return cls(
            kind=meta["kind"],
            x=arr["x"],
            y=arr.get("y"),
            loss=arr["loss"],
            metric=arr.get("metric"),
            filled=arr["filled"].astype(bool),
            directions=meta["directions"],
            data=meta["data"],
            seed=meta["seed"],
            batch_norm=meta["batch_norm"],
            dropout=meta["dropout"],
            metric_name=meta["metric_name"],
            points=meta["points"],
            off_plane=arr.get("off_plane"),
            info=meta["info"],
        )


def accuracy(output: Tensor, target: Tensor) -> Tensor:
    """Classification accuracy ``mean(argmax(output, -1) == target)``: a ``metric`` for slices."""
    return (output.argmax(-1) == target).to(output.dtype).mean()


# ----------------------------------------------------------------------------------------------
# data


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


# ----------------------------------------------------------------------------------------------
# evaluation


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
            if self.coeffs is None or not isinstance(x, Tensor):
                return original(x)
            if eligible:
                count = self.calls.get(name, 0)
                self.calls[name] = count + 1
                if self.allowed is None and not _is_batched(x) or self.allowed and (name, count) in self.allowed:
                    return self._identity(name, count, m, x)
            if is_linear and x.dim() == 2 and m.bias is not None:
                return torch.addmm(m.bias, x, m.weight.t())
            return original(x)

        return forward

    def _identity(self, name: str, count: int, m: nn.Module, x: Tensor) -> Tensor:
        key = (*self.key, name, count)
        stacked = self.cache.get(key)
        if stacked is None:
            prefix = f"{name}." if name else ""
            wn, bn = f"{prefix}weight", f"{prefix}bias"
            has_b = m.bias is not None
            stacked = torch.stack(
                [self._apply(m, x, v[wn], v[bn] if has_b else None) for v in (self.centre, *self.dirs)]
            )
            size = stacked.numel() * stacked.element_size()
            if self.cacheable and self.cached + size <= self.cache_bytes:
                self.cache[key] = stacked
                self.cached += size
        self.used.add(name)
        self.used_calls.add((name, count))
        coef = torch.cat([self.coeffs.new_ones(1), self.coeffs])
        return (coef @ stacked.reshape(stacked.shape[0], -1)).reshape(stacked.shape[1:])


# On a CPU, a batched pass is fastest when its activations stay in cache: passes are sized to this
# many bytes (stacked parameters plus activations), splitting the data into micro-batches, unless
# max_memory_mb is smaller. On other devices a pass fills max_memory_mb.
_CPU_PASS_BYTES = 16 * 2**20


class _Evaluator:
    """Evaluates mean loss (and metric) at points ``w0 + sum_k c_k d_k`` for a block of coefficients.

    Paths: ``"vmap"`` (``vmap`` of ``functional_call`` over stacked parameter sets, with the
    input-layer identity where it applies) or ``"loop"`` (one ``functional_call`` per point). With
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

    def _loop(self, coeffs: Tensor, n_total: int) -> tuple[Tensor, Tensor]:
        """One ``functional_call`` per point; the input-layer identity only for the layers the probe
        found (when batching works but was not asked for)."""
        if self.loop_layers is None:
            self.loop_layers = self._probe() if self.vectorize_probe else set()
        sc = self.shortcut
        sc.allowed = set(self.loop_layers)
        loss_sum = coeffs.new_zeros(coeffs.shape[0], dtype=torch.float64)
        met_sum = torch.zeros_like(loss_sum)
        dtype = next(iter(self.centre.values())).dtype
        try:
            with sc:
                for r, row in enumerate(coeffs):
                    p = {n: t[0] for n, t in self._stack(row.unsqueeze(0)).items()}
                    for bi, (x, y) in enumerate(self.batches()):
                        sc.coeffs, sc.calls, sc.key = row.to(dtype), {}, (bi, 0, len(x))
                        try:
                            loss, met = self._values(functional_call(self.model, (p, self.buffers), (x,)), y)
                        finally:
                            sc.coeffs = None
                        loss_sum[r] += loss.double() * len(y)
                        met_sum[r] += met.double() * len(y)
        finally:
            sc.allowed = None
        return loss_sum / n_total, met_sum / n_total


def _grid(span: Any, steps: Any, n_axes: int) -> list[np.ndarray]:
    spans = (
        span
        if (
            n_axes == 2 and isinstance(span, Sequence) and len(span) == 2 and all(isinstance(s, Sequence) for s in span)
        )
        else [span] * n_axes
    )
    stepss = steps if (n_axes == 2 and isinstance(steps, Sequence)) else [steps] * n_axes
    if len(spans) != n_axes or len(stepss) != n_axes:
        raise ValueError(f"span/steps must give {n_axes} axes, got span={span!r}, steps={steps!r}")
    axes = []
    for s, n in zip(spans, stepss):
        if not (isinstance(s, Sequence) and len(s) == 2 and all(isinstance(v, int | float) for v in s)):
            raise ValueError(f"span must be a pair of numbers (lo, hi), got {s!r}")
        lo, hi = float(s[0]), float(s[1])
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"span must satisfy lo < hi (finite), got {s!r}")
        axes.append(np.linspace(lo, hi, check("steps", n, Interval.finite(int, 2))))
    return axes


def _name(fn: Any) -> str | None:
    if fn is None:
        return None
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def _resolve(model: nn.Module, spec: Any, n: int, seed: int, norm_kw: dict[str, Any]) -> Directions:
    if isinstance(spec, Directions):
        if len(spec.vectors) != n:
            raise ValueError(f"expected Directions with {n} vector(s), got {len(spec.vectors)}")
        return spec
    if isinstance(spec, str):
        check("direction" if n == 1 else "directions", spec, _NORMS)
        return random_directions(model, n=n, norm=spec, seed=seed, **norm_kw)
    params = _params(model)
    if n == 1:
        d = _as_vectors(spec, params, what="direction")
        return Directions((d,), {"kind": "explicit", "norms": [_norm(d)]})
    if not (isinstance(spec, tuple | list) and len(spec) == 2):
        raise TypeError(
            "directions must be 'filter', 'layer', 'none', a Directions, or a pair (d1, d2) of state dicts "
            f"or flat vectors; got {type(spec).__name__}"
        )
    d1 = _as_vectors(spec[0], params, what="directions[0]")
    d2 = _as_vectors(spec[1], params, what="directions[1]")
    cos = _dot(d1, d2) / max(_norm(d1) * _norm(d2), 1e-300)
    return Directions((d1, d2), {"kind": "explicit", "norms": [_norm(d1), _norm(d2)], "cosine": cos})


def _slice(
    kind: str,
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data: Any,
    spec: Any,
    span: Any,
    steps: Any,
    seed: int,
    *,
    bias_bn: str,
    metric: Callable[[Tensor, Tensor], Tensor] | None,
    subset: int | Sequence[int] | None,
    batch_size: int | None,
    batch_norm: str,
    max_memory_mb: float,
    out: str | os.PathLike | None,
    shortcut: bool,
    vectorize: bool | None,
) -> Landscape:
    t_start = time.perf_counter()
    n_dirs = 1 if kind == "line" else 2
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable (output, target) -> scalar, got {type(loss_fn).__name__}")
    if metric is not None and not callable(metric):
        raise TypeError(f"metric must be callable (output, target) -> scalar or None, got {type(metric).__name__}")
    check("batch_norm", batch_norm, _BN_MODES)
    if not isinstance(shortcut, bool):
        raise TypeError(f"shortcut must be a bool, got {shortcut!r}")
    check("max_memory_mb", max_memory_mb, Interval.finite(float, 0, low_open=True))
    _check_seed(seed)
    axes = _grid(span, steps, n_dirs)
    params = _params(model)
    dirs = _resolve(model, spec, n_dirs, seed, {"bias_bn": bias_bn})
    centre = _as_vectors(dirs.origin, params, what="origin") if dirs.origin is not None else params
    vectors = tuple(_as_vectors(v, params, what="direction") for v in dirs.vectors)
    first = next(iter(params.values()))
    batches, data_desc = _batches(data, first.device, subset, batch_size, seed)

    shape = (len(axes[0]),) if kind == "line" else (len(axes[1]), len(axes[0]))
    info = {
        "dtype": str(first.dtype).removeprefix("torch."),
        "device": str(first.device),
        "n_params": int(sum(p.numel() for p in params.values())),
        "centre_sha256": _fingerprint([centre]),
        "directions_sha256": _fingerprint(vectors),
        "direction_norms": [_norm(v) for v in vectors],
        "loss_fn": _name(loss_fn),
        "grid": [a.tolist() for a in axes],
    }
    seed_used = seed if dirs.description.get("kind") == "random" or subset is not None else None
    fresh = Landscape(
        kind=kind,
        x=axes[0],
        y=axes[1] if kind == "plane" else None,
        loss=np.full(shape, np.nan),
        metric=np.full(shape, np.nan) if metric is not None else None,
        filled=np.zeros(shape, dtype=bool),
        directions=dirs.description,
        data=data_desc,
        seed=seed_used,
        batch_norm=batch_norm,
        metric_name=_name(metric),
        points=dict(dirs.points),
        off_plane=dirs.off_plane,
        info=info,
    )
    result = fresh
    if out is not None:
        out = Path(out)
        if out.suffix != ".npz":
            raise ValueError(f"out must end in .npz, got {str(out)!r}")
        if out.exists():
            result = Landscape.load(out)
            _check_resume(result, fresh, out)
            if result.complete:
                result.info["points_computed"] = 0
                return result
    result.info = dict(result.info)

    flat_filled = result.filled.reshape(-1)
    todo = np.flatnonzero(~flat_filled)
    if kind == "line":
        all_coeffs = axes[0].reshape(-1, 1)
    else:
        bb, aa = np.meshgrid(axes[1], axes[0], indexing="ij")
        all_coeffs = np.stack([aa.reshape(-1), bb.reshape(-1)], axis=1)
    coeffs_t = torch.as_tensor(all_coeffs, dtype=torch.float64)

    ev = _Evaluator(
        model,
        loss_fn,
        metric,
        batches,
        centre,
        vectors,
        max_memory_mb,
        shortcut,
        _resolve_vectorize(vectorize, centre),
        split=batch_norm == "eval",
        cacheable=data_desc["source"] == "tensors",
    )
    loss_flat = result.loss.reshape(-1)
    met_flat = result.metric.reshape(-1) if result.metric is not None else None
    t_eval = time.perf_counter()
    with torch.no_grad(), _slice_mode(model, batch_norm):
        pos = 0
        while pos < len(todo):
            k, micro = ev.plan(len(todo) - pos)
            idx = todo[pos : pos + k]
            c = coeffs_t[idx].to(first.device)
            try:
                ls, ms = ev.evaluate(c, micro, data_desc["n"])
            except (RuntimeError, NotImplementedError) as exc:
                if ev.path == "loop":
                    raise
                warnings.warn(
                    f"batched evaluation ({ev.path}) failed ({type(exc).__name__}: {str(exc)[:200]}); "
                    "falling back to one functional_call per point",
                    RuntimeWarning,
                    stacklevel=3,
                )
                ev.path = "loop"
                ev.loop_layers = set()  # the plain per-point forward: nothing replaced
                ev.shortcut.layers = {}
                continue
            loss_flat[idx] = ls.double().cpu().numpy()
            if met_flat is not None:
                met_flat[idx] = ms.double().cpu().numpy()
            flat_filled[idx] = True
            pos += k
            if out is not None:
                result.info["path"] = ev.path
                result.info["shortcut_layers"] = sorted(ev.shortcut.used)
                result.save(out)
    t_end = time.perf_counter()
    result.info.update(
        {
            "path": ev.path,
            "shortcut_layers": sorted(ev.shortcut.used),
            "points_computed": int(len(todo)),
            "seconds_eval": t_end - t_eval,
            "seconds_total": t_end - t_start,
        }
    )
    if out is not None:
        result.save(out)
    return result


_RESUME_KEYS = ("kind", "directions", "data", "seed", "batch_norm", "dropout", "metric_name")
_RESUME_INFO = ("dtype", "n_params", "centre_sha256", "directions_sha256", "loss_fn", "grid")


def _check_resume(saved: Landscape, fresh: Landscape, path: Path) -> None:
    diffs = []
    for key in _RESUME_KEYS:
        a, b = getattr(saved, key), json.loads(json.dumps(getattr(fresh, key)))
        if a != b:
            diffs.append(f"{key}: file has {a!r}, this call has {b!r}")
    for key in _RESUME_INFO:
        a, b = saved.info.get(key), json.loads(json.dumps(fresh.info.get(key)))
        if a != b:
            if key == "grid":
                a, b = ([(len(g), g[0], g[-1]) for g in v] if v else v for v in (a, b))
                diffs.append(f"info.grid (points, lo, hi per axis): file has {a}, this call has {b}")
            else:
                diffs.append(f"info.{key}: file has {str(a)[:80]!r}, this call has {str(b)[:80]!r}")
    if diffs:
        raise ValueError(
            f"out={str(path)!r} exists but was computed with different settings, so it cannot be resumed "
            f"({'; '.join(diffs)}). Delete the file or choose another path."
        )


def line(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data: Any,
    direction: Any = "filter",
    span: tuple[float, float] = (-1.0, 1.0),
    steps: int = 51,
    *,
    seed: int = 0,
    bias_bn: str = "zero",
    metric: Callable[[Tensor, Tensor], Tensor] | None = None,
    subset: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    batch_norm: str = "eval",
    max_memory_mb: float = 512,
    out: str | os.PathLike | None = None,
    shortcut: bool = True,
    vectorize: bool | None = None,
) -> Landscape:
    """The loss along ``w0 + a d`` for ``a`` in ``linspace(*span, steps)``.

    ``direction``: ``"filter"`` (default), ``"layer"`` or ``"none"`` for a random direction drawn with
    ``seed`` (see :func:`random_directions`), a :class:`Directions` with one vector (e.g.
    :func:`toward` for Goodfellow interpolation, with ``span=(0, 1)``), or an explicit direction (a
    state dict of displacements or a flat vector). ``loss_fn(output, target)`` must return the batch
    mean (torch's default reduction); the reported value is the size-weighted mean over all batches,
    i.e. the mean over the data. ``metric`` (e.g. :func:`accuracy`) is averaged the same way.
    ``data``: ``(inputs, targets)`` tensors (optionally ``subset``: a sample count drawn with ``seed``
    or explicit indices; ``batch_size``: ``None`` for one batch) or a re-iterable of batches (a
    DataLoader). ``batch_norm``: ``"eval"`` (running statistics) or ``"recompute"`` (statistics of
    each evaluated batch at each point). ``max_memory_mb`` bounds the memory of one batched pass.
    ``out``: an ``.npz`` path written after every chunk; if it exists with the same settings the
    computation resumes where it stopped, otherwise ``ValueError``. ``shortcut`` (default True) uses the
    input-layer identity where it applies (see the module docstring). ``vectorize``: ``True`` batches
    grid points through ``vmap``, ``False`` evaluates one point per pass; ``None`` (default) picks per
    point on CPU (measured faster there: each point has its own weights, so batching adds no reuse and
    one large matmul per layer beats a batched one) and ``vmap`` on accelerators. The model is left
    exactly as found.
    """
    return _slice(
        "line",
        model,
        loss_fn,
        data,
        direction,
        span,
        steps,
        seed,
        bias_bn=bias_bn,
        metric=metric,
        subset=subset,
        batch_size=batch_size,
        batch_norm=batch_norm,
        max_memory_mb=max_memory_mb,
        out=out,
        shortcut=shortcut,
        vectorize=vectorize,
    )


def _resolve_vectorize(vectorize: bool | None, centre: Any) -> bool:
    if vectorize is None:
        device = centre.device if isinstance(centre, Tensor) else next(iter(centre.values())).device
        return device.type != "cpu"
    if not isinstance(vectorize, bool):
        raise TypeError(f"vectorize must be True, False or None (auto), got {vectorize!r}")
    return vectorize


def plane(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data: Any,
    directions: Any = "filter",
    span: Any = (-1.0, 1.0),
    steps: Any = 51,
    seed: int = 0,
    *,
    bias_bn: str = "zero",
    metric: Callable[[Tensor, Tensor], Tensor] | None = None,
    subset: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    batch_norm: str = "eval",
    max_memory_mb: float = 512,
    out: str | os.PathLike | None = None,
    shortcut: bool = True,
    vectorize: bool | None = None,
) -> Landscape:
    """The loss on the grid ``w0 + a d1 + b d2``, ``a`` in ``x``, ``b`` in ``y``.

    ``x = linspace(*span, steps)`` and ``y`` likewise (``span`` may also be ``((xlo, xhi), (ylo,
    yhi))`` and ``steps`` a pair ``(nx, ny)``); ``result.loss[i, j]`` is the loss at ``(x[j], y[i])``.
    ``directions``: ``"filter"`` (default; Li et al.'s filter-normalized Gaussian pair drawn with
    ``seed``), ``"layer"``, ``"none"``, a :class:`Directions` (:func:`through`, :func:`pca`,
    :func:`random_directions`), or a pair ``(d1, d2)`` of state dicts of displacements or flat
    vectors. When the directions carry an origin (three checkpoints, a trajectory), the plane is
    centred there rather than at the model's weights. Every other argument is as in :func:`line`.
    """
    return _slice(
        "plane",
        model,
        loss_fn,
        data,
        directions,
        span,
        steps,
        seed,
        bias_bn=bias_bn,
        metric=metric,
        subset=subset,
        batch_size=batch_size,
        batch_norm=batch_norm,
        max_memory_mb=max_memory_mb,
        out=out,
        shortcut=shortcut,
        vectorize=vectorize,
    )
