"""Render experiment results into one self-contained HTML file.

Everything the page needs is inside the file: CSS in a ``<style>`` element, figures as base64 PNG
``data:`` URIs. It opens from disk with no network. Text from results is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ravine import _io
from ravine.experiments.claims._core import STATUSES, Result

#: A verdict's status -> the CSS class of its badge.
BADGE_CLASS = {"supported": "ok", "not supported": "bad", "inconclusive": "meh", "error": "err", "incomplete": "err"}

#: The page's whole stylesheet, inlined in a ``<style>`` element.
CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1180px;margin:2em auto;
padding:0 1.2em;color:#1d232a;line-height:1.45}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #e3e6ea;padding-bottom:.2em;margin-top:2.2em}
.sub{color:#5b6570;margin-top:0}
table{border-collapse:collapse;width:100%;margin:.6em 0 1em;font-size:.92em}
th,td{border:1px solid #dde1e5;padding:.35em .55em;vertical-align:top;text-align:left}
th{background:#f3f5f7}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.badge{display:inline-block;padding:.12em .55em;border-radius:.8em;font-weight:600;font-size:.85em;
white-space:nowrap;color:#fff}
.ok{background:#2e8b57}.bad{background:#c0392b}.meh{background:#b7950b}.err{background:#6c3483}
blockquote{margin:.6em 0;padding:.4em .9em;border-left:4px solid #9aa5b1;background:#f7f8fa;color:#333}
figure{margin:1em 0;text-align:center}figure img{max-width:100%;height:auto;border:1px solid #eceff1}
figcaption{color:#5b6570;font-size:.88em}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(540px,1fr));gap:1em}
.gallery figure{margin:0}
details{margin:.5em 0}summary{cursor:pointer;color:#35495e}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.88em}
pre{background:#f6f8fa;padding:.6em;overflow-x:auto;white-space:pre-wrap}
.checks td:first-child{white-space:nowrap}.small{font-size:.85em;color:#5b6570}
nav a{margin-right:.8em}
h2.part{font-size:1.7em;border-bottom:4px solid #1d232a;margin-top:2.6em}
tr.part th{text-align:left;background:#eef1f4;font-size:1.05em;padding:.45em .5em}tr.part a{color:inherit}
"""


@dataclass
class GalleryItem:
    """One figure of the 2D-world gallery: a PNG and its caption."""

    title: str
    path: str
    caption: str = ""


def esc(x: Any) -> str:
    """``str(x)`` with ``&``, ``<``, ``>`` and both quotes HTML-escaped."""
    return html.escape(str(x), quote=True)


def fmt(x: Any) -> str:
    """A number for a table: 4 significant digits, ``nan`` for missing values."""
    if x is None:
        return "nan"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    try:
        v = float(x)
    except (TypeError, ValueError):
        return esc(x)
    if not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return f"{v:.4g}"


def badge(status: str) -> str:
    """A verdict's status as a coloured ``<span>`` badge."""
    return f'<span class="badge {BADGE_CLASS.get(status, "meh")}">{esc(status)}</span>'


