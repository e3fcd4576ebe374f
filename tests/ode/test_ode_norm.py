"""The error norm and the starting-step rule (``_norm``), against hand computations and scipy.

The RMS norm is evaluated by hand on small hand-made error vectors; the starting step is scipy's
``select_initial_step`` (Hairer, Norsett & Wanner, sec. II.4), whose ``order`` argument is the
error estimator's order, i.e. our ``error_order - 1``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate._ivp.common import select_initial_step

from deeplimits.ode._norm import ErrorNorm, initial_step

F64 = torch.float64


def _t(x: object) -> torch.Tensor:
    return torch.tensor(x, dtype=F64)


# ------------------------------------------------------------------------------ the error norm
def test_ratio_is_the_rms_of_the_error_over_the_larger_scale() -> None:
    rtol, atol = 0.1, 0.01
    norm = ErrorNorm(rtol, atol, None, 3, rows=False)
    y0, y1, err = _t([1.0, -2.0, 0.0]), _t([3.0, -1.0, -0.5]), _t([0.2, -0.3, 0.05])
    # scales: max(0.01 + 0.1 |y0|, 0.01 + 0.1 |y1|) = (0.31, 0.21, 0.06)
    torch.testing.assert_close(norm.scale(y0), _t([0.11, 0.21, 0.01]), rtol=1e-15, atol=0)
    want = math.sqrt(((0.2 / 0.31) ** 2 + (0.3 / 0.21) ** 2 + (0.05 / 0.06) ** 2) / 3)
    got = norm.ratio(err, norm.scale(y0), norm.scale(y1), y1)
    assert got.shape == () and float(got) == pytest.approx(want, rel=1e-14)
    # the larger scale on either side: swapping the states changes nothing
    swapped = norm.ratio(err, norm.scale(y1), norm.scale(y0), y0)
    assert float(swapped) == pytest.approx(want, rel=1e-14)


def test_rows_get_one_rms_each() -> None:
    norm = ErrorNorm(0.0, 1.0, None, 2, rows=True)
    err = _t([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]])
    s = norm.scale(torch.zeros(3, 2, dtype=F64))
    got = norm.ratio(err, s, s, torch.zeros(3, 2, dtype=F64))
    # sqrt((9 + 16) / 2), sqrt(1 / 2), 0
    assert got.shape == (3, 1)
    torch.testing.assert_close(got, _t([[math.sqrt(12.5)], [math.sqrt(0.5)], [0.0]]))


def test_one_entry_is_its_absolute_value() -> None:
    norm = ErrorNorm(0.0, 1.0, None, 1, rows=False)
    assert float(norm.rms(_t([-0.25]))) == 0.25
    assert float(ErrorNorm(0.0, 1.0, None, 1, rows=True).rms(_t([[-0.25]]))) == 0.25


def test_seminorm_uses_only_the_first_entries() -> None:
    # a flat state of 4 entries, norm over the first 2 (the adjoint's seminorm)
    flat = ErrorNorm(0.0, 0.5, 2, 4, rows=False)
    err = _t([[0.3, -0.4], [100.0, 100.0]])  # reshaped to (0.3, -0.4, 100, 100)
    assert torch.equal(flat.normed(err), _t([0.3, -0.4]))
    s = flat.scale(torch.zeros(2, 2, dtype=F64))
    assert torch.equal(s, _t([0.5, 0.5]))
    want = math.sqrt(((0.3 / 0.5) ** 2 + (0.4 / 0.5) ** 2) / 2)
    got = flat.ratio(err, s, s, torch.ones(2, 2, dtype=F64))
    assert float(got) == pytest.approx(want, rel=1e-14)
    # per row: the first 2 of each row's 3 entries
    rows = ErrorNorm(0.0, 0.5, 2, 3, rows=True)
    err = _t([[0.3, -0.4, 9.0], [0.5, 0.0, 9.0]])
    s = rows.scale(torch.zeros(2, 3, dtype=F64))
    assert s.shape == (2, 2)
    got = rows.ratio(err, s, s, torch.ones(2, 3, dtype=F64))
    torch.testing.assert_close(got, _t([[want], [math.sqrt(0.5)]]))


@pytest.mark.parametrize("norm_dims", [None, 1])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_new_state_makes_the_ratio_nan(norm_dims: int | None, bad: float) -> None:
    # the bad entry sits outside the seminorm's entries: still NaN
    one = ErrorNorm(1e-3, 1e-6, norm_dims, 2, rows=False)
    y1 = _t([0.5, bad])
    s = one.scale(_t([0.5, 0.5]))
    assert math.isnan(float(one.ratio(_t([1e-9, 0.0]), s, s, y1)))
    rows = ErrorNorm(1e-3, 1e-6, norm_dims, 2, rows=True)
    y1 = _t([[0.5, bad], [0.5, 0.5]])
    s = rows.scale(_t([[0.5, 0.5], [0.5, 0.5]]))
    got = rows.ratio(_t([[1e-9, 0.0], [1e-9, 0.0]]), s, s, y1)
    assert math.isnan(float(got[0, 0])) and math.isfinite(float(got[1, 0]))


def test_a_user_norm_gets_the_scaled_error_in_the_states_structure() -> None:
    """torchdiffeq's ``norm`` option: the user's function of the scaled error (as the tuple the
    state is made of) replaces the RMS; a NaN in the new state still gives NaN."""
    seen: list[object] = []

    def max_norm(parts):
        seen.append(parts)
        return max(float(p.abs().max()) for p in parts)

    norm = ErrorNorm(0.1, 0.01, None, 3, rows=False, fn=max_norm,
                     to_user=lambda x: (x[:2], x[2:]))
    y0, y1, err = _t([1.0, -2.0, 0.0]), _t([3.0, -1.0, -0.5]), _t([0.2, -0.3, 0.05])
    scale = 0.01 + 0.1 * np.maximum(np.abs([1.0, -2.0, 0.0]), np.abs([3.0, -1.0, -0.5]))
    want = np.max(np.abs([0.2, -0.3, 0.05]) / scale)  # 0.2 / 0.31
    with torch.no_grad():
        got = norm.ratio(err, norm.scale(y0), norm.scale(y1), y1)
    assert got.shape == () and float(got) == pytest.approx(want, rel=1e-15)
    assert isinstance(seen[-1], tuple) and [p.shape for p in seen[-1]] == [(2,), (1,)]
    with torch.no_grad():
        bad = norm.ratio(err, norm.scale(y0), norm.scale(y1), _t([math.nan, 0.0, 0.0]))
    assert math.isnan(float(bad))
    # without a structure the function gets the flat scaled error
    flat = ErrorNorm(0.1, 0.01, None, 3, rows=False, fn=lambda x: x.abs().sum())
    with torch.no_grad():
        total = flat.ratio(err, flat.scale(y0), flat.scale(y1), y1)
    assert float(total) == pytest.approx(np.sum(np.abs([0.2, -0.3, 0.05]) / scale), rel=1e-15)


def test_per_entry_tolerances_are_cut_to_the_normed_entries() -> None:
    """A tuple state's per-entry tolerances with the seminorm (norm_dims = 2 of 3 entries): the
    scale and ratio use the first two entries and their own tolerances."""
    rtol, atol = _t([0.1, 0.2, 0.3]), _t([0.01, 0.02, 0.03])
    norm = ErrorNorm(rtol, atol, 2, 3, rows=False)
    y0, y1, err = _t([1.0, -2.0, 5.0]), _t([3.0, -1.0, 7.0]), _t([0.2, -0.3, 100.0])
    with torch.no_grad():
        s0, s1 = norm.scale(y0), norm.scale(y1)
        got = norm.ratio(err, s0, s1, y1)
    assert s0.tolist() == pytest.approx([0.01 + 0.1 * 1.0, 0.02 + 0.2 * 2.0], rel=1e-15)
    scale = np.maximum([0.11, 0.42], [0.01 + 0.1 * 3.0, 0.02 + 0.2 * 1.0])  # [0.31, 0.42]
    want = math.sqrt(np.mean((np.array([0.2, -0.3]) / scale) ** 2))
    assert float(got) == pytest.approx(want, rel=1e-15)


# ------------------------------------------------------------------------ the starting step
def _scipy_h(fun, t0: float, y0: list[float], t_end: float, error_order: int,
             rtol: float, atol: float) -> float:
    y = np.array(y0, dtype=float)
    f0 = fun(t0, y)
    d = 1.0 if t_end >= t0 else -1.0
    return select_initial_step(fun, t0, y, t_end, np.inf, f0, d, error_order - 1, rtol, atol)


def _ours(fun, t0: float, y0: list[float], t_end: float, error_order: int,
          rtol: float, atol: float) -> float:
    y = _t(y0)
    norm = ErrorNorm(rtol, atol, None, y.numel(), rows=False)

    def f(t, x):
        return _t(fun(float(t), x.numpy()))

    d = 1.0 if t_end >= t0 else -1.0
    h = initial_step(f, t0, y, f(t0, y), d, error_order, norm, abs(t_end - t0))
    assert isinstance(h, float)  # one state: the rule runs on the host's floats
    return h


def _lotka(t, y):
    return np.array([1.5 * y[0] - y[0] * y[1], -3.0 * y[1] + y[0] * y[1]])


def _cos(t, y):
    return np.array([math.cos(3.0 * t) * y[0] + 0.1 * t, -y[1]])


PROBLEMS = {
    # (fun, t0, y0, t_end, error_order, rtol, atol): the generic branch, both directions
    "lotka": (_lotka, 0.0, [1.0, 1.0], 10.0, 5, 1e-6, 1e-8),
    "lotka_backward": (_lotka, 2.0, [1.0, 3.0], -4.0, 5, 1e-5, 1e-7),
    "time_dependent": (_cos, 0.5, [2.0, -1.0], 3.0, 3, 1e-4, 1e-6),
    "error_order_4": (_cos, 0.0, [1.0, 1.0], 5.0, 4, 1e-3, 1e-6),
    # y0 = 0: d0 < 1e-5, the probe h0 = 1e-6
    "zero_state": (lambda t, y: np.array([1.0 + y[0], 2.0]), 0.0, [0.0, 0.0], 1.0, 5, 1e-6, 1e-9),
    # f0 tiny: d1 < 1e-5 (y0 = 1, scale ~1e-6: f0 = 1e-12 gives d1 = 1e-6)
    "slow_start": (lambda t, y: np.array([1e-12 + t]), 0.0, [1.0], 2.0, 5, 1e-6, 1e-9),
    # y0 below atol: 1e-5 < d0 < 1 (the probe h0 = 1e-6 all the same)
    "small_state": (_lotka, 0.0, [5e-9, 3e-9], 10.0, 5, 1e-6, 1e-8),
    # f0 small against the scale: 1e-5 < d1 < 1, and f constant: d2 = 0, dm = d1 = 0.1
    "slow_constant": (lambda t, y: np.array([1e-4]), 0.0, [1.0], 1e3, 5, 1e-3, 1e-6),
    # a short span clips both h0 and the result
    "short_span": (_lotka, 0.0, [1.0, 1.0], 1e-3, 5, 1e-3, 1e-6),
    "tiny_span": (lambda t, y: np.array([1.0 + 0 * y[0]]), 0.0, [0.0], 1e-7, 5, 1e-6, 1e-9),
    # f == 0: d1 = d2 = 0, h1 = max(1e-6, 1e-3 h0)
    "constant": (lambda t, y: np.zeros(2), 0.0, [1.0, 2.0], 1.0, 5, 1e-6, 1e-9),
    # exactly at the thresholds (rtol 0, atol 1: scale 1, so d0 = |y0| and d1 = |f0| exactly):
    # "d < 1e-5" is strict in scipy and Hairer's code, so neither takes the 1e-6 probe
    "d0_at_threshold": (lambda t, y: np.array([1.0]), 0.0, [1e-5], 1.0, 5, 0.0, 1.0),
    "d1_at_threshold": (lambda t, y: np.array([1e-5]), 0.0, [1.0], 1e6, 5, 0.0, 1.0),
    # a large curvature: h1 < 100 h0
    "stiffish": (lambda t, y: np.array([-1e4 * (y[0] - math.cos(t))]), 0.0, [0.0], 1.0, 5,
                 1e-6, 1e-9),
}


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_initial_step_is_scipys_select_initial_step(name: str) -> None:
    fun, *args = PROBLEMS[name]
    assert _ours(fun, *args) == pytest.approx(_scipy_h(fun, *args), rel=1e-12)


@pytest.mark.parametrize("span_as_tensor", [False, True])
@pytest.mark.parametrize("name", list(PROBLEMS))
def test_initial_step_of_one_row_is_scipys(name: str, span_as_tensor: bool) -> None:
    """The tensor evaluation (rows) on every problem of the float one, with the span as a
    float (one span for all rows) or per row."""
    fun, t0, y0, t_end, order, rtol, atol = PROBLEMS[name]
    norm = ErrorNorm(rtol, atol, None, len(y0), rows=True)

    def f(t, y):  # one row: t (1, 1), y (1, M)
        return _t([list(fun(float(t.reshape(())), y[0].numpy()))])

    d = 1.0 if t_end >= t0 else -1.0
    T0, Y0 = _t([[t0]]), _t([y0])
    span = _t([[abs(t_end - t0)]]) if span_as_tensor else abs(t_end - t0)
    got = initial_step(f, T0, Y0, f(T0, Y0), d, order, norm, span)
    assert got.shape == (1, 1)
    assert float(got) == pytest.approx(_scipy_h(fun, t0, y0, t_end, order, rtol, atol),
                                       rel=1e-12)


def test_initial_step_in_rows_is_scipys_per_row() -> None:
    """Three rows with different start times, states and spans: each row's step is scipy's for
    that row alone."""
    rtol, atol, order = 1e-5, 1e-8, 5
    t0 = [0.0, 1.0, 0.2]
    y0 = [[1.0, 1.0], [0.5, 2.0], [0.0, 0.0]]
    spans = [10.0, 1e-3, 5.0]
    T0, Y0, S = _t([[x] for x in t0]), _t(y0), _t([[x] for x in spans])

    def f(t, y):  # rows: t is (R, 1); y' = (cos t + y1 - y0 y1 + 1, -3 y1 + y0 y1)
        return torch.cat([torch.cos(t) + y[:, 1:] - y[:, :1] * y[:, 1:] + 1.0,
                          -3.0 * y[:, 1:] + y[:, :1] * y[:, 1:]], dim=1)

    norm = ErrorNorm(rtol, atol, None, 2, rows=True)
    got = initial_step(f, T0, Y0, f(T0, Y0), 1.0, order, norm, S)
    assert got.shape == (3, 1)
    for i in range(3):
        def one(t, y):
            return f(_t([[t]]), _t([list(y)]))[0].numpy()
        want = _scipy_h(one, t0[i], y0[i], t0[i] + spans[i], order, rtol, atol)
        assert float(got[i, 0]) == pytest.approx(want, rel=1e-12)


def test_initial_step_falls_back_to_the_probe_when_the_probe_blows_up() -> None:
    """f(t0 + h0, y1) is inf: d2 is not finite, the step is the probe h0 = 0.01 d0 / d1."""
    y0 = _t([1.0, 2.0])
    norm = ErrorNorm(1e-3, 1e-6, None, 2, rows=False)

    def f(t, y):
        return _t([1.0, 1.0]) if float(t) == 0.0 else _t([math.inf, 0.0])

    s = 1e-6 + 1e-3 * np.array([1.0, 2.0])
    d0 = np.sqrt(np.mean((np.array([1.0, 2.0]) / s) ** 2))
    d1 = np.sqrt(np.mean((1.0 / s) ** 2))
    h = initial_step(f, 0.0, y0, f(0.0, y0), 1.0, 5, norm, 100.0)
    assert float(h) == pytest.approx(0.01 * d0 / d1, rel=1e-12)
