"""Test surfaces for the 2D world: loss functions of two parameters ``(x, y)`` on torch tensors.

A :class:`Surface` maps a tensor of points of shape ``(..., 2)`` to values of shape ``(...)``. Everything else
follows from that one function by autograd: :meth:`Surface.grad` (``(..., 2)``) and the exact Hessian
:meth:`Surface.hessian` (``(..., 2, 2)``, second derivatives by double backward). Built-ins whose gradient
has a short closed form also carry it (fused with the value) so that the simulator can step thousands of
configurations without autograd's bookkeeping; the tests check every closed form against autograd.

Surfaces follow the dtype and device of the points they are given. The simulator (:mod:`ravine.simulate`)
works in float64 by default so that sweeps, divergence boundaries and comparisons with torch.optim are exact
to rounding; pass float32 points to get float32 values.

Each surface knows its plotting box (``domain``), a default starting point (``start``), its known minima
with their values (``minima``; closed form or from the literature, refined to machine precision by Newton's
method where the literature gives only a few digits) and, where relevant, its saddle points
(``saddles``). Look them up with :func:`get` (``names()`` lists them) or build one from text with
:func:`parse` (a whitelist parser, see :mod:`ravine._expr`; user text is never executed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ravine._expr import ExpressionError, parse_expression
from ravine._validation import Interval, Options, check

__all__ = ["Minimum", "SaddlePoint", "Surface", "get", "names", "parse", "ExpressionError"]

ValueFn = Callable[[torch.Tensor], torch.Tensor]
ValueGradFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

#: Optimizers whose step size does not scale with the gradient (per-coordinate normalisation, or
#: a sign as in Lion): the 2D world gives them the surface's "adaptive" learning rate by default.
ADAPTIVE_OPTIMIZERS = frozenset(
    {"rmsprop", "adam", "adamw", "adam_l2", "adagrad", "lion", "adopt", "schedule_free_adamw"}
)

_GRAD_METHOD = Options(("auto", "autograd", "functional"))
_GRID_SIZE = Interval(int, 2, 2000)


@dataclass(frozen=True)
class Minimum:
    """A known minimum at ``(x, y)`` with loss ``value``; ``kind`` is ``"global"`` or ``"local"``."""

    x: float
    y: float
    value: float
    kind: str = "global"

    def to_dict(self) -> dict[str, Any]:
        """The point as a plain dict (JSON-safe)."""
        return asdict(self)


@dataclass(frozen=True)
class SaddlePoint:
    """A known saddle point (gradient zero, Hessian indefinite or degenerate) at ``(x, y)``."""

    x: float
    y: float
    value: float

    def to_dict(self) -> dict[str, Any]:
        """The point as a plain dict (JSON-safe)."""
        return asdict(self)


Domain = tuple[tuple[float, float], tuple[float, float]]


class Surface:
    """A loss surface ``f(x, y)`` with its plotting box, default start, known minima and saddles.

    Attributes (all read-only by convention):
        name, description: identifiers; ``description`` is one line with the formula.
        domain: ``((xmin, xmax), (ymin, ymax))``, the plotting box.
        start: ``(x, y)``, a starting point that shows the surface's character.
        minima: list of :class:`Minimum` (empty when the surface is unbounded below or unknown).
        saddles: list of :class:`SaddlePoint`.
        params: the surface's parameters, e.g. ``{"condition": 25.0}``; ``{}`` if none.
        expression: the source text for parsed surfaces, else ``None``.
        suggested_lr: ``{"gradient": lr, "adaptive": lr}``, learning rates that give a readable picture for
            optimizers whose step scales with the gradient (gd, sgd, momentum, nesterov) and for the
            adaptive ones (rmsprop, adam, adamw, adam_l2, adagrad). Used by :mod:`ravine.simulate` when a
            specification gives no ``lr``.
    """

    def __init__(
        self,
        name: str,
        fn: ValueFn,
        *,
        description: str,
        domain: Domain,
        start: tuple[float, float],
        minima: Sequence[Minimum] = (),
        saddles: Sequence[SaddlePoint] = (),
        params: dict[str, float] | None = None,
        expression: str | None = None,
        value_and_grad: ValueGradFn | None = None,
        suggested_lr: dict[str, float] | None = None,
    ):
        (x0, x1), (y0, y1) = domain
        if not (x0 < x1 and y0 < y1):
            raise ValueError(f"domain must be ((xmin, xmax), (ymin, ymax)) with min < max, got {domain!r}")
        self.name = name
        self.description = description
        self.domain: Domain = ((float(x0), float(x1)), (float(y0), float(y1)))
        self.start = (float(start[0]), float(start[1]))
        self.minima = list(minima)
        self.saddles = list(saddles)
        self.params = dict(params or {})
        self.expression = expression
        self.suggested_lr = dict(suggested_lr or {"gradient": 0.01, "adaptive": 0.05})
        self._fn = fn
        self._value_and_grad = value_and_grad

    # ------------------------------------------------------------------------------------------ values
    @staticmethod
    def _points(xy: Any) -> torch.Tensor:
        if not isinstance(xy, torch.Tensor):
            xy = torch.as_tensor(np.asarray(xy, dtype=np.float64))
        if not xy.is_floating_point():
            xy = xy.to(torch.float64)
        if xy.ndim == 0 or xy.shape[-1] != 2:
            raise ValueError(f"xy must have shape (..., 2), got {tuple(xy.shape)}")
        return xy

    def value(self, xy: torch.Tensor) -> torch.Tensor:
        """``f(xy)`` for points of shape ``(..., 2)``; returns shape ``(...)``, differentiable."""
        return self._fn(self._points(xy))

    __call__ = value

    @property
    def has_closed_form_grad(self) -> bool:
        """Whether a closed-form gradient is used (else autograd)."""
        return self._value_and_grad is not None

    def program_key(self) -> tuple:
        """A hashable key, equal for surfaces that compute the same function and gradient.

        A built-in: the code of its closed-form ``value_and_grad`` and the numbers it closes over (its
        parameters); a parsed expression: its text; a closed form that closes over anything but numbers, or a
        function without one: its identity. A program compiled for one surface (``ravine.simulate.run(...,
        compile=True)``) serves every surface with the same key.
        """
        vg = self._value_and_grad
        if vg is None:
            return ("expression", self.expression, self.domain) if self.expression else ("object", id(self._fn))
        code = getattr(vg, "__code__", None)
        cells = tuple(c.cell_contents for c in (getattr(vg, "__closure__", None) or ()))
        if code is None or not all(isinstance(c, (int, float, str)) for c in cells):
            return ("object", id(vg), self.domain)
        return (code, cells, self.domain)

    def value_and_grad(self, xy: torch.Tensor, method: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
        """``(f(xy), grad f(xy))``, detached, shapes ``(...)`` and ``(..., 2)``.

        ``method="auto"`` uses the closed-form gradient when the surface has one, ``"autograd"`` forces
        reverse-mode autograd (one backward pass over the batch; the rows are independent, so the gradient
        of the sum is the per-point gradient); ``"functional"``: the same backward pass through
        ``torch.func.grad``, which ``torch.compile`` can trace (``ravine.simulate``'s compiled programs).
        """
        xy = self._points(xy)
        check("method", method, _GRAD_METHOD)
        if method == "auto" and self._value_and_grad is not None:
            return self._value_and_grad(xy)
        if method == "functional":
            def total(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                v = self._fn(p)
                return v.sum(), v

            g, v = torch.func.grad(total, has_aux=True)(xy.detach())
            return v.detach(), g
        with torch.enable_grad():
            p = xy.detach().requires_grad_(True)
            v = self._fn(p)
            if v.requires_grad:
                (g,) = torch.autograd.grad(v.sum(), p, allow_unused=True)
            else:
                g = None
        if g is None:  # the expression does not depend on x or y
            g = torch.zeros_like(xy)
        return v.detach(), g

    def grad(self, xy: torch.Tensor, method: str = "auto") -> torch.Tensor:
        """The gradient ``(df/dx, df/dy)`` at points of shape ``(..., 2)``; see :meth:`value_and_grad`."""
        return self.value_and_grad(xy, method)[1]

    def hessian(self, xy: torch.Tensor) -> torch.Tensor:
        """The exact Hessian at points of shape ``(..., 2)``, shape ``(..., 2, 2)``, by double backward.

        Row ``i`` is the gradient of ``df/dx_i`` (summed over the batch, whose points are independent).
        Agrees with ``torch.autograd.functional.hessian`` at a single point (tested).
        """
        xy = self._points(xy)
        with torch.enable_grad():
            p = xy.detach().requires_grad_(True)
            v = self._fn(p)
            if not v.requires_grad:
                return torch.zeros(*xy.shape, 2, dtype=xy.dtype, device=xy.device)
            (g,) = torch.autograd.grad(v.sum(), p, create_graph=True, allow_unused=True)
            rows = []
            for i in range(2):
                if g is None or not g.requires_grad:
                    rows.append(torch.zeros_like(xy))
                    continue
                (h,) = torch.autograd.grad(g[..., i].sum(), p, retain_graph=True, allow_unused=True)
                rows.append(torch.zeros_like(xy) if h is None else h)
        return torch.stack(rows, dim=-2).detach()

    def grid(self, n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(X, Y, Z)`` float64 arrays of shape ``(n, n)`` over :attr:`domain` (``Z[i, j] = f(X[i, j], Y[i, j])``)."""
        n = check("n", n, _GRID_SIZE)
        (x0, x1), (y0, y1) = self.domain
        xs = torch.linspace(x0, x1, n, dtype=torch.float64)
        ys = torch.linspace(y0, y1, n, dtype=torch.float64)
        Y, X = torch.meshgrid(ys, xs, indexing="ij")
        with torch.no_grad():
            Z = self.value(torch.stack([X, Y], dim=-1))
        return X.numpy(), Y.numpy(), Z.numpy()

    # ------------------------------------------------------------------------------------------ misc
    @property
    def global_minimum(self) -> Minimum | None:
        """The lowest listed minimum, or ``None`` when none is known."""
        best = [m for m in self.minima if m.kind == "global"]
        return min(best, key=lambda m: m.value) if best else None

    def default_lr(self, optimizer: str, **hyperparams: Any) -> float:
        """The suggested learning rate for the named optimizer (see :attr:`suggested_lr`).

        Looked up by the optimizer's name first (a surface may tune e.g. ``"rmsprop"``), then by family:
        ``"adaptive"`` for rmsprop, adam, adamw, adam_l2, adagrad; ``"gradient"`` otherwise. EMA-form
        momentum (``momentum``, ``nesterov`` with ``form="ema"``, the default) gets ``gradient / (1 - beta)``:
        its velocity is an average of gradients, so this learning rate makes it the heavy-ball method with the
        gradient family's step size (``beta`` from ``hyperparams``, default 0.9).
        """
        if optimizer in self.suggested_lr:
            return float(self.suggested_lr[optimizer])
        if optimizer in ADAPTIVE_OPTIMIZERS:
            return float(self.suggested_lr["adaptive"])
        lr = float(self.suggested_lr["gradient"])
        if optimizer in ("momentum", "nesterov") and hyperparams.get("form", "ema") == "ema":
            beta = hyperparams.get("beta", 0.9)
            if isinstance(beta, (int, float)) and not isinstance(beta, bool) and 0 <= beta < 1:
                lr /= 1.0 - float(beta)
        return lr

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description (no function values)."""
        return {
            "name": self.name,
            "description": self.description,
            "domain": [list(self.domain[0]), list(self.domain[1])],
            "start": list(self.start),
            "minima": [m.to_dict() for m in self.minima],
            "saddles": [s.to_dict() for s in self.saddles],
            "params": dict(self.params),
            "expression": self.expression,
            "suggested_lr": dict(self.suggested_lr),
        }

    def __repr__(self) -> str:
        params = "".join(f", {k}={v:g}" for k, v in self.params.items())
        return f"Surface({self.name!r}{params})"


# ---------------------------------------------------------------------------------------------- built-ins
def _xy(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return p[..., 0], p[..., 1]


def _stack(gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    return torch.stack([gx, gy], dim=-1)


def _bowl() -> Surface:
    def f(p):
        x, y = _xy(p)
        return 0.5 * x * x + y * y

    def vg(p):
        x, y = _xy(p)
        return 0.5 * x * x + y * y, _stack(x, 2.0 * y)

    return Surface(
        "bowl", f, value_and_grad=vg,
        description="convex bowl f = x^2/2 + y^2 (Hessian diag(1, 2): GD converges iff lr < 1)",
        domain=((-2.0, 2.0), (-2.0, 2.0)), start=(-1.8, 1.6),
        minima=[Minimum(0.0, 0.0, 0.0)], suggested_lr={"gradient": 0.1, "adaptive": 0.1},
    )


def _valley(condition: float = 25.0) -> Surface:
    k = float(condition)

    def f(p):
        x, y = _xy(p)
        return 0.5 * (x * x + k * y * y)

    def vg(p):
        x, y = _xy(p)
        return 0.5 * (x * x + k * y * y), _stack(x, k * y)

    return Surface(
        "valley", f, value_and_grad=vg,
        description=f"narrow valley f = (x^2 + {k:g} y^2)/2 (condition number {k:g}; GD converges iff "
        f"lr < 2/{k:g})",
        domain=((-2.0, 2.0), (-1.0, 1.0)), start=(-1.8, 0.6), params={"condition": k},
        minima=[Minimum(0.0, 0.0, 0.0)], suggested_lr={"gradient": 1.75 / k, "adaptive": 0.05},
    )


def _rosenbrock(a: float = 1.0, b: float = 100.0) -> Surface:
    a, b = float(a), float(b)

    def vg(p):
        x, y = _xy(p)
        u = a - x
        w = y - x * x
        return u * u + b * w * w, _stack(-2.0 * u - 4.0 * b * x * w, 2.0 * b * w)

    return Surface(
        "rosenbrock", lambda p: vg(p)[0], value_and_grad=vg,
        description=f"Rosenbrock's banana f = ({a:g} - x)^2 + {b:g} (y - x^2)^2, curved flat valley, "
        f"minimum at ({a:g}, {a * a:g})",
        domain=((-2.0, 2.0), (-1.0, 3.0)), start=(-1.5, 2.5), params={"a": a, "b": b},
        minima=[Minimum(a, a * a, 0.0)], suggested_lr={"gradient": 1e-3, "adaptive": 0.05, "rmsprop": 0.01},
    )


def _beale() -> Surface:
    def vg(p):
        x, y = _xy(p)
        y2 = y * y
        y3 = y2 * y
        t1 = 1.5 - x + x * y
        t2 = 2.25 - x + x * y2
        t3 = 2.625 - x + x * y3
        v = t1 * t1 + t2 * t2 + t3 * t3
        gx = 2.0 * (t1 * (y - 1.0) + t2 * (y2 - 1.0) + t3 * (y3 - 1.0))
        gy = 2.0 * x * (t1 + 2.0 * y * t2 + 3.0 * y2 * t3)
        return v, _stack(gx, gy)

    return Surface(
        "beale", lambda p: vg(p)[0], value_and_grad=vg,
        description="Beale f = (1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2, flat basin "
        "with steep walls, minimum at (3, 0.5)",
        domain=((-4.5, 4.5), (-4.5, 4.5)), start=(0.7, 1.4),
        minima=[Minimum(3.0, 0.5, 0.0)], suggested_lr={"gradient": 1e-4, "adaptive": 0.05},
    )


# Himmelblau's four minima: (3, 2) is exact; the other three are roots of a quartic, refined by Newton's
# method in float64 from the literature's six digits (-2.805118, 3.131312), (-3.779310, -3.283186),
# (3.584428, -1.848126).
_HIMMELBLAU_MINIMA = [
    (3.0, 2.0),
    (-2.805118086952745, 3.131312518250573),
    (-3.779310253377747, -3.2831859912861696),
    (3.5844283403304917, -1.8481265269644034),
]


def _himmelblau() -> Surface:
    def vg(p):
        x, y = _xy(p)
        a = x * x + y - 11.0
        b = x + y * y - 7.0
        return a * a + b * b, _stack(4.0 * x * a + 2.0 * b, 2.0 * a + 4.0 * y * b)

    return Surface(
        "himmelblau", lambda p: vg(p)[0], value_and_grad=vg,
        description="Himmelblau f = (x^2 + y - 11)^2 + (x + y^2 - 7)^2, four global minima of value 0",
        domain=((-5.0, 5.0), (-5.0, 5.0)), start=(-0.3, -0.9),
        minima=[Minimum(x, y, 0.0) for x, y in _HIMMELBLAU_MINIMA],
        saddles=[], suggested_lr={"gradient": 5e-3, "adaptive": 0.1},
    )


def _rastrigin(A: float = 10.0) -> Surface:
    A = float(A)
    two_pi = 2.0 * math.pi

    def vg(p):
        x, y = _xy(p)
        v = 2.0 * A + x * x - A * torch.cos(two_pi * x) + y * y - A * torch.cos(two_pi * y)
        g = _stack(2.0 * x + two_pi * A * torch.sin(two_pi * x), 2.0 * y + two_pi * A * torch.sin(two_pi * y))
        return v, g

    return Surface(
        "rastrigin", lambda p: vg(p)[0], value_and_grad=vg,
        description=f"Rastrigin f = {2 * A:g} + x^2 + y^2 - {A:g} (cos 2 pi x + cos 2 pi y), a lattice of local "
        "minima around the global one at the origin",
        domain=((-5.12, 5.12), (-5.12, 5.12)), start=(-4.3, 3.7), params={"A": A},
        minima=[Minimum(0.0, 0.0, 0.0)], suggested_lr={"gradient": 2e-3, "adaptive": 0.1},
    )


def _ackley() -> Surface:
    two_pi = 2.0 * math.pi

    def f(p):
        x, y = _xy(p)
        q = 0.5 * (x * x + y * y)
        # sqrt at 0 has an infinite derivative; clamping at the smallest normal number keeps the gradient
        # finite (exactly 0) at the origin, which is the cone's tip (the subdifferential there contains 0).
        r = torch.sqrt(q.clamp_min(torch.finfo(p.dtype).tiny))
        return (
            -20.0 * torch.exp(-0.2 * r)
            - torch.exp(0.5 * (torch.cos(two_pi * x) + torch.cos(two_pi * y)))
            + math.e
            + 20.0
        )

    return Surface(
        "ackley", f,
        description="Ackley f = -20 exp(-0.2 sqrt((x^2 + y^2)/2)) - exp((cos 2 pi x + cos 2 pi y)/2) + e + 20, "
        "a rippled funnel; the global minimum at the origin is a cone tip (not differentiable)",
        domain=((-5.0, 5.0), (-5.0, 5.0)), start=(-4.2, 3.6),
        minima=[Minimum(0.0, 0.0, 0.0)], suggested_lr={"gradient": 0.05, "adaptive": 0.1},
    )


# Six-hump camel: the two global minima (+-0.0898, -+0.7126), value -1.0316, and four local minima
# (+-1.7036, -+0.7961), value -0.2155, and (+-1.6071, +-0.5687), value 2.1043 (literature values, refined by
# Newton's method in float64).
_CAMEL_MINIMA = [
    (0.08984201310031806, -0.7126564030207396, -1.0316284534898774, "global"),
    (-0.08984201310031806, 0.7126564030207396, -1.0316284534898774, "global"),
    (1.7036067149699807, -0.7960835686726252, -0.21546382438371725, "local"),
    (-1.7036067149699807, 0.7960835686726252, -0.21546382438371725, "local"),
    (1.6071047529201974, 0.5686514548841314, 2.1042503103112598, "local"),
    (-1.6071047529201974, -0.5686514548841314, 2.1042503103112598, "local"),
]


def _camel() -> Surface:
    def vg(p):
        x, y = _xy(p)
        x2 = x * x
        y2 = y * y
        v = (4.0 - 2.1 * x2 + x2 * x2 / 3.0) * x2 + x * y + (-4.0 + 4.0 * y2) * y2
        gx = 8.0 * x - 8.4 * x2 * x + 2.0 * x2 * x2 * x + y
        gy = x - 8.0 * y + 16.0 * y2 * y
        return v, _stack(gx, gy)

    return Surface(
        "camel", lambda p: vg(p)[0], value_and_grad=vg,
        description="six-hump camel f = (4 - 2.1 x^2 + x^4/3) x^2 + xy + (4 y^2 - 4) y^2, two global and four "
        "local minima",
        domain=((-2.5, 2.5), (-1.5, 1.5)), start=(-2.2, -1.2),
        minima=[Minimum(x, y, v, k) for x, y, v, k in _CAMEL_MINIMA],
        suggested_lr={"gradient": 0.01, "adaptive": 0.05},
    )


def _saddle() -> Surface:
    def vg(p):
        x, y = _xy(p)
        return x * x - y * y, _stack(2.0 * x, -2.0 * y)

    return Surface(
        "saddle", lambda p: vg(p)[0], value_and_grad=vg,
        description="saddle f = x^2 - y^2 (unbounded below); from the default start on the x axis the "
        "gradient has no y component, so exact gradient descent stalls at the saddle and noise escapes it",
        domain=((-2.0, 2.0), (-2.0, 2.0)), start=(-1.8, 0.0),
        saddles=[SaddlePoint(0.0, 0.0, 0.0)], suggested_lr={"gradient": 0.05, "adaptive": 0.05},
    )


def _monkey_saddle() -> Surface:
    def vg(p):
        x, y = _xy(p)
        return x * x * x - 3.0 * x * y * y, _stack(3.0 * (x * x - y * y), -6.0 * x * y)

    return Surface(
        "monkey_saddle", lambda p: vg(p)[0], value_and_grad=vg,
        description="monkey saddle f = x^3 - 3 x y^2 (degenerate saddle at the origin, unbounded below; the "
        "gradient vanishes quadratically there: from the default start on the x axis gradient descent crawls "
        "towards it, x_k ~ 1/(3 lr k))",
        domain=((-2.0, 2.0), (-2.0, 2.0)), start=(1.8, 0.0),
        saddles=[SaddlePoint(0.0, 0.0, 0.0)], suggested_lr={"gradient": 0.02, "adaptive": 0.02},
    )


def _plateau(width: float = 1.0) -> Surface:
    w2 = float(width) ** 2

    def vg(p):
        x, y = _xy(p)
        e = torch.exp(-(x * x + y * y) / (2.0 * w2))
        return 1.0 - e, p * (e / w2).unsqueeze(-1)

    return Surface(
        "plateau", lambda p: vg(p)[0], value_and_grad=vg,
        description=f"plateau f = 1 - exp(-(x^2 + y^2) / (2 * {w2:g})): nearly flat far from the well, where "
        "the gradient vanishes exponentially",
        domain=((-4.0, 4.0), (-4.0, 4.0)), start=(-3.0, 2.6), params={"width": float(width)},
        minima=[Minimum(0.0, 0.0, 0.0)], suggested_lr={"gradient": 1.0, "adaptive": 0.05},
    )


def _gaussian_wells(curvature: float, wells: Sequence[tuple[float, float, float, float]]) -> ValueGradFn:
    """``f = c (x^2 + y^2) - sum_i a_i exp(-|p - m_i|^2 / (2 s_i^2))`` for wells ``(mx, my, a, s)``."""

    def vg(p):
        x, y = _xy(p)
        v = curvature * (x * x + y * y)
        g = (2.0 * curvature) * p
        for mx, my, a, s in wells:
            dx = x - mx
            dy = y - my
            e = a * torch.exp(-(dx * dx + dy * dy) / (2.0 * s * s))
            v = v - e
            g = g + (e / (s * s)).unsqueeze(-1) * torch.stack([dx, dy], dim=-1)
        return v, g

    return vg


# Critical points of the two Gaussian-well surfaces, found by Newton's method in float64 from the wells'
# centres (gradient norm below 1e-14 at each; the tests check it vanishes and the Hessian's signature).
_SHARP_FLAT_MINIMA = [
    (-0.9960494460914283, 0.4981953812754841, -0.961901838891299, "global"),  # sharp: Hessian eigenvalues ~44
    (0.9333752830967325, -0.2800125849290197, -0.8491246336046081, "local"),  # flat: Hessian eigenvalues ~1.5
]
_SHARP_FLAT_SADDLES = [(-0.6032108396482915, 0.33075136603111804, -0.08088320483729367)]
_TRAPS_MINIMA = [
    (4.395135634324944e-20, -2.3496194665033822e-20, -2.3004757877328002e-22, "global"),
    (-1.167181774178913, 0.9726514784824276, 0.10619055538375738, "local"),
    (0.9726514784824276, 1.167181774178913, 0.10619055538375738, "local"),
    (-0.8753603405554363, -1.264409380802297, 0.11494428885726626, "local"),
    (1.2646072859588213, -0.6809423847470576, 0.06825473296561985, "local"),
]

_SHARP_FLAT_WELLS = [(-1.0, 0.5, 1.0, 0.15), (1.0, -0.3, 0.9, 0.8)]


def _sharp_flat() -> Surface:
    vg = _gaussian_wells(0.05, _SHARP_FLAT_WELLS)
    return Surface(
        "sharp_flat", lambda p: vg(p)[0], value_and_grad=vg,
        description="one sharp and one flat minimum of nearly equal depth: f = 0.05 (x^2 + y^2) - "
        "exp(-|p - (-1, 0.5)|^2 / 0.045) - 0.9 exp(-|p - (1, -0.3)|^2 / 1.28)",
        domain=((-2.5, 2.5), (-2.0, 2.0)), start=(-1.25, 0.85),
        minima=[Minimum(*m) for m in _SHARP_FLAT_MINIMA], saddles=[SaddlePoint(*s) for s in _SHARP_FLAT_SADDLES],
        suggested_lr={"gradient": 0.01, "adaptive": 0.02},
    )


_TRAP_WELLS = [(-1.2, 1.0, 0.25, 0.15), (1.0, 1.2, 0.25, 0.15), (-0.9, -1.3, 0.25, 0.15), (1.3, -0.7, 0.25, 0.15)]


def _traps() -> Surface:
    vg = _gaussian_wells(0.15, _TRAP_WELLS)
    return Surface(
        "traps", lambda p: vg(p)[0], value_and_grad=vg,
        description="a bowl 0.15 (x^2 + y^2) with four narrow Gaussian dips (depth 0.25, width 0.15) that "
        "trap plain gradient descent in local minima",
        domain=((-2.0, 2.0), (-2.0, 2.0)), start=(-1.8, 1.5),
        minima=[Minimum(*m) for m in _TRAPS_MINIMA], saddles=[],
        suggested_lr={"gradient": 0.05, "adaptive": 0.02},
    )


# name -> (factory, {parameter: (default, allowed values)})
_BUILTINS: dict[str, tuple[Callable[..., Surface], dict[str, tuple[float, Interval]]]] = {
    "bowl": (_bowl, {}),
    "valley": (_valley, {"condition": (25.0, Interval(float, 1.0, 1e6))}),
    "rosenbrock": (_rosenbrock, {"a": (1.0, Interval(float, -1.5, 1.5)), "b": (100.0, Interval(float, 1e-3, 1e4))}),
    "beale": (_beale, {}),
    "himmelblau": (_himmelblau, {}),
    "rastrigin": (_rastrigin, {"A": (10.0, Interval(float, 0.0, 100.0))}),
    "ackley": (_ackley, {}),
    "camel": (_camel, {}),
    "saddle": (_saddle, {}),
    "monkey_saddle": (_monkey_saddle, {}),
    "plateau": (_plateau, {"width": (1.0, Interval(float, 0.05, 10.0))}),
    "sharp_flat": (_sharp_flat, {}),
    "traps": (_traps, {}),
}


def names() -> list[str]:
    """The names of the built-in surfaces, in a fixed order."""
    return list(_BUILTINS)


def param_info(name: str) -> dict[str, tuple[float, float, float]]:
    """The parameters of a built-in surface: ``{param: (default, min, max)}`` (``{}`` if it has none)."""
    if name not in _BUILTINS:
        raise ValueError(f"unknown surface {name!r}; allowed: {', '.join(_BUILTINS)}")
    return {key: (default, allowed.low, allowed.high) for key, (default, allowed) in _BUILTINS[name][1].items()}


def get(name: str | Surface, **params: float) -> Surface:
    """The built-in surface ``name`` with keyword parameters where it has them (e.g. ``condition=25``).

    A :class:`Surface` passed as ``name`` is returned unchanged (then ``params`` must be empty). Unknown
    names, unknown parameters and out-of-range values raise ``ValueError`` listing what is allowed.
    """
    if isinstance(name, Surface):
        if params:
            raise ValueError(f"params cannot be given with a Surface object, got {sorted(params)}")
        return name
    if not isinstance(name, str) or name not in _BUILTINS:
        raise ValueError(f"unknown surface {name!r}; allowed: {', '.join(_BUILTINS)}")
    factory, spec = _BUILTINS[name]
    kwargs: dict[str, float] = {}
    for key, value in params.items():
        if key not in spec:
            allowed = ", ".join(spec) if spec else "none (this surface has no parameters)"
            raise ValueError(f"surface {name!r} has no parameter {key!r}; allowed: {allowed}")
        kwargs[key] = check(key, value, spec[key][1], where=f"surface {name!r}: ")
    return factory(**kwargs)


def parse(
    text: str,
    domain: Domain = ((-2.0, 2.0), (-2.0, 2.0)),
    start: tuple[float, float] | None = None,
    name: str = "custom",
) -> Surface:
    """A surface from an expression in ``x`` and ``y``, e.g. ``parse("sin(3*x)*y + x**2")``.

    The text goes through the whitelist parser of :mod:`ravine._expr` (numbers, ``x``, ``y``, ``pi``, ``e``,
    ``+ - * / **`` (or ``^``), parentheses, and sin cos tan exp log sqrt abs tanh sinh cosh min max), never
    through ``eval``. Anything else raises :class:`ExpressionError` (a ``ValueError``) naming the position.
    Minima of a parsed surface are unknown (``minima == []``). The default ``start`` is at one eighth of
    the box from its top-left corner.
    """
    fn = parse_expression(text)
    (x0, x1), (y0, y1) = domain
    if start is None:
        start = (x0 + (x1 - x0) / 8.0, y1 - (y1 - y0) / 8.0)
    return Surface(
        name, fn, description=f"f = {text.strip()}", domain=domain, start=start, expression=text,
        suggested_lr={"gradient": 0.01, "adaptive": 0.05},
    )
