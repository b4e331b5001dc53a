"""``ravine.parallel``: one interface for running independent pieces of work here, on a process pool, or on Ray.

A report is hundreds of independent training runs; a landscape plane thousands of independent loss
evaluations; a 2D sweep thousands of independent trajectories. Each is cut into :class:`Task` objects
(a function, its arguments, a key that names it, and the CPUs/GPUs it needs) and handed to an
:class:`Executor`:

- :class:`InProcess` (the default): one task after another in this process, exactly as without an
  executor;
- :class:`ProcessPool` (``--workers N``): ``N`` local worker processes (joblib's loky pool, which pickles
  closures with cloudpickle);
- :class:`RayExecutor` (``--cluster local`` starts a local Ray instance, ``--cluster ADDRESS`` joins a
  running cluster; needs ``pip install 'ravine[cluster]'``).

Every executor runs every task, whatever the others do: :meth:`Executor.run` returns one
:class:`Outcome` per task, in task order, holding the task's value or the error it raised (type,
message and the worker's traceback). ``on_done`` is called in the driver as each task finishes and
``on_poll`` about every ``poll_s`` seconds while tasks are in flight, so progress bars move while work
runs elsewhere.

Threads: a worker sets ``torch.set_num_threads`` to the task's CPU count (:class:`ProcessPool`:
``os.cpu_count() // workers``, at least 1), so ``N`` workers never oversubscribe the cores.

Writing: tasks return values; whoever submits them writes files. The experiment harness is the one
exception by design: a training task writes its own run directory, which the harness locks
(``fcntl``) and writes atomically, so two workers never write one run. Over a multi-machine Ray
cluster the store must therefore be on a filesystem every node sees (e.g. NFS).
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ravine._validation import Interval, check

__all__ = [
    "Executor",
    "InProcess",
    "Outcome",
    "ProcessPool",
    "RayExecutor",
    "Task",
    "TaskError",
    "executor",
    "values",
]

OnDone = Callable[["Outcome"], None]
OnPoll = Callable[[], None]


@dataclass(frozen=True)
class Task:
    """One independent piece of work: ``fn(*args, **kwargs)``.

    Args:
        key: names the task in progress and errors (e.g. ``"run adam-lr0.001-s0"``, ``"rows 0-10"``).
        fn: the function; for :class:`ProcessPool` and :class:`RayExecutor` it and its arguments must
            pickle with cloudpickle (module functions, ``functools.partial`` and closures do).
        args: positional arguments.
        kwargs: keyword arguments.
        cpus: the CPU cores the task uses (its torch thread count on a worker; Ray's ``num_cpus``).
        gpus: the GPUs the task uses (Ray's ``num_gpus``; 0 on a machine without one).
    """

    key: str
    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    cpus: float = 1.0
    gpus: float = 0.0


@dataclass
class Outcome:
    """What one task gave: its ``value``, or the ``error`` it raised (``"Type: message"``) and its ``traceback``."""

    key: str
    value: Any = None
    error: str | None = None
    traceback: str = ""

    @property
    def ok(self) -> bool:
        """True when the task returned (no error)."""
        return self.error is None


class TaskError(RuntimeError):
    """Raised by :func:`values` when tasks failed; ``failed`` maps each failed task's key to its error."""

    def __init__(self, failed: dict[str, str], total: int) -> None:
        self.failed = dict(failed)
        lines = "; ".join(f"{k}: {e}" for k, e in self.failed.items())
        super().__init__(f"{len(self.failed)} of {total} tasks failed ({lines})")


def values(outcomes: Sequence[Outcome]) -> list[Any]:
    """The tasks' values in order, or :class:`TaskError` naming every task that failed and why."""
    failed = {o.key: o.error or "" for o in outcomes if not o.ok}
    if failed:
        raise TaskError(failed, len(outcomes))
    return [o.value for o in outcomes]


def _call(fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any], threads: int | None) -> Outcome:
    """Run one task where it lands (a worker or this process), catching its error with the traceback."""
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))
    try:
        return Outcome("", fn(*args, **kwargs))
    except Exception as e:  # the task's failure is data for the driver; the others go on
        return Outcome("", None, f"{type(e).__name__}: {e}", traceback.format_exc())


