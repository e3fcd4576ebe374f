"""Exact counts of parameters and of input-to-output paths of feed-forward networks."""

from __future__ import annotations

from torch import nn

from deeplimits.errors import InvalidTypeError, UnsupportedModelError

__all__ = ["count_parameters", "count_paths"]

# Layers a path passes through unchanged (element-wise): they neither add nor remove paths.
_ELEMENTWISE = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.GELU,
    nn.ELU,
    nn.SiLU,
    nn.Softplus,
    nn.Identity,
    nn.Dropout,
    nn.Hardtanh,
)


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``model`` (weights and biases), shared ones counted once."""
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_paths(model: nn.Module) -> int:
    """Exact number of input-to-output paths through the non-zero weights of an MLP.

    A path picks one input unit, then one unit per layer, with a non-zero weight on every edge.
    For dense layers of widths n_0, ..., n_L this is the product n_0 · n_1 ··· n_L, i.e. O(n^L):
    the lecture's contrast with #params = O(L·n²). Sparse (pruned) weights are honoured.

    Args:
        model: an ``nn.Sequential`` (nested ones are flattened) of ``nn.Linear`` and element-wise
            activation layers, or a single ``nn.Linear``.

    Returns:
        The count as a Python ``int`` (exact, it may have hundreds of digits).

    Raises:
        UnsupportedModelError: a layer other than Linear or an element-wise activation (name and
            position given); residual and convolutional networks have no single path count here.
    """
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    layers = flatten_sequential(model)
    linears = []
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Linear):
            linears.append(layer)
        elif not isinstance(layer, _ELEMENTWISE):
            raise UnsupportedModelError(
                f"count_paths: layer {i} ({type(layer).__name__}) is not supported; only "
                "nn.Linear and element-wise activations in an nn.Sequential are"
            )
    if not linears:
        raise UnsupportedModelError(
            "count_paths: the model has no nn.Linear layer, so it has no paths to count"
        )
    # paths[j]: number of paths from any input unit to unit j of the current layer.
    paths: list[int] = [1] * linears[0].in_features
    for lin in linears:
        mask = lin.weight.detach() != 0  # (out, in)
        if bool(mask.all()):
            total = sum(paths)
            paths = [total] * lin.out_features
        else:
            rows = mask.cpu().tolist()
            paths = [sum(p for p, m in zip(paths, row, strict=True) if m) for row in rows]
    return sum(paths)


def flatten_sequential(model: nn.Module) -> list[nn.Module]:
    """The leaf layers of nested ``nn.Sequential`` containers, in order (other modules as is)."""
    if isinstance(model, nn.Sequential):
        out: list[nn.Module] = []
        for m in model:
            out.extend(flatten_sequential(m))
        return out
    return [model]
