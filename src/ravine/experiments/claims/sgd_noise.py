"""Experiment ``sgd-noise``: does gradient noise carry runs out of sharp minima and off saddle points?

Three measurements, each with and without noise at the *same* learning rate:

1. **Sharp vs flat basin (2D).** On the ``sharp_flat`` surface of :mod:`ravine.surfaces` (a sharp
   minimum, Hessian eigenvalues ~44, next to a flat one, ~1.5, of nearly equal depth), many runs of
   gradient descent (``lr = 0.01``) start inside the sharp basin (uniformly in a disc of radius 0.1
   around the sharp minimum), each with its own noise sequence (:func:`ravine.simulate.run`, one row
   per run). The noise's standard deviation is fixed *in advance* from Kramers' escape rate, not
   tuned: gradient descent with gradient noise ``sigma`` is the Langevin equation at temperature
   ``T = lr sigma^2 / 2``; ``T`` is chosen so that the Kramers-Langer mean escape time from the sharp
   minimum, ``2 pi / |lambda_s| sqrt(|det H_s| / det H_min) exp(dE / T)`` (``H_s`` the Hessian at the
   saddle between the basins, ``lambda_s`` its negative eigenvalue, ``dE`` the barrier), is one fifth
   of the run's duration ``lr * steps``. Where a run ends is read by *quenching*: noiseless gradient
   descent from its last point until it settles, then the nearest known minimum. Measured: the
   fraction of runs that end in the flat basin, with minus without noise.
2. **Saddle (2D).** On ``saddle`` (``f = x^2 - y^2``), runs start on the stable manifold ``y = 0``
   (the surface's default start); exact gradient descent has no ``y`` component there and converges to
   the saddle. Measured: the fraction of runs that escape (``|y| >= 1``) within the run, and when.
3. **A real network.** A one-hidden-layer MLP on digits trained with SGD at one learning rate, full
   batch (no gradient noise) vs mini-batches of 8 (SGD's own noise), several seeds, the same number of
   steps: the final sharpness ``lambda_max`` of the training loss's Hessian on the whole training set
   (:func:`ravine.curvature.hessian_eigenvalues`) and the test loss. Full-batch gradient descent is
   expected to sharpen until ``lambda_max`` reaches about ``2 / lr`` (Cohen et al. 2021); SGD's noise
   is expected to keep it in flatter regions (Keskar et al. 2017; Jastrzebski et al. 2019). The test
   loss is reported, not checked (generalization is the ``sharp-flat`` experiment's question).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ravine.experiments.claims._common import Planned, eval_columns, final_eval, pick, train_all
from ravine.experiments.claims._core import Experiment, Progress, Store, Verdict, threshold_check
from ravine.experiments.claims._stats import num, ratio

NAME = "sgd-noise"
TITLE = "SGD's noise escapes sharp minima and saddle points"
SECTION = "Stochastic Gradient Descent (SGD)"
CLAIM = (
    "SGD's noise is not a bug. It is a feature. Stochastic gradient noise helps escape sharp local minima and "
    "saddle points."
)

LR_2D = 0.01  # the sharp_flat surface's suggested gradient-descent rate (lr * 44 = 0.44: stable in both basins)
START_RADIUS = 0.1  # starts uniformly in this disc around the sharp minimum (its basin is ~0.3 wide)
ESCAPE_FRACTION_OF_RUN = 0.2  # Kramers mean escape time from the sharp minimum = this fraction of the run
QUENCH_STEPS = 2000  # noiseless steps (time 20 at lr 0.01) to read which basin a run ended in
BASIN_RADIUS = 0.05  # a quenched point within this distance of a minimum is in its basin
SADDLE_LR = 0.05  # the saddle surface's suggested rate
SADDLE_NOISE = 0.1  # gradient-noise std on the saddle (20x below the gradient at the start)
SADDLE_ESCAPE = 1.0  # escaped once |y| >= this
NET_LR = 0.2  # SGD rate of the network runs (2 / lr = 10 is full-batch GD's stability threshold)
NET_BATCH = 8
NET_MODEL = {"hidden": [32]}


# ----------------------------------------------------------------------------------------------- 2D
def kramers_noise(surface: Any, lr: float, steps: int) -> dict[str, float]:
    """The gradient-noise std that makes the Kramers-Langer mean escape time from the surface's global
    (sharp) minimum over its saddle equal to ``ESCAPE_FRACTION_OF_RUN * lr * steps``.

    Returns ``{"T", "sigma", "barrier", "rate_prefactor", "escape_time", "run_time"}``.
    """
    import torch

    m = next(m for m in surface.minima if m.kind == "global")
    s = surface.saddles[0]
    h_min = surface.hessian(torch.tensor([m.x, m.y], dtype=torch.float64))
    h_s = surface.hessian(torch.tensor([s.x, s.y], dtype=torch.float64))
    lam_s = torch.linalg.eigvalsh(h_s)
    barrier = s.value - m.value
    prefactor = float(
        abs(lam_s[0]) / (2 * math.pi) * math.sqrt(float(torch.linalg.det(h_min)) / abs(float(torch.prod(lam_s))))
    )
    run_time = lr * steps
    escape_time = ESCAPE_FRACTION_OF_RUN * run_time
    # rate = prefactor * exp(-barrier / T) = 1 / escape_time
    temperature = barrier / math.log(prefactor * escape_time)
    return {
        "T": temperature,
        "sigma": math.sqrt(2.0 * temperature / lr),
        "barrier": barrier,
        "rate_prefactor": prefactor,
        "escape_time": escape_time,
        "run_time": run_time,
    }


def _disc_starts(center: tuple[float, float], radius: float, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = radius * np.sqrt(rng.uniform(size=n))
    a = rng.uniform(0, 2 * np.pi, size=n)
    return np.stack([center[0] + r * np.cos(a), center[1] + r * np.sin(a)], axis=1)


def classify_basins(surface: Any, points: np.ndarray, lr: float = LR_2D) -> np.ndarray:
    """Which minimum each point flows to under noiseless gradient descent (``QUENCH_STEPS`` steps at
    ``lr``): the index into ``surface.minima`` of the nearest minimum within ``BASIN_RADIUS`` of the
    quenched point, or -1 when there is none."""
    from ravine.simulate import run

    points = np.asarray(points, dtype=float).reshape(-1, 2)
    tr = run(surface, [{"name": "gd", "lr": lr}] * len(points), start=points, steps=QUENCH_STEPS)
    end = tr.positions[:, -1]
    mins = np.array([[m.x, m.y] for m in surface.minima])
    d = np.linalg.norm(end[:, None, :] - mins[None, :, :], axis=2)
    out = np.argmin(d, axis=1)
    out[d[np.arange(len(end)), out] > BASIN_RADIUS] = -1
    return out


def sharp_flat_2d(size: str) -> dict[str, Any]:
    """Runs from the sharp basin with and without noise; fractions ending in each basin."""
    from ravine.simulate import run
    from ravine.surfaces import get

    surface = get("sharp_flat")
    n = pick(size, 16, 128, 512)
    steps = pick(size, 200, 2000, 4000)
    sharp = next(i for i, m in enumerate(surface.minima) if m.kind == "global")
    flat = 1 - sharp
    kr = kramers_noise(surface, LR_2D, steps)
    m = surface.minima[sharp]
    starts = _disc_starts((m.x, m.y), START_RADIUS, n, seed=0)
    out: dict[str, Any] = {"kramers": kr, "runs": n, "steps": steps, "lr": LR_2D, "starts": starts}
    for arm, noise in (("noiseless", 0.0), ("noisy", kr["sigma"])):
        tr = run(
            surface,
            [{"name": "gd", "lr": LR_2D}] * n,
            start=starts,
            steps=steps,
            noise=noise,
            seed=list(range(1, n + 1)),
        )
        ends = tr.positions[:, -1]
        basin = classify_basins(surface, ends)
        out[arm] = {
            "noise": noise,
            "ends": ends,
            "flat_fraction": float(np.mean(basin == flat)),
            "sharp_fraction": float(np.mean(basin == sharp)),
            "other_fraction": float(np.mean(basin == -1)),
            "diverged": int(tr.diverged.sum()),
        }
    out["flat_fraction_gain"] = out["noisy"]["flat_fraction"] - out["noiseless"]["flat_fraction"]
    return out


def saddle_2d(size: str) -> dict[str, Any]:
    """Runs started on the saddle's stable manifold, with and without noise: escape fraction and steps."""
    from ravine.simulate import run
    from ravine.surfaces import get

    surface = get("saddle")
    n = pick(size, 8, 64, 256)
    steps = pick(size, 100, 300, 600)
    out: dict[str, Any] = {"runs": n, "steps": steps, "lr": SADDLE_LR, "start": list(surface.start)}
    for arm, noise in (("noiseless", 0.0), ("noisy", SADDLE_NOISE)):
        tr = run(surface, [{"name": "gd", "lr": SADDLE_LR}] * n, steps=steps, noise=noise, seed=list(range(1, n + 1)))
        y = np.abs(tr.positions[:, :, 1])
        hit = y >= SADDLE_ESCAPE
        escaped = hit.any(axis=1)
        first = np.where(escaped, hit.argmax(axis=1), -1)
        dist = np.linalg.norm(tr.positions, axis=2)  # distance from the saddle at the origin
        out[arm] = {
            "noise": noise,
            "escaped_fraction": float(escaped.mean()),
            "median_escape_step": float(np.median(first[escaped])) if escaped.any() else float("nan"),
            "distance_median": np.median(dist, axis=0),
        }
    out["escaped_fraction_gain"] = out["noisy"]["escaped_fraction"] - out["noiseless"]["escaped_fraction"]
    return out


