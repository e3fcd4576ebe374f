"""Implicit (stiff) solvers: the ESDIRK tableaux, the Newton step, stiff reference problems and
gradients through the stage solves.

Reference values: Van der Pol (eps = 1e-6, i.e. mu = 1000 in rescaled time), HIRES and OREGO
(the Oregonator) from the "Test Set for IVP Solvers" (Mazzia & Magherini, Univ. Bari, release
2.4) and Hairer & Wanner, *Solving ODEs II*, sec. IV.1 and IV.10, each also confirmed here
against scipy's ``Radau`` (rtol 1e-12 for VDPOL, 1e-10 for HIRES and OREGO; see
``test_published_references_agree_with_scipy_radau``). Robertson at t = 1e5: no published value
at that time was at hand, so the reference is scipy ``Radau`` at rtol 1e-12 (computed in the
test, slow) and a value from scipy ``Radau`` (rtol 1e-13) written down here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from deeplimits.errors import (
    InvalidArgumentError,
    InvalidTypeError,
    NewtonError,
    NonFiniteStateError,
    SolverError,
)
from deeplimits.ode import (
    IMPLICIT_TABLEAUX,
    ExecutionOptions,
    ImplicitRK,
    ImplicitTableau,
    SolveStats,
    get_solver,
    odeint,
    odeint_adjoint,
    odeint_checkpoint,
    order_condition_residuals,
)
from deeplimits.ode._newton import (
    IterationMatrix,
    NewtonSettings,
    _stage_solve,
    esdirk_step,
    jacobian,
)

ADAPTIVE = ["kvaerno3", "kvaerno4", "kvaerno5"]
ALL = ["implicit_euler", *ADAPTIVE]
F64 = torch.float64


# ---------------------------------------------------------------------------------------------
# Tableaux


@pytest.mark.parametrize("name", ALL)
def test_tableau_order_conditions_hold_and_one_more_fails(name: str) -> None:
    tab = IMPLICIT_TABLEAUX[name]
    a, b = tab.a_matrix(), np.array(tab.b)
    assert max(abs(r) for r in order_condition_residuals(a, b, tab.order)) < 1e-13
    assert max(abs(r) for r in order_condition_residuals(a, b, tab.order + 1)) > 1e-3
    if tab.b_err is not None:
        assert tab.error_order == tab.order - 1
        b_hat = b - np.array(tab.b_err)
        assert max(abs(r) for r in order_condition_residuals(a, b_hat, tab.order - 1)) < 1e-13
        assert max(abs(r) for r in order_condition_residuals(a, b_hat, tab.order)) > 1e-4


@pytest.mark.parametrize("name", ALL)
def test_tableau_is_l_stable_and_stiffly_accurate(name: str) -> None:
    tab = IMPLICIT_TABLEAUX[name]
    assert tab.stiffly_accurate and tab.fsal and tab.l_stable
    assert abs(tab.stability(-1e8)) < 1e-6
    assert abs(tab.r_infinity()) < 1e-13
    # A-stable: |R| <= 1 on the imaginary axis and in the left half plane.
    for z in [1j * y for y in np.logspace(-2, 5, 50)] + [-x + 3j for x in np.logspace(-2, 5, 20)]:
        assert abs(tab.stability(z)) <= 1 + 1e-12
    assert tab.c[-1] == 1.0 and tab.a[0] == (0.0,)


def _esdirk(**kw: object) -> ImplicitTableau:
    # The trapezoidal rule as an ESDIRK: A-stable, not L-stable (R(-inf) = -1).
    base: dict[str, object] = dict(
        name="trap", a=[[0.0], [0.5, 0.5]], b=[0.5, 0.5], c=[0.0, 1.0], order=2
    )
    base.update(kw)
    return ImplicitTableau.from_lists(**base)  # type: ignore[arg-type]


def test_valid_custom_implicit_tableau_builds_and_l_stability_is_checked() -> None:
    tab = _esdirk()
    assert tab.gamma == 0.5 and abs(tab.r_infinity() + 1) < 1e-12
    with pytest.raises(InvalidArgumentError, match=r"L-stable.*R\(-1e8\)"):
        _esdirk(l_stable=True)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(a=[[], [0.5, 0.5]]), r"row a\[0\] has 0 entries"),
        (dict(a=[[0.5], [0.0, 1.0]], c=[0.5, 1.0], b=[0.0, 1.0], order=1), r"explicit"),
        (dict(a=[[0.0], [0.5, 0.5], [0.2, 0.2, 0.6]], b=[0.2, 0.2, 0.6], c=[0.0, 1.0, 1.0],
              order=1), r"a\[2\]\[2\]=0.6 differs"),
        (dict(c=[0.0, 0.9]), r"c\[1\]"),
        (dict(order=3), r"order conditions for declared order 3"),
    ],
)
def test_bad_implicit_tableau_is_rejected(kw: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        _esdirk(**kw)


# ---------------------------------------------------------------------------------------------
# The step: convergence order, L-stability


def _logistic(t: float | torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    tt = t if isinstance(t, torch.Tensor) else torch.tensor(t, dtype=y.dtype)
    return torch.cos(tt) * y * (1 - y)


def _logistic_exact(t: float, y0: float = 0.3) -> float:
    return 1.0 / (1.0 + (1 - y0) / y0 * math.exp(-math.sin(t)))


def _fixed_error(name: str, n: int, t_end: float = 2.0) -> float:
    solver = get_solver(name).bind(None, 1e-14, 1e-14, SolveStats())  # Newton to round-off
    y = torch.tensor([0.3], dtype=F64)
    h = t_end / n
    k1 = None
    for i in range(n):
        y, _, ks = solver.step(_logistic, i * h, y, h, k1)  # type: ignore[attr-defined]
        k1 = ks[-1]
    return abs(float(y) - _logistic_exact(t_end))


@pytest.mark.parametrize(
    ("name", "ns"),
    [("implicit_euler", [40, 80, 160]), ("kvaerno3", [10, 20, 40]), ("kvaerno4", [8, 16, 32]),
     ("kvaerno5", [10, 20, 40])],
)
def test_convergence_order_on_a_smooth_problem(name: str, ns: list[int]) -> None:
    # Non-stiff and smooth, so the classical order shows (the stage order 2 of an ESDIRK only
    # limits the order on stiff problems: order reduction, not tested here).
    errs = [_fixed_error(name, n) for n in ns]
    slope = float(np.polyfit(np.log([2.0 / n for n in ns]), np.log(errs), 1)[0])
    assert abs(slope - IMPLICIT_TABLEAUX[name].order) < 0.2, (slope, errs)


@pytest.mark.parametrize("name", ALL)
def test_one_step_of_a_very_stiff_linear_problem_damps_to_zero(name: str) -> None:
    lam = -1e8

    def f(t: float, y: torch.Tensor) -> torch.Tensor:
        return lam * y

    solver = get_solver(name).bind(None, 1e-10, 1e-12, SolveStats())
    y1, _, _ = solver.step(f, 0.0, torch.tensor([1.0], dtype=F64), 1.0)  # type: ignore[attr-defined]
    assert abs(float(y1)) < 1e-6
    # An explicit method's step would be multiplied by a polynomial in -1e8.


def test_linear_problem_needs_one_chord_iteration_per_stage_plus_the_check() -> None:
    a = torch.tensor([[-1000.0, 1.0], [0.0, -0.5]], dtype=F64)
    stats = SolveStats()
    y = odeint(lambda t, y: a @ y, torch.tensor([1.0, 1.0], dtype=F64),
               torch.tensor([0.0, 1.0], dtype=F64), method="kvaerno5", rtol=1e-8, atol=1e-10,
               stats=stats)
    exact = torch.linalg.matrix_exp(a) @ torch.tensor([1.0, 1.0], dtype=F64)
    assert torch.allclose(y[-1], exact, rtol=1e-6, atol=1e-9)
    steps = stats.accepted_steps + stats.rejected_steps
    assert stats.jacobians == stats.lu_factorizations == steps
    # Exact Jacobian of a linear f: the second update is at round-off.
    assert stats.newton_iterations <= 2 * 6 * steps and stats.newton_failures == 0


# ---------------------------------------------------------------------------------------------
# Stiff problems


def _rober(t: float | torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    return torch.stack(
        [-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2**2, 3e7 * y2**2], -1
    )


def _rober_np(t: float, y: np.ndarray) -> np.ndarray:
    return np.array([-0.04 * y[0] + 1e4 * y[1] * y[2],
                     0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2, 3e7 * y[1] ** 2])


def _vdpol(t: float | torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # Hairer's VDPOL: eps = 1e-6 (mu = 1000 after rescaling time by mu).
    return torch.stack([y[1], ((1 - y[0] ** 2) * y[1] - y[0]) / 1e-6])


def _vdpol_np(t: float, y: np.ndarray) -> np.ndarray:
    return np.array([y[1], ((1 - y[0] ** 2) * y[1] - y[0]) / 1e-6])


#: Test Set for IVP Solvers, problem VDPOL (eps = 1e-6, y0 = (2, 0)), y at t = 2.
VDPOL_REF = [1.706167732170483, -0.8928097010247975]


def _hires(t: float | torch.Tensor, y: torch.Tensor, stack=torch.stack) -> torch.Tensor:
    # HIRES (Schäfer 1975; Hairer & Wanner II, sec. IV.10): 8 species of plant physiology.
    return stack([
        -1.71 * y[0] + 0.43 * y[1] + 8.32 * y[2] + 0.0007,
        1.71 * y[0] - 8.75 * y[1],
        -10.03 * y[2] + 0.43 * y[3] + 0.035 * y[4],
        8.32 * y[1] + 1.71 * y[2] - 1.12 * y[3],
        -1.745 * y[4] + 0.43 * y[5] + 0.43 * y[6],
        -280 * y[5] * y[7] + 0.69 * y[3] + 1.71 * y[4] - 0.43 * y[5] + 0.69 * y[6],
        280 * y[5] * y[7] - 1.81 * y[6],
        -280 * y[5] * y[7] + 1.81 * y[6],
    ])


def _orego(t: float | torch.Tensor, y: torch.Tensor, stack=torch.stack) -> torch.Tensor:
    # OREGO, the Oregonator (Field & Noyes 1974; Hairer & Wanner II, sec. IV.1).
    return stack([
        77.27 * (y[1] + y[0] * (1 - 8.375e-6 * y[0] - y[1])),
        (y[2] - (1 + y[0]) * y[1]) / 77.27,
        0.161 * (y[0] - y[2]),
    ])


def _as_np(f):  # the same right-hand side for scipy, on numpy arrays
    return lambda t, y: f(t, y, np.stack)


HIRES_Y0 = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0057]
HIRES_T = 321.8122
#: Test Set for IVP Solvers, problem HIRES, y at t = 321.8122.
HIRES_REF = [0.7371312573325668e-3, 0.1442485726316185e-3, 0.5888729740967575e-4,
             0.1175651343283149e-2, 0.2386356198831331e-2, 0.6238968252742796e-2,
             0.2849998395185769e-2, 0.2850001604814231e-2]
OREGO_Y0 = [1.0, 2.0, 3.0]
OREGO_T = 360.0
#: Hairer & Wanner's reference solution of OREGO at t = 360.
OREGO_REF = [0.1000814870318523e1, 0.1228178521549917e4, 0.1320554942846706e3]


@pytest.mark.parametrize("name", ADAPTIVE)
def test_robertson_short_horizon_agrees_with_scipy_radau(name: str) -> None:
    scipy_integrate = pytest.importorskip("scipy.integrate")
    ref = scipy_integrate.solve_ivp(_rober_np, (0.0, 40.0), [1.0, 0.0, 0.0], method="Radau",
                                    rtol=1e-12, atol=1e-16).y[:, -1]
    stats = SolveStats()
    y = odeint(_rober, torch.tensor([1.0, 0.0, 0.0], dtype=F64),
               torch.tensor([0.0, 40.0], dtype=F64), method=name, rtol=1e-6, atol=1e-10,
               stats=stats)[-1].numpy()
    assert np.all(np.abs(y - ref) <= 1e-4 * np.abs(ref) + 1e-9), (y, ref)
    assert stats.accepted_steps < 400  # an explicit method needs ~1e4 steps to 40


@pytest.mark.slow
def test_robertson_to_1e5_with_kvaerno5_at_rtol_1e_8() -> None:
    scipy_integrate = pytest.importorskip("scipy.integrate")
    ref = scipy_integrate.solve_ivp(_rober_np, (0.0, 1e5), [1.0, 0.0, 0.0], method="Radau",
                                    rtol=1e-12, atol=1e-20).y[:, -1]
    y = odeint(_rober, torch.tensor([1.0, 0.0, 0.0], dtype=F64),
               torch.tensor([0.0, 1e5], dtype=F64), method="kvaerno5", rtol=1e-8,
               atol=1e-14)[-1].numpy()
    assert np.all(np.abs(y - ref) <= 1e-5 * np.abs(ref)), (y, ref)


@pytest.mark.slow
def test_van_der_pol_mu_1000_with_kvaerno5_at_rtol_1e_8() -> None:
    y = odeint(_vdpol, torch.tensor([2.0, 0.0], dtype=F64), torch.tensor([0.0, 2.0], dtype=F64),
               method="kvaerno5", rtol=1e-8, atol=1e-8)[-1].numpy()
    assert np.all(np.abs(y - VDPOL_REF) <= 1e-5 * np.abs(VDPOL_REF)), y


@pytest.mark.slow
def test_published_references_agree_with_scipy_radau() -> None:
    scipy_integrate = pytest.importorskip("scipy.integrate")
    ref = scipy_integrate.solve_ivp(_vdpol_np, (0.0, 2.0), [2.0, 0.0], method="Radau",
                                    rtol=1e-12, atol=1e-12).y[:, -1]
    assert np.allclose(ref, VDPOL_REF, rtol=1e-7)
    for f, y0, t_end, published in [(_hires, HIRES_Y0, HIRES_T, HIRES_REF),
                                    (_orego, OREGO_Y0, OREGO_T, OREGO_REF)]:
        ref = scipy_integrate.solve_ivp(_as_np(f), (0.0, t_end), y0, method="Radau",
                                        rtol=1e-10, atol=1e-12).y[:, -1]
        assert np.allclose(ref, published, rtol=1e-9, atol=0), (ref, published)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "rtol", "within"),
                         [("kvaerno5", 1e-8, 1e-5), ("kvaerno3", 1e-6, 1e-4)])
def test_hires_matches_the_published_reference(name: str, rtol: float, within: float) -> None:
    y = odeint(_hires, torch.tensor(HIRES_Y0, dtype=F64), torch.tensor([0.0, HIRES_T], dtype=F64),
               method=name, rtol=rtol, atol=rtol * 1e-4)[-1].numpy()
    assert np.all(np.abs(y - HIRES_REF) <= within * np.abs(HIRES_REF)), y


@pytest.mark.slow
def test_oregonator_matches_the_published_reference_with_kvaerno5_at_rtol_1e_8() -> None:
    # relaxation oscillations over 360 time units: y2 swings over 5 orders of magnitude
    y = odeint(_orego, torch.tensor(OREGO_Y0, dtype=F64), torch.tensor([0.0, OREGO_T], dtype=F64),
               method="kvaerno5", rtol=1e-8, atol=1e-12)[-1].numpy()
    assert np.all(np.abs(y - OREGO_REF) <= 1e-5 * np.abs(OREGO_REF)), y


def test_implicit_euler_fixed_step_is_stable_on_robertson() -> None:
    y = odeint(_rober, torch.tensor([1.0, 0.0, 0.0], dtype=F64),
               torch.tensor([0.0, 0.5, 1.0], dtype=F64), method="implicit_euler",
               options={"step_size": 0.05})
    assert torch.isfinite(y).all()
    assert abs(float(y[-1].sum()) - 1.0) < 1e-10  # mass is conserved by every RK method
    assert abs(float(y[-1, 0]) - 0.9664597) < 2e-3  # first order in h = 0.05


def test_batched_jacobian_matches_the_full_one_on_a_batch_of_robertson_problems() -> None:
    k = torch.tensor([[0.04], [0.02], [0.08], [0.04]], dtype=F64)

    def f(t: float, y: torch.Tensor) -> torch.Tensor:
        y1, y2, y3 = y[:, 0:1], y[:, 1:2], y[:, 2:3]
        return torch.cat([-k * y1 + 1e4 * y2 * y3, k * y1 - 1e4 * y2 * y3 - 3e7 * y2**2,
                          3e7 * y2**2], 1)

    y0 = torch.tensor([[1.0, 0.0, 0.0]], dtype=F64).repeat(4, 1)
    t = torch.tensor([0.0, 1.0, 10.0], dtype=F64)
    outs = []
    for batched in (False, True):
        stats = SolveStats()
        outs.append(odeint(f, y0, t, method="kvaerno4", rtol=1e-7, atol=1e-10, stats=stats,
                           options={"batched_jacobian": batched}))
    assert torch.allclose(outs[0], outs[1], rtol=1e-6, atol=1e-12)
    single = odeint(_rober, y0[0], t, method="kvaerno4", rtol=1e-7, atol=1e-10)
    assert torch.allclose(outs[1][:, 0], single, rtol=1e-5, atol=1e-10)


def test_dense_output_between_steps_is_close_to_the_solution() -> None:
    t = torch.linspace(0.0, 2.0, 9, dtype=F64)
    y = odeint(_logistic, torch.tensor([0.3], dtype=F64), t, method="kvaerno5", rtol=1e-8,
               atol=1e-10)
    exact = torch.tensor([[_logistic_exact(float(s))] for s in t], dtype=F64)
    assert torch.allclose(y, exact, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Gradients


class _Rober(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor([0.04, 1e4, 3e7], dtype=F64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        k1, k2, k3 = self.k
        y1, y2, y3 = y[0], y[1], y[2]
        return torch.stack([-k1 * y1 + k2 * y2 * y3, k1 * y1 - k2 * y2 * y3 - k3 * y2**2,
                            k3 * y2**2])


def _fd_grad(m: _Rober, loss: object, rel: float = 1e-5) -> list[float]:
    out = []
    with torch.no_grad():
        for i in range(3):
            e = torch.zeros(3, dtype=F64)
            e[i] = rel * m.k[i]
            m.k += e
            lp = float(loss())  # type: ignore[operator]
            m.k -= 2 * e
            lm = float(loss())  # type: ignore[operator]
            m.k += e
            out.append((lp - lm) / (2 * float(e[i])))
    return out


def test_backprop_gradient_matches_finite_differences_on_robertson() -> None:
    # d y1(t) / d (rate constants), t = 0.1: through the stage solves by the implicit
    # function theorem (no graph through the Newton iterations).
    m = _Rober()
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    t = torch.tensor([0.0, 0.1], dtype=F64)

    def loss() -> torch.Tensor:
        return odeint(m, y0, t, method="kvaerno5", rtol=1e-10, atol=1e-14)[-1, 0]

    loss().backward()
    fd = _fd_grad(m, loss)
    assert m.k.grad is not None
    for g, r in zip(m.k.grad.tolist(), fd, strict=True):
        assert abs(g - r) <= 1e-5 * abs(r), (m.k.grad, fd)


@pytest.mark.slow
def test_rate_constant_gradient_matches_finite_differences_of_tight_scipy_solves() -> None:
    """d y2(t=40) / d k (all three rate constants) through kvaerno5 against central
    differences of scipy Radau solves at rtol 1e-12 (an outside oracle: no code of ours)."""
    scipy_integrate = pytest.importorskip("scipy.integrate")
    k0 = np.array([0.04, 1e4, 3e7])

    def y2_scipy(k: np.ndarray) -> float:
        def f(t: float, y: np.ndarray) -> np.ndarray:
            return np.array([-k[0] * y[0] + k[1] * y[1] * y[2],
                             k[0] * y[0] - k[1] * y[1] * y[2] - k[2] * y[1] ** 2,
                             k[2] * y[1] ** 2])
        return float(scipy_integrate.solve_ivp(f, (0.0, 40.0), [1.0, 0.0, 0.0], method="Radau",
                                               rtol=1e-12, atol=1e-20).y[1, -1])

    fd = []
    for i in range(3):
        e = np.zeros(3)
        e[i] = 1e-4 * k0[i]
        fd.append((y2_scipy(k0 + e) - y2_scipy(k0 - e)) / (2 * e[i]))
    m = _Rober()
    y = odeint(m, torch.tensor([1.0, 0.0, 0.0], dtype=F64), torch.tensor([0.0, 40.0], dtype=F64),
               method="kvaerno5", rtol=1e-9, atol=1e-16)
    y[-1, 1].backward()
    assert m.k.grad is not None
    for g, r in zip(m.k.grad.tolist(), fd, strict=True):
        assert abs(g - r) <= 1e-4 * abs(r), (m.k.grad, fd)


def test_backprop_gradient_with_respect_to_y0_matches_the_matrix_exponential() -> None:
    a = torch.tensor([[-500.0, 2.0], [1.0, -1.0]], dtype=F64)
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    y = odeint(lambda t, y: a @ y, y0, torch.tensor([0.0, 0.5], dtype=F64), method="kvaerno5",
               rtol=1e-8, atol=1e-12)
    w = torch.tensor([0.3, -0.7], dtype=F64)
    (y[-1] @ w).backward()
    assert y0.grad is not None
    exact = torch.linalg.matrix_exp(0.5 * a).T @ w
    assert torch.allclose(y0.grad, exact, rtol=1e-6, atol=1e-10)


def test_adjoint_gradient_matches_backprop_on_a_short_stiff_horizon() -> None:
    # The generic adjoint re-solves the state backwards in time: on a stiff problem that is
    # unstable over long horizons (the fast decaying mode grows backwards), so a short one.
    m = _Rober()
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    t = torch.tensor([0.0, 1e-3], dtype=F64)
    grads = []
    for fn in (odeint, odeint_adjoint):
        m.zero_grad()
        fn(m, y0, t, method="kvaerno5", rtol=1e-10, atol=1e-14)[-1, 0].backward()
        assert m.k.grad is not None
        grads.append(m.k.grad.clone())
    assert torch.allclose(grads[0], grads[1], rtol=1e-5, atol=0.0), grads


# ---------------------------------------------------------------------------------------------
# Errors


def test_device_loop_per_sample_and_compile_are_refused_with_a_clear_error() -> None:
    y0 = torch.ones(2, 1, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    for exe in (ExecutionOptions(device_loop=True), ExecutionOptions(per_sample=True)):
        with pytest.raises(InvalidArgumentError, match=r"kvaerno5.*device_loop=False"):
            odeint(lambda t, y: -y, y0, t, method="kvaerno5", execution=exe)
    with pytest.raises(InvalidArgumentError, match=r"compile=True is not available"):
        odeint(lambda t, y: -y, y0, t, method="kvaerno5", execution=ExecutionOptions(compile=True))


@pytest.mark.parametrize(
    ("options", "exc", "match"),
    [
        ({"batched_jacobian": 1}, InvalidTypeError, r"batched_jacobian=1"),
        ({"newton_max_iters": 0}, InvalidArgumentError, r"newton_max_iters=0"),
        ({"newton_kappa": 2.0}, InvalidArgumentError, r"newton_kappa=2.0"),
    ],
)
def test_bad_newton_options_are_rejected(
    options: dict[str, object], exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match):
        odeint(lambda t, y: -y, torch.ones(1), torch.tensor([0.0, 1.0]), method="kvaerno3",
               options=options)


def test_bad_solver_arguments_are_rejected() -> None:
    with pytest.raises(InvalidTypeError, match=r"ImplicitTableau"):
        ImplicitRK(IMPLICIT_TABLEAUX["kvaerno5"].name)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"newton_kappa=0"):
        ImplicitRK(IMPLICIT_TABLEAUX["kvaerno5"], newton_kappa=0)


def test_fixed_step_newton_failure_raises_solver_error_naming_the_step() -> None:
    # f(y) = y^2 from 1 has no real implicit-Euler stage solution for h > 1/4 (and h = 0.5
    # would make I - h J = 1 - 2h singular at the start).
    with pytest.raises(SolverError, match=r"did not converge.*t=0.0.*step_size"):
        odeint(lambda t, y: y**2, torch.ones(1, dtype=F64), torch.tensor([0.0, 0.4], dtype=F64),
               method="implicit_euler", options={"step_size": 0.4})


def test_odeint_checkpoint_gives_the_backprop_gradient() -> None:
    m = _Rober()
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    t = torch.tensor([0.0, 0.05, 0.1], dtype=F64)
    grads = []
    for fn in (odeint, odeint_checkpoint):
        m.zero_grad()
        fn(m, y0, t, method="kvaerno4", rtol=1e-6, atol=1e-12)[1:, 0].sum().backward()
        assert m.k.grad is not None
        grads.append(m.k.grad.clone())
    assert torch.allclose(grads[0], grads[1], rtol=1e-9, atol=0.0), grads


# ---------------------------------------------------------------------------------------------
# Newton's failures: each named for what it is, with the time and the sample


def _nan_gradient_in_sample_2(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # finite values everywhere; the unused branch sqrt(100 - y) is NaN where y > 100, and
    # torch.where's gradient multiplies it by 0: NaN in df/dy of that entry only
    return -y + torch.where(y > 100, torch.zeros_like(y), torch.sqrt(100 - y))


@pytest.mark.parametrize("batched", [False, True])
def test_nan_jacobian_is_reported_with_its_time_and_sample(batched: bool) -> None:
    y0 = torch.tensor([[1.0, 1.0], [2.0, 1.0], [101.0, 1.0]], dtype=F64)
    with pytest.raises(NewtonError, match=r"df/dy holds NaN or inf at t=0\.0 \(sample 2\)"):
        odeint(_nan_gradient_in_sample_2, y0, torch.tensor([0.0, 1.0], dtype=F64),
               method="kvaerno3", options={"batched_jacobian": batched})
    # the explicit methods do not need the Jacobian: the same problem solves
    y1 = odeint(_nan_gradient_in_sample_2, y0, torch.tensor([0.0, 1.0], dtype=F64))[-1]
    assert torch.isfinite(y1).all()


def test_singular_iteration_matrix_is_reported_not_divided_by() -> None:
    # y' = y with implicit Euler and h = 1: I - h*J = 0
    with pytest.raises(NewtonError, match=r"singular at t=0\.0 with h\*gamma=1\.0"):
        odeint(lambda t, y: y, torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
               method="implicit_euler", options={"step_size": 1.0})


def test_singular_per_sample_block_is_reported_with_its_sample() -> None:
    # y_b' = r_b y_b with rates r = (2, 1, 3) and per-sample blocks, implicit Euler, h = 1:
    # M_b = 1 - r_b = (-1, 0, -2), singular for sample 1 only (the Jacobian is finite)
    rates = torch.tensor([[2.0], [1.0], [3.0]], dtype=F64)
    with pytest.raises(NewtonError,
                       match=r"singular at t=0\.0 \(sample 1\) with h\*gamma=1\.0"):
        odeint(lambda t, y: rates * y, torch.ones(3, 1, dtype=F64),
               torch.tensor([0.0, 1.0], dtype=F64), method="implicit_euler",
               options={"step_size": 1.0, "batched_jacobian": True})


def test_singular_full_matrix_of_a_batch_names_no_sample() -> None:
    # the same rates with one full (3, 3) matrix (no per-sample blocks): M = diag(-1, 0, -2)
    # is singular, and the LU cannot tell which sample: the message names none
    rates = torch.tensor([[2.0], [1.0], [3.0]], dtype=F64)
    with pytest.raises(NewtonError, match=r"singular at t=0\.0 with h\*gamma=1\.0"):
        odeint(lambda t, y: rates * y, torch.ones(3, 1, dtype=F64),
               torch.tensor([0.0, 1.0], dtype=F64), method="implicit_euler",
               options={"step_size": 1.0})


def test_nan_row_of_the_jacobian_names_its_own_sample() -> None:
    # A NaN in f_4's derivative with respect to every y_j (row 4 of a (3, 2) state's (6, 6)
    # Jacobian, as a func's own Jacobian can give): every column holds one NaN, the row is
    # the sparser pattern and names entry 4, i.e. sample 2 (not sample 0, column 0's).
    jac = torch.zeros(6, 6, dtype=F64)
    jac[4] = math.nan
    with pytest.raises(NewtonError, match=r"df/dy holds NaN or inf at t=0\.25 \(sample 2\)"):
        IterationMatrix(jac, 0.1, False, torch.Size((3, 2)), 0.25)


def test_nan_jacobian_of_a_flat_state_names_the_state_entry() -> None:
    y0 = torch.tensor([1.0, 101.0, 2.0], dtype=F64)  # entry 1 past 100: NaN in df_1/dy_1
    with pytest.raises(NewtonError, match=r"df/dy holds NaN or inf at t=0\.0 \(state entry 1\)"):
        odeint(_nan_gradient_in_sample_2, y0, torch.tensor([0.0, 1.0], dtype=F64),
               method="kvaerno3")


def _nan_beyond_half(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # y' = 1 while y < 0.5, NaN beyond: the solution reaches the edge at t = 0.5
    return torch.where(y < 0.5, torch.ones_like(y), torch.full_like(y, math.nan))


def test_newton_failing_down_to_the_smallest_step_is_not_called_a_blow_up() -> None:
    stats = SolveStats()
    with pytest.raises(NewtonError, match=r"kvaerno5: Newton's method failed on every step tried "
                                          r"just after t=0\.49999"):
        odeint(_nan_beyond_half, torch.zeros(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
               method="kvaerno5", stats=stats)
    assert stats.newton_failures > 10
    # an explicit method on the same problem reports the NaN state (no Newton involved)
    with pytest.raises(NonFiniteStateError, match=r"became NaN or inf just after t=0\.49999"):
        odeint(_nan_beyond_half, torch.zeros(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64))


@pytest.mark.parametrize("n", [10, 80])  # plain autograd up to 64 entries, jacrev above
def test_newton_jacobian_is_the_matrix_of_a_linear_field_by_either_way(n: int) -> None:
    a = torch.randn(n, n, dtype=F64, generator=torch.Generator().manual_seed(n))
    jac, batched = jacobian(lambda t, y: (a @ y.reshape(-1)).reshape(y.shape) + t, 0.5,
                            torch.randn(n // 2, 2, dtype=F64), False)
    assert not batched and torch.allclose(jac, a, rtol=0, atol=1e-14)
    # per-sample blocks of a (B, 2) state: y_b' = M y_b + y_b**2 -> J_b = M + 2 diag(y_b)
    m = torch.tensor([[-1.0, 2.0], [0.5, -3.0]], dtype=F64)
    y = torch.randn(n, 2, dtype=F64)
    blocks, batched = jacobian(lambda t, v: v @ m.T + v**2, 0.0, y, True)
    assert batched and blocks.shape == (n, 2, 2)
    assert torch.allclose(blocks, m + torch.diag_embed(2 * y), rtol=0, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# The stage solves' backward (implicit function theorem), counted


class _Counted(nn.Module):
    """``y' = A y + b`` (``b`` a parameter; ``A = None``: ``y' = b``) that counts its calls."""

    def __init__(self, a: torch.Tensor | None, b: torch.Tensor) -> None:
        super().__init__()
        self.a, self.b, self.calls = a, nn.Parameter(b), 0

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.b.expand_as(y) if self.a is None else y @ self.a.T + self.b


def test_linear_backward_is_the_closed_form_with_one_evaluation_per_stage() -> None:
    # Implicit Euler, h = 0.25, 4 steps: y_{n+1} = M^{-1} (y_n + h b), M = I - h A, so
    # dy4/dy0 = M^{-4} and dy4/db = h (M^{-1} + ... + M^{-4}). The Jacobian is constant, so
    # each stage's backward refinement is exact at once: one evaluation of f (for its
    # vector-Jacobian product) per step, no fallback Jacobian. The weight 1e4 keeps the
    # refinement's tolerance relative to |g| (an absolute one would not be met).
    a = torch.tensor([[-3.0, 1.0], [0.5, -2.0]], dtype=F64)
    m = _Counted(a, torch.tensor([1.0, -2.0], dtype=F64))
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    y = odeint(m, y0, torch.tensor([0.0, 1.0], dtype=F64), method="implicit_euler",
               options={"step_size": 0.25})
    w = torch.tensor([0.3e4, -0.7e4], dtype=F64)
    m.calls = 0
    (y[-1] @ w).backward()
    assert m.calls == 4
    minv = torch.linalg.inv(torch.eye(2, dtype=F64) - 0.25 * a)
    powers = [torch.linalg.matrix_power(minv, k) for k in range(1, 5)]
    assert y0.grad is not None and m.b.grad is not None
    assert torch.allclose(y0.grad, powers[3].T @ w, rtol=1e-12, atol=0)
    assert torch.allclose(m.b.grad, 0.25 * sum(powers).T @ w, rtol=1e-12, atol=0)


def test_a_state_independent_field_backpropagates_without_a_jacobian() -> None:
    # y' = b: f does not depend on y (its Jacobian is 0, M = I), but on the parameter b:
    # y(1) = y0 + b exactly with implicit Euler, dy(1)/db = I; one evaluation of f per step in
    # the backward (the vector-Jacobian product, which has no path to y), no fallback.
    m = _Counted(None, torch.tensor([1.0, -2.0], dtype=F64))
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    y = odeint(m, y0, torch.tensor([0.0, 1.0], dtype=F64), method="implicit_euler",
               options={"step_size": 0.25})
    assert torch.allclose(y[-1], torch.tensor([2.0, 0.0], dtype=F64), rtol=0, atol=1e-14)
    m.calls = 0
    (y[-1] @ torch.tensor([3.0, 5.0], dtype=F64)).backward()
    assert m.calls == 4
    assert m.b.grad is not None
    assert torch.equal(m.b.grad, torch.tensor([3.0, 5.0], dtype=F64))


class _Cubic(nn.Module):
    """``y' = -c y^3`` that counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.c, self.calls = nn.Parameter(torch.tensor(1.0, dtype=F64)), 0

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return -self.c * y**3


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize(("h", "calls"), [(0.5, 2), (0.1, 1)])
def test_stage_backward_far_from_the_steps_jacobian_falls_back_to_the_exact_solve(
    h: float, calls: int, batched: bool
) -> None:
    # One implicit Euler step of y' = -c y^3 from y0 = 2: Z + h c Z^3 = 2, c = 1 (the real
    # root, by numpy). dZ/dy0 = 1/(1 + 3h Z^2), dZ/dc = -h Z^3 / (1 + 3h Z^2) (implicit
    # differentiation). The backward refines with the step's matrix M(y0) = 1 + 12h, which is
    # not M(Z): it contracts by q = 1 - M(Z)/M(y0) per iteration (so do the chord iterations).
    # h = 0.5: Z = 1.18, M(Z) = 3.09 against 7, q = 0.56, 0.56^30 ~ 3e-8, short of round-off
    # after its 30 iterations: the backward solves with J(Z) directly, two evaluations of f
    # (the vector-Jacobian products' and the Jacobian's). h = 0.1: Z = 1.59, q = 0.2, round-off
    # within 30 iterations: one evaluation. rtol 1e-10 with atol 1e-5 keeps the scale of the
    # chord updates fixed while Z changes sign. batched: two samples (B, 1), per-sample blocks.
    z = float(max(r.real for r in np.roots([h, 0.0, 1.0, -2.0]) if abs(r.imag) < 1e-12))
    m = _Cubic()
    shape = (2, 1) if batched else (1,)
    y0 = torch.full(shape, 2.0, dtype=F64, requires_grad=True)
    stats = SolveStats()
    y = odeint(m, y0, torch.tensor([0.0, h], dtype=F64), method="implicit_euler",
               rtol=1e-10, atol=1e-5, stats=stats,
               options={"step_size": h, "newton_max_iters": 40, "batched_jacobian": batched})
    zz = y[-1].detach().reshape(-1)  # the chord's root, within atol
    assert torch.allclose(zz, torch.full_like(zz, z), rtol=0, atol=1e-4)
    assert stats.newton_failures == 0, stats
    m.calls = 0
    y[-1].sum().backward()
    assert m.calls == calls
    assert y0.grad is not None and m.c.grad is not None
    # the derivatives of the exact stage solution at the computed root, to round-off
    assert torch.allclose(y0.grad.reshape(-1), 1 / (1 + 3 * h * zz**2), rtol=1e-13, atol=0)
    assert torch.allclose(m.c.grad, (-h * zz**3 / (1 + 3 * h * zz**2)).sum(), rtol=1e-13, atol=0)


