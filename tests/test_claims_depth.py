"""Tests of the ``warmup`` (depth x learning rate) and ``adamw-vs-l2`` (both decay conventions) experiments.

Oracles: ``torch.autograd.grad`` on an independently built copy of the run's model (the probe's
per-layer gradient norms), the training harness's own first-step records (the probe rebuilds the
run's model and batch), ``torch.optim.AdamW`` (torch's lr-coupled decay) and Loshchilov & Hutter's
Algorithm 2 written out by hand (the paper's decoupled decay), numpy for the noise statistics, and
synthetic measurements on both sides of every verdict threshold.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ravine.experiments import TrainConfig, build_model, load_data, train
from ravine.experiments.claims import Store
from ravine.experiments.claims import adamw_l2 as aw
from ravine.experiments.claims import warmup as wu
from ravine.experiments.claims._common import step_columns
from ravine.experiments.data import cross_entropy


def _tf_config(norm: str = "post", depth: int = 2, lr: float = 1e-2, warmup: int = 0, steps: int = 1, seed: int = 3):
    return TrainConfig(
        data="chars",
        data_kwargs={"block_size": 16, "eval_blocks": 8},
        model="transformer",
        model_kwargs={"d_model": 16, "n_layer": depth, "n_head": 2, "norm": norm},
        optimizer="adam",
        optimizer_kwargs={"lr": lr, "b1": 0.9, "b2": 0.98},
        schedule="warmup_cosine",
        schedule_kwargs={"peak": lr, "warmup_steps": warmup, "total_steps": 10},
        steps=steps,
        batch_size=4,
        eval_every=0,
        seed=seed,
    )


# ------------------------------------------------------------------------------- the init probe


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_probe_gradient_norms_by_layer_match_autograd(norm):
    cfg = _tf_config(norm, depth=3)
    probe = wu.init_probe(cfg)
    ds = load_data("chars", **cfg.data_kwargs)
    torch.manual_seed(cfg.seed)
    model = build_model("transformer", vocab_size=ds.vocab_size, block_size=16, **cfg.model_kwargs)
    x, y = ds.sampler(cfg.batch_size, seed=cfg.seed).next()
    names, params = zip(*model.named_parameters())
    grads = torch.autograd.grad(cross_entropy(model(x), y), params)
    expected = np.zeros(3 + 2)
    for n, g in zip(names, grads):
        if n.startswith(("tok_emb", "pos_emb")):
            k = 0
        elif n.startswith("blocks."):
            k = 1 + int(n.split(".")[1])
        else:
            k = 4
        expected[k] += float((g.double() ** 2).sum())
    np.testing.assert_allclose(probe["grad_norm"], np.sqrt(expected), rtol=1e-5)
    assert probe["groups"] == ["embeddings", "block 1", "block 2", "block 3", "head"]
    assert probe["grad_last_over_first"] == pytest.approx(math.sqrt(expected[3] / expected[1]), rel=1e-5)


@pytest.mark.parametrize("warmup", [0, 4])
def test_probe_rebuilds_the_runs_model_batch_and_first_update(tmp_path, warmup):
    """The harness's own records of step 1 (global gradient norm, |w1 - w0| / |w0| under ravine's Adam)
    equal the probe's (its model, batch and torch.optim.Adam step at the schedule's first rate)."""
    cfg = _tf_config("post", depth=2, warmup=warmup)
    run = train(cfg, tmp_path / "run", progress=False)
    cols = step_columns(run)
    probe = wu.init_probe(cfg)
    assert math.sqrt(sum(g * g for g in probe["grad_norm"])) == pytest.approx(float(cols["grad_norm"][0]), rel=1e-4)
    assert probe["lr0"] == pytest.approx(1e-2 / warmup if warmup else 1e-2)
    torch.manual_seed(cfg.seed)
    ds = load_data("chars", **cfg.data_kwargs)
    w0 = torch.cat(
        [
            p.detach().reshape(-1)
            for p in build_model(
                "transformer", vocab_size=ds.vocab_size, block_size=16, **cfg.model_kwargs
            ).parameters()
        ]
    )
    ratio = math.sqrt(sum(u * u for u in probe["update_norm"])) / float(w0.norm())
    assert ratio == pytest.approx(float(cols["update_ratio"][0]), rel=1e-3)


def test_probe_first_adam_step_is_lr_per_coordinate():
    """Adam's first step is lr * g / (|g| + eps): every coordinate with a non-negligible gradient moves by lr."""
    probe = wu.init_probe(_tf_config("pre", depth=2, lr=1e-3))
    for rms in probe["update_rms"][1:-1]:
        assert rms == pytest.approx(1e-3, rel=0.05)


