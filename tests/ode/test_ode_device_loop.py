"""The device-resident loop (tensor-op accept/reject, sync every k), per-sample steps, CUDA graphs.

On CPU the device loop is checked against the host loop (same controller and norm, so the same
accepted/rejected sequence); CUDA cases (graph capture and replay) skip without a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from torch import nn

from deeplimits.errors import (
    InvalidArgumentError,
    MaxStepsExceededError,
    NonFiniteStateError,
    StepSizeUnderflowError,
)
from deeplimits.ode import (
    AdaptiveOptions,
    EagerCapture,
    ExecutionOptions,
    IController,
    PIController,
    SolveStats,
    odeint,
    odeint_adjoint,
    odeint_checkpoint,
)
from deeplimits.ode._batched_step import flag_values

F64 = torch.float64
ADAPTIVE = ["bosh3", "dopri5", "tsit5"]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _van_der_pol(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([y[..., 1], (1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0]], dim=-1)


class _Mlp(nn.Module):
    """Time-dependent tanh MLP on ``(batch, 2)``; accepts ``t`` of shape ``()`` or ``(batch,)``."""

    def __init__(self, dtype: torch.dtype = F64) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.w1 = nn.Parameter(torch.randn(16, 2, generator=g, dtype=dtype))
        self.w2 = nn.Parameter(torch.randn(2, 16, generator=g, dtype=dtype) * 0.5)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.tanh(y @ self.w1.T) @ self.w2.T * (1.0 + 0.5 * t.reshape(-1, 1))


@pytest.mark.parametrize("method", ADAPTIVE)
@pytest.mark.parametrize("sync_every", [1, 4, 7])
def test_device_loop_takes_the_host_loops_steps_and_outputs(method: str, sync_every: int) -> None:
    y0 = torch.tensor([2.0, 0.0], dtype=F64)
    t = torch.linspace(0.0, 6.0, 9, dtype=F64)
    host, dev = SolveStats(), SolveStats()
    # A too large first step forces rejections, so they are compared too.
    a = odeint(_van_der_pol, y0, t, rtol=1e-5, atol=1e-7, method=method, stats=host,
               options=AdaptiveOptions(first_step=2.0))
    b = odeint(_van_der_pol, y0, t, rtol=1e-5, atol=1e-7, method=method, stats=dev,
               options=AdaptiveOptions(first_step=2.0),
               execution=ExecutionOptions(device_loop=True, sync_every=sync_every))
    assert host.rejected_steps > 0  # the comparison covers rejections too
    assert (dev.accepted_steps, dev.rejected_steps) == (host.accepted_steps, host.rejected_steps)
    stages = {"bosh3": 3, "dopri5": 6, "tsit5": 6}[method]
    assert host.nfe_forward <= dev.nfe_forward <= host.nfe_forward + (sync_every - 1) * stages
    assert float((a - b).abs().max()) <= 1e-12


@pytest.mark.parametrize("method", ADAPTIVE)
def test_device_loop_agrees_with_scipy_backwards_in_time(method: str) -> None:
    t = np.linspace(5.0, 0.0, 6)
    ref = solve_ivp(lambda s, y: [y[1], (1 - y[0] ** 2) * y[1] - y[0]], (5.0, 0.0), [1.0, 0.5],
                    method="DOP853", t_eval=t, rtol=1e-12, atol=1e-14).y.T
    ys = odeint(_van_der_pol, torch.tensor([1.0, 0.5], dtype=F64), torch.from_numpy(t),
                rtol=1e-9, atol=1e-11, method=method, options={"device_loop": True}).numpy()
    assert np.abs(ys - ref).max() <= 1e-6


@pytest.mark.parametrize("controller", [PIController(), IController(), PIController(dt_max=0.05)])
def test_device_loop_follows_every_controller(controller: PIController) -> None:
    y0 = torch.tensor([2.0, 0.0], dtype=F64)
    t = torch.tensor([0.0, 3.0], dtype=F64)
    host, dev = SolveStats(), SolveStats()
    a = odeint(_van_der_pol, y0, t, stats=host, options=AdaptiveOptions(controller=controller))
    b = odeint(_van_der_pol, y0, t, stats=dev,
               options=AdaptiveOptions(controller=controller),
               execution=ExecutionOptions(device_loop=True))
    assert dev.accepted_steps == host.accepted_steps
    assert float((a - b).abs().max()) <= 1e-12


def test_device_loop_float32_time_reaches_the_end_exactly() -> None:
    f = _Mlp(torch.float32)
    y0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.0, 0.3, 1.7], dtype=torch.float32)
    with torch.no_grad():
        a = odeint(f, y0, t, rtol=1e-5, atol=1e-7)
        b = odeint(f, y0, t, rtol=1e-5, atol=1e-7, options={"device_loop": True})
    # Same steps; float32 round-off of differently ordered stage sums only.
    assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max())


def test_device_loop_reports_nan_underflow_and_max_steps() -> None:
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    dev = {"device_loop": True}

    def blows_up(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.where(t > 0.5, torch.full_like(y, math.nan), -y)

    with pytest.raises(NonFiniteStateError, match=r"t=0\.[4-6]"):
        odeint(blows_up, y0, t, options=dev)

    def stiff(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -1e4 * (y - torch.cos(t))

    with pytest.raises(StepSizeUnderflowError, match=r"t=.*dt="):
        odeint(stiff, y0, t, options={**dev, "controller": PIController(dt_min=1e-2)})
    with pytest.raises(MaxStepsExceededError, match=r"max_num_steps=5"):
        odeint(lambda t, y: torch.cos(20 * t) * y, y0, torch.tensor([0.0, 10.0], dtype=F64),
               options={**dev, "max_num_steps": 5})


def test_backprop_through_the_device_loop_matches_the_host_loop() -> None:
    f = _Mlp()
    y0 = torch.tensor([[0.5, -0.3], [0.1, 0.9]], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    grads = []
    for opts in (None, {"device_loop": True}):
        ys = odeint(f, y0, t, rtol=1e-9, atol=1e-11, options=opts)
        grads.append(torch.autograd.grad((ys**2).sum(), (y0, *f.parameters())))
    for a, b in zip(*grads, strict=True):
        assert float((a - b).abs().max()) <= 1e-10


@pytest.mark.parametrize("norm", ["rms", "seminorm"])
def test_adjoint_on_the_device_loop_matches_the_host_loop(norm: str) -> None:
    f = _Mlp()
    y0 = torch.tensor([[0.5, -0.3], [0.1, 0.9]], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    grads, nfe = [], []
    for loop in (False, True):
        s = SolveStats()
        ys = odeint_adjoint(f, y0, t, rtol=1e-9, atol=1e-11, stats=s,
                            options={"device_loop": loop},
                            adjoint_options={"norm": norm, "device_loop": loop})
        grads.append(torch.autograd.grad(ys[-1].sum(), (y0, *f.parameters())))
        nfe.append(s.backward_accepted_steps)
    assert nfe[0] == nfe[1]
    for a, b in zip(*grads, strict=True):
        assert float((a - b).abs().max()) <= 1e-10


# -- per-sample step sizes ---------------------------------------------------------------------


def _mixed_batch() -> torch.Tensor:
    """Rows from near-equilibrium (easy) to far out (hard) initial states."""
    return torch.tensor([[0.01, 0.0], [0.2, -0.1], [2.0, 0.0], [3.0, -4.0]], dtype=F64)


@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
@torch.no_grad()
def test_per_sample_rows_equal_independent_solves(method: str) -> None:
    f = _Mlp()
    y0 = _mixed_batch()
    t = torch.tensor([0.0, 0.7, 2.0], dtype=F64)
    stats = SolveStats()
    ys = odeint(f, y0, t, rtol=1e-8, atol=1e-10, method=method, stats=stats,
                execution=ExecutionOptions(per_sample=True))
    assert stats.nfe_per_sample is not None and stats.nfe_per_sample.shape == (4,)
    for i in range(y0.shape[0]):
        row = SolveStats()
        one = odeint(f, y0[i : i + 1], t, rtol=1e-8, atol=1e-10, method=method, stats=row)
        # Same steps; the loops sum stages in another order, and the error estimate's
        # cancellation (h * sum(b_err k) ~ 1e-13 from terms ~ 1e-2) turns that round-off into
        # step sizes ~1e-6 apart: interpolated outputs then agree to ~1e-11, not 1e-12.
        assert float((ys[:, i : i + 1] - one).abs().max()) <= 1e-10
        assert int(stats.nfe_per_sample[i]) == row.nfe_forward
    # Easy rows finish with fewer evaluations than the batch as a whole.
    joint = SolveStats()
    odeint(f, y0, t, rtol=1e-8, atol=1e-10, method=method, stats=joint)
    assert int(stats.nfe_per_sample.min()) < joint.nfe_forward


@torch.no_grad()
def test_per_sample_rows_with_their_own_output_times_equal_independent_solves() -> None:
    f = _Mlp()
    y0 = _mixed_batch()
    t = torch.tensor([[0.0, 0.3, 1.0], [0.5, 0.6, 2.5], [-1.0, 0.0, 0.2], [1.0, 1.5, 4.0]],
                     dtype=F64)
    stats = SolveStats()
    ys = odeint(f, y0, t, rtol=1e-8, atol=1e-10, stats=stats, options={"per_sample": True})
    assert ys.shape == (3, 4, 2)
    assert stats.nfe_per_sample is not None
    for i in range(4):
        row = SolveStats()
        one = odeint(f, y0[i : i + 1], t[i], rtol=1e-8, atol=1e-10, stats=row)
        # Same steps (the NFE check below); only a batched vs one-row matmul's rounding differs.
        assert float((ys[:, i : i + 1] - one).abs().max()) <= 1e-10
        assert int(stats.nfe_per_sample[i]) == row.nfe_forward
    with pytest.raises(InvalidArgumentError, match="every row"):
        odeint(f, y0[:2], torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=F64),
               options={"per_sample": True})
    with pytest.raises(InvalidArgumentError, match=r"\(batch, T\)"):
        odeint(f, y0, t[:2], options={"per_sample": True})


def test_per_sample_passes_one_time_per_row_to_func() -> None:
    seen: list[tuple[int, ...]] = []

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(t.shape))
        return -y * t.reshape(-1, 1)

    y0 = torch.ones(3, 2, dtype=F64)
    ys = odeint(f, y0, torch.tensor([0.0, 1.0], dtype=F64), rtol=1e-10, atol=1e-12,
                options={"per_sample": True})
    assert set(seen) == {(3,)}
    assert float((ys[-1] - math.exp(-0.5)).abs().max()) <= 1e-8


def test_per_sample_rejects_tuple_states_host_loop_and_adjoint() -> None:
    y = torch.ones(2, 2, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(InvalidArgumentError, match="one tensor"):
        odeint(lambda t, s: s, (y, y), t, options={"per_sample": True})
    with pytest.raises(InvalidArgumentError, match="device_loop"):
        ExecutionOptions(per_sample=True, device_loop=False)
    with pytest.raises(InvalidArgumentError, match="sync_every"):
        ExecutionOptions(sync_every=0)
    with pytest.raises(InvalidArgumentError, match="odeint_adjoint"):
        odeint_adjoint(_Mlp(), y, t, options={"per_sample": True})


#: The CUDA-graph path on CPU: the eager capture backend replays the same blocks eagerly.
EAGER = {"capture": EagerCapture()}


@pytest.fixture
def eager_graphs():  # type: ignore[no-untyped-def]
    """The graph caches, emptied before and after (graphs come from ``EAGER`` options)."""
    from deeplimits.ode import _cache

    _cache.clear_graph_cache()
    yield _cache
    _cache.clear_graph_cache()


def _cached_solves_match_the_host_loop(
    f: _Mlp, t: torch.Tensor, options: dict[str, Any], cache: Mapping[Any, Any], tol: float
) -> list[SolveStats]:
    """Three solves with ``options`` against the host loop: the first fills ``cache`` (graphs
    or compiled code), the next two reuse it with a new ``y0``, after in-place parameter updates
    the cached code must see. Same accepted steps, at most 3 wasted attempts of 6 evaluations,
    results within ``tol``; returns the three solves' stats."""
    out_stats = []
    for scale in (1.0, 2.0, 2.0):
        if scale == 2.0 and len(cache):
            f.w2.mul_(0.9)  # in-place parameter update: same storage, the cached code sees it
        y0 = _mixed_batch() * scale
        host, dev = SolveStats(), SolveStats()
        ref = odeint(f, y0, t, rtol=1e-8, atol=1e-10, stats=host)
        out = odeint(f, y0, t, rtol=1e-8, atol=1e-10, stats=dev, options=options)
        assert dev.accepted_steps == host.accepted_steps
        assert host.nfe_forward <= dev.nfe_forward <= host.nfe_forward + 3 * 6
        assert float((out - ref).abs().max()) <= tol
        out_stats.append(dev)
    return out_stats


