"""Step-size controllers: the one formula for floats and tensors, the PID terms, forced step
and jump times on every loop."""

from __future__ import annotations

import math

import pytest
import torch

from deeplimits.errors import InvalidArgumentError
from deeplimits.ode import (
    EagerCapture,
    ExecutionOptions,
    IController,
    PIController,
    PIDController,
    SolveStats,
    odeint,
)
from deeplimits.ode._controllers import nudge

F64 = torch.float64
LOOPS = {
    "host": ExecutionOptions(device_loop=False),
    "device": ExecutionOptions(device_loop=True),
    "per_sample": ExecutionOptions(per_sample=True),
    "graph": ExecutionOptions(device_loop=True, capture=EagerCapture()),
}


def test_pid_factor_is_the_documented_formula() -> None:
    c = PIDController(pcoeff=0.1, icoeff=0.3, dcoeff=0.05, safety=0.8)
    r, p1, p2, k = 0.3, 0.7, 0.2, 5
    want = 0.8 * r ** (-(0.1 + 0.3 + 0.05) / k) * p1 ** ((0.1 + 2 * 0.05) / k) * p2 ** (-0.05 / k)
    assert c.factor(r, p1, p2, True, True, k) == pytest.approx(want, rel=1e-15)
    # rejected: only the I part, never growing; NaN/inf: factor_min
    assert c.factor(3.0, p1, p2, False, True, k) == pytest.approx(0.8 * 3.0 ** (-1 / k))
    assert c.factor(1.01, p1, p2, False, True, k) == 1.0 * min(1.0, 0.8 * 1.01 ** (-1 / k))
    assert c.factor(math.nan, p1, p2, False, False, k) == c.factor_min
    # an exact step (r = 0) grows by factor_max
    assert c.factor(0.0, p1, p2, True, True, k) == c.factor_max
    # a strong proportional term can propose less than factor_min: 0.9 * (1e-4)**(2/2) = 9e-5
    assert PIDController(pcoeff=2.0, icoeff=0.5).factor(1.0, 1e-4, 1.0, True, True, 2) == 0.2


@pytest.mark.parametrize(
    "ctrl",
    [IController(), PIController(), PIDController(0.1, 0.3, 0.05), PIController(0.4, 0.3),
     PIDController(2.0, 0.5)],  # the last proposes below factor_min after small prev ratios
)
def test_factor_is_the_same_for_floats_and_tensors(ctrl: PIDController) -> None:
    ratios = [0.0, 1e-9, 0.03, 0.5, 1.0, 1.0000001, 7.0, 1e12, math.inf, math.nan]
    prevs = [(1.0, 1.0), (1e-4, 0.3), (0.9, 1e-4)]
    for r in ratios:
        finite = math.isfinite(r)
        # every decision, also a rejection of a small error (growth is capped at 1 after it)
        for acc in {finite and r <= 1.0, False}:
            for p1, p2 in prevs:
                want = ctrl.factor(r, p1, p2, acc, finite, 5)
                rt = torch.tensor([[r]], dtype=F64)
                got = ctrl.factor(rt, torch.tensor([[p1]], dtype=F64),
                                  torch.tensor([[p2]], dtype=F64), torch.tensor([[acc]]),
                                  torch.isfinite(rt), 5)
                assert float(got) == pytest.approx(want, rel=1e-14), (r, acc, p1, p2)
                assert ctrl.factor_min <= want <= (ctrl.factor_max if acc else 1.0)


def test_min_step_accepts_small_steps_and_raises_proposals_on_floats_and_tensors() -> None:
    c = PIDController(min_step=0.1)
    assert c.accept(False, 0.1) is True and c.accept(False, 0.05) is True
    assert c.accept(False, 0.2) is False and c.accept(True, 0.2) is True
    got = c.accept(torch.tensor([False, False, True]), torch.tensor([0.1, 0.2, 0.2], dtype=F64))
    assert got.tolist() == [True, False, True]
    assert c.clip(0.05) == 0.1 and c.clip(0.3) == 0.3
    assert c.clip(torch.tensor([0.05, 0.3], dtype=F64)).tolist() == [0.1, 0.3]
    # without min_step the error test alone decides, however small the step
    assert PIDController().accept(False, 1e-12) is False


def test_dt_max_clips_and_the_smallest_step_is_dt_min_or_eight_ulps() -> None:
    c = PIDController(dt_min=1e-3, dt_max=0.5)
    assert c.clip(2.0) == 0.5 and float(c.clip(torch.tensor(2.0))) == 0.5
    assert c.clip(0.1) == 0.1
    assert c.smallest_step(0.0) == 1e-3
    assert PIDController().smallest_step(1e6) == pytest.approx(8 * 2.220446049250313e-16 * 1e6)


