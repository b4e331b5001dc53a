"""Latency and throughput of the playground server (``ravine serve``) on a real loopback socket.

Starts ``python -m ravine.cli serve`` in a subprocess on a free port, then measures the request the page
sends most: 6 optimizers (gd, momentum, nesterov, rmsprop, adam, adamw) x 500 steps on Rosenbrock.

(a) one client dragging a slider: sequential requests, each with a different Adam learning rate (as the
    page sends while the slider moves); p50/p95 latency. Target: p95 < 50 ms. Measured twice: as on the
    page (the other five runs are unchanged, so the server's run cache supplies them and one run is
    simulated per request), and with every run distinct (all six simulated: the full compute).
(b) many clients at once: ``--clients`` (50) clients x ``--per-client`` (20) requests, every request
    with distinct parameters (so the server's response cache never answers); errors, per-client
    completion (no client starved), throughput in requests/s and p50/p95 latency.

Latency is split into the server's compute (``elapsed_ms`` of the response: ``ravine.simulate.run``
plus conversion) and the rest (validation, JSON encoding, HTTP, queueing).

Usage::

    python benchmarks/serve.py                       # the full measurement (a) + (b) 50 x 20
    python benchmarks/serve.py --quick               # (a) 20 requests, (b) 50 x 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time

import httpx

OPTIMIZERS = ["gd", "momentum", "nesterov", "rmsprop", "adam", "adamw"]
BASE_LR = {"gd": 1e-3, "momentum": 1e-2, "nesterov": 1e-2, "rmsprop": 1e-2, "adam": 0.05, "adamw": 0.05}


def make_request(adam_lr: float, steps: int, jitter: float = 0.0) -> dict:
    """The page's request: 6 optimizers from one start; ``jitter`` makes every request distinct."""
    opts = []
    for name in OPTIMIZERS:
        lr = adam_lr if name == "adam" else BASE_LR[name] * (1.0 + jitter)
        opts.append({"name": name, "hyperparams": {"lr": lr}})
    return {
        "surface": {"name": "rosenbrock"},
        "start": [-1.5, 2.5 - jitter],
        "steps": steps,
        "optimizers": opts,
    }


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, concurrency: int | None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ravine.cli", "serve", "--port", str(port)]
    if concurrency:
        cmd += ["--concurrency", str(concurrency)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/limits", timeout=2).raise_for_status()
            return proc
        except httpx.TransportError:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read()}") from None
            if time.monotonic() > deadline:
                proc.terminate()
                raise RuntimeError("server did not start within 60 s") from None
            time.sleep(0.2)


def slider_drag(base: str, n: int, steps: int, cold: bool) -> dict:
    """``n`` sequential requests; the Adam lr moves from 0.01 to 0.1 as a dragged slider does.

    ``cold=False``: only Adam changes between requests, as on the page, so the server's run cache
    supplies the other five runs and one run is simulated per request. ``cold=True``: every run of
    every request is distinct (all six simulated), which measures the full compute.
    """
    lat, comp, sims, size = [], [], [], 0
    tag = 0.37 if cold else 0.11  # keeps the two passes' requests apart
    with httpx.Client(base_url=base, timeout=120) as c:
        for i in range(3):  # warm-up (imports, first allocation), not measured
            c.post("/api/trajectories", json=make_request(0.02 + 0.001 * i, steps, jitter=tag + 0.01 * i))
        for i in range(n):
            lr = 0.01 * 10 ** (i / max(1, n - 1))  # the slider moves from 0.01 to 0.1
            req = make_request(lr, steps, jitter=(tag + 1e-4 * (i + 1)) if cold else tag)
            t = time.perf_counter()
            r = c.post("/api/trajectories", json=req)
            lat.append((time.perf_counter() - t) * 1e3)
            r.raise_for_status()
            assert r.headers.get("x-ravine-cache") == "miss"
            body = r.json()
            comp.append(body["elapsed_ms"])
            sims.append(body["simulated_runs"])
            size = len(r.content)
    return {"lat": lat, "comp": comp, "sims": sims, "size": size}


