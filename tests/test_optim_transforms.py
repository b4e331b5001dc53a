"""The transforms themselves: published formulas, torch's clipping, batching, the chapter's forms."""

import math

import pytest
import torch

import ravine.optim as ro


def step_fn(t, params, grads_fn, n):
    state = t.init(params)
    for _ in range(n):
        updates, state = t.update(grads_fn(params), state, params)
        ro.apply_updates(params, updates)
    return params, state


def quad_grad(h):
    return lambda ps: [h * ps[0]]


def test_chapter_momentum_code():
    """The chapter's NumPy loop: v = 0.9 v + 0.1 g; theta -= lr v."""
    h = torch.tensor([1.0, 10.0], dtype=torch.float64)
    theta = torch.tensor([1.0, 1.0], dtype=torch.float64)
    v = torch.zeros(2, dtype=torch.float64)
    ref = theta.clone()
    for _ in range(50):
        g = h * ref
        v = 0.9 * v + 0.1 * g
        ref = ref - 0.05 * v
    (p,), _ = step_fn(ro.momentum(0.05, beta=0.9), [theta.clone()], quad_grad(h), 50)
    assert torch.allclose(p, ref, atol=1e-14)


def test_chapter_rmsprop_code():
    """The chapter's RMSProp loop: s = 0.999 s + 0.001 g^2; theta -= lr g / (sqrt(s) + 1e-8)."""
    h = torch.tensor([1.0, 100.0], dtype=torch.float64)
    ref = torch.tensor([1.0, -2.0], dtype=torch.float64)
    s = torch.zeros(2, dtype=torch.float64)
    for _ in range(40):
        g = h * ref
        s = 0.999 * s + 0.001 * g**2
        ref = ref - 0.01 * g / (torch.sqrt(s) + 1e-8)
    (p,), _ = step_fn(ro.rmsprop(0.01), [torch.tensor([1.0, -2.0], dtype=torch.float64)], quad_grad(h), 40)
    assert torch.allclose(p, ref, atol=1e-13)


def test_ema_momentum_equals_torch_sgd_with_scaled_lr():
    """EMA momentum with lr eta == torch.optim.SGD(lr=eta * (1 - beta), momentum=beta), every step."""
    beta, eta = 0.9, 0.02
    h = torch.tensor([2.0, 7.0], dtype=torch.float64)
    x0 = torch.tensor([1.5, -1.0], dtype=torch.float64)
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.SGD([x], lr=eta * (1 - beta), momentum=beta)
    t = ro.momentum(eta, beta=beta, form="ema")
    p = [x0.clone()]
    state = t.init(p)
    for _ in range(60):
        opt.zero_grad()
        (0.5 * (h * x * x).sum()).backward()
        opt.step()
        updates, state = t.update([h * p[0]], state, p)
        ro.apply_updates(p, updates)
        assert torch.allclose(p[0], x.detach(), rtol=0, atol=1e-14)


def test_heavy_ball_matches_torch_sgd():
    h = torch.tensor([3.0, 0.5], dtype=torch.float64)
    x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([x], lr=0.05, momentum=0.8, dampening=0.1)
    for _ in range(30):
        opt.zero_grad()
        (0.5 * (h * x * x).sum()).backward()
        opt.step()
    (p,), _ = step_fn(ro.momentum(0.05, beta=0.8, form="heavy_ball", dampening=0.1),
                      [torch.tensor([1.0, 2.0], dtype=torch.float64)], quad_grad(h), 30)
    assert torch.allclose(p, x.detach(), atol=1e-14)


