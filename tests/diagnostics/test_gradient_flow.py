"""gradient_flow: the slide's bound against measured gradients, signal propagation, isometry."""

from __future__ import annotations

import math

import anymodels
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from deeplimits.diagnostics import gradient_flow
from deeplimits.errors import InvalidArgumentError
from deeplimits.remedies import (
    ResidualBlock,
    constrain_orthogonal_,
    init_he_,
    init_normal_,
    init_orthogonal_,
    residual_mlp,
)


@pytest.fixture(autouse=True)
def _one_thread():
    # These tests run many tiny ops; on a shared 2-core machine one thread avoids thread thrashing.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_ACTS = [nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.Identity, lambda: nn.LeakyReLU(0.2)]


@st.composite
def _models(draw):
    seed = draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    act = _ACTS[draw(st.integers(0, len(_ACTS) - 1))]
    scale = draw(st.sampled_from([0.1, 0.5, 1.0, 3.0]))
    batch = draw(st.integers(1, 4))
    kind = draw(st.sampled_from(["mlp", "cnn", "residual"]))
    if kind == "cnn":
        c1, c2 = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        size = draw(st.integers(4, 7))
        stride = draw(st.integers(1, 2))
        conv2 = nn.Conv2d(c1, c2, 3, stride=stride, padding=1)
        out_size = (size + 2 - 3) // stride + 1
        model = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), act(), conv2, act(), nn.Flatten(),
            nn.Linear(c2 * out_size * out_size, 3),
        )
        x = torch.randn(batch, 1, size, size)
    elif kind == "residual":
        width = draw(st.integers(1, 8))
        model = residual_mlp(3, width, 2, draw(st.integers(2, 6)), activation=act)
        x = torch.randn(batch, 3)
    else:
        widths = draw(st.lists(st.integers(1, 12), min_size=2, max_size=7))
        layers: list[nn.Module] = []
        for i in range(len(widths) - 1):
            layers += [nn.Linear(widths[i], widths[i + 1]), act()]
        model = nn.Sequential(*layers[:-1] if draw(st.booleans()) else layers)
        x = torch.randn(batch, widths[0])
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model.double(), x.double()


@settings(max_examples=30, deadline=None)
@given(_models())
def test_bound_never_below_measured_gradient_ratio(model_and_input):
    model, x = model_and_input
    report = gradient_flow(model, x)
    assert report.bound >= report.measured_ratio * (1 - 1e-9)
    assert report.jacobian_singular_values is not None
    assert report.bound >= report.jacobian_singular_values[0] * (1 - 1e-9)


def test_measured_ratio_matches_per_sample_brute_force():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    g = torch.randn(4, 3, dtype=torch.float64)
    report = gradient_flow(model, x, grad_output=g)
    brute = []
    for i in range(4):
        xi = x[i : i + 1].clone().requires_grad_(True)
        (gx,) = torch.autograd.grad(model(xi), xi, grad_outputs=g[i : i + 1])
        brute.append(float(gx.norm() / g[i].norm()))
    assert report.sample_ratios == pytest.approx(brute, rel=1e-12)
    assert report.measured_ratio == pytest.approx(max(brute), rel=1e-12)
    # The Jacobian's singular values match a dense Jacobian of sample 0.
    jac = torch.autograd.functional.jacobian(lambda z: model(z[None])[0], x[0])
    expected = np.linalg.svd(jac.numpy(), compute_uv=False)
    assert report.jacobian_singular_values == pytest.approx(expected, rel=1e-10)


def _relu_net(depth: int = 20, width: int = 512) -> nn.Sequential:
    return nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(width, width), nn.ReLU())])


@pytest.mark.slow
def test_relu_signal_halves_per_layer_with_variance_one_over_n_and_is_kept_by_he():
    # Per seed the ratio fluctuates by ~40% (random weights); 40 seeds bring the mean's
    # standard error to ~6%, so the 20% tolerance is > 3 standard errors.
    width, depth = 512, 20
    model = _relu_net(depth, width)
    normal, he = [], []
    for seed in range(40):
        torch.manual_seed(seed)
        x = torch.randn(8, width)
        inits = [(lambda m: init_normal_(m, 1 / math.sqrt(width)), normal)]
        if seed < 10:
            inits.append((init_he_, he))
        for init, out in inits:
            r = gradient_flow(init(model), x, compute_bound=False, jacobian_max_entries=0)
            out.append(r.signal_ratio)
    assert np.mean(normal) == pytest.approx(2.0**-depth, rel=0.2)
    assert 0.5 <= np.mean(he) <= 2.0


@pytest.mark.parametrize("constrained", [False, True])
def test_orthogonal_linear_network_is_an_isometry(constrained):
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(32, 32) for _ in range(12)])
    init_orthogonal_(model)
    if constrained:
        constrain_orthogonal_(model)
    report = gradient_flow(model, torch.randn(3, 32))
    sv = report.jacobian_singular_values
    assert sv is not None and len(sv) == 32
    assert np.abs(sv - 1).max() <= 1e-5
    assert report.verdict == "healthy"


def test_verdict_vanishing_for_small_init_and_healthy_for_residual():
    torch.manual_seed(0)
    deep = nn.Sequential(*[m for _ in range(10) for m in (nn.Linear(32, 32), nn.Tanh())])
    init_normal_(deep, 0.01)
    report = gradient_flow(deep, torch.randn(8, 32))
    assert report.verdict == "vanishing"
    assert report.gradient_ratio < 1e-10
    res = residual_mlp(32, 32, 32, 12)
    assert gradient_flow(res, torch.randn(8, 32)).verdict == "healthy"


