"""Butcher tableaux as validated, frozen data.

A tableau stores Python floats only (no tensors), so that the stepper can use them directly as
``alpha=`` scalars without device transfers. Every tableau is checked on construction: the
consistency ``c_i = sum_j a_ij``, ``sum(b) = 1``, strict lower-triangularity, the FSAL property
when declared, and the Butcher order conditions (rooted trees) for the declared order of the
solution weights and of the embedded (error-estimating) weights, up to order 5.

Dense output is stored as a matrix ``dense`` with one row per power of ``theta``: the interpolant
over a step ``[t0, t0 + h]`` is::

    y(t0 + theta*h) = y0 + h * sum_{p=1..P} theta**p * sum_i dense[p-1][i] * K_i

where ``K`` are the stages ``k_1..k_s`` followed, for non-FSAL tableaux, by ``f(t0+h, y1)``
(an extra column). At ``theta = 1`` the interpolant must reproduce ``y1``, which is validated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from deeplimits.errors import InvalidArgumentError, UnknownNameError

__all__ = [
    "IMPLICIT_TABLEAUX",
    "TABLEAUX",
    "ButcherTableau",
    "ImplicitTableau",
    "get_tableau",
    "order_condition_residuals",
    "stability_function",
]

_Tree = tuple  # a rooted tree: the (sorted) tuple of its children's subtrees


@cache
def _trees(order: int) -> tuple[_Tree, ...]:
    """All rooted trees with ``order`` nodes, canonical (children sorted), without duplicates."""
    if order == 1:
        return ((),)
    result: set[_Tree] = set()
    # A tree with n nodes = root + a multiset of subtrees with n - 1 nodes in total.
    for partition in _partitions(order - 1):
        for children in _choose_children(partition):
            result.add(tuple(sorted(children)))
    return tuple(sorted(result))


def _partitions(n: int, largest: int | None = None) -> list[tuple[int, ...]]:
    largest = n if largest is None else largest
    if n == 0:
        return [()]
    out = []
    for k in range(min(n, largest), 0, -1):
        out.extend((k, *rest) for rest in _partitions(n - k, k))
    return out


def _choose_children(sizes: tuple[int, ...]) -> list[list[_Tree]]:
    if not sizes:
        return [[]]
    return [[t, *rest] for t in _trees(sizes[0]) for rest in _choose_children(sizes[1:])]


def _size(tree: _Tree) -> int:
    return 1 + sum(_size(c) for c in tree)


def _density(tree: _Tree) -> int:
    """Butcher's gamma(tree): |tree| times the product of the children's densities."""
    return _size(tree) * math.prod(_density(c) for c in tree)


def _stage_weights(tree: _Tree, a: np.ndarray) -> np.ndarray:
    """Elementary weight vector Phi_i(tree): product over children of (A @ Phi(child))_i."""
    out = np.ones(a.shape[0])
    for child in tree:
        out = out * (a @ _stage_weights(child, a))
    return out


def order_condition_residuals(
    a: np.ndarray, weights: np.ndarray, order: int, theta: float = 1.0
) -> list[float]:
    """Residuals ``weights . Phi(tree) - theta**|tree| / gamma(tree)``, all trees up to ``order``.

    ``a`` is the full ``(s, s)`` coefficient matrix, ``weights`` a length-``s`` vector (b, the
    embedded weights, or the dense-output weights ``b(theta)``).
    """
    res = []
    for n in range(1, order + 1):
        for tree in _trees(n):
            res.append(float(weights @ _stage_weights(tree, a) - theta**n / _density(tree)))
    return res


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge-Kutta tableau (frozen, validated).

    Attributes:
        name: method name, e.g. ``"dopri5"``.
        a: strictly lower-triangular rows; ``a[i]`` has exactly ``i`` entries (``a[0] == ()``).
        b: solution weights, length ``s``.
        c: nodes, length ``s``; must satisfy ``c[i] == sum(a[i])`` (tolerance 1e-12).
        order: declared order of ``b`` (checked with the order conditions up to order 5).
        b_err: error weights ``b - b_hat`` of the embedded method (``None`` for fixed-step only).
        error_order: order of the embedded method ``b_hat`` (required with ``b_err``).
        fsal: first-same-as-last: the last stage is ``f(t+h, y1)`` (row ``a[-1] == b[:-1]``).
        dense: interpolant coefficients, one row per power ``theta**1, theta**2, ...``; each row has
            ``s`` entries (FSAL) or ``s + 1`` entries (the extra one multiplies ``f(t+h, y1)``).
            Empty: output times inside a step use the cubic Hermite interpolant
            (:func:`interpolant`).
        dense_order: order of the interpolant (documentation and tests).
    """

    name: str
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    c: tuple[float, ...]
    order: int
    b_err: tuple[float, ...] | None = None
    error_order: int | None = None
    fsal: bool = False
    dense: tuple[tuple[float, ...], ...] = ()
    dense_order: int = 0
    # Precomputed for the stepper: nonzero (j, a_ij) per stage, and nonzero (j, b_j)/(j, e_j).
    stage_terms: tuple[tuple[tuple[int, float], ...], ...] = field(init=False, repr=False)
    b_terms: tuple[tuple[int, float], ...] = field(init=False, repr=False)
    err_terms: tuple[tuple[int, float], ...] = field(init=False, repr=False)
    # (c_i, stage terms) of stages 1..s-1 in order, the last one of an FSAL method with the
    # ``b`` terms (so its input is y1 itself): the host loop's plan, one tuple per evaluation.
    host_stages: tuple[tuple[float, tuple[tuple[int, float], ...]], ...] = field(
        init=False, repr=False
    )

    @classmethod
    def from_lists(
        cls,
        name: str,
        a: list[list[float]],
        b: list[float],
        c: list[float],
        order: int,
        b_err: list[float] | None = None,
        error_order: int | None = None,
        fsal: bool = False,
        dense: list[list[float]] | None = None,
        dense_order: int = 0,
    ) -> ButcherTableau:
        """Build from plain lists (rows of ``a`` may be given with or without trailing zeros)."""
        rows = tuple(tuple(float(x) for x in row) for row in a)
        return cls(
            name=name,
            a=rows,
            b=tuple(float(x) for x in b),
            c=tuple(float(x) for x in c),
            order=order,
            b_err=None if b_err is None else tuple(float(x) for x in b_err),
            error_order=error_order,
            fsal=fsal,
            dense=() if dense is None else tuple(tuple(float(x) for x in r) for r in dense),
            dense_order=dense_order,
        )

    @property
    def num_stages(self) -> int:
        return len(self.b)

    @property
    def adaptive(self) -> bool:
        return self.b_err is not None

    def a_matrix(self) -> np.ndarray:
        """The full ``(s, s)`` coefficient matrix (zeros on and above the diagonal)."""
        s = self.num_stages
        out = np.zeros((s, s))
        for i, row in enumerate(self.a):
            out[i, : len(row)] = row
        return out

    def __post_init__(self) -> None:
        s = len(self.b)
        fail = self._fail
        if s == 0:
            fail("b must not be empty")
        if len(self.c) != s or len(self.a) != s:
            fail(f"len(a)={len(self.a)}, len(b)={s}, len(c)={len(self.c)} must all be equal")
        for i, row in enumerate(self.a):
            if len(row) != i:
                fail(
                    f"row a[{i}] has {len(row)} entries; an explicit method needs exactly {i} "
                    "(strictly lower triangular: stage i uses only stages 0..i-1)"
                )
            if abs(sum(row) - self.c[i]) > 1e-12:
                fail(f"c[{i}]={self.c[i]!r} differs from sum(a[{i}])={sum(row)!r} (consistency)")
        if abs(sum(self.b) - 1.0) > 1e-12:
            fail(f"sum(b)={sum(self.b)!r} must be 1")
        if self.order < 1:
            fail(f"order={self.order} must be >= 1")
        a_full = self.a_matrix()
        self._check_order(a_full, np.array(self.b), self.order, "b")
        if self.b_err is not None:
            if len(self.b_err) != s:
                fail(f"b_err has {len(self.b_err)} entries, expected {s}")
            if self.error_order is None:
                fail("error_order is required when b_err is given")
            if abs(sum(self.b_err)) > 1e-12:
                fail(f"sum(b_err)={sum(self.b_err)!r} must be 0 (b and b_hat both sum to 1)")
            b_hat = np.array(self.b) - np.array(self.b_err)
            self._check_order(a_full, b_hat, int(self.error_order), "b - b_err")
        if self.fsal and (
            self.c[-1] != 1.0
            or self.b[-1] != 0.0
            or any(abs(x - y) > 1e-15 for x, y in zip(self.a[-1], self.b[:-1], strict=True))
        ):
            fail("fsal=True needs c[-1] == 1, b[-1] == 0 and a[-1] == b[:-1]")
        if self.dense:
            width = s if self.fsal else s + 1
            for p, row in enumerate(self.dense):
                if len(row) != width:
                    fail(f"dense row {p} has {len(row)} entries, expected {width}")
            at_one = np.sum(np.array(self.dense), axis=0)
            # The f(t+h, y1) column (non-FSAL) must vanish at theta=1 for the interpolant to
            # reproduce y1 = y0 + h * sum(b k).
            if not self.fsal and abs(float(at_one[s])) > 1e-12:
                fail("dense output at theta=1 must not depend on f(t+h, y1)")
            if np.max(np.abs(at_one[:s] - np.array(self.b))) > 1e-12:
                fail("dense output at theta=1 must equal the solution weights b")
        object.__setattr__(
            self,
            "stage_terms",
            tuple(tuple((j, x) for j, x in enumerate(row) if x != 0.0) for row in self.a),
        )
        object.__setattr__(self, "b_terms", tuple((j, x) for j, x in enumerate(self.b) if x != 0.0))
        object.__setattr__(
            self,
            "err_terms",
            () if self.b_err is None else tuple((j, x) for j, x in enumerate(self.b_err) if x != 0),
        )
        object.__setattr__(
            self,
            "host_stages",
            tuple(
                (self.c[i], self.b_terms if self.fsal and i == s - 1 else self.stage_terms[i])
                for i in range(1, s)
            ),
        )

    def _check_order(self, a_full: np.ndarray, weights: np.ndarray, order: int, what: str) -> None:
        checked = min(order, 5)  # 17 trees up to order 5: cheap; order 6+ is not checked.
        res = order_condition_residuals(a_full, weights, checked)
        worst = max(abs(r) for r in res)
        if worst > 1e-10:
            self._fail(
                f"weights {what} do not satisfy the order conditions for declared order {order} "
                f"(largest residual {worst:.3e})"
            )

    def _fail(self, msg: str) -> None:
        raise InvalidArgumentError(f"invalid Butcher tableau {self.name!r}: {msg}")


