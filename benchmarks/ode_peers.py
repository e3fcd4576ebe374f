"""deeplimits' ODE engine against torchdiffeq and torchode, side by side in one run.

Usage::

    python benchmarks/ode_peers.py --threads 1          # CPU: its section of benchmarks/RESULTS.md
    python benchmarks/ode_peers.py --device cuda --out DIR   # GPU: DIR/RESULTS.md

The tables go between ``<!-- BEGIN/END ode_peers KEY -->`` markers (KEY: ``cpu-threadsN`` or
``cuda``) in ``RESULTS.md`` of ``--out`` (default: this folder): a rerun replaces its own
section and keeps the rest of the file (the targets discussion).

Method (as ``/work/shared/reference/gpu_ode_baseline.py``): dynamics = MLP with two tanh hidden
layers, ``t`` in ``[0, 1]``, rtol 1e-6, atol 1e-8, rk4 with step 0.01 (400 evaluations); the
same module, initial state and tolerances for every library. Every timing is the median of
``--reps`` (>= 5) interleaved runs after one warm-up run of each library (the libraries take
turns inside each repetition, so load from other processes hits all of them alike).

Columns:

- ``ratio tdq`` / ``ratio tode``: deeplimits' time divided by torchdiffeq's / torchode's.
- ``nfe``: function evaluations (torchode: the largest per-sample count, it steps jointly).
- ``max |diff|``: largest difference of the final states against deeplimits.
- ``overhead``: time / (nfe x time of one call); the time of one call is the eager call on
  CPU and the call replayed from a CUDA graph on a GPU (the launch-free floor), of the MLP
  itself (``f.net(y)``, as the baseline script). ``overhead vs module call`` divides by the
  eager call ``f(t, y)`` the solvers make instead (module ``__call__`` and the call counter
  included): the part of an evaluation no solver can remove.
- Training step (loss = sum of squares of the final state; forward + backward): time, backward
  evaluations, and memory: peak allocated bytes on CUDA, bytes saved for backward on CPU
  (``deeplimits.diagnostics.SavedTensorsMeter``; the adjoint's backward-pass temporaries are not
  in it).

deeplimits is run twice per adaptive case: with its default controller (``IController()``,
the integral controller both peers use: same algorithm, so the ratio measures the engine) and
with ``PIController()`` (fewer rejections, sometimes more evaluations), since the controller
changes the number of evaluations. On CPU (and on CUDA for dopri5 with ``--compiled``) a
third variant, **dl-c**, runs with ``options={"compile": True}`` (adaptive: the device loop
compiled by ``torch.compile``, on CUDA its compiled blocks captured in CUDA graphs; rk4:
compiled chunks of 10 steps; the MLP without its Python call counter, see ``Plain``); its
compilation happens in the warm-up runs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deeplimits.diagnostics import SavedTensorsMeter
from deeplimits.ode import (
    AdaptiveOptions,
    IController,
    PIController,
    SolveStats,
    odeint,
    odeint_adjoint,
)

try:
    import torchdiffeq
except ImportError:  # pragma: no cover - the bench extra is missing
    torchdiffeq = None
try:
    import torchode
except Exception:  # pragma: no cover - missing, or its typeguard 2 pin broken on this Python
    torchode = None

RTOL, ATOL = 1e-6, 1e-8


class MLP(nn.Module):
    """``d -> h -> h -> d`` with tanh; counts calls (Python side, so not under CUDA graphs)."""

    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh(), nn.Linear(h, d)
        )
        self.nfe = 0

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self.net(y)


class Plain(nn.Module):
    """The same MLP without the Python call counter: compiled code runs no Python per call, and
    a counter attribute would make torch.compile recompile on every solve."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


