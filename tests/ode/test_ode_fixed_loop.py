"""The fixed-step loop (``_fixed_loop``), by hand: its grid, the runs of equal steps it hands to
compiled chunks (with a stand-in for the compiled code: plain Euler steps in Python, so no
``torch.compile`` is needed), its queued finiteness checks, and outputs between grid points."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
import torch

from deeplimits.errors import InvalidArgumentError, NonFiniteStateError
from deeplimits.ode import ButcherTableau, ExplicitRK, FixedStepOptions, SolveStats, get_solver
from deeplimits.ode._compiled import FIXED_CHUNK, FixedCompiled
from deeplimits.ode._fixed_loop import _perturbed_times, _uniform_run, build_grid, solve_fixed
from deeplimits.ode._func import FlatFuncWrapper, FlatState
from deeplimits.ode._options import StepRecord

F64 = torch.float64


def test_grid_from_a_step_size_ends_at_the_last_time() -> None:
    assert build_grid([0.0, 1.0], FixedStepOptions(step_size=0.25)) == [0.0, 0.25, 0.5, 0.75, 1.0]
    # 1 / 0.3 = 3.33: four steps, the last shorter
    assert build_grid([0.0, 1.0], FixedStepOptions(step_size=0.3)) == pytest.approx(
        [0.0, 0.3, 0.6, 0.9, 1.0], abs=1e-15)
    # backwards
    assert build_grid([1.0, 0.0], FixedStepOptions(step_size=0.5)) == [1.0, 0.5, 0.0]
    # a step larger than the span: one step
    assert build_grid([0.0, 0.1], FixedStepOptions(step_size=5.0)) == [0.0, 0.1]
    # round-off in span / h (0.3 / 0.1 = 2.9999999999999996 -> 3 steps, not 4)
    assert len(build_grid([0.0, 0.3], FixedStepOptions(step_size=0.1))) == 4


def test_grid_option_keeps_the_points_strictly_inside_in_order() -> None:
    opts = FixedStepOptions(grid=[-1.0, 0.0, 0.2, 0.5, 1.0, 2.0])
    assert build_grid([0.0, 1.0], opts) == [0.0, 0.2, 0.5, 1.0]
    assert build_grid([1.0, 0.0], opts) == [1.0, 0.5, 0.2, 0.0]
    dec = FixedStepOptions(grid=[2.0, 0.7, 0.4, -3.0])
    assert build_grid([0.0, 1.0], dec) == [0.0, 0.4, 0.7, 1.0]
    assert build_grid([0.0, 1.0], FixedStepOptions(grid=[0.5])) == [0.0, 0.5, 1.0]
    with pytest.raises(InvalidArgumentError, match="strictly increasing or decreasing"):
        build_grid([0.0, 1.0], FixedStepOptions(grid=[0.0, 0.5, 0.5, 1.0]))
    with pytest.raises(InvalidArgumentError, match="strictly increasing or decreasing"):
        build_grid([0.0, 1.0], FixedStepOptions(grid=[0.0, 0.5, 0.2]))
    for bad in ([0.5, 0.5], [1.0, 0.5, 0.5, 0.0]):  # two points; not strictly decreasing
        with pytest.raises(InvalidArgumentError, match="strictly increasing or decreasing"):
            build_grid([0.0, 1.0], FixedStepOptions(grid=bad))
    # a span that does not start at 0: |t1 - t0| / h steps
    assert build_grid([0.5, 1.0], FixedStepOptions(step_size=0.25)) == [0.5, 0.75, 1.0]
    # no option: the output times themselves
    assert build_grid([0.0, 0.3, 1.0], FixedStepOptions()) == [0.0, 0.3, 1.0]


def test_uniform_run_counts_equal_steps_up_to_an_output_time() -> None:
    grid = [0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8]
    h = [round(b - a, 12) for a, b in itertools.pairwise(grid)]
    assert h[:4] == [0.1] * 4  # then 0.2, 0.2
    assert _uniform_run(grid, 0, None, 1.0) == 4  # stops where the step changes
    assert _uniform_run(grid, 4, None, 1.0) == 2  # to the end
    assert _uniform_run(grid, 0, 0.2, 1.0) == 2  # ends exactly at the output time
    assert _uniform_run(grid, 0, 0.25, 1.0) == 2  # an output inside the third step: two
    assert _uniform_run(grid, 0, 0.05, 1.0) == 0  # inside the first step: none
    back = [1.0, 0.5, 0.0, -0.5]
    assert _uniform_run(back, 0, 0.0, -1.0) == 2 and _uniform_run(back, 0, 0.2, -1.0) == 1
    # equal within 1e-12 * max(1, |h|) counts as equal
    near = [0.0, 1e6, 2e6 + 1e-7, 3e6]
    assert _uniform_run(near, 0, None, 1.0) == 3
    # below |h| = 1 the tolerance is 1e-12 itself: 1.5e-12 apart is another step size
    assert _uniform_run([0.0, 0.5, 1.0 + 1.5e-12, 1.5 + 1.5e-12], 0, None, 1.0) == 1
    assert _uniform_run([0.0, 0.5, 1.0 + 0.5e-12, 1.5 + 0.5e-12], 0, None, 1.0) == 3


def _stand_in(t_bad: float = 1.3) -> tuple[FixedCompiled, list[int]]:
    """chunk/single: Euler steps of y' = -y in Python, flagging each state's finiteness; y
    becomes inf at ``t_bad`` to test the failure's step."""
    calls: list[int] = []

    def steps(n: int):  # type: ignore[no-untyped-def]
        def run(t0, y, h):  # type: ignore[no-untyped-def]
            calls.append(n)
            ok = []
            for k in range(n):
                y = y + h * (-y)
                if abs(float(t0 + (k + 1) * h) - t_bad) < 1e-9:
                    y = y * math.inf
                ok.append(bool(torch.isfinite(y).all()))
            return y, torch.tensor(ok)

        return run

    return FixedCompiled(lambda: None, steps(FIXED_CHUNK), steps(1)), calls  # type: ignore[arg-type]


