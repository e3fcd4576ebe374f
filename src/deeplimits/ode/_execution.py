"""How a solve runs (as opposed to what it computes): :class:`ExecutionOptions`.

The rules between the options are checked here, in one place; the rules between the options
and the solver, the state's device and autograd are checked by the dispatcher
(:mod:`deeplimits.ode._dispatch`), which picks the loop.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from deeplimits.errors import InvalidArgumentError, InvalidTypeError, UnknownNameError
from deeplimits.ode._capture import CaptureBackend

__all__ = ["ADAPTIVE_ONLY", "FINITE_CHECKS", "ExecutionOptions"]

FINITE_CHECKS = ("auto", "every_step", "queued")
#: Fields that only the adaptive methods use (the fixed-step loop has no device loop).
ADAPTIVE_ONLY = ("device_loop", "sync_every", "cuda_graph", "per_sample", "capture")


@dataclass(frozen=True)
class ExecutionOptions:
    """Execution choices of a solve; the numbers it computes do not depend on them (up to
    round-off), except ``per_sample``, which gives every batch row its own steps.

    Pass as ``odeint(..., execution=ExecutionOptions(...))`` or as keys of the ``options``
    dict (torchdiffeq style). Speed of each choice: ``benchmarks/RESULTS.md``.

    Attributes:
        device_loop: adaptive methods only. ``True``: the device-resident loop: accept/reject,
            the next step size and the output interpolation are tensor ops (``torch.where``),
            time is a tensor, and the host reads one small flag tensor every ``sync_every``
            attempts. ``False``: the host loop (one host sync per step; fewest kernels, fastest
            on CPU). ``None`` (default): on for CUDA states, off otherwise. The device loop
            makes up to ``sync_every - 1`` wasted attempts after the end (counted in
            ``nfe_forward``), and may exceed ``max_num_steps`` by as many.
        sync_every: attempts between host syncs of the device loop (default 4).
        cuda_graph: replay the device loop's blocks of ``sync_every`` attempts (and the solve's
            start) from captured graphs. ``None`` (default): on where the capture backend
            serves the state's device (CUDA), autograd is not recording (``torch.no_grad()``,
            the adjoint's forward pass) and ``func`` is an ``nn.Module`` (cached per module
            and shapes and reused while the module's parameter storage stays the same; in-place
            updates such as ``optimizer.step()`` are seen by the replays). ``True``: required
            (raises if impossible). ``False``: never. ``func`` must then be capturable: no
            host syncs, no Python side effects that must run per call (they run once).
        per_sample: each batch row (dim 0 of ``y0``) gets its own time, step size, error norm
            and accept/reject, as in torchode; ``func`` then receives ``t`` of shape
            ``(batch,)``, and ``odeint``'s ``t`` may be 2-D ``(batch, T)``: one row of output
            times per batch row (own start and end; every row in the same direction). Rows
            that reached the end stop changing (they are still computed in the batch);
            ``SolveStats.nfe_per_sample`` counts the evaluations each row needed. Uses the
            device loop on every device.
        compile: compile the loop together with ``func`` by ``torch.compile`` (``func``
            inlined). Adaptive methods: the device loop's start and blocks of attempts;
            fixed-step methods: runs of equal steps between output times, in chunks of 10 (a
            step with an output time inside it, and the first step, run eagerly). Cached per
            module, shapes and options; needs autograd off and an ``nn.Module`` func (use
            ``torch.no_grad()`` or ``odeint_adjoint``, whose forward pass qualifies). The first
            solve of each module and shape pays the compilation. Pays off for small states
            (measured: ``benchmarks/RESULTS.md``); the adjoint's backward solve is not
            compiled. Not available for ``reversible_heun``.
        capture: the capture backend of ``cuda_graph`` (``None``: :class:`CudaGraphCapture`;
            :class:`EagerCapture` runs the graph path on CPU, for tests).
        finite_check: when a fixed-step solve looks at each new state for NaN/inf:
            ``"every_step"`` (one host sync per step), ``"queued"`` (flags read every 16 steps
            and at the end, so an accelerator's queue never drains; the first bad step is
            still the one reported), ``"auto"``: every step on CPU, queued elsewhere.

    Raises:
        InvalidArgumentError / InvalidTypeError: a bad value, or two options that conflict
            (the message names both).
    """

    device_loop: bool | None = None
    sync_every: int = 4
    cuda_graph: bool | None = None
    per_sample: bool = False
    compile: bool = False
    capture: CaptureBackend | None = None
    finite_check: Literal["auto", "every_step", "queued"] = "auto"

    def __post_init__(self) -> None:
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
        if self.capture is not None and not isinstance(self.capture, CaptureBackend):
            raise InvalidTypeError(
                f"options capture={self.capture!r} must be a CaptureBackend (CudaGraphCapture() "
                "or EagerCapture()) or None"
            )
        if self.finite_check not in FINITE_CHECKS:
            raise UnknownNameError("options finite_check", self.finite_check, FINITE_CHECKS)
        if self.compile and self.device_loop is False:
            raise InvalidArgumentError(
                "options compile=True compiles the device loop; drop device_loop=False"
            )
        if self.per_sample and self.device_loop is False:
            raise InvalidArgumentError(
                "options per_sample=True runs on the device loop; drop device_loop=False"
            )

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def adaptive_only_set(self) -> list[str]:
        """The adaptive-only fields set to something other than their default."""
        default = ExecutionOptions()
        return [n for n in ADAPTIVE_ONLY if getattr(self, n) != getattr(default, n)]
