"""``ravine report``: every flag reaches ``ravine.report.run_report``."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from ravine.cli import main


@pytest.fixture
def calls(monkeypatch, tmp_path):
    got = []

    def fake_run_report(**kwargs):
        kwargs["executor"] = kwargs["executor"].describe()
        got.append(kwargs)
        return SimpleNamespace(results=[], errors={}, path=Path(tmp_path) / "r.html")

    monkeypatch.setattr("ravine.report.run_report", fake_run_report)
    return got


def test_defaults(calls, tmp_path):
    assert main(["report", "--out", str(tmp_path)]) == 0
    assert calls == [
        dict(
            size="quick",
            out=str(tmp_path),
            experiments=None,
            progress=True,
            reuse=True,
            threads=1,
            gallery=True,
            executor="in-process",
        )
    ]


def test_every_flag_is_passed_on(calls, tmp_path):
    argv = ["report", "--full", "--out", str(tmp_path), "--only", "clipping, warmup", "--rerun", "--no-progress"]
    assert main(argv + ["--no-gallery", "--threads", "2", "--workers", "2"]) == 0
    assert calls == [
        dict(
            size="full",
            out=str(tmp_path),
            experiments=["clipping", "warmup"],
            progress=False,
            reuse=False,
            threads=2,
            gallery=False,
            executor="process pool, 2 workers",
        )
    ]


def test_bad_threads_exit_2(tmp_path, capsys):
    assert main(["report", "--out", str(tmp_path), "--threads", "0", "--no-progress", "--no-gallery"]) == 2
    assert "threads must be" in capsys.readouterr().err


def test_bad_workers_and_cluster_without_ray(tmp_path, capsys, monkeypatch):
    assert main(["report", "--out", str(tmp_path), "--workers", "0"]) == 2
    assert "--workers must be an integer in [1, 1024], got 0" in capsys.readouterr().err
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if Ray were not installed
    assert main(["report", "--out", str(tmp_path), "--cluster", "local", "--no-progress"]) == 2
    assert "pip install 'ravine[cluster]'" in capsys.readouterr().err
