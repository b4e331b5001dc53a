"""The fused execution path (``Optimizer(..., fused=...)``) against torch.optim and the unfused path.

Oracles: torch.optim.AdamW / SGD (for-loop implementations) with ``clip_grad_norm_`` and torch LR
schedulers, in float32 over 1000 steps; the unfused ravine path for ``state_dict`` round trips.

The flat path (``fused="flat"``) runs everywhere in seconds. The compiled path costs an inductor
compilation per chain signature (about 10 s on a two-core machine with a cold cache, C++
compiler needed): the clip+AdamW tests (one and two param groups) run by default, the other
chains only with ``RAVINE_SLOW_TESTS=1``.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

import ravine.optim as ro
from ravine.optim.fused import check_fusable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from peak_memory import peak_step_memory  # noqa: E402

STEPS = 1000
RTOL = 1e-5

slow = pytest.mark.skipif(
    not os.environ.get("RAVINE_SLOW_TESTS"), reason="compiles with inductor (slow); set RAVINE_SLOW_TESTS=1"
)
needs_compiler = pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None and not torch.cuda.is_available(),
    reason="torch.compile on CPU needs a C++ compiler",
)


def make_model(device="cpu", dtype=torch.float32):
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(10, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3)).to(device, dtype)


def data(device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(48, 10, generator=g)
    y = torch.randint(0, 3, (48,), generator=g)
    return X.to(device, dtype), y.to(device)


def two_groups(model, **second):
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    return [{"params": weights}, {"params": biases, **second}]


def schedule(t: int) -> float:
    """Warmup for 50 steps, then cosine to 0.1x: the multiplier of a torch ``LambdaLR``."""
    if t < 50:
        return (t + 1) / 50
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (t - 50) / (STEPS - 50)))


def loss_of(model, X, y):
    return torch.nn.functional.cross_entropy(model(X), y)


def train(model, opt, steps, clip=None, device="cpu", dtype=torch.float32, start=0):
    X, y = data(device, dtype)
    # resuming at ``start``: the groups carry ``initial_lr`` from the first run's scheduler
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule, last_epoch=start - 1)
    for _ in range(steps):
        opt.zero_grad()
        loss_of(model, X, y).backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip, foreach=False)
        opt.step()
        sched.step()
    return model


# the three chains under test: ravine transform, torch optimizer, torch's clip (None: no clip)
CASES = {
    "adamw": (
        lambda: ro.torch_adamw(3e-3, weight_decay=0.05),
        lambda groups: torch.optim.AdamW(groups, lr=3e-3, weight_decay=0.05, foreach=False),
        None,
    ),
    "clip+adamw": (
        lambda: ro.chain(ro.clip_by_global_norm(0.5), ro.torch_adamw(3e-3, weight_decay=0.05)),
        lambda groups: torch.optim.AdamW(groups, lr=3e-3, weight_decay=0.05, foreach=False),
        0.5,
    ),
    "sgd-nesterov": (
        lambda: ro.torch_sgd(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
        lambda groups: torch.optim.SGD(groups, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3, foreach=False),
        None,
    ),
}


def assert_close_to(model, reference, rtol=RTOL, atol=1e-6):
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=rtol, atol=atol, msg=lambda m, n=name: f"{n}: {m}")


def run_ravine(case, fused, device="cpu", steps=STEPS):
    m = make_model(device)
    opt = ro.Optimizer(two_groups(m, lr=1.5e-3 if "adam" in case else 0.02), CASES[case][0](), fused=fused)
    train(m, opt, steps, None, device)
    return m, opt


def check_parity(case, fused, device="cpu", steps=STEPS):
    """``fused`` against torch. Tolerance: float32 rounding drifts over 1000 steps (ravine's
    unfused path, which matches torch to 1e-10 in float64, drifts up to ~1e-5 from torch's
    for-loop AdamW in float32 on this model), so atol 5e-5 with rtol 1e-5."""
    _, make_torch, clip = CASES[case]
    ref = make_model(device)
    train(ref, make_torch(two_groups(ref, lr=1.5e-3 if "adam" in case else 0.02)), steps, clip, device)
    m, opt = run_ravine(case, fused, device, steps)
    assert_close_to(m, ref, rtol=RTOL, atol=5e-5)
    # the parameters really are views into one flat buffer per group
    flat = opt._fused.groups[0]
    assert all(
        p.untyped_storage().data_ptr() == flat.flat_params[0].untyped_storage().data_ptr()
        for p in opt.param_groups[0]["params"]
    )
    return opt


# ------------------------------------------------------------------------------------------------
# parity


@pytest.mark.parametrize("case", list(CASES))
def test_flat_path_matches_torch_over_1000_steps(case):
    opt = check_parity(case, "flat")
    if case == "clip+adamw":
        assert isinstance(opt.stats["grad_norm"], float) and opt.stats["grad_norm"] > 0


def test_flat_path_matches_unfused_over_1000_steps():
    a, _ = run_ravine("clip+adamw", False)
    b, _ = run_ravine("clip+adamw", "flat")
    assert_close_to(b, a, rtol=RTOL, atol=1e-6)


@needs_compiler
def test_compiled_clip_adamw_matches_torch_over_1000_steps():
    opt = check_parity("clip+adamw", True)
    # and the unfused numbers (the flat path is the unfused arithmetic on flat buffers)
    _, flat = run_ravine("clip+adamw", "flat")
    for a, b in zip(*([p for g in o.param_groups for p in g["params"]] for o in (opt, flat))):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=RTOL, atol=1e-6)
    eng = opt._fused
    assert eng.broken == {} and not eng.warned, eng.broken
    # after a compiled step p.grad is a view into the gradient buffer, holding autograd's values
    params = opt.param_groups[0]["params"]
    assert all(p.grad is v for p, v in zip(params, eng.groups[0].grad_views))
    # both groups run in one graph, their writes masked by one non-finite check (the default skip)
    ((signatures, _, masked, _),) = eng.compiled
    assert masked and len(signatures) == 2


@slow
@needs_compiler
@pytest.mark.parametrize("case", ["adamw", "sgd-nesterov"])
def test_compiled_matches_torch_over_1000_steps(case):
    opt = check_parity(case, "compile")
    assert opt._fused.broken == {}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("fused", ["flat", True])
@pytest.mark.parametrize("case", list(CASES))
def test_cuda_matches_torch(case, fused):
    check_parity(case, fused, device="cuda", steps=300)


def test_flat_and_unfused_agree_with_ravine_schedule_and_group_hyperparameters():
    """A ravine schedule on lr, per-group weight decay and betas: flat == unfused to rounding."""

    def run(fused):
        m = make_model()
        groups = two_groups(m, weight_decay=0.0, b1=0.8)
        lr = lambda t: 1e-2 * schedule(t)  # noqa: E731
        opt = ro.Optimizer(groups, ro.chain(ro.clip_by_global_norm(0.3), ro.adamw(lr, weight_decay=0.1)), fused=fused)
        X, y = data()
        for _ in range(200):
            opt.zero_grad()
            loss_of(m, X, y).backward()
            opt.step()
        return m, opt

    a, oa = run(False)
    b, ob = run("flat")
    assert_close_to(b, a, rtol=1e-6)
    assert ob.param_groups[0]["lr"] == oa.param_groups[0]["lr"]
    assert ob.stats["groups"][1]["grad_norm"] == pytest.approx(oa.stats["groups"][1]["grad_norm"], rel=1e-5)


# ------------------------------------------------------------------------------------------------
# checkpoints


def roundtrip(sd):
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("first,second", [(False, "flat"), ("flat", False), ("flat", "flat")])
def test_state_dict_moves_between_fused_and_unfused(first, second):
    make_t = CASES["clip+adamw"][0]
    # uninterrupted reference
    ref = make_model()
    train(ref, ro.Optimizer(two_groups(ref, lr=1e-3), make_t()), 120)

    m = make_model()
    opt = ro.Optimizer(two_groups(m, lr=1e-3), make_t(), fused=first)
    train(m, opt, 60)
    sd = roundtrip(opt.state_dict())
    model_sd = roundtrip(m.state_dict())

    m2 = make_model()
    m2.load_state_dict(model_sd)
    opt2 = ro.Optimizer(two_groups(m2, lr=1e-3), make_t(), fused=second)
    opt2.load_state_dict(sd)
    assert opt2.state_dict()["state"].keys() == sd["state"].keys()
    for k, s in sd["state"].items():
        assert set(opt2.state_dict()["state"][k]) == set(s) == {"step", "exp_avg", "exp_avg_sq"}
    train(m2, opt2, 60, start=60)
    assert_close_to(m2, ref, rtol=1e-6)
    # the fused optimizer's state is still the per-parameter torch format, as views
    assert opt2.state_dict()["state"][0]["step"] == 120


def test_fused_state_dict_has_torch_format():
    """Same keys, names and shapes as torch.optim.AdamW's own state_dict."""
    m1, m2 = make_model(), make_model()
    opts = (
        torch.optim.AdamW(m1.parameters(), lr=1e-3),
        ro.Optimizer(m2.parameters(), ro.torch_adamw(1e-3), fused="flat"),
    )
    for o, m in zip(opts, (m1, m2)):
        for p in m.parameters():
            p.grad = torch.ones_like(p)
        o.step()
    a, b = (o.state_dict() for o in opts)
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        assert a["state"][k].keys() == b["state"][k].keys()
        for n in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(a["state"][k][n], b["state"][k][n])
    assert_close_to(m2, m1)


