"""The training runs that tests/test_distributed.py compares: one function trains a case either as one
rank of a DistributedDataParallel job (gloo, CPU) or as a single process on the whole global batch.

``worker`` is the entry of each spawned rank: it joins the process group, runs the requested cases and
writes what it measured to ``<outdir>/rank<r>.pt`` (loaded with ``weights_only=True``); the test waits
for the processes to exit and compares the files with a single-process run of the same case.
"""

from __future__ import annotations

import copy
import datetime
import os
import traceback

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.optim import ZeroRedundancyOptimizer

import ravine.optim as ro
from ravine.schedules import WarmupCosine

STEPS = 4
NAN_STEP = 2  # the step at which rank 1's loss is nan in the "nan" case
ZERO_SAVE = 2  # the ZeRO case saves its consolidated checkpoint after this many steps
GLOBAL_BATCH = 8


def make_model() -> nn.Module:
    """A tiny float64 MLP with the same initial weights in every process."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 1)).double()


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The global batches of the run, one per step, the same in every process."""
    g = torch.Generator().manual_seed(1)
    return [
        (
            torch.randn(GLOBAL_BATCH, 5, generator=g, dtype=torch.float64),
            torch.randn(GLOBAL_BATCH, 1, generator=g, dtype=torch.float64),
        )
        for _ in range(STEPS)
    ]


def make_optimizer(case: str, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer of ``case``; clipping thresholds are small enough that every step clips."""
    params = list(model.parameters())
    if case in ("chain", "nan"):
        return ro.Optimizer(params, ro.chain(ro.clip_by_global_norm(0.05), ro.adamw(1e-2, weight_decay=0.1)))
    if case == "adamw":
        return ro.AdamW(params, lr=1e-2, weight_decay=0.1)
    if case in ("flat", "compiled"):
        fused = "flat" if case == "flat" else True
        return ro.Optimizer(params, ro.chain(ro.clip_by_global_norm(0.05), ro.adamw(1e-2)), fused=fused)
    if case == "schedule":
        return ro.Optimizer(params, ro.adamw(WarmupCosine(1e-2, 2, STEPS), weight_decay=0.1))
    if case == "groups":
        weights = [p for p in params if p.ndim > 1]
        biases = [p for p in params if p.ndim == 1]
        return ro.Optimizer(
            [{"params": weights}, {"params": biases, "weight_decay": 0.0, "lr": 3e-2}],
            ro.chain(ro.clip_by_global_norm(0.05), ro.adamw(1e-2, weight_decay=0.1)),
        )
    raise ValueError(f"case must be one of the cases of tests/_ddp_worker.py, got {case!r}")


def _snapshot(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _state(opt: torch.optim.Optimizer) -> dict:
    """The optimizer's per-parameter state, cloned (torch's layout: parameter index -> tensors)."""
    sd = opt.state_dict()["state"]
    return {i: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()} for i, s in sd.items()}


def train(case: str, rank: int = 0, world: int = 1) -> dict:
    """Train ``case`` for ``STEPS`` steps; with ``world > 1`` inside an initialised process group, as
    rank ``rank`` of a DDP job on its contiguous share of each global batch.

    Returns:
        ``params`` (after each step), ``state`` (after each step), ``skipped`` (the optimizer's
        ``skipped_steps``) and, for the "zero" case, ``checkpoint`` (rank 0's consolidated state dict).
    """
    model = make_model()
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    if case == "zero":
        if world > 1:
            opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=ro.AdamW, lr=1e-2, weight_decay=0.1)
        else:
            opt = ro.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    else:
        opt = make_optimizer(case, model)
    share = GLOBAL_BATCH // world
    out: dict = {"params": [], "state": [], "checkpoint": None}
    for step, (x, y) in enumerate(batches()):
        x, y = x[rank * share : (rank + 1) * share], y[rank * share : (rank + 1) * share]
        opt.zero_grad()
        loss = nn.functional.mse_loss(net(x), y)
        if case == "nan" and step == NAN_STEP and rank == world - 1:
            loss = loss * float("nan")
        loss.backward()
        opt.step()
        out["params"].append(_snapshot(model))
        if case != "zero":
            out["state"].append(_state(opt))
        elif step + 1 == ZERO_SAVE:
            if world > 1:
                opt.consolidate_state_dict(to=0)
                if rank == 0:
                    out["checkpoint"] = copy.deepcopy(opt.state_dict())  # state_dict holds the live tensors
            else:
                out["checkpoint"] = copy.deepcopy(opt.state_dict())  # state_dict holds the live tensors
    out["skipped"] = getattr(opt, "skipped_steps", None)
    return out


def fsdp2_refused(world: int) -> dict:
    """Shard the model with FSDP2's ``fully_shard`` (DTensor parameters) and build ravine's optimizers
    on it; returns the type and message of what each construction raised (``None`` if nothing)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model = make_model()
    fully_shard(model, mesh=init_device_mesh("cpu", (world,)))
    out: dict = {}
    for name, build in {
        "AdamW": lambda: ro.AdamW(model.parameters(), lr=1e-2),
        "chain": lambda: ro.Optimizer(model.parameters(), ro.chain(ro.clip_by_global_norm(1.0), ro.adamw(1e-2))),
    }.items():
        try:
            build()
            out[name] = None
        except Exception as e:  # noqa: BLE001 - reported to the test, which asserts the type
            out[name] = (type(e).__name__, str(e))
    return out


def worker(rank: int, world: int, port: int, cases: list[str], outdir: str) -> None:
    """One spawned rank: join the gloo group on ``port``, train ``cases``, write ``rank<r>.pt``
    (or ``rank<r>.err`` with the traceback), leave the group."""
    torch.set_num_threads(1)
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=120),  # a slow start on a loaded machine is not a hang
        )
        try:
            results = {case: fsdp2_refused(world) if case == "fsdp2" else train(case, rank, world) for case in cases}
        finally:
            dist.destroy_process_group()
        tmp = os.path.join(outdir, f"rank{rank}.pt.tmp")
        torch.save(results, tmp)
        os.replace(tmp, os.path.join(outdir, f"rank{rank}.pt"))
    except BaseException:
        with open(os.path.join(outdir, f"rank{rank}.err"), "w") as f:
            f.write(traceback.format_exc())
        raise
