"""Slide 3: gradients vanish through depth unless initialisation, constraints or skips prevent it.

For MLPs of depth L on scikit-learn digits, each of seven set-ups is measured at initialisation
with :func:`deeplimits.diagnostics.gradient_flow` (per-layer gradient norms, the slide's bound
``Π c_l · c_σ`` against the measured ``||∇x ℓ|| / ||∇y ℓ||``) and then trained for the same fixed
budget of Adam steps; the verdict is computed from those numbers by the pure functions
:func:`gradients_checks` and :func:`gradients_verdict`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from deeplimits import constructions
from deeplimits.diagnostics import gradient_flow
from deeplimits.experiments import register
from deeplimits.experiments._base import (
    Experiment,
    ExperimentConfig,
    Progress,
    Result,
    Table,
    Verdict,
)
from deeplimits.remedies import (
    constrain_orthogonal_,
    constrain_spectral_norm_,
    init_he_,
    init_normal_,
    init_orthogonal_,
    init_xavier_,
    residual_mlp,
)

__all__ = [
    "METHODS",
    "GradientsConfig",
    "GradientsExperiment",
    "Method",
    "gradients_checks",
    "gradients_verdict",
    "mlp",
]


def mlp(
    in_features: int, width: int, out_features: int, depth: int, activation: type[nn.Module]
) -> nn.Sequential:
    """``depth`` Linear layers ``in → width → … → width → out`` with ``activation`` between."""
    if depth < 2 or width < 1:
        raise ValueError(f"need depth >= 2 and width >= 1, got depth={depth}, width={width}")
    return constructions.mlp([in_features] + [width] * (depth - 1) + [out_features], activation)


@dataclass(frozen=True)
class Method:
    """One set-up: a name, its family of remedy and how to build a net of a given depth."""

    name: str
    family: str  # "naive", "initialisation", "constraint", "residual"
    activation: str
    build: Callable[[int, int, int, int], nn.Module]  # (in, width, out, depth) -> model


def _plain(act: type[nn.Module], init: Callable[[nn.Module], object]) -> Callable[..., nn.Module]:
    def build(i: int, w: int, o: int, d: int) -> nn.Module:
        model = mlp(i, w, o, d, act)
        init(model)
        return model

    return build


def _spectral(i: int, w: int, o: int, d: int) -> nn.Module:
    model = mlp(i, w, o, d, nn.Tanh)
    init_xavier_(model, "tanh")
    return constrain_spectral_norm_(model)


def _orth_constraint(i: int, w: int, o: int, d: int) -> nn.Module:
    model = mlp(i, w, o, d, nn.Tanh)
    init_orthogonal_(model)
    return constrain_orthogonal_(model)


def _residual(i: int, w: int, o: int, d: int) -> nn.Module:
    return residual_mlp(i, w, o, d, activation=nn.ReLU, branch="scaled")


METHODS: tuple[Method, ...] = (
    Method("N(0, 0.01²)", "naive", "tanh", _plain(nn.Tanh, lambda m: init_normal_(m, 0.01))),
    Method("Xavier", "initialisation", "tanh", _plain(nn.Tanh, lambda m: init_xavier_(m, "tanh"))),
    Method("He", "initialisation", "relu", _plain(nn.ReLU, init_he_)),
    Method("orthogonal", "initialisation", "tanh", _plain(nn.Tanh, init_orthogonal_)),
    Method("spectral-norm constraint", "constraint", "tanh", _spectral),
    Method("orthogonal constraint", "constraint", "tanh", _orth_constraint),
    Method("residual (1/√L branches)", "residual", "relu", _residual),
)


@dataclass(frozen=True)
class GradientsConfig(ExperimentConfig):
    """Depths, width and the training budget (identical for every method).

    ``trains_above``: training accuracy counted as "trains"; ``fails_below``: counted as "does
    not train" (chance is 0.1); ``vanish_below``: first-layer over last-layer backpropagated
    gradient counted as vanished; "deep" nets are those with ``depth >= deep_from``.
    """

    depths: tuple[int, ...] = (2, 8, 32)
    width: int = 32
    steps: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    probe_batch: int = 256
    trains_above: float = 0.8
    fails_below: float = 0.3
    vanish_below: float = 1e-6
    deep_from: int = 8

    @classmethod
    def quick(cls) -> GradientsConfig:
        return cls()

    @classmethod
    def full(cls) -> GradientsConfig:
        return cls(depths=(2, 8, 32, 128), width=64, steps=1000)


def _digits(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = data.data.astype(np.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)  # standardised pixels, (1797, 64)
    return (
        torch.tensor(x, device=device),
        torch.tensor(data.target, dtype=torch.long, device=device),
    )


@contextmanager
def _cpu_threads(device: torch.device, n: int) -> Iterator[None]:
    # Width-32 matmuls are far below the size where CPU multithreading pays; one thread avoids
    # thrashing on a shared machine. Restored afterwards; no effect on CUDA.
    before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _flush_denormals() -> Iterator[None]:
    # Vanished gradients (~1e-39) are subnormal floats, which make CPU arithmetic many times
    # slower; flushing them to zero during *training* changes nothing that is measured (the
    # gradient ratios are taken before, with denormals kept). torch has no getter for this
    # flag, so it is set back to torch's default (off).
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _train(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: GradientsConfig
) -> tuple[float, float]:
    """Adam for ``config.steps`` minibatch steps; returns (training accuracy, final loss)."""
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    n = x.shape[0]
    model.train()
    for _ in range(config.steps):
        idx = torch.randint(0, n, (config.batch_size,), generator=gen).to(x.device)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        logits = model(x)  # (n, 10)
        acc = float((logits.argmax(1) == y).float().mean())
        final = float(nn.functional.cross_entropy(logits, y))
    return acc, final


def _record(
    records: Sequence[Mapping[str, object]], method: str, depth: int
) -> Mapping[str, object]:
    """The record of ``method`` at ``depth`` (the first one, as the tables show them)."""
    return next(r for r in records if r["method"] == method and r["depth"] == depth)


def _bound_holds(records: Sequence[Mapping[str, object]]) -> bool:
    """Whether the slide's bound is >= the measured ratio (to 1e-5 relative) in every record."""
    return all(float(r["bound"]) >= float(r["measured_ratio"]) * (1 - 1e-5) for r in records)


