"""Muon (ravine.optim.muon) against ``torch.optim.Muon``, the SVD, and the reference code's split.

Parity: 100 steps of an MLP on scikit-learn's digits in float64 (its two weight matrices, in two
param groups, with a torch LR scheduler) for each ``adjust_lr_fn``: the Newton-Schulz iteration runs
in bfloat16 as torch's, on the same float64 input, so the updates agree to 1e-10 (float64 rounding
of the weight decay's place in the sum). The iteration itself in float64: the classic cubic
coefficients converge to ``U V^T`` of the SVD. The parameter split and the combined optimizer:
against ``torch.optim.Muon`` + ``torch.optim.AdamW`` on the same groups.
"""

import io

import pytest
import torch

import ravine.optim as ro
from _parity import STEPS, assert_models_close, make_model
from ravine.optim.muon import NS_COEFFICIENTS, newton_schulz


def _step(model, opt, X, y, idx):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
    opt.step()


def matrices(model, lr):
    w1, w2 = model[0].weight, model[2].weight
    return [{"params": [w1]}, {"params": [w2], "lr": lr * 0.5, "weight_decay": 0.0}]


def train_matrices(model, opt, digits, steps=STEPS):
    # biases stay where they are: Muon takes matrices only
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=25, gamma=0.5)
    X, y = digits
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(X), (64,), generator=g)
        _step(model, opt, X, y, idx)
        sched.step()
    return model


@pytest.mark.parametrize("adjust_lr_fn", [None, "original", "match_rms_adamw"])
@pytest.mark.parametrize("nesterov", [True, False])
def test_matches_torch_muon(digits, adjust_lr_fn, nesterov):
    kw = dict(lr=0.02, weight_decay=0.1, nesterov=nesterov, adjust_lr_fn=adjust_lr_fn)
    ref = make_model()
    ref_opt = torch.optim.Muon(matrices(ref, kw["lr"]), **kw)
    train_matrices(ref, ref_opt, digits)
    ours = make_model()
    opt = ro.Muon(matrices(ours, kw["lr"]), **kw)
    train_matrices(ours, opt, digits)
    assert_models_close(ref, ours)
    assert (make_model()[0].weight - ours[0].weight).abs().max() > 1e-2
    for a, b in ((ref[0].weight, ours[0].weight), (ref[2].weight, ours[2].weight)):
        assert torch.allclose(ref_opt.state[a]["momentum_buffer"], opt.state[b]["momentum_buffer"], atol=1e-10)


@pytest.mark.parametrize("nesterov", [True, False])
def test_without_momentum_matches_torch_muon(digits, nesterov):
    # momentum=0: the update is NS(g) with or without Nesterov, as torch's (no momentum buffer here)
    ref, ours = make_model(), make_model()
    train_matrices(ref, torch.optim.Muon(matrices(ref, 0.02), lr=0.02, momentum=0.0, nesterov=nesterov), digits, 20)
    opt = ro.Muon(matrices(ours, 0.02), lr=0.02, momentum=0.0, nesterov=nesterov)
    train_matrices(ours, opt, digits, 20)
    assert_models_close(ref, ours)
    assert "momentum_buffer" not in opt.state[ours[0].weight]


def test_adjust_lr_none_means_no_adjustment_in_the_named_optimizer():
    # muon(adjust_lr=None) leaves the orthogonalized update as it is; torch's adjust_lr_fn=None is
    # "original" (the class Muon keeps torch's meaning: tested above)
    g = torch.randn(8, 2, dtype=torch.float64)
    p = torch.zeros(8, 2, dtype=torch.float64)
    out = {}
    for adjust in (None, "original", "match_rms_adamw"):
        t = ro.muon(lr=1.0, momentum=0.0, nesterov=False, weight_decay=0.0, adjust_lr=adjust, ns_dtype=None)
        (u,), _ = t.update([g.clone()], t.init([p]), [p])
        out[adjust] = u
    assert torch.allclose(out["original"], out[None] * 2.0)  # sqrt(max(1, 8 / 2))
    assert torch.allclose(out["match_rms_adamw"], out[None] * 0.2 * 8**0.5)


def test_newton_schulz_in_float64_converges_to_the_polar_factor():
    # the classic cubic iteration (a, b, c) = (1.5, -0.5, 0) converges to U V^T of the SVD
    torch.manual_seed(0)
    for shape in [(6, 4), (4, 6)]:
        x = torch.randn(shape, dtype=torch.float64)
        u, _, vh = torch.linalg.svd(x, full_matrices=False)
        t = ro.orthogonalize(ns_steps=60, ns_coefficients=(1.5, -0.5, 0.0), ns_dtype=torch.float64)
        (o,), _ = t.update([x.clone()], t.init([x]))
        assert torch.allclose(o, u @ vh, atol=1e-12), shape
    # the quintic coefficients do not converge: singular values land near 1, not on it
    x = torch.randn(32, 16, dtype=torch.float64)
    o = newton_schulz(x, 5, NS_COEFFICIENTS, dtype=torch.float64)
    s = torch.linalg.svdvals(o)
    assert 0.6 < s.min() and s.max() < 1.25 and (s - 1).abs().max() > 1e-3


