"""``ravine diagnose RUN [--json]``: what went wrong in a training run, with evidence and a suggested change."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    """Add the ``diagnose`` subcommand to ``sub``."""
    p = sub.add_parser(
        "diagnose",
        help="read a run directory's metrics and report what went wrong",
        description="Read a run directory (made by `ravine experiment` or ravine.experiments.train) and report "
        "loss spikes, divergence, gradient-norm explosions, clipping that acts on most steps or never, "
        "update-to-weight ratios far from ~1e-3, no progress, early instability without warmup and sharpness "
        "above 2/lr, each with the steps and values that show it and a change to try. Exit status 0 either way.",
    )
    p.add_argument("run", help="the run directory (it holds config.json and metrics.jsonl)")
    p.add_argument("--json", action="store_true", help="print the diagnosis as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the diagnosis of ``args.run`` (text, or JSON with ``--json``)."""
    import json

    from ravine.experiments import diagnose

    result = diagnose(args.run)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.to_text())
    return 0
