"""The continuity experiment: quick preset runs, verdict computed from its own numbers."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from deeplimits.experiments import NullProgress, get_experiment
from deeplimits.experiments.continuity import ContinuityConfig, ContinuityExperiment


def test_continuity_is_registered_on_slide_1() -> None:
    exp = get_experiment("continuity")
    assert exp is ContinuityExperiment
    assert exp.slide == 1


@pytest.mark.slow
def test_small_run_reproduces_the_continuity_claims() -> None:
    config = replace(
        ContinuityConfig.quick(), widths=(4, 32), steps=(100, 600), n_eval=40, n_paths=6
    )
    result = ContinuityExperiment().run(config, NullProgress())
    n = result.numbers
    # Each check of the verdict, recomputed from the numbers it reports.
    assert n["min_sup_error"] >= 0.5
    assert n["l2_last"] < 0.5 * n["l2_first"]
    assert n["min_delta_times_lipschitz"] >= 0.8
    assert all(c == n["n_paths"] for c in n["paths_crossing"].values())
    for m in n["digits"].values():
        assert m["certified_le_found"]
        assert m["lipschitz_lower"] <= m["lipschitz_upper"] <= m["lipschitz_product"] + 1e-9
        assert 0 < m["median_ratio_flip_to_nearest"] < 1
        assert math.isfinite(m["median_flip"])
    assert result.verdict.status == "reproduced", result.verdict.reason
    assert set(result.figures) == {"step_fits", "paths", "distances"}
