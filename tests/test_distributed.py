"""Training through an ODE block under DistributedDataParallel (gloo, 2 CPU processes launched
with torchrun) gives the gradients of one process on the combined batch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import gc, os, sys
    import torch
    import torch.distributed as dist
    from torch import nn
    from deeplimits.ode import ODEBlock

    class F(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 8))
        def forward(self, t, z):
            return self.net(z)

    def build(method):
        torch.manual_seed(0)
        options = {"step_size": 0.125} if method == "rk4" else None
        return nn.Sequential(
            nn.Linear(4, 8),
            ODEBlock(F(), t1=1.0, method=method, rtol=1e-9, atol=1e-11, adjoint=True,
                     options=options),
            nn.Linear(8, 3),
        ).double()

    def data():
        g = torch.Generator().manual_seed(1)
        x = torch.randn(12, 4, generator=g, dtype=torch.float64)
        return x, torch.randint(0, 3, (12,), generator=g)

    def grads(model, x, y):
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        return torch.cat([p.grad.reshape(-1) for p in model.parameters()])

    out, method = sys.argv[1], sys.argv[2]
    x, y = data()
    if os.environ.get("WORLD_SIZE"):
        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        model = nn.parallel.DistributedDataParallel(build(method))
        part = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
        g = grads(model, x[part], y[part])
        if rank == 0:
            torch.save(g, out)
        # Without a barrier a rank can tear gloo down while the other is still in it: abort.
        # DDP's reducer holds the process group: drop it first, so no gloo thread outlives
        # destroy_process_group into interpreter shutdown ("terminate called without an
        # active exception" under load).
        dist.barrier()
        del model
        gc.collect()
        dist.destroy_process_group()
    else:
        torch.save(grads(build(method), x, y), out)
    """
)


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_ddp_gradients_equal_single_process_on_combined_batch(tmp_path: Path, method: str):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single, ddp = tmp_path / "single.pt", tmp_path / "ddp.pt"
    subprocess.run([sys.executable, str(script), str(single), method], env=env, check=True)
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
        str(ddp),
        method,
    ]
    proc = subprocess.run(launch, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    g_single, g_ddp = torch.load(single), torch.load(ddp)
    # rk4 takes the same steps on every rank: equal to rounding. dopri5 adapts its steps to each
    # rank's half batch, so the two solves differ within the solver tolerance.
    tol = 1e-10 if method == "rk4" else 1e-6
    torch.testing.assert_close(g_ddp, g_single, rtol=tol, atol=tol)


def test_readme_ddp_example_trains_under_torchrun():
    example = Path(__file__).resolve().parents[1] / "examples" / "ddp_ode_digits.py"
    launch = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(example), "--epochs", "1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(launch, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    accuracy = float(proc.stdout.strip().split()[-1])
    assert accuracy > 0.3  # 10 classes: chance is 0.1
