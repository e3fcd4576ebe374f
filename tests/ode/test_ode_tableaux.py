"""Butcher tableaux: validation on construction and the order conditions of every method."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from deeplimits.errors import InvalidArgumentError, UnknownNameError
from deeplimits.ode import TABLEAUX, ButcherTableau, get_tableau, order_condition_residuals


@pytest.mark.parametrize("name", sorted(TABLEAUX))
def test_solution_weights_satisfy_order_conditions_of_declared_order(name: str) -> None:
    tab = TABLEAUX[name]
    res = order_condition_residuals(tab.a_matrix(), np.array(tab.b), tab.order)
    assert max(abs(r) for r in res) < 1e-13
    if tab.order < 5:
        # The declared order is the true order: one order more fails.
        res = order_condition_residuals(tab.a_matrix(), np.array(tab.b), tab.order + 1)
        assert max(abs(r) for r in res) > 1e-3


@pytest.mark.parametrize("name", ["bosh3", "dopri5", "tsit5"])
def test_embedded_weights_have_declared_error_order(name: str) -> None:
    tab = TABLEAUX[name]
    assert tab.b_err is not None and tab.error_order is not None
    b_hat = np.array(tab.b) - np.array(tab.b_err)
    res = order_condition_residuals(tab.a_matrix(), b_hat, tab.error_order)
    assert max(abs(r) for r in res) < 1e-13
    res = order_condition_residuals(tab.a_matrix(), b_hat, tab.error_order + 1)
    assert max(abs(r) for r in res) > 1e-4


@pytest.mark.parametrize("name", ["bosh3", "dopri5", "tsit5"])
@pytest.mark.parametrize("theta", [0.25, 0.5, 0.8])
def test_dense_output_weights_satisfy_order_conditions_inside_the_step(
    name: str, theta: float
) -> None:
    tab = TABLEAUX[name]
    b_theta = sum(theta ** (p + 1) * np.array(row) for p, row in enumerate(tab.dense))
    res = order_condition_residuals(tab.a_matrix(), b_theta, tab.dense_order, theta)
    assert max(abs(r) for r in res) < 1e-13


def _tab(**kw: object) -> ButcherTableau:
    base: dict[str, object] = dict(
        name="test", a=[[], [0.5]], b=[0.0, 1.0], c=[0.0, 0.5], order=2
    )
    base.update(kw)
    return ButcherTableau.from_lists(**base)  # type: ignore[arg-type]


def test_valid_custom_tableau_builds() -> None:
    assert _tab().num_stages == 2


def test_node_inconsistent_with_row_sum_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match=r"c\[1\]"):
        _tab(c=[0.0, 0.4])


def test_weights_not_summing_to_one_are_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match=r"sum\(b\)"):
        _tab(b=[0.1, 1.0])


def test_row_on_or_above_diagonal_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match="strictly lower triangular"):
        _tab(a=[[0.0], [0.5]])


def test_overclaimed_order_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match="order conditions"):
        _tab(order=3)


def test_bad_fsal_claim_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match="fsal"):
        _tab(fsal=True)


def test_tableau_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        TABLEAUX["rk4"].order = 3  # type: ignore[misc]


def test_unknown_tableau_name_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError, match="dopri5") as info:
        get_tableau("dopri8")
    assert "tsit5" in info.value.valid
