"""ravine.schedules against published formulas (HF transformers, optax, Vaswani et al.) and torch's
own LR schedulers stepping a real optimizer."""

from __future__ import annotations

import dataclasses
import io
import math
import pickle
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import ravine.schedules as S

# --------------------------------------------------------------------------------------------
# Reference formulas, written from the peers' documentation (multipliers of the optimizer's lr).


def hf_linear(t, w, T):
    """transformers.get_linear_schedule_with_warmup."""
    if t < w:
        return t / max(1, w)
    return max(0.0, (T - t) / max(1, T - w))


def hf_cosine(t, w, T, num_cycles=0.5, min_lr_rate=0.0):
    """transformers.get_cosine_schedule_with_warmup / get_cosine_with_min_lr_schedule_with_warmup."""
    if t < w:
        return t / max(1, w)
    progress = (t - w) / max(1, T - w)
    factor = 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress))
    factor = factor * (1 - min_lr_rate) + min_lr_rate
    return max(0.0, factor)


def hf_wsd(t, w, s, d, decay_type="cosine", min_lr_ratio=0.0, num_cycles=0.5):
    """transformers.get_wsd_schedule (linear warmup)."""
    if t < w:
        factor = t / max(1, w)
        return max(0.0, factor * (1.0 - min_lr_ratio) + min_lr_ratio)
    if t < w + s:
        return 1.0
    if t < w + s + d:
        progress = (t - w - s) / max(1, d)
        if decay_type == "linear":
            factor = 1.0 - progress
        elif decay_type == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress))
        else:  # "1-sqrt"
            factor = 1.0 - math.sqrt(progress)
        return max(0.0, factor * (1.0 - min_lr_ratio) + min_lr_ratio)
    return min_lr_ratio


def hf_inverse_sqrt(t, w, timescale=None):
    """transformers.get_inverse_sqrt_schedule."""
    if timescale is None:
        timescale = w or 10_000
    if t < w:
        return t / max(1, w)
    shift = timescale - w
    return 1.0 / math.sqrt((t + shift) / timescale)


def noam(n, d_model, warmup):
    """Vaswani et al. 2017, eq. (3): lrate = d^-0.5 * min(n^-0.5, n * warmup^-1.5), n from 1."""
    return d_model**-0.5 * min(n**-0.5, n * warmup**-1.5)


def optax_linear(t, init, end, transition_steps):
    """optax.linear_schedule."""
    frac = min(max(t, 0), transition_steps) / transition_steps
    return init + (end - init) * frac


def optax_cosine_decay(t, init, decay_steps, alpha=0.0, exponent=1.0):
    """optax.cosine_decay_schedule."""
    t = min(t, decay_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * t / decay_steps))
    return init * ((1 - alpha) * cosine**exponent + alpha)


def optax_join(t, schedules, boundaries):
    """optax.join_schedules: later schedules see step - boundary."""
    out = schedules[0](t)
    for b, s in zip(boundaries, schedules[1:], strict=True):
        out = out if t < b else s(t - b)
    return out


def optax_warmup_cosine(t, init, peak, warmup, decay_steps, end=0.0):
    """optax.warmup_cosine_decay_schedule (decay_steps includes the warmup)."""
    return optax_join(
        t,
        [
            lambda u: optax_linear(u, init, peak, warmup),
            lambda u: optax_cosine_decay(u, peak, decay_steps - warmup, alpha=end / peak),
        ],
        [warmup],
    )


def close(a, b, rel=1e-12, abs_=1e-15):
    return np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=rel, atol=abs_)


# --------------------------------------------------------------------------------------------
# conventions

PEAK = 3e-4


def test_warmup_starts_above_zero_and_reaches_peak_at_end_of_warmup():
    s = S.warmup_cosine(PEAK, 10, 100)
    vals = S.evaluate(s, 10)
    assert close(vals, [PEAK * (t + 1) / 10 for t in range(10)])
    assert s(0) == pytest.approx(PEAK / 10, rel=1e-15)
    assert s(8) < PEAK and s(9) == PEAK
    assert s(10) < PEAK  # the decay starts right after the peak step


def test_decay_ends_at_final_and_stays():
    s = S.warmup_cosine(PEAK, 10, 100, final=1e-5)
    assert s(99) > 1e-5
    assert s(100) == 1e-5 and s(101) == 1e-5 and s(10**9) == 1e-5


