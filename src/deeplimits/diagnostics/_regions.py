"""Exact linear regions of piecewise-linear networks on a segment or a 2-D plane of the input space.

The geometry is computed by ``regioncam`` (T. van Laarhoven, exact region tracking in Rust): it
cuts the segment (or a square of the plane) at every point where some ReLU / LeakyReLU
pre-activation changes sign, layer by layer. This module converts the torch model, maps the
segment / plane into the input space, counts, optionally merges neighbouring regions with the same
affine map, and draws region maps.

Two notions of "linear region" (see e.g. B. Hanin & D. Rolnick, "Deep ReLU networks have
surprisingly few activation patterns", NeurIPS 2019, and "Complexity of linear regions in deep
networks", ICML 2019):

- ``kind="activation"`` (default): activation regions, the connected pieces of the domain on
  which the on/off pattern of every ReLU is constant. Exact and combinatorial; this is what
  Hanin & Rolnick count and what regioncam computes.
- ``kind="affine"``: affine pieces, the maximal connected pieces on which the network function is
  one affine map: neighbouring activation regions whose affine maps coincide (a neuron whose
  switching is not seen downstream, a zero output weight, LeakyReLU with slope 1) are merged.
  This is the count of Telgarsky's sawtooth construction and of "kinks + 1" on a line. It is never
  larger than the activation count.

Supported layers: ``nn.Linear``, ``nn.ReLU``, ``nn.LeakyReLU``, ``nn.Identity``, ``nn.Dropout``
(as in eval mode, i.e. the identity), nested ``nn.Sequential`` and
:class:`deeplimits.constructions.Residual` (``x + α·body(x)`` with a supported body). Anything else
(Tanh, Sigmoid, GELU and other smooth activations, which have no finite region count; BatchNorm,
convolutions, pooling, attention, custom modules) raises :class:`UnsupportedModelError` naming it.

Caveats: regioncam computes in float32, so regions much smaller than ~1e-6 of the segment (or
plane) may be lost or split spuriously; the affine merge evaluates each region's Jacobian in
float64 at an interior point (the midpoint / the vertex mean) and compares them with a relative
tolerance ``rtol`` (slope differences below it count as equal).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from deeplimits.constructions import Residual
from deeplimits.errors import (
    InvalidArgumentError,
    InvalidTypeError,
    UnknownNameError,
    UnsupportedModelError,
)

__all__ = ["count_regions", "region_breakpoints", "region_map"]

RegionKind = Literal["activation", "affine"]
_KINDS: tuple[str, ...] = ("activation", "affine")
_SUPPORTED = (
    "nn.Linear, nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout, nn.Sequential and "
    "deeplimits.constructions.Residual"
)


# ----------------------------------------------------------------------------- model conversion
def _regioncam() -> ModuleType:
    """Import regioncam when first needed, so that ``import deeplimits`` works without it."""
    try:
        return importlib.import_module("regioncam")
    except ImportError as exc:  # pragma: no cover - regioncam is a dependency
        raise UnsupportedModelError(
            "count_regions needs the regioncam package (pip install regioncam)"
        ) from exc


def _convert(
    module: nn.Module, dim: int | None, where: str
) -> tuple[list[Any], int | None, int | None]:
    """torch layers -> regioncam layers; returns (layers, input dim, output dim) (None: unknown)."""
    regioncam = _regioncam()
    if isinstance(module, nn.Sequential):
        out: list[Any] = []
        first: int | None = None
        for i, sub in enumerate(module):
            layers, d_in, dim = _convert(sub, dim, f"{where}[{i}]")
            first = first if first is not None else d_in
            out.extend(layers)
        return out, first, dim
    if isinstance(module, nn.Linear):
        if dim is not None and dim != module.in_features:
            raise UnsupportedModelError(
                f"count_regions: layer {where} (Linear) expects {module.in_features} inputs but "
                f"receives {dim}; the model cannot run on its own input"
            )
        w = module.weight.detach().to("cpu", torch.float32).numpy().T.copy()  # (in, out)
        b = (
            module.bias.detach().to("cpu", torch.float32).numpy().copy()
            if module.bias is not None
            else np.zeros(module.out_features, np.float32)
        )
        return [regioncam.Linear(w, b)], module.in_features, module.out_features
    if isinstance(module, nn.ReLU):
        return [regioncam.ReLU()], dim, dim
    if isinstance(module, nn.LeakyReLU):
        return [regioncam.LeakyReLU(float(module.negative_slope))], dim, dim
    if isinstance(module, (nn.Identity, nn.Dropout)):
        return [], dim, dim
    if isinstance(module, Residual):
        layers, d_in, d_out = _convert(module.branch, dim, f"{where}.branch")
        d = dim if dim is not None else d_in
        if d is None or d_out is None or d != d_out:
            raise UnsupportedModelError(
                f"count_regions: residual block {where} maps width {d} to width {d_out}; "
                "x + body(x) needs a body with a Linear layer and equal input and output widths"
            )
        if module.scale != 1.0:  # x + α·branch(x): α as one more (diagonal) Linear in the branch
            eye = np.eye(d, dtype=np.float32) * np.float32(module.scale)
            layers.append(regioncam.Linear(eye, np.zeros(d, np.float32)))
        return [regioncam.Residual(regioncam.Sequential(*layers))], d, d
    raise UnsupportedModelError(
        f"count_regions: layer {where} ({type(module).__name__}) is not supported; only "
        f"piecewise-linear layers are: {_SUPPORTED}"
    )


def _model_layers(model: nn.Module) -> tuple[list[Any], int]:
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    layers, d_in, _ = _convert(model, None, "model")
    if d_in is None:
        raise UnsupportedModelError(
            "count_regions: the model has no nn.Linear layer, so its input width is unknown; "
            "add a Linear layer"
        )
    return layers, d_in


# ----------------------------------------------------------------------------- input checking
def _point(p: Any, name: str, dim: int) -> np.ndarray:
    if isinstance(p, torch.Tensor):
        p = p.detach().to("cpu", torch.float64).numpy()
    try:
        arr = np.asarray(p, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidTypeError(f"{name} must be an array of {dim} numbers, got {p!r:.80}") from exc
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 0 and dim == 1:
        arr = arr.reshape(1)
    if arr.shape != (dim,):
        raise InvalidArgumentError(
            f"{name} has shape {tuple(arr.shape)} but the model takes inputs of width {dim}; "
            f"give a point of shape ({dim},)"
        )
    if not np.isfinite(arr).all():
        raise InvalidArgumentError(f"{name} has non-finite values {arr.tolist()}")
    return arr


def _pair(x: Any, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in x)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"{name} must be a pair (low, high), got {x!r}") from exc
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise InvalidArgumentError(f"{name} must be finite with low < high, got ({lo}, {hi})")
    return lo, hi


def _check_kind(kind: str) -> None:
    if kind not in _KINDS:
        raise UnknownNameError("region kind", kind, _KINDS)


@dataclass
class _Line:
    origin: np.ndarray  # (d,) the point at t = 0, i.e. a
    direction: np.ndarray  # (d,) b - a
    t: np.ndarray  # (V,) sorted breakpoints, including both ends of bounds


@dataclass
class _Plane:
    origin: np.ndarray  # (d,) the input point at square coordinates (0, 0)
    basis: np.ndarray  # (2, d) input displacement per unit of square coordinate
    to_uv: tuple[float, float, float, float]  # (u_mid, u_half, v_mid, v_half)
    vertices: np.ndarray  # (V, 2) square coordinates in [-1, 1]^2
    faces: list[np.ndarray]  # vertex ids of each face, in polygon order
    adjacency: list[tuple[int, int]]  # faces sharing an edge
    edges: list[tuple[int, int, int, int | None]]  # (v0, v1, face0, face1 or None)


def _line_partition(model: nn.Module, line: Any, bounds: Any) -> _Line:
    regioncam = _regioncam()
    layers, dim = _model_layers(model)
    if not isinstance(line, (tuple, list)) or len(line) != 2:
        raise InvalidArgumentError(f"line must be a pair (a, b) of input points, got {line!r:.80}")
    a, b = _point(line[0], "line[0] (a)", dim), _point(line[1], "line[1] (b)", dim)
    if np.array_equal(a, b):
        raise InvalidArgumentError(f"line is degenerate: a == b == {a.tolist()}; give a != b")
    t0, t1 = _pair((0.0, 1.0) if bounds is None else bounds, "bounds")
    rc = regioncam.Regioncam1D((t0, t1))
    # x = a + t (b - a): a linear layer without activation adds no region boundary
    rc.add(regioncam.Linear((b - a)[None, :].astype(np.float32), a.astype(np.float32)))
    rc.add(layers)
    t = np.sort(np.asarray(rc.inputs, dtype=np.float64).ravel())
    return _Line(a, b - a, t)


def _plane_partition(model: nn.Module, plane: Any, bounds: Any) -> _Plane:
    regioncam = _regioncam()
    layers, dim = _model_layers(model)
    if not isinstance(plane, (tuple, list)) or len(plane) != 3:
        raise InvalidArgumentError(
            f"plane must be three input points (p0, p1, p2), got {plane!r:.80}"
        )
    p0, p1, p2 = (_point(p, f"plane[{i}]", dim) for i, p in enumerate(plane))
    span = np.stack([p1 - p0, p2 - p0])  # (2, d)
    sv = np.linalg.svd(span, compute_uv=False)
    if sv[-1] <= 1e-12 * max(sv[0], 1e-300):
        raise InvalidArgumentError(
            "plane is degenerate: p0, p1, p2 are collinear (or equal), singular values "
            f"{sv.tolist()}; give three points that span a plane"
        )
    if bounds is None:
        bounds = ((0.0, 1.0), (0.0, 1.0))
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise InvalidArgumentError(
            f"bounds for a plane must be ((u_min, u_max), (v_min, v_max)), got {bounds!r}"
        )
    (u0, u1), (v0, v1) = _pair(bounds[0], "bounds[0] (u)"), _pair(bounds[1], "bounds[1] (v)")
    um, uh, vm, vh = (u0 + u1) / 2, (u1 - u0) / 2, (v0 + v1) / 2, (v1 - v0) / 2
    origin = p0 + um * span[0] + vm * span[1]
    basis = np.stack([uh * span[0], vh * span[1]])  # (2, d)
    rc = regioncam.Regioncam(1.0)  # the square [-1, 1]^2 of (s, r); u = um + uh s, v = vm + vh r
    rc.add(regioncam.Linear(basis.astype(np.float32), origin.astype(np.float32)))
    rc.add(layers)
    faces = [np.asarray(f.vertex_ids, dtype=np.int64) for f in rc.faces]
    edges: list[tuple[int, int, int, int | None]] = []
    adjacency: list[tuple[int, int]] = []
    for e in rc.edges:
        fa, fb = e.faces
        va, vb = e.vertices
        if fa is None:
            fa, fb = fb, None
        edges.append((int(va), int(vb), int(fa), None if fb is None else int(fb)))
        if fb is not None:
            adjacency.append((int(fa), int(fb)))
    vertices = np.asarray(rc.vertex_inputs, dtype=np.float64)
    return _Plane(origin, basis, (um, uh, vm, vh), vertices, faces, adjacency, edges)


# ----------------------------------------------------------------------------- affine merging
def _push(
    module: nn.Module, x: torch.Tensor, dx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward value and tangents through a supported module: x (N, d), dx (N, k, d)."""
    if isinstance(module, nn.Sequential):
        for sub in module:
            x, dx = _push(sub, x, dx)
        return x, dx
    if isinstance(module, nn.Linear):
        w = module.weight.detach().to("cpu", torch.float64)  # (out, in)
        b = module.bias.detach().to("cpu", torch.float64) if module.bias is not None else 0.0
        return x @ w.T + b, dx @ w.T
    if isinstance(module, nn.ReLU):
        return x.clamp_min(0), dx * (x > 0)[:, None, :]
    if isinstance(module, nn.LeakyReLU):
        slope = torch.where(x > 0, 1.0, float(module.negative_slope)).to(x.dtype)  # (N, d)
        return x * slope, dx * slope[:, None, :]
    if isinstance(module, Residual):
        y, dy = _push(module.branch, x, dx)
        return x + module.scale * y, dx + module.scale * dy
    return x, dx  # Identity, Dropout (eval): _convert has rejected everything else


