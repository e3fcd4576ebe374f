"""Flip distance (found, upper bound) vs certified radius (Tsuzuku, lower bound)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deeplimits.constructions import mlp
from deeplimits.diagnostics import certified_radius, flip_distance, lipschitz_upper
from deeplimits.errors import InvalidArgumentError, InvalidTypeError, UnsupportedModelError


def _mlp(sizes: list[int], act: type[nn.Module], seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return mlp(sizes, act)


@pytest.mark.parametrize(
    ("sizes", "act", "seed", "method"),
    [
        ([4, 16, 16, 3], nn.ReLU, 0, "product"),
        ([4, 16, 16, 3], nn.ReLU, 1, "eclipse"),
        ([6, 12, 12, 2], nn.Tanh, 2, "eclipse"),
        ([5, 20, 1], nn.ReLU, 3, "eclipse"),
        ([8, 16, 16, 16, 5], nn.LeakyReLU, 4, "eclipse-fast"),
        ([3, 24, 24, 10], nn.Sigmoid, 5, "product"),
    ],
)
def test_certified_radius_never_exceeds_found_flip_distance(
    sizes: list[int], act: type[nn.Module], seed: int, method: str
) -> None:
    model = _mlp(sizes, act, seed)
    x = torch.randn(100, sizes[0], generator=torch.Generator().manual_seed(seed))
    found = flip_distance(model, x)
    certified = certified_radius(model, x, method=method)
    finite = torch.isfinite(found)
    assert int(finite.sum()) >= 95  # DeepFool finds a flip for (almost) every input
    assert bool((certified[finite] <= found[finite]).all())
    assert bool((certified >= 0).all())


def test_flip_distance_is_exact_for_an_affine_binary_classifier() -> None:
    torch.manual_seed(0)
    model = nn.Linear(5, 1)
    x = torch.randn(50, 5)
    w, b = model.weight.detach()[0], model.bias.detach()[0]
    exact = (x @ w + b).abs() / w.norm()
    found = flip_distance(model, x)
    assert bool((found >= exact * (1 - 1e-5)).all())
    assert torch.allclose(found, exact, rtol=0.03)
    # A single logit: the certified radius |z| / ||w|| is the exact distance too.
    assert torch.allclose(certified_radius(model, x), exact, rtol=1e-5)


def test_flip_distance_matches_brute_force_for_an_affine_multiclass_classifier() -> None:
    torch.manual_seed(1)
    model = nn.Linear(6, 4)
    x = torch.randn(40, 6)
    with torch.no_grad():
        z = model(x)
    w = model.weight.detach()
    y = z.argmax(1)
    # Distance to the union of half-spaces {z_j >= z_y}: min over j of the hyperplane distances.
    exact = torch.full((40,), math.inf)
    for j in range(4):
        d = (z[torch.arange(40), y] - z[:, j]) / (w[y] - w[j]).norm(dim=1).clamp_min(1e-12)
        exact = torch.where(y != j, torch.minimum(exact, d), exact)
    found = flip_distance(model, x)
    assert bool((found >= exact * (1 - 1e-5)).all())
    assert torch.allclose(found, exact, rtol=0.03)


def test_tsuzuku_radius_of_a_linear_layer() -> None:
    torch.manual_seed(2)
    model = nn.Linear(3, 4)
    x = torch.randn(10, 3)
    with torch.no_grad():
        top2 = model(x).topk(2, dim=1).values
    op = float(torch.linalg.matrix_norm(model.weight.detach().double(), ord=2))
    expected = (top2[:, 0] - top2[:, 1]) / (math.sqrt(2) * op)
    assert torch.allclose(certified_radius(model, x), expected, rtol=1e-5)
    assert torch.allclose(certified_radius(model, x, lipschitz=2 * op), expected / 2, rtol=1e-5)


def test_constant_network_reports_inf_not_a_fake_distance() -> None:
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([1.0, 0.0]))
    found = flip_distance(model, torch.randn(4, 3), max_iter=5)
    assert bool(torch.isinf(found).all())


def test_no_random_perturbation_inside_the_certified_ball_flips() -> None:
    model = _mlp([4, 16, 3], nn.ReLU, 9)
    x = torch.randn(30, 4, generator=torch.Generator().manual_seed(9))
    found = flip_distance(model, x)
    with torch.no_grad():
        label = model(x).argmax(1)
        # Random directions at 0.999 · radius keep the label; every found distance is finite.
        radius = certified_radius(model, x)
        for _ in range(20):
            d = torch.randn_like(x)
            d = d / d.norm(dim=1, keepdim=True) * (0.999 * radius[:, None])
            assert bool((model(x + d).argmax(1) == label).all())
    assert bool(torch.isfinite(found).all())


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_certified_radius_rejects_a_bad_lipschitz_constant(bad: float) -> None:
    with pytest.raises(InvalidArgumentError, match="lipschitz"):
        certified_radius(nn.Linear(2, 2), torch.zeros(1, 2), lipschitz=bad)


def test_bound_from_lipschitz_upper_is_used_by_default() -> None:
    model = _mlp([3, 8, 2], nn.ReLU, 11)
    x = torch.randn(5, 3)
    lip = lipschitz_upper(model, "product")
    assert torch.allclose(certified_radius(model, x), certified_radius(model, x, lipschitz=lip))


# ----------------------------------------------------------------------------- closed forms
def _affine_binary(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A float64 affine binary classifier, 30 inputs and their exact distances |w·x + b| / ||w||."""
    torch.manual_seed(seed)
    model = nn.Linear(5, 1).double()
    x = torch.randn(30, 5, dtype=torch.float64)
    w, b = model.weight.detach()[0], model.bias.detach()[0]
    return model, x, (x @ w + b).abs() / w.norm()


