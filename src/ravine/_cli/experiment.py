"""``ravine experiment NAME [--quick] [--out DIR]``: run one of the chapter's claims as an experiment."""

from __future__ import annotations

import argparse

from ravine._cli import THREADS, add_executor_options, check_outputs, executor_from, integer


def register(sub) -> None:
    p = sub.add_parser(
        "experiment",
        help="run one of the chapter's claims as an experiment and print its verdict",
        description="Run one claim experiment (training runs are saved and reused), draw its figures and "
        "print the verdict computed from the measurements. `ravine experiment --list` lists them.",
    )
    p.add_argument("name", nargs="?", help="experiment name (see --list)")
    p.add_argument("--list", action="store_true", help="list the experiments and their claims")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small runs (seconds to a minute or two)")
    size.add_argument("--full", action="store_true", help="the full experiment (default)")
    p.add_argument("--out", default="report", help="root folder for runs, figures and results (default: report)")
    p.add_argument("--rerun", action="store_true", help="recompute the verdict even if a saved result exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--threads",
        type=integer("--threads", THREADS),
        default=1,
        help="torch threads while training (default 1: fastest for tiny models)",
    )
    add_executor_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ravine.experiments import claims

    if args.list:
        for exp in claims.all_experiments():
            print(f"{exp.name:14s} {exp.title}")
            print(f"{'':14s}   {exp.claim}")
        return 0
    if not args.name:
        raise ValueError(f"give an experiment NAME or --list; valid names: {', '.join(claims.names())}")
    exp = claims.get(args.name)  # ValueError with the valid names
    check_outputs(args, folders=("out",))
    import torch

    torch.set_num_threads(args.threads)
    size = "quick" if args.quick else "full"
    with executor_from(args) as ex:
        store = claims.Store(Path(args.out) / size, size, ex)
        try:
            result = exp.run(store, claims.Progress(enabled=not args.no_progress), reuse=not args.rerun)
        except claims.IncompleteExperiment as exc:  # no verdict from partial data; the good runs are kept
            print(f"{args.name}: incomplete: {exc}")
            return 1
    print(f"{result.name}: {result.verdict.status}  ({result.runtime_s:.1f} s, {len(result.runs)} runs)")
    print(f"claim: {result.claim}")
    for c in result.verdict.checks:
        print(f"  [{c.status}] {c.name} = {c.value:.4g}  (threshold {c.threshold})  {c.note}")
    print(result.verdict.explanation)
    for f in result.figures:
        print(f"figure: {f}")
    print(f"result: {store.result_path(result.name)}")
    return 0
