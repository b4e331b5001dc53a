"""Experiment ``adamw-vs-l2``: Loshchilov & Hutter's learning-rate x weight-decay grids, on a task where
weight decay matters.

The task: an MLP (64-128-10) on digits with 85% of the images held out (270 training images), trained
long past fitting them (quick 360 steps, full 1500, mini-batches of 32: 43 to 180 epochs) under a
cosine decay of the learning rate from its peak (as in the paper). Unregularized, such a network
drives its logits up on the training images and its held-out cross-entropy rises with them; weight
decay is what holds it down. The score of a run is its final **test loss** (cross-entropy, nats; a
proper score that resolves what the test error on 1527 images quantizes away); the test error is
reported beside it. Whether weight decay matters is measured, not assumed: for each method and
learning rate, the best weight decay's test loss is compared with the smallest weight decay's, and
the gain is divided by its seed noise (see :func:`wd_effect`). Below 3 noise units the verdict is
inconclusive, whatever the slopes say.

The two optimizers on one grid of peak learning rates ``lr`` and weight decays ``lambda`` (log-spaced,
half a decade apart), with seeds:

- ``adam_l2``: Adam with coupled L2, ``g <- g + lambda * w`` before the moments (torch's
  ``Adam(weight_decay=lambda)``): the decay passes through ``1 / sqrt(v_hat)``. L2 has one convention;
- ``adamw`` in the paper's convention (Algorithm 2, ``decay_convention="decoupled"``): ``w <- w - lr_t *
  adam_step - eta_t * lambda * w`` with the schedule multiplier ``eta_t = lr_t / lr`` only, so the decay
  follows the schedule's shape but not the base learning rate.

Torch's convention (``torch.optim.AdamW(lr, weight_decay=wd)``: ``w <- w - lr_t * (adam_step + wd *
w)``) decays by ``lr_t * wd = eta_t * (lr * wd)`` per step: the run at ``(lr, wd)`` in torch's convention
*is* the run at ``(lr, lambda = lr * wd)`` in the paper's, step for step (the tests check this against
``torch.optim.AdamW``). So the one grid of AdamW runs is read in both conventions: the best torch
weight decay at each ``lr`` is ``best lambda / lr``, and its slope against ``lr`` is the paper
convention's slope minus one, exactly.

For each learning rate the best weight decay (lowest mean score over seeds, refined by a parabola in
``log10 wd`` through the best grid point and its neighbours) is found; the slope of ``log10 best_wd``
against ``log10 lr`` (least squares) measures how much the good weight decay moves with the learning
rate: ~0 = separable hyperparameters, clearly non-zero = a diagonal valley.
"""

from __future__ import annotations

import math
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
MIN_WD_Z = 3.0  # the best weight decay's gain over the smallest, in units of its seed noise
DATA = {"test_fraction": 0.85}
HIDDEN = [128]
LABELS = {"adam_l2": "Adam + L2 (coupled)", "adamw": "AdamW (paper: eta_t * lambda)"}


def grid(size: str) -> tuple[list[float], list[float]]:
    """``(learning rates, weight decays)`` of the grid for ``size``."""
    lrs = pick(size, [1e-3, 1e-2], list(10 ** np.array([-3.0, -2.5, -2.0])), list(10 ** np.arange(-3.5, -1.49, 0.25)))
    # evenly spaced in log10 (the heatmaps draw equal cells); the smallest is "almost none"
    wds = pick(
        size, [1e-4, 1e-3, 1e-2], list(10 ** np.arange(-4.0, -1.99, 0.5)), list(10 ** np.arange(-5.5, -1.49, 0.5))
    )
    return [float(x) for x in lrs], [float(x) for x in wds]


