"""Request and response models of the playground's JSON API (pydantic v2).

Every request body is parsed by one of these models before anything is computed. The bounds are
the server's protection against one user stalling it, and the page's source of truth for its
controls:

- ``steps`` <= ``MAX_STEPS`` (10000), ``optimizers`` <= ``MAX_OPTIMIZERS`` (16), a sweep at most
  ``MAX_SWEEP_SIDE`` x ``MAX_SWEEP_SIDE`` (128 x 128) cells, expressions at most
  ``MAX_EXPRESSION_LENGTH`` (500) characters;
- total work is capped: ``optimizers x steps <= MAX_TRAJECTORY_WORK`` and
  ``sweep cells x steps <= MAX_SWEEP_WORK`` (row-steps of the batched simulator);
- every float is finite (``NaN``/``inf`` in a request is a 422), learning rates are > 0, betas in
  [0, 1), eps > 0, weight decay >= 0 (see ``HYPERPARAMS``).

A request that breaks a bound gets HTTP 422 whose ``detail`` lists each error with its ``loc`` (the
path of the field, e.g. ``["body", "optimizers", 0, "hyperparams", "lr"]``) and a message that
names the field, the value received and what is allowed.

Responses never contain ``NaN`` or ``inf``: a non-finite number is sent as ``null`` and the run (or
sweep cell) carries a ``diverged`` flag with the step where it happened.

Expressions typed by a user are parsed by ``ravine.surfaces.parse`` (a whitelist parser); nothing
here evaluates user text as code.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

MAX_STEPS = 10_000
MAX_OPTIMIZERS = 16
MAX_SWEEP_SIDE = 128
MAX_EXPRESSION_LENGTH = 500
MAX_GRID = 300
#: optimizers x steps of one trajectory request (16 optimizers x 10000 steps fits).
MAX_TRAJECTORY_WORK = MAX_OPTIMIZERS * MAX_STEPS
#: sweep cells x steps of one sweep request (e.g. 128 x 128 cells x 256 steps, 64 x 64 x 1024).
MAX_SWEEP_WORK = 128 * 128 * 256

Finite = Annotated[float, Field(allow_inf_nan=False)]
Point = tuple[Finite, Finite]


class _Strict(BaseModel):
    """Base: unknown fields are an error (a typo must not be silently ignored); floats finite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# ---------------------------------------------------------------------------------------------------
# Hyperparameters the page can set, with validation bounds and slider ranges.


