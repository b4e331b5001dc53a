"""SharpnessMonitor and stability_rule against oracles nobody here wrote.

- eigenvalues: the dense Hessian of ``torch.autograd.functional.hessian`` (float64) and ``torch.linalg.eigvalsh``;
- thresholds: the published formulas (GD ``2 / lr``, heavy ball ``2 (1 + mu) / lr`` (Cohen et al. 2021,
  App.), EMA momentum ``2 (1 + beta) / ((1 - beta) lr)``, Adam ``(2 + 2 beta1) / ((1 - beta1) lr)`` = 38/lr
  (Cohen et al. 2022)) with the learning rate read from torch's optimizers and a torch LR scheduler;
- the preconditioned sharpness: the dense eigenvalues of ``P^{-1/2} H P^{-1/2}`` with ``P`` computed from
  torch.optim.Adam's own state by Adam's formula;
- the warm start: counted HVPs (never time).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

import ravine.optim as ro
from ravine.curvature import SharpnessMonitor, StabilityRule, stability_rule


def _mlp(seed: int = 0, dropout: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(3, 5), nn.Tanh()]
    if dropout:
        layers.append(nn.Dropout(0.5))
    layers.append(nn.Linear(5, 3))
    return nn.Sequential(*layers).double()


def _data(n: int = 24, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def _dense_hessian(model: nn.Module, loss_fn, x, y) -> torch.Tensor:
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(w):
        params = {n: c.view(s) for n, c, s in zip(names, w.split(sizes), shapes)}
        return loss_fn(functional_call(model, params, (x,)), y)

    return torch.autograd.functional.hessian(f, flat)


def _train_steps(model, opt, x, y, n: int, loss_fn=nn.functional.cross_entropy) -> None:
    for _ in range(n):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()


def test_lambda_max_and_top_k_equal_the_dense_hessian():
    model = _mlp()
    x, y = _data()
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    _train_steps(model, opt, x, y, 3)
    mon = SharpnessMonitor(model, loss_fn, (x, y), optimizer=opt, k=3, tol=1e-10)
    rec = mon.measure()
    dense = torch.linalg.eigvalsh(_dense_hessian(model, loss_fn, x, y)).flip(0)
    assert rec["lambda_max"] == pytest.approx(float(dense[0]), rel=1e-8)
    assert rec["eigenvalues"] == pytest.approx([float(v) for v in dense[:3]], rel=1e-7)
    assert rec["sharpness"] == rec["lambda_max"]
    assert rec["threshold"] == pytest.approx(2 / 0.5) and rec["ratio"] == pytest.approx(rec["lambda_max"] * 0.5 / 2)


@pytest.mark.parametrize(
    ("make", "closed"),
    [
        (lambda p: torch.optim.SGD(p, lr=0.1), lambda lr: 2 / lr),
        (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0), lambda lr: 2 * (1 + 0.9) / lr),
        (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.5, dampening=0.5), lambda lr: 2 * 1.5 / (0.5 * lr)),
        (lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.9, 0.999)), lambda lr: 38 / lr),
        (lambda p: torch.optim.AdamW(p, lr=0.01, betas=(0.8, 0.99)), lambda lr: (2 + 1.6) / (0.2 * lr)),
        (lambda p: ro.Optimizer(p, ro.gd(0.1)), lambda lr: 2 / lr),
        (lambda p: ro.Optimizer(p, ro.momentum(0.1, beta=0.9)), lambda lr: 2 * 1.9 / (0.1 * lr)),
        (lambda p: ro.Optimizer(p, ro.momentum(0.1, beta=0.8, form="heavy_ball")), lambda lr: 2 * 1.8 / lr),
        (lambda p: ro.Optimizer(p, ro.adam(0.01)), lambda lr: 38 / lr),
        (lambda p: ro.SGD(p, lr=0.1, momentum=0.9), lambda lr: 3.8 / lr),
        (lambda p: ro.Adam(p, lr=0.01), lambda lr: 38 / lr),
    ],
)
def test_threshold_follows_the_optimizer_and_its_scheduler(make, closed):
    """The threshold is the published formula at the lr in the param group, read again after a torch
    scheduler has halved it."""
    model = _mlp()
    x, y = _data()
    opt = make(model.parameters())
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    mon = SharpnessMonitor(model, nn.CrossEntropyLoss(), (x, y), optimizer=opt, tol=1e-8)
    lr0 = opt.param_groups[0]["lr"]
    _train_steps(model, opt, x, y, 1)
    first = mon.measure()
    sched.step()
    second = mon.measure()
    assert first["lr"] == pytest.approx(lr0) and second["lr"] == pytest.approx(lr0 / 2)
    assert first["threshold"] == pytest.approx(closed(lr0), rel=1e-12)
    assert second["threshold"] == pytest.approx(closed(lr0 / 2), rel=1e-12)
    assert second["ratio"] == pytest.approx(second["sharpness"] / second["threshold"], rel=1e-12)


def test_sgd_weight_decay_shifts_every_eigenvalue():
    rule = stability_rule(torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1, weight_decay=0.3))
    assert rule.kind == "gd" and rule.threshold(0.1) == pytest.approx(2 / 0.1 - 0.3)
    assert rule.ratio(19.7, 0.1) == pytest.approx(1.0) and rule.max_lr(19.7) == pytest.approx(0.1)


def test_rules_by_name_match_the_closed_forms_and_say_when_there_is_none():
    cases = {
        ("gd", ()): 2 / 0.2,
        ("sgd", (("momentum", 0.9),)): 3.8 / 0.2,
        ("torch_sgd", (("momentum", 0.5), ("dampening", 0.2))): 3.0 / (0.8 * 0.2),
        ("momentum", (("beta", 0.9), ("form", "ema"))): 3.8 / (0.1 * 0.2),
        ("momentum", (("beta", 0.9), ("form", "heavy_ball"))): 3.8 / 0.2,
        ("adam", (("b1", 0.9),)): 38 / 0.2,
        ("AdamW", (("betas", (0.5, 0.9)),)): 6 / 0.2,
    }
    for (name, hp), want in cases.items():
        rule = stability_rule(name, dict(hp))
        assert isinstance(rule, StabilityRule)
        assert rule.threshold(0.2) == pytest.approx(want, rel=1e-12), name
        assert rule.max_lr(want) == pytest.approx(0.2, rel=1e-12), name
    for name, hp in (("nesterov", {}), ("sgd", {"momentum": 0.9, "nesterov": True}), ("rmsprop", {}), ("lion", {})):
        rule = stability_rule(name, hp)
        assert rule.kind is None and rule.threshold(0.1) is None and rule.max_lr(3.0) is None and rule.text
    assert stability_rule("adam").curvature == "preconditioned"
    assert stability_rule("gd").max_lr(-1.0) is None  # no positive curvature: no limit
    with pytest.raises(ValueError, match="lr must be"):
        stability_rule("gd").threshold(0.0)
    with pytest.raises(TypeError, match="optimizer must be"):
        stability_rule(3)


@pytest.mark.parametrize("maker", [lambda p: torch.optim.Adam(p, lr=0.01), lambda p: ro.Adam(p, lr=0.01)])
def test_preconditioned_sharpness_equals_the_dense_eigenvalue_of_p_inverse_h(maker):
    model = _mlp()
    x, y = _data()
    loss_fn = nn.CrossEntropyLoss()
    opt = maker(model.parameters())
    _train_steps(model, opt, x, y, 4)
    rec = SharpnessMonitor(model, loss_fn, (x, y), optimizer=opt, tol=1e-10).measure()
    b1, b2 = 0.9, 0.999
    p_diag = []
    for p in model.parameters():
        st = opt.state[p]
        t = float(st["step"])
        p_diag.append(((1 - b1**t) * ((st["exp_avg_sq"] / (1 - b2**t)).sqrt() + 1e-8)).reshape(-1))
    d = torch.cat(p_diag).double()
    h = _dense_hessian(model, loss_fn, x, y)
    want = float(torch.linalg.eigvalsh(h / d.sqrt()[:, None] / d.sqrt()[None, :]).max())
    assert rec["rule"] == "adam"
    assert rec["preconditioned"] == pytest.approx(want, rel=1e-7)
    assert rec["sharpness"] == rec["preconditioned"]
    assert rec["threshold"] == pytest.approx(38 / 0.01) and rec["ratio"] == pytest.approx(want * 0.01 / 38, rel=1e-7)


def test_adam_before_its_first_step_has_no_preconditioned_sharpness():
    model = _mlp()
    x, y = _data()
    opt = torch.optim.Adam(model.parameters())
    rec = SharpnessMonitor(model, nn.CrossEntropyLoss(), (x, y), optimizer=opt).measure()
    assert rec["lambda_max"] > 0 and rec["preconditioned"] is None and rec["ratio"] is None


def test_warm_start_needs_fewer_hvps_than_cold():
    """The same measurements (every step of slow training), warm-started and cold: the warm monitor
    finds the same lambda_max with fewer Hessian-vector products in total."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 4)).double()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 8, generator=g, dtype=torch.float64), torch.randint(0, 4, (64,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    warm = SharpnessMonitor(model, nn.CrossEntropyLoss(), (x, y), optimizer=opt, tol=1e-6)
    cold = SharpnessMonitor(model, nn.CrossEntropyLoss(), (x, y), optimizer=opt, tol=1e-6, warm_start=False)
    for _ in range(8):
        _train_steps(model, opt, x, y, 1)
        warm.step()
        cold.step()
    w, c = warm.columns(), cold.columns()
    assert w["lambda_max"] == pytest.approx(c["lambda_max"], rel=1e-5)
    assert sum(w["hvps"][1:]) < sum(c["hvps"][1:])
    assert all(a <= b for a, b in zip(w["hvps"][1:], c["hvps"][1:]))


