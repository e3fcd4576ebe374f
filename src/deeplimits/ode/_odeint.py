"""``odeint``: fixed-step and adaptive explicit Runge-Kutta solves (torchdiffeq-compatible API)."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from deeplimits.errors import (
    InvalidArgumentError,
    InvalidTypeError,
    NonFiniteStateError,
    UnknownNameError,
)
from deeplimits.ode._checks import (
    FlatFuncWrapper,
    FlatState,
    blow_up_error,
    check_finite,
    check_t,
    check_tolerances,
    max_steps_error,
    step_nonfinite_error,
    underflow_error,
)
from deeplimits.ode._controller import DEFAULT_CONTROLLER
from deeplimits.ode._device_loop import FIXED_CHUNK, FixedCompiled, fixed_compiled
from deeplimits.ode._interp import DenseCache, dense_eval
from deeplimits.ode._options import (
    AdaptiveOptions,
    FixedStepOptions,
    ReversibleHeunOptions,
    SolveStats,
    grid_to_floats,
    parse_options,
)
from deeplimits.ode._stepper import FlatFunc, rk_step
from deeplimits.ode._tableaux import TABLEAUX, ButcherTableau

__all__ = ["ADAPTIVE_METHODS", "FIXED_METHODS", "METHODS", "odeint"]

FIXED_METHODS = ("euler", "midpoint", "rk4")
ADAPTIVE_METHODS = ("bosh3", "dopri5", "tsit5")
METHODS = (*FIXED_METHODS, *ADAPTIVE_METHODS, "reversible_heun")

Options = Mapping[str, Any] | FixedStepOptions | AdaptiveOptions | None


def check_method(method: str) -> None:
    if method not in METHODS:
        raise UnknownNameError("method", method, METHODS)


def check_per_sample(state: FlatState) -> None:
    """``per_sample=True`` needs one tensor ``y0`` with a batch dimension."""
    if state.is_tuple or len(state.shapes[0]) == 0:
        raise InvalidArgumentError(
            "options per_sample=True needs y0 to be one tensor of shape (batch, ...), got "
            + ("a tuple" if state.is_tuple else "a 0-d tensor")
            + "; stack the parts into one tensor or use per_sample=False"
        )


def check_t_rows(t: Tensor, state: FlatState) -> list[list[float]]:
    """``t`` of shape ``(batch, T)`` for ``per_sample``: each row strictly monotonic, all rows in
    one direction; returns the rows as floats (one host transfer)."""
    shape = state.shapes[0]
    if not t.is_floating_point() or t.dtype != state.dtype or t.device != state.device:
        raise InvalidTypeError(
            f"t must be a floating tensor like y0 ({state.dtype} on {state.device}), got "
            f"{t.dtype} on {t.device}; use t.to(y0)"
        )
    if t.shape[0] != shape[0] or t.shape[1] == 0:
        raise InvalidArgumentError(
            f"2-D t must have shape (batch, T) = ({shape[0]}, T >= 1) for per_sample=True, "
            f"got {tuple(t.shape)}"
        )
    rows = t.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(rows).all()):
        raise InvalidArgumentError("t contains NaN or inf")
    if rows.shape[1] >= 2:
        dif = torch.diff(rows, dim=1)
        inc, dec = bool((dif > 0).all()), bool((dif < 0).all())
        if not (inc or dec):
            raise InvalidArgumentError(
                "every row of 2-D t must be strictly increasing (or every row strictly "
                "decreasing); sort each row and remove duplicates"
            )
    return rows.tolist()


def options_for(method: str, options: Any) -> FixedStepOptions | AdaptiveOptions:
    """Parse ``options`` with the options class of ``method``."""
    check_method(method)
    if method in ADAPTIVE_METHODS:
        return parse_options(AdaptiveOptions, options, method)
    if method == "reversible_heun":
        return parse_options(ReversibleHeunOptions, options, method)
    return parse_options(FixedStepOptions, options, method)


def build_grid(ts: list[float], opts: FixedStepOptions) -> list[float]:
    """Step times from ``t[0]`` to ``t[-1]`` for a fixed-step solve (both endpoints included)."""
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


def _emit(
    outs: list[Tensor],
    ts: list[float],
    j: int,
    d: float,
    t: float,
    t1: float,
    h: float,
    y: Tensor,
    y1: Tensor,
    dense: Callable[[list[float]], Tensor],
) -> int:
    """Append the states at output times in ``(t, t1]``; returns the next output index."""
    n = len(ts)
    k = j
    while k < n and d * (ts[k] - t1) < 0:
        k += 1
    if k > j:
        thetas = [(ts[i] - t) / h for i in range(j, k)]
        outs.extend(dense(thetas).unbind(0))
    if k < n and ts[k] == t1:
        outs.append(y1)
        k += 1
    return k


def solve_fixed(
    f: FlatFunc,
    y0: Tensor,
    ts: list[float],
    tableau: ButcherTableau,
    opts: FixedStepOptions,
    stats: SolveStats,
) -> list[Tensor]:
    """Fixed-step solve on ``build_grid``; outputs between grid points by cubic Hermite.

    The NaN/inf check of each new state syncs with the host every step on CPU (cheap there);
    on an accelerator the per-step flags are read every 16 steps (and at the end), so the
    device queue never drains: a failure is then reported for the first bad step all the same.
    With ``opts.compile`` runs of equal steps without an output time inside them go through
    compiled chunks (:func:`_compiled_run`).
    """
    grid = build_grid(ts, opts)
    lazy = y0.device.type not in _EAGER_CHECK_DEVICES
    pending: list[tuple[float, float, Tensor]] = []
    last_i = len(grid) - 2
    d = 1.0 if ts[-1] > ts[0] else -1.0
    cache = DenseCache(tableau)
    outs: list[Tensor] = [y0]
    j = 1
    n = len(ts)
    y = y0
    # The first stage of the first step, here: the wrapper checks func's output on it, and the
    # remaining evaluations go through its lean call.
    k1: Tensor | None = f(grid[0], y0)
    comp = fixed_compiled(f, tableau, y0) if opts.compile else None
    f = _lean(f)
    i = -1
    while i < last_i:
        i += 1
        if comp is not None and k1 is None:
            steps = _uniform_run(grid, i, ts[j] if j < n else None, d)
            if steps:
                if pending:
                    _check_pending(pending)  # the eager steps before, in order
                y = _compiled_run(comp, grid, i, steps, y, tableau, stats)
                i += steps - 1
                if j < n and ts[j] == grid[i + 1]:
                    outs.append(y)
                    j += 1
                continue
        t, t1 = grid[i], grid[i + 1]
        h = t1 - t
        y1, _, ks = rk_step(tableau, f, t, y, h, k1)
        stats.accepted_steps += 1
        if lazy:
            pending.append((t1, h, torch.isfinite(y1).all()))
            if len(pending) >= 16 or i == last_i:
                _check_pending(pending)
        else:
            check_finite(y1, t1, h)
        k1 = ks[-1] if tableau.fsal else None
        if j >= n or d * (ts[j] - t1) > 0:
            y = y1  # no output time in (t, t1]
            continue
        if d * (ts[j] - t1) < 0:
            # Interior output times need f(t1, y1); it is reused as the next step's k1.
            if not tableau.fsal:
                k1 = f(t1, y1)
                ks = [*ks, k1]
            stages = ks

            def dense(thetas: list[float], y=y, stages=stages, h=h) -> Tensor:
                return dense_eval(cache, y, stages, h, thetas)

        else:
            dense = _no_dense
        j = _emit(outs, ts, j, d, t, t1, h, y, y1, dense)
        y = y1
    return outs


#: Devices whose fixed-step loop checks each new state for NaN/inf at once (one sync per step).
_EAGER_CHECK_DEVICES: tuple[str, ...] = ("cpu",)


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
    tableau: ButcherTableau, stats: SolveStats,
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
    stats.nfe_forward += steps * tableau.num_stages  # compiled code runs no Python per call
    return y


def _check_pending(pending: list[tuple[float, float, Tensor]]) -> None:
    """Read the queued finiteness flags with one sync; raise for the first bad step."""
    flags = torch.stack([p[2] for p in pending]).tolist()
    for (t1, h, _), ok in zip(pending, flags, strict=True):
        if not ok:
            raise step_nonfinite_error(t1, h)
    pending.clear()


def _lean(f: FlatFunc) -> FlatFunc:
    """The wrapper's lean call once its first output is checked (else ``f`` itself)."""
    return f.fast() if isinstance(f, FlatFuncWrapper) else f


