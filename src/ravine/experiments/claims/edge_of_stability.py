"""Experiment ``edge-of-stability``: full-batch training runs at the edge of stability (Cohen et al. 2021, 2022).

A 64-64 tanh MLP trained full-batch on the bundled digits (the default split's 1438 training images)
with the square loss on one-hot targets (``TrainConfig(loss="mse")``: Cohen et al.'s main setting; with
cross-entropy the sharpness of an easily separated dataset falls as the margins grow). Every run
records ``ravine.curvature.SharpnessMonitor`` through the harness (``sharpness_every``) on the whole
training set:

- gradient descent at several learning rates ``eta``: ``lambda_max(H)`` against ``2 / eta``;
- heavy-ball momentum (``ravine.optim.sgd``, ``beta = 0.9``): ``lambda_max(H)`` against
  ``2 (1 + beta) / eta``;
- Adam (``beta1 = 0.9``): the preconditioned sharpness ``lambda_max(P^{-1} H)`` against
  ``(2 + 2 beta1) / ((1 - beta1) eta) = 38 / eta`` (Cohen et al. 2022).

Measured per run, from the sharpness records (``ratio`` = sharpness / threshold) and the per-step
full-batch loss: the initial ratio (step 0; Adam's first measurement after a step) and the largest;
the first step where the ratio reaches 0.9; the median ratio over the second half of training (the
"hover"); the final loss over the loss at that first step; the fraction of steps after it on which the
loss went up. The learning rates put every threshold above the initial sharpness, so the sharpness has
to rise to meet it (progressive sharpening).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ravine.experiments.claims._common import Planned, pick, step_columns, train_all
from ravine.experiments.claims._core import Check, Experiment, Progress, Store, Verdict, threshold_check
from ravine.experiments.claims._stats import num, ratio

NAME = "edge-of-stability"
TITLE = "Training at the edge of stability"
SECTION = "Loss Landscapes and Convergence"
CLAIM = (
    "Too high a learning rate makes the updates overshoot the minimum (the chapter); on a quadratic, "
    "gradient descent is stable exactly while the sharpness (the top Hessian eigenvalue) stays below "
    "2/lr. Cohen et al. (2021, 2022) find that full-batch training does not stay away from that limit: "
    "the sharpness rises during training until it reaches 2/lr (2(1+beta)/lr with heavy-ball momentum; "
    "38/lr for Adam's preconditioned sharpness at beta1 = 0.9) and then hovers there, while the loss keeps "
    "falling, though not monotonically."
)

HIDDEN = [64, 64]
BETA = 0.9  # heavy-ball momentum
# thresholds, fixed before any run (see verdict)
REACH = 0.9  # the ratio that counts as "reached the threshold"
RISE = 1.25  # largest ratio / initial ratio
HOVER_LO, HOVER_HI = 0.8, 1.25  # median ratio over the second half
INCREASING = 0.05  # fraction of steps after reaching on which the loss went up


def _config(size: str, optimizer: str, lr: float, **kw: Any):
    from ravine.experiments import TrainConfig

    steps = pick(size, 12, 800, 2000)
    return TrainConfig(
        data="digits",
        model="mlp",
        model_kwargs={"hidden": HIDDEN, "activation": "tanh"},
        optimizer=optimizer,
        optimizer_kwargs={"lr": lr, **kw},
        loss="mse",
        steps=steps,
        batch_size=None,
        eval_every=max(1, steps // 8),
        hessian_samples=100_000,  # all training samples: the Hessian of the loss being minimised
        sharpness_every=pick(size, 4, 10, 5),
    )


def plan(size: str) -> list[Planned]:
    gd = pick(size, (0.45,), (0.3, 0.45, 0.6), (0.2, 0.3, 0.45, 0.6))
    hb = pick(size, (0.3,), (0.3,), (0.2, 0.3))
    adam = pick(size, (2e-3,), (2e-3,), (1e-3, 2e-3))
    out = [Planned(f"gd-lr{lr:g}", _config(size, "gd", lr)) for lr in gd]
    out += [Planned(f"heavy-ball-lr{lr:g}", _config(size, "sgd", lr, momentum=BETA)) for lr in hb]
    out += [Planned(f"adam-lr{lr:g}", _config(size, "adam", lr)) for lr in adam]
    return out


def measure_run(sharp: dict[str, np.ndarray], steps: dict[str, np.ndarray], n_steps: int) -> dict[str, Any]:
    """The per-run measurements from a run's sharpness columns and step columns (see the module docstring)."""
    s_step = np.asarray(sharp["step"], dtype=float)
    r = np.asarray(sharp["ratio"], dtype=float)
    finite = np.isfinite(r)
    loss_step = np.asarray(steps["step"], dtype=float)
    loss = np.asarray(steps["loss"], dtype=float)
    out: dict[str, Any] = {
        "initial_ratio": float(r[finite][0]) if finite.any() else float("nan"),
        "max_ratio": float(np.max(r[finite])) if finite.any() else float("nan"),
        "median_ratio_second_half": float("nan"),
        "first_reach_step": None,
        "loss_at_reach": float("nan"),
        "final_loss": float(loss[-1]) if len(loss) else float("nan"),
        "increasing_fraction": float("nan"),
        "above_fraction_second_half": float("nan"),
    }
    late = finite & (s_step > n_steps / 2)
    if late.any():
        out["median_ratio_second_half"] = float(np.median(r[late]))
        out["above_fraction_second_half"] = float(np.mean(r[late] > 1.0))
    reached = np.flatnonzero(finite & (r >= REACH))
    if len(reached):
        k = int(s_step[reached[0]])
        out["first_reach_step"] = k
        # step records hold the full-batch loss *before* update t, i.e. at the weights after update t - 1
        at = np.flatnonzero(loss_step == k + 1)
        out["loss_at_reach"] = float(loss[at[0]]) if len(at) else float("nan")
        after = loss[loss_step > k + 1]
        prev = loss[loss_step >= k + 1][: len(after)]
        if len(after):
            out["increasing_fraction"] = float(np.mean(after > prev))
    out["rise"] = ratio(out["max_ratio"], out["initial_ratio"])
    out["final_over_reach"] = ratio(out["final_loss"], out["loss_at_reach"])
    return out