def img_tag(path: str | os.PathLike, alt: str) -> str:
    """An ``<img>`` with the PNG embedded as a base64 data URI."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def _anchor(name: str) -> str:
    return "exp-" + "".join(ch if ch.isalnum() else "-" for ch in name)


#: A verdict with more checks than this lists only those not supported, with counts (its section has all).
MAX_LISTED_CHECKS = 8


def _key_numbers(r: Result) -> str:
    checks = r.verdict.checks
    shown = checks if len(checks) <= MAX_LISTED_CHECKS else [c for c in checks if c.status != "supported"]
    nums = "<br>".join(
        f"{esc(c.name)} = <b>{fmt(c.value)}</b> <span class='small'>({esc(c.threshold)})</span>" for c in shown
    )
    if len(shown) < len(checks):
        counts = ", ".join(f"{n} {s}" for s in STATUSES if (n := sum(c.status == s for c in checks)))
        head = f"<span class='small'>{len(checks)} checks: {esc(counts)}"
        nums = head + (" (those not supported below; all in the section)</span><br>" + nums if nums else "</span>")
    return nums


def _part_row(title: str, columns: int) -> str:
    return f"<tr class='part'><th colspan='{columns}'><a href='#{_anchor('part-' + title)}'>{esc(title)}</a></th></tr>"


def _claims_table(
    results: Sequence[Result], errors: dict[str, str], pending: Sequence[str], parts: dict[str, str] | None = None
) -> str:
    rows = []
    current = None
    for i, r in enumerate(results, 1):
        if parts and parts.get(r.name, current) != current:
            current = parts[r.name]
            rows.append(_part_row(current, 6))
        nums = _key_numbers(r)
        rows.append(
            f"<tr><td>{i}</td><td><a href='#{_anchor(r.name)}'>{esc(r.name)}</a></td>"
            f"<td>{esc(r.claim)}</td><td>{badge(r.verdict.status)}{_scale(r)}</td><td>{nums}</td>"
            f"<td class='num'>{_runtime(r)}</td></tr>"
        )
    n = len(results)
    for j, (name, msg) in enumerate(errors.items(), n + 1):
        first = esc(msg.removeprefix(INCOMPLETE).strip().splitlines()[-1] if msg.strip() else "error")
        rows.append(
            f"<tr><td>{j}</td><td><a href='#{_anchor(name)}'>{esc(name)}</a></td><td></td>"
            f"<td>{badge(_error_kind(msg))}</td><td>{first}</td><td></td></tr>"
        )
    for k, name in enumerate(pending, n + len(errors) + 1):
        rows.append(f"<tr><td>{k}</td><td>{esc(name)}</td><td></td><td>not run yet</td><td></td><td></td></tr>")
    return (
        "<table class='claims'><tr><th>#</th><th>experiment</th><th>claim</th><th>verdict</th>"
        "<th>key numbers (threshold)</th><th>runtime (wall; CPU, training of its runs)</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _scale(r: Result) -> str:
    """Where the verdict holds (``Verdict.scale``), under its badge; nothing for a single setting."""
    return f"<br><span class='small'>{esc(r.verdict.scale)}</span>" if r.verdict.scale else ""


def _scale_sentence(r: Result) -> str:
    return f" <b>Where it holds:</b> {esc(r.verdict.scale)}" if r.verdict.scale else ""


def _runtime(r: Result) -> str:
    """``wall s`` of the invocation that produced the result, with its CPU seconds and the training
    seconds of its runs (which stay meaningful when runs were reused from an earlier invocation)."""
    parts = [f"{r.runtime_s:.1f} s"]
    cpu, train = r.extra.get("cpu_s"), r.extra.get("training_s")
    if cpu is not None:
        parts.append(f"CPU {float(cpu):.1f} s")
    if train is not None:
        parts.append(f"training {float(train):.1f} s")
    return "<br><span class='small'>".join(parts[:1] + [", ".join(parts[1:])]) + ("</span>" if len(parts) > 1 else "")


def _runtime_text(r: Result) -> str:
    cpu, train = r.extra.get("cpu_s"), r.extra.get("training_s")
    text = f"{r.runtime_s:.1f} s wall"
    if cpu is not None:
        text += f", CPU {float(cpu):.1f} s"
    if train is not None:
        text += f", training {float(train):.1f} s"
    return esc(text)


def _measurement_rows(m: dict[str, Any]) -> str:
    rows = []
    for k, v in m.items():
        if isinstance(v, dict | list):
            continue  # series and nested tables are in the figures
        rows.append(f"<tr><td>{esc(k)}</td><td class='num'>{fmt(v)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>" if rows else ""


def _experiment_section(r: Result) -> str:
    checks = "".join(
        f"<tr><td>{esc(c.name)}</td><td class='num'>{fmt(c.value)}</td><td>{esc(c.threshold)}</td>"
        f"<td>{badge(c.status)}</td><td>{esc(c.note)}</td></tr>"
        for c in r.verdict.checks
    )
    figs = "".join(
        f"<figure>{img_tag(f, Path(f).stem)}<figcaption>{esc(Path(f).stem.replace('_', ' '))}</figcaption></figure>"
        for f in r.figures
        if Path(f).exists()
    )
    runs = ", ".join(f"<code>{esc(x)}</code>" for x in r.runs)
    scalars = _measurement_rows(r.measurements)
    return f"""
