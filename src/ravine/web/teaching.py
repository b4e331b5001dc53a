"""The playground as a teaching tool: the chapter's presets, and the "what you are seeing" sentences.

Presets (:data:`PRESETS`, served by ``GET /api/presets``) are data, not page code: each is one view of
the playground (a trajectory request in the API's own form, and optionally a sweep) with a title, the
chapter section it illustrates and a two-line caption. :func:`presets` validates every one through the
same pydantic models the page's requests go through (:class:`ravine.web.models.TrajectoryRequest`,
:class:`ravine.web.models.SweepRequest`), so a preset can never ask for what a user could not.

:func:`seeing` turns a computed trajectory response into a few sentences that say what the runs show,
every number in them taken from the runs and from the curvature of the surface at points the runs
visited (the exact Hessian of ``ravine.surfaces``; each optimizer's stability limit from the server's
``stability_limit``, which applies ``ravine.curvature.max_stable_lr``). Nothing here is canned: a
sentence is only said when the run shows it, e.g.

- "gd zig-zags across the valley: lr × λmax = 1.9, close to its limit 2";
- "adam's first step is 1 × lr in each coordinate ...: it moves diagonally, not down the gradient";
- "gd stalled at a saddle at (0, 0): the gradient vanished, but the curvature is λ = -4 < 0 < 2";
- "gd diverged at step 37: lr = 0.104 is 1.3× its stability limit 0.08 (2/λmax) at the start".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

import ravine.optim as ro
from ravine.web import models

# ---------------------------------------------------------------------------------------------------
# Presets.

#: The cliff of the clipping presets: a gentle bowl around (1, 0) with a drop of 4 over a band about
#: 0.25 wide at x = -0.5; on the drop the slope reaches 2 * 8 = 16, against 0.2 * 1.5 = 0.3 for the bowl
#: there.
CLIFF = "0.1*((x - 1)**2 + y**2) + 2*(1 - tanh(8*(x + 0.5)))"
#: The saddle of the saddle presets: a double well (x^2 - 1)^2 + y^2, minima at (+-1, 0) and a saddle at
#: the origin (Hessian diag(-4, 2)); from (0, 1.5) the gradient has no x component, so plain gradient
#: descent slides straight into the saddle.
DOUBLE_WELL = "(x**2 - 1)**2 + y**2"


@dataclass(frozen=True)
class Preset:
    """One chapter figure as a playground view.

    ``request`` is a trajectory request as the page sends it (``POST /api/trajectories``); ``sweep``, if
    given, holds the sweep's axes and optimizer index (``{"opt": i, "x": axis, "y": axis, "n": n}``, axes
    as in ``POST /api/sweep``), run on the same surface and settings once the preset is loaded.
    """

    id: str
    title: str
    section: str
    caption: tuple[str, str]
    request: Mapping[str, Any]
    sweep: Mapping[str, Any] | None = None


def _gd(lr: float, **hp: Any) -> dict[str, Any]:
    return {"name": "gd", "hyperparams": {"lr": lr, **hp}}


#: The chapter's figures, in the chapter's order.
PRESETS: tuple[Preset, ...] = (
    Preset(
        "bowl",
        "SGD on a convex bowl",
        "Vanilla Gradient Descent",
        (
            "Gradient descent — SGD on convex bowl: the chapter's first figure, axes -2..2.",
            "Vanilla gradient descent on a convex bowl. Each step moves toward the minimum along the "
            "steepest-descent direction.",
        ),
        {"surface": {"name": "bowl"}, "steps": 80, "optimizers": [_gd(0.1)]},
    ),
    Preset(
        "zigzag",
        "Zig-zag vs momentum",
        "Momentum",
        (
            "The narrow valley (condition number 100): gradient descent near its limit lr = 2/λmax flips across "
            "the valley every step and crawls along the floor.",
            "Momentum (β = 0.9, the chapter's EMA form) builds up speed along the floor and reaches the minimum "
            "long before; across the valley it swings in slow arcs instead of zig-zagging every step.",
        ),
        {
            "surface": {"name": "valley", "params": {"condition": 100.0}},
            "steps": 150,
            "optimizers": [_gd(0.019), {"name": "momentum", "hyperparams": {"lr": 0.05, "beta": 0.9, "form": "ema"}}],
        },
    ),
    Preset(
        "adam_bias",
        "Adam: bias correction on/off",
        "Why Each Component Exists",
        (
            "Adam's moments start at zero; bias correction divides them by 1 - β^t, so the first step is "
            "lr · sign(g) in every coordinate.",
            "Without it the first steps are (1 - β1)/sqrt(1 - β2) ≈ 3.2 times larger: the run leaps before "
            "the second moment has warmed up.",
        ),
        {
            "surface": {"name": "bowl"},
            "steps": 150,
            "optimizers": [
                {"name": "adam", "hyperparams": {"lr": 0.05}},
                {"name": "adam", "hyperparams": {"lr": 0.05, "bias_correction": False}},
            ],
        },
    ),
    Preset(
        "lr_beta_sweep",
        "Sweep lr × β",
        "Momentum",
        (
            "Momentum on the narrow valley (condition number 100) for 32 × 32 pairs of (lr, β): the colour is "
            "the final loss, grey cells diverged.",
            "The stable region widens with β (the limit is 2(1+β)/((1-β)λmax)); click a cell to load it.",
        ),
        {
            "surface": {"name": "valley", "params": {"condition": 100.0}},
            "steps": 150,
            "optimizers": [{"name": "momentum", "hyperparams": {"lr": 0.05, "beta": 0.9, "form": "ema"}}],
        },
        sweep={
            "opt": 0,
            "n": 32,
            "x": {"name": "lr", "min": 0.001, "max": 10.0, "log": True},
            "y": {"name": "beta", "min": 0.0, "max": 0.99, "log": False},
        },
    ),
    Preset(
        "warmup_cosine",
        "Warmup + cosine",
        "Learning Rate Schedules",
        (
            "Linear warmup for the first 10% of the steps, then a cosine decay to zero (the lr panel), with "
            "noisy gradients (σ = 1).",
            "A large lr early moves fast; as the lr decays the noise's jitter shrinks with it and the run "
            "settles lower than a constant lr could.",
        ),
        {
            "surface": {"name": "valley"},
            "steps": 400,
            "noise": 1.0,
            "schedule": {"name": "warmup_cosine", "params": {}},
            "optimizers": [{"name": "momentum", "hyperparams": {"lr": 0.5, "beta": 0.9, "form": "ema"}}],
        },
    ),
    Preset(
        "saddle",
        "Saddle, no noise",
        "Saddle Points: The Real Problem",
        (
            "A double well: two minima at (±1, 0) and a saddle at the origin. From (0, 1.5) the gradient "
            "has no x component.",
            "Gradient descent slides into the saddle and stays: the gradient vanishes there although the "
            "loss still falls both ways along x.",
        ),
        {
            "surface": {"expression": DOUBLE_WELL},
            "start": [0.0, 1.5],
            "steps": 200,
            "optimizers": [_gd(0.05)],
        },
    ),
    Preset(
        "saddle_noise",
        "Saddle + noise",
        "Saddle Points: The Real Problem",
        (
            "The same saddle with gradient noise (σ = 0.3), as a mini-batch gives.",
            "The noise pushes the run off the ridge; the negative curvature then grows the push and the run "
            "escapes to a minimum.",
        ),
        {
            "surface": {"expression": DOUBLE_WELL},
            "start": [0.0, 1.5],
            "steps": 200,
            "noise": 0.3,
            "optimizers": [_gd(0.05)],
        },
    ),
    Preset(
        "sharp_flat",
        "Sharp vs flat minimum",
        "Sharp vs Flat Minima and Generalization",
        (
            "A sharp minimum (left) and a flat one (right), nearly equally deep; both runs start in the "
            "sharp basin, with gradient noise σ = 1.",
            "A small lr settles in the sharp minimum; an lr above its limit 2/λmax cannot stay there and the "
            "noise carries it to the flat one.",
        ),
        {
            "surface": {"name": "sharp_flat"},
            "steps": 300,
            "noise": 1.0,
            "optimizers": [_gd(0.01), _gd(0.1)],
        },
    ),
    Preset(
        "cliff",
        "Cliff, no clipping",
        "Gradient Clipping",
        (
            "A cliff: the loss drops by 4 over a band about 0.25 wide, where the slope reaches 16 against 0.3 "
            "for the bowl around it.",
            "One step on the cliff face multiplies that gradient by the lr: the run is thrown far past the "
            "cliff.",
        ),
        {"surface": {"expression": CLIFF}, "start": [-1.6, 1.2], "steps": 150, "optimizers": [_gd(0.1)]},
    ),
    Preset(
        "cliff_clip",
        "Cliff + clipping",
        "Gradient Clipping",
        (
            "The same cliff with the gradient clipped to global norm 1 (the rug under the gradient-norm "
            "curve marks the clipped steps).",
            "Clipping keeps the direction and caps the length: no step is longer than lr · 1, and the run "
            "walks down the cliff.",
        ),
        {
            "surface": {"expression": CLIFF},
            "start": [-1.6, 1.2],
            "steps": 150,
            "clip": {"kind": "norm", "max": 1.0},
            "optimizers": [_gd(0.1)],
        },
    ),
)


def sweep_request(preset: Preset) -> models.SweepRequest | None:
    """The sweep a preset runs (its optimizer and settings, its axes), validated; ``None`` if it has none."""
    if preset.sweep is None:
        return None
    req = preset.request
    body = {k: v for k, v in req.items() if k not in ("optimizers",)}
    opt = req["optimizers"][preset.sweep["opt"]]
    n = preset.sweep["n"]
    body.update(optimizer=opt, x={**preset.sweep["x"], "n": n}, y={**preset.sweep["y"], "n": n})
    return models.SweepRequest.model_validate(body)


@lru_cache(maxsize=1)
def presets() -> list[dict[str, Any]]:
    """Every preset as ``GET /api/presets`` sends it, each request validated by the API's own models.

    Returns:
        One dict per preset: ``id``, ``title``, ``section``, ``caption`` (two lines), ``request`` (the
        trajectory request, normalised by :class:`ravine.web.models.TrajectoryRequest`) and ``sweep``.

    Raises:
        ValueError: if a preset is not a request the API accepts (a bug in :data:`PRESETS`).
    """
    out = []
    for p in PRESETS:
        request = models.TrajectoryRequest.model_validate(dict(p.request))
        sweep_request(p)  # validated, so the page's sweep is one the server runs
        out.append(
            {
                "id": p.id,
                "title": p.title,
                "section": p.section,
                "caption": list(p.caption),
                "request": request.model_dump(mode="json"),
                "sweep": dict(p.sweep) if p.sweep is not None else None,
            }
        )
    return out


# ---------------------------------------------------------------------------------------------------
# "What you are seeing".

#: At most this many sentences are returned.
MAX_SENTENCES = 6
#: A run zig-zags when the offset along the sharpest direction changes sign on at least this fraction of
#: its first steps.
ZIGZAG_FLIPS = 0.8
#: A step is a cliff jump when it is this many times the run's first step and its gradient this many
#: times the gradient at the start (a descent run's gradient otherwise shrinks from its start).
CLIFF_RATIO = 5.0

#: ``limit(spec, lambda_max) -> {"name", "lr", "rule"}``: an optimizer's largest stable lr (the server's
#: ``ravine.web.app.stability_limit``).
LimitFn = Callable[[models.OptimizerSpec, "float | None"], Mapping[str, Any]]


def _num(v: float) -> str:
    """A number as a sentence shows it: three significant digits, no float noise."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e4 or a < 1e-3:
        return f"{v:.2e}"
    return f"{v:.3g}"