def test_verdict_exploding_for_large_init():
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(32, 32) for _ in range(8)])
    init_normal_(model, 1.0)  # gain √32 per layer
    report = gradient_flow(model, torch.randn(4, 32))
    assert report.verdict == "exploding"
    assert report.gradient_ratio > 1e3


def test_per_layer_norms_follow_backprop():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    x = torch.randn(5, 4)
    g = torch.randn(5, 2)
    report = gradient_flow(model, x, grad_output=g)
    assert [lf.kind for lf in report.layers] == ["Linear", "ReLU", "Linear"]
    assert report.layers[-1].output_grad_norm == pytest.approx(float(g.norm()), rel=1e-6)
    with torch.no_grad():
        h = model[0](x)
    assert report.layers[0].output_norm == pytest.approx(float(h.norm()), rel=1e-6)
    loss = (model(x) * g).sum()
    (gw,) = torch.autograd.grad(loss, model[2].weight)
    gb = torch.autograd.grad((model(x) * g).sum(), model[2].bias)[0]
    expected = math.sqrt(float(gw.norm()) ** 2 + float(gb.norm()) ** 2)
    assert report.layers[2].param_grad_norm == pytest.approx(expected, rel=1e-6)
    assert report.layers[1].param_grad_norm is None
    assert model[0].weight.grad is None  # .grad is left untouched
    assert "verdict" in report.render()
    fig = report.plot()
    assert fig.axes[0].get_yscale() == "log"


def test_loss_fn_gives_the_same_report_as_its_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    x, labels = torch.randn(6, 4), torch.randint(0, 3, (6,))
    loss_fn = lambda y: nn.functional.cross_entropy(y, labels)  # noqa: E731
    y = model(x)
    (g,) = torch.autograd.grad(loss_fn(y), y)
    a = gradient_flow(model, x, loss_fn=loss_fn)
    b = gradient_flow(model, x, grad_output=g)
    assert a.measured_ratio == pytest.approx(b.measured_ratio, rel=1e-6)


class _Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)) * 5)


def _opnorm(lin: nn.Linear) -> float:
    return float(torch.linalg.matrix_norm(lin.weight.detach().double(), ord=2))


def test_models_beyond_a_chain_are_measured_per_module_with_the_graph_bound():
    # Formerly refused; now measured per module. Train-mode BatchNorm: no bound, and said so.
    report = gradient_flow(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)), torch.randn(4, 3))
    assert report.mode == "modules" and [lf.name for lf in report.layers] == ["0", "1"]
    assert report.bound == math.inf
    assert any("train-mode BatchNorm (1)" in n for n in report.notes)
    # A functional ReLU and a scaling by 5 between layers: the bound is 5 ||W_a|| ||W_b||.
    torch.manual_seed(0)
    model = _Functional().double()
    report = gradient_flow(model, torch.randn(4, 3, dtype=torch.float64))
    assert report.bound == pytest.approx(5 * _opnorm(model.a) * _opnorm(model.b), rel=1e-12)
    assert report.bound >= report.measured_ratio > 0
    assert [lf.lipschitz for lf in report.layers] == pytest.approx(
        [_opnorm(model.a), _opnorm(model.b)], rel=1e-12
    )


def test_bad_arguments_raise():
    model = nn.Linear(3, 2)
    with pytest.raises(InvalidArgumentError, match="grad_output"):
        gradient_flow(model, torch.randn(4, 3), grad_output=torch.randn(4, 3))
    with pytest.raises(InvalidArgumentError, match="batch"):
        gradient_flow(model, torch.randn(3))
    with pytest.raises(TypeError, match="floating"):
        gradient_flow(model, torch.ones(4, 3, dtype=torch.long))


def test_inplace_activation_gives_the_same_report():
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(5, 6), nn.ReLU(inplace=True), nn.Linear(6, 3))
    b = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    b.load_state_dict(a.state_dict())
    x, g = torch.randn(4, 5), torch.randn(4, 3)
    ra, rb = gradient_flow(a, x, grad_output=g), gradient_flow(b, x, grad_output=g)
    for la, lb in zip(ra.layers, rb.layers, strict=True):
        assert la.output_norm == pytest.approx(lb.output_norm, rel=1e-6)
        assert la.output_grad_norm == pytest.approx(lb.output_grad_norm, rel=1e-6)
    assert ra.measured_ratio == pytest.approx(rb.measured_ratio, rel=1e-6)


# ----------------------------------------------------------------------------- closed forms
def _scalar_chain(*weights: float, act: type[nn.Module] | None = None) -> nn.Sequential:
    """Linear(1, 1) layers with the given weights (no bias), float64, `act` between them."""
    layers: list[nn.Module] = []
    for i, w in enumerate(weights):
        lin = nn.Linear(1, 1, bias=False).double()
        with torch.no_grad():
            lin.weight.fill_(w)
        layers.append(lin)
        if act is not None and i < len(weights) - 1:
            layers.append(act())
    return nn.Sequential(*layers)


