"""The bad-input catalogue: every entry is a bad input to the public API or the CLI, the error
type it must raise, and a pattern its message must match, naming the offending value and saying
the fix. docs/bad_inputs.md lists the same entries (checked below)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

import deeplimits.diagnostics as dg
from deeplimits.errors import (
    InvalidArgumentError,
    InvalidTypeError,
    MaxStepsExceededError,
    NonFiniteStateError,
    StepSizeUnderflowError,
    UnknownNameError,
    UnsupportedModelError,
)
from deeplimits.experiments import ExperimentConfig, Table, Verdict, get_experiment
from deeplimits.ode import ODEBlock, odeint, odeint_adjoint, odeint_checkpoint

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md"


@dataclass(frozen=True)
class Case:
    id: str
    area: str
    what: str
    call: Callable[[], object]
    error: type[Exception]
    match: str  # must name the value and say the fix


def _decay(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -y


class _Linear(nn.Module):
    """``dy/dt = W y`` with a trainable ``W`` (3x3)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3, bias=False)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.lin(y)


Y0 = torch.ones(3)
T = torch.tensor([0.0, 1.0])
MLP = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2))
P2 = (torch.zeros(2), torch.ones(2))

CATALOGUE: tuple[Case, ...] = (
    # ODE engine
    Case("ode-t-not-monotonic", "ode", "t = [0, 1, 0.5]",
         lambda: odeint(_decay, Y0, torch.tensor([0.0, 1.0, 0.5])),
         InvalidArgumentError, r"t\[2\]=0.5 follows t\[1\]=1.0.*sort t"),
    Case("ode-t-repeated", "ode", "t = [0, 1, 1]",
         lambda: odeint(_decay, Y0, torch.tensor([0.0, 1.0, 1.0])),
         InvalidArgumentError, r"t\[2\]=1.0 follows t\[1\]=1.0.*remove duplicates"),
    Case("ode-t-2d", "ode", "t of shape (2, 2)",
         lambda: odeint(_decay, Y0, torch.zeros(2, 2)),
         InvalidArgumentError, r"1-D.*shape \(2, 2\).*torch.linspace"),
    Case("ode-t-empty", "ode", "t of shape (0,)",
         lambda: odeint(_decay, Y0, torch.tensor([])),
         InvalidArgumentError, r"shape \(0,\).*torch.linspace"),
    Case("ode-t-integer", "ode", "integer t",
         lambda: odeint(_decay, Y0, torch.tensor([0, 1])),
         InvalidTypeError, r"torch.int64.*t.to\(torch.float32\)"),
    Case("ode-t-list", "ode", "t given as a Python list",
         lambda: odeint(_decay, Y0, [0.0, 1.0]),
         InvalidTypeError, r"got list.*torch.tensor\(t"),
    Case("ode-y0-integer", "ode", "integer y0",
         lambda: odeint(_decay, torch.ones(3, dtype=torch.int64), T),
         InvalidTypeError, r"y0.*torch.int64.*\.double\(\) or \.float\(\)"),
    Case("ode-y0-nan", "ode", "NaN in y0",
         lambda: odeint(_decay, torch.tensor([float("nan"), 1.0]), T),
         NonFiniteStateError, r"y0 contains NaN or inf \(at t=0.0\)"),
    Case("ode-nan-mid-solve", "ode", "dynamics turning NaN at t = 0.5",
         lambda: odeint(lambda t, y: y * torch.log(0.5 - t), Y0, T),
         NonFiniteStateError, r"NaN or inf just after t=0.49.*func returns NaN/inf"),
    Case("ode-stiff-max-steps", "ode", "stiff problem with max_num_steps=50",
         lambda: odeint(lambda t, y: -1000 * (y - torch.cos(t)), Y0, torch.tensor([0.0, 10.0]),
                        options={"max_num_steps": 50}),
         MaxStepsExceededError, r"max_num_steps=50 reached at t=.*raise options max_num_steps"),
    Case("ode-step-underflow", "ode", "singular dy/dt = 1/(1 - t) in float64 past t = 1",
         lambda: odeint(lambda t, y: torch.ones_like(y) / (1 - t),
                        torch.zeros(2, dtype=torch.float64),
                        torch.tensor([0.0, 2.0], dtype=torch.float64)),
         StepSizeUnderflowError, r"underflow at t=0.99.*dt=.*singular near t"),
    Case("ode-wrong-output-shape", "ode", "func returns shape (2,) for a state of shape (3,)",
         lambda: odeint(lambda t, y: y[:2], Y0, T),
         InvalidArgumentError, r"shape \(2,\) but the state has shape \(3,\).*same shape"),
    Case("ode-output-dtype-mismatch", "ode", "func returns float64 for a float32 state",
         lambda: odeint(lambda t, y: y.double(), Y0, T),
         InvalidTypeError, r"float64 but y0 has dtype torch.float32.*module.to\(torch.float32\)"),
    Case("ode-t-integer", "ode", "integer t (torch.arange(3))",
         lambda: odeint(_decay, Y0, torch.arange(3)),
         InvalidTypeError, r"t must have a floating dtype, got torch.int64"),
    Case("ode-t-grad-2d", "ode", "a 2-D t (per_sample) that requires grad",
         lambda: odeint(_decay, torch.ones(2, 1), torch.tensor([[0.0, 1.0], [0.0, 2.0]],
                        requires_grad=True), options={"per_sample": True}),
         InvalidArgumentError, r"2-D t \(per_sample=True\) are not supported; detach t"),
    Case("ode-unknown-method", "ode", "method='rk45'",
         lambda: odeint(_decay, Y0, T, method="rk45"),
         UnknownNameError,
         r"'rk45'.*euler, midpoint, heun2, heun3, rk4, .*dopri5, tsit5.*did you mean 'rk4'"),
    Case("ode-unknown-option", "ode", "options={'stepsize': 0.1} (typo)",
         lambda: odeint(_decay, Y0, T, options={"stepsize": 0.1}),
         UnknownNameError, r"'stepsize'.*first_step, max_num_steps"),
    Case("ode-compile-with-autograd", "ode",
         "options compile=True while autograd records (parameters require grad)",
         lambda: odeint(_Linear(), Y0, T, options={"compile": True}),
         InvalidArgumentError, r"compile=True, but autograd is recording.*torch.no_grad"),
    Case("ode-compile-reversible-heun", "ode", "options compile=True with reversible_heun",
         lambda: odeint(_decay, Y0, T, method="reversible_heun",
                        options={"step_size": 0.1, "compile": True}),
         InvalidArgumentError, r"compile=True is not available for reversible_heun.*rk4"),
    Case("ode-negative-rtol", "ode", "rtol=-1",
         lambda: odeint(_decay, Y0, T, rtol=-1.0),
         InvalidArgumentError, r"rtol=-1.0 must be >= 0"),
    Case("ode-negative-step", "ode", "rk4 with step_size=-0.1",
         lambda: odeint(_decay, Y0, T, method="rk4", options={"step_size": -0.1}),
         InvalidArgumentError, r"step_size=-0.1 must be a positive"),
    Case("ode-adams-max-order", "ode", "implicit_adams with max_order=3",
         lambda: odeint(_decay, Y0, T, method="implicit_adams", options={"max_order": 3}),
         InvalidArgumentError, r"max_order=3 must be an int in \[4, 12\].*use method='rk4'"),
    Case("ode-adams-checkpoint", "ode", "odeint_checkpoint with explicit_adams",
         lambda: odeint_checkpoint(_Linear(), Y0, T, method="explicit_adams"),
         InvalidArgumentError, r"odeint_checkpoint cannot replay.*use odeint or odeint_adjoint"),
    Case("ode-adjoint-plain-function", "ode", "odeint_adjoint of a plain function",
         lambda: odeint_adjoint(_decay, Y0, T),
         InvalidTypeError, r"nn.Module \(got function\) or adjoint_params="),
    Case("ode-adjoint-unknown-norm", "ode", "adjoint_options={'norm': 'l2'}",
         lambda: odeint_adjoint(nn.Linear(3, 3), Y0, T, adjoint_options={"norm": "l2"}),
         UnknownNameError, r"'l2'.*rms, seminorm"),
    Case("ode-block-zero-span", "ode", "ODEBlock(t1=0)",
         lambda: ODEBlock(nn.Linear(3, 3), t1=0),
         InvalidArgumentError, r"t1=0 must be a nonzero number"),
    # diagnostics
    Case("diag-unsupported-layer", "diagnostics", "lipschitz_upper of a GRU",
         lambda: dg.lipschitz_upper(nn.Sequential(nn.GRU(2, 4)), input_shape=(5, 2)),
         UnsupportedModelError, r"layer 0 \(GRU\): no Lipschitz rule for recurrent layers"),
    Case("diag-graph-needs-shape", "diagnostics", "lipschitz_upper of a CNN without input_shape",
         lambda: dg.lipschitz_upper(nn.Sequential(nn.Conv2d(1, 1, 3), nn.Flatten())),
         InvalidArgumentError, r"needs input_shape.*input_shape=\(3, 32, 32\)"),
    Case("diag-empty-batch", "diagnostics", "gradient_flow on a batch of 0 inputs",
         lambda: dg.gradient_flow(MLP, torch.zeros(0, 2)),
         InvalidArgumentError, r"got \(0, 2\)"),
    Case("diag-conv-without-shape", "diagnostics", "operator_norm(Conv2d) without input_shape",
         lambda: dg.operator_norm(nn.Conv2d(1, 1, 3)),
         InvalidArgumentError, r"Conv2d needs input_shape \(C, H, W\)"),
    Case("diag-no-linear-layer", "diagnostics", "count_paths of a model with no parameters",
         lambda: dg.count_paths(nn.Sequential(nn.ReLU())),
         UnsupportedModelError, r"no nn.Linear layer"),
    Case("diag-regions-tanh", "diagnostics", "count_regions of a tanh network",
         lambda: dg.count_regions(nn.Sequential(nn.Linear(2, 4), nn.Tanh()), line=P2),
         UnsupportedModelError, r"\(Tanh\) is not supported; only piecewise-linear"),
    Case("diag-regions-no-slice", "diagnostics", "count_regions with neither line nor plane",
         lambda: dg.count_regions(MLP),
         InvalidArgumentError, r"exactly one of line=\(a, b\) and plane=.*line=None, plane=None"),
    Case("diag-regions-wrong-width", "diagnostics", "a line of 3-D points for a 2-input model",
         lambda: dg.count_regions(MLP, line=(torch.zeros(3), torch.ones(3))),
         InvalidArgumentError, r"shape \(3,\) but the model takes inputs of width 2"),
    Case("diag-regions-degenerate-plane", "diagnostics", "three collinear points as a plane",
         lambda: dg.count_regions(MLP, plane=(torch.zeros(2), torch.ones(2), 2 * torch.ones(2))),
         InvalidArgumentError, r"collinear.*give three points that span a plane"),
    Case("diag-lipschitz-unknown-method", "diagnostics", "lipschitz_upper(method='sdp')",
         lambda: dg.lipschitz_upper(MLP, method="sdp"),
         UnknownNameError, r"'sdp'.*product, eclipse"),
    Case("diag-radius-negative-lipschitz", "diagnostics", "certified_radius(lipschitz=-1)",
         lambda: dg.certified_radius(MLP, torch.randn(3, 2), lipschitz=-1.0),
         InvalidArgumentError, r"got -1.0"),
    Case("diag-flip-nan-input", "diagnostics", "flip_distance of a NaN input",
         lambda: dg.flip_distance(MLP, torch.tensor([[float("nan"), 0.0]])),
         InvalidArgumentError, r"x contains NaN or inf; pass finite inputs"),
    Case("diag-not-a-module", "diagnostics", "count_parameters('x')",
         lambda: dg.count_parameters("x"),  # type: ignore[arg-type]
         InvalidTypeError, r"torch.nn.Module, got str"),
    # framework
    Case("exp-unknown-experiment", "experiments", "get_experiment('nonexistent')",
         lambda: get_experiment("nonexistent"),
         UnknownNameError, r"'nonexistent'.*paths"),
    Case("exp-unknown-preset", "experiments", "preset 'fast'",
         lambda: ExperimentConfig.preset("fast"),
         UnknownNameError, r"'fast'.*quick, full"),
    Case("exp-bad-verdict", "experiments", "Verdict('maybe', ...)",
         lambda: Verdict("maybe", "x"),  # type: ignore[arg-type]
         UnknownNameError, r"'maybe'.*reproduced, not reproduced, inconclusive"),
    Case("exp-ragged-table", "experiments", "a table row with too few cells",
         lambda: Table("t", ("a", "b"), ((1,),)),
         InvalidArgumentError, r"row 0 has 1 cells but there are 2 columns"),
)  # fmt: skip


