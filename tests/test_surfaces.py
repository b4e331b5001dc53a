"""Built-in surfaces: closed-form gradients against autograd, Hessians against
torch.autograd.functional.hessian, listed minima against the literature and against dense grids."""

import json
import math

import numpy as np
import pytest
import torch

import ravine.surfaces as rs

CONTRACT_NAMES = ["bowl", "valley", "rosenbrock", "beale", "himmelblau", "rastrigin", "ackley", "camel",
                  "saddle", "monkey_saddle", "plateau", "sharp_flat", "traps"]


def _points(s, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    (x0, x1), (y0, y1) = s.domain
    u = torch.rand(n, 2, generator=g, dtype=torch.float64)
    return torch.stack([x0 + (x1 - x0) * u[:, 0], y0 + (y1 - y0) * u[:, 1]], dim=1)


def test_names_match_the_contract():
    assert rs.names() == CONTRACT_NAMES


def test_every_surface_has_its_metadata():
    for name in rs.names():
        s = rs.get(name)
        (x0, x1), (y0, y1) = s.domain
        assert x0 < x1 and y0 < y1
        assert x0 <= s.start[0] <= x1 and y0 <= s.start[1] <= y1, name
        assert s.description and "\n" not in s.description
        assert s.expression is None
        json.dumps(s.to_dict())
        v = s.value(torch.tensor(s.start, dtype=torch.float64))
        assert v.shape == () and torch.isfinite(v)


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_closed_form_gradient_equals_autograd(name):
    s = rs.get(name)
    p = _points(s)
    v1, g1 = s.value_and_grad(p)
    v2, g2 = s.value_and_grad(p, method="autograd")
    torch.testing.assert_close(v1, v2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(v1, s.value(p), rtol=0, atol=0)
    v3, g3 = s.value_and_grad(p, method="functional")  # torch.func.grad: the same backward pass
    torch.testing.assert_close((v3, g3), (v2, g2), rtol=0, atol=0)


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_hessian_equals_torch_functional_hessian(name):
    s = rs.get(name)
    pts = _points(s, n=4, seed=1)
    H = s.hessian(pts)
    assert H.shape == (4, 2, 2)
    for i in range(4):
        ref = torch.autograd.functional.hessian(lambda q: s.value(q), pts[i])
        torch.testing.assert_close(H[i], ref, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(s.hessian(pts[i]), ref, rtol=1e-10, atol=1e-10)


def test_rosenbrock_hessian_closed_form():
    s = rs.get("rosenbrock")
    x, y = 0.7, -0.3
    want = torch.tensor([[2 - 400 * (y - x * x) + 800 * x * x, -400 * x], [-400 * x, 200.0]], dtype=torch.float64)
    torch.testing.assert_close(s.hessian(torch.tensor([x, y], dtype=torch.float64)), want)


SMOOTH_MINIMA = [n for n in CONTRACT_NAMES if n not in ("ackley", "saddle", "monkey_saddle")]


@pytest.mark.parametrize("name", SMOOTH_MINIMA)
def test_gradient_vanishes_and_hessian_is_positive_definite_at_each_minimum(name):
    s = rs.get(name)
    assert s.minima, name
    for m in s.minima:
        p = torch.tensor([m.x, m.y], dtype=torch.float64)
        scale = max(1.0, float(torch.linalg.eigvalsh(s.hessian(p)).abs().max()))
        assert float(s.grad(p).norm()) <= 1e-10 * scale, (name, m)
        assert float(torch.linalg.eigvalsh(s.hessian(p)).min()) > 0, (name, m)
        assert float(s.value(p)) == pytest.approx(m.value, abs=1e-12)
        assert m.kind in ("global", "local")


@pytest.mark.parametrize("name", SMOOTH_MINIMA + ["ackley"])
def test_listed_global_minimum_is_lowest_on_a_dense_grid(name):
    s = rs.get(name)
    _, _, Z = s.grid(401)
    g = s.global_minimum
    assert g is not None
    assert Z.min() >= g.value - 1e-9
    for m in s.minima:
        assert m.value >= g.value - 1e-12


LITERATURE = {
    # (x, y, value): closed forms and published values (Jamil & Yang 2013, "A literature survey of benchmark
    # functions for global optimization problems"; Molga & Smutnicki 2005)
    "rosenbrock": [(1.0, 1.0, 0.0)],
    "beale": [(3.0, 0.5, 0.0)],
    "himmelblau": [(3.0, 2.0, 0.0), (-2.805118, 3.131312, 0.0), (-3.779310, -3.283186, 0.0),
                   (3.584428, -1.848126, 0.0)],
    "camel": [(0.0898, -0.7126, -1.0316), (-0.0898, 0.7126, -1.0316)],
    "rastrigin": [(0.0, 0.0, 0.0)],
    "ackley": [(0.0, 0.0, 0.0)],
    "bowl": [(0.0, 0.0, 0.0)],
    "valley": [(0.0, 0.0, 0.0)],
    "plateau": [(0.0, 0.0, 0.0)],
}


@pytest.mark.parametrize("name", sorted(LITERATURE))
def test_global_minima_match_the_literature(name):
    s = rs.get(name)
    glob = [m for m in s.minima if m.kind == "global"]
    assert len(glob) == len(LITERATURE[name])
    for x, y, v in LITERATURE[name]:
        m = min(glob, key=lambda m: (m.x - x) ** 2 + (m.y - y) ** 2)
        assert m.x == pytest.approx(x, abs=1e-4) and m.y == pytest.approx(y, abs=1e-4)
        assert m.value == pytest.approx(v, abs=1e-4)
        assert float(s.value(torch.tensor([x, y], dtype=torch.float64))) == pytest.approx(v, abs=1e-3)


def test_camel_local_minima_match_the_literature():
    local = [m for m in rs.get("camel").minima if m.kind == "local"]
    assert sorted(round(m.value, 4) for m in local) == [-0.2155, -0.2155, 2.1043, 2.1043]


def test_ackley_cone_tip_is_a_strict_minimum_with_finite_gradient():
    s = rs.get("ackley")
    o = torch.zeros(2, dtype=torch.float64)
    assert float(s.value(o)) == pytest.approx(0.0, abs=1e-14)
    assert torch.equal(s.grad(o), torch.zeros(2, dtype=torch.float64))
    ring = 1e-3 * torch.stack([torch.cos(t := torch.linspace(0, 2 * math.pi, 17, dtype=torch.float64)),
                               torch.sin(t)], dim=1)
    assert (s.value(ring) > 0).all()


def test_saddles():
    s = rs.get("saddle")
    assert s.minima == [] and s.global_minimum is None
    p = torch.zeros(2, dtype=torch.float64)
    assert torch.equal(s.grad(p), torch.zeros(2, dtype=torch.float64))
    ev = torch.linalg.eigvalsh(s.hessian(p))
    torch.testing.assert_close(ev, torch.tensor([-2.0, 2.0], dtype=torch.float64))
    m = rs.get("monkey_saddle")
    assert torch.equal(m.grad(p), torch.zeros(2, dtype=torch.float64))
    assert torch.equal(m.hessian(p), torch.zeros(2, 2, dtype=torch.float64))  # degenerate
    # f(t, 0) = t^3 changes sign through the origin: not a minimum
    assert float(m.value(torch.tensor([-0.1, 0.0]))) < 0 < float(m.value(torch.tensor([0.1, 0.0])))


def test_sharp_flat_saddle_and_curvatures():
    s = rs.get("sharp_flat")
    sharp = next(m for m in s.minima if m.kind == "global")
    flat = next(m for m in s.minima if m.kind == "local")

    def top(m):
        return float(torch.linalg.eigvalsh(s.hessian(torch.tensor([m.x, m.y], dtype=torch.float64))).max())

    assert top(sharp) > 10 * top(flat)
    assert abs(sharp.value - flat.value) < 0.15  # nearly equal depth: only the curvature differs much
    (sd,) = s.saddles
    p = torch.tensor([sd.x, sd.y], dtype=torch.float64)
    assert float(s.grad(p).norm()) < 1e-12
    ev = torch.linalg.eigvalsh(s.hessian(p))
    assert ev[0] < 0 < ev[1]


def test_valley_condition_number_is_the_parameter():
    for k in (4.0, 25.0, 1000.0):
        s = rs.get("valley", condition=k)
        assert s.params == {"condition": k}
        ev = torch.linalg.eigvalsh(s.hessian(torch.tensor([0.3, -0.2], dtype=torch.float64)))
        assert float(ev[1] / ev[0]) == pytest.approx(k, rel=1e-12)


def test_rosenbrock_parameters_move_the_minimum():
    s = rs.get("rosenbrock", a=0.5, b=10.0)
    (m,) = s.minima
    assert (m.x, m.y) == (0.5, 0.25)
    assert float(s.grad(torch.tensor([0.5, 0.25], dtype=torch.float64)).norm()) == 0.0


def test_get_errors_name_what_is_allowed():
    with pytest.raises(ValueError, match="unknown surface 'nope'; allowed: bowl, valley"):
        rs.get("nope")
    with pytest.raises(ValueError, match="surface 'valley' has no parameter 'beta'; allowed: condition"):
        rs.get("valley", beta=1.0)
    with pytest.raises(ValueError, match=r"surface 'valley': condition must be in \[1, 1e\+06\], got 0.5"):
        rs.get("valley", condition=0.5)
    with pytest.raises(ValueError, match="has no parameters"):
        rs.get("bowl", scale=2.0)
    with pytest.raises(ValueError, match=r"xy must have shape \(\.\.\., 2\), got \(3,\)"):
        rs.get("bowl").value(torch.zeros(3))


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: rs.get("rosenbrock", b=2e4), ValueError,
         r"surface 'rosenbrock': b must be in \[0.001, 10000\], got 20000"),
        (lambda: rs.get("plateau", width="wide"), TypeError,
         r"surface 'plateau': width must be a number in \[0.05, 10\]"),
        (lambda: rs.get("valley", condition=True), TypeError, r"condition must be a number in \[1, 1e\+06\], got bool"),
        (lambda: rs.get("bowl").grid(1), ValueError, r"n must be an integer in \[2, 2000\], got 1"),
        (lambda: rs.get("bowl").grid(2.5), ValueError, r"n must be an integer in \[2, 2000\], got 2.5"),
        (lambda: rs.get("bowl").value_and_grad(torch.zeros(2), method="fd"), ValueError,
         r"method must be one of 'auto', 'autograd', 'functional', got 'fd'"),
    ],
)
def test_argument_checks_say_what_is_allowed(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_param_info_gives_the_bounds_that_get_enforces():
    for name in rs.names():
        for key, (default, lo, hi) in rs.param_info(name).items():
            assert lo <= default <= hi
            for ok in (lo, default, hi):
                assert rs.get(name, **{key: ok}).params[key] == ok
            for bad in (math.nextafter(lo, -math.inf), math.nextafter(hi, math.inf)):
                with pytest.raises(ValueError, match=f"{key} must be in"):
                    rs.get(name, **{key: bad})


def test_dtype_follows_the_input_and_grid_covers_the_domain():
    s = rs.get("himmelblau")
    p = _points(s, 8)
    assert s.value(p.float()).dtype == torch.float32
    assert s.grad(p.float()).dtype == torch.float32
    X, Y, Z = s.grid(50)
    assert X.shape == Y.shape == Z.shape == (50, 50)
    assert (X[0, 0], Y[0, 0], X[-1, -1], Y[-1, -1]) == (-5.0, -5.0, 5.0, 5.0)
    ref = s.value(torch.tensor([X[7, 11], Y[7, 11]], dtype=torch.float64))
    assert Z[7, 11] == pytest.approx(float(ref), rel=1e-14)
    assert np.isfinite(Z).all()


def test_default_lr_families():
    s = rs.get("valley")
    assert s.default_lr("gd") == s.suggested_lr["gradient"]
    assert s.default_lr("adam") == s.suggested_lr["adaptive"]
    assert s.default_lr("momentum", beta=0.5) == pytest.approx(2 * s.suggested_lr["gradient"])
    assert s.default_lr("momentum", beta=0.5, form="heavy_ball") == s.suggested_lr["gradient"]
