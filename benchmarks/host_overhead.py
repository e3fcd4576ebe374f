"""Where the CPU host loop's time goes besides the function: per step and per solve.

    python benchmarks/host_overhead.py [--threads 1] [--reps 1000]

dopri5 on the small case of ``ode_peers.py`` (batch 16, state 2) with a cheap right-hand side
(``tanh(y) @ W``: two kernels), solved at several tolerances so that the number of steps
varies. The time spent inside the function is measured (``perf_counter`` around each call)
and subtracted; a least-squares line through (steps, time outside the function) gives the
solver's own cost per step and per solve. For scale: one eager ``add_`` with ``alpha`` on the
same state, and one call of the MLP of ``ode_peers.py`` (``2-64-64-2``).

Prints a markdown table; the numbers go into ``benchmarks/RESULTS.md`` by hand, with the machine
and this command.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch import nn

from deeplimits.ode import SolveStats, odeint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    y0 = torch.randn(16, 2)
    t = torch.tensor([0.0, 1.0])
    w = torch.randn(2, 2) * 0.5
    inside = [0.0]
    clock = time.perf_counter

    def f(t_: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        a = clock()
        out = torch.tanh(y) @ w
        inside[0] += clock() - a
        return out

    rows = []
    with torch.no_grad():
        for rtol in (1e-3, 1e-6, 1e-8, 1e-9, 1e-10):
            stats = SolveStats()
            odeint(f, y0, t, rtol=rtol, atol=rtol * 1e-2, stats=stats)
            outside = []
            for _ in range(args.reps):
                inside[0] = 0.0
                a = clock()
                odeint(f, y0, t, rtol=rtol, atol=rtol * 1e-2)
                outside.append(clock() - a - inside[0])
            steps = stats.accepted_steps + stats.rejected_steps
            rows.append((rtol, steps, stats.nfe_forward, statistics.median(outside)))
        steps = np.array([r[1] for r in rows], dtype=float)
        outs = np.array([r[3] for r in rows])
        per_step, per_solve = np.polyfit(steps, outs, 1)

        k = torch.randn(16, 2)
        buf = y0.clone()

        def timed(fn, n: int = 20000) -> float:  # type: ignore[no-untyped-def]
            for _ in range(200):
                fn()
            ts = []
            for _ in range(n):
                a = clock()
                fn()
                ts.append(clock() - a)
            return statistics.median(ts)

        add_us = timed(lambda: buf.add_(k, alpha=1e-3))
        mlp = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                            nn.Linear(64, 2))
        call_us = timed(lambda: mlp(y0), 5000)
    print(f"threads {args.threads}, medians of {args.reps} solves")
    print("| rtol | steps (incl. rejected) | nfe | time outside the function (us) |")
    print("|---|---|---|---|")
    for rtol, st, nfe, o in rows:
        print(f"| {rtol:g} | {st} | {nfe} | {o * 1e6:.0f} |")
    print()
    print(f"least squares: {per_step * 1e6:.1f} us per step + {per_solve * 1e6:.1f} us per solve; "
          f"one add_ with alpha {add_us * 1e6:.2f} us; one call of the 2-64-64-2 MLP "
          f"{call_us * 1e6:.1f} us")


if __name__ == "__main__":
    main()
