"""Slide 1: networks are continuous, so they cannot represent a discontinuous classifier.

(a) 1-D: MLPs of growing width and training length fit the unit step H(x) = [x >= 0]. On a
    fine grid around the jump the sup-norm error stays >= 0.5 (a continuous f has
    max(|f(0⁻) − 0|, |f(0) − 1|) >= 1/2) while the L2 error goes to 0; the transition width δ
    (output from 0.1 to 0.9) shrinks, but δ × Lipschitz >= 0.8 × the jump (mean-value theorem).
(b) The lecture's cat/dog/house classifier with real images: scikit-learn digits, fine classes
    **0 = "cat", 6 = "dog"** (super-class *animal*) and **7 = "house"** (*no animal*). Along
    straight paths from an animal image to a house image, the predicted probability of *animal*
    is continuous and crosses 0.5. On test images: the smallest label-flipping perturbation found
    (DeepFool + bisection) vs the certified radius margin / (√2·L) (Tsuzuku et al. 2018) vs the
    distance to the nearest image of the other super-class. Two networks: one trained end-to-end
    on the super-classes, one trained on the three fine classes and mapped afterwards (label =
    super-class of the fine argmax).

The verdict is computed by the pure functions :func:`continuity_checks` (statement -> held) and
:func:`continuity_verdict` from the measured numbers alone.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from deeplimits.constructions import mlp
from deeplimits.diagnostics import (
    certified_radius,
    flip_distance,
    lipschitz_lower,
    lipschitz_upper,
)
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
    "FINE_CLASSES",
    "ContinuityConfig",
    "ContinuityExperiment",
    "GroupMaxClassifier",
    "continuity_checks",
    "continuity_verdict",
]

# The lecture's three images as digits; super-class 1 = "animal", 0 = "no animal".
FINE_CLASSES: dict[int, tuple[str, int]] = {0: ("cat", 1), 6: ("dog", 1), 7: ("house", 0)}
SUPER_NAMES = ("no animal", "animal")


@dataclass(frozen=True)
class ContinuityConfig(ExperimentConfig):
    """(a) step fits: ``widths`` × checkpoints ``steps``; (b) digits: MLP ``hidden`` × 2 layers."""

    widths: tuple[int, ...] = (4, 16, 64)
    steps: tuple[int, ...] = (100, 300, 1000)
    n_train_1d: int = 512
    lr_1d: float = 1e-2
    hidden: int = 16
    digit_steps: int = 200
    n_eval: int = 100
    n_paths: int = 12
    path_points: int = 201
    lipschitz_method: str = "eclipse-fast"

    @classmethod
    def quick(cls) -> ContinuityConfig:
        return cls()

    @classmethod
    def full(cls) -> ContinuityConfig:
        return cls(
            widths=(4, 16, 64, 256),
            steps=(100, 400, 1600, 6400),
            n_train_1d=2048,
            hidden=32,
            digit_steps=1000,
            n_eval=1000,  # all test images
            n_paths=40,
            path_points=1001,
            lipschitz_method="eclipse",  # ECLipsE's SDPs: seconds per net on 2 cores
        )


def _mlp(n_in: int, width: int, n_out: int) -> nn.Sequential:
    return mlp([n_in, width, width, n_out])


class GroupMaxClassifier(nn.Module):
    """Fine-class logits mapped to super-class logits: s_g(x) = max over fine classes in g.

    Its label is the super-class of the fine argmax ("mapped afterwards"). Since the groups are
    disjoint, ||s(x) − s(y)||_2 <= ||z(x) − z(y)||_2, so any Lipschitz bound of the fine network
    is one for s, and Tsuzuku's radius with it is valid.
    """

    def __init__(self, fine: nn.Module, groups: list[list[int]]) -> None:
        super().__init__()
        self.fine = fine
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, 64) -> (batch, n_groups)
        z = self.fine(x)
        return torch.stack([z[:, g].max(dim=1).values for g in self.groups], dim=1)


def _step_metrics(model: nn.Module, device: torch.device) -> dict[str, float]:
    """Sup and L2 error, transition width δ and measured Lipschitz constant of a 1-D fit."""
    uniform = torch.linspace(-1, 1, 20001, device=device)
    near = torch.linspace(-0.05, 0.05, 20001, device=device)
    # 0 and the float32 number just left of 0 pin down f(0) and f(0⁻).
    edge = torch.tensor([0.0, -1e-30], device=device)
    grid = torch.cat([uniform, near, edge]).unique()  # sorted
    with torch.no_grad():
        f = model(grid[:, None])[:, 0]
        target = (grid >= 0).float()
        sup = float((f - target).abs().max())
        fu = model(uniform[:, None])[:, 0]
        l2 = float(((fu - (uniform >= 0).float()) ** 2).mean().sqrt())
        # Chord slopes between neighbouring grid points: each is a lower bound on L.
        chord = float(((f[1:] - f[:-1]).abs() / (grid[1:] - grid[:-1])).max())
    # Transition: around the 0.5-crossing nearest to 0, the last point <= 0.1 before it and the
    # first point >= 0.9 after it.
    fn, gn = f.cpu().numpy(), grid.cpu().numpy()
    cross = np.nonzero((fn[:-1] < 0.5) & (fn[1:] >= 0.5))[0]
    delta = math.nan
    if cross.size:
        c = cross[np.argmin(np.abs(gn[cross]))]
        lo = np.nonzero(fn[: c + 1] <= 0.1)[0]
        hi = np.nonzero(fn[c + 1 :] >= 0.9)[0]
        if lo.size and hi.size:
            delta = float(gn[c + 1 + hi[0]] - gn[lo[-1]])
    start = near[::200, None].contiguous()  # 101 start points across the jump
    lip = max(chord, lipschitz_lower(model, start, steps=10, step_size=0.01))
    return {"sup_error": sup, "l2_error": l2, "delta": delta, "lipschitz_measured": lip}


def _fit_step(
    config: ContinuityConfig, progress: Progress, xs: torch.Tensor
) -> tuple[list[dict[str, float]], dict[int, np.ndarray]]:
    """Fit records per (width, checkpoint) and each width's final fit evaluated on ``xs``."""
    dev = config.torch_device()
    curves: dict[int, np.ndarray] = {}
    x = torch.linspace(-1, 1, config.n_train_1d, device=dev)[:, None]  # (n, 1)
    y = (x >= 0).float()
    records: list[dict[str, float]] = []
    checkpoints = sorted(config.steps)
    with progress.task("(a) fit the unit step", total=len(config.widths) * checkpoints[-1]) as t:
        for width in config.widths:
            model = _mlp(1, width, 1).to(dev)
            opt = torch.optim.Adam(model.parameters(), lr=config.lr_1d)
            for step in range(1, checkpoints[-1] + 1):
                opt.zero_grad()
                loss = ((model(x) - y) ** 2).mean()
                loss.backward()
                opt.step()
                t.advance()
                if step in checkpoints:
                    m = _step_metrics(model, dev)
                    records.append({"width": width, "steps": step, **m})
            with torch.no_grad():
                curves[width] = model(xs.to(dev)[:, None])[:, 0].cpu().numpy()
    return records, curves


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()


