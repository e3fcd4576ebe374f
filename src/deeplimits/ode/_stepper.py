"""The one generic explicit Runge-Kutta step used by every method and every solver loop.

The step size ``h`` is either a Python float (the host loop: coefficients enter as ``alpha=``
scalars, no tensors are built from them) or a tensor broadcastable against the state (the
device-resident and per-sample loops: ``h`` of shape ``()`` or ``(rows, 1)``, no host syncs).
Stages are combined with unrolled ``add``/``add_`` chains: they build no (stages, N) temporaries,
work under autograd, and cost less than ``torch.stack`` + ``tensordot``; a preallocated stage
buffer + ``addmv`` is a little faster but its in-place writes cannot be differentiated through
(measured by ``benchmarks/stage_combination.py``, table in ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from deeplimits.ode._func import FlatFunc
from deeplimits.ode._tableaux import ButcherTableau

__all__ = ["combine", "rk_step"]


def _lin(ks: Sequence[Tensor], terms: Sequence[tuple[int, float]]) -> Tensor:
    """``sum_j coef_j * ks[j]`` (a fresh tensor, so ``add_`` on it is autograd-safe)."""
    j0, c0 = terms[0]
    out = ks[j0] * c0
    for j, cj in terms[1:]:
        out.add_(ks[j], alpha=cj)
    return out


def combine(
    y: Tensor, ks: Sequence[Tensor], terms: Sequence[tuple[int, float]], h: float | Tensor
) -> Tensor:
    """``y + h * sum_j coef_j * ks[j]`` over the nonzero ``(j, coef_j)`` in ``terms``.

    Float ``h``: unrolled ``add``/``add_`` with Python-float ``alpha`` (no host syncs). Tensor
    ``h`` (broadcastable to ``y``): the weighted sum, then one ``addcmul``. The in-place ``add_``
    acts on a fresh tensor, so it is safe under autograd.
    """
    if not terms:
        return y
    if isinstance(h, Tensor):
        return torch.addcmul(y, h, _lin(ks, terms))
    j0, c0 = terms[0]
    out = torch.add(y, ks[j0], alpha=h * c0)  # (N,)
    for j, cj in terms[1:]:
        out.add_(ks[j], alpha=h * cj)
    return out


def _weighted_sum(
    ks: Sequence[Tensor], terms: Sequence[tuple[int, float]], h: float | Tensor
) -> Tensor:
    if isinstance(h, Tensor):
        return _lin(ks, terms).mul_(h) if not h.requires_grad else _lin(ks, terms) * h
    j0, c0 = terms[0]
    out = ks[j0] * (h * c0)
    for j, cj in terms[1:]:
        out.add_(ks[j], alpha=h * cj)
    return out


def rk_step(
    tableau: ButcherTableau,
    func: FlatFunc,
    t: float | Tensor,
    y: Tensor,
    h: float | Tensor,
    k1: Tensor | None = None,
    times: Sequence[float | Tensor] | None = None,
) -> tuple[Tensor, Tensor | None, list[Tensor]]:
    """One explicit Runge-Kutta step of size ``h`` (may be negative) from ``(t, y)``.

    Args:
        tableau: the method.
        func: right-hand side ``func(t, y) -> Tensor`` of the same shape as ``y``.
        t: start time: a float, or a tensor broadcastable like ``h`` (per-row times).
        y: state, any shape (the host loop passes the state's own shape, the device loop
            ``(rows, M)``).
        h: step size; negative for integration backwards in time. A float, or a tensor
            broadcastable against ``y`` (e.g. ``(rows, 1)``: one step size per row).
        k1: ``func(t, y)`` if already known (FSAL reuse, or the previous step's ``f(t+h, y1)``).
        times: the stage times ``t + c_i h`` if already computed (the device loop builds all of
            them with one kernel); default: computed here.

    Returns:
        ``(y_new, y_err, ks)``: the new state, the embedded error estimate ``h * sum(b_err k)``
        (``None`` for tableaux without one) and the list of stages. For FSAL tableaux ``ks[-1]``
        is ``func(t + h, y_new)`` and can be passed as ``k1`` of the next step.
    """
    ks: list[Tensor] = [func(t, y) if k1 is None else k1]
    if not isinstance(h, Tensor):
        # Host path: Python-float coefficients as ``alpha=`` (no tensors built from them), the
        # loop over a precomputed plan; every statement here runs once per evaluation.
        add = torch.add
        yi = y
        for i, (ci, terms) in enumerate(tableau.host_stages, 1):
            j0, c0 = terms[0]
            yi = add(y, ks[j0], alpha=h * c0)
            for j, cj in terms[1:]:
                yi.add_(ks[j], alpha=h * cj)
            ks.append(func(t + ci * h if times is None else times[i], yi))  # type: ignore[operator]
        y_new = yi if tableau.fsal else combine(y, ks, tableau.b_terms, h)
        y_err = _weighted_sum(ks, tableau.err_terms, h) if tableau.err_terms else None
        return y_new, y_err, ks
    c = tableau.c
    stage_terms = tableau.stage_terms
    last = tableau.num_stages - 1
    for i in range(1, tableau.num_stages):
        ti = times[i] if times is not None else t + c[i] * h
        if tableau.fsal and i == last:
            # Last stage of an FSAL method is evaluated at y_new itself (c[-1] == 1).
            y_new = combine(y, ks, tableau.b_terms, h)
            ks.append(func(ti, y_new))
            break
        yi = combine(y, ks, stage_terms[i], h)  # like y
        ks.append(func(ti, yi))
    else:
        y_new = combine(y, ks, tableau.b_terms, h)
    y_err = _weighted_sum(ks, tableau.err_terms, h) if tableau.err_terms else None
    return y_new, y_err, ks