@pytest.mark.parametrize("name", S.names())
def test_first_update_is_never_zero_by_default(name):
    required = {
        "value": PEAK,
        "peak": PEAK,
        "warmup_steps": 50,
        "total_steps": 200,
        "stable_steps": 50,
        "decay_steps": 50,
        "gamma": 0.5,
    }
    params = {p.name: required[p.name] for p in S.parameters(name) if p.required}
    if name == "step_decay":
        params["step_size"] = 10
    s = S.get(name, **params)
    assert s(0) > 0
    vals = S.evaluate(s, 400)
    assert np.all(vals >= 0)
    assert vals.max() == pytest.approx(s.peak, rel=1e-12)
    if s.total_steps is not None:
        # phases tile [0, total_steps)
        ph = s.phases
        assert ph[0].start == 0 and ph[-1].end == s.total_steps
        assert all(a.end == b.start for a, b in zip(ph, ph[1:], strict=False))


def test_start_sets_the_first_value_and_zero_and_one_step_warmups_mean_no_warmup():
    s = S.warmup_cosine(PEAK, 5, 50, start=PEAK / 2)
    assert s(0) == PEAK / 2
    assert close([s(t) for t in range(5)], [PEAK / 2 + PEAK / 2 * t / 4 for t in range(5)])
    for w in (0, 1):
        assert close(S.evaluate(S.warmup_cosine(PEAK, w, 50), 60), S.evaluate(S.cosine_decay(PEAK, 50), 60))


def test_warmup_cosine_is_wsd_without_stable_phase():
    for w, T in [(10, 100), (1, 7), (0, 9), (100, 100)]:
        a = S.warmup_cosine(PEAK, w, T, final=1e-6)
        b = S.wsd(PEAK, w, 0, T - w, final=1e-6, decay_shape="cosine")
        assert close(S.evaluate(a, T + 5), S.evaluate(b, T + 5), rel=1e-14)


def test_wsd_counts_each_phase_honestly():
    s = S.wsd(1.0, 4, 3, 5)
    vals = S.evaluate(s, 14)
    assert close(vals[:4], [0.25, 0.5, 0.75, 1.0])  # warmup: 4 steps, the last one at the peak
    assert np.all(vals[4:7] == 1.0)  # 3 stable steps
    assert np.all(vals[7:12] < 1.0) and np.all(vals[7:12] > 0)  # 5 decay steps, all below the peak
    assert np.all(vals[12:] == 0.0) and s.total_steps == 12


def test_step_validation():
    s = S.warmup_cosine(PEAK, 10, 100)
    with pytest.raises(ValueError, match=r"step must be in \[0, inf\), got -1"):
        s(-1)
    with pytest.raises(ValueError, match="got nan"):
        s(float("nan"))
    with pytest.raises(TypeError, match=r"step must be a number in \[0, inf\)"):
        s(True)
    with pytest.raises(TypeError, match="step must be a number"):
        s("3")
    assert s(np.int64(5)) == s(5) == s(torch.tensor(5)) == s(5.0)
    assert isinstance(s(np.int64(5)), float)