def _no_dense(thetas: list[float]) -> Tensor:
    raise RuntimeError("internal error: dense output requested without stages")  # unreachable


def _initial_step(
    f: FlatFunc, t0: float, y0: Tensor, f0: Tensor, d: float, order: int, scale: Tensor,
    span: float, norm_dims: int | None,
) -> float:
    """Hairer, Norsett & Wanner (1993), sec. II.4 starting step (one extra evaluation).

    ``scale`` is ``atol + rtol * |y0|`` over the normed entries (the error norm's own ``s0``).
    Not differentiated (like torchdiffeq): runs under ``no_grad``.
    """
    with torch.no_grad():
        y0n, f0n = (y0, f0) if norm_dims is None else (y0[:norm_dims], f0[:norm_dims])
        n = max(y0n.numel(), 1)
        d0, d1 = (
            x / math.sqrt(n)
            for x in torch.stack(
                [torch.linalg.vector_norm(y0n / scale), torch.linalg.vector_norm(f0n / scale)]
            ).tolist()
        )
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        h0 = min(h0, span)
        y1 = torch.add(y0, f0, alpha=d * h0)
        f1 = f(t0 + d * h0, y1)
        f1n = f1 if norm_dims is None else f1[:norm_dims]
        d2 = float(torch.linalg.vector_norm((f1n - f0n) / scale)) / math.sqrt(n) / h0
    if not math.isfinite(d2):
        return h0
    if max(d1, d2) <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / (order + 1))
    return min(100 * h0, h1, span)


