"""The playground in a real browser: Debian's chromium driven by Playwright for Python.

The server runs under uvicorn in a thread on a free loopback port. The test loads the page, switches to
Rosenbrock, adds Adam, checks that a trajectory is drawn from the server's numbers, drags a slider and
checks the redraw, runs a sweep and clicks a cell, and fails on any console error. A screenshot is saved
to ``artifacts/web/playground.png`` (and the test's tmp_path).

Skipped, with the reason, only when no ``chromium`` executable is installed (``make test`` installs
Debian's ``chromium``; never a downloaded browser) or Playwright for Python is missing.
"""

from __future__ import annotations

import math
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip(
        "Debian's chromium is not installed (`apt-get install chromium`, done by `make test` as root); "
        "browser tests skipped",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")

import uvicorn  # noqa: E402

from ravine.web import create_app  # noqa: E402

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "web"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url():
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server_url):
    ctx = browser.new_context(viewport={"width": 1500, "height": 1150})
    pg = ctx.new_page()
    problems: list[str] = []
    pg.on("console", lambda msg: problems.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None)
    pg.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    pg.problems = problems
    yield pg
    ctx.close()


def _renders(pg) -> int:
    return pg.evaluate("window.__ravine.renders")


def _wait_render(pg, after: int) -> None:
    pg.wait_for_function(f"window.__ravine.renders > {after}", timeout=20_000)


def _wait_idle(pg) -> None:
    """Wait until no trajectory request is in flight or waiting to be sent."""
    pg.wait_for_function("window.__ravine.idle()", timeout=20_000)


def _trajectory_traces(pg) -> list[dict]:
    """The drawn trajectory line traces of the contour plot (Plotly's data on the graph div)."""
    return pg.evaluate(
        """() => document.getElementById('contour').data
             .filter(t => t.mode === 'lines+markers')
             .map(t => ({name: t.name, x: Array.from(t.x), y: Array.from(t.y)}))"""
    )


def test_playground_end_to_end(page, server_url, tmp_path):
    pg = page
    pg.goto(server_url)
    pg.wait_for_function("window.__ravine && window.__ravine.renders > 0", timeout=30_000)

    # Switch to Rosenbrock.
    n = _renders(pg)
    pg.select_option("#surface-select", "rosenbrock")
    _wait_render(pg, n)
    pg.wait_for_function("document.getElementById('contour').layout.title.text === 'rosenbrock'")
    assert pg.evaluate("window.__ravine.result().surface") == "rosenbrock"

    # Add Adam: a third card, and a trajectory named adam drawn from the server's numbers.
    n = _renders(pg)
    pg.select_option("#add-name", "adam")
    pg.click("#btn-add")
    _wait_render(pg, n)
    assert pg.locator("#optimizers .opt").count() == 3
    traces = _trajectory_traces(pg)
    adam = [t for t in traces if t["name"].startswith("adam")]
    assert len(adam) == 1
    result = pg.evaluate("window.__ravine.result()")
    run = next(r for r in result["runs"] if r["name"] == "adam")
    assert len(adam[0]["x"]) == result["steps"] + 1 > 10
    assert adam[0]["x"][:5] == run["x"][:5] and adam[0]["y"][-1] == run["y"][-1]
    assert adam[0]["x"][0] == pytest.approx(-1.5) and adam[0]["y"][0] == pytest.approx(2.5)  # Rosenbrock start
    # the line's SVG path is really there
    assert pg.locator("#contour .scatterlayer .trace path.js-line").count() >= 3

    # Drag Adam's lr slider: the request goes out and the trajectory is redrawn with different points.
    before = adam[0]
    n = _renders(pg)
    slider = pg.locator("#optimizers .opt").nth(2).locator("input[type=range][data-hp=lr]")
    slider.focus()
    for _ in range(15):
        pg.keyboard.press("ArrowLeft")
    _wait_render(pg, n)
    _wait_idle(pg)  # the last request (the slider's final value) has been answered and drawn
    lr_now = pg.evaluate("window.__ravine.state().optimizers[2].hyperparams.lr")
    assert lr_now == pytest.approx(0.05 * 10 ** (-0.15), rel=0.02)
    after = next(t for t in _trajectory_traces(pg) if t["name"].startswith("adam"))
    assert after["x"][0] == before["x"][0]
    assert after["x"][-1] != before["x"][-1]
    srv = next(r for r in pg.evaluate("window.__ravine.result()")["runs"] if r["name"] == "adam")
    assert srv["hyperparams"]["lr"] == pytest.approx(lr_now)

    # Sweep Adam's lr x b1 and click a cell: that configuration is loaded into the main view.
    pg.select_option("#sweep-opt", "2")
    pg.select_option("#sweep-n", "16")
    pg.fill("#steps", "100")
    pg.press("#steps", "Enter")
    sweeps = pg.evaluate("window.__ravine.sweeps")
    pg.click("#btn-sweep")
    pg.wait_for_function(f"window.__ravine.sweeps > {sweeps}", timeout=30_000)
    pg.wait_for_timeout(300)
    sweep = pg.evaluate(
        "() => { const d = document.getElementById('plot-sweep').data[0];"
        " return {x: Array.from(d.x), y: Array.from(d.y), nz: d.z.length}; }"
    )
    assert sweep["nz"] == 16 and len(sweep["x"]) == 16
    i, j = 5, 11  # y index, x index
    target = pg.evaluate(
        """([i, j]) => {
             const gd = document.getElementById('plot-sweep');
             const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
             const d = gd.data[0];
             const box = gd.getBoundingClientRect();
             return {cx: box.left + xa._offset + xa.l2p(xa.c2l(d.x[j])),
                     cy: box.top + ya._offset + ya.l2p(ya.c2l(d.y[i])), x: d.x[j], y: d.y[i],
                     xname: window.__ravine.state().sweep.x.name, yname: window.__ravine.state().sweep.y.name};
           }""",
        [i, j],
    )
    assert {target["xname"], target["yname"]} == {"lr", "b1"}
    n = _renders(pg)
    pg.mouse.move(target["cx"], target["cy"])
    pg.mouse.click(target["cx"], target["cy"])
    _wait_render(pg, n)
    hp = pg.evaluate("window.__ravine.state().optimizers[2].hyperparams")
    assert hp[target["xname"]] == pytest.approx(target["x"], rel=1e-5)
    assert hp[target["yname"]] == pytest.approx(target["y"], rel=1e-5)
    _wait_idle(pg)
    srv = next(r for r in pg.evaluate("window.__ravine.result()")["runs"] if r["name"] == "adam")
    assert srv["hyperparams"][target["xname"]] == pytest.approx(target["x"], rel=1e-5)
    # the slider moved with it
    shown = float(pg.locator("#optimizers .opt").nth(2).locator(f"input[data-hp-num={target['xname']}]").input_value())
    assert shown == pytest.approx(target["x"], rel=1e-4)

    # The URL carries the state: a reload reproduces the same request.
    url = pg.evaluate("location.href")
    assert "#" in url and "rosenbrock" in pg.evaluate("decodeURIComponent(location.hash)")

    # Click on the contour: the start point moves there and every run starts from it.
    spot = pg.evaluate(
        """() => { const gd = document.getElementById('contour'); const fl = gd._fullLayout;
                   const box = gd.getBoundingClientRect();
                   return {cx: box.left + fl.xaxis._offset + fl.xaxis.c2p(0.5),
                           cy: box.top + fl.yaxis._offset + fl.yaxis.c2p(2.0)}; }"""
    )
    n = _renders(pg)
    pg.mouse.click(spot["cx"], spot["cy"])
    _wait_render(pg, n)
    start = pg.evaluate("window.__ravine.result().start")
    assert start[0] == pytest.approx(0.5, abs=0.02) and start[1] == pytest.approx(2.0, abs=0.02)
    assert all(t["x"][0] == start[0] and t["y"][0] == start[1] for t in _trajectory_traces(pg))

    # Curvature probe at the start point: eigenvector arrows, the numbers, 2/lambda_max on the lr sliders.
    pg.click("#btn-probe-start")
    pg.wait_for_function("document.getElementById('contour').layout.annotations.length === 4", timeout=20_000)
    info = pg.inner_text("#curv-info")
    assert "eigenvalues" in info and "condition" in info
    # Rosenbrock's Hessian at (x, y): [[1200 x^2 - 400 y + 2, -400 x], [-400 x, 200]]
    x0, y0 = start
    h = np.array([[1200 * x0**2 - 400 * y0 + 2, -400 * x0], [-400 * x0, 200.0]])
    lam_max = np.linalg.eigvalsh(h)[-1]
    assert pg.evaluate("window.__ravine.curvature().stability_lr") == pytest.approx(2 / lam_max, rel=1e-9)
    # each optimizer its own limit: GD's 2/lambda_max is marked; Adam has none and says so
    mark = pg.locator("#optimizers .opt").nth(0).locator("[data-stab]")
    sync_api.expect(mark).to_be_visible()
    assert "2/λmax" in mark.get_attribute("title")
    sync_api.expect(pg.locator("#optimizers .opt").nth(2).locator("[data-stab]")).to_be_hidden()
    # Adam's limit is on its preconditioned curvature λmax(P⁻¹H) (ravine.curvature.stability_rule), not on H's
    assert "λmax(P⁻¹H)" in pg.locator("#optimizers .opt").nth(2).locator(".slider-wrap").first.get_attribute("title")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for path in (tmp_path / "playground.png", ARTIFACTS / "playground.png"):
        pg.screenshot(path=str(path), full_page=True)
    assert not pg.problems, "\n".join(pg.problems)


