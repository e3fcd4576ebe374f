"""``odeint``: the torchdiffeq-compatible front of the engine (arguments in, dispatcher, out)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

from deeplimits.errors import InvalidArgumentError
from deeplimits.ode._checks import check_tolerances
from deeplimits.ode._dispatch import Options, solve, split_options
from deeplimits.ode._event import solve_until_event
from deeplimits.ode._execution import ExecutionOptions
from deeplimits.ode._options import SolveStats
from deeplimits.ode._solvers import Solver, get_solver

__all__ = ["odeint", "odeint_event"]


def odeint(
    func: Callable[..., Any],
    y0: Tensor | tuple[Tensor, ...],
    t: Tensor,
    *,
    rtol: float | tuple[float, ...] = 1e-7,
    atol: float | tuple[float, ...] = 1e-9,
    method: str | Solver = "dopri5",
    options: Options = None,
    execution: ExecutionOptions | None = None,
    stats: SolveStats | None = None,
    event_fn: Callable[[Tensor, Any], Tensor] | None = None,
) -> Tensor | tuple[Tensor, ...] | tuple[Tensor, Any]:
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
        rtol: relative tolerance of the adaptive methods (RMS norm, ``atol + rtol*|y|``) and
            of the corrector of ``implicit_adams``; for a tuple ``y0`` also a tuple, one per
            tensor (torchdiffeq's form).
        atol: absolute tolerance, as ``rtol``.
        method: a name (``euler``, ``midpoint``, ``rk4``: fixed step; ``bosh3``, ``dopri5``,
            ``tsit5``: adaptive; ``reversible_heun``: fixed step, reversible;
            ``explicit_adams``, ``implicit_adams``: fixed-step multistep) or a
            :class:`Solver` object (e.g. ``ExplicitRK(my_tableau)``).
        options: the method's numerical options (:class:`FixedStepOptions`,
            :class:`AdamsOptions`, :class:`AdaptiveOptions`, :class:`ReversibleHeunOptions`)
            or a dict, which may
            also hold the keys of :class:`ExecutionOptions`.
        execution: how the solve runs (:class:`ExecutionOptions`: host or device loop, CUDA
            graphs, ``compile``, per-sample steps); default: chosen by the state's device.
        stats: a :class:`SolveStats` to fill with evaluation and step counts.
        event_fn: torchdiffeq's event mode: ``t`` has two times (the start, and any time in
            the direction to integrate) and the result is ``(event_t, solution)`` as
            :func:`odeint_event` returns it (per-sample events with ``per_sample=True``).

    Returns:
        ``(len(t), *y0.shape)`` tensor, or a tuple of such for tuple ``y0`` (2-D ``t``:
        ``(T, *y0.shape)``, row ``i`` of each output at ``t[i]``).

    Raises:
        UnknownNameError: unknown method or option key.
        InvalidArgumentError / InvalidTypeError: bad ``t``, ``y0``, tolerances, or func output,
            or execution options that conflict with each other, the method or the state.
        NonFiniteStateError, StepSizeUnderflowError, MaxStepsExceededError: the solve failed.

    Speed (measured against torchdiffeq and torchode in ``benchmarks/RESULTS.md``): on CPU the
    adaptive methods run the host loop; on CUDA the device-resident loop, replayed from CUDA
    graphs when autograd is off and ``func`` is an ``nn.Module``; ``compile=True`` compiles
    the loop with ``func`` (for small states solved many times).

    Gradients with respect to ``t`` (``t.requires_grad``) are those of the ODE's solution:
    ``dy(t_i)/dt_i = f(t_i, y(t_i))`` and ``dL/dt_0 = -a_0 . f(t_0, y_0)`` with ``a_0`` the
    gradient reaching ``y_0`` (``deeplimits.ode._time_grad``); they differ from the discrete
    solve's by the order of the tolerance.

    Caveats: output times between steps come from the method's interpolant (dopri5: Shampine's 4th
    order; tsit5: Tsitouras's 4th order; bosh3 and fixed-step methods: cubic Hermite).
    """
    if event_fn is not None:
        return event_mode(odeint, func, y0, t, event_fn, {
            "rtol": rtol, "atol": atol, "method": method, "options": options,
            "execution": execution, "stats": stats,
        })
    solver = get_solver(method)
    check_tolerances(rtol, atol)
    opts, exe = split_options(solver, options, execution)
    stats = stats if stats is not None else SolveStats()
    return solve(func, y0, t, solver, opts, exe, rtol, atol, stats)


