"""Experiment ``finetune``: the learning rate for fine-tuning.

Pretraining: a tiny decoder-only transformer (Pre-LN, 2 layers, d=32) as a character-level language
model on CPython's documentation (``chars``) with Adam at ``lr_pre``. Fine-tuning, from those weights,
on a different sequence task that uses the same vocabulary: the copy/recall task (``copy``: 6 symbols,
a delay, then reproduce them). Three fine-tuning runs of the same length:

- (a) the pretraining learning rate ``lr_pre``;
- (b) a 30x smaller one, ``lr_pre / 30`` (the chapter's 10-100x range);
- (c) layer-wise learning-rate decay: the head gets ``lr_pre``, each layer below ``decay`` times the
  layer above it (``TrainConfig.layer_lr_decay``, groups from ``models.layer_groups``: embeddings,
  each block, final norm + head).

Retained ability: the language-modelling test loss of the fine-tuned weights (lower is better),
compared with the pretrained model's; "forgetting" is the increase. Fine-tuned score: the copy task's
test accuracy after fine-tuning (before fine-tuning it is the pretrained model's, the first evaluation
of every fine-tuning run).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ravine.experiments.claims._common import Planned, eval_columns, final_eval, pick, train_all
from ravine.experiments.claims._core import Experiment, Progress, Store, Verdict, threshold_check
from ravine.experiments.claims._stats import num, ratio

NAME = "finetune"
TITLE = "Learning rate for fine-tuning"
SECTION = "Learning Rate Schedules: Learning Rate for Fine-Tuning"
CLAIM = (
    "Fine-tuning a pretrained model needs a much smaller learning rate than pretraining (typically "
    "10-100x smaller): the pretraining rate overwrites what pretraining learned (catastrophic forgetting), "
    "while a small rate adapts the model and keeps its pretrained ability. Layer-wise learning-rate decay, "
    "smaller rates for lower layers, also protects the general features of the lower layers."
)

LR_PRE = 3e-3
SMALL_FACTOR = 30.0
LLRD = 0.3
CHARS = {"block_size": 32, "eval_blocks": 256}
COPY = {"length": 6, "delay": 6}
VARIANTS = ("pretrain-lr", "small-lr", "layerwise")
LABELS = {
    "pretrain-lr": f"pretraining lr ({LR_PRE:g})",
    "small-lr": f"{SMALL_FACTOR:g}x smaller ({LR_PRE / SMALL_FACTOR:.2g})",
    "layerwise": f"layer-wise decay {LLRD:g} (head {LR_PRE:g})",
}
SHORT = {
    "pretrain-lr": f"pretraining lr\n{LR_PRE:g}",
    "small-lr": f"{SMALL_FACTOR:g}x smaller\n{LR_PRE / SMALL_FACTOR:.2g}",
    "layerwise": f"layer-wise decay {LLRD:g}\nhead {LR_PRE:g}",
}


def _model_kwargs() -> dict[str, Any]:
    from ravine.experiments import load_data

    vocab = load_data("chars", **CHARS).dims["vocab_size"]
    return {"d_model": 32, "n_layer": 2, "n_head": 4, "block_size": 32, "vocab_size": vocab, "norm": "pre"}


def plan(size: str, store: Store) -> tuple[Planned, list[Planned]]:
    from ravine.experiments import TrainConfig
    from ravine.experiments.claims._common import run_dir_for

    mk = _model_kwargs()
    pre_steps = pick(size, 8, 400, 2000)
    ft_steps = pick(size, 6, 200, 600)
    seed = 0
    pre = Planned(
        "pretrain",
        TrainConfig(
            data="chars",
            data_kwargs=CHARS,
            model="transformer",
            model_kwargs=mk,
            optimizer="adam",
            optimizer_kwargs={"lr": LR_PRE},
            steps=pre_steps,
            batch_size=16,
            eval_every=max(1, pre_steps // 10),
            seed=seed,
        ),
    )
    parent = str(run_dir_for(store, NAME, pre).resolve())
    fts = []
    for v in VARIANTS:
        lr = LR_PRE / SMALL_FACTOR if v == "small-lr" else LR_PRE
        cfg = TrainConfig(
            data="copy",
            data_kwargs=COPY,
            model="transformer",
            model_kwargs=mk,
            optimizer="adam",
            optimizer_kwargs={"lr": lr},
            layer_lr_decay=LLRD if v == "layerwise" else None,
            steps=ft_steps,
            batch_size=32,
            eval_every=max(1, ft_steps // 10),
            seed=seed,
            init_from={"run": parent, "step": None, "restore": "weights"},
        )
        fts.append(Planned(f"ft-{v}", cfg))
    return pre, fts


MIN_FORGETTING = 0.02  # nats: below this the pretraining lr did not measurably forget


def _forgetting_ratio(a: float, b: float) -> float:
    """``a / b`` when the reference forgetting ``b`` is measurable (> MIN_FORGETTING nats), else NaN:
    when the pretraining rate does not forget, there is nothing for a smaller rate to protect."""
    return ratio(a, b) if num(b) > MIN_FORGETTING else float("nan")


def _lm_loss(run: Any) -> float:
    """Language-modelling test loss of a run's final weights (the fixed ``chars`` evaluation blocks)."""
    from ravine.experiments import evaluate, load_data

    model = run.load_model()
    return float(evaluate(model, load_data("chars", **CHARS), "test")["loss"])