<section id="{_anchor(r.name)}">
<h2>{esc(r.title)} <span class="small">(<code>ravine experiment {esc(r.name)}</code>)</span></h2>
<blockquote>{esc(r.claim)}</blockquote>
<p>Verdict: {badge(r.verdict.status)} {esc(r.verdict.explanation)}{_scale_sentence(r)}</p>
<table class="checks"><tr><th>check</th><th>measured</th><th>threshold</th><th>status</th><th>what</th></tr>
{checks}</table>
{figs}
<p><b>Reading.</b> {esc(r.reading)}</p>
<details><summary>All scalar measurements</summary>{scalars}</details>
<details><summary>Runs ({len(r.runs)}), size {esc(r.size)}, {_runtime_text(r)}, finished {esc(r.finished_at)}
</summary><p class="small">{runs}</p></details>
</section>"""


#: An ``errors`` message that starts with this marks an experiment whose training runs failed.
INCOMPLETE = "incomplete: "


def _error_kind(message: str) -> str:
    return "incomplete" if message.startswith(INCOMPLETE) else "error"


def _error_section(name: str, message: str) -> str:
    kind = _error_kind(message)
    what = (
        "Some of its training runs failed, so it has no verdict (not one computed from partial data)."
        if kind == "incomplete"
        else "The experiment raised an error; no verdict."
    )
    return (
        f'<section id="{_anchor(name)}"><h2>{esc(name)} {badge(kind)}</h2>'
        f"<p>{what}</p><pre>{esc(message.removeprefix(INCOMPLETE))}</pre></section>"
    )


def _gallery(items: Sequence[GalleryItem] | None, note: str) -> str:
    if not items:
        return f'<section id="gallery"><h2>2D gallery</h2><p>{esc(note)}</p></section>'
    figs = "".join(
        f"<figure>{img_tag(it.path, it.title)}<figcaption><b>{esc(it.title)}</b>. {esc(it.caption)}"
        f"</figcaption></figure>"
        for it in items
        if Path(it.path).exists()
    )
    return (
        f'<section id="gallery"><h2>2D gallery: trajectories and sweeps</h2><p>{esc(note)}</p>'
        f'<div class="gallery">{figs}</div></section>'
    )


def _machine(info: dict[str, Any]) -> str:
    def cell(k: str, v: Any) -> str:
        if k == "run ids":  # long: folded
            return f"<details><summary>show all</summary><span class='small'>{esc(v)}</span></details>"
        return esc(v)

    rows = "".join(f"<tr><td>{esc(k)}</td><td>{cell(k, v)}</td></tr>" for k, v in info.items())
    return f'<section id="machine"><h2>Machine and versions</h2><table>{rows}</table></section>'


def render(
    results: Sequence[Result],
    *,
    size: str,
    machine: dict[str, Any],
    gallery: Sequence[GalleryItem] | None = None,
    gallery_note: str = "",
    errors: dict[str, str] | None = None,
    pending: Sequence[str] = (),
    title: str = "Ravine: the chapter's claims, measured",
    parts: dict[str, str] | None = None,
) -> str:
    """The report as one HTML string (no external resources).

    ``parts`` maps experiment names to the part of the report they belong to (a heading before the
    first of each part, in the claims table and among the sections); ``None``: no parts.
    """
    errors = errors or {}
    counts = {s: sum(r.verdict.status == s for r in results) for s in BADGE_CLASS if s not in ("error", "incomplete")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    for kind in ("incomplete", "error"):
        n_kind = sum(_error_kind(m) == kind for m in errors.values())
        summary += f", {n_kind} {kind}" if n_kind else ""
    if pending:
        summary += f", {len(pending)} not run yet (interrupted? run the command again to continue)"
    total = sum(r.runtime_s for r in results)
    train = sum(float(r.extra.get("training_s", 0.0)) for r in results)
    nav = "".join(f"<a href='#{_anchor(r.name)}'>{esc(r.name)}</a>" for r in results)
    sections, current = "", None
    for r in results:
        if parts and parts.get(r.name, current) != current:
            current = parts[r.name]
            sections += f"<h2 class='part' id='{_anchor('part-' + current)}'>{esc(current)}</h2>"
        sections += _experiment_section(r)
    sections += "".join(_error_section(n, m) for n, m in errors.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} ({esc(size)})</title><style>{CSS}</style></head>
<body>
<h1>{esc(title)}</h1>
<p class="sub">Size <b>{esc(size)}</b>; {esc(summary)}. The invocations that produced these results took
{total:.0f} s of wall-clock in total; their training runs account for {train:.0f} s of training time (an
experiment whose runs were reused from an earlier invocation shows a short wall-clock but its full training
time). Generated {esc(machine.get("date", ""))}.
Each verdict is computed from the measurements below with the thresholds shown: <i>supported</i> when every
check passes, <i>not supported</i> when one fails, <i>inconclusive</i> when a check lands in its grey zone
or its data cannot decide. Quick runs are small; what they show for tiny models need not hold at scale,
and the reverse.</p>
<nav>{nav}<a href="#gallery">2D gallery</a><a href="#machine">machine</a></nav>
<h2>Claims</h2>
{_claims_table(results, errors, pending, parts)}
{sections}
{_gallery(gallery, gallery_note)}
{_machine(machine)}
</body></html>
"""


def write_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    return _io.write_text(path, text)
