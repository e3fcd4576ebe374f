"""Slide 2, continued: what depth buys, measured as exact linear regions (not only paths).

(a) #params vs #paths (the ``paths`` experiment's measurement, reused).
(b) Exact linear regions of deep-narrow vs shallow-wide ReLU nets at equal parameter count:
    for Telgarsky's constructed sawtooth (2^L pieces from 6L+1 parameters) and at random
    (He-normal) initialisation, where Hanin & Rolnick (ICML 2019) found the count roughly linear in
    the number of neurons rather than exponential in depth.
(c) Fitting a sawtooth target with 2^k pieces by gradient descent with a deep-narrow and a
    shallow-wide net of (nearly) equal parameters: test error and the regions each net uses.

The verdict is computed by the pure functions :func:`expressivity_checks` and
:func:`expressivity_verdict` from the counts alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from deeplimits.constructions import (
    mlp,
    one_hidden_layer,
    sawtooth,
    sawtooth_parameters,
    tent_power,
)
from deeplimits.diagnostics import count_parameters, count_regions, region_breakpoints, region_map
from deeplimits.experiments import register
from deeplimits.experiments._base import (
    Experiment,
    ExperimentConfig,
    Progress,
    Result,
    Table,
    Verdict,
)
from deeplimits.experiments.paths import PathFits, measure_paths, paths_checks, paths_figure

__all__ = [
    "ExpressivityConfig",
    "ExpressivityExperiment",
    "expressivity_checks",
    "expressivity_verdict",
    "random_relu_net",
]

_PLANE_CAP = 25_000  # skip a plane count whose worst case 1 + N + N(N-1)/2 exceeds this


def random_relu_net(
    widths: list[int], generator: torch.Generator, bias_std: float = 0.1
) -> nn.Sequential:
    """ReLU MLP with layer widths ``widths`` (input first, output last), He-normal weights.

    Weights ~ N(0, 2 / fan_in) keep the activations' scale through depth (PyTorch's default
    init shrinks it, which would confound depth with vanishing signal); biases ~ N(0, bias_std²).
    """
    net = mlp(widths)
    with torch.no_grad():
        for lin in net:
            if isinstance(lin, nn.Linear):
                b, a = lin.weight.shape
                lin.weight.copy_(torch.randn(b, a, generator=generator) * math.sqrt(2 / a))
                lin.bias.copy_(torch.randn(b, generator=generator) * bias_std)
    return net


def _shallow_width(params: int, d_in: int) -> int:
    """Hidden width N of a one-hidden-layer net d_in -> N -> 1 with about ``params`` params."""
    return max(1, round((params - 1) / (d_in + 2)))


@dataclass(frozen=True)
class ExpressivityConfig(ExperimentConfig):
    """Grids for (a) paths, (b) sawtooth and random-init regions, (c) fitting."""

    path_depths: tuple[int, ...] = (1, 2, 4, 8)
    path_widths: tuple[int, ...] = (4, 8, 16, 32)
    saw_depths: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 10, 12)
    random_width: int = 16
    random_depths: tuple[int, ...] = (1, 2, 4, 8)
    random_seeds: int = 3
    fit_teeth_depth: int = 4  # target: tent map iterated k times, 2^k pieces
    fit_width: int = 4  # the deep-narrow net has fit_teeth_depth layers of this width
    fit_steps: int = 1000
    fit_seeds: int = 1
    fit_points: int = 512

    @classmethod
    def quick(cls) -> ExpressivityConfig:
        return cls()

    @classmethod
    def full(cls) -> ExpressivityConfig:
        return cls(
            path_depths=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32),
            path_widths=(2, 4, 8, 16, 32, 64, 128, 256),
            random_depths=(1, 2, 4, 8, 16, 32),
            random_seeds=10,
            fit_steps=6000,
            fit_seeds=5,
            fit_points=1024,
        )


def _loglog_slope(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def _median(fit_rows: Sequence[Mapping[str, Any]], label: str, key: str) -> float:
    """Median of ``key`` over the (c) fit rows of the net ``label``."""
    return float(np.median([r[key] for r in fit_rows if r["net"] == label]))


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.mean((model(x) - y) ** 2)  # full batch, (N, 1)
        loss.backward()
        opt.step()
        sched.step()


_UNIT = ([0.0], [1.0])  # the segment [0, 1] of a 1-D input
_LINE = (np.array([-1.0, -0.5]), np.array([1.0, 0.8]))  # misses the origin on purpose
_PLANE = ([-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0])  # the square [-1, 1]^2


def _sawtooth_rows(config: ExpressivityConfig, progress: Progress) -> list[dict[str, Any]]:
    """(b1) the constructed sawtooth vs the best one-hidden-layer net of equal parameters.

    Returns:
        One row per depth in ``config.saw_depths``: pieces of both nets and their parameters.
    """
    saw_rows = []
    with progress.task("sawtooth regions", total=len(config.saw_depths)) as task:
        for L in config.saw_depths:
            deep = sawtooth(L)
            params = sawtooth_parameters(L)
            n_hidden = (params - 1) // 3  # 3N + 1 = 6L + 1 exactly: N = 2L
            kinks = ((np.arange(n_hidden) + 0.5) / n_hidden).tolist()
            shallow = one_hidden_layer(kinks)
            saw_rows.append(
                {
                    "depth L": L,
                    "params (both)": params,
                    "deep pieces": count_regions(deep, line=_UNIT, kind="affine"),
                    "2^L": 2**L,
                    "shallow width": n_hidden,
                    "shallow pieces (best)": count_regions(shallow, line=_UNIT, kind="affine"),
                    "shallow bound N+1": n_hidden + 1,
                    "shallow params": count_parameters(shallow),
                }
            )
            task.advance()
    return saw_rows


def _random_init_rows(
    config: ExpressivityConfig, progress: Progress, gen: torch.Generator
) -> tuple[list[dict[str, Any]], dict[str, nn.Module]]:
    """(b2) random init: deep-narrow vs shallow-wide at equal params, 2-D input.

    Returns:
        ``(rows, maps)``: one row per depth in ``config.random_depths`` (mean regions on
        :data:`_LINE`, regions on :data:`_PLANE`) and the deep and wide nets to draw.
    """
    w = config.random_width
    rand_rows = []
    maps: dict[str, nn.Module] = {}
    with progress.task("random-init regions", total=len(config.random_depths)) as task:
        for L in config.random_depths:
            deep_nets = [
                random_relu_net([2] + [w] * L + [1], gen) for _ in range(config.random_seeds)
            ]
            params = count_parameters(deep_nets[0])
            N = _shallow_width(params, 2)
            wide_nets = [random_relu_net([2, N, 1], gen) for _ in range(config.random_seeds)]
            deep_line = [count_regions(m, line=_LINE) for m in deep_nets]
            wide_line = [count_regions(m, line=_LINE) for m in wide_nets]
            wide_plane = (
                count_regions(wide_nets[0], plane=_PLANE)
                if 1 + N + N * (N - 1) // 2 <= _PLANE_CAP
                else None
            )
            rand_rows.append(
                {
                    "deep L×n": f"{L}×{w}",
                    "deep params": params,
                    "deep neurons": L * w,
                    "deep regions on line (mean)": float(np.mean(deep_line)),
                    "deep regions on plane": count_regions(deep_nets[0], plane=_PLANE),
                    "shallow width N": N,
                    "shallow params": count_parameters(wide_nets[0]),
                    "shallow regions on line (mean)": float(np.mean(wide_line)),
                    "shallow regions on plane": wide_plane,
                }
            )
            if sorted(config.random_depths)[len(config.random_depths) // 2 - 1] == L:
                maps = {"deep": deep_nets[0], "wide": wide_nets[0]}
            task.advance()
    return rand_rows, maps


def _fit_rows(
    config: ExpressivityConfig, progress: Progress, gen: torch.Generator
) -> tuple[list[dict[str, Any]], dict[str, nn.Module]]:
    """(c) fit a 2^k-piece sawtooth with deep-narrow and shallow-wide nets of equal params.

    Returns:
        ``(rows, fitted)``: one row per net and seed (test MSE, pieces used) and the first
        trained net of each kind.
    """
    device = config.torch_device()
    k = config.fit_teeth_depth
    x_train = torch.linspace(0, 1, config.fit_points, device=device)[:, None]  # (N, 1)
    x_test = torch.rand(8192, 1, generator=gen).to(device)  # (8192, 1)
    y_train, y_test = tent_power(x_train, k), tent_power(x_test, k)
    fit_rows = []
    fitted: dict[str, nn.Module] = {}
    with progress.task("fit sawtooth", total=2 * config.fit_seeds) as task:
        for s in range(config.fit_seeds):
            # PyTorch's default init here: it spreads 1-D kinks over [-1, 1], while He
            # weights with small biases put them all near x = 0
            torch.manual_seed(config.seed * 1000 + s)
            deep = mlp([1] + [config.fit_width] * k + [1])
            wide = mlp([1, _shallow_width(count_parameters(deep), 1), 1])
            for label, net in (("deep-narrow", deep), ("shallow-wide", wide)):
                net = net.to(device)
                _train(net, x_train, y_train, config.fit_steps)
                net = net.cpu()
                with torch.no_grad():
                    mse = float(torch.mean((net(x_test.cpu()) - y_test.cpu()) ** 2))
                fit_rows.append(
                    {
                        "net": label,
                        "seed": s,
                        "params": count_parameters(net),
                        "test MSE": mse,
                        "affine pieces on [0,1]": count_regions(net, line=_UNIT, kind="affine"),
                        "activation regions": count_regions(net, line=_UNIT),
                        "target pieces": 2**k,
                    }
                )
                fitted.setdefault(label, net)
                task.advance()
    return fit_rows, fitted


def _random_line_fit(
    rand_rows: Sequence[Mapping[str, Any]],
) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Deep nets' mean line regions against their neurons.

    Returns:
        ``(neurons, regions, exponent, regions per neuron)``: the log-log slope ``exponent`` of
        regions against neurons.
    """
    neurons = np.array([r["deep neurons"] for r in rand_rows], dtype=float)
    deep_line_mean = np.array([r["deep regions on line (mean)"] for r in rand_rows])
    return neurons, deep_line_mean, _loglog_slope(neurons, deep_line_mean), deep_line_mean / neurons


