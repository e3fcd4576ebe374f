"""Measure the memory a backward pass needs: the bytes autograd saves during the forward pass.

Activation memory is what separates a ResNet (O(L): every block's input is kept for backward)
from an ODE network trained with the adjoint method (O(1): nothing of the solver's steps is
kept). Counting the tensors handed to autograd's saved-tensor hooks measures it exactly and on
any device, unlike the CPU allocator's peak, which depends on the allocator's caching.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Any

import torch

__all__ = ["SavedTensorsMeter", "cuda_peak_bytes"]


class SavedTensorsMeter:
    """Context manager counting the bytes of tensors saved for backward inside its block.

    Each storage is counted once, however many operations save it (a weight shared by L tied
    layers, or a tensor saved as output of one op and input of the next, counts once).

    Args:
        exclude: tensors whose storages are not counted, typically ``model.parameters()``: they
            exist anyway, so activation memory leaves them out (views of them, such as the
            transposed weight a Linear layer saves, are left out too).

    Attributes:
        bytes: unique bytes saved so far. count: number of saved-tensor events. Valid inside and
        after the block.

    Example::

        with SavedTensorsMeter() as meter:
            loss = model(x).sum()
        print(meter.bytes)
    """

    def __init__(self, *, exclude: Iterable[torch.Tensor] = ()) -> None:
        self.bytes = 0
        self.count = 0
        # Storages already counted, or excluded, keyed by (device, address).
        self._seen: set[tuple[str, int]] = {
            (str(t.device), t.untyped_storage().data_ptr()) for t in exclude
        }
        self._hooks: Any = None

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        self.count += 1
        storage = t.untyped_storage()
        key = (str(t.device), storage.data_ptr())
        if key not in self._seen:
            self._seen.add(key)
            self.bytes += storage.nbytes()
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


def cuda_peak_bytes(device: torch.device | str | None = None) -> int:
    """``torch.cuda.max_memory_allocated`` of ``device`` (reset it before the measured work)."""
    return int(torch.cuda.max_memory_allocated(device))