@pytest.mark.parametrize("every", [True, False])
def test_compiled_runs_go_in_chunks_and_count_evaluations(every: bool) -> None:
    comp, calls = _stand_in()
    stats = SolveStats()
    y0 = torch.ones(1, dtype=F64)
    f = FlatFuncWrapper(lambda t, y: -y, FlatState(y0), stats)
    h = 0.0625  # exact in binary: the grid hits the output times exactly
    ts = [0.0, 0.75, 1.5]  # 24 steps: outputs after steps 12 and 24
    out = solve_fixed(f, y0, ts, get_solver("euler"), FixedStepOptions(step_size=h), stats,
                      every, compiled=comp)
    # the first step eagerly (its first stage is known; with every=False its check is queued
    # and read before the run), 11 to 0.75: a chunk of 10 and one single step; then 12: a
    # chunk and two single steps
    assert calls == [FIXED_CHUNK, 1, FIXED_CHUNK, 1, 1]
    assert stats.accepted_steps == 24
    assert [float(o) for o in out] == pytest.approx([1.0, (1 - h) ** 12, (1 - h) ** 24],
                                                    rel=1e-12)
    # the first step's stage eagerly, then one stage per compiled step
    assert stats.nfe_forward == 1 + 23


@pytest.mark.parametrize("t_bad", [1.3, 0.5])  # a single step; the 4th step of a chunk
def test_compiled_run_names_the_first_bad_step(t_bad: float) -> None:
    comp, _ = _stand_in(t_bad)
    f = FlatFuncWrapper(lambda t, y: -y, FlatState(torch.ones(1, dtype=F64)), None)
    with pytest.raises(NonFiniteStateError, match=rf"at t={t_bad}.*dt=0\.1"):
        solve_fixed(f, torch.ones(1, dtype=F64), [0.0, 2.0], get_solver("euler"),
                    FixedStepOptions(step_size=0.1), SolveStats(), True, compiled=comp)


@pytest.mark.parametrize(("method", "stages"), [("euler", 1), ("midpoint", 2)])
def test_a_run_of_exactly_one_chunk_is_one_chunk(method: str, stages: int) -> None:
    """0 to 0.6875 in steps of 0.0625: the first step eagerly, then exactly 10 = FIXED_CHUNK
    steps: one chunk; each compiled step counts the method's stages."""
    comp, calls = _stand_in()
    stats = SolveStats()
    y0 = torch.ones(1, dtype=F64)
    f = FlatFuncWrapper(lambda t, y: -y, FlatState(y0), stats)
    solve_fixed(f, y0, [0.0, 0.6875], get_solver(method), FixedStepOptions(step_size=0.0625),
                stats, True, compiled=comp)
    assert calls == [FIXED_CHUNK]
    assert stats.accepted_steps == 11
    assert stats.nfe_forward == stages + 10 * stages  # the eager step, then the chunk