def plan(size: str) -> list[Planned]:
    """Every run of ``size``: method x learning rate x weight decay x seed."""
    from ravine.experiments import TrainConfig

    lrs, wds = grid(size)
    steps = pick(size, 8, 360, 1500)
    seeds = pick(size, (0, 1), (0, 1), (0, 1, 2))
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
                        data_kwargs=DATA,
                        model="mlp",
                        model_kwargs={"hidden": HIDDEN},
                        optimizer=method,
                        optimizer_kwargs=kw,
                        schedule="warmup_cosine",
                        schedule_kwargs={"peak": lr, "warmup_steps": 0, "total_steps": steps},
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


def wd_effect(scores: np.ndarray) -> dict[str, float]:
    """How much the best weight decay improves on the smallest, against the seeds' noise.

    ``scores[s, i, j]``: seed ``s``, learning rate ``i``, weight decay ``j`` (column 0 the smallest). For
    each learning rate the best column is the lowest mean over seeds; ``effect`` is the mean over learning
    rates of ``mean score(smallest) - mean score(best)``. The noise: ``sd``, the seeds' standard
    deviation pooled over every finite cell (``n_seeds - 1`` degrees of freedom each), makes the
    standard error of a difference of two cell means ``se = sd * sqrt(2 / n_seeds)``; ``z = effect /
    se`` (NaN with a single seed: no noise measured).

    Args:
        scores: The scores, shape ``(seeds, learning rates, weight decays)``; non-finite = a failed run.

    Returns:
        ``{"effect", "sd", "se", "z"}``.
    """
    z = np.asarray(scores, dtype=float)
    if z.ndim != 3:
        raise ValueError(f"scores must have shape (seeds, lrs, wds), got {z.shape}")
    with np.errstate(invalid="ignore"):
        mean = z.mean(axis=0)
    rows = [mean[i, 0] - np.nanmin(mean[i]) for i in range(mean.shape[0]) if np.isfinite(mean[i]).any()]
    effect = float(np.nanmean(rows)) if rows else float("nan")
    n = z.shape[0]
    if n < 2:
        return {"effect": effect, "sd": float("nan"), "se": float("nan"), "z": float("nan")}
    ok = np.isfinite(z).all(axis=0)
    var = z.var(axis=0, ddof=1)[ok]
    sd = float(math.sqrt(var.mean())) if var.size else float("nan")
    se = sd * math.sqrt(2.0 / n)
    return {"effect": effect, "sd": sd, "se": se, "z": effect / se if se > 0 else float("inf")}