def _label_of(kind: str) -> tuple[str, str]:
    """(sharpness label, threshold label) of a rule kind."""
    if kind == "adam":
        return "λmax(P⁻¹H)", "38/η"
    if kind == "heavy_ball":
        return "λmax(H)", f"2(1+β)/η, β = {BETA:g}"
    return "λmax(H)", "2/η"


def execute(size: str, store: Store, progress: Progress) -> tuple[dict[str, Any], list[str], list[str], str]:
    from ravine.plots.stability import StabilityPanel, plot_stability

    planned = plan(size)
    runs = train_all(store, NAME, planned, progress)
    n_steps = planned[0].config.steps
    per_run: dict[str, Any] = {}
    series: dict[str, Any] = {}
    for p in planned:
        run = runs[p.label]
        sharp, steps = run.columns("sharpness"), step_columns(run)
        kinds = [k for k in sharp["rule"] if k is not None]
        m = measure_run(sharp, steps, n_steps)
        thr = np.asarray(sharp["threshold"], dtype=float)
        m.update(
            optimizer=kinds[0] if kinds else None,
            lr=p.config.optimizer_kwargs["lr"],
            threshold=float(thr[np.isfinite(thr)][-1]) if np.isfinite(thr).any() else float("nan"),
            hvps_per_measurement=float(np.mean(sharp["hvps"][1:])) if len(sharp["hvps"]) > 1 else float("nan"),
            status=run.status,
        )
        per_run[p.label] = m
        series[p.label] = {
            "steps": sharp["step"],
            "sharpness": sharp["sharpness"],
            "threshold": sharp["threshold"],
            "lambda_max": sharp["lambda_max"],
            "loss_steps": steps["step"] - 1,  # the loss before update t is the loss at step t - 1
            "loss": steps["loss"],
        }
    n_train = runs[planned[0].label].metadata.get("data", {}).get("n_train")
    measured = {
        "steps": n_steps,
        "n_train": n_train,
        "hidden": HIDDEN,
        "loss": "mse",
        "beta_heavy_ball": BETA,
        "sharpness_every": planned[0].config.sharpness_every,
        "runs": per_run,
        "series": series,
    }

    def panel(label: str, i: int) -> StabilityPanel:
        m, s = per_run[label], series[label]
        sl, tl = _label_of(m["optimizer"] or "gd")
        return StabilityPanel(
            title=label.replace("-lr", ", η = ") + ("" if m["status"] == "completed" else f" ({m['status']})"),
            steps=s["steps"],
            sharpness=s["sharpness"],
            threshold=s["threshold"],
            sharpness_label=sl,
            threshold_label=tl,
            loss_steps=s["loss_steps"],
            loss=s["loss"],
            reached_step=m["first_reach_step"],
            reached_label=f"ratio reaches {REACH:g}",
            ylabel="preconditioned sharpness λmax(P⁻¹H)" if m["optimizer"] == "adam" else None,
            color=i,
        )

    suptitle = f"{'-'.join(map(str, HIDDEN))} tanh MLP, full batch on {n_train} digits, MSE loss"
    figs = []
    gd_labels = [p.label for p in planned if p.config.optimizer == "gd"]
    other = [p.label for p in planned if p.config.optimizer != "gd"]
    f1 = store.figure_path(NAME, "eos_gd")
    plot_stability(
        f1,
        [panel(lab, i) for i, lab in enumerate(gd_labels)],
        suptitle=f"Gradient descent: sharpness rises to 2/η and hovers there ({suptitle})",
        loss_label="training loss (MSE)",
        sharpness_axis="top Hessian eigenvalue λmax(H)",
    )
    figs.append(str(f1))
    f2 = store.figure_path(NAME, "eos_momentum_adam")
    plot_stability(
        f2,
        [panel(lab, len(gd_labels) + i) for i, lab in enumerate(other)],
        suptitle=f"Heavy-ball momentum and Adam at their own thresholds ({suptitle})",
        loss_label="training loss (MSE)",
        sharpness_axis="top Hessian eigenvalue λmax(H)",
    )
    figs.append(str(f2))
    return measured, figs, [r.id for r in runs.values()], _reading(measured)