def _digits(config: ContinuityConfig) -> dict[str, torch.Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    keep = np.isin(data.target, list(FINE_CLASSES))
    x = (data.data[keep] / 16.0).astype(np.float32)  # (n, 64) in [0, 1]
    fine_digit = data.target[keep]
    fine_idx = np.array([sorted(FINE_CLASSES).index(d) for d in fine_digit])
    sup = np.array([FINE_CLASSES[d][1] for d in fine_digit])
    tr, te = train_test_split(
        np.arange(len(x)), test_size=0.4, random_state=config.seed, stratify=fine_idx
    )
    dev = config.torch_device()

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, device=dev)

    return {
        "x": t(x),
        "fine": t(fine_idx),
        "super": t(sup),
        "train": t(tr),
        "test": t(te[: config.n_eval]),
    }


def _p_animal_e2e(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).softmax(dim=1)[:, 1]


def _p_animal_fine(fine: nn.Module, animal_idx: list[int], x: torch.Tensor) -> torch.Tensor:
    return fine(x).softmax(dim=1)[:, animal_idx].sum(dim=1)


@dataclass(frozen=True)
class _StepSummary:
    """What the verdict and the numbers read off the step fits (see :func:`_summarise_steps`)."""

    n_fits: int
    min_sup_error: float
    w_min: int
    w_max: int
    s_min: int
    s_max: int
    l2_first: float  # narrowest width, fewest steps
    l2_last: float  # widest width, most steps
    l2_along_steps: list[float]  # widest width, by increasing steps
    n_with_delta: int
    min_delta_times_lipschitz: float  # nan when no fit has a transition
    delta_first: float  # the first fit (in record order) with a transition; nan if none
    delta_last: float  # widest width, most steps


