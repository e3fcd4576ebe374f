"""The device-resident adaptive loop, optionally replayed from a CUDA graph, and per-sample steps.

The host loop of :func:`deeplimits.ode._odeint.solve_adaptive` reads the error ratio back after
every step (one host sync per step). Here every decision is a tensor op, so the host only has
to look at one small flag tensor every ``sync_every`` attempts:

- time ``t``, the step size ``|dt|``, the previous error ratio and the "done" flag are tensors
  of shape ``(rows, 1)``; accept/reject is ``torch.where``; the PI controller is evaluated with
  ``pow``/``clamp`` (same formula as :meth:`PIController.factor`, including the rules after a
  rejection and for NaN/inf trials);
- outputs are written into a ``(T, rows, M)`` buffer: after each attempt every output time in
  ``(t, t1]`` of an accepted row gets the method's interpolant (``y1`` itself at ``t1``);
- attempts after a row has finished change nothing for that row (they are still computed).

``rows`` is 1 for an ordinary solve (the whole state is one row, exactly the host loop's norm)
and the batch size with ``per_sample=True`` (each row has its own ``t``, ``dt``, error norm and
accept/reject, as torchode; Lienen & Günnemann 2022, "torchode: A Parallel ODE Solver for
PyTorch").

On CUDA, ``sync_every`` attempts can be captured once in a CUDA graph (static input/output
buffers, warm-up on a side stream, as in PyTorch's ``torch.cuda.graphs`` documentation) and
replayed; the graph is cached per ``nn.Module`` func, shapes and options. With
``compile=True`` the start and the blocks of attempts are compiled by ``torch.compile`` (func
inlined); on CUDA those compiled blocks are what the graphs capture (fused kernels, replayed
without launch costs; tested on CPU with an eager stand-in for the capture, not yet on a GPU).
"""

from __future__ import annotations

import dataclasses
import math
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from deeplimits.errors import (
    InvalidArgumentError,
)
from deeplimits.ode._checks import (
    FlatFuncWrapper,
    blow_up_error,
    max_steps_error,
    underflow_error,
)
from deeplimits.ode._controller import DEFAULT_CONTROLLER, PIController
from deeplimits.ode._options import AdaptiveOptions, SolveStats
from deeplimits.ode._stepper import rk_step
from deeplimits.ode._tableaux import ButcherTableau

__all__ = [
    "FIXED_CHUNK",
    "FixedCompiled",
    "clear_graph_cache",
    "fixed_compiled",
    "solve_adaptive_device",
    "use_device_loop",
]

_EPS8 = 8 * 2.220446049250313e-16


def use_device_loop(opts: AdaptiveOptions, y0: Tensor) -> bool:
    """Whether ``opts`` select the device loop for a state on ``y0.device``."""
    if opts.per_sample or opts.compile:
        return True
    if opts.device_loop is None:
        return y0.device.type == "cuda"
    return opts.device_loop


@dataclass
class _Loop:
    """Constants of one solve (everything the attempt body needs besides the state)."""

    tableau: ButcherTableau
    ev: Callable[[Tensor, Tensor], Tensor]  # (t (R,1), Y (R,M)) -> (R,M)
    rtol: float
    atol: float
    ctrl: PIController
    err_order: int
    d: float
    norm_dims: int | None
    inv_sqrt_n: float
    evals_per_attempt: int
    coef: Tensor  # (P, S) dense-output coefficients
    powers: Tensor  # (P,) 1..P
    c_row: Tensor  # (S,) the nodes c
    zero: Tensor  # () 0.0


# State tuple layout (all tensors; functional updates, so autograd can record them).
_FIELDS = (
    "t", "habs", "Y", "K1", "prev", "s0", "done", "bad", "nacc", "nrej", "uf", "nf",
    "outs", "ts", "t_end",
)
_IDX = {name: i for i, name in enumerate(_FIELDS)}


def _scale(lp: _Loop, Y: Tensor) -> Tensor:
    Yn = Y if lp.norm_dims is None else Y[:, : lp.norm_dims]
    return Yn.abs().mul(lp.rtol).add(lp.atol)  # (R, Mn)