# ----------------------------------------------------------------------------- warmup summaries


def _run(norm, depth, warmup, lr, loss, seed=0, b2=0.98):
    return {
        "norm": norm,
        "depth": depth,
        "warmup": warmup,
        "lr": lr,
        "b2": b2,
        "seed": seed,
        "final_test_loss": loss,
        "failed": (not math.isfinite(loss)) or loss > 3.0,
        "diverged": not math.isfinite(loss),
    }


def test_summarize_finds_failures_rescues_and_gains():
    runs = {}
    for s in (0, 1):
        for d in (2, 4):
            runs[f"pre-{d}-0-{s}"] = _run("pre", d, False, 1e-2, 2.0, s)
            runs[f"pre-{d}-1-{s}"] = _run("pre", d, True, 1e-2, 2.0, s)
            runs[f"post-{d}-1-{s}"] = _run("post", d, True, 1e-2, 2.1, s)
        runs[f"post-2-0-{s}"] = _run("post", 2, False, 1e-2, 2.2, s)
        runs[f"post-4-0-{s}"] = _run("post", 4, False, 1e-2, float("nan") if s == 0 else 3.5, s)
    out = wu.summarize(runs, cap=4.6)
    assert out["warmup_gain_post_by_depth"]["2"] == pytest.approx(0.1)
    assert out["warmup_gain_post_by_depth"]["4"] == pytest.approx((4.6 + 3.5) / 2 - 2.1)
    assert out["warmup_gain_pre_by_depth"] == {"2": 0.0, "4": 0.0}
    assert out["post_fails_without_warmup"] == [{"depth": 4, "lr": 1e-2, "b2": 0.98}]
    assert out["warmup_rescues"] == [{"depth": 4, "lr": 1e-2, "b2": 0.98}]
    assert out["cells"]["L4-post-no-warmup"]["failure_rate"] == 1.0
    assert out["cells"]["L4-post-no-warmup"]["divergence_rate"] == 0.5
    assert out["post_fails_with_warmup"] == [] and out["diverged_runs"] == 1
    runs["post-2-1-0"] = _run("post", 2, True, 1e-2, 3.2, 0)
    runs["post-2-1-1"] = _run("post", 2, True, 1e-2, 3.2, 1)
    assert wu.summarize(runs, cap=4.6)["post_fails_with_warmup"] == [{"depth": 2, "lr": 1e-2, "b2": 0.98}]


def _wstatus(measured):
    return wu.verdict(measured).status


def test_warmup_verdict_both_sides_of_each_threshold_and_its_scale():
    good = {
        "warmup_gain_post": 0.5,
        "post_minus_pre_gain": 0.4,
        "adam_v_early_over_late": 8.0,
        "warmup_gain_post_by_depth": {"2": 0.0, "4": 0.5},
        "warmup_gain_pre_by_depth": {"2": 0.0, "4": 0.1},
        "warmup_rescues": [{"depth": 4, "lr": 0.03, "b2": 0.98}],
        "post_fails_without_warmup": [{"depth": 4, "lr": 0.03, "b2": 0.98}],
        "lrs": [0.01, 0.03],
        "steps": 150,
    }
    v = wu.verdict(good)
    assert v.status == "supported"
    assert "at depth 4 " in v.scale and "rescue" in v.scale and "4 layers lr 0.03" in v.scale
    assert _wstatus({**good, "warmup_gain_post": 0.01}) == "not supported"
    assert _wstatus({**good, "warmup_gain_post": 0.06}) == "inconclusive"
    assert _wstatus({**good, "post_minus_pre_gain": -0.1}) == "not supported"
    assert _wstatus({**good, "post_minus_pre_gain": 0.04}) == "inconclusive"
    assert _wstatus({**good, "adam_v_early_over_late": 1.0}) == "not supported"
    assert _wstatus({**good, "adam_v_early_over_late": 2.1}) == "inconclusive"
    none = wu.verdict({**good, "warmup_gain_post_by_depth": {"2": 0.0, "4": 0.0}, "warmup_rescues": []})
    assert "at no measured depth" in none.scale and "no rescue seen" in none.scale
    hurt = wu.verdict({**good, "warmup_gain_post_by_depth": {"2": 0.0, "4": -0.5}, "post_fails_with_warmup": [{}]})
    assert "warmup hurt Post-LN at depth 4 (with warmup it failed in 1 settings)" in hurt.scale


