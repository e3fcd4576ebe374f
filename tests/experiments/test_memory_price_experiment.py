from __future__ import annotations

import numpy as np
import pytest
import torch

from deeplimits.errors import InvalidArgumentError
from deeplimits.experiments import NullProgress, get_experiment, list_experiments
from deeplimits.experiments.memory_price import (
    LinearODE,
    MemoryPriceConfig,
    MemoryPriceExperiment,
    exact_gradients,
    memory_price_checks,
    memory_price_verdict,
    relative_error,
    stiff_matrix,
)
from deeplimits.ode import odeint


def test_stiff_matrix_has_the_requested_eigenvalues_and_is_not_normal():
    a = stiff_matrix(-30.0, -1.0)
    assert sorted(np.linalg.eigvals(a).real) == pytest.approx([-30.0, -1.0])
    assert not np.allclose(a @ a.T, a.T @ a)


def test_exact_gradients_match_central_finite_differences():
    rng = np.random.default_rng(3)
    a = stiff_matrix(-5.0, -0.5) + 0.1 * rng.standard_normal((2, 2))
    y0 = rng.standard_normal((3, 2))
    t1 = 1.3
    g_y0, g_a = exact_gradients(a, y0, t1)
    from scipy.linalg import expm

    def loss(a_: np.ndarray, y0_: np.ndarray) -> float:
        return float(((y0_ @ expm(a_ * t1).T) ** 2).sum())

    eps = 1e-6
    for i in range(2):
        for j in range(2):
            d = np.zeros((2, 2))
            d[i, j] = eps
            fd = (loss(a + d, y0) - loss(a - d, y0)) / (2 * eps)
            assert g_a[i, j] == pytest.approx(fd, rel=1e-6, abs=1e-8)
    d = np.zeros_like(y0)
    d[1, 0] = eps
    assert g_y0[1, 0] == pytest.approx((loss(a, y0 + d) - loss(a, y0 - d)) / (2 * eps), rel=1e-6)


