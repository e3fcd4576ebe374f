"""count_regions, region_breakpoints, region_map: known constructions, bounds, sampling oracle."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from deeplimits.constructions import Residual, one_hidden_layer, sawtooth
from deeplimits.diagnostics import count_regions, region_breakpoints, region_map
from deeplimits.errors import InvalidArgumentError, UnknownNameError, UnsupportedModelError


def _random_mlp(widths: list[int], seed: int, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        lin = nn.Linear(a, b)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(b, a, generator=g) * math.sqrt(2 / a))
            lin.bias.copy_(torch.randn(b, generator=g) * 0.3)
        layers.append(lin)
        if i < len(widths) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def _sampled_line_count(model: nn.Module, a: np.ndarray, b: np.ndarray, n: int) -> int:
    """Independent oracle: number of activation-pattern changes between n equispaced points."""
    net = model.double()
    signs: list[torch.Tensor] = []
    hooks = [
        m.register_forward_hook(lambda _m, inp, _out: signs.append(inp[0] > 0))
        for m in net.modules()
        if isinstance(m, (nn.ReLU, nn.LeakyReLU))
    ]
    t = torch.linspace(0, 1, n, dtype=torch.float64)[:, None]  # (n, 1)
    x = torch.as_tensor(a)[None] + t * torch.as_tensor(b - a)[None]  # (n, d)
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    pattern = torch.cat(signs, dim=1)  # (n, total neurons)
    return 1 + int((pattern[1:] != pattern[:-1]).any(dim=1).sum())


# ----------------------------------------------------------------------------- known counts
@pytest.mark.parametrize("n", [1, 2, 5, 17, 40])
def test_one_hidden_layer_with_n_kinks_inside_counts_n_plus_one(n: int) -> None:
    rng = np.random.default_rng(n)
    kinks = rng.uniform(0.05, 0.95, size=n)
    model = one_hidden_layer(kinks.tolist())
    assert count_regions(model, line=([0.0], [1.0])) == n + 1
    assert count_regions(model, line=([0.0], [1.0]), kind="affine") == n + 1
    t = region_breakpoints(model, line=([0.0], [1.0]))
    np.testing.assert_allclose(t[1:-1], np.sort(kinks), atol=1e-6)


def test_kinks_outside_the_segment_do_not_count() -> None:
    model = one_hidden_layer([-0.5, 0.25, 0.75, 1.5])
    assert count_regions(model, line=([0.0], [1.0])) == 3


def test_zero_slope_change_is_an_activation_boundary_but_not_an_affine_kink() -> None:
    model = one_hidden_layer([0.2, 0.5, 0.7], [1.0, 0.0, -1.0])
    assert count_regions(model, line=(0.0, 1.0)) == 4
    assert count_regions(model, line=(0.0, 1.0), kind="affine") == 3
    np.testing.assert_allclose(
        region_breakpoints(model, line=(0.0, 1.0), kind="affine"), [0, 0.2, 0.7, 1], atol=1e-6
    )


def test_leaky_relu_with_slope_one_has_activation_regions_but_one_affine_piece() -> None:
    model = nn.Sequential(nn.Linear(1, 4), nn.LeakyReLU(1.0), nn.Linear(4, 1))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.copy_(torch.tensor([-0.1, -0.3, -0.6, -0.9]))
    assert count_regions(model, line=(0.0, 1.0)) == 5
    assert count_regions(model, line=(0.0, 1.0), kind="affine") == 1


def test_sub_segment_bounds_count_only_the_pieces_inside() -> None:
    assert count_regions(sawtooth(6), line=([0.0], [1.0]), bounds=(0.0, 0.5)) == 32
    # t below 0 extends the segment before a: the unit relu(x) now switches at x = 0 inside
    assert count_regions(sawtooth(1), line=([0.0], [1.0]), bounds=(-1.0, 2.0)) == 3
    assert count_regions(sawtooth(1), line=([0.0], [1.0]), bounds=(0.6, 2.0)) == 1


def test_two_axis_aligned_units_cut_the_unit_square_in_four() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2))
        model[0].bias.fill_(-0.5)
    plane = ([0.0, 0.0], [1.0, 0.0], [0.0, 1.0])
    assert count_regions(model, plane=plane) == 4
    assert count_regions(model, plane=plane, bounds=((0.0, 0.4), (0.0, 1.0))) == 2
    # plane in 3-D input space through points whose coordinates differ from (u, v)
    model3 = nn.Sequential(nn.Linear(3, 1), nn.ReLU())
    with torch.no_grad():
        model3[0].weight.copy_(torch.tensor([[0.0, 0.0, 1.0]]))
        model3[0].bias.fill_(-1.0)  # z = 1 cuts the plane z = 2u at u = 1/2
    assert count_regions(model3, plane=([0, 0, 0], [1, 0, 2], [0, 1, 0])) == 2


# ----------------------------------------------------------------------------- upper bounds
@pytest.mark.parametrize("seed", range(6))
def test_line_count_never_exceeds_product_of_widths_plus_one(seed: int) -> None:
    rng = np.random.default_rng(seed)
    widths = [3, *rng.integers(2, 6, size=int(rng.integers(1, 4))).tolist(), 1]
    model = _random_mlp(widths, seed)
    a, b = rng.normal(size=3) * 3, rng.normal(size=3) * 3
    bound = math.prod(w + 1 for w in widths[1:-1])
    count = count_regions(model, line=(a, b))
    assert 1 <= count_regions(model, line=(a, b), kind="affine") <= count <= bound


@pytest.mark.parametrize("n", [1, 3, 8, 20])
def test_single_layer_plane_count_never_exceeds_arrangement_bound(n: int) -> None:
    model = _random_mlp([2, n, 1], seed=n)
    w = model[0].weight.detach().double().numpy()  # (n, 2): unit i switches on w_i . x = -b_i
    b = model[0].bias.detach().double().numpy()
    crossings = [np.linalg.solve(w[[i, j]], -b[[i, j]]) for i in range(n) for j in range(i + 1, n)]
    reach = max([1.0, *(float(np.abs(c).max()) for c in crossings)])
    bound = 1 + n + n * (n - 1) // 2
    for scale in (0.5, 3.0, 2 * reach):
        plane = ([-scale, -scale], [scale, -scale], [-scale, scale])
        count = count_regions(model, plane=plane)
        assert count <= bound
    # a window holding every crossing of the n lines (in general position) reaches the bound
    assert count == bound


# ----------------------------------------------------------------------------- sampling oracle
@pytest.mark.parametrize(
    ("widths", "act"),
    [([2, 8, 8, 1], nn.ReLU), ([3, 16, 16, 16, 1], nn.ReLU), ([2, 10, 10, 1], nn.LeakyReLU)],
)
def test_line_count_agrees_with_dense_sampling_of_the_activation_pattern(
    widths: list[int], act: type[nn.Module]
) -> None:
    exact_matches = 0
    for seed in range(4):
        model = _random_mlp(widths, seed, act)
        rng = np.random.default_rng(100 + seed)
        a, b = rng.normal(size=widths[0]) * 2, rng.normal(size=widths[0]) * 2
        exact = count_regions(model, line=(a, b))
        t = region_breakpoints(model, line=(a, b))
        n = 200_001
        sampled = _sampled_line_count(model, a, b, n)
        # sampling can only miss regions that fall between two samples
        assert sampled <= exact
        if np.diff(t).min() > 2.0 / (n - 1):
            assert sampled == exact
            exact_matches += 1
    assert exact_matches >= 2  # the equality branch is really exercised


def test_residual_block_count_agrees_with_sampling() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Linear(2, 6),
        Residual(nn.Sequential(nn.ReLU(), nn.Linear(6, 6))),
        Residual(nn.Sequential(nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6))),
        nn.ReLU(),
        nn.Linear(6, 1),
    )
    a, b = np.array([-3.0, -2.0]), np.array([3.0, 2.5])
    exact = count_regions(model, line=(a, b))
    t = region_breakpoints(model, line=(a, b))
    assert exact >= 3
    assert np.diff(t).min() > 1e-4
    assert _sampled_line_count(model, a, b, 100_001) == exact


def test_plane_count_is_at_least_the_number_of_sampled_patterns() -> None:
    # each activation pattern occupies one convex region, so distinct patterns <= regions
    model = _random_mlp([2, 12, 12, 1], seed=7)
    exact = count_regions(model, plane=([-2, -2], [2, -2], [-2, 2]))
    u = torch.linspace(0, 1, 400, dtype=torch.float64)
    uu, vv = torch.meshgrid(u, u, indexing="ij")
    x = torch.stack([-2 + 4 * uu.ravel(), -2 + 4 * vv.ravel()], 1)  # (160000, 2)
    net = model.double()
    h1 = net[1](net[0](x))
    pattern = torch.cat([net[0](x) > 0, net[2](h1) > 0], 1)
    patterns = len(torch.unique(pattern, dim=0))
    assert patterns <= exact <= patterns + exact // 5
    assert count_regions(model, plane=([-2, -2], [2, -2], [-2, 2]), kind="affine") <= exact


# ----------------------------------------------------------------------------- region map
def test_region_map_draws_one_polygon_per_region_on_the_given_axes() -> None:
    model = _random_mlp([2, 6, 6, 1], seed=1)
    plane = ([-1, -1], [1, -1], [-1, 1])
    fig = Figure()
    ax = fig.add_subplot()
    assert region_map(model, plane=plane, ax=ax) is fig
    polys = ax.collections[0]
    assert len(polys.get_paths()) == count_regions(model, plane=plane)
    assert str(count_regions(model, plane=plane)) in ax.get_title()
    fig2 = region_map(model, plane=plane, kind="affine")
    assert isinstance(fig2, Figure)


# ----------------------------------------------------------------------------- errors
def test_smooth_activation_is_rejected_naming_the_layer() -> None:
    model = nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1))
    with pytest.raises(UnsupportedModelError, match=r"model\[1\] \(Tanh\)"):
        count_regions(model, line=(0.0, 1.0))


def test_bad_models_are_rejected() -> None:
    with pytest.raises(UnsupportedModelError, match="expects 3 inputs but receives 4"):
        count_regions(nn.Sequential(nn.Linear(1, 4), nn.Linear(3, 1)), line=(0.0, 1.0))
    with pytest.raises(UnsupportedModelError, match=r"no nn\.Linear"):
        count_regions(nn.Sequential(nn.ReLU()), line=(0.0, 1.0))
    with pytest.raises(UnsupportedModelError, match="residual"):
        count_regions(nn.Sequential(nn.Linear(1, 2), Residual(nn.Linear(2, 3))), line=(0.0, 1.0))
    with pytest.raises(UnsupportedModelError, match="Conv1d"):
        count_regions(nn.Conv1d(1, 1, 1), line=(0.0, 1.0))


def test_bad_domains_are_rejected_with_clear_messages() -> None:
    m = _random_mlp([2, 4, 1], seed=0)
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        count_regions(m)
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        count_regions(m, line=([0, 0], [1, 1]), plane=([0, 0], [1, 0], [0, 1]))
    with pytest.raises(InvalidArgumentError, match=r"shape \(3,\).*width 2"):
        count_regions(m, line=([0, 0, 0], [1, 1, 1]))
    with pytest.raises(InvalidArgumentError, match="non-finite"):
        count_regions(m, line=([0, float("nan")], [1, 1]))
    with pytest.raises(InvalidArgumentError, match="degenerate"):
        count_regions(m, line=([1, 1], [1, 1]))
    with pytest.raises(InvalidArgumentError, match="collinear"):
        count_regions(m, plane=([0, 0], [1, 1], [2, 2]))
    with pytest.raises(InvalidArgumentError, match="low < high"):
        count_regions(m, line=([0, 0], [1, 1]), bounds=(1.0, 0.0))
    with pytest.raises(InvalidArgumentError, match="bounds"):
        count_regions(m, plane=([0, 0], [1, 0], [0, 1]), bounds=(0.0, 1.0))
    with pytest.raises(UnknownNameError, match="activation, affine"):
        count_regions(m, line=([0, 0], [1, 1]), kind="pieces")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- closed forms
def _two_units(w_out: list[float], act: nn.Module | None = None) -> nn.Sequential:
    """relu(x - 1/2), relu(y - 1/2) (cuts at u = 1/2 and v = 1/2 of the unit square) -> w_out."""
    model = nn.Sequential(nn.Linear(2, 2), act or nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2))
        model[0].bias.fill_(-0.5)
        model[2].weight.copy_(torch.tensor([w_out]))
        model[2].bias.zero_()
    return model


_SQUARE = ([0.0, 0.0], [1.0, 0.0], [0.0, 1.0])


def test_two_axis_aligned_relus_with_distinct_output_weights_give_four_affine_pieces() -> None:
    # gradients (0, 0), (1, 0), (0, 2), (1, 2) in the four quadrants: four affine maps
    model = _two_units([1.0, 2.0])
    assert count_regions(model, plane=_SQUARE) == 4
    assert count_regions(model, plane=_SQUARE, kind="affine") == 4
    fig = region_map(model, plane=_SQUARE, kind="affine")
    assert len(fig.axes[0].collections[0].get_paths()) == 4
    assert "4 affine regions" in fig.axes[0].get_title()


def test_a_unit_with_zero_output_weight_merges_its_two_sides() -> None:
    # the v-cut is invisible downstream: 4 activation regions, 2 affine pieces
    model = _two_units([1.0, 0.0])
    assert count_regions(model, plane=_SQUARE) == 4
    assert count_regions(model, plane=_SQUARE, kind="affine") == 2
    # both cuts invisible: one piece
    assert count_regions(_two_units([0.0, 0.0]), plane=_SQUARE, kind="affine") == 1
    # LeakyReLU with slope 1 is the identity: 4 activation regions, one affine map
    leaky = _two_units([1.0, 2.0], nn.LeakyReLU(1.0))
    assert count_regions(leaky, plane=_SQUARE) == 4
    assert count_regions(leaky, plane=_SQUARE, kind="affine") == 1


@pytest.mark.parametrize(
    ("bounds", "count"),
    [
        (((0.6, 1.0), (0.0, 1.0)), 2),  # only the v = 1/2 cut inside
        (((0.0, 1.0), (0.6, 1.0)), 2),  # only the u = 1/2 cut inside
        (((0.0, 0.4), (0.6, 1.0)), 1),
        (((-1.0, 2.0), (0.2, 0.8)), 4),
        (((0.4, 0.6), (0.45, 2.0)), 4),
    ],
)
def test_plane_bounds_select_the_window_of_the_cuts(
    bounds: tuple[tuple[float, float], tuple[float, float]], count: int
) -> None:
    model = _two_units([1.0, 2.0])
    assert count_regions(model, plane=_SQUARE, bounds=bounds) == count
    assert count_regions(model, plane=_SQUARE, bounds=bounds, kind="affine") == count


def test_region_map_axes_span_the_bounds() -> None:
    fig = region_map(_two_units([1.0, 2.0]), plane=_SQUARE, bounds=((0.5, 2.5), (-1.0, 0.0)))
    ax = fig.axes[0]
    assert ax.get_xlim() == pytest.approx((0.5, 2.5))
    assert ax.get_ylim() == pytest.approx((-1.0, 0.0))


def test_affine_breakpoints_on_a_line_through_the_two_cuts() -> None:
    # along x = y the cuts meet at t = 1/2; along x = 2t, y = t they are at t = 1/4 and t = 1/2
    model = _two_units([1.0, 2.0])
    np.testing.assert_allclose(
        region_breakpoints(model, line=([0.0, 0.0], [2.0, 1.0]), kind="affine"),
        [0.0, 0.25, 0.5, 1.0],
        atol=1e-6,
    )
    np.testing.assert_allclose(
        region_breakpoints(model, line=([0.0, 0.0], [2.0, 1.0]), bounds=(0.3, 1.0)),
        [0.3, 0.5, 1.0],
        atol=1e-6,
    )
    assert count_regions(_two_units([0.0, 2.0]), line=([0.0, 0.0], [2.0, 1.0]), kind="affine") == 2


def test_residual_block_adds_its_input() -> None:
    # f = x + w relu(x - 1/2) on [0, 1] is x, then 1/2 (w = -1) or 1 - x (w = -2); the head
    # relu(0.3 - f) switches at x = 0.3, and at x = 0.7 only when w = -2: pieces with slopes
    # (-1, 0) or (-1, 0, 1).
    for w, count in ((-1.0, 2), (-2.0, 3)):
        body = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1))
        with torch.no_grad():
            body[0].weight.fill_(1.0)
            body[0].bias.fill_(-0.5)
            body[2].weight.fill_(w)
            body[2].bias.zero_()
        head = nn.Linear(1, 1)
        with torch.no_grad():
            head.weight.fill_(-1.0)
            head.bias.fill_(0.3)
        model = nn.Sequential(nn.Identity(), Residual(body), head, nn.ReLU(), nn.Linear(1, 1))
        model[-1].weight.data.fill_(1.0)
        assert count_regions(model, line=([0.0], [1.0]), kind="affine") == count, w


def _linear(w: float, b: float) -> nn.Linear:
    lin = nn.Linear(1, 1)
    with torch.no_grad():
        lin.weight.fill_(w)
        lin.bias.fill_(b)
    return lin


def test_residual_scale_multiplies_the_branch() -> None:
    # f = x + a w relu(x - 1/2) on [0, 1], head relu(0.3 - f): f = x up to 1/2 (the head switches
    # at 0.3), then f = (1 + a w) x - a w / 2. With a w = -1 f stays at 1/2 (2 pieces); with
    # a w = -2 f = 1 - x reaches 0.3 again at x = 0.7 (3 pieces). The same branch (w = -1) with
    # scale 2 must count like w = -2, and w = -2 with scale 1/2 like w = -1.
    for w, scale, count in ((-1.0, 2.0, 3), (-2.0, 0.5, 2), (-1.0, 1.0, 2), (-1.0, 0.5, 2)):
        body = nn.Sequential(_linear(1.0, -0.5), nn.ReLU(), _linear(w, 0.0))
        model = nn.Sequential(Residual(body, scale=scale), _linear(-1.0, 0.3), nn.ReLU())
        assert count_regions(model, line=([0.0], [1.0]), kind="affine") == count, (w, scale)
        assert count_regions(model, line=([0.0], [1.0])) == count + 1, (w, scale)


def test_affine_merge_uses_the_residual_tangent_with_its_scale() -> None:
    # Two residual blocks that switch at the same point x = 1/2:
    # x1 = x + 2 * 0.5 relu(x - 1/2) (slope 1, then 2); x2 = x1 + 0.5 * (-1) relu(x1 - 1/2)
    # (x1 = 1/2 at x = 1/2; slope of x2 in x1: 1, then 1/2). Slope of x2 in x: 1 then 2 * 1/2 = 1,
    # and x2(1/2) = 1/2 on both sides: one affine piece (x2 = x), two activation regions. A
    # residual tangent dx - a dy would give slope 0 on the right: two pieces.
    first = Residual(nn.Sequential(_linear(1.0, -0.5), nn.ReLU(), _linear(0.5, 0.0)), scale=2.0)
    second = Residual(nn.Sequential(_linear(1.0, -0.5), nn.ReLU(), _linear(-1.0, 0.0)), scale=0.5)
    model = nn.Sequential(first, second)
    with torch.no_grad():  # the construction itself: x2 = x on [0, 1]
        x = torch.linspace(0, 1, 11)[:, None]
        torch.testing.assert_close(model(x), x)
    assert count_regions(model, line=([0.0], [1.0])) == 2
    assert count_regions(model, line=([0.0], [1.0]), kind="affine") == 1


def test_affine_merge_uses_the_leaky_relu_slope_for_value_and_tangent() -> None:
    # x1 = x + leaky_{1/2}(x - 1/2) (slope 3/2 below 1/2, 2 above; x1(1/2) = 1/2), then the head
    # leaky_{4/3}(x1 - 1/2) switches at the same x = 1/2: below, slope 4/3 * 3/2 = 2 and value
    # 4/3 * (3/2 x - 3/4) = 2x - 1; above, x1 - 1/2 = 2x - 1. One affine piece, two activation
    # regions. Dividing by the slope instead (value or tangent) gives 2 pieces.
    body = nn.Sequential(_linear(1.0, -0.5), nn.LeakyReLU(0.5), _linear(1.0, 0.0))
    model = nn.Sequential(Residual(body), _linear(1.0, -0.5), nn.LeakyReLU(4.0 / 3.0))
    with torch.no_grad():
        x = torch.linspace(0, 1, 11, dtype=torch.float64)[:, None]
        torch.testing.assert_close(model.double()(x), 2 * x - 1)
    model = model.float()
    assert count_regions(model, line=([0.0], [1.0])) == 2
    assert count_regions(model, line=([0.0], [1.0]), kind="affine") == 1
    # The value below the kink decides later masks: x1 = x + leaky_{0.1}(x - 1/2) is 1.1 x - 0.05
    # below 1/2 and 2 x - 1/2 above; relu(x1 - 0.3) switches at x = 0.35 / 1.1 = 0.318...: slopes
    # 0, 1.1, 2 (3 pieces). Inside (0.318, 1/2) a value x + 10 (x - 1/2) would be negative
    # below x = 5.3 / 11 = 0.48 and switch the head off there: slope 0, merged: 2 pieces.
    body = nn.Sequential(_linear(1.0, -0.5), nn.LeakyReLU(0.1))
    model = nn.Sequential(Residual(body), _linear(1.0, -0.3), nn.ReLU())
    assert count_regions(model, line=([0.0], [1.0])) == 3
    assert count_regions(model, line=([0.0], [1.0]), kind="affine") == 3


def test_affine_merging_does_not_depend_on_the_output_scale() -> None:
    # rtol is relative to the largest slope: a network scaled by 1e-9 has the same pieces
    for scale in (1.0, 1e-9, 1e9):
        model = one_hidden_layer([0.2, 0.5, 0.7], [1.0 * scale, 0.0, -1.0 * scale])
        assert count_regions(model, line=(0.0, 1.0), kind="affine") == 3, scale
        plane_model = _two_units([scale, 2 * scale])
        assert count_regions(plane_model, plane=_SQUARE, kind="affine") == 4, scale


def test_affine_region_map_colours_each_piece_and_draws_only_its_boundaries() -> None:
    # 4 activation regions, 2 affine pieces (u < 1/2 and u > 1/2): the v = 1/2 cut is not drawn
    model = _two_units([1.0, 0.0])
    fig = region_map(model, plane=_SQUARE, kind="affine", seed=3)
    ax = fig.axes[0]
    polys, lines = ax.collections
    assert len(polys.get_paths()) == 4  # one polygon per activation region
    colours = {tuple(c) for c in polys.get_facecolor().round(12).tolist()}
    assert len(colours) == 2
    assert all(0.35 <= c <= 0.95 for rgba in colours for c in rgba[:3])
    assert all(rgba[3] == 1.0 for rgba in colours)
    assert len(polys.get_edgecolor()) == 0  # no polygon edges: boundaries are the lines
    segments = lines.get_segments()
    assert len(segments) == 2  # the u = 1/2 cut, split by the v = 1/2 cut
    assert all(np.allclose(seg[:, 0], 0.5, atol=1e-6) for seg in segments)
    assert lines.get_colors().tolist() == [[0.0, 0.0, 0.0, 1.0]]
    assert ax.get_title() == "2 affine regions"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("u", "v")
    # activation kind: every face its own colour, all 4 interior edges drawn
    act = region_map(model, plane=_SQUARE, title="mine").axes[0]
    assert len({tuple(c) for c in act.collections[0].get_facecolor().tolist()}) == 4
    assert len(act.collections[1].get_segments()) == 4
    assert act.get_title() == "mine"


def test_region_map_colours_are_fixed_by_the_seed() -> None:
    model = _two_units([1.0, 2.0])

    def colours(seed: int) -> list[list[float]]:
        fig = region_map(model, plane=_SQUARE, seed=seed)
        return fig.axes[0].collections[0].get_facecolor().tolist()

    assert colours(5) == colours(5)
    assert colours(5) != colours(6)


def test_region_map_polygons_are_drawn_in_plane_coordinates() -> None:
    bounds = ((0.5, 2.5), (-1.0, 0.0))
    fig = region_map(_two_units([1.0, 2.0]), plane=_SQUARE, bounds=bounds)
    verts = np.concatenate([p.vertices for p in fig.axes[0].collections[0].get_paths()])
    np.testing.assert_allclose(verts.min(axis=0), [0.5, -1.0], atol=1e-6)
    np.testing.assert_allclose(verts.max(axis=0), [2.5, 0.0], atol=1e-6)


def test_default_plane_bounds_are_the_unit_square_of_the_given_points() -> None:
    # p1 - p0 and p2 - p0 are 0.4 long: the square [0, 1]² stops before the cuts at 1/2
    model = _two_units([1.0, 2.0])
    small = ([0.0, 0.0], [0.4, 0.0], [0.0, 0.4])
    assert count_regions(model, plane=small) == 1
    assert count_regions(model, plane=small, bounds=((0.0, 2.0), (0.0, 1.0))) == 2
    assert count_regions(model, plane=small, bounds=((0.0, 1.0), (0.0, 2.0))) == 2


def test_plane_degeneracy_is_judged_relative_to_the_plane_size() -> None:
    model = _two_units([1.0, 2.0])
    # a tiny plane that really is a plane is accepted
    tiny = ([0.0, 0.0], [1e-13, 0.0], [0.0, 1e-13])
    assert count_regions(model, plane=tiny) == 1
    # a huge plane whose third point is off the line by 1e-7 is collinear to 1e-14 relative
    with pytest.raises(InvalidArgumentError, match="collinear"):
        count_regions(model, plane=([0.0, 0.0], [1e6, 1e6], [2e6, 2e6 + 1e-7]))


def test_malformed_planes_and_bounds_name_the_bad_part() -> None:
    model = _two_units([1.0, 2.0])
    with pytest.raises(InvalidArgumentError, match="three input points"):
        count_regions(model, plane=([0.0, 0.0], [1.0, 0.0]))
    with pytest.raises(InvalidArgumentError, match=r"plane\[1\]"):
        count_regions(model, plane=([0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0]))
    with pytest.raises(InvalidArgumentError, match=r"\(u_min, u_max\), \(v_min, v_max\)"):
        count_regions(model, plane=_SQUARE, bounds=((0.0, 1.0), (0.0, 1.0), (0.0, 1.0)))
    with pytest.raises(InvalidArgumentError, match=r"bounds\[0\] \(u\)"):
        count_regions(model, plane=_SQUARE, bounds=((1.0, 0.0), (0.0, 1.0)))
    with pytest.raises(InvalidArgumentError, match=r"bounds\[1\] \(v\)"):
        count_regions(model, plane=_SQUARE, bounds=((0.0, 1.0), (0.0, 0.0)))


def test_a_single_invisible_kink_is_one_affine_piece() -> None:
    model = one_hidden_layer([0.5], [0.0])  # the unit switches but its output weight is 0
    assert count_regions(model, line=(0.0, 1.0)) == 2
    assert count_regions(model, line=(0.0, 1.0), kind="affine") == 1
    np.testing.assert_allclose(region_breakpoints(model, line=(0.0, 1.0)), [0, 0.5, 1], atol=1e-6)
    np.testing.assert_allclose(
        region_breakpoints(model, line=(0.0, 1.0), kind="affine"), [0.0, 1.0], atol=0
    )
    assert region_breakpoints(model, line=(0.0, 1.0)).dtype == np.float64


def test_affine_pieces_are_judged_along_the_line_not_in_the_whole_space() -> None:
    # f = relu(x - 1/2) - relu(-x + y - 1/2): on the segment from a = (0, 1) to b = (1, 1) both
    # units switch at x = 1/2 and f = x - 1/2 on both sides: one affine piece along the segment,
    # although the gradient changes there, from (1, -1) to (1, 0).
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
        model[0].bias.copy_(torch.tensor([-0.5, -0.5]))
        model[2].weight.copy_(torch.tensor([[1.0, -1.0]]))
        model[2].bias.zero_()
    line = ([0.0, 1.0], [1.0, 1.0])
    assert count_regions(model, line=line) == 2
    assert count_regions(model, line=line, kind="affine") == 1


def test_bias_free_layers_count_like_zero_biases() -> None:
    # f = relu(x) + 2 relu(-x) on [-1, 1]: slopes -2 and 1, two pieces
    model = nn.Sequential(nn.Linear(1, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        model[2].weight.copy_(torch.tensor([[1.0, 2.0]]))
    assert count_regions(model, line=([-1.0], [1.0])) == 2
    assert count_regions(model, line=([-1.0], [1.0]), kind="affine") == 2
    plane = ([-1.0, 0.0], [1.0, 0.0], [-1.0, 1.0])
    wide = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        wide[0].weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        wide[2].weight.copy_(torch.tensor([[1.0, 2.0]]))
    assert count_regions(wide, plane=plane, kind="affine") == 2


def test_leaky_relu_slope_changes_at_zero() -> None:
    # pre-activations lie in (-1/2, 1/2) on the unit square: the slope switches at 0
    model = _two_units([1.0, 2.0], nn.LeakyReLU(0.1))
    assert count_regions(model, plane=_SQUARE, kind="affine") == 4
    assert count_regions(model, line=([0.0, 0.0], [2.0, 1.0]), kind="affine") == 3


def test_points_may_be_tensors_or_one_row_arrays() -> None:
    model = _two_units([1.0, 2.0])
    as_tensors = (torch.zeros(2), torch.tensor([2.0, 1.0]))
    as_rows = (np.zeros((1, 2)), np.array([[2.0, 1.0]]))
    for line in (as_tensors, as_rows):
        np.testing.assert_allclose(
            region_breakpoints(model, line=line), [0.0, 0.25, 0.5, 1.0], atol=1e-6
        )
    assert count_regions(model, plane=tuple(torch.tensor(p) for p in _SQUARE)) == 4
    one = one_hidden_layer([0.5])
    assert count_regions(one, line=(np.float64(0.0), torch.tensor(1.0))) == 2


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (([0.0, 0.0], [1.0, 1.0], [2.0, 2.0]), r"pair \(a, b\)"),
        (([0.0, 0.0, 0.0], [1.0, 1.0]), r"line\[0\] \(a\)"),
        (([0.0, 0.0], [[1.0, 1.0], [2.0, 2.0]]), r"line\[1\] \(b\)"),
    ],
)
def test_malformed_lines_name_the_bad_part(line: tuple[object, ...], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        count_regions(_two_units([1.0, 2.0]), line=line)


def test_one_input_models_take_scalars_but_not_two_numbers() -> None:
    with pytest.raises(InvalidArgumentError, match="width 1"):
        count_regions(one_hidden_layer([0.5]), line=([0.0, 1.0], [1.0, 2.0]))


def test_empty_bounds_are_refused_by_name() -> None:
    with pytest.raises(InvalidArgumentError, match="bounds must be finite with low < high"):
        count_regions(one_hidden_layer([0.5]), line=(0.0, 1.0), bounds=(0.5, 0.5))


def test_residual_body_widths_are_checked_inside_the_body() -> None:
    model = nn.Sequential(nn.Linear(1, 2), Residual(nn.Sequential(nn.Linear(3, 3))))
    with pytest.raises(UnsupportedModelError, match=r"model\[1\]\.branch\[0\].*expects 3 .* 2"):
        count_regions(model, line=(0.0, 1.0))


def test_rtol_zero_merges_only_exactly_equal_maps() -> None:
    # the zero-weight unit leaves the Jacobian bit-for-bit equal on both sides of its kink
    model = one_hidden_layer([0.2, 0.5, 0.7], [1.0, 0.0, -1.0])
    assert count_regions(model, line=(0.0, 1.0), kind="affine", rtol=0.0) == 3


def test_region_map_default_figure_and_colour_range() -> None:
    model = _random_mlp([2, 8, 8, 1], seed=2)
    fig = region_map(model, plane=([-2, -2], [2, -2], [-2, 2]))
    assert tuple(fig.get_size_inches()) == (4.0, 4.0)  # "a new 4x4 inch figure"
    colours = fig.axes[0].collections[0].get_facecolor()
    assert len(colours) >= 20
    assert colours[:, :3].min() >= 0.35 and colours[:, :3].max() <= 0.95