def test_flip_distance_of_an_affine_classifier_is_exact_after_bisection() -> None:
    model, x, exact = _affine_binary()
    found = flip_distance(model, x)
    # one DeepFool step lands on the boundary; 30 bisection steps pin it to 2^-30 ≈ 1e-9
    assert torch.allclose(found, exact, rtol=2e-9, atol=0.0)
    assert bool((found >= exact * (1 - 1e-12)).all())


@pytest.mark.parametrize("overshoot", [0.02, 0.5])
def test_without_bisection_the_distance_is_the_overshot_deepfool_step(overshoot: float) -> None:
    model, x, exact = _affine_binary(1)
    found = flip_distance(model, x, overshoot=overshoot, bisection_steps=0)
    assert torch.allclose(found, (1 + overshoot) * exact, rtol=1e-9)


def test_flip_distance_of_an_affine_multiclass_classifier_is_exact_after_bisection() -> None:
    torch.manual_seed(1)
    model = nn.Linear(6, 4).double()
    x = torch.randn(40, 6, dtype=torch.float64)
    with torch.no_grad():
        z = model(x)
    w = model.weight.detach()
    y = z.argmax(1)
    rows = torch.arange(40)
    others = [(z[rows, y] - z[:, j]) / (w[y] - w[j]).norm(dim=1) for j in range(4)]
    exact = torch.stack(others, 1).masked_fill(torch.nn.functional.one_hot(y, 4).bool(), math.inf)
    exact = exact.min(1).values
    found = flip_distance(model, x)
    # the first step goes to the nearest boundary exactly; an affine net needs no second
    assert torch.allclose(found, exact, rtol=1e-7)


def test_flip_distance_of_a_scalar_output_model() -> None:
    model, x, exact = _affine_binary(2)
    flat = nn.Sequential(model, nn.Flatten(0))  # (batch,) logits
    assert torch.allclose(flip_distance(flat, x), exact, rtol=1e-7)
    lip = float(model.weight.detach().norm())
    assert torch.allclose(certified_radius(flat, x, lipschitz=lip), exact, rtol=1e-12)


