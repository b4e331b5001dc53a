"""Bad input to ``ravine``: exit status 2, one line naming the argument and the value, no traceback.

Every subcommand's output arguments get each kind of bad path (under a file, an existing folder, an
existing file where a folder goes, a special file, a folder that takes no new file, a kernel
pseudo-filesystem); the operating system is the oracle that the path is bad (each fixture checks it
really refuses the write). Then the issue-14 inputs: booleans, ``--threads``, ``--only``, a huge
``--seed``, values that start with '-', the sweep's work bound, and damaged checkpoints.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from ravine.cli import build_parser, main

# --------------------------------------------------------------------------------------------- the paths
FILE_KINDS = ["under_a_file", "a_folder", "a_fifo", "unwritable_folder", "pseudo_filesystem"]
FOLDER_KINDS = ["under_a_file", "a_file", "unwritable_folder", "pseudo_filesystem"]


def _refuses_new_files(folder: Path) -> bool:
    """Whether the operating system refuses to create a file in ``folder`` (the oracle)."""
    try:
        fd, name = tempfile.mkstemp(dir=folder)
    except OSError:
        return True
    os.close(fd)
    os.unlink(name)
    return False


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """A file, a folder that takes no new file (chmod 555, and chattr +i for root), and /proc."""
    root = tmp_path_factory.mktemp("bad_paths")
    (root / "a_file").write_text("not a folder\n")
    locked = root / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    immutable = False
    if not _refuses_new_files(locked) and shutil.which("chattr"):  # root ignores the mode bits
        immutable = subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode == 0
    proc = Path("/proc")
    yield {
        "root": root,
        "locked": locked if _refuses_new_files(locked) else None,
        "proc": proc if proc.is_dir() and _refuses_new_files(proc) else None,
    }
    if immutable:
        subprocess.run(["chattr", "-i", str(locked)], check=True)
    locked.chmod(0o755)


def bad_path(places, kind: str, suffix: str, tmp_path: Path) -> str:
    """A path of ``kind`` ending in ``suffix``; the OS confirms it cannot be written as asked."""
    root = places["root"]
    if kind == "under_a_file":
        return str(root / "a_file" / f"out{suffix}")
    if kind == "a_file":
        return str(root / "a_file")
    if kind == "a_folder":
        d = tmp_path / f"folder{suffix}"
        d.mkdir()
        with pytest.raises(IsADirectoryError):
            open(d, "w")
        return str(d)
    if kind == "a_fifo":
        f = tmp_path / f"fifo{suffix}"
        os.mkfifo(f)
        return str(f)
    if kind == "unwritable_folder":
        if places["locked"] is None:
            pytest.skip("no folder here refuses new files (root without chattr)")
        return str(places["locked"] / f"out{suffix}")
    if kind == "pseudo_filesystem":
        if places["proc"] is None:
            pytest.skip("no /proc here")
        return f"/proc/ravine-test/out{suffix}"
    raise AssertionError(kind)


@pytest.fixture(scope="module")
def lr_find_config(tmp_path_factory) -> str:
    from ravine.experiments import TrainConfig

    cfg = TrainConfig(data="parity", data_kwargs={"n_bits": 6, "k": 2, "n_train": 64, "n_test": 32}, model="mlp",
                      model_kwargs={"hidden": [8]}, optimizer="torch.SGD", optimizer_kwargs={"lr": 0.1}, steps=5)
    path = tmp_path_factory.mktemp("lr_find") / "config.json"
    path.write_text(json.dumps(cfg.to_dict()))
    return str(path)


# Each subcommand: a quick command line that would succeed, and its output arguments (flag, suffix, folder?).
def commands(tmp: Path, lr_find_config: str) -> dict[str, tuple[list[str], list[tuple[str, str, bool]]]]:
    return {
        "schedule": (["schedule", "constant", "--value", "0.1"], [("--out", ".png", False)]),
        "trajectories": (
            ["trajectories", "--steps", "5", "--optimizers", "sgd"],
            [("--out", ".png", False), ("--json", ".json", False), ("--gif", ".gif", False)],
        ),
        "sweep": (
            ["sweep", "--steps", "5", "--x", "lr=0.1,0.2", "--y", "beta=0.1,0.2"],
            [("--out", ".png", False), ("--json", ".json", False)],
        ),
        "landscape": (["landscape", str(tmp), "--steps", "2"], [("--out", ".png", False), ("--save", ".npz", False)]),
        "experiment": (["experiment", "warmup", "--quick", "--no-progress"], [("--out", "", True)]),
        "report": (["report", "--quick", "--only", "warmup", "--no-progress", "--no-gallery"], [("--out", "", True)]),
        "lr-find": (
            ["lr-find", lr_find_config, "--steps", "5"],
            [("--plot", ".png", False), ("--json", ".json", False)],
        ),
        "diagnose": (["diagnose", str(tmp)], []),
        "serve": (["serve"], []),
        "version": (["version"], []),
    }


CASES = [
    (cmd, flag, kind)
    for cmd, flags in {
        "schedule": ["--out"],
        "trajectories": ["--out", "--json", "--gif"],
        "sweep": ["--out", "--json"],
        "landscape": ["--out", "--save"],
        "experiment": ["--out"],
        "report": ["--out"],
        "lr-find": ["--plot", "--json"],
    }.items()
    for flag in flags
    for kind in (FOLDER_KINDS if cmd in ("experiment", "report") else FILE_KINDS)
]

# Options that name something the command writes (a file or a folder).
OUTPUT_DESTS = {"out", "json", "gif", "save", "plot", "output", "csv_out"}


def test_every_subcommand_is_covered_with_all_its_output_arguments(tmp_path):
    """The table below lists every subcommand of the parser and every option of it that writes."""
    table = commands(tmp_path, "c.json")
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(table), "a subcommand is missing from the bad-path table"
    for name, p in sub.choices.items():
        writes = {a.option_strings[-1] for a in p._actions if a.dest in OUTPUT_DESTS and a.nargs is None}
        assert writes == {flag for flag, _, _ in table[name][1]}, name
        assert {(name, flag) for flag in writes} == {(c, f) for c, f, _ in CASES if c == name}


@pytest.mark.parametrize("cmd,flag,kind", CASES)
def test_bad_output_path_exits_2_with_one_line_before_any_work(cmd, flag, kind, places, tmp_path, lr_find_config,
                                                               capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv, outputs = commands(tmp_path, lr_find_config)[cmd]
    suffix = dict((f, s) for f, s, _ in outputs)[flag]
    path = bad_path(places, kind, suffix, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main([*argv, flag, path]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"ravine {cmd}: error: {flag} {path!r}"), err
    assert "Traceback" not in err
    assert out == ""  # nothing ran: no summary, no table
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # and nothing was written


@pytest.mark.parametrize("argv", [
    ["schedule", "constant", "--value", "0.1", "--out", "/proc/ravine-test/x/y.png"],
    ["trajectories", "--steps", "3", "--json", "/proc/version"],
])
def test_a_real_process_prints_one_line_and_no_traceback(argv):
    if not Path("/proc/version").exists():
        pytest.skip("no /proc here")
    proc = subprocess.run([sys.executable, "-m", "ravine.cli", *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and argv[-1] in proc.stderr, proc.stderr


def test_a_closed_pipe_ends_quietly():
    """``ravine sweep | head``: the reader is gone before the first line; no traceback, status 1."""
    read, write = os.pipe()
    os.close(read)  # nobody will ever read: the child's first write fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "ravine.cli", "sweep", "--steps", "5"], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert proc.returncode == 1
    assert proc.stderr == ""


def test_an_os_error_during_the_work_is_one_line_too(monkeypatch, tmp_path, capsys):
    """Past the early check (say the disk filled up), an OSError still ends in one line and status 2."""
    import ravine._io

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "x.json"))

    monkeypatch.setattr(ravine._io, "write_json", full)
    assert main(["trajectories", "--steps", "3", "--optimizers", "sgd", "--json", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert err == f"ravine trajectories: error: No space left on device: {str(tmp_path / 'x.json')!r}\n"


def test_a_bug_keeps_its_traceback(monkeypatch):
    """Only what bad input raises is turned into a message; a bug (here a KeyError) propagates."""

    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr("ravine._cli.version.run", broken)
    with pytest.raises(KeyError):
        main(["version"])


# ------------------------------------------------------------------------------------------ other inputs
@pytest.mark.parametrize(
    "argv, message",
    [
        (["sweep", "--steps", "5", "--fixed", "nesterov=maybe"], "--fixed: nesterov must be a number or true/false, "
         "got 'maybe'"),
        (["sweep", "--steps", "5", "--fixed", "form=sideways"], "--fixed: form must be one of 'ema', 'heavy_ball'"),
        (["trajectories", "--steps", "5", "--optimizers", "momentum:nesterov=yes"], "nesterov must be a number or "
         "true/false, got 'yes'"),
        (["report", "--threads", "0"], "--threads must be an integer in [1, 1024], got 0"),
        (["report", "--threads", "-5"], "--threads must be an integer in [1, 1024], got -5"),
        (["experiment", "warmup", "--threads", "0"], "--threads must be an integer in [1, 1024], got 0"),
        (["report", "--only", ","], "--only names no experiment, got ','"),
        (["report", "--only", " , ,"], "--only names no experiment"),
        (["report", "--only", "warmup,nope"], "--only must be one of"),
        (["trajectories", "--seed", "99999999999999999999999"], "--seed must be an integer in "
         "[-9223372036854775808, 9223372036854775807], got 99999999999999999999999"),
        (["sweep", "--seed", "-99999999999999999999999"], "--seed must be an integer in"),
        (["landscape", ".", "--seed", "99999999999999999999999"], "--seed must be an integer in"),
        (["landscape", ".", "--device", "nonsense"], "--device 'nonsense' is not usable here"),
        (["trajectories", "--clip", "norm:abc"], "--clip must be norm:MAX or value:MAX with MAX a number, got"),
        (["sweep", "--noise", "inf"], "--noise must be in [0, inf), got inf"),
        (["schedule", "constant", "--value", "1", "--rows", "99999999999999999999"], "--rows must be an integer in "
         "[2, 10000]"),
    ],
)
def test_bad_values_exit_2_naming_the_argument(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert message in err and "Traceback" not in err
    assert out == ""
    assert list(tmp_path.iterdir()) == []  # no report folder, no run


def test_threads_is_passed_on_to_the_report(monkeypatch, tmp_path):
    seen = {}

    def fake(**kwargs):
        seen.update(kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr("ravine.report.run_report", fake)
    assert main(["report", "--out", str(tmp_path), "--threads", "3", "--only", "warmup"]) == 130
    assert seen["threads"] == 3 and seen["experiments"] == ["warmup"]


@pytest.mark.parametrize(
    "dashed, joined",
    [
        (["--expr", "-x**2 + x**4 + y**2", "--domain", "-3,3,-3,3", "--start", "-1,1"],
         ["--expr=-x**2 + x**4 + y**2", "--domain=-3,3,-3,3", "--start=-1,1"]),
        (["--lr", "-0.1,0.2", "--optimizers", "sgd,adam"], ["--lr=-0.1,0.2", "--optimizers", "sgd,adam"]),
    ],
)
def test_values_that_start_with_a_dash_are_values(dashed, joined, tmp_path, capsys):
    """``--domain -3,3,-3,3`` means what argparse's own ``--domain=-3,3,-3,3`` means."""
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    code_a = main(["trajectories", "--steps", "5", *dashed, "--json", str(a)])
    code_b = main(["trajectories", "--steps", "5", *joined, "--json", str(b)])
    err = capsys.readouterr().err
    assert code_a == code_b
    assert "expected one argument" not in err
    if code_a == 0:
        assert json.loads(a.read_text()) == json.loads(b.read_text())
        if "--start" in dashed:
            assert json.loads(a.read_text())["positions"][0][0] == [-1.0, 1.0]
    else:  # a negative learning rate is refused by ravine.optim, naming lr, both ways
        assert err.count("lr must be in [0, ") == 2


