"""``ravine trajectories``: several optimizers on one 2D surface, as a figure, a table, JSON and a GIF.

The helpers for surfaces, ``key=value`` lists and JSON output are shared with ``ravine sweep``.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import Any

from ravine import _io
from ravine._cli import SEED, check_outputs, integer
from ravine._validation import Interval, Options, check

#: The steps one command-line run may take.
STEPS = Interval(int, 1, 100_000)

_EPILOG = """\
examples:
  ravine trajectories --surface rosenbrock --optimizers sgd,momentum,rmsprop,adam --steps 500 --out fig.png
  ravine trajectories --surface valley --param condition=50 --optimizers gd,momentum:beta=0.9,adam --lr 0.035,0.35,0.05
  ravine trajectories --surface saddle --optimizers gd,gd --noise 0,0.1 --out saddle.png --gif saddle.gif
  ravine trajectories --expr "sin(3*x)*y + x**2" --optimizers adam:lr=0.05:b1=0.8 --json out.json

an optimizer is NAME[:KEY=VALUE...] with NAME one of gd, sgd, momentum, nesterov, rmsprop, adam, adamw,
adam_l2, adagrad and KEY its hyperparameters (ravine.optim); without lr each gets the surface's suggestion.
"""


# ----------------------------------------------------------------------------------------------- shared
def parse_value(text: str) -> Any:
    """``true``/``false`` -> bool, numbers -> float, anything else stays a string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        v = float(text)
    except ValueError:
        return text.strip()
    if not math.isfinite(v):
        raise ValueError(f"value {text!r} is not finite; allowed: finite numbers, true/false, or words")
    return v


def parse_pairs(items: list[str] | None, what: str) -> dict[str, Any]:
    """``["k=v", ...]`` -> dict (values through :func:`parse_value`)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{what}: expected KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_value(value)
    return out


def parse_hyperparams(items: list[str] | None, what: str) -> dict[str, Any]:
    """:func:`parse_pairs` for optimizer hyperparameters: numbers, ``true``/``false``, and words only
    where ``ravine.optim.CONSTRAINTS`` lists words (``form=ema``); ``nesterov=maybe`` is an error."""
    import ravine.optim as ro

    out = parse_pairs(items, what)
    for key, value in out.items():
        if isinstance(value, str):
            allowed = ro.CONSTRAINTS.get(key)
            if not isinstance(allowed, Options):
                raise ValueError(f"{what}: {key} must be a number or true/false, got {value!r}")
            check(key, value, allowed, where=f"{what}: ")
    return out


def surface_from_args(args) -> Any:
    import ravine.surfaces as rs

    params = parse_pairs(args.param, "--param")
    if args.expr is not None:
        if params:
            raise ValueError("--param applies to built-in surfaces, not to --expr")
        domain = parse_domain(args.domain) if args.domain else ((-2.0, 2.0), (-2.0, 2.0))
        return rs.parse(args.expr, domain=domain)
    if args.domain:
        raise ValueError("--domain applies to --expr surfaces only")
    return rs.get(args.surface, **params)


def parse_domain(text: str) -> tuple[tuple[float, float], tuple[float, float]]:
    try:
        x0, x1, y0, y1 = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--domain must be XMIN,XMAX,YMIN,YMAX, got {text!r}") from None
    if not all(math.isfinite(v) for v in (x0, x1, y0, y1)) or not (x0 < x1 and y0 < y1):
        raise ValueError(f"--domain must be finite with XMIN < XMAX and YMIN < YMAX, got {text!r}")
    return (x0, x1), (y0, y1)


def parse_start(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--start must be X,Y, got {text!r}") from None
    return x, y


def parse_clip(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    kind, _, value = text.partition(":")
    try:
        limit = float(value)
    except ValueError:
        limit = None
    if kind not in ("norm", "value") or limit is None:
        raise ValueError(f"--clip must be norm:MAX or value:MAX with MAX a number, got {text!r}")
    return {"kind": kind, "max": limit}


def parse_schedule(text: str | None) -> dict[str, Any] | None:
    """``NAME[:KEY=VALUE...]`` of ravine.schedules (integers stay integers)."""
    if text is None:
        return None
    name, *rest = text.split(":")
    spec: dict[str, Any] = {"name": name}
    for k, v in parse_pairs(rest, "--schedule").items():
        spec[k] = int(v) if isinstance(v, float) and v.is_integer() and k != "peak" else v
    return spec


def add_surface_arguments(p: argparse.ArgumentParser, default: str) -> None:
    from ravine.surfaces import names

    g = p.add_mutually_exclusive_group()
    g.add_argument("--surface", default=default, metavar="NAME",
                   help=f"built-in surface: {', '.join(names())} (default {default})")
    g.add_argument("--expr", metavar="TEXT",
                   help='a surface from an expression in x and y, e.g. "sin(3*x)*y + x**2" (whitelist parser)')
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="a parameter of the built-in surface, e.g. condition=100 (repeatable)")
    p.add_argument("--domain", metavar="XMIN,XMAX,YMIN,YMAX", help="plotting box of an --expr surface")


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write ``data`` as JSON (no NaN/inf) to a temporary file, then rename."""
    return _io.write_json(path, data, indent=None, fsync=False)


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------- command
def _float_list(text: str | None, n: int, flag: str) -> list[float | None]:
    if text is None:
        return [None] * n
    vals = [float(v) for v in text.split(",")]
    if len(vals) == 1:
        vals = vals * n
    if len(vals) != n:
        raise ValueError(f"{flag} takes one value or one per optimizer ({n}), got {len(vals)}")
    return vals  # type: ignore[return-value]


