"""Mutation testing of the numerical core, one source module at a time, with mutmut 3.

Usage (from the repository root; ``make mutation`` does this with the ``mutation`` extra):

    python tools/mutation.py                        # every entry of MAPPING that is ready
    python tools/mutation.py diagnostics            # a group
    python tools/mutation.py diagnostics/_regions.py ode/_stepper.py   # single modules
    python tools/mutation.py --list                 # the mapping, and which entries are ready

Each source module is mutated against *its own* test modules only (MAPPING below), in a scratch
copy of ``src/``, ``tests/`` and ``pyproject.toml`` under ``.mutation/<module>/``, so runs of
different modules do not share state and the working tree is never modified. A run writes
``.mutation/<module>/survivors.txt`` (the diff of every surviving mutant) and prints a score
table; ``.mutation/scores.json`` collects the scores of every module run so far.

Score = detected / (detected + undetected), with detected = killed + timeout and undetected =
survived + no tests; mutants listed in EQUIVALENT (they cannot change behaviour, with the reason
why) are left out of both. docs/testing.md records the measured scores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".mutation"


@dataclass(frozen=True)
class Entry:
    """One source module (relative to src/deeplimits/) and the test modules that must kill it.

    functions: restrict mutation to these top-level functions (e.g. an experiment's verdict
        function); empty = the whole module.
    pytest_args: extra pytest arguments for this entry (e.g. deselecting a slow test).
    """

    tests: tuple[str, ...]
    functions: tuple[str, ...] = ()
    pytest_args: tuple[str, ...] = ()


# ----------------------------------------------------------------------------------------------
# The mapping. Edit freely: a module renamed or split only needs its line here changed.
# An entry with no tests is listed as "not ready" and skipped.
MAPPING: dict[str, Entry] = {
    # diagnostics: measured, scores in docs/testing.md
    "diagnostics/_operator_norm.py": Entry(("tests/diagnostics/test_operator_norm.py",)),
    "diagnostics/_lipschitz.py": Entry(("tests/diagnostics/test_lipschitz.py",)),
    "diagnostics/_regions.py": Entry(("tests/diagnostics/test_regions.py",)),
    "diagnostics/_robustness.py": Entry(("tests/diagnostics/test_robustness.py",)),
    "diagnostics/_gradient_flow.py": Entry(
        ("tests/diagnostics/test_gradient_flow.py",),
        # the 40-seed signal-propagation test takes minutes per mutant; the others pin values
        pytest_args=("-m", "not slow"),
    ),
    "diagnostics/_paths.py": Entry(
        ("tests/diagnostics/test_paths.py", "tests/test_constructions.py")
    ),
    "diagnostics/_memory.py": Entry(("tests/diagnostics/test_memory.py",)),
    # ode/: the numerical core of the engine (docs/design/ode.md), each module against the
    # test modules of its concept and the outside oracles that pin the shared numbers.
    "ode/_tableaux.py": Entry(
        ("tests/ode/test_ode_tableaux.py", "tests/ode/test_ode_convergence.py",
         "tests/ode/test_ode_stiff.py"),  # the implicit (ESDIRK) tableaux are pinned there
        pytest_args=("-m", "not compiles and not slow"),
    ),
    "ode/_stepper.py": Entry(
        ("tests/ode/test_ode_stepper.py", "tests/ode/test_ode_convergence.py",
         "tests/ode/test_ode_controller_oracles.py")
    ),
    "ode/_controllers.py": Entry(
        ("tests/ode/test_ode_controllers.py", "tests/ode/test_ode_controller_oracles.py")
    ),
    "ode/_norm.py": Entry(
        ("tests/ode/test_ode_norm.py", "tests/ode/test_ode_controller_oracles.py",
         "tests/ode/test_ode_adjoint_oracles.py", "tests/ode/test_ode_device_loop.py"),
        pytest_args=("-m", "not compiles"),
    ),
    "ode/_interp.py": Entry(
        ("tests/ode/test_ode_interp.py", "tests/ode/test_ode_odeint.py"),
        pytest_args=("-m", "not compiles"),
    ),
    "ode/_host_loop.py": Entry(
        # test_ode_odeint.py (accuracy against DOP853 at rtol 1e-12) left out: ~9 s a mutant
        ("tests/ode/test_ode_host_loop.py", "tests/ode/test_ode_controller_oracles.py",
         "tests/ode/test_ode_errors.py", "tests/ode/test_ode_controllers.py"),
        pytest_args=("-m", "not compiles"),
    ),
    "ode/_fixed_loop.py": Entry(
        ("tests/ode/test_ode_fixed_loop.py", "tests/ode/test_ode_odeint.py",
         "tests/ode/test_ode_convergence.py", "tests/ode/test_ode_errors.py"),
        pytest_args=("-m", "not compiles"),
    ),
    "ode/_batched_step.py": Entry(
        ("tests/ode/test_ode_device_loop.py", "tests/ode/test_ode_controller_oracles.py",
         "tests/ode/test_ode_controllers.py"),
        pytest_args=("-m", "not compiles"),
    ),
    "ode/_device_loop.py": Entry(
        ("tests/ode/test_ode_device_loop.py", "tests/ode/test_ode_controllers.py"),
        pytest_args=("-m", "not compiles"),
    ),
    "ode/_adjoint.py": Entry(
        ("tests/ode/test_ode_adjoint.py", "tests/ode/test_ode_gradients.py",
         "tests/ode/test_ode_adjoint_oracles.py",
         # its differential tests against torchdiffeq's odeint_adjoint (norms, callbacks,
         # tuple tolerances); the file's other tests do not reach _adjoint
         "tests/ode/test_ode_torchdiffeq_parity.py",
         "tests/ode/test_ode_adjoint_norm.py"),
        pytest_args=("-k", "not parity or adjoint or norm"),
    ),
    "ode/_reversible.py": Entry(
        ("tests/ode/test_ode_reversible.py", "tests/ode/test_ode_gradients.py")
    ),
    "ode/_time_grad.py": Entry(
        ("tests/ode/test_ode_time_grad.py", "tests/ode/test_ode_gradients.py")
    ),
    "ode/_checkpoint.py": Entry(("tests/ode/test_ode_checkpoint.py",)),
    "ode/_newton.py": Entry(
        ("tests/ode/test_ode_stiff.py",), pytest_args=("-m", "not compiles and not slow")
    ),
    # added late in the session: mapped, not yet measured
    "diagnostics/_graph_lipschitz.py": Entry(("tests/diagnostics/test_graph_lipschitz.py",)),
    "ode/_event.py": Entry(("tests/ode/test_ode_event.py",)),
    "ode/_scipy.py": Entry(
        ("tests/ode/test_ode_scipy.py", "tests/ode/test_ode_torchdiffeq_parity.py"),
        pytest_args=("-k", "scipy"),
    ),
    "ode/_adams.py": Entry(
        ("tests/ode/test_ode_adams.py", "tests/ode/test_ode_torchdiffeq_parity.py"),
        pytest_args=("-k", "adams"),
    ),
    # experiments: only their verdict functions are numerical core.
    "experiments/paths.py": Entry(
        ("tests/experiments/test_paths_experiment.py",),
        functions=("paths_checks", "paths_verdict"),
        pytest_args=("-k", "verdict or checks"),
    ),
    "experiments/expressivity.py": Entry(
        ("tests/experiments/test_expressivity_experiment.py",),
        functions=(
            "expressivity_checks",
            "expressivity_verdict",
            "_random_line_fit",
            "fit_checks",
            "r2_needed",
            "_reach",
        ),
        pytest_args=("-k", "verdict or checks or r2_needed or reach"),
    ),
    "experiments/gradients.py": Entry(
        ("tests/experiments/test_gradients_experiment.py",),
        functions=(
            "gradients_checks",
            "gradients_verdict",
            "gradients_verdicts",
            "compensation",
            "_bound_holds",
            "_record",
            "cnn_checks",
            "cnn_verdict",
        ),
        pytest_args=("-k", "verdict or checks or compensation"),
    ),
    "experiments/continuity.py": Entry(
        ("tests/experiments/test_continuity_experiment.py",),
        functions=("continuity_checks", "continuity_verdict", "_summarise_steps"),
        pytest_args=("-k", "verdict or checks"),
    ),
    "experiments/odenet.py": Entry(
        ("tests/experiments/test_odenet_experiment.py",),
        functions=("odenet_checks", "odenet_verdict"),
        pytest_args=("-k", "verdict or checks"),
    ),
}

# Mutants left out of the score (mutmut name -> why), listed in docs/testing.md too. Two kinds:
# "equivalent: ..." cannot change behaviour; "gpu-only: ..." change only a device argument, the
# same on the CPU-only test machine (a CUDA run could tell). Names are per function and stable
# while the function is unchanged; a name that is no longer generated is reported by a run.
#: sha256 (12 hex digits, ``_source_hash``) of each module's source when its EQUIVALENT names
#: were last checked against the mutants' diffs (``.mutation/<module>/equivalents.txt``).
#: mutmut numbers a function's mutants in order, so an edit renumbers them and a name checked
#: against other source can name a real mutant: a run on other source marks its score
#: "equivalents unchecked" until the names are checked and the hash here updated.
EQUIVALENTS_CHECKED: dict[str, str] = {
    "ode/_interp.py": "37105b62d1f9",
    "ode/_norm.py": "7ba7b8fb3740",
    "ode/_host_loop.py": "a19580c9d70e",
    "ode/_controllers.py": "6790255ea67e",
    "ode/_fixed_loop.py": "cc84d41dc078",
    "diagnostics/_robustness.py": "4168e1fa9083",
    "diagnostics/_regions.py": "0868a2899943",
    "ode/_device_loop.py": "29f61f280cf7",
    "ode/_batched_step.py": "cf012fbcc6c8",
    "ode/_adjoint.py": "3c324a071878",
    "ode/_scipy.py": "54b800a1be99",
    "ode/_newton.py": "8b40fe90a288",
    "ode/_adams.py": "b17d0fe95528",
    "ode/_checkpoint.py": "ce068b4baadc",
    "diagnostics/_graph_lipschitz.py": "b1cb51f4a690",
    "ode/_event.py": "31f0de172bb4",
    "diagnostics/_operator_norm.py": "cc637d3607c4",
    "diagnostics/_lipschitz.py": "8a5a4de1d74e",  # docstring-only change after 6964c59a4132
    "diagnostics/_gradient_flow.py": "349bfa560f0e",
    "ode/_tableaux.py": "db60b4616f80",
}

_GPU = "gpu-only: a device argument; identical on CPU"
_MSG = "equivalent: only the wording of an error message or note (key words kept)"
_STRICT = "equivalent: zip(strict=...) of sequences that have equal lengths by construction"
_TIE = "equivalent: differs only on an exact tie (a measure-zero set of inputs)"


def _names(module: str, *keys: str, package: str = "diagnostics") -> list[str]:
    return [f"deeplimits.{package}.{module}.{key}" for key in keys]


def _ode(module: str, *keys: str) -> list[str]:
    return _names(module, *keys, package="ode")


EQUIVALENT: dict[str, str] = {
    # _lipschitz
    **dict.fromkeys(
        _names(
            "_lipschitz",
            "x__parse__mutmut_6",
            "x__parse__mutmut_8",
            "x__jacobian_norms__mutmut_49",
            "x__jacobian_norms__mutmut_54",
            "x__jacobian_norms__mutmut_58",
            "x__ascend__mutmut_12",
            "x__ascend__mutmut_87",
            "x__ascend__mutmut_91",
            "x__graph_upper__mutmut_25",
            "x__graph_upper__mutmut_28",
            "x__graph_upper__mutmut_34",
        ),
        _GPU,
    ),
    **dict.fromkeys(_names("_lipschitz", "x__eclipse_bound__mutmut_138"), _TIE),
    "deeplimits.diagnostics._lipschitz.x__canonical__mutmut_18": "equivalent: the slice then "
    "also walks the activations after the last Linear, whose pending slope is never used",
    "deeplimits.diagnostics._lipschitz.x__eclipse_bound__mutmut_103": "equivalent: x_i matters "
    "only when no mixture is positive definite, which cannot happen (eta = 1 always is)",
    **dict.fromkeys(
        _names("_lipschitz", "x__eclipse_bound__mutmut_66", "x__eclipse_bound__mutmut_68"),
        "equivalent: the 1e-10 regulariser of the SDP's data in float32 differs by 1e-18",
    ),
    **dict.fromkeys(
        _names("_lipschitz", "x__eclipse_bound__mutmut_70", "x__eclipse_bound__mutmut_76"),
        "equivalent: rescaling W_{i+1} in the SDP changes only its objective's scale, not the "
        "multipliers, and the bound is recomputed from the multipliers",
    ),
    "deeplimits.diagnostics._lipschitz.x__eclipse_bound__mutmut_84": "equivalent: the filter "
    "still matches SCS's warning through 'inaccurate'",
    **dict.fromkeys(
        _names("_lipschitz", "x__jacobian_norms__mutmut_22", "x__jacobian_norms__mutmut_26"),
        "equivalent: retain_graph defaults to create_graph, which is True at every call",
    ),
    "deeplimits.diagnostics._lipschitz.x__jacobian_norms__mutmut_40": "equivalent: stacking "
    "as (batch, D, K) gives the transposed Jacobian, whose spectral norm is the same",
    **dict.fromkeys(
        _names("_lipschitz", "x__jacobian_norms__mutmut_61", "x__jacobian_norms__mutmut_65"),
        "equivalent: power iteration does not depend on the scale of its start vector",
    ),
    "deeplimits.diagnostics._lipschitz.x__spectral_norm__mutmut_6": "equivalent: the weights "
    "are float64 already (_parse converts them)",
    "deeplimits.diagnostics._lipschitz.x_lipschitz_upper__mutmut_26": "equivalent: fast=None "
    "is falsy like False",
    "deeplimits.diagnostics._lipschitz.x__graph_upper__mutmut_5": "equivalent: a module tree "
    "always has a childless module (the model itself at least), so next() never runs out",
    "deeplimits.diagnostics._lipschitz.x__ascend__mutmut_119": "equivalent: the "
    "proposal's norm is only compared (detached); its graph is never used",
    "deeplimits.diagnostics._lipschitz.x__ascend__mutmut_78": "equivalent: where the "
    "gradient is 0, g / 1e-30 is 0 as well",
    "deeplimits.diagnostics._lipschitz.x__ascend__mutmut_54": "equivalent: second_order = "
    "None instead of False after a failure: only read as a truth value",
    # _robustness
    **dict.fromkeys(
        _names(
            "_robustness",
            "x__deepfool_step__mutmut_72",
            "x__deepfool_step__mutmut_74",
            "x_flip_distance__mutmut_36",
            "x_flip_distance__mutmut_39",
            "x_flip_distance__mutmut_77",
            "x_flip_distance__mutmut_80",
            "x_flip_distance__mutmut_84",
            "x_flip_distance__mutmut_87",
        ),
        _GPU,
    ),
    **dict.fromkeys(
        _names("_robustness", "x__deepfool_step__mutmut_54", "x__deepfool_step__mutmut_55"),
        "equivalent: keeping the graph for the last class too only holds memory longer",
    ),
    **dict.fromkeys(
        _names(
            "_robustness",
            "x_flip_distance__mutmut_76",
            "x_flip_distance__mutmut_79",
            "x_flip_distance__mutmut_83",
            "x_flip_distance__mutmut_86",
        ),
        "equivalent: lo or hi in float32 is promoted to the other's float64 at the first "
        "bisection step (mid = (lo + hi) / 2 of 0 and 1 is exact)",
    ),
    "deeplimits.diagnostics._robustness.x_certified_radius__mutmut_45": "equivalent: topk's "
    "default dim -1 is dim 1 of the (batch, K) logits",
    "deeplimits.diagnostics._robustness.x_certified_radius__mutmut_23": "equivalent: the error "
    "message's reason is read from 2 samples instead of 1: the same node has no finite global "
    "bound whatever the sample (the error is raised either way)",
    "deeplimits.diagnostics._robustness.x__labels__mutmut_4": _TIE + " (a logit exactly 0)",
    # _regions
    **dict.fromkeys(
        _names(
            "_regions",
            "x__convert__mutmut_21",
            "x__convert__mutmut_23",
            "x__convert__mutmut_30",
            "x__convert__mutmut_32",
            "x__point__mutmut_2",
            "x__point__mutmut_4",
            "x__push__mutmut_9",
            "x__push__mutmut_11",
            "x__push__mutmut_18",
            "x__push__mutmut_20",
        ),
        _GPU,
    ),
    **dict.fromkeys(
        _names("_regions", "x__point__mutmut_3", "x__point__mutmut_5"),
        "equivalent: the tensor is converted to float64 by np.asarray right after",
    ),
    **dict.fromkeys(
        _names("_regions", "x__point__mutmut_10", "x__point__mutmut_12"),
        "equivalent: points of floats are float64 anyway; integer points are converted where "
        "they are used",
    ),
    **dict.fromkeys(
        _names("_regions", "x__convert__mutmut_55", "x__convert__mutmut_59"),
        "equivalent: the residual width check decides the same in every case (the body's input "
        "width equals dim whenever dim is known)",
    ),
    "deeplimits.diagnostics._regions.x__different__mutmut_10": "equivalent: numpy's reshape "
    "infers a negative size (-2 as -1)",
    **dict.fromkeys(
        _names(
            "_regions",
            "x__directional_jacobians__mutmut_3",
            "x__directional_jacobians__mutmut_5",
            "x__directional_jacobians__mutmut_8",
            "x__directional_jacobians__mutmut_10",
            "x__directional_jacobians__mutmut_13",
            "x__directional_jacobians__mutmut_15",
        ),
        "equivalent: origin, basis and coordinates are float64 numpy arrays already",
    ),
    "deeplimits.diagnostics._regions.x__directional_jacobians__mutmut_20": "equivalent: the "
    "(k, d) tangents broadcast to (N, k, .) at the first activation mask",
    **dict.fromkeys(
        _names("_regions", "x__line_pieces__mutmut_23", "x__plane_groups__mutmut_21"),
        "equivalent: max(initial=None) of a non-empty array is the same maximum",
    ),
    **dict.fromkeys(
        _names(
            "_regions",
            "x__plane_groups__mutmut_46",
            "x__plane_groups__mutmut_49",
            "x__plane_groups__mutmut_50",
        ),
        _STRICT,
    ),
    **dict.fromkeys(
        _names("_regions", "x__plane_partition__mutmut_101", "x__plane_partition__mutmut_103"),
        "equivalent: vertex ids are Python ints, int64 either way",
    ),
    **dict.fromkeys(
        _names("_regions", "x__plane_partition__mutmut_124", "x__plane_partition__mutmut_126"),
        "equivalent: regioncam's vertices are float32; float64 adds no information",
    ),
    "deeplimits.diagnostics._regions.x__plane_partition__mutmut_109": "equivalent: regioncam "
    "lists a boundary edge's face first, so the swap never happens",
    "deeplimits.diagnostics._regions.x__plane_partition__mutmut_22": "equivalent: "
    "compute_uv=None is falsy like False",
    "deeplimits.diagnostics._regions.x__plane_partition__mutmut_26": "equivalent: two "
    "singular values, so sv[1] is sv[-1]",
    "deeplimits.diagnostics._regions.x__plane_partition__mutmut_28": _TIE,
    **dict.fromkeys(
        _names(
            "_regions",
            "x__line_partition__mutmut_16",
            "x__line_partition__mutmut_25",
            "x__plane_partition__mutmut_53",
            "x__plane_partition__mutmut_60",
        ),
        _MSG,
    ),
    **dict.fromkeys(
        _names("_regions", "x__push__mutmut_30", "x__push__mutmut_40"),
        "equivalent: the mask differs only for a pre-activation exactly 0 at an interior "
        "point, i.e. a unit with zero weights, whose tangent is 0 anyway",
    ),
    **dict.fromkeys(
        _names("_regions", "x__push__mutmut_19", "x__push__mutmut_21"),
        "equivalent: without the cast the bias keeps the model's dtype and is promoted to "
        "float64 by the addition, with the same values",
    ),
    "deeplimits.diagnostics._regions.x__push__mutmut_33": "equivalent: the same float32 slope "
    "in every region: equal maps stay bit-equal, different ones stay apart",
    **dict.fromkeys(
        _names("_regions", "x_count_regions__mutmut_20", "x_region_breakpoints__mutmut_16"),
        "equivalent: there are always >= 2 breakpoints; with 2 the affine path answers the same",
    ),
    "deeplimits.diagnostics._regions.x_region_map__mutmut_63": "equivalent: matplotlib reads "
    "colour names case-insensitively",
    **dict.fromkeys(
        _names("_regions", "x_region_map__mutmut_58", "x_region_map__mutmut_61"),
        "equivalent: a PolyCollection has no edges by default",
    ),
    # _operator_norm
    **dict.fromkeys(
        _names(
            "_operator_norm",
            "x__conv_norm__mutmut_31",
            "x__conv_norm__mutmut_43",
            "x__conv_norm__mutmut_46",
            "x__conv_norm__mutmut_66",
            "x__conv_norm__mutmut_69",
            "x__power_iteration_from__mutmut_13",
            "x__power_iteration_from__mutmut_21",
            "x__power_iteration_from__mutmut_23",
            "x_conv_norm_cached__mutmut_43",
            "x_conv_norm_cached__mutmut_46",
        ),
        _GPU,
    ),
    **dict.fromkeys(
        _names(
            "_operator_norm",
            "x__matrix_norm__mutmut_16",
            "x__matrix_norm__mutmut_17",
            "x__matrix_norm__mutmut_18",
            "x__matrix_norm__mutmut_19",
        ),
        "equivalent: λmax(W Wᵀ) = λmax(Wᵀ W); the side only changes the speed",
    ),
    **dict.fromkeys(
        _names(
            "_operator_norm",
            "x__conv_norm__mutmut_82",
            "x__conv_norm__mutmut_83",
            "x__conv_norm__mutmut_84",
        ),
        "equivalent: max_iter, tol and seed are unused with method='exact'",
    ),
    **dict.fromkeys(
        _names(
            "_operator_norm",
            "x_activation_lipschitz__mutmut_20",
            "x_activation_lipschitz__mutmut_21",
            "x_activation_lipschitz__mutmut_44",
            "x_activation_lipschitz__mutmut_45",
        ),
        "equivalent: a cache key that never hits recomputes the same value",
    ),
    **dict.fromkeys(
        _names(
            "_operator_norm",
            "x_activation_lipschitz__mutmut_40",
            "x_activation_lipschitz__mutmut_41",
            "x_activation_lipschitz__mutmut_57",
            "x_activation_lipschitz__mutmut_58",
        ),
        "equivalent: the derivative's maximum (|z| < 3) lies inside [-10, 10] and the wider "
        "interval alike",
    ),
    "deeplimits.diagnostics._operator_norm.x_activation_lipschitz__mutmut_62": "equivalent: "
    "Dropout(p=0) in training mode gives 1 / (1 - 0) = 1, as in eval mode",
    "deeplimits.diagnostics._operator_norm.x__power_iteration_from__mutmut_44": _TIE
    + " (a change of exactly tol·new: the same value, one product later)",
    **dict.fromkeys(
        _names(
            "_operator_norm", "x_conv_norm_cached__mutmut_57", "x_conv_norm_cached__mutmut_59"
        ),
        "equivalent: the exact path's stored vector is never a usable start: None, shape (0,) "
        "or (1,) all differ from the (1, C, ...) input shape, so power iteration starts cold",
    ),
    **dict.fromkeys(
        _names(
            "_operator_norm",
            "x__sup_derivative__mutmut_12",
            "x__sup_derivative__mutmut_25",
            "x__sup_derivative__mutmut_39",
        ),
        "equivalent: one grid point more moves the coarse argmax by at most one point; the "
        "refinement finds the same maximum to rounding",
    ),
    # _gradient_flow
    **dict.fromkeys(
        _names(
            "_gradient_flow",
            "x__jacobian_singular_values__mutmut_18",
            "x__jacobian_singular_values__mutmut_21",
            "x_gradient_flow__mutmut_105",
            "x__module_flow__mutmut_114",
        ),
        _GPU,
    ),
    **dict.fromkeys(
        _names(
            "_gradient_flow",
            "x__jacobian_singular_values__mutmut_17",
            "x__jacobian_singular_values__mutmut_20",
            "x_gradient_flow__mutmut_101",
            "x__module_flow__mutmut_109",
        ),
        "equivalent: autograd casts a grad_outputs of another floating dtype to the output's "
        "(and the norms are taken of its values cast to float64 either way)",
    ),
    **dict.fromkeys(
        _names(
            "_gradient_flow",
            "x__lipschitz__mutmut_12",
            "x__lipschitz__mutmut_16",
            "x__trace__mutmut_27",
        ),
        "equivalent: the residual branch is traced under no_grad, where no output requires "
        "grad, so no gradient hook is registered either way",
    ),
    "deeplimits.diagnostics._gradient_flow.x__units__mutmut_13": "equivalent: a None prefix is "
    "falsy like '': the same names",
    **dict.fromkeys(
        _names(
            "_gradient_flow",
            "x_gradient_flow__mutmut_133",
            "x_gradient_flow__mutmut_136",
            "x_gradient_flow__mutmut_138",
            "x_gradient_flow__mutmut_151",
            "x_gradient_flow__mutmut_155",
            "x_gradient_flow__mutmut_156",
            "x__module_flow__mutmut_95",
            "x__module_flow__mutmut_98",
            "x__module_flow__mutmut_99",
            "x__module_flow__mutmut_147",
            "x__module_flow__mutmut_150",
            "x__module_flow__mutmut_152",
        ),
        _STRICT,
    ),
    "deeplimits.diagnostics._gradient_flow.x_gradient_flow__mutmut_158": "equivalent: "
    "typing.cast does nothing at run time",
    **dict.fromkeys(
        _names("_gradient_flow", "x_gradient_flow__mutmut_195", "x_gradient_flow__mutmut_196"),
        "equivalent: unreachable, the chain check guarantees that y depends on x",
    ),
    **dict.fromkeys(
        _names(
            "_gradient_flow",
            "x__module_flow__mutmut_194",
            "x__module_flow__mutmut_215",
        ),
        _MSG,
    ),
    "deeplimits.diagnostics._gradient_flow.x__module_flow__mutmut_184": "equivalent: dividing "
    "by a float64 one is multiplying by it",
    **dict.fromkeys(
        _names(
            "_gradient_flow",
            "x_gradient_flow__mutmut_91",
            "x_gradient_flow__mutmut_94",
            "x_gradient_flow__mutmut_95",
            "x__module_flow__mutmut_80",
            "x__module_flow__mutmut_84",
            "x__module_flow__mutmut_86",
        ),
        "equivalent: that call frees only the graph between the loss and the output, which the "
        "gradient to x and the parameters does not use",
    ),
    **dict.fromkeys(
        _names(
            "_gradient_flow",
            "x_gradient_flow__mutmut_121",
            "x_gradient_flow__mutmut_125",
            "x_gradient_flow__mutmut_126",
        ),
        "equivalent: every parameter of a supported chain's layers is used",
    ),
    **dict.fromkeys(
        _names(
            "_gradient_flow",
            "x__module_flow__mutmut_7",
            "x__module_flow__mutmut_124",
            "x__module_flow__mutmut_242",
        ),
        "equivalent: recurse=None is falsy like False",
    ),
    "deeplimits.diagnostics._gradient_flow.x__module_flow__mutmut_125": "equivalent: the "
    "parameters reached recursively are each owned by a module in owners, and the dict keyed by "
    "id removes the duplicates: the same set",
    "deeplimits.diagnostics._gradient_flow.x__module_flow__mutmut_22": "equivalent: a call's "
    "order field is never read (rows follow the list's order)",
    "deeplimits.diagnostics._gradient_flow.xǁGradientFlowReportǁplot__mutmut_12": "equivalent: "
    "ax.plot's default x values are 0..n-1, which the layer indices are",
    **dict.fromkeys(
        _names(
            "_gradient_flow",
            "xǁGradientFlowReportǁrender__mutmut_6",
            "xǁGradientFlowReportǁrender__mutmut_9",
            "xǁGradientFlowReportǁrender__mutmut_10",
            "xǁGradientFlowReportǁrender__mutmut_11",
            "xǁGradientFlowReportǁrender__mutmut_14",
            "xǁGradientFlowReportǁrender__mutmut_15",
            "xǁGradientFlowReportǁrender__mutmut_17",
            "xǁGradientFlowReportǁrender__mutmut_18",
            "xǁGradientFlowReportǁrender__mutmut_19",
            "xǁGradientFlowReportǁrender__mutmut_20",
        ),
        "equivalent: with color_system=None into a StringIO there is no colour, and the "
        "summary has no markup: terminal, highlight and markup flags change nothing",
    ),
    # _paths
    "deeplimits.diagnostics._paths.x_count_paths__mutmut_16": "equivalent: the dense shortcut "
    "only saves time; the general sum gives the same count",
    **dict.fromkeys(
        _names(
            "_paths",
            "x_count_paths__mutmut_26",
            "x_count_paths__mutmut_29",
            "x_count_paths__mutmut_30",
        ),
        _STRICT,
    ),
    # _memory
    **dict.fromkeys(
        _names(
            "_memory",
            "x__key__mutmut_1",
            "x_cuda_peak_bytes__mutmut_1",
            "x_cuda_peak_bytes__mutmut_2",
        ),
        "gpu-only: all tensors on one device / a CUDA-only function",
    ),
    **dict.fromkeys(
        _names(
            "_memory",
            *(f"xǁSavedTensorsMeterǁ__exit____mutmut_{i}" for i in range(1, 7)),
        ),
        "equivalent: saved_tensors_hooks.__exit__ ignores its arguments",
    ),
    "deeplimits.diagnostics._memory.xǁSavedTensorsMeterǁ__init____mutmut_10": "equivalent: "
    "_hooks is set in __enter__ before any use",
    # ode/_controllers
    **dict.fromkeys(
        _ode("_controllers", *(f"x_as_times__mutmut_{i}" for i in (4, 5, 6, 7))),
        "equivalent: tolist() gives Python numbers from any device, and from a float32 or "
        "integer tensor the same numbers (float() converts them anyway)",
    ),
    **dict.fromkeys(
        _ode(
            "_controllers",
            "xǁPIDControllerǁ_exponents__mutmut_1",
            "xǁPIDControllerǁ_exponents__mutmut_2",
            "xǁPIDControllerǁ_exponents__mutmut_21",
        ),
        "equivalent: the cache of the exponents only saves their recomputation; a miss "
        "computes the same numbers",
    ),
    **dict.fromkeys(
        _ode(
            "_controllers",
            "xǁPIDControllerǁforced_times__mutmut_7",
            "xǁPIDControllerǁforced_times__mutmut_10",
        ),
        "equivalent: the direction d only signs comparisons with 0 and scales the sort key; "
        "2.0 or -2.0 give the same signs and order as 1.0 or -1.0",
    ),
    "deeplimits.ode._controllers.xǁPIDControllerǁforced_times__mutmut_8": "equivalent: for "
    "t_end == t0 no time lies strictly between them in either direction",
    # ode/_norm
    **dict.fromkeys(
        _ode("_norm", "x__zero__mutmut_1", "x__zero__mutmut_2", "x__zero__mutmut_3"),
        "equivalent: the cache of the 0-d zero only saves an allocation; a zero of another "
        "dtype (0-d) does not change the promoted result",
    ),
    **dict.fromkeys(
        _ode("_norm", "x__zero__mutmut_7", "x__zero__mutmut_10"),
        "equivalent: a float32 0-d zero does not change the dtype of the in-place addcmul_, "
        "and 0 * NaN/inf is NaN in any dtype",
    ),
    **dict.fromkeys(
        _ode("_norm", "x__zero__mutmut_8", "x__zero__mutmut_11", "xǁErrorNormǁrms__mutmut_10",
             "xǁErrorNormǁrms__mutmut_13"),
        _GPU,
    ),
    "deeplimits.ode._norm.xǁErrorNormǁratio__mutmut_38": "equivalent: guard * 0.0 is +-0 or "
    "NaN; subtracting it gives the same ratio (NaN stays NaN)",
    "deeplimits.ode._norm.xǁErrorNormǁscale__mutmut_2": "equivalent: normed(y) is y itself "
    "when norm_dims is None",
    **dict.fromkeys(
        _ode("_norm", "x_initial_step__mutmut_69", "x_initial_step__mutmut_141"), _TIE
    ),
    **dict.fromkeys(
        _ode("_norm", "x_initial_step__mutmut_102", "x_initial_step__mutmut_160"),
        "equivalent: clamp(max=tensor) is the elementwise minimum, as torch.minimum",
    ),
    "deeplimits.ode._norm.x_initial_step__mutmut_122": "equivalent: direction is +1.0 or -1.0, "
    "so h0 / direction = h0 * direction",
    # ode/_stepper
    **dict.fromkeys(
        _ode(
            "_stepper",
            "x__weighted_sum__mutmut_1",
            "x__weighted_sum__mutmut_2",
            "x__weighted_sum__mutmut_8",
        ),
        "equivalent: the in-place mul_ and the out-of-place product give the same values and "
        "gradients (the sum is a fresh tensor); the branch only saves an allocation",
    ),
    "deeplimits.ode._stepper.x_rk_step__mutmut_11": "equivalent: yi's start value is read only "
    "for a tableau with one stage that is FSAL, which cannot exist",
    "deeplimits.ode._stepper.x_rk_step__mutmut_44": "equivalent: an FSAL tableau's last stage "
    "is built from b_terms with the same operations, so combine() recomputes yi bit for bit",
    **dict.fromkeys(
        _ode("_stepper", "x_rk_step__mutmut_65", "x_rk_step__mutmut_66"),
        "equivalent: without the FSAL shortcut the last stage's input is built from its row, "
        "which equals b (checked on construction), and y_new again from b: the same values",
    ),
    # ode/_interp
    **dict.fromkeys(
        _ode(
            "_interp",
            "xǁDenseCacheǁcoef__mutmut_10",
            "xǁDenseCacheǁcoef__mutmut_13",
            "x_dense_eval__mutmut_17",
            "x_dense_eval__mutmut_20",
            "x_dense_eval__mutmut_26",
            "x_dense_eval__mutmut_30",
        ),
        _GPU,
    ),
    **dict.fromkeys(
        _ode("_interp", "x_dense_eval__mutmut_25", "x_dense_eval__mutmut_29"),
        "equivalent: integer exponents 1..P; theta ** exponent is promoted to theta's dtype",
    ),
    "deeplimits.ode._interp.x_dense_eval__mutmut_44": "equivalent: addmm broadcasts a (N,) "
    "input over the (m, N) product as it does a (1, N) one",
    # ode/_fixed_loop
    **dict.fromkeys(
        _ode(
            "_fixed_loop",
            "x__compiled_run__mutmut_8",
            "x__compiled_run__mutmut_11",
            "x__compiled_run__mutmut_24",
            "x__compiled_run__mutmut_27",
        ),
        _GPU,
    ),
    "deeplimits.ode._fixed_loop.x__uniform_run__mutmut_24": _TIE,
    **dict.fromkeys(
        _ode(
            "_fixed_loop",
            "x_solve_fixed__mutmut_214",
            "x_solve_fixed__mutmut_215",
            "x_solve_fixed__mutmut_219",
        ),
        "equivalent: a step with no output time in (t, t1] takes the other branch to the same "
        "record and no output (emit_outputs emits nothing); j < n holds while steps remain",
    ),
    "deeplimits.ode._fixed_loop.x_build_grid__mutmut_9": "equivalent: t[-1] == t[0] cannot "
    "happen, output times are strictly monotonic (checked by the dispatcher)",
    "deeplimits.ode._fixed_loop.x_solve_fixed__mutmut_270": "equivalent: _no_dense is never "
    "called (no output time lies strictly inside such a step); None is not called either",
    **dict.fromkeys(
        _ode(
            "_fixed_loop",
            "x_solve_fixed__mutmut_14",
            "x_solve_fixed__mutmut_15",
            "x_solve_fixed__mutmut_17",
            "x_solve_fixed__mutmut_20",
        ),
        "equivalent: the direction d only signs comparisons; ts is strictly monotonic with at "
        "least two times here (checked by the dispatcher), so ts[1] gives the same sign and "
        "ts[-1] == ts[0] cannot happen",
    ),
    **dict.fromkeys(
        _ode(
            "_fixed_loop",
            "x_solve_fixed__mutmut_80",
            "x_solve_fixed__mutmut_81",
            "x_solve_fixed__mutmut_105",
        ),
        "equivalent: unreachable, j < n holds while steps remain (the last output time is the "
        "grid's end)",
    ),
    "deeplimits.ode._fixed_loop.x__uniform_run__mutmut_31": "equivalent: skipping an output "
    "time that a step ends at exactly returns one step later with k - i, the same count",
    **dict.fromkeys(
        _ode(
            "_fixed_loop",
            "x__check_pending__mutmut_6",
            "x__check_pending__mutmut_9",
            "x__check_pending__mutmut_10",
        ),
        _STRICT,
    ),
    # ode/_tableaux
    **dict.fromkeys(
        _ode(
            "_tableaux",
            "x__bosh3__mutmut_71",
            "x__bosh3__mutmut_74",
            "x__bosh3__mutmut_75",
            "x__dopri5__mutmut_179",
            "x__dopri5__mutmut_182",
            "x__dopri5__mutmut_183",
            "x__dopri8__mutmut_443",
            "x__dopri8__mutmut_446",
            "x__dopri8__mutmut_447",
            "x__adaptive_heun__mutmut_17",
            "x__adaptive_heun__mutmut_20",
            "x__adaptive_heun__mutmut_21",
            "x__fehlberg2__mutmut_30",
            "x__fehlberg2__mutmut_33",
            "x__fehlberg2__mutmut_34",
            "x__hermite_dense__mutmut_20",
            "x__hermite_dense__mutmut_23",
            "x__hermite_dense__mutmut_24",
            "x__hermite_dense__mutmut_35",
            "x__hermite_dense__mutmut_38",
            "x__hermite_dense__mutmut_39",
            "x__esdirk__mutmut_44",
            "x__esdirk__mutmut_47",
            "x__esdirk__mutmut_52",
            "xǁButcherTableauǁ__post_init____mutmut_90",
            "xǁButcherTableauǁ__post_init____mutmut_93",
            "xǁButcherTableauǁ__post_init____mutmut_98",
        ),
        _STRICT,
    ),
    **dict.fromkeys(
        _ode(
            "_tableaux",
            "x__stiffly_accurate__mutmut_18",
            "x__stiffly_accurate__mutmut_21",
            "x__stiffly_accurate__mutmut_22",
        ),
        "equivalent: zip(strict=...) after len(a_last) == len(b) was checked in the same `and`",
    ),
    **dict.fromkeys(
        _ode("_tableaux", "x__tsit5__mutmut_116", "x__tsit5__mutmut_120"),
        "equivalent: the interpolant's polynomials have degree 4; a sixth zero coefficient, "
        "or a slice past the end of five, gives the same four powers",
    ),
    "deeplimits.ode._tableaux.x__implicit_euler__mutmut_5": "equivalent: embedded=None is "
    "falsy like False",
    **dict.fromkeys(
        _ode(
            "_tableaux",
            "xǁButcherTableauǁ_check_order__mutmut_17",
            "xǁImplicitTableauǁ_check_order__mutmut_16",
            "x__r_inf__mutmut_16",
            "x__esdirk__mutmut_36",
            "x__stiffly_accurate__mutmut_9",
            "x__stiffly_accurate__mutmut_14",
            "x__imaginary_axis_peak__mutmut_35",
            "x__imaginary_axis_peak__mutmut_98",
            "xǁButcherTableauǁ__post_init____mutmut_17",
            "xǁButcherTableauǁ__post_init____mutmut_25",
            "xǁButcherTableauǁ__post_init____mutmut_53",
            "xǁButcherTableauǁ__post_init____mutmut_86",
            "xǁButcherTableauǁ__post_init____mutmut_122",
            "xǁButcherTableauǁ__post_init____mutmut_131",
            "xǁImplicitTableauǁ__post_init____mutmut_20",
            "xǁImplicitTableauǁ__post_init____mutmut_46",
            "xǁImplicitTableauǁ__post_init____mutmut_74",
            "xǁImplicitTableauǁ__post_init____mutmut_121",
            "xǁImplicitTableauǁ__post_init____mutmut_123",
            "xǁImplicitTableauǁ__post_init____mutmut_130",
            "xǁImplicitTableauǁ__post_init____mutmut_152",
        ),
        _TIE,
    ),
    "deeplimits.ode._tableaux.x_order_condition_residuals__mutmut_5": "equivalent: there is "
    "no rooted tree with 0 nodes (_trees(0) is empty), so starting at n = 0 adds no residual",
    "deeplimits.ode._tableaux.x__stage_weights__mutmut_3": "equivalent: a is square",
    **dict.fromkeys(
        _ode(
            "_tableaux",
            "xǁButcherTableauǁfrom_lists__mutmut_2",
            "xǁImplicitTableauǁfrom_lists__mutmut_2",
        ),
        "equivalent: dense_order is documentation only (no code reads it); the default is "
        "used only without an interpolant",
    ),
    **dict.fromkeys(
        _ode(
            "_tableaux",
            "xǁImplicitTableauǁfrom_lists__mutmut_25",
            "xǁImplicitTableauǁfrom_lists__mutmut_26",
        ),
        "equivalent: for order 3 both branches give 3",
    ),
    "deeplimits.ode._tableaux.x__r_inf__mutmut_20": "equivalent: float('INF') is inf",
    **dict.fromkeys(
        _ode(
            "_tableaux",
            "xǁButcherTableauǁ__post_init____mutmut_6",
            "xǁButcherTableauǁ__post_init____mutmut_49",
            "xǁButcherTableauǁ__post_init____mutmut_100",
            "xǁButcherTableauǁ__post_init____mutmut_125",
            "xǁButcherTableauǁ__post_init____mutmut_134",
            "xǁImplicitTableauǁ__post_init____mutmut_6",
            "xǁImplicitTableauǁ__post_init____mutmut_7",
            "xǁImplicitTableauǁ__post_init____mutmut_70",
            "xǁImplicitTableauǁ__post_init____mutmut_139",
            "xǁImplicitTableauǁ__post_init____mutmut_155",
        ),
        _MSG,
    ),
    **dict.fromkeys(
        _ode(
            "_tableaux",
            "xǁButcherTableauǁ__post_init____mutmut_170",
            "xǁButcherTableauǁ__post_init____mutmut_174",
        ),
        "equivalent: without the FSAL shortcut the last host stage uses its own row, which "
        "equals b (checked just above): the same terms",
    ),
    **dict.fromkeys(
        _ode(
            "_tableaux",
            "xǁButcherTableauǁ__post_init____mutmut_58",
            "xǁImplicitTableauǁ__post_init____mutmut_79",
        ),
        "equivalent: b + b_err = 2b - b_hat, whose residuals are -(those of b_hat) once b's "
        "vanish (b is checked first, to a higher order): the same check",
    ),
    **dict.fromkeys(
        _ode(
            "_tableaux",
            "x__kvaerno3__mutmut_12",
            "x__kvaerno3__mutmut_13",
            "x__kvaerno3__mutmut_14",
        ),
        "equivalent: the cubic's roots are 0.159, 0.436 and 2.405: none at 0.4 or 0.5 or in "
        "(0.5, 1.5), so the same root is picked",
    ),
    # _imaginary_axis_peak: its polynomial only places the points where R is evaluated
    "deeplimits.ode._tableaux.x__imaginary_axis_peak__mutmut_8": "equivalent: s + 2 roots of "
    "unity for a polynomial of degree <= s give the same coefficients and one more that is 0 "
    "up to round-off (trimmed)",
    "deeplimits.ode._tableaux.x__imaginary_axis_peak__mutmut_31": "equivalent: P's "
    "coefficients scaled by n^2 scale U and the critical-point polynomial: the same roots, "
    "the same relative trimming",
    "deeplimits.ode._tableaux.x__imaginary_axis_peak__mutmut_42": "equivalent: dividing by "
    "i^k gives P(-i eta), whose modulus equals |P(i eta)| (real coefficients)",
    **dict.fromkeys(
        _ode("_tableaux", "x__imaginary_axis_peak__mutmut_72",
             "x__imaginary_axis_peak__mutmut_74"),
        "equivalent: trimming leading zeros too only divides the critical-point polynomial by "
        "a power of w, removing roots at w = 0, and y = 0 is always a candidate",
    ),
    "deeplimits.ode._tableaux.x__imaginary_axis_peak__mutmut_79": "equivalent: polyroots of "
    "a constant is empty, as the else branch",
    "deeplimits.ode._tableaux.x__imaginary_axis_peak__mutmut_99": "equivalent: the cut-off "
    "for candidate points moved by one part in 1e8 (beyond it R is within O(1/y) of its "
    "limit, which is a candidate)",
    "deeplimits.ode._interp.xǁDenseCacheǁ__init____mutmut_1": "equivalent: DenseCache.tableau "
    "is never read (the coefficients come from rows)",
    # ode/_host_loop
    "deeplimits.ode._host_loop.x_solve_adaptive_host__mutmut_11": "equivalent: t_end == t[0] "
    "cannot happen, output times are strictly monotonic (checked by the dispatcher)",
    **dict.fromkeys(
        _ode("_host_loop", "x_solve_adaptive_host__mutmut_194",
             "x_solve_adaptive_host__mutmut_350"),
        _TIE,
    ),
    **dict.fromkeys(
        _ode("_host_loop", "x_solve_adaptive_host__mutmut_314",
             "x_solve_adaptive_host__mutmut_316"),
        "equivalent: the last stop is t_end, where the loop ends (its output is the last); "
        "advancing past it is never read",
    ),
    "deeplimits.ode._host_loop.x_solve_adaptive_host__mutmut_235": "equivalent: an output up "
    "to 1 beyond t1 taken for inside: no extra evaluation (the inner test is strict) and "
    "emit_outputs emits only outputs in (t, t1]",
    **dict.fromkeys(
        _ode(
            "_host_loop",
            "x_solve_adaptive_host__mutmut_86",
            "x_solve_adaptive_host__mutmut_87",
        ),
        "equivalent: the scale and ratio are read as floats (detached) either way; no_grad "
        "only spares recording them when autograd is on",
    ),
    **dict.fromkeys(
        _ode(
            "_host_loop",
            "x_solve_adaptive_host__mutmut_99",
            "x_solve_adaptive_host__mutmut_100",
        ),
        "equivalent: newton_mark is set at the first NaN/inf trial of a run, before any read; "
        "its initial value is never read",
    ),
    # ode/_time_grad
    **dict.fromkeys(
        _ode(
            "_time_grad",
            "xǁ_StartTimeǁbackward__mutmut_7",
            "xǁ_StartTimeǁbackward__mutmut_10",
            "xǁ_OutputTimesǁbackward__mutmut_7",
            "xǁ_OutputTimesǁbackward__mutmut_10",
        ),
        _GPU,
    ),
    **dict.fromkeys(
        _ode("_time_grad", "xǁ_StartTimeǁbackward__mutmut_2", "xǁ_OutputTimesǁbackward__mutmut_2"),
        "equivalent: unreachable, these functions are applied only when t requires grad, so "
        "needs_input_grad[3] is True and gt is always set",
    ),
    "deeplimits.ode._time_grad.x_needs_time_grads__mutmut_1": "equivalent: the identity "
    "functions are also applied when t does not require grad; they then return None for t",
    # ode/_reversible
    **dict.fromkeys(
        _ode(
            "_reversible",
            "x__merge_grid__mutmut_4",
            "x__merge_grid__mutmut_5",
            "x__merge_grid__mutmut_7",
            "x__merge_grid__mutmut_10",
        ),
        "equivalent: the direction d only signs the sort key; ts is strictly monotonic with "
        "at least two times here, so ts[1] gives the same sign and ts[-1] == ts[0] cannot happen",
    ),
    "deeplimits.ode._reversible.x__merge_grid__mutmut_32": _TIE,
    **dict.fromkeys(
        _ode("_reversible", "x_reversible_heun_solve__mutmut_48",
             "x_reversible_heun_solve__mutmut_49"),
        "equivalent: the backward wrapper's first-output check passes (same func and shapes "
        "as the forward's); skipping it only saves that check",
    ),
    **dict.fromkeys(
        _ode(
            "_reversible",
            "xǁ_ReversibleHeunFnǁbackward__mutmut_28",
            "xǁ_ReversibleHeunFnǁbackward__mutmut_31",
            "xǁ_ReversibleHeunFnǁbackward__mutmut_33",
            "xǁ_ReversibleHeunFnǁbackward__mutmut_160",
            "xǁ_ReversibleHeunFnǁbackward__mutmut_163",
            "xǁ_ReversibleHeunFnǁbackward__mutmut_164",
        ),
        _STRICT,
    ),
    # ode/_device_loop
    **dict.fromkeys(
        _ode(
            "_device_loop",
            "x__forced_times__mutmut_11",
            "x__forced_times__mutmut_14",
            "x__forced_times__mutmut_17",
            "x__forced_times__mutmut_19",
            "x_solve_adaptive_device__mutmut_71",
            "x_solve_adaptive_device__mutmut_118",
            "x_solve_adaptive_device__mutmut_127",
            "x_solve_adaptive_device__mutmut_134",
            "x_solve_adaptive_device__mutmut_187",
        ),
        _GPU,
    ),
    "deeplimits.ode._device_loop.x_solve_adaptive_device__mutmut_1": "equivalent: the "
    "default of backward; its one caller (_dispatch.solve_flat) always passes it",
    **dict.fromkeys(
        _ode("_device_loop", "x_solve_adaptive_device__mutmut_16",
             "x_solve_adaptive_device__mutmut_18"),
        "equivalent: R = 0 only for an empty per-sample batch, which fails anyway "
        "(IndexError before the loop runs); only which error differs",
    ),
    **dict.fromkeys(
        _ode("_device_loop", "x_solve_adaptive_device__mutmut_32",
             "x_solve_adaptive_device__mutmut_34"),
        "equivalent: the output times are strictly monotonic with at least two of them here "
        "(checked before), so ts[1] gives the same direction and ts[-1] == ts[0] cannot happen",
    ),
    "deeplimits.ode._device_loop.x_solve_adaptive_device__mutmut_91": "equivalent: "
    "cache_key's graph flag None is falsy like False (the compiled key, no parameter "
    "addresses)",
    **dict.fromkeys(
        _ode("_device_loop", "x_solve_adaptive_device__mutmut_275",
             "x_solve_adaptive_device__mutmut_372"),
        "equivalent: the direction d is +1.0 or -1.0, never 0",
    ),
    **dict.fromkeys(
        _ode(
            "_device_loop",
            "x_solve_adaptive_device__mutmut_416",
            "x_solve_adaptive_device__mutmut_431",
            "x_solve_adaptive_device__mutmut_432",
            "x_solve_adaptive_device__mutmut_434",
        ),
        "equivalent: which outputs are cloned from the graph's static buffers; every caller "
        "(_dispatch.solve, the adjoint's forward) stacks the outputs into a new tensor before "
        "the next replay, and the adjoint's backward solves never use graphs",
    ),
    # ode/_batched_step
    **dict.fromkeys(
        _ode(
            "_batched_step",
            "x_loop_constants__mutmut_3",
            "x_loop_constants__mutmut_10",
            "x_loop_constants__mutmut_13",
            "x_loop_constants__mutmut_17",
            "x_loop_constants__mutmut_21",
            "x_loop_constants__mutmut_27",
            "x_loop_constants__mutmut_30",
            "x_start__mutmut_48",
            "x_start__mutmut_52",
            "x_start__mutmut_82",
            "x_start__mutmut_85",
            "x_start__mutmut_90",
            "x_start__mutmut_93",
            "x_start__mutmut_98",
            "x_start__mutmut_101",
        ),
        _GPU,
    ),
    **dict.fromkeys(
        _ode("_batched_step", "x_attempt__mutmut_47", "x_attempt__mutmut_212"), _TIE
    ),
    "deeplimits.ode._batched_step.x_attempt__mutmut_79": "equivalent: with two output "
    "times the only one after the start is the final state, which the driver writes over "
    "whatever the interpolation put there",
    **dict.fromkeys(
        _ode(
            "_batched_step",
            "x__next_stop__mutmut_20",
            "x__next_stop__mutmut_37",
            "x_step_plan__mutmut_10",
            "x_step_plan__mutmut_13",
            "x_step_plan__mutmut_20",
            "x_flag_values__mutmut_24",
        ),
        "equivalent: the direction d is +1.0 or -1.0, so dividing by it is multiplying by it",
    ),
    **dict.fromkeys(
        _ode("_batched_step", "x__emit__mutmut_48", "x__emit__mutmut_49"),
        "equivalent: theta outside the step is masked out by in_step; any finite value there "
        "gives the same outputs and zero (not NaN) gradients",
    ),
    **dict.fromkeys(
        _ode("_batched_step", "x_loop_constants__mutmut_5", "x_loop_constants__mutmut_31"),
        "equivalent: the constants are then built again at every solve (the cache only saves "
        "those host-to-device copies); a graph keeps its own loop's tensors alive",
    ),
    **dict.fromkeys(
        _ode("_batched_step", "x_row_func__mutmut_8", "x_row_func__mutmut_11"),
        "equivalent: R = 0 only for an empty per-sample batch, which fails anyway "
        "(IndexError); only which error differs",
    ),
    **dict.fromkeys(
        _ode("_batched_step", "x_start__mutmut_16", "x_start__mutmut_17",
             "x_start__mutmut_30", "x_start__mutmut_31"),
        "equivalent: reshape(1) then expand(R, 1) gives the same (R, 1) tensor as "
        "reshape(1, 1) then expand(R, 1)",
    ),
    "deeplimits.ode._batched_step.x_flag_values__mutmut_22": "equivalent: steps left 1 "
    "instead of 0 for finished rows; the block size is max(1, ceil(max over rows)) and the "
    "loop stops when every row is done, so the blocks are the same",
    **dict.fromkeys(
        _ode("_batched_step", "x_loop_constants__mutmut_16", "x_loop_constants__mutmut_20"),
        "equivalent: the powers 1..P as int64; theta.pow promotes them to theta's dtype, "
        "bit for bit the same powers",
    ),
    "deeplimits.ode._batched_step.x_attempt__mutmut_180": "equivalent: without forced "
    "times _next_stop returns t_end itself as the stop, so stop == t_end always holds",
    "deeplimits.ode._batched_step.x__emit__mutmut_25": "equivalent: an output time equal "
    "to the step's start gets theta = 0, i.e. Y itself, the value already written there "
    "(the start, or the previous step's end state)",
    "deeplimits.ode._batched_step.x__emit__mutmut_30": "equivalent: output times up to 1 "
    "past a step's end get extrapolated values, which the accepted step containing them "
    "writes over later (gradients through where: zero for the discarded values)",
    "deeplimits.ode._batched_step.x__emit__mutmut_47": "equivalent: the guard against "
    "h = 0 inside theta is redundant: theta is computed without grad and masked to 0 outside "
    "the step, where every h = 0 row lies, so the division's inf/NaN never reaches an output "
    "or a gradient (test_per_sample_backprop_is_finite_after_a_row_finishes_first)",
    **dict.fromkeys(
        _ode("_batched_step", "x_flag_values__mutmut_28", "x_flag_values__mutmut_29",
             "x_flag_values__mutmut_30"),
        "equivalent: .to(None) leaves the bool flag as is; torch.stack promotes it to the "
        "state's dtype with the others (the same 0.0/1.0)",
    ),
    # ode/_adjoint
    **dict.fromkeys(
        _ode(
            "_adjoint",
            "xǁ_AdjointFnǁbackward__mutmut_43",
            "xǁ_AdjointFnǁbackward__mutmut_46",
            "xǁ_AdjointFnǁbackward__mutmut_48",
            "xǁ_AdjointFnǁbackward__mutmut_203",
            "xǁ_AdjointFnǁbackward__mutmut_206",
            "xǁ_AdjointFnǁbackward__mutmut_208",
            "x__backward_norm__mutmut_19",
            "x__backward_norm__mutmut_22",
            "x__backward_norm__mutmut_26",
        ),
        _STRICT,
    ),
    **dict.fromkeys(
        _ode(
            "_adjoint",
            "xǁ_AdjointFnǁbackward__mutmut_54",
            "xǁ_AdjointFnǁbackward__mutmut_57",
            "xǁ_AdjointFnǁbackward__mutmut_75",
            "xǁ_AdjointFnǁbackward__mutmut_79",
            "xǁ_AdjointFnǁbackward__mutmut_107",
            "xǁ_AdjointFnǁbackward__mutmut_110",
            "xǁ_AdjointFnǁbackward__mutmut_119",
            "xǁ_AdjointFnǁbackward__mutmut_122",
            "x__backward_norm__mutmut_36",
            "x__backward_norm__mutmut_39",
        ),
        _GPU,
    ),
    **dict.fromkeys(
        _ode("_adjoint", "xǁ_AdjointFnǁbackward__mutmut_53",
             "xǁ_AdjointFnǁbackward__mutmut_56"),
        "equivalent: an unused parameter's zero channel in float32 is promoted exactly to the "
        "state's dtype by the torch.cat right after",
    ),
    **dict.fromkeys(
        _ode("_adjoint", "xǁ_AdjointFnǁbackward__mutmut_106",
             "xǁ_AdjointFnǁbackward__mutmut_109"),
        "equivalent: the initial zero a_theta in float32 is promoted exactly by the torch.cat of "
        "the first interval (and autograd casts a gradient to its input's dtype)",
    ),
    "deeplimits.ode._adjoint.x__backward_norm__mutmut_41": "equivalent: typing.cast returns "
    "its second argument whatever the first",
    "deeplimits.ode._adjoint.xǁ_AdjointFnǁbackward__mutmut_172": "equivalent: solve_flat "
    "returns the states at the two times [t_i, t_(i-1)]: index 1 is index -1",
    **dict.fromkeys(
        _ode("_adjoint", "x_odeint_adjoint__mutmut_72", "x_odeint_adjoint__mutmut_73"),
        "equivalent: reversible_heun is fixed-step; its solve never reads rtol or atol",
    ),
    **dict.fromkeys(
        _ode("_adjoint", "x_odeint_adjoint__mutmut_199", "x_odeint_adjoint__mutmut_200"),
        "equivalent: the backward wrapper's first-output check passes (same func and shapes "
        "as the forward's); skipping it only saves that check",
    ),
    **dict.fromkeys(
        _ode(
            "_adjoint",
            "x_odeint_adjoint__mutmut_238",
            "x_odeint_adjoint__mutmut_239",
            "x_odeint_adjoint__mutmut_240",
            "x_odeint_adjoint__mutmut_241",
        ),
        "equivalent: t enters _AdjointFn only to receive its gradient, which autograd casts to "
        "t's dtype itself (t.to(None) is a no-op)",
    ),
    **dict.fromkeys(
        _ode("_adjoint", "x__adjoint_options__mutmut_11", "x__adjoint_options__mutmut_38",
             "x__adjoint_options__mutmut_48"),
        "equivalent: split_options' execution argument defaults to None",
    ),
    **dict.fromkeys(
        _ode(
            "_adjoint",
            "x__adjoint_options__mutmut_45",
            "x__adjoint_options__mutmut_49",
            "x__adjoint_options__mutmut_50",
            "x__adjoint_options__mutmut_51",
        ),
        "equivalent: split_options reads `what` only for a dict of options; this branch passes "
        "an options object",
    ),
    # ode/_scipy
    **dict.fromkeys(
        _ode("_scipy", *(f"x_solve_scipy__mutmut_{i}" for i in (5, 7, 16, 18, 26, 28, 77, 79))),
        _GPU,
    ),
    **dict.fromkeys(
        _ode("_scipy", "x_solve_scipy__mutmut_17", "x_solve_scipy__mutmut_19"),
        "equivalent: f's output left in the state's dtype is converted to float64 exactly by "
        "scipy's arithmetic, the same values",
    ),
    **dict.fromkeys(
        _ode("_scipy", "x_solve_scipy__mutmut_27", "x_solve_scipy__mutmut_29"),
        "equivalent: solve_ivp casts a float32 y0 to float64 itself (exact)",
    ),
    **dict.fromkeys(
        _ode("_scipy", *(f"x_solve_scipy__mutmut_{i}" for i in (35, 40, 41, 59))),
        "equivalent: min_step not passed to LSODA: scipy's LSODA gave the same evaluations and "
        "values with min_step 0, 0.01, 0.05, 0.3, 0.6 on y' = -50 y and y'' = -400 y (measured)",
    ),
    "deeplimits.ode._scipy.x_solve_scipy__mutmut_1": "equivalent: the default of backward; "
    "its only caller (_dispatch.solve_flat) passes it",
    "deeplimits.ode._scipy.x_solve_scipy__mutmut_71": "equivalent: at least two output times "
    "reach solve_scipy (_dispatch returns a single time's y0 first), so len(sol.t) - 1 >= 1",
    "deeplimits.ode._adjoint.x__backward_norm__mutmut_68": "equivalent: every part is in x's "
    "dtype already (the forward norms converted by as_tensor, the parameter RMS computed from "
    "slices of x), so .to(None) leaves them as they are",
    # experiments' verdict functions
    **dict.fromkeys(
        _names(
            "expressivity", "x__random_line_fit__mutmut_3", "x__random_line_fit__mutmut_5",
            package="experiments",
        ),
        "equivalent: integer neuron counts are promoted to float64 by np.log and the division "
        "that are their only uses",
    ),
    "deeplimits.experiments.continuity.x_continuity_checks__mutmut_14": "equivalent: with no "
    "fit with a transition the minimum of δ·L is NaN, so the next condition is False anyway",
    "deeplimits.experiments.continuity.x_continuity_checks__mutmut_15": "equivalent: with one "
    "fit with a transition δ_last is that δ or NaN, never below δ_first: False anyway",
    "deeplimits.experiments.continuity.x_continuity_checks__mutmut_17": "equivalent: jump is the "
    "constant 1.0 (0.8 * 1 = 0.8 / 1)",
    # diagnostics/_graph_lipschitz (names of the source with the Tensor.div rule)
    **dict.fromkeys(
        _names(
            "_graph_lipschitz",
            "x__adaptive_windows_per_element__mutmut_22",
            "x__adaptive_windows_per_element__mutmut_24",
            "x__adaptive_windows_per_element__mutmut_25",
            "x__windows_per_element__mutmut_42",
            "x__windows_per_element__mutmut_44",
            "x__windows_per_element__mutmut_45",
        ),
        "equivalent: max(counts, default=...) with counts empty only for a zero-length axis, which "
        "torch's pooling refuses before the rule runs",
    ),
    _names("_graph_lipschitz", "x__windows_per_element__mutmut_28")[0]:
        "equivalent: n_out <= 0 is an empty pooling output, which torch refuses before the "
        "rule runs",
    **dict.fromkeys(
        _names(
            "_graph_lipschitz",
            "x__maxpool_lipschitz__mutmut_24",
            "x__maxpool_lipschitz__mutmut_27",
            "x__maxpool_lipschitz__mutmut_28",
            "x__maxpool_lipschitz__mutmut_67",
            "x__maxpool_lipschitz__mutmut_73",
            "x__maxpool_lipschitz__mutmut_74",
        ),
        _STRICT,
    ),
    **dict.fromkeys(
        _names(
            "_graph_lipschitz",
            "xǁ_Bounderǁ_module__mutmut_115",
            "xǁ_Bounderǁ_module__mutmut_118",
            "xǁ_Bounderǁ_module__mutmut_121",
        ),
        "equivalent: getattr's default: every max-pooling module has return_indices",
    ),
    **dict.fromkeys(
        _names(
            "_graph_lipschitz",
            "xǁ_Bounderǁ_bound__mutmut_10",
            "xǁ_Bounderǁ_bound__mutmut_11",
        ),
        "equivalent: a get_attr node has no arguments, so the general path gives the same (nan, 0)",
    ),
    **dict.fromkeys(
        _names(
            "_graph_lipschitz",
            "xǁ_Bounderǁ_bound__mutmut_22",
            "xǁ_Bounderǁ_bound__mutmut_24",
            "xǁ_Bounderǁ_bound__mutmut_25",
            "xǁ_Bounderǁ_in__mutmut_3",
            "xǁ_Bounderǁ_in__mutmut_5",
            "xǁ_Bounderǁ_in__mutmut_6",
        ),
        "equivalent: the default of lip.get is never used: every node in an argument ran "
        "before (graph order) and got its lip, or the run stopped",
    ),
    **dict.fromkeys(
        _names(
            "_graph_lipschitz",
            "xǁ_Bounderǁ__init____mutmut_3",
            "xǁ_Bounderǁ__init____mutmut_4",
        ),
        "equivalent: lipschitz_graph sets bounder.wrapped before the run",
    ),
    _names("_graph_lipschitz", "xǁ_Stopǁ__init____mutmut_1")[0]:
        "equivalent: _Stop's message is never read (caught in lipschitz_graph, its attributes "
        "used)",
    **dict.fromkeys(
        _names(
            "_graph_lipschitz",
            "x__fname__mutmut_3",
            "x__fname__mutmut_6",
            "x__fname__mutmut_9",
        ),
        "equivalent: every call_function target fx records (torch functions, operator.*, getattr, "
        "wrapped Python functions) has __name__; the fallback is never used",
    ),
    **dict.fromkeys(
        _names(
            "_graph_lipschitz",
            "xǁ_Bounderǁ_label__mutmut_14",
            "xǁ_Bounderǁrun_node__mutmut_47",
            "xǁ_Bounderǁrun_node__mutmut_51",
        ),
        "equivalent: _fname of a str target is the str itself (str has no __name__)",
    ),
    **dict.fromkeys(
        _names(
            "_graph_lipschitz",
            "xǁ_Bounderǁ_method__mutmut_76",
            "xǁ_Bounderǁ_function__mutmut_33",
        ),
        "equivalent: matmul=None is falsy like False (only `if matmul` / `if not matmul` read it)",
    ),
    _names("_graph_lipschitz", "xǁ_Bounderǁ_function__mutmut_107")[0]:
        "equivalent: fx records F.elu/F.leaky_relu with their parameters as keywords (their "
        "__torch_function__ dispatch), so the activation lambdas never read positional extras",
    **dict.fromkeys(
        _names(
            "_graph_lipschitz",
            "xǁ_Bounderǁ_function__mutmut_112",
            "xǁ_Bounderǁ_function__mutmut_114",
            "xǁ_Bounderǁ_function__mutmut_115",
            "xǁ_Bounderǁ_function__mutmut_116",
            "xǁ_Bounderǁ_function__mutmut_118",
            "xǁ_Bounderǁ_function__mutmut_120",
            "xǁ_Bounderǁ_function__mutmut_123",
            "xǁ_Bounderǁ_function__mutmut_125",
            "xǁ_Bounderǁ_function__mutmut_127",
            "xǁ_Bounderǁ_function__mutmut_129",
            "xǁ_Bounderǁ_function__mutmut_131",
            "xǁ_Bounderǁ_function__mutmut_133",
            "xǁ_Bounderǁ_function__mutmut_136",
        ),
        "equivalent: fx records F.dropout with p, training and inplace always as keywords, so "
        "the positional branch and the defaults are never used",
    ),
    **dict.fromkeys(
        _names(
            "_graph_lipschitz",
            "xǁ_Bounderǁ_spread__mutmut_5",
            "xǁ_Bounderǁ_spread__mutmut_6",
        ),
        "equivalent: an empty operand broadcasts only to an empty output, and an operand as large "
        "as the output spreads by sqrt(1) = 1 either way",
    ),
    **dict.fromkeys(
        _names(
            "_graph_lipschitz",
            "x_lipschitz_graph__mutmut_22",
            "x_lipschitz_graph__mutmut_25",
        ),
        "equivalent: _Tracer.is_leaf_module does not read the qualified name",
    ),
    _names("_graph_lipschitz", "x_lipschitz_graph__mutmut_59")[0]:
        "equivalent: the fallback name is used only when there are no placeholders to compare",
    _names("_graph_lipschitz", "x_lipschitz_graph__mutmut_77")[0]:
        "equivalent: fx's Interpreter itself falls back to a placeholder's default (p.args[0])",
    _names("_graph_lipschitz", "x_lipschitz_graph__mutmut_74")[0]: _GPU,
    # ode/_newton
    **dict.fromkeys(
        _ode("_newton", "xǁIterationMatrixǁ__init____mutmut_7",
             "xǁIterationMatrixǁ__init____mutmut_10"),
        _GPU,
    ),
    _ode("_newton", "x__adjoint_solve__mutmut_1")[0]:
        "equivalent: 31 refinement iterations instead of 30; one that has not converged "
        "falls back to the direct solve with J(z), the same u to round-off",
    _ode("_newton", "x__adjoint_solve__mutmut_16")[0]:
        "equivalent: a refinement tolerance of 101 instead of 100 eps |g|: u is the exact "
        "solution to round-off either way (refined or solved directly)",
    _ode("_newton", "x__adjoint_solve__mutmut_46")[0]: _TIE,
    _ode("_newton", "x__adjoint_solve__mutmut_48")[0]: _TIE,
    _ode("_newton", "x__adjoint_solve__mutmut_58")[0]:
        "equivalent: the fallback's Jacobian as one full matrix instead of per-sample blocks "
        "(batched=None): the same M^-T g (the off-block entries are zero)",
    _ode("_newton", "x__stage_solve__mutmut_21")[0]:
        "equivalent: full Newton's Jacobian as one full matrix instead of per-sample blocks "
        "(batched=None): the same updates (the off-block entries are zero)",
    **dict.fromkeys(
        _ode("_newton", "x__rows_by_autograd__mutmut_33", "x__rows_by_autograd__mutmut_34"),
        "equivalent: the graph is also retained after the last reverse pass (memory only)",
    ),
    _ode("_newton", "xǁIterationMatrixǁ_failure__mutmut_5")[0]:
        "equivalent: flatten(2) of (B, d, d) blocks then all(1) gives (B, d); nonzero()[0, 0] "
        "and any() still name the first bad sample",
    **dict.fromkeys(
        _ode("_newton", "xǁIterationMatrixǁ_failure__mutmut_26",
             "xǁIterationMatrixǁ_failure__mutmut_31"),
        "equivalent: a 1-d state's per_sample becomes 1 (prod of an empty shape) instead of "
        "0; entry // 1 is the entry, as before",
    ),
    **dict.fromkeys(
        _ode("_newton", "x__stage_solve__mutmut_71", "x__stage_solve__mutmut_76",
             "x__stage_solve__mutmut_86"),
        _TIE,
    ),
    _ode("_newton", "x__stage_solve__mutmut_4")[0]:
        "equivalent: an update below 101 instead of 100 eps counts as round-off: the Z "
        "returned differs from one more iteration's by that update, at round-off",
    _ode("_newton", "x_esdirk_step__mutmut_100")[0]:
        "equivalent: the full-Newton fallback's starting matrix None: refresh=True replaces "
        "it before its first use (max_iters >= 1 is validated)",
    _ode("_newton", "x_esdirk_step__mutmut_156")[0]:
        "equivalent: y1 by the weights b for a stiffly accurate tableau too: b = a[-1] and "
        "k_last = (Z - psi) / (h gamma), so y + h sum(b k) is the last stage Z to round-off",
    _ode("_newton", "x_esdirk_step__mutmut_39")[0]:
        "equivalent: z's initial value None: a tableau has >= 2 stages (validated), so the "
        "stage loop runs and sets z (or returns) before y1 reads it",
    **dict.fromkeys(
        _ode("_newton", "xǁIterationMatrixǁ__init____mutmut_2",
             "xǁIterationMatrixǁ__init____mutmut_3"),
        "equivalent: jac is square ((N, N) or (B, d, d)): shape[1] and shape[-2] are its "
        "shape[-1]",
    ),
    # ode/_adams
    **dict.fromkeys(
        _ode("_adams", "x__integral_of_lagrange_basis__mutmut_17"),
        "equivalent: one more zero coefficient in the product polynomial: its integral term "
        "is 0",
    ),
    _ode("_adams", "x__integral_of_lagrange_basis__mutmut_19")[0]:
        "equivalent: new[p + 1] = instead of +=: at iteration p that entry is still 0 (only "
        "iteration p + 1 subtracts from it, later)",
    _ode("_adams", "x__integral_of_lagrange_basis__mutmut_33")[0]:
        "equivalent: sum's start 0 instead of Fraction(0): 0 + Fraction is the same Fraction",
    _ode("_adams", "x_adams_step__mutmut_104")[0]: _TIE,
    **dict.fromkeys(
        _ode("_adams", "x_adams_step__mutmut_9", "x_adams_step__mutmut_11"),
        "equivalent: the perturbed time of f0 when k1 is None: times is given only with "
        "perturb, and then the fixed loop evaluates k1 = f(times[0], y) itself and passes it",
    ),
    _ode("_adams", "x_adams_step__mutmut_20")[0]:
        "equivalent: the cap max_order + 1 instead of - 1: the history holds at most "
        "max_order - 1 values (its maxlen), so the cap never binds",
    **dict.fromkeys(
        _ode("_adams", "x_adams_step__mutmut_47", "x_adams_step__mutmut_50",
             "x_adams_step__mutmut_52", "x_adams_step__mutmut_64", "x_adams_step__mutmut_67",
             "x_adams_step__mutmut_69"),
        _STRICT,
    ),
    **dict.fromkeys(
        _ode("_adams", "x_adams_step__mutmut_81", "x_adams_step__mutmut_82"),
        "equivalent: converged's initial value: max_iters >= 1 (validated), so the corrector "
        "loop sets it before it is read",
    ),
    # ode/_checkpoint
    _ode("_checkpoint", "x_default_checkpoints__mutmut_10")[0]:
        "equivalent: floor(-1.5 + sqrt(2n + 1.25)) differs from that of 2n + 0.25 only if "
        "(k + 1)(k + 2) = 2n + 1 for an integer k; that product is even",
    **dict.fromkeys(
        _ode("_checkpoint", "xǁ_Tapeǁ__call____mutmut_7", "xǁ_Replayǁadvance__mutmut_11"),
        "equivalent: a non-FSAL step's last stage kept in the carry too: no step reads it "
        "(its record is not chained), memory only",
    ),
    **dict.fromkeys(
        _ode("_checkpoint", "xǁ_BatchedTapeǁ__init____mutmut_4",
             "xǁ_BatchedTapeǁ__init____mutmut_5", "xǁ_BatchedReplayǁ__init____mutmut_16"),
        "equivalent: an initial value that the first attempt (or the backward's set-up) "
        "replaces before any read",
    ),
    **dict.fromkeys(
        _ode("_checkpoint", "xǁ_Slotsǁstore__mutmut_4", "xǁ_Slotsǁstore__mutmut_7",
             "xǁ_Slotsǁstore__mutmut_8", "xǁ_Replayǁvjp__mutmut_54", "xǁ_Replayǁvjp__mutmut_57",
             "xǁ_Replayǁvjp__mutmut_62", "xǁ_BatchedReplayǁ_state__mutmut_5",
             "xǁ_BatchedReplayǁ_state__mutmut_8", "xǁ_BatchedReplayǁ_state__mutmut_9"),
        _STRICT,
    ),
    **dict.fromkeys(
        _ode("_checkpoint", "xǁ_Replayǁ__init____mutmut_8", "xǁ_Replayǁ__init____mutmut_14"),
        "equivalent: the direction d is only used by its sign (emit_outputs' comparisons)",
    ),
    _ode("_checkpoint", "xǁ_Replayǁ__init____mutmut_11")[0]:
        "equivalent: ts[-1] == ts[0] only for a single output time, which has no step to "
        "replay (the times are checked strictly monotone)",
    **dict.fromkeys(
        _ode("_checkpoint", "xǁ_Replayǁvjp__mutmut_93", "xǁ_Replayǁvjp__mutmut_97",
             "xǁ_BatchedReplayǁvjp__mutmut_58", "xǁ_BatchedReplayǁvjp__mutmut_60",
             "xǁ_BatchedReplayǁvjp__mutmut_61"),
        "equivalent: the state's gradient is never None: y1 = y + h sum(b k) (and the batched "
        "Y1 = where(accepted, Y1, Y)) always depends on y",
    ),
    **dict.fromkeys(
        _ode("_checkpoint", "xǁ_Replayǁvjp__mutmut_102", "xǁ_Replayǁvjp__mutmut_106",
             "xǁ_BatchedReplayǁvjp__mutmut_64", "xǁ_BatchedReplayǁvjp__mutmut_66"),
        "equivalent: a carried first stage k1 always enters y1 (b_0 != 0 in every FSAL "
        "tableau; the batched attempt's K1 is its stage 1), so its gradient is never None",
    ),
    **dict.fromkeys(
        _ode("_checkpoint", "xǁ_BatchedReplayǁ__init____mutmut_15",
             "xǁ_BatchedReplayǁvjp__mutmut_25"),
        "equivalent: an output buffer of at most 2 rows: attempt emits only into buffers of "
        "more than 2 (outs.shape[0] > 2), and its cotangent is not a root then",
    ),
    **dict.fromkeys(
        _ode("_checkpoint", "xǁ_BatchedReplayǁ__init____mutmut_20",
             "xǁ_BatchedReplayǁ__init____mutmut_23"),
        _GPU,
    ),
    **dict.fromkeys(
        _ode("_checkpoint", "xǁ_Reversalǁreverse__mutmut_15", "xǁ_Reversalǁreverse__mutmut_20",
             "xǁ_Reversalǁreverse__mutmut_23", "xǁ_Reversalǁreverse__mutmut_35",
             "xǁ_Reversalǁreverse__mutmut_46", "xǁ_Reversalǁreverse__mutmut_48",
             "xǁ_Reversalǁreverse__mutmut_60"),
        "equivalent: a wider search range for the split m (a larger r, a smaller lo, a larger "
        "hi): the optimum lies in [lo, hi] already, so the minimum of the exact count over the "
        "wider range is the same (the dynamic-programming test checks the count)",
    ),
    **dict.fromkeys(
        _ode("_checkpoint", "xǁ_Reversalǁreverse__mutmut_2", "xǁ_Reversalǁreverse__mutmut_3",
             "xǁ_Reversalǁreverse__mutmut_9", "xǁ_Reversalǁreverse__mutmut_10"),
        "equivalent: a segment of 1 or 2 steps, or one more or one fewer usable slot than "
        "length - 1: the fewest advances are the same (0 for 1 step, 1 for 2; L - 1 with L - 2 "
        "or more slots), so the schedule costs the same",
    ),
    **dict.fromkeys(
        _ode("_checkpoint", "x__min_advances__mutmut_2", "x__min_advances__mutmut_7"),
        "equivalent: r one larger at the start (L = 1) or where C(s + r + 1, s + 1) = L: "
        "(r + 1) L - C(s + r + 2, s + 2) equals r L - C(s + r + 1, s + 2) there",
    ),
    **dict.fromkeys(
        _ode("_checkpoint", "x_odeint_checkpoint__mutmut_37", "x_odeint_checkpoint__mutmut_38"),
        "equivalent: rtol/atol None for reversible_heun, a fixed-step method: its solve does "
        "not read tolerances",
    ),
    **dict.fromkeys(
        _ode("_checkpoint", "x_odeint_checkpoint__mutmut_60", "x_odeint_checkpoint__mutmut_62",
             "x_odeint_checkpoint__mutmut_66", "x_odeint_checkpoint__mutmut_68",
             "x__recompute_func__mutmut_10", "x__recompute_func__mutmut_13"),
        _GPU,
    ),
    _ode("_checkpoint", "x_wang_moin_place__mutmut_9")[0]:
        "equivalent: the running maximum starts at -2 instead of -1: levels are >= 0, so "
        "'level < later' is false at the first checkpoint either way and later becomes its level",
    _ode("_checkpoint", "xǁ_Checkpointsǁ__init____mutmut_5")[0]:
        "equivalent: the initial state's level: placement never reads levels[0] (its scan "
        "stops at k = 1 and the initial state is never the newest once a slot holds another)",
    **dict.fromkeys(
        _ode("_checkpoint", "xǁ_CheckpointFnǁforward__mutmut_1",
             "xǁ_CheckpointFnǁforward__mutmut_2"),
        "equivalent: need_k's initial value: the host path sets it, the batched path does not "
        "read it",
    ),
    _ode("_checkpoint", "xǁ_CheckpointFnǁforward__mutmut_90")[0]:
        "equivalent: ctx.done = None instead of False: only read as a truth value",
    # ode/_event (this session's full run)
    _ode("_event", "x_implicit_time__mutmut_53")[0]:
        "equivalent: the correction -(g + g.detach()) / rate instead of -(g - g.detach()) / "
        "rate: the same gradient, and a value change of -2 g / rate with g at the bisected "
        "event at round-off (below the time's resolution in every test, incl. one comparing "
        "the time with and without autograd exactly)",
    **dict.fromkeys(
        _ode("_event", "x_implicit_time__mutmut_29", "x_implicit_time__mutmut_32",
             "x_implicit_time__mutmut_34"),
        _STRICT,
    ),
    **dict.fromkeys(
        _ode("_event", "x_bisect_rows__mutmut_17", "x_bisect_rows__mutmut_49"),
        "equivalent: divided by the sign before instead of multiplied: it is +-1 for every "
        "candidate (and the other entries are masked to inf)",
    ),
    **dict.fromkeys(
        _ode("_event", "xǁSignTrackerǁupdate__mutmut_8", "xǁSignTrackerǁupdate__mutmut_9",
             "xǁSignTrackerǁupdate__mutmut_10"),
        "equivalent: direction * before is in {-1, 0, 1}; it differs from the original test "
        "only where before == 0, and a candidate needs before != 0",
    ),
    **dict.fromkeys(
        _ode("_event", "x_event_directions__mutmut_27", "x_event_directions__mutmut_30"),
        "equivalent: the directions as an int64 tensor: -1, 0, 1 compare and multiply with "
        "the float signs exactly",
    ),
    _ode("_event", "x_event_directions__mutmut_31")[0]: _GPU,
    **dict.fromkeys(
        _ode("_event", "x_solve_until_event__mutmut_13"),
        "equivalent: like is read for its dtype only, and every part of a tuple state has "
        "one dtype (checked)",
    ),
    **dict.fromkeys(
        _ode("_event", "x_solve_until_event__mutmut_45", "x_solve_until_event__mutmut_46"),
        "equivalent: d = +-2 instead of +-1 only doubles the search horizon and the fixed-step "
        "search windows; the grid points (t0 + k h) and the crossing found are the same",
    ),
    **dict.fromkeys(
        _ode("_event", "x_solve_until_event__mutmut_73", "x_solve_until_event__mutmut_75"),
        _GPU,
    ),
    **dict.fromkeys(
        _ode("_event", "x_solve_until_event__mutmut_208", "x_solve_until_event__mutmut_209",
             "x_solve_until_event__mutmut_210"),
        "equivalent: events need an explicit RK method, whose bind reads only the options "
        "(not rtol, atol or stats)",
    ),
    _ode("_event", "x_solve_until_event__mutmut_1")[0]:
        "equivalent: plain's default: both callers (odeint_event, event_mode) pass it",
    **dict.fromkeys(
        _ode("_event", "x__with_implicit_gradient__mutmut_22",
             "x__with_implicit_gradient__mutmut_24"),
        "equivalent: [+1] for [-1] of the solution at (t0, T): it has two entries",
    ),
    **dict.fromkeys(
        _ode("_event", "x__with_implicit_gradient__mutmut_4",
             "x__with_implicit_gradient__mutmut_7"),
        _GPU,
    ),
    _ode("_event", "x__rows_until_event__mutmut_269")[0]:
        "equivalent: the crossing steps' start time None: step_plan always gives the stage "
        "times, which the batched step uses instead of t + c h",
    _ode("_event", "x__rows_until_event__mutmut_366")[0]:
        "equivalent: the event time as (R,) instead of (R, 1) for the loop's evaluation: "
        "lp.ev reshapes the time to the rows itself",
    **dict.fromkeys(
        _ode("_event", "x__rows_until_event__mutmut_5", "x__rows_until_event__mutmut_8"),
        _GPU,
    ),
    # ode/_event
    **dict.fromkeys(
        _ode("_event", "x__bisect_host__mutmut_27", "x__bisect_host__mutmut_31",
             "x__bisect_host__mutmut_37", "x__bisect_host__mutmut_41",
             "x__rows_until_event__mutmut_80", "x__rows_until_event__mutmut_83",
             "x_event_directions__mutmut_28", "x_solve_until_event__mutmut_133",
             "x_solve_until_event__mutmut_137", "x__report_index__mutmut_6",
             "x__report_index__mutmut_8"),
        _GPU,
    ),
    **dict.fromkeys(
        _ode("_event", "x__report_index__mutmut_7", "x__report_index__mutmut_9"),
        "equivalent: the index comes from argmin, already torch.long; .to without a dtype "
        "keeps it",
    ),
    **dict.fromkeys(
        _ode("_event", "x_implicit_time__mutmut_29", "x_implicit_time__mutmut_32",
             "x_implicit_time__mutmut_34"),
        _STRICT,
    ),
}
# ----------------------------------------------------------------------------------------------

# Lines that only build an error message: `raise X(...)` and lines that start with a string literal
# (the continuation lines of a message). The tests check a message's key words with
# pytest.raises(match=...); mutmut's rewrites of message text ("XX...XX", upper case, type(None))
# are not what this project hunts. The conditions that raise are mutated as usual.
MESSAGE_LINES = (r"^\s*raise \w+\(", r"^\s*[rfRF]{0,2}\"", r"^\s*\+ *f?\"")

DETECTED = ("killed", "timeout", "caught by type check")
UNDETECTED = ("survived", "no tests")


def _slug(module: str) -> str:
    return module.removesuffix(".py").replace("/", ".")


def _select(names: list[str]) -> list[str]:
    if not names:
        return [m for m, e in MAPPING.items() if e.tests]
    out: list[str] = []
    for name in names:
        key = name.removeprefix("src/deeplimits/").rstrip("/")
        group = [m for m in MAPPING if m.split("/")[0] == key]
        if key in MAPPING:
            out.append(key)
        elif group:
            out.extend(group)
        else:
            raise SystemExit(f"unknown module or group {name!r}; known: {', '.join(MAPPING)}")
    return out


def _mutmut() -> str:
    exe = Path(sys.executable).with_name("mutmut")
    if not exe.exists():
        raise SystemExit(
            "mutmut is not installed in this environment: pip install -e '.[mutation]'"
        )
    return str(exe)


def _prepare(module: str, entry: Entry) -> Path:
    """A fresh scratch project: src/, tests/ and a pyproject.toml with the [tool.mutmut] table."""
    work = WORK / _slug(module)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "src", work / "src", ignore=ignore)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
    _write_config(module, entry, work)
    return work


def _write_config(module: str, entry: Entry, *folders: Path) -> None:
    """The root pyproject.toml plus the [tool.mutmut] table of ``entry`` (its test selection,
    pytest arguments), written into each folder."""
    pytest_args = [
        "-q",
        "-p",
        "no:cacheprovider",
        "--hypothesis-seed=0",  # the same examples for every mutant
        *entry.pytest_args,
    ]
    config = (
        "\n\n[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f'only_mutate = ["src/deeplimits/{module}"]\n'
        f"pytest_add_cli_args_test_selection = {json.dumps(list(entry.tests))}\n"
        f"pytest_add_cli_args = {json.dumps(pytest_args)}\n"
        # torch is not fork-safe once it has run: fork workers from a clean server process
        'process_isolation = "forkserver"\n'
        "use_git_change_detection = false\n"
        f"do_not_mutate_patterns = {json.dumps(list(MESSAGE_LINES))}\n"
    )
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    for folder in folders:
        (folder / "pyproject.toml").write_text(text + config, encoding="utf-8")


def _results(work: Path) -> dict[str, str]:
    out = subprocess.run(
        [_mutmut(), "results", "--all", "true"], cwd=work, capture_output=True, text=True
    )
    statuses: dict[str, str] = {}
    for line in out.stdout.splitlines():
        m = re.match(r"\s+(\S+): (.+)$", line)
        if m:
            statuses[m.group(1)] = m.group(2).strip()
    return statuses


def _score(module: str, statuses: dict[str, str]) -> dict[str, object]:
    functions = MAPPING[module].functions
    if functions:  # mutants of other functions are generated but never run: not counted
        prefixes = tuple(f"deeplimits.{_slug(module)}.x_{f}__mutmut_" for f in functions)
        statuses = {k: s for k, s in statuses.items() if k.startswith(prefixes)}
    # A listed mutant that a test kills is not equivalent (the name is stale, or the reason
    # wrong): it counts as killed, and the run names it.
    killed_listed = sorted(k for k, s in statuses.items() if k in EQUIVALENT and s in DETECTED)
    equivalent = sorted(k for k in statuses if k in EQUIVALENT and k not in killed_listed)
    gpu_only = [k for k in equivalent if EQUIVALENT[k].startswith("gpu-only")]
    counted = {k: s for k, s in statuses.items() if k not in equivalent}
    detected = sum(s in DETECTED for s in counted.values())
    undetected = sum(s in UNDETECTED for s in counted.values())
    other = sorted(f"{k}: {s}" for k, s in counted.items() if s not in DETECTED + UNDETECTED)
    total = detected + undetected
    return {
        "module": module,
        "mutants": len(statuses),
        "detected": detected,
        "undetected": undetected,
        "equivalent": len(equivalent) - len(gpu_only),
        "gpu_only": len(gpu_only),
        "other": other,
        "score": detected / total if total else None,
        "survivors": sorted(k for k, s in counted.items() if s in UNDETECTED),
        "excluded": equivalent,
        "killed_listed_equivalents": killed_listed,
    }


def _commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "src", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return out.stdout.strip() + ("+dirty" if dirty else "")


def _run_mutmut(module: str, work: Path, names: list[str], max_children: int) -> None:
    env = dict(os.environ)
    # One thread per worker: the machine is shared, and OpenMP pools do not survive a fork.
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)  # mutmut puts mutants/src first on sys.path itself
    print(f"== {module}: mutating against {' '.join(MAPPING[module].tests)}", flush=True)
    proc = subprocess.run(
        [_mutmut(), "run", "--max-children", str(max_children), *names], cwd=work, env=env
    )
    if proc.returncode != 0:
        print(f"mutmut exited with {proc.returncode} for {module}", file=sys.stderr)


def _finish(module: str, work: Path, commit: str) -> dict[str, object]:
    statuses = _results(work)
    result = _score(module, statuses)
    result.update(commit=commit, date=date.today().isoformat())
    with (work / "survivors.txt").open("w", encoding="utf-8") as fh:
        for name in result["survivors"]:  # type: ignore[union-attr]
            show = subprocess.run(
                [_mutmut(), "show", name], cwd=work, capture_output=True, text=True
            )
            fh.write(show.stdout + "\n")
    # The excluded mutants' diffs beside their reasons, to check the names against the source.
    with (work / "equivalents.txt").open("w", encoding="utf-8") as fh:
        for name in result["excluded"]:  # type: ignore[union-attr]
            show = subprocess.run(
                [_mutmut(), "show", name], cwd=work, capture_output=True, text=True
            )
            fh.write(f"## reason: {EQUIVALENT[name]}\n{show.stdout}\n")
    source_hash = _source_hash(module)
    result["source_sha256"] = source_hash
    result["equivalents_checked"] = EQUIVALENTS_CHECKED.get(module) == source_hash
    if not result["equivalents_checked"] and result["excluded"]:
        print(
            f"UNCHECKED EQUIVALENTS: the EQUIVALENT names of {module} were checked against "
            f"other source (mutmut renumbers a function's mutants when it changes). Read "
            f"{work / 'equivalents.txt'}, fix the names, then set EQUIVALENTS_CHECKED"
            f"[{module!r}] = {source_hash!r}; until then the score is marked unchecked."
        )
    if result["killed_listed_equivalents"]:
        print(f"EQUIVALENT names that tests kill (stale; counted as killed): "
              f"{result['killed_listed_equivalents']}")
    stale = [k for k in EQUIVALENT if k.startswith(f"deeplimits.{_slug(module)}.")]
    stale = [k for k in stale if k not in statuses]
    if stale:
        print(f"EQUIVALENT names no longer generated (update the table): {stale}")
    return result


def _source_hash(module: str) -> str:
    """sha256 (12 hex digits) of the module's source: what EQUIVALENTS_CHECKED records."""
    return hashlib.sha256((ROOT / "src" / "deeplimits" / module).read_bytes()).hexdigest()[:12]