def test_schedules_are_pure_frozen_picklable_and_print_as_their_call():
    s = S.wsd(1e-3, 100, 700, 200, decay_shape="1-sqrt")
    assert repr(s) == (
        "wsd(peak=0.001, warmup_steps=100, stable_steps=700, decay_steps=200, final=0.0, "
        "decay_shape='1-sqrt', start=None)"
    )
    assert pickle.loads(pickle.dumps(s)) == s
    assert hash(s) == hash(S.wsd(1e-3, 100, 700, 200, decay_shape="1-sqrt"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.peak = 1.0  # type: ignore[misc]
    assert s.peak == 1e-3 and s.total_steps == 1000
    assert [p.name for p in s.phases] == ["warmup", "stable", "decay"]
    assert [s(t) for t in range(0, 1100, 37)] == [s(t) for t in range(0, 1100, 37)]
    j = S.join([S.constant(0.1), S.warmup_cosine(PEAK, 3, 10)], [5])
    assert j.peak == 0.1 and j.total_steps == 15
    assert repr(j).startswith("join(schedules=(constant(value=0.1), warmup_cosine(")
    assert [tuple(p) for p in j.phases] == [("warmup", 5, 8), ("decay", 8, 15)]


# --------------------------------------------------------------------------------------------
# published formulas


@pytest.mark.parametrize("w,T", [(10, 100), (0, 50), (1, 20), (37, 500)])
def test_hf_linear_schedule_with_warmup(w, T):
    ours_wsd = S.wsd(PEAK, w + 1, 0, T - w - 1, start=0.0)
    if w:
        ours_join = S.join([S.linear_warmup(PEAK, w + 1, start=0.0), S.linear_decay(PEAK, T - w)], [w])
    else:
        ours_join = S.linear_decay(PEAK, T)
    ref = [PEAK * hf_linear(t, w, T) for t in range(T + 10)]
    assert close(S.evaluate(ours_wsd, T + 10), ref)
    assert close(S.evaluate(ours_join, T + 10), ref)


@pytest.mark.parametrize("w,T,m", [(10, 100, 0.0), (0, 64, 0.0), (25, 300, 0.1), (99, 100, 0.05)])
def test_hf_cosine_schedule_with_warmup(w, T, m):
    ours = S.warmup_cosine(PEAK, w + 1, T, final=m * PEAK, start=0.0)
    ref = [PEAK * hf_cosine(t, w, T, min_lr_rate=m) for t in range(T)]
    assert close(S.evaluate(ours, T), ref)
    assert ours(T + 3) == m * PEAK  # HF's cosine would rise again after T; ours stays at final


@pytest.mark.parametrize("shape", S.DECAY_SHAPES)
@pytest.mark.parametrize("w,s,d,m", [(10, 50, 40, 0.0), (5, 0, 20, 0.1), (20, 30, 1, 0.0), (1, 3, 7, 0.2)])
def test_hf_wsd_schedule(shape, w, s, d, m):
    ours = S.wsd(PEAK, w + 1, s, d - 1, final=m * PEAK, decay_shape=shape, start=m * PEAK)
    n = w + s + d + 10
    ref = [PEAK * hf_wsd(t, w, s, d, decay_type=shape, min_lr_ratio=m) for t in range(n)]
    assert close(S.evaluate(ours, n), ref)


@pytest.mark.parametrize("w,tau", [(10, 10), (10, 1000), (100, 37)])
def test_hf_inverse_sqrt_schedule(w, tau):
    ours = S.inverse_sqrt(PEAK, w + 1, timescale=tau, start=0.0)
    ref = [PEAK * hf_inverse_sqrt(t, w, tau) for t in range(2000)]
    assert close(S.evaluate(ours, 2000), ref)


@pytest.mark.parametrize("d_model,warmup", [(512, 4000), (64, 10), (1024, 1)])
def test_inverse_sqrt_defaults_are_the_original_transformer_schedule(d_model, warmup):
    ours = S.inverse_sqrt((d_model * warmup) ** -0.5, warmup)
    steps = list(range(0, 3 * warmup + 5)) + [10**5]
    assert close([ours(t) for t in steps], [noam(t + 1, d_model, warmup) for t in steps])


@pytest.mark.parametrize("init,w,T,end", [(0.0, 10, 100, 0.0), (1e-5, 20, 300, 1e-5), (0.0, 0, 40, 0.0)])
def test_optax_warmup_cosine_decay(init, w, T, end):
    ours = S.warmup_cosine(PEAK, w + 1, T, final=end, start=init)
    ref = [
        optax_warmup_cosine(t, init, PEAK, w, T, end) if w else optax_cosine_decay(t, PEAK, T, end / PEAK)
        for t in range(T + 20)
    ]
    assert close(S.evaluate(ours, T + 20), ref)


def test_join_matches_optax_join_schedules():
    parts = [S.linear_warmup(1.0, 8), S.constant(0.5), S.cosine_decay(0.5, 30, final=0.01)]
    bounds = [10, 25]
    ours = S.join(parts, bounds)
    ref = [optax_join(t, parts, bounds) for t in range(80)]
    assert close(S.evaluate(ours, 80), ref, rel=0, abs_=0)
    assert ours(25) == parts[2](0) and ours(24) == 0.5 and ours(10) == 0.5 and ours(9) == parts[0](9)


# --------------------------------------------------------------------------------------------
# torch's schedulers as oracles: step a real optimizer and read group["lr"]


def torch_lrs(make_scheduler, n, lr):
    p = nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([p], lr=lr)
    sched = make_scheduler(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        p.grad = torch.ones_like(p)
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize(
    "T,pct,anneal,three,div,fdiv",
    [
        (100, 0.3, "cos", False, 25.0, 1e4),
        (97, 0.25, "linear", False, 10.0, 100.0),
        (1000, 0.3, "cos", True, 25.0, 1e4),
        (53, 0.4, "linear", True, 5.0, 1e3),
        (10, 0.5, "cos", False, 25.0, 1e4),
    ],
)
def test_one_cycle_matches_torch_over_a_full_run(T, pct, anneal, three, div, fdiv):
    peak = 0.1
    ref = torch_lrs(
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o,
            max_lr=peak,
            total_steps=T,
            pct_start=pct,
            anneal_strategy=anneal,
            div_factor=div,
            final_div_factor=fdiv,
            three_phase=three,
            cycle_momentum=False,
        ),
        T,
        peak,
    )
    ours = S.one_cycle(peak, T, pct_start=pct, anneal=anneal, div_factor=div, final_div_factor=fdiv, three_phase=three)
    assert close(S.evaluate(ours, T), ref, rel=1e-12)
    assert ours(T - 1) == ours(T + 100) == peak / div / fdiv


@pytest.mark.parametrize("T,eta_min", [(50, 0.0), (200, 1e-4), (7, 0.01)])
def test_cosine_decay_matches_cosine_annealing_lr_over_one_period(T, eta_min):
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=T, eta_min=eta_min), T + 1, 0.1)
    assert close(S.evaluate(S.cosine_decay(0.1, T, final=eta_min), T + 1), ref, rel=1e-9, abs_=1e-12)


