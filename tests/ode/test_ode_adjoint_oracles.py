"""Adjoint gradients against closed forms where the seminorm matters.

``adjoint_options={"norm": "seminorm"}`` leaves the parameter-gradient channel ``a_theta`` out
of the backward solve's error norm and must keep the state ``z`` and the adjoint ``a`` in it.
The other gradient tests start where the state part dominates the error estimate, so a
seminorm that dropped ``a`` would pass them. Here the forward state sits at (or next to) an
equilibrium of a fast linear rotation: ``z`` barely moves, the adjoint ``a(t) =
expm(A^T (t_i - t)) w_i`` rotates fast, and only ``a`` can tell the error control how small
the backward steps must be. Oracles: the closed-form gradients of the linear ODE (matrix
exponentials from ``scipy.linalg.expm``, Van Loan's block exponential for ``dL/dA``).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from deeplimits.ode import SolveStats, odeint_adjoint

F64 = torch.float64
OMEGA, DAMP = 50.0, 0.3
A_NP = np.array([[-DAMP, -OMEGA], [OMEGA, -DAMP]])  # fast damped rotation
TS = np.array([0.0, 0.5, 1.0])
W = np.array([[0.0, 0.0], [0.3, -1.2], [1.0, 0.7]])  # L = sum_i W[i] . y(TS[i])


class _Affine(nn.Module):
    """``dy/dt = A y (+ b)`` with ``A`` (and ``b``) parameters."""

    def __init__(self, bias: np.ndarray | None = None) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.tensor(A_NP, dtype=F64))
        self.b = None if bias is None else nn.Parameter(torch.tensor(bias, dtype=F64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.A @ y
        return out if self.b is None else out + self.b


def _adjoint_grads(
    func: _Affine, y0: np.ndarray, norm: str, **tols: float
) -> tuple[list[np.ndarray], SolveStats]:
    y = torch.tensor(y0, dtype=F64, requires_grad=True)
    stats = SolveStats()
    out = odeint_adjoint(func, y, torch.tensor(TS, dtype=F64), method="dopri5",
                         adjoint_options={"norm": norm}, stats=stats, **tols)
    (out * torch.tensor(W, dtype=F64)).sum().backward()
    grads = [y.grad] + [p.grad for p in func.parameters()]
    return [g.numpy() for g in grads], stats


def _rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("norm", ["seminorm", "rms"])
def test_adjoint_gradients_near_equilibrium_of_fast_rotation_match_closed_form(
    norm: str,
) -> None:
    """``dy/dt = A y`` from ``y0 = 1e-6 v`` (next to the equilibrium 0): ``z`` and
    ``a_A = int a z^T`` are ~1e-6, far below the backward tolerance, so only the adjoint
    ``a`` (O(1), rotating at omega = 50) drives the backward steps. Closed forms:
    ``dL/dy0 = sum_i expm(A^T t_i) w_i``; ``dL/dA = sum_i int_0^t_i expm(A^T (t_i - s)) w_i
    y0^T expm(A^T s) ds`` = the upper-right block of ``expm([[A^T, w_i y0^T], [0, A^T]] t_i)``
    (Van Loan). A seminorm that normed only ``z`` (or ``z`` and ``a_theta``) lets the steps
    grow until ``a`` is off by ~1e-3. The forward solve is tight (its error would otherwise
    dominate ``dL/dA``); the backward one runs at rtol 1e-8."""
    y0 = 1e-6 * np.array([1.0, -0.5])
    want_y0, want_a = np.zeros(2), np.zeros((2, 2))
    for t, w in zip(TS, W, strict=True):
        want_y0 += scipy.linalg.expm(A_NP.T * t) @ w
        block = np.zeros((4, 4))
        block[:2, :2] = block[2:, 2:] = A_NP.T
        block[:2, 2:] = np.outer(w, y0)
        want_a += scipy.linalg.expm(block * t)[:2, 2:]
    (g_y0, g_a), stats = _adjoint_grads(
        _Affine(), y0, norm, rtol=1e-10, atol=1e-18, adjoint_rtol=1e-8, adjoint_atol=1e-10
    )
    assert _rel_err(g_y0, want_y0) < 1e-6
    assert _rel_err(g_a, want_a) < 1e-5
    assert stats.backward_accepted_steps > 100  # the backward steps resolve the rotation


def test_adjoint_gradients_from_equilibrium_of_fast_rotation_match_closed_form() -> None:
    """``dy/dt = A y + b`` started at its equilibrium ``y* = -A^{-1} b``: ``z`` stays at ``y*``
    (zero error estimate), ``a`` rotates fast and ``a_b = int a`` is O(1/omega). Closed forms:
    ``dL/dy0 = sum_i expm(A^T t_i) w_i``, ``dL/db = sum_i A^{-T} (expm(A^T t_i) - I) w_i``,
    ``dL/dA = dL/db y*^T``. Both norms must give them; the seminorm (which ignores ``a_A`` and
    ``a_b``) at the accuracy of the RMS norm."""
    bias = np.array([2.0, -1.0])
    y_star = -np.linalg.solve(A_NP, bias)
    want_y0, want_b = np.zeros(2), np.zeros(2)
    for t, w in zip(TS, W, strict=True):
        expm = scipy.linalg.expm(A_NP.T * t)
        want_y0 += expm @ w
        want_b += np.linalg.solve(A_NP.T, (expm - np.eye(2)) @ w)
    want_a = np.outer(want_b, y_star)
    for norm in ("seminorm", "rms"):
        (g_y0, g_a, g_b), stats = _adjoint_grads(_Affine(bias), y_star, norm, rtol=1e-8,
                                                 atol=1e-10)
        assert _rel_err(g_y0, want_y0) < 1e-6, norm
        assert _rel_err(g_b, want_b) < 1e-5, norm
        assert _rel_err(g_a, want_a) < 1e-5, norm
        assert stats.backward_accepted_steps > 100, norm
