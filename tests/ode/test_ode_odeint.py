"""odeint: accuracy against scipy, dense output, direction, tuple states, fixed-step grids."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from deeplimits.errors import InvalidArgumentError, NonFiniteStateError
from deeplimits.ode import (
    AdaptiveOptions,
    ButcherTableau,
    ExecutionOptions,
    ExplicitRK,
    IController,
    PIController,
    SolveStats,
    odeint,
    odeint_adjoint,
    odeint_checkpoint,
)

ADAPTIVE = ["bosh3", "dopri5", "tsit5"]
ALL = ["euler", "midpoint", "rk4", "bosh3", "dopri5", "tsit5", "reversible_heun"]


def _lotka_volterra(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([1.5 * y[0] - y[0] * y[1], -3.0 * y[1] + y[0] * y[1]])


def _van_der_pol(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([y[1], (1 - y[0] ** 2) * y[1] - y[0]])


def _np(f):  # type: ignore[no-untyped-def]
    def g(t: float, y: np.ndarray) -> np.ndarray:
        return f(torch.tensor(t), torch.from_numpy(y)).numpy()

    return g


def _reference(f, y0: list[float], t: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    sol = solve_ivp(_np(f), (t[0], t[-1]), y0, method="DOP853", t_eval=t, rtol=1e-12,
                    atol=1e-14)
    return sol.y.T


@pytest.mark.parametrize("device_loop", [False, True], ids=["host_loop", "device_loop"])
@pytest.mark.parametrize("method", ADAPTIVE)
@pytest.mark.parametrize(
    ("f", "y0", "t_end"), [(_lotka_volterra, [1.0, 1.0], 10.0), (_van_der_pol, [2.0, 0.0], 8.0)],
    ids=["lotka_volterra", "van_der_pol"],
)
def test_adaptive_methods_agree_with_scipy_dop853(method, f, y0, t_end, device_loop) -> None:  # type: ignore[no-untyped-def]
    t = np.linspace(0.0, t_end, 21)
    ref = _reference(f, y0, t)
    ys = odeint(f, torch.tensor(y0, dtype=torch.float64), torch.from_numpy(t), rtol=1e-8,
                atol=1e-10, method=method, options={"device_loop": device_loop}).numpy()
    rel = np.linalg.norm(ys - ref, axis=1) / np.linalg.norm(ref, axis=1)
    assert rel.max() <= 1e-6


@pytest.mark.parametrize("method", ADAPTIVE)
def test_float32_adaptive_solve_is_accurate_to_single_precision(method: str) -> None:
    t = np.linspace(0.0, 5.0, 6)
    ref = _reference(_lotka_volterra, [1.0, 1.0], t)
    ys = odeint(_lotka_volterra, torch.tensor([1.0, 1.0]), torch.from_numpy(t).float(),
                rtol=1e-5, atol=1e-6, method=method)
    assert ys.dtype == torch.float32
    assert np.abs(ys.numpy() - ref).max() / np.abs(ref).max() < 1e-3


@pytest.mark.parametrize("device_loop", [False, True], ids=["host_loop", "device_loop"])
@pytest.mark.parametrize("method", ADAPTIVE)
def test_dense_output_is_accurate_and_does_not_change_the_number_of_evaluations(
    method: str, device_loop: bool
) -> None:
    y0 = torch.tensor([1.0, 1.0], dtype=torch.float64)
    opts = {"device_loop": device_loop}
    few = SolveStats()
    odeint(_lotka_volterra, y0, torch.tensor([0.0, 10.0], dtype=torch.float64), rtol=1e-8,
           atol=1e-10, method=method, stats=few, options=opts)
    many = SolveStats()
    t = np.sort(np.random.default_rng(0).uniform(0.05, 9.95, 50))
    t = np.concatenate([[0.0], t, [10.0]])
    ys = odeint(_lotka_volterra, y0, torch.from_numpy(t), rtol=1e-8, atol=1e-10,
                method=method, stats=many, options=opts)
    assert abs(many.nfe_forward - few.nfe_forward) <= 0.1 * few.nfe_forward
    ref = _reference(_lotka_volterra, [1.0, 1.0], t)
    rel = np.linalg.norm(ys.numpy() - ref, axis=1) / np.linalg.norm(ref, axis=1)
    assert rel.max() <= 1e-6


@pytest.mark.parametrize("method", ["rk4"])
def test_fixed_step_dense_output_uses_cubic_hermite_between_grid_points(method: str) -> None:
    # rk4 with step 0.01: Hermite interpolation error O(h^4) ~ 1e-8, far below linear's 1e-5.
    f = _van_der_pol
    t = torch.linspace(0.0, 3.0, 50, dtype=torch.float64)
    ys = odeint(f, torch.tensor([2.0, 0.0], dtype=torch.float64), t, method=method,
                options={"step_size": 0.01})
    ref = _reference(f, [2.0, 0.0], t.numpy())
    # Linear interpolation would be off by ~h^2/8 |y''| ~ 1e-5 here.
    assert np.abs(ys.numpy() - ref).max() < 1e-7


@pytest.mark.parametrize("method", ALL)
def test_backwards_in_time_integration_returns_to_the_initial_state(method: str) -> None:
    y0 = torch.tensor([2.0, 0.0], dtype=torch.float64)
    t = torch.linspace(0.0, 2.0, 5, dtype=torch.float64)
    fixed = ("euler", "midpoint", "rk4", "reversible_heun")
    opts = {"step_size": 1e-3} if method in fixed else None
    fwd = odeint(_van_der_pol, y0, t, method=method, options=opts, rtol=1e-9, atol=1e-11)
    back = odeint(_van_der_pol, fwd[-1], t.flip(0), method=method, options=opts, rtol=1e-9,
                  atol=1e-11)
    tol = {"euler": 1e-2, "midpoint": 1e-5, "reversible_heun": 1e-4}.get(method, 1e-6)
    assert torch.allclose(back.flip(0), fwd, atol=tol)


@pytest.mark.parametrize("method", ["rk4", "dopri5", "reversible_heun"])
def test_tuple_state_matches_the_concatenated_state(method: str) -> None:
    x0 = torch.tensor([1.0], dtype=torch.float64)
    v0 = torch.zeros(1, 2, dtype=torch.float64)
    t = torch.linspace(0.0, 1.0, 4, dtype=torch.float64)
    opts = {"step_size": 0.01} if method != "dopri5" else None
    xs, vs = odeint(lambda t, y: (y[1].sum(1).reshape(1), -y[0].expand(1, 2)), (x0, v0), t,
                    method=method, options=opts)
    assert xs.shape == (4, 1) and vs.shape == (4, 1, 2)
    # Compare with the same system written on one flat tensor [x, v1, v2].
    ys = odeint(lambda t, y: torch.cat([y[1:].sum(0, keepdim=True), -y[:1].expand(2)]),
                torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), t, method=method,
                options=opts)
    assert torch.allclose(xs[:, 0], ys[:, 0], atol=1e-12)
    assert torch.allclose(vs.reshape(4, 2), ys[:, 1:], atol=1e-12)


def test_single_time_returns_the_initial_state() -> None:
    y0 = torch.randn(3, 2)
    ys = odeint(lambda t, y: -y, y0, torch.tensor([0.5]))
    assert ys.shape == (1, 3, 2) and torch.equal(ys[0], y0)


def test_state_of_any_shape_keeps_its_shape() -> None:
    y0 = torch.randn(2, 3, 4, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    ys = odeint(lambda t, y: -y, y0, t)
    assert ys.shape == (2, 2, 3, 4)
    assert torch.allclose(ys[-1], y0 * np.exp(-1.0), rtol=1e-6)


def test_rejected_step_retries_from_same_time() -> None:
    times: list[float] = []

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        times.append(float(t))
        return -50.0 * (y - torch.cos(t))

    stats = SolveStats()
    odeint(f, torch.tensor([0.0], dtype=torch.float64),
           torch.tensor([0.0, 1.0], dtype=torch.float64),
           method="dopri5", options={"first_step": 0.5}, stats=stats)
    assert stats.rejected_steps >= 1
    # Stage 2 of the first (rejected) try is at 0 + h/5 = 0.1; the retry's stage 2 is earlier
    # but still after t = 0: the retry starts again from t = 0 with a smaller step.
    assert times[1] == pytest.approx(0.1)
    assert 0.0 < times[7] < 0.1


@pytest.mark.parametrize("controller", [PIController(), IController(), PIController(0.2, 0.5)])
def test_every_controller_reaches_the_tolerance(controller: PIController) -> None:
    t = np.linspace(0.0, 10.0, 11)
    ref = _reference(_lotka_volterra, [1.0, 1.0], t)
    ys = odeint(_lotka_volterra, torch.tensor([1.0, 1.0], dtype=torch.float64),
                torch.from_numpy(t), rtol=1e-8, atol=1e-10,
                options=AdaptiveOptions(controller=controller))
    assert np.abs(ys.numpy() - ref).max() < 1e-5


@pytest.mark.parametrize("device_loop", [False, True])
def test_default_controller_is_the_integral_controller(device_loop: bool) -> None:
    y0 = torch.tensor([1.0, 1.0], dtype=torch.float64)
    t = torch.linspace(0.0, 10.0, 6, dtype=torch.float64)
    runs = []
    for controller in (None, IController(), PIController()):
        stats = SolveStats()
        ys = odeint(_lotka_volterra, y0, t, rtol=1e-6, atol=1e-8, stats=stats,
                    options=AdaptiveOptions(controller=controller),
                    execution=ExecutionOptions(device_loop=device_loop))
        runs.append((stats.nfe_forward, stats.rejected_steps, ys))
    (n_def, rej_def, y_def), (n_i, rej_i, y_i), (n_pi, rej_pi, _) = runs
    assert (n_def, rej_def) == (n_i, rej_i)
    assert torch.equal(y_def, y_i)
    assert (n_pi, rej_pi) != (n_i, rej_i)  # the two controllers do differ on this problem


def test_fixed_step_grid_option_steps_on_the_grid() -> None:
    stats = SolveStats()
    grid = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
    ys = odeint(lambda t, y: -y, torch.ones(1, dtype=torch.float64),
                torch.tensor([0.0, 0.55, 1.0], dtype=torch.float64), method="rk4",
                options={"grid": grid}, stats=stats)
    assert stats.accepted_steps == 10
    assert abs(float(ys[1]) - np.exp(-0.55)) < 1e-6


def test_fixed_step_without_options_steps_on_the_output_times() -> None:
    stats = SolveStats()
    odeint(lambda t, y: -y, torch.ones(1), torch.linspace(0, 1, 7), method="euler", stats=stats)
    assert stats.accepted_steps == 6 and stats.nfe_forward == 6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["rk4", "dopri5", "tsit5"])
def test_solve_on_cuda_matches_cpu(method: str) -> None:
    y0 = torch.tensor([1.0, 1.0], dtype=torch.float64)
    t = torch.linspace(0, 5, 6, dtype=torch.float64)
    opts = {"step_size": 0.01} if method == "rk4" else None
    cpu = odeint(_lotka_volterra, y0, t, method=method, options=opts)
    gpu = odeint(_lotka_volterra, y0.cuda(), t.cuda(), method=method, options=opts)
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-10)


class _TimeMlp(torch.nn.Module):
    """Time-dependent tanh MLP on (batch, 2), float64; NaN after ``t_nan``."""

    def __init__(self, t_nan: float = math.inf) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.w1 = torch.nn.Parameter(torch.randn(16, 2, generator=g, dtype=torch.float64))
        self.w2 = torch.nn.Parameter(torch.randn(2, 16, generator=g, dtype=torch.float64) * 0.5)
        self.t_nan = t_nan

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = torch.tanh(y @ self.w1.T) @ self.w2.T * (1.0 + 0.5 * t)
        return torch.where(t > self.t_nan, torch.full_like(out, math.nan), out)



@pytest.mark.compiles
def test_compiled_fixed_steps_match_the_eager_steps() -> None:
    f = _TimeMlp()
    y0 = torch.tensor([[0.5, -0.2], [2.0, 1.0], [0.01, 0.0]], dtype=torch.float64)
    # 0.25 is a grid point, 0.33 lies inside a step (dense output), 1.0 ends the grid.
    t = torch.tensor([0.0, 0.25, 0.33, 1.0], dtype=torch.float64)
    for scale in (1.0, 2.0):  # the second solve reuses the compiled steps
        with torch.no_grad():
            eager, comp = SolveStats(), SolveStats()
            ref = odeint(f, y0 * scale, t, method="rk4", options={"step_size": 0.01},
                         stats=eager)
            out = odeint(f, y0 * scale, t, method="rk4",
                         options={"step_size": 0.01, "compile": True}, stats=comp)
        assert (comp.nfe_forward, comp.accepted_steps) == (eager.nfe_forward, eager.accepted_steps)
        assert float((out - ref).abs().max()) <= 1e-12
    # The adjoint: compiled forward steps, eager backward steps (its dynamics call autograd).
    grads = []
    for opts in ({"step_size": 0.01}, {"step_size": 0.01, "compile": True}):
        f.zero_grad()
        odeint_adjoint(f, y0, t, method="rk4", options=opts)[-1].square().sum().backward()
        grads.append(f.w1.grad.clone())
    assert float((grads[0] - grads[1]).abs().max()) <= 1e-10
    bad = _TimeMlp(t_nan=0.505)
    with torch.no_grad(), pytest.raises(NonFiniteStateError, match=r"t=0\.51"):
        odeint(bad, y0, t, method="rk4", options={"step_size": 0.01, "compile": True})


@pytest.mark.compiles
def test_compiled_run_reports_an_earlier_eager_step_first() -> None:
    y0 = torch.tensor([[0.5, -0.2], [2.0, 1.0]], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    # The first step (eager) already turns NaN; the compiled chunks after it would too.
    with torch.no_grad(), pytest.raises(NonFiniteStateError, match=r"t=0\.01 "):
        odeint(_TimeMlp(t_nan=0.005), y0, t, method="rk4",  # queued checks, as on a GPU
               options={"step_size": 0.01, "compile": True, "finite_check": "queued"})


def test_compile_is_rejected_for_reversible_heun_and_with_autograd() -> None:
    y0 = torch.ones(2, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.raises(InvalidArgumentError, match="not available for reversible_heun"):
        odeint(_TimeMlp(), y0, t, method="reversible_heun",
               options={"step_size": 0.1, "compile": True})
    with pytest.raises(InvalidArgumentError, match="autograd is recording"):
        odeint(_TimeMlp(), y0, t, method="rk4", options={"step_size": 0.1, "compile": True})


@pytest.mark.parametrize(
    ("grid", "i", "t_out", "d", "expected"),
    [
        ([0.1 * k for k in range(11)], 0, 0.5, 1.0, 5),  # ends exactly at the output time
        ([0.1 * k for k in range(11)], 0, 0.55, 1.0, 5),  # the 6th step holds it: left out
        ([0.1 * k for k in range(11)], 5, 0.55, 1.0, 0),  # this step holds it: none
        ([0.0, 0.3, 0.6, 0.9, 1.0], 0, 1.0, 1.0, 3),  # the shorter last step is left out
        ([0.0, 0.3, 0.6, 0.9, 1.0], 3, 1.0, 1.0, 1),  # ... and runs on its own
        ([1.0, 0.75, 0.5, 0.25, 0.0], 0, 0.5, -1.0, 2),  # backwards in time
        ([0.0, 0.25, 0.5, 0.75, 1.0], 1, None, 1.0, 3),  # no output time left
    ],
)
def test_uniform_run_stops_at_output_times_and_step_changes(
    grid: list[float], i: int, t_out: float | None, d: float, expected: int
) -> None:
    from deeplimits.ode._fixed_loop import _uniform_run

    assert _uniform_run(grid, i, t_out, d) == expected


@pytest.mark.parametrize("method", ["rk4", "dopri5", "tsit5"])
def test_stats_count_every_call_of_func(method: str) -> None:
    calls = {"n": 0}

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return _lotka_volterra(t, y)

    y0 = torch.tensor([1.0, 1.0], dtype=torch.float64)
    t = torch.linspace(0.0, 3.0, 7, dtype=torch.float64)
    opts = {"step_size": 0.05} if method == "rk4" else None
    stats = SolveStats()
    odeint(f, y0, t, method=method, options=opts, stats=stats)
    assert stats.nfe_forward == calls["n"] > 0
    # the adjoint's backward pass counts its own calls (augmented dynamics call func once each)
    calls["n"] = 0
    stats = SolveStats()
    y0g = y0.clone().requires_grad_()
    ys = odeint_adjoint(f, y0g, t, method=method, options=opts, stats=stats,
                        adjoint_params=())
    n_fwd = calls["n"]
    ys[-1].sum().backward()
    assert stats.nfe_forward == n_fwd
    assert stats.nfe_backward == calls["n"] - n_fwd > 0


def _heun_euler() -> ExplicitRK:
    """A non-FSAL adaptive pair of one's own (Heun 2 / Euler 1), with cubic Hermite output."""
    b = [0.5, 0.5]
    e0 = [1.0, 0.0]
    dense = [[*e0, 0.0], [3 * x - 2 * y for x, y in zip(b, e0, strict=True)] + [-1.0],
             [-2 * x + y for x, y in zip(b, e0, strict=True)] + [1.0]]
    return ExplicitRK(ButcherTableau.from_lists(
        "heun_euler", a=[[], [1.0]], b=b, c=[0.0, 1.0], order=2, b_err=[-0.5, 0.5],
        error_order=1, dense=dense, dense_order=3,
    ))


