from __future__ import annotations

import json
from pathlib import Path

import pytest

from deeplimits.errors import ExperimentError, InvalidArgumentError
from deeplimits.experiments import run_experiment
from deeplimits.experiments._runner import load_record


def test_result_and_figures_are_stored_and_reused(toy, tmp_path: Path):
    first = run_experiment(toy, out=tmp_path)
    assert first["reused"] is False and toy.runs == 1
    stored = json.loads((tmp_path / "results" / "toy.json").read_text())
    assert stored["numbers"]["squares"] == [0, 1, 4]
    assert stored["verdict"]["status"] == "reproduced"
    assert stored["command"] == "deeplimits run toy --preset quick --seed 0"
    assert stored["environment"]["torch"] and stored["timings"]["total"] >= 0
    png = tmp_path / stored["figures"][0]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    second = run_experiment(toy, out=tmp_path)
    assert second["reused"] is True and toy.runs == 1


def test_changed_config_or_force_reruns(toy, tmp_path: Path):
    run_experiment(toy, out=tmp_path)
    run_experiment(toy, out=tmp_path, seed=1)
    assert toy.runs == 2
    run_experiment(toy, out=tmp_path, seed=1, force=True)
    assert toy.runs == 3
    run_experiment(toy, out=tmp_path, preset="full", seed=1)
    assert toy.runs == 4


def test_other_package_version_is_not_reused(toy, tmp_path: Path):
    run_experiment(toy, out=tmp_path)
    path = tmp_path / "results" / "toy.json"
    record = json.loads(path.read_text())
    record["package_version"] = "0.0.0"
    path.write_text(json.dumps(record))
    assert run_experiment(toy, out=tmp_path)["reused"] is False


def test_corrupt_result_file_is_detected_and_redone(toy, tmp_path: Path):
    run_experiment(toy, out=tmp_path)
    path = tmp_path / "results" / "toy.json"
    path.write_text(path.read_text()[:40])
    with pytest.raises(ExperimentError, match="unreadable"):
        load_record(path)
    again = run_experiment(toy, out=tmp_path)
    assert again["reused"] is False and toy.runs == 2
    assert load_record(path)["numbers"]["squares"] == [0, 1, 4]


def test_missing_figure_makes_the_result_run_again(toy, tmp_path: Path):
    first = run_experiment(toy, out=tmp_path)
    (tmp_path / first["figures"][0]).unlink()
    assert run_experiment(toy, out=tmp_path)["reused"] is False


def test_same_seed_gives_same_numbers_without_storage(toy):
    a = run_experiment(toy, seed=3)
    b = run_experiment(toy, seed=3)
    assert a["numbers"] == b["numbers"] and "figure_png" in a


def test_unavailable_cuda_is_a_clear_error(toy):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(InvalidArgumentError, match=r"no CUDA GPU.*use --device cpu"):
        run_experiment(toy, device="cuda")


def test_unwritable_output_leaves_no_partial_result(toy, tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ExperimentError, match="cannot write"):
        run_experiment(toy, out=blocker / "out")
    assert list(tmp_path.iterdir()) == [blocker]


def test_experiments_run_on_one_cpu_thread_by_default_and_restore_it(toy, monkeypatch):
    import torch

    before = torch.get_num_threads()
    record = run_experiment(toy)
    assert record["environment"]["torch_threads"] == 1
    assert torch.get_num_threads() == before
    monkeypatch.setenv("DEEPLIMITS_NUM_THREADS", "2")
    assert run_experiment(toy)["environment"]["torch_threads"] == 2
    monkeypatch.setenv("DEEPLIMITS_NUM_THREADS", "many")
    with pytest.raises(InvalidArgumentError, match="DEEPLIMITS_NUM_THREADS='many'"):
        run_experiment(toy)
