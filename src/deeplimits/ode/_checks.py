"""Argument checks and the errors of failed solves, worded once.

Every check raises a :mod:`deeplimits.errors` exception whose message names the value and the
fix; no ``assert`` is used for validation.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from deeplimits.errors import (
    InvalidArgumentError,
    InvalidTypeError,
    MaxStepsExceededError,
    NewtonError,
    NonFiniteStateError,
    StepSizeUnderflowError,
)

__all__ = [
    "MAX_BAD_IN_A_ROW",
    "blow_up_error",
    "check_finite",
    "check_t",
    "check_t_rows",
    "check_tolerances",
    "max_steps_error",
    "newton_failure_error",
    "step_nonfinite_error",
    "t_to_floats",
    "tolerance_vectors",
    "underflow_error",
]


def check_tolerances(
    rtol: float | tuple[float, ...], atol: float | tuple[float, ...], prefix: str = "",
    allow_tuples: bool = True,
) -> None:
    """Tolerances are floats >= 0, not both 0; or (``allow_tuples``, torchdiffeq's form for a
    tuple state) tuples of such, one per tensor of the state (the length is checked against
    the state by :func:`tolerance_vectors`)."""
    for name, val in ((f"{prefix}rtol", rtol), (f"{prefix}atol", atol)):
        vals = val if isinstance(val, tuple) and allow_tuples else (val,)
        for v in vals:
            if isinstance(v, Tensor) or not isinstance(v, (int, float)):
                kind = "a float or a tuple of floats (one per tensor of a tuple y0)" if (
                    allow_tuples) else "a float"
                raise InvalidTypeError(f"{name} must be {kind}, got {val!r}")
            if not v >= 0:  # also catches NaN
                raise InvalidArgumentError(f"{name}={val!r} must be >= 0")
    if not isinstance(rtol, tuple) and not isinstance(atol, tuple) and rtol == 0 and atol == 0:
        raise InvalidArgumentError(f"{prefix}rtol and {prefix}atol must not both be 0")


def tolerance_vectors(
    rtol: float | tuple[float, ...], atol: float | tuple[float, ...], sizes: list[int],
    dtype: torch.dtype, device: torch.device,
) -> tuple[float | Tensor, float | Tensor]:
    """Tuple tolerances as per-entry vectors ``(N,)`` of the flat state (floats stay floats).

    Raises:
        InvalidArgumentError: a tuple whose length is not the number of tensors of ``y0``, or
            an entry where both tolerances are 0.
    """
    if not isinstance(rtol, tuple) and not isinstance(atol, tuple):
        return rtol, atol
    out = []
    for name, val in (("rtol", rtol), ("atol", atol)):
        vals = val if isinstance(val, tuple) else (val,) * len(sizes)
        if len(vals) != len(sizes):
            raise InvalidArgumentError(
                f"{name}={val!r} has {len(vals)} entries but y0 has {len(sizes)} tensors; give "
                "one tolerance per tensor of the tuple y0, or one float"
            )
        out.append(vals)
    for i, (r, a) in enumerate(zip(*out, strict=True)):
        if r == 0 and a == 0:
            raise InvalidArgumentError(f"rtol and atol of y0[{i}] must not both be 0")
    return tuple(  # type: ignore[return-value]
        torch.cat([torch.full((n,), float(v), dtype=dtype, device=device)
                   for n, v in zip(sizes, vals, strict=True)])
        for vals in out
    )


def check_t(t: Any, dtype: torch.dtype, device: torch.device) -> list[float]:
    """``t`` must be a 1-D floating tensor on ``device``, strictly monotonic (any floating dtype:
    the solver steps in ``dtype``, y0's, as torchdiffeq does).

    Returns the times as Python floats (one host transfer; the value checks run on them, which
    costs less than the several reductions and syncs of tensor checks for the usual short t).
    """
    if not isinstance(t, Tensor):
        raise InvalidTypeError(
            f"t must be a torch.Tensor, got {type(t).__name__}; use torch.tensor(t, dtype=...)"
        )
    if not t.is_floating_point():
        raise InvalidTypeError(
            f"t must have a floating dtype, got {t.dtype}; use t.to({dtype})"
        )
    if t.ndim != 1 or t.numel() == 0:
        raise InvalidArgumentError(
            f"t must be 1-D with at least one time, got shape {tuple(t.shape)}; "
            "pass e.g. torch.linspace(t0, t1, n)"
        )
    if t.device != device:
        raise InvalidArgumentError(
            f"t is on {t.device} but y0 is on {device}; use t.to(y0.device)"
        )
    ts = t_to_floats(t)
    if len(ts) >= 2:
        if not all(math.isfinite(x) for x in ts):
            raise InvalidArgumentError(f"t contains NaN or inf: {ts}")
        inc = ts[1] > ts[0]
        for i in range(1, len(ts)):
            if not (ts[i] > ts[i - 1] if inc else ts[i] < ts[i - 1]):
                raise InvalidArgumentError(
                    f"t must be strictly increasing or strictly decreasing, but t[{i}]="
                    f"{ts[i]!r} follows t[{i - 1}]={ts[i - 1]!r}; sort t (torch.sort) and "
                    "remove duplicates"
                )
    return ts


def check_t_rows(
    t: Tensor, dtype: torch.dtype, device: torch.device, batch: int
) -> list[list[float]]:
    """``t`` of shape ``(batch, T)`` for ``per_sample``: each row strictly monotonic, all rows in
    one direction; returns the rows as floats (one host transfer)."""
    if not t.is_floating_point() or t.device != device:
        raise InvalidTypeError(
            f"t must be a floating tensor on y0's device ({device}), got {t.dtype} on "
            f"{t.device}; use t.to(y0)"
        )
    if t.shape[0] != batch or t.shape[1] == 0:
        raise InvalidArgumentError(
            f"2-D t must have shape (batch, T) = ({batch}, T >= 1) for per_sample=True, "
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
    return rows.tolist()  # type: ignore[no-any-return]


def t_to_floats(t: Tensor) -> list[float]:
    """The times as Python floats (one host transfer)."""
    return t.detach().to("cpu", torch.float64).tolist()


def check_finite(y: Tensor, t: float, dt: float) -> None:
    """Raise NonFiniteStateError if ``y`` (the state at ``t``) holds NaN/inf.

    One reduction and one host sync: ``sum(y)`` is finite when every entry is (the exact
    ``isfinite`` test runs only when the sum overflows or is NaN).
    """
    total = (y.detach() if y.requires_grad else y).sum()
    if not math.isfinite(float(total)) and not bool(torch.isfinite(y).all()):
        raise step_nonfinite_error(t, dt)


def step_nonfinite_error(t: float, dt: float) -> NonFiniteStateError:
    """The state after a fixed step ending at ``t`` holds NaN/inf."""
    return NonFiniteStateError(
        f"the ODE state became NaN or inf at t={t!r} (step dt={dt!r}); the solution may blow "
        "up there, or the step is too large for an explicit method (smaller step_size, or an "
        "adaptive method)"
    )


# The failures of the adaptive loops (host and device), worded once.

#: NaN/inf trial states in a row before an adaptive solve is declared blown up (every loop).
MAX_BAD_IN_A_ROW = 10


def max_steps_error(max_num_steps: int, t: float, t_end: str) -> MaxStepsExceededError:
    """``max_num_steps`` attempts made, stopped at ``t`` on the way to ``t_end`` (text)."""
    return MaxStepsExceededError(
        f"max_num_steps={max_num_steps} reached at t={t!r} (integrating to t={t_end}); raise "
        "options max_num_steps, loosen rtol/atol, or the problem may be stiff (use an implicit "
        "solver)"
    )


def blow_up_error(t: float, dt: float) -> NonFiniteStateError:
    """Steps shrank to ``dt`` just after ``t`` and every trial state still held NaN/inf."""
    return NonFiniteStateError(
        f"the ODE state became NaN or inf just after t={t!r} (steps shrank to dt={dt!r}); the "
        "solution blows up there, or func returns NaN/inf"
    )


def newton_failure_error(method: str, t: float, dt: float) -> NewtonError:
    """Every trial step of the implicit ``method`` after ``t``, down to ``dt``, failed in its
    Newton iteration (diverged, or ``func`` gave NaN/inf at an iterate)."""
    return NewtonError(
        f"{method}: Newton's method failed on every step tried just after t={t!r} (steps "
        f"shrank to dt={dt!r}): its iterates diverged or func returned NaN/inf at them. Check "
        "that func is finite near the solution and differentiable (its Jacobian by "
        "torch.func.jacrev is what Newton uses), or try an explicit method (e.g. dopri5)"
    )


def underflow_error(t: float, dt: float, dt_min: float) -> StepSizeUnderflowError:
    """The next step ``dt`` at ``t`` is below the smallest usable step."""
    return StepSizeUnderflowError(
        f"step size underflow at t={t!r}: dt={dt!r} is below the smallest usable step "
        f"(controller dt_min={dt_min}); the problem may be stiff or singular near t, or "
        "rtol/atol are too tight for the dtype (loosen them or use float64)"
    )
