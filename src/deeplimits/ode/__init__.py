"""ODE solvers: fixed-step and adaptive explicit Runge-Kutta, adjoint, reversible Heun.

Public surface:

- :func:`odeint` / :func:`odeint_adjoint`: torchdiffeq-compatible solves;
  :func:`odeint_event`: solve until an event function crosses zero (its time differentiable).
  :func:`odeint_checkpoint`: backprop's gradients with a bounded number of stored states.
- :class:`ODEBlock`: ``z0 -> z(t1)`` as an ``nn.Module`` with solve statistics.
- Solvers as objects: :class:`Solver`, :class:`ExplicitRK` (any validated
  :class:`ButcherTableau`), :class:`ImplicitRK` (stiff problems: any validated ESDIRK
  :class:`ImplicitTableau`; ``kvaerno3/4/5``, ``implicit_euler``), :class:`ReversibleHeun`,
  :class:`Adams` (multistep: ``explicit_adams``, ``implicit_adams``, ``fixed_adams``);
  :data:`SOLVERS` by name (what ``method="dopri5"`` looks up), :func:`get_solver`;
  :func:`rk_step`, the one generic explicit Runge-Kutta step.
- Step-size control: :class:`PIDController`, :class:`PIController`, :class:`IController` (the
  default is ``IController()``).
- Options: :class:`FixedStepOptions`, :class:`AdamsOptions`, :class:`AdaptiveOptions`,
  :class:`ReversibleHeunOptions`,
  :class:`AdjointOptions` (what is computed), :class:`ExecutionOptions` (how it runs: host or
  device loop, CUDA graphs with a :class:`CaptureBackend`, ``compile``, per-sample steps);
  statistics: :class:`SolveStats`.

How the pieces fit (public API -> dispatcher -> loops -> step -> solver/controller objects):
``docs/design/ode.md``. Speed against torchdiffeq and torchode: ``benchmarks/ode_peers.py``
(``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

from deeplimits.ode._adjoint import odeint_adjoint
from deeplimits.ode._block import ODEBlock, ODEBlockStats
from deeplimits.ode._cache import clear_graph_cache
from deeplimits.ode._capture import CaptureBackend, CudaGraphCapture, EagerCapture
from deeplimits.ode._checkpoint import odeint_checkpoint
from deeplimits.ode._controllers import IController, PIController, PIDController
from deeplimits.ode._execution import ExecutionOptions
from deeplimits.ode._odeint import odeint, odeint_event
from deeplimits.ode._options import (
    AdamsOptions,
    AdaptiveOptions,
    AdjointOptions,
    FixedStepOptions,
    ImplicitFixedOptions,
    ImplicitOptions,
    ReversibleHeunOptions,
    ScipyOptions,
    SolveStats,
)
from deeplimits.ode._solvers import (
    ADAPTIVE_METHODS,
    FIXED_METHODS,
    IMPLICIT_METHODS,
    METHODS,
    MULTISTEP_METHODS,
    SOLVERS,
    Adams,
    ExplicitRK,
    ImplicitRK,
    ReversibleHeun,
    ScipySolver,
    Solver,
    get_solver,
)
from deeplimits.ode._stepper import rk_step
from deeplimits.ode._tableaux import (
    IMPLICIT_TABLEAUX,
    TABLEAUX,
    ButcherTableau,
    ImplicitTableau,
    get_tableau,
    order_condition_residuals,
    stability_function,
)

__all__ = [
    "ADAPTIVE_METHODS",
    "FIXED_METHODS",
    "IMPLICIT_METHODS",
    "IMPLICIT_TABLEAUX",
    "METHODS",
    "MULTISTEP_METHODS",
    "SOLVERS",
    "TABLEAUX",
    "Adams",
    "AdamsOptions",
    "AdaptiveOptions",
    "AdjointOptions",
    "ButcherTableau",
    "CaptureBackend",
    "CudaGraphCapture",
    "EagerCapture",
    "ExecutionOptions",
    "ExplicitRK",
    "FixedStepOptions",
    "IController",
    "ImplicitFixedOptions",
    "ImplicitOptions",
    "ImplicitRK",
    "ImplicitTableau",
    "ODEBlock",
    "ODEBlockStats",
    "PIController",
    "PIDController",
    "ReversibleHeun",
    "ReversibleHeunOptions",
    "ScipyOptions",
    "ScipySolver",
    "SolveStats",
    "Solver",
    "clear_graph_cache",
    "get_solver",
    "get_tableau",
    "odeint",
    "odeint_adjoint",
    "odeint_checkpoint",
    "odeint_event",
    "order_condition_residuals",
    "rk_step",
    "stability_function",
]
