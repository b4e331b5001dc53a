"""The playground's FastAPI app: a JSON API over ``ravine.surfaces`` / ``ravine.simulate`` and the page.

Routes (the OpenAPI schema at ``/openapi.json``, rendered offline at ``/docs``, documents every body):

=========================  ==================================================================
``GET  /``                 the page (``static/index.html``); ``/static/*`` its JS and CSS
``GET  /vendor/plotly.min.js``  plotly.js as bundled in the installed ``plotly`` package (no CDN)
``GET  /api/surfaces``     built-in surfaces: name, description, domain, start, minima, params;
                           ``?grid=N`` adds an N x N contour grid to each
``POST /api/surface/grid``  the contour grid of one surface (a built-in with params or an expression)
``POST /api/surface/check``  validate an expression: ``ok``, or the error and its 0-based position
``POST /api/trajectories``  ``ravine.simulate.run``: positions, losses, grad norms, lrs, clip steps
``POST /api/sweep``        ``ravine.simulate.sweep``: final loss / steps to converge / divergence grid
``POST /api/curvature``    Hessian at a point: eigenvalues, eigenvectors, condition number, 2/lambda_max
``POST /api/python``       a Python snippet that reproduces a trajectory request with ``ravine.simulate``
``GET  /api/optimizers``   named optimizers with each hyperparameter's default, bounds and slider range
``GET  /api/schedules``    schedules with their parameters and defaults
=========================  ==================================================================

Robustness. Bodies are parsed by the models of :mod:`ravine.web.models` (bounds on steps, optimizers,
sweep size, expression length, work = steps x rows; finite floats); a bad body is a 422 whose
``detail`` names each bad field (``loc``) and says what is allowed. Responses carry ``null`` for every
non-finite number plus ``diverged`` flags, so ``NaN``/``inf`` never reach the JSON. Every request that
computes runs in the thread pool, never on the event loop, and at most ``max_concurrency`` of them
compute at once (an ``asyncio.Semaphore``, FIFO, so no request is starved; default 1, since the
work is GIL-bound Python dispatch); torch's intra-op threads are set to 1 by ``create_app``
(``torch_threads``), since the 2D tensors are tiny. Identical requests are answered from a small
LRU cache, and single runs are cached too (:class:`RunCache`): when a slider moves one optimizer of six, only that one
is simulated again.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from ravine.web import models as m

STATIC_DIR = Path(__file__).with_name("static")


# ---------------------------------------------------------------------------------------------------
# JSON-safe conversion.


def _finite_or_none(v: Any) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _list(a: Any) -> list:
    """``a`` as nested lists with every non-finite float replaced by ``None`` (JSON null)."""
    arr = np.asarray(a, dtype=np.float64)
    finite = np.isfinite(arr)
    if finite.all():
        return arr.tolist()
    out = arr.astype(object)
    out[~finite] = None
    return out.tolist()


def _int_or_none(v: Any, none_below: int = 0) -> int | None:
    v = int(v)
    return None if v < none_below else v


def _int_grid(a: Any) -> list[list[int | None]]:
    arr = np.asarray(a).astype(np.int64)
    out = arr.astype(object)
    out[arr < 0] = None
    return out.tolist()


# ---------------------------------------------------------------------------------------------------
# Catalogues (static for the process; cached).


def _first_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ").strip()


@lru_cache(maxsize=1)
def optimizer_catalog() -> list[dict[str, Any]]:
    """Every named optimizer with its settable hyperparameters: library default, bounds, slider range.

    The ``lr`` default listed is ravine.optim's; the simulator replaces a missing ``lr`` with the
    surface's suggested one (``suggested_lr`` of each surface in ``GET /api/surfaces``).
    """
    import ravine.optim as ro

    out = []
    for name in ro.names():
        defaults = dict(ro.get(name).hyperparams)
        params = []
        for h in m.settable_hyperparams(name):
            info = m.HYPERPARAMS[h]
            default = defaults.get(h)
            if isinstance(default, np.generic):
                default = default.item()
            if default is not None and not isinstance(default, bool | int | float | str):
                default = None  # a tensor or schedule default cannot be a slider's start
            if info.kind == "float" and isinstance(default, int) and not isinstance(default, bool):
                default = float(default)
            params.append(
                {
                    "name": h,
                    "kind": info.kind,
                    "help": info.help,
                    "default": default,
                    "min": info.ui_min,
                    "max": info.ui_max,
                    "log": info.log,
                    "step": info.step,
                    "choices": list(info.choices),
                    "allowed": info.allowed(),
                }
            )
        factory = getattr(ro, name, None)
        out.append({"name": name, "description": _first_line(factory) if factory else name, "hyperparams": params})
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
    import ravine.schedules as rsch

    names = list(rsch.names())
    names = [n for n in _PAGE_SCHEDULES if n in names] + [n for n in names if n not in _PAGE_SCHEDULES]
    out = []
    for name in names:
        params = []
        for p in rsch.parameters(name):
            if p.kind == "ints":
                continue
            auto = m.SCHEDULE_AUTO.get(p.name, (None, None))[0] if p.required else None
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
        cls_doc = _first_line(rsch._REGISTRY[name]) if hasattr(rsch, "_REGISTRY") else name
        out.append({"name": name, "description": cls_doc, "params": params})
    return out


# ---------------------------------------------------------------------------------------------------
# Computations (run in the thread pool).


def _surface_out(s: Any, grid: int = 0) -> dict[str, Any]:
    (x0, x1), (y0, y1) = s.domain
    out: dict[str, Any] = {
        "name": s.name,
        "description": s.description,
        "expression": getattr(s, "expression", None),
        "domain": ((float(x0), float(x1)), (float(y0), float(y1))),
        "start": (float(s.start[0]), float(s.start[1])),
        "minima": [
            {"x": float(mn.x), "y": float(mn.y), "value": float(mn.value), "kind": str(mn.kind)} for mn in s.minima
        ],
        "params": {k: float(v) for k, v in (s.params or {}).items()},
        "param_ranges": _param_ranges(s),
        "saddles": [(float(p.x), float(p.y)) for p in getattr(s, "saddles", [])],
        "suggested_lr": _suggested_lr(s),
    }
    if grid:
        out["grid"] = _grid_out(s, grid)
    return out


def _param_ranges(s: Any) -> dict[str, tuple[float, float]]:
    import ravine.surfaces as rs

    if getattr(s, "expression", None) is not None or s.name not in rs.names():
        return {}
    return {k: (float(lo), float(hi)) for k, (_, lo, hi) in rs.param_info(s.name).items()}


def _suggested_lr(s: Any) -> dict[str, float]:
    import ravine.optim as ro

    return {name: float(s.default_lr(name)) for name in ro.names()}


def _grid_out(s: Any, n: int) -> dict[str, Any]:
    X, Y, Z = s.grid(n=n)
    Z = np.asarray(Z, dtype=np.float64)
    finite = Z[np.isfinite(Z)]
    return {
        "x": [float(v) for v in np.asarray(X)[0, :]],
        "y": [float(v) for v in np.asarray(Y)[:, 0]],
        "z": _list(Z),
        "zmin": float(finite.min()) if finite.size else None,
        "zmax": float(finite.max()) if finite.size else None,
    }


def _global_min(s: Any) -> float | None:
    values = [float(mn.value) for mn in s.minima if str(mn.kind) == "global"]
    return min(values) if values else None


class RunCache:
    """LRU cache of single runs (numpy arrays), keyed by everything that determines one run.

    Runs of one request are independent: each row is stepped by its own (or a batched) transform, and
    with an integer seed every row sees the same noise sequence (``ravine.simulate``'s common random
    numbers). So a run computed alone equals the same run computed beside others (up to the rounding of
    batched hyperparameter tensors, ~1e-16 relative), and when a slider moves one optimizer of six, the
    other five come from here and only one is simulated. ``size`` entries (a 500-step run is ~20 KB).
    """

    def __init__(self, size: int = 512):
        self.size = size
        self._d: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key: str, value: dict[str, Any]) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)


def _run_keys(req: m.TrajectoryRequest) -> list[str]:
    shared = req.model_dump(mode="json", exclude={"optimizers"})
    base = json.dumps(shared, sort_keys=True)
    return [base + "|" + json.dumps(o.to_sim(), sort_keys=True) for o in req.optimizers]


def compute_trajectories(req: m.TrajectoryRequest, cache: RunCache | None = None) -> dict[str, Any]:
    """Run ``ravine.simulate.run`` for ``req`` and convert the result to the ``TrajectoryOut`` layout.

    With a :class:`RunCache`, runs already computed under the same settings are reused and only the
    others are simulated (together, as one batched call).
    """
    import ravine.simulate as sim

    t0 = time.perf_counter()
    s = req.surface.surface
    specs = [o.to_sim() for o in req.optimizers]
    keys = _run_keys(req)
    rows: list[dict[str, Any] | None] = [cache.get(k) if cache is not None else None for k in keys]
    missing = [i for i, r in enumerate(rows) if r is None]
    start = tuple(req.start) if req.start is not None else None
    if missing:
        tr = sim.run(
            s,
            [specs[i] for i in missing],
            start=start,
            steps=req.steps,
            noise=req.noise,
            seed=req.seed,
            batch_size=req.batch_size,
            schedule=req.schedule.to_sim(req.steps) if req.schedule else None,
            clip=req.clip.to_sim() if req.clip else None,
            tol=req.tol,
        )
        for j, i in enumerate(missing):
            row = {
                "label": tr.labels[j],
                "spec": {k: v for k, v in tr.specs[j].items() if k not in ("name", "label") and v is not None},
                "positions": np.asarray(tr.positions[j], dtype=np.float64),
                "losses": np.asarray(tr.losses[j], dtype=np.float64),
                "grad_norms": np.asarray(tr.grad_norms[j], dtype=np.float64),
                "lrs": np.asarray(tr.lrs[j], dtype=np.float64),
                "clipped": np.flatnonzero(np.asarray(tr.clipped[j])),
                "diverged_at": int(tr.diverged_at[j]),
                "steps_to_tol": int(tr.steps_to_tol[j]),
            }
            rows[i] = row
            if cache is not None:
                cache.put(keys[i], row)
    runs = []
    for o, row in zip(req.optimizers, rows):
        assert row is not None
        diverged_at = row["diverged_at"]
        loss = row["losses"]
        runs.append(
            {
                "label": o.label or row["label"],
                "name": o.name,
                "hyperparams": row["spec"],
                "x": _list(row["positions"][:, 0]),
                "y": _list(row["positions"][:, 1]),
                "loss": _list(loss),
                "grad_norm": _list(row["grad_norms"]),
                "lr": _list(row["lrs"]),
                "clipped_steps": [int(k) for k in row["clipped"]],
                "diverged": diverged_at >= 0,
                "diverged_at": _int_or_none(diverged_at),
                "steps_to_tol": _int_or_none(row["steps_to_tol"]),
                "final_loss": _finite_or_none(loss[-1]) if diverged_at < 0 else None,
            }
        )
    first = rows[0]["positions"][0]  # type: ignore[index]
    return {
        "surface": s.name,
        "start": (float(first[0]), float(first[1])) if start is None else start,
        "steps": req.steps,
        "global_min": _global_min(s),
        "runs": runs,
        "simulated_runs": len(missing),
        "elapsed_ms": (time.perf_counter() - t0) * 1e3,
    }


def compute_sweep(req: m.SweepRequest) -> dict[str, Any]:
    """Run ``ravine.simulate.sweep`` for ``req``: one batched program over all (x, y) cells."""
    import ravine.simulate as sim

    t0 = time.perf_counter()
    s = req.surface.surface
    fixed = {k: v for k, v in req.optimizer.to_sim().items() if k not in ("name", req.x.name, req.y.name)}
    xv, yv = req.x.values(), req.y.values()
    sw = sim.sweep(
        s,
        optimizer=req.optimizer.name,
        x=(req.x.name, xv),
        y=(req.y.name, yv),
        steps=req.steps,
        start=tuple(req.start) if req.start is not None else None,
        fixed=fixed,
        noise=req.noise,
        seed=req.seed,
        tol=req.tol,
        batch_size=req.batch_size,
        schedule=req.schedule.to_sim(req.steps) if req.schedule else None,
        clip=req.clip.to_sim() if req.clip else None,
    )
    final = np.asarray(sw.final_loss, dtype=np.float64)
    diverged_at = np.asarray(sw.diverged_at)
    final = np.where(diverged_at >= 0, np.nan, final)
    return {
        "optimizer": req.optimizer.name,
        "x_name": req.x.name,
        "x_values": [float(v) for v in sw.x_values],
        "y_name": req.y.name,
        "y_values": [float(v) for v in sw.y_values],
        "final_loss": _list(final),
        "steps_to_tol": _int_grid(sw.steps_to_tol),
        "diverged_at": _int_grid(diverged_at),
        "steps": req.steps,
        "global_min": _global_min(s),
        "elapsed_ms": (time.perf_counter() - t0) * 1e3,
    }


def compute_curvature(req: m.CurvatureRequest) -> dict[str, Any]:
    """Hessian H of the surface at ``point`` (exact, by autograd) and its eigen-decomposition.

    Eigenvalues ascending (``torch.linalg.eigh`` of the symmetrised H); ``condition_number`` =
    max|lambda| / min|lambda| (null when min|lambda| is 0); ``stability_lr`` = 2 / lambda_max when
    lambda_max > 0: gradient descent with a larger lr is unstable along that eigenvector on the local
    quadratic model. ``kind``: both eigenvalues > 0 "minimum", both < 0 "maximum", opposite signs
    "saddle", one zero "degenerate".
    """
    import torch

    s = req.surface.surface
    xy = torch.tensor(req.point, dtype=torch.float64)
    value = s.value(xy)
    grad = s.grad(xy)
    H = s.hessian(xy).detach().to(torch.float64)
    ok = bool(torch.isfinite(H).all())
    if ok:
        evals, evecs = torch.linalg.eigh(0.5 * (H + H.T))
        lam = [float(v) for v in evals]
        vecs = [[float(evecs[0, i]), float(evecs[1, i])] for i in range(2)]
        scale = max(abs(lam[0]), abs(lam[1]), 1e-300)
        tiny = 1e-12 * scale
        a = [abs(v) for v in lam]
        cond = max(a) / min(a) if min(a) > tiny else None
        lmax = lam[1]
        if lam[0] > tiny:
            kind = "minimum"
        elif lam[1] < -tiny:
            kind = "maximum"
        elif lam[0] < -tiny and lam[1] > tiny:
            kind = "saddle"
        else:
            kind = "degenerate"
    else:
        lam, vecs, cond, lmax, kind = [None, None], [[None, None], [None, None]], None, None, "undefined"
    return {
        "point": tuple(req.point),
        "value": _finite_or_none(value),
        "grad": tuple(_finite_or_none(g) for g in grad.detach().reshape(-1)),
        "hessian": _list(H.detach().cpu().numpy()),
        "eigenvalues": lam,
        "eigenvectors": vecs,
        "condition_number": cond,
        "lambda_max": lmax,
        "stability_lr": (2.0 / lmax) if (lmax is not None and lmax > 0) else None,
        "kind": kind,
    }


def python_snippet(req: m.TrajectoryRequest) -> str:
    """Python source that reproduces ``req`` with ``ravine.simulate.run`` and draws it with matplotlib.

    Every value is written with ``repr`` (floats round-trip exactly; strings are quoted literals), so
    the snippet computes the very numbers the page drew.
    """
    s = req.surface
    if s.expression is not None and s.expression.strip():
        domain = f", domain={tuple(tuple(b) for b in s.domain)!r}" if s.domain is not None else ""
        surface_line = f"surface = rs.parse({s.expression!r}{domain})"
    else:
        args = "".join(f", {k}={v!r}" for k, v in s.params.items())
        surface_line = f"surface = rs.get({s.name!r}{args})"
    specs = [o.to_sim() for o in req.optimizers]
    labels = [o.label or o.name for o in req.optimizers]
    spec_lines = "".join(f"    {spec!r},\n" for spec in specs)
    start = tuple(req.start) if req.start is not None else None
    schedule = req.schedule.to_sim(req.steps) if req.schedule else None
    clip = req.clip.to_sim() if req.clip else None
    return f'''"""Reproduces a Ravine playground view with ravine.simulate (exported from the page)."""
import matplotlib.pyplot as plt
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

X, Y, Z = surface.grid(n=200)
fmin = surface.global_minimum.value if surface.global_minimum is not None else np.nanmin(Z)
fig, (ax, ax_loss) = plt.subplots(1, 2, figsize=(12, 5))
ax.contourf(X, Y, np.log10(Z - np.nanmin(Z) + 1e-3), levels=30, cmap="Blues", alpha=0.3)
ax.contour(X, Y, np.log10(Z - np.nanmin(Z) + 1e-3), levels=30, colors="grey", linewidths=0.4)
for label, xy, diverged_at in zip(labels, tr.positions, tr.diverged_at):
    end = diverged_at + 1 if diverged_at >= 0 else len(xy)
    (line,) = ax.plot(xy[:end, 0], xy[:end, 1], ".-", ms=2, lw=1.2, label=label)
    if diverged_at >= 0:
        ax.plot(*xy[end - 1], "x", color=line.get_color(), ms=10, mew=2)
ax.plot(*tr.positions[0, 0], "o", color="black")
(x0, x1), (y0, y1) = surface.domain
ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel="x", ylabel="y", title=surface.name)
ax.legend()
for label, loss, diverged_at in zip(labels, tr.losses, tr.diverged_at):
    end = diverged_at + 1 if diverged_at >= 0 else len(loss)
    ax_loss.semilogy(np.maximum(loss[:end] - fmin, 1e-16), label=label)
ax_loss.set(xlabel="step", ylabel="loss - minimum", title="loss")
ax_loss.legend()
plt.tight_layout()
plt.show()
'''


# ---------------------------------------------------------------------------------------------------
# The app.


class _LRU:
    """A small thread-safe LRU cache of encoded responses (key: the canonical request JSON)."""

    def __init__(self, size: int):
        self.size = size
        self._d: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key: str, value: bytes) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)


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


def _validation_response(errors: list[dict[str, Any]]) -> JSONResponse:
    detail = []
    for e in errors:
        loc = [p for p in e.get("loc", ()) if not (isinstance(p, str) and p.startswith("function-"))]
        msg = str(e.get("msg", "invalid value"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        field = ".".join(str(p) for p in loc if p != "body") or "body"
        item = {"loc": _sanitize(loc), "msg": msg, "type": str(e.get("type", "value_error")), "field": field}
        detail.append(item)
    message = "; ".join(f"{d['field']}: {d['msg']}" for d in detail)
    return JSONResponse(status_code=422, content={"detail": detail, "message": message})


def create_app(
    *,
    max_concurrency: int | None = None,
    torch_threads: int | None = 1,
    cache_size: int = 64,
    run_cache_size: int = 512,
) -> FastAPI:
    """Build the playground app.

    ``max_concurrency``: how many computing requests may run at once (default 1); the others wait in
    FIFO order. Stepping ``(B, 2)`` tensors is Python dispatch, which holds the GIL: two requests
    computing in two threads contend for it and each slows down threefold (measured with 50 clients on
    2 cores: 11.3 requests/s with 2 at once, 17.8 with 1). ``torch_threads`` (default 1; ``None`` leaves
    torch alone) sets ``torch.set_num_threads`` for the process: intra-op threads only contend on tiny
    tensors (a 16 x 16 sweep of 100 steps took ~15 ms with 1 thread and ~3 s with 2 threads on a
    loaded 2-core machine).
    ``cache_size``: entries of the LRU cache of responses to identical requests; ``run_cache_size``:
    entries of the :class:`RunCache` of single runs (so a slider that moves one optimizer recomputes
    only that one); 0 disables either.
    """
    if torch_threads is not None:
        import torch

        torch.set_num_threads(max(1, int(torch_threads)))
    limit = max(1, int(max_concurrency or 1))
    cache = _LRU(cache_size)
    run_cache = RunCache(run_cache_size)

    app = FastAPI(
        # FastAPI's Swagger UI / ReDoc pages load their JS from a CDN; /docs is a local page instead.
        docs_url=None,
        redoc_url=None,
        title="Ravine playground",
        version=_version(),
        description="Optimizers walking 2D surfaces: every number the page draws comes from this API, "
        "which calls ravine.surfaces and ravine.simulate.",
    )
    app.state.max_concurrency = limit
    state: dict[str, Any] = {"sem": None}

    def semaphore() -> asyncio.Semaphore:
        # Created lazily inside the running loop (TestClient and uvicorn each run their own loop).
        if state["sem"] is None:
            state["sem"] = asyncio.Semaphore(limit)
        return state["sem"]

    async def computed(kind: str, req: Any, fn: Callable[[Any], Any], out_model: type) -> Response:
        key = kind + ":" + req.model_dump_json()
        hit = cache.get(key)
        if hit is not None:
            return Response(content=hit, media_type="application/json", headers={"X-Ravine-Cache": "hit"})

        def work() -> bytes:
            return out_model.model_validate(fn(req)).model_dump_json().encode()

        async with semaphore():
            try:
                body = await run_in_threadpool(work)
            except (ValueError, TypeError) as exc:
                # The library rejected a combination the models could not see (it names the argument).
                return _validation_response([{"loc": ["body"], "msg": str(exc), "type": "value_error"}])
        cache.put(key, body)
        return Response(content=body, media_type="application/json", headers={"X-Ravine-Cache": "miss"})

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(list(exc.errors()))

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
    @app.get("/api/optimizers", response_model=list[m.OptimizerOut], summary="Named optimizers and hyperparameters")
    def optimizers() -> list[dict[str, Any]]:
        return optimizer_catalog()

    @app.get("/api/schedules", response_model=list[m.ScheduleOut], summary="Learning-rate schedules")
    def schedules() -> list[dict[str, Any]]:
        return schedule_catalog()

    @app.get("/api/limits", summary="The server's bounds on requests")
    def limits() -> dict[str, int]:
        return {
            "max_steps": m.MAX_STEPS,
            "max_optimizers": m.MAX_OPTIMIZERS,
            "max_sweep_side": m.MAX_SWEEP_SIDE,
            "max_expression_length": m.MAX_EXPRESSION_LENGTH,
            "max_trajectory_work": m.MAX_TRAJECTORY_WORK,
            "max_sweep_work": m.MAX_SWEEP_WORK,
            "max_grid": m.MAX_GRID,
        }

    @app.get("/api/surfaces", response_model=list[m.SurfaceOut], summary="Built-in surfaces")
    async def surfaces(
        grid: int = Query(0, ge=0, le=m.MAX_GRID, description="0: no grids; else an n x n contour grid each"),
    ) -> Response:
        import ravine.surfaces as rs

        def work() -> bytes:
            out = [_surface_out(rs.get(name), grid) for name in rs.names()]
            return json.dumps(out, allow_nan=False).encode()

        key = f"surfaces:{grid}"
        body = cache.get(key)
        if body is None:
            async with semaphore():
                body = await run_in_threadpool(work)
            cache.put(key, body)
        return Response(content=body, media_type="application/json")

    @app.post("/api/surface/grid", response_model=m.SurfaceOut, summary="Contour grid of one surface")
    async def surface_grid(req: m.GridRequest) -> Response:
        return await computed("grid", req, lambda r: _surface_out(r.surface.surface, r.n), m.SurfaceOut)

    @app.post("/api/surface/check", response_model=m.ExpressionCheckOut, summary="Validate an expression")
    async def surface_check(req: m.ExpressionCheck) -> Response:
        import ravine.surfaces as rs

        try:
            s = rs.parse(req.expression, domain=req.domain) if req.domain else rs.parse(req.expression)
        except ValueError as exc:
            position = getattr(exc, "position", None)
            if position is None:
                position = m.expression_error_position(str(exc))
            problem = getattr(exc, "problem", None)
            error = f"{problem} at position {position}" if problem and position is not None else str(exc)
            return JSONResponse({"ok": False, "error": error, "position": position, "surface": None})

        def work() -> bytes:
            out = {"ok": True, "error": None, "position": None, "surface": _surface_out(s, req.grid)}
            return m.ExpressionCheckOut.model_validate(out).model_dump_json().encode()

        async with semaphore():
            body = await run_in_threadpool(work)
        return Response(content=body, media_type="application/json")

    # ------------------------------------------------------------------ computations
    @app.post("/api/trajectories", response_model=m.TrajectoryOut, summary="Run optimizers (ravine.simulate.run)")
    async def trajectories(req: m.TrajectoryRequest) -> Response:
        return await computed("trajectories", req, lambda r: compute_trajectories(r, run_cache), m.TrajectoryOut)

    @app.post("/api/sweep", response_model=m.SweepOut, summary="Hyperparameter sweep (ravine.simulate.sweep)")
    async def sweep(req: m.SweepRequest) -> Response:
        return await computed("sweep", req, compute_sweep, m.SweepOut)

    @app.post("/api/curvature", response_model=m.CurvatureOut, summary="Hessian eigen-decomposition at a point")
    async def curvature(req: m.CurvatureRequest) -> Response:
        return await computed("curvature", req, compute_curvature, m.CurvatureOut)

    @app.post("/api/python", response_model=m.PythonOut, summary="Python snippet reproducing a trajectory request")
    def python(req: m.TrajectoryRequest) -> dict[str, str]:
        return {"code": python_snippet(req)}

    return app


def _version() -> str:
    from ravine import __version__

    return __version__


def _plotly_js_path() -> Path:
    """The ``plotly.min.js`` bundled in the installed ``plotly`` Python package."""
    path = Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))
    if not path.is_file():
        raise FileNotFoundError(f"plotly.min.js not found at {path}; reinstall the 'plotly' package")
    return path
