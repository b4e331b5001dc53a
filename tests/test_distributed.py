"""ravine's optimizers under data-parallel training: DistributedDataParallel (gloo, 2 CPU processes
spawned by torch.multiprocessing) against one process on the same global batch, ZeRO-1 through torch's
ZeroRedundancyOptimizer with its consolidated checkpoint, and FSDP2's DTensor parameters refused.

The oracle is torch's own machinery: DDP averages the ranks' gradients, which for equal shares of a
mean loss is the gradient of the global batch, so every rank must step exactly as one process does.
The runs live in tests/_ddp_worker.py; one spawn runs all fast cases (the compiled path, an inductor
compile per rank, only with ``RAVINE_SLOW_TESTS=1``, as in tests/test_fused.py).
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import _ddp_worker as w
import ravine.optim as ro

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch built without torch.distributed")

WORLD = 2
JOIN_TIMEOUT = 300.0  # seconds: a hung collective fails the test instead of hanging CI
# measured: every DDP and ZeRO case equals one process to max |diff| <= 5.6e-17 in parameters and 2.1e-17 in
# state (float64, a few ulps: gloo sums the two halves in another order than one process's batch mean)
TOL = 1e-12
FAST = ["chain", "adamw", "flat", "schedule", "groups", "nan", "zero", "fsdp2"]
slow = pytest.mark.skipif(
    not os.environ.get("RAVINE_SLOW_TESTS"), reason="compiles with inductor (slow); set RAVINE_SLOW_TESTS=1"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(cases: list[str], outdir) -> list[dict]:
    """Run ``cases`` on ``WORLD`` spawned ranks; wait for them to exit (killed after ``JOIN_TIMEOUT``)
    and return each rank's results."""
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=w.worker, args=(r, WORLD, port, cases, str(outdir))) for r in range(WORLD)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(JOIN_TIMEOUT)
    finally:
        hung = [p for p in procs if p.is_alive()]
        for p in hung:
            p.kill()
            p.join()
    errors = [(outdir / f"rank{r}.err") for r in range(WORLD)]
    messages = "\n".join(e.read_text() for e in errors if e.exists())
    assert not hung, f"{len(hung)} rank(s) still running after {JOIN_TIMEOUT}s; killed\n{messages}"
    assert all(p.exitcode == 0 for p in procs), f"exit codes {[p.exitcode for p in procs]}\n{messages}"
    return [torch.load(outdir / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    return _spawn(FAST, tmp_path_factory.mktemp("ddp"))


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert len(a) == len(b)
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def _assert_state_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for i in a:
        assert a[i].keys() == b[i].keys()
        for k in a[i]:
            torch.testing.assert_close(a[i][k], b[i][k], rtol=0, atol=TOL)


def _assert_matches_one_process(case: str, runs: list[dict]) -> None:
    one = w.train(case)
    for rank, run in enumerate(runs):
        for step in range(w.STEPS):
            d = _max_diff(run["params"][step], one["params"][step])
            assert d <= TOL, f"{case}: rank {rank} differs from one process by {d} after step {step}"
            if one["state"]:
                _assert_state_equal(run["state"][step], one["state"][step])
        assert run["skipped"] == one["skipped"]


@pytest.mark.parametrize("case", ["chain", "adamw", "flat", "schedule", "groups"])
def test_ddp_equals_one_process(ranks, case):
    """The clip+AdamW chain (unfused and flat), AdamW, a ravine schedule and two param groups with
    global clipping: every rank's parameters and state after every step are one process's."""
    _assert_matches_one_process(case, [r[case] for r in ranks])
    # the runs move: equality is not two copies of the initial weights
    initial = [p.detach() for p in w.make_model().parameters()]
    assert _max_diff(ranks[0][case]["params"][-1], initial) > 1e-4


@slow
def test_ddp_compiled_equals_one_process(tmp_path):
    """The compiled chain (``fused=True``) under DDP equals one process's compiled run."""
    runs = _spawn(["compiled"], tmp_path)
    _assert_matches_one_process("compiled", [r["compiled"] for r in runs])


def test_nan_on_one_rank_skips_the_step_on_both(ranks):
    """A nan loss on rank 1 only: DDP's all-reduce spreads it, so both ranks skip that step (parameters
    and state unchanged, ``skipped_steps == 1``) and then continue as one process that skips it."""
    s = w.NAN_STEP
    for run in (r["nan"] for r in ranks):
        assert run["skipped"] == 1
        assert _max_diff(run["params"][s], run["params"][s - 1]) == 0.0
        _assert_state_equal(run["state"][s], run["state"][s - 1])
        assert _max_diff(run["params"][s + 1], run["params"][s]) > 0.0
    with pytest.warns(RuntimeWarning):
        _assert_matches_one_process("nan", [r["nan"] for r in ranks])


def test_zero1_equals_one_process_and_checkpoint_resumes(ranks):
    """ravine's AdamW inside ZeroRedundancyOptimizer equals single-process AdamW; rank 0's consolidated
    ``state_dict`` loads into a fresh ravine AdamW that continues as the uninterrupted run."""
    runs = [r["zero"] for r in ranks]
    one = w.train("zero")
    for run in runs:
        for step in range(w.STEPS):
            assert _max_diff(run["params"][step], one["params"][step]) <= TOL
    checkpoint = runs[0]["checkpoint"]
    assert checkpoint is not None and runs[1]["checkpoint"] is None
    # every parameter's state is in the consolidated checkpoint, not only rank 0's shard
    assert len(checkpoint["state"]) == len(list(w.make_model().parameters()))
    model = w.make_model()
    with torch.no_grad():
        for p, saved in zip(model.parameters(), runs[0]["params"][w.ZERO_SAVE - 1]):
            p.copy_(saved)
    opt = ro.AdamW(model.parameters(), lr=1.0, weight_decay=0.0)  # the checkpoint's groups replace these
    opt.load_state_dict(checkpoint)
    for step, (x, y) in enumerate(w.batches()):
        if step < w.ZERO_SAVE:
            continue
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        assert _max_diff([p.detach() for p in model.parameters()], runs[0]["params"][step]) <= TOL


def test_fsdp2_dtensor_parameters_are_refused(ranks):
    """FSDP2 (``fully_shard`` on CPU/gloo) gives DTensor parameters; the optimizer refuses them with a
    TypeError naming the DTensor and what to use instead (torch 2.13 has no sharding rule for the
    foreach copy, and clipping would see one shard's norm: never a silent wrong result)."""
    for rank in ranks:
        for name, raised in rank["fsdp2"].items():
            assert raised is not None, f"{name} accepted DTensor parameters"
            kind, message = raised
            assert kind == "TypeError"
            assert "params[0] is a DTensor" in message and "fully_shard" in message
            assert "DistributedDataParallel" in message
