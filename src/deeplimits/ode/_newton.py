"""The one ESDIRK step (implicit Runge-Kutta with an explicit first stage), its Newton solves
and their gradients.

Each implicit stage ``i`` solves ``Z = psi_i + h gamma f(t_i, Z)`` with
``psi_i = y + h sum_{j<i} a_ij k_j`` by the chord method ("VeryChord" in diffrax): the Jacobian
``J = df/dy`` at the step's start ``(t, y)`` is computed once per step: the full ``(N, N)``
matrix of the flattened state, or per-sample ``(B, d, d)`` blocks for a ``(B, d)`` state whose
rows do not interact (``batched_jacobian=True``); by one reverse pass of plain autograd per
state dimension for blocks and for states of up to 64 entries, else by ``torch.func.jacrev``.
The iteration matrix
``M = I - h gamma J`` is LU-factored once and reused by every stage. Convergence test on the
scaled RMS norm of the update (scale ``atol + rtol |Z|``): converged when
``||dZ|| rate / (1 - rate) < kappa`` (``rate`` the ratio of successive update norms) or when the
update is at round-off; failed when the rate exceeds 2, a norm is not finite, or after
``max_iters`` iterations. A failed solve makes the step's error estimate ``inf`` (the adaptive
loops reject the step and shrink ``h``); a fixed-step solve raises :class:`SolverError`.

The stage derivative is ``k_i = (Z_i - psi_i) / (h gamma)`` (not ``f(t_i, Z_i)``: that would
amplify the Newton residual by the stiff part of ``f``).

Gradients (when autograd records): the iterations run without autograd; the converged ``Z``
is attached by the implicit function theorem. With ``w = psi + h gamma f(t_i, Z*)`` recorded
(its graph reaches ``psi`` and ``func``'s parameters), ``Z = _StageGrad(w)`` has the value
``Z*`` and the backward ``g -> (I - h gamma J(Z*))^{-T} g``, solved exactly (to round-off)
by iterative refinement: vector-Jacobian products of ``f`` at ``Z*`` preconditioned by the
step's LU factors. So ``dZ/dpsi = M(Z*)^{-1}`` and ``dZ/dtheta = M(Z*)^{-1} h gamma df/dtheta``,
the derivatives of the exact stage solution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from deeplimits.errors import InvalidArgumentError, NewtonError, SolverError
from deeplimits.ode._func import FlatFunc
from deeplimits.ode._options import SolveStats
from deeplimits.ode._stepper import combine
from deeplimits.ode._tableaux import ImplicitTableau

__all__ = ["IterationMatrix", "NewtonSettings", "esdirk_step", "jacobian"]


@dataclass(frozen=True)
class NewtonSettings:
    """How the stage equations are solved (see the module docstring)."""

    rtol: float = 1e-7
    atol: float = 1e-9
    max_iters: int = 10
    kappa: float = 1e-2
    batched_jacobian: bool = False


def jacobian(f: FlatFunc, t: float, y: Tensor, batched: bool) -> tuple[Tensor, bool]:
    """``df/dy`` at ``(t, y)`` (no graph): ``((B, d, d), True)`` per sample when ``batched``
    and ``y`` is ``(B, d)``, else the full ``((N, N), False)`` of the flattened state.

    A right-hand side with a ``jacobian(t, y) -> (N, N)`` attribute provides its own (the
    adjoint's augmented dynamics do).

    Per-sample blocks need one reverse pass per state dimension ``d`` over the whole batch:
    ``J_b = d/dy_b sum_b' f_b'(y)`` holds exactly when rows do not interact.
    """
    own = getattr(f, "jacobian", None)
    y = y.detach()
    if own is not None:
        with torch.no_grad():
            return own(t, y), False
    if batched and y.ndim == 2:
        return _rows_by_autograd(f, t, y, y.shape[1]), True  # (B, d, d)
    if y.numel() <= _LOOP_MAX:
        return _rows_by_autograd(f, t, y.reshape(1, -1), y.numel(), y.shape)[0], False
    with torch.no_grad():
        shape = y.shape
        jac = torch.func.jacrev(lambda v: f(t, v.view(shape)).reshape(-1))(y.reshape(-1))
        return jac, False


#: Largest flattened state whose full Jacobian is built by one reverse pass per entry (plain
#: autograd) rather than torch.func.jacrev: jacrev's first call in a process costs ~2 s of
#: set-up (measured on the 2-core CPU), more than the passes for small states.
_LOOP_MAX = 64


def _rows_by_autograd(
    f: FlatFunc, t: float, y: Tensor, d: int, shape: torch.Size | None = None
) -> Tensor:
    """Per-row Jacobian blocks ``(B, d, d)`` of ``f`` at ``y`` (``(B, d)``, rows that do not
    interact), by ``d`` reverse passes of plain autograd: ``J[:, i, :] = d/dy sum_b f_b,i``.
    ``shape``: call ``f`` with ``y`` viewed so (one row holding the whole state)."""
    with torch.enable_grad():  # the callers run under no_grad; slicing must record too
        v = y.detach().requires_grad_(True)
        out = f(t, v if shape is None else v.view(shape)).reshape(v.shape)  # (B, d)
        if not out.requires_grad:  # f does not depend on the state
            return y.new_zeros(y.shape[0], d, d)
        rows = []
        for i in range(d):
            (g,) = torch.autograd.grad(out[:, i].sum(), v, retain_graph=i < d - 1,
                                       allow_unused=True)
            rows.append(torch.zeros_like(v) if g is None else g)  # (B, d)
    return torch.stack(rows, 1).detach()  # (B, d_out, d_in)


class IterationMatrix:
    """``M = I - h gamma J`` LU-factored once (full or per-sample blocks); solves with ``M``
    and ``M^T`` for right-hand sides laid out like the state."""

    def __init__(
        self, jac: Tensor, hg: float, batched: bool, shape: torch.Size, t: float
    ) -> None:
        """``jac``: ``(N, N)``, or ``(B, d, d)`` when ``batched``; ``shape``: the state's;
        ``t``: the Jacobian's time, for the error messages.

        Raises:
            NewtonError: ``jac`` holds NaN/inf, or ``M`` is singular (naming ``t`` and the
                first sample concerned).
        """
        n = jac.shape[-1]
        eye = torch.eye(n, dtype=jac.dtype, device=jac.device)
        self.lu, self.pivots, info = torch.linalg.lu_factor_ex(eye - hg * jac)
        self.batched = batched
        self.shape = shape
        finite = torch.isfinite(jac)
        if not bool(finite.all() & (info == 0).all()):  # one sync per factorisation
            raise self._failure(finite, info, hg, t)

    def _failure(self, finite: Tensor, info: Tensor, hg: float, t: float) -> NewtonError:
        """The error for a non-finite Jacobian or a singular ``M``, naming the first sample."""
        if self.batched:  # (B, d, d): one block per sample
            bad_rows = ~finite.flatten(1).all(1)  # (B,)
            first = int(bad_rows.nonzero()[0, 0]) if bad_rows.any() else None
        else:  # (N, N): rows and columns follow the flattened state
            # A NaN derivative with respect to y_j (a NaN in backward) fills column j; a NaN
            # in f_i's derivative fills row i: name the entry of the sparser pattern.
            bad_rows, bad_cols = ~finite.all(1), ~finite.all(0)  # (N,), (N,)
            bad = bad_rows if bad_rows.sum() <= bad_cols.sum() else bad_cols
            per_sample = math.prod(self.shape[1:]) if len(self.shape) >= 2 else 0
            entry = int(bad.nonzero()[0, 0]) if bad.any() else None
            first = None if entry is None else (entry // per_sample if per_sample else entry)
        where = "sample" if self.batched or len(self.shape) >= 2 else "state entry"
        if first is not None:
            return NewtonError(
                f"func's Jacobian df/dy holds NaN or inf at t={t!r} ({where} {first}): the "
                "implicit method's Newton iteration needs it finite. A torch.where whose unused "
                "branch is NaN (sqrt or log of a negative) gives NaN gradients although the "
                "values are finite: clamp or mask that branch's input instead; or use an "
                "explicit method (e.g. dopri5)"
            )
        singular = info.reshape(-1).ne(0).nonzero()
        first = int(singular[0, 0]) if self.batched else None
        at = f" ({where} {first})" if first is not None else ""
        return NewtonError(
            f"the iteration matrix I - h*gamma*J is singular at t={t!r}{at} with "
            f"h*gamma={hg!r}: 1/(h*gamma) is an eigenvalue of df/dy. Change the step size "
            "(options first_step, or step_size for implicit_euler)"
        )

    def _solve(self, r: Tensor, adjoint: bool) -> Tensor:
        rhs = r.reshape(r.shape[0], -1, 1) if self.batched else r.reshape(-1, 1)
        out = torch.linalg.lu_solve(self.lu, self.pivots, rhs, adjoint=adjoint)
        return out.reshape(self.shape)

    def solve(self, r: Tensor) -> Tensor:
        """``M^{-1} r``."""
        return self._solve(r, False)

    def solve_t(self, r: Tensor) -> Tensor:
        """``M^{-T} r``."""
        return self._solve(r, True)


@dataclass
class _StageData:
    """What the backward of one stage solve needs besides the converged stage value."""

    f: FlatFunc
    t: float
    hg: float
    matrix: IterationMatrix
    settings: NewtonSettings


class _StageGrad(torch.autograd.Function):
    """``(w, Z*) -> Z*`` with the backward ``g -> (I - h gamma J(Z*))^{-T} g`` into ``w``."""

    @staticmethod
    def forward(ctx: Any, w: Tensor, z: Tensor, data: _StageData) -> Tensor:
        ctx.data = data
        ctx.save_for_backward(z)
        return z.clone()

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, None, None]:
        (z,) = ctx.saved_tensors
        return _adjoint_solve(ctx.data, z, g), None, None


def _adjoint_solve(data: _StageData, z: Tensor, g: Tensor, max_iters: int = 30) -> Tensor:
    """``u`` with ``u - h gamma J(z)^T u = g``: refinement ``u += M^{-T} (g - u + hg J^T u)``
    with the exact ``J(z)^T u`` by a vector-Jacobian product; when that does not converge
    (the step's ``M`` too far from ``M(z)``), a direct solve with ``J(z)``."""
    with torch.enable_grad():
        zz = z.detach().requires_grad_(True)
        fz = data.f(data.t, zz)
    u = data.matrix.solve_t(g)
    if not fz.requires_grad:  # f does not depend on the state: M = I
        return g
    tol = 100 * torch.finfo(g.dtype).eps * float(torch.linalg.vector_norm(g))
    prev = math.inf
    for _ in range(max_iters):
        (jtu,) = torch.autograd.grad(fz, zz, u, retain_graph=True, allow_unused=True)
        r = g - u if jtu is None else g - u + data.hg * jtu
        size = float(torch.linalg.vector_norm(r))
        if size <= tol:
            return u
        if not size < prev:  # not contracting (or NaN)
            break
        prev = size
        u = u + data.matrix.solve_t(r)
    jac, batched = jacobian(data.f, data.t, z, data.settings.batched_jacobian)
    return IterationMatrix(jac, data.hg, batched, z.shape, data.t).solve_t(g)


def _weighted(ks: Sequence[Tensor], terms: Sequence[tuple[int, float]], h: float) -> Tensor:
    j0, c0 = terms[0]
    out = ks[j0] * (h * c0)
    for j, cj in terms[1:]:
        out = out + ks[j] * (h * cj)
    return out


def _stage_solve(
    f: FlatFunc, ti: float, psi: Tensor, z: Tensor, hg: float, m: IterationMatrix,
    settings: NewtonSettings, stats: SolveStats, refresh: bool = False,
) -> tuple[Tensor | None, IterationMatrix]:
    """Chord iterations for ``Z = psi + hg f(ti, Z)`` from ``z`` (no autograd): the converged
    ``Z`` (or ``None``) and the iteration matrix last used. ``refresh``: full Newton instead (a
    new Jacobian and LU at every iterate; the fixed-step methods' fallback, which cannot
    shrink the step)."""
    small = 100 * torch.finfo(psi.dtype).eps  # an update at round-off
    inv_sqrt_n = 1.0 / math.sqrt(max(psi.numel(), 1))
    prev = math.inf
    for _ in range(settings.max_iters):
        if refresh:
            jac, batched = jacobian(f, ti, z, settings.batched_jacobian)
            m = IterationMatrix(jac, hg, batched, z.shape, ti)
            stats.jacobians += 1
            stats.lu_factorizations += 1
        stats.newton_iterations += 1
        delta = m.solve(torch.add(psi, f(ti, z), alpha=hg).sub_(z))
        z = z + delta
        scale = z.abs().mul_(settings.rtol).add_(settings.atol)
        size = float(torch.linalg.vector_norm(delta / scale)) * inv_sqrt_n  # the one sync
        if not math.isfinite(size):
            return None, m
        if size <= small:
            return z, m
        if prev < math.inf:  # a rate needs two updates
            rate = size / prev
            if rate > 2.0 and not refresh:
                return None, m
            if rate < 1.0 and size * rate / (1.0 - rate) < settings.kappa:
                return z, m
        prev = size
    return None, m


def esdirk_step(
    tableau: ImplicitTableau,
    f: FlatFunc,
    t: float,
    y: Tensor,
    h: float,
    k1: Tensor | None,
    times: Sequence[float | Tensor] | None,
    settings: NewtonSettings,
    stats: SolveStats,
) -> tuple[Tensor, Tensor | None, list[Tensor]]:
    """One ESDIRK step of size ``h`` from ``(t, y)``: ``(y1, error estimate, stages)`` like
    :func:`deeplimits.ode.rk_step`. Host loops only (float ``t`` and ``h``).

    A failed Newton solve: the error estimate is ``inf`` everywhere (``y1 = y``) for an
    adaptive tableau; :class:`SolverError` for a fixed-step one.

    Raises:
        InvalidArgumentError: a tensor step size (the device loop).
        SolverError: a fixed-step tableau whose Newton solve failed.
    """
    if isinstance(h, Tensor) or isinstance(t, Tensor):
        raise InvalidArgumentError(
            f"{tableau.name} runs on the host loops only (float t and h); use "
            "device_loop=False and per_sample=False"
        )
    ks: list[Tensor] = [f(t, y) if k1 is None else k1]
    hg = h * tableau.gamma
    jac, batched = jacobian(f, t, y, settings.batched_jacobian)
    stats.jacobians += 1
    matrix = IterationMatrix(jac, hg, batched, y.shape, t)
    stats.lu_factorizations += 1
    record = torch.is_grad_enabled()
    z = y
    for i in range(1, tableau.num_stages):
        ti = t + tableau.c[i] * h if times is None else float(times[i])
        psi = combine(y, ks, tableau.stage_terms[i], h)
        with torch.no_grad():
            psi_d = psi.detach()
            guess = torch.add(psi_d, ks[-1].detach(), alpha=hg)
            z_star, used = _stage_solve(f, ti, psi_d, guess, hg, matrix, settings, stats)
            if z_star is None and tableau.b_err is None:
                # Fixed step: no smaller step to fall back on; full Newton from the guess.
                stats.newton_failures += 1
                z_star, used = _stage_solve(f, ti, psi_d, guess, hg, matrix, settings, stats,
                                            refresh=True)
        if z_star is None:
            stats.newton_failures += 1
            if tableau.b_err is None:
                raise SolverError(
                    f"{tableau.name}: Newton's method did not converge in stage {i} of the step "
                    f"from t={t!r} with h={h!r}; use a smaller options step_size (or an "
                    "adaptive method such as kvaerno5)"
                )
            return y, torch.full_like(y, math.inf), ks
        z = z_star
        if record:
            w = torch.add(psi, f(ti, z_star), alpha=hg)
            if w.requires_grad:
                z = _StageGrad.apply(w, z_star, _StageData(f, ti, hg, used, settings))
        ks.append((z - psi) / hg)
    y1 = z if tableau.stiffly_accurate else combine(y, ks, tableau.b_terms, h)
    err = _weighted(ks, tableau.err_terms, h) if tableau.err_terms else None
    return y1, err, ks
