"""``ravine.report``: run the chapter's claims as experiments and write one self-contained HTML report.

:func:`run_report` runs every registered experiment (:mod:`ravine.experiments.claims`) at one size
(``"quick"``: the small settings; ``"full"``: the settings the claims are stated at), reusing
everything already finished: an experiment whose ``result.json`` exists is loaded, not rerun, and inside
an unfinished experiment the harness resumes its training runs from their checkpoints. After each
experiment the HTML file is rewritten atomically, so an interrupted report is a valid, partial report,
and running the command again continues where it stopped.

The page (:func:`ravine.report.html.render`) embeds every figure as a base64 PNG and its CSS inline;
it needs no network. It holds the claims table (claim, verdict, key numbers and thresholds), a
section per experiment with its figures and reading, a gallery of 2D trajectories and sweeps from
:mod:`ravine.simulate`, and the machine and versions it ran on.
"""

from __future__ import annotations

import os
import platform
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ravine._validation import Options, check
from ravine.experiments.claims._core import SIZES, IncompleteExperiment, Progress, Result, Store
from ravine.parallel import Executor
from ravine.report.html import INCOMPLETE, GalleryItem, render, write_atomic

__all__ = ["ReportOutcome", "GalleryItem", "run_report", "machine_info", "render", "report_path"]


@dataclass
class ReportOutcome:
    """What :func:`run_report` did: the HTML path, the results, and experiments that raised."""

    path: Path
    results: list[Result]
    errors: dict[str, str] = field(default_factory=dict)
    runtime_s: float = 0.0


def report_path(out: str | os.PathLike, size: str) -> Path:
    """Where the report of ``size`` is written under ``out``: ``out/ravine-report-<size>.html``."""
    return Path(out) / f"ravine-report-{size}.html"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(results: Sequence[Result] = (), runtime_s: float | None = None) -> dict[str, Any]:
    """Python, torch, numpy, matplotlib versions, CPU, cores, threads, OS, date, and the run ids used."""
    import matplotlib
    import numpy
    import torch

    from ravine import __version__

    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "ravine": __version__,
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "matplotlib": matplotlib.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu cores (os.cpu_count)": os.cpu_count(),
        "torch threads": torch.get_num_threads(),
        "accelerator": "cuda: " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU)",
    }
    if runtime_s is not None:
        info["report runtime (this invocation)"] = f"{runtime_s:.1f} s"
    if results:
        info["experiment runtimes (as measured when each finished)"] = ", ".join(
            f"{r.name} {r.runtime_s:.1f} s" for r in results
        )
        info["run ids"] = "; ".join(f"{r.name}: {', '.join(r.runs)}" for r in results)
    return info


def _gallery(out: Path, size: str, progress: Progress, draw: bool = True) -> tuple[list[GalleryItem], str]:
    from ravine.report.gallery import build_gallery

    return build_gallery(out / "gallery", size, progress, draw=draw)


def run_report(
    size: str = "quick",
    out: str | os.PathLike = "report",
    *,
    experiments: Sequence[str] | None = None,
    progress: bool = True,
    reuse: bool = True,
    threads: int | None = 1,
    gallery: bool = True,
    executor: Executor | None = None,
) -> ReportOutcome:
    """Run the experiments of ``size`` into ``out/<size>/`` and write ``out/ravine-report-<size>.html``.

    ``experiments`` restricts which experiments run (default: all, in registry order); the others still
    appear with their saved results, or as "not run yet". ``reuse=False``
    recomputes every verdict (the harness still reuses completed training runs). An experiment that
    raises is recorded with its traceback in the report and the others still run; KeyboardInterrupt
    stops the report after writing what is finished.

    ``gallery=False`` draws no 2D gallery figures (those already drawn are still shown). ``threads``
    sets ``torch.set_num_threads`` while the report runs (restored afterwards; ``None`` leaves it
    alone). One thread is the fastest for these tiny models: intra-op parallelism costs more in
    synchronization than it gains, and it leaves the other core to the rest of the machine.

    ``executor`` (:mod:`ravine.parallel`; default in-process) trains the experiments' runs: on a
    process pool or a Ray cluster the runs, their ids and the verdicts are the same. An experiment
    some of whose runs failed is marked incomplete (no verdict) and names them; the runs that
    finished are kept, so running the report again retries only the failed ones.
    """
    import torch

    old_threads = torch.get_num_threads()
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        torch.set_num_threads(threads)
    try:
        return _run_report(size, out, experiments, progress, reuse, gallery, executor)
    finally:
        torch.set_num_threads(old_threads)


def _run_report(
    size: str,
    out: str | os.PathLike,
    experiments: Sequence[str] | None,
    progress: bool,
    reuse: bool,
    with_gallery: bool,
    executor: Executor | None,
) -> ReportOutcome:
    from ravine.experiments import claims

    check("size", size, Options(SIZES))
    everything = claims.all_experiments()
    exps = [claims.get(n) for n in experiments] if experiments else everything
    out = Path(out)
    store = Store(out / size, size, executor)
    chosen = {e.name for e in exps}
    # Experiments not chosen this time still appear with their saved results (if any).
    saved = {e.name: store.load_result(e.name) for e in everything if e.name not in chosen}
    path = report_path(out, size)
    prog = Progress(enabled=progress)
    results: list[Result] = []
    errors: dict[str, str] = {}
    t0 = time.perf_counter()
    gallery: list[GalleryItem] = []
    gallery_note = "The 2D gallery is drawn after the experiments."

    def write() -> None:
        now = {r.name: r for r in results}
        shown = [now.get(e.name) or saved.get(e.name) for e in everything]
        shown = [r for r in shown if r is not None] + [r for r in results if r.name not in {e.name for e in everything}]
        pending = [
            e.name
            for e in everything + exps
            if e.name not in now and e.name not in errors and saved.get(e.name) is None
        ]
        pending = list(dict.fromkeys(pending))
        machine = machine_info(shown, time.perf_counter() - t0)
        machine["runs and results stored under"] = str(store.root.resolve())
        html = render(
            shown,
            size=size,
            machine=machine,
            gallery=gallery,
            gallery_note=gallery_note,
            errors=errors,
            pending=pending,
            parts={n: title for title, members in claims.PARTS.items() for n in members},
        )
        write_atomic(path, html)

    try:
        from tqdm.auto import tqdm

        outer = tqdm(exps, desc=f"ravine report ({size})", disable=not progress, position=0, dynamic_ncols=True)
        for exp in outer:
            outer.set_postfix_str(exp.name)
            try:
                res = exp.run(store, Progress(enabled=progress, position=1), reuse=reuse)
            except IncompleteExperiment as e:  # failed runs: no verdict from partial data
                errors[exp.name] = f"{INCOMPLETE}{e}"
                prog.write(f"{exp.name}: {errors[exp.name]}")
            except Exception:  # one broken experiment must not lose the others
                errors[exp.name] = traceback.format_exc()
                prog.write(f"{exp.name}: error\n{errors[exp.name]}")
            else:
                results.append(res)
                prog.write(f"{exp.name}: {res.verdict.status} ({res.runtime_s:.1f} s)")
            write()
        outer.close()
        try:
            gallery, gallery_note = _gallery(out, size, prog, draw=with_gallery)
        except Exception:
            gallery, gallery_note = [], "The 2D gallery failed:\n" + traceback.format_exc(limit=3)
        write()
    except KeyboardInterrupt:
        write()
        raise
    return ReportOutcome(path, results, errors, time.perf_counter() - t0)
