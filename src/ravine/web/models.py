"""Request and response models of the playground's JSON API (pydantic v2), and their bounds.

Every request body is parsed by one of these models before anything is computed. The bounds are
the server's protection against one user stalling it, and the page's source of truth for its
controls:

- ``steps`` <= ``MAX_STEPS``, ``optimizers`` <= ``MAX_OPTIMIZERS``, a sweep at most
  ``MAX_SWEEP_SIDE`` x ``MAX_SWEEP_SIDE`` cells, expressions at most ``MAX_EXPRESSION_LENGTH``
  characters;
- total work is capped: ``optimizers x steps <= MAX_TRAJECTORY_WORK`` and
  ``sweep cells x steps <= MAX_SWEEP_WORK`` (row-steps of the batched simulator); a request within
  ``SMALL_TRAJECTORY_WORK`` / ``SMALL_SWEEP_WORK`` is computed in the server's small lane, which never waits
  behind bigger ones (``TrajectoryRequest.small``); :data:`LIMITS` holds every bound (``GET /api/limits``);
- every float is finite (``NaN``/``inf`` in a request is a 422), and types are strict: a JSON number
  where a number is asked, an integer where an integer is (``true`` or ``"5"`` for ``steps`` is a 422),
  ``true``/``false`` where a boolean is;
- an optimizer hyperparameter (``HYPERPARAMS``) or a clip threshold (``CLIP_MAX``) is allowed what
  the library's own constraint (``ravine.optim.CONSTRAINTS``) allows, narrowed (never widened: an
  ``Interval.intersect``) where the playground needs less, e.g. ``lr`` in ``(0, 1000]`` of the library's
  ``[0, inf]``. So the API never accepts a value the library would reject, and its messages have
  the library's shape, ``"adam: hyperparams.b1 must be in [0, 1), got 1.0"``.

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
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

import ravine.optim as ro
import ravine.schedules as rsch
import ravine.surfaces as rs
from ravine._validation import Interval, Options, check

#: Updates of one run.
MAX_STEPS = 10_000
#: Optimizers of one trajectory request.
MAX_OPTIMIZERS = 16
#: Values of one sweep axis.
MAX_SWEEP_SIDE = 128
#: Characters of a typed expression.
MAX_EXPRESSION_LENGTH = 500
#: Points per side of a contour grid (a grid needs at least ``MIN_GRID``).
MAX_GRID = 300
MIN_GRID = 2
#: Largest magnitude of a bound of an expression's box.
MAX_DOMAIN = 1e4
#: optimizers x steps of one trajectory request (16 optimizers x 10000 steps fits).
MAX_TRAJECTORY_WORK = MAX_OPTIMIZERS * MAX_STEPS
#: sweep cells x steps of one sweep request (e.g. 128 x 128 cells x 256 steps, 64 x 64 x 1024).
MAX_SWEEP_WORK = 128 * 128 * 256
#: The small lane (``ravine.web._serving``): a trajectory request of at most this many optimizers x steps
#: (the page's 6 x 500 fits five times; 16 x 1000 fits) never waits behind big requests.
SMALL_TRAJECTORY_WORK = 16 * 1000
#: The small lane's bound on sweep cells x steps (a 32 x 32 sweep of 250 steps fits).
SMALL_SWEEP_WORK = 32 * 32 * 250

#: Every bound on a request, in one place (``GET /api/limits`` serves this dict).
LIMITS: dict[str, int] = {
    "max_steps": MAX_STEPS,
    "max_optimizers": MAX_OPTIMIZERS,
    "max_sweep_side": MAX_SWEEP_SIDE,
    "max_expression_length": MAX_EXPRESSION_LENGTH,
    "max_trajectory_work": MAX_TRAJECTORY_WORK,
    "max_sweep_work": MAX_SWEEP_WORK,
    "max_grid": MAX_GRID,
    "min_grid": MIN_GRID,
    "small_trajectory_work": SMALL_TRAJECTORY_WORK,
    "small_sweep_work": SMALL_SWEEP_WORK,
}

#: A float that is not NaN or infinite (a JSON number: ``true`` or ``"1"`` is refused).
Finite = Annotated[float, Field(allow_inf_nan=False, strict=True)]
#: An integer given as a JSON integer (``true``, ``5.0`` or ``"5"`` is refused).
StrictInt = Annotated[int, Field(strict=True)]
#: A point (x, y) of the plane.
Point = tuple[Finite, Finite]
#: ``((xmin, xmax), (ymin, ymax))``: the box of an expression's surface.
Domain = tuple[Point, Point]


def _grid_side(n: int) -> int:
    if n != 0 and not MIN_GRID <= n <= MAX_GRID:
        raise ValueError(f"grid must be 0 (no grid) or in [{MIN_GRID}, {MAX_GRID}], got {n!r}")
    return n


_GRID_SCHEMA = WithJsonSchema(
    {"anyOf": [{"type": "integer", "const": 0}, {"type": "integer", "minimum": MIN_GRID, "maximum": MAX_GRID}]}
)
#: The side of a contour grid that a request may ask for: 0 (no grid) or ``MIN_GRID..MAX_GRID``
#: (a JSON integer in a body; ``GridSideQuery`` reads it from a query string).
GridSide = Annotated[int, Field(strict=True), AfterValidator(_grid_side), _GRID_SCHEMA]
GridSideQuery = Annotated[int, AfterValidator(_grid_side), _GRID_SCHEMA]


def check_domain(domain: Domain | None, field: str) -> Domain | None:
    """``domain`` if each interval is ordered (min < max) and every bound is at most :data:`MAX_DOMAIN` in
    magnitude, else a ``ValueError`` naming ``field``, the value and what is allowed."""
    if domain is None:
        return None
    (x0, x1), (y0, y1) = domain
    if not (x0 < x1 and y0 < y1) or max(abs(x0), abs(x1), abs(y0), abs(y1)) > MAX_DOMAIN:
        raise ValueError(
            f"{field} {domain!r} is invalid; allowed: ((xmin, xmax), (ymin, ymax)) with min < max and "
            f"|bounds| <= {MAX_DOMAIN:g}"
        )
    return domain


class _Strict(BaseModel):
    """Base: unknown fields are an error (a typo must not be silently ignored); floats finite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# ---------------------------------------------------------------------------------------------------
