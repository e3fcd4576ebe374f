"""The gradients experiment on a tiny config: numbers, figures and a verdict computed from them;
the verdict functions (MLPs and CNNs) on hand-made records either side of every threshold (both
outcomes)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from deeplimits.errors import InvalidArgumentError, UnknownNameError
from deeplimits.experiments import NullProgress, get_experiment
from deeplimits.experiments.gradients import (
    CNN_ARCHITECTURES,
    METHODS,
    OPTIMISERS,
    GradientsConfig,
    GradientsExperiment,
    _digits,
    _train,
    cnn_checks,
    cnn_verdict,
    compensation,
    digits_cnn,
    gradients_checks,
    gradients_verdict,
    gradients_verdicts,
    mlp,
)


@pytest.fixture(scope="module")
def tiny_result():
    config = GradientsConfig(
        depths=(2, 10),
        width=16,
        steps=40,
        probe_batch=64,
        sgd_lrs=(0.1, 1.0),
        cnn_depth=4,
        cnn_width=4,
        cnn_steps=8,
        cnn_sgd_lrs=(0.01, 0.1),
    )
    return config, GradientsExperiment().run(config, NullProgress())


def test_registered_on_slide_3():
    assert get_experiment("gradients") is GradientsExperiment
    assert GradientsExperiment.slide == 3
    assert GradientsConfig.quick().depths == (2, 8, 32)
    assert max(GradientsConfig.full().depths) == 64


def test_tiny_run_measures_every_method_depth_and_optimiser(tiny_result):
    config, result = tiny_result
    acc = result.numbers["train_accuracy"]
    assert set(acc) == set(OPTIMISERS) == {"sgd", "adam"}
    for per_method in acc.values():
        assert set(per_method) == {m.name for m in METHODS}
        assert all(set(v) == {"2", "10"} for v in per_method.values())
        assert all(0.0 <= a <= 1.0 for v in per_method.values() for a in v.values())
    assert {lr for v in result.numbers["sgd_lr"].values() for lr in v.values()} <= {0.1, 1.0}
    assert result.numbers["bound_holds_everywhere"] is True
    # The naive init vanishes at depth 10 (gain 0.01·√16 = 0.04 per layer), He does not.
    ratios = result.numbers["grad_ratio_first_last"]
    assert ratios["N(0, 0.01²)"]["10"] < 1e-6
    assert ratios["He"]["10"] > 1e-2
    assert set(result.figures) == {
        "grad_per_layer",
        "bound_vs_measured",
        "accuracy_vs_depth",
        "cnn_grad_per_module",
    }
    assert result.figures["grad_per_layer"].axes[0].get_yscale() == "log"
    assert len(result.figures["accuracy_vs_depth"].axes) == 2  # one panel per optimiser
    assert len(result.tables[0].rows) == len(METHODS) * len(config.depths) * 2


def test_verdict_follows_the_numbers(tiny_result):
    config, result = tiny_result
    acc = result.numbers["train_accuracy"]["sgd"]
    naive_fails = acc["N(0, 0.01²)"]["10"] < config.fails_below
    families_train = all(
        max(acc[m.name]["10"] for m in METHODS if m.family == f) >= config.trains_above
        for f in ("initialisation", "constraint", "residual")
    )
    expected = "reproduced" if naive_fails and families_train else "not reproduced"
    assert result.verdict.status == expected
    assert result.numbers["verdict_by_optimiser"]["sgd"] == expected


def test_no_deep_net_is_inconclusive():
    config = GradientsConfig(
        depths=(2, 3),
        width=8,
        steps=2,
        probe_batch=16,
        sgd_lrs=(0.1,),
        cnn_depth=2,
        cnn_width=2,
        cnn_steps=1,
    )
    result = GradientsExperiment().run(config, NullProgress())
    assert result.verdict.status == "inconclusive"


def test_sgd_keeps_the_rate_with_the_lowest_loss_and_drops_a_diverging_one():
    x, y = _digits(torch.device("cpu"))

    def make():
        torch.manual_seed(0)
        return mlp(64, 16, 10, 2, nn.Tanh)

    # lr 1e4 overflows to a non-finite loss; of the finite ones 0.1 beats 1e-5 in 40 steps
    config = GradientsConfig(steps=40, sgd_lrs=(1e4, 1e-5, 0.1))
    _, loss, lr = _train(make, x, y, config, "sgd")
    assert lr == 0.1
    _, loss_small, lr_small = _train(make, x, y, replace(config, sgd_lrs=(1e-5,)), "sgd")
    assert lr_small == 1e-5 and loss < loss_small
    with pytest.raises(UnknownNameError, match="rmsprop"):
        _train(make, x, y, config, "rmsprop")


@pytest.mark.parametrize("rates", [(), (0.1, 0.0), (math.inf,), (-0.1,)])
def test_config_refuses_bad_sgd_rates_naming_them(rates):
    with pytest.raises(InvalidArgumentError, match=r"sgd_lrs=.*positive finite"):
        GradientsConfig(sgd_lrs=rates)


# ---------------------------------------------------------------- the verdict, on hand-made records
_CONFIG = GradientsConfig(depths=(2, 8))  # thresholds: 1e-6, 0.3, 0.8; deep from 8


def _records(edits: dict[tuple, dict] | None = None) -> list[dict]:
    """Every method at depths 2 and 8 for both optimisers: the naive init vanishes and fails,
    every remedy trains, the bound holds. ``edits`` maps (method, depth) to the fields to change
    in the SGD record, (method, depth, "adam") in the Adam record."""
    records = []
    for optimiser in OPTIMISERS:
        for m in METHODS:
            for depth in _CONFIG.depths:
                naive = m.family == "naive"
                key = (m.name, depth) if optimiser == "sgd" else (m.name, depth, optimiser)
                records.append(
                    {
                        "method": m.name,
                        "family": m.family,
                        "depth": depth,
                        "optimiser": optimiser,
                        "grad_ratio_first_last": 1e-9 if naive else 0.5,
                        "bound": 2.0,
                        "measured_ratio": 1.0,
                        "train_accuracy": 0.1 if naive else 0.95,
                    }
                    | (edits or {}).get(key, {})
                )
    return records


_NAIVE = METHODS[0].name


def test_gradients_verdict_is_reproduced_when_the_naive_init_fails_and_remedies_train() -> None:
    verdict = gradients_verdict(_records(), _CONFIG)
    assert verdict.status == "reproduced"
    assert verdict.reason.startswith(
        f"SGD reproduced (sgd: {_NAIVE} at depth 8: first/last-layer gradient 1.0e-09 < 1e-06; "
        f"{_NAIVE} at depth 8: sgd training accuracy 0.100 < 0.3; "
        "best initialisation remedy at depth 8 (Xavier) reaches sgd training accuracy 0.950 >= 0.8"
    )
    assert (
        "bound >= measured ‖∇x ℓ‖/‖∇y ℓ‖ for all 14 nets.) Beside it, Adam reproduced (adam: "
        in verdict.reason
    )
    assert verdict.reason.endswith(
        "Adam does not train the naive init at any depth with vanished gradients, not from "
        "depth 8."
    )
    assert len(gradients_checks(_records(), _CONFIG)) == 6
    assert len(gradients_checks(_records(), _CONFIG, "adam")) == 6


def _only_family_member_training(family: str, name: str) -> dict:
    """Edits making every member of ``family`` but ``name`` fail to train at depth 8 (SGD)."""
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
    adam_edits = {(*k, "adam"): v for k, v in edits.items()}
    assert gradients_verdicts(_records(adam_edits), _CONFIG)["adam"].status == "reproduced"


@pytest.mark.parametrize(
    ("edits", "failed"),
    [
        ({(_NAIVE, 8): {"grad_ratio_first_last": 1e-6}}, "last-layer gradient 1.0e-06 < 1e-06"),
        (
            {(_NAIVE, 8): {"train_accuracy": 0.3}},
            f"{_NAIVE} at depth 8: sgd training accuracy 0.300",
        ),
        (
            {(m.name, 8): {"train_accuracy": 0.7999} for m in METHODS[1:4]},
            "best initialisation remedy at depth 8 (Xavier) reaches sgd training accuracy 0.800",
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
    assert verdict.reason.startswith("SGD not reproduced (failed: ") and failed in verdict.reason
    assert "Beside it, Adam reproduced (adam: " in verdict.reason  # Adam's records untouched


def test_gradients_verdict_judges_adam_on_its_own_records_beside_sgd() -> None:
    """Adam training the naive init at depth 8 fails Adam's verdict, not the experiment's: the
    status is SGD's; Adam's failure and how deep it compensates are in the reason."""
    edits = {(_NAIVE, 8, "adam"): {"train_accuracy": 0.65}}
    verdicts = gradients_verdicts(_records(edits), _CONFIG)
    assert verdicts["sgd"].status == "reproduced"
    assert verdicts["adam"].status == "not reproduced"
    assert verdicts["adam"].reason == (
        f"failed: {_NAIVE} at depth 8: adam training accuracy 0.650 < 0.3."
    )
    verdict = gradients_verdict(_records(edits), _CONFIG)
    assert verdict.status == "reproduced"
    assert "Beside it, Adam not reproduced (failed: " in verdict.reason
    assert verdict.reason.endswith(
        "Adam trains the naive init despite vanished gradients up to depth 8."
    )
    # the SGD records' failure alone does not leak into Adam's verdict
    edits = {(_NAIVE, 8): {"train_accuracy": 0.65}}
    assert gradients_verdicts(_records(edits), _CONFIG)["adam"].status == "reproduced"
    with pytest.raises(UnknownNameError, match="optimiser"):
        gradients_checks(_records(), _CONFIG, "rmsprop")


_DEEP = GradientsConfig(depths=(2, 8, 32, 128))


def _naive_records(accuracy: dict[int, float], ratio: dict[int, float] | None = None) -> list:
    return [
        {
            "method": _NAIVE,
            "depth": d,
            "optimiser": "adam",
            "train_accuracy": a,
            "grad_ratio_first_last": (ratio or {}).get(d, 1e-9),
        }
        for d, a in accuracy.items()
    ]


@pytest.mark.parametrize(
    ("accuracy", "ratio", "expected"),
    [
        ({2: 1.0, 8: 0.65, 32: 0.1, 128: 0.1}, None, (8, 32)),
        ({2: 1.0, 8: 0.65, 32: 0.3, 128: 0.2999}, None, (32, 128)),  # 0.3 counts as training
        ({2: 1.0, 8: 0.1, 32: 0.5, 128: 0.1}, None, (32, 8)),  # the first failure is cited
        ({2: 1.0, 8: 0.9, 32: 0.9, 128: 0.9}, None, (128, None)),
        ({2: 1.0, 8: 0.1, 32: 0.1, 128: 0.1}, None, (None, 8)),
        # a depth whose gradient did not vanish (ratio >= 1e-6) says nothing about compensation
        ({2: 1.0, 8: 0.9, 32: 0.1, 128: 0.1}, {8: 1e-6, 32: 1e-6}, (None, 128)),
        ({2: 1.0, 8: 0.9, 32: 0.1, 128: 0.1}, {8: 0.99e-6}, (8, 32)),
    ],
)
def test_compensation_finds_how_deep_adam_still_trains_a_vanished_net(accuracy, ratio, expected):
    assert compensation(_naive_records(accuracy, ratio), _DEEP, "adam") == expected


def test_gradients_verdict_without_a_deep_net_is_inconclusive() -> None:
    config = GradientsConfig(depths=(2, 7))
    records = [r | {"depth": 7} if r["depth"] == 8 else r for r in _records()]
    verdict = gradients_verdict(records, config)
    assert verdict.status == "inconclusive"
    assert verdict.reason == "no depth >= 8 in (2, 7)"
    assert {v.status for v in gradients_verdicts(records, config).values()} == {"inconclusive"}
    assert gradients_verdict(records, GradientsConfig(depths=(2, 7), deep_from=7)).status == (
        "reproduced"
    )


# ---------------------------------------------------------------- the CNN part
def test_tiny_run_measures_the_three_cnns_per_module(tiny_result):
    config, result = tiny_result
    cnn = result.numbers["cnn"]
    assert CNN_ARCHITECTURES == ("plain", "batchnorm", "residual")
    assert set(cnn["train_accuracy"]) == set(CNN_ARCHITECTURES)
    assert all(0.0 <= a <= 1.0 for a in cnn["train_accuracy"].values())
    assert set(cnn["sgd_lr"].values()) <= {0.01, 0.1}
    assert set(cnn["diverged"]) <= set(CNN_ARCHITECTURES)
    # rows per module owning parameters: 4 convs (+ 4 BatchNorms) or stem + 3 residual blocks,
    # then the linear head
    kinds = {a: [row["kind"] for row in rows] for a, rows in cnn["grad_per_module"].items()}
    assert kinds["plain"] == ["Conv2d"] * 4 + ["Linear"]
    assert kinds["batchnorm"] == ["Conv2d", "BatchNorm2d"] * 4 + ["Linear"]
    assert kinds["residual"] == ["Conv2d"] + ["ResidualBlock"] * 3 + ["Linear"]
    # the verdict is the pure function's, on the records of the CNN table
    table = result.tables[1]
    records = [dict(zip(table.columns, row, strict=True)) for row in table.rows]
    assert [r["architecture"] for r in records] == list(CNN_ARCHITECTURES)
    assert cnn["verdict"] == cnn_verdict(records, config).status
    lines = result.figures["cnn_grad_per_module"].axes[0].get_lines()
    assert [line.get_label() for line in lines] == list(CNN_ARCHITECTURES)
    assert [len(line.get_xdata()) for line in lines] == [5, 5, 5]  # BatchNorm rows left out


def test_digits_cnn_shares_conv_weights_and_differs_only_by_skips_and_batchnorm():
    x = torch.randn(5, 64)
    nets = {}
    for arch in CNN_ARCHITECTURES:
        torch.manual_seed(3)
        nets[arch] = digits_cnn(arch, 3, 2)
        assert nets[arch](x).shape == (5, 10)
    convs = {
        a: [m.weight for m in net.modules() if isinstance(m, nn.Conv2d)] for a, net in nets.items()
    }
    assert all(len(c) == 3 for c in convs.values())
    for arch in ("batchnorm", "residual"):
        for w, w_plain in zip(convs[arch], convs["plain"], strict=True):
            torch.testing.assert_close(w, w_plain, rtol=0, atol=0)
    # with the blocks' convs zeroed, ReLU(0) = 0: the plain net's features are 0 after the
    # stem, the residual net's are the stem's output (identity skips) -- computed by hand
    with torch.no_grad():
        for arch in ("plain", "residual"):
            for conv in [m for m in nets[arch].modules() if isinstance(m, nn.Conv2d)][1:]:
                conv.weight.zero_()
                conv.bias.zero_()
        head = nets["plain"][-1]
        torch.testing.assert_close(nets["plain"](x), head.bias.expand(5, 10))
        stem = nn.Sequential(*list(nets["residual"])[:3], nn.Flatten())
        torch.testing.assert_close(nets["residual"](x), head(stem(x)))
    with pytest.raises(UnknownNameError, match="resnet"):
        digits_cnn("resnet", 3, 2)
    with pytest.raises(InvalidArgumentError, match="depth=1"):
        digits_cnn("plain", 1, 2)


def _cnn_records(plain_ratio: float, plain_acc: float) -> list[dict]:
    """BatchNorm: ratio 10, accuracy 0.9; residual: ratio 1, accuracy 0.6; plain as given."""
    values = {"plain": (plain_ratio, plain_acc), "batchnorm": (10.0, 0.9), "residual": (1.0, 0.6)}
    return [
        {"architecture": a, "grad_ratio_first_last": r, "train_accuracy": acc}
        for a, (r, acc) in values.items()
    ]


_CNN = GradientsConfig()  # thresholds: ratio factor 100, accuracy gap 0.1


def test_cnn_verdict_is_reproduced_on_the_inclusive_side_of_both_thresholds() -> None:
    assert (_CNN.cnn_ratio_factor, _CNN.cnn_accuracy_gap) == (100.0, 0.1)
    # exactly 100x below residual's ratio 1 and exactly 0.1 below residual's accuracy 0.6 (both
    # products exact in binary floating point: 0.01 * 100 == 1.0, 0.5 + 0.1 == 0.6)
    verdict = cnn_verdict(_cnn_records(0.01, 0.5), _CNN)
    assert verdict.status == "reproduced"
    assert verdict.reason.startswith("CNNs: ")  # the report shows it beside the MLPs' verdict
    assert "1.0e-02" in verdict.reason and "0.500" in verdict.reason
    assert all(cnn_checks(_cnn_records(1e-7, 0.1), _CNN).values())


@pytest.mark.parametrize(
    ("plain_ratio", "plain_acc", "failed"),
    [
        # only 99x below the residual's ratio (but > 100x below BatchNorm's 10)
        (1.0 / 99, 0.1, "ratio 1.0e-02 is at least 100x below residual's"),
        # a vanished gradient, yet the plain net trains to within 0.05 of the residual's 0.6
        (1e-7, 0.55, "accuracy 0.550 is at least 0.1 below residual's"),
        # the plain net trains better than both
        (1e-7, 0.95, "accuracy 0.950 is at least 0.1 below batchnorm's"),
        # no vanishing at all
        (1.0, 0.1, "ratio 1.0e+00 is at least 100x below batchnorm's"),
    ],
)
def test_cnn_verdict_is_not_reproduced_naming_the_failed_check(
    plain_ratio, plain_acc, failed
) -> None:
    verdict = cnn_verdict(_cnn_records(plain_ratio, plain_acc), _CNN)
    assert verdict.status == "not reproduced"
    assert failed in verdict.reason
    checks = cnn_checks(_cnn_records(plain_ratio, plain_acc), _CNN)
    assert sum(not ok for ok in checks.values()) == verdict.reason.count(";") + 1


@pytest.mark.parametrize(
    "fields", [{"cnn_depth": 1}, {"cnn_width": 0}, {"cnn_steps": 0}, {"cnn_sgd_lrs": ()}]
)
def test_config_refuses_bad_cnn_settings_naming_them(fields) -> None:
    with pytest.raises(InvalidArgumentError, match=next(iter(fields))):
        GradientsConfig(**fields)
