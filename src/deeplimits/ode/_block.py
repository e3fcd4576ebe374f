"""``ODEBlock``: a neural-ODE layer ``z0 -> z(t1)`` with solve statistics."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from deeplimits.errors import InvalidArgumentError, InvalidTypeError
from deeplimits.ode._adjoint import odeint_adjoint
from deeplimits.ode._odeint import odeint
from deeplimits.ode._options import SolveStats
from deeplimits.ode._solvers import Solver, get_solver

__all__ = ["ODEBlock", "ODEBlockStats"]

ODEBlockStats = SolveStats  # nfe_forward, nfe_backward, accepted_steps, rejected_steps, ...


class ODEBlock(nn.Module):
    """Integrate ``dz/dt = func(t, z)`` from ``t=0`` to ``t1`` (Chen et al. 2018).

    Args:
        func: an ``nn.Module`` with ``forward(t, z) -> dz/dt`` (same shape as ``z``).
        t1: end time (nonzero; negative integrates backwards).
        method, rtol, atol, options: passed to the solver.
        adjoint: gradients by :func:`odeint_adjoint` (O(1) memory) instead of backprop.

    Attributes:
        stats: :class:`SolveStats` of the last forward call (``nfe_backward`` and the backward
            step counts fill in when its backward pass runs; 0 without adjoint, where the
            backward pass does not call ``func``).
    """

    def __init__(
        self,
        func: nn.Module,
        t1: float = 1.0,
        method: str | Solver = "dopri5",
        rtol: float = 1e-7,
        atol: float = 1e-9,
        adjoint: bool = True,
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(func, nn.Module):
            raise InvalidTypeError(f"ODEBlock needs an nn.Module func, got {type(func).__name__}")
        if not isinstance(t1, (int, float)) or t1 == 0:
            raise InvalidArgumentError(f"ODEBlock t1={t1!r} must be a nonzero number")
        get_solver(method)
        self.func = func
        self.t1 = float(t1)
        self.method = method
        self.rtol = rtol
        self.atol = atol
        self.adjoint = adjoint
        self.options = options
        self.stats = SolveStats()

    def forward(self, z0: Tensor) -> Tensor:
        """``z0`` of any shape ``(*S)`` -> ``z(t1)`` of shape ``(*S)``."""
        self.stats = SolveStats()
        t = torch.tensor([0.0, self.t1], dtype=z0.dtype, device=z0.device)
        solve = odeint_adjoint if self.adjoint else odeint
        zs = solve(
            self.func, z0, t, rtol=self.rtol, atol=self.atol, method=self.method,
            options=self.options, stats=self.stats,
        )
        return zs[-1]  # type: ignore[index]

    def extra_repr(self) -> str:
        return f"t1={self.t1}, method={self.method!r}, adjoint={self.adjoint}"
