"""Tests of the claim experiments: verdict rules on synthetic measurements, the statistics they use,
the registry, result persistence, and a tiny end-to-end run through the real harness."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ravine.experiments import claims
from ravine.experiments.claims import Check, Result, Store, Verdict, combine, threshold_check
from ravine.experiments.claims import _stats as st

# ------------------------------------------------------------------------------------------- checks


def test_threshold_check_sides_and_grey_zone():
    assert threshold_check("x", 0.4, "<", 0.5).status == "supported"
    assert threshold_check("x", 0.6, "<", 0.5).status == "not supported"
    assert threshold_check("x", 0.5, "<", 0.5).status == "not supported"
    assert threshold_check("x", 0.5, "<=", 0.5).status == "supported"
    assert threshold_check("x", 2.0, ">=", 2.0).status == "supported"
    assert threshold_check("x", 0.52, "<", 0.5, margin=0.05).status == "inconclusive"
    assert threshold_check("x", 0.48, "<", 0.5, margin=0.05).status == "inconclusive"
    assert threshold_check("x", 0.44, "<", 0.5, margin=0.05).status == "supported"
    assert threshold_check("x", float("nan"), "<", 0.5).status == "inconclusive"
    assert threshold_check("x", float("inf"), ">", 0.5).status == "inconclusive"
    c = threshold_check("x", 0.1, "<", 0.5, margin=0.05)
    assert "< 0.5" in c.threshold and "0.05" in c.threshold


def test_threshold_check_bad_arguments():
    with pytest.raises(ValueError, match="op must be one of"):
        threshold_check("x", 1.0, "==", 1.0)
    with pytest.raises(ValueError, match=r"margin must be in \[0, inf\], got -1"):
        threshold_check("x", 1.0, "<", 1.0, margin=-1)
    with pytest.raises(ValueError, match="status must be one of"):
        Check("x", 1.0, "< 1", "maybe")


def test_combine_rule():
    s, n, i = (Check("a", 1, "", "supported"), Check("b", 1, "", "not supported"), Check("c", 1, "", "inconclusive"))
    assert combine([s, s]) == "supported"
    assert combine([s, i]) == "inconclusive"
    assert combine([s, i, n]) == "not supported"
    assert combine([]) == "inconclusive"
    v = Verdict.from_checks([s, n], "why")
    assert v.status == "not supported"
    assert v.numbers == {"a": 1.0, "b": 1.0}


# -------------------------------------------------------------------------------------- statistics


def test_linear_fit_matches_numpy_polyfit():
    rng = np.random.default_rng(0)
    x = rng.normal(size=20)
    y = 1.7 * x - 0.3 + 0.1 * rng.normal(size=20)
    slope, icpt, r = st.linear_fit(x, y)
    ps, pi = np.polyfit(x, y, 1)
    assert slope == pytest.approx(ps, rel=1e-12)
    assert icpt == pytest.approx(pi, rel=1e-12)
    assert r == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-12)
    assert math.isnan(st.linear_fit([1.0], [2.0])[0])
    assert math.isnan(st.linear_fit([1.0, float("nan")], [2.0, 3.0])[0])


def test_argmin_log_interp_recovers_parabola_vertex():
    values = 10.0 ** np.arange(-5, -1 + 0.01, 0.5)
    true = -3.2
    losses = (np.log10(values) - true) ** 2 + 1.0
    best, edge = st.argmin_log_interp(values, losses)
    assert not edge
    assert math.log10(best) == pytest.approx(true, abs=1e-9)
    # monotone losses: the optimum is at the edge and reported as such
    best, edge = st.argmin_log_interp(values, np.arange(len(values), dtype=float))
    assert edge and best == pytest.approx(values[0])
    # diverged cells count as +inf
    losses = np.array([np.nan, 3.0, 1.0, 2.0, np.nan])
    best, edge = st.argmin_log_interp(values[:5], losses)
    assert not edge and values[1] <= best <= values[3]


def test_count_spikes_counts_events():
    base = np.ones(100)
    assert st.count_spikes(base) == 0
    y = base.copy()
    y[40:43] = 5.0  # one event of three steps
    y[70] = 3.0
    assert st.count_spikes(y) == 2
    y[90] = float("nan")
    assert st.count_spikes(y) == 3


def test_interp_at_and_ratio():
    assert st.interp_at(1.5, [0, 1, 2], [0, 10, 20]) == pytest.approx(np.interp(1.5, [0, 1, 2], [0, 10, 20]))
    assert math.isnan(st.interp_at(3.0, [0, 1, 2], [0, 10, 20]))
    assert st.ratio(1.0, 4.0) == 0.25
    assert math.isnan(st.ratio(None, 4.0)) and math.isnan(st.ratio(1.0, 0.0))


def test_best_wd_fit_measures_the_diagonal():
    from ravine.experiments.claims.adamw_l2 import best_wd_fit

    lrs = [1e-3, 3e-3, 1e-2, 3e-2]
    wds = list(10 ** np.arange(-6.0, 0.01, 0.5))
    # diagonal: best wd = 1e-6 / lr  ->  slope -1
    z = np.array([[(math.log10(w) - math.log10(1e-6 / lr)) ** 2 for w in wds] for lr in lrs])
    fit = best_wd_fit(lrs, wds, z)
    assert fit["slope"] == pytest.approx(-1.0, abs=1e-6)
    assert fit["interior_fraction"] == 1.0
    # separable: best wd = 1e-3 for every lr  ->  slope 0
    z = np.array([[(math.log10(w) + 3.0) ** 2 for w in wds] for _ in lrs])
    assert best_wd_fit(lrs, wds, z)["slope"] == pytest.approx(0.0, abs=1e-9)


# -------------------------------------------------------------------- verdicts on both sides


def _status(exp: str, m: dict) -> str:
    return claims.get(exp).verdict(m).status


def test_verdict_optimizers():
    # issue 13: GD vs SGD is judged along the data size (tests/test_claims_scale_data.py has the rest)
    scale = {
        "sizes": [1000, 10000, 100000],
        "budget_sgd_updates": 300,
        "gd_cost_fit": {"slope": 1.0},
        "sgd_over_gd_loss_at_equal_time": {"1000": 1.1, "10000": 0.8, "100000": 0.5},
        "crossover": {"status": "bracketed", "lower": 1000.0, "upper": 10000.0, "estimate": 3000.0},
    }
    good = {"data_size": scale, "best_adaptive_over_sgd_final_loss": 0.2}
    assert _status("optimizers", good) == "supported"
    slow = {**scale, "gd_cost_fit": {"slope": 0.3}}
    assert _status("optimizers", {**good, "data_size": slow}) == "not supported"
    # the digits momentum number no longer enters this verdict (the experiment 'momentum' judges it)
    assert _status("optimizers", {**good, "momentum_over_sgd_final_loss": 1.5}) == "supported"
    assert _status("optimizers", {**good, "best_adaptive_over_sgd_final_loss": None}) == "inconclusive"
    # the --full arm's measurements do not enter the verdict
    assert _status("optimizers", {**good, "modern": {"over_adamw": {"lion": 9.0}}}) == "supported"


def test_optimizers_full_arm_tiny(tmp_path):
    """The --full arm's own code, run tiny: every optimizer trains the transformer through the harness
    (Muon as MuonWithAdamW), and each best learning rate and loss are what the run files say."""
    from ravine.experiments import Run
    from ravine.experiments.claims import optimizers as ox

    # the quick and tiny plans (make demo, the other tests) hold none of the arm's runs
    assert len(ox.plan("tiny")) == 12 and len(ox.plan("quick")) == 48
    assert not [p for s in ("tiny", "quick") for p in ox.plan(s) if p.config.model != "mlp"]
    full = ox.plan_modern("full")
    assert len(full) == len(ox.MODERN) * 3 * 3
    assert {(p.config.optimizer, p.config.optimizer_kwargs["lr"]) for p in full} == {
        (n, lr) for n in ox.MODERN for lr in ox.MODERN_LR_GRID[n]
    }

    store = Store(tmp_path, "tiny")
    measured, fig, ids = ox.modern_arm("tiny", store, claims.Progress(enabled=False))
    with open(fig, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    # oracle: the run directories themselves (config.json, metrics.jsonl), read without the arm's code
    by: dict[str, dict[float, list[float]]] = {}
    classes = {}
    for d in (tmp_path / "optimizers" / "runs").iterdir():
        run = Run(d)
        assert run.status == "completed" and d.name in ids
        name, lr = run.config.optimizer, run.config.optimizer_kwargs["lr"]
        by.setdefault(name, {}).setdefault(lr, []).append(run.evals[-1]["test_loss"])
        assert run.evals[0]["step"] == 0 and run.evals[-1]["test_loss"] < run.evals[0]["test_loss"]  # it trained
        classes[name] = run.metadata["optimizer_class"]
    assert sorted(by) == sorted(ox.MODERN) and len(ids) == 14
    best = {n: min(float(np.mean(v)) for v in losses.values()) for n, losses in by.items()}
    for name, losses in by.items():
        means = {lr: float(np.mean(v)) for lr, v in losses.items()}
        lr = min(means, key=means.get)
        assert measured["best_lr"][name] == lr
        assert measured["final_test_loss"][name] == pytest.approx(means[lr], rel=1e-12)
        assert measured["over_adamw"][name] == pytest.approx(best[name] / best["adamw"], rel=1e-12)
    assert classes["muon"] == "ravine.optim.muon.MuonWithAdamW"
    assert {classes[n] for n in ox.MODERN if n != "muon"} == {"ravine.optim.adapter.Optimizer"}


def test_verdict_adam_ablation():
    good = {"nobc_over_adam_early_update": 4.0, "no_v_over_adam_final_loss": 3.0, "no_m_over_adam_final_loss": 1.3}
    assert _status("adam-ablation", good) == "supported"
    assert _status("adam-ablation", {**good, "nobc_over_adam_early_update": 1.0}) == "not supported"
    assert _status("adam-ablation", {**good, "no_m_over_adam_final_loss": 0.7}) == "not supported"
    assert _status("adam-ablation", {**good, "no_m_over_adam_final_loss": 1.01}) == "inconclusive"


def test_verdict_adamw_vs_l2():
    good = {"wd_effect_z": 6.0, "interior_fraction": 1.0, "abs_slope_adamw": 0.1, "slope_gap": 0.9}
    assert _status("adamw-vs-l2", good) == "supported"
    assert _status("adamw-vs-l2", {**good, "abs_slope_adamw": 1.0}) == "not supported"
    assert _status("adamw-vs-l2", {**good, "slope_gap": 0.0}) == "not supported"
    v = claims.get("adamw-vs-l2").verdict({**good, "interior_fraction": 0.25})
    assert v.status == "inconclusive"
    v = claims.get("adamw-vs-l2").verdict({**good, "interior_fraction": 0.25, "abs_slope_adamw": 3.0})
    assert v.status == "inconclusive" and "edge" in v.explanation
    v = claims.get("adamw-vs-l2").verdict({**good, "wd_effect_z": 1.0, "abs_slope_adamw": 3.0})
    assert v.status == "inconclusive" and "not identifiable" in v.explanation


def test_verdict_schedules():
    good = {"wsd_over_constant": 0.95, "wsd_rel_gap_to_cosine": 0.0, "branch_rel_gap_to_cosine_half": 0.005}
    assert _status("schedules", good) == "supported"
    assert _status("schedules", {**good, "wsd_over_constant": 1.05}) == "not supported"
    assert _status("schedules", {**good, "branch_rel_gap_to_cosine_half": 0.08}) == "not supported"
    assert _status("schedules", {**good, "wsd_rel_gap_to_cosine": 0.025}) == "inconclusive"


def test_verdict_finetune():
    good = {
        "forgetting_small_over_pretrain_lr": 0.1,
        "forgetting_layerwise_over_pretrain_lr": 0.4,
        "small_lr_copy_gain": 0.2,
    }
    assert _status("finetune", good) == "supported"
    assert _status("finetune", {**good, "forgetting_small_over_pretrain_lr": 0.9}) == "not supported"
    assert _status("finetune", {**good, "small_lr_copy_gain": -0.2}) == "not supported"
    assert _status("finetune", {**good, "forgetting_small_over_pretrain_lr": None}) == "inconclusive"


def test_finetune_forgetting_ratio_needs_measurable_forgetting():
    from ravine.experiments.claims.finetune import _forgetting_ratio

    assert _forgetting_ratio(0.1, 1.0) == pytest.approx(0.1)
    assert math.isnan(_forgetting_ratio(0.1, 0.0))
    assert math.isnan(_forgetting_ratio(-0.1, -0.05))


def test_verdict_warmup():
    good = {"warmup_gain_post": 0.5, "post_minus_pre_gain": 0.4, "adam_v_early_over_late": 8.0}
    assert _status("warmup", good) == "supported"
    assert _status("warmup", {**good, "warmup_gain_post": -0.3}) == "not supported"
    assert _status("warmup", {**good, "post_minus_pre_gain": 0.03}) == "inconclusive"
    assert _status("warmup", {**good, "adam_v_early_over_late": 1.0}) == "not supported"


def test_verdict_clipping():
    good = {
        "clip_rate": 0.3,
        "spike_reduction": 3.0,
        "divergence_rate_reduction": 1.0,
        "final_loss_clip_over_noclip": 0.2,
    }
    assert _status("clipping", good) == "supported"
    assert _status("clipping", {**good, "divergence_rate_reduction": 0.0}) == "not supported"
    assert _status("clipping", {**good, "spike_reduction": 1.2}) == "inconclusive"
    assert _status("clipping", {**good, "clip_rate": 0.0}) == "inconclusive"


def test_clipping_divergence_rule():
    from ravine.experiments.claims.clipping import diverged

    assert not diverged(2.0, 3.9, "completed")
    assert diverged(2.0, 4.1, "completed")
    assert diverged(2.0, float("nan"), "completed")
    assert diverged(2.0, 1.0, "diverged")


# ------------------------------------------------------------------------ registry, store, results


def test_registry_names_and_errors():
    assert claims.names() == [
        "optimizers",
        "momentum",
        "adam-ablation",
        "adamw-vs-l2",
        "schedules",
        "finetune",
        "warmup",
        "clipping",
        "local-minima",
        "sharp-flat",
        "sgd-noise",
        "saddles",
        "adam-landscape",
        "edge-of-stability",
    ]
    for exp in claims.all_experiments():
        assert exp.claim and exp.title and callable(exp.execute) and callable(exp.verdict)
    with pytest.raises(ValueError, match="unknown experiment 'nope'; valid names: optimizers, momentum, adam-ablation"):
        claims.get("nope")


def test_store_arguments(tmp_path):
    with pytest.raises(ValueError, match="size must be one of"):
        Store(tmp_path, "medium")
    s = Store(tmp_path, "tiny")
    with pytest.raises(ValueError, match="run must be a plain directory name"):
        s.run_dir("x", "../evil")
    assert s.cached("x", "k", lambda: {"a": float("nan"), "b": np.float32(2.0)}) == {"a": None, "b": 2.0}
    assert s.cached("x", "k", lambda: 1 / 0) == {"a": None, "b": 2.0}  # reused, not recomputed


def test_result_json_roundtrip(tmp_path):
    v = Verdict.from_checks([threshold_check("x", float("nan"), "<", 1.0)], "e", "for N >= 3e4")
    r = Result("n", "t", "c", "tiny", v, {"a": np.array([1.0, np.inf])}, [], ["run1"], 1.5, "reading")
    d = json.loads(json.dumps(r.to_json(), allow_nan=False))
    back = Result.from_json(d)
    assert back.verdict.status == "inconclusive"
    assert math.isnan(back.verdict.checks[0].value)
    assert back.measurements == {"a": [1.0, None]}
    assert back.runs == ["run1"]
    assert back.verdict.scale == "for N >= 3e4"
    del d["verdict"]["scale"]  # a result saved before verdicts had a scale still loads
    assert Result.from_json(d).verdict.scale == ""


def test_the_store_alone_says_the_size(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Store().size == "quick" and Store().root == Path("report") / "quick"
    assert Store(size="full").root == Path("report") / "full"
    exp = claims.get("adam-ablation")
    res = exp.run(Store(size="tiny"))  # the size comes from the store: no second setting to disagree
    assert res.size == "tiny" and (tmp_path / "report" / "tiny" / "adam-ablation" / "result.json").exists()


# ---------------------------------------------------------------------------------- end to end


def test_tiny_end_to_end_writes_runs_figures_and_reuses(tmp_path):
    from ravine.experiments import Run

    store = Store(tmp_path, "tiny")
    exp = claims.get("adam-ablation")
    res = exp.run(store, claims.Progress(enabled=False))
    assert res.size == "tiny" and res.verdict.status in claims.STATUSES
    # the verdict is the verdict function of the recorded measurements
    assert exp.verdict(res.measurements).status == res.verdict.status
    assert len(res.runs) == 4
    run_dirs = sorted((tmp_path / "adam-ablation" / "runs").iterdir())
    assert [d.name for d in run_dirs] == sorted(res.runs)
    for d in run_dirs:
        assert Run(d).status == "completed" and len(Run(d).metrics) == 8
    for f in res.figures:
        with open(f, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert store.result_path("adam-ablation").exists()
    # reuse: the saved result comes back as is
    again = exp.run(store, claims.Progress(enabled=False))
    assert again.finished_at == res.finished_at and again.runtime_s == res.runtime_s
    # recomputing the verdict reuses the completed runs (metrics files untouched)
    mtimes = {d.name: (d / "metrics.jsonl").stat().st_mtime_ns for d in run_dirs}
    exp.run(store, claims.Progress(enabled=False), reuse=False)
    assert {d.name: (d / "metrics.jsonl").stat().st_mtime_ns for d in run_dirs} == mtimes


def test_cli_experiment_list_and_unknown(capsys):
    from ravine.cli import main

    assert main(["experiment", "--list"]) == 0
    out = capsys.readouterr().out
    for n in claims.names():
        assert n in out
    assert main(["experiment", "bogus"]) == 2
    assert "unknown experiment 'bogus'" in capsys.readouterr().err
