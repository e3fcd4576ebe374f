"""The solver's view of the user's ``func``: a flat state and the one counting wrapper.

Every loop evaluates ``func`` through :class:`FlatFuncWrapper`: eager calls count themselves
(:meth:`FlatFuncWrapper.__call__`, :meth:`FlatFuncWrapper.fast`); code that runs no Python per
call (compiled blocks, replayed CUDA graphs) calls :meth:`FlatFuncWrapper.raw` and reports its
evaluations with :meth:`FlatFuncWrapper.record`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from deeplimits.errors import InvalidArgumentError, InvalidTypeError, NonFiniteStateError
from deeplimits.ode._options import SolveStats

__all__ = ["CALLBACK_NAMES", "Callbacks", "FlatFunc", "FlatFuncWrapper", "FlatState", "lean"]

#: The solver-internal right-hand side: ``f(t, y)`` with ``t`` a Python float or a tensor.
FlatFunc = Callable[[float | Tensor, Tensor], Tensor]


class FlatState:
    """How a state (a tensor or a tuple of tensors) maps to one flat ``(N,)`` tensor."""

    def __init__(self, y0: Tensor | tuple[Tensor, ...]) -> None:
        self.is_tuple = isinstance(y0, tuple)
        parts = y0 if isinstance(y0, tuple) else (y0,)
        if not parts:
            raise InvalidArgumentError("y0 is an empty tuple; give at least one tensor")
        for i, p in enumerate(parts):
            where = f"y0[{i}]" if self.is_tuple else "y0"
            if not isinstance(p, Tensor):
                raise InvalidTypeError(f"{where} must be a torch.Tensor, got {type(p).__name__}")
            if not p.is_floating_point():
                raise InvalidTypeError(
                    f"{where} must have a floating dtype, got {p.dtype}; use {where}.double() "
                    "or .float()"
                )
            if p.dtype != parts[0].dtype or p.device != parts[0].device:
                raise InvalidTypeError(
                    f"all tensors of tuple y0 need one dtype and device: y0[0] is "
                    f"{parts[0].dtype} on {parts[0].device}, {where} is {p.dtype} on {p.device}"
                )
        self.shapes = [tuple(p.shape) for p in parts]
        self.sizes = [p.numel() for p in parts]
        self.numel = sum(self.sizes)
        self.dtype = parts[0].dtype
        self.device = parts[0].device

    def flatten(self, y: Tensor | tuple[Tensor, ...]) -> Tensor:
        """``(N,)`` view (single tensor) or concatenation (tuple)."""
        if isinstance(y, tuple):
            return torch.cat([p.reshape(-1) for p in y])
        return y.reshape(-1)

    def as_state(self, y: Tensor | tuple[Tensor, ...]) -> Tensor:
        """The solver's working state: a single tensor keeps its shape (no reshape per
        evaluation); a tuple is concatenated to ``(N,)``."""
        return self.flatten(y) if isinstance(y, tuple) else y

    def unflatten(self, flat: Tensor) -> Tensor | tuple[Tensor, ...]:
        """Inverse of :meth:`flatten` (or :meth:`as_state`) for one state -> original shapes."""
        if not self.is_tuple:
            shape = self.shapes[0]
            return flat if flat.shape == shape else flat.view(shape)
        return tuple(p.view(s) for p, s in zip(flat.split(self.sizes), self.shapes, strict=True))

    def unflatten_series(self, ys: Tensor) -> Tensor | tuple[Tensor, ...]:
        """``(T, N)`` or ``(T, *shape)`` -> ``(T, *shape)`` or a tuple of those."""
        T = ys.shape[0]
        if not self.is_tuple:
            return ys.reshape(T, *self.shapes[0])
        return tuple(
            p.reshape(T, *s) for p, s in zip(ys.split(self.sizes, dim=1), self.shapes, strict=True)
        )


#: torchdiffeq's step callbacks, looked up on ``func`` (with ``_adjoint`` appended for the
#: adjoint's backward solve): each is called as ``callback(t0, y0, dt)``.
CALLBACK_NAMES = ("callback_step", "callback_accept_step", "callback_reject_step")


class Callbacks:
    """The step callbacks a ``func`` defines, called by the host and fixed-step loops.

    ``step(t0, y0, dt)`` before each attempted step, ``accept``/``reject`` after its decision
    (adaptive methods only), with ``t0`` a 0-d tensor, ``y0`` the state at the start of the step
    in ``y0``'s structure (a tuple for tuple states) and ``dt`` the signed step size (0-d).
    """

    def __init__(
        self, found: dict[str, Callable[..., Any]], state: FlatState | None
    ) -> None:
        self.found = found
        self.state = state
        self._step = found.get("callback_step")
        self._accept = found.get("callback_accept_step")
        self._reject = found.get("callback_reject_step")

    @classmethod
    def of(cls, func: Any, state: FlatState | None, suffix: str = "") -> Callbacks | None:
        """The callbacks ``func`` defines (names with ``suffix``), or ``None``."""
        found = {
            name: cb for name in CALLBACK_NAMES
            if callable(cb := getattr(func, name + suffix, None))
        }
        return cls(found, state) if found else None

    def _args(self, t: float | Tensor, y: Tensor, h: float | Tensor) -> tuple[Any, Any, Any]:
        like = y
        tt = t if isinstance(t, Tensor) else torch.scalar_tensor(t, dtype=like.dtype)
        hh = h if isinstance(h, Tensor) else torch.scalar_tensor(h, dtype=like.dtype)
        return tt, (self.state.unflatten(y) if self.state is not None else y), hh

    def step(self, t: float | Tensor, y: Tensor, h: float | Tensor) -> None:
        if self._step is not None:
            self._step(*self._args(t, y, h))

    def decided(self, accepted: bool, t: float | Tensor, y: Tensor, h: float | Tensor) -> None:
        cb = self._accept if accepted else self._reject
        if cb is not None:
            cb(*self._args(t, y, h))


class FlatFuncWrapper:
    """Calls the user's ``func(t, y)`` on a flat state, counts calls, checks the first output.

    Args:
        func: the user's right-hand side ``func(t: Tensor, y) -> dy/dt`` (same structure as y0).
        state: the flattening of ``y0``.
        stats: counter to increment (``nfe_forward`` or ``nfe_backward`` per ``backward``).
        backward: count into ``nfe_backward`` instead of ``nfe_forward``.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        state: FlatState,
        stats: SolveStats | None,
        backward: bool = False,
    ) -> None:
        self.func = func
        self.state = state
        self.stats = stats if stats is not None else SolveStats()
        self.backward = backward
        self.checked = False
        #: torchdiffeq-style step callbacks of ``func`` (the forward solve's), or ``None``.
        self.callbacks = None if backward else Callbacks.of(func, state)

    def __call__(self, t: float | Tensor, y: Tensor) -> Tensor:
        """``func`` on the solver's state ``y`` (flat ``(N,)`` or the state's own shape);
        returns ``dy/dt`` laid out like ``y``. A float ``t`` becomes a 0-d tensor."""
        st = self.state
        tt = (
            t
            if isinstance(t, Tensor)
            # scalar_tensor builds the 0-d time with less dispatch work than torch.tensor.
            else torch.scalar_tensor(t, dtype=st.dtype, device=st.device)
        )
        out = self.func(tt, st.unflatten(y))
        if self.backward:
            self.stats.nfe_backward += 1
        else:
            self.stats.nfe_forward += 1
        if not self.checked:
            t0 = float(t.reshape(-1)[0]) if isinstance(t, Tensor) else float(t)
            self._check_output(out, t0, y)
            self.checked = True
        return self._like(out, y)

    def record(self, n: int) -> None:
        """Count ``n`` evaluations made without a Python call (compiled or replayed code)."""
        if self.backward:
            self.stats.nfe_backward += n
        else:
            self.stats.nfe_forward += n

    def raw(self, t: Tensor, y: Tensor) -> Tensor:
        """``func`` on the solver's state without counting or checking: for compiled code,
        which runs no Python per call (the caller counts, the first eager call checked)."""
        return self._like(self.func(t, self.state.unflatten(y)), y)

    def _like(self, out: Any, y: Tensor) -> Tensor:
        """func's output laid out like the solver's state ``y``."""
        if self.state.is_tuple:
            return self.state.flatten(out)
        return out if out.shape == y.shape else out.reshape(y.shape)

    def fast(self) -> Callable[[float | Tensor, Tensor], Tensor]:
        """The same call with the fewest Python operations, for the host loops' evaluations.

        Once the first output was checked and for a single-tensor state: a closure that builds
        the time tensor, calls ``func`` and counts. Otherwise (not yet checked, or a tuple
        state) the wrapper itself.
        """
        st = self.state
        if not self.checked or st.is_tuple:
            return self
        func, stats, dtype, device = self.func, self.stats, st.dtype, st.device
        shape = torch.Size(st.shapes[0])
        scalar = torch.scalar_tensor
        backward = self.backward

        def call(t: float | Tensor, y: Tensor) -> Tensor:
            tt = t if isinstance(t, Tensor) else scalar(t, dtype=dtype, device=device)
            out = func(tt, y if y.shape == shape else y.view(shape))
            if backward:
                stats.nfe_backward += 1
            else:
                stats.nfe_forward += 1
            return out if out.shape == y.shape else out.reshape(y.shape)

        return call

    def _check_output(self, out: Any, t: float, y: Tensor) -> None:
        st = self.state
        parts = out if isinstance(out, tuple) else (out,)
        if st.is_tuple != isinstance(out, tuple) or len(parts) != len(st.shapes):
            want = f"a tuple of {len(st.shapes)} tensors" if st.is_tuple else "a single tensor"
            got = f"a tuple of {len(parts)}" if isinstance(out, tuple) else type(out).__name__
            raise InvalidArgumentError(
                f"func must return {want} like y0, got {got}; return dy/dt with y0's structure"
            )
        for i, (p, shape) in enumerate(zip(parts, st.shapes, strict=True)):
            where = f"func output[{i}]" if st.is_tuple else "func output"
            if not isinstance(p, Tensor):
                raise InvalidTypeError(f"{where} must be a torch.Tensor, got {type(p).__name__}")
            if tuple(p.shape) != shape:
                raise InvalidArgumentError(
                    f"{where} has shape {tuple(p.shape)} but the state has shape {shape}; "
                    "func(t, y) must return dy/dt with the same shape as y"
                )
            if p.dtype != st.dtype:
                raise InvalidTypeError(
                    f"{where} has dtype {p.dtype} but y0 has dtype {st.dtype}; cast func's "
                    f"parameters/output to {st.dtype} (e.g. module.to({st.dtype}))"
                )
            if p.device != st.device:
                raise InvalidArgumentError(
                    f"{where} is on {p.device} but y0 is on {st.device}; move func (or y0) to "
                    "one device"
                )
        # One sync: sums are finite when every entry is; only an overflowing or NaN sum needs
        # the exact (slower) isfinite test.
        sums = torch.stack([y.detach().sum(), *(p.detach().sum() for p in parts)]).tolist()
        y_ok = math.isfinite(sums[0]) or bool(torch.isfinite(y).all())
        out_ok = all(math.isfinite(x) for x in sums[1:]) or all(
            bool(torch.isfinite(p).all()) for p in parts
        )
        if not y_ok:
            raise NonFiniteStateError(f"the initial state y0 contains NaN or inf (at t={t!r})")
        if not out_ok:
            raise NonFiniteStateError(
                f"func returned NaN or inf at t={t!r} for a finite state; check func"
            )


def lean(f: FlatFunc) -> FlatFunc:
    """The wrapper's lean call once its first output is checked (else ``f`` itself)."""
    return f.fast() if isinstance(f, FlatFuncWrapper) else f
