"""``odeint_checkpoint``: backprop through the solver's own steps with a bounded number of
stored states (recursive checkpointing, diffrax's ``RecursiveCheckpointAdjoint``).

The forward solve runs the host loop (adaptive) or the fixed-step loop without autograd and
records every accepted step (:class:`StepRecord`: times, step size, how its first stage was
obtained, which outputs it emitted). It keeps at most ``checkpoints`` states (the initial one
included), placed online because the number of steps of an adaptive solve is not known in
advance: Wang, Moin & Iaccarino's dynamic checkpointing (2009; each checkpoint has a level, a
checkpoint of lower level than a later one is dispensable). The backward pass replays the
recorded steps with the same :meth:`ExplicitRK.step` and dense output, so its gradients are
those of direct backprop through the accepted steps (no gradient through the step-size
controller, as in plain ``odeint``); each segment between stored states is reversed by the
binomial (treeverse/revolve) recursion of Griewank & Walther with the slots free at that
moment: with ``s`` free slots and ``r`` repetitions, ``C(s + r + 1, s + 1)`` steps.

A stored state is the solver's carry: the state and, for FSAL methods, the first stage of the
next step (``f(t, y)``), so a checkpoint holds two states' worth of memory for those methods.

Per-sample steps (``per_sample=True``) and ``device_loop=True`` run the eager device loop
(:mod:`deeplimits.ode._batched_step`), where one iteration is an *attempt* of every row at
once (each row with its own ``t`` and ``dt``, accepted or rejected on its own). There the
positions are attempts, and a checkpoint is the batched step's whole state tuple but the
output buffer: the batch's state ``Y``, first stage ``K1`` and error scale ``(R, M)`` each,
and per row ``t``, ``|dt|``, the controller's history, flags and counters. Every choice of an
attempt is a function of that tuple, so the backward re-runs the attempts with
:func:`attempt` itself (the same per-row step sizes, accept/reject masks and outputs, with no
per-attempt record) and differentiates exactly what direct backprop through ``odeint``
records. At every segment end the replayed per-row times are compared with the forward's
(one host read at the end): a ``func`` that is not deterministic, or changed before the
backward, raises instead of giving a gradient of other steps. The attempts after every row
finished (up to ``sync_every - 1``) change nothing and are not replayed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from deeplimits.errors import InvalidArgumentError, InvalidTypeError, SolverError
from deeplimits.ode._batched_step import FIELDS, IDX, BatchedLoop, attempt, row_func
from deeplimits.ode._checks import check_tolerances
from deeplimits.ode._dispatch import NumericOptions, Options, solve, solve_flat, split_options
from deeplimits.ode._execution import ExecutionOptions
from deeplimits.ode._fixed_loop import build_grid
from deeplimits.ode._func import FlatFuncWrapper
from deeplimits.ode._interp import emit_outputs
from deeplimits.ode._options import (
    AdaptiveOptions,
    FixedStepOptions,
    SolveStats,
    StepRecord,
)
from deeplimits.ode._solvers import ExplicitRK, ReversibleHeun, Solver, get_solver

__all__ = ["default_checkpoints", "odeint_checkpoint"]

Carry = tuple[Tensor, Tensor | None]  # (state, first stage of the next step or None)


def default_checkpoints(max_steps: int) -> int:
    """diffrax's default number of checkpoints for a step budget:
    ``floor(-1.5 + sqrt(2 max_steps + 0.25)) + 1`` (with that many, ``max_steps`` steps are
    reversed recomputing each step about twice)."""
    return math.floor(-1.5 + math.sqrt(2 * max_steps + 0.25)) + 1


def _binomial_steps(s: int, r: int) -> int:
    """Most steps reversible from a held state with ``s`` free slots, each step advanced at
    most ``r`` times before its autograd replay: ``C(s + r + 1, s + 1)``."""
    return math.comb(s + r + 1, s + 1)


def _min_advances(length: int, s: int) -> int:
    """The fewest steps advanced (without autograd) to reverse ``length`` steps from a held
    state with ``s`` free slots: ``r L - C(s + r + 1, s + 2)``, ``r`` the repetition number
    (the smallest with ``C(s + r + 1, s + 1) >= L``); Griewank & Walther, "Algorithm 799:
    revolve", ACM TOMS 26 (2000), with the held state as one of its ``s + 1`` checkpoints."""
    r = 0
    while _binomial_steps(s, r) < length:
        r += 1
    return r * length - math.comb(s + r + 1, s + 2)


