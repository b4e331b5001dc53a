"""One optimizer step: ravine (unfused, flat, compiled) against torch.optim, same run, as ratios.

Usage::

    .venv/bin/python benchmarks/step.py            # GPT-2-small-shaped set (124M) + 2000 x 1k tensors
    .venv/bin/python benchmarks/step.py --quick    # smaller sets (13M parameters in 52 tensors; 500 x 1k tensors)
    .venv/bin/python benchmarks/step.py --threads 1 --kinds lion,sfadamw   # issue 16's optimizers
    .venv/bin/python benchmarks/step.py --threads 1 --kinds muon --steps 3 --warmup 1 --no-memory

Each contestant gets fresh copies of the same parameters and gradients (float32, on ``--device``)
and is timed *paired* with the comparison's reference (torch's fused optimizer): their steps
alternate, so both see the same load on a shared machine. The candidate's first step (state
allocation and, for ravine's compiled path, compilation) is reported separately, then
``--warmup - 1`` untimed and ``--steps`` timed pairs follow. ``ratio`` is the candidate's median step
over the reference's median in the same pairs, ``(best)`` the ratio of the fastest steps. At most
two optimizers exist at a time (the 124M set needs about 2.5 GB per optimizer).

Effective GB/s counts the bytes the algorithm must move per float32 parameter, the same for every
contestant of a comparison: AdamW reads p, g, m, v and writes p, m, v (28 bytes); clipping first
adds one read of g for the norm (32); SGD with Nesterov momentum reads p, g, b and writes p, b (20).
ravine's default ``nonfinite="skip"`` check reads g once more when the chain does not clip (its
clip norm doubles as the check); ``no nan check`` is ``nonfinite="apply"``, torch's semantics.
``adamw-skip`` and ``sgd-skip`` compare ravine's default against torch's fused optimizer with the
same skip rule (``found_inf`` from a ``_foreach_norm`` pass, as GradScaler feeds it): 4 more bytes.
The newer optimizers (``--kinds lion,sfadamw,muon``, not in the default list) compare against their
reference implementations: ``lion`` against pytorch-optimizer's ``Lion`` (reads p, g, m, writes p,
m: 20 bytes); ``sfadamw`` (Schedule-Free AdamW in train mode) against the ``schedulefree`` package's
``AdamWScheduleFree`` (reads y, g, z, v, writes y, z, v: 28 bytes; ravine's chain is not fusable, so
it runs unfused) and heavyball's compiled ``SFAdamW``; ``muon`` splits the GPT-2 set as a user would,
with ``muon_param_groups`` (hidden matrices to Muon, embeddings and vectors to AdamW) and compares
``MuonWithAdamW`` (unfused; ``"flat"``: eager Newton-Schulz on each matrix's view of the flat
buffers; ``True``: compiled and batched per shape) against
``torch.optim.Muon`` + fused ``torch.optim.AdamW`` on the same split and heavyball's compiled
``Muon`` + ``AdamW`` (its Newton-Schulz products dominate: no GB/s; on the GPT-2 sets only).
heavyball (in the ``bench`` extra) sets ``p.grad = None`` after each step, so its contestants get
the gradients back by reference before each step; heavyball has no Lion. heavyball compiles its
step on the first call, so its ``first step`` column includes compilation.
``peak extra`` is the most memory a step allocates beyond what exists before it (CUDA:
``max_memory_allocated``; CPU: allocation events of ``torch.profiler(profile_memory=True)``).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import ravine.optim as ro  # noqa: E402
from peak_memory import peak_step_memory  # noqa: E402


def gpt2_shapes(n_layer: int = 12, d: int = 768, vocab: int = 50257, ctx: int = 1024) -> list[tuple[int, ...]]:
    """GPT-2 small's parameter shapes (Conv1D layout as in HF transformers): 148 tensors, 124.4M."""
    shapes: list[tuple[int, ...]] = [(vocab, d), (ctx, d)]
    for _ in range(n_layer):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    shapes += [(d,), (d,)]
    return shapes