def test_momentum_forms_differ_only_by_a_scale_that_normalisation_removes():
    # heavy ball b = sum of gradients, EMA b = (1 - mu) * that: after Newton-Schulz (which divides
    # by the Frobenius norm first) the updates are equal
    torch.manual_seed(0)
    p = torch.zeros(5, 3, dtype=torch.float64)
    runs = {}
    for form in ("ema", "heavy_ball"):
        t = ro.muon(lr=0.1, weight_decay=0.0, momentum_form=form, ns_dtype=torch.float64)
        s = t.init([p])
        torch.manual_seed(1)
        us = []
        for _ in range(5):
            (u,), s = t.update([torch.randn(5, 3, dtype=torch.float64)], s, [p])
            us.append(u)
        runs[form] = (us, s["parts"][0]["momentum_buffer"][0])
    for a, b in zip(runs["ema"][0], runs["heavy_ball"][0]):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)
    assert torch.allclose(runs["heavy_ball"][1] * (1 - 0.95), runs["ema"][1], rtol=1e-10)


def test_non_matrix_parameters_are_refused_by_name():
    bias = torch.nn.Parameter(torch.zeros(4))
    with pytest.raises(ValueError, match=r"Muon takes 2D parameters only, got shape \(4,\)"):
        ro.Muon([bias])
    w = torch.nn.Parameter(torch.zeros(4, 4))
    opt = ro.Muon([w])
    with pytest.raises(ValueError, match=r"got shape \(4,\)"):
        opt.add_param_group({"params": [bias]})
    opt = ro.Optimizer([bias], ro.muon())
    bias.grad = torch.ones(4)
    with pytest.raises(ValueError, match=r"2D weight matrices only, got a tensor of shape \(4,\)"):
        opt.step()


class TinyGPT(torch.nn.Module):
    def __init__(self, tie=False):
        super().__init__()
        self.wte = torch.nn.Embedding(11, 8)
        self.blocks = torch.nn.Sequential(
            torch.nn.LayerNorm(8), torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 8)
        )
        self.ln_f = torch.nn.LayerNorm(8)
        self.lm_head = torch.nn.Linear(8, 11, bias=False)
        if tie:
            self.lm_head.weight = self.wte.weight

    def forward(self, idx):
        x = self.wte(idx)
        return self.lm_head(self.ln_f(x + self.blocks(x)))


@pytest.mark.parametrize("tie", [False, True])
def test_param_groups_put_hidden_matrices_in_muon(tie):
    model = TinyGPT(tie).double()
    groups = ro.muon_param_groups(model, lr=0.02, adamw_lr=3e-4)
    muon_group, adamw_group = groups
    assert muon_group["use_muon"] and not adamw_group["use_muon"]
    assert muon_group["param_names"] == ["blocks.1.weight", "blocks.3.weight"]
    expected = {
        "wte.weight",
        "blocks.0.weight",
        "blocks.0.bias",
        "blocks.1.bias",
        "blocks.3.bias",
        "ln_f.weight",
        "ln_f.bias",
    } | (set() if tie else {"lm_head.weight"})
    assert set(adamw_group["param_names"]) == expected
    n = sum(len(g["params"]) for g in groups)
    assert n == len(list(model.parameters()))  # every parameter once, tied ones included
    assert (muon_group["lr"], adamw_group["lr"]) == (0.02, 3e-4)
    # the head by name
    groups = ro.muon_param_groups(model, head="blocks.3")
    assert groups[0]["param_names"] == ["blocks.1.weight"] + ([] if tie else ["lm_head.weight"])
    with pytest.raises(ValueError, match="head 'nope' is not a submodule"):
        ro.muon_param_groups(model, head="nope")


def test_muon_with_adamw_matches_torch_muon_plus_adamw():
    torch.manual_seed(0)
    data = torch.randint(0, 11, (16, 6))
    ref, ours = TinyGPT().double(), TinyGPT().double()
    ours.load_state_dict(ref.state_dict())
    g_ref = ro.muon_param_groups(ref, lr=0.02, weight_decay=0.1, adamw_lr=3e-3, adamw_weight_decay=0.01)
    ref_muon = torch.optim.Muon(g_ref[0]["params"], lr=0.02, weight_decay=0.1)
    ref_adamw = torch.optim.AdamW(g_ref[1]["params"], lr=3e-3, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.01)
    opt = ro.MuonWithAdamW(ours, lr=0.02, weight_decay=0.1, adamw_lr=3e-3, adamw_weight_decay=0.01, fused=None)
    for model, step in ((ref, lambda: (ref_muon.step(), ref_adamw.step())), (ours, opt.step)):
        for _ in range(30):
            model.zero_grad()
            logits = model(data[:, :-1])
            torch.nn.functional.cross_entropy(logits.reshape(-1, 11), data[:, 1:].reshape(-1)).backward()
            step()
    for (name, a), b in zip(ref.named_parameters(), ours.parameters()):
        assert torch.allclose(a, b, rtol=0, atol=1e-10), name
    assert (TinyGPT().double().blocks[1].weight - ours.blocks[1].weight).abs().max() > 1e-2


