"""Dense output: a step's interpolant at several times (two matmuls), and the host loops'
emission of output times (the batched loop writes its outputs with masks instead:
:mod:`deeplimits.ode._batched_step`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from deeplimits.ode._tableaux import ButcherTableau, ImplicitTableau, interpolant

__all__ = ["DenseCache", "dense_eval", "emit_outputs"]


class DenseCache:
    """The interpolant's coefficients as a tensor, built once per (dtype, device) and solve:
    the tableau's interpolant (its ``dense`` rows, else the cubic Hermite:
    :func:`~deeplimits.ode._tableaux.interpolant`), or ``rows`` given (e.g. ``[b]``: linear
    interpolation)."""

    def __init__(
        self, tableau: ButcherTableau | ImplicitTableau,
        rows: Sequence[Sequence[float]] | None = None,
    ) -> None:
        self.tableau = tableau
        self.rows = interpolant(tableau) if rows is None else rows
        self._coef: Tensor | None = None

    def coef(self, like: Tensor) -> Tensor:
        c = self._coef
        if c is None or c.dtype != like.dtype or c.device != like.device:
            c = torch.tensor(self.rows, dtype=like.dtype, device=like.device)  # (P, S')
            self._coef = c
        return c


def dense_eval(
    cache: DenseCache, y0: Tensor, ks: Sequence[Tensor], h: float, thetas: Sequence[float]
) -> Tensor:
    """States at ``t0 + theta*h`` for each ``theta`` in ``thetas`` (``0 < theta < 1``).

    Args:
        cache: coefficients of the method's interpolant.
        y0: state at the start of the step, any shape ``(*S)``.
        ks: the step's stages, plus ``f(t0+h, y1)`` last for non-FSAL tableaux (``S'`` tensors).
        h: the step size (signed).
        thetas: fractions of the step.

    Returns:
        ``(m, *S)`` tensor, one row per theta.
    """
    coef = cache.coef(y0)  # (P, S')
    K = torch.stack(list(ks)).reshape(len(ks), -1)  # (S', N)
    C = (coef @ K).mul_(h)  # (P, N): polynomial coefficients of theta^1..theta^P
    th = torch.tensor(thetas, dtype=y0.dtype, device=y0.device)  # (m,)
    powers = th[:, None] ** torch.arange(
        1, coef.shape[0] + 1, dtype=y0.dtype, device=y0.device
    )  # (m, P)
    out = torch.addmm(y0.reshape(1, -1), powers, C)  # (m, N)
    return out.view(len(thetas), *y0.shape)


def emit_outputs(
    outs: list[Tensor],
    ts: list[float],
    j: int,
    d: float,
    t: float,
    t1: float,
    h: float,
    y1: Tensor,
    dense: Callable[[list[float]], Tensor],
) -> int:
    """Append the states at the output times ``ts[j:]`` in ``(t, t1]`` of a step from ``t`` of
    size ``h`` (direction ``d``): ``dense(thetas)`` inside, ``y1`` itself at ``t1``; returns
    the next output index."""
    n = len(ts)
    k = j
    while k < n and d * (ts[k] - t1) < 0:
        k += 1
    if k > j:
        thetas = [(ts[i] - t) / h for i in range(j, k)]
        outs.extend(dense(thetas).unbind(0))
    if k < n and ts[k] == t1:
        outs.append(y1)
        k += 1
    return k