def test_link_reproduces_view_and_diverged_run_is_marked(page, server_url):
    """A shared link restores the state; a diverging configuration is drawn as diverged, not broken."""
    import json
    from urllib.parse import quote

    state = {
        "surface": {"name": "valley", "params": {"condition": 25.0}, "expression": None},
        "start": [-1.5, 0.5],
        "steps": 60,
        "optimizers": [{"name": "gd", "color": "#2f5fd0", "hyperparams": {"lr": 0.5}}],
    }
    pg = page
    pg.goto(server_url + "#" + quote(json.dumps(state)))
    pg.wait_for_function("window.__ravine && window.__ravine.renders > 0", timeout=30_000)
    result = pg.evaluate("window.__ravine.result()")
    run = result["runs"][0]
    # GD on f = (x^2 + 25 y^2)/2 with lr 0.5 > 2/25 diverges along y.
    assert result["surface"] == "valley" and run["diverged"] is True and run["diverged_at"] > 0
    assert all(v is None or math.isfinite(v) for v in run["loss"])
    legend = pg.evaluate("document.getElementById('contour').data.filter(t => t.mode === 'lines+markers')[0].name")
    assert "diverged" in legend
    assert pg.locator("#summary .diverged").count() == 1
    assert pg.input_value("#steps") == "60"
    assert not pg.problems, "\n".join(pg.problems)


def test_expression_error_is_shown_with_its_position(page, server_url):
    pg = page
    pg.goto(server_url)
    pg.wait_for_function("window.__ravine && window.__ravine.renders > 0", timeout=30_000)
    pg.fill("#expression", "x**2 + import(y)")
    pg.wait_for_selector("#expression-error:not([hidden])", timeout=10_000)
    text = pg.inner_text("#expression-error")
    assert "position 7" in text and "^" in text
    n = _renders(pg)
    pg.fill("#expression", "x**2 + 3*y**2")
    _wait_render(pg, n)
    assert pg.is_hidden("#expression-error")
    assert pg.evaluate("window.__ravine.result().surface") == "custom"
    n = _renders(pg)
    pg.fill("#expr-box", "3")
    pg.press("#expr-box", "Enter")
    _wait_render(pg, n)
    pg.wait_for_function("document.getElementById('contour').layout.xaxis.range[1] === 3", timeout=10_000)
    assert pg.evaluate("window.__ravine.result().start") == [-3 + 6 / 8, 3 - 6 / 8]  # parse's default start
    assert not pg.problems, "\n".join(pg.problems)


def test_exports_png_json_and_python(page, server_url, tmp_path):
    pg = page
    pg.goto(server_url)
    pg.wait_for_function("window.__ravine && window.__ravine.renders > 0", timeout=30_000)
    with pg.expect_download(timeout=30_000) as dl:
        pg.click("#btn-json")
    path = tmp_path / "view.json"
    dl.value.save_as(path)
    import json

    data = json.loads(path.read_text())
    assert data["request"]["surface"] == {"name": "bowl", "params": {}}
    assert data["response"]["runs"][0]["x"][0] == data["response"]["start"][0]
    with pg.expect_download(timeout=30_000) as dl:
        pg.click("#btn-png")
    png = tmp_path / "view.png"
    dl.value.save_as(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    from ravine.plots.playground import DPI, FIGSIZE

    assert Image.open(png).size == (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))  # the server's captioned figure
    pg.click("#btn-python")
    pg.wait_for_selector("#python-dialog[open]", timeout=10_000)
    code = pg.input_value("#python-code")
    assert "sim.run(" in code and "rs.get('bowl')" in code and "playground_figure(" in code
    colors = pg.evaluate("window.__ravine.state().optimizers.map(o => o.color)")
    assert repr(colors) in code  # the page's colours
    compile(code, "snippet.py", "exec")
    pg.click("#btn-python-close")
    assert not pg.problems, "\n".join(pg.problems)


def _load(pg, url) -> None:
    pg.goto(url)
    pg.wait_for_function("window.__ravine && window.__ravine.renders > 0 && window.__ravine.result()", timeout=30_000)


def test_scrub_slider_moves_to_the_chosen_step(page, server_url):
    """Issue 15 item 1: keys and a scripted input on the step slider move the frame (they snapped back)."""
    pg = page
    _load(pg, server_url)
    steps = pg.evaluate("window.__ravine.result().steps")
    label = pg.locator("#frame-label")
    sync_api.expect(label).to_have_text(f"{steps} / {steps}")
    scrub = pg.locator("#scrub")
    scrub.focus()
    pg.keyboard.press("Home")
    sync_api.expect(label).to_have_text(f"0 / {steps}")
    pg.keyboard.press("ArrowRight")
    pg.keyboard.press("ArrowRight")
    sync_api.expect(label).to_have_text(f"2 / {steps}")
    assert scrub.input_value() == "2"
    pg.evaluate(
        "() => { const s = document.getElementById('scrub'); s.value = '57';"
        " s.dispatchEvent(new Event('input', {bubbles: true})); }"
    )
    sync_api.expect(label).to_have_text(f"57 / {steps}")
    assert scrub.input_value() == "57"
    # the drawn trajectories end at step 57 (58 points) and the loss plot's cursor is there
    assert {len(t["x"]) for t in _trajectory_traces(pg)} == {58}
    assert pg.evaluate("document.getElementById('plot-loss').layout.shapes[0].x0") == 57
    assert not pg.problems, "\n".join(pg.problems)


