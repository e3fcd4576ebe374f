"""Lipschitz bounds: exact on one Linear layer; lower <= ECLipsE <= product on MLPs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deeplimits.constructions import mlp
from deeplimits.diagnostics import lipschitz_lower, lipschitz_upper, operator_norm
from deeplimits.errors import (
    InvalidArgumentError,
    InvalidTypeError,
    UnknownNameError,
    UnsupportedModelError,
)


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


# ----------------------------------------------------------------------------- closed forms
def _chain(*layers: nn.Module | torch.Tensor) -> nn.Sequential:
    """An nn.Sequential in float64 whose Linear layers (given as weight matrices) have no bias."""
    mods: list[nn.Module] = []
    for layer in layers:
        if isinstance(layer, torch.Tensor):
            lin = nn.Linear(layer.shape[1], layer.shape[0], bias=False).double()
            with torch.no_grad():
                lin.weight.copy_(layer)
            mods.append(lin)
        else:
            mods.append(layer)
    return nn.Sequential(*mods)


_W1 = torch.tensor([[2.0]], dtype=torch.float64)
_W2 = torch.tensor([[3.0]], dtype=torch.float64)


def test_product_bound_includes_sigmoid_slope() -> None:
    # ||W1|| = 3, ||W2|| = 2, Sigmoid's slope <= 1/4: 0.25 * 3 * 2 (forgetting the slope gives 6).
    w1 = torch.tensor([[3.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    w2 = torch.tensor([[0.0, 2.0]], dtype=torch.float64)
    model = _chain(w1, nn.Sigmoid(), w2)
    assert lipschitz_upper(model, "product") == pytest.approx(1.5, rel=1e-12)


def test_eclipse_finds_the_true_constant_when_the_stretched_unit_is_unused() -> None:
    # f(x) = 2 σ(x_2): Lipschitz constant exactly 2 / 4 = 0.5; the product bound sees ||W1|| = 3.
    w1 = torch.tensor([[3.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    w2 = torch.tensor([[0.0, 2.0]], dtype=torch.float64)
    model = _chain(w1, nn.Sigmoid(), w2)
    assert lipschitz_upper(model, "eclipse") == pytest.approx(0.5, rel=1e-6)
    assert lipschitz_upper(model, "eclipse") >= 0.5 * (1 - 1e-12)
    # ECLipsE-Fast by hand: K = (1/8)² W1 W1ᵀ = diag(9, 1)/64, Λ = I / (2·9/64),
    # X = Λ − ΛKΛ = diag(16/9, 272/81), L² = λmax(W2ᵀW2 X⁻¹) = 4 · 81/272.
    assert lipschitz_upper(model, "eclipse-fast") == pytest.approx(9 / math.sqrt(68), rel=1e-12)


@pytest.mark.parametrize(
    ("act", "beta"),
    [
        (nn.ReLU(), 1.0),
        (nn.ReLU6(), 1.0),
        (nn.Tanh(), 1.0),
        (nn.Hardtanh(), 1.0),
        (nn.Softplus(), 1.0),
        (nn.Sigmoid(), 0.25),
        (nn.LeakyReLU(0.1), 1.0),
        (nn.LeakyReLU(2.0), 2.0),
        (nn.ELU(0.5), 1.0),
        (nn.Identity(), 1.0),
        (nn.Dropout(0.5).eval(), 1.0),
    ],
)
def test_scalar_chain_bound_is_weights_times_activation_slope(act: nn.Module, beta: float) -> None:
    # x -> 3 φ(2x) with φ' in [0, β]: every method gives exactly 6β in one dimension.
    model = _chain(_W1, act, _W2)
    for method in ("product", "eclipse", "eclipse-fast"):
        assert lipschitz_upper(model, method) == pytest.approx(6 * beta, rel=1e-6), method


def test_consecutive_activations_multiply_their_slopes() -> None:
    model = _chain(_W1, nn.Sigmoid(), nn.Sigmoid(), _W2)
    for method in ("product", "eclipse", "eclipse-fast"):
        assert lipschitz_upper(model, method) == pytest.approx(6 / 16, rel=1e-6), method


def test_activations_outside_the_first_and_last_linear_scale_the_bound() -> None:
    model = _chain(nn.Sigmoid(), _W1, nn.ReLU(), _W2, nn.Sigmoid())
    for method in ("product", "eclipse", "eclipse-fast"):
        assert lipschitz_upper(model, method) == pytest.approx(6 / 16, rel=1e-6), method
    # a single Linear between them: the exact norm times the outer slopes
    single = _chain(nn.Sigmoid(), _W2, nn.Tanh())
    for method in ("product", "eclipse", "eclipse-fast"):
        assert lipschitz_upper(single, method) == pytest.approx(0.75, rel=1e-12), method


def test_eclipse_on_identity_then_sum_is_the_square_root_of_the_width() -> None:
    # f(x) = Σ relu(x_i): gradient (1, ..., 1) where all are on, so L = √3 exactly.
    model = _chain(torch.eye(3, dtype=torch.float64), nn.ReLU(), torch.ones(1, 3).double())
    for method in ("product", "eclipse", "eclipse-fast"):
        assert lipschitz_upper(model, method) == pytest.approx(math.sqrt(3), rel=1e-6), method


def test_zero_hidden_weights_give_a_zero_eclipse_bound() -> None:
    model = _chain(torch.zeros(2, 2, dtype=torch.float64), nn.ReLU(), _W2.expand(1, 2))
    assert lipschitz_upper(model, "eclipse") == 0.0
    assert lipschitz_upper(model, "product") == 0.0


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (nn.Dropout(0.5), "training mode"),
        (nn.ELU(2.0), "alpha=2.0"),
        (nn.LogSoftmax(dim=1), "logit"),
    ],
)
def test_layers_without_a_slope_bound_are_refused(layer: nn.Module, message: str) -> None:
    with pytest.raises(UnsupportedModelError, match=message):
        lipschitz_upper(nn.Sequential(nn.Linear(2, 2), layer, nn.Linear(2, 1)))


def test_model_without_linear_layers_is_refused() -> None:
    with pytest.raises(UnsupportedModelError, match=r"no nn\.Linear"):
        lipschitz_upper(nn.Sequential(nn.ReLU()))


def test_lower_bound_is_the_max_over_samples_not_the_mean() -> None:
    # f(x) = 3 relu(x) + relu(-x): slope 3 at x = 1, slope 1 at x = -1 (mean 2, max 3).
    model = _chain(torch.tensor([[1.0], [-1.0]]).double(), nn.ReLU(), torch.tensor([[3.0, 1.0]]))
    x = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    assert lipschitz_lower(model, x, steps=0) == 3.0
    assert lipschitz_lower(model, x, steps=5) == 3.0  # piecewise constant: 3 is the global max
    assert lipschitz_lower(model, x[1:], steps=0) == 1.0


def test_lower_bound_is_the_spectral_not_the_frobenius_norm() -> None:
    model = _chain(torch.diag(torch.tensor([3.0, 4.0], dtype=torch.float64)))
    x = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert lipschitz_lower(model, x, steps=0) == pytest.approx(4.0, rel=1e-12)  # not 5


def test_lower_bound_with_many_outputs_finds_the_largest_singular_value() -> None:
    # 70 outputs take the power-iteration path; W = Q diag(5, 2, 1) has singular values 5, 2, 1.
    gen = torch.Generator().manual_seed(2)
    q, _ = torch.linalg.qr(torch.randn(70, 3, dtype=torch.float64, generator=gen))
    w = q @ torch.diag(torch.tensor([5.0, 2.0, 1.0], dtype=torch.float64))
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    lower = lipschitz_lower(_chain(w), x, steps=0)
    assert lower == pytest.approx(5.0, rel=1e-6)
    assert lower <= 5.0 * (1 + 1e-12)


def test_ascent_climbs_to_the_steepest_point_of_tanh() -> None:
    # tanh'(1.5) = 1 - tanh(1.5)² ≈ 0.18 at the start; the maximum, 1, is at 0.
    model = _chain(_W1 / 2, nn.Tanh())
    x = torch.tensor([[1.5]], dtype=torch.float64)
    assert lipschitz_lower(model, x, steps=0) == pytest.approx(1 - math.tanh(1.5) ** 2, rel=1e-12)
    assert lipschitz_lower(model, x, steps=30, step_size=0.1) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize(
    ("x", "kwargs"),
    [
        (torch.zeros(3), {}),
        (torch.zeros(0, 2), {}),
        (torch.tensor([[float("nan"), 0.0]]), {}),
        (torch.zeros(1, 2), {"steps": -1}),
        (torch.zeros(1, 2), {"step_size": 0.0}),
    ],
)
def test_lower_bound_rejects_bad_input(x: torch.Tensor, kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidArgumentError):
        lipschitz_lower(nn.Linear(2, 1), x, **kwargs)  # type: ignore[arg-type]


def test_lower_bound_rejects_integer_input() -> None:
    with pytest.raises(InvalidTypeError, match="floating"):
        lipschitz_lower(nn.Linear(2, 1), torch.zeros(1, 2, dtype=torch.long))


def test_lower_bound_leaves_the_global_random_state_alone() -> None:
    wide = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 70))  # power-iteration path
    narrow = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(3))
    for model in (wide, narrow):
        before = torch.get_rng_state()
        lipschitz_lower(model, x, steps=2)
        assert torch.equal(torch.get_rng_state(), before)


def test_eclipse_on_a_layer_wider_than_the_sdp_limit_uses_the_fast_multipliers() -> None:
    # 130 > SDP_MAX_WIDTH hidden ReLUs, W1 = diag(1, ..., 1, 3), W2 = (1, ..., 1). By hand:
    # K = W1 W1ᵀ / 4, λmax = 9/4, Λ = I · 2/9, X = Λ − ΛKΛ = diag(17/81, ..., 17/81, 1/9),
    # L² = W2 X⁻¹ W2ᵀ = 129 · 81/17 + 9 (the true constant is √(129 + 9)).
    d = torch.ones(130, dtype=torch.float64)
    d[-1] = 3.0
    model = _chain(torch.diag(d), nn.ReLU(), torch.ones(1, 130, dtype=torch.float64))
    expected = math.sqrt(129 * 81 / 17 + 9)
    assert lipschitz_upper(model, "eclipse") == pytest.approx(expected, rel=1e-11)
    assert lipschitz_upper(model, "eclipse-fast") == pytest.approx(expected, rel=1e-11)
    assert lipschitz_upper(model, "product") == pytest.approx(3 * math.sqrt(130), rel=1e-12)


@pytest.mark.parametrize(
    ("act", "beta"),
    [(nn.Dropout(0.0), 1.0), (nn.LeakyReLU(0.0), 1.0), (nn.ELU(0.0), 1.0), (nn.ELU(1.0), 1.0)],
)
def test_boundary_activations_are_accepted(act: nn.Module, beta: float) -> None:
    # Dropout(p=0) in training mode is the identity; slope 0 and alpha in {0, 1} are in [0, 1]
    assert act.training
    assert lipschitz_upper(_chain(_W1, act, _W2), "product") == pytest.approx(6 * beta)


_SdpAnswer = tuple[None, torch.Tensor, None, None]  # what eclipse_nn's sdp returns


# ECLipsE on x -> 3 relu(2x): m = 1/2, K = m² · 2² = 1, the fast multiplier Λ = 1/2 gives
# X = Λ - Λ² K = 1/4 and L = 3 / √X = 6. The SDP's Λ is used when X(Λ) > 0, else blended.
@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (0.6, 3 / math.sqrt(0.6 - 0.36)),  # valid: used as is
        (1.3, 10.0),  # X(1.3) < 0 up to η = 0.1; η = 0.5 gives Λ = 0.9, X = 0.09
        (3.0, 6.0),  # only η = 1, the fast multipliers, gives X > 0
        (math.nan, 6.0),  # a non-finite answer is not used
        (None, 6.0),  # the solver fails
    ],
)
def test_the_sdp_answer_is_checked_and_blended_with_the_fast_multipliers(
    monkeypatch: pytest.MonkeyPatch, answer: float | None, expected: float
) -> None:
    def fake_sdp(di: int, w: torch.Tensor, k: torch.Tensor) -> _SdpAnswer:
        assert di == 1 and k.shape == (1, 1)
        if answer is None:
            raise RuntimeError("solver failed")
        return None, torch.tensor([[answer]], dtype=torch.float64), None, None

    monkeypatch.setattr("eclipse_nn.eclipsE.sdp", fake_sdp)
    model = _chain(_W1, nn.ReLU(), _W2)
    assert lipschitz_upper(model, "eclipse") == pytest.approx(expected, rel=1e-12)


def test_layers_up_to_the_sdp_width_limit_use_the_sdp(monkeypatch: pytest.MonkeyPatch) -> None:
    # W1 = diag(1, 1, 3), W2 = (1, 1, 1): the SDP finds the true √(1 + 1 + 9), the fast
    # multipliers (Λ = 2/9 I) give √(2 · 81/17 + 9).
    monkeypatch.setattr("deeplimits.diagnostics._lipschitz.SDP_MAX_WIDTH", 3)
    w1 = torch.diag(torch.tensor([1.0, 1.0, 3.0], dtype=torch.float64))
    model = _chain(w1, nn.ReLU(), torch.ones(1, 3, dtype=torch.float64))
    assert lipschitz_upper(model, "eclipse") == pytest.approx(math.sqrt(11), rel=1e-6)
    monkeypatch.setattr("deeplimits.diagnostics._lipschitz.SDP_MAX_WIDTH", 2)
    assert lipschitz_upper(model, "eclipse") == pytest.approx(math.sqrt(2 * 81 / 17 + 9), rel=1e-11)


def _tall(n_out: int, scale: float) -> nn.Sequential:
    """Linear(2, n_out) with singular values scale · (1, 0.95)."""
    gen = torch.Generator().manual_seed(5)
    q, _ = torch.linalg.qr(torch.randn(n_out, 2, dtype=torch.float64, generator=gen))
    return _chain(scale * q @ torch.diag(torch.tensor([1.0, 0.95], dtype=torch.float64)))


@pytest.mark.parametrize("scale", [2.0, 0.5])
def test_up_to_64_outputs_the_jacobian_norm_is_exact_and_beyond_it_is_power_iteration(
    scale: float,
) -> None:
    x = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    assert lipschitz_lower(_tall(64, scale), x, steps=0) == pytest.approx(scale, rel=1e-12)
    # 30 power steps with σ2/σ1 = 0.95 approach σ1 from below, to about 1e-4
    power = lipschitz_lower(_tall(65, scale), x, steps=0)
    assert scale * (1 - 1e-3) < power < scale * (1 - 1e-9)


def _step_model(a: float) -> nn.Sequential:
    model = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 1, bias=False)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        model[0].bias.copy_(torch.tensor([-a, 100.0]))
        model[2].weight.copy_(torch.tensor([[3.0, 1.0]]))
    return model


@pytest.mark.parametrize(
    ("x", "a", "expected"),
    [
        # RMS norm of (3, -4) is √12.5, so a step is 0.1 · 3.5355 = 0.354 long: x = 3 cannot
        # reach a kink 0.42 away (the norm stays 1, no proposal is better) but reaches one 0.30 away
        ([[3.0], [-4.0]], 3.42, 1.0),
        ([[3.0], [-4.0]], 3.30, 2.0),
        # a zero input steps 0.1 · 1
        ([[0.0]], 0.15, 1.0),
        ([[0.0]], 0.05, 2.0),
    ],
)
def test_ascent_steps_are_step_size_times_the_rms_input_norm(
    x: list[list[float]], a: float, expected: float
) -> None:
    xt = torch.tensor(x, dtype=torch.float64)
    assert lipschitz_lower(_step_model(a), xt, steps=30, step_size=0.1) == expected


def test_the_model_only_sees_batches_shaped_like_the_input() -> None:
    shapes: list[tuple[int, ...]] = []
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    model.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)))
    x = torch.randn(3, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    assert lipschitz_lower(model, x, steps=3) > 0
    assert shapes and set(shapes) == {(3, 2, 3)}


def test_blending_picks_the_first_valid_mixture_in_two_dimensions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # W1 = diag(2, 1), W2 = (3, 3), ReLU: K = diag(1, 1/4), the fast Λ = I/2. A solver answer
    # Λ = 1.3 I leaves X = Λ - ΛKΛ indefinite up to η = 0.1; η = 0.5 gives Λ = 0.9 I,
    # X = diag(0.09, 0.6975) and L² = 9/0.09 + 9/0.6975.
    def fake_sdp(di: int, w: torch.Tensor, k: torch.Tensor) -> _SdpAnswer:
        return None, 1.3 * torch.eye(di, dtype=torch.float64), None, None

    monkeypatch.setattr("eclipse_nn.eclipsE.sdp", fake_sdp)
    model = _chain(
        torch.diag(torch.tensor([2.0, 1.0])).double(), nn.ReLU(), torch.full((1, 2), 3.0)
    )
    expected = math.sqrt(9 / 0.09 + 9 / 0.6975)
    assert lipschitz_upper(model, "eclipse") == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("w", [1e-5, 1e5])
def test_eclipse_is_scale_free(w: float) -> None:
    # x -> 3 relu(w x): L = 3w exactly; X = Λ - ΛKΛ is of order 1/w², which the positive-
    # definiteness check must judge relative to its own scale
    model = _chain(torch.tensor([[w]], dtype=torch.float64), nn.ReLU(), _W2)
    assert lipschitz_upper(model, "eclipse") == pytest.approx(3 * w, rel=1e-6)


# ----------------------------------------------------------------------------- beyond MLP chains
class _Skip(nn.Module):
    """x + W x with a functional tanh: not an MLP chain; Lip <= 1 + ||W||."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3, bias=False).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x + self.lin(x))