def test_slide_bound_includes_sigmoid_slope():
    # Linear–Sigmoid–Linear: c_1 · c_σ · c_2 = ||W1|| · 1/4 · ||W2||
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Sigmoid(), nn.Linear(6, 3)).double()
    n1 = float(torch.linalg.matrix_norm(model[0].weight.detach(), ord=2))
    n2 = float(torch.linalg.matrix_norm(model[2].weight.detach(), ord=2))
    report = gradient_flow(model, torch.randn(5, 4, dtype=torch.float64))
    assert report.bound == pytest.approx(0.25 * n1 * n2, rel=1e-12)
    assert [lf.lipschitz for lf in report.layers] == pytest.approx([n1, 0.25, n2], rel=1e-12)


def test_residual_block_lipschitz_is_one_plus_scale_times_branch():
    branch = _scalar_chain(3.0, 2.0, act=nn.Tanh)  # Lip(g) = 3 · 1 · 2
    model = nn.Sequential(_scalar_chain(1.0), ResidualBlock(branch, scale=-0.5))
    report = gradient_flow(model, torch.ones(2, 1, dtype=torch.float64))
    assert [lf.kind for lf in report.layers] == ["Linear", "ResidualBlock"]
    assert report.layers[1].lipschitz == pytest.approx(1 + 0.5 * 6, rel=1e-12)
    assert report.bound == pytest.approx(4.0, rel=1e-12)


def test_gradient_ratio_of_a_scalar_linear_chain_is_the_product_of_inner_weights():
    # y = c b a x: ∂ℓ/∂h_first = c b g and ∂ℓ/∂h_last = g, so the ratio is |c b|
    for b, c, verdict in ((0.5, 0.25, "vanishing"), (4.0, 1.0, "exploding"), (2.0, 0.5, "healthy")):
        report = gradient_flow(
            _scalar_chain(3.0, b, c),
            torch.ones(2, 1, dtype=torch.float64),
            vanishing_below=0.5,
            exploding_above=2.0,
        )
        assert report.gradient_ratio == pytest.approx(abs(b * c), rel=1e-12)
        assert report.verdict == verdict
        # every sample: ||∇x ℓ|| / ||∇y ℓ|| = |a b c|, the bound is |a| |b| |c|
        assert report.sample_ratios == pytest.approx([abs(3 * b * c)] * 2, rel=1e-12)
        assert report.bound == pytest.approx(abs(3 * b * c), rel=1e-12)


def test_verdict_thresholds_are_strict():
    # ratios exactly at a threshold are healthy (powers of two: exact in floating point)
    x = torch.ones(3, 1, dtype=torch.float64)
    at_low = gradient_flow(_scalar_chain(1.0, 0.5, 1.0), x, vanishing_below=0.5, exploding_above=2)
    assert at_low.gradient_ratio == 0.5 and at_low.verdict == "healthy"
    at_high = gradient_flow(_scalar_chain(1.0, 2.0, 1.0), x, vanishing_below=0.5, exploding_above=2)
    assert at_high.gradient_ratio == 2.0 and at_high.verdict == "healthy"


def test_one_layer_with_parameters_takes_the_verdict_on_input_over_output_gradient():
    report = gradient_flow(_scalar_chain(1e-4), torch.ones(2, 1, dtype=torch.float64))
    assert report.gradient_ratio == pytest.approx(1e-4, rel=1e-12)
    assert report.verdict == "vanishing"
    assert any("fewer than two layers" in note for note in report.notes)
    assert "fewer than two layers" in report.summary()


def test_zero_output_gradient_gives_ratio_one_and_no_sample_ratios():
    x = torch.ones(2, 1, dtype=torch.float64)
    report = gradient_flow(_scalar_chain(2.0, 3.0), x, grad_output=torch.zeros(2, 1).double())
    assert report.gradient_ratio == 1.0
    assert report.sample_ratios == ()
    assert report.measured_ratio == 0.0
    assert report.verdict == "healthy"


def test_signal_ratio_and_norms_of_a_scalar_chain():
    x = torch.tensor([[1.0], [2.0]], dtype=torch.float64)  # ||x|| = √5
    g = torch.tensor([[3.0], [4.0]], dtype=torch.float64)  # ||g|| = 5
    report = gradient_flow(_scalar_chain(2.0, 3.0), x, grad_output=g)
    assert report.input_norm == pytest.approx(math.sqrt(5), rel=1e-12)
    assert report.signal_ratio == pytest.approx(36.0, rel=1e-12)  # (6 ||x|| / ||x||)²
    assert report.output_grad_norm == pytest.approx(5.0, rel=1e-12)
    assert report.input_grad_norm == pytest.approx(30.0, rel=1e-12)
    assert report.layers[0].output_norm == pytest.approx(2 * math.sqrt(5), rel=1e-12)
    assert report.layers[0].output_grad_norm == pytest.approx(15.0, rel=1e-12)
    assert report.layers[0].param_grad_norm == pytest.approx(3 * 11, rel=1e-12)  # 3 Σ g x
    zero = gradient_flow(_scalar_chain(2.0), torch.zeros(1, 1, dtype=torch.float64))
    assert zero.signal_ratio == math.inf


def test_jacobian_is_skipped_beyond_max_entries_and_bound_on_request():
    model = _scalar_chain(2.0, 3.0, act=nn.Tanh)
    x = torch.ones(2, 1, dtype=torch.float64)
    report = gradient_flow(model, x, jacobian_max_entries=0, compute_bound=False)
    assert report.jacobian_singular_values is None
    assert math.isnan(report.bound)
    assert "Jacobian" not in report.summary()
    assert gradient_flow(model, x, jacobian_max_entries=1).jacobian_singular_values is not None


