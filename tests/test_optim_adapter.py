"""The torch adapter: checkpoints, schedules, groups, non-finite gradients, AMP, torch tooling."""

import copy
import io
import warnings

import pytest
import torch

import ravine.optim as ro
from ravine.schedules import warmup_cosine


def model_and_data(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    X = torch.randn(64, 6)
    y = torch.randint(0, 3, (64,))
    return model, X, y


def train(model, opt, X, y, steps, sched=None):
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(X), y)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(loss.item())
    return losses


def clip_adamw(lr=warmup_cosine(3e-3, 10, 60)):
    return ro.chain(ro.clip_by_global_norm(0.5), ro.adamw(lr, weight_decay=0.1))


def test_clip_chain_equals_torch_clip_then_adamw():
    m1, X, y = model_and_data()
    m2, _, _ = model_and_data()
    o1 = torch.optim.AdamW(m1.parameters(), lr=3e-3, weight_decay=0.1)
    o2 = ro.Optimizer(m2.parameters(), ro.chain(ro.clip_by_global_norm(0.3), ro.adamw(3e-3, weight_decay=0.1)))
    norms = []
    for _ in range(40):
        for m, o in ((m1, o1), (m2, o2)):
            o.zero_grad()
            torch.nn.functional.cross_entropy(m(X), y).backward()
        norms.append(torch.nn.utils.clip_grad_norm_(m1.parameters(), 0.3).item())
        o1.step()
        o2.step()
        assert o2.stats["grad_norm"] == pytest.approx(norms[-1], rel=1e-6)
        assert o2.stats["clipped"] == (norms[-1] > 0.3)
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert any(n > 0.3 for n in norms) and any(n < 0.3 for n in norms)


def test_gradients_left_untouched():
    model, X, y = model_and_data()
    opt = ro.Optimizer(model.parameters(), clip_adamw())
    torch.nn.functional.cross_entropy(model(X), y).backward()
    before = [p.grad.clone() for p in model.parameters()]
    opt.step()
    assert all(torch.equal(a, p.grad) for a, p in zip(before, model.parameters()))


def test_state_dict_round_trip_is_bit_identical_with_schedule():
    """Resume from a checkpoint (through torch.save / torch.load(weights_only=True))."""
    model, X, y = model_and_data()
    opt = ro.Optimizer(model.parameters(), clip_adamw())
    train(model, opt, X, y, 60)
    reference = [p.detach().clone() for p in model.parameters()]

    model, X, y = model_and_data()
    opt = ro.Optimizer(model.parameters(), clip_adamw())
    train(model, opt, X, y, 25)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)

    model2, _, _ = model_and_data(seed=5)  # different init, overwritten by the checkpoint
    model2.load_state_dict(ckpt["model"])
    opt2 = ro.Optimizer(model2.parameters(), clip_adamw())
    opt2.load_state_dict(ckpt["opt"])
    train(model2, opt2, X, y, 35)
    for a, b in zip(reference, model2.parameters()):
        assert torch.equal(a, b)


def test_state_dict_uses_torch_format_and_loads_into_torch():
    """ravine.optim.Adam's checkpoint continues in torch.optim.Adam, and the other way round."""
    m1, X, y = model_and_data()
    o1 = ro.Adam(m1.parameters(), lr=1e-2)
    train(m1, o1, X, y, 10)
    sd = o1.state_dict()
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    m2, _, _ = model_and_data()
    m2.load_state_dict(m1.state_dict())
    o2 = torch.optim.Adam(m2.parameters(), lr=1e-2)
    o2.load_state_dict(copy.deepcopy(sd))  # state_dict() returns live tensors, as torch's does
    train(m1, o1, X, y, 10)
    train(m2, o2, X, y, 10)
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    # torch -> ravine
    m3, _, _ = model_and_data()
    m3.load_state_dict(m2.state_dict())
    o3 = ro.Adam(m3.parameters(), lr=1e-2)
    o3.load_state_dict(copy.deepcopy(o2.state_dict()))
    train(m2, o2, X, y, 10)
    train(m3, o3, X, y, 10)
    for a, b in zip(m2.parameters(), m3.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_ravine_schedule_writes_group_lr():
    model, X, y = model_and_data()
    sched = warmup_cosine(1e-2, 5, 20)
    opt = ro.Optimizer(model.parameters(), ro.adam(sched))
    seen = []
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
        seen.append(opt.param_groups[0]["lr"])
    assert seen == pytest.approx([sched(k) for k in range(20)])


def test_ravine_schedule_and_torch_scheduler_conflict_is_an_error():
    model, X, y = model_and_data()
    opt = ro.Optimizer(model.parameters(), ro.adam(warmup_cosine(1e-2, 5, 20)))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(X), y).backward()
    opt.step()
    sched.step()
    with pytest.raises(RuntimeError, match=r"group\['lr'\] is a ravine schedule, but something else"):
        opt.step()


