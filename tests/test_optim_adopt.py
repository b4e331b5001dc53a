"""ADOPT (ravine.optim.adopt) against pytorch-optimizer's ``ADOPT`` and the paper's first step.

The reference: pytorch-optimizer's ``ADOPT`` (the ``test`` extra), 100 steps of an MLP on
scikit-learn's digits in float64 with two param groups and a torch LR scheduler; parameters and
state must agree to 1e-10 (float64 rounding of the decay's place in the sum), on the unfused, flat
and compiled paths, with coupled and decoupled weight decay, with and without clipping.
"""

import io

import pytest
import torch

import ravine.optim as ro
from _parity import assert_models_close, groups, make_model, needs_compiler, train

pytorch_optimizer = pytest.importorskip("pytorch_optimizer")


def _step(model, opt, X, y, idx):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
    opt.step()


def reference(model, lr, weight_decay=0.0, decoupled=False, clip=True, betas=(0.9, 0.9999)):
    kw = {} if clip else {"clip_lambda": None}
    return pytorch_optimizer.ADOPT(
        groups(model, lr), lr=lr, betas=betas, weight_decay=weight_decay, weight_decouple=decoupled, **kw
    )


@pytest.mark.parametrize("fused", [False, "flat"])
@pytest.mark.parametrize(
    "weight_decay, decoupled, clip, betas",
    [
        (0.0, False, True, (0.9, 0.9999)),
        (0.1, False, True, (0.9, 0.999)),
        (0.1, True, True, (0.8, 0.99)),
        (0.0, False, False, (0.9, 0.9999)),
    ],
)
def test_matches_pytorch_optimizer_adopt(digits, weight_decay, decoupled, clip, betas, fused):
    ref = make_model()
    train(ref, reference(ref, 3e-3, weight_decay, decoupled, clip, betas), digits)
    ours = make_model()
    opt = ro.ADOPT(
        groups(ours, 3e-3),
        lr=3e-3,
        betas=betas,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled,
        clip_exponent=0.25 if clip else None,
        fused=fused,
    )
    train(ours, opt, digits)
    assert_models_close(ref, ours)
    assert any((a - b).abs().max() > 1e-2 for a, b in zip(make_model().parameters(), ours.parameters()))
    # the state under pytorch-optimizer's names, with its values
    ref_opt = reference(ref2 := make_model(), 3e-3, weight_decay, decoupled, clip, betas)
    train(ref2, ref_opt, digits)
    for a, b in zip(ref2.parameters(), ours.parameters()):
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.allclose(ref_opt.state[a][key], opt.state[b][key], rtol=1e-9, atol=1e-12), key


def test_clipping_is_what_makes_the_first_steps_safe():
    # a gradient 1e4 times larger than the first one: normalised by v_{t-1} = g_1^2 it is 1e4,
    # clipped to t^0.25 (t = 2: 2^0.25); without clipping the step is 1e4 times larger
    p = torch.zeros(3, dtype=torch.float64)
    g1 = torch.full((3,), 1e-3, dtype=torch.float64)
    g2 = torch.full((3,), 10.0, dtype=torch.float64)
    for clip, expected in [(0.25, 2**0.25), (None, 1e4)]:
        t = ro.adopt(lr=1.0, b1=0.0, clip_exponent=clip)
        s = t.init([p])
        (u1,), s = t.update([g1.clone()], s, [p])
        assert torch.equal(u1, torch.zeros(3, dtype=torch.float64))  # the first step does not move
        assert torch.equal(s["parts"][1]["exp_avg_sq"][0], g1 * g1)
        (u2,), s = t.update([g2.clone()], s, [p])
        assert torch.allclose(u2, torch.full((3,), -expected, dtype=torch.float64), rtol=1e-12)


@needs_compiler
def test_compiled_path_matches_pytorch_optimizer(digits):
    ref, ours = make_model(), make_model()
    train(ref, reference(ref, 3e-3, 0.1, True), digits, steps=30)
    opt = ro.ADOPT(groups(ours, 3e-3), lr=3e-3, weight_decay=0.1, decoupled_weight_decay=True, fused="compile")
    train(ours, opt, digits, steps=30)
    assert_models_close(ref, ours)


def test_state_dict_round_trip_continues_bit_for_bit(digits):
    X, y = digits
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, len(X), (64,), generator=g) for _ in range(40)]
    whole = make_model()
    opt = ro.ADOPT(groups(whole, 3e-3), lr=3e-3)
    for idx in batches:
        _step(whole, opt, X, y, idx)
    first = make_model()
    opt1 = ro.ADOPT(groups(first, 3e-3), lr=3e-3)
    for idx in batches[:20]:
        _step(first, opt1, X, y, idx)
    buf = io.BytesIO()
    torch.save(opt1.state_dict(), buf)
    buf.seek(0)
    second = make_model()
    second.load_state_dict(first.state_dict())
    opt2 = ro.ADOPT(groups(second, 3e-3), lr=3e-3, fused="flat")
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    for idx in batches[20:]:
        _step(second, opt2, X, y, idx)
    assert_models_close(whole, second, atol=1e-12)


def test_named_and_errors():
    assert "adopt" in ro.names()
    assert ro.get("adopt", lr=0.01, b2=0.99).hyperparams["b2"] == 0.99
    with pytest.raises(ValueError, match=r"clip_exponent must be in \[0, inf\), got -1"):
        ro.adopt(clip_exponent=-1.0)
    with pytest.raises(ValueError, match=r"eps must be in \[0, inf[)\]], got -1e-06"):
        ro.ADOPT([torch.zeros(2, requires_grad=True)], eps=-1e-6)


def test_branchless_rule_of_the_compiled_path_equals_the_eager_one():
    # the compiled path passes the step as a 0-dim tensor and takes the first-step rule without a
    # branch (v = lerp(v, g^2, 1), m kept, u = 0): run it eagerly against the Python-int path
    torch.manual_seed(0)
    p = [torch.randn(4, 3, dtype=torch.float64)]
    t = ro.scale_by_adopt(b1=0.8, b2=0.99)
    eager, branchless = t.init(p), t.init(p)
    for _ in range(6):
        g = torch.randn(4, 3, dtype=torch.float64) * 3
        (u1,), eager = t.update([g.clone()], eager, p)
        (u2,), branchless = t.update([g.clone()], {**branchless, "step": torch.tensor(branchless["step"])}, p)
        branchless["step"] = int(branchless["step"])
        assert torch.allclose(u1, u2, rtol=1e-14, atol=1e-15)
        assert torch.allclose(eager["exp_avg_sq"][0], branchless["exp_avg_sq"][0], rtol=1e-14)
