"""Slide 4, the fine print: the price of O(1) memory.

Chen et al. (2018) train ODE-Nets with the adjoint method for O(1) memory in the number of
solver steps. The adjoint's gradients are those of the exact ODE, computed by integrating the
state backwards in time next to the adjoint; on stiff (fast-decaying) dynamics that backward
reconstruction grows like ``exp(|lambda| T)`` and the gradients are wrong (Gholami, Keutzer &
Biros 2019, "ANODE"; Kidger, Chen & Lyons 2021). Recursive checkpointing
(:func:`~deeplimits.ode.odeint_checkpoint`) gives backprop's exact gradients of the discrete
solve at bounded memory, paid for in recomputation. This experiment measures, for direct
backprop, the adjoint (RMS and seminorm step control), reversible Heun and checkpointing with
several numbers of checkpoints:

1. on a stiff linear system ``dy/dt = A y`` (eigenvalues ``lam_fast``, ``lam_slow``; float64)
   with loss ``sum(y(T)^2)``: the relative error of ``dL/dy0`` and ``dL/dA`` against the exact
   gradients (matrix exponential and Van Loan's block exponential, :func:`exact_gradients`),
   the bytes held for backward, the wall time and the evaluations of ``f``;
2. bytes held for backward at ``n`` and ``4n`` fixed rk4 steps (does memory grow with steps?);
3. on an (untrained) digits ODE-Net (odenet's building blocks, float64): each method's
   parameter gradients against direct backprop through the same solver.

The verdict is computed by the pure functions :func:`memory_price_checks` and
:func:`memory_price_verdict` from the measured numbers alone.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn

from deeplimits.diagnostics import SavedTensorsMeter
from deeplimits.errors import InvalidArgumentError
from deeplimits.experiments import register
from deeplimits.experiments._base import (
    Experiment,
    ExperimentConfig,
    Progress,
    Result,
    Table,
    Verdict,
)
from deeplimits.experiments.odenet import TimeMLP, _check_positive_int, classifier
from deeplimits.ode import ODEBlock, SolveStats, odeint, odeint_adjoint, odeint_checkpoint

__all__ = [
    "ADJOINT_MAX_OK",
    "EXACT_MAX_ERROR",
    "LinearODE",
    "MemoryPriceConfig",
    "MemoryPriceExperiment",
    "exact_gradients",
    "memory_price_checks",
    "memory_price_verdict",
    "relative_error",
    "stiff_matrix",
]

#: Thresholds of the verdict, fixed before any measurement (one-line reasons in
#: :func:`memory_price_checks`).
EXACT_MAX_ERROR = 1e-6  # direct / checkpoint relative error to the exact gradient (rtol 1e-10)
ADJOINT_MAX_OK = 1e-3  # an adjoint error above this is a failure, not tolerance-level noise
REPLAY_MAX_DIFF = 1e-10  # checkpoint vs direct: the same steps replayed, float64 round-off only
O1_GROWTH = 1.1  # adjoint bytes at 4x the steps over bytes at 1x: constant up to bookkeeping
BOUNDED_GROWTH = 1.3  # checkpoint bytes at 4x the steps over 1x: c carries + one step's graph
DIRECT_MIN_GROWTH = 3.0  # backprop stores every step: 4x the steps, >= 3x the bytes
CHECKPOINT_MAX_SHARE = 0.1  # checkpoint bytes <= 1/10 of direct's at the largest step count


class LinearODE(nn.Module):
    """``dy/dt = y A^T`` for rows ``y`` (``(batch, d) -> (batch, d)``); ``A`` a parameter."""

    def __init__(self, a: Tensor) -> None:
        super().__init__()
        self.a = nn.Parameter(a.clone())

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return y @ self.a.T


def stiff_matrix(lam_fast: float, lam_slow: float) -> np.ndarray:
    """A non-normal 2x2 matrix with eigenvalues ``lam_fast`` and ``lam_slow``:
    ``V diag(lam_fast, lam_slow) V^-1`` with ``V = [[1, 1], [0, 1]] ``(eigenvectors not
    orthogonal, so the modes couple in the gradient of ``A``)."""
    v = np.array([[1.0, 1.0], [0.0, 1.0]])
    return v @ np.diag([lam_fast, lam_slow]) @ np.linalg.inv(v)


def exact_gradients(a: np.ndarray, y0: np.ndarray, t1: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``(dL/dy0, dL/dA)`` of ``L = sum(y(t1)^2)``, ``dy/dt = y A^T`` (rows), float64.

    ``y(t1) = y0 E^T`` with ``E = expm(A t1)``; ``dL/dy0 = 2 y(t1) E``; with
    ``G = dL/dE = 2 y(t1)^T y0``, ``dL/dA = t1 * L(A^T t1, G)``, the Fréchet derivative of the
    exponential at ``A^T t1`` in direction ``G``: the upper-right block of
    ``expm([[A^T t1, G], [0, A^T t1]])`` (Van Loan 1978).
    """
    from scipy.linalg import expm

    d = a.shape[0]
    e = expm(a * t1)
    yt = y0 @ e.T
    g_y0 = 2.0 * yt @ e
    g_e = 2.0 * yt.T @ y0
    block = np.zeros((2 * d, 2 * d))
    block[:d, :d] = block[d:, d:] = a.T * t1
    block[:d, d:] = g_e
    g_a = t1 * expm(block)[:d, d:]
    return g_y0, g_a