def test_changing_the_surface_keeps_the_users_learning_rate(page, server_url):
    """Issue 15 item 2: a new surface used to replace every lr with the surface's suggestion."""
    pg = page
    _load(pg, server_url)
    card = pg.locator("#optimizers .opt").nth(1)
    assert pg.evaluate("window.__ravine.state().optimizers[1].name") == "momentum"
    n = _renders(pg)
    card.locator("input[data-hp-num=lr]").fill("0.0123")
    card.locator("input[data-hp-num=lr]").press("Enter")
    _wait_render(pg, n)
    pg.wait_for_function("window.__ravine.result().runs[1].hyperparams.lr === 0.0123", timeout=20_000)
    hp_before = pg.evaluate("window.__ravine.state().optimizers.map(o => ({...o.hyperparams}))")
    pg.select_option("#surface-select", "valley")
    pg.wait_for_function("window.__ravine.result().surface === 'valley'", timeout=20_000)
    pg.wait_for_function("document.getElementById('contour').layout.title.text === 'valley'", timeout=20_000)
    assert pg.evaluate("window.__ravine.state().optimizers.map(o => ({...o.hyperparams}))") == hp_before
    runs = pg.evaluate("window.__ravine.result().runs")
    assert [r["hyperparams"]["lr"] for r in runs] == [h["lr"] for h in hp_before]
    assert card.locator("input[data-hp-num=lr]").input_value() == "0.0123"
    assert not pg.problems, "\n".join(pg.problems)


def test_each_optimizer_gets_its_own_stability_mark(page, server_url):
    """Issue 15 item 3: the 2/lambda_max mark sat on every lr slider, momentum's and Adam's included.

    On the valley f = (x^2 + 25 y^2) / 2 (lambda_max = 25): GD's limit is 2/25; EMA momentum's (heavy ball at
    lr (1 - beta) lr) is 2 (1 + beta) / ((1 - beta) 25); Adam has none. Momentum at lr 0.5, far right of GD's
    mark, converges in the run the server computes.
    """
    import json
    from urllib.parse import quote

    state = {
        "surface": {"name": "valley", "params": {"condition": 25.0}, "expression": None},
        "start": [-1.5, 0.5],
        "steps": 200,
        "probe": [-1.5, 0.5],
        "optimizers": [
            {"name": "gd", "color": "#2f5fd0", "hyperparams": {"lr": 0.05}},
            {"name": "momentum", "color": "#d0452f", "hyperparams": {"lr": 0.5, "beta": 0.9, "form": "ema"}},
            {"name": "adam", "color": "#2f9d55", "hyperparams": {"lr": 0.05}},
        ],
    }
    pg = page
    pg.goto(server_url + "#" + quote(json.dumps(state)))
    pg.wait_for_function("window.__ravine && window.__ravine.curvature() && window.__ravine.result()", timeout=30_000)
    limits = pg.evaluate("window.__ravine.curvature().limits")
    assert limits[0]["lr"] == pytest.approx(2 / 25, rel=1e-12)
    assert limits[1]["lr"] == pytest.approx(2 * 1.9 / (0.1 * 25), rel=1e-12)
    assert limits[2]["lr"] is None and "λmax(P⁻¹H)" in limits[2]["rule"]  # on the preconditioned curvature
    run = pg.evaluate("window.__ravine.result().runs[1]")
    assert run["hyperparams"]["lr"] > limits[0]["lr"] and not run["diverged"] and run["steps_to_tol"] is not None
    cards = pg.locator("#optimizers .opt")
    gd_mark, mom_mark = cards.nth(0).locator("[data-stab]"), cards.nth(1).locator("[data-stab]")
    sync_api.expect(gd_mark).to_be_visible()
    sync_api.expect(mom_mark).to_be_visible()
    assert "gradient descent" in gd_mark.get_attribute("title")
    assert "EMA momentum" in mom_mark.get_attribute("title") and "2/λmax" not in mom_mark.get_attribute("title")
    assert gd_mark.bounding_box()["x"] < mom_mark.bounding_box()["x"]  # 0.08 left of 1.52 on the log slider
    sync_api.expect(cards.nth(2).locator("[data-stab]")).to_be_hidden()
    # a new beta moves momentum's limit: 2 (1 + 0.5) / (0.5 * 25) = 0.24
    beta = cards.nth(1).locator("input[data-hp-num=beta]")
    beta.fill("0.5")
    beta.press("Enter")
    pg.wait_for_function("Math.abs(window.__ravine.curvature().limits[1].lr - 0.24) < 1e-12", timeout=20_000)
    sync_api.expect(mom_mark).to_have_attribute("title", re.compile("β = 0.5"))
    assert not pg.problems, "\n".join(pg.problems)


def test_a_run_that_stalls_on_a_saddle_is_not_reported_ok(page, server_url):
    """Issue 15 item 4: GD on f = x^2 - y^2 from the x axis reaches the saddle's loss and was reported "ok".

    The Hessian there is diag(2, -2), indefinite (second-derivative test): a saddle. On the bowl the same
    optimizer ends at the minimum (Hessian diag(1, 2)).
    """
    import json
    from urllib.parse import quote

    state = {
        "surface": {"name": "saddle", "params": {}, "expression": None},
        "steps": 200,
        "optimizers": [{"name": "gd", "color": "#2f5fd0", "hyperparams": {"lr": 0.1}}],
    }
    pg = page
    pg.goto(server_url + "#" + quote(json.dumps(state)))
    pg.wait_for_function("window.__ravine && window.__ravine.result()", timeout=30_000)
    run = pg.evaluate("window.__ravine.result().runs[0]")
    assert run["y"][-1] == 0.0 and abs(run["x"][-1]) < 1e-6  # GD on x^2 - y^2 from y = 0 never leaves y = 0
    assert run["end"] == "saddle"
    row = pg.locator("#summary tr").nth(1)
    sync_api.expect(row).to_contain_text("stalled at a saddle")
    assert "ok" not in row.inner_text().split()
    n = _renders(pg)
    pg.select_option("#surface-select", "bowl")
    _wait_render(pg, n)
    pg.wait_for_function("window.__ravine.result().surface === 'bowl'", timeout=20_000)
    assert pg.evaluate("window.__ravine.result().runs[0].end") == "minimum"
    sync_api.expect(pg.locator("#summary tr").nth(1)).to_contain_text("at a minimum")
    assert not pg.problems, "\n".join(pg.problems)


