"""Gradient flow through depth (lecture slide 3): per-layer norms, the slide's bound, a verdict.

The slide: ``||∇x f(x)|| <= ||∇y f(x)|| · Π_l c_l · c_σ`` with ``c_l = ||W_lᵀ||_op``.

Precisely, for a model ``y = φ_K ∘ … ∘ φ_1 (x)`` applied to each sample independently, a scalar
loss ``ℓ`` of the output and a sample ``i``, the chain rule gives
``∇_{x_i} ℓ = J_1ᵀ ⋯ J_Kᵀ ∇_{y_i} ℓ`` with ``J_k`` the Jacobian of ``φ_k`` at that sample, so

    ||∇_{x_i} ℓ||₂ <= (Π_k Lip(φ_k)) · ||∇_{y_i} ℓ||₂    for every sample i,

where ``Lip(φ_k)`` is ``c_l = σ_max`` of a Linear/Conv layer (bias irrelevant), ``c_σ = sup|σ'|``
of an element-wise activation, 1 for Flatten/Identity, and ``1 + |α|·Lip(g)`` for a
:class:`~deeplimits.remedies.ResidualBlock` ``x + α·g(x)``. :class:`GradientFlowReport` stores
``bound = Π_k Lip(φ_k)`` and ``measured_ratio = max_i ||∇_{x_i} ℓ|| / ||∇_{y_i} ℓ||`` (the max over
the batch), so ``bound >= measured_ratio`` is a theorem (up to float rounding and to the
power-iteration estimate of conv norms, which approaches ``σ_max`` from below). It also bounds
every singular value of the input-output Jacobian.

Models that are not such a chain (ResNets, BatchNorm, Transformers, RNNs, tuple or dict outputs)
are measured per module that owns parameters, and bounded by
:func:`deeplimits.diagnostics.lipschitz_graph` on their ``torch.fx`` graph; see
:func:`gradient_flow`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from deeplimits.diagnostics._operator_norm import activation_lipschitz, operator_norm
from deeplimits.errors import InvalidArgumentError, InvalidTypeError, UnsupportedModelError
from deeplimits.remedies import ResidualBlock

__all__ = ["GradientFlowReport", "LayerFlow", "gradient_flow"]

_UNIT_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, ResidualBlock)
SUPPORTED = (
    "Linear, Conv1d, Conv2d, deeplimits.remedies.ResidualBlock (branch built from these), "
    "element-wise ReLU/ReLU6/LeakyReLU/Hardtanh/Tanh/Sigmoid/GELU/SiLU/ELU/Softplus, Identity, "
    "Flatten, Unflatten, Dropout, applied one after the other (containers such as nn.Sequential "
    "are traversed)"
)


@dataclass(frozen=True)
class LayerFlow:
    """One layer call, in forward order.

    Attributes:
        index: position in forward order (0-based).
        name: the module's qualified name in the model (``"3"``, ``"body.2"``).
        kind: its class name.
        lipschitz: ``c_l`` (Linear/Conv operator norm), ``c_σ`` (activation) or
            ``1 + |α|·Lip(g)`` (ResidualBlock).
        input_shape, output_shape: batch shapes.
        output_norm: ``||h_l||_F`` of this layer's output over the batch (forward signal).
        output_grad_norm: ``||∂ℓ/∂h_l||_F`` over the batch (backward hook on the output).
        param_grad_norm: ``||∂ℓ/∂θ_l||`` over the layer's own parameters, ``None`` without any.
    """

    index: int
    name: str
    kind: str
    lipschitz: float
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    output_norm: float
    output_grad_norm: float
    param_grad_norm: float | None


@dataclass(frozen=True)
class GradientFlowReport:
    """What :func:`gradient_flow` measured; see the module docstring for the bound.

    Attributes:
        layers: per-layer records in forward order.
        bound: ``Π_k Lip(φ_k)``, the slide's ``Π_l c_l · c_σ``.
        measured_ratio: ``max_i ||∇_{x_i} ℓ|| / ||∇_{y_i} ℓ||`` over the batch (samples with
            ``∇_{y_i} ℓ = 0`` skipped).
        sample_ratios: that ratio per sample.
        input_norm, input_grad_norm, output_grad_norm: ``||x||``, ``||∇x ℓ||``, ``||∇y ℓ||``
            (Frobenius over the batch).
        jacobian_singular_values: singular values (descending) of ``∂y_0/∂x_0`` for the first
            sample, or ``None`` when the input was too large (see ``jacobian_max_entries``).
        gradient_ratio: the quantity the verdict is taken on: the backpropagated gradient at
            the output of the first layer with parameters over that at the output of the last
            one, ``||∂ℓ/∂h_first|| / ||∂ℓ/∂h_last||`` (the slide's ``||∇x f|| / ||∇y f||`` with
            the input and output layers' own weights left out, so widths do not enter), or
            ``||∇x ℓ|| / ||∇y ℓ||`` when fewer than two layers have parameters. (The ratio of
            *parameter* gradients is not used: in a bias-free ReLU net it does not vanish, because
            the forward signal feeding the last layer shrinks just as fast.)
        verdict: ``"vanishing"`` if ``gradient_ratio < vanishing_below``, ``"exploding"`` if
            ``> exploding_above``, else ``"healthy"``.
    """

    layers: tuple[LayerFlow, ...]
    bound: float
    measured_ratio: float
    sample_ratios: tuple[float, ...]
    input_norm: float
    input_grad_norm: float
    output_grad_norm: float
    jacobian_singular_values: np.ndarray | None
    gradient_ratio: float
    verdict: str
    vanishing_below: float
    exploding_above: float
    notes: tuple[str, ...] = field(default=())
    mode: str = "chain"

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready builtins (non-finite numbers as the strings "inf"/"nan")."""

        def num(v: float | None) -> float | str | None:
            if v is None:
                return None
            return float(v) if math.isfinite(v) else str(float(v))

        return {
            "mode": self.mode,
            "verdict": self.verdict,
            "gradient_ratio": num(self.gradient_ratio),
            "vanishing_below": self.vanishing_below,
            "exploding_above": self.exploding_above,
            "bound": num(self.bound),
            "measured_ratio": num(self.measured_ratio),
            "sample_ratios": [num(r) for r in self.sample_ratios],
            "input_norm": num(self.input_norm),
            "input_grad_norm": num(self.input_grad_norm),
            "output_grad_norm": num(self.output_grad_norm),
            "jacobian_singular_values": None
            if self.jacobian_singular_values is None
            else [num(float(v)) for v in self.jacobian_singular_values],
            "notes": list(self.notes),
            "layers": [
                {
                    "index": lf.index,
                    "name": lf.name,
                    "kind": lf.kind,
                    "lipschitz": num(lf.lipschitz),
                    "input_shape": list(lf.input_shape),
                    "output_shape": list(lf.output_shape),
                    "output_norm": num(lf.output_norm),
                    "output_grad_norm": num(lf.output_grad_norm),
                    "param_grad_norm": num(lf.param_grad_norm),
                }
                for lf in self.layers
            ],
        }

    @property
    def signal_ratio(self) -> float:
        """Forward signal ratio ``||h_L||² / ||h_0||²`` (last layer's output over the input)."""
        if self.input_norm == 0:
            return math.inf
        return (self.layers[-1].output_norm / self.input_norm) ** 2

    def table(self) -> Any:
        """The per-layer table as a ``rich.table.Table``."""
        from rich.table import Table as RichTable

        t = RichTable(title="gradient flow per layer (forward order)")
        for col in ("#", "layer", "type", "output shape", "Lip (c_l / c_σ)", "‖h‖", "‖∂ℓ/∂h‖",
                    "‖∂ℓ/∂θ‖"):
            t.add_column(col, justify="left" if col in ("layer", "type") else "right")
        for lf in self.layers:
            t.add_row(
                str(lf.index),
                lf.name,
                lf.kind,
                "×".join(map(str, lf.output_shape)),
                "-" if math.isnan(lf.lipschitz) else f"{lf.lipschitz:.4g}",
                f"{lf.output_norm:.3e}",
                f"{lf.output_grad_norm:.3e}",
                "-" if lf.param_grad_norm is None else f"{lf.param_grad_norm:.3e}",
            )
        return t

    def summary(self) -> str:
        """Bound, measurement and verdict in a few lines."""
        if self.mode == "chain":
            head = (f"bound Π Lip = {self.bound:.4e} >= measured max_i ‖∇x_i ℓ‖/‖∇y_i ℓ‖ = "
                    f"{self.measured_ratio:.4e}")
        elif math.isnan(self.bound):
            head = (f"bound unavailable (see notes); measured max_i ‖∇x_i ℓ‖/‖∇y_i ℓ‖ = "
                    f"{self.measured_ratio:.4e}")
        else:
            head = (f"bound (graph Lipschitz) = {self.bound:.4e} >= measured max_i "
                    f"‖∇x_i ℓ‖/‖∇y_i ℓ‖ = {self.measured_ratio:.4e}")
        lines = [
            head,
            f"‖∇x ℓ‖ = {self.input_grad_norm:.4e}, ‖∇y ℓ‖ = {self.output_grad_norm:.4e}, "
            f"forward signal ratio ‖h_L‖²/‖h_0‖² = {self.signal_ratio:.4e}",
        ]
        if self.jacobian_singular_values is not None:
            s = self.jacobian_singular_values
            lines.append(
                f"Jacobian singular values (sample 0): max {s[0]:.4e}, min {s[-1]:.4e}, "
                f"median {float(np.median(s)):.4e}"
            )
        lines.append(
            f"verdict: {self.verdict} (gradient ratio first/last = {self.gradient_ratio:.3e}; "
            f"vanishing below {self.vanishing_below:g}, exploding above {self.exploding_above:g})"
        )
        lines.extend(self.notes)
        return "\n".join(lines)

    def render(self, width: int = 120) -> str:
        """Table and summary as plain text."""
        from rich.console import Console

        buf = io.StringIO()
        console = Console(file=buf, width=width, force_terminal=False, color_system=None)
        console.print(self.table())
        console.print(self.summary(), highlight=False, markup=False)
        return buf.getvalue()

    def plot(self, ax: Any = None) -> Any:
        """Log-scale plot of gradient norms against layer index; returns the matplotlib Figure."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 3.5))
        else:
            fig = ax.figure
        idx = [lf.index for lf in self.layers]
        ax.plot(idx, [lf.output_grad_norm for lf in self.layers], ".-", label="‖∂ℓ/∂h_l‖")
        pidx = [lf.index for lf in self.layers if lf.param_grad_norm is not None]
        pval = [lf.param_grad_norm for lf in self.layers if lf.param_grad_norm is not None]
        ax.plot(pidx, pval, "o", label="‖∂ℓ/∂θ_l‖")
        ax.set(xlabel="layer (forward order)", ylabel="norm", yscale="log",
               title=f"gradient flow: {self.verdict}")
        ax.legend(fontsize=8)
        return fig


@dataclass
class _Call:
    name: str
    module: nn.Module
    input: torch.Tensor
    input_version: int
    output: torch.Tensor | None = None
    output_version: int = -1
    output_norm: float = math.nan
    grads: list[torch.Tensor] = field(default_factory=list)


def _units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules treated as one layer: Linear/Conv/ResidualBlock and childless modules."""
    out: list[tuple[str, nn.Module]] = []

    def walk(prefix: str, m: nn.Module) -> None:
        if isinstance(m, _UNIT_TYPES) or not any(True for _ in m.children()):
            out.append((prefix, m))
            return
        for name, child in m.named_children():
            walk(f"{prefix}.{name}" if prefix else name, child)

    walk("", model)
    return out


def _trace(
    model: nn.Module, x: torch.Tensor, *, grad_hooks: bool
) -> tuple[torch.Tensor, list[_Call]]:
    """Run ``model(x)`` recording each unit call; checks the calls form a chain x → … → y."""
    calls: list[_Call] = []
    handles = []
    for name, unit in _units(model):

        def pre(mod: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
            if len(args) != 1 or not isinstance(args[0], torch.Tensor):
                raise UnsupportedModelError(
                    f"layer {name or '<model>'} ({type(mod).__name__}) is called with "
                    f"{len(args)} positional arguments; only single-tensor layers are supported"
                )
            calls.append(_Call(name, mod, args[0], args[0]._version))

        def post(mod: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            call = calls[-1]
            if not isinstance(output, torch.Tensor):
                raise UnsupportedModelError(
                    f"layer {call.name} ({type(mod).__name__}) returns "
                    f"{type(output).__name__}, not a tensor"
                )
            call.output, call.output_version = output, output._version
            # Taken now: a later in-place layer (ReLU(inplace=True)) may overwrite the output.
            call.output_norm = math.sqrt(_sqnorm(output.detach()))
            if grad_hooks and output.requires_grad:
                output.register_hook(lambda g, c=call: c.grads.append(g.detach()))

        handles.append(unit.register_forward_pre_hook(pre))
        handles.append(unit.register_forward_hook(post))
    try:
        y = model(x)
    finally:
        for h in handles:
            h.remove()
    if not isinstance(y, torch.Tensor):
        raise UnsupportedModelError(
            f"the model returns {type(y).__name__}; only models returning one tensor are supported"
        )
    if not calls:
        raise UnsupportedModelError(f"model {type(model).__name__} called no layer; {SUPPORTED}")
    # Every non-unit operation in forward (a functional call, a reshape, a skip connection other
    # than ResidualBlock) would break the chain and make the bound wrong, so refuse it.
    prev_out, prev_ver, prev_name = x, x._version, "<input>"
    for call in calls:
        if call.input is not prev_out or call.input_version != prev_ver:
            raise UnsupportedModelError(
                f"layer {call.name} ({type(call.module).__name__}) does not receive the output of "
                f"{prev_name} unchanged: the model's forward applies an operation that is not a "
                f"module between them (functional call, view, skip connection); supported: "
                f"{SUPPORTED}"
            )
        prev_out, prev_ver, prev_name = call.output, call.output_version, call.name
    if y is not prev_out or y._version != prev_ver:
        raise UnsupportedModelError(
            f"the model's output is not the output of its last layer {prev_name}: the forward "
            f"applies a non-module operation at the end; supported: {SUPPORTED}"
        )
    return y, calls


def _lipschitz(call: _Call) -> float:
    m = call.module
    if isinstance(m, nn.Linear):
        return operator_norm(m)
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        return operator_norm(m, tuple(call.input.shape[1:]))
    if isinstance(m, ResidualBlock):
        with torch.no_grad():
            _, inner = _trace(m.branch, call.input.detach(), grad_hooks=False)
        lip_g = math.prod(_lipschitz(c) for c in inner)
        return 1.0 + abs(m.scale) * lip_g
    try:
        return activation_lipschitz(m)
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(
            f"layer {call.name} ({type(m).__name__}) is not supported by gradient_flow; "
            f"{SUPPORTED}"
        ) from exc


def _sqnorm(t: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(t, dtype=torch.float64)) ** 2


def _check_supported(call: _Call) -> float:
    if not isinstance(call.module, _UNIT_TYPES):
        _lipschitz(call)  # cheap for activations; raises for unsupported layers
    return math.nan


def gradient_flow(
    model: nn.Module,
    x: torch.Tensor,
    *,
    grad_output: torch.Tensor | None = None,
    loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
    jacobian_max_entries: int = 1 << 20,
    vanishing_below: float = 1e-3,
    exploding_above: float = 1e3,
    compute_bound: bool = True,
    forward_fn: Callable[[nn.Module, torch.Tensor], Any] | None = None,
) -> GradientFlowReport:
    """Measure how gradients flow through ``model`` at the batch ``x``, and bound them.

    The loss is ``ℓ = Σ_i <g_i, y_i>`` with ``g = grad_output`` (default: standard normal, seeded
    by ``seed``), or ``ℓ = loss_fn(y)`` when ``loss_fn`` is given; either way ``∇y ℓ`` is what
    enters the bound. The model's parameters' ``.grad`` are left untouched; its train/eval mode
    is used as is. Two modes (``report.mode``):

    - ``"chain"``: the model is a chain of supported layers (``SUPPORTED``), checked by hooks
      (any operation between layers that is not a module is detected): one row per layer,
      activations included, and the slide's bound ``Π_l c_l · c_σ`` (module docstring).
    - ``"modules"``: any other model (skip connections, BatchNorm, attention, recurrent layers,
      functional calls, tuple or dict outputs, or ``forward_fn`` given): one row per call of a
      module that owns parameters, in forward order (a module called twice has two rows), with
      its output norm, the norm of the backpropagated gradient at its output(s) and of its own
      parameters' gradient. ``bound`` is :func:`lipschitz_graph`'s bound of ``model`` (train-mode
      BatchNorm and Dropout as they are): finite, ``inf`` (no finite global bound, e.g.
      attention or train-mode BatchNorm) or NaN (unavailable: an untraceable model, a node
      without a rule such as a GRU, or ``forward_fn``); ``notes`` say which and why, and that
      train-mode BatchNorm couples the samples. The per-row ``lipschitz`` is the module's own
      constant in that graph where it has one, else NaN. With a tuple or dict output, ``∇y ℓ``
      is over all its tensors, and ``grad_output`` is refused (give ``loss_fn``); the ratios
      are per sample when every output tensor's first dimension has the batch size (it is then
      taken to be the batch: an RNN's ``h_n``, ``(layers, batch, hidden)``, with as many layers
      as samples would be misread), else one ratio over the whole batch, said in the notes.

    Args:
        model: the network.
        x: input batch ``(batch, *input_shape)``, floating point.
        grad_output: ``∂ℓ/∂y``, same shape as ``model(x)``.
        loss_fn: scalar loss of the output (a tensor, or the tuple/dict the model returns),
            alternative to ``grad_output``.
        seed: seeds the default ``grad_output`` and the power iterations.
        jacobian_max_entries: compute the input-output Jacobian of sample 0 (and its singular
            values) only when ``in_dim · out_dim`` is at most this.
        vanishing_below: verdict threshold on ``gradient_ratio`` (default 1e-3: three orders of
            magnitude lost between the first and the last layer with parameters).
        exploding_above: verdict threshold on ``gradient_ratio`` (default 1e3: three orders of
            magnitude gained).
        compute_bound: ``False`` skips the operator norms (the costly part: an eigen-solve per
            layer); ``bound`` and every ``lipschitz`` are then NaN. Supported layer types are
            still checked (to choose the mode).
        forward_fn: ``forward_fn(model, x) -> output`` replaces ``model(x)``, for models taking
            several inputs (build them from ``x``) or needing keyword arguments; implies the
            ``"modules"`` mode, and the bound is then unavailable.

    Returns:
        :class:`GradientFlowReport`.

    Raises:
        InvalidTypeError: ``model`` not a Module, ``x`` not a floating tensor.
        InvalidArgumentError: bad shapes, both ``grad_output`` and ``loss_fn`` given, bad
            thresholds, non-finite gradients.
        UnsupportedModelError: a model that runs no module owning parameters (modules mode).
    """
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise InvalidTypeError(
            f"x must be a floating-point torch.Tensor (batch, ...), got "
            f"{type(x).__name__}{'' if not isinstance(x, torch.Tensor) else ' ' + str(x.dtype)}"
        )
    if x.ndim < 2 or x.shape[0] < 1:
        raise InvalidArgumentError(
            f"x must have a batch dimension, shape (batch, ...), got {tuple(x.shape)}"
        )
    if grad_output is not None and loss_fn is not None:
        raise InvalidArgumentError("give grad_output or loss_fn, not both")
    if not (0 < vanishing_below < exploding_above):
        raise InvalidArgumentError(
            f"need 0 < vanishing_below < exploding_above, got {vanishing_below}, {exploding_above}"
        )
    if forward_fn is not None and not callable(forward_fn):
        raise InvalidTypeError(
            f"forward_fn must be a callable (model, x) -> output, got {type(forward_fn).__name__}"
        )
    x = x.detach().clone().requires_grad_(True)
    chain: tuple[torch.Tensor, list[_Call], list[float]] | None = None
    chain_refusal = "forward_fn given" if forward_fn is not None else _chain_refusal(model)
    if not chain_refusal:
        buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
        try:
            y, calls = _trace(model, x, grad_hooks=True)
            # Raises on the first unsupported layer in forward order.
            lips = [_lipschitz(c) if compute_bound else _check_supported(c) for c in calls]
            chain = (y, calls, lips)
        except UnsupportedModelError as exc:
            chain_refusal = str(exc)
            with torch.no_grad():  # undo what the attempt's forward did to running statistics
                for k, b in model.named_buffers():
                    if k in buffers:
                        b.copy_(buffers[k])
    if chain is None:
        return _module_flow(
            model, x, forward_fn=forward_fn, grad_output=grad_output, loss_fn=loss_fn, seed=seed,
            jacobian_max_entries=jacobian_max_entries, vanishing_below=vanishing_below,
            exploding_above=exploding_above, compute_bound=compute_bound,
            chain_refusal=chain_refusal,
        )
    y, calls, lips = chain

    if loss_fn is not None:
        loss = loss_fn(y)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise InvalidArgumentError("loss_fn must return a scalar tensor")
        (g_y,) = torch.autograd.grad(loss, y, retain_graph=True)
    elif grad_output is not None:
        if tuple(grad_output.shape) != tuple(y.shape):
            raise InvalidArgumentError(
                f"grad_output has shape {tuple(grad_output.shape)} but the model output has "
                f"{tuple(y.shape)}; they must match"
            )
        g_y = grad_output.detach().to(y.dtype)
    else:
        gen = torch.Generator().manual_seed(seed)
        g_y = torch.randn(y.shape, generator=gen, dtype=y.dtype).to(y.device)

    unit_params = [[p for p in c.module.parameters() if p.requires_grad] for c in calls]
    flat = [p for ps in unit_params for p in ps]
    uniq = list({id(p): p for p in flat}.values())
    grads = torch.autograd.grad(y, [x, *uniq], grad_outputs=g_y, allow_unused=True)
    g_x = grads[0]
    by_id = {id(p): g for p, g in zip(uniq, grads[1:], strict=True)}

    def pnorm(ps: list[torch.Tensor]) -> float | None:
        if not ps:
            return None
        return math.sqrt(sum(_sqnorm(by_id[id(p)]) for p in ps if by_id[id(p)] is not None))

    layers = []
    for i, (c, lip, ps) in enumerate(zip(calls, lips, unit_params, strict=True)):
        out = cast(torch.Tensor, c.output)  # set by the forward hook
        gnorm = math.sqrt(sum(_sqnorm(g) for g in c.grads[-1:]))
        layers.append(
            LayerFlow(
                index=i,
                name=c.name or "<model>",
                kind=type(c.module).__name__,
                lipschitz=lip,
                input_shape=tuple(c.input.shape),
                output_shape=tuple(out.shape),
                output_norm=c.output_norm,
                output_grad_norm=gnorm,
                param_grad_norm=pnorm(ps),
            )
        )
    if g_x is None:
        g_x = torch.zeros_like(x)
    gx = g_x.detach().double().flatten(1).norm(dim=1)  # (batch,)
    gy = g_y.detach().double().flatten(1).norm(dim=1)  # (batch,)
    if not (bool(torch.isfinite(gx).all()) and bool(torch.isfinite(gy).all())):
        raise InvalidArgumentError("the gradients are not finite; check the model and input")
    nz = gy > 0
    ratios = (gx[nz] / gy[nz]).tolist()
    measured = max(ratios) if ratios else 0.0
    bound = math.prod(lips)

    sv = None
    in_dim, out_dim = x[0].numel(), y[0].numel()
    if in_dim * out_dim <= jacobian_max_entries:
        sv = _jacobian_singular_values(model, x[0], out_dim)

    notes: list[str] = []
    ratio, verdict = _judge(layers, gx, gy, vanishing_below, exploding_above, notes)
    return GradientFlowReport(
        layers=tuple(layers),
        bound=bound,
        measured_ratio=measured,
        sample_ratios=tuple(ratios),
        input_norm=float(x.detach().double().norm()),
        input_grad_norm=float(gx.norm()),
        output_grad_norm=float(gy.norm()),
        jacobian_singular_values=sv,
        gradient_ratio=ratio,
        verdict=verdict,
        vanishing_below=vanishing_below,
        exploding_above=exploding_above,
        notes=tuple(notes),
    )


def _judge(
    layers: list[LayerFlow], gx: torch.Tensor, gy: torch.Tensor, vanishing_below: float,
    exploding_above: float, notes: list[str],
) -> tuple[float, str]:
    """The first/last gradient ratio over the layers owning parameters (else ``‖∇x‖/‖∇y‖``,
    noted) and its verdict, for both modes."""
    with_params = [lf for lf in layers if lf.param_grad_norm is not None]
    if len(with_params) >= 2:
        first, last = with_params[0].output_grad_norm, with_params[-1].output_grad_norm
    else:
        first, last = float(gx.norm()), float(gy.norm())
        notes.append("fewer than two layers with parameters: verdict taken on ‖∇x ℓ‖/‖∇y ℓ‖")
    ratio = first / last if last > 0 else (math.inf if first > 0 else 1.0)
    if ratio < vanishing_below:
        return ratio, "vanishing"
    return ratio, "exploding" if ratio > exploding_above else "healthy"


def _chain_refusal(model: nn.Module) -> str:
    """Why ``model`` is not a chain of supported layers judged by its modules alone ("" if
    every unit has a chain rule; the forward may still turn out not to be a chain)."""
    for name, unit in _units(model):
        if isinstance(unit, _UNIT_TYPES):
            continue
        try:
            activation_lipschitz(unit)
        except UnsupportedModelError:
            return f"layer {name or '<model>'} ({type(unit).__name__}) has no chain rule"
    return ""


@dataclass
class _ModuleCall:
    order: int
    name: str
    module: nn.Module
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...] = ()
    output_norm: float = math.nan
    outputs: list[torch.Tensor] = field(default_factory=list)
    grads: dict[int, torch.Tensor] = field(default_factory=dict)


def _leaves(obj: Any) -> list[torch.Tensor]:
    """The tensors in a (nested) tuple, list or dict output, in order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _leaves(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _leaves(o)]
    return []


def _module_flow(
    model: nn.Module,
    x: torch.Tensor,
    *,
    forward_fn: Callable[[nn.Module, torch.Tensor], Any] | None,
    grad_output: torch.Tensor | None,
    loss_fn: Callable[[Any], torch.Tensor] | None,
    seed: int,
    jacobian_max_entries: int,
    vanishing_below: float,
    exploding_above: float,
    compute_bound: bool,
    chain_refusal: str,
) -> GradientFlowReport:
    """gradient_flow for any module: hooks on every module that owns parameters."""
    from deeplimits.diagnostics._graph_lipschitz import lipschitz_graph

    owners = [
        (name or "<model>", m)
        for name, m in model.named_modules()
        if any(True for _ in m.parameters(recurse=False))
    ]
    calls: list[_ModuleCall] = []
    handles = []
    for name, mod in owners:

        def pre(m: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
            first = next((a for a in _leaves(args)), None)
            shape = () if first is None else tuple(first.shape)
            calls.append(_ModuleCall(len(calls), name, m, shape))
            stack.append(calls[-1])

        def post(m: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            call = stack.pop()
            outs = _leaves(output)
            call.output_shape = tuple(outs[0].shape) if outs else ()
            # Taken now: a later in-place operation may overwrite the output.
            call.output_norm = math.sqrt(sum(_sqnorm(t.detach()) for t in outs))
            for k, t in enumerate(outs):
                if t.requires_grad:
                    t.register_hook(lambda g, c=call, k=k: c.grads.__setitem__(k, g.detach()))

        handles.append(mod.register_forward_pre_hook(pre))
        handles.append(mod.register_forward_hook(post))
    stack: list[_ModuleCall] = []
    try:
        out = model(x) if forward_fn is None else forward_fn(model, x)
    finally:
        for h in handles:
            h.remove()
    leaves = [t for t in _leaves(out) if t.requires_grad]
    if not leaves:
        raise InvalidArgumentError(
            f"the model's output ({type(out).__name__}) holds no tensor that depends on x and "
            "the parameters; return one (or pass forward_fn)"
        )
    if loss_fn is not None:
        loss = loss_fn(out)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise InvalidArgumentError("loss_fn must return a scalar tensor")
        g_leaves = list(torch.autograd.grad(loss, leaves, retain_graph=True, allow_unused=True))
        g_leaves = [torch.zeros_like(t) if g is None else g for t, g in zip(
            leaves, g_leaves, strict=True)]
    elif grad_output is not None:
        if len(leaves) != 1 or tuple(grad_output.shape) != tuple(leaves[0].shape):
            raise InvalidArgumentError(
                f"grad_output has shape {tuple(grad_output.shape)} but the model output has "
                f"{[tuple(t.shape) for t in leaves]}; give one tensor of the output's shape, or "
                "loss_fn for tuple/dict outputs"
            )
        g_leaves = [grad_output.detach().to(leaves[0].dtype)]
    else:
        gen = torch.Generator().manual_seed(seed)
        g_leaves = [torch.randn(t.shape, generator=gen, dtype=t.dtype).to(t.device)
                    for t in leaves]
    params = list({id(p): p for _, m in owners for p in m.parameters(recurse=False)
                   if p.requires_grad}.values())
    grads = torch.autograd.grad(leaves, [x, *params], grad_outputs=g_leaves, allow_unused=True)
    g_x = torch.zeros_like(x) if grads[0] is None else grads[0]
    by_id = {id(p): g for p, g in zip(params, grads[1:], strict=True)}

    batch = x.shape[0]
    gx = g_x.detach().double().flatten(1).norm(dim=1)  # (batch,)
    per_sample = all(t.ndim >= 1 and t.shape[0] == batch for t in leaves)
    notes: list[str] = []
    if per_sample:
        gy = torch.sqrt(sum(g.detach().double().reshape(batch, -1).pow(2).sum(1)
                            for g in g_leaves))  # (batch,)
    else:
        gy = torch.stack([torch.sqrt(sum(_sqnorm(g) for g in g_leaves)
                                     * torch.ones((), dtype=torch.float64))])
        gx = gx.norm().reshape(1)
        notes.append("an output tensor has no leading batch dimension: the measured ratio is "
                     "taken over the whole batch, not per sample")
    if not (bool(torch.isfinite(gx).all()) and bool(torch.isfinite(gy).all())):
        raise InvalidArgumentError("the gradients are not finite; check the model and input")
    nz = gy > 0
    ratios = (gx[nz] / gy[nz]).tolist()
    measured = max(ratios) if ratios else 0.0

    bound = math.nan
    factors: dict[str, float] = {}
    notes.append(f"not a chain of supported layers ({chain_refusal.split(';')[0]}): measured "
                 "per module that owns parameters")
    if not compute_bound:
        notes.append("bound not computed (compute_bound=False)")
    elif forward_fn is not None:
        notes.append("bound unavailable: forward_fn given, and the bound is of model(x)")
    else:
        graph = lipschitz_graph(model, x.detach(), train_mode_ok=True)
        bound = graph.value
        factors = graph.module_factors()
        notes.append(graph.describe())
    train_bn = [n for n, m in model.named_modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if train_bn:
        notes.append(
            f"train-mode BatchNorm ({', '.join(n or '<model>' for n in train_bn)}): samples are "
            "coupled through batch statistics; measured as is, so per-sample ratios include "
            "other samples' influence, and no Lipschitz bound holds"
        )

    layers = []
    for i, c in enumerate(calls):
        own = [p for p in c.module.parameters(recurse=False) if p.requires_grad]
        gsq = [by_id[id(p)] for p in own if by_id.get(id(p)) is not None]
        layers.append(
            LayerFlow(
                index=i,
                name=c.name,
                kind=type(c.module).__name__,
                lipschitz=factors.get(c.name, math.nan),
                input_shape=c.input_shape,
                output_shape=c.output_shape,
                output_norm=c.output_norm,
                output_grad_norm=math.sqrt(sum(_sqnorm(g) for g in c.grads.values())),
                param_grad_norm=math.sqrt(sum(_sqnorm(g) for g in gsq)) if own else None,
            )
        )
    if not layers:
        raise UnsupportedModelError(
            f"model {type(model).__name__} ran no module that owns parameters; nothing to measure"
        )
    sv = None
    if (
        forward_fn is None
        and not train_bn
        and len(leaves) == 1
        and isinstance(out, torch.Tensor)
        and per_sample
        and x[0].numel() * out[0].numel() <= jacobian_max_entries
    ):
        sv = _jacobian_singular_values(model, x[0], out[0].numel())
    ratio, verdict = _judge(layers, gx, gy, vanishing_below, exploding_above, notes)
    return GradientFlowReport(
        layers=tuple(layers),
        bound=bound,
        measured_ratio=measured,
        sample_ratios=tuple(ratios),
        input_norm=float(x.detach().double().norm()),
        input_grad_norm=float(g_x.detach().double().norm()),
        output_grad_norm=float(gy.norm()),
        jacobian_singular_values=sv,
        gradient_ratio=ratio,
        verdict=verdict,
        vanishing_below=vanishing_below,
        exploding_above=exploding_above,
        notes=tuple(notes),
        mode="modules",
    )


def _jacobian_singular_values(model: nn.Module, x0: torch.Tensor, out_dim: int) -> np.ndarray:
    """Singular values of ∂y/∂x at one sample: one batched backward with an identity seed."""
    z = x0.detach().unsqueeze(0).expand(out_dim, *x0.shape).clone().requires_grad_(True)
    y = model(z).reshape(out_dim, out_dim)  # (out_dim copies, out_dim outputs)
    eye = torch.eye(out_dim, dtype=y.dtype, device=y.device)
    # row k: ∂y_k/∂x; None where y does not depend on x (a constant model: Jacobian 0)
    (jac,) = torch.autograd.grad(y, z, grad_outputs=eye, allow_unused=True)
    if jac is None:
        jac = torch.zeros_like(z)
    return torch.linalg.svdvals(jac.reshape(out_dim, -1).double()).cpu().numpy()
