"""Function evaluations and rejected steps of step-size controllers on a few classic problems.

    python benchmarks/controllers.py

The evidence behind the default controller (``IController()``, not ``PIController()``): for
dopri5 and tsit5 at rtol 1e-4, 1e-6, 1e-8 (atol = rtol/100) on an MLP neural ODE (batch 16 and
256, float32, t in [0, 1]), Lotka-Volterra (t in [0, 15]) and Van der Pol with mu = 1 (t in
[0, 20]) and mu = 25 (t in [0, 60]), it prints "nfe (rejected)" per controller. Counts, not
times: they do not depend on the machine.
"""

from __future__ import annotations

import torch
from torch import nn

from deeplimits.ode import IController, PIController, SolveStats, odeint

CONTROLLERS = {
    "I": IController(),
    "PI(0.2,0.8)": PIController(0.2, 0.8),
    "PI(0.4,0.3)": PIController(0.4, 0.3),
    "PI(0.2,0.65)": PIController(0.2, 0.65),
}


def _mlp(d: int, h: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh(), nn.Linear(h, d))


def problems() -> dict[str, tuple]:
    torch.manual_seed(0)
    f64 = torch.float64
    small, large = _mlp(2, 64), _mlp(32, 256)

    def lv(t, y):
        return torch.stack([1.5 * y[0] - y[0] * y[1], -3 * y[1] + y[0] * y[1]])

    def vdp(mu):
        return lambda t, y: torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])

    return {
        "MLP B=16": (lambda t, y: small(y), torch.randn(16, 2), 1.0),
        "MLP B=256": (lambda t, y: large(y), torch.randn(256, 32), 1.0),
        "Lotka-Volterra": (lv, torch.tensor([1.0, 1.0], dtype=f64), 15.0),
        "Van der Pol mu=1": (vdp(1.0), torch.tensor([2.0, 0.0], dtype=f64), 20.0),
        "Van der Pol mu=25": (vdp(25.0), torch.tensor([2.0, 0.0], dtype=f64), 60.0),
    }


def main() -> None:
    header = "| problem | rtol | method | " + " | ".join(CONTROLLERS) + " |"
    print(header)
    print("|" + "---|" * (3 + len(CONTROLLERS)))
    with torch.no_grad():
        for rtol in (1e-4, 1e-6, 1e-8):
            for name, (f, y0, t1) in problems().items():
                t = torch.tensor([0.0, t1], dtype=y0.dtype)
                for method in ("dopri5", "tsit5"):
                    cells = []
                    for ctrl in CONTROLLERS.values():
                        s = SolveStats()
                        odeint(
                            f,
                            y0,
                            t,
                            rtol=rtol,
                            atol=rtol * 1e-2,
                            method=method,
                            options={"controller": ctrl},
                            stats=s,
                        )
                        cells.append(f"{s.nfe_forward} ({s.rejected_steps})")
                    print(f"| {name} | {rtol:g} | {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
