"""torch.compile of a model with an ODE block (fixed-step methods) runs and matches eager mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deeplimits.ode import ODEBlock

pytestmark = pytest.mark.compiles


class _F(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 8))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def _model(adjoint: bool, method: str) -> nn.Module:
    torch.manual_seed(0)
    block = ODEBlock(_F(), method=method, options={"step_size": 0.25}, adjoint=adjoint)
    return nn.Sequential(nn.Linear(4, 8), block, nn.Linear(8, 3))


def _grads(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    model.zero_grad()
    out = model(x)
    out.square().sum().backward()
    return out.detach(), torch.cat([p.grad.reshape(-1) for p in model.parameters()])


# aot_eager runs Dynamo's capture and AOTAutograd (the parts that break on solver code);
# inductor adds code generation, which costs about 60 s on 2 cores for the unrolled
# backprop graph, so it is checked on the adjoint block, whose solve is not traced by autograd.
@pytest.mark.parametrize(
    ("backend", "adjoint", "method"),
    [
        ("aot_eager", False, "rk4"),
        ("aot_eager", True, "rk4"),
        ("aot_eager", False, "midpoint"),
        ("inductor", True, "rk4"),
    ],
)
def test_compiled_ode_model_matches_eager_outputs_and_gradients(backend, adjoint, method):
    torch._dynamo.reset()
    x = torch.randn(5, 4)
    out_ref, g_ref = _grads(_model(adjoint, method), x)
    compiled = torch.compile(_model(adjoint, method), backend=backend)
    out, g = _grads(compiled, x)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-6)