class Timer:
    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Callable[[], Any]) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def interleaved(fns: dict[str, Callable[[], Any]], reps: int, timer: Timer) -> dict[str, float]:
    """Median time of each fn over ``reps`` rounds; fns take turns (rotated) in every round."""
    for fn in fns.values():
        timer(fn)  # warm-up (twice: a compiled solve compiles its start on the second call)
        timer(fn)
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(reps):
        order = names[r % len(names):] + names[: r % len(names)]
        for k in order:
            times[k].append(timer(fns[k]))
    return {k: statistics.median(v) for k, v in times.items()}


def call_time(f: MLP, y0: torch.Tensor, timer: Timer, reps: int) -> float:
    """One call of the MLP: eager on CPU, replayed from a CUDA graph on a GPU."""
    n = 200
    with torch.no_grad():
        for _ in range(20):
            f.net(y0)
        if y0.device.type != "cuda":
            return statistics.median(
                timer(lambda: [f.net(y0) for _ in range(n)]) for _ in range(reps)
            ) / n
        g = torch.cuda.CUDAGraph()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                f.net(y0)
        torch.cuda.current_stream().wait_stream(s)
        with torch.cuda.graph(g):
            for _ in range(n):
                f.net(y0)
        return statistics.median(timer(g.replay) for _ in range(reps)) / n


def module_call_time(f: MLP, y0: torch.Tensor, timer: Timer, reps: int) -> float:
    """One eager call of the module as the solvers make it, ``f(t, y)`` (module ``__call__``,
    the call counter, then the MLP): the part of each evaluation no solver can remove."""
    n = 200
    tt = torch.zeros((), device=y0.device)
    with torch.no_grad():
        for _ in range(20):
            f(tt, y0)
        return statistics.median(
            timer(lambda: [f(tt, y0) for _ in range(n)]) for _ in range(reps)
        ) / n


def _tode_solver(f: MLP, method: str) -> Any:
    term = torchode.ODETerm(lambda t_, y: f(t_, y))
    step = {"dopri5": torchode.Dopri5, "tsit5": torchode.Tsit5}[method](term=term)
    ctrl = torchode.IntegralController(atol=ATOL, rtol=RTOL, term=term)
    return torchode.AutoDiffAdjoint(step, ctrl)


