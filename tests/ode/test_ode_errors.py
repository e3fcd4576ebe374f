"""Every error case: the right class (and built-in base), naming the value and the fix."""

from __future__ import annotations

import math

import pytest
import torch

from deeplimits.errors import (
    DeeplimitsError,
    InvalidArgumentError,
    InvalidTypeError,
    MaxStepsExceededError,
    NonFiniteStateError,
    StepSizeUnderflowError,
    UnknownNameError,
)
from deeplimits.ode import (
    IMPLICIT_TABLEAUX,
    TABLEAUX,
    AdaptiveOptions,
    FixedStepOptions,
    PIController,
    odeint,
    odeint_adjoint,
)

F64 = torch.float64


def _decay(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -y


def _y0() -> torch.Tensor:
    return torch.ones(2, dtype=F64)


def _t() -> torch.Tensor:
    return torch.tensor([0.0, 1.0], dtype=F64)


def test_non_monotonic_t_names_the_index_and_suggests_sorting() -> None:
    with pytest.raises(InvalidArgumentError, match=r"t\[2\].*sort") as info:
        odeint(_decay, _y0(), torch.tensor([0.0, 1.0, 0.5], dtype=F64))
    assert isinstance(info.value, ValueError)


def test_repeated_time_is_not_strictly_monotonic() -> None:
    with pytest.raises(InvalidArgumentError, match=r"t\[1\]"):
        odeint(_decay, _y0(), torch.tensor([0.0, 0.0, 1.0], dtype=F64))


def test_two_dimensional_t_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match="1-D"):
        odeint(_decay, _y0(), torch.zeros(2, 2, dtype=F64))


def test_integer_t_is_rejected() -> None:
    with pytest.raises(InvalidTypeError, match="floating") as info:
        odeint(_decay, _y0(), torch.tensor([0, 1]))
    assert isinstance(info.value, TypeError)


def test_t_on_another_device_names_both_and_the_move() -> None:
    with pytest.raises(InvalidArgumentError, match=r"t is on meta but y0 is on cpu.*t\.to"):
        odeint(_decay, _y0(), torch.tensor([0.0, 1.0], device="meta"))


def test_integer_y0_is_rejected() -> None:
    with pytest.raises(InvalidTypeError, match="y0"):
        odeint(_decay, torch.ones(2, dtype=torch.int64), _t())


def test_func_returning_the_wrong_shape_names_both_shapes() -> None:
    with pytest.raises(InvalidArgumentError, match=r"\(3,\).*\(2,\)"):
        odeint(lambda t, y: torch.zeros(3, dtype=F64), _y0(), _t())


def test_func_returning_the_wrong_dtype_is_rejected() -> None:
    with pytest.raises(InvalidTypeError, match="float32"):
        odeint(lambda t, y: y.float(), _y0(), _t())


def test_func_returning_a_tensor_for_a_tuple_state_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match="tuple of 2"):
        odeint(lambda t, y: y[0], (_y0(), _y0()), _t())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_t_on_another_device_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match=r"device|cuda"):
        odeint(_decay, _y0().cuda(), _t())


def test_nan_in_initial_state_is_reported() -> None:
    with pytest.raises(NonFiniteStateError, match="y0"):
        odeint(_decay, torch.tensor([math.nan, 1.0], dtype=F64), _t())


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_state_becoming_nan_reports_the_time(method: str) -> None:
    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.where(t > 0.5, torch.full_like(y, math.nan), -y)

    opts = {"step_size": 0.1} if method == "rk4" else None
    with pytest.raises(NonFiniteStateError, match=r"t=0\.[4-6]") as info:
        odeint(f, _y0(), _t(), method=method, options=opts)
    assert isinstance(info.value, RuntimeError)


