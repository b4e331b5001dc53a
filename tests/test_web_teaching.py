"""The playground's teaching side (ravine.web.teaching, ravine.plots.playground): presets, "what you are seeing",
the captioned export.

Oracles: closed forms of gradient descent on a quadratic (``y_k = (1 - lr lambda)^k y_0``; it diverges iff
``lr lambda > 2``), Adam's first step from torch.optim.Adam (``lr g / (|g| + eps)``, and without bias correction
``(1 - b1) / sqrt(1 - b2)`` times that), the Hessian of the double well ``(x^2 - 1)^2 + y^2`` at its saddle
(``diag(-4, 2)``), the clipped step's length bound ``lr * max_norm``, and the PNG format (decoded by Pillow).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from ravine.plots.playground import DPI, FIGSIZE, PAGE_STYLE
from ravine.web import models, teaching
from ravine.web.app import compute_trajectories, create_app, stability_limit


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app()) as c:
        yield c


def _seeing(body: dict) -> tuple[list[str], dict]:
    req = models.TrajectoryRequest.model_validate(body)
    out = compute_trajectories(req)
    return teaching.seeing(req, out, stability_limit), out


def _numbers(sentence: str) -> list[float]:
    return [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", sentence)]


# ------------------------------------------------------------------------------------------------ presets
def test_every_preset_is_a_valid_request_and_runs(client):
    served = client.get("/api/presets").json()
    assert [p["id"] for p in served] == [p.id for p in teaching.PRESETS]
    assert {"bowl", "zigzag", "adam_bias", "lr_beta_sweep", "warmup_cosine", "saddle", "saddle_noise", "sharp_flat",
            "cliff", "cliff_clip"} <= {p["id"] for p in served}
    for p in served:
        assert len(p["caption"]) == 2 and all(line.strip() for line in p["caption"])
        r = client.post("/api/trajectories", json=p["request"])
        assert r.status_code == 200, (p["id"], r.text)
        assert len(r.json()["runs"]) == len(p["request"]["optimizers"])
        if p["sweep"] is not None:
            sweep = teaching.sweep_request(next(q for q in teaching.PRESETS if q.id == p["id"]))
            s = client.post("/api/sweep", json=sweep.model_dump(mode="json"))
            assert s.status_code == 200 and len(s.json()["final_loss"]) == p["sweep"]["n"]
    bowl = served[0]
    assert bowl["request"]["surface"]["name"] == "bowl"  # the chapter's figure: axes -2..2
    assert client.get("/api/surfaces").json()[0]["domain"] == [[-2.0, 2.0], [-2.0, 2.0]]


def test_a_broken_preset_is_refused_by_the_request_models(monkeypatch):
    bad = teaching.Preset("x", "x", "x", ("a", "b"), {"surface": {"name": "bowl"}, "steps": 0, "optimizers": []})
    monkeypatch.setattr(teaching, "PRESETS", (bad,))
    teaching.presets.cache_clear()
    try:
        with pytest.raises(ValueError, match="steps"):
            teaching.presets()
    finally:
        monkeypatch.undo()
        teaching.presets.cache_clear()


def test_the_presets_show_what_their_captions_say():
    by_id = {p["id"]: p for p in teaching.presets()}
    saddle, _ = _seeing(by_id["saddle"]["request"])
    assert any("stalled at a saddle" in s for s in saddle)
    noisy, out = _seeing(by_id["saddle_noise"]["request"])
    assert out["runs"][0]["end"] != "saddle" and any("negative curvature" in s for s in noisy)
    zigzag, out = _seeing(by_id["zigzag"]["request"])
    gd, momentum = out["runs"]
    assert gd["steps_to_tol"] is None and momentum["steps_to_tol"] is not None  # momentum gets there first
    assert f"{momentum['label']} at step {momentum['steps_to_tol']}; {gd['label']} not in 150 steps" in zigzag[-1]
    sharp, _ = _seeing(by_id["sharp_flat"]["request"])
    assert any("sharp minimum" in s and "flat one" in s and "cannot stay there" in s for s in sharp)


# ------------------------------------------------------------------------------------------------ what you are seeing
def test_gd_at_lr_lambda_1_9_zigzags_and_says_so():
    """GD on f = (x^2 + 25 y^2)/2 with lr = 0.076: y_k = (1 - 1.9)^k y_0 flips sign every step."""
    body = {"surface": {"name": "valley"}, "steps": 60, "optimizers": [{"name": "gd", "label": "gd",
                                                                       "hyperparams": {"lr": 0.076}}]}
    said, out = _seeing(body)
    y = np.asarray(out["runs"][0]["y"][:10])
    np.testing.assert_allclose(y, y[0] * (-0.9) ** np.arange(10), rtol=1e-9)
    line = next(s for s in said if "zig-zags" in s)
    assert "lr × λmax = 1.9" in line and "close to its limit 2" in line


def test_a_clipped_gd_run_above_its_limit_is_said_to_be_above_it():
    """GD at lr 0.2 on Rosenbrock (lr x lambda_max in the hundreds near the valley) with norm clipping at 0.5:
    every step is clipped, so the run zig-zags instead of diverging; its lr is far above 2 / lambda_max."""
    said, out = _seeing({"surface": {"name": "rosenbrock"}, "steps": 300, "clip": {"kind": "norm", "max": 0.5},
                         "optimizers": [{"name": "gd", "label": "gd", "hyperparams": {"lr": 0.2}}]})
    line = next(s for s in said if "zig-zags" in s)
    x, cap = _numbers(line.split("=", 1)[1])[:2]
    assert x > cap == 2 and "above its limit 2" in line and "close to" not in line
    assert f"{len(out['runs'][0]['clipped_steps'])} of its 300 steps were clipped" in line


def test_gd_below_lr_lambda_1_walks_straight():
    """GD on the bowl (Hessian diag(1, 2)) with lr 0.1: lr lambda_max = 0.2; the slow direction shrinks by 0.9."""
    said, out = _seeing({"surface": {"name": "bowl"}, "steps": 60,
                         "optimizers": [{"name": "gd", "label": "gd", "hyperparams": {"lr": 0.1}}]})
    x = np.asarray(out["runs"][0]["x"][:10])
    np.testing.assert_allclose(x, x[0] * 0.9 ** np.arange(10), rtol=1e-9)
    line = next(s for s in said if "straight" in s)
    assert "lr × λmax = 0.2 < 1" in line and "0.9 a step" in line


def test_adams_first_step_is_lr_in_each_coordinate():
    """torch.optim.Adam's first step on the bowl's gradient has size lr in each coordinate (lr g/(|g| + eps))."""
    lr = 0.05
    said, out = _seeing({"surface": {"name": "bowl"}, "steps": 20, "optimizers": [
        {"name": "adam", "label": "adam", "hyperparams": {"lr": lr}},
        {"name": "adam", "label": "adam #2", "hyperparams": {"lr": lr, "bias_correction": False}}]})
    p = torch.tensor([-1.8, 1.6], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([p], lr=lr)
    (0.5 * p[0] ** 2 + p[1] ** 2).backward()
    opt.step()
    step = (p.detach() - torch.tensor([-1.8, 1.6], dtype=torch.float64)).abs().numpy()
    run = out["runs"][0]
    np.testing.assert_allclose([abs(run["x"][1] - run["x"][0]), abs(run["y"][1] - run["y"][0])], step, rtol=1e-9)
    first = next(s for s in said if s.startswith("adam's first step"))
    assert "is 1 × lr in each coordinate" in first and "diagonally" in first
    # without bias correction: (1 - 0.9) / sqrt(1 - 0.999) = 3.16 times lr
    closed = 0.1 / np.sqrt(0.001)
    second = next(s for s in said if s.startswith("adam #2's first step"))
    assert f"is {closed:.3g} × lr" in second and f"= {closed:.3g}" in second
    run2 = out["runs"][1]
    assert abs(run2["x"][1] - run2["x"][0]) == pytest.approx(closed * lr, rel=1e-6)


def test_divergence_names_the_step_and_the_ratio_to_the_limit():
    """GD on the valley at lr = 1.3 x 2/25 diverges; the sentence gives the run's step and 1.3x the limit 0.08."""
    said, out = _seeing({"surface": {"name": "valley"}, "steps": 200,
                         "optimizers": [{"name": "gd", "label": "gd", "hyperparams": {"lr": 1.3 * 2 / 25}}]})
    run = out["runs"][0]
    assert run["diverged"]
    assert said[0].startswith(f"gd diverged at step {run['diverged_at']}: lr = 0.104 is 1.3× its stability limit 0.08")