def test_adam_first_step_is_sign_and_bias_correction_blowup():
    """Published facts about Adam's first step: with bias correction the first update is
    lr * g / (|g| + eps) ~ lr * sign(g); without it, (1-b1)/sqrt(1-b2) times that (0.1/0.0316 = 3.16x)."""
    g = torch.tensor([3.0, -0.2, 1e-3], dtype=torch.float64)
    for bc, factor in ((True, 1.0), (False, 0.1 / math.sqrt(0.001))):
        t = ro.adam(0.1, bias_correction=bc, eps=0.0)
        state = t.init([torch.zeros(3, dtype=torch.float64)])
        (u,), _ = t.update([g.clone()], state, [torch.zeros(3, dtype=torch.float64)])
        assert torch.allclose(u, -0.1 * factor * torch.sign(g), rtol=1e-12)


def test_adam_matches_paper_algorithm():
    """Kingma & Ba, Algorithm 1, written out."""
    torch.manual_seed(0)
    gs = [torch.randn(4, dtype=torch.float64) for _ in range(25)]
    lr, b1, b2, eps = 0.01, 0.8, 0.95, 1e-6
    theta = torch.zeros(4, dtype=torch.float64)
    m = torch.zeros(4, dtype=torch.float64)
    v = torch.zeros(4, dtype=torch.float64)
    for t, g in enumerate(gs, 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        theta = theta - lr * (m / (1 - b1**t)) / (torch.sqrt(v / (1 - b2**t)) + eps)
    it = iter(gs)
    (p,), state = step_fn(ro.adam(lr, b1, b2, eps), [torch.zeros(4, dtype=torch.float64)],
                          lambda ps: [next(it).clone()], 25)
    assert torch.allclose(p, theta, atol=1e-13)
    assert state["step"] == 25


def test_adamw_conventions():
    """torch convention decays by lr*wd per step; the paper's by wd * (lr_t / peak)."""
    zero = lambda ps: [torch.zeros_like(ps[0])]  # noqa: E731 - no gradient: only decay acts
    p0 = torch.ones(3, dtype=torch.float64)
    (p,), _ = step_fn(ro.adamw(0.1, weight_decay=0.5), [p0.clone()], zero, 10)
    assert torch.allclose(p, p0 * (1 - 0.1 * 0.5) ** 10)
    (p,), _ = step_fn(ro.adamw(0.1, weight_decay=0.01, decay_convention="decoupled"), [p0.clone()], zero, 10)
    assert torch.allclose(p, p0 * (1 - 0.01) ** 10)
    # with a schedule the decay follows the multiplier lr_t / peak
    sched = lambda s: 0.1 * (0.5 if s >= 5 else 1.0)  # noqa: E731
    (p,), _ = step_fn(ro.adamw(sched, weight_decay=0.01, decay_convention="decoupled", lr_peak=0.1),
                      [p0.clone()], zero, 10)
    assert torch.allclose(p, p0 * (1 - 0.01) ** 5 * (1 - 0.005) ** 5)


def test_adam_l2_vs_adamw_differ_only_by_placement():
    """adam_l2 == torch.optim.Adam(weight_decay); adamw == torch.optim.AdamW."""
    torch.manual_seed(3)
    w0 = torch.randn(5, 3, dtype=torch.float64)
    X = torch.randn(20, 5, dtype=torch.float64)
    for ours, theirs in ((ro.adam_l2(0.01, weight_decay=0.1), torch.optim.Adam),
                         (ro.adamw(0.01, weight_decay=0.1), torch.optim.AdamW)):
        w = w0.clone().requires_grad_(True)
        opt = theirs([w], lr=0.01, weight_decay=0.1)
        for _ in range(40):
            opt.zero_grad()
            (X @ w).pow(2).mean().backward()
            opt.step()

        def grad(ps):
            q = ps[0].clone().requires_grad_(True)
            (X @ q).pow(2).mean().backward()
            return [q.grad]

        (p,), _ = step_fn(ours, [w0.clone()], grad, 40)
        assert torch.allclose(p, w.detach(), atol=1e-13)


def test_clip_by_global_norm_matches_torch():
    torch.manual_seed(0)
    grads = [torch.randn(7, 3) * 5, torch.randn(4) * 5]
    ref = [g.clone() for g in grads]
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in ref]
    for p, g in zip(params, ref):
        p.grad = g.clone()
    total = torch.nn.utils.clip_grad_norm_(params, 1.0)
    t = ro.clip_by_global_norm(1.0)
    out, state = t.update([g.clone() for g in grads], t.init(grads))
    for a, p in zip(out, params):
        assert torch.equal(a, p.grad)
    assert torch.equal(state["norm"], total)
    assert bool(state["clipped"])
    # below the threshold nothing changes and clipped is False
    small = [g * 1e-3 for g in grads]
    out, state = t.update([g.clone() for g in small], t.init(small))
    assert all(torch.equal(a, b) for a, b in zip(out, small)) and not bool(state["clipped"])