# ------------------------------------------------------------------------------------------------
# non-finite gradients


def nan_run(fused, nonfinite):
    m = make_model()
    opt = ro.Optimizer(
        two_groups(m), ro.chain(ro.clip_by_global_norm(1.0), ro.torch_adamw(1e-2)), fused=fused, nonfinite=nonfinite
    )
    X, y = data()
    for _ in range(3):
        opt.zero_grad()
        loss_of(m, X, y).backward()
        opt.step()
    before = [p.detach().clone() for p in m.parameters()]
    state = [{k: v.clone() for k, v in opt.state[p].items() if torch.is_tensor(v)} for p in m.parameters()]
    opt.zero_grad()
    loss_of(m, X, y).backward()
    m[2].bias.grad[1] = float("nan")
    return m, opt, before, state


@needs_compiler
def test_compiled_group_added_later_steps_from_its_own_count():
    """A param group added after 3 steps: one masked graph steps both groups, each with its own
    step count (bias corrections), as the unfused path does."""
    runs = []
    for fused in (False, "compile"):
        m = make_model()
        first, last = list(m[0].parameters()), list(m[2].parameters())
        opt = ro.Optimizer([{"params": first}], CASES["clip+adamw"][0](), fused=fused)
        X, y = data()
        for k in range(6):
            if k == 3:
                opt.add_param_group({"params": last, "lr": 1e-3})
            opt.zero_grad()
            loss_of(m, X, y).backward()
            opt.step()
        assert opt.state[first[0]]["step"] == 6 and opt.state[last[0]]["step"] == 3
        runs.append(m)
    assert_close_to(runs[1], runs[0], rtol=RTOL, atol=1e-6)