def _hermite_dense(b: list[float]) -> list[list[float]]:
    """Cubic Hermite interpolant from y0, y1 = y0 + h*sum(b k), f0 = k_1 and f1 = f(t+h, y1).

    ``p(theta) = y0 + h[theta f0 + theta^2 (3 B - 2 f0 - f1) + theta^3 (-2 B + f0 + f1)]`` with
    ``B = sum b_i k_i``. Columns: the ``s`` stages, then ``f1``. Third order accurate.
    """
    s = len(b)
    e0 = [1.0] + [0.0] * (s - 1)
    row1 = [*e0, 0.0]
    row2 = [3 * bi - 2 * ei for bi, ei in zip(b, e0, strict=True)] + [-1.0]
    row3 = [-2 * bi + ei for bi, ei in zip(b, e0, strict=True)] + [1.0]
    return [row1, row2, row3]


def _hermite_dense_fsal(b: list[float]) -> list[list[float]]:
    """Cubic Hermite for FSAL tableaux: ``f1`` is the last stage, so no extra column."""
    rows = _hermite_dense(b)
    # Fold the extra f1 column into the last stage's column.
    return [[*r[:-2], r[-2] + r[-1]] for r in rows]


def _stiffly_accurate(a_last: Sequence[float], b: Sequence[float], c: Sequence[float]) -> bool:
    """``b == a[-1]`` and ``c[-1] == 1`` (to 1e-15): ``y1`` is the last stage's value."""
    return len(a_last) == len(b) and abs(c[-1] - 1.0) < 1e-15 and all(
        abs(x - y) < 1e-15 for x, y in zip(a_last, b, strict=True)
    )


