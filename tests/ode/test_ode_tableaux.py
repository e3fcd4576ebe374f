"""Butcher tableaux: validation on construction and the order conditions of every method."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from deeplimits.errors import InvalidArgumentError, UnknownNameError
from deeplimits.ode import (
    TABLEAUX,
    ButcherTableau,
    _tableaux,
    get_tableau,
    order_condition_residuals,
    stability_function,
)
from deeplimits.ode._tableaux import IMPLICIT_TABLEAUX, ImplicitTableau


@pytest.mark.parametrize("name", sorted(TABLEAUX))
def test_solution_weights_satisfy_order_conditions_of_declared_order(name: str) -> None:
    tab = TABLEAUX[name]
    res = order_condition_residuals(tab.a_matrix(), np.array(tab.b), tab.order)
    assert max(abs(r) for r in res) < 1e-13
    if tab.order < 5:
        # The declared order is the true order: one order more fails.
        res = order_condition_residuals(tab.a_matrix(), np.array(tab.b), tab.order + 1)
        assert max(abs(r) for r in res) > 1e-3


@pytest.mark.parametrize("name", sorted(n for n, t in TABLEAUX.items() if t.adaptive))
def test_embedded_weights_have_declared_error_order(name: str) -> None:
    tab = TABLEAUX[name]
    assert tab.b_err is not None and tab.error_order is not None
    b_hat = np.array(tab.b) - np.array(tab.b_err)
    res = order_condition_residuals(tab.a_matrix(), b_hat, tab.error_order)
    assert max(abs(r) for r in res) < 1e-13
    res = order_condition_residuals(tab.a_matrix(), b_hat, tab.error_order + 1)
    assert max(abs(r) for r in res) > 1e-4


@pytest.mark.parametrize("name", ["bosh3", "dopri5", "tsit5", "dopri8"])
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
        get_tableau("dopri7")
    assert "tsit5" in info.value.valid


# Published coefficients: (b, c[, b_hat]) of each explicit method; gamma of each ESDIRK.
_PUBLISHED = {
    "euler": ([1.0], [0.0], None),
    "midpoint": ([0.0, 1.0], [0.0, 0.5], None),
    "rk4": ([1 / 8, 3 / 8, 3 / 8, 1 / 8], [0.0, 1 / 3, 2 / 3, 1.0], None),  # Kutta's 3/8 rule
    # Bogacki & Shampine (1989)
    "bosh3": ([2 / 9, 1 / 3, 4 / 9, 0.0], [0.0, 0.5, 0.75, 1.0], [7 / 24, 1 / 4, 1 / 3, 1 / 8]),
    # Dormand & Prince (1980)
    "dopri5": (
        [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0],
        [0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0],
        [5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40],
    ),
    # Tsitouras (2011): the nodes
    "tsit5": (None, [0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0], None),
}
# Kvaerno (2004): gamma of each method (the paper prints 0.4358665215, 0.5728160625, 0.26)
_GAMMA = {"implicit_euler": 1.0, "kvaerno3": 0.4358665215, "kvaerno4": 0.5728160625,
          "kvaerno5": 0.26}


@pytest.mark.parametrize("name", list(_PUBLISHED))
def test_each_explicit_builder_gives_the_published_coefficients(name: str) -> None:
    """Each builder called afresh (its construction runs the order, FSAL and interpolant
    checks) gives the published weights and nodes, and the same tableau as ``TABLEAUX``."""
    tab = getattr(_tableaux, f"_{name}")()
    b, c, b_hat = _PUBLISHED[name]
    if b is not None:
        np.testing.assert_allclose(tab.b, b, rtol=1e-15, atol=1e-16)
    np.testing.assert_allclose(tab.c, c, rtol=1e-15, atol=0)
    if b_hat is not None:
        np.testing.assert_allclose(np.array(tab.b) - np.array(tab.b_err), b_hat, atol=1e-16)
    assert tab == TABLEAUX[name]
    assert tab.fsal == (name in ("bosh3", "dopri5", "tsit5"))


def _torchdiffeq_tableau(name: str) -> tuple[list[list[float]], list[float], list[float],
                                               list[float] | None, list[float] | None]:
    """torchdiffeq 0.2.5's coefficients of ``name`` as ``(a, b, c, b_err, mid)``: its adaptive
    solvers' ``_ButcherTableau`` (``mid`` = the weights of ``y(1/2)``, for the Dormand-Prince
    pairs) and, for the fixed-grid Heun methods, the tableau printed in its ``fixed_grid.py``."""
    from torchdiffeq._impl import adaptive_heun, bosh3, dopri5, dopri8, fehlberg2

    if name in ("heun2", "heun3"):
        # torchdiffeq's fixed_grid.py rows (c_i, a_i1, ...) and the last row (0, b...)
        rows = ([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1 / 2, 1 / 2]] if name == "heun2" else
                [[0.0, 0.0, 0.0, 0.0], [1 / 3, 1 / 3, 0.0, 0.0], [2 / 3, 0.0, 2 / 3, 0.0],
                 [0.0, 1 / 4, 0.0, 3 / 4]])
        a = [r[1:i + 1] for i, r in enumerate(rows[:-1])]
        return a, rows[-1][1:], [r[0] for r in rows[:-1]], None, None
    solver = {"adaptive_heun": adaptive_heun.AdaptiveHeunSolver, "bosh3": bosh3.Bosh3Solver,
              "dopri5": dopri5.Dopri5Solver, "dopri8": dopri8.Dopri8Solver,
              "fehlberg2": fehlberg2.Fehlberg2}[name]
    tab = solver.tableau
    b_err = tab.c_error.tolist()
    if name == "dopri5":
        # torchdiffeq estimates dopri5's error with other embedded weights (b_hat_1 =
        # 1951/21600); we use those of scipy's RK45 and Hairer's DOPRI5 (b_hat_1 = 5179/57600),
        # whose error weights scipy keeps as E = b_hat - b.
        from scipy.integrate import RK45

        b_err = (-RK45.E).tolist()
    return (
        [[]] + [beta.tolist() for beta in tab.beta],
        tab.c_sol.tolist(),
        [0.0, *tab.alpha.tolist()],
        b_err,
        # torchdiffeq's other solvers carry a midpoint-rule placeholder as ``mid``; only the
        # Dormand-Prince pairs' is a true interpolant value (ours is a cubic Hermite for them).
        solver.mid.tolist() if name in ("dopri5", "dopri8") else None,
    )


_TORCHDIFFEQ_NAMES = ["heun2", "heun3", "adaptive_heun", "fehlberg2", "bosh3", "dopri5", "dopri8"]


@pytest.mark.parametrize("name", _TORCHDIFFEQ_NAMES)
def test_each_explicit_builder_gives_torchdiffeqs_coefficients(name: str) -> None:
    """The builder called afresh gives torchdiffeq's matrix, weights, nodes, error weights and
    the interpolant's value at theta = 1/2 (torchdiffeq's ``mid``), and equals ``TABLEAUX``."""
    tab = getattr(_tableaux, f"_{name}")()
    a, b, c, b_err, mid = _torchdiffeq_tableau(name)
    assert len(tab.a) == len(a)
    for ours, theirs in zip(tab.a, a, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-15, atol=1e-16)
    np.testing.assert_allclose(tab.b, b, rtol=1e-15, atol=1e-16)
    np.testing.assert_allclose(tab.c, c, rtol=1e-15, atol=1e-16)
    if b_err is None:
        assert tab.b_err is None
    else:
        assert tab.b_err is not None
        np.testing.assert_allclose(tab.b_err, b_err, rtol=1e-13, atol=1e-16)
    if mid is not None:
        # y(1/2) = y0 + h sum_p (1/2)^(p+1) sum_i dense[p][i] K_i
        at_half = sum(np.array(row) * 0.5 ** (p + 1) for p, row in enumerate(tab.dense))
        np.testing.assert_allclose(at_half, mid, rtol=1e-13, atol=1e-15)
    assert tab == TABLEAUX[name]


@pytest.mark.parametrize("name", list(_GAMMA))
def test_each_implicit_builder_gives_the_published_gamma(name: str) -> None:
    tab = getattr(_tableaux, f"_{name}")()
    assert tab.gamma == pytest.approx(_GAMMA[name], abs=1e-10)
    assert all(row[len(row) - 1] == tab.gamma for row in tab.a[1:])  # one diagonal
    assert tab.c[-1] == 1.0 and tab.r_infinity() == pytest.approx(0.0, abs=1e-12)
    assert tab == IMPLICIT_TABLEAUX[name]


def test_get_tableau_finds_explicit_and_implicit_tableaux() -> None:
    assert get_tableau("dopri5") is TABLEAUX["dopri5"]
    assert get_tableau("kvaerno4") is IMPLICIT_TABLEAUX["kvaerno4"]


_HEUN = dict(name="heun", a=[[], [1.0]], b=[0.5, 0.5], c=[0.0, 1.0], order=2)
_HEUN_FSAL = dict(name="heun_fsal", a=[[], [1.0], [0.5, 0.5]], b=[0.5, 0.5, 0.0],
                  c=[0.0, 1.0, 1.0], order=2, fsal=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"a": [], "b": [], "c": []}, "b must not be empty"),
        ({"c": [0.0]}, r"len\(a\)=2, len\(b\)=2, len\(c\)=1 must all be equal"),
        ({"a": [[]]}, r"len\(a\)=1, len\(b\)=2, len\(c\)=2 must all be equal"),
        ({"order": 0}, "order=0 must be >= 1"),
        ({"order": 3}, "weights b do not satisfy the order conditions for declared order 3"),
        ({"b_err": [0.5]}, "b_err has 1 entries, expected 2"),
        ({"b_err": [-0.5, 0.5]}, "error_order is required when b_err is given"),
        ({"b_err": [0.25, 0.25], "error_order": 1}, r"sum\(b_err\)=0.5 must be 0"),
        ({"b_err": [0.5, 0.5], "error_order": 1}, r"sum\(b_err\)=1.0 must be 0"),
        ({"b_err": [-0.5, 0.5], "error_order": 2},
         "weights b - b_err do not satisfy the order conditions for declared order 2"),
        ({"dense": [[1.0]]}, "dense row 0 has 1 entries, expected 3"),
        # theta = 1 sums the rows: (1, 0, 1) depends on f(t+h, y1)
        ({"dense": [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]},
         r"dense output at theta=1 must not depend on f\(t\+h, y1\)"),
        ({"dense": [[1.0, 0.0, 0.0]]}, "dense output at theta=1 must equal the solution weights b"),
    ],
)
def test_each_invalid_tableau_is_refused_naming_the_rule(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        ButcherTableau.from_lists(**(_HEUN | kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"c": [0.0, 1.0, 1.0 - 1e-13]},  # c[-1] != 1 exactly (consistent to 1e-12)
        {"b": [0.5, 0.4, 0.1], "order": 1},  # b[-1] != 0
        {"a": [[], [1.0], [0.6, 0.4]]},  # a[-1] != b[:-1]
    ],
)
def test_each_fsal_condition_is_checked(kwargs: dict) -> None:
    assert ButcherTableau.from_lists(**_HEUN_FSAL).fsal  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"fsal=True needs c\[-1\] == 1, b\[-1\] == 0"):
        ButcherTableau.from_lists(**(_HEUN_FSAL | kwargs))  # type: ignore[arg-type]


# The trapezoidal rule as a 2-stage ESDIRK (stiffly accurate, A-stable, R(-inf) = -1).
_TRAP = dict(name="trap", a=[[0.0], [0.5, 0.5]], b=[0.5, 0.5], c=[0.0, 1.0], order=2)
# 3 stages, gamma = 1/2, stiffly accurate, order 1: R(-inf) = 0 and A-stable, so L-stable.
_L_STABLE = dict(a=[[0.0], [0.5, 0.5], [0.25, 0.25, 0.5]], b=[0.25, 0.25, 0.5],
                 c=[0.0, 1.0, 1.0], order=1, l_stable=True)
_NOT_STIFF = dict(name="ns", a=[[0.0], [0.25, 0.25], [0.25, 0.5, 0.25]], b=[1 / 6, 2 / 3, 1 / 6],
                  c=[0.0, 0.5, 1.0], order=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"a": [[0.0]], "b": [1.0], "c": [0.0], "order": 1}, "needs at least 2 stages"),
        ({"c": [0.0]}, r"len\(a\)=2, len\(b\)=2, len\(c\)=1 must all be equal"),
        ({"a": [[0.0], [0.5, 0.5], [0.3, 0.3, 0.4]]}, r"len\(a\)=3, len\(b\)=2, len\(c\)=2"),
        ({"a": [[0.0], [1.0]]}, r"row a\[1\] has 1 entries; a diagonally implicit method needs "
                                "exactly 2"),
        ({"c": [0.0, 0.9]}, r"c\[1\]=0.9 differs from sum\(a\[1\]\)=1.0"),
        ({"a": [[0.1], [0.5, 0.5]], "c": [0.1, 1.0]}, r"a\[0\]=\(0.1,\) must be \(0.0,\)"),
        ({"a": [[0.0], [1.0, 0.0]]}, r"the diagonal a\[1\]\[1\]=0.0 must be positive"),
        ({"a": [[0.0], [1.5, -0.5]]}, r"the diagonal a\[1\]\[1\]=-0.5 must be positive"),
        ({"a": [[0.0], [0.25, 0.25], [0.3, 0.3, 0.4]], "b": [0.3, 0.3, 0.4],
          "c": [0.0, 0.5, 1.0]}, r"a\[2\]\[2\]=0.4 differs from a\[1\]\[1\]=0.25"),
        ({"b": [0.5, 0.6]}, r"sum\(b\)=1.1 must be 1"),
        ({"order": 0}, "order=0 must be >= 1"),
        ({"order": 3}, "weights b do not satisfy the order conditions for declared order 3"),
        ({"b_err": [0.5]}, "b_err has 1 entries, expected 2"),
        ({"b_err": [0.5, -0.5]}, "error_order is required when b_err is given"),
        ({"b_err": [0.25, 0.25], "error_order": 1}, r"sum\(b_err\)=0.5 must be 0"),
        ({"b_err": [0.5, 0.5], "error_order": 1}, r"sum\(b_err\)=1.0 must be 0"),
        ({"b_err": [0.5, -0.5], "error_order": 2},
         "weights b - b_err do not satisfy the order conditions for declared order 2"),
        ({"l_stable": True}, r"declared L-stable, but \|R\(-1e8\)\|=1.000e\+00"),
        # R(z) -> 4 (b1 - 1/4) at -inf for this family: R(-inf) = 1e-7 while |R(-1e8)| < 1e-6
        ({**_L_STABLE, "a": [[0.0], [0.5, 0.5], [0.25 - 2.5e-8, 0.25 + 2.5e-8, 0.5]],
          "b": [0.25 - 2.5e-8, 0.25 + 2.5e-8, 0.5]},
         r"declared L-stable, but \|R\(-1e8\)\|=1.0\d\de-07 and \|R\(-inf\)\|=1.000e-07"),
        # R = (1 + 0.9 z) / (1 - z/20)^2: R(-inf) = 0 but R decays too slowly, R(-1e8) = -3.6e-6
        ({**_L_STABLE, "a": [[0.0], [0.05, 0.05], [0.475, 0.475, 0.05]],
          "b": [0.475, 0.475, 0.05], "c": [0.0, 0.1, 1.0]},
         # (R(-inf) is 0 up to round-off, R(-1e8) to 1e-3)
         r"declared L-stable, but \|R\(-1e8\)\|=3.60\de-06 and \|R\(-inf\)\|=\d\.\d{3}e-1\d"),
        # R(-inf) = 0 but |R(iy)| peaks at 9/(4 sqrt 2) at y = sqrt(175)/3 (see below)
        ({**_L_STABLE, "a": [[0.0], [0.2, 0.2], [0.4, 0.4, 0.2]], "b": [0.4, 0.4, 0.2],
          "c": [0.0, 0.4, 1.0]},
         r"\|R\(iy\)\| reaches 1.5909902576697\d+ > 1 at y=4.40959 \(not A-stable\)"),
        ({"dense": [[1.0]]}, "dense row 0 has 1 entries, expected 2"),
        ({"dense": [[1.0, 0.0]]}, "dense output at theta=1 must equal the solution weights b"),
        # c[-1] one part in 1e13 below 1: consistent, but not stiffly accurate
        ({"a": [[0.0], [0.5, 0.5 - 1e-13]], "b": [0.5 + 1e-13, 0.5 - 1e-13],
          "c": [0.0, 1.0 - 1e-13], "dense": [[0.5, 0.5]]},
         "dense output needs a stiffly accurate tableau"),
    ],
)
def test_each_invalid_implicit_tableau_is_refused_naming_the_rule(kwargs: dict, message: str
                                                                   ) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        ImplicitTableau.from_lists(**(_TRAP | kwargs))  # type: ignore[arg-type]


def test_implicit_tableau_data_by_hand() -> None:
    trap = ImplicitTableau.from_lists(**_TRAP)  # type: ignore[arg-type]
    lstab = ImplicitTableau.from_lists(**(_TRAP | _L_STABLE))  # type: ignore[arg-type]
    assert lstab.l_stable and lstab.r_infinity() == 0.0 and abs(lstab.stability(-1e8)) < 1e-9
    assert trap.gamma == 0.5 and trap.stiffly_accurate and trap.fsal and not trap.adaptive
    assert trap.r_infinity() == pytest.approx(-1.0, abs=1e-12)  # (1 + z/2) / (1 - z/2)
    assert trap.stability(-2.0) == pytest.approx(0.0, abs=1e-15)
    assert trap.stage_terms == ((), ((0, 0.5),)) and trap.b_terms == ((0, 0.5), (1, 0.5))
    # the cubic Hermite interpolant by default: at theta = 1 it is b
    assert np.sum(np.array(trap.dense), axis=0) == pytest.approx([0.5, 0.5])
    # not stiffly accurate: no FSAL interpolant by default (a given one is refused); dense
    # output is the Hermite with f(t+h, y1) appended, as for a non-FSAL explicit tableau
    # b == a[-1] but the last node one part in 1e13 below 1 (consistent to 1e-12): its last
    # stage is not f(t + h, y1), so not stiffly accurate
    near = ImplicitTableau.from_lists(**(_TRAP | {"c": [0.0, 1.0 - 1e-13]}))  # type: ignore[arg-type]
    assert not near.stiffly_accurate and not near.fsal and near.dense == ()
    ns = ImplicitTableau.from_lists(**_NOT_STIFF)  # type: ignore[arg-type]
    assert not ns.stiffly_accurate and not ns.fsal and ns.gamma == 0.25 and ns.dense == ()
    with pytest.raises(InvalidArgumentError, match="stiffly accurate"):
        ImplicitTableau.from_lists(**_NOT_STIFF, dense=[[1 / 6, 2 / 3, 1 / 6]])  # type: ignore[arg-type]


def _hermite_by_basis(b: list[float], fsal: bool, theta: float) -> list[float]:
    """Weights of the stages (then f1) in (p(theta) - y0) / h for the cubic Hermite p with
    p(0) = y0, p(1) = y0 + h sum(b k), p'(0) = h k_0, p'(1) = h f1, by its textbook basis
    h00..h11 (h00 + h01 = 1, so y0 drops out of the difference)."""
    h01 = -2 * theta**3 + 3 * theta**2
    h10 = theta**3 - 2 * theta**2 + theta
    h11 = theta**3 - theta**2
    w = [h01 * bi for bi in b] + [h11]
    w[0] += h10
    if fsal:  # f1 is the last stage
        f1 = w.pop()
        w[-1] += f1
    return w


@pytest.mark.parametrize(
    ("tab", "fsal"),
    [
        (ButcherTableau.from_lists("mid", a=[[], [0.5]], b=[0.0, 1.0], c=[0.0, 0.5], order=2),
         False),
        (ButcherTableau.from_lists("bs3", a=[list(r) for r in TABLEAUX["bosh3"].a],
                                   b=list(TABLEAUX["bosh3"].b), c=list(TABLEAUX["bosh3"].c),
                                   order=3, fsal=True), True),
        (ImplicitTableau.from_lists(**_NOT_STIFF), False),  # type: ignore[arg-type]
        (ImplicitTableau(name="trap", a=((0.0,), (0.5, 0.5)), b=(0.5, 0.5), c=(0.0, 1.0),
                         order=2), True),
    ],
)
def test_tableau_without_dense_rows_interpolates_by_cubic_hermite(tab: object, fsal: bool
                                                                  ) -> None:
    rows = _tableaux.interpolant(tab)  # type: ignore[arg-type]
    assert tab.dense == () and tab.fsal == fsal  # type: ignore[attr-defined]
    for theta in (0.2, 0.5, 0.9):
        got = [sum(theta ** (p + 1) * row[j] for p, row in enumerate(rows))
               for j in range(len(rows[0]))]
        assert got == pytest.approx(_hermite_by_basis(list(tab.b), fsal, theta),  # type: ignore[attr-defined]
                                    abs=1e-15)


def test_tableau_with_dense_rows_interpolates_by_them() -> None:
    assert _tableaux.interpolant(TABLEAUX["dopri5"]) is TABLEAUX["dopri5"].dense


def test_order_conditions_are_one_per_rooted_tree_with_butchers_densities() -> None:
    """Rooted trees with 1..5 nodes: 1, 1, 2, 4, 9 (17 up to order 5), densities gamma(t):
    1; 2; 3, 6; 4, 8, 12, 24; 5, 10, 15, 20, 20, 30, 40, 60, 120 (Butcher). For explicit Euler
    (a = 0, b = 1) every elementary weight beyond the first is 0, so the residuals are
    -1/gamma(t) (and 0 for the single node)."""
    res = order_condition_residuals(np.zeros((1, 1)), np.array([1.0]), 5)
    assert len(res) == 17
    densities = [[1], [2], [3, 6], [4, 8, 12, 24], [5, 10, 15, 20, 20, 30, 40, 60, 120]]
    start = 0
    for order, gammas in enumerate(densities, 1):
        got = sorted(-r for r in res[start : start + len(gammas)])
        want = sorted([0.0] if order == 1 else [1 / g for g in gammas])
        assert got == pytest.approx(want, abs=1e-15), order
        start += len(gammas)


def test_partitions_and_rooted_trees_are_enumerated_afresh_with_their_known_counts() -> None:
    """Partitions of n, each once with its parts in decreasing order (p(n) for n = 0..10:
    1, 1, 2, 3, 5, 7, 11, 15, 22, 30, 42); rooted trees with 1..8 nodes, each once: 1, 1, 2, 4,
    9, 20, 48, 115 (OEIS A000081). The tree cache is cleared first, so that the enumeration
    runs in this test (building the tableaux at import filled it)."""
    partitions, children = _tableaux._partitions, _tableaux._choose_children
    assert partitions(0) == [()]
    assert partitions(4) == [(4,), (3, 1), (2, 2), (2, 1, 1), (1, 1, 1, 1)]
    assert partitions(5, 2) == [(2, 2, 1), (2, 1, 1, 1), (1, 1, 1, 1, 1)]
    assert [len(partitions(n)) for n in range(11)] == [1, 1, 2, 3, 5, 7, 11, 15, 22, 30, 42]
    leaf, stick = (), ((),)  # one node; two nodes in a line
    assert children(()) == [[]]
    assert children((2, 1)) == [[stick, leaf]]
    assert sorted(children((3, 1))) == sorted([[(leaf, leaf), leaf], [(stick,), leaf]])
    _tableaux._trees.cache_clear()
    trees = [_tableaux._trees(n) for n in range(1, 9)]
    assert [len(t) for t in trees] == [1, 1, 2, 4, 9, 20, 48, 115]
    assert all(len(set(t)) == len(t) for t in trees)
    assert all(_tableaux._size(tree) == n for n, t in enumerate(trees, 1) for tree in t)


def test_declared_orders_above_five_are_not_checked() -> None:
    """Only the 17 conditions up to order 5 are checked: dopri5's and kvaerno5's data claiming
    order 6 build (documented; an order-6 check would refuse them)."""
    tab = TABLEAUX["dopri5"]
    six = ButcherTableau.from_lists("dopri6?", a=[list(r) for r in tab.a], b=list(tab.b),
                                    c=list(tab.c), order=6)
    assert six.order == 6
    with pytest.raises(InvalidArgumentError, match="order conditions"):
        ButcherTableau.from_lists("dopri5", a=[list(r) for r in tab.a], b=list(tab.b),
                                  c=list(tab.c), order=5, b_err=list(tab.b_err),
                                  error_order=6)
    # the same for ESDIRK tableaux: kvaerno5's data claiming order 6 builds
    kv5 = IMPLICIT_TABLEAUX["kvaerno5"]
    assert ImplicitTableau.from_lists("kvaerno6?", a=[list(r) for r in kv5.a], b=list(kv5.b),
                                      c=list(kv5.c), order=6).order == 6


def test_r_infinity_is_infinite_without_stiff_decay() -> None:
    """The not stiffly accurate 3-stage ESDIRK above: b0 - b~ A~^{-1} a~ = 1/6 - 1/2 != 0, so
    R(z) grows like z."""
    ns = ImplicitTableau.from_lists(**_NOT_STIFF, dense=[])  # type: ignore[arg-type]
    assert ns.r_infinity() == math.inf
    assert abs(ns.stability(-1e8)) > 1e6


def _peak_by_brute_force(a: np.ndarray, b: np.ndarray, ys: np.ndarray) -> float:
    return max(abs(stability_function(a, b, 1j * y)) for y in ys)


def test_imaginary_axis_peak_has_the_closed_form_of_a_two_implicit_stage_family() -> None:
    """gamma = 1/5, b = a[-1] = (2/5, 2/5, 1/5): ``R = (1 + 3z/5) / (1 - z/5)^2``, so
    ``|R(iy)|^2 = (1 + 9w/25) / (1 + w/25)^2`` with ``w = y^2``, largest at ``w = 175/9``:
    ``|R| = 9 / (4 sqrt 2)`` there. Implicit Euler peaks at ``y = 0`` (``|R| = 1``); the
    trapezoidal rule has ``|R(iy)| = 1`` everywhere and its limit ``|R(-inf)| = 1``."""
    a = np.array([[0.0, 0.0, 0.0], [0.2, 0.2, 0.0], [0.4, 0.4, 0.2]])
    peak, where = _tableaux._imaginary_axis_peak(a, a[-1].copy())
    assert peak == pytest.approx(9 / (4 * math.sqrt(2)), rel=1e-13)
    assert where == pytest.approx(math.sqrt(175) / 3, rel=1e-7)
    euler = IMPLICIT_TABLEAUX["implicit_euler"]
    assert _tableaux._imaginary_axis_peak(euler.a_matrix(), np.array(euler.b)) == (1.0, 0.0)
    trap = np.array([[0.0, 0.0], [0.5, 0.5]])
    peak, where = _tableaux._imaginary_axis_peak(trap, trap[-1].copy())
    assert peak == pytest.approx(1.0, abs=1e-15) and where == math.inf


def test_imaginary_axis_peak_bounds_a_fine_sample_of_random_esdirk_tableaux() -> None:
    """Brute force: on 60 random ESDIRK tableaux (2-8 stages, gamma from 0.02 to 2, stiffly
    accurate or not) the peak is >= |R(iy)| at 3000 points from 1e-4 to 1e7, and within 1e-3 of
    their largest when it lies inside that range."""
    rng = np.random.default_rng(1)
    ys = np.logspace(-4, 7, 3000)
    for _ in range(60):
        s, gamma = int(rng.integers(2, 9)), float(np.exp(rng.uniform(np.log(0.02), np.log(2))))
        a = np.tril(rng.normal(size=(s, s)) * rng.uniform(0.1, 3), -1)
        a[1:, 1:] += gamma * np.eye(s - 1)
        a[0] = 0.0
        if rng.random() < 0.7:  # stiffly accurate: R stays bounded
            a[-1, :-1] *= (1 - gamma) / a[-1, :-1].sum()
            b = a[-1].copy()
        else:
            b = rng.normal(size=s)
            b /= b.sum()
        peak, where = _tableaux._imaginary_axis_peak(a, b)
        sampled = _peak_by_brute_force(a, b, ys)
        assert sampled <= peak * (1 + 1e-9)
        if where <= 1e7:
            assert sampled >= peak * (1 - 1e-3)


def _narrow_band_tableau() -> list[list[float]]:
    """A 4-stage stiffly accurate ESDIRK with ``R = (1 + (1 - 3g) z + p2 z^2) / (1 - gz)^3``
    whose ``|Q(iy)|^2 - |P(iy)|^2 = y^2 (g^6 (y^2 - 11)^2 - 1e-7)`` dips below zero only for
    ``|y^2 - 11| < sqrt(1e-7) / g^3`` (0.055 for the ``g = 0.179`` found): a band 0.5 % wide
    around ``y = sqrt(11)``, between two points of a logarithmic sample (``10^0.5``, ``10^0.6``).
    ``b0 = b2``, ``a20 = 0``, ``a10 = g`` leave ``p2 = g (1 - 6 b0)`` and ``P``'s cubic term
    ``g (a21 b2 - g (b1 - b0))``, which ``a21`` cancels; ``g`` solves the remaining condition on
    ``p1 = 1 - 3g``."""
    from scipy.optimize import brentq

    def p2(g: float) -> float:
        return math.sqrt(3 * g**4 + 22 * g**6)

    g = brentq(lambda g: (1 - 3 * g) ** 2 - (3 * g**2 + 2 * p2(g) - 121 * g**6 + 1e-7), 0.1, 0.25)
    b0 = (1 - p2(g) / g) / 6
    b1 = 1 - g - 2 * b0
    a21 = g * (b1 - b0) / b0
    return [[0.0], [g, g], [0.0, a21, g], [b0, b1, b0, g]]


def test_l_stability_claim_is_refused_for_amplification_in_a_band_a_sample_would_miss(
) -> None:
    a = _narrow_band_tableau()
    full = np.array([[*r, *([0.0] * (4 - len(r)))] for r in a])
    b = full[-1].copy()
    # the band is real: a fine grid around sqrt(11) finds |R| > 1; the 91-point logarithmic
    # sample the check once used (1e-3 to 1e6) does not
    assert _peak_by_brute_force(full, b, np.linspace(3.3, 3.33, 3001)) > 1 + 1e-7
    assert _peak_by_brute_force(full, b, np.logspace(-3, 6, 91)) < 1
    assert abs(_tableaux._r_inf(full, b)) < 1e-13
    assert abs(stability_function(full, b, -1e8)) < 1e-6
    with pytest.raises(InvalidArgumentError,
                       match=r"reaches 1.0000002\d+ > 1 at y=3.3166\d \(not A-stable\)"):
        ImplicitTableau.from_lists("band", a=a, b=list(b), c=[sum(r) for r in a], order=1,
                                   l_stable=True)


def test_dopri8_has_order_eight_its_embedded_method_order_seven_and_a_fourth_order_interpolant(
) -> None:
    """All 200 rooted-tree conditions up to order 8 (construction checks only up to 5)."""
    tab = TABLEAUX["dopri8"]
    a = tab.a_matrix()
    assert tab.num_stages == 14 and tab.fsal and len(order_condition_residuals(a, a[0], 8)) == 200
    assert max(abs(r) for r in order_condition_residuals(a, np.array(tab.b), 8)) < 1e-13
    b_hat = np.array(tab.b) - np.array(tab.b_err)
    assert max(abs(r) for r in order_condition_residuals(a, b_hat, 7)) < 1e-13
    assert max(abs(r) for r in order_condition_residuals(a, b_hat, 8)) > 1e-5  # exactly 7
    for theta in (0.25, 0.5, 0.8):
        b_theta = sum(theta ** (p + 1) * np.array(row) for p, row in enumerate(tab.dense))
        res = order_condition_residuals(a, b_theta, 4, theta)
        assert max(abs(r) for r in res) < 1e-13