# Allowed values: the library's constraints, narrowed where the playground needs less.

#: A JSON boolean (``true``/``false``; ``1`` is not one).
BOOL = Options((False, True))


def check_field(name: str, value: Any, constraint: Interval | Options, *, where: str = "") -> Any:
    """:func:`ravine._validation.check` for a request field: the value (a number as the interval's kind)
    or a ``ValueError`` (pydantic reports those, not ``TypeError``), in the message shape
    ``"{where}{name} must be in [lo, hi), got v"``; booleans are spelled as in JSON."""
    if constraint is BOOL:
        if not isinstance(value, bool):
            raise ValueError(f"{where}{name} must be true or false, got {value!r}")
        return value
    try:
        return check(name, value, constraint, where=where)
    except TypeError as exc:
        raise ValueError(str(exc)) from None


# ---------------------------------------------------------------------------------------------------
# Hyperparameters the page can set: the library's constraint, the page's narrowing, the slider.


@dataclass(frozen=True)
class HyperparamInfo:
    """How one optimizer hyperparameter is validated and shown.

    ``constraint`` is what a request may set: ``ravine.optim.CONSTRAINTS[name]``, narrowed by
    ``cap`` (``Interval.intersect``) where the playground allows less; a ``"bool"`` is :data:`BOOL`.
    ``ui_min``/``ui_max`` are the slider's range (``log``: the slider moves in log10 space).
    """

    name: str
    kind: Literal["float", "bool", "choice"]
    help: str
    cap: Interval | None = None
    ui_min: float | None = None
    ui_max: float | None = None
    log: bool = False
    step: float | None = None

    @property
    def constraint(self) -> Interval | Options:
        if self.kind == "bool":
            return BOOL
        library = ro.CONSTRAINTS[self.name]
        return library if self.cap is None else library.intersect(self.cap)

    @property
    def choices(self) -> tuple[str, ...]:
        return self.constraint.values if self.kind == "choice" else ()

    def allowed(self) -> str:
        """What a request may send, in words (the page shows it next to the slider)."""
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return self.constraint.describe()
        return f"a finite number {self.constraint.describe()}"

    def check(self, value: Any, *, name: str | None = None, where: str = "") -> Any:
        """``value`` as this hyperparameter's type, or ``ValueError`` saying what is allowed."""
        return check_field(name or self.name, value, self.constraint, where=where)


