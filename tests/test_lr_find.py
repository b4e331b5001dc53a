"""The learning-rate range test against what is known: gradient descent on a quadratic whose largest
curvature is lambda cannot raise the loss below lr = 2/lambda (the descent lemma) and in one dimension
raises it at every lr above; the model, optimizer, sampler and RNG come back bit for bit; the rules
pick the points their published definitions (fastai's ``steep``, ``valley``, ``minimum``) pick; and
on a harness config the suggested learning rate trains."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import ravine.optim as ro
from ravine.experiments import TrainConfig, lr_find, lr_find_config, suggest, train
from ravine.experiments.data import load as load_data


class Quadratic(nn.Module):
    """``0.5 w^T H w`` with ``H = Q diag(eigs) Q^T`` for a random rotation ``Q``."""

    def __init__(self, eigs: list[float], seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=g, dtype=torch.float64))
        self.register_buffer("H", q @ torch.diag(torch.tensor(eigs, dtype=torch.float64)) @ q.T)
        self.w = nn.Parameter(torch.randn(len(eigs), generator=g, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.w @ self.H @ self.w


def _quadratic_test(eigs: list[float], **kw):
    model = Quadratic(eigs)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    batch = (torch.zeros(1, dtype=torch.float64), torch.zeros(1))
    return lr_find(model, lambda out, y: out, batch, opt, **kw)


@pytest.mark.parametrize("lam", [2.0, 37.0, 300.0])
def test_one_dimensional_quadratic_blows_up_exactly_past_two_over_lambda(lam):
    r = _quadratic_test([lam])
    limit = 2 / lam
    rises = np.nonzero(np.diff(r.losses) > 0)[0]  # losses[i+1] > losses[i]: the update at lrs[i] raised it
    assert len(rises), "the loss never rose"
    i = int(rises[0])
    assert r.lrs[i - 1] <= limit < r.lrs[i]  # the first rising update is the first lr above 2/lambda
    assert all(r.lrs[j] > limit for j in rises)  # and no update below 2/lambda raised the loss
    assert r.stop_reason == "diverged" and r.stop_lr > limit


@pytest.mark.parametrize("lam", [10.0, 300.0])
def test_quadratic_never_stops_below_two_over_lambda(lam):
    r = _quadratic_test([lam, lam / 3, lam / 10, lam / 100], end=1e3)
    rises = np.nonzero(np.diff(r.losses) > 0)[0]
    assert r.stop_reason == "diverged"
    assert r.stop_lr > 2 / lam and r.lrs[rises[0]] > 2 / lam  # descent lemma: no rise at lr <= 2/lambda
    assert r.best_lr < r.stop_lr


def test_ramp_and_smoothing_are_the_stated_formulas():
    r = _quadratic_test([1e-3], start=1e-4, end=1.0, steps=9, smooth=0.3)  # never blows up
    assert r.stop_reason == "completed" and r.stop_lr is None
    np.testing.assert_allclose(r.lrs, 1e-4 * 1e4 ** (np.arange(9) / 8), rtol=1e-12)
    beta, avg, expected = 0.7, 0.0, []
    for k, v in enumerate(r.losses):  # fastai's debiased EMA
        avg = beta * avg + (1 - beta) * v
        expected.append(avg / (1 - beta ** (k + 1)))
    np.testing.assert_allclose(r.smoothed, expected, rtol=1e-12)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10))


OPTIMIZERS = {
    "torch.Adam": lambda p: torch.optim.Adam(p, lr=1e-3),
    "ravine adamw": lambda p: ro.Optimizer(p, ro.adamw(1e-3, weight_decay=0.1)),
    "ravine.SGD": lambda p: ro.SGD(p, lr=0.1, momentum=0.9),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_everything_is_restored_bit_for_bit(name):
    data = load_data("digits")
    loss = nn.functional.cross_entropy

    def setup():
        model = _net()
        opt = OPTIMIZERS[name](model.parameters())
        sampler = data.sampler(32, seed=1)
        for _ in range(3):  # non-empty optimizer state, BatchNorm statistics, a moved sampler
            x, y = sampler.next()
            opt.zero_grad()
            loss(model(x), y).backward()
            opt.step()
        model[3].eval()  # a mixed train/eval state must come back as it was
        return model, opt, sampler

    def run(model, opt, sampler, n=4):
        torch.manual_seed(5)
        for _ in range(n):
            x, y = sampler.next()
            opt.zero_grad()
            loss(model(x), y).backward()
            opt.step()
        return [p.detach().clone() for p in model.parameters()]

    model, opt, sampler = setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    opt_before = opt.state_dict()
    opt_before = {
        "state": {
            k: {n: (v.clone() if torch.is_tensor(v) else v) for n, v in s.items()}
            for k, s in opt_before["state"].items()
        },
        "groups": [dict(g) for g in opt_before["param_groups"]],
    }
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    modes = [m.training for m in model.modules()]

    result = lr_find(model, loss, sampler, opt, steps=30)
    assert len(result.lrs) > 5

    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for p, g in zip(model.parameters(), grads):
        assert torch.equal(p.grad, g)
    after = opt.state_dict()
    assert [dict(g) for g in after["param_groups"]] == opt_before["groups"]
    for k, s in opt_before["state"].items():
        for n, v in s.items():
            assert torch.equal(torch.as_tensor(after["state"][k][n]), torch.as_tensor(v)), (k, n)
    assert torch.equal(torch.get_rng_state(), rng)
    assert [m.training for m in model.modules()] == modes
    # and training continues exactly as it would have without the test
    continued = run(model, opt, sampler)
    model2, opt2, sampler2 = setup()
    model2[3].eval()
    for a, b in zip(continued, run(model2, opt2, sampler2)):
        assert torch.equal(a, b)


def test_rules_pick_what_their_definitions_pick():
    n = 100
    lrs = 1e-7 * 1e8 ** (np.arange(n) / (n - 1))
    x = np.log10(lrs)
    smoothed = 2.0 - np.tanh(2 * (x + 2)) + 0.5 * np.maximum(x + 0.5, 0) ** 2  # steepest fall at lr = 1e-2
    s = suggest(lrs, smoothed)
    keep = np.arange(n // 10, n - 5)
    slopes = np.diff(smoothed[keep]) / np.diff(np.log(lrs[keep]))
    assert s["steepest"].lr == pytest.approx(lrs[keep[np.argmin(slopes)]])
    assert abs(math.log10(s["steepest"].lr) + 2) < 0.1
    lo = int(keep[np.argmin(smoothed[keep])])
    assert s["minimum/10"].lr == pytest.approx(lrs[lo] / 10)
    # valley on a decreasing-then-increasing curve: the longest decreasing run is the kept points up to
    # the minimum (length L); fastai takes its start as end - L (one before its first point) and picks
    # start + int((end - start) / 3) + int((end - start) / 6)
    end = lo - keep[0]
    start = end - (end + 1)
    sections = (end - start) / 3
    assert s["valley"].index == keep[0] + start + int(sections) + int(sections / 2)
    assert {k: v.rule for k, v in s.items()} == {k: k for k in ("steepest", "valley", "minimum/10")}


def test_bad_arguments_name_the_argument():
    model = Quadratic([1.0])
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    batch = (torch.zeros(1), torch.zeros(1))
    with pytest.raises(ValueError, match="end must be"):
        lr_find(model, lambda o, y: o, batch, opt, start=1.0, end=0.5)
    with pytest.raises(ValueError, match="smooth must be"):
        lr_find(model, lambda o, y: o, batch, opt, smooth=0.0)
    with pytest.raises(ValueError, match="steps must be"):
        lr_find(model, lambda o, y: o, batch, opt, steps=1)
    with pytest.raises(TypeError, match="optimizer must be"):
        lr_find(model, lambda o, y: o, batch, "sgd")


def test_suggested_lr_trains_a_harness_run(tmp_path):
    config = TrainConfig(
        data="digits",
        model="mlp",
        model_kwargs={"hidden": [32]},
        optimizer="sgd",
        optimizer_kwargs={"lr": 0.1},
        steps=150,
        eval_every=0,
    )
    result = lr_find_config(config, steps=80)
    assert result.stop_reason == "diverged"
    lr = result.suggested
    assert lr is not None and lr < result.stop_lr
    fig = result.plot(tmp_path / "lr.png")
    assert (tmp_path / "lr.png").stat().st_size > 0 and fig is not None
    run = train(config.replace(optimizer_kwargs={"lr": lr}), run_dir=tmp_path / "run", progress=False)
    first, last = run.evals[0]["train_loss"], run.evals[-1]["train_loss"]
    assert run.status == "completed" and last < 0.8 * first
    # far above where the test stopped, the same config does not train
    bad = train(config.replace(optimizer_kwargs={"lr": 100 * result.stop_lr}), run_dir=tmp_path / "bad", progress=False)
    assert bad.status == "diverged" or bad.evals[-1]["train_loss"] > 0.9 * first