# --------------------------------------------------------------------------------------------
# Forward: online placement


def wang_moin_place(positions: list[int], levels: list[int], i: int, slots: int) -> int | None:
    """Add step ``i``'s state to the checkpoints (Wang, Moin & Iaccarino 2009); returns the
    position dropped to make room, if any.

    ``positions`` (increasing, ``positions[0] == 0``: the initial state, never dropped) and
    ``levels`` are updated in place; at most ``slots`` positions are kept. With a free slot
    the state is stored with level 0; else the latest dispensable checkpoint (level lower than
    a later one's) is dropped and the state stored with level 0; else the latest checkpoint
    (the previous step) is replaced by this one, one level up.
    """
    if len(positions) < slots:
        positions.append(i)
        levels.append(0)
        return None
    if slots == 1:
        return i  # only the initial state is kept
    later = -1
    for k in range(len(positions) - 1, 0, -1):
        if levels[k] < later:
            dropped = positions.pop(k)
            levels.pop(k)
            positions.append(i)
            levels.append(0)
            return dropped
        later = max(later, levels[k])
    dropped = positions.pop()
    level = levels.pop()
    positions.append(i)
    levels.append(level + 1)
    return dropped


class _Checkpoints:
    """The checkpointed carries of a forward solve, placed online (:func:`wang_moin_place`)."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.positions = [0]
        self.levels = [0]
        self.carries: dict[int, Carry] = {}

    def _place(self, i: int, carry: Carry) -> None:
        """Offer the carry after step ``i`` (the carry at 0 is stored by the caller)."""
        dropped = wang_moin_place(self.positions, self.levels, i, self.slots)
        if dropped != i:
            self.carries[i] = carry
        if dropped is not None and dropped != i:
            del self.carries[dropped]


class _Tape(_Checkpoints):
    """The host loops' recorder: the accepted steps and the checkpointed carries."""

    def __init__(self, y0: Tensor, slots: int, fsal: bool) -> None:
        super().__init__(slots)
        self.records: list[StepRecord] = []
        self.fsal = fsal
        self.carries[0] = (y0, None)

    def __call__(self, rec: StepRecord, y1: Tensor, ks: list[Tensor]) -> None:
        self.records.append(rec)
        self._place(len(self.records), (y1, ks[-1] if self.fsal or rec.extra else None))


#: The fields of the batched step's state tuple a checkpoint holds: all but the output
#: buffer and the output and end times (constant through the solve).
_CARRIED = tuple(i for i, name in enumerate(FIELDS) if name not in ("outs", "ts", "t_end"))
_Y, _K1 = _CARRIED.index(IDX["Y"]), _CARRIED.index(IDX["K1"])


class _BatchedTape(_Checkpoints):
    """The device loop's watcher (per-sample steps, ``device_loop=True``): one position per
    attempt of the batched step (every row's try, accepted or rejected), and the
    checkpointed state tuples (every field but the output buffer: the whole batch's state,
    first stage, per-row ``t``, ``|dt|``, controller history and flags), from which
    :func:`attempt` re-runs the same attempts exactly."""

    def __init__(self, slots: int) -> None:
        super().__init__(slots)
        self.n = 0
        self.lp: BatchedLoop | None = None
        self.consts: tuple[Tensor, Tensor] | None = None  # (ts, t_end) of the state tuple
        self.last: Carry | None = None

    def __call__(
        self, lp: BatchedLoop, st0: tuple[Tensor, ...], st1: tuple[Tensor, ...]
    ) -> tuple[Tensor, ...]:
        if self.n == 0:
            self.lp = lp
            self.consts = (st0[IDX["ts"]], st0[IDX["t_end"]])
            self.carries[0] = tuple(st0[i] for i in _CARRIED)
        self.n += 1
        self.last = tuple(st1[i] for i in _CARRIED)
        self._place(self.n, self.last)
        return st1

    def useful(self) -> int:
        """Attempts until every row was done: each attempt of an unfinished row counts as
        accepted or rejected, so the most ``nacc + nrej`` of a row (the device loop runs up
        to ``sync_every - 1`` more, which change nothing)."""
        if self.last is None:
            return 0
        nacc, nrej = self.last[_CARRIED.index(IDX["nacc"])], self.last[_CARRIED.index(IDX["nrej"])]
        return int((nacc + nrej).max())


