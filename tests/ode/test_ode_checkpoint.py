"""odeint_checkpoint: backprop's gradients through the accepted steps from a bounded number of
stored states (recursive checkpointing, online placement)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from deeplimits.diagnostics import SavedTensorsMeter
from deeplimits.errors import InvalidArgumentError, InvalidTypeError, SolverError
from deeplimits.ode import (
    AdaptiveOptions,
    ExecutionOptions,
    SolveStats,
    odeint,
    odeint_adjoint,
    odeint_checkpoint,
)
from deeplimits.ode import _checkpoint as ck

F64 = torch.float64


class _Field(nn.Module):
    """Nonautonomous and nonlinear, so that t, y and the parameters all matter."""

    def __init__(self, n: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(n, n).double()

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.lin(y)) * torch.cos(t)


def _grads(solve: Any, f: nn.Module, y0: torch.Tensor, t: torch.Tensor, **kw: Any) -> Any:
    """Outputs, gradients (y0, t, parameters) of a weighted sum of every output, and stats."""
    y0 = y0.detach().clone().requires_grad_(True)
    t = t.detach().clone().requires_grad_(True)
    f.zero_grad()
    stats = SolveStats()
    ys = solve(f, y0, t, stats=stats, **kw)
    w = torch.linspace(-1.0, 1.0, ys.numel(), dtype=F64).reshape(ys.shape)
    (ys * w).sum().backward()
    grads = [y0.grad, t.grad, *(p.grad for p in f.parameters())]
    return ys.detach(), [g.clone() for g in grads], stats


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


# Output times inside steps (dense output), at the end, and more of them than some methods' steps.
T_OUT = torch.tensor([0.0, 0.37, 0.5, 1.3, 2.0, 2.05, 3.0], dtype=F64)
METHODS = [
    ("dopri5", None, 1e-9),
    ("tsit5", None, 1e-9),
    ("bosh3", None, 1e-6),
    ("rk4", {"step_size": 0.11}, 1e-6),  # outputs between grid points: f(t1, y1) chained
]


@pytest.mark.parametrize(("method", "options", "rtol"), METHODS)
def test_gradients_equal_direct_backprop_for_every_checkpoint_count(
    method: str, options: dict[str, float] | None, rtol: float
) -> None:
    f = _Field()
    y0 = torch.tensor([[0.3, -0.5, 0.8], [1.0, 0.2, -0.4]], dtype=F64)
    kw: dict[str, Any] = {"method": method, "options": options, "rtol": rtol, "atol": rtol}
    ys, ref, st = _grads(odeint, f, y0, T_OUT, **kw)
    assert st.accepted_steps >= 20
    for c in (1, 2, 3, 5, 10_000):  # 1: only y0 stored, far fewer than steps; 10_000: all
        ys_c, got, st_c = _grads(odeint_checkpoint, f, y0, T_OUT, checkpoints=c, **kw)
        assert torch.equal(ys_c, ys)  # the same forward solve
        assert st_c.accepted_steps == st.accepted_steps
        assert st_c.nfe_forward == st.nfe_forward
        for g_c, g in zip(got, ref, strict=True):
            assert _rel(g_c, g) < 1e-9, (c, g_c, g)


def test_recomputation_shrinks_with_more_checkpoints_and_is_one_replay_when_all_fit() -> None:
    f = _Field()
    y0 = torch.ones(3, dtype=F64)
    t = torch.tensor([0.0, 4.0], dtype=F64)
    kw: dict[str, Any] = {"method": "rk4", "options": {"step_size": 0.05}}  # 80 steps
    counts = []
    for c in (1, 2, 4, 16, 81):
        _, _, st = _grads(odeint_checkpoint, f, y0, t, checkpoints=c, **kw)
        assert st.accepted_steps == 80 and st.backward_accepted_steps == 0
        counts.append(st.nfe_recompute)
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[1]
    assert counts[-1] == 80 * 4  # every step re-run once, with autograd
    assert counts[0] == (80 * 81 // 2) * 4  # one slot: every step from y0 again


@functools.cache
def _fewest_advances(length: int, s: int) -> int:
    """The fewest steps advanced to reverse ``length`` steps from a held state with ``s`` free
    slots, by dynamic programming over the first stored position ``m``: advance ``m`` steps,
    store, reverse the right part with ``s - 1`` slots, then the left part with ``s``. No
    slot: step ``k`` is reached from the held state by ``k`` advances."""
    if length == 1:
        return 0
    if s == 0:
        return length * (length - 1) // 2
    return min(m + _fewest_advances(length - m, s - 1) + _fewest_advances(m, s)
               for m in range(1, length))


class _CountingReversal(ck._Reversal):
    """Steps that only count: the carry of step i is i, checked at every advance and vjp."""

    def __init__(self) -> None:
        super().__init__([])
        self.advances, self.order = 0, []

    def advance(self, i: int, carry: Any) -> Any:
        assert int(carry[0]) == i
        self.advances += 1
        return (carry[0] + 1,)

    def vjp(self, i: int, carry: Any, cot: Any) -> Any:
        assert int(carry[0]) == i
        self.order.append(i)
        return cot


@pytest.mark.parametrize("s", [0, 1, 2, 3, 5])
def test_binomial_reversal_advances_the_fewest_steps_of_any_schedule(s: int) -> None:
    peaks = []
    for length in range(1, 61):
        rev = _CountingReversal()
        slots = ck._Slots((torch.zeros(max(s, 1), 1),), {})
        slots.free = slots.free[:s]
        rev.reverse(0, length, (torch.zeros(1),), (None,), slots)
        assert rev.order == list(range(length - 1, -1, -1))  # each step's vjp once, backwards
        assert rev.advances == _fewest_advances(length, s) == ck._min_advances(length, s)
        assert sorted(slots.free) == list(range(s))  # every slot given back
        peaks.append(slots.peak)
    assert max(peaks) <= s


def test_default_checkpoints_follow_the_step_budget() -> None:
    assert ck.default_checkpoints(4096) == 90
    assert ck.default_checkpoints(1) == 1
    f = _Field()
    y0 = torch.ones(3, dtype=F64)
    t = torch.tensor([0.0, 2.0], dtype=F64)
    ys, ref, _ = _grads(odeint, f, y0, t)
    ys_c, got, _ = _grads(odeint_checkpoint, f, y0, t)
    assert torch.equal(ys_c, ys)
    for g_c, g in zip(got, ref, strict=True):
        assert _rel(g_c, g) < 1e-9


def test_wang_moin_placement_keeps_at_most_the_slots_and_the_initial_state() -> None:
    for slots in (1, 2, 3, 5):
        positions, levels = [0], [0]
        for i in range(1, 300):
            ck.wang_moin_place(positions, levels, i, slots)
            assert positions[0] == 0 and len(positions) <= slots
            assert positions == sorted(positions)
            if slots > 1:
                assert positions[-1] == i  # the newest state is always kept
    # The first states fill the free slots at level 0, then the newest moves up a level.
    positions, levels = [0], [0]
    for i in range(1, 4):
        ck.wang_moin_place(positions, levels, i, 3)
    assert positions == [0, 1, 3] and levels == [0, 0, 1]


def test_tuple_state_plain_function_with_params_and_jump_times() -> None:
    w = torch.tensor([[0.0, 1.0], [-2.0, -0.1]], dtype=F64, requires_grad=True)

    def func(t: torch.Tensor, y: tuple[torch.Tensor, torch.Tensor]) -> Any:
        a, b = y
        # A jump in the forcing at t = 0.7 (stepped over exactly, left/right limits).
        force = torch.where(t < 0.7, 1.0, -0.5).to(F64)
        return (w[0, 1] * b + force, w[1, 0] * a + w[1, 1] * b * a)

    y0 = (torch.tensor([0.5], dtype=F64), torch.tensor([0.1], dtype=F64))
    t = torch.tensor([0.0, 0.4, 1.5], dtype=F64)
    opts = AdaptiveOptions(jump_t=[0.7])
    out = []
    for solve, kw in ((odeint, {}), (odeint_checkpoint, {"checkpoints": 3, "params": (w,)})):
        a0, b0 = (p.clone().requires_grad_(True) for p in y0)
        w.grad = None
        ya, yb = solve(func, (a0, b0), t, options=opts, rtol=1e-7, atol=1e-9, **kw)
        (ya.sum() * 0.3 + (yb**2).sum()).backward()
        out.append([a0.grad.clone(), b0.grad.clone(), w.grad.clone()])  # type: ignore[union-attr]
    for g_c, g in zip(out[1], out[0], strict=True):
        assert _rel(g_c, g) < 1e-9


def _stiff_problem() -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """dy/dt = A y with eigenvalues -30 and -1 (coupled: A is not normal), t in [0, 5]."""
    p = np.array([[1.0, 0.5], [0.3, 1.0]])
    a = p @ np.diag([-30.0, -1.0]) @ np.linalg.inv(p)
    return a, np.array([1.0, 2.0]), np.array([0.7, -1.3]), 5.0


class _Linear(nn.Module):
    def __init__(self, a: np.ndarray) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.tensor(a, dtype=F64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.A @ y


def test_stiff_linear_system_matches_the_matrix_exponential_where_the_adjoint_fails() -> None:
    a, y0, w, T = _stiff_problem()
    # loss = w . expm(T A) y0: d/dy0 = expm(T A)^T w; d/dA = T L_exp(T A^T, w y0^T), the
    # Frechet derivative from Van Loan's block exponential [[X, E], [0, X]].
    exact_y0 = scipy.linalg.expm(T * a).T @ w
    block = np.zeros((4, 4))
    block[:2, :2] = block[2:, 2:] = T * a.T
    block[:2, 2:] = np.outer(w, y0)
    exact_a = T * scipy.linalg.expm(block)[:2, 2:]
    t = torch.tensor([0.0, T], dtype=F64)
    errors = {}
    for name, solve, kw in (
        ("checkpoint", odeint_checkpoint, {"checkpoints": 4}),
        ("adjoint", odeint_adjoint, {}),
    ):
        f = _Linear(a)
        y = torch.tensor(y0, dtype=F64, requires_grad=True)
        ys = solve(f, y, t, rtol=1e-9, atol=1e-11, **kw)
        (ys[-1] @ torch.tensor(w, dtype=F64)).backward()
        errors[name] = (
            float(np.abs(y.grad.numpy() - exact_y0).max() / np.abs(exact_y0).max()),  # type: ignore[union-attr]
            float(np.abs(f.A.grad.numpy() - exact_a).max() / np.abs(exact_a).max()),  # type: ignore[union-attr]
        )
    assert max(errors["checkpoint"]) < 1e-6, errors
    # The continuous adjoint integrates the state backwards: the -30 mode grows like
    # e^{30 t} there, and the gradient with respect to A is off by orders of magnitude.
    assert errors["adjoint"][1] > 1e3, errors


def _saved_bytes(solve: Any, n_steps: int, **kw: Any) -> int:
    """Bytes saved for backward by the forward solve (parameters excluded)."""
    f = _Field(8)
    y0 = torch.randn(4, 8, dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    params = {p.data_ptr() for p in f.parameters()}
    total = 0

    def pack(x: torch.Tensor) -> torch.Tensor:
        nonlocal total
        if x.data_ptr() not in params:
            total += x.numel() * x.element_size()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        ys = solve(f, y0, t, method="rk4", options={"step_size": 1.0 / n_steps}, **kw)
    ys.sum().backward()
    return total


def test_memory_saved_for_backward_is_bounded_by_the_checkpoints(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state_bytes = 4 * 8 * 8
    c = 6
    peaks: list[int] = []

    class _Counting(ck._Slots):
        def release(self, pos: int) -> None:
            peaks.append(self.peak)
            super().release(pos)

    monkeypatch.setattr(ck, "_Slots", _Counting)
    direct = [_saved_bytes(odeint, n) for n in (200, 800)]
    ckpt = [_saved_bytes(odeint_checkpoint, n, checkpoints=c) for n in (200, 800)]
    assert 3.5 < direct[1] / direct[0] < 4.5
    assert ckpt[0] == ckpt[1] <= (c + 2) * state_bytes  # c states, plus a few
    assert max(peaks) <= c  # the backward's own checkpoints reuse the freed slots
    assert direct[0] > 50 * ckpt[0]


def test_bad_arguments_raise_clear_errors() -> None:
    f = _Field()
    y0 = torch.ones(3, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    for bad in (0, -2, True, 1.5, "8"):
        with pytest.raises(InvalidArgumentError, match=f"checkpoints={bad!r}"):
            odeint_checkpoint(f, y0, t, checkpoints=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match="params="):
        odeint_checkpoint(lambda t, y: -y, y0, t)
    for key in ("compile", "cuda_graph"):
        with pytest.raises(InvalidArgumentError, match=f"{key}=True is not supported"):
            odeint_checkpoint(f, torch.ones(2, 3, dtype=F64), t, options={key: True})
    # Per-sample steps are adaptive: a fixed-step method refuses them as odeint does.
    with pytest.raises(InvalidArgumentError, match=r"per_sample.*adaptive methods only"):
        odeint_checkpoint(f, torch.ones(2, 3, dtype=F64), t, method="rk4",
                          options={"step_size": 0.1},
                          execution=ExecutionOptions(per_sample=True))
    ys = odeint_checkpoint(f, y0.clone().requires_grad_(True), t)
    ys.sum().backward(retain_graph=True)
    with pytest.raises(InvalidArgumentError, match="retain_graph"):
        ys.sum().backward()


def test_single_output_time_and_reversible_heun() -> None:
    f = _Field()
    y0 = torch.ones(3, dtype=F64, requires_grad=True)
    ys = odeint_checkpoint(f, y0, torch.tensor([0.0], dtype=F64))
    ys.sum().backward()
    assert torch.equal(y0.grad, torch.ones(3, dtype=F64))  # type: ignore[arg-type]
    kw: dict[str, Any] = {"method": "reversible_heun", "options": {"step_size": 0.1}}
    t = torch.tensor([0.0, 1.0], dtype=F64)
    _, ref, _ = _grads(odeint, f, y0, t, **kw)
    _, got, _ = _grads(odeint_checkpoint, f, y0, t, **kw)  # its own O(1) backward
    for g_c, g in zip(got, ref, strict=True):
        assert _rel(g_c, g) < 1e-9


def test_tuple_tolerances_give_odeints_steps_and_gradients() -> None:
    def func(t: torch.Tensor, y: tuple[torch.Tensor, torch.Tensor]) -> Any:
        return y[1], -torch.sin(y[0]) * w

    w = torch.tensor(1.3, dtype=F64, requires_grad=True)
    t = torch.linspace(0.0, 3.0, 4, dtype=F64)
    out = {}
    for name, solve, tol in (
        ("odeint", odeint, {"rtol": (1e-3, 1e-9), "atol": (1e-5, 1e-11)}),
        ("checkpoint", odeint_checkpoint, {"rtol": (1e-3, 1e-9), "atol": (1e-5, 1e-11)}),
        ("loose", odeint_checkpoint, {"rtol": (1e-3, 1e-3), "atol": (1e-5, 1e-5)}),
    ):
        y0 = (torch.tensor([1.0], dtype=F64, requires_grad=True),
              torch.tensor([0.2], dtype=F64, requires_grad=True))
        stats = SolveStats()
        kw = {} if solve is odeint else {"params": (w,), "checkpoints": 3}
        x, v = solve(func, y0, t, stats=stats, **tol, **kw)  # type: ignore[operator]
        (x.sum() + v[-1].square().sum()).backward()
        out[name] = (torch.cat([y0[0].grad, y0[1].grad, w.grad.reshape(1)]),
                     stats.accepted_steps)
        w.grad = None
    assert out["checkpoint"][1] == out["odeint"][1] > out["loose"][1]
    assert float((out["checkpoint"][0] - out["odeint"][0]).abs().max()) <= 1e-12
    with pytest.raises(InvalidArgumentError, match="has 3 entries but y0 has 2 tensors"):
        odeint_checkpoint(func, (torch.ones(1, dtype=F64), torch.ones(1, dtype=F64)), t,
                          rtol=(1e-3,) * 3, params=(w,))


def test_perturbed_fixed_steps_are_replayed_with_their_stage_times() -> None:
    w = torch.tensor(0.8, dtype=F64, requires_grad=True)

    def func(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # jumps at the grid time 0.5: which side each stage sees decides the answer
        return torch.where(t <= 0.5, 1.0, -1.0).to(F64) * w - 0.3 * y * w

    t = torch.tensor([0.0, 0.3, 1.0], dtype=F64)  # 0.3: an output between grid points
    out = []
    for solve, kw in ((odeint, {}), (odeint_checkpoint, {"checkpoints": 2, "params": (w,)})):
        y0 = torch.tensor([0.2, -1.0], dtype=F64, requires_grad=True)
        ys = solve(func, y0, t, method="rk4", options={"step_size": 0.125, "perturb": True},
                   **kw)
        (ys * torch.arange(1.0, 7.0, dtype=F64).view(3, 2)).sum().backward()
        out.append((ys.detach(), y0.grad, w.grad.clone()))
        w.grad = None
    plain = odeint(func, torch.tensor([0.2, -1.0], dtype=F64), t, method="rk4",
                   options={"step_size": 0.125})
    assert float((out[0][0] - plain.detach()).abs().max()) > 1e-3  # perturb matters here
    for a, b in zip(out[1], out[0], strict=True):
        assert float((a - b).abs().max()) <= 1e-12


# --------------------------------------------------------------------------------------------
# The device loop: per-sample steps and device_loop=True


class _Decays(nn.Module):
    """Row i decays at rate k_i (k from 1 to 1000, log-spaced) with a nonlinear,
    nonautonomous forcing, so rows need very different numbers of steps."""

    def __init__(self, rows: int = 4, m: int = 2) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.logspace(0.0, 3.0, rows, dtype=F64).reshape(rows, 1))
        self.w = nn.Parameter(torch.linspace(0.2, 0.5, m, dtype=F64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -self.k * y + self.w * torch.sin(y) * torch.cos(t).reshape(-1, 1)


PER_SAMPLE = ExecutionOptions(per_sample=True)


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_per_sample_gradients_equal_direct_backprop_through_the_same_per_row_steps(
    method: str,
) -> None:
    f = _Decays()
    y0 = torch.tensor([[0.3, -0.5], [1.0, 0.2], [-0.7, 0.4], [0.9, -1.1]], dtype=F64)
    t = torch.tensor([0.0, 0.013, 0.05, 0.08, 0.1], dtype=F64)  # inside steps, and the end
    kw: dict[str, Any] = {"method": method, "execution": PER_SAMPLE, "rtol": 1e-6,
                          "atol": 1e-8}
    ys, ref, st = _grads(odeint, f, y0, t, **kw)
    per_row = st.nfe_per_sample
    assert per_row is not None and int(per_row[-1]) > 4 * int(per_row[0])  # own step counts
    for c in (4, 10_000):
        ys_c, got, st_c = _grads(odeint_checkpoint, f, y0, t, checkpoints=c, **kw)
        assert torch.equal(ys_c, ys)  # the same forward solve
        assert torch.equal(st_c.nfe_per_sample, per_row)  # type: ignore[arg-type]
        assert st_c.nfe_forward == st.nfe_forward and st_c.nfe_recompute > 0
        for g_c, g in zip(got, ref, strict=True):
            assert _rel(g_c, g) < 1e-9, (c, g_c, g)


def test_per_sample_gradient_of_a_linear_decay_is_the_exponential() -> None:
    # y_i' = -k_i y_i: d y_i(T) / d y_i(0) = exp(-k_i T) and d y_i(T) / d k_i = -T y_i(T).
    k = torch.logspace(0.0, 3.0, 5, dtype=F64)
    k_p = k.clone().requires_grad_(True)
    y0 = torch.linspace(0.5, 1.5, 5, dtype=F64).requires_grad_(True)
    t = torch.tensor([0.0, 0.3], dtype=F64)
    stats = SolveStats()
    ys = odeint_checkpoint(lambda t, y: -k_p * y, y0, t, rtol=1e-9, atol=1e-12,
                           execution=PER_SAMPLE, params=(k_p,), checkpoints=8, stats=stats)
    ys[-1].sum().backward()
    exact = torch.exp(-k * 0.3)
    assert float((y0.grad - exact).abs().max()) < 1e-8  # type: ignore[operator]
    assert float((k_p.grad + 0.3 * y0.detach() * exact).abs().max()) < 1e-8  # type: ignore[operator]
    assert stats.nfe_per_sample is not None
    assert int(stats.nfe_per_sample[-1]) > 5 * int(stats.nfe_per_sample[0])


def test_per_sample_replays_every_attempt_once_when_all_fit_and_more_with_fewer() -> None:
    f = _Decays()
    y0 = torch.ones(4, 2, dtype=F64)
    t = torch.tensor([0.0, 0.1], dtype=F64)
    recompute = []
    for c in (10_000, 8, 3):
        _, _, st = _grads(odeint_checkpoint, f, y0, t, checkpoints=c, execution=PER_SAMPLE)
        recompute.append(st.nfe_recompute)
    assert st.nfe_per_sample is not None
    # dopri5: 6 evaluations an attempt, plus 2 at the start (f(t0, y0) and the first-step
    # guess); the backward re-runs each attempt of the slowest row once with autograd, and
    # f(t0, y0) once: 6 n + 1 = its count minus 1.
    assert recompute[0] == int(st.nfe_per_sample.max()) - 1
    assert recompute[0] < recompute[1] < recompute[2]


def test_per_sample_rows_with_their_own_output_times() -> None:
    f = _Decays(rows=3)
    y0 = torch.tensor([[0.3, -0.5], [1.0, 0.2], [-0.7, 0.4]], dtype=F64)
    t = torch.tensor([[0.0, 0.05, 0.3], [0.1, 0.2, 0.25], [-0.1, 0.0, 0.05]], dtype=F64)
    out = []
    for solve, kw in ((odeint, {}), (odeint_checkpoint, {"checkpoints": 3})):
        y = y0.clone().requires_grad_(True)
        f.zero_grad()
        ys = solve(f, y, t, execution=PER_SAMPLE, **kw)  # type: ignore[operator]
        (ys * torch.arange(ys.numel(), dtype=F64).reshape(ys.shape)).sum().backward()
        out.append([ys.detach(), y.grad, *(p.grad.clone() for p in f.parameters())])  # type: ignore[union-attr]
    assert torch.equal(out[1][0], out[0][0])
    for g_c, g in zip(out[1][1:], out[0][1:], strict=True):
        assert _rel(g_c, g) < 1e-9


@pytest.mark.parametrize(
    "opts", [AdaptiveOptions(jump_t=[0.7]), AdaptiveOptions(step_t=[0.3, 0.9])]
)
def test_device_loop_tuple_state_with_step_and_jump_times(opts: AdaptiveOptions) -> None:
    w = torch.tensor([[0.0, 1.0], [-2.0, -0.1]], dtype=F64, requires_grad=True)

    def func(t: torch.Tensor, y: tuple[torch.Tensor, torch.Tensor]) -> Any:
        a, b = y
        force = torch.where(t < 0.7, 1.0, -0.5).to(F64)
        return (w[0, 1] * b + force, w[1, 0] * a + w[1, 1] * b * a)

    y0 = (torch.tensor([0.5], dtype=F64), torch.tensor([0.1], dtype=F64))
    t = torch.tensor([0.0, 0.4, 1.5], dtype=F64)
    exe = ExecutionOptions(device_loop=True)
    out = []
    for solve, kw in ((odeint, {}), (odeint_checkpoint, {"checkpoints": 3, "params": (w,)})):
        a0, b0 = (p.clone().requires_grad_(True) for p in y0)
        w.grad = None
        stats = SolveStats()
        ya, yb = solve(func, (a0, b0), t, options=opts, execution=exe, rtol=1e-7, atol=1e-9,
                       stats=stats, **kw)
        (ya.sum() * 0.3 + (yb**2).sum()).backward()
        out.append([a0.grad.clone(), b0.grad.clone(), w.grad.clone(), stats])  # type: ignore[union-attr]
    assert out[1][3].accepted_steps == out[0][3].accepted_steps >= 10
    assert out[1][3].nfe_recompute > 0
    for g_c, g in zip(out[1][:3], out[0][:3], strict=True):
        assert _rel(g_c, g) < 1e-9


def _per_sample_saved(solve: Any, t_end: float, **kw: Any) -> tuple[int, int]:
    f = _Decays(rows=4, m=8)
    y0 = torch.linspace(-1.0, 1.0, 32, dtype=F64).reshape(4, 8).requires_grad_(True)
    stats = SolveStats()
    with SavedTensorsMeter(exclude=f.parameters()) as meter:
        ys = solve(f, y0, torch.tensor([0.0, t_end], dtype=F64), execution=PER_SAMPLE,
                   stats=stats, **kw)
    ys.sum().backward()
    return meter.bytes, stats.accepted_steps


def test_per_sample_memory_saved_for_backward_is_the_checkpoints_whatever_the_steps() -> None:
    c = 6
    (d1, n1), (d4, n4) = (_per_sample_saved(odeint, s) for s in (0.05, 0.5))
    (c1, m1), (c4, m4) = (_per_sample_saved(odeint_checkpoint, s, checkpoints=c)
                          for s in (0.05, 0.5))
    assert (m1, m4) == (n1, n4) and n4 > 2 * n1
    assert d4 > 2 * d1  # direct backprop holds every attempt's graph
    # A checkpoint: the batch's state, first stage and error scale (4, 8) and a few per-row
    # numbers (t, |dt|, controller history, flags, counters: 10 of at most 8 bytes).
    assert c1 == c4 <= c * (3 * 4 * 8 * 8 + 10 * 4 * 8)
    assert d1 > 10 * c1


def test_per_sample_single_output_time_and_a_changed_func() -> None:
    f = _Decays()
    y0 = torch.ones(4, 2, dtype=F64, requires_grad=True)
    ys = odeint_checkpoint(f, y0, torch.tensor([0.0], dtype=F64), execution=PER_SAMPLE)
    ys.sum().backward()
    assert torch.equal(y0.grad, torch.ones(4, 2, dtype=F64))  # type: ignore[arg-type]
    # The backward re-runs the attempts: a func that changed since the forward pass takes
    # other steps there, and that is an error rather than a wrong gradient.
    ys = odeint_checkpoint(f, y0, torch.tensor([0.0, 0.1], dtype=F64), execution=PER_SAMPLE,
                           checkpoints=2)
    forward = f.forward
    f.forward = lambda t, y: 1.5 * forward(t, y)  # type: ignore[method-assign]
    with pytest.raises(SolverError, match="other times than the forward solve"):
        ys.sum().backward()


# ---------------------------------------------------------------------------------------------
# What the replays evaluate, reversed time, and parameters or states that do not matter


def test_with_one_checkpoint_every_replay_of_an_fsal_step_evaluates_its_six_new_stages() -> None:
    # one slot: the backward re-runs steps 0..k from y0 for k = N-1 .. 0, N(N+1)/2 replays;
    # dopri5's step takes its first stage from the previous step's last (carried), so a replay
    # costs 6 evaluations, 7 for step 0 (its first stage f(t0, y0) too)
    stats = _grads(odeint_checkpoint, _Field(), torch.ones(3, dtype=F64),
                   torch.tensor([0.0, 2.0], dtype=F64), method="dopri5", checkpoints=1)[2]
    n = stats.accepted_steps
    assert n > 5 and stats.nfe_recompute == 6 * n * (n + 1) // 2 + n


def test_reversed_time_with_interior_outputs_gives_the_backprop_gradients() -> None:
    t = torch.tensor([2.0, 1.63, 1.5, 0.7, 0.0], dtype=F64)
    for method, options in (("dopri5", None), ("rk4", {"step_size": 0.11})):
        ys, ref, _ = _grads(odeint, _Field(), torch.ones(3, dtype=F64), t, method=method,
                            options=options)
        ys_c, got, _ = _grads(odeint_checkpoint, _Field(), torch.ones(3, dtype=F64), t,
                              method=method, options=options, checkpoints=3)
        assert torch.equal(ys_c, ys)
        for g_c, g in zip(got, ref, strict=True):
            assert _rel(g_c, g) < 1e-9, method


class _WithUnused(nn.Module):
    """y' = -w y, and a parameter the field never uses (a user's model often has some)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.5, dtype=F64))
        self.unused = nn.Parameter(torch.tensor(1.0, dtype=F64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -self.w * y


@pytest.mark.parametrize("device_loop", [False, True])
def test_a_parameter_the_field_does_not_use_gets_a_zero_gradient(
    device_loop: bool,
) -> None:
    f = _WithUnused()
    y = odeint_checkpoint(f, torch.ones(2, 1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                          checkpoints=2, options={"device_loop": device_loop})
    y[-1].sum().backward()
    # d/dw of 2 exp(-w) at w = 1/2; zero (as the adjoint methods give) for the unused one
    assert float(f.unused.grad) == 0.0
    assert float(f.w.grad) == pytest.approx(-2 * np.exp(-0.5), rel=1e-6)


class _TimeOnly(nn.Module):
    """y' = w t: the state does not enter (its Jacobian is None in autograd, not zero)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(3.0, dtype=F64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.w * t * torch.ones_like(y)


@pytest.mark.parametrize("device_loop", [False, True])
def test_a_field_that_ignores_the_state_passes_the_gradient_straight_to_y0(
    device_loop: bool,
) -> None:
    # y(1) = y0 + w/2: d/dy0 = 1, d/dw = 1/2 per entry
    f = _TimeOnly()
    y0 = torch.zeros(2, 2, dtype=F64, requires_grad=True)
    y = odeint_checkpoint(f, y0, torch.tensor([0.0, 0.5, 1.0], dtype=F64), checkpoints=2,
                          options={"device_loop": device_loop})
    assert torch.allclose(y[-1], torch.full((2, 2), 1.5, dtype=F64), rtol=1e-12)
    y[-1].sum().backward()
    assert torch.equal(y0.grad, torch.ones(2, 2, dtype=F64))
    assert float(f.w.grad) == pytest.approx(2.0, rel=1e-12)


class _Rotation(nn.Module):
    """A fixed rotation field with no parameters: only y0 (and t) can have gradients."""

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([-y[..., 1], y[..., 0]], -1)


@pytest.mark.parametrize(("method", "device_loop"),
                         [("rk4", False), ("dopri5", False), ("dopri5", True)])
def test_a_field_without_parameters_gives_the_rotations_gradient_to_y0(
    method: str, device_loop: bool,
) -> None:
    # y(t) = R(t) y0, so d sum(y(1)) / d y0 = R(1)^T 1 = (cos 1 + sin 1, cos 1 - sin 1)
    y0 = torch.tensor([[1.0, 0.0]], dtype=F64, requires_grad=True)
    options = {"step_size": 0.05} if method == "rk4" else {"device_loop": device_loop}
    y = odeint_checkpoint(_Rotation(), y0, torch.tensor([0.0, 1.0], dtype=F64), method=method,
                          rtol=1e-10, atol=1e-12, options=options, checkpoints=2)
    y[-1].sum().backward()
    c, s = np.cos(1.0), np.sin(1.0)
    assert torch.allclose(y0.grad, torch.tensor([[c + s, c - s]], dtype=F64), atol=1e-8)


def test_a_grid_constructors_grid_sets_the_checkpointed_solves_steps() -> None:
    # it used to be ignored: one step from 0 to 2 instead of the constructor's 40
    def grid(func, y, tt):  # type: ignore[no-untyped-def]
        return torch.linspace(float(tt[0].detach()), float(tt[-1].detach()), 41, dtype=F64)

    kw: dict[str, Any] = {"method": "rk4", "options": {"grid_constructor": grid}}
    ys, ref, _ = _grads(odeint, _Field(), torch.ones(3, dtype=F64), T_OUT[:5], **kw)
    ys_c, got, stats = _grads(odeint_checkpoint, _Field(), torch.ones(3, dtype=F64), T_OUT[:5],
                              checkpoints=4, **kw)
    assert stats.accepted_steps == 40 and torch.equal(ys_c, ys)
    for g_c, g in zip(got, ref, strict=True):
        assert _rel(g_c, g) < 1e-9


def _place_by_the_rule(positions: list[int], levels: list[int], i: int, slots: int) -> None:
    """wang_moin_place's documented rule, read literally: a free slot takes the state at
    level 0; else drop the latest checkpoint whose level is below that of some later one and
    store at level 0; else the newest checkpoint becomes this one, one level up (one slot:
    only the initial state is kept)."""
    if len(positions) < slots:
        positions.append(i)
        levels.append(0)
        return
    if slots == 1:
        return
    below = [k for k in range(1, len(positions))
             if any(levels[j] > levels[k] for j in range(k + 1, len(positions)))]
    if below:
        del positions[below[-1]], levels[below[-1]]
        positions.append(i)
        levels.append(0)
    else:
        positions[-1] = i
        levels[-1] += 1


@pytest.mark.parametrize("slots", [1, 2, 3, 4, 6])
def test_wang_moin_placement_follows_its_rule_step_by_step(slots: int) -> None:
    positions, levels = [0], [0]
    mine, theirs = [0], [0]
    for i in range(1, 400):
        before = list(positions)
        dropped = ck.wang_moin_place(positions, levels, i, slots)
        _place_by_the_rule(mine, theirs, i, slots)
        assert (positions, levels) == (mine, theirs), i
        gone = sorted((set(before) | {i}) - set(positions))
        assert [dropped] == gone if gone else dropped is None


def test_reversible_heun_runs_its_o1_backward_for_the_params_given_with_a_plain_function(
) -> None:
    # its own backward saves no per-step state: the same bytes for 20 and 80 steps (plain
    # backprop through the steps would save 4 times as many at 80); gradients as backprop's
    w = torch.tensor(-0.7, dtype=F64, requires_grad=True)
    y0, t = torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    saved = []
    for n in (20, 80):
        kw: dict[str, Any] = {"method": "reversible_heun", "options": {"step_size": 1.0 / n}}
        g_ref = torch.autograd.grad(odeint(lambda tt, y: w * y, y0, t, **kw)[-1].sum(), w)[0]
        with SavedTensorsMeter(exclude=(w,)) as meter:
            y = odeint_checkpoint(lambda tt, y: w * y, y0, t, params=(w,), **kw)
        (g,) = torch.autograd.grad(y[-1].sum(), w)
        assert _rel(g, g_ref) < 1e-9
        saved.append(meter.bytes)
    assert saved[0] == saved[1]


def test_the_host_loop_replays_accepted_steps_and_the_device_loop_every_attempt() -> None:
    # all carries fit: each step (host) or attempt (device loop) is replayed once with
    # autograd; dopri5's replay evaluates 6 stages, plus the first step's first stage
    f = lambda t, y: w * torch.sin(y)  # noqa: E731
    w = torch.tensor(-0.3, dtype=F64, requires_grad=True)
    for device_loop in (False, True):
        stats = SolveStats()
        y = odeint_checkpoint(f, torch.ones(2, 3, dtype=F64), torch.tensor([0.0, 4.0], dtype=F64),
                              checkpoints=100, params=(w,), stats=stats,
                              options={"device_loop": device_loop})
        y[-1].sum().backward()
        replayed = stats.accepted_steps + (stats.rejected_steps if device_loop else 0)
        assert stats.rejected_steps > 0 and stats.nfe_recompute == 6 * replayed + 1, stats


@pytest.mark.parametrize("steps", [77, 78])  # default_checkpoints changes from 11 to 12 at 78
def test_fixed_step_default_checkpoints_follow_the_grids_step_count(steps: int) -> None:
    t = torch.tensor([0.0, 1.0], dtype=F64)
    kw: dict[str, Any] = {"method": "rk4", "options": {"step_size": 1.0 / steps}}
    recompute = {}
    for c in (None, ck.default_checkpoints(steps) - 1, ck.default_checkpoints(steps),
              ck.default_checkpoints(steps) + 1):
        recompute[c] = _grads(odeint_checkpoint, _Field(), torch.ones(3, dtype=F64), t,
                              checkpoints=c, **kw)[2].nfe_recompute
    c = ck.default_checkpoints(steps)
    assert recompute[None] == recompute[c] and len(set(recompute.values())) == 3


def test_per_sample_with_one_checkpoint_replays_from_the_initial_state() -> None:
    ys, ref, _ = _grads(odeint, _Field(), torch.ones(2, 3, dtype=F64), T_OUT,
                        options={"device_loop": True})
    ys_c, got, _ = _grads(odeint_checkpoint, _Field(), torch.ones(2, 3, dtype=F64), T_OUT,
                          checkpoints=1, options={"device_loop": True})
    assert torch.allclose(ys_c, ys, rtol=1e-12, atol=0)
    for g_c, g in zip(got, ref, strict=True):
        assert _rel(g_c, g) < 1e-8