def test_bad_thresholds_and_loss_raise():
    model, x = _scalar_chain(1.0), torch.ones(2, 1, dtype=torch.float64)
    with pytest.raises(InvalidArgumentError, match="vanishing_below"):
        gradient_flow(model, x, vanishing_below=2.0, exploding_above=1.0)
    with pytest.raises(InvalidArgumentError, match="vanishing_below"):
        gradient_flow(model, x, vanishing_below=0.0)
    with pytest.raises(InvalidArgumentError, match="not both"):
        gradient_flow(model, x, grad_output=torch.ones(2, 1), loss_fn=lambda y: y.sum())
    with pytest.raises(InvalidArgumentError, match="scalar"):
        gradient_flow(model, x, loss_fn=lambda y: y)


def _chain_report():
    x = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    g = torch.tensor([[3.0], [4.0]], dtype=torch.float64)
    return gradient_flow(_scalar_chain(2.0, 3.0, act=nn.ReLU), x, grad_output=g)


def test_table_lists_every_layer_with_its_numbers():
    table = _chain_report().table()
    assert table.title == "gradient flow per layer (forward order)"
    headers = ["#", "layer", "type", "output shape", "Lip (c_l / c_σ)", "‖h‖", "‖∂ℓ/∂h‖", "‖∂ℓ/∂θ‖"]
    assert [c.header for c in table.columns] == headers
    assert [c.justify for c in table.columns] == ["right", "left", "left"] + ["right"] * 5
    # h1 = 2x = (2, 4), h2 = relu(h1), y = 3 h2; ∂ℓ/∂y = g, ∂ℓ/∂h2 = ∂ℓ/∂h1 = 3g
    rows = [list(c.cells) for c in table.columns]
    assert rows == [
        ["0", "1", "2"],
        ["0", "1", "2"],
        ["Linear", "ReLU", "Linear"],
        ["2×1", "2×1", "2×1"],
        ["2", "1", "3"],
        [f"{math.sqrt(20):.3e}", f"{math.sqrt(20):.3e}", f"{3 * math.sqrt(20):.3e}"],
        ["1.500e+01", "1.500e+01", "5.000e+00"],
        ["3.300e+01", "-", "2.200e+01"],  # 3 Σ g x = 33, Σ g h2 = 3·2 + 4·4 = 22
    ]


def test_render_is_plain_text_of_the_given_width():
    report = _chain_report()
    narrow = report.render(width=70)
    assert "\x1b" not in narrow  # no terminal colour codes
    assert max(len(line) for line in narrow.splitlines()) <= 70
    wide = report.render(width=200)
    assert max(len(line) for line in wide.splitlines()) > 70
    assert "gradient flow per layer" in wide and "‖∂ℓ/∂θ‖" in wide
    summary = report.summary().splitlines()
    assert len(summary) == 4  # bound, norms, Jacobian, verdict
    assert wide.splitlines()[-4:] == summary


def test_plot_shows_output_and_parameter_gradients_per_layer():
    report = _chain_report()
    fig = report.plot()
    ax = fig.axes[0]
    assert tuple(fig.get_size_inches()) == (6.0, 3.5)
    grads, params = ax.lines
    assert list(grads.get_xdata()) == [0, 1, 2]
    assert list(grads.get_ydata()) == pytest.approx([15.0, 15.0, 5.0])
    assert (grads.get_marker(), grads.get_linestyle()) == (".", "-")
    assert list(params.get_xdata()) == [0, 2]
    assert list(params.get_ydata()) == pytest.approx([33.0, 22.0])
    assert (params.get_marker(), params.get_linestyle()) == ("o", "None")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["‖∂ℓ/∂h_l‖", "‖∂ℓ/∂θ_l‖"]
    assert ax.get_legend().get_texts()[0].get_fontsize() == 8
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("layer (forward order)", "norm")
    assert ax.get_title() == "gradient flow: healthy"
    from matplotlib.figure import Figure

    mine = Figure()
    axes = mine.add_subplot()
    assert report.plot(ax=axes) is mine


def test_summary_lines_start_with_their_quantity():
    lines = _chain_report().summary().splitlines()
    assert [line.split(" ")[0] for line in lines] == ["bound", "‖∇x", "Jacobian", "verdict:"]


def test_layer_names_are_qualified_names_in_the_model():
    inner = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    model = nn.Sequential(inner, nn.Sequential(nn.Linear(3, 1)))
    report = gradient_flow(model, torch.randn(2, 2))
    assert [lf.name for lf in report.layers] == ["0.0", "0.1", "1.0"]
    assert [lf.name for lf in gradient_flow(nn.Linear(2, 1), torch.randn(2, 2)).layers] == [
        "<model>"
    ]


