"""Slide 2: #params grows as O(L·n²) while #paths grows as O(n^L)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
from torch import nn

from deeplimits.diagnostics import count_parameters, count_paths
from deeplimits.experiments import register
from deeplimits.experiments._base import (
    Experiment,
    ExperimentConfig,
    Progress,
    Result,
    Table,
    Verdict,
)

__all__ = ["PathsConfig", "PathsExperiment", "mlp"]


def mlp(depth: int, width: int, activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """A ReLU MLP of ``depth`` linear layers, each ``width -> width`` (n_0 = ... = n_L = n)."""
    if depth < 1 or width < 1:
        raise ValueError(f"depth and width must be >= 1, got depth={depth}, width={width}")
    layers: list[nn.Module] = []
    for i in range(depth):
        layers.append(nn.Linear(width, width))
        if i < depth - 1:
            layers.append(activation())
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class PathsConfig(ExperimentConfig):
    """Grid of depths L and widths n; every (L, n) network is built and counted."""

    depths: tuple[int, ...] = (1, 2, 4, 8, 16)
    widths: tuple[int, ...] = (4, 8, 16, 32, 64)

    @classmethod
    def quick(cls) -> PathsConfig:
        return cls()

    @classmethod
    def full(cls) -> PathsConfig:
        return cls(
            depths=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32), widths=(2, 4, 8, 16, 32, 64, 128, 256)
        )


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Least squares y ≈ x @ coef; returns (coef, R²)."""
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    r2 = 1.0 - float(resid @ resid) / float(((y - y.mean()) ** 2).sum())
    return coef, r2


@register
class PathsExperiment(Experiment[PathsConfig]):
    name = "paths"
    title = "Parameters grow as L·n², paths as n^L"
    claim = (
        "#params ∈ O(L·n²), #paths ∈ O(n^L): more depth multiplies the paths, "
        "width only adds parameters."
    )
    slide = 2
    Config = PathsConfig

    def run(self, config: PathsConfig, progress: Progress) -> Result:
        records = []
        with progress.task(
            "build and count networks", total=len(config.depths) * len(config.widths)
        ) as task:
            for depth in config.depths:
                for width in config.widths:
                    model = mlp(depth, width)
                    params, paths = count_parameters(model), count_paths(model)
                    records.append(
                        {
                            "depth": depth,
                            "width": width,
                            "params": params,
                            "log10_paths": math.log10(paths),
                            "paths": str(paths) if paths >= 1e15 else paths,
                        }
                    )
                    task.advance()
        L = np.array([r["depth"] for r in records], dtype=float)
        n = np.array([r["width"] for r in records], dtype=float)
        P = np.array([r["params"] for r in records], dtype=float)
        logpaths = np.array([r["log10_paths"] for r in records]) * math.log(10)

        # log params = a log L + b log n + c: the claim says a = 1, b = 2 (for large n).
        big = n >= 8  # the +n bias term bends the fit at tiny widths
        (a, b, _), r2_params = _fit(
            np.stack([np.log(L[big]), np.log(n[big]), np.ones(big.sum())], 1), np.log(P[big])
        )
        # log paths = k · (L log n) + m: the claim says linear in L·log n.
        (k, m), r2_paths = _fit(np.stack([L * np.log(n), np.ones_like(L)], 1), logpaths)

        checks = {
            f"params ∝ L^{a:.3f}·n^{b:.3f} (R² {r2_params:.4f})": abs(a - 1) < 0.05
            and abs(b - 2) < 0.1,
            f"log(paths) = {k:.3f}·L·log n + {m:.2f} (R² {r2_paths:.4f})": abs(k - 1) < 0.1
            and r2_paths > 0.99,
        }
        verdict = Verdict.from_checks(checks, what="fits over the grid")

        # Depth vs width at (about) equal parameters: the deepest and the widest net of the grid.
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for width in config.widths:
            sel = n == width
            axes[0].plot(L[sel], P[sel], "o-", label=f"n={width}")
            axes[1].plot(L[sel], logpaths[sel] / math.log(10), "o-", label=f"n={width}")
        axes[0].set(xlabel="depth L", ylabel="#params", yscale="log", title="#params: linear in L")
        axes[1].set(xlabel="depth L", ylabel="log10 #paths", title="#paths: exponential in L")
        axes[0].legend(fontsize=7)
        axes[1].legend(fontsize=7)
        fig.tight_layout()

        table = Table.from_records("networks of the grid", records)
        return Result(
            numbers={
                "params_exponent_L": a,
                "params_exponent_n": b,
                "params_fit_r2": r2_params,
                "paths_slope_vs_L_log_n": k,
                "paths_fit_r2": r2_paths,
                "max_log10_paths": float(logpaths.max() / math.log(10)),
                "max_params": int(P.max()),
            },
            verdict=verdict,
            tables=[table],
            figures={"params_paths": fig},
            notes=["Counts are exact, taken from the built nn.Sequential models (not a formula)."],
        )