def test_nan_jacobian_at_the_stage_solution_is_reported_by_the_backward() -> None:
    # y' = 1 (the torch.where's sqrt branch is multiplied by 0): implicit Euler from y0 = 0
    # with h = 1 gives Z = 1 exactly. df/dy is 0 at y0 = 0 (the forward is fine) but NaN at
    # Z = 1 > 0.5 (the unused branch sqrt(0.5 - y)): the backward's vector-Jacobian products
    # are NaN, and so is the Jacobian it falls back on: an error naming the stage's time,
    # not a silently missing gradient.
    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 1 - 0 * torch.where(y > 0.5, torch.zeros_like(y), torch.sqrt(0.5 - y))

    y0 = torch.zeros(1, dtype=F64, requires_grad=True)
    y = odeint(f, y0, torch.tensor([0.0, 1.0], dtype=F64), method="implicit_euler",
               options={"step_size": 1.0})
    assert float(y[-1, 0].detach()) == 1.0
    with pytest.raises(NewtonError, match=r"df/dy holds NaN or inf at t=1\.0 \(state entry 0\)"):
        y[-1, 0].backward()


def test_full_jacobian_calls_func_with_the_states_shape() -> None:
    # y_b' = M y_b for a (3, 2) state, written for that shape (y @ M.T): the full (6, 6)
    # Jacobian of the flattened state is block diagonal, kron(I_3, M)
    m = torch.tensor([[-1.0, 2.0], [0.5, -3.0]], dtype=F64)
    jac, batched = jacobian(lambda t, v: v @ m.T, 0.0, torch.randn(3, 2, dtype=F64), False)
    assert not batched
    assert torch.equal(jac, torch.kron(torch.eye(3, dtype=F64), m))


