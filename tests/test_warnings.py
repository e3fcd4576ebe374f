"""Warnings name the user's line: the first frame outside deeplimits and torch."""

from __future__ import annotations

import pytest
import torch

from deeplimits import _warnings


def test_a_warning_raised_deep_in_the_package_names_the_callers_line() -> None:
    with pytest.warns(UserWarning, match="deep") as rec:
        _warnings.warn("deep")
    assert rec[0].filename == __file__


def test_frames_of_torch_between_the_user_and_the_package_are_passed_over() -> None:
    # a package module's forward that warns, called through torch's Module.__call__: the
    # frames are user -> torch -> deeplimits -> warn, and the warning names the user's line
    namespace = {"__name__": "deeplimits.fake", "_warnings": _warnings}
    exec(compile("def forward(self, x):\n    _warnings.warn('from forward', RuntimeWarning)\n"
                 "    return x\n", "<deeplimits.fake>", "exec"), namespace)
    warns = type("Warns", (torch.nn.Module,), {"forward": namespace["forward"]})
    with pytest.warns(RuntimeWarning, match="from forward") as rec:
        warns()(torch.ones(1))
    assert rec[0].filename == __file__
