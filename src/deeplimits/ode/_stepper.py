"""The one generic explicit Runge-Kutta step used by every method."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from deeplimits.ode._tableaux import ButcherTableau

__all__ = ["FlatFunc", "combine", "rk_step"]

#: The solver-internal right-hand side: ``f(t, y)`` with ``t`` a Python float and ``y`` flat.
FlatFunc = Callable[[float, Tensor], Tensor]


def combine(
    y: Tensor, ks: Sequence[Tensor], terms: Sequence[tuple[int, float]], h: float
) -> Tensor:
    """``y + h * sum_j coef_j * ks[j]`` over the nonzero ``(j, coef_j)`` in ``terms``.

    Unrolled ``add``/``add_`` with Python-float ``alpha`` (no tensors built from coefficients, no
    host syncs). The in-place ``add_`` acts on a fresh tensor, so it is safe under autograd.
    """
    if not terms:
        return y
    j0, c0 = terms[0]
    out = torch.add(y, ks[j0], alpha=h * c0)  # (N,)
    for j, cj in terms[1:]:
        out.add_(ks[j], alpha=h * cj)
    return out


def _weighted_sum(ks: Sequence[Tensor], terms: Sequence[tuple[int, float]], h: float) -> Tensor:
    j0, c0 = terms[0]
    out = ks[j0] * (h * c0)
    for j, cj in terms[1:]:
        out.add_(ks[j], alpha=h * cj)
    return out


def rk_step(
    tableau: ButcherTableau,
    func: FlatFunc,
    t: float,
    y: Tensor,
    h: float,
    k1: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, list[Tensor]]:
    """One explicit Runge-Kutta step of size ``h`` (may be negative) from ``(t, y)``.

    Args:
        tableau: the method.
        func: right-hand side ``func(t: float, y: Tensor) -> Tensor`` of the same shape as ``y``.
        t: start time.
        y: state, any shape (the solver passes a flat ``(N,)`` tensor).
        h: step size; negative for integration backwards in time.
        k1: ``func(t, y)`` if already known (FSAL reuse, or the previous step's ``f(t+h, y1)``).

    Returns:
        ``(y_new, y_err, ks)``: the new state, the embedded error estimate ``h * sum(b_err k)``
        (``None`` for tableaux without one) and the list of stages. For FSAL tableaux ``ks[-1]``
        is ``func(t + h, y_new)`` and can be passed as ``k1`` of the next step.
    """
    ks: list[Tensor] = [func(t, y) if k1 is None else k1]
    c = tableau.c
    last = tableau.num_stages - 1
    for i in range(1, tableau.num_stages):
        if tableau.fsal and i == last:
            # Last stage of an FSAL method is evaluated at y_new itself.
            y_new = combine(y, ks, tableau.b_terms, h)
            ks.append(func(t + h, y_new))
            break
        yi = combine(y, ks, tableau.stage_terms[i], h)  # (N,)
        ks.append(func(t + c[i] * h, yi))
    else:
        y_new = combine(y, ks, tableau.b_terms, h)
    y_err = _weighted_sum(ks, tableau.err_terms, h) if tableau.err_terms else None
    return y_new, y_err, ks