def make(shapes: list[tuple[int, ...]], device: str) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    params = []
    for s in shapes:
        p = torch.nn.Parameter((torch.randn(s, generator=g) * 0.02).to(device))
        p.grad = (torch.randn(s, generator=g) * 1e-3).to(device)
        params.append(p)
    return params


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def once(step: Callable[[], None], device: str) -> float:
    sync(device)
    t0 = time.perf_counter()
    step()
    sync(device)
    return time.perf_counter() - t0


def paired(ref: Callable[[], None], cand: Callable[[], None], device: str, warmup: int, steps: int):
    """Alternate reference and candidate steps (so both see the same machine load); returns the
    candidate's first-step time and both lists of step times."""
    first = once(cand, device)
    for _ in range(warmup - 1):
        cand()
        ref()
    tr, tc = [], []
    for _ in range(steps):
        tr.append(once(ref, device))
        tc.append(once(cand, device))
    return first, tr, tc


def contestants(kind: str) -> dict[str, Callable]:
    """name -> builder(params) returning a step function."""

    def torch_clip_adamw(impl: str):
        def build(ps):
            kw = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[impl]
            opt = torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01, **kw)

            def step():
                torch.nn.utils.clip_grad_norm_(ps, 1.0, foreach=impl != "for-loop")
                opt.step()

            return step

        return build

    def torch_adamw(ps):
        opt = torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01, fused=True)
        return opt.step

    def torch_sgd(ps):
        opt = torch.optim.SGD(ps, lr=1e-3, momentum=0.9, nesterov=True, fused=True)
        return opt.step

    def torch_checked(cls, **kw):
        """torch's fused optimizer skipping steps with a non-finite gradient, as GradScaler makes it
        do: a ``found_inf`` tensor (here from ``_foreach_norm``, without AMP's unscaling write) that
        the fused kernel reads. ravine's default ``nonfinite="skip"`` semantics, built from torch."""

        def build(ps):
            opt = cls(ps, lr=1e-3, fused=True, **kw)
            grads = [p.grad for p in ps]
            found_inf = torch.zeros((), dtype=torch.float32, device=ps[0].device)

            def step():
                finite = torch.stack(torch._foreach_norm(grads)).isfinite().all()
                found_inf.copy_(~finite)
                opt.found_inf = found_inf
                opt.step()

            return step

        return build

    def ravine(transform_fn, fused, nonfinite="skip"):
        def build(ps):
            opt = ro.Optimizer(ps, transform_fn(), fused=fused, nonfinite=nonfinite)
            return opt.step

        return build

    def clip_adamw():
        return ro.chain(ro.clip_by_global_norm(1.0), ro.torch_adamw(1e-3, weight_decay=0.01))

    def adamw():
        return ro.torch_adamw(1e-3, weight_decay=0.01)

    def sgd():
        return ro.torch_sgd(1e-3, momentum=0.9, nesterov=True)

    def regrad(ps, step):
        """heavyball sets ``p.grad = None`` after its step (it zeroes the gradients for you): give them
        back before each step, by reference (no copy), or every step after the first would do nothing."""
        grads = [p.grad for p in ps]

        def run():
            for p, g in zip(ps, grads):
                p.grad = g
            step()

        return run

    def pto_lion(ps):
        import pytorch_optimizer

        return pytorch_optimizer.Lion(ps, lr=1e-4, weight_decay=0.01).step

    def lion():
        return ro.lion(1e-4, weight_decay=0.01)

    def sf_reference(ps):
        import schedulefree

        opt = schedulefree.AdamWScheduleFree(ps, lr=1e-3, weight_decay=0.01)
        opt.train()
        return opt.step

    def sf_heavyball(ps):
        import heavyball

        # heavyball's defaults differ from schedulefree's (betas, eps): the reference's are given
        opt = heavyball.SFAdamW(ps, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
        return regrad(ps, opt.step)

    def sfadamw():
        return ro.schedule_free_adamw(1e-3, weight_decay=0.01)

    def muon_groups(ps):
        """``ro.muon_param_groups`` on a module holding the set's parameters as GPT-2 holds them: the
        first two (token and position embeddings, the output head tied to the first) to AdamW, the
        other 2D matrices to Muon, vectors to AdamW."""
        model = torch.nn.Module()
        model.wte = torch.nn.Embedding(*ps[0].shape)
        model.wte.weight = ps[0]
        model.wpe = torch.nn.Embedding(*ps[1].shape)
        model.wpe.weight = ps[1]
        model.blocks = torch.nn.ParameterList(ps[2:])
        groups = ro.muon_param_groups(model, lr=0.02, adamw_lr=3e-4)
        if [g["use_muon"] for g in groups] != [True, False]:
            raise ValueError("muon: the set has no hidden matrices (run it on a gpt2 set)")
        return groups

    def muon_torch(ps):
        hidden, other = (g["params"] for g in muon_groups(ps))
        mu = torch.optim.Muon(hidden, lr=0.02, weight_decay=0.0, adjust_lr_fn="original")
        aw = torch.optim.AdamW(other, lr=3e-4, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.0, fused=True)

        def step():
            mu.step()
            aw.step()

        return step

    def muon_ravine(fused):
        def build(ps):
            return ro.MuonWithAdamW(muon_groups(ps), fused=fused).step

        return build

    def muon_heavyball(ps):
        import heavyball

        hidden, other = (g["params"] for g in muon_groups(ps))
        mu = heavyball.Muon(hidden, lr=0.02, betas=(0.95, 0.95))
        aw = heavyball.AdamW(other, lr=3e-4, betas=(0.9, 0.95), eps=1e-10)

        def step():
            mu.step()
            aw.step()

        return regrad(ps, step)

    if kind == "lion":
        return {
            "pto Lion": pto_lion,
            "ravine unfused": ravine(lion, False),
            "ravine flat": ravine(lion, "flat"),
            "ravine fused": ravine(lion, True),
            "  no nan check": ravine(lion, True, "apply"),
        }
    if kind == "sfadamw":
        return {
            "schedulefree": sf_reference,
            "ravine unfused": ravine(sfadamw, False),
            "heavyball": sf_heavyball,
        }
    if kind == "muon":
        return {
            "torch Muon+AdamW": muon_torch,
            "ravine unfused": muon_ravine(False),
            "ravine flat": muon_ravine("flat"),
            "ravine fused": muon_ravine(True),
            "heavyball": muon_heavyball,
        }
    if kind == "clip+adamw":
        return {
            "torch for-loop": torch_clip_adamw("for-loop"),
            "torch foreach": torch_clip_adamw("foreach"),
            "torch fused": torch_clip_adamw("fused"),
            "ravine unfused": ravine(clip_adamw, False),
            "ravine flat": ravine(clip_adamw, "flat"),
            "ravine fused": ravine(clip_adamw, True),
        }
    if kind == "adamw":
        return {
            "torch fused": torch_adamw,
            "ravine flat": ravine(adamw, "flat"),
            "ravine fused": ravine(adamw, True),
            "  no nan check": ravine(adamw, True, "apply"),
        }
    if kind == "adamw-skip":
        return {
            "torch fused+chk": torch_checked(torch.optim.AdamW, weight_decay=0.01),
            "ravine fused": ravine(adamw, True),
        }
    if kind == "sgd-skip":
        return {
            "torch fused+chk": torch_checked(torch.optim.SGD, momentum=0.9, nesterov=True),
            "ravine fused": ravine(sgd, True),
        }
    if kind == "sgd-nesterov":
        return {
            "torch fused": torch_sgd,
            "ravine flat": ravine(sgd, "flat"),
            "ravine fused": ravine(sgd, True),
            "  no nan check": ravine(sgd, True, "apply"),
        }
    raise ValueError(kind)


BYTES = {
    "clip+adamw": 32,
    "adamw": 28,
    "sgd-nesterov": 20,
    "adamw-skip": 32,
    "sgd-skip": 24,
    "lion": 20,
    "sfadamw": 28,
    "muon": None,  # bound by the Newton-Schulz matrix products, not by memory traffic
}
DEFAULT_KINDS = ("clip+adamw", "adamw", "sgd-nesterov", "adamw-skip", "sgd-skip")
MATRIX_KINDS = ("muon",)  # run on the GPT-2-shaped sets only (the others hold no hidden matrices)
REFERENCE = {
    "lion": "pto Lion",
    "sfadamw": "schedulefree",
    "muon": "torch Muon+AdamW",
    "clip+adamw": "torch fused",
    "adamw": "torch fused",
    "sgd-nesterov": "torch fused",
    "adamw-skip": "torch fused+chk",
    "sgd-skip": "torch fused+chk",
}


def run(args: argparse.Namespace) -> None:
    if args.quick:
        sets = {"gpt2-mini (4 layers, d=384)": gpt2_shapes(4, 384, 16000, 256), "500 x 1k": [(1000,)] * 500}
    else:
        sets = {"gpt2-small (124M, 148 tensors)": gpt2_shapes(), "2000 x 1k": [(1000,)] * 2000}
    kinds = args.kinds.split(",")
    print(
        f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
        f"median of {args.steps} steps after {args.warmup} warm-up steps"
    )
    for set_name, shapes in sets.items():
        n = sum(torch.Size(s).numel() for s in shapes)
        print(f"\n## {set_name}: {n / 1e6:.1f}M parameters, {len(shapes)} tensors")
        for kind in kinds:
            if kind in MATRIX_KINDS and not set_name.startswith("gpt2"):
                print(f"\n{kind}: skipped on {set_name} (no hidden matrices)")
                continue
            entries = contestants(kind)
            ref_name = REFERENCE[kind]
            ref_ps = make(shapes, args.device)
            ref_step = entries[ref_name](ref_ps)
            ref_first = once(ref_step, args.device)
            ref_peak = peak_step_memory(ref_step, args.device) if args.memory else float("nan")
            rows = {}
            ref_times: list[float] = []
            for name, build in entries.items():
                if name == ref_name or (args.only and args.only not in name):
                    continue
                ps = make(shapes, args.device)
                step = build(ps)
                first, tr, tc = paired(ref_step, step, args.device, args.warmup, args.steps)
                peak = peak_step_memory(step, args.device) if args.memory else float("nan")
                ref_times += tr
                rows[name] = (
                    statistics.median(tc),
                    statistics.median(tc) / statistics.median(tr),
                    min(tc) / min(tr),
                    first,
                    peak,
                )
                del ps, step
                gc.collect()
                if args.device.startswith("cuda"):
                    torch.cuda.empty_cache()
            if ref_times:
                rows = {ref_name: (statistics.median(ref_times), 1.0, 1.0, ref_first, ref_peak), **rows}
            del ref_ps, ref_step
            gc.collect()
            per_param = "compute-bound" if BYTES[kind] is None else f"{BYTES[kind]} bytes/param"
            print(f"\n{kind} ({per_param}); ratios against {ref_name}, paired steps")
            print(
                f"{'contestant':<16} {'ms/step':>8} {'ratio':>6} {'(best)':>7} {'GB/s':>6} "
                f"{'first step s':>12} {'peak extra MB':>13}"
            )
            for name, (med, ratio, ratio_best, first, peak) in rows.items():
                gbs = "-" if BYTES[kind] is None else f"{BYTES[kind] * n / med / 1e9:.2f}"
                print(
                    f"{name:<16} {med * 1e3:>8.1f} {ratio:>5.2f}x {ratio_best:>6.2f}x "
                    f"{gbs:>6} {first:>12.2f} {peak / 2**20:>13.1f}"
                )
            sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller parameter sets")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per contestant (median reported)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps, the first reported separately")
    ap.add_argument(
        "--kinds",
        default=",".join(DEFAULT_KINDS),
        help=f"comma-separated comparisons, of {', '.join(BYTES)} (default: {', '.join(DEFAULT_KINDS)})",
    )
    ap.add_argument("--only", default="", help="run only contestants whose name contains this")
    ap.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory step")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave torch's default)")
    args = ap.parse_args()
    if args.threads < 0:
        raise SystemExit(f"--threads must be >= 0, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    unknown = [k for k in args.kinds.split(",") if k not in BYTES]
    if unknown:
        raise SystemExit(f"--kinds: unknown comparison(s) {unknown}; allowed: {', '.join(BYTES)}")
    if args.steps < 1 or args.warmup < 1:
        raise SystemExit(f"--steps and --warmup must be >= 1, got {args.steps}, {args.warmup}")
    run(args)


if __name__ == "__main__":
    main()
