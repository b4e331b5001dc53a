"""Experiment ``sharp-flat``: do small batches find flatter minima, and do flatter minima generalize better?

An MLP with two hidden ReLU layers of 64 units is trained on the bundled digits with plain SGD at
one learning rate (0.2) from several seeds, with small batches (16) and with the full training set
(gradient descent, the largest batch there is). Each run is stopped, in effect, where it first
reaches the same training loss (0.05 nats, chosen in advance): the harness evaluates and
checkpoints every 25 steps, and the minimum measured is the first checkpoint whose training loss is
at or below the target. At that point, on the whole training set:

- sharpness by four measures (:func:`ravine.curvature.sharpness`): the top Hessian eigenvalue
  ``lambda_max`` (Lanczos), the trace ``tr(H)`` (Hutch++), SAM's first-order sharpness
  (``rho = 0.05``, Foret et al. 2021) and Keskar et al. (2017)'s epsilon-sharpness (``eps = 1e-3``);
- the generalization gap, test loss minus training loss;
- ``lambda_max`` during training against the stability threshold ``2 / lr`` (the harness's
  ``sharpness_every``: ``ravine.curvature.SharpnessMonitor`` on the first 256 training samples);
- Li et al. (2018)'s filter-normalized 1D and 2D slices of one small-batch and one large-batch minimum.

The caveat (Dinh, Pascanu, Bengio & Bengio 2017, "Sharp Minima Can Generalize For Deep Nets"): in a
ReLU network, multiplying one layer's weights and bias by ``a > 0`` and the next layer's weights by
``1/a`` (:func:`rescale_relu_layers`) computes the same function, so it generalizes identically, yet
its Hessian is ``S^-1 H S^-1`` (``S`` the diagonal scaling): raw sharpness can be made as large as one
likes. Filter normalization rescales each direction's rows with the weights' rows, so a
filter-normalized slice of the rescaled network equals the original's (Li et al., section 4).
Measured on the small-batch minimum of seed 0 for ``a`` in ``{0.25, 4}``.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ravine._validation import Interval, check
from ravine.experiments.claims._common import Planned, eval_columns, pick, train_all
from ravine.experiments.claims._core import Check, Experiment, Progress, Store, Verdict, combine, threshold_check
from ravine.experiments.claims._stats import linear_fit, num

NAME = "sharp-flat"
TITLE = "Sharp vs flat minima"
SECTION = "Sharp vs Flat Minima and Generalization"
CLAIM = (
    "Models trained with small batches (noisier gradients) often generalize better than those trained "
    "with large batches (cleaner gradients). The reason: sharp minima in the loss landscape generalize "
    "poorly, and SGD noise provides a natural barrier against converging to them."
)

HIDDEN = [64, 64]
LR = 0.2
SMALL, LARGE = 16, None  # None: the full training set (gradient descent)
TARGET = 0.05  # the training loss both batch sizes are compared at (nats)
EVERY = 25  # evaluation and checkpoint interval (steps)
RESCALE = (0.25, 4.0)  # Dinh et al.'s a: layer 1 x a, layer 2 x 1/a
RHO, EPS = 0.05, 1e-3  # SAM's radius, Keskar's box
# Verdict settings, chosen before the first run.
RATIO_MARGIN = 0.25  # sharpness ratios large/small: > 1, grey zone ±0.25
GAP_DIFF_MARGIN = 0.005  # sharper minus flatter gap (nats): > 0, grey zone ±0.005
R_MIN, R_MARGIN = 0.4, 0.2  # correlation of log lambda_max with the gap: > 0.4, grey zone ±0.2


def rescale_relu_layers(model: nn.Module, alpha: float, layer: int = 0) -> nn.Module:
    """A copy of ``model`` computing the same function with differently scaled weights (Dinh et al. 2017).

    The ``layer``-th ``nn.Linear`` (counting from 0 in module order) gets weight and bias multiplied by
    ``alpha`` and the next ``nn.Linear`` gets its weight multiplied by ``1 / alpha``. Between them a
    positively homogeneous activation (``relu(a z) = a relu(z)`` for ``a > 0``) carries the factor
    through, so the outputs are unchanged up to rounding; the Hessian at the new weights is
    ``S^-1 H S^-1`` with ``S`` the diagonal of the factors.

    Args:
        model: a network whose two ``nn.Linear`` layers sit in one ``nn.Sequential`` with only
            ``nn.ReLU``, ``nn.LeakyReLU`` or ``nn.Identity`` between them (ravine's MLP, a plain
            Sequential MLP).
        alpha: the factor ``a > 0``.
        layer: which ``nn.Linear`` to scale up (the next one is scaled down).

    Returns:
        A deep copy of ``model`` with the rescaled weights (the original is not modified).
    """
    alpha = check("alpha", alpha, Interval.finite(float, 0, low_open=True))
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"layer must be an integer, got {type(layer).__name__} {layer!r}")
    out = copy.deepcopy(model)
    for seq in out.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        mods = list(seq)
        linear = [i for i, m in enumerate(mods) if isinstance(m, nn.Linear)]
        if len(linear) < 2:
            continue
        if not 0 <= layer < len(linear) - 1:
            raise ValueError(f"layer must be in [0, {len(linear) - 1}) (a Linear layer with one after it), got {layer}")
        i, j = linear[layer], linear[layer + 1]
        between = mods[i + 1 : j]
        if not all(isinstance(m, nn.ReLU | nn.LeakyReLU | nn.Identity) for m in between):
            names = [type(m).__name__ for m in between]
            raise ValueError(
                f"the layers between Linear {layer} and {layer + 1} must be ReLU/LeakyReLU/Identity, got {names}"
            )
        with torch.no_grad():
            mods[i].weight.mul_(alpha)
            if mods[i].bias is not None:
                mods[i].bias.mul_(alpha)
            mods[j].weight.div_(alpha)
        return out
    raise ValueError("model has no nn.Sequential holding two nn.Linear layers to rescale")


def matched_step(steps: Any, train_loss: Any, target: float) -> int | None:
    """The first evaluated step whose training loss is at or below ``target`` (None if none is).

    Args:
        steps: the evaluation steps, increasing.
        train_loss: the training loss at each of them.
        target: the training loss to reach.

    Returns:
        The step, or None when the run never reached ``target``.
    """
    for s, v in zip(steps, train_loss):
        if math.isfinite(num(v)) and num(v) <= target:
            return int(s)
    return None


def plan(size: str) -> list[Planned]:
    from ravine.experiments import TrainConfig

    seeds = pick(size, 1, 3, 5)
    steps = {SMALL: pick(size, 8, 600, 800), LARGE: pick(size, 8, 400, 600)}
    out = []
    for seed in range(seeds):
        for bs in (SMALL, LARGE):
            cfg = TrainConfig(
                data="digits",
                model="mlp",
                model_kwargs={"hidden": HIDDEN, "activation": "relu"},
                optimizer="sgd",
                optimizer_kwargs={"lr": LR},
                steps=steps[bs],
                batch_size=bs,
                eval_every=pick(size, 4, EVERY, EVERY),
                checkpoint_every=pick(size, 4, EVERY, EVERY),
                keep_checkpoints=0,
                sharpness_every=pick(size, 4, 2 * EVERY, EVERY),
                hessian_samples=256,
                seed=seed,
            )
            out.append(Planned(f"{'small' if bs == SMALL else 'large'}-s{seed}", cfg))
    return out


def _measure(run: Any, step: int, probes: int) -> dict[str, Any]:
    """Sharpness of a run's checkpoint ``step`` on the whole training set."""
    from ravine.curvature import sharpness
    from ravine.experiments.train import loss_fn

    model = run.load_model(step=step)
    x, y = run.load_dataset().eval_data("train")
    rep = sharpness(model, loss_fn, (x, y), lr=LR, rho=RHO, eps=EPS, trace_probes=probes, seed=0)
    return {
        "lambda_max": rep.lambda_max,
        "trace": rep.trace.estimate,
        "trace_stderr": rep.trace.stderr,
        "sam": rep.sam.value,
        "keskar": rep.keskar.value,
        "grad_norm": rep.sam.grad_norm,
        "loss": rep.loss,
    }


