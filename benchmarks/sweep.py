"""Benchmark: a 64 x 64 (lr, momentum) sweep on Rosenbrock, 1000 steps, as one batched ravine program
versus the obvious alternative, a Python loop of ``torch.optim.SGD`` on a 2-element tensor per configuration.

The loop is timed on a random sample of configurations and scaled to the full grid (running all 4096 would take
minutes). Both sides compute the same thing: torch's heavy-ball momentum (``ravine.optim.sgd`` with a
``momentum`` axis) in float64 from the same start; the sampled cells are compared at the end.

    .venv/bin/python benchmarks/sweep.py [--n 64] [--steps 1000] [--sample 40] [--repeat 3]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

import ravine.simulate as sim
import ravine.surfaces as rs


def torch_loop(lr: float, momentum: float, start: tuple[float, float], steps: int) -> np.ndarray:
    p = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr, momentum=momentum)
    for _ in range(steps):
        opt.zero_grad()
        loss = (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2
        loss.backward()
        opt.step()
    return p.detach().numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64, help="grid points per axis (default 64)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--sample", type=int, default=40, help="configurations timed in the torch loop")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many sweeps")
    args = ap.parse_args()

    s = rs.get("rosenbrock")
    lrs = np.geomspace(1e-5, 3e-3, args.n)
    betas = np.linspace(0.0, 0.99, args.n)
    cells = args.n * args.n
    print(f"ravine sweep benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"python {platform.python_version()}, {platform.machine()}")
    print(f"grid {args.n} x {args.n} = {cells} configurations of sgd(lr, momentum) on rosenbrock, "
          f"{args.steps} steps, float64, start {s.start}")

    def timed_sweep(surface) -> tuple[float, sim.Sweep]:
        best, out = float("inf"), None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            out = sim.sweep(surface, "sgd", x=("lr", lrs), y=("momentum", betas), steps=args.steps)
            best = min(best, time.perf_counter() - t0)
        return best, out

    t_sweep, sw = timed_sweep(s)
    # the same surface without its closed-form gradient: autograd over the (4096, 2) batch each step
    s_auto = rs.Surface("rosenbrock (autograd)", s.value, description=s.description, domain=s.domain,
                        start=s.start, minima=s.minima)
    t_auto, sw_auto = timed_sweep(s_auto)
    same = np.array_equal(sw.diverged_at, sw_auto.diverged_at)

    rng = np.random.default_rng(0)
    picks = rng.choice(cells, size=min(args.sample, cells), replace=False)
    t0 = time.perf_counter()
    finals = [torch_loop(float(lrs[k % args.n]), float(betas[k // args.n]), s.start, args.steps) for k in picks]
    t_loop = time.perf_counter() - t0
    per_loop = t_loop / len(picks)
    per_sweep = t_sweep / cells

    # agreement on the sampled cells that stayed finite in both
    diffs = []
    for k, final in zip(picks, finals):
        i, j = divmod(int(k), args.n)
        if sw.diverged_at[i, j] < 0 and np.isfinite(final).all():
            diffs.append(abs(float(s.value(torch.as_tensor(final))) - sw.final_loss[i, j]))
    print()
    print(f"{'method':58s} {'total (s)':>10s} {'per config (us)':>16s} {'speed-up':>9s}")
    print(f"{'ravine.simulate.sweep (closed-form gradient)':58s} {t_sweep:10.3f} {1e6 * per_sweep:16.1f} "
          f"{per_loop / per_sweep:8.0f}x")
    print(f"{'ravine.simulate.sweep (autograd gradient)':58s} {t_auto:10.3f} {1e6 * t_auto / cells:16.1f} "
          f"{per_loop / (t_auto / cells):8.0f}x")
    print(f"{'torch.optim.SGD loop per config (' + str(len(picks)) + ' sampled, scaled)':58s} "
          f"{per_loop * cells:10.1f} {1e6 * per_loop:16.1f} {1:8.0f}x")
    print()
    print(f"diverged cells: {int(sw.diverged.sum())} of {cells}; closed-form and autograd sweeps agree on "
          f"divergence: {same}")
    if diffs:
        print(f"sampled cells compared with the torch loop: {len(diffs)}, max |final loss difference| "
              f"{max(diffs):.2e}")


if __name__ == "__main__":
    main()
