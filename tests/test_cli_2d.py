"""``ravine trajectories`` and ``ravine sweep``: outputs, JSON equal to the library's numbers, exit codes."""

import json

import numpy as np
import pytest
from PIL import Image

import ravine.simulate as sim
from ravine.cli import main


def test_trajectories_writes_figure_json_and_gif(tmp_path, capsys):
    out, js, gif = tmp_path / "fig.png", tmp_path / "t.json", tmp_path / "a.gif"
    rc = main(["trajectories", "--surface", "rosenbrock", "--optimizers", "sgd,momentum,rmsprop,adam",
               "--steps", "60", "--out", str(out), "--json", str(js), "--gif", str(gif), "--gif-frames", "8"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "optimizer" in text and "final loss" in text and "adam lr=0.05" in text
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 800
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == 8
    data = json.loads(js.read_text())
    ref = sim.run("rosenbrock", ["sgd", "momentum", "rmsprop", "adam"], steps=60)
    np.testing.assert_allclose(np.array(data["positions"], dtype=float), ref.positions, rtol=0, atol=0)
    assert data["labels"] == ref.labels


def test_trajectories_lr_list_inline_hyperparameters_and_per_run_noise(tmp_path, capsys):
    js = tmp_path / "t.json"
    rc = main(["trajectories", "--surface", "saddle", "--optimizers", "gd,gd,momentum:beta=0.5",
               "--lr", "0.05,0.05,0.1", "--noise", "0,0.1,0", "--steps", "200", "--json", str(js)])
    assert rc == 0
    data = json.loads(js.read_text())
    assert data["diverged"] == [False, True, False]  # only the noisy run escapes the saddle
    assert data["labels"][2] == "momentum lr=0.1 beta=0.5"
    capsys.readouterr()


def test_trajectories_expression_surface(tmp_path, capsys):
    rc = main(["trajectories", "--expr", "x**2 + 3*y**2", "--optimizers", "gd", "--lr", "0.1", "--steps", "100"])
    assert rc == 0
    assert "|grad|<=1e-06" in capsys.readouterr().out


def test_sweep_prints_summary_and_json_equals_the_library(tmp_path, capsys):
    js, png = tmp_path / "s.json", tmp_path / "s.png"
    rc = main(["sweep", "--surface", "valley", "--optimizer", "momentum", "--x", "lr=1e-3:1:12:log",
               "--y", "beta=0:0.99:9", "--steps", "200", "--out", str(png), "--json", str(js)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "9 x 12 = 108 configurations" in text and "diverged:" in text and "best:" in text
    data = json.loads(js.read_text())
    ref = sim.sweep("valley", "momentum", x=("lr", np.geomspace(1e-3, 1, 12)), y=("beta", np.linspace(0, 0.99, 9)),
                    steps=200)
    assert data["diverged_at"] == ref.diverged_at.tolist()
    assert data["steps_to_tol"] == ref.steps_to_tol.tolist()
    with Image.open(png) as im:
        assert im.format == "PNG"


def test_sweep_value_lists_and_fixed(tmp_path, capsys):
    js = tmp_path / "s.json"
    rc = main(["sweep", "--surface", "bowl", "--optimizer", "sgd", "--x", "lr=0.1,0.5,1.2",
               "--y", "momentum=0,0.5", "--fixed", "nesterov=false", "--steps", "100", "--json", str(js)])
    assert rc == 0
    data = json.loads(js.read_text())
    assert data["x_values"] == [0.1, 0.5, 1.2] and data["y_values"] == [0.0, 0.5]
    # GD on the bowl (lambda_max = 2): lr = 1.2 > 2/2 diverges, momentum 0.5 extends the range to 1.5
    assert data["diverged_at"][0][2] > 0 and data["diverged_at"][1][2] == -1
    capsys.readouterr()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sweep", "--x", "lr=0:1:64:log"], "a log range needs START > 0"),
        (["sweep", "--x", "lr=1e-3:1:0:log"], "N must be an integer in [1, 1024]"),
        (["sweep", "--x", "lr=1e-3:1:5000"], "N must be an integer in [1, 1024]"),
        (["sweep", "--x", "lr=1e-3:1:2.5"], "N must be an integer"),
        (["sweep", "--x", "lr=1e-3:1:8:cubic"], "--x: scale must be one of 'log', 'lin', got 'cubic'"),
        (["sweep", "--x", "lr=abc"], "expected NAME=START:STOP:N[:log|lin]"),
        (["sweep", "--x", "lr"], "expected NAME=START:STOP:N[:log|lin]"),
        (["sweep", "--x", "lr=nan:1:4"], "START and STOP must be finite"),
        (["sweep", "--x", "b1=0.1:0.9:4"], "'b1' is not a hyperparameter of this optimizer; allowed: ['lr', 'beta'"),
        (["sweep", "--y", "beta=0:1.5:4", "--steps", "5"], "beta"),
        (["sweep", "--optimizer", "nosuchopt"], "optimizer must be one of"),
        (["sweep", "--surface", "nope"], "unknown surface 'nope'; allowed:"),
        (["trajectories", "--optimizers", "sgd,nosuchopt"], "unknown optimizer 'nosuchopt'; allowed:"),
        (["trajectories", "--optimizers", "sgd,adam", "--lr", "0.1,0.2,0.3"], "--lr takes one value or one per"),
        (["trajectories", "--expr", "__import__('os')"], "unknown name '__import__' at position 0"),
        (["trajectories", "--clip", "l1:3"], "--clip must be norm:MAX or value:MAX"),
        (["trajectories", "--param", "condition=3"], "surface 'rosenbrock' has no parameter 'condition'"),
    ],
)
def test_bad_arguments_exit_2_with_what_is_allowed(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err


def test_plot_functions_validate_their_arguments(tmp_path):
    from ravine.plots import surfaces as ps

    sw = sim.sweep("bowl", "sgd", x=("lr", [0.5, 1.5]), y=("momentum", [0.0, 0.5]), steps=50)
    with pytest.raises(ValueError, match="metric must be one of 'final_loss', 'steps_to_tol', got 'speed'"):
        ps.plot_sweep(sw, metric="speed")
    tr = sim.run("bowl", ["gd"], steps=5)
    with pytest.raises(ValueError, match=r"frames must be an integer in \[2, 1000\], got 1"):
        ps.save_gif(tr, tmp_path / "x.gif", frames=1)
    assert not (tmp_path / "x.gif").exists()
    # a diverged run and an unbounded surface still draw (X marks, symmetric-log losses)
    tr = sim.run("saddle", [{"name": "gd", "lr": 0.05}], steps=200, noise=0.1)
    assert tr.diverged[0]
    path = ps.save_trajectories_figure(tr, tmp_path / "saddle.png")
    with Image.open(path) as im:
        assert im.format == "PNG"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind
