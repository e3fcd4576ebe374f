"""Stiff solvers (kvaerno3/4/5) against scipy's Radau and BDF at equal achieved accuracy.

    python benchmarks/stiff.py                 # the full sizes (minutes on 2 cores)
    python benchmarks/stiff.py --small         # a quick check that the script works

Two parts, both on CPU in float64 (the batch first; printed in this order below):

1. Robertson (t in [0, 1e5]) and Van der Pol eps = 1e-6 (mu = 1000 rescaled, t in [0, 2]): for
   each solver and rtol, the achieved relative error at the end (against scipy Radau at rtol
   1e-12), function evaluations, Jacobians, LU factorisations, steps and wall time. Compare rows
   of equal achieved error, not equal rtol.
2. A batch of B Robertson problems with different rate constants k1 (state (B, 3)):
   kvaerno5 with ``batched_jacobian=True`` (per-sample (3, 3) blocks, one batched LU) and with
   the full (3B, 3B) Jacobian, against scipy Radau/BDF on the flattened batch (3B equations; the
   Jacobian is block diagonal but scipy does not know: dense LU) and on the B problems one by
   one.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from deeplimits.ode import SolveStats, odeint

F64 = torch.float64


def rober(t: object, y: torch.Tensor) -> torch.Tensor:
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    return torch.stack(
        [-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2**2, 3e7 * y2**2], -1
    )


def rober_np(t: float, y: np.ndarray) -> np.ndarray:
    return np.array([-0.04 * y[0] + 1e4 * y[1] * y[2],
                     0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2, 3e7 * y[1] ** 2])


def vdpol(t: object, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([y[1], ((1 - y[0] ** 2) * y[1] - y[0]) / 1e-6])


def vdpol_np(t: float, y: np.ndarray) -> np.ndarray:
    return np.array([y[1], ((1 - y[0] ** 2) * y[1] - y[0]) / 1e-6])


def _scipy(fun, y0, t1, method, rtol, atol):
    from scipy.integrate import solve_ivp

    t0 = time.perf_counter()
    sol = solve_ivp(fun, (0.0, t1), y0, method=method, rtol=rtol, atol=atol)
    wall = time.perf_counter() - t0
    return sol.y[:, -1], dict(nfe=sol.nfev, jac=sol.njev, lu=sol.nlu, steps=sol.t.size - 1,
                              wall=wall)


def _ours(func, y0, t1, method, rtol, atol, options=None):
    stats = SolveStats()
    t0 = time.perf_counter()
    y = odeint(func, torch.tensor(y0, dtype=F64), torch.tensor([0.0, t1], dtype=F64),
               method=method, rtol=rtol, atol=atol, stats=stats, options=options)[-1]
    wall = time.perf_counter() - t0
    return y.numpy(), dict(nfe=stats.nfe_forward, jac=stats.jacobians,
                           lu=stats.lu_factorizations,
                           steps=stats.accepted_steps + stats.rejected_steps, wall=wall)


def _row(name, rtol, y, ref, c):
    err = float(np.max(np.abs(y - ref) / np.abs(ref)))
    print(f"{name:>9} {rtol:8.0e} {err:10.2e} {c['nfe']:7d} {c['jac']:6d} {c['lu']:6d} "
          f"{c['steps']:6d} {c['wall']:8.3f}")


def accuracy(small: bool) -> None:
    problems = [("robertson", rober, rober_np, [1.0, 0.0, 0.0], 1e5 if not small else 40.0,
                 1e-4),
                ("vdpol", vdpol, vdpol_np, [2.0, 0.0], 2.0 if not small else 0.5, 1.0)]
    rtols = [1e-4, 1e-6, 1e-8] if not small else [1e-4]
    for name, f, f_np, y0, t1, atol_scale in problems:
        ref, _ = _scipy(f_np, y0, t1, "Radau", 1e-12, 1e-12 * atol_scale * 1e-4)
        print(f"\n{name}, t1={t1:g}: max relative error at t1; counts; wall seconds")
        print(f"{'solver':>9} {'rtol':>8} {'rel.err':>10} {'nfe':>7} {'jac':>6} {'lu':>6} "
              f"{'steps':>6} {'wall':>8}")
        for rtol in rtols:
            atol = rtol * atol_scale * 1e-4 if name == "robertson" else rtol
            for m in ["kvaerno3", "kvaerno4", "kvaerno5"]:
                y, c = _ours(f, y0, t1, m, rtol, atol)
                _row(m, rtol, y, ref, c)
            for m in ["Radau", "BDF"]:
                y, c = _scipy(f_np, y0, t1, m, rtol, atol)
                _row(m, rtol, y, ref, c)


def batch(small: bool) -> None:
    b = 8 if small else 256
    t1 = 1.0 if small else 100.0
    rtol, atol = 1e-6, 1e-12
    k1 = np.linspace(0.02, 0.08, b)
    k1_t = torch.tensor(k1, dtype=F64)[:, None]

    def f(t: object, y: torch.Tensor) -> torch.Tensor:
        y1, y2, y3 = y[:, 0:1], y[:, 1:2], y[:, 2:3]
        return torch.cat([-k1_t * y1 + 1e4 * y2 * y3, k1_t * y1 - 1e4 * y2 * y3 - 3e7 * y2**2,
                          3e7 * y2**2], 1)

    def f_np(t: float, y: np.ndarray) -> np.ndarray:
        y1, y2, y3 = y[0::3], y[1::3], y[2::3]
        out = np.empty_like(y)
        out[0::3] = -k1 * y1 + 1e4 * y2 * y3
        out[1::3] = k1 * y1 - 1e4 * y2 * y3 - 3e7 * y2**2
        out[2::3] = 3e7 * y2**2
        return out

    y0 = np.tile([1.0, 0.0, 0.0], (b, 1))
    ref, _ = _scipy(f_np, y0.reshape(-1), t1, "Radau", 1e-11, 1e-16)
    print(f"\nbatch of {b} Robertson problems (k1 in [0.02, 0.08]), t1={t1:g}, rtol={rtol:g}")
    print(f"{'solver':>22} {'rel.err':>10} {'nfe':>7} {'jac':>6} {'lu':>6} {'steps':>6} "
          f"{'wall':>8}")
    # The first call of a process also pays torch.func's one-time set-up (its first jacrev and
    # vmap): shown as its own row; the rows after it are a second, timed run.
    y, c = _ours(f, y0, t1, "kvaerno5", rtol, atol, {"batched_jacobian": True})
    print(f"{'(first call, batched)':>22} {'':>10} {'':>7} {'':>6} {'':>6} {'':>6} "
          f"{c['wall']:8.3f}")
    for label, opts in (("kvaerno5 batched_jac", {"batched_jacobian": True}),
                        ("kvaerno5 full jac", {"batched_jacobian": False})):
        y, c = _ours(f, y0, t1, "kvaerno5", rtol, atol, opts)
        err = float(np.max(np.abs(y.reshape(-1) - ref) / (np.abs(ref) + 1e-12)))
        print(f"{label:>22} {err:10.2e} {c['nfe']:7d} {c['jac']:6d} {c['lu']:6d} "
              f"{c['steps']:6d} {c['wall']:8.3f}")
    for m in ["Radau", "BDF"]:
        y, c = _scipy(f_np, y0.reshape(-1), t1, m, rtol, atol)
        err = float(np.max(np.abs(y - ref) / (np.abs(ref) + 1e-12)))
        print(f"{m + ' flattened':>22} {err:10.2e} {c['nfe']:7d} {c['jac']:6d} {c['lu']:6d} "
              f"{c['steps']:6d} {c['wall']:8.3f}")
        t0 = time.perf_counter()
        nfe = 0
        for i in range(b):
            ki = k1[i]
            sol = _one(ki, t1, m, rtol, atol)
            nfe += sol
        print(f"{m + ' one by one':>22} {'':>10} {nfe:7d} {'':>6} {'':>6} {'':>6} "
              f"{time.perf_counter() - t0:8.3f}")


def _one(k1: float, t1: float, method: str, rtol: float, atol: float) -> int:
    from scipy.integrate import solve_ivp

    def f(t: float, y: np.ndarray) -> np.ndarray:
        return np.array([-k1 * y[0] + 1e4 * y[1] * y[2],
                         k1 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2, 3e7 * y[1] ** 2])

    return int(solve_ivp(f, (0.0, t1), [1.0, 0.0, 0.0], method=method, rtol=rtol,
                         atol=atol).nfev)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny sizes: check it runs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    batch(args.small)  # first: its "(first call)" row is the process's first solve
    accuracy(args.small)


if __name__ == "__main__":
    main()
