"""Top Hessian eigenvalues of an MLP on digits: ravine.curvature (Lanczos) against PyHessian.

Model: MLP 64-256-256-10 (ReLU), cross-entropy, scikit-learn's digits (all 1797 samples, pixels/16),
trained first for ``--train-steps`` full-batch Adam steps (lr 1e-3) so that the spectrum is that of a
network in training rather than at initialization. Then, on the same model and data:

- PyHessian (``pip install pyhessian``; benchmark-only peer, never imported by the library):
  ``hessian(model, criterion, data=(X, y), cuda=False).eigenvalues(top_n=n)``: power iteration with
  deflation, stopped when the Rayleigh quotient changes by less than 1e-3 (relative). Its HVPs are
  counted by wrapping its ``hessian_vector_product`` (each call is one ``torch.autograd.grad`` through
  the retained gradient graph, on the whole batch). If PyHessian cannot be imported, the same power
  iteration is run through ravine's operator (``method="power"``) and the reason is printed.
- ravine: ``hessian_eigenvalues(model, criterion, (X, y), k=n)`` (Lanczos with full
  reorthogonalization, residual tolerance 1e-3 relative to the spectral norm) as a user calls it: by
  default the operator builds the gradient graph once and reuses it for every HVP (the data is one
  in-memory batch and the graph is within ``max_graph_mb``), as PyHessian does; and the paths that
  keep no graph, used for DataLoaders and graphs over the bound: forward-over-reverse
  (``hvp="fwd_rev"``, ``torch.func.jvp`` of ``grad``) and double backward re-run per HVP
  (``hvp="double_backward", cache_graph=False``).
- Reference: ravine's Lanczos at ``tol=1e-8`` in float64 (not timed), to state each method's error.

Every timed run includes building the operator (and, where it is kept, the graph) and the peer's
``hessian(...)`` object. Times are wall-clock seconds and CPU seconds (``time.process_time``, all
threads), the median of ``--repeats`` runs per method, the methods interleaved, all in the same
process (the machine is shared and noisy; the ratios are what we report). Usage::

    .venv/bin/python benchmarks/curvature.py [--top 1 10] [--train-steps 200] [--threads N] [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from ravine.curvature import HessianOperator, hessian_eigenvalues


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    return x, y


def _model(x: torch.Tensor, y: torch.Tensor, steps: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return model


def _pyhessian(model: nn.Module, x, y, top_n: int, seed: int):
    """PyHessian's power iteration on a copy of the model, with its HVPs counted."""
    import importlib

    ph = importlib.import_module("pyhessian.hessian")  # the module (the package re-exports the class)

    counter = {"hvp": 0}
    original = ph.hessian_vector_product

    def counted(grads, params, v):
        counter["hvp"] += 1
        return original(grads, params, v)

    ph.hessian_vector_product = counted
    try:
        peer = copy.deepcopy(model)
        torch.manual_seed(seed)
        t0, c0 = time.perf_counter(), time.process_time()
        h = ph.hessian(peer, nn.CrossEntropyLoss(), data=(x, y), cuda=False)
        values, _ = h.eigenvalues(top_n=top_n)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        ph.hessian_vector_product = original
    return [float(v) for v in values], counter["hvp"], seconds, cpu