def test_jacobian_of_a_state_independent_field_is_zero_in_either_layout() -> None:
    # y' = t (no path to y, no parameter): df/dy = 0, as a (6, 6) matrix for the flattened
    # (3, 2) state and as three (2, 2) per-sample blocks
    y = torch.randn(3, 2, dtype=F64)
    jac, batched = jacobian(lambda t, v: torch.full((3, 2), t, dtype=F64), 0.5, y, False)
    assert not batched and torch.equal(jac, torch.zeros(6, 6, dtype=F64))
    blocks, batched = jacobian(lambda t, v: torch.full((3, 2), t, dtype=F64), 0.5, y, True)
    assert batched and torch.equal(blocks, torch.zeros(3, 2, 2, dtype=F64))


def test_jacobian_of_a_parameter_only_field_is_zero() -> None:
    # y' = p (a parameter that requires grad): f's output records a graph, but one with no
    # path to y (each reverse pass finds y unused): every block is zero
    p = torch.tensor(2.0, dtype=F64, requires_grad=True)
    blocks, batched = jacobian(lambda t, v: p.expand(3, 2), 0.0, torch.randn(3, 2, dtype=F64),
                               True)
    assert batched and torch.equal(blocks, torch.zeros(3, 2, 2, dtype=F64))


@pytest.mark.parametrize(("t", "h"), [(0.0, torch.tensor(0.1)), (torch.tensor(0.0), 0.1)])
def test_esdirk_step_refuses_a_tensor_time_or_step(t: object, h: object) -> None:
    with pytest.raises(InvalidArgumentError, match=r"kvaerno3 runs on the host loops only"):
        esdirk_step(IMPLICIT_TABLEAUX["kvaerno3"], lambda t, y: -y, t, torch.ones(2),  # type: ignore[arg-type]
                    h, None, None, NewtonSettings(), SolveStats())  # type: ignore[arg-type]


