"""The chapter's claims as experiments with measured verdicts.

Each experiment module defines ``NAME``, ``TITLE``, ``CLAIM`` (the chapter's claim, in its words where
it has them), ``execute(size, store, progress)`` (train through the harness, measure, draw) and a pure
``verdict(measurements) -> Verdict``; its ``EXPERIMENT`` object bundles them. ``Experiment.run(store,
progress)`` runs it at ``store.size`` and returns a :class:`Result`, saved in the store; the report
(:mod:`ravine.report`) shows it.

=================  ====================================================================================
name               claim
=================  ====================================================================================
``optimizers``     GD vs SGD along the training-set size (cost per update, loss at equal compute, the
                   crossover); SGD, momentum, RMSProp, Adam, AdamW on digits
``momentum``       momentum vs plain gradient descent along the condition number: the 2D valley and an
                   MLP with badly scaled inputs, at best and at equal effective learning rates
``adam-ablation``  Adam vs no bias correction vs no second moment (= momentum) vs no first moment
``adamw-vs-l2``    lr x weight-decay grids: AdamW's best decay barely moves with lr, Adam+L2's does
``schedules``      constant vs warmup+cosine vs WSD on a tiny transformer; WSD's branch-off
``finetune``       fine-tuning with the pretraining lr, a 30x smaller one, layer-wise lr decay
``warmup``         Post-LN vs Pre-LN with/without warmup across lrs and seeds; Adam's early v
``clipping``       an RNN with exploding gradients, with and without global-norm clipping
``local-minima``   MLPs on digits from several seeds: spread of final losses; loss barriers along the
                   straight line between two solutions and along a fitted Bezier curve
``sharp-flat``     batch 16 vs full batch at matched training loss: lambda_max, trace, SAM, Keskar vs
                   the generalization gap; filter-normalized slices; Dinh et al.'s rescaling
``sgd-noise``      gradient noise at the same lr: 2D runs from a sharp basin and a saddle's stable
                   manifold; mini-batch vs full-batch sharpness of an MLP
``saddles``        a small-init deep linear net: the plateau's Hessian (lambda_min, index: dense and SLQ)
                   along training; steps to escape with and without noise
``adam-landscape`` condition number of H and of Adam's P^-1 H along training: the 2D valley (exact)
                   and an MLP (top-10 eigenvalues of the dense Hessian); Adam's vs GD's path
``edge-of-stability``  full-batch GD at several lrs, heavy ball and Adam on digits (MSE): sharpness rises
                   to 2/lr (2(1+beta)/lr; Adam's preconditioned sharpness to 38/lr) and hovers there
=================  ====================================================================================
"""

from __future__ import annotations

import importlib

from ravine.experiments.claims._core import (
    SIZES,
    STATUSES,
    Check,
    Experiment,
    IncompleteExperiment,
    Progress,
    Result,
    Store,
    Verdict,
    combine,
    threshold_check,
)

__all__ = [
    "SIZES",
    "STATUSES",
    "Check",
    "Experiment",
    "IncompleteExperiment",
    "Progress",
    "Result",
    "Store",
    "PARTS",
    "Verdict",
    "all_experiments",
    "combine",
    "get",
    "names",
    "part",
    "threshold_check",
]

# name -> module (in the order the report shows them)
_MODULES = {
    "optimizers": "optimizers",
    "momentum": "momentum",
    "adam-ablation": "adam_ablation",
    "adamw-vs-l2": "adamw_l2",
    "schedules": "schedules",
    "finetune": "finetune",
    "warmup": "warmup",
    "clipping": "clipping",
    "local-minima": "local_minima",
    "sharp-flat": "sharp_flat",
    "sgd-noise": "sgd_noise",
    "saddles": "saddles",
    "adam-landscape": "adam_landscape",
    "edge-of-stability": "edge_of_stability",
}


#: The report's two parts, in order: the chapter's optimizer half and its landscape half.
PARTS = {
    "Optimizers, schedules, warmup and clipping": (
        "optimizers", "momentum", "adam-ablation", "adamw-vs-l2", "schedules", "finetune", "warmup", "clipping"
    ),
    "Loss landscapes": (
        "local-minima", "sharp-flat", "sgd-noise", "saddles", "adam-landscape", "edge-of-stability"
    ),
}


def part(name: str) -> str:
    """The report part (a key of :data:`PARTS`) experiment ``name`` belongs to."""
    for title, members in PARTS.items():
        if name in members:
            return title
    raise ValueError(f"unknown experiment {name!r}; valid names: {', '.join(names())}")


def names() -> list[str]:
    """The experiment names, in report order."""
    return list(_MODULES)


def get(name: str) -> Experiment:
    """The experiment called ``name`` (ValueError listing the valid names otherwise)."""
    if name not in _MODULES:
        raise ValueError(f"unknown experiment {name!r}; valid names: {', '.join(names())}")
    return importlib.import_module(f"ravine.experiments.claims.{_MODULES[name]}").EXPERIMENT


def all_experiments() -> list[Experiment]:
    """Every experiment, in report order."""
    return [get(n) for n in names()]
