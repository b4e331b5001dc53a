"""The playground server under a class's load (issue 15): small requests never wait behind big ones, the work of
a client that disconnects stops, ``--workers`` computes in processes, the Host check, the byte-bounded cache.

Every test waits for the state it asserts (a lane's counters at ``GET /api/load``, an event a job sets), never
for a lucky timing.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient

import ravine.simulate as sim
from ravine._cli.serve import allowed_hosts
from ravine.simulate import Stopped
from ravine.web import create_app
from ravine.web import models as m
from ravine.web._serving import ClientGone, HostCheck, Lanes, LRUCache, SharedWork, WorkerLost

#: A maximal request: 16 optimizers of 12 kinds (12 separately stepped batches) x 10000 steps.
_NAMES = ["gd", "sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw", "adam_l2", "adagrad", "lion", "adopt",
          "schedule_free_adamw"]
BIG = {
    "surface": {"name": "rosenbrock"},
    "steps": m.MAX_STEPS,
    "optimizers": [{"name": _NAMES[i % len(_NAMES)], "hyperparams": {"lr": 1e-4 * (1 + i)}} for i in range(16)],
}
SMALL = {"surface": {"name": "bowl"}, "steps": 200, "optimizers": [{"name": "adam"}, {"name": "gd"}]}


def _wait(predicate, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _send_raw(port: int, body: dict, path: str = "/api/trajectories") -> socket.socket:
    """POST ``body`` on a plain socket, left open: closing it is the client disconnecting."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    sock.sendall(head + data)
    return sock


def _lane(base: str, lane: str) -> dict:
    return httpx.get(base + "/api/load", timeout=30).json()["lanes"][lane]


# ------------------------------------------------------------------------------------------------ simulate
def test_should_stop_stops_a_run_and_a_sweep_and_changes_nothing_when_false():
    calls = []

    def stop_on_third() -> bool:
        calls.append(1)
        return len(calls) == 3

    with pytest.raises(Stopped, match=f"stopped at step {2 * sim.STOP_CHECK_STEPS} of 500"):
        sim.run("rosenbrock", ["adam"], steps=500, should_stop=stop_on_third)
    calls.clear()
    with pytest.raises(Stopped):
        sim.sweep("bowl", "momentum", ("lr", [0.1, 0.2]), ("beta", [0.0, 0.5]), steps=500, should_stop=stop_on_third)
    a = sim.run("rosenbrock", ["adam", "gd"], steps=100)
    b = sim.run("rosenbrock", ["adam", "gd"], steps=100, should_stop=lambda: False)
    np.testing.assert_array_equal(a.positions, b.positions)


# ------------------------------------------------------------------------------------------------ lanes
def _blocking(release: threading.Event, started: threading.Event):
    """A compute function that runs until ``release`` is set or it is told to stop (then ``Stopped``)."""

    def fn(payload, should_stop, cache):
        started.set()
        while not release.wait(0.01):
            if should_stop():
                raise Stopped("told to stop")
        return b"big:" + payload.encode()

    return fn


def _quick(payload, should_stop, cache):
    return b"small:" + payload.encode()