def test_a_dash_after_a_flag_that_takes_no_value_is_still_an_option(capsys):
    assert main(["sweep", "--steps", "5", "--force", "--x", "lr=0.1,0.2", "--y", "beta=0.1,0.2"]) == 0
    assert main(["trajectories", "--expr", "--domain", "x"]) == 2  # --expr is missing its value
    assert "argument --expr: expected one argument" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ sweep
def test_sweep_work_is_bounded_unless_forced(monkeypatch, tmp_path, capsys):
    import ravine._cli.sweep as cli_sweep

    argv = ["sweep", "--x", "lr=1e-3:1:1024", "--y", "beta=0:0.99:1024", "--steps", "100000"]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and "1024 x 1024 cells x 100000 steps" in err and "--force" in err
    monkeypatch.setattr(cli_sweep, "MAX_WORK", 100)
    small = ["sweep", "--x", "lr=0.1,0.2", "--y", "beta=0.1,0.2", "--steps", "50", "--json", str(tmp_path / "s.json")]
    assert main(small) == 2
    assert main([*small, "--force"]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["steps"] == 50


def test_a_big_sweep_shows_a_bar_that_reaches_its_total(monkeypatch, tmp_path):
    import tqdm.auto

    import ravine._cli.sweep as cli_sweep

    bars = []

    class Bar:
        def __init__(self, total, **kwargs):
            self.total, self.n, self.closed = total, 0, False
            bars.append(self)

        def update(self, k):
            self.n += k

        def close(self):
            self.closed = True

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    monkeypatch.setattr(cli_sweep, "PROGRESS_WORK", 4 * 30 - 1)
    argv = ["sweep", "--x", "lr=0.1,0.2", "--y", "beta=0.1,0.2", "--steps"]
    assert main([*argv, "30"]) == 0
    assert main([*argv, "29"]) == 0  # below the threshold: no bar
    assert [(b.total, b.n, b.closed) for b in bars] == [(30, 30, True)]


def test_sweep_progress_reports_every_step_and_changes_no_number():
    import ravine.simulate as sim

    x, y = ("lr", np.geomspace(1e-3, 0.5, 300)), ("beta", np.linspace(0, 0.99, 200))  # 60000 rows: blocks of 17
    seen: list[int] = []
    with_bar = sim.sweep("rosenbrock", "momentum", x=x, y=y, steps=60, progress=seen.append)
    plain = sim.sweep("rosenbrock", "momentum", x=x, y=y, steps=60)
    assert seen == sorted(seen) and seen[-1] == 60 and len(seen) > 1
    np.testing.assert_array_equal(with_bar.final_loss, plain.final_loss)
    np.testing.assert_array_equal(with_bar.steps_to_tol, plain.steps_to_tol)
    np.testing.assert_array_equal(with_bar.diverged_at, plain.diverged_at)


# ---------------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from ravine.experiments import TrainConfig, train

    cfg = TrainConfig(data="parity", data_kwargs={"n_bits": 6, "k": 2, "n_train": 64, "n_test": 32}, model="mlp",
                      model_kwargs={"hidden": [8]}, optimizer="torch.SGD", optimizer_kwargs={"lr": 0.1}, steps=4)
    return train(cfg, tmp_path_factory.mktemp("runs") / "r", progress=False).path


def _damaged_copy(run_dir: Path, tmp_path: Path, how: str) -> tuple[Path, Path]:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    weights = sorted(copy.glob("checkpoints/step_*/model.safetensors"))[-1]
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if how == "truncated" else b"\x00" * 8 + data[8:])
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    with pytest.raises(SafetensorError):  # the oracle: safetensors itself cannot read it
        load_file(str(weights))
    return copy, weights