class _TwoArgs(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class _CallsTwoArgs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin, self.add = nn.Linear(2, 2), _TwoArgs()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        return self.add(h, h)


class _Scales(nn.Module):
    def __init__(self, before: bool) -> None:
        super().__init__()
        self.lin, self.before = nn.Linear(2, 2), before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(2 * x) if self.before else 2 * self.lin(x)


def test_operations_before_after_and_between_layers_enter_the_bound():
    torch.manual_seed(0)
    x = torch.randn(3, 2, dtype=torch.float64)
    two_args = _CallsTwoArgs().double()  # lin(x) + lin(x): 2 ||W||
    report = gradient_flow(two_args, x)
    assert report.mode == "modules" and report.bound == pytest.approx(
        2 * _opnorm(two_args.lin), rel=1e-12
    )
    assert any("layer add (_TwoArgs) has no chain rule" in n for n in report.notes)
    for before in (True, False):  # lin(2x) and 2 lin(x): 2 ||W|| either way
        model = _Scales(before).double()
        report = gradient_flow(model, x)
        assert report.bound == pytest.approx(2 * _opnorm(model.lin), rel=1e-12)
        # linear: the measured ratio cannot exceed 2 ||W|| and the bound is what the slide says
        assert report.measured_ratio <= report.bound * (1 + 1e-12)


def test_without_the_bound_the_module_rows_have_no_constants():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    report = gradient_flow(model, torch.randn(4, 3), compute_bound=False)
    assert math.isnan(report.bound) and all(math.isnan(lf.lipschitz) for lf in report.layers)
    assert "bound not computed (compute_bound=False)" in report.notes
    report = gradient_flow(nn.Sequential(nn.Linear(3, 3), nn.Tanh()), torch.randn(4, 3),
                           compute_bound=False)
    assert all(math.isnan(lf.lipschitz) for lf in report.layers)


def test_default_output_gradient_is_standard_normal_seeded_by_seed_and_thresholds_1e3():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    for seed in (0, 7):
        gen = torch.Generator().manual_seed(seed)
        g = torch.randn(5, 2, generator=gen, dtype=torch.float64)  # drawn in the output's dtype
        by_seed = gradient_flow(model, x, seed=seed) if seed else gradient_flow(model, x)
        given = gradient_flow(model, x, grad_output=g)
        assert by_seed.sample_ratios == given.sample_ratios
    report = gradient_flow(model, x)
    assert (report.vanishing_below, report.exploding_above) == (1e-3, 1e3)


def test_norms_are_accumulated_in_float64():
    torch.manual_seed(0)
    model = nn.Linear(200, 200)  # float32
    x = torch.randn(50, 200)
    report = gradient_flow(model, x, jacobian_max_entries=0)
    with torch.no_grad():
        expected = float(model(x).double().norm())
    assert report.layers[0].output_norm == pytest.approx(expected, rel=1e-12)


def test_an_empty_batch_is_refused():
    with pytest.raises(InvalidArgumentError, match="batch"):
        gradient_flow(nn.Linear(3, 2), torch.zeros(0, 3))



def test_loss_fn_gradient_is_counted_once_per_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 3))
    x, labels = torch.randn(6, 4), torch.randint(0, 3, (6,))
    report = gradient_flow(model, x, loss_fn=lambda y: nn.functional.cross_entropy(y, labels))
    assert report.layers[-1].output_grad_norm == pytest.approx(report.output_grad_norm, rel=1e-6)
    assert [lf.input_shape for lf in report.layers] == [(6, 4), (6, 3), (6, 3)]


def test_small_output_gradients_give_their_ratio():
    # ratio |c b| = 6 however small the gradients are
    g = torch.full((2, 1), 1e-3, dtype=torch.float64)
    report = gradient_flow(_scalar_chain(1.0, 2.0, 3.0), torch.ones(2, 1).double(), grad_output=g)
    assert report.gradient_ratio == pytest.approx(6.0, rel=1e-12)


def test_grad_output_is_cast_to_the_output_dtype():
    model = _scalar_chain(2.0, 3.0)  # float64
    g32 = torch.tensor([[0.1], [0.3]], dtype=torch.float32)
    report = gradient_flow(model, torch.ones(2, 1).double(), grad_output=g32)
    assert report.output_grad_norm == pytest.approx(float(g32.double().norm()), rel=1e-15)


def test_non_finite_input_gradients_are_refused():
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(math.inf)
    with pytest.raises(InvalidArgumentError, match="not finite"):
        gradient_flow(model, torch.ones(2, 2), grad_output=torch.ones(2, 1),
                      compute_bound=False, jacobian_max_entries=0)


def test_jacobian_limit_is_on_input_times_output_entries():
    model = nn.Linear(2, 2)
    x = torch.randn(3, 2)
    assert gradient_flow(model, x, jacobian_max_entries=3).jacobian_singular_values is None
    assert gradient_flow(model, x, jacobian_max_entries=4).jacobian_singular_values is not None


def test_equal_thresholds_are_refused():
    with pytest.raises(InvalidArgumentError, match="vanishing_below < exploding_above"):
        gradient_flow(nn.Linear(2, 1), torch.ones(2, 2), vanishing_below=1.0, exploding_above=1.0)


