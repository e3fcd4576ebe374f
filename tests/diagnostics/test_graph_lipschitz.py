"""lipschitz_graph: closed forms of each node rule on tiny graphs, attention's missing bound,
the ResNet against lower bounds, finite differences and flip distances."""

from __future__ import annotations

import math

import pytest
import torch
from anymodels import ResNet, TransformerClassifier, make_gru, make_resnet, randomise_batchnorm_
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from deeplimits.diagnostics import (
    certified_radius,
    flip_distance,
    lipschitz_graph,
    lipschitz_lower,
    lipschitz_upper,
)
from deeplimits.errors import InvalidArgumentError, UnsupportedModelError


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _dense_norm(f, shape: tuple[int, ...]) -> float:
    """Brute force: the spectral norm of the Jacobian of a linear map at 0 (float64)."""
    x = torch.zeros(shape, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(f, x).reshape(-1, x.numel())
    return float(torch.linalg.matrix_norm(jac, ord=2))


class _Lambda(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class _SameLinearTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.a(x)


def test_residual_add_is_the_sum_of_branch_constants_attained_by_equal_linear_branches():
    torch.manual_seed(0)
    model = _SameLinearTwice().double()
    w = float(torch.linalg.matrix_norm(model.a.weight.detach(), ord=2))
    g = lipschitz_graph(model, torch.randn(2, 3, dtype=torch.float64))
    assert g.value == pytest.approx(2 * w, rel=1e-12)
    # a linear map: its Jacobian norm is the constant, and the bound is attained
    assert _dense_norm(model, (1, 3)) == pytest.approx(g.value, rel=1e-10)


def test_eval_batchnorm_is_the_largest_gamma_over_sigma():
    bn = nn.BatchNorm2d(3).double().eval()
    with torch.no_grad():
        bn.running_var.copy_(torch.tensor([4.0, 0.25, 1.0]))
        bn.weight.copy_(torch.tensor([1.0, -0.5, 3.0]))
    expected = max(1 / math.sqrt(4 + 1e-5), 0.5 / math.sqrt(0.25 + 1e-5), 3 / math.sqrt(1 + 1e-5))
    g = lipschitz_graph(nn.Sequential(bn), torch.randn(2, 3, 2, 2, dtype=torch.float64))
    assert g.value == pytest.approx(expected, rel=1e-12)
    assert _dense_norm(lambda t: bn(t) - bn(torch.zeros_like(t)), (1, 3, 2, 2)) == pytest.approx(
        expected, rel=1e-10
    )


def test_train_mode_batchnorm_and_dropout_are_refused_with_the_fix_or_counted_when_asked():
    x = torch.randn(4, 3)
    g = lipschitz_graph(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)), x)
    assert not g.available and math.isnan(g.value)
    assert "layer 1 (BatchNorm1d)" in g.culprit and "model.eval()" in g.reason
    g = lipschitz_graph(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)), x, train_mode_ok=True)
    assert g.available and g.value == math.inf
    drop = nn.Sequential(nn.Dropout(0.75))
    assert not lipschitz_graph(drop, x).available
    assert lipschitz_graph(drop, x, train_mode_ok=True).value == pytest.approx(4.0)
    assert lipschitz_graph(drop.eval(), x).value == 1.0


@pytest.mark.parametrize(
    ("pool", "shape"),
    [
        (nn.AvgPool2d(2), (1, 1, 4, 6)),  # disjoint 2x2 windows: exactly 1/2
        (nn.AvgPool2d(3, stride=1, padding=1), (1, 1, 5, 5)),  # overlapping
        (nn.AdaptiveAvgPool2d(1), (1, 2, 3, 4)),  # global mean: 1/sqrt(12)
        (nn.AdaptiveAvgPool2d((2, 3)), (1, 1, 5, 7)),
        (nn.AvgPool1d(3, stride=3), (1, 2, 9)),
    ],
)
def test_average_pooling_bound_holds_and_is_exact_for_disjoint_windows(pool, shape):
    g = lipschitz_graph(nn.Sequential(pool), torch.randn(shape, dtype=torch.float64))
    exact = _dense_norm(pool, shape)
    assert g.value >= exact * (1 - 1e-12)
    if isinstance(pool, nn.AvgPool2d) and pool.kernel_size == 2:
        assert g.value == pytest.approx(0.5, rel=1e-12) and exact == pytest.approx(0.5)
    if isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size == 1:
        assert g.value == pytest.approx(1 / math.sqrt(12), rel=1e-12)
    if isinstance(pool, nn.AvgPool1d):
        assert g.value == pytest.approx(1 / math.sqrt(3), rel=1e-12)


def test_mean_and_sum_are_one_over_root_n_and_root_n():
    x = torch.randn(2, 3, 5, dtype=torch.float64)
    assert lipschitz_graph(_Lambda(lambda t: t.mean(dim=-1)), x).value == pytest.approx(
        1 / math.sqrt(5), rel=1e-12
    )
    assert lipschitz_graph(_Lambda(lambda t: torch.sum(t, dim=(1, 2))), x).value == pytest.approx(
        math.sqrt(15), rel=1e-12
    )


@pytest.mark.parametrize(
    ("pool", "expected"),
    [
        (nn.MaxPool2d(2), 1.0),  # disjoint windows: exact
        (nn.MaxPool2d(3, stride=1, padding=1), 3.0),  # up to 3x3 windows hold one element
        (nn.MaxPool2d(3, stride=2, padding=1), 2.0),  # up to 2x2
        (nn.AdaptiveMaxPool2d(1), 1.0),
    ],
)
def test_max_pooling_is_the_root_of_the_largest_window_count(pool, expected):
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    g = lipschitz_graph(nn.Sequential(pool), x)
    assert g.value == pytest.approx(expected, rel=1e-12)
    # never below a finite-difference quotient
    d = torch.randn_like(x) * 1e-3
    assert float((pool(x + d) - pool(x)).norm() / d.norm()) <= g.value + 1e-9


def test_concatenation_scaling_and_shape_operations():
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    cases = {
        lambda t: torch.cat([t, 2 * t], dim=1): math.sqrt(5),
        lambda t: torch.stack([t, t], dim=0): math.sqrt(2),
        lambda t: (t / 4).flatten(1).transpose(0, 1).reshape(-1): 0.25,
        lambda t: -t[:, 1:, ::2]: 1.0,
        lambda t: torch.add(t, t.permute(0, 1, 2), alpha=3): 4.0,
        lambda t: torch.relu(t) * torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64): 2.0,
        lambda t: torch.sigmoid(t).sum(-1, keepdim=True): 0.25 * 2.0,
    }
    for fn, expected in cases.items():
        assert lipschitz_graph(_Lambda(fn), x).value == pytest.approx(expected, rel=1e-12)