def odeint_event(
    func: Callable[..., Any],
    y0: Tensor | tuple[Tensor, ...],
    t0: Tensor | float,
    *,
    event_fn: Callable[[Tensor, Any], Tensor],
    reverse_time: bool = False,
    odeint_interface: Callable[..., Any] = odeint,
    direction: int | Sequence[int | None] | None = None,
    **kwargs: Any,
) -> tuple[Tensor, Tensor | tuple[Tensor, ...]]:
    """Solve from ``t0`` until ``event_fn(t, y)`` first crosses zero (torchdiffeq's API).

    The crossing is searched on the accepted steps of an explicit Runge-Kutta method (an
    adaptive one on the host loop; a fixed-step one such as ``rk4`` on the fixed-step loop,
    with ``options`` ``step_size``, at most 20000 steps as torchdiffeq, or ``grid``, up to
    its last point) and located by bisection on the step's interpolant (fixed step: the
    ``interp`` option's, ``"cubic"`` by default, ``"linear"`` as torchdiffeq's default); the
    event time's gradient comes from the implicit function theorem (``g(T, y(T)) = 0``), so
    it reaches ``y0``, ``func``'s parameters, ``t0`` and the parameters ``event_fn`` closes
    over.

    Caveats: the bisection runs to round-off (torchdiffeq's stops within ``atol`` and
    returns the bracket's middle, so the times differ by at most ``atol / 2``). The returned
    solution is ``odeint_interface``'s solve from ``t0`` to the event time (fixed step: steps
    of ``step_size``, the last one shortened), not the search's interpolant, so
    ``event_fn`` at its last state is zero only to the method's accuracy (with
    ``interp="linear"`` the time itself has the linear interpolant's ``O(step**2)`` error).

    Args:
        func: as in :func:`odeint`.
        y0: as in :func:`odeint`.
        t0: the start time (0-d tensor or float).
        event_fn: ``event_fn(t, y) -> tensor``: one value (0-d) or several (any shape; their
            entries are separate events, and the first of them to cross zero stops the solve,
            as torchdiffeq); the event is the first sign change after ``t0`` (a value that
            starts at zero, e.g. a ball on the ground, finds its next crossing).
            ``stats.event_index`` (when ``stats=`` is given) says which value crossed.
        reverse_time: integrate backwards from ``t0``.
        odeint_interface: the solve that gives the returned solution and its gradients
            (:func:`odeint`, :func:`odeint_adjoint`, :func:`odeint_checkpoint`).
        direction: which crossings count (scipy's ``event.direction``): ``+1`` from negative
            to positive as the solve proceeds (in reverse time: as ``t`` decreases), ``-1``
            from positive to negative, ``None`` or ``0`` both; one value, or a list with one
            per event value. Not in torchdiffeq.
        kwargs: ``rtol``, ``atol``, ``method``, ``options`` (and the interface's own) for both
            the search and the solution. With ``per_sample=True`` (in ``options`` or
            ``execution``) and ``y0`` of shape ``(batch, ...)``: per-sample events, see
            Returns.

    Returns:
        ``(event_t, solution)``: the event time (0-d) and the states at ``[t0, event_t]``
        (``(2, *y0.shape)``, or a tuple of such). Per-sample: ``event_fn(t, y)`` gets ``t``
        of shape ``(batch,)`` and returns ``(batch,)`` or ``(batch, k)``; each sample stops
        at its own event: ``event_t`` is ``(batch,)`` and ``solution[-1]`` holds each
        sample's state at its event (the search's own interpolant there, differentiable by
        backprop; ``odeint_interface`` must be :func:`odeint` and ``t0`` is not
        differentiated).

    Raises:
        SolverError: no crossing within ``max_num_steps`` steps (fixed step: 20000 steps, or
            before the end of ``grid``).
        InvalidArgumentError: ``event_fn`` returns no value (per-sample: not one row per
            sample), a bad ``direction``, a method that is not an explicit Runge-Kutta one
            (implicit, Adams, ``reversible_heun``, ``scipy_solver``), or a fixed-step method
            without ``step_size`` or ``grid``.
    """
    return solve_until_event(func, y0, t0, event_fn, reverse_time, odeint_interface, kwargs,
                             direction, odeint_interface is odeint)


def event_mode(
    interface: Callable[..., Any], func: Callable[..., Any], y0: Any, t: Tensor,
    event_fn: Callable[[Tensor, Any], Tensor], kwargs: dict[str, Any],
) -> tuple[Tensor, Any]:
    """``interface(..., event_fn=...)`` as torchdiffeq: ``t = [t0, t1]`` gives the start and
    the direction; returns :func:`odeint_event`'s ``(event_t, solution)``.

    Raises:
        InvalidArgumentError: ``t`` does not hold exactly two times.
    """
    if not isinstance(t, Tensor) or t.ndim != 1 or t.numel() != 2:
        raise InvalidArgumentError(
            f"with event_fn, t must hold two times [t0, t1] (t1 only sets the direction), got "
            f"{tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}"
        )
    kw = {k: v for k, v in kwargs.items() if v is not None}
    return solve_until_event(func, y0, t[0], event_fn, bool(t[1] < t[0]), interface, kw,
                             plain=interface is odeint)
