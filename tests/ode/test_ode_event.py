"""odeint_event against closed forms: event times and their gradients (implicit function
theorem), restarts on the event surface, reverse time, the adjoint interface, torchdiffeq."""

from __future__ import annotations

import math

import pytest
import torch
import torchdiffeq

from deeplimits.errors import InvalidArgumentError, SolverError
from deeplimits.ode import odeint_adjoint, odeint_event

F64 = torch.float64


def _fall(g: torch.Tensor):  # type: ignore[no-untyped-def]
    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # y = (height, velocity)
        return torch.stack([y[1], -g * torch.ones_like(y[1])])

    return f


def _ground(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return y[0]


@pytest.mark.parametrize("interface", ["odeint", "odeint_adjoint"])
def test_free_fall_time_and_its_gradients_are_the_closed_form(interface: str) -> None:
    h = torch.tensor(10.0, dtype=F64, requires_grad=True)
    g = torch.tensor(9.81, dtype=F64, requires_grad=True)
    y0 = torch.stack([h, torch.zeros((), dtype=F64)])
    kw = {} if interface == "odeint" else {"odeint_interface": odeint_adjoint,
                                           "adjoint_params": (g,)}
    t_hit, sol = odeint_event(_fall(g), y0, 0.0, event_fn=_ground, rtol=1e-10, atol=1e-12,
                              **kw)
    exact = math.sqrt(2 * 10.0 / 9.81)  # T = sqrt(2h/g)
    assert float(t_hit.detach()) == pytest.approx(exact, rel=1e-9)
    assert sol.shape == (2, 2) and abs(float(sol[-1, 0].detach())) <= 1e-8
    dh, dg = torch.autograd.grad(t_hit, (h, g))
    assert float(dh) == pytest.approx(1 / math.sqrt(2 * 10.0 * 9.81), rel=1e-5)  # dT/dh
    assert float(dg) == pytest.approx(-0.5 * math.sqrt(2 * 10.0) / 9.81**1.5, rel=1e-5)


def test_decay_to_a_threshold_differentiates_the_event_functions_own_parameter() -> None:
    k = torch.tensor(0.7, dtype=F64, requires_grad=True)
    c = torch.tensor(0.2, dtype=F64, requires_grad=True)  # only event_fn sees c
    t_hit, _ = odeint_event(lambda t, y: -k * y, torch.ones(1, dtype=F64), 0.0,
                            event_fn=lambda t, y: y[0] - c, rtol=1e-10, atol=1e-12)
    # y = exp(-k t) = c  =>  T = -ln(c)/k, dT/dc = -1/(c k), dT/dk = ln(c)/k^2
    assert float(t_hit.detach()) == pytest.approx(-math.log(0.2) / 0.7, rel=1e-9)
    dc, dk = torch.autograd.grad(t_hit, (c, k))
    assert float(dc) == pytest.approx(-1 / (0.2 * 0.7), rel=1e-5)
    assert float(dk) == pytest.approx(math.log(0.2) / 0.7**2, rel=1e-5)


def test_a_start_on_the_event_surface_finds_the_next_crossing() -> None:
    # a ball leaving the ground upwards at v = 5: next contact at 2 v / g, not at t0
    g = torch.tensor(9.81, dtype=F64)
    y0 = torch.tensor([0.0, 5.0], dtype=F64)
    t_hit, _ = odeint_event(_fall(g), y0, 1.0, event_fn=_ground, rtol=1e-10, atol=1e-12)
    assert float(t_hit) == pytest.approx(1.0 + 2 * 5.0 / 9.81, rel=1e-9)


def test_reverse_time_finds_the_crossing_before_t0() -> None:
    t_hit, sol = odeint_event(lambda t, y: torch.ones_like(y), torch.zeros(1, dtype=F64), 0.0,
                              event_fn=lambda t, y: y[0] + 0.75, reverse_time=True)
    assert float(t_hit) == pytest.approx(-0.75, abs=1e-12)
    assert float(sol[-1, 0]) == pytest.approx(-0.75, abs=1e-9)


def test_the_event_time_matches_torchdiffeq() -> None:
    g = torch.tensor(9.81, dtype=F64)
    y0 = torch.tensor([3.0, 1.0], dtype=F64)
    ours, _ = odeint_event(_fall(g), y0, torch.tensor(0.0, dtype=F64), event_fn=_ground,
                           rtol=1e-9, atol=1e-11)
    theirs, _ = torchdiffeq.odeint_event(_fall(g), y0, torch.tensor(0.0, dtype=F64),
                                         event_fn=_ground, rtol=1e-9, atol=1e-11)
    assert float(ours) == pytest.approx(float(theirs), abs=1e-7)


def test_event_errors_name_the_problem() -> None:
    y0 = torch.ones(2, dtype=F64)
    with pytest.raises(InvalidArgumentError, match="one value"):
        odeint_event(lambda t, y: -y, y0, 0.0, event_fn=lambda t, y: y)
    with pytest.raises(InvalidArgumentError, match="explicit adaptive method"):
        odeint_event(lambda t, y: -y, y0, 0.0, event_fn=lambda t, y: y[0], method="rk4")
    with pytest.raises(SolverError, match="did not cross zero"):
        odeint_event(lambda t, y: torch.zeros_like(y), y0, 0.0, event_fn=lambda t, y: y[0],
                     options={"max_num_steps": 50})


@pytest.mark.parametrize("solve", ["odeint", "odeint_adjoint"])
def test_event_mode_of_odeint_returns_the_event_and_the_solution(solve: str) -> None:
    from deeplimits.ode import odeint

    h = torch.tensor(10.0, dtype=F64, requires_grad=True)
    g = torch.tensor(9.81, dtype=F64)
    y0 = torch.stack([h, torch.zeros((), dtype=F64)])
    t = torch.tensor([0.0, 1.0], dtype=F64)
    fn = odeint if solve == "odeint" else odeint_adjoint
    kw = {} if solve == "odeint" else {"adjoint_params": ()}
    t_hit, sol = fn(_fall(g), y0, t, event_fn=_ground, rtol=1e-10, atol=1e-12, **kw)
    assert float(t_hit.detach()) == pytest.approx(math.sqrt(2 * 10.0 / 9.81), rel=1e-9)
    assert sol.shape == (2, 2)
    (dh,) = torch.autograd.grad(t_hit, (h,))
    assert float(dh) == pytest.approx(1 / math.sqrt(2 * 10.0 * 9.81), rel=1e-5)
    with pytest.raises(InvalidArgumentError, match="two times"):
        fn(_fall(g), y0, torch.tensor([0.0, 1.0, 2.0], dtype=F64), event_fn=_ground, **kw)
