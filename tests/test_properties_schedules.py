"""Property tests of ``ravine.schedules`` over random valid parameters (hypothesis, derandomized).

For every schedule of the registry, built with random parameters inside its documented ranges:

- never negative, never NaN or infinite, at every step and beyond the end of the run;
- monotone within its phases: a warmup never decreases, a stable phase is the peak, decay / cooldown /
  anneal phases never increase, and after its last phase a schedule never increases;
- continuous at every boundary where its formula (the class docstring) switches pieces, and at
  ``total_steps``: the schedule at the boundary +- a tiny fraction of a step agrees (step decay jumps by
  design and is left out); one-cycle's boundaries are fractional, at ``pct_start * T - 1`` and
  ``2 * pct_start * T - 2``, as in torch's ``OneCycleLR``;
- ``to_torch``: the scheduler writes the closed form ``s(t)`` (or ``s(t) * lr_i / s.peak`` with
  ``relative=True``) into each group, and a run interrupted at a random step (``state_dict`` through
  ``torch.save``/``torch.load(weights_only=True)``, loaded into a fresh optimizer and scheduler in either
  order) continues bit for bit like the uninterrupted one.
"""

import io
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ravine.schedules as rsch

PROPERTY = settings(
    derandomize=True, database=None, deadline=None, max_examples=120,
    suppress_health_check=[HealthCheck.too_slow],
)

peaks = st.floats(1e-6, 10.0)
fractions = st.floats(0.0, 1.0)
counts = st.integers(0, 120)


@st.composite
def schedules(draw):
    """A schedule of a random registered name with random valid parameters."""
    name = draw(st.sampled_from(rsch.names()))
    peak = draw(peaks)
    start = draw(st.none() | fractions.map(lambda f: f * peak))
    final = draw(fractions) * peak
    if name == "constant":
        return rsch.constant(peak)
    if name == "linear_warmup":
        return rsch.linear_warmup(peak, draw(counts), start=start)
    if name in ("cosine_decay", "linear_decay"):
        return rsch.get(name, peak=peak, total_steps=draw(st.integers(1, 120)), final=final)
    if name == "warmup_cosine":
        total = draw(st.integers(1, 150))
        return rsch.warmup_cosine(peak, draw(st.integers(0, total)), total, final=final, start=start)
    if name == "wsd":
        w, s, d = draw(counts), draw(counts), draw(counts)
        if w + s + d == 0:
            d = 1
        shape = draw(st.sampled_from(rsch.DECAY_SHAPES))
        return rsch.wsd(peak, w, s, d, final=final, decay_shape=shape, start=start)
    if name == "inverse_sqrt":
        return rsch.inverse_sqrt(peak, draw(counts), timescale=draw(st.none() | st.floats(0.1, 100.0)), start=start)
    if name == "step_decay":
        gamma = draw(st.floats(1e-3, 1.0, exclude_min=True))
        if draw(st.booleans()):
            return rsch.step_decay(peak, step_size=draw(st.integers(1, 40)), gamma=gamma)
        milestones = sorted(draw(st.sets(st.integers(1, 150), min_size=1, max_size=5)))
        return rsch.step_decay(peak, gamma=gamma, milestones=milestones)
    if name == "exponential_decay":
        gamma = draw(st.floats(1e-3, 1.0, exclude_min=True))
        return rsch.exponential_decay(peak, gamma, draw(st.integers(1, 30)), final=final)
    assert name == "one_cycle", name
    total = draw(st.integers(4, 150))
    three = draw(st.booleans())
    # pct_start * T - 1 >= 0.01: the rising phase is at least a hundredth of a step (the continuity
    # check below resolves the pieces at 1e-9 of a step)
    high = (total + 1) / (2 * total) if three else 1.0
    pct = draw(st.floats(1.01 / total, high, exclude_max=True))
    return rsch.one_cycle(
        peak, total, pct_start=pct, anneal=draw(st.sampled_from(["cos", "linear"])),
        div_factor=draw(st.floats(1.0, 1e3)), final_div_factor=draw(st.floats(1.0, 1e4)), three_phase=three,
    )


def _horizon(s) -> int:
    """Steps to look at: the whole run and beyond its end."""
    total = s.total_steps
    return (total if total is not None else 200) + 20


@pytest.mark.timeout(120)
@PROPERTY
@given(schedules())
def test_never_negative_never_above_its_peak_and_always_finite(s):
    # ``peak`` is documented as the largest value: the playground scales a run's lr by s(t) / peak and
    # relies on it to stay within its lr cap
    for t in range(_horizon(s)):
        v = s(t)
        assert math.isfinite(v) and 0.0 <= v <= s.peak, (s, t, v)
    assert math.isfinite(s(10**9)) and s(10**9) >= 0.0