def _ramp(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """dy/dt = +1 before t = 0.5, -1 from it on (per row for a (batch,) t)."""
    tt = t.reshape(-1, *([1] * (y.ndim - 1))) if t.ndim else t
    return torch.where(tt < 0.5, torch.ones_like(y), -torch.ones_like(y))


@pytest.mark.parametrize("loop", list(LOOPS))
@torch.no_grad()
def test_jump_time_is_stepped_to_and_both_limits_are_seen(loop: str) -> None:
    y0 = torch.zeros(3, 1, dtype=F64)
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=F64)
    plain, jumped = SolveStats(), SolveStats()
    odeint(_ramp, y0, t, rtol=1e-6, atol=1e-8, stats=plain, execution=LOOPS[loop])
    ys = odeint(_ramp, y0, t, rtol=1e-6, atol=1e-8, stats=jumped, execution=LOOPS[loop],
                options={"jump_t": torch.tensor([0.5], dtype=F64)})
    exact = torch.tensor([0.0, 0.25, 0.5, 0.0], dtype=F64)
    assert float((ys[:, :, 0] - exact[:, None]).abs().max()) <= 1e-14
    assert jumped.rejected_steps == 0
    assert jumped.nfe_forward < plain.nfe_forward / 3


@pytest.mark.parametrize("loop", ["host", "device", "per_sample"])
def test_step_times_end_steps_exactly(loop: str) -> None:
    calls: list[float] = []

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls.append(float(t.reshape(-1)[0]))
        return -y

    stops = [0.123456789, 0.7]
    stats = SolveStats()
    ys = odeint(f, torch.ones(2, 1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                options={"controller": IController(step_ts=stops)}, stats=stats,
                execution=LOOPS[loop])
    for s in stops:
        assert s in calls  # the stages at c = 1 of the step that ends there
    assert float((ys[-1] - math.exp(-1.0)).abs().max()) <= 1e-7


@pytest.mark.parametrize("ctrl", [PIDController(0.1, 0.3, 0.05), PIController(0.4, 0.3)])
@torch.no_grad()
def test_pid_takes_the_same_steps_on_every_loop(ctrl: PIDController) -> None:
    def vdp(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([y[..., 1], 25 * (1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0]], -1)

    y0 = torch.tensor([[2.0, 0.0]], dtype=F64)
    t = torch.tensor([0.0, 20.0], dtype=F64)
    out = {}
    for loop, exe in LOOPS.items():
        s = SolveStats()
        ys = odeint(vdp, y0, t, rtol=1e-7, atol=1e-9, stats=s, execution=exe,
                    options={"controller": ctrl})
        out[loop] = (s.accepted_steps, s.rejected_steps, ys[-1])
    (acc, rej, y), *rest = out.values()
    assert rej > 0
    for a, r, yy in rest:
        assert (a, r) == (acc, rej)
        assert float((yy - y).abs().max()) <= 1e-10


def test_bad_forced_times_are_rejected_with_the_name() -> None:
    with pytest.raises(InvalidArgumentError, match=r"jump_ts=.*finite"):
        PIDController(jump_ts=[0.5, math.nan])
    with pytest.raises(InvalidArgumentError, match="step_ts must be 1-D"):
        PIDController(step_ts=torch.zeros(2, 2))
    with pytest.raises(InvalidArgumentError, match="sequence of numbers"):
        PIDController(step_ts=["a"])  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError, match="dcoeff"):
        PIDController(dcoeff=-1.0)


def test_forced_times_are_those_strictly_inside_in_the_direction_of_integration() -> None:
    c = PIDController(step_ts=[0.5, -1.0, 2.0, 0.25, 3.0], jump_ts=[2.0, 0.75, 1.0])
    # forward over (0, 2): the ends 2.0 (and 3.0, -1.0 outside) are left out; 2.0 is both
    assert c.forced_times(0.0, 2.0) == [(0.25, False), (0.5, False), (0.75, True), (1.0, True)]
    assert c.forced_times(0.25, 1.0) == [(0.5, False), (0.75, True)]
    # backward over (2.5, -0.5): decreasing times; 2.0 is a step and a jump time: a jump
    assert c.forced_times(2.5, -0.5) == [
        (2.0, True), (1.0, True), (0.75, True), (0.5, False), (0.25, False)
    ]
    assert c.forced_times(1.0, 0.25) == [(0.75, True), (0.5, False)]
    assert c.forced_times(3.0, 5.0) == [] and c.forced_times(5.0, 3.0) == []
    # the stored times are sorted floats
    assert c.step_ts == (-1.0, 0.25, 0.5, 2.0, 3.0) and c.jump_ts == (0.75, 1.0, 2.0)
    assert PIDController(jump_ts=torch.tensor([0.5, 0.25])).jump_ts == (0.25, 0.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"icoeff": 0.0}, {"pcoeff": -1e-9}, {"dcoeff": -1e-9},
        {"safety": 0.0}, {"safety": 1.0 + 1e-9},
        {"factor_min": 0.0}, {"factor_min": 1.0}, {"factor_max": 1.0},
        {"dt_min": -1e-9}, {"dt_min": 0.5, "dt_max": 0.5},
        {"min_step": -1e-9}, {"min_step": math.inf}, {"min_step": "0.1"},
        {"min_step": 0.6, "dt_max": 0.5},
    ],
)
def test_controller_bounds_are_enforced(kwargs: dict) -> None:
    with pytest.raises(InvalidArgumentError, match="controller"):
        PIDController(**kwargs)


