"""``ravine.simulate.run(..., compile=...)``: the compiled programs against torch.optim loops (an oracle nobody
here wrote) and against the eager engine, structure by structure; their reuse with new numbers, the ``"ready"``
mode, the fallbacks, stopping, and the server's ``compile`` option (its workers compile with the default block).

Each compiled structure costs seconds of compilation, so the tests share a few structures and compile them with
a short block (``COMPILE_BLOCK = 4``; the block length is part of a program's key, so nothing here meets a
program of the default length).
"""

import time

import numpy as np
import pytest
import torch

import ravine.optim as ro
import ravine.simulate as sim
import ravine.surfaces as rs

pytest.importorskip("torch._inductor")

F64 = torch.float64


@pytest.fixture(autouse=True)
def short_block(monkeypatch):
    monkeypatch.setattr(sim, "COMPILE_BLOCK", 4)


def _wait(predicate, timeout=900.0):
    """Wait for ``predicate()`` (a state, not a duration: compilation takes what it takes on a loaded machine)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the state was not reached"
        time.sleep(0.2)


def _assert_same(a: sim.Trajectories, b: sim.Trajectories, rtol=1e-10):
    np.testing.assert_allclose(a.positions, b.positions, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(a.losses, b.losses, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(a.grad_norms, b.grad_norms, rtol=rtol, atol=1e-12)
    np.testing.assert_array_equal(a.lrs, b.lrs)
    np.testing.assert_array_equal(a.clipped, b.clipped)
    np.testing.assert_array_equal(a.diverged_at, b.diverged_at)
    np.testing.assert_array_equal(a.steps_to_tol, b.steps_to_tol)


# A structure with everything a program holds: two momentum runs batched into one transform ((2, 1) tensor
# hyperparameters), Adam, RMSProp, per-row noise, norm clipping and a schedule.
def _rich(lr_scale=1.0, start=(-1.5, 2.5), steps=37, compile=True):
    optimizers = [
        {"name": "momentum", "lr": 0.01 * lr_scale, "beta": 0.9},
        {"name": "momentum", "lr": 0.02 * lr_scale, "beta": 0.8},
        {"name": "adam", "lr": 0.05 * lr_scale},
        {"name": "rmsprop", "lr": 0.01 * lr_scale},
    ]
    return sim.run("rosenbrock", optimizers, start=start, steps=steps, noise=0.5, seed=[1, 2, 3, 4],
                   clip={"kind": "norm", "max": 5.0}, schedule={"name": "warmup_cosine", "warmup_steps": 5},
                   compile=compile)


def test_a_compiled_program_equals_the_eager_engine_and_is_reused_with_new_numbers():
    compiled = _rich()
    assert compiled.engine == "compiled" and compiled.extra == {}
    eager = _rich(compile=False)
    assert eager.engine == "eager"
    _assert_same(compiled, eager)
    assert compiled.clipped.any() and not compiled.clipped.all()  # the clipping record is exercised
    ready = sim.compile_status()["ready"]
    # other learning rates, start and length: the same program (no new one), refilled with the new numbers
    again = _rich(lr_scale=1.7, start=(0.5, -0.5), steps=50)
    assert again.engine == "compiled" and sim.compile_status()["ready"] == ready
    _assert_same(again, _rich(lr_scale=1.7, start=(0.5, -0.5), steps=50, compile=False))


def _torch_loop(surface, make_opt, steps):
    p = torch.tensor(surface.start, dtype=F64, requires_grad=True)
    opt = make_opt([p])
    path = [p.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        surface.value(p).backward()
        opt.step()
        path.append(p.detach().clone())
    return torch.stack(path).numpy()


def test_compiled_runs_equal_torch_optim_loops_and_divergence_is_booked_as_eagerly():
    """GD, heavy ball and Adam on the saddle (no global minimum: the gradient-norm criterion, whose exact
    norms the program records); a GD run with a huge learning rate diverges and is frozen."""
    s = rs.get("saddle")
    specs = [{"name": "sgd", "lr": 0.05}, {"name": "sgd", "lr": 0.02, "momentum": 0.9},
             {"name": "adam", "lr": 0.03}, {"name": "sgd", "lr": 40.0}]
    tr = sim.run(s, specs, steps=45, compile=True)
    assert tr.engine == "compiled"
    oracles = [lambda ps: torch.optim.SGD(ps, lr=0.05), lambda ps: torch.optim.SGD(ps, lr=0.02, momentum=0.9),
               lambda ps: torch.optim.Adam(ps, lr=0.03)]
    for i, make in enumerate(oracles):
        np.testing.assert_allclose(tr.positions[i], _torch_loop(s, make, 45), rtol=1e-10, atol=1e-12)
    assert tr.diverged[3] and not tr.diverged[:3].any()
    _assert_same(tr, sim.run(s, specs, steps=45))
    d = tr.diverged_at[3]
    assert (tr.positions[3, d:] == tr.positions[3, d]).all() and np.isnan(tr.grad_norms[3, d:]).all()


def test_ready_mode_steps_eagerly_until_the_structure_is_compiled():
    specs = [{"name": "nesterov", "lr": 0.05}]
    first = sim.run("bowl", specs, steps=20, compile="ready")
    assert first.engine == "eager" and first.extra["compile"] == "not ready"
    assert sim.run("bowl", [{"name": "nesterov", "lr": 0.02}], steps=1, compile=True).engine == "compiled"
    later = sim.run("bowl", specs, steps=20, compile="ready")
    assert later.engine == "compiled" and later.extra == {}
    _assert_same(later, first)


def test_a_typed_expression_is_compiled_with_torch_func_and_keyed_by_its_text():
    """f = x^2 + 3 y^2 + sin(x y) has no closed-form gradient here: the program differentiates it by
    torch.func.grad; a second parse of the same text (the server parses every request) reuses the program."""
    text = "x**2 + 3*y**2 + sin(x*y)"
    specs = [{"name": "adam", "lr": 0.05}, {"name": "sgd", "lr": 0.05, "momentum": 0.5}]
    compiled = sim.run(rs.parse(text), specs, start=(1.5, -1.0), steps=30, compile=True)
    assert compiled.engine == "compiled"
    _assert_same(compiled, sim.run(rs.parse(text), specs, start=(1.5, -1.0), steps=30))
    x, y = 1.5, -1.0  # the gradient of the first step, in closed form: the runs' first gradient norm
    first = np.hypot(2 * x + y * np.cos(x * y), 6 * y + x * np.cos(x * y))
    np.testing.assert_allclose(compiled.grad_norms[:, 0], first, rtol=1e-12)
    ready = sim.compile_status()["ready"]
    assert sim.run(rs.parse(text), specs, steps=5, compile="ready").engine == "compiled"
    assert sim.compile_status()["ready"] == ready


def test_what_cannot_be_compiled_is_stepped_eagerly_and_says_why():
    value_clip = sim.run("bowl", ["adam"], steps=5, clip={"kind": "value", "max": 0.1}, compile=True)
    assert value_clip.engine == "eager" and value_clip.extra["compile"] == "clip_by_value does not compile"
    scheduled = ro.adam(lr=lambda t: 0.1 / (1 + t))  # a schedule as a hyperparameter of a Transform object
    assert "lr is a schedule" in sim.run("bowl", [scheduled], steps=5, compile=True).extra["compile"]
    nine = [{"name": n} for n in ("gd", "momentum", "nesterov", "rmsprop", "adam", "adamw", "adagrad", "lion", "adopt")]
    many = sim.run("bowl", nine, steps=3, compile=True)
    assert many.engine == "eager" and "at most 8" in many.extra["compile"]
    with pytest.raises(ValueError, match="compile must be one of"):
        sim.run("bowl", ["adam"], steps=5, compile="always")


def test_a_compiled_run_stops_and_refuses_a_bad_start_as_the_eager_one_does():
    calls = []

    def stop_on_second_check():
        calls.append(1)
        return len(calls) >= 2

    specs = [{"name": "nesterov", "lr": 0.05}]  # the structure of the "ready" test
    with pytest.raises(sim.Stopped, match=f"stopped at step {sim.STOP_CHECK_STEPS} of 100"):
        sim.run("bowl", specs, steps=100, should_stop=stop_on_second_check, compile=True)
    assert sim.run("bowl", specs, steps=1, compile="ready").engine == "compiled"
    calls.clear()
    with pytest.raises(sim.Stopped, match=f"stopped at step {sim.STOP_CHECK_STEPS} of 100"):
        sim.run("bowl", specs, steps=100, should_stop=stop_on_second_check)
    with pytest.raises(ValueError, match="not finite"):
        sim.run("bowl", specs, start=(1e300, 1e300), steps=10, compile=True)


def test_the_server_compiles_a_new_structure_in_a_worker_and_answers_the_same_numbers():
    """``create_app(compile=True)``: the first answers are eager and say so; a worker compiles the structure (a job
    of the small lane, counted at /api/load) and later answers are compiled, equal to the eager ones to rounding."""
    from fastapi.testclient import TestClient

    from ravine.web import create_app

    with pytest.raises(ValueError, match="compile needs workers >= 2"):
        create_app(compile=True, workers=0)
    body = {"surface": {"name": "bowl"}, "steps": 30,
            "optimizers": [{"name": "sgd", "hyperparams": {"lr": 0.1, "momentum": 0.5}}]}
    with TestClient(create_app(cache_mb=0, run_cache_mb=0)) as client:
        eager = client.post("/api/trajectories", json=body).json()
    assert eager["engine"] == "eager" and eager["awaiting_compile"] is False  # compilation off
    with TestClient(create_app(compile=True, workers=2, cache_mb=0, run_cache_mb=0)) as client:
        first = client.post("/api/trajectories", json=body).json()
        if first["engine"] == "eager":  # the worker had no program (inductor's disk cache may make it quick)
            assert first["awaiting_compile"] is True

        row = []

        def compiled_by_both() -> bool:  # the workers take turns: four compiled answers in a row come from both
            out = client.post("/api/trajectories", json=body).json()
            assert out["engine"] in ("eager", "compiled")
            row[:] = [*row, 1] if out["engine"] == "compiled" else []
            return len(row) >= 4

        _wait(compiled_by_both)
        assert client.get("/api/load").json()["compile"]["done"] >= 1
        out = client.post("/api/trajectories", json=body).json()
    np.testing.assert_allclose(out["runs"][0]["x"], eager["runs"][0]["x"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out["runs"][0]["loss"], eager["runs"][0]["loss"], rtol=1e-10, atol=1e-12)
