"""Memory and time of the gradient modes against the number of steps.

    python benchmarks/checkpoint.py                      # defaults below
    python benchmarks/checkpoint.py --steps 50 100 --batch 8 --dim 4 --hidden 16   # a quick look

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
"""

from __future__ import annotations

import argparse
import math
import statistics
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 400, 1600])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
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
