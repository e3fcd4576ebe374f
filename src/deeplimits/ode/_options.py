"""Typed, frozen solver options and the statistics object ``odeint`` fills."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import torch
from torch import Tensor

from deeplimits.errors import InvalidArgumentError, InvalidTypeError, UnknownNameError
from deeplimits.ode._controller import PIController

__all__ = [
    "AdaptiveOptions",
    "AdjointOptions",
    "FixedStepOptions",
    "ReversibleHeunOptions",
    "SolveStats",
    "parse_options",
]


@dataclass(frozen=True)
class FixedStepOptions:
    """Options of the fixed-step methods (``euler``, ``midpoint``, ``rk4``).

    Attributes:
        step_size: constant ``|dt|``; the last step is shortened to end exactly at ``t[-1]``.
        grid: explicit 1-D time grid to step on (same direction as ``t``); points outside the
            span are ignored, the endpoints ``t[0]`` and ``t[-1]`` are always steps.
        If neither is given the solver steps on ``t`` itself (torchdiffeq's behaviour).
        Output times between grid points are interpolated with a cubic Hermite polynomial.
        compile: run the steps in compiled chunks (``torch.compile``, ``func`` inlined; chunks
            of 10 equal steps between output times, single compiled steps for the rest; a step
            with an output time inside it, and the first step, run eagerly). Needs autograd off
            and an ``nn.Module`` func, like ``AdaptiveOptions.compile``; a NaN/inf state is
            reported for the first bad step all the same. The first solve of each module and
            shape pays the compilation. For small states: on this project's 2-core CPU it made
            rk4 at batch 16 2.7x faster, but batch 256 and 1024 slower than eager steps
            (``benchmarks/RESULTS.md``). Default ``False``.
    """

    step_size: float | None = None
    grid: Tensor | Sequence[float] | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.compile, bool):
            raise InvalidTypeError(f"options compile={self.compile!r} must be a bool")
        if self.step_size is not None and self.grid is not None:
            raise InvalidArgumentError("give either options step_size or grid, not both")
        if self.step_size is not None and not (
            isinstance(self.step_size, (int, float)) and self.step_size > 0
        ):
            raise InvalidArgumentError(
                f"options step_size={self.step_size!r} must be a positive number"
            )


@dataclass(frozen=True)
class ReversibleHeunOptions(FixedStepOptions):
    """Options of ``reversible_heun``: a fixed-step grid plus the backward mode.

    Attributes:
        reversible_backward: ``True`` (default): O(1)-memory backward that reconstructs the
            forward states algebraically. ``False``: plain backprop through the steps (for tests).
        The steps always hit every output time exactly (no interpolation).
    """

    reversible_backward: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.compile:
            raise InvalidArgumentError(
                "options compile=True is not available for reversible_heun; use rk4 or an "
                "adaptive method, or compile=False"
            )


@dataclass(frozen=True)
class AdaptiveOptions:
    """Options of the adaptive methods (``bosh3``, ``dopri5``, ``tsit5``).

    Attributes:
        first_step: initial ``|dt|``; default: Hairer's heuristic (one extra evaluation).
        max_num_steps: most steps (accepted + rejected) before ``MaxStepsExceededError``.
        controller: step-size controller; default ``IController()`` (the integral
            controller; ``PIController()`` rejects fewer steps, see its docstring).
        device_loop: ``True``: the device-resident loop: accept/reject, the next step size and
            the output interpolation are decided with tensor ops (``torch.where``), time is a
            tensor, and the host reads one small flag tensor every ``sync_every`` attempts.
            ``False``: the host loop (one host sync per step; fewest kernels, fastest on CPU).
            ``None`` (default): on for CUDA states, off otherwise. The device loop makes up to
            ``sync_every - 1`` wasted attempts after the end (counted in ``nfe_forward``), and
            may exceed ``max_num_steps`` by as many.
        sync_every: attempts between host syncs of the device loop (default 4: on an H200,
            larger values wasted more attempts at the end than they saved; see
            ``benchmarks/RESULTS.md``).
        cuda_graph: capture ``sync_every`` attempts of the device loop in one CUDA graph and
            replay it. ``None`` (default): on when the state is on CUDA, autograd is not
            recording (``torch.no_grad()``, the adjoint's forward pass) and ``func`` is an
            ``nn.Module`` (the graph is cached per module and shapes and reused while the
            module's parameter storage stays the same; in-place updates such as
            ``optimizer.step()`` are seen by the replays). ``True``: required (raises if
            impossible). ``False``: never. ``func`` must then be capturable: no host syncs, no
            Python side effects that must run per call (they run once, at capture).
        per_sample: each batch row (dim 0 of ``y0``) gets its own time, step size, error norm
            and accept/reject, as in torchode; ``func`` then receives ``t`` of shape
            ``(batch,)``, and ``odeint``'s ``t`` may be 2-D ``(batch, T)``: one row of output
            times per batch row (own start and end; every row in the same direction). Rows
            that reached the end stop changing (they are still computed in the batch);
            ``SolveStats.nfe_per_sample`` counts the evaluations each row needed.
            Uses the device loop on every device.
        compile: run the device loop with its start and its blocks of ``sync_every`` attempts
            compiled by ``torch.compile`` (``func`` inlined: the stage sums, the error norm,
            the controller and ``func``'s own ops fused). Cached per module, shapes and
            options like the CUDA graphs (and, like them, it needs autograd off and an
            ``nn.Module`` func: use ``torch.no_grad()`` or ``odeint_adjoint``, whose forward
            pass qualifies). The first solve of each module and shape pays the compilation
            (seconds; measured in ``benchmarks/RESULTS.md``), later ones run the compiled code;
            func's output is checked on the first solve only. On CUDA the compiled blocks are
            captured in CUDA graphs as the eager ones are (``cuda_graph`` as above; ``False``:
            compiled without a graph). Measured on CPU only: for small states; on a 2-core CPU
            it paid off at batch 16, not at 256 or 1024. On CUDA it is tested with a
            stand-in for the capture on CPU, not yet run on a GPU.
            The adjoint's backward solve is not compiled (its dynamics call autograd).
            Default ``False``.
    """

    first_step: float | None = None
    max_num_steps: int = 100_000
    controller: PIController | None = None
    device_loop: bool | None = None
    sync_every: int = 4
    cuda_graph: bool | None = None
    per_sample: bool = False
    compile: bool = False

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
        for name in ("device_loop", "cuda_graph"):
            val = getattr(self, name)
            if val is not None and not isinstance(val, bool):
                raise InvalidTypeError(
                    f"options {name}={val!r} must be True, False or None (automatic)"
                )
        for name in ("per_sample", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidTypeError(f"options {name}={getattr(self, name)!r} must be a bool")
        if (
            isinstance(self.sync_every, bool)
            or not isinstance(self.sync_every, int)
            or self.sync_every < 1
        ):
            raise InvalidArgumentError(
                f"options sync_every={self.sync_every!r} must be a positive int"
            )
        if self.compile and self.device_loop is False:
            raise InvalidArgumentError(
                "options compile=True compiles the device loop; drop device_loop=False"
            )
        if self.per_sample and self.device_loop is False:
            raise InvalidArgumentError(
                "options per_sample=True runs on the device loop; drop device_loop=False"
            )
        if self.controller is not None and not isinstance(self.controller, PIController):
            raise InvalidTypeError(
                f"options controller must be a PIController or IController, got "
                f"{type(self.controller).__name__}"
            )


@dataclass(frozen=True)
class AdjointOptions:
    """Adjoint-only options (given inside ``adjoint_options`` next to the solver options).

    Attributes:
        norm: ``"rms"`` (error norm over the whole augmented state) or ``"seminorm"`` (ignore the
            parameter- and time-gradient channels; Kidger, Chen & Lyons 2021, "Hey, that's not an
            ODE": usually fewer backward steps, same accuracy of the gradients).
    """

    norm: Literal["rms", "seminorm"] = "rms"

    def __post_init__(self) -> None:
        if self.norm not in ("rms", "seminorm"):
            raise UnknownNameError("adjoint norm", self.norm, ["rms", "seminorm"])


@dataclass
class SolveStats:
    """Counters of one solve; pass an instance as ``odeint(..., stats=s)`` to have it filled.

    Counts accumulate over the calls the object is passed to (create a fresh one per solve).
    ``nfe_backward`` and the ``backward_*`` step counts are filled when the adjoint or reversible
    Heun backward pass runs.
    """

    nfe_forward: int = 0
    nfe_backward: int = 0
    accepted_steps: int = 0
    rejected_steps: int = 0
    backward_accepted_steps: int = 0
    backward_rejected_steps: int = 0
    #: ``per_sample=True`` only: ``(batch,)`` int64 CPU tensor, the evaluations each row needed
    #: (attempts while the row was unfinished, times evaluations per attempt, plus the start).
    #: ``nfe_forward`` counts the batched calls actually made; ``accepted_steps`` and
    #: ``rejected_steps`` are the largest per-row counts.
    nfe_per_sample: Tensor | None = field(default=None, compare=False)
    #: Whether the last forward adaptive solve replayed a CUDA graph (see ``AdaptiveOptions``).
    cuda_graph_used: bool = field(default=False, compare=False)
    #: Whether the last forward adaptive solve ran compiled code (``compile=True``).
    compiled: bool = field(default=False, compare=False)


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
    valid = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
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
