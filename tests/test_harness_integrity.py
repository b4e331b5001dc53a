"""Damaged run files (issue 14): checkpoints verified by SHA-256, never used when damaged; a damaged
JSON file named with what to do.

Oracles: ``hashlib``'s SHA-256 of the files on disk; safetensors' and torch's own loaders (which
accept a checkpoint whose last 200 bytes were zeroed, or fail with their own errors on a truncated
one); and, for a resumed run, the same config trained without interruption (bit-identical records).
"""

from __future__ import annotations

import hashlib
import json
import warnings

import pytest
import torch
from safetensors.torch import load_file

from ravine.experiments import Run, TrainConfig, runs, train
from ravine.experiments.runs import RunFileError

NONDETERMINISTIC = ("time", "wall")


def zero_tail(path, n=200):
    """Zero the last ``n`` bytes of a file, keeping its size (a silent corruption)."""
    data = bytearray(path.read_bytes())
    data[-n:] = bytes(n)
    path.write_bytes(bytes(data))


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def three_checkpoints(tmp_path):
    """Checkpoints at steps 10, 20, 30 of a model large enough that its last 200 bytes are weights."""
    models = {}
    for step in (10, 20, 30):
        torch.manual_seed(step)
        models[step] = torch.nn.Linear(64, 32)
        runs.save_checkpoint(tmp_path, step, models[step], {"step": step, "m": torch.full((3,), float(step))})
    return models


def test_each_checkpoint_records_the_sha256_of_its_files(tmp_path):
    three_checkpoints(tmp_path)
    d = tmp_path / "checkpoints" / "step_00000020"
    sums = json.loads((d / "sha256.json").read_text())
    for name in ("model.safetensors", "state.pt"):
        assert sums[name] == hashlib.sha256((d / name).read_bytes()).hexdigest()
    runs.verify_checkpoint(tmp_path, 20)


def test_zeroed_weights_are_detected_and_the_previous_checkpoint_is_used(tmp_path):
    models = three_checkpoints(tmp_path)
    bad = tmp_path / "checkpoints" / "step_00000030" / "model.safetensors"
    size = bad.stat().st_size
    zero_tail(bad)
    assert bad.stat().st_size == size
    # safetensors itself reads the damaged file without complaint, with other weights: the silent case
    assert not torch.equal(load_file(str(bad))["weight"], models[30].weight.detach())

    damaged = r"skipping checkpoint step 30: .*step_00000030/model\.safetensors is damaged"
    with pytest.warns(RuntimeWarning, match=damaged):
        step, weights, state = runs.load_checkpoint(tmp_path)
    assert step == 20 and torch.equal(weights["weight"], models[20].weight.detach())
    assert torch.equal(state["m"], torch.full((3,), 20.0))

    with pytest.raises(RunFileError, match=r"step_00000030/model\.safetensors is damaged: its SHA-256 differs") as e:
        runs.load_checkpoint(tmp_path, 30)
    assert "to resume from the previous checkpoint (step 20)" in str(e.value)
    assert f"delete the run ({tmp_path})" in str(e.value)


def test_a_truncated_state_is_named(tmp_path):
    three_checkpoints(tmp_path)
    bad = tmp_path / "checkpoints" / "step_00000030" / "state.pt"
    truncate(bad)
    with pytest.raises(RuntimeError, match="PytorchStreamReader"):  # what torch says on its own
        torch.load(bad, weights_only=True)
    with pytest.raises(RunFileError, match=r"step_00000030/state\.pt is damaged"):
        runs.load_checkpoint(tmp_path, 30)
    with pytest.warns(RuntimeWarning, match=r"state\.pt is damaged.*previous checkpoint \(step 20\)"):
        assert runs.load_checkpoint(tmp_path)[0] == 20


