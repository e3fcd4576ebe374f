"""Slide 2, continued: what depth buys, measured as exact linear regions and as fits.

The ``paths`` experiment measures #params against #paths; this one measures what the paths buy.

(b) Exact linear regions of deep-narrow vs shallow-wide ReLU nets at equal parameter count:
    for Telgarsky's constructed sawtooth (2^L pieces from 6L+1 parameters) and at random
    (He-normal) initialisation, where Hanin & Rolnick (ICML 2019) found the count roughly linear in
    the number of neurons rather than exponential in depth.
(c) Representable is not learnable: the 2^k-piece sawtooth target, with the deep net of the
    construction's architecture (k ReLU layers of width 2, 6k+1 parameters) and the shallow net
    of equal parameters (2k hidden units: at most 2k+1 < 2^k pieces), trained by full-batch Adam:
    (i) the deep net started at the construction plus N(0, σ²) noise on every parameter, for
    growing σ (how far from the construction training still finds it); (ii) the deep net from
    many random (PyTorch default) starts (the fraction that finds it); (iii) the shallow net at
    its best over as many random starts and one start with its kinks spread evenly.

Thresholds, fixed before any measurement and used by every preset:

- A fit *finds the target* when its test R² = 1 - MSE / Var(target) is at least
  ``1 - 2^-(k+1)``. A function that gets every tooth but one right and is constant on that
  one's ``1/2^k`` of [0, 1] has R² ≤ ``1 - 2^-k`` (the target is uniform on [0, 1] on every
  tooth, so the missed tooth costs its share of the variance); the threshold sits halfway
  between that and a perfect fit, so passing it means every tooth is there.
- "Training finds it near the construction": at least half of the starts at some noise σ > 0
  succeed; "gradient descent from a random start does not find it": fewer than half of
  the random starts succeed (a majority either way, the weakest reading of each statement).

The verdict is computed by the pure functions :func:`expressivity_checks` (counts),
:func:`fit_checks` (fits) and :func:`expressivity_verdict` from these numbers alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
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

__all__ = [
    "ExpressivityConfig",
    "ExpressivityExperiment",
    "FitSummary",
    "expressivity_checks",
    "expressivity_verdict",
    "fit_checks",
    "random_relu_net",
    "train_together",
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
    """Grids for (b) sawtooth and random-init regions and (c) the fits.

    (c): the target is the tent map iterated ``fit_teeth_depth`` = k times (2^k pieces), sampled
    on ``fit_points`` grid points of [0, 1]; every net gets ``fit_steps`` full-batch Adam steps
    (lr 1e-2, cosine decay). ``fit_noise``: the σ of the noise added to the construction, with
    ``fit_noise_starts`` starts each; ``fit_restarts``: random starts of the deep and of the
    shallow net each.
    """

    saw_depths: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 10, 12)
    random_width: int = 16
    random_depths: tuple[int, ...] = (1, 2, 4, 8)
    random_seeds: int = 3
    fit_teeth_depth: int = 4  # target: tent map iterated k times, 2^k pieces
    fit_steps: int = 1000
    fit_points: int = 256
    fit_noise: tuple[float, ...] = (0.0, 0.001, 0.01, 0.1, 1.0)
    fit_noise_starts: int = 4
    fit_restarts: int = 16

    @classmethod
    def quick(cls) -> ExpressivityConfig:
        return cls()

    @classmethod
    def full(cls) -> ExpressivityConfig:
        return cls(
            random_depths=(1, 2, 4, 8, 16, 32),
            random_seeds=10,
            fit_steps=4000,
            fit_noise=(0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0),
            fit_noise_starts=8,
            fit_restarts=64,
        )


def _loglog_slope(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def train_together(
    nets: Sequence[nn.Sequential],
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    lr: float = 1e-2,
    on_step: Callable[[], object] | None = None,
) -> list[float]:
    """Train nets of one architecture independently but in one batched loop; in place.

    Each net gets full-batch Adam (``lr``, cosine decay to 0 over ``steps``) on its own mean
    squared error. Their weights are stacked into ``(R, out, in)`` tensors and applied with
    ``torch.baddbmm``; the summed loss has each net's own loss gradient, and Adam's update is
    element-wise, so this is the same training as one loop per net (up to float summation
    order), in one pass instead of R.

    Args:
        nets: ``R >= 1`` ``nn.Sequential`` of ``nn.Linear`` and ``nn.ReLU`` with the same shapes.
        x: inputs ``(N, d_in)``; y: targets ``(N, d_out)``.
        steps: Adam steps.
        on_step: called after every step (progress).

    Returns:
        Each net's final training MSE (a list of R floats). The nets' parameters are updated.

    Raises:
        ValueError: no nets, a layer other than Linear/ReLU, or architectures that differ.
    """
    if not nets:
        raise ValueError("nets is empty; give at least one network to train")
    shapes = [tuple(type(m).__name__ for m in n) for n in nets]
    if any(not set(sh) <= {"Linear", "ReLU"} for sh in shapes):
        raise ValueError(f"train_together takes Linear and ReLU layers only, got {shapes[0]}")
    sizes = [[tuple(p.shape) for p in n.parameters()] for n in nets]
    if any(sz != sizes[0] or sh != shapes[0] for sz, sh in zip(sizes, shapes, strict=True)):
        raise ValueError("train_together needs nets of one architecture; got different shapes")
    lins = [[m for m in n if isinstance(m, nn.Linear)] for n in nets]
    ws = [torch.stack([ls[j].weight.detach() for ls in lins]).clone().requires_grad_() for j in
          range(len(lins[0]))]  # (R, out, in) each
    bs = [torch.stack([ls[j].bias.detach() for ls in lins]).clone().requires_grad_() for j in
          range(len(lins[0]))]  # (R, out) each
    xb = x.expand(len(nets), *x.shape)  # (R, N, d_in)

    def forward() -> torch.Tensor:
        h = xb
        for j, (w, b) in enumerate(zip(ws, bs, strict=True)):
            h = torch.baddbmm(b[:, None, :], h, w.transpose(1, 2))
            if j < len(ws) - 1:
                h = torch.relu(h)
        return h  # (R, N, d_out)

    opt = torch.optim.Adam([*ws, *bs], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        opt.zero_grad()
        per_net = ((forward() - y) ** 2).mean(dim=(1, 2))  # (R,)
        per_net.sum().backward()
        opt.step()
        sched.step()
        if on_step is not None:
            on_step()
    with torch.no_grad():
        final = ((forward() - y) ** 2).mean(dim=(1, 2))
        for r, ls in enumerate(lins):
            for j, lin in enumerate(ls):
                lin.weight.copy_(ws[j][r])
                lin.bias.copy_(bs[j][r])
    return final.tolist()


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


def r2_needed(teeth_depth: int) -> float:
    """The test R² a fit of the ``2^k``-piece target needs to count as found: ``1 - 2^-(k+1)``.

    Halfway between a perfect fit (1) and one that misses a single tooth (at most ``1 - 2^-k``);
    see the module docstring.
    """
    return 1.0 - 2.0 ** -(teeth_depth + 1)


@dataclass(frozen=True)
class FitSummary:
    """(c)'s measurements, as :func:`fit_checks` judges them.

    Attributes:
        teeth_depth: k; the target has ``2^k`` pieces.
        r2_needed: the test R² counted as finding the target (:func:`r2_needed`).
        construction_r2: test R² of the untrained construction (``sawtooth(k)``).
        construction_params: its parameters, ``6k + 1``; the shallow net has as many.
        noise: the σ of the noise added to the construction, ascending.
        noise_found: per σ, the fraction of its starts whose trained net found the target.
        random_found: fraction of the deep net's random starts that found it.
        random_starts: how many random starts (deep; as many shallow).
        shallow_best_r2: the best test R² of the shallow net, over its random starts and the
            start with its kinks spread evenly over [0, 1] (NaN if all diverged).
        shallow_max_pieces: the most pieces the shallow net can have, ``2k + 1``.
    """

    teeth_depth: int
    r2_needed: float
    construction_r2: float
    construction_params: int
    noise: tuple[float, ...]
    noise_found: tuple[float, ...]
    random_found: float
    random_starts: int
    shallow_best_r2: float
    shallow_max_pieces: int

    def reach(self) -> float | None:
        """The largest σ > 0 at which at least half of the starts found the target (None if
        at no σ > 0)."""
        return _reach(self.noise, self.noise_found)


def _reach(noise: Sequence[float], found: Sequence[float]) -> float | None:
    """The largest σ > 0 whose fraction ``found`` is at least 1/2, or None (see
    :meth:`FitSummary.reach`)."""
    ok = [sigma for sigma, f in zip(noise, found, strict=True) if sigma > 0 and f >= 0.5]
    return max(ok) if ok else None


def fit_checks(summary: FitSummary) -> dict[str, bool]:
    """(c)'s checks, from :class:`FitSummary` alone (pure): representable, not learnable.

    Returns:
        Statement (citing its numbers) -> whether it held: the construction's R² reaches
        ``r2_needed``; at some σ > 0 at least half of the starts find the target (the largest
        such σ is cited: :meth:`FitSummary.reach`); fewer than half of the deep net's random
        starts find it; the shallow net's best R² stays below ``r2_needed``. With no σ > 0
        measured, the second check fails (nothing shows that training can find it).
    """
    s = summary
    thr = s.r2_needed
    pieces = 2**s.teeth_depth
    checks = {
        f"representable: the deep construction ({s.construction_params} params) fits the "
        f"{pieces}-piece target with test R² {s.construction_r2:.4f} >= {thr:.4f}": (
            s.construction_r2 >= thr
        )
    }
    reach = s.reach()
    if reach is not None:
        found = s.noise_found[s.noise.index(reach)]
        text = (
            f"learnable near it: from the construction + N(0, {reach:g}²) noise, {found:.2f} of "
            "the starts train to R² >= the threshold, >= 1/2"
        )
    else:
        text = (
            "learnable near it: at no noise σ > 0 in "
            f"{[sg for sg in s.noise if sg > 0]} do half of the starts train to the threshold"
        )
    checks[text] = reach is not None
    checks[
        f"not found from random starts: {s.random_found:.2f} of {s.random_starts} random starts "
        "of the same deep net reach it, < 1/2"
    ] = s.random_found < 0.5
    checks[
        f"the shallow net of equal params (at most {s.shallow_max_pieces} pieces) at its best over "
        f"{s.random_starts} random starts and one with spread kinks: R² {s.shallow_best_r2:.4f} "
        f"< {thr:.4f}"
    ] = s.shallow_best_r2 < thr
    return checks


def _fits(
    config: ExpressivityConfig, progress: Progress, gen: torch.Generator
) -> tuple[list[dict[str, Any]], FitSummary, dict[str, nn.Module]]:
    """(c) train the construction + noise, random deep starts and random shallow starts.

    Returns:
        ``(records, summary, shown)``: one record per trained net (start, σ, params, test R²,
        found, affine pieces on [0, 1]), the :class:`FitSummary`, and the nets the figure shows
        (the best of each kind of start).
    """
    device = config.torch_device()
    k = config.fit_teeth_depth
    x_train = torch.linspace(0, 1, config.fit_points, device=device)[:, None]  # (N, 1)
    y_train = tent_power(x_train, k)
    x_test = torch.rand(8192, 1, generator=gen)  # (8192, 1), CPU
    y_test = tent_power(x_test, k)
    var = float(y_test.var(unbiased=False))
    thr = r2_needed(k)

    def r2(net: nn.Module) -> float:
        with torch.no_grad():
            return 1.0 - float(torch.mean((net(x_test) - y_test) ** 2)) / var

    starts: list[tuple[str, float | None, nn.Sequential]] = []
    for sigma in config.fit_noise:
        for _ in range(config.fit_noise_starts):
            net = sawtooth(k)
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(torch.randn(p.shape, generator=gen) * sigma)
            starts.append(("construction + noise", sigma, net))
    # PyTorch's default init, as anyone would start: it spreads 1-D kinks over [-1, 1]
    torch.manual_seed(config.seed * 1000 + 1)
    starts += [("random, deep", None, mlp([1] + [2] * k + [1])) for _ in range(config.fit_restarts)]
    starts += [("random, shallow", None, mlp([1, 2 * k, 1])) for _ in range(config.fit_restarts)]
    # the shallow net's best chance: its 2k kinks spread evenly over [0, 1], a zig-zag
    spread = ((np.arange(2 * k) + 0.5) / (2 * k)).tolist()
    starts.append(("spread kinks, shallow", None, one_hidden_layer(spread)))

    groups = ("construction + noise", "random, deep", "random, shallow", "spread kinks, shallow")
    # one batched loop per architecture: the deep starts (noisy and random) share one
    for label, members in (("deep", groups[:2]), ("shallow", groups[2:])):
        nets = [n.to(device) for g, _, n in starts if g in members]
        with progress.task(f"fit: {label} nets ({len(nets)})", total=config.fit_steps) as task:
            train_together(nets, x_train, y_train, config.fit_steps, on_step=task.advance)
    records = []
    with progress.task("fit: count pieces", total=len(starts)) as task:
        for group, sigma, net in starts:
            net = net.cpu()
            score = r2(net)
            records.append(
                {
                    "start": group,
                    "σ": sigma,
                    "params": count_parameters(net),
                    "test R²": score,
                    "found": bool(score >= thr),
                    "affine pieces on [0,1]": count_regions(net, line=_UNIT, kind="affine"),
                }
            )
            task.advance()

    def found(rows: list[dict[str, Any]]) -> float:
        return float(np.mean([r["found"] for r in rows]))

    shallow_r2 = [r["test R²"] for r in records if r["start"] in groups[2:]]
    summary = FitSummary(
        teeth_depth=k,
        r2_needed=thr,
        construction_r2=r2(sawtooth(k)),
        construction_params=sawtooth_parameters(k),
        noise=tuple(sorted(config.fit_noise)),
        noise_found=tuple(
            found([r for r in records if r["σ"] == sigma]) for sigma in sorted(config.fit_noise)
        ),
        random_found=found([r for r in records if r["start"] == "random, deep"]),
        random_starts=config.fit_restarts,
        shallow_best_r2=(
            float(np.nanmax(shallow_r2)) if np.isfinite(shallow_r2).any() else math.nan
        ),
        shallow_max_pieces=2 * k + 1,
    )
    shown: dict[str, nn.Module] = {}
    for group in groups:
        best = max(
            (i for i, r in enumerate(records) if r["start"] == group and r["σ"] != 0.0),
            key=lambda i: np.nan_to_num(records[i]["test R²"], nan=-np.inf),
            default=None,
        )
        if best is not None:
            shown[f"{group} (best, R² {records[best]['test R²']:.3f})"] = starts[best][2]
    return records, summary, shown


def _fit_tables(records: Sequence[Mapping[str, Any]]) -> tuple[Table, Table]:
    """Per σ of the noisy starts, and per kind of random start: found fraction, R², pieces."""
    by_sigma = []
    for sigma in sorted({r["σ"] for r in records if r["σ"] is not None}):
        rows = [r for r in records if r["σ"] == sigma]
        by_sigma.append(
            {
                "σ": sigma,
                "starts": len(rows),
                "found": float(np.mean([r["found"] for r in rows])),
                "median R²": float(np.median([r["test R²"] for r in rows])),
                "median pieces": float(np.median([r["affine pieces on [0,1]"] for r in rows])),
            }
        )
    by_start = []
    for group in ("random, deep", "random, shallow", "spread kinks, shallow"):
        rows = [r for r in records if r["start"] == group]
        by_start.append(
            {
                "start": group,
                "params": rows[0]["params"],
                "starts": len(rows),
                "found": float(np.mean([r["found"] for r in rows])),
                "best R²": float(np.nanmax([r["test R²"] for r in rows])),
                "median R²": float(np.median([r["test R²"] for r in rows])),
                "most pieces": max(r["affine pieces on [0,1]"] for r in rows),
            }
        )
    return (
        Table.from_records("(c i) the construction + N(0, σ²) noise, trained", by_sigma),
        Table.from_records("(c ii, iii) random starts, trained", by_start),
    )


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
    saw_rows: Sequence[Mapping[str, Any]],
    rand_rows: Sequence[Mapping[str, Any]],
    *,
    random_depths: Sequence[int],
    random_width: int,
) -> dict[str, bool]:
    """(b)'s checks, from the exact counts alone (pure).

    Args:
        saw_rows: (b1) per sawtooth depth: ``depth L``, ``deep pieces``, ``2^L``,
            ``params (both)``, ``shallow params``, ``shallow bound N+1``.
        rand_rows: (b2) per random depth (in ``random_depths`` order): ``deep neurons``,
            ``deep regions on line (mean)``, ``shallow regions on line (mean)``.
        random_depths, random_width: the random nets' depths and width (for the text).

    Returns:
        Statement (citing its numbers) -> whether it held: exactly ``2^L`` pieces at equal
        parameters, more than one hidden layer can have; the line-region exponent in neurons
        within [0.5, 1.5]; shallow-wide >= deep-narrow at every depth >= 2.

    Raises:
        ValueError: ``random_depths`` and ``rand_rows`` differ in length.
    """
    checks: dict[str, bool] = {}
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
    saw_rows: Sequence[Mapping[str, Any]],
    rand_rows: Sequence[Mapping[str, Any]],
    fit: FitSummary,
    *,
    random_depths: Sequence[int],
    random_width: int,
) -> Verdict:
    """``reproduced`` iff every :func:`expressivity_checks` and :func:`fit_checks` check holds.

    Args:
        saw_rows, rand_rows, random_depths, random_width: as for :func:`expressivity_checks`.
        fit: (c)'s :class:`FitSummary`.

    Returns:
        The experiment's :class:`Verdict`, its reason listing the checks (or the failed ones).
    """
    checks = expressivity_checks(
        saw_rows, rand_rows, random_depths=random_depths, random_width=random_width
    )
    return Verdict.from_checks(checks | fit_checks(fit), what="exact counts and fits")


@register
class ExpressivityExperiment(Experiment[ExpressivityConfig]):
    name = "expressivity"
    title = "What depth buys: exact linear regions, and what training finds"
    claim = (
        "#paths ∈ O(n^L): deeper models can express exponentially more with the same "
        "parameters; linear regions are the honest measure of what a ReLU network expresses, "
        "and what a network can express is not what gradient descent finds."
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

        # (b1) the constructed sawtooth vs the best one-hidden-layer net of equal parameters
        saw_rows = _sawtooth_rows(config, progress)
        lap("sawtooth")
        # (b2) random init: deep-narrow vs shallow-wide at equal params, 2-D input
        gen = torch.Generator().manual_seed(config.seed)
        rand_rows, maps = _random_init_rows(config, progress, gen)
        lap("random init")
        # (c) representable vs learnable: construction + noise, random deep and shallow starts
        fit_records, fit, shown = _fits(config, progress, gen)
        lap("fit")
        verdict = expressivity_verdict(
            saw_rows,
            rand_rows,
            fit,
            random_depths=config.random_depths,
            random_width=config.random_width,
        )
        figures = {
            "regions": self._regions_figure(saw_rows, rand_rows),
            "region_maps": self._maps_figure(maps, _PLANE, rand_rows),
            "sawtooth_fit": self._fit_figure(fit, shown, _UNIT),
        }
        lap("figures")
        return Result(
            numbers=self._numbers(rand_rows, saw_rows, fit),
            verdict=verdict,
            tables=[
                Table.from_records("(b) sawtooth vs one hidden layer at equal params", saw_rows),
                Table.from_records("(b) random init, equal params", rand_rows),
                *_fit_tables(fit_records),
            ],
            figures=figures,
            timings=timings,
            notes=self._notes(config, fit),
        )

    @staticmethod
    def _numbers(
        rand_rows: list[dict[str, Any]], saw_rows: list[dict[str, Any]], fit: FitSummary
    ) -> dict[str, Any]:
        """The result's numbers from (b)'s counts and (c)'s summary."""
        neurons, deep_line_mean, slope, _ = _random_line_fit(rand_rows)
        return {
            "sawtooth_pieces": [r["deep pieces"] for r in saw_rows],
            "sawtooth_params": [r["params (both)"] for r in saw_rows],
            "shallow_equal_params_max_pieces": [r["shallow bound N+1"] for r in saw_rows],
            "random_deep_line_regions": deep_line_mean.tolist(),
            "random_deep_neurons": neurons.tolist(),
            "random_line_regions_vs_neurons_exponent": slope,
            "random_shallow_line_regions": [r["shallow regions on line (mean)"] for r in rand_rows],
            "fit_target_pieces": 2**fit.teeth_depth,
            "fit_r2_needed": fit.r2_needed,
            "fit_construction_r2": fit.construction_r2,
            "fit_params": fit.construction_params,
            "fit_noise": list(fit.noise),
            "fit_noise_found": list(fit.noise_found),
            "fit_noise_reach": fit.reach(),
            "fit_random_deep_found": fit.random_found,
            "fit_random_starts": fit.random_starts,
            "fit_shallow_best_r2": fit.shallow_best_r2,
        }

    @staticmethod
    def _notes(config: ExpressivityConfig, fit: FitSummary) -> list[str]:
        """The report's caveats and (c)'s protocol."""
        k = config.fit_teeth_depth
        reach = fit.reach()
        return [
            "Regions are exact (regioncam, float32 geometry); 'pieces' are affine pieces "
            "(neighbouring activation regions with the same affine map merged), 'regions' are "
            "activation regions.",
            "Random nets in (b): He-normal weights N(0, 2/fan_in), biases N(0, 0.1²); the line "
            "runs from "
            "(-1, -0.5) to (1, 0.8), the plane is [-1, 1]². Shallow width N = round((P-1)/(d+2)) "
            "matches the deep net's P parameters to within d+1.",
            f"Fits (c): target = tent map iterated {k} times ({2**k} pieces) on "
            f"{config.fit_points} grid points of [0, 1]; every net gets {config.fit_steps} "
            "full-batch Adam steps (lr 0.01, cosine decay); test R² on 8192 uniform points. "
            f"Found = test R² >= 1 - 2^-{k + 1} = {fit.r2_needed:.4f}: halfway between a perfect "
            f"fit and one missing a single tooth (R² <= 1 - 2^-{k}), fixed before measuring. "
            f"Deep net: the construction's architecture ({k} ReLU layers of width 2, "
            f"{fit.construction_params} params); shallow: {2 * k} hidden units, as many params, "
            f"at most {2 * k + 1} pieces. Noisy starts: the construction + N(0, σ²) on every "
            f"parameter, {config.fit_noise_starts} starts per σ; random starts: PyTorch's "
            f"default init, {config.fit_restarts} each; the shallow net also from its {2 * k} "
            "kinks spread evenly over [0, 1] (a zig-zag).",
            "The largest noise σ > 0 from which at least half of the starts still find the "
            "target: "
            + (f"{reach:g}" if reach is not None else "none")
            + f"; from random starts "
            f"{fit.random_found:.0%} of the deep nets find it; the shallow net's best R² is "
            f"{fit.shallow_best_r2:.4f}.",
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
    def _fit_figure(fit: FitSummary, shown: dict[str, nn.Module], unit: Any) -> Any:
        fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [1, 1.6]})
        ax = axes[0]
        ax.plot(fit.noise, fit.noise_found, "o-", label="construction + N(0, σ²), trained")
        ax.axhline(fit.random_found, color="C1", ls="--", label="deep net, random starts")
        ax.axhline(0.5, color="gray", lw=0.8, ls=":", label="half of the starts")
        positive = [sigma for sigma in fit.noise if sigma > 0]
        # linear around 0 (the construction itself), logarithmic from the smallest σ > 0 on
        ax.set_xscale("symlog", linthresh=min(positive) if positive else 1.0)
        ax.set_xticks(fit.noise, [f"{sigma:g}" for sigma in fit.noise], fontsize=7)
        ax.set(
            xlabel="σ of the noise on the construction's parameters",
            ylabel=f"fraction that finds it (R² ≥ {fit.r2_needed:.3f})",
            ylim=(-0.03, 1.03),
            title="how far from the construction training still finds it",
        )
        ax.legend(fontsize=7)
        ax = axes[1]
        k = fit.teeth_depth
        x = torch.linspace(0, 1, 2001)[:, None]
        ax.plot(x[:, 0], tent_power(x, k)[:, 0], "k-", lw=2, alpha=0.4, label=f"target (2^{k})")
        for i, (label, net) in enumerate(shown.items()):
            color = f"C{i}"
            with torch.no_grad():
                ax.plot(x[:, 0], net(x)[:, 0], color=color, lw=1, label=label)
            t = region_breakpoints(net, line=unit, kind="affine")[1:-1]
            ax.plot(t, np.full_like(t, -0.08 - 0.06 * i), "|", color=color)
        ax.set(xlabel="x", ylabel="f(x)", title="trained nets (ticks: their kinks)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        return fig