@pytest.mark.parametrize("div, fdiv", [(0.5, 1e4), (25.0, 0.01), (1.0, 0.5)])
def test_one_cycle_refuses_factors_that_would_put_a_value_above_its_peak(div, fdiv):
    """Found by the property above: ``div_factor < 1`` started the cycle above ``peak`` (``initial = peak /
    div_factor``) and ``final_div_factor < 1`` annealed upwards, so ``peak`` was not the largest value and the
    playground's lr cap (it scales by ``s(t) / peak``) could be exceeded."""
    with pytest.raises(ValueError, match=r"one_cycle: (final_)?div_factor must be in \[1, inf\)"):
        rsch.one_cycle(0.1, 100, div_factor=div, final_div_factor=fdiv)


INCREASING = {"warmup"}
CONSTANT = {"stable"}
DECREASING = {"decay", "cooldown", "anneal"}


@pytest.mark.timeout(120)
@PROPERTY
@given(schedules())
def test_monotone_within_each_phase_and_after_the_last(s):
    values = [s(t) for t in range(_horizon(s))]
    slack = 1e-12 * (s.peak or 1.0)
    phases = list(s.phases)
    last_end = max((p.end for p in phases), default=0)
    pieces = [(p.name, p.start, p.end) for p in phases] + [("after", last_end, len(values))]
    for name, a, b in pieces:
        segment = values[a:b]
        steps = list(zip(segment, segment[1:]))
        if name in INCREASING:
            assert all(y >= x - slack for x, y in steps), (s, name, segment)
        elif name in CONSTANT:
            assert all(abs(v - s.peak) <= slack for v in segment), (s, name, segment)
        else:
            assert name in DECREASING or name == "after", name
            assert all(y <= x + slack for x, y in steps), (s, name, segment)


def _boundaries(s) -> list[float]:
    """Where the formula switches pieces (from the class docstrings), plus the end of the run."""
    points = {float(p.start) for p in s.phases} | {float(p.end) for p in s.phases}
    if s.total_steps is not None:
        points.add(float(s.total_steps))
    if isinstance(s, rsch.WarmupCosine | rsch.InverseSqrt | rsch.LinearWarmup):
        points.add(float(max(s.warmup_steps - 1, 0)))
    if isinstance(s, rsch.WSD):
        points |= {float(s.warmup_steps - 1), float(max(s.warmup_steps + s.stable_steps - 1, 0))}
    if isinstance(s, rsch.OneCycle):
        T, pct = s.total_steps, s.pct_start
        points |= {pct * T - 1, float(T - 1)}
        if s.three_phase:
            points.add(2 * pct * T - 2)
    return sorted(b for b in points if b > 0)


@pytest.mark.timeout(120)
@PROPERTY
@given(schedules().filter(lambda s: not isinstance(s, rsch.StepDecay)))
def test_continuous_at_every_boundary_of_its_formula(s):
    delta = 1e-9
    for b in _boundaries(s):
        left, mid, right = s(b - delta), s(b), s(b + delta)
        tol = 1e-4 * s.peak
        assert abs(left - mid) <= tol and abs(right - mid) <= tol, (s, b, left, mid, right)


@st.composite
def interrupted_runs(draw):
    s = draw(schedules())
    steps = draw(st.integers(2, 40))
    return s, steps, draw(st.integers(1, steps - 1)), draw(st.booleans()), draw(st.booleans())


def _fresh(lrs):
    params = [torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64)) for _ in lrs]
    opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)], momentum=0.9)
    return params, opt


def _advance(params, opt, sched, steps, record):
    for _ in range(steps):
        record.append([g["lr"] for g in opt.param_groups])
        for p in params:
            p.grad = 0.5 * p.detach() + 1.0
        opt.step()
        sched.step()


def _round_trip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.timeout(120)
@PROPERTY
@given(interrupted_runs())
def test_to_torch_writes_the_closed_form_and_resumes_bit_identically(run):
    s, steps, cut, relative, scheduler_first = run
    lrs = [0.1, 0.03]
    params, opt = _fresh(lrs)
    sched = rsch.to_torch(opt, s, relative=relative)
    straight: list = []
    _advance(params, opt, sched, steps, straight)
    for t, got in enumerate(straight):
        want = [s(t) * lr / s.peak for lr in lrs] if relative else [s(t)] * len(lrs)
        assert got == pytest.approx(want, rel=1e-15, abs=0.0), (s, t)

    params_a, opt_a = _fresh(lrs)
    sched_a = rsch.to_torch(opt_a, s, relative=relative)
    resumed: list = []
    _advance(params_a, opt_a, sched_a, cut, resumed)
    saved = _round_trip({"opt": opt_a.state_dict(), "sched": sched_a.state_dict(),
                         "params": [p.detach().clone() for p in params_a]})
    params_b, opt_b = _fresh(lrs)
    with torch.no_grad():
        for p, v in zip(params_b, saved["params"]):
            p.copy_(v)
    sched_b = rsch.to_torch(opt_b, s, relative=relative)
    if scheduler_first:
        sched_b.load_state_dict(saved["sched"])
        opt_b.load_state_dict(saved["opt"])
    else:
        opt_b.load_state_dict(saved["opt"])
        sched_b.load_state_dict(saved["sched"])
    _advance(params_b, opt_b, sched_b, steps - cut, resumed)
    assert resumed == straight
    for p, q in zip(params, params_b):
        assert torch.equal(p, q)
