"""The playground's bounds come from the library's: every value the web API accepts, ravine.optim
accepts (checked by building the optimizer), every value the library rejects, the API rejects; the
narrowing is a set intersection; and what the API computes with a bound the library allows matches
torch.optim."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

import ravine.optim as ro
from ravine._validation import Interval
from ravine.web import create_app
from ravine.web.app import LRUCache
from ravine.web.models import CLIP_MAX, HYPERPARAMS, ClipSpec, TrajectoryRequest, settable_hyperparams


def _inside_ends(interval: Interval) -> list[float]:
    """The extreme values an interval holds: each finite end if closed, else the float next to it inside."""
    out = []
    if interval.low is not None:
        out.append(interval.low if interval.low_closed else math.nextafter(interval.low, math.inf))
    if interval.high is not None:
        out.append(interval.high if interval.high_closed else math.nextafter(interval.high, -math.inf))
    return out


def _outside_ends(interval: Interval) -> list[float]:
    """The values just beyond each finite end (the end itself if open)."""
    out = []
    if interval.low is not None:
        out.append(math.nextafter(interval.low, -math.inf) if interval.low_closed else interval.low)
    if interval.high is not None:
        out.append(math.nextafter(interval.high, math.inf) if interval.high_closed else interval.high)
    return out


FLOAT_SETTINGS = [(opt, h) for opt in ro.names() for h in settable_hyperparams(opt) if HYPERPARAMS[h].kind == "float"]


@pytest.mark.parametrize("optimizer, name", FLOAT_SETTINGS)
def test_every_web_bound_is_accepted_by_the_library(optimizer, name):
    web = HYPERPARAMS[name].constraint
    assert web.low is not None and web.high is not None  # every page value is bounded
    for v in _inside_ends(web):
        assert HYPERPARAMS[name].check(v) == v
        try:
            ro.get(optimizer, **{name: v})  # the library's own checks
        except ValueError as exc:  # only a rule between two settings may object (nesterov needs beta > 0)
            assert "must be in" not in str(exc) and "requires" in str(exc), exc


@pytest.mark.parametrize("optimizer, name", FLOAT_SETTINGS)
def test_what_the_library_rejects_the_web_rejects(optimizer, name):
    for v in _outside_ends(ro.CONSTRAINTS[name]):
        with pytest.raises(ValueError):
            ro.get(optimizer, **{name: v})
        with pytest.raises(ValueError, match=rf"hyperparams\.{name} must be"):
            HYPERPARAMS[name].check(v, name=f"hyperparams.{name}")


def test_choices_and_clip_bounds_are_the_library_constraints():
    for name in ("form", "decay_convention"):
        assert HYPERPARAMS[name].choices == ro.CONSTRAINTS[name].values
    for v in _inside_ends(CLIP_MAX):
        ro.clip_by_global_norm(v)
        ro.clip_by_value(v)
    for v in _outside_ends(ro.CONSTRAINTS["max_norm"]):
        assert not CLIP_MAX.contains(v)


ENDS = [None, -1.0, 0.0, 1.0, 2.0]
CLOSED = ["both", "left", "right", "neither"]


def _intervals():
    for low, high, closed in itertools.product(ENDS, ENDS, CLOSED):
        if low is None or high is None or low <= high:
            yield Interval(float, low, high, closed)


def test_interval_intersect_is_the_set_intersection():
    points = [-math.inf, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, math.inf]
    for a in _intervals():
        for b in _intervals():
            if not any(a.contains(x) and b.contains(x) for x in points):
                continue  # an empty intersection is no narrowing the table uses
            both = a.intersect(b)
            assert [both.contains(x) for x in points] == [a.contains(x) and b.contains(x) for x in points], (a, b)


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app()) as c:
        yield c


def test_eps_zero_is_allowed_as_in_the_library_and_matches_torch(client):
    start, steps = [-1.2, 1.0], 40
    req = {
        "surface": {"name": "rosenbrock"},
        "start": start,
        "steps": steps,
        "optimizers": [{"name": "adam", "hyperparams": {"lr": 0.01, "eps": 0.0}}],
    }
    r = client.post("/api/trajectories", json=req)
    assert r.status_code == 200, r.text
    run = r.json()["runs"][0]
    p = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([p], lr=0.01, eps=0.0)
    path = [p.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        ((1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2).backward()
        opt.step()
        path.append(p.detach().clone())
    ref = torch.stack(path).numpy()
    np.testing.assert_allclose(np.c_[run["x"], run["y"]], ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "expression, kind, eigenvalues, stability_lr",
    [
        ("-(x**2) - 2*y**2", "maximum", [-4.0, -2.0], None),  # no positive curvature: no GD limit
        ("x**2", "degenerate", [0.0, 2.0], 1.0),  # 2 / lambda_max = 2 / 2
        ("3*x**2 + y**2", "minimum", [2.0, 6.0], 2 / 6),
    ],
)
def test_curvature_kind_and_limit_on_closed_form_hessians(client, expression, kind, eigenvalues, stability_lr):
    out = client.post("/api/curvature", json={"surface": {"expression": expression}, "point": [0.3, -0.4]}).json()
    assert out["kind"] == kind
    assert out["eigenvalues"] == pytest.approx(eigenvalues, abs=1e-12)
    assert out["stability_lr"] == (None if stability_lr is None else pytest.approx(stability_lr, rel=1e-12))


def test_lru_cache_evicts_the_least_recently_used():
    cache: LRUCache[int] = LRUCache(4, size_of=lambda value: 1)  # bytes: each entry is key 1 + value 1
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the least recently used
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    off: LRUCache[int] = LRUCache(0)
    off.put("a", 1)
    assert off.get("a") is None


def _field_extremes(model, name: str) -> list[float]:
    """The smallest and largest value a pydantic field's bounds allow (next to an open end)."""
    out = []
    for bound in model.model_fields[name].metadata:
        for key, pick in (("ge", None), ("le", None), ("gt", math.inf), ("lt", -math.inf)):
            value = getattr(bound, key, None)
            if value is not None:
                out.append(value if pick is None else math.nextafter(value, pick))
    return out


@pytest.mark.parametrize("name", ["steps", "noise", "seed", "tol", "batch_size"])
def test_every_run_bound_of_a_request_is_accepted_by_ravine_simulate(client, name):
    base = {"surface": {"name": "bowl"}, "steps": 3, "optimizers": [{"name": "gd", "hyperparams": {"lr": 0.1}}]}
    extremes = _field_extremes(TrajectoryRequest, name)
    assert len(extremes) == 2
    for value in extremes:
        r = client.post("/api/trajectories", json={**base, name: value})
        assert r.status_code == 200, r.text  # a value the library refused would be a 422 naming it
    for kind, value in itertools.product(("norm", "value"), _field_extremes(ClipSpec, "max")):
        r = client.post("/api/trajectories", json={**base, "clip": {"kind": kind, "max": value}})
        assert r.status_code == 200, r.text
