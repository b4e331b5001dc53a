"""Experiment ``local-minima``: do different seeds find equally good minima, joined by low-loss paths?

The same network (an MLP with two hidden ReLU layers of 64 units) is trained on the bundled digits
from several seeds (SGD with momentum 0.9, lr 0.05, batches of 64; the seed sets the initialization
and the batch order, the split is shared). Measured:

- the spread of the final losses and accuracies across seeds (train and test sets);
- for every pair of solutions ``(a, b)``, the training loss along the straight line ``(1 - t) a + t b``
  (Goodfellow et al. 2015; :func:`ravine.landscape.interpolate`) and along a quadratic Bezier curve
  whose control point is fitted by SGD on ``E_t L(phi(t))`` (Garipov et al. 2018;
  :func:`ravine.landscape.fit_bezier`), and the barrier along each, by the max-endpoint convention
  ``max_t L(t) - max(L(a), L(b))`` (:func:`ravine.landscape.barrier` with ``reference="max"``).

Barriers are stated relative to the loss at initialization (mean over seeds, about ``ln 10``): a
barrier of 5% of it is a bump that training would have climbed over in its first steps.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from ravine.experiments.claims._common import Planned, final_eval, pick, train_all
from ravine.experiments.claims._core import Check, Experiment, Progress, Store, Verdict, threshold_check
from ravine.experiments.claims._stats import num

NAME = "local-minima"
TITLE = "Local minima: equally good, and connected"
SECTION = "Local Minima: Less Problematic Than Expected"
CLAIM = (
    "Local minima are less problematic than once feared: in a large network, training from different "
    "starting points ends in different minima that are about equally good, and those minima are not "
    "isolated: a path of low loss joins them even where the straight line between them climbs a barrier."
)

HIDDEN = [64, 64]
OPTIMIZER = {"lr": 0.05, "momentum": 0.9}
BATCH = 64
FIT = {"lr": 0.05, "momentum": 0.9, "batch_size": 128}
# Verdict settings, chosen before the first run.
CV_MAX, CV_MARGIN = 0.15, 0.05  # std / mean of the final test loss across seeds
ACC_RANGE_MAX, ACC_RANGE_MARGIN = 0.02, 0.01  # max - min of the final test accuracy
BARRIER_REL_MAX, BARRIER_REL_MARGIN = 0.05, 0.025  # curve barrier / loss at init
TRAINED_FRACTION = 0.1  # validity: every seed's final train loss below this fraction of the initial one


def plan(size: str) -> list[Planned]:
    from ravine.experiments import TrainConfig

    steps = pick(size, 8, 1000, 3000)
    seeds = pick(size, 2, 4, 8)
    out = []
    for seed in range(seeds):
        cfg = TrainConfig(
            data="digits",
            model="mlp",
            model_kwargs={"hidden": HIDDEN, "activation": "relu"},
            optimizer="sgd",
            optimizer_kwargs=dict(OPTIMIZER),
            steps=steps,
            batch_size=BATCH,
            eval_every=max(1, steps // 10),
            seed=seed,
        )
        out.append(Planned(f"seed{seed}", cfg))
    return out


def _paths(runs: dict[str, Any], labels: list[str], size: str) -> dict[str, Any]:
    """Line and fitted-curve profiles of the training loss for every pair of solutions."""
    import torch

    from ravine.experiments.train import loss_fn
    from ravine.landscape import barrier, evaluate_curve, fit_bezier, interpolate

    n_t = pick(size, 5, 21, 41)
    fit_steps = pick(size, 5, 300, 1000)
    first = runs[labels[0]]
    x, y = first.load_dataset().eval_data("train")
    models = {k: runs[k].load_model() for k in labels}
    probe = models[labels[0]]
    out: dict[str, Any] = {"t": np.linspace(0, 1, n_t).tolist(), "fit_steps": fit_steps, "pairs": {}}
    with torch.random.fork_rng(devices=[]):
        for i, j in itertools.combinations(range(len(labels)), 2):
            a, b = models[labels[i]], models[labels[j]]
            line = interpolate(probe, loss_fn, (x, y), a, b, steps=n_t)
            curve = fit_bezier(probe, loss_fn, (x, y), a, b, steps=fit_steps, seed=1000 * i + j, **FIT)
            along = evaluate_curve(probe, loss_fn, (x, y), curve, steps=n_t)
            out["pairs"][f"{labels[i]}-{labels[j]}"] = {
                "line": line.loss.tolist(),
                "curve": along.loss.tolist(),
                "line_barrier": barrier(line, reference="max"),
                "curve_barrier": barrier(along, reference="max"),
                "distance": float(line.directions["distance"]),
                "bend": curve.bend,
            }
    return out


def execute(size: str, store: Store, progress: Progress) -> tuple[dict[str, Any], list[str], list[str], str]:
    from ravine.experiments.runs import config_hash
    from ravine.plots.minima import plot_connectivity

    planned = plan(size)
    runs = train_all(store, NAME, planned, progress)
    labels = [p.label for p in planned]
    per_seed = {}
    for p in planned:
        r = runs[p.label]
        per_seed[p.label] = {
            "seed": p.config.seed,
            "init_train_loss": float(r.evals[0]["train_loss"]) if r.evals else math.nan,
            **{k: final_eval(r, k) for k in ("train_loss", "test_loss", "train_acc", "test_acc")},
        }
    key = "paths-" + config_hash({"runs": [runs[k].id for k in labels], "fit": FIT, "size": size}, 10)
    paths = store.cached(NAME, key, lambda: _paths(runs, labels, size))

    col = {k: np.array([num(v[k]) for v in per_seed.values()]) for k in next(iter(per_seed.values()))}
    init = float(np.mean(col["init_train_loss"]))
    pairs = paths["pairs"]
    line_b = np.array([num(v["line_barrier"]) for v in pairs.values()])
    curve_b = np.array([num(v["curve_barrier"]) for v in pairs.values()])
    test_mean = float(np.mean(col["test_loss"]))
    test_std = float(np.std(col["test_loss"], ddof=1)) if len(col["test_loss"]) > 1 else math.nan
    measured = {
        "seeds": len(planned),
        "steps": planned[0].config.steps,
        "n_train": int(len(runs[labels[0]].load_dataset().eval_data("train")[0])),
        "hidden": HIDDEN,
        "runs": per_seed,
        "init_train_loss": init,
        "final_train_loss_max": float(np.max(col["train_loss"])),
        "train_loss_mean": float(np.mean(col["train_loss"])),
        "test_loss_mean": test_mean,
        "test_loss_std": test_std,
        "test_loss_cv": test_std / test_mean if test_mean > 0 else math.nan,
        "test_acc_mean": float(np.mean(col["test_acc"])),
        "test_acc_range": float(np.ptp(col["test_acc"])),
        "paths": paths,
        "pairs": len(pairs),
        "line_barrier_max": float(np.max(line_b)) if len(line_b) else math.nan,
        "line_barrier_median": float(np.median(line_b)) if len(line_b) else math.nan,
        "curve_barrier_max": float(np.max(curve_b)) if len(curve_b) else math.nan,
        "barrier_convention": "max_t L(t) - max(L(a), L(b)), training loss on the whole training set",
    }
    measured["line_barrier_rel_max"] = measured["line_barrier_max"] / init
    measured["curve_barrier_rel_max"] = measured["curve_barrier_max"] / init
    measured["pairs_with_line_barrier"] = int(np.sum(line_b / init > BARRIER_REL_MAX))

    seeds = [v["seed"] for v in per_seed.values()]
    fig = store.figure_path(NAME, "local_minima")
    plot_connectivity(
        fig,
        paths["t"],
        {k: v["line"] for k, v in pairs.items()},
        {k: v["curve"] for k, v in pairs.items()},
        seeds,
        col["train_loss"],
        col["test_loss"],
        col["test_acc"],
        init_loss=init,
        threshold=BARRIER_REL_MAX * init,
        suptitle=f"MLP {HIDDEN} on digits, SGD with momentum, {len(planned)} seeds, {len(pairs)} pairs",
    )
    reading = (
        f"{len(planned)} seeds of an MLP {HIDDEN} trained {planned[0].config.steps} steps reach training "
        f"losses of at most {measured['final_train_loss_max']:.3g} nats (from {init:.2f} at init); their test "
        f"losses are {test_mean:.3f} ± {test_std:.3f} nats (std/mean {measured['test_loss_cv']:.2f}) and their "
        f"test accuracies span {measured['test_acc_range'] * 100:.1f} points around "
        f"{measured['test_acc_mean'] * 100:.1f}%. "
        f"Along the straight line between two solutions the training loss rises by up to "
        f"{measured['line_barrier_max']:.3g} nats above the worse endpoint "
        f"(median {measured['line_barrier_median']:.3g}; "
        f"{measured['pairs_with_line_barrier']} of {len(pairs)} pairs above 5% of the initial loss); along the "
        f"fitted Bezier curves the largest barrier is {measured['curve_barrier_max']:.3g} nats "
        f"({measured['curve_barrier_rel_max'] * 100:.1f}% of the initial loss)."
    )
    return measured, [str(fig)], [r.id for r in runs.values()], reading


def verdict(measured: dict[str, Any]) -> Verdict:
    """Four checks (thresholds chosen before the first run):

    - validity: every seed trained (final training loss below 10% of the initial one); otherwise the
      minima were not reached and the claim is untested (inconclusive);
    - the final test loss varies little across seeds: std / mean < 0.15 (grey zone ±0.05);
    - the final test accuracies span < 2 points (grey zone ±1 point);
    - a low-loss path joins every pair: the largest barrier along the fitted Bezier curves is < 5% of
      the loss at initialization (grey zone ±2.5%).
    """
    init = num(measured["init_train_loss"])
    worst = num(measured["final_train_loss_max"])
    trained = math.isfinite(worst) and worst < TRAINED_FRACTION * init
    checks = [
        Check(
            "final_train_loss_max",
            worst,
            f"< {TRAINED_FRACTION:g} x initial loss (validity)",
            "supported" if trained else "inconclusive",
            "largest final training loss over seeds (nats)",
        ),
        threshold_check(
            "test_loss_cv",
            num(measured["test_loss_cv"]),
            "<",
            CV_MAX,
            "std / mean of the final test loss across seeds",
            margin=CV_MARGIN,
        ),
        threshold_check(
            "test_acc_range",
            num(measured["test_acc_range"]),
            "<",
            ACC_RANGE_MAX,
            "max - min of the final test accuracy across seeds",
            margin=ACC_RANGE_MARGIN,
        ),
        threshold_check(
            "curve_barrier_rel_max",
            num(measured["curve_barrier_rel_max"]),
            "<",
            BARRIER_REL_MAX,
            "largest barrier along the fitted Bezier curves / loss at init",
            margin=BARRIER_REL_MARGIN,
        ),
    ]
    if not trained:  # no minima were reached: the other checks measure nothing about the claim
        checks = checks[:1] + [
            Check(c.name, c.value, c.threshold, "inconclusive", c.note + " (not decided: the seeds did not train)")
            for c in checks[1:]
        ]
    line_rel = num(measured.get("line_barrier_rel_max"))
    bad = [c.name for c in checks if c.status != "supported"]
    line_txt = (
        f"the straight lines between them climb up to {line_rel * 100:.0f}% of the initial loss"
        if math.isfinite(line_rel)
        else "the straight lines were not measured"
    )
    if not bad:
        expl = (
            f"The seeds end in about equally good minima, and although {line_txt}, "
            "a fitted curve joins every pair at low loss."
        )
    else:
        failing = "; ".join(f"{c.note} = {c.value:.3g} ({c.status})" for c in checks if c.status != "supported")
        curve_rel = num(measured.get("curve_barrier_rel_max"))
        expl = (
            f"Not all of it holds here: {failing}. Along the paths, {line_txt}, the fitted curves up to "
            f"{curve_rel * 100:.1f}%."
        )
    scale = (
        f"measured on an MLP {measured.get('hidden', HIDDEN)} on {measured.get('n_train', '?')} digits, "
        f"{measured.get('seeds', '?')} seeds, {measured.get('pairs', '?')} pairs"
    )
    return Verdict.from_checks(checks, expl, scale)


EXPERIMENT = Experiment(NAME, TITLE, CLAIM, SECTION, execute, verdict)