def _directional_jacobians(
    model: nn.Module, origin: np.ndarray, basis: np.ndarray, coords: np.ndarray
) -> np.ndarray:
    """Derivatives of the model along each basis row at ``origin + coords @ basis``, in float64.

    coords: (N, k); basis: (k, d). Returns (N, k, m). The tangents are pushed through the layers
    by hand (exact for piecewise-linear layers at points off the region boundaries).
    """
    o = torch.as_tensor(origin, dtype=torch.float64)
    B = torch.as_tensor(basis, dtype=torch.float64)  # (k, d)
    c = torch.as_tensor(coords, dtype=torch.float64)  # (N, k)
    with torch.no_grad():
        x = o + c @ B  # (N, d)
        dx = B.expand(c.shape[0], *B.shape).clone()  # (N, k, d)
        _, d = _push(model, x, dx)  # (N, k, m)
    return d.numpy()


def _different(ja: np.ndarray, jb: np.ndarray, scale: float, rtol: float) -> np.ndarray:
    return np.abs(ja - jb).reshape(ja.shape[0], -1).max(axis=1) > rtol * scale


def _line_pieces(model: nn.Module, part: _Line, rtol: float) -> np.ndarray:
    """Boolean per interior breakpoint: does the affine map change there?"""
    mids = ((part.t[:-1] + part.t[1:]) / 2)[:, None]  # (E, 1)
    jac = _directional_jacobians(model, part.origin, part.direction[None, :], mids)  # (E, 1, m)
    scale = max(float(np.abs(jac).max(initial=0.0)), np.finfo(np.float64).tiny)
    return _different(jac[:-1], jac[1:], scale, rtol)


