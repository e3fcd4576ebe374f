"""deeplimits: the lecture *Limitations of Deep Learning* as measured, reproducible experiments.

Public sub-packages:

- :mod:`deeplimits.ode`: ODE solvers (fixed and adaptive Runge-Kutta, adjoint, reversible Heun)
  and :class:`~deeplimits.ode.ODEBlock`.
- :mod:`deeplimits.diagnostics`: gradient flow, Lipschitz bounds, label-flip distances and exact
  linear-region counts for any ``nn.Module``.
- :mod:`deeplimits.constructions`: networks built by hand (Telgarsky's sawtooth, ...).
- :mod:`deeplimits.experiments`: the lecture's claims as experiments, and their registry.
- :mod:`deeplimits.errors`: the exception hierarchy.
"""

from __future__ import annotations

from deeplimits import errors
from deeplimits.errors import DeeplimitsError

__version__ = "0.1.0"

__all__ = ["DeeplimitsError", "__version__", "errors"]