class _HostNorm:
    """The scaled RMS error of the host loop with few kernels per step.

    ``scale = atol + rtol * max(|y0|, |y1|)`` is computed as ``max(s0, s1)`` with
    ``s = atol + rtol * |y|``, and ``s1`` of an accepted step is the next step's ``s0`` (one
    ``abs`` per step instead of two). A NaN/inf in ``y1`` makes the ratio NaN (folded into the
    norm, so one host sync per step tests both).
    """

    def __init__(
        self, y0: Tensor, rtol: float, atol: float, norm_dims: int | None
    ) -> None:
        self.rtol, self.atol, self.norm_dims = rtol, atol, norm_dims
        n = y0.numel() if norm_dims is None else norm_dims
        self.inv_sqrt_n = 1.0 / math.sqrt(max(n, 1))
        with torch.no_grad():
            self.s0 = self.scale(y0)
        self.zero = torch.zeros((), dtype=y0.dtype, device=y0.device)

    def scale(self, y: Tensor) -> Tensor:
        yn = y if self.norm_dims is None else y.reshape(-1)[: self.norm_dims]
        return yn.abs().mul_(self.rtol).add_(self.atol)

    def ratio(self, err: Tensor, y1: Tensor) -> tuple[float, Tensor]:
        """``(ratio, s1)``; call under ``no_grad`` when the stages carry a graph."""
        s1 = self.scale(y1)
        if self.norm_dims is None:
            q = err / torch.maximum(self.s0, s1)
            q.addcmul_(y1, self.zero)  # + 0 * y1: NaN wherever y1 is NaN/inf
            return float(torch.linalg.vector_norm(q)) * self.inv_sqrt_n, s1
        q = err.reshape(-1)[: self.norm_dims] / torch.maximum(self.s0, s1)
        r = torch.linalg.vector_norm(q) + y1.sum() * 0.0
        return float(r) * self.inv_sqrt_n, s1


