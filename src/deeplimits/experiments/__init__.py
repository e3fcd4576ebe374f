"""The lecture's claims as experiments, and their registry.

Use :func:`get_experiment` / :func:`list_experiments` to look them up and
:func:`run_experiment` to run one with caching, or call ``Experiment().run(config, progress)``
directly.
"""

from __future__ import annotations

import importlib

from deeplimits.errors import UnknownNameError
from deeplimits.experiments._base import (
    PRESETS,
    TOUR_BUDGET_S,
    Experiment,
    ExperimentConfig,
    NullProgress,
    Progress,
    Result,
    Table,
    Verdict,
)

__all__ = [
    "PRESETS",
    "TOUR_BUDGET_S",
    "Experiment",
    "ExperimentConfig",
    "NullProgress",
    "Progress",
    "Result",
    "Table",
    "Verdict",
    "get_experiment",
    "list_experiments",
    "register",
    "run_experiment",
]

_REGISTRY: dict[str, type[Experiment]] = {}

# Modules whose experiments register themselves on import; add one line per new experiment module.
_MODULES: tuple[str, ...] = (
    "deeplimits.experiments.paths",
    "deeplimits.experiments.continuity",
    "deeplimits.experiments.odenet",
    "deeplimits.experiments.memory_price",
    "deeplimits.experiments.gradients",
    "deeplimits.experiments.expressivity",
)


def register(cls: type[Experiment]) -> type[Experiment]:
    """Class decorator adding an experiment to the registry under ``cls.name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"two experiments are named {cls.name!r}; rename one")
    _REGISTRY[cls.name] = cls
    return cls


def _load() -> None:
    for module in _MODULES:
        importlib.import_module(module)


def list_experiments() -> list[type[Experiment]]:
    """All registered experiments in the lecture's order (by slide, position in it, then name)."""
    _load()
    return sorted(_REGISTRY.values(), key=lambda e: (e.slide, e.position, e.name))


def get_experiment(name: str) -> type[Experiment]:
    """The experiment class called ``name``.

    Raises:
        UnknownNameError: no such experiment; the message lists the valid names.
    """
    _load()
    if name not in _REGISTRY:
        raise UnknownNameError("experiment", name, [e.name for e in list_experiments()])
    return _REGISTRY[name]


from deeplimits.experiments._runner import run_experiment  # noqa: E402
