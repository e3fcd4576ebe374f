"""Reversible Heun (``_reversible``) on ``y' = lam y``, against its steps written out by hand.

With ``z = h lam`` and ``yh0 = y0``, the documented step ``yh1 = 2 y0 - yh0 + h f(yh0)``,
``y1 = y0 + h/2 (f(yh0) + f(yh1))`` gives::

    yh1 = (1 + z) y0,              y1 = (1 + z + z^2/2) y0          (Heun's method)
    yh2 = (1 + 2z + 2z^2) y0,      y2 = (1 + 2z + 2z^2 + z^3) y0

so ``d y2 / d lam = (2h + 4h^2 lam + 3h^3 lam^2) y0`` and ``d y2 / d y0 = 1 + 2z + 2z^2 + z^3``.
The O(1)-memory backward (which rebuilds the states by the algebraic inverse) must give these.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from deeplimits.errors import NonFiniteStateError
from deeplimits.ode import FixedStepOptions, SolveStats, odeint
from deeplimits.ode._reversible import _merge_grid

F64 = torch.float64


class _Linear(nn.Module):
    def __init__(self, lam: float) -> None:
        super().__init__()
        self.lam = nn.Parameter(torch.tensor(lam, dtype=F64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.lam * y


def _p1(z: float) -> float:
    return 1 + z + z**2 / 2


def _p2(z: float) -> float:
    return 1 + 2 * z + 2 * z**2 + z**3


@pytest.mark.parametrize("h", [0.3, -0.3])
@pytest.mark.parametrize("reversible", [True, False])
def test_two_steps_and_their_gradients_are_the_closed_forms(h: float, reversible: bool) -> None:
    lam, y0v = -0.7, 1.5
    z = h * lam
    f = _Linear(lam)
    y0 = torch.tensor([y0v, -2 * y0v], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, h, 2 * h], dtype=F64)
    stats = SolveStats()
    ys = odeint(f, y0, t, method="reversible_heun",
                options={"step_size": abs(h), "reversible_backward": reversible}, stats=stats)
    want = torch.tensor([[1.0], [_p1(z)], [_p2(z)]], dtype=F64) * y0.detach()
    torch.testing.assert_close(ys.detach(), want, rtol=1e-14, atol=0)
    # a loss on both later outputs: w1 y1[0] + w2 y2[0] + w3 y2[1]
    w1, w2, w3 = 0.5, 2.0, -1.0
    loss = w1 * ys[1, 0] + w2 * ys[2, 0] + w3 * ys[2, 1]
    g_lam, g_y0 = torch.autograd.grad(loss, (f.lam, y0))
    d1 = (h + h**2 * lam)  # d p1(h lam) / d lam
    d2 = 2 * h + 4 * h**2 * lam + 3 * h**3 * lam**2
    want_lam = w1 * d1 * y0v + w2 * d2 * y0v + w3 * d2 * (-2 * y0v)
    assert float(g_lam) == pytest.approx(want_lam, rel=1e-13)
    torch.testing.assert_close(
        g_y0, torch.tensor([w1 * _p1(z) + w2 * _p2(z), w3 * _p2(z)], dtype=F64),
        rtol=1e-13, atol=0)
    assert stats.accepted_steps == 2
    assert stats.backward_accepted_steps == (2 if reversible else 0)


def test_first_output_gets_its_own_gradient_and_a_parameter_that_does_not_matter_gets_zero(
) -> None:
    class WithSpare(_Linear):
        def __init__(self) -> None:
            super().__init__(0.4)
            self.spare = nn.Parameter(torch.tensor(3.0, dtype=F64))

    f = WithSpare()
    y0 = torch.tensor([2.0], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.5], dtype=F64)
    ys = odeint(f, y0, t, method="reversible_heun", options={"step_size": 0.5})
    z = 0.2
    g_y0, g_lam, g_spare = torch.autograd.grad(3.0 * ys[0, 0] + ys[1, 0], (y0, f.lam, f.spare),
                                              allow_unused=True)
    assert float(g_y0) == pytest.approx(3.0 + _p1(z), rel=1e-14)
    assert float(g_lam) == pytest.approx(2.0 * (0.5 + 0.25 * 0.4), rel=1e-14)
    assert g_spare is not None and float(g_spare) == 0.0


def test_output_times_off_the_step_grid_are_stepped_to() -> None:
    grid, out_of = _merge_grid([0.0, 0.25, 1.0], FixedStepOptions(step_size=0.5))
    assert grid == [0.0, 0.25, 0.5, 1.0] and out_of == [0, 1, None, 2]
    grid, out_of = _merge_grid([1.0, 0.75, 0.0], FixedStepOptions(step_size=0.5))
    assert grid == [1.0, 0.75, 0.5, 0.0] and out_of == [0, 1, None, 2]
    # a grid point within 1e-10 * max(1, |t|) of an output time is that output time
    grid, out_of = _merge_grid([0.0, 0.5 + 1e-12, 1.0], FixedStepOptions(step_size=0.5))
    assert grid == [0.0, 0.5 + 1e-12, 1.0] and out_of == [0, 1, 2]
    grid, _ = _merge_grid([0.0, 5e4 + 1e-7, 1e5], FixedStepOptions(step_size=5e4))
    assert grid == [0.0, 5e4 + 1e-7, 1e5]
    grid, _ = _merge_grid([0.0, 0.5 + 1e-9, 1.0], FixedStepOptions(step_size=0.5))
    assert grid == [0.0, 0.5, 0.5 + 1e-9, 1.0]
    # below |t| = 1 the tolerance is 1e-10 itself: 7e-11 apart merge, 1.5e-10 apart do not
    grid, _ = _merge_grid([0.0, 0.25 + 7e-11, 0.5], FixedStepOptions(step_size=0.25))
    assert grid == [0.0, 0.25 + 7e-11, 0.5]
    grid, _ = _merge_grid([0.0, 0.25 + 1.5e-10, 0.5], FixedStepOptions(step_size=0.25))
    assert grid == [0.0, 0.25, 0.25 + 1.5e-10, 0.5]
    # an explicit grid
    grid, out_of = _merge_grid([0.0, 1.0], FixedStepOptions(grid=[0.0, 0.3, 1.0]))
    assert grid == [0.0, 0.3, 1.0] and out_of == [0, None, 1]


def test_a_single_time_returns_the_initial_state() -> None:
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    ys = odeint(_Linear(1.0), y0, torch.tensor([0.5], dtype=F64), method="reversible_heun",
                options={"step_size": 0.1})
    assert ys.shape == (1, 2) and torch.equal(ys[0], y0)


def test_a_field_that_does_not_depend_on_y_gets_its_gradients() -> None:
    """y' = theta: y(T) = y0 + theta T exactly (every step is exact), so dL/dtheta = T and
    dL/dy0 = 1, although f's vector-Jacobian product in y is None (not used)."""
    class Drift(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.theta = nn.Parameter(torch.tensor(0.7, dtype=F64))

        def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.theta.expand_as(y)

    f = Drift()
    y0 = torch.tensor([1.0], dtype=F64, requires_grad=True)
    ys = odeint(f, y0, torch.tensor([0.0, 1.5], dtype=F64), method="reversible_heun",
                options={"step_size": 0.25})
    assert float(ys[-1, 0].detach()) == pytest.approx(1.0 + 0.7 * 1.5, rel=1e-14)
    g_y0, g_theta = torch.autograd.grad(ys[-1, 0], (y0, f.theta))
    assert float(g_y0) == pytest.approx(1.0, rel=1e-14)
    assert float(g_theta) == pytest.approx(1.5, rel=1e-14)


def test_a_blow_up_names_the_step() -> None:
    """f is inf from t = 0.35 on: the state after the step ending at 0.4 is the first bad one
    (its vf1 = f(0.4, yh1))."""
    def f(t, y):  # type: ignore[no-untyped-def]
        return torch.full_like(y, math.inf) if float(t) >= 0.35 else torch.ones_like(y)

    with pytest.raises(NonFiniteStateError) as info:
        odeint(f, torch.zeros(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
               method="reversible_heun", options={"step_size": 0.1})
    m = re.search(r"at t=(\S+) \(step dt=([^)]+)\)", str(info.value))
    assert m is not None
    assert float(m.group(1)) == pytest.approx(0.4, rel=1e-12)
    assert float(m.group(2)) == pytest.approx(0.1, rel=1e-12)