def test_a_failed_expression_leaves_no_stale_surface(page, server_url):
    """Issue 15 item 5: after an expression failed, the contour, title and dropdown still showed the old surface.

    ``log(x)`` parses, but the loss at its default start (x < 0) is NaN: the server refuses the run (422).
    """
    pg = page
    _load(pg, server_url)
    assert pg.evaluate("document.getElementById('contour').layout.title.text") == "bowl"
    pg.fill("#expression", "log(x) + y**2")
    pg.wait_for_function(
        "document.getElementById('contour').layout.title.text === 'f(x, y) = log(x) + y**2'", timeout=20_000
    )
    # the run's refusal is shown on the contour, and the bowl's runs are gone
    pg.wait_for_function(
        "document.getElementById('contour').layout.annotations.some(a => /loss at .*nan/i.test(a.text))",
        timeout=20_000,
    )
    assert _trajectory_traces(pg) == []
    assert pg.evaluate("window.__ravine.result()") is None
    sync_api.expect(pg.locator("#surface-select")).to_have_value("(expression)")
    # an expression that does not parse: no surface drawn at all, the error on the plot and under the field
    pg.fill("#expression", "x**2 + import(y)")
    pg.wait_for_selector("#expression-error:not([hidden])", timeout=10_000)
    pg.wait_for_function(
        "document.getElementById('contour').layout.title.text === 'f(x, y) = x**2 + import(y)'", timeout=20_000
    )
    assert pg.evaluate("document.getElementById('contour').data.filter(t => t.type === 'contour').length") == 0
    sync_api.expect(pg.locator("#surface-select")).to_have_value("(expression)")
    # clearing the field goes back to the built-in surface
    n = _renders(pg)
    pg.fill("#expression", "")
    _wait_render(pg, n)
    sync_api.expect(pg.locator("#surface-select")).to_have_value("bowl")
    pg.wait_for_function("document.getElementById('contour').layout.title.text === 'bowl'", timeout=20_000)
    assert len(_trajectory_traces(pg)) == 2
    # Chromium logs the refused run (the 422 this test provokes); nothing else may be logged
    problems = [p for p in pg.problems if "status of 422" not in p]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("surface", ["valley", "rosenbrock"])
def test_contour_has_a_one_to_one_aspect(page, server_url, surface):
    """Issue 15 item 6: y was stretched 1.68x on the valley; a unit of y must be as long as a unit of x.

    The drawn axes show the surface's whole domain (the server's ``domain``), each at the same pixels per unit.
    """
    pg = page
    _load(pg, server_url)
    n = _renders(pg)
    pg.select_option("#surface-select", surface)
    _wait_render(pg, n)
    pg.wait_for_function(f"document.getElementById('contour').layout.title.text === '{surface}'", timeout=20_000)
    axes = pg.evaluate(
        """() => { const fl = document.getElementById('contour')._fullLayout;
                   return {xr: fl.xaxis.range, yr: fl.yaxis.range, xl: fl.xaxis._length, yl: fl.yaxis._length}; }"""
    )
    px_x = axes["xl"] / (axes["xr"][1] - axes["xr"][0])
    px_y = axes["yl"] / (axes["yr"][1] - axes["yr"][0])
    assert px_y == pytest.approx(px_x, rel=0.01)
    # the whole domain is still shown on both axes
    dx, dy = pg.evaluate(
        "async (name) => (await (await fetch('/api/surfaces')).json()).find(s => s.name === name).domain", surface
    )
    assert axes["xr"][0] <= dx[0] + 1e-9 and axes["xr"][1] >= dx[1] - 1e-9
    assert axes["yr"][0] <= dy[0] + 1e-9 and axes["yr"][1] >= dy[1] - 1e-9
    assert not pg.problems, "\n".join(pg.problems)


def test_number_fields_and_links_carry_whole_clean_numbers(page, server_url):
    """Issue 15 item 7: 1e-5 showed as "0.0000" (cut by the field) and links/exports carried 0.7000000000000002."""
    from urllib.parse import unquote

    pg = page
    _load(pg, server_url)
    card = pg.locator("#optimizers .opt").nth(1)
    lr = card.locator("input[data-hp-num=lr]")
    n = _renders(pg)
    lr.fill("0.00001")
    lr.press("Enter")
    _wait_render(pg, n)
    sync_api.expect(lr).to_have_value("1e-5")
    assert lr.evaluate("e => e.scrollWidth <= e.clientWidth")  # the whole text fits: nothing cut
    assert float(lr.input_value()) == 1e-5
    beta = card.locator("input[data-hp-num=beta]")
    n = _renders(pg)
    beta.fill("0.7000000000000002")
    beta.press("Enter")
    _wait_render(pg, n)
    sync_api.expect(beta).to_have_value("0.7")
    pg.wait_for_function("window.__ravine.result().runs[1].hyperparams.beta === 0.7", timeout=20_000)
    assert pg.evaluate("window.__ravine.result().runs[1].hyperparams.lr") == 1e-5
    link = unquote(pg.evaluate("location.hash"))
    assert '"beta":0.7,' in link and "0.7000000000000002" not in link
    pg.click("#btn-python")
    pg.wait_for_selector("#python-dialog[open]", timeout=10_000)
    code = pg.input_value("#python-code")
    assert "0.7000000000000002" not in code and "0.7" in code
    pg.click("#btn-python-close")
    assert not pg.problems, "\n".join(pg.problems)


def _components(mask: np.ndarray) -> int:
    """The number of 4-connected regions of True cells in ``mask``."""
    seen = np.zeros_like(mask, dtype=bool)
    count = 0
    for i0, j0 in zip(*np.nonzero(mask)):
        if seen[i0, j0]:
            continue
        count += 1
        stack = [(i0, j0)]
        seen[i0, j0] = True
        while stack:
            i, j = stack.pop()
            for a, b in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
                if 0 <= a < mask.shape[0] and 0 <= b < mask.shape[1] and mask[a, b] and not seen[a, b]:
                    seen[a, b] = True
                    stack.append((a, b))
    return count


def test_lowest_contour_band_is_one_region_not_a_broken_line(page, server_url):
    """Issue 15 item 8: Rosenbrock's lowest band drew as a dashed line along the valley floor.

    The region drawn in the lowest colour (grid cells below the first level) must follow the valley floor
    y = x^2 as one connected band: it holds the floor's points (0.5, 0.25) and (1.5, 2.25) (f = 0.25 there)
    and the minimum (1, 1). A first level so close to the minimum that the band is thinner than the grid
    breaks into pieces, drawn as a dashed line.
    """
    pg = page
    _load(pg, server_url)
    n = _renders(pg)
    pg.select_option("#surface-select", "rosenbrock")
    _wait_render(pg, n)
    pg.wait_for_function("document.getElementById('contour').layout.title.text === 'rosenbrock'", timeout=20_000)
    trace = pg.evaluate(
        """() => { const t = document.getElementById('contour')._fullData.find(d => d.type === 'contour');
                   return {x: Array.from(t.x), y: Array.from(t.y), z: t.z, start: t.contours.start}; }"""
    )
    z = np.array([[np.nan if v is None else v for v in row] for row in trace["z"]], dtype=float)
    below = np.nan_to_num(z, nan=np.inf) < trace["start"]
    assert _components(below) == 1
    xs, ys = np.array(trace["x"]), np.array(trace["y"])
    for px, py in ((0.5, 0.25), (1.0, 1.0), (1.5, 2.25)):
        assert below[np.abs(ys - py).argmin(), np.abs(xs - px).argmin()], (px, py)
    assert not pg.problems, "\n".join(pg.problems)