def test_every_torch_lr_scheduler_drives_group_lr():
    model, X, y = model_and_data()
    opt = ro.AdamW(model.parameters(), lr=1e-2)  # torch's names: OneCycleLR cycles betas[0]
    ref = torch.optim.AdamW(model_and_data()[0].parameters(), lr=1e-2)
    for cls, kw in [(torch.optim.lr_scheduler.OneCycleLR, {"max_lr": 0.1, "total_steps": 30}),
                    (torch.optim.lr_scheduler.CosineAnnealingWarmRestarts, {"T_0": 7}),
                    (torch.optim.lr_scheduler.ReduceLROnPlateau, {"patience": 1})]:
        s1, s2 = cls(opt, **kw), cls(ref, **kw)
        for _ in range(12):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(X), y).backward()
            opt.step()
            if cls is torch.optim.lr_scheduler.ReduceLROnPlateau:
                s1.step(1.0)
                s2.step(1.0)
            else:
                s1.step()
                s2.step()
            assert opt.param_groups[0]["lr"] == pytest.approx(ref.param_groups[0]["lr"])


def test_param_groups_no_decay_and_unknown_keys():
    model, X, y = model_and_data()
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    nodecay = [p for n, p in model.named_parameters() if n.endswith("bias")]
    biases0 = [p.detach().clone() for p in nodecay]
    opt = ro.Optimizer([{"params": decay}, {"params": nodecay, "weight_decay": 0.0, "lr": 0.0}],
                       ro.adamw(1e-2, weight_decay=0.5))
    train(model, opt, X, y, 5)
    assert all(torch.equal(a, b) for a, b in zip(biases0, nodecay))  # lr 0 and no decay: untouched
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) \['momentum'\]"):
        ro.Optimizer([{"params": decay, "momentum": 0.9}], ro.adamw(1e-2))
    with pytest.raises(ValueError, match=r"weight_decay must be in \[0, inf\), got -1"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "weight_decay": -1})


def test_add_param_group_later():
    model, X, y = model_and_data()
    first, last = list(model[0].parameters()), list(model[2].parameters())
    opt = ro.AdamW(first, lr=1e-2)
    train(model, opt, X, y, 3)
    opt.add_param_group({"params": last, "lr": 5e-3})
    train(model, opt, X, y, 3)
    assert opt.state[first[0]]["step"] == 6 and opt.state[last[0]]["step"] == 3


@pytest.mark.parametrize("mode", ["skip", "raise", "apply"])
def test_nonfinite_gradients(mode):
    model, X, y = model_and_data()
    opt = ro.Optimizer(model.named_parameters() if mode == "raise" else model.parameters(), ro.adam(1e-2),
                       nonfinite=mode)
    train(model, opt, X, y, 2)
    params = [p.detach().clone() for p in model.parameters()]
    states = [{k: (v.clone() if torch.is_tensor(v) else v) for k, v in opt.state[p].items()}
              for p in model.parameters()]
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(X), y).backward()
    model[2].bias.grad[1] = float("nan")
    if mode == "raise":
        with pytest.raises(FloatingPointError, match="non-finite gradient .* in parameter '2.bias'"):
            opt.step()
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.step()
    if mode == "skip":
        assert opt.skipped_steps == 1
        assert any("skipped optimizer step" in str(w.message) for w in caught)
        assert all(torch.equal(a, b) for a, b in zip(params, model.parameters()))
        for p, s in zip(model.parameters(), states):
            assert opt.state[p]["step"] == s["step"]
            assert torch.equal(opt.state[p]["exp_avg"], s["exp_avg"])
    else:
        assert torch.isnan(model[2].bias).any()


