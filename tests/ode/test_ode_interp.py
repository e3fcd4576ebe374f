"""Dense output (``_interp``): each method's interpolant against the exact polynomial solution
of ``y' = (k+1) t^k`` (``y = t^(k+1)``), which an interpolant of order ``>= k+1`` reproduces to
round-off, and the host loops' emission of output times, by hand."""

from __future__ import annotations

import pytest
import torch

from deeplimits.ode import ButcherTableau, get_solver
from deeplimits.ode._interp import DenseCache, dense_eval, emit_outputs

F64 = torch.float64

# method -> the largest k for which y = t^(k+1) is a polynomial of the interpolant's order
EXACT = {"dopri5": 3, "tsit5": 3, "bosh3": 2, "rk4": 2, "midpoint": 1, "euler": 0}


def _power(k: int):  # type: ignore[no-untyped-def]
    def f(t, y):  # type: ignore[no-untyped-def]
        # the same value in every entry of y: (k+1) t^k (t a float or a 0-d tensor)
        return torch.full_like(y, (k + 1) * float(t) ** k)

    return f


@pytest.mark.parametrize("method", list(EXACT))
@pytest.mark.parametrize("h", [0.5, -0.75])
def test_interpolant_is_the_exact_polynomial_solution(method: str, h: float) -> None:
    k = EXACT[method]
    solver = get_solver(method)
    f = _power(k)
    t0 = 0.3
    y0 = torch.full((2, 1), t0 ** (k + 1), dtype=F64)  # a state of shape (2, 1)
    y1, _, ks = solver.step(f, t0, y0, h)
    assert float(y1[0, 0]) == pytest.approx((t0 + h) ** (k + 1), rel=1e-13, abs=1e-15)
    if not solver.tableau.fsal:
        ks = [*ks, f(t0 + h, y1)]
    thetas = [0.1, 0.5, 0.9]
    got = solver.interpolate(solver.dense_cache(), y0, ks, h, thetas)
    assert got.shape == (3, 2, 1)
    want = torch.tensor([(t0 + th * h) ** (k + 1) for th in thetas], dtype=F64)
    torch.testing.assert_close(got[:, 0, 0], want, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(got[:, 1, 0], want, rtol=1e-13, atol=1e-15)


def test_hermite_interpolant_by_hand() -> None:
    """rk4's (Kutta's 3/8 rule) cubic Hermite on y0, y1, f0, f1:
    p(theta) = y0 + h[theta f0 + theta^2 (3B - 2f0 -
    f1) + theta^3 (-2B + f0 + f1)], B = sum b_i k_i, from made-up stages."""
    cache = DenseCache(get_solver("rk4").tableau)
    y0 = torch.tensor([1.0], dtype=F64)
    ks = [torch.tensor([x], dtype=F64) for x in (2.0, 3.0, 5.0, 7.0, 11.0)]  # 4 stages + f1
    B = (2.0 + 3 * 3.0 + 3 * 5.0 + 7.0) / 8  # Kutta's 3/8 rule: b = (1, 3, 3, 1) / 8
    f0, f1, h, th = 2.0, 11.0, 0.4, 0.25
    want = 1.0 + h * (th * f0 + th**2 * (3 * B - 2 * f0 - f1) + th**3 * (-2 * B + f0 + f1))
    got = dense_eval(cache, y0, ks, h, [th])
    assert float(got[0, 0]) == pytest.approx(want, rel=1e-15)


def test_dense_cache_of_a_tableau_without_dense_rows_is_its_cubic_hermite() -> None:
    """Kutta's 3/8 rule written without dense rows: the default coefficients are the cubic
    Hermite on y0, y1, f0, f1 (they were the empty ``dense``, a shape error at evaluation)."""
    rk4 = get_solver("rk4").tableau
    own = ButcherTableau.from_lists("rk4_no_dense", a=[list(r) for r in rk4.a], b=list(rk4.b),
                                    c=list(rk4.c), order=4)
    assert own.dense == ()
    y0 = torch.tensor([1.0], dtype=F64)
    ks = [torch.tensor([x], dtype=F64) for x in (2.0, 3.0, 5.0, 7.0, 11.0)]  # 4 stages + f1
    B, f0, f1, h, th = (2.0 + 3 * 3.0 + 3 * 5.0 + 7.0) / 8, 2.0, 11.0, 0.4, 0.25
    want = 1.0 + h * (th * f0 + th**2 * (3 * B - 2 * f0 - f1) + th**3 * (-2 * B + f0 + f1))
    got = dense_eval(DenseCache(own), y0, ks, h, [th])
    assert float(got[0, 0]) == pytest.approx(want, rel=1e-15)


def test_dense_coefficients_follow_the_state_dtype() -> None:
    cache = DenseCache(get_solver("bosh3").tableau)
    c64 = cache.coef(torch.zeros(1, dtype=F64))
    assert c64.dtype == F64 and cache.coef(torch.zeros(1, dtype=F64)) is c64  # built once
    c32 = cache.coef(torch.zeros(1, dtype=torch.float32))
    assert c32.dtype == torch.float32
    f = _power(2)
    y0 = torch.tensor([0.0], dtype=torch.float32)
    solver = get_solver("bosh3")
    _, _, ks = solver.step(f, 0.0, y0, 1.0)
    got = dense_eval(cache, y0, ks, 1.0, [0.5])
    assert got.dtype == torch.float32 and float(got) == pytest.approx(0.125, rel=1e-6)


def _dense_stub(calls: list[list[float]]):  # type: ignore[no-untyped-def]
    def dense(thetas: list[float]) -> torch.Tensor:
        calls.append(list(thetas))
        return torch.tensor(thetas, dtype=F64)[:, None]

    return dense


def test_emit_outputs_forward() -> None:
    """A step from t = 1 of size 0.5 (to 1.5): outputs 1.1 and 1.4 by the interpolant at theta
    0.2 and 0.8, 1.5 is y1 itself, 1.7 is left for a later step; the next index is 4."""
    outs: list[torch.Tensor] = []
    calls: list[list[float]] = []
    ts = [0.0, 1.1, 1.4, 1.5, 1.7]
    y1 = torch.tensor([42.0], dtype=F64)
    k = emit_outputs(outs, ts, 1, 1.0, 1.0, 1.5, 0.5, y1, _dense_stub(calls))
    assert k == 4
    assert calls[0] == pytest.approx([0.2, 0.8])
    assert [float(o) for o in outs[:2]] == pytest.approx([0.2, 0.8])
    assert outs[2] is y1 and len(outs) == 3


def test_emit_outputs_backward_and_none_in_the_step() -> None:
    """Backwards from t = 2 by h = -1 (to 1): 1.5 at theta 0.5, 1.0 is y1; then a step from 1 to
    0.5 with the next output 0.25 beyond it emits nothing and keeps the index."""
    outs: list[torch.Tensor] = []
    calls: list[list[float]] = []
    ts = [2.0, 1.5, 1.0, 0.25]
    y1 = torch.tensor([7.0], dtype=F64)
    k = emit_outputs(outs, ts, 1, -1.0, 2.0, 1.0, -1.0, y1, _dense_stub(calls))
    assert k == 3 and calls == [[0.5]] and outs[-1] is y1 and len(outs) == 2
    k2 = emit_outputs(outs, ts, k, -1.0, 1.0, 0.5, -0.5, y1, _dense_stub(calls))
    assert k2 == 3 and len(outs) == 2 and len(calls) == 1
    # an output exactly at the step's end and nothing inside: y1 only, no interpolation
    k3 = emit_outputs(outs, [0.0, 0.5], 1, 1.0, 0.0, 0.5, 0.5, y1, _dense_stub(calls))
    assert k3 == 2 and len(calls) == 1 and outs[-1] is y1
    # all outputs done: nothing
    assert emit_outputs(outs, [0.0, 0.5], 2, 1.0, 0.5, 1.0, 0.5, y1, _dense_stub(calls)) == 2


def test_given_rows_replace_the_tableaus_interpolant() -> None:
    """rows = [b] is torchdiffeq's linear interpolation y0 + theta h sum(b_i k_i), not the
    tableau's own (dopri5: 4th order) interpolant."""
    tab = get_solver("dopri5").tableau
    y0 = torch.tensor([1.0, -2.0], dtype=F64)
    gen = torch.Generator().manual_seed(0)
    ks = [torch.randn(2, dtype=F64, generator=gen) for _ in range(tab.num_stages)]
    h, theta = 0.5, 0.3
    slope = sum(b * k for b, k in zip(tab.b, ks, strict=True))
    got = dense_eval(DenseCache(tab, rows=[list(tab.b)]), y0, ks, h, [theta])
    assert torch.allclose(got[0], y0 + theta * h * slope, rtol=0, atol=1e-15)
    own = dense_eval(DenseCache(tab), y0, ks, h, [theta])
    assert not torch.allclose(own, got, rtol=0, atol=1e-6)
