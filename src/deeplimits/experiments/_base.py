"""The experiment framework: configs, results, verdicts, progress.

An experiment turns one claim of the lecture into measured numbers and a verdict computed from
them. Each experiment is a subclass of :class:`Experiment` with

- ``name`` (CLI name), ``title``, ``claim`` (the lecture's words, quoted), ``slide`` (the
  lecture's section, 1-4, which orders the report) and ``position`` (the order within the
  slide, following the slide's statements; default 0, ties broken by name);
- ``Config``: a frozen dataclass subclassing :class:`ExperimentConfig` with ``quick()`` (the tour's
  default, seconds on 2 CPU cores) and ``full()`` presets;
- ``run(config, progress) -> Result``.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

import matplotlib
import numpy as np
import torch

from deeplimits.errors import InvalidArgumentError, UnknownNameError

matplotlib.use("Agg")  # experiments draw off-screen; no display is assumed anywhere
from matplotlib.figure import Figure

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
    "VerdictStatus",
    "environment",
    "to_jsonable",
]

VerdictStatus = Literal["reproduced", "not reproduced", "inconclusive"]
VERDICT_STATUSES: tuple[VerdictStatus, ...] = ("reproduced", "not reproduced", "inconclusive")
PRESETS: tuple[str, ...] = ("quick", "full")
#: Wall-clock budget in seconds of ``deeplimits tour`` per preset on 2 CPU cores (experiments
#: run one after the other, one thread each): the quick tour about a minute, the full tour at
#: most 30 minutes. The tour reports its time against it; measured times are in
#: benchmarks/RESULTS.md.
TOUR_BUDGET_S: dict[str, float] = {"quick": 60.0, "full": 1800.0}


@dataclass(frozen=True)
class Verdict:
    """The outcome of an experiment, computed from its numbers.

    ``status`` is one of ``"reproduced"``, ``"not reproduced"``, ``"inconclusive"``;
    ``reason`` is one sentence that cites the numbers it was decided on.
    """

    status: VerdictStatus
    reason: str

    def __post_init__(self) -> None:
        if self.status not in VERDICT_STATUSES:
            raise UnknownNameError("verdict status", self.status, VERDICT_STATUSES)
        if not self.reason.strip():
            raise InvalidArgumentError("Verdict.reason is empty; give the reason in one sentence")

    @classmethod
    def from_checks(cls, checks: Mapping[str, bool], *, what: str = "") -> Verdict:
        """``reproduced`` when every named check holds, else ``not reproduced`` naming the failures.

        ``checks`` maps a human-readable statement (with its numbers) to whether it held.
        """
        failed = [k for k, ok in checks.items() if not ok]
        if not failed:
            return cls("reproduced", (what + ": " if what else "") + "; ".join(checks) + ".")
        return cls("not reproduced", "failed: " + "; ".join(failed) + ".")


@dataclass(frozen=True)
class Table:
    """A table of measured numbers for the report; each row has one cell per column."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise InvalidArgumentError(
                    f"Table {self.title!r}: row {i} has {len(row)} cells but there are "
                    f"{len(self.columns)} columns; give one cell per column"
                )

    @classmethod
    def from_records(cls, title: str, records: Sequence[Mapping[str, Any]]) -> Table:
        """Build a table from a list of dicts sharing the same keys (the first one's order)."""
        if not records:
            return cls(title, (), ())
        columns = tuple(records[0])
        return cls(title, columns, tuple(tuple(r.get(c) for c in columns) for r in records))

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": list(self.columns),
            "rows": [list(map(to_jsonable, r)) for r in self.rows],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Table:
        return cls(d["title"], tuple(d["columns"]), tuple(tuple(r) for r in d["rows"]))


@dataclass
class Result:
    """What an experiment measured.

    Attributes:
        numbers: measured scalars and small lists, JSON-serialisable (checked by the runner).
        verdict: computed from ``numbers`` by the experiment.
        tables: tables for the report.
        figures: matplotlib figures by file stem (``"regions"`` -> ``regions.png``); the runner
            saves and closes them.
        timings: seconds per phase; the runner adds ``"total"``.
        environment: versions, device, seed; filled by the runner.
        notes: free-text caveats shown under the verdict.
    """

    numbers: dict[str, Any]
    verdict: Verdict
    tables: list[Table] = field(default_factory=list)
    figures: dict[str, Figure] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class ProgressTask(Protocol):
    def advance(self, n: int = 1) -> None: ...


class Progress(Protocol):
    """Progress handed to ``Experiment.run``: ``with progress.task("fit", total=10) as t``."""

    def task(
        self, description: str, total: int | None = None
    ) -> AbstractContextManager[ProgressTask]: ...

    def log(self, message: str) -> None: ...


class _NullTask:
    def advance(self, n: int = 1) -> None:
        pass


class NullProgress:
    """A :class:`Progress` that shows nothing (tests, library use)."""

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[_NullTask]:
        yield _NullTask()

    def log(self, message: str) -> None:
        pass


@dataclass(frozen=True)
class ExperimentConfig:
    """Base of every experiment config: a seed and a device. Subclasses add typed fields."""

    seed: int = 0
    device: str = "cpu"

    @classmethod
    def quick(cls) -> ExperimentConfig:
        """Preset for the tour: seconds on 2 CPU cores."""
        return cls()

    @classmethod
    def full(cls) -> ExperimentConfig:
        """Preset for the full measurement (minutes)."""
        return cls()

    @classmethod
    def preset(cls, name: str) -> ExperimentConfig:
        if name not in PRESETS:
            raise UnknownNameError("preset", name, PRESETS)
        return getattr(cls, name)()

    def to_json(self) -> dict[str, Any]:
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(self).items()}

    def torch_device(self) -> torch.device:
        return torch.device(self.device)


C = TypeVar("C", bound=ExperimentConfig)


class Experiment(ABC, Generic[C]):
    """One claim of the lecture as a measured experiment. Subclass and register it."""

    name: ClassVar[str]
    title: ClassVar[str]
    claim: ClassVar[str]
    slide: ClassVar[int]
    #: Order within the slide, following the slide's statements (ties broken by name).
    position: ClassVar[int] = 0
    Config: ClassVar[type[ExperimentConfig]]

    @abstractmethod
    def run(self, config: C, progress: Progress) -> Result:
        """Run the experiment with ``config`` and return its :class:`Result`."""


def to_jsonable(x: Any) -> Any:
    """Convert numbers from numpy/torch and containers to plain JSON types (NaN/inf -> None)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return [to_jsonable(v) for v in x.tolist()]
    if isinstance(x, (np.floating, float)):
        f = float(x)
        return f if math.isfinite(f) else None
    if isinstance(x, (np.integer, np.bool_)):
        return x.item()
    if isinstance(x, (bool, int, str)) or x is None:
        return x
    if isinstance(x, Mapping):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return to_jsonable(dataclasses.asdict(x))
    raise InvalidArgumentError(
        f"cannot store a value of type {type(x).__name__} ({x!r:.60}) in a result; "
        "convert it to numbers, strings, lists or dicts"
    )


def environment(device: str, seed: int) -> dict[str, Any]:
    """Versions, machine and device for a result's provenance."""
    import sklearn

    import deeplimits

    env: dict[str, Any] = {
        "deeplimits": deeplimits.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "platform": platform.platform(),
        "processor": platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "seed": seed,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["device_name"] = torch.cuda.get_device_name(torch.device(device))
    return env
