"""The report's 2D gallery: optimizers walking test surfaces, and hyperparameter sweeps.

Everything is computed by :mod:`ravine.simulate` (batched trajectories and sweeps of the same
``ravine.optim`` transforms the networks use) and drawn by :mod:`ravine.plots.surfaces`. A figure that
already exists is reused (the gallery is deterministic), so an interrupted report continues; a figure
that fails to draw is named in the gallery's note and the report goes on without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ravine import simulate
from ravine.experiments.claims._core import Progress
from ravine.plots import surfaces as plot_surfaces
from ravine.report.html import GalleryItem

#: The gallery's figures: (file stem, title, caption, kind ``"run"`` or ``"sweep"``, arguments).
ITEMS: list[tuple[str, str, str, str, dict[str, Any]]] = [
    (
        "valley",
        "A narrow valley",
        "GD, momentum, RMSProp and Adam at the simulator's suggested learning rates on a valley with condition "
        "number 25: the paths (left) and the loss gap per step (right) show how each handles the steep and the "
        "flat direction.",
        "run",
        {"surface": "valley", "optimizers": ["gd", "momentum", "rmsprop", "adam"], "steps": 200},
    ),
    (
        "rosenbrock",
        "Rosenbrock's banana",
        "GD, momentum and Adam for 500 steps along the curved valley floor.",
        "run",
        {"surface": "rosenbrock", "optimizers": ["gd", "momentum", "adam"], "steps": 500},
    ),
    (
        "saddle",
        "Near a saddle point",
        "GD, momentum, RMSProp and Adam started near a saddle point, where the gradient almost vanishes.",
        "run",
        {"surface": "saddle", "optimizers": ["gd", "momentum", "rmsprop", "adam"], "steps": 200},
    ),
    (
        "sweep_momentum_valley",
        "Sweep: momentum on the valley (learning rate x beta)",
        "Final loss and steps to tolerance for every (lr, beta) pair, one batched run; hatched cells diverged.",
        "sweep",
        {"surface": "valley", "optimizer": "momentum", "steps": 300},
    ),
    (
        "sweep_adam_rosenbrock",
        "Sweep: Adam on Rosenbrock (learning rate x b1)",
        "Adam's learning rate and first-moment decay on the banana valley.",
        "sweep",
        {"surface": "rosenbrock", "optimizer": "adam", "steps": 500, "y": "b1"},
    ),
]


def _draw(kind: str, args: dict[str, Any], path: Path, size: str) -> None:
    side = {"tiny": 6, "quick": 24, "full": 48}[size]  # sweep grid: side x side cells
    steps = args["steps"] if size != "tiny" else 10
    if kind == "run":
        runs = simulate.run(args["surface"], args["optimizers"], steps=steps)
        plot_surfaces.save_trajectories_figure(runs, path)
    else:
        y_name = args.get("y", "beta")
        y_values = np.linspace(0.0, 0.99, side) if y_name in ("beta", "b1") else np.geomspace(1e-3, 1.0, side)
        grid = simulate.sweep(
            args["surface"],
            optimizer=args["optimizer"],
            x=("lr", np.geomspace(1e-4, 1.0, side)),
            y=(y_name, y_values),
            steps=steps,
        )
        plot_surfaces.save_sweep_figure(grid, path)


def build_gallery(folder: Path, size: str, progress: Progress, draw: bool = True) -> tuple[list[GalleryItem], str]:
    """Draw (or reuse) the gallery's figures in ``folder``; returns the items and a note for the page.

    ``size`` is the report's (``"tiny"``, ``"quick"`` or ``"full"``: the sweeps' grid side and, for
    ``"tiny"``, 10 steps a run). ``draw=False`` only collects the figures already drawn.
    """
    folder = Path(folder)
    items: list[GalleryItem] = []
    failed: list[str] = []
    with progress.bar(len(ITEMS), "2D gallery") as bar:
        for stem, title, caption, kind, args in ITEMS:
            path = folder / f"{stem}.png"
            if draw and not path.exists():
                try:
                    _draw(kind, args, path, size)
                except Exception as e:  # one broken figure must not cost the report
                    failed.append(f"{stem} ({type(e).__name__}: {e})")
            if path.exists():
                items.append(GalleryItem(title, str(path), caption))
            bar.update(1)
    note = (
        "Computed by ravine.simulate (the same ravine.optim transforms as the networks, batched over runs) and "
        "drawn by ravine.plots.surfaces."
    )
    if failed:
        note += " Not drawn: " + "; ".join(failed) + "."
    if not draw and len(items) < len(ITEMS):
        note += " Some figures were not drawn in this invocation (gallery drawing was switched off)."
    return items, note
