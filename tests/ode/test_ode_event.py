"""odeint_event against closed forms: event times and their gradients (implicit function
theorem), restarts on the event surface, reverse time, the adjoint interface, torchdiffeq."""

from __future__ import annotations

import math

import pytest
import torch
import torchdiffeq

from deeplimits.errors import InvalidArgumentError, SolverError
from deeplimits.ode import SolveStats, odeint, odeint_adjoint, odeint_event

F64 = torch.float64


def _fall(g: torch.Tensor):  # type: ignore[no-untyped-def]
    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # y = (height, velocity)
        return torch.stack([y[1], -g * torch.ones_like(y[1])])

    return f


def _ground(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return y[0]


@pytest.mark.parametrize("interface", ["odeint", "odeint_adjoint"])
def test_free_fall_time_and_its_gradients_are_the_closed_form(interface: str) -> None:
    h = torch.tensor(10.0, dtype=F64, requires_grad=True)
    g = torch.tensor(9.81, dtype=F64, requires_grad=True)
    y0 = torch.stack([h, torch.zeros((), dtype=F64)])
    kw = {} if interface == "odeint" else {"odeint_interface": odeint_adjoint,
                                           "adjoint_params": (g,)}
    t_hit, sol = odeint_event(_fall(g), y0, 0.0, event_fn=_ground, rtol=1e-10, atol=1e-12,
                              **kw)
    exact = math.sqrt(2 * 10.0 / 9.81)  # T = sqrt(2h/g)
    assert float(t_hit.detach()) == pytest.approx(exact, rel=1e-9)
    assert sol.shape == (2, 2) and abs(float(sol[-1, 0].detach())) <= 1e-8
    dh, dg = torch.autograd.grad(t_hit, (h, g))
    assert float(dh) == pytest.approx(1 / math.sqrt(2 * 10.0 * 9.81), rel=1e-5)  # dT/dh
    assert float(dg) == pytest.approx(-0.5 * math.sqrt(2 * 10.0) / 9.81**1.5, rel=1e-5)


def test_decay_to_a_threshold_differentiates_the_event_functions_own_parameter() -> None:
    k = torch.tensor(0.7, dtype=F64, requires_grad=True)
    c = torch.tensor(0.2, dtype=F64, requires_grad=True)  # only event_fn sees c
    t_hit, _ = odeint_event(lambda t, y: -k * y, torch.ones(1, dtype=F64), 0.0,
                            event_fn=lambda t, y: y[0] - c, rtol=1e-10, atol=1e-12)
    # y = exp(-k t) = c  =>  T = -ln(c)/k, dT/dc = -1/(c k), dT/dk = ln(c)/k^2
    assert float(t_hit.detach()) == pytest.approx(-math.log(0.2) / 0.7, rel=1e-9)
    dc, dk = torch.autograd.grad(t_hit, (c, k))
    assert float(dc) == pytest.approx(-1 / (0.2 * 0.7), rel=1e-5)
    assert float(dk) == pytest.approx(math.log(0.2) / 0.7**2, rel=1e-5)


def test_a_start_on_the_event_surface_finds_the_next_crossing() -> None:
    # a ball leaving the ground upwards at v = 5: next contact at 2 v / g, not at t0
    g = torch.tensor(9.81, dtype=F64)
    y0 = torch.tensor([0.0, 5.0], dtype=F64)
    t_hit, _ = odeint_event(_fall(g), y0, 1.0, event_fn=_ground, rtol=1e-10, atol=1e-12)
    assert float(t_hit) == pytest.approx(1.0 + 2 * 5.0 / 9.81, rel=1e-9)


def test_reverse_time_finds_the_crossing_before_t0() -> None:
    t_hit, sol = odeint_event(lambda t, y: torch.ones_like(y), torch.zeros(1, dtype=F64), 0.0,
                              event_fn=lambda t, y: y[0] + 0.75, reverse_time=True)
    assert float(t_hit) == pytest.approx(-0.75, abs=1e-12)
    assert float(sol[-1, 0]) == pytest.approx(-0.75, abs=1e-9)


def test_the_event_time_matches_torchdiffeq() -> None:
    g = torch.tensor(9.81, dtype=F64)
    y0 = torch.tensor([3.0, 1.0], dtype=F64)
    ours, _ = odeint_event(_fall(g), y0, torch.tensor(0.0, dtype=F64), event_fn=_ground,
                           rtol=1e-9, atol=1e-11)
    theirs, _ = torchdiffeq.odeint_event(_fall(g), y0, torch.tensor(0.0, dtype=F64),
                                         event_fn=_ground, rtol=1e-9, atol=1e-11)
    assert float(ours) == pytest.approx(float(theirs), abs=1e-7)


def test_event_errors_name_the_problem() -> None:
    y0 = torch.ones(2, dtype=F64)
    with pytest.raises(InvalidArgumentError, match="one value per event"):
        odeint_event(lambda t, y: -y, y0, 0.0, event_fn=lambda t, y: y[:0])
    with pytest.raises(InvalidArgumentError, match="explicit Runge-Kutta method"):
        odeint_event(lambda t, y: -y, y0, 0.0, event_fn=lambda t, y: y[0],
                     method="explicit_adams", options={"step_size": 0.1})
    with pytest.raises(SolverError, match="did not cross zero before the search horizon"):
        odeint_event(lambda t, y: torch.zeros_like(y), y0, 0.0, event_fn=lambda t, y: y[0],
                     options={"max_num_steps": 50})


@pytest.mark.parametrize("solve", ["odeint", "odeint_adjoint"])
def test_event_mode_of_odeint_returns_the_event_and_the_solution(solve: str) -> None:
    from deeplimits.ode import odeint

    h = torch.tensor(10.0, dtype=F64, requires_grad=True)
    g = torch.tensor(9.81, dtype=F64)
    y0 = torch.stack([h, torch.zeros((), dtype=F64)])
    t = torch.tensor([0.0, 1.0], dtype=F64)
    fn = odeint if solve == "odeint" else odeint_adjoint
    kw = {} if solve == "odeint" else {"adjoint_params": ()}
    t_hit, sol = fn(_fall(g), y0, t, event_fn=_ground, rtol=1e-10, atol=1e-12, **kw)
    assert float(t_hit.detach()) == pytest.approx(math.sqrt(2 * 10.0 / 9.81), rel=1e-9)
    assert sol.shape == (2, 2)
    (dh,) = torch.autograd.grad(t_hit, (h,))
    assert float(dh) == pytest.approx(1 / math.sqrt(2 * 10.0 * 9.81), rel=1e-5)
    with pytest.raises(InvalidArgumentError, match="two times"):
        fn(_fall(g), y0, torch.tensor([0.0, 1.0, 2.0], dtype=F64), event_fn=_ground, **kw)


def _contact_times(h: float, g: float, e: float, n: int) -> list[float]:
    """Bouncing ball dropped from h at rest: T_1 = sqrt(2h/g), each rebound at e times the
    impact speed flies 2 e^j v_1 / g, v_1 = g T_1: T_n = T_1 (1 + 2 (e - e^n) / (1 - e))."""
    t1 = math.sqrt(2 * h / g)
    return [t1 * (1 + 2 * (e - e**j) / (1 - e)) for j in range(1, n + 1)]


@pytest.mark.parametrize("restart", ["zero", "direction"])
@pytest.mark.parametrize("interface", ["odeint", "odeint_adjoint"])
def test_a_bouncing_ball_hits_the_ground_at_the_closed_form_times(
    interface: str, restart: str
) -> None:
    from deeplimits.ode import odeint

    h0, g0, e = 2.0, 9.81, 0.7
    h = torch.tensor(h0, dtype=F64, requires_grad=True)
    g = torch.tensor(g0, dtype=F64, requires_grad=True)
    kw: dict = {"odeint_interface": odeint} if interface == "odeint" else {
        "odeint_interface": odeint_adjoint, "adjoint_params": (g,)}
    y = torch.stack([h, torch.zeros((), dtype=F64)])
    t = torch.zeros((), dtype=F64)
    hits = []
    for _ in range(4):
        t, sol = odeint_event(_fall(g), y, t, event_fn=_ground, rtol=1e-10, atol=1e-12,
                              direction=-1 if restart == "direction" else None, **kw)
        hits.append(t)
        # the bounce: the speed times -e; the height is 0 on the ground (exactly, or as
        # solved, a round-off below or above: direction=-1 ignores the rise through 0)
        height = torch.zeros((), dtype=F64) if restart == "zero" else sol[-1, 0]
        y = torch.stack([height, -e * sol[-1, 1]])
    exact = _contact_times(h0, g0, e, 4)
    for got, want in zip(hits, exact, strict=True):
        assert float(got.detach()) == pytest.approx(want, rel=1e-9)
    dh, dg = torch.autograd.grad(hits[-1], (h, g))
    assert float(dh) == pytest.approx(exact[-1] / (2 * h0), rel=1e-5)  # T_n ~ sqrt(h)
    assert float(dg) == pytest.approx(-exact[-1] / (2 * g0), rel=1e-5)  # T_n ~ 1/sqrt(g)


def test_a_bouncing_ball_run_backwards_in_time_finds_the_earlier_contacts() -> None:
    # Start on the ground at the 4th contact, just before it (velocity -e^3 v1), and run
    # backwards: the bounce reversed divides the velocity by -e.
    h0, g0, e, n = 2.0, 9.81, 0.7, 4
    h = torch.tensor(h0, dtype=F64, requires_grad=True)
    g = torch.tensor(g0, dtype=F64, requires_grad=True)
    exact = _contact_times(h0, g0, e, n)
    v1 = torch.sqrt(2 * g * h)
    y = torch.stack([torch.zeros((), dtype=F64), -(e ** (n - 1)) * v1])
    t = torch.tensor(exact[-1], dtype=F64)
    hits = []
    for _ in range(n - 1):
        t, sol = odeint_event(_fall(g), y, t, event_fn=_ground, reverse_time=True,
                              rtol=1e-10, atol=1e-12)
        hits.append(t)
        y = torch.stack([torch.zeros((), dtype=F64), -sol[-1, 1] / e])
    for got, want in zip(hits, exact[-2::-1], strict=True):
        assert float(got.detach()) == pytest.approx(want, rel=1e-9)
    # T_1 = T_n - 2 S v1 / g with S = (e - e^n)/(1 - e), T_n fixed: dT_1/dh = -2 S / v1,
    # dT_1/dg = S T_1' / g with T_1' = sqrt(2h/g)
    s = (e - e**n) / (1 - e)
    dh, dg = torch.autograd.grad(hits[-1], (h, g))
    assert float(dh) == pytest.approx(-2 * s / math.sqrt(2 * g0 * h0), rel=1e-5)
    assert float(dg) == pytest.approx(s * math.sqrt(2 * h0 / g0) / g0, rel=1e-5)


def test_several_event_values_stop_at_the_first_and_report_which() -> None:
    from deeplimits.ode import SolveStats

    k = torch.tensor(0.7, dtype=F64, requires_grad=True)
    c = torch.tensor([0.2, 0.5, -1.0], dtype=F64, requires_grad=True)  # y = exp(-kt) = c_i
    stats = SolveStats()
    t_hit, _ = odeint_event(lambda t, y: -k * y, torch.ones(1, dtype=F64), 0.0,
                            event_fn=lambda t, y: y[0] - c, rtol=1e-10, atol=1e-12,
                            stats=stats)
    assert int(stats.event_index) == 1  # c = 0.5 is reached first; -1.0 never
    assert float(t_hit.detach()) == pytest.approx(-math.log(0.5) / 0.7, rel=1e-9)
    dc, dk = torch.autograd.grad(t_hit, (c, k))
    assert torch.allclose(dc, torch.tensor([0.0, -1 / (0.5 * 0.7), 0.0], dtype=F64), rtol=1e-5)
    assert float(dk) == pytest.approx(math.log(0.5) / 0.7**2, rel=1e-5)
    theirs, _ = torchdiffeq.odeint_event(lambda t, y: -k * y, torch.ones(1, dtype=F64),
                                         torch.tensor(0.0, dtype=F64),
                                         event_fn=lambda t, y: y[0] - c, rtol=1e-10,
                                         atol=1e-12)
    assert float(t_hit.detach()) == pytest.approx(float(theirs.detach()), abs=1e-8)


@pytest.mark.parametrize(("direction", "crossing"), [(None, 0.5), (-1, 0.5), (1, 1.5)])
def test_direction_selects_which_crossings_stop_the_solve(
    direction: int | None, crossing: float
) -> None:
    from deeplimits.ode import SolveStats

    def rotate(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # y = (cos t, -sin t)
        return torch.stack([y[1], -y[0]])

    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t_hit, _ = odeint_event(rotate, y0, 0.0, event_fn=lambda t, y: y[0], direction=direction,
                            rtol=1e-10, atol=1e-12)
    assert float(t_hit) == pytest.approx(crossing * math.pi, rel=1e-9)
    # in reverse time "+1" still means negative to positive as the solve proceeds
    t_back, _ = odeint_event(rotate, y0, 0.0, event_fn=lambda t, y: y[0], direction=direction,
                             reverse_time=True, rtol=1e-10, atol=1e-12)
    assert float(t_back) == pytest.approx(-crossing * math.pi, rel=1e-9)
    # one direction per value: y[0] only upwards, y[1] (= -sin t) only downwards (t = 0+)
    stats = SolveStats()
    t_two, _ = odeint_event(rotate, torch.tensor([1.0, 1e-3], dtype=F64), 0.0, stats=stats,
                            event_fn=lambda t, y: y, direction=[1, 1])
    assert int(stats.event_index) == 1 and float(t_two) == pytest.approx(math.pi, rel=1e-3)
    with pytest.raises(InvalidArgumentError, match=r"direction=\[1\] must be"):
        odeint_event(rotate, y0, 0.0, event_fn=lambda t, y: y, direction=[1])


_RATES = [4.0, 2.0, 1.0, 0.5]


def _decay_rows(k: torch.Tensor, seen: list[torch.Tensor] | None = None):  # type: ignore[no-untyped-def]
    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # t: (batch,), y: (batch, 1)
        if seen is not None:
            seen.append(t.detach().clone())
        return -k[:, None] * y

    return f


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_per_sample_events_stop_each_sample_at_its_own_closed_form_time(reverse: bool) -> None:

    c0 = 0.2 if not reverse else 5.0
    k = torch.tensor(_RATES, dtype=F64, requires_grad=True)
    c = torch.tensor(c0, dtype=F64, requires_grad=True)
    y0 = torch.ones(4, 1, dtype=F64, requires_grad=True)
    seen: list[torch.Tensor] = []
    t_hit, sol = odeint_event(_decay_rows(k, seen), y0, 0.0, reverse_time=reverse,
                              event_fn=lambda t, y: y[:, 0] - c, rtol=1e-10, atol=1e-12,
                              options={"per_sample": True})
    # y_i = y0_i exp(-k_i t) = c  =>  T_i = ln(y0_i / c) / k_i
    exact = [math.log(1 / c0) / r for r in _RATES]
    assert t_hit.shape == (4,) and sol.shape == (2, 4, 1)
    for got, want in zip(t_hit.detach().tolist(), exact, strict=True):
        assert got == pytest.approx(want, rel=1e-9)
    assert torch.allclose(sol[-1, :, 0].detach(), torch.full((4,), c0, dtype=F64),
                          rtol=1e-9)  # each sample's last state is at its own event
    # no sample is integrated past its event: func never sees a sample beyond its crossing
    # step (with one end time for all, the first samples would be run to the last's T)
    last_t = torch.stack(seen).abs().amax(dim=0)
    for i in range(3):
        assert float(last_t[i]) < abs(exact[i]) + 0.5 * abs(exact[i + 1] - exact[i])
    # per-sample gradients: T_i depends on k_i and y0_i only; dT_i/dk_i = -T_i / k_i,
    # dT_i/dy0_i = 1 / (k_i y0_i), dT_i/dc = -1 / (c k_i) (c only in event_fn)
    for i in range(4):
        dk, dy0, dc = torch.autograd.grad(t_hit[i], (k, y0, c), retain_graph=True)
        want_k = torch.zeros(4, dtype=F64)
        want_k[i] = -exact[i] / _RATES[i]
        assert torch.allclose(dk, want_k, rtol=1e-5, atol=1e-12)
        want_y = torch.zeros(4, 1, dtype=F64)
        want_y[i, 0] = 1 / _RATES[i]
        assert torch.allclose(dy0, want_y, rtol=1e-5, atol=1e-12)
        assert float(dc) == pytest.approx(-1 / (c0 * _RATES[i]), rel=1e-5)
    # the solution's last state moves with the event: d y_i(T_i) / d k_i = 0 (it is c)
    (dk_sol,) = torch.autograd.grad(sol[-1].sum(), (k,))
    assert float(dk_sol.abs().max()) <= 1e-8


def test_per_sample_free_fall_matches_the_closed_form_and_its_gradients() -> None:
    from deeplimits.ode import odeint

    g = torch.tensor(9.81, dtype=F64, requires_grad=True)
    h = torch.tensor([1.0, 2.0, 5.0, 10.0], dtype=F64, requires_grad=True)

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([y[:, 1], -g * torch.ones_like(y[:, 1])], dim=1)

    y0 = torch.stack([h, torch.zeros(4, dtype=F64)], dim=1)
    t_hit, sol = odeint(f, y0, torch.tensor([0.0, 1.0], dtype=F64), rtol=1e-10, atol=1e-12,
                        event_fn=lambda t, y: y[:, 0], options={"per_sample": True})
    exact = torch.sqrt(2 * h.detach() / 9.81)
    assert torch.allclose(t_hit.detach(), exact, rtol=1e-9)
    assert torch.allclose(sol[-1, :, 1].detach(), -9.81 * exact, rtol=1e-9)
    dh, dg = torch.autograd.grad(t_hit.sum(), (h, g))
    assert torch.allclose(dh, 1 / torch.sqrt(2 * h.detach() * 9.81), rtol=1e-5)
    assert float(dg) == pytest.approx(float((-exact / (2 * 9.81)).sum()), rel=1e-5)


def test_per_sample_events_report_which_value_fired_in_each_sample() -> None:
    from deeplimits.ode import SolveStats

    k = torch.tensor(_RATES, dtype=F64)
    thresholds = torch.tensor([0.5, 0.1, 0.3, 0.05], dtype=F64)
    stats = SolveStats()
    t_hit, _ = odeint_event(
        _decay_rows(k), torch.ones(4, 1, dtype=F64), 0.0, stats=stats, rtol=1e-10, atol=1e-12,
        event_fn=lambda t, y: torch.stack([y[:, 0] - 0.2, y[:, 0] - thresholds], dim=1),
        options={"per_sample": True},
    )
    assert stats.event_index is not None and stats.event_index.tolist() == [1, 0, 1, 0]
    first = torch.maximum(thresholds, torch.tensor(0.2, dtype=F64))
    assert torch.allclose(t_hit, torch.log(1 / first) / k, rtol=1e-9)


def test_per_sample_event_errors_name_the_problem() -> None:
    y0 = torch.ones(4, 1, dtype=F64)
    per_sample = {"options": {"per_sample": True}}
    with pytest.raises(InvalidArgumentError, match=r"must return shape \(4,\) or \(4, k\)"):
        odeint_event(_decay_rows(torch.ones(4, dtype=F64)), y0, 0.0,
                     event_fn=lambda t, y: y[0, 0] - 0.5, **per_sample)
    with pytest.raises(InvalidArgumentError, match="odeint_interface=odeint"):
        odeint_event(_decay_rows(torch.ones(4, dtype=F64)), y0, 0.0, adjoint_params=(),
                     event_fn=lambda t, y: y[:, 0] - 0.5, odeint_interface=odeint_adjoint,
                     **per_sample)
    with pytest.raises(InvalidArgumentError, match=r"t0\.detach\(\)"):
        odeint_event(_decay_rows(torch.ones(4, dtype=F64)), y0,
                     torch.tensor(0.0, dtype=F64, requires_grad=True),
                     event_fn=lambda t, y: y[:, 0] - 0.5, **per_sample)
    with pytest.raises(InvalidArgumentError, match=r"t0 must be one time .* shape \(4,\)"):
        odeint_event(_decay_rows(torch.ones(4, dtype=F64)), y0, torch.zeros(4, dtype=F64),
                     event_fn=lambda t, y: y[:, 0] - 0.5, **per_sample)
    with pytest.raises(SolverError, match="for every sample"):  # the last never gets there
        odeint_event(_decay_rows(torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=F64)), y0, 0.0,
                     event_fn=lambda t, y: y[:, 0] - 0.5,
                     options={"per_sample": True, "max_num_steps": 200})



def test_per_sample_bouncing_balls_each_find_their_own_next_contacts() -> None:
    # each sample dropped from its own height; after every contact the rows restart on the
    # ground (event value 0: the next crossing counts) with the speed times -e
    h0, g0, e = [0.5, 2.0, 4.5], 9.81, 0.6
    h = torch.tensor(h0, dtype=F64, requires_grad=True)
    g = torch.tensor(g0, dtype=F64)

    def fall(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([y[:, 1], -g * torch.ones_like(y[:, 1])], dim=1)

    y = torch.stack([h, torch.zeros(3, dtype=F64)], dim=1)
    t0 = torch.zeros((), dtype=F64)
    elapsed = torch.zeros(3, dtype=F64)
    for _ in range(3):  # each sample's own clock: every solve restarts at t0 = 0
        t_hit, sol = odeint_event(fall, y, t0, event_fn=lambda t, y: y[:, 0], rtol=1e-10,
                                  atol=1e-12, options={"per_sample": True})
        elapsed = elapsed + t_hit
        y = torch.stack([torch.zeros(3, dtype=F64), -e * sol[-1, :, 1]], dim=1)
    exact = torch.tensor([_contact_times(x, g0, e, 3)[-1] for x in h0], dtype=F64)
    assert torch.allclose(elapsed.detach(), exact, rtol=1e-9)
    (dh,) = torch.autograd.grad(elapsed.sum(), (h,))
    assert torch.allclose(dh, exact / (2 * h.detach()), rtol=1e-5)  # per sample: T_n ~ sqrt(h)


def test_per_sample_direction_selects_each_samples_crossings() -> None:
    omega = torch.tensor([1.0, 2.0, 4.0], dtype=F64)

    def rotate(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # y = (cos wt, -sin wt)
        return omega[:, None] * torch.stack([y[:, 1], -y[:, 0]], dim=1)

    y0 = torch.tensor([[1.0, 0.0]] * 3, dtype=F64)
    for direction, crossing in ((-1, 0.5), (1, 1.5)):
        t_hit, _ = odeint_event(rotate, y0, 0.0, event_fn=lambda t, y: y[:, 0],
                                direction=direction, rtol=1e-10, atol=1e-12,
                                options={"per_sample": True})
        assert torch.allclose(t_hit, crossing * math.pi / omega, rtol=1e-9)


# Fixed-step methods: steps of options step_size until the sign changes, the root by bisection
# on the step's interpolant (torchdiffeq's FixedGridODESolver.integrate_until_event).


@pytest.mark.parametrize("interface", ["odeint_event", "odeint_event_adjoint", "odeint",
                                       "odeint_adjoint"])
def test_fixed_step_free_fall_time_and_its_gradients_are_the_closed_form(
    interface: str,
) -> None:
    from deeplimits.ode import odeint

    h = torch.tensor(10.0, dtype=F64, requires_grad=True)
    g = torch.tensor(9.81, dtype=F64, requires_grad=True)
    y0 = torch.stack([h, torch.zeros((), dtype=F64)])
    kw: dict = {"method": "rk4", "options": {"step_size": 5e-3}}
    if interface.endswith("adjoint"):
        kw["adjoint_params"] = (g,)
    if interface.startswith("odeint_event"):
        if interface.endswith("adjoint"):
            kw["odeint_interface"] = odeint_adjoint
        t_hit, sol = odeint_event(_fall(g), y0, 0.0, event_fn=_ground, **kw)
    else:
        fn = odeint if interface == "odeint" else odeint_adjoint
        t_hit, sol = fn(_fall(g), y0, torch.tensor([0.0, 1.0], dtype=F64), event_fn=_ground,
                        **kw)
    exact = math.sqrt(2 * 10.0 / 9.81)  # T = sqrt(2h/g); rk4 and its Hermite are exact here
    assert float(t_hit.detach()) == pytest.approx(exact, rel=1e-12)
    assert sol.shape == (2, 2) and abs(float(sol[-1, 0].detach())) <= 1e-10
    dh, dg = torch.autograd.grad(t_hit, (h, g))
    assert float(dh) == pytest.approx(1 / math.sqrt(2 * 10.0 * 9.81), rel=1e-5)  # dT/dh
    assert float(dg) == pytest.approx(-0.5 * math.sqrt(2 * 10.0) / 9.81**1.5, rel=1e-5)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_fixed_step_decay_to_a_threshold_is_the_closed_form_both_ways(reverse: bool) -> None:
    from deeplimits.ode import SolveStats

    k = torch.tensor(0.7, dtype=F64, requires_grad=True)
    # y = exp(-k t) = c_i  =>  T_i = -ln(c_i)/k (t < 0 in reverse: the thresholds above 1)
    # (T = 2.30 or -1.57: past the search's first window of 1000 steps, so it goes on from
    # where that one stopped)
    c = torch.tensor([3.0, 5.0] if reverse else [0.1, 0.2], dtype=F64, requires_grad=True)
    stats = SolveStats()
    t_hit, _ = odeint_event(lambda t, y: -k * y, torch.ones(1, dtype=F64), 0.0,
                            event_fn=lambda t, y: y[0] - c, reverse_time=reverse,
                            method="rk4", options={"step_size": 1e-3}, stats=stats)
    first = 0 if reverse else 1  # the threshold reached first: 3.0 backwards, 0.2 forwards
    ci = float(c[first].detach())
    assert int(stats.event_index) == first
    assert float(t_hit.detach()) == pytest.approx(-math.log(ci) / 0.7, rel=1e-9)
    dc, dk = torch.autograd.grad(t_hit, (c, k))
    want_c = torch.zeros(2, dtype=F64)
    want_c[first] = -1 / (ci * 0.7)  # dT/dc = -1/(c k), dT/dk = ln(c)/k^2
    assert torch.allclose(dc, want_c, rtol=1e-5, atol=0.0)
    assert float(dk) == pytest.approx(math.log(ci) / 0.7**2, rel=1e-5)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("interp", ["linear", "cubic"])
@pytest.mark.parametrize("method", ["rk4", "euler", "midpoint"])
def test_fixed_step_event_times_match_torchdiffeq(method: str, interp: str,
                                                  reverse: bool) -> None:
    # A pendulum's angle through zero: not polynomial, so each method and interpolant finds
    # its own (inexact) time, which the two libraries must share. torchdiffeq bisects
    # ceil(log2(step / atol)) times and returns the bracket's middle (within atol/2 of the
    # interpolant's root); this bisection runs to round-off. With atol=1e-14 both are at
    # the root; with the default atol=1e-9 they differ by at most atol/2.
    def pendulum(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([y[1], -torch.sin(y[0])])

    y0 = torch.tensor([1.0, 0.3], dtype=F64)
    t0 = torch.tensor(0.5, dtype=F64)
    opts = {"step_size": 0.05, "interp": interp}
    ours, sol = odeint_event(pendulum, y0, t0, event_fn=lambda t, y: y[0], method=method,
                             options=opts, reverse_time=reverse)
    for atol, tol in ((1e-14, 1e-12), (1e-9, 0.5e-9 + 1e-12)):
        theirs, _ = torchdiffeq.odeint_event(pendulum, y0, t0, event_fn=lambda t, y: y[0],
                                             method=method, options=opts, atol=atol,
                                             reverse_time=reverse)
        assert abs(float(ours) - float(theirs)) <= tol
    assert (float(ours) < 0.5) == reverse and abs(float(ours) - 0.5) > 0.05
    assert sol.shape == (2, 2)


def test_fixed_step_events_search_an_options_grid() -> None:
    grid = torch.linspace(0.0, 4.0, 4001, dtype=F64)
    t_hit, _ = odeint_event(lambda t, y: -y, torch.ones(1, dtype=F64), 0.0, method="rk4",
                            event_fn=lambda t, y: y[0] - 0.25, options={"grid": grid})
    assert float(t_hit) == pytest.approx(math.log(4.0), rel=1e-9)  # exp(-T) = 1/4
    with pytest.raises(SolverError, match=r"on options grid after t0=0\.0 \(its last point is "
                                          r"4\.0\)"):
        odeint_event(lambda t, y: -y, torch.ones(1, dtype=F64), 0.0, method="rk4",
                     event_fn=lambda t, y: y[0] + 0.25, options={"grid": grid})


def test_fixed_step_event_errors_name_the_problem() -> None:
    y0 = torch.ones(1, dtype=F64)
    with pytest.raises(InvalidArgumentError, match="needs options step_size"):
        odeint_event(lambda t, y: -y, y0, 0.0, event_fn=lambda t, y: y[0] - 0.5,
                     method="rk4")
    with pytest.raises(InvalidArgumentError, match="needs options step_size"):
        odeint_event(lambda t, y: -y, y0, 0.0, event_fn=lambda t, y: y[0] - 0.5,
                     method="rk4", options={"grid_constructor": lambda f, y, t: t})
    with pytest.raises(SolverError, match=r"within 20000 steps of step_size=0\.5"):
        odeint_event(lambda t, y: torch.zeros_like(y), y0, 0.0, method="euler",
                     event_fn=lambda t, y: y[0] - 0.5, options={"step_size": 0.5})


def test_cubic_hermite_search_of_a_time_dependent_field_is_exact() -> None:
    # y' = t, y(0) = 0: y = t^2/2 reaches 1/2 at T = 1. rk4 integrates y' = t exactly, and
    # the cubic Hermite interpolant through (t0, y0, f(t0)) and (t1, y1, f(t1)) reproduces the
    # quadratic exactly, so the bisected time is 1 to round-off (f(t1) must be taken at the
    # step's end t0 + h). Steps of 0.3: the crossing is inside the step [0.9, 1.2].
    t_hit, _ = odeint_event(lambda t, y: t * torch.ones_like(y), torch.zeros(1, dtype=F64), 0.0,
                            event_fn=lambda t, y: y[0] - 0.5, method="rk4",
                            options={"step_size": 0.3, "interp": "cubic"})
    assert abs(float(t_hit) - 1.0) < 1e-14


def test_a_pure_time_event_is_found_at_its_time_to_round_off() -> None:
    # event_fn = t - 0.3 (the state plays no part): the time is 0.3 whatever the steps; the
    # bisection in each step's fraction needs the step's start and size at full precision
    # (0.3 and the steps are not float32 numbers).
    t_hit, _ = odeint_event(lambda t, y: -y, torch.ones(1, dtype=F64), 0.0,
                            event_fn=lambda t, y: t - 0.3)
    assert abs(float(t_hit) - 0.3) < 1e-15


def test_fixed_step_grid_search_starts_at_t0_and_uses_only_points_past_it() -> None:
    # y' = -y from t0 = 0.5, y = exp(-(t - 0.5)) reaches 1/2 at T = 0.5 + ln 2 = 1.193...;
    # the grid's last point 1.4 is within 1 of t0, and its first points lie before t0
    grid = torch.linspace(0.0, 1.4, 1401, dtype=F64)
    t_hit, _ = odeint_event(lambda t, y: -y, torch.ones(1, dtype=F64), 0.5, method="rk4",
                            event_fn=lambda t, y: y[0] - 0.5, options={"grid": grid})
    assert float(t_hit) == pytest.approx(0.5 + math.log(2.0), rel=1e-9)
    # a grid that ends at t0 (or before) has nothing past t0 to search
    for end in (0.5, 0.4):
        with pytest.raises(SolverError, match=r"on options grid after t0=0\.5 \(its last point "
                                              r"is not past t0\)"):
            odeint_event(lambda t, y: -y, torch.ones(1, dtype=F64), 0.5, method="rk4",
                         event_fn=lambda t, y: y[0] - 0.5,
                         options={"grid": torch.linspace(0.0, end, 11, dtype=F64)})


# ---------------------------------------------------------------------------------------------
# Per-sample events of a time-dependent field and event function


def _cos_field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.cos(t).reshape(-1, 1).expand_as(y)  # y' = cos t; t is (R,) per sample


def _sum_reaches(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return y[:, 0] + t - 1.5  # explicit in t: dg/dt = 1 + cos t along the solution


def test_per_sample_time_dependent_event_is_the_root_and_its_gradient_the_closed_form() -> None:
    # y = c + sin t reaches g = 0 where c + sin T + T = 1.5 (brentq), and the implicit
    # function theorem gives dT/dc = -1 / (1 + cos T): the explicit dg/dt = 1 counts
    from scipy.optimize import brentq

    cs = [0.2, 0.5, 0.9]
    y0 = torch.tensor([[c] for c in cs], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 3.0], dtype=F64)
    stats = SolveStats()
    t_hit, _ = odeint(_cos_field, y0, t, event_fn=_sum_reaches, options={"per_sample": True},
                      stats=stats)  # default tolerances: rtol 1e-7
    exact = [brentq(lambda s, c=c: c + math.sin(s) + s - 1.5, 0.0, 3.0, xtol=1e-15) for c in cs]
    assert t_hit.detach().tolist() == pytest.approx(exact, abs=1e-6)
    assert stats.accepted_steps > 0 and stats.nfe_forward > 0  # the caller's statistics
    (d_c,) = torch.autograd.grad(t_hit.sum(), y0)
    assert d_c.flatten().tolist() == pytest.approx([-1 / (1 + math.cos(e)) for e in exact],
                                                   rel=1e-6)
    # the gradient is attached as a zero-valued correction: the time itself is unchanged
    t_nograd, _ = odeint(_cos_field, y0.detach(), t, event_fn=_sum_reaches,
                         options={"per_sample": True})
    assert torch.equal(t_hit.detach(), t_nograd)


def test_per_sample_pure_time_event_is_its_time_exactly() -> None:
    y0 = torch.ones(3, 1, dtype=F64, requires_grad=True)
    t_hit, _ = odeint(lambda t, y: -y, y0, torch.tensor([0.0, 3.0], dtype=F64),
                      event_fn=lambda t, y: t - 1.0 + 0 * y[:, 0], options={"per_sample": True})
    assert t_hit.tolist() == [1.0, 1.0, 1.0]


def test_per_sample_events_use_the_atol_given() -> None:
    steps = []
    for atol in (1e-3, 1e-9):
        stats = SolveStats()
        odeint(_cos_field, torch.tensor([[0.2], [0.5]], dtype=F64),
               torch.tensor([0.0, 3.0], dtype=F64), event_fn=_sum_reaches, rtol=1e-12,
               atol=atol, options={"per_sample": True}, stats=stats)
        steps.append(stats.accepted_steps)
    assert steps[0] < steps[1], steps


def test_per_sample_event_in_a_step_ending_at_a_jump_sees_the_left_limit() -> None:
    # y' = 1 before t = 0.5 and 2 from it (a jump_t): the step ending at 0.5 evaluates its
    # last stage at the left limit, so y = t exactly up to the jump and y = 0.45 at 0.45
    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.where(t < 0.5, 1.0, 2.0).to(y.dtype).reshape(-1, 1).expand_as(y)

    t_hit, _ = odeint(f, torch.zeros(2, 1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                      event_fn=lambda t, y: y[:, 0] - torch.tensor([0.45, 0.7], dtype=F64),
                      options={"per_sample": True, "jump_t": [0.5]})
    # 0.7 is reached after the jump: 0.5 + (0.7 - 0.5) / 2
    assert t_hit.tolist() == pytest.approx([0.45, 0.6], abs=1e-12)


def test_a_tuple_state_falls_to_the_closed_form_time_with_its_gradients() -> None:
    # (height, velocity) as a tuple: T = sqrt(2 h / g), dT/dh = 1 / sqrt(2 h g)
    h = torch.tensor(2.0, dtype=F64, requires_grad=True)
    g = 9.81

    def f(t: torch.Tensor, y: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return y[1], torch.full_like(y[1], -g)

    t_hit, sol = odeint_event(f, (h, torch.zeros((), dtype=F64)), 0.0,
                              event_fn=lambda t, y: y[0], rtol=1e-10, atol=1e-12)
    assert float(t_hit.detach()) == pytest.approx(math.sqrt(2 * 2.0 / g), rel=1e-9)
    assert float(sol[1][-1].detach()) == pytest.approx(-g * math.sqrt(2 * 2.0 / g), rel=1e-9)
    (d_h,) = torch.autograd.grad(t_hit, h)
    assert float(d_h) == pytest.approx(1 / math.sqrt(2 * 2.0 * g), rel=1e-6)


def test_per_sample_odeint_event_without_tolerances_uses_odeints_defaults() -> None:
    # rtol 1e-7, atol 1e-9 when none are given: the Brent root to about 1e-7
    from scipy.optimize import brentq

    t_hit, _ = odeint_event(_cos_field, torch.tensor([[0.2], [0.9]], dtype=F64), 0.0,
                            event_fn=_sum_reaches, options={"per_sample": True})
    exact = [brentq(lambda s, c=c: c + math.sin(s) + s - 1.5, 0.0, 3.0, xtol=1e-15)
             for c in (0.2, 0.9)]
    assert t_hit.tolist() == pytest.approx(exact, abs=1e-6)


def test_a_scalar_state_with_time_dependent_field_and_event_gets_the_root_and_gradient() -> None:
    # the host search on a 0-d state: c + sin T + T = 1.5, dT/dc = -1 / (1 + cos T); the event
    # function sees times in the state's dtype
    from scipy.optimize import brentq

    seen = set()

    def event(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen.add(t.dtype)
        return y + t - 1.5

    c = torch.tensor(0.2, dtype=F64, requires_grad=True)
    stats = SolveStats()
    t_hit, _ = odeint_event(lambda t, y: torch.cos(t) * torch.ones_like(y), c, 0.0,
                            event_fn=event, stats=stats)
    exact = brentq(lambda s: 0.2 + math.sin(s) + s - 1.5, 0.0, 3.0, xtol=1e-15)
    assert float(t_hit.detach()) == pytest.approx(exact, abs=1e-6)
    assert seen == {F64} and stats.nfe_forward > 0
    (d_c,) = torch.autograd.grad(t_hit, c)
    assert float(d_c) == pytest.approx(-1 / (1 + math.cos(exact)), rel=1e-6)


def test_the_host_search_uses_the_atol_given() -> None:
    steps = []
    for atol in (1e-3, 1e-9):
        stats = SolveStats()
        odeint_event(lambda t, y: torch.cos(t) * torch.ones_like(y), torch.tensor(0.2, dtype=F64),
                     0.0, event_fn=lambda t, y: y + t - 1.5, rtol=1e-12, atol=atol, stats=stats)
        steps.append(stats.accepted_steps)
    assert steps[0] < steps[1], steps


def test_per_sample_events_can_be_asked_for_by_execution_options() -> None:
    from deeplimits.ode import ExecutionOptions

    y0 = torch.tensor([[0.2], [0.9]], dtype=F64)
    by_options, _ = odeint_event(_cos_field, y0, 0.0, event_fn=_sum_reaches,
                                 options={"per_sample": True})
    by_execution, _ = odeint_event(_cos_field, y0, 0.0, event_fn=_sum_reaches,
                                   execution=ExecutionOptions(per_sample=True))
    assert by_options.shape == (2,) and torch.equal(by_execution, by_options)


@pytest.mark.parametrize("direction", [True, 1.0, "up"])
def test_a_direction_that_is_not_minus_one_zero_or_one_is_refused(direction: object) -> None:
    with pytest.raises(InvalidArgumentError, match=r"direction=.* must be None, \+1, -1 or 0"):
        odeint_event(lambda t, y: -y, torch.ones(1, dtype=F64), 0.0,
                     event_fn=lambda t, y: y[0] - 0.5, direction=direction)


def test_direction_zero_keeps_both_ways_as_none_does() -> None:
    ts = [odeint_event(lambda t, y: -y, torch.ones(1, dtype=F64), 0.0,
                       event_fn=lambda t, y: y[0] - 0.5, direction=d)[0] for d in (0, None)]
    assert torch.equal(ts[0], ts[1]) and float(ts[0]) == pytest.approx(math.log(2), abs=1e-6)
