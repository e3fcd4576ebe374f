"""The slide's Lipschitz bound on a general computation graph, node by node.

The model is traced with ``torch.fx.symbolic_trace`` (a custom tracer, see :class:`_Tracer`) and
then run once on an example input by an ``fx.Interpreter`` that, for every node ``v``, bounds
``L_v``, the Lipschitz constant (L2 → L2) of the map from the model's input to the node's value:

- input: 1; parameters, buffers and anything not depending on the input: 0.
- Linear / ``F.linear`` / ``x @ W`` with a constant ``W``: ``||W||_op · L_in`` (existing code);
  Conv1d/Conv2d: the operator norm of the convolution *on the actual input size*, by power
  iteration warm-started and cached per layer (:func:`conv_norm_cached`).
- eval-mode BatchNorm: ``max_c |γ_c / sqrt(var_c + eps)|`` (exact: a per-channel scaling).
- LayerNorm / GroupNorm: ``max|γ| / sqrt(eps)``: exact, and finite *only because of* eps (without
  it these are not Lipschitz near zero variance: the Jacobian of ``x_c / std(x)`` is
  ``(I_⊥ − u uᵀ)/s`` with ``s = sqrt(var + eps)``, norm ``1/s``). Given a ``radius``, the local
  bound ``max|γ| / sqrt(v_min + eps)`` over the region is used instead, ``v_min`` the smallest
  variance a row can have within the region.
- element-wise activations: ``sup|σ'|`` (:func:`activation_lipschitz`); Dropout: 1 (eval);
  softmax: 1/2 (its Jacobian ``diag(p) − ppᵀ`` has norm at most 1/2, attained at two equal
  probabilities).
- ``a + b``, ``a − b``: ``L_a + L_b`` (attained when both are the same linear map); ``c · a``,
  ``a / c`` for a constant ``c`` (``/``, ``torch.div``/``divide``/``true_divide`` and the
  ``Tensor`` methods of those names): ``max|c| · L_a``, ``L_a / min|c|``; ``−a``: ``L_a``. An
  operand broadcast to a larger output repeats each entry ``k`` times and counts ``sqrt(k)·L``
  (``x + x.mean(1, keepdim=True)`` has constant 2, not ``1 + 1/sqrt(n)``).
- concatenation / stacking: ``sqrt(Σ_k L_k²)`` (exact for copies of one map).
- average pooling, adaptive average pooling, ``mean``, ``sum``: linear maps ``A`` with
  non-negative entries, bounded by the Schur test ``||A||_2 <= sqrt(||A||_1 ||A||_∞)``
  (row and column sums computed on the actual input), which is exact for non-overlapping windows
  (``1/k`` for a ``k×k`` average pool with stride ``k``, ``1/sqrt(n)`` for a mean of ``n``).
- max pooling: ``sqrt(m)`` with ``m`` the largest number of windows containing one element
  (1 for non-overlapping windows, exact).
- reshape, view, flatten, permute, transpose, squeeze, unsqueeze, contiguous, basic slicing,
  split/chunk/unbind: ``L_in`` (isometries or projections).
- a tuple or dict output: ``sqrt(Σ_k L_k²)`` over its tensors.

Where no finite global bound exists the value is ``inf`` and the node is named, never a made-up
number: dot-product self-attention (``nn.MultiheadAttention``, the ``nn.Transformer*`` layers,
``F.scaled_dot_product_attention``, and any product ``a · b`` or ``a @ b`` of two tensors that
both depend on the input) is not globally Lipschitz (Kim, Papamakarios & Mnih, "The Lipschitz
constant of self-attention", ICML 2021). With a ``radius``, products of two input-dependent
tensors get the local bound ``(|a|_max + L_a r) L_b + L_a (|b|_max + L_b r)`` (per-slice Frobenius
norms for ``@``), valid for inputs within ``r`` of ``x``; attention *modules* stay ``inf``.
Train-mode BatchNorm (batch statistics couple the samples; not Lipschitz near zero batch variance)
and train-mode Dropout (a random map) are reported as unsupported with the fix (``model.eval()``),
unless ``train_mode_ok`` (Dropout then counts ``1/(1-p)``, BatchNorm ``inf``). An operation with no
rule here (recurrent layers, Softmax, gathers, ...) makes the bound *unavailable*, naming the node;
so does an operand passed by keyword (``torch.relu(input=x)``; ``torch.add``'s ``other=`` is read).

Why ``torch.fx`` and not ``torch.export``: fx's symbolic trace keeps modules as call sites with
their qualified names (so ``blocks.0.conv1`` is reported by name and its cached norm found), it
lets this module choose which modules are leaves (attention and recurrent layers are analysed as
one unit rather than as the dozens of ATen ops ``torch.export`` decomposes them into), and it
runs on CPU in milliseconds without compiling. Its limit: Python control flow on tensor values
cannot be traced; such models get ``available = False`` with the tracer's message.

The bound is for the whole batched map; for a model that treats samples independently it is the
bound of each sample's map (the batched Jacobian is block diagonal).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
from torch import nn
from torch.nn import functional as F

from deeplimits.diagnostics._operator_norm import (
    activation_lipschitz,
    conv_norm_cached,
    operator_norm,
)
from deeplimits.errors import InvalidArgumentError, InvalidTypeError, UnsupportedModelError

__all__ = ["GraphLipschitz", "NodeLipschitz", "lipschitz_graph"]

ATTENTION_REASON = (
    "dot-product self-attention is not globally Lipschitz (Kim, Papamakarios & Mnih, ICML 2021)"
)
_PRODUCT_REASON = (
    "a product of two tensors that both depend on the input (e.g. attention scores q·kᵀ, "
    "gates) is not globally Lipschitz"
)

_TRAIN_BN_REASON = (
    "BatchNorm in training mode normalises by batch statistics (samples coupled, not Lipschitz "
    "near zero batch variance); call model.eval() for the eval-mode bound"
)
# sup ||diag(p) − p pᵀ||_2 = 1/2: vᵀ(diag(p) − ppᵀ)v is the variance of v under p, at most
# (max v − min v)²/4 <= 1/2 for a unit v; attained by p = (1/2, 1/2), v = (1, −1)/√2.
SOFTMAX_LIPSCHITZ = 0.5

_ATTENTION_MODULES = (
    nn.MultiheadAttention,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
    nn.TransformerEncoder,
    nn.TransformerDecoder,
    nn.Transformer,
)
_LEAF_TYPES = (*_ATTENTION_MODULES, nn.RNNBase)


@dataclass(frozen=True)
class NodeLipschitz:
    """One node of the traced graph.

    Attributes:
        name: the fx node name.
        op: ``"placeholder"``, ``"call_module"``, ``"call_function"``, ``"call_method"``, ...
        target: qualified module name (call_module), function or method name.
        kind: module class name or function name.
        factor: the node's own constant (``||W||``, ``c_σ``, ...), NaN where it combines inputs.
        lipschitz: ``L_v``, the bound from the model input to this node's value.
    """

    name: str
    op: str
    target: str
    kind: str
    factor: float
    lipschitz: float


@dataclass(frozen=True)
class GraphLipschitz:
    """Result of :func:`lipschitz_graph`.

    Attributes:
        value: the bound on the model's Lipschitz constant: finite, ``inf`` (no finite global
            bound: see ``culprit``/``reason``) or NaN when ``available`` is False.
        available: False when the model could not be traced or has a node without a rule.
        culprit: the node that made ``value`` infinite or unavailable (``"layer NAME (Type)"``).
        reason: why.
        nodes: per-node records in graph order (up to the culprit).
        radius: the input radius of a local bound, ``None`` for a global one.
    """

    value: float
    available: bool
    culprit: str | None
    reason: str | None
    nodes: tuple[NodeLipschitz, ...] = field(default=())
    radius: float | None = None

    def module_factors(self) -> dict[str, float]:
        """``{qualified module name: its own constant}`` for the call_module nodes."""
        return {n.target: n.factor for n in self.nodes if n.op == "call_module"}

    def describe(self) -> str:
        """One line: the value, or why there is no finite one."""
        scope = "global" if self.radius is None else f"local (radius {self.radius:g})"
        if not self.available:
            return f"Lipschitz bound unavailable: {self.culprit}: {self.reason}"
        if math.isinf(self.value):
            hint = ""
            if self.radius is None and self.reason == _PRODUCT_REASON:
                hint = ("; a local bound for inputs within r of x: "
                        "lipschitz_graph(model, x, radius=r)")
            return f"no finite {scope} Lipschitz bound: {self.culprit}: {self.reason}{hint}"
        return f"{scope} Lipschitz bound (fx graph, node by node) = {self.value:.6g}"


class _Tracer(torch.fx.Tracer):
    """Leaves: torch.nn's layers without children, attention and recurrent layers (analysed as a
    whole); everything else (Sequential, user modules) is traced through."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, _LEAF_TYPES):
            return True
        # torch.nn's own layers without children; user-defined modules are traced through.
        if isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            return False
        return m.__module__.startswith("torch.nn") and not any(True for _ in m.children())


