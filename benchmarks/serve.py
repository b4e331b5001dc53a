"""The playground server (``ravine serve``) under a class's load, on a real loopback socket.

Starts ``python -m ravine.cli serve`` in a subprocess on a free port (``--workers`` as given; several values run
one after another, each on a fresh server, so their figures come from the same run), then measures the request
the page sends most: 6 optimizers (gd, momentum, nesterov, rmsprop, adam, adamw) x 500 steps on Rosenbrock.

(a) one client dragging a slider: sequential requests, each with a different Adam learning rate (as the page
    sends while the slider moves; the other five runs are unchanged); p50/p95 latency. Target: p95 < 50 ms.
(b) a class: ``--clients`` (50) clients x ``--per-client`` (20) requests, every request distinct (the response
    cache never answers); errors, per-client completion (no client starved), requests/s, p50/p95 latency.
    Target: p95 < 1 s.
(c) a small request while a maximal one (16 optimizers of 12 kinds x 10000 steps) computes: the small request's
    latency minus its latency on an idle server (the delay the big one causes), measured only while the big one
    is still running (``GET /api/load``). Target: never more than 100 ms.
(d) four maximal requests whose clients disconnect at once: the delay of the next small requests, and how long
    the server takes to stop the abandoned work (``stopped_running`` at ``GET /api/load``).
(e) every client sends the same request at once (a class clicking the same preset): how many times it is
    computed (identical requests in flight share one computation) and the latency.
(f) with ``--compile``: small requests while a worker compiles a structure it has not seen (its latency against
    the idle server's: the compilation holds that worker, the others serve). Target: never more than 100 ms.

Each configuration is measured without and with ``--compile`` (``--engines``; ``--compile`` needs two workers or
more), on a fresh server each; with ``--compile`` the phases start once the workers answer the page's structures
with compiled programs (a worker compiles each structure while the others serve; the warm-up's eager answers are
not measured).

Latency is the client's wall time; "compute" is the server's ``elapsed_ms`` (``ravine.simulate.run`` plus
conversion). Absolute times depend on the machine and its load; compare figures printed by the same run.

Usage::

    python benchmarks/serve.py                         # the server's default --workers, (b) 50 x 20
    python benchmarks/serve.py --workers 0 2           # threads vs 2 worker processes, same run
    python benchmarks/serve.py --engines compiled      # only the server with --compile
    python benchmarks/serve.py --quick                 # (a) 20 requests, (b) 50 x 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time

import httpx

OPTIMIZERS = ["gd", "momentum", "nesterov", "rmsprop", "adam", "adamw"]
BASE_LR = {"gd": 1e-3, "momentum": 1e-2, "nesterov": 1e-2, "rmsprop": 1e-2, "adam": 0.05, "adamw": 0.05}
_KINDS = ["gd", "sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw", "adam_l2", "adagrad", "lion", "adopt",
          "schedule_free_adamw"]
_ELAPSED = re.compile(rb'"elapsed_ms":\s*([0-9.eE+-]+)')
_TAIL = 64 * 1024  # elapsed_ms sits after the runs, near the end of the body


def make_request(adam_lr: float, steps: int, jitter: float = 0.0) -> dict:
    """The page's request: 6 optimizers from one start; ``jitter`` makes every request distinct."""
    opts = []
    for name in OPTIMIZERS:
        lr = adam_lr if name == "adam" else BASE_LR[name] * (1.0 + jitter)
        opts.append({"name": name, "hyperparams": {"lr": lr}})
    return {"surface": {"name": "rosenbrock"}, "start": [-1.5, 2.5 - jitter], "steps": steps, "optimizers": opts}


def maximal_request(tag: int) -> dict:
    """The most work one trajectory request may ask for: 16 optimizers (12 kinds) x 10000 steps."""
    opts = [{"name": _KINDS[i % len(_KINDS)], "hyperparams": {"lr": 1e-4 * (1 + i + tag / 97)}} for i in range(16)]
    return {"surface": {"name": "rosenbrock"}, "steps": 10000, "optimizers": opts}


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