def test_newton_convergence_test_is_an_rms_norm_independent_of_the_state_size() -> None:
    # n identical copies of y' = -y^3 (y0 = 2, one implicit Euler step of 0.1) iterate
    # exactly as one copy does; the RMS norm of n equal updates is the update, so the
    # chord iterations stop at the same count for n = 1, 4 and 100.
    counts = []
    for n in (1, 4, 100):
        stats = SolveStats()
        odeint(lambda t, y: -y**3, torch.full((n,), 2.0, dtype=F64),
               torch.tensor([0.0, 0.1], dtype=F64), method="implicit_euler", rtol=1e-4,
               atol=1e-8, options={"step_size": 0.1}, stats=stats)
        counts.append((stats.newton_iterations, stats.newton_failures))
    assert counts[0][0] > 2 and counts == [counts[0]] * 3, counts


def test_fixed_step_full_newton_fallback_with_per_sample_blocks() -> None:
    # y' = -y^3 from y0 = 2, one implicit Euler step of 0.5: the chord iterations from the
    # guess y0 + h f(y0) = -2 fail (their scaled updates grow as Z passes through 0), so the
    # fixed step falls back to full Newton, here with per-sample blocks of a (2, 1) state;
    # Z + 0.5 Z^3 = 2 (the real root, by numpy)
    z = float(max(r.real for r in np.roots([0.5, 0.0, 1.0, -2.0]) if abs(r.imag) < 1e-12))
    stats = SolveStats()
    y = odeint(lambda t, y: -y**3, torch.full((2, 1), 2.0, dtype=F64),
               torch.tensor([0.0, 0.5], dtype=F64), method="implicit_euler", stats=stats,
               options={"step_size": 0.5, "batched_jacobian": True})
    assert stats.newton_failures == 1 and stats.jacobians > 1, stats
    assert torch.allclose(y[-1], torch.full((2, 1), z, dtype=F64), rtol=1e-8, atol=0)


