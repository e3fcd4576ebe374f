"""``odeint_adjoint``: gradients from the adjoint ODE solved backwards in time.

Chen, Rubanova, Bettencourt & Duvenaud (2018), "Neural ordinary differential equations";
structure as torchdiffeq's ``OdeintAdjointMethod``. Seminorm: Kidger, Chen & Lyons (2021),
"'Hey, that's not an ODE': faster ODE adjoints via seminorms".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from deeplimits.errors import InvalidArgumentError, InvalidTypeError, UnknownNameError
from deeplimits.ode._checks import (
    FlatFuncWrapper,
    FlatState,
    check_t,
    check_tolerances,
)
from deeplimits.ode._odeint import (
    ADAPTIVE_METHODS,
    Options,
    check_method,
    options_for,
    solve_flat,
)
from deeplimits.ode._options import (
    AdaptiveOptions,
    AdjointOptions,
    FixedStepOptions,
    SolveStats,
)

__all__ = ["odeint_adjoint"]


@dataclass
class _Setup:
    """Everything the autograd.Function needs that is not a tensor input."""

    f_fwd: FlatFuncWrapper
    f_bwd: FlatFuncWrapper
    ts: list[float]
    method: str
    opts: FixedStepOptions | AdaptiveOptions
    rtol: float
    atol: float
    adj_method: str
    adj_opts: FixedStepOptions | AdaptiveOptions
    adj_rtol: float
    adj_atol: float
    seminorm: bool
    stats: SolveStats


class _AdjointFn(torch.autograd.Function):
    """``(y0_flat, t, *params) -> ys (T, N)``; backward solves the adjoint ODE."""

    @staticmethod
    def forward(ctx: Any, setup: _Setup, y0: Tensor, t: Tensor, *params: Tensor) -> Tensor:
        # autograd.Function.forward runs without grad: nothing per step is saved.
        outs = solve_flat(
            setup.f_fwd, y0, setup.ts, setup.method, setup.opts, setup.rtol, setup.atol,
            setup.stats,
        )
        ys = torch.stack(outs)  # (T, N)
        ctx.setup = setup
        ctx.save_for_backward(ys, *params)
        return ys

    @staticmethod
    def backward(ctx: Any, grad_ys: Tensor) -> tuple[Tensor | None, ...]:
        setup: _Setup = ctx.setup
        ys, *params = ctx.saved_tensors
        params = [p for p in params]
        grad_params_idx = [i for i, p in enumerate(params) if p.requires_grad]
        diff_params = [params[i] for i in grad_params_idx]
        n = ys.shape[1]
        sizes = [p.numel() for p in diff_params]
        fb = setup.f_bwd
        ts = setup.ts

        def aug_dynamics(tt: float, s: Tensor) -> Tensor:
            # s = [z (N), a (N), a_params (P)]; returns [f, -a df/dz, -a df/dtheta].
            z, a = s[:n], s[n : 2 * n]
            with torch.enable_grad():
                z_ = z.detach().requires_grad_(True)
                fz = fb(tt, z_)  # (N,)
                grads = torch.autograd.grad(
                    fz, (z_, *diff_params), grad_outputs=-a, allow_unused=True
                )
            parts = [fz.detach(), grads[0] if grads[0] is not None else torch.zeros_like(z)]
            for g, p in zip(grads[1:], diff_params, strict=True):
                parts.append(torch.zeros(p.numel(), dtype=s.dtype, device=s.device)
                             if g is None else g.reshape(-1))
            return torch.cat(parts)

        norm_dims = 2 * n if setup.seminorm else None
        a = grad_ys[-1]  # (N,)
        a_p = torch.zeros(sum(sizes), dtype=ys.dtype, device=ys.device)  # (P,)
        t_grad = ctx.needs_input_grad[2]
        time_vjps = torch.zeros(len(ts), dtype=ys.dtype, device=ys.device) if t_grad else None
        with torch.no_grad():
            for i in range(len(ts) - 1, 0, -1):
                if time_vjps is not None:
                    # Moving output time t_i moves its sample along the trajectory: dL/dt_i.
                    time_vjps[i] = torch.dot(fb(ts[i], ys[i]), grad_ys[i])
                s0 = torch.cat([ys[i], a, a_p])
                s1 = solve_flat(
                    aug_dynamics, s0, [ts[i], ts[i - 1]], setup.adj_method, setup.adj_opts,
                    setup.adj_rtol, setup.adj_atol, setup.stats, norm_dims, backward=True,
                )[-1]
                a = s1[n : 2 * n] + grad_ys[i - 1]
                a_p = s1[2 * n :]
            if time_vjps is not None:
                # dy(t)/dt0 = -Phi(t, t0) f(t0, y0); the output y(t0) = y0 itself does not move.
                time_vjps[0] = -torch.dot(fb(ts[0], ys[0]), a - grad_ys[0])
        grads: list[Tensor | None] = [None] * len(params)
        for i, g in zip(grad_params_idx, a_p.split(sizes), strict=True):
            grads[i] = g.view_as(params[i])
        return (None, a, time_vjps, *grads)


def _adjoint_options(
    method: str, adj_method: str, options: Any, adjoint_options: Any
) -> tuple[FixedStepOptions | AdaptiveOptions, AdjointOptions]:
    fwd = options_for(method, options)
    if adjoint_options is None:
        return (fwd if adj_method == method else options_for(adj_method, None)), AdjointOptions()
    if isinstance(adjoint_options, AdjointOptions):
        return (fwd if adj_method == method else options_for(adj_method, None)), adjoint_options
    if isinstance(adjoint_options, Mapping):
        rest = {k: v for k, v in adjoint_options.items() if k != "norm"}
        adj = AdjointOptions(**{k: v for k, v in adjoint_options.items() if k == "norm"})
        try:
            return options_for(adj_method, rest), adj
        except UnknownNameError as e:
            raise UnknownNameError(
                f"adjoint option of method {adj_method!r}", e.value, [*e.valid, "norm"]
            ) from None
    return options_for(adj_method, adjoint_options), AdjointOptions()


def odeint_adjoint(
    func: Callable[..., Any],
    y0: Tensor | tuple[Tensor, ...],
    t: Tensor,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    method: str = "dopri5",
    options: Options = None,
    adjoint_params: Sequence[Tensor] | None = None,
    adjoint_rtol: float | None = None,
    adjoint_atol: float | None = None,
    adjoint_method: str | None = None,
    adjoint_options: Mapping[str, Any] | AdjointOptions | None = None,
    stats: SolveStats | None = None,
) -> Tensor | tuple[Tensor, ...]:
    """Like :func:`odeint`, with gradients from the adjoint ODE (memory O(1) in the steps).

    The forward solve runs without autograd; the backward pass integrates the augmented state
    ``[z, a, a_theta]`` from ``t[i]`` to ``t[i-1]`` for each interval, restarting ``z`` from the
    stored forward state and adding ``dL/dy(t[i-1])`` to ``a``. Gradients for ``t`` use
    ``a . f`` at the output times. Saved for backward: the outputs ``(len(t), N)`` only.

    Args:
        func: right-hand side; an ``nn.Module`` unless ``adjoint_params`` is given.
        y0, t, rtol, atol, method, options, stats: as in :func:`odeint`.
        adjoint_params: tensors to differentiate (default ``tuple(func.parameters())``).
        adjoint_rtol, adjoint_atol, adjoint_method: for the backward solve (default: forward's).
        adjoint_options: dict with the backward method's options and ``"norm"``
            (``"rms"`` or ``"seminorm"``), or :class:`AdjointOptions`. Default: the forward
            options when the method is the same.

    Returns:
        As :func:`odeint`.

    Caveats: gradients are those of the exact ODE solution up to the backward solve's tolerance,
    not of the discrete forward solve. Double backward is not supported.
    ``method="reversible_heun"`` uses its exact reversible backward (adjoint_* ignored).
    """
    check_method(method)
    check_tolerances(rtol, atol)
    if adjoint_params is None:
        if not isinstance(func, nn.Module):
            raise InvalidTypeError(
                f"odeint_adjoint needs func to be an nn.Module (got {type(func).__name__}) or "
                "adjoint_params=(tensors to differentiate,)"
            )
        adjoint_params = tuple(func.parameters())
    params = tuple(adjoint_params)
    for p in params:
        if not isinstance(p, Tensor):
            raise InvalidTypeError(f"adjoint_params must be tensors, got {type(p).__name__}")
    adj_method = method if adjoint_method is None else adjoint_method
    check_method(adj_method)
    adj_rtol = rtol if adjoint_rtol is None else adjoint_rtol
    adj_atol = atol if adjoint_atol is None else adjoint_atol
    check_tolerances(adj_rtol, adj_atol, prefix="adjoint_")
    state = FlatState(y0)
    ts = check_t(t, state.dtype, state.device)
    stats = stats if stats is not None else SolveStats()
    opts = options_for(method, options)
    if method == "reversible_heun":
        from deeplimits.ode._reversible import reversible_heun_solve

        return reversible_heun_solve(func, y0, t, state, opts, stats, params)  # type: ignore[arg-type]
    adj_opts, adj = _adjoint_options(method, adj_method, options, adjoint_options)
    if adj_method == "reversible_heun":
        raise UnknownNameError("adjoint method", adj_method, [*ADAPTIVE_METHODS, "euler",
                                                               "midpoint", "rk4"])
    if getattr(opts, "per_sample", False) or getattr(adj_opts, "per_sample", False):
        # The adjoint state [z, a, a_theta] couples every row through a_theta: one time for all.
        raise InvalidArgumentError(
            "options per_sample=True is not supported by odeint_adjoint (the adjoint state "
            "shares the parameter gradient across rows); use odeint (backprop) or "
            "per_sample=False"
        )
    f_fwd = FlatFuncWrapper(func, state, stats)
    f_bwd = FlatFuncWrapper(func, state, stats, backward=True)
    f_bwd.checked = True  # same func and shapes as the forward pass
    setup = _Setup(
        f_fwd=f_fwd, f_bwd=f_bwd, ts=ts, method=method, opts=opts, rtol=rtol,
        atol=atol, adj_method=adj_method, adj_opts=adj_opts, adj_rtol=adj_rtol,
        adj_atol=adj_atol, seminorm=adj.norm == "seminorm", stats=stats,
    )
    ys = _AdjointFn.apply(setup, state.flatten(y0), t, *params)  # (T, N)
    return state.unflatten_series(ys)
