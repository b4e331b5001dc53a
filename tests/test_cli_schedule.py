"""`ravine schedule` through ravine.cli.main."""

from __future__ import annotations

import pytest

import ravine.schedules as S
from ravine.cli import main

WC = ["schedule", "warmup_cosine", "--peak", "3e-4", "--warmup-steps", "100", "--total-steps", "1000"]


def _table(out: str) -> dict[int, tuple[float, str]]:
    rows = {}
    for line in out.splitlines()[2:]:
        parts = line.split()
        if parts and parts[0].isdigit():
            rows[int(parts[0])] = (float(parts[1]), " ".join(parts[2:]))
    return rows


def test_table_shows_first_step_end_of_warmup_and_last_step(capsys):
    assert main(WC) == 0
    out = capsys.readouterr().out
    s = S.warmup_cosine(3e-4, 100, 1000)
    assert out.splitlines()[0] == repr(s)
    rows = _table(out)
    assert {0, 99, 100, 999} <= set(rows) and 10 <= len(rows) <= 16
    for t, (lr, _) in rows.items():
        assert lr == pytest.approx(s(t), rel=1e-5)
    assert "first update" in rows[0][1] and "end of warmup" in rows[99][1] and "end of decay" in rows[999][1]
    assert rows[0][0] == pytest.approx(3e-6) and rows[99][0] == pytest.approx(3e-4)
    assert "final value 0 from step 1000 on" in out


def test_every_parameter_is_a_flag(capsys):
    argv = [
        "schedule",
        "wsd",
        "--peak",
        "1e-3",
        "--warmup-steps",
        "10",
        "--stable-steps",
        "70",
        "--decay-steps",
        "20",
        "--final",
        "1e-5",
        "--decay-shape",
        "1-sqrt",
        "--start",
        "0",
        "--csv",
    ]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "step,lr" and len(lines) == 101
    s = S.wsd(1e-3, 10, 70, 20, final=1e-5, decay_shape="1-sqrt", start=0.0)
    assert [float(line.split(",")[1]) for line in lines[1:]] == [s(t) for t in range(100)]

    assert main(["schedule", "one_cycle", "--peak", "0.1", "--total-steps", "1e3", "--three-phase", "--csv"]) == 0
    vals = [float(line.split(",")[1]) for line in capsys.readouterr().out.splitlines()[1:]]
    assert vals == [S.one_cycle(0.1, 1000, three_phase=True)(t) for t in range(1000)]

    argv = ["schedule", "step_decay", "--peak", "0.1", "--milestones", "3,6", "--gamma", "0.5", "--steps", "9", "--csv"]
    assert main(argv) == 0
    vals = [float(line.split(",")[1]) for line in capsys.readouterr().out.splitlines()[1:]]
    assert vals == [0.1] * 3 + [0.05] * 3 + [0.025] * 3


def test_open_ended_schedule_defaults_to_1000_steps(capsys):
    assert main(["schedule", "inverse_sqrt", "--peak", "1e-3", "--warmup-steps", "50", "--rows", "6"]) == 0
    rows = _table(capsys.readouterr().out)
    assert max(rows) == 999 and {0, 49} <= set(rows)


def test_out_writes_a_plot(tmp_path, capsys):
    path = tmp_path / "plots" / "lr.png"
    assert main([*WC, "--out", str(path)]) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert [p.name for p in tmp_path.joinpath("plots").iterdir()] == ["lr.png"]  # no temporary left behind


def test_list(capsys):
    assert main(["schedule", "--list"]) == 0
    out = capsys.readouterr().out
    for name in S.names():
        assert name in out
    assert "--decay-shape {linear,cosine,1-sqrt}" in out and "--peak FLOAT --warmup-steps INT" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["schedule", "cosine"],
            "unknown schedule 'cosine'; valid names: constant, linear_warmup, cosine_decay, "
            "warmup_cosine, linear_decay, wsd, inverse_sqrt, step_decay, exponential_decay, one_cycle",
        ),
        (["schedule"], "give a schedule NAME or --list; valid names: constant,"),
        (["schedule", "warmup_cosine", "--peak", "1e-3"], "warmup_cosine needs --warmup-steps, --total-steps"),
        ([*WC, "--stable-steps", "5"], "--stable-steps does not apply to warmup_cosine; its parameters: --peak FLOAT"),
        (
            ["schedule", "warmup_cosine", "--peak", "-1", "--warmup-steps", "1", "--total-steps", "5"],
            "warmup_cosine: peak must be in [0, inf), got -1.0",
        ),
        (
            ["schedule", "warmup_cosine", "--peak", "1", "--warmup-steps", "10", "--total-steps", "5"],
            "warmup_steps must be in [0, total_steps=5]",
        ),
        ([*WC, "--steps", "0"], "--steps must be an integer in [1, inf), got 0"),
    ],
)
def test_bad_input_exits_2_with_a_message(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ravine schedule: error: ") and message in err


@pytest.mark.parametrize(
    "argv,message",
    [
        ([*WC[:2], "--decay-shape", "exp"], "invalid choice: 'exp'"),
        ([*WC, "--total-steps", "1.5"], "expected an integer, got '1.5'"),
        ([*WC, "--milestones", "a,b"], "expected an integer, got 'a'"),
    ],
)
def test_bad_flag_values_are_argparse_errors(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_plot_schedules_compares_several_and_checks_its_input(tmp_path):
    from ravine.plots.schedules import plot_schedules

    d = {
        "warmup_cosine": S.warmup_cosine(1e-3, 100, 1000),
        "wsd": S.wsd(1e-3, 100, 700, 200),
        "one_cycle": S.one_cycle(1e-3, 1000),
        "lambda": lambda t: 1e-3 / (1 + t),  # any callable; no phases
    }
    path = plot_schedules(d, 1100, tmp_path / "cmp.svg", log_y=True)
    text = path.read_text()
    assert text.startswith("<?xml") and all(name in text for name in ("stable", "anneal", "wsd"))
    with pytest.raises(ValueError, match=r"plot_schedules: steps must be an integer in \[1, inf\), got 0"):
        plot_schedules(d, 0, tmp_path / "x.png")
    with pytest.raises(TypeError, match=r"schedules\['a'\] must be a callable"):
        plot_schedules({"a": 0.1}, 10, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
