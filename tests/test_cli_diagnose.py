"""The ``diagnose`` subcommand: factory loading, input-shape parsing, table and verdict."""

from __future__ import annotations

import argparse
import sys
import textwrap

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
        (["dl_cli_models:batchnorm", "--input-shape", "2,4"], "BatchNorm1d"),
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
