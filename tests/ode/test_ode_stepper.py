"""The generic explicit RK step (``_stepper``), on the host path (float ``h``) and the tensor
path (``h`` per row), against closed forms:

- on ``y' = lam y`` a method with as many stages as its order ``p`` (euler, midpoint, rk4)
  maps ``y0`` to ``sum_{k<=p} (h lam)^k / k! * y0`` exactly (its stability polynomial);
- on ``y' = (k+1) t^k`` a step of order ``p > k`` integrates exactly: ``y1 = (t0+h)^(k+1)``;
- the embedded estimate ``err = y1 - y_hat`` with Bogacki & Shampine's published embedded
  weights ``(7/24, 1/4, 1/3, 1/8)`` at nodes ``(0, 1/2, 3/4, 1)``: on ``y' = 3 t^2`` from 0,
  ``y_hat = h^3 (1/4 * 3/4 + 1/3 * 27/16 + 1/8 * 3) = 1.125 h^3``, so ``err = -0.125 h^3``.
"""

from __future__ import annotations

import math

import pytest
import torch

from deeplimits.ode import TABLEAUX, rk_step
from deeplimits.ode._stepper import combine

F64 = torch.float64
STAGES_EQUAL_ORDER = {"euler": 1, "midpoint": 2, "rk4": 4}
ORDER = {"euler": 1, "midpoint": 2, "rk4": 4, "bosh3": 3, "dopri5": 5, "tsit5": 5}


def _taylor(z: float, p: int) -> float:
    return sum(z**k / math.factorial(k) for k in range(p + 1))


@pytest.mark.parametrize("method", list(STAGES_EQUAL_ORDER))
def test_linear_step_is_the_stability_polynomial(method: str) -> None:
    p, lam = STAGES_EQUAL_ORDER[method], -1.3
    tab = TABLEAUX[method]

    def f(t, y):  # type: ignore[no-untyped-def]
        return lam * y

    y0 = torch.tensor([[1.0, -2.0]], dtype=F64)
    for h in (0.4, -0.7):
        y1, _, ks = rk_step(tab, f, 0.1, y0, h)
        torch.testing.assert_close(y1, _taylor(h * lam, p) * y0, rtol=1e-14, atol=0)
        assert len(ks) == tab.num_stages
    # rows with their own step size (the tensor path): the same polynomial per row
    Y0 = torch.tensor([[1.0], [2.0], [-1.0]], dtype=F64)
    H = torch.tensor([[0.4], [-0.7], [0.1]], dtype=F64)
    Y1, _, _ = rk_step(tab, f, torch.zeros(3, 1, dtype=F64), Y0, H)
    want = torch.tensor([[_taylor(float(h) * lam, p)] for h in H[:, 0]], dtype=F64) * Y0
    torch.testing.assert_close(Y1, want, rtol=1e-14, atol=0)


def _power(k: int):  # type: ignore[no-untyped-def]
    def f(t, y):  # type: ignore[no-untyped-def]
        if isinstance(t, torch.Tensor):
            return ((k + 1) * t**k).expand_as(y).clone()
        return torch.full_like(y, (k + 1) * t**k)

    return f


@pytest.mark.parametrize("method", list(ORDER))
def test_step_integrates_polynomials_below_its_order_exactly(method: str) -> None:
    k = ORDER[method] - 1
    tab = TABLEAUX[method]
    f = _power(k)
    t0, h = 0.3, 0.5
    y0 = torch.full((2,), t0 ** (k + 1), dtype=F64)
    y1, _, ks = rk_step(tab, f, t0, y0, h)
    assert float(y1[0]) == pytest.approx((t0 + h) ** (k + 1), rel=1e-13)
    if tab.fsal:  # the last stage is f(t0 + h, y1)
        assert float(ks[-1][0]) == pytest.approx((k + 1) * (t0 + h) ** k, rel=1e-13)
    # the stage times given explicitly: the same step
    times = [t0 + c * h for c in tab.c]
    y1b, _, _ = rk_step(tab, f, t0, y0, h, ks[0], times)
    torch.testing.assert_close(y1b, y1, rtol=0, atol=0)
    # rows: start times and steps per row
    T0 = torch.tensor([[0.3], [-0.2], [1.0]], dtype=F64)
    H = torch.tensor([[0.5], [0.25], [-0.4]], dtype=F64)
    Y0 = T0 ** (k + 1)
    Y1, _, _ = rk_step(tab, f, T0, Y0, H)
    torch.testing.assert_close(Y1, (T0 + H) ** (k + 1), rtol=1e-13, atol=1e-15)
    Y1b, _, _ = rk_step(tab, f, T0, Y0, H, None, [T0 + c * H for c in tab.c])
    torch.testing.assert_close(Y1b, Y1, rtol=0, atol=0)


