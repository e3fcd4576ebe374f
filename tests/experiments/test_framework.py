from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest
import torch

from deeplimits.errors import InvalidArgumentError, UnknownNameError
from deeplimits.experiments import Table, Verdict, get_experiment, list_experiments
from deeplimits.experiments._base import ExperimentConfig, to_jsonable


def test_verdict_rejects_unknown_status_listing_valid_ones():
    with pytest.raises(UnknownNameError, match="reproduced, not reproduced, inconclusive"):
        Verdict("maybe", "because")  # type: ignore[arg-type]


def test_verdict_from_checks_names_the_failed_check():
    v = Verdict.from_checks({"a = 1 holds": True, "b = 2 (measured 3)": False})
    assert v.status == "not reproduced"
    assert "b = 2 (measured 3)" in v.reason and "a = 1" not in v.reason
    assert Verdict.from_checks({"x": True}).status == "reproduced"


def test_table_rejects_ragged_rows():
    with pytest.raises(InvalidArgumentError, match="row 1 has 1 cells"):
        Table("t", ("a", "b"), ((1, 2), (3,)))


def test_to_jsonable_converts_numpy_torch_and_non_finite():
    data = {"a": np.float32(1.5), "b": torch.tensor([1.0, 2.0]), "c": float("nan"), "d": (1, 2)}
    out = to_jsonable(data)
    assert out == {"a": 1.5, "b": [1.0, 2.0], "c": None, "d": [1, 2]}
    json.dumps(out, allow_nan=False)


def test_to_jsonable_rejects_objects_it_cannot_store():
    with pytest.raises(InvalidArgumentError, match="cannot store a value of type object"):
        to_jsonable(object())


def test_unknown_preset_lists_valid_presets():
    with pytest.raises(UnknownNameError, match="quick, full"):
        ExperimentConfig.preset("fast")


def test_unknown_experiment_lists_registered_names():
    with pytest.raises(UnknownNameError, match="paths"):
        get_experiment("nonexistent")


def _like(template: Any, value: Any) -> Any:
    """A JSON value back in the container type of ``template`` (JSON has lists, not tuples)."""
    if isinstance(template, (tuple, list)):
        return type(template)(_like(t, v) for t, v in zip(template, value, strict=True))
    return value


def test_registry_is_in_lecture_order_and_every_experiment_is_complete():
    exps = list_experiments()
    assert [(e.slide, e.position) for e in exps] == sorted((e.slide, e.position) for e in exps)
    for e in exps:
        assert e.name and e.title and e.claim and 1 <= e.slide <= 4
        quick, full = e.Config.quick(), e.Config.full()
        assert isinstance(quick, e.Config) and isinstance(full, e.Config)
        for config in (quick, full):
            # to_json is complete and lossless: JSON text rebuilds an equal config
            stored = json.loads(json.dumps(config.to_json(), allow_nan=False))
            assert set(stored) == {f.name for f in dataclasses.fields(config)}
            rebuilt = e.Config(**{k: _like(getattr(config, k), v) for k, v in stored.items()})
            assert rebuilt == config, e.name
