"""The expressivity experiment: counts behind its verdict, on a small config; the verdict function
on hand-made counts either side of every threshold."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from deeplimits.constructions import mlp, sawtooth, tent_power
from deeplimits.experiments import NullProgress, get_experiment, list_experiments
from deeplimits.experiments.expressivity import (
    ExpressivityConfig,
    ExpressivityExperiment,
    FitSummary,
    expressivity_checks,
    expressivity_verdict,
    fit_checks,
    r2_needed,
    train_together,
)

_SMALL = replace(
    ExpressivityConfig.quick(),
    saw_depths=(1, 3, 6),
    random_depths=(1, 2, 4),
    random_seeds=2,
    fit_steps=50,
    fit_points=128,
    fit_noise=(0.0, 0.001, 1.0),
    fit_noise_starts=2,
    fit_restarts=3,
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


def test_verdict_follows_from_the_counts_and_fits(result) -> None:
    n = result.numbers
    fit = FitSummary(
        teeth_depth=4,
        r2_needed=n["fit_r2_needed"],
        construction_r2=n["fit_construction_r2"],
        construction_params=n["fit_params"],
        noise=tuple(n["fit_noise"]),
        noise_found=tuple(n["fit_noise_found"]),
        random_found=n["fit_random_deep_found"],
        random_starts=n["fit_random_starts"],
        shallow_best_r2=n["fit_shallow_best_r2"],
        shallow_max_pieces=9,
    )
    checks = fit_checks(fit)
    assert result.verdict.status == ("reproduced" if all(checks.values()) else "not reproduced")
    assert "4096" not in result.verdict.reason  # built from this config's numbers
    if result.verdict.status == "reproduced":
        assert "64 pieces from 37 params" in result.verdict.reason


def test_fits_separate_representable_from_found(result) -> None:
    n = result.numbers
    assert n["fit_target_pieces"] == 16 and n["fit_params"] == 25  # 6k + 1 for k = 4
    assert n["fit_r2_needed"] == 1 - 1 / 32
    assert n["fit_construction_r2"] > 1 - 1e-6  # the untrained construction is the target
    assert n["fit_noise"] == [0.0, 0.001, 1.0] and n["fit_random_starts"] == 3
    assert all(f in (0.0, 0.5, 1.0) for f in n["fit_noise_found"])  # 2 starts per σ
    assert 0.0 <= n["fit_random_deep_found"] <= 1.0
    # 2k + 1 = 9 pieces cannot fit 16 teeth: R² stays below the threshold (bound, not training)
    assert n["fit_shallow_best_r2"] < n["fit_r2_needed"]
    titles = [t.title for t in result.tables]
    assert titles[2].startswith("(c i)") and titles[3].startswith("(c ii, iii)")
    assert [row[1] for row in result.tables[2].rows] == [2, 2, 2]  # starts per σ
    assert [(row[0], row[2]) for row in result.tables[3].rows] == [
        ("random, deep", 3),
        ("random, shallow", 3),
        ("spread kinks, shallow", 1),
    ]
    assert set(result.figures) == {"regions", "region_maps", "sawtooth_fit"}  # no paths figure


def test_train_together_trains_each_net_as_if_alone() -> None:
    x = torch.linspace(0, 1, 64)[:, None]
    y = tent_power(x, 2)
    torch.manual_seed(3)
    nets = [mlp([1, 3, 3, 1]) for _ in range(3)]
    alone = [copy.deepcopy(n) for n in nets]
    losses = train_together(nets, x, y, 30)
    for net, ref, loss in zip(nets, alone, losses, strict=True):
        opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 30)
        for _ in range(30):
            opt.zero_grad()
            torch.mean((ref(x) - y) ** 2).backward()
            opt.step()
            sched.step()
        for p, q in zip(net.parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
        with torch.no_grad():
            assert loss == pytest.approx(float(torch.mean((ref(x) - y) ** 2)), rel=1e-5)
    assert losses[0] != losses[1]  # different starts, different nets


def test_train_together_refuses_mixed_or_unsupported_nets() -> None:
    x, y = torch.zeros(4, 1), torch.zeros(4, 1)
    with pytest.raises(ValueError, match="one architecture"):
        train_together([mlp([1, 2, 1]), mlp([1, 3, 1])], x, y, 1)
    with pytest.raises(ValueError, match="Linear and ReLU"):
        train_together([mlp([1, 2, 1], nn.Tanh)], x, y, 1)
    with pytest.raises(ValueError, match="empty"):
        train_together([], x, y, 1)


def test_the_construction_the_fits_start_from_is_the_target() -> None:
    """(c) perturbs sawtooth(4): unperturbed, it computes the target itself."""
    x = torch.rand(1000, 1)
    torch.testing.assert_close(sawtooth(4)(x), tent_power(x, 4), rtol=0, atol=1e-6)


# ---------------------------------------------------------------- the verdict, on hand-made counts
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
_FIT = FitSummary(
    teeth_depth=4,
    r2_needed=0.96875,
    construction_r2=1.0,
    construction_params=25,
    noise=(0.0, 0.01, 0.1),
    noise_found=(1.0, 0.75, 0.0),
    random_found=0.0,
    random_starts=16,
    shallow_best_r2=0.2,
    shallow_max_pieces=9,
)


def _verdict(saw=_SAW, rand=_RAND, depths=(1, 2, 4), fit=_FIT):
    return expressivity_verdict(saw, rand, fit, random_depths=depths, random_width=16)


def _n_failed(saw=_SAW, rand=_RAND, depths=(1, 2, 4), fit=_FIT) -> int:
    checks = expressivity_checks(saw, rand, random_depths=depths, random_width=16)
    return sum(not ok for ok in (checks | fit_checks(fit)).values())


def test_r2_needed_is_halfway_between_perfect_and_one_missed_tooth() -> None:
    assert r2_needed(4) == 1 - 1 / 32  # missing one of 16 teeth: R² <= 1 - 1/16
    assert r2_needed(1) == 0.75


def test_expressivity_verdict_is_reproduced_citing_the_counts_and_fits() -> None:
    verdict = _verdict()
    assert verdict.status == "reproduced"
    assert verdict.reason.startswith("exact counts and fits: sawtooth: exactly 2^L pieces")
    assert (
        "sawtooth: exactly 2^L pieces for L in [1, 3] (L=3: 8 pieces from 19 params, vs at most "
        "7 for one hidden layer with the same params)"
    ) in verdict.reason
    assert "neurons^1.00 over depths [1, 2, 4] (width 16; 1.00-1.00 per neuron)" in verdict.reason
    assert (
        "representable: the deep construction (25 params) fits the 16-piece target with test R² "
        "1.0000 >= 0.9688; learnable near it: from the construction + N(0, 0.01²) noise, 0.75 of "
        "the starts train to R² >= the threshold, >= 1/2; not found from random starts: 0.00 of "
        "16 random starts of the same deep net reach it, < 1/2; the shallow net of equal params "
        "(at most 9 pieces) at its best over 16 random starts and one with spread kinks: R² "
        "0.2000 < 0.9688."
    ) in verdict.reason
    checks = expressivity_checks(_SAW, _RAND, random_depths=(1, 2, 4), random_width=16)
    assert len(checks) == 3 and all(checks.values())
    assert len(fit_checks(_FIT)) == 4 and all(fit_checks(_FIT).values())


@pytest.mark.parametrize(
    ("arguments", "failed"),
    [
        ({"saw": _saw((1, 7, 3, 2, 7, 3), (3, 19, 8, 8, 19, 7))}, "sawtooth: exactly 2^L"),
        ({"saw": _saw((1, 7, 2, 2, 8, 3), (3, 19, 8, 8, 19, 7))}, "sawtooth: exactly 2^L"),
        # the deepest sawtooth's pieces only equal the shallow bound
        ({"saw": _saw((1, 7, 2, 2, 7, 3), (3, 19, 8, 8, 19, 8))}, "vs at most 8 for one hidden"),
        ({"rand": _rand([1.0, 4.0, 16.0], [1.0, 2.0, 3.99], [1.0, 2.0, 4.0])}, "neurons^0.50"),
        ({"rand": _rand([1.0, 4.0, 16.0], [1.0, 8.0, 64.1], [1.0, 8.0, 64.1])}, "neurons^1.50"),
        ({"rand": _rand([16.0, 32.0, 64.0], [16.0, 32.0, 64.0], [16.0, 31.9, 80.0])}, "shallow"),
        ({"rand": _rand([16.0, 32.0, 64.0], [16.0, 32.0, 64.0], [16.0, 40.0, 63.9])}, "shallow"),
        ({"depths": (1, 1, 1)}, "shallow-wide has at least as many"),  # no depth >= 2 to compare
        ({"fit": replace(_FIT, construction_r2=0.9687)}, "representable: the deep construction"),
        ({"fit": replace(_FIT, noise_found=(1.0, 0.49, 0.0))}, "at no noise σ > 0 in [0.01, 0.1]"),
        ({"fit": replace(_FIT, noise=(0.0,), noise_found=(1.0,))}, "at no noise σ > 0 in []"),
        ({"fit": replace(_FIT, random_found=0.5)}, "0.50 of 16 random starts"),
        ({"fit": replace(_FIT, shallow_best_r2=0.96875)}, "R² 0.9688 < 0.9688"),
        ({"fit": replace(_FIT, shallow_best_r2=math.nan)}, "R² nan < 0.9688"),  # all diverged
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


@pytest.mark.parametrize(
    ("fit", "reach"),
    [
        (replace(_FIT, construction_r2=0.96875), 0.01),  # R² exactly at the threshold counts
        (replace(_FIT, noise_found=(1.0, 0.5, 0.0)), 0.01),  # exactly half found counts
        (replace(_FIT, noise_found=(0.0, 0.0, 0.5)), 0.1),  # the largest σ found is cited
        (replace(_FIT, noise_found=(0.0, 0.6, 1.0)), 0.1),
        (replace(_FIT, random_found=0.49), 0.01),
        (replace(_FIT, shallow_best_r2=0.9687), 0.01),
    ],
)
def test_fit_checks_hold_on_the_inclusive_boundaries_and_cite_the_reach(fit, reach) -> None:
    assert all(fit_checks(fit).values())
    assert fit.reach() == reach
    assert f"from the construction + N(0, {reach:g}²) noise" in _verdict(fit=fit).reason


def test_reach_ignores_the_unperturbed_construction() -> None:
    fit = replace(_FIT, noise_found=(1.0, 0.0, 0.0))
    assert fit.reach() is None  # σ = 0 is the construction itself, not a start near it
    assert _verdict(fit=fit).status == "not reproduced"


def test_expressivity_checks_refuse_depths_that_do_not_match_the_rows() -> None:
    """rand_rows are one per depth in random_depths order: a length mismatch is an error, not a
    silent comparison of the wrong rows."""
    with pytest.raises(ValueError, match="zip"):
        expressivity_checks(_SAW, _RAND, random_depths=(1, 2), random_width=16)
    with pytest.raises(ValueError, match="zip"):
        expressivity_checks(_SAW, _RAND, random_depths=(1, 2, 4, 8), random_width=16)


def test_reach_refuses_noise_and_fractions_of_different_lengths() -> None:
    """One fraction per σ: a missing one is an error, not a σ silently dropped."""
    with pytest.raises(ValueError, match="zip"):
        replace(_FIT, noise_found=(1.0, 0.75)).reach()
    with pytest.raises(ValueError, match="zip"):
        replace(_FIT, noise_found=(1.0, 0.75, 0.0, 1.0)).reach()
