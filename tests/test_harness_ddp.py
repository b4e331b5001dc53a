"""``TrainConfig(world_size=2)``: the harness trains with DistributedDataParallel (gloo, 2 CPU processes) and
records what one process training on the same global batches records, to float32 rounding (the harness
computes the loss in float32 whatever the model's dtype, so the ranks' weighted sum of their shares' means
differs from one mean over the whole batch in the last float32 digits)."""

from __future__ import annotations

import json

import pytest
import torch

from ravine.experiments import TrainConfig, load_model, train
from ravine.experiments.config import config_hash


def _config(**kw):
    base = dict(
        data="digits",
        model="mlp",
        model_kwargs={"hidden": [16]},
        optimizer="adamw",
        optimizer_kwargs={"lr": 1e-2, "weight_decay": 0.01},
        clip={"kind": "norm", "max_norm": 0.5},
        steps=6,
        batch_size=63,  # shares of 31 and 32: the weighting by share must make them exact
        eval_every=3,
        dtype="float64",
    )
    return TrainConfig(**{**base, **kw})


def _records(run_dir, kind):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def test_two_ranks_equal_one_process(tmp_path):
    one = train(_config(), tmp_path / "one", progress=False)
    two = train(_config(world_size=2), tmp_path / "two", progress=False)
    assert one.status == two.status == "completed"
    s1, s2 = _records(one.path, "step"), _records(two.path, "step")
    assert [r["step"] for r in s2] == list(range(1, 7))  # rank 0 alone wrote: one record per step
    for a, b in zip(s1, s2):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-6)
        assert b["clipped"] == a["clipped"]
    e1, e2 = _records(one.path, "eval"), _records(two.path, "eval")
    assert [r["step"] for r in e2] == [0, 3, 6]
    assert e2[-1]["test_loss"] == pytest.approx(e1[-1]["test_loss"], rel=1e-6)
    w1, w2 = load_model(one.path).state_dict(), load_model(two.path).state_dict()
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-6, atol=1e-9)


def test_world_size_is_checked_and_part_of_the_run_id_only_when_not_one():
    with pytest.raises(ValueError, match=r"world_size must be an integer in \[1, 64\], got 0"):
        _config(world_size=0)
    assert config_hash(_config(world_size=1)) == config_hash(_config())
    assert config_hash(_config(world_size=2)) != config_hash(_config())


def test_a_global_batch_too_small_to_share_is_refused():
    with pytest.raises(ValueError, match=r"batch_size must be at least world_size \(2: every rank"):
        _config(world_size=2, batch_size=1)


def _failing_factory(model):
    raise RuntimeError("no optimizer for this model")


def test_a_failed_rank_fails_the_run_and_stops_the_others(tmp_path):
    """Every rank builds the optimizer, so every rank fails; rank 0 must not wait for the others forever
    (pytest's timeout would catch a hang) and the run is marked failed, resumable."""
    with pytest.raises(Exception, match="no optimizer for this model"):
        train(_config(world_size=2), tmp_path / "r", progress=False, optimizer_factory=_failing_factory)
    assert json.loads((tmp_path / "r" / "status.json").read_text())["status"] == "failed"
