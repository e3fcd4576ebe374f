"""Slide 2: #params grows as O(L·n²) while #paths grows as O(n^L).

The verdict is computed by the pure functions :func:`paths_checks` and :func:`paths_verdict` from
the fitted exponents alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from torch import nn

from deeplimits import constructions
from deeplimits.diagnostics import count_parameters, count_paths
from deeplimits.experiments import register
from deeplimits.experiments._base import (
    Experiment,
    ExperimentConfig,
    NullProgress,
    Progress,
    Result,
    Table,
    Verdict,
)

__all__ = [
    "PathFits",
    "PathsConfig",
    "PathsExperiment",
    "measure_paths",
    "mlp",
    "path_checks",
    "paths_checks",
    "paths_figure",
    "paths_verdict",
]


def mlp(depth: int, width: int, activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """A ReLU MLP of ``depth`` linear layers, each ``width -> width`` (n_0 = ... = n_L = n)."""
    if depth < 1 or width < 1:
        raise ValueError(f"depth and width must be >= 1, got depth={depth}, width={width}")
    return constructions.mlp([width] * (depth + 1), activation)


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


@dataclass(frozen=True)
class PathFits:
    """Power-law fits over a grid of (L, n) networks (see :func:`measure_paths`)."""

    params_exponent_L: float
    params_exponent_n: float
    params_fit_r2: float
    paths_slope_vs_L_log_n: float
    paths_intercept: float
    paths_fit_r2: float
    max_log10_paths: float
    max_params: int


def measure_paths(
    depths: Sequence[int], widths: Sequence[int], progress: Progress | None = None
) -> tuple[list[dict[str, Any]], PathFits]:
    """Build :func:`mlp` ``(L, n)`` for every depth and width, count params and paths, fit both.

    Returns:
        ``(records, fits)``: one record per network (depth, width, params, log10_paths, paths;
        paths as a string when >= 1e15) and the fits ``log params = a log L + b log n + c`` (on
        widths >= 8, where the ``+n`` bias term no longer bends it) and
        ``ln paths = k · L ln n + m``.
    """
    progress = progress or NullProgress()
    records = []
    with progress.task("build and count networks", total=len(depths) * len(widths)) as task:
        for depth in depths:
            for width in widths:
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
    L, n, P, logpaths = _grid_arrays(records)

    # log params = a log L + b log n + c: the claim says a = 1, b = 2 (for large n).
    big = n >= 8  # the +n bias term bends the fit at tiny widths
    (a, b, _), r2_params = _fit(
        np.stack([np.log(L[big]), np.log(n[big]), np.ones(big.sum())], 1), np.log(P[big])
    )
    # log paths = k · (L log n) + m: the claim says linear in L·log n.
    (k, m), r2_paths = _fit(np.stack([L * np.log(n), np.ones_like(L)], 1), logpaths)
    fits = PathFits(
        params_exponent_L=float(a),
        params_exponent_n=float(b),
        params_fit_r2=r2_params,
        paths_slope_vs_L_log_n=float(k),
        paths_intercept=float(m),
        paths_fit_r2=r2_paths,
        max_log10_paths=float(logpaths.max() / math.log(10)),
        max_params=int(P.max()),
    )
    return records, fits


def _grid_arrays(
    records: Sequence[dict[str, Any]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    L = np.array([r["depth"] for r in records], dtype=float)
    n = np.array([r["width"] for r in records], dtype=float)
    P = np.array([r["params"] for r in records], dtype=float)
    logpaths = np.array([r["log10_paths"] for r in records]) * math.log(10)
    return L, n, P, logpaths


def paths_checks(fits: PathFits) -> dict[str, bool]:
    """The claim's checks, from the fits alone (pure): params ∝ L·n², log paths linear in L·log n.

    Returns:
        Statement (citing the fitted numbers) -> whether it held: ``|a - 1| < 0.05`` and
        ``|b - 2| < 0.1`` for ``params ∝ L^a·n^b``; slope ``k`` of ``ln paths`` against
        ``L ln n`` within 0.1 of 1 with R² > 0.99.
    """
    a, b, k = fits.params_exponent_L, fits.params_exponent_n, fits.paths_slope_vs_L_log_n
    return {
        f"params ∝ L^{a:.3f}·n^{b:.3f} (R² {fits.params_fit_r2:.4f})": abs(a - 1) < 0.05
        and abs(b - 2) < 0.1,
        f"log(paths) = {k:.3f}·L·log n + {fits.paths_intercept:.2f} "
        f"(R² {fits.paths_fit_r2:.4f})": abs(k - 1) < 0.1 and fits.paths_fit_r2 > 0.99,
    }


#: The former name of :func:`paths_checks`, kept for callers of the earlier API.
path_checks = paths_checks


def paths_verdict(fits: PathFits) -> Verdict:
    """``reproduced`` iff every :func:`paths_checks` check holds.

    Returns:
        The paths experiment's :class:`Verdict`, its reason citing the fits.
    """
    return Verdict.from_checks(paths_checks(fits), what="fits over the grid")


def paths_figure(records: Sequence[dict[str, Any]]) -> Figure:
    """#params and log10 #paths against depth, one line per width."""
    L, n, P, logpaths = _grid_arrays(records)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for width in sorted(set(n.tolist())):
        sel = n == width
        axes[0].plot(L[sel], P[sel], "o-", label=f"n={int(width)}")
        axes[1].plot(L[sel], logpaths[sel] / math.log(10), "o-", label=f"n={int(width)}")
    axes[0].set(
        xlabel="depth L", ylabel="#params", xscale="log", yscale="log",
        title="#params: slope 1 in L on log-log axes",
    )
    axes[1].set(xlabel="depth L", ylabel="log10 #paths", title="#paths: exponential in L")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


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
        records, fits = measure_paths(config.depths, config.widths, progress)
        verdict = paths_verdict(fits)
        table = Table.from_records("networks of the grid", records)
        return Result(
            numbers={
                "params_exponent_L": fits.params_exponent_L,
                "params_exponent_n": fits.params_exponent_n,
                "params_fit_r2": fits.params_fit_r2,
                "paths_slope_vs_L_log_n": fits.paths_slope_vs_L_log_n,
                "paths_fit_r2": fits.paths_fit_r2,
                "max_log10_paths": fits.max_log10_paths,
                "max_params": fits.max_params,
            },
            verdict=verdict,
            tables=[table],
            figures={"params_paths": paths_figure(records)},
            notes=["Counts are exact, taken from the built nn.Sequential models (not a formula)."],
        )