# ------------------------------------------------------------------------ weight-decay conventions


def _digits_cfg(optimizer, kw, steps=6):
    return TrainConfig(
        data="digits",
        data_kwargs={"test_fraction": 0.85},
        model="mlp",
        model_kwargs={"hidden": [16]},
        optimizer=optimizer,
        optimizer_kwargs=kw,
        schedule="warmup_cosine",
        schedule_kwargs={"peak": kw["lr"], "warmup_steps": 0, "total_steps": steps},
        steps=steps,
        batch_size=32,
        eval_every=0,
        seed=0,
    )


def test_paper_convention_run_is_torch_adamw_run_with_wd_over_lr(tmp_path):
    """The experiment reads its AdamW grid in torch's convention by wd = lambda / lr: the harness run with
    ravine's decoupled AdamW at (lr, lambda) equals torch.optim.AdamW at (lr, lambda / lr) step by step."""
    lr, lam = 3e-2, 0.05
    ours = train(
        _digits_cfg("adamw", {"lr": lr, "weight_decay": lam, "decay_convention": "decoupled", "lr_peak": lr}),
        tmp_path / "ours",
        progress=False,
    )
    ref = train(_digits_cfg("torch.AdamW", {"lr": lr, "weight_decay": lam / lr}), tmp_path / "ref", progress=False)
    np.testing.assert_allclose(step_columns(ours)["loss"], step_columns(ref)["loss"], rtol=1e-5)
    np.testing.assert_allclose(step_columns(ours)["update_ratio"], step_columns(ref)["update_ratio"], rtol=1e-4)


def test_decoupled_decay_matches_algorithm_2_by_hand():
    """Loshchilov & Hutter, Algorithm 2: w <- w - eta_t (alpha m_hat / (sqrt(v_hat) + eps) + lambda w),
    with eta_t the schedule multiplier and alpha the peak rate."""
    import ravine.optim as ro
    import ravine.schedules as rs

    alpha, lam, b1, b2, eps = 0.1, 0.2, 0.9, 0.999, 1e-8
    sched = rs.get("warmup_cosine", peak=alpha, warmup_steps=1, total_steps=5)
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    opt = ro.Optimizer([w], ro.adamw(sched, weight_decay=lam, decay_convention="decoupled"))
    grads = [torch.tensor([0.3, -0.1, 2.0]), torch.tensor([-0.5, 0.4, 1.0]), torch.tensor([0.2, 0.2, -0.3])]
    ref = w.detach().clone()
    m = torch.zeros(3, dtype=torch.float64)
    v = torch.zeros(3, dtype=torch.float64)
    for t, g in enumerate(grads, start=1):
        w.grad = g.double().clone()
        opt.step()
        g = g.double()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mh, vh = m / (1 - b1**t), v / (1 - b2**t)
        eta = sched(t - 1) / alpha
        ref = ref - eta * (alpha * mh / (vh.sqrt() + eps) + lam * ref)
        torch.testing.assert_close(w.detach(), ref, rtol=1e-12, atol=1e-12)