def _summarise_steps(fits: Sequence[Mapping[str, float]]) -> _StepSummary:
    """Summarise the (a) fit records: one per width and checkpoint, as from :func:`_fit_step`.

    Returns:
        The :class:`_StepSummary` the verdict and the numbers are computed from.
    """
    by = {(r["width"], r["steps"]): r for r in fits}
    widths = [r["width"] for r in fits]
    steps = sorted({r["steps"] for r in fits})
    w_min, w_max, s_min, s_max = min(widths), max(widths), steps[0], steps[-1]
    with_delta = [r for r in fits if math.isfinite(r["delta"])]
    prod = [r["delta"] * r["lipschitz_measured"] for r in with_delta]
    return _StepSummary(
        n_fits=len(fits),
        min_sup_error=min(r["sup_error"] for r in fits),
        w_min=int(w_min),
        w_max=int(w_max),
        s_min=int(s_min),
        s_max=int(s_max),
        l2_first=by[(w_min, s_min)]["l2_error"],
        l2_last=by[(w_max, s_max)]["l2_error"],
        l2_along_steps=[by[(w_max, s)]["l2_error"] for s in steps],
        n_with_delta=len(with_delta),
        min_delta_times_lipschitz=min(prod) if prod else math.nan,
        delta_first=with_delta[0]["delta"] if with_delta else math.nan,
        delta_last=by[(w_max, s_max)]["delta"],
    )


@dataclass(frozen=True)
class _Paths:
    """(b) straight paths from animal to house images: p(animal) along each, per network."""

    ts: torch.Tensor  # (points,)
    p_animal: dict[str, torch.Tensor]  # network -> (paths, points)
    n_paths: int
    crossing: dict[str, int]  # network -> paths going from p > 0.5 to p < 0.5
    max_step: dict[str, float]  # network -> largest |Δp| between neighbouring points
    step_bound_e2e: float  # the end-to-end net's Lipschitz bound on that step


