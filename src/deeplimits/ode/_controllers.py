"""Step-size controllers: the one formula that proposes the next step, for every loop.

The controllers follow Hairer, Norsett & Wanner (Solving ODEs I, sec. II.4) and Söderlind (2002),
"Automatic control and adaptive time-stepping". With the scaled error ``r_n`` of the step just
tried (RMS norm, accepted if ``r_n <= 1``), the scaled errors ``r_{n-1}``, ``r_{n-2}`` of the
last two accepted steps and the error order ``k`` (embedded order + 1), an accepted step
proposes::

    h_new = h * safety * r_n**(-(p + i + d)/k) * r_{n-1}**((p + 2d)/k) * r_{n-2}**(-d/k)

clipped to ``[factor_min, factor_max]`` (``p, i, d`` = ``pcoeff, icoeff, dcoeff``; ``d = 0`` is
the PI controller, ``p = d = 0, i = 1`` the classic I controller). After a rejection only the I
part is used (``safety * r_n**(-1/k)``) and growth is capped at 1; a NaN/inf trial state
shrinks by ``factor_min``.

:meth:`PIDController.factor` owns the formula (its exponents computed in one place) for Python
floats (the host loop: one step, no tensors built) and tensors (the batched step: one value per
row, ``(R, 1)``, no host syncs), so every loop takes the same decisions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from torch import Tensor

from deeplimits.errors import InvalidArgumentError

__all__ = ["DEFAULT_CONTROLLER", "IController", "PIController", "PIDController", "as_times"]

_X = TypeVar("_X", float, Tensor)
_B = TypeVar("_B", bool, Tensor)

#: Smallest error ratio remembered for the next proposal (an exact step would make r = 0).
RATIO_FLOOR = 1e-4


@dataclass(frozen=True)
class PIDController:
    """Proportional-integral-derivative step-size controller (Söderlind 2002).

    The general form; :class:`PIController` (``dcoeff = 0``) and :class:`IController`
    (``pcoeff = dcoeff = 0``, ``icoeff = 1``) are its common cases. Which one needs the fewest
    evaluations depends on the problem: ``benchmarks/controllers.py`` measures them
    (``benchmarks/RESULTS.md``); the default (:data:`DEFAULT_CONTROLLER`) is the I controller.

    Attributes:
        pcoeff: proportional coefficient.
        icoeff: integral coefficient (> 0).
        dcoeff: derivative coefficient.
        safety: multiplies every proposed factor, in ``(0, 1]``.
        factor_min: smallest factor per step (also after a rejection), in ``(0, 1)``.
        factor_max: largest factor per accepted step, ``> 1``.
        dt_min: smallest allowed ``|dt|``; a smaller proposal raises
            ``StepSizeUnderflowError``.
        dt_max: largest allowed ``|dt|`` (``None``: unbounded); proposals are clipped to it.
        min_step: torchdiffeq's ``min_step``: proposals are raised to it, and a step of at most
            this size is accepted whatever its error (a solve that would need smaller steps
            goes on with a larger error instead of failing; ``dt_min`` fails). Default 0.
        step_ts: times a step must end at exactly (torchdiffeq's ``step_t``): where the
            dynamics change fast, or an output must not be interpolated. Times outside the
            solve's span are ignored.
        jump_ts: times where ``func`` is discontinuous (torchdiffeq's ``jump_t``): a step ends
            there, the step's stages at the jump time are evaluated one ulp before it (the left
            limit) and the next step starts with a fresh evaluation one ulp after it (the right
            limit), instead of reusing the last stage. Costs one evaluation per jump (on the
            device loop one per attempt while any jump time is set).

    Raises:
        InvalidArgumentError: a coefficient or bound outside its range (the message names it).
    """

    pcoeff: float = 0.0
    icoeff: float = 1.0
    dcoeff: float = 0.0
    safety: float = 0.9
    factor_min: float = 0.2
    factor_max: float = 10.0
    dt_min: float = 0.0
    dt_max: float | None = None
    min_step: float = 0.0
    step_ts: tuple[float, ...] = ()
    jump_ts: tuple[float, ...] = ()
    _cache: dict[int, tuple[float, float, float, float]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        for name in ("step_ts", "jump_ts"):
            object.__setattr__(self, name, as_times(f"controller {name}", getattr(self, name)))
        if self.icoeff <= 0 or self.pcoeff < 0 or self.dcoeff < 0:
            raise InvalidArgumentError(
                f"controller needs icoeff > 0 and pcoeff, dcoeff >= 0, got icoeff={self.icoeff}, "
                f"pcoeff={self.pcoeff}, dcoeff={self.dcoeff}"
            )
        if not 0 < self.safety <= 1:
            raise InvalidArgumentError(f"controller safety={self.safety} must lie in (0, 1]")
        if not 0 < self.factor_min < 1 < self.factor_max:
            raise InvalidArgumentError(
                f"controller needs 0 < factor_min < 1 < factor_max, got "
                f"factor_min={self.factor_min}, factor_max={self.factor_max}"
            )
        if not (isinstance(self.min_step, (int, float)) and 0 <= self.min_step < math.inf) or (
            self.dt_max is not None and self.min_step > self.dt_max
        ):
            raise InvalidArgumentError(
                f"controller min_step={self.min_step!r} must be a number in [0, dt_max]"
            )
        if self.dt_min < 0 or (self.dt_max is not None and self.dt_max <= self.dt_min):
            raise InvalidArgumentError(
                f"controller needs 0 <= dt_min < dt_max, got dt_min={self.dt_min}, "
                f"dt_max={self.dt_max}"
            )

    def forced_times(self, t0: float, t_end: float) -> list[tuple[float, bool]]:
        """``(time, is_jump)`` of the step and jump times strictly between ``t0`` and
        ``t_end``, in the direction of integration (a time in both counts as a jump)."""
        if not self.step_ts and not self.jump_ts:
            return []
        d = 1.0 if t_end > t0 else -1.0
        inside = {x: False for x in self.step_ts if d * (x - t0) > 0 and d * (t_end - x) > 0}
        inside.update({x: True for x in self.jump_ts if d * (x - t0) > 0 and d * (t_end - x) > 0})
        return sorted(inside.items(), key=lambda item: d * item[0])

    def factor(
        self,
        ratio: _X,
        prev: _X | float,
        prev2: _X | float,
        accepted: bool | Tensor,
        finite: bool | Tensor,
        error_order: int,
    ) -> _X:
        """Multiplier for the step size just tried.

        One formula, evaluated on Python floats (the host loop: one step, no tensors built) or
        on tensors (the batched step: one value per row, no host syncs); a test pins that both
        give the same numbers.

        Args:
            ratio: scaled error of the step just tried (float, or ``(R, 1)`` tensor per row).
            prev: scaled error of the last accepted step (1.0 at the start).
            prev2: scaled error of the accepted step before it (1.0 at the start).
            accepted: the step was accepted (``ratio <= 1`` and finite), per row for tensors.
            finite: the trial state and ``ratio`` are finite.
            error_order: order of the error estimate (embedded order + 1).

        Returns:
            The factor, a float or a tensor like ``ratio``.
        """
        e_now, e_prev, e_prev2, e_rej = self._exponents(error_order)
        if isinstance(ratio, Tensor):
            grow = ratio.pow(e_now) * self.safety
            if e_prev:  # skipped for the I controller: no work for a factor 1
                grow = grow * prev.pow(e_prev)  # type: ignore[union-attr]
            if e_prev2:
                grow = grow * prev2.pow(e_prev2)  # type: ignore[union-attr]
            shrink = (ratio.pow(e_rej) * self.safety).clamp(self.factor_min, 1.0)
            grow = grow.clamp(self.factor_min, self.factor_max)
            return torch.where(finite, torch.where(accepted, grow, shrink), self.factor_min)  # type: ignore[arg-type,return-value]
        if not finite:
            return self.factor_min  # type: ignore[return-value]
        if ratio == 0.0:  # an exact step; Python raises on 0.0 ** negative, a tensor gives inf
            return self.factor_max if accepted else 1.0  # type: ignore[return-value]
        if not accepted:
            return min(1.0, max(self.factor_min, ratio**e_rej * self.safety))  # type: ignore[return-value]
        grow = ratio**e_now * self.safety
        if e_prev:
            grow = grow * prev**e_prev
        if e_prev2:
            grow = grow * prev2**e_prev2
        return min(self.factor_max, max(self.factor_min, grow))  # type: ignore[return-value]

    def _exponents(self, error_order: int) -> tuple[float, float, float, float]:
        """The exponents of ``r_n``, ``r_{n-1}``, ``r_{n-2}`` after an accepted step and of
        ``r_n`` after a rejection, for error order ``k``."""
        cached = self._cache.get(error_order)
        if cached is None:
            k = float(error_order)
            p, i, d = self.pcoeff, self.icoeff, self.dcoeff
            cached = (-(p + i + d) / k, (p + 2.0 * d) / k, -d / k, -1.0 / k)
            self._cache[error_order] = cached
        return cached

    def clip(self, h_abs: _X) -> _X:
        """``|dt|`` limited to ``[min_step, dt_max]``."""
        if self.dt_max is None and not self.min_step:
            return h_abs
        if isinstance(h_abs, Tensor):
            return h_abs.clamp(min=self.min_step or None, max=self.dt_max)
        if self.dt_max is not None:
            h_abs = min(h_abs, self.dt_max)  # type: ignore[assignment]
        return max(h_abs, self.min_step)  # type: ignore[return-value]

    def accept(self, ok: _B, h_abs: float | Tensor) -> _B:
        """Whether a step of size ``h_abs`` whose error test gave ``ok`` (finite and
        ``ratio <= 1``) is accepted: also a step of at most ``min_step``."""
        if not self.min_step:
            return ok
        if isinstance(ok, Tensor):
            return ok | (h_abs <= self.min_step)  # type: ignore[return-value,operator]
        return ok or h_abs <= self.min_step  # type: ignore[return-value,operator]

    def smallest_step(self, t: _X) -> _X:
        """The smallest usable ``|dt|`` at time ``t``: ``dt_min``, or 8 ulps of ``max(1, |t|)``
        (a smaller step would not move ``t``)."""
        if isinstance(t, Tensor):
            return (t.abs().clamp(min=1.0) * _EPS8).clamp(min=self.dt_min)
        return max(self.dt_min, _EPS8 * max(1.0, abs(t)))  # type: ignore[return-value]


_EPS8 = 8 * 2.220446049250313e-16


def as_times(name: str, value: object) -> tuple[float, ...]:
    """``value`` (a sequence or 1-D tensor of finite numbers) as a sorted tuple of floats;
    ``name`` (e.g. ``"controller step_ts"``) words the error."""
    if isinstance(value, Tensor):
        if value.ndim != 1:
            raise InvalidArgumentError(
                f"{name} must be 1-D, got shape {tuple(value.shape)}"
            )
        value = value.detach().to("cpu", torch.float64).tolist()
    try:
        out = tuple(sorted(float(x) for x in value))  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"{name}={value!r} must be a sequence of numbers (or a 1-D tensor)"
        ) from None
    if not all(math.isfinite(x) for x in out):
        raise InvalidArgumentError(f"{name}={out!r} must be finite times")
    return out


@dataclass(frozen=True)
class PIController(PIDController):
    """Proportional-integral controller: a :class:`PIDController` with ``dcoeff = 0``.

    ``PIController()`` (pcoeff 0.2, icoeff 0.8) damps the step after error spikes: fewer
    rejected steps, sometimes more evaluations (``benchmarks/RESULTS.md``). Use it where
    rejections are costly or the error oscillates.
    """

    pcoeff: float = 0.2
    icoeff: float = 0.8


@dataclass(frozen=True)
class IController(PIController):
    """Integral (classic) controller: ``h * safety * r**(-1/k)``; a :class:`PIController` with
    ``pcoeff=0, icoeff=1``."""

    pcoeff: float = 0.0
    icoeff: float = 1.0


#: The controller of ``odeint`` when ``options`` name none: the integral controller, as in
#: torchdiffeq, torchode and scipy (the evidence: ``benchmarks/controllers.py``).
DEFAULT_CONTROLLER: PIDController = IController()
