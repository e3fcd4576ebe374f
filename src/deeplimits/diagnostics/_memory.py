"""Measure the memory a backward pass needs: the bytes autograd saves during the forward pass.

Activation memory is what separates a ResNet (O(L): every block's input is kept for backward)
from an ODE network trained with the adjoint method (O(1): nothing of the solver's steps is
kept). Counting the tensors handed to autograd's saved-tensor hooks measures it exactly and on
any device, unlike the CPU allocator's peak, which depends on the allocator's caching.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import torch

__all__ = ["SavedTensorsMeter", "cuda_peak_bytes"]


class SavedTensorsMeter:
    """Context manager measuring the bytes of tensors saved for backward inside its block.

    Each storage is counted once, however many operations save it (a weight shared by L tied
    layers, or a tensor saved as output of one op and input of the next, counts once), and only
    while autograd holds it: a saved tensor whose graph is freed during the block (a temporary
    result, a check on a tensor that requires grad) stops counting, and a later tensor that
    reuses its address counts anew.

    Args:
        exclude: tensors whose storages are not counted, typically ``model.parameters()``: they
            exist anyway, so activation memory leaves them out (views of them, such as the
            transposed weight a Linear layer saves, are left out too).

    Attributes:
        bytes: the peak, over the block, of the bytes held for backward (after a forward pass
            whose output is kept, this is everything its backward pass will read).
        live_bytes: the bytes held for backward now.
        count: number of saved-tensor events.

    Example::

        with SavedTensorsMeter(exclude=model.parameters()) as meter:
            loss = model(x).sum()
        print(meter.bytes)
    """

    def __init__(self, *, exclude: Iterable[torch.Tensor] = ()) -> None:
        self.bytes = 0
        self.live_bytes = 0
        self.count = 0
        self._excluded: set[tuple[str, int]] = {_key(t) for t in exclude}
        # Storages held now, keyed by (device, address): [bytes, number of live saved tensors].
        self._held: dict[tuple[str, int], list[int]] = {}
        self._hooks: Any = None

    def _release(self, key: tuple[str, int]) -> None:
        entry = self._held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del self._held[key]
            self.live_bytes -= entry[0]

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        self.count += 1
        key = _key(t)
        if key in self._excluded:
            return t
        # A detached alias shares the storage but not the grad_fn: returning ``t`` itself would
        # tie a saved output to its own graph in a reference cycle and keep it alive until the
        # garbage collector runs, distorting both the measurement and the memory measured.
        t = t.detach()
        entry = self._held.get(key)
        if entry is None:
            entry = self._held[key] = [t.untyped_storage().nbytes(), 0]
            self.live_bytes += entry[0]
            self.bytes = max(self.bytes, self.live_bytes)
        entry[1] += 1
        # The graph keeps the object pack returns until it is freed; when it goes, so does
        # this saved tensor's claim on the storage.
        weakref.finalize(t, self._release, key)
        return t

    def __enter__(self) -> SavedTensorsMeter:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._hooks.__exit__(exc_type, exc, tb)


def _key(t: torch.Tensor) -> tuple[str, int]:
    return (str(t.device), t.untyped_storage().data_ptr())


def cuda_peak_bytes(device: torch.device | str | None = None) -> int:
    """``torch.cuda.max_memory_allocated`` of ``device`` (reset it before the measured work)."""
    return int(torch.cuda.max_memory_allocated(device))