# --------------------------------------------------------------------------------------------
# Backward: replay and reversal


class _Slots:
    """A fixed pool of carry slots (rows of saved buffers, one buffer per carried field): the
    forward's checkpoints first, reused by the backward's temporary checkpoints as segments
    finish."""

    def __init__(self, bufs: tuple[Tensor | None, ...], rows: dict[int, int]) -> None:
        self.bufs = bufs
        self.rows = rows  # position -> row
        self.free = sorted(set(range(bufs[0].shape[0])) - set(rows.values()))  # type: ignore[union-attr]
        self.peak = len(rows)

    def load(self, pos: int) -> Carry:
        row = self.rows[pos]
        return tuple(None if b is None else b[row] for b in self.bufs)

    def store(self, pos: int, carry: Carry) -> None:
        row = self.free.pop()
        for b, x in zip(self.bufs, carry, strict=True):
            if b is not None and x is not None:
                b[row].copy_(x)
        self.rows[pos] = row
        self.peak = max(self.peak, len(self.rows))

    def release(self, pos: int) -> None:
        self.free.append(self.rows.pop(pos))


def _stack_carries(carries: list[Carry], like: Carry) -> tuple[Tensor | None, ...]:
    """One buffer per field ``(len(carries), *shape)``, for the fields with a tensor in
    ``like`` (of that shape; ``None``: no buffer); a carry that lacks such a field is zero
    there (the backward's own checkpoints may fill it)."""
    return tuple(
        None if x is None
        else torch.stack([torch.zeros_like(x) if c[n] is None else c[n] for c in carries])  # type: ignore[misc]
        for n, x in enumerate(like)
    )


class _Reversal:
    """Reverses a recorded solve's steps from checkpoints: the subclasses re-run step ``i``
    without autograd (:meth:`advance`) and with it (:meth:`vjp`)."""

    def __init__(self, params: list[Tensor]) -> None:
        self.params = params
        self.grads: list[Tensor | None] = [None] * len(params)

    def advance(self, i: int, carry: Carry) -> Carry:  # pragma: no cover - abstract
        raise NotImplementedError

    def vjp(self, i: int, carry: Carry, cot: Carry) -> Carry:  # pragma: no cover - abstract
        raise NotImplementedError

    def _accumulate(self, gs: Sequence[Tensor | None]) -> None:
        """Add the parameters' gradients (the last ``len(params)`` of ``gs``)."""
        for n, g in enumerate(gs[len(gs) - len(self.params):]):
            if g is not None:
                acc = self.grads[n]
                self.grads[n] = g if acc is None else acc + g

    def reverse(self, a: int, length: int, carry: Carry, cot: Carry, slots: _Slots) -> Carry:
        """The cotangent of the carry at step ``a`` from that at ``a + length``, with the
        carry at ``a`` held by the caller and the slots free now (binomial recursion).

        With ``s`` free slots and repetition number ``r`` (the smallest with
        ``C(s + r + 1, s + 1) >= length``): advance ``m`` steps, store that carry, reverse the
        right part with ``s - 1`` slots, free the slot, reverse the left part with ``s``; ``m``
        minimises the total of steps advanced (:func:`_min_advances` of both parts plus ``m``),
        so the whole reversal advances :func:`_min_advances` ``(length, s)`` steps. The right
        parts run as a loop, so the recursion depth is the repetition number, not the number
        of slots.
        """
        left: list[tuple[int, int, Carry]] = []  # (start, steps, carry) still to reverse
        while length > 1:
            s = min(len(slots.free), length - 1)
            if s == 0:
                break
            r = 1
            while _binomial_steps(s, r) < length:
                r += 1
            # Both parts keep a repetition number <= r for m in [lo, hi]; the optimum lies
            # there, but not at either end in general: take the first m that attains it.
            lo = max(1, length - _binomial_steps(s - 1, r))
            hi = min(_binomial_steps(s, r - 1), length - 1)
            m = min(range(lo, hi + 1),
                    key=lambda q: q + _min_advances(length - q, s - 1) + _min_advances(q, s))
            c = carry
            for q in range(a, a + m):
                c = self.advance(q, c)
            slots.store(a + m, c)
            del c
            left.append((a, m, carry))
            a, length, carry = a + m, length - m, slots.load(a + m)
        if length == 1:
            cot = self.vjp(a, carry, cot)
        else:
            for k in range(length - 1, -1, -1):  # no slot: from the held carry each time
                c = carry
                for q in range(a, a + k):
                    c = self.advance(q, c)
                cot = self.vjp(a + k, c, cot)
        for start, m, c0 in reversed(left):
            slots.release(start + m)
            cot = self.reverse(start, m, c0, cot, slots)
        return cot