@pytest.mark.parametrize("name, damage", [("state.pt", truncate), ("model.safetensors", truncate)])
def test_a_checkpoint_without_checksums_is_still_checked_by_its_loader(tmp_path, name, damage):
    """Checkpoints written before checksums existed: the loaders' own errors, named."""
    three_checkpoints(tmp_path)
    for step in (10, 20, 30):
        (tmp_path / "checkpoints" / f"step_{step:08d}" / "sha256.json").unlink()
    runs.load_checkpoint(tmp_path, 30)  # read unverified
    damage(tmp_path / "checkpoints" / "step_00000030" / name)
    with pytest.raises(RunFileError, match=rf"step_00000030/{name.replace('.', '[.]')} is damaged \("):
        runs.load_checkpoint(tmp_path, 30)


def test_when_every_checkpoint_is_damaged_the_oldest_is_named(tmp_path):
    three_checkpoints(tmp_path)
    for step in (10, 20, 30):
        zero_tail(tmp_path / "checkpoints" / f"step_{step:08d}" / "model.safetensors")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RunFileError, match=r"step_00000010/model\.safetensors is damaged.*delete the run"):
            runs.load_checkpoint(tmp_path)
    assert [str(w.message).split(":")[0] for w in caught] == [
        "skipping checkpoint step 30",
        "skipping checkpoint step 20",
    ]


def _config(**kw) -> TrainConfig:
    base = dict(
        data="digits",
        model="mlp",
        model_kwargs={"hidden": [16]},
        optimizer="adam",
        optimizer_kwargs={"lr": 3e-3},
        steps=50,
        batch_size=32,
        eval_every=25,
        checkpoint_every=20,
        keep_checkpoints=0,
    )
    base.update(kw)
    return TrainConfig(**base)


def _strip(records):
    return [{k: v for k, v in r.items() if k not in NONDETERMINISTIC} for r in records]


class Crash(Exception):
    pass


def _crash_at(step):
    def on_step(rec):
        if rec["step"] == step:
            raise Crash

    return on_step


def test_resuming_past_a_damaged_checkpoint_gives_the_uninterrupted_run(tmp_path):
    """The issue's case: the latest checkpoint's weights zeroed at the end. The resume warns naming
    the file, continues from the previous checkpoint, and ends with exactly the records (test
    accuracy included) of the run that was never interrupted."""
    cfg = _config()
    ref = train(cfg, tmp_path / "ref", progress=False)
    with pytest.raises(Crash):
        train(cfg, tmp_path / "run", progress=False, on_step=_crash_at(45))
    assert runs.list_checkpoints(tmp_path / "run") == [20, 40]
    zero_tail(tmp_path / "run" / "checkpoints" / "step_00000040" / "model.safetensors")
    with pytest.warns(RuntimeWarning, match=r"step_00000040/model\.safetensors is damaged.*\(step 20\)"):
        run = train(cfg, tmp_path / "run", progress=False)
    assert run.status == "completed"
    assert _strip(run.records) == _strip(ref.records)
    runs.verify_checkpoint(tmp_path / "run", 40)  # rewritten when the run passed step 40 again


def test_damaged_status_and_config_files_are_named_with_what_to_do(tmp_path):
    cfg = _config(steps=10, eval_every=0, checkpoint_every=5)
    train(cfg, tmp_path / "run", progress=False)
    status = tmp_path / "run" / "status.json"
    status.write_text('{"status": "compl')
    with pytest.raises(json.JSONDecodeError):  # what json says on its own
        json.loads(status.read_text())
    with pytest.raises(RunFileError, match=r"status\.json is damaged \(not valid JSON.*delete it and train the run"):
        _ = Run(tmp_path / "run").status
    with pytest.raises(RunFileError, match=r"status\.json is damaged"):
        train(cfg, tmp_path / "run", progress=False)
    status.unlink()  # what the message says to do
    assert train(cfg, tmp_path / "run", progress=False).status == "completed"

    (tmp_path / "run" / "config.json").write_bytes(b"\xff\xfe garbage")
    with pytest.raises(RunFileError, match=r"config\.json is damaged .*delete the run"):
        _ = Run(tmp_path / "run").config
    with pytest.raises(RunFileError, match=r"config\.json is damaged"):
        train(cfg, tmp_path / "run", progress=False)
