"""The host adaptive loop: one step at a time, the error ratio read back after each (one host
sync per step; the fewest kernels, so the fastest loop on CPU)."""

from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor

from deeplimits.errors import SolverError
from deeplimits.ode._checks import (
    MAX_BAD_IN_A_ROW,
    blow_up_error,
    max_steps_error,
    newton_failure_error,
    underflow_error,
)
from deeplimits.ode._controllers import RATIO_FLOOR
from deeplimits.ode._func import Callbacks, FlatFunc, FlatFuncWrapper, lean
from deeplimits.ode._interp import emit_outputs
from deeplimits.ode._norm import ErrorNorm, initial_step
from deeplimits.ode._options import AdaptiveOptions, SolveStats, StepRecord, StepRecorder
from deeplimits.ode._solvers import StepSolver

__all__ = ["solve_adaptive_host"]



def solve_adaptive_host(
    f: FlatFunc,
    y0: Tensor,
    ts: list[float],
    solver: StepSolver,
    opts: AdaptiveOptions,
    rtol: float,
    atol: float,
    stats: SolveStats,
    norm_dims: int | None = None,
    backward: bool = False,
    record: StepRecorder | None = None,
) -> list[Tensor]:
    """Adaptive solve with the solver's embedded pair, the options' controller and dense output.

    Steps are not shortened to hit output times (so the number of evaluations does not depend
    on how many are asked for), only to end exactly at ``ts[-1]``.

    Args:
        f: the counting wrapper of ``func`` (or the adjoint's augmented dynamics).
        y0: the state, any shape; ``ts``: output times as floats (``ts[0]`` the start).
        norm_dims: error norm over the first ``norm_dims`` entries only (the seminorm).
        backward: count steps as the adjoint's backward solve.
        record: called with a :class:`StepRecord`, the new state and the stages after each
            accepted step (``odeint_checkpoint`` replays the steps from these).

    Returns:
        The state at each of ``ts``.

    Raises:
        MaxStepsExceededError, NonFiniteStateError, StepSizeUnderflowError: the solve failed.
    """
    ctrl = opts.step_controller
    err_order = solver.error_order
    t_end = ts[-1]
    d = 1.0 if t_end > ts[0] else -1.0
    span = abs(t_end - ts[0])
    cache = solver.dense_cache()
    t = ts[0]
    y = y0
    k1: Tensor | None = f(t, y)
    cbs: Callbacks | None = getattr(f, "callbacks", None)
    f = lean(f)
    state = f.state if isinstance(f, FlatFuncWrapper) else None
    norm = ErrorNorm(rtol, atol, norm_dims, y0.numel(), rows=False, fn=opts.norm,
                     to_user=state.unflatten if state is not None else None)
    with torch.no_grad():
        s0 = norm.scale(y0)
    if opts.first_step is not None:
        h_abs = float(opts.first_step)
    else:
        h_abs = float(initial_step(f, t, y, k1, d, err_order, norm, span))
    h_abs = ctrl.clip(h_abs)
    # Step control is not differentiated: skip the no_grad context when nothing records.
    no_grad = torch.no_grad if torch.is_grad_enabled() else contextlib.nullcontext
    fsal = solver.fsal
    outs: list[Tensor] = [y0]
    j = 1
    n = len(ts)
    prev = prev2 = 1.0
    steps = 0
    bad_in_a_row = 0
    newton_mark = 0  # Newton failures before the current run of NaN/inf trials
    # Times a step must end at (the controller's step and jump times, then t_end).
    stops = [*ctrl.forced_times(ts[0], t_end), (t_end, False)]
    si = 0
    k1_time: float | None = t  # time of a fresh first stage (None: chained from ks, or none)
    while j < n:
        if steps >= opts.max_num_steps:
            raise max_steps_error(opts.max_num_steps, t, repr(t_end))
        steps += 1
        stop, jump = stops[si]
        last = d * (t + d * h_abs - stop) >= 0  # this step ends at the stop
        h = (stop - t) if last else d * h_abs
        # At a jump the stages at the jump time see its left limit (one ulp before it).
        times = _left_limit_times(solver, t, h, stop) if last and jump else None
        if cbs is not None:
            cbs.step(t, y, h)
        y1, err, ks = solver.step(f, t, y, h, k1, times)
        with no_grad():
            s1 = norm.scale(y1)
            ratio = float(norm.ratio(err, s0, s1, y1))  # type: ignore[arg-type]  # the one sync
        finite = ratio == ratio and ratio != math.inf
        if finite:
            bad_in_a_row = 0
        else:
            # NaN/inf in the trial state: shrink hard; a real blow-up fails after a few tries.
            bad_in_a_row += 1
            if bad_in_a_row == 1:
                newton_mark = stats.newton_failures
            if bad_in_a_row > MAX_BAD_IN_A_ROW:
                raise _bad_streak_error(solver, stats, newton_mark, t, abs(h))
        # A NaN/inf trial is never accepted, not even at the controller's min_step.
        accepted = finite and ctrl.accept(ratio <= 1.0, abs(h))
        factor = ctrl.factor(ratio, prev, prev2, accepted, finite, err_order)
        if cbs is not None:
            cbs.decided(accepted, t, y, h)
        if accepted:
            t1 = stop if last else t + h
            if backward:
                stats.backward_accepted_steps += 1
            else:
                stats.accepted_steps += 1
            j0 = j
            extra = False
            if d * (ts[j] - t1) <= 0:  # an output time lies in (t, t1]
                if solver.needs_end_stage and d * (ts[j] - t1) < 0:
                    # A non-FSAL interpolant needs f(t1, y1); it is the next step's k1 too.
                    ks = [*ks, f(t1, y1)]
                    extra = True

                def dense(thetas: list[float], y=y, ks=ks, h=h) -> Tensor:
                    return solver.interpolate(cache, y, ks, h, thetas)

                j = emit_outputs(outs, ts, j, d, t, t1, h, y1, dense)
            if record is not None:
                chained = k1_time is None and k1 is not None
                record(StepRecord(t, h, t1, times, k1_time, chained, extra, j0), y1, ks)
            t, y = t1, y1
            s0 = s1
            k1 = ks[-1] if fsal or extra else None
            k1_time = None
            if last and si + 1 < len(stops):
                si += 1
                if jump:  # the right limit starts the next step
                    k1_time = math.nextafter(t1, t1 + d)
                    k1 = f(k1_time, y1)
            prev2, prev = prev, max(ratio, RATIO_FLOOR)
        elif backward:
            stats.backward_rejected_steps += 1
        else:
            stats.rejected_steps += 1
        h_abs = ctrl.clip(abs(h) * factor)
        if j < n and h_abs < ctrl.smallest_step(t):
            if bad_in_a_row:
                # Shrinking the step could not get past a NaN/inf: the state or func breaks here.
                raise _bad_streak_error(solver, stats, newton_mark, t, h_abs)
            raise underflow_error(t, h_abs, ctrl.dt_min)
    return outs


def _bad_streak_error(
    solver: StepSolver, stats: SolveStats, newton_mark: int, t: float, dt: float
) -> SolverError:
    """The error for NaN/inf trials in a row from ``t`` down to ``dt``: an implicit method's
    Newton failures (its stats counted some since the run began at ``newton_mark``), else a
    blow-up."""
    if stats.newton_failures > newton_mark:
        return newton_failure_error(solver.tableau.name, t, dt)
    return blow_up_error(t, dt)


def _left_limit_times(solver: StepSolver, t: float, h: float, stop: float) -> list[float]:
    """Stage times of a step from ``t`` by ``h`` that ends at the jump time ``stop``: the
    stages at the end (``c = 1``) one ulp before it."""
    left = math.nextafter(stop, t)
    return [left if c == 1.0 else t + c * h for c in solver.tableau.c]
