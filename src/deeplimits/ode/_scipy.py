"""``method="scipy_solver"``: scipy's ``solve_ivp`` as a loop of the engine (torchdiffeq's
``scipy_solver``, with the direction of integration handled and failures raised)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from deeplimits.errors import SolverError
from deeplimits.ode._func import FlatFunc
from deeplimits.ode._options import ScipyOptions, SolveStats

__all__ = ["solve_scipy"]


def solve_scipy(
    f: FlatFunc, y0: Tensor, ts: list[float], opts: ScipyOptions, rtol: float, atol: float,
    stats: SolveStats, backward: bool = False,
) -> list[Tensor]:
    """The states at ``ts`` by ``solve_ivp`` (float64 on the CPU; ``f`` called without
    autograd, its evaluations counted by its wrapper).

    Raises:
        SolverError: scipy reports a failure (its message is quoted).
    """
    shape, dtype, device = y0.shape, y0.dtype, y0.device

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        yt = torch.from_numpy(y).to(device, dtype).reshape(shape)  # (N,) -> y0's layout
        with torch.no_grad():
            out = f(t, yt)
        return out.detach().to("cpu", torch.float64).reshape(-1).numpy()

    y_np = y0.detach().to("cpu", torch.float64).reshape(-1).numpy()
    # min_step only where scipy uses it (LSODA); scipy warns about it for the others.
    extra = {"min_step": opts.min_step} if opts.solver == "LSODA" else {}
    sol = solve_ivp(
        rhs, (ts[0], ts[-1]), y_np, method=opts.solver, t_eval=ts, rtol=rtol, atol=atol,
        max_step=opts.max_step, **extra,
    )
    if not sol.success:
        raise SolverError(
            f"scipy_solver ({opts.solver}) failed between t={ts[0]!r} and t={ts[-1]!r}: "
            f"{sol.message}; loosen rtol/atol or try another options solver"
        )
    steps = max(len(sol.t) - 1, 0)  # outputs only; scipy's own step count is not reported
    if backward:
        stats.backward_accepted_steps += steps
    else:
        stats.accepted_steps += steps
    ys = torch.from_numpy(np.ascontiguousarray(sol.y.T)).to(device, dtype)  # (T, N)
    return [y0, *(row.reshape(shape) for row in ys[1:].unbind(0))]
