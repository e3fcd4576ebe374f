from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from deeplimits.diagnostics import SavedTensorsMeter
from deeplimits.errors import InvalidArgumentError, InvalidTypeError
from deeplimits.experiments import NullProgress, get_experiment
from deeplimits.experiments.odenet import (
    EulerResNet,
    OdeNetConfig,
    OdeNetExperiment,
    TimeMLP,
    classifier,
    euler_errors,
    fit_loglog_slope,
    odenet_checks,
    odenet_verdict,
    predicted_resnet_saved_bytes,
)
from deeplimits.ode import ODEBlock, odeint


def _saved(model: nn.Module, x: Tensor) -> int:
    with SavedTensorsMeter(exclude=model.parameters()) as meter:
        model(x)
    return meter.bytes


@pytest.mark.parametrize(("batch", "depth", "dim", "hidden"), [(8, 1, 4, 5), (16, 3, 32, 64),
                                                               (5, 7, 10, 3)])
def test_resnet_saves_exactly_the_bytes_derived_from_its_layers(batch, depth, dim, hidden):
    torch.manual_seed(0)
    model = classifier(EulerResNet.untied(lambda: TimeMLP(dim, hidden), depth), dim)
    x = torch.rand(batch, 64)
    # Linear(64, d) keeps x; per block cat([z, t]) and tanh(.); the head keeps its input.
    n = 4 * batch * (64 + depth * (dim + 1 + hidden) + dim)
    assert predicted_resnet_saved_bytes(batch, depth, dim, hidden) == n
    assert _saved(model, x) == n


def test_weight_tied_euler_resnet_saves_activations_per_step_not_per_parameter():
    f = TimeMLP(6, 9)
    x = torch.rand(4, 64)
    one = _saved(classifier(EulerResNet.tied(f, 1), 6), x)
    ten = _saved(classifier(EulerResNet.tied(f, 10), 6), x)
    assert ten - one == 9 * 4 * 4 * (6 + 1 + 9)
    assert sum(p.numel() for p in EulerResNet.tied(f, 10).parameters()) == sum(
        p.numel() for p in f.parameters()
    )


def test_adjoint_odenet_saves_the_same_bytes_for_any_number_of_steps_and_rk_net_grows():
    torch.manual_seed(0)
    f = TimeMLP(8, 16)
    x = torch.rand(10, 64)
    ode, rk = [], []
    for n in (2, 8, 32):
        grid = {"grid": [i / n for i in range(n + 1)]}
        ode.append(_saved(classifier(ODEBlock(f, method="rk4", adjoint=True, options=grid), 8), x))
        rk.append(_saved(classifier(ODEBlock(f, method="rk4", adjoint=False, options=grid), 8), x))
    assert ode[0] == ode[1] == ode[2]
    # Backprop through rk4 keeps at least the 4 stages' activations of every step.
    per_stage = 4 * 10 * (8 + 1 + 16)
    assert rk[2] - rk[1] >= 24 * 4 * per_stage
    assert ode[0] < rk[0]