def _attempt(lp: _Loop, st: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """One attempted step of every unfinished row; returns the updated state tuple."""
    t, habs, Y, K1, prev, s0, done, bad, nacc, nrej, uf, nf, outs, ts, t_end = st
    d, ctrl = lp.d, lp.ctrl
    active = ~done  # (R, 1)
    remaining = (t_end - t) * d  # (R, 1), >= 0
    last = habs >= remaining
    h = torch.where(last, remaining, habs) * d  # (R, 1) signed
    tst = torch.addcmul(t, h, lp.c_row)  # (R, S): every stage time in one kernel
    Y1, err, ks = rk_step(lp.tableau, lp.ev, t, Y, h, K1,
                          times=[tst[:, i : i + 1] for i in range(lp.c_row.shape[0])])
    if err is None:  # pragma: no cover - solve_adaptive_device checks the tableau
        raise RuntimeError("internal error: adaptive tableau without error weights")
    with torch.no_grad():
        s1 = _scale(lp, Y1)
        if lp.norm_dims is None:
            q = (err / torch.maximum(s0, s1)).addcmul_(Y1, lp.zero)  # + 0*Y1: NaN/inf -> NaN
            ratio = torch.linalg.vector_norm(q, dim=1, keepdim=True) * lp.inv_sqrt_n  # (R, 1)
        else:
            q = err[:, : lp.norm_dims] / torch.maximum(s0, s1)
            ratio = torch.linalg.vector_norm(q, dim=1, keepdim=True) * lp.inv_sqrt_n
            ratio = ratio + Y1.sum(dim=1, keepdim=True) * 0.0  # NaN if Y1 holds NaN/inf
        finite = torch.isfinite(ratio)
        ok = finite & (ratio <= 1.0)
        acc = ok & active
        rej = active & ~ok
        k = lp.err_order
        f_acc = (
            ratio.pow(-(ctrl.pcoeff + ctrl.icoeff) / k) * prev.pow(ctrl.pcoeff / k) * ctrl.safety
        ).clamp(ctrl.factor_min, ctrl.factor_max)
        f_rej = (ratio.pow(-1.0 / k) * ctrl.safety).clamp(ctrl.factor_min, 1.0)
        factor = torch.where(finite, torch.where(ok, f_acc, f_rej), ctrl.factor_min)
        hnew = h.abs() * factor
        if ctrl.dt_max is not None:
            hnew = hnew.clamp(max=ctrl.dt_max)
        t1 = torch.where(last, t_end, t + h)  # (R, 1)
    if outs.shape[0] > 2:
        outs = _emit(lp, outs, ts, t, t1, h, acc, Y, Y1, ks)
    # (The last output is the final state itself: solve_adaptive_device writes it, so a solve
    # with t = [t0, t1] needs no interpolation kernels at all.)
    t = torch.where(acc, t1, t)
    Y = torch.where(acc, Y1, Y)
    K1 = torch.where(acc, ks[-1], K1)
    with torch.no_grad():
        s0 = torch.where(acc, s1, s0)
        prev = torch.where(acc, ratio.clamp(min=1e-4), prev)
        habs = torch.where(active, hnew, habs)
        done = done | (acc & last)
        bad = torch.where(active, torch.where(finite, 0, bad + 1), bad)
        nacc = nacc + acc.long()
        nrej = nrej + rej.long()
        still = ~done
        thr = (t.abs().clamp(min=1.0) * _EPS8).clamp(min=ctrl.dt_min)
        under = still & (habs < thr)
        uf = uf | (under & (bad == 0))
        nf = nf | (under & (bad > 0)) | (still & (bad > 10))
    return (t, habs, Y, K1, prev, s0, done, bad, nacc, nrej, uf, nf, outs, ts, t_end)


def _emit(
    lp: _Loop, outs: Tensor, ts: Tensor, t: Tensor, t1: Tensor, h: Tensor, acc: Tensor,
    Y: Tensor, Y1: Tensor, ks: list[Tensor],
) -> Tensor:
    """Write the output times in ``(t, t1]`` of accepted rows into ``outs`` ``(T, R, M)``:
    the method's interpolant, or ``y1`` itself at ``t1``."""
    d = lp.d
    with torch.no_grad():
        tsb = ts.view(-1, 1, 1) if ts.ndim == 1 else ts.t().unsqueeze(-1)  # (T, 1|R, 1)
        in_step = (d * (tsb - t) > 0) & (d * (tsb - t1) <= 0) & acc  # (T, R, 1)
        # Zero outside the step: finished rows attempt h = 0, and an inf/NaN theta would turn
        # the masked-out values' zero gradients into NaN in backward.
        theta = torch.where(in_step, (tsb - t) / torch.where(h == 0, 1.0, h), 0.0)  # (T, R, 1)
        at_end = tsb == t1  # (T, R, 1)
    K = torch.stack(ks)  # (S, R, M)
    C = torch.tensordot(lp.coef, K, dims=1)  # (P, R, M)
    pw = theta.pow(lp.powers)  # (T, R, P)
    vals = torch.addcmul(Y, h, torch.einsum("trp,prm->trm", pw, C))  # (T, R, M)
    vals = torch.where(at_end, Y1, vals)
    outs = torch.where(in_step, vals, outs)
    return outs


def _initial_habs(
    lp: _Loop, t0: Tensor, Y0: Tensor, F0: Tensor, span: Tensor, order: int
) -> Tensor:
    """Hairer, Norsett & Wanner (1993), sec. II.4 starting step per row, with tensor ops."""
    with torch.no_grad():
        s = _scale(lp, Y0)
        Yn = Y0 if lp.norm_dims is None else Y0[:, : lp.norm_dims]
        Fn = F0 if lp.norm_dims is None else F0[:, : lp.norm_dims]
        d0 = torch.linalg.vector_norm(Yn / s, dim=1, keepdim=True) * lp.inv_sqrt_n
        d1 = torch.linalg.vector_norm(Fn / s, dim=1, keepdim=True) * lp.inv_sqrt_n
        h0 = torch.minimum(torch.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1), span)
        Y1 = torch.addcmul(Y0, h0 * lp.d, F0)
        F1 = lp.ev(t0 + lp.d * h0, Y1)
        F1n = F1 if lp.norm_dims is None else F1[:, : lp.norm_dims]
        d2 = torch.linalg.vector_norm((F1n - Fn) / s, dim=1, keepdim=True) * lp.inv_sqrt_n / h0
        dm = torch.maximum(d1, d2)
        h1 = torch.where(
            dm <= 1e-15, (h0 * 1e-3).clamp(min=1e-6), (0.01 / dm).pow(1.0 / (order + 1))
        )
        h = torch.minimum(torch.minimum(100 * h0, h1), span)
        return torch.where(torch.isfinite(d2), h, h0)


