"""Differential tests: the same call to torchdiffeq 0.2.5 and to deeplimits gives the same answer.

torchdiffeq is a test oracle here (the ``test`` extra), never the engine. Fixed-step methods on
the same grid take the same steps, so their outputs at grid times agree to round-off; adaptive
methods control the step differently in details (first step, acceptance), so they are compared
against each other and against the exact solution at the tolerance's scale.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
import torchdiffeq

from deeplimits.errors import InvalidArgumentError
from deeplimits.ode import SolveStats, odeint, odeint_adjoint

F64 = torch.float64


def _forced_oscillator(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([y[1], -y[0] + 0.1 * torch.cos(t)])


def _exact(t: torch.Tensor) -> torch.Tensor:
    """y'' + y = 0.1 cos t, y(0) = 1, y'(0) = 0: y = cos t + 0.05 t sin t."""
    return torch.stack([torch.cos(t) + 0.05 * t * torch.sin(t),
                        -torch.sin(t) + 0.05 * (torch.sin(t) + t * torch.cos(t))], dim=-1)


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun2", "heun3", "rk4"])
def test_fixed_step_methods_take_torchdiffeqs_steps(method: str) -> None:
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t = torch.linspace(0.0, 3.0, 7, dtype=F64)  # every output time on the 0.01 grid
    ours = odeint(_forced_oscillator, y0, t, method=method, options={"step_size": 0.01})
    theirs = torchdiffeq.odeint(_forced_oscillator, y0, t, method=method,
                                options={"step_size": 0.01})
    assert float((ours - theirs).abs().max()) <= 1e-12


@pytest.mark.parametrize(
    ("method", "tol"), [("adaptive_heun", 1e-4), ("fehlberg2", 1e-3), ("bosh3", 1e-4),
                        ("dopri5", 1e-5)],
)
def test_adaptive_methods_agree_with_torchdiffeq_and_the_exact_solution(
    method: str, tol: float
) -> None:
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t = torch.linspace(0.0, 3.0, 7, dtype=F64)
    stats = SolveStats()
    ours = odeint(_forced_oscillator, y0, t, method=method, rtol=1e-6, atol=1e-8, stats=stats)
    theirs = torchdiffeq.odeint(_forced_oscillator, y0, t, method=method, rtol=1e-6, atol=1e-8)
    exact = _exact(t)
    assert float((ours - exact).abs().max()) <= tol
    assert float((ours - theirs).abs().max()) <= tol
    assert stats.accepted_steps > 3 and not math.isnan(float(ours.sum()))


