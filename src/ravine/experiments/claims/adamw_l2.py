"""Experiment ``adamw-vs-l2``: Loshchilov & Hutter's learning-rate x weight-decay grids.

An MLP (64-128-10) on digits with 85% of the images held out (270 training images, so the network
overfits and regularization matters), mini-batches of 32, linear warmup + cosine decay of the learning
rate (as in the paper). Two optimizers on the same grid of learning rates ``lr`` and weight decays
``wd`` (log-spaced, half a decade apart):

- ``adam_l2``: Adam with coupled L2, ``g <- g + wd * w`` before the moments (torch's
  ``Adam(weight_decay=wd)``): the decay passes through ``1 / sqrt(v_hat)``;
- ``adamw`` with ``decay_convention="decoupled"`` (the paper's Algorithm 2): ``w <- w - lr * adam_step
  - eta_t * wd * w`` with the schedule multiplier ``eta_t = lr_t / peak`` (``lr_peak`` passed explicitly),
  so the decay follows the schedule's shape but not the base learning rate.

The score of a run is its final test error (the paper's metric), ties broken by the test loss:
``score = (1 - test_acc) + 0.001 * test_loss`` (one misclassified test image moves the error by
1/1527 = 6.5e-4, more than the tie-breaker usually does). For each learning rate the best weight
decay (lowest score, refined by a parabola in
``log10 wd`` through the best grid point and its neighbours) is found; the slope of ``log10 best_wd``
against ``log10 lr`` (least squares) measures how much the good weight decay moves with the learning
rate: ~0 = separable hyperparameters, clearly non-zero = a diagonal valley.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ravine.experiments.claims._common import Planned, final_eval, pick, train_all
from ravine.experiments.claims._core import Check, Experiment, Progress, Store, Verdict, threshold_check
from ravine.experiments.claims._stats import argmin_log_interp, linear_fit, num

NAME = "adamw-vs-l2"
TITLE = "AdamW: weight decay done right"
SECTION = "AdamW: Weight Decay Done Right"
CLAIM = (
    "With Adam, L2 regularization added to the gradient is rescaled by the adaptive denominator, so it is "
    "not weight decay; decoupling the decay from the gradient (AdamW) fixes this. Loshchilov and Hutter "
    "found AdamW's good region in the learning-rate x weight-decay plane separable (the best weight decay "
    "is nearly independent of the learning rate) while Adam+L2's lies on a diagonal."
)

METHODS = ("adam_l2", "adamw")
MIN_WD_EFFECT = 0.005  # test error: half a percentage point (8 of the 1527 test images)
DATA = {"test_fraction": 0.85}
LABELS = {"adam_l2": "Adam + L2 (coupled)", "adamw": "AdamW (decoupled)"}


def grid(size: str) -> tuple[list[float], list[float]]:
    """``(learning rates, weight decays)`` of the grid for ``size``."""
    lrs = pick(size, [1e-3, 1e-2], list(10 ** np.array([-3.0, -2.5, -2.0])), list(10 ** np.arange(-3.5, -1.74, 0.25)))
    wds = pick(size, [1e-4, 1e-3, 1e-2], list(10 ** np.arange(-5.0, -1.4, 0.5)), list(10 ** np.arange(-5.5, -0.9, 0.5)))
    return [float(x) for x in lrs], [float(x) for x in wds]


def plan(size: str) -> list[Planned]:
    from ravine.experiments import TrainConfig

    lrs, wds = grid(size)
    steps = pick(size, 8, 400, 3000)
    seeds = pick(size, (0,), (0,), (0, 1))
    out = []
    for method in METHODS:
        for lr in lrs:
            for wd in wds:
                kw: dict[str, Any] = {"lr": lr, "weight_decay": wd}
                if method == "adamw":
                    kw["decay_convention"] = "decoupled"
                    kw["lr_peak"] = lr
                for seed in seeds:
                    cfg = TrainConfig(
                        data="digits",
                        model="mlp",
                        model_kwargs={"hidden": [128]},
                        optimizer=method,
                        optimizer_kwargs=kw,
                        steps=steps,
                        batch_size=32,
                        eval_every=0,
                        seed=seed,
                    )
                    out.append(Planned(f"{method}-lr{lr:.3g}-wd{wd:.3g}-s{seed}", cfg))
    return out


def best_wd_fit(lrs: list[float], wds: list[float], z: np.ndarray) -> dict[str, Any]:
    """Best weight decay per learning rate (rows of ``z``: one per lr, columns: one per wd) and the
    least-squares slope of ``log10 best_wd`` on ``log10 lr``, with Pearson's r and the edge count."""
    best, edge = [], []
    for i in range(len(lrs)):
        b, at_edge = argmin_log_interp(wds, z[i])
        best.append(b)
        edge.append(at_edge)
    slope, icpt, r = linear_fit(np.log10(lrs), np.log10(best))
    return {
        "best_wd": best,
        "at_edge": edge,
        "slope": slope,
        "intercept": icpt,
        "r": r,
        "interior_fraction": float(1 - np.mean(edge)) if edge else float("nan"),
    }


