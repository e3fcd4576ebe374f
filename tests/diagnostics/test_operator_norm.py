"""operator_norm and activation_lipschitz against brute force (dense matrices, dense grids)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from deeplimits.diagnostics import activation_lipschitz, operator_norm
from deeplimits.errors import InvalidArgumentError, InvalidTypeError, UnsupportedModelError


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


# ----------------------------------------------------------------------------- closed forms
def test_diagonal_weight_norm_is_its_largest_absolute_entry():
    w = torch.diag(torch.tensor([3.0, -7.0, 2.0]))
    for method in ("auto", "exact", "power"):
        assert operator_norm(w, method=method) == pytest.approx(7.0, rel=1e-9), method
    # a wide and a tall rank-one matrix u vᵀ: norm ||u|| ||v||
    u, v = torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0, 2.0])
    for m in (torch.outer(u, v), torch.outer(v, u)):
        assert operator_norm(m) == pytest.approx(15.0, rel=1e-12)
        assert operator_norm(m, method="power") == pytest.approx(15.0, rel=1e-9)


def test_zero_weights_have_norm_zero():
    assert operator_norm(torch.zeros(3, 4)) == 0.0
    assert operator_norm(torch.zeros(3, 4), method="power") == 0.0
    conv = nn.Conv2d(1, 1, 3, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
    assert operator_norm(conv, (1, 5, 5), method="power") == 0.0


def test_identity_kernel_convolution_has_norm_one():
    # a 1x1 kernel of value c is c times the identity on every input size
    conv = nn.Conv1d(1, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(-2.5)
    for method in ("auto", "power"):
        assert operator_norm(conv, (1, 9), method=method) == pytest.approx(2.5, rel=1e-9)


def test_power_iteration_stops_at_max_iter_from_below():
    torch.manual_seed(4)
    w = torch.randn(30, 20)
    exact = operator_norm(w, method="exact")
    one = operator_norm(w, method="power", max_iter=1)
    assert one < exact * (1 - 1e-3)  # one step from a random start is not converged
    assert operator_norm(w, method="power", max_iter=5000, tol=1e-12) == pytest.approx(
        exact, rel=1e-9
    )


@pytest.mark.parametrize(
    "kwargs", [{"max_iter": 0}, {"max_iter": 2.5}, {"tol": 0.0}, {"tol": "1e-9"}]
)
def test_bad_power_iteration_options_raise(kwargs):
    with pytest.raises(InvalidArgumentError, match=r"max_iter|tol"):
        operator_norm(torch.eye(2), **kwargs)


def test_bad_layers_and_weights_raise():
    with pytest.raises(InvalidTypeError, match="layer must be"):
        operator_norm([[1.0, 0.0], [0.0, 1.0]])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="NaN"):
        operator_norm(torch.tensor([[1.0, float("nan")]]))
    conv = nn.Conv1d(1, 1, 3)
    with pytest.raises(InvalidArgumentError, match="exact"):
        operator_norm(conv, (1, 8), method="exact")
    with torch.no_grad():
        conv.weight.fill_(float("inf"))
    with pytest.raises(InvalidArgumentError, match="NaN"):
        operator_norm(conv, (1, 8))


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        (nn.ReLU6(), 1.0),
        (nn.Hardtanh(), 1.0),
        (nn.Identity(), 1.0),
        (nn.Flatten(), 1.0),
        (nn.Unflatten(1, (2, 2)), 1.0),
        (nn.Sigmoid(), 0.25),
        (nn.LeakyReLU(-2.0), 2.0),
        (nn.LeakyReLU(0.5), 1.0),
        (nn.ELU(0.5), 1.0),
        (nn.ELU(3.0), 3.0),
        (nn.Dropout(0.0), 1.0),
        (nn.Dropout(0.75), 4.0),
        (nn.Dropout(1.0), math.inf),
    ],
)
def test_activation_lipschitz_closed_forms(module, expected):
    assert activation_lipschitz(module) == pytest.approx(expected, rel=1e-12)


def test_gelu_constant_is_phi_and_density_at_root_two():
    # d/dz [z Φ(z)] = Φ(z) + z φ(z), maximal at z = √2
    z = math.sqrt(2)
    phi = math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    cdf = (1 + math.erf(z / math.sqrt(2))) / 2
    assert activation_lipschitz(nn.GELU()) == pytest.approx(cdf + z * phi, rel=1e-12)


def _exact_sup_derivative(fn) -> float:
    """sup |fn'| of a smooth activation from the root of fn'' (brentq), in float64."""
    from scipy.optimize import brentq

    def derivative(z: float, order: int) -> float:
        x = torch.tensor(z, dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(fn(x), x, create_graph=True)
        if order == 1:
            return float(g.detach())
        (g2,) = torch.autograd.grad(g, x)
        return float(g2)

    zs = np.linspace(0.5, 5.0, 451)  # fn'' changes sign once on (0.5, 5) for SiLU and GELU
    second = [derivative(float(z), 2) for z in zs]
    i = next(k for k in range(len(zs) - 1) if second[k] > 0 >= second[k + 1])
    root = brentq(lambda z: derivative(z, 2), zs[i], zs[i + 1], xtol=1e-14)
    return derivative(root, 1)


@pytest.mark.parametrize(
    "module", [nn.SiLU(), nn.GELU(approximate="tanh")], ids=["silu", "gelu_tanh"]
)
def test_numerical_activation_constants_are_refined_to_machine_precision(module, monkeypatch):
    # the constant is the true sup times the documented safety factor 1 + 1e-9; a grid step of
    # 1e-4 alone would be ~1e-9 low. An empty cache makes this call compute it.
    monkeypatch.setattr("deeplimits.diagnostics._operator_norm._CACHE", {})
    expected = _exact_sup_derivative(module) * (1 + 1e-9)
    assert activation_lipschitz(module) == pytest.approx(expected, rel=1e-12)


def test_auto_method_is_exact_up_to_two_to_the_twenty_entries():
    # max_iter=1 makes power iteration visibly inexact: an exact answer proves the dense path
    gen = torch.Generator().manual_seed(8)
    w = torch.randn(1024, 1024, generator=gen)  # exactly 2^20 entries
    exact = float(np.linalg.svd(w.double().numpy(), compute_uv=False)[0])
    assert operator_norm(w, max_iter=1) == pytest.approx(exact, rel=1e-10)
    conv = nn.Conv1d(1, 1, 3, padding=1)  # 1024 inputs, 1024 outputs: 2^20 dense entries
    dense = np.linalg.svd(_dense_conv_matrix(conv, (1, 1024)), compute_uv=False)[0]
    assert operator_norm(conv, (1, 1024), max_iter=1) == pytest.approx(dense, rel=1e-10)
    # one more output: power iteration, one step from a random start is below
    assert operator_norm(conv, (1, 1025), max_iter=1) < dense * (1 - 1e-4)


def test_power_method_on_a_small_convolution_iterates():
    conv = nn.Conv2d(1, 2, 3, padding=1)
    dense = np.linalg.svd(_dense_conv_matrix(conv, (1, 5, 5)), compute_uv=False)[0]
    assert operator_norm(conv, (1, 5, 5), method="power", max_iter=1) < dense * (1 - 1e-4)


def test_conv_input_shape_errors_name_the_layer_and_the_rule():
    with pytest.raises(InvalidArgumentError, match=r"Conv1d needs input_shape \(C, L\)"):
        operator_norm(nn.Conv1d(1, 1, 3))
    with pytest.raises(InvalidArgumentError, match="Conv2d must be 3 positive ints"):
        operator_norm(nn.Conv2d(2, 1, 3), (2, 0, 8))


def test_power_iteration_of_a_one_by_one_weight_is_its_absolute_value():
    # the unit start vector is ±1, so AᵀAv has norm exactly 1 here: not to be taken for zero
    assert operator_norm(torch.ones(1, 1), method="power") == 1.0
    assert operator_norm(torch.full((1, 1), -3.0), method="power") == pytest.approx(3.0)


def test_power_iteration_leaves_the_global_random_state_alone():
    conv = nn.Conv1d(1, 1, 3)  # (its initialisation draws from the global generator)
    w = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    before = torch.get_rng_state()
    operator_norm(w, method="power")
    operator_norm(conv, (1, 2000))  # large: power iteration
    assert torch.equal(torch.get_rng_state(), before)


# ----------------------------------------------------------------------------- cached conv norms
def test_cached_conv_norm_matches_the_dense_norm_and_is_reused_until_the_weight_changes(
    monkeypatch,
):
    from deeplimits.diagnostics import _operator_norm as on

    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    shape = (2, 12, 12)  # dense matrix 288 x 432 > 2^17: power iteration
    monkeypatch.setattr(on, "EXACT_MAX_ENTRIES", 1 << 10)
    x = torch.zeros(1, *shape, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda t: conv(t) - conv(torch.zeros_like(t)), x)
    dense = float(torch.linalg.matrix_norm(jac.reshape(-1, x.numel()), ord=2))
    calls = {"n": 0}
    real = on._power_iteration_from

    def counting(*args, **kwargs):
        calls["n"] += 1
        est, v = real(*args, **kwargs)
        calls["last_start"] = args[7]
        return est, v

    monkeypatch.setattr(on, "_power_iteration_from", counting)
    first = on.conv_norm_cached(conv, (4, *shape))  # a leading batch size is ignored
    assert first == pytest.approx(dense, rel=1e-5) and first <= dense * (1 + 1e-12)
    assert calls["n"] == 1 and calls["last_start"] is None
    assert on.conv_norm_cached(conv, shape) == first and calls["n"] == 1  # cached
    with torch.no_grad():
        conv.weight.mul_(2.0)  # in place: the version counter moves
    second = on.conv_norm_cached(conv, shape)
    assert calls["n"] == 2 and calls["last_start"] is not None  # warm start
    assert second == pytest.approx(2 * dense, rel=1e-5)
    other = on.conv_norm_cached(conv, (2, 6, 6))  # another input size: its own entry
    assert calls["n"] == 3 and other < second


def test_warm_start_from_the_top_singular_vector_converges_at_once():
    from deeplimits.diagnostics._operator_norm import _power_iteration_from

    w = torch.diag(torch.tensor([3.0, 2.9, 1.0], dtype=torch.float64))
    cold = _power_iteration_from(lambda v: w @ v, lambda u: w.T @ u, (3,), w, 5, 1e-12, 0, None)
    e1 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    warm = _power_iteration_from(lambda v: w @ v, lambda u: w.T @ u, (3,), w, 5, 1e-12, 0, e1)
    assert warm[0] == pytest.approx(3.0, rel=1e-14)
    assert cold[0] < 3.0 - 1e-6  # five iterations from a random start are not enough here


def test_power_iteration_stops_when_the_estimate_changes_by_tol_relatively():
    # A = diag(2, 1) from v0 = (1, 1)/√2, by hand: ‖AᵀA v_k‖ = √(4^(2k+2) + 1)/√(4^(2k) + 1), so
    # the estimates √‖AᵀA v_k‖ are (17/2)^(1/4) = 1.70749, (257/17)^(1/4) = 1.97183,
    # (4097/257)^(1/4) = 1.998174, (65537/4097)^(1/4) = 1.999886, ... With tol = 0.03 the third
    # change (0.0263) is the first <= tol·new (0.0599): three products, value (4097/257)^(1/4).
    from deeplimits.diagnostics._operator_norm import _power_iteration_from

    w = torch.diag(torch.tensor([2.0, 1.0], dtype=torch.float64))
    calls = {"n": 0}

    def apply(v):
        calls["n"] += 1
        return w @ v

    start = torch.tensor([1.0, 1.0], dtype=torch.float64)
    est, _ = _power_iteration_from(apply, lambda u: w.T @ u, (2,), w, 50, 0.03, 0, start)
    assert est == pytest.approx((4097 / 257) ** 0.25, rel=1e-12)
    assert calls["n"] == 3
    # A = diag(1.2, 0): the first estimate from (1, 1)/√2 is (1.44²/2)^(1/4) = 1.00907, within
    # tol = 0.01 of 1 but not of the previous estimate (none: 0); the second is σ = 1.2 exactly
    # and the third repeats it: 1.2 is returned.
    w = torch.diag(torch.tensor([1.2, 0.0], dtype=torch.float64))
    est, _ = _power_iteration_from(apply, lambda u: w.T @ u, (2,), w, 50, 0.01, 0, start)
    assert est == pytest.approx(1.2, rel=1e-12)


def test_power_iteration_restarts_from_random_for_an_unusable_start():
    # A zero or wrongly shaped start cannot be iterated: the seeded random start is used, and
    # diag(3, 1, 0.5) converges to σ = 3. A float32 start is converted to the float64 of A.
    from deeplimits.diagnostics._operator_norm import _power_iteration_from

    w = torch.diag(torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64))

    def run(start):
        return _power_iteration_from(
            lambda v: w @ v, lambda u: w.T @ u, (3,), w, 200, 1e-14, 0, start
        )[0]

    assert run(torch.zeros(3, dtype=torch.float64)) == pytest.approx(3.0, rel=1e-12)
    assert run(torch.ones(2, dtype=torch.float64)) == pytest.approx(3.0, rel=1e-12)
    assert run(torch.tensor([1.0, 1.0, 1.0])) == pytest.approx(3.0, rel=1e-12)


