"""The pieces every claim experiment shares: verdicts, results, the experiment store, progress.

A claim experiment turns one sentence of the chapter into measurements on real training runs and a
verdict computed from those measurements. Nothing here knows about any particular experiment.

- :class:`Check` is one measured number compared with one threshold.
- :class:`Verdict` combines checks: ``"supported"`` when every check is supported, ``"not supported"``
  when at least one check fails, ``"inconclusive"`` otherwise (some check could not be decided, e.g.
  the effect is inside the noise the experiment itself measured). The rule is :func:`combine`.
- :class:`Result` is what an experiment returns: the verdict, the measurements (JSON-safe), the figures
  (PNG paths), the run ids it used, and how long it took. Results round-trip through JSON so a report
  can reuse an experiment that already finished.
- :class:`Store` lays out an experiment's files: ``root/<experiment>/runs/<run>/`` for the harness's run
  directories, ``figures/`` for PNGs, ``result.json`` written atomically when the experiment completes.
- :class:`Progress` wraps tqdm so experiments show bars in a terminal and stay silent in tests.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ravine import _io
from ravine._validation import Interval, Options, check
from ravine.parallel import Executor, InProcess

STATUSES = ("supported", "not supported", "inconclusive")
SIZES = ("tiny", "quick", "full")


def _check_status(status: str) -> str:
    return check("status", status, Options(STATUSES))


@dataclass
class Check:
    """One measured quantity compared with a threshold.

    ``value`` is the measurement, ``threshold`` a short human-readable rule (e.g. ``"< 0.5"``),
    ``status`` one of :data:`STATUSES`, ``note`` one sentence saying what was compared.
    """

    name: str
    value: float
    threshold: str
    status: str
    note: str = ""

    def __post_init__(self) -> None:
        _check_status(self.status)
        self.value = float(self.value)


def threshold_check(
    name: str,
    value: float,
    op: str,
    threshold: float,
    note: str = "",
    *,
    margin: float = 0.0,
) -> Check:
    """Compare ``value`` with ``threshold`` by ``op`` (``"<"``, ``"<="``, ``">"``, ``">="``).

    With ``margin > 0`` the comparison has a grey zone: a value within ``margin`` of the threshold
    (on either side) is ``"inconclusive"`` rather than passing or failing by a hair. A non-finite value
    is ``"inconclusive"`` (nothing was measured).
    """
    check("op", op, Options(("<", "<=", ">", ">=")))
    check("margin", margin, Interval(float, 0, None))
    rule = f"{op} {threshold:.4g}" + (f" (grey zone ±{margin:.3g})" if margin > 0 else "")
    v = float(value)
    if not math.isfinite(v):
        return Check(name, v, rule, "inconclusive", note)
    if margin > 0 and abs(v - threshold) <= margin:
        status = "inconclusive"
    else:
        ok = {"<": v < threshold, "<=": v <= threshold, ">": v > threshold, ">=": v >= threshold}[op]
        status = "supported" if ok else "not supported"
    return Check(name, v, rule, status, note)


def combine(checks: Iterable[Check]) -> str:
    """The verdict rule: all supported -> supported; any not supported -> not supported; else inconclusive.

    An empty list of checks is ``"inconclusive"`` (nothing was measured).
    """
    statuses = [c.status for c in checks]
    if not statuses:
        return "inconclusive"
    if all(s == "supported" for s in statuses):
        return "supported"
    if any(s == "not supported" for s in statuses):
        return "not supported"
    return "inconclusive"


@dataclass
class Verdict:
    """The outcome of a claim: status, the checks behind it, and a one-paragraph explanation.

    ``numbers`` maps each check's name to its measured value and ``thresholds`` to its rule; both are
    derived from ``checks`` so the table in the report and the checks cannot disagree. ``scale`` says
    where the verdict holds, from the measurements (e.g. ``"supported for N >= 3e4 (crossover between
    1e4 and 3e4)"``, or the one setting measured); empty when the experiment measures a single setting.
    """

    status: str
    checks: list[Check]
    explanation: str
    scale: str = ""

    def __post_init__(self) -> None:
        _check_status(self.status)

    @classmethod
    def from_checks(cls, checks: list[Check], explanation: str, scale: str = "") -> Verdict:
        """Build the verdict whose status is :func:`combine` of ``checks``."""
        return cls(combine(checks), list(checks), explanation, scale)

    @property
    def numbers(self) -> dict[str, float]:
        return {c.name: c.value for c in self.checks}

    @property
    def thresholds(self) -> dict[str, str]:
        return {c.name: c.threshold for c in self.checks}


@dataclass
class Result:
    """What an experiment returns and what the report shows."""

    name: str
    title: str
    claim: str
    size: str
    verdict: Verdict
    measurements: dict[str, Any]
    figures: list[str]
    runs: list[str]
    runtime_s: float
    reading: str = ""
    finished_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["measurements"] = jsonable(self.measurements)
        d["extra"] = jsonable(self.extra)
        d["verdict"]["checks"] = [jsonable(asdict(c)) for c in self.verdict.checks]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Result:
        v = d["verdict"]
        checks = [
            Check(c["name"], _num(c["value"]), c["threshold"], c["status"], c.get("note", "")) for c in v["checks"]
        ]
        verdict = Verdict(v["status"], checks, v["explanation"], v.get("scale", ""))
        fields = {k: d[k] for k in d if k != "verdict"}
        return cls(verdict=verdict, **fields)


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


def jsonable(x: Any) -> Any:
    """Convert numpy/torch scalars and arrays to plain Python; non-finite floats become ``None``."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, np.generic):
        return jsonable(x.item())
    if hasattr(x, "tolist") and callable(x.tolist):  # torch tensors
        return jsonable(x.tolist())
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    return x


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` (made JSON-safe by :func:`jsonable`) as JSON to ``path`` atomically."""
    return _io.write_json(path, jsonable(data), indent=1)


class Store:
    """Where an experiment's runs, figures and result live.

    Layout under ``root``::

        <experiment>/runs/<run>/     one harness run directory per training run
        <experiment>/figures/*.png
        <experiment>/cache/*.json    auxiliary measurements (timings, probes), reused on re-runs
        <experiment>/result.json     written atomically once the experiment has finished

    ``size`` is ``"quick"``, ``"full"`` or ``"tiny"`` (a test-only size: a few steps, to check the
    plumbing): the one setting that says how big the experiments run, read by
    :meth:`Experiment.run`. ``root`` defaults to ``report/<size>``, so the runs of one size never mix
    with another's (the report gives each size its own root too). ``executor``
    (:mod:`ravine.parallel`; default in-process) is where the experiments' training runs are trained:
    the runs, their ids and their files are the same whichever executor trains them.
    """

    def __init__(
        self, root: str | os.PathLike | None = None, size: str = "quick", executor: Executor | None = None
    ) -> None:
        self.size = check("size", size, Options(SIZES))
        self.root = Path("report") / size if root is None else Path(root)
        self.executor = InProcess() if executor is None else executor

    def experiment_dir(self, experiment: str) -> Path:
        return self.root / experiment

    def run_dir(self, experiment: str, run: str) -> Path:
        if not run or "/" in run or run.startswith("."):
            raise ValueError(f"run must be a plain directory name, got {run!r}")
        return self.experiment_dir(experiment) / "runs" / run

    def figure_path(self, experiment: str, name: str) -> Path:
        return self.experiment_dir(experiment) / "figures" / f"{name}.png"

    def result_path(self, experiment: str) -> Path:
        return self.experiment_dir(experiment) / "result.json"

    def load_result(self, experiment: str) -> Result | None:
        """The saved result of ``experiment`` at this store's size, or ``None`` if there is none."""
        path = self.result_path(experiment)
        if not path.exists():
            return None
        try:
            result = Result.from_json(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError):
            return None  # a result from an older layout: recompute it
        if result.size != self.size or not all(Path(f).exists() for f in result.figures):
            return None
        return result

    def save_result(self, result: Result) -> Path:
        return write_json_atomic(self.result_path(result.name), result.to_json())

    def cached(self, experiment: str, key: str, compute: Callable[[], Any]) -> Any:
        """Return the JSON value cached under ``key``, computing and saving it on first use."""
        path = self.experiment_dir(experiment) / "cache" / f"{key}.json"
        if path.exists():
            try:
                return json.loads(path.read_text())
            except ValueError:
                pass
        value = jsonable(compute())
        write_json_atomic(path, value)
        return value


class IncompleteExperiment(RuntimeError):
    """Training runs of an experiment failed, so it has no verdict (a verdict from partial data would mislead).

    ``failed`` maps each failed run's label to its error; the runs that succeeded are saved and reused
    when the experiment runs again.
    """

    def __init__(self, experiment: str, failed: dict[str, str], total: int) -> None:
        self.experiment = experiment
        self.failed = dict(failed)
        lines = "; ".join(f"{k}: {v}" for k, v in self.failed.items())
        super().__init__(
            f"{experiment} is incomplete: {len(self.failed)} of {total} training runs failed ({lines}); "
            "the others are saved: run it again to retry the failed ones"
        )


class Progress:
    """Progress bars (tqdm) that experiments open with :meth:`bar`; ``enabled=False`` silences them."""

    def __init__(self, enabled: bool = True, position: int = 0) -> None:
        self.enabled = enabled
        self.position = position

    @contextmanager
    def bar(self, total: int, desc: str) -> Iterator[Any]:
        from tqdm.auto import tqdm

        with tqdm(
            total=total,
            desc=desc,
            disable=not self.enabled,
            leave=False,
            position=self.position,
            dynamic_ncols=True,
        ) as bar:
            yield bar

    def write(self, text: str) -> None:
        if self.enabled:
            from tqdm.auto import tqdm

            tqdm.write(text)


def _training_seconds(store: Store, experiment: str, runs: list[str]) -> float:
    """Sum of the harness's cumulative training time (``status.json``'s ``wall``) over ``runs``: the
    training cost of an experiment, the same whether its runs were trained now or reused."""
    total = 0.0
    for rid in runs:
        path = store.run_dir(experiment, rid) / "status.json"
        try:
            total += float(json.loads(path.read_text()).get("wall", 0.0))
        except (OSError, ValueError, TypeError):
            continue
    return total


@dataclass(frozen=True)
class Experiment:
    """One of the chapter's claims as an experiment.

    ``execute(size, store, progress) -> (measurements, figures, runs, reading)`` trains and measures
    (``runs`` are the run directory names under ``store.run_dir(name, ...)``);
    ``verdict(measurements) -> Verdict`` is a pure function of the measurements (so it can be tested
    with synthetic numbers on both sides of every threshold).
    """

    name: str
    title: str
    claim: str
    section: str
    execute: Callable[..., tuple[dict[str, Any], list[str], list[str], str]]
    verdict: Callable[[dict[str, Any]], Verdict]

    def run(self, store: Store | None = None, progress: Progress | None = None, *, reuse: bool = True) -> Result:
        """Run the experiment at ``store.size`` (default: ``Store()``, quick, under ``report/quick``),
        or return its saved result when ``reuse`` and present.

        Training runs already completed in ``store`` are reused by the harness (resume), so an
        interrupted experiment continues where it stopped.
        """
        store = store or Store()
        progress = progress or Progress(enabled=False)
        if reuse:
            saved = store.load_result(self.name)
            if saved is not None:
                return saved
        t0, c0 = time.perf_counter(), time.process_time()
        measurements, figures, runs, reading = self.execute(store.size, store, progress)
        runtime, cpu = time.perf_counter() - t0, time.process_time() - c0
        measurements = jsonable(measurements)
        result = Result(
            name=self.name,
            title=self.title,
            claim=self.claim,
            size=store.size,
            verdict=self.verdict(measurements),
            measurements=measurements,
            figures=[str(f) for f in figures],
            runs=list(runs),
            runtime_s=runtime,
            reading=reading,
            finished_at=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            extra={"cpu_s": cpu, "training_s": _training_seconds(store, self.name, runs)},
        )
        store.save_result(result)
        return result
