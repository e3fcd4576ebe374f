from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from deeplimits._io import atomic_write_json, atomic_write_text
from deeplimits.errors import ExperimentError


def test_full_disk_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path, monkeypatch):
    target = tmp_path / "r.json"
    atomic_write_text(target, "old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ExperimentError, match="disk is full"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_json_with_nan_is_refused_not_written(tmp_path: Path):
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "x.json", {"a": float("nan")})
    assert not (tmp_path / "x.json").exists()
