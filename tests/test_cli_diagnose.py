"""The ``diagnose`` subcommand: factory loading, input-shape parsing, table and verdict."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from deeplimits._cli_diagnose import add_diagnose_parser, run_diagnose


@pytest.fixture
def factories(tmp_path, monkeypatch):
    (tmp_path / "dl_cli_models.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn
            from deeplimits.remedies import init_normal_

            def small():
                return nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))

            def vanishing():
                m = nn.Sequential(*[nn.Sequential(nn.Linear(16, 16), nn.Tanh()) for _ in range(12)])
                return init_normal_(m, 0.01)

            def not_a_model():
                return 3

            def needs_args(width):
                return nn.Linear(width, width)

            def batchnorm():
                return nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))

            instance = nn.Linear(2, 2)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("dl_cli_models", None)


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="deeplimits")
    add_diagnose_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["diagnose", *argv])
    return args.func(args)


def test_diagnose_prints_table_and_verdict(factories, capsys):
    assert _run(["dl_cli_models:small", "--input-shape", "1,784", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "Linear" in out and "ReLU" in out
    assert "bound" in out
    assert "verdict: healthy" in out


def test_diagnose_reports_vanishing_gradients(factories, capsys):
    assert _run(["dl_cli_models:vanishing", "--input-shape", "4,16"]) == 0
    assert "verdict: vanishing" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["dl_cli_models", "--input-shape", "1,784"], "MODULE:FACTORY"),
        (["no_such_module_xyz:f", "--input-shape", "1,784"], "cannot import"),
        (["dl_cli_models:missing", "--input-shape", "1,784"], "no attribute"),
        (["dl_cli_models:not_a_model", "--input-shape", "1,784"], "not a torch.nn.Module"),
        (["dl_cli_models:needs_args", "--input-shape", "1,784"], "no arguments"),
        (["dl_cli_models:instance", "--input-shape", "1,2"], "factory"),
        (["dl_cli_models:small", "--input-shape", "1,x"], "integers"),
        (["dl_cli_models:small", "--input-shape", "784"], "batch size"),
        (["dl_cli_models:small", "--input-shape", "0,784"], ">= 1"),
        (["dl_cli_models:small", "--input-shape", "1,100"], "input of shape"),
    ],
)
def test_diagnose_usage_errors_exit_2_with_a_message(factories, capsys, argv, message):
    assert _run(argv) == 2
    err = capsys.readouterr().err
    assert message in err


def test_run_diagnose_is_the_subcommand_function():
    parser = argparse.ArgumentParser()
    add_diagnose_parser(parser.add_subparsers())
    args = parser.parse_args(["diagnose", "m:f", "--input-shape", "1,2"])
    assert args.func is run_diagnose and args.seed == 0


@pytest.fixture
def model_folder(tmp_path, monkeypatch):
    """tests/diagnostics/anymodels.py copied into a folder that is the cwd but not on sys.path."""
    src = Path(__file__).parent / "diagnostics" / "anymodels.py"
    (tmp_path / "dl_anymodels.py").write_text(src.read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    yield tmp_path
    sys.modules.pop("dl_anymodels", None)


@pytest.mark.parametrize(
    ("factory", "shape", "extra", "expected"),
    [
        ("make_resnet", "2,3,8,8", [], "bound (graph Lipschitz) = "),
        ("make_resnet", "2,3,8,8", ["--train-mode"], "train-mode BatchNorm"),
        ("make_transformer", "2,5,8", [], "Kim, Papamakarios & Mnih"),
        ("make_gru", "2,6,3", [], "Lipschitz bound unavailable: layer rnn (GRU)"),
        ("make_lstm", "2,6,3", [], "Lipschitz bound unavailable: layer rnn (LSTM)"),
        ("make_dict_model", "2,4", ["--loss", "dl_anymodels:dict_loss"], "bound (graph"),
    ],
)
def test_diagnose_works_from_the_models_folder_on_any_model(
    model_folder, capsys, factory, shape, extra, expected
):
    assert str(model_folder) not in sys.path
    assert _run([f"dl_anymodels:{factory}", "--input-shape", shape, *extra]) == 0
    out = capsys.readouterr().out
    assert expected in out and "verdict: " in out
    rows = {"make_resnet": "blocks.1.shortcut.0", "make_transformer": "encoder.layers.1.norm2",
            "make_gru": "rnn", "make_lstm": "rnn", "make_dict_model": "reg"}
    assert f" {rows[factory]} " in out


def test_diagnose_json_is_the_report_and_eval_mode_is_the_default(model_folder, capsys):
    assert _run(["dl_anymodels:make_resnet", "--input-shape", "2,3,8,8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["mode"] == "modules" and isinstance(report["bound"], float)
    assert report["layers"][0]["name"] == "stem.0" and report["layers"][-1]["name"] == "fc"
    assert report["bound"] >= report["measured_ratio"]
    assert _run(["dl_anymodels:make_resnet", "--input-shape", "2,3,8,8", "--json",
                 "--train-mode"]) == 0
    assert json.loads(capsys.readouterr().out)["bound"] == "inf"


def test_diagnose_batchnorm_model_is_bounded_in_eval_mode(factories, capsys):
    assert _run(["dl_cli_models:batchnorm", "--input-shape", "2,4"]) == 0
    out = capsys.readouterr().out
    assert "BatchNorm1d" in out and "bound (graph Lipschitz)" in out


def test_diagnose_bad_loss_is_a_usage_error(model_folder, capsys):
    argv = ["dl_anymodels:make_dict_model", "--input-shape", "2,4", "--loss"]
    assert _run([*argv, "dl_anymodels:INPUT_SHAPES"]) == 2
    assert "not callable" in capsys.readouterr().err
    assert _run([*argv, "dl_anymodels"]) == 2
    assert "MODULE:NAME" in capsys.readouterr().err


@pytest.mark.skipif(sys.version_info < (3, 11), reason="python -P (no cwd on sys.path) is 3.11+")
def test_diagnose_in_a_fresh_process_imports_from_the_current_folder(tmp_path):
    import subprocess

    import deeplimits

    src = Path(__file__).parent / "diagnostics" / "anymodels.py"
    (tmp_path / "dl_anymodels.py").write_text(src.read_text())
    package_root = str(Path(deeplimits.__file__).resolve().parents[1])
    # -P: Python itself puts no folder on sys.path; only deeplimits' own location is given.
    code = ("import sys; from deeplimits.cli import main; "
            "sys.exit(main(['diagnose', 'dl_anymodels:make_resnet', '--input-shape', '2,3,8,8']))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=package_root, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-P", "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "blocks.1.shortcut.0" in done.stdout and "bound (graph Lipschitz) = " in done.stdout