def _views(small: Any, large: Any, s_step: int, l_step: int, size: str) -> dict[str, Any]:
    """Filter-normalized slices of both minima, and Dinh et al.'s rescaling of the small-batch one."""
    from ravine.curvature import hessian_eigenvalues
    from ravine.experiments.train import loss_fn
    from ravine.landscape import line, plane

    n_line, n_plane = pick(size, 5, 41, 51), pick(size, 5, 21, 31)
    x, y = small.load_dataset().eval_data("train")
    models = {"small": small.load_model(step=s_step), "large": large.load_model(step=l_step)}
    out: dict[str, Any] = {"line": {}, "plane": {}}
    for k, m in models.items():
        ln = line(m, loss_fn, (x, y), "filter", span=(-1.0, 1.0), steps=n_line, seed=0)
        pl = plane(m, loss_fn, (x, y), "filter", span=(-1.0, 1.0), steps=n_plane, seed=0)
        out["line"][k] = ln.loss.tolist()
        out["plane"][k] = pl.loss.tolist()
        out["line_x"], out["plane_x"] = ln.x.tolist(), pl.x.tolist()
    base = models["small"]
    lam0 = float(hessian_eigenvalues(base, loss_fn, (x, y), k=1, seed=0).values[0])
    ref = np.asarray(out["line"]["small"])
    dinh = {"alpha": [1.0], "lambda_max": [lam0], "slice_max_abs_diff": [0.0], "output_max_abs_diff": [0.0]}
    with torch.no_grad():
        out0 = base(x)
    for a in RESCALE:
        m = rescale_relu_layers(base, a, layer=0)
        with torch.no_grad():
            dout = float((m(x) - out0).abs().max())
        lam = float(hessian_eigenvalues(m, loss_fn, (x, y), k=1, seed=0).values[0])
        sl = line(m, loss_fn, (x, y), "filter", span=(-1.0, 1.0), steps=n_line, seed=0).loss
        dinh["alpha"].append(a)
        dinh["lambda_max"].append(lam)
        dinh["slice_max_abs_diff"].append(float(np.max(np.abs(sl - ref))))
        dinh["output_max_abs_diff"].append(dout)
        out.setdefault("line_rescaled", {})[f"{a:g}"] = sl.tolist()
    out["dinh"] = dinh
    return out