def _blows_up_after(t_bad: float):  # type: ignore[no-untyped-def]
    def f(t, y):  # type: ignore[no-untyped-def]
        return torch.full_like(y, math.inf) if float(t) >= t_bad - 1e-12 else torch.ones_like(y)

    return f


@pytest.mark.parametrize("every", [True, False])
@pytest.mark.parametrize("n_steps", [5, 20, 40])
def test_queued_checks_name_the_first_bad_step(every: bool, n_steps: int) -> None:
    """Euler on y' = 1, inf from the evaluation at t = 0.35 on: the state after the step from
    0.35 to 0.4 is the first bad one, whether checked at once or read from the queue."""
    h = 2.0 / n_steps
    t_bad = 0.35 if n_steps == 40 else 1.0 + h / 2 if n_steps == 5 else 1.9
    f = _blows_up_after(t_bad)
    first_bad = (math.floor(t_bad / h + 1e-9) + 1) * h
    stats = SolveStats()
    counted = FlatFuncWrapper(f, FlatState(torch.zeros(1, dtype=F64)), stats)
    with pytest.raises(NonFiniteStateError) as info:
        solve_fixed(counted, torch.zeros(1, dtype=F64), [0.0, 2.0], get_solver("euler"),
                    FixedStepOptions(step_size=h), stats, every)
    m = re.search(r"at t=(\S+) \(step dt=([^)]+)\)", str(info.value))
    assert m is not None
    assert float(m.group(1)) == pytest.approx(first_bad, rel=1e-12)
    assert float(m.group(2)) == pytest.approx(h, rel=1e-12)  # t1 - t of the bad step
    if n_steps == 40:  # the 8th step is the first bad one; queued flags are read every 16
        assert stats.nfe_forward == (8 if every else 16)


def test_outputs_between_grid_points_are_the_hermite_cubic() -> None:
    """rk4 on y' = 3 t^2 (exact: a step of order 4 and a cubic interpolant), grid step 0.5,
    outputs between and on grid points; backwards too."""
    stats = SolveStats()

    def f(t, y):  # type: ignore[no-untyped-def]
        return torch.full_like(y, 3.0 * float(t) ** 2)

    ts = [0.0, 0.2, 0.5, 0.7, 1.3, 1.5]
    out = solve_fixed(f, torch.zeros(1, dtype=F64), ts, get_solver("rk4"),
                      FixedStepOptions(step_size=0.5), stats, True)
    assert [float(o) for o in out] == pytest.approx([t**3 for t in ts], rel=1e-13, abs=1e-15)
    assert stats.accepted_steps == 3
    back = [1.5, 1.3, 0.7, 0.0]
    out = solve_fixed(f, torch.full((1,), 1.5**3, dtype=F64), back, get_solver("rk4"),
                      FixedStepOptions(step_size=0.5), SolveStats(), False)
    assert [float(o) for o in out] == pytest.approx([t**3 for t in back], rel=1e-13, abs=1e-14)


def test_an_fsal_fixed_step_method_reuses_its_last_stage() -> None:
    """Heun's method written with an FSAL third stage (a = [[], [1], [1/2, 1/2]], b = (1/2,
    1/2, 0)): on y' = -y each step multiplies by 1 - h + h^2/2 (its stability polynomial), and
    costs 2 evaluations after the first (the third stage is the next step's first)."""
    solver = ExplicitRK(ButcherTableau.from_lists(
        "heun_fsal", a=[[], [1.0], [0.5, 0.5]], b=[0.5, 0.5, 0.0], c=[0.0, 1.0, 1.0], order=2,
        fsal=True))
    assert solver.fsal
    stats = SolveStats()
    y0 = torch.ones(1, dtype=F64)
    f = FlatFuncWrapper(lambda t, y: -y, FlatState(y0), stats)
    h = 0.125
    out = solve_fixed(f, y0, [0.0, 0.5, 1.0], solver, FixedStepOptions(step_size=h), stats, True)
    r = 1 - h + h**2 / 2
    assert [float(o) for o in out] == pytest.approx([1.0, r**4, r**8], rel=1e-14)
    assert (stats.accepted_steps, stats.nfe_forward) == (8, 1 + 8 * 2)


