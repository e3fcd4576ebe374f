"""How to combine Runge-Kutta stages on CPU: the cost of ``y + h * sum_j a_j k_j``.

    python benchmarks/stage_combination.py [--threads 1]

Times, per combination of 6 stages on CPU, the unrolled ``add``/``add_`` chain the stepper uses
against ``torch.stack`` + ``tensordot`` and against a preallocated stage buffer
(writing the newest stage into it) + ``addmv``,
for the benchmark problems' state sizes. Medians of 2000 repetitions.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _time(fn, reps: int = 2000) -> float:
    for _ in range(50):
        fn()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6


COEFS = [0.1, -0.2, 0.3, 0.05, -0.15, 0.25]
H = 0.01


def _row(shape: tuple[int, int]) -> str:
    y = torch.randn(shape)
    ks = [torch.randn(shape) for _ in COEFS]
    a = torch.tensor(COEFS) * H
    buf = torch.stack(ks).reshape(len(ks), -1)  # (S, N), as if written stage by stage

    def unrolled() -> torch.Tensor:
        out = torch.add(y, ks[0], alpha=H * COEFS[0])
        for k, c in zip(ks[1:], COEFS[1:], strict=True):
            out.add_(k, alpha=H * c)
        return out

    def stacked() -> torch.Tensor:
        return y + torch.tensordot(a, torch.stack(ks), dims=1)

    def buffered() -> torch.Tensor:
        buf[-1].copy_(ks[-1].reshape(-1))  # the newest stage must be written into the buffer
        return torch.addmv(y.reshape(-1), buf.t(), a)

    torch.testing.assert_close(unrolled(), stacked())
    torch.testing.assert_close(unrolled().reshape(-1), buffered())
    return (
        f"| {shape[0]}x{shape[1]} | {_time(unrolled):.1f} | {_time(stacked):.1f} | "
        f"{_time(buffered):.1f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("| state | unrolled adds (us) | stack + tensordot (us) | buffer write + addmv (us) |")
    print("|---|---|---|---|")
    for shape in ((16, 2), (256, 32), (1024, 32)):
        print(_row(shape))


if __name__ == "__main__":
    main()
