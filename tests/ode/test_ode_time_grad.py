"""Gradients in the output times (``_time_grad``) against the exact solution of ``y' = lam y``:
``y(t_i) = y0 exp(lam (t_i - t_0))``, so for ``L = sum_i w_i . y(t_i)``
``dL/dt_i = lam w_i . y(t_i)`` (``i >= 1``) and ``dL/dt_0 = -sum_{i>=1} lam w_i . y(t_i)``
(``y(t_0) = y0`` itself does not move)."""

from __future__ import annotations

import math

import pytest
import torch

from deeplimits.ode import odeint

F64 = torch.float64
LAM = -0.8


def _f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return LAM * y


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
@pytest.mark.parametrize("times", [[0.2, 0.7, 1.5, 2.0], [2.0, 1.1, 0.4]])
def test_time_gradients_are_those_of_the_exact_solution(method: str, times: list[float]) -> None:
    t = torch.tensor(times, dtype=F64, requires_grad=True)
    y0v = [1.0, -3.0]
    y0 = torch.tensor(y0v, dtype=F64)
    w = torch.tensor([[5.0, 1.0], [0.5, 2.0], [-1.0, 0.25], [3.0, -2.0]][: len(times)],
                     dtype=F64)
    opts = {"step_size": 0.01} if method == "rk4" else None
    ys = odeint(_f, y0, t, method=method, rtol=1e-10, atol=1e-12, options=opts)
    (gt,) = torch.autograd.grad((w * ys).sum(), t)
    exact = [[v * math.exp(LAM * (ti - times[0])) for v in y0v] for ti in times]
    want = [LAM * sum(wi * yi for wi, yi in zip(w[i].tolist(), exact[i], strict=True))
            for i in range(len(times))]
    want[0] = -sum(want[1:])
    assert gt.tolist() == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_no_time_gradient_is_built_when_t_does_not_ask_for_one() -> None:
    y0 = torch.tensor([1.0], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    ys = odeint(_f, y0, t, method="dopri5", rtol=1e-10, atol=1e-12)
    (g,) = torch.autograd.grad(ys[-1, 0] + 2.0 * ys[0, 0], y0)
    assert float(g) == pytest.approx(math.exp(LAM) + 2.0, rel=1e-8)
    assert t.grad is None