def _start(
    lp: _Loop, Y0: Tensor, ts_dev: Tensor, rows_t: bool, first_step: float | None, order: int
) -> tuple[tuple[Tensor, ...], int]:
    """The state tuple at the start of a solve, and the evaluations it took, with tensor ops
    only (no host syncs: the same code runs eagerly and inside the start graph).

    Args:
        Y0: ``(R, M)`` initial state.
        ts_dev: ``(T,)`` output times, or ``(R, T)`` with ``rows_t`` (one row per batch row).
    """
    R, M = Y0.shape
    T = ts_dev.shape[-1]
    if rows_t:
        t0, t_end = ts_dev[:, :1].clone(), ts_dev[:, -1:].clone()  # (R, 1)
    else:
        t_end = ts_dev[-1:].reshape(1, 1).expand(R, 1).clone()  # (R, 1)
        t0 = ts_dev[:1].reshape(1, 1).expand(R, 1).clone()  # (R, 1)
    span = (t_end - t0).abs()  # (R, 1)
    F0 = lp.ev(t0, Y0)  # (R, M); on the eager path the wrapper checks func's output here
    if first_step is not None:
        habs = torch.full((R, 1), first_step, dtype=Y0.dtype, device=Y0.device)
        evals = 1
    else:
        habs = _initial_habs(lp, t0, Y0, F0, span, order)
        evals = 2
    if lp.ctrl.dt_max is not None:
        habs = habs.clamp(max=lp.ctrl.dt_max)
    with torch.no_grad():
        s0 = _scale(lp, Y0)
    zeros_i = torch.zeros((R, 1), dtype=torch.long, device=Y0.device)
    false = torch.zeros((R, 1), dtype=torch.bool, device=Y0.device)
    outs = torch.cat([Y0.unsqueeze(0), Y0.new_zeros((T - 1, R, M))])  # (T, R, M)
    st = (
        t0, habs, Y0, F0, torch.ones((R, 1), dtype=Y0.dtype, device=Y0.device), s0,
        false.clone(), zeros_i.clone(), zeros_i.clone(), zeros_i.clone(), false.clone(),
        false.clone(), outs, ts_dev, t_end,
    )
    return st, evals


#: ``state -> (state after some attempts, _flag_values)``: eager or compiled.
Runner = Callable[[tuple[Tensor, ...]], tuple[tuple[Tensor, ...], Tensor]]
#: ``(Y0, ts) -> state at the start``: eager or compiled.
Starter = Callable[[Tensor, Tensor], tuple[Tensor, ...]]


def _attempts(lp: _Loop, n: int) -> Runner:
    """``n`` attempts, then the flags (the body of a graph block and of a compiled block)."""

    def run(st: tuple[Tensor, ...]) -> tuple[tuple[Tensor, ...], Tensor]:
        for _ in range(n):
            st = _attempt(lp, st)
        return st, _flag_values(lp, st)

    return run


def _starter(lp: _Loop, rows_t: bool, first_step: float | None) -> Starter:
    """The solve's start as a function of ``(Y0, ts)`` only."""

    def start(Y0: Tensor, ts: Tensor) -> tuple[Tensor, ...]:
        return _start(lp, Y0, ts, rows_t, first_step, lp.tableau.order)[0]

    return start


def _flag_values(lp: _Loop, st: tuple[Tensor, ...]) -> Tensor:
    """``(4,)``: all rows done, any underflow, any NaN failure, most steps left (estimated
    from the next step size), in the state's dtype; read with one host sync."""
    with torch.no_grad():
        done, uf, nf = st[_IDX["done"]], st[_IDX["uf"]], st[_IDX["nf"]]
        t, habs, t_end = st[_IDX["t"]], st[_IDX["habs"]], st[_IDX["t_end"]]
        left = torch.where(done, 0.0, (t_end - t) * lp.d / habs).max()
        dt = left.dtype
        return torch.stack([done.all().to(dt), uf.any().to(dt), nf.any().to(dt), left])


# ---------------------------------------------------------------------------------------------
# CUDA graphs