def test_tied_euler_resnet_is_the_euler_solver():
    torch.manual_seed(1)
    f = TimeMLP(5, 7).double()
    z0 = torch.randn(6, 5, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    for depth in (1, 3, 16):
        euler = odeint(f, z0, t, method="euler",
                       options={"grid": [i / depth for i in range(depth + 1)]})[-1]
        torch.testing.assert_close(EulerResNet.tied(f, depth)(z0), euler, rtol=1e-12, atol=1e-12)


class _Decay(nn.Module):
    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return -z


def test_euler_error_on_exponential_decay_matches_the_closed_form_with_slope_minus_one():
    z0 = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    depths = [2, 4, 8, 16, 32, 64, 128, 256]
    errors, z1 = euler_errors(_Decay(), z0, depths)
    torch.testing.assert_close(z1, z0 * math.exp(-1.0), rtol=1e-8, atol=0.0)
    # Euler on dz/dt = -z gives (1 - 1/L)^L z0; the relative error is |(1-1/L)^L e - 1|.
    exact = [abs((1 - 1 / L) ** L * math.e - 1) for L in depths]
    np.testing.assert_allclose(errors, exact, rtol=1e-6)
    slope = fit_loglog_slope(depths, errors)
    assert slope == pytest.approx(np.polyfit(np.log(depths), np.log(exact), 1)[0], abs=1e-6)
    assert -1.1 <= slope <= -0.9


def test_loglog_slope_recovers_a_power_law_and_rejects_nonpositive_values():
    assert fit_loglog_slope([1, 2, 4, 8], [3 * x**-1.5 for x in (1, 2, 4, 8)]) == pytest.approx(
        -1.5
    )
    with pytest.raises(InvalidArgumentError, match="positive finite"):
        fit_loglog_slope([1, 2, 3], [1.0, 0.0, 2.0])
    with pytest.raises(InvalidArgumentError, match=">= 2"):
        fit_loglog_slope([1], [1.0])


def test_config_rejects_a_memory_sweep_spanning_less_than_8x():
    with pytest.raises(InvalidArgumentError, match=r"memory_steps=\(2, 4, 8\) spans only 4.0x"):
        OdeNetConfig(memory_steps=(2, 4, 8))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 0}, "dim=0 must be >= 1"),
        ({"memory_steps": (8, 4, 64)}, "increasing positive ints"),
        ({"ode_method": "rk4"}, "must be an adaptive method"),
        ({"test_fraction": 1.0}, "strictly between 0 and 1"),
    ],
)
def test_config_rejects_bad_values_naming_them(kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        OdeNetConfig(**kwargs)


def test_config_rejects_a_float_depth():
    with pytest.raises(InvalidTypeError, match="resnet_blocks must be an int"):
        OdeNetConfig(resnet_blocks=2.0)  # type: ignore[arg-type]


def test_experiment_is_registered_for_slide_4():
    assert get_experiment("odenet") is OdeNetExperiment
    assert OdeNetExperiment.slide == 4


@pytest.mark.slow
def test_quick_preset_reproduces_the_memory_verdict():
    config = OdeNetConfig.quick()
    torch.manual_seed(config.seed)
    threads = torch.get_num_threads()
    result = OdeNetExperiment().run(config, NullProgress())
    assert torch.get_num_threads() == threads  # the 1-thread training setting is undone
    n = result.numbers
    assert result.verdict.status == "reproduced", result.verdict.reason
    # The ResNet sweep equals the analytic count at every depth (batch = config.batch_size).
    assert n["memory_ResNet"] == [
        predicted_resnet_saved_bytes(config.batch_size, L, config.dim, config.hidden)
        for L in config.memory_steps
    ]
    assert max(n["memory_ODE-Net"]) == min(n["memory_ODE-Net"])
    assert n["ODE-Net_params"] < n["ResNet_params"]
    assert n["ODE-Net_nfe_forward"] > 0 and n["ODE-Net_nfe_backward"] > 0
    assert n["ODE-Net_test_error_pct"] <= n["ResNet_test_error_pct"] + 1.0
    assert -1.2 <= n["euler_slope"] <= -0.8


# ---------------------------------------------------------------- the verdict, on hand-made numbers
def _measured(**overrides):
    """Keyword arguments of odenet_verdict on which every check holds, with ``overrides``."""
    kwargs = {
        "memory_steps": (2, 8, 64),
        "growth": {"ResNet": 20.0, "RK-Net": 25.0, "ODE-Net": 1.0},
        "test_error_pct": {"ResNet": 3.0, "RK-Net": 3.5, "ODE-Net": 3.5},
        "euler_slope": -1.0,
    }
    return kwargs | overrides


def _growth(**kinds: float) -> dict[str, float]:
    return {"ResNet": 20.0, "RK-Net": 25.0, "ODE-Net": 1.0} | {
        k.replace("_", "-"): v for k, v in kinds.items()
    }


def test_odenet_verdict_is_reproduced_citing_the_measurements() -> None:
    verdict = odenet_verdict(**_measured())
    assert verdict.status == "reproduced"
    assert verdict.reason == (
        "measured on scikit-learn digits: ODE-Net (adjoint) saved bytes from 2 to 64 steps grow "
        "1.000x (<= 1.1x); ResNet saved bytes from L=2 to L=64 grow 20.00x (>= 5x); RK-Net "
        "(backprop) saved bytes from 2 to 64 steps grow 25.00x (>= 5x); ODE-Net test error 3.50 % "
        "<= ResNet's 3.00 % + 1 point; Euler ResNet error vs L has log-log slope -1.000 (in "
        "[-1.2, -0.8])."
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {"growth": _growth(ODE_Net=1.1)},
        {"growth": _growth(ResNet=5.0)},
        {"growth": _growth(RK_Net=5.0)},
        {"test_error_pct": {"ResNet": 3.0, "RK-Net": 9.0, "ODE-Net": 4.0}},  # exactly + 1 point
        {"euler_slope": -1.2},
        {"euler_slope": -0.8},
        {"cuda_peaks_ode_net": [100, None, 110]},  # grows exactly 1.1x; None is skipped
    ],
)
def test_odenet_verdict_holds_on_the_inclusive_boundary_of_each_threshold(overrides) -> None:
    assert odenet_verdict(**_measured(**overrides)).status == "reproduced"


@pytest.mark.parametrize(
    ("overrides", "failed"),
    [
        ({"growth": _growth(ODE_Net=1.1001)}, "ODE-Net (adjoint) saved bytes"),
        ({"growth": _growth(ResNet=4.999)}, "ResNet saved bytes from L=2 to L=64 grow 5.00x"),
        ({"growth": _growth(RK_Net=4.999)}, "RK-Net (backprop) saved bytes"),
        (
            {"test_error_pct": {"ResNet": 3.0, "RK-Net": 3.0, "ODE-Net": 4.01}},
            "ODE-Net test error 4.01 % <= ResNet's 3.00 % + 1 point",
        ),
        ({"euler_slope": -1.2001}, "log-log slope -1.200"),
        ({"euler_slope": -0.7999}, "log-log slope -0.800"),
        ({"cuda_peaks_ode_net": [100, 111]}, "CUDA allocator peak from 2 to 64 steps grows 1.110x"),
    ],
)
def test_odenet_verdict_is_not_reproduced_naming_the_failed_check(overrides, failed) -> None:
    checks = odenet_checks(**_measured(**overrides))
    assert sum(not ok for ok in checks.values()) == 1
    verdict = odenet_verdict(**_measured(**overrides))
    assert verdict.status == "not reproduced"
    assert verdict.reason.startswith("failed: ") and failed in verdict.reason


def test_odenet_checks_add_the_cuda_peak_only_when_given() -> None:
    assert len(odenet_checks(**_measured())) == 5
    assert len(odenet_checks(**_measured(cuda_peaks_ode_net=[100, 100]))) == 6
