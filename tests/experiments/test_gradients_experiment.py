"""The gradients experiment on a tiny config: numbers, figures and a verdict computed from them."""

from __future__ import annotations

import pytest

from deeplimits.experiments import NullProgress, get_experiment
from deeplimits.experiments.gradients import METHODS, GradientsConfig, GradientsExperiment


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
