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
from dataclasses import dataclass, field, replace

from torch import Tensor

from deeplimits.errors import InvalidArgumentError, InvalidTypeError, UnknownNameError
from deeplimits.ode._adams import (
    MAX_ORDER,
    RK4,
    AdamsHistory,
    AdamsSettings,
    adams_interpolate,
    adams_step,
)
from deeplimits.ode._func import FlatFunc
from deeplimits.ode._interp import DenseCache, dense_eval
from deeplimits.ode._newton import NewtonSettings, esdirk_step
from deeplimits.ode._options import (
    AdamsOptions,
    AdaptiveOptions,
    FixedStepOptions,
    ImplicitFixedOptions,
    ImplicitOptions,
    ReversibleHeunOptions,
    ScipyOptions,
    SolveStats,
)
from deeplimits.ode._stepper import rk_step
from deeplimits.ode._tableaux import (
    IMPLICIT_TABLEAUX,
    TABLEAUX,
    ButcherTableau,
    ImplicitTableau,
)

__all__ = [
    "ADAPTIVE_METHODS",
    "FIXED_METHODS",
    "IMPLICIT_METHODS",
    "METHODS",
    "MULTISTEP_METHODS",
    "SOLVERS",
    "Adams",
    "ExplicitRK",
    "ImplicitRK",
    "ReversibleHeun",
    "ScipySolver",
    "Solver",
    "StepSolver",
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
    #: Whether it brings its own loop (else the host, fixed-step and device loops run its
    #: ``step``/``interpolate``).
    own_loop: bool = False

    def bind(self, opts: object, rtol: float, atol: float, stats: SolveStats) -> Solver:
        """The solver as one solve runs it (its options, tolerances and statistics); the
        dispatcher calls it before handing the solver to a loop. Default: itself."""
        return self

    #: Whether its steps need a carry between them (a multistep method's history): then
    #: :meth:`new_carry` gives one per solve, the fixed-step loop passes it to every
    #: ``step(..., carry=)`` of that solve and the step updates it in place. Such a solver runs
    #: on the fixed-step loop only (not the host or device loops, not ``compile``, not
    #: ``odeint_checkpoint``'s replay).
    multistep: bool = False

    def new_carry(self) -> object | None:
        """A fresh carry for one solve (``None`` for one-step methods, whose ``step`` takes
        none)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class _TableauSolver(Solver):
    """What a Runge-Kutta solver reads off its tableau (``self.tableau``): name, order,
    adaptivity, FSAL, the error order, and dense output from the tableau's interpolant
    (``dense``: one row per power of theta; for non-FSAL tableaux ``ks`` gets ``f(t1, y1)``
    appended)."""

    tableau: ButcherTableau | ImplicitTableau

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
    def fsal(self) -> bool:
        return self.tableau.fsal

    @property
    def error_order(self) -> int:
        """Order of the error estimate (embedded order + 1): the controller's ``k``."""
        return int(self.tableau.error_order or self.tableau.order) + 1

    #: Linear interpolation between steps (``interp="linear"``; set by ``bind``).
    linear_interp: bool = False

    @property
    def needs_end_stage(self) -> bool:
        """Whether dense output needs ``f(t1, y1)`` appended to a step's stages (non-FSAL
        tableaux with the Hermite or the tableau's interpolant)."""
        return not self.tableau.fsal and not self.linear_interp

    def dense_cache(self) -> DenseCache:
        """Per-solve cache of the interpolant's coefficients (``linear_interp``: the linear
        interpolant ``y0 + theta h sum(b k)``)."""
        return DenseCache(self.tableau, [list(self.tableau.b)] if self.linear_interp else None)

    def interpolate(
        self, cache: DenseCache, y0: Tensor, ks: Sequence[Tensor], h: float,
        thetas: Sequence[float],
    ) -> Tensor:
        """States at ``t0 + theta*h`` of one step (``ks``: its stages, plus ``f(t1, y1)`` for
        non-FSAL tableaux); ``(len(thetas), *y0.shape)``."""
        return dense_eval(cache, y0, ks, h, thetas)


@dataclass(frozen=True, repr=False)
class ExplicitRK(_TableauSolver):
    """An explicit Runge-Kutta method from a validated :class:`ButcherTableau`.

    Adaptive when the tableau has error weights (``b_err``); dense output from the tableau's
    interpolant (Hermite for those without one). The device loop needs an FSAL tableau with an
    error estimate (:attr:`batched`).
    """

    tableau: ButcherTableau
    linear_interp: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.tableau, ButcherTableau):
            raise InvalidTypeError(
                f"ExplicitRK needs a ButcherTableau, got {type(self.tableau).__name__}"
            )


    @property
    def options_type(self) -> type[FixedStepOptions] | type[AdaptiveOptions]:
        return AdaptiveOptions if self.adaptive else FixedStepOptions


    @property
    def batched(self) -> bool:
        """Whether the device loop can run it (FSAL, error estimate and dense output)."""
        return self.tableau.fsal and self.adaptive and bool(self.tableau.dense)

    def bind(self, opts: object, rtol: float, atol: float, stats: SolveStats) -> ExplicitRK:
        """Itself, or with ``linear_interp`` for ``interp="linear"`` options."""
        linear = getattr(opts, "interp", "cubic") == "linear"
        return self if linear == self.linear_interp else replace(self, linear_interp=linear)

    def step(
        self, f: FlatFunc, t: float | Tensor, y: Tensor, h: float | Tensor,
        k1: Tensor | None = None, times: Sequence[float | Tensor] | None = None,
    ) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        """One step; see :func:`deeplimits.ode.rk_step` (``(y1, error estimate, stages)``)."""
        return rk_step(self.tableau, f, t, y, h, k1, times)



