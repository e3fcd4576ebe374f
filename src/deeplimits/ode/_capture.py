"""Capture backends: how the device loop's blocks become replayable graphs.

A block is a function of a static state tuple (``Runner``: attempts of the batched step, or
``Starter``: the solve's start). :class:`CudaGraphCapture` records them in CUDA graphs
(PyTorch's recipe: warm up on a side stream, capture with ``torch.cuda.graph``, replay after
copying new inputs into the static tensors). :class:`EagerCapture` stands in for it where no
CUDA device is (tests on CPU): the same static buffers, warm-ups and restore, with an eager
``replay()``, so everything of the graph path except the capture itself runs. Choose one with
``ExecutionOptions(capture=...)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["CaptureBackend", "Captured", "CudaGraphCapture", "EagerCapture", "Runner", "Starter"]

#: ``state -> (state after some attempts, flags)``: eager or compiled.
Runner = Callable[[tuple[Tensor, ...]], tuple[tuple[Tensor, ...], Tensor]]
#: ``(Y0, ts) -> state at the start``: eager or compiled.
Starter = Callable[[Tensor, Tensor], tuple[Tensor, ...]]


@dataclass
class Captured:
    """Three replayable blocks on shared static buffers.

    ``steps`` runs ``k`` attempts, ``step1`` one attempt, ``start`` the solve's start from
    ``y0_in`` and ``ts_in``; each writes the state into ``static`` (and the blocks their
    ``flags``). Objects with a ``replay()`` method.
    """

    steps: Any
    step1: Any
    start: Any
    static: tuple[Tensor, ...]
    flags: Tensor  # (4,)
    y0_in: Tensor
    ts_in: Tensor


@dataclass
class _Blocks:
    static: tuple[Tensor, ...]
    flags: Tensor
    y0_in: Tensor
    ts_in: Tensor
    steps: Callable[[], None]
    step1: Callable[[], None]
    start: Callable[[], None]


def _make_block(run: Runner, static: tuple[Tensor, ...], flags: Tensor) -> Callable[[], None]:
    """``run``'s attempts from the static state, written back into it, and its flags (the
    captured work: a replay and one read of ``flags`` is all a sync costs)."""

    def block() -> None:
        cur, fl = run(static)
        for s, c in zip(static, cur, strict=True):
            if s is not c:
                s.copy_(c)
        flags.copy_(fl)

    return block


def _make_start_block(
    start: Starter, static: tuple[Tensor, ...], y0_in: Tensor, ts_in: Tensor
) -> Callable[[], None]:
    """The solve's start from the static inputs, written into the static state."""

    def block() -> None:
        for s, x in zip(static, start(y0_in, ts_in), strict=True):
            if s is not x:
                s.copy_(x)

    return block


def _blocks(
    st: tuple[Tensor, ...], y0: Tensor, ts: Tensor, run_k: Runner, run_1: Runner, start: Starter
) -> tuple[_Blocks, tuple[Tensor, ...]]:
    """Static copies of the state and inputs, the blocks on them, and a copy to restore."""
    static = tuple(x.clone() for x in st)
    init = tuple(x.clone() for x in st)
    flags = torch.zeros(4, dtype=y0.dtype, device=y0.device)
    y0_in, ts_in = y0.clone(), ts.clone()
    b = _Blocks(
        static, flags, y0_in, ts_in, _make_block(run_k, static, flags),
        _make_block(run_1, static, flags), _make_start_block(start, static, y0_in, ts_in),
    )
    return b, init


class CaptureBackend(ABC):
    """How blocks are captured for replay; ``devices``: the device types it serves."""

    devices: tuple[str, ...] = ()

    @abstractmethod
    def capture(
        self, st: tuple[Tensor, ...], y0: Tensor, ts: Tensor, run_k: Runner, run_1: Runner,
        start: Starter,
    ) -> Captured:
        """Capture ``run_k``, ``run_1`` and ``start`` from the state ``st`` (whose start
        inputs were ``y0`` and ``ts``); the static state equals ``st`` afterwards."""


class CudaGraphCapture(CaptureBackend):
    """CUDA graphs (``torch.cuda.CUDAGraph``); the default on CUDA devices."""

    devices = ("cuda",)

    def capture(
        self, st: tuple[Tensor, ...], y0: Tensor, ts: Tensor, run_k: Runner, run_1: Runner,
        start: Starter,
    ) -> Captured:
        b, init = _blocks(st, y0, ts, run_k, run_1, start)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                b.start()
                b.steps()
            b.step1()
        torch.cuda.current_stream().wait_stream(side)
        graph, graph1, g_start = (torch.cuda.CUDAGraph() for _ in range(3))
        with torch.cuda.graph(graph):
            b.steps()
        with torch.cuda.graph(graph1):
            b.step1()
        with torch.cuda.graph(g_start):
            b.start()
        for s, x in zip(b.static, init, strict=True):
            s.copy_(x)
        return Captured(graph, graph1, g_start, b.static, b.flags, b.y0_in, b.ts_in)

    def __repr__(self) -> str:
        return "CudaGraphCapture()"


class _EagerReplay:
    def __init__(self, block: Callable[[], None]) -> None:
        self.replay = block


class EagerCapture(CaptureBackend):
    """A stand-in for CUDA graphs on CPU (and CUDA): ``replay()`` runs the block eagerly.

    For tests: the graph path's caching, static buffers, start replay and flag reads run
    without a GPU. Not faster than the plain device loop.
    """

    devices = ("cuda", "cpu")

    def capture(
        self, st: tuple[Tensor, ...], y0: Tensor, ts: Tensor, run_k: Runner, run_1: Runner,
        start: Starter,
    ) -> Captured:
        b, init = _blocks(st, y0, ts, run_k, run_1, start)
        for _ in range(3):  # two warm-ups and the "capture"
            b.start()
            b.steps()
        b.step1()
        b.step1()
        for s, x in zip(b.static, init, strict=True):
            s.copy_(x)
        return Captured(_EagerReplay(b.steps), _EagerReplay(b.step1), _EagerReplay(b.start),
                        b.static, b.flags, b.y0_in, b.ts_in)

    def __repr__(self) -> str:
        return "EagerCapture()"