def test_a_small_job_completes_while_a_big_one_runs_and_a_left_client_stops_its_work():
    """Deterministic: the big job cannot finish until the test releases it, after the small one has finished."""
    lanes = Lanes(workers=0, big_limit=1)
    release, started = threading.Event(), threading.Event()
    big_fn = _blocking(release, started)

    async def scenario():
        big = asyncio.ensure_future(lanes.run("big", big_fn, "1"))
        await asyncio.to_thread(started.wait, 30)
        small = await lanes.run("small", _quick, "2")
        assert small == b"small:2"
        assert not big.done() and lanes.stats["big"].running == 1  # the big one is still running
        release.set()
        assert await big == b"big:1"

        # a client that disconnects: its running job stops, a queued one never starts
        release.clear()
        started.clear()
        left, left_queued = asyncio.Event(), asyncio.Event()

        def receive_until(event):
            async def receive():
                await event.wait()
                return {"type": "http.disconnect"}

            return receive

        running = asyncio.ensure_future(lanes.run("big", big_fn, "3", receive_until(left)))
        await asyncio.to_thread(started.wait, 30)
        queued = asyncio.ensure_future(lanes.run("big", big_fn, "4", receive_until(left_queued)))
        while lanes.stats["big"].queued != 1:
            await asyncio.sleep(0.01)
        left_queued.set()
        with pytest.raises(ClientGone):
            await queued
        left.set()
        with pytest.raises(ClientGone):
            await running

    asyncio.run(scenario())
    lanes.close()
    stats = lanes.stats["big"]
    assert (stats.finished, stats.stopped_running, stats.cancelled_queued, stats.running) == (1, 1, 1, 0)
    assert lanes.stats["small"].finished == 1


def test_identical_requests_in_flight_share_one_job_which_stops_when_all_their_clients_left():
    lanes = Lanes(workers=0)
    shared = SharedWork(lanes)
    release, started = threading.Event(), threading.Event()
    fn = _blocking(release, started)

    def leaving(event: asyncio.Event):
        async def receive():
            await event.wait()
            return {"type": "http.disconnect"}

        return receive

    async def scenario():
        first = asyncio.ensure_future(shared.run("k", "big", fn, "1", leaving(asyncio.Event())))
        await asyncio.to_thread(started.wait, 30)
        second = asyncio.ensure_future(shared.run("k", "big", fn, "1", leaving(asyncio.Event())))
        await asyncio.sleep(0)
        assert shared.shared == 1
        release.set()
        assert await first == await second == b"big:1"
        assert lanes.stats["big"].finished == 1  # computed once for both

        release.clear()
        started.clear()
        left_a, left_b = asyncio.Event(), asyncio.Event()
        a = asyncio.ensure_future(shared.run("k", "big", fn, "2", leaving(left_a)))
        await asyncio.to_thread(started.wait, 30)
        b = asyncio.ensure_future(shared.run("k", "big", fn, "2", leaving(left_b)))
        await asyncio.sleep(0)
        left_a.set()  # one client leaves: the job goes on for the other
        with pytest.raises(ClientGone):
            await a
        assert lanes.stats["big"].running == 1 and lanes.stats["big"].stopped_running == 0
        left_b.set()  # the last one leaves: the job stops
        with pytest.raises(ClientGone):
            await b
        while lanes.stats["big"].running:
            await asyncio.sleep(0.01)
        assert lanes.stats["big"].stopped_running == 1 and shared.shared == 2

    try:
        asyncio.run(scenario())
    finally:
        lanes.close()


def _dies(payload, should_stop, cache):
    """A compute function that kills its worker process (as the out-of-memory killer would)."""
    import os

    os._exit(3)


def test_a_dead_worker_process_fails_its_request_and_the_lane_recovers():
    lanes = Lanes(workers=1, big_limit=1)

    async def scenario():
        with pytest.raises(WorkerLost, match="worker process computing this request died"):
            await lanes.run("small", _dies, "x")
        assert await lanes.run("small", _quick, "again") == b"small:again"

    try:
        asyncio.run(scenario())
    finally:
        lanes.close()
    assert (lanes.stats["small"].failed, lanes.stats["small"].finished) == (1, 1)


# ------------------------------------------------------------------------------------------------ a real server
@pytest.fixture(scope="module")
def threaded_server():
    app = create_app(workers=0, allowed_hosts=["127.0.0.1"])
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait(lambda: server.started, "the server to start", 60)
    yield f"http://127.0.0.1:{port}", port
    server.should_exit = True
    thread.join(30)