def continuity_checks(
    fits: Sequence[Mapping[str, float]],
    *,
    n_paths: int,
    crossing: Mapping[str, int],
    max_step: Mapping[str, float],
    step_bound_e2e: float,
    digits: Mapping[str, Mapping[str, Any]],
) -> dict[str, bool]:
    """The continuity claim's checks, from the measured numbers alone (pure).

    Args:
        fits: (a) one record per width and checkpoint: width, steps, sup_error, l2_error,
            delta (nan without a transition), lipschitz_measured.
        n_paths: (b) number of animal → house paths.
        crossing: per network (``"end-to-end"``, ``"fine, mapped"``), paths crossing p = 0.5.
        max_step: per network, the largest step in p(animal) along the paths.
        step_bound_e2e: the Lipschitz bound on the end-to-end network's step.
        digits: per network, ``certified_le_found`` and ``median_ratio_flip_to_nearest``.

    Returns:
        Statement (citing its numbers) -> whether it held, in the order of the report.
    """
    a = _summarise_steps(fits)
    e, f = digits["end-to-end"], digits["fine, mapped"]
    jump = 1.0
    return {
        f"(a) sup error >= 0.5 for all {a.n_fits} fits (min {a.min_sup_error:.3f})": (
            a.min_sup_error >= 0.5
        ),
        f"(a) L2 error falls from {a.l2_first:.4f} (width {a.w_min}, {a.s_min} steps) to "
        f"{a.l2_last:.4f} (width {a.w_max}, {a.s_max} steps)": a.l2_last < 0.5 * a.l2_first
        and all(later <= earlier * 1.05 for earlier, later in itertools.pairwise(a.l2_along_steps)),
        f"(a) δ·L >= 0.8·jump for all {a.n_with_delta} fits with a transition "
        f"(min {a.min_delta_times_lipschitz:.3f}); δ shrinks to {a.delta_last:.2e}": (
            a.n_with_delta > 0
            and a.min_delta_times_lipschitz >= 0.8 * jump
            and a.delta_last < a.delta_first
        ),
        f"(b) all {n_paths} paths cross p = 0.5 (end-to-end {crossing['end-to-end']}, "
        f"mapped {crossing['fine, mapped']}); max step in p {max_step['end-to-end']:.3f} "
        f"<= Lipschitz bound {step_bound_e2e:.3f}": n_paths > 0
        and all(c == n_paths for c in crossing.values())
        and max_step["end-to-end"] <= step_bound_e2e,
        "(b) certified radius <= found flip distance on every test image (both nets)": bool(
            e["certified_le_found"] and f["certified_le_found"]
        ),
        f"(b) median flip distance / distance to nearest other-class image = "
        f"{e['median_ratio_flip_to_nearest']:.3f} (end-to-end), "
        f"{f['median_ratio_flip_to_nearest']:.3f} (mapped) < 0.5": (
            e["median_ratio_flip_to_nearest"] < 0.5 and f["median_ratio_flip_to_nearest"] < 0.5
        ),
    }


def continuity_verdict(
    fits: Sequence[Mapping[str, float]],
    *,
    n_paths: int,
    crossing: Mapping[str, int],
    max_step: Mapping[str, float],
    step_bound_e2e: float,
    digits: Mapping[str, Mapping[str, Any]],
) -> Verdict:
    """``reproduced`` iff every :func:`continuity_checks` check holds (arguments as there).

    Returns:
        The experiment's :class:`Verdict`, its reason listing the checks (or the failed ones).
    """
    checks = continuity_checks(
        fits,
        n_paths=n_paths,
        crossing=crossing,
        max_step=max_step,
        step_bound_e2e=step_bound_e2e,
        digits=digits,
    )
    return Verdict.from_checks(checks, what="continuous networks")


def _train_digit_classifiers(
    config: ContinuityConfig, progress: Progress, d: Mapping[str, torch.Tensor]
) -> tuple[nn.Module, nn.Module, GroupMaxClassifier, list[int]]:
    """(b) train the end-to-end and the fine-class net on the training digits.

    Returns:
        ``(e2e, fine, mapped, animal_idx)``: the two trained nets, the fine net mapped to the
        super-classes, and the fine-class indices of the animals.
    """
    x, tr = d["x"], d["train"]
    fine_sorted = sorted(FINE_CLASSES)
    animal_idx = [i for i, dig in enumerate(fine_sorted) if FINE_CLASSES[dig][1] == 1]
    groups = [[i for i in range(len(fine_sorted)) if i not in animal_idx], animal_idx]
    with progress.task("(b) train the digit classifiers", total=2) as t:
        e2e = _mlp(64, config.hidden, 2).to(x.device)
        _train(e2e, x[tr], d["super"][tr], config.digit_steps)
        t.advance()
        fine = _mlp(64, config.hidden, len(fine_sorted)).to(x.device)
        _train(fine, x[tr], d["fine"][tr], config.digit_steps)
        t.advance()
    return e2e, fine, GroupMaxClassifier(fine, groups), animal_idx


