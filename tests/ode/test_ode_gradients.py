"""Float64 gradients: backprop, adjoint, seminorm adjoint, reversible Heun, finite differences."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deeplimits.ode import SolveStats, odeint, odeint_adjoint

F64 = torch.float64


class _Field(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = nn.Parameter(torch.randn(8, 3, generator=g, dtype=torch.float64) * 0.5)
        self.b1 = nn.Parameter(torch.randn(8, generator=g, dtype=torch.float64) * 0.1)
        self.w2 = nn.Parameter(torch.randn(3, 8, generator=g, dtype=torch.float64) * 0.5)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.tanh(y @ self.w1.T + self.b1) @ self.w2.T * torch.cos(t)


def _loss(ys: torch.Tensor) -> torch.Tensor:
    return (ys**2).sum() + ys[1].sum()


def _setup() -> tuple[_Field, torch.Tensor, torch.Tensor]:
    f = _Field()
    y0 = torch.tensor([[0.5, -0.3, 0.8], [0.1, 0.2, -0.4]], dtype=torch.float64,
                      requires_grad=True)
    t = torch.tensor([0.0, 0.6, 1.2], dtype=torch.float64, requires_grad=True)
    return f, y0, t


def _grads(ys: torch.Tensor, f: _Field, *inputs: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(_loss(ys), (*inputs, *f.parameters())))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _finite_differences(f: _Field, y0: torch.Tensor, t: torch.Tensor) -> list[torch.Tensor]:
    eps = 1e-6

    def loss() -> float:
        with torch.no_grad():
            return float(_loss(odeint(f, y0, t, rtol=1e-12, atol=1e-14)))

    out = []
    for x in (y0, t, f.b1):
        g = torch.zeros_like(x)
        flat = x.data.view(-1)
        for i in range(flat.numel()):
            old = float(flat[i])
            flat[i] = old + eps
            up = loss()
            flat[i] = old - eps
            down = loss()
            flat[i] = old
            g.view(-1)[i] = (up - down) / (2 * eps)
        out.append(g)
    return out


def test_adjoint_backprop_seminorm_and_finite_differences_agree() -> None:
    f, y0, t = _setup()
    ys = odeint_adjoint(f, y0, t, rtol=1e-10, atol=1e-12)
    adj = _grads(ys, f, y0, t)
    stats_semi = SolveStats()
    stats_rms = SolveStats()
    ys = odeint_adjoint(f, y0, t, rtol=1e-10, atol=1e-12, stats=stats_rms)
    _grads(ys, f, y0)
    ys = odeint_adjoint(f, y0, t, rtol=1e-10, atol=1e-12, adjoint_options={"norm": "seminorm"},
                        stats=stats_semi)
    semi = _grads(ys, f, y0, t)
    ys = odeint(f, y0, t, rtol=1e-10, atol=1e-12)
    bp = _grads(ys, f, y0)
    fd = _finite_differences(f, y0, t)
    # Finite differences for y0, t and one parameter (b1) keep the test fast.
    for a, s, d in zip([adj[0], adj[1], adj[3]], [semi[0], semi[1], semi[3]], fd, strict=True):
        assert _rel(a, d) <= 1e-5
        assert _rel(s, d) <= 1e-5
    for a, b in zip([adj[0], *adj[2:]], bp, strict=True):
        assert _rel(a, b) <= 1e-7
    # The seminorm ignores the parameter channels, so it never needs more backward steps.
    assert stats_semi.nfe_backward <= stats_rms.nfe_backward
    assert stats_rms.nfe_backward > 0


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_adjoint_backwards_in_time_matches_backprop(method: str) -> None:
    f, y0, _ = _setup()
    t = torch.tensor([1.0, 0.3, -0.5], dtype=torch.float64)
    opts = {"step_size": 0.01} if method == "rk4" else None
    ys = odeint_adjoint(f, y0, t, rtol=1e-10, atol=1e-12, method=method, options=opts)
    adj = _grads(ys, f, y0)
    ys = odeint(f, y0, t, rtol=1e-10, atol=1e-12, method=method, options=opts)
    bp = _grads(ys, f, y0)
    for a, b in zip(adj, bp, strict=True):
        assert _rel(a, b) <= 1e-6


def test_adjoint_with_tuple_state_matches_backprop() -> None:
    w = torch.tensor([[0.0, 1.0], [-1.0, -0.1]], dtype=torch.float64, requires_grad=True)

    def f(t: torch.Tensor, y: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        x, v = y
        return w[0, 1] * v, w[1, 0] * x + w[1, 1] * v

    x0 = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    v0 = torch.tensor([0.0], dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0.0, 2.0, 3, dtype=torch.float64)
    xs, vs = odeint_adjoint(f, (x0, v0), t, adjoint_params=(w,), rtol=1e-10, atol=1e-12)
    ga = torch.autograd.grad(xs.sum() + vs[-1].sum(), (x0, v0, w))
    xs, vs = odeint(f, (x0, v0), t, rtol=1e-10, atol=1e-12)
    gb = torch.autograd.grad(xs.sum() + vs[-1].sum(), (x0, v0, w))
    for a, b in zip(ga, gb, strict=True):
        assert _rel(a, b) <= 1e-7


@pytest.mark.parametrize("step_size", [0.05, 0.01])
def test_reversible_heun_gradient_equals_backprop_through_its_own_steps(step_size: float) -> None:
    f, y0, t = _setup()
    t = t.detach()
    ys = odeint(f, y0, t, method="reversible_heun", options={"step_size": step_size})
    rev = _grads(ys, f, y0)
    ys = odeint(f, y0, t, method="reversible_heun",
                options={"step_size": step_size, "reversible_backward": False})
    direct = _grads(ys, f, y0)
    for a, b in zip(rev, direct, strict=True):
        assert float((a - b).abs().max()) <= 1e-10


def test_reversible_heun_backwards_in_time_matches_direct_backprop() -> None:
    f, y0, _ = _setup()
    t = torch.tensor([1.0, 0.0], dtype=torch.float64)
    stats = SolveStats()
    ys = odeint_adjoint(f, y0, t, method="reversible_heun", options={"step_size": 0.02},
                        stats=stats)
    rev = _grads(ys, f, y0)
    assert stats.nfe_backward == stats.nfe_forward  # one evaluation per step plus the initial one
    ys = odeint(f, y0, t, method="reversible_heun",
                options={"step_size": 0.02, "reversible_backward": False})
    direct = _grads(ys, f, y0)
    for a, b in zip(rev, direct, strict=True):
        assert float((a - b).abs().max()) <= 1e-10


def test_gradcheck_through_fixed_step_solver() -> None:
    w = torch.tensor([[-0.3, 1.0], [-1.0, -0.2]], dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)

    def run(y0: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return odeint(lambda t, y: torch.tanh(w @ y), y0, t, method="rk4",
                      options={"step_size": 0.1})

    assert torch.autograd.gradcheck(run, (y0, w))


def test_gradcheck_through_adjoint_including_time() -> None:
    w = torch.tensor([[-0.3, 1.0], [-1.0, -0.2]], dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64, requires_grad=True)

    def run(y0: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return odeint_adjoint(lambda t, y: torch.tanh(w @ y) * (1 + t), y0, t,
                              adjoint_params=(w,), rtol=1e-12, atol=1e-14)

    assert torch.autograd.gradcheck(run, (y0, t, w), atol=1e-6)


def test_gradcheck_through_reversible_heun() -> None:
    lin = nn.Linear(2, 2).double()

    class F(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = lin

        def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.lin(y))

    f = F()
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)

    def run(y0: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        del w  # a parameter of f: gradcheck perturbs it in place
        return odeint(f, y0, t, method="reversible_heun", options={"step_size": 0.1})

    assert torch.autograd.gradcheck(run, (y0, lin.weight))


class _TimeLinear(torch.nn.Module):
    """``dy/dt = W y (1 + 0.3 t)``, plus a parameter that nothing uses."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([[-0.5, 1.0], [-1.0, -0.3]], dtype=F64))
        self.unused = torch.nn.Parameter(torch.ones(3, dtype=F64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y @ self.w.T * (1 + 0.3 * t)


def _fd_time_grad(f: torch.nn.Module, y0: torch.Tensor, t: torch.Tensor) -> list[float]:
    """Central differences of sum(y(t)^2) in each t_i, from tight dopri5 solves."""
    out = []
    for i in range(t.numel()):
        e = torch.zeros_like(t)
        e[i] = 1e-6
        with torch.no_grad():
            a = odeint(f, y0, t + e, rtol=1e-12, atol=1e-14).square().sum()
            b = odeint(f, y0, t - e, rtol=1e-12, atol=1e-14).square().sum()
        out.append(float((a - b) / 2e-6))
    return out


@pytest.mark.parametrize(
    "method", ["euler", "midpoint", "rk4", "bosh3", "dopri5", "tsit5", "reversible_heun"]
)
def test_plain_odeint_gives_time_gradients_that_match_finite_differences(method: str) -> None:
    f = _TimeLinear()
    y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    t = torch.tensor([0.2, 0.7, 1.5], dtype=F64, requires_grad=True)
    fixed = method in ("euler", "midpoint", "rk4", "reversible_heun")
    step = {"euler": 1e-4, "midpoint": 1e-4}.get(method, 1e-3)
    ys = odeint(f, y0, t, rtol=1e-10, atol=1e-12, method=method,
                options={"step_size": step} if fixed else None)
    gt, gy = torch.autograd.grad(ys.square().sum(), (t, y0))
    want = _fd_time_grad(f, y0.detach(), t.detach())
    tol = {"euler": 1e-3, "reversible_heun": 2e-6}.get(method, 1e-7)
    assert gt.tolist() == pytest.approx(want, rel=tol, abs=tol)
    assert gy is not None and float(gy.abs().sum()) > 0


def test_time_gradients_of_plain_odeint_equal_the_adjoints() -> None:
    f = _TimeLinear()
    y0 = torch.tensor([1.0, 0.5], dtype=F64)
    grads = []
    for solve in (odeint, odeint_adjoint):
        t = torch.tensor([0.0, 0.4, 1.0], dtype=F64, requires_grad=True)
        ys = solve(f, y0, t, rtol=1e-10, atol=1e-12)
        grads.append(torch.autograd.grad(ys[1:].sum(), t)[0])
    assert float((grads[0] - grads[1]).abs().max()) <= 1e-7


@pytest.mark.parametrize("solve", [odeint, odeint_adjoint])
def test_t_in_another_floating_dtype_is_accepted_and_gets_its_gradient(solve) -> None:  # type: ignore[no-untyped-def]
    f = _TimeLinear()
    y0 = torch.tensor([1.0, 0.5], dtype=F64)
    t32 = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float32, requires_grad=True)
    ys = solve(f, y0, t32, rtol=1e-9, atol=1e-11)
    assert ys.dtype == F64
    with torch.no_grad():
        ref = solve(f, y0, t32.detach().double(), rtol=1e-9, atol=1e-11)
    assert float((ys.detach() - ref).abs().max()) <= 1e-12
    ys.sum().backward()
    assert t32.grad is not None and t32.grad.dtype == torch.float32
    assert float(t32.grad.abs().sum()) > 0


def test_adjoint_gives_zeros_not_none_to_parameters_that_do_not_matter() -> None:
    f = _TimeLinear()
    ys = odeint_adjoint(f, torch.tensor([1.0, 0.5], dtype=F64),
                        torch.tensor([0.0, 1.0], dtype=F64))
    ys.sum().backward()
    assert f.unused.grad is not None and torch.equal(f.unused.grad, torch.zeros(3, dtype=F64))
    assert f.w.grad is not None and float(f.w.grad.abs().sum()) > 0
