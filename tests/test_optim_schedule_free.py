"""Schedule-Free AdamW against Meta's ``schedulefree`` package, and the elementwise newcomers
(Schedule-Free AdamW, Lion, ADOPT) in the 2D world and the playground.

Oracles: ``schedulefree.AdamWScheduleFree`` (training weights ``y`` after each step, evaluation
weights ``x`` read after its ``.eval()``), ``pytorch_optimizer.Lion`` and ``pytorch_optimizer.ADOPT``
stepped by hand on the same surfaces; float64 throughout.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import ravine.optim as ro
import ravine.simulate as sim
from _parity import make_model

schedulefree = pytest.importorskip("schedulefree")
pytorch_optimizer = pytest.importorskip("pytorch_optimizer")

STEPS = 120


def groups(model, lr):
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    return [{"params": weights}, {"params": biases, "lr": lr * 0.5}]


def batches(digits, steps):
    X, y = digits
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(X), (64,), generator=g)
        yield X[idx], y[idx]


def loss_of(model, xb, yb):
    return torch.nn.functional.cross_entropy(model(xb), yb)


def reference_eval(ref_opt, model):
    """The reference's evaluation weights (in param-group order): its .eval() swap, read, .train() back."""
    ref_opt.eval()
    x = [p.detach().clone() for g in ref_opt.param_groups for p in g["params"]]
    ref_opt.train()
    return x


CONFIGS = [
    dict(lr=0.01),
    dict(lr=0.02, betas=(0.8, 0.99), warmup_steps=20, weight_decay=0.05),
    dict(lr=0.01, warmup_steps=10, r=1.0, weight_lr_power=1.0, eps=1e-6),
]


@pytest.mark.parametrize("kw", CONFIGS, ids=["defaults", "warmup_decay_betas", "polynomial_average"])
def test_train_and_eval_weights_match_schedulefree(kw, digits):
    ours, theirs = make_model(), make_model()
    opt = ro.ScheduleFreeAdamW(groups(ours, kw["lr"]), **kw)
    ref = schedulefree.AdamWScheduleFree(groups(theirs, kw["lr"]), **kw)
    ref.train()
    for step, (xb, yb) in enumerate(batches(digits, STEPS), start=1):
        for model, o in ((ours, opt), (theirs, ref)):
            o.zero_grad()
            loss_of(model, xb, yb).backward()
            o.step()
        if step % 40 == 0:
            for a, b in zip(ours.parameters(), theirs.parameters()):  # y, the training weights
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
            for a, b in zip(opt.eval_weights(), reference_eval(ref, theirs)):  # x, the evaluation weights
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    moved = max((p - q).abs().max().item() for p, q in zip(ours.parameters(), make_model().parameters()))
    assert moved > 0.05  # the comparison is not between two models that did not move


def test_chain_with_clipping_matches_schedulefree_after_clip_grad_norm(digits):
    """The chain composes: clip_by_global_norm first equals clip_grad_norm_ before the reference step."""
    ours, theirs = make_model(), make_model()
    opt = ro.Optimizer(ours.parameters(), ro.chain(ro.clip_by_global_norm(0.5), ro.schedule_free_adamw(0.02)))
    ref = schedulefree.AdamWScheduleFree(theirs.parameters(), lr=0.02)
    ref.train()
    for xb, yb in batches(digits, 60):
        opt.zero_grad()
        loss_of(ours, xb, yb).backward()
        opt.step()
        ref.zero_grad()
        loss_of(theirs, xb, yb).backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.5)
        ref.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # the closed form of the swap: x = (y - (1 - b1) z) / b1
    y = list(ours.parameters())
    z = [opt.state[p]["z"] for p in y]
    for x, yi, zi in zip(ro.schedule_free_eval(y, z, 0.9), y, z):
        torch.testing.assert_close(x, (yi - 0.1 * zi) / 0.9, rtol=1e-12, atol=1e-12)


def _trained(digits, steps=30):
    model = make_model()
    opt = ro.ScheduleFreeAdamW(model.parameters(), lr=0.02, warmup_steps=5)
    for xb, yb in batches(digits, steps):
        opt.zero_grad()
        loss_of(model, xb, yb).backward()
        opt.step()
    return model, opt


def test_eval_params_swaps_in_x_and_restores_y_bit_for_bit(digits):
    model, opt = _trained(digits)
    y = [p.detach().clone() for p in model.parameters()]
    x = opt.eval_weights()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), y))  # eval_weights touches nothing
    assert max((a - b).abs().max().item() for a, b in zip(x, y)) > 1e-3  # x and y do differ
    with opt.eval_params():
        for p, xi in zip(model.parameters(), x):
            assert torch.equal(p, xi)
        with pytest.raises(RuntimeError, match="inside eval_params"):
            opt.step()
        with pytest.raises(RuntimeError, match="do not nest"):
            with opt.eval_params():
                pass
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), y))
    with pytest.raises(KeyError):
        with opt.eval_params():
            raise KeyError("an evaluation that fails")
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), y))