def relative_error(got: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> float:
    """Largest ``||got_i - ref_i||_F / ||ref_i||_F`` over the pairs; ``inf`` if ``got`` is not
    finite."""
    errs = []
    for g, r in zip(got, ref, strict=True):
        g, r = np.asarray(g, dtype=float), np.asarray(r, dtype=float)
        if not np.all(np.isfinite(g)):
            return math.inf
        errs.append(float(np.linalg.norm(g - r) / np.linalg.norm(r)))
    return max(errs)


@dataclass(frozen=True)
class MemoryPriceConfig(ExperimentConfig):
    """The stiff system, the memory sweep and the digits ODE-Net.

    Attributes:
        lam_fast, lam_slow: eigenvalues of the stiff ``A`` (negative, ``lam_fast`` the faster).
        t1: end time ``T``; batch: rows of ``y0``.
        rtol, atol: dopri5 tolerances of the stiff solves (all methods alike).
        checkpoints: numbers of checkpoints of the stiff accuracy table.
        reversible_steps: fixed steps of reversible Heun on the stiff system.
        memory_steps: ``n``; bytes are measured at ``n`` and ``4n`` fixed rk4 steps.
        memory_checkpoints: ``c`` of the checkpoint rows of the memory sweep.
        dim, hidden, digits_batch: the digits ODE-Net (untrained) and its batch.
        digits_rtol, digits_atol, digits_reversible_steps: its solves.
        repeat: timed repetitions per row (median reported).
    """

    lam_fast: float = -30.0
    lam_slow: float = -1.0
    t1: float = 2.0
    batch: int = 4
    rtol: float = 1e-10
    atol: float = 1e-12
    checkpoints: tuple[int, ...] = (2, 8, 32)
    reversible_steps: int = 400
    memory_steps: int = 64
    memory_checkpoints: int = 8
    dim: int = 16
    hidden: int = 32
    digits_batch: int = 64
    digits_rtol: float = 1e-5
    digits_atol: float = 1e-7
    digits_reversible_steps: int = 16
    repeat: int = 3

    def __post_init__(self) -> None:
        for name in ("batch", "reversible_steps", "memory_steps", "memory_checkpoints", "dim",
                     "hidden", "digits_batch", "digits_reversible_steps", "repeat"):
            _check_positive_int(name, getattr(self, name))
        if not self.lam_fast < self.lam_slow < 0:
            raise InvalidArgumentError(
                f"lam_fast={self.lam_fast!r}, lam_slow={self.lam_slow!r} must satisfy "
                "lam_fast < lam_slow < 0 (two decaying modes, the first the faster)"
            )
        if not (self.t1 > 0 and self.rtol > 0 and self.atol > 0 and self.digits_rtol > 0
                and self.digits_atol > 0):
            raise InvalidArgumentError(
                f"t1={self.t1!r} and the tolerances rtol={self.rtol!r}, atol={self.atol!r}, "
                f"digits_rtol={self.digits_rtol!r}, digits_atol={self.digits_atol!r} must be "
                "positive"
            )
        cps = self.checkpoints
        if (
            not isinstance(cps, tuple) or not cps
            or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in cps)
            or list(cps) != sorted(set(cps))
        ):
            raise InvalidArgumentError(
                f"checkpoints={cps!r} must be a non-empty tuple of increasing positive ints, "
                "e.g. (2, 8, 32)"
            )
        # rk4's stability interval on the negative axis is about [-2.78, 0].
        if self.memory_steps * 2.7 < -self.lam_fast * self.t1:
            raise InvalidArgumentError(
                f"memory_steps={self.memory_steps} rk4 steps are unstable for lam_fast="
                f"{self.lam_fast} over t1={self.t1} (need h*|lam_fast| <= 2.7); use >= "
                f"{math.ceil(-self.lam_fast * self.t1 / 2.7)}"
            )

    @classmethod
    def quick(cls) -> MemoryPriceConfig:
        return cls(repeat=1)

    @classmethod
    def full(cls) -> MemoryPriceConfig:
        return cls(t1=5.0, batch=8, checkpoints=(2, 4, 8, 16, 32, 64), reversible_steps=1000,
                   memory_steps=256, dim=32, hidden=64, digits_reversible_steps=32, repeat=5)