@torch.no_grad()
def solve_case(
    f: MLP, y0: torch.Tensor, method: str, timer: Timer, reps: int, compiled_gpu: bool = False
) -> dict[str, Any]:
    """Time and evaluations of each library on one (problem, method), without autograd.

    ``compiled_gpu``: on CUDA also run dl-c for dopri5 (the compiled blocks captured in CUDA
    graphs); a failure to compile or capture is recorded and the variant left out."""
    t = torch.tensor([0.0, 1.0], device=y0.device)
    B = y0.shape[0]
    fixed = method == "rk4"
    ours_opts: list[tuple[str, nn.Module, Any]] = (
        [("deeplimits", f, {"step_size": 0.01})] if fixed else
        [("deeplimits", f, None),
         ("deeplimits_PI", f, AdaptiveOptions(controller=PIController()))]
    )
    if y0.device.type == "cpu" or (compiled_gpu and method == "dopri5"):
        # options compile=True (torch.compile'd device loop, or compiled chunks of fixed steps);
        # on the GPU only with --compiled (its compilation is slow from a cold cache).
        ours_opts.append(("deeplimits_compiled", Plain(f.net),
                          {"step_size": 0.01, "compile": True} if fixed
                          else {"compile": True}))
    fns: dict[str, Callable[[], Any]] = {}
    finals: dict[str, torch.Tensor] = {}
    nfe: dict[str, int] = {}
    extra: dict[str, Any] = {}
    for name, func, opts in ours_opts:
        def run(func: nn.Module = func, opts: Any = opts) -> torch.Tensor:
            return odeint(func, y0, t, rtol=RTOL, atol=ATOL, method=method, options=opts)[-1]

        s = SolveStats()
        try:
            finals[name] = odeint(func, y0, t, rtol=RTOL, atol=ATOL, method=method,
                                  options=opts, stats=s)[-1]
        except Exception as e:
            if name != "deeplimits_compiled" or y0.device.type == "cpu":
                raise
            extra[f"{name}_error"] = f"{type(e).__name__}: {e}"
            print(f"dl-c left out on {y0.device}: {extra[f'{name}_error']}", flush=True)
            continue
        fns[name] = run
        nfe[name] = s.nfe_forward
        extra[f"{name}_cuda_graph"] = getattr(s, "cuda_graph_used", False)
    if torchdiffeq is not None and method in ("dopri5", "rk4"):
        topts = {"step_size": 0.01} if fixed else {}

        def run_tdq() -> torch.Tensor:
            return torchdiffeq.odeint(f, y0, t, rtol=RTOL, atol=ATOL, method=method,
                                      options=topts)[-1]

        fns["torchdiffeq"] = run_tdq
        f.nfe = 0
        finals["torchdiffeq"] = run_tdq()
        nfe["torchdiffeq"] = f.nfe
    if torchode is not None and not fixed:
        solver = _tode_solver(f, method)
        tev = t.unsqueeze(0).expand(B, 2)

        def run_tode() -> torch.Tensor:
            return solver.solve(torchode.InitialValueProblem(y0=y0, t_eval=tev)).ys[:, -1]

        fns["torchode"] = run_tode
        sol = solver.solve(torchode.InitialValueProblem(y0=y0, t_eval=tev))
        finals["torchode"] = sol.ys[:, -1]
        nfe["torchode"] = int(sol.stats["n_f_evals"].max())
    times = interleaved(fns, reps, timer)
    ref = finals["deeplimits"]
    diffs = {k: float((v - ref).abs().max().detach()) for k, v in finals.items()}
    return {"times": times, "nfe": nfe, "diff": diffs, **extra}


def training_case(
    f: MLP, y0: torch.Tensor, timer: Timer, reps: int, device: torch.device
) -> dict[str, Any]:
    """Forward + backward of dopri5 through each library: time, backward NFE, memory."""
    t = torch.tensor([0.0, 1.0], device=device)
    params = tuple(f.parameters())
    pi = {"controller": PIController()}
    kinds: dict[str, Callable[[SolveStats], torch.Tensor]] = {
        "deeplimits direct": lambda s: odeint(f, y0, t, rtol=RTOL, atol=ATOL, stats=s),
        "deeplimits adjoint": lambda s: odeint_adjoint(f, y0, t, rtol=RTOL, atol=ATOL, stats=s),
        "deeplimits seminorm": lambda s: odeint_adjoint(
            f, y0, t, rtol=RTOL, atol=ATOL, stats=s, adjoint_options={"norm": "seminorm"}),
        "deeplimits-PI direct": lambda s: odeint(f, y0, t, rtol=RTOL, atol=ATOL, stats=s,
                                                options=pi),
        "deeplimits-PI adjoint": lambda s: odeint_adjoint(
            f, y0, t, rtol=RTOL, atol=ATOL, stats=s, options=pi),
        "deeplimits-PI seminorm": lambda s: odeint_adjoint(
            f, y0, t, rtol=RTOL, atol=ATOL, stats=s, options=pi,
            adjoint_options={**pi, "norm": "seminorm"}),
    }
    if device.type == "cpu":
        plain = Plain(f.net)
        kinds["deeplimits-compiled adjoint"] = lambda s: odeint_adjoint(
            plain, y0, t, rtol=RTOL, atol=ATOL, stats=s, options={"compile": True})
    if torchdiffeq is not None:
        kinds["torchdiffeq direct"] = lambda s: torchdiffeq.odeint(f, y0, t, rtol=RTOL,
                                                                   atol=ATOL)
        kinds["torchdiffeq adjoint"] = lambda s: torchdiffeq.odeint_adjoint(
            f, y0, t, rtol=RTOL, atol=ATOL, adjoint_params=params)
        kinds["torchdiffeq seminorm"] = lambda s: torchdiffeq.odeint_adjoint(
            f, y0, t, rtol=RTOL, atol=ATOL, adjoint_params=params,
            adjoint_options={"norm": "seminorm"})
    if torchode is not None:
        solver = _tode_solver(f, "dopri5")
        tev = t.unsqueeze(0).expand(y0.shape[0], 2)
        kinds["torchode direct"] = lambda s: solver.solve(
            torchode.InitialValueProblem(y0=y0, t_eval=tev)).ys.transpose(0, 1)

    def step(kind: str) -> tuple[int, int]:
        # deeplimits counts its own evaluations (f.nfe misses CUDA-graph replays).
        f.zero_grad(set_to_none=True)
        f.nfe = 0
        s = SolveStats()
        ys = kinds[kind](s)
        n_fwd = f.nfe
        ys[-1].pow(2).sum().backward()
        if kind.startswith("deeplimits"):
            return s.nfe_forward, s.nfe_backward
        return n_fwd, f.nfe - n_fwd

    out: dict[str, Any] = {"nfe_fwd": {}, "nfe_bwd": {}, "mem": {}}
    for kind in kinds:
        step(kind)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            out["nfe_fwd"][kind], out["nfe_bwd"][kind] = step(kind)
            torch.cuda.synchronize()
            out["mem"][kind] = torch.cuda.max_memory_allocated() - base
        else:
            with SavedTensorsMeter(exclude=params) as meter:
                ys = kinds[kind](SolveStats())
            ys[-1].pow(2).sum().backward()
            out["nfe_fwd"][kind], out["nfe_bwd"][kind] = step(kind)
            out["mem"][kind] = meter.bytes
    out["times"] = interleaved({k: (lambda k=k: step(k)) for k in kinds}, reps, timer)
    return out


