"""Running experiments: seeding, timing, provenance, atomic storage and reuse of finished results.

Layout of an output folder ``OUT``::

    OUT/results/NAME.json        one finished experiment (written last, atomically)
    OUT/figures/NAME/STEM.png    its figures (written before the JSON)

A result file is reused when it parses, its schema, experiment name, config and package version
match, and all its figures exist; otherwise the experiment is run again. Since the JSON is written
last and atomically, an interrupted run leaves either a complete record or none.
"""

from __future__ import annotations

import io
import json
import os
import random
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

import deeplimits
from deeplimits._io import atomic_write_bytes, atomic_write_json
from deeplimits.errors import ExperimentError, InvalidArgumentError
from deeplimits.experiments._base import (
    Experiment,
    ExperimentConfig,
    NullProgress,
    Progress,
    Result,
    environment,
    to_jsonable,
)

__all__ = ["SCHEMA", "check_device", "load_record", "run_experiment"]

SCHEMA = 1


def check_device(device: str) -> str:
    """Validate a device string: ``cpu``, ``cuda`` or ``cuda:N`` with that GPU present."""
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InvalidArgumentError(
                f"device {device!r} was asked for but no CUDA GPU is available to this torch "
                f"({torch.__version__}); use --device cpu"
            )
        return device
    raise InvalidArgumentError(f"device {device!r} is not supported; use 'cpu' or 'cuda'")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _threads() -> int:
    """Intra-op CPU threads for experiments: ``DEEPLIMITS_NUM_THREADS``, else 1.

    The experiments train small networks, whose ops are too short to gain from several threads
    and lose badly when the cores are shared: the continuity experiment's quick preset took
    106 s with 2 threads on a loaded 2-core machine and 3.8 s with 1.
    """
    value = os.environ.get("DEEPLIMITS_NUM_THREADS", "1")
    if not value.isdigit() or int(value) < 1:
        raise InvalidArgumentError(
            f"DEEPLIMITS_NUM_THREADS={value!r} must be a positive integer (e.g. 1 or 4)"
        )
    return int(value)


@contextmanager
def _cpu_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def command_for(name: str, preset: str, seed: int, device: str) -> str:
    """The shell command that reproduces a result."""
    parts = ["deeplimits", "run", name, "--preset", preset, "--seed", str(seed)]
    if device != "cpu":
        parts += ["--device", device]
    return shlex.join(parts)


def load_record(path: Path) -> dict[str, Any]:
    """Read a stored result; raises ExperimentError naming the file when it is corrupt."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExperimentError(
            f"result file {str(path)!r} is unreadable ({exc}); it will be redone"
        ) from exc
    required = {"schema", "name", "config", "package_version", "numbers", "verdict", "figures"}
    if not isinstance(record, dict) or not required <= set(record):
        raise ExperimentError(
            f"result file {str(path)!r} lacks fields {sorted(required - set(record or {}))}; "
            "it will be redone"
        )
    return record


def _reusable(record: dict[str, Any], name: str, config: dict[str, Any], out: Path) -> bool:
    return (
        record.get("schema") == SCHEMA
        and record.get("name") == name
        and record.get("config") == config
        and record.get("package_version") == deeplimits.__version__
        and all((out / f).is_file() for f in record.get("figures", []))
    )


def run_experiment(
    experiment: str | type[Experiment],
    *,
    preset: str = "quick",
    config: ExperimentConfig | None = None,
    seed: int | None = None,
    device: str | None = None,
    out: str | Path | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run one experiment (or reuse its stored result) and return its JSON record.

    Args:
        experiment: a registered name or an :class:`Experiment` subclass.
        preset: ``"quick"`` or ``"full"``; ignored when ``config`` is given.
        config: an explicit config instead of a preset.
        seed, device: override the config's.
        out: output folder; when given, the record and figures are stored there and a stored
            record with the same config and package version is reused unless ``force``.
        progress: where to report progress (default: nothing).

    Returns:
        The record: name, claim, config, numbers, tables, verdict, figure paths (relative to
        ``out``), timings, environment, the reproducing command. Without ``out`` the figures are
        kept in memory as PNG bytes under ``"figure_png"``.

    Raises:
        UnknownNameError: unknown experiment or preset. InvalidArgumentError: bad device.
        ExperimentError: the result cannot be written.
    """
    from deeplimits.experiments import get_experiment

    cls = get_experiment(experiment) if isinstance(experiment, str) else experiment
    progress = progress or NullProgress()
    cfg = config if config is not None else cls.Config.preset(preset)
    if config is not None:
        preset = "custom"
    if seed is not None:
        cfg = replace(cfg, seed=seed)
    if device is not None:
        cfg = replace(cfg, device=device)
    check_device(cfg.device)
    cfg_json = cfg.to_json()

    out_path = Path(out) if out is not None else None
    result_file = out_path / "results" / f"{cls.name}.json" if out_path else None
    if result_file is not None and result_file.exists() and not force:
        try:
            record = load_record(result_file)
        except ExperimentError as exc:
            progress.log(str(exc))
        else:
            if _reusable(record, cls.name, cfg_json, out_path):
                record["reused"] = True
                return record

    _seed_everything(cfg.seed)
    with _cpu_threads(_threads()):
        start = time.perf_counter()
        result: Result = cls().run(cfg, progress)
        total = time.perf_counter() - start
        result.environment = {**environment(cfg.device, cfg.seed), **result.environment}
    result.timings.setdefault("total", total)

    record: dict[str, Any] = {
        "schema": SCHEMA,
        "name": cls.name,
        "title": cls.title,
        "claim": cls.claim,
        "slide": cls.slide,
        "preset": preset,
        "config": cfg_json,
        "package_version": deeplimits.__version__,
        "numbers": to_jsonable(result.numbers),
        "tables": [t.to_json() for t in result.tables],
        "verdict": {"status": result.verdict.status, "reason": result.verdict.reason},
        "notes": list(result.notes),
        "timings": to_jsonable(result.timings),
        "environment": to_jsonable(result.environment),
        "command": command_for(cls.name, preset, cfg.seed, cfg.device),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "figures": [],
    }
    pngs: dict[str, bytes] = {}
    for stem, fig in result.figures.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        pngs[stem] = buf.getvalue()
    if out_path is None or result_file is None:
        record["figure_png"] = pngs
        return record
    for stem, data in pngs.items():
        rel = f"figures/{cls.name}/{stem}.png"
        atomic_write_bytes(out_path / rel, data)
        record["figures"].append(rel)
    atomic_write_json(result_file, record)
    record["reused"] = False
    return record