def test_clipping_is_shown_without_burying_the_gradient_curve(page, server_url):
    """Issue 15 item 9: clipped-step markers sat on the gradient-norm curve, that panel's x axis shifted
    out of line with the other two, and the contour did not mark the clipped steps."""
    import json
    from urllib.parse import quote

    state = {
        "surface": {"name": "valley", "params": {"condition": 25.0}, "expression": None},
        "start": [-1.5, 0.5],
        "steps": 120,
        "clip": {"kind": "norm", "max": 1.0},
        "optimizers": [
            {"name": "gd", "color": "#2f5fd0", "hyperparams": {"lr": 0.05}},
            {"name": "momentum", "color": "#d0452f", "hyperparams": {"lr": 0.3, "beta": 0.9}},
        ],
    }
    pg = page
    pg.goto(server_url + "#" + quote(json.dumps(state)))
    pg.wait_for_function("window.__ravine && window.__ravine.result()", timeout=30_000)
    runs = pg.evaluate("window.__ravine.result().runs")
    assert all(len(r["clipped_steps"]) > 0 for r in runs)
    # |grad| at the start is |(-1.5, 25 * 0.5)| = 12.6 > 1: step 0 is clipped
    assert all(r["clipped_steps"][0] == 0 and r["grad_norm"][0] == pytest.approx(math.hypot(1.5, 12.5)) for r in runs)
    grad = pg.evaluate(
        """() => document.getElementById('plot-grad').data.map(t => ({name: t.name, mode: t.mode,
             yaxis: t.yaxis || 'y', x: Array.from(t.x)}))"""
    )
    # nothing but the curves on the curves' axis; the clipped steps are a rug on their own axis
    assert [t["mode"] for t in grad if t["yaxis"] == "y"] == ["lines", "lines"]
    rugs = [t for t in grad if t["yaxis"] == "y2"]
    assert [t["x"] for t in rugs] == [r["clipped_steps"] for r in runs]
    axes = pg.evaluate(
        """() => ['plot-loss', 'plot-grad', 'plot-lr'].map(id => {
             const xa = document.getElementById(id)._fullLayout.xaxis;
             return [xa._offset, xa._length, xa.range[0], xa.range[1]]; })"""
    )
    assert axes[0] == axes[1] == axes[2] and axes[0][2:] == [0, 120]
    # the contour marks each clipped step at the position where it was taken
    marks = pg.evaluate(
        """() => document.getElementById('contour').data.filter(t => (t.name || '').endsWith(' clipped'))
             .map(t => ({x: Array.from(t.x), y: Array.from(t.y)}))"""
    )
    assert len(marks) == 2
    for m, r in zip(marks, runs):
        assert m["x"] == [r["x"][k] for k in r["clipped_steps"]] and m["y"] == [r["y"][k] for k in r["clipped_steps"]]
    assert not pg.problems, "\n".join(pg.problems)


def test_legend_tooltips_ticks_reload_and_fold(browser, server_url):
    """Issue 15 item 10, at 1400x900: the legend hid trajectories, tooltips showed reStructuredText, the loss
    axis repeated tick labels, a reload lost the step and the sweep, the curvature and sweep sat below the fold."""
    import json
    from urllib.parse import quote

    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = ctx.new_page()
    problems: list[str] = []
    pg.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda exc: problems.append(str(exc)))
    # the plateau from its default start: GD with a small lr barely moves, the loss spans a sliver of a decade
    state = {
        "surface": {"name": "plateau", "params": {}, "expression": None},
        "steps": 100,
        "optimizers": [
            {"name": "gd", "color": "#2f5fd0", "hyperparams": {"lr": 0.01}},
            {"name": "momentum", "color": "#d0452f", "hyperparams": {"lr": 0.001, "beta": 0.5}},
        ],
        "logLoss": True,
    }
    try:
        pg.goto(server_url + "#" + quote(json.dumps(state)))
        pg.wait_for_function("window.__ravine && window.__ravine.result()", timeout=30_000)
        ticks = pg.evaluate("Array.from(document.querySelectorAll('#plot-loss .ytick text')).map(t => t.textContent)")
        assert len(ticks) >= 2 and len(set(ticks)) == len(ticks), ticks
        # the legend lies outside the plot area
        legend = pg.locator("#contour .legend").bounding_box()
        area = pg.locator("#contour .nsewdrag").first.bounding_box()
        assert legend["y"] + legend["height"] <= area["y"] or legend["x"] >= area["x"] + area["width"]
        # tooltips are plain text
        titles = pg.evaluate("Array.from(document.querySelectorAll('[title]')).map(e => e.title)")
        assert titles and not [t for t in titles if "``" in t or ":func:" in t or ":class:" in t]
        # the curvature readout and the sweep's button start above the fold
        assert pg.locator("#curv-info").bounding_box()["y"] < 900
        button = pg.locator("#btn-sweep").bounding_box()
        assert button["y"] + button["height"] <= 900
        # a step position and a sweep survive a reload
        pg.select_option("#sweep-opt", "1")
        pg.select_option("#sweep-n", "16")
        pg.click("#btn-sweep")
        pg.wait_for_function("window.__ravine.sweeps > 0", timeout=30_000)
        swept = pg.evaluate("window.__ravine.sweep().final_loss")
        pg.evaluate(
            "() => { const s = document.getElementById('scrub'); s.value = '37';"
            " s.dispatchEvent(new Event('input', {bubbles: true})); }"
        )
        sync_api.expect(pg.locator("#frame-label")).to_have_text("37 / 100")
        pg.wait_for_function("decodeURIComponent(location.hash).includes('\"frame\":37')", timeout=10_000)
        pg.reload()
        pg.wait_for_function(
            "window.__ravine && window.__ravine.result() && window.__ravine.sweeps > 0", timeout=30_000
        )
        sync_api.expect(pg.locator("#frame-label")).to_have_text("37 / 100")
        assert pg.evaluate("window.__ravine.sweep().final_loss") == swept
        assert not problems, "\n".join(problems)
    finally:
        ctx.close()