# ---------------------------------------------------------------------------------------------
# Measuring one gradient method

# A solve: (func, y0 requiring grad, stats) -> output at t1.
Solve = Callable[[nn.Module, Tensor, SolveStats], Tensor]


def _measure(solve: Solve, func: nn.Module, y0: Tensor, loss_fn: Callable[[Tensor], Tensor],
             repeat: int) -> dict[str, Any]:
    """One metered forward + backward (bytes held after the forward, peak over both,
    evaluations), gradients ``[dL/dy0, *dL/dparams]`` as float64 arrays, median time of
    ``repeat`` unmetered runs."""
    func.zero_grad(set_to_none=True)
    y = y0.clone().requires_grad_(True)
    stats = SolveStats()
    with SavedTensorsMeter(exclude=func.parameters()) as meter:
        loss = loss_fn(solve(func, y, stats))
        held = meter.live_bytes
        fwd = stats.nfe_forward
        loss.backward()
    grads = [y.grad, *(p.grad for p in func.parameters())]
    out = {
        "held_bytes": int(held),
        "peak_bytes": int(meter.bytes),
        "nfe_forward": int(fwd),
        "nfe_backward": int(stats.nfe_backward),
        "nfe_recompute": int(stats.nfe_recompute),
        "steps": int(stats.accepted_steps),
        "grads": [np.zeros(1) if g is None else g.detach().double().cpu().numpy()
                  for g in grads],
    }
    times = []
    for _ in range(repeat):
        func.zero_grad(set_to_none=True)
        y = y0.clone().requires_grad_(True)
        start = time.perf_counter()
        loss_fn(solve(func, y, SolveStats())).backward()
        times.append(time.perf_counter() - start)
    func.zero_grad(set_to_none=True)
    out["seconds"] = statistics.median(times) if times else math.nan
    return out


