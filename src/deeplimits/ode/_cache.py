"""Per-module caches of captured graphs and compiled code (least recently used dropped)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import nn

__all__ = ["MAX_ENTRIES", "ModuleCache", "clear_graph_cache"]

#: Entries per cache (graphs, compiled solves, compiled fixed steps).
MAX_ENTRIES = 8


class ModuleCache:
    """Entries keyed by a tuple, each belonging to one ``nn.Module`` (``entry.func_ref``, a
    weak reference): a hit needs the same module alive, so a recycled ``id`` never matches.
    ``None`` stored under a key remembers a failure."""

    def __init__(self) -> None:
        self.entries: OrderedDict[tuple[Any, ...], Any] = OrderedDict()

    def get(self, key: tuple[Any, ...], module: nn.Module) -> Any:
        """The entry of ``module`` under ``key`` (marked as just used), or ``None``."""
        entry = self.entries.get(key)
        if entry is not None and entry.func_ref() is module:
            self.entries.move_to_end(key)
            return entry
        return None

    def failed(self, key: tuple[Any, ...]) -> bool:
        """Whether a failure is remembered under ``key``."""
        return key in self.entries and self.entries[key] is None

    def put(self, key: tuple[Any, ...], value: Any) -> None:
        """Store ``value`` (``None``: remembered failure) and drop the least recently used."""
        self.entries[key] = value
        while len(self.entries) > MAX_ENTRIES:
            self.entries.popitem(last=False)

    def clear(self) -> None:
        self.entries.clear()

    def __len__(self) -> int:
        return len(self.entries)

    def values(self) -> list[Any]:
        return list(self.entries.values())


#: CUDA graphs of the device loop, compiled device-loop blocks, compiled fixed steps.
GRAPHS = ModuleCache()
COMPILED = ModuleCache()
FIXED = ModuleCache()


def clear_graph_cache() -> None:
    """Drop every cached graph (and its memory pool) and compiled solve."""
    GRAPHS.clear()
    COMPILED.clear()
    FIXED.clear()
