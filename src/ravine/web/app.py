"""The playground's FastAPI app: a JSON API over ``ravine.surfaces`` / ``ravine.simulate``, and the page.

Routes (the OpenAPI schema at ``/openapi.json``, rendered offline at ``/docs``, documents every body):

- ``GET /``: the page (``static/index.html``); ``/static/*`` its JS and CSS.
- ``GET /vendor/plotly.min.js``: plotly.js as bundled in the installed ``plotly`` package (no CDN).
- ``GET /api/surfaces``: built-in surfaces (name, description, domain, start, minima, params);
  ``?grid=N`` adds an N x N contour grid to each.
- ``POST /api/surface/grid``: the contour grid of one surface (a built-in with params or an expression).
- ``POST /api/surface/check``: validate an expression: ``ok``, or the error and its 0-based position.
- ``POST /api/trajectories``: ``ravine.simulate.run``: positions, losses, grad norms, lrs, clipped steps.
- ``POST /api/sweep``: ``ravine.simulate.sweep``: final loss, steps to converge, divergence per cell.
- ``POST /api/curvature``: the Hessian at a point, classified and with its stability limit by
  ``ravine.curvature``.
- ``POST /api/python``: a Python snippet that reproduces a trajectory request with ``ravine.simulate``.
- ``GET /api/optimizers``: named optimizers with each hyperparameter's default, bounds and slider range.
- ``GET /api/schedules``: schedules with their parameters and defaults.
- ``GET /api/limits``: the server's caps on requests.
- ``GET /api/load``: the compute lanes: requests waiting and running, and how requests ended.

Robustness. Bodies are parsed by the models of :mod:`ravine.web.models` (bounds on steps, optimizers,
sweep size, expression length, work = steps x rows; finite floats; strict JSON types); a bad body is a
422 whose ``detail`` names each bad field (``loc`` and its dotted ``field``), quotes the value received and
says what is allowed (a body that is not even decodable is a 400 in the same shape). ``tests/test_api_schema.py``
fuzzes every route from this app's own OpenAPI document. Responses carry ``null`` for every
non-finite number plus ``diverged`` flags, so ``NaN``/``inf`` never reach the JSON.

Under a class (``ravine.web._serving``). Every request that computes runs off the event loop in one of two
lanes: small requests (within the small-work bounds of ``GET /api/limits``) never wait behind big ones, big
ones compute ``big_concurrency`` at a time, each lane FIFO so no request is starved; with ``workers=N`` they
run in worker processes, which use the machine's cores (the work holds the GIL). The work of a client that
disconnects is dropped or stopped (``GET /api/load`` counts it). With ``allowed_hosts`` a request whose
``Host`` is another name gets a 400 (DNS rebinding). Identical requests are answered from an
:class:`LRUCache` of encoded responses bounded in bytes, and single runs are cached in a second one: when
a slider moves one optimizer of six, only that one is simulated again.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

import ravine.optim as ro
import ravine.schedules as rsch
import ravine.simulate as sim
import ravine.surfaces as rs
from ravine import __version__
from ravine.curvature import critical_point_kind, max_stable_lr
from ravine.web import models, teaching
from ravine.web._serving import ClientGone, HostCheck, Lanes, LRUCache, SharedWork, WorkerLost

#: The page's HTML, JS and CSS.
STATIC_DIR = Path(__file__).with_name("static")


# ---------------------------------------------------------------------------------------------------
# JSON-safe conversion.


def _finite_or_none(v: Any) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _json_floats(a: Any) -> list:
    """``a`` as nested lists with every non-finite float replaced by ``None`` (JSON null)."""
    arr = np.asarray(a, dtype=np.float64)
    finite = np.isfinite(arr)
    if finite.all():
        return arr.tolist()
    out = arr.astype(object)
    out[~finite] = None
    return out.tolist()


def _index_or_none(step: Any) -> int | None:
    """A step index, or ``None`` for the simulator's ``-1`` ("never")."""
    step = int(step)
    return None if step < 0 else step


def _json_indices(a: Any) -> list[list[int | None]]:
    """An integer grid of step indices with ``-1`` ("never") as ``None``."""
    arr = np.asarray(a).astype(np.int64)
    out = arr.astype(object)
    out[arr < 0] = None
    return out.tolist()


# ---------------------------------------------------------------------------------------------------
# Catalogues (static for the process; cached).


def _first_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ").strip()


def _slider_default(info: models.HyperparamInfo, default: Any) -> float | bool | str | None:
    """A library default as a slider's start: a plain value (an int as float), ``None`` for a tensor or schedule."""
    if isinstance(default, np.generic):
        default = default.item()
    if not isinstance(default, bool | int | float | str):
        return None
    if info.kind == "float" and isinstance(default, int) and not isinstance(default, bool):
        return float(default)
    return default


@lru_cache(maxsize=1)
def optimizer_catalog() -> list[dict[str, Any]]:
    """Every named optimizer with its settable hyperparameters: library default, bounds, slider range.

    The ``lr`` default listed is ravine.optim's; the simulator replaces a missing ``lr`` with the
    surface's suggested one (``suggested_lr`` of each surface in ``GET /api/surfaces``).
    """
    out = []
    for name in ro.names():
        defaults = ro.get(name).hyperparams
        params = []
        for h in models.settable_hyperparams(name):
            info = models.HYPERPARAMS[h]
            params.append(
                {
                    "name": h,
                    "kind": info.kind,
                    "help": info.help,
                    "default": _slider_default(info, defaults.get(h)),
                    "min": info.ui_min,
                    "max": info.ui_max,
                    "log": info.log,
                    "step": info.step,
                    "choices": list(info.choices),
                    "allowed": info.allowed(),
                }
            )
        out.append({"name": name, "description": _first_line(getattr(ro, name)), "hyperparams": params})
    return out