@pytest.mark.parametrize("t_out", [[0.0, 1.5], [0.0, 0.4, 1.5]])
@torch.no_grad()
def test_graph_path_replays_match_the_host_loop(eager_graphs, t_out: list[float]) -> None:  # type: ignore[no-untyped-def]
    f = _Mlp()
    t = torch.tensor(t_out, dtype=F64)
    solves = _cached_solves_match_the_host_loop(f, t, {"device_loop": True, **EAGER},
                                                eager_graphs.GRAPHS, 1e-12)
    assert all(s.cuda_graph_used and not s.compiled for s in solves)  # compile=False default
    assert len(eager_graphs.GRAPHS) == 1
    per = SolveStats()
    ys = odeint(f, _mixed_batch(), t, rtol=1e-8, atol=1e-10, stats=per,
                options={"per_sample": True, **EAGER})
    assert per.cuda_graph_used and per.nfe_per_sample is not None
    one = SolveStats()
    row = odeint(f, _mixed_batch()[3:], t, rtol=1e-8, atol=1e-10, stats=one)
    assert float((ys[:, 3:] - row).abs().max()) <= 1e-12
    assert int(per.nfe_per_sample[3]) == one.nfe_forward


@torch.no_grad()
def test_cached_graph_replays_the_start_for_new_times_and_states(eager_graphs) -> None:  # type: ignore[no-untyped-def]
    f = _Mlp()
    cases = [  # (t, y0 scale, options); the same shapes after the first reuse one graph entry
        ([0.0, 1.5], 1.0, {}), ([0.0, 0.7], 2.0, {}), ([1.0, -0.5], 0.5, {}),
        ([0.0, 0.7], 1.0, {"first_step": 0.01}), ([0.0, 0.9], 3.0, {"first_step": 0.01}),
    ]
    for t_out, scale, extra in cases:
        t = torch.tensor(t_out, dtype=F64)
        y0 = _mixed_batch() * scale
        host, dev = SolveStats(), SolveStats()
        ref = odeint(f, y0, t, rtol=1e-8, atol=1e-10, stats=host, options=extra)
        out = odeint(f, y0, t, rtol=1e-8, atol=1e-10, stats=dev,
                     options={"device_loop": True, **EAGER, **extra})
        assert dev.cuda_graph_used
        assert dev.accepted_steps == host.accepted_steps
        assert host.nfe_forward <= dev.nfe_forward <= host.nfe_forward + 3 * 6
        assert float((out - ref).abs().max()) <= 1e-12
    # forward, backward in time, first_step: three keys
    assert len(eager_graphs.GRAPHS) == 3