def expressivity_checks(
    fits: PathFits,
    saw_rows: Sequence[Mapping[str, Any]],
    rand_rows: Sequence[Mapping[str, Any]],
    *,
    random_depths: Sequence[int],
    random_width: int,
) -> dict[str, bool]:
    """The claim's checks, from the counts alone (pure); training success is not judged.

    Args:
        fits: (a) the paths grid's fits (checked by
            :func:`~deeplimits.experiments.paths.paths_checks`).
        saw_rows: (b1) per sawtooth depth: ``depth L``, ``deep pieces``, ``2^L``,
            ``params (both)``, ``shallow params``, ``shallow bound N+1``.
        rand_rows: (b2) per random depth (in ``random_depths`` order): ``deep neurons``,
            ``deep regions on line (mean)``, ``shallow regions on line (mean)``.
        random_depths, random_width: the random nets' depths and width (for the text).

    Returns:
        Statement (citing its numbers) -> whether it held: the paths checks; exactly ``2^L``
        pieces at equal parameters, more than one hidden layer can have; the line-region
        exponent in neurons within [0.5, 1.5]; shallow-wide >= deep-narrow at every depth >= 2.
    """
    checks = dict(paths_checks(fits))
    last = saw_rows[-1]
    saw_exact = all(r["deep pieces"] == r["2^L"] for r in saw_rows)
    saw_equal_params = all(r["params (both)"] == r["shallow params"] for r in saw_rows)
    checks[
        f"sawtooth: exactly 2^L pieces for L in {[r['depth L'] for r in saw_rows]} "
        f"(L={last['depth L']}: {last['deep pieces']} pieces from {last['params (both)']} "
        f"params, vs at most {last['shallow bound N+1']} for one hidden layer with the same "
        "params)"
    ] = saw_exact and saw_equal_params and last["deep pieces"] > last["shallow bound N+1"]
    _, _, slope, per_neuron = _random_line_fit(rand_rows)
    checks[
        f"random init: regions on a line ∝ neurons^{slope:.2f} over depths "
        f"{list(random_depths)} (width {random_width}; {per_neuron.min():.2f}-"
        f"{per_neuron.max():.2f} per neuron), near-linear, not exponential in depth"
    ] = 0.5 <= slope <= 1.5
    # at L = 1 both nets are the same architecture; compare where they differ
    compared = [r for r, L in zip(rand_rows, random_depths, strict=True) if L >= 2]
    checks[
        "random init at equal params: shallow-wide has at least as many line regions as "
        "deep-narrow at every depth >= 2 (more neurons, Hanin & Rolnick)"
    ] = bool(compared) and all(
        r["shallow regions on line (mean)"] >= r["deep regions on line (mean)"] for r in compared
    )
    return checks