def execute(size: str, store: Store, progress: Progress) -> tuple[dict[str, Any], list[str], list[str], str]:
    from ravine.plots.experiments import Heatmap, plot_heatmaps

    lrs, wds = grid(size)
    planned = plan(size)
    runs = train_all(store, NAME, planned, progress)
    measured: dict[str, Any] = {
        "lrs": lrs,
        "wds": wds,
        "steps": planned[0].config.steps,
        "metric": "test error + 0.001 test loss",
    }
    maps = []
    for method in METHODS:
        z = np.full((len(lrs), len(wds)), np.nan)
        for i, lr in enumerate(lrs):
            for j, wd in enumerate(wds):
                vals = [
                    (1.0 - final_eval(runs[p.label], "test_acc")) + 0.001 * final_eval(runs[p.label], "test_loss")
                    for p in planned
                    if p.config.optimizer == method
                    and p.config.optimizer_kwargs["lr"] == lr
                    and p.config.optimizer_kwargs["weight_decay"] == wd
                ]
                z[i, j] = float(np.mean(vals))
        fit = best_wd_fit(lrs, wds, z)
        measured[method] = {"score": z, **fit, "best_score": float(np.nanmin(z))}
        # heatmap: x = lr, y = wd, so the best-wd path reads as a curve across learning rates
        maps.append(
            Heatmap(
                f"{LABELS[method]}: slope {fit['slope']:.2f}",
                z.T,
                lrs,
                wds,
                "learning rate",
                "weight decay",
                points=list(zip(lrs, fit["best_wd"])),
                fit=(fit["slope"], fit["intercept"]) if np.isfinite(fit["slope"]) else None,
            )
        )
    measured["abs_slope_adamw"] = abs(num(measured["adamw"]["slope"]))
    measured["abs_slope_adam_l2"] = abs(num(measured["adam_l2"]["slope"]))
    measured["slope_gap"] = measured["abs_slope_adam_l2"] - measured["abs_slope_adamw"]
    measured["interior_fraction"] = min(
        measured["adamw"]["interior_fraction"], measured["adam_l2"]["interior_fraction"]
    )
    # How much the best weight decay improves on (almost) none, per method: mean over learning rates of
    # score(smallest wd) - best score. Below MIN_WD_EFFECT the optimum is not identifiable from noise.
    for method in METHODS:
        z = np.asarray(measured[method]["score"], dtype=float)
        measured[method]["wd_effect"] = float(np.nanmean(z[:, 0] - np.nanmin(z, axis=1)))
    measured["wd_effect"] = min(measured["adamw"]["wd_effect"], measured["adam_l2"]["wd_effect"])
    fig = store.figure_path(NAME, "lr_wd_grids")
    plot_heatmaps(
        fig,
        maps,
        "test error (+ 0.001 x test loss)",
        suptitle=f"MLP on digits, {measured['steps']} steps: best weight decay (dots) per learning rate",
    )
    reading = (
        f"Slope of log10(best weight decay) against log10(learning rate): AdamW (decoupled) "
        f"{num(measured['adamw']['slope']):.2f} (r = {num(measured['adamw']['r']):.2f}), Adam+L2 "
        f"{num(measured['adam_l2']['slope']):.2f} (r = {num(measured['adam_l2']['r']):.2f}). "
        f"Best test error: AdamW {measured['adamw']['best_score']:.3g}, "
        f"Adam+L2 {measured['adam_l2']['best_score']:.3g}. {measured['interior_fraction'] * 100:.0f}% "
        "of the rows (worst method) have their best weight decay inside the "
        "grid; a best value on the grid's edge is only a bound. The best weight decay improved the test error over "
        f"almost none by {measured['adam_l2']['wd_effect']:.4f} (Adam+L2) "
        f"and {measured['adamw']['wd_effect']:.4f} (AdamW) on "
        "average: when that is a few test images, the position of the optimum is noise."
    )
    return measured, [str(fig)], [r.id for r in runs.values()], reading


