"""Lion (ravine.optim.lion) against pytorch-optimizer's ``Lion`` and the paper's first step.

The reference: pytorch-optimizer's ``Lion`` (the ``test`` extra), 100 steps of an MLP on
scikit-learn's digits in float64 with two param groups and a torch LR scheduler; parameters and
state must agree to 1e-10 (the order of the decay and the signed step differs by float64 rounding
only), on the unfused, flat and compiled paths.
"""

import io

import pytest
import torch

import ravine.optim as ro
from _parity import assert_models_close, groups, make_model, needs_compiler, train

pytorch_optimizer = pytest.importorskip("pytorch_optimizer")


@pytest.mark.parametrize("fused", [False, "flat"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.5])
@pytest.mark.parametrize("betas", [(0.9, 0.99), (0.95, 0.98)])
def test_matches_pytorch_optimizer_lion(digits, weight_decay, betas, fused):
    kw = dict(lr=3e-3, betas=betas, weight_decay=weight_decay)
    ref = make_model()
    train(ref, pytorch_optimizer.Lion(groups(ref, kw["lr"]), **kw), digits)
    ours = make_model()
    opt = ro.Lion(groups(ours, kw["lr"]), **kw, fused=fused)
    train(ours, opt, digits)
    assert_models_close(ref, ours)
    assert any((a - b).abs().max() > 1e-2 for a, b in zip(make_model().parameters(), ours.parameters()))
    assert opt.state[next(ours.parameters())]["exp_avg"].abs().max() > 0


def test_maximize_matches_pytorch_optimizer(digits):
    ref, ours = make_model(), make_model()
    train(ref, pytorch_optimizer.Lion(groups(ref, 1e-3), lr=1e-3, maximize=True), digits, steps=20)
    train(ours, ro.Lion(groups(ours, 1e-3), lr=1e-3, maximize=True), digits, steps=20)
    assert_models_close(ref, ours)


@needs_compiler
def test_compiled_path_matches_pytorch_optimizer(digits):
    ref, ours = make_model(), make_model()
    train(ref, pytorch_optimizer.Lion(groups(ref, 3e-3), lr=3e-3, weight_decay=0.5), digits, steps=30)
    opt = ro.Lion(groups(ours, 3e-3), lr=3e-3, weight_decay=0.5, fused="compile")
    train(ours, opt, digits, steps=30)
    assert_models_close(ref, ours)


def test_first_step_is_the_sign_of_the_gradient():
    # m starts at 0, so c = (1 - b1) g and the first update is -lr * (sign(g) + wd * p) exactly
    p = torch.tensor([[1.5, -2.0, 0.25]], dtype=torch.float64)
    g = torch.tensor([[0.3, -1e-6, 0.0]], dtype=torch.float64)
    t = ro.lion(lr=0.1, weight_decay=0.2)
    state = t.init([p])
    (u,), state = t.update([g.clone()], state, [p])
    assert torch.equal(u, -0.1 * (torch.sign(g) + 0.2 * p))
    # and the kept momentum is m = (1 - b2) g
    assert torch.allclose(ro.lion().init([p])["parts"][0]["exp_avg"][0], torch.zeros_like(p))
    assert torch.allclose(state["parts"][0]["exp_avg"][0], 0.01 * g)


def _step(model, opt, X, y, idx):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
    opt.step()


def test_state_dict_round_trip_continues_bit_for_bit(digits):
    X, y = digits
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, len(X), (64,), generator=g) for _ in range(40)]
    kw = dict(lr=3e-3, weight_decay=0.5)
    whole = make_model()
    opt = ro.Lion(groups(whole, 3e-3), **kw)
    for idx in batches:
        _step(whole, opt, X, y, idx)
    first = make_model()
    opt1 = ro.Lion(groups(first, 3e-3), **kw)
    for idx in batches[:20]:
        _step(first, opt1, X, y, idx)
    buf = io.BytesIO()
    torch.save(opt1.state_dict(), buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    assert set(saved["state"][0]) == {"exp_avg", "step"}
    second = make_model()
    second.load_state_dict(first.state_dict())
    opt2 = ro.Lion(groups(second, 3e-3), **kw)
    opt2.load_state_dict(saved)
    for idx in batches[20:]:
        _step(second, opt2, X, y, idx)
    assert_models_close(whole, second, atol=0)


def test_batched_rows_step_independently():
    # a (B, 2) batch of points with a learning rate and betas per row: each row as if stepped alone
    # (tensor betas take the general path, numbers the one without a temporary: they agree)
    lr = torch.tensor([[0.1], [0.01]], dtype=torch.float64)
    b1 = torch.tensor([[0.9], [0.5]], dtype=torch.float64)
    p = torch.tensor([[1.0, -1.0], [2.0, 3.0]], dtype=torch.float64)
    t = ro.lion(lr=lr, b1=b1)
    state = t.init([p])
    alone = [ro.lion(lr=float(lr[r, 0]), b1=float(b1[r, 0])) for r in range(2)]
    states = [a.init([p[r : r + 1]]) for r, a in enumerate(alone)]
    torch.manual_seed(0)
    for _ in range(5):
        g = torch.randn(2, 2, dtype=torch.float64)
        (u,), state = t.update([g.clone()], state, [p])
        for r, a in enumerate(alone):
            (v,), states[r] = a.update([g[r : r + 1].clone()], states[r], [p[r : r + 1]])
            assert torch.equal(u[r : r + 1], v)
    assert state["parts"][0]["exp_avg"][0].abs().min() > 0


def test_named_and_errors():
    assert "lion" in ro.names()
    t = ro.get("lion", lr=0.01, b1=0.8)
    assert t.hyperparams["b1"] == 0.8
    with pytest.raises(ValueError, match=r"b1 must be in \[0, 1\), got 1.5"):
        ro.lion(b1=1.5)
    with pytest.raises(ValueError, match="betas must be a pair"):
        ro.Lion([torch.zeros(2, requires_grad=True)], betas=0.9)
    with pytest.raises(ValueError, match=r"betas\[1\] must be in \[0, 1\)"):
        ro.Lion([torch.zeros(2, requires_grad=True)], betas=(0.9, 1.0))


def test_clipping_and_a_ravine_schedule_through_optimizer(digits):
    # Optimizer(chain(clip_by_global_norm, lion(schedule))) against clip_grad_norm_ + the reference
    # Lion + torch's LambdaLR holding the same schedule
    import ravine.schedules as S

    schedule = S.get("warmup_cosine", peak=3e-3, warmup_steps=10, total_steps=60)
    X, y = digits
    ref, ours = make_model(), make_model()
    ref_opt = pytorch_optimizer.Lion(ref.parameters(), lr=3e-3, weight_decay=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(ref_opt, lambda t: schedule(t) / 3e-3)
    opt = ro.Optimizer(ours.parameters(), ro.chain(ro.clip_by_global_norm(0.5), ro.lion(schedule, weight_decay=0.5)))
    g = torch.Generator().manual_seed(0)
    clipped = 0
    for _ in range(60):
        idx = torch.randint(0, len(X), (64,), generator=g)
        ref_opt.zero_grad()
        torch.nn.functional.cross_entropy(ref(X[idx]), y[idx]).backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
        ref_opt.step()
        sched.step()
        _step(ours, opt, X, y, idx)
        clipped += opt.stats["clipped"]
    assert 0 < clipped < 60  # the clip acted on some steps, not all
    assert_models_close(ref, ours)