def _circular_121() -> nn.Conv1d:
    # kernel [1, 2, 1] with circular padding: a circulant matrix with eigenvalues
    # 2 + 2·cos(2πk/L) (eigenvectors the Fourier modes), so its norm is 4 (k = 0, constant input).
    conv = nn.Conv1d(1, 1, 3, padding=1, padding_mode="circular", bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[1.0, 2.0, 1.0]]]))
    return conv


def test_cached_norm_of_a_small_conv1d_is_exact(monkeypatch):
    from deeplimits.diagnostics import _operator_norm as on

    conv = _circular_121()
    # L = 8: the dense matrix has 8·8 = 64 entries; with the limit at exactly 64 it is solved
    # exactly, so even max_iter=1 gives 4 to rounding (one power step from a random start
    # would be well below). A leading batch size (5) is ignored.
    monkeypatch.setattr(on, "EXACT_MAX_ENTRIES", 64)
    assert on.conv_norm_cached(conv, (5, 1, 8), max_iter=1) == pytest.approx(4.0, rel=1e-12)


def test_cached_norm_of_a_float32_conv_by_power_iteration(monkeypatch):
    from deeplimits.diagnostics import _operator_norm as on

    conv = _circular_121()  # float32 weights
    monkeypatch.setattr(on, "EXACT_MAX_ENTRIES", 1)  # force power iteration
    # eigenvalues 4 and 2 + √2 next: converges from below to tol 1e-6
    norm = on.conv_norm_cached(conv, (1, 8))
    assert norm == pytest.approx(4.0, rel=1e-5) and norm <= 4.0 * (1 + 1e-12)


@pytest.mark.parametrize("module", [nn.SiLU(), nn.GELU(approximate="tanh")])
def test_activation_constants_found_by_autograd_work_under_no_grad(
    module: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the cache emptied, so that the constant is computed here, inside torch.no_grad()
    from deeplimits.diagnostics import _operator_norm

    monkeypatch.setattr(_operator_norm, "_CACHE", {})
    with torch.no_grad():
        c = activation_lipschitz(module)
    x = torch.linspace(-8, 8, 100_001, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(module(x).sum(), x)
    assert float(g.abs().max()) <= c <= float(g.abs().max()) * (1 + 1e-6)