@pytest.mark.parametrize("case", CATALOGUE, ids=[c.id for c in CATALOGUE])
def test_bad_input_raises_its_documented_error(case: Case):
    with pytest.raises(case.error, match=case.match) as info:
        case.call()
    # Every error is a DeeplimitsError and a built-in a caller would catch.
    assert isinstance(info.value, (ValueError, TypeError, RuntimeError))


# CLI cases: exit status, message, and no partial or corrupt file left.


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_cli_unknown_experiment_exits_2_and_writes_nothing(tmp_path, capsys):
    from deeplimits.cli import main

    assert main(["run", "nonexistent", "--out", str(tmp_path / "o")]) == 2
    assert "unknown experiment 'nonexistent'; valid choices:" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_bad_seed_is_an_argparse_usage_error(capsys):
    from deeplimits.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["run", "paths", "--seed", "abc"])
    assert exc.value.code == 2
    assert "invalid int value: 'abc'" in capsys.readouterr().err


def test_cli_unwritable_output_folder_exits_1_and_leaves_nothing(toy_registered, tmp_path, capsys):
    from deeplimits.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["tour", "--out", str(blocker / "out")]) == 1
    assert "cannot write" in capsys.readouterr().err
    assert _files(tmp_path) == ["file"]


def test_cli_corrupt_cached_result_is_redone(toy_registered, tmp_path, capsys):
    from deeplimits.cli import main

    assert main(["tour", "--out", str(tmp_path)]) == 0
    (tmp_path / "results" / "toy.json").write_text('{"schema": 1, "name": "toy", "conf')
    assert main(["tour", "--out", str(tmp_path)]) == 0
    assert "unreadable" in capsys.readouterr().err
    assert toy_registered.runs == 2
    assert '"verdict"' in (tmp_path / "results" / "toy.json").read_text()


def test_cli_full_disk_exits_1_without_partial_files(toy_registered, tmp_path, monkeypatch, capsys):
    import errno
    import os

    from deeplimits.cli import main

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    assert main(["tour", "--out", str(tmp_path)]) == 1
    assert "disk is full" in capsys.readouterr().err
    assert not [f for f in _files(tmp_path) if f.endswith((".json", ".png", ".tmp", ".html"))]


def test_catalogue_is_documented():
    text = DOC.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([a-z0-9-]+)` \|", text, flags=re.M))
    assert documented == {c.id for c in CATALOGUE} | {
        "cli-unknown-experiment",
        "cli-bad-seed",
        "cli-unwritable-out",
        "cli-corrupt-result",
        "cli-full-disk",
        "cli-no-gpu",
    }
    assert len(documented) >= 30
