"""Global Lipschitz constants (w.r.t. the L2 norm) of feed-forward networks: bounds from above and
from below.

Upper bounds (:func:`lipschitz_upper`) hold for every pair of inputs; the lower bound
(:func:`lipschitz_lower`) is a measured Jacobian norm, so the true constant lies between them.

References:
    - Szegedy et al., "Intriguing properties of neural networks", ICLR 2014 (product of operator
      norms).
    - Fazlyab et al., "Efficient and Accurate Estimation of Lipschitz Constants for Deep Neural
      Networks" (LipSDP), NeurIPS 2019.
    - Xu & Sivaranjani, "ECLipsE: Efficient Compositional Lipschitz Constant Estimation for Deep
      Neural Networks", NeurIPS 2024 (package ``eclipse-nn``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from deeplimits._warnings import warn
from deeplimits.diagnostics._paths import flatten_sequential
from deeplimits.errors import (
    InvalidArgumentError,
    InvalidTypeError,
    UnknownNameError,
    UnsupportedModelError,
)

__all__ = ["lipschitz_lower", "lipschitz_upper"]


def check_model_and_batch(model: nn.Module, x: torch.Tensor) -> None:
    """Validate a model and a batch of inputs x of shape (batch, *input_shape), batch >= 1."""
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise InvalidTypeError(f"x must be a floating-point torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2 or x.shape[0] < 1:
        raise InvalidArgumentError(
            f"x must have shape (batch, *input_shape) with batch >= 1, got {tuple(x.shape)}"
        )
    if not bool(torch.isfinite(x).all()):
        raise InvalidArgumentError("x contains NaN or inf; pass finite inputs")

UPPER_METHODS: tuple[str, ...] = ("product", "eclipse", "eclipse-fast")

# Hidden layers wider than this get ECLipsE-Fast's closed-form multipliers instead of an SDP
# (an SCS solve on a 2n x 2n PSD cone takes seconds beyond ~128 neurons on 2 CPU cores).
SDP_MAX_WIDTH = 128


@dataclass(frozen=True)
class _Act:
    """An element-wise activation whose slope lies in [0, beta] (so it is beta-Lipschitz)."""

    beta: float


def _activation_slope(layer: nn.Module, index: int) -> _Act | None:
    """Slope bound of a supported element-wise activation; None for a no-op layer.

    Raises UnsupportedModelError for anything else (naming the layer and its position).
    """
    name = f"layer {index} ({type(layer).__name__})"
    if isinstance(layer, (nn.Identity, nn.Flatten)):
        return None
    if isinstance(layer, nn.Dropout):
        if layer.training and layer.p > 0:
            raise UnsupportedModelError(
                f"{name} is in training mode, so the network is random; call model.eval() first"
            )
        return None
    if isinstance(layer, (nn.ReLU, nn.ReLU6, nn.Tanh, nn.Hardtanh, nn.Softplus)):
        return _Act(1.0)
    if isinstance(layer, nn.Sigmoid):
        return _Act(0.25)
    if isinstance(layer, nn.LeakyReLU):
        a = float(layer.negative_slope)
        if a < 0:
            raise UnsupportedModelError(
                f"{name} has negative_slope={a} < 0: its slope is not in [0, beta], which both "
                "bounds assume"
            )
        return _Act(max(1.0, a))
    if isinstance(layer, nn.ELU):
        if not 0 <= layer.alpha <= 1:
            raise UnsupportedModelError(
                f"{name} has alpha={layer.alpha}; only 0 <= alpha <= 1 has slopes in [0, 1]"
            )
        return _Act(1.0)
    if isinstance(layer, (nn.Softmax, nn.LogSoftmax)):
        raise UnsupportedModelError(
            f"{name}: Lipschitz bounds here are for the logit map; remove the final "
            f"{type(layer).__name__} and pass the network that outputs logits"
        )
    raise UnsupportedModelError(
        f"{name} is not supported: only nn.Linear, element-wise activations with slopes in "
        "[0, beta] (ReLU, ReLU6, LeakyReLU(a>=0), Tanh, Sigmoid, Hardtanh, ELU(alpha<=1), "
        "Softplus), Identity, Flatten and eval-mode Dropout in an nn.Sequential are"
    )


def _parse(model: nn.Module) -> list[torch.Tensor | _Act]:
    """The model as a list of float64 weight matrices (out, in) and activations, in order."""
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    items: list[torch.Tensor | _Act] = []
    for i, layer in enumerate(flatten_sequential(model)):
        if isinstance(layer, nn.Linear):
            items.append(layer.weight.detach().to(device="cpu", dtype=torch.float64))
        else:
            act = _activation_slope(layer, i)
            if act is not None:
                items.append(act)
    if not any(isinstance(it, torch.Tensor) for it in items):
        raise UnsupportedModelError(
            f"the model ({type(model).__name__}) has no nn.Linear layer; pass an nn.Sequential "
            "of nn.Linear layers and activations"
        )
    return items


def _spectral_norm(w: torch.Tensor) -> float:
    """||W||_op = largest singular value, in float64.

    (Could switch to ``deeplimits.diagnostics.operator_norm`` once it exists.)
    """
    return float(torch.linalg.matrix_norm(w.to(torch.float64), ord=2))


def _product_bound(items: list[torch.Tensor | _Act]) -> float:
    bound = 1.0
    for it in items:
        bound *= _spectral_norm(it) if isinstance(it, torch.Tensor) else it.beta
    return bound


def _canonical(items: list[torch.Tensor | _Act]) -> tuple[float, list[torch.Tensor], list[float]]:
    """Rewrite the network as  c · W_l ∘ φ_{l-1} ∘ ... ∘ φ_1 ∘ W_1  with slopes φ_i in [0, β_i].

    Consecutive Linear layers are multiplied (exact); consecutive activations compose into one
    with slope in [0, β_a β_b] (both are non-decreasing); activations before the first or after the
    last Linear only multiply the bound by their β (returned as the factor c).
    """
    first = next(i for i, it in enumerate(items) if isinstance(it, torch.Tensor))
    last = max(i for i, it in enumerate(items) if isinstance(it, torch.Tensor))
    factor = 1.0
    for it in items[:first] + items[last + 1 :]:
        if isinstance(it, _Act):  # only activations lie outside the Linear span
            factor *= it.beta
    weights: list[torch.Tensor] = []
    betas: list[float] = []
    pending_beta: float | None = None
    for it in items[first : last + 1]:
        if isinstance(it, torch.Tensor):
            if weights and pending_beta is None:
                weights[-1] = it @ weights[-1]  # Linear after Linear: one matrix
            else:
                if pending_beta is not None:
                    betas.append(pending_beta)
                weights.append(it)
            pending_beta = None
        else:
            pending_beta = it.beta if pending_beta is None else pending_beta * it.beta
    return factor, weights, betas


def _eclipse_bound(items: list[torch.Tensor | _Act], *, fast: bool) -> float:
    """ECLipsE (per-layer SDPs from eclipse-nn) or ECLipsE-Fast.

    Theory (Xu & Sivaranjani 2024, with slopes in [0, β_i], m_i = β_i / 2): for any diagonal
    Λ_i >= 0 such that X_i = Λ_i − m_i² Λ_i W_i X_{i−1}^{-1} W_i^T Λ_i is positive definite
    (X_0 = I), L² <= λ_max(W_l^T W_l X_{l−1}^{-1}). The SDP only *chooses* good Λ_i, so validity
    does not rest on the solver's accuracy: we recompute every X_i in float64 and check it by a
    Cholesky factorisation. Where the SDP's Λ_a leaves X_i (numerically) singular, we blend it with
    ECLipsE-Fast's Λ_b = I / (2 λ_max(K_i)) (for which X_i ⪰ Λ_b / 2): Λ ↦ Λ − Λ K Λ is matrix
    concave, so X((1−η)Λ_a + ηΛ_b) ⪰ (1−η)X(Λ_a) + ηX(Λ_b) becomes positive definite for η large
    enough; η = 1 is ECLipsE-Fast itself.
    """
    factor, weights, betas = _canonical(items)
    if len(weights) == 1:
        return factor * _spectral_norm(weights[0])
    from eclipse_nn.eclipsE import sdp  # the package's per-layer SDP (cvxpy + SCS)

    x_prev = torch.eye(weights[0].shape[1], dtype=torch.float64)
    for i, beta in enumerate(betas):
        w, w_next = weights[i], weights[i + 1]
        m = beta / 2.0
        di = w.shape[0]
        k = m**2 * w @ torch.cholesky_solve(w.T, torch.linalg.cholesky(x_prev))  # (di, di)
        k = (k + k.T) / 2
        lam_max = float(torch.linalg.eigvalsh(k)[-1])
        if lam_max <= 0:  # W_i = 0: the network is constant
            return 0.0
        lam_fast = torch.full((di,), 1.0 / (2.0 * lam_max), dtype=torch.float64)
        lam_sdp: torch.Tensor | None = None
        if not fast and di <= SDP_MAX_WIDTH:
            # The SDP is solved on rescaled data, K' = K / λ_max(K) and W' = W_{i+1} / ||W_{i+1}||,
            # which SCS converges on far faster (Λ = Λ' / λ_max(K) maps the solution back; s only
            # rescales). Without it a Sigmoid net (m = 1/8) takes tens of seconds.
            k_ep = k / lam_max + 1e-10 * torch.eye(di, dtype=torch.float64)
            w_scaled = w_next / max(_spectral_norm(w_next), 1e-300)
            with warnings.catch_warnings():
                # SCS may report an inaccurate solution; harmless, since X_i is checked below.
                warnings.filterwarnings("ignore", message=r"(?s).*(inaccurate|Solution may be)")
                try:
                    _, li, _, _ = sdp(di, w_scaled, k_ep)
                except Exception:  # any solver failure: use ECLipsE-Fast's multipliers
                    li = None
            if li is not None and bool(torch.isfinite(li).all()):
                lam_sdp = torch.diagonal(li).clamp_min(0.0) / lam_max
        x_i = None
        etas = (0.0, 1e-4, 1e-3, 1e-2, 0.1, 0.5, 1.0) if lam_sdp is not None else (1.0,)
        for eta in etas:
            lam = lam_fast if eta == 1.0 else (1 - eta) * lam_sdp + eta * lam_fast  # type: ignore[operator]
            cand = torch.diag(lam) - lam[:, None] * k * lam[None, :]
            cand = (cand + cand.T) / 2
            ev = torch.linalg.eigvalsh(cand)
            if ev[0] > 1e-9 * max(float(ev[-1]), 1e-300):
                x_i = cand
                break
        if x_i is None:  # cannot happen in exact arithmetic (η = 1 gives X ⪰ Λ_b / 2)
            raise UnsupportedModelError(
                f"ECLipsE: no positive definite X at hidden layer {i + 1} (ill-conditioned "
                "weights); use method='product'"
            )
        x_prev = x_i
    w_last = weights[-1]
    # λ_max(W^T W X^{-1}) = λ_max(C^{-1} W^T W C^{-T}) with X = C C^T: a symmetric problem.
    c = torch.linalg.cholesky(x_prev)
    a = torch.linalg.solve_triangular(c, w_last.T, upper=False)  # (d, out) = C^{-1} W^T
    lip_sq = float(torch.linalg.eigvalsh(a @ a.T)[-1])
    return factor * math.sqrt(max(lip_sq, 0.0))


def _eclipse_fast_package(items: list[torch.Tensor | _Act]) -> float:
    """ECLipsE-Fast as implemented by eclipse-nn (closed form; X_i ⪰ Λ_i / 2 always)."""
    factor, weights, betas = _canonical(items)
    if len(weights) == 1:
        return factor * _spectral_norm(weights[0])
    from eclipse_nn import ECLipsE_Fast

    # Slopes in [0, β] are the sector alpha = 0, beta = β of the package.
    return factor * float(ECLipsE_Fast(weights, [0.0] * len(betas), list(betas)))


_CHAIN_LAYERS = (
    nn.Linear, nn.Identity, nn.Flatten, nn.Dropout, nn.ReLU, nn.ReLU6, nn.Tanh, nn.Hardtanh,
    nn.Softplus, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.Softmax, nn.LogSoftmax,
)


def _is_mlp_chain(model: nn.Module) -> bool:
    """An nn.Linear or a (nested) nn.Sequential of the layers the MLP path knows."""
    return isinstance(model, (nn.Linear, nn.Sequential)) and all(
        isinstance(layer, _CHAIN_LAYERS) for layer in flatten_sequential(model)
    )


def _graph_upper(model: nn.Module, input_shape: Sequence[int] | None) -> float:
    from deeplimits.diagnostics._graph_lipschitz import lipschitz_graph

    if input_shape is None:
        first = next((m for m in model.modules() if not any(True for _ in m.children())), None)
        if not isinstance(first, nn.Linear):
            raise InvalidArgumentError(
                f"lipschitz_upper needs input_shape for a {type(model).__name__} that is not an "
                "MLP chain (the graph is traced on an example input; convolution norms depend "
                "on its size); pass e.g. input_shape=(3, 32, 32), without the batch size"
            )
        input_shape = (first.in_features,)
    shape = tuple(input_shape)
    if not all(isinstance(s, int) and s >= 1 for s in shape):
        raise InvalidArgumentError(
            f"input_shape must be positive ints (without the batch size), got {input_shape!r}"
        )
    p = next((t for t in model.parameters() if t.is_floating_point()), None)
    x = torch.zeros((1, *shape), dtype=torch.float32 if p is None else p.dtype,
                    device="cpu" if p is None else p.device)
    try:
        result = lipschitz_graph(model, x)
    except (RuntimeError, ValueError) as exc:
        if isinstance(exc, UnsupportedModelError):
            raise
        raise InvalidArgumentError(
            f"the model failed on an input of shape {shape}: {exc}; check input_shape"
        ) from exc
    if not result.available:
        raise UnsupportedModelError(f"{result.culprit}: {result.reason}")
    return result.value


def lipschitz_upper(
    model: nn.Module, method: str = "product", *, input_shape: Sequence[int] | None = None
) -> float:
    """A certified upper bound on the global L2 Lipschitz constant of ``model``.

    MLP chains (an ``nn.Linear`` or nested ``nn.Sequential`` of the layers listed under
    ``model``) take the path below, where ECLipsE is available and tighter. Any other model
    (ResNets, BatchNorm, pooling, skip connections, ...) with ``method="product"`` gets the
    node-by-node bound of :func:`deeplimits.diagnostics.lipschitz_graph` on its ``torch.fx``
    graph: ``inf`` where no finite global bound exists (self-attention; see that function for
    the culprit and a local bound), and :class:`UnsupportedModelError` where a node has no rule
    or the model cannot be traced.

    Args:
        model: an ``nn.Linear`` or an ``nn.Sequential`` (nested ones are flattened) of
            ``nn.Linear`` layers and element-wise activations whose slopes lie in [0, β]:
            ReLU, ReLU6, LeakyReLU (negative_slope >= 0), Tanh, Sigmoid (β = 1/4), Hardtanh,
            ELU (alpha <= 1), Softplus; Identity, Flatten and eval-mode Dropout are skipped.
            The output should be the logits: a final Softmax is refused.
        method:
            - ``"product"``: ∏ ||W_i||_op · ∏ β_i (the slide's product of operator norms;
              Szegedy et al. 2014). Cheap and always valid, often very loose.
            - ``"eclipse"``: ECLipsE (Xu & Sivaranjani 2024, successor of LipSDP): per hidden
              layer an SDP solved by ``eclipse_nn``'s ``sdp`` (cvxpy + SCS) picks the multipliers;
              layers wider than 128 neurons use ECLipsE-Fast's closed-form multipliers instead.
              Each step is re-checked in float64 (see ``_eclipse_bound``), so an inaccurate solve
              can only loosen, never invalidate, the bound. Seconds for 2 x 64 neurons.
            - ``"eclipse-fast"``: ECLipsE-Fast as implemented in ``eclipse_nn`` (closed form,
              milliseconds; never above the product bound).
            The ECLipsE methods need an MLP chain; other models are refused with the layer named.
        input_shape: one input's shape without the batch size, e.g. ``(3, 32, 32)``; needed for
            the graph path (convolution norms depend on it) unless the model's first layer is an
            ``nn.Linear``; ignored for MLP chains.

    Returns:
        The bound as a Python float (a single Linear layer gives exactly ||W||_op).

    Raises:
        UnknownNameError: ``method`` is not one of the above.
        UnsupportedModelError: a layer is not supported (its position and type are named).
        InvalidTypeError: ``model`` is not an ``nn.Module``.
        InvalidArgumentError: the graph path without a usable ``input_shape``.

    Caveats:
        On the graph path, convolution norms come from power iteration, which approaches them
        from below (see :func:`~deeplimits.diagnostics.lipschitz_graph`'s caveats); the bound
        is certified up to that accuracy. Biases do not matter for a global constant. The
        ECLipsE methods refuse negative-slope activations (GELU, SiLU, LeakyReLU with a < 0)
        rather than bound them loosely; ``"product"`` bounds them by ``sup|σ'|`` on the graph
        path (a Sequential with them is not an MLP chain here).
    """
    if method not in UPPER_METHODS:
        raise UnknownNameError("Lipschitz method", method, UPPER_METHODS)
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if method == "product" and not _is_mlp_chain(model):
        return _graph_upper(model, input_shape)
    items = _parse(model)
    if method == "product":
        return _product_bound(items)
    if method == "eclipse-fast":
        return _eclipse_fast_package(items)
    return _eclipse_bound(items, fast=False)


def _jacobian_norms(model: nn.Module, x: torch.Tensor, *, create_graph: bool) -> torch.Tensor:
    """Per-sample spectral norm of the Jacobian d model(x_b) / d x_b.  x: (batch, *in) -> (batch,).

    The batch is assumed independent (no batch-statistics layers in training mode). Up to 64
    outputs the full Jacobian is built (one backward pass per output); beyond, 30 steps of power
    iteration on J^T J, whose Rayleigh quotient is still a valid lower bound on ||J||.
    """
    out = model(x)
    b = x.shape[0]
    out = out.reshape(b, -1)  # (batch, K)
    n_out = out.shape[1]
    if n_out <= 64:
        rows = []
        for k in range(n_out):
            (g,) = torch.autograd.grad(
                out[:, k].sum(), x, create_graph=create_graph, retain_graph=True
            )
            rows.append(g.reshape(b, -1))  # (batch, D)
        jac = torch.stack(rows, dim=1)  # (batch, K, D)
        return torch.linalg.matrix_norm(jac, ord=2)  # (batch,)
    # Power iteration with vector-Jacobian and Jacobian-vector products (no grad through it),
    # from a start drawn by a local generator (the global RNG is left alone).
    func = model
    gen = torch.Generator(device=x.device).manual_seed(0)
    v = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    v = v / v.reshape(b, -1).norm(dim=1).reshape(-1, *([1] * (x.dim() - 1)))
    xd = x.detach()
    with warnings.catch_warnings():
        # torch's own notice when forward-mode AD first loads its decompositions (torch.jit)
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated")
        for _ in range(30):
            _, jv = torch.func.jvp(func, (xd,), (v,))  # (batch, K)
            _, vjp_fn = torch.func.vjp(func, xd)
            (v,) = vjp_fn(jv)
            n = v.reshape(b, -1).norm(dim=1).clamp_min(1e-30)
            v = v / n.reshape(-1, *([1] * (x.dim() - 1)))
        _, jv = torch.func.jvp(func, (x,), (v.detach(),))
    return jv.reshape(b, -1).norm(dim=1)


def lipschitz_lower(
    model: nn.Module,
    x: torch.Tensor,
    *,
    steps: int = 30,
    step_size: float = 0.05,
    seed: int = 0,
) -> float:
    """A lower bound on the global L2 Lipschitz constant: the largest Jacobian norm found.

    For every start point ``x_b`` the spectral norm ||J(x_b)||_2 of the input Jacobian is a lower
    bound on the Lipschitz constant (for a scalar output it is the input-gradient norm). Starting
    from the data points we ascend it: each step proposes a normalised gradient step (of length
    ``step_size`` · RMS norm of the data) plus a random step of the same length, and keeps it where
    the norm grew. The random part matters for piecewise-linear (ReLU) networks, whose Jacobian is
    locally constant so that its gradient vanishes.

    Args:
        model: any differentiable ``nn.Module`` mapping (batch, *in) to (batch, *out), with
            independent samples (eval mode).
        x: start points, shape (batch, *in), batch >= 1.
        steps: ascent steps (0 returns the best norm at the data points).
        step_size: step length relative to the RMS norm of ``x``.
        seed: seed of the random proposals (a local generator; global RNG untouched).

    Returns:
        The largest Jacobian norm evaluated, a Python float.

    Raises:
        InvalidTypeError: ``x`` is not a floating tensor. InvalidArgumentError: bad shape/values.

    Warns:
        RuntimeWarning: torch has no second derivative for part of the model (e.g.
            ``torch.cdist``): the ascent continues with its random steps only; every value
            returned is still a measured Jacobian norm.

    Caveats:
        Scaled dot-product attention (``F.scaled_dot_product_attention``, the ``nn.Transformer*``
        layers) runs its math backend here: torch's fused CPU kernel has neither the second
        derivative the ascent needs nor the forward-mode derivative of large outputs.
    """
    check_model_and_batch(model, x)
    if steps < 0 or step_size <= 0:
        raise InvalidArgumentError(
            f"steps must be >= 0 and step_size > 0, got steps={steps}, step_size={step_size}"
        )
    with sdpa_kernel(SDPBackend.MATH):
        return _ascend(model, x, steps, step_size, seed)


def _ascend(model: nn.Module, x: torch.Tensor, steps: int, step_size: float, seed: int) -> float:
    """:func:`lipschitz_lower`'s search, on checked arguments."""
    b = x.shape[0]
    shape = (-1, *([1] * (x.dim() - 1)))
    gen = torch.Generator(device=x.device).manual_seed(seed)
    scale = float(x.detach().reshape(b, -1).norm(dim=1).pow(2).mean().sqrt()) or 1.0
    length = step_size * scale

    cur = x.detach().clone().requires_grad_(True)
    cur_val = _jacobian_norms(model, cur, create_graph=True)  # (batch,)
    best = float(cur_val.detach().max())
    second_order = True
    for _ in range(steps):
        g = None
        if second_order:
            try:
                (g,) = torch.autograd.grad(cur_val.sum(), cur, allow_unused=True)
            except RuntimeError as err:  # an op without a second derivative
                second_order = False
                warn(
                    "lipschitz_lower: torch has no second derivative for part of the model "
                    f"({str(err).splitlines()[0]}); the ascent continues with random steps only",
                    RuntimeWarning,
                )
        if g is None:
            g = torch.zeros_like(cur)
        gn = g.reshape(b, -1).norm(dim=1).reshape(shape)
        direction = torch.where(gn > 0, g / gn.clamp_min(1e-30), torch.zeros_like(g))
        noise = torch.randn(cur.shape, generator=gen, device=x.device, dtype=x.dtype)
        noise = noise / noise.reshape(b, -1).norm(dim=1).clamp_min(1e-30).reshape(shape)
        prop = (cur.detach() + length * (direction + noise)).requires_grad_(True)
        prop_val = _jacobian_norms(model, prop, create_graph=True)
        better = (prop_val.detach() > cur_val.detach()).reshape(shape)
        best = max(best, float(prop_val.detach().max()))
        cur = torch.where(better, prop.detach(), cur.detach()).requires_grad_(True)
        cur_val = _jacobian_norms(model, cur, create_graph=True)
    return best
