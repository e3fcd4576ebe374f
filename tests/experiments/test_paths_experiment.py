"""The paths experiment: exact counts against Π widths, its verdict (also on hand-made fits either
side of each tolerance), and pruning."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deeplimits.diagnostics import count_parameters, count_paths
from deeplimits.experiments import NullProgress, run_experiment
from deeplimits.experiments.paths import (
    PathFits,
    PathsConfig,
    PathsExperiment,
    measure_paths,
    mlp,
    path_checks,
    paths_checks,
    paths_verdict,
)


@pytest.mark.parametrize(("depth", "width"), [(1, 3), (2, 4), (5, 7), (16, 64)])
def test_path_count_of_a_dense_mlp_is_the_product_of_its_widths(depth: int, width: int) -> None:
    model = mlp(depth, width)
    # widths n_0 = ... = n_L = width: Π n_l = width^(L+1)
    assert count_paths(model) == width ** (depth + 1)
    assert count_parameters(model) == depth * (width * width + width)


def test_path_count_of_unequal_widths_is_their_product() -> None:
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2), nn.Tanh(), nn.Linear(2, 7))
    assert count_paths(model) == 3 * 5 * 2 * 7


def test_pruning_one_weight_removes_exactly_the_paths_through_that_edge() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    with torch.no_grad():
        model[2].weight[1, 2] = 0.0  # edge from hidden-1 unit 2 to hidden-2 unit 1
    # paths through that edge: 3 inputs to unit 2, then unit 1 to 2 outputs
    assert count_paths(model) == 3 * 4 * 5 * 2 - 3 * 1 * 1 * 2
    with torch.no_grad():
        model[0].weight[2, :] = 0.0  # hidden-1 unit 2 has no incoming edge any more
    assert count_paths(model) == 3 * 3 * 5 * 2


def test_measure_paths_records_match_the_formulas() -> None:
    records, fits = measure_paths((1, 3), (4, 8))
    for r in records:
        assert r["paths"] == r["width"] ** (r["depth"] + 1)
        assert r["log10_paths"] == pytest.approx((r["depth"] + 1) * math.log10(r["width"]))
    assert fits.max_params == 3 * (8 * 8 + 8)


def test_quick_preset_reproduces_the_claim_with_the_fitted_exponents() -> None:
    result = PathsExperiment().run(PathsConfig.quick(), NullProgress())
    assert result.verdict.status == "reproduced"
    n = result.numbers
    assert abs(n["params_exponent_L"] - 1) < 0.05 and abs(n["params_exponent_n"] - 2) < 0.1
    assert abs(n["paths_slope_vs_L_log_n"] - 1) < 0.1 and n["paths_fit_r2"] > 0.99
    # the grid's largest net: L = 16, n = 64 -> 64^17 paths
    assert n["max_log10_paths"] == pytest.approx(17 * math.log10(64))
    assert "params_paths" in result.figures


def test_runner_stores_the_paths_record(tmp_path) -> None:
    record = run_experiment("paths", out=tmp_path)
    assert record["verdict"]["status"] == "reproduced"
    assert (tmp_path / "figures" / "paths" / "params_paths.png").is_file()


# ---------------------------------------------------------------- the verdict, on hand-made fits
def _fits(**overrides: float) -> PathFits:
    """Fits on which both checks hold, with ``overrides``."""
    fields = {
        "params_exponent_L": 1.0,
        "params_exponent_n": 2.0,
        "params_fit_r2": 1.0,
        "paths_slope_vs_L_log_n": 1.0,
        "paths_intercept": 2.5,
        "paths_fit_r2": 0.999,
        "max_log10_paths": 30.0,
        "max_params": 1000,
    }
    return PathFits(**(fields | overrides))


def test_paths_verdict_is_reproduced_citing_the_fitted_exponents() -> None:
    verdict = paths_verdict(_fits(params_exponent_L=1.012, params_exponent_n=1.951))
    assert verdict.status == "reproduced"
    assert verdict.reason == (
        "fits over the grid: params ∝ L^1.012·n^1.951 (R² 1.0000); "
        "log(paths) = 1.000·L·log n + 2.50 (R² 0.9990)."
    )
    assert path_checks is paths_checks


@pytest.mark.parametrize(
    ("overrides", "failed"),
    [
        ({"params_exponent_L": 1.0501}, "params ∝ L^1.050"),
        ({"params_exponent_L": 0.9499}, "params ∝ L^0.950"),
        ({"params_exponent_n": 2.1001}, "n^2.100"),
        ({"params_exponent_n": 1.8999}, "n^1.900"),
        ({"paths_slope_vs_L_log_n": 1.1001}, "log(paths) = 1.100·L·log n"),
        ({"paths_slope_vs_L_log_n": 0.8999}, "log(paths) = 0.900·L·log n"),
        ({"paths_fit_r2": 0.99}, "(R² 0.9900)"),  # R² must exceed 0.99
    ],
)
def test_paths_verdict_is_not_reproduced_naming_the_failed_fit(overrides, failed) -> None:
    assert sum(not ok for ok in paths_checks(_fits(**overrides)).values()) == 1
    verdict = paths_verdict(_fits(**overrides))
    assert verdict.status == "not reproduced"
    assert verdict.reason.startswith("failed: ") and failed in verdict.reason


@pytest.mark.parametrize(
    "overrides",
    [
        {"params_exponent_L": 1.0499},
        {"params_exponent_L": 0.9501},
        {"params_exponent_n": 2.0999},
        {"params_exponent_n": 1.9001},
        {"paths_slope_vs_L_log_n": 1.0999},
        {"paths_slope_vs_L_log_n": 0.9001},
        {"paths_fit_r2": 0.9901},
    ],
)
def test_paths_verdict_holds_just_inside_each_tolerance(overrides) -> None:
    assert paths_verdict(_fits(**overrides)).status == "reproduced"
