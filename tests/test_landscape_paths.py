"""Paths between two solutions (ravine.landscape._paths) against closed forms.

Oracles: the Bezier polynomial's values at t = 0, 1/2, 1 and its reduction to the straight line when
theta is the midpoint; closed-form losses along a line (a convex quadratic, a double well, a ring);
torch's own cross-entropy of the endpoint models; ``ravine.landscape.line``'s batched evaluator for
the same straight line (an independent code path: vmap and the input-layer identity).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from ravine.landscape import (
    BezierCurve,
    Landscape,
    barrier,
    bezier,
    evaluate_curve,
    fit_bezier,
    interpolate,
)


class Point(nn.Module):
    """A model whose output is its parameter ``w`` repeated for every input row: ``L`` is a function of ``w``."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.as_tensor(w, dtype=torch.float64))

    def forward(self, x):
        return self.w.expand(x.shape[0], -1)


def quadratic(c):
    def loss(out, _y):
        return ((out - c) ** 2).sum(-1).mean()

    return loss


def double_well(out, _y):
    return (((out**2).sum(-1) - 1.0) ** 2).mean()


DATA = (torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))


def _state(w):
    return {"w": torch.as_tensor(w, dtype=torch.float64)}


def _random_state(seed):
    g = torch.Generator().manual_seed(seed)
    return OrderedDict(
        (("w1", torch.randn(3, 4, generator=g, dtype=torch.float64)), ("b", torch.randn(4, generator=g)))
    )


def test_bezier_endpoints_exact_and_midpoint_formula():
    a, th, b = _random_state(0), _random_state(1), _random_state(2)
    p0, p1, ph = bezier(a, th, b, 0.0), bezier(a, th, b, 1), bezier(a, th, b, 0.5)
    for n in a:
        assert torch.equal(p0[n], a[n]) and torch.equal(p1[n], b[n])
        torch.testing.assert_close(ph[n], 0.25 * a[n] + 0.5 * th[n] + 0.25 * b[n], rtol=0, atol=1e-7)
    # theta at the midpoint of a and b: the curve is the straight line (1 - t) a + t b
    mid = OrderedDict((n, 0.5 * (a[n] + b[n])) for n in a)
    for t in (0.1, 0.37, 0.8):
        p = bezier(a, mid, b, t)
        for n in a:
            torch.testing.assert_close(p[n], (1 - t) * a[n] + t * b[n], rtol=0, atol=1e-6)


@pytest.mark.parametrize("t", [-0.1, 1.5, float("nan")])
def test_bezier_rejects_t_outside_unit_interval(t):
    a = _random_state(0)
    with pytest.raises(ValueError, match="t must be in"):
        bezier(a, a, a, t)


def test_convex_quadratic_line_has_no_barrier_and_matches_closed_form():
    c = torch.tensor([0.3, -0.2], dtype=torch.float64)
    a, b = torch.tensor([2.0, 1.0]), torch.tensor([-1.0, -3.0])
    model = Point([0.0, 0.0])
    ls = interpolate(model, quadratic(c), DATA, _state(a), _state(b), steps=11)
    t = np.linspace(0, 1, 11)
    expected = [float((((1 - s) * a.double() + s * b.double() - c) ** 2).sum()) for s in t]
    np.testing.assert_allclose(ls.loss, expected, rtol=1e-12, atol=1e-12)
    assert barrier(ls) == 0.0
    assert barrier(ls, reference="linear") == pytest.approx(0.0, abs=1e-12)  # convex: below the chord
    assert torch.equal(model.w.detach(), torch.zeros(2, dtype=torch.float64))  # model untouched


def test_double_well_barrier_is_its_closed_form_height():
    # L(w) = (w^2 - 1)^2: minima at w = -1 and 1, the line crosses w = 0 where L = 1
    ls = interpolate(Point([0.0]), double_well, DATA, _state([-1.0]), _state([1.0]), steps=21)
    assert barrier(ls) == pytest.approx(1.0, abs=1e-12)
    assert barrier(ls, reference="mean") == pytest.approx(1.0, abs=1e-12)
    assert barrier(ls, reference="linear") == pytest.approx(1.0, abs=1e-12)
    # endpoints at different heights: "max" measures from the worse end, "mean" from their average
    prof = [0.2, 1.0, 0.6]
    assert barrier(prof) == pytest.approx(0.4)
    assert barrier(prof, reference="mean") == pytest.approx(0.6)
    assert barrier(prof, reference="linear") == pytest.approx(0.6)
    assert barrier(prof, t=[0.0, 0.25, 1.0], reference="linear") == pytest.approx(1.0 - 0.3)


def test_barrier_rejects_bad_input():
    with pytest.raises(ValueError, match="reference"):
        barrier([1.0, 2.0], reference="peak")
    with pytest.raises(ValueError, match="1-D"):
        barrier([1.0])
    assert math.isnan(barrier([1.0, float("nan"), 1.0]))
    assert barrier([1.0, float("inf"), 1.0]) == math.inf


