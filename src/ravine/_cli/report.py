"""``ravine report [--quick | --full] [--out DIR]``: run every claim experiment and write the HTML report."""

from __future__ import annotations

import argparse

from ravine._cli import THREADS, add_executor_options, check_outputs, executor_from, integer
from ravine._validation import Options, check


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="run every claim experiment (reusing finished runs) and write a self-contained HTML report",
        description="Run the chapter's claims as experiments and write one HTML file with the verdicts, "
        "figures, a 2D gallery and the machine it ran on. Interrupt it at any time: running it again "
        "continues where it stopped.",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_true",
        help="small runs (default): minutes on a CPU",
    )
    size.add_argument("--full", action="store_true", help="the full experiments (as long as the claims need)")
    p.add_argument("--out", default="report", help="output folder (default: report)")
    p.add_argument("--only", default=None, help="comma-separated experiment names to include (default: all of them)")
    p.add_argument("--rerun", action="store_true", help="recompute verdicts even where a saved result exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-gallery", action="store_true", help="leave out the 2D gallery")
    p.add_argument(
        "--threads",
        type=integer("--threads", THREADS),
        default=1,
        help="torch threads while training (default 1: fastest for tiny models)",
    )
    add_executor_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ravine._io import check_output_path
    from ravine.experiments import claims
    from ravine.report import report_path, run_report
    from ravine.report.html import INCOMPLETE

    check_outputs(args, folders=("out",))
    size = "full" if args.full else "quick"
    check_output_path("--out", report_path(args.out, size))
    only = None
    if args.only is not None:
        only = [s.strip() for s in args.only.split(",") if s.strip()]
        if not only:
            raise ValueError(f"--only names no experiment, got {args.only!r}; valid names: {', '.join(claims.names())}")
        for name in only:
            check("--only", name, Options(claims.names()))
    with executor_from(args) as ex:
        outcome = run_report(
            size=size,
            out=args.out,
            experiments=only,
            progress=not args.no_progress,
            reuse=not args.rerun,
            threads=args.threads,
            gallery=not args.no_gallery,
            executor=ex,
        )
    for r in outcome.results:
        print(f"  {r.name:14s} {r.verdict.status:14s} {r.runtime_s:7.1f} s")
    for name, message in outcome.errors.items():
        kind = "incomplete" if message.startswith(INCOMPLETE) else "error"
        print(f"  {name:14s} {kind} (see the report)")
    print(f"report: {outcome.path.resolve()}")
    return 1 if outcome.errors else 0
