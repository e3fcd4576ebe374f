"""Train an ODE network on scikit-learn's digits with DistributedDataParallel.

One process per GPU (or per CPU process with gloo):

    torchrun --nproc_per_node=4 examples/ddp_ode_digits.py --device cuda --epochs 20
    torchrun --nproc_per_node=2 examples/ddp_ode_digits.py --device cpu --epochs 2

Each process trains on its shard of the training set (DistributedSampler); DDP averages the
gradients, which the adjoint method computes in O(1) memory per process. Rank 0 prints the test
accuracy. Without torchrun it runs as a single process.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from deeplimits.ode import ODEBlock


class Dynamics(nn.Module):
    """dz/dt = f(t, z): a tanh MLP with the time as an extra input."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.Tanh(), nn.Linear(hidden, dim))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        tt = t.expand(z.shape[0], 1)  # (batch, 1)
        return self.net(torch.cat([z, tt], dim=1))  # (batch, dim)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    distributed = "WORLD_SIZE" in os.environ
    if distributed:
        dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local}" if args.device == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)

    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)  # (1797, 64)
    y = torch.tensor(digits.target)
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=gen)
    train, test = perm[:1400], perm[1400:]
    data = TensorDataset(x[train], y[train])
    sampler = DistributedSampler(data, world, rank, seed=0) if distributed else None
    loader = DataLoader(data, args.batch_size, sampler=sampler, shuffle=sampler is None)

    torch.manual_seed(0)  # same initial weights on every rank
    model: nn.Module = nn.Sequential(
        nn.Linear(64, 32),
        ODEBlock(Dynamics(32, 64), t1=1.0, method="dopri5", rtol=1e-4, atol=1e-5, adjoint=True),
        nn.Linear(32, 10),
    ).to(device)
    if distributed:
        model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(args.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        for xb, yb in loader:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xb.to(device)), yb.to(device))
            loss.backward()
            opt.step()
        if rank == 0:
            with torch.no_grad():
                acc = (model(x[test].to(device)).argmax(1).cpu() == y[test]).float().mean()
            print(f"epoch {epoch + 1}: loss {loss.item():.3f}, test accuracy {acc.item():.3f}")
    if distributed:
        dist.barrier()  # no rank tears gloo/NCCL down while another is still using it
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
