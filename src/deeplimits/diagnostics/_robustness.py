"""How far an input is from a change of the predicted label (L2 norm): found and certified.

- :func:`flip_distance` finds a perturbation that flips the label (an *upper* bound on the
  distance to the decision boundary): DeepFool (Moosavi-Dezfooli, Fawzi & Frossard, "DeepFool: a
  simple and accurate method to fool deep neural networks", CVPR 2016), then bisection along the
  perturbation it found.
- :func:`certified_radius` is a *lower* bound: margin / (√2 · L) (Tsuzuku, Sato & Sugiyama,
  "Lipschitz-Margin Training", NeurIPS 2018), below which no perturbation can flip the label.

Both read the model's output as logits: shape (batch, K) with K >= 2 (label = argmax) or
(batch, 1) / (batch,) (one logit, label = logit > 0).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from deeplimits.diagnostics._lipschitz import check_model_and_batch, lipschitz_upper
from deeplimits.errors import InvalidArgumentError, InvalidTypeError, UnsupportedModelError

__all__ = ["certified_radius", "flip_distance"]


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Model output as (batch, K); a scalar output per sample becomes K = 1."""
    out = model(x)
    if out.dim() == 1:
        out = out[:, None]
    if out.dim() != 2 or out.shape[0] != x.shape[0]:
        raise InvalidArgumentError(
            f"the model must output logits of shape (batch, K) or (batch,), got "
            f"{tuple(out.shape)} for a batch of {x.shape[0]}"
        )
    return out


def _labels(z: torch.Tensor) -> torch.Tensor:
    """Predicted labels from logits (batch, K): argmax, or logit > 0 when K = 1."""
    return (z[:, 0] > 0).long() if z.shape[1] == 1 else z.argmax(dim=1)


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _labels(_logits(model, x))