def _decay_rate(
    name: str, help: str, ui_min: float = 0.0, ui_max: float = 0.999, step: float = 0.001
) -> HyperparamInfo:
    """A coefficient in the library's ``[0, 1)`` with a linear slider."""
    return HyperparamInfo(name, "float", help, ui_min=ui_min, ui_max=ui_max, step=step)


#: The playground's narrowings of the library's ranges (the slider ranges lie well inside them).
#: ``lr > 0``: a run with ``lr = 0`` never moves, and the lr slider and sweep axes are logarithmic.
#: The upper caps bound what a hand-written request can ask of a 2D demo; they only ever narrow.
_CAPS = {
    "lr": Interval(float, 0.0, 1000.0, closed="right"),
    "eps": Interval(float, None, 10.0),
    "weight_decay": Interval(float, None, 100.0),
    "initial_accumulator_value": Interval(float, None, 100.0),
    "lr_decay": Interval(float, None, 100.0),
    "warmup_steps": Interval(int, None, MAX_STEPS),
    "r": Interval(float, None, 10.0),
    "weight_lr_power": Interval(float, None, 10.0),
    "clip_exponent": Interval(float, None, 10.0),
}

#: Every optimizer hyperparameter the playground exposes. A named optimizer's hyperparameter that
#: is not in this table (e.g. a ``mask``) keeps its library default and cannot be set from the page.
HYPERPARAMS: dict[str, HyperparamInfo] = {
    h.name: h
    for h in [
        HyperparamInfo("lr", "float", "learning rate eta", _CAPS["lr"], ui_min=1e-5, ui_max=10.0, log=True),
        _decay_rate("momentum", "momentum coefficient (torch SGD form: v = mu v + g)"),
        _decay_rate("beta", "EMA coefficient beta of the running average"),
        _decay_rate("b1", "beta1: EMA coefficient of the first moment"),
        _decay_rate("b2", "beta2: EMA coefficient of the second moment", ui_min=0.8, ui_max=0.9999, step=0.0001),
        HyperparamInfo(
            "eps", "float", "epsilon added to the denominator", _CAPS["eps"], ui_min=1e-12, ui_max=1.0, log=True
        ),
        HyperparamInfo(
            "weight_decay",
            "float",
            "weight decay coefficient",
            _CAPS["weight_decay"],
            ui_min=0.0,
            ui_max=1.0,
            step=0.001,
        ),
        HyperparamInfo("dampening", "float", "dampening of the momentum buffer", ui_min=0.0, ui_max=1.0, step=0.01),
        HyperparamInfo(
            "initial_accumulator_value",
            "float",
            "initial value of the squared-gradient sum",
            _CAPS["initial_accumulator_value"],
            ui_min=0.0,
            ui_max=1.0,
            step=0.01,
        ),
        HyperparamInfo(
            "lr_decay",
            "float",
            "Adagrad's lr decay: lr / (1 + (t - 1) lr_decay)",
            _CAPS["lr_decay"],
            ui_min=0.0,
            ui_max=0.1,
            step=0.001,
        ),
        HyperparamInfo("nesterov", "bool", "Nesterov look-ahead momentum"),
        HyperparamInfo("bias_correction", "bool", "divide the moments by 1 - beta^t"),
        HyperparamInfo("amsgrad", "bool", "use the running maximum of the second moment"),
        HyperparamInfo("centered", "bool", "subtract the squared mean gradient (centred RMSProp)"),
        HyperparamInfo("form", "choice", "momentum form: EMA (1-beta) g or heavy ball g"),
        HyperparamInfo("decay_convention", "choice", "weight decay scaled by lr (torch) or not (decoupled)"),
        # the newer elementwise optimizers (Schedule-Free AdamW, ADOPT)
        HyperparamInfo(
            "warmup_steps",
            "float",
            "Schedule-Free: linear learning-rate warmup over this many steps",
            _CAPS["warmup_steps"],
            ui_min=0,
            ui_max=200,
            step=1,
        ),
        HyperparamInfo(
            "r", "float", "Schedule-Free: average weights grow as (t+1)^r", _CAPS["r"], ui_min=0.0, ui_max=4.0, step=0.1
        ),
        HyperparamInfo(
            "weight_lr_power",
            "float",
            "Schedule-Free: average weights grow as max lr^power",
            _CAPS["weight_lr_power"],
            ui_min=0.0,
            ui_max=4.0,
            step=0.1,
        ),
        HyperparamInfo(
            "clip_exponent",
            "float",
            "ADOPT: the normalised gradient is clipped to t^clip_exponent",
            _CAPS["clip_exponent"],
            ui_min=0.0,
            ui_max=1.0,
            step=0.05,
        ),
        HyperparamInfo("decoupled_weight_decay", "bool", "ADOPT: weight decay decoupled (AdamW-style) or as L2"),
    ]
}