def test_each_step_is_recorded_as_taken_and_backward_steps_count_apart() -> None:
    """Euler, h = 0.25, outputs 0.3, 0.5 and 1.0: the second step has an output inside, so the
    loop appends f(t1, y1) (extra), which the third step then reuses (chained)."""
    records = []

    def record(rec, y1, ks):  # type: ignore[no-untyped-def]
        records.append((rec, float(y1[0]), len(ks)))

    stats = SolveStats()
    y0 = torch.ones(1, dtype=F64)
    f = FlatFuncWrapper(lambda t, y: -y, FlatState(y0), stats)
    solve_fixed(f, y0, [0.0, 0.3, 0.5, 1.0], get_solver("euler"),
                FixedStepOptions(step_size=0.25), stats, True, record=record, backward=True)
    want = [
        # t, h, t1, times, k1 (a fresh first stage at t), chained, extra, j
        (StepRecord(0.0, 0.25, 0.25, None, 0.0, False, False, 1), 0.75, 1),
        (StepRecord(0.25, 0.25, 0.5, None, None, False, True, 1), 0.75**2, 2),
        (StepRecord(0.5, 0.25, 0.75, None, None, True, False, 3), 0.75**3, 1),
        (StepRecord(0.75, 0.25, 1.0, None, None, False, False, 3), 0.75**4, 1),
    ]
    assert records == want
    # an adjoint's backward solve counts its steps apart
    assert (stats.accepted_steps, stats.backward_accepted_steps) == (0, 4)
    # f at 0 (the start), 0.25, then f(0.5, y1) appended (extra, reused by the third step),
    # then 0.75
    assert stats.nfe_forward == 4


def test_fsal_steps_are_recorded_chained_and_a_first_step_with_an_output_is_fresh() -> None:
    """The FSAL Heun above, h = 0.25, outputs 0.1 (inside the first step) and 0.5: the first
    step's first stage is the fresh f(0, y0), the second reuses the first step's last stage."""
    solver = ExplicitRK(ButcherTableau.from_lists(
        "heun_fsal", a=[[], [1.0], [0.5, 0.5]], b=[0.5, 0.5, 0.0], c=[0.0, 1.0, 1.0], order=2,
        fsal=True, dense=[[0.5, 0.5, 0.0]]))  # linear interpolation
    records = []
    stats = SolveStats()
    y0 = torch.ones(1, dtype=F64)
    f = FlatFuncWrapper(lambda t, y: -y, FlatState(y0), stats)
    solve_fixed(f, y0, [0.0, 0.1, 0.5], solver, FixedStepOptions(step_size=0.25), stats, True,
                record=lambda rec, y1, ks: records.append(rec))
    assert records == [
        StepRecord(0.0, 0.25, 0.25, None, 0.0, False, False, 1),
        StepRecord(0.25, 0.25, 0.5, None, None, True, False, 2),
    ]


def _unit_rate_stand_in() -> FixedCompiled:
    """chunk/single: Euler steps of y' = 1 in Python (exact: y = t), all finite."""

    def steps(n: int):  # type: ignore[no-untyped-def]
        def run(t0, y, h):  # type: ignore[no-untyped-def]
            return y + n * h, torch.ones(n, dtype=torch.bool)

        return run

    return FixedCompiled(lambda: None, steps(FIXED_CHUNK), steps(1))  # type: ignore[arg-type]


def test_a_compiled_run_that_stops_before_an_output_time_emits_nothing() -> None:
    """Euler on y' = 1 (exact: y = t), h = 0.0625, output 0.7 inside the step from 0.6875 to
    0.75: the first step eagerly, a chunk of 10 steps to 0.6875 (not an output), then the step
    over 0.7 eagerly with its interpolant (exact on a line)."""
    stats = SolveStats()
    y0 = torch.zeros(1, dtype=F64)
    f = FlatFuncWrapper(lambda t, y: torch.ones_like(y), FlatState(y0), stats)
    out = solve_fixed(f, y0, [0.0, 0.7, 1.5], get_solver("euler"),
                      FixedStepOptions(step_size=0.0625), stats, True,
                      compiled=_unit_rate_stand_in())
    assert [float(o) for o in out] == pytest.approx([0.0, 0.7, 1.5], rel=1e-14)
    assert stats.accepted_steps == 24


# Classic Runge-Kutta (Kutta 1901): c = (0, 1/2, 1/2, 1), dyadic stage times.
def _classic_rk4() -> ExplicitRK:
    return ExplicitRK(ButcherTableau.from_lists(
        "rk4_classic", a=[[], [0.5], [0.0, 0.5], [0.0, 0.0, 1.0]],
        b=[1 / 6, 1 / 3, 1 / 3, 1 / 6], c=[0.0, 0.5, 0.5, 1.0], order=4))


