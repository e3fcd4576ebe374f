"""What ``options={"compile": True}`` costs up front: the first solves, from a cold cache.

    python benchmarks/compile_time.py [--threads 1]

Runs itself in a fresh subprocess whose inductor cache directory is a new temporary folder (so
nothing compiled by an earlier run is reused), and times the first three compiled solves of the
small case of ``ode_peers.py`` (dopri5, batch 16, 2-64-64-2 MLP, rtol 1e-6) against the eager
host loop. The first solve compiles the block of attempts, the second the start; from the third
on the compiled code runs. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

CHILD = "DEEPLIMITS_COMPILE_TIME_CHILD"


def child(threads: int) -> None:
    import torch
    from torch import nn

    from deeplimits.ode import SolveStats, odeint

    torch.set_num_threads(threads)
    torch.manual_seed(0)

    class F(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                                     nn.Linear(64, 2))

        def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.net(y)

    f = F()
    y0 = torch.randn(16, 2)
    t = torch.tensor([0.0, 1.0])
    print("| solve | compiled (s) | host loop (s) | compiled flag |")
    print("|---|---|---|---|")
    with torch.no_grad():
        for i in range(1, 5):
            stats = SolveStats()
            a = time.perf_counter()
            odeint(f, y0, t, rtol=1e-6, atol=1e-8, options={"compile": True}, stats=stats)
            comp = time.perf_counter() - a
            a = time.perf_counter()
            odeint(f, y0, t, rtol=1e-6, atol=1e-8)
            host = time.perf_counter() - a
            print(f"| {i} | {comp:.4f} | {host:.4f} | {stats.compiled} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if os.environ.get(CHILD):
        child(args.threads)
        return
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, CHILD: "1", "TORCHINDUCTOR_CACHE_DIR": cache}
        subprocess.run([sys.executable, __file__, "--threads", str(args.threads)], env=env,
                       check=True)


if __name__ == "__main__":
    main()