def _stiff_methods(config: MemoryPriceConfig, t: Tensor) -> dict[str, Solve]:
    """The stiff accuracy table's methods (dopri5 at ``rtol``/``atol``; reversible Heun on a
    fixed grid)."""
    tol = {"rtol": config.rtol, "atol": config.atol, "method": "dopri5"}
    out: dict[str, Solve] = {
        "direct": lambda f, y, st: odeint(f, y, t, stats=st, **tol)[-1],  # type: ignore[arg-type,index]
        "adjoint": lambda f, y, st: odeint_adjoint(f, y, t, stats=st, **tol)[-1],  # type: ignore[arg-type,index]
        "adjoint (seminorm)": lambda f, y, st: odeint_adjoint(  # type: ignore[index]
            f, y, t, stats=st, adjoint_options={"norm": "seminorm"}, **tol)[-1],  # type: ignore[arg-type]
    }
    for c in config.checkpoints:
        out[f"checkpoint c={c}"] = lambda f, y, st, c=c: odeint_checkpoint(  # type: ignore[index]
            f, y, t, stats=st, checkpoints=c, **tol)[-1]  # type: ignore[arg-type]
    h = config.t1 / config.reversible_steps
    out["reversible Heun"] = lambda f, y, st: odeint(  # type: ignore[index]
        f, y, t, method="reversible_heun", options={"step_size": h}, stats=st)[-1]
    return out


def _memory_methods(config: MemoryPriceConfig, t: Tensor, n: int) -> dict[str, Solve]:
    """The memory sweep's methods on ``n`` fixed steps (rk4; reversible Heun its own)."""
    rk4 = {"method": "rk4", "options": {"step_size": config.t1 / n}}
    c = config.memory_checkpoints
    return {
        "direct": lambda f, y, st: odeint(f, y, t, stats=st, **rk4)[-1],  # type: ignore[arg-type,index]
        "adjoint": lambda f, y, st: odeint_adjoint(f, y, t, stats=st, **rk4)[-1],  # type: ignore[arg-type,index]
        "adjoint (seminorm)": lambda f, y, st: odeint_adjoint(  # type: ignore[index]
            f, y, t, stats=st, adjoint_options={"norm": "seminorm"}, **rk4)[-1],  # type: ignore[arg-type]
        f"checkpoint c={c}": lambda f, y, st: odeint_checkpoint(  # type: ignore[index]
            f, y, t, stats=st, checkpoints=c, **rk4)[-1],  # type: ignore[arg-type]
        "reversible Heun": lambda f, y, st: odeint(  # type: ignore[index]
            f, y, t, method="reversible_heun", options={"step_size": config.t1 / n},
            stats=st)[-1],
    }


def _digits_batch(config: MemoryPriceConfig) -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(config.seed)
    idx = rng.choice(x.shape[0], size=min(config.digits_batch, x.shape[0]), replace=False)
    dev = config.torch_device()
    return (torch.tensor(x[idx] / 16.0, dtype=torch.float64, device=dev),
            torch.tensor(y[idx], dtype=torch.long, device=dev))


def _digits_rows(config: MemoryPriceConfig) -> list[dict[str, Any]]:
    """Each method's parameter gradients on one batch of digits (untrained float64 ODE-Net)
    against direct backprop through the same solver (dopri5, or reversible Heun with its
    reversible backward switched off)."""
    torch.manual_seed(config.seed)
    base = classifier(ODEBlock(TimeMLP(config.dim, config.hidden)), config.dim).double()
    base = base.to(config.torch_device())
    x, y = _digits_batch(config)
    tol: dict[str, Any] = {"method": "dopri5", "rtol": config.digits_rtol,
                           "atol": config.digits_atol}
    rh_h = 1.0 / config.digits_reversible_steps
    blocks: dict[str, dict[str, Any]] = {
        "direct": {**tol, "gradient": "direct"},
        "adjoint": {**tol, "gradient": "adjoint"},
        "checkpoint c=2": {**tol, "gradient": "checkpoint", "checkpoints": 2},
        "checkpoint c=8": {**tol, "gradient": "checkpoint", "checkpoints": 8},
        "reversible Heun": {"method": "reversible_heun", "gradient": "reversible",
                            "options": {"step_size": rh_h}},
        "reversible Heun, backprop": {
            "method": "reversible_heun", "gradient": "direct",
            "options": {"step_size": rh_h, "reversible_backward": False}},
    }
    runs: dict[str, dict[str, Any]] = {}
    for name, kw in blocks.items():
        model = copy.deepcopy(base)
        model[1] = ODEBlock(model[1].func, **kw)
        model.zero_grad(set_to_none=True)
        with SavedTensorsMeter(exclude=model.parameters()) as meter:
            loss = nn.functional.cross_entropy(model(x), y)
            held = meter.live_bytes
            loss.backward()
        stats = model[1].stats
        grads = [p.grad.detach().cpu().numpy() for p in model.parameters()]  # type: ignore[union-attr]
        times = []
        for _ in range(config.repeat):
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            nn.functional.cross_entropy(model(x), y).backward()
            times.append(time.perf_counter() - start)
        runs[name] = {
            "method": name, "steps": int(stats.accepted_steps), "held_bytes": int(held),
            "peak_bytes": int(meter.bytes), "seconds": statistics.median(times),
            "nfe_forward": int(stats.nfe_forward), "nfe_backward": int(stats.nfe_backward),
            "nfe_recompute": int(stats.nfe_recompute), "grads": grads,
        }
    flat = {name: np.concatenate([a.ravel() for a in r.pop("grads")])
            for name, r in runs.items()}
    rows = []
    for name, r in runs.items():
        ref = "reversible Heun, backprop" if name.startswith("reversible") else "direct"
        r["reference"] = ref if ref != "direct" else "direct (dopri5)"
        r["rel_diff"] = relative_error([flat[name]], [flat[ref]])
        rows.append(r)
    return rows


