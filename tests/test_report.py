"""Tests of the HTML report: self-contained, every experiment present, interruption and reuse."""

from __future__ import annotations

import re

import pytest

from ravine.experiments import claims
from ravine.experiments.claims import Experiment, Result, Verdict, threshold_check
from ravine.report import machine_info, render, report_path, run_report

EXTERNAL = re.compile(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", re.IGNORECASE)


def _png(path):
    from ravine.plots._style import plt, save

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1])
    return str(save(fig, path))


def _result(name: str, status_value: float, fig: str) -> Result:
    v = Verdict.from_checks([threshold_check("k", status_value, "<", 1.0)], "because <measured>")
    return Result(
        name,
        f"Title of {name}",
        f"claim of {name} <b>not bold</b>",
        "quick",
        v,
        {"k": status_value},
        [fig],
        [f"{name}-run"],
        1.25,
        "reading & more",
        "2026-01-01",
    )


def assert_self_contained(html: str) -> None:
    assert not EXTERNAL.search(html), EXTERNAL.search(html).group(0)
    assert "<script src" not in html and "<link" not in html
    assert "@import" not in html and "url(http" not in html


def test_render_is_self_contained_and_lists_every_experiment(tmp_path):
    fig = _png(tmp_path / "f.png")
    results = [_result(n, 0.5 if i % 2 else 2.0, fig) for i, n in enumerate(claims.names())]
    html = render(results, size="quick", machine=machine_info(results))
    assert_self_contained(html)
    for n in claims.names():
        assert f'id="exp-{n}"' in html and f"claim of {n}" in html
    assert html.count('src="data:image/png;base64,') == len(results)
    assert "&lt;b&gt;not bold&lt;/b&gt;" in html and "<b>not bold</b>" not in html  # escaped
    assert "badge ok" in html and "badge bad" in html
    for key in ("torch", "python", "cpu", "run ids"):
        assert key in html


def test_render_shows_errors_and_pending(tmp_path):
    html = render(
        [], size="quick", machine={"date": "d"}, errors={"warmup": "Traceback\nValueError: boom"}, pending=["clipping"]
    )
    assert "ValueError: boom" in html and "not run yet" in html and "clipping" in html
    assert_self_contained(html)


def test_render_parts_and_long_check_lists(tmp_path):
    """The two parts head their experiments in the table and among the sections; a verdict with many
    checks lists in the table only those not supported (with counts), and all of them in its section."""
    assert sorted(n for members in claims.PARTS.values() for n in members) == sorted(claims.names())
    fig = _png(tmp_path / "f.png")
    results = [_result(n, 0.5, fig) for n in claims.names()]
    many = [threshold_check(f"c{i}", 0.5 if i != 7 else 2.0, "<", 1.0) for i in range(12)]
    results[-1].verdict = Verdict.from_checks(many, "e")
    parts = {n: claims.part(n) for n in claims.names()}
    html = render(results, size="quick", machine={"date": "d"}, parts=parts)
    table, sections = html.split("<h2>Claims</h2>")[1].split("</table>", 1)
    for title in claims.PARTS:
        assert table.count(title) == 1 and sections.count("<h2 class='part'") == len(claims.PARTS)
    first_landscape = claims.PARTS["Loss landscapes"][0]
    assert sections.index("Loss landscapes") < sections.index(f'id="exp-{first_landscape}"')
    assert "12 checks: 11 supported, 1 not supported" in table and "c7 = " in table and "c3 = " not in table
    assert sections.count("<td>c3</td>") == 1
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        claims.part("nope")
    assert_self_contained(html)


def test_report_path():
    assert str(report_path("out", "quick")).endswith("ravine-report-quick.html")


def _fake(name: str, calls: list, fail: BaseException | None = None) -> Experiment:
    def execute(size, store, progress):
        calls.append(name)
        if fail is not None:
            raise fail
        fig = _png(store.figure_path(name, "fig"))
        return {"value": 0.5}, [fig], [f"{name}-r0"], "reading"

    def verdict(m):
        return Verdict.from_checks([threshold_check("value", m["value"], "<", 1.0)], "measured")

    return Experiment(name, f"T {name}", f"C {name}", "S", execute, verdict)