def test_torch_convention_matches_torch_adamw():
    import ravine.optim as ro

    torch.manual_seed(0)
    w = torch.randn(5, dtype=torch.float64, requires_grad=True)
    w_ref = w.detach().clone().requires_grad_(True)
    ours = ro.Optimizer([w], ro.adamw(0.05, weight_decay=0.3))
    ref = torch.optim.AdamW([w_ref], lr=0.05, weight_decay=0.3)
    for _ in range(4):
        g = torch.randn(5, dtype=torch.float64)
        w.grad, w_ref.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(w.detach(), w_ref.detach(), rtol=1e-12, atol=1e-12)


# -------------------------------------------------------------------------- weight-decay statistics


def test_wd_effect_against_numpy():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(3, 2, 4)) * 0.01 + np.array([0.5, 0.3, 0.4, 0.6])  # best column: 1
    out = aw.wd_effect(scores)
    mean = scores.mean(axis=0)
    effect = np.mean([mean[i, 0] - mean[i].min() for i in range(2)])
    sd = math.sqrt(scores.var(axis=0, ddof=1).mean())
    assert out["effect"] == pytest.approx(effect)
    assert out["sd"] == pytest.approx(sd)
    assert out["z"] == pytest.approx(effect / (sd * math.sqrt(2 / 3)))
    assert math.isnan(aw.wd_effect(scores[:1])["z"])
    with pytest.raises(ValueError, match=r"scores must have shape \(seeds, lrs, wds\)"):
        aw.wd_effect(scores[0])


def _astatus(measured):
    return aw.verdict(measured).status


def test_adamw_verdict_both_sides_of_each_threshold():
    good = {
        "wd_effect_z": 6.0,
        "interior_fraction": 1.0,
        "abs_slope_adamw": 0.1,
        "slope_gap": 0.9,
        "lrs": [1e-3, 1e-2],
        "wds": [1e-5, 1e-2],
        "steps": 500,
        "seeds": 2,
        "task": "an MLP",
    }
    v = aw.verdict(good)
    assert v.status == "supported" and "an MLP" in v.scale and "6.0x seed noise" in v.scale
    assert _astatus({**good, "abs_slope_adamw": 1.0}) == "not supported"
    assert _astatus({**good, "abs_slope_adamw": 0.45}) == "inconclusive"
    assert _astatus({**good, "slope_gap": 0.0}) == "not supported"
    assert _astatus({**good, "slope_gap": 0.35}) == "inconclusive"
    v = aw.verdict({**good, "wd_effect_z": 2.0, "abs_slope_adamw": 3.0})
    assert v.status == "inconclusive" and "not identifiable" in v.explanation
    assert _astatus({**good, "wd_effect_z": 3.0}) == "supported"
    v = aw.verdict({**good, "interior_fraction": 0.25, "abs_slope_adamw": 3.0})
    assert v.status == "inconclusive" and "edge" in v.explanation


# ---------------------------------------------------------------------------- tiny end-to-end


def test_warmup_tiny_end_to_end(tmp_path):
    res = wu.EXPERIMENT.run(Store(tmp_path, "tiny"), reuse=False)
    m = res.measurements
    assert res.verdict.status in ("supported", "not supported", "inconclusive") and res.verdict.scale
    assert len(res.figures) == 3 and all(__import__("pathlib").Path(f).exists() for f in res.figures)
    assert m["depths"] == [2] and set(m["warmup_gain_post_by_depth"]) == {"2"}
    run = next(iter(m["runs"].values()))
    assert len(run["probe"]["grad_norm"]) == 2 + 2 and run["first_step_update_ratio"] > 0
    assert m["mechanism"]["post"]["2"]["output_change"] > 0


def test_adamw_tiny_end_to_end(tmp_path):
    res = aw.EXPERIMENT.run(Store(tmp_path, "tiny"), reuse=False)
    m = res.measurements
    assert len(res.figures) == 2
    assert np.asarray(m["adamw"]["score_by_seed"]).shape == (2, 2, 3)
    best = m["adamw"]["best_wd"]
    np.testing.assert_allclose(m["adamw_torch_convention"]["best_wd"], [b / lr for b, lr in zip(best, m["lrs"])])
    if np.isfinite(m["adamw"]["slope"]):
        assert m["slope_adamw_torch_convention"] == pytest.approx(m["adamw"]["slope"] - 1.0)
