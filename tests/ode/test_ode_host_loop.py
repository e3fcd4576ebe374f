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

from deeplimits.errors import MaxStepsExceededError, NonFiniteStateError, StepSizeUnderflowError
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
