"""The host adaptive loop (``_host_loop``), on problems whose every step can be counted by hand.

On ``y' = 1`` dopri5 is exact (error estimate 0), so the I controller grows each accepted step
by ``factor_max = 10``: from ``first_step = 0.1`` over ``[0, 1]`` the steps are 0.1, then one
shortened to end at 1 (2 steps, 1 + 2 * 6 evaluations: dopri5 has 7 stages, the first reused).
A right-hand side that is NaN after the start makes every trial state NaN: each try shrinks the
step by ``factor_min = 0.2``, and the 11th bad try in a row gives up.
"""

from __future__ import annotations

import math

import pytest
import torch

from deeplimits.errors import (
    MaxStepsExceededError,
    NewtonError,
    NonFiniteStateError,
    StepSizeUnderflowError,
)
from deeplimits.ode import (
    AdaptiveOptions,
    ButcherTableau,
    ExplicitRK,
    IController,
    SolveStats,
    get_solver,
    odeint,
)
from deeplimits.ode._host_loop import solve_adaptive_host
from deeplimits.ode._options import StepRecord

F64 = torch.float64


def _one(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(y)


def _solve(f, ts, stats=None, **options):  # type: ignore[no-untyped-def]
    return odeint(f, torch.zeros(2, dtype=F64), torch.tensor(ts, dtype=F64), method="dopri5",
                  options={"device_loop": False, **options}, stats=stats)


@pytest.mark.parametrize("ts", [[0.0, 1.0], [1.0, 0.0]])
def test_exact_steps_grow_by_factor_max_and_end_at_the_last_time(ts: list[float]) -> None:
    stats = SolveStats()
    ys = _solve(_one, ts, stats, first_step=0.1)
    assert (stats.accepted_steps, stats.rejected_steps, stats.nfe_forward) == (2, 0, 13)
    assert ys[-1].tolist() == pytest.approx([ts[1] - ts[0]] * 2, abs=1e-14)
    # max_num_steps counts attempts: 2 are enough, 1 is not
    _solve(_one, ts, first_step=0.1, max_num_steps=2)
    t1 = 0.1 if ts[1] > ts[0] else 0.9
    with pytest.raises(MaxStepsExceededError, match=rf"max_num_steps=1 reached at t={t1}"):
        _solve(_one, ts, first_step=0.1, max_num_steps=1)


def test_dt_max_caps_every_step_and_outputs_cost_nothing_extra() -> None:
    stats = SolveStats()
    ts = [0.0, 0.05, 0.1, 0.25, 0.7, 1.0]
    ys = _solve(_one, ts, stats, first_step=0.1,
                controller=IController(dt_max=0.3))
    # steps 0.1, 0.3, 0.3, then 0.3 shortened to end at 1.0
    assert (stats.accepted_steps, stats.nfe_forward) == (4, 1 + 4 * 6)
    assert ys[:, 0].tolist() == pytest.approx(ts, abs=1e-14)


def _nan_after_start(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(y) if float(t) == 0.0 else torch.full_like(y, math.nan)


def test_nan_trial_states_give_up_after_the_eleventh_try() -> None:
    stats = SolveStats()
    # the 11th try has dt = 0.01 * 0.2**10 (factor_min after each NaN trial)
    with pytest.raises(NonFiniteStateError,
                       match=r"NaN or inf just after t=0\.0 \(steps shrank to dt=1\.024\d*e-09"):
        _solve(_nan_after_start, [0.0, 1.0], stats, first_step=0.01)
    # 11 tries of 6 evaluations; the 11th raises before it is counted as rejected
    assert (stats.accepted_steps, stats.rejected_steps) == (0, 10)
    assert stats.nfe_forward == 1 + 11 * 6


def test_nan_trial_states_below_dt_min_are_a_blow_up() -> None:
    # tries 0.01 and 0.002; the next, 0.0004, is below dt_min = 1e-3
    stats = SolveStats()
    msg = r"just after t=0\.0 \(steps shrank to dt=0\.0004"
    with pytest.raises(NonFiniteStateError, match=msg):
        _solve(_nan_after_start, [0.0, 1.0], stats, first_step=0.01,
               controller=IController(dt_min=1e-3))
    assert (stats.rejected_steps, stats.nfe_forward) == (2, 1 + 2 * 6)


def test_a_step_below_dt_min_is_an_underflow() -> None:
    def stiff(t, y):  # type: ignore[no-untyped-def]
        return -1e4 * y + 1e4 * torch.cos(t)

    with pytest.raises(StepSizeUnderflowError, match=r"step size underflow at t=0\.0"):
        odeint(stiff, torch.zeros(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
               method="dopri5", rtol=1e-8, atol=1e-10,
               options={"device_loop": False, "first_step": 0.5,
                        "controller": IController(dt_min=0.05)})


def test_the_starting_step_probe_stays_inside_the_span() -> None:
    """From t = 1 to 1.001 with no first_step: Hairer's probe h0 = 0.01 d0 / d1 = 0.01 is
    clipped to the span |1.001 - 1|, so f is never called beyond the last time."""
    calls: list[float] = []

    def f(t, y):  # type: ignore[no-untyped-def]
        calls.append(float(t))
        return torch.ones_like(y)

    odeint(f, torch.ones(1, dtype=F64), torch.tensor([1.0, 1.001], dtype=F64), method="dopri5",
           options={"device_loop": False})
    assert max(calls) <= 1.001


def test_a_jump_steps_stage_times_before_it_are_unchanged() -> None:
    """y' = t before the jump at 0.5, 0 after it: dopri5 integrates t exactly, so y(0.5) =
    0.125 only if the last step's stages before the jump keep their times t + c h (only the
    stages at the jump see its left limit)."""
    def f(t, y):  # type: ignore[no-untyped-def]
        return torch.full_like(y, float(t)) if float(t) < 0.5 else torch.zeros_like(y)

    ys = odeint(f, torch.zeros(1, dtype=F64), torch.tensor([0.0, 0.5, 1.0], dtype=F64),
                method="dopri5", options={"device_loop": False, "first_step": 0.3,
                                          "controller": IController(jump_ts=(0.5,))})
    assert ys[:, 0].tolist() == pytest.approx([0.0, 0.125, 0.125], rel=1e-12, abs=1e-15)


def test_the_seminorm_and_the_default_direction_of_counting() -> None:
    """Called directly: y' = (1, 1000 t^4). dopri5 is exact for the first entry (error 0) but
    not for the second; with the norm over the first entry only (the adjoint's seminorm) the
    steps grow by factor_max as for y' = 1: 0.1, then to the end (2 steps). Steps count as
    forward steps unless backward=True."""
    def f(t, y):  # type: ignore[no-untyped-def]
        return torch.stack([torch.ones_like(y[0]), 1000.0 * torch.as_tensor(t) ** 4])

    opts = AdaptiveOptions(first_step=0.1)
    semi = SolveStats()
    y0 = torch.zeros(2, dtype=F64)
    out = solve_adaptive_host(f, y0, [0.0, 1.0], get_solver("dopri5"), opts, 1e-6, 1e-9, semi,
                              norm_dims=1)
    assert (semi.accepted_steps, semi.backward_accepted_steps) == (2, 0)
    assert float(out[-1][0]) == pytest.approx(1.0, rel=1e-14)
    back = SolveStats()
    solve_adaptive_host(f, y0, [0.0, 1.0], get_solver("dopri5"), opts, 1e-6, 1e-9, back,
                        norm_dims=1, backward=True)
    assert (back.accepted_steps, back.backward_accepted_steps) == (0, 2)
    full = SolveStats()
    solve_adaptive_host(f, y0, [0.0, 1.0], get_solver("dopri5"), opts, 1e-6, 1e-9, full,
                        backward=True)
    assert full.accepted_steps == 0 and full.backward_accepted_steps > 2


def test_the_last_step_ends_at_the_last_time_itself_and_is_recorded() -> None:
    """y' = 1 from 0 to 1, first_step 0.1 (2 steps): the FSAL stage of the last step is f at
    t = 1.0 exactly (not one ulp before it: the end is no jump), and the records name the
    fresh first stage f(0, y0) of the first step and the chained one of the second."""
    calls: list[float] = []

    def f(t, y):  # type: ignore[no-untyped-def]
        calls.append(float(t))
        return torch.ones_like(y)

    records = []
    solve_adaptive_host(f, torch.zeros(1, dtype=F64), [0.0, 1.0], get_solver("dopri5"),
                        AdaptiveOptions(first_step=0.1), 1e-6, 1e-9, SolveStats(),
                        record=lambda rec, y1, ks: records.append(rec))
    assert calls[-1] == 1.0 and math.nextafter(1.0, 0.0) not in calls
    assert [(r.t, r.t1, r.k1, r.chained, r.j) for r in records] == [
        (0.0, 0.1, 0.0, False, 1), (0.1, 1.0, None, True, 1)]


def _heun_euler() -> ExplicitRK:
    """Heun's method with Euler embedded (not FSAL) and its cubic Hermite interpolant."""
    b = [0.5, 0.5]
    dense = [[1.0, 0.0, 0.0], [1.5 - 2.0, 1.5, -1.0], [-1.0 + 1.0, -1.0, 1.0]]
    return ExplicitRK(ButcherTableau.from_lists(
        "heun_euler", a=[[], [1.0]], b=b, c=[0.0, 1.0], order=2, b_err=[-0.5, 0.5],
        error_order=1, dense=dense, dense_order=3))


@pytest.mark.parametrize("d", [1.0, -1.0])
def test_a_non_fsal_method_evaluates_f_at_the_step_end_only_for_an_output_inside(d: float
                                                                               ) -> None:
    """y' = 1 (Heun and Euler exact: steps grow by 10): step 1 from 0 to 0.1 has the output
    0.05 inside, so the loop appends f(0.1, y1) (for the interpolant), which step 2 reuses as
    its first stage; step 2 ends at the output 1.0 itself: no extra evaluation. 4 evaluations:
    f(0), step 1's second stage, f(0.1), step 2's second stage."""
    calls: list[float] = []

    def f(t, y):  # type: ignore[no-untyped-def]
        calls.append(float(t))
        return torch.ones_like(y)

    records = []
    stats = SolveStats()
    ts = [0.0, 0.05 * d, 1.0 * d]
    outs = solve_adaptive_host(
        f, torch.zeros(1, dtype=F64), ts, _heun_euler(), AdaptiveOptions(first_step=0.1),
        1e-6, 1e-9, stats, record=lambda rec, y1, ks: records.append((rec, float(y1), len(ks))))
    assert [float(o) for o in outs] == pytest.approx(ts, abs=1e-15)
    assert calls == pytest.approx([0.0, 0.1 * d, 0.1 * d, 1.0 * d])  # 4 evaluations
    assert records == [
        (StepRecord(0.0, 0.1 * d, 0.1 * d, None, 0.0, False, True, 1), 0.1 * d, 3),
        (StepRecord(0.1 * d, 0.9 * d, 1.0 * d, None, None, True, False, 2), 1.0 * d, 2),
    ]


def test_a_step_landing_exactly_on_a_step_time_moves_on_to_the_next_stop() -> None:
    """y' = 1, first step 0.1, dt_max 0.4, a step time at 0.5: 0.1 + 0.4 == 0.5 exactly ends
    at the step time; the next steps go 0.9, 1.0 (4 steps, no zero-length step)."""
    stats = SolveStats()
    _solve(_one, [0.0, 1.0], stats, first_step=0.1,
           controller=IController(dt_max=0.4, step_ts=(0.5,)))
    assert (stats.accepted_steps, stats.rejected_steps) == (4, 0)


class _Counted(torch.nn.Module):
    """y' = -50 (y - cos t): a first step of 0.5 is rejected; torchdiffeq's callbacks log each
    attempt and decision."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, float, float]] = []
        self.states: list[float] = []

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -50.0 * (y - torch.cos(t))

    def callback_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        self.log.append(("step", float(t0), float(dt)))
        self.states.append(float(y0[0]))

    def callback_accept_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        self.log.append(("accept", float(t0), float(dt)))
        self.states.append(float(y0[0]))

    def callback_reject_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        self.log.append(("reject", float(t0), float(dt)))
        self.states.append(float(y0[0]))


def test_callbacks_see_every_attempt_and_its_decision_in_order() -> None:
    f, stats = _Counted(), SolveStats()
    _solve(f, [0.0, 1.0], stats, first_step=0.5)
    attempts = [e for e in f.log if e[0] == "step"]
    decisions = [e for e in f.log if e[0] != "step"]
    assert len(attempts) == len(decisions) == stats.accepted_steps + stats.rejected_steps
    assert [e[0] for e in decisions].count("reject") == stats.rejected_steps >= 1
    # each decision follows its attempt, with the same start time and step
    assert f.log[0::2] == attempts and [(a[1], a[2]) for a in attempts] == [
        (d[1], d[2]) for d in decisions]
    assert f.log[0] == ("step", 0.0, 0.5) and f.log[1] == ("reject", 0.0, 0.5)
    # the state passed is the step's start: y0 = 0 until the first accepted step
    assert f.states[0] == f.states[1] == 0.0 and f.states[0::2] == f.states[1::2]
    assert len(set(f.states)) == stats.accepted_steps  # a new start after each accepted step


def test_min_step_accepts_every_step_at_it_whatever_its_error() -> None:
    """torchdiffeq's min_step: with min_step = 0.25 on [0, 1] the first try of 0.5 is rejected
    by its error, every later proposal is raised to 0.25 and accepted although its error
    test fails (the same problem without min_step takes many more, smaller steps)."""
    free = SolveStats()
    _solve(_Counted(), [0.0, 1.0], free, first_step=0.5)
    assert free.accepted_steps > 4
    f, forced = _Counted(), SolveStats()
    _solve(f, [0.0, 1.0], forced, first_step=0.5, min_step=0.25)
    decisions = [(e[0], e[2]) for e in f.log if e[0] != "step"]
    assert decisions == [("reject", 0.5)] + [("accept", 0.25)] * 4


def test_the_last_step_ends_exactly_at_the_stop_not_at_t_plus_h() -> None:
    """From t = 0.3 a step of 0.9 - 0.3 lands at 0.9000000000000001 in floats: the loop
    ends the last step at the stop itself (y' = 1, steps 0.3 then the rest)."""
    records = []
    solve_adaptive_host(_one, torch.zeros(1, dtype=F64), [0.0, 0.9], get_solver("dopri5"),
                        AdaptiveOptions(first_step=0.3), 1e-6, 1e-9, SolveStats(),
                        record=lambda rec, y1, ks: records.append(rec))
    assert 0.3 + (0.9 - 0.3) != 0.9
    assert [(r.t, r.t1) for r in records] == [(0.0, 0.3), (0.3, 0.9)]


def test_outputs_far_apart_are_interpolated_only_inside_their_step() -> None:
    """y' = cos t on [0, 20] with outputs every 0.5: each output comes from the step that
    contains it (an output up to a whole time unit past a step's end would be extrapolated)."""
    ts = torch.linspace(0.0, 20.0, 41, dtype=F64)
    ys = odeint(lambda t, y: torch.cos(t) * torch.ones_like(y), torch.zeros(1, dtype=F64), ts,
                rtol=1e-10, atol=1e-12, options={"device_loop": False})
    assert torch.allclose(ys[:, 0], torch.sin(ts), rtol=0, atol=1e-8)


def test_a_user_norm_decides_the_steps_and_gets_the_tuple_state() -> None:
    """options["norm"] on a tuple state: called with the scaled error as a tuple of the state's
    tensors; a norm 1e4 times larger takes more steps than the RMS."""
    def f(t, y):  # type: ignore[no-untyped-def]
        return (-y[0], -2.0 * y[1])

    y0 = (torch.ones(2, dtype=F64), torch.ones(3, dtype=F64))
    t = torch.tensor([0.0, 1.0], dtype=F64)
    shapes: list[list[tuple[int, ...]]] = []

    def big(err):  # type: ignore[no-untyped-def]
        shapes.append([tuple(e.shape) for e in err])
        return 1e4 * max(float(e.abs().max()) for e in err)

    rms, user = SolveStats(), SolveStats()
    odeint(f, y0, t, rtol=1e-6, atol=1e-9, options={"device_loop": False}, stats=rms)
    ys = odeint(f, y0, t, rtol=1e-6, atol=1e-9, options={"device_loop": False, "norm": big},
                stats=user)
    assert shapes and all(s == [(2,), (3,)] for s in shapes)
    assert user.accepted_steps > rms.accepted_steps
    assert float(ys[1][-1, 0]) == pytest.approx(math.exp(-2.0), rel=1e-9)


def _nan_beyond_half(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.where(y < 0.5, torch.ones_like(y), torch.full_like(y, math.nan))


def test_newton_failures_to_the_smallest_step_name_the_method_time_and_step() -> None:
    with pytest.raises(NewtonError, match=r"^kvaerno3: Newton's method failed on every step tried "
                                          r"just after t=0\.4999\d+ \(steps shrank to dt=\d"):
        odeint(_nan_beyond_half, torch.zeros(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
               method="kvaerno3")


def test_a_non_fsal_step_without_an_output_inside_starts_the_next_with_a_fresh_stage() -> None:
    """Heun-Euler (not FSAL), y' = 1, first step 0.1 over [0, 1], no output inside the first
    step: its last stage f(0.1, y0 + 0.1) is not f(t1, y1) in general, so step 2 evaluates
    f(0.1, y1) afresh: 4 evaluations (f(0), stage 2 at 0.1, fresh f(0.1), stage 2 at 1)."""
    calls: list[float] = []

    def f(t, y):  # type: ignore[no-untyped-def]
        calls.append(float(t))
        return torch.ones_like(y)

    solve_adaptive_host(f, torch.zeros(1, dtype=F64), [0.0, 1.0], _heun_euler(),
                        AdaptiveOptions(first_step=0.1), 1e-6, 1e-9, SolveStats())
    assert calls == pytest.approx([0.0, 0.1, 0.1, 1.0])


def _relax(t, y):  # type: ignore[no-untyped-def]
    return -50.0 * (y - math.cos(float(t)))  # the host loop passes float times


def test_backward_solves_count_their_steps_apart() -> None:
    stats = SolveStats()
    solve_adaptive_host(_relax, torch.zeros(1, dtype=F64), [0.0, 1.0],
                        get_solver("dopri5"), AdaptiveOptions(first_step=0.5), 1e-6, 1e-9,
                        stats, backward=True)
    forward = SolveStats()
    solve_adaptive_host(_relax, torch.zeros(1, dtype=F64), [0.0, 1.0],
                        get_solver("dopri5"), AdaptiveOptions(first_step=0.5), 1e-6, 1e-9,
                        forward)
    assert (stats.accepted_steps, stats.rejected_steps) == (0, 0)
    assert (stats.backward_accepted_steps, stats.backward_rejected_steps) == (
        forward.accepted_steps, forward.rejected_steps)
    assert forward.rejected_steps >= 1


def test_a_last_step_of_one_ulp_is_no_underflow_once_every_output_is_out() -> None:
    """y' = 1, first step 1 - 2**-52, growth capped at 1.5: the last step is 2**-52 and the
    next proposal (3.3e-16) is below 8 ulps of t = 1; the solve is over, so nothing raises."""
    stats = SolveStats()
    outs = solve_adaptive_host(
        _one, torch.zeros(1, dtype=F64), [0.0, 1.0], get_solver("dopri5"),
        AdaptiveOptions(first_step=1.0 - 2.0**-52, controller=IController(factor_max=1.5)),
        1e-6, 1e-9, stats)
    assert stats.accepted_steps == 2 and float(outs[-1]) == pytest.approx(1.0, abs=1e-15)


def test_the_step_record_of_a_jump_keeps_its_left_limit_stage_times() -> None:
    records = []
    solve_adaptive_host(_one, torch.zeros(1, dtype=F64), [0.0, 1.0], get_solver("dopri5"),
                        AdaptiveOptions(first_step=0.1, controller=IController(jump_ts=(0.5,))),
                        1e-6, 1e-9, SolveStats(), record=lambda rec, y1, ks: records.append(rec))
    at_jump = [r for r in records if r.t1 == 0.5]
    assert len(at_jump) == 1 and at_jump[0].times is not None
    assert at_jump[0].times[-1] == math.nextafter(0.5, 0.0)  # dopri5's last stage, c = 1
    assert all(r.times is None for r in records if r.t1 != 0.5)