def _keyed(outcome: Outcome, key: str) -> Outcome:
    outcome.key = key
    return outcome


class Executor:
    """Runs independent :class:`Task` objects; subclasses say where. Use as a context manager to close it."""

    workers: int = 1
    kind: str = "in-process"

    def run(
        self,
        tasks: Sequence[Task],
        on_done: OnDone | None = None,
        on_poll: OnPoll | None = None,
        poll_s: float = 0.5,
    ) -> list[Outcome]:
        """Run every task; one :class:`Outcome` per task, in task order.

        Args:
            tasks: the work; keys should be unique (they name the tasks in errors).
            on_done: called in the driver with each outcome as its task finishes (any order).
            on_poll: called in the driver about every ``poll_s`` seconds while tasks run elsewhere.
            poll_s: the polling interval in seconds.

        Returns:
            The outcomes, in the order of ``tasks``; a task that raised has ``error`` set and the
            others still ran.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release the workers (a no-op for :class:`InProcess`)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        """One line for logs and reports: the kind and the number of workers."""
        return self.kind if self.kind == "in-process" else f"{self.kind}, {self.workers} workers"


class InProcess(Executor):
    """Tasks one after another in this process, with this process's torch threads: the default."""

    def run(self, tasks, on_done=None, on_poll=None, poll_s=0.5):
        """Run the tasks here, in order (see :meth:`Executor.run`)."""
        out = []
        for t in tasks:
            o = _keyed(_call(t.fn, t.args, t.kwargs, None), t.key)
            out.append(o)
            if on_done is not None:
                on_done(o)
        return out


class ProcessPool(Executor):
    """``workers`` local processes (joblib's loky backend); each task gets ``cpu_count // workers`` threads.

    A worker that dies (killed, out of memory) breaks a loky pool, failing every task then in flight
    or queued; those tasks are run again one at a time on a fresh pool, so a task that kills its own
    worker is reported failed ("worker died") and the others still give their values.

    Args:
        workers: the number of worker processes (>= 1).
    """

    kind = "process pool"

    def __init__(self, workers: int) -> None:
        self.workers = check("workers", workers, Interval(int, 1, None))
        self.threads = max(1, (os.cpu_count() or 1) // self.workers)

    def _submit(self, task: Task) -> Any:
        from joblib.externals.loky import get_reusable_executor

        pool = get_reusable_executor(max_workers=self.workers)
        return pool.submit(_call, task.fn, task.args, task.kwargs, self.threads)

    def run(self, tasks, on_done=None, on_poll=None, poll_s=0.5):
        """Run the tasks on the pool (see :meth:`Executor.run`)."""
        died: set[int] = set()
        futures = {self._submit(t): i for i, t in enumerate(tasks)}
        out = _gather(tasks, futures, on_done, on_poll, poll_s, died)
        for i in sorted(died):  # isolate them: a task that kills its worker takes only itself down
            out[i] = _gather([tasks[i]], {self._submit(tasks[i]): 0}, None, on_poll, poll_s, set())[0]
            if on_done is not None:
                on_done(out[i])
        return out

    def close(self) -> None:
        """Nothing to release: loky's pool is reused across calls and shut down at exit."""


def _gather(
    tasks: Sequence[Task], futures: dict[Any, int], on_done, on_poll, poll_s: float, died: set[int]
) -> list[Outcome]:
    """Wait for ``concurrent.futures`` futures, calling ``on_done``/``on_poll`` in the driver.

    A future that failed because the pool broke (a worker died) is added to ``died`` and not reported
    to ``on_done``: the caller decides whether to run it again.
    """
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures.process import BrokenProcessPool

    out: list[Outcome] = [Outcome(t.key) for t in tasks]
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=poll_s, return_when=FIRST_COMPLETED)
        for f in done:
            i = futures[f]
            try:
                out[i] = _keyed(f.result(), tasks[i].key)
            except BrokenProcessPool as e:  # loky's TerminatedWorkerError is one too
                out[i] = Outcome(tasks[i].key, None, f"worker died: {type(e).__name__}: {e}")
                died.add(i)
                continue
            except Exception as e:  # the result could not be sent back (e.g. it does not pickle)
                out[i] = Outcome(tasks[i].key, None, f"{type(e).__name__}: {e}")
            if on_done is not None:
                on_done(out[i])
        if on_poll is not None and pending:
            on_poll()
    return out


