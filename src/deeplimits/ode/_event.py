"""Events: integrate until ``event_fn(t, y)`` crosses zero (the work of ``odeint_event``).

The crossing is found on the accepted steps of the host loop (``event_fn`` at
each step's end; a sign change brackets the root) and located by bisection on the step's own
interpolant. Its gradient follows from the implicit function theorem: with ``g(T, y(T)) = 0``,
``dT = -(dg/dy dy|_T + dg/dtheta_g) / (dg/dt + dg/dy . f)``, attached as a zero-valued
correction to the found time, so it reaches ``y0``, ``func``'s parameters, ``t0`` and also the
parameters ``event_fn`` closes over (torchdiffeq differentiates only those in the state).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from deeplimits.errors import InvalidArgumentError, MaxStepsExceededError, SolverError
from deeplimits.ode._dispatch import prepare, solve_flat, split_options
from deeplimits.ode._execution import ExecutionOptions
from deeplimits.ode._func import FlatFuncWrapper
from deeplimits.ode._options import SolveStats, StepRecord
from deeplimits.ode._solvers import ExplicitRK, get_solver

__all__ = ["solve_until_event"]

#: How far the search integrates at most (a crossing must come before).
_HORIZON = 1e12
_BISECTIONS = 64


class _Found(Exception):
    """The accepted step from ``(t, y)`` by ``h`` to ``y1`` (stages ``ks``) holds the crossing."""

    def __init__(self, t: float, h: float, y: Tensor, y1: Tensor, ks: list[Tensor]) -> None:
        super().__init__()
        self.t, self.h, self.y, self.y1, self.ks = t, h, y, y1, ks


def _scalar_event(event_fn: Callable[..., Any], state: Any) -> Callable[[Any, Tensor], float]:
    def g(t: Any, y: Tensor) -> float:
        tt = t if isinstance(t, Tensor) else torch.scalar_tensor(t, dtype=y.dtype)
        val = event_fn(tt, state.unflatten(y))
        if not isinstance(val, Tensor) or val.numel() != 1:
            raise InvalidArgumentError(
                f"event_fn must return one value (a 0-d tensor), got "
                f"{tuple(val.shape) if isinstance(val, Tensor) else type(val).__name__}; "
                "combine several events into one (e.g. their product or minimum)"
            )
        return float(val)

    return g


def solve_until_event(
    func: Callable[..., Any],
    y0: Tensor | tuple[Tensor, ...],
    t0: Tensor | float,
    event_fn: Callable[[Tensor, Any], Tensor],
    reverse_time: bool,
    odeint_interface: Callable[..., Any],
    kwargs: dict[str, Any],
) -> tuple[Tensor, Tensor | tuple[Tensor, ...]]:
    """The work of :func:`deeplimits.ode.odeint_event` (which documents the arguments): the
    search, the implicit-function gradient and the solution by ``odeint_interface``.

    Raises:
        SolverError: no crossing within ``max_num_steps`` steps.
        InvalidArgumentError: ``event_fn`` returns more than one value; a method that is not
            explicit and adaptive.
    """
    t0_t = t0 if isinstance(t0, Tensor) else torch.tensor(float(t0))
    like = y0[0] if isinstance(y0, tuple) else y0
    t0_t = t0_t.to(like.dtype).reshape(())
    solver = get_solver(kwargs.get("method", "dopri5"))
    if not (isinstance(solver, ExplicitRK) and solver.adaptive):
        raise InvalidArgumentError(
            f"odeint_event searches with an explicit adaptive method, got {solver.name!r}; use "
            "dopri5, tsit5, bosh3, ... (the solution may then use another method through "
            "odeint_interface)"
        )
    opts, _ = split_options(solver, kwargs.get("options"))
    d = -1.0 if reverse_time else 1.0
    t_search = torch.stack([t0_t.detach(), t0_t.detach() + d * _HORIZON])
    state, ts = prepare(y0, t_search, solver, ExecutionOptions(device_loop=False))
    stats = SolveStats()
    f = FlatFuncWrapper(func, state, stats)
    g = _scalar_event(event_fn, state)
    y_start = state.as_state(y0).detach()
    with torch.no_grad():
        g0 = g(ts[0], y_start)
        prev = {"y": y_start, "sign": 0.0 if g0 == 0 else math.copysign(1.0, g0)}

        def record(rec: StepRecord, y1: Tensor, ks: list[Tensor]) -> None:
            g1 = g(rec.t1, y1)
            s1 = 0.0 if g1 == 0 else math.copysign(1.0, g1)
            if prev["sign"] and s1 != prev["sign"]:
                raise _Found(rec.t, rec.h, prev["y"], y1, ks)
            if s1:
                prev["sign"] = s1
            prev["y"] = y1

        exe = ExecutionOptions(device_loop=False)
        rtol, atol = kwargs.get("rtol", 1e-7), kwargs.get("atol", 1e-9)
        try:
            solve_flat(f, y_start, ts, solver, opts, exe, rtol, atol, stats, record=record)
        except _Found as found:
            t_event = _bisect(solver, found, g, prev["sign"], f)
        except MaxStepsExceededError as e:
            raise SolverError(
                f"event_fn did not cross zero within the step budget from t0={ts[0]!r}; check "
                "event_fn's sign, reverse_time, or raise options max_num_steps"
            ) from e
        else:  # the loop reached the horizon (steps grow fast where nothing happens)
            raise SolverError("event_fn did not cross zero before the search horizon")
    event_t = _with_implicit_gradient(func, y0, t0_t, event_fn, t_event, odeint_interface, kwargs)
    solution = odeint_interface(func, y0, torch.stack([t0_t, event_t]), **kwargs)
    return event_t, solution


def _bisect(solver: ExplicitRK, found: _Found, g: Callable[[Any, Tensor], float],
            sign_before: float, f: FlatFuncWrapper) -> float:
    """The root in the step ``found`` by bisection on the step's interpolant (theta in [0, 1])."""
    cache = solver.dense_cache()
    ks = found.ks
    if solver.needs_end_stage and len(ks) == solver.tableau.num_stages:
        ks = [*ks, f(found.t + found.h, found.y1)]  # the Hermite interpolant's f(t1, y1)
    lo, hi = 0.0, 1.0
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        y_mid = solver.interpolate(cache, found.y, ks, found.h, [mid])[0]
        g_mid = g(found.t + mid * found.h, y_mid)
        if g_mid != 0 and math.copysign(1.0, g_mid) == sign_before:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-16:
            break
    return found.t + hi * found.h


