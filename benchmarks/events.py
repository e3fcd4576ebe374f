"""Per-sample events against the same per-sample solve without events.

    python benchmarks/events.py                  # batch 256, 1 thread, 7 repetitions
    python benchmarks/events.py --batch 64 --reps 3

A batch of damped pendulums ``theta'' = -sin(theta) - 0.1 theta'`` (float64, state
``(batch, 2)``), released at rest from angles spread over ``[0.3, 2.5]``; the event is the
angle's first zero crossing, ``event_fn = y[:, 0]``, so every sample has its own event time
(about 1.6 to 2.6). Solved with ``dopri5``, rtol 1e-8, atol 1e-10, ``per_sample=True``:

- ``events``: ``odeint_event(..., options={"per_sample": True})`` (each sample stops at its
  own crossing);
- ``no events, own ends``: ``odeint`` with ``per_sample=True`` and a 2-D ``t`` of rows
  ``[0, T_i]``, each sample integrated to its own event time (known from the event run): the
  same spans without the search;
- ``no events, common end``: ``odeint`` with ``per_sample=True`` and ``t = [0, max T_i]``.

Each is timed without autograd (forward) and with a backward pass of ``sum(event_t) +
sum(y(T)^2)`` (or ``sum(y(end)^2)``) through a parameter of the dynamics. Medians of
``--reps`` interleaved repetitions after one warm-up; the ratio is ``events`` over ``no
events, own ends``. Times depend on the machine; the ratios much less.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from deeplimits.ode import SolveStats, odeint, odeint_event


class Pendulum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.damping = nn.Parameter(torch.tensor(0.1, dtype=torch.float64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([y[:, 1], -torch.sin(y[:, 0]) - self.damping * y[:, 1]], dim=1)


TOL = {"rtol": 1e-8, "atol": 1e-10}


def _crossing(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return y[:, 0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    f = Pendulum()
    y0 = torch.stack([torch.linspace(0.3, 2.5, args.batch, dtype=torch.float64),
                      torch.zeros(args.batch, dtype=torch.float64)], dim=1)
    with torch.no_grad():
        t_ev, _ = odeint_event(f, y0, 0.0, event_fn=_crossing, options={"per_sample": True},
                               **TOL)
    rows = torch.stack([torch.zeros_like(t_ev), t_ev], dim=1)  # (batch, 2)
    common = torch.stack([torch.zeros(()), t_ev.max()]).to(torch.float64)

    def events(stats: SolveStats) -> torch.Tensor:
        t, sol = odeint_event(f, y0, 0.0, event_fn=_crossing, options={"per_sample": True},
                              stats=stats, **TOL)
        return t.sum() + sol[-1].square().sum()

    def own_ends(stats: SolveStats) -> torch.Tensor:
        ys = odeint(f, y0, rows, options={"per_sample": True}, stats=stats, **TOL)
        return ys[-1].square().sum()

    def common_end(stats: SolveStats) -> torch.Tensor:
        ys = odeint(f, y0, common, options={"per_sample": True}, stats=stats, **TOL)
        return ys[-1].square().sum()

    cases: dict[str, Callable[[SolveStats], torch.Tensor]] = {
        "events": events, "no events, own ends": own_ends, "no events, common end": common_end,
    }
    times: dict[tuple[str, str], list[float]] = {}
    nfe: dict[str, int] = {}
    for rep in range(args.reps + 1):
        for name, run in cases.items():
            for mode in ("forward", "forward + backward"):
                stats = SolveStats()
                f.zero_grad()
                start = time.perf_counter()
                if mode == "forward":
                    with torch.no_grad():
                        run(stats)
                else:
                    run(stats).backward()
                elapsed = time.perf_counter() - start
                if rep:  # the first round is the warm-up
                    times.setdefault((name, mode), []).append(elapsed)
                nfe[name] = stats.nfe_forward
    print(f"batch {args.batch}, {args.threads} thread(s), medians of {args.reps}; event times "
          f"{float(t_ev.min()):.3f} .. {float(t_ev.max()):.3f}\n")
    print("| solve | batched func calls | forward (ms) | ratio | forward + backward (ms) "
          "| ratio |")
    print("|---|---|---|---|---|---|")
    base = {m: statistics.median(times[("no events, own ends", m)])
            for m in ("forward", "forward + backward")}
    for name in cases:
        cells = []
        for mode in ("forward", "forward + backward"):
            med = statistics.median(times[(name, mode)])
            cells += [f"{1e3 * med:.1f}", f"{med / base[mode]:.2f}"]
        print(f"| {name} | {nfe[name]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
