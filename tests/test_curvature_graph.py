"""The Hessian operator reuses the gradient graph by default where it can (``cache_graph=None``).

Oracles: the dense Hessian from ``torch.autograd.functional.hessian`` and its ``torch.linalg.eigh``
spectrum (float64), the forward-over-reverse path of the same operator (``cache_graph=False``,
``method="fwd_rev"``: no graph kept), and, for the memory estimate, the bytes of the tensors autograd
itself saves while building the graph (``torch.autograd.graph.saved_tensors_hooks``).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ravine import curvature as C

F64 = torch.float64


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3)).to(F64)


def data(n=48, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=F64), torch.randint(0, 3, (n,), generator=g)


def dense_hessian(model, loss_fn, x, y):
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach().clone() for p in model.parameters()]
    shapes, sizes = [p.shape for p in params], [p.numel() for p in params]

    def loss_of_flat(flat):
        ps = [c.view(s) for c, s in zip(flat.split(sizes), shapes)]
        return loss_fn(torch.func.functional_call(model, dict(zip(names, ps)), (x,)), y)

    return torch.autograd.functional.hessian(loss_of_flat, torch.cat([p.reshape(-1) for p in params]))


@pytest.fixture(scope="module")
def case():
    model, (x, y), loss_fn = mlp(), data(), nn.CrossEntropyLoss()
    h = dense_hessian(model, loss_fn, x, y)
    return model, loss_fn, x, y, h


def vec(dim, seed=7):
    return torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("split", [False, True])
def test_in_memory_data_reuses_the_graph_by_default_and_matches_dense(case, split):
    model, loss_fn, x, y, h = case
    d = [(x[:20], y[:20]), (x[20:], y[20:])] if split else (x, y)
    op = C.HessianOperator(model, loss_fn, d)
    assert op.cache_graph is None and op.method == "auto"  # decided at the first product
    v = vec(op.dim)
    torch.testing.assert_close(op @ v, h @ v, rtol=1e-10, atol=1e-12)
    assert op.cache_graph is True and op.method == "double_backward"
    assert 0 < op.graph_bytes_estimate <= op.max_graph_mb * 2**20
    graphs = op._graphs
    torch.testing.assert_close(op @ (3 * v), 3 * (h @ v), rtol=1e-10, atol=1e-12)
    assert op._graphs is graphs and op.num_hvps == 2  # the same graph, reused


def test_dataloader_and_large_graphs_keep_forward_over_reverse(case):
    model, loss_fn, x, y, h = case
    v = vec(h.shape[0], seed=8)
    loader = C.HessianOperator(model, loss_fn, DataLoader(TensorDataset(x, y), batch_size=16))
    assert loader.cache_graph is False  # known at construction: nothing to keep in memory
    torch.testing.assert_close(loader @ v, h @ v, rtol=1e-10, atol=1e-12)
    assert loader.method == "fwd_rev" and loader._graphs is None

    small = C.HessianOperator(model, loss_fn, (x, y), max_graph_mb=1e-3)  # ~1 KiB: below any graph
    torch.testing.assert_close(small @ v, h @ v, rtol=1e-10, atol=1e-12)
    assert small.cache_graph is False and small.graph_bytes_estimate > 1e-3 * 2**20
    assert small.method == "fwd_rev" and small._graphs is None

    explicit = C.HessianOperator(model, loss_fn, (x, y), method="fwd_rev")
    torch.testing.assert_close(explicit @ v, h @ v, rtol=1e-10, atol=1e-12)
    assert explicit.cache_graph is False and explicit._graphs is None


def test_default_eigenvalues_equal_the_uncached_path_and_the_dense_spectrum(case):
    model, loss_fn, x, y, h = case
    lam = torch.linalg.eigh(h).eigenvalues
    default = C.hessian_eigenvalues(model, loss_fn, (x, y), k=3, tol=1e-10)
    fwd_rev = C.hessian_eigenvalues(C.HessianOperator(model, loss_fn, (x, y), cache_graph=False), k=3, tol=1e-10)
    torch.testing.assert_close(default.values, lam[-3:].flip(0), rtol=1e-9, atol=0)
    torch.testing.assert_close(default.values, fwd_rev.values, rtol=1e-12, atol=0)
    assert default.num_hvps == fwd_rev.num_hvps  # same Krylov sequence up to rounding
    top = C.hessian_eigenvalues(model, loss_fn, (x, y), k=1, dtype=torch.float32)
    assert abs(float(top.values[0]) - float(lam[-1])) <= 1e-3 * float(lam[-1])


def test_estimate_bounds_what_autograd_keeps():
    """The estimate (documented as twice the module outputs plus twice the parameters) is above the
    bytes autograd saves for the double-backward graph, and within a small factor of them."""
    for model, x in (
        (mlp(3), data(200)[0]),
        (
            nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)).to(F64),
            torch.randn(64, 1, 8, 8, dtype=F64),
        ),
    ):
        y = torch.randint(0, 3, (len(x),))
        op = C.HessianOperator(model, nn.CrossEntropyLoss(), (x, y))
        op.matvec(vec(op.dim))
        leaves = {p.data_ptr() for p in op._leaves}
        saved: dict[int, int] = {}

        def pack(t, leaves=leaves, saved=saved):
            if t.data_ptr() not in leaves:
                saved[t.data_ptr()] = t.numel() * t.element_size()
            return t

        params = [p.detach().requires_grad_(True) for p in op.params]
        leaves |= {p.data_ptr() for p in params}
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = op._loss(params, x, y)
            torch.autograd.grad(loss, params, create_graph=True)
        kept = sum(saved.values())
        assert kept <= op.graph_bytes_estimate <= 6 * kept + 2 * sum(p.numel() * 8 for p in params)


def test_a_failed_graph_build_falls_back_with_a_warning(case, monkeypatch):
    model, loss_fn, x, y, h = case
    op = C.HessianOperator(model, loss_fn, (x, y))

    def out_of_memory():
        raise RuntimeError("DefaultCPUAllocator: not enough memory")

    monkeypatch.setattr(op, "_build_graphs", out_of_memory)
    v = vec(op.dim, seed=9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hv = op @ v
    assert any("computing each product afresh" in str(w.message) for w in caught)
    torch.testing.assert_close(hv, h @ v, rtol=1e-10, atol=1e-12)
    assert op.cache_graph is False and op.method == "fwd_rev"


def test_forced_cache_graph_still_refuses_what_it_cannot_keep(case):
    model, loss_fn, x, y, _ = case
    with pytest.raises(ValueError, match="cache_graph=True needs in-memory data"):
        C.HessianOperator(model, loss_fn, DataLoader(TensorDataset(x, y), batch_size=8), cache_graph=True)
    with pytest.raises(TypeError, match="cache_graph must be None, True or False; got 'yes'"):
        C.HessianOperator(model, loss_fn, (x, y), cache_graph="yes")
    with pytest.raises(ValueError, match="max_graph_mb must be"):
        C.HessianOperator(model, loss_fn, (x, y), max_graph_mb=-1)