def _fmt(x: Any, spec: str = ".2f") -> str:
    v = num(x)
    return "n/a" if not np.isfinite(v) else format(v, spec)


def _reading(m: dict[str, Any]) -> str:
    parts = []
    for label, r in m["runs"].items():
        if r["first_reach_step"] is not None:
            reach = (
                f"reached 0.9 at step {r['first_reach_step']} (loss {_fmt(r['loss_at_reach'], '.4f')}) and then "
                f"hovered at a median of {_fmt(r['median_ratio_second_half'])} over the second half "
                f"({_fmt(100 * num(r['above_fraction_second_half']), '.0f')}% of those measurements above 1, "
                f"where the quadratic model predicts divergence), while the loss fell to "
                f"{_fmt(r['final_loss'], '.4f')}, going up on {_fmt(100 * num(r['increasing_fraction']), '.1f')}% "
                "of the steps"
            )
        else:
            reach = "never reached 0.9"
        parts.append(
            f"{label} (threshold {_fmt(r['threshold'], '.4g')}): the ratio sharpness/threshold went from "
            f"{_fmt(r['initial_ratio'])} to at most {_fmt(r['max_ratio'])}; it {reach}."
        )
    b = m["beta_heavy_ball"]
    hb = [r["lr"] for lab, r in m["runs"].items() if lab.startswith("heavy-ball")]
    ema = (
        f" The chapter's EMA momentum (v ← βv + (1−β)g, θ ← θ − ηv) takes heavy ball's steps at lr η(1−β), so its "
        f"threshold is 2(1+β)/((1−β)η): the heavy-ball run at lr {hb[0]:g} is EMA momentum at η = {hb[0] / (1 - b):g}, "
        f"threshold {2 * (1 + b) / hb[0]:.4g} either way."
        if hb
        else ""
    )
    return (
        f"Full-batch training of a {'-'.join(map(str, m['hidden']))} tanh MLP on {m['n_train']} digits with the "
        f"square loss (MSE on one-hot targets, Cohen et al.'s setting), sharpness measured every "
        f"{m['sharpness_every']} steps on the whole training set (warm-started Lanczos). " + " ".join(parts) + ema
    )


