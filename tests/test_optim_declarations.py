"""What transforms declare where they are defined: allowed ranges (``ravine.optim.CONSTRAINTS``) and
whether the fused path may run them (``@transform(fusable=True)``)."""

from __future__ import annotations

import dataclasses
import math
import re
import warnings

import pytest
import torch

import ravine.optim as ro
from ravine._validation import Interval, Options
from ravine.optim.fused import check_fusable

# (factory, hyperparameter) pairs: every check of a primitive comes from the one table
CHECKED = [
    (ro.scale_by_learning_rate, "lr"),
    (ro.scale_by_adam, "b1"),
    (ro.scale_by_adam, "b2"),
    (ro.scale_by_adam, "eps"),
    (ro.trace, "beta"),
    (ro.trace, "dampening"),
    (ro.trace, "form"),
    (ro.scale_by_rms, "beta"),
    (ro.scale_by_rss, "initial_accumulator_value"),
    (ro.add_decayed_weights, "weight_decay"),
    (ro.add_decayed_weights, "convention"),
    (ro.add_l2, "weight_decay"),
    (ro.clip_by_global_norm, "max_norm"),
    (ro.clip_by_value, "clip"),
    (ro.clip_adaptive, "clipping"),
    (ro.adagrad, "lr_decay"),
    (ro.adamw, "decay_convention"),
    (ro.torch_rmsprop, "alpha"),
    (ro.torch_sgd, "momentum"),
]


def edges(c: Interval) -> list[tuple[float, bool]]:
    """Values at and just beyond each finite end of the interval, with whether it allows them."""
    out = []
    if c.low is not None:
        out += [(c.low, c.low_closed), (math.nextafter(c.low, -math.inf), False)]
    if c.high is not None:
        out += [(c.high, c.high_closed), (math.nextafter(c.high, math.inf), False)]
    return out


@pytest.mark.parametrize("factory, name", CHECKED, ids=[f"{f.__name__}-{n}" for f, n in CHECKED])
def test_checks_follow_the_constraints_table(factory, name):
    c = ro.CONSTRAINTS[name]
    if isinstance(c, Options):
        for v in c.values:
            factory(**{name: v})
        with pytest.raises(ValueError, match=f"{name} must be one of"):
            factory(**{name: "nonsense"})
        return
    assert edges(c), f"{name}: an interval without a finite end checks nothing"
    for v, allowed in edges(c):
        if allowed:
            factory(**{name: v})
        else:
            with pytest.raises(ValueError, match=re.escape(f"{name} must be in {c}, got")):
                factory(**{name: v})
    # a tensor is checked element by element against the same interval
    low = c.low if c.low is not None else -1.0
    bad = next(v for v, ok in edges(c) if not ok)
    with pytest.raises(ValueError, match="tensor with values in"):
        factory(**{name: torch.tensor([[low + 1e-3 if not c.low_closed else low], [bad]], dtype=torch.float64)})


def test_constraints_give_pydantic_bounds():
    assert ro.CONSTRAINTS["eps"].field_bounds() == {"ge": 0}
    assert ro.CONSTRAINTS["b1"].field_bounds() == {"ge": 0, "lt": 1}
    assert ro.CONSTRAINTS["max_norm"].field_bounds() == {"gt": 0}


@ro.transform(fusable=True)
def _halve() -> ro.Transform:
    """``u = g / 2``, elementwise: declared fusable where it is defined."""

    def update(u, state, params=None):
        torch._foreach_mul_(u, 0.5)
        return u, {"step": state["step"] + 1}

    return ro.Transform(lambda params: {"step": 0}, update)


@ro.transform()
def _halve_undeclared() -> ro.Transform:
    return ro.Transform(lambda params: {"step": 0}, _halve().update)


def test_a_primitive_declares_itself_fusable():
    assert check_fusable(ro.chain(_halve(), ro.sgd(0.1))) is None
    assert "_halve_undeclared" in check_fusable(ro.chain(_halve_undeclared(), ro.sgd(0.1)))
    assert "data-dependent" in check_fusable(ro.clip_by_value(1.0), compile=True)
    models = [torch.nn.Linear(5, 3).double() for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [ro.Optimizer(m.parameters(), ro.chain(_halve(), ro.torch_sgd(0.1, momentum=0.9)), fused=f)
            for m, f in zip(models, (False, "flat"))]
    X = torch.randn(8, 5, dtype=torch.float64)
    for _ in range(5):
        for m, o in zip(models, opts):
            o.zero_grad()
            m(X).pow(2).mean().backward()
            o.step()
    assert opts[1]._fused.groups  # it ran on flat buffers
    for a, b in zip(*(m.parameters() for m in models)):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=0)


def test_group_values_are_filled_only_where_a_transform_needs_them():
    """Decoupled AdamW needs the group's peak learning rate (a torch scheduler's ``initial_lr``):
    ``p = p (1 - wd * lr_t / peak) - ...``; torch's convention needs nothing and never warns."""
    w = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = ro.Optimizer([w], ro.adamw(0.1, weight_decay=0.01, decay_convention="decoupled"))
    assert opt.transform.needs == {"lr_peak"}
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5**k)
    for _ in range(3):
        w.grad = torch.zeros(3, dtype=torch.float64)
        opt.step()
        sched.step()
    torch.testing.assert_close(w.detach(), torch.ones(3, dtype=torch.float64) * 0.99 * 0.995 * 0.9975)
    assert not ro.adamw(0.1).needs and not ro.adamw(0.1, decay_convention="decoupled", lr_peak=0.1).needs
    v = torch.nn.Parameter(torch.ones(3))
    opt = ro.Optimizer([v], ro.adamw(0.01))
    v.grad = torch.zeros(3)
    opt.step()
    opt.param_groups[0]["lr"] = 0.1  # a hand-written warmup: fine for torch's convention
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()


def test_a_need_the_optimizer_cannot_fill_is_refused():
    t = dataclasses.replace(ro.sgd(0.1), needs=frozenset({"batch_size"}))
    with pytest.raises(ValueError, match=r"needs \['batch_size'\]; the optimizer provides \['lr_peak'\]"):
        ro.Optimizer([torch.nn.Parameter(torch.ones(2))], t)
