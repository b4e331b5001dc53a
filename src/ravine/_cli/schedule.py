"""``ravine schedule``: print a learning-rate schedule as a table, optionally plot it.

Every parameter of every schedule in :mod:`ravine.schedules` is a ``--kebab-case`` flag
(``--warmup-steps``, ``--decay-shape``...); a flag that the chosen schedule does not take is an error.
"""

from __future__ import annotations

import argparse
import math
import sys

from ravine import schedules as S
from ravine._cli import check_outputs
from ravine._validation import Interval, check

_EPILOG = """\
examples:
  ravine schedule --list
  ravine schedule warmup_cosine --peak 3e-4 --warmup-steps 100 --total-steps 1000
  ravine schedule wsd --peak 1e-3 --warmup-steps 100 --stable-steps 700 --decay-steps 200 --decay-shape 1-sqrt
  ravine schedule one_cycle --peak 0.1 --total-steps 500 --three-phase --out lr.png
  ravine schedule step_decay --peak 0.1 --milestones 300,600 --steps 900 --csv

step 0 is the first update; see `python -c "import ravine.schedules as s; help(s)"` for the conventions.
"""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _int(text: str) -> int:
    """An integer, also written as 1e4 or 10_000."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not math.isfinite(v) or not v.is_integer():
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    return int(v)


def _ints(text: str) -> tuple[int, ...]:
    """Comma-separated integers (``300,600``)."""
    parts = [p for p in text.replace(" ", "").split(",") if p]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return tuple(_int(p) for p in parts)


def _all_parameters() -> dict[str, tuple[S.Parameter, list[str]]]:
    """Every parameter name across the registry, with the schedules that take it."""
    out: dict[str, tuple[S.Parameter, list[str]]] = {}
    for name in S.names():
        for p in S.parameters(name):
            if p.name in out:
                out[p.name][1].append(name)
            else:
                out[p.name] = (p, [name])
    return out


def register(sub) -> None:
    p = sub.add_parser(
        "schedule",
        help="print a learning-rate schedule as a table (and plot it with --out)",
        description="Print a learning-rate schedule of ravine.schedules as a table of step and learning "
        "rate (first update, phase ends, last update), or every step with --csv; --out writes a plot.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", nargs="?", metavar="NAME", help=f"the schedule: {', '.join(S.names())}")
    p.add_argument("--list", action="store_true", help="list the schedules and their parameters, then exit")
    p.add_argument(
        "--steps",
        type=_int,
        metavar="N",
        help="steps to show (default: the schedule's total_steps, else 1000)",
    )
    p.add_argument("--rows", type=_int, default=12, metavar="K", help="about how many table rows (default 12)")
    p.add_argument("--csv", action="store_true", help="print every step as CSV (step,lr) instead of the table")
    p.add_argument("--out", metavar="FILE", help="also write a plot of the schedule (.png, .svg or .pdf)")
    p.add_argument("--log", action="store_true", help="logarithmic learning-rate axis in the plot")

    g = p.add_argument_group("schedule parameters (each applies to the schedules listed)")
    for pname, (spec, users) in _all_parameters().items():
        where = ", ".join(users)
        kw: dict = {"dest": f"param_{pname}", "default": None}
        if spec.kind == "bool":
            kw["action"] = argparse.BooleanOptionalAction
            g.add_argument(_flag(pname), help=f"({where})", **kw)
            continue
        kw["type"] = {"float": float, "int": _int, "ints": _ints, "str": str}[spec.kind]
        kw["metavar"] = {"float": "X", "int": "N", "ints": "N,N,...", "str": "NAME"}[spec.kind]
        if spec.choices:
            kw["choices"] = spec.choices
            kw["metavar"] = "{" + ",".join(spec.choices) + "}"
        g.add_argument(_flag(pname), help=f"({where})", **kw)
    p.set_defaults(func=run)


def _signature(name: str) -> str:
    parts = []
    for p in S.parameters(name):
        if p.kind == "bool":
            parts.append(f"[{_flag(p.name)}]")
            continue
        meta = "{" + ",".join(p.choices) + "}" if p.choices else p.kind.upper()
        if p.required:
            parts.append(f"{_flag(p.name)} {meta}")
        elif p.default is None:
            parts.append(f"[{_flag(p.name)} {meta}]")
        else:
            parts.append(f"[{_flag(p.name)} {meta}={p.default!r}]")
    return " ".join(parts)


def _print_list() -> None:
    width = max(len(n) for n in S.names())
    for name in S.names():
        doc = (S._REGISTRY[name].__doc__ or "").strip().splitlines()[0]
        print(f"{name:<{width}}  {doc}")
        print(f"{'':<{width}}  {_signature(name)}")


def _table_steps(schedule, steps: int, rows: int) -> list[int]:
    """First update, last update, the first and last step of each phase, and an even fill."""
    marks = {0, steps - 1}
    for ph in getattr(schedule, "phases", ()):
        for t in (ph.start, ph.end - 1):
            if 0 <= t < steps:
                marks.add(t)
    fill = max(rows - len(marks) + 2, 2)  # the fill's ends are 0 and steps - 1
    for i in range(fill):
        marks.add(round(i * (steps - 1) / (fill - 1)))
    return sorted(marks)


def _phase_at(schedule, t: int) -> tuple[str, str]:
    for ph in getattr(schedule, "phases", ()):
        if ph.start <= t < ph.end:
            if ph.end - ph.start == 1:
                return ph.name, f"{ph.name} (1 step)"
            if t == ph.start:
                return ph.name, f"start of {ph.name}"
            if t == ph.end - 1:
                return ph.name, f"end of {ph.name}"
            return ph.name, ""
    total = getattr(schedule, "total_steps", None)
    if total is not None and t >= total:
        return "after", ""
    return "", ""


def run(args) -> int:
    if args.list:
        _print_list()
        return 0
    check_outputs(args, files=("out",))
    if args.name is None:
        raise ValueError(f"give a schedule NAME or --list; valid names: {', '.join(S.names())}")
    if args.name not in S.names():
        raise ValueError(f"unknown schedule {args.name!r}; valid names: {', '.join(S.names())}")
    spec = S.parameters(args.name)
    accepted = {p.name for p in spec}
    given = {k[len("param_") :]: v for k, v in vars(args).items() if k.startswith("param_") and v is not None}
    wrong = [k for k in given if k not in accepted]
    if wrong:
        raise ValueError(
            f"{', '.join(_flag(k) for k in wrong)} does not apply to {args.name}; "
            f"its parameters: {_signature(args.name)}"
        )
    missing = [p.name for p in spec if p.required and p.name not in given]
    if missing:
        raise ValueError(
            f"{args.name} needs {', '.join(_flag(k) for k in missing)}; its parameters: {_signature(args.name)}"
        )
    schedule = S.get(args.name, **given)

    total = schedule.total_steps
    steps = args.steps if args.steps is not None else (total if total is not None else 1000)
    check("--steps", steps, Interval.finite(int, 1))
    check("--rows", args.rows, Interval(int, 2, 10_000))

    if args.csv:
        print("step,lr")
        for t in range(steps):
            print(f"{t},{schedule(t)!r}")
    else:
        print(repr(schedule))
        print(f"{'step':>8}  {'lr':>12}  {'phase':<9} note")
        for t in _table_steps(schedule, steps, args.rows):
            phase, note = _phase_at(schedule, t)
            notes = [n for n in (note, "first update" if t == 0 else "", "last shown" if t == steps - 1 else "") if n]
            print(f"{t:>8}  {schedule(t):>12.6g}  {phase:<9} {'; '.join(notes)}".rstrip())
        if total is not None:
            print(f"final value {schedule(total):.6g} from step {total} on")
    if args.out:
        from ravine.plots.schedules import plot_schedules

        path = plot_schedules({repr(schedule): schedule}, steps, args.out, log_y=args.log)
        print(f"wrote {path}", file=sys.stderr if args.csv else sys.stdout)
    return 0
