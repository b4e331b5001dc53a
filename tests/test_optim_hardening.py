"""Bad hyperparameters and extreme gradients (issue 14): a clear error, or torch's numbers.

Oracles: torch.optim (SGD, Adam, AdamW, RMSprop, Adagrad) and ``torch.nn.utils.clip_grad_norm_``
stepped on the same float32 gradients of 1e20 (finite, but their sum of squares overflows float32,
so their 2-norm is ``inf`` in torch too); Python's own ``bool`` for what a switch accepts.
"""

from __future__ import annotations

import math
import shutil
import warnings

import numpy as np
import pytest
import torch

import ravine.optim as ro

TORCH = {
    "SGD": (ro.SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-2}),
    "Adam": (ro.Adam, torch.optim.Adam, {"lr": 0.1}),
    "AdamW": (ro.AdamW, torch.optim.AdamW, {"lr": 0.1}),
    "RMSprop": (ro.RMSprop, torch.optim.RMSprop, {"lr": 0.01, "momentum": 0.5}),
    "Adagrad": (ro.Adagrad, torch.optim.Adagrad, {"lr": 0.1}),
}

needs_compiler = pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None and not torch.cuda.is_available(),
    reason="torch.compile on CPU needs a C++ compiler",
)


def params_pair():
    """Two parameters (two tensors, one param group), and an identical copy for torch."""
    torch.manual_seed(3)
    ours = [torch.nn.Parameter(torch.randn(10)), torch.nn.Parameter(torch.randn(4, 3))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    return ours, theirs


def set_grads(ours, theirs, value=1e20):
    for p, q in zip(ours, theirs):
        p.grad = torch.full_like(p, value)
        q.grad = p.grad.clone()


# ------------------------------------------------------------------------------------------------
# hyperparameters


@pytest.mark.parametrize("name", list(TORCH))
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_a_non_finite_learning_rate_is_rejected(name, value):
    cls, _, kw = TORCH[name]
    p = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match=r"lr must be in \[0, inf\), got -?(inf|nan)"):
        cls([p], **{**kw, "lr": value})


@pytest.mark.parametrize(
    "factory, name",
    [
        (ro.scale_by_adam, "eps"),
        (ro.add_decayed_weights, "weight_decay"),
        (ro.add_l2, "weight_decay"),
        (ro.scale_by_rss, "initial_accumulator_value"),
        (ro.clip_by_global_norm, "max_norm"),
        (ro.clip_by_value, "clip"),
        (ro.scale, "factor"),
    ],
)
def test_non_finite_hyperparameters_are_rejected_by_the_constraints_table(factory, name):
    interval = ro.CONSTRAINTS[name]
    assert not interval.contains(math.inf) and not interval.contains(-math.inf)
    for value in (math.inf, math.nan):
        with pytest.raises(ValueError, match=rf"{name} must be in .*, got {value}"):
            factory(**{name: value})
    with pytest.raises(ValueError, match=rf"{name} must be in .*, got tensor with values in"):
        factory(**{name: torch.tensor([1.0, math.inf], dtype=torch.float64)})


def test_a_non_finite_learning_rate_in_a_param_group_is_rejected():
    p, q = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match=r"lr must be in \[0, inf\), got inf"):
        ro.SGD([{"params": [p]}, {"params": [q], "lr": math.inf}], lr=0.1)


@pytest.mark.parametrize(
    "make, flag",
    [
        (lambda v: ro.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1, momentum=0.9, nesterov=v), "nesterov"),
        (lambda v: ro.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1, maximize=v), "maximize"),
        (lambda v: ro.Adam([torch.nn.Parameter(torch.ones(2))], amsgrad=v), "amsgrad"),
        (lambda v: ro.Adam([torch.nn.Parameter(torch.ones(2))], decoupled_weight_decay=v), "decoupled_weight_decay"),
        (lambda v: ro.RMSprop([torch.nn.Parameter(torch.ones(2))], centered=v), "centered"),
        (lambda v: ro.sgd(0.1, momentum=0.9, nesterov=v), "nesterov"),
        (lambda v: ro.adam(1e-3, bias_correction=v), "bias_correction"),
        (lambda v: ro.trace(0.9, nesterov=v), "nesterov"),
        (lambda v: ro.clip_by_global_norm(1.0, per_row=v), "per_row"),
    ],
)
def test_a_switch_must_be_a_bool(make, flag):
    """``nesterov="no"`` is truthy: accepted, it would switch Nesterov on. Only bools are switches."""
    for bad in ("no", "false", 0, 1, None, 1.0):
        with pytest.raises(TypeError, match=rf"{flag} must be one of False, True, got {type(bad).__name__} "):
            make(bad)
    for good in (False, True, np.bool_(True)):
        make(good)


def test_a_switch_set_by_a_param_group_must_be_a_bool():
    p, q = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    with pytest.raises(TypeError, match="nesterov must be one of False, True, got str 'no'"):
        ro.Optimizer([{"params": [p]}, {"params": [q], "nesterov": "no"}], ro.sgd(0.1, momentum=0.9))


def test_a_numpy_bool_switch_is_the_same_optimizer_as_a_python_bool():
    a, b = params_pair()
    set_grads(a, b, 1.0)
    o1 = ro.SGD(a, lr=0.1, momentum=0.9, nesterov=np.bool_(True))
    o2 = torch.optim.SGD(b, lr=0.1, momentum=0.9, nesterov=True)
    for _ in range(3):
        o1.step()
        o2.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q)


