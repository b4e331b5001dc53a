"""Muon on the fused path: ``Optimizer(..., fused=...)`` with Muon's chain against the unfused path
and ``torch.optim.Muon``.

Oracles: ``torch.optim.Muon`` (and ``torch.optim.AdamW`` for the other parameters) of the installed
torch, with a torch LR scheduler; the unfused ravine path, bit for bit, for the flat path (it runs
the same operations on views of the flat buffers).

The flat path (``fused="flat"``) runs everywhere in seconds and is always on. The compiled path
(``fused=True``: the Newton-Schulz iteration compiled per shape over a stacked ``(k, m, n)``
tensor) costs an inductor compilation per matrix shape (tens of seconds on a two-core machine, C++
compiler needed), so its tests run with ``RAVINE_SLOW_TESTS=1``, as in ``tests/test_fused.py``.
Its tolerance: with the iteration in float64, 1e-12 against the unfused path; in bfloat16 (the
default, as torch), the batched products round differently, so the weights after 30 steps agree
to 2e-2 of their change (1e-3 of their size) and each single update to bfloat16 precision.
"""

from __future__ import annotations

import io
import os
import shutil
import warnings

import pytest
import torch

import ravine.optim as ro
from ravine.optim.fused import check_fusable

STEPS = 30

slow = pytest.mark.skipif(
    not os.environ.get("RAVINE_SLOW_TESTS"), reason="compiles with inductor (slow); set RAVINE_SLOW_TESTS=1"
)
needs_compiler = pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None and not torch.cuda.is_available(),
    reason="torch.compile on CPU needs a C++ compiler",
)


def make_model(dtype=torch.float64):
    """An MLP whose two hidden matrices share a shape (one batch for the compiled iteration)."""
    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Linear(12, 16),
        torch.nn.Tanh(),
        torch.nn.Linear(16, 16),
        torch.nn.Tanh(),
        torch.nn.Linear(16, 16),
        torch.nn.Tanh(),
        torch.nn.Linear(16, 5),
    ).to(dtype)


def matrices(model, lr=0.02):
    """Two Muon groups: the first hidden matrices, and the last two with their own lr and decay."""
    w = [model[i].weight for i in (0, 2, 4, 6)]
    return [{"params": w[:2]}, {"params": w[2:], "lr": lr * 0.5, "weight_decay": 0.0}]


def data(dtype):
    g = torch.Generator().manual_seed(0)
    return torch.randn(256, 12, generator=g).to(dtype), torch.randint(0, 5, (256,), generator=g)


def train(model, opt, steps=STEPS, start=0, scheduler=True):
    X, y = data(next(model.parameters()).dtype)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5, last_epoch=start - 1) if scheduler else None
    g = torch.Generator().manual_seed(start)
    for _ in range(steps):
        idx = torch.randint(0, len(X), (64,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
        opt.step()
        if sched is not None:
            sched.step()
    return model


def ravine_muon(model, fused, lr=0.02, **kw):
    return ro.Optimizer(matrices(model, lr), ro.muon(lr, weight_decay=0.1, **kw), fused=fused)


def torch_muon(model, lr=0.02):
    return torch.optim.Muon(matrices(model, lr), lr=lr, weight_decay=0.1)


def max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a.parameters(), b.parameters()))


# against torch: float64 to its rounding (the bfloat16 iteration sees the same input); float32 to
# 2e-3 (of weights that move by ~0.5): a last-bit difference of the float32 momentum (torch decays
# the weights before the update, ravine adds the two) can round the bfloat16 input the other way
@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-10), (torch.float32, 2e-3)])
def test_flat_path_is_the_unfused_path_bit_for_bit_and_matches_torch(dtype, atol):
    torch_model = make_model(dtype)
    train(torch_model, torch_muon(torch_model))
    unfused, flat = make_model(dtype), make_model(dtype)
    train(unfused, ravine_muon(unfused, False))
    opt = ravine_muon(flat, "flat")
    train(flat, opt)
    assert sorted(opt._fused.groups) == [0, 1]  # both groups ran on flat buffers
    assert max_diff(unfused, flat) == 0
    assert max_diff(torch_model, flat) < atol
    assert max_diff(make_model(dtype), flat) > 1e-2  # it trained


def test_flat_path_with_a_ravine_schedule_and_nesterov_off_is_bitwise_unfused():
    def schedule(t):
        return 0.03 * min(1.0, (t + 1) / 5)

    runs = {}
    for fused in (False, "flat", None):
        m = make_model()
        weights = [m[i].weight for i in (0, 2, 4, 6)]
        opt = ro.Optimizer(weights, ro.muon(schedule, nesterov=False, adjust_lr="match_rms_adamw"), fused=fused)
        runs[fused] = train(m, opt, scheduler=False)
    assert max_diff(runs[False], runs["flat"]) == 0
    assert max_diff(runs[False], runs[None]) == 0  # auto: the flat path, same numbers