def test_models_beyond_mlp_chains_get_the_graph_bound_with_product() -> None:
    torch.manual_seed(0)
    model = _Skip()
    w = float(torch.linalg.matrix_norm(model.lin.weight.detach(), ord=2))
    # the input shape is taken from the first Linear when not given
    assert lipschitz_upper(model) == pytest.approx(1 + w, rel=1e-12)
    assert lipschitz_upper(model, input_shape=(3,)) == pytest.approx(1 + w, rel=1e-12)
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                        nn.Linear(8, 2)).double()
    conv = operator_norm(cnn[0], (1, 4, 4))
    lin = float(torch.linalg.matrix_norm(cnn[4].weight.detach(), ord=2))
    assert lipschitz_upper(cnn, input_shape=(1, 4, 4)) == pytest.approx(conv * 0.5 * lin,
                                                                        rel=1e-12)


def test_the_graph_path_refuses_what_it_cannot_bound_and_asks_for_the_input_shape() -> None:
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    with pytest.raises(InvalidArgumentError, match=r"needs input_shape.*\(3, 32, 32\)"):
        lipschitz_upper(cnn)
    with pytest.raises(InvalidArgumentError, match="check input_shape"):
        lipschitz_upper(cnn, input_shape=(3, 8, 8))
    with pytest.raises(InvalidArgumentError, match="positive ints"):
        lipschitz_upper(cnn, input_shape=(1, 0, 8))
    with pytest.raises(UnsupportedModelError, match=r"layer 1 \(BatchNorm1d\).*model\.eval\(\)"):
        lipschitz_upper(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)))
    assert math.isfinite(lipschitz_upper(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)).eval()))
    with pytest.raises(UnsupportedModelError, match="could not trace"):
        lipschitz_upper(_Branchy())
    # ECLipsE needs an MLP chain: the chain parser names the layer it cannot take
    with pytest.raises(UnsupportedModelError, match=r"layer 0 \(_Skip\)"):
        lipschitz_upper(_Skip(), "eclipse")
    with pytest.raises(InvalidTypeError, match="Module"):
        lipschitz_upper("model")  # type: ignore[arg-type]


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) if x.sum() > 0 else -self.lin(x)