@dataclass(frozen=True)
class HyperparamInfo:
    """How one optimizer hyperparameter is validated and shown.

    ``lo``/``hi`` are the validation bounds (``lo_open``/``hi_open``: strict inequality);
    ``ui_min``/``ui_max`` the slider's range (``log``: the slider moves in log10 space).
    """

    name: str
    kind: Literal["float", "bool", "choice"]
    help: str
    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    ui_min: float | None = None
    ui_max: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[str, ...] = ()

    def allowed(self) -> str:
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        left = "(" if self.lo_open else "["
        right = ")" if self.hi_open else "]"
        return f"a finite number in {left}{_fmt(self.lo)}, {_fmt(self.hi)}{right}"

    def check(self, value: Any) -> Any:
        """Return ``value`` coerced to this hyperparameter's type, or raise ValueError (message: what is allowed)."""
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"got {value!r}; allowed: {self.allowed()}")
            return value
        if self.kind == "choice":
            if value not in self.choices:
                raise ValueError(f"got {value!r}; allowed: {self.allowed()}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"got {value!r}; allowed: {self.allowed()}")
        v = float(value)
        ok = math.isfinite(v)
        ok = ok and (v > self.lo if self.lo_open else v >= self.lo)
        ok = ok and (v < self.hi if self.hi_open else v <= self.hi)
        if not ok:
            raise ValueError(f"got {value!r}; allowed: {self.allowed()}")
        return v


def _fmt(v: float) -> str:
    return "inf" if v == math.inf else "-inf" if v == -math.inf else f"{v:g}"


_BETA = dict(kind="float", lo=0.0, hi=1.0, hi_open=True, ui_min=0.0, ui_max=0.999, step=0.001)

#: Every optimizer hyperparameter the playground exposes. A named optimizer's hyperparameter that
#: is not in this table (e.g. a ``mask``) keeps its library default and cannot be set from the page.
HYPERPARAMS: dict[str, HyperparamInfo] = {
    h.name: h
    for h in [
        HyperparamInfo(
            "lr", "float", "learning rate eta", lo=0.0, hi=1000.0, lo_open=True, ui_min=1e-5, ui_max=10.0, log=True
        ),
        HyperparamInfo("momentum", help="momentum coefficient (torch SGD form: v = mu v + g)", **_BETA),
        HyperparamInfo("beta", help="EMA coefficient beta of the running average", **_BETA),
        HyperparamInfo("b1", help="beta1: EMA coefficient of the first moment", **_BETA),
        HyperparamInfo(
            "b2",
            "float",
            "beta2: EMA coefficient of the second moment",
            lo=0.0,
            hi=1.0,
            hi_open=True,
            ui_min=0.8,
            ui_max=0.9999,
            step=0.0001,
        ),
        HyperparamInfo(
            "eps",
            "float",
            "epsilon added to the denominator",
            lo=0.0,
            hi=10.0,
            lo_open=True,
            ui_min=1e-12,
            ui_max=1.0,
            log=True,
        ),
        HyperparamInfo(
            "weight_decay", "float", "weight decay coefficient", lo=0.0, hi=100.0, ui_min=0.0, ui_max=1.0, step=0.001
        ),
        HyperparamInfo(
            "dampening", "float", "dampening of the momentum buffer", lo=0.0, hi=1.0, ui_min=0.0, ui_max=1.0, step=0.01
        ),
        HyperparamInfo(
            "initial_accumulator_value",
            "float",
            "initial value of the squared-gradient sum",
            lo=0.0,
            hi=100.0,
            ui_min=0.0,
            ui_max=1.0,
            step=0.01,
        ),
        HyperparamInfo(
            "lr_decay",
            "float",
            "Adagrad's lr decay: lr / (1 + (t - 1) lr_decay)",
            lo=0.0,
            hi=100.0,
            ui_min=0.0,
            ui_max=0.1,
            step=0.001,
        ),
        HyperparamInfo("nesterov", "bool", "Nesterov look-ahead momentum"),
        HyperparamInfo("bias_correction", "bool", "divide the moments by 1 - beta^t"),
        HyperparamInfo("amsgrad", "bool", "use the running maximum of the second moment"),
        HyperparamInfo("centered", "bool", "subtract the squared mean gradient (centred RMSProp)"),
        HyperparamInfo(
            "form", "choice", "momentum form: EMA (1-beta) g or heavy ball g", choices=("ema", "heavy_ball")
        ),
        HyperparamInfo(
            "decay_convention",
            "choice",
            "weight decay scaled by lr (torch) or not (decoupled)",
            choices=("torch", "decoupled"),
        ),
    ]
}


def optimizer_names() -> list[str]:
    import ravine.optim as ro

    return list(ro.names())


def settable_hyperparams(name: str) -> list[str]:
    """The hyperparameters of named optimizer ``name`` that the playground can set, in library order."""
    import ravine.optim as ro

    return [h for h in ro.hyperparam_names(name) if h in HYPERPARAMS]


# ---------------------------------------------------------------------------------------------------
# Requests.

_POSITION = re.compile(r"position\s+(\d+)")


def expression_error_position(message: str) -> int | None:
    """The 0-based character position a parser error message points at (``"... at position N ..."``)."""
    m = _POSITION.search(message)
    return int(m.group(1)) if m else None


class SurfaceSpec(_Strict):
    """A built-in surface by ``name`` (with optional keyword ``params``), or a typed ``expression`` in x, y.

    When ``expression`` is given it wins over ``name``. The expression is parsed by
    ``ravine.surfaces.parse`` (whitelist of operators and functions; never evaluated as code).
    """

    name: str = Field("bowl", max_length=40, description="built-in surface name (see GET /api/surfaces)")
    params: dict[str, Finite] = Field(
        default_factory=dict, max_length=8, description="keyword parameters of the built-in surface"
    )
    expression: str | None = Field(
        None,
        max_length=MAX_EXPRESSION_LENGTH,
        description="f(x, y) in the parser's whitelist syntax, e.g. 'x**2 + 10*y**2'",
    )
    domain: tuple[Point, Point] | None = Field(
        None, description="((xmin, xmax), (ymin, ymax)) of an expression's box; default ((-2, 2), (-2, 2))"
    )

    _surface: Any = PrivateAttr(None)

    @model_validator(mode="after")
    def _build(self) -> SurfaceSpec:
        import ravine.surfaces as rs

        if self.domain is not None:
            (x0, x1), (y0, y1) = self.domain
            if not (x0 < x1 and y0 < y1) or max(abs(x0), abs(x1), abs(y0), abs(y1)) > 1e4:
                raise ValueError(
                    f"surface.domain {self.domain!r} is invalid; allowed: ((xmin, xmax), (ymin, ymax)) with "
                    "min < max and |bounds| <= 1e4"
                )
        if self.expression is not None and self.expression.strip():
            try:
                if self.domain is not None:
                    self._surface = rs.parse(self.expression, domain=self.domain)
                else:
                    self._surface = rs.parse(self.expression)
            except ValueError as exc:
                raise ValueError(f"surface.expression {self.expression!r} is invalid: {exc}") from None
            return self
        if self.domain is not None:
            raise ValueError("surface.domain can only be given with surface.expression (built-ins have their own)")
        names = rs.names()
        if self.name not in names:
            raise ValueError(f"surface.name {self.name!r} is unknown; allowed: {', '.join(names)}")
        try:
            self._surface = rs.get(self.name, **self.params)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"surface.params {self.params!r} are invalid for {self.name!r}: {exc}") from None
        return self

    @property
    def surface(self) -> Any:
        """The ``ravine.surfaces.Surface`` this spec describes (built once, while validating)."""
        return self._surface