def optimizer_names() -> list[str]:
    """The named optimizers of ``ravine.optim`` (``ravine.optim.names()``)."""
    return list(ro.names())


def settable_hyperparams(name: str) -> list[str]:
    """The hyperparameters of named optimizer ``name`` that the playground can set, in library order."""
    return [h for h in ro.hyperparam_names(name) if h in HYPERPARAMS]


# ---------------------------------------------------------------------------------------------------
# Requests.


class SurfaceSpec(_Strict):
    """A built-in surface by ``name`` (with optional keyword ``params``), or a typed ``expression`` in x, y.

    When ``expression`` is given it wins over ``name``. The expression is parsed by
    ``ravine.surfaces.parse`` (whitelist of operators and functions; never evaluated as code).
    """

    name: str = Field(
        "bowl", max_length=40, description="built-in surface name (see GET /api/surfaces)",
        json_schema_extra={"enum": list(rs.names())},
    )
    params: dict[str, Finite] = Field(
        default_factory=dict, max_length=8, description="keyword parameters of the built-in surface"
    )
    expression: str | None = Field(
        None,
        max_length=MAX_EXPRESSION_LENGTH,
        description="f(x, y) in the parser's whitelist syntax, e.g. 'x**2 + 10*y**2'",
    )
    domain: Domain | None = Field(
        None, description="((xmin, xmax), (ymin, ymax)) of an expression's box; default ((-2, 2), (-2, 2))"
    )

    _surface: Any = PrivateAttr(None)

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: Domain | None) -> Domain | None:
        return check_domain(v, "surface.domain")

    @model_validator(mode="after")
    def _build(self) -> SurfaceSpec:
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

    name: str = Field(
        ..., max_length=40, description="named optimizer (see GET /api/optimizers)",
        json_schema_extra={"enum": list(ro.names())},
    )
    label: str | None = Field(None, max_length=60, description="legend label; default: the name")
    hyperparams: dict[str, bool | int | float | str] = Field(default_factory=dict, max_length=16)

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
            self.hyperparams[key] = HYPERPARAMS[key].check(value, name=f"hyperparams.{key}", where=f"{self.name}: ")
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
    "step_size": ("a quarter of the steps (when milestones are not given)", lambda n: max(1, round(n / 4))),
}

