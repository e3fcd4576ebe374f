"""Events: integrate until ``event_fn(t, y)`` crosses zero (the work of ``odeint_event``).

The crossing is found on the accepted steps of the host loop, or of the fixed-step loop for
fixed-step methods (``event_fn`` at each step's end; a sign change brackets the root) and
located by bisection on the step's own interpolant. Its gradient follows from the implicit
function theorem: with ``g(T, y(T)) = 0``,
``dT = -(dg/dy dy|_T + dg/dtheta_g) / (dg/dt + dg/dy . f)``, attached as a zero-valued
correction to the found time, so it reaches ``y0``, ``func``'s parameters, ``t0`` and also the
parameters ``event_fn`` closes over (torchdiffeq differentiates only those in the state).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from deeplimits.errors import InvalidArgumentError, MaxStepsExceededError, SolverError
from deeplimits.ode._batched_step import (
    IDX,
    BatchedLoop,
    dense_coefficients,
    dense_rows,
    step_plan,
)
from deeplimits.ode._dispatch import prepare, solve_flat, split_options
from deeplimits.ode._execution import ExecutionOptions
from deeplimits.ode._func import FlatFuncWrapper
from deeplimits.ode._options import SolveStats, StepRecord, grid_to_floats
from deeplimits.ode._solvers import ExplicitRK, get_solver

__all__ = ["SignTracker", "bisect_rows", "event_directions", "event_rows", "implicit_time",
           "solve_until_event"]

#: How far the search integrates at most (a crossing must come before).
_HORIZON = 1e12
_BISECTIONS = 60
#: Fixed-step searches: steps per solve, and at most (torchdiffeq's ``max_itrs``).
_WINDOW = 1000
_FIXED_MAX_STEPS = 20000


class _Found(Exception):
    """The accepted step from ``(t, y)`` by ``h`` to ``y1`` (stages ``ks``) holds the crossing
    of the candidate components ``cand`` ``(1, k)`` (their signs before: ``before``)."""

    def __init__(self, t: float, h: float, y: Tensor, y1: Tensor, ks: list[Tensor],
                 cand: Tensor, before: Tensor) -> None:
        super().__init__()
        self.t, self.h, self.y, self.y1, self.ks = t, h, y, y1, ks
        self.cand, self.before = cand, before


def event_rows(val: Any, rows: int | None) -> Tensor:
    """``event_fn``'s value as ``(R, k)``: one row (``rows=None``: any shape, its entries
    are the ``k`` events) or ``rows`` rows (per-sample: ``(rows,)`` or ``(rows, k)``).

    Raises:
        InvalidArgumentError: not a tensor, empty, or (per-sample) not one row per sample.
    """
    if not isinstance(val, Tensor) or val.numel() == 0:
        raise InvalidArgumentError(
            "event_fn must return a tensor with one value per event, got "
            + (f"shape {tuple(val.shape)}" if isinstance(val, Tensor) else type(val).__name__)
        )
    if rows is None:
        return val.reshape(1, -1)
    if val.ndim not in (1, 2) or val.shape[0] != rows:
        raise InvalidArgumentError(
            f"with per_sample=True event_fn must return shape ({rows},) or ({rows}, k): one "
            f"value (or k) per sample, got {tuple(val.shape)}; or use per_sample=False for "
            "one event time for the whole batch"
        )
    return val.reshape(rows, -1)


def event_directions(direction: Any, k: int, like: Tensor) -> Tensor:
    """``direction`` (``None``, +1, -1, 0, or one of those per event) as a ``(k,)`` tensor.

    Raises:
        InvalidArgumentError: another value, or a sequence whose length is not ``k``.
    """
    vals = [direction] * k if direction is None or isinstance(direction, int) else (
        list(direction) if isinstance(direction, (list, tuple)) else None)
    if vals is None or len(vals) != k or any(
        not (v is None or (isinstance(v, int) and not isinstance(v, bool) and v in (-1, 0, 1)))
        for v in vals
    ):
        raise InvalidArgumentError(
            f"direction={direction!r} must be None, +1, -1 or 0, or a list of those with one "
            f"entry per event value ({k}); +1 keeps crossings from negative to positive as "
            "the solve proceeds, -1 the other way, None or 0 both"
        )
    return torch.tensor([0 if v is None else v for v in vals], dtype=like.dtype,
                        device=like.device)


class SignTracker:
    """The last nonzero sign of each event value ``(R, k)`` and the crossings it sees.

    A value that starts at zero (a ball on the ground) has no sign yet: its first crossing is
    after it has left zero, so a start on the event surface finds the next crossing.
    """

    def __init__(self, g0: Tensor, direction: Tensor) -> None:
        self.sign = torch.sign(g0)
        self.direction = direction

    def update(self, g: Tensor) -> tuple[Tensor, Tensor]:
        """Values ``g`` ``(R, k)`` at the end of a step: returns the candidates ``(R, k)``
        (a sign change, or a zero, after a nonzero sign, in an allowed direction) and the
        signs before the step."""
        s = torch.sign(g)
        before = self.sign
        allowed = (self.direction == 0) | (self.direction * before < 0)
        cand = (before != 0) & (s != before) & allowed
        self.sign = torch.where(s != 0, s, before)
        return cand, before


def bisect_rows(
    dense: Callable[[Tensor], Tensor], g: Callable[[Tensor, Tensor], Tensor], t: Tensor,
    h: Tensor, before: Tensor, cand: Tensor,
) -> tuple[Tensor, Tensor]:
    """The crossing in each row's step by bisection on the step's interpolant.

    The candidates of a row are combined as torchdiffeq combines events,
    ``min_c(g_c * sign_before_c)`` (positive before, not after), so the root found is that of
    the first candidate to cross.

    Args:
        dense: ``theta (R,) -> states`` on each row's interpolant.
        g: ``(t (R,), states) -> (R, k)`` event values.
        t, h: ``(R,)`` each row's step start and signed size.
        before, cand: ``(R, k)`` signs before the step and the candidate events.

    Returns:
        ``(theta (R,), index (R,))``: the crossings' fractions of the steps (the time is
        ``t + theta * h``) and which event crossed.
    """
    lo, hi = torch.zeros_like(t), torch.ones_like(t)
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        comb = torch.where(cand, g(t + mid * h, dense(mid)) * before, math.inf).amin(dim=1)
        pos = comb > 0
        lo, hi = torch.where(pos, mid, lo), torch.where(pos, hi, mid)
    at_hi = torch.where(cand, g(t + hi * h, dense(hi)) * before, math.inf)
    return hi, at_hi.argmin(dim=1)


def solve_until_event(
    func: Callable[..., Any],
    y0: Tensor | tuple[Tensor, ...],
    t0: Tensor | float,
    event_fn: Callable[[Tensor, Any], Tensor],
    reverse_time: bool,
    odeint_interface: Callable[..., Any],
    kwargs: dict[str, Any],
    direction: Any = None,
    plain: bool = True,
) -> tuple[Tensor, Tensor | tuple[Tensor, ...]]:
    """The work of :func:`deeplimits.ode.odeint_event` (which documents the arguments): the
    search, the implicit-function gradient and the solution by ``odeint_interface``
    (``plain``: it is ``odeint``; per-sample events need it).

    Raises:
        SolverError: no crossing within ``max_num_steps`` steps (fixed step:
            ``_FIXED_MAX_STEPS`` steps, or the end of ``grid``).
        InvalidArgumentError: ``event_fn`` returns no value; a bad ``direction``; a method
            that is not an explicit Runge-Kutta one; a fixed-step one without ``step_size``
            or ``grid``.
    """
    if isinstance(t0, Tensor) and t0.numel() != 1:
        raise InvalidArgumentError(
            f"t0 must be one time (a float or a 0-d tensor), got shape {tuple(t0.shape)}; "
            "per-sample events start every sample at the same t0"
        )
    t0_t = t0 if isinstance(t0, Tensor) else torch.tensor(float(t0))
    like = y0[0] if isinstance(y0, tuple) else y0
    t0_t = t0_t.to(like.dtype).reshape(())
    solver = get_solver(kwargs.get("method", "dopri5"))
    if not isinstance(solver, ExplicitRK):
        raise InvalidArgumentError(
            f"odeint_event searches with an explicit Runge-Kutta method, got {solver.name!r}; "
            "use an adaptive one (dopri5, tsit5, bosh3, ...) or a fixed-step one with options "
            "step_size (euler, midpoint, rk4, ...); the solution may then use another method "
            "through odeint_interface"
        )
    opts, exe = split_options(solver, kwargs.get("options"), kwargs.get("execution"))
    d = -1.0 if reverse_time else 1.0
    if exe.per_sample:
        if not plain:
            raise InvalidArgumentError(
                "per-sample events (per_sample=True) compute the solution and its gradients "
                "by backprop through the search: use odeint_interface=odeint (the default)"
            )
        return _rows_until_event(func, y0, t0_t, event_fn, d, direction, solver, opts, exe,
                                 kwargs)
    t_search = torch.stack([t0_t.detach(), t0_t.detach() + d * _HORIZON])
    # the host loop (adaptive) or the fixed-step loop, eager, either way: the step recorder
    host = ExecutionOptions(device_loop=False) if solver.adaptive else ExecutionOptions()
    state, ts = prepare(y0, t_search, solver, host)
    stats = SolveStats()
    f = FlatFuncWrapper(func, state, stats)

    def g(t: Tensor, y: Tensor) -> Tensor:  # (1,) times, (1, *state) -> (1, k)
        return event_rows(event_fn(t.reshape(()), state.unflatten(y[0])), None)

    y_start = state.as_state(y0).detach()
    with torch.no_grad():
        g0 = g(t_search[:1], y_start.unsqueeze(0))
        tracker = SignTracker(g0, event_directions(direction, g0.shape[1], g0))
        prev = {"y": y_start}

        def record(rec: StepRecord, y1: Tensor, ks: list[Tensor]) -> None:
            t1 = torch.full((1,), rec.t1, dtype=y1.dtype, device=y1.device)
            cand, before = tracker.update(g(t1, y1.unsqueeze(0)))
            if bool(cand.any()):
                raise _Found(rec.t, rec.h, prev["y"], y1, ks, cand, before)
            prev["y"] = y1

        exe = host
        rtol, atol = kwargs.get("rtol", 1e-7), kwargs.get("atol", 1e-9)
        spans, missed = _search_spans(solver, opts, ts, d)  # type: ignore[arg-type]
        try:
            for span in spans:  # each span starts where the last one ended
                solve_flat(f, prev["y"], span, solver, opts, exe, rtol, atol, stats,
                           record=record)
        except _Found as found:
            t_ev, idx = _bisect_host(solver.bind(opts, rtol, atol, stats), found, g, f)
        except MaxStepsExceededError as e:
            raise SolverError(
                f"event_fn did not cross zero within the step budget from t0={ts[0]!r}; check "
                "event_fn's sign, reverse_time, direction, or raise options max_num_steps"
            ) from e
        else:
            raise SolverError(f"event_fn did not cross zero {missed}; check event_fn's sign, "
                              "reverse_time and direction")
    _report_index(kwargs, idx.reshape(()))
    k = int(idx)

    def fired(t: Tensor, y: Any) -> Tensor:
        return event_fn(t, y).reshape(-1)[k]

    event_t = _with_implicit_gradient(func, y0, t0_t, fired, t_ev, odeint_interface, kwargs)
    solution = odeint_interface(func, y0, torch.stack([t0_t, event_t]), **kwargs)
    return event_t, solution


def _search_spans(
    solver: ExplicitRK, opts: Any, ts: list[float], d: float
) -> tuple[list[list[float]], str]:
    """The solves the search runs one after the other (each from the state the last one
    reached), and where a search that finds nothing stopped (for the error).

    Adaptive: one solve to the horizon (the controller's steps grow where nothing happens).
    Fixed step: ``step_size`` steps in windows of ``_WINDOW`` steps (the grid is never built
    to the horizon), at most ``_FIXED_MAX_STEPS`` steps in all (torchdiffeq's limit); or the
    points of ``grid`` ahead of ``t0``, up to its last.

    Raises:
        InvalidArgumentError: a fixed-step method without ``step_size`` or ``grid``.
    """
    if solver.adaptive:
        return [ts], "before the search horizon"
    t0 = ts[0]
    if opts.step_size is not None:
        h = float(opts.step_size)
        spans = [[t0 + d * k * h, t0 + d * (k + _WINDOW) * h]
                 for k in range(0, _FIXED_MAX_STEPS, _WINDOW)]
        return spans, f"within {_FIXED_MAX_STEPS} steps of step_size={h!r} from t0={t0!r}"
    if opts.grid is not None:
        ahead = [x for x in grid_to_floats(opts.grid) if d * (x - t0) > 0]
        end = max(ahead, key=lambda x: d * x) if ahead else None
        return ([] if end is None else [[t0, end]]), (
            f"on options grid after t0={t0!r} (its last point "
            f"{'is not past t0' if end is None else f'is {end!r}'})")
    raise InvalidArgumentError(
        f"odeint_event with the fixed-step method {solver.name!r} needs options step_size "
        "(or grid): the steps of the search (grid_constructor and the output times, which "
        "are not known before the event, cannot give them)"
    )


def _report_index(kwargs: dict[str, Any], idx: Tensor) -> None:
    stats = kwargs.get("stats")
    if isinstance(stats, SolveStats):
        stats.event_index = idx.detach().to("cpu", torch.long)


def _bisect_host(solver: ExplicitRK, found: _Found, g: Callable[[Tensor, Tensor], Tensor],
                 f: FlatFuncWrapper) -> tuple[float, Tensor]:
    """The root in the step ``found`` on the step's interpolant: ``(t_event, index (1,))``."""
    cache = solver.dense_cache()
    ks = found.ks
    if solver.needs_end_stage and len(ks) == solver.tableau.num_stages:
        ks = [*ks, f(found.t + found.h, found.y1)]  # the Hermite interpolant's f(t1, y1)

    def dense(theta: Tensor) -> Tensor:
        return solver.interpolate(cache, found.y, ks, found.h, [float(theta)])

    like = found.y1
    t = torch.full((1,), found.t, dtype=like.dtype, device=like.device)
    h = torch.full((1,), found.h, dtype=like.dtype, device=like.device)
    theta, idx = bisect_rows(dense, g, t, h, found.before, found.cand)
    return found.t + float(theta) * found.h, idx


def _with_implicit_gradient(
    func: Callable[..., Any], y0: Any, t0: Tensor, event_fn: Callable[..., Any], t_event: float,
    odeint_interface: Callable[..., Any], kwargs: dict[str, Any],
) -> Tensor:
    """``t_event`` as a tensor whose gradient is the implicit function theorem's."""
    t_det = torch.tensor(t_event, dtype=t0.dtype, device=t0.device)
    if not torch.is_grad_enabled():
        return t_det
    ys = odeint_interface(func, y0, torch.stack([t0, t_det]), **kwargs)
    y_t = tuple(p[-1] for p in ys) if isinstance(ys, tuple) else ys[-1]
    g_val = event_fn(t_det, y_t)
    if not g_val.requires_grad:
        return t_det  # nothing upstream requires grad
    parts = y_t if isinstance(y_t, tuple) else (y_t,)
    fv = func(t_det, tuple(p.detach() for p in parts) if isinstance(y_t, tuple)
              else y_t.detach())

    def g(t: Tensor, leaves: tuple[Tensor, ...]) -> Tensor:
        return event_fn(t, leaves if isinstance(y_t, tuple) else leaves[0])

    return implicit_time(g, t_det, parts, fv if isinstance(fv, tuple) else (fv,), g_val)


def implicit_time(
    g: Callable[[Tensor, tuple[Tensor, ...]], Tensor], t_det: Tensor, ys: tuple[Tensor, ...],
    fs: tuple[Tensor, ...], g_val: Tensor,
) -> Tensor:
    """The event times ``t_det`` (``()``, or ``(R,)`` for rows) with the implicit function
    theorem's gradient: ``g(T, y(T)) = 0`` gives ``dT = -dg / (dg/dt + dg/dy . f)``, attached
    as the zero-valued correction ``-(g_val - g_val.detach()) / rate``.

    Args:
        g: ``g(t, parts) -> values`` shaped like ``t_det`` (rows independent of each other).
        ys, fs: the state at ``t_det`` and ``f`` there, as parts (rows first with rows).
        g_val: ``g`` at ``(t_det, y(T))`` as autograd recorded it (through the solve).

    Raises:
        SolverError: ``dg/dt + dg/dy . f = 0`` at an event (no transversal crossing: the time
            has no derivative).
    """
    with torch.enable_grad():
        tt = t_det.clone().requires_grad_(True)
        leaves = tuple(y.detach().requires_grad_(True) for y in ys)
        grads = torch.autograd.grad(g(tt, leaves).sum(), (tt, *leaves), allow_unused=True)
    rate = torch.zeros_like(t_det) if grads[0] is None else grads[0]
    for gy, fp in zip(grads[1:], fs, strict=True):
        if gy is not None:
            rate = rate + (gy * fp.detach()).reshape(*t_det.shape, -1).sum(-1)
    zero = rate == 0
    if bool(zero.any()):
        raise SolverError(
            f"event_fn does not change at its zero (d/dt event_fn = 0 at t="
            f"{t_det[zero].tolist()}): the event time has no derivative; use an event that "
            "crosses zero transversally"
        )
    return t_det - (g_val - g_val.detach()) / rate


def _rows_until_event(
    func: Callable[..., Any], y0: Any, t0: Tensor, event_fn: Callable[..., Any], d: float,
    direction: Any, solver: ExplicitRK, opts: Any, exe: ExecutionOptions,
    kwargs: dict[str, Any],
) -> tuple[Tensor, Tensor]:
    """Per-sample events: each row of ``y0`` ``(batch, ...)`` stops at its own crossing.

    One per-sample solve (the device loop, eagerly, with autograd recording as in
    :func:`odeint`) from ``t0`` towards the horizon; after each attempt the rows whose
    ``event_fn`` values crossed are marked done (no further steps) and their step is kept.
    At the end those steps are re-run at once, each row's crossing is bisected on its
    interpolant, and the state there (the interpolant, differentiable) is the solution; the
    event times get the implicit function theorem's gradient per row, and the solution's last
    state its ``f dT``.

    Returns:
        ``(event_t (batch,), solution (2, batch, ...))``.
    """
    if isinstance(y0, Tensor) and t0.requires_grad and torch.is_grad_enabled():
        raise InvalidArgumentError(
            "gradients with respect to t0 are not supported with per-sample events; pass "
            "t0.detach(), or per_sample=False"
        )
    exe = dataclasses.replace(exe, cuda_graph=False, compile=False)
    t_search = torch.stack([t0.detach(), t0.detach() + d * _HORIZON])
    state, ts = prepare(y0, t_search, solver, exe)
    stats = kwargs.get("stats")
    stats = stats if isinstance(stats, SolveStats) else SolveStats()
    f = FlatFuncWrapper(func, state, stats)
    shape = state.shapes[0]
    R = shape[0]

    def g(t: Tensor, Y: Tensor) -> Tensor:  # (R,) times, (R, M) states -> (R, k)
        return event_rows(event_fn(t, Y.reshape(shape)), R)

    Y0 = y0.reshape(R, -1)
    with torch.no_grad():
        g0 = g(t0.detach().expand(R), Y0.detach())
        tracker = SignTracker(g0, event_directions(direction, g0.shape[1], g0))
    fired = torch.zeros((R, 1), dtype=torch.bool, device=Y0.device)
    box: dict[str, Any] = {
        "fired": fired, "cand": torch.zeros_like(g0, dtype=torch.bool), "before": g0,
        "t": None, "habs": None, "Y": Y0, "K1": Y0,
    }

    def watch(lp: BatchedLoop, st0: tuple[Tensor, ...], st1: tuple[Tensor, ...]
              ) -> tuple[Tensor, ...]:
        with torch.no_grad():
            cand, before = tracker.update(g(st1[IDX["t"]].reshape(R), st1[IDX["Y"]]))
            new = cand.any(dim=1, keepdim=True) & ~box["fired"]  # (R, 1)
            box["fired"] = box["fired"] | new
            box["cand"] = torch.where(new, cand, box["cand"])
            box["before"] = torch.where(new, before, box["before"])
            for name in ("t", "habs"):
                old = st0[IDX[name]] if box[name] is None else box[name]
                box[name] = torch.where(new, st0[IDX[name]], old)
        for name in ("Y", "K1"):  # recorded by autograd: the re-run step starts from them
            box[name] = torch.where(new, st0[IDX[name]], box[name])
        box["lp"], box["t_end"] = lp, st1[IDX["t_end"]]
        # A row that crossed goes back to its step's start, before the event, and is done:
        # from then on it takes zero-length steps there (as rows at their end time do), so
        # func never sees it past its event again.
        out = list(st1)
        for name in ("t", "Y", "K1"):
            out[IDX[name]] = torch.where(new, st0[IDX[name]], st1[IDX[name]])
        out[IDX["habs"]] = torch.where(new, 0.0, st1[IDX["habs"]])
        out[IDX["done"]] = st1[IDX["done"]] | new
        return tuple(out)

    rtol, atol = kwargs.get("rtol", 1e-7), kwargs.get("atol", 1e-9)
    try:
        solve_flat(f, state.as_state(y0), ts, solver, opts, exe, rtol, atol, stats, watch=watch)
    except MaxStepsExceededError as e:
        raise SolverError(
            f"event_fn did not cross zero for every sample within the step budget from "
            f"t0={ts[0]!r}; check event_fn's sign, reverse_time, direction, or raise options "
            "max_num_steps"
        ) from e
    if "lp" not in box or not bool(box["fired"].all()):
        raise SolverError("event_fn did not cross zero for every sample before the horizon")
    lp: BatchedLoop = box["lp"]
    t, Y = box["t"], box["Y"]
    h, _, _, _, times = step_plan(lp, t, box["habs"], box["t_end"])
    _, _, ks = solver.step(lp.ev, t, Y, h, box["K1"], times=times)  # the crossing steps again
    C = dense_coefficients(lp, ks, h)

    def dense(theta: Tensor) -> Tensor:
        return dense_rows(lp, Y, C, theta.view(1, R, 1))[0]

    with torch.no_grad():
        theta, idx = bisect_rows(dense, g, t.reshape(R), h.reshape(R), box["before"],
                                 box["cand"])
    _report_index(kwargs, idx)
    t_det = (t.reshape(R) + theta * h.reshape(R)).detach()
    y_t = dense(theta)  # (R, M): differentiable with respect to y0 and func's parameters
    event_t = t_det
    if torch.is_grad_enabled():
        def fired(t: Tensor, parts: tuple[Tensor, ...]) -> Tensor:  # (R,)
            return g(t, parts[0]).gather(1, idx.view(R, 1)).view(R)

        g_val = fired(t_det, (y_t,))
        if g_val.requires_grad:
            fv = lp.ev(t_det.view(R, 1), y_t.detach()).detach()  # (R, M)
            event_t = implicit_time(fired, t_det, (y_t,), (fv,), g_val)
            y_t = y_t + fv * (event_t - t_det).unsqueeze(1)  # the state moves with T: f dT
    return event_t, torch.stack([y0, y_t.reshape(shape)])
