"""Telgarsky's sawtooth and the one-hidden-layer kink construction."""

from __future__ import annotations

import pytest
import torch

from deeplimits.constructions import (
    Residual,
    one_hidden_layer,
    sawtooth,
    sawtooth_parameters,
    tent_power,
)
from deeplimits.diagnostics import count_parameters, count_regions, region_breakpoints
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