def _small_answers_while_big_runs_then_big_stops(base: str, port: int) -> None:
    before = _lane(base, "big")
    sock = _send_raw(port, BIG)
    try:
        _wait(lambda: _lane(base, "big")["running"] == 1, "the big request to start computing")
        r = httpx.post(base + "/api/trajectories", json={**SMALL, "seed": random.randrange(1 << 30)}, timeout=120)
        assert r.status_code == 200 and len(r.json()["runs"]) == 2
        big = _lane(base, "big")
        assert big["running"] == 1 and big["finished"] == before["finished"]  # small done, big still computing
    finally:
        sock.close()  # the client leaves
    after = _wait(
        lambda: (s := _lane(base, "big"))["running"] == 0 and s["stopped_running"] > before["stopped_running"] and s,
        "the big request's work to stop",
    )
    assert after["finished"] == before["finished"]  # stopped, not finished
    assert after["stopped_running"] == before["stopped_running"] + 1


def test_server_small_request_is_not_blocked_and_disconnect_stops_the_work(threaded_server):
    base, port = threaded_server
    _small_answers_while_big_runs_then_big_stops(base, port)
    assert _lane(base, "small")["queued"] == 0


def test_work_bounds_are_one_dict_and_a_request_beyond_them_is_422(threaded_server):
    base, _ = threaded_server
    assert httpx.get(base + "/api/limits").json() == m.LIMITS
    sweep = {
        "optimizer": {"name": "momentum"},
        "steps": 1000,
        "x": {"name": "lr", "min": 0.01, "max": 0.1, "n": 128},
        "y": {"name": "beta", "min": 0.0, "max": 0.9, "n": 128},
    }
    r = httpx.post(base + "/api/sweep", json=sweep)
    assert r.status_code == 422
    work = 128 * 128 * 1000
    assert f"cells x steps = 128 x 128 x 1000 = {work} exceeds the cap {m.MAX_SWEEP_WORK}" in r.json()["message"]


def test_host_header_other_than_the_bound_address_is_400(threaded_server):
    base, port = threaded_server
    r = httpx.get(base + "/api/limits", headers={"Host": "rebind.attacker.example"})
    assert r.status_code == 400
    assert "Host header 'rebind.attacker.example' is not allowed" in r.text
    assert "ravine serve --allowed-host rebind.attacker.example" in r.text
    assert httpx.get(base + "/api/limits", headers={"Host": f"127.0.0.1:{port}"}).status_code == 200


def test_host_check_names_wildcards_and_ip_literals():
    with TestClient(create_app(allowed_hosts=["127.0.0.1", "*.lab.example"]), base_url="http://127.0.0.1:8000") as c:
        assert c.get("/api/limits").status_code == 200
        assert c.get("/api/limits", headers={"host": "pc7.lab.example:8000"}).status_code == 200
        assert c.get("/api/limits", headers={"host": "lab.example.evil.org"}).status_code == 400
        assert c.get("/api/limits", headers={"host": "10.0.0.7:8000"}).status_code == 400
    check = HostCheck(None, ["localhost"], allow_ip_literals=True)
    assert check.allows("10.0.0.7:8000") and check.allows("[fe80::1]:8000") and check.allows("LocalHost:1")
    assert not check.allows("evil.example") and not check.allows(None)
    assert HostCheck(None, ["*"]).allows("anything.example")
    names, any_ip = allowed_hosts("127.0.0.1", [])
    assert set(names) == {"127.0.0.1", "localhost", "::1"} and not any_ip
    names, any_ip = allowed_hosts("0.0.0.0", ["class.example"])
    assert "class.example" in names and socket.gethostname() in names and any_ip