class _Replay(_Reversal):
    """Re-runs the host loops' recorded steps (no grad, or with autograd and a
    vector-Jacobian product); the carry is ``(y, first stage of the next step or None)``."""

    def __init__(
        self, solver: ExplicitRK, records: list[StepRecord], f: Callable[[float, Tensor], Tensor],
        ts: list[float], grad_ys: Tensor, params: list[Tensor],
    ) -> None:
        self.solver, self.records, self.f, self.ts = solver, records, f, ts
        super().__init__(params)
        self.grad_ys = grad_ys
        self.cache = solver.dense_cache()
        self.d = 1.0 if ts[-1] > ts[0] else -1.0
        self.keep_k = solver.fsal

    def _step(self, i: int, y: Tensor, k1_carry: Tensor | None) -> tuple[Tensor, list[Tensor]]:
        rec = self.records[i]
        if rec.chained:
            k1 = k1_carry
        elif rec.k1 is not None:
            k1 = self.f(rec.k1, y)
        else:
            k1 = None
        y1, _, ks = self.solver.step(self.f, rec.t, y, rec.h, k1, rec.times)
        if rec.extra:
            ks = [*ks, self.f(rec.t1, y1)]
        return y1, ks

    def advance(self, i: int, carry: Carry) -> Carry:
        """Step ``i`` from its carry, without autograd."""
        with torch.no_grad():
            y1, ks = self._step(i, carry[0], carry[1])
        return y1, ks[-1] if self.keep_k or self.records[i].extra else None

    def vjp(self, i: int, carry: Carry, cot: Carry) -> Carry:
        """Step ``i`` with autograd; the cotangent of its carry from that of the next one
        (``cot``) and of the outputs it emitted. Parameter gradients accumulate."""
        rec = self.records[i]
        with torch.enable_grad():
            y = carry[0].detach().requires_grad_(True)
            k1 = carry[1].detach().requires_grad_(True) if rec.chained else None  # type: ignore[union-attr]
            y1, ks = self._step(i, y, k1)
            a_y1, a_k = cot
            roots: list[Tensor] = []
            cots: list[Tensor] = []
            outs: list[Tensor] = []

            def dense(thetas: list[float]) -> Tensor:
                return self.solver.interpolate(self.cache, y, ks, rec.h, thetas)

            end = emit_outputs(outs, self.ts, rec.j, self.d, rec.t, rec.t1, rec.h, y1, dense)
            for idx, out in zip(range(rec.j, end), outs, strict=True):
                if out is y1:
                    a_y1 = a_y1 + self.grad_ys[idx]
                else:
                    roots.append(out)
                    cots.append(self.grad_ys[idx])
            roots.append(y1)
            cots.append(a_y1)
            if a_k is not None:
                roots.append(ks[-1])
                cots.append(a_k)
            inputs = [y] + ([k1] if k1 is not None else []) + self.params
            gs = torch.autograd.grad(roots, inputs, cots, allow_unused=True)
        g_y = gs[0] if gs[0] is not None else torch.zeros_like(y)
        g_k = None
        if k1 is not None:
            g_k = gs[1] if gs[1] is not None else torch.zeros_like(k1)
        self._accumulate(gs)
        return g_y, g_k


