"""Memory and time of the gradient modes against the number of steps.

    python benchmarks/checkpoint.py                      # defaults below
    python benchmarks/checkpoint.py --steps 50 100 --batch 8 --dim 4 --hidden 16   # a quick look
    python benchmarks/checkpoint.py --rss --steps 200 800 --dim 512 --hidden 128   # process RSS

An MLP neural ODE ``dy/dt = mlp(y)`` (float64, ``y`` of shape ``(batch, dim)``) on ``t in
[0, 1]`` with ``rk4`` and ``n`` equal steps, loss ``sum(y(1)^2)``, for each ``n``:

- ``direct``: ``odeint`` then ``.backward()`` (every step's graph stored);
- ``adjoint``: ``odeint_adjoint`` (the continuous adjoint, O(1) memory, other gradients);
- ``checkpoint c=...``: ``odeint_checkpoint`` with 4, 8, 16 checkpoints and the default;
- ``torch.utils.checkpoint K=...``: the baseline a PyTorch user would write: ``[0, 1]`` cut
  into ``K`` equal segments, each ``odeint`` segment wrapped in ``torch.utils.checkpoint``
  (``use_reentrant=False``): ``K`` stored states plus one segment's whole graph in backward.

Columns: bytes held for backward (:class:`deeplimits.diagnostics.SavedTensorsMeter`,
parameters excluded: the memory the gradient mode itself costs) at the end of the forward
pass and at the peak over forward and backward together, also in units of one state; the
median wall time of forward + backward; ``func`` evaluations (forward; recomputed or
backward); the largest relative difference of the gradients from ``direct``'s. Times depend
on the machine; bytes and counts do not.

``torch.utils.checkpoint`` holds the graph it recomputes in backward through its own
saved-tensor hooks, which the meter does not see: its peak is reported as the metered peak
plus the bytes ``direct`` saves for one segment (``n // K`` steps), which is what it rebuilds.

``--rss``: the memory the operating system sees instead. Each (mode, steps) runs in a fresh
process (``--one``) that warms the mode up (a 2-step forward + backward), reads its peak
resident set size (``getrusage``'s ``ru_maxrss``), runs forward + backward once and prints how
far the peak rose: everything the solve allocated (saved tensors, temporaries, the
allocator's slack), not only what the meter sees. Linux reports ``ru_maxrss`` in KiB. The
cells run with glibc's ``MALLOC_MMAP_THRESHOLD_=16384``: by default glibc raises its mmap
threshold after the first large free, so later state-sized blocks come from the heap, whose
freed pages stay resident; RSS then grows with every segment of ``torch.utils.checkpoint``
although its intermediates are freed (measured: 10.9 MiB per 20-step segment by default,
0.8 MiB with the fixed threshold, 64x64 state). A fixed threshold makes RSS follow live memory.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from deeplimits.diagnostics import SavedTensorsMeter
from deeplimits.ode import SolveStats, odeint, odeint_adjoint, odeint_checkpoint


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim)
        ).double()

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


Solve = Callable[[nn.Module, torch.Tensor, int, SolveStats], torch.Tensor]


def _rk4(f: nn.Module, y0: torch.Tensor, n: int, stats: SolveStats,
         t0: float = 0.0, t1: float = 1.0) -> torch.Tensor:
    t = torch.tensor([t0, t1], dtype=y0.dtype)
    return odeint(f, y0, t, method="rk4", options={"step_size": (t1 - t0) / n}, stats=stats)[-1]  # type: ignore[index]


def modes() -> dict[str, Solve]:
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)

    def opts(n: int) -> dict[str, float]:
        return {"step_size": 1.0 / n}

    out: dict[str, Solve] = {
        "direct": lambda f, y0, n, st: _rk4(f, y0, n, st),
        "adjoint": lambda f, y0, n, st: odeint_adjoint(
            f, y0, t, method="rk4", options=opts(n), stats=st)[-1],  # type: ignore[index]
    }
    for c in (4, 8, 16, None):
        out[f"checkpoint c={c or 'default'}"] = (
            lambda f, y0, n, st, c=c: odeint_checkpoint(
                f, y0, t, method="rk4", options=opts(n), checkpoints=c, stats=st)[-1]  # type: ignore[index]
        )
    for k in (4, 8, 16):
        out[f"torch.utils.checkpoint K={k}"] = lambda f, y0, n, st, k=k: _segments(f, y0, n, st, k)
    return out


def _segments(f: nn.Module, y0: torch.Tensor, n: int, stats: SolveStats, k: int) -> torch.Tensor:
    """``k`` segments of ``n // k`` steps, each under ``torch.utils.checkpoint``."""
    y = y0
    per = max(1, n // k)
    for i in range(k):
        a, b = i / k, (i + 1) / k
        y = checkpoint(_rk4, f, y, per, stats, a, b, use_reentrant=False)
    return y


def measure(solve: Solve, f: nn.Module, y0: torch.Tensor, n: int, repeat: int
            ) -> tuple[tuple[int, int], float, tuple[int, int], list[torch.Tensor]]:
    """(Bytes held for backward after the forward pass, peak bytes) from one metered run,
    median time of ``repeat`` runs without the meter's hooks, (forward evaluations,
    evaluations in the backward pass) and the gradients."""
    f.zero_grad()
    y = y0.clone().requires_grad_(True)
    stats = SolveStats()
    with SavedTensorsMeter(exclude=f.parameters()) as meter:
        loss = (solve(f, y, n, stats) ** 2).sum()
        fwd = stats.nfe_forward
        held = meter.live_bytes
        loss.backward()
    # torch.utils.checkpoint re-runs odeint, which counts as forward evaluations.
    nfe = (fwd, stats.nfe_forward - fwd + stats.nfe_recompute + stats.nfe_backward)
    grads = [y.grad.clone(), *(p.grad.clone() for p in f.parameters())]  # type: ignore[union-attr]
    times: list[float] = []
    for _ in range(repeat):
        y = y0.clone().requires_grad_(True)
        start = time.perf_counter()
        (solve(f, y, n, SolveStats()) ** 2).sum().backward()
        times.append(time.perf_counter() - start)
    return (held, meter.bytes), statistics.median(times) if times else math.nan, nfe, grads


#: The modes of the ``--rss`` table: one of each kind.
RSS_MODES = ("direct", "adjoint", "checkpoint c=8", "checkpoint c=default",
             "torch.utils.checkpoint K=8")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def rss_rise(mode: str, f: nn.Module, y0: torch.Tensor, n: int) -> float:
    """MiB by which this process's peak RSS rises over one forward + backward of ``mode``
    with ``n`` steps, after a 2-step warm-up of the same mode (run in a fresh process)."""
    solve = modes()[mode]
    for steps in (2, n):
        if steps == n:
            base = _peak_rss_mib()
        y = y0.clone().requires_grad_(True)
        (solve(f, y, steps, SolveStats()) ** 2).sum().backward()
    return _peak_rss_mib() - base


def rss_table(args: argparse.Namespace) -> None:
    """One fresh process per (steps, mode); prints the ``--rss`` table."""
    state = args.batch * args.dim * 8
    print(f"state {args.batch}x{args.dim} float64 = {state / 2**20:.3f} MiB; rk4 on [0, 1]; "
          f"MLP hidden {args.hidden}\n")
    print("| steps | " + " | ".join(RSS_MODES) + " |")
    print("|---|" + "---|" * len(RSS_MODES))
    for n in args.steps:
        cells = []
        for mode in RSS_MODES:
            out = subprocess.run(
                [sys.executable, __file__, "--one", mode, "--steps", str(n), "--batch",
                 str(args.batch), "--dim", str(args.dim), "--hidden", str(args.hidden)],
                check=True, capture_output=True, text=True,
                env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "16384"},
            ).stdout.split()[-1]
            cells.append(f"{float(out):.1f}")
        print(f"| {n} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 400, 1600])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rss", action="store_true", help="peak-RSS table, a process per cell")
    ap.add_argument("--one", choices=RSS_MODES, help=argparse.SUPPRESS)  # a cell of --rss
    args = ap.parse_args()
    if args.rss:
        rss_table(args)
        return
    torch.manual_seed(0)
    if args.one:
        f = MLP(args.dim, args.hidden)
        y0 = torch.randn(args.batch, args.dim, dtype=torch.float64)
        print(rss_rise(args.one, f, y0, args.steps[0]))
        return
    f = MLP(args.dim, args.hidden)
    y0 = torch.randn(args.batch, args.dim, dtype=torch.float64)
    state = y0.numel() * y0.element_size()
    print(f"state {args.batch}x{args.dim} float64 = {state} bytes; rk4 on [0, 1]\n")
    print("| steps | mode | held after forward (MiB) | states | peak fwd+bwd (MiB) | states | "
          "time (s) | nfe fwd | nfe recompute / bwd | grad rel. diff |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in args.steps:
        ref: list[torch.Tensor] | None = None
        for name, solve in modes().items():
            (held, peak), sec, (fwd, bwd), grads = measure(solve, f, y0, n, args.repeat)
            if name.startswith("torch.utils.checkpoint"):
                k = int(name.rsplit("=", 1)[1])
                (_, segment), _, _, _ = measure(modes()["direct"], f, y0, max(1, n // k), 0)
                peak = max(peak, held + segment)
            if ref is None:
                ref = grads
            diff = max(float((g - r).abs().max() / r.abs().max())
                       for g, r in zip(grads, ref, strict=True))
            print(f"| {n} | {name} | {held / 2**20:.3f} | {held / state:.1f} | "
                  f"{peak / 2**20:.3f} | {peak / state:.1f} | {sec:.3f} | "
                  f"{fwd} | {bwd} | {diff:.1e} |")


if __name__ == "__main__":
    main()