@pytest.mark.parametrize("fused", ["flat", pytest.param(True, marks=[slow, needs_compiler])])
def test_nonfinite_skip_leaves_everything_untouched(fused):
    m, opt, before, state = nan_run(fused, "skip")
    with pytest.warns(RuntimeWarning, match=r"skipped optimizer step: non-finite gradient .* group 1 param 1"):
        opt.step()
    assert opt.skipped_steps == 1
    for p, b, s in zip(m.parameters(), before, state):
        assert torch.equal(p.detach(), b)
        for k, v in s.items():
            assert torch.equal(opt.state[p][k], v), k
        assert opt.state[p]["step"] == 3


@needs_compiler
@pytest.mark.parametrize(
    "case,bad",
    [
        ("clip+adamw", float("nan")),
        pytest.param("clip+adamw", float("-inf"), marks=slow),
        pytest.param("adamw", float("inf"), marks=slow),
        pytest.param("sgd-nesterov", float("nan"), marks=slow),
    ],
)
def test_compiled_single_group_folds_the_check_and_matches_torch(case, bad):
    """One param group: the non-finite check is folded into the compiled step (masked writes;
    with clipping first, the clip norm is the check). Parity with torch over 1000 steps, then a
    step with a non-finite gradient leaves everything untouched and the next step runs."""
    make_ravine, make_torch, clip = CASES[case]
    lr = 1.5e-3 if "adam" in case else 0.02
    ref = make_model()
    train(ref, make_torch([{"params": list(ref.parameters()), "lr": lr}]), STEPS, clip)
    m = make_model()
    opt = ro.Optimizer([{"params": list(m.parameters()), "lr": lr}], make_ravine(), fused="compile")
    train(m, opt, STEPS)
    assert_close_to(m, ref, rtol=RTOL, atol=5e-5)
    assert opt._fused.broken == {} and [k[2] for k in opt._fused.compiled] == [True]  # masked

    before = [p.detach().clone() for p in m.parameters()]
    state = [{k: v.clone() for k, v in opt.state[p].items() if torch.is_tensor(v)} for p in m.parameters()]
    X, y = data()
    opt.zero_grad()
    loss_of(m, X, y).backward()
    m[2].weight.grad[0, 1] = bad
    with pytest.warns(RuntimeWarning, match=r"skipped optimizer step: non-finite gradient .* param 2"):
        opt.step()
    assert opt.skipped_steps == 1
    for p, b, s in zip(m.parameters(), before, state):
        assert torch.equal(p.detach(), b)
        for k, v in s.items():
            assert torch.equal(opt.state[p][k], v), k
        assert opt.state[p]["step"] == STEPS
    opt.zero_grad()
    loss_of(m, X, y).backward()
    opt.step()
    assert opt.state[m[0].weight]["step"] == STEPS + 1
    assert all(not torch.equal(p.detach(), b) for p, b in zip(m.parameters(), before))