class OptimizerSpec(_Strict):
    """One optimizer: a named optimizer of ``ravine.optim`` and the hyperparameters it overrides."""

    name: str = Field(..., max_length=40, description="named optimizer (see GET /api/optimizers)")
    label: str | None = Field(None, max_length=60, description="legend label; default: the name")
    hyperparams: dict[str, float | bool | str] = Field(default_factory=dict, max_length=16)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        names = optimizer_names()
        if v not in names:
            raise ValueError(f"optimizer name {v!r} is unknown; allowed: {', '.join(names)}")
        return v

    @model_validator(mode="after")
    def _check_hyperparams(self) -> OptimizerSpec:
        allowed = settable_hyperparams(self.name)
        for key, value in list(self.hyperparams.items()):
            if key not in allowed:
                raise ValueError(
                    f"hyperparams.{key} is not a hyperparameter of {self.name!r}; allowed: {', '.join(allowed)}"
                )
            try:
                self.hyperparams[key] = HYPERPARAMS[key].check(value)
            except ValueError as exc:
                raise ValueError(f"hyperparams.{key} of {self.name!r}: {exc}") from None
        return self

    def to_sim(self) -> dict[str, Any]:
        """The spec as ``ravine.simulate.run`` takes it: ``{"name": ..., **hyperparams}``.

        Without ``lr`` the simulator uses the surface's suggested learning rate (``Surface.default_lr``).
        """
        return {"name": self.name, **self.hyperparams}


#: Parameters the server fills in when a schedule request leaves them out, as functions of the run's
#: ``steps``. ``peak``/``value`` are irrelevant to the run (the simulator uses ``lr * s(t) / peak``).
SCHEDULE_AUTO: dict[str, tuple[str, Any]] = {
    "peak": ("1 (only the shape matters: lr_t = lr * s(t) / peak)", lambda n: 1.0),
    "value": ("1 (only the shape matters)", lambda n: 1.0),
    "total_steps": ("the run's steps", lambda n: n),
    "warmup_steps": ("10% of the steps", lambda n: max(1, round(0.1 * n))),
    "stable_steps": ("70% of the steps", lambda n: max(0, round(0.7 * n))),
    "decay_steps": ("the steps left after warmup and stable", None),
    "gamma": ("0.99", lambda n: 0.99),
}