@pytest.mark.parametrize("how", ["truncated", "garbled header"])
def test_landscape_on_a_damaged_checkpoint_exits_2_naming_the_file(run_dir, tmp_path, how, capsys):
    _, weights = _damaged_copy(run_dir, tmp_path, how)
    assert main(["landscape", str(weights.parent), "--line", "--steps", "3", "--out", str(tmp_path / "l.png")]) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert str(weights) in err or str(weights.parent) in err, err
    assert not (tmp_path / "l.png").exists()


def test_landscape_runs_on_the_undamaged_checkpoint(run_dir, tmp_path):
    assert main(["landscape", str(run_dir), "--line", "--steps", "3", "--out", str(tmp_path / "l.png")]) == 0
    assert (tmp_path / "l.png").stat().st_size > 0


@pytest.mark.parametrize("how", ["truncated", "garbled header"])
def test_load_state_names_a_damaged_file(run_dir, tmp_path, how):
    from ravine.landscape import load_state

    _, weights = _damaged_copy(run_dir, tmp_path, how)
    with pytest.raises(ValueError, match="not a readable safetensors file") as exc:
        load_state(weights)
    assert str(weights) in str(exc.value)
    pt = tmp_path / "w.pt"
    pt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="not a readable torch file") as exc:
        load_state(pt)
    assert str(pt) in str(exc.value)
