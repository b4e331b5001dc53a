"""Benchmark: a 41x41 filter-normalized loss plane of an MLP on scikit-learn's digits.

Model: ``Sequential(Linear(64, 256), ReLU, Linear(256, 256), ReLU, Linear(256, 10))`` briefly trained
with Adam; data: all 1797 digits (pixels / 16); loss: mean cross-entropy; float32.

Compared in the same process, interleaved (``--repeats`` rounds per thread count; the best round is
reported, as ``timeit`` does, since on a shared machine other work only ever adds time, and the
median beside it):

* ravine: ``ravine.landscape.plane(model, F.cross_entropy, (X, y), "filter", steps=41)`` as a user
  calls it (on a CPU: one pass over the data per point, with the input-layer identity), the same with
  ``shortcut=False`` (every layer computed per point), and with ``vectorize=True`` (batched ``vmap``
  passes, the accelerator default, with the identity);
* peer: the ``loss-landscapes`` package's ``random_plane(model, Loss(F.cross_entropy, X, y),
  distance=1, steps=41, normalization="filter", deepcopy_model=True)``, one point per forward pass,
  walking the weights in place: as shipped (its metric's forward records an autograd graph, since
  the package does not disable gradients), and under ``torch.no_grad()`` (its best case). Speedups
  are against the package as shipped; the no-grad row shows how much of that is its autograd
  overhead.

Effective throughput counts the matmul FLOPs of a full forward per grid point,
``2 * N * (64*256 + 256*256 + 256*10)``, whatever shortcut avoided part of them, and is compared with
the throughput of a large float32 matmul (2048 x 2048) measured in the same run: the physical limit.
The machine is shared: absolute times are noisy, the ratios measured in one run are what to report.

Times: wall-clock seconds (the speed-up column; at two threads a busy neighbour stalls every
parallel region, so take the rounds of a quiet moment) and CPU seconds (``time.process_time``, all
threads: at one thread the figure least disturbed by other processes).

Run: ``.venv/bin/python benchmarks/landscape.py [--steps 41] [--repeats 3] [--threads 1 2]``
(needs ``pip install loss-landscapes``, in the ``bench`` extra; the peer is never imported by the
library).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ravine import landscape as L  # noqa: E402


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y, dtype=torch.long)


def trained_mlp(x: torch.Tensor, y: torch.Tensor, steps: int = 60) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def forward_ms(model: nn.Module, x: torch.Tensor, y: torch.Tensor, reps: int = 20) -> float:
    with torch.no_grad():
        F.cross_entropy(model(x), y)
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            F.cross_entropy(model(x), y)
            best = min(best, time.perf_counter() - t)
    return best * 1e3


def run_ravine(model, x, y, steps, **kw):
    t, c = time.perf_counter(), time.process_time()
    res = L.plane(model, F.cross_entropy, (x, y), "filter", steps=steps, **kw)
    return time.perf_counter() - t, time.process_time() - c, res


def run_peer(model, x, y, steps, grad):
    import loss_landscapes
    import loss_landscapes.metrics

    metric = loss_landscapes.metrics.Loss(F.cross_entropy, x, y)
    t, c = time.perf_counter(), time.process_time()
    if grad:
        out = loss_landscapes.random_plane(
            model, metric, distance=1, steps=steps, normalization="filter", deepcopy_model=True
        )
    else:
        with torch.no_grad():
            out = loss_landscapes.random_plane(
                model, metric, distance=1, steps=steps, normalization="filter", deepcopy_model=True
            )
    return time.perf_counter() - t, time.process_time() - c, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=41)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=None, help="thread counts (default: torch's)")
    ap.add_argument("--no-peer", action="store_true", help="skip loss-landscapes")
    args = ap.parse_args(argv)
    x, y = digits()
    model = trained_mlp(x, y)
    n, points = len(x), args.steps**2
    flops_point = 2 * n * (64 * 256 + 256 * 256 + 256 * 10)
    peer_ok = not args.no_peer
    if peer_ok:
        try:
            import loss_landscapes  # noqa: F401
        except ImportError:
            print("loss-landscapes is not installed (pip install loss-landscapes); peer skipped")
            peer_ok = False
    methods = {
        "ravine (default)": lambda: run_ravine(model, x, y, args.steps),
        "ravine, shortcut off": lambda: run_ravine(model, x, y, args.steps, shortcut=False),
        "ravine, vmap": lambda: run_ravine(model, x, y, args.steps, vectorize=True),
    }
    if peer_ok:
        methods["loss-landscapes"] = lambda: run_peer(model, x, y, args.steps, grad=True)
        methods["loss-landscapes no_grad"] = lambda: run_peer(model, x, y, args.steps, grad=False)
    with torch.no_grad():
        own = float(F.cross_entropy(model(x), y))
    print(f"torch {torch.__version__}; {n} samples; grid {args.steps}x{args.steps}")
    for threads in args.threads or [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        peak = matmul_gflops()
        fwd = forward_ms(model, x, y)
        print(
            f"\n{threads} thread(s): matmul 2048^3 float32 {peak:.1f} GFLOP/s; one forward over the data "
            f"{fwd:.2f} ms ({flops_point / fwd / 1e6:.1f} GFLOP/s)"
        )
        walls: dict[str, list[float]] = {k: [] for k in methods}
        cpus: dict[str, list[float]] = {k: [] for k in methods}
        results = {}
        for r in range(args.repeats):  # interleaved: load changes hit every method alike
            for name, run in methods.items():
                wall, cpu, out = run()
                walls[name].append(wall)
                cpus[name].append(cpu)
                results[name] = out
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in walls.items()), flush=True)
        # sanity: the grid's centre is the model's own loss; every ravine path agrees to float32 rounding
        c = args.steps // 2
        default = results["ravine (default)"]
        assert abs(default.loss[c, c] - own) <= 1e-5 * max(1.0, own), (default.loss[c, c], own)
        for name in ("ravine, shortcut off", "ravine, vmap"):
            assert abs(results[name].loss - default.loss).max() <= 1e-4 * max(1.0, own), name
        print(
            f"{'method (best round)':<26}{'total s':>9}{'ms/point':>10}{'CPU ms/pt':>11}{'GFLOP/s':>9}"
            f"{'% matmul':>10}{'speed-up':>10}{'CPU ratio':>11}{'median speed-up':>17}"
        )
        best = {k: min(v) for k, v in walls.items()}
        best_cpu = {k: min(v) for k, v in cpus.items()}
        med = {k: statistics.median(v) for k, v in walls.items()}
        peer = "loss-landscapes"
        for name in methods:
            gf = points * flops_point / best[name] / 1e9
            sp = f"{best[peer] / best[name]:.2f}x" if peer_ok else "-"
            cr = f"{best_cpu[peer] / best_cpu[name]:.2f}x" if peer_ok else "-"
            ms = f"{med[peer] / med[name]:.2f}x" if peer_ok else "-"
            print(
                f"{name:<26}{best[name]:>9.2f}{best[name] / points * 1e3:>10.3f}"
                f"{best_cpu[name] / points * 1e3:>11.3f}{gf:>9.1f}{100 * gf / peak:>9.0f}%{sp:>10}{cr:>11}{ms:>17}"
            )
        print(f"ravine default path: {default.info['path']}, input-layer identity on {default.info['shortcut_layers']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
