"""Experiment ``optimizers``: GD vs SGD along the data size; SGD, momentum and the adaptive methods on digits.

Setup: an MLP (64-64-10, ReLU) on scikit-learn's digits (1437 training images). Full-batch gradient
descent uses the whole training set per update; every other optimizer uses mini-batches of 32. Each
optimizer gets a small learning-rate grid and is shown at its best learning rate (lowest final
training loss, evaluated on the full training set), so the comparison is between tuned optimizers,
not between default settings.

Measured: the cost of one update (the median of the harness's per-step ``time``: batch, forward,
backward and update, evaluation excluded) of each optimizer; the training loss (full training set,
mean over seeds) against steps and against time = steps x cost per update. The median makes the
time axis robust to a busy machine stalling single steps (cumulative wall-clock is not).

The data-size arm (every size; :func:`scale_arm`): whether SGD gets further than GD in the same time
depends on how much one full pass costs, so it is measured along the training-set size N (a synthetic
``teacher`` task whose size is a parameter, an MLP 16-32-4, N from 10^3 to 10^5 in ``--quick`` and to
10^6 in ``--full``). At each N the CPU time of one GD and one SGD update (batch 32) is measured at one
thread (:func:`update_cost`, cached in the store; CPU time at one thread rather than wall-clock, which a
loaded machine makes noisy, decided before any run); GD's growth is fitted as ``N^slope``. Equal time is
equal measured compute: SGD makes :data:`SCALE_BUDGET` updates, GD the whole updates that fit in the same
CPU time (possibly none); each is shown at its best learning rate of a grid fixed in advance, and the
held-out loss each reaches is compared. The crossover (:func:`crossover`), the size from which SGD is
ahead at every larger measured size, is bracketed between two measured sizes and enters the verdict and
its ``scale``. Momentum is measured along the condition number in the ``momentum`` experiment; the digits
numbers (momentum / SGD included) stay in the measurements.

The ``--full`` arm (size ``"full"`` only; the verdict does not read it): the optimizers people train
with today (:data:`MODERN`: Lion, ADOPT, Schedule-Free AdamW, Adafactor, SOAP and Muon, with AdamW as
the baseline) on a tiny transformer (Pre-LN, 2 layers, d=32) as a character-level language model on
CPython's documentation, mini-batches of 16 blocks of 32 characters, a constant learning rate (no
schedule: Schedule-Free replaces it, and every optimizer gets the same). Each optimizer runs a
three-point learning-rate grid (:data:`MODERN_LR_GRID`, fixed from the papers' and reference
implementations' defaults before any run) over three seeds, and is shown at the learning rate with the
lowest final held-out loss (mean over seeds). Muon runs as a user would run it: ``MuonWithAdamW``
over ``muon_param_groups(model)`` (hidden matrices Muon at the grid's rate, embeddings, head and
vectors AdamW at :data:`MUON_ADAMW_LR`). The harness evaluates every optimizer at the weights it
trains, so Schedule-Free is evaluated at its training point ``y``, not at its average ``x`` (which is
usually a little better): its number is conservative. :func:`modern_arm` runs the arm at any size
(the tests run it tiny).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from ravine.experiments.claims._common import Planned, eval_columns, final_eval, pick, step_columns, train_all
from ravine.experiments.claims._core import Experiment, Progress, Store, Verdict, threshold_check
from ravine.experiments.claims._stats import finite_or, interp_at, num, ratio

NAME = "optimizers"
TITLE = "Gradient descent variants on real data"
SECTION = "Gradient Descent Variants"
CLAIM = (
    "Vanilla (batch) gradient descent processes the entire training set for every update, which is slow; "
    "SGD estimates the gradient from a mini-batch, so an update costs a fraction and, for the same "
    "wall-clock time, training gets further. The adaptive methods (RMSProp, Adam, AdamW) make faster "
    "progress than plain SGD in the same number of steps."
)

OPTIMIZERS = ("gd", "sgd", "momentum", "rmsprop", "adam", "adamw")
# Full grids (half-decade steps); quick runs the four values around each optimizer's best, tiny two.
LR_GRID = {
    "gd": (0.1, 0.3, 1.0, 3.0, 10.0, 30.0),
    "sgd": (0.03, 0.1, 0.3, 1.0, 3.0, 10.0),
    "momentum": (0.03, 0.1, 0.3, 1.0, 3.0, 10.0),
    "rmsprop": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
    "adam": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
    "adamw": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
}
QUICK_START = {"gd": 1, "sgd": 1, "momentum": 1, "rmsprop": 2, "adam": 1, "adamw": 1}
BATCH = 32

MODERN = ("adamw", "lion", "adopt", "schedule_free_adamw", "adafactor", "soap", "muon")
"""The ``--full`` arm's optimizers (``ravine.optim`` names), AdamW first as the baseline."""
MODERN_LR_GRID = {
    "adamw": (1e-3, 3e-3, 1e-2),
    "lion": (3e-4, 1e-3, 3e-3),  # the paper: 3-10x below AdamW's
    "adopt": (1e-3, 3e-3, 1e-2),
    "schedule_free_adamw": (1e-3, 3e-3, 1e-2),  # the package's default 2.5e-3 inside
    "adafactor": (3e-3, 1e-2, 3e-2),  # torch.optim.Adafactor's default 1e-2 in the middle
    "soap": (1e-3, 3e-3, 1e-2),  # the paper's default 3e-3 in the middle
    "muon": (0.01, 0.02, 0.05),  # the hidden matrices' rate; the reference code's 0.02 inside
}
"""The ``--full`` arm's learning-rate grids, fixed before any run (half-decade steps around each
optimizer's published default, scaled down for Lion as its paper says)."""
MUON_ADAMW_LR = 3e-3
"""The AdamW rate of the parameters Muon does not take (embeddings, output head, vectors) in the arm."""
MODERN_DATA = {"block_size": 32, "eval_blocks": 256}
MODERN_MODEL = {"d_model": 32, "n_layer": 2, "n_head": 4, "norm": "pre"}
MODERN_BATCH = 16


