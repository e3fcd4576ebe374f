"""The gradients experiment on a tiny config: numbers, figures and a verdict computed from them;
the verdict function on hand-made records either side of every threshold (both outcomes)."""

from __future__ import annotations

import pytest

from deeplimits.experiments import NullProgress, get_experiment
from deeplimits.experiments.gradients import (
    METHODS,
    GradientsConfig,
    GradientsExperiment,
    gradients_checks,
    gradients_verdict,
)


@pytest.fixture(scope="module")
def tiny_result():
    config = GradientsConfig(depths=(2, 10), width=16, steps=40, probe_batch=64)
    return config, GradientsExperiment().run(config, NullProgress())


def test_registered_on_slide_3():
    assert get_experiment("gradients") is GradientsExperiment
    assert GradientsExperiment.slide == 3
    assert GradientsConfig.quick().depths == (2, 8, 32)
    assert max(GradientsConfig.full().depths) == 128


def test_tiny_run_measures_every_method_and_depth(tiny_result):
    config, result = tiny_result
    acc = result.numbers["train_accuracy"]
    assert set(acc) == {m.name for m in METHODS}
    assert all(set(v) == {"2", "10"} for v in acc.values())
    assert all(0.0 <= a <= 1.0 for v in acc.values() for a in v.values())
    assert result.numbers["bound_holds_everywhere"] is True
    # The naive init vanishes at depth 10 (gain 0.01·√16 = 0.04 per layer), He does not.
    ratios = result.numbers["grad_ratio_first_last"]
    assert ratios["N(0, 0.01²)"]["10"] < 1e-6
    assert ratios["He"]["10"] > 1e-2
    assert set(result.figures) == {"grad_per_layer", "bound_vs_measured", "accuracy_vs_depth"}
    assert result.figures["grad_per_layer"].axes[0].get_yscale() == "log"
    assert len(result.tables[0].rows) == len(METHODS) * len(config.depths)


def test_verdict_follows_the_numbers(tiny_result):
    config, result = tiny_result
    acc = result.numbers["train_accuracy"]
    naive_fails = acc["N(0, 0.01²)"]["10"] < config.fails_below
    families_train = all(
        max(acc[m.name]["10"] for m in METHODS if m.family == f) >= config.trains_above
        for f in ("initialisation", "constraint", "residual")
    )
    expected = "reproduced" if naive_fails and families_train else "not reproduced"
    assert result.verdict.status == expected


def test_no_deep_net_is_inconclusive():
    config = GradientsConfig(depths=(2, 3), width=8, steps=2, probe_batch=16)
    result = GradientsExperiment().run(config, NullProgress())
    assert result.verdict.status == "inconclusive"


# ---------------------------------------------------------------- the verdict, on hand-made records
_CONFIG = GradientsConfig(depths=(2, 8))  # thresholds: 1e-6, 0.3, 0.8; deep from 8


def _records(edits: dict[tuple[str, int], dict] | None = None) -> list[dict]:
    """Every method at depths 2 and 8: the naive init vanishes and fails, every remedy trains,
    the bound holds; ``edits`` maps (method, depth) to the fields to change."""
    records = []
    for m in METHODS:
        for depth in _CONFIG.depths:
            naive = m.family == "naive"
            records.append(
                {
                    "method": m.name,
                    "family": m.family,
                    "depth": depth,
                    "grad_ratio_first_last": 1e-9 if naive else 0.5,
                    "bound": 2.0,
                    "measured_ratio": 1.0,
                    "train_accuracy": 0.1 if naive else 0.95,
                }
                | (edits or {}).get((m.name, depth), {})
            )
    return records


_NAIVE = METHODS[0].name


def test_gradients_verdict_is_reproduced_when_the_naive_init_fails_and_remedies_train() -> None:
    verdict = gradients_verdict(_records(), _CONFIG)
    assert verdict.status == "reproduced"
    assert verdict.reason.startswith(
        f"{_NAIVE} at depth 8: first/last-layer gradient 1.0e-09 < 1e-06; "
        f"{_NAIVE} at depth 8: training accuracy 0.100 < 0.3; "
        "best initialisation remedy at depth 8 (Xavier) reaches training accuracy 0.950 >= 0.8"
    )
    assert verdict.reason.endswith("bound >= measured ‖∇x ℓ‖/‖∇y ℓ‖ for all 14 nets.")
    assert len(gradients_checks(_records(), _CONFIG)) == 6


def _only_family_member_training(family: str, name: str) -> dict:
    """Edits making every member of ``family`` but ``name`` fail to train at depth 8."""
    return {(m.name, 8): {"train_accuracy": 0.2} for m in METHODS if m.family == family} | {
        (name, 8): {"train_accuracy": 0.8}
    }


@pytest.mark.parametrize(
    "edits",
    [
        {(_NAIVE, 8): {"train_accuracy": 0.2999}},
        {(_NAIVE, 8): {"grad_ratio_first_last": 0.99e-6}},
        {(_NAIVE, 2): {"train_accuracy": 0.9, "grad_ratio_first_last": 1.0}},  # shallow: not judged
        _only_family_member_training("initialisation", "He"),  # the best member counts, at 0.8
        _only_family_member_training("constraint", "orthogonal constraint"),
        {("residual (1/√L branches)", 8): {"train_accuracy": 0.8}},
        {("He", 2): {"bound": 1.0 - 1e-5}},  # bound equal to measured within 1e-5 relative
    ],
)
def test_gradients_verdict_holds_on_the_inclusive_side_of_each_threshold(edits) -> None:
    assert gradients_verdict(_records(edits), _CONFIG).status == "reproduced"


@pytest.mark.parametrize(
    ("edits", "failed"),
    [
        ({(_NAIVE, 8): {"grad_ratio_first_last": 1e-6}}, "last-layer gradient 1.0e-06 < 1e-06"),
        ({(_NAIVE, 8): {"train_accuracy": 0.3}}, f"{_NAIVE} at depth 8: training accuracy 0.300"),
        (
            {(m.name, 8): {"train_accuracy": 0.7999} for m in METHODS[1:4]},
            "best initialisation remedy at depth 8 (Xavier) reaches training accuracy 0.800",
        ),
        (
            {(m.name, 8): {"train_accuracy": 0.5} for m in METHODS if m.family == "constraint"},
            "best constraint remedy",
        ),
        ({("residual (1/√L branches)", 8): {"train_accuracy": 0.1}}, "best residual remedy"),
        ({("He", 2): {"bound": 0.9999}}, "bound >= measured ‖∇x ℓ‖/‖∇y ℓ‖ for all 14 nets"),
    ],
)
def test_gradients_verdict_is_not_reproduced_naming_the_failed_check(edits, failed) -> None:
    checks = gradients_checks(_records(edits), _CONFIG)
    assert sum(not ok for ok in checks.values()) == 1
    verdict = gradients_verdict(_records(edits), _CONFIG)
    assert verdict.status == "not reproduced"
    assert verdict.reason.startswith("failed: ") and failed in verdict.reason


def test_gradients_verdict_without_a_deep_net_is_inconclusive() -> None:
    config = GradientsConfig(depths=(2, 7))
    records = [r | {"depth": 7} if r["depth"] == 8 else r for r in _records()]
    verdict = gradients_verdict(records, config)
    assert verdict.status == "inconclusive"
    assert verdict.reason == "no depth >= 8 in (2, 7)"
    assert gradients_verdict(records, GradientsConfig(depths=(2, 7), deep_from=7)).status == (
        "reproduced"
    )