def gradients_checks(
    records: Sequence[Mapping[str, object]], config: GradientsConfig
) -> dict[str, bool]:
    """The claim's checks, from the measured records alone (pure).

    Args:
        records: one per method of :data:`METHODS` and depth of ``config.depths``: ``method``,
            ``depth``, ``grad_ratio_first_last``, ``train_accuracy``, ``bound``,
            ``measured_ratio``.
        config: the depths and thresholds (``deep_from``, ``vanish_below``, ``fails_below``,
            ``trains_above``).

    Returns:
        Statement (citing its numbers) -> whether it held: at every depth >= ``deep_from`` the
        naive init's gradient ratio is < ``vanish_below`` and its accuracy < ``fails_below``;
        at the largest depth the best method of each remedy family reaches ``trains_above``;
        the bound holds for every net.
    """
    dmax = max(config.depths)
    naive = METHODS[0].name
    checks: dict[str, bool] = {}
    for d in (d for d in config.depths if d >= config.deep_from):
        r = _record(records, naive, d)
        ratio, acc = float(r["grad_ratio_first_last"]), float(r["train_accuracy"])
        checks[
            f"{naive} at depth {d}: first/last-layer gradient {ratio:.1e} "
            f"< {config.vanish_below:g}"
        ] = ratio < config.vanish_below
        checks[
            f"{naive} at depth {d}: training accuracy {acc:.3f} < {config.fails_below}"
        ] = acc < config.fails_below
    for family in ("initialisation", "constraint", "residual"):
        members = [m.name for m in METHODS if m.family == family]
        accs = {m: float(_record(records, m, dmax)["train_accuracy"]) for m in members}
        best = max(accs, key=lambda m: accs[m])
        checks[
            f"best {family} remedy at depth {dmax} ({best}) reaches training accuracy "
            f"{accs[best]:.3f} >= {config.trains_above}"
        ] = accs[best] >= config.trains_above
    checks[f"bound >= measured ‖∇x ℓ‖/‖∇y ℓ‖ for all {len(records)} nets"] = _bound_holds(records)
    return checks


