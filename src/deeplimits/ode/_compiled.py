"""``torch.compile`` of the loops (``ExecutionOptions(compile=True)``) and its cache.

Adaptive methods: the device loop's start and blocks of attempts, compiled with ``func``
inlined (the stage sums, the error norm, the controller and ``func``'s own ops fused).
Fixed-step methods: chunks of :data:`FIXED_CHUNK` equal steps and single steps. Compiled code
calls ``func`` raw (:meth:`FlatFuncWrapper.raw`); the loops count its evaluations.
"""

from __future__ import annotations

import dataclasses
import types
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from deeplimits.errors import InvalidArgumentError
from deeplimits.ode._batched_step import BatchedLoop, attempts, row_func, starter
from deeplimits.ode._cache import COMPILED, FIXED
from deeplimits.ode._capture import Runner, Starter
from deeplimits.ode._func import FlatFuncWrapper
from deeplimits.ode._solvers import ExplicitRK

__all__ = [
    "FIXED_CHUNK",
    "CompiledBlocks",
    "FixedCompiled",
    "compile_reason",
    "compiled_blocks",
    "fixed_compiled",
    "run_compiled",
]

#: Steps per compiled chunk of a fixed-step solve (a chunk is unrolled in the compiled code:
#: more steps per call, fewer calls, longer compilation).
FIXED_CHUNK = 10

#: Inductor's C++ wrapper on CPU: a block launches dozens of small kernels, and the default
#: Python wrapper's per-kernel calls would again be a dispatch cost per op, the thing compiling
#: removes. On CUDA the compiled blocks are captured in a CUDA graph, whose replay runs no
#: wrapper at all, so the Python wrapper is kept there (no C++ build at compile time).
_COMPILE_OPTIONS: dict[str, Any] = {"cpp_wrapper": True}


def compile_reason(module: Any, y: Tensor) -> str | None:
    """Why code for ``module`` on states like ``y`` cannot be compiled or captured, or
    ``None``."""
    if torch.is_grad_enabled() and (y.requires_grad or any(
        p.requires_grad for p in (module.parameters() if isinstance(module, nn.Module) else ())
    )):
        return "autograd is recording (use torch.no_grad() or odeint_adjoint)"
    if not isinstance(module, nn.Module):
        return "func is not an nn.Module (graphs and compiled code are cached per module)"
    return None


def _fresh_compile(fn: Callable[..., Any], device: torch.device) -> Callable[..., Any]:
    """``torch.compile`` of a copy of ``fn`` with its own code object.

    Dynamo keeps its compiled variants per code object, up to a recompile limit; the blocks of
    every cache entry are closures of the same code, so without the copy the ninth module or
    shape would fall back to eager mode.
    """
    fresh = types.FunctionType(
        fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )
    options = _COMPILE_OPTIONS if device.type == "cpu" else {}
    return torch.compile(fresh, dynamic=False, options=options)


@dataclass
class CompiledBlocks:
    """The compiled start and attempt blocks of one module, shapes and options."""

    func_ref: weakref.ref[Any]
    loop: BatchedLoop  # its ``ev`` calls the module raw: no counting inside compiled code
    start: Starter
    block: Runner  # k attempts
    block1: Runner  # 1 attempt
    start_evals: int


def compiled_blocks(
    key: tuple[Any, ...], module: nn.Module, f: FlatFuncWrapper, lp: BatchedLoop,
    shape: tuple[int, ...], per_sample: bool, k: int, rows_t: bool, first_step: float | None,
    start_evals: int,
) -> CompiledBlocks:
    """The cached compiled blocks under ``key``, or new ones (compiled at their first call)."""
    hit = COMPILED.get(key, module)
    if hit is not None:
        return hit  # type: ignore[no-any-return]
    raw = dataclasses.replace(lp, ev=row_func(f.raw, shape, per_sample))
    dev = lp.c_row.device
    c = CompiledBlocks(
        weakref.ref(module), raw, _fresh_compile(starter(raw, rows_t, first_step), dev),
        _fresh_compile(attempts(raw, k), dev), _fresh_compile(attempts(raw, 1), dev),
        start_evals,
    )
    COMPILED.put(key, c)
    return c


def run_compiled(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a compiled start or block; returns the state (and the flags of a block).

    A failure of torch.compile itself becomes a clear error. Compiled code may return one
    tensor for several state fields with equal values (e.g. all-false flags); they are copied
    apart, since aliased inputs would make the next call recompile.
    """
    try:
        out = fn(*args)
    except Exception as e:
        raise InvalidArgumentError(
            f"options compile=True, but running func under torch.compile failed: "
            f"{type(e).__name__}: {e}; use compile=False"
        ) from e
    st = out[0] if isinstance(out[0], tuple) else out
    seen: set[int] = set()
    if len({id(x) for x in st}) < len(st):
        fixed = []
        for x in st:
            fixed.append(x.clone() if id(x) in seen else x)
            seen.add(id(x))
        st = tuple(fixed)
    return (st, out[1]) if isinstance(out[0], tuple) else st


@dataclass
class FixedCompiled:
    """Compiled fixed steps of one module, method and state shape.

    ``chunk(t0, y, h)`` makes ``FIXED_CHUNK`` steps of size ``h`` from ``(t0, y)``, ``single``
    one; both return the last state and a ``(steps,)`` bool tensor: the state after each step
    is finite (``t0``, ``h``: 0-d tensors like the state).
    """

    func_ref: weakref.ref[Any]
    chunk: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
    single: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


def fixed_compiled(f: FlatFuncWrapper, solver: ExplicitRK, y: Tensor) -> FixedCompiled:
    """The compiled steps for ``f`` (the wrapper of an ``nn.Module``) on states like ``y``:
    cached, compiled at their first call (the dispatcher has checked that it can be)."""
    module = f.func
    key = (id(module), solver.tableau, tuple(y.shape), y.dtype, str(y.device))
    hit = FIXED.get(key, module)
    if hit is not None:
        return hit  # type: ignore[no-any-return]
    ev = f.raw

    def steps(n: int) -> Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]:
        def run(t0: Tensor, yy: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
            ok = []
            for i in range(n):
                yy = solver.step(ev, t0 + i * h, yy, h)[0]
                ok.append(torch.isfinite(yy).all())
            return yy, torch.stack(ok)

        return run

    c = FixedCompiled(weakref.ref(module), _fresh_compile(steps(FIXED_CHUNK), y.device),
                      _fresh_compile(steps(1), y.device))
    FIXED.put(key, c)
    return c
