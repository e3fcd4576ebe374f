"""Lipschitz bounds: exact on one Linear layer; lower <= ECLipsE <= product on MLPs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deeplimits.constructions import mlp
from deeplimits.diagnostics import lipschitz_lower, lipschitz_upper
from deeplimits.errors import UnknownNameError, UnsupportedModelError


def _mlp(sizes: list[int], act: type[nn.Module], seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return mlp(sizes, act)


def _pairwise_ratio(model: nn.Module, x: torch.Tensor) -> float:
    """Brute force: max ||f(a) - f(b)|| / ||a - b|| over random pairs and close pairs."""
    with torch.no_grad():
        y = model(x)
        d_out = torch.cdist(y, y)
        d_in = torch.cdist(x, x)
        mask = d_in > 0
        far = float((d_out[mask] / d_in[mask]).max())
        eps = 1e-3 * torch.randn_like(x)
        near = float(((model(x + eps) - y).norm(dim=1) / eps.norm(dim=1)).max())
    return max(far, near)


def test_single_linear_upper_equals_operator_norm() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(7, 5)
    op = float(torch.linalg.matrix_norm(layer.weight.detach().double(), ord=2))
    for method in ("product", "eclipse", "eclipse-fast"):
        assert lipschitz_upper(layer, method) == pytest.approx(op, abs=1e-5)


def test_single_linear_lower_reaches_operator_norm() -> None:
    torch.manual_seed(1)
    layer = nn.Linear(12, 4)
    op = float(torch.linalg.matrix_norm(layer.weight.detach().double(), ord=2))
    lower = lipschitz_lower(layer, torch.randn(5, 12), steps=3)
    assert abs(lower - op) < 1e-3


@pytest.mark.parametrize(
    ("sizes", "act", "seed"),
    [
        ([3, 8, 8, 2], nn.ReLU, 0),
        ([3, 16, 16, 3], nn.Tanh, 1),
        ([4, 12, 1], nn.Sigmoid, 2),
        ([5, 12, 12, 12, 4], nn.ReLU, 3),
        ([2, 16, 16, 2], nn.LeakyReLU, 4),
        ([1, 16, 16, 1], nn.ReLU, 5),
    ],
)
def test_lower_below_eclipse_below_product(
    sizes: list[int], act: type[nn.Module], seed: int
) -> None:
    model = _mlp(sizes, act, seed)
    x = torch.randn(64, sizes[0], generator=torch.Generator().manual_seed(seed))
    lower = lipschitz_lower(model, x, steps=20)
    brute = _pairwise_ratio(model, 3 * x)
    eclipse = lipschitz_upper(model, "eclipse")
    fast = lipschitz_upper(model, "eclipse-fast")
    product = lipschitz_upper(model, "product")
    assert 0 < lower <= eclipse <= fast <= product * (1 + 1e-9)
    assert brute <= eclipse
    # ECLipsE must be a real improvement on these random nets, not the product in disguise.
    assert eclipse < 0.9 * product


def test_ascent_never_lowers_the_start_value() -> None:
    model = _mlp([2, 16, 16, 1], nn.Tanh, 7)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(7))
    start = lipschitz_lower(model, x, steps=0)
    assert lipschitz_lower(model, x, steps=30) >= start


def test_consecutive_linear_layers_are_multiplied_exactly() -> None:
    torch.manual_seed(3)
    a, b = nn.Linear(6, 5), nn.Linear(5, 4)
    model = nn.Sequential(nn.Flatten(), a, b)
    product = b.weight.detach().double() @ a.weight.detach().double()
    exact = float(torch.linalg.matrix_norm(product, ord=2))
    assert lipschitz_upper(model, "eclipse") == pytest.approx(exact, rel=1e-9)
    assert lipschitz_upper(model, "product") >= exact


def test_final_softmax_is_refused_by_name() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.Softmax(dim=1))
    with pytest.raises(UnsupportedModelError, match="layer 3 \\(Softmax\\)"):
        lipschitz_upper(model)


@pytest.mark.parametrize("layer", [nn.GELU(), nn.LeakyReLU(-0.5), nn.BatchNorm1d(4)])
def test_unsupported_layers_are_named(layer: nn.Module) -> None:
    model = nn.Sequential(nn.Linear(3, 4), layer, nn.Linear(4, 2))
    with pytest.raises(UnsupportedModelError, match=type(layer).__name__):
        lipschitz_upper(model, "eclipse")


def test_unknown_method_lists_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match="eclipse-fast"):
        lipschitz_upper(nn.Linear(2, 2), "lipsdp")