# ------------------------------------------------------------------------------------------------ cache
def test_lru_cache_keeps_its_bytes_under_the_bound_and_evicts_least_recently_used():
    bound = 10_000
    cache: LRUCache[bytes] = LRUCache(bound)
    model: dict[str, int] = {}  # reference LRU: insertion order = recency
    rng = random.Random(0)
    for _ in range(2000):
        key = f"k{rng.randrange(60)}"
        if rng.random() < 0.3:
            got = cache.get(key)
            assert (got is not None) == (key in model)
            if key in model:
                model[key] = model.pop(key)
            continue
        value = bytes(rng.randrange(0, 3000))
        cache.put(key, value)
        model.pop(key, None)
        size = len(key) + len(value)
        if size <= bound:
            model[key] = size
            while sum(model.values()) > bound:
                model.pop(next(iter(model)))
        assert cache.total_bytes == sum(model.values()) <= bound
        assert len(cache) == len(model)
    cache.put("huge", bytes(bound + 1))
    assert cache.get("huge") is None


def test_response_cache_of_the_app_stays_within_cache_mb():
    app = create_app(cache_mb=0.5, run_cache_mb=0.25)
    with TestClient(app) as c:
        for i in range(12):
            req = {"surface": {"name": "bowl"}, "steps": 2000, "optimizers": [{"name": "adam", "label": str(i)}]}
            assert c.post("/api/trajectories", json=req).status_code == 200
    assert 0 < app.state.cache.total_bytes <= 0.5 * 2**20
    assert 0 < app.state.run_cache.total_bytes <= 0.25 * 2**20
    assert len(app.state.cache) < 12  # it had to evict


# ------------------------------------------------------------------------------------------ ravine serve --workers 2
def test_serve_with_two_worker_processes_serves_and_stops_left_work():
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ravine.cli", "serve", "--port", str(port), "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    pids: list[int] = []
    try:
        def up():
            if proc.poll() is not None:
                raise AssertionError(f"ravine serve exited: {proc.stdout.read()}")
            try:
                return httpx.get(base + "/api/load", timeout=5).json()
            except httpx.TransportError:
                return None

        load = _wait(up, "ravine serve --workers 2 to answer", 180)
        assert load["mode"] == "processes" and load["workers"] == 2 and load["lanes"]["small"]["limit"] == 2
        r = httpx.post(base + "/api/trajectories", json=SMALL, timeout=120)
        assert r.status_code == 200 and [run["name"] for run in r.json()["runs"]] == ["adam", "gd"]
        _small_answers_while_big_runs_then_big_stops(base, port)
        assert httpx.get(base + "/", headers={"Host": "evil.example"}, timeout=10).status_code == 400
        pids = httpx.get(base + "/api/load", timeout=10).json()["pids"]
        assert len(pids) == 3  # two for the small lane, one for the big
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    _wait(lambda: not any(_alive(pid) for pid in pids), "the worker processes to exit with the server", 60)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        return True


def test_serve_options_are_checked_and_reach_the_app(monkeypatch):
    from ravine._cli import serve as serve_cli
    from ravine.cli import build_parser

    args = build_parser().parse_args(["serve", "--workers", "0", "--cache-mb", "1.5", "--allowed-host", "a.example"])
    assert (args.workers, args.big_concurrency, args.cache_mb, args.allowed_host) == (0, 1, 1.5, ["a.example"])
    for bad in (["--workers", "-1"], ["--workers", "two"], ["--cache-mb", "-3"], ["--big-concurrency", "0"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", *bad])
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    assert serve_cli.run(args) == 0
    app = seen["app"]
    assert app.state.lanes.mode == "threads" and app.state.cache.max_bytes == int(1.5 * 2**20)
    with TestClient(app, base_url="http://a.example:8000") as c:
        assert c.get("/api/limits").status_code == 200
        assert c.get("/api/limits", headers={"host": "b.example"}).status_code == 400
        assert c.get("/api/load").json()["compile"]["enabled"] is False
    assert serve_cli.run(build_parser().parse_args(["serve", "--workers", "0", "--compile"])) == 2  # needs workers
    assert serve_cli.run(build_parser().parse_args(["serve", "--workers", "2", "--compile"])) == 0
    with TestClient(seen["app"], base_url="http://127.0.0.1:8000") as c:
        assert c.get("/api/load").json()["compile"] == {"enabled": True, "running": 0, "done": 0, "failed": 0}