class TinyGPT(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = torch.nn.Embedding(11, 8)
        self.blocks = torch.nn.Sequential(
            torch.nn.LayerNorm(8), torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 8)
        )
        self.ln_f = torch.nn.LayerNorm(8)
        self.lm_head = torch.nn.Linear(8, 11, bias=False)

    def forward(self, idx):
        x = self.wte(idx)
        return self.lm_head(self.ln_f(x + self.blocks(x)))


def gpt_run(model, step, steps=20):
    torch.manual_seed(0)
    data = torch.randint(0, 11, (16, 6))
    for _ in range(steps):
        model.zero_grad()
        logits = model(data[:, :-1])
        torch.nn.functional.cross_entropy(logits.reshape(-1, 11), data[:, 1:].reshape(-1)).backward()
        step()
    return model


def gpt_groups(model):
    return ro.muon_param_groups(model, lr=0.02, weight_decay=0.1, adamw_lr=3e-3, adamw_weight_decay=0.01)


def test_muon_with_adamw_flat_runs_both_groups_fused_and_matches_torch():
    torch.manual_seed(0)
    ref, unfused, flat = TinyGPT().double(), TinyGPT().double(), TinyGPT().double()
    unfused.load_state_dict(ref.state_dict())
    flat.load_state_dict(ref.state_dict())
    g = gpt_groups(ref)
    ref_muon = torch.optim.Muon(g[0]["params"], lr=0.02, weight_decay=0.1)
    ref_adamw = torch.optim.AdamW(g[1]["params"], lr=3e-3, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.01)
    gpt_run(ref, lambda: (ref_muon.step(), ref_adamw.step()))
    gpt_run(unfused, ro.Optimizer(gpt_groups(unfused), ro.muon_with_adamw()).step)
    opt = ro.MuonWithAdamW(flat, lr=0.02, weight_decay=0.1, adamw_lr=3e-3, adamw_weight_decay=0.01, fused="flat")
    gpt_run(flat, opt.step)
    assert sorted(opt._fused.groups) == [0, 1]  # the Muon group and the AdamW group, both flat
    for (name, a), b, c in zip(ref.named_parameters(), unfused.parameters(), flat.parameters()):
        assert torch.equal(b, c), name
        assert torch.allclose(a, c, rtol=0, atol=1e-10), name


@pytest.mark.parametrize("first, second", [(False, "flat"), ("flat", False), ("flat", "flat")])
def test_state_dict_round_trips_between_fused_and_unfused(first, second):
    m = make_model()
    opt = ravine_muon(m, first)
    train(m, opt, steps=10)
    saved = io.BytesIO()
    torch.save(opt.state_dict(), saved)
    saved.seek(0)
    sd = torch.load(saved, weights_only=True)
    # torch's format: per parameter index, its momentum buffer and step; no view of a flat buffer
    assert sorted(sd["state"]) == [0, 1, 2, 3]
    for i, w in enumerate(matrices(m)[0]["params"] + matrices(m)[1]["params"]):
        s = sd["state"][i]
        assert s["step"] == 10 and s["momentum_buffer"].shape == w.shape
    resumed = make_model()
    resumed.load_state_dict(m.state_dict())
    opt2 = ravine_muon(resumed, second)
    opt2.load_state_dict(sd)
    train(resumed, opt2, steps=10, start=10)
    # the continuation after the round trip is the continuation without it, bit for bit
    train(m, opt, steps=10, start=10)
    assert max_diff(m, resumed) == 0


def test_torch_muon_checkpoint_loads_into_the_flat_path():
    ref = make_model()
    ref_opt = torch_muon(ref)
    train(ref, ref_opt, steps=10)
    ours = make_model()
    ours.load_state_dict(ref.state_dict())
    opt = ro.Muon(matrices(ours), lr=0.02, weight_decay=0.1, fused="flat")
    saved = io.BytesIO()  # a copy: a live state_dict shares the momentum buffers with ref_opt
    torch.save(ref_opt.state_dict(), saved)
    saved.seek(0)
    opt.load_state_dict(torch.load(saved, weights_only=True))
    train(ref, ref_opt, steps=10, start=10)
    train(ours, opt, steps=10, start=10)
    assert max_diff(ref, ours) < 1e-10


def test_non_matrix_parameters_are_refused_on_the_fused_path():
    bias = torch.nn.Parameter(torch.zeros(4))
    bias.grad = torch.ones(4)
    opt = ro.Optimizer([bias], ro.muon(), fused="flat")
    with pytest.raises(ValueError, match=r"2D weight matrices only, got a tensor of shape \(4,\)"):
        opt.step()


