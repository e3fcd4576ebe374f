"""method="scipy_solver": the options reach scipy's solve_ivp as given, and the step counts.

scipy itself is the oracle: the same call to ``solve_ivp`` must give the same numbers and the
same number of evaluations of the right-hand side.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from torch import nn

from deeplimits.ode import SolveStats, odeint, odeint_adjoint

F64 = torch.float64


def _decay(t: torch.Tensor | float, y: torch.Tensor) -> torch.Tensor:
    return -50.0 * y


def test_max_step_reaches_scipy_and_bounds_its_steps() -> None:
    # RK45 with max_step 0.01 on [0, 1]: at least 100 steps of 6 evaluations, exactly scipy's
    # count for the same call; without max_step RK45 needs far fewer on y' = -50 y.
    t = torch.tensor([0.0, 1.0], dtype=F64)
    y0 = torch.tensor([1.0], dtype=F64)
    ref = solve_ivp(lambda s, y: -50.0 * y, (0.0, 1.0), [1.0], method="RK45", t_eval=[0.0, 1.0],
                    rtol=1e-6, atol=1e-9, max_step=0.01)
    free = solve_ivp(lambda s, y: -50.0 * y, (0.0, 1.0), [1.0], method="RK45", t_eval=[0.0, 1.0],
                     rtol=1e-6, atol=1e-9)
    assert ref.nfev >= 600 > free.nfev
    stats = SolveStats()
    ys = odeint(_decay, y0, t, method="scipy_solver", rtol=1e-6, atol=1e-9,
                options={"solver": "RK45", "max_step": 0.01}, stats=stats)
    assert stats.nfe_forward == ref.nfev
    assert float(ys[-1]) == float(ref.y[0, -1])


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_accepted_steps_count_the_output_intervals_and_add_up(direction: float) -> None:
    # scipy does not report its internal steps: one "step" per output interval (documented),
    # added to what the stats object already holds.
    t = direction * torch.linspace(0.0, 1.0, 5, dtype=F64)
    stats = SolveStats()
    for expected in (4, 8):
        odeint(_decay, torch.tensor([1.0], dtype=F64), t, method="scipy_solver", rtol=1e-6,
               atol=1e-9, stats=stats)
        assert (stats.accepted_steps, stats.backward_accepted_steps) == (expected, 0)


class _Rate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(2.0, dtype=F64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -self.k * y


def test_adjoint_backward_counts_its_intervals_as_backward_steps() -> None:
    # the backward pass solves the 3 intervals of t = (0, 1/3, 2/3, 1) one after the other with
    # scipy: 3 backward "steps" (one per interval) after the forward's 3, and d y(1)/dk by the
    # closed form y(1) = exp(-k): -exp(-2).
    f = _Rate()
    stats = SolveStats()
    y0 = torch.tensor([1.0], dtype=F64)
    ys = odeint_adjoint(f, y0, torch.linspace(0.0, 1.0, 4, dtype=F64), method="scipy_solver",
                        rtol=1e-10, atol=1e-12, stats=stats)
    ys[-1].sum().backward()
    assert (stats.accepted_steps, stats.backward_accepted_steps) == (3, 3)
    assert f.k.grad is not None
    assert float(f.k.grad) == pytest.approx(-np.exp(-2.0), rel=1e-7)


def test_a_single_output_time_returns_the_initial_state_without_calling_scipy() -> None:
    # as every other method: no interval, no evaluation, no step (scipy_solver used to crash)
    stats = SolveStats()
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    ys = odeint(_decay, y0, torch.tensor([0.5], dtype=F64), method="scipy_solver", stats=stats)
    assert ys.shape == (1, 2) and torch.equal(ys[0], y0)
    assert (stats.nfe_forward, stats.accepted_steps) == (0, 0)