def test_step_size_underflow_reports_t_and_dt() -> None:
    def stiff(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -1e4 * (y - torch.cos(t))

    opts = AdaptiveOptions(controller=PIController(dt_min=1e-2))
    with pytest.raises(StepSizeUnderflowError, match=r"t=.*dt="):
        odeint(stiff, _y0(), _t(), options=opts)


def test_max_num_steps_reports_t_and_suggestions() -> None:
    with pytest.raises(MaxStepsExceededError, match=r"max_num_steps=5.*t=.*loosen") as info:
        odeint(lambda t, y: torch.cos(20 * t) * y, _y0(), torch.tensor([0.0, 10.0], dtype=F64),
               options={"max_num_steps": 5})
    assert isinstance(info.value, DeeplimitsError)


@pytest.mark.parametrize(("rtol", "atol"), [(-1e-6, 1e-9), (1e-6, -1.0), (math.nan, 1e-9)])
def test_negative_or_nan_tolerance_is_rejected(rtol: float, atol: float) -> None:
    with pytest.raises(InvalidArgumentError, match="tol"):
        odeint(_decay, _y0(), _t(), rtol=rtol, atol=atol)


def test_unknown_method_lists_the_valid_methods() -> None:
    with pytest.raises(UnknownNameError, match="dopri5") as info:
        odeint(_decay, _y0(), _t(), method="rk45")
    assert "reversible_heun" in info.value.valid


@pytest.mark.parametrize(
    ("method", "fix"),
    [
        (TABLEAUX["rk4"], r"wrap the tableau in a solver: method=ExplicitRK\(tableau\)"),
        (IMPLICIT_TABLEAUX["kvaerno3"],
         r"wrap the tableau in a solver: method=ImplicitRK\(tableau\)"),
        (3, "valid names: euler, midpoint, .*, kvaerno5,"),
    ],
)
def test_a_method_that_is_not_a_name_or_solver_says_how_to_pass_it(method, fix) -> None:
    with pytest.raises(InvalidTypeError, match=f"method must be a method name or a Solver, got "
                       f"{type(method).__name__}; {fix}"):
        odeint(_decay, _y0(), torch.tensor([0.0, 1.0], dtype=F64), method=method)
    with pytest.raises(InvalidTypeError, match="adjoint_method=ImplicitRK"):
        odeint_adjoint(torch.nn.Linear(2, 2).double(), _y0(),
                       torch.tensor([0.0, 1.0], dtype=F64),
                       adjoint_method=IMPLICIT_TABLEAUX["kvaerno3"])


def test_unknown_option_lists_the_valid_options() -> None:
    with pytest.raises(UnknownNameError, match="first_step") as info:
        odeint(_decay, _y0(), _t(), options={"step_size": 0.1})
    assert set(info.value.valid) == {
        "first_step", "max_num_steps", "controller", "step_t", "jump_t", "norm", "min_step",
        "max_step", "safety", "ifactor", "dfactor", "device_loop", "sync_every", "cuda_graph",
        "per_sample", "compile", "capture", "finite_check",
    }


def test_unknown_adjoint_option_lists_norm_too() -> None:
    f = torch.nn.Linear(2, 2).double()
    with pytest.raises(UnknownNameError, match="norm"):
        odeint_adjoint(lambda t, y: f(y), _y0(), _t(), adjoint_params=tuple(f.parameters()),
                       adjoint_options={"norn": "seminorm"})


def test_unknown_adjoint_norm_is_rejected() -> None:
    with pytest.raises(UnknownNameError, match="seminorm"):
        odeint_adjoint(_decay, _y0(), _t(), adjoint_params=(),
                       adjoint_options={"norm": "max"})


def test_adjoint_of_plain_function_needs_adjoint_params() -> None:
    with pytest.raises(InvalidTypeError, match="adjoint_params"):
        odeint_adjoint(_decay, _y0(), _t())


def test_step_size_and_grid_together_are_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match="step_size or grid"):
        FixedStepOptions(step_size=0.1, grid=[0.0, 1.0])


def test_non_positive_step_size_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match="step_size"):
        odeint(_decay, _y0(), _t(), method="euler", options={"step_size": 0.0})


def test_options_of_the_wrong_type_are_rejected() -> None:
    with pytest.raises(InvalidTypeError, match="dict"):
        odeint(_decay, _y0(), _t(), options=[("first_step", 0.1)])  # type: ignore[arg-type]


def test_bad_controller_settings_are_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match="factor_min"):
        PIController(factor_min=2.0)
