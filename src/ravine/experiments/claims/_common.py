"""Helpers the claim experiments share: planning runs, training them through the harness, reading them.

Every training run goes through :func:`ravine.experiments.train` into the experiment's store
(``<root>/<experiment>/runs/<label>-<hash>``), so a finished run is reused and an interrupted one
resumes from its last checkpoint. The directory name carries a readable label and the first 10 hex
digits of the config's hash, so changing a config never collides with an old run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ravine._validation import Options, check
from ravine.experiments.claims._core import SIZES, IncompleteExperiment, Progress, Store
from ravine.parallel import InProcess, Outcome, Task


@dataclass
class Planned:
    """A run to do: a readable ``label``, its ``TrainConfig`` and an optional optimizer factory."""

    label: str
    config: Any  # ravine.experiments.TrainConfig
    factory: Callable[[Any], Any] | None = None


def run_dir_for(store: Store, experiment: str, planned: Planned) -> Path:
    from ravine.experiments.runs import config_hash

    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in planned.label)
    return store.run_dir(experiment, f"{safe}-{config_hash(planned.config, 10)}")


def train_all(store: Store, experiment: str, plan: Sequence[Planned], progress: Progress) -> dict[str, Any]:
    """Train (or reuse) every planned run on ``store.executor``; returns ``{label: Run}``.

    Runs already finished are reused; the others are trained as independent tasks (in order in this
    process by default, or on a process pool or Ray cluster, :mod:`ravine.parallel`): a run that
    raises does not stop the others, and once all have finished :class:`IncompleteExperiment` names
    every failed run and its error. One progress bar counts optimizer steps over the whole plan
    (reused runs advance it at once; runs trained elsewhere advance it as their metrics are written).
    """
    from ravine.experiments import Run, train

    labels = [p.label for p in plan]
    if len(set(labels)) != len(labels):
        raise ValueError(f"run labels must be unique within an experiment, got {labels}")
    dirs = {p.label: run_dir_for(store, experiment, p) for p in plan}
    todo = [p for p in plan if not _done(dirs[p.label])]
    steps = {f"run {p.label}": p.config.steps for p in todo}
    here = isinstance(store.executor, InProcess)
    total = sum(p.config.steps for p in plan)
    with progress.bar(total, f"{experiment}: {len(plan)} runs") as bar:
        reused = total - sum(steps.values())
        bar.update(reused)
        finished = [0]

        def advance(to: int) -> None:
            bar.update(max(0, min(total, to) - bar.n))

        def on_done(outcome: Outcome) -> None:  # a failed or diverged run still counts as done for the bar
            finished[0] += steps[outcome.key]
            advance(reused + finished[0])

        def on_poll() -> None:
            running = sum(_last_step(dirs[p.label]) for p in todo if not _done(dirs[p.label]))
            advance(reused + finished[0] + running)

        tasks = [
            Task(
                f"run {p.label}",
                train,
                (p.config, dirs[p.label]),
                {
                    "resume": True,
                    "progress": False,
                    "optimizer_factory": p.factory,
                    **({"on_step": lambda rec: bar.update(1)} if here else {}),
                },
                cpus=float(p.config.world_size),  # a DDP run's ranks are processes of its own
                gpus=float(p.config.world_size) if str(p.config.device).startswith("cuda") else 0.0,
            )
            for p in todo
        ]
        outcomes = store.executor.run(tasks, on_done=on_done, on_poll=on_poll)
    failed = {o.key.removeprefix("run "): o.error or "" for o in outcomes if not o.ok}
    if failed:
        raise IncompleteExperiment(experiment, failed, len(plan))
    return {p.label: Run(dirs[p.label]) for p in plan}


def _done(run_dir: Path) -> bool:
    from ravine.experiments import Run

    try:
        return (run_dir / "status.json").exists() and Run(run_dir).done
    except ValueError:  # a status file being replaced right now reads as not done yet
        return False


def _last_step(run_dir: Path) -> int:
    """The step of the last complete record in ``metrics.jsonl`` (0 if none yet): progress of a run elsewhere."""
    path = run_dir / "metrics.jsonl"
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 4096))
            lines = f.read().splitlines()
    except OSError:
        return 0
    for line in reversed(lines[1:] if len(lines) > 1 else lines):
        try:
            return int(json.loads(line).get("step", 0))
        except (ValueError, AttributeError):
            continue
    return 0


def step_columns(run: Any) -> dict[str, np.ndarray]:
    """The per-step records of a run as numpy columns (``step``, ``loss``, ``lr``, ``grad_norm``, ...)."""
    return run.columns("step")


def eval_columns(run: Any) -> dict[str, np.ndarray]:
    """The evaluation records of a run as numpy columns (``step``, ``train_loss``, ``test_loss``, ...)."""
    return run.columns("eval")


def final_eval(run: Any, key: str) -> float:
    """The last evaluation's ``key``; NaN when the run diverged before its last evaluation or has none.

    A diverged run stops early, so its last evaluation is not a final result: it counts as NaN, and
    verdicts treat NaN as "did not train".
    """
    if run.status == "diverged":
        return float("nan")
    ev = run.evals
    if not ev:
        return float("nan")
    v = ev[-1].get(key)
    return float("nan") if v is None else float(v)


def smooth(y: Sequence[float], k: int) -> np.ndarray:
    """Trailing moving average over ``k`` steps (``k <= 1``: unchanged); NaN-free input assumed."""
    y = np.asarray(y, dtype=float)
    if k <= 1 or len(y) < 2:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    out = np.empty_like(y)
    for i in range(len(y)):
        lo = max(0, i + 1 - k)
        out[i] = (c[i + 1] - c[lo]) / (i + 1 - lo)
    return out


def pick(size: str, tiny: Any, quick: Any, full: Any) -> Any:
    """The value for ``size`` (``"tiny"``, ``"quick"`` or ``"full"``)."""
    check("size", size, Options(SIZES))
    return {"tiny": tiny, "quick": quick, "full": full}[size]