@torch.no_grad()
def test_cached_graph_with_per_row_times_matches_independent_solves(eager_graphs) -> None:  # type: ignore[no-untyped-def]
    f = _Mlp()
    for end in (1.0, 1.7):
        y0 = _mixed_batch()
        t = torch.stack([torch.linspace(0.1 * i, end, 3, dtype=F64) for i in range(y0.shape[0])])
        stats = SolveStats()
        ys = odeint(f, y0, t, rtol=1e-8, atol=1e-10, stats=stats,
                    options={"per_sample": True, **EAGER})
        assert stats.cuda_graph_used
        for i in (0, 3):
            row = odeint(f, y0[i : i + 1], t[i], rtol=1e-8, atol=1e-10)
            assert float((ys[:, i : i + 1] - row).abs().max()) <= 1e-12
    assert len(eager_graphs.GRAPHS) == 1


@torch.no_grad()
def test_cached_graph_reports_a_nan_initial_state(eager_graphs) -> None:  # type: ignore[no-untyped-def]
    f = _Mlp()
    t = torch.tensor([0.0, 1.0], dtype=F64)
    odeint(f, _mixed_batch(), t, options={"device_loop": True, **EAGER})
    y0 = _mixed_batch()
    y0[2, 1] = math.nan
    stats = SolveStats()
    # "just after t=0.0" is the loop's own report (the eager first-call check words it
    # differently), so this pins that the replayed start ran and its loop caught the NaN.
    with pytest.raises(NonFiniteStateError, match=r"just after t=0\.0"):
        odeint(f, y0, t, options={"device_loop": True, **EAGER}, stats=stats)
    assert stats.cuda_graph_used


@pytest.mark.compiles
@torch.no_grad()
def test_compiled_solves_match_the_host_loop_and_are_reused() -> None:
    from deeplimits.ode import _cache

    _cache.clear_graph_cache()
    f = _Mlp()
    t = torch.tensor([0.0, 0.4, 1.5], dtype=F64)
    solves = _cached_solves_match_the_host_loop(f, t, {"compile": True}, _cache.COMPILED, 1e-10)
    assert all(s.compiled and not s.cuda_graph_used for s in solves)
    assert len(_cache.COMPILED) == 1
    per = SolveStats()
    ys = odeint(f, _mixed_batch(), t, rtol=1e-8, atol=1e-10, stats=per,
                options={"per_sample": True, "compile": True})
    row = odeint(f, _mixed_batch()[3:], t, rtol=1e-8, atol=1e-10)
    assert per.compiled and float((ys[:, 3:] - row).abs().max()) <= 1e-10
    _cache.clear_graph_cache()


@pytest.mark.compiles
@torch.no_grad()
def test_compiled_blocks_are_captured_and_replayed_like_eager_ones(eager_graphs) -> None:  # type: ignore[no-untyped-def]
    f = _Mlp()
    t = torch.tensor([0.0, 0.4, 1.5], dtype=F64)
    solves = _cached_solves_match_the_host_loop(f, t, {"compile": True, **EAGER},
                                                eager_graphs.GRAPHS, 1e-10)
    assert all(s.compiled and s.cuda_graph_used for s in solves)
    (entry,) = eager_graphs.GRAPHS.values()
    assert entry.compiled and len(eager_graphs.COMPILED) == 1
    y0 = _mixed_batch() * 2.0
    ref = odeint(f, y0, t, rtol=1e-8, atol=1e-10)
    plain = SolveStats()  # cuda_graph=False: the compiled blocks without a graph
    out = odeint(f, y0, t, rtol=1e-8, atol=1e-10, stats=plain,
                 options={"compile": True, "cuda_graph": False})
    assert plain.compiled and not plain.cuda_graph_used
    assert float((out - ref).abs().max()) <= 1e-10


