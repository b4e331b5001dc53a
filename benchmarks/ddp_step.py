"""The optimizer step per rank under data-parallel training (gloo, 2 CPU processes), beside one process.

Usage::

    .venv/bin/python benchmarks/ddp_step.py            # 29M parameters in 68 tensors, 2 ranks
    .venv/bin/python benchmarks/ddp_step.py --quick    # 10M parameters in 36 tensors

Every contestant steps the same parameters with the same gradients (float32, one torch thread per
process; the gradients stand for what DDP's all-reduce leaves on each rank, so the step is what is
timed, not the communication):

- ``1 process``: one process steps every parameter;
- ``DDP, per rank``: both ranks step every parameter at the same time (DDP keeps a full replica and
  full optimizer state on each rank), so on a 2-core machine the ratio to one process shows what two
  ranks sharing the memory bandwidth cost;
- ``ZeRO-1, per rank``: ``torch.distributed.optim.ZeroRedundancyOptimizer`` around the same optimizer
  class: each rank steps its half of the parameters and broadcasts them (the broadcast is in the step).

Contestants: torch's ``AdamW`` (foreach, and fused) and ravine's ``AdamW`` (unfused, ``fused="flat"`` and the
compiled ``fused=True``, whose compilation the untimed warmup steps absorb),
all as classes with keyword arguments, as ZeroRedundancyOptimizer takes them (it re-adds the constructor's
keywords to every param group; ravine's optimizers accept their own options there).
Each time is the median of ``--steps`` timed steps after ``--warmup`` untimed ones; ``vs torch`` divides
by torch foreach AdamW's median in the same setting, measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import ravine.optim as ro  # noqa: E402


def shapes(quick: bool) -> list[tuple[int, ...]]:
    """Transformer-like shapes: an 8192-row embedding, 8 (quick: 4) blocks of width 512 (quick: 384)."""
    d, n = (384, 2) if quick else (512, 4)
    out: list[tuple[int, ...]] = [(8192, d)]
    for _ in range(n * 2):
        out += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d, 4 * d), (4 * d, d)]
    out += [(d,), (d,), (d,)]
    return out


def params(quick: bool) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    ps = []
    for s in shapes(quick):
        p = torch.nn.Parameter(torch.randn(s, generator=g) * 0.02)
        p.grad = torch.randn(s, generator=g) * 1e-3
        ps.append(p)
    return ps


def optimizers() -> dict[str, tuple[type, dict]]:
    """name -> (optimizer class, keyword arguments): classes, so ZeroRedundancyOptimizer can take them."""
    return {
        "torch AdamW foreach": (torch.optim.AdamW, {"lr": 1e-3, "weight_decay": 0.01, "foreach": True}),
        "torch AdamW fused": (torch.optim.AdamW, {"lr": 1e-3, "weight_decay": 0.01, "fused": True}),
        "ravine AdamW": (ro.AdamW, {"lr": 1e-3, "weight_decay": 0.01}),
        "ravine AdamW flat": (ro.AdamW, {"lr": 1e-3, "weight_decay": 0.01, "fused": "flat"}),
        "ravine AdamW compiled": (ro.AdamW, {"lr": 1e-3, "weight_decay": 0.01, "fused": True}),
    }


def time_steps(step, warmup: int, steps: int, barrier=None) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        if barrier is not None:
            barrier()  # both ranks start each step together: they share the machine while they step
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(setting: str, quick: bool, warmup: int, steps: int) -> dict[str, float]:
    out = {}
    for name, (cls, kw) in optimizers().items():
        ps = params(quick)
        if setting == "zero":
            from torch.distributed.optim import ZeroRedundancyOptimizer

            opt = ZeroRedundancyOptimizer(ps, optimizer_class=cls, **kw)
        else:
            opt = cls(ps, **kw)
        barrier = dist.barrier if setting != "single" else None
        out[name] = time_steps(opt.step, warmup, steps, barrier)
        del opt, ps
    return out


def rank_main(rank: int, world: int, init: str, quick: bool, warmup: int, steps: int, outdir: str) -> None:
    torch.set_num_threads(1)
    timeout = datetime.timedelta(minutes=5)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world, timeout=timeout)
    try:
        result = {"ddp": measure("ddp", quick, warmup, steps), "zero": measure("zero", quick, warmup, steps)}
        torch.save(result, os.path.join(outdir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10M parameters instead of 29M")
    ap.add_argument("--world", type=int, default=2, help="ranks (processes), default 2")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    args = ap.parse_args()
    if args.world < 2 or args.steps < 1 or args.warmup < 0:
        ap.error(f"need --world >= 2, --steps >= 1, --warmup >= 0, got {args.world}, {args.steps}, {args.warmup}")
    torch.set_num_threads(1)
    n = sum(p.numel() for p in params(args.quick))
    print(f"{n / 1e6:.1f}M parameters in {len(shapes(args.quick))} tensors, float32, 1 thread per process, "
          f"{os.cpu_count()} cores")
    single = measure("single", args.quick, args.warmup, args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        init = f"file://{tmp}/rendezvous"
        mp.start_processes(
            rank_main,
            args=(args.world, init, args.quick, args.warmup, args.steps, tmp),
            nprocs=args.world,
            start_method="spawn",
        )
        ranks = [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=True) for r in range(args.world)]
    settings = {"1 process": single}
    for key, label in (("ddp", f"DDP, per rank ({args.world})"), ("zero", f"ZeRO-1, per rank ({args.world})")):
        settings[label] = {name: max(r[key][name] for r in ranks) for name in single}  # the slower rank
    print(f"\n{'optimizer':22s}" + "".join(f"{s:>26s}" for s in settings))
    for name in single:
        cells = []
        for times in settings.values():
            ref = times["torch AdamW foreach"]
            cells.append(f"{times[name] * 1e3:9.1f} ms ({times[name] / ref:4.2f}x)")
        print(f"{name:22s}" + "".join(f"{c:>26s}" for c in cells))
    print("\n(x): the step's median over torch AdamW foreach's median in the same setting and run; per rank: the "
          "slower rank.")


if __name__ == "__main__":
    main()
