"""The expressivity experiment: counts behind its verdict, on a small config; the verdict function
on hand-made counts either side of every threshold."""

from __future__ import annotations

from dataclasses import replace

import pytest

from deeplimits.experiments import NullProgress, get_experiment, list_experiments
from deeplimits.experiments.expressivity import (
    ExpressivityConfig,
    ExpressivityExperiment,
    expressivity_checks,
    expressivity_verdict,
)
from deeplimits.experiments.paths import PathFits

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


def test_is_registered_on_slide_two_right_after_paths() -> None:
    assert get_experiment("expressivity") is ExpressivityExperiment
    assert ExpressivityExperiment.slide == 2
    names = [e.name for e in list_experiments()]
    assert names.index("expressivity") == names.index("paths") + 1  # the slide's order


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


# ---------------------------------------------------------------- the verdict, on hand-made counts
_FITS = PathFits(1.0, 2.0, 1.0, 1.0, 2.5, 0.999, 30.0, 1000)


def _saw(*rows: tuple[int, int, int, int, int, int]) -> list[dict]:
    keys = ("depth L", "params (both)", "deep pieces", "2^L", "shallow params", "shallow bound N+1")
    return [dict(zip(keys, r, strict=True)) for r in rows]


_SAW = _saw((1, 7, 2, 2, 7, 3), (3, 19, 8, 8, 19, 7))


def _rand(neurons: list[float], deep: list[float], shallow: list[float]) -> list[dict]:
    return [
        {
            "deep neurons": n,
            "deep regions on line (mean)": d,
            "shallow regions on line (mean)": s,
        }
        for n, d, s in zip(neurons, deep, shallow, strict=True)
    ]


_RAND = _rand([16.0, 32.0, 64.0], [16.0, 32.0, 64.0], [16.0, 40.0, 80.0])


def _verdict(saw=_SAW, rand=_RAND, depths=(1, 2, 4), fits=_FITS):
    return expressivity_verdict(fits, saw, rand, random_depths=depths, random_width=16)


def _n_failed(saw=_SAW, rand=_RAND, depths=(1, 2, 4), fits=_FITS) -> int:
    checks = expressivity_checks(fits, saw, rand, random_depths=depths, random_width=16)
    return sum(not ok for ok in checks.values())


def test_expressivity_verdict_is_reproduced_citing_the_counts() -> None:
    verdict = _verdict()
    assert verdict.status == "reproduced"
    assert verdict.reason.startswith("exact counts: params ∝ L^1.000·n^2.000")
    assert (
        "sawtooth: exactly 2^L pieces for L in [1, 3] (L=3: 8 pieces from 19 params, vs at most "
        "7 for one hidden layer with the same params)"
    ) in verdict.reason
    assert "neurons^1.00 over depths [1, 2, 4] (width 16; 1.00-1.00 per neuron)" in verdict.reason
    checks = expressivity_checks(_FITS, _SAW, _RAND, random_depths=(1, 2, 4), random_width=16)
    assert len(checks) == 5 and all(checks.values())


@pytest.mark.parametrize(
    ("arguments", "failed"),
    [
        ({"fits": PathFits(1.2, 2.0, 1.0, 1.0, 2.5, 0.999, 30.0, 1000)}, "params ∝ L^1.200"),
        ({"saw": _saw((1, 7, 3, 2, 7, 3), (3, 19, 8, 8, 19, 7))}, "sawtooth: exactly 2^L"),
        ({"saw": _saw((1, 7, 2, 2, 8, 3), (3, 19, 8, 8, 19, 7))}, "sawtooth: exactly 2^L"),
        # the deepest sawtooth's pieces only equal the shallow bound
        ({"saw": _saw((1, 7, 2, 2, 7, 3), (3, 19, 8, 8, 19, 8))}, "vs at most 8 for one hidden"),
        ({"rand": _rand([1.0, 4.0, 16.0], [1.0, 2.0, 3.99], [1.0, 2.0, 4.0])}, "neurons^0.50"),
        ({"rand": _rand([1.0, 4.0, 16.0], [1.0, 8.0, 64.1], [1.0, 8.0, 64.1])}, "neurons^1.50"),
        ({"rand": _rand([16.0, 32.0, 64.0], [16.0, 32.0, 64.0], [16.0, 31.9, 80.0])}, "shallow"),
        ({"rand": _rand([16.0, 32.0, 64.0], [16.0, 32.0, 64.0], [16.0, 40.0, 63.9])}, "shallow"),
        ({"depths": (1, 1, 1)}, "shallow-wide has at least as many"),  # no depth >= 2 to compare
    ],
)
def test_expressivity_verdict_is_not_reproduced_naming_the_failed_check(arguments, failed) -> None:
    verdict = _verdict(**arguments)
    assert verdict.status == "not reproduced"
    assert verdict.reason.startswith("failed: ") and failed in verdict.reason
    assert _n_failed(**arguments) == 1


@pytest.mark.parametrize(
    "rand",
    [
        _rand([1.0, 4.0, 16.0], [1.0, 2.0, 4.0], [1.0, 2.0, 4.0]),  # slope exactly 0.5, equal
        _rand([1.0, 4.0, 16.0], [1.0, 8.0, 64.0], [1.0, 8.0, 64.0]),  # slope exactly 1.5
        _rand([16.0, 32.0, 64.0], [16.0, 32.0, 64.0], [15.0, 32.0, 64.0]),  # depth 1 not compared
    ],
)
def test_expressivity_verdict_holds_on_the_inclusive_boundaries(rand) -> None:
    assert _verdict(rand=rand).status == "reproduced"


def test_expressivity_checks_refuse_depths_that_do_not_match_the_rows() -> None:
    """rand_rows are one per depth in random_depths order: a length mismatch is an error, not a
    silent comparison of the wrong rows."""
    with pytest.raises(ValueError, match="zip"):
        expressivity_checks(_FITS, _SAW, _RAND, random_depths=(1, 2), random_width=16)
    with pytest.raises(ValueError, match="zip"):
        expressivity_checks(_FITS, _SAW, _RAND, random_depths=(1, 2, 4, 8), random_width=16)
