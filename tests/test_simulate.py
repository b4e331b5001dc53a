"""Trajectories and sweeps against oracles: torch.optim loops, closed-form stability regions of gradient
descent and heavy-ball momentum on quadratics, closed-form minima."""

import json
import math

import numpy as np
import pytest
import torch

import ravine.optim as ro
import ravine.simulate as sim
import ravine.surfaces as rs

F64 = torch.float64


# ------------------------------------------------------------------------------------------- torch parity
def _torch_loop(surface, make_opt, steps, start=None, clip_norm=None, lr_lambda=None, noise=0.0, seed=0):
    """The obvious hand-written loop: a 2-element tensor, torch.optim, autograd."""
    p = torch.tensor(start or surface.start, dtype=F64, requires_grad=True)
    opt = make_opt([p])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda) if lr_lambda else None
    gen = torch.Generator().manual_seed(seed)
    path = [p.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        surface.value(p).backward()
        if noise:
            p.grad += noise * torch.randn(1, 2, generator=gen, dtype=F64)[0]
        if clip_norm:
            torch.nn.utils.clip_grad_norm_([p], clip_norm)
        opt.step()
        if sched:
            sched.step()
        path.append(p.detach().clone())
    return torch.stack(path).numpy()


@pytest.mark.parametrize(
    "spec, make_opt",
    [
        ({"name": "sgd", "lr": 1e-3}, lambda ps: torch.optim.SGD(ps, lr=1e-3)),
        ({"name": "sgd", "lr": 1e-3, "momentum": 0.9}, lambda ps: torch.optim.SGD(ps, lr=1e-3, momentum=0.9)),
        ({"name": "sgd", "lr": 5e-4, "momentum": 0.8, "nesterov": True},
         lambda ps: torch.optim.SGD(ps, lr=5e-4, momentum=0.8, nesterov=True)),
        ({"name": "adam", "lr": 0.02}, lambda ps: torch.optim.Adam(ps, lr=0.02)),
        ({"name": "adam", "lr": 0.02, "b1": 0.5, "b2": 0.9, "amsgrad": True},
         lambda ps: torch.optim.Adam(ps, lr=0.02, betas=(0.5, 0.9), amsgrad=True)),
        ({"name": "rmsprop", "lr": 1e-3, "beta": 0.99}, lambda ps: torch.optim.RMSprop(ps, lr=1e-3, alpha=0.99)),
        ({"name": "adagrad", "lr": 0.1}, lambda ps: torch.optim.Adagrad(ps, lr=0.1)),
        ({"name": "adamw", "lr": 0.02, "weight_decay": 0.1},
         lambda ps: torch.optim.AdamW(ps, lr=0.02, weight_decay=0.1)),
    ],
)
def test_trajectory_equals_a_torch_optim_loop(spec, make_opt):
    s = rs.get("rosenbrock")
    tr = sim.run(s, [spec], steps=300)
    ref = _torch_loop(s, make_opt, 300)
    np.testing.assert_allclose(tr.positions[0], ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tr.losses[0], s.value(torch.as_tensor(ref)).numpy(), rtol=1e-12, atol=1e-12)


def test_clipping_schedule_and_noise_equal_the_torch_loop():
    s = rs.get("rosenbrock")

    def decay(t):
        return 0.5 ** (t // 50)  # peak 1 at step 0, so the multiplier is the schedule itself

    tr = sim.run(s, [{"name": "sgd", "lr": 2e-3, "momentum": 0.9}], steps=200, clip={"kind": "norm", "max": 5.0},
                 schedule=decay, noise=3.0, seed=7)
    ref = _torch_loop(s, lambda ps: torch.optim.SGD(ps, lr=2e-3, momentum=0.9), 200, clip_norm=5.0,
                      lr_lambda=decay, noise=3.0, seed=7)
    np.testing.assert_allclose(tr.positions[0], ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tr.lrs[0], [2e-3 * decay(t) for t in range(200)], rtol=1e-15)
    assert tr.clipped[0, 0] and (tr.clipped[0] == (tr.grad_norms[0] > 5.0)).all()


def test_ravine_schedule_by_name_is_normalised_by_its_peak():
    s = rs.get("bowl")
    tr = sim.run(s, [{"name": "gd", "lr": 0.1}], steps=100,
                 schedule={"name": "warmup_cosine", "peak": 3.0, "warmup_steps": 10})
    import ravine.schedules as rsch

    f = rsch.get("warmup_cosine", peak=3.0, warmup_steps=10, total_steps=100)
    np.testing.assert_allclose(tr.lrs[0], [0.1 * f(t) / 3.0 for t in range(100)], rtol=1e-14)
    # GD on the bowl: x_{k+1} = (1 - lr_k) x_k exactly
    x = s.start[0]
    for k in range(100):
        x = x - tr.lrs[0, k] * x
    assert tr.positions[0, -1, 0] == pytest.approx(x, rel=1e-12)


def test_transform_object_equals_named_spec():
    s = rs.get("himmelblau")
    a = sim.run(s, [ro.adam(0.05)], steps=100)
    b = sim.run(s, [{"name": "adam", "lr": 0.05}], steps=100)
    np.testing.assert_array_equal(a.positions, b.positions)
    assert a.lrs[0, 0] == 0.05


def test_grouped_runs_equal_runs_alone():
    s = rs.get("rosenbrock")
    specs = [{"name": "sgd", "lr": 1e-3, "momentum": 0.9}, {"name": "adam", "lr": 0.05},
             {"name": "sgd", "lr": 4e-3, "momentum": 0.5}, {"name": "adam", "lr": 0.01, "b1": 0.8}, "rmsprop"]
    together = sim.run(s, specs, steps=200)
    for i, spec in enumerate(specs):
        alone = sim.run(s, [spec], steps=200)
        np.testing.assert_allclose(together.positions[i], alone.positions[0], rtol=1e-12, atol=1e-12)
        assert together.labels[i] == alone.labels[0]


# ------------------------------------------------------------------------------------------- sweeps
def test_every_sweep_cell_equals_the_same_configuration_run_alone():
    s = rs.get("valley")
    lrs = np.geomspace(1e-3, 2.0, 7)
    betas = np.linspace(0.1, 0.95, 5)  # Nesterov needs beta > 0
    sw = sim.sweep(s, "momentum", x=("lr", lrs), y=("beta", betas), steps=300, fixed={"nesterov": True})
    assert sw.final_loss.shape == (5, 7)
    assert sw.diverged.any() and (~sw.diverged).any()  # both kinds of cell are compared
    for i, b in enumerate(betas):
        for j, lr in enumerate(lrs):
            alone = sim.run(s, [{"name": "momentum", "lr": lr, "beta": b, "nesterov": True}], steps=300)
            assert sw.diverged_at[i, j] == alone.diverged_at[0]
            assert sw.steps_to_tol[i, j] == alone.steps_to_tol[0]
            if sw.diverged[i, j]:
                assert np.isnan(sw.final_loss[i, j])
            else:
                assert sw.final_loss[i, j] == pytest.approx(alone.losses[0, -1], rel=1e-12, abs=1e-300)


def test_sweep_cells_equal_runs_alone_with_noise_and_adam():
    s = rs.get("rosenbrock")
    lrs = [0.01, 0.1, 0.5]
    b1s = [0.5, 0.9]
    sw = sim.sweep(s, "adam", x=("lr", lrs), y=("b1", b1s), steps=150, noise=2.0, seed=3,
                   clip={"kind": "norm", "max": 10.0}, tol=1e-3)
    for i, b in enumerate(b1s):
        for j, lr in enumerate(lrs):
            alone = sim.run(s, [{"name": "adam", "lr": lr, "b1": b}], steps=150, noise=2.0, seed=3,
                            clip={"kind": "norm", "max": 10.0}, tol=1e-3)
            assert sw.final_loss[i, j] == pytest.approx(alone.final_losses[0], rel=1e-12, nan_ok=True)
            assert sw.diverged_at[i, j] == alone.diverged_at[0]


def test_sweep_cells_equal_recorded_runs_on_a_saddle():
    """run() books its whole record at once; sweep() reads its record a block of steps at a time. Same numbers,
    here with the gradient-norm criterion (no known minimum), value clipping, noise and diverging rows."""
    s = rs.get("saddle")
    lrs = [0.05, 0.4, 1.5]
    betas = [0.0, 0.6]
    kw = dict(steps=120, noise=1e-4, seed=7, clip={"kind": "value", "max": 50.0}, tol=0.05, start=(0.5, 1e-3))
    sw = sim.sweep(s, "sgd", x=("lr", lrs), y=("momentum", betas), **kw)
    assert sw.diverged.any() and (~sw.diverged).any() and (sw.steps_to_tol >= 0).any()
    for i, b in enumerate(betas):
        for j, lr in enumerate(lrs):
            alone = sim.run(s, [{"name": "sgd", "lr": lr, "momentum": b}], **kw)
            assert sw.diverged_at[i, j] == alone.diverged_at[0]
            assert sw.steps_to_tol[i, j] == alone.steps_to_tol[0]
            assert sw.final_loss[i, j] == pytest.approx(alone.final_losses[0], rel=1e-12, nan_ok=True)
            d = alone.diverged_at[0]
            if d >= 0:  # frozen where it left, and no gradient after
                assert (alone.positions[0, d:] == alone.positions[0, d]).all()
                assert np.isnan(alone.grad_norms[0, d:]).all() and not alone.clipped[0, d:].any()


def test_gd_diverges_exactly_beyond_two_over_lambda_max():
    kappa = 25.0  # Hessian diag(1, kappa): lambda_max = kappa
    s = rs.get("valley", condition=kappa)
    edge = 2.0 / kappa
    factors = np.array([0.9, 0.97, 0.99, 1.01, 1.03, 1.1])
    sw = sim.sweep(s, "sgd", x=("lr", edge * factors), y=("momentum", [0.0]), steps=2000)
    below = factors < 1
    assert not sw.diverged[0, below].any()
    assert (sw.final_loss[0, below] < 1e-12).all()  # |1 - lr lambda| < 1 in both directions: converges
    assert sw.diverged[0, ~below].all()
    # and the first diverged step follows |1 - lr kappa|^k |y0| > 1e3 * (domain height): exact for GD
    y0 = s.start[1]
    (y_lo, y_hi), = [s.domain[1]]
    for j in np.flatnonzero(~below):
        r = abs(1 - edge * factors[j] * kappa)
        k = math.ceil(math.log(sim.DIVERGENCE_FACTOR * (y_hi - y_lo) / abs(y0)) / math.log(r))
        assert abs(int(sw.diverged_at[0, j]) - k) <= 1


def _gd_on_the_valley(kappa, lrs, steps, tol, s):
    """Closed form of GD on f = (x^2 + kappa y^2) / 2: x_k = (1 - lr)^k x0, y_k = (1 - lr kappa)^k y0; the
    first step beyond DIVERGENCE_FACTOR times the domain from its centre, the first step within tol."""
    (x_lo, x_hi), (y_lo, y_hi) = s.domain
    k = np.arange(steps + 1)[:, None]
    x = (1 - lrs) ** k * s.start[0]
    y = (1 - lrs * kappa) ** k * s.start[1]
    far = (np.abs(x - (x_lo + x_hi) / 2) > sim.DIVERGENCE_FACTOR * (x_hi - x_lo)) | (
        np.abs(y - (y_lo + y_hi) / 2) > sim.DIVERGENCE_FACTOR * (y_hi - y_lo))
    diverged_at = np.where(far.any(0), far.argmax(0), -1)
    loss = 0.5 * (x * x + kappa * y * y)
    live = k < np.where(diverged_at >= 0, diverged_at, steps + 1)
    hit = (loss <= tol) & live
    return diverged_at, np.where(hit.any(0), hit.argmax(0), -1), loss[-1]


@pytest.mark.parametrize("block_cells", [None, 1, 18])  # the whole run at once; blocks of 1 and of 3 steps
def test_sweep_read_in_blocks_matches_the_closed_form_gd_iteration(monkeypatch, block_cells):
    if block_cells is not None:
        monkeypatch.setattr(sim, "_BLOCK_CELLS", block_cells)
    kappa, steps, tol = 25.0, 200, 1e-8
    s = rs.get("valley", condition=kappa)
    lrs = 2.0 / kappa * np.array([0.5, 0.9, 0.98, 1.02, 1.1, 1.5])
    sw = sim.sweep(s, "sgd", x=("lr", lrs), y=("momentum", [0.0]), steps=steps, tol=tol)
    diverged_at, steps_to_tol, final = _gd_on_the_valley(kappa, lrs, steps, tol, s)
    assert (diverged_at >= 0).any() and (steps_to_tol >= 0).any() and (diverged_at < 0).any()
    np.testing.assert_array_equal(sw.diverged_at[0], diverged_at)
    np.testing.assert_array_equal(sw.steps_to_tol[0], steps_to_tol)
    np.testing.assert_allclose(sw.final_loss[0], np.where(diverged_at >= 0, np.nan, final), rtol=1e-9, atol=1e-300)


@pytest.mark.parametrize("tol", [1.0, 10.0])
def test_zero_steps_on_a_surface_without_a_known_minimum(tol):
    """No update: the record is the start, and steps_to_tol is 0 exactly when |grad f(start)| <= tol."""
    s = rs.get("saddle")  # f = x^2 - y^2, grad = (2x, -2y)
    start = (1.5, -2.0)
    expected = 0 if math.hypot(2 * start[0], -2 * start[1]) <= tol else -1
    tr = sim.run(s, ["gd", "adam"], start=start, steps=0, tol=tol)
    assert tr.positions.shape == (2, 1, 2) and tr.grad_norms.shape == (2, 0)
    np.testing.assert_array_equal(tr.positions[:, 0], [start, start])
    assert list(tr.steps_to_tol) == [expected, expected] and list(tr.diverged_at) == [-1, -1]
    sw = sim.sweep(s, "sgd", x=("lr", [0.1, 0.2]), y=("momentum", [0.0]), start=start, steps=0, tol=tol)
    assert (sw.steps_to_tol == expected).all()
    np.testing.assert_array_equal(sw.final_loss, [[start[0] ** 2 - start[1] ** 2] * 2])


def _heavy_ball_stable(lr_h, beta):
    """Polyak: heavy ball on f = h x^2 / 2 is stable iff 0 <= beta < 1 and 0 < lr h < 2 (1 + beta)."""
    return (0 <= beta < 1) and (0 < lr_h < 2 * (1 + beta))


def test_heavy_ball_stable_region_matches_the_closed_form():
    kappa = 10.0
    s = rs.get("valley", condition=kappa)
    lrs = np.geomspace(0.01, 1.0, 30)
    betas = np.linspace(0.0, 0.97, 25)
    sw = sim.sweep(s, "sgd", x=("lr", lrs), y=("momentum", betas), steps=1500)
    checked = 0
    for i, b in enumerate(betas):
        for j, lr in enumerate(lrs):
            s_ = lr * kappa
            margin = abs(s_ - 2 * (1 + b)) / (2 * (1 + b))
            if margin < 0.05:
                continue
            assert bool(sw.diverged[i, j]) == (not _heavy_ball_stable(s_, b)), (lr, b)
            checked += 1
    assert checked > 600
    assert 0.2 < sw.diverged.mean() < 0.8  # both regions are well represented


def test_ema_momentum_stable_region_is_heavy_ball_with_lr_times_one_minus_beta():
    kappa = 10.0
    s = rs.get("valley", condition=kappa)
    lrs = np.geomspace(0.05, 20.0, 24)
    betas = np.linspace(0.0, 0.9, 10)
    sw = sim.sweep(s, "momentum", x=("lr", lrs), y=("beta", betas), steps=1500)
    for i, b in enumerate(betas):
        for j, lr in enumerate(lrs):
            s_ = lr * (1 - b) * kappa
            if abs(s_ - 2 * (1 + b)) / (2 * (1 + b)) < 0.05:
                continue
            assert bool(sw.diverged[i, j]) == (not _heavy_ball_stable(s_, b)), (lr, b)


# ------------------------------------------------------------------------------------------- minima and tol
def test_gd_and_adam_reach_the_closed_form_minimum_of_the_bowl():
    s = rs.get("bowl")
    tr = sim.run(s, [{"name": "gd", "lr": 0.3}, {"name": "adam", "lr": 0.02}], steps=3000, tol=1e-10)
    np.testing.assert_allclose(tr.positions[0, -1], [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(tr.positions[1, -1], [0.0, 0.0], atol=1e-4)
    assert (tr.steps_to_tol >= 0).all() and not tr.diverged.any()


def test_adam_reaches_rosenbrocks_minimum():
    tr = sim.run("rosenbrock", [{"name": "adam", "lr": 0.02}], steps=4000, tol=1e-8)
    np.testing.assert_allclose(tr.positions[0, -1], [1.0, 1.0], atol=1e-3)
    assert tr.steps_to_tol[0] > 0


def test_steps_to_tol_matches_the_closed_form_gd_iteration():
    s = rs.get("bowl")  # f = x^2/2 + y^2: x_k = (1 - lr)^k x0, y_k = (1 - 2 lr)^k y0
    lr, tol = 0.05, 1e-6
    tr = sim.run(s, [{"name": "gd", "lr": lr}], steps=400, tol=tol)
    x0, y0 = s.start
    k = np.arange(401)
    loss = 0.5 * ((1 - lr) ** k * x0) ** 2 + ((1 - 2 * lr) ** k * y0) ** 2
    np.testing.assert_allclose(tr.losses[0], loss, rtol=1e-12, atol=1e-300)
    assert tr.steps_to_tol[0] == int(np.argmax(loss <= tol))
    assert tr.tol_criterion == "loss_gap"


# ------------------------------------------------------------------------------------------- saddles, noise
def test_gd_stalls_at_the_saddle_and_noise_escapes():
    s = rs.get("saddle")
    exact = sim.run(s, [{"name": "gd", "lr": 0.05}], steps=400, tol=1e-6)
    np.testing.assert_allclose(exact.positions[0, -1], [0.0, 0.0], atol=1e-12)
    assert exact.tol_criterion == "grad_norm" and exact.steps_to_tol[0] > 0  # reached the stationary point
    noisy = sim.run(s, [{"name": "gd", "lr": 0.05}], steps=400, noise=0.1, seed=0)
    assert noisy.diverged[0]  # unbounded below: escaping the saddle means running off to -inf
    assert np.abs(noisy.positions[0, -1, 1]) > 100


def test_noise_is_seeded_shared_by_default_and_scaled_by_batch_size():
    s = rs.get("bowl")
    spec = [{"name": "gd", "lr": 0.1}]
    a = sim.run(s, spec, steps=50, noise=0.4, seed=1)
    b = sim.run(s, spec, steps=50, noise=0.4, seed=1)
    c = sim.run(s, spec, steps=50, noise=0.4, seed=2)
    d = sim.run(s, spec, steps=50, noise=0.8, batch_size=4, seed=1)
    np.testing.assert_array_equal(a.positions, b.positions)
    assert not np.allclose(a.positions, c.positions)
    np.testing.assert_array_equal(a.positions, d.positions)
    two = sim.run(s, spec * 2, steps=50, noise=0.4, seed=1)  # common random numbers
    np.testing.assert_array_equal(two.positions[0], two.positions[1])
    own = sim.run(s, spec * 2, steps=50, noise=0.4, seed=[1, 2])  # one generator per run
    np.testing.assert_array_equal(own.positions[0], a.positions[0])
    np.testing.assert_array_equal(own.positions[1], c.positions[0])


# ------------------------------------------------------------------------------------------- divergence
def test_a_diverging_run_is_frozen_and_the_others_continue():
    s = rs.get("valley")
    specs = [{"name": "gd", "lr": 0.07}, {"name": "gd", "lr": 0.2}]
    tr = sim.run(s, specs, steps=300)
    assert list(tr.diverged) == [False, True]
    k = tr.diverged_at[1]
    assert 0 < k < 300
    assert (tr.positions[1, k:] == tr.positions[1, k]).all()
    assert np.isnan(tr.grad_norms[1, k:]).all() and np.isfinite(tr.grad_norms[1, :k]).all()
    assert np.isnan(tr.final_losses[1])
    alone = sim.run(s, specs[:1], steps=300)
    np.testing.assert_allclose(tr.positions[0], alone.positions[0], rtol=1e-12, atol=1e-15)
    d = tr.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["grad_norms"][1][-1] is None and d["diverged_at"] == [-1, int(k)]


def test_nonfinite_loss_marks_divergence():
    s = rs.parse("log(x + 3)", domain=((-2, 2), (-2, 2)), start=(1.0, 0.0))
    tr = sim.run(s, [{"name": "gd", "lr": 1.0}, {"name": "gd", "lr": 0.01}], steps=100)  # f -> -inf/NaN at x<=-3
    assert tr.diverged[0] and not tr.diverged[1]
    assert not np.isfinite(tr.losses[0, tr.diverged_at[0]])


# ------------------------------------------------------------------------------------------- API
def test_results_have_the_contract_shapes_and_json():
    tr = sim.run("rosenbrock", ["sgd", "momentum", "rmsprop", "adam"], steps=40)
    assert tr.positions.shape == (4, 41, 2) and tr.losses.shape == (4, 41)
    assert tr.grad_norms.shape == tr.lrs.shape == tr.clipped.shape == (4, 40)
    assert tr.diverged.shape == tr.diverged_at.shape == tr.steps_to_tol.shape == (4,)
    assert tr.labels[0] == "sgd lr=0.001" and tr.labels[1].startswith("momentum lr=0.01")
    json.dumps(tr.to_dict(), allow_nan=False)
    sw = sim.sweep("bowl", "momentum", x=("lr", [0.1, 0.5]), y=("beta", [0.0, 0.5, 0.9]), steps=20)
    assert sw.final_loss.shape == sw.steps_to_tol.shape == sw.diverged_at.shape == (3, 2)
    assert sw.x_name == "lr" and sw.y_name == "beta"
    json.dumps(sw.to_dict(), allow_nan=False)


def test_bad_arguments_name_what_is_allowed():
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        sim.run("bowl", ["lamb"])
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) \['momentum'\]; allowed"):
        sim.run("bowl", [{"name": "adam", "momentum": 0.9}])
    with pytest.raises(ValueError, match="beta"):
        sim.run("bowl", [{"name": "momentum", "beta": 1.5}])
    with pytest.raises(ValueError, match=r"steps must be an integer in \[0, "):
        sim.run("bowl", ["gd"], steps=-1)
    with pytest.raises(ValueError, match="clip\\['kind'\\] must be one of 'norm', 'value', got 'l1'"):
        sim.run("bowl", ["gd"], clip={"kind": "l1", "max": 1.0})
    with pytest.raises(ValueError, match=r"start must be \(x, y\)"):
        sim.run("bowl", ["gd"], start=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="unknown surface"):
        sim.run("nope", ["gd"])
    with pytest.raises(ValueError, match=r"'b1' is not a hyperparameter of this optimizer; allowed: \['lr', 'beta'"):
        sim.sweep("bowl", "momentum", x=("b1", [0.1]), y=("beta", [0.5]))
    with pytest.raises(ValueError, match="different hyperparameters"):
        sim.sweep("bowl", "momentum", x=("lr", [0.1]), y=("lr", [0.5]))
    with pytest.raises(ValueError, match="fixed: swept"):
        sim.sweep("bowl", "momentum", x=("lr", [0.1]), y=("beta", [0.5]), fixed={"lr": 0.1})
    with pytest.raises(ValueError, match="seed must be an int or a list of 2 ints"):
        sim.run("bowl", ["gd", "adam"], seed=[1, 2, 3])


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: sim.run("bowl", ["gd"], noise=-0.5), ValueError, r"noise must be in \[0, inf\], got -0.5"),
        (lambda: sim.run("bowl", ["gd"], tol="small"), TypeError, r"tol must be a number in \[0, inf\], got str"),
        (lambda: sim.run("bowl", ["gd"], steps=True), TypeError, r"steps must be an integer in \[0, 1000000\]"),
        (lambda: sim.run("bowl", ["gd"], steps=2.5), ValueError, r"steps must be an integer in \[0, \d+\], got 2.5$"),
        (lambda: sim.run("bowl", ["gd"], batch_size=0), ValueError, r"batch_size must be an integer in \[1, "),
        (lambda: sim.run("bowl", []), ValueError, r"len\(optimizers\) must be an integer in \[1, 1024\], got 0"),
        (lambda: sim.run("bowl", ["gd"], clip={"kind": "norm", "max": 0}), ValueError,
         r"clip\['max'\] must be in \(0, inf\], got 0"),
        (lambda: sim.sweep("bowl", "lamb"), ValueError, r"optimizer must be one of 'gd', 'sgd', .*, got 'lamb'"),
        (lambda: sim.sweep("bowl", "sgd", x=("lr", []), y=("momentum", [0.5])), ValueError,
         r"x: number of values must be an integer in \[1, 1024\], got 0"),
        (lambda: sim.sweep("bowl", "momentum", seed=1.5), ValueError, r"seed must be an integer in \["),
    ],
)
def test_argument_checks_say_what_is_allowed(call, error, message):
    with pytest.raises(error, match=message):
        call()
