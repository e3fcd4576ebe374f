"""Telgarsky's sawtooth, the one-hidden-layer kink construction and the residual block."""

from __future__ import annotations

import pytest
import torch

from deeplimits import remedies
from deeplimits.constructions import (
    Residual,
    ResidualBlock,
    one_hidden_layer,
    sawtooth,
    sawtooth_parameters,
    tent_power,
)
from deeplimits.diagnostics import (
    count_parameters,
    count_regions,
    gradient_flow,
    operator_norm,
    region_breakpoints,
)
from deeplimits.errors import InvalidArgumentError, InvalidTypeError


@pytest.mark.parametrize("depth", range(1, 13))
def test_sawtooth_has_exactly_two_to_the_depth_pieces_on_the_unit_interval(depth: int) -> None:
    model = sawtooth(depth)
    assert count_regions(model, line=([0.0], [1.0]), kind="affine") == 2**depth
    assert count_regions(model, line=([0.0], [1.0])) == 2**depth
    assert count_parameters(model) == sawtooth_parameters(depth) == 6 * depth + 1


def test_sawtooth_breakpoints_are_the_dyadic_points() -> None:
    t = region_breakpoints(sawtooth(7), line=([0.0], [1.0]), kind="affine")
    assert torch.equal(torch.as_tensor(t), torch.arange(129, dtype=torch.float64) / 128)


@pytest.mark.parametrize("depth", [1, 3, 8])
def test_sawtooth_computes_the_iterated_tent_map(depth: int) -> None:
    x = torch.rand(5000, 1, dtype=torch.float64)
    y = sawtooth(depth, dtype=torch.float64)(x)
    torch.testing.assert_close(y, tent_power(x, depth))
    # peaks at odd multiples of 2^-depth, zeros at even ones
    grid = torch.arange(2**depth + 1, dtype=torch.float64)[:, None] / 2**depth
    expected = (torch.arange(2**depth + 1) % 2).to(torch.float64)[:, None]
    torch.testing.assert_close(sawtooth(depth, dtype=torch.float64)(grid), expected)


def test_one_hidden_layer_places_its_kinks_and_slope_changes() -> None:
    model = one_hidden_layer([0.25, 0.5], [1.0, -3.0], dtype=torch.float64)
    x = torch.tensor([[0.0], [0.25], [0.5], [1.0]], dtype=torch.float64)
    # 0 until 0.25, slope 1 until 0.5, then slope -2
    torch.testing.assert_close(model(x)[:, 0], torch.tensor([0.0, 0.0, 0.25, -0.75]).double())
    assert count_parameters(model) == 3 * 2 + 1


def test_residual_adds_its_input() -> None:
    body = torch.nn.Linear(3, 3)
    x = torch.randn(4, 3)
    torch.testing.assert_close(Residual(body)(x), x + body(x))


def test_residual_and_the_remedies_residual_block_are_one_class() -> None:
    assert Residual is ResidualBlock is remedies.ResidualBlock
    block = Residual(torch.nn.Linear(2, 2))
    assert block.scale == 1.0
    assert all(isinstance(m, ResidualBlock) for m in remedies.residual_mlp(2, 4, 1, 5)[2:-1])


def test_residual_block_adds_its_scaled_branch() -> None:
    branch = torch.nn.Linear(3, 3)
    x = torch.randn(4, 3)
    torch.testing.assert_close(ResidualBlock(branch, scale=0.25)(x), x + 0.25 * branch(x))


def _scaled_residual_net(scale: float) -> torch.nn.Sequential:
    """x ↦ relu(x + scale·(-2 relu(x)) - 1/4) on a line: the scale moves the outer ReLU's kink."""
    inner = torch.nn.Linear(1, 1)
    outer = torch.nn.Linear(1, 1)
    with torch.no_grad():
        inner.weight.fill_(-2.0)
        inner.bias.zero_()
        outer.weight.fill_(1.0)
        outer.bias.fill_(-0.25)
    branch = torch.nn.Sequential(torch.nn.ReLU(), inner)
    return torch.nn.Sequential(ResidualBlock(branch, scale=scale), outer, torch.nn.ReLU())


def test_count_regions_sees_the_residual_blocks_scale() -> None:
    # scale 1/4: x/2 - 1/4 for x > 0 switches the outer ReLU on at x = 1/2 (kinks at 0 and 1/2);
    # scale 1: -x - 1/4 < 0 for x > 0, so the outer ReLU stays off (kink at 0 only).
    line = ([-1.0], [1.0])
    quarter, one = _scaled_residual_net(0.25), _scaled_residual_net(1.0)
    assert count_regions(quarter, line=line) == 3
    assert count_regions(quarter, line=line, kind="affine") == 2  # 0, then x/2 - 1/4
    assert count_regions(one, line=line) == 2
    assert count_regions(one, line=line, kind="affine") == 1  # 0 everywhere


def test_gradient_flow_bounds_a_residual_block_by_one_plus_scale_times_its_branch() -> None:
    torch.manual_seed(0)
    branch = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(3, 3))
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), Residual(branch, scale=0.5))
    report = gradient_flow(model, torch.randn(5, 2))
    lips = [lf.lipschitz for lf in report.layers if lf.kind == "ResidualBlock"]
    assert lips == pytest.approx([1 + 0.5 * operator_norm(branch[1])], rel=1e-12)


def test_bad_arguments_are_rejected() -> None:
    for bad in (0, -1, 2.0, True):
        with pytest.raises(InvalidArgumentError, match="depth"):
            sawtooth(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="empty"):
        one_hidden_layer([])
    with pytest.raises(InvalidArgumentError, match="finite"):
        one_hidden_layer([0.1, float("inf")])
    with pytest.raises(InvalidArgumentError, match="one per kink"):
        one_hidden_layer([0.1, 0.2], [1.0])
    with pytest.raises(InvalidArgumentError, match="depth"):
        tent_power(torch.zeros(2), -1)
    with pytest.raises(InvalidTypeError, match="Module"):
        Residual("not a module")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="scale"):
        ResidualBlock(torch.nn.Linear(2, 2), scale=float("nan"))
