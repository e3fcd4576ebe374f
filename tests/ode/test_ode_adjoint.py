"""``odeint_adjoint`` (``_adjoint``) on ``y' = lam * y`` (elementwise), against its exact
solution ``y_k(t) = y0_k exp(lam_k (t - t0))``. For ``L = sum_i w_i . y(t_i)``::

    dL/dy0_k  = sum_i w_ik exp(lam_k (t_i - t0))
    dL/dlam_k = sum_i w_ik y0_k (t_i - t0) exp(lam_k (t_i - t0))
    dL/dt_i   = w_i . lam y(t_i)   (i >= 1),   dL/dt_0 = -sum_{i>=1} dL/dt_i

(the output ``y(t_0) = y0`` itself does not move with ``t_0``).
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torchdiffeq
from torch import nn

from deeplimits.errors import InvalidArgumentError, UnknownNameError
from deeplimits.ode import (
    AdjointOptions,
    ExecutionOptions,
    FixedStepOptions,
    SolveStats,
    odeint,
    odeint_adjoint,
)

F64 = torch.float64
LAM, Y0 = [-0.8, 0.3], [1.0, -2.0]
W = [[0.5, 1.0], [2.0, -1.0], [-1.5, 0.25], [1.0, 3.0]]


class _Decay(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lam = nn.Parameter(torch.tensor(LAM, dtype=F64))
        self.spare = nn.Parameter(torch.tensor(2.0, dtype=F64))  # not used by forward

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.lam * y


def _exact(times: list[float]) -> tuple[list[float], list[float], list[float]]:
    t0 = times[0]
    g_y0 = [sum(W[i][k] * math.exp(LAM[k] * (ti - t0)) for i, ti in enumerate(times))
            for k in range(2)]
    g_lam = [sum(W[i][k] * Y0[k] * (ti - t0) * math.exp(LAM[k] * (ti - t0))
                 for i, ti in enumerate(times)) for k in range(2)]
    g_t = [sum(W[i][k] * LAM[k] * Y0[k] * math.exp(LAM[k] * (ti - t0)) for k in range(2))
           for i, ti in enumerate(times)]
    g_t[0] = -sum(g_t[1:])
    return g_y0, g_lam, g_t


CASES = {
    "default": {},
    "seminorm": {"adjoint_options": {"norm": "seminorm"}},
    "adjoint_options_object": {"adjoint_options": AdjointOptions(norm="seminorm")},
    "other_method": {"adjoint_method": "tsit5", "adjoint_rtol": 1e-11, "adjoint_atol": 1e-13},
    "fixed_backward": {"adjoint_method": "rk4", "adjoint_options": {"step_size": 0.005}},
    "fixed_backward_object": {"adjoint_method": "rk4",
                              "adjoint_options": FixedStepOptions(step_size=0.005)},
    # a forward norm function: its backward norm applies to adaptive backward methods only
    "fixed_backward_forward_norm": {"options": {"norm": lambda y: y.abs().max()},
                                    "adjoint_method": "rk4",
                                    "adjoint_options": {"step_size": 0.005}},
}


@pytest.mark.parametrize("times", [[0.2, 0.7, 1.5, 2.0], [2.0, 1.1, 0.4]])
@pytest.mark.parametrize("case", list(CASES))
def test_adjoint_gradients_are_those_of_the_exact_solution(times: list[float], case: str) -> None:
    f = _Decay()
    y0 = torch.tensor(Y0, dtype=F64, requires_grad=True)
    t = torch.tensor(times, dtype=F64, requires_grad=True)
    stats = SolveStats()
    ys = odeint_adjoint(f, y0, t, rtol=1e-11, atol=1e-13, stats=stats, **CASES[case])
    w = torch.tensor(W[: len(times)], dtype=F64)
    g_y0, g_lam, g_t, g_spare = torch.autograd.grad((w * ys).sum(), (y0, f.lam, t, f.spare))
    want_y0, want_lam, want_t = _exact(times)
    assert g_y0.tolist() == pytest.approx(want_y0, rel=1e-7)
    assert g_lam.tolist() == pytest.approx(want_lam, rel=1e-7)
    assert g_t.tolist() == pytest.approx(want_t, rel=1e-7, abs=1e-9)
    assert float(g_spare) == 0.0
    assert stats.backward_accepted_steps > 0 and stats.nfe_backward > 0
    if case.startswith("fixed_backward"):
        # rk4 steps of 0.005 over each interval, counted as backward steps (0.5 + 0.8 + 0.5 =
        # 1.8: 360 steps; 0.9 + 0.7 = 1.6: 320), 4 evaluations each, plus f(t_i, y_i) once
        # per output time for the time gradients
        n = 360 if len(times) == 4 else 320
        assert stats.backward_accepted_steps == n
        assert stats.nfe_backward == 4 * n + len(times)


def test_adjoint_params_choose_what_is_differentiated() -> None:
    f = _Decay()
    y0 = torch.tensor(Y0, dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    ys = odeint_adjoint(f, y0, t, rtol=1e-11, atol=1e-13, adjoint_params=(f.lam,))
    loss = ys[-1].sum()
    g_y0, g_lam = torch.autograd.grad(loss, (y0, f.lam))
    assert g_y0.tolist() == pytest.approx([math.exp(v) for v in LAM], rel=1e-8)
    assert g_lam.tolist() == pytest.approx([y * math.exp(v) for v, y in zip(LAM, Y0, strict=True)],
                                          rel=1e-7)
    # a parameter left out gets no gradient through the adjoint
    ys = odeint_adjoint(f, y0, t, adjoint_params=(f.spare,))
    (g,) = torch.autograd.grad(ys[-1].sum(), (f.lam,), allow_unused=True)
    assert g is None


def test_adjoint_refuses_per_sample_and_own_loop_methods() -> None:
    f = _Decay()
    y0 = torch.tensor([Y0], dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(InvalidArgumentError, match="per_sample=True is not supported"):
        odeint_adjoint(f, y0, t, options={"per_sample": True})
    with pytest.raises(InvalidArgumentError, match="per_sample=True is not supported"):
        odeint_adjoint(f, y0, t, adjoint_options={"per_sample": True})
    with pytest.raises(UnknownNameError, match="reversible_heun"):
        odeint_adjoint(f, y0, t, adjoint_method="reversible_heun")


def test_implicit_backward_solve_converges_in_two_chord_iterations_per_stage() -> None:
    """``adjoint_method="kvaerno3"`` (ESDIRK, 3 implicit stages) on the linear ``y' = lam y``
    with no parameters: the augmented state ``[z, a]`` obeys ``z' = lam z``, ``a' = -lam a``,
    whose Jacobian ``diag(lam, -lam)`` the adjoint supplies exactly. For a linear stage
    equation the first chord update with the exact Jacobian solves it to round-off and the
    second confirms it: at most 2 iterations per stage, 6 per backward attempt (the forward
    dopri5 runs none). At the loose backward tolerance the steps are long enough that a wrong
    or missing Jacobian (e.g. ``+J^T`` for the adjoint block) needs more. Gradient: the
    closed form, to the backward tolerance."""
    f = _Decay()
    times = [0.2, 0.7, 1.5, 2.0]
    y0 = torch.tensor(Y0, dtype=F64, requires_grad=True)
    stats = SolveStats()
    ys = odeint_adjoint(f, y0, torch.tensor(times, dtype=F64), rtol=1e-10, atol=1e-12,
                        adjoint_method="kvaerno3", adjoint_rtol=1e-4, adjoint_atol=1e-6,
                        adjoint_params=(), stats=stats)
    (g_y0,) = torch.autograd.grad((torch.tensor(W, dtype=F64) * ys).sum(), (y0,))
    assert g_y0.tolist() == pytest.approx(_exact(times)[0], rel=1e-4)
    attempts = stats.backward_accepted_steps + stats.backward_rejected_steps
    assert attempts >= 3 and stats.newton_failures == 0
    assert stats.jacobians == attempts  # one Jacobian per backward step
    assert stats.newton_iterations <= 6 * attempts
    # with the parameters' channel [z, a, a_lam, a_spare] (its block of the chord matrix is 0)
    ys = odeint_adjoint(f, y0, torch.tensor(times, dtype=F64), rtol=1e-10, atol=1e-12,
                        adjoint_method="kvaerno3", adjoint_rtol=1e-4, adjoint_atol=1e-6)
    g_lam, g_spare = torch.autograd.grad((torch.tensor(W, dtype=F64) * ys).sum(),
                                         (f.lam, f.spare))
    assert g_lam.tolist() == pytest.approx(_exact(times)[1], rel=1e-4)
    assert float(g_spare) == 0.0


class _Drive(nn.Module):
    """``y' = theta cos(t)``: the state does not enter the dynamics, so ``a`` stays at
    ``dL/dy(t1)`` and ``a_theta(t0) = int_t0^t1 a cos(s) ds``. ``y(t) = y0 + theta (sin t -
    sin t0)``: ``dL/dy0 = w``, ``dL/dtheta = w (sin t1 - sin t0)``."""

    def __init__(self, theta: list[float]) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(theta, dtype=F64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.theta * torch.cos(t)


def test_dynamics_that_ignore_the_state_give_the_closed_form_gradients() -> None:
    f = _Drive([0.7, -1.1])
    y0 = torch.tensor(Y0, dtype=F64, requires_grad=True)
    t = torch.tensor([0.3, 1.2], dtype=F64, requires_grad=True)
    ys = odeint_adjoint(f, y0, t, rtol=1e-10, atol=1e-12)
    w = [0.5, -2.0]
    g_y0, g_theta, g_t = torch.autograd.grad((torch.tensor(w, dtype=F64) * ys[-1]).sum(),
                                             (y0, f.theta, t))
    assert g_y0.tolist() == pytest.approx(w, rel=1e-12)
    ds = math.sin(1.2) - math.sin(0.3)
    assert g_theta.tolist() == pytest.approx([v * ds for v in w], rel=1e-8)
    # dL/dt1 = w . y'(t1) = w . theta cos(t1); dL/dt0 = -w . theta cos(t0)
    wt = 0.5 * 0.7 + 2.0 * 1.1
    assert g_t.tolist() == pytest.approx([-wt * math.cos(0.3), wt * math.cos(1.2)], rel=1e-8)


@pytest.mark.parametrize("norm", ["seminorm", "rms"])
def test_seminorm_steps_by_the_state_and_adjoint_alone(norm: str) -> None:
    """``y' = theta cos t`` with ``theta = 0`` backwards over ``[1, 0]``: ``z`` and ``a`` are
    constant, so dopri5's error estimate of ``[z, a]`` is exactly 0 and, with ``first_step
    = 1e-3`` and ``ifactor = 10``, the seminorm steps grow tenfold: 1e-3, 1e-2, 1e-1 and the
    remaining 0.889, i.e. 4 steps and 1 + 6 * 4 = 25 evaluations (FSAL). The RMS norm also
    sees the quadrature error of ``a_theta = int w cos`` and needs more steps; its gradient
    ``w sin 1`` is then accurate to the tolerance."""
    f = _Drive([0.0, 0.0])
    y0 = torch.tensor(Y0, dtype=F64, requires_grad=True)
    stats = SolveStats()
    ys = odeint_adjoint(f, y0, torch.tensor([0.0, 1.0], dtype=F64), rtol=1e-8, atol=1e-10,
                        adjoint_options={"norm": norm, "first_step": 1e-3, "ifactor": 10.0},
                        stats=stats)
    w = [0.5, -2.0]
    g_y0, g_theta = torch.autograd.grad((torch.tensor(w, dtype=F64) * ys[-1]).sum(),
                                        (y0, f.theta))
    assert g_y0.tolist() == pytest.approx(w, rel=1e-12)
    want = [v * math.sin(1.0) for v in w]
    if norm == "seminorm":
        assert (stats.backward_accepted_steps, stats.backward_rejected_steps) == (4, 0)
        assert stats.nfe_backward == 25
        assert g_theta.tolist() == pytest.approx(want, rel=1e-5)
    else:
        assert stats.backward_accepted_steps > 4
        assert g_theta.tolist() == pytest.approx(want, rel=1e-8)


def test_backward_inherits_the_forward_fixed_step_method_and_its_options() -> None:
    """``method="rk4"`` with ``step_size=0.01`` over ``[0, 1]``: 100 steps of 4 evaluations
    each way. With no ``adjoint_*`` the backward solve takes the same method and options; with
    ``t`` not requiring grad no evaluation is spent on time gradients (with it: one per
    output time)."""
    f = _Decay()
    y0 = torch.tensor(Y0, dtype=F64, requires_grad=True)
    for t_grad in (False, True):
        t = torch.tensor([0.0, 1.0], dtype=F64, requires_grad=t_grad)
        stats = SolveStats()
        ys = odeint_adjoint(f, y0, t, method="rk4", options={"step_size": 0.01}, stats=stats)
        (g_y0,) = torch.autograd.grad(ys[-1].sum(), (y0,))
        assert g_y0.tolist() == pytest.approx([math.exp(v) for v in LAM], rel=1e-8)
        assert (stats.nfe_forward, stats.accepted_steps) == (400, 100)
        assert stats.backward_accepted_steps == 100
        assert stats.nfe_backward == 400 + (2 if t_grad else 0)


def test_default_tolerances_are_torchdiffeqs() -> None:
    """Called without ``rtol``/``atol``, the solve is the one at torchdiffeq's defaults (read
    from its signature: 1e-7 and 1e-9), forward and backward."""
    sig = inspect.signature(torchdiffeq.odeint_adjoint).parameters
    tols = {"rtol": sig["rtol"].default, "atol": sig["atol"].default}
    t = torch.tensor([0.0, 2.0], dtype=F64)
    runs = []
    for kw in ({}, tols):
        f = _Decay()
        y0 = torch.tensor(Y0, dtype=F64, requires_grad=True)
        stats = SolveStats()
        ys = odeint_adjoint(f, y0, t, stats=stats, **kw)
        ys[-1].sum().backward()
        runs.append((stats, ys.detach(), y0.grad))
    (s_def, y_def, g_def), (s_td, y_td, g_td) = runs
    assert s_def == s_td and torch.equal(y_def, y_td) and torch.equal(g_def, g_td)
    assert y_def[-1].tolist() == pytest.approx([y * math.exp(2 * v) for v, y in zip(
        LAM, Y0, strict=True)], rel=1e-6)


def test_adjoint_tolerances_apply_to_the_backward_solve_only() -> None:
    """The forward rk4 grid ignores tolerances, so the backward dopri5 solve alone decides
    between them: ``adjoint_rtol``/``adjoint_atol`` replace the forward's (whatever those are)
    and otherwise are inherited. At 1e-10 the gradient is the closed form to 1e-8; at the
    forward's 1e-3 it is not."""
    t = torch.tensor([0.0, 1.0], dtype=F64)
    exact = [math.exp(v) for v in LAM]
    out = {}
    for name, kw in {"given": {"rtol": 1e-3, "atol": 1e-5, "adjoint_rtol": 1e-10,
                               "adjoint_atol": 1e-12},
                     "inherited": {"rtol": 1e-10, "atol": 1e-12},
                     "loose": {"rtol": 1e-3, "atol": 1e-5}}.items():
        f = _Decay()
        y0 = torch.tensor(Y0, dtype=F64, requires_grad=True)
        stats = SolveStats()
        ys = odeint_adjoint(f, y0, t, method="rk4", options={"step_size": 0.01},
                            adjoint_method="dopri5", adjoint_params=(), stats=stats, **kw)
        (g,) = torch.autograd.grad(ys[-1].sum(), (y0,))
        out[name] = (stats.nfe_backward, g.tolist())
    assert out["given"] == out["inherited"]
    assert out["given"][1] == pytest.approx(exact, rel=1e-8)
    assert out["loose"][1] != pytest.approx(exact, rel=1e-8)
    assert out["loose"][0] < out["given"][0]


