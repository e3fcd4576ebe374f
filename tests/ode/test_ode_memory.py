"""Memory: bytes saved for backward, counted with saved_tensors_hooks, at 100 vs 1000 steps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deeplimits.ode import odeint, odeint_adjoint


class _Field(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4).double()

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.lin(y))


def _saved_bytes(solve, n_steps: int) -> int:  # type: ignore[no-untyped-def]
    f = _Field()
    y0 = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    total = 0

    def pack(x: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += x.numel() * x.element_size()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        ys = solve(f, y0, t, 1.0 / n_steps)
    ys.sum().backward()  # the graph is usable
    return total


def _plain(f, y0, t, h):  # type: ignore[no-untyped-def]
    return odeint(f, y0, t, method="rk4", options={"step_size": h})


def _adjoint(f, y0, t, h):  # type: ignore[no-untyped-def]
    return odeint_adjoint(f, y0, t, method="rk4", options={"step_size": h})


def _reversible(f, y0, t, h):  # type: ignore[no-untyped-def]
    return odeint(f, y0, t, method="reversible_heun", options={"step_size": h})


@pytest.mark.parametrize("solve", [_adjoint, _reversible], ids=["adjoint", "reversible_heun"])
def test_saved_bytes_do_not_depend_on_the_number_of_steps(solve) -> None:  # type: ignore[no-untyped-def]
    assert _saved_bytes(solve, 100) == _saved_bytes(solve, 1000)


def test_plain_odeint_saved_bytes_grow_linearly_with_steps() -> None:
    b100, b1000 = _saved_bytes(_plain, 100), _saved_bytes(_plain, 1000)
    assert 9.0 <= b1000 / b100 <= 11.0
