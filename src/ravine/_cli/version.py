"""``ravine version``: the package and its main dependencies."""

from __future__ import annotations

import platform


def register(sub) -> None:
    p = sub.add_parser("version", help="print ravine's version and the versions it runs on")
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy
    import torch

    from ravine import __version__

    print(f"ravine {__version__}")
    print(f"torch {torch.__version__}, numpy {numpy.__version__}, python {platform.python_version()}")
    return 0
