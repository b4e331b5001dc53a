"""Experiment ``saddles``: a plateau is a saddle point; noise shortens it; training ends near a minimum.

A deep linear network ``x -> W_3 W_2 W_1 x`` (widths 64-8-8-10, no biases; Saxe et al. 2014), trained
on digits with cross-entropy by full-batch gradient descent from a small initialization
(``init_scale = 0.05`` times torch's default, so the weights start next to the origin, where every
gradient vanishes: a saddle point of the loss). The loss stays on a plateau near ``ln 10`` until the
weights have grown along the direction of negative curvature, then drops.

Measured along the noiseless run of seed 0, at its checkpoints (every ``steps / 10`` steps): the
Hessian of the mean training loss over the whole training set, dense (``P = 656`` parameters, float64,
:func:`ravine.curvature.hessian_index`), its largest and smallest eigenvalues and its *index* (the
fraction of eigenvalues below ``-RTOL * max |lambda|``: curvature a thousand times weaker than the
strongest direction counts as flat); the same index from the stochastic Lanczos quadrature nodes of
:func:`ravine.curvature.spectral_density` (the estimate that scales to networks whose Hessian cannot be
built), and the smallest eigenvalue by Lanczos (:func:`ravine.curvature.hessian_eigenvalues` with
``which="smallest"``).

Escape from the plateau, over seeds: the first evaluation (every ``steps / 50`` steps) at which the
training loss is ``ESCAPE_DROP = 0.5`` nats below its value at step 0, for three arms at the same
learning rate: full-batch gradient descent; the same with isotropic Gaussian noise of std
``NOISE_STD = 0.01`` added to every gradient coordinate (perturbed gradient descent: Ge et al. 2015,
Jin et al. 2017; the noise alone moves a weight by ``lr * 0.01 * sqrt(100) = 0.03`` in 100 steps, about
ten times the initial weights, and its loss floor after the escape is negligible); and mini-batch SGD
(batches of 16: SGD's own noise, which near the origin is as small as the gradient itself, since every
per-sample gradient passes through the other layers' small weights). A run that never escapes counts
as ``steps + 1``. The verdict uses the injected noise; the mini-batch arm is reported.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from ravine.experiments.claims._common import Planned, eval_columns, pick, train_all
from ravine.experiments.claims._core import Experiment, Progress, Store, Verdict, threshold_check
from ravine.experiments.claims._stats import num, ratio
from ravine.optim.base import Transform

NAME = "saddles"
TITLE = "Saddle points, not local minima, slow training down"
SECTION = "Saddle Points: The Real Problem"
CLAIM = (
    "In high dimensions most critical points with high loss are saddle points, not local minima: for a point "
    "to be a local minimum the curvature must be positive in every one of millions of directions, which is "
    "exponentially unlikely. Near a saddle the gradient is tiny and training crawls across a plateau until it "
    "finds the direction of negative curvature; noise helps it get off."
)

MODEL = {"hidden": [8, 8], "init_scale": 0.05}
LR = 0.3
NOISE_STD = 0.01
BATCH = 16
ESCAPE_DROP = 0.5  # nats below the loss at step 0
PLATEAU_BAND = 0.1  # a checkpoint within this many nats of the initial loss is on the plateau
RTOL = 1e-3  # eigenvalues within RTOL * max|lambda| of zero count as zero (flat)
ARMS = ("gd", "gd+noise", f"sgd-b{BATCH}")


def _noisy_sgd_transform(lr: float, std: float, seed: int, model: Any) -> Transform:
    import ravine.optim as ro

    return ro.chain(ro.add_noise(std**2, 0.0, seed), ro.sgd(lr=lr))  # constant variance std^2


def _noisy_sgd(lr: float, std: float, seed: int) -> Callable[[Any], Transform]:
    """The harness's ``optimizer_factory`` for SGD with injected gradient noise (a picklable partial, so
    a process pool or a Ray cluster can train the run too)."""
    return functools.partial(_noisy_sgd_transform, lr, std, seed)


def plan(size: str) -> list[Planned]:
    from ravine.experiments import TrainConfig

    steps = pick(size, 10, 500, 1500)
    seeds = pick(size, (0,), (0, 1, 2), (0, 1, 2, 3, 4))
    out = []
    for arm in ARMS:
        for seed in seeds:
            base = TrainConfig(
                data="digits",
                model="deep_linear",
                model_kwargs=MODEL,
                optimizer="sgd",
                optimizer_kwargs={"lr": LR},
                steps=steps,
                batch_size=None,
                eval_every=max(1, steps // 50),
                seed=seed,
            )
            factory = None
            if arm == "gd" and seed == seeds[0]:
                base = base.replace(checkpoint_every=max(1, steps // pick(size, 2, 10, 15)), keep_checkpoints=0)
            elif arm == "gd+noise":
                base = base.replace(optimizer="sgd+gradient_noise", optimizer_kwargs={"lr": LR, "noise_std": NOISE_STD})
                factory = _noisy_sgd(LR, NOISE_STD, seed)
            elif arm != "gd":
                base = base.replace(batch_size=BATCH)
            out.append(Planned(f"{arm}-s{seed}", base, factory))
    return out


def escape_step(steps: np.ndarray, train_loss: np.ndarray, total: int) -> int:
    """The first evaluated step whose training loss is ``ESCAPE_DROP`` below the first one; ``total + 1``
    when there is none (the run never left the plateau)."""
    steps = np.asarray(steps)
    loss = np.asarray(train_loss, dtype=float)
    hit = np.flatnonzero(loss <= loss[0] - ESCAPE_DROP)
    return int(steps[hit[0]]) if hit.size else total + 1


def slq_index(nodes: list, weights: list, threshold: float) -> float:
    """The index from stochastic Lanczos quadrature: the mean over probes of the quadrature weight on
    nodes below ``-threshold`` (each probe's weights sum to 1, so this estimates the fraction of
    eigenvalues below ``-threshold``)."""
    fr = [float(np.sum(np.asarray(w)[np.asarray(th) < -threshold])) for th, w in zip(nodes, weights)]
    return float(np.mean(fr)) if fr else float("nan")


def curvature_at(model: Any, data: tuple[Any, Any], dense: bool) -> dict[str, Any]:
    """The training loss's Hessian at ``model``: extreme eigenvalues by Lanczos, the index by stochastic
    Lanczos quadrature and, with ``dense``, the exact spectrum's extremes and index (``P`` HVPs)."""
    import torch

    from ravine.curvature import HessianOperator, hessian_eigenvalues, hessian_index, spectral_density
    from ravine.experiments.data import cross_entropy

    op = HessianOperator(model, cross_entropy, data, dtype=torch.float64, cache_graph=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an unconverged value is still reported, with its residual
        both = hessian_eigenvalues(op, k=1, which="both", tol=1e-4, max_iter=400)
    hi, lo = float(both.values[0]), float(both.values[1])
    dens = spectral_density(op, num_iter=80, num_probes=2)
    out: dict[str, Any] = {
        "lambda_max": hi,
        "lambda_min": lo,
        "lanczos_residual": float(both.residuals.max()),
        "min_over_max": lo / hi if hi > 0 else float("nan"),
        "index_slq": slq_index(
            [n.numpy() for n in dens.nodes], [w.numpy() for w in dens.weights], RTOL * max(abs(hi), abs(lo))
        ),
    }
    if dense:
        idx = hessian_index(op, rtol=RTOL)
        lam = idx.eigenvalues.numpy()
        out.update(
            dense_lambda_max=float(lam.max()),
            dense_lambda_min=float(lam.min()),
            dense_min_over_max=float(lam.min() / lam.max()) if lam.max() > 0 else float("nan"),
            index=idx.index,
            num_negative=idx.num_negative,
            dim=idx.dim,
        )
    return out


def execute(size: str, store: Store, progress: Progress) -> tuple[dict[str, Any], list[str], list[str], str]:
    from ravine.plots.escape import plot_grid
    from ravine.plots.experiments import Panel, Series

    planned = plan(size)
    runs = train_all(store, NAME, planned, progress)
    total = planned[0].config.steps
    per_run: dict[str, dict[str, Any]] = {}
    for p in planned:
        ev = eval_columns(runs[p.label])
        arm = p.label.rsplit("-s", 1)[0]
        per_run[p.label] = {
            "arm": arm,
            "seed": p.config.seed,
            "escape_step": escape_step(ev["step"], ev["train_loss"], total),
            "final_train_loss": float(ev["train_loss"][-1]),
        }
    escape = {arm: float(np.median([v["escape_step"] for v in per_run.values() if v["arm"] == arm])) for arm in ARMS}

    # curvature along the noiseless run of the first seed
    probe = next(p for p in planned if p.config.checkpoint_every)
    prun = runs[probe.label]
    ds = prun.load_dataset()
    data = (ds.x_train, ds.y_train)
    ev = eval_columns(prun)
    loss0 = float(ev["train_loss"][0])
    along = []
    for step in prun.checkpoints:
        loss = float(np.interp(step, ev["step"], ev["train_loss"]))
        along.append({"step": step, "train_loss": loss, "on_plateau": loss >= loss0 - PLATEAU_BAND})
    # the exact (dense) spectrum where the checks read it: the first and last checkpoints on the plateau
    # and the last one; the cheap estimates at every checkpoint
    on = [i for i, a in enumerate(along) if a["on_plateau"]]
    dense_at = {i for i in (on[:1] + on[-1:] + [len(along) - 1]) if along}
    for i, a in enumerate(along):
        a.update(
            store.cached(
                NAME,
                f"curvature-{prun.id}-{a['step']}-{i in dense_at}",
                lambda a=a, d=i in dense_at: curvature_at(prun.load_model(a["step"]), data, d),
            )
        )
    plateau = [a for a in along if a["on_plateau"] and "index" in a]
    end = along[-1] if along else None

    def med(rows: list[dict[str, Any]], key: str) -> float:
        return float(np.median([r[key] for r in rows])) if rows else float("nan")

    measured = {
        "model": MODEL,
        "lr": LR,
        "noise_std": NOISE_STD,
        "batch": BATCH,
        "steps": total,
        "seeds": len({p.config.seed for p in planned}),
        "initial_loss": loss0,
        "runs": per_run,
        "median_escape_step": escape,
        "escape_ratio_noise": ratio(escape["gd+noise"], escape["gd"]),
        "escape_ratio_minibatch": ratio(escape[f"sgd-b{BATCH}"], escape["gd"]),
        "along": along,
        "plateau_checkpoints": len(plateau),
        "plateau_min_over_max": med(plateau, "dense_min_over_max"),
        "plateau_index": med(plateau, "index"),
        "end_index": end["index"] if end else float("nan"),
        "end_min_over_max": end["dense_min_over_max"] if end else float("nan"),
    }
    measured["end_over_plateau_index"] = ratio(measured["end_index"], measured["plateau_index"])

    # figure
    series = []
    for i, arm in enumerate(ARMS):
        for j, label in enumerate(k for k, v in per_run.items() if v["arm"] == arm):
            e = eval_columns(runs[label])
            series.append(Series(arm if j == 0 else "_", e["step"], e["train_loss"], color=i, alpha=0.85))
    st = [a["step"] for a in along]
    dense = [a for a in along if "index" in a]
    f = store.figure_path(NAME, "saddles")
    plot_grid(
        f,
        [
            Panel(
                "training loss: plateau and escape",
                "step",
                "training loss (nats)",
                series,
                hlines=[(loss0 - ESCAPE_DROP, f"escaped: {ESCAPE_DROP:g} below the start")],
            ),
            Panel(
                "steps to escape the plateau",
                "seed",
                "first step 0.5 nats below the start",
                [
                    Series(
                        f"{arm} (median {escape[arm]:.0f})",
                        [v["seed"] for v in per_run.values() if v["arm"] == arm],
                        [v["escape_step"] for v in per_run.values() if v["arm"] == arm],
                        color=i,
                        linestyle="none",
                        marker="os^"[i],
                    )
                    for i, arm in enumerate(ARMS)
                ],
                hlines=[(total, "end of run")],
                ylim=(0, total * 1.08),
            ),
            Panel(
                "smallest / largest Hessian eigenvalue (gd, seed 0)",
                "step",
                "lambda_min / lambda_max",
                [
                    Series("Lanczos (which='both')", st, [a["min_over_max"] for a in along], color=0, marker="o"),
                    Series(
                        "dense Hessian",
                        [a["step"] for a in dense],
                        [a["dense_min_over_max"] for a in dense],
                        color=1,
                        marker="x",
                        linestyle="none",
                    ),
                ],
                hlines=[(0.0, "0 (a minimum has no negative eigenvalue)")],
            ),
            Panel(
                f"index: fraction of eigenvalues below -{RTOL:g} max|lambda|",
                "step",
                "index",
                [
                    Series("stochastic Lanczos quadrature", st, [a["index_slq"] for a in along], color=0, marker="o"),
                    Series(
                        "dense Hessian",
                        [a["step"] for a in dense],
                        [a["index"] for a in dense],
                        color=1,
                        marker="x",
                        linestyle="none",
                    ),
                ],
                ylim=(0, None),
            ),
        ],
        suptitle=f"deep linear net 64-8-8-10 on digits, init x{MODEL['init_scale']:g}, lr {LR:g}, "
        f"{total} steps, {measured['seeds']} seeds per arm",
        ncols=2,
    )
    pm, pi = num(measured["plateau_min_over_max"]), num(measured["plateau_index"])
    kind = "a saddle" if pm < 0 and pi > 0 else "no negative curvature there"
    end_step = end["step"] if end else "-"
    end_loss = end["train_loss"] if end else float("nan")
    reading = (
        f"On the plateau (checkpoints within {PLATEAU_BAND:g} nats of the initial loss {loss0:.3f}; the dense "
        f"spectrum at {len(plateau)} of them) the Hessian had lambda_min / lambda_max = "
        f"{pm:.2f} and index {pi:.3f} (median): {kind}. At the end (step {end_step}, loss {end_loss:.3f}) the index "
        f"was {num(measured['end_index']):.3f} and lambda_min / lambda_max {num(measured['end_min_over_max']):.3f}. "
        f"Median steps to leave the plateau: {escape['gd']:.0f} for gradient descent, {escape['gd+noise']:.0f} with "
        f"gradient noise of std {NOISE_STD:g} (ratio {num(measured['escape_ratio_noise']):.2f}), "
        f"{escape[f'sgd-b{BATCH}']:.0f} for SGD with batches of {BATCH} "
        f"(ratio {num(measured['escape_ratio_minibatch']):.2f}); {total + 1} means it never left within the run."
    )
    return measured, [str(f)], [r.id for r in runs.values()], reading


def verdict(measured: dict[str, Any]) -> Verdict:
    """Four checks (thresholds fixed before any run):

    - ``plateau_min_over_max``: on the plateau, lambda_min / lambda_max < -0.1 (grey zone ±0.05): negative
      curvature comparable with the positive one, a saddle and not a minimum;
    - ``plateau_index``: on the plateau, the index > 0.05 (grey zone ±0.02);
    - ``escape_ratio_noise``: median steps to escape, with injected noise / without, < 1 (grey zone ±0.1);
    - ``end_over_plateau_index``: index at the end / on the plateau < 0.25 (grey zone ±0.1): training ends
      much closer to a minimum than it started.
    """
    checks = [
        threshold_check(
            "plateau_min_over_max",
            num(measured["plateau_min_over_max"]),
            "<",
            -0.1,
            "on the plateau: smallest / largest Hessian eigenvalue",
            margin=0.05,
        ),
        threshold_check(
            "plateau_index", num(measured["plateau_index"]), ">", 0.05, "on the plateau: the index", margin=0.02
        ),
        threshold_check(
            "escape_ratio_noise",
            num(measured["escape_ratio_noise"]),
            "<",
            1.0,
            "median steps to escape the plateau, with gradient noise / without",
            margin=0.1,
        ),
        threshold_check(
            "end_over_plateau_index",
            num(measured["end_over_plateau_index"]),
            "<",
            0.25,
            "index at the end of training / on the plateau",
            margin=0.1,
        ),
    ]
    bad = [c.name for c in checks if c.status != "supported"]
    expl = (
        "The plateau sits at a saddle (negative curvature, positive index), noise leaves it sooner, and training "
        "ends where almost no direction curves down."
        if not bad
        else "Not all of it holds here: " + ", ".join(bad) + "."
    )
    dims = [a["dim"] for a in measured.get("along", []) if isinstance(a, dict) and "dim" in a]
    params = f"{dims[0]} parameters" if dims else "parameters"
    scale = (
        f"measured on a 3-layer deep linear network ({params}) on 1437 digits, {measured.get('seeds', '?')} "
        "seeds; a network this small has a Hessian that can be built densely, so the index is exact"
    )
    return Verdict.from_checks(checks, expl, scale)


EXPERIMENT = Experiment(NAME, TITLE, CLAIM, SECTION, execute, verdict)