def test_layernorm_is_gamma_over_root_eps_globally_and_attained_at_a_constant_row():
    ln = nn.LayerNorm(4, eps=1e-2).double()
    with torch.no_grad():
        ln.weight.copy_(torch.tensor([0.5, -2.0, 1.0, 1.0]))
    g = lipschitz_graph(nn.Sequential(ln), torch.randn(3, 4, dtype=torch.float64))
    assert g.value == pytest.approx(2.0 / math.sqrt(1e-2), rel=1e-12)
    # at a constant row x_c = 0, the Jacobian is γ ⊙ P / sqrt(eps): norm max|γ|·sqrt(3/4)/...
    jac = torch.autograd.functional.jacobian(ln, torch.ones(1, 4, dtype=torch.float64))
    attained = float(torch.linalg.matrix_norm(jac.reshape(4, 4), ord=2))
    assert attained <= g.value and attained > 0.8 * g.value


def test_layernorm_local_bound_is_smaller_and_holds_inside_the_region():
    torch.manual_seed(1)
    ln = nn.LayerNorm(6).double()
    x = torch.randn(5, 6, dtype=torch.float64) * 3
    radius = 0.5
    local = lipschitz_graph(nn.Sequential(ln), x, radius=radius)
    assert local.radius == radius and "local (radius 0.5)" in local.describe()
    assert local.value < lipschitz_graph(nn.Sequential(ln), x).value / 50
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        a = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        b = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        a = x + radius * a / a.norm(dim=1, keepdim=True) * torch.rand(5, 1, generator=gen,
                                                                      dtype=torch.float64)
        b = x + radius * b / b.norm(dim=1, keepdim=True) * torch.rand(5, 1, generator=gen,
                                                                      dtype=torch.float64)
        with torch.no_grad():
            quotient = (ln(a) - ln(b)).norm(dim=1) / (a - b).norm(dim=1)
        assert float(quotient.max()) <= local.value


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.q(x) @ self.k(x).transpose(-1, -2) / 2.0
        return torch.softmax(scores, dim=-1) @ self.v(x)


class _SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mha(x, x, x)[0]


def test_attention_has_no_global_bound_and_the_node_is_named():
    x = torch.randn(2, 5, 8)
    g = lipschitz_graph(TransformerClassifier(), x)
    assert g.value == math.inf and g.available
    assert g.culprit == "layer encoder (TransformerEncoder)"
    assert "Kim, Papamakarios & Mnih, ICML 2021" in g.reason
    assert lipschitz_upper(TransformerClassifier(), input_shape=(5, 8)) == math.inf
    hand = lipschitz_graph(_Attention().double(), torch.randn(2, 3, 4, dtype=torch.float64))
    assert hand.value == math.inf and hand.culprit == "node matmul (matmul)"
    assert "not globally Lipschitz" in hand.reason
    assert hand.describe().endswith("lipschitz_graph(model, x, radius=r)")
    assert "radius=r" not in g.describe()  # attention modules have no local rule
    g = lipschitz_graph(_SelfAttention(), x)
    assert g.value == math.inf and "MultiheadAttention" in g.culprit
    with pytest.raises(UnsupportedModelError, match="Kim, Papamakarios"):
        certified_radius(TransformerClassifier(), x)


def test_a_hand_written_attention_gets_a_local_bound_that_holds_in_the_region():
    torch.manual_seed(2)
    model = _Attention().double()
    x = torch.randn(3, 3, 4, dtype=torch.float64)
    radius = 0.1
    local = lipschitz_graph(model, x, radius=radius)
    assert math.isfinite(local.value)
    gen = torch.Generator().manual_seed(3)
    for _ in range(30):
        d = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        a = x + radius * d / d.flatten(1).norm(dim=1).reshape(-1, 1, 1) / 2
        b = x - radius * d / d.flatten(1).norm(dim=1).reshape(-1, 1, 1) / 3
        with torch.no_grad():
            q = (model(a) - model(b)).flatten(1).norm(dim=1) / (a - b).flatten(1).norm(dim=1)
        assert float(q.max()) <= local.value


def test_models_without_a_rule_or_a_trace_are_unavailable_with_the_reason():
    g = lipschitz_graph(make_gru(), torch.randn(2, 6, 3))
    assert not g.available and g.culprit == "layer rnn (GRU)" and "recurrent" in g.reason

    class Branchy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x if x.sum() > 0 else -x

    g = lipschitz_graph(Branchy(), torch.randn(2, 3))
    assert not g.available and "could not trace" in g.reason and "unavailable" in g.describe()
    g = lipschitz_graph(_Lambda(lambda t: t[:, [0, 0]]), torch.randn(2, 3))
    assert not g.available and "repeat" in g.reason


def test_bad_arguments_are_refused():
    with pytest.raises(InvalidArgumentError, match="radius"):
        lipschitz_graph(nn.Linear(2, 2), torch.randn(1, 2), radius=-1.0)
    with pytest.raises(InvalidArgumentError, match="batch"):
        lipschitz_graph(nn.Linear(2, 2), torch.randn(2))
    with pytest.raises(TypeError, match="floating"):
        lipschitz_graph(nn.Linear(2, 2), torch.ones(1, 2, dtype=torch.long))
    with pytest.raises(InvalidArgumentError, match="input_shape"):
        lipschitz_upper(make_resnet().eval())


# ----------------------------------------------------------------------------- the ResNet
def _eval_resnet(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return randomise_batchnorm_(ResNet(), seed).double().eval()


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 10_000))
def test_resnet_bound_is_finite_and_above_lower_bound_and_finite_differences(seed):
    model = _eval_resnet(seed)
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    upper = lipschitz_upper(model, input_shape=(3, 8, 8))
    assert math.isfinite(upper)
    assert lipschitz_graph(model, x).value == pytest.approx(upper, rel=1e-9)
    assert upper >= lipschitz_lower(model, x, steps=3)
    gen = torch.Generator().manual_seed(seed + 1)
    for _ in range(5):
        d = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        with torch.no_grad():
            q = (model(x + d) - model(x)).flatten(1).norm(dim=1) / d.flatten(1).norm(dim=1)
        assert float(q.max()) <= upper


