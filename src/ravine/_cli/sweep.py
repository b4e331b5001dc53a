"""``ravine sweep``: a grid of two hyperparameters of one optimizer on a 2D surface, as one batched run.

The work (grid cells x steps) is bounded by :data:`MAX_WORK` unless ``--force``; a sweep of more than
:data:`PROGRESS_WORK` cell-steps shows a progress bar on a terminal.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from ravine._cli import SEED, add_executor_options, check_outputs, executor_from, integer
from ravine._cli.trajectories import (
    STEPS,
    add_surface_arguments,
    format_table,
    parse_clip,
    parse_hyperparams,
    parse_schedule,
    parse_start,
    surface_from_args,
    write_json,
)
from ravine._validation import Interval, Options, check

MAX_POINTS = 1024

#: Cell-steps (grid cells x steps) one sweep may take without ``--force``: a minute or more on a CPU
#: (momentum on the valley ran 2.3e7 cell-steps per second on two idle cores, 3e6 on busy ones).
MAX_WORK = 1_000_000_000
#: Cell-steps from which a progress bar is shown (a few seconds of work).
PROGRESS_WORK = 50_000_000

RANGE_HELP = (
    f"NAME=START:STOP:N[:log|lin] (N in [1, {MAX_POINTS}], log needs 0 < START, STOP) or NAME=V1,V2,..."
)

_EPILOG = f"""\
examples:
  ravine sweep --surface valley --optimizer momentum --x lr=1e-3:1:64:log --y beta=0:0.99:64 --out sweep.png
  ravine sweep --surface rosenbrock --optimizer sgd --x lr=1e-5:1e-2:64:log --y momentum=0:0.99:64 --steps 1000
  ravine sweep --surface bowl --optimizer adam --x lr=0.001:1:32:log --y b1=0.5,0.8,0.9,0.99 --json sweep.json

