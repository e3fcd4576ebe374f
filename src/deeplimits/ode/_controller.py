"""Step-size controllers and error norms.

The controllers follow Hairer, Norsett & Wanner (Solving ODEs I, sec. II.4) and Söderlind (2002),
"Automatic control and adaptive time-stepping": with the scaled error ``r_n`` (RMS norm, accept
if ``r_n <= 1``) and the error order ``k`` (embedded order + 1), the new step is
``h * safety * r_n**(-(pcoeff + icoeff)/k) * r_{n-1}**(pcoeff/k)``, clipped to
``[factor_min, factor_max]``. After a rejection only the I part is used and growth is capped at 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from deeplimits.errors import InvalidArgumentError

__all__ = ["DEFAULT_CONTROLLER", "IController", "PIController", "error_ratio"]


@dataclass(frozen=True)
class PIController:
    """Proportional-integral step-size controller (Söderlind 2002).

    ``PIController()`` (pcoeff 0.2, icoeff 0.8) grows the step almost as fast as the classic I
    controller and damps it after error spikes: fewer rejected steps. It is not the default:
    measured by ``benchmarks/controllers.py`` (dopri5 and tsit5, rtol 1e-4/1e-6/1e-8; table in
    ``benchmarks/RESULTS.md``), on an MLP neural ODE it needs as many evaluations as the I
    controller or up to 1.3x more (dopri5, batch 16, rtol 1e-6: 26 against 20; in none of the
    12 MLP cases fewer), and on Lotka-Volterra and Van der Pol (mu 1 and 25) it takes -5.3 % to
    +2.1 % of the I controller's evaluations, with fewer rejections (Van der Pol mu=25, tsit5, rtol
    1e-6: 29 against 105). OrdinaryDiffEq.jl's (0.4, 0.3) needs up to 2.8x on the MLP (tsit5,
    rtol 1e-8: 1046 against 368). Use it where rejections are costly or the error oscillates.

    Attributes:
        pcoeff: proportional coefficient (0 gives the classic I controller).
        icoeff: integral coefficient.
        safety: multiplies every proposed factor.
        factor_min: smallest factor per step (also after a rejection).
        factor_max: largest factor per accepted step.
        dt_min: smallest allowed ``|dt|``; smaller raises ``StepSizeUnderflowError``.
        dt_max: largest allowed ``|dt|`` (``None``: unbounded).
    """

    pcoeff: float = 0.2
    icoeff: float = 0.8
    safety: float = 0.9
    factor_min: float = 0.2
    factor_max: float = 10.0
    dt_min: float = 0.0
    dt_max: float | None = None

    def __post_init__(self) -> None:
        if self.icoeff <= 0 or self.pcoeff < 0:
            raise InvalidArgumentError(
                f"controller needs icoeff > 0 and pcoeff >= 0, got icoeff={self.icoeff}, "
                f"pcoeff={self.pcoeff}"
            )
        if not 0 < self.safety <= 1:
            raise InvalidArgumentError(f"controller safety={self.safety} must lie in (0, 1]")
        if not 0 < self.factor_min < 1 < self.factor_max:
            raise InvalidArgumentError(
                f"controller needs 0 < factor_min < 1 < factor_max, got "
                f"factor_min={self.factor_min}, factor_max={self.factor_max}"
            )
        if self.dt_min < 0 or (self.dt_max is not None and self.dt_max <= self.dt_min):
            raise InvalidArgumentError(
                f"controller needs 0 <= dt_min < dt_max, got dt_min={self.dt_min}, "
                f"dt_max={self.dt_max}"
            )

    def factor(self, ratio: float, prev_ratio: float, accepted: bool, error_order: int) -> float:
        """Multiplier for the step size.

        Args:
            ratio: scaled error of the step just tried (``<= 1`` means accepted).
            prev_ratio: scaled error of the last accepted step (1.0 at the start).
            accepted: whether the step was accepted.
            error_order: order of the error estimate (embedded order + 1).
        """
        if ratio == 0.0:
            return self.factor_max if accepted else 1.0
        if not accepted:
            f = self.safety * ratio ** (-1.0 / error_order)
            return min(1.0, max(self.factor_min, f))
        f = (
            self.safety
            * ratio ** (-(self.pcoeff + self.icoeff) / error_order)
            * prev_ratio ** (self.pcoeff / error_order)
        )
        return min(self.factor_max, max(self.factor_min, f))


@dataclass(frozen=True)
class IController(PIController):
    """Integral (classic) controller: ``h * safety * r**(-1/k)``; a :class:`PIController` with
    ``pcoeff=0, icoeff=1``."""

    pcoeff: float = 0.0
    icoeff: float = 1.0


#: The controller of ``odeint`` when ``options`` name none: the integral controller, as in
#: torchdiffeq, torchode and scipy. Neural ODEs are this engine's main workload, and there it
#: never took more evaluations than ``PIController()`` (``benchmarks/controllers.py``).
DEFAULT_CONTROLLER: PIController = IController()


def error_ratio(
    err: Tensor, y0: Tensor, y1: Tensor, rtol: float, atol: float, norm_dims: int | None = None
) -> Tensor:
    """RMS scaled error ``sqrt(mean((err / (atol + rtol*max(|y0|, |y1|)))**2))`` as a 0-d tensor.

    ``norm_dims`` restricts the norm to the first ``norm_dims`` entries of the flat state (the
    adjoint's seminorm, Kidger, Chen & Lyons 2021, "Hey, that's not an ODE"). A NaN/inf anywhere
    in ``y1`` makes the result NaN, so the caller needs one host sync per step only.
    """
    # Step-size control is not differentiated: no graph, and float() on the result is allowed.
    with torch.no_grad():
        if norm_dims is not None:
            err, y0n, y1n = err[:norm_dims], y0[:norm_dims], y1[:norm_dims]
        else:
            y0n, y1n = y0, y1
        scale = torch.maximum(y0n.abs(), y1n.abs()).mul_(rtol).add_(atol)  # (N,)
        ratio = torch.linalg.vector_norm(err / scale) / math.sqrt(max(err.numel(), 1))
        # 0 * sum(y1) is NaN iff y1 holds a NaN/inf: catches overflow that the scale would hide.
        return ratio + y1.sum() * 0.0