def test_fitted_curve_goes_around_the_ring_barrier():
    # L(w) = (|w|^2 - 1)^2 in 2D: the unit circle is the valley; the straight line from (-1, 0) to
    # (1, 0) crosses the peak L(0) = 1, a quadratic Bezier bent towards (0, +-2) stays near the circle
    model = Point([0.0, 0.0])
    a, b = _state([-1.0, 0.0]), _state([1.0, 0.0])
    line_ls = interpolate(model, double_well, DATA, a, b, steps=41)
    assert barrier(line_ls) == pytest.approx(1.0, abs=1e-12)
    curve = fit_bezier(
        model, double_well, DATA, a, b, steps=400, lr=0.05, batch_size=None, seed=0, theta0=_state([0.0, 0.3])
    )
    assert isinstance(curve, BezierCurve)
    assert torch.equal(curve.a["w"], a["w"]) and torch.equal(curve.b["w"], b["w"])
    ls = evaluate_curve(model, double_well, DATA, curve, steps=41)
    assert ls.loss[0] == pytest.approx(0.0, abs=1e-15) and ls.loss[-1] == pytest.approx(0.0, abs=1e-15)
    assert barrier(ls) < 0.15  # the best quadratic Bezier reaches about 0.035
    assert curve.bend > 1.0
    assert torch.equal(model.w.detach(), torch.zeros(2, dtype=torch.float64))


def _mlp(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).double()


def test_curve_at_the_midpoint_equals_the_line_and_torch_at_the_ends():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (40,), generator=g)
    ma, mb, model = _mlp(0), _mlp(1), _mlp(2)
    sa, sb = dict(ma.named_parameters()), dict(mb.named_parameters())
    mid = OrderedDict((n, 0.5 * (v.detach() + sb[n].detach())) for n, v in sa.items())
    straight = BezierCurve(
        OrderedDict((n, v.detach()) for n, v in sa.items()),
        mid,
        OrderedDict((n, v.detach()) for n, v in sb.items()),
        np.zeros(0),
    )
    loss = nn.CrossEntropyLoss()
    on_curve = evaluate_curve(model, loss, (x, y), straight, steps=9, batch_size=16)
    on_line = interpolate(model, loss, (x, y), ma, mb, steps=9)
    assert isinstance(on_line, Landscape) and on_line.directions["kind"] == "interpolation"
    np.testing.assert_allclose(on_curve.loss, on_line.loss, rtol=1e-10)
    with torch.no_grad():
        assert on_curve.loss[0] == pytest.approx(float(loss(ma(x), y)), rel=1e-12)
        assert on_curve.loss[-1] == pytest.approx(float(loss(mb(x), y)), rel=1e-12)
    assert straight.bend == pytest.approx(0.0, abs=1e-12)


def test_fit_lowers_the_expected_loss_and_leaves_the_model_alone():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 5, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    loss = nn.CrossEntropyLoss()
    ends = []
    for seed in (0, 1):
        m = _mlp(seed)
        opt = torch.optim.Adam(m.parameters(), lr=0.05)
        for _ in range(150):
            opt.zero_grad()
            loss(m(x), y).backward()
            opt.step()
        ends.append(m)
    model = _mlp(3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    curve = fit_bezier(model, loss, (x, y), ends[0], ends[1], steps=300, lr=0.05, batch_size=64, seed=0)
    assert len(curve.history) == 300 and np.isfinite(curve.history).all()
    line_ls = interpolate(model, loss, (x, y), ends[0], ends[1], steps=21)
    curve_ls = evaluate_curve(model, loss, (x, y), curve, steps=21)
    assert curve_ls.loss.mean() < line_ls.loss.mean()  # the fit descends E_t L(phi(t)) from the line
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n])


def test_fit_bezier_rejects_bad_arguments():
    model = Point([0.0])
    a, b = _state([-1.0]), _state([1.0])
    with pytest.raises(TypeError, match="data must be an"):
        fit_bezier(model, double_well, [DATA], a, b, steps=2)
    with pytest.raises(ValueError, match="lr must be in"):
        fit_bezier(model, double_well, DATA, a, b, lr=-1.0)
    with pytest.raises(ValueError, match="momentum must be in"):
        fit_bezier(model, double_well, DATA, a, b, momentum=1.0)
    with pytest.raises(ValueError, match="b lacks parameters"):
        fit_bezier(model, double_well, DATA, a, {"v": torch.zeros(1)})
    with pytest.raises(TypeError, match="sets 'span' itself"):
        interpolate(model, double_well, DATA, a, b, span=(0, 2))


def test_one_fit_step_is_sgd_on_the_chain_rule_gradient():
    # one step without momentum: theta1 = theta0 - lr * 2 t (1 - t) grad_w L(phi(t)), with t the first
    # draw of the seeded generator and grad_w from plain autograd on a module holding phi(t)
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(30, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (30,), generator=g)
    ma, mb, model = _mlp(0), _mlp(1), _mlp(2)
    loss = nn.CrossEntropyLoss()
    lr = 0.1
    curve = fit_bezier(model, loss, (x, y), ma, mb, steps=1, lr=lr, momentum=0.0, batch_size=None, seed=7)
    t = float(torch.rand((), generator=torch.Generator().manual_seed(7), dtype=torch.float64))
    sa, sb = dict(ma.named_parameters()), dict(mb.named_parameters())
    at_t = _mlp(3)
    with torch.no_grad():
        for n, p in at_t.named_parameters():
            theta0 = 0.5 * (sa[n] + sb[n])
            p.copy_((1 - t) ** 2 * sa[n] + 2 * t * (1 - t) * theta0 + t**2 * sb[n])
    loss(at_t(x), y).backward()
    for n, p in at_t.named_parameters():
        expected = 0.5 * (sa[n] + sb[n]).detach() - lr * 2 * t * (1 - t) * p.grad
        torch.testing.assert_close(curve.theta[n], expected, rtol=1e-10, atol=1e-12)
    assert curve.history[0] == pytest.approx(float(loss(at_t(x), y)), rel=1e-12)
