"""The playground's JSON API (FastAPI's test client): good requests against independent oracles
(torch.optim, clip_grad_norm_, closed-form Hessians, torch.linalg.eigh, the published cosine schedule),
bad requests (422 naming the field), and JSON that never carries NaN or inf."""

from __future__ import annotations

import inspect
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from ravine.web import create_app
from ravine.web import models as m

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app()) as c:
        yield c


def _strict_json(text: str):
    """Parse JSON refusing NaN / Infinity (Python's json accepts them by default; browsers do not)."""

    def bad(token):
        raise AssertionError(f"non-standard JSON constant {token!r} in the response")

    return json.loads(text, parse_constant=bad)


def _fields(resp) -> list[str]:
    assert resp.status_code == 422, resp.text
    body = _strict_json(resp.text)
    return [d["field"] for d in body["detail"]]


def _bowl(xy: torch.Tensor) -> torch.Tensor:  # f = x^2/2 + y^2 (ravine's "bowl", stated in its description)
    return 0.5 * xy[0] ** 2 + xy[1] ** 2


def _rosenbrock(xy: torch.Tensor) -> torch.Tensor:
    return (1 - xy[0]) ** 2 + 100 * (xy[1] - xy[0] ** 2) ** 2


def _torch_path(fn, opt_cls, start, steps, clip=None, **kw) -> np.ndarray:
    p = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = opt_cls([p], **kw)
    out = [p.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        fn(p).backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_([p], clip)
        opt.step()
        out.append(p.detach().clone())
    return torch.stack(out).numpy()


# ------------------------------------------------------------------------------------------------ page
def test_page_and_assets_are_served_locally(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert '<script src="/vendor/plotly.min.js">' in r.text and "/static/app.js" in r.text
    assert "cdn" not in r.text.lower() and "https://" not in r.text
    js = client.get("/vendor/plotly.min.js")
    import plotly

    bundled = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    assert js.status_code == 200 and len(js.content) == bundled.stat().st_size
    for path in ("/static/app.js", "/static/style.css"):
        assert client.get(path).status_code == 200
    assert "/api/trajectories" in client.get("/openapi.json").json()["paths"]
    docs = client.get("/docs")  # rendered locally: FastAPI's Swagger UI would load its JS from a CDN
    assert docs.status_code == 200 and "https://" not in docs.text and "/openapi.json" in docs.text
    assert client.get("/static/docs.js").status_code == 200


# ------------------------------------------------------------------------------------------------ catalogues
def test_optimizer_catalog_matches_torch_defaults(client):
    cat = {o["name"]: o for o in client.get("/api/optimizers").json()}
    assert {"gd", "sgd", "momentum", "rmsprop", "adam", "adamw"} <= set(cat)
    adam = {h["name"]: h for h in cat["adam"]["hyperparams"]}
    sig = inspect.signature(torch.optim.Adam).parameters
    assert (adam["b1"]["default"], adam["b2"]["default"]) == sig["betas"].default
    assert adam["eps"]["default"] == sig["eps"].default
    assert adam["bias_correction"]["kind"] == "bool" and adam["lr"]["log"] is True
    assert adam["lr"]["min"] > 0 and "(0" in adam["lr"]["allowed"]
    adamw = {h["name"]: h for h in cat["adamw"]["hyperparams"]}
    assert adamw["weight_decay"]["default"] == inspect.signature(torch.optim.AdamW).parameters["weight_decay"].default
    assert "mask" not in adamw  # not settable from a page
    sgd = {h["name"]: h for h in cat["sgd"]["hyperparams"]}
    assert sgd["nesterov"]["kind"] == "bool" and sgd["momentum"]["max"] < 1


def test_schedules_and_surfaces_catalogues(client):
    names = [s["name"] for s in client.get("/api/schedules").json()]
    assert names[:3] == ["constant", "warmup_cosine", "wsd"]
    surfaces = client.get("/api/surfaces", params={"grid": 20}).json()
    by = {s["name"]: s for s in surfaces}
    assert {"bowl", "rosenbrock", "himmelblau", "saddle"} <= set(by)
    ros = by["rosenbrock"]
    assert any(mn["x"] == 1.0 and mn["y"] == 1.0 and mn["value"] == 0.0 for mn in ros["minima"])
    g = ros["grid"]
    assert len(g["x"]) == 20 and len(g["z"]) == 20
    # grid values are the closed form
    x, y = g["x"][3], g["y"][7]
    assert g["z"][7][3] == pytest.approx((1 - x) ** 2 + 100 * (y - x * x) ** 2, rel=1e-12)
    assert ros["params"] == {"a": 1.0, "b": 100.0} and ros["param_ranges"]["b"][0] > 0
    assert client.get("/api/surfaces", params={"grid": 100000}).status_code == 422


# ------------------------------------------------------------------------------------------------ trajectories
def test_trajectories_match_torch_optim(client):
    req = {
        "surface": {"name": "rosenbrock"},
        "start": [-1.2, 1.0],
        "steps": 60,
        "optimizers": [
            {"name": "adam", "hyperparams": {"lr": 0.02, "b1": 0.8, "b2": 0.99, "eps": 1e-8}},
            {"name": "sgd", "hyperparams": {"lr": 1e-4, "momentum": 0.9, "nesterov": True}},
            {"name": "gd", "label": "plain", "hyperparams": {"lr": 1e-4}},
        ],
    }
    r = client.post("/api/trajectories", json=req)
    assert r.status_code == 200, r.text
    out = _strict_json(r.text)
    assert out["steps"] == 60 and out["global_min"] == 0.0 and [x["label"] for x in out["runs"]][2] == "plain"
    oracles = [
        _torch_path(_rosenbrock, torch.optim.Adam, [-1.2, 1.0], 60, lr=0.02, betas=(0.8, 0.99), eps=1e-8),
        _torch_path(_rosenbrock, torch.optim.SGD, [-1.2, 1.0], 60, lr=1e-4, momentum=0.9, nesterov=True),
        _torch_path(_rosenbrock, torch.optim.SGD, [-1.2, 1.0], 60, lr=1e-4),
    ]
    for run, ref in zip(out["runs"], oracles):
        assert len(run["x"]) == 61 and len(run["grad_norm"]) == 60 and len(run["lr"]) == 60
        np.testing.assert_allclose(run["x"], ref[:, 0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(run["y"], ref[:, 1], rtol=1e-9, atol=1e-12)
        loss = [_rosenbrock(torch.tensor(p)).item() for p in ref]
        np.testing.assert_allclose(run["loss"], loss, rtol=1e-9, atol=1e-12)
        assert run["diverged"] is False and run["diverged_at"] is None


def test_clipping_marks_the_clipped_steps_like_clip_grad_norm(client):
    req = {
        "surface": {"name": "bowl"},
        "start": [-1.8, 1.6],
        "steps": 60,
        "optimizers": [{"name": "gd", "hyperparams": {"lr": 0.2}}],
        "clip": {"kind": "norm", "max": 0.5},
    }
    run = client.post("/api/trajectories", json=req).json()["runs"][0]
    ref = _torch_path(_bowl, torch.optim.SGD, [-1.8, 1.6], 60, clip=0.5, lr=0.2)
    np.testing.assert_allclose(np.c_[run["x"], run["y"]], ref, rtol=1e-10, atol=1e-13)
    grad = np.c_[ref[:-1, 0], 2 * ref[:-1, 1]]  # closed-form gradient of x^2/2 + y^2
    norms = np.linalg.norm(grad, axis=1)
    np.testing.assert_allclose(run["grad_norm"], norms, rtol=1e-10)
    assert run["clipped_steps"] == [int(k) for k in np.flatnonzero(norms > 0.5)]
    assert 0 < len(run["clipped_steps"]) < 60


def test_warmup_cosine_schedule_follows_the_published_formula(client):
    steps, lr, W = 50, 0.2, 6
    req = {
        "surface": {"name": "bowl"},
        "steps": steps,
        "optimizers": [{"name": "gd", "hyperparams": {"lr": lr}}],
        "schedule": {"name": "warmup_cosine", "params": {"warmup_steps": W}},
    }
    run = client.post("/api/trajectories", json=req).json()["runs"][0]
    p = W - 1
    expect = [
        lr * (t + 1) / W if t < p else lr * 0.5 * (1 + math.cos(math.pi * (t - p) / (steps - p))) for t in range(steps)
    ]
    np.testing.assert_allclose(run["lr"], expect, rtol=1e-12, atol=1e-15)
    # and the positions used those rates: x_{t+1} = x_t (1 - lr_t) on f = x^2/2 + y^2
    x = run["x"]
    np.testing.assert_allclose(x[1:], np.asarray(x[:-1]) * (1 - np.asarray(expect)), rtol=1e-12)


def test_step_decay_without_parameters_steps_every_quarter_of_the_run_as_torch_steplr(client):
    """The page can set step_size only (milestones are a list): left out, it is a quarter of the run."""
    steps, lr = 40, 0.3
    req = {"surface": {"name": "bowl"}, "steps": steps, "optimizers": [{"name": "gd", "hyperparams": {"lr": lr}}],
           "schedule": {"name": "step_decay", "params": {"gamma": 0.5}}}
    r = client.post("/api/trajectories", json=req)
    assert r.status_code == 200, r.text
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=steps // 4, gamma=0.5)
    expect = []
    for _ in range(steps):
        expect.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(r.json()["runs"][0]["lr"], expect, rtol=1e-12)
    catalog = {s["name"]: s for s in client.get("/api/schedules").json()}
    assert "quarter" in {q["name"]: q for q in catalog["step_decay"]["params"]}["step_size"]["auto"]


def test_the_response_says_what_steps_to_tol_measures(client):
    """On the saddle x^2 - y^2 (no global minimum) from (-1.8, 0), GD at lr 0.1 has x_k = 0.8^k x_0 and
    |grad f| = 2 |x_k|: its first step with |grad f| <= tol is the stationary criterion's; on the bowl, the loss gap."""
    body = {"surface": {"name": "saddle"}, "steps": 80, "tol": 1e-3,
            "optimizers": [{"name": "gd", "hyperparams": {"lr": 0.1}}]}
    out = client.post("/api/trajectories", json=body).json()
    assert out["tol_criterion"] == "grad_norm" and out["global_min"] is None
    k = next(k for k in range(81) if 2 * 1.8 * 0.8**k <= 1e-3)
    assert out["runs"][0]["steps_to_tol"] == k
    bowl = client.post("/api/trajectories", json={**body, "surface": {"name": "bowl"}}).json()
    assert bowl["tol_criterion"] == "loss_gap" and bowl["global_min"] == 0.0


def test_diverging_run_is_flagged_and_json_stays_finite(client):
    req = {
        "surface": {"name": "valley", "params": {"condition": 25.0}},
        "steps": 300,
        "optimizers": [{"name": "gd", "hyperparams": {"lr": 0.5}}, {"name": "gd", "hyperparams": {"lr": 0.05}}],
    }
    r = client.post("/api/trajectories", json=req)
    assert r.status_code == 200
    assert "NaN" not in r.text and "Infinity" not in r.text
    runs = _strict_json(r.text)["runs"]
    bad, good = runs
    # GD on curvature 25 is unstable for lr > 2/25 = 0.08: |1 - 25 lr| = 11.5 per step along y
    assert bad["diverged"] is True and isinstance(bad["diverged_at"], int) and bad["final_loss"] is None
    assert good["diverged"] is False and good["final_loss"] is not None
    k = bad["diverged_at"]
    assert all(v is None for v in bad["grad_norm"][k:])
    assert all(v is None or math.isfinite(v) for v in bad["x"] + bad["y"] + bad["loss"])


def test_identical_requests_are_cached_distinct_are_not(client):
    req = {"surface": {"name": "bowl"}, "steps": 20, "optimizers": [{"name": "adam", "hyperparams": {"lr": 0.031}}]}
    a = client.post("/api/trajectories", json=req)
    b = client.post("/api/trajectories", json=req)
    assert a.headers["x-ravine-cache"] == "miss" and b.headers["x-ravine-cache"] == "hit"
    assert a.content == b.content
    req["optimizers"][0]["hyperparams"]["lr"] = 0.032
    assert client.post("/api/trajectories", json=req).headers["x-ravine-cache"] == "miss"


def test_run_cache_recomputes_only_the_changed_optimizer():
    opts = [
        {"name": "adam", "hyperparams": {"lr": 0.05}},
        {"name": "momentum", "hyperparams": {"lr": 0.01, "beta": 0.8}},
        {"name": "rmsprop", "hyperparams": {"lr": 0.01}},
    ]
    req = {"surface": {"name": "rosenbrock"}, "steps": 80, "noise": 0.5, "seed": 3, "optimizers": opts}
    with TestClient(create_app(cache_mb=0)) as warm, TestClient(create_app(cache_mb=0, run_cache_mb=0)) as cold:
        first = warm.post("/api/trajectories", json=req).json()
        assert first["simulated_runs"] == 3
        req["optimizers"][1]["hyperparams"]["beta"] = 0.9
        second = warm.post("/api/trajectories", json=req).json()
        assert second["simulated_runs"] == 1
        fresh = cold.post("/api/trajectories", json=req).json()
        assert fresh["simulated_runs"] == 3
    for a, b in zip(second["runs"], fresh["runs"]):
        assert a["hyperparams"] == b["hyperparams"] and a["clipped_steps"] == b["clipped_steps"]
        for key in ("x", "y", "loss", "grad_norm", "lr"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-13, atol=1e-300)
    assert second["runs"][1]["x"] != first["runs"][1]["x"]  # the changed one really was recomputed
    # a change shared by all runs (the seed) invalidates every run
    req["seed"] = 4
    with TestClient(create_app(cache_mb=0)) as warm:
        warm.post("/api/trajectories", json={**req, "seed": 3})
        assert warm.post("/api/trajectories", json=req).json()["simulated_runs"] == 3


# ------------------------------------------------------------------------------------------------ sweep
def test_sweep_cells_match_torch_sgd(client):
    lrs = np.geomspace(0.05, 1.5, 6)
    mus = np.linspace(0.0, 0.9, 4)
    req = {
        "surface": {"name": "bowl"},
        "start": [-1.8, 1.6],
        "steps": 40,
        "optimizer": {"name": "sgd"},
        "x": {"name": "lr", "min": 0.05, "max": 1.5, "n": 6, "log": True},
        "y": {"name": "momentum", "min": 0.0, "max": 0.9, "n": 4},
    }
    r = client.post("/api/sweep", json=req)
    assert r.status_code == 200, r.text
    out = _strict_json(r.text)
    np.testing.assert_allclose(out["x_values"], lrs, rtol=1e-12)
    np.testing.assert_allclose(out["y_values"], mus, rtol=1e-12)
    assert len(out["final_loss"]) == 4 and len(out["final_loss"][0]) == 6
    n_div = 0
    for i, mu in enumerate(mus):
        for j, lr in enumerate(lrs):
            ref = _torch_path(_bowl, torch.optim.SGD, [-1.8, 1.6], 40, lr=float(lr), momentum=float(mu))
            final = _bowl(torch.tensor(ref[-1])).item()
            if out["diverged_at"][i][j] is not None:
                n_div += 1
                assert out["final_loss"][i][j] is None
                assert not math.isfinite(final) or final > 1e3  # torch's run blew up as well
            else:
                assert out["final_loss"][i][j] == pytest.approx(final, rel=1e-9, abs=1e-14)
    # GD on curvature 2 diverges for lr > 1 without momentum: the top lrs of row 0 diverge
    assert out["diverged_at"][0][-1] is not None and n_div >= 1


# ------------------------------------------------------------------------------------------------ curvature
def test_curvature_matches_dense_hessian_and_eigh(client):
    point = [-0.7, 1.3]
    out = client.post("/api/curvature", json={"surface": {"name": "rosenbrock"}, "point": point}).json()
    H = torch.autograd.functional.hessian(_rosenbrock, torch.tensor(point, dtype=torch.float64))
    evals, evecs = torch.linalg.eigh(H)
    np.testing.assert_allclose(out["hessian"], H.numpy(), rtol=1e-12)
    np.testing.assert_allclose(out["eigenvalues"], evals.numpy(), rtol=1e-12)
    for i in range(2):  # eigenvectors up to sign
        v = np.asarray(out["eigenvectors"][i])
        assert abs(abs(v @ evecs[:, i].numpy()) - 1) < 1e-10
    lam = evals.numpy()
    assert out["condition_number"] == pytest.approx(np.abs(lam).max() / np.abs(lam).min(), rel=1e-12)
    assert out["stability_lr"] == pytest.approx(2 / lam.max(), rel=1e-12)
    assert out["kind"] == ("minimum" if lam.min() > 0 else "saddle")

    bowl = client.post("/api/curvature", json={"surface": {"name": "bowl"}, "point": [0.3, -0.2]}).json()
    assert bowl["eigenvalues"] == pytest.approx([1.0, 2.0]) and bowl["stability_lr"] == pytest.approx(1.0)
    assert bowl["condition_number"] == pytest.approx(2.0) and bowl["kind"] == "minimum"
    sad = client.post("/api/curvature", json={"surface": {"expression": "x**2 - 3*y**2"}, "point": [0, 0]}).json()
    assert sad["kind"] == "saddle" and sad["eigenvalues"] == pytest.approx([-6.0, 2.0])
    assert sad["stability_lr"] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------ expressions
def test_expression_check_reports_position_and_grids_valid_text(client):
    bad = client.post("/api/surface/check", json={"expression": "x**2 + import(y)"}).json()
    assert bad["ok"] is False and bad["position"] == 7 and "import" in bad["error"]
    bad2 = client.post("/api/surface/check", json={"expression": "__import__('os').system('true')"}).json()
    assert bad2["ok"] is False and bad2["position"] == 0
    ok = client.post("/api/surface/check", json={"expression": "x**2 + 3*y**2", "grid": 11}).json()
    assert ok["ok"] is True and ok["surface"]["domain"] == [[-2.0, 2.0], [-2.0, 2.0]]
    g = ok["surface"]["grid"]
    assert g["z"][0][0] == pytest.approx(4 + 12) and g["z"][5][5] == pytest.approx(0.0, abs=1e-12)
    too_long = client.post("/api/surface/check", json={"expression": "x" + "+x" * 300})
    assert _fields(too_long) == ["expression"]


def test_expression_surface_in_trajectories_and_bad_expression_is_422(client):
    req = {
        "surface": {"expression": "(x - 1)**2 + 2*(y + 0.5)**2", "domain": [[-3, 3], [-3, 3]]},
        "start": [2.0, 2.0],
        "steps": 200,
        "optimizers": [{"name": "gd", "hyperparams": {"lr": 0.1}}],
    }
    run = client.post("/api/trajectories", json=req).json()["runs"][0]
    assert run["x"][-1] == pytest.approx(1.0, abs=1e-6) and run["y"][-1] == pytest.approx(-0.5, abs=1e-6)
    code = client.post("/api/python", json=req).json()["code"]
    assert "rs.parse('(x - 1)**2 + 2*(y + 0.5)**2', domain=((-3.0, 3.0), (-3.0, 3.0)))" in code
    req["surface"]["expression"] = "x**2 + exec(y)"
    r = client.post("/api/trajectories", json=req)
    assert _fields(r) == ["surface"]
    assert "position 7" in r.json()["detail"][0]["msg"] and "surface.expression" in r.json()["message"]


# ------------------------------------------------------------------------------------------------ validation
BASE = {"surface": {"name": "bowl"}, "steps": 10, "optimizers": [{"name": "adam"}]}


@pytest.mark.parametrize(
    "patch, field, words",
    [
        ({"steps": 10001}, "steps", "10000"),
        ({"steps": 0}, "steps", "1"),
        ({"optimizers": [{"name": "adam"}] * 17}, "optimizers", "16"),
        ({"optimizers": []}, "optimizers", "1"),
        ({"optimizers": [{"name": "lbfgs"}]}, "optimizers.0.name", "adam"),
        ({"optimizers": [{"name": "adam", "hyperparams": {"lr": 0}}]}, "optimizers.0", "hyperparams.lr"),
        ({"optimizers": [{"name": "adam", "hyperparams": {"lr": -1}}]}, "optimizers.0", "(0, 1000]"),
        ({"optimizers": [{"name": "adam", "hyperparams": {"b1": 1.0}}]}, "optimizers.0", "[0, 1)"),
        ({"optimizers": [{"name": "adam", "hyperparams": {"beta": 0.9}}]}, "optimizers.0", "hyperparams.beta"),
        ({"optimizers": [{"name": "adam", "hyperparams": {"amsgrad": 3}}]}, "optimizers.0", "true or false"),
        ({"surface": {"name": "nope"}}, "surface", "rosenbrock"),
        ({"surface": {"name": "valley", "params": {"condition": -1}}}, "surface", "condition"),
        ({"surface": {"expression": "x" * 501}}, "surface.expression", "500"),
        ({"start": [1.0, 2e7]}, "start", "1e6"),
        ({"noise": -0.1}, "noise", "0"),
        ({"clip": {"kind": "norm", "max": 0}}, "clip.max", "0"),
        ({"clip": {"kind": "sideways", "max": 1}}, "clip.kind", "norm"),
        ({"schedule": {"name": "cosine_forever"}}, "schedule", "warmup_cosine"),
        ({"schedule": {"name": "wsd", "params": {"warmup_steps": 2.5}}}, "schedule", "integer"),
        ({"unexpected": 1}, "unexpected", "not permitted"),
    ],
)
def test_bad_trajectory_requests_get_422_naming_the_field(client, patch, field, words):
    r = client.post("/api/trajectories", json={**BASE, **patch})
    fields = _fields(r)
    assert field in fields, r.text
    assert words in r.json()["message"]


def test_non_finite_numbers_in_a_request_are_422_not_500(client):
    for bad in ("NaN", "Infinity", "-Infinity"):
        body = '{"surface": {"name": "bowl"}, "steps": 10, "optimizers": [{"name": "gd", "hyperparams": {"lr": X}}]}'
        r = client.post(
            "/api/trajectories", content=body.replace("X", bad), headers={"content-type": "application/json"}
        )
        assert r.status_code == 422, r.text
        _strict_json(r.text)
        assert "hyperparams" in r.json()["message"]
        r = client.post(
            "/api/curvature", content='{"point": [' + bad + ", 0]}", headers={"content-type": "application/json"}
        )
        assert "point.0" in _fields(r)


def test_work_caps_and_sweep_bounds(client):
    sweep = {
        "surface": {"name": "bowl"},
        "optimizer": {"name": "momentum"},
        "x": {"name": "lr", "min": 1e-3, "max": 1, "n": 128, "log": True},
        "y": {"name": "beta", "min": 0, "max": 0.99, "n": 128},
        "steps": 10000,
    }
    r = client.post("/api/sweep", json=sweep)
    assert _fields(r) == ["body"] and "exceeds the cap" in r.json()["message"]
    sweep["x"]["n"] = 129
    assert "x.n" in _fields(client.post("/api/sweep", json=sweep))
    sweep["x"].update(n=8, name="b1", min=0.1, max=0.9)
    r = client.post("/api/sweep", json={**sweep, "steps": 10})
    assert "not a hyperparameter of 'momentum'" in r.json()["message"]
    sweep["x"].update(name="lr", min=0.0, max=1.0)
    r = client.post("/api/sweep", json={**sweep, "steps": 10})
    assert "x" in _fields(r) and "log axis" in r.json()["message"]
    sweep["x"].update(min=1e-3)
    sweep["y"].update(name="lr", min=0.01, max=0.1)
    assert "must differ" in client.post("/api/sweep", json={**sweep, "steps": 10}).json()["message"]
    assert m.MAX_OPTIMIZERS * m.MAX_STEPS <= m.MAX_TRAJECTORY_WORK


# ------------------------------------------------------------------------------------------------ python
def test_python_snippet_reproduces_the_request(client, tmp_path):
    req = {
        "surface": {"name": "rosenbrock", "params": {"b": 50.0}},
        "start": [-1.0, 1.5],
        "steps": 25,
        "optimizers": [{"name": "adam", "label": "it's adam", "hyperparams": {"lr": 0.05, "b1": 0.85}}],
        "schedule": {"name": "wsd"},
        "clip": {"kind": "value", "max": 2.0},
        "noise": 0.3,
        "seed": 7,
    }
    code = client.post("/api/python", json=req).json()["code"]
    compile(code, "snippet.py", "exec")  # syntactically valid; run it for real below
    script = tmp_path / "snippet.py"
    out = tmp_path / "positions.npy"
    script.write_text(code + f"\nnp.save({str(out)!r}, tr.positions)\n")
    env = {**os.environ, "MPLBACKEND": "Agg"}
    subprocess.run([sys.executable, str(script)], check=True, env=env, timeout=120, cwd=tmp_path)
    api = client.post("/api/trajectories", json=req).json()["runs"][0]
    pos = np.load(out)
    np.testing.assert_array_equal(pos[0, :, 0], np.asarray(api["x"], dtype=float))
    np.testing.assert_array_equal(pos[0, :, 1], np.asarray(api["y"], dtype=float))


# ------------------------------------------------------------------------------------------------ ravine serve
def test_serve_command_binds_loopback_and_serves(tmp_path):
    from ravine.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.open) == ("127.0.0.1", 8000, False)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--port", "70000"])

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ravine.cli", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        import httpx

        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/limits", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        assert r.json()["max_steps"] == 10000
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_each_optimizer_gets_its_own_stability_limit_and_runs_obey_it(client):
    """The per-optimizer lr limits on the bowl (lambda_max = 2) equal the closed forms, and a run just
    below each limit stays bounded while one just above it diverges; adaptive optimizers get none."""
    lam, beta = 2.0, 0.5
    specs = [
        {"name": "gd"},
        {"name": "sgd", "hyperparams": {"momentum": beta}},  # heavy ball
        {"name": "momentum", "hyperparams": {"beta": beta, "form": "ema"}},
        {"name": "adam"},
    ]
    closed = [2 / lam, 2 * (1 + beta) / lam, 2 * (1 + beta) / ((1 - beta) * lam), None]
    out = client.post(
        "/api/curvature", json={"surface": {"name": "bowl"}, "point": [0.3, -0.2], "optimizers": specs}
    ).json()
    limits = [limit["lr"] for limit in out["limits"]]
    for got, want in zip(limits, closed):
        assert got == (None if want is None else pytest.approx(want, rel=1e-12))
    for spec, limit in zip(specs[:3], limits[:3]):
        runs = []
        for factor in (0.97, 1.03):
            hp = {**spec.get("hyperparams", {}), "lr": limit * factor}
            optimizer = {"name": spec["name"], "hyperparams": hp}
            req = {"surface": {"name": "bowl"}, "steps": 2000, "optimizers": [optimizer]}
            runs.append(client.post("/api/trajectories", json=req).json()["runs"][0])
        assert runs[0]["diverged"] is False, spec
        assert runs[1]["diverged"] is True, spec


def test_the_contour_levels_come_from_the_one_rule_the_exported_figure_uses(client):
    """The page draws the server's contour (log values and levels), computed by
    ravine.plots.playground.contour_levels; checked here against that function on the surface's own grid."""
    import numpy as np

    import ravine.surfaces as rs
    from ravine.plots.playground import LEVELS, contour_levels

    r = client.post("/api/surface/grid", json={"surface": {"name": "rosenbrock"}, "n": 41})
    assert r.status_code == 200, r.text
    c = r.json()["grid"]["contour"]
    _, _, Z = rs.get("rosenbrock").grid(n=41)
    t, levels = contour_levels(np.asarray(Z, dtype=np.float64))
    assert c["start"] == pytest.approx(levels[0]) and c["end"] == pytest.approx(levels[-1])
    assert c["size"] == pytest.approx((levels[-1] - levels[0]) / LEVELS)
    got = np.array([[np.nan if v is None else v for v in row] for row in c["z"]])
    np.testing.assert_allclose(got, t, rtol=1e-12)
