"""Warnings attributed to the user's code, wherever in the package they are raised."""

from __future__ import annotations

import sys
import warnings

__all__ = ["warn"]

#: Packages whose frames are passed over: this one, torch (an autograd backward or a
#: module's __call__ between the user's line and ours) and mutmut (the trampolines that
#: ``tools/mutation.py``'s mutation tests put between the package's frames).
_INTERNAL = ("deeplimits", "torch", "mutmut")


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` with the stack level of the first frame outside ``_INTERNAL`` (the
    user's call), so that the warning names the user's file and line however deep in the
    package it is raised; the outermost package frame when there is no user frame."""
    frame = sys._getframe(1)
    level = 2  # the caller of this function
    while frame.f_back is not None and _internal(frame):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


def _internal(frame: object) -> bool:
    name = str(getattr(frame, "f_globals", {}).get("__name__", ""))
    return name.split(".", 1)[0] in _INTERNAL