def _boundary_distances(
    config: ContinuityConfig,
    progress: Progress,
    models: Mapping[str, tuple[nn.Module, nn.Module]],
    xt: torch.Tensor,
    yt: torch.Tensor,
    nearest_other: torch.Tensor,
) -> tuple[list[tuple[Any, ...]], dict[str, dict[str, Any]]]:
    """(b) Lipschitz bounds, accuracy, found flips and certified radii on the test images.

    ``models`` maps a network's name to (classifier, module whose Lipschitz bound is used).

    Returns:
        ``(rows, per_model)``: the digits table's rows and per network its measurements
        (``found`` and ``cert`` per test image, the rest scalars).
    """
    rows, per_model = [], {}
    with progress.task("(b) distances to the decision boundary", total=len(models)) as t:
        for name, (clf, bounded) in models.items():
            l_prod = lipschitz_upper(bounded, "product")
            l_up = lipschitz_upper(bounded, config.lipschitz_method)
            l_low = lipschitz_lower(bounded, xt, steps=10)
            with torch.no_grad():
                pred = clf(xt).argmax(dim=1)
            acc = float((pred == yt).float().mean())
            found = flip_distance(clf, xt)
            cert = certified_radius(clf, xt, lipschitz=l_up)
            ok = torch.isfinite(found)
            ratio = found[ok] / nearest_other[ok]
            per_model[name] = {
                "found": found,
                "cert": cert,
                "accuracy": acc,
                "lipschitz_product": l_prod,
                "lipschitz_upper": l_up,
                "lipschitz_lower": l_low,
                "n_flip_found": int(ok.sum()),
                "certified_le_found": bool((cert[ok] <= found[ok]).all()),
                "median_flip": float(found[ok].median()),
                "median_certified": float(cert.median()),
                "median_ratio_flip_to_nearest": float(ratio.median()),
            }
            m = per_model[name]
            rows.append(
                (
                    name,
                    round(acc, 4),
                    round(l_low, 3),
                    round(l_up, 3),
                    round(l_prod, 3),
                    f"{m['median_certified']:.4f}",
                    f"{m['median_flip']:.3f}",
                    f"{float(nearest_other.median()):.3f}",
                    f"{m['median_ratio_flip_to_nearest']:.3f}",
                    f"{m['n_flip_found']}/{len(found)}",
                    m["certified_le_found"],
                )
            )
            t.advance()
    return rows, per_model


def _animal_to_house_paths(
    config: ContinuityConfig,
    d: Mapping[str, torch.Tensor],
    nets: tuple[nn.Module, nn.Module, nn.Module, list[int]],
    lipschitz_upper_e2e: float,
) -> _Paths:
    """(b) p(animal) along straight paths from correctly classified animal to house images.

    ``nets`` is ``(e2e, fine, mapped, animal_idx)`` as from :func:`_train_digit_classifiers`.
    """
    e2e, fine, mapped, animal_idx = nets
    x, te = d["x"], d["test"]
    xt, yt = x[te], d["super"][te]
    with torch.no_grad():
        ok_both = (e2e(xt).argmax(1) == yt) & (mapped(xt).argmax(1) == yt)
    src = te[(yt == 1) & ok_both]
    dst = te[(yt == 0) & ok_both]
    n_paths = min(config.n_paths, len(src), len(dst))
    ts = torch.linspace(0, 1, config.path_points, device=x.device)
    path_p = {}
    with torch.no_grad():
        for name, fn in (
            ("end-to-end", lambda z: _p_animal_e2e(e2e, z)),
            ("fine, mapped", lambda z: _p_animal_fine(fine, animal_idx, z)),
        ):
            ps = []
            for i in range(n_paths):
                a, b = x[src[i]], x[dst[i]]
                pts = a[None, :] + ts[:, None] * (b - a)[None, :]  # (points, 64)
                ps.append(fn(pts))
            path_p[name] = torch.stack(ps) if ps else torch.zeros(0, len(ts))  # (paths, pts)
    crosses = {k: int(((v[:, 0] > 0.5) & (v[:, -1] < 0.5)).sum()) for k, v in path_p.items()}
    max_jump = {
        k: float((v[:, 1:] - v[:, :-1]).abs().max()) if n_paths else math.nan
        for k, v in path_p.items()
    }
    # For the end-to-end net p = σ(z_1 − z_0): |Δp| <= (1/4)·√2·L·||Δx|| between samples.
    step_len = (
        float(max((x[dst[i]] - x[src[i]]).norm() for i in range(n_paths)) / (len(ts) - 1))
        if n_paths
        else math.nan
    )
    return _Paths(
        ts=ts,
        p_animal=path_p,
        n_paths=n_paths,
        crossing=crosses,
        max_step=max_jump,
        step_bound_e2e=0.25 * math.sqrt(2) * lipschitz_upper_e2e * step_len,
    )