# ----------------------------------------------------------------------------------------------- network
def plan(size: str) -> list[Planned]:
    from ravine.experiments import TrainConfig

    steps = pick(size, 10, 500, 2000)
    seeds = pick(size, (0,), (0, 1, 2), (0, 1, 2, 3, 4))
    out = []
    for batch in (None, NET_BATCH):
        for seed in seeds:
            cfg = TrainConfig(
                data="digits",
                model="mlp",
                model_kwargs=NET_MODEL,
                optimizer="sgd",
                optimizer_kwargs={"lr": NET_LR},
                steps=steps,
                batch_size=batch,
                eval_every=max(1, steps // 20),
                seed=seed,
            )
            out.append(Planned(f"{'full' if batch is None else f'b{batch}'}-s{seed}", cfg))
    return out


def final_sharpness(run: Any) -> float:
    """``lambda_max`` of the Hessian of the mean training loss over the whole training set, at the run's
    final weights (Lanczos, float64, relative tolerance 1e-4)."""
    import torch

    from ravine.curvature import hessian_eigenvalues
    from ravine.experiments.data import cross_entropy

    ds = run.load_dataset()
    model = run.load_model()
    res = hessian_eigenvalues(model, cross_entropy, (ds.x_train, ds.y_train), k=1, tol=1e-4, dtype=torch.float64)
    return float(res.values[0])


def execute(size: str, store: Store, progress: Progress) -> tuple[dict[str, Any], list[str], list[str], str]:
    from ravine.plots.escape import Points, SurfacePanel, plot_grid
    from ravine.plots.experiments import Panel, Series
    from ravine.surfaces import get

    two_d = store.cached(NAME, f"sharp_flat-{size}", lambda: sharp_flat_2d(size))
    sad = store.cached(NAME, f"saddle-{size}", lambda: saddle_2d(size))
    planned = plan(size)
    runs = train_all(store, NAME, planned, progress)
    per_run: dict[str, dict[str, Any]] = {}
    for p in planned:
        r = runs[p.label]
        per_run[p.label] = {
            "batch": p.config.batch_size,
            "seed": p.config.seed,
            "lambda_max": store.cached(NAME, f"lambda_max-{r.id}", lambda r=r: final_sharpness(r)),
            "final_test_loss": final_eval(r, "test_loss"),
            "final_train_loss": final_eval(r, "train_loss"),
        }

    def mean(arm_full: bool, key: str) -> float:
        vals = [num(v[key]) for v in per_run.values() if (v["batch"] is None) == arm_full]
        return float(np.mean(vals)) if vals else float("nan")

    net = {
        "lr": NET_LR,
        "batch": NET_BATCH,
        "steps": planned[0].config.steps,
        "seeds": len({p.config.seed for p in planned}),
        "threshold_2_over_lr": 2.0 / NET_LR,
        "lambda_max_full": mean(True, "lambda_max"),
        "lambda_max_minibatch": mean(False, "lambda_max"),
        "test_loss_full": mean(True, "final_test_loss"),
        "test_loss_minibatch": mean(False, "final_test_loss"),
        "train_loss_full": mean(True, "final_train_loss"),
        "train_loss_minibatch": mean(False, "final_train_loss"),
        "runs": per_run,
    }
    net["sharpness_ratio"] = ratio(net["lambda_max_minibatch"], net["lambda_max_full"])
    net["test_loss_minibatch_minus_full"] = net["test_loss_minibatch"] - net["test_loss_full"]
    measured = {
        "sharp_flat": two_d,
        "saddle": sad,
        "network": net,
        "flat_fraction_gain": two_d["flat_fraction_gain"],
        "saddle_escape_gain": sad["escaped_fraction_gain"],
        "sharpness_ratio": net["sharpness_ratio"],
    }

    # figure 1: the 2D world
    surface = get("sharp_flat")
    kr = two_d["kramers"]
    ends_panels = [
        SurfacePanel(
            f"{arm}: where {two_d['runs']} runs end"
            + (f" (noise std {two_d[arm]['noise']:.2g})" if arm == "noisy" else ""),
            surface,
            points=[
                Points("starts (sharp basin)", two_d["starts"], color="white", size=6, alpha=0.9),
                Points("end points", two_d[arm]["ends"], color=3 if arm == "noiseless" else 1, size=12),
            ],
            note=f"flat basin {two_d[arm]['flat_fraction']:.0%}, sharp {two_d[arm]['sharp_fraction']:.0%}",
        )
        for arm in ("noiseless", "noisy")
    ]
    t = np.arange(sad["steps"] + 1)
    saddle_panel = Panel(
        f"saddle x^2 - y^2, start on y = 0 (median of {sad['runs']} runs)",
        "step",
        "distance from the saddle point",
        [
            Series("no noise", t, sad["noiseless"]["distance_median"], color=3),
            Series(f"noise std {SADDLE_NOISE:g}", t, sad["noisy"]["distance_median"], color=1),
        ],
        logy=True,
        ylim=(None, 10.0),
        hlines=[(SADDLE_ESCAPE, f"|y| = {SADDLE_ESCAPE:g}: escaped")],
        note=f"escaped: {sad['noiseless']['escaped_fraction']:.0%} vs {sad['noisy']['escaped_fraction']:.0%}",
    )
    f1 = store.figure_path(NAME, "sgd_noise_2d")
    plot_grid(
        f1,
        [*ends_panels, saddle_panel],
        suptitle=f"gradient descent, lr {LR_2D:g} on sharp_flat ({two_d['steps']} steps; noise at Kramers "
        f"temperature T = {kr['T']:.3f}) and lr {SADDLE_LR:g} on the saddle",
    )
    # figure 2: the network
    full_lab = [k for k, v in per_run.items() if v["batch"] is None]
    mb_lab = [k for k, v in per_run.items() if v["batch"] is not None]
    series_loss = []
    for labs, name, c in ((full_lab, "full batch", 3), (mb_lab, f"batch {NET_BATCH}", 1)):
        for j, lab in enumerate(labs):
            ev = eval_columns(runs[lab])
            series_loss.append(Series(name if j == 0 else "_", ev["step"], ev["test_loss"], color=c, alpha=0.8))
    f2 = store.figure_path(NAME, "sgd_noise_network")
    plot_grid(
        f2,
        [
            Panel(
                "final sharpness against final training loss (one point per seed)",
                "final training loss (nats)",
                "lambda_max of the training-loss Hessian",
                [
                    Series(
                        "full batch",
                        [per_run[k]["final_train_loss"] for k in full_lab],
                        [per_run[k]["lambda_max"] for k in full_lab],
                        color=3,
                        linestyle="none",
                        marker="o",
                    ),
                    Series(
                        f"batch {NET_BATCH}",
                        [per_run[k]["final_train_loss"] for k in mb_lab],
                        [per_run[k]["lambda_max"] for k in mb_lab],
                        color=1,
                        linestyle="none",
                        marker="s",
                    ),
                ],
                logx=True,
                logy=True,
                hlines=[(2.0 / NET_LR, f"2 / lr = {2.0 / NET_LR:g} (GD's stability threshold)")],
            ),
            Panel("held-out loss", "step", "test loss (nats)", series_loss, logy=True),
        ],
        suptitle=f"MLP {NET_MODEL['hidden']} on digits, SGD lr {NET_LR:g}, {net['steps']} steps, "
        f"{net['seeds']} seeds per arm",
    )
    nl, ny = two_d["noiseless"], two_d["noisy"]
    reading = (
        f"From the sharp basin of sharp_flat, {nl['flat_fraction'] * 100:.0f}% of {two_d['runs']} noiseless runs "
        f"ended in the flat basin and {ny['flat_fraction'] * 100:.0f}% of the noisy ones (noise std "
        f"{ny['noise']:.2g}, temperature {kr['T']:.3f}, at which Kramers' theory puts the mean escape time from "
        f"the sharp minimum at {kr['escape_time']:.1g} time units of a {kr['run_time']:.3g}-unit run). On the saddle, "
        f"{sad['noiseless']['escaped_fraction'] * 100:.0f}% of the runs started on the stable manifold escaped "
        f"without noise and {sad['noisy']['escaped_fraction'] * 100:.0f}% with it (median escape step "
        f"{sad['noisy']['median_escape_step']:.0f}). On the MLP, full-batch gradient descent ended at "
        f"lambda_max {net['lambda_max_full']:.3g} (2/lr = {2.0 / NET_LR:g}) and SGD with batches of {NET_BATCH} at "
        f"{net['lambda_max_minibatch']:.3g} (ratio {num(net['sharpness_ratio']):.2f}); test loss "
        f"{net['test_loss_full']:.3f} vs {net['test_loss_minibatch']:.3f}, training loss "
        f"{net['train_loss_full']:.3f} vs {net['train_loss_minibatch']:.3f}."
    )
    lo, hi = sorted((net["train_loss_full"], net["train_loss_minibatch"]))
    if lo > 0 and hi / lo > 1.5:
        reading += (
            f" The two arms were compared after the same number of steps, at training losses {hi / lo:.1f}x apart; "
            "with cross-entropy the Hessian shrinks as the loss falls, so part of the sharpness difference is how "
            "far each arm trained."
        )
    return measured, [str(f1), str(f2)], [r.id for r in runs.values()], reading


def verdict(measured: dict[str, Any]) -> Verdict:
    """Three checks (thresholds fixed before any run):

    - ``flat_fraction_gain``: fraction of runs from the sharp basin that end in the flat one, with minus
      without noise, > 0.2 (grey zone ±0.1);
    - ``saddle_escape_gain``: fraction of runs from the saddle's stable manifold that escape, with minus
      without noise, > 0.5 (grey zone ±0.1);
    - ``sharpness_ratio``: the network's final ``lambda_max``, mini-batch / full batch (means over
      seeds), < 1 (grey zone ±0.1).
    """
    checks = [
        threshold_check(
            "flat_fraction_gain",
            num(measured["flat_fraction_gain"]),
            ">",
            0.2,
            "2D: fraction ending in the flat basin, with - without noise",
            margin=0.1,
        ),
        threshold_check(
            "saddle_escape_gain",
            num(measured["saddle_escape_gain"]),
            ">",
            0.5,
            "2D: fraction escaping the saddle from its stable manifold, with - without noise",
            margin=0.1,
        ),
        threshold_check(
            "sharpness_ratio",
            num(measured["sharpness_ratio"]),
            "<",
            1.0,
            "MLP: final lambda_max, mini-batch SGD / full-batch GD",
            margin=0.1,
        ),
    ]
    bad = [c.name for c in checks if c.status != "supported"]
    expl = (
        "Noise carried runs out of the sharp basin and off the saddle, and mini-batch SGD ended flatter than "
        "full-batch descent at the same learning rate."
        if not bad
        else "Not all of it holds here: " + ", ".join(bad) + "."
    )
    net = measured.get("network", {})
    two_d = measured.get("sharp_flat", {})
    scale = (
        f"measured on the 2D sharp_flat and saddle surfaces ({two_d.get('runs', '?')} runs per arm) and a "
        f"1-hidden-layer MLP on 1437 digits (SGD lr {net.get('lr', NET_LR):g}, batch {net.get('batch', NET_BATCH)} "
        f"vs full, {net.get('seeds', '?')} seeds) only"
    )
    return Verdict.from_checks(checks, expl, scale)


EXPERIMENT = Experiment(NAME, TITLE, CLAIM, SECTION, execute, verdict)
