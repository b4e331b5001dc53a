"""Experiment ``clipping``: exploding gradients in a recurrent network, with and without clipping.

An Elman RNN (tanh, 64 units) on the copy/recall task with a long delay (5 symbols to reproduce
after 20 blank steps: 30 time steps of backpropagation through time), plain SGD at learning rates
high enough for the recurrent weights to enter the exploding-gradient regime (Pascanu et al. 2013).
Each (learning rate, seed) pair is trained twice: without clipping and with
``ravine.optim.clip_by_global_norm(1)`` first in the optimizer's chain (the harness's
``clip={"kind": "norm"}``; torch's ``clip_grad_norm_`` arithmetic).

Measured per run: the number of loss spikes (a batch loss above twice the median of the 20 before
it), divergence (the run stopped on a non-finite loss, or its final training loss on the full training
set is more than twice its initial one: it went up and did not come back), the final training loss,
and for clipped runs the fraction of steps clipped.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ravine.experiments.claims._common import (
    Planned,
    eval_columns,
    final_eval,
    pick,
    smooth,
    step_columns,
    train_all,
)
from ravine.experiments.claims._core import Check, Experiment, Progress, Store, Verdict, threshold_check
from ravine.experiments.claims._stats import count_spikes, num, ratio

NAME = "clipping"
TITLE = "Gradient clipping"
SECTION = "Gradient Clipping"
CLAIM = (
    "In deep or recurrent networks gradients can explode: one huge gradient produces a huge update that "
    "throws the model far from where it was, showing up as loss spikes or outright divergence. Clipping "
    "the global gradient norm bounds every update and keeps training stable; how often it clips shows "
    "when the gradients were large."
)

COPY = {"length": 5, "delay": 20}
MAX_NORM = 1.0


def plan(size: str) -> list[Planned]:
    from ravine.experiments import TrainConfig

    steps = pick(size, 8, 300, 1500)
    lrs = pick(size, (1.0,), (1.0, 2.0), (0.5, 1.0, 2.0))
    seeds = pick(size, (0,), (0, 1, 2), (0, 1, 2, 3))
    out = []
    for lr in lrs:
        for seed in seeds:
            for clip in (None, {"kind": "norm", "max_norm": MAX_NORM}):
                cfg = TrainConfig(
                    data="copy",
                    data_kwargs=COPY,
                    model="rnn",
                    model_kwargs={"hidden": 64},
                    optimizer="sgd",
                    optimizer_kwargs={"lr": lr},
                    clip=clip,
                    steps=steps,
                    batch_size=32,
                    eval_every=max(1, steps // 10),
                    seed=seed,
                )
                out.append(Planned(f"{'clip' if clip else 'noclip'}-lr{lr:g}-s{seed}", cfg))
    return out


def diverged(initial: float, final: float, status: str) -> bool:
    """True when a run stopped on a non-finite loss (status ``"diverged"``) or ended with a training
    loss more than twice its initial one (or non-finite)."""
    if status == "diverged" or not np.isfinite(final):
        return True
    return bool(final > 2.0 * initial)


def execute(size: str, store: Store, progress: Progress) -> tuple[dict[str, Any], list[str], list[str], str]:
    from ravine.plots.experiments import Panel, Series, plot_panels

    planned = plan(size)
    runs = train_all(store, NAME, planned, progress)
    per_run = {}
    for p in planned:
        r = runs[p.label]
        st = step_columns(r)
        per_run[p.label] = {
            "clip": p.config.clip is not None,
            "lr": p.config.optimizer_kwargs["lr"],
            "diverged": diverged(float(eval_columns(r)["train_loss"][0]), final_eval(r, "train_loss"), r.status),
            "spikes": count_spikes(st["loss"]),
            "final_train_loss": final_eval(r, "train_loss"),
            "clip_rate": float(np.mean(st["clipped"])) if p.config.clip is not None else 0.0,
            "max_grad_norm": float(np.nanmax(st["grad_norm"])) if len(st["grad_norm"]) else float("nan"),
        }

    def agg(clip: bool, key: str, fn=np.mean) -> float:
        vals = [num(v[key]) for v in per_run.values() if v["clip"] == clip]
        return float(fn(vals)) if vals else float("nan")

    def med_final(clip: bool) -> float:
        vals = [num(v["final_train_loss"]) for v in per_run.values() if v["clip"] == clip]
        return float(np.median([x if np.isfinite(x) else np.inf for x in vals]))

    measured = {
        "max_norm": MAX_NORM,
        "steps": planned[0].config.steps,
        "runs": per_run,
        "divergence_rate_noclip": agg(False, "diverged"),
        "divergence_rate_clip": agg(True, "diverged"),
        "spikes_per_run_noclip": agg(False, "spikes"),
        "spikes_per_run_clip": agg(True, "spikes"),
        "median_final_loss_noclip": med_final(False),
        "median_final_loss_clip": med_final(True),
        "clip_rate": agg(True, "clip_rate"),
    }
    measured["divergence_rate_reduction"] = measured["divergence_rate_noclip"] - measured["divergence_rate_clip"]
    measured["spike_reduction"] = measured["spikes_per_run_noclip"] - measured["spikes_per_run_clip"]
    fin_nc = measured["median_final_loss_noclip"]
    measured["final_loss_clip_over_noclip"] = (
        0.0 if np.isinf(fin_nc) else ratio(measured["median_final_loss_clip"], fin_nc)
    )
    # Figure: the highest learning rate, seed 0, both arms.
    lr_hi = max(v["lr"] for v in per_run.values())
    nc, cl = runs[f"noclip-lr{lr_hi:g}-s0"], runs[f"clip-lr{lr_hi:g}-s0"]
    snc, scl = step_columns(nc), step_columns(cl)
    win = max(1, len(scl["step"]) // 15)
    fig = store.figure_path(NAME, "clipping")
    plot_panels(
        fig,
        [
            Panel(
                "batch loss",
                "step",
                "loss",
                [
                    Series("no clipping", snc["step"], snc["loss"], color=3),
                    Series(f"clip norm {MAX_NORM:g}", scl["step"], scl["loss"], color=2),
                ],
                logy=True,
            ),
            Panel(
                "gradient norm before clipping",
                "step",
                "||g||",
                [
                    Series("no clipping", snc["step"], snc["grad_norm"], color=3, alpha=0.8),
                    Series(f"clip norm {MAX_NORM:g}", scl["step"], scl["grad_norm"], color=2, alpha=0.8),
                ],
                logy=True,
                hlines=[(MAX_NORM, "max_norm")],
            ),
            Panel(
                f"clip rate ({win}-step average)",
                "step",
                "fraction of steps clipped",
                [
                    Series(
                        f"lr {v['lr']:g} {k.split('-')[-1]}",
                        step_columns(runs[k])["step"],
                        smooth(step_columns(runs[k])["clipped"].astype(float), win),
                        color=i,
                    )
                    for i, (k, v) in enumerate(x for x in per_run.items() if x[1]["clip"])
                ],
                ylim=(-0.02, 1.02),
            ),
        ],
        suptitle=f"Elman RNN on copy (delay {COPY['delay']}), SGD; curves: lr {lr_hi:g}, seed 0",
    )
    reading = (
        f"Without clipping {measured['divergence_rate_noclip'] * 100:.0f}% of the runs diverged "
        "(final training loss above twice the initial one, or non-finite), "
        f"with clipping {measured['divergence_rate_clip'] * 100:.0f}%; spikes per run "
        f"{measured['spikes_per_run_noclip']:.1f} vs {measured['spikes_per_run_clip']:.1f}. Median final training loss "
        f"{num(measured['median_final_loss_noclip']):.3g} without "
        f"vs {num(measured['median_final_loss_clip']):.3g} with clipping; "
        f"clipping acted on {measured['clip_rate'] * 100:.0f}% of the steps. Clipping bounds the step, it does not "
        "make the RNN solve the long-delay copy task (its loss stays near chance, ln 8 = 2.08)."
    )
    return measured, [str(fig)], [r.id for r in runs.values()], reading


def verdict(measured: dict[str, Any]) -> Verdict:
    """Four checks:

    - validity: the clipped runs clipped at all (clip rate > 0), i.e. large gradients occurred;
      otherwise the setting did not explode and the claim is untested (inconclusive);
    - loss spikes per run, without minus with clipping >= 1 (grey zone ±0.5);
    - divergence rate without clipping minus with clipping >= 0.5 (grey zone ±0.15);
    - median final training loss with / without clipping < 1 (grey zone ±0.05; a non-finite
      unclipped median counts as ratio 0).
    """
    rate = num(measured["clip_rate"])
    checks = [
        Check(
            "clip_rate",
            rate,
            "> 0 (validity)",
            "supported" if rate > 0 else "inconclusive",
            "fraction of steps the clipped runs clipped",
        ),
        threshold_check(
            "spike_reduction",
            num(measured["spike_reduction"]),
            ">=",
            1.0,
            "loss spikes per run, without minus with clipping",
            margin=0.5,
        ),
        threshold_check(
            "divergence_rate_reduction",
            num(measured["divergence_rate_reduction"]),
            ">=",
            0.5,
            "fraction of runs that diverged, without minus with clipping",
            margin=0.15,
        ),
        threshold_check(
            "final_loss_clip_over_noclip",
            num(measured["final_loss_clip_over_noclip"]),
            "<",
            1.0,
            "median final training loss, with / without clipping",
            margin=0.05,
        ),
    ]
    bad = [c.name for c in checks if c.status != "supported"]
    expl = (
        "Unclipped runs spike and diverge where clipped ones stay stable."
        if not bad
        else "The contrast is not clear here: " + ", ".join(bad) + "."
    )
    return Verdict.from_checks(checks, expl)


EXPERIMENT = Experiment(NAME, TITLE, CLAIM, SECTION, execute, verdict)