class _BatchedReplay(_Reversal):
    """Re-runs the device loop's attempts with :func:`attempt` itself, from the checkpointed
    state tuples (the same inputs, so the same per-row step sizes, accept/reject decisions
    and outputs); the differentiable part of the carry is ``(Y, K1)`` ``(R, M)`` each."""

    def __init__(self, lp: BatchedLoop, consts: tuple[Tensor, Tensor], grad_outs: Tensor,
                 params: list[Tensor]) -> None:
        super().__init__(params)
        self.lp = lp
        self.ts, self.t_end = consts
        T, R, M = grad_outs.shape
        # The last output is the final state itself (the driver writes it): its cotangent
        # enters as the final carry's. Output 0 is y0, never written by an attempt.
        self.grad_outs = torch.cat([grad_outs[:-1], grad_outs.new_zeros((1, R, M))])
        self.outs = grad_outs.new_zeros((T, R, M))  # the attempt writes into a fresh buffer
        self.no_outs = grad_outs.new_zeros((0, R, M))  # no output buffer: nothing emitted
        #: Per-row times the forward reached at some positions (its checkpoints and the end),
        #: and whether a replay reached another (read once, at the end of the backward).
        self.known: dict[int, Tensor] = {}
        self.diverged = torch.zeros((), dtype=torch.bool, device=grad_outs.device)

    def _state(self, carry: Carry, outs: Tensor) -> tuple[Tensor, ...]:
        st: list[Tensor] = [outs] * len(FIELDS)
        for i, x in zip(_CARRIED, carry, strict=True):
            st[i] = x  # type: ignore[assignment]
        st[IDX["ts"]], st[IDX["t_end"]] = self.ts, self.t_end
        return tuple(st)

    def advance(self, i: int, carry: Carry) -> Carry:
        """Attempt ``i`` from its carry, without autograd."""
        with torch.no_grad():
            st1 = attempt(self.lp, self._state(carry, self.no_outs))
        return tuple(st1[k] for k in _CARRIED)

    def vjp(self, i: int, carry: Carry, cot: Carry) -> Carry:
        """Attempt ``i`` with autograd: the cotangent of ``(Y, K1)`` before it from that
        after it (``cot``) and of the outputs it wrote. Parameter gradients accumulate."""
        y = carry[_Y].detach().requires_grad_(True)  # type: ignore[union-attr]
        k1 = carry[_K1].detach().requires_grad_(True)  # type: ignore[union-attr]
        c = list(carry)
        c[_Y], c[_K1] = y, k1
        emit = self.outs.shape[0] > 2
        with torch.enable_grad():
            st1 = attempt(self.lp, self._state(tuple(c), self.outs if emit else self.no_outs))
            roots = [st1[IDX["Y"]], st1[IDX["K1"]]]
            cots = [cot[0], cot[1]]
            if emit:
                roots.append(st1[IDX["outs"]])
                cots.append(self.grad_outs)
            gs = torch.autograd.grad(roots, [y, k1, *self.params], cots, allow_unused=True)
        if (t_fwd := self.known.get(i + 1)) is not None:  # the end of a segment
            self.diverged = self.diverged | (st1[IDX["t"]] != t_fwd).any()
        self._accumulate(gs)
        return (torch.zeros_like(y) if gs[0] is None else gs[0],
                torch.zeros_like(k1) if gs[1] is None else gs[1])

    def first_stage_vjp(self, carry: Carry, a_k: Tensor) -> Tensor:
        """The cotangent of ``Y0`` from that of the solve's first stage ``f(t0, Y0)`` (the
        start's evaluation). Parameter gradients accumulate."""
        y = carry[_Y].detach().requires_grad_(True)  # type: ignore[union-attr]
        with torch.enable_grad():
            k = self.lp.ev(carry[_CARRIED.index(IDX["t"])], y)  # type: ignore[arg-type]
            gs = torch.autograd.grad(k, [y, *self.params], a_k, allow_unused=True)
        self._accumulate(gs)
        return torch.zeros_like(y) if gs[0] is None else gs[0]


# --------------------------------------------------------------------------------------------
# The autograd Function


@dataclass
class _Setup:
    f: FlatFuncWrapper
    ts: list[float]
    solver: ExplicitRK
    opts: FixedStepOptions | AdaptiveOptions
    exe: ExecutionOptions
    rtol: float | Tensor
    atol: float | Tensor
    checkpoints: int
    stats: SolveStats
    batched: bool = False  # the device loop (per_sample or device_loop=True)


