"""Experiment ``momentum``: momentum against plain gradient descent, along the condition number.

The chapter's momentum "builds up speed along the valley floor while damping oscillations across the
valley". How much that buys depends on how narrow the valley is, so the comparison is measured along the
condition number ``kappa`` (largest / smallest curvature), in two places, with ``beta = 0.9`` (the
chapter's) and the EMA form ``v <- beta v + (1 - beta) g``, ``p <- p - lr v`` (``ravine.optim.momentum``):

- The 2D narrow valley ``f = (x^2 + kappa y^2) / 2`` (``ravine.surfaces`` ``"valley"``) for ``kappa`` on a
  log grid, from several starting points on the unit circle (one per "seed"). Each ``(kappa, start)`` is
  one ``ravine.simulate.sweep`` of ``lr x beta`` with ``beta in {0, 0.9}`` (``beta = 0``: plain gradient
  descent). The learning-rate grid is log-spaced from ``1e-3`` times GD's stability limit ``2 / kappa``
  to 1.5 times momentum's (``ravine.curvature.max_stable_lr``: heavy ball's ``(2 + 2 beta) / kappa``,
  divided by ``1 - beta`` for the EMA form), fixed before any run. Measured: the steps each needs to bring
  the loss below ``1e-6`` times its starting value.
- A real network: the MLP 16-32-4 on the ``teacher`` task with ``input_scale = s`` (input feature ``j``
  multiplied by ``s^(j/15)``: the same labels, an input covariance with condition number ``s^2``),
  mini-batches of 32, SGD against EMA momentum, each at its best learning rate of a grid fixed in advance
  (momentum's reaches higher: its stable range is ``1 / (1 - beta)`` times longer). Measured: the final
  training loss (full training set) after the same number of steps.

Two comparisons at each ``kappa``: at each optimizer's best learning rate, and at equal effective
learning rate: EMA momentum at plain GD's best ``lr``, which takes exactly the steps of heavy-ball
momentum at ``lr (1 - beta)`` (``torch.optim.SGD(lr=lr * (1 - beta), momentum=beta)``), so that on a
constant slope both move at the same speed and only the damping differs. The key quantity is the ratio
momentum / plain (steps on the valley, final loss on the network): below 1 momentum is faster. The
crossover (``ravine.experiments.claims.optimizers.crossover``), the ``kappa`` from which momentum is
faster at every larger measured ``kappa``, enters the verdict and its ``scale``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ravine.experiments.claims._common import Planned, final_eval, pick, train_all
from ravine.experiments.claims._core import Experiment, Progress, Store, Verdict, threshold_check
from ravine.experiments.claims._stats import finite_or, num, ratio
from ravine.experiments.claims.optimizers import crossover

NAME = "momentum"
TITLE = "Momentum against plain gradient descent, along the condition number"
SECTION = "Momentum"
CLAIM = (
    "Momentum addresses SGD's tendency to oscillate: the optimizer builds up speed in consistent "
    "directions (the valley floor) while damping oscillations across the valley (where gradients "
    "alternate sign), so it makes faster progress than plain SGD in the same number of steps."
)

BETA = 0.9
"""The momentum coefficient (the chapter's)."""
KAPPAS = {
    "tiny": (1.0, 100.0),
    "quick": (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0),
    "full": (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0),
}
"""Condition numbers of the 2D valley (half-decades)."""
STARTS = {"tiny": 1, "quick": 3, "full": 5}
"""Starting points per ``kappa`` (angles drawn from seeds 0, 1, ...: the valley's "seeds")."""
N_LR = {"tiny": 16, "quick": 64, "full": 96}
"""Points of the valley's learning-rate grid."""
REL_TOL = 1e-6
"""A valley run is done when its loss is below ``REL_TOL`` times its starting loss."""

NET_SCALES = {"tiny": (1.0, 10.0), "quick": (1.0, 10.0), "full": (1.0, 10.0, 100.0)}
"""``input_scale`` of the network arm (input covariance condition number ``s^2``: 1, 100, 10^4)."""
NET_LR = {
    "sgd": (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0),
    "momentum": (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0),
}
"""The network arm's learning-rate grids (``full``: half-decades; ``quick``: decades, every other point;
``tiny``: two). Momentum's holds SGD's (for the equal-lr comparison) and reaches ten times higher."""
NET_DATA = {"n_train": 4000, "n_test": 2000}
NET_MODEL = {"hidden": [32]}
NET_BATCH = 32


# ----------------------------------------------------------------------------- the 2D valley


def valley_start(seed: int) -> tuple[float, float]:
    """The starting point of seed ``seed``: ``(-cos a, sin a)`` with ``a`` uniform in ``[pi/12, 5 pi/12]``."""
    a = float(np.random.default_rng(seed).uniform(math.pi / 12, 5 * math.pi / 12))
    return (-math.cos(a), math.sin(a))


def valley_lr_grid(kappa: float, n: int, beta: float = BETA) -> np.ndarray:
    """The valley's learning rates: ``n`` log-spaced from ``1e-3 * 2 / kappa`` (a thousandth of GD's
    stability limit) to 1.5 times EMA momentum's limit ``(2 + 2 beta) / ((1 - beta) kappa)``.

    Args:
        kappa: the valley's condition number (its largest curvature; the smallest is 1).
        n: number of learning rates.
        beta: the momentum coefficient whose limit sets the top of the grid.

    Returns:
        The learning rates, increasing.
    """
    from ravine.curvature import max_stable_lr

    lo = 1e-3 * max_stable_lr(kappa, "gd")
    hi = 1.5 * max_stable_lr(kappa, "momentum", beta1=beta) / (1.0 - beta)
    return np.geomspace(lo, hi, n)


def valley_steps(kappa: float, seed: int, n_lr: int, beta: float = BETA) -> dict[str, Any]:
    """Steps to ``REL_TOL`` on the valley for plain GD and EMA momentum over :func:`valley_lr_grid`.

    One ``ravine.simulate.sweep`` of ``lr x beta`` (``beta in {0, beta}``), ``kappa * ln(1/REL_TOL) + 200``
    steps (about four times what GD needs at its optimal rate ``2 / (kappa + 1)``, see
    :func:`gd_best_steps_closed_form`).

    Args:
        kappa: the condition number.
        seed: picks the starting point (:func:`valley_start`).
        n_lr: points of the learning-rate grid.
        beta: the momentum coefficient.

    Returns:
        ``lrs``, ``gd_steps`` and ``momentum_steps`` (per lr; -1: not reached or diverged), and the best
        of each (``gd_best``, ``momentum_best``, their ``lr``), the steps of momentum at GD's best lr
        (``momentum_at_gd_lr``, -1 if it did not get there) and the number of steps simulated.
    """
    from ravine import simulate
    from ravine.surfaces import get as get_surface

    surface = get_surface("valley", condition=float(kappa))
    start = valley_start(seed)
    f0 = 0.5 * (start[0] ** 2 + kappa * start[1] ** 2)
    lrs = valley_lr_grid(kappa, n_lr, beta)
    steps = int(kappa * math.log(1.0 / REL_TOL)) + 200
    sw = simulate.sweep(
        surface,
        "momentum",
        x=("lr", lrs),
        y=("beta", [0.0, beta]),
        steps=steps,
        start=start,
        tol=REL_TOL * f0,
    )
    gd, mom = sw.steps_to_tol[0].astype(int), sw.steps_to_tol[1].astype(int)

    def best(row: np.ndarray) -> tuple[int, float]:
        ok = np.flatnonzero(row >= 0)
        if len(ok) == 0:
            return -1, float("nan")
        i = int(ok[np.argmin(row[ok])])
        return int(row[i]), float(lrs[i])

    gd_best, gd_lr = best(gd)
    mom_best, mom_lr = best(mom)
    at_gd_lr = int(mom[int(np.argmin(np.abs(lrs - gd_lr)))]) if gd_best >= 0 else -1
    return {
        "kappa": float(kappa),
        "start": list(start),
        "steps_simulated": steps,
        "lrs": lrs.tolist(),
        "gd_steps": gd.tolist(),
        "momentum_steps": mom.tolist(),
        "gd_best": gd_best,
        "gd_best_lr": gd_lr,
        "momentum_best": mom_best,
        "momentum_best_lr": mom_lr,
        "momentum_at_gd_lr": at_gd_lr,
    }


def _steps_ratio(a: int, b: int) -> float:
    """``a / b`` for step counts, NaN where either was not reached (-1) or ``b`` is 0."""
    return a / b if a > 0 and b > 0 else float("nan")


def _geomean(values: list[float]) -> float:
    v = np.asarray([num(x) for x in values], dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return float(np.exp(np.mean(np.log(v)))) if len(v) else float("nan")


def gd_best_steps_closed_form(kappa: float, rel_tol: float = REL_TOL) -> int:
    """Steps plain GD needs at its optimal rate ``2 / (kappa + 1)`` on the valley to bring the loss below
    ``rel_tol`` times its start, from any start: at that rate both coordinates' errors shrink by the same
    ``rho = (kappa - 1) / (kappa + 1)`` per step, so the loss is exactly ``rho^(2k)`` times its start after
    ``k`` steps and the answer is the first ``k`` with ``rho^(2k) <= rel_tol`` (1 at ``kappa = 1``: one
    step lands on the minimum).

    Args:
        kappa: the condition number (>= 1).
        rel_tol: the loss ratio to reach.

    Returns:
        The number of steps.
    """
    rho = (kappa - 1.0) / (kappa + 1.0)
    if rho <= 0:
        return 1
    return int(math.ceil(math.log(1.0 / rel_tol) / (2.0 * math.log(1.0 / rho)) - 1e-9))


# ----------------------------------------------------------------------------- the network


def _net_lrs(name: str, size: str) -> tuple[float, ...]:
    g = NET_LR[name]
    return pick(size, g[3:5], g[::2], g)


def plan_network(size: str) -> list[Planned]:
    """The network arm's runs: every input scale, optimizer, learning rate and seed.

    Args:
        size: ``"tiny"`` (8 steps, one seed), ``"quick"`` (200 steps, 2 seeds) or ``"full"`` (500, 3).

    Returns:
        The planned runs, labelled ``net-<sgd|momentum>-s<scale>-lr<lr>-s<seed>``.
    """
    from ravine.experiments import TrainConfig

    steps = pick(size, 8, 200, 500)
    seeds = pick(size, (0,), (0, 1), (0, 1, 2))
    out = []
    for scale in NET_SCALES[size]:
        for name in ("sgd", "momentum"):
            for lr in _net_lrs(name, size):
                kw: dict[str, Any] = {"lr": lr} if name == "sgd" else {"lr": lr, "beta": BETA}
                for seed in seeds:
                    cfg = TrainConfig(
                        data="teacher",
                        data_kwargs={**NET_DATA, "input_scale": scale},
                        model="mlp",
                        model_kwargs=dict(NET_MODEL),
                        optimizer=name,
                        optimizer_kwargs=kw,
                        steps=steps,
                        batch_size=NET_BATCH,
                        eval_every=max(1, steps // 10),
                        seed=seed,
                    )
                    out.append(Planned(f"net-{name}-s{scale:g}-lr{lr:g}-s{seed}", cfg))
    return out


def network_arm(size: str, store: Store, progress: Progress) -> tuple[dict[str, Any], list[str]]:
    """Train (or reuse) the network arm and measure momentum / SGD at each input scale.

    Args:
        size: as :func:`plan_network`.
        store: the experiment's store.
        progress: the progress bar's settings.

    Returns:
        ``(measured, run ids)``: per input scale the best lr of each, the final training losses per seed
        at them, the ratio at each one's best lr (seed means; and per seed) and at equal effective lr
        (momentum at SGD's best lr).
    """
    planned = plan_network(size)
    runs = train_all(store, NAME, planned, progress)
    table: dict[float, dict[str, dict[float, list[float]]]] = {}
    for p in planned:
        scale = p.config.data_kwargs["input_scale"]
        table.setdefault(scale, {}).setdefault(p.config.optimizer, {}).setdefault(
            p.config.optimizer_kwargs["lr"], []
        ).append(final_eval(runs[p.label], "train_loss"))
    out: dict[str, Any] = {
        "scales": [],
        "kappa": [],
        "best": [],
        "equal_lr": [],
        "best_per_seed": [],
        "equal_lr_per_seed": [],
        "rows": [],
    }
    at_edge = []
    for scale in NET_SCALES[size]:
        row: dict[str, Any] = {"input_scale": scale, "kappa": scale**2}
        for name in ("sgd", "momentum"):
            means = {lr: float(np.mean([finite_or(v, np.inf) for v in vs])) for lr, vs in table[scale][name].items()}
            lr = min(means, key=lambda k: means[k])
            row[f"{name}_best_lr"] = lr
            row[f"{name}_loss"] = table[scale][name][lr]
            if len(means) > 2 and lr in (min(means), max(means)):
                at_edge.append(f"{name} at s={scale:g}")
        sgd_lr = row["sgd_best_lr"]
        row["momentum_at_sgd_lr_loss"] = table[scale]["momentum"][sgd_lr]
        best = ratio(np.mean(row["momentum_loss"]), np.mean(row["sgd_loss"]))
        equal = ratio(np.mean(row["momentum_at_sgd_lr_loss"]), np.mean(row["sgd_loss"]))
        per_seed = [ratio(m, s) for m, s in zip(row["momentum_loss"], row["sgd_loss"])]
        equal_seed = [ratio(m, s) for m, s in zip(row["momentum_at_sgd_lr_loss"], row["sgd_loss"])]
        row.update(ratio_best=best, ratio_equal_lr=equal, ratio_best_per_seed=per_seed)
        out["rows"].append(row)
        out["scales"].append(scale)
        out["kappa"].append(scale**2)
        out["best"].append(best)
        out["equal_lr"].append(equal)
        out["best_per_seed"].append(per_seed)
        out["equal_lr_per_seed"].append(equal_seed)
    out["steps"] = int(planned[0].config.steps)
    out["seeds"] = len({p.config.seed for p in planned})
    out["lr_grid"] = {n: list(_net_lrs(n, size)) for n in ("sgd", "momentum")}
    out["best_lr_at_grid_edge"] = at_edge
    return out, [r.id for r in runs.values()]


# ----------------------------------------------------------------------------- the experiment


def execute(size: str, store: Store, progress: Progress) -> tuple[dict[str, Any], list[str], list[str], str]:
    from ravine.plots.scaling import Trend, TrendPanel, plot_trends

    kappas = list(KAPPAS[size])
    seeds = list(range(STARTS[size]))
    cells = []
    with progress.bar(len(kappas) * len(seeds), f"{NAME}: valley sweeps") as bar:
        for kappa in kappas:
            for seed in seeds:
                cells.append(
                    store.cached(
                        NAME,
                        f"valley-k{kappa:g}-s{seed}-n{N_LR[size]}-b{BETA:g}-t{REL_TOL:g}",
                        lambda kappa=kappa, seed=seed: valley_steps(kappa, seed, N_LR[size]),
                    )
                )
                bar.update(1)
    by = {(c["kappa"], i % len(seeds)): c for i, c in enumerate(cells)}
    best = [[_steps_ratio(by[k, s]["momentum_best"], by[k, s]["gd_best"]) for s in seeds] for k in kappas]
    equal = [[_steps_ratio(by[k, s]["momentum_at_gd_lr"], by[k, s]["gd_best"]) for s in seeds] for k in kappas]
    gd_steps = [[by[k, s]["gd_best"] if by[k, s]["gd_best"] > 0 else np.nan for s in seeds] for k in kappas]
    mom_steps = [
        [by[k, s]["momentum_best"] if by[k, s]["momentum_best"] > 0 else np.nan for s in seeds] for k in kappas
    ]
    best_mean = [_geomean(r) for r in best]
    equal_mean = [_geomean(r) for r in equal]
    cross = crossover(kappas, best_mean)
    net, net_ids = network_arm(size, store, progress)
    measured = {
        "beta": BETA,
        "rel_tol": REL_TOL,
        "valley": {
            "kappas": kappas,
            "starts": [by[kappas[0], s]["start"] for s in seeds],
            "gd_best_steps": gd_steps,
            "momentum_best_steps": mom_steps,
            "gd_best_lr": [[by[k, s]["gd_best_lr"] for s in seeds] for k in kappas],
            "momentum_best_lr": [[by[k, s]["momentum_best_lr"] for s in seeds] for k in kappas],
            "ratio_best": best,
            "ratio_equal_lr": equal,
            "ratio_best_mean": best_mean,
            "ratio_equal_lr_mean": equal_mean,
            "gd_best_steps_closed_form": [gd_best_steps_closed_form(k) for k in kappas],
            "crossover": cross,
        },
        "network": net,
    }
    fig = store.figure_path(NAME, "momentum")
    span = [(cross["lower"], cross["upper"], "crossover")] if cross["status"] == "bracketed" else []
    plot_trends(
        fig,
        [
            TrendPanel(
                "2D valley: steps to reach the tolerance",
                "condition number kappa",
                f"steps to loss < {REL_TOL:g} x start",
                [
                    Trend("plain GD (best lr)", kappas, gd_steps, color=0, spread="starts"),
                    Trend(f"momentum {BETA:g} (best lr)", kappas, mom_steps, color=1, spread="starts"),
                    Trend(
                        "GD at 2/(kappa+1), closed form",
                        kappas,
                        [gd_best_steps_closed_form(k) for k in kappas],
                        color="0.4",
                        linestyle="--",
                        marker=None,
                    ),
                ],
                logy=True,
            ),
            TrendPanel(
                "2D valley: momentum / plain GD steps",
                "condition number kappa",
                "steps ratio (below 1: momentum faster)",
                [
                    Trend("each at its best lr", kappas, best, color=1, spread="starts"),
                    Trend("equal effective lr (GD's best)", kappas, equal, color=2, spread="starts"),
                ],
                logy=True,
                hlines=[(1.0, "no difference")],
                spans=span,
            ),
            TrendPanel(
                "MLP on the teacher task: momentum / SGD",
                "input covariance condition number s^2",
                f"final train loss ratio after {net['steps']} steps",
                [
                    Trend("each at its best lr", net["kappa"], net["best_per_seed"], color=1),
                    Trend("equal effective lr (SGD's best)", net["kappa"], net["equal_lr_per_seed"], color=2),
                ],
                hlines=[(1.0, "no difference")],
            ),
        ],
        suptitle=(
            f"Momentum (EMA, beta {BETA:g}) vs plain gradient descent along the condition number; valley: "
            f"{len(seeds)} start(s), network: {net['seeds']} seed(s), batch {NET_BATCH}"
        ),
    )
    reading = _reading(measured)
    return measured, [str(fig)], net_ids, reading


def _reading(measured: dict[str, Any]) -> str:
    v, net = measured["valley"], measured["network"]
    ks = v["kappas"]
    text = (
        f"On the 2D valley (steps to bring the loss below {measured['rel_tol']:g} of its start, geometric mean "
        f"over {len(v['starts'])} start(s)), momentum ({measured['beta']:g}) / plain GD at each one's best "
        "learning rate: "
        + ", ".join(f"{num(r):.2f} (kappa {k:g})" for k, r in zip(ks, v["ratio_best_mean"]))
        + "; GD needs "
        + ", ".join(f"{np.nanmean(g):.0f}" for g in v["gd_best_steps"])
        + " steps, momentum "
        + ", ".join(f"{np.nanmean(m):.0f}" for m in v["momentum_best_steps"])
        + ". At equal effective learning rate (momentum at GD's best lr, i.e. heavy ball at lr (1 - beta)) "
        "the ratio is "
        + ", ".join(f"{num(r):.2f}" for r in v["ratio_equal_lr_mean"])
        + ". "
        + _crossover_text(v["crossover"], ks[-1])
        + f" On the MLP (teacher task, {net['steps']} steps, {net['seeds']} seed(s)), final training loss "
        "momentum / SGD at each one's best lr: "
        + ", ".join(f"{num(r):.2f} (input condition number {k:g})" for k, r in zip(net["kappa"], net["best"]))
        + "; at SGD's best lr: "
        + ", ".join(f"{num(r):.2f}" for r in net["equal_lr"])
        + "."
    )
    if net["best_lr_at_grid_edge"]:
        text += f" Best learning rate at the edge of its grid: {', '.join(net['best_lr_at_grid_edge'])}."
    return text


def _crossover_text(cross: dict[str, Any], k_max: float) -> str:
    status = cross.get("status")
    if status == "bracketed":
        est = cross.get("estimate")
        return (
            f"Momentum is faster from kappa = {num(cross['upper']):g} on (crossover between "
            f"{num(cross['lower']):g} and {num(cross['upper']):g}" + (f", about {num(est):.3g}" if est else "") + ")."
        )
    if status == "below range":
        return f"Momentum is faster at every measured kappa, from {num(cross['upper']):g}."
    return f"Momentum is not faster at kappa = {num(k_max):g}, the largest measured."


def verdict(measured: dict[str, Any]) -> Verdict:
    """Three checks (grey zones make near-ties inconclusive):

    - on the valley at the largest ``kappa``, momentum's / GD's steps at each one's best lr (geometric
      mean over starts) < 1 (grey zone ±0.1);
    - the crossover: the smallest measured ``kappa`` from which momentum is faster at every larger one is
      within the measured range (NaN, inconclusive, when it was not reached);
    - on the network with the worst-conditioned inputs, momentum's / SGD's final training loss at each
      one's best lr < 1 (grey zone ±0.05).

    The ``scale`` says from which ``kappa`` on it held, and what the equal-lr comparison and the
    well-conditioned ends measured.
    """
    v = measured.get("valley") or {}
    net = measured.get("network") or {}
    ks = v.get("kappas") or []
    k_max = float(ks[-1]) if ks else float("nan")
    cross = v.get("crossover") or {}
    upper = num(cross.get("upper")) if cross.get("status") in ("bracketed", "below range") else float("nan")
    ratios = v.get("ratio_best_mean") or []
    net_best = net.get("best") or []
    net_k = net.get("kappa") or []
    checks = [
        threshold_check(
            "valley_steps_ratio_at_max_kappa",
            num(ratios[-1]) if ratios else float("nan"),
            "<",
            1.0,
            f"2D valley, kappa {k_max:g}: steps to tolerance, momentum / GD, each at its best lr",
            margin=0.1,
        ),
        threshold_check(
            "valley_crossover_kappa",
            upper,
            "<=",
            k_max if np.isfinite(k_max) else float("inf"),
            "smallest measured kappa from which momentum needs fewer steps at every larger kappa",
        ),
        threshold_check(
            "network_loss_ratio_at_max_kappa",
            num(net_best[-1]) if net_best else float("nan"),
            "<",
            1.0,
            f"MLP, input condition number {num(net_k[-1]) if net_k else float('nan'):g}: final training "
            "loss, momentum / SGD, each at its best lr",
            margin=0.05,
        ),
    ]
    failed = [c.name for c in checks if c.status != "supported"]
    expl = (
        "Momentum is faster than plain gradient descent where the problem is ill-conditioned, on the valley "
        "and on the network."
        if not failed
        else "Not all comparisons came out as the chapter says: " + ", ".join(failed) + "."
    )
    return Verdict.from_checks(checks, expl, _scale_text(v, net))


def _scale_text(v: dict[str, Any], net: dict[str, Any]) -> str:
    ks = v.get("kappas") or []
    if not ks:
        return "not measured along the condition number"
    cross = v.get("crossover") or {}
    best = v.get("ratio_best_mean") or []
    equal = v.get("ratio_equal_lr_mean") or []
    status = cross.get("status")
    if status == "bracketed":
        est = cross.get("estimate")
        where = (
            f"on the 2D valley momentum is faster for kappa >= {num(cross['upper']):g} (crossover between "
            f"{num(cross['lower']):g} and {num(cross['upper']):g}" + (f", about {num(est):.3g}" if est else "") + ")"
        )
    elif status == "below range":
        where = f"on the 2D valley momentum is faster at every measured kappa, {ks[0]:g} to {ks[-1]:g}"
    else:
        where = f"on the 2D valley momentum is not faster up to kappa = {ks[-1]:g}"
    text = (
        f"{where}; steps ratio {num(best[0]):.2f} at kappa {ks[0]:g} and {num(best[-1]):.2f} at {ks[-1]:g} "
        f"(best lr each), {num(equal[-1]):.2f} at equal effective lr"
    )
    if net.get("kappa"):
        text += (
            f"; MLP final-loss ratio {num(net['best'][0]):.2f} at input condition number {net['kappa'][0]:g} and "
            f"{num(net['best'][-1]):.2f} at {net['kappa'][-1]:g}"
        )
    return text


EXPERIMENT = Experiment(NAME, TITLE, CLAIM, SECTION, execute, verdict)