class _Root(nn.Module):
    """Wraps a model whose own type is a leaf, so that it is one call_module node."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(x)


class _Stop(Exception):
    """Raised inside the interpreter at the first node that ends the analysis."""

    def __init__(self, culprit: str, reason: str, infinite: bool) -> None:
        super().__init__(reason)
        self.culprit, self.reason, self.infinite = culprit, reason, infinite


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _nodes_in(obj: Any) -> list[torch.fx.Node]:
    if isinstance(obj, torch.fx.Node):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [n for o in obj for n in _nodes_in(o)]
    if isinstance(obj, dict):
        return [n for o in obj.values() for n in _nodes_in(o)]
    return []


def _root_sum_squares(values: Sequence[float]) -> float:
    return math.sqrt(sum(v * v for v in values))


@torch.enable_grad()
def _schur(fn: Callable[[torch.Tensor], torch.Tensor], like: torch.Tensor) -> float:
    """sqrt(max row sum · max column sum) of a linear map with non-negative entries."""
    ones = torch.ones(like.shape, dtype=torch.float64, device=like.device, requires_grad=True)
    out = fn(ones)
    (cols,) = torch.autograd.grad(out, ones, grad_outputs=torch.ones_like(out))
    return math.sqrt(float(out.detach().max()) * float(cols.max()))


def _windows_per_element(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """Largest number of pooling windows (kernel k, stride s, padding p, dilation d) holding one
    input element, along one dimension."""
    span = d * (k - 1) + 1
    n_out = (size + 2 * p - span) / s + 1
    n_out = math.ceil(n_out) if ceil_mode else math.floor(n_out)
    counts = [0] * size
    for i in range(max(n_out, 0)):
        for t in range(k):
            j = i * s - p + t * d
            if 0 <= j < size:
                counts[j] += 1
    return max(counts, default=1)


def _adaptive_windows_per_element(size: int, out: int) -> int:
    counts = [0] * size
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        for j in range(start, end):
            counts[j] += 1
    return max(counts, default=1)


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _maxpool_lipschitz(m: nn.Module, x: torch.Tensor) -> float:
    n = 1 if isinstance(m, (nn.MaxPool1d, nn.AdaptiveMaxPool1d)) else 2
    sizes = tuple(x.shape[-n:])
    if isinstance(m, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)):
        outs = _tuple(m.output_size, n)
        counts = [
            _adaptive_windows_per_element(sz, sz if o is None else o)
            for sz, o in zip(sizes, outs, strict=True)
        ]
    else:
        ks, st = _tuple(m.kernel_size, n), _tuple(m.stride or m.kernel_size, n)
        pd, dl = _tuple(m.padding, n), _tuple(m.dilation, n)
        counts = [
            _windows_per_element(sz, k, s, p, d, bool(m.ceil_mode))
            for sz, k, s, p, d in zip(sizes, ks, st, pd, dl, strict=True)
        ]
    return math.sqrt(math.prod(counts))


_ACT_FUNCTIONS: dict[Any, Callable[..., nn.Module]] = {
    torch.relu: lambda *a, **k: nn.ReLU(),
    F.relu: lambda *a, **k: nn.ReLU(),
    torch.tanh: lambda *a, **k: nn.Tanh(),
    F.tanh: lambda *a, **k: nn.Tanh(),
    torch.sigmoid: lambda *a, **k: nn.Sigmoid(),
    F.sigmoid: lambda *a, **k: nn.Sigmoid(),
    F.silu: lambda *a, **k: nn.SiLU(),
    F.relu6: lambda *a, **k: nn.ReLU6(),
    F.hardtanh: lambda *a, **k: nn.Hardtanh(),
    F.softplus: lambda *a, **k: nn.Softplus(),
    F.gelu: lambda *a, **k: nn.GELU(approximate=k.get("approximate", "none")),
    F.elu: lambda *a, **k: nn.ELU(alpha=a[1] if len(a) > 1 else k.get("alpha", 1.0)),
    F.leaky_relu: lambda *a, **k: nn.LeakyReLU(
        a[1] if len(a) > 1 else k.get("negative_slope", 0.01)
    ),
}
_ACT_METHODS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
_SHAPE_FUNCTIONS = {
    torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.squeeze,
    torch.unsqueeze, torch.t, torch.movedim, torch.split, torch.chunk, torch.unbind,
}
_SHAPE_METHODS = {
    "view", "reshape", "flatten", "permute", "transpose", "squeeze", "unsqueeze", "contiguous",
    "t", "split", "chunk", "unbind", "clone", "float", "double", "to", "movedim", "view_as",
    "reshape_as", "type_as",
}
_ADD = {operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub}
_MUL = {operator.mul, operator.imul, torch.mul}
_DIV = {operator.truediv, operator.itruediv, torch.div, torch.divide, torch.true_divide}
_DIV_METHODS = {"div", "div_", "divide", "divide_", "true_divide", "true_divide_"}
_BINARY_METHODS = _DIV_METHODS | {"mul", "mul_", "matmul"}  # the operand read positionally
_MATMUL = {operator.matmul, torch.matmul, torch.bmm, torch.mm}
_BINARY = _MUL | _DIV | _MATMUL | {F.linear}  # their rules read the second operand positionally
_DISCONTINUOUS_REASON = (
    "a rounded, integer or boolean result of input-dependent values is discontinuous: it has "
    "no Lipschitz constant"
)
_KEYWORD_REASON = (
    "an operand passed by keyword (input=, other=, weight=, tensors=) has no rule here; pass the "
    "operands positionally"
)
_LINEAR_NONNEG_FUNCTIONS = {
    torch.mean, torch.sum, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
}
_POOL_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
_MAXPOOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)


def _fname(target: Any) -> str:
    return getattr(target, "__name__", str(target))


class _Bounder(torch.fx.Interpreter):
    def __init__(
        self, gm: torch.fx.GraphModule, radius: float | None, train_mode_ok: bool
    ) -> None:
        super().__init__(gm)
        self.radius = radius
        self.wrapped = False
        self.train_mode_ok = train_mode_ok
        self.lip: dict[torch.fx.Node, float] = {}
        self.records: list[NodeLipschitz] = []

    # -- helpers --------------------------------------------------------------------------
    def _label(self, n: torch.fx.Node) -> str:
        if n.op == "call_module":
            kind = type(self.module.get_submodule(str(n.target))).__name__
            name = "<model>" if self.wrapped else n.target
            return f"layer {name} ({kind})"
        name = n.target if isinstance(n.target, str) else _fname(n.target)
        return f"node {n.name} ({name})"

    def _unsupported(self, n: torch.fx.Node, why: str) -> _Stop:
        return _Stop(self._label(n), why, infinite=False)

    def _infinite(self, n: torch.fx.Node, why: str) -> _Stop:
        return _Stop(self._label(n), why, infinite=True)

    def _in(self, obj: Any) -> float:
        """Bound of the input-dependent part of an argument (0 for constants)."""
        return _root_sum_squares([self.lip.get(m, 0.0) for m in _nodes_in(obj)])

    _out: Any = None

    def _quotient(
        self, n: torch.fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[float, float]:
        """``a / d`` (``torch.div``, ``/``, ``Tensor.div`` and its aliases) with a constant
        divisor: ``max 1/|d|`` times the spread of ``a``; a rounded quotient is refused as
        discontinuous, an input-dependent divisor as unsupported."""
        if kwargs.get("rounding_mode") is not None:
            raise self._unsupported(n, _DISCONTINUOUS_REASON)
        if self._in(n.args[1]) > 0:
            raise self._unsupported(n, "division by an input-dependent tensor")
        d = args[1]
        c = float((1.0 / d.detach().abs()).max()) if isinstance(d, torch.Tensor) else 1.0 / abs(
            float(d))
        c *= self._spread(args[0])
        return c, c * self._in(n.args[0])

    def _spread(self, operand: Any) -> float:
        """How much broadcasting ``operand`` to the current node's output multiplies norms:
        each entry repeated k times scales the L2 norm by sqrt(k) (``x + x.mean(1, keepdim=
        True)`` is ``(I + 11ᵀ/n) x``, norm 2 along ones, not 1 + 1/sqrt(n))."""
        out = self._out
        if (isinstance(operand, torch.Tensor) and isinstance(out, torch.Tensor)
                and 0 < operand.numel() < out.numel()):
            return math.sqrt(out.numel() / operand.numel())
        return 1.0

    def run_node(self, n: torch.fx.Node) -> Any:
        if n.op == "call_module" and not self.train_mode_ok:
            m = self.module.get_submodule(str(n.target))
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and (
                m.training or m.running_var is None
            ):
                raise self._unsupported(n, _TRAIN_BN_REASON)  # before it runs on the batch
        value = super().run_node(n)
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        # the model runs under no_grad, but some constants need autograd (SiLU's and tanh-GELU's
        # sup|σ'| on a grid, the Schur test, conv power iterations)
        with torch.enable_grad():
            factor, lip = self._bound(n, args, kwargs, value)
        if math.isnan(lip):
            raise self._unsupported(n, "no Lipschitz rule for this node")
        self.lip[n] = lip
        kind = (
            type(self.module.get_submodule(str(n.target))).__name__
            if n.op == "call_module"
            else (n.target if isinstance(n.target, str) else _fname(n.target))
        )
        target = n.target if isinstance(n.target, str) else _fname(n.target)
        if n.op == "call_module" and self.wrapped:
            target = "<model>"
        self.records.append(NodeLipschitz(n.name, n.op, target, kind, factor, lip))
        if math.isinf(lip):
            raise self._infinite(n, self._inf_reason)
        return value

    _inf_reason = ""

    # -- the rules ------------------------------------------------------------------------
    def _bound(
        self, n: torch.fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any], value: Any
    ) -> tuple[float, float]:
        if n.op == "placeholder":
            return math.nan, 1.0 if n.name == self._first_placeholder else 0.0
        if n.op == "get_attr":
            return math.nan, 0.0
        if n.op == "output":
            return math.nan, self._in(n.args[0])
        self._out = value  # for _spread: the shape an operand is broadcast to
        deps = [m for m in _nodes_in((n.args, n.kwargs)) if self.lip.get(m, 0.0) != 0.0]
        if not deps:
            return math.nan, 0.0  # does not depend on the input (or only through shapes)
        if not _tensors(value) and not isinstance(value, torch.Tensor):
            return math.nan, 0.0  # sizes, dtypes: piecewise constant in the input's values
        if n.op == "call_module":
            return self._module(n, self.module.get_submodule(str(n.target)), args)
        if any(not (t.is_floating_point() or t.is_complex()) for t in _tensors(value)):
            raise self._unsupported(n, _DISCONTINUOUS_REASON)
        if n.op == "call_function":
            return self._function(n, n.target, args, kwargs)
        if n.op == "call_method":
            return self._method(n, str(n.target), args, kwargs)
        return math.nan, math.nan

    def _module(self, n: torch.fx.Node, m: nn.Module, args: tuple[Any, ...]) -> tuple[float, float]:
        if not n.args:
            raise self._unsupported(n, _KEYWORD_REASON)
        l_in = self._in(n.args[0])
        if self._in((n.args[1:], n.kwargs)) > 0:
            if isinstance(m, _ATTENTION_MODULES):
                self._inf_reason = ATTENTION_REASON
                return math.inf, math.inf
            raise self._unsupported(n, "a module called with several input-dependent tensors")
        x = args[0]
        if not isinstance(x, torch.Tensor):
            raise self._unsupported(n, "a module whose first argument is not a tensor")
        if isinstance(m, nn.Linear):
            c = operator_norm(m)
        elif isinstance(m, (nn.Conv1d, nn.Conv2d)):
            with torch.enable_grad():
                c = conv_norm_cached(m, tuple(x.shape[1:]))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.training or m.running_var is None:
                self._inf_reason = (
                    "train-mode BatchNorm divides by the batch standard deviation, which has "
                    "no positive lower bound: not globally Lipschitz"
                )
                return math.inf, math.inf
            scale = 1.0 / torch.sqrt(m.running_var.detach().double() + m.eps)
            if m.weight is not None:
                scale = scale * m.weight.detach().double().abs()
            c = float(scale.max())
        elif isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
            gamma = 1.0 if m.weight is None else float(m.weight.detach().abs().max())
            c = gamma / math.sqrt(m.eps)
            if self.radius is not None and isinstance(m, nn.LayerNorm):
                dims = tuple(range(-len(m.normalized_shape), 0))
                xc = x.detach().double() - x.detach().double().mean(dim=dims, keepdim=True)
                count = math.prod(m.normalized_shape)
                row_norm = xc.flatten(-len(dims)).norm(dim=-1)  # centred norm per row
                reach = max(float(row_norm.min()) - l_in * self.radius, 0.0)
                c = gamma / math.sqrt(reach**2 / count + m.eps)
        elif isinstance(m, _ATTENTION_MODULES):
            self._inf_reason = ATTENTION_REASON
            return math.inf, math.inf
        elif isinstance(m, nn.RNNBase):
            raise self._unsupported(
                n, "no Lipschitz rule for recurrent layers (RNN/GRU/LSTM) is implemented"
            )
        elif isinstance(m, _POOL_MODULES):
            c = _schur(m, x)
        elif isinstance(m, _MAXPOOL_MODULES):
            if getattr(m, "return_indices", False):
                raise self._unsupported(n, "max pooling with return_indices")
            c = _maxpool_lipschitz(m, x)
        elif isinstance(m, nn.Dropout) and m.training and m.p > 0:
            if not self.train_mode_ok:
                raise self._unsupported(
                    n, "Dropout in training mode makes the network random; call model.eval()"
                )
            c = activation_lipschitz(m)
        elif isinstance(m, nn.Softmax):
            c = SOFTMAX_LIPSCHITZ
        elif isinstance(m, nn.LogSoftmax):
            raise self._unsupported(
                n,
                "Lipschitz bounds here are for the logit map; remove the final "
                f"{type(m).__name__} and pass the network that outputs logits",
            )
        else:
            try:
                c = activation_lipschitz(m)
            except UnsupportedModelError:
                raise self._unsupported(
                    n, f"no Lipschitz rule for {type(m).__name__}"
                ) from None
        return c, c * l_in

    def _product(
        self, n: torch.fx.Node, a: Any, b: Any, matmul: bool
    ) -> tuple[float, float]:
        la, lb = self._in(n.args[0]), self._in(n.args[1])
        if la > 0 and lb > 0:
            if self.radius is None:
                self._inf_reason = _PRODUCT_REASON
                return math.inf, math.inf
            r = self.radius

            def size(t: torch.Tensor) -> float:
                t = t.detach().double()
                if not matmul:
                    return float(t.abs().max())
                if t.ndim > 2:  # the largest Frobenius norm of a matrix slice
                    return float(t.flatten(0, -3).norm(dim=(-2, -1)).max())
                return float(t.norm())

            sa, sb = (1.0, 1.0) if matmul else (self._spread(a), self._spread(b))
            return math.nan, (size(a) + la * r) * lb * sb + la * sa * (size(b) + lb * r)
        const, l_var = (b, la) if la > 0 else (a, lb)
        var = a if la > 0 else b
        if matmul:
            if not (isinstance(const, torch.Tensor) and const.ndim == 2):
                raise self._unsupported(n, "a matrix product with a constant that is not 2-D")
            c = operator_norm(const.detach())
        elif isinstance(const, torch.Tensor):
            c = float(const.detach().abs().max()) if const.numel() else 0.0
        else:
            c = abs(float(const))
        if not matmul:
            c *= self._spread(var)
        return c, c * l_var

    def _function(
        self, n: torch.fx.Node, f: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[float, float]:
        if f in (torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like):
            return math.nan, 0.0  # only the shape, dtype and device of the input are used
        if not n.args or (len(n.args) < 2 and f in _BINARY):
            raise self._unsupported(n, _KEYWORD_REASON)
        l0 = self._in(n.args[0])
        if f in _ADD:
            return math.nan, _add_bound(self, n, args, kwargs)
        if f is operator.neg or f is torch.neg:
            return 1.0, l0
        if f in _MUL:
            return self._product(n, args[0], args[1], matmul=False)
        if f in _DIV:
            return self._quotient(n, args, kwargs)
        if f in _MATMUL:
            return self._product(n, args[0], args[1], matmul=True)
        if f is F.linear:
            if self._in(n.args[1:]) > 0:
                raise self._unsupported(n, "F.linear with an input-dependent weight")
            c = operator_norm(args[1].detach())
            return c, c * l0
        if f in (torch.cat, torch.stack):
            return math.nan, self._in(n.args[0])
        if f is operator.getitem:
            index = args[1]
            if isinstance(args[0], torch.Tensor) and not _basic_index(index):
                raise self._unsupported(n, "indexing with tensors or lists (may repeat entries)")
            return 1.0, l0
        if f in _SHAPE_FUNCTIONS or (f is getattr and args[1] in ("T", "mT")):
            return 1.0, l0
        if f in _ACT_FUNCTIONS:
            c = activation_lipschitz(_ACT_FUNCTIONS[f](*args, **kwargs))
            return c, c * l0
        if f is F.dropout:
            training = args[2] if len(args) > 2 else kwargs.get("training", True)
            p = args[1] if len(args) > 1 else kwargs.get("p", 0.5)
            if training and p > 0:
                if not self.train_mode_ok:
                    raise self._unsupported(n, "dropout in training mode; call model.eval()")
                c = activation_lipschitz(nn.Dropout(p).train())
                return c, c * l0
            return 1.0, l0
        if f in _LINEAR_NONNEG_FUNCTIONS:
            rest, kw = args[1:], kwargs
            c = _schur(lambda t: f(t, *rest, **kw), args[0])
            return c, c * l0
        if f in (torch.softmax, F.softmax):
            return SOFTMAX_LIPSCHITZ, SOFTMAX_LIPSCHITZ * l0
        if f is F.scaled_dot_product_attention:
            self._inf_reason = ATTENTION_REASON
            return math.inf, math.inf
        return math.nan, math.nan

    def _method(
        self, n: torch.fx.Node, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[float, float]:
        l0 = self._in(n.args[0])
        if name in ("new_ones", "new_zeros", "new_full", "new_empty"):
            return math.nan, 0.0  # only the dtype and device of the input are used
        if name in _SHAPE_METHODS:
            return 1.0, l0
        if name in _BINARY_METHODS and len(n.args) < 2:
            raise self._unsupported(n, _KEYWORD_REASON)
        if name in _DIV_METHODS:
            return self._quotient(n, args, kwargs)
        # add_/sub_ run before their rule, but it reads only shapes; mul_ with two
        # input-dependent tensors would read the overwritten factor, so it stays refused
        if self._in(n.args[1:]) > 0 and name not in ("add", "sub", "add_", "sub_", "mul",
                                                     "matmul"):
            raise self._unsupported(n, f"Tensor.{name} with several input-dependent tensors")
        if name in ("add", "sub", "add_", "sub_"):
            return math.nan, _add_bound(self, n, args, kwargs)
        if name in ("mul", "mul_"):
            return self._product(n, args[0], args[1], matmul=False)
        if name == "matmul":
            return self._product(n, args[0], args[1], matmul=True)
        if name == "neg":
            return 1.0, l0
        if name in _ACT_METHODS:
            c = activation_lipschitz(_ACT_METHODS[name]())
            return c, c * l0
        if name == "softmax":
            return SOFTMAX_LIPSCHITZ, SOFTMAX_LIPSCHITZ * l0
        if name in ("mean", "sum"):
            rest = args[1:]
            c = _schur(lambda t: getattr(t, name)(*rest, **kwargs), args[0])
            return c, c * l0
        return math.nan, math.nan

    _first_placeholder = ""


def _add_bound(
    b: _Bounder, n: torch.fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> float:
    """Lip(a ± α·b) <= s_a·Lip(a) + |α|·s_b·Lip(b) (torch.add's ``alpha``), s the factor by
    which broadcasting an operand to the output's shape scales its norm (``_spread``)."""
    alpha = n.kwargs.get("alpha", 1.0)
    la = b._in(n.args[0]) * b._spread(args[0])
    other = args[1] if len(args) > 1 else kwargs.get("other")
    lb = b._in(n.args[1]) if len(n.args) > 1 else b._in(n.kwargs.get("other"))
    return la + abs(float(alpha)) * lb * b._spread(other)


def _basic_index(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, (int, slice)) for i in items)