def schedule_auto(name: str, params: dict[str, Any], steps: int) -> dict[str, Any]:
    """``params`` completed with the automatic values of :data:`SCHEDULE_AUTO` for schedule ``name``."""
    import ravine.schedules as rsch

    out = dict(params)
    for p in rsch.parameters(name):
        if p.name in out or not p.required or p.name not in SCHEDULE_AUTO:
            continue
        fn = SCHEDULE_AUTO[p.name][1]
        if fn is not None:
            out[p.name] = fn(steps)
    if name == "wsd" and "decay_steps" not in out:
        w = int(out.get("warmup_steps", 0))
        st = int(out.get("stable_steps", 0))
        out["decay_steps"] = max(0, steps - w - st)
    return out


class ScheduleSpec(_Strict):
    """A learning-rate schedule of ``ravine.schedules`` by name with its keyword parameters.

    The run's learning rate at step t is ``lr * s(t) / peak`` (see ``ravine.simulate``). Required
    parameters that are left out get automatic values derived from the run's steps (see
    ``GET /api/schedules``: each parameter's ``auto``).
    """

    name: str = Field(..., max_length=40, description="schedule name (see GET /api/schedules)")
    params: dict[str, int | Finite | bool | str] = Field(default_factory=dict, max_length=12)

    @model_validator(mode="after")
    def _check(self) -> ScheduleSpec:
        import ravine.schedules as rsch

        names = rsch.names()
        if self.name not in names:
            raise ValueError(f"schedule.name {self.name!r} is unknown; allowed: {', '.join(names)}")
        spec = {p.name: p for p in rsch.parameters(self.name)}
        for key, value in list(self.params.items()):
            p = spec.get(key)
            if p is None or p.kind == "ints":
                allowed = ", ".join(q.name for q in spec.values() if q.kind != "ints")
                raise ValueError(f"schedule.params.{key} is not a parameter of {self.name!r}; allowed: {allowed}")
            if p.kind == "int":
                if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) or value < 0:
                    raise ValueError(f"schedule.params.{key} must be a non-negative integer, got {value!r}")
                self.params[key] = int(value)
            elif p.kind == "float":
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"schedule.params.{key} must be a finite number, got {value!r}")
                self.params[key] = float(value)
            elif p.kind == "bool":
                if not isinstance(value, bool):
                    raise ValueError(f"schedule.params.{key} must be true or false, got {value!r}")
            elif p.choices and value not in p.choices:
                raise ValueError(
                    f"schedule.params.{key} must be one of {', '.join(map(repr, p.choices))}, got {value!r}"
                )
        return self

    def to_sim(self, steps: int) -> dict[str, Any]:
        """``{"name": ..., **params}`` for ``ravine.simulate`` with automatic values filled in."""
        return {"name": self.name, **schedule_auto(self.name, self.params, steps)}


class ClipSpec(_Strict):
    """Gradient clipping before the optimizer: by global norm (per run) or elementwise by value."""

    kind: Literal["norm", "value"] = Field(..., description="'norm': g * min(1, max/|g|); 'value': clamp(g, -max, max)")
    max: Finite = Field(..., gt=0.0, le=1e6, description="threshold (> 0)")

    def to_sim(self) -> dict[str, Any]:
        return {"kind": self.kind, "max": self.max}


class _RunCommon(_Strict):
    surface: SurfaceSpec = Field(default_factory=lambda: SurfaceSpec())
    start: Point | None = Field(None, description="start point (x, y); default: the surface's start")
    steps: int = Field(200, ge=1, le=MAX_STEPS, description=f"number of updates (1..{MAX_STEPS})")
    noise: Finite = Field(0.0, ge=0.0, le=1e3, description="std of Gaussian noise added to each gradient")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the gradient noise")
    tol: Finite = Field(1e-6, gt=0.0, le=1e6, description="converged when loss - global min <= tol")
    schedule: ScheduleSpec | None = None
    clip: ClipSpec | None = None
    batch_size: int | None = Field(
        None, ge=1, le=1_000_000, description="noise std is divided by sqrt(batch_size) (SGD emulation)"
    )

    @field_validator("start")
    @classmethod
    def _start_bounded(cls, v: Point | None) -> Point | None:
        if v is not None and (abs(v[0]) > 1e6 or abs(v[1]) > 1e6):
            raise ValueError(f"start {v!r} is too far out; allowed: |x|, |y| <= 1e6")
        return v


