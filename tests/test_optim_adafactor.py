"""Adafactor (ravine.optim.adafactor) against ``torch.optim.Adafactor``.

100 steps of an MLP on scikit-learn's digits in float64 with two param groups (matrices, factored;
biases, not) and a torch LR scheduler; parameters and state (torch's ``row_var``, ``col_var``,
``variance``) must agree to 1e-10. The chain multiplies the per-tensor factors (clip, weight RMS,
relative step) one after the other where torch multiplies their product once: float rounding only.
In float32 the tolerance is 1e-5 relative.
"""

import io

import pytest
import torch

import ravine.optim as ro
from _parity import STEPS, assert_models_close, groups, make_model, train


def _step(model, opt, X, y, idx):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
    opt.step()


@pytest.mark.parametrize(
    "kw",
    [
        dict(lr=1e-2),
        dict(lr=0.05, weight_decay=0.1),
        dict(lr=0.05, beta2_decay=-0.5, eps=(1e-20, 1e-2), d=2.0),
        dict(lr=1e-2, maximize=True),
    ],
)
def test_matches_torch_adafactor(digits, kw):
    ref = make_model()
    ref_opt = torch.optim.Adafactor(groups(ref, kw["lr"]), **kw)
    train(ref, ref_opt, digits)
    ours = make_model()
    opt = ro.Adafactor(groups(ours, kw["lr"]), **kw)
    train(ours, opt, digits)
    assert_models_close(ref, ours)
    assert any((a - b).abs().max() > 1e-2 for a, b in zip(make_model().parameters(), ours.parameters()))
    for a, b in zip(ref.parameters(), ours.parameters()):
        s1, s2 = ref_opt.state[a], opt.state[b]
        assert int(s1["step"]) == s2["step"] == STEPS
        for key in ("row_var", "col_var", "variance"):
            if s1.get(key) is not None:
                assert torch.allclose(s1[key], s2[key], rtol=1e-9, atol=0), key
            else:
                assert s2[key].numel() == 0, key


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_factored_over_the_last_two_dims_of_any_tensor(dtype, rtol):
    # a 3D and a 4D tensor (factored along their last two dims), a vector, a scalar, and a matrix
    # of zeros (its step is eps2-relative), through 30 steps with one gradient 30x larger
    torch.manual_seed(0)
    shapes = [(2, 3, 5), (2, 2, 3, 4), (7,), (), (3, 3)]
    init = [torch.randn(s, dtype=dtype) if i < 4 else torch.zeros(s, dtype=dtype) for i, s in enumerate(shapes)]
    a = [p.clone().requires_grad_() for p in init]
    b = [p.clone().requires_grad_() for p in init]
    oa = torch.optim.Adafactor(a, lr=0.1, weight_decay=0.05)
    ob = ro.Adafactor(b, lr=0.1, weight_decay=0.05)
    for i in range(30):
        for x, y in zip(a, b):
            g = torch.randn_like(x) * (30 if i == 7 else 1)
            x.grad, y.grad = g.clone(), g.clone()
        oa.step()
        ob.step()
    for x, y in zip(a, b):
        assert torch.allclose(x, y, rtol=rtol, atol=rtol), (x.shape, (x - y).abs().max().item())
    assert ob.state[b[0]]["row_var"].shape == (2, 3, 1) and ob.state[b[0]]["col_var"].shape == (2, 1, 5)


def test_first_step_closed_form():
    # t = 1: v = g^2 exactly, so U = g / |g| = sign(g) (RMS 1, not clipped at d = 1), and the step is
    # max(eps2, RMS(p)) * min(lr, 1) * sign(g) for a vector
    p = torch.tensor([3.0, -4.0, 0.0, 1.0], dtype=torch.float64)
    g = torch.tensor([0.5, -2.0, 1e-3, -1.0], dtype=torch.float64)
    t = ro.adafactor(lr=0.1)
    (u,), _ = t.update([g.clone()], t.init([p]), [p])
    rms = p.square().mean().sqrt()
    assert torch.allclose(u, -0.1 * rms * torch.sign(g), rtol=1e-14, atol=0)


def test_factored_estimate_is_rank_one_and_exact_for_rank_one_squares():
    # when g^2 is an outer product r c^T, the row/column means reconstruct it exactly: v_hat = g^2
    r = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    c = torch.tensor([0.5, 1.0, 4.0, 2.0], dtype=torch.float64)
    g = (torch.outer(r, c)).sqrt()
    t = ro.scale_by_factored_rms()
    (u,), _ = t.update([g.clone()], t.init([g]), [g])
    assert torch.allclose(u, torch.ones_like(g), rtol=1e-12)


def test_state_dict_round_trip_continues_bit_for_bit(digits):
    X, y = digits
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, len(X), (64,), generator=g) for _ in range(40)]
    whole = make_model()
    opt = ro.Adafactor(groups(whole, 0.05), lr=0.05, weight_decay=0.1)
    for idx in batches:
        _step(whole, opt, X, y, idx)
    first = make_model()
    opt1 = ro.Adafactor(groups(first, 0.05), lr=0.05, weight_decay=0.1)
    for idx in batches[:20]:
        _step(first, opt1, X, y, idx)
    buf = io.BytesIO()
    torch.save(opt1.state_dict(), buf)
    buf.seek(0)
    second = make_model()
    second.load_state_dict(first.state_dict())
    opt2 = ro.Adafactor(groups(second, 0.05), lr=0.05, weight_decay=0.1)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    for idx in batches[20:]:
        _step(second, opt2, X, y, idx)
    assert_models_close(whole, second, atol=0)


def test_not_elementwise_so_no_fused_path():
    w = torch.nn.Parameter(torch.randn(4, 3))
    w.grad = torch.randn(4, 3)
    with pytest.raises(ValueError, match="scale_by_factored_rms"):
        ro.Adafactor([w], fused="flat").step()
    before = w.detach().clone()
    ro.Adafactor([w], fused=None).step()  # None: runs unfused
    assert not torch.equal(before, w.detach())


def test_named_and_errors():
    assert "adafactor" in ro.names(matrix=True) and "adafactor" not in ro.names()
    assert ro.get("adafactor", lr=0.1, d=2.0).hyperparams["d"] == 2.0
    w = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match=r"beta2_decay must be in \(-inf, 0\], got 0.5"):
        ro.Adafactor(w, beta2_decay=0.5)
    with pytest.raises(ValueError, match=r"d must be in \[1, inf\), got 0.5"):
        ro.Adafactor(w, d=0.5)
    with pytest.raises(ValueError, match="eps must be a pair"):
        ro.Adafactor(w, eps=1e-3)
    with pytest.raises(ValueError, match=r"eps2 must be in \[0, inf\), got -1"):
        ro.Adafactor(w, eps=(None, -1.0))