def memory_vs_steps(f: MLP, y0: torch.Tensor, device: torch.device) -> list[dict[str, Any]]:
    """rk4 with 10, 100, 1000 steps: memory of direct backprop vs adjoint, ours and torchdiffeq."""
    t = torch.tensor([0.0, 1.0], device=device)
    params = tuple(f.parameters())
    rows = []
    for n in (10, 100, 1000):
        opts = {"step_size": 1.0 / n}
        row: dict[str, Any] = {"steps": n}
        kinds: dict[str, Callable[[], torch.Tensor]] = {
            "deeplimits direct": lambda o=opts: odeint(f, y0, t, method="rk4", options=o),
            "deeplimits adjoint": lambda o=opts: odeint_adjoint(f, y0, t, method="rk4",
                                                                options=o),
        }
        if torchdiffeq is not None:
            kinds["torchdiffeq direct"] = lambda o=opts: torchdiffeq.odeint(
                f, y0, t, method="rk4", options=o)
            kinds["torchdiffeq adjoint"] = lambda o=opts: torchdiffeq.odeint_adjoint(
                f, y0, t, method="rk4", options=o, adjoint_params=params)
        for k, fn in kinds.items():
            f.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                fn()[-1].pow(2).sum().backward()
                torch.cuda.synchronize()
                row[k] = torch.cuda.max_memory_allocated() - base
            else:
                with SavedTensorsMeter(exclude=params) as meter:
                    ys = fn()
                ys[-1].pow(2).sum().backward()
                row[k] = meter.bytes
        rows.append(row)
    return rows


class VanDerPol(nn.Module):
    """Batched Van der Pol oscillator, ``(batch, 2)`` (the torchode paper's protocol, mu = 2)."""

    def __init__(self, mu: float) -> None:
        super().__init__()
        self.mu = mu

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, v = y[:, 0], y[:, 1]
        return torch.stack([v, self.mu * (1 - x**2) * v - x], dim=1)