#: Optional parameters that are filled in all the same when a request leaves them out, because the schedule
#: needs one of two alternatives and the page can set only this one (``milestones`` is a list).
SCHEDULE_AUTO_OPTIONAL: frozenset[tuple[str, str]] = frozenset({("step_decay", "step_size")})


def schedule_auto(name: str, params: dict[str, Any], steps: int) -> dict[str, Any]:
    """``params`` completed with the automatic values of :data:`SCHEDULE_AUTO` for schedule ``name``."""
    out = dict(params)
    for p in rsch.parameters(name):
        wanted = p.required or ((name, p.name) in SCHEDULE_AUTO_OPTIONAL and "milestones" not in out)
        if p.name in out or not wanted or p.name not in SCHEDULE_AUTO:
            continue
        fn = SCHEDULE_AUTO[p.name][1]
        if fn is not None:
            out[p.name] = fn(steps)
    if name == "wsd" and "decay_steps" not in out:
        w = int(out.get("warmup_steps", 0))
        st = int(out.get("stable_steps", 0))
        out["decay_steps"] = max(0, steps - w - st)
    return out


def _schedule_constraint(p: rsch.Parameter) -> Interval | Options | None:
    """What a request may send for schedule parameter ``p`` (``None``: any text).

    Only the type and sign: the schedule checks its own ranges when it is built, and a request it
    rejects is a 422 with its message.
    """
    if p.kind == "int":
        return Interval(int, 0, None, closed="left")
    if p.kind == "float":
        return Interval(float, None, None, closed="neither")
    if p.kind == "bool":
        return BOOL
    return Options(p.choices) if p.choices else None


class ScheduleSpec(_Strict):
    """A learning-rate schedule of ``ravine.schedules`` by name with its keyword parameters.

    The run's learning rate at step t is ``lr * s(t) / peak`` (see ``ravine.simulate``). Required
    parameters that are left out get automatic values derived from the run's steps (see
    ``GET /api/schedules``: each parameter's ``auto``).
    """

    name: str = Field(
        ..., max_length=40, description="schedule name (see GET /api/schedules)",
        json_schema_extra={"enum": list(rsch.names())},
    )
    params: dict[str, int | Finite | bool | str] = Field(default_factory=dict, max_length=12)

    @model_validator(mode="after")
    def _check(self) -> ScheduleSpec:
        names = rsch.names()
        if self.name not in names:
            raise ValueError(f"schedule.name {self.name!r} is unknown; allowed: {', '.join(names)}")
        spec = {p.name: p for p in rsch.parameters(self.name)}
        for key, value in list(self.params.items()):
            p = spec.get(key)
            if p is None or p.kind == "ints":
                allowed = ", ".join(q.name for q in spec.values() if q.kind != "ints")
                raise ValueError(f"schedule.params.{key} is not a parameter of {self.name!r}; allowed: {allowed}")
            constraint = _schedule_constraint(p)
            if constraint is not None:
                self.params[key] = check_field(f"schedule.params.{key}", value, constraint)
        return self

    def to_sim(self, steps: int) -> dict[str, Any]:
        """``{"name": ..., **params}`` for ``ravine.simulate`` with automatic values filled in."""
        return {"name": self.name, **schedule_auto(self.name, self.params, steps)}


#: A clip threshold: what ``ravine.optim.clip_by_global_norm`` (``max_norm``) and ``clip_by_value``
#: (``clip``) both accept, capped at 1e6 like every other magnitude the page can send.
CLIP_MAX = ro.CONSTRAINTS["max_norm"].intersect(ro.CONSTRAINTS["clip"]).intersect(Interval(float, None, 1e6))