def solve_adaptive(
    f: FlatFunc,
    y0: Tensor,
    ts: list[float],
    tableau: ButcherTableau,
    opts: AdaptiveOptions,
    rtol: float,
    atol: float,
    stats: SolveStats,
    norm_dims: int | None = None,
    backward: bool = False,
) -> list[Tensor]:
    """Adaptive solve with an embedded pair, PI control and the method's dense output.

    Steps are not shortened to hit output times (so the number of evaluations does not depend
    on how many are asked for), only to end exactly at ``ts[-1]``. Runs the host loop (one
    sync per step) or, per ``opts.device_loop``/``opts.per_sample``, the device-resident loop
    of :mod:`deeplimits.ode._device_loop` (same controller, same error norm, same outputs).
    """
    from deeplimits.ode._device_loop import solve_adaptive_device, use_device_loop

    if use_device_loop(opts, y0):
        return solve_adaptive_device(
            f, y0, ts, tableau, opts, rtol, atol, stats, norm_dims, backward
        )
    ctrl = opts.controller if opts.controller is not None else DEFAULT_CONTROLLER
    err_order = int(tableau.error_order or tableau.order) + 1
    t_end = ts[-1]
    d = 1.0 if t_end > ts[0] else -1.0
    span = abs(t_end - ts[0])
    cache = DenseCache(tableau)
    t = ts[0]
    y = y0
    k1: Tensor | None = f(t, y)
    f = _lean(f)
    norm = _HostNorm(y0, rtol, atol, norm_dims)
    if opts.first_step is not None:
        h_abs = float(opts.first_step)
    else:
        h_abs = _initial_step(f, t, y, k1, d, tableau.order, norm.s0, span, norm_dims)
    if ctrl.dt_max is not None:
        h_abs = min(h_abs, ctrl.dt_max)
    # Step control is not differentiated: skip the no_grad context when nothing records.
    no_grad = torch.no_grad if torch.is_grad_enabled() else contextlib.nullcontext
    fsal = tableau.fsal
    outs: list[Tensor] = [y0]
    j = 1
    n = len(ts)
    prev_ratio = 1.0
    steps = 0
    bad_in_a_row = 0
    eps8 = 8 * 2.220446049250313e-16
    while j < n:
        if steps >= opts.max_num_steps:
            raise max_steps_error(opts.max_num_steps, t, repr(t_end))
        steps += 1
        last = d * (t + d * h_abs - t_end) >= 0
        h = (t_end - t) if last else d * h_abs
        y1, err, ks = rk_step(tableau, f, t, y, h, k1)
        with no_grad():
            ratio, s1 = norm.ratio(err, y1)  # type: ignore[arg-type]  # the one sync per step
        if ratio != ratio or ratio == math.inf:
            # NaN/inf in the trial state: shrink hard; a real blow-up fails after a few tries.
            bad_in_a_row += 1
            if bad_in_a_row > 10:
                raise NonFiniteStateError(
                    f"the ODE state became NaN or inf after t={t!r} (tried dt down to {h!r}); "
                    "the solution may blow up there, or func returns NaN/inf"
                )
            factor = ctrl.factor_min
            accepted = False
        else:
            bad_in_a_row = 0
            accepted = ratio <= 1.0
            factor = ctrl.factor(ratio, prev_ratio, accepted, err_order)
        if accepted:
            t1 = t_end if last else t + h
            if backward:
                stats.backward_accepted_steps += 1
            else:
                stats.accepted_steps += 1
            if d * (ts[j] - t1) <= 0:  # an output time lies in (t, t1]

                def dense(thetas: list[float], y=y, ks=ks, h=h) -> Tensor:
                    return dense_eval(cache, y, ks, h, thetas)

                j = _emit(outs, ts, j, d, t, t1, h, y, y1, dense)
            t, y = t1, y1
            norm.s0 = s1
            k1 = ks[-1] if fsal else None
            prev_ratio = max(ratio, 1e-4)
        elif backward:
            stats.backward_rejected_steps += 1
        else:
            stats.rejected_steps += 1
        h_abs = abs(h) * factor
        if ctrl.dt_max is not None:
            h_abs = min(h_abs, ctrl.dt_max)
        if j < n and h_abs < max(ctrl.dt_min, eps8 * max(1.0, abs(t))):
            if bad_in_a_row:
                # Shrinking the step could not get past a NaN/inf: the state or func breaks here.
                raise blow_up_error(t, h_abs)
            raise underflow_error(t, h_abs, ctrl.dt_min)
    return outs


def solve_flat(
    f: FlatFunc,
    y0: Tensor,
    ts: list[float],
    method: str,
    opts: FixedStepOptions | AdaptiveOptions,
    rtol: float,
    atol: float,
    stats: SolveStats,
    norm_dims: int | None = None,
    backward: bool = False,
) -> list[Tensor]:
    """Solve on a flat state; returns the state at each of ``ts`` (``ts[0]`` gives ``y0``)."""
    if len(ts) == 1:
        return [y0]
    if backward and opts.compile:
        # The adjoint's backward dynamics call autograd: never compiled; the loop is then
        # chosen as without the option (the host loop on CPU).
        opts = dataclasses.replace(opts, compile=False)
    tableau = TABLEAUX[method]
    if method in ADAPTIVE_METHODS:
        return solve_adaptive(
            f, y0, ts, tableau, opts, rtol, atol, stats, norm_dims, backward  # type: ignore[arg-type]
        )
    return solve_fixed(f, y0, ts, tableau, opts, stats)  # type: ignore[arg-type]