def test_a_dragged_slider_redraws_during_the_drag_and_the_contour_stays(page, server_url):
    """Issue 15 item 11: during a continuous drag the plot froze until the hand stopped (debounced).

    The mouse drags GD's lr slider back and forth, one input event per move, and keeps moving until
    responses have been drawn: more than one must be drawn before the button is released (a debounced
    page draws none while events keep coming). At most one trajectory request is in flight at a time,
    the contour grid is fetched and its trace built once, a trajectory response carries no grid, and
    once the drag ends the drawn run has the slider's last value.
    """
    pg = page
    _load(pg, server_url)
    _wait_idle(pg)
    bodies: list[dict] = []
    flight = {"now": 0, "max": 0}

    def sent(r):
        if r.url.endswith("/api/trajectories"):
            flight["now"] += 1
            flight["max"] = max(flight["max"], flight["now"])

    def done(r):
        if r.url.endswith("/api/trajectories"):
            flight["now"] -= 1

    pg.on("request", sent)
    pg.on("requestfinished", done)
    pg.on("requestfailed", done)
    pg.on("response", lambda r: bodies.append(r.json()) if r.url.endswith("/api/trajectories") and r.ok else None)
    before = pg.evaluate("({g: window.__ravine.gridRequests, c: window.__ravine.contourBuilds,"
                         " r: window.__ravine.renders, t: window.__ravine.trajectoryRequests})")
    slider = pg.locator("#optimizers .opt").nth(0).locator("input[type=range][data-hp=lr]")
    box = slider.bounding_box()
    y = box["y"] + box["height"] / 2
    lo, hi = box["x"] + 10, box["x"] + box["width"] - 10
    pg.mouse.move(lo + 0.3 * (hi - lo), y)
    pg.mouse.down()
    drawn_during_drag = 0
    x, direction, moves = lo + 0.3 * (hi - lo), 1, 0
    while moves < 3000:
        x += direction * 2
        if x >= lo + 0.6 * (hi - lo) or x <= lo + 0.2 * (hi - lo):
            direction = -direction
        pg.mouse.move(x, y)
        moves += 1
        drawn_during_drag = pg.evaluate("window.__ravine.renders") - before["r"]
        if drawn_during_drag >= 3 and moves >= 100:
            break
    last_value = float(slider.input_value())
    pg.mouse.up()
    assert drawn_during_drag > 1, f"only {drawn_during_drag} redraws in {moves} input events"
    _wait_idle(pg)
    after = pg.evaluate("({g: window.__ravine.gridRequests, c: window.__ravine.contourBuilds,"
                        " t: window.__ravine.trajectoryRequests})")
    assert after["g"] == before["g"] and after["c"] == before["c"]  # the contour was neither re-fetched nor rebuilt
    assert flight["max"] == 1 and after["t"] - before["t"] >= drawn_during_drag  # one request in flight at a time
    assert bodies and all("grid" not in b and "z" not in b for b in bodies)
    lr = pg.evaluate("window.__ravine.state().optimizers[0].hyperparams.lr")
    assert lr == pytest.approx(10**last_value, rel=1e-3)  # the log slider's last position
    drawn = pg.evaluate("window.__ravine.result().runs[0].hyperparams.lr")
    assert drawn == lr
    assert not pg.problems, "\n".join(pg.problems)


@pytest.mark.parametrize(
    "preset",
    ["bowl", "zigzag", "adam_bias", "lr_beta_sweep", "warmup_cosine", "saddle", "saddle_noise", "sharp_flat", "cliff",
     "cliff_clip"],
)
def test_a_preset_loads_its_view_with_caption_and_what_you_are_seeing(browser, server_url, preset):
    """Issue 15, teaching: one click loads a chapter figure; the caption and the server's sentences are shown.

    Screenshots at 1400x900 go to ``artifacts/web/preset-<id>.png``.
    """
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = ctx.new_page()
    problems: list[str] = []
    pg.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda exc: problems.append(str(exc)))
    try:
        _load(pg, server_url)
        _wait_idle(pg)
        pg.click(f"[data-preset='{preset}']")
        pg.wait_for_function(
            f"window.__ravine.idle() && window.__ravine.state().preset === '{preset}' && window.__ravine.result()"
            f" && window.__ravine.result().steps === {_preset(preset)['request']['steps']}",
            timeout=30_000,
        )
        _wait_idle(pg)
        p = _preset(preset)
        result = pg.evaluate("window.__ravine.result()")
        assert [r["name"] for r in result["runs"]] == [o["name"] for o in p["request"]["optimizers"]]
        assert [r["hyperparams"]["lr"] for r in result["runs"]] == [o["hyperparams"]["lr"] for o in
                                                                   p["request"]["optimizers"]]
        if p["request"]["start"] is not None:
            assert result["start"] == p["request"]["start"]
        sync_api.expect(pg.locator("#caption")).to_contain_text(p["caption"][0][:40])
        shown = pg.locator("#seeing li").all_inner_texts()
        assert shown == result["seeing"]
        sync_api.expect(pg.locator(f"[data-preset='{preset}']")).to_have_class(re.compile("on"))
        # the caption and the sentences keep the curvature readout and the sweep's button above the fold
        assert pg.locator("#curv-info").bounding_box()["y"] < 900
        button = pg.locator("#btn-sweep").bounding_box()
        assert button["y"] + button["height"] <= 900
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / f"preset-{preset}.png"))
        assert not problems, "\n".join(problems)
    finally:
        ctx.close()


def _preset(preset_id: str) -> dict:
    from ravine.web import teaching

    return next(p for p in teaching.presets() if p["id"] == preset_id)


def _open_state(browser, server_url, state: dict, viewport=(1400, 900)):
    """A new 1400x900 page loaded from a link's state; returns (context, page, problems)."""
    import json
    from urllib.parse import quote

    ctx = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    pg = ctx.new_page()
    problems: list[str] = []
    pg.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda exc: problems.append(str(exc)))
    pg.goto(server_url + "#" + quote(json.dumps(state)))
    pg.wait_for_function("window.__ravine && window.__ravine.result() && window.__ravine.idle()", timeout=30_000)
    return ctx, pg, problems


