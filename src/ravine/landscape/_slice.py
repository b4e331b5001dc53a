"""Slices: :func:`line` and :func:`plane` build the grid, resolve the directions, evaluate the
missing points chunk by chunk and, with ``out=``, save after every chunk so a rerun resumes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ravine._validation import Interval, Options, check
from ravine.landscape._directions import (
    _NORMS,
    Directions,
    _as_vectors,
    _check_seed,
    _dot,
    _norm,
    _params,
    random_directions,
)
from ravine.landscape._evaluate import _batches, _Evaluator, _slice_mode
from ravine.landscape._result import Landscape
from ravine.parallel import Executor, InProcess, Outcome, Task, values

__all__ = ["line", "plane"]

_BN_MODES = Options(("eval", "recompute"))


def _fingerprint(tensors: Iterable[Mapping[str, Tensor]]) -> str:
    """SHA-256 of names, shapes, dtypes and bytes: identifies a centre or a set of directions."""
    h = hashlib.sha256()
    for mapping in tensors:
        for name, t in mapping.items():
            t = t.detach().to("cpu").contiguous()
            h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _grid(span: Any, steps: Any, n_axes: int) -> list[np.ndarray]:
    spans = (
        span
        if (
            n_axes == 2 and isinstance(span, Sequence) and len(span) == 2 and all(isinstance(s, Sequence) for s in span)
        )
        else [span] * n_axes
    )
    steps_per_axis = steps if (n_axes == 2 and isinstance(steps, Sequence)) else [steps] * n_axes
    if len(spans) != n_axes or len(steps_per_axis) != n_axes:
        raise ValueError(f"span/steps must give {n_axes} axes, got span={span!r}, steps={steps!r}")
    axes = []
    for s, n in zip(spans, steps_per_axis):
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
    executor: Executor | None = None,
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

    ev_args = (
        model,
        loss_fn,
        metric,
        batches,
        centre,
        vectors,
        max_memory_mb,
        shortcut,
        _resolve_vectorize(vectorize, centre),
    )
    ev_kw = {"split": batch_norm == "eval", "cacheable": data_desc["source"] == "tensors"}
    loss_flat = result.loss.reshape(-1)
    met_flat = result.metric.reshape(-1) if result.metric is not None else None
    used: dict[str, Any] = {"path": None, "layers": set()}

    def store(idx: np.ndarray, ls: np.ndarray, ms: np.ndarray | None, path: str, layers: set[str]) -> None:
        """Write evaluated points into the result (and the .npz: a killed call loses only points in flight)."""
        loss_flat[idx] = ls
        if met_flat is not None and ms is not None:
            met_flat[idx] = ms
        flat_filled[idx] = True
        used["path"], used["layers"] = path, used["layers"] | set(layers)
        if out is not None:
            result.info["path"] = path
            result.info["shortcut_layers"] = sorted(used["layers"])
            result.save(out)

    t_eval = time.perf_counter()
    if executor is None or isinstance(executor, InProcess):
        ev = _Evaluator(*ev_args, **ev_kw)
        _points(ev, coeffs_t, todo, data_desc["n"], batch_norm, store)
    else:
        chunks = [c for c in np.array_split(todo, min(len(todo), 4 * executor.workers)) if len(c)]
        tasks = [
            Task(f"points {c[0]}..{c[-1]}", _points_task, (ev_args, ev_kw, coeffs_t[c], data_desc["n"], batch_norm))
            for c in chunks
        ]
        keys = {t.key: c for t, c in zip(tasks, chunks)}

        def on_done(o: Outcome) -> None:
            if o.ok:
                ls, ms, path, layers = o.value
                store(keys[o.key], ls, ms, path, layers)

        values(executor.run(tasks, on_done=on_done))  # TaskError naming the failed chunks; the rest is saved
    t_end = time.perf_counter()
    result.info.update(
        {
            "path": used["path"] or result.info.get("path"),
            "shortcut_layers": sorted(used["layers"]),
            "points_computed": int(len(todo)),
            "seconds_eval": t_end - t_eval,
            "seconds_total": t_end - t_start,
        }
    )
    if out is not None:
        result.save(out)
    return result


def _points(
    ev: _Evaluator,
    coeffs: Tensor,
    todo: np.ndarray,
    n: int,
    batch_norm: str,
    store: Callable[[np.ndarray, np.ndarray, np.ndarray | None, str, set[str]], None],
) -> None:
    """Evaluate the points ``coeffs[todo]`` block by block as ``ev`` plans them, calling ``store`` per
    block; if the batched path fails, fall back to one ``functional_call`` per point."""
    device = next(iter(ev.centre.values())).device
    with torch.no_grad(), _slice_mode(ev.model, batch_norm):
        pos = 0
        while pos < len(todo):
            k, micro = ev.plan(len(todo) - pos)
            idx = todo[pos : pos + k]
            try:
                ls, ms = ev.evaluate(coeffs[idx].to(device), micro, n)
            except (RuntimeError, NotImplementedError) as exc:
                if ev.path == "loop":
                    raise
                warnings.warn(
                    f"batched evaluation ({ev.path}) failed ({type(exc).__name__}: {str(exc)[:200]}); "
                    "falling back to one functional_call per point",
                    RuntimeWarning,
                    stacklevel=4,
                )
                ev.path = "loop"
                ev.loop_layers = set()  # the plain per-point forward: nothing replaced
                ev.shortcut.layers = {}
                continue
            ms_np = ms.double().cpu().numpy() if ms is not None else None
            store(idx, ls.double().cpu().numpy(), ms_np, ev.path, set(ev.shortcut.used))
            pos += k


def _points_task(
    ev_args: tuple, ev_kw: dict[str, Any], coeffs: Tensor, n: int, batch_norm: str
) -> tuple[np.ndarray, np.ndarray | None, str, set[str]]:
    """One chunk of a grid on a worker (:mod:`ravine.parallel`): the losses (and metrics) at ``coeffs``
    in order, the evaluator's path and the layers its input-layer identity replaced."""
    ev = _Evaluator(*ev_args, **ev_kw)
    loss = np.full(len(coeffs), np.nan)
    met = np.full(len(coeffs), np.nan) if ev.metric is not None else None
    state = {"path": ev.path, "layers": set()}

    def keep(idx: np.ndarray, ls: np.ndarray, ms: np.ndarray | None, path: str, layers: set[str]) -> None:
        loss[idx] = ls
        if met is not None and ms is not None:
            met[idx] = ms
        state["path"], state["layers"] = path, state["layers"] | layers

    _points(ev, coeffs, np.arange(len(coeffs)), n, batch_norm, keep)
    return loss, met, state["path"], state["layers"]


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
    executor: Executor | None = None,
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
    one large matmul per layer beats a batched one) and ``vmap`` on accelerators. One pass per point
    keeps the input-layer identity where its products can be cached (tensor data within a quarter of
    ``max_memory_mb``), forms each grid row's ``w0 + b d2`` once and puts each point's tensors in the
    model's parameter slots for the call (``functional_call`` when weights are tied). The model is
    left exactly as found. ``executor`` (:mod:`ravine.parallel`: a process pool or Ray; default in
    this process) evaluates the grid in chunks elsewhere; this process writes every finished chunk to
    ``out``, so a killed worker or call loses only the chunks in flight, and the values equal the
    in-process ones to float32 rounding (a chunk's points are batched as its worker plans them).
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
        executor=executor,
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
    executor: Executor | None = None,
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
        executor=executor,
    )
