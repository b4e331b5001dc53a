"""ravine.experiments.runs: atomic files, torn metrics lines, safe checkpoints, run ids, the Run reader."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ravine.experiments import runs
from ravine.experiments.train import TrainConfig


def test_atomic_json_leaves_no_temporary_files_and_rejects_nan(tmp_path):
    p = tmp_path / "sub" / "a.json"
    runs.atomic_write_json(p, {"b": 1, "a": [1.5, "x"]})
    assert json.loads(p.read_text()) == {"a": [1.5, "x"], "b": 1}
    runs.atomic_write_json(p, {"c": 2})  # replaces
    assert runs.read_json(p) == {"c": 2}
    with pytest.raises(ValueError):
        runs.atomic_write_json(p, {"x": float("nan")})
    assert runs.read_json(p) == {"c": 2}  # the old version survives a failed write
    assert sorted(os.listdir(p.parent)) == ["a.json"]
    assert os.stat(p).st_mode & 0o044  # readable by others, like a normally created file


def test_metrics_round_trip_including_non_finite_values(tmp_path):
    p = tmp_path / "metrics.jsonl"
    with runs.MetricsWriter(p) as w:
        w.write({"kind": "step", "step": 1, "loss": 0.5, "clipped": True})
        w.write({"kind": "step", "step": 2, "loss": float("nan"), "g": float("inf"), "h": float("-inf")})
        w.write({"kind": "eval", "step": 2, "n": np.float32(0.25), "t": torch.tensor(3.0)})
    recs = runs.read_jsonl(p)
    assert recs[0] == {"kind": "step", "step": 1, "loss": 0.5, "clipped": True}
    assert math.isnan(recs[1]["loss"]) and recs[1]["g"] == math.inf and recs[1]["h"] == -math.inf
    assert recs[2]["n"] == 0.25 and recs[2]["t"] == 3.0
    for line in p.read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


@pytest.mark.parametrize("tail", ['{"step": 3, "lo', '{"step": 3}', '{"step": 3, "loss": 1.0}\n\n', "\x00\x00"])
def test_torn_last_line_is_ignored(tmp_path, tail):
    p = tmp_path / "m.jsonl"
    p.write_text('{"step": 1}\n{"step": 2}\n' + tail)
    got = runs.read_jsonl(p)
    complete = tail.endswith("\n")
    assert [r["step"] for r in got] == ([1, 2, 3] if complete else [1, 2])


def test_corrupt_line_in_the_middle_raises(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"step": 1}\n{"ste\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"line 2 is not valid JSON \(only a torn last line is tolerated\)"):
        runs.read_jsonl(p)
    assert runs.read_jsonl(tmp_path / "missing.jsonl") == []


def test_truncate_metrics(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text("".join(json.dumps({"kind": "step", "step": s}) + "\n" for s in range(6)) + '{"step": 9')
    kept = runs.truncate_metrics(p, 3)
    assert [r["step"] for r in kept] == [0, 1, 2, 3]
    assert [r["step"] for r in runs.read_jsonl(p)] == [0, 1, 2, 3]
    assert p.read_text().endswith("\n")


def test_checkpoint_round_trip_is_weights_only_and_safetensors(tmp_path):
    model = torch.nn.Linear(3, 2)
    state = {
        "step": 5,
        "optimizer": {"state": {0: {"m": torch.ones(2)}}, "param_groups": [{"lr": 0.1}]},
        "rng": torch.get_rng_state(),
        "name": "x",
        "none": None,
        "flags": [True, 1.5],
    }
    d = runs.save_checkpoint(tmp_path, 5, model, state)
    assert load_file(str(d / "model.safetensors"))["weight"].equal(model.weight.detach())
    torch.load(d / "state.pt", weights_only=True)  # the oracle: torch's safe unpickler accepts it
    step, weights, st = runs.load_checkpoint(tmp_path)
    assert step == 5 and torch.equal(weights["bias"], model.bias.detach())
    assert st["optimizer"]["state"][0]["m"].equal(torch.ones(2)) and st["name"] == "x" and st["flags"] == [True, 1.5]


class Custom:
    """An arbitrary class: picklable, but not allowed by torch.load(weights_only=True)."""


def test_unsafe_state_is_refused_at_save_time_and_leaves_nothing(tmp_path):
    with pytest.raises(Exception, match="(?i)weights_only"):
        runs.save_checkpoint(tmp_path, 1, torch.nn.Linear(2, 2), {"obj": Custom()})
    assert runs.list_checkpoints(tmp_path) == []
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == []


def test_incomplete_checkpoints_are_ignored_and_keep_prunes(tmp_path):
    m = torch.nn.Linear(2, 2)
    for s in (10, 20, 30):
        runs.save_checkpoint(tmp_path, s, m, {"step": s}, keep=2)
    assert runs.list_checkpoints(tmp_path) == [20, 30]
    (tmp_path / "checkpoints" / ".step_00000040.abc").mkdir()  # a half-written one (hidden temp folder)
    (tmp_path / "checkpoints" / "step_00000050").mkdir()  # no files: incomplete
    assert runs.list_checkpoints(tmp_path) == [20, 30]
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at step 40; available: \[20, 30\]"):
        runs.load_checkpoint(tmp_path, 40)
    with pytest.raises(FileNotFoundError, match="has no checkpoint"):
        runs.load_checkpoint(tmp_path / "empty")


def test_config_hash_is_canonical():
    a = TrainConfig(optimizer_kwargs={"lr": 0.1, "weight_decay": 0.0})
    b = TrainConfig(optimizer_kwargs={"weight_decay": 0.0, "lr": 0.1})
    assert runs.config_hash(a) == runs.config_hash(b) == a.run_id()
    assert runs.config_hash(a) != runs.config_hash(a.replace(optimizer_kwargs={"lr": 0.2, "weight_decay": 0.0}))
    assert len(runs.config_hash(a)) == 12 and int(runs.config_hash(a), 16) >= 0
    store = runs.RunStore("/x")
    assert store.path_for(a).name == f"digits-mlp-adam-{a.run_id()}"


def test_runs_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("RAVINE_RUNS", raising=False)
    assert runs.runs_root() == runs.Path("runs")
    monkeypatch.setenv("RAVINE_RUNS", str(tmp_path))
    assert runs.runs_root() == tmp_path
    assert runs.runs_root("elsewhere") == runs.Path("elsewhere")


def test_run_reader_columns_and_status(tmp_path):
    runs.atomic_write_json(tmp_path / "config.json", TrainConfig(steps=3).to_dict())
    r = runs.Run(tmp_path)
    assert r.status == "missing" and r.records == []
    with runs.MetricsWriter(tmp_path / "metrics.jsonl") as w:
        for s in (1, 2, 3):
            w.write({"kind": "step", "step": s, "loss": 1.0 / s, "clipped": s == 2})
        w.write({"kind": "eval", "step": 3, "test_acc": 0.5})
    runs.write_status(tmp_path, "completed", step=3)
    assert r.status == "completed" and r.done and r.config.steps == 3
    cols = r.columns()
    assert cols["step"].dtype == np.int64 and cols["clipped"].dtype == bool
    np.testing.assert_allclose(cols["loss"], [1.0, 0.5, 1 / 3])
    assert r.evals == [{"kind": "eval", "step": 3, "test_acc": 0.5}]
    with pytest.raises(ValueError, match=r"status must be one of .*, got 'paused'"):
        runs.write_status(tmp_path, "paused")
    with pytest.raises(FileNotFoundError, match="is not a run directory"):
        runs.Run(tmp_path / "nope")


def test_a_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    m = torch.nn.Linear(2, 2)
    runs.save_checkpoint(tmp_path, 10, m, {"step": 10})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        runs.save_checkpoint(tmp_path, 20, m, {"step": 20}, keep=1)
    assert runs.list_checkpoints(tmp_path) == [10]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000010"]
    assert runs.load_checkpoint(tmp_path)[2] == {"step": 10}