class ClipSpec(_Strict):
    """Gradient clipping before the optimizer: by global norm (per run) or elementwise by value."""

    kind: Literal["norm", "value"] = Field(..., description="'norm': g * min(1, max/|g|); 'value': clamp(g, -max, max)")
    max: Finite = Field(..., **CLIP_MAX.field_bounds(), description=f"threshold in {CLIP_MAX}")

    def to_sim(self) -> dict[str, Any]:
        return {"kind": self.kind, "max": self.max}


class _RunCommon(_Strict):
    surface: SurfaceSpec = Field(default_factory=lambda: SurfaceSpec())
    start: Point | None = Field(
        None, validate_default=True, description="start point (x, y); default: the surface's start"
    )
    steps: int = Field(200, ge=1, le=MAX_STEPS, strict=True, description=f"number of updates (1..{MAX_STEPS})")
    noise: Finite = Field(0.0, ge=0.0, le=1e3, description="std of Gaussian noise added to each gradient")
    seed: int = Field(0, ge=0, le=2**31 - 1, strict=True, description="seed of the gradient noise")
    tol: Finite = Field(1e-6, gt=0.0, le=1e6, description="converged when loss - global min <= tol")
    schedule: ScheduleSpec | None = None
    clip: ClipSpec | None = None
    batch_size: StrictInt | None = Field(
        None, ge=1, le=1_000_000, description="noise std is divided by sqrt(batch_size) (SGD emulation)"
    )

    @field_validator("schedule")
    @classmethod
    def _schedule_builds(cls, v: ScheduleSpec | None, info: ValidationInfo) -> ScheduleSpec | None:
        # built here, with the run's steps, so that a schedule the library refuses (e.g. one_cycle with
        # div_factor < 1) is a 422 naming ``schedule`` rather than an error of the whole body
        steps = info.data.get("steps")
        if v is not None and steps is not None:
            try:
                rsch.get(**v.to_sim(steps))
            except (ValueError, TypeError) as exc:
                raise ValueError(str(exc)) from None
        return v

    @field_validator("start")
    @classmethod
    def _start_bounded(cls, v: Point | None, info: ValidationInfo) -> Point | None:
        if v is not None and (abs(v[0]) > 1e6 or abs(v[1]) > 1e6):
            raise ValueError(f"start {v!r} is too far out; allowed: |x|, |y| <= 1e6")
        spec = info.data.get("surface")
        if spec is not None and spec.surface is not None:  # a run cannot start where the loss is not finite
            point = tuple(float(c) for c in (v if v is not None else spec.surface.start))
            value = float(spec.surface.value(torch.tensor(point, dtype=torch.float64)))
            if not math.isfinite(value):
                where = f"start {point!r}" if v is not None else f"the surface's default start {point!r}"
                raise ValueError(f"the loss at {where} is {value}; allowed: a start where the surface is finite")
        return v