def _deepfool_step(model: nn.Module, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """One DeepFool step at x (batch, *in): the smallest step to the linearised boundary.

    For each class k != label: f_k = z_k − z_label, w_k = ∇f_k; the step goes to the nearest
    linearised boundary, r = |f_l| / ||w_l||² · w_l with l = argmin_k |f_k| / ||w_k||.
    """
    b = x.shape[0]
    x = x.detach().requires_grad_(True)
    z = _logits(model, x)  # (batch, K)
    n_cls = z.shape[1]
    if n_cls == 1:
        # One logit: the boundary is z = 0; f = z if label 1 else -z, stepping towards 0.
        (g,) = torch.autograd.grad(z[:, 0].sum(), x)
        g = g.reshape(b, -1)  # (batch, D)
        f = z[:, 0].detach()
        r = -f[:, None] / g.pow(2).sum(1, keepdim=True).clamp_min(1e-30) * g
        return r.reshape(x.shape)
    grads = []
    for k in range(n_cls):
        (g,) = torch.autograd.grad(z[:, k].sum(), x, retain_graph=k < n_cls - 1)
        grads.append(g.reshape(b, -1))
    jac = torch.stack(grads, dim=1)  # (batch, K, D)
    idx = torch.arange(b, device=x.device)
    w = jac - jac[idx, label][:, None, :]  # (batch, K, D)
    f = (z - z[idx, label][:, None]).detach()  # (batch, K), <= 0 for the true class
    wn = w.norm(dim=2)  # (batch, K)
    dist = f.abs() / wn.clamp_min(1e-30)
    dist[idx, label] = math.inf
    dist = torch.where(wn > 0, dist, torch.full_like(dist, math.inf))
    best = dist.argmin(dim=1)  # (batch,)
    wl = w[idx, best]  # (batch, D)
    step = (f[idx, best].abs() / wn[idx, best].pow(2).clamp_min(1e-30))[:, None] * wl
    return step.reshape(x.shape)


def flip_distance(
    model: nn.Module,
    x: torch.Tensor,
    *,
    max_iter: int = 50,
    overshoot: float = 0.02,
    bisection_steps: int = 30,
) -> torch.Tensor:
    """Per input, the L2 norm of the smallest label-flipping perturbation found.

    DeepFool (Moosavi-Dezfooli et al. 2016) iterates linearised steps to the nearest decision
    boundary, each scaled by (1 + ``overshoot``), until the label changes; then bisection on
    t in [0, 1] along the total perturbation r finds the smallest t·r that still flips (the
    bisection keeps a flipping end point, so the answer always flips). A final forward pass
    verifies the flip.

    This is an *upper* bound on the true distance to the decision boundary (another direction may
    be shorter); :func:`certified_radius` is a lower bound.

    Args:
        model: maps (batch, *in) to logits (batch, K) (label = argmax) or (batch,)/(batch, 1)
            (label = logit > 0). Samples must be independent (eval mode). No softmax at the end
            is needed (the label is the same) but DeepFool's steps are better on logits.
        x: inputs, shape (batch, *in).
        max_iter: DeepFool iterations per input.
        overshoot: DeepFool's overshoot factor.
        bisection_steps: bisection steps along the found perturbation.

    Returns:
        Tensor (batch,) of float distances on x's device; ``inf`` where no flip was found within
        ``max_iter`` iterations (e.g. a constant network). Never a distance that does not flip.

    Raises:
        InvalidTypeError / InvalidArgumentError: bad ``model``, ``x`` or options.
    """
    check_model_and_batch(model, x)
    if max_iter < 1 or bisection_steps < 0 or overshoot < 0:
        raise InvalidArgumentError(
            f"need max_iter >= 1, bisection_steps >= 0, overshoot >= 0; got max_iter={max_iter},"
            f" bisection_steps={bisection_steps}, overshoot={overshoot}"
        )
    b = x.shape[0]
    shape = (-1, *([1] * (x.dim() - 1)))
    x0 = x.detach()
    label = _predict(model, x0)  # (batch,)
    r_tot = torch.zeros_like(x0)
    flipped = torch.zeros(b, dtype=torch.bool, device=x.device)
    for _ in range(max_iter):
        active = ~flipped
        if not bool(active.any()):
            break
        xa = x0[active] + (1 + overshoot) * r_tot[active]
        r_tot[active] = r_tot[active] + _deepfool_step(model, xa, label[active])
        x_adv = x0 + (1 + overshoot) * r_tot
        flipped = _predict(model, x_adv) != label
    r = (1 + overshoot) * r_tot  # (batch, *in); flips where `flipped`
    # Bisection on t: lo never flips (t = 0 is the clean input), hi always flips.
    lo = torch.zeros(b, dtype=x0.dtype, device=x.device)
    hi = torch.ones(b, dtype=x0.dtype, device=x.device)
    for _ in range(bisection_steps):
        mid = (lo + hi) / 2
        flips = _predict(model, x0 + mid.reshape(shape) * r) != label
        hi = torch.where(flips, mid, hi)
        lo = torch.where(flips, lo, mid)
    delta = hi.reshape(shape) * r
    verified = flipped & (_predict(model, x0 + delta) != label)
    dist = delta.reshape(b, -1).norm(dim=1)
    return torch.where(verified, dist, torch.full_like(dist, math.inf))


def certified_radius(
    model: nn.Module,
    x: torch.Tensor,
    *,
    lipschitz: float | None = None,
    method: str = "product",
) -> torch.Tensor:
    """Per input, a radius within which no L2 perturbation can change the predicted label.

    With logits z and L the L2 Lipschitz constant of x ↦ z(x), each difference z_i − z_j is
    (√2·L)-Lipschitz, so the label cannot change while ||δ|| < (z_top − z_runner-up) / (√2·L)
    (Tsuzuku et al. 2018). For a single logit (label = z > 0) the radius is |z| / L.

    Args:
        model: maps (batch, *in) to logits (batch, K) or (batch,)/(batch, 1). Do not end it with
            a softmax: the margin must be measured on logits.
        x: inputs, shape (batch, *in).
        lipschitz: an upper bound on the Lipschitz constant of the logit map; if None,
            ``lipschitz_upper(model, method, input_shape=x.shape[1:])`` is computed (MLP chains
            by ``method``, other traceable models by the graph bound; a model without a finite
            global bound, e.g. with attention, raises). Passing a bound that is not an upper
            bound voids the certificate.
        method: the :func:`lipschitz_upper` method used when ``lipschitz`` is None.

    Returns:
        Tensor (batch,) of radii (>= 0) on x's device (dtype of the logits).

    Raises:
        InvalidArgumentError: ``lipschitz`` is not a positive finite number; bad ``x``.
        UnsupportedModelError: ``lipschitz`` is None and the model cannot be bounded.
    """
    check_model_and_batch(model, x)
    if lipschitz is None:
        lipschitz = lipschitz_upper(model, method, input_shape=tuple(x.shape[1:]))
        if math.isinf(lipschitz):
            from deeplimits.diagnostics._graph_lipschitz import lipschitz_graph

            why = lipschitz_graph(model, x.detach()[:1]).describe()
            raise UnsupportedModelError(
                f"certified_radius: {why}; pass lipschitz= a bound valid where you need it "
                "(e.g. lipschitz_graph(model, x, radius=r).value, valid within r of x, and "
                "cap the radius at r)"
            )
    if isinstance(lipschitz, bool) or not isinstance(lipschitz, (int, float)):
        raise InvalidTypeError(
            f"lipschitz must be a float (an upper bound on the Lipschitz constant), got "
            f"{type(lipschitz).__name__}"
        )
    if not (math.isfinite(lipschitz) and lipschitz > 0):
        raise InvalidArgumentError(
            f"lipschitz must be a positive finite number, got {lipschitz}; a zero bound means "
            "a constant network, whose label cannot flip"
        )
    with torch.no_grad():
        z = _logits(model, x.detach())  # (batch, K)
    if z.shape[1] == 1:
        return z[:, 0].abs() / lipschitz
    top2 = z.topk(2, dim=1).values  # (batch, 2)
    margin = top2[:, 0] - top2[:, 1]
    return margin / (math.sqrt(2.0) * lipschitz)
