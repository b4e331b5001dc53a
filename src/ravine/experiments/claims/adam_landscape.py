"""Experiment ``adam-landscape``: what Adam's preconditioning does to the conditioning of the landscape.

Adam's step is ``-lr P^{-1} m`` with the diagonal ``P = (1 - beta1^t)(sqrt(v_hat) + eps)``
(:func:`ravine.curvature.adam_preconditioner`), so near a point it runs gradient descent on a landscape
whose Hessian is ``P^{-1} H`` (similar to the symmetric ``P^{-1/2} H P^{-1/2}``, which has the same real
eigenvalues). The experiment compares the condition number of ``H`` with that of ``P^{-1} H`` along
Adam's own training:

1. **The narrow valley** (``valley`` of :mod:`ravine.surfaces`, ``f = (x^2 + 25 y^2) / 2``: ``H =
   diag(1, 25)`` everywhere, condition number exactly 25). Adam (``ravine.optim.adam``, ``lr = 0.05``,
   torch's defaults otherwise) from the surface's start, its ``exp_avg_sq`` read after every step;
   ``kappa(P^{-1} H) = lambda_max / lambda_min`` of the 2x2 matrix, exact. Gradient descent at the
   surface's suggested rate ``1.75 / 25`` is drawn beside it: the zig-zag across the valley that Adam's
   per-coordinate rescaling removes.
2. **A real network**: an MLP (64-16-10, ReLU) on digits trained with Adam (``lr = 3e-3``, batches
   of 64); at each checkpoint the dense Hessian of the mean training loss over the whole training set
   (``P = 1210`` parameters, float64) and Adam's ``P`` from the checkpoint's optimizer state. A
   network's Hessian has a bulk of eigenvalues near zero and some negative ones, so ``lambda_max /
   lambda_min`` means nothing; the condition number measured is over the top of the spectrum,
   ``kappa_10 = lambda_1 / lambda_10`` (the ten largest eigenvalues; ten is the number of classes, the
   count of outliers above the bulk in classification Hessians: Sagun et al. 2017, Papyan 2019), for
   ``H`` and for ``P^{-1} H`` alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ravine.experiments.claims._common import Planned, eval_columns, pick, train_all
from ravine.experiments.claims._core import Experiment, Progress, Store, Verdict, threshold_check
from ravine.experiments.claims._stats import num

NAME = "adam-landscape"
TITLE = "Adam's preconditioning reshapes the landscape"
SECTION = "What Adam Does to the Loss Landscape"
CLAIM = (
    "Adam divides each coordinate's step by the root mean square of its recent gradients. In a narrow valley "
    "that is steep across and shallow along, this shrinks the steps across and enlarges the steps along: Adam "
    "behaves as if the landscape were rescaled to be rounder, i.e. it lowers the effective condition number "
    "that makes plain gradient descent zig-zag."
)

CONDITION = 25.0
ADAM_LR_2D = 0.05  # the valley's suggested rate for adaptive optimizers
TOP_K = 10
NET_MODEL = {"hidden": [16]}
NET_LR = 3e-3
NET_BATCH = 64


# ----------------------------------------------------------------------------------------------- 2D
def condition_number(h: Any, p: Any | None = None) -> float:
    """``lambda_max / lambda_min`` of ``H`` (or of ``P^{-1} H`` for a positive diagonal ``P``, through the
    similar symmetric ``P^{-1/2} H P^{-1/2}``); NaN unless every eigenvalue is positive.

    Args:
        h: a symmetric ``(n, n)`` matrix (tensor or array).
        p: the diagonal of ``P``, ``(n,)``, or ``None`` for ``H`` itself.

    Returns:
        The condition number.
    """
    lam = preconditioned_eigenvalues(h, p)
    return float(lam[-1] / lam[0]) if lam[0] > 0 else float("nan")


def preconditioned_eigenvalues(h: Any, p: Any | None = None) -> np.ndarray:
    """Ascending eigenvalues of ``P^{-1} H`` (``H`` when ``p`` is None), via ``P^{-1/2} H P^{-1/2}``.

    Args:
        h: a symmetric ``(n, n)`` matrix (tensor or array).
        p: the positive diagonal of ``P``, ``(n,)``, or ``None``.

    Returns:
        A float64 numpy array of the ``n`` eigenvalues, ascending.
    """
    import torch

    h = torch.as_tensor(h, dtype=torch.float64)
    if p is not None:
        s = torch.as_tensor(p, dtype=torch.float64).rsqrt()
        h = s[:, None] * h * s[None, :]
    return torch.linalg.eigvalsh((h + h.T) / 2).numpy()


def top_k_condition(lam: np.ndarray, k: int = TOP_K) -> float:
    """``lambda_1 / lambda_k`` over the ``k`` largest of ``lam``; NaN when ``lambda_k <= 0``."""
    top = np.sort(np.asarray(lam, dtype=float))[::-1][:k]
    return float(top[0] / top[-1]) if len(top) == k and top[-1] > 0 else float("nan")


def _find(state: Any, key: str) -> Any:
    """The first ``key`` entry in a (chain's nested) ``ravine.optim`` state."""
    if isinstance(state, dict):
        if key in state:
            return state[key]
        for v in state.values():
            got = _find(v, key)
            if got is not None:
                return got
    if isinstance(state, list):
        for v in state:
            got = _find(v, key)
            if got is not None:
                return got
    return None


def adam_on_valley(steps: int, lr: float = ADAM_LR_2D, condition: float = CONDITION) -> dict[str, Any]:
    """Adam on the valley from its start: positions, Adam's ``P`` after each step, and the condition
    numbers of ``H`` and ``P^{-1} H`` there (``step t`` = after ``t`` updates, ``t = 1..steps``)."""
    import torch

    import ravine.optim as ro
    from ravine.curvature import adam_preconditioner
    from ravine.surfaces import get

    surface = get("valley", condition=condition)
    tr = ro.adam(lr=lr)
    b1, b2, eps = tr.hyperparams["b1"], tr.hyperparams["b2"], tr.hyperparams["eps"]
    xy = torch.tensor([surface.start], dtype=torch.float64)
    state = tr.init([xy])
    path, pre, raw, precond = [xy[0].tolist()], [], [], []
    for t in range(1, steps + 1):
        g = surface.grad(xy)
        (u,), state = tr.update([g.clone()], state, [xy])
        xy = xy + u
        path.append(xy[0].tolist())
        v = _find(state, "exp_avg_sq")[0]
        (p,) = adam_preconditioner(exp_avg_sq=[v[0]], step=t, betas=(b1, b2), eps=eps)
        h = surface.hessian(xy[0])
        pre.append(p.tolist())
        raw.append(condition_number(h))
        precond.append(condition_number(h, p))
    return {
        "lr": lr,
        "condition": condition,
        "steps": steps,
        "path": np.array(path),
        "preconditioner": np.array(pre),
        "kappa_raw": np.array(raw),
        "kappa_preconditioned": np.array(precond),
    }


def valley_2d(size: str) -> dict[str, Any]:
    """Adam's conditioning along its path on the valley, and gradient descent's path for the picture."""
    from ravine.simulate import run
    from ravine.surfaces import get

    steps = pick(size, 20, 150, 300)
    adam = adam_on_valley(steps)
    surface = get("valley", condition=CONDITION)
    gd_lr = surface.default_lr("gd")
    gd = run(surface, [{"name": "gd", "lr": gd_lr}], steps=steps)
    ratio = adam["kappa_preconditioned"] / adam["kappa_raw"]
    return {
        **adam,
        "gd_lr": gd_lr,
        "gd_path": gd.positions[0],
        "gd_final_loss": float(gd.losses[0, -1]),
        "adam_final_loss": float(surface.value(adam["path"][-1]).item()),
        "ratio_median": float(np.median(ratio)),
        "kappa_preconditioned_median": float(np.median(adam["kappa_preconditioned"])),
    }


# ----------------------------------------------------------------------------------------------- network
def plan(size: str) -> list[Planned]:
    from ravine.experiments import TrainConfig

    steps = pick(size, 10, 400, 1500)
    seeds = pick(size, (0,), (0,), (0, 1, 2))
    checkpoints = pick(size, 1, 5, 10)
    return [
        Planned(
            f"adam-s{seed}",
            TrainConfig(
                data="digits",
                model="mlp",
                model_kwargs=NET_MODEL,
                optimizer="adam",
                optimizer_kwargs={"lr": NET_LR},
                steps=steps,
                batch_size=NET_BATCH,
                eval_every=max(1, steps // 20),
                checkpoint_every=max(1, steps // checkpoints),
                keep_checkpoints=0,
                seed=seed,
            ),
        )
        for seed in seeds
    ]


def network_conditioning(run: Any, step: int) -> dict[str, Any]:
    """At checkpoint ``step``: the top-``TOP_K`` eigenvalues of the dense Hessian (training loss, whole
    training set, float64) and of ``P^{-1} H`` with Adam's ``P`` from the checkpoint's optimizer state."""
    import torch

    from ravine.curvature import HessianOperator, adam_preconditioner
    from ravine.experiments.data import cross_entropy
    from ravine.experiments.runs import load_checkpoint

    ds = run.load_dataset()
    model = run.load_model(step)
    _, _, state = load_checkpoint(run.path, step)
    opt = state["optimizer"]
    group = opt["param_groups"][0]
    per = [opt["state"][i] for i in sorted(opt["state"])]
    pre = adam_preconditioner(
        exp_avg_sq=[s["exp_avg_sq"] for s in per],
        step=int(per[0]["step"]),
        betas=(group.get("b1", 0.9), group.get("b2", 0.999)),
        eps=group.get("eps", 1e-8),
    )
    op = HessianOperator(model, cross_entropy, (ds.x_train, ds.y_train), dtype=torch.float64, cache_graph=True)
    h = op.dense()
    p = op.flatten([t.to(torch.float64) for t in pre])
    lam = preconditioned_eigenvalues(h)
    lam_p = preconditioned_eigenvalues(h, p)
    return {
        "step": step,
        "top_raw": lam[::-1][:TOP_K],
        "top_preconditioned": lam_p[::-1][:TOP_K],
        "kappa_raw": top_k_condition(lam),
        "kappa_preconditioned": top_k_condition(lam_p),
        "negative_fraction": float(np.mean(lam < -1e-3 * np.abs(lam).max())),
        "p_spread": float(p.max() / p.min()),
    }


def execute(size: str, store: Store, progress: Progress) -> tuple[dict[str, Any], list[str], list[str], str]:
    from ravine.plots.escape import Path2D, SurfacePanel, plot_grid
    from ravine.plots.experiments import Panel, Series
    from ravine.surfaces import get

    valley = store.cached(NAME, f"valley-{size}", lambda: valley_2d(size))
    planned = plan(size)
    runs = train_all(store, NAME, planned, progress)
    along: dict[str, list[dict[str, Any]]] = {}
    for p in planned:
        r = runs[p.label]
        along[p.label] = [
            store.cached(NAME, f"conditioning-{r.id}-{s}", lambda r=r, s=s: network_conditioning(r, s))
            for s in r.checkpoints
        ]
    ratios = [
        num(a["kappa_preconditioned"]) / num(a["kappa_raw"])
        for rows in along.values()
        for a in rows
        if num(a["kappa_raw"]) > 0
    ]
    net_ratio = float(np.median(ratios)) if ratios else float("nan")
    measured = {
        "valley": valley,
        "network": {
            "model": NET_MODEL,
            "lr": NET_LR,
            "batch": NET_BATCH,
            "top_k": TOP_K,
            "steps": planned[0].config.steps,
            "seeds": len(planned),
            "along": along,
            "final_test_loss": {k: float(eval_columns(runs[k])["test_loss"][-1]) for k in along},
        },
        "valley_ratio": valley["ratio_median"],
        "network_ratio": net_ratio,
    }

    surface = get("valley", condition=CONDITION)
    t = np.arange(1, valley["steps"] + 1)
    net_series = []
    for label, rows in along.items():
        st = [a["step"] for a in rows]
        suffix = f" ({label.split('-')[-1]})" if len(along) > 1 else ""
        net_series.append(Series(f"H{suffix}", st, [a["kappa_raw"] for a in rows], color=3, marker="o"))
        net_series.append(Series(f"P^-1 H{suffix}", st, [a["kappa_preconditioned"] for a in rows], color=0, marker="s"))
    f = store.figure_path(NAME, "adam_landscape")
    plot_grid(
        f,
        [
            SurfacePanel(
                f"valley (x^2 + {CONDITION:g} y^2)/2: {valley['steps']} steps",
                surface,
                paths=[
                    Path2D(f"GD, lr {valley['gd_lr']:.3g}", valley["gd_path"], color=3),
                    Path2D(f"Adam, lr {ADAM_LR_2D:g}", valley["path"], color=0),
                ],
                note=f"final loss: GD {valley['gd_final_loss']:.2g}, Adam {valley['adam_final_loss']:.2g}",
            ),
            Panel(
                "valley: condition number along Adam's path",
                "Adam step",
                "lambda_max / lambda_min",
                [
                    Series("H (exact)", t, valley["kappa_raw"], color=3),
                    Series("P^-1 H (Adam's preconditioner)", t, valley["kappa_preconditioned"], color=0),
                ],
                logy=True,
                hlines=[(1.0, "1: perfectly round")],
            ),
            Panel(
                f"MLP on digits: top-{TOP_K} condition number",
                "Adam step",
                f"lambda_1 / lambda_{TOP_K}",
                net_series,
                ylim=(0, None),
            ),
        ],
        suptitle=f"Adam's preconditioner P = (1 - b1^t)(sqrt(v_hat) + eps); MLP {NET_MODEL['hidden']}, "
        f"Adam lr {NET_LR:g}, batch {NET_BATCH}",
    )
    rows = [a for rs in along.values() for a in rs]
    reading = (
        f"On the valley (condition number {CONDITION:g} everywhere) Adam's preconditioned Hessian P^-1 H had a "
        f"median condition number of {valley['kappa_preconditioned_median']:.3g} along its {valley['steps']} steps "
        f"(median ratio to H's {num(valley['ratio_median']):.2f}, range "
        f"{np.min(valley['kappa_preconditioned']):.3g} to {np.max(valley['kappa_preconditioned']):.3g}); it ended at "
        f"loss {valley['adam_final_loss']:.2g} against gradient descent's {valley['gd_final_loss']:.2g}. On the "
        f"MLP, over {len(rows)} checkpoints, lambda_1 / lambda_{TOP_K} of H ran from "
        f"{min(num(a['kappa_raw']) for a in rows):.3g} to {max(num(a['kappa_raw']) for a in rows):.3g} and of "
        f"P^-1 H from {min(num(a['kappa_preconditioned']) for a in rows):.3g} to "
        f"{max(num(a['kappa_preconditioned']) for a in rows):.3g} (median ratio {num(net_ratio):.2f}); Adam's P "
        f"spanned a factor {np.median([a['p_spread'] for a in rows]):.3g} across parameters (median)."
        if rows
        else "No checkpoint was measured."
    )
    return measured, [str(f)], [r.id for r in runs.values()], reading


def verdict(measured: dict[str, Any]) -> Verdict:
    """Two checks (thresholds fixed before any run):

    - ``valley_ratio``: median over Adam's steps of kappa(P^-1 H) / kappa(H) on the valley, < 1 (grey zone
      ±0.1);
    - ``network_ratio``: median over checkpoints of kappa_10(P^-1 H) / kappa_10(H) on the MLP, < 1 (grey
      zone ±0.1).
    """
    checks = [
        threshold_check(
            "valley_ratio",
            num(measured["valley_ratio"]),
            "<",
            1.0,
            "2D valley: condition number of P^-1 H / of H, median along Adam's path",
            margin=0.1,
        ),
        threshold_check(
            "network_ratio",
            num(measured["network_ratio"]),
            "<",
            1.0,
            f"MLP: lambda_1/lambda_{TOP_K} of P^-1 H / of H, median over checkpoints",
            margin=0.1,
        ),
    ]
    bad = [c.name for c in checks if c.status != "supported"]
    expl = (
        "Adam's preconditioner made the landscape better conditioned both on the valley and on the network."
        if not bad
        else "Not everywhere: " + ", ".join(bad) + "."
    )
    net = measured.get("network", {})
    scale = (
        f"measured on the 2D valley (condition {CONDITION:g}) and a 1-hidden-layer MLP on digits "
        f"({net.get('seeds', '?')} seed(s), condition number over the top {TOP_K} eigenvalues) only"
    )
    return Verdict.from_checks(checks, expl, scale)


EXPERIMENT = Experiment(NAME, TITLE, CLAIM, SECTION, execute, verdict)
