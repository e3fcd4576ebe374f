"""Diagnostics for any ``nn.Module``: what a network can represent and how it trains.

Each function documents the layers it supports and raises
:class:`~deeplimits.errors.UnsupportedModelError` naming the first layer it cannot handle.
"""

from __future__ import annotations

from deeplimits.diagnostics._lipschitz import lipschitz_lower, lipschitz_upper
from deeplimits.diagnostics._memory import SavedTensorsMeter, cuda_peak_bytes
from deeplimits.diagnostics._paths import count_parameters, count_paths
from deeplimits.diagnostics._regions import count_regions, region_breakpoints, region_map
from deeplimits.diagnostics._robustness import certified_radius, flip_distance

__all__ = [
    "SavedTensorsMeter",
    "cuda_peak_bytes",
    "count_parameters",
    "count_paths",
    "count_regions",
    "certified_radius",
    "flip_distance",
    "lipschitz_lower",
    "lipschitz_upper",
    "region_breakpoints",
    "region_map",
]