def test_clip_by_value_matches_torch():
    g = torch.randn(50) * 3
    p = torch.nn.Parameter(torch.zeros(50))
    p.grad = g.clone()
    torch.nn.utils.clip_grad_value_([p], 0.5)
    t = ro.clip_by_value(0.5)
    (u,), state = t.update([g.clone()], t.init([g]))
    assert torch.equal(u, p.grad) and state["clipped"]


def test_clip_adaptive_formula():
    """AGC (Brock et al. 2021): unit-wise ||G_i|| <= clipping * max(||W_i||, eps)."""
    torch.manual_seed(0)
    W = torch.randn(4, 6, dtype=torch.float64)
    G = torch.randn(4, 6, dtype=torch.float64) * torch.tensor([[0.001], [10.0], [0.01], [5.0]], dtype=torch.float64)
    t = ro.clip_adaptive(0.1, eps=1e-3)
    (u,), state = t.update([G.clone()], t.init([W]), [W])
    for i in range(4):
        mx = 0.1 * max(W[i].norm().item(), 1e-3)
        gn = G[i].norm().item()
        expect = G[i] * (mx / gn if gn > mx else 1.0)
        assert torch.allclose(u[i], expect, atol=1e-14)
    assert state["clip_fraction"] == 0.5


def test_batched_hyperparameters_equal_separate_runs():
    """One (B, 2) tensor with per-row lr/b1 tensors == B separate runs (the 2D sweeps rely on it)."""
    torch.manual_seed(0)
    B = 6
    x0 = torch.randn(B, 2, dtype=torch.float64)
    lr = torch.linspace(0.01, 0.2, B, dtype=torch.float64)[:, None]
    b1 = torch.linspace(0.5, 0.95, B, dtype=torch.float64)[:, None]
    h = torch.tensor([1.0, 20.0], dtype=torch.float64)
    grad = lambda ps: [h * ps[0]]  # noqa: E731
    chain = ro.chain(ro.clip_by_global_norm(2.0, per_row=True), ro.adamw(lr, b1=b1, weight_decay=0.1))
    (batched,), _ = step_fn(chain, [x0.clone()], grad, 30)
    for i in range(B):
        single = ro.chain(ro.clip_by_global_norm(2.0), ro.adamw(lr[i, 0].item(), b1=b1[i, 0].item(),
                                                                 weight_decay=0.1))
        (p,), _ = step_fn(single, [x0[i].clone()], grad, 30)
        assert torch.allclose(batched[i], p, atol=1e-13), i


def test_schedule_hyperparameter_is_evaluated_at_step():
    seen = []

    def sched(step):
        seen.append(step)
        return 0.1

    step_fn(ro.sgd(sched), [torch.ones(2)], lambda ps: [torch.ones(2)], 4)
    assert seen == [0, 1, 2, 3]