@needs_compiler
@pytest.mark.parametrize("nonfinite", ["skip", "raise"])
def test_compiled_step_skips_when_the_clip_norm_overflows(nonfinite):
    """Every gradient finite, each parameter's norm finite, but the group's global norm overflows
    float32 (two entries of 1.5e19): the folded check skips the step (or raises) and says why."""
    m = make_model()
    opt = ro.Optimizer(m.parameters(), CASES["clip+adamw"][0](), fused="compile", nonfinite=nonfinite)
    train(m, opt, 3)
    before = [p.detach().clone() for p in m.parameters()]
    X, y = data()
    opt.zero_grad()
    loss_of(m, X, y).backward()
    m[0].weight.grad[0, 0] = 1.5e19
    m[2].weight.grad[0, 0] = 1.5e19
    assert all(torch.linalg.vector_norm(p.grad).isfinite() for p in m.parameters())
    if nonfinite == "raise":
        with pytest.raises(FloatingPointError, match="global gradient norm .* not finite although every gradient is"):
            opt.step()
    else:
        with pytest.warns(RuntimeWarning, match="skipped optimizer step: the global gradient norm .* not finite"):
            opt.step()
        assert opt.skipped_steps == 1
    assert all(torch.equal(p.detach(), b) for p, b in zip(m.parameters(), before))
    assert opt.state[m[0].weight]["step"] == 3


def test_nonfinite_raise_names_the_parameter():
    m, opt, before, _ = nan_run("flat", "raise")
    with pytest.raises(FloatingPointError, match=r"non-finite gradient .* group 1 param 1 \(shape \(3,\)\)"):
        opt.step()
    assert all(torch.equal(p.detach(), b) for p, b in zip(m.parameters(), before))


# ------------------------------------------------------------------------------------------------
# memory


def test_peak_step_memory_sees_a_known_temporary():
    x = torch.randn(250_000)
    assert peak_step_memory(lambda: x * 2) >= x.numel() * 4
    assert peak_step_memory(lambda: x.mul_(1.0)) < 4096


@pytest.mark.parametrize("case", list(CASES))
def test_flat_step_allocates_no_parameter_sized_temporaries(case):
    make_t = CASES[case][0]
    params = [torch.nn.Parameter(torch.randn(500, 400)), torch.nn.Parameter(torch.randn(400))]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = ro.Optimizer(params, make_t(), fused="flat")
    opt.step()
    opt.step()
    nbytes = sum(p.numel() * 4 for p in params)
    assert peak_step_memory(opt.step) < 0.05 * nbytes
    # the unfused path for comparison does allocate (Adam's sqrt into a fresh list, or not):
    # whatever it does, the flat path must not be worse.
    ref = ro.Optimizer([torch.nn.Parameter(p.detach().clone()) for p in params], make_t())
    for p, q in zip(ref.param_groups[0]["params"], params):
        p.grad = q.grad.clone()
    ref.step()
    ref.step()
    assert peak_step_memory(opt.step) <= peak_step_memory(ref.step) + 4096


# ------------------------------------------------------------------------------------------------
# gradients, parameters, eligibility


def check_grads_untouched(fused):
    m = make_model()
    ref = make_model()
    opt = ro.Optimizer(m.parameters(), ro.torch_adamw(1e-2), fused=fused)
    ropt = ro.Optimizer(ref.parameters(), ro.torch_adamw(1e-2))
    X, y = data()
    for _ in range(20):
        for model, o in ((m, opt), (ref, ropt)):
            o.zero_grad(set_to_none=False)
            loss_of(model, X, y).backward()
            grads = [p.grad.clone() for p in model.parameters()]
            o.step()
            # the step does not change the gradients it was given
            assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert_close_to(m, ref, rtol=1e-6)
    return m, opt


def test_flat_path_leaves_grads_alone():
    m, opt = check_grads_untouched("flat")
    assert not any(p.grad is v for p, v in zip(m.parameters(), opt._fused.groups[0].grad_views))


