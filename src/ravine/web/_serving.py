"""How the playground server shares its machine among many clients: compute lanes, stop flags, a byte-bounded
cache and the Host check.

**Lanes.** Every request that computes is placed in one of two lanes by its work (the bounds are
:data:`ravine.web.models.LIMITS`, served at ``GET /api/limits``):

- ``small``: requests within the small-work bounds (the page's trajectories while a slider moves, a contour
  grid, a Hessian); ``small_limit`` of them compute at once;
- ``big``: the rest (up to the hard caps of the models); ``big_limit`` at once (default 1).

Each lane has its own executor and its own FIFO queue (an ``asyncio.Semaphore`` of the lane's size, so every
job handed to an executor starts at once). A small request therefore never waits for a big one: while a
maximal request computes in the big lane, the small lane keeps serving. Waiting requests are served in
arrival order, so none is starved. Where the two lanes compete for the CPU, the small one goes first: the big
lane's processes run at a lower priority (niceness :data:`BIG_NICE`), and in thread mode a big job pauses at
each stop check while small jobs compute (at most :data:`BIG_YIELD_S` each time, so it still progresses).

**Where the work runs.** ``workers=0``: threads of the server process (one for the small lane, ``big_limit``
for the big one); the work holds the GIL, so the two lanes share one core, but neither blocks the other.
``workers=N``: processes (``ProcessPoolExecutor``, "spawn"): N for the small lane and ``big_limit`` for the
big one, so the lanes use separate cores. A process job gets its request as JSON (validated again there)
and returns the encoded response; each process keeps its own cache of runs.

**Stopping.** A job carries a stop flag: a ``threading.Event`` (threads) or one slot of a shared
``multiprocessing.Array`` handed to the processes when they start. The compute function passes
``should_stop`` to ``ravine.simulate``, which checks it every ``STOP_CHECK_STEPS`` steps and raises
``ravine.simulate.Stopped``. The server watches each request's ASGI ``receive`` channel: when the client
disconnects, a queued job is dropped before it starts and a running one is flagged (and its lane slot is
freed only once the work has stopped). :class:`LaneStats` counts what each lane finished and stopped
(``GET /api/load``).

**Compilations** (``create_app(compile=True)``, processes only): :meth:`Lanes.compile` runs one in a worker of
the small lane as a job that holds one of the lane's slots, so that worker serves nothing else while it compiles
(a compilation holds the interpreter for seconds at a time; in a thread beside requests it delayed them by
seconds) and the other workers keep serving.

**Sharing.** Identical requests in flight share one job (:class:`SharedWork`: a class loading the same preset
at once computes it once); the job stops only when all of its clients have left. Identical requests after
it are answered from the response cache.
"""

from __future__ import annotations

import asyncio
import ipaddress
import multiprocessing
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from ravine.simulate import Stopped

# ---------------------------------------------------------------------------------------------------
# A cache bounded by bytes.

_V = TypeVar("_V")


