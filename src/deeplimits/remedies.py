"""Remedies for vanishing and exploding gradients (lecture slide 3), as reusable functions.

The slide bounds the input gradient by ``||∇x f|| <= ||∇y f|| · Π_l c_l · c_σ`` with
``c_l = ||W_lᵀ||_op``: when the ``c_l`` sit below 1 the gradient shrinks exponentially in depth.
Its three families of remedies are here, each a thin layer over PyTorch itself (no re-implemented
library code):

- **initialization** (``init_normal_``, ``init_xavier_``, ``init_he_``, ``init_orthogonal_``,
  or ``initialize_(model, scheme)``): set every Linear/Conv weight so the per-layer gain is about 1
  (Glorot & Bengio 2010; He et al. 2015; Saxe et al. 2014), biases to zero;
- **constrained optimization** (``constrain_spectral_norm_``, ``constrain_orthogonal_``): keep each
  weight on a constraint set during training via ``torch.nn.utils.parametrizations``
  (Miyato et al. 2018 spectral norm; orthogonal matrices, Lezcano-Casado & Martínez-Rubio 2019);
- **residual connections** (:class:`ResidualBlock`, :func:`residual_mlp`): ``x + α·g(x)`` has
  Jacobian ``I + α·J_g`` (He et al. 2016), with the branch scaled by ``1/√(#blocks)`` or
  zero-initialised so the network starts close to the identity (Hanin & Rolnick 2018;
  Zhang et al. 2019 "Fixup").

This is a public module rather than part of :mod:`deeplimits.diagnostics` because remedies
*change* a model while diagnostics only *measure* one. :class:`ResidualBlock` is defined in
:mod:`deeplimits.constructions` (as the package's one residual block, also named
``constructions.Residual``) and re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrizations

from deeplimits.constructions import ResidualBlock
from deeplimits.errors import InvalidArgumentError, InvalidTypeError, UnknownNameError

__all__ = [
    "INIT_SCHEMES",
    "ResidualBlock",
    "constrain_orthogonal_",
    "constrain_spectral_norm_",
    "init_he_",
    "init_normal_",
    "init_orthogonal_",
    "init_xavier_",
    "initialize_",
    "residual_mlp",
    "weight_layers",
]

_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
INIT_SCHEMES: tuple[str, ...] = ("normal", "xavier", "he", "orthogonal")
"""The names :func:`initialize_` accepts as ``scheme``."""


def _check_module(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def weight_layers(model: nn.Module) -> list[nn.Linear | nn.Conv1d | nn.Conv2d]:
    """The Linear/Conv1d/Conv2d layers of ``model`` in registration order."""
    _check_module(model)
    return [m for m in model.modules() if isinstance(m, _WEIGHT_LAYERS)]


def _init(
    model: nn.Module, fn: Callable[[torch.Tensor], object], *, skip: Callable[[nn.Module], bool]
) -> nn.Module:
    layers = weight_layers(model)
    if not layers:
        raise InvalidArgumentError(
            f"model {type(model).__name__} has no nn.Linear/nn.Conv1d/nn.Conv2d layer to "
            "initialise; pass a model that contains some"
        )
    with torch.no_grad():
        for layer in layers:
            if skip(layer):
                continue
            if _is_parametrized(layer):
                raise InvalidArgumentError(
                    f"layer {layer!r} already has a parametrization on its weight; initialise "
                    "before calling constrain_*_ (the constraint then starts from that weight)"
                )
            fn(layer.weight)
            if layer.bias is not None:
                layer.bias.zero_()
    return model


def _is_parametrized(layer: nn.Module) -> bool:
    from torch.nn.utils import parametrize

    return parametrize.is_parametrized(layer, "weight")


def _zero_initialised(layer: nn.Module) -> bool:
    # Branches a residual_mlp zero-initialised on purpose keep their zeros.
    return bool(getattr(layer, "_deeplimits_zero_init", False))


def init_normal_(model: nn.Module, std: float) -> nn.Module:
    """Weights i.i.d. N(0, std²), biases 0, for every Linear/Conv layer; returns ``model``.

    ``std = 0.01`` is the "naive" small initialisation whose per-layer gain ``std·√n`` is far
    below 1 for moderate widths, so gradients vanish geometrically in depth;
    ``std = 1/√n`` halves the signal per ReLU layer; ``std = √(2/n)`` is He's.
    """
    if not (isinstance(std, (int, float)) and math.isfinite(std) and std >= 0):
        raise InvalidArgumentError(f"std must be a finite number >= 0, got {std!r}")
    return _init(model, lambda w: nn.init.normal_(w, 0.0, float(std)), skip=_zero_initialised)


def init_xavier_(model: nn.Module, nonlinearity: str = "tanh") -> nn.Module:
    """Glorot & Bengio (2010) normal init, ``Var = gain²·2/(fan_in+fan_out)``, biases 0.

    ``gain = nn.init.calculate_gain(nonlinearity)`` (5/3 for tanh, 1 for linear).
    """
    gain = _gain(nonlinearity)
    return _init(model, lambda w: nn.init.xavier_normal_(w, gain=gain), skip=_zero_initialised)


def init_he_(model: nn.Module, nonlinearity: str = "relu") -> nn.Module:
    """He et al. (2015) normal init, ``Var = 2/fan_in`` for ReLU (fan-in mode), biases 0."""
    _gain(nonlinearity)
    return _init(
        model,
        lambda w: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity=nonlinearity),
        skip=_zero_initialised,
    )


def init_orthogonal_(model: nn.Module, gain: float = 1.0) -> nn.Module:
    """(Semi-)orthogonal weights times ``gain`` (Saxe et al. 2014), biases 0.

    For square Linear layers every singular value is ``gain``, so a deep *linear* network keeps
    every Jacobian singular value at ``gain**depth`` (dynamical isometry for ``gain = 1``).
    """
    if not (isinstance(gain, (int, float)) and math.isfinite(gain) and gain > 0):
        raise InvalidArgumentError(f"gain must be a finite number > 0, got {gain!r}")
    return _init(model, lambda w: nn.init.orthogonal_(w, gain=float(gain)), skip=_zero_initialised)


def _gain(nonlinearity: str) -> float:
    valid = ("linear", "sigmoid", "tanh", "relu", "leaky_relu", "selu")
    if nonlinearity not in valid:
        raise UnknownNameError("nonlinearity", nonlinearity, valid)
    return float(nn.init.calculate_gain(nonlinearity))


def initialize_(model: nn.Module, scheme: str, **kwargs: float | str) -> nn.Module:
    """Dispatch by name: ``"normal"`` (needs ``std``), ``"xavier"``, ``"he"``, ``"orthogonal"``."""
    fns: dict[str, Callable[..., nn.Module]] = {
        "normal": init_normal_,
        "xavier": init_xavier_,
        "he": init_he_,
        "orthogonal": init_orthogonal_,
    }
    if scheme not in fns:
        raise UnknownNameError("initialisation scheme", scheme, INIT_SCHEMES)
    try:
        return fns[scheme](model, **kwargs)
    except TypeError as exc:
        raise InvalidArgumentError(f"initialize_(scheme={scheme!r}): {exc}") from exc


def constrain_spectral_norm_(model: nn.Module, *, n_power_iterations: int = 1) -> nn.Module:
    """Reparametrise every Linear/Conv weight as ``W / σ_max(W)`` (Miyato et al. 2018).

    Uses ``torch.nn.utils.parametrizations.spectral_norm``; ``σ_max`` is tracked by power
    iteration updated in training mode, so ``||W||_op ≈ 1`` (exactly 1 only at convergence; for a
    conv it normalises the reshaped kernel, which is not the convolution's operator norm).
    Returns ``model``, modified in place.
    """
    if not (isinstance(n_power_iterations, int) and n_power_iterations >= 1):
        raise InvalidArgumentError(
            f"n_power_iterations must be an int >= 1, got {n_power_iterations!r}"
        )
    for layer in weight_layers(_check_module(model)):
        parametrizations.spectral_norm(layer, n_power_iterations=n_power_iterations)
    return model


def constrain_orthogonal_(model: nn.Module) -> nn.Module:
    """Keep every Linear weight (semi-)orthogonal during training.

    Uses ``torch.nn.utils.parametrizations.orthogonal`` (matrix exponential / Cayley /
    Householder maps onto the orthogonal group), initialised from the current weight. Every
    singular value of a constrained weight is 1 throughout training. Convolutions are left
    alone only if absent: a Conv layer raises, since an orthogonal *kernel* matrix does not make
    the convolution orthogonal. Returns ``model``, modified in place.
    """
    for layer in weight_layers(_check_module(model)):
        if not isinstance(layer, nn.Linear):
            raise InvalidArgumentError(
                f"constrain_orthogonal_ supports nn.Linear only; got {type(layer).__name__} "
                "(an orthogonal reshaped kernel is not an orthogonal convolution)"
            )
        parametrizations.orthogonal(layer)
    return model


def residual_mlp(
    in_features: int,
    width: int,
    out_features: int,
    depth: int,
    *,
    activation: type[nn.Module] = nn.ReLU,
    branch: str = "scaled",
) -> nn.Sequential:
    """A residual MLP with ``depth`` Linear layers in total (as a plain MLP of that depth).

    Layout: ``Linear(in, width) → act → (depth-2) × ResidualBlock(act → Linear(width, width))
    → Linear(width, out)``. Branch weights are He-initialised; with ``branch="scaled"`` each
    branch is multiplied by ``1/√(depth-2)`` (so the variance added over all blocks stays O(1)),
    with ``branch="zero"`` the branch's Linear starts at zero (scale 1), so the network starts as
    ``Linear → act → Linear`` (Fixup-style; Zhang et al. 2019). Other layers keep PyTorch's
    default init; re-initialise with ``initialize_`` if needed (zeroed branches stay zero).

    Raises:
        InvalidArgumentError: sizes < 1, ``depth < 2`` or an unknown ``branch``.
    """
    for name, v, lo in (
        ("in_features", in_features, 1),
        ("width", width, 1),
        ("out_features", out_features, 1),
        ("depth", depth, 2),
    ):
        if not (isinstance(v, int) and v >= lo):
            raise InvalidArgumentError(f"{name} must be an int >= {lo}, got {v!r}")
    if branch not in ("scaled", "zero"):
        raise UnknownNameError("residual branch", branch, ("scaled", "zero"))
    n_blocks = depth - 2
    layers: list[nn.Module] = [nn.Linear(in_features, width), activation()]
    for _ in range(n_blocks):
        lin = nn.Linear(width, width)
        with torch.no_grad():
            if branch == "zero":
                lin.weight.zero_()
                lin._deeplimits_zero_init = True  # type: ignore[assignment]
            else:
                nn.init.kaiming_normal_(lin.weight, mode="fan_in", nonlinearity="relu")
            lin.bias.zero_()
        scale = 1.0 if branch == "zero" else 1.0 / math.sqrt(n_blocks)
        layers.append(ResidualBlock(nn.Sequential(activation(), lin), scale=scale))
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)
