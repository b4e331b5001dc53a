"""``ravine diagnose`` on real tiny runs made to show each problem, and on healthy runs, which must get
no finding. Evidence is checked against the run's own metrics (the steps quoted exist, the values
quoted are the recorded ones) and the sharpness threshold against 2/lr with the recorded Hessian."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ravine.cli import main
from ravine.experiments import Run, TrainConfig, diagnose, train

BASE = dict(data="digits", model="mlp", model_kwargs={"hidden": [32]}, steps=300, eval_every=100)
RUNS = {
    "healthy_adam": dict(optimizer="adam", optimizer_kwargs={"lr": 1e-3}),
    "healthy_adam_seed1": dict(optimizer="adam", optimizer_kwargs={"lr": 1e-3}, seed=1),
    "healthy_sgd": dict(optimizer="sgd", optimizer_kwargs={"lr": 0.05, "momentum": 0.9}, hessian_every=100),
    "diverge": dict(optimizer="sgd", optimizer_kwargs={"lr": 50.0}),
    "spikes": dict(optimizer="adam", optimizer_kwargs={"lr": 0.05}),
    "early": dict(optimizer="adam", optimizer_kwargs={"lr": 0.2}),
    "explosions": dict(
        optimizer="sgd",
        optimizer_kwargs={"lr": 3.0},
        batch_size=None,
        schedule="warmup_cosine",
        schedule_kwargs={"peak": 3.0, "warmup_steps": 20, "total_steps": 300},
    ),
    "clip_low": dict(
        optimizer="sgd", optimizer_kwargs={"lr": 0.05, "momentum": 0.9}, clip={"kind": "norm", "max_norm": 1e-3}
    ),
    "clip_high": dict(
        optimizer="sgd", optimizer_kwargs={"lr": 0.05, "momentum": 0.9}, clip={"kind": "norm", "max_norm": 1e6}
    ),
    "tiny_lr": dict(optimizer="sgd", optimizer_kwargs={"lr": 1e-6}),
    "sharp": dict(optimizer="sgd", optimizer_kwargs={"lr": 3.0}, batch_size=None, hessian_every=25),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("diagnose")
    return {name: train(TrainConfig(**BASE, **kw), run_dir=root / name, progress=False) for name, kw in RUNS.items()}


def _steps(run: Run) -> dict[int, dict]:
    return {r["step"]: r for r in run.metrics}


@pytest.mark.parametrize("name", ["healthy_adam", "healthy_adam_seed1", "healthy_sgd"])
def test_healthy_runs_get_no_finding(runs, name):
    d = diagnose(runs[name])
    assert d.status == "completed" and d.findings == [], d.to_text()
    assert "no problems found" in d.to_text()


def test_the_healthy_sgd_run_is_checked_for_sharpness(runs):
    d = diagnose(runs["healthy_sgd"])
    assert not any("sharpness" in n for n in d.notes)  # recorded and compared, below the threshold
    lr = runs["healthy_sgd"].metrics[0]["lr"]
    assert all(h["top_eig"] < (2 + 2 * 0.9) / lr for h in runs["healthy_sgd"].hessian)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("diverge", {"divergence"}),
        ("spikes", {"loss_spikes", "update_ratio_high"}),
        ("early", {"early_instability"}),
        ("explosions", {"grad_norm_explosions", "loss_spikes"}),
        ("clip_low", {"clipping_most_steps", "no_progress"}),
        ("clip_high", {"clipping_never"}),
        ("tiny_lr", {"update_ratio_low", "no_progress"}),
        ("sharp", {"sharpness_above_threshold"}),
    ],
)
def test_each_problem_is_found(runs, name, expected):
    d = diagnose(runs[name])
    assert expected <= set(d.codes), d.to_text()
    for f in d.findings:
        assert f.evidence and f.suggestion and f.severity in ("problem", "warning")


def test_divergence_evidence_is_the_recorded_blow_up(runs):
    run = runs["diverge"]
    (f,) = diagnose(run).findings
    at = run.status_info["diverged_at"]
    assert f.steps[-1] == at and f"step {at}" in f.evidence
    recorded = _steps(run)[at]["loss"]
    assert f.values["loss"] == recorded or (np.isnan(recorded) and np.isnan(f.values["loss"]))
    assert f.values["lowest_loss"] == min(r["loss"] for r in run.metrics if r["step"] < at)
    assert f.values["lr"] == 50.0


def test_spike_and_explosion_evidence_quotes_recorded_values(runs):
    for name, code, key, column in [
        ("spikes", "loss_spikes", "first_loss", "loss"),
        ("explosions", "grad_norm_explosions", None, "grad_norm"),
    ]:
        run = runs[name]
        by_step = _steps(run)
        f = next(f for f in diagnose(run).findings if f.code == code)
        assert f.steps and all(s in by_step for s in f.steps)
        if key:
            assert f.values[key] == by_step[f.steps[0]][column]
        first = by_step[f.steps[0]][column]
        assert f"step {f.steps[0]} ({'loss' if column == 'loss' else 'norm'} {first:.3g})" in f.evidence


def test_early_instability_is_not_reported_when_the_run_warms_up(runs):
    assert "early_instability" not in diagnose(runs["explosions"]).codes  # it warms up: spikes, not early


def test_clipping_findings_state_the_fraction(runs):
    low = next(f for f in diagnose(runs["clip_low"]).findings if f.code == "clipping_most_steps")
    clipped = [r["clipped"] for r in runs["clip_low"].metrics]
    assert low.values["fraction"] == pytest.approx(np.mean(clipped)) and low.values["fraction"] > 0.5
    never = next(f for f in diagnose(runs["clip_high"]).findings if f.code == "clipping_never")
    assert never.values["max_seen"] == pytest.approx(max(r["grad_norm"] for r in runs["clip_high"].metrics))


def test_sharpness_is_compared_with_two_over_lr(runs):
    run = runs["sharp"]
    f = next(f for f in diagnose(run).findings if f.code == "sharpness_above_threshold")
    eig = {h["step"]: h["top_eig"] for h in run.hessian}
    over = [s for s, e in eig.items() if e > 2 / 3.0]
    assert f.steps == over and f.values["first_threshold"] == pytest.approx(2 / 3.0)


def test_sharpness_is_not_compared_for_adam(runs):
    d = diagnose(runs["healthy_adam"])
    assert any("hessian_every" in n for n in d.notes)


def test_cli_text_and_json(runs, capsys):
    assert main(["diagnose", str(runs["clip_high"].path)]) == 0
    out = capsys.readouterr().out
    assert "clipping never acted" in out and "evidence:" in out and "try:" in out
    assert main(["diagnose", str(runs["tiny_lr"].path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {f["code"] for f in doc["findings"]} >= {"update_ratio_low", "no_progress"} and doc["healthy"] is False
    assert main(["diagnose", str(runs["healthy_adam"].path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["healthy"] is True


def test_cli_lr_find(runs, tmp_path, capsys):
    plot, out = tmp_path / "lr.png", tmp_path / "lr.json"
    args = ["lr-find", str(runs["healthy_adam"].path), "--steps", "40", "--plot", str(plot), "--json", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "valley" in text and "steepest" in text and "minimum/10" in text
    doc = json.loads(out.read_text())
    assert len(doc["lrs"]) <= 40 and set(doc["suggestions"]) == {"steepest", "valley", "minimum/10"}
    assert plot.stat().st_size > 0


def test_not_a_run_directory(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        diagnose(tmp_path)
    assert main(["diagnose", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
