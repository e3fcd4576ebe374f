"""The device-resident adaptive loop: the batched step run eagerly, replayed from captured
graphs or compiled, with one host sync every ``sync_every`` attempts.

The host loop reads the error ratio back after every step; here every decision is a tensor op
(:mod:`deeplimits.ode._batched_step`), so the host only looks at one small flag tensor per
block of attempts. Which of the three ways runs is the dispatcher's :class:`DevicePlan`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from deeplimits.errors import InvalidArgumentError
from deeplimits.ode._batched_step import (
    IDX,
    BatchedLoop,
    attempt,
    flag_values,
    loop_constants,
    row_func,
    start,
)
from deeplimits.ode._cache import COMPILED, GRAPHS
from deeplimits.ode._capture import CaptureBackend
from deeplimits.ode._checks import blow_up_error, max_steps_error, underflow_error
from deeplimits.ode._compiled import CompiledBlocks, compiled_blocks, run_compiled
from deeplimits.ode._controllers import PIDController
from deeplimits.ode._cuda_graphs import GraphEntry, cache_key, new_graph
from deeplimits.ode._execution import ExecutionOptions
from deeplimits.ode._func import FlatFuncWrapper
from deeplimits.ode._norm import ErrorNorm
from deeplimits.ode._options import AdaptiveOptions, SolveStats
from deeplimits.ode._solvers import ExplicitRK

__all__ = ["DevicePlan", "Watcher", "solve_adaptive_device"]


@dataclass(frozen=True)
class DevicePlan:
    """How the device loop runs (decided by the dispatcher).

    Attributes:
        module: the ``nn.Module`` whose solves are cached (graphs or compiled code), or
            ``None``: the eager batched step only.
        capture: the backend that captures graphs, or ``None``: no graphs.
        graph_required: ``cuda_graph=True``: a failed capture raises.
        compile: compile the blocks.
    """

    module: nn.Module | None = None
    capture: CaptureBackend | None = None
    graph_required: bool = False
    compile: bool = False


EAGER = DevicePlan()

#: Called after each eager attempt: ``(loop, state before, state after) -> state after``.
Watcher = Callable[[BatchedLoop, tuple[Tensor, ...], tuple[Tensor, ...]], tuple[Tensor, ...]]


def solve_adaptive_device(
    f: Callable[[Any, Tensor], Tensor],
    y0: Tensor,
    ts: list[float] | list[list[float]],
    solver: ExplicitRK,
    opts: AdaptiveOptions,
    exe: ExecutionOptions,
    rtol: float,
    atol: float,
    stats: SolveStats,
    norm_dims: int | None = None,
    backward: bool = False,
    plan: DevicePlan = EAGER,
    watch: Watcher | None = None,
) -> list[Tensor]:
    """The adaptive solve on the device loop; same contract as the host loop's.

    Args:
        f: the solver's right-hand side on states shaped like ``y0`` (a
            :class:`FlatFuncWrapper` or the adjoint's augmented dynamics).
        y0: the state (``(batch, ...)`` with ``exe.per_sample``).
        ts: output times as floats (``ts[0]`` is the start), or with ``per_sample`` one list
            per batch row (same length, same direction; each row starts at its own ``t0``).
        plan: eager, graphs and/or compiled (the dispatcher checked that it can be).
        watch: ``watch(lp, st_before, st_after) -> st_after`` after every attempt (eager
            plan only; the per-sample event search marks rows done where they cross).

    Returns:
        The state at each of ``ts``.

    Raises:
        MaxStepsExceededError, NonFiniteStateError, StepSizeUnderflowError: as the host loop
            (detected at the next sync, so up to ``sync_every - 1`` attempts later).

    With a cached graph the start of the solve is replayed too (one copy of ``y0`` and of the
    output times in, one replay): func's output is then not checked again, and a NaN/inf
    ``y0`` is reported by the loop (``NonFiniteStateError`` at ``t0``).
    """
    if watch is not None and plan != EAGER:
        raise InvalidArgumentError(  # pragma: no cover - the caller forces the eager plan
            "internal error: a watched device loop runs eagerly"
        )
    per_sample = exe.per_sample
    ctrl = opts.step_controller
    shape = tuple(y0.shape)
    R = shape[0] if per_sample else 1
    M = y0.numel() // R if R else 0
    dtype, device = y0.dtype, y0.device
    rows_t = bool(ts) and isinstance(ts[0], list)
    first: list[float] = ts[0] if rows_t else ts  # type: ignore[assignment]
    T = len(first)
    d = 1.0 if first[-1] > first[0] else -1.0
    t_end_text = "each row's last time" if rows_t else repr(first[-1])
    first_step = None if opts.first_step is None else float(opts.first_step)
    Y0 = y0.reshape(R, M)
    ts_host = torch.tensor(ts, dtype=dtype)  # (T,) or (R, T), on the host
    module = plan.module
    counter = f if isinstance(f, FlatFuncWrapper) else None
    gkey = ckey = None
    graph: GraphEntry | None = None
    comp: CompiledBlocks | None = None
    if module is not None:
        parts = (solver.tableau, tuple(Y0.shape), dtype, str(device), tuple(ts_host.shape),
                 rtol, atol, ctrl, d, norm_dims, exe.sync_every, per_sample, first_step,
                 exe.compile, type(plan.capture))
        if plan.capture is not None:
            gkey = cache_key(module, True, *parts)
            graph = GRAPHS.get(gkey, module)
        if plan.compile and graph is None:
            ckey = cache_key(module, False, *parts)
            comp = COMPILED.get(ckey, module)
    if graph is not None:
        # Replayed start: y0 and the times in, one replay; the state is the static one.
        b = graph.blocks
        b.y0_in.copy_(Y0)
        b.ts_in.copy_(ts_host)
        b.start.replay()
        lp, st, start_evals = graph.loop, b.static, graph.start_evals
        _record(counter, start_evals)
    elif comp is not None:
        st = run_compiled(comp.start, Y0, ts_host.to(device))
        lp, start_evals = comp.loop, comp.start_evals
        _record(counter, start_evals)
    else:
        coef, powers, c_row = loop_constants(solver, dtype, device)
        stops, jumps = _forced_times(ctrl, dtype, device)
        lp = BatchedLoop(
            solver=solver, ev=row_func(f, shape, per_sample),
            norm=ErrorNorm(rtol, atol, norm_dims, M, rows=True), ctrl=ctrl, d=d, coef=coef,
            powers=powers, c_row=c_row, stops=stops, jumps=jumps,
        )
        st, start_evals = start(lp, Y0, ts_host.to(device), rows_t, first_step)
        if ckey is not None and module is not None and counter is not None:
            comp = compiled_blocks(ckey, module, counter, lp, shape, per_sample,
                                   exe.sync_every, rows_t, first_step, start_evals)
        if gkey is not None and module is not None and counter is not None:
            # A new graph (its first solve, or after the parameters were replaced): captured
            # from this start, of the compiled blocks with compile=True, else of eager ones.
            raw = dataclasses.replace(lp, ev=row_func(counter.raw, shape, per_sample))
            graph = new_graph(gkey, module, plan.capture, raw, st,  # type: ignore[arg-type]
                              exe.sync_every, rows_t, first_step, start_evals,
                              plan.graph_required, comp)
            if graph is not None:
                st = graph.blocks.static  # the capture left it equal to st
    if not backward:  # the adjoint's backward solves never use graphs; keep the forward's flag
        stats.cuda_graph_used = graph is not None
        stats.compiled = comp is not None or (graph is not None and graph.compiled)
    k = exe.sync_every
    attempts = 0
    n_est = k
    while True:
        if attempts >= opts.max_num_steps:
            t_now = float(st[IDX["t"]].min() if d > 0 else st[IDX["t"]].max())
            raise max_steps_error(opts.max_num_steps, t_now, t_end_text)
        # Fewer than k attempts when the steps left (estimated at the last sync) are fewer:
        # attempts past the end are pure waste, a sync is cheaper.
        n_now = max(1, min(k, n_est, opts.max_num_steps - attempts))
        if graph is not None:
            if n_now == k:
                graph.blocks.steps.replay()
            else:
                for _ in range(n_now):
                    graph.blocks.step1.replay()
            flags = graph.blocks.flags
            _record(counter, lp.evals_per_attempt * n_now)  # replays call func raw
        elif comp is not None:
            if n_now == k:
                st, flags = run_compiled(comp.block, st)
            else:
                for _ in range(n_now):
                    st, flags = run_compiled(comp.block1, st)
            _record(counter, lp.evals_per_attempt * n_now)  # compiled code calls func raw
        else:
            for _ in range(n_now):
                st = attempt(lp, st) if watch is None else watch(lp, st, attempt(lp, st))
            flags = flag_values(lp, st)
        attempts += n_now
        all_done, any_uf, any_nf, steps_left = flags.tolist()  # the one sync per block
        n_est = math.ceil(steps_left) if math.isfinite(steps_left) else k
        if any_nf or any_uf:
            uf, nf = st[IDX["uf"]], st[IDX["nf"]]
            bad_rows = (nf | uf).reshape(-1)
            t_bad = st[IDX["t"]].reshape(-1)[bad_rows]
            t_now = float(t_bad.min() if d > 0 else t_bad.max())
            h_now = float(st[IDX["habs"]].reshape(-1)[bad_rows].min())
            if any_nf:
                raise blow_up_error(t_now, h_now)
            raise underflow_error(t_now, h_now, ctrl.dt_min)
        if all_done:
            break
    counts = torch.stack([st[IDX["nacc"]], st[IDX["nrej"]]]).reshape(2, R).cpu()
    nacc, nrej = counts[0], counts[1]
    # Every attempt of an unfinished row is accepted or rejected: its evaluations follow.
    nfe = (nacc + nrej) * lp.evals_per_attempt + start_evals
    if backward:
        stats.backward_accepted_steps += int(nacc.max())
        stats.backward_rejected_steps += int(nrej.max())
    else:
        stats.accepted_steps += int(nacc.max())
        stats.rejected_steps += int(nrej.max())
    if per_sample:
        stats.nfe_per_sample = nfe
    out = st[IDX["outs"]]
    if graph is not None:
        out = out.clone()  # the static buffer is overwritten by the next replay
    outs = list(out.reshape(T, *shape).unbind(0))
    final = st[IDX["Y"]]
    outs[-1] = final.clone().reshape(shape) if graph is not None else final.reshape(shape)
    return outs


def _record(counter: FlatFuncWrapper | None, n: int) -> None:
    if counter is not None:
        counter.record(n)


def _forced_times(
    ctrl: PIDController, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor | None, Tensor | None]:
    """The controller's step and jump times as ``(K,)`` tensors (a time in both is a jump),
    and the jump flags (``None`` without jump times); ``(None, None)`` without any."""
    marks = {x: False for x in ctrl.step_ts}
    marks.update({x: True for x in ctrl.jump_ts})
    if not marks:
        return None, None
    times = sorted(marks)
    stops = torch.tensor(times, dtype=dtype, device=device)
    if not ctrl.jump_ts:
        return stops, None
    return stops, torch.tensor([marks[x] for x in times], device=device)