def _threshold(per_run: dict[str, Any]) -> float | None:
    """The stability threshold the sharpness monitor recorded (``2 / lr`` for plain SGD), if any."""
    values = [v for r in per_run.values() for v in r["lambda_history"].get("threshold", []) if v is not None]
    return float(np.median(values)) if values else None


def _geomean(x: np.ndarray) -> float:
    x = x[np.isfinite(x) & (x > 0)]
    return float(np.exp(np.mean(np.log(x)))) if len(x) else math.nan


def execute(size: str, store: Store, progress: Progress) -> tuple[dict[str, Any], list[str], list[str], str]:
    from ravine.experiments.runs import config_hash
    from ravine.plots.minima import plot_measures, plot_reparametrization, plot_slices

    planned = plan(size)
    runs = train_all(store, NAME, planned, progress)
    seeds = sorted({p.config.seed for p in planned})
    probes = pick(size, 6, 99, 99)
    per_run: dict[str, Any] = {}
    for p in planned:
        r = runs[p.label]
        ev = eval_columns(r)
        step = matched_step(ev["step"], ev["train_loss"], TARGET)
        matched = step is not None and r.status == "completed"
        if step is None:
            step = int(ev["step"][-1])
        i = int(np.flatnonzero(ev["step"] == step)[0])
        key = f"measure2-{r.id}-{step}-{probes}"
        rec = {
            "batch": "small" if p.config.batch_size == SMALL else "large",
            "batch_size": p.config.batch_size,
            "seed": p.config.seed,
            "step": step,
            "matched": bool(matched),
            "train_loss": float(ev["train_loss"][i]),
            "test_loss": float(ev["test_loss"][i]),
            "test_acc": float(ev["test_acc"][i]),
            "gap": float(ev["test_loss"][i] - ev["train_loss"][i]),
            **store.cached(NAME, key, lambda r=r, step=step: _measure(r, step, probes)),
        }
        sh = r.columns("sharpness")
        rec["lambda_history"] = {k: sh.get(k, np.zeros(0)).tolist() for k in ("step", "lambda_max", "threshold")}
        per_run[p.label] = rec

    def pair(metric: str) -> np.ndarray:
        return np.array([num(per_run[f"large-s{s}"][metric]) / num(per_run[f"small-s{s}"][metric]) for s in seeds])

    gaps_sharp_minus_flat = []
    for s in seeds:
        a, b = per_run[f"small-s{s}"], per_run[f"large-s{s}"]
        sharp, flat = (a, b) if a["lambda_max"] > b["lambda_max"] else (b, a)
        gaps_sharp_minus_flat.append(sharp["gap"] - flat["gap"])
    lam = np.array([num(v["lambda_max"]) for v in per_run.values()])
    gap = np.array([num(v["gap"]) for v in per_run.values()])
    _, _, r_corr = linear_fit(np.log(np.where(lam > 0, lam, np.nan)), gap)

    def mean_of(batch: str, metric: str) -> float:
        return float(np.mean([num(v[metric]) for v in per_run.values() if v["batch"] == batch]))

    s0, l0 = per_run[f"small-s{seeds[0]}"], per_run[f"large-s{seeds[0]}"]
    vkey = "views-" + config_hash(
        {
            "s": runs[f"small-s{seeds[0]}"].id,
            "l": runs[f"large-s{seeds[0]}"].id,
            "steps": [s0["step"], l0["step"]],
            "size": size,
        },
        10,
    )
    views = store.cached(
        NAME, vkey, lambda: _views(runs[f"small-s{seeds[0]}"], runs[f"large-s{seeds[0]}"], s0["step"], l0["step"], size)
    )
    dinh = views["dinh"]
    measured: dict[str, Any] = {
        "seeds": len(seeds),
        "hidden": HIDDEN,
        "lr": LR,
        "batch_small": SMALL,
        "batch_large": "full",
        "n_train": int(len(runs[planned[0].label].load_dataset().eval_data("train")[0])),
        "target_train_loss": TARGET,
        "all_matched": bool(all(v["matched"] for v in per_run.values())),
        "runs": per_run,
        "lambda_ratio": _geomean(pair("lambda_max")),
        "trace_ratio": _geomean(pair("trace")),
        "sam_ratio": _geomean(pair("sam")),
        "keskar_ratio": _geomean(pair("keskar")),
        "lambda_ratio_per_seed": pair("lambda_max").tolist(),
        "gap_small": mean_of("small", "gap"),
        "gap_large": mean_of("large", "gap"),
        "gap_sharp_minus_flat": float(np.mean(gaps_sharp_minus_flat)),
        "corr_loglambda_gap": r_corr,
        "lambda_small": mean_of("small", "lambda_max"),
        "lambda_large": mean_of("large", "lambda_max"),
        "dinh": dinh,
        "dinh_lambda_factor": [lam_a / dinh["lambda_max"][0] for lam_a in dinh["lambda_max"][1:]],
        "dinh_slice_max_abs_diff": float(max(dinh["slice_max_abs_diff"])),
        "dinh_output_max_abs_diff": float(max(dinh["output_max_abs_diff"])),
    }

    figs = [store.figure_path(NAME, n) for n in ("sharp_flat_slices", "sharp_flat_measures", "sharp_flat_reparam")]
    plot_slices(
        figs[0],
        np.asarray(views["line_x"]),
        {f"small batch ({SMALL})": views["line"]["small"], "full batch": views["line"]["large"]},
        np.asarray(views["plane_x"]),
        {
            f"small batch ({SMALL}), seed {seeds[0]}": views["plane"]["small"],
            f"full batch, seed {seeds[0]}": views["plane"]["large"],
        },
        suptitle=f"Filter-normalized slices at training loss <= {TARGET:g} (MLP {HIDDEN} on digits, SGD lr {LR:g})",
    )
    plot_measures(
        figs[1],
        per_run,
        groups=("small", "large"),
        group_labels=(f"batch {SMALL}", "full batch"),
        target=TARGET,
        gd_threshold=_threshold(per_run),
        corr=r_corr,
        suptitle=f"Sharpness and generalization gap at training loss <= {TARGET:g}, {len(seeds)} seeds",
    )
    plot_reparametrization(
        figs[2],
        dinh["alpha"],
        dinh["lambda_max"],
        np.asarray(views["line_x"]),
        {"original": views["line"]["small"], **{f"a = {k}": v for k, v in views.get("line_rescaled", {}).items()}},
        suptitle=f"Dinh et al.'s rescaling (layer 1 x a, layer 2 x 1/a) of the batch-{SMALL} minimum, seed {seeds[0]}",
    )
    factors = ", ".join(f"a = {a:g}: x{f:.3g}" for a, f in zip(RESCALE, measured["dinh_lambda_factor"]))
    reading = (
        f"Stopped at the first checkpoint with training loss <= {TARGET:g} nats "
        f"({'all runs reached it' if measured['all_matched'] else 'NOT all runs reached it'}), full-batch minima have "
        f"lambda_max {measured['lambda_large']:.3g} vs {measured['lambda_small']:.3g} for batch {SMALL} "
        f"(geometric-mean ratio large/small {measured['lambda_ratio']:.2f}; trace {measured['trace_ratio']:.2f}, "
        f"SAM {measured['sam_ratio']:.2f}, Keskar {measured['keskar_ratio']:.2f}). Generalization gaps: "
        f"{measured['gap_small']:.3f} nats (batch {SMALL}) vs {measured['gap_large']:.3f} (full batch); "
        f"within a seed the sharper minimum's gap minus the flatter one's is "
        f"{measured['gap_sharp_minus_flat']:+.3f} nats on average, and across "
        f"all {len(per_run)} runs log lambda_max and the gap correlate with r = {num(r_corr):.2f}. Rescaling the "
        f"function-preserving way (outputs change by at most {measured['dinh_output_max_abs_diff']:.1e}) multiplies "
        f"lambda_max by {factors}, while the filter-normalized slice moves by at most "
        f"{measured['dinh_slice_max_abs_diff']:.1e} nats: raw sharpness is not a property of the function."
    )
    first_order = [num(measured[k]) for k in ("sam_ratio", "keskar_ratio")]
    if all(math.isfinite(v) for v in first_order) and (min(first_order) < 1) == (num(measured["lambda_ratio"]) > 1):
        reading += (
            f" SAM's and Keskar's sharpness rank the batch sizes the other way: both are first order in the "
            f"gradient away from a stationary point, and at the matched loss the full-data gradient norm is "
            f"{mean_of('small', 'grad_norm'):.3g} (batch {SMALL}) vs {mean_of('large', 'grad_norm'):.3g} (full batch)."
        )
    return measured, [str(f) for f in figs], [r.id for r in runs.values()], reading


