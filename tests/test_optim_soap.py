"""SOAP against ``pytorch_optimizer.SOAP`` (a port of the paper's code), and its closed forms.

Tolerances (stated in ravine.optim.soap's docstring): 1e-12 in float64 while the eigenbases come from
``eigh`` alone; 1e-5 once they are refreshed by power iteration + QR, which the reference always runs
in float32 (ravine in the parameter's dtype, so in float64 the two differ by float32 rounding; in
float32 both compute the same). The gradients are well conditioned (a quadratic plus Gaussian noise:
the statistics have distinct eigenvalues), so an eigenbasis is determined by its matrix and the
comparison is between the algorithms, not between two choices of basis of a degenerate eigenspace.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import ravine.optim as ro

pytorch_optimizer = pytest.importorskip("pytorch_optimizer")

SHAPES = [(6, 5), (4, 3, 2), (5,), ()]


def _run(dtype, steps, ravine_kw, ref_kw, shapes=SHAPES):
    """Step ravine's SOAP and the reference on the same gradient sequence g = p / 2 + noise."""
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    ours = [torch.nn.Parameter(x.clone()) for x in init]
    theirs = [torch.nn.Parameter(x.clone()) for x in init]
    opt = ro.Optimizer(ours, ro.soap(**ravine_kw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = pytorch_optimizer.SOAP(theirs, **ref_kw)
    noise = torch.Generator().manual_seed(1)
    for _ in range(steps):
        n = [torch.randn(s, generator=noise, dtype=dtype) for s in shapes]
        for ps, o in ((ours, opt), (theirs, ref)):
            for p, ni in zip(ps, n):
                p.grad = p.detach() * 0.5 + ni
            o.step()
    return init, ours, theirs, opt


@pytest.mark.parametrize("precondition_1d", [False, True])
def test_matches_the_reference_in_float64_before_a_refresh(precondition_1d):
    kw = dict(lr=3e-2, weight_decay=0.0, precondition_frequency=1000, precondition_1d=precondition_1d)
    init, ours, theirs, _ = _run(torch.float64, 60, kw, kw)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert max((a - x).abs().max().item() for a, x in zip(ours, init)) > 0.5  # they moved


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_the_reference_with_eigenbasis_refreshes(dtype):
    kw = dict(lr=3e-2, b1=0.9, b2=0.99, shampoo_beta=0.9, weight_decay=0.0, precondition_frequency=5)
    ref_kw = dict(lr=3e-2, betas=(0.9, 0.99), shampoo_beta=0.9, weight_decay=0.0, precondition_frequency=5)
    init, ours, theirs, opt = _run(dtype, 60, kw, ref_kw)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # the refreshed bases are orthogonal, in the parameter's dtype
    q = opt.state[ours[0]]["Q"]
    assert q[0].dtype == dtype
    torch.testing.assert_close(q[0].T @ q[0], torch.eye(6, dtype=dtype), rtol=0, atol=1e-5)


def test_first_step_only_builds_the_statistics_and_bases():
    """Closed form after one call: GG_i = (1 - shampoo_beta) G_(i) G_(i)^T, Q_i its eigenvectors
    (largest eigenvalue first), parameters unmoved (weight decay 0)."""
    p = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
    start = p.detach().clone()
    g = torch.randn(4, 3, dtype=torch.float64)
    opt = ro.Optimizer([p], ro.soap(lr=0.1, weight_decay=0.0, shampoo_beta=0.8))
    p.grad = g.clone()
    opt.step()
    assert torch.equal(p.detach(), start)
    left, right = opt.state[p]["GG"]
    torch.testing.assert_close(left, 0.2 * g @ g.T)
    torch.testing.assert_close(right, 0.2 * g.T @ g)
    q_left = opt.state[p]["Q"][0]
    evals = torch.linalg.eigvalsh(left).flip(0)
    torch.testing.assert_close(q_left.T @ left @ q_left, torch.diag(evals), rtol=0, atol=1e-12)


def test_weight_decay_is_torch_adamws_from_the_first_step():
    """With zero gradients the direction is 0 (m = 0), so only the decay acts: p_t = (1 - lr wd)^t p_0."""
    p = torch.nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
    start = p.detach().clone()
    opt = ro.Optimizer([p], ro.soap(lr=0.1, weight_decay=0.5))
    for _ in range(7):
        p.grad = torch.zeros_like(p)
        opt.step()
    torch.testing.assert_close(p.detach(), start * (1 - 0.1 * 0.5) ** 7, rtol=1e-12, atol=1e-15)


def test_state_dict_round_trip_resumes_exactly(tmp_path):
    shapes = [(5, 4), (3,)]
    gen = torch.Generator().manual_seed(3)
    grads = [[torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes] for _ in range(24)]

    def fresh():
        g = torch.Generator().manual_seed(4)
        ps = [torch.nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64)) for s in shapes]
        return ps, ro.Optimizer(ps, ro.soap(lr=0.05, precondition_frequency=4))

    def steps(ps, opt, gs):
        for g in gs:
            for p, gi in zip(ps, g):
                p.grad = gi.clone()
            opt.step()

    ps, opt = fresh()
    steps(ps, opt, grads)
    ps2, opt2 = fresh()
    steps(ps2, opt2, grads[:10])
    torch.save({"p": [p.detach() for p in ps2], "opt": opt2.state_dict()}, tmp_path / "soap.pt")
    ck = torch.load(tmp_path / "soap.pt", weights_only=True)
    ps3, opt3 = fresh()
    with torch.no_grad():
        for p, v in zip(ps3, ck["p"]):
            p.copy_(v)
    opt3.load_state_dict(ck["opt"])
    steps(ps3, opt3, grads[10:])
    assert all(torch.equal(a, b) for a, b in zip(ps3, ps))


def test_named_and_checked():
    assert "soap" in ro.names(matrix=True)
    assert ro.get("soap", lr=0.01).hyperparams["precondition_frequency"] == 10
    with pytest.raises(ValueError, match=r"precondition_frequency must be an integer in \[1, inf"):
        ro.soap(precondition_frequency=0)
    with pytest.raises(ValueError, match=r"shampoo_beta must be in \[0, 1\), got 1.5"):
        ro.soap(shampoo_beta=1.5)
    with pytest.raises(ValueError, match="scale_by_soap is not an elementwise primitive"):
        p = torch.nn.Parameter(torch.zeros(2, 2))
        opt = ro.Optimizer([p], ro.soap(), fused=True)
        p.grad = torch.ones(2, 2)
        opt.step()


def test_the_torch_style_class_is_the_reference_with_its_signature():
    """ravine.optim.SOAP takes pytorch_optimizer.SOAP's arguments; weight decay 0 for exact parity."""
    gen = torch.Generator().manual_seed(5)
    init = [torch.randn(s, generator=gen, dtype=torch.float64) for s in [(5, 4), (4,)]]
    ours = [torch.nn.Parameter(x.clone()) for x in init]
    theirs = [torch.nn.Parameter(x.clone()) for x in init]
    kw = dict(lr=1e-2, betas=(0.9, 0.95), weight_decay=0.0, precondition_frequency=1000, precondition_1d=True)
    opt = ro.SOAP(ours, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = pytorch_optimizer.SOAP(theirs, **kw)
    noise = torch.Generator().manual_seed(6)
    for _ in range(30):
        n = [torch.randn(p.shape, generator=noise, dtype=torch.float64) for p in ours]
        for ps, o in ((ours, opt), (theirs, ref)):
            for p, ni in zip(ps, n):
                p.grad = p.detach() + ni
            o.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="betas must be a pair"):
        ro.SOAP(ours, betas=0.9)