def test_grad_scaler_skips_overflowing_steps_like_torch():
    """torch.amp.GradScaler drives the adapter as it drives torch optimizers."""
    results = []
    for cls in (torch.optim.SGD, ro.SGD):
        model, X, y = model_and_data()
        opt = cls(model.parameters(), lr=0.1, momentum=0.9)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        for i in range(6):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(X), y)
            scaler.scale(loss).backward()
            if i == 2:
                model[0].weight.grad[0, 0] = float("inf")  # an overflow: the scaler must skip and back off
            scaler.step(opt)
            scaler.update()
        results.append(([p.detach().clone() for p in model.parameters()], scaler.get_scale()))
    (p1, s1), (p2, s2) = results
    assert s1 == s2 == 2.0**9
    for a, b in zip(p1, p2):
        assert torch.allclose(a, b, atol=1e-6)


def test_structure_change_is_refused():
    model, X, y = model_and_data()
    opt = ro.SGD(model.parameters(), lr=0.1)
    train(model, opt, X, y, 2)
    opt.param_groups[0]["momentum"] = 0.9
    with pytest.raises(ValueError, match="structure changed after training started"):
        train(model, opt, X, y, 1)


def test_constructor_errors():
    model, _, _ = model_and_data()
    with pytest.raises(TypeError, match="transform must be a ravine.optim.Transform"):
        ro.Optimizer(model.parameters(), torch.optim.Adam)
    allowed = r"nonfinite must be one of 'skip', 'raise', 'apply', got 'ignore'"
    with pytest.raises(ValueError, match=allowed):
        ro.Optimizer(model.parameters(), ro.adam(), nonfinite="ignore")
    with pytest.raises(ValueError, match=r"SGD: lr must be in \[0, inf\), got -0.1"):
        ro.SGD(model.parameters(), lr=-0.1)


def test_decoupled_decay_peak_from_torch_scheduler_or_warning():
    """The paper's decay multiplier lr_t / peak: the peak comes from a torch scheduler's initial_lr."""
    w = torch.nn.Parameter(torch.ones(3))
    opt = ro.Optimizer([w], ro.adamw(0.1, weight_decay=0.01, decay_convention="decoupled"))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 ** k)
    for _ in range(4):
        w.grad = torch.zeros(3)  # no gradient: only the decay acts, by 0.01 * 0.5**step
        opt.step()
        sched.step()
    torch.testing.assert_close(w.detach(), torch.ones(3) * (1 - 0.01) * (1 - 0.005) * (1 - 0.0025) * (1 - 0.00125))
    # a hand-written warmup without lr_peak: the adapter cannot know the peak, and says so
    v = torch.nn.Parameter(torch.ones(3))
    opt = ro.Optimizer([v], ro.adamw(0.01, weight_decay=0.01, decay_convention="decoupled"))
    v.grad = torch.zeros(3)
    opt.step()
    opt.param_groups[0]["lr"] = 0.1
    with pytest.warns(RuntimeWarning, match="pass lr_peak"):
        opt.step()


def test_zero_redundancy_optimizer_takes_the_fused_paths(tmp_path):
    """ZeroRedundancyOptimizer re-adds the constructor's keywords (fused=..., nonfinite=...) to every param
    group; ravine accepts them when they repeat the optimizer's own options, so ZeRO-1 runs the flat path and
    equals the plain optimizer (a one-rank gloo group: ZeRO's own code, no sharding to compare)."""
    import torch.distributed as dist
    from torch.distributed.optim import ZeroRedundancyOptimizer

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/rendezvous", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        m1, m2 = torch.nn.Linear(5, 3).double(), torch.nn.Linear(5, 3).double()
        m2.load_state_dict(m1.state_dict())
        kw = dict(lr=1e-2, weight_decay=0.1, fused="flat")
        zero = ZeroRedundancyOptimizer(m1.parameters(), optimizer_class=ro.AdamW, **kw)
        plain = ro.AdamW(m2.parameters(), **kw)
        x = torch.randn(8, 5, dtype=torch.float64)
        for _ in range(4):
            for m, opt in ((m1, zero), (m2, plain)):
                opt.zero_grad()
                m(x).pow(2).mean().backward()
                opt.step()
        for a, b in zip(m1.parameters(), m2.parameters()):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    finally:
        dist.destroy_process_group()
    with pytest.raises(ValueError, match=r"param group sets fused=False, but fused is an option of the whole"):
        ro.AdamW([{"params": [torch.nn.Parameter(torch.zeros(2))], "fused": False}], lr=1e-3, fused="flat")