@pytest.mark.parametrize("step_size,gamma", [(10, 0.1), (7, 0.5), (1, 0.9)])
def test_step_decay_matches_step_lr(step_size, gamma):
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=step_size, gamma=gamma), 60, 0.2)
    assert close(S.evaluate(S.step_decay(0.2, step_size=step_size, gamma=gamma), 60), ref, rel=1e-12)


def test_step_decay_milestones_match_multistep_lr():
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[5, 12, 30], gamma=0.3), 50, 0.2)
    assert close(S.evaluate(S.step_decay(0.2, milestones=[5, 12, 30], gamma=0.3), 50), ref, rel=1e-12)


@pytest.mark.parametrize("gamma", [0.99, 0.9, 0.5])
def test_exponential_decay_matches_exponential_lr(gamma):
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=gamma), 80, 0.3)
    assert close(S.evaluate(S.exponential_decay(0.3, gamma), 80), ref, rel=1e-10, abs_=1e-300)
    floored = S.exponential_decay(0.3, gamma, final=0.01)
    assert close(S.evaluate(floored, 80), np.maximum(ref, 0.01), rel=1e-10)
    optax_like = S.exponential_decay(0.3, gamma, transition_steps=10)
    assert optax_like(25) == pytest.approx(0.3 * gamma**2.5, rel=1e-14)


@pytest.mark.parametrize("f,n", [(1 / 3, 5), (0.01, 40), (0.5, 1)])
def test_linear_warmup_matches_linear_lr(f, n):
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=f, total_iters=n), n + 20, 0.1)
    ours = S.linear_warmup(0.1, n + 1, start=f * 0.1)
    assert close(S.evaluate(ours, n + 20), ref, rel=1e-9)


@pytest.mark.parametrize("e,T", [(0.0, 30), (0.1, 100)])
def test_linear_decay_matches_linear_lr(e, T):
    ref = torch_lrs(
        lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=1.0, end_factor=e, total_iters=T), T + 10, 0.1
    )
    assert close(S.evaluate(S.linear_decay(0.1, T, final=e * 0.1), T + 10), ref, rel=1e-9, abs_=1e-15)


# --------------------------------------------------------------------------------------------
# validation