def parse_optimizers(text: str, lrs: str | None) -> list[dict[str, Any]]:
    """``"sgd,adam:lr=0.1:b1=0.8"`` -> list of specs; ``--lr`` fills lr where the spec has none."""
    import ravine.optim as ro

    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"--optimizers is empty; allowed: a comma list of {', '.join(ro.names())}")
    specs = []
    for item in items:
        name, *rest = item.split(":")
        if name not in ro.names():
            raise ValueError(f"--optimizers: unknown optimizer {name!r}; allowed: {', '.join(ro.names())}")
        specs.append({"name": name, **parse_hyperparams(rest, f"--optimizers ({name})")})
    for spec, lr in zip(specs, _float_list(lrs, len(specs), "--lr")):
        if lr is not None and "lr" not in spec:
            spec["lr"] = lr
    return specs


def register(sub) -> None:
    p = sub.add_parser(
        "trajectories",
        help="run optimizers on a 2D surface; plot paths and losses, print a summary",
        description="Run several optimizers (ravine.optim) from one start on a 2D surface, print a summary "
        "table, and optionally write the figure (--out), the numbers (--json) and an animation (--gif).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_surface_arguments(p, "rosenbrock")
    p.add_argument("--optimizers", default="sgd,momentum,rmsprop,adam", metavar="LIST",
                   help="comma list of NAME[:KEY=VALUE...] (default sgd,momentum,rmsprop,adam)")
    p.add_argument("--lr", metavar="LR[,LR...]", help="learning rate for all, or one per optimizer")
    p.add_argument("--steps", type=int, default=500, help="number of updates (default 500)")
    p.add_argument("--start", metavar="X,Y", help="start point (default: the surface's)")
    p.add_argument("--noise", default="0", metavar="STD[,STD...]",
                   help="std of Gaussian gradient noise: one value, or one per optimizer (default 0)")
    p.add_argument("--batch-size", type=int, metavar="B", help="scale the noise by 1/sqrt(B)")
    p.add_argument("--seed", type=integer("--seed", SEED), default=0, help="noise seed (default 0)")
    p.add_argument("--schedule", metavar="NAME[:KEY=VALUE...]",
                   help="learning-rate multiplier from ravine.schedules, e.g. warmup_cosine:warmup_steps=50")
    p.add_argument("--clip", metavar="norm:MAX|value:MAX", help="gradient clipping before each update")
    p.add_argument("--tol", type=float, default=1e-6, help="tolerance for steps-to-tol (default 1e-6)")
    p.add_argument("--out", metavar="PNG", help="write the figure (contours with paths, and losses)")
    p.add_argument("--json", metavar="PATH", help="write the numbers as JSON")
    p.add_argument("--gif", metavar="PATH", help="write an animation of the paths (pillow writer)")
    p.add_argument("--gif-frames", type=int, default=60, metavar="N", help="frames of the animation (default 60)")
    p.set_defaults(func=run)


def run(args) -> int:
    import ravine.simulate as sim

    check_outputs(args, files=("out", "json", "gif"))
    surface = surface_from_args(args)
    specs = parse_optimizers(args.optimizers, args.lr)
    noises = [check("--noise", n, Interval.finite(float, 0)) for n in _float_list(args.noise, len(specs), "--noise")]
    check("--steps", args.steps, STEPS)
    kwargs = dict(start=parse_start(args.start), steps=args.steps, batch_size=args.batch_size,
                  schedule=parse_schedule(args.schedule), clip=parse_clip(args.clip), tol=args.tol)
    t0 = time.perf_counter()
    if len(set(noises)) == 1:
        tr = sim.run(surface, specs, noise=noises[0], seed=args.seed, **kwargs)
    else:  # different noise per run: run each alone (same seed), then stack
        parts = [sim.run(surface, [spec], noise=n, seed=args.seed, **kwargs) for spec, n in zip(specs, noises)]
        tr = _stack(parts)
        for i, n in enumerate(noises):
            if n:
                tr.labels[i] += f" noise={n:g}"
    elapsed = time.perf_counter() - t0

    print(f"{surface.name}: {surface.description}")
    print(f"start ({tr.positions[0, 0, 0]:g}, {tr.positions[0, 0, 1]:g}), {tr.steps} steps, "
          f"{len(specs)} runs in {elapsed:.3f} s")
    rows = []
    for r in tr.summary():
        rows.append([
            r["label"],
            "-" if math.isnan(r["final_loss"]) else f"{r['final_loss']:.4g}",
            f"({r['final_x']:.4g}, {r['final_y']:.4g})",
            str(r["steps_to_tol"]) if r["steps_to_tol"] >= 0 else "never",
            str(r["diverged_at"]) if r["diverged_at"] >= 0 else "no",
        ])
    crit = "loss-f_min" if tr.tol_criterion == "loss_gap" else "|grad|"
    print(format_table(["optimizer", "final loss", "final (x, y)", f"steps to {crit}<={tr.tol:g}", "diverged at"],
                       rows))
    if args.out or args.gif:
        from ravine.plots import surfaces as ps

        if args.out:
            print(f"wrote {ps.save_trajectories_figure(tr, args.out)}")
        if args.gif:
            print(f"wrote {ps.save_gif(tr, args.gif, frames=args.gif_frames)}")
    if args.json:
        print(f"wrote {write_json(args.json, tr.to_dict())}")
    return 0


def _stack(parts: list) -> Any:
    import dataclasses

    import numpy as np

    first = parts[0]
    cat = {f: np.concatenate([getattr(p, f) for p in parts]) for f in (
        "positions", "losses", "grad_norms", "lrs", "clipped", "diverged", "diverged_at", "steps_to_tol")}
    return dataclasses.replace(first, labels=[lab for p in parts for lab in p.labels],
                               specs=[s for p in parts for s in p.specs], noise=max(p.noise for p in parts), **cat)
