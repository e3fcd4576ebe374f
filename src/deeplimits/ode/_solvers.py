"""Solvers as objects: what a method computes, independent of the loop that runs it.

A solver knows its order, whether it is adaptive (has an error estimate), its options class and
its step. The loops (:mod:`deeplimits.ode._dispatch` picks one) call :meth:`ExplicitRK.step`
and :meth:`ExplicitRK.interpolate`; nothing in a loop names a method. ``method="dopri5"``
looks up :data:`SOLVERS`; an object can be passed instead (``method=ExplicitRK(tableau)`` for a
tableau of your own).

Where a new solver goes: a new :class:`Solver` subclass here. An explicit Runge-Kutta method
is only a tableau (:mod:`deeplimits.ode._tableaux`). A solver with its own state between steps
(like :class:`ReversibleHeun`) also brings its own loop, registered in the dispatcher.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from deeplimits.errors import InvalidTypeError, UnknownNameError
from deeplimits.ode._func import FlatFunc
from deeplimits.ode._interp import DenseCache, dense_eval
from deeplimits.ode._options import AdaptiveOptions, FixedStepOptions, ReversibleHeunOptions
from deeplimits.ode._stepper import rk_step
from deeplimits.ode._tableaux import TABLEAUX, ButcherTableau

__all__ = [
    "ADAPTIVE_METHODS",
    "FIXED_METHODS",
    "METHODS",
    "SOLVERS",
    "ExplicitRK",
    "ReversibleHeun",
    "Solver",
    "get_solver",
]


class Solver(ABC):
    """A method of solving ``dy/dt = f(t, y)``."""

    @property
    @abstractmethod
    def name(self) -> str:
        """The method's name (``method=`` string)."""

    @property
    @abstractmethod
    def order(self) -> int:
        """Order of the solution."""

    @property
    @abstractmethod
    def adaptive(self) -> bool:
        """Whether the method has an error estimate (adaptive step size)."""

    @property
    @abstractmethod
    def options_type(self) -> type[FixedStepOptions] | type[AdaptiveOptions]:
        """The numerical options class of the method."""

    #: Whether ``ExecutionOptions(compile=True)`` can run it.
    compilable: bool = True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


@dataclass(frozen=True, repr=False)
class ExplicitRK(Solver):
    """An explicit Runge-Kutta method from a validated :class:`ButcherTableau`.

    Adaptive when the tableau has error weights (``b_err``); dense output from the tableau's
    interpolant (Hermite for those without one). The device loop needs an FSAL tableau with an
    error estimate (:attr:`batched`).
    """

    tableau: ButcherTableau

    def __post_init__(self) -> None:
        if not isinstance(self.tableau, ButcherTableau):
            raise InvalidTypeError(
                f"ExplicitRK needs a ButcherTableau, got {type(self.tableau).__name__}"
            )

    @property
    def name(self) -> str:
        return self.tableau.name

    @property
    def order(self) -> int:
        return self.tableau.order

    @property
    def adaptive(self) -> bool:
        return self.tableau.b_err is not None

    @property
    def options_type(self) -> type[FixedStepOptions] | type[AdaptiveOptions]:
        return AdaptiveOptions if self.adaptive else FixedStepOptions

    @property
    def fsal(self) -> bool:
        return self.tableau.fsal

    @property
    def error_order(self) -> int:
        """Order of the error estimate (embedded order + 1): the controller's ``k``."""
        return int(self.tableau.error_order or self.tableau.order) + 1

    @property
    def batched(self) -> bool:
        """Whether the device loop can run it (FSAL, error estimate and dense output)."""
        return self.tableau.fsal and self.adaptive and bool(self.tableau.dense)

    def step(
        self, f: FlatFunc, t: float | Tensor, y: Tensor, h: float | Tensor,
        k1: Tensor | None = None, times: Sequence[float | Tensor] | None = None,
    ) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        """One step; see :func:`deeplimits.ode.rk_step` (``(y1, error estimate, stages)``)."""
        return rk_step(self.tableau, f, t, y, h, k1, times)

    def dense_cache(self) -> DenseCache:
        """Per-solve cache of the interpolant's coefficients."""
        return DenseCache(self.tableau)

    def interpolate(
        self, cache: DenseCache, y0: Tensor, ks: Sequence[Tensor], h: float,
        thetas: Sequence[float],
    ) -> Tensor:
        """States at ``t0 + theta*h`` of one step (``ks``: its stages, plus ``f(t1, y1)`` for
        non-FSAL tableaux); ``(len(thetas), *y0.shape)``."""
        return dense_eval(cache, y0, ks, h, thetas)


class ReversibleHeun(Solver):
    """Reversible Heun (Kidger, Foster, Li & Lyons 2021): second order, fixed step,
    algebraically reversible, so its backward pass needs O(1) memory. Its loop is in
    :mod:`deeplimits.ode._reversible`."""

    compilable = False

    @property
    def name(self) -> str:
        return "reversible_heun"

    @property
    def order(self) -> int:
        return 2

    @property
    def adaptive(self) -> bool:
        return False

    @property
    def options_type(self) -> type[ReversibleHeunOptions]:
        return ReversibleHeunOptions

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReversibleHeun)

    def __hash__(self) -> int:
        return hash("reversible_heun")


#: Every method by name.
SOLVERS: dict[str, Solver] = {
    **{name: ExplicitRK(tab) for name, tab in TABLEAUX.items()},
    "reversible_heun": ReversibleHeun(),
}
#: Names of the fixed-step explicit RK methods, the adaptive ones, and all methods.
FIXED_METHODS: tuple[str, ...] = tuple(
    n for n, s in SOLVERS.items() if isinstance(s, ExplicitRK) and not s.adaptive
)
ADAPTIVE_METHODS: tuple[str, ...] = tuple(n for n, s in SOLVERS.items() if s.adaptive)
METHODS: tuple[str, ...] = tuple(SOLVERS)


def get_solver(method: str | Solver, what: str = "method") -> Solver:
    """The solver named ``method`` (or ``method`` itself if it is a :class:`Solver`).

    Raises:
        UnknownNameError: an unknown name (the message lists the valid ones).
        InvalidTypeError: neither a string nor a :class:`Solver`.
    """
    if isinstance(method, Solver):
        return method
    if not isinstance(method, str):
        raise InvalidTypeError(
            f"{what} must be a method name or a Solver, got {type(method).__name__}"
        )
    solver = SOLVERS.get(method)
    if solver is None:
        raise UnknownNameError(what, method, METHODS)
    return solver