def expressivity_verdict(
    fits: PathFits,
    saw_rows: Sequence[Mapping[str, Any]],
    rand_rows: Sequence[Mapping[str, Any]],
    *,
    random_depths: Sequence[int],
    random_width: int,
) -> Verdict:
    """``reproduced`` iff every :func:`expressivity_checks` check holds (arguments as there).

    Returns:
        The experiment's :class:`Verdict`, its reason listing the checks (or the failed ones).
    """
    checks = expressivity_checks(
        fits, saw_rows, rand_rows, random_depths=random_depths, random_width=random_width
    )
    return Verdict.from_checks(checks, what="exact counts")


@register
class ExpressivityExperiment(Experiment[ExpressivityConfig]):
    name = "expressivity"
    title = "What depth buys: paths and exact linear regions"
    claim = (
        "#params ∈ O(L·n²) while #paths ∈ O(n^L): deeper models can express exponentially more "
        "with the same parameters; linear regions are the honest measure of what a ReLU network "
        "expresses."
    )
    slide = 2
    position = 1  # after `paths`: the slide states #params vs #paths first, then what depth buys
    Config = ExpressivityConfig

    def run(self, config: ExpressivityConfig, progress: Progress) -> Result:
        clock = time.perf_counter()
        timings: dict[str, float] = {}

        def lap(phase: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[phase] = now - clock
            clock = now

        # (a) paths vs params, measured as in the paths experiment
        path_records, fits = measure_paths(config.path_depths, config.path_widths, progress)
        lap("paths")
        # (b1) the constructed sawtooth vs the best one-hidden-layer net of equal parameters
        saw_rows = _sawtooth_rows(config, progress)
        lap("sawtooth")
        # (b2) random init: deep-narrow vs shallow-wide at equal params, 2-D input
        gen = torch.Generator().manual_seed(config.seed)
        rand_rows, maps = _random_init_rows(config, progress, gen)
        lap("random init")
        # (c) fit a 2^k-piece sawtooth with deep-narrow and shallow-wide nets of equal params
        fit_rows, fitted = _fit_rows(config, progress, gen)
        lap("fit")
        # verdict: from the counts only (training success is reported, not judged; see notes)
        verdict = expressivity_verdict(
            fits,
            saw_rows,
            rand_rows,
            random_depths=config.random_depths,
            random_width=config.random_width,
        )
        figures = {
            "params_paths": paths_figure(path_records),
            "regions": self._regions_figure(saw_rows, rand_rows),
            "region_maps": self._maps_figure(maps, _PLANE, rand_rows),
            "sawtooth_fit": self._fit_figure(fitted, config.fit_teeth_depth, _UNIT),
        }
        lap("figures")
        return Result(
            numbers=self._numbers(config, fits, saw_rows, rand_rows, fit_rows),
            verdict=verdict,
            tables=[
                Table.from_records("(b) sawtooth vs one hidden layer at equal params", saw_rows),
                Table.from_records("(b) random init, equal params", rand_rows),
                Table.from_records("(c) fitting a sawtooth target", fit_rows),
                Table.from_records("(a) networks of the paths grid", path_records),
            ],
            figures=figures,
            timings=timings,
            notes=self._notes(config, fit_rows),
        )

    @staticmethod
    def _numbers(
        config: ExpressivityConfig,
        fits: PathFits,
        saw_rows: list[dict[str, Any]],
        rand_rows: list[dict[str, Any]],
        fit_rows: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """The result's numbers from the four parts' measurements."""
        k = config.fit_teeth_depth
        neurons, deep_line_mean, slope, _ = _random_line_fit(rand_rows)
        return {
            "params_exponent_L": fits.params_exponent_L,
            "params_exponent_n": fits.params_exponent_n,
            "paths_slope_vs_L_log_n": fits.paths_slope_vs_L_log_n,
            "paths_fit_r2": fits.paths_fit_r2,
            "sawtooth_pieces": [r["deep pieces"] for r in saw_rows],
            "sawtooth_params": [r["params (both)"] for r in saw_rows],
            "shallow_equal_params_max_pieces": [r["shallow bound N+1"] for r in saw_rows],
            "random_deep_line_regions": deep_line_mean.tolist(),
            "random_deep_neurons": neurons.tolist(),
            "random_line_regions_vs_neurons_exponent": slope,
            "random_shallow_line_regions": [r["shallow regions on line (mean)"] for r in rand_rows],
            "fit_target_pieces": 2**k,
            "fit_deep_test_mse_median": _median(fit_rows, "deep-narrow", "test MSE"),
            "fit_shallow_test_mse_median": _median(fit_rows, "shallow-wide", "test MSE"),
            "fit_deep_pieces_median": _median(fit_rows, "deep-narrow", "affine pieces on [0,1]"),
            "fit_shallow_pieces_median": _median(
                fit_rows, "shallow-wide", "affine pieces on [0,1]"
            ),
        }

    @staticmethod
    def _notes(config: ExpressivityConfig, fit_rows: list[dict[str, Any]]) -> list[str]:
        """The report's caveats, with (c)'s medians."""
        k = config.fit_teeth_depth

        def med(label: str, key: str) -> float:
            return _median(fit_rows, label, key)

        return [
            "Regions are exact (regioncam, float32 geometry); 'pieces' are affine pieces "
            "(neighbouring activation regions with the same affine map merged), 'regions' are "
            "activation regions.",
            "Random nets in (b): He-normal weights N(0, 2/fan_in), biases N(0, 0.1²); the line "
            "runs from "
            "(-1, -0.5) to (1, 0.8), the plane is [-1, 1]². Shallow width N = round((P-1)/(d+2)) "
            "matches the deep net's P parameters to within d+1.",
            f"Fit (c): target = tent map iterated {k} times ({2**k} pieces) on "
            f"{config.fit_points} grid points, full-batch Adam for {config.fit_steps} steps "
            "from PyTorch's default init; "
            f"median test MSE deep {med('deep-narrow', 'test MSE'):.4f} vs shallow "
            f"{med('shallow-wide', 'test MSE'):.4f}; median pieces used "
            f"{med('deep-narrow', 'affine pieces on [0,1]'):.0f} vs "
            f"{med('shallow-wide', 'affine pieces on [0,1]'):.0f} of the {2**k} needed. "
            "This part is reported, not judged: whether gradient descent finds the deep "
            "construction is a question of optimisation, not of what depth can express.",
        ]

    @staticmethod
    def _regions_figure(saw_rows: list[dict[str, Any]], rand_rows: list[dict[str, Any]]) -> Any:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        P = [r["params (both)"] for r in saw_rows]
        axes[0].plot(
            P, [r["deep pieces"] for r in saw_rows], "o-", label="sawtooth (deep, width 2)"
        )
        axes[0].plot(P, [r["shallow bound N+1"] for r in saw_rows], "s-", label="1 hidden layer")
        axes[0].set(
            xlabel="#params",
            ylabel="affine pieces on [0, 1]",
            yscale="log",
            title="constructed: 2^L vs N+1",
        )
        axes[0].legend(fontsize=7)
        Pr = [r["deep params"] for r in rand_rows]
        axes[1].plot(
            Pr, [r["deep regions on line (mean)"] for r in rand_rows], "o-", label="deep-narrow"
        )
        axes[1].plot(
            Pr, [r["shallow regions on line (mean)"] for r in rand_rows], "s-", label="shallow-wide"
        )
        axes[1].set(
            xlabel="#params",
            ylabel="activation regions on a line",
            xscale="log",
            yscale="log",
            title="random init (He)",
        )
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        return fig

    @staticmethod
    def _maps_figure(
        maps: dict[str, nn.Module], plane: Any, rand_rows: list[dict[str, Any]]
    ) -> Any:
        fig, axes = plt.subplots(1, 2, figsize=(9, 4.6))
        for ax, (label, net) in zip(axes, maps.items(), strict=True):
            n_regions = count_regions(net, plane=plane)
            desc = "deep-narrow" if label == "deep" else "shallow-wide"
            region_map(
                net,
                plane=plane,
                ax=ax,
                title=f"{desc}, {count_parameters(net)} params: {n_regions} regions",
            )
        fig.tight_layout()
        return fig

    @staticmethod
    def _fit_figure(fitted: dict[str, nn.Module], k: int, unit: Any) -> Any:
        fig, ax = plt.subplots(figsize=(9, 3.6))
        x = torch.linspace(0, 1, 2001)[:, None]
        ax.plot(x[:, 0], tent_power(x, k)[:, 0], "k-", lw=2, alpha=0.4, label=f"target (2^{k})")
        for (label, net), color in zip(fitted.items(), ("C0", "C1"), strict=False):
            with torch.no_grad():
                ax.plot(
                    x[:, 0],
                    net(x)[:, 0],
                    color=color,
                    lw=1,
                    label=f"{label} ({count_parameters(net)} params)",
                )
            t = region_breakpoints(net, line=unit, kind="affine")[1:-1]
            ax.plot(t, np.full_like(t, -0.08 if color == "C0" else -0.14), "|", color=color)
        ax.set(xlabel="x", ylabel="f(x)", title="trained nets (ticks: their kinks)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        return fig