def execute(size: str, store: Store, progress: Progress) -> tuple[dict[str, Any], list[str], list[str], str]:
    from ravine.plots.depth import plot_weight_decay
    from ravine.plots.experiments import Heatmap, plot_heatmaps

    lrs, wds = grid(size)
    planned = plan(size)
    runs = train_all(store, NAME, planned, progress)
    seeds = sorted({p.config.seed for p in planned})
    measured: dict[str, Any] = {
        "lrs": lrs,
        "wds": wds,
        "steps": planned[0].config.steps,
        "seeds": len(seeds),
        "metric": "final test loss (nats)",
        "task": f"MLP 64-{'-'.join(map(str, HIDDEN))}-10 on digits, test_fraction {DATA['test_fraction']}",
    }
    maps = []
    for method in METHODS:
        loss = np.full((len(seeds), len(lrs), len(wds)), np.nan)
        err = np.full_like(loss, np.nan)
        for p in planned:
            if p.config.optimizer != method:
                continue
            i = lrs.index(p.config.optimizer_kwargs["lr"])
            j = wds.index(p.config.optimizer_kwargs["weight_decay"])
            s = seeds.index(p.config.seed)
            loss[s, i, j] = final_eval(runs[p.label], "test_loss")
            err[s, i, j] = 1.0 - final_eval(runs[p.label], "test_acc")
        with np.errstate(invalid="ignore"):
            z = loss.mean(axis=0)
        fit = best_wd_fit(lrs, wds, z)
        per_seed = [best_wd_fit(lrs, wds, loss[s])["best_wd"] for s in range(len(seeds))]
        eff = wd_effect(loss)
        measured[method] = {
            "score": z,
            "score_by_seed": loss,
            "test_error": np.nanmean(err, axis=0) if np.isfinite(err).any() else err[0],
            **fit,
            "best_wd_by_seed": per_seed,
            "best_score": float(np.nanmin(z)) if np.isfinite(z).any() else float("nan"),
            "best_test_error": float(np.nanmin(np.nanmean(err, axis=0))) if np.isfinite(err).any() else float("nan"),
            "wd_effect": eff,
        }
        maps.append(
            Heatmap(
                f"{LABELS[method]}: slope {fit['slope']:.2f}",
                z.T,
                lrs,
                wds,
                "peak learning rate",
                "weight decay lambda",
                points=list(zip(lrs, fit["best_wd"])),
                fit=(fit["slope"], fit["intercept"]) if np.isfinite(fit["slope"]) else None,
            )
        )
    # torch's convention, read off the same AdamW runs: wd_torch = lambda / lr
    aw = measured["adamw"]
    torch_best = [b / lr for b, lr in zip(aw["best_wd"], lrs)]
    t_slope, _, t_r = linear_fit(np.log10(lrs), np.log10(torch_best))
    measured["adamw_torch_convention"] = {"best_wd": torch_best, "slope": t_slope, "r": t_r}
    measured["abs_slope_adamw"] = abs(num(aw["slope"]))
    measured["abs_slope_adam_l2"] = abs(num(measured["adam_l2"]["slope"]))
    measured["slope_gap"] = measured["abs_slope_adam_l2"] - measured["abs_slope_adamw"]
    measured["slope_adamw_torch_convention"] = t_slope
    measured["interior_fraction"] = min(aw["interior_fraction"], measured["adam_l2"]["interior_fraction"])
    measured["wd_effect_z"] = min(num(measured[m]["wd_effect"]["z"]) for m in METHODS)
    measured["wd_effect"] = min(num(measured[m]["wd_effect"]["effect"]) for m in METHODS)

    f1 = store.figure_path(NAME, "lr_wd_grids")
    plot_heatmaps(
        f1,
        maps,
        "final test loss (nats), mean over seeds",
        suptitle=f"MLP on 270 digits, {measured['steps']} steps, {len(seeds)} seeds: best weight decay (dots) per lr",
    )
    f2 = store.figure_path(NAME, "wd_trends")
    plot_weight_decay(
        f2,
        lrs,
        wds,
        {LABELS[m]: measured[m]["score_by_seed"] for m in METHODS},
        {
            "Adam+L2": (measured["adam_l2"]["best_wd"], np.array(measured["adam_l2"]["best_wd_by_seed"]).T),
            "AdamW paper": (aw["best_wd"], np.array(aw["best_wd_by_seed"]).T),
            "AdamW torch (lambda/lr)": (torch_best, np.array(aw["best_wd_by_seed"]).T / np.array(lrs)[:, None]),
        },
        notes={LABELS[m]: f"best wd's gain: {num(measured[m]['wd_effect']['z']):.1f}x seed noise" for m in METHODS},
        suptitle=f"Test loss against weight decay ({len(seeds)} seeds: mean, band) and the best weight decay per lr",
    )
    reading = (
        f"Slope of log10(best weight decay) against log10(peak learning rate): AdamW in the paper's convention "
        f"{num(aw['slope']):.2f} (r = {num(aw['r']):.2f}), the same runs in torch's convention "
        f"{num(t_slope):.2f}, Adam+L2 {num(measured['adam_l2']['slope']):.2f} "
        f"(r = {num(measured['adam_l2']['r']):.2f}). Best test loss: AdamW {aw['best_score']:.3f}, Adam+L2 "
        f"{measured['adam_l2']['best_score']:.3f} nats (best test error {aw['best_test_error']:.3f} and "
        f"{measured['adam_l2']['best_test_error']:.3f}). The best weight decay lowered the test loss over the "
        f"smallest by {num(measured['adam_l2']['wd_effect']['effect']):.3f} nats (Adam+L2, "
        f"{num(measured['adam_l2']['wd_effect']['z']):.1f}x its seed noise) and "
        f"{num(aw['wd_effect']['effect']):.3f} (AdamW, {num(aw['wd_effect']['z']):.1f}x). "
        f"{measured['interior_fraction'] * 100:.0f}% of the learning rates (worse method) have their best weight "
        "decay inside the grid; a best value on the grid's edge is only a bound."
    )
    return measured, [str(f1), str(f2)], [r.id for r in runs.values()], reading