BAD = [
    (
        lambda: S.warmup_cosine(-1e-3, 10, 100),
        ValueError,
        r"warmup_cosine: peak must be in \[0, inf\), got -0\.001",
    ),
    (
        lambda: S.warmup_cosine(1e-3, 200, 100),
        ValueError,
        r"warmup_cosine: warmup_steps must be in \[0, total_steps=100\] .*got 200",
    ),
    (lambda: S.warmup_cosine(1e-3, -5, 100), ValueError, r"warmup_steps must be an integer in \[0, inf\), got -5"),
    (lambda: S.warmup_cosine(1e-3, 5, 0), ValueError, r"total_steps must be an integer in \[1, inf\), got 0"),
    (lambda: S.warmup_cosine(1e-3, 2.5, 10), ValueError, r"warmup_steps must be an integer in \[0, inf\), got 2\.5"),
    (
        lambda: S.warmup_cosine(1e-3, "10", 100),
        TypeError,
        r"warmup_steps must be an integer in \[0, inf\), got str '10'",
    ),
    (
        lambda: S.warmup_cosine(1e-3, 10, 100, final=0.01),
        ValueError,
        r"final must be in \[0, 0\.001\], got 0\.01",
    ),
    (
        lambda: S.warmup_cosine(1e-3, 10, 100, start=-1.0),
        ValueError,
        r"start must be in \[0, 0\.001\], got -1\.0",
    ),
    (lambda: S.warmup_cosine(float("inf"), 10, 100), ValueError, r"peak must be in \[0, inf\), got inf"),
    (lambda: S.warmup_cosine(None, 10, 100), TypeError, r"peak must be a number in \[0, inf\), got NoneType None"),
    (
        lambda: S.wsd(1.0, 10, 10, 10, decay_shape="exp"),
        ValueError,
        r"wsd: decay_shape must be one of 'linear', 'cosine', '1-sqrt', got 'exp'",
    ),
    (lambda: S.wsd(1.0, 10, -1, 10), ValueError, r"wsd: stable_steps must be an integer in \[0, inf\), got -1"),
    (lambda: S.wsd(1.0, 0, 0, 0), ValueError, r"wsd: warmup_steps \+ stable_steps \+ decay_steps must be >= 1"),
    (lambda: S.constant(-0.1), ValueError, r"constant: value must be in \[0, inf\), got -0\.1"),
    (
        lambda: S.linear_decay(0.1, -3),
        ValueError,
        r"linear_decay: total_steps must be an integer in \[1, inf\), got -3",
    ),
    (
        lambda: S.inverse_sqrt(0.1, 10, timescale=0),
        ValueError,
        r"inverse_sqrt: timescale must be in \(0, inf\), got 0",
    ),
    (lambda: S.step_decay(0.1), ValueError, r"step_decay: give exactly one of step_size and milestones"),
    (lambda: S.step_decay(0.1, 10, milestones=[3]), ValueError, r"give exactly one of step_size and milestones"),
    (lambda: S.step_decay(0.1, 0), ValueError, r"step_size must be an integer in \[1, inf\), got 0"),
    (lambda: S.step_decay(0.1, 5, gamma=1.5), ValueError, r"gamma must be in \(0, 1\], got 1\.5"),
    (lambda: S.step_decay(0.1, milestones=[5, 5]), ValueError, r"milestones must be a non-empty, strictly increasing"),
    (
        lambda: S.exponential_decay(0.1, 0.0),
        ValueError,
        r"exponential_decay: gamma must be in \(0, 1\], got 0\.0",
    ),
    (
        lambda: S.one_cycle(0.1, 100, pct_start=1.0),
        ValueError,
        r"one_cycle: pct_start must be in \(0, 1\), got 1\.0",
    ),
    (
        lambda: S.one_cycle(0.1, 10, pct_start=0.1),
        ValueError,
        r"pct_start \* total_steps must be > 1 .*pct_start=0\.1 with total_steps=10",
    ),
    (
        lambda: S.one_cycle(0.1, 100, three_phase=True, pct_start=0.6),
        ValueError,
        r"with three_phase=True, pct_start must be < ",
    ),
    (
        lambda: S.one_cycle(0.1, 100, anneal="exp"),
        ValueError,
        r"one_cycle: anneal must be one of 'cos', 'linear', got 'exp'",
    ),
    (lambda: S.one_cycle(0.1, 1), ValueError, r"one_cycle: total_steps must be an integer in \[2, inf\), got 1"),
    (lambda: S.one_cycle(0.1, 100, div_factor=0), ValueError, r"div_factor must be in \(0, inf\), got 0"),
    (
        lambda: S.join([S.constant(1.0), S.constant(0.5)], []),
        ValueError,
        r"join: boundaries must have len\(schedules\) - 1 = 1 entries, got 0",
    ),
    (
        lambda: S.join([S.constant(1.0)] * 3, [10, 5]),
        ValueError,
        r"join: boundaries must be strictly increasing, got \(10, 5\)",
    ),
    (lambda: S.join([S.constant(1.0), 0.5], [10]), TypeError, r"join: schedules\[1\] must be a callable"),
    (lambda: S.join([], []), ValueError, r"join: schedules must contain at least one schedule"),
    (lambda: S.join([S.constant(1.0)] * 2, [0]), ValueError, r"boundaries\[\] must be an integer in \[1, inf\), got 0"),
    (
        lambda: S.get("cosine", peak=1.0),
        ValueError,
        r"unknown schedule 'cosine'; valid names: constant, linear_warmup, .*one_cycle",
    ),
    (
        lambda: S.get("wsd", peak=1.0, warmup_steps=1, stable_steps=1, decay_steps=1, total_steps=3),
        TypeError,
        r"wsd: unexpected parameter\(s\) total_steps; its parameters are peak, warmup_steps",
    ),
    (
        lambda: S.get("warmup_cosine", peak=1.0),
        TypeError,
        r"warmup_cosine: missing required parameter\(s\) warmup_steps, total_steps",
    ),
]


@pytest.mark.parametrize("build,exc,message", BAD)
def test_bad_arguments_name_the_argument_the_value_and_the_range(build, exc, message):
    with pytest.raises(exc, match=message):
        build()


def test_registry():
    assert S.names() == [
        "constant",
        "linear_warmup",
        "cosine_decay",
        "warmup_cosine",
        "linear_decay",
        "wsd",
        "inverse_sqrt",
        "step_decay",
        "exponential_decay",
        "one_cycle",
    ]
    assert S.get("wsd", peak=1.0, warmup_steps=2, stable_steps=3, decay_steps=4) == S.wsd(1.0, 2, 3, 4)
    spec = {p.name: p for p in S.parameters("wsd")}
    assert spec["decay_shape"].choices == S.DECAY_SHAPES and spec["decay_shape"].default == "linear"
    assert spec["peak"].required and spec["peak"].kind == "float" and spec["warmup_steps"].kind == "int"
    assert {p.name: p.kind for p in S.parameters("step_decay")}["milestones"] == "ints"


