"""``ravine landscape``: a loss-landscape slice of a model saved by ravine's experiment harness.

TARGET is a run directory (``config.json``, ``metadata.json``, ``checkpoints/step_N/model.safetensors``)
or one checkpoint directory ``RUN/checkpoints/step_N``. The model is rebuilt with
``ravine.experiments.load_model`` (weights from safetensors only), the data with the run's own
dataset (``--split train`` by default: a landscape of the training loss), and the loss is the
harness's mean cross-entropy. Examples::

    ravine landscape runs/abc123 --plane --steps 41 --out plane.png --save plane.npz
    ravine landscape runs/abc123/checkpoints/step_00000500 --line --span -2 2 --out line.png

``--save`` doubles as a resume file: rerunning the same command after an interruption computes only
the missing grid points (a file saved with other settings is refused).
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from ravine._cli import SEED, add_executor_options, check_outputs, executor_from, integer
from ravine._io import check_output_path

_STEP_RE = re.compile(r"^step_(\d+)$")


def register(sub) -> None:
    p = sub.add_parser(
        "landscape",
        help="loss along a line or over a plane through a saved model's weights",
        description=__doc__.split("\n\n")[0].replace("``", "")
        + " Figures: filled contour, contour or 3D surface of a plane; "
        "a curve for a line.",
    )
    p.add_argument("target", metavar="RUN_DIR_OR_CHECKPOINT", help="run directory or RUN/checkpoints/step_N")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--plane", dest="kind", action="store_const", const="plane", help="2D slice (default)")
    kind.add_argument("--line", dest="kind", action="store_const", const="line", help="1D slice")
    p.set_defaults(kind="plane")
    p.add_argument("--steps", type=int, default=41, help="grid points per axis (default 41)")
    p.add_argument(
        "--span",
        type=float,
        nargs=2,
        default=(-1.0, 1.0),
        metavar=("LO", "HI"),
        help="coordinate range along each direction (default -1 1)",
    )
    p.add_argument(
        "--norm",
        choices=["filter", "layer", "none"],
        default="filter",
        help="direction normalization (default filter, Li et al. 2018)",
    )
    p.add_argument(
        "--bias-bn",
        choices=["zero", "keep", "weights"],
        default="zero",
        help="directions of biases and norm-layer parameters (default zero)",
    )
    p.add_argument("--seed", type=integer("--seed", SEED), default=0, help="seed of the random directions (default 0)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step of a run directory (default latest)")
    p.add_argument("--split", choices=["train", "test"], default="train", help="data split (default train)")
    p.add_argument("--subset", type=int, default=None, help="use this many samples, drawn with --seed")
    p.add_argument(
        "--batch-norm",
        choices=["eval", "recompute"],
        default="eval",
        help="batch-norm statistics: running (eval, default) or recomputed per point",
    )
    p.add_argument("--max-memory-mb", type=float, default=512, help="memory budget of a batched pass")
    p.add_argument("--device", default="cpu", help="torch device to evaluate on (default cpu)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--per-point",
        action="store_true",
        help="one pass over the data per grid point (the default on CPU, where it is faster)",
    )
    mode.add_argument(
        "--vmap", action="store_true", help="batch grid points through vmap (the default on accelerators)"
    )
    p.add_argument("--out", default=None, help="figure path (.png/.svg/.pdf); default landscape-KIND.png")
    p.add_argument(
        "--style",
        choices=["filled", "contour", "surface"],
        default="filled",
        help="plane figure style (default filled contour)",
    )
    p.add_argument("--log", action="store_true", help="log-scaled contour levels / log10 surface / log axis")
    p.add_argument("--save", default=None, help="write the grid to this .npz (and resume from it if present)")
    add_executor_options(p)
    p.set_defaults(func=run)


def _resolve(target: str, step: int | None) -> tuple[Path, int | None]:
    path = Path(target)
    if not path.exists():
        raise FileNotFoundError(f"RUN_DIR_OR_CHECKPOINT {target!r} does not exist")
    m = _STEP_RE.match(path.name)
    if path.is_dir() and m and (path / "model.safetensors").exists():
        run_dir = path.parent.parent
        if step is not None and step != int(m.group(1)):
            raise ValueError(f"--step {step} contradicts the checkpoint directory {path.name!r}")
        return run_dir, int(m.group(1))
    if path.is_dir() and (path / "config.json").exists():
        return path, step
    raise ValueError(
        f"RUN_DIR_OR_CHECKPOINT must be a ravine run directory (with config.json) or a checkpoint "
        f"directory RUN/checkpoints/step_N (with model.safetensors); got {target!r}"
    )


def _device(text: str):
    """``--device`` as a torch device that exists here (a ValueError naming it otherwise)."""
    import torch

    try:
        device = torch.device(text)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as exc:  # unknown name / not built with it / no such device
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"--device {text!r} is not usable here ({first}); e.g. cpu or cuda:0") from None
    return device


def _accuracy(logits, targets):
    """Accuracy over positions whose target is not the ignore index (-100), as the harness counts it."""
    mask = targets != -100
    hits = (logits.argmax(-1) == targets) & mask
    return hits.sum().to(logits.dtype) / mask.sum().clamp_min(1).to(logits.dtype)


def run(args: argparse.Namespace) -> int:
    from ravine import landscape as L
    from ravine.experiments import Run
    from ravine.experiments.data import cross_entropy
    from ravine.plots import landscape as P

    if args.steps < 2:
        raise ValueError(f"--steps must be >= 2, got {args.steps}")
    if not args.span[0] < args.span[1]:
        raise ValueError(f"--span must satisfy LO < HI, got {args.span[0]} {args.span[1]}")
    if args.save is not None and not args.save.endswith(".npz"):
        raise ValueError(f"--save must end in .npz, got {args.save!r}")
    out = args.out or f"landscape-{args.kind}.png"
    check_output_path("--out", out)
    check_outputs(args, files=("save",))
    if args.save is not None:
        check_output_path("--save", Path(args.save).with_suffix(".json"))
    device = _device(args.device)
    run_dir, step = _resolve(args.target, args.step)
    r = Run(run_dir)
    model = r.load_model(step=step, map_location=device)  # a damaged file: RunFileError naming it
    x, y = r.load_dataset().eval_data(args.split)
    n_par = sum(p.numel() for p in model.parameters())
    print(
        f"{run_dir} (step {step if step is not None else r.checkpoints[-1]}): {type(model).__name__}, "
        f"{n_par} parameters; {args.split} split, {len(x)} samples"
    )

    kw = dict(
        seed=args.seed,
        bias_bn=args.bias_bn,
        metric=_accuracy,
        subset=args.subset,
        batch_norm=args.batch_norm,
        max_memory_mb=args.max_memory_mb,
        out=args.save,
        vectorize=False if args.per_point else (True if args.vmap else None),
    )
    t0 = time.perf_counter()
    slice_ = L.plane if args.kind == "plane" else L.line
    with executor_from(args) as ex:
        kw["executor"] = ex
        res = slice_(model, cross_entropy, (x, y), args.norm, span=tuple(args.span), steps=args.steps, **kw)
    dt = time.perf_counter() - t0
    points = res.loss.size
    import numpy as np

    j = int(np.argmin(np.abs(res.x)))
    centre = res.loss[j] if res.kind == "line" else res.loss[int(np.argmin(np.abs(res.y))), j]
    print(
        f"{points} points in {dt:.2f} s ({res.info.get('points_computed', 0)} computed, path "
        f"{res.info.get('path')}, input-layer shortcut {res.info.get('shortcut_layers') or 'none'}); "
        f"loss nearest the centre {centre:.6g}, min {res.loss.min():.6g}, max {res.loss.max():.6g}"
    )
    if res.kind == "plane":
        if args.style == "surface":
            P.surface(res, log=args.log, path=out)
        else:
            P.contour(res, filled=args.style == "filled", log=args.log, path=out)
    else:
        P.curves([res], log=args.log, path=out)
    print(f"figure: {out}")
    if args.save:
        print(f"grid: {args.save} (+ {Path(args.save).with_suffix('.json').name})")
    return 0
