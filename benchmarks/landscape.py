"""Benchmark: a 41x41 filter-normalized loss plane of an MLP on scikit-learn's digits.

Model: ``Sequential(Linear(64, 256), ReLU, Linear(256, 256), ReLU, Linear(256, 10))`` briefly trained
with Adam; data: all 1797 digits (pixels / 16); loss: mean cross-entropy; float32.

Compared in the same process, interleaved (``--repeats`` rounds, median reported):

* ravine: ``ravine.landscape.plane(model, F.cross_entropy, (X, y), "filter", steps=41)`` (batched
  ``vmap`` passes with the input-layer identity), the same with ``shortcut=False``, and with
  ``vectorize=False`` (one pass over the data per point, input-layer identity kept);
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

Run: ``.venv/bin/python benchmarks/landscape.py [--steps 41] [--repeats 2] [--threads N]``
(needs ``pip install loss-landscapes``; the peer is never imported by the library).
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


def run_ravine(model, x, y, steps, shortcut=True, vectorize=True):
    t = time.perf_counter()
    res = L.plane(model, F.cross_entropy, (x, y), "filter", steps=steps, shortcut=shortcut, vectorize=vectorize)
    return time.perf_counter() - t, res


def run_peer(model, x, y, steps, grad):
    import loss_landscapes
    import loss_landscapes.metrics

    metric = loss_landscapes.metrics.Loss(F.cross_entropy, x, y)
    t = time.perf_counter()
    if grad:
        out = loss_landscapes.random_plane(
            model, metric, distance=1, steps=steps, normalization="filter", deepcopy_model=True
        )
    else:
        with torch.no_grad():
            out = loss_landscapes.random_plane(
                model, metric, distance=1, steps=steps, normalization="filter", deepcopy_model=True
            )
    return time.perf_counter() - t, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=41)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--no-peer", action="store_true", help="skip loss-landscapes")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    x, y = digits()
    model = trained_mlp(x, y)
    n, points = len(x), args.steps**2
    flops_point = 2 * n * (64 * 256 + 256 * 256 + 256 * 10)
    peak = matmul_gflops()
    fwd = forward_ms(model, x, y)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {n} samples; grid {args.steps}x{args.steps}")
    print(
        f"matmul 2048^3 float32: {peak:.1f} GFLOP/s; one forward over the data: {fwd:.2f} ms "
        f"({flops_point / fwd / 1e6:.1f} GFLOP/s)"
    )

    peer_ok = not args.no_peer
    if peer_ok:
        try:
            import loss_landscapes  # noqa: F401
        except ImportError:
            print("loss-landscapes is not installed (pip install loss-landscapes); peer skipped")
            peer_ok = False

    times: dict[str, list[float]] = {
        "ravine": [],
        "ravine (shortcut off)": [],
        "ravine per-point": [],
        "loss-landscapes": [],
        "loss-landscapes no_grad": [],
    }
    res = None
    for r in range(args.repeats):
        dt, res = run_ravine(model, x, y, args.steps)
        times["ravine"].append(dt)
        dt, _ = run_ravine(model, x, y, args.steps, shortcut=False)
        times["ravine (shortcut off)"].append(dt)
        dt, res_loop = run_ravine(model, x, y, args.steps, vectorize=False)
        times["ravine per-point"].append(dt)
        if peer_ok:
            times["loss-landscapes"].append(run_peer(model, x, y, args.steps, grad=True)[0])
            times["loss-landscapes no_grad"].append(run_peer(model, x, y, args.steps, grad=False)[0])
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items() if v), flush=True)

    # sanity: the centre of our grid is the model's own loss
    with torch.no_grad():
        own = float(F.cross_entropy(model(x), y))
    c = args.steps // 2
    assert abs(res.loss[c, c] - own) <= 1e-5 * max(1.0, own), (res.loss[c, c], own)
    assert abs(res_loop.loss - res.loss).max() <= 1e-4 * max(1.0, own)

    print()
    print(f"{'method':<24}{'total s':>9}{'ms/point':>10}{'GFLOP/s':>9}{'% matmul':>10}{'speedup':>9}")
    base = statistics.median(times["loss-landscapes"]) if times["loss-landscapes"] else None
    for name, v in times.items():
        if not v:
            continue
        med = statistics.median(v)
        gf = points * flops_point / med / 1e9
        sp = f"{base / med:.2f}x" if base else "-"
        print(f"{name:<24}{med:>9.2f}{med / points * 1e3:>10.3f}{gf:>9.1f}{100 * gf / peak:>9.0f}%{sp:>9}")
    print(f"ravine path: {res.info['path']}, input-layer shortcut on {res.info['shortcut_layers']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