@slow
@needs_compiler
def test_compiled_path_lands_grads_in_the_flat_buffer():
    m, opt = check_grads_untouched(True)
    # zero_grad(set_to_none=False) kept the views: autograd accumulated straight into the buffer
    assert all(p.grad is v for p, v in zip(m.parameters(), opt._fused.groups[0].grad_views))


def test_replaced_parameter_data_is_picked_up():
    m, ref = make_model(), make_model()
    opt = ro.Optimizer(m.parameters(), ro.torch_sgd(0.1, momentum=0.9), fused="flat")
    ropt = ro.Optimizer(ref.parameters(), ro.torch_sgd(0.1, momentum=0.9))
    X, y = data()
    for i in range(30):
        if i == 10:
            for p in m.parameters():
                p.data = p.data.clone()  # what model.to(...) does: the flat views are gone
        for model, o in ((m, opt), (ref, ropt)):
            o.zero_grad()
            loss_of(model, X, y).backward()
            o.step()
    assert_close_to(m, ref, rtol=1e-6)
    flat = opt._fused.groups[0]
    assert m[0].weight.data_ptr() == flat.param_views[0].data_ptr()


def test_params_without_grads_fall_back_for_that_step():
    m, ref = make_model(), make_model()
    opt = ro.Optimizer(m.parameters(), ro.torch_adamw(1e-2), fused="flat")
    ropt = ro.Optimizer(ref.parameters(), ro.torch_adamw(1e-2))
    X, y = data()
    for i in range(12):
        for model, o in ((m, opt), (ref, ropt)):
            o.zero_grad()
            loss_of(model, X, y).backward()
            if i % 3 == 1:
                model[0].bias.grad = None  # unused this step: not stepped, its own step count
            o.step()
    assert_close_to(m, ref, rtol=1e-6)
    assert opt.state[m[0].bias]["step"] == ropt.state[ref[0].bias]["step"] == 8


def test_ineligible_chains_are_named_or_fall_back():
    agc = ro.chain(ro.clip_adaptive(0.01), ro.sgd(0.1))
    assert "clip_adaptive" in check_fusable(agc)
    assert check_fusable(ro.adamw(1e-3)) is None
    assert "data-dependent" in check_fusable(ro.chain(ro.clip_by_value(1.0), ro.sgd(0.1)), compile=True)
    assert "mask" in check_fusable(ro.adamw(1e-3, mask=[True, False]))
    assert "shape (4, 1)" in check_fusable(ro.sgd(torch.full((4, 1), 0.1)))

    m = make_model()
    X, y = data()
    loss_of(m, X, y).backward()
    with pytest.raises(ValueError, match=r"fused='flat': this param group cannot run fused: clip_adaptive"):
        ro.Optimizer(m.parameters(), agc, fused="flat").step()
    # auto: runs unfused, same numbers as fused=False
    ref = make_model()
    loss_of(ref, X, y).backward()
    auto = ro.Optimizer(m.parameters(), agc, fused=None)
    auto.step()
    ro.Optimizer(ref.parameters(), agc).step()
    assert auto._fused.groups == {}
    assert_close_to(m, ref, rtol=0, atol=0)


def test_bad_fused_argument():
    allowed = r"False, True, None, 'flat', 'compile'"
    with pytest.raises(ValueError, match=rf"fused must be one of {allowed}, got 'yes'"):
        ro.Optimizer(make_model().parameters(), ro.adamw(1e-3), fused="yes")


def test_tied_parameters_are_not_flattened():
    base = torch.randn(20)
    a = torch.nn.Parameter(base[:10])
    b = torch.nn.Parameter(base[10:])
    a.grad, b.grad = torch.ones(10), torch.ones(10)
    with pytest.raises(ValueError, match="share memory"):
        ro.Optimizer([a, b], ro.sgd(0.1), fused="flat").step()


def test_torch_style_classes_take_fused():
    """ravine.optim.AdamW(..., fused="flat") runs the flat path with the same numbers as unfused."""
    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.Tanh(), torch.nn.Linear(9, 2)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [ro.AdamW(models[0].parameters(), lr=1e-2), ro.AdamW(models[1].parameters(), lr=1e-2, fused="flat")]
    X = torch.randn(16, 6)
    for _ in range(20):
        for m, o in zip(models, opts):
            o.zero_grad()
            m(X).pow(2).mean().backward()
            o.step()
    assert opts[1].fused == "flat"
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="fused must be one of .*, got 'fast'"):
        ro.SGD(models[0].parameters(), lr=0.1, fused="fast")
