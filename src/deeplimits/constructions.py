"""Hand-built ReLU networks with known linear regions, for the depth-vs-width experiments.

- :func:`sawtooth`: Telgarsky's construction (M. Telgarsky, "Benefits of depth in neural networks",
  COLT 2016): ``L`` hidden ReLU layers of width 2 whose output on ``[0, 1]`` is the tent map
  iterated ``L`` times, a sawtooth with exactly ``2**L`` affine pieces, from only ``6 L + 1``
  parameters. A one-hidden-layer net needs ``2**L - 1`` hidden units (``3 · 2**L - 2``
  parameters) for the same function, since each hidden unit adds at most one kink on a line.
- :func:`one_hidden_layer`: ``x ↦ Σ_i c_i · relu(x - k_i)``, a shallow net with prescribed kinks.
- :func:`mlp`: the plain MLP every experiment starts from (Linear layers, an activation between).
- :class:`ResidualBlock` (also named :data:`Residual`): ``x ↦ x + scale · branch(x)``, the one
  residual block that :func:`deeplimits.remedies.residual_mlp` builds with and that both
  :func:`deeplimits.diagnostics.gradient_flow` and :func:`deeplimits.diagnostics.count_regions`
  understand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from deeplimits.errors import InvalidArgumentError, InvalidTypeError

__all__ = [
    "Residual",
    "ResidualBlock",
    "mlp",
    "one_hidden_layer",
    "sawtooth",
    "sawtooth_parameters",
    "tent_power",
]


def mlp(widths: Sequence[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """``Linear(widths[0], widths[1]), activation(), ..., Linear(widths[-2], widths[-1])``.

    Layers are created in order with PyTorch's default initialisation, so a seed fixes them.

    Raises:
        InvalidArgumentError: fewer than two widths, or a width below 1.
    """
    if len(widths) < 2 or min(widths) < 1:
        raise InvalidArgumentError(
            f"mlp needs two or more widths, all >= 1 (input first, output last), got {list(widths)}"
        )
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """A residual block ``x ↦ x + scale · branch(x)``; input and output shapes must agree.

    The one residual block of the package: :func:`deeplimits.remedies.residual_mlp` builds its
    residual networks from it, :func:`deeplimits.diagnostics.gradient_flow` bounds it by
    ``1 + |scale| · Lip(branch)`` and :func:`deeplimits.diagnostics.count_regions` counts the
    regions of networks containing it. :data:`Residual` (here) and
    ``deeplimits.remedies.ResidualBlock`` are this class under its other names.

    Args:
        branch: any module mapping a tensor to a tensor of the same shape (for region counting:
            an ``nn.Sequential`` of ``nn.Linear`` / ``nn.ReLU`` / ``nn.LeakyReLU`` layers with
            equal input and output width).
        scale: the branch multiplier α (e.g. ``1/√(#blocks)``); 1 gives ``x + branch(x)``.

    Raises:
        InvalidTypeError: ``branch`` is not an ``nn.Module``.
        InvalidArgumentError: ``scale`` is not a finite number.
    """

    def __init__(self, branch: nn.Module, scale: float = 1.0) -> None:
        super().__init__()
        if not isinstance(branch, nn.Module):
            raise InvalidTypeError(f"branch must be an nn.Module, got {type(branch).__name__}")
        if not (isinstance(scale, (int, float)) and math.isfinite(scale)):
            raise InvalidArgumentError(f"scale must be a finite number, got {scale!r}")
        self.branch = branch
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, ...) -> (batch, ...)
        """Returns ``x + scale · branch(x)``, of ``x``'s shape."""
        return x + self.scale * self.branch(x)

    def extra_repr(self) -> str:
        return f"scale={self.scale:.4g}"


Residual = ResidualBlock
"""The same class as :class:`ResidualBlock` (its name before the two blocks were merged)."""


def sawtooth(depth: int, *, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """Telgarsky's sawtooth: ``depth`` ReLU layers of width 2 with ``2**depth`` pieces on [0, 1].

    Each hidden layer computes ``h = relu([t, t - 1/2])`` of the previous tent value ``t`` (the
    input ``x`` for the first layer), and the tent map is ``t' = 2 h_0 - 4 h_1``
    (``2t`` on ``[0, 1/2]``, ``2 - 2t`` on ``[1/2, 1]``). The output is the tent map iterated
    ``depth`` times: a sawtooth between 0 and 1 with ``2**(depth - 1)`` teeth, i.e. exactly
    ``2**depth`` affine pieces on ``[0, 1]``, with breakpoints at the dyadic points
    ``j / 2**depth``. Every weight is a power of two, so float32 evaluates it exactly at dyadic
    inputs up to depth ~20.

    Args:
        depth: number of hidden ReLU layers ``L >= 1``.
        dtype: parameter dtype.

    Returns:
        ``nn.Sequential(Linear(1, 2), ReLU, [Linear(2, 2), ReLU] * (L - 1), Linear(2, 1))``:
        input ``(batch, 1)``, output ``(batch, 1)``, ``6 L + 1`` parameters.

    Raises:
        InvalidArgumentError: ``depth`` is not an integer >= 1.

    Reference: M. Telgarsky, "Benefits of depth in neural networks", COLT 2016.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise InvalidArgumentError(f"depth must be an integer >= 1, got {depth!r}")
    layers: list[nn.Module] = []
    tent = torch.tensor([[2.0, -4.0]], dtype=dtype)  # t = 2 h0 - 4 h1, as a row (1, 2)
    shift = torch.tensor([0.0, -0.5], dtype=dtype)
    for i in range(depth):
        lin = nn.Linear(1 if i == 0 else 2, 2, dtype=dtype)
        with torch.no_grad():
            # first layer reads x; later layers read h and recompute t from it
            lin.weight.copy_(torch.ones(2, 1, dtype=dtype) if i == 0 else tent.expand(2, 2))
            lin.bias.copy_(shift)
        layers += [lin, nn.ReLU()]
    out = nn.Linear(2, 1, dtype=dtype)
    with torch.no_grad():
        out.weight.copy_(tent)
        out.bias.zero_()
    layers.append(out)
    return nn.Sequential(*layers)


def sawtooth_parameters(depth: int) -> int:
    """Number of parameters of :func:`sawtooth` ``(depth)``: ``6 · depth + 1``."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise InvalidArgumentError(f"depth must be an integer >= 1, got {depth!r}")
    return 6 * depth + 1


def tent_power(x: torch.Tensor, depth: int) -> torch.Tensor:
    """The tent map iterated ``depth`` times, element-wise (the function :func:`sawtooth` computes).

    Args:
        x: any shape; values in ``[0, 1]`` give the sawtooth, others are mapped by the same
            formula ``t(x) = 2 min(x, 1 - x)``.
        depth: ``>= 0`` (0 is the identity).
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise InvalidArgumentError(f"depth must be an integer >= 0, got {depth!r}")
    for _ in range(depth):
        x = 2 * torch.minimum(x, 1 - x)
    return x


def one_hidden_layer(
    kinks: Sequence[float],
    slope_changes: Sequence[float] | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> nn.Sequential:
    """A 1-D one-hidden-layer ReLU net ``x ↦ Σ_i c_i · relu(x - k_i)`` with prescribed kinks.

    Hidden unit ``i`` switches on at ``x = k_i``, where the output's slope changes by ``c_i``.
    With ``n`` distinct kinks and non-zero ``c_i`` the function has exactly ``n + 1`` affine
    pieces on any segment holding all kinks in its interior; a shallow net cannot do better than
    one piece per hidden unit plus one on a line.

    Args:
        kinks: the ``n >= 1`` kink positions (finite).
        slope_changes: ``c_i`` per kink (default ``+1, -2, +2, -2, ...``, a zig-zag); a zero
            ``c_i`` keeps the activation boundary at ``k_i`` but removes the kink there.
        dtype: parameter dtype.

    Returns:
        ``nn.Sequential(Linear(1, n), ReLU, Linear(n, 1))`` with ``3 n + 1`` parameters; input
        ``(batch, 1)``, output ``(batch, 1)``.

    Raises:
        InvalidArgumentError: no kinks, non-finite values, or lengths that differ.
    """
    ks = [float(k) for k in kinks]
    if not ks:
        raise InvalidArgumentError("kinks is empty; give at least one kink position")
    if not all(math.isfinite(k) for k in ks):
        raise InvalidArgumentError(f"kinks must be finite, got {ks}")
    n = len(ks)
    if slope_changes is None:
        cs = [1.0 if i == 0 else (2.0 if i % 2 == 0 else -2.0) for i in range(n)]
    else:
        cs = [float(c) for c in slope_changes]
        if len(cs) != n:
            raise InvalidArgumentError(
                f"slope_changes has {len(cs)} values but there are {n} kinks; give one per kink"
            )
        if not all(math.isfinite(c) for c in cs):
            raise InvalidArgumentError(f"slope_changes must be finite, got {cs}")
    hidden = nn.Linear(1, n, dtype=dtype)
    out = nn.Linear(n, 1, dtype=dtype)
    with torch.no_grad():
        hidden.weight.fill_(1.0)
        hidden.bias.copy_(-torch.tensor(ks, dtype=dtype))
        out.weight.copy_(torch.tensor([cs], dtype=dtype))
        out.bias.zero_()
    return nn.Sequential(hidden, nn.ReLU(), out)