class TrajectoryRequest(_RunCommon):
    """Run several optimizers from one start point on one surface (``ravine.simulate.run``)."""

    optimizers: list[OptimizerSpec] = Field(..., min_length=1, max_length=MAX_OPTIMIZERS)

    @property
    def work(self) -> int:
        """optimizers x steps."""
        return len(self.optimizers) * self.steps

    @property
    def small(self) -> bool:
        """Whether the request is computed in the small lane (``work <= SMALL_TRAJECTORY_WORK``)."""
        return self.work <= SMALL_TRAJECTORY_WORK

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

    name: str = Field(
        ..., max_length=40, description="the hyperparameter to sweep",
        json_schema_extra={"enum": [h.name for h in HYPERPARAMS.values() if h.kind == "float"]},
    )
    min: Finite
    max: Finite
    n: int = Field(32, ge=2, le=MAX_SWEEP_SIDE, strict=True)
    log: bool = Field(False, strict=True)

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
            info.check(getattr(self, end), name=end, where=f"{self.name} axis: ")
        return self

    def values(self) -> list[float]:
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

    @property
    def work(self) -> int:
        """sweep cells x steps."""
        return self.x.n * self.y.n * self.steps

    @property
    def small(self) -> bool:
        """Whether the request is computed in the small lane (``work <= SMALL_SWEEP_WORK``)."""
        return self.work <= SMALL_SWEEP_WORK

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
    """The Hessian of a surface at one point (and, for each optimizer given, its learning-rate limit there)."""

    surface: SurfaceSpec = Field(default_factory=lambda: SurfaceSpec())
    point: Point
    optimizers: list[OptimizerSpec] = Field(
        default_factory=list,
        max_length=MAX_OPTIMIZERS,
        description="optimizers whose stability limit at the point to report in ``limits`` (same order)",
    )


class ExpressionCheck(_Strict):
    """An expression to validate (and, if valid, to grid for a contour)."""

    expression: str = Field(..., max_length=MAX_EXPRESSION_LENGTH)
    domain: Domain | None = None
    grid: GridSide = Field(0, description=f"0: no grid; else an n x n contour grid, n in [{MIN_GRID}, {MAX_GRID}]")

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: Domain | None) -> Domain | None:
        return check_domain(v, "domain")


class GridRequest(_Strict):
    """A surface to draw as an ``n`` x ``n`` contour grid."""

    surface: SurfaceSpec = Field(default_factory=lambda: SurfaceSpec())
    n: int = Field(120, ge=10, le=MAX_GRID, strict=True)


# ---------------------------------------------------------------------------------------------------
# Responses (documented in the OpenAPI schema; non-finite numbers are null).

#: A number in a response: ``null`` where it is not finite.
MaybeFloat = float | None


class MinimumOut(BaseModel):
    """A known minimum of a surface: where, its value, and whether it is the global one."""

    x: float
    y: float
    value: float
    kind: str


class ContourOut(BaseModel):
    """What the page's contour draws (``ravine.plots.playground.contour_levels``, the exported figure's rule)."""

    z: list[list[MaybeFloat]] = Field(..., description="log10(f - min f + eps) on the grid; null where not finite")
    start: float = Field(..., description="the lowest level (the floor quantile of z)")
    end: float = Field(..., description="the highest level")
    size: float = Field(..., description="the spacing of the levels")


class GridOut(BaseModel):
    """A contour grid of a surface."""

    x: list[float]
    y: list[float]
    z: list[list[MaybeFloat]] = Field(..., description="z[i][j] = f(x[j], y[i]); null where not finite")
    zmin: MaybeFloat
    zmax: MaybeFloat
    contour: ContourOut


class SurfaceOut(BaseModel):
    """A surface as the page draws it: box, start, known critical points, parameters, suggested lrs."""

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
    """Whether an expression parses; if not, the problem and where; if so, the surface."""

    ok: bool
    error: str | None = None
    position: int | None = Field(None, description="0-based character position of the error")
    surface: SurfaceOut | None = None


class RunOut(BaseModel):
    """One optimizer's run: positions, losses, gradient norms and lrs per step, clipping, divergence."""

    label: str
    name: str
    hyperparams: dict[str, bool | int | float | str]
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
    end: Literal["minimum", "saddle", "maximum", "plateau", "moving", "diverged"] = Field(
        ..., description="where the run ended: the critical point it stalled at (by the Hessian), moving, or diverged"
    )