def test_chain_hyperparams_and_rebuild():
    t = ro.chain(ro.clip_by_global_norm(1.0), ro.adamw(1e-3, weight_decay=0.1))
    assert t.hyperparams["max_norm"] == 1.0 and t.hyperparams["lr"] == 1e-3
    t2 = t.with_hyperparams(lr=0.5, max_norm=2.0)
    assert t2.hyperparams["lr"] == 0.5 and t2.hyperparams["max_norm"] == 2.0
    # clashing names are disambiguated by position
    t3 = ro.chain(ro.trace(0.9), ro.trace(0.5))
    assert set(t3.hyperparams) >= {"0.beta", "1.beta"}
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        t.with_hyperparams(momentum=0.9)


def test_get_and_names():
    chapter = {"gd", "sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw", "adam_l2", "adagrad"}
    elementwise = chapter | {"lion", "adopt", "schedule_free_adamw"}
    assert set(ro.names()) == elementwise
    assert set(ro.names(matrix=True)) == elementwise | {"adafactor", "muon", "soap"}
    assert ro.get("adam", lr=0.1).hyperparams["lr"] == 0.1
    with pytest.raises(ValueError, match="unknown optimizer 'adamx'.*adam"):
        ro.get("adamx")
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) \['beta'\]"):
        ro.get("adam", beta=0.9)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: ro.adam(-1.0), r"lr must be in \[0, inf\), got -1.0"),
        (lambda: ro.adam(0.1, b1=1.0), r"b1 must be in \[0, 1\), got 1.0"),
        (lambda: ro.adam(0.1, b2=-0.1), r"b2 must be in \[0, 1\), got -0.1"),
        (lambda: ro.adam(0.1, eps=-1e-8), r"eps must be in \[0, inf\), got -1e-08"),
        (lambda: ro.adamw(0.1, weight_decay=-0.1), r"weight_decay must be in \[0, inf\), got -0.1"),
        (lambda: ro.momentum(0.1, beta=1.5), r"beta must be in \[0, 1\), got 1.5"),
        (lambda: ro.momentum(0.1, form="polyak"),
         r"form must be one of 'ema', 'heavy_ball', got 'polyak'"),
        (lambda: ro.sgd(0.1, nesterov=True), r"nesterov=True requires momentum > 0"),
        (lambda: ro.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, nesterov=True),
         r"nesterov=True requires momentum > 0 and dampening = 0"),
        (lambda: ro.clip_by_global_norm(0.0), r"max_norm must be in \(0, inf\), got 0.0"),
        (lambda: ro.clip_by_value(-1), r"clip must be in \(0, inf\), got -1"),
        (lambda: ro.Adam([torch.zeros(1, requires_grad=True)], betas=(0.9, 1.2)),
         r"betas\[1\] must be in \[0, 1\), got 1.2"),
        (lambda: ro.adam(torch.tensor([[0.1], [-0.2]])),
         r"lr must be in \[0, inf\), got tensor with values in \[-0.2, 0.1\]"),
        (lambda: ro.adamw(0.1, decay_convention="l2"),
         r"decay_convention must be one of 'torch', 'decoupled', got 'l2'"),
    ],
)
def test_bad_hyperparameters_name_argument_value_and_range(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_wrong_types_are_type_errors():
    with pytest.raises(TypeError, match="lr must be a float, a schedule"):
        ro.adam("fast")
    with pytest.raises(TypeError, match="must be a ravine.optim.Transform"):
        ro.chain(ro.adam(), torch.optim.Adam)


def test_clip_by_global_norm_matches_torch_just_below_the_threshold():
    """clip_grad_norm_ scales by max/(n + 1e-6) < 1 even when n is a hair below max: so do we."""
    g = torch.tensor([0.6, 0.8], dtype=torch.float64) * (1.0 - 4e-7)  # norm 1 - 4e-7 < max_norm = 1
    p = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    p.grad = g.clone()
    torch.nn.utils.clip_grad_norm_([p], 1.0)
    assert not torch.equal(p.grad, g)  # torch did scale
    t = ro.clip_by_global_norm(1.0)
    (u,), state = t.update([g.clone()], t.init([g]))
    assert torch.equal(u, p.grad) and not bool(state["clipped"])