@dataclass(frozen=True, repr=False)
class ImplicitRK(_TableauSolver):
    """An ESDIRK (diagonally implicit, explicit first stage) Runge-Kutta method from a validated
    :class:`ImplicitTableau`: stiff problems, L-stable tableaux (``kvaerno3/4/5``,
    ``implicit_euler``). The step (:func:`deeplimits.ode._newton.esdirk_step`) has the
    interface of :meth:`ExplicitRK.step`, so the host and fixed-step loops run it; the device
    loop does not (:attr:`batched` is ``False``) and it is not compilable.

    Stage equations by the chord method: one Jacobian (plain autograd, one reverse pass per
    state dimension, for per-sample blocks and states of up to 64 entries; else
    ``torch.func.jacrev``, under which ``func`` must then work) and one LU factorisation per
    step, reused by every stage; gradients by the implicit function theorem at the converged
    stages.

    Attributes:
        tableau: the method.
        batched_jacobian: the state is ``(batch, d)`` with independent rows: per-sample
            Jacobian blocks (see :class:`ImplicitOptions`, whose ``batched_jacobian`` overrides
            this one for a solve).
        newton_max_iters, newton_kappa: the chord iterations' limit and tolerance.
    """

    tableau: ImplicitTableau
    batched_jacobian: bool = False
    newton_max_iters: int = 10
    newton_kappa: float = 1e-2
    _settings: NewtonSettings = field(default=NewtonSettings(), compare=False)
    _stats: SolveStats | None = field(default=None, compare=False)

    compilable = False

    def __post_init__(self) -> None:
        if not isinstance(self.tableau, ImplicitTableau):
            raise InvalidTypeError(
                f"ImplicitRK needs an ImplicitTableau, got {type(self.tableau).__name__}"
            )
        if not isinstance(self.batched_jacobian, bool):
            raise InvalidTypeError(
                f"ImplicitRK batched_jacobian={self.batched_jacobian!r} must be True or False"
            )
        if not (isinstance(self.newton_max_iters, int) and self.newton_max_iters >= 1):
            raise InvalidArgumentError(
                f"ImplicitRK newton_max_iters={self.newton_max_iters!r} must be a positive int"
            )
        if not (isinstance(self.newton_kappa, (int, float)) and 0 < self.newton_kappa < 1):
            raise InvalidArgumentError(
                f"ImplicitRK newton_kappa={self.newton_kappa!r} must be a number in (0, 1)"
            )


    @property
    def options_type(self) -> type[ImplicitFixedOptions] | type[ImplicitOptions]:
        return ImplicitOptions if self.adaptive else ImplicitFixedOptions


    @property
    def batched(self) -> bool:
        """The device loop cannot run it (its Newton solves test convergence on the host)."""
        return False

    def bind(self, opts: object, rtol: float, atol: float, stats: SolveStats) -> ImplicitRK:
        """A copy with the solve's Newton settings (options over the object's fields) and
        statistics."""
        def pick(name: str) -> object:
            value = getattr(opts, name, None)
            return getattr(self, name) if value is None else value

        settings = NewtonSettings(
            rtol=rtol, atol=atol, max_iters=pick("newton_max_iters"),  # type: ignore[arg-type]
            kappa=pick("newton_kappa"), batched_jacobian=pick("batched_jacobian"),  # type: ignore[arg-type]
        )
        return replace(self, _settings=settings, _stats=stats)

    def step(
        self, f: FlatFunc, t: float | Tensor, y: Tensor, h: float | Tensor,
        k1: Tensor | None = None, times: Sequence[float | Tensor] | None = None,
    ) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        """One step; ``(y1, error estimate, stages)`` (``ks[-1]`` is ``f(t + h, y1)`` for the
        stiffly accurate tableaux: the next step's ``k1``). Unbound (called outside a solve):
        ``rtol=1e-7, atol=1e-9`` and the object's Newton settings."""
        stats = self._stats if self._stats is not None else SolveStats()
        settings = self._settings
        if self._stats is None:
            settings = replace(
                settings, max_iters=self.newton_max_iters, kappa=self.newton_kappa,
                batched_jacobian=self.batched_jacobian,
            )
        return esdirk_step(self.tableau, f, t, y, h, k1, times, settings, stats)  # type: ignore[arg-type]


    def __repr__(self) -> str:
        return f"ImplicitRK({self.name!r})"