def _plane_groups(model: nn.Module, part: _Plane, rtol: float) -> np.ndarray:
    """Affine-piece label of each face (union of neighbours with equal Jacobians)."""
    n = len(part.faces)
    centers = np.stack([part.vertices[f].mean(axis=0) for f in part.faces])  # (F, 2)
    jac = _directional_jacobians(model, part.origin, part.basis, centers)  # (F, 2, m)
    scale = max(float(np.abs(jac).max(initial=0.0)), np.finfo(np.float64).tiny)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if part.adjacency:
        pairs = np.asarray(part.adjacency)  # (A, 2)
        diff = _different(jac[pairs[:, 0]], jac[pairs[:, 1]], scale, rtol)
        for (fa, fb), d in zip(pairs.tolist(), diff.tolist(), strict=True):
            if not d:
                parent[find(fa)] = find(fb)
    roots = [find(i) for i in range(n)]
    _, labels = np.unique(roots, return_inverse=True)
    return labels


# ----------------------------------------------------------------------------- public API
def count_regions(
    model: nn.Module,
    *,
    line: Sequence[Any] | None = None,
    plane: Sequence[Any] | None = None,
    bounds: Any = None,
    kind: RegionKind = "activation",
    rtol: float = 1e-7,
) -> int:
    """Exact number of linear regions of a piecewise-linear network on a segment or a plane.

    Give exactly one of ``line`` and ``plane``:

    - ``line=(a, b)``: the segment ``x(t) = a + t (b - a)``, ``t`` in ``bounds`` (default
      ``(0, 1)``, i.e. from ``a`` to ``b``). Each region is an interval.
    - ``plane=(p0, p1, p2)``: the square ``x(u, v) = p0 + u (p1 - p0) + v (p2 - p0)``,
      ``(u, v)`` in ``bounds = ((u_min, u_max), (v_min, v_max))`` (default ``[0, 1]^2``, the
      parallelogram spanned by the three points). Each region is a convex polygon.

    Points are arrays / tensors of shape ``(d,)`` (or ``(1, d)``), ``d`` the model's input width.

    Args:
        model: a supported piecewise-linear network (see the module docstring: Linear, ReLU,
            LeakyReLU, Identity, Dropout, Sequential, constructions.Residual).
        line: the domain, as above.
        plane: the domain, as above.
        bounds: the domain, as above.
        kind: ``"activation"`` counts activation regions (constant ReLU on/off pattern; what
            Hanin & Rolnick 2019 count); ``"affine"`` counts affine pieces (neighbouring regions
            with the same affine map merged; what Telgarsky 2016 counts). ``affine <= activation``.
        rtol: for ``kind="affine"``, two neighbours are merged when their Jacobians differ by at
            most ``rtol`` times the largest Jacobian entry on the domain.

    Returns:
        The number of regions (>= 1) as an ``int``.

    Raises:
        UnsupportedModelError: a layer is not piecewise linear or not supported (named), or the
            widths do not chain. InvalidArgumentError: neither or both of line/plane, wrong point
            shapes, non-finite points, a = b, collinear plane points, bad bounds.
        UnknownNameError: unknown ``kind``.

    Example: ``count_regions(sawtooth(10), line=([0.0], [1.0]), kind="affine") == 1024``.
    """
    _check_kind(kind)
    if (line is None) == (plane is None):
        raise InvalidArgumentError(
            "give exactly one of line=(a, b) and plane=(p0, p1, p2) "
            f"(got line={'set' if line is not None else None}, "
            f"plane={'set' if plane is not None else None})"
        )
    if line is not None:
        part = _line_partition(model, line, bounds)
        if kind == "activation" or len(part.t) <= 2:
            return len(part.t) - 1
        return 1 + int(_line_pieces(model, part, rtol).sum())
    ppart = _plane_partition(model, plane, bounds)
    if kind == "activation":
        return len(ppart.faces)
    return int(_plane_groups(model, ppart, rtol).max()) + 1


