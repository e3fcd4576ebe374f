"""The adjoint's backward error norm (``_backward_norm``) and option resolution
(``_adjoint_options``), against torchdiffeq 0.2.5's ``odeint_adjoint`` (``handle_adjoint_norm_``).

torchdiffeq norms the backward state as the tuple ``(t, y, adj_y, *adj_params)``:

- ``adjoint_options={"norm": fn}``: ``fn`` gets that tuple (a tuple ``y0`` spread out:
  ``(t, *y, *adj_y, *adj_params)``), whatever the forward norm;
- a forward ``options["norm"]`` and no adjoint function: ``max(|t|, norm(y), norm(adj_y),
  rms(p) for each parameter)``, the parameters left out with ``"seminorm"``;
- no adjoint options: the forward options without ``"norm"``.

Our backward state is the flat ``[y, a, a_params]`` (no time channel: ``t`` is a 0-d zero), so
the norm is checked here on hand-built flat vectors whose norms are worked out by hand.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torchdiffeq

from deeplimits.errors import UnknownNameError
from deeplimits.ode import AdaptiveOptions, AdjointOptions, SolveStats, odeint_adjoint
from deeplimits.ode._adjoint import _adjoint_options, _backward_norm
from deeplimits.ode._execution import ExecutionOptions
from deeplimits.ode._func import FlatState
from deeplimits.ode._solvers import get_solver

F64 = torch.float64


def _max_abs(x: Any) -> torch.Tensor:
    """A forward norm (torchdiffeq's ``options["norm"]``): max |entry| over a tensor or tuple."""
    parts = x if isinstance(x, tuple) else (x,)
    return torch.stack([p.abs().max() for p in parts]).max()


def _flat(y: list[float], a: list[float], *params: list[float]) -> torch.Tensor:
    return torch.tensor([*y, *a, *(v for p in params for v in p)], dtype=F64)


# --- _backward_norm: the user's function --------------------------------------------------------


def test_without_forward_norm_or_norm_function_the_backward_solve_keeps_its_rms() -> None:
    state = FlatState(torch.zeros(2, dtype=F64))
    params = [torch.zeros(3, dtype=F64)]
    for norm in ("rms", "seminorm"):
        assert _backward_norm(AdjointOptions(norm=norm), None, state, params) is None


@pytest.mark.parametrize("fwd_norm", [None, _max_abs], ids=["no_forward_norm", "forward_norm"])
def test_adjoint_norm_function_gets_t_y_adj_y_and_each_parameter_of_a_tensor_state(
    fwd_norm: Any,
) -> None:
    """y0 of shape (2, 2), parameters of shapes (2,) and (1, 3): the flat backward error
    x = [0, 1, ..., 12] is handed over (torchdiffeq's layout) as t = 0 (0-d), y = x[0:4] as
    (2, 2), adj_y = x[4:8] as (2, 2), p1 = x[8:10], p2 = x[10:13] as (1, 3); the function's
    value is the norm (the forward norm does not replace it)."""
    seen: list[tuple[torch.Tensor, ...]] = []

    def fn(parts: tuple[torch.Tensor, ...]) -> torch.Tensor:
        seen.append(parts)
        return torch.tensor(7.5, dtype=F64)

    state = FlatState(torch.zeros(2, 2, dtype=F64))
    params = [torch.zeros(2, dtype=F64), torch.zeros(1, 3, dtype=F64)]
    norm = _backward_norm(AdjointOptions(norm=fn), fwd_norm, state, params)
    assert norm is not None
    x = torch.arange(13, dtype=F64)
    assert float(norm(x)) == 7.5
    (t, y, a, p1, p2) = seen[0]
    assert t.shape == () and t.dtype == F64 and float(t) == 0.0
    assert y.tolist() == [[0.0, 1.0], [2.0, 3.0]]
    assert a.tolist() == [[4.0, 5.0], [6.0, 7.0]]
    assert p1.tolist() == [8.0, 9.0]
    assert p2.tolist() == [[10.0, 11.0, 12.0]]


def test_adjoint_norm_function_gets_a_tuple_states_tensors_spread_out() -> None:
    """y0 = (shape (1,), shape (2,)), one parameter of shape (2,): x = [0..7] is handed over
    as (t, y_0, y_1, adj_y_0, adj_y_1, p) = (0, [0], [1, 2], [3], [4, 5], [6, 7])."""
    seen: list[tuple[torch.Tensor, ...]] = []

    def fn(parts: tuple[torch.Tensor, ...]) -> torch.Tensor:
        seen.append(parts)
        return parts[-1].sum()

    state = FlatState((torch.zeros(1, dtype=F64), torch.zeros(2, dtype=F64)))
    norm = _backward_norm(AdjointOptions(norm=fn), None, state, [torch.zeros(2, dtype=F64)])
    assert norm is not None
    assert float(norm(torch.arange(8, dtype=F64))) == 13.0  # 6 + 7
    assert [p.tolist() for p in seen[0]] == [0.0, [0.0], [1.0, 2.0], [3.0], [4.0, 5.0],
                                             [6.0, 7.0]]


# --- _backward_norm: the forward norm mixed with the parameters' RMS ----------------------------

# y0 of shape (2,), parameters of 2 and 3 entries. Each case: y, adj_y, p1, p2, and the norm by
# hand: max(max|y|, max|adj_y|, rms(p1), rms(p2)), and without the parameters (seminorm).
MIXED = {
    # rms([12, -16]) = sqrt((144 + 256) / 2) = sqrt(200); the parameters dominate
    "params": ([1.0, -3.0], [2.0, -5.0], [12.0, -16.0], [1.0, 1.0, 1.0], math.sqrt(200.0), 5.0),
    # rms([3, 4, 12]) = sqrt(169 / 3) = 7.5055; max |y| = 20 dominates both
    "state": ([-20.0, 3.0], [1.0, 0.0], [0.0, 2.0], [3.0, -4.0, 12.0], 20.0, 20.0),
    # max |adj_y| = 9 beats rms([6, 8]) = sqrt(50) = 7.07 and rms([2, 2, 2]) = 2
    "adjoint": ([0.5, 0.0], [-9.0, 4.0], [6.0, 8.0], [2.0, 2.0, 2.0], 9.0, 9.0),
}


@pytest.mark.parametrize("case", list(MIXED))
def test_forward_norm_gives_torchdiffeqs_mixed_backward_norm(case: str) -> None:
    y, a, p1, p2, want_rms, want_semi = MIXED[case]
    state = FlatState(torch.zeros(2, dtype=F64))
    params = [torch.zeros(2, dtype=F64), torch.zeros(3, dtype=F64)]
    x = _flat(y, a, p1, p2)
    full = _backward_norm(AdjointOptions(), _max_abs, state, params)
    semi = _backward_norm(AdjointOptions(norm="seminorm"), _max_abs, state, params)
    assert full is not None and semi is not None
    assert float(full(x)) == pytest.approx(want_rms, rel=1e-15)
    assert float(semi(x)) == pytest.approx(want_semi, rel=1e-15)


def test_forward_norm_sees_a_tuple_state_and_its_adjoint_as_tuples() -> None:
    """y0 = ((1,), (2,)), one parameter (2,): the forward norm gets y = ([1], [-2, 4]) and
    adj_y = ([-6], [0, 1]) (torchdiffeq unflattens them for the forward norm as well)."""
    seen: list[Any] = []

    def fwd(v: Any) -> torch.Tensor:
        seen.append(v)
        return _max_abs(v)

    state = FlatState((torch.zeros(1, dtype=F64), torch.zeros(2, dtype=F64)))
    norm = _backward_norm(AdjointOptions(), fwd, state, [torch.zeros(2, dtype=F64)])
    assert norm is not None
    # max(4, 6, rms([3, 3]) = 3) = 6
    assert float(norm(_flat([1.0, -2.0, 4.0], [-6.0, 0.0, 1.0], [3.0, 3.0]))) == 6.0
    assert [[p.tolist() for p in v] for v in seen] == [[[1.0], [-2.0, 4.0]],
                                                      [[-6.0], [0.0, 1.0]]]


def test_forward_norm_returning_a_float_gives_a_norm_in_the_states_dtype() -> None:
    """A forward norm may return a Python float; the backward norm is a float64 0-d tensor for
    a float64 state, with the float's double precision (1 + 1e-12 is 1.0 in float32)."""
    state = FlatState(torch.zeros(1, dtype=F64))
    norm = _backward_norm(AdjointOptions(norm="seminorm"), lambda v: float(_max_abs(v)), state,
                          [torch.zeros(1, dtype=F64)])
    assert norm is not None
    out = norm(_flat([0.25], [-0.5], [100.0]))
    assert out.dtype == F64 and out.shape == () and float(out) == 0.5
    assert float(norm(_flat([1.0 + 1e-12], [-0.5], [100.0]))) == 1.0 + 1e-12
    assert float(norm(_flat([0.5], [-(1.0 + 1e-12)], [100.0]))) == 1.0 + 1e-12  # adj_y's part


# --- _adjoint_options ---------------------------------------------------------------------------

DOPRI5, TSIT5 = get_solver("dopri5"), get_solver("tsit5")


def test_no_adjoint_options_inherit_the_forward_options_without_norm() -> None:
    """torchdiffeq: ``adjoint_options = {k: v for k, v in options.items() if k != "norm"}``."""
    exe = ExecutionOptions()
    fwd = {"norm": _max_abs, "max_num_steps": 123, "first_step": 0.01}
    for given in (None, AdjointOptions(norm="seminorm")):
        numeric, adj_exe, adj = _adjoint_options(DOPRI5, DOPRI5, fwd, exe, given)
        assert numeric == AdaptiveOptions(max_num_steps=123, first_step=0.01)
        assert adj_exe is exe
        assert adj == (given or AdjointOptions())
    # another backward method: its own defaults (the forward's options are for another method)
    numeric, _, _ = _adjoint_options(DOPRI5, TSIT5, fwd, exe, None)
    assert numeric == AdaptiveOptions()


def test_adjoint_options_dict_gives_backward_options_and_the_norm() -> None:
    exe = ExecutionOptions()
    numeric, _, adj = _adjoint_options(
        DOPRI5, DOPRI5, {"max_num_steps": 7}, exe, {"norm": "seminorm", "max_num_steps": 5}
    )
    assert numeric == AdaptiveOptions(max_num_steps=5)
    assert adj.norm == "seminorm"
    numeric, _, adj = _adjoint_options(DOPRI5, DOPRI5, None, exe, {"first_step": 0.5})
    assert numeric == AdaptiveOptions(first_step=0.5) and adj == AdjointOptions()


def test_adjoint_options_object_of_the_backward_method_is_used_as_is() -> None:
    exe = ExecutionOptions()
    given = AdaptiveOptions(max_num_steps=9, first_step=0.125)
    numeric, adj_exe, adj = _adjoint_options(DOPRI5, DOPRI5, {"max_num_steps": 7}, exe, given)
    assert numeric == given and adj == AdjointOptions()
    assert adj_exe == ExecutionOptions()


def test_unknown_adjoint_option_is_named_with_norm_among_the_valid_keys() -> None:
    with pytest.raises(UnknownNameError, match="unknown adjoint option of method 'dopri5'") as e:
        _adjoint_options(DOPRI5, DOPRI5, None, ExecutionOptions(), {"nrom": "seminorm"})
    assert e.value.value == "nrom" and "norm" in e.value.valid and "max_num_steps" in e.value.valid
    with pytest.raises(UnknownNameError, match="adjoint norm"):
        _adjoint_options(DOPRI5, DOPRI5, None, ExecutionOptions(), {"norm": "max"})


# --- end to end: the same call to torchdiffeq gives the same gradients --------------------------


class _Rotation(torch.nn.Module):
    """y' = A y + b, A = [[-0.5, 2], [-2, -0.3]]."""

    def __init__(self) -> None:
        super().__init__()
        self.A = torch.nn.Parameter(torch.tensor([[-0.5, 2.0], [-2.0, -0.3]], dtype=F64))
        self.b = torch.nn.Parameter(torch.tensor([0.3, -0.1], dtype=F64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.A @ y + self.b


def _grads(solve: Any, **kw: Any) -> torch.Tensor:
    f = _Rotation()
    y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    ys = solve(f, y0, torch.tensor([0.0, 1.0, 2.0], dtype=F64), rtol=1e-8, atol=1e-10,
               method="dopri5", **kw)
    ys[1:].square().sum().backward()
    return torch.cat([y0.grad, f.A.grad.flatten(), f.b.grad])


@pytest.mark.parametrize("kw", [
    {"options": {"norm": _max_abs}},
    {"options": {"norm": _max_abs}, "adjoint_options": {"norm": "seminorm"}},
    {"adjoint_options": {"norm": lambda parts: _max_abs(parts)}},
], ids=["forward_norm", "forward_norm_seminorm", "norm_function"])
def test_backward_norms_give_torchdiffeqs_gradients(kw: dict[str, Any]) -> None:
    stats = SolveStats()
    ours = _grads(odeint_adjoint, stats=stats, **kw)
    theirs = _grads(torchdiffeq.odeint_adjoint, **kw)
    assert float((ours - theirs).abs().max()) <= 1e-6
    assert stats.nfe_backward > 0