@pytest.mark.compiles
def test_adjoint_with_a_compiled_forward_matches_the_eager_adjoint() -> None:
    f = _Mlp()
    y0 = _mixed_batch().requires_grad_()
    t = torch.tensor([0.0, 1.0], dtype=F64)
    grads = []
    for opts in ({}, {"compile": True}):
        f.zero_grad()
        y0.grad = None
        stats = SolveStats()
        ys = odeint_adjoint(f, y0, t, rtol=1e-8, atol=1e-10, options=opts, stats=stats)
        ys[-1].square().sum().backward()
        assert stats.compiled == bool(opts)
        grads.append(torch.cat([y0.grad.reshape(-1), f.w1.grad.reshape(-1)]))
    assert float((grads[0] - grads[1]).abs().max()) <= 1e-8


def test_compile_needs_autograd_off_and_a_module() -> None:
    y0 = _mixed_batch()
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(InvalidArgumentError, match="compile=True, but autograd is recording"):
        odeint(_Mlp(), y0, t, options={"compile": True})
    with torch.no_grad(), pytest.raises(InvalidArgumentError, match=r"not an nn\.Module"):
        odeint(_van_der_pol, y0, t, options={"compile": True})
    with pytest.raises(InvalidArgumentError, match="drop device_loop=False"):
        ExecutionOptions(compile=True, device_loop=False)
    with torch.no_grad(), pytest.raises(InvalidArgumentError,
                                        match="cuda_graph=True, but the state is on cpu"):
        odeint(_Mlp(), y0, t, options={"compile": True, "cuda_graph": True})


def test_fixed_step_lazy_nan_check_reports_the_first_bad_step() -> None:

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.where(t > 0.505, torch.full_like(y, math.nan), -y)

    y0 = torch.ones(3, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(NonFiniteStateError, match=r"t=0\.51"):
        odeint(f, y0, t, method="rk4", options={"step_size": 0.01, "finite_check": "queued"})
    ys = odeint(lambda t, y: -y, y0, t, method="rk4",  # the accelerator path, on CPU
                options={"step_size": 0.01, "finite_check": "queued"})
    assert float((ys[-1] - math.exp(-1.0)).abs().max()) <= 1e-9


def test_cuda_graph_true_on_cpu_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match="cuda_graph=True"):
        odeint(_Mlp(), torch.ones(2, 2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
               options={"device_loop": True, "cuda_graph": True})


# -- CUDA -------------------------------------------------------------------------------------


@CUDA
@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_cuda_graph_replay_matches_the_cpu_host_loop(method: str) -> None:
    f = _Mlp()
    y0 = _mixed_batch()
    t = torch.tensor([0.0, 0.4, 1.5], dtype=F64)
    ref_stats = SolveStats()
    ref = odeint(f, y0, t, rtol=1e-8, atol=1e-10, method=method, stats=ref_stats)
    fc = _Mlp().cuda()
    for k in range(2):  # second call: the cached graph with a new initial state
        s = SolveStats()
        with torch.no_grad():
            out = odeint(fc, (y0 * (1 + k)).cuda(), t.cuda(), rtol=1e-8, atol=1e-10,
                         method=method, stats=s)
        assert s.cuda_graph_used
        exp = ref if k == 0 else odeint(f, y0 * 2, t, rtol=1e-8, atol=1e-10, method=method)
        assert float((out.cpu() - exp.detach()).abs().max()) <= 1e-9
    assert s.accepted_steps == ref_stats.accepted_steps or k == 1


@CUDA
@pytest.mark.cuda
@pytest.mark.compiles
@torch.no_grad()
def test_compiled_cuda_graph_solves_match_the_cpu_host_loop() -> None:
    from deeplimits.ode import _cache

    f, fc = _Mlp(), _Mlp().cuda()
    y0 = _mixed_batch()
    t = torch.tensor([0.0, 0.4, 1.5], dtype=F64)
    ref = odeint(f, y0, t, rtol=1e-8, atol=1e-10)
    for k in range(2):  # second call: the cached graph of compiled blocks, a new initial state
        s = SolveStats()
        out = odeint(fc, (y0 * (1 + k)).cuda(), t.cuda(), rtol=1e-8, atol=1e-10, stats=s,
                     options={"compile": True})
        assert s.compiled and s.cuda_graph_used
        exp = ref if k == 0 else odeint(f, y0 * 2, t, rtol=1e-8, atol=1e-10)
        assert float((out.cpu() - exp).abs().max()) <= 1e-9
    _cache.clear_graph_cache()


@CUDA
def test_cuda_graph_sees_in_place_parameter_updates() -> None:
    fc = _Mlp().cuda()
    y0 = _mixed_batch().cuda()
    t = torch.tensor([0.0, 1.0], dtype=F64, device="cuda")
    with torch.no_grad():
        odeint(fc, y0, t)
        fc.w2.mul_(0.5)
        a = odeint(fc, y0, t)
        b = odeint(fc, y0, t, options={"cuda_graph": False})
    assert float((a - b).abs().max()) <= 1e-10


@CUDA
def test_cuda_device_loop_with_grad_and_per_sample_match_cpu() -> None:
    f = _Mlp()
    fc = _Mlp().cuda()
    y0 = _mixed_batch()
    t = torch.tensor([0.0, 1.0], dtype=F64)
    s = SolveStats()
    out = odeint(fc, y0.cuda(), t.cuda(), rtol=1e-8, atol=1e-10, stats=s,
                 options={"per_sample": True})
    ref = odeint(f, y0, t, rtol=1e-8, atol=1e-10, options={"per_sample": True})
    assert not s.cuda_graph_used  # parameters require grad: no graph
    assert float((out.detach().cpu() - ref.detach()).abs().max()) <= 1e-10
    g = torch.autograd.grad(out[-1].sum(), fc.w1)[0]
    gr = torch.autograd.grad(ref[-1].sum(), f.w1)[0]
    assert float((g.cpu() - gr).abs().max()) <= 1e-8


@CUDA
def test_cuda_graph_required_for_a_plain_function_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match=r"nn\.Module"), torch.no_grad():
        odeint(lambda t, y: -y, torch.ones(2, device="cuda"), torch.tensor([0.0, 1.0],
               device="cuda"), options={"cuda_graph": True})


