"""``ravine.parallel``: the same work gives the same results in-process, on a process pool and on a real
local Ray cluster (two workers); a task that raises, or whose worker dies, is reported by name while the
others finish; an experiment with failed runs is incomplete (no verdict) and a rerun trains only those.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from ravine.experiments import TrainConfig
from ravine.experiments.claims import IncompleteExperiment, Progress, Store, get
from ravine.experiments.claims._common import Planned, _last_step, run_dir_for, train_all
from ravine.parallel import InProcess, ProcessPool, RayExecutor, Task, TaskError, executor, values


def _square(x: int) -> int:
    return x * x


def _fail(x: int) -> int:
    raise ValueError(f"bad input {x}")


def _die(x: int) -> int:
    os._exit(3)  # the worker process dies mid-task, as if killed


def _threads() -> int:
    import torch

    return torch.get_num_threads()


@pytest.fixture(scope="module")
def ray_cluster():
    import ray.cloudpickle

    # Ray's workers cannot import this test module (tests/ is not a package on their path): send its
    # functions by value, as Ray does for a script's own functions
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ex = RayExecutor("local", workers=2)
    yield ex
    ex.close()


def _tasks():
    return [Task(f"sq {i}", _square, (i,)) for i in range(5)] + [Task("bad", _fail, (7,))]


@pytest.mark.parametrize("kind", ["in-process", "pool", "ray"])
def test_every_task_runs_and_a_failure_is_named(kind, request):
    ex = {"in-process": InProcess, "pool": lambda: ProcessPool(2)}.get(kind)
    ex = request.getfixturevalue("ray_cluster") if kind == "ray" else ex()
    seen = []
    out = ex.run(_tasks(), on_done=lambda o: seen.append(o.key))
    assert [o.key for o in out] == [f"sq {i}" for i in range(5)] + ["bad"]  # task order, whatever finished first
    assert [o.value for o in out[:5]] == [0, 1, 4, 9, 16]
    assert out[5].error == "ValueError: bad input 7" and "_fail" in out[5].traceback
    assert sorted(seen) == sorted(o.key for o in out)  # on_done saw every task once
    with pytest.raises(TaskError, match=r"1 of 6 tasks failed \(bad: ValueError: bad input 7\)"):
        values(out)


def test_workers_do_not_oversubscribe_the_cores():
    out = ProcessPool(2).run([Task(f"t{i}", _threads) for i in range(2)])
    assert values(out) == [max(1, (os.cpu_count() or 1) // 2)] * 2


def test_a_dead_worker_loses_only_its_task():
    seen = []
    out = ProcessPool(2).run([Task("dies", _die, (0,)), Task("lives", _square, (3,))], on_done=seen.append)
    assert out[1].value == 9  # whether it was in flight when its neighbour's worker died or not
    assert out[0].key == "dies" and out[0].error.startswith("worker died: TerminatedWorkerError")
    assert sorted(o.key for o in seen) == ["dies", "lives"]  # each reported once, with its final outcome


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"workers must be an integer in \[1, inf\], got 0"):
        executor(workers=0)
    with pytest.raises(ValueError, match="cluster must be 'local' or a Ray address"):
        RayExecutor("")
    assert isinstance(executor(), InProcess) and isinstance(executor(1), InProcess)
    assert isinstance(executor(3), ProcessPool)


def _summary(store: Store, result) -> dict:
    """What must not depend on the executor: run ids, final metrics per run, the verdict."""
    finals = {}
    for rid in result.runs:
        lines = (store.run_dir(result.name, rid) / "metrics.jsonl").read_text().splitlines()
        last = [json.loads(x) for x in lines if '"kind": "step"' in x or '"kind":"step"' in x][-1]
        finals[rid] = last["loss"]
    return {"runs": result.runs, "finals": finals, "status": result.verdict.status}


def test_an_experiment_on_ray_equals_the_in_process_one(tmp_path, ray_cluster):
    """Same run ids, same verdict, and per-run final losses equal to float32 rounding (1e-5 relative:
    a worker trains with its own thread count, which may change the order of float sums)."""
    exp = get("adam-ablation")
    here = Store(tmp_path / "here", "tiny")
    there = Store(tmp_path / "ray", "tiny", ray_cluster)
    a, b = _summary(here, exp.run(here)), _summary(there, exp.run(there))
    assert a["runs"] == b["runs"] and a["status"] == b["status"]
    for rid, loss in a["finals"].items():
        assert b["finals"][rid] == pytest.approx(loss, rel=1e-5)


def _plan() -> list[Planned]:
    base = dict(data="digits", model="mlp", optimizer="sgd", optimizer_kwargs={"lr": 0.1}, steps=6, eval_every=6)
    return [Planned(f"ok{i}", TrainConfig(**base, seed=i)) for i in range(2)] + [
        Planned("bad", TrainConfig(**base, seed=9))
    ]


def _factory_for(bad: bool):
    import torch

    def make(model):
        if bad:
            raise RuntimeError("this optimizer cannot be built")
        return torch.optim.SGD(model.parameters(), lr=0.1)

    return make


@pytest.mark.parametrize("kind", ["in-process", "pool"])
def test_a_failed_run_makes_the_experiment_incomplete_and_a_rerun_trains_only_it(tmp_path, kind):
    store = Store(tmp_path, "tiny", InProcess() if kind == "in-process" else ProcessPool(2))
    plan = _plan()
    plan[2] = Planned("bad", plan[2].config, _factory_for(bad=True))
    with pytest.raises(IncompleteExperiment, match=r"1 of 3 training runs failed \(bad: RuntimeError: this optim"):
        train_all(store, "x", plan, Progress(enabled=False))
    good = [run_dir_for(store, "x", p) for p in plan[:2]]
    stamps = [(d / "status.json").stat().st_mtime_ns for d in good]
    assert all(json.loads((d / "status.json").read_text())["status"] == "completed" for d in good)
    plan[2] = Planned("bad", plan[2].config, _factory_for(bad=False))  # fixed: the rerun trains only this one
    runs = train_all(store, "x", plan, Progress(enabled=False))
    assert [(d / "status.json").stat().st_mtime_ns for d in good] == stamps
    assert runs["bad"].status == "completed" and len(runs) == 3


def test_progress_of_a_run_elsewhere_reads_its_last_complete_record(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"kind": "step", "step": 1}\n{"kind": "step", "step": 2}\n{"kind": "st')
    assert _last_step(tmp_path) == 2  # a torn last line (being written) is skipped
    assert _last_step(tmp_path / "missing") == 0


def test_a_plane_on_a_pool_and_on_ray_equals_the_in_process_one(tmp_path, ray_cluster, digits):
    """Landscape values to float32 rounding (1e-5 relative): a chunk's points are batched as its worker
    plans them. The driver writes each finished chunk, so a rerun over a complete file computes nothing."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from ravine.landscape import plane

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    x, y = digits
    data = (x.float(), y)
    here = plane(model, F.cross_entropy, data, steps=7, seed=3)
    pool = plane(model, F.cross_entropy, data, steps=7, seed=3, executor=ProcessPool(2), out=tmp_path / "p.npz")
    ray = plane(model, F.cross_entropy, data, steps=7, seed=3, executor=ray_cluster)
    np.testing.assert_allclose(pool.loss, here.loss, rtol=1e-5)
    np.testing.assert_allclose(ray.loss, here.loss, rtol=1e-5)
    again = plane(model, F.cross_entropy, data, steps=7, seed=3, executor=ProcessPool(2), out=tmp_path / "p.npz")
    assert again.info["points_computed"] == 0 and np.array_equal(again.loss, pool.loss)


def test_a_sweep_on_a_pool_and_on_ray_equals_the_in_process_one(ray_cluster):
    """Each cell is a row of the same batched program wherever its band runs: the grids are equal
    (noise included: with an int seed every row shares one noise sequence)."""
    import numpy as np

    from ravine.simulate import sweep

    kw = dict(x=("lr", np.geomspace(1e-3, 0.5, 6)), y=("beta", np.linspace(0, 0.95, 5)), steps=60, noise=0.1)
    here = sweep("valley", "momentum", **kw)
    for ex in (ProcessPool(2), ray_cluster):
        there = sweep("valley", "momentum", executor=ex, **kw)
        np.testing.assert_array_equal(there.y_values, here.y_values)
        np.testing.assert_allclose(there.final_loss, here.final_loss, rtol=1e-12)
        np.testing.assert_array_equal(there.steps_to_tol, here.steps_to_tol)
