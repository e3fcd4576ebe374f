"""Captured graphs of the device loop and their cache.

``sync_every`` attempts (and one attempt, and the solve's start) are captured once per
``nn.Module`` func, shapes and options by a :class:`CaptureBackend` and replayed; the graphs
read the module's parameters in place, so their addresses are part of the key. With
``compile=True`` the captured blocks are the compiled ones (fused kernels, replayed without
launch costs).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from deeplimits.errors import InvalidArgumentError
from deeplimits.ode._batched_step import IDX, BatchedLoop, attempts, starter
from deeplimits.ode._cache import GRAPHS
from deeplimits.ode._capture import CaptureBackend, Captured
from deeplimits.ode._compiled import CompiledBlocks

__all__ = ["GraphEntry", "cache_key", "new_graph"]


@dataclass
class GraphEntry:
    """One cached capture: the replayable blocks and what they need to stay valid."""

    func_ref: weakref.ref[Any]
    blocks: Captured
    start_evals: int
    # The capture's constants (coefficient tensors, ...): the graph reads their memory at
    # replay, so they must live as long as the graph.
    loop: BatchedLoop
    compiled: bool  # the captured blocks are compiled code (options compile=True)


def cache_key(module: nn.Module, graph: bool, *parts: Any) -> tuple[Any, ...]:
    """The cache key of a graph (``graph``) or compiled solve of ``module`` with ``parts``
    (shapes, dtype, device, tolerances, controller, options). A graph reads the parameters'
    and buffers' memory, so their addresses are part of its key; compiled code is guarded by
    torch.compile itself (a replaced parameter recompiles), so for it they are left out."""
    if graph:
        params = tuple(p.data_ptr() for p in module.parameters())
        buffers = tuple(b.data_ptr() for b in module.buffers())
    else:
        params = buffers = ()
    return (id(module), params, buffers, *parts)


def new_graph(
    key: tuple[Any, ...],
    module: nn.Module,
    backend: CaptureBackend,
    raw_loop: BatchedLoop,
    st: tuple[Tensor, ...],
    sync_every: int,
    rows_t: bool,
    first_step: float | None,
    start_evals: int,
    required: bool,
    comp: CompiledBlocks | None = None,
) -> GraphEntry | None:
    """Capture (and cache) the graphs of a solve that starts from ``st``: of ``comp``'s
    compiled blocks if given, else of the eager blocks on ``raw_loop`` (whose ``ev`` calls
    func raw). ``None`` when the capture failed (remembered: later solves of this module and
    shapes run without a graph).

    Raises:
        InvalidArgumentError: the capture failed and a graph was ``required``.
    """
    if GRAPHS.failed(key) and not required:
        return None  # capture failed before for this module and shapes
    if comp is not None:
        runners = (comp.block, comp.block1, comp.start)
        loop = comp.loop
    else:
        runners = (attempts(raw_loop, sync_every), attempts(raw_loop, 1),
                   starter(raw_loop, rows_t, first_step))
        loop = raw_loop
    try:
        with torch.no_grad():
            blocks = backend.capture(st, st[IDX["Y"]], st[IDX["ts"]], *runners)
    except Exception as e:  # a func that cannot be captured (host sync, CPU tensors, ...)
        if required:
            raise InvalidArgumentError(
                f"options cuda_graph=True, but capturing func failed: {e}; make func "
                "capturable (no .item()/host syncs) or use cuda_graph=False"
            ) from e
        if st[IDX["Y"]].device.type == "cuda":
            torch.cuda.synchronize()
        GRAPHS.put(key, None)
        return None
    g = GraphEntry(weakref.ref(module), blocks, start_evals, loop, comp is not None)
    GRAPHS.put(key, g)
    return g
