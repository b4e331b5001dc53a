"""The ``ravine`` command.

Each subcommand lives in its own module under ``ravine._cli`` and exposes
``register(subparsers)``; the module's handler is set with ``set_defaults(func=...)``.
Handlers return an exit code. Bad arguments exit with status 2 and a message that
names the argument and what is allowed (argparse's convention).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ravine import __version__

# Subcommand modules, in the order --help lists them.
_COMMANDS = [
    "version",
    "schedule",
    "trajectories",
    "sweep",
    "serve",
    "landscape",
    "experiment",
    "report",
]


def build_parser() -> argparse.ArgumentParser:
    """The ``ravine`` argument parser, with every subcommand of ``ravine._cli`` registered."""
    parser = argparse.ArgumentParser(
        prog="ravine",
        description="Ravine: a lab for how neural networks are optimized.",
    )
    parser.add_argument("--version", action="version", version=f"ravine {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f"ravine._cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``ravine`` with ``argv`` (default: ``sys.argv[1:]``) and return its exit status.

    0 on success (and for ``ravine`` alone, which prints the help), 2 for a bad argument (a
    ``ValueError``, ``TypeError`` or ``FileNotFoundError`` from the handler, printed as
    ``ravine COMMAND: error: ...``), 130 when interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"ravine {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ravine {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