@register
class MemoryPriceExperiment(Experiment[MemoryPriceConfig]):
    name = "odenet_price"
    title = "The price of O(1) memory: adjoint vs checkpointing vs reversible Heun"
    claim = (
        "The adjoint method trains ODE networks with O(1) memory in the number of solver "
        "steps (Chen et al. 2018); its price is the gradient: on stiff dynamics the backward "
        "reconstruction of the state is unstable, while checkpointing keeps backprop's exact "
        "gradients at bounded memory (Gholami et al. 2019; Kidger et al. 2021)."
    )
    slide = 4
    Config = MemoryPriceConfig

    def run(self, config: MemoryPriceConfig, progress: Progress) -> Result:
        threads = torch.get_num_threads()
        if config.torch_device().type == "cpu":
            torch.set_num_threads(1)  # 2x2 and 64x33 matrices: threads only add overhead
        try:
            return self._run(config, progress)
        finally:
            torch.set_num_threads(threads)

    def _run(self, config: MemoryPriceConfig, progress: Progress) -> Result:
        dev = config.torch_device()
        a_np = stiff_matrix(config.lam_fast, config.lam_slow)
        y0_np = np.random.default_rng(config.seed).standard_normal((config.batch, 2))
        exact = exact_gradients(a_np, y0_np, config.t1)
        func = LinearODE(torch.tensor(a_np, dtype=torch.float64, device=dev))
        y0 = torch.tensor(y0_np, dtype=torch.float64, device=dev)
        t = torch.tensor([0.0, config.t1], dtype=torch.float64, device=dev)

        def loss_fn(y: Tensor) -> Tensor:
            return y.pow(2).sum()

        timings: dict[str, float] = {}
        start = time.perf_counter()
        # --- 1. stiff accuracy ------------------------------------------------------------
        methods = _stiff_methods(config, t)
        stiff: dict[str, dict[str, Any]] = {}
        with progress.task("stiff system: gradients", total=len(methods)) as task:
            for name, solve in methods.items():
                stiff[name] = _measure(solve, func, y0, loss_fn, config.repeat)
                task.advance()
        direct_grads = stiff["direct"]["grads"]
        for r in stiff.values():
            g = r.pop("grads")
            r["err_y0"] = relative_error([g[0]], [exact[0]])
            r["err_A"] = relative_error([g[1]], [exact[1]])
            r["error"] = max(r["err_y0"], r["err_A"])
            r["diff_direct"] = relative_error(g, direct_grads)

        timings["stiff gradients"] = time.perf_counter() - start
        start = time.perf_counter()
        # --- 2. memory at n and 4n fixed steps --------------------------------------------
        n = config.memory_steps
        sweep = (n, 4 * n)
        memory: dict[str, list[int]] = {}
        with progress.task("stiff system: memory at n and 4n steps", total=2) as task:
            for steps in sweep:
                for name, solve in _memory_methods(config, t, steps).items():
                    m = _measure(solve, func, y0, loss_fn, 0)
                    memory.setdefault(name, []).append(m["peak_bytes"])
                task.advance()

        timings["memory sweep"] = time.perf_counter() - start
        start = time.perf_counter()
        # --- 3. digits ODE-Net ------------------------------------------------------------
        with progress.task("digits ODE-Net: gradients", total=1) as task:
            digits = _digits_rows(config)
            task.advance()
        timings["digits"] = time.perf_counter() - start

        ck = [f"checkpoint c={c}" for c in config.checkpoints]
        verdict = memory_price_verdict(
            memory_steps=sweep, memory_bytes=memory,
            memory_checkpoints=config.memory_checkpoints,
            stiff_errors={k: r["error"] for k, r in stiff.items()},
            checkpoint_vs_direct=max(stiff[k]["diff_direct"] for k in ck),
        )

        state_bytes = config.batch * 2 * 8
        stiff_table = Table(
            f"stiff dy/dt = A y (eigenvalues {config.lam_fast:g}, {config.lam_slow:g}), "
            f"t in [0, {config.t1:g}], loss sum y(T)^2, float64; dopri5 rtol {config.rtol:g} "
            f"atol {config.atol:g} (reversible Heun: {config.reversible_steps} fixed steps); "
            "error = relative error to the exact gradient",
            ("method", "steps", "error dL/dy0", "error dL/dA", "diff to direct",
             "held after fwd (B)", "peak fwd+bwd (B)", "peak / state", "time (s)",
             "NFE fwd", "NFE bwd", "NFE recompute"),
            tuple(
                (name, r["steps"], r["err_y0"], r["err_A"], r["diff_direct"], r["held_bytes"],
                 r["peak_bytes"], round(r["peak_bytes"] / state_bytes, 1),
                 round(r["seconds"], 4), r["nfe_forward"], r["nfe_backward"],
                 r["nfe_recompute"])
                for name, r in stiff.items()
            ),
        )
        memory_table = Table(
            f"peak bytes held for backward (forward + backward) at {sweep[0]} and {sweep[1]} "
            f"fixed rk4 steps on the stiff system (reversible Heun: its own steps)",
            ("method", f"{sweep[0]} steps (B)", f"{sweep[1]} steps (B)", "growth"),
            tuple((name, b[0], b[1], round(b[1] / b[0], 3)) for name, b in memory.items()),
        )
        digits_table = Table(
            f"digits ODE-Net (untrained, float64, d={config.dim}, hidden {config.hidden}, "
            f"batch {config.digits_batch}); dopri5 rtol {config.digits_rtol:g} atol "
            f"{config.digits_atol:g}, reversible Heun {config.digits_reversible_steps} steps; "
            "relative difference of the parameter gradients to the reference",
            ("method", "reference", "rel. diff", "steps", "held after fwd (B)",
             "peak fwd+bwd (B)", "time (s)", "NFE fwd", "NFE bwd", "NFE recompute"),
            tuple(
                (r["method"], r["reference"], r["rel_diff"], r["steps"], r["held_bytes"],
                 r["peak_bytes"], round(r["seconds"], 4), r["nfe_forward"], r["nfe_backward"],
                 r["nfe_recompute"])
                for r in digits
            ),
        )
        figures = {"price": _figure(stiff, digits)}
        rh = stiff["reversible Heun"]["error"]
        notes = [
            "Bytes are those autograd holds for backward (SavedTensorsMeter, parameters "
            "excluded): 'held after fwd' at the end of the forward pass, 'peak' over forward "
            "and backward together. Checkpointing saves its c carries in one buffer and writes "
            "the backward pass's temporary checkpoints into the same rows, so its peak is that "
            "buffer plus one step's graph at a time; the adjoint's peak is its outputs plus one "
            "evaluation's graph of the augmented backward solve.",
            "Exact gradients: y(T) = expm(A T) y0, dL/dA from Van Loan's block exponential "
            "(scipy, float64). The adjoint integrates y backwards from y(T): the fast mode "
            f"grows by exp({-config.lam_fast:g} x {config.t1:g}) there, so round-off in y(T) "
            "swamps the state it reconstructs and dL/dA (which needs that state) is wrong; "
            "dL/dy0 needs only the adjoint, which decays backwards, and stays accurate.",
            f"Reversible Heun's stability region is on the imaginary axis: on the decaying "
            f"fast mode its error is {rh:.3g} here ({config.reversible_steps} steps); its "
            "gradients equal backprop through its own steps (digits table), so O(1) memory "
            "and exactness there are paid for with stability on stiff dynamics.",
            f"Times: the median of {config.repeat} unmetered forward + backward run(s) on a "
            "possibly loaded machine; reported, not judged. Errors of exactly 0 (a method "
            f"against itself) are drawn at {_FLOOR:g} in the figure, errors above {_CEIL:g} "
            f"or not finite at {_CEIL:g}. Digits: the reference of "
            "reversible Heun is backprop through the same reversible Heun steps "
            "(reversible_backward=False); of the others, direct backprop through dopri5 at "
            "the same tolerances.",
        ]
        numbers: dict[str, Any] = {
            "stiff_methods": list(stiff),
            **{f"stiff_{k}_{name}": v for name, r in stiff.items() for k, v in r.items()},
            "memory_steps": list(sweep),
            **{f"memory_{name}": b for name, b in memory.items()},
            **{f"digits_{k}_{r['method']}": v for r in digits for k, v in r.items()
               if k not in ("method", "reference")},
            "exact_grad_A": exact[1].tolist(),
        }
        return Result(numbers=numbers, verdict=verdict,
                      tables=[stiff_table, memory_table, digits_table], figures=figures,
                      timings=timings, notes=notes)