def elapsed_ms(content: bytes) -> float:
    """The server's ``elapsed_ms`` (read off the response's tail, without parsing 150 KB of JSON)."""
    m = _ELAPSED.search(content[-_TAIL:])
    return float(m.group(1)) if m else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, workers: int | None, compiled: bool) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ravine.cli", "serve", "--port", str(port)] + (["--compile"] if compiled else [])
    if workers is not None:
        cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/limits", timeout=2).raise_for_status()
            # one request through each lane's warm-up (worker processes start on their first request)
            httpx.post(f"http://127.0.0.1:{port}/api/trajectories", json=make_request(0.05, 500, 0.999),
                       timeout=120).raise_for_status()
            return proc
        except httpx.TransportError:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read()}") from None
            if time.monotonic() > deadline:
                proc.terminate()
                raise RuntimeError("server did not start within 120 s") from None
            time.sleep(0.2)


def warm_compiled(base: str, steps: int, in_a_row: int = 12, timeout: float = 1800.0) -> float:
    """Send distinct requests of the structures the phases use (the page's six optimizers; Adam alone, as a
    slider drag recomputes it) until ``in_a_row`` consecutive answers of each were computed by compiled programs
    (every worker process compiles each structure once, as a job of its own); returns the seconds it took."""
    t0 = time.perf_counter()
    structures = [lambda j: make_request(0.05, steps, jitter=0.9 + j * 1e-6),
                  lambda j: {**make_request(0.03 + j * 1e-7, steps, jitter=0.8), "optimizers": [
                      {"name": "adam", "hyperparams": {"lr": 0.03 + j * 1e-7}}]}]
    with httpx.Client(base_url=base, timeout=120) as c:
        for make in structures:
            row, j = 0, 0
            while row < in_a_row:
                if time.perf_counter() - t0 > timeout:
                    raise RuntimeError(f"the structures did not compile within {timeout:.0f} s")
                j += 1
                r = c.post("/api/trajectories", json=make(j))
                r.raise_for_status()
                row = row + 1 if r.json()["engine"] == "compiled" else 0
                if not row:
                    time.sleep(0.5)  # a worker compiles meanwhile; the eager answers are not measured
    return time.perf_counter() - t0


def big_lane(base: str) -> dict:
    return httpx.get(base + "/api/load", timeout=30).json()["lanes"]["big"]