class _BatchSum(nn.Module):
    """3 × the sum over the batch: on one sample (a batch of one) x -> 3x, Lipschitz 3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 3.0 * x.sum(0, keepdim=True)


def test_the_graph_bound_is_of_one_sample_and_needs_no_parameters() -> None:
    # The bound is for one input of input_shape, traced on a batch of one, where the model is
    # x -> 3x: Lipschitz 3 (on a batch of two the batched map (x1, x2) -> 3(x1 + x2) has norm
    # 3·√2). The model has no parameters: the example input is float32 on the CPU.
    assert lipschitz_upper(_BatchSum(), input_shape=(3,)) == pytest.approx(3.0, rel=1e-12)


def _jacobian_norm_at(model: nn.Module, x: torch.Tensor) -> float:
    """The largest per-sample spectral norm of the input Jacobian, by brute force."""
    norms = []
    for xb in x:
        jac = torch.autograd.functional.jacobian(lambda v: model(v[None])[0], xb)
        norms.append(float(torch.linalg.matrix_norm(jac.reshape(-1, xb.numel()), ord=2)))
    return max(norms)


@pytest.mark.parametrize("seq", [5, 10])  # 40 outputs: full Jacobian; 80: power iteration
def test_transformer_lower_bound_ascends_from_the_jacobian_norm_at_the_data(seq: int) -> None:
    # torch's fused CPU attention has no second derivative (the ascent) and no forward-mode
    # derivative (power iteration beyond 64 outputs): both used to raise torch's RuntimeError
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False).double().eval()
    x = torch.randn(2, seq, 8, dtype=torch.float64)
    at_data = _jacobian_norm_at(model, x)
    start = lipschitz_lower(model, x, steps=0)  # exact up to 64 outputs, from below beyond
    assert at_data * 0.99 <= start <= at_data * (1 + 1e-9) and (seq > 5 or start == pytest.approx(
        at_data, rel=1e-9))
    found = lipschitz_lower(model, x, steps=3)
    assert math.isfinite(found) and found >= start


class _Prototypes(nn.Module):
    """Distances to 3 fixed prototypes (an RBF-style layer): each output is 1-Lipschitz, so the
    constant is at most sqrt(3); torch has no second derivative for cdist."""

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]],
                                           dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cdist(x, self.p)


def test_a_model_without_second_derivatives_is_searched_by_random_steps_with_a_warning() -> None:
    model = _Prototypes()
    x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    start = lipschitz_lower(model, x, steps=0)
    assert start == pytest.approx(_jacobian_norm_at(model, x), rel=1e-12)
    with pytest.warns(RuntimeWarning, match="no second derivative.*_cdist_backward.*random steps"
                      ) as rec:
        found = lipschitz_lower(model, x, steps=5)
    assert len(rec) == 1 and rec[0].filename == __file__  # once, not at every step
    # still a measured Jacobian norm: at least the start, at most sqrt(3)
    assert start <= found <= math.sqrt(3) * (1 + 1e-12)