def interpolant(tableau: ButcherTableau | ImplicitTableau) -> tuple[tuple[float, ...], ...]:
    """The rows of ``tableau``'s dense output, one per power of theta: its own ``dense``, else
    the cubic Hermite interpolant (:func:`_hermite_dense`: columns the stages, then
    ``f(t+h, y1)``, which a non-FSAL solver appends; an FSAL tableau's last stage is that
    value, so its column is folded in)."""
    if tableau.dense:
        return tableau.dense
    b = list(tableau.b)
    rows = _hermite_dense_fsal(b) if tableau.fsal else _hermite_dense(b)
    return tuple(tuple(r) for r in rows)


def _euler() -> ButcherTableau:
    return ButcherTableau.from_lists(
        "euler", a=[[]], b=[1.0], c=[0.0], order=1, dense=_hermite_dense([1.0]), dense_order=1
    )


def _midpoint() -> ButcherTableau:
    b = [0.0, 1.0]
    return ButcherTableau.from_lists(
        "midpoint", a=[[], [0.5]], b=b, c=[0.0, 0.5], order=2, dense=_hermite_dense(b),
        dense_order=2,
    )


def _rk4() -> ButcherTableau:
    # Kutta's 3/8 rule (the variant torchdiffeq's "rk4" uses).
    b = [1 / 8, 3 / 8, 3 / 8, 1 / 8]
    return ButcherTableau.from_lists(
        "rk4",
        a=[[], [1 / 3], [-1 / 3, 1.0], [1.0, -1.0, 1.0]],
        b=b,
        c=[0.0, 1 / 3, 2 / 3, 1.0],
        order=4,
        dense=_hermite_dense(b),
        dense_order=3,
    )


def _bosh3() -> ButcherTableau:
    # Bogacki & Shampine (1989), "A 3(2) pair of Runge-Kutta formulas". FSAL.
    b = [2 / 9, 1 / 3, 4 / 9, 0.0]
    b_hat = [7 / 24, 1 / 4, 1 / 3, 1 / 8]
    return ButcherTableau.from_lists(
        "bosh3",
        a=[[], [1 / 2], [0.0, 3 / 4], [2 / 9, 1 / 3, 4 / 9]],
        b=b,
        c=[0.0, 1 / 2, 3 / 4, 1.0],
        order=3,
        b_err=[x - y for x, y in zip(b, b_hat, strict=True)],
        error_order=2,
        fsal=True,
        dense=_hermite_dense_fsal(b),
        dense_order=3,
    )