def send_and_leave_open(port: int, body: dict) -> socket.socket:
    """POST ``body`` on a plain socket and keep it open; closing it is the client disconnecting."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        f"POST /api/trajectories HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n".encode() + data
    )
    return sock


def slider_drag(base: str, n: int, steps: int) -> dict:
    """``n`` sequential requests; only the Adam lr changes (0.01 -> 0.1), as while a slider is dragged."""
    lat, comp = [], []
    with httpx.Client(base_url=base, timeout=120) as c:
        for i in range(3):  # warm-up (first allocations, the run cache), not measured
            c.post("/api/trajectories", json=make_request(0.02 + 0.001 * i, steps, jitter=0.11))
        for i in range(n):
            req = make_request(0.01 * 10 ** (i / max(1, n - 1)), steps, jitter=0.11)
            t = time.perf_counter()
            r = c.post("/api/trajectories", json=req)
            lat.append((time.perf_counter() - t) * 1e3)
            r.raise_for_status()
            comp.append(elapsed_ms(r.content))
    return {"lat": lat, "comp": comp}


async def many_clients(base: str, clients: int, per_client: int, steps: int, tag: float) -> dict:
    lat: list[float] = []
    comp: list[float] = []
    errors: list[str] = []
    done = [0] * clients
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as c:
        t0 = time.perf_counter()

        async def client(k: int) -> None:
            for i in range(per_client):
                req = make_request(0.05, steps, jitter=tag + (k * per_client + i + 1) * 1e-5)
                t = time.perf_counter()
                try:
                    r = await c.post("/api/trajectories", json=req)
                    r.raise_for_status()
                    if r.headers.get("x-ravine-cache") != "miss":
                        errors.append(f"client {k} request {i}: answered from the cache")
                    comp.append(elapsed_ms(r.content))
                    done[k] += 1
                except Exception as exc:  # noqa: BLE001 - every failure is reported
                    errors.append(f"client {k} request {i}: {type(exc).__name__}: {exc}")
                lat.append((time.perf_counter() - t) * 1e3)

        await asyncio.gather(*(client(k) for k in range(clients)))
        wall = time.perf_counter() - t0
    return {"lat": lat, "comp": comp, "errors": errors, "done": done, "wall": wall}


def small_latencies(base: str, n: int, tag: float, while_big: bool = False) -> list[float]:
    """Latencies of ``n`` sequential distinct page requests; with ``while_big``, only those that ended while a
    big request was still computing."""
    out = []
    with httpx.Client(base_url=base, timeout=120) as c:
        for i in range(n):
            req = make_request(0.05, 500, jitter=tag + i * 1e-6)
            t = time.perf_counter()
            c.post("/api/trajectories", json=req).raise_for_status()
            ms = (time.perf_counter() - t) * 1e3
            if not while_big or big_lane(base)["running"] > 0:
                out.append(ms)
    return out


def wait_for(predicate, timeout: float = 120.0) -> float:
    t0 = time.perf_counter()
    while not predicate():
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError("timed out")
        time.sleep(0.02)
    return time.perf_counter() - t0


def measure(workers: int | None, compiled: bool, a: argparse.Namespace) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(port, workers, compiled)
    try:
        mode = httpx.get(base + "/api/load").json()
        label = f"--workers {mode['workers']}" + (" (threads)" if mode["mode"] == "threads" else " (processes)")
        label += " --compile" if compiled else ""
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"\n=== ravine serve {label} on {base} ({os.cpu_count()} CPU cores; load average {load})")
        out: dict = {"label": label}
        if compiled:
            took = warm_compiled(base, a.steps)
            print(f"    warm-up: the workers compiled the page's structures in {took:.0f} s (one worker compiling "
                  "while the others answer eagerly; not measured)")

        out.update(rps=float("nan"), p95=float("nan"), errors=0)
        if "a" in a.phases:
            s = slider_drag(base, a.requests, a.steps)
            out["drag_p95"] = pct(s["lat"], 95)
            print(f"(a) slider drag, {a.requests} sequential requests: latency p50 {pct(s['lat'], 50):.1f} ms, "
                  f"p95 {out['drag_p95']:.1f} ms (target < 50 ms: {'met' if out['drag_p95'] < 50 else 'NOT met'}); "
                  f"compute p50 {pct(s['comp'], 50):.1f} ms")
        if "b" in a.phases:
            class_load(base, a, workers, out)
        if "c" in a.phases or "d" in a.phases:
            small_under_big(base, port, a, out)
        if "e" in a.phases:
            same_preset(base, a, out)
        if "f" in a.phases and compiled:
            during_compilation(base, a, out)
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def class_load(base: str, a: argparse.Namespace, workers: int | None, out: dict) -> None:
    """(b): many clients at once, every request distinct."""
    b = asyncio.run(many_clients(base, a.clients, a.per_client, a.steps, tag=0.3 + (workers or 0) * 0.01))
    total, ok = a.clients * a.per_client, sum(b["done"])
    starved = sum(1 for d in b["done"] if d < a.per_client)
    out.update(rps=ok / b["wall"], p50=pct(b["lat"], 50), p95=pct(b["lat"], 95), errors=len(b["errors"]))
    print(f"(b) {a.clients} clients x {a.per_client} distinct requests: {ok}/{total} completed, "
          f"{len(b['errors'])} errors, {starved} starved; {out['rps']:.1f} req/s; latency p50 {out['p50']:.0f} ms, "
          f"p95 {out['p95']:.0f} ms, max {max(b['lat']):.0f} ms (target p95 < 1 s: "
          f"{'met' if out['p95'] < 1000 else 'NOT met'}); compute p50 {pct(b['comp'], 50):.1f} ms")
    for e in b["errors"][:3]:
        print(f"      {e}")


def same_preset(base: str, a: argparse.Namespace, out: dict) -> None:
    """(e): every client sends the same request at once (a class clicking the same preset)."""

    async def burst() -> list[float]:
        req = make_request(0.0123, a.steps, jitter=0.4321)  # not asked before: nothing cached
        limits = httpx.Limits(max_connections=a.clients + 4)
        async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as c:
            async def one() -> float:
                t = time.perf_counter()
                (await c.post("/api/trajectories", json=req)).raise_for_status()
                return (time.perf_counter() - t) * 1e3

            return await asyncio.gather(*(one() for _ in range(a.clients)))

    before = httpx.get(base + "/api/load").json()
    lat = asyncio.run(burst())
    after = httpx.get(base + "/api/load").json()
    computed = after["lanes"]["small"]["finished"] - before["lanes"]["small"]["finished"]
    out.update(preset_p95=pct(lat, 95))
    print(f"(e) {a.clients} clients send the same request at once: computed {computed} time(s), "
          f"{after['shared'] - before['shared']} joined it in flight, the rest answered from the cache; "
          f"latency p50 {pct(lat, 50):.0f} ms, max {max(lat):.0f} ms")


def during_compilation(base: str, a: argparse.Namespace, out: dict) -> None:
    """(f) ``--compile``: small requests (a compiled structure) while a worker compiles a new structure."""
    condition = 20.0 + (time.time() % 1000) / 100  # a valley never compiled before: a new program
    new = {"surface": {"name": "valley", "params": {"condition": condition}}, "steps": 300,
           "optimizers": [{"name": "rmsprop"}, {"name": "adagrad"}, {"name": "lion", "hyperparams": {"lr": 0.01}}]}
    before = httpx.get(base + "/api/load").json()["compile"]
    idle = small_latencies(base, a.small, tag=0.81)
    httpx.post(base + "/api/trajectories", json=new, timeout=120).raise_for_status()
    wait_for(lambda: httpx.get(base + "/api/load").json()["compile"]["running"] == 1, timeout=60)
    busy: list[float] = []
    t0 = time.perf_counter()
    while httpx.get(base + "/api/load").json()["compile"]["running"] == 1 and len(busy) < 2000:
        busy += small_latencies(base, 1, tag=0.82 + len(busy) * 1e-6)
    took = time.perf_counter() - t0
    after = httpx.get(base + "/api/load").json()["compile"]
    base_ms = statistics.median(idle)
    out.update(compile_delay_max=max(busy) - base_ms if busy else float("nan"))
    print(f"(f) a worker compiles a new structure ({took:.0f} s; compilations done {before['done']} -> "
          f"{after['done']}, failed {after['failed'] - before['failed']}): {len(busy)} small requests meanwhile, "
          f"p50 {pct(busy, 50):.1f} ms, max {max(busy):.1f} ms vs idle p50 {base_ms:.1f} ms (delay max "
          f"{out['compile_delay_max']:.1f} ms; target <= 100 ms: "
          f"{'met' if out['compile_delay_max'] <= 100 else 'NOT met'})")


def small_under_big(base: str, port: int, a: argparse.Namespace, out: dict) -> None:
    """(c) and (d): small requests while a maximal one computes, and after four are abandoned."""
    # (c) interleaved, so that a change in the machine's load hits both sides alike: per round, small
    # requests on the idle server, then the same number while a maximal request computes (it is then
    # abandoned: its work stops, which (d) measures on its own)
    idle: list[float] = []
    busy: list[float] = []
    per_round = 2
    for r in range(max(1, a.small // per_round)):
        idle += small_latencies(base, per_round, tag=0.5 + r * 1e-3)
        sock = send_and_leave_open(port, maximal_request(100 + r))
        wait_for(lambda: big_lane(base)["running"] == 1)
        busy += small_latencies(base, per_round, tag=0.6 + r * 1e-3, while_big=True)
        sock.close()
        wait_for(lambda: big_lane(base)["running"] == 0)
    base_ms = statistics.median(idle)
    delays = [x - base_ms for x in busy]
    out.update(idle=base_ms, busy=statistics.median(busy), delay_p50=pct(delays, 50),
               delay_max=max(delays) if delays else float("nan"))
    print(f"(c) small request, interleaved rounds: idle server p50 {base_ms:.1f} ms, max {max(idle):.1f} ms; "
          f"while a maximal request computes ({len(busy)} measured) p50 {out['busy']:.1f} ms, max "
          f"{max(busy):.1f} ms: delay p50 {out['delay_p50']:.1f} ms (x{out['busy'] / base_ms:.2f}), max "
          f"{out['delay_max']:.1f} ms (target <= 100 ms: {'met' if out['delay_max'] <= 100 else 'NOT met'})")

    before = big_lane(base)["stopped_running"] + big_lane(base)["cancelled_queued"]
    socks = [send_and_leave_open(port, maximal_request(10 + k)) for k in range(4)]
    wait_for(lambda: big_lane(base)["running"] == 1 and big_lane(base)["queued"] == 3)

    def all_stopped() -> bool:
        lane = big_lane(base)
        return lane["running"] == 0 and lane["stopped_running"] + lane["cancelled_queued"] - before == 4

    stopped: list[float] = []
    watcher = threading.Thread(target=lambda: stopped.append(wait_for(all_stopped)))
    for sk in socks:
        sk.close()
    watcher.start()  # measures from the disconnects, while the small requests below run
    after = small_latencies(base, a.small, tag=0.7)
    watcher.join(120)
    stop_s = stopped[0] if stopped else float("nan")
    out.update(abandoned_delay_max=max(after) - base_ms, stop_ms=stop_s * 1e3)
    print(f"(d) 4 maximal requests abandoned by their clients: the next {a.small} small requests p50 "
          f"{pct(after, 50):.1f} ms, max {max(after):.1f} ms (delay max {out['abandoned_delay_max']:.1f} ms); "
          f"all abandoned work stopped or dropped within {out['stop_ms']:.0f} ms of the disconnects")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="*", default=[None], help="server --workers values to measure")
    ap.add_argument("--engines", nargs="*", choices=["eager", "compiled"], default=["eager", "compiled"],
                    help="measure the server without and with --compile (default both, in this order)")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--requests", type=int, default=40, help="sequential slider-drag requests (a)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--per-client", type=int, default=20)
    ap.add_argument("--small", type=int, default=20, help="small requests measured in (c) and (d)")
    ap.add_argument("--phases", default="abcdef", help="which of (a) to (f) to run, e.g. 'cd' ((f): --compile only)")
    ap.add_argument("--quick", action="store_true", help="(a) 20 requests, (b) 50 clients x 2 requests")
    a = ap.parse_args()
    if a.quick:
        a.requests, a.per_client, a.small = 20, 2, 10
    configs = [(w, e == "compiled") for w in (a.workers or [None]) for e in a.engines]
    for w, compiled in configs:
        if compiled and w is not None and w < 2:
            print(f"\n(--workers {w} --compile skipped: compiling needs two worker processes or more)")
    results = [measure(w, c, a) for w, c in configs if not (c and w is not None and w < 2)]
    if len(results) > 1 and "b" in a.phases:
        first = results[0]
        print("\nsame run, relative to the first configuration:")
        for r in results[1:]:
            print(f"    {r['label']}: throughput x{r['rps'] / first['rps']:.2f}, p95 x{r['p95'] / first['p95']:.2f}"
                  + (f", slider p95 x{r['drag_p95'] / first['drag_p95']:.2f}" if "drag_p95" in r else ""))
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