# --------------------------------------------------------------------------------------------
# to_torch


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).double()


def _batch(t):
    g = torch.Generator().manual_seed(1000 + t)
    x = torch.randn(16, 4, generator=g, dtype=torch.float64)
    return x, x.sum(1, keepdim=True).sin()


def _train(model, opt, sched, steps, start=0):
    lrs = []
    for t in range(start, start + steps):
        lrs.append([g["lr"] for g in opt.param_groups])
        x, y = _batch(t)
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        sched.step()
    return lrs


def test_to_torch_writes_the_schedule_into_group_lr():
    s = S.warmup_cosine(1e-2, 5, 30, final=1e-4)
    model = _tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=123.0)
    sched = S.to_torch(opt, s)
    assert isinstance(sched, torch.optim.lr_scheduler.LRScheduler)
    lrs = _train(model, opt, sched, 40)
    assert [v[0] for v in lrs] == [s(t) for t in range(40)]
    assert sched.get_last_lr() == [s(40)]


def test_to_torch_equals_hf_lambda_lr():
    w, T = 4, 25
    model = _tiny_model()
    opt_a = torch.optim.SGD(model.parameters(), lr=0.1)
    ref = _train(model, opt_a, torch.optim.lr_scheduler.LambdaLR(opt_a, lambda t: hf_cosine(t, w, T)), T)
    model = _tiny_model()
    opt_b = torch.optim.SGD(model.parameters(), lr=0.1)
    ours = _train(model, opt_b, S.to_torch(opt_b, S.warmup_cosine(0.1, w + 1, T, start=0.0)), T)
    assert close(ours, ref)


def test_to_torch_relative_and_per_group():
    model = _tiny_model()
    opt = torch.optim.SGD(
        [{"params": model[0].parameters(), "lr": 1e-2}, {"params": model[2].parameters(), "lr": 1e-3}], lr=1.0
    )
    s = S.wsd(5.0, 3, 4, 5)
    lrs = _train(model, opt, S.to_torch(opt, s, relative=True), 15)
    assert close([v[0] for v in lrs], [s(t) * 1e-2 / 5.0 for t in range(15)])
    assert close([v[1] for v in lrs], [s(t) * 1e-3 / 5.0 for t in range(15)])

    model = _tiny_model()
    opt = torch.optim.SGD([{"params": model[0].parameters()}, {"params": model[2].parameters()}], lr=1.0)
    a, b = S.constant(0.3), S.exponential_decay(0.1, 0.9)
    lrs = _train(model, opt, S.to_torch(opt, [a, b]), 10)
    assert [v for v in lrs] == [[0.3, b(t)] for t in range(10)]

    with pytest.raises(ValueError, match=r"relative=True needs schedules with a peak > 0 .*peak=None"):
        S.to_torch(opt, lambda t: 1.0, relative=True)
    with pytest.raises(ValueError, match=r"one callable or one per param group \(2\), got 3"):
        S.to_torch(opt, [a, a, a])
    with pytest.raises(TypeError, match="schedule must be a callable"):
        S.to_torch(opt, 0.1)