def test_the_sweep_panel_explains_an_optimizer_with_one_setting(browser, server_url):
    """Issue 15, sweep panel: with GD (lr only) both axis selectors read "lr" and the button was just disabled.

    Every optimizer of GET /api/optimizers is put in the sweep: one with two or more float settings gets two
    different axes and its sweep runs; one with a single setting shows that y has none, a hint names an
    optimizer with two, and no request is sent. The hint's button loads momentum (lr x beta), whose sweep
    runs; picking on y the setting shown on x swaps the axes. No /api/sweep request is ever refused.
    """
    import json
    import urllib.request

    catalog = json.load(urllib.request.urlopen(server_url + "api/optimizers"))
    state = {"surface": {"name": "bowl", "params": {}, "expression": None}, "steps": 20,
             "optimizers": [{"name": "gd", "color": "#2f5fd0", "hyperparams": {"lr": 0.1}}],
             "sweep": {"opt": 0, "x": None, "y": None, "n": 16, "metric": "final_loss"}}
    ctx, pg, problems = _open_state(browser, server_url, state)
    sent: list[str] = []  # every /api/sweep request, as the browser sends it (events arrive in order)
    pg.on("request", lambda r: sent.append(r.url) if r.url.endswith("/api/sweep") else None)

    def sweep() -> dict:
        """Click "Run sweep"; the request's body once its response is in and drawn (which must be a 200)."""
        n = pg.evaluate("window.__ravine.sweeps")
        with pg.expect_response(lambda r: r.url.endswith("/api/sweep"), timeout=30_000) as resp:
            pg.click("#btn-sweep")
        assert resp.value.status == 200, resp.value.text()
        pg.wait_for_function(f"window.__ravine.sweeps > {n}", timeout=30_000)
        return json.loads(resp.value.request.post_data)

    try:
        single = [o["name"] for o in catalog if sum(h["kind"] == "float" for h in o["hyperparams"]) < 2]
        assert "gd" in single
        for o in catalog:
            floats = [h["name"] for h in o["hyperparams"] if h["kind"] == "float"]
            pg.select_option("#optimizers .opt select.opt-name", o["name"])
            _wait_idle(pg)
            x, y = pg.input_value("#sweep-x"), pg.input_value("#sweep-y")
            if len(floats) < 2:
                assert x == floats[0]
                assert pg.locator("#sweep-y").is_disabled() and "none" in pg.locator("#sweep-y").inner_text()
                assert pg.locator("#btn-sweep").is_disabled()
                hint = pg.locator("#sweep-hint")
                sync_api.expect(hint).to_be_visible()
                sync_api.expect(hint).to_contain_text(f"{o['name']} has one setting")
                sync_api.expect(hint).to_contain_text("momentum")
                continue
            assert x in floats and y in floats and x != y, (o["name"], x, y)
            assert pg.locator("#sweep-hint").is_hidden()
            body = sweep()
            assert (body["optimizer"]["name"], body["x"]["name"], body["y"]["name"]) == (o["name"], x, y)
            assert pg.locator("#sweep-error").is_hidden(), pg.inner_text("#sweep-error")
        # back to GD: the hint's button loads an optimizer with two settings and its sweep runs
        pg.select_option("#optimizers .opt select.opt-name", "gd")
        _wait_idle(pg)
        pg.click("#sweep-hint button")
        _wait_idle(pg)
        assert pg.evaluate("window.__ravine.state().optimizers.map(o => o.name)") == ["gd", "momentum"]
        sync_api.expect(pg.locator("#sweep-opt")).to_have_value("1")
        assert (pg.input_value("#sweep-x"), pg.input_value("#sweep-y")) == ("lr", "beta")
        assert pg.locator("#sweep-hint").is_hidden() and not pg.locator("#btn-sweep").is_disabled()
        # the same setting on both axes is never sent: picking x's setting on y swaps the two
        pg.select_option("#sweep-y", "lr")
        assert (pg.input_value("#sweep-x"), pg.input_value("#sweep-y")) == ("beta", "lr")
        body = sweep()
        assert (body["optimizer"]["name"], body["x"]["name"], body["y"]["name"]) == ("momentum", "beta", "lr")
        # one request per sweep run: none for the optimizers with one setting
        assert len(sent) == len(catalog) - len(single) + 1
        assert not problems, "\n".join(problems)
    finally:
        ctx.close()


def _lr_axis(pg) -> dict:
    return pg.evaluate(
        """() => { const ya = document.getElementById('plot-lr')._fullLayout.yaxis;
             return {type: ya.type, range: ya.range.slice(),
                     ticks: Array.from(document.querySelectorAll('#plot-lr .ytick text')).map(t => t.textContent)}; }"""
    )


