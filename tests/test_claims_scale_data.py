"""Issue 13, items 1 and 2: the claims along the axis they depend on.

``optimizers`` along the training-set size (crossover bracketing, power-law fit, equal-compute update
counts, the verdict on both sides of each threshold, a tiny run checked against its run files) and
``momentum`` along the condition number (the equal-learning-rate mapping against torch.optim.SGD, the
valley's speed-up against the closed-form rates of gradient descent, the verdict, a tiny run).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ravine.experiments import claims
from ravine.experiments.claims import Store
from ravine.experiments.claims import optimizers as ox

# ------------------------------------------------------------------------ crossover and fits


def test_crossover_brackets_the_last_sign_change():
    # ratio 2 at 10, 0.5 at 1000: log-ratio symmetric, so the interpolated crossing is at 100 exactly
    c = ox.crossover([10, 1000], [2.0, 0.5])
    assert c["status"] == "bracketed" and (c["lower"], c["upper"]) == (10.0, 1000.0)
    assert c["estimate"] == pytest.approx(100.0, rel=1e-12)
    # a win at the first size that is lost again does not count: from 1e5 on SGD is ahead
    c = ox.crossover([1e3, 1e4, 1e5], [0.9, 1.1, 0.8])
    assert (c["status"], c["lower"], c["upper"]) == ("bracketed", 1e4, 1e5)
    # ratio exactly 1 is not a win; log-interpolation from 0 to log(0.25): the crossing is at the lower end
    c = ox.crossover([1e3, 1e4], [1.0, 0.25])
    assert c["estimate"] == pytest.approx(1e3)
    # ahead everywhere / never ahead at the end
    assert ox.crossover([1e3, 1e4], [0.5, 0.4]) == {
        "status": "below range",
        "lower": None,
        "upper": 1e3,
        "estimate": None,
    }
    assert ox.crossover([1e3, 1e4], [0.5, 1.2]) == {
        "status": "not reached",
        "lower": 1e4,
        "upper": None,
        "estimate": None,
    }
    # a missing ratio (a diverged arm) counts as "not ahead"; no estimate through it
    c = ox.crossover([1e3, 1e4, 1e5], [0.5, None, 0.5])
    assert (c["status"], c["lower"], c["upper"], c["estimate"]) == ("bracketed", 1e4, 1e5, None)
    with pytest.raises(ValueError, match="axis must be positive and increasing"):
        ox.crossover([1e4, 1e3], [1.0, 0.5])
    with pytest.raises(ValueError, match="same non-zero length"):
        ox.crossover([1e3], [1.0, 0.5])


def test_power_law_fit_recovers_known_exponents():
    n = np.array([1e3, 1e4, 1e5, 1e6])
    fit = ox.power_law_fit(n, 3e-7 * n**1.0)
    assert fit["slope"] == pytest.approx(1.0, abs=1e-12) and fit["prefactor"] == pytest.approx(3e-7)
    assert fit["r"] == pytest.approx(1.0)
    fit = ox.power_law_fit(n, 2.0 * n**0.5)
    assert fit["slope"] == pytest.approx(0.5, abs=1e-12) and fit["prefactor"] == pytest.approx(2.0)
    # the same as numpy's least-squares line in log-log space, non-positive points left out
    rng = np.random.default_rng(0)
    y = 1e-6 * n**0.9 * np.exp(rng.normal(0, 0.1, 4))
    want = np.polyfit(np.log10(n), np.log10(y), 1)
    fit = ox.power_law_fit(np.append(n, 1e7), np.append(y, 0.0))
    assert fit["slope"] == pytest.approx(want[0]) and math.log10(fit["prefactor"]) == pytest.approx(want[1])
    assert math.isnan(ox.power_law_fit([1e3], [1.0])["slope"])


def test_gd_updates_at_equal_compute():
    assert ox.gd_updates(300, 0.5e-3, 2e-3) == 75
    assert ox.gd_updates(10, 1e-3, 1e-3) == 10  # no rounding loss at an exact multiple
    assert ox.gd_updates(300, 0.5e-3, 0.2) == 0  # not a single GD update fits in the budget
    with pytest.raises(ValueError, match="costs must be positive"):
        ox.gd_updates(300, 0.0, 1.0)


def test_update_cost_restores_the_thread_count():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert ox.update_cost(200, 32, blocks=2, n_test=10) > 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------- verdict


def _scale(slope=1.0, ratios=(1.1, 0.8, 0.5), cross=None):
    sizes = [1000, 10000, 100000]
    cross = cross or {"status": "bracketed", "lower": 1000.0, "upper": 10000.0, "estimate": 3000.0}
    return {
        "sizes": sizes,
        "budget_sgd_updates": 300,
        "gd_cost_fit": {"slope": slope},
        "sgd_over_gd_loss_at_equal_time": {str(n): r for n, r in zip(sizes, ratios)},
        "crossover": cross,
    }


def _verdict(scale, adaptive=0.5):
    return ox.verdict({"data_size": scale, "best_adaptive_over_sgd_final_loss": adaptive})


def test_optimizers_verdict_both_sides_of_each_threshold():
    v = _verdict(_scale())
    assert v.status == "supported"
    assert v.numbers["crossover_n"] == 1e4 and v.numbers["gd_cost_slope"] == 1.0
    assert "N >= 1e+04" in v.scale and "between 1e+03 and 1e+04" in v.scale and "about 3.0e+03" in v.scale
    # GD's cost slope: > 0.75 with a grey zone of 0.1
    assert _verdict(_scale(slope=0.9)).status == "supported"
    assert _verdict(_scale(slope=0.8)).status == "inconclusive"
    assert _verdict(_scale(slope=0.6)).status == "not supported"
    # SGD / GD at the largest N: < 1 with a grey zone of 0.05
    assert _verdict(_scale(ratios=(1.1, 0.8, 0.94))).status == "supported"
    assert _verdict(_scale(ratios=(1.1, 0.8, 0.97))).status == "inconclusive"
    not_reached = {"status": "not reached", "lower": 1e5, "upper": None, "estimate": None}
    v = _verdict(_scale(ratios=(1.1, 0.8, 1.2), cross=not_reached))
    assert v.status == "not supported" and math.isnan(v.numbers["crossover_n"])
    assert "not overtaken GD at equal compute up to N = 1e+05" in v.scale
    below = {"status": "below range", "lower": None, "upper": 1000.0, "estimate": None}
    v = _verdict(_scale(ratios=(0.9, 0.8, 0.5), cross=below))
    assert v.status == "supported" and "every measured N" in v.scale
    # the adaptive methods on digits
    assert _verdict(_scale(), adaptive=1.2).status == "not supported"
    assert _verdict(_scale(), adaptive=0.97).status == "inconclusive"
    # nothing measured along the data size: inconclusive, and the scale says so
    v = ox.verdict({"best_adaptive_over_sgd_final_loss": 0.5})
    assert v.status == "inconclusive" and "not measured along the data size" in v.scale


# ------------------------------------------------------------------------------ end to end


def test_data_size_arm_tiny_matches_its_run_files(tmp_path):
    """The arm run tiny; every number it reports is recomputed from the run files and the cached costs."""
    from ravine.experiments import Run

    store = Store(tmp_path, "tiny")
    measured, fig, ids = ox.scale_arm("tiny", store, claims.Progress(enabled=False))
    with open(fig, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    sizes = list(ox.SCALE_SIZES["tiny"])
    budget = ox.SCALE_BUDGET["tiny"]
    assert measured["sizes"] == sizes and len(ids) == 2 * len(sizes)
    losses: dict[tuple[str, int], float] = {}
    for d in (tmp_path / "optimizers" / "runs").iterdir():
        run = Run(d)
        assert run.status == "completed" and d.name in ids
        n = run.config.data_kwargs["n_train"]
        cost = measured["cost_per_update_s"][str(n)]
        if run.config.batch_size is None:  # GD: the whole updates that fit in the budget's CPU time
            k = math.floor(budget * cost["sgd"] / cost["gd"] + 1e-9)
            assert k == measured["gd_updates_at_equal_time"][str(n)]
            assert run.config.steps == max(1, k)
            losses["gd", n] = next(e["test_loss"] for e in run.evals if e["step"] == k)
        else:
            assert run.config.batch_size == ox.BATCH and run.config.steps == budget
            losses["sgd", n] = run.evals[-1]["test_loss"]
    for n in sizes:
        assert measured["test_loss_at_equal_time"]["gd"][str(n)] == [pytest.approx(losses["gd", n])]
        assert measured["sgd_over_gd_loss_at_equal_time"][str(n)] == pytest.approx(losses["sgd", n] / losses["gd", n])
    # the cached costs are reused: a second call plans the same runs (same ids)
    again, _, ids2 = ox.scale_arm("tiny", store, claims.Progress(enabled=False))
    assert sorted(ids2) == sorted(ids) and again["cost_per_update_s"] == measured["cost_per_update_s"]


# ------------------------------------------------------------------------------ momentum


def test_ema_momentum_at_lr_equals_torch_heavy_ball_at_lr_times_one_minus_beta():
    """The equal-effective-lr mapping the experiment relies on, against torch.optim.SGD as the oracle."""
    import ravine.optim as ro

    torch.manual_seed(0)
    x, y = torch.randn(64, 5, dtype=torch.float64), torch.randn(64, 1, dtype=torch.float64)
    ref = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    ours = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    ours.load_state_dict(ref.state_dict())
    eta, beta = 0.3, 0.9
    opt_ref = torch.optim.SGD(ref.parameters(), lr=eta * (1 - beta), momentum=beta)
    opt_ours = ro.Optimizer(ours.parameters(), ro.get("momentum", lr=eta, beta=beta))
    for _ in range(25):
        for model, opt in ((ref, opt_ref), (ours, opt_ours)):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    for a, b in zip(ref.parameters(), ours.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _quadratic_steps(kappa, start, lr, tol, steps, beta=0.0):
    """Steps to ``loss <= tol`` on f = (x^2 + kappa y^2)/2 with torch.optim.SGD (heavy ball at
    ``lr (1 - beta)`` when ``beta > 0``: EMA momentum at ``lr``); -1 if never."""
    p = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    h = torch.tensor([1.0, kappa], dtype=torch.float64)
    opt = torch.optim.SGD([p], lr=lr * (1 - beta), momentum=beta) if beta else torch.optim.SGD([p], lr=lr)
    for k in range(steps + 1):
        loss = 0.5 * (h * p * p).sum()
        value = float(loss.detach())
        if value <= tol:
            return k
        if k == steps or not math.isfinite(value) or value > 1e30:
            return -1
        opt.zero_grad()
        loss.backward()
        opt.step()
    return -1


def test_valley_steps_match_torch_sgd_and_the_closed_form():
    from ravine.experiments.claims import momentum as mx

    kappa, seed = 10.0, 1
    cell = mx.valley_steps(kappa, seed, 12)
    start = mx.valley_start(seed)
    f0 = 0.5 * (start[0] ** 2 + kappa * start[1] ** 2)
    lrs = mx.valley_lr_grid(kappa, 12)
    assert lrs[0] == pytest.approx(2e-3 / kappa) and lrs[-1] == pytest.approx(1.5 * 3.8 / (0.1 * kappa))
    for i, lr in enumerate(lrs):
        for beta, row in ((0.0, cell["gd_steps"]), (mx.BETA, cell["momentum_steps"])):
            want = _quadratic_steps(kappa, start, lr, mx.REL_TOL * f0, cell["steps_simulated"], beta)
            assert row[i] == want, (lr, beta)
    assert cell["gd_best"] == min(s for s in cell["gd_steps"] if s >= 0)
    i = cell["lrs"].index(cell["gd_best_lr"])
    assert cell["momentum_at_gd_lr"] == cell["momentum_steps"][i]
    # GD at its optimal rate 2/(kappa + 1): the loss shrinks by rho^2 per step, from any start
    assert mx.gd_best_steps_closed_form(1.0) == 1
    assert mx.gd_best_steps_closed_form(3.0) == 10  # 0.25^k <= 1e-6  ->  k = ceil(9.97)
    for k in (3.0, 30.0):
        s0 = mx.valley_start(0)
        tol = mx.REL_TOL * 0.5 * (s0[0] ** 2 + k * s0[1] ** 2)
        got = _quadratic_steps(k, s0, 2.0 / (k + 1.0), tol, 10_000)
        assert got == mx.gd_best_steps_closed_form(k)


def _mom_measured(best=(5.0, 1.0, 0.3), equal=(5.0, 1.1, 0.95), net=(0.98, 0.8), cross=None):
    ks = [1.0, 30.0, 1000.0]
    cross = cross or {"status": "bracketed", "lower": 1.0, "upper": 30.0, "estimate": 10.0}
    return {
        "valley": {
            "kappas": ks,
            "ratio_best_mean": list(best),
            "ratio_equal_lr_mean": list(equal),
            "crossover": cross,
        },
        "network": {"kappa": [1.0, 100.0], "best": list(net)},
    }


def test_momentum_verdict_both_sides_of_each_threshold():
    from ravine.experiments.claims import momentum as mx

    v = mx.verdict(_mom_measured())
    assert v.status == "supported" and v.numbers["valley_crossover_kappa"] == 30.0
    assert "kappa >= 30" in v.scale and "between 1 and 30" in v.scale and "0.95 at equal effective lr" in v.scale
    assert "0.98 at input condition number 1" in v.scale
    # the valley at the largest kappa: < 1 with a grey zone of 0.1
    assert mx.verdict(_mom_measured(best=(5.0, 1.0, 0.85))).status == "supported"
    assert mx.verdict(_mom_measured(best=(5.0, 1.0, 0.95))).status == "inconclusive"
    not_reached = {"status": "not reached", "lower": 1000.0, "upper": None, "estimate": None}
    v = mx.verdict(_mom_measured(best=(5.0, 1.0, 1.5), cross=not_reached))
    assert v.status == "not supported" and "not faster up to kappa = 1000" in v.scale
    # the network with the worst-conditioned inputs: < 1 with a grey zone of 0.05
    assert mx.verdict(_mom_measured(net=(0.98, 0.94))).status == "supported"
    assert mx.verdict(_mom_measured(net=(0.98, 0.99))).status == "inconclusive"
    assert mx.verdict(_mom_measured(net=(0.98, 1.2))).status == "not supported"
    assert mx.verdict({}).status == "inconclusive"


def test_momentum_tiny_end_to_end_matches_its_run_files(tmp_path):
    from ravine.experiments import Run

    store = Store(tmp_path, "tiny")
    res = claims.get("momentum").run(store, claims.Progress(enabled=False))
    assert res.verdict.status in claims.STATUSES
    assert claims.get("momentum").verdict(res.measurements).status == res.verdict.status
    with open(res.figures[0], "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    net = res.measurements["network"]
    loss: dict[tuple[str, float, float], list[float]] = {}
    for d in (tmp_path / "momentum" / "runs").iterdir():
        run = Run(d)
        assert run.status == "completed" and d.name in res.runs
        key = (run.config.optimizer, run.config.data_kwargs["input_scale"], run.config.optimizer_kwargs["lr"])
        loss.setdefault(key, []).append(run.evals[-1]["train_loss"])
    for row in net["rows"]:
        s = row["input_scale"]
        sgd = {lr: np.mean(v) for (o, sc, lr), v in loss.items() if o == "sgd" and sc == s}
        mom = {lr: np.mean(v) for (o, sc, lr), v in loss.items() if o == "momentum" and sc == s}
        assert row["sgd_best_lr"] == min(sgd, key=sgd.get) and row["momentum_best_lr"] == min(mom, key=mom.get)
        assert row["ratio_best"] == pytest.approx(min(mom.values()) / min(sgd.values()))
        assert row["ratio_equal_lr"] == pytest.approx(mom[row["sgd_best_lr"]] / min(sgd.values()))
    # the valley's numbers are those of valley_steps, cached in the store
    v = res.measurements["valley"]
    from ravine.experiments.claims import momentum as mx

    cell = mx.valley_steps(v["kappas"][-1], 0, mx.N_LR["tiny"])
    assert v["gd_best_steps"][-1] == [cell["gd_best"]] and v["momentum_best_steps"][-1] == [cell["momentum_best"]]