class TrajectoryRequest(_RunCommon):
    """Run several optimizers from one start point on one surface (``ravine.simulate.run``)."""

    optimizers: list[OptimizerSpec] = Field(..., min_length=1, max_length=MAX_OPTIMIZERS)

    @model_validator(mode="after")
    def _work(self) -> TrajectoryRequest:
        work = len(self.optimizers) * self.steps
        if work > MAX_TRAJECTORY_WORK:
            raise ValueError(
                f"optimizers x steps = {len(self.optimizers)} x {self.steps} = {work} exceeds the cap "
                f"{MAX_TRAJECTORY_WORK}; use fewer steps or optimizers"
            )
        return self


class AxisSpec(_Strict):
    """One sweep axis: hyperparameter ``name`` at ``n`` values from ``min`` to ``max`` (log-spaced if ``log``)."""

    name: str = Field(..., max_length=40)
    min: Finite
    max: Finite
    n: int = Field(32, ge=2, le=MAX_SWEEP_SIDE)
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> AxisSpec:
        info = HYPERPARAMS.get(self.name)
        if info is None or info.kind != "float":
            numeric = [h.name for h in HYPERPARAMS.values() if h.kind == "float"]
            raise ValueError(f"name {self.name!r} cannot be swept; allowed: {', '.join(numeric)}")
        if not self.min < self.max:
            raise ValueError(f"min {self.min!r} must be < max {self.max!r}")
        if self.log and self.min <= 0:
            raise ValueError(f"min {self.min!r} must be > 0 on a log axis")
        for end in ("min", "max"):
            try:
                info.check(getattr(self, end))
            except ValueError as exc:
                raise ValueError(f"{end} of {self.name}: {exc}") from None
        return self

    def values(self) -> list[float]:
        import numpy as np

        if self.log:
            v = np.logspace(math.log10(self.min), math.log10(self.max), self.n)
        else:
            v = np.linspace(self.min, self.max, self.n)
        return [float(x) for x in v]


class SweepRequest(_RunCommon):
    """A grid of (x, y) hyperparameter values for one optimizer (``ravine.simulate.sweep``)."""

    optimizer: OptimizerSpec
    x: AxisSpec
    y: AxisSpec

    @model_validator(mode="after")
    def _axes(self) -> SweepRequest:
        allowed = settable_hyperparams(self.optimizer.name)
        for axis in ("x", "y"):
            name = getattr(self, axis).name
            if name not in allowed:
                raise ValueError(
                    f"{axis}.name {name!r} is not a hyperparameter of {self.optimizer.name!r}; "
                    f"allowed: {', '.join(h for h in allowed if HYPERPARAMS[h].kind == 'float')}"
                )
        if self.x.name == self.y.name:
            raise ValueError(f"x.name and y.name must differ, both are {self.x.name!r}")
        cells = self.x.n * self.y.n
        if cells * self.steps > MAX_SWEEP_WORK:
            raise ValueError(
                f"cells x steps = {self.x.n} x {self.y.n} x {self.steps} = {cells * self.steps} exceeds the cap "
                f"{MAX_SWEEP_WORK}; use fewer cells or steps"
            )
        return self


class CurvatureRequest(_Strict):
    """The Hessian of a surface at one point."""

    surface: SurfaceSpec = Field(default_factory=lambda: SurfaceSpec())
    point: Point


class ExpressionCheck(_Strict):
    """An expression to validate (and, if valid, to grid for a contour)."""

    expression: str = Field(..., max_length=MAX_EXPRESSION_LENGTH)
    domain: tuple[Point, Point] | None = None
    grid: int = Field(0, ge=0, le=MAX_GRID, description="0: no grid; else an n x n contour grid")


class GridRequest(_Strict):
    surface: SurfaceSpec = Field(default_factory=lambda: SurfaceSpec())
    n: int = Field(120, ge=10, le=MAX_GRID)


# ---------------------------------------------------------------------------------------------------
# Responses (documented in the OpenAPI schema; non-finite numbers are null).