@pytest.mark.parametrize(("dtype", "ulp"), [(F64, 2.0**-53), (torch.float32, 2.0**-24)])
def test_perturbed_stage_times_are_one_ulp_inside_the_step(dtype: torch.dtype, ulp: float) -> None:
    """torchdiffeq's perturb: the first stage one ulp past t, the stage at c = 1 one ulp short
    of t1, the others t + c h. In [0.5, 1) one ulp is 2^-53 (float64), 2^-24 (float32)."""
    solver = _classic_rk4()
    fwd = _perturbed_times(solver, 0.5, 0.75, 0.25, dtype)
    assert fwd == [0.5 + ulp, 0.625, 0.625, 0.75 - ulp]
    back = _perturbed_times(solver, 0.75, 0.5, -0.25, dtype)
    assert back == [0.75 - ulp, 0.625, 0.625, 0.5 + ulp]
    # the same neighbours by the standard libraries
    if dtype == F64:
        assert fwd[0] == math.nextafter(0.5, 1.0) and fwd[-1] == math.nextafter(0.75, 0.0)
    else:
        assert fwd[0] == float(np.nextafter(np.float32(0.5), np.float32(1.0)))
        assert back[0] == float(np.nextafter(np.float32(0.75), np.float32(0.0)))


@pytest.mark.parametrize(("dtype", "ulp"), [(F64, 2.0**-52), (torch.float32, 2.0**-23)])
def test_perturbed_steps_evaluate_one_ulp_inside_each_step(dtype: torch.dtype, ulp: float) -> None:
    """Classic rk4 with perturb=True from 1 to 1.5 in steps of 0.25, on y' = -y: func sees
    each step's start one ulp later and its end one ulp earlier (one ulp in [1, 2): 2^-52 in
    float64, 2^-23 in float32); each step's record carries its stage times and its fresh
    first stage. The state is the stability polynomial's: R = 1 - h + h^2/2 - h^3/6 + h^4/24
    per step (y' = -y does not depend on t)."""
    seen: list[float] = []

    def f(t, y):  # type: ignore[no-untyped-def]
        seen.append(float(t))
        return -y

    records = []
    y0 = torch.ones(1, dtype=dtype)
    out = solve_fixed(f, y0, [1.0, 1.5], _classic_rk4(),
                      FixedStepOptions(step_size=0.25, perturb=True), SolveStats(), True,
                      record=lambda rec, y1, ks: records.append(rec))
    step1 = [1.0 + ulp, 1.125, 1.125, 1.25 - ulp]
    step2 = [1.25 + ulp, 1.375, 1.375, 1.5 - ulp]
    assert seen == step1 + step2
    assert records == [
        StepRecord(1.0, 0.25, 1.25, step1, 1.0 + ulp, False, False, 1),
        StepRecord(1.25, 0.25, 1.5, step2, 1.25 + ulp, False, False, 1),
    ]
    h = 0.25
    r = 1 - h + h**2 / 2 - h**3 / 6 + h**4 / 24
    assert float(out[-1]) == pytest.approx(r**2, rel=1e-14 if dtype == F64 else 1e-6)
    # no step_size: the output times are the grid (two steps, the second starts at j = 2);
    # then a grid of one step (the first stage nudged towards its only other point)
    seen.clear()
    records.clear()
    solve_fixed(f, y0, [1.0, 1.125, 1.25], _classic_rk4(), FixedStepOptions(perturb=True),
                SolveStats(), True, record=lambda rec, y1, ks: records.append(rec))
    grid_step1 = [1.0 + ulp, 1.0625, 1.0625, 1.125 - ulp]
    grid_step2 = [1.125 + ulp, 1.1875, 1.1875, 1.25 - ulp]
    assert seen == grid_step1 + grid_step2
    assert records == [
        StepRecord(1.0, 0.125, 1.125, grid_step1, 1.0 + ulp, False, False, 1),
        StepRecord(1.125, 0.125, 1.25, grid_step2, 1.125 + ulp, False, False, 2),
    ]
    seen.clear()
    solve_fixed(f, y0, [1.0, 1.25], _classic_rk4(), FixedStepOptions(perturb=True),
                SolveStats(), True)
    assert seen == step1
    # without perturb: the stage times t + c h themselves, the first one at t exactly
    seen.clear()
    solve_fixed(f, y0, [1.0, 1.25], _classic_rk4(), FixedStepOptions(), SolveStats(), True)
    assert seen == [1.0, 1.125, 1.125, 1.25]