class _CheckpointFn(torch.autograd.Function):
    """``(y0, *params) -> ys (T, *shape)``; backward replays the recorded steps (host loops)
    or attempts (device loop)."""

    @staticmethod
    def forward(ctx: Any, setup: _Setup, y0: Tensor, *params: Tensor) -> Tensor:
        tape: _Tape | _BatchedTape
        need_k = True
        if setup.batched:
            tape = _BatchedTape(setup.checkpoints)
            outs = solve_flat(setup.f, y0, setup.ts, setup.solver, setup.opts, setup.exe,
                              setup.rtol, setup.atol, setup.stats, watch=tape)
            n = tape.useful()  # later attempts change nothing: not replayed
            ctx.attempts, ctx.lp, ctx.consts = n, tape.lp, tape.consts
            if tape.last is not None:
                ctx.t_end_reached = tape.last[_CARRIED.index(IDX["t"])]
        else:
            tape = _Tape(y0, setup.checkpoints, setup.solver.fsal)
            outs = solve_flat(setup.f, y0, setup.ts, setup.solver, setup.opts, setup.exe,
                              setup.rtol, setup.atol, setup.stats, record=tape)
            n = len(tape.records)
            ctx.records = tape.records
            need_k = setup.solver.fsal or any(r.extra for r in tape.records)
        positions = [p for p in tape.positions if p <= n and p in tape.carries]
        carries = [tape.carries[p] for p in positions]
        if not carries:  # the device loop made no attempt (one output time)
            bufs: tuple[Tensor | None, ...] = ()
        else:
            like = carries[0] if setup.batched else (y0, y0 if need_k else None)
            bufs = _stack_carries(carries, like)
        ctx.setup = setup
        ctx.positions = positions
        ctx.has = tuple(b is not None for b in bufs)
        ctx.done = False
        ctx.save_for_backward(*(b for b in bufs if b is not None), *params)
        return torch.stack(outs)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_ys: Tensor) -> tuple[Tensor | None, ...]:
        setup: _Setup = ctx.setup
        if ctx.done:
            # The backward pass writes its own checkpoints into the saved buffers.
            raise InvalidArgumentError(
                "odeint_checkpoint's backward pass ran twice on one graph (retain_graph=True); "
                "solve again for a second backward, or use odeint"
            )
        ctx.done = True
        saved = list(ctx.saved_tensors)
        nb = sum(ctx.has)
        it = iter(saved[:nb])
        bufs = tuple(next(it) if h else None for h in ctx.has)
        params = saved[nb:]
        diff_idx = [i for i, p in enumerate(params) if p.requires_grad]
        diff = [params[i] for i in diff_idx]
        f = _recompute_func(setup.f, setup.stats)
        positions: list[int] = ctx.positions
        replay: _Replay | _BatchedReplay
        if setup.batched:
            n: int = ctx.attempts
            if n == 0:  # one output time: the output is y0
                return (None, grad_ys[0], *(torch.zeros_like(p) if p.requires_grad else None
                                            for p in params))
            grad_outs = grad_ys.reshape(grad_ys.shape[0], *bufs[_Y].shape[1:])  # type: ignore[union-attr]
            lp = dataclasses.replace(ctx.lp, ev=row_func(f, tuple(grad_ys.shape[1:]),
                                                         setup.exe.per_sample))
            replay = _BatchedReplay(lp, ctx.consts, grad_outs, diff)
            t_ck = bufs[_CARRIED.index(IDX["t"])]
            replay.known = {p: t_ck[k].clone() for k, p in enumerate(positions)}  # type: ignore[index]
            replay.known[n] = ctx.t_end_reached
            cot: Carry = (grad_outs[-1].clone(), torch.zeros_like(grad_outs[-1]))
        else:
            records: list[StepRecord] = ctx.records
            n = len(records)
            # Bound as the forward's loop ran it (an implicit method's Newton tolerances).
            solver = setup.solver.bind(setup.opts, setup.rtol, setup.atol, setup.stats)
            replay = _Replay(solver, records, f, setup.ts, grad_ys, diff)  # type: ignore[arg-type]
            cot = (torch.zeros_like(grad_ys[0]), None)
        slots = _Slots(bufs, {p: k for k, p in enumerate(positions)})
        first = slots.load(0)
        if positions[-1] == n and n > 0:  # the final state starts no step: its slot is free
            slots.release(n)
            positions = positions[:-1]
        for k in range(len(positions) - 1, -1, -1):
            a = positions[k]
            end = positions[k + 1] if k + 1 < len(positions) else n
            if end > a:
                cot = replay.reverse(a, end - a, slots.load(a), cot, slots)
            if a > 0:
                slots.release(a)
        if isinstance(replay, _BatchedReplay):
            if bool(replay.diverged):
                raise SolverError(
                    "odeint_checkpoint's backward re-ran the solve's attempts from stored "
                    "states and reached other times than the forward solve: func is not "
                    "deterministic (random numbers, nondeterministic kernels) or changed "
                    "between the forward and the backward pass, so the replayed steps differ; "
                    "make func give the same output for the same inputs, or use odeint"
                )
            grad_y0 = (cot[0] + replay.first_stage_vjp(first, cot[1])  # type: ignore[arg-type]
                       + grad_outs[0]).reshape(grad_ys.shape[1:])
        else:
            grad_y0 = cot[0] + grad_ys[0]  # type: ignore[operator]
        grads: list[Tensor | None] = [None] * len(params)
        for i, g in zip(diff_idx, replay.grads, strict=True):
            grads[i] = torch.zeros_like(params[i]) if g is None else g
        return (None, grad_y0, *grads)