@dataclass(frozen=True, repr=False)
class Adams(Solver):
    """Adams linear multistep methods on a fixed grid, as torchdiffeq's ``explicit_adams``
    (Adams-Bashforth) and ``implicit_adams``/``fixed_adams`` (Adams-Bashforth predictor,
    Adams-Moulton corrector by functional iteration): see :mod:`deeplimits.ode._adams` for the
    schedule (``rk4`` start-up steps, then orders up to ``AdamsOptions.max_order``).

    A multistep solver (:attr:`multistep`): its history is the carry the fixed-step loop passes
    from step to step (:meth:`new_carry`). Outputs between grid points: torchdiffeq's linear or
    cubic Hermite interpolant (``interp``). Not compilable, no device loop, no
    ``odeint_checkpoint``.

    Attributes:
        implicit: predictor-corrector (``implicit_adams``) or the explicit formula alone.
        method_name: the ``method=`` name.
    """

    implicit: bool
    method_name: str
    linear_interp: bool = False
    _settings: AdamsSettings | None = field(default=None, compare=False)

    compilable = False
    multistep = True
    fsal = False
    batched = False

    def __post_init__(self) -> None:
        if not isinstance(self.implicit, bool):
            raise InvalidTypeError(f"Adams implicit={self.implicit!r} must be True or False")
        if not isinstance(self.method_name, str) or not self.method_name:
            raise InvalidTypeError(
                f"Adams method_name={self.method_name!r} must be a non-empty string"
            )

    @property
    def name(self) -> str:
        return self.method_name

    @property
    def order(self) -> int:
        """The global order on smooth problems (measured in ``test_ode_adams.py``), set by the
        start-up: with ``max_order >= 5`` the one 3-step Adams-Bashforth step (local error
        ``O(h^4)``) makes ``explicit_adams`` order 4, and the corrected steps (local error
        ``O(h^5)`` or smaller) make ``implicit_adams`` order 5; with ``max_order=4`` every
        step after the start-up is a 3-step formula: orders 3 and 4 (torchdiffeq states 4)."""
        max_order = self._settings.max_order if self._settings is not None else MAX_ORDER
        return (4 if self.implicit else 3) + (max_order > 4)

    @property
    def adaptive(self) -> bool:
        return False

    @property
    def options_type(self) -> type[AdamsOptions]:
        return AdamsOptions

    @property
    def tableau(self) -> ButcherTableau:
        """The start-up steps' tableau (``rk4``); its stage times are also a perturbed step's
        (``perturb=True``: ``f0`` one ulp past the start, the corrector one ulp short of the
        end)."""
        return RK4

    @property
    def needs_end_stage(self) -> bool:
        """The cubic interpolant needs ``f(t1, y1)``; the linear one does not."""
        return not self.linear_interp

    def new_carry(self) -> AdamsHistory:
        settings = self._settings or AdamsSettings(self.implicit)
        return AdamsHistory(maxlen=settings.max_order - 1)

    def bind(self, opts: object, rtol: float, atol: float, stats: SolveStats) -> Adams:
        """A copy with the solve's ``max_order``, ``max_iters``, ``interp``, the corrector's
        tolerances and the statistics."""
        settings = AdamsSettings(
            implicit=self.implicit, max_order=getattr(opts, "max_order", MAX_ORDER),
            max_iters=getattr(opts, "max_iters", 4), rtol=rtol, atol=atol, stats=stats,
        )
        linear = getattr(opts, "interp", "cubic") == "linear"
        return replace(self, linear_interp=linear, _settings=settings)

    def dense_cache(self) -> None:
        """No coefficients to cache (the interpolants are built from the step's ends)."""
        return None

    def step(
        self, f: FlatFunc, t: float | Tensor, y: Tensor, h: float | Tensor,
        k1: Tensor | None = None, times: Sequence[float | Tensor] | None = None,
        carry: AdamsHistory | None = None,
    ) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        """One step (``(y1, None, [f0, y1])``; see :func:`deeplimits.ode._adams.adams_step`).

        Raises:
            InvalidArgumentError: no ``carry`` (the history of the solve, :meth:`new_carry`).
        """
        if carry is None:
            raise InvalidArgumentError(
                f"{self.name} is a multistep method: step() needs carry=solver.new_carry(), "
                "the history shared by the steps of one solve"
            )
        settings = self._settings or AdamsSettings(self.implicit)
        return adams_step(settings, f, t, y, h, k1, times, carry)  # type: ignore[arg-type]

    def interpolate(
        self, cache: None, y0: Tensor, ks: Sequence[Tensor], h: float,
        thetas: Sequence[float],
    ) -> Tensor:
        """States at ``t0 + theta*h`` of one step (``ks``: ``[f0, y1]``, plus ``f(t1, y1)``
        for the cubic interpolant); ``(len(thetas), *y0.shape)``."""
        return adams_interpolate(y0, ks, h, thetas, self.linear_interp)

    def __repr__(self) -> str:
        return f"Adams({self.name!r})"