def test_run_report_continues_after_interrupt_and_records_errors(tmp_path, monkeypatch):
    calls: list[str] = []
    registry = {
        "a": _fake("a", calls),
        "b": _fake("b", calls, fail=KeyboardInterrupt()),
        "c": _fake("c", calls, fail=RuntimeError("boom")),
    }
    monkeypatch.setattr(claims, "get", lambda n: registry[n])
    monkeypatch.setattr(claims, "all_experiments", lambda: list(registry.values()))
    monkeypatch.setattr("ravine.report._gallery", lambda out, size, prog, draw=True: ([], "no gallery in this test"))
    with pytest.raises(KeyboardInterrupt):
        run_report("tiny", tmp_path, progress=False)
    html = report_path(tmp_path, "tiny").read_text()
    assert "T a" in html and "not run yet" in html  # a valid, partial report
    registry["b"] = _fake("b", calls)
    outcome = run_report("tiny", tmp_path, progress=False)
    assert calls == ["a", "b", "b", "c"]  # a reused, b rerun, c ran (and failed)
    assert [r.name for r in outcome.results] == ["a", "b"]
    assert "RuntimeError: boom" in outcome.errors["c"]
    html = outcome.path.read_text()
    assert_self_contained(html)
    assert "RuntimeError: boom" in html and "not run yet" not in html
    # running only one experiment keeps the others' saved results in the page
    outcome = run_report("tiny", tmp_path, experiments=["b"], progress=False)
    assert [r.name for r in outcome.results] == ["b"] and calls == ["a", "b", "b", "c"]  # b reused
    html = outcome.path.read_text()
    assert "T a" in html and "T b" in html and "not run yet" in html  # c failed before: no saved result


def test_run_report_tiny_real_experiment_with_gallery(tmp_path):
    outcome = run_report("tiny", tmp_path, experiments=["clipping"], progress=False)
    assert not outcome.errors
    html = outcome.path.read_text()
    assert_self_contained(html)
    assert 'id="exp-clipping"' in html and "2D gallery" in html
    assert html.count("data:image/png;base64,") >= 2  # the experiment's figure and the gallery
    assert (tmp_path / "tiny" / "clipping" / "result.json").exists()


def test_run_report_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="size must be one of 'tiny', 'quick', 'full', got 'huge'"):
        run_report("huge", tmp_path)
    with pytest.raises(ValueError, match="threads must be a positive int or None, got 0"):
        run_report("tiny", tmp_path, threads=0)


def test_killed_report_process_continues_where_it_stopped(tmp_path):
    """SIGKILL a real report process after its first experiment finished; the rerun reuses that result.

    The process is killed once the partial report shows the first experiment (the report is
    rewritten after each experiment's ``result.json``, so waiting for the result alone would race
    the HTML): the test waits for the state it asserts, however slow the machine.
    """
    import json
    import signal
    import subprocess
    import sys
    import time

    code = (
        "from ravine.report import run_report; "
        f"run_report('tiny', {str(tmp_path)!r}, experiments=['adam-ablation', 'clipping'], "
        "progress=False, gallery=False)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    first = tmp_path / "tiny" / "adam-ablation" / "result.json"
    partial = report_path(tmp_path, "tiny")

    def shows_first() -> bool:  # the report is replaced atomically: a read sees a whole file
        return partial.exists() and 'id="exp-adam-ablation"' in partial.read_text()

    deadline = time.monotonic() + 600  # a guard against a hung process, not a timing assumption
    while not shows_first() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert shows_first(), f"the partial report never showed the first experiment (exit code {proc.returncode})"
    assert first.exists()
    finished = json.loads(first.read_text())["finished_at"]
    outcome = run_report("tiny", tmp_path, experiments=["adam-ablation", "clipping"], progress=False, gallery=False)
    assert [r.name for r in outcome.results] == ["adam-ablation", "clipping"]
    assert outcome.results[0].finished_at == finished  # reused, not rerun
    assert 'id="exp-clipping"' in outcome.path.read_text()