@pytest.mark.parametrize("inside", [False, True], ids=["saved_outside", "saved_inside_eval_params"])
def test_checkpoint_resumes_the_run_whichever_weights_the_model_held(inside, digits, tmp_path):
    """opt.checkpoint(model) after 30 steps, loaded into fresh objects, 30 more steps: bit for bit the
    weights of 60 uninterrupted steps, whether the model held y or x when it was saved; its
    "eval_model" is the reference's eval() weights."""
    steps = list(batches(digits, 60))
    straight, twin = make_model(), make_model()
    opt = ro.ScheduleFreeAdamW(straight.parameters(), lr=0.02, warmup_steps=5, weight_decay=0.01)
    ref = schedulefree.AdamWScheduleFree(twin.parameters(), lr=0.02, warmup_steps=5, weight_decay=0.01)
    ref.train()
    for i, (xb, yb) in enumerate(steps):
        if i == 30:
            if inside:
                with opt.eval_params():
                    torch.save(opt.checkpoint(straight), tmp_path / "ck.pt")
                    with pytest.raises(RuntimeError, match="checkpoint"):
                        opt.state_dict()  # a resume from these (x) weights would be wrong: refused
            else:
                torch.save(opt.checkpoint(straight), tmp_path / "ck.pt")
            ref.eval()
            shipped = {k: v.detach().clone() for k, v in twin.state_dict().items()}
            ref.train()
        for model, o in ((straight, opt), (twin, ref)):
            o.zero_grad()
            loss_of(model, xb, yb).backward()
            o.step()

    ck = torch.load(tmp_path / "ck.pt", weights_only=True)
    for k, v in shipped.items():
        torch.testing.assert_close(ck["eval_model"][k], v, rtol=1e-10, atol=1e-12)
    resumed = make_model()
    opt2 = ro.ScheduleFreeAdamW(resumed.parameters(), lr=0.02, warmup_steps=5, weight_decay=0.01)
    opt2.load_checkpoint(resumed, ck)
    for xb, yb in steps[30:]:
        opt2.zero_grad()
        loss_of(resumed, xb, yb).backward()
        opt2.step()
    assert all(torch.equal(a, b) for a, b in zip(resumed.parameters(), straight.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(opt2.eval_weights(), opt.eval_weights()))


def test_bad_arguments_name_the_argument_and_what_is_allowed():
    with pytest.raises(ValueError, match=r"warmup_steps must be an integer in \[0, inf"):
        ro.schedule_free_adamw(0.01, warmup_steps=-1)
    with pytest.raises(ValueError, match=r"b1 must be in \[0, 1\), got 1.0"):
        ro.get("schedule_free_adamw", b1=1.0)
    with pytest.raises(ValueError, match=r"warmup_steps must be whole numbers of steps, got \[3.5\]"):
        sim.sweep("bowl", "schedule_free_adamw", x=("lr", [0.01, 0.1]), y=("warmup_steps", [0, 3.5]), steps=5)
    with pytest.raises(ValueError, match="betas must be a pair"):
        ro.ScheduleFreeAdamW([torch.zeros(2, requires_grad=True)], betas=0.9)
    with pytest.raises(ValueError, match="schedule_free is not an elementwise primitive"):
        opt = ro.ScheduleFreeAdamW([torch.nn.Parameter(torch.zeros(3))], fused=True)
        opt.param_groups[0]["params"][0].grad = torch.ones(3)
        opt.step()


# ------------------------------------------------------------------------------------------------ the 2D world


def _rosenbrock(xy: torch.Tensor) -> torch.Tensor:
    return (1 - xy[0]) ** 2 + 100 * (xy[1] - xy[0] ** 2) ** 2


def _bowl(xy: torch.Tensor) -> torch.Tensor:  # ravine's "bowl": x^2/2 + y^2
    return 0.5 * xy[0] ** 2 + xy[1] ** 2


def _reference_path(fn, opt_cls, start, steps, **kw) -> np.ndarray:
    p = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = opt_cls([p], **kw)
    if hasattr(opt, "train"):
        opt.train()
    out = [p.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        fn(p).backward()
        opt.step()
        out.append(p.detach().clone())
    return torch.stack(out).numpy()


NEWCOMERS = [
    ({"name": "schedule_free_adamw", "lr": 0.05, "warmup_steps": 5},
     (schedulefree.AdamWScheduleFree, dict(lr=0.05, warmup_steps=5))),
    ({"name": "lion", "lr": 0.01, "b1": 0.8, "b2": 0.95},
     (pytorch_optimizer.Lion, dict(lr=0.01, betas=(0.8, 0.95), weight_decay=0.0))),
    ({"name": "adopt", "lr": 0.01}, (pytorch_optimizer.ADOPT, dict(lr=0.01, weight_decay=0.0))),
]


def test_the_elementwise_newcomers_are_named_optimizers_of_the_2d_world():
    names = ro.names()
    for spec, _ in NEWCOMERS:
        assert spec["name"] in names
    assert "soap" not in names and "soap" in ro.names(matrix=True)  # it would mix a batch's rows


@pytest.mark.parametrize("spec,reference", NEWCOMERS, ids=[s["name"] for s, _ in NEWCOMERS])
def test_simulate_runs_each_newcomer_as_its_reference_implementation(spec, reference):
    traj = sim.run("rosenbrock", [spec], start=[-1.2, 1.0], steps=80)
    cls, kw = reference
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = _reference_path(_rosenbrock, cls, [-1.2, 1.0], 80, **kw)
    np.testing.assert_allclose(traj.positions[0], ref, rtol=1e-10, atol=1e-12)
    assert not traj.diverged[0]


def test_batched_schedule_free_rows_are_independent_runs():
    """Specs that differ in lr and warmup_steps are stepped as one (G, 1)-tensor transform; each row
    must equal the reference run with its own values."""
    specs = [{"name": "schedule_free_adamw", "lr": lr, "warmup_steps": w} for lr, w in ((0.02, 0), (0.1, 10), (0.3, 3))]
    traj = sim.run("bowl", specs, start=[-1.8, 1.6], steps=60)
    for row, (lr, w) in enumerate(((0.02, 0), (0.1, 10), (0.3, 3))):
        ref = _reference_path(_bowl, schedulefree.AdamWScheduleFree, [-1.8, 1.6], 60, lr=lr, warmup_steps=w)
        np.testing.assert_allclose(traj.positions[row], ref, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------------ the playground


@pytest.fixture(scope="module")
def client():
    from fastapi.testclient import TestClient

    from ravine.web import create_app

    with TestClient(create_app()) as c:
        yield c


def test_playground_lists_the_newcomers_with_their_sliders(client):
    cat = {o["name"]: {h["name"]: h for h in o["hyperparams"]} for o in client.get("/api/optimizers").json()}
    sf = cat["schedule_free_adamw"]
    assert {"lr", "b1", "b2", "warmup_steps", "weight_decay"} <= set(sf)
    assert sf["warmup_steps"]["default"] == 0 and sf["warmup_steps"]["step"] == 1 and sf["warmup_steps"]["max"] > 0
    assert sf["lr"]["log"] is True and sf["b1"]["default"] == 0.9
    assert {"lr", "b1", "b2", "weight_decay"} <= set(cat["lion"]) and cat["lion"]["b2"]["default"] == 0.99
    assert {"lr", "b1", "b2", "eps", "clip_exponent"} <= set(cat["adopt"])
    for h in (*sf.values(), *cat["lion"].values(), *cat["adopt"].values()):
        if h["kind"] == "float":
            assert h["min"] is not None and h["max"] is not None and h["min"] < h["max"]


def test_playground_trajectories_of_the_newcomers_match_their_references(client):
    req = {
        "surface": {"name": "rosenbrock"},
        "start": [-1.2, 1.0],
        "steps": 50,
        "optimizers": [
            {"name": s["name"], "hyperparams": {k: v for k, v in s.items() if k != "name"}} for s, _ in NEWCOMERS
        ],
    }
    r = client.post("/api/trajectories", json=req)
    assert r.status_code == 200, r.text
    runs = json.loads(r.text)["runs"]
    assert runs[0]["hyperparams"]["warmup_steps"] == 5
    for run, (_, (cls, kw)) in zip(runs, NEWCOMERS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = _reference_path(_rosenbrock, cls, [-1.2, 1.0], 50, **kw)
        np.testing.assert_allclose(run["x"], ref[:, 0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(run["y"], ref[:, 1], rtol=1e-9, atol=1e-12)


def test_playground_sweep_of_schedule_free_matches_the_reference_per_cell(client):
    req = {
        "surface": {"name": "bowl"},
        "start": [-1.8, 1.6],
        "steps": 30,
        "optimizer": {"name": "schedule_free_adamw", "hyperparams": {"warmup_steps": 4}},
        "x": {"name": "lr", "min": 0.01, "max": 0.5, "n": 3, "log": True},
        "y": {"name": "b1", "min": 0.5, "max": 0.9, "n": 2},
    }
    r = client.post("/api/sweep", json=req)
    assert r.status_code == 200, r.text
    out = json.loads(r.text)
    for i, b1 in enumerate(out["y_values"]):
        for j, lr in enumerate(out["x_values"]):
            ref = _reference_path(
                _bowl, schedulefree.AdamWScheduleFree, [-1.8, 1.6], 30, lr=lr, betas=(b1, 0.999), warmup_steps=4
            )
            assert out["final_loss"][i][j] == pytest.approx(_bowl(torch.tensor(ref[-1])).item(), rel=1e-9, abs=1e-14)


def test_playground_refuses_a_fractional_warmup(client):
    req = {
        "surface": {"name": "bowl"},
        "steps": 10,
        "optimizers": [{"name": "schedule_free_adamw", "hyperparams": {"warmup_steps": 2.5}}],
    }
    r = client.post("/api/trajectories", json=req)
    assert r.status_code == 422
    assert "warmup_steps must be an integer in [0, 10000], got 2.5" in r.text