#: A solver whose ``step``/``interpolate`` the host and fixed-step loops run (``Adams``: the
#: fixed-step loop only).
StepSolver = ExplicitRK | ImplicitRK | Adams


class ReversibleHeun(Solver):
    """Reversible Heun (Kidger, Foster, Li & Lyons 2021): second order, fixed step,
    algebraically reversible, so its backward pass needs O(1) memory. Its loop is in
    :mod:`deeplimits.ode._reversible`."""

    compilable = False
    own_loop = True

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


class ScipySolver(Solver):
    """``method="scipy_solver"`` (torchdiffeq's): scipy's ``solve_ivp`` with the method named by
    ``ScipyOptions.solver`` (LSODA, Radau, BDF, ...), on the flattened state in float64 on the
    CPU, results cast back. A black box for the engine: no device loop, no compile, no
    gradients through ``odeint`` (``odeint_adjoint`` computes them, its backward solve also by
    scipy unless ``adjoint_method`` says otherwise). Its loop: :mod:`deeplimits.ode._scipy`."""

    compilable = False

    @property
    def name(self) -> str:
        return "scipy_solver"

    @property
    def order(self) -> int:
        return 0  # scipy's method decides (RK45: 5, LSODA/BDF: variable)

    @property
    def adaptive(self) -> bool:
        # scipy adapts its steps itself; for the engine it takes no step control or device
        # loop options, so it is listed with the methods that take none.
        return False

    @property
    def options_type(self) -> type[ScipyOptions]:  # type: ignore[override]
        return ScipyOptions

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ScipySolver)

    def __hash__(self) -> int:
        return hash("scipy_solver")


