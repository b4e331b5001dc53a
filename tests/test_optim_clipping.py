"""Global-norm clipping through ``ravine.optim.Optimizer`` against ``torch.nn.utils.clip_grad_norm_``.

nanoGPT's setup: two param groups (weights decay, biases and norm weights do not) with different
hyperparameters, and one clip over *all* parameters before the optimizer step. Oracle:
``clip_grad_norm_(model.parameters())`` then ``torch.optim.AdamW`` / ``SGD`` (for-loop
implementations), in float64, so the paths must agree to rounding.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch

import ravine.optim as ro

STEPS = 150
MAX_NORM = 0.05  # well below the gradient norm of this model: most steps clip

slow = pytest.mark.skipif(
    not os.environ.get("RAVINE_SLOW_TESTS"), reason="compiles with inductor (slow); set RAVINE_SLOW_TESTS=1"
)
needs_compiler = pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None and not torch.cuda.is_available(),
    reason="torch.compile on CPU needs a C++ compiler",
)


def make_model():
    torch.manual_seed(3)
    return torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4)
    ).double()


def batches():
    g = torch.Generator().manual_seed(5)
    for _ in range(STEPS):
        yield torch.randn(32, 8, generator=g, dtype=torch.float64), torch.randint(0, 4, (32,), generator=g)


def groups(model, kind):
    """Decay (matrices) / no decay (biases, LayerNorm), nanoGPT style, with different settings."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    nodecay = [p for p in model.parameters() if p.dim() < 2]
    if kind == "adamw":
        return [
            {"params": decay, "weight_decay": 0.1},
            {"params": nodecay, "weight_decay": 0.0, "lr": 3e-3, "betas": (0.8, 0.95)},
        ]
    return [{"params": decay, "weight_decay": 1e-3}, {"params": nodecay, "weight_decay": 0.0, "lr": 0.02}]


def torch_optimizer(params, kind):
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, foreach=False)
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, foreach=False)


def ravine_chain(kind, per_group=False):
    if kind == "adamw":
        inner = ro.torch_adamw(1e-2, betas=(0.9, 0.99), eps=1e-8)
    else:
        inner = ro.torch_sgd(0.05, momentum=0.9)
    return ro.chain(ro.clip_by_global_norm(MAX_NORM, per_group=per_group), inner)


def loss_of(model, X, y):
    return torch.nn.functional.cross_entropy(model(X), y)


def run_torch(kind):
    model = make_model()
    opt = torch_optimizer(groups(model, kind), kind)
    norms, clipped_norms = [], []
    for X, y in batches():
        opt.zero_grad()
        loss_of(model, X, y).backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM, foreach=False)))
        clipped = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        clipped_norms.append(float(torch.linalg.vector_norm(clipped)))
        opt.step()
    return model, norms, clipped_norms


def run_ravine(kind, fused, per_group=False):
    model = make_model()
    opt = ro.Optimizer(groups(model, kind), ravine_chain(kind, per_group), fused=fused)
    norms, clipped_norms = [], []
    for X, y in batches():
        opt.zero_grad()
        loss_of(model, X, y).backward()
        opt.step()
        norms.append(opt.stats["grad_norm"])
        clipped_norms.append(opt.stats["clipped_norm"])
        # every group reports the same global norm
        assert {g["grad_norm"] for g in opt.stats["groups"]} == {opt.stats["grad_norm"]}
    return model, norms, clipped_norms


def assert_same(kind, fused, rtol):
    ref, ref_norms, ref_clipped = run_torch(kind)
    model, norms, clipped = run_ravine(kind, fused)
    assert sum(n > MAX_NORM for n in ref_norms) > STEPS // 2  # the clip is exercised
    torch.testing.assert_close(torch.tensor(norms), torch.tensor(ref_norms), rtol=rtol, atol=0)
    torch.testing.assert_close(torch.tensor(clipped), torch.tensor(ref_clipped), rtol=max(rtol, 1e-12), atol=0)
    for (name, a), b in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(
            a.detach(), b.detach(), rtol=rtol, atol=rtol * 1e-3, msg=lambda m, n=name: f"{n}: {m}"
        )


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
@pytest.mark.parametrize("fused", [False, "flat"])
def test_clip_spans_all_param_groups_like_clip_grad_norm(kind, fused):
    assert_same(kind, fused, rtol=1e-10)


