"""count_paths and count_parameters: closed forms on hand-built networks."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from deeplimits.diagnostics import count_parameters, count_paths
from deeplimits.errors import InvalidTypeError, UnsupportedModelError


@pytest.mark.parametrize("widths", [[3, 4], [2, 5, 7], [4, 3, 3, 2, 6]])
def test_dense_network_has_the_product_of_its_widths_as_paths(widths: list[int]) -> None:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    model = nn.Sequential(*layers)
    assert count_paths(model) == math.prod(widths)
    assert count_parameters(model) == sum(a * b + b for a, b in itertools.pairwise(widths))


def test_zero_weights_remove_paths() -> None:
    # 2 -> 2 -> 1 with W1 = [[1, 0], [1, 1]] (3 edges) and W2 = [[1, 1]]: paths into hidden unit
    # 0: 1, into unit 1: 2; all reach the output: 3. With W2 = [[0, 1]]: only unit 1's 2 paths.
    l1, l2 = nn.Linear(2, 2), nn.Linear(2, 1)
    with torch.no_grad():
        l1.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
        l2.weight.copy_(torch.tensor([[1.0, 1.0]]))
    model = nn.Sequential(l1, nn.Tanh(), nn.Sequential(l2))
    assert count_paths(model) == 3
    with torch.no_grad():
        l2.weight.copy_(torch.tensor([[0.0, 1.0]]))
    assert count_paths(model) == 2
    assert count_paths(l1) == 3  # a single Linear layer


def test_path_count_is_exact_beyond_floating_point() -> None:
    model = nn.Sequential(*[nn.Linear(64, 64) for _ in range(12)])
    assert count_paths(model) == 64**13  # 24 digits, beyond float64's 16: an exact int
    assert isinstance(count_paths(model), int)


def test_count_parameters_counts_shared_parameters_once_and_can_skip_frozen_ones() -> None:
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(3, 1))
    assert count_parameters(model) == 12 + 4
    model[3].weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 12 + 1
    assert count_parameters(model) == 16


def test_unsupported_models_are_refused() -> None:
    with pytest.raises(UnsupportedModelError, match=r"layer 1 \(Conv1d\)"):
        count_paths(nn.Sequential(nn.Linear(2, 2), nn.Conv1d(1, 1, 1)))
    with pytest.raises(UnsupportedModelError, match=r"no nn\.Linear"):
        count_paths(nn.Sequential(nn.ReLU()))
    with pytest.raises(InvalidTypeError, match=r"torch\.nn\.Module"):
        count_paths("not a model")  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match=r"torch\.nn\.Module"):
        count_parameters(3)  # type: ignore[arg-type]
