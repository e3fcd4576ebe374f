"""Property-based checks (hypothesis) of the ODE engine against closed-form solutions."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deeplimits.ode import odeint

_SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)


@st.composite
def linear_problems(draw):
    n = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n)) / np.sqrt(n)
    y0 = rng.normal(size=n)
    k = draw(st.integers(2, 6))
    times = np.sort(rng.uniform(-2.0, 2.0, size=k))
    times = np.unique(np.round(times, 6))
    if len(times) < 2:
        times = np.array([0.0, 1.0])
    if draw(st.booleans()):
        times = times[::-1].copy()
    method = draw(st.sampled_from(["dopri5", "tsit5", "bosh3"]))
    return a, y0, times, method


@_SETTINGS
@given(linear_problems())
def test_odeint_matches_matrix_exponential_on_random_linear_systems(problem):
    a, y0, times, method = problem
    a_t = torch.tensor(a)
    t = torch.tensor(times)
    ys = odeint(lambda s, y: a_t @ y, torch.tensor(y0), t, rtol=1e-9, atol=1e-11, method=method)
    # y(t_i) = expm(A (t_i - t_0)) y0, in float64
    expected = torch.stack(
        [torch.linalg.matrix_exp(a_t * (ti - t[0])) @ torch.tensor(y0) for ti in t]
    )
    scale = 1.0 + expected.abs()
    err = ((ys - expected).abs() / scale).max().item()
    assert err < 2e-6, f"{method}: relative error {err:.2e} on t={times}"


@_SETTINGS
@given(st.integers(0, 10_000), st.sampled_from(["euler", "midpoint", "rk4"]))
def test_fixed_step_solvers_converge_to_matrix_exponential(seed, method):
    rng = np.random.default_rng(seed)
    a = torch.tensor(rng.normal(size=(3, 3)) / 2)
    y0 = torch.tensor(rng.normal(size=3))
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    exact = torch.linalg.matrix_exp(a) @ y0
    errs = [
        (odeint(lambda s, y: a @ y, y0, t, method=method, options={"step_size": h})[-1] - exact)
        .norm()
        .item()
        for h in (0.1, 0.05)
    ]
    order = {"euler": 1, "midpoint": 2, "rk4": 4}[method]
    # halving h divides the error by about 2^order (allow a loose margin for small errors)
    assert errs[1] <= errs[0] / 2 ** (order - 0.5) + 1e-13
