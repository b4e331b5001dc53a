"""One mechanism for allowed values: a constraint describes them, one function checks and says so.

scikit-learn's parameter validation in miniature. A constraint is an :class:`Interval` (real or
integer, each end open, closed or unbounded) or an :class:`Options` (a fixed set of choices). The
same object

- checks a value: :func:`check` returns the value (an integral float as ``int`` for an integer
  interval) or raises ``TypeError``/``ValueError`` with one message shape,
  ``"{where}{name} must be in [lo, hi), got v"`` / ``"... must be one of 'a', 'b', got 'c'"``;
- gives pydantic its bounds: :meth:`Interval.field_bounds` is ``{"ge": lo, "lt": hi}`` and so on,
  so a web API built on the same constraint can never accept what the library rejects (or the
  reverse).

Pure Python on purpose: the core (``ravine.optim``, ``ravine.schedules``) imports it, and so does
every layer above. Tensors and schedules are checked by the callers that own them (``ravine.optim``
checks a tensor's min and max against the interval with :meth:`Interval.contains`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Interval", "Options", "check", "describe", "fmt_number"]

Closed = Literal["both", "left", "right", "neither"]


def fmt_number(x: float | None, *, low: bool = True) -> str:
    """A bound as people write it: ``0``, ``1e-08``, ``0.999``, ``inf``/``-inf`` for none."""
    if x is None:
        return "-inf" if low else "inf"
    if isinstance(x, numbers.Integral):
        return str(int(x))
    return f"{x:g}"


_CLOSED: dict[tuple[bool, bool], Closed] = {
    (True, True): "both",
    (True, False): "left",
    (False, True): "right",
    (False, False): "neither",
}


def _tighter(a: tuple[float, bool], b: tuple[float, bool], pick: Any) -> tuple[float, bool]:
    """Of two ends ``(value, closed)``, the one ``pick`` (``max`` for lows, ``min`` for highs) keeps."""
    if a[0] == b[0]:
        return a[0], a[1] and b[1]
    return a if pick(a[0], b[0]) == a[0] else b


@dataclass(frozen=True)
class Interval:
    """Real or integer values between ``low`` and ``high`` (``None``: unbounded on that side).

    ``closed`` says which ends belong to the interval, as in scikit-learn: ``"both"``, ``"left"``,
    ``"right"`` or ``"neither"``. An unbounded end is written ``inf`` and is closed exactly when
    ``closed`` includes it (``Interval(float, 0, None)`` allows ``inf``; ``closed="left"`` does not).
    NaN is never in an interval.
    """

    kind: type
    low: float | None = None
    high: float | None = None
    closed: Closed = "both"

    def __post_init__(self) -> None:
        if self.kind not in (float, int):
            raise TypeError(f"Interval kind must be float or int, got {self.kind!r}")
        if self.closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"Interval closed must be one of 'both', 'left', 'right', 'neither', got {self.closed!r}")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"Interval low must be <= high, got [{self.low}, {self.high}]")

    @classmethod
    def finite(
        cls,
        kind: type,
        low: float | None = None,
        high: float | None = None,
        *,
        low_open: bool = False,
        high_open: bool = False,
    ) -> Interval:
        """Finite values between ``low`` and ``high``: an unbounded end excludes its infinity."""
        return cls(kind, low, high, _CLOSED[(low is not None and not low_open, high is not None and not high_open)])

    def intersect(self, other: Interval) -> Interval:
        """The values both intervals allow, of ``self``'s kind; of two equal ends the open one wins.

        This is how a caller narrows a library range (e.g. the web API caps ``lr`` at 1000): an
        intersection can never allow what the library rejects.
        """
        low, low_closed = _tighter(self._end(low=True), other._end(low=True), max)
        high, high_closed = _tighter(self._end(low=False), other._end(low=False), min)
        return Interval(
            self.kind,
            None if math.isinf(low) else low,
            None if math.isinf(high) else high,
            _CLOSED[(low_closed, high_closed)],
        )

    def _end(self, *, low: bool) -> tuple[float, bool]:
        """One end as ``(value, closed)``, an unbounded end as an infinity."""
        if low:
            return (-math.inf if self.low is None else self.low), self.low_closed
        return (math.inf if self.high is None else self.high), self.high_closed

    @property
    def low_closed(self) -> bool:
        return self.closed in ("both", "left")

    @property
    def high_closed(self) -> bool:
        return self.closed in ("both", "right")

    def contains(self, v: float) -> bool:
        """Whether the number ``v`` lies in the interval (NaN never does)."""
        if math.isnan(v):
            return False
        if self.low is None:
            if v == -math.inf and not self.low_closed:
                return False
        elif v < self.low or (v == self.low and not self.low_closed):
            return False
        if self.high is None:
            if v == math.inf and not self.high_closed:
                return False
        elif v > self.high or (v == self.high and not self.high_closed):
            return False
        return True

    def __str__(self) -> str:
        left = "[" if self.low_closed else "("
        right = "]" if self.high_closed else ")"
        return f"{left}{fmt_number(self.low)}, {fmt_number(self.high, low=False)}{right}"

    def describe(self) -> str:
        return f"an integer in {self}" if self.kind is int else f"in {self}"

    def field_bounds(self) -> dict[str, float]:
        """The interval as pydantic ``Field`` keywords (``ge``/``gt``/``le``/``lt``)."""
        out: dict[str, float] = {}
        if self.low is not None:
            out["ge" if self.low_closed else "gt"] = self.low
        if self.high is not None:
            out["le" if self.high_closed else "lt"] = self.high
        return out


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values (strings, booleans, numbers); compared with ``==``."""

    values: tuple[Any, ...]

    def __init__(self, values: Iterable[Any]) -> None:
        object.__setattr__(self, "values", tuple(values))
        if not self.values:
            raise ValueError("Options needs at least one allowed value")

    def __str__(self) -> str:
        return ", ".join(map(repr, self.values))

    def describe(self) -> str:
        return f"one of {self}"

    def contains(self, v: Any) -> bool:
        return any(type(v) is type(a) and v == a for a in self.values) or (
            not isinstance(v, bool) and any(not isinstance(a, bool) and v == a for a in self.values)
        )


Constraint = Interval | Options


def describe(constraint: Constraint) -> str:
    """What the constraint allows, in the words the error messages use."""
    return constraint.describe()


def _as_number(name: str, value: Any, interval: Interval, where: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        noun = "an integer" if interval.kind is int else "a number"
        raise TypeError(f"{where}{name} must be {noun} in {interval}, got {type(value).__name__} {value!r}")
    if interval.kind is int:
        if isinstance(value, numbers.Integral):
            return int(value)
        v = float(value)
        if math.isfinite(v) and v.is_integer():
            return int(v)
        raise ValueError(f"{where}{name} must be {interval.describe()}, got {value!r}")
    return float(value)


def check(name: str, value: Any, constraint: Constraint, *, where: str = "") -> Any:
    """``value`` if the constraint allows it (numbers converted to the interval's kind), else an error.

    ``TypeError`` when the value is of the wrong kind (a bool or a string where a number goes, a
    non-integral float for an integer interval is a ``ValueError``), ``ValueError`` when it is out of
    range or not among the options. ``where`` prefixes the message (e.g. ``"adam: "``).
    """
    if isinstance(constraint, Options):
        if not constraint.contains(value):
            raise ValueError(f"{where}{name} must be {constraint.describe()}, got {value!r}")
        return value
    v = _as_number(name, value, constraint, where)
    if not constraint.contains(v):
        raise ValueError(f"{where}{name} must be {constraint.describe()}, got {value!r}")
    return v
