"""The one place that picks how a solve runs.

``(solver, numerical options, execution options, state's device, autograd)`` -> a loop:

- :class:`ReversibleHeun` -> its reversible loop (:mod:`deeplimits.ode._reversible`);
- fixed-step :class:`ExplicitRK` -> the fixed-step loop (eager, or with compiled chunks);
- adaptive :class:`ExplicitRK` -> the host loop, or the device loop (per-sample steps,
  ``device_loop``, CUDA states, ``compile``), which runs eagerly, from captured graphs and/or
  compiled (:class:`DevicePlan`);
- :class:`ImplicitRK` (same step interface) -> the fixed-step or the host loop (never the
  device loop: a CUDA state runs on the host loop unless ``device_loop=True`` is asked for,
  which is an error).
- :class:`Adams` (multistep, fixed grid) -> the fixed-step loop, which carries its history
  (``Solver.new_carry``) from step to step.

Every rule between those choices is checked here (or, between execution options alone, in
:class:`ExecutionOptions`), with an error that names the conflict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor

from deeplimits._warnings import warn
from deeplimits.errors import InvalidArgumentError, InvalidTypeError, UnknownNameError
from deeplimits.ode._capture import CudaGraphCapture
from deeplimits.ode._checks import check_t, check_t_rows, tolerance_vectors
from deeplimits.ode._compiled import compile_reason, fixed_compiled
from deeplimits.ode._device_loop import EAGER, DevicePlan, Watcher, solve_adaptive_device
from deeplimits.ode._execution import ADAPTIVE_ONLY, ExecutionOptions
from deeplimits.ode._fixed_loop import solve_fixed
from deeplimits.ode._func import Callbacks, FlatFunc, FlatFuncWrapper, FlatState
from deeplimits.ode._host_loop import solve_adaptive_host
from deeplimits.ode._options import (
    AdaptiveOptions,
    FixedStepOptions,
    ReversibleHeunOptions,
    ScipyOptions,
    SolveStats,
    StepRecorder,
    parse_options,
)
from deeplimits.ode._reversible import reversible_heun_solve
from deeplimits.ode._scipy import solve_scipy
from deeplimits.ode._solvers import ReversibleHeun, ScipySolver, Solver
from deeplimits.ode._time_grad import needs_time_grads, with_time_grads

__all__ = [
    "FlatSolve", "Options", "check_execution", "prepare", "resolve_grid", "solve", "solve_flat",
    "split_options",
]

Options = Mapping[str, Any] | FixedStepOptions | AdaptiveOptions | None
NumericOptions = FixedStepOptions | AdaptiveOptions
#: A replacement for :func:`solve_flat` in :func:`solve`: ``(f, y0, ts, opts, rtol, atol) ->
#: outputs`` (``opts`` as :func:`solve` resolved them; the tolerances as floats or per-entry
#: vectors of the flat state).
FlatSolve = Callable[
    [FlatFuncWrapper, Tensor, list[float], NumericOptions, float | Tensor, float | Tensor],
    list[Tensor],
]


def split_options(
    solver: Solver, options: Any, execution: ExecutionOptions | None = None,
    what: str = "option",
) -> tuple[NumericOptions, ExecutionOptions]:
    """``options`` (``None``, a dict or the solver's options object) and ``execution`` as the
    solver's numerical options and the execution options.

    A dict may hold both kinds of keys (torchdiffeq style).

    Raises:
        UnknownNameError: a key that is neither (the message lists the valid ones).
        InvalidArgumentError: execution keys in ``options`` and ``execution=`` given both.
    """
    if execution is not None and not isinstance(execution, ExecutionOptions):
        raise InvalidTypeError(
            f"execution must be an ExecutionOptions, got {type(execution).__name__}"
        )
    cls = solver.options_type
    if not isinstance(options, Mapping):
        return parse_options(cls, options, solver.name), execution or _DEFAULT_EXECUTION
    numeric, exec_keys = _keys(cls, solver.adaptive)
    for key in options:
        if key not in numeric and key not in exec_keys:
            raise UnknownNameError(f"{what} of method {solver.name!r}", key, numeric + exec_keys)
    ex = {k: v for k, v in options.items() if k in exec_keys}
    if ex and execution is not None:
        raise InvalidArgumentError(
            f"execution options given twice: {sorted(ex)} in options and execution=; "
            "give them in one place"
        )
    exe = ExecutionOptions(**ex) if ex else (execution or _DEFAULT_EXECUTION)
    return cls(**{k: v for k, v in options.items() if k in numeric}), exe


_DEFAULT_EXECUTION = ExecutionOptions()


_KEYS: dict[tuple[type, bool], tuple[list[str], list[str]]] = {}


def _keys(cls: type, adaptive: bool) -> tuple[list[str], list[str]]:
    """The option keys of ``cls`` and the execution keys a solver of that kind accepts.

    Memoised in a plain dict, not ``functools.cache``: torch.compile of a model that calls
    ``odeint`` traces through here, and dynamo warns on lru_cache-wrapped functions."""
    hit = _KEYS.get((cls, adaptive))
    if hit is None:
        numeric = [f.name for f in dataclasses.fields(cls) if f.init]
        exec_keys = [
            n for n in ExecutionOptions.field_names() if adaptive or n not in ADAPTIVE_ONLY
        ]
        hit = _KEYS[(cls, adaptive)] = (numeric, exec_keys)
    return hit


def check_execution(solver: Solver, exe: ExecutionOptions, state: FlatState | None) -> None:
    """The rules between the solver, the execution options and the state.

    Raises:
        InvalidArgumentError: the conflict, named.
    """
    if exe.compile and not solver.compilable:
        raise InvalidArgumentError(
            f"options compile=True is not available for {solver.name}; use rk4 or an "
            "explicit adaptive method (dopri5, tsit5, bosh3), or compile=False"
        )
    if not solver.adaptive and exe.adaptive_only_set():
        raise InvalidArgumentError(
            f"execution options {exe.adaptive_only_set()} apply to adaptive methods only, "
            f"not {solver.name}; drop them or use an adaptive method"
        )
    if exe.per_sample and state is not None and (state.is_tuple or len(state.shapes[0]) == 0):
        raise InvalidArgumentError(
            "options per_sample=True needs y0 to be one tensor of shape (batch, ...), got "
            + ("a tuple" if state.is_tuple else "a 0-d tensor")
            + "; stack the parts into one tensor or use per_sample=False"
        )


def _uses_device_loop(exe: ExecutionOptions, y0: Tensor, solver: Solver) -> bool:
    if exe.per_sample or exe.compile:
        return True
    if exe.device_loop is None:
        # Automatic: CUDA states on the device loop when the solver can run there.
        return y0.device.type == "cuda" and bool(getattr(solver, "batched", False))
    return exe.device_loop


def _device_plan(f: FlatFunc, y0: Tensor, exe: ExecutionOptions, backward: bool) -> DevicePlan:
    """Eager, graphs and/or compiled: the device loop's plan for this solve.

    Raises:
        InvalidArgumentError: ``cuda_graph=True`` or ``compile=True`` where they cannot be used.
    """
    if backward or (exe.cuda_graph is False and not exe.compile):
        return EAGER  # the adjoint's backward dynamics call autograd: never captured
    backend = exe.capture if exe.capture is not None else CudaGraphCapture()
    module = f.func if isinstance(f, FlatFuncWrapper) else None
    on_graph_device = y0.device.type in backend.devices
    if exe.cuda_graph and not on_graph_device:
        reason: str | None = f"the state is on {y0.device}, not CUDA"
    elif not exe.compile and not on_graph_device:
        return EAGER  # automatic graphs: on the backend's devices only
    else:
        reason = compile_reason(module, y0)
    if reason is not None:
        if exe.cuda_graph or exe.compile:
            wanted = "cuda_graph=True" if exe.cuda_graph else "compile=True"
            raise InvalidArgumentError(f"options {wanted}, but {reason}")
        return EAGER
    capture = backend if on_graph_device and exe.cuda_graph is not False else None
    return DevicePlan(module=module, capture=capture, graph_required=bool(exe.cuda_graph),
                      compile=exe.compile)


def solve_flat(
    f: FlatFunc,
    y0: Tensor,
    ts: list[float] | list[list[float]],
    solver: Solver,
    opts: NumericOptions,
    exe: ExecutionOptions,
    rtol: float,
    atol: float,
    stats: SolveStats,
    norm_dims: int | None = None,
    backward: bool = False,
    record: StepRecorder | None = None,
    watch: Watcher | None = None,
) -> list[Tensor]:
    """Solve on the solver's working state; returns the state at each of ``ts`` (``ts[0]``
    gives ``y0``; with per-sample rows of times, one list per row).

    ``record``: the host loops' step recorder (:class:`StepRecord`); the caller keeps the
    device loop and compiled chunks out (``odeint_checkpoint``). ``watch``: the eager device
    loop's hook after each attempt (the per-sample event search, ``odeint_checkpoint``'s
    checkpoints on the device loop); the caller asks for the device loop without graphs or
    compilation.

    Raises:
        InvalidArgumentError: a solver the flat loops cannot run, or an execution conflict.
    """
    if solver.own_loop:
        raise InvalidArgumentError(
            f"internal error: {solver.name} has its own loop"  # pragma: no cover
        )
    solver = solver.bind(opts, rtol, atol, stats)
    rows_t = bool(ts) and isinstance(ts[0], list)
    if not rows_t and len(ts) == 1:
        return [y0]
    if isinstance(solver, ScipySolver):
        _check_no_autograd_through_scipy(f, y0)
        return solve_scipy(f, y0, ts, cast(ScipyOptions, opts), rtol, atol, stats,  # type: ignore[arg-type]
                           backward)
    cbs = getattr(f, "callbacks", None)
    if backward and exe.compile:
        # The adjoint's backward dynamics call autograd: never compiled; the loop is then
        # chosen as without the option (the host loop on CPU).
        exe = dataclasses.replace(exe, compile=False)
    if not solver.adaptive:
        compiled = None
        if exe.compile and getattr(opts, "perturb", False):
            raise InvalidArgumentError(
                "options perturb=True is not available with compile=True (the compiled steps "
                "take no stage times); drop one of them"
            )
        if exe.compile:
            reason = compile_reason(f.func if isinstance(f, FlatFuncWrapper) else None, y0)
            if reason is not None or not isinstance(f, FlatFuncWrapper):
                raise InvalidArgumentError(f"options compile=True, but {reason}")
            compiled = fixed_compiled(f, solver, y0)
        if cbs is not None:
            _warn_callbacks(cbs, solver, "compiled steps" if compiled is not None else None)
        every = exe.finite_check == "every_step" or (
            exe.finite_check == "auto" and y0.device.type == "cpu"
        )
        return solve_fixed(f, y0, ts, solver, opts, stats, every, compiled,  # type: ignore[arg-type]
                           record, backward)
    opts = cast(AdaptiveOptions, opts)  # split_options gave the adaptive solver its class
    if _uses_device_loop(exe, y0, solver):
        if not solver.batched:  # type: ignore[attr-defined]
            raise InvalidArgumentError(
                f"the device loop (device_loop=True, per_sample=True or compile=True) needs an "
                f"explicit FSAL adaptive method with dense output, got {solver.name!r}; use "
                "dopri5, tsit5 or bosh3, or device_loop=False"
            )
        if exe.per_sample and norm_dims is not None:
            raise InvalidArgumentError("per_sample=True cannot be combined with a seminorm")
        if opts.norm is not None:
            raise InvalidArgumentError(
                "options norm (a function) is used by the host loop only; drop device_loop, "
                "per_sample and compile, or the norm"
            )
        plan = _device_plan(f, y0, exe, backward)
        if cbs is not None:
            _warn_callbacks(cbs, solver, "the device loop (per_sample, device_loop, compile)")
        return solve_adaptive_device(f, y0, ts, solver, opts, exe, rtol, atol, stats,
                                     norm_dims, backward, plan, watch)
    return solve_adaptive_host(f, y0, ts, solver, opts, rtol, atol, stats,  # type: ignore[arg-type]
                               norm_dims, backward, record)


def _check_no_autograd_through_scipy(f: FlatFunc, y0: Tensor) -> None:
    """scipy's solve cannot be differentiated: refuse rather than return no gradient.

    Raises:
        InvalidArgumentError: autograd records and ``y0`` or ``func``'s parameters need grad.
    """
    module = f.func if isinstance(f, FlatFuncWrapper) else None
    params = module.parameters() if isinstance(module, torch.nn.Module) else ()
    if torch.is_grad_enabled() and (y0.requires_grad or any(p.requires_grad for p in params)):
        raise InvalidArgumentError(
            "method 'scipy_solver' computes no gradients through odeint (scipy's solve is not "
            "differentiable); use odeint_adjoint, or torch.no_grad() for values only"
        )


def _warn_callbacks(cbs: Callbacks, solver: Solver, loop: str | None) -> None:
    """Warn (as torchdiffeq does) about callbacks this solve will not call."""
    names = sorted(cbs.found)
    if loop is not None:
        warn(
            f"func's callbacks {names} are not called by {loop}; use the host loop "
            "(device_loop=False, compile=False) to have them called",
        )
    elif not solver.adaptive and (unused := [n for n in names if n != "callback_step"]):
        warn(
            f"method {solver.name!r} (fixed step) does not call callbacks {unused} (only "
            "callback_step), as torchdiffeq's fixed-step methods",
        )


def prepare(
    y0: Tensor | tuple[Tensor, ...], t: Tensor, solver: Solver, exe: ExecutionOptions
) -> tuple[FlatState, list[float] | list[list[float]]]:
    """The state's layout and the output times as floats, checked (with the execution rules).

    Raises:
        InvalidArgumentError / InvalidTypeError: bad ``y0`` or ``t``, or an execution conflict.
    """
    state = FlatState(y0)
    check_execution(solver, exe, state)
    if exe.per_sample and isinstance(t, Tensor) and t.ndim == 2:
        # One row of output times per batch row (torchode's t_eval of shape (batch, T)).
        return state, check_t_rows(t, state.dtype, state.device, state.shapes[0][0])
    return state, check_t(t, state.dtype, state.device)


def resolve_grid(opts: NumericOptions, func: Callable[..., Any], y0: Any,
                 t: Tensor) -> NumericOptions:
    """torchdiffeq's ``grid_constructor`` hook: fixed-step options with the grid built from
    ``(func, y0, t)``, then stepped on like ``options grid``; other options unchanged."""
    if isinstance(opts, FixedStepOptions) and opts.grid_constructor is not None:
        return dataclasses.replace(opts, grid=opts.grid_constructor(func, y0, t),
                                   grid_constructor=None)
    return opts


def solve(
    func: Any,
    y0: Tensor | tuple[Tensor, ...],
    t: Tensor,
    solver: Solver,
    opts: NumericOptions,
    exe: ExecutionOptions,
    rtol: float,
    atol: float,
    stats: SolveStats,
    params: Sequence[Tensor] | None = None,
    flat_solve: FlatSolve | None = None,
) -> Tensor | tuple[Tensor, ...]:
    """The public functions' solve: the user's ``func``, state and times in, the stacked
    outputs ``(T, *shape)`` (or a tuple of those) out.

    ``params``: the tensors a reversible backward differentiates (default: ``func``'s
    parameters when it is an ``nn.Module``). ``flat_solve(f, y0, ts, opts, rtol, atol)``: runs the
    explicit RK solve instead of :func:`solve_flat` (``odeint_checkpoint``'s checkpointed
    solve; tolerances as floats or per-entry vectors); the time gradients are attached around
    it as around the plain solve.
    """
    state, ts = prepare(y0, t, solver, exe)
    opts = resolve_grid(opts, func, y0, t)
    if t.dtype != state.dtype:
        t = t.to(state.dtype)  # differentiable: gradients reach t in its own dtype
    time_grads = needs_time_grads(t)
    if time_grads and isinstance(ts[0], list):
        raise InvalidArgumentError(
            "gradients with respect to a 2-D t (per_sample=True) are not supported; detach t "
            "(t.detach()) or solve each row with a 1-D t"
        )
    y_start = state.flatten(y0) if isinstance(solver, ReversibleHeun) else state.as_state(y0)
    if time_grads:
        f_t = FlatFuncWrapper(func, state, stats, backward=True)
        f_t.checked = True
        y_start, finish = with_time_grads(f_t, ts, y_start, t)  # type: ignore[arg-type]
    rtol, atol = tolerance_vectors(rtol, atol, state.sizes, state.dtype, state.device,  # type: ignore[assignment]
                                   state.is_tuple)
    if isinstance(solver, ReversibleHeun):
        if (cbs := Callbacks.of(func, None)) is not None:
            _warn_callbacks(cbs, solver, "reversible_heun")
        ys = reversible_heun_solve(func, y_start, ts, state,  # type: ignore[arg-type]
                                   cast(ReversibleHeunOptions, opts), stats, params)
        outs = list(ys.unbind(0))
    else:
        f = FlatFuncWrapper(func, state, stats)
        if flat_solve is not None:
            outs = flat_solve(f, y_start, ts, opts, rtol, atol)  # type: ignore[arg-type]
        else:
            outs = solve_flat(f, y_start, ts, solver, opts, exe, rtol, atol, stats)
    ys = finish(outs) if time_grads else torch.stack(outs)
    return state.unflatten_series(ys)  # (T, *shape) or (T, N) -> (T, *shape)
