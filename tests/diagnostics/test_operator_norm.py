"""operator_norm and activation_lipschitz against brute force (dense matrices, dense grids)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from deeplimits.diagnostics import activation_lipschitz, operator_norm
from deeplimits.errors import InvalidArgumentError, UnsupportedModelError


@pytest.fixture(autouse=True)
def _one_thread():
    # These tests run many tiny ops; on a shared 2-core machine one thread avoids thread thrashing.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _dense_conv_matrix(conv: nn.Module, input_shape: tuple[int, ...]) -> np.ndarray:
    """The convolution (bias removed) as a dense (out_dim, in_dim) matrix, by applying it to
    every basis vector."""
    n = math.prod(input_shape)
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *input_shape)
    with torch.no_grad():
        out = conv._conv_forward(basis, conv.weight.double(), None)  # (n, *out_shape)
    return out.reshape(n, -1).T.numpy()


def test_linear_norm_is_largest_singular_value():
    torch.manual_seed(0)
    for shape in ((7, 3), (3, 7), (40, 40), (1, 5)):
        lin = nn.Linear(shape[1], shape[0])
        expected = np.linalg.svd(lin.weight.detach().double().numpy(), compute_uv=False)[0]
        assert operator_norm(lin) == pytest.approx(expected, rel=1e-12)


def test_power_iteration_matches_svd_on_linear_layer():
    torch.manual_seed(1)
    lin = nn.Linear(60, 50)
    exact = operator_norm(lin, method="exact")
    approx = operator_norm(lin, method="power")
    assert approx <= exact * (1 + 1e-12)  # power iteration approaches from below
    assert approx == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize(
    ("conv", "input_shape"),
    [
        (nn.Conv2d(2, 3, 3, padding=1), (2, 6, 6)),
        (nn.Conv2d(2, 4, 3, stride=2), (2, 7, 5)),
        (nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2), (4, 5, 5)),
        (nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular"), (1, 6, 6)),
        (nn.Conv1d(3, 2, 5, padding=2), (3, 11)),
        (nn.Conv1d(2, 2, 3, stride=3, padding_mode="reflect", padding=1), (2, 10)),
    ],
)
def test_conv_norm_equals_top_singular_value_of_dense_matrix(conv, input_shape):
    torch.manual_seed(2)
    conv.reset_parameters()
    dense = _dense_conv_matrix(conv, input_shape)
    expected = np.linalg.svd(dense, compute_uv=False)[0]
    got = operator_norm(conv, input_shape, method="power")
    assert got == pytest.approx(expected, rel=1e-6)
    dense_path = operator_norm(conv, input_shape)  # small input: exact from the dense matrix
    assert dense_path == pytest.approx(expected, rel=1e-10)
    # A leading batch size is accepted and does not change the norm.
    assert operator_norm(conv, (5, *input_shape)) == pytest.approx(dense_path, rel=1e-12)


def test_conv_norm_is_not_the_reshaped_kernel_norm():
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    kernel_norm = float(torch.linalg.matrix_norm(conv.weight.detach().reshape(1, -1), ord=2))  # = 3
    conv_norm = operator_norm(conv, (1, 16, 16), method="power")
    dense = np.linalg.svd(_dense_conv_matrix(conv, (1, 16, 16)), compute_uv=False)[0]
    assert kernel_norm == pytest.approx(3.0)
    assert conv_norm == pytest.approx(dense, rel=1e-6)
    assert conv_norm > 2.5 * kernel_norm  # close to 9, the all-ones kernel's DC gain


def test_conv_norm_needs_a_valid_input_shape():
    conv = nn.Conv2d(2, 3, 3)
    with pytest.raises(InvalidArgumentError, match="input_shape"):
        operator_norm(conv)
    with pytest.raises(InvalidArgumentError, match="channels"):
        operator_norm(conv, (3, 8, 8))
    with pytest.raises(InvalidArgumentError, match="input_shape"):
        operator_norm(conv, (2, 8))
    with pytest.raises(InvalidArgumentError, match="cannot be applied"):
        operator_norm(conv, (2, 2, 2))


def test_unsupported_layer_and_bad_options_raise():
    with pytest.raises(UnsupportedModelError, match="LSTM"):
        operator_norm(nn.LSTM(3, 3))
    with pytest.raises(InvalidArgumentError, match="method"):
        operator_norm(nn.Linear(2, 2), method="svd")
    with pytest.raises(InvalidArgumentError, match="2-D"):
        operator_norm(torch.ones(3))


def _grid_sup_derivative(module: nn.Module) -> float:
    z = torch.linspace(-40, 40, 800_001, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(module(z).sum(), z)
    return float(g.abs().max())


@pytest.mark.parametrize(
    "module",
    [
        nn.ReLU(),
        nn.Tanh(),
        nn.Sigmoid(),
        nn.GELU(),
        nn.GELU(approximate="tanh"),
        nn.SiLU(),
        nn.LeakyReLU(0.1),
        nn.LeakyReLU(3.0),
        nn.ELU(2.0),
        nn.Softplus(),
    ],
)
def test_activation_lipschitz_is_sup_of_derivative(module):
    brute = _grid_sup_derivative(module)
    got = activation_lipschitz(module)
    assert got >= brute * (1 - 1e-12)
    assert got == pytest.approx(brute, rel=1e-6)


def test_gelu_expands_gradients():
    assert activation_lipschitz(nn.GELU()) == pytest.approx(1.1289, abs=1e-4)


def test_dropout_lipschitz_depends_on_mode():
    d = nn.Dropout(0.5)
    assert activation_lipschitz(d) == pytest.approx(2.0)
    d.eval()
    assert activation_lipschitz(d) == 1.0


def test_unknown_activation_raises_naming_it():
    with pytest.raises(UnsupportedModelError, match="Softmax"):
        activation_lipschitz(nn.Softmax(dim=-1))
