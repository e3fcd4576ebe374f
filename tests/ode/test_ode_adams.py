"""The Adams multistep methods (``_adams.py`` and the ``Adams`` solver): weights against the
textbook formulas, exactness on polynomials, convergence orders against a closed form,
gradients against central differences, and the errors. The differential tests against
torchdiffeq are in ``test_ode_torchdiffeq_parity.py``."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
import torch
from torch import nn

from deeplimits.errors import InvalidArgumentError, InvalidTypeError, UnknownNameError
from deeplimits.ode import (
    METHODS,
    MULTISTEP_METHODS,
    Adams,
    SolveStats,
    get_solver,
    odeint,
    odeint_adjoint,
    odeint_checkpoint,
)
from deeplimits.ode._adams import adams_bashforth, adams_moulton

F64 = torch.float64
ADAMS = ["explicit_adams", "implicit_adams", "fixed_adams"]


def test_adams_weights_are_the_textbook_formulas() -> None:
    # Hairer, Nørsett & Wanner I, Table III.1.1 and III.1.2.
    assert adams_bashforth(2) == (Fraction(3, 2), Fraction(-1, 2))
    assert adams_bashforth(4) == tuple(Fraction(b, 24) for b in (55, -59, 37, -9))
    assert adams_moulton(2) == (Fraction(1, 2), Fraction(1, 2))
    assert adams_moulton(4) == tuple(Fraction(m, 24) for m in (9, 19, -5, 1))
    assert adams_moulton(5) == tuple(Fraction(m, 720) for m in (251, 646, -264, 106, -19))
    for k in range(1, 13):  # consistency: each formula integrates f = 1 exactly
        assert sum(adams_bashforth(k)) == 1 and sum(adams_moulton(k)) == 1


@pytest.mark.parametrize("method", ADAMS)
def test_adams_methods_are_exact_when_the_derivative_is_a_quadratic_in_t(method: str) -> None:
    # rk4 (Simpson's 3/8 rule) and every Adams formula with >= 3 values integrate a quadratic
    # exactly: y = t^3 - t^2 + t + 1 at every output, interior ones by the cubic Hermite.
    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (3 * t**2 - 2 * t + 1) * torch.ones_like(y)

    t = torch.tensor([0.0, 0.35, 1.0, 1.6, 2.0], dtype=F64)
    ys = odeint(f, torch.ones(3, dtype=F64), t, method=method, options={"step_size": 0.1})
    exact = (t**3 - t**2 + t + 1)[:, None].expand(-1, 3)
    assert float((ys - exact).abs().max()) <= 1e-13


def _logistic(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return y * (1 - y)


@pytest.mark.parametrize(
    ("method", "max_order", "ns", "order"),
    [("explicit_adams", 12, [128, 256, 512], 4), ("implicit_adams", 12, [64, 128, 256], 5),
     ("explicit_adams", 4, [16, 32, 64], 3), ("implicit_adams", 4, [16, 32, 64], 4)],
    ids=["explicit-default", "implicit-default", "explicit-max4", "implicit-max4"],
)
def test_adams_methods_converge_with_the_order_of_their_start_up(
    method: str, max_order: int, ns: list[int], order: int
) -> None:
    # y' = y (1 - y), y(0) = 0.2: y(2) = 1 / (1 + 4 e^-2). The global order is set by the
    # start-up: one 3-step Adams-Bashforth step (explicit, local error h^4) and the corrected
    # 3-value steps (implicit, h^5); with max_order=4 every step uses 3 values.
    t = torch.tensor([0.0, 2.0], dtype=F64)
    exact = 1 / (1 + 4 * math.exp(-2.0))
    errs = []
    for n in ns:
        ys = odeint(_logistic, torch.tensor([0.2], dtype=F64), t, method=method, rtol=1e-15,
                    atol=1e-15, options={"step_size": 2.0 / n, "max_order": max_order,
                                         "max_iters": 20})
        errs.append(abs(float(ys[-1, 0]) - exact))
    slopes = [math.log2(a / b) for a, b in itertools.pairwise(errs)]
    assert all(abs(s - order) < 0.1 for s in slopes), slopes
    bound = get_solver(method).bind(
        get_solver(method).options_type(max_order=max_order), 1e-7, 1e-9, SolveStats()
    )
    assert bound.order == order


def test_explicit_adams_at_its_default_max_order_is_unstable_on_an_oscillator() -> None:
    # A caveat inherited from torchdiffeq's default (max_order=12): the 11-step
    # Adams-Bashforth formula has parasitic roots outside the unit circle at h|lambda| = 0.05
    # on this pendulum, so errors grow by orders of magnitude; max_order=5 is accurate.
    def pendulum(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([y[1], -torch.sin(y[0]) + 0.1 * torch.cos(t)])

    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t = torch.tensor([0.0, 3.0], dtype=F64)
    ref = odeint(pendulum, y0, t, method="dopri8", rtol=1e-13, atol=1e-13)[-1]
    err = {}
    for max_order in (12, 5):
        ys = odeint(pendulum, y0, t, method="explicit_adams",
                    options={"step_size": 0.05, "max_order": max_order})
        err[max_order] = float((ys[-1] - ref).abs().max())
    assert err[12] > 1.0
    assert err[5] < 1e-4


class _Damped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor([0.7, -0.3], dtype=F64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([y[1], -self.a[0] * torch.sin(y[0]) + self.a[1] * y[1]])


_TIGHT = {"rtol": 1e-13, "atol": 1e-14}  # corrector iterated to round-off: a smooth map


@pytest.mark.parametrize(
    ("method", "max_order"), [("explicit_adams", 5), ("implicit_adams", 12), ("fixed_adams", 8)]
)
def test_backprop_gradients_through_adams_steps_match_central_differences(
    method: str, max_order: int
) -> None:
    # (explicit_adams at max_order=12 amplifies round-off too much for central differences:
    # see the instability test above.)
    f = _Damped()
    t = torch.tensor([0.0, 0.7, 1.5], dtype=F64)
    opts = {"step_size": 0.05, "max_iters": 30, "max_order": max_order}

    def loss(y0: torch.Tensor) -> torch.Tensor:
        ys = odeint(f, y0, t, method=method, options=opts, **_TIGHT)
        return ys[1:].pow(2).sum()

    y0 = torch.tensor([1.0, 0.2], dtype=F64, requires_grad=True)
    g_y0, g_a = torch.autograd.grad(loss(y0), (y0, f.a))
    eps = 1e-6
    with torch.no_grad():
        for i in range(2):
            e = torch.zeros(2, dtype=F64)
            e[i] = eps
            fd = (loss(y0 + e) - loss(y0 - e)) / (2 * eps)
            assert abs(float(fd - g_y0[i])) <= 1e-7 * max(1.0, abs(float(fd)))
            a0 = f.a.detach().clone()
            f.a.copy_(a0 + e)
            lp = loss(y0)
            f.a.copy_(a0 - e)
            lm = loss(y0)
            f.a.copy_(a0)
            fd = (lp - lm) / (2 * eps)
            assert abs(float(fd - g_a[i])) <= 1e-7 * max(1.0, abs(float(fd)))


@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams"])
def test_adjoint_and_backprop_gradients_with_adams_approach_the_exact_gradient(
    method: str,
) -> None:
    # The exact gradient: backprop through dopri8 at rtol 1e-13. The adjoint (the adjoint ODE
    # solved backwards by the same method, history restarted at each output time) and backprop
    # approach it at the methods' order: explicit (4th order) gains ~16x per halving of h.
    f = _Damped()
    t = torch.tensor([0.0, 0.7, 1.5], dtype=F64)
    y0 = torch.tensor([1.0, 0.2], dtype=F64, requires_grad=True)

    def grad(ys: torch.Tensor) -> torch.Tensor:
        return torch.cat(torch.autograd.grad(ys[1:].pow(2).sum(), (y0, f.a)))

    exact = grad(odeint(f, y0, t, method="dopri8", rtol=1e-13, atol=1e-14))
    err: dict[tuple[str, float], float] = {}
    for h in (0.01, 0.005):
        opts = {"step_size": h, "max_order": 5, "max_iters": 20}
        for name, solve in (("backprop", odeint), ("adjoint", odeint_adjoint)):
            g = grad(solve(f, y0, t, method=method, options=opts, **_TIGHT))
            err[name, h] = float((g - exact).abs().max())
    for name in ("backprop", "adjoint"):
        assert err[name, 0.01] <= 5e-8
        if method == "explicit_adams":
            assert err[name, 0.01] / err[name, 0.005] > 10
    # adams as the adjoint method of a dopri5 forward solve
    ys = odeint_adjoint(f, y0, t, method="dopri5", adjoint_method=method,
                        adjoint_options={"step_size": 0.01, "max_order": 5}, **_TIGHT)
    assert float((grad(ys) - exact).abs().max()) <= 5e-8


def test_a_corrector_that_does_not_converge_warns_and_is_counted() -> None:
    stats = SolveStats()
    t = torch.linspace(0.0, 1.0, 3, dtype=F64)
    with pytest.warns(UserWarning, match="corrector did not converge in max_iters=1") as rec:
        odeint(_logistic, torch.tensor([0.2], dtype=F64), t, method="implicit_adams",
               rtol=1e-14, atol=1e-15, options={"step_size": 0.1, "max_iters": 1}, stats=stats)
    assert {w.filename for w in rec} == {__file__}  # the user's line, not the package's
    # steps 0 and 1 are rk4 start-up steps; each of the 8 corrected steps fails at 1 iteration
    assert stats.accepted_steps == 10 and stats.corrector_failures == 8
    stats = SolveStats()
    odeint(_logistic, torch.tensor([0.2], dtype=F64), t, method="implicit_adams",
           options={"step_size": 0.1}, stats=stats)
    assert stats.corrector_failures == 0


def test_adams_evaluations_per_step_are_one_after_the_rk4_start_up() -> None:
    stats = SolveStats()
    t = torch.tensor([0.0, 1.0], dtype=F64)
    odeint(_logistic, torch.tensor([0.2], dtype=F64), t, method="explicit_adams",
           options={"step_size": 0.1}, stats=stats)
    # f0 of each of the 10 steps, and 3 more stages in each of the 2 rk4 start-up steps
    assert stats.nfe_forward == 10 + 2 * 3


def test_adams_names_and_options_are_checked() -> None:
    assert set(MULTISTEP_METHODS) == set(ADAMS) and set(ADAMS) <= set(METHODS)
    y0 = torch.tensor([0.2], dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(UnknownNameError, match=r"explicit_adams.*implicit_adams.*fixed_adams"):
        odeint(_logistic, y0, t, method="adams")
    for bad in (3, 13, 4.0, True):
        with pytest.raises(InvalidArgumentError, match=rf"max_order={bad!r} must be an int in"):
            odeint(_logistic, y0, t, method="implicit_adams", options={"max_order": bad})
    with pytest.raises(InvalidArgumentError, match="max_iters=0 must be a positive int"):
        odeint(_logistic, y0, t, method="implicit_adams", options={"max_iters": 0})
    with pytest.raises(InvalidTypeError, match="Adams implicit=1 must be True or False"):
        Adams(implicit=1, method_name="mine")  # type: ignore[arg-type]
    mine = Adams(implicit=True, method_name="my_adams")  # an object works as a method
    ys = odeint(_logistic, y0, t, method=mine, options={"step_size": 0.1})
    assert torch.equal(ys, odeint(_logistic, y0, t, method="implicit_adams",
                                  options={"step_size": 0.1}))
    with pytest.raises(UnknownNameError, match="option of method 'rk4' 'max_order'"):
        odeint(_logistic, y0, t, method="rk4", options={"max_order": 5})


def test_adams_is_refused_where_its_history_cannot_be_carried() -> None:
    f = _Damped()
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(InvalidArgumentError, match="odeint_checkpoint cannot replay"):
        odeint_checkpoint(f, y0, t, method="implicit_adams", options={"step_size": 0.1})
    with pytest.raises(InvalidArgumentError, match="compile=True is not available for"):
        odeint(f, y0, t, method="explicit_adams", options={"step_size": 0.1, "compile": True})
    with pytest.raises(UnknownNameError, match="'device_loop'"):
        odeint(f, y0, t, method="explicit_adams", options={"device_loop": True})
    with pytest.raises(InvalidArgumentError, match=r"needs carry=solver\.new_carry"):
        get_solver("explicit_adams").step(f, 0.0, y0, 0.1)


# ---------------------------------------------------------------------------------------------
# perturb: the stage times each evaluation sees, on fields where they show


def _step_at_quarter(t: float | torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # y' = 1 before t = 0.25, 2 from it on (right-continuous at the first grid point)
    return torch.where(torch.as_tensor(t) < 0.25, 1.0, 2.0) * torch.ones_like(y)


@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams"])
def test_perturbed_start_up_step_sees_its_end_from_the_left(method: str) -> None:
    # the rk4 start-up step [0, 0.25] evaluates its last stage at 0.25 - 1 ulp: y' = 1 all the
    # way, y(0.25) = 0.25; unperturbed, that stage sees 2 (weight 1/8): 0.28125
    t = torch.tensor([0.0, 0.25], dtype=F64)
    for perturb, want in ((True, 0.25), (False, 0.25 + 0.25 / 8)):
        y = odeint(_step_at_quarter, torch.zeros(1, dtype=F64), t, method=method,
                   options={"step_size": 0.25, "perturb": perturb})
        assert float(y[-1]) == pytest.approx(want, abs=1e-15), perturb


@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams"])
def test_perturbed_adams_steps_evaluate_at_their_start_and_end(method: str) -> None:
    # y' = t: every Adams formula of order >= 2 integrates it exactly, as does rk4, so with
    # each evaluation at its step's start (+1 ulp) or end (-1 ulp), y(2) = 2 to round-off
    y = odeint(lambda t, y: torch.as_tensor(t, dtype=y.dtype) * torch.ones_like(y),
               torch.zeros(1, dtype=F64), torch.tensor([0.0, 2.0], dtype=F64), method=method,
               rtol=1e-12, atol=1e-14, options={"step_size": 0.125, "perturb": True})
    assert float(y[-1]) == pytest.approx(2.0, abs=1e-13)


def test_linear_interpolation_gives_every_output_time_inside_one_step() -> None:
    # y' = 1 from 0: y = t exactly, and linear interpolation between grid points is exact
    t = torch.tensor([0.0, 0.1, 0.2, 0.3, 1.0], dtype=F64)
    y = odeint(lambda t, y: torch.ones_like(y), torch.zeros(1, dtype=F64), t,
               method="explicit_adams", options={"step_size": 0.5, "interp": "linear"})
    assert y.flatten().tolist() == pytest.approx(t.tolist(), abs=1e-15)