@dataclass
class _Graph:
    func_ref: weakref.ref[Any]
    graph: Any  # torch.cuda.CUDAGraph of k attempts
    graph1: Any  # ... of 1 attempt, on the same static buffers (for the last few attempts)
    start: Any  # ... of the solve's start: static state from y0_in and ts_in
    static: tuple[Tensor, ...]
    flags: Tensor  # (4,) _flag_values after each replay of graph / graph1
    y0_in: Tensor  # (R, M) input of ``start``
    ts_in: Tensor  # (T,) or (R, T) input of ``start``
    start_evals: int
    # The capture's constants (coefficient tensors, ...): the graph reads their memory at
    # replay, so they must live as long as the graph.
    loop: _Loop
    compiled: bool  # the captured blocks are compiled code (options compile=True)


_GRAPHS: OrderedDict[tuple[Any, ...], _Graph | None] = OrderedDict()
_MAX_GRAPHS = 8  # entries per cache (graphs, compiled solves, compiled fixed steps)


def _lru_get(
    cache: OrderedDict[tuple[Any, ...], Any], key: tuple[Any, ...], module: nn.Module
) -> Any:
    """The entry of ``module`` under ``key`` (marked as just used), or ``None``."""
    entry = cache.get(key)
    if entry is not None and entry.func_ref() is module:
        cache.move_to_end(key)
        return entry
    return None


def _lru_put(cache: OrderedDict[tuple[Any, ...], Any], key: tuple[Any, ...], value: Any) -> None:
    """Store ``value`` (``None``: remembered failure) and drop the least recently used."""
    cache[key] = value
    while len(cache) > _MAX_GRAPHS:
        cache.popitem(last=False)


def clear_graph_cache() -> None:
    """Drop every cached CUDA graph (and its memory pool) and compiled solve."""
    _GRAPHS.clear()
    _COMPILED.clear()
    _FIXED.clear()


def _graph_key(
    func: nn.Module, y0: Tensor, ts_shape: tuple[int, ...], tableau: ButcherTableau,
    rtol: float, atol: float, ctrl: PIController, d: float, norm_dims: int | None,
    opts: AdaptiveOptions, graph: bool,
) -> tuple[Any, ...]:
    """The cache key of a graph (``graph``) or compiled solve. A CUDA graph reads the
    parameters' and buffers' memory, so their addresses are part of its key; compiled code is
    guarded by torch.compile itself (a replaced parameter recompiles), so for it they are left
    out."""
    if graph:
        params = tuple(p.data_ptr() for p in func.parameters())
        buffers = tuple(b.data_ptr() for b in func.buffers())
    else:
        params = buffers = ()
    return (
        id(func), params, buffers, tableau.name, tuple(y0.shape), y0.dtype, str(y0.device),
        ts_shape, rtol, atol, ctrl, d, norm_dims, opts.sync_every, opts.per_sample,
        opts.first_step, opts.compile,
    )


def _make_block(run: Runner, static: tuple[Tensor, ...], flags: Tensor) -> Callable[[], None]:
    """``run``'s attempts from the static state, written back into it, and its flags (the
    captured work: a replay and one read of ``flags`` is all a sync costs)."""

    def block() -> None:
        cur, fl = run(static)
        for s, c in zip(static, cur, strict=True):
            if s is not c:
                s.copy_(c)
        flags.copy_(fl)

    return block


def _make_start_block(
    start: Starter, static: tuple[Tensor, ...], y0_in: Tensor, ts_in: Tensor
) -> Callable[[], None]:
    """The solve's start from the static inputs, written into the static state."""

    def block() -> None:
        for s, x in zip(static, start(y0_in, ts_in), strict=True):
            if s is not x:
                s.copy_(x)

    return block


@dataclass
class _Blocks:
    """The three blocks of a graph entry and the buffers they share."""

    static: tuple[Tensor, ...]
    flags: Tensor
    y0_in: Tensor
    ts_in: Tensor
    steps: Callable[[], None]
    step1: Callable[[], None]
    start: Callable[[], None]


def _blocks(
    st: tuple[Tensor, ...], run_k: Runner, run_1: Runner, start: Starter
) -> tuple[_Blocks, tuple[Tensor, ...]]:
    """Static copies of the state and inputs, the blocks on them, and a copy to restore."""
    static = tuple(x.clone() for x in st)
    init = tuple(x.clone() for x in st)
    flags = torch.zeros(4, dtype=st[_IDX["Y"]].dtype, device=st[_IDX["Y"]].device)
    y0_in = st[_IDX["Y"]].clone()
    ts_in = st[_IDX["ts"]].clone()
    b = _Blocks(
        static, flags, y0_in, ts_in, _make_block(run_k, static, flags),
        _make_block(run_1, static, flags), _make_start_block(start, static, y0_in, ts_in),
    )
    return b, init