def test_a_schedule_that_returns_nan_is_named_with_its_step():
    p = torch.nn.Parameter(torch.ones(3))

    def falls_apart(t: int) -> float:
        return 0.1 if t < 2 else math.nan

    opt = ro.Optimizer([p], ro.sgd(falls_apart))
    for _ in range(2):
        p.grad = torch.ones(3)
        opt.step()
    before = p.detach().clone()
    for _ in range(2):  # the error repeats as is (the group is not left holding the NaN)
        with pytest.raises(ValueError, match=r"schedule of group\['lr'\] \(falls_apart\) returned nan at step 2"):
            opt.step()
    assert torch.equal(p.detach(), before) and opt.state[p]["step"] == 2
    assert opt.param_groups[0]["lr"] == 0.1


def test_a_schedule_that_returns_inf_at_the_start_is_named():
    p = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match=r"returned inf at step 0"):
        ro.Optimizer([p], ro.sgd(lambda t: math.inf))


# ------------------------------------------------------------------------------------------------
# large finite gradients: torch's numbers, not a skipped step


@pytest.mark.parametrize("fused", [False, "flat"])
@pytest.mark.parametrize("name", list(TORCH))
def test_large_finite_gradients_are_applied_as_torch_applies_them(name, fused):
    """Every gradient is 1e20 (float32): its 2-norm overflows, yet nothing is inf or nan. torch
    steps; so does ravine (no skipped step, no warning), to float rounding."""
    ours_cls, torch_cls, kw = TORCH[name]
    a, b = params_pair()
    assert not torch.linalg.vector_norm(torch.full((10,), 1e20)).isfinite()  # the overflow is real
    o1, o2 = ours_cls(a, **kw, fused=fused), torch_cls(b, **kw, foreach=False)
    for _ in range(3):
        set_grads(a, b)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            o1.step()
        o2.step()
    assert o1.skipped_steps == 0
    for p, q in zip(a, b):
        assert p.isfinite().all() == q.isfinite().all()
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fused", [False, "flat"])
def test_a_real_nan_next_to_large_finite_gradients_skips_naming_its_parameter(fused):
    a, b = params_pair()
    opt = ro.SGD(a, lr=0.1, fused=fused)
    set_grads(a, b)
    a[1].grad[2, 1] = math.nan
    before = [p.detach().clone() for p in a]
    with pytest.warns(RuntimeWarning, match=r"non-finite gradient \(inf or nan\) in parameter group 0 param 1"):
        opt.step()
    assert opt.skipped_steps == 1 and all(torch.equal(p.detach(), x) for p, x in zip(a, before))


def clip_then(step_cls, max_norm=1.0):
    return ro.chain(ro.clip_by_global_norm(max_norm), step_cls)


@pytest.mark.parametrize("fused", [False, "flat"])
def test_a_clip_norm_that_overflows_is_inf_as_in_torch_and_applied_with_apply(fused):
    """``clip_grad_norm_`` over 1e20 gradients returns inf (torch does not rescale before squaring)
    and multiplies them by ``max_norm / (inf + 1e-6) = 0``; with ``nonfinite="apply"`` ravine does
    exactly that: the stats say ``inf`` and Adam steps with a zero gradient."""
    a, b = params_pair()
    o1 = ro.Optimizer(a, clip_then(ro.torch_adam(0.1)), nonfinite="apply", fused=fused)
    o2 = torch.optim.Adam(b, lr=0.1, foreach=False)
    for _ in range(2):
        set_grads(a, b, 1.0)  # a normal step first, so the zero-gradient step moves the weights
        o1.step()
        torch.nn.utils.clip_grad_norm_(b, 1.0)
        o2.step()
    set_grads(a, b)
    o1.step()
    expected_norm = torch.nn.utils.clip_grad_norm_(b, 1.0)
    assert expected_norm == math.inf
    o2.step()
    assert o1.stats["grad_norm"] == math.inf
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=0)
        torch.testing.assert_close(o1.state[p]["exp_avg"], o2.state[q]["exp_avg"], rtol=1e-6, atol=0)


@pytest.mark.parametrize("fused", [False, "flat"])
def test_a_clip_norm_that_overflows_skips_the_step_and_says_it_is_an_overflow(fused):
    a, b = params_pair()
    opt = ro.Optimizer(a, clip_then(ro.torch_sgd(0.1)), fused=fused)
    set_grads(a, b)
    before = [p.detach().clone() for p in a]
    with pytest.warns(RuntimeWarning, match=r"norm is not finite although every gradient is .*overflows"):
        opt.step()
    assert opt.skipped_steps == 1 and all(torch.equal(p.detach(), x) for p, x in zip(a, before))
    opt2 = ro.Optimizer([torch.nn.Parameter(p.detach().clone()) for p in a], clip_then(ro.torch_sgd(0.1)),
                        nonfinite="raise", fused=fused)
    for p in opt2.param_groups[0]["params"]:
        p.grad = torch.full_like(p, 1e20)
    with pytest.raises(FloatingPointError, match="clip_grad_norm_ returns inf there too"):
        opt2.step()


@needs_compiler
def test_compiled_step_applies_large_finite_gradients_like_torch():
    """The compiled graph's folded check (no clipping in the chain) reads the largest ``|g|``, so
    1e20 gradients are stepped as torch steps them, and a nan still skips."""
    a, b = params_pair()
    o1 = ro.SGD(a, lr=0.1, momentum=0.9, fused="compile")
    o2 = torch.optim.SGD(b, lr=0.1, momentum=0.9, foreach=False)
    for _ in range(2):
        set_grads(a, b)
        o1.step()
        o2.step()
    assert o1.skipped_steps == 0
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    set_grads(a, b)
    a[0].grad[3] = math.nan
    before = [p.detach().clone() for p in a]
    with pytest.warns(RuntimeWarning, match=r"non-finite gradient \(inf or nan\) in parameter group 0 param 0"):
        o1.step()
    assert o1.skipped_steps == 1 and all(torch.equal(p.detach(), x) for p, x in zip(a, before))