def _recompute_func(f: FlatFuncWrapper, stats: SolveStats) -> Callable[[float, Tensor], Tensor]:
    """``func`` on the solver's state, counted as recomputation (``nfe_recompute``)."""
    raw, st = f.raw, f.state

    def call(t: float | Tensor, y: Tensor) -> Tensor:
        stats.nfe_recompute += 1
        tt = t if isinstance(t, Tensor) else torch.scalar_tensor(t, dtype=st.dtype,
                                                                   device=st.device)
        return raw(tt, y)

    return call


# --------------------------------------------------------------------------------------------
# Public function


def _check_checkpoints(checkpoints: object) -> int | None:
    if checkpoints is None:
        return None
    if isinstance(checkpoints, bool) or not isinstance(checkpoints, int) or checkpoints < 1:
        raise InvalidArgumentError(
            f"checkpoints={checkpoints!r} must be a positive int (the most states stored, the "
            "initial one included) or None for the default; e.g. checkpoints=16"
        )
    return checkpoints


def _check_execution(exe: ExecutionOptions) -> ExecutionOptions:
    for name in ("compile", "cuda_graph"):
        if getattr(exe, name):
            raise InvalidArgumentError(
                f"options {name}={getattr(exe, name)!r} is not supported by odeint_checkpoint "
                "(its backward replays the loop's attempts eagerly, from stored states); drop "
                "it, or use odeint or odeint_adjoint"
            )
    return exe


