"""The expressivity experiment: counts behind its verdict, on a small config."""

from __future__ import annotations

from dataclasses import replace

import pytest

from deeplimits.experiments import NullProgress, get_experiment
from deeplimits.experiments.expressivity import ExpressivityConfig, ExpressivityExperiment

_SMALL = replace(
    ExpressivityConfig.quick(),
    saw_depths=(1, 3, 6),
    random_depths=(1, 2, 4),
    random_seeds=2,
    fit_steps=50,
    fit_points=128,
)


@pytest.fixture(scope="module")
def result():
    return ExpressivityExperiment().run(_SMALL, NullProgress())


def test_is_registered_on_slide_two() -> None:
    assert get_experiment("expressivity") is ExpressivityExperiment
    assert ExpressivityExperiment.slide == 2


def test_sawtooth_counts_are_two_to_the_depth_against_a_linear_shallow_bound(result) -> None:
    n = result.numbers
    assert n["sawtooth_pieces"] == [2, 8, 64]
    assert n["sawtooth_params"] == [7, 19, 37]
    assert n["shallow_equal_params_max_pieces"] == [3, 7, 13]


def test_random_init_counts_grow_near_linearly_in_neurons(result) -> None:
    n = result.numbers
    assert n["random_deep_neurons"] == [16, 32, 64]
    assert 0.5 <= n["random_line_regions_vs_neurons_exponent"] <= 1.5
    # a line count is at most Π(n_l + 1) and at least 1
    for regions, L in zip(n["random_deep_line_regions"], (1, 2, 4), strict=True):
        assert 1 <= regions <= 17**L


def test_verdict_follows_from_the_counts(result) -> None:
    assert result.verdict.status == "reproduced"
    assert "4096" not in result.verdict.reason  # built from this config's numbers
    assert "64 pieces from 37 params" in result.verdict.reason


def test_fit_reports_error_and_regions_used(result) -> None:
    fit = next(t for t in result.tables if t.title.startswith("(c)"))
    assert {row[0] for row in fit.rows} == {"deep-narrow", "shallow-wide"}
    n = result.numbers
    assert n["fit_target_pieces"] == 16
    assert n["fit_deep_pieces_median"] >= 1 and n["fit_shallow_pieces_median"] >= 1
    assert set(result.figures) == {"params_paths", "regions", "region_maps", "sawtooth_fit"}