# ---------------------------------------------------------------------------------------------
# A tableau that is not stiffly accurate: y1 from the weights b, dense output by Hermite

#: The implicit midpoint rule as a 2-stage ESDIRK (an explicit first stage that only feeds the
#: Newton guess): Z = y + h/2 f(t + h/2, Z), y1 = y + h f(t + h/2, Z); not stiffly accurate.
_MIDPOINT = dict(name="imp_midpoint", a=[[0.0], [0.0, 0.5]], b=[0.0, 1.0], c=[0.0, 0.5],
                 order=2)


def test_not_stiffly_accurate_tableau_steps_by_its_weights_and_interpolates_by_hermite(
) -> None:
    # y' = lam y, h = 1/4: each step multiplies by R(z) = (1 + z/2) / (1 - z/2), z = h lam
    tab = ImplicitTableau.from_lists(**_MIDPOINT)  # type: ignore[arg-type]
    assert not tab.stiffly_accurate
    lam, h = -3.0, 0.25
    r = (1 + h * lam / 2) / (1 - h * lam / 2)
    y = odeint(lambda t, y: lam * y, torch.ones(1, dtype=F64),
               torch.tensor([0.0, 0.3, 1.0], dtype=F64), method=ImplicitRK(tab),
               options={"step_size": h})
    assert abs(float(y[2]) - r**4) < 1e-14
    # t = 0.3 lies in the second step (theta = 0.2): the cubic Hermite on its end values and
    # slopes (f(t+h, y1) = lam y1 appended to the stages)
    y0, y1, th = r, r**2, 0.2
    p = ((2 * th**3 - 3 * th**2 + 1) * y0 + (th**3 - 2 * th**2 + th) * h * lam * y0
         + (-2 * th**3 + 3 * th**2) * y1 + (th**3 - th**2) * h * lam * y1)
    assert abs(float(y[1]) - p) < 1e-14