def _step_fits_figure(
    config: ContinuityConfig,
    xs: torch.Tensor,
    curves: Mapping[int, np.ndarray],
    fits: Sequence[Mapping[str, float]],
) -> Figure:
    """(a) the final fits, their errors and transition widths against training steps."""
    s_max = max(config.steps)
    fig_a, ax = plt.subplots(1, 3, figsize=(13, 3.8))
    for width in config.widths:
        ax[0].plot(xs.numpy(), curves[width], lw=1, label=f"width {width}, {s_max} steps")
        ax[1].plot(
            [r["steps"] for r in fits if r["width"] == width],
            [r["l2_error"] for r in fits if r["width"] == width],
            "o-",
            label=f"L2, width {width}",
        )
        ax[1].plot(
            [r["steps"] for r in fits if r["width"] == width],
            [r["sup_error"] for r in fits if r["width"] == width],
            "s--",
            label=f"sup, width {width}",
        )
        ax[2].plot(
            [r["steps"] for r in fits if r["width"] == width],
            [r["delta"] for r in fits if r["width"] == width],
            "o-",
            label=f"width {width}",
        )
    ax[0].step(xs, (xs >= 0).float(), "k", where="post", label="unit step")
    ax[0].set(xlabel="x", ylabel="f(x)", title="the step and its fit is continuous")
    ax[1].axhline(0.5, color="gray", lw=0.8)
    ax[1].set(xscale="log", yscale="log", xlabel="training steps", title="errors")
    ax[2].set(xscale="log", yscale="log", xlabel="training steps", title="transition width δ")
    ax[0].legend(fontsize=7)
    ax[1].legend(fontsize=6)
    ax[2].legend(fontsize=7)
    fig_a.tight_layout()
    return fig_a


def _paths_figure(paths: _Paths) -> Figure:
    """(b) p(animal) along every path, one panel per network."""
    fig_p, axp = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for k, (name, v) in enumerate(paths.p_animal.items()):
        for row in v.cpu().numpy():
            axp[k].plot(paths.ts.cpu().numpy(), row, lw=0.8)
        axp[k].axhline(0.5, color="k", lw=0.8, ls="--")
        axp[k].set(xlabel="t (animal image → house image)", title=name)
    axp[0].set(ylabel="p(animal)")
    fig_p.tight_layout()
    return fig_p


def _distances_figure(
    nearest_other: torch.Tensor, per_model: Mapping[str, Mapping[str, Any]]
) -> Figure:
    """(b) found flip distance and certified radius per test image, against the nearest image."""
    fig_d, axd = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    no = nearest_other.cpu().numpy()
    for k, (name, m) in enumerate(per_model.items()):
        order = np.argsort(no)
        axd[k].plot(no[order], "k-", label="nearest other-class image")
        axd[k].plot(m["found"].cpu().numpy()[order], ".", label="flip distance (found)")
        axd[k].plot(m["cert"].cpu().numpy()[order], ".", label="certified radius")
        axd[k].set(yscale="log", xlabel="test image (by nearest distance)", title=name)
    axd[0].set(ylabel="L2 distance")
    axd[0].legend(fontsize=7)
    fig_d.tight_layout()
    return fig_d


def _tables(
    config: ContinuityConfig, fits: Sequence[Mapping[str, float]], rows: list[tuple[Any, ...]]
) -> list[Table]:
    """The report's (a) step-fit table and (b) digits table."""
    table_a = Table.from_records(
        "(a) fits of the unit step",
        [
            {
                "width": r["width"],
                "steps": r["steps"],
                "sup error": round(r["sup_error"], 4),
                "L2 error": round(r["l2_error"], 5),
                "δ": r["delta"],
                "L measured": round(r["lipschitz_measured"], 2),
                "δ·L": r["delta"] * r["lipschitz_measured"],
            }
            for r in fits
        ],
    )
    table_b = Table(
        "(b) digits: cat=0, dog=6 → animal; house=7 → no animal",
        (
            "network",
            "accuracy",
            "L lower",
            f"L {config.lipschitz_method}",
            "L product",
            "median certified",
            "median flip",
            "median nearest other",
            "median flip/nearest",
            "flips found",
            "certified <= flip",
        ),
        tuple(rows),
    )
    return [table_a, table_b]