def odeint(
    func: Callable[..., Any],
    y0: Tensor | tuple[Tensor, ...],
    t: Tensor,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    method: str = "dopri5",
    options: Options = None,
    stats: SolveStats | None = None,
) -> Tensor | tuple[Tensor, ...]:
    """Solve ``dy/dt = func(t, y)`` from ``y(t[0]) = y0`` and return ``y`` at every ``t``.

    A drop-in for ``torchdiffeq.odeint``; gradients flow by backprop through the solver's
    operations (memory grows with the number of steps; see :func:`odeint_adjoint`). With
    ``method="reversible_heun"`` and an ``nn.Module`` func the backward pass is the O(1)-memory
    algebraically reversible one (parameters: ``func.parameters()``).

    Args:
        func: ``func(t, y) -> dy/dt``; ``t`` a 0-d tensor, ``y`` and the result like ``y0``.
        y0: initial state, a floating tensor of any shape or a tuple of such tensors (one dtype
            and device).
        t: 1-D, strictly increasing or strictly decreasing, same dtype/device as ``y0``;
            with ``per_sample=True`` also ``(batch, T)``: one row of times per row of ``y0``.
        rtol, atol: tolerances of the adaptive methods (RMS norm, ``atol + rtol*|y|``).
        method: ``euler``, ``midpoint``, ``rk4`` (fixed step), ``bosh3``, ``dopri5``, ``tsit5``
            (adaptive), ``reversible_heun`` (fixed step, reversible).
        options: dict or options dataclass: :class:`FixedStepOptions`,
            :class:`AdaptiveOptions` or :class:`ReversibleHeunOptions`.
        stats: a :class:`SolveStats` to fill with evaluation and step counts.

    Returns:
        ``(len(t), *y0.shape)`` tensor, or a tuple of such for tuple ``y0`` (2-D ``t``:
        ``(T, *y0.shape)``, row ``i`` of each output at ``t[i]``).

    Raises:
        UnknownNameError: unknown method or option key.
        InvalidArgumentError / InvalidTypeError: bad ``t``, ``y0``, tolerances, or func output.
        NonFiniteStateError, StepSizeUnderflowError, MaxStepsExceededError: the solve failed.

    Speed: on CPU the adaptive methods run the host loop (one host sync per step, stages
    combined with unrolled ``add_``); on CUDA the device-resident loop (accept/reject and the
    step size as tensor ops, one sync every ``sync_every`` attempts) with the attempts replayed
    from a CUDA graph when autograd is off and ``func`` is an ``nn.Module``. With
    ``compile=True`` (opt-in; autograd off, ``nn.Module`` func) the device loop and ``func`` are
    compiled together by ``torch.compile``: on CPU the fastest choice for small states solved
    many times, once the first solve has paid the compilation (on CUDA the compiled blocks are
    replayed from CUDA graphs; not yet measured on a GPU). See :class:`AdaptiveOptions`
    (``device_loop``, ``sync_every``, ``cuda_graph``, ``per_sample``, ``compile``) and
    ``benchmarks/RESULTS.md``. With ``per_sample=True`` every row of ``y0`` (dim 0) has its
    own time and step size and ``func`` receives ``t`` of shape ``(batch,)``.

    Caveats: gradients with respect to ``t`` are only computed by :func:`odeint_adjoint`.
    Output times between steps come from the method's interpolant (dopri5: Shampine's 4th
    order; tsit5: Tsitouras's 4th order; bosh3 and fixed-step methods: cubic Hermite).
    """
    check_method(method)
    check_tolerances(rtol, atol)
    state = FlatState(y0)
    opts = options_for(method, options)
    if getattr(opts, "per_sample", False) and isinstance(t, Tensor) and t.ndim == 2:
        # One row of output times per batch row (torchode's t_eval of shape (batch, T)).
        check_per_sample(state)
        ts_rows = check_t_rows(t, state)
        stats = stats if stats is not None else SolveStats()
        from deeplimits.ode._device_loop import solve_adaptive_device

        f = FlatFuncWrapper(func, state, stats)
        outs = solve_adaptive_device(f, y0, ts_rows, TABLEAUX[method], opts, rtol,  # type: ignore[arg-type]
                                     atol, stats)
        return torch.stack(outs)  # (T, batch, ...)
    ts = check_t(t, state.dtype, state.device)
    stats = stats if stats is not None else SolveStats()
    if method == "reversible_heun":
        from deeplimits.ode._reversible import reversible_heun_solve

        return reversible_heun_solve(func, y0, t, state, opts, stats, None)  # type: ignore[arg-type]
    f = FlatFuncWrapper(func, state, stats)
    if getattr(opts, "per_sample", False):
        check_per_sample(state)
    outs = solve_flat(f, state.as_state(y0), ts, method, opts, rtol, atol, stats)
    return state.unflatten_series(torch.stack(outs))  # (T, *shape) or (T, N) -> (T, *shape)
