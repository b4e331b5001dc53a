"""Benchmark: ``ravine.simulate.run`` eager versus compiled (``compile=True``), in the same run.

The requests the playground sends most: the page's six optimizers (gd, momentum, nesterov, rmsprop, adam, adamw)
x 500 steps on Rosenbrock, and Adam alone (what a dragged slider recomputes, the other runs coming from the
server's run cache). Each is timed eagerly and with its compiled program; the first compiled call, which
compiles the program (or loads it from torch inductor's on-disk cache, when an earlier process compiled the
same structure), is timed apart. The compiled results are compared with the eager ones (max relative
difference of the positions).

    .venv/bin/python benchmarks/simulate_run.py [--steps 500] [--repeat 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

import ravine.simulate as sim

OPTIMIZERS = [{"name": "gd", "lr": 1e-3}, {"name": "momentum", "lr": 1e-2}, {"name": "nesterov", "lr": 1e-2},
              {"name": "rmsprop", "lr": 1e-2}, {"name": "adam", "lr": 0.05}, {"name": "adamw", "lr": 0.05}]


def best_ms(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=20, help="best of this many calls (eager: a quarter of them)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the server uses 1)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"ravine.simulate.run, eager vs compiled: torch {torch.__version__}, {a.threads} thread(s), "
          f"python {platform.python_version()}, {platform.machine()}; rosenbrock from (-1.5, 2.5), {a.steps} steps, "
          f"float64, compile block {sim.COMPILE_BLOCK} steps")
    print(f"{'request':<28} {'eager ms':>9} {'compiled ms':>12} {'ratio':>7} {'first compiled call s':>22} "
          f"{'max rel. diff':>14}")
    for label, specs in (("6 optimizers (the page)", OPTIMIZERS), ("adam alone (a slider)", [OPTIMIZERS[4]])):
        def run(compile: bool, specs=specs) -> sim.Trajectories:
            return sim.run("rosenbrock", specs, start=(-1.5, 2.5), steps=a.steps, compile=compile)

        t0 = time.perf_counter()
        compiled = run(True)
        first = time.perf_counter() - t0
        if compiled.engine != "compiled":
            raise SystemExit(f"{label}: not compiled: {compiled.extra.get('compile')}")
        eager = run(False)
        diff = np.max(np.abs(compiled.positions - eager.positions) / np.maximum(np.abs(eager.positions), 1e-12))
        t_eager = best_ms(lambda: run(False), max(3, a.repeat // 4))
        t_compiled = best_ms(lambda: run(True), a.repeat)
        print(f"{label:<28} {t_eager:>9.1f} {t_compiled:>12.1f} {t_compiled / t_eager:>6.2f}x {first:>22.1f} "
              f"{diff:>14.1e}")


if __name__ == "__main__":
    main()