def _with_implicit_gradient(
    func: Callable[..., Any], y0: Any, t0: Tensor, event_fn: Callable[..., Any], t_event: float,
    odeint_interface: Callable[..., Any], kwargs: dict[str, Any],
) -> Tensor:
    """``t_event`` as a tensor whose gradient is the implicit function theorem's."""
    t_det = torch.tensor(t_event, dtype=t0.dtype)
    if not torch.is_grad_enabled():
        return t_det
    ys = odeint_interface(func, y0, torch.stack([t0, t_det]), **kwargs)
    y_t = tuple(p[-1] for p in ys) if isinstance(ys, tuple) else ys[-1]
    g_val = event_fn(t_det, y_t)
    if not g_val.requires_grad:
        return t_det  # nothing upstream requires grad
    with torch.enable_grad():
        tt = t_det.clone().requires_grad_(True)
        y_leaf = (tuple(p.detach().requires_grad_(True) for p in y_t) if isinstance(y_t, tuple)
                  else y_t.detach().requires_grad_(True))
        gv = event_fn(tt, y_leaf)
        leaves = (tt, *y_leaf) if isinstance(y_leaf, tuple) else (tt, y_leaf)
        grads = torch.autograd.grad(gv, leaves, allow_unused=True)
        fv = func(t_det, tuple(p.detach() for p in y_t) if isinstance(y_t, tuple)
                  else y_t.detach())
    fparts = fv if isinstance(fv, tuple) else (fv,)
    dg_dt = grads[0] if grads[0] is not None else torch.zeros((), dtype=t0.dtype)
    rate = dg_dt.detach() + sum(
        (gy * fp.detach()).sum() for gy, fp in zip(grads[1:], fparts, strict=True)
        if gy is not None
    )
    if float(rate) == 0.0:
        raise SolverError(
            f"event_fn touches zero at t={t_event!r} without crossing (d/dt event_fn = 0): its "
            "time has no gradient; use an event that crosses transversally"
        )
    return t_det - (g_val - g_val.detach()) / rate