def _ours(model: nn.Module, x, y, top_n: int, op_kw: dict | None = None, **kw):
    """``hessian_eigenvalues`` on a ``HessianOperator(**op_kw)`` built inside the timed region."""
    t0, c0 = time.perf_counter(), time.process_time()
    op = HessianOperator(model, nn.CrossEntropyLoss(), (x, y), **(op_kw or {}))
    res = hessian_eigenvalues(op, k=top_n, **kw)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return [float(v) for v in res.values], res.num_hvps, seconds, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--top", type=int, nargs="+", default=[1, 10], help="numbers of eigenvalues")
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per method (median reported)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    x, y = _data()
    model = _model(x, y, args.train_steps, args.seed)
    with torch.no_grad():
        loss = float(nn.CrossEntropyLoss()(model(x), y))
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"MLP 64-256-256-10 on digits (N={len(x)}), {n_params} parameters, after {args.train_steps} "
        f"Adam steps: loss {loss:.4f}; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    try:
        import pyhessian  # noqa: F401

        peer_name = "PyHessian eigenvalues()"
        peer_error = None
    except Exception as err:  # report exactly why, then measure the power iteration it implements
        peer_name = "power iteration (ravine, PyHessian's algorithm)"
        peer_error = f"{type(err).__name__}: {err}"
        print(f"PyHessian could not be imported ({peer_error}); measuring the power iteration instead")

    missed: list[str] = []
    for top_n in args.top:
        ref, _, _, _ = _ours(model, x, y, top_n, {"dtype": torch.float64}, tol=1e-8, max_iter=5000)
        if peer_error is None:
            peer_run = lambda n=top_n: _pyhessian(model, x, y, n, args.seed)  # noqa: E731
        else:
            peer_run = lambda n=top_n: _ours(model, x, y, n, method="power", max_iter=100 * n)  # noqa: E731
        runs = [(peer_name, peer_run)]
        for label, op_kw in (
            ("ravine Lanczos (default: graph reused)", {}),
            ("ravine Lanczos, fwd_rev (no graph kept)", {"method": "fwd_rev"}),
            ("ravine Lanczos, double_backward, no graph kept", {"method": "double_backward", "cache_graph": False}),
        ):
            runs.append((label, lambda op_kw=op_kw, n=top_n: _ours(model, x, y, n, op_kw, seed=args.seed)))
        times: dict[str, list[float]] = {label: [] for label, _ in runs}
        cpus: dict[str, list[float]] = {label: [] for label, _ in runs}
        first: dict[str, tuple[list[float], int]] = {}
        for _ in range(args.repeats):  # interleaved, so that load changes hit every method alike
            for label, run in runs:
                vals, hvps, secs, cpu = run()
                times[label].append(secs)
                cpus[label].append(cpu)
                first.setdefault(label, (vals, hvps))
        rows = [
            (label, *first[label], statistics.median(times[label]), statistics.median(cpus[label])) for label, _ in runs
        ]
        print(
            f"\ntop-{top_n} eigenvalues (reference: Lanczos tol 1e-8, float64): "
            + ", ".join(f"{v:.4f}" for v in ref[: min(top_n, 10)])
        )
        print(
            f"{'method':<48} {'lambda_1':>10} {'max rel err':>12} {'HVPs':>6} {'seconds':>8} {'cpu s':>7} {'s/HVP':>7}"
        )
        for label, vals, hvps, secs, cpu in rows:
            err = max(abs(a - b) / abs(b) for a, b in zip(sorted(vals, reverse=True), ref))
            print(f"{label:<48} {vals[0]:>10.4f} {err:>12.2e} {hvps:>6d} {secs:>8.3f} {cpu:>7.3f} {secs / hvps:>7.4f}")
        peer = rows[0]
        for label, vals, hvps, secs, cpu in rows[1:]:
            agree = all(
                abs(a - b) <= 0.01 * abs(b) for a, b in zip(sorted(vals, reverse=True), sorted(peer[1], reverse=True))
            )
            if "default" in label and not (agree and hvps < peer[2] and secs < peer[3]):
                missed.append(f"top-{top_n}: {label}")  # the target: the default beats the peer
            print(
                f"  {label} vs peer: values within 1%: {agree}; HVPs {peer[2] / hvps:.1f}x fewer; "
                f"time {peer[3] / secs:.2f}x faster (CPU time {peer[4] / cpu:.2f}x)"
            )
    print(
        "\ntarget (the default: fewer HVPs and less time than the peer) met"
        if not missed
        else "\ntarget missed by: " + "; ".join(missed)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