def per_sample_case(device: torch.device) -> dict[str, Any]:
    """A batch mixing easy and hard initial states: evaluations with per-sample steps.

    Van der Pol, mu = 2, t in [0, 5]: 12 rows start next to the (unstable) equilibrium at
    ``|y0| ~ 0.01`` (small, nearly linear motion: atol-dominated, cheap), 4 rows far out at
    ``|y0| ~ 3`` (relaxation oscillation: many steps).
    """
    torch.manual_seed(0)
    f = VanDerPol(2.0)
    y0 = torch.cat([torch.randn(12, 2) * 0.01, torch.randn(4, 2) * 3.0]).to(device)
    t = torch.tensor([0.0, 5.0], device=device)
    opts = {"controller": IController()}
    with torch.no_grad():
        joint, per = SolveStats(), SolveStats()
        a = odeint(f, y0, t, rtol=RTOL, atol=ATOL, stats=joint, options=opts)
        b = odeint(f, y0, t, rtol=RTOL, atol=ATOL, stats=per,
                   options={**opts, "per_sample": True})
    if per.nfe_per_sample is None:
        raise RuntimeError("per_sample solve did not report nfe_per_sample")
    out: dict[str, Any] = {
        "batch": 16, "joint_nfe": joint.nfe_forward,
        "joint_evals": joint.nfe_forward * 16,
        "per_sample_nfe": per.nfe_per_sample.tolist(),
        "per_sample_evals": int(per.nfe_per_sample.sum()),
        "per_sample_calls": per.nfe_forward,
        "max_diff": float((a - b).abs().max()),
    }
    if torchode is not None:
        term = torchode.ODETerm(lambda t_, y: f(t_, y))
        solver = torchode.AutoDiffAdjoint(
            torchode.Dopri5(term=term),
            torchode.IntegralController(atol=ATOL, rtol=RTOL, term=term))
        with torch.no_grad():
            sol = solver.solve(torchode.InitialValueProblem(
                y0=y0, t_eval=t.unsqueeze(0).expand(16, 2)))
        out["torchode_evals"] = int(sol.stats["n_f_evals"].sum())
        out["torchode_max_diff"] = float((sol.ys[:, -1] - b[-1]).abs().max())
    return out


def machine(device: torch.device) -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [f"{cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
             f"torch {torch.__version__}, Python {platform.python_version()}"]
    if torchdiffeq is not None:
        parts.append(f"torchdiffeq {getattr(torchdiffeq, '__version__', '?')}")
    if torchode is not None:
        parts.append(f"torchode {getattr(torchode, '__version__', '?')}")
    if device.type == "cuda":
        parts.append(f"GPU: {torch.cuda.get_device_name(device)}")
    with contextlib.suppress(OSError):
        parts.append(f"load average at start {os.getloadavg()[0]:.1f}")
    return "; ".join(parts)


def _fmt_t(x: float, gpu: bool) -> str:
    return f"{x * 1e3:.2f} ms" if gpu else "-"


def _mb(x: float) -> str:
    return f"{x / 2**20:.2f} MiB" if x >= 2**20 else f"{x / 2**10:.1f} KiB"


def write_section(path: Path, key: str, text: str) -> None:
    """Put ``text`` between this run's markers in ``path``: replaces the section of an earlier
    run with the same key (device and thread count), keeps everything else, appends if new."""
    begin, end = f"<!-- BEGIN ode_peers {key} -->", f"<!-- END ode_peers {key} -->"
    block = f"{begin}\n{text}\n{end}"
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old:
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = (old.rstrip() + "\n\n" if old.strip() else "") + block + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(new)
    tmp.replace(path)