def test_a_nonfinite_gradient_skips_the_flat_step_untouched():
    m = make_model()
    opt = ravine_muon(m, "flat")
    train(m, opt, steps=3)
    before = [p.detach().clone() for p in m.parameters()]
    buffers = {k: v["momentum_buffer"].clone() for k, v in opt.state_dict()["state"].items()}
    X, y = data(torch.float64)
    opt.zero_grad()
    torch.nn.functional.cross_entropy(m(X), y).backward()
    m[2].weight.grad[3, 1] = float("nan")
    with pytest.warns(RuntimeWarning, match=r"skipped optimizer step: non-finite gradient"):
        opt.step()
    assert opt.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))
    state = opt.state_dict()["state"]
    assert all(torch.equal(buffers[k], state[k]["momentum_buffer"]) and state[k]["step"] == 3 for k in buffers)


@ro.transform(fusable="matrix")
def _per_matrix_with_state() -> ro.Transform:
    """A per-matrix primitive with per-parameter state, which the fused path refuses."""

    def init(params):
        return {"step": 0, "buf": [torch.zeros_like(p) for p in params]}

    def update(g, state, params=None):
        return g, {"step": state["step"] + 1, "buf": state["buf"]}

    return ro.Transform(init, update)


def test_the_matrix_declaration():
    assert check_fusable(ro.muon()) is None
    assert check_fusable(ro.muon(), compile=True) is None
    assert ro.orthogonalize().fusable == "matrix" and ro.scale_by_shape().fusable == "matrix"
    assert "per-parameter state (buf)" in check_fusable(ro.chain(_per_matrix_with_state(), ro.sgd(0.1)))
    with pytest.raises(ValueError, match=r"fusable must be one of False, True, 'matrix', got 'rows'"):
        ro.transform(fusable="rows")
    # compiled, a matrix primitive's hyperparameters are constants: a schedule is refused by name
    sched = ro.chain(ro.orthogonalize(eps=lambda t: 1e-7), ro.sgd(0.1))
    assert check_fusable(sched) is None
    assert "orthogonalize: hyperparameter eps is a schedule" in check_fusable(sched, compile=True)


# -- the compiled path -------------------------------------------------------------------------


@slow
@needs_compiler
def test_compiled_newton_schulz_in_float64_matches_unfused():
    unfused, compiled = make_model(), make_model()
    train(unfused, ravine_muon(unfused, False, ns_dtype=torch.float64))
    opt = ravine_muon(compiled, True, ns_dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to the uncompiled path
        train(compiled, opt)
    runner = opt._fused.matrix
    # one compiled function per shape, each over its stacked matrices: (16, 12), (16, 16) x 2, (5, 16)
    assert sorted(k[1] for k in runner.ready) == [(5, 16), (16, 12), (16, 16)]
    assert opt._fused.broken == {} and runner.broken == {}
    assert max_diff(unfused, compiled) < 1e-12


@slow
@needs_compiler
def test_compiled_newton_schulz_in_bfloat16_is_as_close_to_float64_as_unfused():
    """bfloat16 (the default): the compiled, batched products round differently from the unfused
    ones, and five iterations amplify that (a few percent of single entries). What must hold: one
    update is as close to the float64 iteration's update as the unfused bfloat16 one is."""
    updates = {}
    for name, fused, ns_dtype in (("f64", False, torch.float64), ("unfused", False, None), ("compiled", True, None)):
        m = make_model()
        kw = {} if ns_dtype is None else {"ns_dtype": ns_dtype}
        train(m, ravine_muon(m, fused, **kw), steps=1)
        updates[name] = torch.cat([(a - b).flatten() for a, b in zip(m.parameters(), make_model().parameters())])
    err = {k: (updates[k] - updates["f64"]).norm() / updates["f64"].norm() for k in ("unfused", "compiled")}
    assert 0 < err["unfused"] < 0.2
    assert err["compiled"] < 2 * err["unfused"]
    assert not torch.equal(updates["compiled"], updates["f64"])


@slow
@needs_compiler
def test_compiled_muon_with_adamw_compiles_the_adamw_group_and_state_dict_round_trips():
    torch.manual_seed(0)
    unfused, compiled = TinyGPT().double(), TinyGPT().double()
    compiled.load_state_dict(unfused.state_dict())
    ou = ro.Optimizer(gpt_groups(unfused), ro.muon_with_adamw(ns_dtype=torch.float64, weight_decay=0.1))
    oc = ro.Optimizer(gpt_groups(compiled), ro.muon_with_adamw(ns_dtype=torch.float64, weight_decay=0.1), fused=True)
    gpt_run(unfused, ou.step)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        gpt_run(compiled, oc.step)
    assert len(oc._fused.compiled) == 1 and oc._fused.broken == {}  # the AdamW group's graph
    for (name, a), b in zip(unfused.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)
    sd_u, sd_c = ou.state_dict(), oc.state_dict()
    assert sd_u["param_groups"] == sd_c["param_groups"]
    assert sd_u["state"].keys() == sd_c["state"].keys()
    for k, s in sd_u["state"].items():
        assert s.keys() == sd_c["state"][k].keys()
    ou.load_state_dict(sd_c)
    oc.load_state_dict(sd_u)

