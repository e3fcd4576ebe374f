"""``ODEBlock``: a neural-ODE layer ``z0 -> z(t1)`` with solve statistics."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from deeplimits.errors import InvalidArgumentError, InvalidTypeError, UnknownNameError
from deeplimits.ode._adjoint import odeint_adjoint
from deeplimits.ode._checkpoint import odeint_checkpoint
from deeplimits.ode._odeint import odeint
from deeplimits.ode._options import SolveStats
from deeplimits.ode._solvers import ReversibleHeun, Solver, get_solver

__all__ = ["GRADIENTS", "ODEBlock", "ODEBlockStats"]

#: The ways ``ODEBlock`` computes gradients (``gradient=``).
GRADIENTS = ("direct", "adjoint", "checkpoint", "reversible")

ODEBlockStats = SolveStats
"""The former name of :class:`SolveStats` (what :attr:`ODEBlock.stats` holds), kept as an alias."""


class ODEBlock(nn.Module):
    """Integrate ``dz/dt = func(t, z)`` from ``t=0`` to ``t1`` (Chen et al. 2018).

    Args:
        func: an ``nn.Module`` with ``forward(t, z) -> dz/dt`` (same shape as ``z``).
        t1: end time (nonzero; negative integrates backwards).
        method: passed to the solver (see :func:`odeint`).
        rtol: passed to the solver.
        atol: passed to the solver.
        options: passed to the solver.
        gradient: how gradients are computed: ``"direct"`` (backprop through the steps,
            :func:`odeint`; memory grows with the steps), ``"adjoint"`` (:func:`odeint_adjoint`,
            O(1) memory, the continuous adjoint's gradients), ``"checkpoint"``
            (:func:`odeint_checkpoint`: backprop's gradients from at most ``checkpoints``
            stored states, recomputing the rest) or ``"reversible"`` (``method=
            "reversible_heun"``'s exact O(1)-memory backward). Default: ``"adjoint"``.
        adjoint: the former switch, kept as an alias: ``True`` is ``gradient="adjoint"``,
            ``False`` is ``gradient="direct"``.
        checkpoints: with ``gradient="checkpoint"``: most states stored (default: from the
            step budget, see :func:`odeint_checkpoint`).

    Attributes:
        stats: :class:`SolveStats` of the last forward call (``nfe_backward`` and the backward
            step counts fill in when its backward pass runs, ``nfe_recompute`` with
            ``"checkpoint"``; ``nfe_backward`` stays 0 with ``"direct"``, where the backward
            pass does not call ``func``).
        gradient: the gradient mode; ``adjoint``: whether it is ``"adjoint"``.

    Raises:
        UnknownNameError: an unknown ``gradient``.
        InvalidArgumentError: ``adjoint`` contradicting ``gradient``, ``checkpoints`` without
            ``"checkpoint"``, or ``"reversible"`` with another method than ``reversible_heun``.
    """

    def __init__(
        self,
        func: nn.Module,
        t1: float = 1.0,
        method: str | Solver = "dopri5",
        rtol: float = 1e-7,
        atol: float = 1e-9,
        adjoint: bool | None = None,
        options: dict[str, Any] | None = None,
        gradient: str | None = None,
        checkpoints: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(func, nn.Module):
            raise InvalidTypeError(f"ODEBlock needs an nn.Module func, got {type(func).__name__}")
        if not isinstance(t1, (int, float)) or t1 == 0:
            raise InvalidArgumentError(f"ODEBlock t1={t1!r} must be a nonzero number")
        solver = get_solver(method)
        gradient = _gradient_mode(gradient, adjoint)
        if gradient == "reversible" and not isinstance(solver, ReversibleHeun):
            raise InvalidArgumentError(
                f"ODEBlock gradient='reversible' needs method='reversible_heun', got "
                f"{solver.name!r}; use that method or gradient='checkpoint'"
            )
        if checkpoints is not None and gradient != "checkpoint":
            raise InvalidArgumentError(
                f"ODEBlock checkpoints={checkpoints!r} applies to gradient='checkpoint' only, "
                f"not {gradient!r}; drop it or set gradient='checkpoint'"
            )
        self.gradient = gradient
        self.checkpoints = checkpoints
        self.func = func
        self.t1 = float(t1)
        self.method = method
        self.rtol = rtol
        self.atol = atol
        self.options = options
        self.stats = SolveStats()

    def forward(self, z0: Tensor) -> Tensor:
        """``z0`` of any shape ``(*S)`` -> ``z(t1)`` of shape ``(*S)``."""
        self.stats = SolveStats()
        t = torch.tensor([0.0, self.t1], dtype=z0.dtype, device=z0.device)
        kw: dict[str, Any] = {
            "rtol": self.rtol, "atol": self.atol, "method": self.method,
            "options": self.options, "stats": self.stats,
        }
        if self.gradient == "adjoint":
            zs = odeint_adjoint(self.func, z0, t, **kw)
        elif self.gradient == "checkpoint":
            zs = odeint_checkpoint(self.func, z0, t, checkpoints=self.checkpoints, **kw)
        else:  # direct; reversible: odeint runs reversible_heun's own backward for a Module
            zs = odeint(self.func, z0, t, **kw)
        return zs[-1]  # type: ignore[index]

    @property
    def adjoint(self) -> bool:
        """Whether gradients come from the adjoint ODE (``gradient == "adjoint"``)."""
        return self.gradient == "adjoint"

    def extra_repr(self) -> str:
        return f"t1={self.t1}, method={self.method!r}, gradient={self.gradient!r}"


def _gradient_mode(gradient: object, adjoint: object) -> str:
    """``gradient`` checked, or from the ``adjoint`` alias (default ``"adjoint"``)."""
    if adjoint is not None and not isinstance(adjoint, bool):
        raise InvalidTypeError(f"ODEBlock adjoint must be True or False, got {adjoint!r}")
    if gradient is None:
        return "direct" if adjoint is False else "adjoint"
    if not isinstance(gradient, str) or gradient not in GRADIENTS:
        raise UnknownNameError("ODEBlock gradient", gradient, GRADIENTS)
    if adjoint is not None and adjoint != (gradient == "adjoint"):
        raise InvalidArgumentError(
            f"ODEBlock adjoint={adjoint!r} contradicts gradient={gradient!r}; give gradient "
            "only (adjoint is its old alias)"
        )
    return gradient
