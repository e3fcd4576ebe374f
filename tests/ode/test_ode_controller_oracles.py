"""Step-size control and the error norm of the adaptive loops against oracles outside the engine.

The other adaptive tests compare the host loop with the device loop; a wrong controller exponent
or error norm made in both would pass them. Here the oracles are:

- scipy's ``RK45`` (the same Dormand-Prince pair, the same RMS norm
  ``sqrt(mean((err / (atol + rtol*max(|y|, |y_new|)))**2))``, safety 0.9, factors in
  ``[0.2, 10]``, exponent ``-1/(error_estimator_order + 1) = -1/5``), stepped by hand;
- a reference adaptive integrator written below in numpy from scipy's RK45 tableau arrays
  (``A``, ``B``, ``C``, ``E``) and the controller formula documented in
  ``deeplimits.ode.PIController`` (checked first to reproduce scipy's steps exactly);
- scipy's ``select_initial_step`` for the default first step.

Our step times are read from the times at which ``func`` is called: dopri5 is FSAL, so every
attempt calls ``func`` six times, at ``t + h * (1/5, 3/10, 4/5, 8/9, 1, 1)``; an attempt was
accepted iff the next one starts at its end.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy.integrate import RK45
from scipy.integrate._ivp.common import select_initial_step

from deeplimits.ode import (
    TABLEAUX,
    AdaptiveOptions,
    ExecutionOptions,
    IController,
    PIController,
    SolveStats,
    odeint,
)

F64 = torch.float64
STAGE_CALLS = 6  # dopri5 evaluations per attempt (FSAL: the first stage is the last one's)
MU = 5.0

NpRhs = Callable[[float, np.ndarray], np.ndarray]
TorchRhs = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _np_decay(t: float, y: np.ndarray) -> np.ndarray:
    return -0.7 * y


def _torch_decay(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -0.7 * y


def _np_lotka(t: float, y: np.ndarray) -> np.ndarray:
    return np.array([1.5 * y[0] - y[0] * y[1], -3.0 * y[1] + y[0] * y[1]])


def _torch_lotka(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    a, b = y[..., 0], y[..., 1]
    return torch.stack([1.5 * a - a * b, -3.0 * b + a * b], dim=-1)


def _np_vdp(t: float, y: np.ndarray) -> np.ndarray:
    return np.array([y[1], MU * (1.0 - y[0] ** 2) * y[1] - y[0]])


def _torch_vdp(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    a, b = y[..., 0], y[..., 1]
    return torch.stack([b, MU * (1.0 - a**2) * b - a], dim=-1)


def _np_rotation(t: float, y: np.ndarray) -> np.ndarray:
    return np.array([-3.0 * y[1], 3.0 * y[0]])


def _torch_rotation(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([-3.0 * y[..., 1], 3.0 * y[..., 0]], dim=-1)


# name: (numpy rhs, torch rhs, y0, t_end)
PROBLEMS: dict[str, tuple[NpRhs, TorchRhs, list[float], float]] = {
    "decay": (_np_decay, _torch_decay, [1.0, 2.0], 5.0),
    "lotka_volterra": (_np_lotka, _torch_lotka, [1.0, 1.0], 10.0),
    "van_der_pol_mu5": (_np_vdp, _torch_vdp, [2.0, 0.0], 10.0),
    "rotation": (_np_rotation, _torch_rotation, [1.0, 0.0], 5.0),
}

# The loops: the host loop, the device loop (one sync per attempt, so no wasted attempts after
# the end), per-sample step sizes on a batch of identical rows.
LOOPS = {
    "host": {"device_loop": False},
    "device": {"device_loop": True, "sync_every": 1},
    "per_sample": {"per_sample": True, "sync_every": 1},
}
BATCH = 3


def _scipy_controller() -> IController:
    """Our controller with scipy RK45's constants (they are also our defaults)."""
    return IController(safety=0.9, factor_min=0.2, factor_max=10.0)