def odeint_checkpoint(
    func: Callable[..., Any],
    y0: Tensor | tuple[Tensor, ...],
    t: Tensor,
    *,
    rtol: float | tuple[float, ...] = 1e-7,
    atol: float | tuple[float, ...] = 1e-9,
    method: str | Solver = "dopri5",
    options: Options = None,
    execution: ExecutionOptions | None = None,
    checkpoints: int | None = None,
    params: Sequence[Tensor] | None = None,
    stats: SolveStats | None = None,
) -> Tensor | tuple[Tensor, ...]:
    """Like :func:`odeint`, with the gradients of direct backprop through the accepted steps
    computed from at most ``checkpoints`` stored states (recursive checkpointing).

    The forward solve runs without autograd and records the accepted steps (times and sizes);
    the backward pass re-runs them from stored states, the same steps and the same dense
    output, so the gradients equal those of ``odeint(...)`` followed by ``.backward()`` up to
    round-off, with no gradient through the step-size controller. Unlike
    :func:`odeint_adjoint` these are the gradients of the discrete solve, also where the
    continuous adjoint, integrated backwards, blows up (fast-decaying modes).

    Memory: at most ``checkpoints`` carries (the state, plus the next first stage for FSAL
    methods) and one step's graph, whatever the number of steps; the step records are a few
    floats per step. Time: each step is re-run about ``r`` times without autograd and once
    with it, ``r`` the smallest repetition number with ``C(c + r, c) >= steps``
    (``SolveStats.nfe_recompute`` counts those evaluations).

    ``y0``, ``t``, ``rtol``, ``atol``, ``method``, ``options``, ``execution`` and ``stats`` are
    as in :func:`odeint`. Methods: the explicit Runge-Kutta methods, fixed and adaptive
    (``reversible_heun``: its own exact O(1)-memory backward, ``checkpoints`` unused). The
    solve runs the host loop on every device (also for CUDA states, where ``odeint`` picks
    the device loop), unless ``per_sample=True`` or ``device_loop=True`` is asked for: then
    the eager device loop (dopri5, tsit5, bosh3; each row its own steps with ``per_sample``,
    2-D ``t`` included), checkpointed per attempt of the whole batch; a checkpoint then holds
    the batch's state, first stage and error scale and a few numbers per row (``t``,
    ``|dt|``, controller history, flags). ``cuda_graph=True`` and ``compile=True`` are not
    supported (the replay runs eagerly).

    Args:
        func: right-hand side; an ``nn.Module`` unless ``params`` is given.
        checkpoints: most states stored at once, the initial one included (``>= 1``); with
            at least as many as steps every step's state is stored. Default: diffrax's
            ``floor(-1.5 + sqrt(2 max_steps + 0.25)) + 1`` from the step budget
            (``max_num_steps`` for adaptive methods, the grid's steps for fixed ones).
        params: tensors to differentiate (default ``tuple(func.parameters())``); tensors a
            plain function closes over cannot be seen, so give them here.

    Returns:
        As ``odeint`` (the states at the times of ``t``).

    Raises:
        InvalidTypeError: ``func`` is not an ``nn.Module`` and no ``params`` (besides the
            errors of :func:`odeint`).
        InvalidArgumentError: bad ``checkpoints`` or an unsupported execution option.
        SolverError: (backward, device loop) the re-run attempts reached other times than
            the forward solve: ``func`` is not deterministic or changed in between.

    Caveats: double backward is not supported. Gradients with respect to ``t`` are those of
    :func:`odeint` (the exact solution's ``f`` at the output times). The backward calls
    ``func`` again on the stored states (the device loop's replay decides the steps again
    from them), so ``func`` must give the same output for the same inputs.
    """
    solver = get_solver(method)
    check_tolerances(rtol, atol)
    c = _check_checkpoints(checkpoints)
    if params is None:
        if not isinstance(func, nn.Module):
            raise InvalidTypeError(
                f"odeint_checkpoint needs func to be an nn.Module (got {type(func).__name__}) "
                "or params=(tensors to differentiate,): the backward pass re-runs func and "
                "cannot see tensors a plain function closes over"
            )
        params = tuple(func.parameters())
    params = tuple(params)
    for p in params:
        if not isinstance(p, Tensor):
            raise InvalidTypeError(f"params must be tensors, got {type(p).__name__}")
    stats = stats if stats is not None else SolveStats()
    opts, exe = split_options(solver, options, execution)
    if isinstance(solver, ReversibleHeun):
        return solve(func, y0, t, solver, opts, exe, rtol, atol, stats, params)
    exe = _check_execution(exe)
    batched = solver.adaptive and (exe.per_sample or exe.device_loop is True)
    if batched:
        # The eager device loop, watched attempt by attempt (no captured graphs).
        exe = dataclasses.replace(exe, cuda_graph=False)
    elif solver.adaptive:
        # The host loop by default on every device (a CUDA state would otherwise pick the
        # device loop).
        exe = dataclasses.replace(exe, device_loop=False)

    def flat_solve(f: FlatFuncWrapper, y_start: Tensor, ts: list[float], opts: NumericOptions,
                   rtol: float | Tensor, atol: float | Tensor) -> list[Tensor]:
        # opts as solve resolved them (a grid_constructor's grid)
        if c is not None:
            slots = c
        elif isinstance(opts, AdaptiveOptions):
            slots = default_checkpoints(opts.max_num_steps)
        else:
            slots = default_checkpoints(len(build_grid(ts, opts)) - 1)
        setup = _Setup(f=f, ts=ts, solver=solver, opts=opts, exe=exe, rtol=rtol,  # type: ignore[arg-type]
                       atol=atol, checkpoints=slots, stats=stats, batched=batched)
        ys = _CheckpointFn.apply(setup, y_start, *params)
        return list(ys.unbind(0))

    return solve(func, y0, t, solver, opts, exe, rtol, atol, stats, flat_solve=flat_solve)