def _scale(measured: dict[str, Any]) -> str:
    lrs, wds = measured.get("lrs") or [], measured.get("wds") or []
    if not lrs or not wds:
        return ""
    return (
        f"measured on {measured.get('task', 'the task')} ({measured.get('steps')} steps, "
        f"{measured.get('seeds')} seeds), peak lr {min(lrs):.2g} to {max(lrs):.2g}, weight decay "
        f"{min(wds):.2g} to {max(wds):.2g}; weight decay's gain over the smallest = "
        f"{num(measured.get('wd_effect_z')):.1f}x seed noise (worse method)"
    )


def verdict(measured: dict[str, Any]) -> Verdict:
    """Four checks:

    - validity: weight decay matters at all: the best weight decay's test-loss gain over the smallest
      is >= 3 times its seed noise (:func:`wd_effect`, the worse of the two methods); otherwise
      inconclusive;
    - validity: at least half the learning rates have their best weight decay inside the grid, for
      both methods; otherwise the slopes are bounds, not measurements, and the verdict is
      inconclusive whatever the other two checks say;
    - |slope| for AdamW (paper's convention) <= 0.4 (grey zone ±0.15): separable;
    - |slope| for Adam+L2 minus |slope| for AdamW >= 0.4 (grey zone ±0.15): Adam+L2's optimum moves
      more with the learning rate (the diagonal).
    """
    zval = num(measured.get("wd_effect_z"))
    matters = Check(
        "wd_effect_z",
        zval,
        f">= {MIN_WD_Z:g} (validity)",
        "supported" if zval >= MIN_WD_Z else "inconclusive",
        "test-loss gain of the best weight decay over the smallest / its seed noise (worse method)",
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
            "|d log10 best_wd / d log10 lr| for AdamW (paper's convention)",
            margin=0.15,
        ),
        threshold_check(
            "slope_gap", num(measured["slope_gap"]), ">=", 0.4, "|slope| Adam+L2 - |slope| AdamW", margin=0.15
        ),
    ]
    scale = _scale(measured)
    if matters.status != "supported":
        expl = (
            f"Weight decay's best value improved the test loss by only {zval:.1f}x its seed noise (threshold "
            f"{MIN_WD_Z:g}): on this task and budget its position is not identifiable from noise, so the slopes ("
            + ", ".join(f"{c.name} = {c.value:.3g}" for c in checks[2:])
            + ") decide nothing."
        )
        return Verdict("inconclusive", checks, expl, scale)
    if valid.status != "supported":
        # Optima on the grid's edge make the slopes bounds, not measurements: no verdict either way.
        expl = (
            "Too many best weight decays sit on the grid's edge, so the slopes are bounds, not measurements: "
            + ", ".join(f"{c.name} = {c.value:.3g}" for c in checks[2:])
            + "."
        )
        return Verdict("inconclusive", checks, expl, scale)
    if all(c.status == "supported" for c in checks):
        expl = "AdamW's best weight decay barely moves with the learning rate while Adam+L2's does."
    else:
        expl = (
            "The measured slopes do not show the separable-vs-diagonal contrast clearly: "
            + ", ".join(f"{c.name} = {c.value:.3g} ({c.status})" for c in checks[2:])
            + "."
        )
    return Verdict.from_checks(checks, expl, scale)


EXPERIMENT = Experiment(NAME, TITLE, CLAIM, SECTION, execute, verdict)
