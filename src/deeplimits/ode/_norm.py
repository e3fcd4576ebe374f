"""The error norm and the starting-step rule, once, for the host and the batched loops.

Both work on one state (``rows=False``: the whole tensor is one row, results are 0-d) or on a
batch of rows (``rows=True``: states ``(R, M)``, one value per row, results ``(R, 1)``; the
per-sample and device loops).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["ErrorNorm", "initial_step"]


class ErrorNorm:
    """Scaled RMS error ``sqrt(mean((err / (atol + rtol * max(|y0|, |y1|)))**2))``.

    The scale is built as ``max(s0, s1)`` with ``s = atol + rtol * |y|``; ``s1`` of an accepted
    step is the next step's ``s0`` (one ``abs`` per step). ``norm_dims`` restricts the norm to
    the first ``norm_dims`` entries of each (flat) row: the adjoint's seminorm (Kidger, Chen &
    Lyons 2021, "Hey, that's not an ODE"). A NaN/inf anywhere in ``y1`` makes the ratio NaN, so
    one look at the ratio tests both.

    Args:
        rtol, atol: tolerances (floats, or per-entry vectors of a row for tuple states).
        norm_dims: entries of a row in the norm (``None``: all).
        row_numel: entries of one row (the whole state with ``rows=False``).
        rows: states are ``(R, M)`` with one norm per row.
    """

    def __init__(
        self, rtol: float | Tensor, atol: float | Tensor, norm_dims: int | None, row_numel: int,
        rows: bool,
        fn: Callable[[Any], Tensor] | None = None,
        to_user: Callable[[Tensor], Any] | None = None,
    ) -> None:
        if norm_dims is not None:  # per-entry tolerances (tuple states): the normed entries'
            rtol, atol = (v[..., :norm_dims] if isinstance(v, Tensor) else v for v in (rtol, atol))
        self.rtol, self.atol, self.norm_dims, self.rows = rtol, atol, norm_dims, rows
        self.inv_sqrt_n = 1.0 / math.sqrt(max(row_numel if norm_dims is None else norm_dims, 1))
        self._dim = 1 if rows else None
        #: A user norm (torchdiffeq's ``options["norm"]``) of the scaled error in the state's
        #: own structure (``to_user``), instead of the RMS; one state only (not rows).
        self.fn, self.to_user = fn, to_user

    def normed(self, y: Tensor) -> Tensor:
        """The entries of ``y`` that enter the norm."""
        if self.norm_dims is None:
            return y
        return y[:, : self.norm_dims] if self.rows else y.reshape(-1)[: self.norm_dims]

    def rms(self, x: Tensor) -> Tensor:
        """RMS of ``x`` (already scaled), per row ``(R, 1)`` or over everything ``()`` (or the
        user's norm of it)."""
        if self.fn is not None:
            # in x's dtype: a Python float from the user's norm would become float32
            value = self.fn(self.to_user(x) if self.to_user else x)
            return torch.as_tensor(value, dtype=x.dtype, device=x.device).reshape(())
        return torch.linalg.vector_norm(x, dim=self._dim, keepdim=self.rows) * self.inv_sqrt_n

    def scale(self, y: Tensor) -> Tensor:
        """``atol + rtol * |y|`` over the normed entries (call under ``no_grad``)."""
        yn = y if self.norm_dims is None else self.normed(y)
        return yn.abs().mul_(self.rtol).add_(self.atol)

    def ratio(self, err: Tensor, s0: Tensor, s1: Tensor, y1: Tensor) -> Tensor:
        """The scaled error of a step from a state with scale ``s0`` to ``y1`` (scale ``s1``);
        NaN where ``y1`` holds NaN/inf. Call under ``no_grad`` when the stages carry a graph."""
        if self.norm_dims is None and self.fn is None:
            q = (err / torch.maximum(s0, s1)).addcmul_(y1, _zero(y1))  # + 0*y1: NaN if y1 is
            return torch.linalg.vector_norm(q, dim=self._dim, keepdim=self.rows) * self.inv_sqrt_n
        q = self.normed(err) / torch.maximum(s0, s1)
        guard = y1.sum(dim=1, keepdim=True) if self.rows else y1.sum()
        return self.rms(q) + guard * 0.0


_ZEROS: dict[tuple[torch.dtype, torch.device], Tensor] = {}


def _zero(like: Tensor) -> Tensor:
    key = (like.dtype, like.device)
    z = _ZEROS.get(key)
    if z is None:
        z = _ZEROS[key] = torch.zeros((), dtype=like.dtype, device=like.device)
    return z


def initial_step(
    f: object,
    t0: float | Tensor,
    y0: Tensor,
    f0: Tensor,
    direction: float,
    error_order: int,
    norm: ErrorNorm,
    span: float | Tensor,
) -> float | Tensor:
    """Starting ``|dt|`` by Hairer, Norsett & Wanner (1993), sec. II.4 (one extra evaluation).

    One rule, evaluated two ways (the test that pins it to scipy's ``select_initial_step`` runs
    on every loop): for one state (``norm.rows`` False, the host loop) the three norms come to
    the host as floats (two syncs, the fewest kernels); for rows (the batched loops) everything
    is a tensor op (no syncs: it runs inside captured graphs and compiled code). Not
    differentiated (like torchdiffeq): runs under ``no_grad``.

    Args:
        f: the right-hand side ``f(t, y)``.
        t0, y0, f0: start time (float, or ``(R, 1)`` with rows), state and ``f(t0, y0)``.
        direction: +1.0 or -1.0.
        error_order: order of the error estimate (embedded order + 1; dopri5: 5), the
            exponent's ``p + 1``, as in Hairer's DOPRI5 code, scipy and torchdiffeq.
        norm: the error norm (its ``rows`` decides the layout).
        span: ``|t_end - t0|`` (float, or ``(R, 1)`` with rows): the step never exceeds it.

    Returns:
        A float, or ``(R, 1)`` tensor with rows.
    """
    with torch.no_grad():
        s = norm.scale(y0)
        fn = norm.normed(f0)
        d0t, d1t = norm.rms(norm.normed(y0) / s), norm.rms(fn / s)
        if not norm.rows:
            d0, d1 = torch.stack([d0t, d1t]).tolist()
            h0 = min(1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1, float(span))
            f1 = f(t0 + direction * h0, torch.add(y0, f0, alpha=direction * h0))  # type: ignore[operator]
            d2 = float(norm.rms((norm.normed(f1) - fn) / s)) / h0
            if not math.isfinite(d2):
                return h0
            dm = max(d1, d2)
            h1 = max(1e-6, h0 * 1e-3) if dm <= 1e-15 else (0.01 / dm) ** (1.0 / error_order)
            return min(100 * h0, h1, float(span))
        h0 = torch.where((d0t < 1e-5) | (d1t < 1e-5), 1e-6, 0.01 * d0t / d1t)
        h0 = torch.minimum(h0, span) if isinstance(span, Tensor) else h0.clamp(max=span)
        f1 = f(t0 + direction * h0, torch.addcmul(y0, h0 * direction, f0))  # type: ignore[operator]
        d2t = norm.rms((norm.normed(f1) - fn) / s) / h0
        dm = torch.maximum(d1t, d2t)
        h1 = torch.where(
            dm <= 1e-15, (h0 * 1e-3).clamp(min=1e-6), (0.01 / dm).pow(1.0 / error_order)
        )
        h = torch.minimum(100 * h0, h1)
        h = torch.minimum(h, span) if isinstance(span, Tensor) else h.clamp(max=span)
        return torch.where(torch.isfinite(d2t), h, h0)