def test_to_torch_state_dict_round_trip_resumes_bit_identically():
    s = S.one_cycle(0.05, 40, three_phase=True)
    # uninterrupted run
    model_a = _tiny_model()
    opt_a = torch.optim.AdamW(model_a.parameters(), lr=0.05)
    lrs_a = _train(model_a, opt_a, S.to_torch(opt_a, s), 40)

    # 17 steps, checkpoint through torch.save / torch.load(weights_only=True), resume
    model_b = _tiny_model()
    opt_b = torch.optim.AdamW(model_b.parameters(), lr=0.05)
    sched_b = S.to_torch(opt_b, s)
    lrs_b = _train(model_b, opt_b, sched_b, 17)
    buf = io.BytesIO()
    torch.save({"model": model_b.state_dict(), "opt": opt_b.state_dict(), "sched": sched_b.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    assert ckpt["sched"]["last_epoch"] == 17 and ckpt["sched"]["schedules"] == [repr(s)]

    model_c = _tiny_model(seed=123)
    model_c.load_state_dict(ckpt["model"])
    opt_c = torch.optim.AdamW(model_c.parameters(), lr=0.05)
    opt_c.load_state_dict(ckpt["opt"])
    sched_c = S.to_torch(opt_c, s)  # built after the optimizer's state was loaded: group lr is s(0) now
    assert opt_c.param_groups[0]["lr"] == s(0)
    sched_c.load_state_dict(ckpt["sched"])  # restores the step and rewrites group["lr"] = s(17)
    assert opt_c.param_groups[0]["lr"] == s(17) and sched_c.get_last_lr() == [s(17)]
    lrs_c = _train(model_c, opt_c, sched_c, 23, start=17)
    assert lrs_b + lrs_c == lrs_a
    for pa, pc in zip(model_a.parameters(), model_c.parameters(), strict=True):
        assert torch.equal(pa, pc)

    other = S.to_torch(torch.optim.SGD(_tiny_model().parameters(), lr=0.1), S.constant(0.1))
    with pytest.warns(UserWarning, match="saved with schedules"):
        other.load_state_dict(ckpt["sched"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched_c.load_state_dict(sched_c.state_dict())


# --------------------------------------------------------------------------------------------
# parameter groups


def _lr_of(groups):
    out = {}
    for g in groups:
        for n in g["param_names"]:
            assert n not in out, f"{n} in two groups"
            out[n] = (g["lr"], g.get("weight_decay"))
    return out


def test_layerwise_groups_on_a_sequential_mlp():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    groups = S.layerwise_lr_groups(model, 1e-3, 0.5)
    lr = _lr_of(groups)
    assert lr == {
        "0.weight": (2.5e-4, None),
        "0.bias": (2.5e-4, None),
        "2.weight": (5e-4, None),
        "2.bias": (5e-4, None),
        "4.weight": (1e-3, None),
        "4.bias": (1e-3, None),
    }
    assert [g["layer_id"] for g in groups] == [1, 2, 3]
    opt = torch.optim.AdamW(groups, lr=1.0)  # torch accepts the groups as they are
    assert [g["lr"] for g in opt.param_groups] == [2.5e-4, 5e-4, 1e-3]


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    def __init__(self, d=8, depth=4):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, d))
        self.patch_embed = nn.Linear(6, d)
        self.blocks = nn.ModuleList([Block(d) for _ in range(depth)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 3)

    def no_weight_decay(self):
        return {"pos_embed", "cls_token"}


def beit_layer_id(name, num_layers):
    """BEiT's get_layer_id_for_vit (unilm/beit/optim_factory.py)."""
    if name in ("cls_token", "mask_token", "pos_embed"):
        return 0
    if name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks"):
        return int(name.split(".")[1]) + 1
    return num_layers


def test_layerwise_groups_follow_beit_on_a_vit_like_module():
    depth, base, decay, wd = 4, 1e-3, 0.65, 0.05
    model = TinyViT(depth=depth)
    groups = S.layerwise_lr_groups(model, base, decay, weight_decay=wd)
    lr = _lr_of(groups)
    num_layers = depth + 2  # BEiT: num_layers = depth + 2 ids, scale = decay ** (num_layers - 1 - id)
    for name, p in model.named_parameters():
        layer_id = beit_layer_id(name, num_layers - 1)
        # BEiT/timm's no-decay rule: 1-D params, biases, and the model's no_weight_decay() list
        no_decay = p.ndim == 1 or name.endswith(".bias") or name in model.no_weight_decay()
        assert lr[name][0] == pytest.approx(base * decay ** (num_layers - 1 - layer_id), rel=1e-14), name
        assert lr[name][1] == (0.0 if no_decay else wd), name
    assert len(lr) == len(list(model.parameters()))
    assert [g["layer_id"] for g in groups] == sorted(g["layer_id"] for g in groups)
    # a schedule on top scales every group by the same shape
    opt = torch.optim.AdamW(groups, lr=1.0)
    s = S.warmup_cosine(1.0, 3, 10)
    sched = S.to_torch(opt, s, relative=True)
    for _ in range(4):
        opt.step()
        sched.step()
    assert close([g["lr"] for g in opt.param_groups], [base * g["lr_scale"] * s(4) for g in groups])


def test_layerwise_groups_find_torch_transformer_encoder_layers():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(11, 8)
            layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, num_layers=3, enable_nested_tensor=False)
            self.head = nn.Linear(8, 2)

    model = Model()
    model.embed.weight.requires_grad_(False)  # frozen parameters are left out
    lr = _lr_of(S.layerwise_lr_groups(model, 1.0, 0.5))
    assert "embed.weight" not in lr
    assert lr["encoder.layers.0.linear1.weight"][0] == 0.125
    assert lr["encoder.layers.2.self_attn.in_proj_weight"][0] == 0.5
    assert lr["head.bias"][0] == 1.0
    explicit = _lr_of(S.layerwise_lr_groups(model, 1.0, 0.5, layers="encoder.layers"))
    assert explicit == lr
    with pytest.raises(ValueError, match=r"layers='decoder' is not a submodule"):
        S.layerwise_lr_groups(model, 1.0, 0.5, layers="decoder")
    with pytest.raises(ValueError, match=r"decay must be in \(0, 1\], got 1\.5"):
        S.layerwise_lr_groups(model, 1.0, 1.5)
    with pytest.raises(ValueError, match=r"base_lr must be in \[0, inf\), got -1"):
        S.layerwise_lr_groups(model, -1, 0.5)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        S.layerwise_lr_groups([1, 2], 1.0, 0.5)


def test_layerwise_groups_prefer_the_stack_of_blocks_over_an_mlp_inside_a_block():
    class Deep(nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))

    model = nn.Sequential(nn.Embedding(5, 4), nn.ModuleList([Deep(), Deep()]), nn.Linear(4, 2))
    lr = _lr_of(S.layerwise_lr_groups(model, 1.0, 0.5))
    assert {n: v[0] for n, v in lr.items() if n.endswith("weight")} == {
        "0.weight": 0.125,
        "1.0.mlp.0.weight": 0.25,
        "1.0.mlp.2.weight": 0.25,
        "1.0.mlp.4.weight": 0.25,
        "1.1.mlp.0.weight": 0.5,
        "1.1.mlp.2.weight": 0.5,
        "1.1.mlp.4.weight": 0.5,
        "2.weight": 1.0,
    }


def test_layerwise_groups_fall_back_to_top_level_children():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))
            self.conv = nn.Conv2d(1, 2, 3)
            self.bn = nn.BatchNorm2d(2)
            self.fc = nn.Linear(2, 1)

    lr = _lr_of(S.layerwise_lr_groups(Model(), 1.0, 0.5))
    assert lr["scale"][0] == lr["conv.weight"][0] == 0.25
    assert lr["bn.weight"][0] == 0.5 and lr["fc.weight"][0] == 1.0