#: Schedules the page lists first (the chapter's three), then the rest of the registry.
_PAGE_SCHEDULES = ("constant", "warmup_cosine", "wsd")


@lru_cache(maxsize=1)
def schedule_catalog() -> list[dict[str, Any]]:
    """The schedules of ``ravine.schedules`` with their parameters (``ravine.schedules.parameters``).

    Each parameter lists ``auto``: the value the server uses when a request leaves a required parameter
    out (derived from the run's steps, :data:`ravine.web.models.SCHEDULE_AUTO`). Parameters of kind
    ``"ints"`` (e.g. ``milestones``) are not settable from the page and are omitted.
    """
    names = list(rsch.names())
    names = [n for n in _PAGE_SCHEDULES if n in names] + [n for n in names if n not in _PAGE_SCHEDULES]
    out = []
    for name in names:
        params = []
        for p in rsch.parameters(name):
            if p.kind == "ints":
                continue
            filled = p.required or (name, p.name) in models.SCHEDULE_AUTO_OPTIONAL
            auto = models.SCHEDULE_AUTO.get(p.name, (None, None))[0] if filled else None
            params.append(
                {
                    "name": p.name,
                    "kind": p.kind,
                    "required": bool(p.required),
                    "default": p.default,
                    "choices": list(p.choices or ()),
                    "auto": auto,
                }
            )
        out.append({"name": name, "description": _first_line(rsch._REGISTRY[name]), "params": params})
    return out


# ---------------------------------------------------------------------------------------------------
# Computations (run in the thread pool).


def _surface_out(surface: rs.Surface, grid: int = 0) -> dict[str, Any]:
    (x0, x1), (y0, y1) = surface.domain
    out: dict[str, Any] = {
        "name": surface.name,
        "description": surface.description,
        "expression": surface.expression,
        "domain": ((float(x0), float(x1)), (float(y0), float(y1))),
        "start": (float(surface.start[0]), float(surface.start[1])),
        "minima": [
            {"x": float(mn.x), "y": float(mn.y), "value": float(mn.value), "kind": str(mn.kind)}
            for mn in surface.minima
        ],
        "params": {k: float(v) for k, v in (surface.params or {}).items()},
        "param_ranges": _param_ranges(surface),
        "saddles": [(float(p.x), float(p.y)) for p in surface.saddles],
        "suggested_lr": {name: float(surface.default_lr(name)) for name in ro.names()},
    }
    if grid:
        out["grid"] = _grid_out(surface, grid)
    return out


def _param_ranges(surface: rs.Surface) -> dict[str, tuple[float, float]]:
    if surface.expression is not None or surface.name not in rs.names():
        return {}
    return {k: (float(lo), float(hi)) for k, (_, lo, hi) in rs.param_info(surface.name).items()}


def _grid_out(surface: rs.Surface, n: int) -> dict[str, Any]:
    X, Y, Z = surface.grid(n=n)
    Z = np.asarray(Z, dtype=np.float64)
    finite = Z[np.isfinite(Z)]
    return {
        "x": [float(v) for v in np.asarray(X)[0, :]],
        "y": [float(v) for v in np.asarray(Y)[:, 0]],
        "z": _json_floats(Z),
        "zmin": float(finite.min()) if finite.size else None,
        "zmax": float(finite.max()) if finite.size else None,
        "contour": _contour_out(Z),
    }


def _contour_out(Z: np.ndarray) -> dict[str, Any]:
    """The contour's log values and levels, by the one rule the exported figure uses too."""
    from ravine.plots.playground import contour_levels

    t, levels = contour_levels(Z)
    return {
        "z": _json_floats(t),
        "start": float(levels[0]),
        "end": float(levels[-1]),
        "size": float(levels[1] - levels[0]),
    }


def _global_min(surface: rs.Surface) -> float | None:
    values = [float(mn.value) for mn in surface.minima if str(mn.kind) == "global"]
    return min(values) if values else None


def _run_keys(req: models.TrajectoryRequest) -> list[str]:
    """One key per run: the request without its optimizers, plus that run's optimizer spec."""
    shared = json.dumps(req.model_dump(mode="json", exclude={"optimizers"}), sort_keys=True)
    return [shared + "|" + json.dumps(o.to_sim(), sort_keys=True) for o in req.optimizers]


#: A run has stalled (reached a critical point) when the gradient at its end is this fraction of the
#: gradient at its start, or smaller.
STALL_RATIO = 1e-3


