"""Gradients with respect to the output times ``t`` for solves differentiated by backprop.

The solver steps on Python floats, so ``t`` is not in its graph; the derivatives of the exact
solution are attached instead (as :func:`odeint_adjoint` computes them):

- ``dy(t_i)/dt_i = f(t_i, y(t_i))`` for ``i >= 1`` (moving an output time moves its sample
  along the trajectory);
- ``dy(t_i)/dt_0 = -Phi(t_i, t_0) f(t_0, y_0)`` (a later start is the same flow from a
  shifted initial state), so ``dL/dt_0 = -a_0 . f(t_0, y_0)`` with ``a_0`` the gradient that
  reaches ``y_0`` through the solve (the output ``y(t_0) = y_0`` itself does not move).

They are the derivatives of the ODE's solution, equal to those of the discrete solve up to
the solver's error (what torchdiffeq's backprop gives is the discrete one; the difference is
of the order of the tolerance).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from deeplimits.ode._func import FlatFuncWrapper

__all__ = ["needs_time_grads", "with_time_grads"]


class _StartTime(torch.autograd.Function):
    """Identity on ``y0``; its backward turns the gradient reaching ``y0`` through the solve
    into ``dL/dt_0``."""

    @staticmethod
    def forward(ctx: Any, f: FlatFuncWrapper, t0: float, y0: Tensor, t: Tensor) -> Tensor:
        ctx.f, ctx.t0, ctx.t_shape = f, t0, t.shape
        ctx.save_for_backward(y0)
        return y0.view_as(y0)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Any, ...]:
        (y0,) = ctx.saved_tensors
        gt = None
        if ctx.needs_input_grad[3]:
            with torch.no_grad():
                gt = torch.zeros(ctx.t_shape, dtype=g.dtype, device=g.device)
                gt[0] = -(g * ctx.f(ctx.t0, y0)).sum()
        return None, None, g, gt


class _OutputTimes(torch.autograd.Function):
    """Identity on the outputs ``ys`` ``(T, ...)``; ``dL/dt_i = grad_i . f(t_i, y_i)``."""

    @staticmethod
    def forward(ctx: Any, f: FlatFuncWrapper, ts: list[float], ys: Tensor, t: Tensor) -> Tensor:
        ctx.f, ctx.ts, ctx.t_shape = f, ts, t.shape
        ctx.save_for_backward(ys)
        return ys.view_as(ys)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Any, ...]:
        (ys,) = ctx.saved_tensors
        gt = None
        if ctx.needs_input_grad[3]:
            with torch.no_grad():
                gt = torch.zeros(ctx.t_shape, dtype=g.dtype, device=g.device)
                for i in range(1, len(ctx.ts)):
                    gt[i] = (g[i] * ctx.f(ctx.ts[i], ys[i])).sum()
        return None, None, g, gt


def needs_time_grads(t: Tensor) -> bool:
    """Whether ``t`` asks for gradients in this call."""
    return torch.is_grad_enabled() and t.requires_grad


def with_time_grads(
    f: FlatFuncWrapper, ts: list[float], y0: Tensor, t: Tensor
) -> tuple[Tensor, Any]:
    """``(y0 for the solve, finish)``: solve from the returned ``y0``, then
    ``finish(outs) -> ys`` stacks the outputs with ``t``'s gradients attached.

    ``f`` evaluates ``func`` in the backward pass (counted as backward evaluations).
    """
    y0s = _StartTime.apply(f, ts[0], y0, t)

    def finish(outs: list[Tensor]) -> Tensor:
        ys = torch.stack([y0, *outs[1:]])  # y(t_0) is y0 itself, not the shifted start
        return _OutputTimes.apply(f, ts, ys, t)  # type: ignore[no-any-return]

    return y0s, finish
