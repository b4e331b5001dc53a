"""Argument checks of the harness: :mod:`ravine._validation`'s constraints, with ints kept ints.

A config field or dataset argument that counts something must be a Python (or numpy) integer, not a
float that happens to be integral: configs are hashed from their JSON, and ``2`` and ``2.0`` would
name two different runs. So :func:`integer` refuses floats with a ``TypeError`` before the range
check, which is ``ravine._validation.check`` and its one message shape.
"""

from __future__ import annotations

import numbers
from typing import Any

from ravine._validation import Interval, check

__all__ = ["integer", "NATURAL", "POSITIVE", "FRACTION"]

NATURAL = Interval(int, 0, None, closed="left")  # 0, 1, 2, ...
POSITIVE = Interval(int, 1, None, closed="left")  # 1, 2, 3, ...
FRACTION = Interval(float, 0, 1, closed="neither")  # a share of a split


def integer(name: str, value: Any, interval: Interval = POSITIVE) -> int:
    """``value`` as an ``int`` if it is an integer in ``interval``; ``TypeError`` for any other type."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    return check(name, int(value), interval)