@slow
@needs_compiler
@pytest.mark.parametrize("nonfinite", ["skip", "apply"])
def test_compiled_clip_spans_all_param_groups_like_clip_grad_norm(nonfinite):
    ref, ref_norms, _ = run_torch("adamw")
    model = make_model()
    opt = ro.Optimizer(groups(model, "adamw"), ravine_chain("adamw"), fused="compile", nonfinite=nonfinite)
    norms = []
    for X, y in batches():
        opt.zero_grad()
        loss_of(model, X, y).backward()
        opt.step()
        norms.append(opt.stats["grad_norm"])
    torch.testing.assert_close(torch.tensor(norms), torch.tensor(ref_norms), rtol=1e-9, atol=0)
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-8, atol=1e-11)


def test_per_group_clips_each_group_by_its_own_norm():
    """``per_group=True`` is the old behaviour: each group's norm is torch's clip over that group."""
    model = make_model()
    ref = make_model()
    opt = ro.Optimizer(groups(model, "sgd"), ravine_chain("sgd", per_group=True))
    ref_groups = groups(ref, "sgd")
    ref_opt = torch_optimizer(ref_groups, "sgd")
    for X, y in batches():
        for m, o in ((model, opt), (ref, ref_opt)):
            o.zero_grad()
            loss_of(m, X, y).backward()
        for g in ref_groups:
            torch.nn.utils.clip_grad_norm_(g["params"], MAX_NORM, foreach=False)
        opt.step()
        ref_opt.step()
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-10, atol=1e-13)
    # ... and it is not what clip_grad_norm_ over all parameters gives
    all_groups, _, _ = run_torch("sgd")
    assert any(not torch.allclose(a, b, rtol=1e-6) for a, b in zip(model.parameters(), all_groups.parameters()))


def test_a_global_clip_after_other_transforms_needs_one_group():
    model = make_model()
    late = ro.chain(ro.scale(2.0), ro.clip_by_global_norm(1.0), ro.sgd(0.1))
    with pytest.raises(ValueError, match="must come first in the chain"):
        ro.Optimizer(groups(model, "sgd"), late)
    ro.Optimizer(model.parameters(), late)  # one group: its norm is the global one
    per_group = ro.chain(ro.scale(2.0), ro.clip_by_global_norm(1.0, per_group=True), ro.sgd(0.1))
    ro.Optimizer(groups(model, "sgd"), per_group)


def test_a_chain_used_directly_clips_its_own_list():
    """Outside the optimizer (the 2D simulator's use), the norm is that of the list updated."""
    g = [torch.tensor([3.0, 4.0], dtype=torch.float64), torch.tensor([12.0], dtype=torch.float64)]
    t = ro.clip_by_global_norm(1.0)
    p = [x.clone().requires_grad_() for x in g]
    for x, y in zip(p, g):
        x.grad = y.clone()
    expected = torch.nn.utils.clip_grad_norm_(p, 1.0)
    updates, state = t.update([x.clone() for x in g], t.init(g))
    assert float(state["norm"]) == pytest.approx(float(expected), rel=1e-15)
    for u, x in zip(updates, p):
        torch.testing.assert_close(u, x.grad, rtol=0, atol=0)
    assert float(state["clipped_norm"]) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("fused", [False, "flat"])
def test_a_global_norm_that_overflows_skips_the_step(fused):
    """Every gradient finite, but their global norm overflows float32 (two entries of 1.5e19 in two
    groups): the step is skipped on every path, as the compiled one does, and says why."""
    model = make_model().float()
    opt = ro.Optimizer(groups(model, "sgd"), ravine_chain("sgd"), fused=fused)
    before = [p.detach().clone() for p in model.parameters()]
    X, y = next(batches())
    loss_of(model, X.float(), y).backward()
    model[0].weight.grad[0, 0] = 1.5e19
    model[0].bias.grad[0] = 1.5e19
    assert all(torch.linalg.vector_norm(p.grad).isfinite() for p in model.parameters())
    with pytest.warns(RuntimeWarning, match="skipped optimizer step: the global gradient norm is not finite"):
        opt.step()
    assert opt.skipped_steps == 1 and opt.stats == {"groups": []}
    assert all(torch.equal(p.detach(), b) for p, b in zip(model.parameters(), before))