@register
class ContinuityExperiment(Experiment[ContinuityConfig]):
    name = "continuity"
    title = "Networks are continuous: no jump from 'animal' to 'no animal'"
    claim = (
        "A classifier from cat/dog/house images to animal / no animal: impossible? "
        "Neural networks cannot learn to represent discontinuous functions. Why? f continuous."
    )
    slide = 1
    Config = ContinuityConfig

    def run(self, config: ContinuityConfig, progress: Progress) -> Result:
        # ---------------- (a) the unit step ----------------
        t0 = time.perf_counter()
        xs = torch.linspace(-0.1, 0.1, 2001)
        fits, curves = _fit_step(config, progress, xs)
        step = _summarise_steps(fits)

        t1 = time.perf_counter()
        # ---------------- (b) digits ----------------
        d = _digits(config)
        x, te = d["x"], d["test"]
        e2e, fine, mapped, animal_idx = _train_digit_classifiers(config, progress, d)
        models = {"end-to-end": (e2e, e2e), "fine, mapped": (mapped, fine)}
        xt, yt = x[te], d["super"][te]
        # Distance of each test image to the nearest image (train or test) of the other class.
        dist = torch.cdist(xt, x)  # (n_eval, n)
        other = d["super"][None, :] != yt[:, None]
        nearest_other = dist.masked_fill(~other, math.inf).min(dim=1).values
        rows, per_model = _boundary_distances(config, progress, models, xt, yt, nearest_other)
        paths = _animal_to_house_paths(
            config, d, (e2e, fine, mapped, animal_idx), per_model["end-to-end"]["lipschitz_upper"]
        )

        t2 = time.perf_counter()
        # ---------------- verdict ----------------
        verdict = continuity_verdict(
            fits,
            n_paths=paths.n_paths,
            crossing=paths.crossing,
            max_step=paths.max_step,
            step_bound_e2e=paths.step_bound_e2e,
            digits=per_model,
        )

        # ---------------- figures ----------------
        figures = {
            "step_fits": _step_fits_figure(config, xs, curves, fits),
            "paths": _paths_figure(paths),
            "distances": _distances_figure(nearest_other, per_model),
        }
        numbers = {
            "fits": [{k: v for k, v in r.items()} for r in fits],
            "min_sup_error": step.min_sup_error,
            "l2_first": step.l2_first,
            "l2_last": step.l2_last,
            "min_delta_times_lipschitz": step.min_delta_times_lipschitz,
            "delta_last": step.delta_last,
            "n_paths": paths.n_paths,
            "paths_crossing": paths.crossing,
            "path_max_step": paths.max_step,
            "path_step_bound_e2e": paths.step_bound_e2e,
            "median_nearest_other": float(nearest_other.median()),
            "digits": {
                k: {kk: vv for kk, vv in m.items() if kk not in ("found", "cert")}
                for k, m in per_model.items()
            },
        }
        return Result(
            numbers=numbers,
            verdict=verdict,
            tables=_tables(config, fits, rows),
            figures=figures,
            timings={"(a) step fits": t1 - t0, "(b) digits": t2 - t1},
            notes=[
                "Super-classes: digits 0 ('cat') and 6 ('dog') = animal, 7 ('house') = no animal.",
                "The mapped network's label is the super-class of its fine argmax; its "
                "certified radius uses the fine network's Lipschitz bound (valid: the group-max "
                "map does not increase L2 distances).",
                f"Upper Lipschitz bounds by lipschitz_upper(method={config.lipschitz_method!r}); "
                "flip distances by DeepFool + bisection (upper bounds on the true distance).",
            ],
        )