def test_adams_steps_carry_their_history_from_step_to_step() -> None:
    """explicit_adams on y' = -y, h = 0.25, five steps: two rk4 start-up steps (any 4-stage
    order-4 method multiplies by R = 1 - h + h^2/2 - h^3/6 + h^4/24), then the textbook
    Adams-Bashforth formulas with 3, 4, 5 values of f_i = -y_i:
    AB3 (23, -16, 5)/12, AB4 (55, -59, 37, -9)/24, AB5 (1901, -2774, 2616, -1274, 251)/720.
    Evaluations: f(0, y0) first, 3 more in the first step (it reuses f(0, y0)), 4 in the
    second, one f0 per Adams-Bashforth step: 1 + 3 + 4 + 3 = 11."""
    h = 0.25
    r = 1 - h + h**2 / 2 - h**3 / 6 + h**4 / 24
    y = [1.0, r, r * r]
    fs = [-v for v in y]
    ab = [None, None, None, ((23, -16, 5), 12), ((55, -59, 37, -9), 24),
          ((1901, -2774, 2616, -1274, 251), 720)]
    for k in (3, 4, 5):
        w, den = ab[k]  # type: ignore[misc]
        y.append(y[-1] + h * sum(wi * fi for wi, fi in zip(w, reversed(fs), strict=False)) / den)
        fs.append(-y[-1])
    stats = SolveStats()
    y0 = torch.ones(1, dtype=F64)
    f = FlatFuncWrapper(lambda t, y: -y, FlatState(y0), stats)
    ts = [0.0, 0.5, 1.25]
    out = solve_fixed(f, y0, ts, get_solver("explicit_adams"), FixedStepOptions(step_size=h),
                      stats, True)
    assert [float(o) for o in out] == pytest.approx([y[0], y[2], y[5]], rel=1e-14)
    assert (stats.accepted_steps, stats.nfe_forward) == (5, 11)
    # a multistep method cannot be replayed from stored states
    with pytest.raises(InvalidArgumentError, match="multistep method"):
        solve_fixed(f, y0, ts, get_solver("explicit_adams"), FixedStepOptions(step_size=h),
                    SolveStats(), True, record=lambda rec, y1, ks: None)


def test_perturbed_adams_start_up_steps_end_one_ulp_short() -> None:
    """explicit_adams with perturb=True from 1 to 1.5, h = 0.25: both steps are rk4 start-up
    steps (Kutta's 3/8 rule, c = (0, 1/3, 2/3, 1)); func sees each step's start one ulp later
    and its end one ulp earlier (one ulp in [1, 2): 2^-52)."""
    seen: list[float] = []

    def f(t, y):  # type: ignore[no-untyped-def]
        seen.append(float(t))
        return -y

    e = 2.0**-52
    solve_fixed(f, torch.ones(1, dtype=F64), [1.0, 1.5], get_solver("explicit_adams"),
                FixedStepOptions(step_size=0.25, perturb=True), SolveStats(), True)
    # 1/3 * 0.25 == 0.25 / 3 exactly (0.25 is a power of two), likewise 2/3 * 0.25 == 0.5 / 3
    assert seen == [1.0 + e, 1.0 + 0.25 / 3, 1.0 + 0.5 / 3, 1.25 - e,
                    1.25 + e, 1.25 + 0.25 / 3, 1.25 + 0.5 / 3, 1.5 - e]


class _Logged:
    """y' = -y with torchdiffeq's step callback, logging (t0, y0, dt) of each step."""

    def __init__(self) -> None:
        self.log: list[tuple[float, float, float]] = []

    def __call__(self, t, y):  # type: ignore[no-untyped-def]
        return -y

    def callback_step(self, t0, y0, dt):  # type: ignore[no-untyped-def]
        self.log.append((float(t0), float(y0[0]), float(dt)))


def test_each_fixed_step_calls_the_step_callback_with_its_start() -> None:
    """Euler on y' = -y, h = 0.25, 0 to 1: before each step the callback sees its start time,
    its start state 0.75^k and the step size."""
    func = _Logged()
    y0 = torch.ones(1, dtype=F64)
    solve_fixed(FlatFuncWrapper(func, FlatState(y0), None), y0, [0.0, 1.0], get_solver("euler"),
                FixedStepOptions(step_size=0.25), SolveStats(), True)
    assert func.log == [(0.25 * k, 0.75**k, 0.25) for k in range(4)]
