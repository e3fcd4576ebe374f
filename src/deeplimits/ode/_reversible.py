"""Reversible Heun: an algebraically reversible ODE solver with an O(1)-memory backward pass.

Kidger, Foster, Li & Lyons (2021), "Efficient and Accurate Gradients for Neural SDEs" (ODE case;
as diffrax's ``ReversibleHeun``). State ``(y, yh, vf)`` with ``vf = f(t, yh)``::

    yh1 = 2 y0 - yh0 + h vf0,    vf1 = f(t1, yh1),    y1 = y0 + h/2 (vf0 + vf1)

and ``yh0 = y0`` at the start. The step inverts exactly (up to round-off)::

    yh0 = 2 y1 - yh1 - h vf1,    vf0 = f(t0, yh0),    y0 = y1 - h/2 (vf0 + vf1)

so the backward pass rebuilds each state from the next one and does one vjp per step, giving
the same gradients as backprop through the forward steps without storing them.
Second order, fixed step; steps hit every output time exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from deeplimits.ode._checks import check_finite
from deeplimits.ode._fixed_loop import build_grid
from deeplimits.ode._func import FlatFuncWrapper, FlatState
from deeplimits.ode._options import FixedStepOptions, ReversibleHeunOptions, SolveStats

__all__ = ["reversible_heun_solve"]


def _merge_grid(ts: list[float], opts: FixedStepOptions) -> tuple[list[float], list[int | None]]:
    """Step grid containing every output time; ``out_of[n]`` = output index of grid point n."""
    d = 1.0 if ts[-1] > ts[0] else -1.0
    grid = build_grid(ts, FixedStepOptions(step_size=opts.step_size, grid=opts.grid))
    tol = 1e-10 * max(1.0, *(abs(x) for x in ts))
    extra = [g for g in grid if all(abs(g - x) > tol for x in ts)]
    merged = sorted(set(ts) | set(extra), key=lambda x: d * x)
    index = {x: i for i, x in enumerate(ts)}
    return merged, [index.get(x) for x in merged]


def _forward_steps(
    f: Callable[[float, Tensor], Tensor], y0: Tensor, grid: list[float], out_of: list[int | None],
    stats: SolveStats,
) -> tuple[list[Tensor], tuple[Tensor, Tensor, Tensor]]:
    """Run the steps (differentiable when grad is enabled); outputs and the final (y, yh, vf)."""
    y, yh = y0, y0
    vf = f(grid[0], y0)
    outs = [y0]
    for n in range(len(grid) - 1):
        h = grid[n + 1] - grid[n]
        yh1 = torch.add(y * 2.0 - yh, vf, alpha=h)  # (N,)
        vf1 = f(grid[n + 1], yh1)
        y1 = torch.add(y, vf + vf1, alpha=0.5 * h)
        check_finite(y1, grid[n + 1], h)
        stats.accepted_steps += 1
        if out_of[n + 1] is not None:
            outs.append(y1)
        y, yh, vf = y1, yh1, vf1
    return outs, (y, yh, vf)


@dataclass
class _Setup:
    f_fwd: FlatFuncWrapper
    f_bwd: FlatFuncWrapper
    grid: list[float]
    out_of: list[int | None]
    stats: SolveStats


class _ReversibleHeunFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, setup: _Setup, y0: Tensor, *params: Tensor) -> Tensor:
        outs, (y, yh, vf) = _forward_steps(setup.f_fwd, y0, setup.grid, setup.out_of, setup.stats)
        ctx.setup = setup
        # O(1) in the number of steps: the final solver state and the parameters only.
        ctx.save_for_backward(y, yh, vf, *params)
        return torch.stack(outs)  # (T, N)

    @staticmethod
    def backward(ctx: Any, grad_ys: Tensor) -> tuple[Tensor | None, ...]:
        setup: _Setup = ctx.setup
        y, yh, vf, *params = ctx.saved_tensors
        diff_idx = [i for i, p in enumerate(params) if p.requires_grad]
        diff = [params[i] for i in diff_idx]
        gp = [torch.zeros_like(p) for p in diff]
        fb, grid, out_of = setup.f_bwd, setup.grid, setup.out_of

        def eval_with_graph(tt: float, yh_: Tensor) -> tuple[Tensor, Tensor]:
            with torch.enable_grad():
                req = yh_.detach().requires_grad_(True)
                return req, fb(tt, req)

        def vjp(req: Tensor, fz: Tensor, cot: Tensor) -> Tensor:
            gs = torch.autograd.grad(fz, (req, *diff), grad_outputs=cot, allow_unused=True)
            for acc, g in zip(gp, gs[1:], strict=True):
                if g is not None:
                    acc.add_(g)
            return gs[0] if gs[0] is not None else torch.zeros_like(req)

        a_y = torch.zeros_like(y)
        a_yh = torch.zeros_like(y)
        a_vf = torch.zeros_like(y)
        req, fz = eval_with_graph(grid[-1], yh)
        y, yh = y.detach(), yh.detach()
        for n in range(len(grid) - 2, -1, -1):  # undo the step grid[n] -> grid[n+1]
            k = out_of[n + 1]
            if k is not None:
                a_y = a_y + grad_ys[k]
            h = grid[n + 1] - grid[n]
            # Cotangent of vf_{n+1}: from the next step (a_vf) and from y_{n+1} = ... + h/2 vf.
            a_hat = a_yh + vjp(req, fz, torch.add(a_vf, a_y, alpha=0.5 * h))
            with torch.no_grad():
                yh_prev = torch.sub(2.0 * y - yh, vf, alpha=h)
            req, fz = eval_with_graph(grid[n], yh_prev)
            with torch.no_grad():
                vf_prev = fz.detach()
                y = torch.sub(y, vf_prev + vf, alpha=0.5 * h)
                yh, vf = yh_prev, vf_prev
                a_vf = torch.add(a_y * (0.5 * h), a_hat, alpha=h)
                a_y = torch.add(a_y, a_hat, alpha=2.0)
                a_yh = -a_hat
            setup.stats.backward_accepted_steps += 1
        a_y = a_y + grad_ys[0]
        # yh0 = y0 and vf0 = f(t0, y0): both depend on y0.
        grad_y0 = a_y + a_yh + vjp(req, fz, a_vf)
        grads: list[Tensor | None] = [None] * len(params)
        for i, g in zip(diff_idx, gp, strict=True):
            grads[i] = g
        return (None, grad_y0, *grads)


def reversible_heun_solve(
    func: Callable[..., Any],
    y0: Tensor | tuple[Tensor, ...],
    ts: list[float],
    state: FlatState,
    opts: ReversibleHeunOptions,
    stats: SolveStats,
    params: Sequence[Tensor] | None,
) -> Tensor:
    """Solve with reversible Heun; O(1)-memory backward when the parameters are known.

    Returns the states at ``ts`` flat, ``(T, N)``.

    ``params`` given (``odeint_adjoint``), or ``func`` an ``nn.Module`` (its parameters), and
    ``opts.reversible_backward``: the reversible backward. Otherwise plain backprop through the
    steps (a non-Module func may close over tensors the reversible backward could not see).
    """
    f = FlatFuncWrapper(func, state, stats)
    y0f = state.flatten(y0)
    if len(ts) == 1:
        return y0f.unsqueeze(0)
    grid, out_of = _merge_grid(ts, opts)
    if params is None and isinstance(func, nn.Module):
        params = tuple(func.parameters())
    if params is None or not opts.reversible_backward:
        outs, _ = _forward_steps(f, y0f, grid, out_of, stats)
        return torch.stack(outs)
    f_bwd = FlatFuncWrapper(func, state, stats, backward=True)
    f_bwd.checked = True
    setup = _Setup(f_fwd=f, f_bwd=f_bwd, grid=grid, out_of=out_of, stats=stats)
    return _ReversibleHeunFn.apply(setup, y0f, *params)  # type: ignore[no-any-return]