# ---------------------------------------------------------------------------------------------
# The chord iteration against its documented rules, on a scalar linear stage equation
#
# Z = psi + hg a1 Z with the step's Jacobian a0 = 0 (hg = 1, so M = 1): Z_{k+1} = psi + a1 Z_k,
# every update a1 times the one before. With rtol = 0 and atol = 1 the scaled RMS size of the
# update is its absolute value, so the rules "converged when size rate / (1 - rate) < kappa",
# "failed when rate > 2" and "failed after max_iters" give the counts by hand.


def _chord(a1: float, kappa: float = 1e-2, refresh: bool = False, n: int = 1,
           f=None) -> tuple[torch.Tensor | None, SolveStats]:
    stats = SolveStats()
    settings = NewtonSettings(rtol=0.0, atol=1.0, kappa=kappa, max_iters=10)
    m = IterationMatrix(torch.zeros(n, n, dtype=F64), 1.0, False, torch.Size((n,)), 0.0)
    z, _ = _stage_solve(f or (lambda t, z: a1 * z), 0.75, torch.ones(n, dtype=F64),
                        torch.zeros(n, dtype=F64), 1.0, m, settings, stats, refresh=refresh)
    return z, stats


@pytest.mark.parametrize(("kappa", "iters"), [(0.012, 8), (0.02, 7), (0.04, 6)])
def test_contracting_chord_stops_at_the_first_update_whose_predicted_error_is_below_kappa(
    kappa: float, iters: int
) -> None:
    # a1 = 1/2 from Z = 0, psi = 1: updates 1, 1/2, 1/4, ... (exact), rate 1/2, so the
    # predicted error size * rate / (1 - rate) is the update itself: the first 2^-k below
    # kappa (k >= 1) ends it, after k + 1 iterations; Z = 2 - 2^-k exactly
    z, stats = _chord(0.5, kappa)
    assert stats.newton_iterations == iters
    assert z is not None and float(z) == 2 - 2.0 ** (1 - iters)