def test_fused_flat_runs_the_newton_schulz_step_on_the_matrix_view():
    """The flat path hands orthogonalize each parameter's 2D view (tests/test_optim_muon_fused.py
    has the rest): the unfused numbers, bit for bit."""
    torch.manual_seed(0)
    start, grad = torch.randn(4, 3), torch.randn(4, 3)
    ws = [torch.nn.Parameter(start.clone()) for _ in range(2)]
    for w, fused in zip(ws, (False, "flat")):
        w.grad = grad.clone()
        ro.Muon([w], fused=fused).step()
    assert torch.equal(ws[0], ws[1])


def test_loads_a_torch_muon_checkpoint_and_continues_as_torch(digits):
    X, y = digits
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, len(X), (64,), generator=g) for _ in range(30)]
    ref = make_model()
    ref_opt = torch.optim.Muon(matrices(ref, 0.02), lr=0.02)
    for idx in batches[:15]:
        _step(ref, ref_opt, X, y, idx)
    buf = io.BytesIO()
    torch.save(ref_opt.state_dict(), buf)
    buf.seek(0)
    ours = make_model()
    ours.load_state_dict(ref.state_dict())
    opt = ro.Muon(matrices(ours, 0.02), lr=0.02)
    opt.load_state_dict(torch.load(buf, weights_only=True))
    for idx in batches[15:]:
        _step(ref, ref_opt, X, y, idx)
        _step(ours, opt, X, y, idx)
    assert_models_close(ref, ours)
    # and ours round-trips through its own state_dict
    again = ro.Muon(matrices(make_model(), 0.02), lr=0.02)
    again.load_state_dict(opt.state_dict())
    assert again.state_dict()["state"][0]["momentum_buffer"].equal(opt.state_dict()["state"][0]["momentum_buffer"])


def test_named_and_errors():
    assert "muon" in ro.names(matrix=True) and "muon" not in ro.names()
    assert ro.get("muon", lr=0.02, adjust_lr="match_rms_adamw").hyperparams["adjust_lr"] == "match_rms_adamw"
    with pytest.raises(ValueError, match="muon: adjust_lr must be one of None, 'original', 'match_rms_adamw', got 'x'"):
        ro.muon(adjust_lr="x")
    with pytest.raises(ValueError, match=r"muon: ns_steps must be an integer in \[1, 100\), got 0"):
        ro.muon(ns_steps=0)
    with pytest.raises(ValueError, match="ns_coefficients must be three numbers"):
        ro.muon(ns_coefficients=(1.0, 2.0))
    with pytest.raises(ValueError, match="momentum_form must be one of"):
        ro.muon(momentum_form="nesterov")


def test_clipping_and_a_ravine_schedule_through_optimizer(digits):
    # Optimizer(chain(clip_by_global_norm, muon(schedule))) against clip_grad_norm_ + torch's Muon +
    # LambdaLR holding the same schedule (the weight decay follows the scheduled lr in both)
    import ravine.schedules as S

    schedule = S.get("warmup_cosine", peak=0.02, warmup_steps=10, total_steps=60)
    X, y = digits
    ref, ours = make_model(), make_model()
    ref_params = [ref[0].weight, ref[2].weight]
    ref_opt = torch.optim.Muon(ref_params, lr=0.02, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(ref_opt, lambda t: schedule(t) / 0.02)
    opt = ro.Optimizer([ours[0].weight, ours[2].weight], ro.chain(ro.clip_by_global_norm(0.5), ro.muon(schedule)))
    g = torch.Generator().manual_seed(0)
    clipped = 0
    for _ in range(60):
        idx = torch.randint(0, len(X), (64,), generator=g)
        ref_opt.zero_grad()
        ref.zero_grad()
        torch.nn.functional.cross_entropy(ref(X[idx]), y[idx]).backward()
        torch.nn.utils.clip_grad_norm_(ref_params, 0.5)
        ref_opt.step()
        sched.step()
        _step(ours, opt, X, y, idx)
        clipped += opt.stats["clipped"]
    assert 0 < clipped < 60
    assert_models_close(ref, ours)
