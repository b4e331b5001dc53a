"""The ``ravine`` command.

Each subcommand lives in its own module under ``ravine._cli`` and exposes
``register(subparsers)``; the module's handler is set with ``set_defaults(func=...)``.
Handlers return an exit code. Bad arguments exit with status 2 and a message that
names the argument and what is allowed (argparse's convention).

Bad input never shows a traceback: :func:`main` turns the errors that input causes (``ValueError``,
``TypeError``, and ``OSError`` and its subclasses: a missing file, a folder where a file goes, no
permission) into one line and exit status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
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
    "lr_find",
    "diagnose",
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


def _join_dash_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``--domain -3,3,-3,3`` -> ``--domain=-3,3,-3,3``: a value may start with '-'.

    argparse reads a token that starts with '-' as an option (unless it is a plain negative number),
    so ``--start -1,1`` or ``--expr "-sqrt(x)"`` failed with "expected one argument". After an option
    of the chosen subcommand that takes exactly one value, a token that starts with '-' and is not
    one of that subcommand's options (nor ``--`` or a prefix of an option) is joined to it as its value.
    """
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    command = next((i for i, t in enumerate(argv) if subparsers and t in subparsers[0].choices), None)
    if command is None:
        return argv
    options = subparsers[0].choices[argv[command]]._option_string_actions
    out = argv[: command + 1]
    i = command + 1
    while i < len(argv):
        token = argv[i]
        action = options.get(token)
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if (
            action is not None
            and action.nargs is None
            and action.option_strings
            and nxt is not None
            and nxt.startswith("-")
            and nxt != "--"
            and not any(o.startswith(nxt.split("=")[0]) for o in options)
        ):
            out.append(f"{token}={nxt}")
            i += 2
            continue
        out.append(token)
        i += 1
    return out


def _one_line(exc: BaseException) -> str:
    """An input error as one line: an ``OSError`` as "reason: 'path'", anything else as its message."""
    if isinstance(exc, OSError) and exc.strerror:
        paths = [repr(str(f)) for f in (exc.filename, exc.filename2) if f is not None]
        return f"{exc.strerror}: {' -> '.join(paths)}" if paths else exc.strerror
    return str(exc)


def main(argv: list[str] | None = None) -> int:
    """Run ``ravine`` with ``argv`` (default: ``sys.argv[1:]``) and return its exit status.

    Args:
        argv: the arguments after ``ravine``.

    Returns:
        0 on success (and for ``ravine`` alone, ``--help`` and ``--version``); 2 for bad input:
        argparse's errors (returned, not raised as ``SystemExit``), and a ``ValueError``,
        ``TypeError`` or ``OSError`` from the handler, printed as the one line
        ``ravine COMMAND: error: ...`` with no traceback; 130 when interrupted; 1 when the reader
        of the output went away (a closed pipe, as in ``ravine sweep | head``).
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(_join_dash_values(parser, argv))
    except SystemExit as exc:  # argparse's error (status 2, usage and message printed), --help, --version
        return exc.code if isinstance(exc.code, int) else 2
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in Python's flush at exit
        return code
    except BrokenPipeError:
        # The reader closed the pipe: stop quietly, and keep Python from failing again on the final flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, TypeError, OSError) as exc:
        print(f"ravine {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ravine {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