@CUDA
@pytest.mark.parametrize("norm", ["rms", "seminorm"])
def test_cuda_adjoint_graph_forward_and_device_backward_match_cpu(norm: str) -> None:
    f = _Mlp()
    fc = _Mlp().cuda()
    y0 = _mixed_batch()
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    grads = []
    for mod, dev in ((f, "cpu"), (fc, "cuda")):
        s = SolveStats()
        ys = odeint_adjoint(mod, y0.to(dev), t.to(dev), rtol=1e-9, atol=1e-11, stats=s,
                            adjoint_options={"norm": norm})
        grads.append([g.cpu() for g in torch.autograd.grad((ys**2).sum(), tuple(mod.parameters()))])
        if dev == "cuda":
            assert s.cuda_graph_used  # the adjoint's forward solve runs without autograd
    for a, b in zip(*grads, strict=True):
        assert float((a - b).abs().max()) <= 1e-8 * max(1.0, float(a.abs().max()))


@CUDA
@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_nan_on_cuda_reports_the_time(method: str) -> None:
    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.where(t > 0.5, torch.full_like(y, math.nan), -y)

    opts = {"step_size": 0.01} if method == "rk4" else None
    with pytest.raises(NonFiniteStateError, match=r"t=0\.[4-6]"):
        odeint(f, torch.ones(3, dtype=F64, device="cuda"),
               torch.tensor([0.0, 1.0], dtype=F64, device="cuda"), method=method, options=opts)


@pytest.mark.parametrize("loop", [{"device_loop": True}, {"per_sample": True},
                                  {"device_loop": False}])
def test_a_step_that_rounds_onto_the_last_time_ends_there_on_every_loop(loop: dict) -> None:
    """y' = 1 (dopri5 exact, so each step grows to dt_max = 0.3): steps 0.1, 0.3, 0.3, 0.3.
    In floats 0.1 + 0.3 + 0.3 = 0.7 and 1.0 - 0.7 = 0.30000000000000004 > 0.3, but
    0.7 + 0.3 rounds to 1.0: the fourth step ends at 1.0, as on the host loop, instead of
    leaving a zero-length fifth step (which cost 6 more evaluations and an extra accepted
    step on the device loops before the fix)."""
    stats = SolveStats()
    ys = odeint(lambda t, y: torch.ones_like(y), torch.zeros(2, 1, dtype=F64),
                torch.tensor([0.0, 1.0], dtype=F64), method="dopri5",
                options={**loop, "first_step": 0.1, "controller": IController(dt_max=0.3)},
                stats=stats)
    assert (stats.accepted_steps, stats.rejected_steps) == (4, 0)
    if loop.get("device_loop") is False:
        assert stats.nfe_forward == 1 + 4 * 6
    assert ys[-1].flatten().tolist() == pytest.approx([1.0, 1.0], abs=1e-15)


# -- hand-counted steps on y' = 1 ---------------------------------------------------------------
# dopri5 is exact on y' = 1 (error ratio 0), so every accepted step grows its successor by
# factor_max = 10, clipped to dt_max. Each attempt costs 6 evaluations (7 stages, FSAL); the
# start costs 1 (f(t0); no probe when first_step is given).
#   first_step 0.125, dt_max 0.25 on [0, 1]: steps end at 0.125, 0.375, 0.625, 0.875, 1.0
#     (the last one shortened to the stop): 5 attempts, 1 + 5 * 6 = 31 evaluations.
#   first_step 0.001, no dt_max on [0, 1]: steps 0.001, 0.01, 0.1, then 1.0 >= 0.889 left:
#     4 attempts, 1 + 4 * 6 = 25 evaluations.


