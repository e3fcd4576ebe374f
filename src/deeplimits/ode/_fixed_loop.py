"""The fixed-step loop: explicit Runge-Kutta steps on a grid, eager or in compiled chunks; the
Adams multistep methods' steps with their history (``Solver.new_carry``) carried through."""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from deeplimits.errors import InvalidArgumentError
from deeplimits.ode._checks import check_finite, step_nonfinite_error
from deeplimits.ode._compiled import FIXED_CHUNK, FixedCompiled
from deeplimits.ode._controllers import nudge
from deeplimits.ode._func import Callbacks, FlatFunc, FlatFuncWrapper, lean
from deeplimits.ode._interp import emit_outputs
from deeplimits.ode._options import (
    FixedStepOptions,
    SolveStats,
    StepRecord,
    StepRecorder,
    grid_to_floats,
)
from deeplimits.ode._solvers import ExplicitRK, StepSolver

__all__ = ["build_grid", "solve_fixed"]

#: Steps whose finiteness flags are queued before one read (``finite_check="queued"``).
_QUEUE = 16


def build_grid(ts: list[float], opts: FixedStepOptions) -> list[float]:
    """Step times from ``t[0]`` to ``t[-1]`` for a fixed-step solve (both endpoints included).

    Raises:
        InvalidArgumentError: ``opts.grid`` is not monotonic.
    """
    t0, t1 = ts[0], ts[-1]
    d = 1.0 if t1 > t0 else -1.0
    if opts.step_size is not None:
        h = float(opts.step_size)
        n = max(1, math.ceil(abs(t1 - t0) / h - 1e-9))
        return [t0 + d * i * h for i in range(n)] + [t1]
    if opts.grid is not None:
        g = grid_to_floats(opts.grid)
        if len(g) >= 2:
            inc = all(b > a for a, b in itertools.pairwise(g))
            dec = all(b < a for a, b in itertools.pairwise(g))
            if not (inc or dec):
                raise InvalidArgumentError(
                    "options grid must be strictly increasing or decreasing; sort it"
                )
        inner = sorted((x for x in g if d * (x - t0) > 0 and d * (t1 - x) > 0), key=lambda x: d * x)
        return [t0, *inner, t1]
    return list(ts)


def solve_fixed(
    f: FlatFunc,
    y0: Tensor,
    ts: list[float],
    solver: StepSolver,
    opts: FixedStepOptions,
    stats: SolveStats,
    check_every_step: bool,
    compiled: FixedCompiled | None = None,
    record: StepRecorder | None = None,
    backward: bool = False,
) -> list[Tensor]:
    """Fixed-step solve on :func:`build_grid`; outputs between grid points by the solver's
    interpolant (cubic Hermite for the fixed-step tableaux).

    Args:
        f: the counting wrapper of ``func`` (or a flat function).
        y0: the state; ``ts``: output times as floats (``ts[0]`` the start).
        check_every_step: test each new state for NaN/inf at once (one host sync per step;
            cheap on CPU); else the per-step flags are read every 16 steps (and at the end), so
            an accelerator's queue never drains: a failure is then reported for the first bad
            step all the same.
        compiled: compiled steps (``compile=True``): runs of equal steps without an output
            time inside them go through its chunks.
        record: called with a :class:`StepRecord`, the new state and the stages after each
            step (``odeint_checkpoint`` replays the steps from these; not with ``compiled``).
        backward: count steps as the adjoint's backward solve (never compiled).

    Returns:
        The state at each of ``ts``.

    Raises:
        NonFiniteStateError: a state became NaN/inf (named by the step's end time).
    """
    grid = build_grid(ts, opts)
    pending: list[tuple[float, float, Tensor]] = []
    last_i = len(grid) - 2
    d = 1.0 if ts[-1] > ts[0] else -1.0
    cache = solver.dense_cache()
    carry = solver.new_carry()  # a multistep method's history, passed to each of its steps
    if carry is not None and record is not None:
        raise InvalidArgumentError(
            f"method {solver.name!r} is a multistep method: odeint_checkpoint cannot replay "
            "its steps from a stored state (they need the history of past evaluations); use "
            "odeint or odeint_adjoint, or a Runge-Kutta method such as rk4"
        )
    outs: list[Tensor] = [y0]
    j = 1
    n = len(ts)
    y = y0
    fsal = solver.fsal
    perturb = opts.perturb  # never with compiled steps (the dispatcher refuses the pair)
    # The first stage of the first step, here: the wrapper checks func's output on it, and the
    # remaining evaluations go through its lean call.
    k1: Tensor | None = f(nudge(grid[0], grid[1], y0.dtype) if perturb else grid[0], y0)
    cbs: Callbacks | None = getattr(f, "callbacks", None)
    counter = f
    f = lean(f)
    i = -1
    while i < last_i:
        i += 1
        if compiled is not None and k1 is None:
            steps = _uniform_run(grid, i, ts[j] if j < n else None, d)
            if steps:
                if pending:
                    _check_pending(pending)  # the eager steps before, in order
                y = _compiled_run(compiled, grid, i, steps, y, solver, stats, counter)
                i += steps - 1
                if j < n and ts[j] == grid[i + 1]:
                    outs.append(y)
                    j += 1
                continue
        t, t1 = grid[i], grid[i + 1]
        h = t1 - t
        if cbs is not None:
            cbs.step(t, y, h)
        times = k1_time = None
        if perturb:  # torchdiffeq's Perturb.NEXT for the first stage, PREV at the step's end
            times = _perturbed_times(solver, t, t1, h, y.dtype)
            if i:
                k1_time, k1 = times[0], f(times[0], y)
        if carry is None:
            y1, _, ks = solver.step(f, t, y, h, k1, times)
        else:
            y1, _, ks = solver.step(f, t, y, h, k1, times, carry=carry)  # type: ignore[call-arg]
        if backward:
            stats.backward_accepted_steps += 1
        else:
            stats.accepted_steps += 1
        if check_every_step:
            check_finite(y1, t1, h)
        else:
            pending.append((t1, h, torch.isfinite(y1).all()))
            if len(pending) >= _QUEUE or i == last_i:
                _check_pending(pending)
        chained = i > 0 and k1 is not None and k1_time is None
        first = k1_time if k1_time is not None else (
            None if i else (times[0] if times is not None else t))
        k1 = ks[-1] if fsal else None
        if j >= n or d * (ts[j] - t1) > 0:
            if record is not None:
                record(StepRecord(t, h, t1, times, first, chained, False, j), y1, ks)
            y = y1  # no output time in (t, t1]
            continue
        extra = False
        if d * (ts[j] - t1) < 0:
            # Interior output times need f(t1, y1); it is reused as the next step's k1.
            if solver.needs_end_stage:
                k1 = f(t1, y1)
                ks = [*ks, k1]
                extra = True

            def dense(thetas: list[float], y=y, ks=ks, h=h) -> Tensor:
                return solver.interpolate(cache, y, ks, h, thetas)

        else:
            dense = _no_dense
        if record is not None:
            record(StepRecord(t, h, t1, times, first, chained, extra, j), y1, ks)
        j = emit_outputs(outs, ts, j, d, t, t1, h, y1, dense)
        y = y1
    return outs


