"""Operator norms of linear layers and Lipschitz constants of element-wise activations.

``c_l = ||W_lᵀ||_op = ||W_l||_op`` is the factor by which layer ``l`` can at most stretch a
backpropagated gradient (lecture slide 3); ``c_σ = sup |σ'|`` is the activation's.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from deeplimits.errors import InvalidArgumentError, InvalidTypeError, UnsupportedModelError

__all__ = ["activation_lipschitz", "operator_norm"]

# Above this many weight entries a Linear layer's norm is found by power iteration instead of SVD.
EXACT_MAX_ENTRIES = 1 << 20


def operator_norm(
    layer: nn.Module | torch.Tensor,
    input_shape: Sequence[int] | None = None,
    *,
    method: str = "auto",
    max_iter: int = 2000,
    tol: float = 1e-9,
    seed: int = 0,
) -> float:
    """Spectral norm (largest singular value) of the linear map a layer applies, bias ignored.

    - ``nn.Linear`` or a 2-D tensor ``W`` (out, in): ``σ_max(W)``; exact (SVD, float64) when
      ``W`` has at most ``EXACT_MAX_ENTRIES`` (2²⁰) entries or ``method="exact"``, else power
      iteration. ``input_shape`` is ignored for Linear (its norm does not depend on it).
    - ``nn.Conv1d`` / ``nn.Conv2d``: the norm of the *convolution* as a linear map on inputs of
      ``input_shape`` — ``(C, L)`` / ``(C, H, W)``, a leading batch dimension is allowed and
      ignored — with the layer's stride, padding (any padding mode), dilation and groups. It is
      found by power iteration on ``AᵀA`` (``Aᵀ`` by autograd, i.e. the transposed conv) in
      float64 — or, with ``method="auto"`` and at most ``EXACT_MAX_ENTRIES`` entries in the
      dense matrix of the convolution, exactly from that matrix. This is *not* the norm of the
      reshaped kernel ``(out, in·k)``, which can be smaller or larger (Sedghi et al. 2019,
      "The singular values of convolutional layers").

    Power iteration returns a value *below or equal to* the true norm; it stops when the estimate
    changes by less than ``tol`` relatively or after ``max_iter`` iterations (from a seeded random
    start), which on small layers agrees with the dense SVD to ~1e-7 relative.

    Args:
        layer: the layer (or weight matrix).
        input_shape: the conv's input shape; required for Conv layers.
        method: ``"auto"``, ``"exact"`` (Linear/tensor only) or ``"power"`` (forces power
            iteration).
        max_iter: power-iteration control: most iterations.
        tol: power-iteration control: relative change that stops it.
        seed: power-iteration control: seed of the start vector.

    Returns:
        ``σ_max`` as a Python float (>= 0).

    Raises:
        UnsupportedModelError: a layer type other than Linear/Conv1d/Conv2d.
        InvalidArgumentError: missing or inconsistent ``input_shape`` for a conv, bad ``method``.
    """
    if method not in ("auto", "exact", "power"):
        raise InvalidArgumentError(f"method must be 'auto', 'exact' or 'power', got {method!r}")
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise InvalidArgumentError(f"max_iter must be an int >= 1, got {max_iter!r}")
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise InvalidArgumentError(f"tol must be a number > 0, got {tol!r}")
    if isinstance(layer, torch.Tensor):
        if layer.ndim != 2:
            raise InvalidArgumentError(
                f"a weight tensor must be 2-D (out, in), got shape {tuple(layer.shape)}"
            )
        return _matrix_norm(layer.detach(), method, max_iter, tol, seed)
    if isinstance(layer, nn.Linear):
        return _matrix_norm(layer.weight.detach(), method, max_iter, tol, seed)
    if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
        if method == "exact":
            raise InvalidArgumentError(
                "method='exact' is for Linear layers; a convolution's norm uses power iteration "
                "(method='auto' or 'power')"
            )
        return _conv_norm(layer, input_shape, method, max_iter, tol, seed)
    if isinstance(layer, nn.Module):
        raise UnsupportedModelError(
            f"operator_norm: layer {type(layer).__name__} is not supported; use nn.Linear, "
            "nn.Conv1d, nn.Conv2d or a 2-D weight tensor"
        )
    raise InvalidTypeError(
        f"layer must be an nn.Module or a 2-D tensor, got {type(layer).__name__}"
    )


def _matrix_norm(w: torch.Tensor, method: str, max_iter: int, tol: float, seed: int) -> float:
    w = w.to(torch.float64)  # (out, in)
    if not bool(torch.isfinite(w).all()):
        raise InvalidArgumentError("the weight has NaN or infinite entries; its norm is undefined")
    if method == "exact" or (method == "auto" and w.numel() <= EXACT_MAX_ENTRIES):
        # λ_max of the smaller Gram matrix in float64: the same σ_max as an SVD to ~1e-15
        # relative, and several times faster than LAPACK's SVD of a rectangular matrix.
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        lam = float(np.linalg.eigvalsh(gram.cpu().numpy())[-1])
        return math.sqrt(max(lam, 0.0))
    return _power_iteration(
        lambda v: w @ v, lambda u: w.T @ u, (w.shape[1],), w, max_iter, tol, seed
    )


def _conv_norm(
    layer: nn.Conv1d | nn.Conv2d,
    input_shape: Sequence[int] | None,
    method: str,
    max_iter: int,
    tol: float,
    seed: int,
) -> float:
    spatial = 1 if isinstance(layer, nn.Conv1d) else 2
    kind = type(layer).__name__
    if input_shape is None:
        raise InvalidArgumentError(
            f"operator_norm of a {kind} needs input_shape (C, "
            + ", ".join("LHW"[1:] if spatial == 2 else "L")
            + "): a convolution's norm depends on the input size"
        )
    shape = tuple(input_shape)
    if not all(isinstance(s, int) and s >= 1 for s in shape) or len(shape) not in (
        spatial + 1,
        spatial + 2,
    ):
        raise InvalidArgumentError(
            f"input_shape for a {kind} must be {spatial + 1} positive ints (channels and "
            f"{spatial} spatial sizes, optionally after a batch size), got {input_shape!r}"
        )
    shape = (1, *shape[-(spatial + 1) :])
    if shape[1] != layer.in_channels:
        raise InvalidArgumentError(
            f"input_shape {input_shape!r} has {shape[1]} channels but the {kind} expects "
            f"{layer.in_channels}"
        )
    weight = layer.weight.detach().to(torch.float64)
    device = weight.device
    if not bool(torch.isfinite(weight).all()):
        raise InvalidArgumentError("the conv weight has NaN or infinite entries")

    def apply(v: torch.Tensor) -> torch.Tensor:
        return layer._conv_forward(v, weight, None)  # (1, C_out, *spatial_out)

    try:
        probe = torch.zeros(shape, dtype=torch.float64, device=device)
        _, vjp = torch.func.vjp(apply, probe)
    except RuntimeError as exc:
        raise InvalidArgumentError(
            f"the {kind} cannot be applied to inputs of shape {shape[1:]}: {exc}"
        ) from exc

    in_dim = math.prod(shape)
    out_dim = math.prod(apply(probe).shape)
    if method == "auto" and in_dim * out_dim <= EXACT_MAX_ENTRIES:
        # Small input: the dense matrix (conv of every basis vector) and an exact eigen-solve.
        basis = torch.eye(in_dim, dtype=torch.float64, device=weight.device)
        with torch.no_grad():
            dense = apply(basis.reshape(in_dim, *shape[1:])).reshape(in_dim, out_dim)
        return _matrix_norm(dense.T, "exact", max_iter, tol, seed)

    def transpose(u: torch.Tensor) -> torch.Tensor:
        # The conv is linear, so its VJP at any point is the transposed convolution.
        return vjp(u)[0]

    return _power_iteration(apply, transpose, shape, weight, max_iter, tol, seed)


def _power_iteration(
    apply: Callable[[torch.Tensor], torch.Tensor],
    transpose: Callable[[torch.Tensor], torch.Tensor],
    shape: tuple[int, ...],
    like: torch.Tensor,
    max_iter: int,
    tol: float,
    seed: int,
) -> float:
    return _power_iteration_from(apply, transpose, shape, like, max_iter, tol, seed, None)[0]


def _power_iteration_from(
    apply: Callable[[torch.Tensor], torch.Tensor],
    transpose: Callable[[torch.Tensor], torch.Tensor],
    shape: tuple[int, ...],
    like: torch.Tensor,
    max_iter: int,
    tol: float,
    seed: int,
    start: torch.Tensor | None,
) -> tuple[float, torch.Tensor]:
    """Power iteration on ``AᵀA`` from ``start`` (or a seeded random vector); (σ estimate, v)."""
    if start is None or tuple(start.shape) != tuple(shape) or float(start.norm()) == 0.0:
        gen = torch.Generator().manual_seed(seed)
        v = torch.randn(shape, generator=gen, dtype=torch.float64).to(like.device)
    else:
        v = start.to(device=like.device, dtype=torch.float64)
    v = v / v.norm()
    estimate = 0.0
    for _ in range(max_iter):
        w = transpose(apply(v))  # AᵀA v
        norm = float(w.norm())
        if norm == 0.0:
            return 0.0, v
        # For unit v, ||AᵀAv|| <= σ_max², so the estimate never exceeds σ_max.
        new = math.sqrt(norm)
        v = w / norm
        if abs(new - estimate) <= tol * new:
            return new, v
        estimate = new
    return estimate, v


# Per conv layer: input shape -> (weight key, norm, last power-iteration vector).
_CONV_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], tuple[Any, float,
                                                                              torch.Tensor]]]
_CONV_CACHE = weakref.WeakKeyDictionary()


def conv_norm_cached(
    layer: nn.Conv1d | nn.Conv2d,
    input_shape: Sequence[int],
    *,
    max_iter: int = 500,
    tol: float = 1e-6,
) -> float:
    """``operator_norm(layer, input_shape)``, cached per layer and input shape, warm-started.

    The value is reused while the weight tensor is unchanged (same storage and in-place version
    counter, which an optimizer step increments); after a change, power iteration restarts from
    the singular vector found last time, so a slightly trained layer converges in a few steps.
    Small convolutions (dense matrix of at most ``EXACT_MAX_ENTRIES`` entries) are solved exactly
    as in :func:`operator_norm`; larger ones by power iteration to relative change ``tol``, which
    (as every power iteration) approaches ``σ_max`` from below.

    Args:
        layer: the convolution.
        input_shape: ``(C, L)`` / ``(C, H, W)``, optionally after a batch size (ignored).
        max_iter, tol: power-iteration controls.

    Returns:
        ``σ_max`` of the convolution on inputs of that shape, a Python float.
    """
    spatial = 1 if isinstance(layer, nn.Conv1d) else 2
    shape = tuple(int(s) for s in input_shape)[-(spatial + 1) :]
    w = layer.weight
    key = (w.data_ptr(), w._version, tuple(w.shape), w.dtype)
    per_layer = _CONV_CACHE.setdefault(layer, {})
    hit = per_layer.get(shape)
    if hit is not None and hit[0] == key:
        return hit[1]
    weight = w.detach().to(torch.float64)
    full = (1, *shape)
    in_dim = math.prod(full)

    def apply(v: torch.Tensor) -> torch.Tensor:
        return layer._conv_forward(v, weight, None)

    probe = torch.zeros(full, dtype=torch.float64, device=weight.device)
    out_dim = math.prod(apply(probe).shape)
    if in_dim * out_dim <= EXACT_MAX_ENTRIES:
        norm = operator_norm(layer, shape)
        vec = torch.zeros(0)
    else:
        _, vjp = torch.func.vjp(apply, probe)
        norm, vec = _power_iteration_from(
            apply, lambda u: vjp(u)[0], full, weight, max_iter, tol, 0,
            None if hit is None else hit[2],
        )
    per_layer[shape] = (key, norm, vec)
    return norm


def _sup_derivative(fn: Callable[[torch.Tensor], torch.Tensor], lo: float, hi: float) -> float:
    """sup |fn'| on [lo, hi] for a smooth fn: dense grid, then a finer grid around the argmax
    (with autograd on: callers often run under ``torch.no_grad()``)."""
    with torch.enable_grad():
        x = torch.linspace(lo, hi, 200_001, dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(fn(x).sum(), x)
        i = int(g.abs().argmax())
        step = (hi - lo) / 200_000
        centre = float(x.detach()[i])
        x2 = torch.linspace(centre - step, centre + step, 20_001, dtype=torch.float64)
        x2.requires_grad_(True)
        (g2,) = torch.autograd.grad(fn(x2).sum(), x2)
    # The grid misses the true maximum by O(step²·|f'''|) < 1e-12; the margin covers it.
    return float(max(g.abs().max(), g2.abs().max())) * (1 + 1e-9)


_GELU_EXACT = (1 + math.erf(1.0)) / 2 + math.sqrt(2) * math.exp(-1.0) / math.sqrt(2 * math.pi)
_CACHE: dict[str, float] = {}


def activation_lipschitz(module: nn.Module) -> float:
    """``c_σ = sup_z |σ'(z)|`` of an element-wise activation (or shape-only) module.

    Supported: ReLU, ReLU6, Hardtanh, Tanh, Identity, Flatten, Unflatten (1); Sigmoid (1/4);
    LeakyReLU (``max(1, |slope|)``); ELU (``max(1, α)``); Softplus (1); GELU exact
    (``Φ(√2) + √2·φ(√2) ≈ 1.1289 > 1``: GELU can *expand* gradients) and tanh-approximate
    (computed numerically); SiLU (≈ 1.0998, numerically); Dropout (1 in eval mode,
    ``1/(1-p)`` in training mode).

    Raises:
        UnsupportedModelError: any other module (its type is named).
    """
    if isinstance(module, (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Tanh, nn.Identity)):
        return 1.0
    if isinstance(module, (nn.Flatten, nn.Unflatten, nn.Softplus)):
        return 1.0
    if isinstance(module, nn.Sigmoid):
        return 0.25
    if isinstance(module, nn.LeakyReLU):
        return max(1.0, abs(float(module.negative_slope)))
    if isinstance(module, nn.ELU):
        return max(1.0, float(module.alpha))
    if isinstance(module, nn.GELU):
        if module.approximate == "none":
            return _GELU_EXACT
        if "gelu_tanh" not in _CACHE:
            _CACHE["gelu_tanh"] = _sup_derivative(
                lambda z: nn.functional.gelu(z, approximate="tanh"), -10.0, 10.0
            )
        return _CACHE["gelu_tanh"]
    if isinstance(module, nn.SiLU):
        if "silu" not in _CACHE:
            _CACHE["silu"] = _sup_derivative(nn.functional.silu, -10.0, 10.0)
        return _CACHE["silu"]
    if isinstance(module, nn.Dropout):
        if module.training and module.p > 0:
            if module.p >= 1:
                return math.inf
            return 1.0 / (1.0 - module.p)
        return 1.0
    raise UnsupportedModelError(
        f"{type(module).__name__} is not a supported element-wise activation; supported are "
        "ReLU, ReLU6, LeakyReLU, Hardtanh, Tanh, Sigmoid, GELU, SiLU, ELU, Softplus, Identity, "
        "Flatten, Unflatten, Dropout"
    )