an axis is {RANGE_HELP}; NAME is a hyperparameter of the optimizer (ravine.optim).
"""


def parse_range(text: str, flag: str) -> tuple[str, np.ndarray]:
    """``lr=1e-3:1:64:log`` -> ("lr", geomspace(1e-3, 1, 64)); ``beta=0,0.5,0.9`` -> a list."""
    name, sep, spec = text.partition("=")
    name = name.strip()
    if not sep or not name or not spec.strip():
        raise ValueError(f"{flag}: expected {RANGE_HELP}, got {text!r}")
    try:
        if ":" in spec:
            parts = spec.split(":")
            if len(parts) not in (3, 4):
                raise ValueError
            start, stop = float(parts[0]), float(parts[1])
            n = float(parts[2])
            scale = parts[3].strip().lower() if len(parts) == 4 else "lin"
        else:
            values = np.array([float(v) for v in spec.split(",")], dtype=np.float64)
            scale = "list"
    except ValueError:
        raise ValueError(f"{flag}: expected {RANGE_HELP}, got {text!r}") from None
    if scale == "list":
        if not np.isfinite(values).all() or not 1 <= values.size <= MAX_POINTS:
            raise ValueError(f"{flag}: 1 to {MAX_POINTS} finite values allowed, got {text!r}")
        return name, values
    check("scale", scale, Options(("log", "lin")), where=f"{flag}: ")
    if not (math.isfinite(start) and math.isfinite(stop)):
        raise ValueError(f"{flag}: START and STOP must be finite, got {text!r}")
    n = check("N", int(n) if n.is_integer() else n, Interval(int, 1, MAX_POINTS), where=f"{flag}: ")
    if scale == "log":
        if start <= 0 or stop <= 0:
            raise ValueError(f"{flag}: a log range needs START > 0 and STOP > 0, got {text!r}")
        return name, np.geomspace(start, stop, n)
    return name, np.linspace(start, stop, n)


def register(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="sweep two hyperparameters of an optimizer on a 2D surface (one batched run); heatmap",
        description="Run a grid of (x, y) hyperparameter values of one optimizer on a 2D surface as one "
        "batched tensor program; print a summary, write the heatmaps (--out) and the numbers (--json).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_surface_arguments(p, "valley")
    p.add_argument("--optimizer", default="momentum", metavar="NAME",
                   help="gd, sgd, momentum, nesterov, rmsprop, adam, adamw, adam_l2 or adagrad (default momentum)")
    p.add_argument("--x", default="lr=1e-3:1:64:log", metavar="RANGE", help=f"x axis: {RANGE_HELP}")
    p.add_argument("--y", default="beta=0:0.99:64", metavar="RANGE", help=f"y axis: {RANGE_HELP}")
    p.add_argument("--fixed", action="append", metavar="KEY=VALUE",
                   help="another hyperparameter held fixed, e.g. nesterov=true (repeatable)")
    p.add_argument("--steps", type=int, default=500, help="number of updates (default 500)")
    p.add_argument("--start", metavar="X,Y", help="start point (default: the surface's)")
    p.add_argument("--noise", type=float, default=0.0, help="std of Gaussian gradient noise (default 0)")
    p.add_argument("--batch-size", type=int, metavar="B", help="scale the noise by 1/sqrt(B)")
    p.add_argument("--seed", type=integer("--seed", SEED), default=0, help="noise seed (default 0)")
    p.add_argument("--schedule", metavar="NAME[:KEY=VALUE...]", help="learning-rate multiplier (ravine.schedules)")
    p.add_argument("--clip", metavar="norm:MAX|value:MAX", help="gradient clipping before each update")
    p.add_argument("--tol", type=float, default=1e-6, help="tolerance for steps-to-tol (default 1e-6)")
    p.add_argument("--out", metavar="PNG", help="write the heatmaps (final loss, steps to tolerance)")
    p.add_argument("--json", metavar="PATH", help="write the numbers as JSON")
    p.add_argument("--force", action="store_true",
                   help=f"run even if cells x steps exceeds {MAX_WORK:.0e} (it may take many minutes)")
    add_executor_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import ravine.simulate as sim

    check_outputs(args, files=("out", "json"))
    surface = surface_from_args(args)
    x = parse_range(args.x, "--x")
    y = parse_range(args.y, "--y")
    check("--steps", args.steps, STEPS)
    check("--noise", args.noise, Interval.finite(float, 0))
    fixed = parse_hyperparams(args.fixed, "--fixed")
    cells = x[1].size * y[1].size
    work = cells * args.steps
    if work > MAX_WORK and not args.force:
        raise ValueError(
            f"--x, --y and --steps ask for {x[1].size} x {y[1].size} cells x {args.steps} steps = {work:.3g} "
            f"cell-steps, over the limit of {MAX_WORK:.0e} (a minute or more on a CPU); use fewer points or "
            f"steps, or pass --force to run it anyway"
        )
    bar = None
    if work > PROGRESS_WORK:
        from tqdm.auto import tqdm

        bar = tqdm(total=args.steps, desc=f"sweep ({cells} cells)", unit="step", disable=None, dynamic_ncols=True)
    t0 = time.perf_counter()
    try:
        with executor_from(args) as ex:
            sw = sim.sweep(surface, args.optimizer, x=x, y=y, steps=args.steps, start=parse_start(args.start),
                           fixed=fixed, noise=args.noise, seed=args.seed, tol=args.tol, batch_size=args.batch_size,
                           schedule=parse_schedule(args.schedule), clip=parse_clip(args.clip),
                           progress=None if bar is None else lambda done: bar.update(done - bar.n), executor=ex)
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - t0
    ny, nx = sw.final_loss.shape
    print(f"{surface.name}: {surface.description}")
    print(f"{args.optimizer}: {ny} x {nx} = {nx * ny} configurations x {sw.steps} steps in {elapsed:.3f} s "
          f"(start ({sw.start[0]:g}, {sw.start[1]:g}))")
    n_div = int(sw.diverged.sum())
    n_tol = int((sw.steps_to_tol >= 0).sum())
    print(f"diverged: {n_div} ({100 * n_div / sw.diverged.size:.1f}%), reached tol {sw.tol:g}: {n_tol} "
          f"({100 * n_tol / sw.diverged.size:.1f}%)")
    best = sw.best()
    print(f"best: {sw.x_name}={best[sw.x_name]:.4g}, {sw.y_name}={best[sw.y_name]:.4g}: "
          f"steps to tol {best['steps_to_tol'] if best['steps_to_tol'] >= 0 else 'never'}, "
          f"final loss {best['final_loss']:.4g}")
    # a coarse view of the grid: steps to tolerance ("div" diverged, "-" never within tol)
    ri = np.unique(np.linspace(0, ny - 1, min(ny, 8)).round().astype(int))
    ci = np.unique(np.linspace(0, nx - 1, min(nx, 8)).round().astype(int))
    header = [f"{sw.y_name} \\ {sw.x_name}"] + [f"{sw.x_values[j]:.3g}" for j in ci]
    rows = []
    for i in ri[::-1]:
        cells = []
        for j in ci:
            if sw.diverged[i, j]:
                cells.append("div")
            elif sw.steps_to_tol[i, j] >= 0:
                cells.append(str(int(sw.steps_to_tol[i, j])))
            else:
                cells.append("-")
        rows.append([f"{sw.y_values[i]:.3g}"] + cells)
    print("steps to tol (div: diverged, -: not within tol):")
    print(format_table(header, rows))
    if args.out:
        from ravine.plots import surfaces as ps

        print(f"wrote {ps.save_sweep_figure(sw, args.out)}")
    if args.json:
        print(f"wrote {write_json(args.json, sw.to_dict())}")
    return 0