# ----------------------------------------------------------------------------- any nn.Module
def _param_owners_that_run(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Brute force: modules with own parameters whose forward runs, in call order."""
    ran: list[str] = []
    owners = [(n or "<model>", m) for n, m in model.named_modules()
              if any(True for _ in m.parameters(recurse=False))]
    hooks = [m.register_forward_pre_hook(lambda mod, a, n=n: ran.append(n)) for n, m in owners]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return ran


_ANY = {
    "resnet": (anymodels.make_resnet, (3, 8, 8)),
    "transformer": (anymodels.make_transformer, (5, 8)),
    "gru": (anymodels.make_gru, (6, 3)),
    "lstm": (anymodels.make_lstm, (6, 3)),
}


@settings(max_examples=8, deadline=None)
@given(st.sampled_from(sorted(_ANY)), st.integers(0, 10_000), st.booleans())
def test_any_model_gets_a_row_per_running_parameter_owner_and_a_valid_bound(kind, seed, train):
    make, shape = _ANY[kind]
    model = make().double().train(train)
    x = torch.randn(3, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    expected = _param_owners_that_run(model.eval(), x)
    model.train(train)
    report = gradient_flow(model, x, seed=seed)
    assert report.mode == "modules"
    assert [lf.name for lf in report.layers] == expected
    for lf in report.layers:
        assert math.isfinite(lf.output_norm) and math.isfinite(lf.output_grad_norm)
        assert lf.param_grad_norm is not None and math.isfinite(lf.param_grad_norm)
    assert all(math.isfinite(r) for r in report.sample_ratios)
    assert math.isfinite(report.gradient_ratio) and report.gradient_ratio > 0
    if kind == "resnet" and not train:
        assert math.isfinite(report.bound) and report.bound >= report.measured_ratio
    elif kind == "resnet":
        assert report.bound == math.inf
        assert any("train-mode BatchNorm" in n for n in report.notes)
    elif kind == "transformer":
        assert report.bound == math.inf
        assert any("Kim, Papamakarios & Mnih" in n for n in report.notes)
    else:
        assert math.isnan(report.bound)
        assert any("recurrent" in n for n in report.notes)


@settings(max_examples=5, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([0.3, 1.0, 3.0]))
def test_eval_resnet_bound_is_never_below_the_measured_ratio(seed, scale):
    torch.manual_seed(seed)
    model = anymodels.randomise_batchnorm_(anymodels.ResNet(), seed).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    report = gradient_flow(model, x, seed=seed)
    assert math.isfinite(report.bound) and report.bound >= report.measured_ratio > 0
    # the Jacobian's largest singular value is bounded too
    assert report.jacobian_singular_values[0] <= report.bound


def test_module_rows_match_autograd_gradients_of_the_module_outputs():
    torch.manual_seed(0)
    model = anymodels.make_resnet().double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    outs: dict[str, torch.Tensor] = {}
    names = ["stem.0", "blocks.1.shortcut.1", "fc"]
    hooks = [model.get_submodule(n).register_forward_hook(
        lambda m, a, o, n=n: outs.__setitem__(n, o)) for n in names]
    y = model(x)
    for h in hooks:
        h.remove()
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(5), dtype=y.dtype)
    grads = torch.autograd.grad(y, [outs[n] for n in names], grad_outputs=g)
    report = gradient_flow(model, x, seed=5)
    rows = {lf.name: lf for lf in report.layers}
    for n, gr in zip(names, grads, strict=True):
        assert rows[n].output_grad_norm == pytest.approx(float(gr.norm()), rel=1e-10)
        assert rows[n].output_norm == pytest.approx(float(outs[n].detach().norm()), rel=1e-10)
    conv = model.stem[0]
    (gw,) = torch.autograd.grad((model(x) * g).sum(), conv.weight)
    assert rows["stem.0"].param_grad_norm == pytest.approx(float(gw.norm()), rel=1e-10)
    # the graph bound's per-module constants: eval BatchNorm max |γ/σ|
    bn = model.stem[1]
    expected = float((bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)).abs().max())
    assert rows["stem.1"].lipschitz == pytest.approx(expected, rel=1e-12)


def test_dict_outputs_take_a_loss_fn_and_forward_fn_takes_several_inputs():
    torch.manual_seed(0)
    model = anymodels.make_dict_model().double()
    x = torch.randn(5, 4, dtype=torch.float64)
    report = gradient_flow(model, x, loss_fn=anymodels.dict_loss)
    assert [lf.name for lf in report.layers] == ["body", "cls", "reg"]
    xr = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(anymodels.dict_loss(model(xr)), xr)
    assert report.input_grad_norm == pytest.approx(float(gx.norm()), rel=1e-10)
    # dict of two heads: sqrt(Lip(cls∘tanh∘body)² + Lip(reg∘tanh∘body)²)
    body = float(torch.linalg.matrix_norm(model.body.weight.detach(), ord=2))
    heads = [float(torch.linalg.matrix_norm(m.weight.detach(), ord=2))
             for m in (model.cls, model.reg)]
    assert report.bound == pytest.approx(body * math.hypot(*heads), rel=1e-12)
    assert report.bound >= report.measured_ratio

    def two_inputs(m: nn.Module, t: torch.Tensor) -> torch.Tensor:
        return m(t)["logits"] + m(2 * t)["logits"]  # the model run twice: two rows per module

    report = gradient_flow(model, x, forward_fn=two_inputs)
    assert [lf.name for lf in report.layers] == ["body", "cls", "reg"] * 2
    assert math.isnan(report.bound) and any("forward_fn" in n for n in report.notes)
    assert "bound unavailable: forward_fn given, and the bound is of model(x)" in report.notes
    assert any(n.startswith("not a chain of supported layers (forward_fn given)")
               for n in report.notes)
    assert "bound unavailable: forward_fn given" in report.summary()
    with pytest.raises(TypeError, match="forward_fn"):
        gradient_flow(model, x, forward_fn=3)
    with pytest.raises(InvalidArgumentError, match="loss_fn for tuple/dict"):
        gradient_flow(model, x, grad_output=torch.ones(5, 3))


def test_train_mode_batchnorm_statistics_are_updated_once_per_call():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3, momentum=None))  # running average
    gradient_flow(model, torch.randn(4, 3))
    assert int(model[1].num_batches_tracked) == 1


def test_report_as_json_ready_dict():
    report = gradient_flow(anymodels.make_transformer(), torch.randn(2, 5, 8))
    d = report.to_dict()
    assert d["mode"] == "modules" and d["bound"] == "inf"
    assert [r["name"] for r in d["layers"]] == [lf.name for lf in report.layers]
    assert d["layers"][0]["lipschitz"] == "nan"


class _OutOfPlaceBlock(anymodels.BasicBlock):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def test_in_place_add_and_relu_after_a_module_do_not_change_its_row():
    model = anymodels.make_resnet().double().eval()
    twin = anymodels.ResNet()
    twin.blocks = nn.Sequential(_OutOfPlaceBlock(4, 4, 1), _OutOfPlaceBlock(4, 8, 2))
    twin.stem[2].inplace = False
    twin = twin.double().eval()
    twin.load_state_dict(model.state_dict())
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    rows, twin_rows = gradient_flow(model, x).layers, gradient_flow(twin, x).layers
    assert [r.name for r in rows] == [r.name for r in twin_rows]
    for a, b in zip(rows, twin_rows, strict=True):  # bn2's output is modified in place by `+=`
        assert a.output_norm == pytest.approx(b.output_norm, rel=1e-12)
        assert a.output_grad_norm == pytest.approx(b.output_grad_norm, rel=1e-12)


def test_a_tuple_output_without_a_leading_batch_dimension_is_measured_over_the_batch():
    torch.manual_seed(0)
    gru = nn.GRU(3, 4, num_layers=2, batch_first=True).double()  # returns (out, h_n)
    x = torch.randn(3, 5, 3, dtype=torch.float64)  # h_n: (layers, batch, hidden) = (2, 3, 4)
    report = gradient_flow(gru, x, loss_fn=lambda out: out[0].sum() + out[1].square().sum())
    assert [lf.name for lf in report.layers] == ["<model>"]
    assert report.layers[0].output_shape == (3, 5, 4)  # the first tensor of the tuple
    assert any("no leading batch dimension" in n for n in report.notes)
    xr = x.clone().requires_grad_(True)
    out, h = gru(xr)
    gy = torch.cat([torch.ones_like(out).flatten(), (2 * h.detach()).flatten()]).norm()
    (gx,) = torch.autograd.grad(out.sum() + h.square().sum(), xr)
    assert report.sample_ratios == pytest.approx((float(gx.norm() / gy),), rel=1e-10)
    assert math.isnan(report.bound)  # no rule for recurrent layers


def _diag34(model_lin: nn.Linear) -> None:
    with torch.no_grad():
        model_lin.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 4.0]]))
        model_lin.bias.zero_()


def test_summary_head_and_dict_numbers_of_each_mode():
    # W = diag(3, 4), ∂ℓ/∂y = (0, 1) per sample: ∇x ℓ = Wᵀ(0, 1) = (0, 4), so the measured ratio
    # is 4 = ||W||; 2·W(x) (modules mode, a scaling outside any module): 8 = 2·||W|| both.
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.5]], dtype=torch.float64)
    g = torch.tensor([[0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    lin = nn.Linear(2, 2).double()
    _diag34(lin)
    chain = gradient_flow(lin, x, grad_output=g)
    assert chain.summary().splitlines()[0] == (
        "bound Π Lip = 4.0000e+00 >= measured max_i ‖∇x_i ℓ‖/‖∇y_i ℓ‖ = 4.0000e+00"
    )
    scaled = _Scales(before=False).double()
    _diag34(scaled.lin)
    modules = gradient_flow(scaled, x, grad_output=g)
    assert modules.summary().splitlines()[0] == (
        "bound (graph Lipschitz) = 8.0000e+00 >= measured max_i ‖∇x_i ℓ‖/‖∇y_i ℓ‖ = 8.0000e+00"
    )
    d = modules.to_dict()
    assert (d["bound"], d["measured_ratio"], d["sample_ratios"]) == (8.0, 8.0, [8.0, 8.0])
    assert isinstance(d["bound"], float) and d["layers"][0]["lipschitz"] == 4.0
    unbounded = gradient_flow(scaled, x, grad_output=g, compute_bound=False)
    assert unbounded.summary().splitlines()[0] == (
        "bound unavailable (see notes); measured max_i ‖∇x_i ℓ‖/‖∇y_i ℓ‖ = 8.0000e+00"
    )


class _StoresItsOutput(nn.Module):
    """Owns a parameter and returns nothing: its result is read from an attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.tensor(2.0, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> None:
        self.out = self.s * x


class _KeywordCall(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale, self.lin = _StoresItsOutput(), nn.Linear(2, 2).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.scale(x)
        return self.lin(input=self.scale.out)  # no positional argument: the hook sees none


def test_module_rows_of_calls_without_positional_or_returned_tensors_have_empty_shapes():
    x = torch.ones(3, 2, dtype=torch.float64)
    report = gradient_flow(_KeywordCall(), x, compute_bound=False)
    assert report.mode == "modules"
    assert [lf.name for lf in report.layers] == ["scale", "lin"]
    scale, lin = report.layers
    assert (scale.input_shape, scale.output_shape, scale.output_norm) == ((3, 2), (), 0.0)
    assert (lin.input_shape, lin.output_shape) == ((), (3, 2))


class _Pair(nn.Module):
    """(w x, 2 w x) with w = 1.5: one module with two output tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.5, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.w * x, 2 * self.w * x


def test_a_module_row_sums_the_gradients_of_all_its_output_tensors():
    x = torch.ones(2, 2, dtype=torch.float64)
    # ℓ = Σ out0 + 3 Σ out1: ∂ℓ/∂out0 = 1, ∂ℓ/∂out1 = 3 on 4 entries each: √(4 + 36) = √40;
    # per sample ‖∇y ℓ‖ = √(2 + 18) = √20 and ∇x ℓ = w + 3·2w = 10.5 per entry: 10.5·√2 / √20
    report = gradient_flow(_Pair(), x, loss_fn=lambda out: out[0].sum() + 3 * out[1].sum(),
                           compute_bound=False)
    assert report.layers[0].output_grad_norm == pytest.approx(math.sqrt(40), rel=1e-12)
    assert report.sample_ratios == pytest.approx((10.5 / math.sqrt(10),) * 2, rel=1e-12)
    # a loss that uses only out0: out1's gradient is zero, ∇x ℓ = w = 1.5 per entry
    report = gradient_flow(_Pair(), x, loss_fn=lambda out: out[0].sum(), compute_bound=False)
    assert report.layers[0].output_grad_norm == pytest.approx(2.0, rel=1e-12)
    assert report.sample_ratios == pytest.approx((1.5,) * 2, rel=1e-12)
    for loss in (lambda out: out[0], lambda out: 1.0):  # not a scalar tensor
        with pytest.raises(InvalidArgumentError, match="scalar tensor"):
            gradient_flow(_Pair(), x, loss_fn=loss, compute_bound=False)


class _IgnoresInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.zeros_like(x))  # a constant: its bias


def test_a_model_that_ignores_its_input_has_zero_input_gradients():
    # a constant map: ∇x ℓ = 0 and its Jacobian is the 2 x 2 zero matrix (singular values 0, 0);
    # the Jacobian's backward used to raise "appears to not have been used in the graph"
    report = gradient_flow(_IgnoresInput(), torch.ones(2, 2, dtype=torch.float64),
                           compute_bound=False)
    assert report.mode == "modules"
    assert report.input_grad_norm == 0.0 and report.sample_ratios == (0.0, 0.0)
    assert list(report.jacobian_singular_values) == [0.0, 0.0]


class _RowSums(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2).double()
        _diag34(self.lin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).sum(1)  # shape (batch,)


def test_a_one_dimensional_output_is_measured_per_sample():
    # y_i = 1ᵀ W x_i with W = diag(3, 4): ∇x_i ℓ = g_i · (3, 4), so every sample's ratio is 5
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]], dtype=torch.float64)
    report = gradient_flow(_RowSums(), x, compute_bound=False)
    assert report.sample_ratios == pytest.approx((5.0,) * 3, rel=1e-12)
    assert not any("no leading batch dimension" in n for n in report.notes)


def test_module_rows_verdict_and_jacobian_of_a_scaled_linear_map():
    # 2·W(x) with W = diag(3, 4) on one sample: the Jacobian is diag(6, 8), singular values
    # 8 and 6; 2·2 = 4 Jacobian entries, so a limit of 4 computes it and 3 does not
    scaled = _Scales(before=False).double()
    _diag34(scaled.lin)
    x = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    report = gradient_flow(scaled, x, jacobian_max_entries=4, compute_bound=False)
    assert report.mode == "modules"
    (row,) = report.layers
    assert (row.index, row.name, row.kind) == (0, "lin", "Linear")
    assert list(report.jacobian_singular_values) == pytest.approx([8.0, 6.0], rel=1e-12)
    assert report.verdict == "healthy"  # one layer: ‖∇x‖/‖∇y‖ ∈ [6, 8] is within [1e-3, 1e3]
    assert gradient_flow(scaled, x, jacobian_max_entries=3,
                         compute_bound=False).jacobian_singular_values is None
    # a zero output gradient: no sample ratio, measured ratio 0
    zero = gradient_flow(scaled, x, grad_output=torch.zeros(1, 2, dtype=torch.float64),
                         compute_bound=False)
    assert zero.sample_ratios == () and zero.measured_ratio == 0.0


def test_a_gradient_that_vanishes_entirely_at_the_output_side_is_judged_exploding():
    """_judge with no layer owning parameters takes ‖∇x ℓ‖/‖∇y ℓ‖: with ‖∇y ℓ‖ = 0 and
    ‖∇x ℓ‖ = 0.5 > 0 the ratio is inf (exploding), and 0/0 counts as 1 (healthy)."""
    from deeplimits.diagnostics._gradient_flow import _judge

    notes: list[str] = []
    gx, zero = torch.tensor([0.3, 0.4]), torch.zeros(2)
    assert _judge([], gx, zero, 1e-3, 1e3, notes) == (math.inf, "exploding")
    assert _judge([], zero, zero, 1e-3, 1e3, notes) == (1.0, "healthy")
    assert notes == ["fewer than two layers with parameters: verdict taken on ‖∇x ℓ‖/‖∇y ℓ‖"] * 2