def test_a_tableau_of_ones_own_without_dense_rows_interpolates_by_the_hermite_rows() -> None:
    # the same pair with no dense rows given: interior outputs as with the rows written out
    tab = _heun_euler().tableau
    bare = ExplicitRK(ButcherTableau.from_lists(
        "heun_euler", a=[[], [1.0]], b=list(tab.b), c=list(tab.c), order=2,
        b_err=list(tab.b_err or ()), error_order=1))
    t = torch.linspace(0.0, 2.0, 9, dtype=torch.float64)
    y0 = torch.tensor([1.0, 1.0], dtype=torch.float64)
    ys = [odeint(_lotka_volterra, y0, t, rtol=1e-5, atol=1e-7, method=m) for m in
          (_heun_euler(), bare)]
    assert torch.equal(ys[0], ys[1])


def test_a_non_fsal_adaptive_solver_object_gives_interior_outputs() -> None:
    solver = _heun_euler()
    t = torch.linspace(0.0, 2.0, 9, dtype=torch.float64)
    y0 = torch.tensor([1.0, 1.0], dtype=torch.float64)
    stats = SolveStats()
    ys = odeint(_lotka_volterra, y0, t, rtol=1e-5, atol=1e-7, method=solver, stats=stats)
    ref = _reference(_lotka_volterra, [1.0, 1.0], t.numpy())
    assert np.abs(ys.numpy() - ref).max() <= 1e-3
    assert stats.accepted_steps > 20
    # checkpointed gradients replay the same steps, extra f(t1, y1) evaluations included
    w = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)

    class F(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(w.detach().clone())

        def forward(self, tt: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return _lotka_volterra(tt, y) * self.w

    f = F()
    g_direct = torch.autograd.grad(odeint(f, y0, t, rtol=1e-5, atol=1e-7, method=solver).sum(),
                                   f.w)[0]
    g_ckpt = torch.autograd.grad(
        odeint_checkpoint(f, y0, t, rtol=1e-5, atol=1e-7, method=solver, checkpoints=3).sum(),
        f.w)[0]
    assert float(abs(g_direct - g_ckpt)) <= 1e-9 * float(abs(g_direct))