def test_a_stall_at_the_saddle_gives_the_hessian_there():
    said, out = _seeing({"surface": {"expression": teaching.DOUBLE_WELL}, "start": [0.0, 1.5], "steps": 200,
                         "optimizers": [{"name": "gd", "label": "gd", "hyperparams": {"lr": 0.05}}]})
    assert out["runs"][0]["end"] == "saddle"
    line = next(s for s in said if "stalled at a saddle" in s)
    origin = torch.zeros(2, dtype=torch.float64)
    H = torch.autograd.functional.hessian(lambda p: (p[0] ** 2 - 1) ** 2 + p[1] ** 2, origin)
    lo, hi = torch.linalg.eigvalsh(H).tolist()
    assert f"λ = {lo:.3g} < 0 < {hi:.3g}" in line and "without gradient noise" in line


def test_cliff_and_clipping_sentences_carry_the_runs_numbers():
    by_id = {p["id"]: p for p in teaching.presets()}
    said, out = _seeing(by_id["cliff"]["request"])
    run = out["runs"][0]
    pos = np.stack([run["x"], run["y"]], axis=1)
    steps = np.linalg.norm(np.diff(pos, axis=0), axis=1)
    line = next(s for s in said if "hit a cliff" in s)
    assert f"at step {int(steps.argmax())}:" in line and f"threw it {steps.max():.3g}" in line
    said, out = _seeing(by_id["cliff_clip"]["request"])
    run = out["runs"][0]
    pos = np.stack([run["x"], run["y"]], axis=1)
    steps = np.linalg.norm(np.diff(pos, axis=0), axis=1)
    assert steps.max() <= 0.1 * 1.0 + 1e-12  # a norm-clipped GD step is at most lr * max_norm
    line = next(s for s in said if s.startswith("clipping rescaled"))
    assert f"rescaled {len(run['clipped_steps'])} of" in line and len(run["clipped_steps"]) > 0