@settings(max_examples=4, deadline=None)
@given(st.integers(0, 10_000))
def test_resnet_certified_radius_never_exceeds_the_flip_distance(seed):
    model = _eval_resnet(seed)
    x = torch.randn(6, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    radius = certified_radius(model, x)
    flips = flip_distance(model, x)
    assert bool((radius > 0).all()) and bool((radius <= flips).all())


def test_resnet_conv_rule_uses_the_norm_on_the_actual_input_size():
    model = _eval_resnet(0)
    small = lipschitz_graph(model, torch.zeros(1, 3, 4, 4, dtype=torch.float64)).nodes
    large = lipschitz_graph(model, torch.zeros(1, 3, 8, 8, dtype=torch.float64)).nodes
    conv_small = {n.target: n.factor for n in small if n.kind == "Conv2d"}
    conv_large = {n.target: n.factor for n in large if n.kind == "Conv2d"}
    assert conv_small.keys() == conv_large.keys() and len(conv_small) == 6
    # a 3x3 conv's norm grows with the input size towards the circulant limit
    assert any(conv_large[k] > conv_small[k] * (1 + 1e-6) for k in conv_small)
    assert all(conv_large[k] >= conv_small[k] * (1 - 1e-6) for k in conv_small)


class _Constants(nn.Module):
    """Products and quotients with constants, a functional linear map and functional ops."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([[3.0, 0.0], [0.0, -1.0]], dtype=torch.float64))
        self.scale = nn.Parameter(torch.tensor([0.5, 2.0], dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.linear(x, self.w)  # ||W|| = 3
        h = h / self.scale  # max 1/|c| = 2
        h = nn.functional.leaky_relu(h, 3.0)  # slope 3
        h = h @ self.w.T  # 3
        a, b = torch.split(h, 1, dim=1)  # projections
        return torch.cat([a, nn.functional.gelu(b)], dim=1)  # GELU exact: 1.1289...


def test_constant_products_functional_linear_and_split_follow_their_rules():
    from deeplimits.diagnostics._operator_norm import _GELU_EXACT

    g = lipschitz_graph(_Constants(), torch.randn(3, 2, dtype=torch.float64))
    # cat of (a, gelu(b)) with a, b both 54-Lipschitz: sqrt(54² + (1.1289·54)²)
    assert g.value == pytest.approx(54 * math.hypot(1.0, _GELU_EXACT), rel=1e-12)
    factors = [n.factor for n in g.nodes if n.lipschitz > 0 and not math.isnan(n.factor)]
    assert factors[:4] == pytest.approx([3.0, 2.0, 3.0, 3.0], rel=1e-12)


def test_softmax_is_one_half_lipschitz_and_attains_it_at_equal_logits():
    x = torch.zeros(1, 2, dtype=torch.float64)
    for model in (nn.Sequential(nn.Softmax(dim=1)), _Lambda(lambda t: t.softmax(-1)),
                  _Lambda(lambda t: torch.softmax(t, -1))):
        assert lipschitz_graph(model, x).value == 0.5
    jac = torch.autograd.functional.jacobian(lambda t: torch.softmax(t, -1), x).reshape(2, 2)
    assert float(torch.linalg.matrix_norm(jac, ord=2)) == pytest.approx(0.5, rel=1e-12)


def test_group_norm_and_functional_dropout():
    gn = nn.GroupNorm(2, 4, eps=0.04).double()
    with torch.no_grad():
        gn.weight.copy_(torch.tensor([1.0, -3.0, 0.5, 2.0]))
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    assert lipschitz_graph(nn.Sequential(gn), x).value == pytest.approx(3.0 / 0.2, rel=1e-12)
    drop = _Lambda(lambda t: nn.functional.dropout(t, 0.5, True))
    assert not lipschitz_graph(drop, x).available
    assert lipschitz_graph(drop, x, train_mode_ok=True).value == pytest.approx(2.0)
    assert lipschitz_graph(_Lambda(lambda t: nn.functional.dropout(t, 0.5, False)), x).value == 1
    div = _Lambda(lambda t: t / t.sum())
    assert "division by an input-dependent" in lipschitz_graph(div, x).reason


def test_train_mode_statistics_and_random_state_are_left_alone():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Dropout(0.5))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(7)
    lipschitz_graph(model, torch.randn(4, 3), train_mode_ok=True)
    after_rng = torch.rand(1)
    torch.manual_seed(7)
    torch.randn(4, 3)
    assert torch.equal(after_rng, torch.rand(1))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _brute_windows_per_element(size: int, pool) -> int:
    """Windows holding element j = outputs that pick up a large value placed at j alone."""
    most = 0
    for j in range(size):
        x = torch.zeros(1, 1, size, dtype=torch.float64)
        x[0, 0, j] = 1.0
        most = max(most, int((pool(x) == 1.0).sum()))
    return most


@pytest.mark.parametrize(
    ("size", "k", "s", "p", "d", "ceil"),
    [(7, 3, 1, 1, 1, False), (9, 3, 2, 1, 1, False), (10, 4, 3, 2, 1, True), (8, 2, 1, 0, 3, False),
     (11, 3, 2, 0, 2, True), (5, 5, 5, 0, 1, False), (6, 1, 1, 0, 1, False),
     (3, 4, 2, 1, 1, True)],  # the last: ceil mode's extra window doubles up an element
)
def test_window_count_per_element_matches_brute_force(size, k, s, p, d, ceil):
    from deeplimits.diagnostics._graph_lipschitz import _windows_per_element

    pool = nn.MaxPool1d(k, s, p, d, ceil_mode=ceil)
    assert _windows_per_element(size, k, s, p, d, ceil) == _brute_windows_per_element(size, pool)
    g = lipschitz_graph(nn.Sequential(pool), torch.randn(2, 3, size, dtype=torch.float64))
    assert g.value == pytest.approx(math.sqrt(_brute_windows_per_element(size, pool)), rel=1e-12)


@pytest.mark.parametrize(("size", "out"), [(7, 3), (10, 4), (5, 5), (3, 5), (9, 2), (6, 1)])
def test_adaptive_window_count_matches_brute_force(size, out):
    from deeplimits.diagnostics._graph_lipschitz import _adaptive_windows_per_element

    pool = nn.AdaptiveMaxPool1d(out)
    assert _adaptive_windows_per_element(size, out) == _brute_windows_per_element(size, pool)


def test_two_dimensional_max_pooling_multiplies_the_counts_of_each_axis():
    # kernel (3, 2), stride (1, 2), padding (1, 0): up to 3 windows along H, 1 along W
    pool = nn.MaxPool2d((3, 2), stride=(1, 2), padding=(1, 0))
    x = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    assert lipschitz_graph(nn.Sequential(pool), x).value == pytest.approx(math.sqrt(3))
    pool = nn.AdaptiveMaxPool2d((4, None))  # H: 6 -> 4 (up to 2 windows), W kept (1)
    assert lipschitz_graph(nn.Sequential(pool), x).value == pytest.approx(math.sqrt(2))
    g = lipschitz_graph(nn.Sequential(nn.MaxPool2d(2, return_indices=True)), x)
    assert not g.available and "return_indices" in g.reason


def test_a_model_that_is_itself_a_layer_is_one_node_named_model():
    torch.manual_seed(0)
    lin = nn.Linear(3, 2).double()
    g = lipschitz_graph(lin, torch.randn(1, 3, dtype=torch.float64))
    assert g.value == pytest.approx(float(torch.linalg.matrix_norm(lin.weight.detach(), ord=2)))
    assert g.module_factors() == {"<model>": g.value}
    g = lipschitz_graph(nn.GRU(2, 3), torch.randn(4, 1, 2))
    assert g.culprit == "layer <model> (GRU)"


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 5), st.integers(1, 4), st.integers(0, 2),
       st.integers(1, 3), st.booleans())
def test_window_counts_match_brute_force_on_random_pooling_geometries(size, k, s, p, d, ceil):
    from hypothesis import assume

    from deeplimits.diagnostics._graph_lipschitz import _windows_per_element

    assume(2 * p <= k)  # torch's own limit on the padding
    pool = nn.MaxPool1d(k, s, p, d, ceil_mode=ceil)
    try:
        pool(torch.zeros(1, 1, size))
    except RuntimeError:
        assume(False)  # output would be empty
    assert _windows_per_element(size, k, s, p, d, ceil) == _brute_windows_per_element(size, pool)


def test_local_bound_of_a_square_is_exact_for_elementwise_and_matrix_products():
    x = torch.tensor([[3.0, -1.0]], dtype=torch.float64)
    # x ⊙ x on the ball of radius r: sup |2 x_i| = 2 (max|x_i| + r), attained
    g = lipschitz_graph(_Lambda(lambda t: t * t), x, radius=0.5)
    assert g.value == pytest.approx(2 * (3.0 + 0.5), rel=1e-12)
    # x xᵀ = ||x||² (a 1 x 1 matrix): gradient 2x, sup over the ball 2 (||x|| + r)
    g = lipschitz_graph(_Lambda(lambda t: t @ t.T), x, radius=0.5)
    assert g.value == pytest.approx(2 * (math.sqrt(10) + 0.5), rel=1e-12)
    # batched (1, 1, 2) slices: the largest slice's Frobenius norm
    x3 = torch.tensor([[[3.0, -1.0]], [[0.5, 0.5]]], dtype=torch.float64)
    g = lipschitz_graph(_Lambda(lambda t: t @ t.transpose(-1, -2)), x3, radius=0.25)
    assert g.value == pytest.approx(2 * (math.sqrt(10) + 0.25), rel=1e-12)
    g = lipschitz_graph(_Lambda(lambda t: t @ t.new_ones(2, 2, 2)), x3)
    assert not g.available and "not 2-D" in g.reason
    # a constant made from the input's dtype only: 0-Lipschitz, so t + c is 1-Lipschitz
    g = lipschitz_graph(_Lambda(lambda t: t + torch.ones_like(t) * t.new_ones(1)), x3)
    assert g.value == 1.0


class _Broadcasts(nn.Module):
    """Operands broadcast back to the input's shape: each repeated entry counts sqrt(k)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(1, keepdim=True)  # (batch, 1), Lipschitz 1/sqrt(n) alone
        if self.kind == "add":
            return x + m  # (I + 11ᵀ/n) x: norm 2 along ones
        if self.kind == "sub_method":
            return x.sub(m, alpha=2.0)  # (I - 2·11ᵀ/n) x: norm 1 (a reflection)
        if self.kind == "mul":
            return m * torch.tensor([[1.0, -2.0, 3.0]], dtype=x.dtype)  # rank one: |c|·1/sqrt(n)
        if self.kind == "scaled_add":
            return m * 3.0 + x  # (I + 11ᵀ) x: norm 1 + n = 4, the bound exactly
        return m / torch.full((1, 3), 0.5, dtype=x.dtype)  # "div": 2·11ᵀ/n x: norm 2


@pytest.mark.parametrize(
    ("kind", "bound"),
    # the graph bound, by hand: s_a·Lip(a) + |α|·s_b·Lip(b) with s = sqrt(3) for the (1, 1) mean
    # broadcast to (1, 3), or the constant's largest entry times s·Lip for a product
    [("add", 2.0), ("sub_method", 3.0), ("mul", 3.0), ("scaled_add", 4.0), ("div", 2.0)],
)
def test_broadcast_operands_count_their_repeated_entries(kind: str, bound: float) -> None:
    model = _Broadcasts(kind)
    x = torch.tensor([[0.3, -1.0, 2.0]], dtype=torch.float64)
    value = lipschitz_graph(model, x).value
    assert value == pytest.approx(bound, rel=1e-12)
    # never below the exact constant, the spectral norm of the (linear) map's Jacobian
    jac = torch.autograd.functional.jacobian(model, x).reshape(3, 3)
    assert value >= float(torch.linalg.matrix_norm(jac, 2)) * (1 - 1e-12)


# ------------------------------------------------------------- every spelling of each rule
def _as_dict(t: torch.Tensor) -> dict[str, torch.Tensor]:
    """A leaf function for fx (torch.fx.wrap below) whose value is a dict."""
    return {"t": t}


torch.fx.wrap("_as_dict")

_X = torch.randn(2, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
_W = torch.tensor([[1.0, 2.0, 0.0, -1.0, 0.5], [0.0, 1.0, 3.0, 0.0, 0.0],
                   [2.0, 0.0, 1.0, 1.0, -1.0], [0.0, -1.0, 0.0, 2.0, 1.0]], dtype=torch.float64)
_W3 = torch.tensor([[2.0, 1.0, 0.0], [0.0, -1.0, 1.0], [1.0, 0.0, 3.0]], dtype=torch.float64)
_C = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64).reshape(1, 3, 1)


def _norm(w: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(w, ord=2))


def _sup_derivative(fn) -> float:
    """sup |σ'| of an element-wise activation on a fine grid (its maximum lies well inside)."""
    z = torch.linspace(-12.0, 12.0, 240_001, dtype=torch.float64, requires_grad=True)
    (d,) = torch.autograd.grad(fn(z).sum(), z)
    return float(d.abs().max())


def _jacobian_norm(model, x: torch.Tensor) -> float:
    """Brute force: the spectral norm of the model's Jacobian at x (float64)."""
    out = model(x)
    outs = list(out.values()) if isinstance(out, dict) else [out]
    jac = torch.autograd.functional.jacobian(
        lambda t: torch.cat([o.double().reshape(-1) for o in (
            list(model(t).values()) if isinstance(out, dict) else [model(t)])]), x)
    assert jac.shape[0] == sum(o.numel() for o in outs)
    return float(torch.linalg.matrix_norm(jac.reshape(jac.shape[0], -1), ord=2))


def _mean1(t: torch.Tensor) -> torch.Tensor:
    return t.mean(1, keepdim=True)  # (2, 1, 4) broadcast to (2, 3, 4): sqrt(3) repeats, L 1/sqrt(3)


_F = nn.functional
_SPELLINGS = [
    # shape methods and functions: isometries or projections, 2·1 after the scaling by 2
    ("view", lambda t: t.view(2, 12), 2.0),
    ("reshape", lambda t: t.reshape(-1), 2.0),
    ("flatten", lambda t: t.flatten(), 2.0),
    ("permute", lambda t: t.permute(2, 0, 1), 2.0),
    ("transpose", lambda t: t.transpose(1, 2), 2.0),
    ("squeeze", lambda t: t.unsqueeze(0).squeeze(0), 2.0),
    ("contiguous", lambda t: t.contiguous(), 2.0),
    ("t", lambda t: t.flatten(1).t(), 2.0),
    ("split", lambda t: t.split(2, 1)[0], 2.0),
    ("chunk", lambda t: t.chunk(2, 2)[1], 2.0),
    ("unbind", lambda t: t.unbind(1)[2], 2.0),
    ("clone", lambda t: t.clone(), 2.0),
    ("float", lambda t: t.float(), 2.0),
    ("double", lambda t: t.double(), 2.0),
    ("to", lambda t: t.to(torch.float64), 2.0),
    ("movedim", lambda t: t.movedim(0, 2), 2.0),
    ("view_as", lambda t: t.view_as(t), 2.0),
    ("reshape_as", lambda t: t.flatten().reshape_as(t), 2.0),
    ("type_as", lambda t: t.type_as(t), 2.0),
    ("torch.flatten", lambda t: torch.flatten(t, 1), 2.0),
    ("torch.reshape", lambda t: torch.reshape(t, (-1,)), 2.0),
    ("torch.permute", lambda t: torch.permute(t, (2, 0, 1)), 2.0),
    ("torch.transpose", lambda t: torch.transpose(t, 0, 2), 2.0),
    ("torch.squeeze", lambda t: torch.squeeze(torch.unsqueeze(t, 0)), 2.0),
    ("torch.t", lambda t: torch.t(t[0]), 2.0),
    ("torch.movedim", lambda t: torch.movedim(t, 0, 1), 2.0),
    ("torch.split", lambda t: torch.split(t, 2, dim=2)[1], 2.0),
    ("torch.chunk", lambda t: torch.chunk(t, 3, dim=1)[2], 2.0),
    ("torch.unbind", lambda t: torch.unbind(t, 0)[1], 2.0),
    ("mT", lambda t: t.mT, 2.0),
    ("T", lambda t: t[0].T, 2.0),
    ("slice", lambda t: t[1:], 2.0),
    ("int index", lambda t: t[1], 2.0),
    ("None and Ellipsis", lambda t: t[..., None, 0], 2.0),
    ("neg", lambda t: -t, 2.0),
    ("torch.neg", lambda t: torch.neg(t), 2.0),
    ("neg method", lambda t: t.neg(), 2.0),
    ("eval dropout", lambda t: _F.dropout(t, 0.75, False), 2.0),
    ("p=0 dropout", lambda t: _F.dropout(t, 0.0, True), 2.0),
    # element-wise activations: sup|σ'|, times 2
    ("torch.relu", lambda t: torch.relu(t), 2.0),
    ("F.relu", lambda t: _F.relu(t), 2.0),
    ("relu method", lambda t: t.relu(), 2.0),
    ("torch.tanh", lambda t: torch.tanh(t), 2.0),
    ("F.tanh", lambda t: _F.tanh(t), 2.0),
    ("tanh method", lambda t: t.tanh(), 2.0),
    ("torch.sigmoid", lambda t: torch.sigmoid(t), 0.5),
    ("F.sigmoid", lambda t: _F.sigmoid(t), 0.5),
    ("sigmoid method", lambda t: t.sigmoid(), 0.5),
    ("F.relu6", lambda t: _F.relu6(t), 2.0),
    ("F.hardtanh", lambda t: _F.hardtanh(t), 2.0),
    ("F.softplus", lambda t: _F.softplus(t, 2.0), 2.0),
    ("F.elu", lambda t: _F.elu(t, 3.0), 6.0),
    ("F.leaky_relu", lambda t: _F.leaky_relu(t, 2.5), 5.0),
    ("F.leaky_relu default", lambda t: _F.leaky_relu(t), 2.0),
    ("F.silu", lambda t: _F.silu(t), 2 * _sup_derivative(_F.silu)),
    ("F.gelu", lambda t: _F.gelu(t), 2 * _sup_derivative(_F.gelu)),
    ("F.gelu tanh", lambda t: _F.gelu(t, approximate="tanh"),
     2 * _sup_derivative(lambda z: _F.gelu(z, approximate="tanh"))),
    # softmax: 1/2
    ("torch.softmax", lambda t: torch.softmax(t, -1), 1.0),
    ("F.softmax", lambda t: _F.softmax(t, -1), 1.0),
    ("softmax method", lambda t: t.softmax(-1), 1.0),
    # linear maps with non-negative entries: the Schur test, exact for disjoint windows
    ("torch.mean", lambda t: torch.mean(t, 1), 2 / math.sqrt(3)),
    ("mean method", lambda t: t.mean(1), 2 / math.sqrt(3)),
    ("torch.sum", lambda t: torch.sum(t, 2), 2 * 2.0),
    ("sum method", lambda t: t.sum(2), 2 * 2.0),
    ("F.avg_pool1d", lambda t: _F.avg_pool1d(t, 2), 2 / math.sqrt(2)),
    ("F.avg_pool2d", lambda t: _F.avg_pool2d(t, 2), 2 / 2),
    ("F.adaptive_avg_pool1d", lambda t: _F.adaptive_avg_pool1d(t, 1), 2 / 2),
    ("F.adaptive_avg_pool2d", lambda t: _F.adaptive_avg_pool2d(t, 1), 2 / math.sqrt(12)),
    # sums: s_a·L_a + |α|·s_b·L_b, the mean broadcast back (sqrt(3) repeats): exact here
    ("a + 1", lambda t: t + 1.0, 2.0),
    ("a + b", lambda t: t + _mean1(t), 2 * 2.0),
    ("torch.add", lambda t: torch.add(t, _mean1(t)), 2 * 2.0),
    ("torch.add other=, alpha=", lambda t: torch.add(t, other=_mean1(t), alpha=2), 2 * 3.0),
    ("torch.sub other=", lambda t: torch.sub(t, other=_mean1(t)), 2 * 2.0),
    ("a - b", lambda t: t - _mean1(t), 2 * 2.0),
    ("add method", lambda t: t.add(_mean1(t)), 2 * 2.0),
    ("add method other=", lambda t: t.add(other=_mean1(t)), 2 * 2.0),
    ("sub method", lambda t: t.sub(_mean1(t)), 2 * 2.0),
    ("add_", lambda t: t.clone().add_(_C), 2.0),
    ("sub_", lambda t: t.clone().sub_(_C), 2.0),
    ("add_ of an input-dependent tensor", lambda t: t.clone().add_(_mean1(t), alpha=-3),
     2 * 4.0),
    ("sub_ of an input-dependent tensor", lambda t: t.clone().sub_(t), 2 * 2.0),
    # products with a constant: max|c| · spread · L
    ("a * c", lambda t: t * _C, 2 * 3.0),
    ("c * mean", lambda t: _C * _mean1(t), 2 * 3.0),
    ("torch.mul", lambda t: torch.mul(_mean1(t), _C), 2 * 3.0),
    ("mul method", lambda t: _mean1(t).mul(_C), 2 * 3.0),
    ("mul_", lambda t: t.clone().mul_(_C), 2 * 3.0),
    ("a * 1.5", lambda t: t * -1.5, 2 * 1.5),
    ("a / c", lambda t: t / (_C + 4.0), 2 * 0.5),
    ("torch.div", lambda t: torch.div(t, 4.0), 2 * 0.25),
    ("torch.divide", lambda t: torch.divide(t, _C + 4.0), 2 * 0.5),
    ("torch.true_divide", lambda t: torch.true_divide(t, -4.0), 2 * 0.25),
    ("div method", lambda t: t.div(4.0), 2 * 0.25),
    ("div method of a mean", lambda t: _mean1(t).div(_C + 4.0), 2 * 0.5),
    ("div_", lambda t: t.clone().div_(4.0), 2 * 0.25),
    ("divide method", lambda t: t.divide(-8.0), 2 / 8),
    ("true_divide method", lambda t: t.true_divide(_C + 4.0), 2 * 0.5),
    ("divide_", lambda t: t.clone().divide_(4.0), 2 * 0.25),
    ("true_divide_", lambda t: t.clone().true_divide_(4.0), 2 * 0.25),
    # matrix products with a constant matrix: ||W||_op · L
    ("a @ W", lambda t: t @ _W, 2 * _norm(_W)),
    ("torch.matmul", lambda t: torch.matmul(t, _W), 2 * _norm(_W)),
    ("matmul method", lambda t: t.matmul(_W), 2 * _norm(_W)),
    ("W @ a", lambda t: torch.matmul(_W3, t), 2 * _norm(_W3)),
    ("W.matmul(a)", lambda t: _W3.matmul(t), 2 * _norm(_W3)),
    ("torch.mm", lambda t: torch.mm(t.flatten(0, 1), _W), 2 * _norm(_W)),
    ("F.linear", lambda t: _F.linear(t, _W.T), 2 * _norm(_W)),
    # several outputs: root sum of squares
    ("cat", lambda t: torch.cat([t, 2 * t], dim=1), 2 * math.sqrt(5)),
    ("stack", lambda t: torch.stack([t, t]), 2 * math.sqrt(2)),
    ("dict output", lambda t: {"a": 2 * t, "b": t}, 2 * math.sqrt(5)),
    ("constants from the input's shape", lambda t: t + torch.zeros_like(t) + t.new_zeros(4)
     + t.new_ones(4) + t.new_full((4,), 2.0) + t.new_empty(0).sum(), 2.0),
    ("empty constant", lambda t: t[..., :0] * torch.ones(0, dtype=torch.float64), 0.0),
]


@pytest.mark.parametrize(("spelling", "fn", "expected"), _SPELLINGS, ids=[s[0] for s in _SPELLINGS])
def test_every_spelling_of_a_rule_gives_its_closed_form_and_holds(spelling, fn, expected):
    model = _Lambda(lambda t: fn(2 * t))
    g = lipschitz_graph(model, _X, train_mode_ok=spelling.endswith("dropout"))
    assert g.available is True, g.reason
    grid = spelling in ("F.silu", "F.gelu", "F.gelu tanh")  # expected from a grid: ~1e-8
    assert g.value == pytest.approx(expected, rel=1e-7 if grid else 1e-12, abs=1e-300)
    if expected > 0:  # never below the Jacobian's norm (at the example input, and these maps)
        assert g.value >= _jacobian_norm(model, _X) * (1 - 1e-12)
    # the scaling by 2 is the first rule applied; shape-only operations count 1
    factors = [r.factor for r in g.nodes if r.op != "placeholder" and not math.isnan(r.factor)]
    assert factors[0] == 2.0
    if expected == 2.0 and "add" not in spelling and "sub" not in spelling:
        assert factors[1:] == [1.0] * (len(factors) - 1)


def test_silu_and_tanh_gelu_constants_are_computed_even_though_the_model_runs_without_grad(
    monkeypatch,
):
    # regression: their sup|σ'| needs autograd, and the run is under no_grad; with an empty cache
    # this was a raw "does not require grad" RuntimeError
    from deeplimits.diagnostics import _operator_norm

    monkeypatch.setattr(_operator_norm, "_CACHE", {})
    for module, fn in ((nn.SiLU(), _F.silu),
                       (nn.GELU(approximate="tanh"), lambda z: _F.gelu(z, approximate="tanh"))):
        g = lipschitz_graph(nn.Sequential(module), _X)
        assert g.value == pytest.approx(_sup_derivative(fn), rel=1e-7)
        assert g.value >= _jacobian_norm(module, _X)


_KEYWORD = (
    "an operand passed by keyword (input=, other=, weight=, tensors=) has no rule here; pass the "
    "operands positionally"
)


class _KeywordLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(input=x)


@pytest.mark.parametrize(
    ("model", "culprit"),
    [
        (_Lambda(lambda t: torch.relu(input=t)), "node relu (relu)"),  # was 0.0 (L is 1)
        (_Lambda(lambda t: torch.flatten(input=t)), "node flatten (flatten)"),  # was 0.0
        (_Lambda(lambda t: torch.mul(t, other=2.0)), "node mul (mul)"),  # was an IndexError
        (_Lambda(lambda t: t.mul(other=2.0)), "node mul (mul)"),
        (_Lambda(lambda t: t.matmul(other=_W)), "node matmul (matmul)"),
        (_Lambda(lambda t: _F.linear(t, weight=_W.T)), "node linear (linear)"),
        (_Lambda(lambda t: torch.div(t, other=2.0)), "node div (div)"),
        (_Lambda(lambda t: t.div(other=2.0)), "node div (div)"),
        (_KeywordLinear(), "layer lin (Linear)"),
    ],
)
def test_operands_passed_by_keyword_are_refused_not_bounded_by_zero(model, culprit):
    g = lipschitz_graph(model, _X)
    assert g.available is False and math.isnan(g.value)
    assert (g.culprit, g.reason) == (culprit, _KEYWORD)


class _Bilinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bil = nn.Bilinear(4, 4, 2).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bil(x, x)


class _Listed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ident = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ident([x, x])[0]


@pytest.mark.parametrize(
    ("model", "culprit", "reason"),
    [
        (_Lambda(lambda t: torch.cumsum(t, 1)), "node cumsum (cumsum)",
         "no Lipschitz rule for this node"),
        (_Lambda(lambda t: t / t), "node truediv (truediv)",
         "division by an input-dependent tensor"),
        (_Lambda(lambda t: t.div(t.sum())), "node div (div)",
         "division by an input-dependent tensor"),
        (_Lambda(lambda t: _F.linear(t, t[0])), "node linear (linear)",
         "F.linear with an input-dependent weight"),
        (_Lambda(lambda t: t.maximum(t / 2)), "node maximum (maximum)",
         "Tensor.maximum with several input-dependent tensors"),
        # in place: its rule would read the factor already overwritten by the product
        (_Lambda(lambda t: t.clone().mul_(t)), "node mul_ (mul_)",
         "Tensor.mul_ with several input-dependent tensors"),
        (_Lambda(lambda t: t[:, [0, 0]]), "node getitem (getitem)",
         "indexing with tensors or lists (may repeat entries)"),
        (_Lambda(lambda t: t @ t.new_ones(2, 4, 2)), "node matmul (matmul)",
         "a matrix product with a constant that is not 2-D"),
        (_Lambda(lambda t: _F.dropout(t, 0.5, True)), "node dropout (dropout)",
         "dropout in training mode; call model.eval()"),
        (_Lambda(lambda t: _as_dict(t)["t"]), "node _as_dict (_as_dict)",
         "no Lipschitz rule for this node"),
        (nn.Sequential(nn.Dropout(0.5)), "layer 0 (Dropout)",
         "Dropout in training mode makes the network random; call model.eval()"),
        (nn.Sequential(nn.Softmin(1)), "layer 0 (Softmin)", "no Lipschitz rule for Softmin"),
        (nn.Sequential(nn.LogSoftmax(-1)), "layer 0 (LogSoftmax)",
         "Lipschitz bounds here are for the logit map; remove the final LogSoftmax and pass the "
         "network that outputs logits"),
        (nn.Sequential(nn.MaxPool1d(2, return_indices=True)), "layer 0 (MaxPool1d)",
         "max pooling with return_indices"),
        (_Bilinear(), "layer bil (Bilinear)",
         "a module called with several input-dependent tensors"),
        (_Listed(), "layer ident (Identity)", "a module whose first argument is not a tensor"),
        (nn.Sequential(nn.RNN(4, 2).double()), "layer 0 (RNN)",
         "no Lipschitz rule for recurrent layers (RNN/GRU/LSTM) is implemented"),
    ],
)
def test_an_operation_without_a_rule_is_named_with_its_reason(model, culprit, reason):
    g = lipschitz_graph(model, _X)
    assert g.available is False and math.isnan(g.value)
    assert (g.culprit, g.reason) == (culprit, reason)
    assert g.describe() == f"Lipschitz bound unavailable: {culprit}: {reason}"
    # the records stop before the culprit
    assert g.nodes[0].op == "placeholder" and all(culprit.split()[1] not in (r.name, r.target)
                                                  for r in g.nodes)


def test_products_of_input_dependent_tensors_and_attention_have_no_global_bound():
    product = "a product of two tensors that both depend on the input"
    hint = "; a local bound for inputs within r of x: lipschitz_graph(model, x, radius=r)"
    for fn, culprit in ((lambda t: t.mul(t), "node mul (mul)"),
                        (lambda t: t.matmul(t.mT), "node matmul (matmul)"),
                        (lambda t: torch.mul(t, t), "node mul (mul)")):
        g = lipschitz_graph(_Lambda(fn), _X)
        assert g.available is True and g.value == math.inf and g.culprit == culprit
        assert g.reason.startswith(product)
        assert g.describe() == f"no finite global Lipschitz bound: {culprit}: {g.reason}{hint}"
        assert g.nodes[0].name == "x" and g.nodes[-1].name == culprit.split()[1]  # up to it
    q = _X.reshape(2, 1, 3, 4)
    sdpa = _Lambda(lambda t: _F.scaled_dot_product_attention(t, t, t))
    mha = _SelfAttention().double().eval()
    x8 = torch.randn(2, 3, 8, dtype=torch.float64)
    for model, x, culprit in ((sdpa, q, "node scaled_dot_product_attention "
                               "(scaled_dot_product_attention)"),
                              (mha, x8, "layer mha (MultiheadAttention)")):
        for radius in (None, 0.5):
            g = lipschitz_graph(model, x, radius=radius)
            assert g.available is True and g.value == math.inf and g.culprit == culprit
            assert g.reason == (
                "dot-product self-attention is not globally Lipschitz (Kim, Papamakarios & Mnih, "
                "ICML 2021)"
            )
            assert g.radius == radius and g.nodes[-1].lipschitz == math.inf
            scope = "global" if radius is None else "local (radius 0.5)"
            assert g.describe() == f"no finite {scope} Lipschitz bound: {culprit}: {g.reason}"


def test_the_records_name_each_node_its_operation_and_constant():
    g = lipschitz_graph(_Lambda(lambda t: torch.relu(2 * t).flatten(1)), _X)
    assert [(r.name, r.op, r.target, r.kind) for r in g.nodes] == [
        ("x", "placeholder", "x", "x"),
        ("mul", "call_function", "mul", "mul"),
        ("relu", "call_function", "relu", "relu"),
        ("flatten", "call_method", "flatten", "flatten"),
        ("output", "output", "output", "output"),
    ]
    assert [r.lipschitz for r in g.nodes] == [1.0, 2.0, 2.0, 2.0, 2.0]
    assert g.describe() == "global Lipschitz bound (fx graph, node by node) = 2"
    assert g.module_factors() == {}


class _Twice(nn.Module):
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(2 * x)


@pytest.mark.parametrize(
    ("module", "expected"),
    [(nn.Tanh(), 2.0), (nn.Sigmoid(), 0.5), (nn.Softmax(-1), 1.0), (nn.AvgPool1d(2), math.sqrt(2)),
     (nn.MaxPool1d(2), 2.0), (nn.Dropout(0.0), 2.0), (nn.Flatten(), 2.0),
     (nn.LayerNorm(4, eps=0.01, elementwise_affine=False), 2 * 10.0),  # γ = 1: 1/sqrt(eps)
     (nn.GroupNorm(3, 3, eps=0.04, affine=False), 2 * 5.0)],
)
def test_a_layer_multiplies_its_constant_into_the_bound_of_its_input(module, expected):
    model = _Twice(module.double())  # Dropout(0) in training mode: the identity, not refused
    g = lipschitz_graph(model, _X)
    assert g.value == pytest.approx(expected, rel=1e-12)
    assert g.value >= _jacobian_norm(model, _X) * (1 - 1e-12)


def test_layernorm_local_bound_is_the_smallest_variance_the_region_allows():
    ln = nn.LayerNorm(4, eps=0.01).double()
    with torch.no_grad():
        ln.weight.copy_(torch.tensor([0.5, -2.0, 1.0, 1.0]))
    x = _X * 3  # (2, 3, 4): six rows normalised over their last axis
    model = _Twice(ln)  # the rows of 2x move by at most 2r within the region
    rows = (2 * x - (2 * x).mean(-1, keepdim=True)).norm(dim=-1)  # centred norm of each row
    for radius in (0.3, 1e3):
        reach = max(float(rows.min()) - 2 * radius, 0.0)  # the smallest centred norm in reach
        expected = 2.0 * 2.0 / math.sqrt(reach**2 / 4 + 0.01)  # max|γ| · L_in / sqrt(v + eps)
        g = lipschitz_graph(model, x, radius=radius)
        assert g.value == pytest.approx(expected, rel=1e-12)
        assert g.value >= _jacobian_norm(model, x)
    assert g.value == pytest.approx(lipschitz_graph(model, x).value, rel=1e-12)  # reach 0
    gen = torch.Generator().manual_seed(5)
    for _ in range(5):  # at points of the small region, the Jacobian stays below the bound
        d = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        y = x + 0.3 * d / d.flatten(1).norm(dim=1).reshape(-1, 1, 1)
        assert _jacobian_norm(model, y) <= lipschitz_graph(model, x, radius=0.3).value


@pytest.mark.parametrize("order", ["t * m", "m * t", "t.T @ t"])
def test_local_bound_of_a_product_counts_the_broadcast_operand(order):
    x = torch.tensor([[3.0, -1.0, 0.5]], dtype=torch.float64)
    r = 0.25
    if order == "t.T @ t":  # d(xᵀx) = dxᵀx + xᵀdx: 2 (||x|| + r), no spreading in a matmul
        model = _Lambda(lambda t: t.T @ t)
        expected = 2 * (float(x.norm()) + r)
    else:  # a ⊙ b with m the row mean (L 1/sqrt(3)) repeated sqrt(3) times
        model = _Lambda((lambda t: t * t.mean(1, keepdim=True)) if order == "t * m"
                        else (lambda t: t.mean(1, keepdim=True) * t))
        m = abs(float(x.mean()))
        expected = (3.0 + r) * (1 / math.sqrt(3)) * math.sqrt(3) + (m + r / math.sqrt(3))
    g = lipschitz_graph(model, x, radius=r)
    assert g.value == pytest.approx(expected, rel=1e-12)
    gen = torch.Generator().manual_seed(4)
    for _ in range(5):
        d = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        assert _jacobian_norm(model, x + r * d / d.norm()) <= g.value


class _Scaled(nn.Module):
    def forward(self, x: torch.Tensor, scale: float = 3.0) -> torch.Tensor:
        return x * scale


class _TwoInputs(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + y


class _NoInput(nn.Module):
    def forward(self) -> torch.Tensor:
        return torch.ones(2, dtype=torch.float64)


def test_inputs_beyond_the_first_keep_their_defaults_or_are_refused():
    g = lipschitz_graph(_Scaled(), _X)  # the default is a constant: 3, not a product of inputs
    assert g.value == 3.0 and g.available is True
    g = lipschitz_graph(_TwoInputs(), _X)
    assert g.available is False and math.isnan(g.value) and g.nodes == ()
    assert g.culprit == "input y" and g.reason == (
        "the model takes more than one input without a default; bound the map of its first "
        "input by wrapping the model"
    )
    assert lipschitz_graph(_NoInput(), _X).value == 0.0  # a constant map


def test_a_model_that_cannot_be_traced_is_named_and_a_zero_radius_is_a_point():
    class Branchy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x if x.sum() > 0 else -x

    g = lipschitz_graph(Branchy(), _X, radius=0.5)
    assert g.available is False and math.isnan(g.value) and g.radius == 0.5
    assert g.culprit == "model Branchy" and g.reason.startswith("torch.fx could not trace it (")
    x = torch.tensor([[3.0, -1.0]], dtype=torch.float64)
    square = _Lambda(lambda t: t * t)
    g = lipschitz_graph(square, x, radius=0)  # the Jacobian diag(2x) at x itself: 2 max|x|
    assert g.value == pytest.approx(6.0, rel=1e-12) == _jacobian_norm(square, x)


@pytest.mark.parametrize(
    ("fn", "node"),
    [
        (lambda t: torch.div(t, 2.0, rounding_mode="floor"), "div"),
        (lambda t: t.div(2.0, rounding_mode="trunc"), "div"),
        (lambda t: t.to(torch.long).to(t.dtype), "to"),
        (lambda t: t.type_as(torch.zeros(1, dtype=torch.int32)).double(), "type_as"),
        (lambda t: (t > 0).double(), "gt"),
    ],
)
def test_rounded_integer_and_boolean_results_are_refused_as_discontinuous(fn, node):
    # each jumps where the input crosses an integer or zero: no Lipschitz constant; they were
    # bounded by 1/2 and 1 (a "certified" bound of a discontinuous map)
    g = lipschitz_graph(_Lambda(fn), torch.randn(2, 3, dtype=torch.float64))
    assert not g.available and math.isnan(g.value)
    assert node in g.culprit and "discontinuous" in g.reason


def test_functional_dropout_rules_read_p_and_training_and_scale_the_input_constant():
    lin = nn.Linear(3, 3).double()
    w = float(torch.linalg.matrix_norm(lin.weight.detach(), ord=2))
    x = torch.randn(2, 3, dtype=torch.float64)
    # p = 0 in training mode is the identity: no refusal, constant 1 (times the Linear's)
    g = lipschitz_graph(nn.Sequential(lin, _Lambda(lambda t: F.dropout(t, p=0.0, training=True))),
                        x)
    assert g.available and g.value == pytest.approx(w, rel=1e-12)
    # p = 1/2 in training mode, counted when asked: 1 / (1 - p) times the input's constant
    g = lipschitz_graph(nn.Sequential(lin, _Lambda(lambda t: F.dropout(t, p=0.5, training=True))),
                        x, train_mode_ok=True)
    assert g.value == pytest.approx(2 * w, rel=1e-12)


def test_in_place_mul_with_a_keyword_operand_is_refused_naming_the_keyword():
    g = lipschitz_graph(_Lambda(lambda t: t.clone().mul_(other=2.0)),
                        torch.randn(2, 3, dtype=torch.float64))
    assert not g.available and "keyword" in g.reason and "mul_" in g.culprit