def memory_price_checks(
    *,
    memory_steps: Sequence[int],
    memory_bytes: Mapping[str, Sequence[int]],
    memory_checkpoints: int,
    stiff_errors: Mapping[str, float],
    checkpoint_vs_direct: float,
) -> dict[str, bool]:
    """The claim's checks, from the measured numbers alone (pure).

    Args:
        memory_steps: ``(n, 4n)``, the memory sweep's step counts.
        memory_bytes: per method, peak bytes held for backward at each of ``memory_steps``;
            needs ``"direct"``, ``"adjoint"`` and ``f"checkpoint c={memory_checkpoints}"``.
        memory_checkpoints: ``c`` of the sweep's checkpoint row.
        stiff_errors: per method, relative error of the stiff gradient to the exact one;
            needs ``"direct"``, ``"adjoint"``, ``"adjoint (seminorm)"`` and at least one
            ``"checkpoint c=..."``.
        checkpoint_vs_direct: largest relative difference of a checkpoint's gradients to
            direct backprop's on the stiff system.

    Returns:
        Statement (citing its numbers) -> whether it held. Thresholds, fixed up front:
        adjoint growth <= 1.1x (O(1): only outputs and one evaluation's graph are held);
        direct growth >= 3x (backprop stores every step: 4x the steps); checkpoint growth
        <= 1.3x (c carries and one step's graph; room for bookkeeping) and <= 1/10 of
        direct's bytes at 4n; both adjoints' errors > 1e-3 (far above the 1e-10 tolerance:
        a failure, not noise); direct's and every checkpoint's error <= 1e-6 (rtol 1e-10
        discretisation is far below); checkpoint vs direct <= 1e-10 (the same steps
        replayed: float64 round-off only).
    """
    n0, n1 = memory_steps[0], memory_steps[-1]
    ck = f"checkpoint c={memory_checkpoints}"

    def growth(name: str) -> float:
        b = memory_bytes[name]
        return b[-1] / b[0]

    share = memory_bytes[ck][-1] / memory_bytes["direct"][-1]
    adj = stiff_errors["adjoint"]
    semi = stiff_errors["adjoint (seminorm)"]
    direct = stiff_errors["direct"]
    cks = {k: v for k, v in stiff_errors.items() if k.startswith("checkpoint")}
    if not cks:
        raise InvalidArgumentError("stiff_errors has no 'checkpoint c=...' entry")
    worst_ck = max(cks.values())
    return {
        f"adjoint peak bytes from {n0} to {n1} steps grow {growth('adjoint'):.3f}x "
        f"(<= {O1_GROWTH}x)": growth("adjoint") <= O1_GROWTH,
        f"direct backprop's bytes grow {growth('direct'):.2f}x (>= {DIRECT_MIN_GROWTH}x)":
            growth("direct") >= DIRECT_MIN_GROWTH,
        f"{ck} peak bytes grow {growth(ck):.3f}x (<= {BOUNDED_GROWTH}x)":
            growth(ck) <= BOUNDED_GROWTH,
        f"{ck} holds {share:.3f} of direct's bytes at {n1} steps (<= {CHECKPOINT_MAX_SHARE})":
            share <= CHECKPOINT_MAX_SHARE,
        f"stiff gradient errors of the adjoint {adj:.3g} and seminorm adjoint {semi:.3g} "
        f"(both > {ADJOINT_MAX_OK:g}: wrong)": adj > ADJOINT_MAX_OK and semi > ADJOINT_MAX_OK,
        f"direct backprop's stiff gradient error {direct:.3g} (<= {EXACT_MAX_ERROR:g})":
            direct <= EXACT_MAX_ERROR,
        f"worst checkpoint stiff gradient error {worst_ck:.3g} over c = "
        f"{', '.join(k.split('=')[1] for k in cks)} (<= {EXACT_MAX_ERROR:g})":
            worst_ck <= EXACT_MAX_ERROR,
        f"checkpoint gradients differ from direct's by {checkpoint_vs_direct:.3g} "
        f"(<= {REPLAY_MAX_DIFF:g})": checkpoint_vs_direct <= REPLAY_MAX_DIFF,
    }