def _perturbed_times(
    solver: StepSolver, t: float, t1: float, h: float, dtype: torch.dtype
) -> list[float]:
    """Stage times of a perturbed step: the first one ulp past ``t``, those at the step's end
    one ulp short of ``t1`` (torchdiffeq's ``Perturb.NEXT`` and ``Perturb.PREV``)."""
    c = solver.tableau.c  # type: ignore[attr-defined]
    return [nudge(t, t1, dtype) if i == 0 else nudge(t1, t, dtype) if ci == 1.0 else t + ci * h
            for i, ci in enumerate(c)]


def _uniform_run(grid: list[float], i: int, t_out: float | None, d: float) -> int:
    """How many steps from ``grid[i]`` have the size of the first and no output time
    ``t_out`` strictly inside (one may end exactly at it: the run stops there)."""
    h = grid[i + 1] - grid[i]
    tol = 1e-12 * max(1.0, abs(h))
    k = i
    while k < len(grid) - 1 and abs(grid[k + 1] - grid[k] - h) <= tol:
        if t_out is not None and d * (t_out - grid[k + 1]) <= 0:
            return k - i + 1 if t_out == grid[k + 1] else k - i
        k += 1
    return k - i


def _compiled_run(
    comp: FixedCompiled, grid: list[float], i: int, steps: int, y: Tensor,
    solver: ExplicitRK, stats: SolveStats, counter: FlatFunc,
) -> Tensor:
    """``steps`` equal steps from ``(grid[i], y)`` in compiled chunks (and single steps);
    raises for the first step whose state is not finite."""
    h = grid[i + 1] - grid[i]
    h_t = torch.scalar_tensor(h, dtype=y.dtype, device=y.device)
    done = 0
    while done < steps:
        n = FIXED_CHUNK if steps - done >= FIXED_CHUNK else 1
        t0 = torch.scalar_tensor(grid[i + done], dtype=y.dtype, device=y.device)
        y, ok = (comp.chunk if n == FIXED_CHUNK else comp.single)(t0, y, h_t)
        flags = ok.tolist()
        if not all(flags):
            bad = i + done + flags.index(False) + 1
            raise step_nonfinite_error(grid[bad], h)
        done += n
    stats.accepted_steps += steps
    if isinstance(counter, FlatFuncWrapper):  # compiled code calls func raw: count here
        counter.record(steps * solver.tableau.num_stages)
    return y


def _check_pending(pending: list[tuple[float, float, Tensor]]) -> None:
    """Read the queued finiteness flags with one sync; raise for the first bad step."""
    flags = torch.stack([p[2] for p in pending]).tolist()
    for (t1, h, _), ok in zip(pending, flags, strict=True):
        if not ok:
            raise step_nonfinite_error(t1, h)
    pending.clear()


def _no_dense(thetas: list[float]) -> Tensor:
    raise RuntimeError("internal error: dense output requested without stages")  # unreachable