def test_model_grads_modes_and_rng_are_untouched():
    model = _mlp(dropout=True)
    model.train()
    model[1].eval()  # a submodule in its own mode
    x, y = _data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8, shuffle=True)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    _train_steps(model, opt, x, y, 2)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()  # gradients the user is about to use
    params = [p.detach().clone() for p in model.parameters()]
    grads = [p.grad.clone() for p in model.parameters()]
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    for data in ((x, y), loader):
        rng = torch.get_rng_state()
        mon = SharpnessMonitor(model, nn.CrossEntropyLoss(), data, optimizer=opt, k=2)
        mon.measure()
        mon.measure()
        assert torch.equal(torch.get_rng_state(), rng)
        assert all(torch.equal(a, b) for a, b in zip(params, model.parameters()))
        assert all(torch.equal(a, p.grad) for a, p in zip(grads, model.parameters()))
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in buffers.items())
        assert [m.training for m in model.modules()] == modes


def test_records_are_json_safe_columns_every_k_steps_and_resume_exactly():
    model = _mlp()
    x, y = _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.5)
    mon = SharpnessMonitor(model, nn.CrossEntropyLoss(), (x, y), every=3, optimizer=opt, k=2)
    out = [mon.step() for _ in range(7)]
    assert [r is not None for r in out] == [False, False, True, False, False, True, False]
    cols = mon.columns()
    assert cols["step"] == [3, 6] and cols["rule"] == ["heavy_ball", "heavy_ball"]
    assert len(cols["eigenvalues"][0]) == 2 and cols["eigenvalues"][0][0] == cols["lambda_max"][0]
    json.dumps(mon.records, allow_nan=False)
    json.dumps(cols, allow_nan=False)

    # resume: a monitor restored from state_dict continues as the uninterrupted one does
    def run(split: int | None):
        m = _mlp()
        o = torch.optim.SGD(m.parameters(), lr=0.3)
        mon = SharpnessMonitor(m, nn.CrossEntropyLoss(), (x, y), every=2, optimizer=o, tol=1e-4)
        for i in range(8):
            _train_steps(m, o, x, y, 1)
            mon.step()
            if i == split:
                state = mon.state_dict()
                mon = SharpnessMonitor(m, nn.CrossEntropyLoss(), (x, y), every=2, optimizer=o, tol=1e-4)
                mon.load_state_dict(state)
        return [{k: v for k, v in r.items() if k != "time"} for r in mon.records]

    assert run(None) == run(4)