class RayExecutor(Executor):
    """Tasks on a Ray cluster: ``address="local"`` starts a local instance, anything else joins that cluster.

    Args:
        address: ``"local"``, or the address of a running cluster (``"host:6379"``, ``"ray://host:10001"``,
            ``"auto"``).
        workers: with ``"local"``, the CPUs the local instance offers (default: all); ignored when joining.
    """

    kind = "ray"

    def __init__(self, address: str = "local", workers: int | None = None) -> None:
        try:
            import ray
        except ImportError as e:
            raise ImportError(
                "--cluster needs Ray, which is not installed: pip install 'ravine[cluster]'"
            ) from e
        if not isinstance(address, str) or not address.strip():
            raise ValueError(f"cluster must be 'local' or a Ray address such as 'host:6379', got {address!r}")
        if workers is not None:
            workers = check("workers", workers, Interval(int, 1, None))
        self._started = not ray.is_initialized()
        if self._started:
            opts: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address == "local":
                ray.init(num_cpus=workers, **opts)
            else:
                ray.init(address=address, **opts)
        self.address = address
        self.workers = int(ray.cluster_resources().get("CPU", 1))

    def run(self, tasks, on_done=None, on_poll=None, poll_s=0.5):
        """Run the tasks as Ray tasks with their CPU/GPU needs (see :meth:`Executor.run`)."""
        import ray

        remote = ray.remote(_call)
        refs = {
            remote.options(num_cpus=t.cpus, num_gpus=t.gpus, max_retries=0).remote(
                t.fn, t.args, t.kwargs, max(1, int(t.cpus))
            ): i
            for i, t in enumerate(tasks)
        }
        out: list[Outcome | None] = [None] * len(tasks)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=poll_s)
            for r in done:
                i = refs[r]
                try:
                    o = ray.get(r)
                except Exception as e:  # the worker died (ray.exceptions.WorkerCrashedError, ...)
                    o = Outcome("", None, f"{type(e).__name__}: {e}", "")
                out[i] = _keyed(o, tasks[i].key)
                if on_done is not None:
                    on_done(out[i])
            if on_poll is not None and pending:
                on_poll()
        return [o for o in out if o is not None]

    def close(self) -> None:
        """Shut Ray down if this executor started it (joining a running cluster leaves it running)."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False


def executor(workers: int | None = None, cluster: str | None = None) -> Executor:
    """The executor the ``--workers N`` / ``--cluster local|ADDRESS`` options ask for.

    Args:
        workers: ``None`` or 1 with no cluster: :class:`InProcess`; ``N > 1``: :class:`ProcessPool` of ``N``;
            with ``cluster="local"``: the CPUs of the local Ray instance.
        cluster: ``None`` (no Ray), ``"local"`` or a Ray address.

    Returns:
        An :class:`Executor`; close it (or use ``with``) when done.
    """
    if workers is not None:
        workers = check("workers", workers, Interval(int, 1, None))
    if cluster is not None:
        return RayExecutor(cluster, workers)
    if workers is None or workers == 1:
        return InProcess()
    return ProcessPool(workers)

