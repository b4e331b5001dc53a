"""Tests of ravine.curvature against closed-form Hessians, torch.autograd.functional.hessian + eigh,
and torch.optim.Adam's own update."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ravine import curvature as C

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These models are tiny: one thread avoids OpenMP spin-waiting on a shared, busy machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# fixtures and oracles
# ---------------------------------------------------------------------------------------------


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).to(F64)


def _mlp_data(n: int = 40, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=F64), torch.randint(0, 3, (n,), generator=g)


def _autograd_hessian(model: nn.Module, loss_fn, x, y) -> torch.Tensor:
    """The dense Hessian by torch.autograd.functional.hessian on the flattened parameters."""
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach().clone() for p in model.parameters()]
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]

    def loss_of_flat(flat):
        ps = [c.view(s) for c, s in zip(flat.split(sizes), shapes)]
        out = torch.func.functional_call(model, dict(zip(names, ps)), (x,))
        return loss_fn(out, y)

    flat = torch.cat([p.reshape(-1) for p in params])
    was = model.training
    model.eval()
    h = torch.autograd.functional.hessian(loss_of_flat, flat)
    model.train(was)
    return h


@pytest.fixture(scope="module")
def mlp_case():
    model = _mlp()
    x, y = _mlp_data()
    loss_fn = nn.CrossEntropyLoss()
    h = _autograd_hessian(model, loss_fn, x, y)
    lam, vec = torch.linalg.eigh(h)
    return model, loss_fn, x, y, h, lam, vec


def _snapshot(model: nn.Module):
    return (
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        [(name, m.training) for name, m in model.named_modules()],
        [p.grad for p in model.parameters()],
    )


def _assert_untouched(model: nn.Module, snap) -> None:
    state, modes, grads = snap
    now = model.state_dict()
    for k, v in state.items():
        assert now[k].dtype == v.dtype and torch.equal(now[k], v), k
    assert [(name, m.training) for name, m in model.named_modules()] == modes
    assert all(g is None for g in grads) and all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Hessian-vector products against closed forms
# ---------------------------------------------------------------------------------------------


def test_linear_regression_mse_hessian_is_two_over_n_xtx():
    g = torch.Generator().manual_seed(0)
    n, d = 30, 4
    x = torch.randn(n, d, generator=g, dtype=F64)
    y = torch.randn(n, 1, generator=g, dtype=F64)
    model = nn.Linear(d, 1).to(F64)
    xt = torch.cat([x, torch.ones(n, 1, dtype=F64)], dim=1)  # params: weight (1, d), then bias
    h_true = 2.0 / n * xt.T @ xt
    for method in ("fwd_rev", "double_backward"):
        op = C.HessianOperator(model, nn.MSELoss(), (x, y), method=method)
        assert op.shape == (d + 1, d + 1)
        torch.testing.assert_close(op.dense(), h_true, rtol=1e-12, atol=1e-12)
    lam = torch.linalg.eigvalsh(h_true)
    res = C.hessian_eigenvalues(model, nn.MSELoss(), (x, y), k=2, which="both", tol=1e-10)
    torch.testing.assert_close(res.values, torch.cat([lam[-2:].flip(0), lam[:2].flip(0)]), rtol=1e-9, atol=0)
    tr = C.hessian_trace(model, nn.MSELoss(), (x, y), num_probes=15)  # s = 5 = P: exact
    assert tr.stderr == 0.0 and tr.estimate == pytest.approx(float(torch.trace(h_true)), rel=1e-12)


def test_logistic_regression_hessian_is_xt_diag_p1mp_x_over_n():
    g = torch.Generator().manual_seed(1)
    n, d = 50, 3
    x = torch.randn(n, d, generator=g, dtype=F64)
    y = (torch.rand(n, 1, generator=g, dtype=F64) < 0.5).to(F64)
    model = nn.Linear(d, 1).to(F64)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -1.0, 0.25]]))
        model.bias.fill_(0.1)
    xt = torch.cat([x, torch.ones(n, 1, dtype=F64)], dim=1)
    p = torch.sigmoid(xt @ torch.tensor([0.5, -1.0, 0.25, 0.1], dtype=F64))
    h_true = xt.T @ (xt * (p * (1 - p))[:, None]) / n
    v = torch.randn(d + 1, generator=g, dtype=F64)
    for method in ("fwd_rev", "double_backward"):
        op = C.HessianOperator(model, nn.BCEWithLogitsLoss(), (x, y), method=method)
        torch.testing.assert_close(op.matvec(v), h_true @ v, rtol=1e-12, atol=1e-14)
        assert op.num_hvps == 1
    lam = torch.linalg.eigvalsh(h_true)
    res = C.hessian_eigenvalues(model, nn.BCEWithLogitsLoss(), (x, y), k=1, which="smallest", tol=1e-10)
    assert float(res.values[0]) == pytest.approx(float(lam[0]), rel=1e-9)


def test_hvp_matches_dense_autograd_hessian_both_methods(mlp_case):
    model, loss_fn, x, y, h, _, _ = mlp_case
    v = torch.randn(h.shape[0], generator=torch.Generator().manual_seed(3), dtype=F64)
    results = {}
    for method in ("fwd_rev", "double_backward", "auto"):
        op = C.HessianOperator(model, loss_fn, (x, y), method=method)
        results[method] = op @ v
        torch.testing.assert_close(results[method], h @ v, rtol=1e-10, atol=1e-12)
        assert op.method in ("fwd_rev", "double_backward")
    torch.testing.assert_close(results["fwd_rev"], results["double_backward"], rtol=1e-12, atol=1e-14)
    op = C.HessianOperator(model, loss_fn, (x, y))
    torch.testing.assert_close(op.dense(), h, rtol=1e-10, atol=1e-12)
    assert op.num_hvps == h.shape[0]
    mat = torch.randn(h.shape[0], 3, dtype=F64)
    torch.testing.assert_close(op @ mat, h @ mat, rtol=1e-10, atol=1e-12)


def test_flatten_unflatten_roundtrip_and_shapes(mlp_case):
    model, loss_fn, x, y, *_ = mlp_case
    op = C.HessianOperator(model, loss_fn, (x, y))
    params = list(model.parameters())
    flat = op.flatten(params)
    assert flat.shape == (sum(p.numel() for p in params),)
    for a, b in zip(op.unflatten(flat), params):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"tensor 0 \(0.weight\) must have shape \(8, 5\)"):
        op.flatten([torch.zeros(3)] + params[1:])
    with pytest.raises(ValueError, match=r"v must have shape \(75,\); got \(74,\)"):
        op.matvec(torch.zeros(74, dtype=F64))


# ---------------------------------------------------------------------------------------------
# eigenvalues, index
# ---------------------------------------------------------------------------------------------


def _assert_vectors_match(found: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    for u, w in zip(found, expected):
        assert abs(float(u @ w)) == pytest.approx(1.0, abs=atol)  # same up to sign
        assert float(u.norm()) == pytest.approx(1.0, abs=1e-10)


def test_lanczos_top_and_bottom_eigenpairs_match_eigh(mlp_case):
    model, loss_fn, x, y, _, lam, vec = mlp_case
    k = 3
    top = C.hessian_eigenvalues(model, loss_fn, (x, y), k=k, which="largest", tol=1e-10)
    assert top.converged and top.which == "largest"
    torch.testing.assert_close(top.values, lam[-k:].flip(0), rtol=1e-9, atol=1e-12)
    _assert_vectors_match(top.vectors, vec[:, -k:].flip(1).T, atol=1e-7)
    bottom = C.hessian_eigenvalues(model, loss_fn, (x, y), k=k, which="smallest", tol=1e-10)
    assert float(bottom.values[0]) < 0  # negative curvature: this point is a saddle
    torch.testing.assert_close(bottom.values, lam[:k], rtol=1e-9, atol=1e-12)
    _assert_vectors_match(bottom.vectors, vec[:, :k].T, atol=1e-6)
    both = C.hessian_eigenvalues(model, loss_fn, (x, y), k=2, which="both", tol=1e-10)
    torch.testing.assert_close(both.values, torch.cat([lam[-2:].flip(0), lam[:2].flip(0)]), rtol=1e-9, atol=0)
    # reshape like the parameters
    parts = top.vector_as_params(0)
    assert [p.shape for p in parts] == [p.shape for p in model.parameters()]
    assert torch.equal(torch.cat([p.reshape(-1) for p in parts]), top.vectors[0])


def test_lanczos_thick_restart_small_basis_still_exact(mlp_case):
    model, loss_fn, x, y, _, lam, _ = mlp_case
    res = C.hessian_eigenvalues(model, loss_fn, (x, y), k=2, which="largest", tol=1e-9, max_basis=8)
    assert res.converged
    torch.testing.assert_close(res.values, lam[-2:].flip(0), rtol=1e-8, atol=0)
    # residual bounds the eigenvalue error (Kahan / Weyl): |lambda - theta| <= ||H y - theta y||
    assert bool(((res.values - lam[-2:].flip(0)).abs() <= res.residuals + 1e-13).all())


def test_power_iteration_matches_eigh_and_uses_more_hvps(mlp_case):
    model, loss_fn, x, y, _, lam, vec = mlp_case
    power = C.hessian_eigenvalues(model, loss_fn, (x, y), k=2, method="power", tol=1e-7, max_iter=5000)
    lanczos = C.hessian_eigenvalues(model, loss_fn, (x, y), k=2, method="lanczos", tol=1e-7)
    assert power.converged and power.method == "power"
    torch.testing.assert_close(power.values, lam[-2:].flip(0), rtol=1e-9, atol=0)
    _assert_vectors_match(power.vectors, vec[:, -2:].flip(1).T, atol=1e-6)
    assert lanczos.num_hvps < power.num_hvps


def test_power_iteration_finds_algebraic_extremes_with_a_shift():
    # an indefinite quadratic whose largest-magnitude eigenvalue is negative: L = 1/2 w^T A w
    lam = torch.tensor([-5.0, -1.0, 0.5, 2.0], dtype=F64)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=F64))
    a = q @ torch.diag(lam) @ q.T

    class Quad(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(4, dtype=F64))

        def forward(self, x):
            return 0.5 * self.w @ a @ self.w + 0 * x.sum()

    data = (torch.zeros(1, 1, dtype=F64), torch.zeros(1, dtype=F64))
    loss = lambda out, target: out  # noqa: E731
    top = C.hessian_eigenvalues(Quad(), loss, data, k=1, method="power", tol=1e-10)
    assert float(top.values[0]) == pytest.approx(2.0, rel=1e-8)
    bottom = C.hessian_eigenvalues(Quad(), loss, data, k=1, which="smallest", method="power", tol=1e-10)
    assert float(bottom.values[0]) == pytest.approx(-5.0, rel=1e-8)
    full = C.hessian_eigenvalues(Quad(), loss, data, k=2, which="both", tol=1e-12)
    torch.testing.assert_close(full.values, torch.tensor([2.0, 0.5, -1.0, -5.0], dtype=F64))


def test_index_counts_negative_eigenvalues_of_dense_hessian(mlp_case):
    model, loss_fn, x, y, _, lam, _ = mlp_case
    res = C.hessian_index(model, loss_fn, (x, y))
    thr = 1000 * torch.finfo(F64).eps * float(lam.abs().max())
    assert res.num_negative == int((lam < -thr).sum()) > 0
    assert res.index == pytest.approx(res.num_negative / lam.numel())
    assert res.num_negative + res.num_zero + res.num_positive == res.dim == lam.numel()
    torch.testing.assert_close(res.eigenvalues, lam, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="above max_dim=10"):
        C.hessian_index(model, loss_fn, (x, y), max_dim=10)


def test_eigenvalues_non_convergence_warns(mlp_case):
    model, loss_fn, x, y, *_ = mlp_case
    with pytest.warns(RuntimeWarning, match="did not converge"):
        res = C.hessian_eigenvalues(model, loss_fn, (x, y), k=1, which="smallest", tol=1e-12, max_iter=5)
    assert not res.converged and res.num_hvps == 5


# ---------------------------------------------------------------------------------------------
# trace and density
# ---------------------------------------------------------------------------------------------


def test_trace_estimators_against_dense_trace(mlp_case):
    model, loss_fn, x, y, h, _, _ = mlp_case
    exact = float(torch.trace(h))
    op = C.HessianOperator(model, loss_fn, (x, y))
    hpp = C.hessian_trace(op, method="hutch++", num_probes=30, seed=1)
    assert hpp.num_hvps == 30 and hpp.stderr > 0
    assert abs(hpp.estimate - exact) < 4 * hpp.stderr
    hutch = C.hessian_trace(op, method="hutchinson", num_probes=200, seed=2)
    assert hutch.num_hvps == 200 and len(hutch.samples) == 200
    assert abs(hutch.estimate - exact) < 4 * hutch.stderr
    # Hutchinson's variance for Rademacher probes is 2 (||H||_F^2 - sum H_ii^2) / m
    se_theory = math.sqrt(2 * (float((h**2).sum()) - float((h.diagonal() ** 2).sum())) / 200)
    assert hutch.stderr == pytest.approx(se_theory, rel=0.3)
    full = C.hessian_trace(op, num_probes=3 * h.shape[0])  # s >= P: Q spans everything, exact
    assert full.stderr == 0.0 and full.estimate == pytest.approx(exact, rel=1e-10)


def test_spectral_density_is_a_probability_density_with_exact_quadrature(mlp_case):
    model, loss_fn, x, y, h, lam, _ = mlp_case
    p = h.shape[0]
    res = C.spectral_density(model, loss_fn, (x, y), num_iter=p, num_probes=12, seed=0, hvp="double_backward")
    assert torch.trapezoid(res.density, res.grid) == pytest.approx(1.0, abs=1e-6)
    assert bool((res.density >= 0).all())
    per_probe_means = []
    for nodes, weights in zip(res.nodes, res.weights):
        assert float(weights.sum()) == pytest.approx(1.0, abs=1e-10)
        # a full Krylov space: every node carrying weight is an eigenvalue of H
        heavy = nodes[weights > 1e-8]
        dist = (heavy[:, None] - lam[None, :]).abs().min(dim=1).values
        assert float(dist.max()) < 1e-8
        per_probe_means.append(float(weights @ nodes))  # = v^T H v exactly (degree-1 quadrature)
    means = torch.tensor(per_probe_means, dtype=F64)
    se = float(means.std()) / math.sqrt(len(means))
    assert abs(float(means.mean()) - float(torch.trace(h)) / p) < 4 * se
    # the smoothed density's mean equals the quadrature's mean (Gaussians are symmetric)
    assert float(torch.trapezoid(res.grid * res.density, res.grid)) == pytest.approx(float(means.mean()), rel=1e-6)
    short = C.spectral_density(model, loss_fn, (x, y), num_iter=10, num_points=400)
    assert short.num_hvps == 10 and len(short.grid) == 400


# ---------------------------------------------------------------------------------------------
# data handling, modes, dtypes
# ---------------------------------------------------------------------------------------------


def test_dataloader_with_unequal_batches_equals_full_batch(mlp_case):
    model, loss_fn, x, y, h, lam, _ = mlp_case
    loader = DataLoader(TensorDataset(x, y), batch_size=7)  # 40 = 5 x 7 + 5
    batches = [(x[:13], y[:13]), (x[13:14], y[13:14]), (x[14:], y[14:])]
    v = torch.randn(h.shape[0], generator=torch.Generator().manual_seed(5), dtype=F64)
    full = C.HessianOperator(model, loss_fn, (x, y))
    for data in (loader, batches):
        op = C.HessianOperator(model, loss_fn, data)
        torch.testing.assert_close(op.matvec(v), full.matvec(v), rtol=1e-12, atol=1e-14)
        assert op.loss() == pytest.approx(full.loss(), rel=1e-13)
        torch.testing.assert_close(op.loss_and_gradient()[1], full.loss_and_gradient()[1])
    top = C.hessian_eigenvalues(model, loss_fn, loader, k=1, tol=1e-10)
    assert float(top.values[0]) == pytest.approx(float(lam[-1]), rel=1e-9)


class _BnDropNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.bn = nn.BatchNorm1d(6)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x):
        return self.fc2(self.drop(torch.tanh(self.bn(self.fc1(x)))))


def _trained_bn_net() -> nn.Module:
    torch.manual_seed(0)
    net = _BnDropNet().to(F64)
    with torch.no_grad():  # give batch norm non-trivial running statistics
        for _ in range(3):
            net(torch.randn(16, 4, dtype=F64) * 2 + 1)
    return net


def test_batchnorm_dropout_model_mode_independent_and_untouched():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 4, generator=g, dtype=F64), torch.randint(0, 2, (24,), generator=g)
    loss_fn = nn.CrossEntropyLoss()
    net = _trained_bn_net()
    net.eval()
    h_eval = _autograd_hessian(net, loss_fn, x, y)  # the oracle: evaluation mode
    net.train()
    net.bn.eval()  # a mixed state that must come back exactly
    snap = _snapshot(net)
    op = C.HessianOperator(net, loss_fn, (x, y))
    torch.testing.assert_close(op.dense(), h_eval, rtol=1e-10, atol=1e-12)
    _assert_untouched(net, snap)
    calls = [
        lambda: C.hessian_eigenvalues(net, loss_fn, (x, y), k=2, which="both", tol=1e-6),
        lambda: C.hessian_eigenvalues(net, loss_fn, (x, y), k=1, method="power", tol=1e-4),
        lambda: C.hessian_trace(net, loss_fn, (x, y), num_probes=9),
        lambda: C.spectral_density(net, loss_fn, (x, y), num_iter=8),
        lambda: C.hessian_index(net, loss_fn, (x, y)),
        lambda: C.sam_sharpness(net, loss_fn, (x, y)),
        lambda: C.keskar_sharpness(net, loss_fn, (x, y), steps=2),
        lambda: C.HessianOperator(net, loss_fn, (x, y), method="double_backward").matvec(torch.ones(op.dim, dtype=F64)),
    ]
    for call in calls:
        call()
        _assert_untouched(net, snap)
    # the train-mode flags do not change the result
    net.eval()
    torch.testing.assert_close(C.HessianOperator(net, loss_fn, (x, y)).dense(), h_eval, rtol=1e-10, atol=1e-12)


def test_float64_on_request_leaves_float32_model_alone(mlp_case):
    model64, loss_fn, x, y, _, lam, _ = mlp_case
    model32 = _mlp().to(torch.float32)
    snap = _snapshot(model32)
    res = C.hessian_eigenvalues(model32, loss_fn, (x.float(), y), k=1, tol=1e-10, dtype=F64)
    _assert_untouched(model32, snap)
    assert all(p.dtype == torch.float32 for p in model32.parameters())
    assert res.vectors.dtype == F64
    # float32 weights are the float64 weights rounded; their curvature agrees to float32 precision
    assert float(res.values[0]) == pytest.approx(float(lam[-1]), rel=1e-5)
    op32 = C.HessianOperator(model32, loss_fn, (x.float(), y))
    assert op32.dtype == torch.float32
    top32 = C.hessian_eigenvalues(op32, k=1, tol=1e-4)
    assert float(top32.values[0]) == pytest.approx(float(lam[-1]), rel=1e-4)


def test_frozen_parameters_are_constants():
    model = _mlp()
    model[0].weight.requires_grad_(False)
    x, y = _mlp_data()
    op = C.HessianOperator(model, nn.CrossEntropyLoss(), (x, y))
    assert op.names == ["0.bias", "2.weight", "2.bias"]
    full = _autograd_hessian(model, nn.CrossEntropyLoss(), x, y)[40:, 40:]
    torch.testing.assert_close(op.dense(), full, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# sharpness
# ---------------------------------------------------------------------------------------------


def _orthogonal_design(n: int, scales: list[float], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, len(scales), generator=g, dtype=F64))
    x = q * torch.tensor(scales, dtype=F64) * math.sqrt(n)
    y = torch.randn(n, 1, generator=g, dtype=F64)
    return x, y


def test_sam_sharpness_on_a_quadratic_is_exact():
    n = 20
    x, y = _orthogonal_design(n, [1.0, 2.0, 0.5])
    model = nn.Linear(3, 1, bias=False).to(F64)
    w = model.weight.detach().reshape(-1)
    h = 2.0 / n * x.T @ x
    grad = 2.0 / n * x.T @ (x @ w - y[:, 0])
    rho = 0.3
    res = C.sam_sharpness(model, nn.MSELoss(), (x, y), rho=rho)
    u = grad / grad.norm()
    # L(w + e) - L(w) = g.e + e^T H e / 2 exactly for a quadratic
    expected = rho * float(grad.norm()) + 0.5 * rho**2 * float(u @ h @ u)
    assert res.value == pytest.approx(expected, rel=1e-10)
    assert res.first_order == pytest.approx(rho * float(grad.norm()), rel=1e-12)
    assert res.loss == pytest.approx(float(((x @ w - y[:, 0]) ** 2).mean()), rel=1e-12)


def test_keskar_sharpness_on_separable_quadratic_hits_the_box_corner():
    # H diagonal and positive: the box maximum of g.e + e^T H e / 2 is e_i = r_i sign(g_i)
    n = 25
    x, y = _orthogonal_design(n, [1.0, 3.0, 0.2, 1.5], seed=2)
    model = nn.Linear(4, 1, bias=False).to(F64)
    w = model.weight.detach().reshape(-1)
    eps = 0.05

    def loss(v):
        return float(((x @ v - y[:, 0]) ** 2).mean())

    grad = 2.0 / n * x.T @ (x @ w - y[:, 0])
    corner = w + eps * (w.abs() + 1) * torch.sign(grad)
    expected = 100 * (loss(corner) - loss(w)) / (1 + loss(w))
    res = C.keskar_sharpness(model, nn.MSELoss(), (x, y), eps=eps, steps=5)
    assert res.value == pytest.approx(expected, rel=1e-10)
    assert res.max_loss == pytest.approx(loss(corner), rel=1e-12)


def test_adam_preconditioner_reproduces_torch_adam_step_and_preconditioned_sharpness(mlp_case):
    model0, loss_fn, x, y, *_ = mlp_case
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.99), eps=1e-6)
    for _ in range(4):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    opt.zero_grad()
    loss_fn(model(x), y).backward()
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()  # oracle: torch's step is w <- w - lr m_t / P_t
    pre = C.adam_preconditioner(opt, list(model.parameters()))
    for p, w0, pk in zip(model.parameters(), before, pre):
        torch.testing.assert_close(p.detach() - w0, -0.01 * opt.state[p]["exp_avg"] / pk, rtol=1e-9, atol=1e-15)
    explicit = C.adam_preconditioner(
        exp_avg_sq=[opt.state[p]["exp_avg_sq"] for p in model.parameters()],
        step=int(opt.state[next(model.parameters())]["step"]),
        betas=(0.8, 0.99),
        eps=1e-6,
    )
    for a, b in zip(pre, explicit):
        torch.testing.assert_close(a, b)
    model.zero_grad(set_to_none=True)
    snap = _snapshot(model)
    res = C.preconditioned_sharpness(model, loss_fn, (x, y), optimizer=opt, tol=1e-10)
    _assert_untouched(model, snap)
    h = _autograd_hessian(model, loss_fn, x, y)
    d = torch.cat([p.reshape(-1) for p in pre])
    # eigenvalues of the non-symmetric P^-1 H, computed directly
    eig = torch.linalg.eigvals(h / d[:, None]).real
    assert res.value == pytest.approx(float(eig.max()), rel=1e-8)
    assert res.lr == 0.01 and res.beta1 == 0.8
    assert res.threshold == pytest.approx((2 + 2 * 0.8) / (0.2 * 0.01))
    same = C.preconditioned_sharpness(model, loss_fn, (x, y), preconditioner=pre, tol=1e-10)
    assert same.value == pytest.approx(res.value, rel=1e-9) and same.threshold is None
    del model0


def test_stability_thresholds_published_values():
    assert C.stability_threshold(0.01) == pytest.approx(200.0)  # 2 / lr
    assert C.stability_threshold(0.01, "adam") == pytest.approx(3800.0)  # 38 / lr at beta1 = 0.9
    assert C.stability_threshold(0.1, "momentum", beta1=0.9) == pytest.approx(38.0)
    with pytest.raises(ValueError, match="optimizer must be one of 'gd', 'momentum', 'adam', got 'sgd'"):
        C.stability_threshold(0.1, "sgd")
    with pytest.raises(ValueError, match=r"lr must be in \(0, inf\), got -1"):
        C.stability_threshold(-1)


def _closed_form_hessian_eigenvalues(f, point):
    """Eigenvalues of the exact Hessian of ``f(x, y)`` at ``point`` (torch.autograd.functional.hessian)."""
    h = torch.autograd.functional.hessian(lambda p: f(p[0], p[1]), torch.tensor(point, dtype=torch.float64))
    return torch.linalg.eigvalsh(h)


@pytest.mark.parametrize(
    ("f", "point", "exact", "kind"),
    [
        (lambda x, y: x * x + 3 * y * y, (0.0, 0.0), [2.0, 6.0], "minimum"),  # bowl
        (lambda x, y: -(x * x) - 0.5 * y * y, (0.0, 0.0), [-2.0, -1.0], "maximum"),
        (lambda x, y: x * x - y * y, (0.0, 0.0), [-2.0, 2.0], "saddle"),  # the saddle surface
        (lambda x, y: x**3 - 3 * x * y * y, (0.0, 0.0), [0.0, 0.0], "degenerate"),  # monkey saddle
        (lambda x, y: x * x + y**4, (0.0, 0.0), [0.0, 2.0], "degenerate"),  # flat along y
        (lambda x, y: (1 - x) ** 2 + 100 * (y - x * x) ** 2, (1.0, 1.0), None, "minimum"),  # Rosenbrock
    ],
)
def test_critical_point_kind_on_closed_form_hessians(f, point, exact, kind):
    lam = _closed_form_hessian_eigenvalues(f, point)
    if exact is not None:
        assert lam.tolist() == pytest.approx(exact, abs=1e-12)
    assert C.critical_point_kind(lam) == kind
    assert C.critical_point_kind(lam.flip(0).tolist()) == kind  # order does not matter


def test_critical_point_kind_tolerance_and_undefined():
    assert C.critical_point_kind([1.0, 1e-13]) == "degenerate"  # within 1e-12 of the scale: zero
    assert C.critical_point_kind([1.0, 1e-11]) == "minimum"
    assert C.critical_point_kind([1.0, 1e-11], tol=1e-10) == "degenerate"
    assert C.critical_point_kind([-1.0, 2.0, 3.0]) == "saddle"  # any dimension
    assert C.critical_point_kind([float("nan"), 1.0]) == "undefined"
    assert C.critical_point_kind([float("inf"), 1.0]) == "undefined"
    with pytest.raises(ValueError, match=r"tol must be in \[0, inf\), got -1"):
        C.critical_point_kind([1.0, 2.0], tol=-1)


def _final_distance(lam, lr, momentum=0.0, dampening=0.0, steps=3000):
    """|w| after full-batch torch.optim.SGD on f(w) = lam w^2 / 2 from w = 1."""
    w = torch.ones(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([w], lr=lr, momentum=momentum, dampening=dampening)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * lam * w * w).sum().backward()
        opt.step()
    return float(w.detach().abs())


@pytest.mark.parametrize(
    ("optimizer", "sgd_kwargs"),
    [("gd", {}), ("momentum", {"momentum": 0.9}), ("adam", {"momentum": 0.9, "dampening": 0.9})],
)
def test_max_stable_lr_is_the_divergence_threshold_on_a_quadratic(optimizer, sgd_kwargs):
    """torch's SGD (heavy ball; with dampening = beta1, the EMA momentum of Adam's first moment on a
    quadratic with a frozen preconditioner) converges just below max_stable_lr and diverges just above."""
    lam = 7.0
    lr = C.max_stable_lr(lam, optimizer, beta1=0.9)
    assert C.stability_threshold(lr, optimizer, beta1=0.9) == pytest.approx(lam, rel=1e-15)
    assert _final_distance(lam, 0.98 * lr, **sgd_kwargs) < 1e-6
    assert _final_distance(lam, 1.02 * lr, **sgd_kwargs) > 1e6


def test_max_stable_lr_closed_forms_and_no_positive_curvature():
    assert C.max_stable_lr(4.0) == 0.5  # 2 / lambda, bit for bit
    assert C.max_stable_lr(0.5, "adam", beta1=0.9) == pytest.approx(76.0)  # 38 / lambda
    assert C.max_stable_lr(0.0) is None
    assert C.max_stable_lr(-3.0) is None
    assert C.max_stable_lr(float("nan")) is None
    with pytest.raises(ValueError, match=r"beta1 must be in \[0, 1\), got 1"):
        C.max_stable_lr(1.0, "momentum", beta1=1)


def test_sharpness_report_combines_measures(mlp_case):
    model, loss_fn, x, y, h, lam, _ = mlp_case
    snap = _snapshot(model)
    rep = C.sharpness(model, loss_fn, (x, y), lr=0.5, keskar_steps=2, trace_probes=3 * h.shape[0], tol=1e-8)
    _assert_untouched(model, snap)
    assert rep.lambda_max == pytest.approx(float(lam[-1]), rel=1e-8)
    assert rep.trace.estimate == pytest.approx(float(torch.trace(h)), rel=1e-9)
    assert rep.gd_threshold == pytest.approx(4.0) and rep.adam is None
    assert rep.sam.value > 0 and rep.keskar.value > 0
    assert rep.num_hvps > 0


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def test_bad_arguments_raise_with_clear_messages(mlp_case):
    model, loss_fn, x, y, *_ = mlp_case
    data = (x, y)
    with pytest.raises(ValueError, match="method must be one of 'auto', 'fwd_rev', 'double_backward', got 'x'"):
        C.HessianOperator(model, loss_fn, data, method="x")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module; got str"):
        C.HessianOperator("net", loss_fn, data)
    with pytest.raises(TypeError, match="dtype must be None or a floating torch.dtype; got torch.int64"):
        C.HessianOperator(model, loss_fn, data, dtype=torch.int64)
    with pytest.raises(TypeError, match="got a single tensor of shape"):
        C.HessianOperator(model, loss_fn, x)
    with pytest.raises(TypeError, match=r"data\[1\] must be a pair \(X, y\) of tensors; got tuple of length 3"):
        C.HessianOperator(model, loss_fn, [(x, y), (x, y, y)])
    with pytest.raises(ValueError, match="at least one"):
        C.HessianOperator(model, loss_fn, [])
    with pytest.raises(TypeError, match="one-shot iterator"):
        C.HessianOperator(model, loss_fn, iter([(x, y)]))
    with pytest.raises(ValueError, match="which must be one of 'largest', 'smallest', 'both', got 'top'"):
        C.hessian_eigenvalues(model, loss_fn, data, which="top")
    with pytest.raises(ValueError, match="method must be one of 'lanczos', 'power', got 'arnoldi'"):
        C.hessian_eigenvalues(model, loss_fn, data, method="arnoldi")
    with pytest.raises(ValueError, match=r"k=40 with which='both' asks for 80 eigenpairs but the Hessian is 75x75"):
        C.hessian_eigenvalues(model, loss_fn, data, k=40, which="both")
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, inf\), got 0"):
        C.hessian_eigenvalues(model, loss_fn, data, k=0)
    with pytest.raises(ValueError, match=r"tol must be in \(0, inf\), got 0"):
        C.hessian_eigenvalues(model, loss_fn, data, tol=0)
    with pytest.raises(ValueError, match="method must be one of 'hutch\\+\\+', 'hutchinson', got 'exact'"):
        C.hessian_trace(model, loss_fn, data, method="exact")
    with pytest.raises(ValueError, match=r"num_probes must be an integer in \[2, inf\), got 1"):
        C.hessian_trace(model, loss_fn, data, method="hutchinson", num_probes=1)
    with pytest.raises(TypeError, match="seed must be an integer, got float"):
        C.hessian_trace(model, loss_fn, data, seed=1.5)
    with pytest.raises(ValueError, match=r"rho must be in \(0, inf\), got 0"):
        C.sam_sharpness(model, loss_fn, data, rho=0)
    with pytest.raises(ValueError, match="loss_fn must return a scalar tensor"):
        C.HessianOperator(model, nn.CrossEntropyLoss(reduction="none"), data).loss()
    fresh = _mlp()
    opt = torch.optim.Adam(fresh.parameters())
    with pytest.raises(ValueError, match="has no 'exp_avg_sq'/'step' in the optimizer state"):
        C.preconditioned_sharpness(fresh, loss_fn, data, optimizer=opt)
    with pytest.raises(ValueError, match="step must be >= 1"):
        C.adam_preconditioner(exp_avg_sq=[torch.ones(2)], step=0)


def test_auto_falls_back_to_double_backward_when_forward_ad_is_missing(mlp_case):
    model, loss_fn, x, y, h, _, _ = mlp_case

    class NoForwardAD(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a)
            return a.tanh()

        @staticmethod
        def backward(ctx, g):
            (a,) = ctx.saved_tensors
            return g * (1 - a.tanh() ** 2)

    class Net(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, inp):
            return NoForwardAD.apply(self.inner(inp))

    net = Net(_mlp())
    op = C.HessianOperator(net, loss_fn, (x, y), cache_graph=False)  # the uncached path's fallback
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hv = op.matvec(torch.ones(op.dim, dtype=F64))
    assert op.method == "double_backward"
    assert any("falling back to double backward" in str(w.message) for w in caught)
    oracle = _autograd_hessian(net, loss_fn, x, y)
    torch.testing.assert_close(hv, oracle @ torch.ones(op.dim, dtype=F64), rtol=1e-10, atol=1e-12)


def test_cache_graph_reuses_gradient_graph_and_matches_dense(mlp_case):
    model, loss_fn, x, y, h, lam, _ = mlp_case
    batches = [(x[:13], y[:13]), (x[13:], y[13:])]
    snap = _snapshot(model)
    op = C.HessianOperator(model, loss_fn, batches, cache_graph=True)
    assert op.method == "double_backward"
    v = torch.randn(h.shape[0], generator=torch.Generator().manual_seed(7), dtype=F64)
    torch.testing.assert_close(op.matvec(v), h @ v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op.matvec(2 * v), 2 * (h @ v), rtol=1e-10, atol=1e-12)  # graph reused
    assert op.num_hvps == 2
    top = C.hessian_eigenvalues(op, k=2, tol=1e-10)
    torch.testing.assert_close(top.values, lam[-2:].flip(0), rtol=1e-9, atol=0)
    _assert_untouched(model, snap)
    with pytest.raises(ValueError, match="only method='double_backward' \\(or 'auto'\\) can do; got method='fwd_rev'"):
        C.HessianOperator(model, loss_fn, (x, y), method="fwd_rev", cache_graph=True)
    with pytest.raises(ValueError, match="cache_graph=True needs in-memory data .* got DataLoader"):
        C.HessianOperator(model, loss_fn, DataLoader(TensorDataset(x, y), batch_size=8), cache_graph=True)


def test_density_plot_writes_a_png(tmp_path, mlp_case):
    from ravine.plots.curvature import plot_spectral_density

    model, loss_fn, x, y, *_ = mlp_case
    op = C.HessianOperator(model, loss_fn, (x, y))
    dens = C.spectral_density(op, num_iter=20)
    top = C.hessian_eigenvalues(op, k=2)
    fig = plot_spectral_density(dens, tmp_path / "density.png", eigenvalues=top, threshold=4.0)
    assert (tmp_path / "density.png").stat().st_size > 1000
    assert fig.axes[0].get_yscale() == "log"
    assert not list(tmp_path.glob(".density-*"))  # no temporary file left behind
    with pytest.raises(TypeError, match="result must be a DensityResult from spectral_density; got EigenResult"):
        plot_spectral_density(top)


def test_adam_preconditioner_from_ravine_optimizers_reproduces_their_step():
    ro = pytest.importorskip("ravine.optim")
    x, y = _mlp_data()
    loss_fn = nn.CrossEntropyLoss()
    for make in (
        lambda ps: ro.Adam(ps, lr=0.01, betas=(0.85, 0.99)),
        lambda ps: ro.Optimizer(ps, ro.adam(0.01, b1=0.85, b2=0.99)),
    ):
        model = _mlp()
        opt = make(model.parameters())
        for _ in range(3):
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
        before = [p.detach().clone() for p in model.parameters()]
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        pre = C.adam_preconditioner(opt, list(model.parameters()))
        for p, w0, pk in zip(model.parameters(), before, pre):
            torch.testing.assert_close(p.detach() - w0, -0.01 * opt.state[p]["exp_avg"] / pk, rtol=1e-8, atol=1e-15)
        model.zero_grad(set_to_none=True)
        res = C.preconditioned_sharpness(model, loss_fn, (x, y), optimizer=opt, tol=1e-8)
        assert res.beta1 == 0.85 and res.lr == 0.01
        assert res.threshold == pytest.approx(C.stability_threshold(0.01, "adam", beta1=0.85))


class _Point(nn.Module):
    """A 2D surface as a 'network' whose two parameters are the point (x, y)."""

    def __init__(self, xy):
        super().__init__()
        self.xy = nn.Parameter(torch.tensor(xy, dtype=torch.float64))

    def forward(self, inputs):
        return self.xy.expand(len(inputs), 2)


@pytest.mark.parametrize("point", [(-1.2, 1.0), (1.0, 1.0), (0.3, -0.4)])
def test_two_d_surface_hessian_matches_closed_form_rosenbrock(point):
    """Rosenbrock's Hessian in closed form: [[2 - 400 (y - 3x^2), -400 x], [-400 x, 200]]; the curvature
    operator on the surface, and the 2D world's own exact Hessian, both agree with it."""
    from ravine import surfaces

    s = surfaces.get("rosenbrock")
    x, y = point
    exact = torch.tensor([[2 - 400 * (y - 3 * x * x), -400 * x], [-400 * x, 200.0]], dtype=torch.float64)
    model = _Point(point)

    def loss_fn(out, _target):
        return s.value(out[0])

    data = (torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1))
    op = C.HessianOperator(model, loss_fn, data)
    torch.testing.assert_close(op.dense(), exact, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(s.hessian(torch.tensor(point, dtype=torch.float64)), exact, rtol=1e-10, atol=1e-9)
    res = C.hessian_eigenvalues(model, loss_fn, data, k=1, which="both", tol=1e-10)
    want = torch.linalg.eigvalsh(exact)
    got = sorted(float(v) for v in res.values)
    assert got == pytest.approx(want.tolist(), rel=1e-8)