def test_event_mode_of_odeint_adjoint_differentiates_the_event_time() -> None:
    """``y' = lam y`` from ``y0`` reaches 1/2 at ``t* = ln(1 / (2 y0)) / lam``:
    ``dt*/dy0 = -1 / (lam y0)``, ``dt*/dlam = -t* / lam``."""
    lam = torch.tensor(-0.8, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.5], dtype=F64, requires_grad=True)
    t_hit, sol = odeint_adjoint(lambda t, y: lam * y, y0, torch.tensor([0.0, 1.0], dtype=F64),
                                event_fn=lambda t, y: y[0] - 0.5, adjoint_params=(lam,),
                                rtol=1e-10, atol=1e-12)
    t_star = math.log(1 / 3.0) / -0.8
    assert float(t_hit.detach()) == pytest.approx(t_star, rel=1e-8)
    assert sol.shape == (2, 1) and float(sol[-1, 0].detach()) == pytest.approx(0.5, rel=1e-8)
    g_y0, g_lam = torch.autograd.grad(t_hit, (y0, lam))
    assert float(g_y0) == pytest.approx(1 / (0.8 * 1.5), rel=1e-6)
    assert float(g_lam) == pytest.approx(t_star / 0.8, rel=1e-6)


def test_unknown_adjoint_method_and_options_are_named_as_adjoint_ones() -> None:
    f = _Decay()
    y0 = torch.tensor(Y0, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(UnknownNameError, match=r"unknown adjoint method 'dopri6'") as info:
        odeint_adjoint(f, y0, t, adjoint_method="dopri6")
    assert "dopri5" in info.value.valid
    with pytest.raises(UnknownNameError, match=r"unknown adjoint method 'reversible_heun'") as info:
        odeint_adjoint(f, y0, t, adjoint_method="reversible_heun")
    # the methods the adjoint can use: those that run on the flat loops
    assert "dopri5" in info.value.valid and "kvaerno3" in info.value.valid
    assert "reversible_heun" not in info.value.valid
    with pytest.raises(UnknownNameError, match=r"unknown adjoint option of method 'rk4'") as info:
        odeint_adjoint(f, y0, t, adjoint_method="rk4", adjoint_options={"stepsize": 0.1})
    assert "step_size" in info.value.valid and "norm" in info.value.valid
    with pytest.raises(InvalidArgumentError, match=r"adjoint_rtol=-1e-06 must be >= 0"):
        odeint_adjoint(f, y0, t, adjoint_rtol=-1e-6)
    with pytest.raises(InvalidArgumentError, match=r"adjoint_atol=-1e-06 must be >= 0"):
        odeint_adjoint(f, y0, t, adjoint_atol=-1e-6)


def test_execution_options_reach_the_adjoint_solve() -> None:
    """``execution=`` is the forward's execution (here: refused per-sample steps)."""
    f = _Decay()
    with pytest.raises(InvalidArgumentError, match="per_sample=True is not supported"):
        odeint_adjoint(f, torch.tensor([Y0], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                       execution=ExecutionOptions(per_sample=True))


def test_reversible_heun_differentiates_the_given_adjoint_params_by_its_own_backward() -> None:
    """``method="reversible_heun"`` with a plain function and ``adjoint_params``: its exact
    reversible backward runs, one evaluation per step plus the start (step 0.02 over [0, 1]:
    50 steps, 51 evaluations each way); ``dL/dlam`` of ``y(1) = y0 exp(lam)`` to the
    method's accuracy."""
    lam = torch.tensor(LAM, dtype=F64, requires_grad=True)
    y0 = torch.tensor(Y0, dtype=F64)
    stats = SolveStats()
    ys = odeint_adjoint(lambda t, y: lam * y, y0, torch.tensor([0.0, 1.0], dtype=F64),
                        method="reversible_heun", options={"step_size": 0.02},
                        adjoint_params=(lam,), stats=stats)
    (g,) = torch.autograd.grad(ys[-1].sum(), (lam,))
    assert stats.nfe_forward == stats.nfe_backward == 51
    assert g.tolist() == pytest.approx([y * math.exp(v) for v, y in zip(LAM, Y0, strict=True)],
                                       rel=1e-3)


def test_an_adjoint_norm_function_gets_a_zero_time_in_the_states_dtype() -> None:
    """torchdiffeq's layout ``(t, y, adj_y, *adj_params)``; the time channel is not integrated
    here, so ``t`` is a 0-d float64 zero (the state's dtype)."""
    seen = []

    def norm(parts: tuple[torch.Tensor, ...]) -> torch.Tensor:
        seen.append([(tuple(p.shape), p.dtype) for p in parts] + [float(parts[0])])
        return torch.stack([p.abs().max() for p in parts[1:]]).max()

    f = _Decay()
    y0 = torch.tensor(Y0, dtype=F64, requires_grad=True)
    ys = odeint_adjoint(f, y0, torch.tensor([0.0, 1.0], dtype=F64), rtol=1e-10, atol=1e-12,
                        adjoint_options={"norm": norm})
    (g,) = torch.autograd.grad(ys[-1].sum(), (y0,))
    assert g.tolist() == pytest.approx([math.exp(v) for v in LAM], rel=1e-8)
    assert seen and all(s == [((), F64), ((2,), F64), ((2,), F64), ((2,), F64), ((), F64), 0.0]
                        for s in seen)


def test_a_grid_constructors_grid_sets_the_steps_of_both_solves() -> None:
    # y' = w y on the constructor's 4 steps: odeint's values; the backward steps on the same
    # grid (4 steps), so d y(1) / d w = e^w up to rk4's error at h = 1/4
    w = torch.tensor(-0.7, dtype=F64, requires_grad=True)
    grid_calls = []

    def grid(func, y, tt):  # type: ignore[no-untyped-def]
        grid_calls.append((func is field, y is y0, tt.tolist()))  # torchdiffeq's arguments
        return torch.linspace(float(tt[0]), float(tt[-1]), 5, dtype=F64)

    def field(tt: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return w * y

    y0, t = torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    stats = SolveStats()
    ys = odeint_adjoint(field, y0, t, method="rk4", stats=stats,
                        options={"grid_constructor": grid}, adjoint_params=(w,))
    ref = odeint(lambda tt, y: w * y, y0, t, method="rk4", options={"step_size": 0.25})
    assert torch.equal(ys.detach(), ref.detach()) and stats.accepted_steps == 4
    ys[-1].sum().backward()
    # the constructor is asked once per solve (as torchdiffeq asks it for the backward too)
    assert stats.backward_accepted_steps == 4 and grid_calls == [(True, True, [0.0, 1.0])] * 2
    assert float(w.grad) == pytest.approx(math.exp(-0.7), rel=1e-4)