def gradients_verdict(
    records: Sequence[Mapping[str, object]], config: GradientsConfig
) -> Verdict:
    """``reproduced`` iff every :func:`gradients_checks` check holds (arguments as there).

    Returns:
        The experiment's :class:`Verdict`; ``inconclusive`` when no depth is >=
        ``config.deep_from`` (nothing deep to judge).
    """
    if not any(d >= config.deep_from for d in config.depths):
        return Verdict("inconclusive", f"no depth >= {config.deep_from} in {config.depths}")
    return Verdict.from_checks(gradients_checks(records, config))


@register
class GradientsExperiment(Experiment[GradientsConfig]):
    name = "gradients"
    title = "Gradients vanish through depth; initialisation, constraints and skips fix it"
    claim = (
        "‖∇x f(x)‖ ≤ ‖∇y f(x)‖ · Π_l c_l · c_σ with c_l = ‖W_lᵀ‖_op and c_σ ≤ 1: c_l < 1 gives "
        "vanishing gradients; remedies: initialization, constrained optimization, residual "
        "connections."
    )
    slide = 3
    Config = GradientsConfig

    def run(self, config: GradientsConfig, progress: Progress) -> Result:
        device = config.torch_device()
        x, y = _digits(device)
        probe_x, probe_y = x[: config.probe_batch], y[: config.probe_batch]
        records: list[dict[str, object]] = []
        profiles: dict[tuple[str, int], list[float]] = {}
        timings = {"diagnostics": 0.0}
        with (
            _cpu_threads(device, 1),
            progress.task("init diagnostics and training", len(METHODS) * len(config.depths)) as t,
        ):
            for method in METHODS:
                for depth in config.depths:
                    t0 = time.perf_counter()
                    torch.manual_seed(config.seed * 1000 + depth)
                    model = method.build(x.shape[1], config.width, 10, depth).to(device)
                    rep = gradient_flow(
                        model,
                        probe_x,
                        loss_fn=lambda out: nn.functional.cross_entropy(out, probe_y),
                        seed=config.seed,
                    )
                    # Gradient at the output of each layer with weights (Linear / residual block).
                    profiles[(method.name, depth)] = [
                        lf.output_grad_norm for lf in rep.layers if lf.param_grad_norm is not None
                    ]
                    t1 = time.perf_counter()
                    with _flush_denormals():
                        acc, loss = _train(model, x, y, config)
                    timings[method.name] = timings.get(method.name, 0.0) + time.perf_counter() - t1
                    timings["diagnostics"] += t1 - t0
                    records.append(
                        {
                            "method": method.name,
                            "family": method.family,
                            "activation": method.activation,
                            "depth": depth,
                            "grad_ratio_first_last": rep.gradient_ratio,
                            "bound": rep.bound,
                            "measured_ratio": rep.measured_ratio,
                            "jacobian_sv_max": (
                                float(rep.jacobian_singular_values[0])
                                if rep.jacobian_singular_values is not None
                                else None
                            ),
                            "init_verdict": rep.verdict,
                            "train_accuracy": acc,
                            "final_loss": loss,
                        }
                    )
                    t.advance()
        result = self._result(config, records, profiles)
        result.timings = {
            k if k == "diagnostics" else f"train {k}": v for k, v in timings.items()
        }
        return result

    def _result(
        self,
        config: GradientsConfig,
        records: list[dict[str, object]],
        profiles: dict[tuple[str, int], list[float]],
    ) -> Result:
        def rec(method: str, depth: int) -> Mapping[str, object]:
            return _record(records, method, depth)

        dmax = max(config.depths)
        bound_ok = _bound_holds(records)
        verdict = gradients_verdict(records, config)

        numbers: dict[str, object] = {
            "train_accuracy": {
                m.name: {str(d): rec(m.name, d)["train_accuracy"] for d in config.depths}
                for m in METHODS
            },
            "grad_ratio_first_last": {
                m.name: {str(d): rec(m.name, d)["grad_ratio_first_last"] for d in config.depths}
                for m in METHODS
            },
            "bound_holds_everywhere": bound_ok,
            "trains_at_max_depth": [
                m.name
                for m in METHODS
                if float(rec(m.name, dmax)["train_accuracy"]) >= config.trains_above
            ],
            "fails_at_max_depth": [
                m.name
                for m in METHODS
                if float(rec(m.name, dmax)["train_accuracy"]) < config.fails_below
            ],
        }

        figures = {
            "grad_per_layer": self._profile_figure(config, profiles),
            "bound_vs_measured": self._bound_figure(records),
            "accuracy_vs_depth": self._accuracy_figure(config, records),
        }
        notes = [
            f"Same budget for every net: {config.steps} Adam steps (lr {config.lr:g}, batch "
            f"{config.batch_size}) on all 1797 digits, width {config.width}; accuracy is on the "
            "training set (the slide's question is whether the net trains at all).",
            "Gradient ratio: ‖∂ℓ/∂h‖ at the first layer with weights over the last, at "
            f"initialisation, cross-entropy on {config.probe_batch} digits.",
            "Bound: Π over layers of ‖W‖_op (exact), c_σ (tanh 1, ReLU 1) and 1 + α‖W‖_op per "
            "residual block; measured: max over samples of ‖∇x ℓ‖/‖∇y ℓ‖.",
            "Spectral-norm nets are Xavier-initialised then constrained (‖W‖_op ≈ 1 caps growth "
            "but not decay); orthogonal constraint via torch.nn.utils.parametrizations.",
            f"At depth {dmax}, trained (accuracy >= {config.trains_above}): "
            + (", ".join(numbers["trains_at_max_depth"]) or "none")  # type: ignore[arg-type]
            + f"; did not train (accuracy < {config.fails_below}): "
            + (", ".join(numbers["fails_at_max_depth"]) or "none")  # type: ignore[arg-type]
            + ".",
        ]
        return Result(
            numbers=numbers,
            verdict=verdict,
            tables=[Table.from_records("per method and depth", records)],
            figures=figures,
            notes=notes,
        )

    @staticmethod
    def _profile_figure(
        config: GradientsConfig, profiles: dict[tuple[str, int], list[float]]
    ) -> plt.Figure:
        shown = [d for d in config.depths if d >= config.deep_from] or list(config.depths)
        fig, axes = plt.subplots(1, len(shown), figsize=(4.8 * len(shown), 3.8), squeeze=False)
        for ax, depth in zip(axes[0], shown, strict=True):
            for m in METHODS:
                prof = np.asarray(profiles[(m.name, depth)], dtype=float)
                ax.plot(np.arange(1, len(prof) + 1), np.maximum(prof, 1e-300), ".-", label=m.name)
            ax.set(
                xlabel="layer with weights (input → output)",
                ylabel="‖∂ℓ/∂h_l‖ at initialisation",
                yscale="log",
                title=f"depth {depth}",
            )
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        return fig

    @staticmethod
    def _bound_figure(records: list[dict[str, object]]) -> plt.Figure:
        fig, ax = plt.subplots(figsize=(5.2, 4.6))
        lo, hi = math.inf, 0.0
        for m in METHODS:
            pts = [
                (float(r["bound"]), float(r["measured_ratio"]))
                for r in records
                if r["method"] == m.name and float(r["measured_ratio"]) > 0
            ]
            if not pts:
                continue
            b, meas = zip(*pts, strict=True)
            ax.scatter(b, meas, s=18, label=m.name)
            lo, hi = min(lo, *b, *meas), max(hi, *b, *meas)
        if math.isfinite(lo) and hi > 0:
            ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x (bound tight)")
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="bound Π c_l · c_σ",
            ylabel="measured max_i ‖∇x ℓ‖ / ‖∇y ℓ‖",
            title="slide-3 bound vs measurement (holds iff on or below y = x)",
        )
        ax.legend(fontsize=6)
        fig.tight_layout()
        return fig

    @staticmethod
    def _accuracy_figure(
        config: GradientsConfig, records: list[dict[str, object]]
    ) -> plt.Figure:
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in METHODS:
            accs = [
                float(next(r for r in records if r["method"] == m.name and r["depth"] == d)[
                    "train_accuracy"
                ])
                for d in config.depths
            ]
            ax.plot(config.depths, accs, "o-", label=m.name)
        ax.axhline(0.1, color="gray", lw=0.8, ls=":", label="chance")
        ax.set(
            xscale="log",
            xlabel="depth L",
            ylabel=f"training accuracy after {config.steps} steps",
            ylim=(0, 1.02),
            title="who trains at depth",
        )
        ax.set_xticks(config.depths, [str(d) for d in config.depths])
        ax.legend(fontsize=7)
        fig.tight_layout()
        return fig