def _stiffish(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -50.0 * (y - torch.cos(t))


@pytest.mark.parametrize(
    "options",
    [{"min_step": 0.05}, {"max_step": 0.01}, {"safety": 0.5, "ifactor": 2.0, "dfactor": 0.5},
     {"max_step": math.inf}],
    ids=["min_step", "max_step", "safety-factors", "max_step-inf"],
)
@pytest.mark.parametrize("device_loop", [False, True], ids=["host", "device"])
def test_torchdiffeqs_step_size_options_give_its_answer(
    options: dict[str, float], device_loop: bool
) -> None:
    y0 = torch.tensor([0.0], dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    stats = SolveStats()
    ours = odeint(_stiffish, y0, t, rtol=1e-8, atol=1e-10, stats=stats,
                  options={**options, "device_loop": device_loop})
    theirs = torchdiffeq.odeint(_stiffish, y0, t, rtol=1e-8, atol=1e-10, options=options)
    assert float((ours - theirs).abs().max()) <= 1e-8
    if "min_step" in options:
        # every step is min_step (the error test never shrinks below it): 1 / 0.05 = 20 steps
        assert stats.accepted_steps == 20 and stats.rejected_steps == 0


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_linear_interp_gives_torchdiffeqs_outputs_between_grid_points(method: str) -> None:
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t = torch.tensor([0.0, 0.123, 0.5, 0.777, 1.0], dtype=F64)  # between the 0.1 grid points
    calls = {"n": 0}

    def f(tt: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return _forced_oscillator(tt, y)

    ours = odeint(f, y0, t, method=method, options={"step_size": 0.1, "interp": "linear"})
    n_ours, calls["n"] = calls["n"], 0
    theirs = torchdiffeq.odeint(f, y0, t, method=method, options={"step_size": 0.1})
    assert float((ours - theirs).abs().max()) <= 1e-12
    assert n_ours == calls["n"]  # no extra evaluation for the interpolant, as torchdiffeq
    if method == "rk4":  # where the steps are accurate, the cubic interpolant is much better
        cubic = odeint(f, y0, t, method=method, options={"step_size": 0.1})
        err_cubic = float((cubic - _exact(t))[[1, 3]].abs().max())
        assert err_cubic < 0.01 * float((ours - _exact(t))[[1, 3]].abs().max())


def test_grid_constructor_gets_func_y0_t_and_sets_the_steps() -> None:
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t = torch.linspace(0.0, 1.0, 3, dtype=F64)
    seen = []

    def grid(func, y, tt):  # type: ignore[no-untyped-def]
        seen.append((func is _forced_oscillator, torch.equal(y, y0), torch.equal(tt, t)))
        return torch.linspace(float(tt[0]), float(tt[-1]), 41, dtype=F64) ** 2

    stats = SolveStats()
    ours = odeint(_forced_oscillator, y0, t, method="rk4", stats=stats,
                  options={"grid_constructor": grid, "interp": "linear"})
    theirs = torchdiffeq.odeint(_forced_oscillator, y0, t, method="rk4",
                                options={"grid_constructor": grid})
    assert seen[0] == (True, True, True) and stats.accepted_steps == 40
    assert float((ours - theirs).abs().max()) <= 1e-12


class _Recorder(torch.nn.Module):
    """Forced oscillator with torchdiffeq's step callbacks, recording their arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, float, float]] = []

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _forced_oscillator(t, y)

    def callback_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        self.log.append(("step", float(t0), float(dt)))

    def callback_accept_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        self.log.append(("accept", float(t0), float(dt)))

    def callback_reject_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        self.log.append(("reject", float(t0), float(dt)))

    def callback_step_adjoint(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        self.log.append(("step_adjoint", float(t0), float(dt)))


def test_fixed_step_callbacks_see_torchdiffeqs_steps() -> None:
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t = torch.linspace(0.0, 1.0, 3, dtype=F64)
    ours, theirs = _Recorder(), _Recorder()
    # accept/reject are not called by fixed-step methods (torchdiffeq warns the same way)
    with pytest.warns(UserWarning, match="does not call callbacks") as rec:
        odeint(ours, y0, t, method="rk4", options={"step_size": 0.25})
    assert rec[0].filename == __file__
    with pytest.warns(UserWarning, match="does not support callbacks"):
        torchdiffeq.odeint(theirs, y0, t, method="rk4", options={"step_size": 0.25})
    assert ours.log == theirs.log and len(ours.log) == 4


def test_adaptive_callbacks_follow_every_attempt_and_decision() -> None:
    f = _Recorder()
    stats = SolveStats()
    odeint(f, torch.tensor([1.0, 0.0], dtype=F64), torch.tensor([0.0, 5.0], dtype=F64),
           rtol=1e-9, atol=1e-11, stats=stats, options={"first_step": 1.0})
    kinds = [k for k, _, _ in f.log]
    assert kinds.count("step") == stats.accepted_steps + stats.rejected_steps
    assert kinds.count("accept") == stats.accepted_steps
    assert kinds.count("reject") == stats.rejected_steps >= 1  # the 1.0 first step is rejected
    for (k0, t0, h0), (k1, t1, h1) in zip(f.log, f.log[1:], strict=False):
        if k0 == "step":  # each attempt is followed by its decision, same t0 and dt
            assert k1 in ("accept", "reject") and (t1, h1) == (t0, h0)
    accepted = [(t0, h) for k, t0, h in f.log if k == "accept"]
    for (ta, ha), (tb, _) in itertools.pairwise(accepted):
        assert tb == pytest.approx(ta + ha, abs=1e-15)  # accepted steps tile [0, 5]


def test_adjoint_callbacks_are_called_in_the_backward_solve() -> None:
    from deeplimits.ode import odeint_adjoint

    f = _Recorder()
    y0 = torch.tensor([1.0, 0.0], dtype=F64, requires_grad=True)
    stats = SolveStats()
    ys = odeint_adjoint(f, y0, torch.tensor([0.0, 2.0], dtype=F64), stats=stats,
                        adjoint_params=())
    n_forward = len(f.log)
    ys[-1].sum().backward()
    backward = [k for k, _, _ in f.log[n_forward:]]
    assert backward == ["step_adjoint"] * (stats.backward_accepted_steps
                                           + stats.backward_rejected_steps)


def test_callbacks_the_device_loop_cannot_call_are_warned_about() -> None:
    with pytest.warns(UserWarning, match="not called by the device loop") as rec:
        odeint(_Recorder(), torch.ones(2, 2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
               options={"device_loop": True})
    assert rec[0].filename == __file__


# torchdiffeq passes min_step to every scipy method; scipy warns for all but LSODA.
@pytest.mark.filterwarnings("ignore:The following arguments have no effect:UserWarning")
@pytest.mark.parametrize("solver", ["LSODA", "Radau", "BDF", "RK45"])
def test_scipy_solver_gives_scipys_values_and_torchdiffeqs(solver: str) -> None:
    from scipy.integrate import solve_ivp

    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t = torch.linspace(0.0, 3.0, 5, dtype=F64)
    stats = SolveStats()
    ours = odeint(_forced_oscillator, y0, t, method="scipy_solver", rtol=1e-8, atol=1e-10,
                  options={"solver": solver}, stats=stats)
    ref = solve_ivp(lambda s, y: _forced_oscillator(torch.tensor(s, dtype=F64),
                                                    torch.from_numpy(y)).numpy(),
                    (0.0, 3.0), y0.numpy(), method=solver, t_eval=t.numpy(), rtol=1e-8,
                    atol=1e-10)
    assert float((ours - torch.from_numpy(ref.y.T)).abs().max()) <= 1e-12
    theirs = torchdiffeq.odeint(_forced_oscillator, y0, t, method="scipy_solver", rtol=1e-8,
                                atol=1e-10, options={"solver": solver})
    assert float((ours - theirs).abs().max()) <= 1e-7  # LSODA differs from torchdiffeq's 8e-9
    assert float((ours - _exact(t)).abs().max()) <= 1e-5 and stats.nfe_forward > 10


def test_scipy_solver_integrates_backwards_in_time_and_keeps_dtype() -> None:
    y0 = _exact(torch.tensor([3.0], dtype=F64))[0].float()
    t = torch.linspace(3.0, 0.0, 4)
    ys = odeint(_forced_oscillator, y0, t, method="scipy_solver", rtol=1e-9, atol=1e-11,
                options={"solver": "DOP853"})
    assert ys.dtype == torch.float32
    assert float((ys.double() - _exact(t.double())).abs().max()) <= 1e-5


def test_scipy_solver_gradients_come_from_the_adjoint_and_odeint_refuses_them() -> None:
    from deeplimits.errors import InvalidArgumentError
    from deeplimits.ode import odeint_adjoint

    class Spring(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.k = torch.nn.Parameter(torch.tensor(1.0, dtype=F64))

        def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return torch.stack([y[1], -self.k * y[0]])

    t = torch.linspace(0.0, 3.0, 4, dtype=F64)
    grads = []
    for method, solve in (("scipy_solver", odeint_adjoint), ("dopri5", odeint)):
        f = Spring()
        y0 = torch.tensor([1.0, 0.0], dtype=F64, requires_grad=True)
        solve(f, y0, t, method=method, rtol=1e-10, atol=1e-12)[-1, 0].backward()
        grads.append(torch.cat([y0.grad, f.k.grad.reshape(1)]))
    assert float((grads[0] - grads[1]).abs().max()) <= 1e-6
    with pytest.raises(InvalidArgumentError, match="no gradients through odeint"):
        odeint(Spring(), torch.ones(2, dtype=F64), t, method="scipy_solver")


def _max_norm(x: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    parts = x if isinstance(x, tuple) else (x,)
    return torch.stack([p.abs().max() for p in parts]).max()


def test_a_norm_function_controls_the_steps_as_in_torchdiffeq() -> None:
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t = torch.linspace(0.0, 3.0, 4, dtype=F64)
    rms, maxed = SolveStats(), SolveStats()
    odeint(_forced_oscillator, y0, t, rtol=1e-7, atol=1e-9, stats=rms)
    ours = odeint(_forced_oscillator, y0, t, rtol=1e-7, atol=1e-9, stats=maxed,
                  options={"norm": _max_norm})
    theirs = torchdiffeq.odeint(_forced_oscillator, y0, t, rtol=1e-7, atol=1e-9,
                                options={"norm": _max_norm})
    assert maxed.nfe_forward > rms.nfe_forward  # the max norm is stricter than the RMS
    assert float((ours - theirs).abs().max()) <= 1e-6
    assert float((ours - _exact(t)).abs().max()) <= 1e-6


def test_a_norm_function_gets_a_tuple_state_in_its_structure() -> None:
    seen: list[type] = []

    def norm(x: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
        seen.append(type(x))
        return _max_norm(x)

    def f(t: torch.Tensor, y: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return y[1], -y[0]

    y0 = (torch.ones(1, dtype=F64), torch.zeros(1, dtype=F64))
    ys = odeint(f, y0, torch.tensor([0.0, 1.0], dtype=F64), options={"norm": norm})
    assert seen and set(seen) == {tuple}
    assert abs(float(ys[0][-1, 0]) - math.cos(1.0)) <= 1e-6


def test_tuple_tolerances_weigh_each_tensor_of_a_tuple_state_as_torchdiffeq() -> None:
    def f(t: torch.Tensor, y: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return y[1], -y[0]

    y0 = (torch.ones(1, dtype=F64), torch.zeros(1, dtype=F64))
    t = torch.tensor([0.0, 2.0], dtype=F64)
    loose, tight = SolveStats(), SolveStats()
    odeint(f, y0, t, rtol=(1e-3, 1e-3), atol=(1e-5, 1e-5), stats=loose)
    ours = odeint(f, y0, t, rtol=(1e-3, 1e-10), atol=(1e-5, 1e-12), stats=tight)
    assert tight.nfe_forward > loose.nfe_forward  # the tight second tensor sets the steps
    theirs = torchdiffeq.odeint(f, y0, t, rtol=(1e-3, 1e-10), atol=(1e-5, 1e-12))
    for a, b in zip(ours, theirs, strict=True):
        assert float((a - b).abs().max()) <= 1e-6
    from deeplimits.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="has 3 entries but y0 has 2 tensors"):
        odeint(f, y0, t, rtol=(1e-3, 1e-3, 1e-3))
    with pytest.raises(InvalidArgumentError, match="need a tuple y0"):
        odeint(lambda s, y: -y, torch.ones(2, dtype=F64), t, rtol=(1e-3,))


class _DampedSprings(torch.nn.Module):
    """Two damped springs as a tuple state ``(x, v)`` (or stacked ``(2, 2)``), with a parameter
    that does not enter the dynamics (torchdiffeq still gives it a channel in the adjoint)."""

    def __init__(self, stacked: bool = False) -> None:
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor([0.7, 1.3], dtype=F64))
        self.unused = torch.nn.Parameter(torch.ones(3, dtype=F64))
        self.stacked = stacked

    def forward(self, t: torch.Tensor, y: Any) -> Any:
        x, v = (y[0], y[1]) if self.stacked else y
        dx, dv = v, -self.k * x - 0.1 * v * torch.cos(t)
        return torch.stack([dx, dv]) if self.stacked else (dx, dv)


def _springs_y0(stacked: bool) -> Any:
    x0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    v0 = torch.tensor([0.0, -0.3], dtype=F64, requires_grad=True)
    return (torch.stack([x0, v0]) if stacked else (x0, v0)), (x0, v0)


def _springs_grads(solve: Any, stacked: bool, **kw: Any) -> tuple[torch.Tensor, Any]:
    """Gradients (x0, v0, k) of a loss on every output, and the module (for .unused)."""
    f = _DampedSprings(stacked)
    y0, leaves = _springs_y0(stacked)
    t = torch.linspace(0.0, 2.0, 3, dtype=F64)
    ys = solve(f, y0, t, **kw)
    x, v = (ys[:, 0], ys[:, 1]) if stacked else ys
    (x[-1].sum() + v[1:].square().sum()).backward()
    return torch.cat([leaves[0].grad, leaves[1].grad, f.k.grad]), f


@pytest.mark.parametrize("stacked", [False, True], ids=["tuple", "tensor"])
def test_an_adjoint_norm_function_gets_torchdiffeqs_tuple_and_gives_its_gradients(
    stacked: bool,
) -> None:
    from deeplimits.ode import odeint_adjoint

    seen: dict[str, set[tuple[tuple[int, ...], ...]]] = {"ours": set(), "theirs": set()}

    def max_norm(key: str, scale: float) -> Any:
        def norm(parts: tuple[torch.Tensor, ...]) -> torch.Tensor:
            seen[key].add(tuple(tuple(p.shape) for p in parts))
            return scale * _max_norm(parts)

        return norm

    kw: dict[str, Any] = {"rtol": 1e-7, "atol": 1e-9}
    ours, f = _springs_grads(odeint_adjoint, stacked, adjoint_options={
        "norm": max_norm("ours", 1.0)}, **kw)
    theirs, _ = _springs_grads(torchdiffeq.odeint_adjoint, stacked, adjoint_options={
        "norm": max_norm("theirs", 1.0)}, **kw)
    # torchdiffeq's layout: (t, y, adj_y, *params) with a tuple state spread out
    parts = ((), (2, 2), (2, 2)) if stacked else ((), (2,), (2,), (2,), (2,))
    assert seen["ours"] == seen["theirs"] == {(*parts, (2,), (3,))}
    assert float((ours - theirs).abs().max()) <= 1e-6
    assert torch.equal(f.unused.grad, torch.zeros(3, dtype=F64))
    # the function sets the backward steps: a norm 100x smaller takes fewer steps
    strict, lax = SolveStats(), SolveStats()
    _springs_grads(odeint_adjoint, stacked, adjoint_options={"norm": max_norm("ours", 1.0)},
                   stats=strict, **kw)
    loose, _ = _springs_grads(odeint_adjoint, stacked, stats=lax,
                              adjoint_options={"norm": max_norm("ours", 0.01)}, **kw)
    assert lax.nfe_backward < strict.nfe_backward
    assert float((loose - theirs).abs().max()) > float((ours - theirs).abs().max())


@pytest.mark.parametrize("adjoint_norm", [None, "seminorm"])
def test_a_forward_norm_function_builds_torchdiffeqs_backward_norm(adjoint_norm: Any) -> None:
    from deeplimits.ode import odeint_adjoint

    calls = {"ours": 0, "theirs": 0}

    def counted(key: str) -> Any:
        def norm(x: Any) -> torch.Tensor:
            calls[key] += 1
            return _max_norm(x)

        return norm

    adj = {} if adjoint_norm is None else {"adjoint_options": {"norm": adjoint_norm}}
    kw: dict[str, Any] = {"rtol": 1e-7, "atol": 1e-9, **adj}
    plain = SolveStats()
    _springs_grads(odeint_adjoint, False, stats=plain, **kw)
    stats = SolveStats()
    ours, _ = _springs_grads(odeint_adjoint, False, stats=stats,
                             options={"norm": counted("ours")}, **kw)
    n_forward = stats.accepted_steps + stats.rejected_steps
    theirs, _ = _springs_grads(torchdiffeq.odeint_adjoint, False,
                               options={"norm": counted("theirs")}, **kw)
    assert float((ours - theirs).abs().max()) <= 1e-6
    # the forward norm is called in the backward too (twice per attempt: y and adj_y) ...
    assert calls["ours"] > n_forward + 2 * stats.backward_accepted_steps
    # ... and its max norm is stricter than the RMS of the plain adjoint
    assert stats.nfe_backward > plain.nfe_backward


def test_tuple_tolerances_in_odeint_adjoint_weigh_each_tensor_as_torchdiffeq() -> None:
    from deeplimits.ode import odeint_adjoint

    tight = {"rtol": (1e-3, 1e-10), "atol": (1e-5, 1e-12)}
    loose = {"rtol": (1e-3, 1e-3), "atol": (1e-5, 1e-5)}
    s_tight, s_loose = SolveStats(), SolveStats()
    # torchdiffeq's backward state is (t, y, adj_y, *params): its tuple tolerances cannot be
    # reused there, so it needs float adjoint tolerances
    adj = {"adjoint_rtol": 1e-10, "adjoint_atol": 1e-12}
    ours, _ = _springs_grads(odeint_adjoint, False, stats=s_tight, **tight, **adj)
    _springs_grads(odeint_adjoint, False, stats=s_loose, **loose, **adj)
    theirs, _ = _springs_grads(torchdiffeq.odeint_adjoint, False, **tight, **adj)
    assert s_tight.nfe_forward > s_loose.nfe_forward  # the tight second tensor sets the steps
    assert float((ours - theirs).abs().max()) <= 1e-6
    # here (a difference) the backward may inherit them: the state's and the adjoint's tensors
    # keep their own tolerance, the parameters' channel the smallest
    inherit, b_loose = SolveStats(), SolveStats()
    inherited, _ = _springs_grads(odeint_adjoint, False, stats=inherit, **tight)
    _springs_grads(odeint_adjoint, False, stats=b_loose, **loose)
    assert inherit.nfe_backward > b_loose.nfe_backward
    assert float((inherited - theirs).abs().max()) <= 1e-6
    with pytest.raises(InvalidArgumentError, match=r"adjoint_rtol=.* has 3 entries"):
        _springs_grads(odeint_adjoint, False, adjoint_rtol=(1e-3,) * 3, adjoint_atol=1e-6)
    with pytest.raises(InvalidArgumentError, match="need a tuple y0"):
        _springs_grads(odeint_adjoint, True, rtol=(1e-3, 1e-3))


def _jump_at_half(strict: bool) -> Any:
    """``dy/dt = +-1 - 0.3 y`` with the sign flipping at the grid time 0.5: with ``strict``
    ``t < 0.5`` is the left side (``f(0.5)`` is the right limit), else ``t <= 0.5``."""

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        left = (t < 0.5) if strict else (t <= 0.5)
        return torch.where(left, 1.0, -1.0).to(y.dtype) - 0.3 * y

    return f


def _perturbed_cases_that_differ(method: str, dtype: torch.dtype, extra: dict) -> int:
    """Of the 4 cases (either side of the jump x forward/reverse), how many change with
    ``perturb``; with and without it, ours equals torchdiffeq's in each."""
    y0 = torch.tensor([0.2, -1.0], dtype=dtype)
    tol = 1e-12 if dtype == F64 else 1e-6
    differs = 0
    for strict, reverse in itertools.product([True, False], [False, True]):
        t = torch.linspace(0.0, 1.0, 5, dtype=dtype)
        t = t.flip(0) if reverse else t
        f = _jump_at_half(strict)
        out = {}
        for perturb in (False, True):
            opts = {"step_size": 0.125, "perturb": perturb, **extra}
            out[perturb] = odeint(f, y0, t, method=method, options=opts)
            theirs = torchdiffeq.odeint(f, y0, t, method=method, options=opts)
            assert float((out[perturb] - theirs).abs().max()) <= tol
        differs += float((out[True] - out[False]).abs().max()) > 1e-3
    return differs


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("method", ["euler", "midpoint", "heun2", "heun3", "rk4"])
def test_perturb_nudges_the_stage_times_as_torchdiffeq(method: str, dtype: torch.dtype) -> None:
    differs = _perturbed_cases_that_differ(method, dtype, {})
    # At a step's start every method is perturbed: that matters where f(0.5) is the value of
    # the side the solve leaves (forward with t <= 0.5, reverse with t < 0.5); at a step's
    # end only heun2 and rk4 have a stage: it matters in the other two cases.
    assert differs == (4 if method in ("heun2", "rk4") else 2)


def test_perturb_is_refused_where_it_cannot_apply() -> None:
    y0 = torch.ones(2, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    class Jump(torch.nn.Module):
        def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return _jump_at_half(True)(t, y)

    with pytest.raises(InvalidArgumentError, match="perturb=True is not available with compile"):
        odeint(Jump(), y0, t, method="rk4",
               options={"step_size": 0.1, "perturb": True, "compile": True})
    with pytest.raises(InvalidArgumentError, match="not available for reversible_heun"):
        odeint(_jump_at_half(True), y0, t, method="reversible_heun",
               options={"step_size": 0.1, "perturb": True})


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_dopri8_agrees_with_torchdiffeq_and_the_exact_solution(
    dtype: torch.dtype, reverse: bool
) -> None:
    t = torch.linspace(0.0, 3.0, 7, dtype=F64)  # interior outputs: the interpolant too
    t = t.flip(0) if reverse else t
    y0 = _exact(t[:1])[0].to(dtype)
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == F64 else {"rtol": 1e-5, "atol": 1e-7}
    stats = SolveStats()
    ours = odeint(_forced_oscillator, y0, t.to(dtype), method="dopri8", stats=stats, **tol)
    theirs = torchdiffeq.odeint(_forced_oscillator, y0, t.to(dtype), method="dopri8", **tol)
    err = (ours.double() - _exact(t)).abs()
    # the last time is a step's end (8th order); the others come from the 4th-order quartic
    # interpolant both libraries use; torchdiffeq interpolates the last time too
    assert float(err[-1].max()) <= (1e-10 if dtype == F64 else 1e-5)
    assert float(err.max()) <= (1e-6 if dtype == F64 else 1e-4)
    assert float((ours.double() - theirs.double()).abs().max()) <= (
        1e-6 if dtype == F64 else 5e-4)
    five = SolveStats()  # an 8th-order pair takes fewer steps than dopri5 at tight tolerances
    odeint(_forced_oscillator, y0, t.to(dtype), method="dopri5", stats=five, **tol)
    assert stats.accepted_steps < five.accepted_steps


_ADAMS_CASES = [
    ("explicit_adams", {"max_order": 5}), ("explicit_adams", {}), ("implicit_adams", {}),
    ("fixed_adams", {"max_order": 8, "max_iters": 2}), ("implicit_adams", {"max_order": 4}),
]


def _pendulum(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([y[1], -torch.sin(y[0]) + 0.1 * torch.cos(t)])


def _tuple_pendulum(
    t: torch.Tensor, y: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    return y[1][:1], torch.cat([-torch.sin(y[0]), 0.3 * y[1][1:] * torch.cos(t)])


def test_adams_weights_are_torchdiffeqs_tables() -> None:
    from torchdiffeq._impl import fixed_adams

    from deeplimits.ode._adams import adams_bashforth, adams_moulton

    for k in range(1, 12):  # every Adams-Bashforth formula its schedule can use
        assert [float(b) for b in adams_bashforth(k)] == fixed_adams._BASHFORTH_DIVISOR[k].tolist()
    for k in range(2, 13):  # (its order-1 Moulton entry, 1/11, is a table typo it never uses)
        assert [float(m) for m in adams_moulton(k)] == fixed_adams._MOULTON_DIVISOR[k].tolist()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize(("method", "options"), _ADAMS_CASES,
                         ids=["explicit-max5", "explicit", "implicit", "fixed-max8-iters2",
                              "implicit-max4"])
def test_adams_methods_take_torchdiffeqs_steps(
    method: str, options: dict[str, int], reverse: bool, dtype: torch.dtype
) -> None:
    # Same grid, same schedule (rk4 start-up, orders up to max_order, the corrector's stopping
    # test with odeint's rtol/atol), same interpolants between grid points; one tensor and a
    # tuple state. explicit_adams at its default max_order=12 is unstable here (see
    # test_ode_adams.py): round-off differences grow, so its span is short.
    tol, rtol, atol = (1e-12, 1e-6, 1e-8) if dtype == F64 else (1e-5, 1e-4, 1e-6)
    end = 0.3 if options == {} and method == "explicit_adams" else 1.0
    t = torch.tensor([0.0, 0.123, 0.25, end], dtype=dtype)
    t = -t if reverse else t
    calls = {"n": 0}

    def f(tt: torch.Tensor, y: Any) -> Any:
        calls["n"] += 1
        return _tuple_pendulum(tt, y) if isinstance(y, tuple) else _pendulum(tt, y)

    for y0 in (torch.tensor([1.0, 0.0], dtype=dtype),
               (torch.tensor([1.0], dtype=dtype), torch.tensor([0.0, 0.5], dtype=dtype))):
        for interp in ("linear", "cubic"):
            opts = {"step_size": 0.01, "interp": interp, **options}
            calls["n"] = 0
            ours = odeint(f, y0, t, method=method, options=opts, rtol=rtol, atol=atol)
            n_ours, calls["n"] = calls["n"], 0
            theirs = torchdiffeq.odeint(f, y0, t, method=method, options=opts, rtol=rtol,
                                        atol=atol)
            if isinstance(y0, tuple):
                diff = max(float((a - b).abs().max()) for a, b in zip(ours, theirs, strict=True))
            else:
                diff = float((ours - theirs).abs().max())
            assert diff <= tol, (interp, diff)
            if interp == "linear":  # the same evaluations (the cubic one reuses f(t1, y1))
                assert n_ours == calls["n"]


@pytest.mark.filterwarnings("ignore:Functional iteration did not converge:UserWarning")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_adams_corrector_failures_keep_the_iterate_and_drop_history_as_torchdiffeq(
    dtype: torch.dtype,
) -> None:
    t = torch.linspace(0.0, 1.0, 5, dtype=dtype)
    y0 = torch.tensor([1.0, 0.0], dtype=dtype)
    kw: dict[str, Any] = {"rtol": 1e-12, "atol": 1e-14,
                          "options": {"step_size": 0.05, "max_iters": 1, "interp": "linear"}}
    stats = SolveStats()
    with pytest.warns(UserWarning, match="corrector did not converge"):
        ours = odeint(_pendulum, y0, t, method="implicit_adams", stats=stats, **kw)
    theirs = torchdiffeq.odeint(_pendulum, y0, t, method="implicit_adams", **kw)
    assert float((ours - theirs).abs().max()) <= (1e-12 if dtype == F64 else 1e-5)
    assert stats.corrector_failures == 18  # every step after the two rk4 start-up steps
    # without dropping history the answer would differ from theirs
    kw["options"] = {**kw["options"], "max_iters": 30}
    converged = odeint(_pendulum, y0, t, method="implicit_adams", **kw)
    assert float((converged - theirs).abs().max()) > 1e-8


@pytest.mark.filterwarnings("ignore:Functional iteration did not converge:UserWarning")
@pytest.mark.filterwarnings("ignore:Adams-Moulton corrector did not converge:UserWarning")
def test_tuple_tolerances_weigh_each_tensor_in_the_adams_corrector_as_torchdiffeq() -> None:
    # The first tensor has y' = 1: predictor and corrector agree exactly, so any tolerance on
    # it passes; a tight tolerance on the pendulum tensor cannot be met in 2 iterations.
    def f(t: torch.Tensor, y: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return torch.ones_like(y[0]), torch.stack([y[1][1], -torch.sin(y[1][0])])

    y0 = (torch.tensor([0.0], dtype=F64), torch.tensor([1.0, 0.0], dtype=F64))
    t = torch.linspace(0.0, 1.0, 5, dtype=F64)
    failures = []
    for tight_first in (True, False):
        rtol = (1e-13, 1e-3) if tight_first else (1e-3, 1e-13)
        kw: dict[str, Any] = {"rtol": rtol, "atol": tuple(r * 1e-2 for r in rtol),
                              "method": "implicit_adams",
                              "options": {"step_size": 0.05, "max_iters": 2, "interp": "linear"}}
        stats = SolveStats()
        ours = odeint(f, y0, t, stats=stats, **kw)
        theirs = torchdiffeq.odeint(f, y0, t, **kw)
        assert max(float((a - b).abs().max()) for a, b in zip(ours, theirs, strict=True)) <= 1e-12
        failures.append(stats.corrector_failures)
    assert failures == [0, 18]  # 18: every step after the two rk4 start-up steps


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams"])
def test_adams_perturb_nudges_the_stage_times_as_torchdiffeq(
    method: str, dtype: torch.dtype
) -> None:
    differs = _perturbed_cases_that_differ(method, dtype, {"max_order": 5, "max_iters": 10})
    # f0 at each step's start is perturbed: that matters where f(0.5) is the value of the side
    # the solve leaves; at a step's end only the rk4 start-up's last stage (steps 0 and 1, not
    # at 0.5) and the corrector's evaluations (implicit) are: the other two cases
    assert differs == (4 if method == "implicit_adams" else 2)


@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams"])
def test_adams_adjoint_gives_torchdiffeqs_gradients(method: str) -> None:
    class Damped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Parameter(torch.tensor([0.7, -0.3], dtype=F64))

        def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return torch.stack([y[1], -self.a[0] * torch.sin(y[0]) + self.a[1] * y[1]])

    f = Damped()
    y0 = torch.tensor([1.0, 0.2], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    grads = []
    for solve in (odeint_adjoint, torchdiffeq.odeint_adjoint):
        ys = solve(f, y0, t, method=method, options={"step_size": 0.02, "max_order": 6})
        grads.append(torch.cat(torch.autograd.grad(ys[1:].pow(2).sum(), (y0, f.a))))
    assert float((grads[0] - grads[1]).abs().max()) <= 1e-10
