"""The batched step: the body of the device loop, every decision a tensor op.

A solve is a tuple of tensors (:data:`FIELDS`); :func:`attempt` makes one attempted step of
every unfinished row and returns the updated tuple, with no host syncs:

- time ``t``, the step size ``|dt|``, the last error ratios and the "done" flag have shape
  ``(rows, 1)``; accept/reject is ``torch.where``; the controller's own formula
  (:meth:`PIDController.factor`) runs on those tensors, with its rules after a rejection and
  for NaN/inf trials;
- outputs are written into a ``(T, rows, M)`` buffer: after each attempt every output time in
  ``(t, t1]`` of an accepted row gets the solver's interpolant (``y1`` itself at ``t1``);
- attempts after a row has finished change nothing for that row (they are still computed).

``rows`` is 1 for an ordinary solve (the whole state is one row: exactly the host loop's norm)
and the batch size with ``per_sample=True`` (each row has its own ``t``, ``dt``, error norm and
accept/reject, as torchode; Lienen & Günnemann 2022, "torchode: A Parallel ODE Solver for
PyTorch"). The same functions run eagerly, inside captured graphs and compiled by
``torch.compile`` (:mod:`deeplimits.ode._device_loop` drives them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from deeplimits.ode._capture import Runner, Starter
from deeplimits.ode._checks import MAX_BAD_IN_A_ROW
from deeplimits.ode._controllers import RATIO_FLOOR, PIDController
from deeplimits.ode._norm import ErrorNorm, initial_step
from deeplimits.ode._solvers import ExplicitRK

__all__ = [
    "FIELDS",
    "IDX",
    "BatchedLoop",
    "attempt",
    "attempts",
    "dense_coefficients",
    "dense_rows",
    "flag_values",
    "loop_constants",
    "row_func",
    "start",
    "starter",
    "step_plan",
]



@dataclass
class BatchedLoop:
    """Constants of one solve (everything the attempt body needs besides the state)."""

    solver: ExplicitRK
    ev: Callable[[Tensor, Tensor], Tensor]  # (t (R,1), Y (R,M)) -> (R,M)
    norm: ErrorNorm
    ctrl: PIDController
    d: float
    coef: Tensor  # (P, S) dense-output coefficients
    powers: Tensor  # (P,) 1..P
    c_row: Tensor  # (S,) the nodes c
    #: The controller's step and jump times ``(K,)`` and which are jumps ``(K,)``, or ``None``.
    stops: Tensor | None = None
    jumps: Tensor | None = None

    @property
    def evals_per_attempt(self) -> int:
        # FSAL: the first stage is the last one's; a jump time costs a fresh first stage.
        return self.solver.tableau.num_stages - 1 + (self.jumps is not None)


# State tuple layout (all tensors; functional updates, so autograd can record them).
FIELDS = (
    "t", "habs", "Y", "K1", "prev", "prev2", "s0", "done", "bad", "nacc", "nrej", "uf", "nf",
    "outs", "ts", "t_end",
)
IDX = {name: i for i, name in enumerate(FIELDS)}


def attempt(lp: BatchedLoop, st: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """One attempted step of every unfinished row; returns the updated state tuple."""
    t, habs, Y, K1, prev, prev2, s0, done, bad, nacc, nrej, uf, nf, outs, ts, t_end = st
    d, ctrl, norm = lp.d, lp.ctrl, lp.norm
    active = ~done  # (R, 1)
    h, last, stop, at_jump, times = step_plan(lp, t, habs, t_end)
    Y1, err, ks = lp.solver.step(lp.ev, t, Y, h, K1, times=times)
    if err is None:  # pragma: no cover - the dispatcher sends only adaptive solvers here
        raise RuntimeError("internal error: adaptive tableau without error weights")
    with torch.no_grad():
        s1 = norm.scale(Y1)
        ratio = norm.ratio(err, s0, s1, Y1)  # (R, 1)
        finite = torch.isfinite(ratio)
        ok = finite & ctrl.accept(ratio <= 1.0, h.abs())  # NaN/inf: never accepted
        acc = ok & active
        rej = active & ~ok
        factor = ctrl.factor(ratio, prev, prev2, ok, finite, lp.solver.error_order)
        hnew = ctrl.clip(h.abs() * factor)
        t1 = torch.where(last, stop, t + h)  # (R, 1)
    if outs.shape[0] > 2:
        outs = _emit(lp, outs, ts, t, t1, h, acc, Y, Y1, ks)
    # (The last output is the final state itself: the driver writes it, so a solve with
    # t = [t0, t1] needs no interpolation kernels at all.)
    t = torch.where(acc, t1, t)
    Y = torch.where(acc, Y1, Y)
    K1 = torch.where(acc, ks[-1], K1)
    if at_jump is not None:  # the right limit starts the next step after a jump
        # Every row evaluates (no branch in the graph); rows not at a jump at t1 itself, so
        # that f is never asked for a time past t_end (their value is discarded).
        right = lp.ev(torch.where(at_jump, torch.nextafter(t1, t1 + d), t1), Y1)
        K1 = torch.where(acc & at_jump, right, K1)
    with torch.no_grad():
        s0 = torch.where(acc, s1, s0)
        if ctrl.dcoeff:
            prev2 = torch.where(acc, prev, prev2)
        prev = torch.where(acc, ratio.clamp(min=RATIO_FLOOR), prev)
        habs = torch.where(active, hnew, habs)
        ends = last if lp.stops is None else last & (stop == t_end)  # the step reaches t_end
        done = done | (acc & ends)
        bad = torch.where(active, torch.where(finite, 0, bad + 1), bad)
        nacc = nacc + acc.long()
        nrej = nrej + rej.long()
        still = ~done
        under = still & (habs < ctrl.smallest_step(t))
        uf = uf | (under & (bad == 0))
        nf = nf | (under & (bad > 0)) | (still & (bad > MAX_BAD_IN_A_ROW))
    return (t, habs, Y, K1, prev, prev2, s0, done, bad, nacc, nrej, uf, nf, outs, ts, t_end)


def step_plan(
    lp: BatchedLoop, t: Tensor, habs: Tensor, t_end: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, list[Tensor]]:
    """The attempt's step of each row from ``t`` with ``|dt| = habs`` ``(R, 1)``: the signed
    size ``h``, whether it ends at the row's next stop (``last``), the stop, whether that is
    a jump (``None`` without jump times) and the stage times (one ``(R, 1)`` per stage).

    Written once for :func:`attempt` and for re-running a step exactly (the per-sample event
    search re-runs the steps that hold a crossing)."""
    d = lp.d
    stop, jump = _next_stop(lp, t, t_end)  # (R, 1): where this row's step must end
    remaining = (stop - t) * d  # (R, 1), >= 0
    # The step ends at the stop when t + dt reaches it: the host loop's test, rounding
    # included (``habs >= remaining`` misses a t + dt that rounds onto the stop, which then
    # costs a zero-length step).
    last = (t + d * habs - stop) * d >= 0
    h = torch.where(last, remaining, habs) * d  # (R, 1) signed
    tst = torch.addcmul(t, h, lp.c_row)  # (R, S): every stage time in one kernel
    at_jump = None
    if jump is not None:
        # At a jump the stages at the jump time see its left limit (one ulp before it).
        at_jump = last & jump
        tst = torch.where(at_jump & (lp.c_row == 1.0), torch.nextafter(stop, t), tst)
    return h, last, stop, at_jump, [tst[:, i : i + 1] for i in range(lp.c_row.shape[0])]


def dense_coefficients(lp: BatchedLoop, ks: list[Tensor], h: Tensor) -> Tensor:
    """``(P, R, M)``: the coefficients of ``theta^1..theta^P`` of each row's interpolant
    (the host loops' order of operations, ``_interp.dense_eval``: ``(coef @ K) * h``)."""
    return torch.tensordot(lp.coef, torch.stack(ks), dims=1) * h


def dense_rows(lp: BatchedLoop, Y: Tensor, C: Tensor, theta: Tensor) -> Tensor:
    """States ``(T, R, M)`` at fractions ``theta`` ``(T, R, 1)`` of each row's step from
    ``Y`` ``(R, M)`` (``C`` from :func:`dense_coefficients`)."""
    return Y + torch.einsum("trp,prm->trm", theta.pow(lp.powers), C)


def _next_stop(lp: BatchedLoop, t: Tensor, t_end: Tensor) -> tuple[Tensor, Tensor | None]:
    """Per row the next time a step must end at (a step or jump time ahead, else ``t_end``)
    and whether it is a jump (``None`` without jump times)."""
    if lp.stops is None:
        return t_end, None
    d = lp.d
    ahead = (d * (lp.stops - t) > 0) & (d * (t_end - lp.stops) > 0)  # (R, K)
    key = torch.where(ahead, lp.stops * d, math.inf)  # (R, K): smallest is the next
    first, idx = key.min(dim=1, keepdim=True)  # (R, 1)
    has = torch.isfinite(first)
    stop = torch.where(has, first * d, t_end)  # (R, 1)
    if lp.jumps is None:
        return stop, None
    return stop, has & lp.jumps[idx]


def _emit(
    lp: BatchedLoop, outs: Tensor, ts: Tensor, t: Tensor, t1: Tensor, h: Tensor, acc: Tensor,
    Y: Tensor, Y1: Tensor, ks: list[Tensor],
) -> Tensor:
    """Write the output times in ``(t, t1]`` of accepted rows into ``outs`` ``(T, R, M)``:
    the solver's interpolant, or ``y1`` itself at ``t1``."""
    d = lp.d
    with torch.no_grad():
        tsb = ts.view(-1, 1, 1) if ts.ndim == 1 else ts.t().unsqueeze(-1)  # (T, 1|R, 1)
        in_step = (d * (tsb - t) > 0) & (d * (tsb - t1) <= 0) & acc  # (T, R, 1)
        # Zero outside the step: finished rows attempt h = 0, and an inf/NaN theta would turn
        # the masked-out values' zero gradients into NaN in backward.
        theta = torch.where(in_step, (tsb - t) / torch.where(h == 0, 1.0, h), 0.0)  # (T, R, 1)
        at_end = tsb == t1  # (T, R, 1)
    vals = dense_rows(lp, Y, dense_coefficients(lp, ks, h), theta)  # (T, R, M)
    vals = torch.where(at_end, Y1, vals)
    return torch.where(in_step, vals, outs)


def start(
    lp: BatchedLoop, Y0: Tensor, ts_dev: Tensor, rows_t: bool, first_step: float | None
) -> tuple[tuple[Tensor, ...], int]:
    """The state tuple at the start of a solve, and the evaluations it took, with tensor ops
    only (no host syncs: the same code runs eagerly and inside the start graph).

    Args:
        Y0: ``(R, M)`` initial state.
        ts_dev: ``(T,)`` output times, or ``(R, T)`` with ``rows_t`` (one row per batch row).
    """
    R, M = Y0.shape
    T = ts_dev.shape[-1]
    if rows_t:
        t0, t_end = ts_dev[:, :1].clone(), ts_dev[:, -1:].clone()  # (R, 1)
    else:
        t_end = ts_dev[-1:].reshape(1, 1).expand(R, 1).clone()  # (R, 1)
        t0 = ts_dev[:1].reshape(1, 1).expand(R, 1).clone()  # (R, 1)
    span = (t_end - t0).abs()  # (R, 1)
    F0 = lp.ev(t0, Y0)  # (R, M); on the eager path the wrapper checks func's output here
    if first_step is not None:
        habs = torch.full((R, 1), first_step, dtype=Y0.dtype, device=Y0.device)
        evals = 1
    else:
        habs = initial_step(lp.ev, t0, Y0, F0, lp.d, lp.solver.error_order, lp.norm,
                            span)
        evals = 2
    habs = lp.ctrl.clip(habs)
    with torch.no_grad():
        s0 = lp.norm.scale(Y0)
    zeros_i = torch.zeros((R, 1), dtype=torch.long, device=Y0.device)
    false = torch.zeros((R, 1), dtype=torch.bool, device=Y0.device)
    ones = torch.ones((R, 1), dtype=Y0.dtype, device=Y0.device)
    outs = torch.cat([Y0.unsqueeze(0), Y0.new_zeros((T - 1, R, M))])  # (T, R, M)
    st = (
        t0, habs, Y0, F0, ones, ones.clone(), s0, false.clone(), zeros_i.clone(),
        zeros_i.clone(), zeros_i.clone(), false.clone(), false.clone(), outs, ts_dev, t_end,
    )
    return st, evals


def attempts(lp: BatchedLoop, n: int) -> Runner:
    """``n`` attempts, then the flags (the body of a graph block and of a compiled block)."""

    def run(st: tuple[Tensor, ...]) -> tuple[tuple[Tensor, ...], Tensor]:
        for _ in range(n):
            st = attempt(lp, st)
        return st, flag_values(lp, st)

    return run


def starter(lp: BatchedLoop, rows_t: bool, first_step: float | None) -> Starter:
    """The solve's start as a function of ``(Y0, ts)`` only."""

    def run(Y0: Tensor, ts: Tensor) -> tuple[Tensor, ...]:
        return start(lp, Y0, ts, rows_t, first_step)[0]

    return run


def flag_values(lp: BatchedLoop, st: tuple[Tensor, ...]) -> Tensor:
    """``(4,)``: all rows done, any underflow, any NaN failure, most steps left (estimated
    from the next step size), in the state's dtype; read with one host sync."""
    with torch.no_grad():
        done, uf, nf = st[IDX["done"]], st[IDX["uf"]], st[IDX["nf"]]
        t, habs, t_end = st[IDX["t"]], st[IDX["habs"]], st[IDX["t_end"]]
        left = torch.where(done, 0.0, (t_end - t) * lp.d / habs).max()
        dt = left.dtype
        return torch.stack([done.all().to(dt), uf.any().to(dt), nf.any().to(dt), left])


def row_func(
    call: Callable[[Tensor, Tensor], Tensor], shape: tuple[int, ...], per_sample: bool
) -> Callable[[Tensor, Tensor], Tensor]:
    """``call`` (on states of ``shape``) as the loop's ``ev``: times ``(R, 1)`` and states
    ``(R, M)``, with ``R`` the batch (per-sample) or 1."""
    R = shape[0] if per_sample else 1
    M = math.prod(shape) // R if R else 0

    def ev(t: Tensor, Y: Tensor) -> Tensor:
        targ = t.reshape(R) if per_sample else t.reshape(())
        return call(targ, Y.reshape(shape)).reshape(R, M)

    return ev


_CONSTANTS: dict[tuple[Any, ...], tuple[Tensor, Tensor, Tensor]] = {}


def loop_constants(
    solver: ExplicitRK, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """``coef, powers, c_row`` of :class:`BatchedLoop`, built once per tableau, dtype and
    device (each build is a host-to-device copy)."""
    tableau = solver.tableau
    key = (tableau, dtype, str(device))
    hit = _CONSTANTS.get(key)
    if hit is None:
        hit = (
            torch.tensor(tableau.dense, dtype=dtype, device=device),
            torch.arange(1, len(tableau.dense) + 1, dtype=dtype, device=device),
            torch.tensor(tableau.c, dtype=dtype, device=device),
        )
        _CONSTANTS[key] = hit
    return hit