def test_controller_bounds_are_inclusive_where_documented() -> None:
    # safety in (0, 1]; pcoeff, dcoeff >= 0; 0 <= dt_min < dt_max
    c = PIDController(safety=1.0, pcoeff=0.0, dcoeff=0.0, dt_min=0.0, dt_max=1e-9,
                      factor_min=1e-9, factor_max=1.0 + 1e-9)
    assert c.safety == 1.0 and c.dt_max == 1e-9
    assert PIDController(min_step=0.5, dt_max=0.5).min_step == 0.5  # min_step in [0, dt_max]


@pytest.mark.parametrize(
    "ctrl", [IController(), PIController(), PIDController(0.1, 0.3, 0.05), PIController(0.0, 0.5)]
)
def test_an_exact_step_grows_by_the_tensor_limit_on_floats_too(ctrl: PIDController) -> None:
    """ratio 0 (Python raises on 0.0 ** negative) gives what torch's pow gives: inf, clipped
    to factor_max when accepted."""
    for prev in (1.0, 1e-4, 0.5):
        want = float(ctrl.factor(torch.tensor([[0.0]], dtype=F64),
                                 torch.tensor([[prev]], dtype=F64),
                                 torch.tensor([[prev]], dtype=F64), torch.tensor([[True]]),
                                 torch.tensor([[True]]), 5))
        assert ctrl.factor(0.0, prev, prev, True, True, 5) == want == ctrl.factor_max


def test_smallest_step_below_time_one_is_eight_ulps_of_one() -> None:
    eps8 = 8 * 2.220446049250313e-16
    c = PIDController()
    assert c.smallest_step(0.5) == eps8 and c.smallest_step(-0.5) == eps8
    assert c.smallest_step(-4.0) == 4 * eps8
    got = c.smallest_step(torch.tensor([[0.5], [-4.0], [0.0]], dtype=F64))
    assert got[:, 0].tolist() == [eps8, 4 * eps8, eps8]
    big = PIDController(dt_min=1e-3).smallest_step(torch.tensor([[0.5], [1e20]], dtype=F64))
    assert big[:, 0].tolist() == [1e-3, eps8 * 1e20]


def test_jump_limits_are_one_ulp_of_a_float32_state_either_side() -> None:
    # A float64 ulp vanishes when a float32 state's func gets its time: the stages at the jump
    # would see the right value, reject step after step, and never see the left limit.
    for dtype in (torch.float64, torch.float32):
        seen: list[float] = []

        def f(t: torch.Tensor, y: torch.Tensor, seen: list[float] = seen) -> torch.Tensor:
            seen.append(float(t))
            return torch.where(t < 0.5, 1.0, -1.0).to(y.dtype) * torch.ones_like(y)

        ys = odeint(f, torch.zeros(1, dtype=dtype), torch.tensor([0.0, 1.0], dtype=dtype),
                    options={"jump_t": [0.5]})
        half = torch.tensor(0.5, dtype=dtype)
        left = float(torch.nextafter(half, torch.tensor(0.0, dtype=dtype)))
        right = float(torch.nextafter(half, torch.tensor(1.0, dtype=dtype)))
        near = sorted({s for s in seen if abs(s - 0.5) < 1e-3})
        assert near == [left, right]  # both limits, each at one ulp of the state's dtype
        assert abs(float(ys[-1, 0])) <= 1e-6  # up 0.5, down 0.5


def test_nudge_moves_one_ulp_of_the_states_dtype() -> None:
    """One ulp of the dtype func receives times in: a float64 ulp vanishes in float32."""
    assert nudge(0.5, 1.0, F64) == math.nextafter(0.5, 1.0) == 0.5 + 2.0**-53
    assert nudge(0.5, 0.0, F64) == math.nextafter(0.5, 0.0)
    assert nudge(0.5, 1.0, torch.float32) == 0.5 + 2.0**-24  # float32: 24-bit significand
    assert nudge(0.5, 0.0, torch.float32) == 0.5 - 2.0**-25
    # t and toward are taken in the state's dtype too: 0.1 is not a float32 number, and a
    # target a float32 ulp away from 1000 would round onto it (and not move t at all)
    assert nudge(0.1, 1.0, F64) == math.nextafter(0.1, 1.0)
    assert nudge(1000.0, 1000.00001, F64) == math.nextafter(1000.0, 2000.0)