def test_embedded_estimate_is_bogacki_shampines_by_hand() -> None:
    tab = TABLEAUX["bosh3"]
    f = _power(2)
    for h in (1.0, 0.5, -0.3):
        y1, err, _ = rk_step(tab, f, 0.0, torch.zeros(1, dtype=F64), h)
        assert float(y1) == pytest.approx(h**3, rel=1e-14)
        assert float(err) == pytest.approx(-0.125 * h**3, rel=1e-13)
    H = torch.tensor([[1.0], [0.5], [-0.3]], dtype=F64)
    Y1, ERR, _ = rk_step(tab, f, torch.zeros(3, 1, dtype=F64), torch.zeros(3, 1, dtype=F64), H)
    torch.testing.assert_close(Y1, H**3, rtol=1e-13, atol=0)
    torch.testing.assert_close(ERR, -0.125 * H**3, rtol=1e-13, atol=0)
    # a step size that requires grad: the same values
    Hg = H.clone().requires_grad_(True)
    _, ERRg, _ = rk_step(tab, f, torch.zeros(3, 1, dtype=F64), torch.zeros(3, 1, dtype=F64), Hg)
    torch.testing.assert_close(ERRg.detach(), -0.125 * H**3, rtol=1e-13, atol=0)
    (g,) = torch.autograd.grad(ERRg.sum(), Hg)
    torch.testing.assert_close(g, -0.375 * H**2, rtol=1e-12, atol=0)


def test_combine_by_hand() -> None:
    y = torch.tensor([1.0, 2.0], dtype=F64)
    ks = [torch.tensor([1.0, 0.0], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
          torch.tensor([3.0, 5.0], dtype=F64)]
    terms = [(0, 0.5), (2, -1.0)]
    want = y + 0.2 * (0.5 * ks[0] - ks[2])  # (1 - 0.5, 2 - 1)
    torch.testing.assert_close(combine(y, ks, terms, 0.2), want, rtol=1e-15, atol=0)
    torch.testing.assert_close(
        combine(y, ks, terms, torch.tensor(0.2, dtype=F64)), want, rtol=1e-15, atol=0
    )
    assert combine(y, ks, [], 0.2) is y
    # the inputs are not modified in place
    assert torch.equal(ks[0], torch.tensor([1.0, 0.0], dtype=F64))
    assert torch.equal(y, torch.tensor([1.0, 2.0], dtype=F64))


@pytest.mark.parametrize("method", list(ORDER))
def test_given_stage_times_are_the_ones_evaluated(method: str) -> None:
    """Stage times shifted by ``delta`` (as a caller that knows better, e.g. a left limit,
    passes them): the step integrates ``f(t) = (k+1) t^k`` over ``[t0 + delta, t0 + delta +
    h]`` exactly, whatever ``t`` says."""
    k = ORDER[method] - 1
    tab = TABLEAUX[method]
    f = _power(k)
    t0, h, delta = 0.3, 0.5, 0.2
    y0 = torch.zeros(1, dtype=F64)
    want = (t0 + delta + h) ** (k + 1) - (t0 + delta) ** (k + 1)
    times = [t0 + delta + c * h for c in tab.c]
    y1, _, _ = rk_step(tab, f, t0, y0, h, f(t0 + delta, y0), times)
    assert float(y1) == pytest.approx(want, rel=1e-13)
    T0, H = torch.full((2, 1), t0, dtype=F64), torch.full((2, 1), h, dtype=F64)
    Y1, _, _ = rk_step(tab, f, T0, torch.zeros(2, 1, dtype=F64), H,
                       f(T0 + delta, torch.zeros(2, 1, dtype=F64)),
                       [T0 + delta + c * H for c in tab.c])
    torch.testing.assert_close(Y1, torch.full((2, 1), want, dtype=F64), rtol=1e-13, atol=0)
