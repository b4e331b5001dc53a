"""Resume and determinism of ravine.experiments.train, tested by killing a real training process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ravine.experiments import Run, TrainConfig, train
from ravine.experiments.runs import list_checkpoints, read_jsonl

NONDETERMINISTIC = ("time", "wall")

# The child trains one config into one run directory and stops after recording step argv[4] (it
# sleeps there until it is killed), so the parent finds it mid-run, holding the run, every time.
CHILD = """
import json, sys, time
import torch
torch.set_num_threads(int(sys.argv[3]))
from ravine.experiments import TrainConfig, train
cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))
pause = int(sys.argv[4])
train(cfg, sys.argv[2], progress=False, on_step=lambda rec: rec["step"] == pause and time.sleep(3600))
"""


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models: one thread is much faster than two on a shared, busy machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in NONDETERMINISTIC} for r in records]


def _max_step(path: Path) -> int:
    steps = [r["step"] for r in read_jsonl(path) if r.get("kind") == "step"]
    return max(steps, default=0)


def _start(cfg: TrainConfig, run_dir: Path, pause: int) -> subprocess.Popen:
    """A training process for ``cfg`` into ``run_dir`` that stops after recording step ``pause``."""
    # Same thread count as this process: float reductions may round differently with another count.
    threads = str(torch.get_num_threads())
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(cfg.to_dict()), str(run_dir), threads, str(pause)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_for(proc: subprocess.Popen, run_dir: Path, step: int, timeout: float = 120.0) -> None:
    """Wait until the process has recorded ``step`` (it is alive and holds the run)."""
    deadline = time.monotonic() + timeout
    while _max_step(run_dir / "metrics.jsonl") < step:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            pytest.fail(f"the training process ended (rc={proc.returncode}) before it was killed:\n{err}")
        if time.monotonic() > deadline:
            pytest.fail("the training process made no progress in time")
        time.sleep(0.01)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the process and wait until it is gone (the kernel has closed its files)."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _config(**kw) -> TrainConfig:
    base = dict(
        data="digits",
        model="mlp",
        model_kwargs={"hidden": [16]},
        optimizer="adam",
        optimizer_kwargs={"lr": 3e-3},
        schedule="warmup_cosine",
        schedule_kwargs={"peak": 3e-3, "warmup_steps": 20, "total_steps": 240},
        clip={"kind": "norm", "max_norm": 0.5},
        steps=240,
        batch_size=32,
        eval_every=40,
        checkpoint_every=25,
        keep_checkpoints=2,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_killed_process_resumes_to_identical_metrics(tmp_path):
    cfg = _config()
    ref = train(cfg, tmp_path / "ref", progress=False)
    assert ref.status == "completed"

    run_dir = tmp_path / "killed"
    proc = _start(cfg, run_dir, pause=61)
    try:
        _wait_for(proc, run_dir, 61)
        # While the process trains, nobody else may: its lock refuses a second trainer.
        with pytest.raises(RuntimeError, match=rf"run {run_dir} is being trained by process {proc.pid}"):
            train(cfg, run_dir, progress=False)
        _kill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _max_step(run_dir / "metrics.jsonl") == 61
    assert Run(run_dir).status == "running"  # a killed process leaves its status as it was
    assert list_checkpoints(run_dir)  # at least one checkpoint reached disk
    assert _max_step(run_dir / "metrics.jsonl") >= list_checkpoints(run_dir)[-1]
    # A torn last line, as a kill in the middle of a write would leave it.
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"kind": "step", "step": 99999, "lo')

    run = train(cfg, run_dir, progress=False)  # resume in this process
    assert run.status == "completed"
    got, want = _strip(run.records), _strip(ref.records)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g == w
    # The clip statistics were really exercised, and every kind of record is present.
    assert any(r["clipped"] for r in run.metrics) and not all(r["clipped"] for r in run.metrics)
    assert {r["kind"] for r in run.records} == {"step", "eval"}
    assert [r["step"] for r in run.metrics] == list(range(1, cfg.steps + 1))


def test_same_config_twice_gives_identical_metrics(tmp_path):
    cfg = _config(steps=60, schedule=None, schedule_kwargs={}, eval_every=20, checkpoint_every=0)
    a = train(cfg, tmp_path / "a", progress=False)
    b = train(cfg, tmp_path / "b", progress=False)
    assert _strip(a.records) == _strip(b.records)
    c = train(cfg.replace(seed=1), tmp_path / "c", progress=False)
    assert _strip(c.records) != _strip(a.records)  # the seed matters (batch order and initialization)


def test_resume_after_exception_with_dropout_restores_rng(tmp_path):
    # Dropout draws from torch's global generator: resuming must restore it exactly.
    cfg = TrainConfig(
        data="modadd",
        data_kwargs={"p": 7, "train_fraction": 0.6},
        model="transformer",
        model_kwargs={"n_layer": 1, "n_head": 2, "d_model": 16, "dropout": 0.2},
        optimizer="torch.AdamW",
        optimizer_kwargs={"lr": 1e-2},
        steps=24,
        batch_size=8,
        eval_every=8,
        checkpoint_every=10,
        keep_checkpoints=0,
    )
    ref = train(cfg, tmp_path / "ref", progress=False)

    class Crash(Exception):
        pass

    def crash(rec):
        if rec["step"] == 17:
            raise Crash

    with pytest.raises(Crash):
        train(cfg, tmp_path / "run", progress=False, on_step=crash)
    assert Run(tmp_path / "run").status == "failed"
    assert "Crash" in Run(tmp_path / "run").status_info["error"]
    assert list_checkpoints(tmp_path / "run") == [10]
    run = train(cfg, tmp_path / "run", progress=False)
    assert run.status == "completed"
    assert _strip(run.records) == _strip(ref.records)
    assert list_checkpoints(tmp_path / "run") == [10, 20, 24]