def execute(size: str, store: Store, progress: Progress) -> tuple[dict[str, Any], list[str], list[str], str]:
    from ravine.plots.experiments import Bars, Panel, Series, plot_bars, plot_panels

    pre, fts = plan(size, store)
    runs = train_all(store, NAME, [pre], progress)
    runs.update(train_all(store, NAME, fts, progress))
    pre_loss = final_eval(runs["pretrain"], "test_loss")
    retained = {}
    copy_acc = {}
    for p in fts:
        v = p.label.removeprefix("ft-")
        r = runs[p.label]
        retained[v] = store.cached(NAME, f"lm_loss-{r.id}", lambda r=r: _lm_loss(r))
        copy_acc[v] = final_eval(r, "test_acc")
    copy_before = float(eval_columns(runs["ft-small-lr"])["test_acc"][0])
    forgetting = {v: num(retained[v]) - num(pre_loss) for v in VARIANTS}
    measured = {
        "lr_pretrain": LR_PRE,
        "lr_small": LR_PRE / SMALL_FACTOR,
        "layer_lr_decay": LLRD,
        "pretrain_steps": pre.config.steps,
        "finetune_steps": fts[0].config.steps,
        "pretrained_lm_test_loss": pre_loss,
        "lm_test_loss_after_finetune": retained,
        "forgetting_lm_loss_increase": forgetting,
        "copy_test_acc_before": copy_before,
        "copy_test_acc_after": copy_acc,
        "forgetting_small_over_pretrain_lr": _forgetting_ratio(forgetting["small-lr"], forgetting["pretrain-lr"]),
        "forgetting_layerwise_over_pretrain_lr": _forgetting_ratio(forgetting["layerwise"], forgetting["pretrain-lr"]),
        "small_lr_copy_gain": num(copy_acc["small-lr"]) - copy_before,
    }
    fig1 = store.figure_path(NAME, "finetune_curves")
    series = []
    for i, v in enumerate(VARIANTS):
        ev = eval_columns(runs[f"ft-{v}"])
        series.append(Series(LABELS[v], ev["step"], ev["test_acc"], color=i, marker="o"))
    pre_ev = eval_columns(runs["pretrain"])
    plot_panels(
        fig1,
        [
            Panel(
                "pretraining: character LM",
                "step",
                "test loss (nats/char)",
                [Series("pretraining", pre_ev["step"], pre_ev["test_loss"], color=7, marker="o")],
            ),
            Panel(
                "fine-tuning: copy task",
                "fine-tuning step",
                "copy test accuracy",
                series,
                hlines=[(copy_before, "before fine-tuning")],
            ),
        ],
        suptitle="Pretrain a tiny transformer on text, fine-tune it on the copy task",
    )
    fig2 = store.figure_path(NAME, "finetune_tradeoff")
    plot_bars(
        fig2,
        [
            Bars(
                "retained ability (lower is better)",
                "LM test loss after fine-tuning",
                [SHORT[v] for v in VARIANTS],
                ["after fine-tuning"],
                np.array([[num(retained[v])] for v in VARIANTS]),
                hlines=[(num(pre_loss), "pretrained model")],
            ),
            Bars(
                "fine-tuned score (higher is better)",
                "copy test accuracy",
                [SHORT[v] for v in VARIANTS],
                ["after fine-tuning"],
                np.array([[num(copy_acc[v])] for v in VARIANTS]),
                ylim=(0, 1.05),
                hlines=[(copy_before, "before fine-tuning")],
            ),
        ],
        suptitle=f"pretrained LM test loss {num(pre_loss):.3f}; copy accuracy before fine-tuning {copy_before:.2f}",
    )
    reading = (
        f"The pretrained model's language-modelling test loss is {num(pre_loss):.3f}. After "
        f"{measured['finetune_steps']} fine-tuning steps it is "
        + ", ".join(f"{num(retained[v]):.3f} with {LABELS[v]}" for v in VARIANTS)
        + f"; the copy task's accuracy went from {copy_before:.2f} to "
        + ", ".join(f"{num(copy_acc[v]):.2f}" for v in VARIANTS)
        + " respectively. The small rate keeps the pretrained ability but adapts more slowly in the same "
        "number of steps: that is the trade-off the chapter's advice resolves in favour of keeping "
        "pretrained knowledge."
    )
    return measured, [str(fig1), str(fig2)], [r.id for r in runs.values()], reading


def verdict(measured: dict[str, Any]) -> Verdict:
    """Three checks:

    - forgetting (increase of the LM test loss) with the small lr / with the pretraining lr < 0.5
      (grey zone ±0.1);
    - forgetting with layer-wise decay / with the pretraining lr < 1 (grey zone ±0.1);
    - the small lr still adapts: its copy accuracy gain over the pretrained model > 0 (grey ±0.02).
    """
    checks = [
        threshold_check(
            "forgetting_small_over_pretrain_lr",
            num(measured["forgetting_small_over_pretrain_lr"]),
            "<",
            0.5,
            "LM loss increase, small lr / pretraining lr",
            margin=0.1,
        ),
        threshold_check(
            "forgetting_layerwise_over_pretrain_lr",
            num(measured["forgetting_layerwise_over_pretrain_lr"]),
            "<",
            1.0,
            "LM loss increase, layer-wise decay / pretraining lr",
            margin=0.1,
        ),
        threshold_check(
            "small_lr_copy_gain",
            num(measured["small_lr_copy_gain"]),
            ">",
            0.0,
            "copy accuracy after - before fine-tuning with the small lr",
            margin=0.02,
        ),
    ]
    bad = [c.name for c in checks if c.status != "supported"]
    expl = (
        "The small learning rate and layer-wise decay keep far more of the pretrained ability while still adapting."
        if not bad
        else "Some parts of the claim were not borne out: " + ", ".join(bad) + "."
    )
    return Verdict.from_checks(checks, expl)


EXPERIMENT = Experiment(NAME, TITLE, CLAIM, SECTION, execute, verdict)