def test_exact_gradients_agree_with_backprop_through_a_tight_solve():
    a = stiff_matrix(-4.0, -1.0)
    y0 = np.array([[1.0, -0.5], [0.3, 2.0]])
    f = LinearODE(torch.tensor(a))
    y = torch.tensor(y0, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    odeint(f, y, t, rtol=1e-11, atol=1e-13)[-1].pow(2).sum().backward()
    g_y0, g_a = exact_gradients(a, y0, 1.0)
    assert relative_error([y.grad.numpy(), f.a.grad.numpy()], [g_y0, g_a]) < 1e-8


def test_relative_error_is_the_worst_pair_and_inf_when_not_finite():
    ref = [np.ones(4), np.array([2.0, 0.0])]
    assert relative_error([np.ones(4), np.array([2.0, 0.0])], ref) == 0.0
    assert relative_error([np.ones(4) * 1.1, np.array([2.0, 0.0])], ref) == pytest.approx(0.1)
    assert relative_error([np.ones(4), np.array([np.nan, 0.0])], ref) == float("inf")


def test_config_rejects_bad_values_naming_them():
    with pytest.raises(InvalidArgumentError, match="lam_fast"):
        MemoryPriceConfig(lam_fast=-1.0, lam_slow=-2.0)
    with pytest.raises(InvalidArgumentError, match="checkpoints"):
        MemoryPriceConfig(checkpoints=(8, 2))
    with pytest.raises(InvalidArgumentError, match="memory_steps"):
        MemoryPriceConfig(memory_steps=8)  # rk4 with h |lam| = 7.5: unstable
    with pytest.raises(InvalidArgumentError, match="rtol"):
        MemoryPriceConfig(rtol=0.0)


def test_experiment_is_registered_on_slide_4_right_after_odenet():
    assert get_experiment("odenet_price") is MemoryPriceExperiment
    names = [e.name for e in list_experiments()]
    assert names.index("odenet_price") == names.index("odenet") + 1
    assert MemoryPriceExperiment.slide == 4


# --- the verdict -------------------------------------------------------------------------------


def _args(**overrides):
    args = {
        "memory_steps": (64, 256),
        "memory_bytes": {"direct": [16_000, 64_000], "adjoint": [288, 288],
                         "checkpoint c=8": [768, 768]},
        "memory_checkpoints": 8,
        "stiff_errors": {"direct": 7e-11, "adjoint": 1.6e6, "adjoint (seminorm)": 2.5e7,
                         "checkpoint c=2": 7e-11, "checkpoint c=8": 7e-11},
        "checkpoint_vs_direct": 1.6e-15,
    }
    args.update(overrides)
    return args


def test_verdict_is_reproduced_citing_the_measurements():
    v = memory_price_verdict(**_args())
    assert v.status == "reproduced"
    assert "1.6e+06" in v.reason and "grow 1.000x" in v.reason and "0.012" in v.reason


@pytest.mark.parametrize(
    "overrides",
    [
        {"memory_bytes": {"direct": [16_000, 48_000], "adjoint": [1000, 1100],
                          "checkpoint c=8": [1000, 1300]}},  # 3x, 1.1x, 1.3x; 1300/48000
        {"memory_bytes": {"direct": [1000, 13_000], "adjoint": [288, 288],
                          "checkpoint c=8": [1300, 1300]}},  # share exactly 0.1
        {"stiff_errors": {"direct": 1e-6, "adjoint": 1.0001e-3, "adjoint (seminorm)": 1.0,
                          "checkpoint c=8": 1e-6}, "checkpoint_vs_direct": 1e-10},
    ],
)
def test_verdict_holds_on_the_inclusive_boundary_of_each_threshold(overrides):
    assert memory_price_verdict(**_args(**overrides)).status == "reproduced"


@pytest.mark.parametrize(
    ("overrides", "failed"),
    [
        ({"memory_bytes": {"direct": [16_000, 64_000], "adjoint": [288, 320],
                           "checkpoint c=8": [768, 768]}}, "adjoint peak bytes"),
        ({"memory_bytes": {"direct": [16_000, 47_000], "adjoint": [288, 288],
                           "checkpoint c=8": [768, 768]}}, "direct backprop's bytes grow"),
        ({"memory_bytes": {"direct": [16_000, 64_000], "adjoint": [288, 288],
                           "checkpoint c=8": [768, 1000]}}, "checkpoint c=8 peak bytes grow"),
        ({"memory_bytes": {"direct": [1000, 4000], "adjoint": [288, 288],
                           "checkpoint c=8": [768, 768]}}, "of direct's bytes"),
        ({"stiff_errors": {"direct": 7e-11, "adjoint": 1e-3, "adjoint (seminorm)": 2.5e7,
                           "checkpoint c=8": 7e-11}}, "seminorm adjoint"),
        ({"stiff_errors": {"direct": 7e-11, "adjoint": 1.0, "adjoint (seminorm)": 1e-8,
                           "checkpoint c=8": 7e-11}}, "seminorm adjoint"),
        ({"stiff_errors": {"direct": 2e-6, "adjoint": 1.0, "adjoint (seminorm)": 1.0,
                           "checkpoint c=8": 7e-11}}, "direct backprop's stiff"),
        ({"stiff_errors": {"direct": 7e-11, "adjoint": 1.0, "adjoint (seminorm)": 1.0,
                           "checkpoint c=2": 2e-6, "checkpoint c=8": 7e-11}},
         "worst checkpoint"),
        ({"checkpoint_vs_direct": 2e-10}, "differ from direct's"),
    ],
)
def test_verdict_is_not_reproduced_naming_the_failed_check(overrides, failed):
    checks = memory_price_checks(**_args(**overrides))
    assert [k for k, ok in checks.items() if not ok] == [
        k for k in checks if failed in k
    ]
    v = memory_price_verdict(**_args(**overrides))
    assert v.status == "not reproduced" and failed in v.reason


def test_checks_need_a_checkpoint_error():
    with pytest.raises(InvalidArgumentError, match="checkpoint"):
        memory_price_checks(**_args(stiff_errors={"direct": 0.0, "adjoint": 1.0,
                                                  "adjoint (seminorm)": 1.0}))


# --- the quick preset --------------------------------------------------------------------------


def test_quick_preset_reproduces_the_price_of_o1_memory():
    config = MemoryPriceConfig.quick()
    result = MemoryPriceExperiment().run(config, NullProgress())
    assert result.verdict.status == "reproduced", result.verdict.reason
    stiff, memory, digits = result.tables
    methods = ["direct", "adjoint", "adjoint (seminorm)",
               *(f"checkpoint c={c}" for c in config.checkpoints), "reversible Heun"]
    assert [r[0] for r in stiff.rows] == methods
    assert all(len(r) == len(stiff.columns) == 12 for r in stiff.rows)
    assert [r[0] for r in memory.rows] == ["direct", "adjoint", "adjoint (seminorm)",
                                           "checkpoint c=8", "reversible Heun"]
    assert len(digits.rows) == 6
    # Checkpointing recomputes: more evaluations with fewer checkpoints.
    recompute = {r[0]: r[-1] for r in stiff.rows}
    assert recompute["checkpoint c=2"] > recompute["checkpoint c=32"] > 0
    # On the digits, checkpointing and reversible Heun give backprop's gradients.
    diff = {r[0]: r[2] for r in digits.rows}
    assert diff["checkpoint c=2"] < 1e-12 and diff["reversible Heun"] < 1e-12
    assert set(result.figures) == {"price"}


def test_figure_draws_zero_huge_and_non_finite_errors_without_warnings():
    import matplotlib.pyplot as plt

    from deeplimits.experiments.memory_price import _figure

    stiff = {"direct": {"peak_bytes": 1000, "error": 0.0},
             "adjoint": {"peak_bytes": 100, "error": 1e300},
             "reversible Heun": {"peak_bytes": 120, "error": float("inf")}}
    digits = [{"method": "direct", "peak_bytes": 5000, "rel_diff": 0.0},
              {"method": "adjoint", "peak_bytes": 500, "rel_diff": 3e-7}]
    fig = _figure(stiff, digits)
    fig.canvas.draw()  # warnings are errors: an overflowing log axis would fail here
    ys = [line.get_ydata()[0] for line in fig.axes[0].get_lines()]
    assert ys == [1e-17, 1e30, 1e30]
    plt.close(fig)