def verdict(measured: dict[str, Any]) -> Verdict:
    """Two parts, each its own group of checks (thresholds chosen before the first run); the status
    combines all of them as usual.

    Validity: every run reached the target training loss (otherwise nothing is compared at the same
    loss and every check is inconclusive).

    Part 1, "small batches find flatter minima" (ratios are geometric means over seeds of large-batch
    over small-batch values at matched training loss):

    - ``lambda_max`` ratio > 1 (grey zone ±0.25);
    - ``tr(H)`` ratio > 1 (grey zone ±0.25).

    Part 2, "flatter minima generalize better":

    - within each seed, the sharper minimum's gap minus the flatter one's (by ``lambda_max``), mean
      over seeds > 0 nats (grey zone ±0.005);
    - across all runs, Pearson's r between ``log lambda_max`` and the gap > 0.4 (grey zone ±0.2).
    """
    matched = bool(measured.get("all_matched"))
    part1 = [
        threshold_check(
            "lambda_ratio",
            num(measured["lambda_ratio"]),
            ">",
            1.0,
            "lambda_max, full batch / small batch (geometric mean over seeds)",
            margin=RATIO_MARGIN,
        ),
        threshold_check(
            "trace_ratio",
            num(measured["trace_ratio"]),
            ">",
            1.0,
            "tr(H), full batch / small batch (geometric mean over seeds)",
            margin=RATIO_MARGIN,
        ),
    ]
    part2 = [
        threshold_check(
            "gap_sharp_minus_flat",
            num(measured["gap_sharp_minus_flat"]),
            ">",
            0.0,
            "test-train gap of the sharper minus the flatter minimum of a seed (nats)",
            margin=GAP_DIFF_MARGIN,
        ),
        threshold_check(
            "corr_loglambda_gap",
            num(measured["corr_loglambda_gap"]),
            ">",
            R_MIN,
            "Pearson r of log lambda_max and the gap over all runs",
            margin=R_MARGIN,
        ),
    ]
    validity = Check(
        "all_matched",
        1.0 if matched else 0.0,
        "= 1 (validity)",
        "supported" if matched else "inconclusive",
        f"every run reached training loss <= {num(measured.get('target_train_loss')):g}",
    )
    if not matched:
        part1, part2 = (
            [Check(c.name, c.value, c.threshold, "inconclusive", c.note + " (not at matched loss)") for c in part]
            for part in (part1, part2)
        )
    s1, s2 = combine(part1), combine(part2)
    factors = measured.get("dinh_lambda_factor") or []
    caveat = ""
    if factors:
        caveat = (
            f" Caveat (Dinh et al. 2017): a function-preserving rescaling multiplies lambda_max by "
            f"{' and '.join(f'{f:.3g}' for f in factors)} while the filter-normalized slice changes by "
            f"{num(measured.get('dinh_slice_max_abs_diff')):.1e} nats."
        )
    expl = (
        f"'Small batches find flatter minima': {s1} (lambda_max ratio {num(measured['lambda_ratio']):.2f}, "
        f"trace ratio {num(measured['trace_ratio']):.2f}). 'Flatter minima generalize better': {s2} "
        f"(gap difference {num(measured['gap_sharp_minus_flat']):+.3f} nats, "
        f"r = {num(measured['corr_loglambda_gap']):.2f})." + caveat
    )
    scale = (
        f"measured on an MLP {measured.get('hidden', HIDDEN)} on {measured.get('n_train', '?')} digits, SGD lr "
        f"{num(measured.get('lr', LR)):g}, batch {measured.get('batch_small', SMALL)} vs full batch, "
        f"{measured.get('seeds', '?')} seeds"
    )
    return Verdict.from_checks([validity, *part1, *part2], expl, scale)


EXPERIMENT = Experiment(NAME, TITLE, CLAIM, SECTION, execute, verdict)
