"""``odeint_adjoint``: gradients from the adjoint ODE solved backwards in time.

Chen, Rubanova, Bettencourt & Duvenaud (2018), "Neural ordinary differential equations";
structure as torchdiffeq's ``OdeintAdjointMethod``. Seminorm: Kidger, Chen & Lyons (2021),
"'Hey, that's not an ODE': faster ODE adjoints via seminorms".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from deeplimits.errors import InvalidArgumentError, InvalidTypeError, UnknownNameError
from deeplimits.ode._checks import check_tolerances, tolerance_vectors
from deeplimits.ode._dispatch import (
    Options,
    prepare,
    resolve_grid,
    solve,
    solve_flat,
    split_options,
)
from deeplimits.ode._execution import ExecutionOptions
from deeplimits.ode._func import Callbacks, FlatFuncWrapper, FlatState
from deeplimits.ode._odeint import event_mode
from deeplimits.ode._options import (
    AdaptiveOptions,
    AdjointOptions,
    FixedStepOptions,
    SolveStats,
)
from deeplimits.ode._solvers import METHODS, ReversibleHeun, Solver, get_solver

__all__ = ["odeint_adjoint"]


@dataclass
class _Setup:
    """Everything the autograd.Function needs that is not a tensor input."""

    f_fwd: FlatFuncWrapper
    f_bwd: FlatFuncWrapper
    ts: list[float]
    solver: Solver
    opts: FixedStepOptions | AdaptiveOptions
    exe: ExecutionOptions
    rtol: float | Tensor
    atol: float | Tensor
    adj_solver: Solver
    adj_opts: FixedStepOptions | AdaptiveOptions
    adj_exe: ExecutionOptions
    adj_rtol: float | Tensor
    adj_atol: float | Tensor
    seminorm: bool
    stats: SolveStats


class _AdjointFn(torch.autograd.Function):
    """``(y0_flat, t, *params) -> ys (T, N)``; backward solves the adjoint ODE."""

    @staticmethod
    def forward(ctx: Any, setup: _Setup, y0: Tensor, t: Tensor, *params: Tensor) -> Tensor:
        # autograd.Function.forward runs without grad: nothing per step is saved.
        outs = solve_flat(
            setup.f_fwd, y0, setup.ts, setup.solver, setup.opts, setup.exe, setup.rtol,
            setup.atol, setup.stats,
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

        def aug_jacobian(tt: float, s: Tensor) -> Tensor:
            # For implicit backward solvers: the augmented Jacobian is block lower triangular
            # with diagonal blocks (J, -J^T, 0); the chord iterations use those blocks only
            # (the blocks below hold second derivatives of func; leaving them out keeps the
            # converged solution exact and costs at most a few more iterations).
            jac = torch.func.jacrev(lambda v: fb(tt, v))(s[:n])  # (N, N)
            out = torch.zeros(s.numel(), s.numel(), dtype=s.dtype, device=s.device)
            out[:n, :n] = jac
            out[n : 2 * n, n : 2 * n] = -jac.T
            return out

        aug_dynamics.jacobian = aug_jacobian  # type: ignore[attr-defined]
        # torchdiffeq's adjoint callbacks (callback_step_adjoint, ...), on the augmented state.
        aug_dynamics.callbacks = Callbacks.of(fb.func, None, suffix="_adjoint")  # type: ignore[attr-defined]
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
                    aug_dynamics, s0, [ts[i], ts[i - 1]], setup.adj_solver, setup.adj_opts,
                    setup.adj_exe, setup.adj_rtol, setup.adj_atol, setup.stats, norm_dims,
                    backward=True,
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


def _backward_norm(
    adj: AdjointOptions, fwd_norm: Callable[[Any], Tensor] | None, state: FlatState,
    params: Sequence[Tensor],
) -> Callable[[Tensor], Tensor] | None:
    """The backward solve's norm function as torchdiffeq builds it (``handle_adjoint_norm_``),
    on the flat scaled error ``[y, a, a_params]`` (``(2 N + P,)``), or ``None`` (our RMS).

    - ``adjoint_options={"norm": fn}``: ``fn((t, y, adj_y, *adj_params))`` (a tuple state's
      tensors spread: ``(t, *y, *adj_y, *adj_params)``); ``t`` is a 0-d zero (no time channel).
    - a forward ``options["norm"]`` and no adjoint function: the maximum of the forward norm of
      ``y`` and of ``adj_y`` and (not with ``"seminorm"``) the RMS of each parameter's channel.
    """
    user = adj.norm if callable(adj.norm) else None
    if user is None and fwd_norm is None:
        return None
    n = state.numel
    sizes = [p.numel() for p in params]

    def split(x: Tensor) -> tuple[Any, Any, list[Tensor]]:
        z, a = state.unflatten(x[:n]), state.unflatten(x[n : 2 * n])
        ps = [v.view_as(p) for v, p in zip(x[2 * n :].split(sizes), params, strict=True)]
        return z, a, ps

    if user is not None:
        def user_norm(x: Tensor) -> Tensor:
            z, a, ps = split(x)
            zs, as_ = (z, a) if state.is_tuple else ((z,), (a,))
            return user((torch.zeros((), dtype=x.dtype, device=x.device), *zs, *as_, *ps))

        return user_norm
    fwd = cast(Callable[[Any], Tensor], fwd_norm)
    seminorm = adj.norm == "seminorm"

    def mixed_norm(x: Tensor) -> Tensor:
        z, a, ps = split(x)
        # a norm returning a Python float keeps its double precision (as torchdiffeq's does)
        parts = [torch.as_tensor(fwd(z), dtype=x.dtype), torch.as_tensor(fwd(a), dtype=x.dtype)]
        if not seminorm:
            parts += [p.pow(2).mean().sqrt() for p in ps]
        return torch.stack([q.reshape(()).to(x.dtype) for q in parts]).max()

    return mixed_norm


def _adjoint_options(
    solver: Solver, adj_solver: Solver, options: Any, exe: ExecutionOptions,
    adjoint_options: Any,
) -> tuple[FixedStepOptions | AdaptiveOptions, ExecutionOptions, AdjointOptions]:
    """The backward solve's numerical and execution options, and the adjoint's own.

    Default (no ``adjoint_options``): the forward options when the method is the same.
    """
    if adjoint_options is None or isinstance(adjoint_options, AdjointOptions):
        adj = adjoint_options or AdjointOptions()
        if adj_solver == solver:
            fwd, _ = split_options(solver, options, None)
            if getattr(fwd, "norm", None) is not None:
                # The forward's norm takes y0's structure; the backward state is [z, a, a_p].
                fwd = dataclasses.replace(fwd, norm=None)  # type: ignore[type-var]
            return fwd, exe, adj
        return adj_solver.options_type(), exe, adj
    if isinstance(adjoint_options, Mapping):
        rest = {k: v for k, v in adjoint_options.items() if k != "norm"}
        adj = AdjointOptions(**{k: v for k, v in adjoint_options.items() if k == "norm"})
        try:
            numeric, adj_exe = split_options(adj_solver, rest, None, what="adjoint option")
        except UnknownNameError as e:
            raise UnknownNameError(e.what, e.value, [*e.valid, "norm"]) from None
        return numeric, adj_exe, adj
    numeric, adj_exe = split_options(adj_solver, adjoint_options, None, what="adjoint option")
    return numeric, adj_exe, AdjointOptions()


def odeint_adjoint(
    func: Callable[..., Any],
    y0: Tensor | tuple[Tensor, ...],
    t: Tensor,
    *,
    rtol: float | tuple[float, ...] = 1e-7,
    atol: float | tuple[float, ...] = 1e-9,
    method: str | Solver = "dopri5",
    options: Options = None,
    execution: ExecutionOptions | None = None,
    adjoint_params: Sequence[Tensor] | None = None,
    adjoint_rtol: float | tuple[float, ...] | None = None,
    adjoint_atol: float | tuple[float, ...] | None = None,
    adjoint_method: str | Solver | None = None,
    adjoint_options: Mapping[str, Any] | AdjointOptions | None = None,
    stats: SolveStats | None = None,
    event_fn: Callable[[Tensor, Any], Tensor] | None = None,
) -> Tensor | tuple[Tensor, ...] | tuple[Tensor, Any]:
    """Like :func:`odeint`, with gradients from the adjoint ODE (memory O(1) in the steps).

    The forward solve runs without autograd; the backward pass integrates the augmented state
    ``[z, a, a_theta]`` from ``t[i]`` to ``t[i-1]`` for each interval, restarting ``z`` from the
    stored forward state and adding ``dL/dy(t[i-1])`` to ``a``. Gradients for ``t`` use
    ``a . f`` at the output times. Saved for backward: the outputs ``(len(t), N)`` only.

    ``y0``, ``t``, ``rtol``, ``atol``, ``method``, ``options``, ``execution``, ``stats`` and
    ``event_fn`` are as in :func:`odeint`.

    Args:
        func: right-hand side; an ``nn.Module`` unless ``adjoint_params`` is given.
        adjoint_params: tensors to differentiate (default ``tuple(func.parameters())``).
        adjoint_rtol: ``rtol`` of the backward solve (default: the forward's); a tuple (a
            tuple ``y0``, one per tensor) weighs each tensor of the state and of its adjoint,
            and the parameters' channel gets the smallest of them.
        adjoint_atol: ``atol`` of the backward solve (default: the forward's); tuples as
            ``adjoint_rtol``.
        adjoint_method: method of the backward solve (default: the forward's).
        adjoint_options: dict with the backward method's options and ``"norm"``
            (``"rms"``, ``"seminorm"`` or a function, see :class:`AdjointOptions`), or
            :class:`AdjointOptions`. Default: the forward options when the method is the
            same. With a forward ``options["norm"]`` function and no adjoint norm function
            the backward norm is torchdiffeq's: the maximum of the forward norm of the state,
            of its adjoint and (not with ``"seminorm"``) the RMS of each parameter's channel.

    Returns:
        As ``odeint`` (the states at the times of ``t``).

    Caveats: gradients are those of the exact ODE solution up to the backward solve's tolerance,
    not of the discrete forward solve. Double backward is not supported.
    ``method="reversible_heun"`` uses its exact reversible backward (adjoint_* ignored).
    """
    if event_fn is not None:  # torchdiffeq's event mode: (event_t, solution)
        return event_mode(odeint_adjoint, func, y0, t, event_fn, {
            "rtol": rtol, "atol": atol, "method": method, "options": options,
            "execution": execution, "adjoint_params": adjoint_params,
            "adjoint_rtol": adjoint_rtol, "adjoint_atol": adjoint_atol,
            "adjoint_method": adjoint_method, "adjoint_options": adjoint_options,
            "stats": stats,
        })
    solver = get_solver(method)
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
    adj_solver = solver if adjoint_method is None else get_solver(
        adjoint_method, "adjoint method"
    )
    adj_rtol = rtol if adjoint_rtol is None else adjoint_rtol
    adj_atol = atol if adjoint_atol is None else adjoint_atol
    check_tolerances(adj_rtol, adj_atol, prefix="adjoint_")
    stats = stats if stats is not None else SolveStats()
    opts, exe = split_options(solver, options, execution)
    if isinstance(solver, ReversibleHeun):
        # Its own exact backward (O(1) memory): the adjoint_* arguments do not apply.
        return solve(func, y0, t, solver, opts, exe, rtol, atol, stats, params)
    if adj_solver.own_loop:
        valid = [n for n in METHODS if not get_solver(n).own_loop]
        raise UnknownNameError("adjoint method", adj_solver.name, valid)
    adj_opts, adj_exe, adj = _adjoint_options(solver, adj_solver, options, exe, adjoint_options)
    # Both solves step on a grid_constructor's grid from (func, y0, t), asked once for each.
    opts = resolve_grid(opts, func, y0, t)
    adj_opts = resolve_grid(adj_opts, func, y0, t)
    if exe.per_sample or adj_exe.per_sample:
        # The adjoint state [z, a, a_theta] couples every row through a_theta: one time for all.
        raise InvalidArgumentError(
            "options per_sample=True is not supported by odeint_adjoint (the adjoint state "
            "shares the parameter gradient across rows); use odeint (backprop) or "
            "per_sample=False"
        )
    state, ts = prepare(y0, t, solver, exe)
    diff_params = [p for p in params if p.requires_grad]
    vec = {"dtype": state.dtype, "device": state.device, "tuple_state": state.is_tuple}
    rtol_v, atol_v = tolerance_vectors(rtol, atol, state.sizes, **vec)  # type: ignore[arg-type]
    adj_rtol_v, adj_atol_v = tolerance_vectors(
        adj_rtol, adj_atol, state.sizes, **vec, prefix="adjoint_",  # type: ignore[arg-type]
        adjoint_params=sum(p.numel() for p in diff_params),
    )
    bnorm = _backward_norm(adj, getattr(opts, "norm", None), state, diff_params)
    if bnorm is not None and isinstance(adj_opts, AdaptiveOptions):
        adj_opts = dataclasses.replace(adj_opts, norm=bnorm)
    f_fwd = FlatFuncWrapper(func, state, stats)
    f_bwd = FlatFuncWrapper(func, state, stats, backward=True)
    f_bwd.checked = True  # same func and shapes as the forward pass
    setup = _Setup(
        f_fwd=f_fwd, f_bwd=f_bwd, ts=ts, solver=solver, opts=opts, exe=exe, rtol=rtol_v,  # type: ignore[arg-type]
        atol=atol_v, adj_solver=adj_solver, adj_opts=adj_opts, adj_exe=adj_exe,
        adj_rtol=adj_rtol_v, adj_atol=adj_atol_v,
        seminorm=adj.norm == "seminorm" and bnorm is None, stats=stats,
    )
    t_in = t if t.dtype == state.dtype else t.to(state.dtype)  # differentiable cast
    ys = _AdjointFn.apply(setup, state.flatten(y0), t_in, *params)  # (T, N)
    return state.unflatten_series(ys)