def test_certified_radius_of_a_two_logit_net_is_margin_over_root_two_lipschitz() -> None:
    # z = (x1 + x2, x1 - x2) = W x with W = [[1, 1], [1, -1]]: ||W|| = √2, margin = 2|x2|.
    model = nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))
    x = torch.tensor([[0.3, 0.5], [1.0, -0.25], [2.0, 0.0]], dtype=torch.float64)
    radius = certified_radius(model, x)
    expected = 2 * x[:, 1].abs() / (math.sqrt(2) * math.sqrt(2))
    assert torch.allclose(radius, expected, rtol=1e-12)
    # here the boundary is x2 = 0, at distance |x2|: the certificate is exact
    found = flip_distance(model, x[:2])
    assert torch.allclose(found, x[:2, 1].abs(), rtol=1e-7)


def test_flip_distance_rejects_bad_options_and_outputs() -> None:
    model = nn.Linear(2, 2)
    x = torch.zeros(3, 2)
    for kwargs in ({"max_iter": 0}, {"bisection_steps": -1}, {"overshoot": -0.1}):
        with pytest.raises(InvalidArgumentError, match="max_iter"):
            flip_distance(model, x, **kwargs)  # type: ignore[arg-type]
    three_d = nn.Sequential(nn.Linear(2, 4), nn.Unflatten(1, (2, 2)))
    with pytest.raises(InvalidArgumentError, match="logits of shape"):
        flip_distance(three_d, x)
    with pytest.raises(InvalidArgumentError, match="logits of shape"):
        certified_radius(three_d, x, lipschitz=1.0)


def test_certified_radius_rejects_a_non_number_lipschitz() -> None:
    with pytest.raises(InvalidTypeError, match="lipschitz"):
        certified_radius(nn.Linear(2, 2), torch.zeros(1, 2), lipschitz=True)


def test_default_overshoot_is_two_percent() -> None:
    model, x, exact = _affine_binary(3)
    found = flip_distance(model, x, bisection_steps=0)
    assert torch.allclose(found, 1.02 * exact, rtol=1e-9)


def test_one_iteration_and_zero_overshoot_are_valid_options() -> None:
    model, x, exact = _affine_binary(4)
    assert torch.allclose(flip_distance(model, x, max_iter=1), exact, rtol=2e-9, atol=0.0)
    # without overshoot the step ends on the boundary: where that flips, it is exact
    found = flip_distance(model, x, overshoot=0.0)
    finite = torch.isfinite(found)
    assert torch.allclose(found[finite], exact[finite], rtol=1e-9)


def test_classes_tied_with_the_label_are_not_targets() -> None:
    # z = (x1, x1, -x1): class 1 always ties with class 0 (which argmax picks), so the only
    # boundary is the one to class 2, at x1 = 0: the distance is x1.
    model = nn.Linear(2, 3, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]))
    x = torch.tensor([[0.5, 1.0], [2.0, -3.0]], dtype=torch.float64)
    assert torch.allclose(flip_distance(model, x), x[:, 0], rtol=1e-8)


def test_certified_radius_uses_the_requested_lipschitz_method() -> None:
    model = _mlp([3, 8, 3], nn.ReLU, 12)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(12))
    for method in ("eclipse", "eclipse-fast"):
        lip = lipschitz_upper(model, method)
        assert lip < lipschitz_upper(model, "product")
        expected = certified_radius(model, x, lipschitz=lip)
        assert torch.allclose(certified_radius(model, x, method=method), expected, rtol=1e-12)


def test_certified_radius_of_a_cnn_takes_the_graph_bound_on_the_input_size() -> None:
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(2 * 5 * 5, 3)).double()
    x = torch.randn(4, 1, 5, 5, dtype=torch.float64)
    lip = lipschitz_upper(cnn, input_shape=(1, 5, 5))
    top2 = cnn(x).detach().topk(2, dim=1).values
    expected = (top2[:, 0] - top2[:, 1]) / (math.sqrt(2) * lip)
    assert torch.allclose(certified_radius(cnn, x), expected, rtol=1e-12, atol=0)
    assert bool((certified_radius(cnn, x) <= flip_distance(cnn, x)).all())


def test_certified_radius_refuses_a_model_without_a_finite_bound() -> None:
    class Gate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x) * self.b(x)

    with pytest.raises(UnsupportedModelError, match=r"node mul \(mul\).*radius=r"):
        certified_radius(Gate(), torch.randn(3, 2))
