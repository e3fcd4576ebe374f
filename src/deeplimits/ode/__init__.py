"""ODE solvers: fixed-step and adaptive explicit Runge-Kutta, adjoint, reversible Heun.

Public surface:

- :func:`odeint` / :func:`odeint_adjoint`: torchdiffeq-compatible solves.
- :class:`ODEBlock`: ``z0 -> z(t1)`` as an ``nn.Module`` with solve statistics.
- :class:`ButcherTableau`, :data:`TABLEAUX`, :func:`rk_step`: the methods as validated data and
  the one generic explicit Runge-Kutta step.
- :class:`PIController`, :class:`IController`: step-size control (the default is
  ``IController()``).
- Options: :class:`FixedStepOptions`, :class:`AdaptiveOptions`, :class:`ReversibleHeunOptions`,
  :class:`AdjointOptions`; statistics: :class:`SolveStats`.

Solver loops (one generic stepper, :func:`rk_step`, in all of them): the host loop (default on
CPU), the device-resident loop with optional CUDA-graph replay (default on CUDA), per-sample
step sizes (``AdaptiveOptions(per_sample=True)``) and, opt-in, the loops compiled together with
``func`` by ``torch.compile`` (``compile=True``: for small states solved many times); speed
against torchdiffeq and torchode is measured by ``benchmarks/ode_peers.py``
(``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

from deeplimits.ode._adjoint import odeint_adjoint
from deeplimits.ode._block import ODEBlock, ODEBlockStats
from deeplimits.ode._controller import IController, PIController, error_ratio
from deeplimits.ode._odeint import ADAPTIVE_METHODS, FIXED_METHODS, METHODS, odeint
from deeplimits.ode._options import (
    AdaptiveOptions,
    AdjointOptions,
    FixedStepOptions,
    ReversibleHeunOptions,
    SolveStats,
)
from deeplimits.ode._stepper import rk_step
from deeplimits.ode._tableaux import (
    TABLEAUX,
    ButcherTableau,
    get_tableau,
    order_condition_residuals,
)

__all__ = [
    "ADAPTIVE_METHODS",
    "FIXED_METHODS",
    "METHODS",
    "TABLEAUX",
    "AdaptiveOptions",
    "AdjointOptions",
    "ButcherTableau",
    "FixedStepOptions",
    "IController",
    "ODEBlock",
    "ODEBlockStats",
    "PIController",
    "ReversibleHeunOptions",
    "SolveStats",
    "error_ratio",
    "get_tableau",
    "odeint",
    "odeint_adjoint",
    "order_condition_residuals",
    "rk_step",
]