def _run_checks(label: str, r: dict[str, Any]) -> list[Check]:
    return [
        threshold_check(
            f"{label}: rise",
            num(r.get("rise")),
            ">=",
            RISE,
            "largest ratio sharpness/threshold over the initial one (progressive sharpening)",
            margin=0.1,
        ),
        threshold_check(
            f"{label}: reach",
            num(r.get("max_ratio")),
            ">=",
            REACH,
            "largest ratio sharpness/threshold during training",
            margin=0.05,
        ),
        threshold_check(
            f"{label}: hover (low)",
            num(r.get("median_ratio_second_half")),
            ">=",
            HOVER_LO,
            "median ratio over the second half of training",
            margin=0.05,
        ),
        threshold_check(
            f"{label}: hover (high)",
            num(r.get("median_ratio_second_half")),
            "<=",
            HOVER_HI,
            "median ratio over the second half of training",
            margin=0.05,
        ),
        threshold_check(
            f"{label}: loss falls",
            num(r.get("final_over_reach")),
            "<",
            1.0,
            "final loss / loss when the threshold was first reached",
            margin=0.05,
        ),
        threshold_check(
            f"{label}: non-monotone",
            num(r.get("increasing_fraction")),
            ">",
            INCREASING,
            "fraction of steps after reaching the threshold on which the loss went up",
            margin=0.02,
        ),
    ]


def verdict(measured: dict[str, Any]) -> Verdict:
    """Six checks per run (each with a grey zone), fixed before the runs:

    - rise: largest ratio / initial ratio >= 1.25 (±0.1): the sharpness rose to meet the threshold;
    - reach: largest ratio >= 0.9 (±0.05);
    - hover: median ratio over the second half in [0.8, 1.25] (±0.05 at each end);
    - loss falls: final loss / loss when the ratio first reached 0.9 < 1 (±0.05);
    - non-monotone: the loss went up on more than 5% (±2%) of the steps after that.

    Supported when every check of every run (GD at each lr, heavy ball, Adam) is.
    """
    runs = measured["runs"]
    checks = [c for label, r in runs.items() for c in _run_checks(label, r)]
    failed = sorted({c.name.split(":")[0] for c in checks if c.status == "not supported"})
    grey = sorted({c.name.split(":")[0] for c in checks if c.status == "inconclusive"} - set(failed))
    if not failed and not grey:
        expl = (
            "Every run's sharpness rose to its optimizer's threshold (2/η for GD, 2(1+β)/η for heavy ball, "
            "38/η for Adam's preconditioned sharpness) and hovered there while the loss kept falling, "
            "non-monotonically."
        )
    else:
        missing = []
        for lab in failed + grey:
            names = [c.name.split(": ")[1] for c in checks if c.name.startswith(lab + ":") and c.status != "supported"]
            missing.append(f"{lab}: {', '.join(names)}")
        expl = (
            f"Not every run shows the whole pattern (checks not supported or in their grey zone): {'; '.join(missing)}."
        )
    lrs = {k: [r["lr"] for lab, r in runs.items() if lab.startswith(k)] for k in ("gd", "heavy-ball", "adam")}
    held = [lab for lab in runs if lab not in failed and lab not in grey]
    scale = (
        f"measured on a {'-'.join(map(str, measured['hidden']))} tanh MLP, full batch on {measured['n_train']} digits, "
        f"MSE, {measured['steps']} steps: GD at lr {', '.join(f'{x:g}' for x in lrs['gd'])}; heavy ball "
        f"(β = {measured['beta_heavy_ball']:g}) at lr {', '.join(f'{x:g}' for x in lrs['heavy-ball'])}; Adam at lr "
        f"{', '.join(f'{x:g}' for x in lrs['adam'])}; the pattern holds for {len(held)} of {len(runs)} runs"
        + (f" ({', '.join(held)})" if held and len(held) < len(runs) else "")
    )
    return Verdict.from_checks(checks, expl, scale)


EXPERIMENT = Experiment(NAME, TITLE, CLAIM, SECTION, execute, verdict)
