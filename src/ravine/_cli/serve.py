"""``ravine serve``: run the playground (FastAPI under uvicorn), bound to loopback by default."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import webbrowser

from ravine._cli import integer
from ravine._validation import Interval, check

_PORT = Interval(int, 1, 65535)
_WORKERS = Interval(int, 0, 64)
_BIG = Interval(int, 1, 64)
_CACHE_MB = Interval(float, 0, 1 << 16)
#: Addresses that mean every interface: the server then also answers to any IP address.
_WILDCARD = ("0.0.0.0", "::")


def _megabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--cache-mb must be a number of megabytes, got {text!r}") from None
    try:
        return check("--cache-mb", value, _CACHE_MB)
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``serve`` subcommand to the ``ravine`` parser's subparsers ``sub``."""
    p = sub.add_parser(
        "serve",
        help="run the interactive playground (optimizers walking 2D surfaces) in your browser",
        description="Serve the playground page and its JSON API. Everything (HTML, JS, CSS, plotly.js) comes "
        "from the installed package; no network is needed. API docs at /docs.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=integer("--port", _PORT), default=8000, help="TCP port, 1..65535 (default 8000)")
    p.add_argument("--open", action="store_true", help="open the page in the default web browser")
    p.add_argument(
        "--workers",
        type=integer("--workers", _WORKERS),
        default=min(os.cpu_count() or 1, 4),
        help="worker processes that compute small requests (default: the cores, at most 4), plus "
        "--big-concurrency more for big ones; 0 computes in threads of the server process",
    )
    p.add_argument(
        "--big-concurrency",
        type=integer("--big-concurrency", _BIG),
        default=1,
        help="big requests (beyond the small-work bounds of GET /api/limits) computed at once (default 1); "
        "small requests never wait behind them",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer to this Host name (repeatable; '*' for any). By default the server answers only to "
        "the bound address and localhost, which protects it from DNS rebinding",
    )
    p.add_argument(
        "--cache-mb",
        type=_megabytes,
        default=64.0,
        help="megabytes of each cache: encoded responses, and runs (per worker process); default 64, 0 for none",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="step trajectories with compiled programs (ravine.simulate.run(compile=...)): several times less CPU "
        "per request, for a class. Each structure (surface, optimizers, clipping, schedule, noise) compiles once "
        "per worker process, one compilation at a time in a worker that serves nothing else meanwhile (10-90 s of "
        "a core); until then its requests are stepped eagerly. Needs --workers >= 2",
    )
    p.set_defaults(func=run)


def allowed_hosts(host: str, extra: list[str]) -> tuple[list[str], bool]:
    """The Host names a server bound to ``host`` answers to, and whether it answers to any IP address.

    Args:
        host: the bound address.
        extra: the ``--allowed-host`` names.

    Returns:
        ``(names, any_ip)``: the bound address, ``localhost`` and the loopback addresses, ``extra``, and for
        an every-interface address (``0.0.0.0``, ``::``) this machine's name and ``any_ip=True``.
    """
    names = [host, "localhost", "127.0.0.1", "::1", *extra]
    wildcard = host in _WILDCARD
    if wildcard:
        names.append(socket.gethostname())
    return list(dict.fromkeys(names)), wildcard


def run(args: argparse.Namespace) -> int:
    """Serve the playground until interrupted (exit status 0)."""
    import uvicorn

    from ravine.web import create_app

    if args.compile and args.workers < 2:
        print(f"ravine serve: --compile needs --workers >= 2 (a worker process compiles a new structure while the "
              f"others serve), got --workers {args.workers}", file=sys.stderr)
        return 2
    host = "127.0.0.1" if args.host in ("localhost", "") else args.host
    names, any_ip = allowed_hosts(host, args.allowed_host)
    app = create_app(
        workers=args.workers,
        big_concurrency=args.big_concurrency,
        torch_threads=1,
        cache_mb=args.cache_mb,
        run_cache_mb=args.cache_mb,
        allowed_hosts=names,
        allow_ip_hosts=any_ip,
        compile=args.compile,
    )
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{args.port}/"
    if host not in ("127.0.0.1", "::1"):
        shown_names = ", ".join(names) + (", any IP address" if any_ip else "")
        print(f"ravine serve: warning: listening on {host}, reachable from other machines; answering to the "
              f"Host names {shown_names} (--allowed-host adds one)")
    where = f"{args.workers} worker processes" if args.workers else "threads of this process"
    where += ", compiled programs" if args.compile else ""
    print(f"Ravine playground at {url}  (API docs: {url}docs; computing in {where}; Ctrl+C to stop)", flush=True)
    if args.open:
        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    uvicorn.run(app, host=host, port=args.port, log_level="warning")
    return 0
