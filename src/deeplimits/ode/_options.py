"""Typed, frozen solver options and the statistics object ``odeint`` fills."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, TypeVar

import torch
from torch import Tensor

from deeplimits.errors import InvalidArgumentError, InvalidTypeError, UnknownNameError
from deeplimits.ode._controllers import DEFAULT_CONTROLLER, PIDController, as_times

__all__ = [
    "SCIPY_SOLVERS",
    "AdamsOptions",
    "AdaptiveOptions",
    "AdjointOptions",
    "FixedStepOptions",
    "ImplicitFixedOptions",
    "ImplicitOptions",
    "ReversibleHeunOptions",
    "ScipyOptions",
    "SolveStats",
    "StepRecord",
    "StepRecorder",
    "parse_options",
]


@dataclass(frozen=True)
class FixedStepOptions:
    """Options of the fixed-step methods (``euler``, ``midpoint``, ``rk4``).

    If neither ``step_size`` nor ``grid`` is given the solver steps on ``t`` itself
    (torchdiffeq's behaviour). How the steps run (``compile``, the NaN check) is
    :class:`ExecutionOptions`.

    Attributes:
        step_size: constant ``|dt|``; the last step is shortened to end exactly at ``t[-1]``.
        grid: explicit 1-D time grid to step on (same direction as ``t``); points outside the
            span are ignored, the endpoints ``t[0]`` and ``t[-1]`` are always steps.
        grid_constructor: torchdiffeq's ``grid_constructor(func, y0, t) -> grid`` (a 1-D
            tensor), called once per solve; the grid is then used as ``grid``.
        interp: output times between grid points: ``"cubic"`` (default; cubic Hermite through
            the two states and their derivatives, one extra evaluation per step that holds an
            output time) or ``"linear"`` (torchdiffeq's default; no extra evaluation).
        perturb: torchdiffeq's ``perturb``: each step's first stage sees ``func`` one ulp
            (of the state's dtype) past the step's start, in the solve's direction, and a
            stage at the step's end one ulp short of it, so a ``func`` that jumps at grid
            times is evaluated on the right side of each jump (the limit from inside the
            step). Not with ``compile=True`` or ``reversible_heun``.
    """

    step_size: float | None = None
    grid: Tensor | Sequence[float] | None = None
    grid_constructor: Callable[..., Tensor] | None = None
    interp: Literal["cubic", "linear"] = "cubic"
    perturb: bool = False

    def __post_init__(self) -> None:
        given = [
            n for n in ("step_size", "grid", "grid_constructor") if getattr(self, n) is not None
        ]
        if len(given) > 1:
            raise InvalidArgumentError(
                f"give only one of options step_size or grid or grid_constructor, got {given}"
            )
        if self.grid_constructor is not None and not callable(self.grid_constructor):
            raise InvalidTypeError(
                f"options grid_constructor={self.grid_constructor!r} must be callable "
                "(func, y0, t) -> 1-D tensor of times"
            )
        if self.interp not in ("cubic", "linear"):
            raise UnknownNameError("options interp", self.interp, ["cubic", "linear"])
        if not isinstance(self.perturb, bool):
            raise InvalidTypeError(f"options perturb={self.perturb!r} must be True or False")
        if self.step_size is not None and not (
            isinstance(self.step_size, (int, float)) and self.step_size > 0
        ):
            raise InvalidArgumentError(
                f"options step_size={self.step_size!r} must be a positive number"
            )


@dataclass(frozen=True)
class ReversibleHeunOptions(FixedStepOptions):
    """Options of ``reversible_heun``: a fixed-step grid plus the backward mode.

    The steps always hit every output time exactly (no interpolation).

    Attributes:
        reversible_backward: ``True`` (default): O(1)-memory backward that reconstructs the
            forward states algebraically. ``False``: plain backprop through the steps (for tests).
    """

    reversible_backward: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.perturb:
            raise InvalidArgumentError(
                "options perturb=True is not available for reversible_heun (its steps are "
                "reversed algebraically); use rk4, midpoint, ... for perturbed stages"
            )


@dataclass(frozen=True)
class AdaptiveOptions:
    """Numerical options of the adaptive methods (``bosh3``, ``dopri5``, ``tsit5``).

    How the solve runs (host or device loop, CUDA graphs, ``compile``, per-sample steps) is
    :class:`ExecutionOptions`; the same keys are accepted in an ``options`` dict.

    Attributes:
        first_step: initial ``|dt|``; default: Hairer's heuristic (one extra evaluation).
        max_num_steps: most steps (accepted + rejected) before ``MaxStepsExceededError``.
        controller: step-size controller (a :class:`PIDController`); default
            ``IController()``, the integral controller.
        step_t, jump_t: torchdiffeq's names for the controller's ``step_ts`` and ``jump_ts``
            (times a step must end at; times where ``func`` jumps), added to the controller's.
        norm: torchdiffeq's ``norm``: a function of the scaled error (in ``y0``'s structure:
            a tuple for a tuple state) to a scalar, used instead of the RMS norm for the step
            control and the starting step (host loop only; default: the RMS norm).
        min_step, max_step, safety, ifactor, dfactor: torchdiffeq's names for the
            controller's ``min_step``, ``dt_max``, ``safety``, ``factor_max`` and
            ``factor_min``; given, they replace the controller's.
    """

    first_step: float | None = None
    max_num_steps: int = 100_000
    controller: PIDController | None = None
    step_t: Tensor | Sequence[float] | None = None
    jump_t: Tensor | Sequence[float] | None = None
    norm: Callable[[Any], Tensor] | None = None
    min_step: float | None = None
    max_step: float | None = None
    safety: float | None = None
    ifactor: float | None = None
    dfactor: float | None = None
    _controller: PIDController = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.first_step is not None and not (
            isinstance(self.first_step, (int, float)) and self.first_step > 0
        ):
            raise InvalidArgumentError(
                f"options first_step={self.first_step!r} must be a positive number"
            )
        if not isinstance(self.max_num_steps, int) or self.max_num_steps < 1:
            raise InvalidArgumentError(
                f"options max_num_steps={self.max_num_steps!r} must be a positive int"
            )
        if self.controller is not None and not isinstance(self.controller, PIDController):
            raise InvalidTypeError(
                f"options controller must be a PIDController, PIController or IController, got "
                f"{type(self.controller).__name__}"
            )
        if self.norm is not None and not callable(self.norm):
            raise InvalidTypeError(
                f"options norm={self.norm!r} must be a function of the scaled error to a scalar"
            )
        ctrl = self.controller if self.controller is not None else DEFAULT_CONTROLLER
        if self.step_t is not None or self.jump_t is not None:
            extra = {
                name + "s": getattr(ctrl, name + "s") + as_times(f"options {name}", value)
                for name, value in (("step_t", self.step_t), ("jump_t", self.jump_t))
                if value is not None
            }
            ctrl = dataclasses.replace(ctrl, **extra)
        renamed = {
            ours: getattr(self, theirs)
            for theirs, ours in _TORCHDIFFEQ_NAMES.items()
            if getattr(self, theirs) is not None
        }
        if renamed:
            if renamed.get("dt_max") == math.inf:
                renamed["dt_max"] = None  # torchdiffeq's default max_step
            ctrl = dataclasses.replace(ctrl, **renamed)
        object.__setattr__(self, "_controller", ctrl)

    @property
    def step_controller(self) -> PIDController:
        """The controller in use (the default when none is set, with ``step_t``/``jump_t``)."""
        return self._controller


def _check_newton(opts: ImplicitOptions | ImplicitFixedOptions) -> None:
    if opts.batched_jacobian is not None and not isinstance(opts.batched_jacobian, bool):
        raise InvalidTypeError(
            f"options batched_jacobian={opts.batched_jacobian!r} must be True or False"
        )
    if opts.newton_max_iters is not None and not (
        isinstance(opts.newton_max_iters, int) and opts.newton_max_iters >= 1
    ):
        raise InvalidArgumentError(
            f"options newton_max_iters={opts.newton_max_iters!r} must be a positive int"
        )
    if opts.newton_kappa is not None and not (
        isinstance(opts.newton_kappa, (int, float)) and 0 < opts.newton_kappa < 1
    ):
        raise InvalidArgumentError(
            f"options newton_kappa={opts.newton_kappa!r} must be a number in (0, 1)"
        )


@dataclass(frozen=True)
class ImplicitOptions(AdaptiveOptions):
    """Options of the adaptive implicit methods (``kvaerno3``, ``kvaerno4``, ``kvaerno5``):
    :class:`AdaptiveOptions` plus the Newton solve's (``None``: the solver object's setting).

    Attributes:
        batched_jacobian: ``True``: the state is ``(batch, d)`` and rows do not interact, so
            the Jacobian is ``batch`` blocks ``(d, d)`` (``d`` reverse passes, batched LU);
            ``False`` (default): the full ``(N, N)`` Jacobian of the flattened state.
        newton_max_iters: most chord iterations per stage (default 10).
        newton_kappa: the convergence tolerance, relative to the error norm's scale
            ``atol + rtol |y|`` (default 1e-2).
    """

    batched_jacobian: bool | None = None
    newton_max_iters: int | None = None
    newton_kappa: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_newton(self)


@dataclass(frozen=True)
class ImplicitFixedOptions(FixedStepOptions):
    """Options of the fixed-step implicit methods (``implicit_euler``): the grid of
    :class:`FixedStepOptions` plus the Newton solve's, as in :class:`ImplicitOptions` (the
    Newton tolerance's scale uses ``odeint``'s ``rtol`` and ``atol``)."""

    batched_jacobian: bool | None = None
    newton_max_iters: int | None = None
    newton_kappa: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_newton(self)


@dataclass(frozen=True)
class AdamsOptions(FixedStepOptions):
    """Options of the Adams methods (``explicit_adams``, ``implicit_adams``, ``fixed_adams``;
    torchdiffeq's names): the grid of :class:`FixedStepOptions` plus

    Attributes:
        max_order: the largest order used: at most ``max_order - 1`` past evaluations enter the
            Adams-Bashforth formula (an int in ``[4, 12]``; default 12, torchdiffeq's).
        max_iters: most corrector iterations per step of the predictor-corrector methods
            (default 4, torchdiffeq's); ignored by ``explicit_adams``. The iteration stops when
            two iterates agree within ``odeint``'s ``atol + rtol |dy|``.
    """

    max_order: int = 12
    max_iters: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.max_order, bool) or not isinstance(self.max_order, int) or not (
            4 <= self.max_order <= 12
        ):
            raise InvalidArgumentError(
                f"options max_order={self.max_order!r} must be an int in [4, 12] (below 4 every "
                "step is rk4: torchdiffeq warns and runs rk4; use method='rk4')"
            )
        if isinstance(self.max_iters, bool) or not isinstance(self.max_iters, int) or (
            self.max_iters < 1
        ):
            raise InvalidArgumentError(
                f"options max_iters={self.max_iters!r} must be a positive int"
            )


#: torchdiffeq's adaptive options -> the controller's fields.
_TORCHDIFFEQ_NAMES = {
    "min_step": "min_step", "max_step": "dt_max", "safety": "safety", "ifactor": "factor_max",
    "dfactor": "factor_min",
}


#: scipy.integrate.solve_ivp's methods that ``method="scipy_solver"`` accepts.
SCIPY_SOLVERS = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")


@dataclass(frozen=True)
class ScipyOptions:
    """Options of ``method="scipy_solver"`` (torchdiffeq's names): scipy's
    ``solve_ivp`` on the flattened state in float64 on the CPU.

    Attributes:
        solver: scipy's method, one of :data:`SCIPY_SOLVERS` (default ``"LSODA"``, as
            torchdiffeq).
        min_step, max_step: passed to ``solve_ivp`` (``min_step`` only matters to LSODA).
    """

    solver: str = "LSODA"
    min_step: float = 0.0
    max_step: float = math.inf

    def __post_init__(self) -> None:
        if self.solver not in SCIPY_SOLVERS:
            raise UnknownNameError("scipy solver", self.solver, SCIPY_SOLVERS)
        for name in ("min_step", "max_step"):
            val = getattr(self, name)
            if not isinstance(val, (int, float)) or not val >= 0:
                raise InvalidArgumentError(f"options {name}={val!r} must be a number >= 0")


@dataclass(frozen=True)
class AdjointOptions:
    """Adjoint-only options (given inside ``adjoint_options`` next to the solver options).

    Attributes:
        norm: ``"rms"`` (error norm over the whole augmented state) or ``"seminorm"`` (ignore the
            parameter- and time-gradient channels; Kidger, Chen & Lyons 2021, "Hey, that's not an
            ODE": usually fewer backward steps, same accuracy of the gradients), or a function
            (torchdiffeq's ``adjoint_options={"norm": fn}``) of the scaled error of the backward
            state as the tuple ``(t, y, adj_y, *adj_params)`` (a tuple ``y0``: ``(t, *y,
            *adj_y, *adj_params)``) to a scalar; ``t`` is a 0-d zero (the time gradient is not
            integrated here), ``adj_params`` the parameters that require grad.
    """

    norm: Literal["rms", "seminorm"] | Callable[[tuple[Tensor, ...]], Tensor] = "rms"

    def __post_init__(self) -> None:
        if not callable(self.norm) and self.norm not in ("rms", "seminorm"):
            raise UnknownNameError(
                "adjoint norm", self.norm, ["rms", "seminorm", "a function of a tuple"]
            )


@dataclass
class SolveStats:
    """Counters of one solve; pass an instance as ``odeint(..., stats=s)`` to have it filled.

    Counts accumulate over the calls the object is passed to (create a fresh one per solve).
    ``nfe_backward`` and the ``backward_*`` step counts are filled when the adjoint or reversible
    Heun backward pass runs; ``nfe_recompute`` when :func:`odeint_checkpoint`'s backward pass
    re-runs forward steps.
    """

    nfe_forward: int = 0
    nfe_backward: int = 0
    #: Evaluations of ``func`` spent in the backward pass re-running forward steps (the
    #: checkpointed backward of ``odeint_checkpoint``: advances between checkpoints and the
    #: steps re-run with autograd); not included in ``nfe_backward``.
    nfe_recompute: int = 0
    accepted_steps: int = 0
    rejected_steps: int = 0
    backward_accepted_steps: int = 0
    backward_rejected_steps: int = 0
    #: ``per_sample=True`` only: ``(batch,)`` int64 CPU tensor, the evaluations each row needed
    #: (attempts while the row was unfinished, times evaluations per attempt, plus the start).
    #: ``nfe_forward`` counts the batched calls actually made; ``accepted_steps`` and
    #: ``rejected_steps`` are the largest per-row counts.
    nfe_per_sample: Tensor | None = field(default=None, compare=False)
    #: Implicit methods: Jacobians of ``func`` computed, LU factorisations of the iteration
    #: matrix, chord (Newton) iterations, and stage solves that did not converge (each one
    #: rejects its step).
    jacobians: int = 0
    lu_factorizations: int = 0
    newton_iterations: int = 0
    newton_failures: int = 0
    #: Adams predictor-corrector methods (``implicit_adams``, ``fixed_adams``): steps whose
    #: corrector iteration did not converge in ``max_iters`` (each also warns).
    corrector_failures: int = 0
    #: Whether the last forward adaptive solve replayed a CUDA graph (see ``AdaptiveOptions``).
    cuda_graph_used: bool = field(default=False, compare=False)
    #: Whether the last forward adaptive solve ran compiled code (``compile=True``).
    compiled: bool = field(default=False, compare=False)
    #: ``odeint_event`` (and ``odeint(..., event_fn=...)``) only: which of ``event_fn``'s
    #: values crossed zero (its index in the flattened value; with ``per_sample=True`` one
    #: per sample, ``(batch,)``), a CPU int64 tensor.
    event_index: Tensor | None = field(default=None, compare=False)


class StepRecord(NamedTuple):
    """One accepted step as a host loop took it, for replaying it exactly (the checkpointed
    backward of ``odeint_checkpoint``); the loops append one per accepted step when given a
    recorder.

    Attributes:
        t, h, t1: start time, signed step size and end time (``t1`` may differ from ``t + h``
            by round-off: a step that ends at a stop ends exactly there).
        times: the stage times when the loop gave them (a step ending at a jump), else ``None``.
        k1: the time of a fresh evaluation ``f(k1, y)`` used as the first stage (the first
            step, the step after a jump), else ``None``.
        chained: the first stage is the previous step's last entry of ``ks`` (FSAL, or the
            loop's ``f(t1, y1)`` for interior outputs); with ``k1 is None`` and not
            ``chained`` the step evaluates its first stage itself.
        extra: after the step the loop appended ``f(t1, y1)`` to its stages (a non-FSAL
            method with an output time inside the step).
        j: index of the first output time not yet emitted when the step started.
    """

    t: float
    h: float
    t1: float
    times: list[float] | None
    k1: float | None
    chained: bool
    extra: bool
    j: int


#: A loop's recorder: called after each accepted step with its record, the new state and
#: the step's stages (``ks``, with ``f(t1, y1)`` appended when ``extra``).
StepRecorder = Callable[[StepRecord, Tensor, list[Tensor]], None]


_O = TypeVar("_O")


def parse_options(cls: type[_O], options: Mapping[str, Any] | _O | None, method: str) -> _O:
    """Turn ``options`` (``None``, a dict or an instance of ``cls``) into an instance of ``cls``.

    Raises:
        UnknownNameError: a dict key is not a field of ``cls`` (the message lists the valid ones).
        InvalidTypeError: ``options`` is neither a dict nor a ``cls``.
    """
    if options is None:
        return cls()
    if isinstance(options, cls):
        return options
    if not isinstance(options, Mapping):
        raise InvalidTypeError(
            f"options for method {method!r} must be a dict or {cls.__name__}, got "
            f"{type(options).__name__}"
        )
    valid = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    for key in options:
        if key not in valid:
            raise UnknownNameError(f"option of method {method!r}", key, valid)
    return cls(**options)


def grid_to_floats(grid: Tensor | Sequence[float]) -> list[float]:
    """A grid option as Python floats (validated 1-D)."""
    if isinstance(grid, Tensor):
        if grid.ndim != 1:
            raise InvalidArgumentError(f"options grid must be 1-D, got shape {tuple(grid.shape)}")
        return [float(x) for x in grid.detach().to("cpu", torch.float64)]
    return [float(x) for x in grid]
