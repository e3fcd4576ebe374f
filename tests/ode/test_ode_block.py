"""ODEBlock: forward solve z0 -> z(t1) and the statistics of the last call."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deeplimits.errors import InvalidArgumentError, InvalidTypeError, UnknownNameError
from deeplimits.ode import ODEBlock, odeint


class _Decay(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rate = nn.Parameter(torch.tensor(0.7, dtype=torch.float64))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return -self.rate * z


@pytest.mark.parametrize("adjoint", [True, False])
def test_block_returns_the_state_at_t1_and_counts_evaluations(adjoint: bool) -> None:
    block = ODEBlock(_Decay(), t1=2.0, adjoint=adjoint, rtol=1e-9, atol=1e-11)
    z0 = torch.ones(3, 2, dtype=torch.float64, requires_grad=True)
    z1 = block(z0)
    assert z1.shape == (3, 2)
    assert torch.allclose(z1, z0 * torch.exp(torch.tensor(-1.4, dtype=torch.float64)), rtol=1e-7)
    assert block.stats.nfe_forward > 0 and block.stats.accepted_steps > 0
    z1.sum().backward()
    if adjoint:
        assert block.stats.nfe_backward > 0 and block.stats.backward_accepted_steps > 0
    else:
        assert block.stats.nfe_backward == 0
    # d z(t1)/d rate = -t1 z(t1)
    expected = float((-2.0 * z1).detach().sum())
    assert block.func.rate.grad is not None
    assert abs(float(block.func.rate.grad) - expected) < 1e-6


def test_block_stats_describe_only_the_last_call() -> None:
    block = ODEBlock(_Decay(), method="rk4", options={"step_size": 0.1})
    block(torch.ones(2, dtype=torch.float64))
    block(torch.ones(2, dtype=torch.float64))
    assert block.stats.accepted_steps == 10
    assert block.stats.nfe_forward == 40


def test_block_with_reversible_heun_matches_odeint() -> None:
    f = _Decay()
    block = ODEBlock(f, t1=1.0, method="reversible_heun", options={"step_size": 0.01})
    z0 = torch.ones(2, dtype=torch.float64)
    ref = odeint(f, z0, torch.tensor([0.0, 1.0], dtype=torch.float64), method="reversible_heun",
                 options={"step_size": 0.01})[-1]
    assert torch.equal(block(z0), ref)


def test_block_rejects_bad_configuration() -> None:
    with pytest.raises(InvalidTypeError, match=r"nn\.Module"):
        ODEBlock(lambda t, z: z)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="t1"):
        ODEBlock(_Decay(), t1=0.0)
    with pytest.raises(UnknownNameError, match="dopri5"):
        ODEBlock(_Decay(), method="rk45")


@pytest.mark.parametrize("gradient", ["direct", "adjoint", "checkpoint"])
def test_block_gradient_modes_give_the_same_gradients(gradient: str) -> None:
    block = ODEBlock(_Decay(), t1=2.0, gradient=gradient, rtol=1e-9, atol=1e-11)
    assert block.gradient == gradient and block.adjoint == (gradient == "adjoint")
    assert f"gradient={gradient!r}" in repr(block)
    z0 = torch.ones(3, dtype=torch.float64, requires_grad=True)
    z1 = block(z0)
    z1.sum().backward()
    expected = float((-2.0 * z1).detach().sum())  # d z(t1)/d rate = -t1 z(t1)
    assert abs(float(block.func.rate.grad) - expected) < 1e-6
    recompute = block.stats.nfe_recompute
    assert (recompute > 0) == (gradient == "checkpoint")
    assert (block.stats.nfe_backward > 0) == (gradient == "adjoint")


def test_block_checkpoint_count_and_reversible_mode() -> None:
    block = ODEBlock(_Decay(), method="rk4", options={"step_size": 0.05}, gradient="checkpoint",
                     checkpoints=2)
    block(torch.ones(2, dtype=torch.float64, requires_grad=True)).sum().backward()
    # 20 steps, one spare slot: every step re-run at least once and most of them more.
    assert block.stats.nfe_recompute > 20 * 4
    rev = ODEBlock(_Decay(), method="reversible_heun", options={"step_size": 0.1},
                   gradient="reversible")
    z0 = torch.ones(2, dtype=torch.float64)
    assert torch.equal(rev(z0), ODEBlock(_Decay(), method="reversible_heun",
                                         options={"step_size": 0.1}, adjoint=True)(z0))


def test_block_adjoint_alias_and_bad_gradient_modes() -> None:
    assert ODEBlock(_Decay()).gradient == "adjoint"
    assert ODEBlock(_Decay(), adjoint=False).gradient == "direct"
    assert ODEBlock(_Decay(), adjoint=False, gradient="checkpoint").gradient == "checkpoint"
    with pytest.raises(InvalidArgumentError, match="adjoint=True contradicts"):
        ODEBlock(_Decay(), adjoint=True, gradient="direct")
    with pytest.raises(UnknownNameError, match="checkpoint"):
        ODEBlock(_Decay(), gradient="checkpointed")
    with pytest.raises(InvalidArgumentError, match="reversible_heun"):
        ODEBlock(_Decay(), gradient="reversible")
    with pytest.raises(InvalidArgumentError, match="checkpoints=4"):
        ODEBlock(_Decay(), checkpoints=4)
    with pytest.raises(InvalidTypeError, match="adjoint"):
        ODEBlock(_Decay(), adjoint="yes")  # type: ignore[arg-type]