def test_chord_with_a_unit_rate_never_converges_and_fails_after_max_iters() -> None:
    # a1 = -1: Z alternates 1, 0, 1, ... with updates of size exactly 1 (rate 1): neither
    # contracting nor growing past 2
    z, stats = _chord(-1.0)
    assert z is None and stats.newton_iterations == 10


def test_chord_whose_updates_grow_by_more_than_two_fails_at_the_second_update() -> None:
    z, stats = _chord(2.5)  # rate 2.5
    assert z is None and stats.newton_iterations == 2


def test_full_newton_refreshes_the_jacobian_and_lu_at_every_iterate() -> None:
    # refresh: M = 1 - a1 from the iterate's Jacobian: the first update solves the linear stage
    # exactly (Z = 1 / (1 - a1)), the second is zero; growth past 2 is not a failure here
    for a1 in (0.5, 2.5):
        z, stats = _chord(a1, refresh=True)
        assert z is not None and float(z) == pytest.approx(1 / (1 - a1), rel=1e-15)
        assert stats.newton_iterations == stats.jacobians == stats.lu_factorizations == 2


def test_full_newton_reports_a_nan_jacobian_at_the_stage_time() -> None:
    with pytest.raises(NewtonError, match=r"NaN or inf at t=0\.75 \(state entry 0\)"):
        _chord(0.0, refresh=True, f=lambda t, z: _nan_gradient_in_sample_2(t, z + 101.0))