def _capture(
    st: tuple[Tensor, ...], run_k: Runner, run_1: Runner, start: Starter
) -> tuple[Any, Any, Any, _Blocks]:
    """Capture ``run_k`` (``k`` attempts), ``run_1`` (1 attempt) and the start, all on the
    same static buffers; the runners are eager or compiled code (compiled: the warm-up runs
    compile them, so the capture records their kernels only).

    Follows the recipe of PyTorch's CUDA-graph docs: warm up on a side stream, capture with
    ``torch.cuda.graph``, replay after copying new inputs into the static tensors. Warm-up runs
    mutate the static state, so it is restored afterwards. All graphs read and write the same
    static buffers, so a solve can switch between them without copies.
    """
    b, init = _blocks(st, run_k, run_1, start)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            b.start()
            b.steps()
        b.step1()
    torch.cuda.current_stream().wait_stream(side)
    graph, graph1, start = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        b.steps()
    with torch.cuda.graph(graph1):
        b.step1()
    with torch.cuda.graph(start):
        b.start()
    for s, x in zip(b.static, init, strict=True):
        s.copy_(x)
    return graph, graph1, start, b


class _EagerReplay:
    """Stands in for a CUDA graph in tests on CPU: ``replay()`` runs the block eagerly."""

    def __init__(self, block: Callable[[], None]) -> None:
        self.replay = block


def _capture_eager(
    st: tuple[Tensor, ...], run_k: Runner, run_1: Runner, start: Starter
) -> tuple[Any, Any, Any, _Blocks]:
    """:func:`_capture` without CUDA (same static buffers, warm-up and restore), so tests on
    CPU exercise the whole graph path except the capture itself."""
    b, init = _blocks(st, run_k, run_1, start)
    for _ in range(3):  # two warm-ups and the "capture"
        b.start()
        b.steps()
    b.step1()
    b.step1()
    for s, x in zip(b.static, init, strict=True):
        s.copy_(x)
    return _EagerReplay(b.steps), _EagerReplay(b.step1), _EagerReplay(b.start), b


#: Device types on which CUDA-graph replay is attempted (tests add "cpu" with _capture_eager).
_GRAPH_DEVICES: tuple[str, ...] = ("cuda",)


# ---------------------------------------------------------------------------------------------
# torch.compile (options compile=True)


@dataclass
class _Compiled:
    """The compiled start and attempt blocks of one module, shapes and options."""

    func_ref: weakref.ref[Any]
    loop: _Loop  # its ``ev`` calls the module directly: no counting inside compiled code
    start: Starter
    block: Runner  # k attempts
    block1: Runner  # 1 attempt
    start_evals: int


#: Compiled solves, least recently used first; an entry keeps its module alive (its ``ev``
#: calls it), so at most ``_MAX_GRAPHS`` modules are held.
_COMPILED: OrderedDict[tuple[Any, ...], _Compiled] = OrderedDict()
#: Inductor's C++ wrapper on CPU: a block launches dozens of small kernels, and the default
#: Python wrapper's per-kernel calls would again be a dispatch cost per op, the thing compiling
#: removes. On CUDA the compiled blocks are captured in a CUDA graph, whose replay runs no
#: wrapper at all, so the Python wrapper is kept there (no C++ build at compile time).
_COMPILE_OPTIONS: dict[str, Any] = {"cpp_wrapper": True}


def _row_func(
    call: Callable[[Tensor, Tensor], Tensor], shape: tuple[int, ...], per_sample: bool
) -> Callable[[Tensor, Tensor], Tensor]:
    """``call`` (on states of ``shape``) as the loop's ``ev``: times ``(R, 1)`` and states
    ``(R, M)``, with ``R`` the batch (per-sample) or 1."""
    R = shape[0] if per_sample else 1
    M = math.prod(shape) // R if R else 0

    def ev(t: Tensor, Y: Tensor) -> Tensor:
        targ = t.reshape(R) if per_sample else t.reshape(())
        return call(targ, Y.reshape(shape)).reshape(R, M)

    return ev


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


def _new_compiled(
    key: tuple[Any, ...], module: nn.Module, f: FlatFuncWrapper, lp: _Loop, shape: tuple[int, ...],
    per_sample: bool, k: int, rows_t: bool, first_step: float | None, start_evals: int,
) -> _Compiled:
    """Compiled blocks for this key (compiled at their first call), cached."""
    raw = dataclasses.replace(lp, ev=_row_func(f.raw, shape, per_sample))
    dev = lp.zero.device
    c = _Compiled(weakref.ref(module), raw,
                  _fresh_compile(_starter(raw, rows_t, first_step), dev),
                  _fresh_compile(_attempts(raw, k), dev), _fresh_compile(_attempts(raw, 1), dev),
                  start_evals)
    _lru_put(_COMPILED, key, c)
    return c


def _run_compiled(fn: Callable[..., Any], *args: Any) -> Any:
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


# Fixed-step methods (FixedStepOptions compile=True)

#: Steps per compiled chunk of a fixed-step solve (a chunk is unrolled in the compiled code:
#: more steps per call, fewer calls, longer compilation).
FIXED_CHUNK = 10


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


