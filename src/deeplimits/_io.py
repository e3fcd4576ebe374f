"""Atomic file writes: a reader sees the old file or the new one, never a half-written one."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from deeplimits.errors import ExperimentError

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text"]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    Raises:
        ExperimentError: the folder cannot be created or written (permissions, full disk); the
            message names the path and the cause. No partial file is left behind.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        hint = {
            errno.ENOSPC: "the disk is full; free space or choose another --out folder",
            errno.EACCES: "permission denied; choose a writable --out folder",
            errno.EROFS: "the file system is read-only; choose a writable --out folder",
        }.get(exc.errno or 0, "choose a writable --out folder")
        raise ExperimentError(f"cannot write {str(path)!r}: {exc.strerror or exc}; {hint}") from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """:func:`atomic_write_bytes` for JSON (strict: NaN/inf are rejected, not written)."""
    atomic_write_text(path, json.dumps(obj, indent=1, allow_nan=False) + "\n")
