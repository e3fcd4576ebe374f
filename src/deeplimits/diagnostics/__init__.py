"""Diagnostics for any ``nn.Module``: what a network can represent and how it trains.

Each function documents the layers it supports and raises
:class:`~deeplimits.errors.UnsupportedModelError` naming the first layer it cannot handle.
"""

from __future__ import annotations

from deeplimits.diagnostics._gradient_flow import GradientFlowReport, LayerFlow, gradient_flow
from deeplimits.diagnostics._graph_lipschitz import GraphLipschitz, NodeLipschitz, lipschitz_graph
from deeplimits.diagnostics._lipschitz import lipschitz_lower, lipschitz_upper
from deeplimits.diagnostics._memory import SavedTensorsMeter, cuda_peak_bytes
from deeplimits.diagnostics._operator_norm import activation_lipschitz, operator_norm
from deeplimits.diagnostics._paths import count_parameters, count_paths
from deeplimits.diagnostics._regions import count_regions, region_breakpoints, region_map
from deeplimits.diagnostics._robustness import certified_radius, flip_distance

__all__ = [
    "GradientFlowReport",
    "GraphLipschitz",
    "LayerFlow",
    "NodeLipschitz",
    "SavedTensorsMeter",
    "activation_lipschitz",
    "certified_radius",
    "count_parameters",
    "count_paths",
    "count_regions",
    "cuda_peak_bytes",
    "flip_distance",
    "gradient_flow",
    "lipschitz_graph",
    "lipschitz_lower",
    "lipschitz_upper",
    "operator_norm",
    "region_breakpoints",
    "region_map",
]