def region_breakpoints(
    model: nn.Module,
    *,
    line: Sequence[Any],
    bounds: Any = None,
    kind: RegionKind = "activation",
    rtol: float = 1e-7,
) -> np.ndarray:
    """Region boundaries on the segment ``a + t (b - a)``, as sorted ``t`` values.

    Returns:
        ``(count_regions(...) + 1,)`` float64 array: both ends of ``bounds`` and every interior
        boundary (of activation regions, or of affine pieces with ``kind="affine"``).

    Raises: as :func:`count_regions`.
    """
    _check_kind(kind)
    part = _line_partition(model, line, bounds)
    if kind == "activation" or len(part.t) <= 2:
        return part.t
    keep = np.concatenate([[True], _line_pieces(model, part, rtol), [True]])
    return part.t[keep]


def region_map(
    model: nn.Module,
    *,
    plane: Sequence[Any],
    bounds: Any = None,
    kind: RegionKind = "activation",
    rtol: float = 1e-7,
    ax: Any = None,
    title: str | None = None,
    seed: int = 0,
) -> Figure:
    """Draw the regions on a plane (as :func:`count_regions` with ``plane=``) in ``(u, v)``.

    Each region gets a random colour (``seed`` fixes them) and boundaries are drawn in black.

    Args:
        ax: a matplotlib Axes to draw on (default: a new 4x4 inch figure).
        title: axes title (default: the count and kind).

    Returns:
        The Figure holding ``ax``.

    Raises: as :func:`count_regions`.
    """
    from matplotlib.collections import LineCollection, PolyCollection

    _check_kind(kind)
    part = _plane_partition(model, plane, bounds)
    affine = kind == "affine"
    labels = _plane_groups(model, part, rtol) if affine else np.arange(len(part.faces))
    um, uh, vm, vh = part.to_uv
    uv = part.vertices * np.array([uh, vh]) + np.array([um, vm])  # (V, 2)
    if ax is None:
        fig = Figure(figsize=(4, 4))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    n = int(labels.max()) + 1
    colors = np.random.default_rng(seed).uniform(0.35, 0.95, size=(n, 3))
    ax.add_collection(
        PolyCollection([uv[f] for f in part.faces], facecolors=colors[labels], edgecolors="none")
    )
    segs = [
        uv[[va, vb]] for va, vb, fa, fb in part.edges if fb is not None and labels[fa] != labels[fb]
    ]
    ax.add_collection(LineCollection(segs, colors="k", linewidths=0.3))
    ax.set_xlim(um - uh, um + uh)
    ax.set_ylim(vm - vh, vm + vh)
    ax.set_aspect("equal")
    ax.set(xlabel="u", ylabel="v", title=title or f"{n} {kind} regions")
    return fig
