"""Helpers the claim experiments share: planning runs, training them through the harness, reading them.

Every training run goes through :func:`ravine.experiments.train` into the experiment's store
(``<root>/<experiment>/runs/<label>-<hash>``), so a finished run is reused and an interrupted one
resumes from its last checkpoint. The directory name carries a readable label and the first 10 hex
digits of the config's hash, so changing a config never collides with an old run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ravine._validation import Options, check
from ravine.experiments.claims._core import SIZES, Progress, Store


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
    """Train (or reuse) every planned run in order; returns ``{label: Run}``.

    One progress bar counts optimizer steps over the whole plan (reused runs advance it at once).
    """
    from ravine.experiments import Run, train

    labels = [p.label for p in plan]
    if len(set(labels)) != len(labels):
        raise ValueError(f"run labels must be unique within an experiment, got {labels}")
    total = sum(p.config.steps for p in plan)
    runs: dict[str, Any] = {}
    with progress.bar(total, f"{experiment}: {len(plan)} runs") as bar:
        for p in plan:
            d = run_dir_for(store, experiment, p)
            if (d / "status.json").exists() and Run(d).done:
                runs[p.label] = Run(d)
                bar.update(p.config.steps)
                continue
            done_before = [0]

            def on_step(rec: dict[str, Any], done_before=done_before) -> None:
                bar.update(1)
                done_before[0] += 1

            run = train(p.config, d, resume=True, progress=False, on_step=on_step, optimizer_factory=p.factory)
            # steps before a resume point, or after a divergence, still count as done for the bar
            bar.update(max(0, p.config.steps - done_before[0]))
            runs[p.label] = run
    return runs


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
