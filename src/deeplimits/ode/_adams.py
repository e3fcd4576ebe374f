"""Adams linear multistep methods on a fixed grid (torchdiffeq's ``explicit_adams``,
``implicit_adams`` and ``fixed_adams``): the coefficients, the history a solve carries between
steps, the step and its output interpolation.

The method (Hairer, Nørsett & Wanner, *Solving ODEs I*, §III.1; torchdiffeq 0.2.5's
``AdamsBashforthMoulton``, whose schedule this follows step for step):

- the history holds the evaluations ``f(t_n, y_n), f(t_{n-1}, y_{n-1}), ...`` at the starts of
  the previous steps, newest first, at most ``max_order - 1`` of them;
- a step first evaluates ``f0 = f(t_n, y_n)`` and puts it in front of the history; with
  ``k = len(history)`` values, ``k < 3``: one ``rk4`` step (Kutta's 3/8 rule, ``f0`` its first
  stage: the start-up of the first two steps); else the ``k``-step Adams–Bashforth formula
  ``dy = h sum_j b_j f_{n-j}`` (order ``k``);
- implicit: the ``k``-step Adams–Bashforth value predicts, the ``(k+1)``-th order
  Adams–Moulton formula ``dy = h m_0 f(t_{n+1}, y_n + dy) + h sum_j m_{j+1} f_{n-j}`` corrects by
  functional iteration, at most ``max_iters`` times, until two iterates agree within
  ``atol + rtol max(|dy_old|, |dy|)`` in the max norm. An iteration that does not converge
  keeps its last iterate, warns, and drops the oldest history value (torchdiffeq's behaviour).

Coefficients are computed here exactly (rational integrals of the Lagrange basis), not copied
from a table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cache

import torch
from torch import Tensor

from deeplimits._warnings import warn
from deeplimits.ode._func import FlatFunc
from deeplimits.ode._options import SolveStats
from deeplimits.ode._stepper import rk_step
from deeplimits.ode._tableaux import TABLEAUX

__all__ = [
    "MAX_ORDER",
    "MIN_ORDER",
    "RK4",
    "AdamsHistory",
    "AdamsSettings",
    "adams_bashforth",
    "adams_interpolate",
    "adams_moulton",
    "adams_step",
]

#: The largest ``max_order`` (torchdiffeq's ``_MAX_ORDER``; its default).
MAX_ORDER = 12
#: The smallest ``max_order`` for which the method is not ``rk4`` throughout.
MIN_ORDER = 4
#: The start-up method (and, with ``perturb``, the source of the stage times).
RK4 = TABLEAUX["rk4"]


def _integral_of_lagrange_basis(nodes: Sequence[int]) -> list[Fraction]:
    """``int_0^1 l_j(s) ds`` for the Lagrange basis ``l_j`` on ``nodes`` (exact)."""
    out = []
    for j, xj in enumerate(nodes):
        poly = [Fraction(1)]  # coefficients of s^0, s^1, ...
        for m, xm in enumerate(nodes):
            if m == j:
                continue
            den = Fraction(xj - xm)
            new = [Fraction(0)] * (len(poly) + 1)
            for p, c in enumerate(poly):  # multiply by (s - xm) / (xj - xm)
                new[p + 1] += c / den
                new[p] -= c * xm / den
            poly = new
        out.append(sum((c / (p + 1) for p, c in enumerate(poly)), Fraction(0)))
    return out


@cache
def adams_bashforth(k: int) -> tuple[Fraction, ...]:
    """The ``k``-step Adams–Bashforth weights ``b_0..b_{k-1}`` (order ``k``):
    ``y_{n+1} = y_n + h sum_j b_j f_{n-j}``. ``k=4``: ``(55, -59, 37, -9) / 24``."""
    return tuple(_integral_of_lagrange_basis([-j for j in range(k)]))


@cache
def adams_moulton(k: int) -> tuple[Fraction, ...]:
    """The order-``k`` Adams–Moulton weights ``m_0..m_{k-1}``: ``y_{n+1} = y_n + h (m_0
    f_{n+1} + sum_{j>=1} m_j f_{n+1-j})``. ``k=4``: ``(9, 19, -5, 1) / 24``."""
    return tuple(_integral_of_lagrange_basis([1 - j for j in range(k)]))


@dataclass
class AdamsHistory:
    """The carry of one Adams solve: the evaluations at the starts of the previous steps,
    newest first (at most ``maxlen``). Created by ``Adams.new_carry``, passed to every step of
    the solve by the fixed-step loop, updated in place by :func:`adams_step`."""

    maxlen: int
    f: list[Tensor] = field(default_factory=list)

    def push(self, f0: Tensor) -> None:
        self.f.insert(0, f0)
        del self.f[self.maxlen:]


@dataclass(frozen=True)
class AdamsSettings:
    """What one solve's Adams step needs besides the state: predictor-corrector or not, the
    order cap, the corrector's iterations and tolerances (``rtol``/``atol``: floats or
    per-entry vectors of the flat state), and the statistics to count failures into."""

    implicit: bool
    max_order: int = MAX_ORDER
    max_iters: int = 4
    rtol: float | Tensor = 1e-7
    atol: float | Tensor = 1e-9
    stats: SolveStats | None = None


def adams_step(
    settings: AdamsSettings, f: FlatFunc, t: float, y: Tensor, h: float,
    k1: Tensor | None, times: Sequence[float] | None, carry: AdamsHistory,
) -> tuple[Tensor, None, list[Tensor]]:
    """One Adams step from ``(t, y)`` of size ``h`` (signed), updating ``carry``.

    Args:
        settings: the method and its options.
        f: the flat function; ``y``: the flat state ``(N,)`` (any shape works).
        k1: ``f(t, y)`` when the caller has it (evaluated here otherwise).
        times: the perturbed stage times (``perturb=True``: ``times[0]`` for ``f0``,
            ``times[-1]`` for the corrector's evaluations at the step's end), else ``None``.
        carry: the history; ``f0`` is pushed in front.

    Returns:
        ``(y1, None, [f0, y1])``: the new state, no error estimate, and what
        :func:`adams_interpolate` needs (the loop may append ``f(t + h, y1)``).

    Warns:
        UserWarning: the corrector did not converge in ``max_iters`` iterations (the step keeps
            the last iterate, as torchdiffeq; ``SolveStats.corrector_failures`` counts it).
    """
    f0 = k1 if k1 is not None else f(times[0] if times is not None else t, y)
    carry.push(f0)
    hist = carry.f
    k = min(len(hist), settings.max_order - 1)
    if k < MIN_ORDER - 1:
        y1, _, _ = rk_step(RK4, f, t, y, h, f0, times)
        return y1, None, [f0, y1]
    dy = sum((h * float(b)) * fi for b, fi in zip(adams_bashforth(k), hist, strict=True))
    if settings.implicit:
        m = adams_moulton(k + 1)
        delta = h * sum(float(mj) * fi for mj, fi in zip(m[1:], hist, strict=True))
        t1 = times[-1] if times is not None else t + h
        hm0 = h * float(m[0])
        converged = False
        for _ in range(settings.max_iters):
            dy_old = dy
            dy = hm0 * f(t1, y + dy) + delta
            scale = settings.atol + settings.rtol * torch.maximum(dy_old.abs(), dy.abs())
            converged = bool(((dy_old - dy).abs() / scale).max() < 1)
            if converged:
                break
        if not converged:
            if settings.stats is not None:
                settings.stats.corrector_failures += 1
            warn(
                f"Adams-Moulton corrector did not converge in max_iters={settings.max_iters} "
                "iterations: the step keeps the last iterate and the history drops its oldest "
                "value (as torchdiffeq; SolveStats.corrector_failures counts these steps). Use "
                "smaller steps, a larger max_iters or looser rtol/atol",
            )
            hist.pop()
    y1 = y + dy
    return y1, None, [f0, y1]


def adams_interpolate(
    y0: Tensor, ks: Sequence[Tensor], h: float, thetas: Sequence[float], linear: bool
) -> Tensor:
    """States at ``t0 + theta h`` inside one step (torchdiffeq's fixed-grid interpolants).

    Args:
        y0: the step's start; ``ks``: ``[f0, y1]`` (linear) or ``[f0, y1, f(t0 + h, y1)]``.
        linear: ``y0 + theta (y1 - y0)``; else the cubic Hermite through both states and
            their derivatives.

    Returns:
        ``(len(thetas), *y0.shape)``.
    """
    f0, y1 = ks[0], ks[1]
    rows = []
    for th in thetas:
        if linear:
            rows.append(y0 + th * (y1 - y0))
            continue
        f1 = ks[2]
        h00 = (1 + 2 * th) * (1 - th) * (1 - th)
        h10 = th * (1 - th) * (1 - th)
        h01 = th * th * (3 - 2 * th)
        h11 = th * th * (th - 1)
        rows.append(h00 * y0 + (h10 * h) * f0 + h01 * y1 + (h11 * h) * f1)
    return torch.stack(rows)