def _lrs(name: str, size: str) -> tuple[float, ...]:
    g, i = LR_GRID[name], QUICK_START[name]
    return pick(size, g[i + 1 : i + 3], g[i : i + 4], g)


def plan(size: str) -> list[Planned]:
    from ravine.experiments import TrainConfig

    steps = pick(size, 8, 300, 1000)
    seeds = pick(size, (0,), (0, 1), (0, 1, 2))
    out = []
    for name in OPTIMIZERS:
        for lr in _lrs(name, size):
            kw: dict[str, Any] = {"lr": lr}
            if name == "adamw":
                kw["weight_decay"] = 0.01
            for seed in seeds:
                cfg = TrainConfig(
                    data="digits",
                    model="mlp",
                    model_kwargs={"hidden": [64]},
                    optimizer=name,
                    optimizer_kwargs=kw,
                    steps=steps,
                    batch_size=None if name == "gd" else BATCH,
                    eval_every=max(1, steps // 30),
                    seed=seed,
                )
                out.append(Planned(f"{name}-lr{lr:g}-s{seed}", cfg))
    return out


def _muon_with_adamw(model: Any, lr: float) -> Any:
    """The arm's Muon: ``MuonWithAdamW`` over ``muon_param_groups(model)``."""
    import ravine.optim as ro

    return ro.MuonWithAdamW(model, lr=lr, adamw_lr=MUON_ADAMW_LR)


def plan_modern(size: str) -> list[Planned]:
    """The runs of the ``--full`` arm.

    Args:
        size: ``"tiny"`` (one seed, the two lowest grid points, 8 steps), ``"quick"`` (two seeds, 300
            steps) or ``"full"`` (three seeds, 1500 steps); every size runs every optimizer of :data:`MODERN`.

    Returns:
        The planned runs, labelled ``modern-<name>-lr<lr>-s<seed>``; Muon's carry their factory.
    """
    from ravine.experiments import TrainConfig

    steps = pick(size, 8, 300, 1500)
    seeds = pick(size, (0,), (0, 1), (0, 1, 2))
    out = []
    for name in MODERN:
        grid = MODERN_LR_GRID[name]
        for lr in pick(size, grid[:2], grid, grid):
            kw: dict[str, Any] = {"lr": lr, "adamw_lr": MUON_ADAMW_LR} if name == "muon" else {"lr": lr}
            factory = functools.partial(_muon_with_adamw, lr=lr) if name == "muon" else None
            for seed in seeds:
                cfg = TrainConfig(
                    data="chars",
                    data_kwargs=MODERN_DATA,
                    model="transformer",
                    model_kwargs=MODERN_MODEL,
                    optimizer=name,  # for muon a label: the factory builds the optimizer
                    optimizer_kwargs=kw,
                    steps=steps,
                    batch_size=MODERN_BATCH,
                    eval_every=max(1, steps // 20),
                    seed=seed,
                )
                out.append(Planned(f"modern-{name}-lr{lr:g}-s{seed}", cfg, factory))
    return out


def modern_arm(size: str, store: Store, progress: Progress) -> tuple[dict[str, Any], str, list[str]]:
    """Run (or reuse) the ``--full`` arm's runs and measure them.

    Args:
        size: as :func:`plan_modern` (the experiment calls it with ``"full"`` only).
        store: where the runs and the figure go (the ``optimizers`` experiment's folders).
        progress: the progress bar's settings.

    Returns:
        ``(measured, figure path, run ids)``. ``measured``: ``best_lr`` and ``final_test_loss`` (mean
        over seeds at the best rate, chosen by that mean), ``final_test_loss_std`` (over seeds),
        ``lr_sweep_final_test_loss`` (``None`` where a seed diverged), ``best_lr_at_grid_edge``,
        ``over_adamw`` (each one's best loss / AdamW's), and the ``optimizer_class`` each ran as.
    """
    from ravine.plots.experiments import Panel, Series, plot_panels

    planned = plan_modern(size)
    runs = train_all(store, NAME, planned, progress)
    table: dict[str, dict[float, list[float]]] = {n: {} for n in MODERN}
    for p in planned:
        table[p.config.optimizer].setdefault(p.config.optimizer_kwargs["lr"], []).append(
            final_eval(runs[p.label], "test_loss")
        )
    best_lr: dict[str, float] = {}
    final: dict[str, float] = {}
    spread: dict[str, float] = {}
    sweep: dict[str, dict[str, float | None]] = {}
    for name, by_lr in table.items():
        means = {lr: float(np.mean([finite_or(v, np.inf) for v in vals])) for lr, vals in by_lr.items()}
        sweep[name] = {f"{lr:g}": (v if np.isfinite(v) else None) for lr, v in means.items()}
        lr = min(means, key=lambda k: means[k])
        best_lr[name], final[name] = lr, means[lr]
        spread[name] = float(np.std(table[name][lr])) if np.isfinite(means[lr]) else float("nan")
    at_edge = [n for n in MODERN if len(table[n]) > 2 and best_lr[n] in (min(table[n]), max(table[n]))]
    best = {
        n: [runs[p.label] for p in planned if p.config.optimizer == n and p.config.optimizer_kwargs["lr"] == best_lr[n]]
        for n in MODERN
    }
    measured = {
        "steps": int(planned[0].config.steps),
        "seeds": len({p.config.seed for p in planned}),
        "lr_grid": {n: list(MODERN_LR_GRID[n]) for n in MODERN},
        "best_lr": best_lr,
        "best_lr_at_grid_edge": at_edge,
        "final_test_loss": final,
        "final_test_loss_std": spread,
        "lr_sweep_final_test_loss": sweep,
        "over_adamw": {n: ratio(final[n], final["adamw"]) for n in MODERN},
        "optimizer_class": {n: best[n][0].metadata.get("optimizer_class") for n in MODERN},
    }
    curves = []
    for i, n in enumerate(MODERN):
        evs = [eval_columns(r) for r in best[n]]
        k = min(len(e["step"]) for e in evs)
        loss = np.mean([e["test_loss"][:k] for e in evs], axis=0)
        curves.append(Series(f"{n} (lr {best_lr[n]:g})", evs[0]["step"][:k], loss, color=i))
    sweeps = []
    for i, n in enumerate(MODERN):
        lrs = sorted(table[n])
        ys = [sweep[n][f"{lr:g}"] if sweep[n][f"{lr:g}"] is not None else np.nan for lr in lrs]
        sweeps.append(Series(n, lrs, ys, color=i, marker="o"))
    fig = store.figure_path(NAME, "modern")
    plot_panels(
        fig,
        [
            Panel("held-out loss vs steps (best lr each, seed mean)", "step", "test loss", curves, logy=True),
            Panel(
                "learning-rate sweep",
                "learning rate (Muon: its hidden matrices')",
                "final test loss",
                sweeps,
                logx=True,
                logy=True,
                note="missing: a seed diverged",
            ),
        ],
        suptitle=(f"Tiny transformer on text, {measured['steps']} steps, constant lr, {measured['seeds']} seed(s)"),
    )
    return measured, str(fig), [r.id for r in runs.values()]


# ------------------------------------------------------------------ GD vs SGD along the data size

SCALE_SIZES = {
    "tiny": (300, 1_000),
    "quick": (1_000, 10_000, 100_000),
    "full": (1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000),
}
"""Training-set sizes of the data-size arm (a log grid; ``full`` half-decades up to 10^6)."""
SCALE_BUDGET = {"tiny": 8, "quick": 300, "full": 1000}
"""The compute budget at every size, in SGD updates: SGD makes this many, GD as many whole updates as
fit in the same measured CPU time (``floor(budget * cost_SGD / cost_GD)``, possibly none)."""
SCALE_LR = {"gd": (0.1, 0.3, 1.0, 3.0, 10.0), "sgd": (0.01, 0.03, 0.1, 0.3, 1.0)}
"""Learning-rate grids (half-decades, fixed before any run; ``full`` all five, ``quick`` the middle
three, ``tiny`` the middle one). SGD's is ten times below GD's: a batch of 32 is a noisy estimate."""
SCALE_DATA = {"in_features": 16, "n_classes": 4, "hidden": 8, "label_noise": 0.1}
"""The ``teacher`` task of the arm (its test set: 10^4 examples, 10^3 at size tiny)."""
SCALE_MODEL = {"hidden": [32]}
"""The student: an MLP 16-32-4 (ReLU), small enough that a full-batch update at 10^6 takes about 0.5 s."""
SCALE_FIT_FROM = 10_000
"""GD's cost per update is fitted as ``a * N^slope`` on the sizes from this one on (below it the fixed cost
of an update, the same for any N, flattens the curve)."""


def update_cost(n_train: int, batch_size: int | None, *, blocks: int = 5, n_test: int = 1000) -> float:
    """CPU seconds (``time.process_time`` at one torch thread) of one update of the arm's student on the
    ``teacher`` task with ``n_train`` examples: draw the batch, forward, loss, backward, SGD step, as the
    harness does (its bookkeeping excluded).

    Args:
        n_train: training-set size.
        batch_size: examples per update; ``None`` for full batch (GD).
        blocks: timed blocks; the result is the median over blocks of the time per update, each block
            long enough (about 0.05 s, at least one update) for the clock's resolution not to matter.
        n_test: the task's test-set size (not used by an update; kept small).

    Returns:
        The median CPU seconds per update. The thread count is restored afterwards.
    """
    import time

    import torch

    from ravine.experiments import build_model, load_data
    from ravine.experiments.train import build_optimizer, loss_fn

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = load_data("teacher", seed=0, n_train=n_train, n_test=n_test, **SCALE_DATA)
        torch.manual_seed(0)
        model = build_model(
            "mlp", in_features=SCALE_DATA["in_features"], n_classes=SCALE_DATA["n_classes"], **SCALE_MODEL
        )
        opt = build_optimizer("sgd", model.parameters(), lr=1e-3)
        sampler = data.sampler(batch_size, seed=0)

        def update() -> None:
            xb, yb = sampler.next()
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xb), yb).backward()
            opt.step()

        update()  # warm-up
        t0 = time.process_time()
        update()
        per_block = max(1, int(0.05 / max(time.process_time() - t0, 1e-6)))
        times = []
        for _ in range(blocks):
            t0 = time.process_time()
            for _ in range(per_block):
                update()
            times.append((time.process_time() - t0) / per_block)
        return float(np.median(times))
    finally:
        torch.set_num_threads(threads)


