"""Diagnostics for any ``nn.Module``: what a network can represent and how it trains.

Each function documents the layers it supports and raises
:class:`~deeplimits.errors.UnsupportedModelError` naming the first layer it cannot handle.
"""

from __future__ import annotations

from deeplimits.diagnostics._paths import count_parameters, count_paths

__all__ = [
    "count_parameters",
    "count_paths",
]