def test_the_trajectory_response_carries_the_sentences(client):
    body = {"surface": {"name": "valley"}, "steps": 60,
            "optimizers": [{"name": "gd", "label": "gd", "hyperparams": {"lr": 0.076}}]}
    data = client.post("/api/trajectories", json=body).json()
    assert any("zig-zags" in s for s in data["seeing"])
    assert _seeing(body)[0] == data["seeing"]


# ------------------------------------------------------------------------------------------------ export
def test_export_png_decodes_at_its_size(client):
    req = next(p for p in teaching.presets() if p["id"] == "zigzag")["request"]
    r = client.post("/api/export/png", json={"request": req, "colors": ["#112233", "#445566"]})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(r.content))
    assert img.format == "PNG" and img.size == (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))
    bad = client.post("/api/export/png", json={"request": req, "colors": ["red"]})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"].startswith("colors")


def test_export_png_is_drawn_in_the_big_lane():
    """Drawing takes about a second: it is big work, bounded and queued like any big request (issue 15)."""
    req = next(p for p in teaching.presets() if p["id"] == "zigzag")["request"]
    with TestClient(create_app()) as c:
        before = c.get("/api/load").json()["lanes"]["big"]["finished"]
        assert c.post("/api/export/png", json={"request": req, "colors": ["#112233", "#445566"]}).status_code == 200
        assert c.get("/api/load").json()["lanes"]["big"]["finished"] == before + 1


def test_export_snippet_writes_the_png_and_reproduces_the_numbers(client, tmp_path):
    req = next(p for p in teaching.presets() if p["id"] == "adam_bias")["request"]
    code = client.post("/api/export/python", json={"request": req, "colors": ["#112233", "#445566"]}).json()["code"]
    assert "playground_figure(" in code and "'#112233'" in code
    script = tmp_path / "snippet.py"
    script.write_text(code + "\nnp.save('positions.npy', tr.positions)\n")
    env = {**os.environ, "MPLBACKEND": "Agg"}
    subprocess.run([sys.executable, str(script)], check=True, env=env, timeout=180, cwd=tmp_path)
    img = Image.open(tmp_path / "ravine-playground.png")
    assert img.size == (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))
    api = client.post("/api/trajectories", json=req).json()
    pos = np.load(tmp_path / "positions.npy")
    for j, run in enumerate(api["runs"]):
        np.testing.assert_array_equal(pos[j, :, 0], np.asarray(run["x"], dtype=float))
        np.testing.assert_array_equal(pos[j, :, 1], np.asarray(run["y"], dtype=float))
    for sentence in api["seeing"]:
        assert repr(sentence)[1:-1] in code  # the caption is the server's, for this very run


def test_the_page_reads_its_colours_from_the_one_style(client):
    assert client.get("/api/style").json()["palette"] == PAGE_STYLE["palette"]
    from ravine.web.app import STATIC_DIR

    js = (STATIC_DIR / "app.js").read_text()
    assert not [c for c in PAGE_STYLE["palette"] if c in js]  # no second copy of the palette in the page


@pytest.mark.parametrize("lr_lambda, says", [(0.9, "walks straight"), (1.1, "zig-zags"), (1.95, "zig-zags"),
                                             (2.05, "diverged")])
def test_gd_on_the_valley_on_both_sides_of_1_and_2(lr_lambda, says):
    """(1 - lr lambda)^k: no overshoot below lr lambda = 1, a sign flip every step above it, divergence above 2."""
    said, out = _seeing({"surface": {"name": "valley"}, "steps": 300, "start": [-1.8, 0.6],
                         "optimizers": [{"name": "gd", "label": "gd", "hyperparams": {"lr": lr_lambda / 25}}]})
    assert any(says in s for s in said), said
    assert out["runs"][0]["diverged"] == (lr_lambda > 2)
    if says != "diverged":
        assert any(f"lr × λmax = {lr_lambda:.3g}" in s for s in said)
        assert not any(("zig-zags" if says == "walks straight" else "walks straight") in s for s in said)


def test_no_diagonal_first_step_sentence_when_the_gradient_is_itself_diagonal():
    """On the bowl at (1, 0.5) the gradient is (1, 1): Adam's sign step is the gradient's direction, nothing to say."""
    said, _ = _seeing({"surface": {"name": "bowl"}, "start": [1.0, 0.5], "steps": 20,
                       "optimizers": [{"name": "adam", "label": "adam", "hyperparams": {"lr": 0.05}}]})
    assert not any("first step" in s for s in said)