def test_a_diverged_model_gives_a_record_of_nones():
    model = _mlp()
    x, y = _data()
    with torch.no_grad():
        model[0].weight[0, 0] = math.nan
    opt = torch.optim.SGD(model.parameters())
    rec = SharpnessMonitor(model, nn.CrossEntropyLoss(), (x, y), optimizer=opt).measure()
    assert rec["lambda_max"] is None and rec["ratio"] is None and rec["threshold"] == pytest.approx(2 / 1e-3)
    json.dumps(rec, allow_nan=False)


def test_bad_arguments_name_themselves():
    model = _mlp()
    x, y = _data()
    with pytest.raises(ValueError, match="every must be"):
        SharpnessMonitor(model, nn.CrossEntropyLoss(), (x, y), every=0)
    with pytest.raises(ValueError, match="k must be"):
        SharpnessMonitor(model, nn.CrossEntropyLoss(), (x, y), k=0)
    with pytest.raises(TypeError, match="optimizer must be"):
        SharpnessMonitor(model, nn.CrossEntropyLoss(), (x, y), optimizer="sgd")
    with pytest.raises(TypeError, match="data must be"):
        SharpnessMonitor(model, nn.CrossEntropyLoss(), x)
    with pytest.raises(ValueError, match="state must be"):
        SharpnessMonitor(model, nn.CrossEntropyLoss(), (x, y)).load_state_dict({})


