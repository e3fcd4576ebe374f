"""``odeint``: the torchdiffeq-compatible front of the engine (arguments in, dispatcher, out)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from deeplimits.ode._checks import check_tolerances
from deeplimits.ode._dispatch import Options, solve, split_options
from deeplimits.ode._execution import ExecutionOptions
from deeplimits.ode._options import SolveStats
from deeplimits.ode._solvers import Solver, get_solver

__all__ = ["odeint"]


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
        rtol, atol: tolerances of the adaptive methods (RMS norm, ``atol + rtol*|y|``); for a
            tuple ``y0`` also tuples, one per tensor (torchdiffeq's form).
        method: a name (``euler``, ``midpoint``, ``rk4``: fixed step; ``bosh3``, ``dopri5``,
            ``tsit5``: adaptive; ``reversible_heun``: fixed step, reversible) or a
            :class:`Solver` object (e.g. ``ExplicitRK(my_tableau)``).
        options: the method's numerical options (:class:`FixedStepOptions`,
            :class:`AdaptiveOptions`, :class:`ReversibleHeunOptions`) or a dict, which may
            also hold the keys of :class:`ExecutionOptions`.
        execution: how the solve runs (:class:`ExecutionOptions`: host or device loop, CUDA
            graphs, ``compile``, per-sample steps); default: chosen by the state's device.
        stats: a :class:`SolveStats` to fill with evaluation and step counts.

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

    Caveats: gradients with respect to ``t`` are only computed by :func:`odeint_adjoint`.
    Output times between steps come from the method's interpolant (dopri5: Shampine's 4th
    order; tsit5: Tsitouras's 4th order; bosh3 and fixed-step methods: cubic Hermite).
    """
    solver = get_solver(method)
    check_tolerances(rtol, atol)
    opts, exe = split_options(solver, options, execution)
    stats = stats if stats is not None else SolveStats()
    return solve(func, y0, t, solver, opts, exe, rtol, atol, stats)
