"""Where a short dopri5 solve spends its time on a GPU: torch.profiler over repeated solves.

    python benchmarks/gpu_profile.py [--batch 16] [--reps 20]

Prints the wall time per solve, the profiler's table of host-side operations (eager aten ops
outside the replayed CUDA graphs, graph launches, synchronisations) and the number of each per
solve. Run by hand on a machine with CUDA; results go into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from deeplimits.ode import SolveStats, odeint


class MLP(nn.Module):
    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh(), nn.Linear(h, d)
        )

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--dim", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    dev = torch.device("cuda")
    torch.manual_seed(0)
    f = MLP(args.dim, args.hidden).to(dev)
    y0 = torch.randn(args.batch, args.dim, device=dev)
    t = torch.tensor([0.0, 1.0], device=dev)

    def solve() -> SolveStats:
        stats = SolveStats()
        with torch.no_grad():
            odeint(f, y0, t, rtol=1e-6, atol=1e-8, method="dopri5", stats=stats)
        return stats

    for _ in range(5):
        stats = solve()
    torch.cuda.synchronize()
    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        solve()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    print(
        f"B={args.batch} {args.dim}-{args.hidden}-{args.hidden}-{args.dim} dopri5: "
        f"{statistics.median(times) * 1e3:.2f} ms per solve (median of {args.reps}), "
        f"nfe {stats.nfe_forward}, accepted {stats.accepted_steps}, "
        f"rejected {stats.rejected_steps}, graph {getattr(stats, 'cuda_graph_used', None)}"
    )
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(args.reps):
            solve()
        torch.cuda.synchronize()
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=25))
    print("per solve (host side): calls and self CPU microseconds of the busiest entries")
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:25]
    for e in rows:
        print(
            f"  {e.key:45s} {e.count / args.reps:7.1f} calls  "
            f"{e.self_cpu_time_total / args.reps:9.1f} us"
        )


if __name__ == "__main__":
    main()