def _ones(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(y)


class _One(nn.Module):
    """y' = 1 as a module (graphs and compiled code are cached per module)."""

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(y)


QUARTERS = {"first_step": 0.125, "controller": IController(dt_max=0.25)}
DECADES = {"first_step": 0.001}


@pytest.mark.parametrize(
    ("opts", "sync_every", "nfe", "syncs"),
    [
        # 4 attempts reach 0.875; the estimate (1 - 0.875) / 0.25 = 0.5 asks for 1 more, not 4
        (QUARTERS, 4, 31, 2),
        # after the first attempt the estimate is 0.999 / 0.01 -> 100 steps: still 1 per block
        (DECADES, 1, 25, 4),
        # 2 blocks of 2, then 1: at 0.375 the estimate 0.625 / 0.25 = 2.5 -> 3 caps at 2
        (QUARTERS, 2, 31, 3),
    ],
)
@pytest.mark.parametrize("loop", ["device_loop", "per_sample"])
def test_sync_blocks_shrink_to_the_steps_left_and_waste_no_attempts(
    opts: dict, sync_every: int, nfe: int, syncs: int, loop: str, monkeypatch
) -> None:
    from deeplimits.ode import _device_loop

    reads: list[int] = []  # one flag read (host sync) per block

    def flags(lp, st):  # type: ignore[no-untyped-def]
        reads.append(1)
        return flag_values(lp, st)

    monkeypatch.setattr(_device_loop, "flag_values", flags)
    stats = SolveStats()
    ys = odeint(_ones, torch.zeros(2, 1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                options={**opts, loop: True, "sync_every": sync_every}, stats=stats)
    assert (stats.accepted_steps, stats.rejected_steps) == ((nfe - 1) // 6, 0)
    assert stats.nfe_forward == nfe and len(reads) == syncs
    if loop == "per_sample":
        assert stats.nfe_per_sample is not None
        assert stats.nfe_per_sample.dtype == torch.long  # counts, not floats
        assert stats.nfe_per_sample.tolist() == [nfe, nfe]
    assert ys[-1].flatten().tolist() == pytest.approx([1.0, 1.0], abs=1e-15)


def test_outputs_at_a_step_end_take_that_steps_end_state() -> None:
    """QUARTERS' steps end at 0.375 and 0.875: the outputs there are the step's own end
    state, the others interpolated: y = t to round-off (y = t is in every interpolant's
    span); an output left unwritten would read 0."""
    t = torch.tensor([0.0, 0.375, 0.5, 0.875, 1.0], dtype=F64)
    for loop in ({"device_loop": True}, {"per_sample": True}):
        ys = odeint(_ones, torch.zeros(2, 1, dtype=F64), t, options={**QUARTERS, **loop})
        assert float((ys[:, :, 0] - t[:, None]).abs().max()) <= 1e-15
    # per-row output times: row 1 starts at 0.5, its steps end at 0.625, 0.875, 1.125
    rows = torch.tensor([[0.0, 0.375, 1.0], [0.5, 0.875, 1.125]], dtype=F64)
    ys = odeint(_ones, torch.zeros(2, 1, dtype=F64), rows,
                options={**QUARTERS, "per_sample": True})
    want = torch.tensor([[0.0, 0.375, 1.0], [0.0, 0.375, 0.625]], dtype=F64)
    assert float((ys[:, :, 0].T - want).abs().max()) <= 1e-15


def test_max_steps_error_names_the_time_reached_and_the_end() -> None:
    """QUARTERS with max_num_steps=3: three accepted steps (0.125 + 0.25 + 0.25) from the
    start. Forward the error names the least advanced row, backward the greatest t."""
    y0 = torch.zeros(2, 1, dtype=F64)
    cases = [
        ({"device_loop": True}, [0.0, 0.5, 1.0], r"at t=0\.625 \(integrating to t=1\.0\)"),
        ({"device_loop": True}, [1.0, 0.5, 0.0], r"at t=0\.375 \(integrating to t=0\.0\)"),
        # rows from 0.0 and 0.25: after 3 steps at 0.625 and 0.875
        ({"per_sample": True}, [[0.0, 0.5, 1.0], [0.25, 0.5, 2.0]],
         r"at t=0\.625 \(integrating to t=each row's last time\)"),
        # backward rows from 1.0 and 0.5: after 3 steps at 0.375 and -0.125
        ({"per_sample": True}, [[1.0, 0.5, 0.0], [0.5, 0.25, -1.0]], r"at t=0\.375 "),
    ]
    for loop, t, match in cases:
        with pytest.raises(MaxStepsExceededError, match=match):
            odeint(_ones, y0, torch.tensor(t, dtype=F64),
                   options={**QUARTERS, **loop, "max_num_steps": 3, "sync_every": 1})


def test_nan_error_names_the_bad_rows_time_in_the_direction_of_integration() -> None:
    """func is NaN at every time past a row's start: no attempt is ever accepted, each row
    stays at its start, and the error names the first start forward, the last backward.
    Every NaN trial shrinks the step by factor_min = 0.2 and the 11th in a row
    (MAX_BAD_IN_A_ROW = 10) ends the solve: from first_step 0.1, 1 + 11 * 6 = 67 calls
    of func and a last step of 0.1 * 0.2**11 = 2.048e-09."""
    y0 = torch.ones(2, 1, dtype=F64)
    for rows, where in (([[0.25, 1.0], [0.5, 1.0]], r"t=0\.25 "),
                        ([[0.75, 0.0], [0.5, -1.0]], r"t=0\.75 ")):
        t = torch.tensor(rows, dtype=F64)
        start = t[:, :1]
        calls: list[int] = []

        def f(s: torch.Tensor, y: torch.Tensor, start: torch.Tensor = start,
              calls: list[int] = calls) -> torch.Tensor:
            calls.append(1)
            moved = s.reshape(-1, 1) != start
            return torch.where(moved, torch.full_like(y, math.nan), -y)

        with pytest.raises(NonFiniteStateError, match=where + r".*dt=2\.04[78]"):
            odeint(f, y0, t, options={"per_sample": True, "sync_every": 1, "first_step": 0.1})
        assert len(calls) == 67
    # A NaN trial whose shrunk step falls below dt_min ends the solve at once as a blow-up
    # (not an underflow, nor one more trial): from 0.06, one trial (1 + 6 calls), dt 0.012.
    calls.clear()
    with pytest.raises(NonFiniteStateError, match=r"t=0\.75 .*dt=0\.012\)"):
        odeint(f, y0, t, options={"per_sample": True, "sync_every": 1, "first_step": 0.06,
                                  "controller": IController(dt_min=0.05)})
    assert len(calls) == 7


@torch.no_grad()
def test_graph_outputs_are_not_overwritten_by_the_next_replay(eager_graphs) -> None:  # type: ignore[no-untyped-def]
    """The graph's state lives in static buffers that the next replay overwrites: a solve's
    outputs must be copies. y' = 1 from y0 gives y0 + t."""
    f = _One()
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    first = odeint(f, torch.zeros(3, 1, dtype=F64), t, options={"device_loop": True, **EAGER})
    stats = SolveStats()
    second = odeint(f, torch.full((3, 1), 5.0, dtype=F64), t, stats=stats,
                    options={"device_loop": True, **EAGER})
    assert stats.cuda_graph_used and len(eager_graphs.GRAPHS) == 1
    assert float((first[:, :, 0] - t[:, None]).abs().max()) <= 1e-15
    assert float((second[:, :, 0] - 5.0 - t[:, None]).abs().max()) <= 1e-15


@torch.no_grad()
def test_a_replaced_parameter_gets_a_new_graph(eager_graphs) -> None:  # type: ignore[no-untyped-def]
    """A graph reads its parameters' memory: a parameter replaced by a new tensor (not updated
    in place) must not replay the old graph, so the cache gets a second entry."""
    f = _Mlp()
    t = torch.tensor([0.0, 1.0], dtype=F64)
    odeint(f, _mixed_batch(), t, options={"device_loop": True, **EAGER})
    f.w2 = nn.Parameter(f.w2.detach() * 0.5)
    odeint(f, _mixed_batch(), t, options={"device_loop": True, **EAGER})
    assert len(eager_graphs.GRAPHS) == 2


class _CountedOne(nn.Module):
    """y' = 1 that counts its calls (compiled code calls the module raw, uncounted by stats)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones((), dtype=F64))
        self.calls = 0

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.w * torch.ones_like(y)


@torch.no_grad()
def test_compiled_block_path_with_an_identity_compile(eager_graphs, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """compile=True with torch.compile replaced by a counting identity: the loop's
    compiled-blocks path (cache, compiled start on reuse, blocks of sync_every and of one
    attempt, evaluation counts) runs on CPU in milliseconds. Counts by hand as above:
    QUARTERS with sync_every=4 makes a block of 4 attempts and one of 1, so func is called
    1 + 5 * 6 = 31 times, and the solve is exact (y = y0 + t)."""
    from deeplimits.ode import _compiled

    ran: list[int] = []

    def identity(fn, device):  # type: ignore[no-untyped-def]
        def run(*args):  # type: ignore[no-untyped-def]
            ran.append(1)
            return fn(*args)

        return run

    monkeypatch.setattr(_compiled, "_fresh_compile", identity)
    f = _CountedOne()
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    # (y0, capture, compiled calls): the first solve starts eagerly and compiles its two
    # blocks; the second reuses the cached start too; a graph's replays run them (after the
    # capture's warm-ups, uncounted here), so its second solve calls the module 31 times too.
    cases = ((0.0, {}, 2), (2.0, {}, 3), (0.0, EAGER, None), (1.0, EAGER, 3))
    for y0, capture, calls in cases:
        stats = SolveStats()
        ran.clear()
        f.calls = 0
        ys = odeint(f, torch.full((2, 1), y0, dtype=F64), t, stats=stats,
                    options={**QUARTERS, "compile": True, "sync_every": 4, **capture})
        assert stats.compiled and stats.cuda_graph_used == bool(capture)
        assert (stats.accepted_steps, stats.rejected_steps, stats.nfe_forward) == (5, 0, 31)
        assert float((ys[:, :, 0] - y0 - t[:, None]).abs().max()) <= 1e-15
        if calls is not None:
            assert (len(ran), f.calls) == (calls, 31)
    # one compiled entry per capture backend (none, eager), the second solve reused the first
    assert len(eager_graphs.COMPILED) == 2 and len(eager_graphs.GRAPHS) == 1
    # compiled code is keyed by module (not by parameter addresses: torch.compile guards
    # those itself): a second module gets its own entry, a replaced parameter does not
    g = _CountedOne()
    odeint(g, torch.zeros(2, 1, dtype=F64), t, options={**QUARTERS, "compile": True})
    g.w = nn.Parameter(torch.ones((), dtype=F64))
    odeint(g, torch.zeros(2, 1, dtype=F64), t, options={**QUARTERS, "compile": True})
    assert len(eager_graphs.COMPILED) == 3
    # per-sample rows, with their own output times: each row y0 + (t - t0)
    for rows in (t.expand(2, -1), torch.tensor([[0.0, 0.5, 1.0], [0.25, 0.5, 2.0]], dtype=F64)):
        stats = SolveStats()
        ys = odeint(f, torch.zeros(2, 1, dtype=F64), rows, stats=stats,
                    options={**QUARTERS, "compile": True, "per_sample": True})
        assert stats.compiled and stats.nfe_per_sample is not None
        assert float((ys[:, :, 0].T - (rows - rows[:, :1])).abs().max()) <= 1e-15


def test_checkpointed_per_sample_solve_sees_every_attempt() -> None:
    """odeint_checkpoint on the device loop watches every attempt: y_i' = -k_i y_i gives
    d y_i(T) / d y_i(0) = exp(-k_i T), with each row's own step count."""
    k = torch.tensor([1.0, 30.0], dtype=F64)
    y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.3], dtype=F64)
    plain, stats = SolveStats(), SolveStats()
    with torch.no_grad():
        odeint(lambda t, y: -k * y, y0, t, rtol=1e-9, atol=1e-12, stats=plain,
               options={"per_sample": True})
    ys = odeint_checkpoint(lambda t, y: -k * y, y0, t, rtol=1e-9, atol=1e-12, stats=stats,
                           params=(), execution=ExecutionOptions(per_sample=True),
                           checkpoints=4)
    ys[-1].sum().backward()
    assert float((y0.grad - torch.exp(-k * 0.3)).abs().max()) < 1e-8  # type: ignore[operator]
    assert torch.equal(stats.nfe_per_sample, plain.nfe_per_sample)  # type: ignore[arg-type]
    assert stats.nfe_recompute > 0


@pytest.mark.parametrize("jumps", [[0.5], [0.5, 1.0]])
@pytest.mark.parametrize("loop", ["device_loop", "per_sample"])
def test_a_jump_time_moves_no_evaluation_past_the_end(loop: str, jumps: list[float]) -> None:
    """With a jump at 0.5 the step to it sees its left limit and the next starts from its
    right limit; the last step, to t = 1, is no jump (forced times count strictly inside
    the span, also a jump time at the end itself): its stages at c = 1 see t = 1 itself,
    not its left limit. The right-limit evaluation, made for every row (branch-free) and used
    only at a jump, is at the step's end itself for the other rows, so nothing is evaluated
    outside the span (it was one ulp past t = 1), forwards or backwards in time."""
    seen: list[float] = []

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen.extend(t.reshape(-1).tolist())
        return torch.ones_like(y)

    odeint(f, torch.zeros(2, 1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
           options={loop: True, "jump_t": jumps, "sync_every": 1})
    assert min(seen) == 0.0 and max(seen) == 1.0
    assert math.nextafter(0.5, 0.0) in seen and math.nextafter(0.5, 1.0) in seen
    seen.clear()
    odeint(f, torch.zeros(2, 1, dtype=F64), torch.tensor([1.0, 0.0], dtype=F64),
           options={loop: True, "jump_t": [0.5, 0.0], "sync_every": 1})
    assert min(seen) == 0.0 and max(seen) == 1.0
    assert math.nextafter(0.5, 0.0) in seen and math.nextafter(0.5, 1.0) in seen


@pytest.mark.parametrize("loop", ["device_loop", "per_sample"])
def test_the_starting_step_probe_stays_inside_the_span(loop: str) -> None:
    """y' = 1 from y0 = 1e4 on [1, 2]: the starting-step heuristic's first guess
    0.01 * ||y0 / scale|| / ||f0 / scale|| = 0.01 * 1e4 = 100 is capped by the span
    |t_end - t0| = 1, so its probe evaluation lands at t0 + 1 = 2 and never past it."""
    seen: list[float] = []

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen.extend(t.reshape(-1).tolist())
        return torch.ones_like(y)

    ys = odeint(f, torch.full((2, 1), 1e4, dtype=F64), torch.tensor([1.0, 2.0], dtype=F64),
                options={loop: True, "sync_every": 1})
    assert min(seen) == 1.0 and max(seen) == 2.0
    assert ys[-1].flatten().tolist() == pytest.approx([1e4 + 1.0] * 2, rel=1e-15)


@pytest.mark.parametrize("loop", ["device_loop", "per_sample"])
def test_a_rejected_step_to_a_jump_retries_from_its_own_start(loop: str) -> None:
    """y' = cos(20 t), y(0) = 0 (y = sin(20 t) / 20) with a jump time at 0.5 and a first
    step of 0.5 that is rejected: the retry starts from f(0, y0) again (the right limit at
    the jump belongs to an accepted step only), with the host loop's steps."""

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.cos(20 * t).reshape(-1, 1) * torch.ones_like(y)

    y0 = torch.zeros(2, 1, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    opts = {"jump_t": [0.5], "first_step": 0.5}
    host, dev = SolveStats(), SolveStats()
    odeint(f, y0, t, rtol=1e-10, atol=1e-12, options=opts, stats=host)
    ys = odeint(f, y0, t, rtol=1e-10, atol=1e-12, options={**opts, loop: True}, stats=dev)
    assert host.rejected_steps > 0
    assert (dev.accepted_steps, dev.rejected_steps) == (host.accepted_steps, host.rejected_steps)
    assert float((ys[-1] - math.sin(20.0) / 20).abs().max()) <= 1e-9


def test_per_sample_backprop_is_finite_after_a_row_finishes_first() -> None:
    """y_i' = -k_i y_i: d y_i(T) / d y_i(0) = exp(-k_i T). The slow row (k = 1) finishes
    steps before the fast one (k = 30) and then attempts zero-length steps; with an output
    inside the span those must not turn its gradient into NaN."""
    k = torch.tensor([[1.0], [30.0]], dtype=F64)
    y0 = torch.ones(2, 1, dtype=F64, requires_grad=True)
    ys = odeint(lambda t, y: -k * y, y0, torch.tensor([0.0, 0.15, 0.3], dtype=F64),
                rtol=1e-10, atol=1e-12, options={"per_sample": True})
    (g,) = torch.autograd.grad(ys[-1].sum(), y0)
    assert float((g - torch.exp(-k * 0.3)).abs().max()) <= 1e-8


def test_step_counts_add_up_over_solves_sharing_one_stats_object() -> None:
    """A ``SolveStats`` passed to several solves sums their counts, on the device loop as on the
    host loop: two forward solves of a problem whose rate jumps near t = 1/2 (rejections), and an
    adjoint whose backward pass solves the two intervals of t = (0, 1/2, 1) one after the other."""

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -y * (1 + 100 * torch.sigmoid((t - 0.5) * 400))

    y0 = torch.tensor([[1.0], [2.0]], dtype=F64)
    counts = {}
    for loop in (False, True):
        once, twice = SolveStats(), SolveStats()
        for stats in (once, twice, twice):
            odeint(f, y0, torch.tensor([0.0, 1.0], dtype=F64), rtol=1e-6, atol=1e-9,
                   options={"device_loop": loop}, stats=stats)
        assert once.rejected_steps > 0
        assert (twice.accepted_steps, twice.rejected_steps) == (
            2 * once.accepted_steps, 2 * once.rejected_steps)
        adj, single = SolveStats(), SolveStats()
        y = y0.clone().requires_grad_(True)
        ys = odeint_adjoint(f, y, torch.tensor([0.0, 0.5, 1.0], dtype=F64), rtol=1e-6, atol=1e-9,
                            options={"device_loop": loop}, adjoint_options={"device_loop": loop},
                            adjoint_params=(), stats=adj)
        ys.sum().backward()
        # the second interval alone, backwards, as a plain solve: a part of the backward pass
        odeint(lambda t, a: -f(t, a), y0, torch.tensor([1.0, 0.5], dtype=F64), rtol=1e-6,
               atol=1e-9, options={"device_loop": loop}, stats=single)
        assert adj.backward_accepted_steps > single.accepted_steps > 0
        counts[loop] = (once.accepted_steps, once.rejected_steps, adj.accepted_steps,
                        adj.rejected_steps, adj.backward_accepted_steps,
                        adj.backward_rejected_steps)
    assert counts[True] == counts[False]


def test_step_times_are_not_jumps_on_the_device_loop() -> None:
    """``step_t`` only makes a step end there; ``jump_t`` also restarts with a fresh evaluation
    (the right limit). dopri5 (FSAL) on y' = -y: a step time costs no evaluation (the same
    counts as without it, on both loops); a jump time costs the host loop one (the fresh first
    stage) and the branch-free device loop one per attempt (its attempts all evaluate the
    right limit, masked where no jump is crossed)."""
    y0 = torch.tensor([[1.0], [2.0]], dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    counts = {}
    for key in (None, "step_t", "jump_t"):
        for loop in (False, True):
            stats = SolveStats()
            opts: dict[str, Any] = {"device_loop": loop}
            if key is not None:
                opts[key] = [0.4]
            odeint(lambda s, y: -y, y0, t, rtol=1e-6, atol=1e-9, stats=stats, options=opts)
            counts[key, loop] = (stats.nfe_forward, stats.accepted_steps, stats.rejected_steps)
    nfe, steps, rejected = counts[None, False]
    assert rejected == 0
    assert counts["step_t", False] == counts["step_t", True] == counts[None, True] == (
        nfe, steps, 0)
    assert counts["jump_t", False] == (nfe + 1, steps, 0)
    assert counts["jump_t", True] == (nfe + steps, steps, 0)


def test_a_step_time_beside_jump_times_keeps_its_left_limit_stage() -> None:
    """With jump times present the device loop flags each forced time; a ``step_t`` must not be
    flagged: its step starts from the FSAL stage f(0.4, y), the left value of a rate that drops
    just after 0.4 (``t <= 0.4``), exactly as the host loop does, while a jump would restart
    from the right limit. Same steps and the same state as the host loop."""

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.where(t <= 0.4, -y, -3.0 * y)

    y0 = torch.tensor([[1.0], [2.0]], dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    out = {}
    for loop in (False, True):
        stats = SolveStats()
        ys = odeint(f, y0, t, rtol=1e-6, atol=1e-9, stats=stats,
                    options={"device_loop": loop, "step_t": [0.4], "jump_t": [0.7]})
        out[loop] = (ys[-1], stats.accepted_steps, stats.rejected_steps)
    assert out[True][1:] == out[False][1:]
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-13, atol=0)