def _pt(p: Sequence[float]) -> str:
    return f"({_num(float(p[0]))}, {_num(float(p[1]))})"


def _array(values: Sequence[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


@dataclass
class _Run:
    label: str
    spec: models.OptimizerSpec
    pos: np.ndarray  # (steps + 1, 2), nan where not finite
    loss: np.ndarray
    grad_norm: np.ndarray
    lr: np.ndarray
    clipped: list[int]
    diverged_at: int | None
    steps_to_tol: int | None
    end: str

    @property
    def last(self) -> int:
        """The index of the last finite position."""
        finite = np.flatnonzero(np.isfinite(self.pos).all(axis=1))
        return int(finite[-1]) if finite.size else 0


class _Curvature:
    """The surface's exact Hessians at the points the sentences look at: computed in one batch, then kept."""

    def __init__(self, surface: Any):
        self.surface = surface
        self._eigs: dict[tuple[float, float], tuple[np.ndarray, np.ndarray] | None] = {}

    def prefetch(self, points: Sequence[Sequence[float]]) -> None:
        """Eigen-decompose the Hessians at ``points`` (one batched call for those not already known)."""
        keys = list(dict.fromkeys((float(p[0]), float(p[1])) for p in points))
        keys = [k for k in keys if k not in self._eigs]
        if not keys:
            return
        H = self.surface.hessian(torch.tensor(keys, dtype=torch.float64)).detach().to(torch.float64)
        finite = torch.isfinite(H).all(dim=(1, 2))
        evals, evecs = torch.linalg.eigh(0.5 * (H + H.transpose(1, 2)).nan_to_num(0.0, 0.0, 0.0))
        for i, key in enumerate(keys):
            self._eigs[key] = (evals[i].numpy(), evecs[i].numpy()) if bool(finite[i]) else None

    def eig(self, point: Sequence[float]) -> tuple[np.ndarray, np.ndarray] | None:
        """Eigenvalues (ascending) and unit eigenvectors (columns) of the exact Hessian at ``point``."""
        key = (float(point[0]), float(point[1]))
        if key not in self._eigs:
            self.prefetch([key])
        return self._eigs[key]


def _hp(spec: models.OptimizerSpec) -> dict[str, Any]:
    return {**ro.get(spec.name).hyperparams, **spec.hyperparams}


def _diverged(run: _Run, curv: _Curvature, limit: LimitFn) -> str:
    k = run.diverged_at
    lr = float(np.nanmax(run.lr[: max(1, k or 1)]))
    eig = curv.eig(run.pos[0])
    said = f"{run.label} diverged at step {k}"
    if eig is None or eig[0][-1] <= 0:
        return said
    lim = limit(run.spec, float(eig[0][-1]))
    if lim.get("lr") is None:
        return f"{said} ({lim['rule']})"
    L = float(lim["lr"])
    return f"{said}: lr = {_num(lr)} is {lr / L:.2g}× its stability limit {_num(L)} ({lim['rule']}) at the start"


def _stalled(run: _Run, curv: _Curvature, noise: float) -> str | None:
    end = run.pos[run.last]
    if run.end == "saddle":
        eig = curv.eig(end)
        lam = ""
        if eig is not None:
            lam = f": the gradient vanished, but the curvature is λ = {_num(eig[0][0])} < 0 < {_num(eig[0][1])}"
        push = "; without gradient noise nothing pushes it off" if noise == 0 else ""
        return f"{run.label} stalled at a saddle at {_pt(end)}{lam}{push}"
    if run.end == "plateau":
        return f"{run.label} stalled on a plateau at {_pt(end)}: gradient and curvature both vanish there"
    if run.end == "maximum":
        return f"{run.label} stalled at a maximum at {_pt(end)}"
    return None


def _cliff(run: _Run, clip: models.ClipSpec | None, quiet: bool) -> str | None:
    steps = np.linalg.norm(np.diff(run.pos[: run.last + 1], axis=0), axis=1)
    g = run.grad_norm[: len(steps)]
    if steps.size < 5 or not np.isfinite(g).all():
        return None
    if run.clipped and clip is not None:
        bound = "norm" if clip.kind == "norm" else "each coordinate"
        return (
            f"clipping rescaled {len(run.clipped)} of {run.label}'s {len(steps)} gradients to {bound} ≤ "
            f"{_num(clip.max)}: the largest, |∇f| = {_num(float(g.max()))}, moved it only "
            f"{_num(float(steps[int(g.argmax())]))}"
        )
    k = int(steps.argmax())
    jump = k > 0 and steps[0] > 0 and g[0] > 0 and g[k] > CLIFF_RATIO * g[0] and steps[k] > CLIFF_RATIO * steps[0]
    if quiet and jump:
        return (
            f"{run.label} hit a cliff at step {k}: |∇f| = {_num(float(g[k]))}, {g[k] / g[0]:.2g}× its value at the "
            f"start, threw it {_num(float(steps[k]))} in one step ({steps[k] / steps[0]:.2g}× its first step)"
        )
    return None


def _first_step(run: _Run, curv: _Curvature) -> str | None:
    """Adaptive optimizers: a first step of the same size in each coordinate, whatever the gradient."""
    if len(run.pos) < 2 or 0 in run.clipped or not np.isfinite(run.pos[:2]).all() or not run.lr[0] > 0:
        return None
    g = curv.surface.grad(torch.tensor(run.pos[0], dtype=torch.float64)).detach().numpy()
    d = np.abs(run.pos[1] - run.pos[0]) / run.lr[0]
    if min(abs(g[0]), abs(g[1])) < 1e-9 or min(d) <= 0:
        return None
    g_ratio = max(abs(g[0]), abs(g[1])) / min(abs(g[0]), abs(g[1]))
    if g_ratio < 1.25 or max(d) / min(d) > 1.05:
        return None
    said = (
        f"{run.label}'s first step is {_num(float(d.mean()))} × lr in each coordinate (|Δx| = "
        f"{_num(float(abs(run.pos[1, 0] - run.pos[0, 0])))}, |Δy| = {_num(float(abs(run.pos[1, 1] - run.pos[0, 1])))}"
        f"): it moves diagonally, not down the gradient, whose coordinates differ {g_ratio:.2g}×"
    )
    hp = _hp(run.spec)
    if run.spec.name in ("adam", "adamw", "adam_l2") and hp.get("bias_correction") is False:
        b1, b2 = float(hp["b1"]), float(hp["b2"])
        said += f"; without bias correction m/√v starts at (1 − β1)/√(1 − β2) = {_num((1 - b1) / math.sqrt(1 - b2))}"
    return said


def _zigzag(run: _Run, curv: _Curvature, limit: LimitFn) -> str | None:
    """Gradient-descent-like runs: the offset along the sharpest direction flips sign each step, or never."""
    if run.end not in ("minimum", "moving"):
        return None
    eig = curv.eig(run.pos[run.last])
    if eig is None or eig[0][-1] <= 0:
        return None
    lam, v = float(eig[0][-1]), eig[1][:, -1]
    lim = limit(run.spec, lam)
    if lim.get("lr") is None:
        return None
    n = min(run.last, 30)
    proj = (run.pos[: n + 1] - run.pos[run.last]) @ v
    scale = np.abs(proj).max()
    keep = np.abs(proj) > 1e-6 * scale if scale > 0 else np.zeros_like(proj, dtype=bool)
    proj = proj[keep]
    if proj.size < 5:
        return None
    flips = float(np.mean(np.sign(proj[1:]) != np.sign(proj[:-1])))
    lr = float(run.lr[0])
    x, cap = lr * lam, float(lim["lr"]) * lam
    if flips >= ZIGZAG_FLIPS:
        if x > cap:  # unstable: only something else (clipping) bounds its steps
            clipped = f"; {len(run.clipped)} of its {len(run.lr)} steps were clipped" if run.clipped else ""
            return (f"{run.label} zig-zags across the valley: lr × λmax = {_num(x)}, above its limit {_num(cap)}"
                    f"{clipped}")
        near = "close to" if x >= 0.8 * cap else "below"
        return f"{run.label} zig-zags across the valley: lr × λmax = {_num(x)}, {near} its limit {_num(cap)}"
    if flips == 0 and run.spec.name == "gd" and x < 1:
        lam_min = float(eig[0][0])
        slow = (
            f"; along the flattest direction the distance shrinks by 1 − lr λmin = {_num(1 - lr * lam_min)} a step"
            if 0 < lam_min < lam
            else ""
        )
        return f"{run.label} walks straight down without overshooting: lr × λmax = {_num(x)} < 1{slow}"
    if run.spec.name != "gd":
        return (
            f"{run.label}: lr × λmax = {_num(x)}, {x / cap:.0%} of its limit {_num(cap)}; its offset across the "
            f"valley changes sign on {flips:.0%} of its first {proj.size} steps"
        )
    return None


def _tail(run: _Run) -> np.ndarray:
    """Where a run ended up: the mean of its last tenth of positions (under noise it jitters around a point)."""
    pos = run.pos[: run.last + 1]
    return pos[-max(1, len(pos) // 10) :].mean(axis=0)


def _basin(curv: _Curvature, point: np.ndarray) -> float | None:
    """The largest Hessian eigenvalue at ``point`` if the Hessian is positive definite there (a basin), else None."""
    eig = curv.eig(point)
    return float(eig[0][-1]) if eig is not None and eig[0][0] > 0 else None


def _escaped(run: _Run, curv: _Curvature, noise: float) -> str | None:
    """A noisy run that crossed a region of negative curvature near a critical point and ended in a basin.

    Only the points whose gradient is at most half the start's are candidates; their Hessians are computed
    in one batch.
    """
    if run.end in ("saddle", "plateau", "maximum", "diverged") or run.last < 10:
        return None
    end = _tail(run)
    if _basin(curv, end) is None:
        return None
    pos = run.pos[: run.last + 1]
    g = np.linalg.norm(curv.surface.grad(torch.tensor(pos, dtype=torch.float64)).detach().numpy(), axis=1)
    near = np.flatnonzero(g <= 0.5 * g[0])
    near = near[near > 0]
    if near.size == 0:
        return None
    H = curv.surface.hessian(torch.tensor(pos[near], dtype=torch.float64)).detach().numpy()
    lam = np.linalg.eigvalsh(0.5 * (H + np.swapaxes(H, 1, 2)))[:, 0]
    negative = np.flatnonzero(lam < 0)
    if negative.size == 0:
        return None
    j = int(negative[g[near[negative]].argmin()])
    k, lam_min = int(near[j]), lam
    why = f", with gradient noise σ = {_num(noise)}" if noise > 0 else ""
    return (
        f"{run.label} crossed a region of negative curvature (λmin = {_num(float(lam_min[j]))} at {_pt(pos[k])}, "
        f"step {k}) without stalling and ended in the basin near {_pt(end)}{why}"
    )


def _sharp_flat(runs: list[_Run], curv: _Curvature, limit: LimitFn) -> str | None:
    """Two runs that ended in different basins of clearly different sharpness."""
    ends = []
    for r in runs:
        if r.end in ("diverged", "saddle", "maximum", "plateau"):
            continue
        lam = _basin(curv, _tail(r))
        if lam is not None:
            ends.append((lam, r))
    if len(ends) < 2:
        return None
    (lam_flat, flat), (lam_sharp, sharp) = min(ends, key=lambda e: e[0]), max(ends, key=lambda e: e[0])
    if lam_sharp < 3 * lam_flat or np.linalg.norm(_tail(flat) - _tail(sharp)) < 0.1:
        return None
    said = (
        f"{sharp.label} settled in a sharp minimum near {_pt(_tail(sharp))} (λmax = {_num(lam_sharp)}), "
        f"{flat.label} in a flat one near {_pt(_tail(flat))} (λmax = {_num(lam_flat)}, {lam_sharp / lam_flat:.2g}× "
        "flatter)"
    )
    lim = limit(flat.spec, lam_sharp).get("lr")
    lr = float(flat.lr[0])
    if lim is not None and lr > lim:
        said += (
            f"; {flat.label}'s lr = {_num(lr)} is above the sharp minimum's limit {_num(float(lim))}: "
            "it cannot stay there"
        )
    return said


def _race(runs: list[_Run], steps: int, tol: float) -> str | None:
    """Several runs, some of which reached the tolerance: which, and when."""
    if len(runs) < 2 or not any(r.steps_to_tol is not None for r in runs):
        return None
    done = sorted((r for r in runs if r.steps_to_tol is not None), key=lambda r: r.steps_to_tol)
    rest = [r.label for r in runs if r.steps_to_tol is None]
    said = "within the tolerance " + _num(tol) + ": " + ", ".join(f"{r.label} at step {r.steps_to_tol}" for r in done)
    if rest:
        said += f"; {', '.join(rest)} not in {steps} steps"
    return said


def _schedule(req: models.TrajectoryRequest, runs: list[_Run]) -> str | None:
    if req.schedule is None or not runs:
        return None
    lr = runs[0].lr
    if not np.isfinite(lr).all() or lr.size == 0:
        return None
    k = int(lr.argmax())
    return (
        f"the learning rate follows {req.schedule.name.replace('_', ' ')} ({runs[0].label}): from {_num(float(lr[0]))} "
        f"up to {_num(float(lr[k]))} at step {k}, down to {_num(float(lr[-1]))} at the end"
    )


def seeing(req: models.TrajectoryRequest, result: Mapping[str, Any], limit: LimitFn) -> list[str]:
    """What the runs of ``result`` show, in at most :data:`MAX_SENTENCES` sentences, most important first.

    For each run, in this order: divergence (the step, and the lr against the optimizer's stability limit
    at the start); a stall at a saddle, plateau or maximum (the server's end-point classification, with
    the Hessian's eigenvalues there); a cliff (one step far longer than the run's first, on a gradient far
    larger than at its start) or the clipping that prevented it; an adaptive first step (the same size in
    each coordinate, whatever the gradient's direction; without Adam's bias correction, the closed form
    ``(1 - b1) / sqrt(1 - b2)`` of its size); a zig-zag (the offset along the sharpest direction at the end
    point changes sign each step: ``lr × λmax`` against the limit) or a straight walk (gradient descent
    with ``lr × λmax < 1``); with gradient noise, an escape from a saddle. Then, over all runs: two runs
    settled in minima of different sharpness; which runs reached the tolerance and at which step; the
    learning-rate schedule.
    Zig-zags, first steps and cliff jumps are only read from runs without gradient noise, where they are
    the optimizer's, not the noise's.

    Args:
        req: the trajectory request that was run.
        result: its response (the ``TrajectoryOut`` layout: runs with ``x``, ``y``, ``loss``, ``grad_norm``,
            ``lr``, ``clipped_steps``, ``diverged_at``, ``steps_to_tol``, ``end``).
        limit: an optimizer's largest stable lr at a curvature, ``limit(spec, lambda_max)`` returning
            ``{"name", "lr", "rule"}`` (the server's ``stability_limit``).

    Returns:
        The sentences (possibly none), each with numbers from the runs.
    """
    curv = _Curvature(req.surface.surface)
    runs = [
        _Run(
            label=r["label"],
            spec=spec,
            pos=np.stack([_array(r["x"]), _array(r["y"])], axis=1),
            loss=_array(r["loss"]),
            grad_norm=_array(r["grad_norm"]),
            lr=_array(r["lr"]),
            clipped=list(r["clipped_steps"]),
            diverged_at=r["diverged_at"],
            steps_to_tol=r["steps_to_tol"],
            end=r["end"],
        )
        for spec, r in zip(req.optimizers, result["runs"])
    ]
    quiet = req.noise == 0
    # the points every run is looked at: where it started, where it stopped, where it ended up
    curv.prefetch([p for r in runs for p in (r.pos[0], r.pos[r.last], _tail(r)) if np.isfinite(p).all()])
    out: list[str] = []
    for run in runs:
        if run.diverged_at is not None:
            out.append(_diverged(run, curv, limit))
            continue
        found = [_stalled(run, curv, req.noise), _cliff(run, req.clip, quiet)]
        if quiet:
            found += [_first_step(run, curv), _zigzag(run, curv, limit)]
        else:  # an escape from a saddle is the noise's doing
            found.append(_escaped(run, curv, req.noise))
        out.extend(s for s in found if s)
    overall = (_sharp_flat(runs, curv, limit), _race(runs, req.steps, req.tol), _schedule(req, runs))
    out.extend(s for s in overall if s)
    return out[:MAX_SENTENCES]


def with_seeing(req: models.TrajectoryRequest, result: dict[str, Any], limit: LimitFn) -> dict[str, Any]:
    """``result`` with its ``seeing`` sentences (:func:`seeing`) attached; returns the same dict.

    Args:
        req: the trajectory request that was run.
        result: its response in the ``TrajectoryOut`` layout (modified in place).
        limit: the server's ``stability_limit``.

    Returns:
        ``result``.
    """
    result["seeing"] = seeing(req, result, limit)
    return result


# ---------------------------------------------------------------------------------------------------
# Export: the view as a captioned PNG, and the Python that saves the same figure.

#: Points per side of the exported contour grid.
EXPORT_GRID = 160


def settings_lines(req: models.TrajectoryRequest) -> list[str]:
    """The settings of a view, as the exported figure lists them.

    Args:
        req: the trajectory request of the view.

    Returns:
        Short ``"name: value"`` texts: surface, start, steps, schedule, clipping, noise, and each optimizer.
    """
    s = req.surface
    surface = f"f = {s.expression}" if s.expression and s.expression.strip() else s.name
    if s.params:
        surface += " (" + ", ".join(f"{k} = {_num(v)}" for k, v in s.params.items()) + ")"
    start = tuple(req.start) if req.start is not None else tuple(s.surface.start)
    out = [f"surface {surface}", f"start {_pt(start)}", f"{req.steps} steps"]
    if req.schedule is not None:
        out.append(f"schedule {req.schedule.name}")
    if req.clip is not None:
        out.append(f"clip by {req.clip.kind} at {_num(req.clip.max)}")
    if req.noise:
        out.append(f"noise σ = {_num(req.noise)} (seed {req.seed})")
    for spec in req.optimizers:
        hp = ", ".join(f"{k} = {_num(v) if isinstance(v, float) else v}" for k, v in spec.hyperparams.items())
        out.append(f"{spec.label or spec.name}: {spec.name}({hp})")
    return out


def export_figure(req: models.TrajectoryRequest, result: Mapping[str, Any], colors: Sequence[str] = ()) -> Any:
    """The view of ``req`` with its computed ``result`` as a captioned figure (``ravine.plots.playground``).

    Args:
        req: the trajectory request.
        result: its response (``TrajectoryOut`` layout, with ``seeing``).
        colors: each run's colour (default: the page's palette in order).

    Returns:
        A matplotlib ``Figure``.
    """
    from ravine.plots import playground

    surface = req.surface.surface
    title = f"f(x, y) = {surface.expression}" if surface.expression else surface.name
    return playground.playground_figure(
        surface.grid(n=EXPORT_GRID),
        result["runs"],
        title=title,
        domain=surface.domain,
        settings=settings_lines(req),
        caption=result.get("seeing", []),
        colors=colors,
        minima=[(m.x, m.y) for m in surface.minima],
        global_min=result.get("global_min"),
    )


def png_bytes(fig: Any) -> bytes:
    """``fig`` as PNG bytes at ``ravine.plots.playground.DPI``.

    Args:
        fig: a figure of :func:`export_figure`.

    Returns:
        The PNG file's bytes.
    """
    import io

    from ravine.plots import playground

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=playground.DPI)
    return buf.getvalue()


def snippet_figure(req: models.TrajectoryRequest, colors: Sequence[str] = (), caption: Sequence[str] = ()) -> str:
    """Python that draws the run ``tr`` of a snippet as the page's captioned figure and saves it.

    The lines follow a snippet that defined ``surface``, ``labels`` and ``tr`` (``ravine.simulate.run``);
    they call the same :func:`ravine.plots.playground.playground_figure` as ``POST /api/export/png``.

    Args:
        req: the trajectory request the snippet reproduces.
        colors: each run's colour (default: the page's palette in order).
        caption: the "what you are seeing" sentences of the run, as the server computed them.

    Returns:
        Python source (no imports beyond ``ravine.plots.playground``).
    """
    surface = req.surface.surface
    title = f"f(x, y) = {surface.expression}" if surface.expression else surface.name
    return f'''
from ravine.plots.playground import DPI, playground_figure, runs_from_trajectories

settings = {settings_lines(req)!r}
caption = {list(caption)!r}  # what you are seeing: computed by the server from this run
fig = playground_figure(
    surface.grid(n={EXPORT_GRID}),
    runs_from_trajectories(tr, labels),
    title={title!r},
    domain=surface.domain,
    settings=settings,
    caption=caption,
    colors={list(colors)!r},
    minima=[(m.x, m.y) for m in surface.minima],
    global_min=surface.global_minimum.value if surface.global_minimum is not None else None,
)
fig.savefig("ravine-playground.png", dpi=DPI)
print("saved ravine-playground.png")
'''
