"""``odeint_adjoint`` (``_adjoint``) on ``y' = lam * y`` (elementwise), against its exact
solution ``y_k(t) = y0_k exp(lam_k (t - t0))``. For ``L = sum_i w_i . y(t_i)``::

    dL/dy0_k  = sum_i w_ik exp(lam_k (t_i - t0))
    dL/dlam_k = sum_i w_ik y0_k (t_i - t0) exp(lam_k (t_i - t0))
    dL/dt_i   = w_i . lam y(t_i)   (i >= 1),   dL/dt_0 = -sum_{i>=1} dL/dt_i

(the output ``y(t_0) = y0`` itself does not move with ``t_0``).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deeplimits.errors import InvalidArgumentError, UnknownNameError
from deeplimits.ode import AdjointOptions, SolveStats, odeint_adjoint

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
    if case == "fixed_backward":
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