class RMSNormish(nn.Module):  # a custom norm class, recognized by its name
    def __init__(self, d):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(d, 1))  # 2-D on purpose: only the class name excludes it


def test_param_groups_no_decay():
    model = nn.Sequential(
        nn.Embedding(10, 4),
        nn.Linear(4, 4),
        nn.LayerNorm(4),
        nn.Linear(4, 4, bias=False),
        nn.BatchNorm1d(4),
        RMSNormish(4),
        nn.Linear(4, 2),
    )
    model[6].weight.requires_grad_(False)
    groups = S.param_groups_no_decay(model, 0.1, lr=3e-4)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0] and all(g["lr"] == 3e-4 for g in groups)
    assert groups[0]["param_names"] == ["0.weight", "1.weight", "3.weight"]
    assert groups[1]["param_names"] == ["1.bias", "2.weight", "2.bias", "4.weight", "4.bias", "5.gain", "6.bias"]
    named = dict(model.named_parameters())
    for g in groups:
        assert all(p is named[n] for p, n in zip(g["params"], g["param_names"], strict=True))
    extra = S.param_groups_no_decay(model, 0.1, no_decay_names=["0.weight"])
    assert extra[0]["param_names"] == ["1.weight", "3.weight"] and "lr" not in extra[0]
    wild = S.no_decay_param_names(model, ["*.weight"])
    assert {"0.weight", "1.weight", "3.weight"} <= wild
    # torch optimizers take the groups (param_names is torch's own key for named parameters)
    opt = torch.optim.AdamW(groups)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    with pytest.raises(ValueError, match=r"weight_decay must be in \[0, inf\), got -0\.1"):
        S.param_groups_no_decay(model, -0.1)
    with pytest.raises(TypeError, match="no_decay_names must be a sequence of strings"):
        S.param_groups_no_decay(model, 0.1, no_decay_names="bias")


def test_no_decay_groups_behave_like_adamw_without_decay():
    """AdamW with the two groups == AdamW(wd) on the decayed params and AdamW(wd=0) on the rest."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1)).double()
    ref = [p.detach().clone().requires_grad_() for p in model.parameters()]
    opt = torch.optim.AdamW(S.param_groups_no_decay(model, 0.5), lr=0.1)
    names = [n for n, _ in model.named_parameters()]
    decayed = {"0.weight", "2.weight"}
    opt_ref = torch.optim.AdamW(
        [
            {"params": [p for n, p in zip(names, ref, strict=True) if n in decayed], "weight_decay": 0.5},
            {"params": [p for n, p in zip(names, ref, strict=True) if n not in decayed], "weight_decay": 0.0},
        ],
        lr=0.1,
    )
    for t in range(5):
        x, _ = _batch(t)
        x = x[:, :3]
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
        opt_ref.zero_grad()
        h = nn.functional.linear(x, ref[0], ref[1])
        h = nn.functional.layer_norm(h, (4,), ref[2], ref[3])
        nn.functional.linear(h, ref[4], ref[5]).square().mean().backward()
        opt_ref.step()
    for p, q in zip(model.parameters(), ref, strict=True):
        assert torch.allclose(p, q, rtol=0, atol=1e-14)
