"""Exceptions raised by deeplimits.

Every error deeplimits raises on bad input derives from :class:`DeeplimitsError` and from the
built-in exception a caller would expect (``ValueError`` for bad values, ``TypeError`` for bad
types, ``RuntimeError`` for failures during a computation), so both ``except DeeplimitsError`` and
``except ValueError`` work. Messages name the argument, show the value and say the fix.
"""

from __future__ import annotations

import difflib

__all__ = [
    "DeeplimitsError",
    "ExperimentError",
    "InvalidArgumentError",
    "InvalidTypeError",
    "MaxStepsExceededError",
    "NewtonError",
    "NonFiniteStateError",
    "SolverError",
    "StepSizeUnderflowError",
    "UnknownNameError",
    "UnsupportedModelError",
]


class DeeplimitsError(Exception):
    """Base class of every error raised by deeplimits."""


class InvalidArgumentError(DeeplimitsError, ValueError):
    """An argument has a bad value (wrong shape, range, monotonicity, unknown option...)."""


class InvalidTypeError(DeeplimitsError, TypeError):
    """An argument has a bad type or dtype."""


class UnknownNameError(InvalidArgumentError):
    """A name (method, option, experiment, preset...) is not one of the valid ones.

    The message lists the valid names.
    """

    def __init__(self, what: str, value: object, valid: list[str] | tuple[str, ...]) -> None:
        self.what = what
        self.value = value
        self.valid = tuple(valid)
        close = difflib.get_close_matches(str(value), [str(v) for v in self.valid], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        super().__init__(
            f"unknown {what} {value!r}; valid choices: {', '.join(map(str, self.valid))}{hint}"
        )


class SolverError(DeeplimitsError, RuntimeError):
    """An ODE solve failed while running."""


class NonFiniteStateError(SolverError):
    """The ODE state or its derivative became NaN or infinite."""


class StepSizeUnderflowError(SolverError):
    """The adaptive step size became too small relative to t."""


class MaxStepsExceededError(SolverError):
    """An adaptive solve needed more than ``max_num_steps`` steps."""


class NewtonError(SolverError):
    """An implicit method's Newton iteration cannot work: ``func``'s Jacobian holds NaN/inf,
    the iteration matrix ``I - h gamma J`` is singular, or the iteration failed on every step
    size down to the smallest."""


class UnsupportedModelError(DeeplimitsError, ValueError):
    """A diagnostic was given a model (or layer) it cannot analyse; the message says which layer."""


class ExperimentError(DeeplimitsError, RuntimeError):
    """An experiment could not run or its cached result could not be used."""