def power_law_fit(n: Any, y: Any) -> dict[str, float]:
    """Least-squares fit of ``y = prefactor * n ** slope`` in log-log space over positive finite pairs.

    Args:
        n: the axis (e.g. training-set sizes).
        y: the values (e.g. seconds per update).

    Returns:
        ``{"slope", "prefactor", "r"}`` (Pearson's r of the log-log points); NaNs with fewer than two pairs.
    """
    from ravine.experiments.claims._stats import linear_fit

    n, y = np.asarray(n, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(n) & np.isfinite(y) & (n > 0) & (y > 0)
    slope, icpt, r = linear_fit(np.log10(n[keep]), np.log10(y[keep]))
    return {"slope": slope, "prefactor": float(10**icpt) if np.isfinite(icpt) else float("nan"), "r": r}


def crossover(axis: Any, ratios: Any) -> dict[str, Any]:
    """Where a ratio (challenger / incumbent, below 1 = the challenger wins) drops below 1 for good.

    The crossover is bracketed by the last measured point where the ratio is not below 1 (``lower``) and
    the first point after it (``upper``): from ``upper`` on the challenger wins at every measured point.
    ``estimate`` interpolates ``log(ratio)`` linearly in ``log(axis)`` between the two (where it crosses
    0). A non-finite ratio counts as "not below 1".

    Args:
        axis: increasing positive values (sizes, condition numbers).
        ratios: the ratio at each.

    Returns:
        ``{"status", "lower", "upper", "estimate"}`` with ``status`` ``"bracketed"`` (both bounds),
        ``"below range"`` (the challenger wins at every point: ``lower`` is None, ``upper`` the first point)
        or ``"not reached"`` (it does not win at the last point: ``lower`` is the last point, ``upper``
        None). ``estimate`` is None unless bracketed.
    """
    x = np.asarray(axis, dtype=float)
    r = np.asarray([np.nan if v is None else v for v in ratios], dtype=float)
    if x.ndim != 1 or len(x) != len(r) or len(x) == 0:
        raise ValueError(f"axis and ratios must be 1-D of the same non-zero length, got {x.shape} and {r.shape}")
    if not (np.all(x > 0) and np.all(np.diff(x) > 0)):
        raise ValueError(f"axis must be positive and increasing, got {x.tolist()}")
    wins = np.isfinite(r) & (r < 1)
    if not wins[-1]:
        return {"status": "not reached", "lower": float(x[-1]), "upper": None, "estimate": None}
    losing = np.flatnonzero(~wins)
    if len(losing) == 0:
        return {"status": "below range", "lower": None, "upper": float(x[0]), "estimate": None}
    i = int(losing[-1])
    lo, hi = float(x[i]), float(x[i + 1])
    estimate = None
    if np.isfinite(r[i]) and r[i] > 0:
        a, b = math.log(r[i]), math.log(r[i + 1])
        frac = a / (a - b) if a != b else 0.0
        estimate = float(10 ** (math.log10(lo) + frac * (math.log10(hi) - math.log10(lo))))
    return {"status": "bracketed", "lower": lo, "upper": hi, "estimate": estimate}


def _scale_lrs(name: str, size: str) -> tuple[float, ...]:
    g = SCALE_LR[name]
    return pick(size, g[2:3], g[1:4], g)


def plan_scale(size: str, costs: dict[int, dict[str, float]]) -> list[Planned]:
    """The runs of the data-size arm, given the measured cost per update at each size.

    Args:
        size: ``"tiny"``, ``"quick"`` or ``"full"`` (sizes :data:`SCALE_SIZES`, budget :data:`SCALE_BUDGET`).
        costs: ``{n: {"gd": seconds, "sgd": seconds}}`` from :func:`update_cost`.

    Returns:
        For every size, learning rate and seed: SGD for the budget's updates, GD for
        :func:`gd_updates` of them (at least one run step; the evaluation at its whole-update count is
        read), labelled ``scale-<gd|sgd>-n<n>-lr<lr>-s<seed>``.
    """
    from ravine.experiments import TrainConfig

    budget = SCALE_BUDGET[size]
    seeds = pick(size, (0,), (0, 1), (0, 1, 2))
    out = []
    for n in SCALE_SIZES[size]:
        k_gd = gd_updates(budget, costs[n]["sgd"], costs[n]["gd"])
        for name in ("gd", "sgd"):
            steps = budget if name == "sgd" else max(1, k_gd)
            for lr in _scale_lrs(name, size):
                for seed in seeds:
                    cfg = TrainConfig(
                        data="teacher",
                        data_kwargs={"n_train": n, "n_test": pick(size, 1000, 10_000, 10_000), **SCALE_DATA},
                        model="mlp",
                        model_kwargs=dict(SCALE_MODEL),
                        optimizer="sgd",
                        optimizer_kwargs={"lr": lr},
                        steps=steps,
                        batch_size=None if name == "gd" else BATCH,
                        eval_every=max(1, steps // 20),
                        seed=seed,
                    )
                    out.append(Planned(f"scale-{name}-n{n}-lr{lr:g}-s{seed}", cfg))
    return out


def gd_updates(budget: int, cost_sgd: float, cost_gd: float) -> int:
    """Whole GD updates that fit in the time of ``budget`` SGD updates: ``floor(budget * cost_sgd / cost_gd)``."""
    if not (cost_sgd > 0 and cost_gd > 0):
        raise ValueError(f"costs must be positive, got cost_sgd={cost_sgd!r}, cost_gd={cost_gd!r}")
    return int(math.floor(budget * cost_sgd / cost_gd + 1e-9))


def _loss_at_step(run: Any, step: int) -> float:
    """The held-out loss of the evaluation at ``step`` (NaN if the run diverged before it)."""
    ev = eval_columns(run)
    hit = np.flatnonzero(ev["step"] == step)
    if len(hit) == 0:
        return float("nan")
    return float(ev["test_loss"][hit[0]])


def scale_arm(size: str, store: Store, progress: Progress) -> tuple[dict[str, Any], str, list[str]]:
    """Measure GD against SGD along the training-set size (:data:`SCALE_SIZES`) at equal compute.

    The cost of one update of each (CPU seconds at one thread, :func:`update_cost`) is measured once per
    size and cached in the store, so a resumed experiment plans the same runs. The budget is
    :data:`SCALE_BUDGET` SGD updates; GD gets the whole updates that fit in the same CPU time. Each is
    shown at its best learning rate (lowest held-out loss at the budget, mean over seeds).

    Args:
        size: ``"tiny"``, ``"quick"`` or ``"full"``.
        store: the ``optimizers`` experiment's store (runs, cache, figure).
        progress: the progress bar's settings.

    Returns:
        ``(measured, figure path, run ids)``; ``measured`` holds per size the costs, GD's update count,
        the held-out losses per seed at the budget, their ratio, the fit of GD's cost and the crossover.
    """
    from ravine.plots.scaling import Trend, TrendPanel, plot_trends

    sizes = list(SCALE_SIZES[size])
    budget = SCALE_BUDGET[size]
    costs: dict[int, dict[str, float]] = {}
    with progress.bar(len(sizes), f"{NAME}: update cost per size") as bar:
        for n in sizes:
            costs[n] = store.cached(
                NAME,
                f"update-cost-n{n}-b{BATCH}-d{SCALE_DATA['in_features']}-h{'-'.join(map(str, SCALE_MODEL['hidden']))}",
                lambda n=n: {"gd": update_cost(n, None), "sgd": update_cost(n, BATCH)},
            )
            bar.update(1)
    planned = plan_scale(size, costs)
    runs = train_all(store, NAME, planned, progress)
    k_gd = {n: gd_updates(budget, costs[n]["sgd"], costs[n]["gd"]) for n in sizes}
    # held-out loss at the budget: table[arm][n][lr] = [per seed]
    table: dict[str, dict[int, dict[float, list[float]]]] = {"gd": {}, "sgd": {}}
    for p in planned:
        arm = "gd" if p.config.batch_size is None else "sgd"
        n = p.config.data_kwargs["n_train"]
        at = k_gd[n] if arm == "gd" else budget
        table[arm].setdefault(n, {}).setdefault(p.config.optimizer_kwargs["lr"], []).append(
            _loss_at_step(runs[p.label], at)
        )
    best_lr: dict[str, dict[str, float]] = {"gd": {}, "sgd": {}}
    per_seed: dict[str, dict[str, list[float]]] = {"gd": {}, "sgd": {}}
    at_edge: list[str] = []
    for arm in ("gd", "sgd"):
        for n in sizes:
            means = {lr: float(np.mean([finite_or(v, np.inf) for v in vals])) for lr, vals in table[arm][n].items()}
            lr = min(means, key=lambda k: means[k])
            best_lr[arm][str(n)] = lr
            per_seed[arm][str(n)] = table[arm][n][lr]
            if len(means) > 2 and lr in (min(means), max(means)):
                at_edge.append(f"{arm} at N={n}")
    mean_loss = {arm: [float(np.mean(per_seed[arm][str(n)])) for n in sizes] for arm in ("gd", "sgd")}
    ratios = [ratio(s, g) for s, g in zip(mean_loss["sgd"], mean_loss["gd"])]
    fit_sizes = [n for n in sizes if n >= SCALE_FIT_FROM] or sizes
    fit = power_law_fit(fit_sizes, [costs[n]["gd"] for n in fit_sizes])
    fit_all = power_law_fit(sizes, [costs[n]["gd"] for n in sizes])
    sgd_fit = power_law_fit(sizes, [costs[n]["sgd"] for n in sizes])
    cross = crossover(sizes, ratios)
    measured = {
        "sizes": sizes,
        "budget_sgd_updates": budget,
        "batch_size": BATCH,
        "cost_per_update_s": {str(n): costs[n] for n in sizes},
        "gd_updates_at_equal_time": {str(n): k_gd[n] for n in sizes},
        "equal_time_s": {str(n): budget * costs[n]["sgd"] for n in sizes},
        "best_lr": best_lr,
        "best_lr_at_grid_edge": at_edge,
        "test_loss_at_equal_time": per_seed,
        "sgd_over_gd_loss_at_equal_time": {str(n): r for n, r in zip(sizes, ratios)},
        "gd_cost_fit": {**fit, "from_n": fit_sizes[0]},
        "gd_cost_fit_all_sizes": fit_all,
        "sgd_cost_slope": sgd_fit["slope"],
        "crossover": cross,
        "seeds": len(per_seed["gd"][str(sizes[0])]),
    }
    # figure: cost per update, loss at equal time, and both runs' curves at the largest size
    n_max = sizes[-1]
    fit_x = np.array([fit_sizes[0], sizes[-1]], dtype=float)
    panels = [
        TrendPanel(
            "cost of one update vs training-set size",
            "training examples N",
            "CPU seconds per update (1 thread)",
            [
                Trend("GD (full batch)", sizes, [costs[n]["gd"] for n in sizes], color=0),
                Trend(f"SGD (batch {BATCH})", sizes, [costs[n]["sgd"] for n in sizes], color=1),
                Trend(
                    f"fit N >= {fit_sizes[0]:.0e}: slope {fit['slope']:.2f}",
                    fit_x,
                    fit["prefactor"] * fit_x ** fit["slope"],
                    color="0.3",
                    linestyle="--",
                    marker=None,
                ),
            ],
            logy=True,
        ),
        TrendPanel(
            "held-out loss at equal compute",
            "training examples N",
            "test loss (best lr each)",
            [
                Trend("GD", sizes, [per_seed["gd"][str(n)] for n in sizes], color=0),
                Trend("SGD", sizes, [per_seed["sgd"][str(n)] for n in sizes], color=1),
            ],
            spans=[(cross["lower"], cross["upper"], "crossover")] if cross["status"] == "bracketed" else [],
            note=f"budget: {budget} SGD updates of CPU time",
        ),
    ]
    curves = []
    for i, arm in enumerate(("gd", "sgd")):
        lr = best_lr[arm][str(n_max)]
        rs = [
            runs[p.label]
            for p in planned
            if p.config.data_kwargs["n_train"] == n_max
            and (p.config.batch_size is None) == (arm == "gd")
            and p.config.optimizer_kwargs["lr"] == lr
        ]
        evs = [eval_columns(r) for r in rs]
        k = min(len(e["step"]) for e in evs)
        t = evs[0]["step"][:k] * costs[n_max][arm]
        curves.append(
            Trend(f"{arm.upper()} (lr {lr:g})", t, np.array([e["test_loss"][:k] for e in evs]).T, color=i, marker=".")
        )
    panels.append(
        TrendPanel(
            f"held-out loss vs compute at N = {n_max:.0e}",
            "CPU seconds (updates x cost per update)",
            "test loss",
            curves,
            logx=False,
            vlines=[(budget * costs[n_max]["sgd"], "equal budget")],
        )
    )
    fig = store.figure_path(NAME, "data_size")
    plot_trends(
        fig,
        panels,
        suptitle=(
            f"GD vs SGD on a teacher task (MLP 16-32-4), N = {sizes[0]:.0e} to {n_max:.0e}, {measured['seeds']} seed(s)"
        ),
    )
    return measured, str(fig), [r.id for r in runs.values()]


def execute(size: str, store: Store, progress: Progress) -> tuple[dict[str, Any], list[str], list[str], str]:
    from ravine.plots.experiments import Panel, Series, plot_panels

    planned = plan(size)
    runs = train_all(store, NAME, planned, progress)
    # Final training loss (full training set) per optimizer and learning rate, averaged over seeds.
    table: dict[str, dict[float, list[float]]] = {n: {} for n in OPTIMIZERS}
    for p in planned:
        name = p.config.optimizer
        table[name].setdefault(p.config.optimizer_kwargs["lr"], []).append(final_eval(runs[p.label], "train_loss"))
    best_lr: dict[str, float] = {}
    final: dict[str, float] = {}
    sweep: dict[str, dict[str, float]] = {}
    for name, by_lr in table.items():
        means = {lr: float(np.mean([finite_or(v, np.inf) for v in vals])) for lr, vals in by_lr.items()}
        sweep[name] = {f"{lr:g}": (v if np.isfinite(v) else None) for lr, v in means.items()}
        lr = min(means, key=lambda k: means[k])
        best_lr[name], final[name] = lr, means[lr]
    at_edge = [n for n in OPTIMIZERS if len(table[n]) > 2 and best_lr[n] in (min(table[n]), max(table[n]))]
    best = {
        n: [runs[p.label] for p in planned if p.config.optimizer == n and p.config.optimizer_kwargs["lr"] == best_lr[n]]
        for n in OPTIMIZERS
    }
    # Time axis: step k happens at k * (median time of one update). The median over all steps of the
    # optimizer's best runs is robust to a busy machine stalling single steps, which cumulative wall-clock
    # is not; it is the cost of the algorithm, not of the moment it ran.
    step_time = {n: float(np.median(np.concatenate([step_columns(x)["time"] for x in best[n]]))) for n in OPTIMIZERS}
    curves = {}
    for n in OPTIMIZERS:
        evs = [eval_columns(r) for r in best[n]]
        k = min(len(e["step"]) for e in evs)
        steps_ = evs[0]["step"][:k]
        loss = np.mean([e["train_loss"][:k] for e in evs], axis=0)  # mean over seeds
        curves[n] = {"step": steps_, "loss": loss, "wall": steps_ * step_time[n]}
    cost_ratio = ratio(step_time["sgd"], step_time["gd"])
    t_equal = min(curves["gd"]["wall"][-1], curves["sgd"]["wall"][-1])
    loss_gd_t = interp_at(t_equal, curves["gd"]["wall"], curves["gd"]["loss"])
    loss_sgd_t = interp_at(t_equal, curves["sgd"]["wall"], curves["sgd"]["loss"])
    adaptive = min(final["rmsprop"], final["adam"], final["adamw"])
    measured = {
        "steps": int(planned[0].config.steps),
        "batch_size": BATCH,
        "n_train": 1437,
        "best_lr": best_lr,
        "best_lr_at_grid_edge": at_edge,
        "final_train_loss": final,
        "lr_sweep_final_train_loss": sweep,
        "step_time_s": step_time,
        "sgd_over_gd_cost_per_update": cost_ratio,
        "equal_time_s": t_equal,
        "gd_loss_at_equal_time": loss_gd_t,
        "sgd_loss_at_equal_time": loss_sgd_t,
        "sgd_over_gd_loss_at_equal_time": ratio(loss_sgd_t, loss_gd_t),
        "momentum_over_sgd_final_loss": ratio(final["momentum"], final["sgd"]),
        "best_adaptive_over_sgd_final_loss": ratio(adaptive, final["sgd"]),
        "test_acc_at_best_lr": {n: float(np.mean([final_eval(r, "test_acc") for r in best[n]])) for n in OPTIMIZERS},
    }
    fig = store.figure_path(NAME, "optimizers")
    series_step = [
        Series(f"{n} (lr {best_lr[n]:g})", curves[n]["step"], curves[n]["loss"], color=i)
        for i, n in enumerate(OPTIMIZERS)
    ]
    series_wall = [Series(n, curves[n]["wall"], curves[n]["loss"], color=i) for i, n in enumerate(OPTIMIZERS)]
    series_lr = []
    for i, n in enumerate(OPTIMIZERS):
        lrs = sorted(table[n])
        series_lr.append(
            Series(
                n,
                lrs,
                [sweep[n][f"{lr:g}"] if sweep[n][f"{lr:g}"] is not None else np.nan for lr in lrs],
                color=i,
                marker="o",
            )
        )
    plot_panels(
        fig,
        [
            Panel(
                "training loss vs steps (best lr each, seed mean)",
                "step",
                "train loss (full train set)",
                series_step,
                logy=True,
            ),
            Panel(
                "training loss vs wall-clock",
                "seconds (steps x median time per update)",
                "train loss",
                series_wall,
                logy=True,
                vlines=[(t_equal, "equal time")],
                note=f"SGD update costs {cost_ratio:.2f}x a GD update",
            ),
            Panel(
                "learning-rate sweep",
                "learning rate",
                "final train loss",
                series_lr,
                logx=True,
                logy=True,
                ylim=(None, 10.0),
                note="above the top: diverged",
            ),
        ],
        suptitle=f"MLP on digits, {measured['steps']} steps, mini-batch {BATCH} (GD: full batch of 1437)",
    )
    reading = (
        f"At its best learning rate each optimizer ran {measured['steps']} updates. One SGD update (batch {BATCH}) "
        f"took {cost_ratio:.2f}x the time of one full-batch GD update (median per-step time "
        f"{step_time['sgd'] * 1e3:.2f} ms vs {step_time['gd'] * 1e3:.2f} ms; the fixed per-step cost of a tiny "
        f"model on a CPU keeps this ratio far above the batch fraction {BATCH}/1437). At equal wall-clock "
        f"({t_equal:.2f} s) SGD's training loss is {num(loss_sgd_t):.3g} vs GD's {num(loss_gd_t):.3g}. Final "
        f"training losses: "
        + ", ".join(f"{n} {final[n]:.3g}" for n in OPTIMIZERS)
        + "."
        + (
            f" On a dataset this small a full-batch update costs only {1 / cost_ratio:.1f}x a mini-batch one."
            if np.isfinite(cost_ratio) and cost_ratio > 0
            else ""
        )
        + (
            f" The best learning rate of {', '.join(at_edge)} is at the edge of its grid, so that optimizer may "
            "do better outside it."
            if at_edge
            else " Every best learning rate is inside its grid."
        )
        + f" (Momentum against plain SGD is measured along the condition number in the experiment 'momentum'; "
        f"here, on digits, momentum's final loss is {num(measured['momentum_over_sgd_final_loss']):.3g}x SGD's.)"
    )
    figures, run_ids = [str(fig)], [r.id for r in runs.values()]
    scale, scale_fig, scale_ids = scale_arm(size, store, progress)
    measured["data_size"] = scale
    figures.append(scale_fig)
    run_ids += scale_ids
    reading += " " + _scale_reading(scale)
    if size == "full":
        modern, modern_fig, modern_ids = modern_arm(size, store, progress)
        measured["modern"] = modern
        figures.append(modern_fig)
        run_ids += modern_ids
        order = sorted(MODERN, key=lambda n: modern["final_test_loss"][n])
        reading += (
            f" The full arm (a tiny transformer on text, {modern['steps']} steps, {modern['seeds']} seeds, each "
            "optimizer at its best learning rate of a three-point grid): final held-out loss "
            + ", ".join(
                f"{n} {modern['final_test_loss'][n]:.3g} ± {modern['final_test_loss_std'][n]:.2g} "
                f"(lr {modern['best_lr'][n]:g})"
                for n in order
            )
            + "."
            + (
                f" At the edge of its grid: {', '.join(modern['best_lr_at_grid_edge'])}."
                if modern["best_lr_at_grid_edge"]
                else ""
            )
        )
    return measured, figures, run_ids, reading


def _scale_reading(scale: dict[str, Any]) -> str:
    """The data-size arm's paragraph of the reading, from its measurements."""
    sizes = scale["sizes"]
    cost = scale["cost_per_update_s"]
    fit = scale["gd_cost_fit"]
    r = scale["sgd_over_gd_loss_at_equal_time"]
    loss = scale["test_loss_at_equal_time"]
    n_min, n_max = str(sizes[0]), str(sizes[-1])
    text = (
        f"Along the data size (a teacher task, MLP 16-32-4, N = {sizes[0]:.0e} to {sizes[-1]:.0e}, "
        f"{scale['seeds']} seed(s)): one GD update costs {num(cost[n_min]['gd']) * 1e3:.2f} ms of CPU at "
        f"N = {sizes[0]:.0e} and {num(cost[n_max]['gd']) * 1e3:.1f} ms at N = {sizes[-1]:.0e}, growing like "
        f"N^{num(fit['slope']):.2f} from N = {num(fit['from_n']):.0e} on, while one SGD update (batch "
        f"{scale['batch_size']}) stays near {num(cost[n_max]['sgd']) * 1e3:.2f} ms (slope "
        f"{num(scale['sgd_cost_slope']):.2f}). In the CPU time of {scale['budget_sgd_updates']} SGD updates GD "
        "makes "
        + ", ".join(f"{scale['gd_updates_at_equal_time'][str(n)]} (N = {n:.0e})" for n in sizes)
        + " updates; held-out loss at that budget, SGD / GD: "
        + ", ".join(
            f"{num(r[str(n)]):.3g} ({np.mean(loss['sgd'][str(n)]):.3g} vs {np.mean(loss['gd'][str(n)]):.3g}, "
            f"N = {n:.0e})"
            for n in sizes
        )
        + ". "
        + _crossover_sentence(scale["crossover"], sizes[-1])
    )
    if scale["best_lr_at_grid_edge"]:
        text += f" Best learning rate at the edge of its grid: {', '.join(scale['best_lr_at_grid_edge'])}."
    return text


def _crossover_sentence(cross: dict[str, Any], n_max: float) -> str:
    status = cross.get("status")
    if status == "bracketed":
        est = cross.get("estimate")
        return (
            f"SGD overtakes GD at equal compute between N = {num(cross['lower']):.0e} and "
            f"{num(cross['upper']):.0e}" + (f" (about {num(est):.1e} by log interpolation)" if est else "") + "."
        )
    if status == "below range":
        return f"SGD is ahead at equal compute at every measured size, from N = {num(cross['upper']):.0e}."
    return f"SGD has not overtaken GD at equal compute up to N = {num(n_max):.0e}."


def verdict(measured: dict[str, Any]) -> Verdict:
    """Four checks on the measurements (grey zones make near-ties inconclusive):

    - GD's cost per update grows with the data: the log-log slope of its CPU cost per update against N
      over the large sizes is > 0.75 (grey zone ±0.1): at 0.75 the part of an update proportional to N
      (the pass over the data) is three quarters of its cost;
    - at the largest N, SGD's / GD's held-out loss at equal compute < 1 (grey zone ±0.05);
    - the crossover: the smallest measured N from which SGD is ahead at every larger measured N is within
      the measured range (NaN, inconclusive, when it was not reached);
    - the best adaptive method's (RMSProp, Adam, AdamW) / SGD's final training loss on digits < 1 (±0.05).

    Momentum is judged in the ``momentum`` experiment, along the condition number; the digits numbers
    (cost per update, loss at equal time, momentum / SGD) stay in the measurements and the reading.
    """
    scale = measured.get("data_size") or {}
    sizes = scale.get("sizes") or []
    n_max = float(sizes[-1]) if sizes else float("nan")
    cross = scale.get("crossover") or {}
    ratios = scale.get("sgd_over_gd_loss_at_equal_time") or {}
    upper = num(cross.get("upper")) if cross.get("status") in ("bracketed", "below range") else float("nan")
    checks = [
        threshold_check(
            "gd_cost_slope",
            num((scale.get("gd_cost_fit") or {}).get("slope")),
            ">",
            0.75,
            "log-log slope of GD's CPU cost per update against the training-set size (large sizes)",
            margin=0.1,
        ),
        threshold_check(
            "sgd_over_gd_loss_at_equal_time_largest_n",
            num(ratios.get(str(sizes[-1]))) if sizes else float("nan"),
            "<",
            1.0,
            f"held-out loss at equal compute, SGD / GD, at the largest N ({n_max:.0e})",
            margin=0.05,
        ),
        threshold_check(
            "crossover_n",
            upper,
            "<=",
            n_max if np.isfinite(n_max) else float("inf"),
            "smallest measured N from which SGD is ahead of GD at equal compute at every larger N",
        ),
        threshold_check(
            "best_adaptive_over_sgd_final_loss",
            num(measured.get("best_adaptive_over_sgd_final_loss")),
            "<",
            1.0,
            "final training loss on digits, best of RMSProp/Adam/AdamW / SGD",
            margin=0.05,
        ),
    ]
    failed = [c.name for c in checks if c.status != "supported"]
    expl = (
        "GD's update cost grows with the data while SGD's does not, SGD is ahead at equal compute from the "
        "crossover on, and an adaptive method beats SGD on digits."
        if not failed
        else "Not all comparisons came out as the chapter says: " + ", ".join(failed) + "."
    )
    return Verdict.from_checks(checks, expl, _scale_text(scale))


def _scale_text(scale: dict[str, Any]) -> str:
    """Where the verdict holds, from the data-size arm's measurements."""
    sizes = scale.get("sizes") or []
    cross = scale.get("crossover") or {}
    if not sizes:
        return "GD vs SGD: not measured along the data size; adaptive methods: digits (1437 images) only"
    budget = scale.get("budget_sgd_updates")
    status = cross.get("status")
    if status == "bracketed":
        est = cross.get("estimate")
        where = (
            f"SGD beats GD at equal compute for N >= {num(cross['upper']):.0e} (crossover measured between "
            f"{num(cross['lower']):.0e} and {num(cross['upper']):.0e}"
            + (f", about {num(est):.1e}" if est else "")
            + f"; measured up to {sizes[-1]:.0e})"
        )
    elif status == "below range":
        where = f"SGD beats GD at equal compute at every measured N, {sizes[0]:.0e} to {sizes[-1]:.0e}"
    else:
        where = f"SGD has not overtaken GD at equal compute up to N = {sizes[-1]:.0e}"
    return (
        f"{where}, at a budget of {budget} SGD updates, on a teacher task with an MLP 16-32-4; "
        "adaptive methods vs SGD: digits (1437 images) only"
    )


EXPERIMENT = Experiment(NAME, TITLE, CLAIM, SECTION, execute, verdict)