@pytest.mark.parametrize(
    ("lrs", "schedule"),
    [([1e-3], None), ([0.1], None), ([0.1, 1.0], None), ([0.3], {"name": "warmup_cosine", "params": {}})],
)
def test_the_learning_rate_panel_has_a_sensible_range(browser, server_url, lrs, schedule):
    """Issue 15, learning-rate panel: a constant lr drew in a range around zero (0.1 in [-0.9, 1.1]).

    Every lr the server returns lies inside the axis, the axis shows no negative learning rate, the
    highest lr sits in the upper part of the panel (not squeezed against zero or an edge), two lrs a
    decade apart get a log axis, and the tick labels are distinct short numbers (no float noise).
    """
    state = {"surface": {"name": "bowl", "params": {}, "expression": None}, "steps": 50,
             "optimizers": [{"name": "gd", "color": "#2f5fd0", "hyperparams": {"lr": lr}} for lr in lrs],
             "schedule": schedule or {"name": "constant", "params": {}}}
    ctx, pg, problems = _open_state(browser, server_url, state)
    try:
        served = [v for r in pg.evaluate("window.__ravine.result().runs") for v in r["lr"]]
        assert max(served) == pytest.approx(max(lrs))
        ax = _lr_axis(pg)
        lo, hi = ax["range"]
        if ax["type"] == "log":
            lo, hi = 10**lo, 10**hi
            shown = [v for v in served if v > 0]
            top = (math.log10(max(served)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        else:
            shown = served
            top = (max(served) - lo) / (hi - lo)
            assert lo >= 0, ax
        assert (ax["type"] == "log") == (max(lrs) / min(lrs) >= 10), ax
        assert all(lo <= v <= hi for v in shown), (ax, min(shown), max(shown))
        assert 0.6 <= top <= 0.95, (ax, top)
        if schedule is not None:
            assert min(served) < 0.2 * max(served) and min(served) >= lo  # the warmup's start is drawn
        ticks = ax["ticks"]
        assert len(ticks) >= 2 and len(set(ticks)) == len(ticks), ticks
        values = [float(t.replace("\u2212", "-")) for t in ticks]
        assert all(v >= 0 for v in values) and all(len(t) <= 6 for t in ticks), ticks
        assert not problems, "\n".join(problems)
    finally:
        ctx.close()


def _tick_values(pg, plot: str, axis: str = "y") -> list[float]:
    """A plot's tick labels of one axis, read as numbers (Unicode minus and 'e' exponents), bottom to top."""
    texts = pg.evaluate(f"Array.from(document.querySelectorAll('#{plot} .{axis}tick text')).map(t => t.textContent)")
    return [float(t.replace("\u2212", "-")) for t in texts]


def test_walk_log_axes_label_values_that_read_as_values(browser, server_url):
    """Issue 15, walking the page: log axes labelled the 2s and 5s inside a decade as bare "2" and "5"
    ("1, 2, 5, 10, 2, 5, 100"): read as numbers, the labels of every log axis must increase.

    Rosenbrock with clipping (gradient norms over about two decades) and an lr x beta sweep on log lr.
    """
    state = {"surface": {"name": "rosenbrock", "params": {}, "expression": None}, "steps": 150,
             "optimizers": [{"name": "gd", "color": "#2f5fd0", "hyperparams": {"lr": 0.001}},
                            {"name": "momentum", "color": "#d0452f", "hyperparams": {"lr": 0.05, "beta": 0.9}}],
             "clip": {"kind": "norm", "max": 1.0},
             "sweep": {"opt": 1, "x": {"name": "lr", "min": 0.001, "max": 1, "log": True},
                       "y": {"name": "beta", "min": 0, "max": 0.99, "log": False}, "n": 16, "metric": "final_loss"}}
    ctx, pg, problems = _open_state(browser, server_url, state)
    try:
        pg.click("#btn-sweep")
        pg.wait_for_function("window.__ravine.sweeps > 0", timeout=30_000)
        for plot, axis in [("plot-loss", "y"), ("plot-grad", "y"), ("plot-sweep", "x")]:
            assert pg.evaluate(f"document.getElementById('{plot}')._fullLayout.{axis}axis.type") == "log"
            values = _tick_values(pg, plot, axis)
            assert len(values) >= 2 and all(a < b for a, b in zip(values, values[1:])), (plot, values)
        assert not problems, "\n".join(problems)
    finally:
        ctx.close()


def test_walk_a_refused_schedule_is_explained_inside_the_plot_and_cleared(browser, server_url):
    """Issue 15, walking the page: a schedule the server refuses (here a warmup longer than the run) came back
    as a long message that ran past the contour's edge, and the red message stayed up after the settings
    were made valid."""
    state = {"surface": {"name": "bowl", "params": {}, "expression": None}, "steps": 100,
             "optimizers": [{"name": "gd", "color": "#2f5fd0", "hyperparams": {"lr": 0.1}}]}
    ctx, pg, problems = _open_state(browser, server_url, state)
    try:
        n = _renders(pg)
        pg.select_option("#schedule", "warmup_cosine")
        _wait_render(pg, n)
        field = pg.locator("[data-sp=warmup_steps]")
        field.fill("500")
        field.press("Enter")
        pg.wait_for_function("window.__ravine.idle() && !window.__ravine.result()", timeout=20_000)
        sync_api.expect(pg.locator("#status")).to_be_visible()
        note = pg.locator("#contour .annotation").last
        sync_api.expect(note).to_contain_text("warmup_steps")
        plot, box = pg.locator("#contour").bounding_box(), note.bounding_box()
        assert plot["x"] <= box["x"] and box["x"] + box["width"] <= plot["x"] + plot["width"], (plot, box)
        n = _renders(pg)
        field.fill("10")
        field.press("Enter")
        _wait_render(pg, n)
        lrs = pg.evaluate("window.__ravine.result().runs[0].lr")
        assert lrs[0] < 0.02 and max(lrs) == pytest.approx(0.1)  # a warmup up to the optimizer's lr
        sync_api.expect(pg.locator("#status")).to_be_hidden()
        sync_api.expect(pg.locator("#contour .annotation")).to_have_count(0)
        # the refused request's 422 is the only console error
        assert all("422" in p for p in problems), "\n".join(problems)
    finally:
        ctx.close()


def test_walk_loss_panel_and_summary_on_surfaces_without_a_known_minimum(browser, server_url):
    """Issue 15, walking the page: on a surface with no known minimum (the monkey saddle is unbounded below) the
    loss panel drew log(loss - grid min), and a run below the grid's lowest value fell to the axis floor like a
    convergence; the summary's "converged" column counted a stall on a saddle (the tolerance there is on the
    gradient norm). The panel falls back to linear and says so; the column says "stationary"."""
    import json
    import urllib.request

    # f = x^3 - 3 x y^2: from (-0.5, 0) gradient descent runs down the x axis, where f = x^3 falls without end
    state = {"surface": {"name": "monkey_saddle", "params": {}, "expression": None}, "steps": 100,
             "start": [-0.5, 0.0], "optimizers": [{"name": "gd", "color": "#2f5fd0", "hyperparams": {"lr": 0.05}}]}
    ctx, pg, problems = _open_state(browser, server_url, state)
    try:
        result = pg.evaluate("window.__ravine.result()")
        assert result["global_min"] is None
        lowest = min(v for v in result["runs"][0]["loss"] if v is not None)
        body = json.dumps({"surface": {"name": "monkey_saddle"}, "n": 120}).encode()
        req = urllib.request.Request(server_url + "api/surface/grid", data=body,
                                     headers={"Content-Type": "application/json"})
        grid_min = json.load(urllib.request.urlopen(req))["grid"]["zmin"]
        assert grid_min == pytest.approx(-16, rel=1e-6)  # x^3 - 3 x y^2 at (2, +-2)
        assert lowest < grid_min  # a run went below every value of the contour's grid
        assert pg.evaluate("document.getElementById('plot-loss')._fullLayout.yaxis.type") == "linear"
        sync_api.expect(pg.locator("#loss-linear")).to_be_visible()
        assert pg.locator("#summary th").nth(2).inner_text() == "stationary"
        pg.select_option("#surface-select", "bowl")
        pg.wait_for_function("window.__ravine.idle() && window.__ravine.result().surface === 'bowl'", timeout=20_000)
        pg.wait_for_function("document.getElementById('plot-loss')._fullLayout.yaxis.type === 'log'", timeout=10_000)
        sync_api.expect(pg.locator("#loss-linear")).to_be_hidden()
        assert pg.locator("#summary th").nth(2).inner_text() == "converged"
        assert not problems, "\n".join(problems)
    finally:
        ctx.close()


def test_walk_no_optimizer_stale_messages_and_cramped_controls(browser, server_url):
    """Issue 15, walking the page at 1400x900: the Python export's long lines wrapped; "+ Add" wrapped onto two
    lines; the curvature readout's limit rules ran out of its box; a refused sweep's message stayed under
    other settings; with every optimizer removed the contour said nothing, the side panels kept tick labels
    of no data, and PNG/Python sent requests the server refuses."""
    state = {"surface": {"name": "rosenbrock", "params": {}, "expression": None}, "steps": 50,
             "optimizers": [{"name": "gd", "color": "#2f5fd0", "hyperparams": {"lr": 0.001}},
                            {"name": "adam", "color": "#d0452f", "hyperparams": {"lr": 0.05}}]}
    ctx, pg, problems = _open_state(browser, server_url, state)
    try:
        # the Python export is code: its long lines scroll, they are not wrapped into lines that do not parse
        pg.click("#btn-python")
        pg.wait_for_selector("#python-dialog[open]", timeout=10_000)
        code = pg.locator("#python-code")
        assert max(len(line) for line in code.input_value().splitlines()) > 150
        assert code.evaluate("e => e.scrollWidth > e.clientWidth")
        pg.click("#btn-python-close")
        add = pg.locator("#btn-add")
        assert add.bounding_box()["height"] < 1.6 * pg.locator("#btn-link").bounding_box()["height"]
        pg.click("#btn-probe-start")
        pg.wait_for_function("window.__ravine.curvature()", timeout=20_000)
        sync_api.expect(pg.locator("#curv-info")).to_contain_text("preconditioned")
        assert pg.locator("#curv-info").evaluate("e => e.scrollWidth <= e.clientWidth")
        # a refused sweep (log axis from 0), then another optimizer: the message goes with the settings
        pg.check("#sweep-y-log")
        pg.click("#btn-sweep")
        sync_api.expect(pg.locator("#sweep-error")).to_contain_text("log axis")
        pg.select_option("#optimizers .opt >> nth=1 >> select.opt-name", "momentum")
        _wait_idle(pg)
        sync_api.expect(pg.locator("#sweep-error")).to_be_hidden()
        exports: list[str] = []
        pg.on("request", lambda r: exports.append(r.url) if "/api/export/" in r.url else None)
        while pg.locator("#optimizers .opt .remove").count():
            pg.locator("#optimizers .opt .remove").first.click()
        _wait_idle(pg)
        sync_api.expect(pg.locator("#contour .annotation", has_text="no optimizer")).to_have_count(1)
        assert pg.locator("#btn-png").is_disabled() and pg.locator("#btn-python").is_disabled()
        pg.locator("#btn-python").click(force=True)
        pg.locator("#btn-png").click(force=True)
        for plot in ("plot-loss", "plot-grad", "plot-lr"):
            assert pg.locator(f"#{plot} .ytick text").count() == 0, plot
        assert exports == []
        assert all("422" in p for p in problems), "\n".join(problems)
    finally:
        ctx.close()