# ---- the harness records it: TrainConfig(sharpness_every=..., sharpness_k=..., loss=...) -------------------


def _eos_config(**kw):
    from ravine.experiments import TrainConfig

    base = dict(
        model_kwargs={"hidden": [8], "activation": "tanh"},
        optimizer="torch.SGD",
        optimizer_kwargs={"lr": 0.2, "momentum": 0.5},
        batch_size=None,
        steps=8,
        eval_every=4,
        hessian_samples=200,
        sharpness_every=2,
        sharpness_k=2,
        loss="mse",
        checkpoint_every=3,
        keep_checkpoints=0,
    )
    return TrainConfig(**{**base, **kw})


def test_new_fields_leave_the_hash_of_older_configs_unchanged():
    """A config written before sharpness_every/sharpness_k/loss/world_size existed keeps its hash: the pinned
    hash of the default config from before, and the same SHA-256 of the canonical JSON without the new keys."""
    import hashlib

    from ravine.experiments import TrainConfig

    cfg = TrainConfig()
    assert cfg.run_id() == "de89f6804671"  # TrainConfig().run_id() at ac18057, before the new fields
    new = ("sharpness_every", "sharpness_k", "loss", "world_size", "tensorboard")
    old = {k: v for k, v in cfg.to_dict().items() if k not in new}
    blob = json.dumps(old, sort_keys=True, separators=(",", ":"))
    assert cfg.run_id() == hashlib.sha256(blob.encode()).hexdigest()[:12]
    assert len({cfg.run_id(), cfg.replace(sharpness_every=5).run_id(), cfg.replace(loss="mse").run_id()}) == 3
    with pytest.raises(ValueError, match="loss must be one of"):
        TrainConfig(loss="hinge")
    with pytest.raises(ValueError, match="sharpness_every must be"):
        TrainConfig(sharpness_every=-1)


