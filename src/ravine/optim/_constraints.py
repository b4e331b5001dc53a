"""The allowed range of every hyperparameter of :mod:`ravine.optim`, and the checks made from it.

``CONSTRAINTS`` is the one table: the transforms, the named optimizers, the torch-style classes and
the web API's pydantic bounds all read it, so the library and the API can never disagree. A value
is checked by :func:`check_hyper`: a number through :func:`ravine._validation.check`, a tensor by its
smallest and largest element, a schedule (a callable ``step -> float``) not at all (a ravine
schedule validates itself; the optimizer checks each value it takes from one). A structural switch
(a factory argument annotated ``bool``) is checked by :func:`check_flag` when the factory is called.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from torch import Tensor

from .._validation import Interval, Options, check

__all__ = ["CONSTRAINTS", "FLAG", "check_flag", "check_hyper", "check_option"]

# Every range is finite: an infinite (or NaN) learning rate, epsilon or decay is never a setting,
# it turns the parameters into inf/NaN on the first step. ``[0, inf)`` is written so in messages.
_UNIT = Interval(float, 0, 1, closed="left")  # [0, 1): a decay rate
_NONNEGATIVE = Interval.finite(float, 0)  # [0, inf)
_POSITIVE = Interval.finite(float, 0, low_open=True)  # (0, inf)

CONSTRAINTS: dict[str, Interval | Options] = {
    "lr": _NONNEGATIVE,
    "lr_peak": Interval(float, 0, None, closed="neither"),
    "lr_decay": _NONNEGATIVE,
    "factor": Interval.finite(float),
    "b1": _UNIT,
    "b2": _UNIT,
    "betas": _UNIT,  # each of the pair (beta1, beta2)
    "beta": _UNIT,
    "alpha": _UNIT,
    "momentum": _UNIT,
    "dampening": Interval(float, 0, 1),
    "eps": _NONNEGATIVE,
    "weight_decay": _NONNEGATIVE,
    "initial_accumulator_value": _NONNEGATIVE,
    "max_norm": _POSITIVE,
    "clip": _POSITIVE,
    "clipping": _POSITIVE,
    "form": Options(("ema", "heavy_ball")),
    "convention": Options(("torch", "decoupled")),
    "decay_convention": Options(("torch", "decoupled")),
    # Schedule-Free (ravine.optim.schedule_free)
    "warmup_steps": Interval(int, 0, None),
    "r": Interval(float, 0, None, closed="left"),
    "weight_lr_power": Interval(float, 0, None, closed="left"),
    # SOAP (ravine.optim.soap)
    "shampoo_beta": _UNIT,
    "precondition_frequency": Interval(int, 1, None),
    "max_precondition_dim": Interval(int, 1, None),
    # ADOPT (ravine.optim.adopt): the normalised gradient is clipped to t ** clip_exponent
    "clip_exponent": Interval.finite(float, 0),
    # Adafactor (ravine.optim.adafactor): torch.optim.Adafactor's ranges
    "beta2_decay": Interval.finite(float, None, 0),
    "eps1": _NONNEGATIVE,
    "eps2": _NONNEGATIVE,
    "d": Interval.finite(float, 1),
    # Muon (ravine.optim.muon)
    "ns_steps": Interval(int, 1, 100, closed="left"),
    "adjust_lr": Options((None, "original", "match_rms_adamw")),
    "momentum_form": Options(("ema", "heavy_ball")),
    # add_noise (Neelakantan et al. 2015; Optax's add_noise): variance eta / (t + 1) ** gamma
    "eta": _NONNEGATIVE,
    "gamma": _NONNEGATIVE,
}
"""Hyperparameter name -> allowed values (a number's interval, or the choices of a string)."""


def check_hyper(name: str, value: Any, *, where: str = "", key: str | None = None) -> None:
    """Check a hyperparameter against ``CONSTRAINTS[key or name]``: a number, every element of a
    tensor; a schedule is not evaluated here. ``TypeError`` for anything else.

    The message is ``"{where}{name} must be in [lo, hi], got v"`` (a tensor shows its range).
    """
    interval = CONSTRAINTS[key or name]
    if callable(value) and not isinstance(value, Tensor):
        return
    if isinstance(value, Tensor):
        if value.numel() == 0:
            return
        low, high = value.min().item(), value.max().item()
        if not (interval.contains(low) and interval.contains(high)):
            shown = f"tensor with values in [{low:g}, {high:g}]"
            raise ValueError(f"{where}{name} must be {interval.describe()}, got {shown}")
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{where}{name} must be a float, a schedule (callable step -> float) or a tensor, "
            f"got {type(value).__name__} {value!r}"
        )
    check(name, value, interval, where=where)


FLAG = Options((False, True))
"""A structural switch (``nesterov``, ``amsgrad``, ``maximize``...): a bool, nothing truthy."""


def check_flag(name: str, value: Any, *, where: str = "") -> bool:
    """``value`` as a Python ``bool`` if it is one (a numpy bool too), else ``TypeError``.

    A string such as ``"no"`` is truthy, so accepting it would silently switch the option on;
    ``0``/``1`` are rejected too, as torch's own flags are documented as bools. The message is
    ``"{where}{name} must be one of False, True, got str 'no'"``.
    """
    if isinstance(value, np.bool_):
        value = bool(value)
    if not isinstance(value, bool):
        raise TypeError(f"{where}{name} must be {FLAG.describe()}, got {type(value).__name__} {value!r}")
    return check(name, value, FLAG, where=where)


def check_option(name: str, value: Any, *, where: str = "") -> None:
    """Check a structural choice (``form``, ``convention``...) against ``CONSTRAINTS[name]``."""
    check(name, value, CONSTRAINTS[name], where=where)