def end_points(
    surface: rs.Surface, positions: np.ndarray, grad_norm0: np.ndarray, diverged: np.ndarray, converged: np.ndarray
) -> list[str]:
    """Where each run ended: ``"diverged"``, ``"moving"``, or the kind of critical point it stalled at.

    A run has stalled when it reached the loss tolerance (``converged``) or ``|grad f|`` at its last
    position is at most :data:`STALL_RATIO` times the gradient norm at its start (or below ``1e-12``);
    the point is then classified by the Hessian's
    eigenvalues (``ravine.curvature.critical_point_kind``): ``"minimum"``, ``"saddle"``,
    ``"maximum"``, or ``"plateau"`` (a zero eigenvalue and no sign change: the second-derivative test
    is inconclusive, the surface is flat there). The gradients, and the Hessians of the runs that stalled,
    are computed in one batch each.

    Args:
        surface: the surface the runs were on.
        positions: the runs' last positions, shape ``(R, 2)``.
        grad_norm0: the norms of the gradient at the runs' starts, shape ``(R,)``.
        diverged: whether each run diverged, shape ``(R,)``.
        converged: whether each run's loss came within the tolerance of the global minimum's, shape ``(R,)``.

    Returns:
        For each run one of ``"diverged"``, ``"moving"``, ``"minimum"``, ``"saddle"``, ``"maximum"``,
        ``"plateau"``.
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    out = ["diverged" if d or not np.isfinite(p).all() else "moving" for p, d in zip(positions, diverged)]
    alive = [i for i, e in enumerate(out) if e != "diverged"]
    if not alive:
        return out
    xy = torch.tensor(positions[alive], dtype=torch.float64)
    g = torch.linalg.vector_norm(surface.grad(xy).detach().to(torch.float64), dim=-1).tolist()
    stalled = []
    for i, gi in zip(alive, g):
        g0 = float(grad_norm0[i]) if math.isfinite(float(grad_norm0[i])) else 0.0
        if math.isfinite(gi) and (bool(converged[i]) or gi <= max(STALL_RATIO * g0, 1e-12)):
            stalled.append(i)
    if not stalled:
        return out
    H = surface.hessian(torch.tensor(positions[stalled], dtype=torch.float64)).detach().to(torch.float64)
    for i, h in zip(stalled, H):
        if bool(torch.isfinite(h).all()):
            kind = critical_point_kind(torch.linalg.eigvalsh(0.5 * (h + h.T)), tol=1e-12)
            out[i] = "plateau" if kind == "degenerate" else kind
    return out


def _simulate(
    req: models.TrajectoryRequest,
    which: list[int],
    should_stop: Callable[[], bool] | None = None,
    compile: bool | str = False,
) -> tuple[list[dict[str, Any]], sim.Trajectories]:
    """The runs of optimizers ``which`` of ``req``, simulated together by one ``ravine.simulate.run`` (``compile``
    as there), and the ``Trajectories`` (for their engine)."""
    trajectories = sim.run(
        req.surface.surface,
        [req.optimizers[i].to_sim() for i in which],
        start=tuple(req.start) if req.start is not None else None,
        steps=req.steps,
        noise=req.noise,
        seed=req.seed,
        batch_size=req.batch_size,
        schedule=req.schedule.to_sim(req.steps) if req.schedule else None,
        clip=req.clip.to_sim() if req.clip else None,
        tol=req.tol,
        should_stop=should_stop,
        compile=compile,
    )
    ends = end_points(
        req.surface.surface,
        trajectories.positions[:, -1],
        trajectories.grad_norms[:, 0] if req.steps else np.zeros(len(which)),
        trajectories.diverged_at >= 0,
        trajectories.steps_to_tol >= 0,
    )
    return [
        {
            "label": trajectories.labels[j],
            "spec": {k: v for k, v in trajectories.specs[j].items() if k not in ("name", "label") and v is not None},
            "positions": np.asarray(trajectories.positions[j], dtype=np.float64),
            "losses": np.asarray(trajectories.losses[j], dtype=np.float64),
            "grad_norms": np.asarray(trajectories.grad_norms[j], dtype=np.float64),
            "lrs": np.asarray(trajectories.lrs[j], dtype=np.float64),
            "clipped": np.flatnonzero(np.asarray(trajectories.clipped[j])),
            "diverged_at": int(trajectories.diverged_at[j]),
            "steps_to_tol": int(trajectories.steps_to_tol[j]),
            "end": ends[j],
        }
        for j in range(len(which))
    ], trajectories


def _run_out(spec: models.OptimizerSpec, row: dict[str, Any]) -> dict[str, Any]:
    """One simulated run in the ``RunOut`` layout."""
    diverged_at = row["diverged_at"]
    loss = row["losses"]
    return {
        "label": spec.label or row["label"],
        "name": spec.name,
        "hyperparams": row["spec"],
        "x": _json_floats(row["positions"][:, 0]),
        "y": _json_floats(row["positions"][:, 1]),
        "loss": _json_floats(loss),
        "grad_norm": _json_floats(row["grad_norms"]),
        "lr": _json_floats(row["lrs"]),
        "clipped_steps": [int(k) for k in row["clipped"]],
        "diverged": diverged_at >= 0,
        "diverged_at": _index_or_none(diverged_at),
        "steps_to_tol": _index_or_none(row["steps_to_tol"]),
        "final_loss": _finite_or_none(loss[-1]) if diverged_at < 0 else None,
        "end": row["end"],
    }


def compute_trajectories(
    req: models.TrajectoryRequest,
    cache: LRUCache[dict[str, Any]] | None = None,
    should_stop: Callable[[], bool] | None = None,
    compile: bool = False,
) -> dict[str, Any]:
    """Run ``ravine.simulate.run`` for ``req`` and convert the result to the ``TrajectoryOut`` layout.

    With a cache of runs, runs already computed under the same settings are reused and only the
    others are simulated (together, as one batched call). This is exact, not an approximation: each
    run is stepped by its own (or a batched) transform, and with an integer seed every run sees the
    same noise sequence (``ravine.simulate``'s common random numbers), so a run computed alone equals
    the same run computed beside others, up to the rounding of batched hyperparameter tensors.
    ``should_stop`` goes to ``ravine.simulate.run`` (which raises ``ravine.simulate.Stopped`` when it
    returns true). ``compile``: step with ``ravine.simulate``'s compiled program of the request's structure
    where this process has one ready (``compile="ready"``), else eagerly, and then say in ``awaiting_compile``
    whether it could have one (the server then has a worker compile it: :func:`compile_structure`); the two
    engines agree to rounding.
    """
    t0 = time.perf_counter()
    keys = _run_keys(req)
    rows = [cache.get(k) if cache is not None else None for k in keys]
    missing = [i for i, row in enumerate(rows) if row is None]
    engine, awaiting = "cache", False
    if missing:
        simulated, trajectories = _simulate(req, missing, should_stop, "ready" if compile else False)
        engine, awaiting = trajectories.engine, trajectories.extra.get("compile") == "not ready"
        for i, row in zip(missing, simulated):
            rows[i] = row
            if cache is not None:
                cache.put(keys[i], row)
    first = rows[0]["positions"][0]  # type: ignore[index]
    out = {
        "surface": req.surface.surface.name,
        "start": tuple(req.start) if req.start is not None else (float(first[0]), float(first[1])),
        "steps": req.steps,
        "global_min": _global_min(req.surface.surface),
        "tol_criterion": sim.tol_criterion(req.surface.surface),
        "runs": [_run_out(spec, row) for spec, row in zip(req.optimizers, rows)],  # type: ignore[arg-type]
        "simulated_runs": len(missing),
        "engine": engine,
        "awaiting_compile": awaiting,
        "elapsed_ms": (time.perf_counter() - t0) * 1e3,
    }
    return teaching.with_seeing(req, out, stability_limit)  # "what you are seeing", from these runs


def compute_sweep(req: models.SweepRequest, should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Run ``ravine.simulate.sweep`` for ``req``: one batched program over all (x, y) cells (``should_stop`` as in
    :func:`compute_trajectories`)."""
    t0 = time.perf_counter()
    fixed = {k: v for k, v in req.optimizer.to_sim().items() if k not in ("name", req.x.name, req.y.name)}
    grid = sim.sweep(
        req.surface.surface,
        optimizer=req.optimizer.name,
        x=(req.x.name, req.x.values()),
        y=(req.y.name, req.y.values()),
        steps=req.steps,
        start=tuple(req.start) if req.start is not None else None,
        fixed=fixed,
        noise=req.noise,
        seed=req.seed,
        tol=req.tol,
        batch_size=req.batch_size,
        schedule=req.schedule.to_sim(req.steps) if req.schedule else None,
        clip=req.clip.to_sim() if req.clip else None,
        should_stop=should_stop,
    )
    diverged_at = np.asarray(grid.diverged_at)
    final = np.where(diverged_at >= 0, np.nan, np.asarray(grid.final_loss, dtype=np.float64))
    return {
        "optimizer": req.optimizer.name,
        "x_name": req.x.name,
        "x_values": [float(v) for v in grid.x_values],
        "y_name": req.y.name,
        "y_values": [float(v) for v in grid.y_values],
        "final_loss": _json_floats(final),
        "steps_to_tol": _json_indices(grid.steps_to_tol),
        "diverged_at": _json_indices(diverged_at),
        "steps": req.steps,
        "global_min": _global_min(req.surface.surface),
        "elapsed_ms": (time.perf_counter() - t0) * 1e3,
    }


def stability_limit(spec: models.OptimizerSpec, lambda_max: float | None) -> dict[str, Any]:
    """One optimizer's largest stable learning rate at curvature ``lambda_max`` (``ravine.curvature.max_stable_lr``).

    The rule is the library's, on the local quadratic model, mapped to the optimizer's own form:

    - ``gd`` (and ``sgd`` without momentum): ``2 / lambda_max``;
    - heavy ball (``sgd`` with momentum ``mu``; ``momentum`` with ``form="heavy_ball"``, dampening ``d``):
      ``2 (1 + beta) / ((1 - d) lambda_max)``; ``sgd``'s L2 weight decay ``wd`` adds ``wd`` to every
      eigenvalue;
    - EMA momentum (``momentum``, ``form="ema"``): heavy ball at lr ``lr (1 - beta)``, so
      ``2 (1 + beta) / ((1 - beta) lambda_max)``;
    - Nesterov momentum and every adaptive optimizer (Adam, RMSProp, ...): no fixed limit (``lr`` null):
      the preconditioner rescales each step, so the limit is on the preconditioned curvature.

    Args:
        spec: the optimizer, with the hyperparameters it overrides (the rest are the library's defaults).
        lambda_max: the largest Hessian eigenvalue at the point (``None`` where H is not finite).

    Returns:
        ``{"name", "lr", "rule"}``: the limit (``None`` where none exists, or ``lambda_max <= 0``) and the rule.
    """
    from ravine.curvature import stability_rule  # the one optimizer -> stability rule map

    hp = {**ro.get(spec.name).hyperparams, **spec.hyperparams}
    rule = stability_rule(spec.name, hp)
    if rule.curvature != "hessian":  # Nesterov, or preconditioned: no limit on lambda_max(H) alone
        return {"name": spec.name, "lr": None, "rule": rule.text}
    lr = rule.max_lr(lambda_max) if lambda_max is not None else None
    text = rule.text
    if lr is None and lambda_max is not None:
        text += ": no positive curvature, no lr limit here"
    return {"name": spec.name, "lr": lr, "rule": text}


def compute_curvature(req: models.CurvatureRequest) -> dict[str, Any]:
    """Hessian H of the surface at ``point`` (exact, by autograd) and its eigen-decomposition.

    Eigenvalues ascending (``torch.linalg.eigh`` of the symmetrised H); ``condition_number`` =
    max|lambda| / min|lambda| (null when min|lambda| is within ``1e-12 max|lambda|`` of 0).
    ``stability_lr`` is ``ravine.curvature.max_stable_lr`` (2 / lambda_max for gradient descent on
    the local quadratic model) and ``kind`` is ``ravine.curvature.critical_point_kind`` (minimum,
    maximum, saddle, degenerate; "undefined" where H is not finite). ``limits`` holds
    :func:`stability_limit` for each optimizer of the request.
    """
    surface = req.surface.surface
    xy = torch.tensor(req.point, dtype=torch.float64)
    H = surface.hessian(xy).detach().to(torch.float64)
    out = {
        "point": tuple(req.point),
        "value": _finite_or_none(surface.value(xy)),
        "grad": tuple(_finite_or_none(g) for g in surface.grad(xy).detach().reshape(-1)),
        "hessian": _json_floats(H.cpu().numpy()),
        "eigenvalues": [None, None],
        "eigenvectors": [[None, None], [None, None]],
        "condition_number": None,
        "lambda_max": None,
        "stability_lr": None,
        "kind": "undefined",
        "limits": [stability_limit(spec, None) for spec in req.optimizers],
    }
    if not bool(torch.isfinite(H).all()):
        return out
    evals, evecs = torch.linalg.eigh(0.5 * (H + H.T))
    lam = [float(v) for v in evals]
    smallest, largest = sorted(abs(v) for v in lam)
    out.update(
        eigenvalues=lam,
        eigenvectors=[[float(evecs[0, i]), float(evecs[1, i])] for i in range(2)],
        condition_number=largest / smallest if smallest > 1e-12 * max(largest, 1e-300) else None,
        lambda_max=lam[1],
        stability_lr=max_stable_lr(lam[1]),
        kind=critical_point_kind(lam, tol=1e-12),
        limits=[stability_limit(spec, lam[1]) for spec in req.optimizers],
    )
    return out


def python_snippet(req: models.TrajectoryRequest, colors: Sequence[str] = (), caption: Sequence[str] = ()) -> str:
    """Python source that reproduces ``req`` with ``ravine.simulate.run`` and saves the page's captioned figure.

    Every value is written with ``repr`` (floats round-trip exactly; strings are quoted literals), so
    the snippet computes the very numbers the page drew; it draws them with the same
    ``ravine.plots.playground.playground_figure`` as ``POST /api/export/png``
    (:func:`ravine.web.teaching.snippet_figure`), in ``colors`` (default: the page's palette), with
    ``caption`` (the "what you are seeing" sentences) under it.
    """
    surface = req.surface
    if surface.expression is not None and surface.expression.strip():
        domain = f", domain={tuple(tuple(b) for b in surface.domain)!r}" if surface.domain is not None else ""
        surface_line = f"surface = rs.parse({surface.expression!r}{domain})"
    else:
        args = "".join(f", {k}={v!r}" for k, v in surface.params.items())
        surface_line = f"surface = rs.get({surface.name!r}{args})"
    specs = [o.to_sim() for o in req.optimizers]
    labels = [o.label or o.name for o in req.optimizers]
    spec_lines = "".join(f"    {spec!r},\n" for spec in specs)
    start = tuple(req.start) if req.start is not None else None
    schedule = req.schedule.to_sim(req.steps) if req.schedule else None
    clip = req.clip.to_sim() if req.clip else None
    return f'''"""Reproduces a Ravine playground view with ravine.simulate (exported from the page)."""
import numpy as np

import ravine.simulate as sim
import ravine.surfaces as rs

{surface_line}
optimizers = [
{spec_lines}]
labels = {labels!r}
tr = sim.run(
    surface,
    optimizers,
    start={start!r},
    steps={req.steps!r},
    noise={req.noise!r},
    seed={req.seed!r},
    batch_size={req.batch_size!r},
    schedule={schedule!r},
    clip={clip!r},
    tol={req.tol!r},
)

{teaching.snippet_figure(req, colors, caption)}'''


# ---------------------------------------------------------------------------------------------------
# The app.


def _sanitize(value: Any) -> Any:
    """Make a validation error's context JSON-safe (non-finite floats and objects become strings)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_sanitize(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _sanitize(v) for k, v in value.items()}
    return str(value)


def _validation_response(errors: list[dict[str, Any]], status_code: int = 422) -> JSONResponse:
    """A 422 (or ``status_code``) listing each error with its ``loc``, dotted ``field`` and message, and all in
    one ``message``."""
    detail = []
    for e in errors:
        loc = [p for p in e.get("loc", ()) if not (isinstance(p, str) and p.startswith("function-"))]
        inner = loc[1:] if loc[:1] == ["body"] else loc
        msg = str(e.get("msg", "invalid value"))
        if loc == ["body"] and e.get("type") == "missing":
            msg = "the request needs a body: a JSON object (Content-Type: application/json)"
        elif loc == ["body"] and isinstance(e.get("input"), bytes | bytearray):  # not sent as JSON
            msg = "the body must be a JSON object sent with Content-Type: application/json"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        elif "input" in e and e.get("type") != "missing":  # pydantic's own words do not quote the value
            shown = json.dumps(_sanitize(e["input"]))
            msg = f"{msg}, got {shown if len(shown) <= 80 else shown[:77] + '...'}"
        field = ".".join(str(p) if p != "" else '""' for p in inner) or "body"
        item = {"loc": _sanitize(loc), "msg": msg, "type": str(e.get("type", "value_error")), "field": field}
        detail.append(item)
    message = "; ".join(f"{d['field']}: {d['msg']}" for d in detail)
    return JSONResponse(status_code=status_code, content={"detail": detail, "message": message})


def _check_out(req: models.ExpressionCheck) -> dict[str, Any]:
    """A valid expression's ``ExpressionCheckOut``: its surface, with a contour grid if asked for."""
    surface = rs.parse(req.expression, domain=req.domain) if req.domain else rs.parse(req.expression)
    return {"ok": True, "error": None, "position": None, "surface": _surface_out(surface, req.grid)}


#: The computations the server runs in its lanes, by kind: (request model, ``fn(req, should_stop,
#: run_cache, compile) -> dict``, response model). :func:`_work` runs one from the request's JSON, in a thread of the
#: server or in a worker process.
_WORK: dict[str, tuple[type, Callable[..., dict[str, Any]], type]] = {
    "trajectories": (
        models.TrajectoryRequest,
        lambda r, stop, cache, compile: compute_trajectories(r, cache, stop, compile),
        models.TrajectoryOut,
    ),
    "sweep": (models.SweepRequest, lambda r, stop, cache, compile: compute_sweep(r, stop), models.SweepOut),
    "curvature": (models.CurvatureRequest, lambda r, stop, cache, compile: compute_curvature(r), models.CurvatureOut),
    "grid": (
        models.GridRequest, lambda r, stop, cache, compile: _surface_out(r.surface.surface, r.n), models.SurfaceOut
    ),
    "check": (models.ExpressionCheck, lambda r, stop, cache, compile: _check_out(r), models.ExpressionCheckOut),
}


def compile_structure(payload: str, should_stop: Callable[[], bool] | None = None, cache: Any = None) -> bytes:
    """Compile, in this process, the ``ravine.simulate`` program of the structure of trajectory request ``payload``
    (JSON): a one-step run with ``compile=True``, which returns at once where the program is ready or cannot be
    compiled. The server runs it as a job of a worker process, which serves nothing else meanwhile (a
    compilation holds the interpreter for seconds at a time). Returns ``b""``."""
    req = models.TrajectoryRequest.model_validate_json(payload)
    _simulate(req.model_copy(update={"steps": 1}), list(range(len(req.optimizers))), compile=True)
    return b""


def _work(kind: str, payload: str, should_stop: Callable[[], bool], cache: Any, compile: bool = False) -> bytes:
    """Compute request ``payload`` (JSON) of ``kind`` and return the encoded response (``"surfaces"``: the
    payload is the grid side of ``GET /api/surfaces``; ``compile``: see :func:`compute_trajectories`)."""
    if kind == "surfaces":
        grid = int(payload)
        return json.dumps([_surface_out(rs.get(name), grid) for name in rs.names()], allow_nan=False).encode()
    if kind == "png":  # {"export": ExportRequest, "result": its TrajectoryOut}: the captioned figure's bytes
        job = json.loads(payload)
        export = models.ExportRequest.model_validate(job["export"])
        return teaching.png_bytes(teaching.export_figure(export.request, job["result"], export.colors))
    request_model, fn, out_model = _WORK[kind]
    req = request_model.model_validate_json(payload)
    return out_model.model_validate(fn(req, should_stop, cache, compile)).model_dump_json().encode()


def create_app(
    *,
    workers: int = 0,
    big_concurrency: int = 1,
    torch_threads: int | None = 1,
    cache_mb: float = 64.0,
    run_cache_mb: float = 64.0,
    allowed_hosts: Sequence[str] | None = None,
    allow_ip_hosts: bool = False,
    compile: bool = False,
) -> FastAPI:
    """Build the playground app.

    Requests that compute run in two lanes (``ravine.web._serving``): a small lane for requests within the
    small-work bounds of :data:`ravine.web.models.LIMITS` (the page's trajectories, grids, Hessians), which never
    waits behind bigger requests, and a big lane for the rest, ``big_concurrency`` at a time. The work of a
    client that disconnects is dropped (queued) or stopped within ``ravine.simulate.STOP_CHECK_STEPS`` steps
    (running). ``GET /api/load`` shows each lane's queue and counters.

    Args:
        workers: 0 (default): compute in threads of this process (the work holds the GIL: the lanes share
            one core, neither blocks the other). N >= 1: in worker processes, N for the small lane and
            ``big_concurrency`` for the big one, which uses the machine's cores.
        big_concurrency: how many big requests compute at once (default 1).
        torch_threads: ``torch.set_num_threads`` for the process and its workers (default 1; ``None`` leaves
            torch alone). Intra-op threads only contend on tensors this small.
        cache_mb: megabytes of the :class:`LRUCache` of encoded responses to identical requests (0: none).
        run_cache_mb: megabytes of the :class:`LRUCache` of single runs, so a slider that moves one optimizer
            recomputes only that one (0: none); each worker process has its own of this size.
        allowed_hosts: host names the server answers to (a request with another ``Host`` header gets a 400:
            protection from DNS rebinding); ``None`` (default): any, ``"*"`` too. ``ravine serve`` passes the
            bound address, ``localhost`` and its ``--allowed-host`` names.
        allow_ip_hosts: with ``allowed_hosts``, also answer to any IP address (``ravine serve`` sets it when
            bound to every interface).
        compile: step trajectories with ``ravine.simulate``'s compiled programs where the worker process has
            one ready (``compile="ready"``): a request whose structure (surface, optimizers, clipping, schedule,
            noise) has none there is stepped eagerly, and the server then has a worker compile it
            (:func:`compile_structure`, one compilation at a time, as a job that holds one of the small lane's
            worker processes: a compilation holds the interpreter for seconds, so that worker serves nothing
            else while the others serve; about 10 to 90 s of one core, once per structure and process). Later
            requests of that structure take several times less CPU. Needs ``workers >= 2``. ``GET /api/load``
            counts the compilations (``compile``).

    Raises:
        ValueError: ``compile`` with fewer than two worker processes.
    """
    if compile and workers < 2:
        raise ValueError(
            f"compile needs workers >= 2 (a worker process compiles a new structure while the others serve: a "
            f"compilation holds its interpreter for seconds at a time), got workers={workers}"
        )
    if torch_threads is not None:
        torch.set_num_threads(max(1, int(torch_threads)))
    cache: LRUCache[bytes] = LRUCache(int(cache_mb * 2**20))
    run_cache: LRUCache[dict[str, Any]] = LRUCache(int(run_cache_mb * 2**20))
    warm = models.TrajectoryRequest(optimizers=[models.OptimizerSpec(name="adam")], steps=2).model_dump_json()
    lanes = Lanes(
        workers, big_concurrency, run_cache, int(run_cache_mb * 2**20), torch_threads,
        warm=(functools.partial(_work, "trajectories"), warm),  # eager: the page's structures compile on demand
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        lanes.start()
        try:
            yield
        finally:
            lanes.close()

    app = FastAPI(
        # FastAPI's Swagger UI / ReDoc pages load their JS from a CDN; /docs is a local page instead.
        docs_url=None,
        redoc_url=None,
        title="Ravine playground",
        version=__version__,
        description="Optimizers walking 2D surfaces: every number the page draws comes from this API, "
        "which calls ravine.surfaces and ravine.simulate.",
        lifespan=lifespan,
    )
    shared = SharedWork(lanes)  # identical requests in flight share one computation
    app.state.lanes = lanes
    app.state.cache = cache
    app.state.run_cache = run_cache
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=list(allowed_hosts), allow_ip_literals=allow_ip_hosts)

    compiling: list[asyncio.Task] = []  # the compilation in flight (at most one)

    def compile_later(payload: str, lane: str, body: bytes, worker: int) -> None:
        """Have worker ``worker`` compile the structure of the trajectory request ``payload`` if ``body`` (its
        response from that worker) says it had no program ready, and no compilation is in flight."""
        if lane != "small" or b'"awaiting_compile":true' not in body or any(not t.done() for t in compiling):
            return
        compiling[:] = [asyncio.ensure_future(lanes.compile(compile_structure, payload, worker))]

    async def in_lane(kind: str, payload: str, small: bool, request: Request | None) -> bytes:
        """``_work(kind, payload)`` in its lane; raises ClientGone if the client left first."""
        receive = request.receive if request is not None else None
        work = functools.partial(_work, kind, compile=compile)
        lane = "small" if small else "big"
        done = functools.partial(compile_later, payload, lane) if compile and kind == "trajectories" else None
        return await shared.run(f"{kind}:{payload}", lane, work, payload, receive, done)

    async def computed(
        kind: str, req: Any, fn: Callable[[Any], Any], out_model: type, request: Request | None = None
    ) -> Response:
        payload = req.model_dump_json()
        key = kind + ":" + payload
        hit = cache.get(key)
        if hit is not None:
            return Response(content=hit, media_type="application/json", headers={"X-Ravine-Cache": "hit"})
        try:
            if kind in _WORK:
                body = await in_lane(kind, payload, getattr(req, "small", True), request)
            else:  # a computation without a lane of its own: the thread pool
                body = await run_in_threadpool(lambda: out_model.model_validate(fn(req)).model_dump_json().encode())
        except ClientGone:
            return Response(status_code=499)  # nobody reads it: the client has gone
        except WorkerLost as exc:
            return JSONResponse(status_code=503, content={"detail": str(exc), "message": str(exc)})
        except (ValueError, TypeError) as exc:
            # The library rejected a combination the models could not see (it names the argument).
            return _validation_response([{"loc": ["body"], "msg": str(exc), "type": "value_error"}])
        cache.put(key, body)
        return Response(content=body, media_type="application/json", headers={"X-Ravine-Cache": "miss"})

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(list(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # A body FastAPI cannot even decode (e.g. bytes that are not UTF-8) is a 400 whose detail said only
        # "There was an error parsing the body": name the body and say what is allowed, as for a 422.
        if exc.status_code == 400 and request.method == "POST":
            msg = f"{exc.detail}; send a JSON object (UTF-8, Content-Type: application/json)"
            return _validation_response([{"loc": ["body"], "msg": msg, "type": "body_unreadable"}], 400)
        return await http_exception_handler(request, exc)

    # ------------------------------------------------------------------ page and assets
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"))

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse((STATIC_DIR / "docs.html").read_text(encoding="utf-8"))

    @app.get("/vendor/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:
        return FileResponse(
            _plotly_js_path(), media_type="application/javascript", headers={"Cache-Control": "max-age=86400"}
        )

    # ------------------------------------------------------------------ catalogues
    @app.get(
        "/api/optimizers", response_model=list[models.OptimizerOut], summary="Named optimizers and hyperparameters"
    )
    def optimizers() -> list[dict[str, Any]]:
        return optimizer_catalog()

    @app.get("/api/schedules", response_model=list[models.ScheduleOut], summary="Learning-rate schedules")
    def schedules() -> list[dict[str, Any]]:
        return schedule_catalog()

    @app.get("/api/limits", summary="The server's bounds on requests")
    def limits() -> dict[str, int]:
        return dict(models.LIMITS)

    @app.get("/api/load", summary="The compute lanes: requests waiting and running, and how requests ended")
    def load() -> dict[str, Any]:
        # each worker process has its own compiled programs; a response's ``engine`` says which engine computed it
        return {**lanes.snapshot(), "shared": shared.shared, "compile": {"enabled": compile, **lanes.compiles}}

    @app.get("/api/surfaces", response_model=list[models.SurfaceOut], summary="Built-in surfaces")
    async def surfaces(
        request: Request,
        grid: Annotated[
            models.GridSideQuery,
            Query(description=f"0: no grids; else an n x n contour grid each, n in [{models.MIN_GRID}, "
                  f"{models.MAX_GRID}]"),
        ] = 0,
    ) -> Response:
        key = f"surfaces:{grid}"
        body = cache.get(key)
        if body is None:
            try:
                body = await in_lane("surfaces", str(grid), True, request)
            except ClientGone:
                return Response(status_code=499)
            cache.put(key, body)
        return Response(content=body, media_type="application/json")

    @app.post("/api/surface/grid", response_model=models.SurfaceOut, summary="Contour grid of one surface")
    async def surface_grid(req: models.GridRequest, request: Request) -> Response:
        return await computed("grid", req, lambda r: _surface_out(r.surface.surface, r.n), models.SurfaceOut, request)

    @app.post("/api/surface/check", response_model=models.ExpressionCheckOut, summary="Validate an expression")
    async def surface_check(req: models.ExpressionCheck, request: Request) -> Response:
        try:
            rs.parse(req.expression, domain=req.domain) if req.domain else rs.parse(req.expression)  # errors: 200
        except rs.ExpressionError as exc:
            error = f"{exc.problem} at position {exc.position}"
            return JSONResponse({"ok": False, "error": error, "position": exc.position, "surface": None})
        except ValueError as exc:  # a bad domain: nothing to point at in the text
            return JSONResponse({"ok": False, "error": str(exc), "position": None, "surface": None})

        return await computed("check", req, _check_out, models.ExpressionCheckOut, request)

    # ------------------------------------------------------------------ computations
    @app.post("/api/trajectories", response_model=models.TrajectoryOut, summary="Run optimizers (ravine.simulate.run)")
    async def trajectories(req: models.TrajectoryRequest, request: Request) -> Response:
        return await computed(
            "trajectories", req, lambda r: compute_trajectories(r, run_cache), models.TrajectoryOut, request
        )

    @app.post("/api/sweep", response_model=models.SweepOut, summary="Hyperparameter sweep (ravine.simulate.sweep)")
    async def sweep(req: models.SweepRequest, request: Request) -> Response:
        return await computed("sweep", req, compute_sweep, models.SweepOut, request)

    @app.post("/api/curvature", response_model=models.CurvatureOut, summary="Hessian eigen-decomposition at a point")
    async def curvature(req: models.CurvatureRequest, request: Request) -> Response:
        return await computed("curvature", req, compute_curvature, models.CurvatureOut, request)

    @app.post("/api/python", response_model=models.PythonOut, summary="Python snippet reproducing a trajectory request")
    def python(req: models.TrajectoryRequest) -> dict[str, str]:
        return {"code": python_snippet(req)}

    _teaching_routes(app, computed, in_lane)
    return app


def _teaching_routes(app: FastAPI, computed: Callable[..., Any], in_lane: Callable[..., Any]) -> None:
    """The teaching routes (:mod:`ravine.web.teaching`): presets, the page's colours, the captioned export.

    The exports get their runs from ``computed`` (the trajectories route's lane and response cache: exporting
    the view the page shows costs no simulation); the figure (about a second of drawing) is big work: it is
    drawn in the big lane (``in_lane``), so a class exporting at once is bounded like any big request and a
    client that leaves first has its queued drawing dropped.
    """
    from ravine.plots.playground import PAGE_STYLE

    async def runs_of(req: models.ExportRequest, request: Request) -> tuple[dict[str, Any] | None, Response]:
        out = await computed(
            "trajectories", req.request, lambda r: compute_trajectories(r), models.TrajectoryOut, request
        )
        return (json.loads(out.body) if out.status_code == 200 else None), out

    @app.get("/api/presets", response_model=list[models.PresetOut], summary="The chapter's figures as views")
    def presets() -> list[dict[str, Any]]:
        return teaching.presets()

    @app.get("/api/style", response_model=models.StyleOut, summary="The page's colours (exports use them too)")
    def style() -> dict[str, Any]:
        return PAGE_STYLE

    @app.post(
        "/api/export/png",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}, "description": "the captioned figure, 1800 x 1100 pixels"}},
        summary="The view as a captioned PNG (contour, loss, gradient norm, settings, what you are seeing)",
    )
    async def export_png(req: models.ExportRequest, request: Request) -> Response:
        result, out = await runs_of(req, request)
        if result is None:
            return out
        job = json.dumps({"export": json.loads(req.model_dump_json()), "result": result}, allow_nan=False)
        try:
            png = await in_lane("png", job, False, request)
        except ClientGone:
            return Response(status_code=499)  # nobody reads it: the client has gone
        except WorkerLost as exc:
            return JSONResponse(status_code=503, content={"detail": str(exc), "message": str(exc)})
        return Response(png, media_type="image/png", headers={"Content-Disposition": "inline; filename=ravine.png"})

    @app.post("/api/export/python", response_model=models.PythonOut, summary="Python that saves the captioned PNG")
    async def export_python(req: models.ExportRequest, request: Request) -> Response:
        result, out = await runs_of(req, request)
        if result is None:
            return out
        return JSONResponse({"code": python_snippet(req.request, req.colors, result["seeing"])})


def _plotly_js_path() -> Path:
    """The ``plotly.min.js`` bundled in the installed ``plotly`` Python package."""
    path = Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))
    if not path.is_file():
        raise FileNotFoundError(f"plotly.min.js not found at {path}; reinstall the 'plotly' package")
    return path