def run_module(module: str, max_children: int) -> dict[str, object]:
    entry = MAPPING[module]
    commit = _commit()  # of the snapshot _prepare copies
    work = _prepare(module, entry)
    globs = [f"deeplimits.{_slug(module)}.x_{f}__mutmut_*" for f in entry.functions]
    _run_mutmut(module, work, globs, max_children)
    return _finish(module, work, commit)


def recheck_module(module: str, max_children: int) -> dict[str, object]:
    """Re-run the last run's survivors (and unchecked mutants) against the current tests.

    The source must be unchanged since the full run (else the mutants are stale: run it again in
    full). The test-to-function map is collected afresh, the test selection is MAPPING's current
    one and the other source modules are copied afresh, so new tests, newly mapped test modules
    and fixes elsewhere in the package are used.
    """
    work = WORK / _slug(module)
    source = f"src/deeplimits/{module}"
    if not (work / "mutants").is_dir():
        raise SystemExit(f"{module} has no previous run under {work}; run it in full first")
    if (work / source).read_bytes() != (ROOT / source).read_bytes():
        raise SystemExit(f"{source} changed since the full run; run it in full again")
    commit = _commit()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for dst in (work / "tests", work / "mutants" / "tests"):
        shutil.rmtree(dst)
        shutil.copytree(ROOT / "tests", dst, ignore=ignore)
    # the current MAPPING line: test modules added to it since the full run take part
    _write_config(module, MAPPING[module], work, work / "mutants")
    # the other source modules as they are now (a fix elsewhere that the new tests rely on);
    # only the mutated module keeps its mutants
    for path in (ROOT / "src").rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.as_posix() != source and "__pycache__" not in rel.parts:
            for dst in (work / rel, work / "mutants" / rel):
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dst)
    (work / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    before = _results(work)
    survivors = [k for k, s in before.items() if s in UNDETECTED or s == "not checked"]
    entry = MAPPING[module]
    if entry.functions:  # only the mutants of the restricted functions were run in full
        prefixes = tuple(f"deeplimits.{_slug(module)}.x_{f}__mutmut_" for f in entry.functions)
        survivors = [k for k in survivors if k.startswith(prefixes)]
    if survivors:
        _run_mutmut(module, work, survivors, max_children)
    return _finish(module, work, commit)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "modules", nargs="*", help="modules (e.g. diagnostics/_lipschitz.py) or groups"
    )
    parser.add_argument("--list", action="store_true", help="print the mapping and exit")
    parser.add_argument(
        "--recheck",
        action="store_true",
        help="re-run only the last run's survivors against the current tests (source unchanged)",
    )
    parser.add_argument("--max-children", type=int, default=1, help="parallel mutant workers")
    args = parser.parse_args()
    if args.list:
        for module, entry in MAPPING.items():
            state = "ready" if entry.tests else "not ready (no tests mapped)"
            only = f" functions={','.join(entry.functions)}" if entry.functions else ""
            print(f"{module:34s} {state}{only}  {' '.join(entry.tests)}")
        return 0
    scores_path = WORK / "scores.json"
    scores = json.loads(scores_path.read_text()) if scores_path.exists() else {}
    rows = []
    for module in _select(args.modules):
        if not MAPPING[module].tests:
            print(f"-- {module}: no tests mapped yet, skipped (edit MAPPING in tools/mutation.py)")
            continue
        if args.recheck:
            result = recheck_module(module, args.max_children)
        else:
            result = run_module(module, args.max_children)
        # re-read: another run (of another module) may have written since this one began
        scores = json.loads(scores_path.read_text()) if scores_path.exists() else {}
        scores[module] = result
        WORK.mkdir(exist_ok=True)
        scores_path.write_text(json.dumps(scores, indent=2))
        rows.append(result)
    print("\n| module | mutants | detected | undetected | equivalent | GPU-only | score |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        score = "-" if r["score"] is None else f"{100 * r['score']:.1f} %"  # type: ignore[operator]
        if r["excluded"] and not r["equivalents_checked"]:
            score += " (equivalents unchecked)"
        print(
            f"| {r['module']} | {r['mutants']} | {r['detected']} | {r['undetected']} | "
            f"{r['equivalent']} | {r['gpu_only']} | {score} |"
        )
        for name in r["survivors"]:  # type: ignore[union-attr]
            print(f"    survived: {name}")
        for other in r["other"]:  # type: ignore[union-attr]
            print(f"    other: {other}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