class TrajectoryOut(BaseModel):
    """The runs of a trajectory request, all from one start on one surface."""

    surface: str
    start: tuple[float, float]
    steps: int
    global_min: MaybeFloat
    tol_criterion: Literal["loss_gap", "grad_norm"] = Field(
        "loss_gap",
        description="what steps_to_tol measures: 'loss_gap' (loss - global_min <= tol) where the global minimum is "
        "known, else 'grad_norm' (|grad f| <= tol: a stationary point)",
    )
    runs: list[RunOut]
    simulated_runs: int = Field(..., description="runs simulated for this request (the others were cached)")
    engine: Literal["compiled", "eager", "cache"] = Field(
        "eager",
        description="what stepped the simulated runs: ravine.simulate's compiled program of this structure, or the "
        "eager loop (while that compiles, or with compilation off); 'cache' when every run came from the cache",
    )
    awaiting_compile: bool = Field(
        False,
        description="stepped eagerly because the worker had no compiled program of this structure yet (ravine serve "
        "--compile then has one compiled)",
    )
    elapsed_ms: float
    seeing: list[str] = Field(
        default_factory=list,
        description="what the runs show, in sentences whose numbers come from the runs (ravine.web.teaching.seeing)",
    )


class SweepOut(BaseModel):
    """A hyperparameter sweep: per (y, x) cell the final loss, steps to tolerance and divergence."""

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


class StabilityLimitOut(BaseModel):
    """One optimizer's largest stable learning rate on the local quadratic model, and the rule it comes from."""

    name: str
    lr: MaybeFloat = Field(..., description="the limit; null where no fixed lr limit exists or lambda_max <= 0")
    rule: str = Field(..., description="the rule in words, e.g. '2(1+beta)/lambda_max (heavy ball, beta = 0.9)'")


class CurvatureOut(BaseModel):
    """The Hessian at a point, its eigen-decomposition, kind of point and gradient descent's lr limit."""

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
    limits: list[StabilityLimitOut] = Field(
        default_factory=list, description="one per requested optimizer: its largest stable lr at the point"
    )


class HyperparamOut(BaseModel):
    """One settable hyperparameter: library default, slider range (``min``/``max``) and what is allowed."""

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
    """A named optimizer and the hyperparameters the page can set."""

    name: str
    description: str
    hyperparams: list[HyperparamOut]


class ScheduleParamOut(BaseModel):
    """One parameter of a schedule."""

    name: str
    kind: str
    required: bool
    default: float | int | bool | str | None
    choices: list[str] = []
    auto: str | None = Field(None, description="what the server uses when the parameter is left out")


class ScheduleOut(BaseModel):
    """A learning-rate schedule and its parameters."""

    name: str
    description: str
    params: list[ScheduleParamOut]


class PythonOut(BaseModel):
    """Python source that reproduces a trajectory request."""

    code: str


# ---------------------------------------------------------------------------------------------------
# Teaching: presets, the page's colours, the captioned export (ravine.web.teaching, ravine.plots.playground).

#: A colour as the page's colour pickers give it: ``#rrggbb``.
HexColor = Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$", max_length=7)]


class PresetOut(BaseModel):
    """One of the chapter's figures as a playground view (``ravine.web.teaching.PRESETS``)."""

    id: str
    title: str
    section: str = Field(..., description="the chapter's section it illustrates")
    caption: list[str] = Field(..., description="two lines shown under the contour")
    request: dict[str, Any] = Field(..., description="a trajectory request (POST /api/trajectories) of the view")
    sweep: dict[str, Any] | None = Field(
        None, description="a sweep to run with it: optimizer index 'opt', cells per side 'n', axes 'x' and 'y'"
    )


class StyleOut(BaseModel):
    """The page's colours, which the exported figures use too (``ravine.plots.playground.PAGE_STYLE``)."""

    palette: list[str]
    contour_colorscale: list[tuple[float, str]]
    contour_line: str
    minimum: str
    diverged: str
    start: str


class ExportRequest(_Strict):
    """A view to export: the trajectory request and each run's colour (default: the page's palette in order)."""

    request: TrajectoryRequest
    colors: list[HexColor] = Field(default_factory=list, max_length=MAX_OPTIMIZERS)