def _solve_row(r: dict[str, Any], gpu: bool) -> str:
    """One markdown row of the solve table."""
    tm, nf, fc = r["times"], r["nfe"], r["call_s"]

    def g(k: str) -> str:
        return str(nf[k]) if k in nf else "n/a"

    def ratio(a: str, b: str) -> str:
        return f"{tm[a] / tm[b]:.2f}" if a in tm and b in tm else "n/a"

    def ovh(k: str) -> str:
        return f"{tm[k] / (nf[k] * fc):.2f}" if k in tm else "n/a"

    def diff(k: str) -> str:
        return f"{r['diff'][k]:.1e}" if k in r["diff"] else "n/a"

    def ovh_module(k: str) -> str:
        return f"{tm[k] / (nf[k] * r['module_call_s']):.2f}" if k in tm else "n/a"

    graph = " (graph)" if r.get("deeplimits_cuda_graph") else ""
    dc = "deeplimits_compiled"
    return (
        f"| {r['case']} | {r['method']} | {_fmt_t(tm['deeplimits'], gpu)}{graph} | "
        f"{g('deeplimits')} / {g('deeplimits_PI')} / {g(dc)} / {g('torchdiffeq')} / "
        f"{g('torchode')} | "
        f"{ratio('deeplimits', 'torchdiffeq')} | {ratio('deeplimits', 'torchode')} | "
        f"{ratio('deeplimits_PI', 'torchdiffeq')} | {ratio('deeplimits_PI', 'torchode')} | "
        f"{ratio(dc, 'torchdiffeq')} | {ratio(dc, 'torchode')} | "
        f"{ovh('deeplimits')} / {ovh('deeplimits_PI')} / {ovh(dc)} / {ovh('torchdiffeq')} / "
        f"{ovh('torchode')} | {diff('torchdiffeq')} / {diff('torchode')} / {diff(dc)} | "
        f"{fc * 1e6:.1f} µs{' (graph)' if gpu else ''} | {r['module_call_s'] * 1e6:.1f} µs | "
        f"{ovh_module('deeplimits')} / {ovh_module('deeplimits_PI')} / {ovh_module(dc)} / "
        f"{ovh_module('torchdiffeq')} / {ovh_module('torchode')} |"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--out", default=None, help="folder of RESULTS.md and the JSON record")
    ap.add_argument("--quick", action="store_true", help="small cases only (smoke test)")
    ap.add_argument("--compiled", action="store_true",
                    help="on CUDA also time compile=True for dopri5 (compiled + CUDA graphs)")
    args = ap.parse_args(argv)
    if args.reps < 5:
        ap.error("--reps must be >= 5")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    timer = Timer(device)
    out_dir = Path(args.out) if args.out else Path(__file__).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path = out_dir / "RESULTS.md"
    key = "cuda" if gpu else f"cpu-threads{torch.get_num_threads()}"
    json_path = out_dir / f"ode_peers_{key}.json"
    cases = [(2, 64, 16), (32, 256, 256), (32, 256, 8192 if gpu else 1024)]
    if args.quick:
        cases = cases[:1]
    head = [
        f"## ODE engine vs peers: {'GPU' if gpu else 'CPU'}"
        f"{'' if gpu else f', {torch.get_num_threads()} torch thread(s)'}", "",
        f"- Machine: {machine(device)}",
        f"- Command: `python {' '.join([Path(__file__).name, *sys.argv[1:]])}`",
        f"- Date: {_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- rtol {RTOL}, atol {ATOL}, t in [0, 1], rk4 step 0.01; median of {args.reps} "
        "interleaved runs after warm-up.", "",
    ]
    lines = list(head)
    record: dict[str, Any] = {"machine": machine(device), "cases": []}

    def flush() -> None:  # write what finished so far (a later failure keeps it)
        write_section(md_path, key, "\n".join(lines))
        json_path.write_text(json.dumps(record, indent=1, default=str))

    lines += [
        "### Solve (no grad)", "",
        "| case | method | deeplimits | nfe (dl / dl-PI / dl-c / tdq / tode) | ratio dl/tdq | "
        "ratio dl/tode | ratio dl-PI/tdq | ratio dl-PI/tode | ratio dl-c/tdq | "
        "ratio dl-c/tode | overhead dl / dl-PI / dl-c / tdq / tode | "
        "max diff tdq / tode / dl-c | call | module call (eager) | overhead vs module call |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    flush()
    for d, h, B in cases:
        torch.manual_seed(0)
        f = MLP(d, h).to(device)
        y0 = torch.randn(B, d, device=device)
        fc = call_time(f, y0, timer, args.reps)
        fm = module_call_time(f, y0, timer, args.reps)
        for method in ("dopri5", "tsit5", "rk4"):
            r = solve_case(f, y0, method, timer, args.reps, args.compiled and gpu)
            r.update(case=f"B={B} {d}-{h}-{h}-{d}", method=method, call_s=fc, module_call_s=fm)
            record["cases"].append(r)
            lines.append(_solve_row(r, gpu))
            flush()
            print(lines[-1], flush=True)
    lines += ["", "### Training step (dopri5, forward + backward)", "",
              "| case | library / gradient | time | ratio to torchdiffeq same kind | "
              "nfe forward | nfe backward | memory |", "|---|---|---|---|---|---|---|"]
    flush()
    for d, h, B in cases[:2]:
        torch.manual_seed(0)
        f = MLP(d, h).to(device)
        y0 = torch.randn(B, d, device=device)
        r = training_case(f, y0, timer, args.reps, device)
        r["case"] = f"B={B} {d}-{h}-{h}-{d}"
        record.setdefault("training", []).append(r)
        for k, v in r["times"].items():
            lib, kind = k.rsplit(" ", 1)
            ref = f"torchdiffeq {kind}"
            rt = f"{v / r['times'][ref]:.2f}" if ref in r["times"] and lib != "torchdiffeq" else ""
            lines.append(
                f"| {r['case']} | {k} | {_fmt_t(v, gpu) if gpu else '-'} | {rt} | "
                f"{r['nfe_fwd'][k]} | {r['nfe_bwd'][k]} | {_mb(r['mem'][k])} |"
            )
        flush()
        print("\n".join(lines[-len(r["times"]):]), flush=True)
    torch.manual_seed(0)
    f = MLP(2, 64).to(device)
    y0 = torch.randn(16, 2, device=device)
    mem = memory_vs_steps(f, y0, device)
    record["memory_vs_steps"] = mem
    kinds = [k for k in mem[0] if k != "steps"]
    lines += ["", "### Memory against number of rk4 steps (B=16 2-64-64-2; "
              + ("peak allocated" if gpu else "bytes saved for backward") + ")", "",
              "| steps | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    for row in mem:
        lines.append(f"| {row['steps']} | " + " | ".join(_mb(row[k]) for k in kinds) + " |")
    flush()
    ps = per_sample_case(device)
    record["per_sample"] = ps
    lines += [
        "", "### Per-sample step sizes (Van der Pol mu=2, dopri5, I controller, t in [0, 5], "
        "12 easy rows at |y0|~0.01 + 4 hard rows at |y0|~3)",
        "",
        f"- joint stepping: {ps['joint_nfe']} evaluations x 16 rows = {ps['joint_evals']} "
        "row-evaluations",
        f"- per-sample: {ps['per_sample_evals']} row-evaluations "
        f"({1 - ps['per_sample_evals'] / ps['joint_evals']:.0%} saved; per row "
        f"{ps['per_sample_nfe']}); batched calls made: {ps['per_sample_calls']}",
        f"- largest difference joint vs per-sample: {ps['max_diff']:.1e}",
    ]
    if "torchode_evals" in ps:
        lines.append(f"- torchode (per-sample by design): {ps['torchode_evals']} row-evaluations "
                     f"(largest difference to ours {ps['torchode_max_diff']:.1e})")
    flush()
    print("\n".join(lines[-5:]), flush=True)
    print(f"wrote {md_path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
