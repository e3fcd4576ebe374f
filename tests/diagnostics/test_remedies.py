"""Remedies: initialisations, parametrization constraints, residual blocks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deeplimits.diagnostics import gradient_flow, operator_norm
from deeplimits.errors import InvalidArgumentError, UnknownNameError
from deeplimits.remedies import (
    ResidualBlock,
    constrain_orthogonal_,
    constrain_spectral_norm_,
    init_he_,
    init_normal_,
    init_orthogonal_,
    init_xavier_,
    initialize_,
    residual_mlp,
)


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(300, 400), nn.ReLU(), nn.Linear(400, 400))


@pytest.mark.parametrize(
    ("init", "expected_std"),
    [
        (lambda m: init_normal_(m, 0.01), lambda fi, fo: 0.01),
        (lambda m: init_he_(m), lambda fi, fo: math.sqrt(2 / fi)),
        (lambda m: init_xavier_(m, "tanh"), lambda fi, fo: 5 / 3 * math.sqrt(2 / (fi + fo))),
        (lambda m: initialize_(m, "xavier", nonlinearity="linear"),
         lambda fi, fo: math.sqrt(2 / (fi + fo))),
    ],
)
def test_inits_give_the_documented_weight_std_and_zero_bias(init, expected_std):
    torch.manual_seed(0)
    model = init(_net())
    for lin in (model[0], model[2]):
        fo, fi = lin.weight.shape
        assert float(lin.weight.detach().std()) == pytest.approx(expected_std(fi, fo), rel=0.02)
        assert float(lin.bias.detach().abs().max()) == 0.0


def test_orthogonal_init_has_unit_singular_values():
    model = init_orthogonal_(nn.Sequential(nn.Linear(20, 20), nn.Linear(20, 30)), gain=2.0)
    for lin in model:
        sv = torch.linalg.svdvals(lin.weight.detach())
        assert torch.allclose(sv, torch.full_like(sv, 2.0), atol=1e-5)


def test_spectral_norm_constraint_bounds_the_operator_norm():
    torch.manual_seed(0)
    model = init_normal_(nn.Sequential(nn.Linear(30, 40), nn.Tanh(), nn.Linear(40, 40)), 1.0)
    assert operator_norm(model[0]) > 5
    constrain_spectral_norm_(model, n_power_iterations=30)
    model.train()
    for _ in range(5):
        model(torch.randn(2, 30))  # forwards in training mode advance torch's power iteration
    for lin in (model[0], model[2]):
        # ||W / σ̂|| with σ̂ torch's power-iteration estimate (from below): 1 up to its accuracy.
        assert operator_norm(lin) == pytest.approx(1.0, rel=1e-2)
        assert operator_norm(lin) >= 1.0 - 1e-6


def test_orthogonal_constraint_stays_orthogonal_during_training():
    torch.manual_seed(0)
    model = constrain_orthogonal_(nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 16)))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(20):
        loss = model(torch.randn(8, 16)).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for lin in (model[0], model[2]):
        sv = torch.linalg.svdvals(lin.weight.detach())
        assert torch.allclose(sv, torch.ones_like(sv), atol=1e-4)


def test_residual_block_lipschitz_bound_and_zero_init_identity():
    torch.manual_seed(0)
    zero = residual_mlp(5, 8, 3, 6, branch="zero")
    x = torch.randn(4, 5)
    # Zero branches: the net equals its first Linear → ReLU → last Linear.
    plain = nn.Sequential(zero[0], zero[1], zero[-1])
    assert torch.allclose(zero(x), plain(x))
    scaled = residual_mlp(5, 8, 3, 6, branch="scaled")
    blocks = [m for m in scaled if isinstance(m, ResidualBlock)]
    assert len(blocks) == 4 and all(b.scale == pytest.approx(0.5) for b in blocks)
    report = gradient_flow(scaled, x)
    lips = [lf.lipschitz for lf in report.layers if lf.kind == "ResidualBlock"]
    expected = [1 + 0.5 * operator_norm(b.branch[1]) for b in blocks]
    assert lips == pytest.approx(expected, rel=1e-12)


def test_bad_remedy_arguments_raise():
    with pytest.raises(UnknownNameError, match="xavier"):
        initialize_(_net(), "glorot")
    with pytest.raises(InvalidArgumentError, match="std"):
        init_normal_(_net(), -1.0)
    with pytest.raises(InvalidArgumentError, match=r"no nn\.Linear"):
        init_he_(nn.ReLU())
    with pytest.raises(InvalidArgumentError, match="Linear only"):
        constrain_orthogonal_(nn.Conv2d(1, 1, 3))
    with pytest.raises(UnknownNameError, match="scaled"):
        residual_mlp(2, 2, 2, 3, branch="half")
    with pytest.raises(InvalidArgumentError, match="depth"):
        residual_mlp(2, 2, 2, 1)
    with pytest.raises(InvalidArgumentError, match="parametrization"):
        init_he_(constrain_spectral_norm_(_net()))