def memory_price_verdict(
    *,
    memory_steps: Sequence[int],
    memory_bytes: Mapping[str, Sequence[int]],
    memory_checkpoints: int,
    stiff_errors: Mapping[str, float],
    checkpoint_vs_direct: float,
) -> Verdict:
    """``reproduced`` iff every :func:`memory_price_checks` check holds (arguments as there)."""
    checks = memory_price_checks(
        memory_steps=memory_steps, memory_bytes=memory_bytes,
        memory_checkpoints=memory_checkpoints, stiff_errors=stiff_errors,
        checkpoint_vs_direct=checkpoint_vs_direct,
    )
    return Verdict.from_checks(checks, what="stiff linear system, exact gradients")


_FLOOR = 1e-17  # errors of exactly 0 drawn here on the log axis
_CEIL = 1e30  # larger or non-finite errors drawn here (matplotlib's log axis overflows near 1e300)


def _figure(stiff: Mapping[str, Mapping[str, Any]], digits: Sequence[Mapping[str, Any]]
            ) -> plt.Figure:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    markers = "osD^v<>phX*"
    names = list(dict.fromkeys([*stiff, *(r["method"] for r in digits)]))
    style = {name: (markers[i % len(markers)], f"C{i % 10}") for i, name in enumerate(names)}
    panels = (
        (axes[0], [(k, r["peak_bytes"], r["error"]) for k, r in stiff.items()],
         "stiff linear system", "relative error to the exact gradient"),
        (axes[1], [(r["method"], r["peak_bytes"], r["rel_diff"]) for r in digits],
         "digits ODE-Net", "relative difference to backprop"),
    )
    for ax, points, title, ylabel in panels:
        for name, b, e in points:
            e = min(e, _CEIL) if math.isfinite(e) else _CEIL
            marker, color = style[name]
            ax.loglog([b], [max(e, _FLOOR)], marker, color=color, ms=8, label=name)
        ax.set(xlabel="peak bytes held for backward", ylabel=ylabel, title=title)
        ax.legend(fontsize=7)
    fig.suptitle("The price of O(1) memory: gradient error vs memory")
    fig.tight_layout()
    return fig
