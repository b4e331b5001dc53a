"""``ravine serve``: run the playground (FastAPI under uvicorn), bound to loopback by default."""

from __future__ import annotations

import argparse
import threading
import webbrowser

from ravine._cli import integer
from ravine._validation import Interval

_PORT = Interval(int, 1, 65535)
_CONCURRENCY = Interval(int, 1, None, closed="left")


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
        "--concurrency",
        type=integer("--concurrency", _CONCURRENCY),
        default=None,
        help="requests that may compute at once (default 1: the work holds the GIL, so more only contend)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve the playground until interrupted (exit status 0)."""
    import uvicorn

    from ravine.web import create_app

    app = create_app(max_concurrency=args.concurrency, torch_threads=1)
    host = "127.0.0.1" if args.host in ("localhost", "") else args.host
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{args.port}/"
    if host not in ("127.0.0.1", "::1"):
        print(f"ravine serve: warning: listening on {host}, reachable from other machines")
    print(f"Ravine playground at {url}  (API docs: {url}docs; Ctrl+C to stop)", flush=True)
    if args.open:
        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    uvicorn.run(app, host=host, port=args.port, log_level="warning")
    return 0
