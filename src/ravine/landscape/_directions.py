"""Directions in parameter space for loss-landscape slices, and the state dicts they come from.

Random (Li et al. 2018's filter normalization), toward another checkpoint (Goodfellow et al.'s
interpolation), through three checkpoints, and the PCA plane of a trajectory; the math of each is in
its docstring. A state may be given as a state dict, a module, a checkpoint path or a flat vector
(``torch.nn.utils.parameters_to_vector``'s layout); :func:`load_state` reads checkpoints without
executing anything.
"""

from __future__ import annotations

import math
import os
import pickle
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ravine._nn import flatten, unflatten
from ravine._validation import Interval, Options, check

__all__ = [
    "Directions",
    "StateLike",
    "load_state",
    "normalize_direction",
    "pca",
    "random_directions",
    "through",
    "toward",
]

_NORMS = Options(("filter", "layer", "none"))
_BIAS_BN = Options(("zero", "keep", "weights"))

StateLike = Mapping[str, Tensor] | nn.Module | str | os.PathLike | Tensor | np.ndarray


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
    ``model.safetensors``; anything else with ``torch.load(..., weights_only=True)``. A file that cannot
    be read (truncated, corrupted, or holding more than tensors) raises ``ValueError`` naming it.
    """
    path = Path(source)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(source)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except SafetensorError as exc:
            raise ValueError(f"checkpoint {str(path)!r} is not a readable safetensors file (truncated or "
                             f"corrupted?): {exc}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise ValueError(f"checkpoint {str(path)!r} is not a readable torch file (truncated, corrupted, or "
                         f"holding more than tensors?): {str(exc).splitlines()[0] if str(exc) else ''}") from None
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
    offsets = torch.stack([r - wf for r in rows])  # M, one row m_i per iterate
    centred = offsets - offsets.mean(0, keepdim=True) if center else offsets
    gram = centred @ centred.T
    evals, evecs = torch.linalg.eigh(gram)
    order = torch.argsort(evals, descending=True)
    evals, evecs = evals[order].clamp_min(0), evecs[:, order]
    if evals[1] <= 1e-12 * max(float(evals[0]), 1e-300):
        raise ValueError("pca: the trajectory spans fewer than two dimensions; no plane to show")
    s = evals[:2].sqrt()
    v = (centred.T @ evecs[:, :2]) / s  # (P, 2) right singular vectors
    for k in range(2):
        if v[v[:, k].abs().argmax(), k] < 0:
            v[:, k] = -v[:, k]
    coords = offsets @ v
    off = (offsets - coords @ v.T).norm(dim=1)
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