def test_one_entry_state_uses_the_rms_of_one_entry() -> None:
    # the RMS of one update is its absolute value: kappa = 0.012 ends at 2^-7 (8 iterations);
    # a size scaled by 1/sqrt(2) would end at 2^-6
    assert _chord(0.5, 0.012, n=1)[1].newton_iterations == 8
    assert _chord(0.5, 0.012, n=3)[1].newton_iterations == 8


# ---------------------------------------------------------------------------------------------
# The step's bookkeeping: given first stages, stage times, failures


def test_step_uses_a_given_first_stage_instead_of_evaluating_it() -> None:
    # f is called once for the Jacobian (plain autograd) and once per chord iteration under
    # no_grad; a first stage passed in (FSAL) saves the one more call at (t, y)
    calls = [0]

    def f(t: float, y: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return -y**3

    y = torch.tensor([2.0, 1.0], dtype=F64)
    for k1, extra in ((-(y**3), 0), (None, 1)):
        calls[0], stats = 0, SolveStats()
        with torch.no_grad():
            esdirk_step(IMPLICIT_TABLEAUX["kvaerno3"], f, 0.0, y, 0.1, k1, None,
                        NewtonSettings(), stats)
        assert calls[0] == 1 + stats.newton_iterations + extra, (calls, stats)


def _one_then_two(t: float | torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # y' = 1 before t = 0.5, 2 from it on: y(0.5) = 0.5, y(1) = 1.5
    return torch.where(torch.as_tensor(t) < 0.5, 1.0, 2.0) * torch.ones_like(y)


def test_jump_time_stages_see_the_left_limit_so_a_piecewise_constant_field_is_exact() -> None:
    # every step integrates a constant exactly when no stage crosses the jump: the step ending
    # at 0.5 evaluates its last stage (c = 1) at the left limit
    stats = SolveStats()
    y = odeint(_one_then_two, torch.zeros(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
               method="kvaerno3", rtol=1e-6, atol=1e-9, options={"jump_t": [0.5]}, stats=stats)
    assert abs(float(y[-1]) - 1.5) < 1e-14 and stats.rejected_steps == 0


def test_perturbed_implicit_euler_sees_each_steps_end_from_the_left() -> None:
    # torchdiffeq's perturb: the implicit stage at the step's end sees f one ulp before it, so
    # implicit Euler integrates the piecewise constant field exactly; unperturbed, the step
    # ending at 0.5 already sees 2
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    for perturb, want in ((True, [0.0, 0.5, 1.5]), (False, [0.0, 0.75, 1.75])):
        y = odeint(_one_then_two, torch.zeros(1, dtype=F64), t, method="implicit_euler",
                   options={"step_size": 0.25, "perturb": perturb})
        assert y.flatten().tolist() == pytest.approx(want, abs=1e-14), perturb


def _nan_after_start(t: float | torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # finite (and its Jacobian) at the step's start t = 0, NaN at every later stage time
    return -y if float(t) == 0.0 else torch.full_like(y, math.nan)


def test_adaptive_step_with_a_failed_stage_counts_one_failure_and_returns_an_infinite_error(
) -> None:
    stats = SolveStats()
    y = torch.ones(2, dtype=F64)
    with torch.no_grad():
        y1, err, _ = esdirk_step(IMPLICIT_TABLEAUX["kvaerno3"], _nan_after_start, 0.0, y, 0.1,
                                 None, None, NewtonSettings(), stats)
    assert y1 is y and err is not None and torch.isinf(err).all()
    assert stats.newton_failures == 1 and stats.newton_iterations == 1


def test_each_fixed_step_that_falls_back_to_full_newton_counts_one_failure() -> None:
    # the step of the fallback test above, twice with the same statistics
    stats = SolveStats()
    y = torch.full((1,), 2.0, dtype=F64)
    for _ in range(2):
        with torch.no_grad():
            esdirk_step(IMPLICIT_TABLEAUX["implicit_euler"], lambda t, y: -y**3, 0.0, y, 0.5,
                        None, None, NewtonSettings(), stats)
    assert stats.newton_failures == 2


# ---------------------------------------------------------------------------------------------
# The Jacobian and the iteration matrix


def test_a_right_hand_side_with_its_own_jacobian_is_not_differentiated() -> None:
    class Linear:
        # a deliberately different matrix: the one returned must be this one, as given
        def __call__(self, t: float, y: torch.Tensor) -> torch.Tensor:
            raise AssertionError("f must not be called for the Jacobian")

        def jacobian(self, t: float, y: torch.Tensor) -> torch.Tensor:
            assert not torch.is_grad_enabled() and not y.requires_grad
            return torch.full((y.numel(), y.numel()), t, dtype=y.dtype)

    y = torch.ones(3, dtype=F64, requires_grad=True)
    jac, batched = jacobian(Linear(), 0.25, y, True)  # type: ignore[arg-type]
    assert not batched and torch.equal(jac, torch.full((3, 3), 0.25, dtype=F64))


def test_a_state_of_64_entries_is_differentiated_by_plain_autograd() -> None:
    # the documented boundary: up to 64 entries, one reverse pass each on a real tensor, so a
    # func that reads the state through numpy (as logging code does) works; above, jacrev
    # passes a functorch tensor without storage
    def f(t: float, y: torch.Tensor) -> torch.Tensor:
        y.detach().numpy()
        return 2.0 * y

    jac, _ = jacobian(f, 0.0, torch.ones(64, dtype=F64), False)
    assert torch.equal(jac, 2.0 * torch.eye(64, dtype=F64))


def test_a_single_nan_entry_of_the_jacobian_names_the_sample_of_its_row() -> None:
    # one NaN at row 2 (f of sample 1) and column 0 (y of sample 0): one bad row, one bad
    # column; the tie goes to the row, the function whose derivative it is
    jac = torch.zeros(4, 4, dtype=F64)
    jac[2, 0] = math.nan
    with pytest.raises(NewtonError, match=r"NaN or inf at t=0\.5 \(sample 1\)"):
        IterationMatrix(jac, 0.1, False, torch.Size((2, 2)), 0.5)


def test_float32_solve_under_a_float64_default_dtype_stays_float32() -> None:
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        y = odeint(lambda t, y: -50.0 * y, torch.ones(2, dtype=torch.float32),
                   torch.tensor([0.0, 0.1], dtype=torch.float32), method="kvaerno3")
    finally:
        torch.set_default_dtype(old)
    assert y.dtype == torch.float32
    assert torch.allclose(y[-1], torch.full((2,), math.exp(-5.0)), rtol=1e-3)