def _scipy_steps(name: str, rtol: float, atol: float) -> tuple[float, list[float], list[int], int]:
    """scipy RK45 stepped by hand: ``(first h_abs, accepted times, attempts per step, nfev)``."""
    fun, _, y0, t_end = PROBLEMS[name]
    solver = RK45(fun, 0.0, np.array(y0), t_end, rtol=rtol, atol=atol)
    h0 = float(solver.h_abs)
    times, attempts = [0.0], []
    while solver.status == "running":
        before = solver.nfev
        solver.step()
        assert solver.status != "failed"
        attempts.append((solver.nfev - before) // STAGE_CALLS)
        times.append(float(solver.t))
    return h0, times, attempts, solver.nfev


def _our_solve(
    name: str, rtol: float, atol: float, loop: str, first_step: float | None,
    controller: PIController,
) -> tuple[list[float], SolveStats]:
    """Solve ``name`` with dopri5 in float64; returns the times ``func`` was called at."""
    _, rhs, y0, t_end = PROBLEMS[name]
    calls: list[float] = []

    def func(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls.append(float(t.reshape(-1)[0]))
        return rhs(t, y)

    y = torch.tensor(y0, dtype=F64)
    if loop == "per_sample":
        y = y.expand(BATCH, -1).clone()
    stats = SolveStats()
    opts = AdaptiveOptions(first_step=first_step, controller=controller)
    odeint(func, y, torch.tensor([0.0, t_end], dtype=F64), rtol=rtol, atol=atol,
           method="dopri5", options=opts, execution=ExecutionOptions(**LOOPS[loop]), stats=stats)
    return calls, stats


def _accepted_times(
    calls: list[float], start_calls: int, t0: float
) -> tuple[list[float], list[bool]]:
    """Accepted step times and each attempt's acceptance, read from ``func``'s call times.

    Each attempt from ``s`` with step ``h`` calls ``func`` at ``s + h/5, ..., s + h, s + h``;
    its start is ``(5 * t_first - t_fifth) / 4``. An attempt is accepted iff the next attempt
    starts at its end (rather than at its own start); the last attempt is accepted.
    """
    rest = calls[start_calls:]
    assert len(rest) % STAGE_CALLS == 0, len(rest)
    chunks = [rest[i : i + STAGE_CALLS] for i in range(0, len(rest), STAGE_CALLS)]
    start, times, flags = t0, [t0], []
    for i, chunk in enumerate(chunks):
        end = chunk[4]
        if i + 1 < len(chunks):
            nxt = chunks[i + 1]
            nxt_start = (5.0 * nxt[0] - nxt[4]) / 4.0
            if abs(nxt_start - start) < abs(nxt_start - end):
                flags.append(False)
                continue
        flags.append(True)
        times.append(end)
        start = end
    return times, flags


def _reference_dopri5(
    fun: NpRhs, y0: list[float], t_end: float, rtol: float, atol: float, first_step: float,
    ctrl: PIController, scipy_rules: bool = False,
) -> tuple[list[float], int, list[float]]:
    """An independent adaptive Dormand-Prince integrator (numpy, scipy RK45's tableau arrays).

    Controller as documented in ``deeplimits.ode.PIController``: with ``k`` = embedded order + 1
    and ``r_n`` the RMS scaled error, an accepted step is followed by
    ``h * clip(safety * r_n**(-(pcoeff + icoeff)/k) * r_{n-1}**(pcoeff/k), factor_min,
    factor_max)`` (``r_{n-1}`` = 1 before the first acceptance), a rejected one by
    ``h * clip(safety * r_n**(-1/k), factor_min, 1)``; ``|h| <= dt_max``; the last step is
    shortened to end at ``t_end``. ``scipy_rules``: scipy's extra rule (growth capped at
    1 on the first accepted step after a rejection) and its step ``(t + h) - t``.
    Returns (accepted times, rejected attempts, error ratios of the accepted steps).
    """
    a_mat, b, c, e = RK45.A, RK45.B, RK45.C, RK45.E
    k = RK45.error_estimator_order + 1
    y = np.array(y0, dtype=float)
    n = y.size
    t, f = 0.0, fun(0.0, y)
    h_abs = first_step if ctrl.dt_max is None else min(first_step, ctrl.dt_max)
    prev, after_reject = 1.0, False
    times, rejected, ratios = [0.0], 0, []
    while t < t_end:
        last = t + h_abs >= t_end
        h = t_end - t if last else h_abs
        if scipy_rules:
            h = (t + h) - t  # scipy steps by t_new - t
        ks = np.empty((7, n))
        ks[0] = f
        for s in range(1, 6):
            ks[s] = fun(t + c[s] * h, y + np.dot(ks[:s].T, a_mat[s, :s]) * h)
        y_new = y + h * np.dot(ks[:6].T, b)
        ks[6] = fun(t + h, y_new)
        err = np.dot(ks.T, e) * h  # (the arithmetic of scipy's RK45, op for op)
        scale = atol + np.maximum(np.abs(y), np.abs(y_new)) * rtol
        r = float(np.linalg.norm(err / scale) / n**0.5)
        if r <= 1.0:
            fac = ctrl.safety * r ** (-(ctrl.pcoeff + ctrl.icoeff) / k) * prev ** (ctrl.pcoeff / k)
            fac = min(ctrl.factor_max, max(ctrl.factor_min, fac))
            if scipy_rules and after_reject:
                fac = min(1.0, fac)
            t = t_end if last else t + h
            y, f, prev, after_reject = y_new, ks[6], r, False
            times.append(t)
            ratios.append(r)
        else:
            fac = min(1.0, max(ctrl.factor_min, ctrl.safety * r ** (-1.0 / k)))
            rejected += 1
            after_reject = True
        h_abs = abs(h) * fac
        if ctrl.dt_max is not None:
            h_abs = min(h_abs, ctrl.dt_max)
    return times, rejected, ratios


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_reference_integrator_with_scipys_rejection_rule_reproduces_rk45(name: str) -> None:
    """The numpy reference below (used by the controller tests) is faithful: given scipy's
    extra rule after a rejection, it takes exactly scipy RK45's steps."""
    fun, _, y0, t_end = PROBLEMS[name]
    rtol, atol = 1e-6, 1e-8
    h0, times, attempts, _ = _scipy_steps(name, rtol, atol)
    ref, rejected, _ = _reference_dopri5(fun, y0, t_end, rtol, atol, h0, _scipy_controller(),
                                         scipy_rules=True)
    assert rejected == sum(attempts) - len(attempts)
    np.testing.assert_allclose(ref, times, rtol=1e-13, atol=0)


@pytest.mark.parametrize("loop", list(LOOPS))
@pytest.mark.parametrize("rtol", [1e-6, 1e-8])
@pytest.mark.parametrize("name", list(PROBLEMS))
def test_dopri5_takes_scipy_rk45_steps(name: str, rtol: float, loop: str) -> None:
    """dopri5 with scipy's controller constants and first step takes scipy RK45's steps.

    Oracle: scipy ``RK45`` stepped by hand. One documented difference: after a rejection scipy
    caps the growth of the next accepted step at 1 (Hairer's rule); our controller does not
    (``PIController``'s docstring: after a rejection only the step just rejected is capped).
    So the step times are compared up to the end of scipy's first step that needed a
    rejection (the whole run where scipy rejects nothing, with the counts pinned exactly).
    The step times agree to roundoff of the error estimate (``h * sum(E_i k_i)`` cancels: a
    relative error of 1e-16 |k| h / err in ``r``, a fifth of it in the next step).
    """
    atol = rtol * 1e-2
    h0, times, attempts, nfev = _scipy_steps(name, rtol, atol)
    calls, stats = _our_solve(name, rtol, atol, loop, h0, _scipy_controller())
    ours, flags = _accepted_times(calls, 1, 0.0)
    assert flags.count(False) == stats.rejected_steps
    assert flags.count(True) == stats.accepted_steps
    first_reject = next((i for i, n in enumerate(attempts) if n > 1), None)
    if first_reject is None:
        # scipy's nfev counts its initial-step probe; ours got the first step given.
        assert (stats.accepted_steps, stats.rejected_steps, stats.nfe_forward) == (
            len(times) - 1, 0, nfev - 1)
        np.testing.assert_allclose(ours, times, rtol=1e-8, atol=0)
    else:
        m = first_reject + 2  # times[0 .. first_reject + 1]
        assert first_reject >= 2  # the prefix is a real test
        np.testing.assert_allclose(ours[:m], times[:m], rtol=1e-6, atol=0)
        # The same attempts up to there: accepted ones, then the rejections, then the retry.
        pattern = [True] * first_reject + [False] * (attempts[first_reject] - 1) + [True]
        assert flags[: len(pattern)] == pattern


CONTROLLERS = {
    "I": IController(),
    "PI(0.2,0.8)": PIController(pcoeff=0.2, icoeff=0.8),
    "PI(0.4,0.3)": PIController(pcoeff=0.4, icoeff=0.3),
    "I,dt_max": IController(dt_max=1.0),  # dt_max scaled by the problem's below
    "PI(0.2,0.8),dt_max": PIController(pcoeff=0.2, icoeff=0.8, dt_max=1.0),
}
# first step and dt_max per problem: every accepted error ratio stays above 1e-4
STEP_BOUNDS = {"lotka_volterra": (0.1, 0.08), "van_der_pol_mu5": (0.03, 0.1)}


@pytest.mark.parametrize("loop", list(LOOPS))
@pytest.mark.parametrize("ctrl", list(CONTROLLERS))
@pytest.mark.parametrize("name", ["lotka_volterra", "van_der_pol_mu5"])
def test_controllers_take_the_steps_of_their_documented_formula(
    name: str, ctrl: str, loop: str
) -> None:
    """Every accepted and rejected step of dopri5 under the I and PI controllers (with and
    without ``dt_max``) is the one the documented formula gives, evaluated by the independent
    numpy reference integrator; counts pinned exactly, step times to error-estimate roundoff.
    The first step (``STEP_BOUNDS``) keeps every accepted error ratio above 1e-4, so the
    engine's floor on ``r_{n-1}`` (an implementation detail) never acts."""
    fun, _, y0, t_end = PROBLEMS[name]
    rtol, atol = 1e-6, 1e-8
    h0, dt_max = STEP_BOUNDS[name]
    controller = CONTROLLERS[ctrl]
    if controller.dt_max is not None:
        controller = dataclasses.replace(controller, dt_max=dt_max)
    ref, ref_rejected, ratios = _reference_dopri5(fun, y0, t_end, rtol, atol, h0, controller)
    assert min(ratios[:-1]) > 1e-4  # (the last, shortened step feeds no controller)
    assert ref_rejected > 0  # the rule after a rejection is exercised
    calls, stats = _our_solve(name, rtol, atol, loop, h0, controller)
    ours, flags = _accepted_times(calls, 1, 0.0)
    attempts = len(ref) - 1 + ref_rejected
    assert (stats.accepted_steps, stats.rejected_steps, stats.nfe_forward) == (
        len(ref) - 1, ref_rejected, 1 + STAGE_CALLS * attempts)
    assert flags.count(False) == ref_rejected
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=0)
    if controller.dt_max is not None:
        assert max(np.diff(ours)) <= controller.dt_max * (1 + 1e-12)
        assert max(np.diff(ours)) == pytest.approx(controller.dt_max, rel=1e-12)


@pytest.mark.parametrize("loop", list(LOOPS))
@pytest.mark.parametrize("name", list(PROBLEMS))
def test_default_first_step_is_scipy_rk45s_first_step(name: str, loop: str) -> None:
    """Without ``first_step`` the first step is Hairer's heuristic as scipy's RK45 takes it
    (``select_initial_step``, same norm and scale, with RK45's error-estimator order 4: the
    exponent 1/5, as in torchdiffeq and Hairer's Fortran DOPRI5)."""
    fun, _, y0, t_end = PROBLEMS[name]
    rtol, atol = 1e-6, 1e-8
    y = np.array(y0)
    f0 = fun(0.0, y)
    order = TABLEAUX["dopri5"].error_order
    want = select_initial_step(fun, 0.0, y, t_end, np.inf, f0, 1.0, order, rtol, atol)
    calls, _ = _our_solve(name, rtol, atol, loop, None, _scipy_controller())
    # calls: f(t0, y0), the heuristic's probe, then the first attempt's stages.
    first_h = (calls[2 + 4] - 5.0 * calls[2]) / -4.0 + calls[2 + 4]
    assert first_h == pytest.approx(want, rel=1e-12)
