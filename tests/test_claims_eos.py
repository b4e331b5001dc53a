"""The ``edge-of-stability`` experiment: its verdict on synthetic measurements on both sides of every
threshold, its per-run measurements on hand-made records, its figure, and a tiny end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ravine.experiments import claims
from ravine.experiments.claims import Store
from ravine.experiments.claims import edge_of_stability as eos

GOOD = {
    "rise": 3.0,
    "max_ratio": 1.1,
    "median_ratio_second_half": 1.02,
    "final_over_reach": 0.4,
    "increasing_fraction": 0.2,
    "first_reach_step": 100,
    "lr": 0.3,
}


def _measured(**overrides):
    runs = {
        "gd-lr0.3": dict(GOOD),
        "gd-lr0.6": dict(GOOD, lr=0.6),
        "heavy-ball-lr0.3": dict(GOOD),
        "adam-lr0.002": dict(GOOD, lr=0.002),
    }
    runs["gd-lr0.6"].update(overrides)
    return {"runs": runs, "hidden": [64, 64], "n_train": 1438, "steps": 800, "beta_heavy_ball": 0.9}


def test_verdict_supported_when_every_run_shows_every_part():
    v = eos.verdict(_measured())
    assert v.status == "supported"
    assert len(v.checks) == 4 * 6
    assert "GD at lr 0.3, 0.6" in v.scale and "Adam at lr 0.002" in v.scale and "4 of 4 runs" in v.scale


@pytest.mark.parametrize(
    ("key", "bad", "grey", "check"),
    [
        ("rise", 1.1, 1.2, "rise"),  # threshold 1.25 +- 0.1
        ("max_ratio", 0.8, 0.87, "reach"),  # 0.9 +- 0.05
        ("median_ratio_second_half", 0.7, 0.78, "hover (low)"),  # 0.8 +- 0.05
        ("median_ratio_second_half", 1.4, 1.28, "hover (high)"),  # 1.25 +- 0.05
        ("final_over_reach", 1.1, 0.97, "loss falls"),  # < 1 +- 0.05
        ("increasing_fraction", 0.02, 0.06, "non-monotone"),  # > 0.05 +- 0.02
    ],
)
def test_verdict_each_threshold_both_sides_and_grey_zone(key, bad, grey, check):
    v = eos.verdict(_measured(**{key: bad}))
    assert v.status == "not supported"
    failing = [c.name for c in v.checks if c.status == "not supported"]
    assert failing == [f"gd-lr0.6: {check}"]
    assert "gd-lr0.6" in v.explanation and check in v.explanation and "3 of 4 runs" in v.scale
    g = eos.verdict(_measured(**{key: grey}))
    assert g.status == "inconclusive"
    assert [c.name for c in g.checks if c.status != "supported"] == [f"gd-lr0.6: {check}"]
    # a run that measured nothing (diverged) is inconclusive, never supported
    assert eos.verdict(_measured(**{key: None})).status != "supported"


def test_measure_run_on_hand_made_records():
    """Ratios 0.5, 0.7, 0.95, 1.1, 1.0, 1.05 at steps 0, 10, ..., 50 of a 60-step run; the loss before
    update t is loss[t - 1]. The threshold is first reached (>= 0.9) at step 20, so the loss there is the
    step-21 record; after it the loss goes up on exactly 2 of the following steps."""
    sharp = {"step": np.arange(0, 60, 10), "ratio": np.array([0.5, 0.7, 0.95, 1.1, 1.0, 1.05])}
    loss = np.linspace(1.0, 0.1, 60)
    loss[30] = loss[29] + 0.01  # step 31's loss rises
    loss[45] = loss[44] + 0.01  # step 46's
    steps = {"step": np.arange(1, 61), "loss": loss}
    m = eos.measure_run(sharp, steps, 60)
    assert m["initial_ratio"] == 0.5 and m["max_ratio"] == 1.1 and m["rise"] == pytest.approx(2.2)
    assert m["first_reach_step"] == 20 and m["loss_at_reach"] == pytest.approx(loss[20])
    assert m["median_ratio_second_half"] == pytest.approx(np.median([1.0, 1.05]))  # steps 40 and 50 > 30
    assert m["above_fraction_second_half"] == pytest.approx(0.5)
    assert m["increasing_fraction"] == pytest.approx(2 / 39)  # steps 22..60 compared with their previous step
    assert m["final_over_reach"] == pytest.approx(loss[-1] / loss[20])
    never = eos.measure_run({"step": sharp["step"], "ratio": sharp["ratio"] * 0.5}, steps, 60)
    assert never["first_reach_step"] is None and np.isnan(never["final_over_reach"])
    assert eos.verdict(_measured(**never)).status == "not supported"


def test_plot_stability_draws_a_png_and_refuses_nothing(tmp_path):
    from ravine.plots.stability import StabilityPanel, plot_stability

    panel = StabilityPanel(
        "gd, η = 0.5", [0, 10, 20], [1.0, None, 3.9], [4.0, 4.0, 4.0], "λmax(H)", "2/η", [0, 1, 2], [1.0, 0.5, 0.6], 10
    )
    path = plot_stability(tmp_path / "eos.png", [panel], suptitle="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="panels must hold"):
        plot_stability(tmp_path / "none.png", [])


def test_tiny_end_to_end(tmp_path):
    store = Store(tmp_path, "tiny")
    res = claims.get("edge-of-stability").run(store, claims.Progress(enabled=False))
    assert res.size == "tiny" and res.verdict.status in claims.STATUSES
    assert eos.verdict(res.measurements).status == res.verdict.status
    assert len(res.runs) == 3 and len(res.verdict.checks) == 18
    for f in res.figures:
        assert open(f, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    runs = res.measurements["runs"]
    assert {r["optimizer"] for r in runs.values()} == {"gd", "heavy_ball", "adam"}
    assert runs["gd-lr0.45"]["threshold"] == pytest.approx(2 / 0.45)
    assert runs["heavy-ball-lr0.3"]["threshold"] == pytest.approx(2 * 1.9 / 0.3)
    assert runs["adam-lr0.002"]["threshold"] == pytest.approx(38 / 0.002)
    assert "gd-lr0.45 (threshold 4.444)" in res.reading
    json.dumps(res.to_json(), allow_nan=False)
