"""Subcommands of the ``ravine`` command, one module each (see ``ravine.cli``), and what they share.

Shared here: :func:`integer`, the argparse ``type`` that reads an integer flag through
``ravine._validation``; :data:`SEED` (``ravine.simulate``'s range of seeds) and :data:`THREADS`, the
torch threads a command may ask for;
:func:`check_outputs`, which runs ``ravine._io.check_output_path`` on a command's output arguments
before any work; and :func:`add_executor_options` / :func:`executor_from`, the ``--workers N`` and
``--cluster local|ADDRESS`` options of the commands whose work splits into independent tasks
(:mod:`ravine.parallel`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ravine._io import check_output_path
from ravine._validation import Interval, check
from ravine.simulate import _SEED as SEED  # the one range of seeds: a signed 64-bit integer, as torch takes

__all__ = ["SEED", "THREADS", "WORKERS", "add_executor_options", "check_outputs", "executor_from", "integer"]

#: ``--threads`` of the commands that train: at least one, at most more than any machine here has cores.
THREADS = Interval(int, 1, 1024)
#: ``--workers``: local worker processes (or the CPUs of a local Ray instance).
WORKERS = Interval(int, 1, 1024)


def add_executor_options(p: argparse.ArgumentParser) -> None:
    """Add ``--workers N`` and ``--cluster local|ADDRESS`` to a subcommand (see :func:`executor_from`)."""
    p.add_argument(
        "--workers",
        type=integer("--workers", WORKERS),
        default=None,
        help="run independent pieces of work on N local worker processes (default: one after another here)",
    )
    p.add_argument(
        "--cluster",
        default=None,
        metavar="local|ADDRESS",
        help="run them on Ray: 'local' starts a local Ray instance (with --workers CPUs), ADDRESS joins a "
        "running cluster (host:6379 or ray://host:10001); needs pip install 'ravine[cluster]'",
    )


def executor_from(args: argparse.Namespace) -> Any:
    """The :class:`ravine.parallel.Executor` that ``--workers``/``--cluster`` ask for (close it when done).

    Raises:
        ValueError: ``--cluster`` without Ray installed (the message says how to install it).
    """
    from ravine.parallel import executor

    try:
        return executor(args.workers, args.cluster)
    except ImportError as exc:  # an option this installation cannot serve: one line, not a traceback
        raise ValueError(str(exc)) from None


def integer(flag: str, interval: Interval) -> Callable[[str], int]:
    """An argparse ``type`` that reads an integer ``flag`` in ``interval`` (ravine._validation's message).

    Args:
        flag: the option as the user writes it (``"--seed"``); it starts the message.
        interval: the allowed integers.

    Returns:
        A function ``text -> int`` raising ``argparse.ArgumentTypeError`` for anything else, so argparse
        exits with status 2 naming the flag (a huge ``--seed`` says its range instead of overflowing).
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be {interval.describe()}, got {text!r}") from None
        try:
            return check(flag, value, interval)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def check_outputs(args: argparse.Namespace, files: tuple[str, ...] = (), folders: tuple[str, ...] = ()) -> None:
    """Check the output arguments of ``args`` that are set, before the command does any work.

    Args:
        args: the parsed arguments.
        files: attribute names holding file paths (``"out"`` for ``--out``; ``"save_json"`` is ``--save-json``).
        folders: attribute names holding folders to write into.

    Raises:
        ValueError: from ``ravine._io.check_output_path``, naming the flag and the path.
    """
    for names, folder in ((files, False), (folders, True)):
        for attr in names:
            value: Any = getattr(args, attr, None)
            if value is not None:
                check_output_path("--" + attr.replace("_", "-"), value, folder=folder)