def _dopri5() -> ButcherTableau:
    # Dormand & Prince (1980); dense output: Shampine (1986), the 4th-order interpolant that
    # torchdiffeq fits through y0, y1, y(1/2) (DPS_C_MID), f0, f1. Rewritten here as b(theta).
    b = [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0]
    b_hat = [5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40]
    mid = [
        6025192743 / 30085553152 / 2,
        0.0,
        51252292925 / 65400821598 / 2,
        -2691868925 / 45128329728 / 2,
        187940372067 / 1594534317056 / 2,
        -1776094331 / 19743644256 / 2,
        11237099 / 235043384 / 2,
    ]
    return ButcherTableau.from_lists(
        "dopri5",
        a=[
            [],
            [1 / 5],
            [3 / 40, 9 / 40],
            [44 / 45, -56 / 15, 32 / 9],
            [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
            [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
            [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
        ],
        b=b,
        c=[0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0],
        order=5,
        b_err=[x - y for x, y in zip(b, b_hat, strict=True)],
        error_order=4,
        fsal=True,
        dense=_quartic_dense(b, mid),
        dense_order=4,
    )


def _quartic_dense(b: list[float], mid: list[float]) -> list[list[float]]:
    """The quartic interpolant of an FSAL pair through ``y0``, ``f0 = k_1``, ``y1``,
    ``f1 = k_s`` and ``y(1/2) = y0 + h sum(mid k)`` (torchdiffeq's ``_interp_fit``), as
    ``b(theta)`` rows: the ``y0`` terms cancel, so each power of ``theta`` weighs the stages."""
    s = len(b)
    e0, e_last = np.eye(s)[0], np.eye(s)[s - 1]
    bb, mm = np.array(b), np.array(mid)
    c2 = e_last - 4 * e0 - 5 * bb + 16 * mm
    c3 = 5 * e0 - 3 * e_last + 14 * bb - 32 * mm
    c4 = 2 * (e_last - e0) - 8 * bb + 16 * mm
    return [list(e0), list(c2), list(c3), list(c4)]


def _dopri8() -> ButcherTableau:
    # Prince & Dormand (1981), "High order embedded Runge-Kutta formulae", the RK8(7)13M pair
    # (rational approximations of its coefficients, as torchdiffeq's "dopri8"): 13 stages and
    # the last f(t1, y1) (FSAL), order 8 with an embedded order-7 method. Dense output: the
    # quartic fit through y(1/2) from Hairer's DOP853 continuous extension at theta = 1/2
    # (torchdiffeq's C_mid), so 4th order between steps, as torchdiffeq's.
    b = [
        14005451 / 335480064, 0.0, 0.0, 0.0, 0.0, -59238493 / 1068277825,
        181606767 / 758867731, 561292985 / 797845732, -1041891430 / 1371343529,
        760417239 / 1151165299, 118820643 / 751138087, -528747749 / 2220607170, 1 / 4, 0.0,
    ]
    b_hat = [
        13451932 / 455176623, 0.0, 0.0, 0.0, 0.0, -808719846 / 976000145,
        1757004468 / 5645159321, 656045339 / 265891186, -3867574721 / 1518517206,
        465885868 / 322736535, 53011238 / 667516719, 2 / 45, 0.0, 0.0,
    ]
    a = [
        [],
        [1 / 18],
        [1 / 48, 1 / 16],
        [1 / 32, 0.0, 3 / 32],
        [5 / 16, 0.0, -75 / 64, 75 / 64],
        [3 / 80, 0.0, 0.0, 3 / 16, 3 / 20],
        [29443841 / 614563906, 0.0, 0.0, 77736538 / 692538347, -28693883 / 1125000000,
         23124283 / 1800000000],
        [16016141 / 946692911, 0.0, 0.0, 61564180 / 158732637, 22789713 / 633445777,
         545815736 / 2771057229, -180193667 / 1043307555],
        [39632708 / 573591083, 0.0, 0.0, -433636366 / 683701615, -421739975 / 2616292301,
         100302831 / 723423059, 790204164 / 839813087, 800635310 / 3783071287],
        [246121993 / 1340847787, 0.0, 0.0, -37695042795 / 15268766246,
         -309121744 / 1061227803, -12992083 / 490766935, 6005943493 / 2108947869,
         393006217 / 1396673457, 123872331 / 1001029789],
        [-1028468189 / 846180014, 0.0, 0.0, 8478235783 / 508512852, 1311729495 / 1432422823,
         -10304129995 / 1701304382, -48777925059 / 3047939560, 15336726248 / 1032824649,
         -45442868181 / 3398467696, 3065993473 / 597172653],
        [185892177 / 718116043, 0.0, 0.0, -3185094517 / 667107341, -477755414 / 1098053517,
         -703635378 / 230739211, 5731566787 / 1027545527, 5232866602 / 850066563,
         -4093664535 / 808688257, 3962137247 / 1805957418, 65686358 / 487910083],
        [403863854 / 491063109, 0.0, 0.0, -5068492393 / 434740067, -411421997 / 543043805,
         652783627 / 914296604, 11173962825 / 925320556, -13158990841 / 6184727034,
         3936647629 / 1978049680, -160528059 / 685178525, 248638103 / 1413531060, 0.0],
        b[:13],
    ]
    c = [0.0, 1 / 18, 1 / 12, 1 / 8, 5 / 16, 3 / 8, 59 / 400, 93 / 200,
         5490023248 / 9719169821, 13 / 20, 1201146811 / 1299019798, 1.0, 1.0, 1.0]
    # DOP853's continuous-extension polynomials of each stage (theta^1..theta^5 coefficients),
    # evaluated at theta = 1/2: the weights of y(1/2).
    poly = {
        0: [-6.6910181737837595697, 19.9990069333683970610, -30.0610568289666450593,
            22.1396504998094068976, -6.3448349392860401388],
        5: [-7.6142658045872677172, 52.2273532792945524050, -121.4999627731334642623,
            116.4422149550342161651, -39.6107919852202505218],
        6: [10.7281392630428866124, -46.8919164181093621583, 83.1721004639847717481,
            -67.1451318825957197185, 20.3761213808791436958],
        7: [0.5526637063753648783, -0.1890893225010595467, 9.5724507555993664382,
            -16.5672243527496524646, 7.3347098826795362023],
        8: [4.2186562625665153803, -35.7075975946222072821, 87.8406057677205645007,
            -89.9916014847245016028, 32.8801774352459155182],
        9: [-0.6627209125361597559, 6.2736448083240352160, -17.4152107770762969005,
            22.6237489648532849093, -10.1588990526426760954],
        10: [-1.2636789001135462218, 10.3160881272450748458, -28.5903289514790976966,
             32.2362340167355370113, -12.5401268098782561200],
        11: [5.4106037898590422230, -34.7650769866611817349, 81.6630950584341412934,
             -82.1020315488359848644, 29.5553001484516038033],
        12: [-7.0321379067945741781, 47.7457971078225540396, -114.9375291377009418170,
             116.2662185791119533462, -41.7923486424390588923],
        13: [2.3537586759714983486, -19.0082099341608028453, 50.2558364226176017553,
             -53.9020777466385396792, 20.3006925822100825485],
    }
    half = 0.5
    mid = [0.0] * 14
    for i, cf in poly.items():
        mid[i] = ((1.0 if i == 0 else 0.0) + sum(x * half ** (p + 1) for p, x in enumerate(cf))
                  ) * half
    return ButcherTableau.from_lists(
        "dopri8", a=a, b=b, c=c, order=8,
        b_err=[x - y for x, y in zip(b, b_hat, strict=True)], error_order=7, fsal=True,
        dense=_quartic_dense(b, mid), dense_order=4,
    )


def _tsit5() -> ButcherTableau:
    # Tsitouras (2011), "Runge-Kutta pairs of order 5(4) satisfying only the first column
    # simplifying assumption". Coefficients as in OrdinaryDiffEq.jl / torchode / diffrax; the sign
    # of the last error weight is corrected (OrdinaryDiffEq.jl issue #1654).
    b = [
        0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742,
        -3.290069515436081, 2.324710524099774, 0.0,
    ]
    b_err = [
        0.00178001105222577714, 0.0008164344596567469, -0.007880878010261995,
        0.1447110071732629, -0.5823571654525552, 0.45808210592918697, -1 / 66,
    ]
    # Tsitouras's interpolant: b_i(theta) given as factored polynomials; expand to powers.
    P = np.polynomial.Polynomial
    th = P([0.0, 1.0])
    basis = [
        -1.0530884977290216 * th * (th - 1.3299890189751412)
        * (th**2 - 1.4364028541716351 * th + 0.7139816917074209),
        0.1017 * th**2 * (th**2 - 2.1966568338249754 * th + 1.2949852507374631),
        2.490627285651252793 * th**2 * (th**2 - 2.38535645472061657 * th + 1.57803468208092486),
        -16.54810288924490272 * (th - 1.21712927295533244) * (th - 0.61620406037800089) * th**2,
        47.37952196281928122 * (th - 1.203071208372362603) * (th - 0.658047292653547382) * th**2,
        -34.87065786149660974 * (th - 1.2) * (th - 0.666666666666666667) * th**2,
        2.5 * (th - 1) * (th - 0.6) * th**2,
    ]
    coef = np.zeros((4, 7))
    for i, poly in enumerate(basis):
        cf = np.zeros(5)
        cf[: len(poly.coef)] = poly.coef
        coef[:, i] = cf[1:5]
    # The printed basis polynomials are rounded to ~16 digits; restore sum_p coef[p] == b exactly
    # (the defect is ~1e-15) by absorbing it in the theta^4 row.
    coef[3] += np.array(b) - coef.sum(axis=0)
    return ButcherTableau.from_lists(
        "tsit5",
        a=[
            [],
            [0.161],
            [-0.008480655492356989, 0.335480655492357],
            [2.8971530571054935, -6.359448489975075, 4.3622954328695815],
            [5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525],
            [5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401,
             -0.02826905039406838],
            b[:6],
        ],
        b=b,
        c=[0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0],
        order=5,
        b_err=b_err,
        error_order=4,
        fsal=True,
        dense=coef.tolist(),
        dense_order=4,
    )


def _heun2() -> ButcherTableau:
    # Heun's (trapezoidal) second-order method, torchdiffeq's "heun2".
    b = [0.5, 0.5]
    return ButcherTableau.from_lists(
        "heun2", a=[[], [1.0]], b=b, c=[0.0, 1.0], order=2, dense=_hermite_dense(b),
        dense_order=2,
    )


def _heun3() -> ButcherTableau:
    # Heun's third-order method, torchdiffeq's "heun3".
    b = [1 / 4, 0.0, 3 / 4]
    return ButcherTableau.from_lists(
        "heun3", a=[[], [1 / 3], [0.0, 2 / 3]], b=b, c=[0.0, 1 / 3, 2 / 3], order=3,
        dense=_hermite_dense(b), dense_order=3,
    )


def _adaptive_heun() -> ButcherTableau:
    # Heun 2 with Euler's step through the second stage as the embedded order-1 method
    # (torchdiffeq's "adaptive_heun"; not FSAL).
    b, b_hat = [0.5, 0.5], [0.0, 1.0]
    return ButcherTableau.from_lists(
        "adaptive_heun", a=[[], [1.0]], b=b, c=[0.0, 1.0], order=2,
        b_err=[x - y for x, y in zip(b, b_hat, strict=True)], error_order=1,
        dense=_hermite_dense(b), dense_order=2,
    )


def _fehlberg2() -> ButcherTableau:
    # Fehlberg's RK1(2) pair (1969; NASA TR R-315), torchdiffeq's "fehlberg2": order 2, the
    # embedded order 1; the last stage is at c = 1 but not the solution, so not FSAL.
    b = [1 / 512, 255 / 256, 1 / 512]
    b_hat = [1 / 256, 255 / 256, 0.0]
    return ButcherTableau.from_lists(
        "fehlberg2", a=[[], [1 / 2], [1 / 256, 255 / 256]], b=b, c=[0.0, 1 / 2, 1.0], order=2,
        b_err=[x - y for x, y in zip(b, b_hat, strict=True)], error_order=1,
        dense=_hermite_dense(b), dense_order=2,
    )


TABLEAUX: dict[str, ButcherTableau] = {
    t.name: t
    for t in (
        _euler(), _midpoint(), _heun2(), _heun3(), _rk4(), _adaptive_heun(), _fehlberg2(),
        _bosh3(), _dopri5(), _tsit5(), _dopri8(),
    )
}
"""Name -> tableau, for every explicit Runge-Kutta method ``odeint`` supports."""


def stability_function(a: np.ndarray, b: np.ndarray, z: complex) -> complex:
    """``R(z) = 1 + z b^T (I - z A)^{-1} 1``: one step of ``y' = lambda y`` multiplies ``y`` by
    ``R(h lambda)``. A-stable: ``|R(z)| <= 1`` for ``Re z <= 0``; L-stable: also
    ``R(z) -> 0`` as ``z -> -inf``."""
    s = len(b)
    return complex(1 + z * (b @ np.linalg.solve(np.eye(s) - z * a, np.ones(s))))


def _imaginary_axis_peak(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """``(sup |R(iy)|, y)`` over ``y >= 0`` for an ESDIRK tableau (``a[0] = 0``, one diagonal
    ``gamma = a[1][1] > 0`` below): the largest amplification on the imaginary axis and where it
    is reached (``y = inf`` for the limit). The poles ``1/gamma`` lie in the right half plane, so
    the method is A-stable exactly when the first value is ``<= 1`` (maximum principle).

    Exact up to round-off, not a sample. ``R = P / Q`` with ``Q(z) = det(I - zA) =
    (1 - gamma z)^(s-1)`` and ``P(z) = det(I - zA + z 1 b^T)`` (degree ``<= s``). In the scaled
    ``w = (gamma y)^2``, ``|R(iy)|^2 = U(w) / (1 + w)^(s-1)`` with ``U`` a polynomial of degree
    ``<= s`` (``P``'s coefficients are read off its values at the ``s + 1``-th roots of unity;
    the scaling keeps them of one size, so those below ``1e-13`` of the largest are round-off),
    whose extrema on ``w > 0`` are roots of ``(1 + w) U' - (s - 1) U``. ``R`` is evaluated at
    ``y = 0`` and at every such root up to ``y = 1e8`` (an inexact root only moves a sample
    point: every value is a true ``|R(iy)|``); the limit ``y -> inf`` is ``|R(-inf)|``
    (:func:`_r_inf`, ``inf`` when ``R`` grows), which also stands for ``y > 1e8``, where ``R`` is
    within ``O(1/y)`` of it.
    """
    s = len(b)
    gamma = float(a[1, 1])
    n = s + 1
    nodes = np.exp(2j * np.pi * np.arange(n) / n) / gamma
    one = np.ones(s)
    p_vals = [np.linalg.det(np.eye(s) - z * a + z * np.outer(one, b)) for z in nodes]
    # P(zeta / gamma) in zeta = gamma z (lowest power first), then at zeta = i eta
    p_zeta = np.fft.fft(p_vals).real / n
    p_zeta[np.abs(p_zeta) <= 1e-13 * np.max(np.abs(p_zeta))] = 0.0
    p_eta = p_zeta * 1j ** np.arange(n)
    u = np.convolve(p_eta, p_eta.conj()).real[::2]  # |P(i eta / gamma)|^2, a polynomial in w
    poly = np.polynomial.polynomial
    numer = poly.polysub(poly.polymul([1.0, 1.0], poly.polyder(u)), (s - 1) * u)
    numer = np.trim_zeros(numer, "b")
    roots = poly.polyroots(numer) if len(numer) > 1 else np.array([])
    candidates = {0.0, *(float(np.sqrt(abs(w))) / gamma for w in roots)}
    finite = ((abs(stability_function(a, b, 1j * y)), y) for y in candidates if y <= 1e8)
    return max((abs(_r_inf(a, b)), math.inf), *finite)


@dataclass(frozen=True)
class ImplicitTableau:
    """An ESDIRK tableau (explicit first stage, singly diagonally implicit), frozen and validated.

    Stage ``i >= 1`` solves ``Z_i = y + h sum_{j<i} a_ij k_j + h gamma f(t + c_i h, Z_i)`` for
    ``Z_i`` (``k_i = f(t + c_i h, Z_i)``); stage 0 is ``k_0 = f(t, y)``. Checked on
    construction: the shape (row ``a[i]`` has ``i + 1`` entries, the last one the diagonal;
    ``a[0] == (0.0,)``; one diagonal ``gamma > 0`` for ``i >= 1``), consistency
    ``c_i = sum_j a_ij``, ``sum(b) = 1``, the rooted-tree order conditions of ``b`` and of the
    embedded ``b - b_err`` (the same check as :class:`ButcherTableau`, up to order 5), and with
    ``l_stable``: ``|R(-1e8)| < 1e-6`` and ``R(-inf) = 0`` (computed exactly), and
    ``|R(iy)| <= 1`` on the whole imaginary axis (A-stability; exactly, from the extrema of
    ``|R(iy)|``: :func:`_imaginary_axis_peak`).

    Stiffly accurate tableaux (``b == a[-1]``, ``c[-1] == 1``) are first-same-as-last: the last
    stage is ``f(t + h, y1)``, the next step's ``k_0``; their dense output is the cubic Hermite
    interpolant on ``y0, y1, k_0, k_last``.

    Attributes:
        name, b, c, order, b_err, error_order, dense, dense_order: as :class:`ButcherTableau`.
        a: lower-triangular rows including the diagonal: ``a[i]`` has ``i + 1`` entries.
        l_stable: declared L-stable (checked).

    A tableau that is not stiffly accurate has no FSAL interpolant (``from_lists`` leaves
    ``dense`` empty, and a given one is refused): its dense output is the cubic Hermite with
    ``f(t + h, y1)`` appended, as for a non-FSAL explicit tableau.
    """

    name: str
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    c: tuple[float, ...]
    order: int
    b_err: tuple[float, ...] | None = None
    error_order: int | None = None
    l_stable: bool = False
    dense: tuple[tuple[float, ...], ...] = ()
    dense_order: int = 0
    #: The diagonal ``gamma`` of stages 1..s-1.
    gamma: float = field(init=False)
    #: ``b == a[-1]`` and ``c[-1] == 1``: ``y1`` is the last stage's value, ``k_last`` is
    #: ``f(t + h, y1)`` (first-same-as-last).
    stiffly_accurate: bool = field(init=False)
    #: Nonzero ``(j, a_ij)`` with ``j < i`` per stage; nonzero ``(j, b_j)`` / ``(j, e_j)``.
    stage_terms: tuple[tuple[tuple[int, float], ...], ...] = field(init=False, repr=False)
    b_terms: tuple[tuple[int, float], ...] = field(init=False, repr=False)
    err_terms: tuple[tuple[int, float], ...] = field(init=False, repr=False)

    @classmethod
    def from_lists(
        cls,
        name: str,
        a: list[list[float]],
        b: list[float],
        c: list[float],
        order: int,
        b_err: list[float] | None = None,
        error_order: int | None = None,
        l_stable: bool = False,
        dense: list[list[float]] | None = None,
        dense_order: int = 0,
    ) -> ImplicitTableau:
        """Build from plain lists (``dense=None``: the cubic Hermite interpolant)."""
        bb = [float(x) for x in b]
        cc = [float(x) for x in c]
        if dense is None and len(a) == len(bb) and _stiffly_accurate(a[-1], bb, cc):
            # the FSAL Hermite; other tableaux interpolate with f(t+h, y1) (see interpolant)
            dense = _hermite_dense_fsal(bb)
            dense_order = 3 if order >= 3 else order
        return cls(
            name=name,
            a=tuple(tuple(float(x) for x in row) for row in a),
            b=tuple(bb),
            c=tuple(cc),
            order=order,
            b_err=None if b_err is None else tuple(float(x) for x in b_err),
            error_order=error_order,
            l_stable=l_stable,
            dense=() if dense is None else tuple(tuple(float(x) for x in r) for r in dense),
            dense_order=dense_order,
        )

    @property
    def num_stages(self) -> int:
        return len(self.b)

    @property
    def adaptive(self) -> bool:
        return self.b_err is not None

    @property
    def fsal(self) -> bool:
        return self.stiffly_accurate

    def a_matrix(self) -> np.ndarray:
        """The full ``(s, s)`` coefficient matrix (zeros above the diagonal)."""
        s = self.num_stages
        out = np.zeros((s, s))
        for i, row in enumerate(self.a):
            out[i, : len(row)] = row
        return out

    def stability(self, z: complex) -> complex:
        """The stability function ``R(z)`` of the solution weights."""
        return stability_function(self.a_matrix(), np.array(self.b), z)

    def r_infinity(self) -> float:
        """``lim R(z)`` as ``z -> -inf``, exactly (see :func:`_r_inf`)."""
        return _r_inf(self.a_matrix(), np.array(self.b))

    def __post_init__(self) -> None:
        s = len(self.b)
        fail = self._fail
        if s < 2:
            fail("an ESDIRK tableau needs at least 2 stages (the first one explicit)")
        if len(self.c) != s or len(self.a) != s:
            fail(f"len(a)={len(self.a)}, len(b)={s}, len(c)={len(self.c)} must all be equal")
        for i, row in enumerate(self.a):
            if len(row) != i + 1:
                fail(
                    f"row a[{i}] has {len(row)} entries; a diagonally implicit method needs "
                    f"exactly {i + 1} (lower triangular including the diagonal)"
                )
            if abs(sum(row) - self.c[i]) > 1e-12:
                fail(f"c[{i}]={self.c[i]!r} differs from sum(a[{i}])={sum(row)!r} (consistency)")
        if self.a[0] != (0.0,):
            fail(f"a[0]={self.a[0]!r} must be (0.0,): the first stage is explicit (ESDIRK)")
        gamma = self.a[1][1]
        if not gamma > 0:
            fail(f"the diagonal a[1][1]={gamma!r} must be positive")
        for i in range(2, s):
            if self.a[i][i] != gamma:
                fail(
                    f"a[{i}][{i}]={self.a[i][i]!r} differs from a[1][1]={gamma!r}; a singly "
                    "diagonally implicit method has one diagonal value"
                )
        if abs(sum(self.b) - 1.0) > 1e-12:
            fail(f"sum(b)={sum(self.b)!r} must be 1")
        if self.order < 1:
            fail(f"order={self.order} must be >= 1")
        a_full = self.a_matrix()
        self._check_order(a_full, np.array(self.b), self.order, "b")
        if self.b_err is not None:
            if len(self.b_err) != s:
                fail(f"b_err has {len(self.b_err)} entries, expected {s}")
            if self.error_order is None:
                fail("error_order is required when b_err is given")
            if abs(sum(self.b_err)) > 1e-12:
                fail(f"sum(b_err)={sum(self.b_err)!r} must be 0 (b and b_hat both sum to 1)")
            b_hat = np.array(self.b) - np.array(self.b_err)
            self._check_order(a_full, b_hat, int(self.error_order), "b - b_err")
        stiff = _stiffly_accurate(self.a[-1], self.b, self.c)
        if self.l_stable:
            b = np.array(self.b)
            r_big = abs(stability_function(a_full, b, -1e8))
            r_inf = abs(_r_inf(a_full, b))
            if r_big > 1e-6 or r_inf > 1e-9:
                fail(
                    f"declared L-stable, but |R(-1e8)|={r_big:.3e} and |R(-inf)|={r_inf:.3e} "
                    "(both must vanish)"
                )
            worst, where = _imaginary_axis_peak(a_full, b)
            if worst > 1.0 + 1e-12:
                fail(
                    f"declared L-stable, but |R(iy)| reaches {worst!r} > 1 at y={where:.6g} "
                    "(not A-stable)"
                )
        if self.dense:
            for p, row in enumerate(self.dense):
                if len(row) != s:
                    fail(f"dense row {p} has {len(row)} entries, expected {s}")
            if not stiff:
                fail("dense output needs a stiffly accurate tableau (k_last = f(t+h, y1))")
            at_one = np.sum(np.array(self.dense), axis=0)
            if np.max(np.abs(at_one - np.array(self.b))) > 1e-12:
                fail("dense output at theta=1 must equal the solution weights b")
        object.__setattr__(self, "gamma", gamma)
        object.__setattr__(self, "stiffly_accurate", stiff)
        object.__setattr__(
            self,
            "stage_terms",
            tuple(tuple((j, x) for j, x in enumerate(row[:-1]) if x != 0.0) for row in self.a),
        )
        object.__setattr__(self, "b_terms", tuple((j, x) for j, x in enumerate(self.b) if x != 0.0))
        object.__setattr__(
            self,
            "err_terms",
            () if self.b_err is None else tuple((j, x) for j, x in enumerate(self.b_err) if x != 0),
        )

    def _check_order(self, a_full: np.ndarray, weights: np.ndarray, order: int, what: str) -> None:
        res = order_condition_residuals(a_full, weights, min(order, 5))
        worst = max(abs(r) for r in res)
        if worst > 1e-10:
            self._fail(
                f"weights {what} do not satisfy the order conditions for declared order {order} "
                f"(largest residual {worst:.3e})"
            )

    def _fail(self, msg: str) -> None:
        raise InvalidArgumentError(f"invalid implicit Butcher tableau {self.name!r}: {msg}")


def _r_inf(a: np.ndarray, b: np.ndarray) -> float:
    """``R(-inf)`` of an ESDIRK tableau, from the expansion of ``R(z)`` in ``1/z``.

    With ``A = [[0, 0], [a~, A~]]`` (``A~`` invertible) and ``b = (b0, b~)``:
    ``u = (I - zA)^{-1} 1 = (1, (I - zA~)^{-1} (1 + z a~))`` and, since
    ``z (I - zA~)^{-1} = -A~^{-1} - A~^{-2}/z - ...``,
    ``R(z) = 1 + z b0 + z b~.u~ = z (b0 - b~ A~^{-1} a~) + 1 - b~ A~^{-1} 1 - b~ A~^{-2} a~
    + O(1/z)``. Returns ``inf`` when the ``z`` term does not cancel.
    """
    at, col = a[1:, 1:], a[1:, 0]
    bt, b0 = b[1:], b[0]
    inv_col = np.linalg.solve(at, col)
    if abs(b0 - bt @ inv_col) > 1e-12:
        return float("inf")
    ones = np.ones(len(bt))
    return float(1.0 - bt @ np.linalg.solve(at, ones) - bt @ np.linalg.solve(at, inv_col))


def _esdirk(
    name: str, gamma: float, rows: list[list[float]], order: int, embedded: bool = True
) -> ImplicitTableau:
    """A stiffly accurate ESDIRK tableau from its strictly-lower rows (stage 1..s-1): ``b`` is
    the last row; the embedded solution (``embedded``) is the previous stage's value, so
    ``b_err = a[-1] - a[-2]`` and the embedded order is ``order - 1``."""
    a = [[0.0]] + [[*r, gamma] for r in rows]
    s = len(a)
    full = [[*r, *([0.0] * (s - len(r)))] for r in a]
    b = full[-1]
    return ImplicitTableau.from_lists(
        name,
        a=a,
        b=b,
        # Nodes that are 1 up to round-off are exactly 1 (the loops compare c == 1.0).
        c=[1.0 if abs(sum(r) - 1.0) < 1e-13 else sum(r) for r in a],
        order=order,
        b_err=[x - y for x, y in zip(full[-1], full[-2], strict=True)] if embedded else None,
        error_order=order - 1 if embedded else None,
        l_stable=True,
    )


def _implicit_euler() -> ImplicitTableau:
    # Backward Euler written as a 2-stage ESDIRK: k_0 = f(t, y) (only for the Hermite dense
    # output; it is the previous step's last stage), Z_1 = y + h f(t + h, Z_1), y1 = Z_1.
    # Fixed step (no embedded pair).
    return _esdirk("implicit_euler", 1.0, [[0.0]], order=1, embedded=False)


def _kvaerno3() -> ImplicitTableau:
    # Kvaerno (2004), "Singly diagonally implicit Runge-Kutta methods with an explicit first
    # stage", BIT 44: the 3(2) method, 4 stages. Coefficients in closed form in gamma (the
    # order conditions hold for any gamma); gamma is the root of 6g^3 - 18g^2 + 9g - 1 in
    # (0.4, 0.5) that makes R(-inf) = 0 (the paper prints 0.4358665215).
    g = float(min(r.real for r in np.roots([6.0, -18.0, 9.0, -1.0]) if 0.4 < r.real < 0.5))
    rows = [
        [g],
        [(-4 * g**2 + 6 * g - 1) / (4 * g), (-2 * g + 1) / (4 * g)],
        [(6 * g - 1) / (12 * g), -1 / ((24 * g - 12) * g), (-6 * g**2 + 6 * g - 1) / (6 * g - 3)],
    ]
    return _esdirk("kvaerno3", g, rows, order=3)


def _kvaerno4() -> ImplicitTableau:
    # Kvaerno (2004): the 4(3) method, 5 stages, closed form in gamma (order conditions hold for
    # any gamma). gamma: the root near the paper's 0.5728160625 of R(-inf) = 0, refined here
    # (bisection on _r_inf, 1e-16) so the method is L-stable to round-off.
    g = 0.572816062482135

    def p(*coef: float) -> float:
        return float(np.polyval(coef, g))

    rows = [
        [g],
        [p(144, -180, 81, -15, 1) * g / p(12, -6, 1) ** 2,
         p(-36, 39, -15, 2) * g / p(12, -6, 1) ** 2],
        [p(-144, 396, -330, 117, -18, 1) / (12 * g**2 * p(12, -9, 2)),
         p(72, -126, 69, -15, 1) / (12 * g**2 * p(3, -1)),
         p(-6, 6, -1) * p(12, -6, 1) ** 2 / (12 * g**2 * p(12, -9, 2) * p(3, -1))],
        [p(288, -312, 120, -18, 1) / (48 * g**2 * p(12, -9, 2)),
         p(24, -12, 1) / (48 * g**2 * p(3, -1)),
         -(p(12, -6, 1) ** 3) / (48 * g**2 * p(3, -1) * p(12, -9, 2) * p(6, -6, 1)),
         p(-24, 36, -12, 1) / p(24, -24, 4)],
    ]
    return _esdirk("kvaerno4", g, rows, order=4)


def _kvaerno5() -> ImplicitTableau:
    # Kvaerno (2004): the 5(4) method, 7 stages, gamma = 0.26; coefficients to 17 digits (as
    # printed in the paper and used by diffrax).
    rows = [
        [0.26],
        [0.13, 0.84033320996790809],
        [0.22371961478320505, 0.47675532319799699, -0.06470895363112615],
        [0.16648564323248321, 0.10450018841591720, 0.03631482272098715, -0.13090704451073998],
        [0.13855640231268224, 0.0, -0.04245337201752043, 0.02446657898003141,
         0.61943039072480676],
        [0.13659751177640291, 0.0, -0.05496908796538376, -0.04118626728321046,
         0.62993304899016403, 0.06962479448202728],
    ]
    return _esdirk("kvaerno5", 0.26, rows, order=5)


IMPLICIT_TABLEAUX: dict[str, ImplicitTableau] = {
    t.name: t for t in (_implicit_euler(), _kvaerno3(), _kvaerno4(), _kvaerno5())
}
"""Name -> tableau, for every implicit (ESDIRK) Runge-Kutta method ``odeint`` supports."""


def get_tableau(name: str) -> ButcherTableau | ImplicitTableau:
    """The tableau called ``name`` (explicit or implicit); raises :class:`UnknownNameError`
    listing the valid names."""
    tab = TABLEAUX.get(name) or IMPLICIT_TABLEAUX.get(name)
    if tab is None:
        raise UnknownNameError("tableau", name, sorted([*TABLEAUX, *IMPLICIT_TABLEAUX]))
    return tab