def test_a_run_stored_before_the_new_fields_is_reused(tmp_path):
    from ravine.experiments import TrainConfig, train
    from ravine.experiments.runs import atomic_write_json, write_status

    cfg = TrainConfig(steps=3)
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("sharpness_every", "sharpness_k", "loss")}
    atomic_write_json(tmp_path / "config.json", old)
    write_status(tmp_path, "completed", step=3, steps=3)
    run = train(cfg, tmp_path, progress=False)  # no "different config" error, nothing trained
    assert run.status == "completed" and not (tmp_path / "metrics.jsonl").exists()


def test_mse_loss_equals_torchs_mse_on_one_hot_targets():
    from ravine.experiments.train import mse_loss

    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(7, 4, generator=g), torch.randint(0, 4, (7,), generator=g)
    want = 0.5 * 4 * nn.functional.mse_loss(z, nn.functional.one_hot(y, 4).float())  # mean over N*C -> sum over C
    assert float(mse_loss(z, y)) == pytest.approx(float(want), rel=1e-6)
    y2 = y.clone()
    y2[2] = -100  # ignored position
    keep = torch.arange(7) != 2
    assert float(mse_loss(z, y2)) == pytest.approx(float(mse_loss(z[keep], y[keep])), rel=1e-6)


def test_harness_records_sharpness_and_resume_keeps_the_records_consistent(tmp_path):
    """Sharpness records every 2 steps from step 0 with the heavy-ball threshold at the run's lr, and a
    run interrupted after step 5 (checkpoint at 3) resumes to the uninterrupted run's records exactly."""
    from ravine.experiments import Run, train

    cfg = _eos_config()
    ref = train(cfg, tmp_path / "ref", progress=False)
    sharp = ref.columns("sharpness")
    assert list(sharp["step"]) == [0, 2, 4, 6, 8]
    assert list(sharp["rule"]) == ["heavy_ball"] * 5
    assert np.allclose(sharp["threshold"], 2 * 1.5 / 0.2)
    assert np.allclose(sharp["ratio"], sharp["lambda_max"] / sharp["threshold"])
    assert all(len(e) == 2 for e in sharp["eigenvalues"]) and (sharp["lambda_max"] > 0).all()

    class Crash(Exception):
        pass

    def crash(rec):
        if rec["step"] == 5:
            raise Crash

    with pytest.raises(Crash):
        train(cfg, tmp_path / "run", progress=False, on_step=crash)
    run = train(cfg, tmp_path / "run", progress=False)
    assert run.status == "completed"

    def strip(records):
        return [{k: v for k, v in r.items() if k not in ("time", "wall")} for r in records]

    assert strip(Run(tmp_path / "run").records) == strip(ref.records)


def test_the_playground_limits_are_the_same_rule():
    """ravine.web's stability_limit maps each optimizer through stability_rule: the same limits (closed
    forms at lambda_max = 4), and the texts the page shows (adaptive optimizers: 'no fixed lr limit')."""
    from ravine.web import app, models

    lam = 4.0
    cases = [
        ("gd", {}, 2 / lam),
        ("sgd", {"momentum": 0.5, "weight_decay": 0.1}, 3.0 / (lam + 0.1)),
        ("momentum", {"beta": 0.5, "form": "ema"}, 3.0 / (0.5 * lam)),
        ("momentum", {"beta": 0.5, "form": "heavy_ball", "dampening": 0.2}, 3.0 / (0.8 * lam)),
        ("nesterov", {}, None),
        ("adam", {}, None),
        ("rmsprop", {}, None),
    ]
    for name, hp, want in cases:
        out = app.stability_limit(models.OptimizerSpec(name=name, hyperparams=hp), lam)
        assert out["lr"] == (None if want is None else pytest.approx(want, rel=1e-12)), name
        assert out["rule"] == stability_rule(name, {**ro.get(name).hyperparams, **hp}).text
    assert "no fixed lr limit" in app.stability_limit(models.OptimizerSpec(name="adam"), lam)["rule"]
    assert "38/λmax(P⁻¹H)" in stability_rule("adam").text
    assert app.stability_limit(models.OptimizerSpec(name="gd"), -1.0)["lr"] is None