def nbytes(value: Any) -> int:
    """An estimate of the memory ``value`` holds: bytes and strings by length, numpy arrays by ``nbytes``,
    dicts, lists and tuples by their items (plus 64 bytes per container and item); anything else 64."""
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    if isinstance(value, str):
        return len(value)
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, dict):
        return 64 + sum(64 + nbytes(k) + nbytes(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return 64 + sum(64 + nbytes(v) for v in value)
    return 64


class LRUCache(Generic[_V]):
    """A thread-safe least-recently-used cache bounded by the total bytes of its entries.

    An entry's size is ``len(key) + size_of(value)`` (:func:`nbytes` by default); putting an entry evicts
    the least recently used ones until the total is at most ``max_bytes`` again. An entry larger than
    ``max_bytes`` on its own is not stored (``max_bytes`` 0: nothing is). The server keeps two: encoded
    responses keyed by the canonical request JSON, and single runs keyed by everything that determines a run.
    """

    def __init__(self, max_bytes: int, size_of: Callable[[Any], int] = nbytes):
        self.max_bytes = int(max_bytes)
        self._size_of = size_of
        self._entries: OrderedDict[str, tuple[_V, int]] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()

    @property
    def total_bytes(self) -> int:
        """The bytes of all entries now stored (never more than ``max_bytes``)."""
        return self._total

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> _V | None:
        """The value stored under ``key`` (now the most recently used), or ``None``."""
        with self._lock:
            item = self._entries.get(key)
            if item is None:
                return None
            self._entries.move_to_end(key)
            return item[0]

    def put(self, key: str, value: _V) -> None:
        """Store ``value`` under ``key``, evicting least recently used entries until the total fits ``max_bytes``.

        Args:
            key: the entry's key.
            value: the value to store.
        """
        size = len(key) + int(self._size_of(value))
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._total -= old[1]
            if size > self.max_bytes:
                return
            self._entries[key] = (value, size)
            self._total += size
            while self._total > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._total -= evicted


# ---------------------------------------------------------------------------------------------------
# Lanes.

#: A compute function: ``fn(payload, should_stop, run_cache) -> encoded response``. For process workers it
#: must be picklable (a module-level function, or a ``functools.partial`` of one).
WorkFn = Callable[[str, Callable[[], bool], Any], bytes]

#: The niceness added to the big lane's worker processes: the OS runs small jobs first when cores are short.
BIG_NICE = 10
#: In thread mode a big job pauses at each stop check while small jobs compute, for at most this long (so big
#: jobs still progress under a stream of small ones).
BIG_YIELD_S = 0.05

# State of a worker process (set by _init_worker): the shared stop flags and the process's run cache.
_FLAGS: Any = None
_RUN_CACHE: LRUCache | None = None


def _init_worker(flags: Any, run_cache_bytes: int, torch_threads: int | None, nice: int) -> None:
    global _FLAGS, _RUN_CACHE
    import torch

    if nice and hasattr(os, "nice"):
        os.nice(nice)
    if torch_threads is not None:
        torch.set_num_threads(max(1, int(torch_threads)))
    _FLAGS = flags
    _RUN_CACHE = LRUCache(run_cache_bytes)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True, name="ravine-parent-watch").start()


def _exit_with_parent(parent: int) -> None:
    """A worker's watchdog: exit when the server process is gone (a worker blocked on its queue would not)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def _in_worker(fn: WorkFn, payload: str, slot: int) -> bytes:
    flags = _FLAGS
    return fn(payload, lambda: flags[slot] != 0, _RUN_CACHE)


def _compile_in_worker(fn: WorkFn, payload: str) -> bytes:
    return fn(payload, lambda: False, _RUN_CACHE)


def _warm(fn: WorkFn | None, payload: str) -> int:
    """Run in each new worker process at start (a first request of the app, or one tiny run), so that the
    imports and first allocations do not fall on a client's request."""
    if fn is not None:
        fn(payload, lambda: False, _RUN_CACHE)
    else:
        import ravine.simulate as sim

        sim.run("bowl", ["adam"], steps=2)
    return os.getpid()


def _report_warm_failure(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        print(f"ravine serve: warning: a worker process failed to start: {future.exception()!r}", file=sys.stderr)


class WorkerLost(RuntimeError):
    """The worker process computing a request died; the lane's pool is replaced for the next request."""


class ClientGone(Exception):
    """The client disconnected before its response was ready; its work was dropped or stopped."""


@dataclass
class LaneStats:
    """Counters of one lane (``GET /api/load``): jobs waiting and running now, and how jobs ended."""

    limit: int
    queued: int = 0
    running: int = 0
    finished: int = 0
    failed: int = 0
    cancelled_queued: int = 0
    stopped_running: int = 0


async def _until_disconnect(receive: Callable[[], Awaitable[dict]]) -> None:
    """Return when the ASGI channel ``receive`` says the client disconnected (the body has been read)."""
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return


class Lanes:
    """The small and the big lane of a server, their executors and counters (see the module docstring).

    Args:
        workers: 0: compute in threads of the server process; N >= 1: in N processes (small lane) plus
            ``big_limit`` processes (big lane).
        big_limit: how many big requests compute at once.
        run_cache: the run cache handed to compute functions in thread mode.
        run_cache_bytes: the bound of each worker process's own run cache (process mode).
        torch_threads: ``torch.set_num_threads`` in each worker process.
        warm: ``(fn, payload)``: a first request each worker process computes when it starts (default: a tiny
            ``ravine.simulate.run``).
    """

    def __init__(
        self,
        workers: int = 0,
        big_limit: int = 1,
        run_cache: Any = None,
        run_cache_bytes: int = 0,
        torch_threads: int | None = 1,
        warm: tuple[WorkFn, str] | None = None,
    ):
        self.workers = int(workers)
        self._warm = warm
        self.mode = "processes" if self.workers > 0 else "threads"
        limits = {"small": max(1, self.workers), "big": max(1, int(big_limit))}
        self.stats = {lane: LaneStats(limit=n) for lane, n in limits.items()}
        self._run_cache = run_cache
        self._run_cache_bytes = int(run_cache_bytes)
        self._torch_threads = torch_threads
        # threads: one pool per lane, key (lane, 0); processes: one single-process pool per worker, key (lane, i),
        # so that a job can be sent to a given worker (a compilation, to the worker that lacks the program)
        self._executors: dict[tuple[str, int], Executor] = {}
        self._idle = {lane: list(range(n)) for lane, n in limits.items()}  # processes: the workers not computing
        self._reserved: dict[str, int | None] = {lane: None for lane in limits}  # a worker a compilation waits for
        self._sems: dict[str, asyncio.Semaphore] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        slots = sum(limits.values())
        spawn = multiprocessing.get_context("spawn")
        self._flags = spawn.Array("b", slots, lock=False) if self.mode == "processes" else None
        self._free_slots = list(range(slots))
        self._small_idle = threading.Event()
        self._small_idle.set()
        self.compiles = {"running": 0, "done": 0, "failed": 0}

    def _yielding(self, event: threading.Event) -> Callable[[], bool]:
        """A big job's ``should_stop`` in thread mode: it also pauses the job while small jobs compute (for at
        most :data:`BIG_YIELD_S` per check), so they need not share the GIL with it."""

        def should_stop() -> bool:
            self._small_idle.wait(BIG_YIELD_S)
            return event.is_set()

        return should_stop

    def executor(self, lane: str, worker: int = 0) -> Executor:
        """The executor of ``lane`` (threads) or of its worker process ``worker`` (created on first use)."""
        key = (lane, 0 if self.mode == "threads" else worker)
        with self._lock:
            ex = self._executors.get(key)
            if ex is None:
                if self.mode == "threads":
                    n = self.stats[lane].limit
                    ex = ThreadPoolExecutor(max_workers=n, thread_name_prefix=f"ravine-{lane}")
                else:
                    ex = ProcessPoolExecutor(
                        max_workers=1,
                        mp_context=multiprocessing.get_context("spawn"),
                        initializer=_init_worker,
                        initargs=(
                            self._flags, self._run_cache_bytes, self._torch_threads, BIG_NICE if lane == "big" else 0
                        ),
                    )
                self._executors[key] = ex
            return ex

    def _take(self, lane: str, worker: int | None = None) -> int:
        """An idle worker of ``lane`` (``worker`` if given; else the one idle longest, so that requests take turns
        and every worker meets the structures in use, but not the one a compilation waits for if another is
        idle), marked busy. Processes only; the lane's semaphore guarantees that one is idle."""
        idle = self._idle[lane]
        if worker is None:
            others = [i for i in idle if i != self._reserved[lane]]
            worker = (others or idle)[0]
        idle.remove(worker)
        return worker

    def start(self) -> None:
        """Start the worker processes, each on a first request (imports, first allocations), and return at once:
        the server answers meanwhile, and a request that comes first waits for its lane's warm-up. Threads: nothing.
        """
        if self.mode != "processes":
            return
        fn, payload = self._warm or (None, "")
        for lane, stats in self.stats.items():
            for i in range(stats.limit):
                self.executor(lane, i).submit(_warm, fn, payload).add_done_callback(_report_warm_failure)

    def close(self) -> None:
        """Stop every running job (its flag is set), drop the queued ones and shut the executors down."""
        if self._flags is not None:
            for i in range(len(self._flags)):
                self._flags[i] = 1
        with self._lock:
            executors, self._executors = list(self._executors.values()), {}
        for ex in executors:
            processes = list((getattr(ex, "_processes", None) or {}).values())
            ex.shutdown(wait=False, cancel_futures=True)
            for p in processes:  # their work was told to stop; nothing in a worker needs saving
                p.terminate()
            for p in processes:
                p.join(timeout=10)

    def pids(self) -> list[int]:
        """The process ids of the worker processes now running (none in thread mode)."""
        with self._lock:
            return sorted(pid for ex in self._executors.values() for pid in (getattr(ex, "_processes", None) or {}))

    def snapshot(self) -> dict[str, Any]:
        """``{"mode", "workers", "pids", "lanes": {lane: LaneStats as a dict}}`` (:class:`SharedWork` adds
        ``shared``)."""
        lanes = {k: asdict(v) for k, v in self.stats.items()}
        return {"mode": self.mode, "workers": self.workers, "pids": self.pids(), "lanes": lanes}

    def _semaphore(self, lane: str) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (TestClient and uvicorn each run their own)
            self._loop, self._sems = loop, {k: asyncio.Semaphore(v.limit) for k, v in self.stats.items()}
        return self._sems[lane]

    async def run(
        self,
        lane: str,
        fn: WorkFn,
        payload: str,
        receive: Callable[[], Awaitable[dict]] | None = None,
        on_done: Callable[[bytes, int], None] | None = None,
    ) -> bytes:
        """Compute ``fn(payload, should_stop, run_cache)`` in ``lane`` and return its bytes.

        Args:
            lane: ``"small"`` or ``"big"``.
            fn: the compute function (see :data:`WorkFn`).
            payload: the request as JSON.
            receive: the request's ASGI receive channel, watched for a disconnect (``None``: not watched).
            on_done: called with the bytes and the index of the worker that computed them (processes; 0 in
                thread mode) when the job succeeded.

        Returns:
            The encoded response.

        Raises:
            ClientGone: the client disconnected; the job was dropped (queued) or stopped (running).
        """
        stats, sem = self.stats[lane], self._semaphore(lane)
        gone = asyncio.ensure_future(_until_disconnect(receive)) if receive is not None else None
        try:
            stats.queued += 1
            acquire = asyncio.ensure_future(sem.acquire())
            try:
                await asyncio.wait({acquire, gone} if gone is not None else {acquire},
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                stats.queued -= 1
            if not acquire.done() or acquire.cancelled():
                acquire.cancel()
                stats.cancelled_queued += 1
                raise ClientGone
            try:
                return await self._compute(lane, stats, fn, payload, gone, on_done)
            finally:
                sem.release()
        finally:
            if gone is not None:
                gone.cancel()

    def _drop(self, lane: str, executor: Executor) -> None:
        """Forget the broken ``executor`` of ``lane``: the next job starts a new one."""
        with self._lock:
            for key, ex in list(self._executors.items()):
                if ex is executor:
                    del self._executors[key]
        executor.shutdown(wait=False, cancel_futures=True)

    async def compile(self, fn: WorkFn, payload: str, worker: int) -> None:
        """Run ``fn(payload, ...)`` (a compilation, ``ravine.web.app.compile_structure``) in worker process
        ``worker`` of the small lane (the one whose answer said it lacks the program), holding one of the lane's
        slots (it waits its turn like a request, then for that worker, which later requests leave alone): the
        worker serves nothing else meanwhile, while the others do. Counted in :attr:`compiles`, not in the
        lane's counters; a failure is counted, not raised (the requests are stepped eagerly then)."""
        if self.mode != "processes":
            raise RuntimeError("compilations run in worker processes (workers >= 2)")
        async with self._semaphore("small"):
            self._reserved["small"] = worker
            try:
                while worker not in self._idle["small"]:  # it finishes the request it is computing
                    await asyncio.sleep(0.005)
                self._take("small", worker)
            finally:
                self._reserved["small"] = None
            self.compiles["running"] += 1
            executor = self.executor("small", worker)
            try:
                await asyncio.get_running_loop().run_in_executor(executor, _compile_in_worker, fn, payload)
                self.compiles["done"] += 1
            except Exception as exc:  # noqa: BLE001 - a failed compilation leaves its structure to the eager loop
                self.compiles["failed"] += 1
                if isinstance(exc, BrokenExecutor):
                    self._drop("small", executor)
            finally:
                self.compiles["running"] -= 1
                self._idle["small"].append(worker)

    async def _compute(
        self,
        lane: str,
        stats: LaneStats,
        fn: WorkFn,
        payload: str,
        gone: asyncio.Future | None,
        on_done: Callable[[bytes, int], None] | None,
    ) -> bytes:
        loop = asyncio.get_running_loop()
        stats.running += 1
        if lane == "small":
            self._small_idle.clear()
        worker = self._take(lane) if self.mode == "processes" else 0
        executor = self.executor(lane, worker)
        if self.mode == "threads":
            event = threading.Event()
            stop, slot = event.set, None
            should_stop = event.is_set if lane == "small" else self._yielding(event)
            future = loop.run_in_executor(executor, fn, payload, should_stop, self._run_cache)
        else:
            assert self._flags is not None
            slot = self._free_slots.pop()
            self._flags[slot] = 0
            flags = self._flags

            def stop() -> None:
                flags[slot] = 1

            future = loop.run_in_executor(executor, _in_worker, fn, payload, slot)
        try:
            if gone is not None:
                await asyncio.wait({future, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not future.done():
                    stop()
            try:
                body = await future
            except Stopped:
                stats.stopped_running += 1
                raise ClientGone from None
            except BrokenExecutor as exc:  # a worker process died (killed, out of memory): start afresh
                stats.failed += 1
                self._drop(lane, executor)
                raise WorkerLost(
                    f"the worker process computing this request died ({exc}); the server starts a new one: "
                    "send the request again"
                ) from None
            except BaseException:
                stats.failed += 1
                raise
            stats.finished += 1
            if on_done is not None:
                on_done(body, worker)
            if gone is not None and gone.done():
                raise ClientGone
            return body
        finally:
            stats.running -= 1
            if lane == "small" and stats.running == 0:
                self._small_idle.set()
            if slot is not None:
                self._free_slots.append(slot)
            if self.mode == "processes":
                self._idle[lane].append(worker)


class _Flight:
    """One computation in flight and the requests waiting for it."""

    def __init__(self) -> None:
        self.task: asyncio.Task | None = None
        self.waiters = 0
        self.all_gone = asyncio.Event()

    async def receive(self) -> dict:
        """The job's "receive" channel: it disconnects when every waiting client has."""
        await self.all_gone.wait()
        return {"type": "http.disconnect"}


def _retrieve(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()  # a flight whose clients all left ends in ClientGone, which nobody awaits


class SharedWork:
    """Identical requests in flight share one computation (a class loading the same preset at once).

    The first request of a key starts the job in its lane; the others with the same key wait for the same
    job. The job is stopped only when every one of its clients has disconnected; a request that comes after
    that starts a new job. ``shared`` counts the requests that joined a job already in flight.

    Args:
        lanes: the lanes the jobs run in.
    """

    def __init__(self, lanes: Lanes):
        self.lanes = lanes
        self.shared = 0
        self._flights: dict[str, _Flight] = {}

    async def run(
        self,
        key: str,
        lane: str,
        fn: WorkFn,
        payload: str,
        receive: Callable[[], Awaitable[dict]] | None = None,
        on_done: Callable[[bytes, int], None] | None = None,
    ) -> bytes:
        """:meth:`Lanes.run` of ``fn(payload)``, shared by the requests in flight with the same ``key``.

        Args:
            key: what makes two requests identical (the kind and the canonical request JSON).
            lane: ``"small"`` or ``"big"``.
            fn: the compute function.
            payload: the request as JSON.
            receive: this request's ASGI receive channel, watched for its client's disconnect.
            on_done: as in :meth:`Lanes.run` (the first request's, for a shared job).

        Returns:
            The encoded response.

        Raises:
            ClientGone: this client disconnected (the job goes on while other clients wait for it).
        """
        flight = self._flights.get(key)
        if flight is None:
            flight = _Flight()
            flight.task = asyncio.ensure_future(self.lanes.run(lane, fn, payload, flight.receive, on_done))
            flight.task.add_done_callback(_retrieve)
            flight.task.add_done_callback(lambda _t, k=key, f=flight: self._drop(k, f))
            self._flights[key] = flight
        else:
            self.shared += 1
        assert flight.task is not None
        flight.waiters += 1
        gone = asyncio.ensure_future(_until_disconnect(receive)) if receive is not None else None
        try:
            await asyncio.wait({flight.task, gone} if gone is not None else {flight.task},
                               return_when=asyncio.FIRST_COMPLETED)
            if flight.task.done():
                return flight.task.result()
            raise ClientGone
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                self._drop(key, flight)  # a request that comes now starts afresh
                flight.all_gone.set()
            if gone is not None:
                gone.cancel()

    def _drop(self, key: str, flight: _Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]


# ---------------------------------------------------------------------------------------------------
# The Host check (DNS rebinding).

def _host_name(header: str) -> str:
    """The host of a ``Host`` header, without its port and brackets, lower case."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[1:].split("]", 1)[0]
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostCheck:
    """ASGI middleware: a request whose ``Host`` is not an allowed name gets a 400 that says why.

    A page on another site can make a browser send requests to ``127.0.0.1`` under its own name (DNS
    rebinding: its name is re-pointed to this machine); such requests carry that name in ``Host``, so
    answering only to the bound address and the names given closes the hole.

    Args:
        app: the ASGI app to guard.
        allowed: host names (without port) to answer to; ``"*"`` allows every name, ``"*.example.org"``
            a domain's subdomains.
        allow_ip_literals: also answer to any IP address (a rebinding needs a name, never an IP literal;
            the server sets it when bound to every interface, ``0.0.0.0`` or ``::``).
    """

    def __init__(self, app: Any, allowed: Sequence[str], allow_ip_literals: bool = False):
        self.app = app
        self.allowed = tuple(dict.fromkeys(_host_name(a) if a != "*" else a for a in allowed))
        self.allow_ip_literals = allow_ip_literals

    def allows(self, header: str | None) -> bool:
        """Whether a request with ``Host: header`` is answered."""
        if "*" in self.allowed:
            return True
        if not header:
            return False
        name = _host_name(header)
        if self.allow_ip_literals and _is_ip(name):
            return True
        return any(name == a or (a.startswith("*.") and name.endswith(a[1:])) for a in self.allowed)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        """Answer a request whose Host is not allowed with a plain-text 400; pass the others to the app."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        raw = headers.get(b"host")
        header = raw.decode("latin-1") if raw is not None else None
        if self.allows(header):
            await self.app(scope, receive, send)
            return
        names = ", ".join(self.allowed) + (", any IP address" if self.allow_ip_literals else "")
        shown = repr(header) if header is not None else "missing"
        text = (
            f"400 Bad Request: Host header {shown} is not allowed; this server answers to: {names}. "
            "(This protects the playground from DNS rebinding. To reach it under another name, start it "
            f"with: ravine serve --allowed-host {_host_name(header) if header else 'NAME'})\n"
        )
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = text.encode()
        await send({
            "type": "http.response.start",
            "status": 400,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())],
        })
        await send({"type": "http.response.body", "body": body})