MaybeFloat = float | None


class MinimumOut(BaseModel):
    x: float
    y: float
    value: float
    kind: str


class GridOut(BaseModel):
    x: list[float]
    y: list[float]
    z: list[list[MaybeFloat]] = Field(..., description="z[i][j] = f(x[j], y[i]); null where not finite")
    zmin: MaybeFloat
    zmax: MaybeFloat


class SurfaceOut(BaseModel):
    name: str
    description: str
    expression: str | None
    domain: tuple[tuple[float, float], tuple[float, float]]
    start: tuple[float, float]
    minima: list[MinimumOut]
    params: dict[str, float]
    param_ranges: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="allowed [min, max] of each parameter"
    )
    saddles: list[tuple[float, float]] = []
    suggested_lr: dict[str, float] = Field(
        default_factory=dict, description="per optimizer name: the learning rate the simulator uses by default"
    )
    grid: GridOut | None = None


class ExpressionCheckOut(BaseModel):
    ok: bool
    error: str | None = None
    position: int | None = Field(None, description="0-based character position of the error")
    surface: SurfaceOut | None = None


class RunOut(BaseModel):
    label: str
    name: str
    hyperparams: dict[str, float | bool | str]
    x: list[MaybeFloat] = Field(..., description="x of positions 0..steps")
    y: list[MaybeFloat]
    loss: list[MaybeFloat] = Field(..., description="loss at positions 0..steps")
    grad_norm: list[MaybeFloat] = Field(..., description="norm of the gradient used at steps 0..steps-1 (pre-clip)")
    lr: list[MaybeFloat] = Field(..., description="learning rate used at steps 0..steps-1")
    clipped_steps: list[int] = Field(..., description="steps where the gradient was clipped")
    diverged: bool
    diverged_at: int | None = Field(None, description="first step whose position/loss was not finite")
    steps_to_tol: int | None = None
    final_loss: MaybeFloat = None


class TrajectoryOut(BaseModel):
    surface: str
    start: tuple[float, float]
    steps: int
    global_min: MaybeFloat
    runs: list[RunOut]
    simulated_runs: int = Field(..., description="runs simulated for this request (the others were cached)")
    elapsed_ms: float


class SweepOut(BaseModel):
    optimizer: str
    x_name: str
    x_values: list[float]
    y_name: str
    y_values: list[float]
    final_loss: list[list[MaybeFloat]] = Field(..., description="[y][x]; null where diverged")
    steps_to_tol: list[list[int | None]] = Field(..., description="[y][x]; null where never converged")
    diverged_at: list[list[int | None]] = Field(..., description="[y][x]; null where it did not diverge")
    steps: int
    global_min: MaybeFloat
    elapsed_ms: float


class CurvatureOut(BaseModel):
    point: tuple[float, float]
    value: MaybeFloat
    grad: tuple[MaybeFloat, MaybeFloat]
    hessian: list[list[MaybeFloat]]
    eigenvalues: list[MaybeFloat] = Field(..., description="ascending")
    eigenvectors: list[list[MaybeFloat]] = Field(..., description="unit vectors, one per eigenvalue")
    condition_number: MaybeFloat = Field(..., description="|lambda|_max / |lambda|_min; null if singular")
    lambda_max: MaybeFloat
    stability_lr: MaybeFloat = Field(..., description="2 / lambda_max: GD diverges along v_max above it")
    kind: Literal["minimum", "maximum", "saddle", "degenerate", "undefined"]


class HyperparamOut(BaseModel):
    name: str
    kind: str
    help: str
    default: float | bool | str | None
    min: float | None = None
    max: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[str] = []
    allowed: str


class OptimizerOut(BaseModel):
    name: str
    description: str
    hyperparams: list[HyperparamOut]


class ScheduleParamOut(BaseModel):
    name: str
    kind: str
    required: bool
    default: float | int | bool | str | None
    choices: list[str] = []
    auto: str | None = Field(None, description="what the server uses when the parameter is left out")


class ScheduleOut(BaseModel):
    name: str
    description: str
    params: list[ScheduleParamOut]


class PythonOut(BaseModel):
    code: str