def lipschitz_graph(
    model: nn.Module,
    x: torch.Tensor,
    *,
    radius: float | None = None,
    train_mode_ok: bool = False,
) -> GraphLipschitz:
    """Bound the L2 Lipschitz constant of ``model`` node by node on its traced graph.

    See the module docstring for the rule of each node and why ``torch.fx``.

    Args:
        model: any ``nn.Module`` that ``torch.fx.symbolic_trace`` can trace (its first positional
            input is ``x``; other inputs keep their defaults).
        x: an example input ``(batch, *input_shape)``, floating point: fixes the shapes (conv
            norms depend on the input size) and, with ``radius``, the region of a local bound.
        radius: ``None`` for a global bound; ``r >= 0`` for a bound valid for inputs within L2
            distance ``r`` of ``x`` (each sample of ``x`` its own centre, for a model that treats
            samples independently): LayerNorm and products of input-dependent tensors then get
            finite local constants.
        train_mode_ok: analyse train-mode BatchNorm (``inf``) and Dropout (``1/(1-p)``) as they
            are, instead of refusing them (used by :func:`gradient_flow`, which measures the
            model in the mode it is in).

    Returns:
        :class:`GraphLipschitz` (``value`` finite, ``inf`` with the culprit named, or NaN with
        ``available = False`` and the reason).

    Raises:
        InvalidTypeError: ``model`` not a Module, ``x`` not a floating tensor.
        InvalidArgumentError: ``radius`` negative or not finite; ``x`` has no batch dimension.

    Caveats:
        Conv norms come from power iteration (from below, to relative change 1e-6) for convs
        whose dense matrix exceeds 2²⁰ entries, so the bound is an estimate of the certified
        value from below: on five ResNet-18 convolutions these norms were 8.5e-6 to 4.6e-4
        (relative) below a power iteration run to 1e-11 (``benchmarks/diagnostics.py
        --accuracy``, in ``benchmarks/RESULTS.md``), and such gaps multiply along a path.
        Constants are computed once per call on the example input; the model is run once
        (under ``torch.no_grad``, its mode unchanged; its buffers, e.g. BatchNorm's running
        statistics, and the global random state are restored after).
    """
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise InvalidTypeError(
            f"x must be a floating-point torch.Tensor (batch, ...), got {type(x).__name__}"
        )
    if x.ndim < 2:
        raise InvalidArgumentError(
            f"x must have shape (batch, *input_shape), got {tuple(x.shape)}; add a batch "
            "dimension"
        )
    if radius is not None and not (
        isinstance(radius, (int, float)) and math.isfinite(radius) and radius >= 0
    ):
        raise InvalidArgumentError(
            f"radius must be None (global bound) or a finite number >= 0, got {radius!r}"
        )
    tracer = _Tracer()
    # The root's forward is always traced through; a root that is itself a leaf is wrapped.
    root = _Root(model) if tracer.is_leaf_module(model, "") else model
    try:
        graph = tracer.trace(root)
        gm = torch.fx.GraphModule(root, graph)
    except Exception as exc:
        return GraphLipschitz(
            math.nan, False, f"model {type(model).__name__}",
            f"torch.fx could not trace it ({type(exc).__name__}: {exc})", (), radius,
        )
    bounder = _Bounder(gm, None if radius is None else float(radius), train_mode_ok)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    bounder._first_placeholder = placeholders[0].name if placeholders else ""
    bounder.wrapped = root is not model
    extra = []
    for p in placeholders[1:]:
        if not p.args:
            return GraphLipschitz(
                math.nan, False, f"input {p.name}",
                "the model takes more than one input without a default; bound the map of its "
                "first input by wrapping the model", (), radius,
            )
        extra.append(p.args[0])
    # The run must leave no trace: train-mode BatchNorm would update its running statistics,
    # train-mode Dropout would draw from the global generator.
    buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            bounder.run(x.detach(), *extra)
    except _Stop as stop:
        return GraphLipschitz(
            math.inf if stop.infinite else math.nan, stop.infinite, stop.culprit, stop.reason,
            tuple(bounder.records), radius,
        )
    finally:
        with torch.no_grad():
            for k, b in model.named_buffers():
                if k in buffers:
                    b.copy_(buffers[k])
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    value = bounder.lip[out_node]
    return GraphLipschitz(value, True, None, None, tuple(bounder.records), radius)