def verdict(measured: dict[str, Any]) -> Verdict:
    """Four checks:

    - validity: weight decay matters at all: the best weight decay improves the test error over the
      smallest one by >= MIN_WD_EFFECT on average (for both methods); otherwise inconclusive;
    - validity: at least half the learning rates have their best weight decay inside the grid, for
      both methods; otherwise the slopes are bounds, not measurements, and the verdict is
      inconclusive whatever the other two checks say;
    - |slope| for AdamW <= 0.4 (grey zone ±0.15): separable;
    - |slope| for Adam+L2 minus |slope| for AdamW >= 0.4 (grey zone ±0.15): Adam+L2's optimum moves
      more with the learning rate (the diagonal).
    """
    effect = num(measured.get("wd_effect"))
    matters = Check(
        "wd_effect",
        effect,
        f">= {MIN_WD_EFFECT} (validity)",
        "supported" if effect >= MIN_WD_EFFECT else "inconclusive",
        "test error gained by the best weight decay over almost none (mean over lrs, worse method)",
    )
    interior = num(measured["interior_fraction"])
    valid = Check(
        "interior_fraction",
        interior,
        ">= 0.5 (validity)",
        "supported" if interior >= 0.5 else "inconclusive",
        "fraction of learning rates whose best weight decay is inside the grid (worse method)",
    )
    checks = [
        matters,
        valid,
        threshold_check(
            "abs_slope_adamw",
            num(measured["abs_slope_adamw"]),
            "<=",
            0.4,
            "|d log10 best_wd / d log10 lr| for AdamW (decoupled)",
            margin=0.15,
        ),
        threshold_check(
            "slope_gap", num(measured["slope_gap"]), ">=", 0.4, "|slope| Adam+L2 - |slope| AdamW", margin=0.15
        ),
    ]
    if matters.status != "supported":
        expl = (
            f"Weight decay changed the test error by only {effect:.4f} on average (threshold {MIN_WD_EFFECT}): "
            "on this task and budget its best value is not identifiable from noise, so the slopes ("
            + ", ".join(f"{c.name} = {c.value:.3g}" for c in checks[2:])
            + ") decide nothing."
        )
        return Verdict("inconclusive", checks, expl)
    if valid.status != "supported":
        # Optima on the grid's edge make the slopes bounds, not measurements: no verdict either way.
        expl = (
            "Too many best weight decays sit on the grid's edge (weight decay barely changed the test error at "
            "those learning rates), so the slopes are bounds, not measurements: "
            + ", ".join(f"{c.name} = {c.value:.3g}" for c in checks[2:])
            + "."
        )
        return Verdict("inconclusive", checks, expl)
    if all(c.status == "supported" for c in checks):
        expl = "AdamW's best weight decay barely moves with the learning rate while Adam+L2's does."
    else:
        expl = (
            "The measured slopes do not show the separable-vs-diagonal contrast clearly: "
            + ", ".join(f"{c.name} = {c.value:.3g} ({c.status})" for c in checks[2:])
            + "."
        )
    return Verdict.from_checks(checks, expl)


EXPERIMENT = Experiment(NAME, TITLE, CLAIM, SECTION, execute, verdict)
