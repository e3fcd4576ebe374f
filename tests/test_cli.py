from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deeplimits.cli import main


def test_every_command_has_help(capsys):
    for cmd in ([], ["list"], ["run"], ["tour"], ["report"], ["diagnose"]):
        with pytest.raises(SystemExit) as exc:
            main([*cmd, "--help"])
        assert exc.value.code == 0
        assert "usage: deeplimits" in capsys.readouterr().out


def test_unknown_experiment_exits_2_listing_valid_names():
    proc = subprocess.run(
        [sys.executable, "-m", "deeplimits.cli", "run", "nonexistent"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "unknown experiment 'nonexistent'" in proc.stderr and "paths" in proc.stderr


def test_bad_preset_exits_2_listing_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "paths", "--preset", "fast"])
    assert exc.value.code == 2
    assert "choose from 'quick', 'full'" in capsys.readouterr().err


def test_unavailable_device_is_a_usage_error(toy_registered, tmp_path: Path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["run", "toy", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "results").exists()


def test_tour_writes_report_and_reuses_finished_results(toy_registered, tmp_path: Path):
    assert main(["tour", "--out", str(tmp_path)]) == 0
    assert toy_registered.runs == 1
    results = json.loads((tmp_path / "results.json").read_text())
    assert [e["name"] for e in results["experiments"]] == ["toy"]
    assert "<h2>1. Continuity</h2>" in (tmp_path / "index.html").read_text()
    assert main(["tour", "--out", str(tmp_path)]) == 0
    assert toy_registered.runs == 1
    assert main(["tour", "--out", str(tmp_path), "--force"]) == 0
    assert toy_registered.runs == 2


def test_failing_experiment_is_reported_and_others_still_run(toy_registered, tmp_path, monkeypatch):
    import deeplimits.experiments as ex

    class Broken(toy_registered):  # type: ignore[misc, valid-type]
        name = "broken"

        def run(self, config, progress):
            raise RuntimeError("boom")

    monkeypatch.setitem(ex._REGISTRY, "broken", Broken)
    assert main(["tour", "--out", str(tmp_path)]) == 1
    assert (tmp_path / "results" / "toy.json").exists()
    assert not (tmp_path / "results" / "broken.json").exists()
    assert "RuntimeError: boom" in (tmp_path / "index.html").read_text()


def test_run_paths_end_to_end(tmp_path: Path):
    assert main(["run", "paths", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "results" / "paths.json").read_text())
    assert record["verdict"]["status"] == "reproduced"
    assert (tmp_path / "index.html").exists()


def test_report_without_results_is_a_usage_error(tmp_path: Path):
    assert main(["report", "--out", str(tmp_path)]) == 2


def test_diagnose_is_wired_into_the_cli(tmp_path, monkeypatch, capsys):
    (tmp_path / "deep_sigmoid.py").write_text(
        "from torch import nn\n"
        "def make():\n"
        "    layers = [m for _ in range(12) for m in (nn.Linear(16, 16), nn.Sigmoid())]\n"
        "    return nn.Sequential(*layers, nn.Linear(16, 3))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["diagnose", "deep_sigmoid:make", "--input-shape", "4,16"]) == 0
    out = capsys.readouterr().out
    assert "verdict: vanishing" in out and "Sigmoid" in out
    assert main(["diagnose", "deep_sigmoid:nothing", "--input-shape", "4,16"]) == 2


def test_tour_numbers_its_steps_and_states_its_time_against_the_budget(
    toy_registered, tmp_path: Path, capsys, monkeypatch
):
    import deeplimits.experiments as ex

    assert main(["tour", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "[1/1] toy (--preset quick), 0s into the tour" in err
    assert re.search(
        r"tour: 1 experiments \(0 reused\) in \d+s; budget of --preset quick on 2 CPU cores: 60s",
        err,
    )
    assert "over budget" not in err
    monkeypatch.setitem(ex.TOUR_BUDGET_S, "quick", -1.0)  # any time is over a negative budget
    assert main(["tour", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "(1 reused)" in err
    assert "budget of --preset quick on 2 CPU cores: -1s (over budget)" in err