_FIXED: OrderedDict[tuple[Any, ...], FixedCompiled] = OrderedDict()


def fixed_compiled(f: Callable[..., Tensor], tableau: ButcherTableau, y: Tensor) -> FixedCompiled:
    """The compiled steps for ``f`` (a :class:`FlatFuncWrapper` of an ``nn.Module``) on states
    like ``y``: cached, compiled at their first call.

    Raises:
        InvalidArgumentError: autograd is recording, or ``func`` is not an ``nn.Module``.
    """
    module = f.func if isinstance(f, FlatFuncWrapper) else None
    reason = _compile_reason(module, y)
    if reason is not None or not isinstance(f, FlatFuncWrapper) or module is None:
        raise InvalidArgumentError(f"options compile=True, but {reason}")
    key = (id(module), tableau.name, tuple(y.shape), y.dtype, str(y.device))
    hit = _lru_get(_FIXED, key, module)
    if hit is not None:
        return hit
    ev = f.raw

    def steps(n: int) -> Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]:
        def run(t0: Tensor, yy: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
            ok = []
            for i in range(n):
                yy = rk_step(tableau, ev, t0 + i * h, yy, h)[0]
                ok.append(torch.isfinite(yy).all())
            return yy, torch.stack(ok)

        return run

    c = FixedCompiled(weakref.ref(module), _fresh_compile(steps(FIXED_CHUNK), y.device),
                      _fresh_compile(steps(1), y.device))
    _lru_put(_FIXED, key, c)
    return c


def _compile_reason(module: Any, y: Tensor) -> str | None:
    """Why ``compile=True`` cannot be used, or ``None``."""
    if torch.is_grad_enabled() and (y.requires_grad or any(
        p.requires_grad for p in (module.parameters() if isinstance(module, nn.Module) else ())
    )):
        return "autograd is recording (use torch.no_grad() or odeint_adjoint)"
    if not isinstance(module, nn.Module):
        return "func is not an nn.Module (graphs and compiled code are cached per module)"
    return None


# ---------------------------------------------------------------------------------------------


def _loop_constants(tableau: ButcherTableau, dtype: torch.dtype, device: torch.device) -> tuple[
    Tensor, Tensor, Tensor, Tensor
]:
    """``coef, powers, c_row, zero`` of :class:`_Loop`, built once per tableau, dtype and
    device (each build is a host-to-device copy)."""
    key = (tableau, dtype, str(device))
    hit = _CONSTANTS.get(key)
    if hit is None:
        hit = (
            torch.tensor(tableau.dense, dtype=dtype, device=device),
            torch.arange(1, len(tableau.dense) + 1, dtype=dtype, device=device),
            torch.tensor(tableau.c, dtype=dtype, device=device),
            torch.zeros((), dtype=dtype, device=device),
        )
        _CONSTANTS[key] = hit
    return hit


_CONSTANTS: dict[tuple[Any, ...], tuple[Tensor, Tensor, Tensor, Tensor]] = {}


def solve_adaptive_device(
    f: Callable[[Any, Tensor], Tensor],
    y0: Tensor,
    ts: list[float] | list[list[float]],
    tableau: ButcherTableau,
    opts: AdaptiveOptions,
    rtol: float,
    atol: float,
    stats: SolveStats,
    norm_dims: int | None = None,
    backward: bool = False,
) -> list[Tensor]:
    """The adaptive solve on the device loop; same contract as ``solve_adaptive``.

    Args:
        f: the solver's right-hand side on states shaped like ``y0`` (a
            :class:`FlatFuncWrapper` or the adjoint's augmented dynamics).
        y0: the state (``(batch, ...)`` with ``opts.per_sample``).
        ts: output times as floats (``ts[0]`` is the start), or with ``per_sample`` one list
            per batch row (same length, same direction; each row starts at its own ``t0``).
        Others as ``solve_adaptive``.

    Returns:
        The state at each of ``ts``.

    Raises:
        InvalidArgumentError: a non-FSAL tableau (dense output would need an extra evaluation),
            or ``per_sample`` with ``norm_dims``, or ``cuda_graph=True`` where no graph can be
            used.
        MaxStepsExceededError, NonFiniteStateError, StepSizeUnderflowError: as the host loop
            (detected at the next sync, so up to ``sync_every - 1`` attempts later).

    With a cached CUDA graph the start of the solve is replayed too (one copy of ``y0`` and of
    the output times in, one replay): func's output is then not checked again, and a NaN/inf
    ``y0`` is reported by the loop (``NonFiniteStateError`` at ``t0``).
    """
    if not tableau.fsal or not tableau.dense or tableau.b_err is None:
        raise InvalidArgumentError(
            f"the device loop needs an FSAL adaptive method with dense output, got "
            f"{tableau.name!r}; use dopri5, tsit5 or bosh3, or device_loop=False"
        )
    per_sample = opts.per_sample
    if per_sample and norm_dims is not None:
        raise InvalidArgumentError("per_sample=True cannot be combined with a seminorm")
    ctrl = opts.controller if opts.controller is not None else DEFAULT_CONTROLLER
    shape = tuple(y0.shape)
    R = shape[0] if per_sample else 1
    M = y0.numel() // R if R else 0
    dtype, device = y0.dtype, y0.device
    rows_t = bool(ts) and isinstance(ts[0], list)
    first: list[float] = ts[0] if rows_t else ts  # type: ignore[assignment]
    T = len(first)
    d = 1.0 if first[-1] > first[0] else -1.0
    t_end_text = "each row's last time" if rows_t else repr(first[-1])
    first_step = None if opts.first_step is None else float(opts.first_step)
    Y0 = y0.reshape(R, M)
    ts_host = torch.tensor(ts, dtype=dtype)  # (T,) or (R, T), on the host
    module, capture = _graph_module(f, Y0, opts, backward)
    gkey = ckey = None
    graph: _Graph | None = None
    comp: _Compiled | None = None
    if module is not None:
        args = (module, Y0, tuple(ts_host.shape), tableau, rtol, atol, ctrl, d, norm_dims, opts)
        if capture:
            gkey = _graph_key(*args, graph=True)
            graph = _lru_get(_GRAPHS, gkey, module)
        if opts.compile and graph is None:
            ckey = _graph_key(*args, graph=False)
            comp = _lru_get(_COMPILED, ckey, module)
    if graph is not None:
        # Replayed start: y0 and the times in, one replay; the state is the static one.
        graph.y0_in.copy_(Y0)
        graph.ts_in.copy_(ts_host)
        graph.start.replay()
        lp, st, start_evals = graph.loop, graph.static, graph.start_evals
        stats.nfe_forward += start_evals  # a CUDA replay runs no Python: func does not count
    elif comp is not None:
        st = _run_compiled(comp.start, Y0, ts_host.to(device))
        lp, start_evals = comp.loop, comp.start_evals
        stats.nfe_forward += start_evals  # compiled code does not count: func is called raw
    else:
        ts_dev = ts_host.to(device)
        ev = _row_func(f, shape, per_sample)
        coef, powers, c_row, zero = _loop_constants(tableau, dtype, device)
        nd = norm_dims
        lp = _Loop(
            tableau=tableau, ev=ev, rtol=rtol, atol=atol, ctrl=ctrl,
            err_order=int(tableau.error_order or tableau.order) + 1, d=d, norm_dims=nd,
            inv_sqrt_n=1.0 / math.sqrt(max(M if nd is None else nd, 1)),
            evals_per_attempt=tableau.num_stages - 1, coef=coef, powers=powers, c_row=c_row,
            zero=zero,
        )
        st, start_evals = _start(lp, Y0, ts_dev, rows_t, first_step, tableau.order)
        if ckey is not None and module is not None and isinstance(f, FlatFuncWrapper):
            comp = _new_compiled(ckey, module, f, lp, shape, per_sample, opts.sync_every,
                                 rows_t, first_step, start_evals)
    if graph is None and gkey is not None and module is not None:
        # A new graph (its first solve, or after the parameters were replaced): captured from
        # this start, of the compiled blocks with compile=True, else of the eager ones.
        graph = _new_graph(gkey, module, lp, st, opts, rows_t, first_step, start_evals,
                           stats, comp)
        if graph is not None:
            st = graph.static  # the capture left it equal to st
    if not backward:  # the adjoint's backward solves never use graphs; keep the forward's flag
        stats.cuda_graph_used = graph is not None
        stats.compiled = comp is not None or (graph is not None and graph.compiled)
    k = opts.sync_every
    attempts = 0
    n_est = k
    while True:
        if attempts >= opts.max_num_steps:
            t_now = float(st[_IDX["t"]].min() if d > 0 else st[_IDX["t"]].max())
            raise max_steps_error(opts.max_num_steps, t_now, t_end_text)
        # Fewer than k attempts when the steps left (estimated at the last sync) are fewer:
        # attempts past the end are pure waste, a sync is cheaper.
        n_now = max(1, min(k, n_est, opts.max_num_steps - attempts))
        if graph is not None:
            # Set (not add to) the count: a CUDA replay runs no Python, so func's wrapper does
            # not count; the CPU test stand-in replays eagerly and would count twice.
            before = stats.nfe_forward
            if n_now == k:
                graph.graph.replay()
            else:
                for _ in range(n_now):
                    graph.graph1.replay()
            stats.nfe_forward = before + lp.evals_per_attempt * n_now
            flags = graph.flags
        elif comp is not None:
            if n_now == k:
                st, flags = _run_compiled(comp.block, st)
            else:
                for _ in range(n_now):
                    st, flags = _run_compiled(comp.block1, st)
            stats.nfe_forward += lp.evals_per_attempt * n_now
        else:
            for _ in range(n_now):
                st = _attempt(lp, st)
            flags = _flag_values(lp, st)
        attempts += n_now
        all_done, any_uf, any_nf, steps_left = flags.tolist()  # the one sync per block
        n_est = math.ceil(steps_left) if math.isfinite(steps_left) else k
        if any_nf or any_uf:
            uf, nf = st[_IDX["uf"]], st[_IDX["nf"]]
            bad_rows = (nf | uf).reshape(-1)
            t_bad = st[_IDX["t"]].reshape(-1)[bad_rows]
            t_now = float(t_bad.min() if d > 0 else t_bad.max())
            h_now = float(st[_IDX["habs"]].reshape(-1)[bad_rows].min())
            if any_nf:
                raise blow_up_error(t_now, h_now)
            raise underflow_error(t_now, h_now, ctrl.dt_min)
        if all_done:
            break
    counts = torch.stack([st[_IDX["nacc"]], st[_IDX["nrej"]]]).reshape(2, R).cpu()
    nacc, nrej = counts[0], counts[1]
    # Every attempt of an unfinished row is accepted or rejected: its evaluations follow.
    nfe = (nacc + nrej) * lp.evals_per_attempt + start_evals
    if backward:
        stats.backward_accepted_steps += int(nacc.max())
        stats.backward_rejected_steps += int(nrej.max())
    else:
        stats.accepted_steps += int(nacc.max())
        stats.rejected_steps += int(nrej.max())
    if per_sample:
        stats.nfe_per_sample = nfe
    out = st[_IDX["outs"]]
    if graph is not None:
        out = out.clone()  # the static buffer is overwritten by the next replay
    outs = list(out.reshape(T, *shape).unbind(0))
    final = st[_IDX["Y"]]
    outs[-1] = final.clone().reshape(shape) if graph is not None else final.reshape(shape)
    return outs


def _graph_module(
    f: Callable[[Any, Tensor], Tensor], Y0: Tensor, opts: AdaptiveOptions, backward: bool
) -> tuple[nn.Module | None, bool]:
    """``(module, capture)``: the ``nn.Module`` whose solves can be cached (replayed from a
    CUDA graph, or compiled with ``compile=True``), or ``None``; and whether to capture.

    Raises:
        InvalidArgumentError: ``cuda_graph=True`` or ``compile=True`` where they cannot be used.
    """
    if backward or (opts.cuda_graph is False and not opts.compile):
        return None, False  # the adjoint's backward dynamics call autograd: never captured
    module = f.func if isinstance(f, FlatFuncWrapper) else None
    on_graph_device = Y0.device.type in _GRAPH_DEVICES
    if opts.cuda_graph and not on_graph_device:
        reason: str | None = f"the state is on {Y0.device}, not CUDA"
    elif not opts.compile and not on_graph_device:
        return None, False  # automatic graphs: CUDA only
    else:
        reason = _compile_reason(module, Y0)
    if reason is not None:
        if opts.cuda_graph or opts.compile:
            wanted = "cuda_graph=True" if opts.cuda_graph else "compile=True"
            raise InvalidArgumentError(f"options {wanted}, but {reason}")
        return None, False
    return module, on_graph_device and opts.cuda_graph is not False


def _new_graph(
    key: tuple[Any, ...],
    module: nn.Module,
    lp: _Loop,
    st: tuple[Tensor, ...],
    opts: AdaptiveOptions,
    rows_t: bool,
    first_step: float | None,
    start_evals: int,
    stats: SolveStats,
    comp: _Compiled | None = None,
) -> _Graph | None:
    """Capture (and cache) the graphs of a solve that starts from ``st``: of ``comp``'s
    compiled blocks if given, else of the eager ones on ``lp``. ``None`` when the capture
    failed (remembered: later solves of this module and shapes run without a graph)."""
    if key in _GRAPHS and _GRAPHS[key] is None and opts.cuda_graph is None:
        return None  # capture failed before for this module and shapes
    counts = (stats.nfe_forward, stats.nfe_backward)
    Y = st[_IDX["Y"]]
    if comp is not None:
        runners = (comp.block, comp.block1, comp.start)
    else:
        k = opts.sync_every
        runners = (_attempts(lp, k), _attempts(lp, 1), _starter(lp, rows_t, first_step))
    try:
        with torch.no_grad():
            graph, graph1, start, b = _capture(st, *runners)
    except Exception as e:  # a func that cannot be captured (host sync, CPU tensors, ...)
        if opts.cuda_graph:
            raise InvalidArgumentError(
                f"options cuda_graph=True, but capturing func failed: {e}; make func "
                "capturable (no .item()/host syncs) or use cuda_graph=False"
            ) from e
        if Y.device.type == "cuda":
            torch.cuda.synchronize()
        _lru_put(_GRAPHS, key, None)
        return None
    finally:
        stats.nfe_forward, stats.nfe_backward = counts  # warm-up and capture calls
    g = _Graph(weakref.ref(module), graph, graph1, start, b.static, b.flags, b.y0_in, b.ts_in,
               start_evals, comp.loop if comp is not None else lp, comp is not None)
    _lru_put(_GRAPHS, key, g)
    return g