SOLVERS: dict[str, Solver] = {
    **{name: ExplicitRK(tab) for name, tab in TABLEAUX.items()},
    **{name: ImplicitRK(tab) for name, tab in IMPLICIT_TABLEAUX.items()},
    "reversible_heun": ReversibleHeun(),
    "scipy_solver": ScipySolver(),
    "explicit_adams": Adams(implicit=False, method_name="explicit_adams"),
    "implicit_adams": Adams(implicit=True, method_name="implicit_adams"),
    "fixed_adams": Adams(implicit=True, method_name="fixed_adams"),  # torchdiffeq's old name
}
"""Every method by name: what ``method="dopri5"`` looks up (see :func:`get_solver`)."""
FIXED_METHODS: tuple[str, ...] = tuple(
    n for n, s in SOLVERS.items() if isinstance(s, ExplicitRK) and not s.adaptive
)
"""Names of the fixed-step explicit Runge-Kutta methods."""
ADAPTIVE_METHODS: tuple[str, ...] = tuple(n for n, s in SOLVERS.items() if s.adaptive)
"""Names of the adaptive methods (an embedded error estimate and a step-size controller)."""
METHODS: tuple[str, ...] = tuple(SOLVERS)
"""Names of all methods, the keys of :data:`SOLVERS`."""
IMPLICIT_METHODS: tuple[str, ...] = tuple(
    n for n, s in SOLVERS.items() if isinstance(s, ImplicitRK)
)
"""Names of the implicit (stiff) methods."""
MULTISTEP_METHODS: tuple[str, ...] = tuple(n for n, s in SOLVERS.items() if s.multistep)
"""Names of the fixed-step multistep (Adams) methods."""


def get_solver(method: str | Solver, what: str = "method") -> Solver:
    """The solver named ``method`` (or ``method`` itself if it is a :class:`Solver`).

    Raises:
        UnknownNameError: an unknown name (the message lists the valid ones).
        InvalidTypeError: neither a string nor a :class:`Solver` (the message says how to wrap
            a tableau, or lists the valid names).
    """
    if isinstance(method, Solver):
        return method
    if not isinstance(method, str):
        wrap = {ButcherTableau: "ExplicitRK", ImplicitTableau: "ImplicitRK"}.get(type(method))
        keyword = what.replace(" ", "_")  # "adjoint method" -> adjoint_method=
        fix = (f"; wrap the tableau in a solver: {keyword}={wrap}(tableau)" if wrap
               else f"; valid names: {', '.join(METHODS)}")
        raise InvalidTypeError(
            f"{what} must be a method name or a Solver, got {type(method).__name__}{fix}"
        )
    solver = SOLVERS.get(method)
    if solver is None:
        raise UnknownNameError(what, method, METHODS)
    return solver
