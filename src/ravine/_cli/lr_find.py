"""``ravine lr-find CONFIG``: the learning-rate range test on a harness config, with its figure."""

from __future__ import annotations

import argparse

from ravine._cli import THREADS, check_outputs, integer


def register(sub) -> None:
    """Add the ``lr-find`` subcommand to ``sub``."""
    p = sub.add_parser(
        "lr-find",
        help="run the learning-rate range test on a training config and suggest learning rates",
        description="Build the data, model and optimizer of a TrainConfig (a JSON file, as `ravine experiment` "
        "runs store in config.json; or a run directory), raise the learning rate exponentially from --start to "
        "--end, stop when the smoothed loss exceeds --stop-factor times its best, and print the suggestions "
        "(steepest descent, fastai's valley, minimum/10). Nothing of the config's own run is touched.",
    )
    p.add_argument("config", help="a TrainConfig JSON file, or a run directory holding config.json")
    p.add_argument("--start", type=float, default=1e-7, help="first learning rate (default 1e-7)")
    p.add_argument("--end", type=float, default=10.0, help="last learning rate (default 10)")
    p.add_argument("--steps", type=int, default=100, help="steps of the ramp (default 100)")
    p.add_argument("--smooth", type=float, default=0.05, help="weight of the newest loss in the average (default 0.05)")
    p.add_argument(
        "--stop-factor", type=float, default=4.0, help="stop above this multiple of the best loss (default 4)"
    )
    p.add_argument("--plot", default=None, help="save the figure here (.png, .svg or .pdf)")
    p.add_argument("--json", default=None, help="save the curve and the suggestions here as JSON")
    p.add_argument("--threads", type=integer("--threads", THREADS), default=1, help="torch threads (default 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the test on ``args.config`` and print where it stopped and what it suggests."""
    from pathlib import Path

    import torch

    from ravine import _io
    from ravine.experiments import TrainConfig, lr_find_config

    path = Path(args.config)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"config must be a TrainConfig JSON file or a run directory, got {args.config!r}")
    check_outputs(args, files=("plot", "json"))
    torch.set_num_threads(args.threads)
    config = TrainConfig.from_json(path.read_text(encoding="utf-8"))
    result = lr_find_config(
        config, start=args.start, end=args.end, steps=args.steps, smooth=args.smooth, stop_factor=args.stop_factor
    )
    stop = f"stopped at lr {result.stop_lr:.3g} ({result.stop_reason})" if result.stop_lr else "ran the whole ramp"
    print(f"{config.optimizer} on {config.data}/{config.model}: {len(result.lrs)} steps, {stop}")
    print(f"lowest smoothed loss {result.smoothed.min():.4g} at lr {result.best_lr:.3g}")
    for name, s in result.suggestions.items():
        print(f"  {name:11s} lr = {s.lr:.3g}   ({s.description})")
    if args.plot:
        result.plot(args.plot, title=f"Range test: {config.optimizer} on {config.data}/{config.model}")
        print(f"figure: {args.plot}")
    if args.json:
        _io.write_json(args.json, result.to_dict())
        print(f"json: {args.json}")
    return 0