def report_drag(title: str, s: dict) -> None:
    over = [x - y for x, y in zip(s["lat"], s["comp"])]
    p95 = pct(s["lat"], 95)
    print(
        f"\n{title}: {len(s['lat'])} sequential requests, response {s['size'] / 1024:.0f} KiB, "
        f"runs simulated per request: {statistics.mean(s['sims']):.1f} of {len(OPTIMIZERS)}"
    )
    print(
        f"    latency  p50 {pct(s['lat'], 50):7.1f} ms   p95 {p95:7.1f} ms   "
        f"(target p95 < 50 ms: {'met' if p95 < 50 else 'NOT met'})"
    )
    print(
        f"    compute  p50 {pct(s['comp'], 50):7.1f} ms   p95 {pct(s['comp'], 95):7.1f} ms   "
        "(server side: ravine.simulate.run + conversion)"
    )
    print(f"    rest     p50 {pct(over, 50):7.1f} ms   (validation, JSON encoding, HTTP)")


async def many_clients(base: str, clients: int, per_client: int, steps: int) -> dict:
    lat: list[float] = []
    comp: list[float] = []
    errors: list[str] = []
    done = [0] * clients
    finish = [0.0] * clients
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as c:
        t0 = time.perf_counter()

        async def client(k: int) -> None:
            for i in range(per_client):
                req = make_request(0.05, steps, jitter=(k * per_client + i + 1) * 1e-5)
                t = time.perf_counter()
                try:
                    r = await c.post("/api/trajectories", json=req)
                    r.raise_for_status()
                    if r.headers.get("x-ravine-cache") != "miss":
                        errors.append(f"client {k} request {i}: answered from the cache")
                    comp.append(r.json()["elapsed_ms"])
                    done[k] += 1
                except Exception as exc:  # noqa: BLE001 - every failure is reported
                    errors.append(f"client {k} request {i}: {type(exc).__name__}: {exc}")
                lat.append((time.perf_counter() - t) * 1e3)
            finish[k] = time.perf_counter() - t0

        await asyncio.gather(*(client(k) for k in range(clients)))
        wall = time.perf_counter() - t0
    return {"lat": lat, "comp": comp, "errors": errors, "done": done, "finish": finish, "wall": wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--requests", type=int, default=60, help="sequential slider-drag requests (a)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--per-client", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=None, help="server's --concurrency (default: the server's, 1)")
    ap.add_argument("--quick", action="store_true", help="(a) 20 requests, (b) 50 clients x 2 requests")
    a = ap.parse_args()
    if a.quick:
        a.requests, a.per_client = 20, 2

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    print(
        f"ravine serve on {base} ({os.cpu_count()} CPU cores); request: {len(OPTIMIZERS)} optimizers x "
        f"{a.steps} steps on rosenbrock"
    )
    proc = start_server(port, a.concurrency)
    try:
        report_drag(
            "(a) slider drag as on the page (one optimizer changes)", slider_drag(base, a.requests, a.steps, False)
        )
        report_drag("(a') slider drag, every run distinct (full compute)", slider_drag(base, a.requests, a.steps, True))

        b = asyncio.run(many_clients(base, a.clients, a.per_client, a.steps))
        total = a.clients * a.per_client
        ok = sum(b["done"])
        starved = [k for k, d in enumerate(b["done"]) if d < a.per_client]
        print(f"\n(b) {a.clients} concurrent clients x {a.per_client} requests (all distinct), {b['wall']:.1f} s wall")
        print(f"    completed {ok}/{total}, errors {len(b['errors'])}, starved clients {len(starved)}")
        for e in b["errors"][:5]:
            print(f"      {e}")
        print(f"    throughput {ok / b['wall']:7.2f} req/s")
        print(
            f"    latency  p50 {pct(b['lat'], 50):7.1f} ms   p95 {pct(b['lat'], 95):7.1f} ms   "
            f"max {max(b['lat']):7.1f} ms"
        )
        print(f"    compute  p50 {pct(b['comp'], 50):7.1f} ms   (per request, server side)")
        fin = [f for f in b["finish"] if f > 0]
        print(
            f"    clients finished between {min(fin):.1f} s and {max(fin):.1f} s "
            f"(median {statistics.median(fin):.1f} s)"
        )
        return 1 if (b["errors"] or starved) else 0
    finally:
        proc.terminate()
        proc.wait(timeout=20)


if __name__ == "__main__":
    sys.exit(main())
