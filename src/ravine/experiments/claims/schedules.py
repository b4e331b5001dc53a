"""Experiment ``schedules``: constant vs linear warmup + cosine vs WSD, and WSD's branch-off.

A tiny decoder-only transformer (Pre-LN, 2 layers, d=32) as a character-level language model on
CPython's documentation, Adam at a peak learning rate, ``T`` steps, the same short linear warmup ``W``
for every schedule (so the decay is the only difference):

- ``constant``: ``linear_warmup(peak, W)``, then the peak until the end;
- ``cosine``: ``warmup_cosine(peak, W, T)`` (to 0 at ``T``);
- ``wsd``: ``wsd(peak, W, 0.8 T - W, 0.2 T)``: warmup, stable, linear decay over the last 20%;
- ``cosine-half``: ``warmup_cosine(peak, W, T/2)``: a full cosine run of half the length;
- ``wsd-branch``: the WSD run's checkpoint at ``0.4 T`` (still in its stable phase) continued with a
  decay over ``0.1 T`` (``TrainConfig.init_from`` with ``restore="all"``: weights, Adam state, data
  order and RNG), ending at ``T/2``: a model for half the budget, branched off the long run.

Measured: the final test loss (fixed evaluation blocks of the held-out text) of each.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ravine.experiments.claims._common import (
    Planned,
    eval_columns,
    final_eval,
    pick,
    run_dir_for,
    step_columns,
    train_all,
)
from ravine.experiments.claims._core import Experiment, Progress, Store, Verdict, threshold_check
from ravine.experiments.claims._stats import num, ratio

NAME = "schedules"
TITLE = "Learning-rate schedules: the three phases of training"
SECTION = "Learning Rate Schedules: The Three Phases of Training, Linear Warmup, Cosine Decay"
CLAIM = (
    "Training has three phases: a short linear warmup, a long phase at a high learning rate, and a decay. "
    "Ending with a decay of the learning rate reaches a lower loss than keeping it constant; "
    "warmup-stable-decay (WSD) reaches what a full cosine run reaches, and because its stable phase does not "
    "depend on the run's length, decaying from a mid-run checkpoint gives a shorter run's result without "
    "training it from scratch."
)

PEAK = 4e-3
CHARS = {"block_size": 32, "eval_blocks": 256}
MODEL = {"d_model": 32, "n_layer": 2, "n_head": 4, "norm": "pre"}
ORDER = ("constant", "cosine", "wsd", "cosine-half", "wsd-branch")
COLORS = {"constant": 0, "cosine": 1, "wsd": 2, "cosine-half": 4, "wsd-branch": 3}


def plan(size: str, store: Store) -> tuple[list[Planned], list[Planned]]:
    """``(first, second)``: the runs from scratch, then the branch (which needs the WSD run's checkpoint)."""
    from ravine.experiments import TrainConfig

    total = pick(size, 20, 1000, 4000)
    warm = max(1, total // 20)
    half = total // 2
    branch_at = (4 * total) // 10
    base = dict(
        data="chars",
        data_kwargs=CHARS,
        model="transformer",
        model_kwargs=MODEL,
        optimizer="adam",
        optimizer_kwargs={"lr": PEAK},
        batch_size=16,
        seed=0,
        eval_every=max(1, total // 20),
    )
    sched = {
        "constant": ("linear_warmup", {"peak": PEAK, "warmup_steps": warm}, total),
        "cosine": ("warmup_cosine", {"peak": PEAK, "warmup_steps": warm, "total_steps": total}, total),
        "wsd": (
            "wsd",
            {
                "peak": PEAK,
                "warmup_steps": warm,
                "stable_steps": (8 * total) // 10 - warm,
                "decay_steps": total - (8 * total) // 10,
            },
            total,
        ),
        "cosine-half": ("warmup_cosine", {"peak": PEAK, "warmup_steps": warm, "total_steps": half}, half),
    }
    first = []
    for name, (s, kw, steps) in sched.items():
        extra = {"checkpoint_every": max(1, total // 10), "keep_checkpoints": 0} if name == "wsd" else {}
        first.append(Planned(name, TrainConfig(**base, schedule=s, schedule_kwargs=kw, steps=steps, **extra)))
    wsd_dir = run_dir_for(store, NAME, first[2]).resolve()
    branch = Planned(
        "wsd-branch",
        TrainConfig(
            **base,
            schedule="wsd",
            schedule_kwargs={
                "peak": PEAK,
                "warmup_steps": warm,
                "stable_steps": branch_at - warm,
                "decay_steps": half - branch_at,
            },
            steps=half,
            init_from={"run": str(wsd_dir), "step": branch_at, "restore": "all"},
        ),
    )
    return first, [branch]


def execute(size: str, store: Store, progress: Progress) -> tuple[dict[str, Any], list[str], list[str], str]:
    from ravine.plots.experiments import Panel, Series, plot_panels

    first, second = plan(size, store)
    runs = train_all(store, NAME, first, progress)
    runs.update(train_all(store, NAME, second, progress))
    final = {k: final_eval(runs[k], "test_loss") for k in ORDER}
    total = first[0].config.steps
    measured = {
        "peak_lr": PEAK,
        "total_steps": total,
        "branch_at": second[0].config.init_from["step"],
        "final_test_loss": final,
        "cosine_over_constant": ratio(final["cosine"], final["constant"]),
        "wsd_over_constant": ratio(final["wsd"], final["constant"]),
        "wsd_rel_gap_to_cosine": ratio(num(final["wsd"]) - num(final["cosine"]), final["cosine"]),
        "branch_rel_gap_to_cosine_half": ratio(
            num(final["wsd-branch"]) - num(final["cosine-half"]), final["cosine-half"]
        ),
    }
    fig = store.figure_path(NAME, "schedules")
    s_lr, s_loss = [], []
    for k in ORDER:
        st, ev = step_columns(runs[k]), eval_columns(runs[k])
        style = "--" if k in ("cosine-half", "wsd-branch") else "-"
        s_lr.append(Series(k, st["step"], st["lr"], color=COLORS[k], linestyle=style))
        s_loss.append(Series(k, ev["step"], ev["test_loss"], color=COLORS[k], linestyle=style, marker="."))
    lows = [num(v) for v in final.values() if np.isfinite(num(v))]
    ylim = (min(lows) - 0.05, min(lows) + 0.6) if lows else None
    plot_panels(
        fig,
        [
            Panel("learning rate", "step", "learning rate", s_lr, vlines=[(measured["branch_at"], "branch point")]),
            Panel(
                "held-out loss",
                "step",
                "test loss (nats/char)",
                s_loss,
                ylim=ylim,
                vlines=[(measured["branch_at"], "branch point")],
            ),
        ],
        suptitle=f"Tiny transformer on text, peak lr {PEAK:g}, {total} steps",
    )
    reading = (
        "Final test loss: " + ", ".join(f"{k} {num(final[k]):.4f}" for k in ORDER) + ". "
        f"The decay phase alone (WSD vs constant, identical until {8 * total // 10} steps): "
        f"{num(measured['wsd_over_constant']):.3f}; cosine/constant = {num(measured['cosine_over_constant']):.3f}"
        + (
            " (cosine lowers the rate during the whole run, which costs progress when the model is far from "
            f"converged, as a tiny model after {total} steps is)"
            if num(measured["cosine_over_constant"]) >= 1
            else ""
        )
        + f". WSD is "
        f"{100 * num(measured['wsd_rel_gap_to_cosine']):+.2f}% from cosine at the full length, "
        f"and the branch decayed from step {measured['branch_at']} of the WSD run is "
        f"{100 * num(measured['branch_rel_gap_to_cosine_half']):+.2f}% from a "
        "cosine run trained for the shorter length from scratch."
    )
    return measured, [str(fig)], [r.id for r in runs.values()], reading


def verdict(measured: dict[str, Any]) -> Verdict:
    """Three checks on final test losses:

    - WSD / constant < 0.99: the decay phase helps by at least 1% (grey zone ±0.005). WSD and constant
      are the same run until WSD's decay starts, so this isolates the effect of decaying; cosine vs
      constant (reported, not checked) also changes the rate during the whole run;
    - (WSD - cosine) / cosine <= 0.02 (WSD reaches cosine's loss within 2%; grey zone ±0.01);
    - (branch - half-length cosine) / half-length cosine <= 0.02 (grey zone ±0.01).
    """
    checks = [
        threshold_check(
            "wsd_over_constant",
            num(measured["wsd_over_constant"]),
            "<",
            0.99,
            "final test loss, WSD (decay over the last 20%) / constant",
            margin=0.005,
        ),
        threshold_check(
            "wsd_rel_gap_to_cosine",
            num(measured["wsd_rel_gap_to_cosine"]),
            "<=",
            0.02,
            "(WSD - cosine) / cosine, same length",
            margin=0.01,
        ),
        threshold_check(
            "branch_rel_gap_to_cosine_half",
            num(measured["branch_rel_gap_to_cosine_half"]),
            "<=",
            0.02,
            "(WSD branch - cosine of the branch's length) / cosine",
            margin=0.01,
        ),
    ]
    bad = [c.name for c in checks if c.status != "supported"]
    expl = (
        "Decay beats a constant rate, WSD matches cosine, and the mid-run branch matches a shorter cosine run."
        if not bad
        else "Not all of the claim held at this size: " + ", ".join(bad) + "."
    )
    return Verdict.from_checks(checks, expl)


EXPERIMENT = Experiment(NAME, TITLE, CLAIM, SECTION, execute, verdict)
