"""The continuity experiment: quick preset runs, verdict computed from its own numbers, and the
verdict function on hand-made numbers either side of every threshold."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from deeplimits.experiments import NullProgress, get_experiment
from deeplimits.experiments.continuity import (
    ContinuityConfig,
    ContinuityExperiment,
    continuity_checks,
    continuity_verdict,
)


def test_continuity_is_registered_on_slide_1() -> None:
    exp = get_experiment("continuity")
    assert exp is ContinuityExperiment
    assert exp.slide == 1


@pytest.mark.slow
def test_small_run_reproduces_the_continuity_claims() -> None:
    config = replace(
        ContinuityConfig.quick(), widths=(4, 32), steps=(100, 600), n_eval=40, n_paths=6
    )
    result = ContinuityExperiment().run(config, NullProgress())
    n = result.numbers
    # Each check of the verdict, recomputed from the numbers it reports.
    assert n["min_sup_error"] >= 0.5
    assert n["l2_last"] < 0.5 * n["l2_first"]
    assert n["min_delta_times_lipschitz"] >= 0.8
    assert all(c == n["n_paths"] for c in n["paths_crossing"].values())
    for m in n["digits"].values():
        assert m["certified_le_found"]
        assert m["lipschitz_lower"] <= m["lipschitz_upper"] <= m["lipschitz_product"] + 1e-9
        assert 0 < m["median_ratio_flip_to_nearest"] < 1
        assert math.isfinite(m["median_flip"])
    assert result.verdict.status == "reproduced", result.verdict.reason
    assert set(result.figures) == {"step_fits", "paths", "distances"}


# ---------------------------------------------------------------- the verdict, on hand-made numbers
def _fits(edits: dict[tuple[int, int], dict] | None = None) -> list[dict]:
    """Widths 4 and 64 at 100 and 1000 steps, on which every check holds; ``edits`` maps
    (width, steps) to the fields to change in that fit."""
    # width, steps, sup error, L2 error, δ, measured Lipschitz constant (δ·L = 1 throughout)
    table = [
        (4, 100, 0.6, 0.2, 0.1, 10.0),
        (4, 1000, 0.6, 0.1, 0.05, 20.0),
        (64, 100, 0.6, 0.12, 0.05, 20.0),
        (64, 1000, 0.6, 0.05, 0.01, 100.0),
    ]
    keys = ("width", "steps", "sup_error", "l2_error", "delta", "lipschitz_measured")
    fits = [dict(zip(keys, row, strict=True)) for row in table]
    for f in fits:
        f.update((edits or {}).get((f["width"], f["steps"]), {}))
    return fits


_LAST, _MID = (64, 1000), (4, 1000)


def _measured(**overrides):
    """Keyword arguments of continuity_verdict on which every check holds, with ``overrides``."""
    digit = {"certified_le_found": True, "median_ratio_flip_to_nearest": 0.3}
    kwargs = {
        "fits": _fits(),
        "n_paths": 12,
        "crossing": {"end-to-end": 12, "fine, mapped": 12},
        "max_step": {"end-to-end": 0.07, "fine, mapped": 0.2},
        "step_bound_e2e": 0.1,
        "digits": {"end-to-end": dict(digit), "fine, mapped": dict(digit)},
    }
    return kwargs | overrides


def _digits(e2e: dict | None = None, mapped: dict | None = None) -> dict:
    digit = {"certified_le_found": True, "median_ratio_flip_to_nearest": 0.3}
    return {"end-to-end": digit | (e2e or {}), "fine, mapped": digit | (mapped or {})}


def test_verdict_is_reproduced_when_every_check_holds_and_cites_the_numbers() -> None:
    verdict = continuity_verdict(**_measured())
    assert verdict.status == "reproduced"
    assert verdict.reason.startswith("continuous networks: (a) sup error >= 0.5 for all 4 fits")
    assert "L2 error falls from 0.2000 (width 4, 100 steps) to 0.0500 (width 64, 1000 steps)" in (
        verdict.reason
    )
    assert "max step in p 0.070 <= Lipschitz bound 0.100" in verdict.reason
    assert "= 0.300 (end-to-end), 0.300 (mapped) < 0.5" in verdict.reason
    assert all(continuity_checks(**_measured()).values())


@pytest.mark.parametrize(
    ("overrides", "failed"),
    [
        ({"fits": _fits({_LAST: {"sup_error": 0.4999}})}, "(a) sup error >= 0.5 for all 4 fits"),
        # l2_last exactly l2_first / 2
        ({"fits": _fits({_LAST: {"l2_error": 0.1}})}, "(a) L2 error falls from 0.2000"),
        # widest net: L2 rises by more than 5 % from 100 to 1000 steps
        (
            {"fits": _fits({(64, 100): {"l2_error": 0.04}, _LAST: {"l2_error": 0.042 + 1e-9}})},
            "(a) L2 error falls",
        ),
        (
            {"fits": _fits({_MID: {"delta": 0.25, "lipschitz_measured": 3.19}})},
            "(a) δ·L >= 0.8·jump for all 4 fits with a transition (min 0.797)",
        ),
        # δ_last equals the first δ: it does not shrink
        (
            {"fits": _fits({_LAST: {"delta": 0.1, "lipschitz_measured": 10.0}})},
            "δ shrinks to 1.00e-01",
        ),
        (
            {"fits": [f | {"delta": math.nan} for f in _fits()]},
            "(a) δ·L >= 0.8·jump for all 0 fits with a transition (min nan)",
        ),
        ({"n_paths": 0, "crossing": {"end-to-end": 0, "fine, mapped": 0}}, "(b) all 0 paths"),
        ({"crossing": {"end-to-end": 12, "fine, mapped": 11}}, "(b) all 12 paths cross p = 0.5"),
        ({"crossing": {"end-to-end": 11, "fine, mapped": 12}}, "(b) all 12 paths cross p = 0.5"),
        ({"step_bound_e2e": 0.0699}, "max step in p 0.070 <= Lipschitz bound 0.070"),
        ({"digits": _digits(e2e={"certified_le_found": False})}, "(b) certified radius"),
        ({"digits": _digits(mapped={"certified_le_found": False})}, "(b) certified radius"),
        ({"digits": _digits(e2e={"median_ratio_flip_to_nearest": 0.5})}, "0.500 (end-to-end)"),
        ({"digits": _digits(mapped={"median_ratio_flip_to_nearest": 0.5})}, "0.500 (mapped)"),
    ],
)
def test_verdict_is_not_reproduced_naming_the_check_that_fails(overrides, failed) -> None:
    checks = continuity_checks(**_measured(**overrides))
    assert sum(not ok for ok in checks.values()) == 1
    verdict = continuity_verdict(**_measured(**overrides))
    assert verdict.status == "not reproduced"
    assert verdict.reason.startswith("failed: ")
    assert failed in verdict.reason


@pytest.mark.parametrize(
    "overrides",
    [
        {"fits": _fits({_LAST: {"sup_error": 0.5}})},
        {"fits": _fits({_LAST: {"l2_error": 0.0999}})},  # just below l2_first / 2
        # widest net: L2 rises by exactly the 5 % allowed from 100 to 1000 steps
        {"fits": _fits({(64, 100): {"l2_error": 0.04}, _LAST: {"l2_error": 0.04 * 1.05}})},
        {"fits": _fits({_MID: {"delta": 0.25, "lipschitz_measured": 3.2}})},  # δ·L exactly 0.8
        {"step_bound_e2e": 0.07},  # max step exactly at the bound
        {"digits": _digits(e2e={"median_ratio_flip_to_nearest": 0.4999})},
        {"digits": _digits(mapped={"median_ratio_flip_to_nearest": 0.4999})},
    ],
)
def test_verdict_holds_on_the_boundary_of_each_inclusive_threshold(overrides) -> None:
    assert continuity_verdict(**_measured(**overrides)).status == "reproduced"


def test_checks_read_the_most_steps_and_the_first_transition_in_record_order() -> None:
    """Three checkpoints: the last (1000 steps), not the second (500), is compared. The first
    fit (4, 100) has no transition, so δ_first is the second record's 0.1; δ_last = 0.07 < 0.1
    shrinks, although it exceeds the third record's 0.05."""
    table = [
        (4, 100, 0.6, 0.2, math.nan, 10.0),
        (4, 500, 0.6, 0.15, 0.1, 10.0),
        (4, 1000, 0.6, 0.1, 0.05, 20.0),
        (64, 100, 0.6, 0.12, 0.05, 20.0),
        (64, 500, 0.6, 0.11, 0.09, 20.0),
        (64, 1000, 0.6, 0.05, 0.07, 100.0),
    ]
    keys = ("width", "steps", "sup_error", "l2_error", "delta", "lipschitz_measured")
    fits = [dict(zip(keys, row, strict=True)) for row in table]
    checks = continuity_checks(**_measured(fits=fits))
    assert all(checks.values()), checks
    text = " ".join(checks)
    assert "to 0.0500 (width 64, 1000 steps)" in text and "δ shrinks to 7.00e-02" in text
    # δ_last = 0.1 equals δ_first (the second record): not shrinking
    fits[-1]["delta"] = 0.1
    assert sum(not ok for ok in continuity_checks(**_measured(fits=fits)).values()) == 1
