"""High-precision reference implementations of every operation of :mod:`poincare`.

Every function here evaluates the textbook formula of an operation on the Poincaré ball of
curvature ``-c`` (the ball ``{x : c|x|^2 < 1}``) in mpmath at :data:`DPS` significant decimal
digits. The formulas are the plain ones of Ganea, Bécigneul and Hofmann (2018), "Hyperbolic
neural networks", and of Ungar's gyrovector spaces, written without any of the algebraic
rearrangements a floating-point implementation needs; with 80 digits they are exact for every
purpose of a float32 or float64 comparison.

Conventions:

* A vector is a ``list`` of ``mpmath.mpf``; any sequence of floats or mpf is accepted as input.
  ``mpmath.mpf(float(v))`` is exact for float32 and float64 values, so :func:`to_mp` converts a
  tensor to the exact values of its elements.
* ``c`` is a positive real (float or mpf); pass the value the float code actually uses.
* The precision is set locally with :func:`mpmath.workdps` around every evaluation; the global
  mpmath context is never changed. The returned ``mpf`` values keep their 80-digit mantissas.
* Points that must lie strictly inside the ball are checked, and a :class:`ValueError` naming the
  argument is raised otherwise; vectors of different lengths, non-finite entries and ``c <= 0``
  raise :class:`ValueError` as well.

The fused kernels of :mod:`poincare._fused` are checked against the compositions of the ops
they replace, written here as such: :func:`expmap0_add`, :func:`expmap0_add_lorentz`,
:func:`midpoint_logmap0` and :func:`cosh_score` (and :func:`score_from_cosh`, the score of a
given ``cosh`` of a distance).

Besides the operations, the module provides derivatives for gradient checks: the Euclidean
gradients of :func:`dist` and :func:`dist0`, and, for the point-valued operations, the gradient of
the scalar ``sum(w * op(...))`` for a given weight vector ``w`` (a vector-Jacobian product).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import mpmath
import torch

__all__ = [
    "DPS",
    "SCORES",
    "Vec",
    "check_point",
    "conformal_factor",
    "cosh_score",
    "dist",
    "dist0",
    "dot",
    "egrad2rgrad",
    "einstein_midpoint",
    "expmap",
    "expmap0",
    "expmap0_add",
    "expmap0_add_lorentz",
    "grad_dist",
    "grad_dist0",
    "grad_einstein_midpoint",
    "grad_expmap",
    "grad_expmap0",
    "grad_expmap0_add",
    "grad_expmap0_add_lorentz",
    "grad_logmap",
    "grad_logmap0",
    "grad_mobius_add",
    "gyration",
    "in_ball",
    "klein_to_poincare",
    "logmap",
    "logmap0",
    "lorentz_to_poincare",
    "max_radius",
    "midpoint_logmap0",
    "mobius_add",
    "mobius_matvec",
    "mobius_scalar_mul",
    "mobius_sub",
    "norm",
    "numeric_grad",
    "pairwise_dist",
    "poincare_to_klein",
    "poincare_to_lorentz",
    "project",
    "round_to_dtype",
    "score_from_cosh",
    "to_floats",
    "to_mp",
    "to_tensor",
    "transp",
    "transp0",
    "vjp",
]

DPS = 80
"""Significant decimal digits of every reference evaluation."""

Vec: TypeAlias = list[Any]
"""A vector: a list of ``mpmath.mpf``."""

_MANTISSA_BITS = {
    torch.float64: 53,
    torch.float32: 24,
    torch.float16: 11,
    torch.bfloat16: 8,
}


# ----------------------------------------------------------------------------------------------
# Input checking and small vector helpers
# ----------------------------------------------------------------------------------------------


def _ctx() -> Any:
    """A local mpmath precision of at least :data:`DPS` digits (more if the caller set more,
    as :func:`mpmath.diff` does when it differentiates a reference)."""
    return mpmath.workdps(max(DPS, mpmath.mp.dps))


def _scalar(value: Any, name: str) -> Any:
    """Convert ``value`` to an mpf, raising ``ValueError`` naming ``name`` if not finite."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        value = float(value.item())
    if isinstance(value, mpmath.mpf):
        out = value
    else:
        try:
            out = mpmath.mpf(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a real number, got {type(value).__name__}") from exc
    if not mpmath.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


def _curv(c: Any) -> Any:
    """Check and convert the curvature ``c`` (> 0, finite)."""
    out = _scalar(c, "c")
    if out <= 0:
        raise ValueError(f"c must be positive, got {c!r}")
    return out


def _vec(x: Any, name: str) -> Vec:
    """Convert a sequence of numbers to a list of mpf, checking that it is a finite vector."""
    if isinstance(x, torch.Tensor):
        if x.dim() != 1:
            raise ValueError(f"{name} must be a vector, got a tensor of shape {tuple(x.shape)}")
        x = x.detach().to(torch.float64).tolist()
    if isinstance(x, (str, bytes)) or not isinstance(x, Sequence):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(x).__name__}")
    if len(x) == 0:
        raise ValueError(f"{name} must not be empty")
    return [_scalar(v, f"{name}[{i}]") for i, v in enumerate(x)]


def _same_dim(a: Vec, b: Vec, name_a: str, name_b: str) -> None:
    if len(a) != len(b):
        raise ValueError(
            f"{name_a} and {name_b} must have the same length, got {len(a)} and {len(b)}"
        )


def _point(x: Any, c: Any, name: str) -> Vec:
    """Convert ``x`` and check that it lies strictly inside the ball ``c|x|^2 < 1``."""
    v = _vec(x, name)
    if c * dot(v, v) >= 1:
        raise ValueError(f"{name} must lie strictly inside the ball c|{name}|^2 < 1")
    return v


def dot(x: Sequence[Any], y: Sequence[Any]) -> Any:
    """Euclidean inner product ``<x, y> = Σ x_i y_i`` at :data:`DPS` digits."""
    with _ctx():
        return mpmath.fsum(mpmath.mpf(a) * mpmath.mpf(b) for a, b in zip(x, y, strict=True))


def norm(x: Sequence[Any]) -> Any:
    """Euclidean norm ``|x| = sqrt(<x, x>)`` at :data:`DPS` digits."""
    with _ctx():
        return mpmath.sqrt(dot(x, x))


def _scale(a: Any, x: Vec) -> Vec:
    return [a * v for v in x]


def _add(x: Vec, y: Vec) -> Vec:
    return [a + b for a, b in zip(x, y, strict=True)]


def _neg(x: Vec) -> Vec:
    return [-v for v in x]


def in_ball(x: Sequence[Any], c: Any = 1) -> bool:
    """Whether ``c|x|^2 < 1`` holds exactly (the point lies strictly inside the ball)."""
    with _ctx():
        cc = _curv(c)
        v = _vec(x, "x")
        return bool(cc * dot(v, v) < 1)


def check_point(x: Sequence[Any], c: Any = 1) -> None:
    """Raise ``ValueError`` unless ``x`` is a finite vector strictly inside the ball
    (``c|x|^2 < 1``, decided exactly on the given values)."""
    with _ctx():
        _point(x, _curv(c), "x")


# ----------------------------------------------------------------------------------------------
# Conversion between tensors and mpmath values
# ----------------------------------------------------------------------------------------------


def to_mp(t: torch.Tensor | float) -> Any:
    """The exact values of a tensor's elements as nested lists of mpf (an mpf for a 0-d tensor).

    A tensor of shape ``(a, b, D)`` becomes ``a`` lists of ``b`` lists of ``D`` mpf. Every
    float16/bfloat16/float32/float64 value is represented exactly. Raises ``TypeError`` for a
    non-floating tensor.
    """
    if isinstance(t, (int, float)):
        return mpmath.mpf(float(t))
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"t must be a tensor or a float, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"t must have a floating dtype, got {t.dtype}")
    values = t.detach().to(device="cpu", dtype=torch.float64).tolist()

    def conv(v: Any) -> Any:
        if isinstance(v, list):
            return [conv(u) for u in v]
        return mpmath.mpf(v)

    return conv(values)


def round_to_dtype(value: Any, dtype: torch.dtype = torch.float64) -> float:
    """Round a real (mpf or float) to the nearest value of ``dtype`` (ties to even), as a float.

    The rounding is done once, directly to the target precision (no double rounding through
    float64). Values beyond the dtype's range are returned as ``±inf``; subnormal results are
    rounded to the dtype's normal precision first (an error below the smallest subnormal).
    Raises ``ValueError`` for an unsupported dtype.
    """
    if dtype not in _MANTISSA_BITS:
        raise ValueError(f"dtype must be a floating torch dtype, got {dtype}")
    v = mpmath.mpf(value)
    if not mpmath.isfinite(v):
        return float(v)
    with mpmath.workprec(_MANTISSA_BITS[dtype]):
        r = +v
    out = float(r)
    return float(torch.tensor(out, dtype=torch.float64).to(dtype).item())


def to_floats(values: Any, dtype: torch.dtype = torch.float64) -> Any:
    """Nested lists of mpf to the same nesting of Python floats, each rounded to ``dtype``."""
    if isinstance(values, (list, tuple)):
        return [to_floats(v, dtype) for v in values]
    return round_to_dtype(values, dtype)


def to_tensor(values: Any, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Nested lists of mpf (any depth, rectangular) to a tensor of ``dtype``, correctly rounded."""
    return torch.tensor(to_floats(values, dtype), dtype=dtype)


# ----------------------------------------------------------------------------------------------
# The operations
# ----------------------------------------------------------------------------------------------


def max_radius(dtype: torch.dtype, c: Any = 1) -> Any:
    """Largest hyperbolic distance from the origin that ``dtype`` represents, in mpf.

    ``2/sqrt(c) · artanh(1 - u)`` where ``1 - u`` is the largest ``dtype`` value strictly below 1
    (``u = eps/2``), i.e. the distance of a point with ``sqrt(c)|x| = 1 - u``. About 17.33 for
    float32 and 37.43 for float64 at ``c = 1``. Raises ``ValueError`` for a non-floating dtype.
    """
    if dtype not in _MANTISSA_BITS:
        raise ValueError(f"dtype must be a floating torch dtype, got {dtype}")
    with _ctx():
        cc = _curv(c)
        below_one = 1 - mpmath.ldexp(1, -_MANTISSA_BITS[dtype])
        return 2 / mpmath.sqrt(cc) * mpmath.atanh(below_one)


def project(x: Sequence[Any], c: Any = 1, dtype: torch.dtype = torch.float64) -> Vec:
    """Pull a point inside the ball: ``x`` itself if its distance to the origin is below
    :func:`max_radius` of ``dtype``, else ``x`` rescaled onto the sphere of that radius,
    ``tanh(sqrt(c)·R/2) · x / (sqrt(c)|x|)``. ``x`` may be any finite vector (a zero vector is
    returned unchanged).
    """
    with _ctx():
        cc = _curv(c)
        v = _vec(x, "x")
        sc = mpmath.sqrt(cc)
        limit = mpmath.tanh(sc * max_radius(dtype, cc) / 2)
        n = norm(v)
        if sc * n <= limit:
            return v
        return _scale(limit / (sc * n), v)


def conformal_factor(x: Sequence[Any], c: Any = 1) -> Any:
    """Conformal factor ``λ_x = 2 / (1 - c|x|^2)`` of a point strictly inside the ball."""
    with _ctx():
        cc = _curv(c)
        v = _point(x, cc, "x")
        return 2 / (1 - cc * dot(v, v))


def mobius_add(x: Sequence[Any], y: Sequence[Any], c: Any = 1) -> Vec:
    """Möbius addition

    ``x ⊕ y = ((1 + 2c<x,y> + c|y|^2) x + (1 - c|x|^2) y) / (1 + 2c<x,y> + c^2|x|^2|y|^2)``.

    ``x`` and ``y`` must lie in the ball and have the same length.
    """
    with _ctx():
        cc = _curv(c)
        a = _point(x, cc, "x")
        b = _point(y, cc, "y")
        _same_dim(a, b, "x", "y")
        return _mobius_add(a, b, cc)


def _mobius_add(a: Vec, b: Vec, c: Any) -> Vec:
    ab = dot(a, b)
    a2 = dot(a, a)
    b2 = dot(b, b)
    coef_a = 1 + 2 * c * ab + c * b2
    coef_b = 1 - c * a2
    den = 1 + 2 * c * ab + c * c * a2 * b2
    return [(coef_a * u + coef_b * v) / den for u, v in zip(a, b, strict=True)]


def mobius_sub(x: Sequence[Any], y: Sequence[Any], c: Any = 1) -> Vec:
    """Möbius subtraction ``x ⊖ y = x ⊕ (-y)``."""
    with _ctx():
        cc = _curv(c)
        a = _point(x, cc, "x")
        b = _point(y, cc, "y")
        _same_dim(a, b, "x", "y")
        return _mobius_add(a, _neg(b), cc)


def mobius_scalar_mul(r: Any, x: Sequence[Any], c: Any = 1) -> Vec:
    """Möbius scalar multiplication ``r ⊗ x = tanh(r artanh(sqrt(c)|x|)) x / (sqrt(c)|x|)``,
    with ``r ⊗ 0 = 0``."""
    with _ctx():
        cc = _curv(c)
        rr = _scalar(r, "r")
        v = _point(x, cc, "x")
        sc = mpmath.sqrt(cc)
        n = norm(v)
        if n == 0:
            return [mpmath.mpf(0) for _ in v]
        return _scale(mpmath.tanh(rr * mpmath.atanh(sc * n)) / (sc * n), v)


def mobius_matvec(m: Sequence[Sequence[Any]], x: Sequence[Any], c: Any = 1) -> Vec:
    """Möbius matrix-vector product

    ``M ⊗ x = tanh(|Mx|/|x| · artanh(sqrt(c)|x|)) · Mx / (sqrt(c)|Mx|)``,

    with the result 0 when ``Mx = 0`` or ``x = 0``. ``m`` is a list of ``out`` rows of length
    ``in`` (the layout of ``F.linear``'s weight); ``x`` has length ``in``; the result has length
    ``out``.
    """
    with _ctx():
        cc = _curv(c)
        v = _point(x, cc, "x")
        if isinstance(m, (str, bytes)) or not isinstance(m, Sequence) or len(m) == 0:
            raise ValueError("m must be a non-empty sequence of rows")
        rows = [_vec(row, f"m[{i}]") for i, row in enumerate(m)]
        for i, row in enumerate(rows):
            if len(row) != len(v):
                raise ValueError(f"m[{i}] has length {len(row)} but x has length {len(v)}")
        mx = [dot(row, v) for row in rows]
        sc = mpmath.sqrt(cc)
        nx = norm(v)
        nmx = norm(mx)
        if nx == 0 or nmx == 0:
            return [mpmath.mpf(0) for _ in mx]
        return _scale(mpmath.tanh(nmx / nx * mpmath.atanh(sc * nx)) / (sc * nmx), mx)


def expmap0(v: Sequence[Any], c: Any = 1) -> Vec:
    """Exponential map at the origin ``exp_0(v) = tanh(sqrt(c)|v|) v / (sqrt(c)|v|)``
    (``exp_0(0) = 0``). ``v`` is any finite vector."""
    with _ctx():
        cc = _curv(c)
        u = _vec(v, "v")
        return _expmap0(u, cc)


def _expmap0(u: Vec, c: Any) -> Vec:
    sc = mpmath.sqrt(c)
    n = norm(u)
    if n == 0:
        return [mpmath.mpf(0) for _ in u]
    return _scale(mpmath.tanh(sc * n) / (sc * n), u)


def logmap0(y: Sequence[Any], c: Any = 1) -> Vec:
    """Logarithmic map at the origin ``log_0(y) = artanh(sqrt(c)|y|) y / (sqrt(c)|y|)``
    (``log_0(0) = 0``). ``y`` must lie in the ball."""
    with _ctx():
        cc = _curv(c)
        p = _point(y, cc, "y")
        sc = mpmath.sqrt(cc)
        n = norm(p)
        if n == 0:
            return [mpmath.mpf(0) for _ in p]
        return _scale(mpmath.atanh(sc * n) / (sc * n), p)


def expmap(x: Sequence[Any], v: Sequence[Any], c: Any = 1) -> Vec:
    """Exponential map at ``x``: ``exp_x(v) = x ⊕ tanh(sqrt(c) λ_x |v| / 2) v / (sqrt(c)|v|)``
    (``exp_x(0) = x``). ``x`` must lie in the ball, ``v`` is any finite vector of its length."""
    with _ctx():
        cc = _curv(c)
        p = _point(x, cc, "x")
        u = _vec(v, "v")
        _same_dim(p, u, "x", "v")
        sc = mpmath.sqrt(cc)
        lam = 2 / (1 - cc * dot(p, p))
        n = norm(u)
        if n == 0:
            return p
        return _mobius_add(p, _scale(mpmath.tanh(sc * lam * n / 2) / (sc * n), u), cc)


def logmap(x: Sequence[Any], y: Sequence[Any], c: Any = 1) -> Vec:
    """Logarithmic map at ``x``: with ``u = (-x) ⊕ y``,
    ``log_x(y) = 2 / (sqrt(c) λ_x) · artanh(sqrt(c)|u|) · u / |u|`` (``log_x(x) = 0``)."""
    with _ctx():
        cc = _curv(c)
        p = _point(x, cc, "x")
        q = _point(y, cc, "y")
        _same_dim(p, q, "x", "y")
        return _logmap(p, q, cc)


def _logmap(p: Vec, q: Vec, c: Any) -> Vec:
    if p == q:
        return [mpmath.mpf(0) for _ in p]
    sc = mpmath.sqrt(c)
    lam = 2 / (1 - c * dot(p, p))
    u = _mobius_add(_neg(p), q, c)
    n = norm(u)
    if n == 0:
        return [mpmath.mpf(0) for _ in u]
    return _scale(2 / (sc * lam) * mpmath.atanh(sc * n) / n, u)


def dist(x: Sequence[Any], y: Sequence[Any], c: Any = 1) -> Any:
    """Geodesic distance ``d(x, y) = 2/sqrt(c) · artanh(sqrt(c) |(-x) ⊕ y|)``."""
    with _ctx():
        cc = _curv(c)
        p = _point(x, cc, "x")
        q = _point(y, cc, "y")
        _same_dim(p, q, "x", "y")
        sc = mpmath.sqrt(cc)
        return 2 / sc * mpmath.atanh(sc * norm(_mobius_add(_neg(p), q, cc)))


def dist0(x: Sequence[Any], c: Any = 1) -> Any:
    """Distance to the origin ``d(0, x) = 2/sqrt(c) · artanh(sqrt(c)|x|)``."""
    with _ctx():
        cc = _curv(c)
        p = _point(x, cc, "x")
        sc = mpmath.sqrt(cc)
        return 2 / sc * mpmath.atanh(sc * norm(p))


def pairwise_dist(
    xs: Sequence[Sequence[Any]], ys: Sequence[Sequence[Any]], c: Any = 1, squared: bool = False
) -> list[list[Any]]:
    """All distances ``D[i][j] = d(xs[i], ys[j])`` (their squares if ``squared``), an
    ``N × M`` nested list for ``N`` points ``xs`` and ``M`` points ``ys``."""
    out = [[dist(x, y, c) for y in ys] for x in xs]
    if squared:
        with _ctx():
            out = [[d * d for d in row] for row in out]
    return out


def gyration(a: Sequence[Any], b: Sequence[Any], u: Sequence[Any], c: Any = 1) -> Vec:
    """Gyration ``gyr[a, b] u = ⊖(a ⊕ b) ⊕ (a ⊕ (b ⊕ u))``.

    ``a`` and ``b`` must lie in the ball; ``u`` is any finite vector. The gyration is a linear
    map (a rotation), so a ``u`` outside the ball is handled exactly as
    ``gyr[a, b] u = (1/s) · gyr[a, b](s u)`` with ``s`` chosen such that ``sqrt(c)|s u| = 1/2``.
    """
    with _ctx():
        cc = _curv(c)
        p = _point(a, cc, "a")
        q = _point(b, cc, "b")
        w = _vec(u, "u")
        _same_dim(p, q, "a", "b")
        _same_dim(p, w, "a", "u")
        return _gyration(p, q, w, cc)


def _gyration(p: Vec, q: Vec, w: Vec, c: Any) -> Vec:
    n = norm(w)
    if n == 0:
        return [mpmath.mpf(0) for _ in w]
    s = 1 / (2 * mpmath.sqrt(c) * n)
    ws = _scale(s, w)
    pq = _mobius_add(p, q, c)
    inner = _mobius_add(p, _mobius_add(q, ws, c), c)
    return _scale(1 / s, _mobius_add(_neg(pq), inner, c))


def transp(x: Sequence[Any], y: Sequence[Any], v: Sequence[Any], c: Any = 1) -> Vec:
    """Parallel transport of a tangent vector ``v`` at ``x`` to ``y`` along the geodesic:
    ``P_{x→y}(v) = λ_x / λ_y · gyr[y, -x] v``."""
    with _ctx():
        cc = _curv(c)
        p = _point(x, cc, "x")
        q = _point(y, cc, "y")
        w = _vec(v, "v")
        _same_dim(p, q, "x", "y")
        _same_dim(p, w, "x", "v")
        lam_x = 2 / (1 - cc * dot(p, p))
        lam_y = 2 / (1 - cc * dot(q, q))
        return _scale(lam_x / lam_y, _gyration(q, _neg(p), w, cc))


def transp0(y: Sequence[Any], v: Sequence[Any], c: Any = 1) -> Vec:
    """Parallel transport from the origin, ``P_{0→y}(v) = 2 / λ_y · v`` (``transp(0, y, v)``,
    since ``λ_0 = 2`` and ``gyr[y, 0]`` is the identity)."""
    with _ctx():
        cc = _curv(c)
        q = _point(y, cc, "y")
        w = _vec(v, "v")
        _same_dim(q, w, "y", "v")
        lam_y = 2 / (1 - cc * dot(q, q))
        return _scale(2 / lam_y, w)


def egrad2rgrad(x: Sequence[Any], g: Sequence[Any], c: Any = 1) -> Vec:
    """Riemannian gradient from a Euclidean one, ``g / λ_x^2``."""
    with _ctx():
        cc = _curv(c)
        p = _point(x, cc, "x")
        w = _vec(g, "g")
        _same_dim(p, w, "x", "g")
        lam = 2 / (1 - cc * dot(p, p))
        return _scale(1 / (lam * lam), w)


def poincare_to_klein(x: Sequence[Any], c: Any = 1) -> Vec:
    """Poincaré ball to Klein model, ``k = 2x / (1 + c|x|^2)``."""
    with _ctx():
        cc = _curv(c)
        p = _point(x, cc, "x")
        return _scale(2 / (1 + cc * dot(p, p)), p)


def klein_to_poincare(k: Sequence[Any], c: Any = 1) -> Vec:
    """Klein model to Poincaré ball, ``x = k / (1 + sqrt(1 - c|k|^2))``; ``k`` must satisfy
    ``c|k|^2 < 1``."""
    with _ctx():
        cc = _curv(c)
        q = _point(k, cc, "k")
        return _scale(1 / (1 + mpmath.sqrt(1 - cc * dot(q, q))), q)


def poincare_to_lorentz(x: Sequence[Any], c: Any = 1) -> Vec:
    """Poincaré ball to the hyperboloid ``-h_0^2 + |h_s|^2 = -1/c`` (time coordinate first):
    ``h_0 = (1 + c|x|^2) / (sqrt(c)(1 - c|x|^2))``, ``h_s = 2x / (1 - c|x|^2)``; length D+1."""
    with _ctx():
        cc = _curv(c)
        p = _point(x, cc, "x")
        x2 = dot(p, p)
        h0 = (1 + cc * x2) / (mpmath.sqrt(cc) * (1 - cc * x2))
        return [h0, *_scale(2 / (1 - cc * x2), p)]


def lorentz_to_poincare(h: Sequence[Any], c: Any = 1) -> Vec:
    """Hyperboloid (time first) to Poincaré ball, ``x = h_s / (1 + sqrt(c) h_0)``; length D.

    ``h`` needs at least two entries and ``h_0 > 0``; the formula is applied as it stands to
    a vector that is not exactly on the hyperboloid, and its result must lie in the ball.
    """
    with _ctx():
        cc = _curv(c)
        q = _vec(h, "h")
        if len(q) < 2:
            raise ValueError("h must have a time coordinate and at least one space coordinate")
        if q[0] <= 0:
            raise ValueError("h must have a positive time coordinate h[0]")
        out = _scale(1 / (1 + mpmath.sqrt(cc) * q[0]), q[1:])
        if cc * dot(out, out) >= 1:
            raise ValueError("h is too far from the hyperboloid: its image is outside the ball")
        return out


def einstein_midpoint(
    points: Sequence[Sequence[Any]], weights: Sequence[Any] | None = None, c: Any = 1
) -> Vec:
    """Weighted Einstein midpoint, computed in the Klein model and returned in the ball.

    With ``k_i`` the Klein images of the points and ``γ_i = 1/sqrt(1 - c|k_i|^2)`` their Lorentz
    factors: ``m_K = Σ w_i γ_i k_i / Σ w_i γ_i``, returned as ``klein_to_poincare(m_K)``.
    ``points`` is a non-empty list of ``N`` points of one length; ``weights`` (default all ones)
    has ``N`` entries, all ``>= 0`` and not all zero, else ``ValueError``.
    """
    with _ctx():
        cc = _curv(c)
        if isinstance(points, (str, bytes)) or not isinstance(points, Sequence) or not points:
            raise ValueError("points must be a non-empty sequence of points")
        ps = [_point(p, cc, f"points[{i}]") for i, p in enumerate(points)]
        for i, p in enumerate(ps):
            _same_dim(ps[0], p, "points[0]", f"points[{i}]")
        if weights is None:
            ws = [mpmath.mpf(1) for _ in ps]
        else:
            ws = _vec(weights, "weights")
            if len(ws) != len(ps):
                raise ValueError(f"weights has {len(ws)} entries but there are {len(ps)} points")
        if any(w < 0 for w in ws) or all(w == 0 for w in ws):
            raise ValueError("weights must be nonnegative and not all zero")
        return _einstein_midpoint(ps, ws, cc)


def _einstein_midpoint(ps: list[Vec], ws: Vec, c: Any) -> Vec:
    ks = [_scale(2 / (1 + c * dot(p, p)), p) for p in ps]
    gammas = [1 / mpmath.sqrt(1 - c * dot(k, k)) for k in ks]
    den = mpmath.fsum(w * g for w, g in zip(ws, gammas, strict=True))
    dim = len(ps[0])
    mk = [
        mpmath.fsum(w * g * k[j] for w, g, k in zip(ws, gammas, ks, strict=True)) / den
        for j in range(dim)
    ]
    return _scale(1 / (1 + mpmath.sqrt(1 - c * dot(mk, mk))), mk)


# ----------------------------------------------------------------------------------------------
# Fused compositions (poincare._fused): the compositions of the ops each kernel replaces
# ----------------------------------------------------------------------------------------------

SCORES = ("distance", "squared", "cosh")
"""The scores of :func:`cosh_score`: ``-β d``, ``-β d^2`` and ``-β (cosh(sqrt(c) d) - 1)``."""


def _tangent_ctx(c: Any, *vecs: Vec) -> Any:
    """A local precision for the images ``exp_0(v)`` of tangent vectors: their gap
    ``1 - c|exp_0(v)|^2 = 1/cosh^2(sqrt(c)|v|)`` is about ``4 e^{-2t}`` (``t = sqrt(c)|v|``), so
    :data:`DPS` digits beyond ``2t / ln 10`` keep every later gap exact (a Möbius sum reaches
    at most the sum of the scaled norms)."""
    t = mpmath.fsum(mpmath.sqrt(c) * norm(v) for v in vecs)
    extra = int(mpmath.ceil(2 * t / mpmath.ln(10))) + 5
    return mpmath.workdps(max(DPS, mpmath.mp.dps) + extra)


def expmap0_add(u: Sequence[Any], b: Sequence[Any], c: Any = 1) -> Vec:
    """``exp_0(u) ⊕ exp_0(b)``: the composition ``mobius_add(expmap0(u), expmap0(b))`` of two
    tangent vectors at the origin (what ``poincare.expmap0_add`` fuses). ``u`` and ``b`` are any
    finite vectors of one length; the precision is raised with their norms, so that the result
    is exact however close to the boundary it lies."""
    with _ctx():
        cc = _curv(c)
        uu = _vec(u, "u")
        bb = _vec(b, "b")
        _same_dim(uu, bb, "u", "b")
        with _tangent_ctx(cc, uu, bb):
            return _mobius_add(_expmap0(uu, cc), _expmap0(bb, cc), cc)


def _lorentz(y: Vec, c: Any) -> Vec:
    y2 = dot(y, y)
    gap = 1 - c * y2
    return [(1 + c * y2) / (mpmath.sqrt(c) * gap), *_scale(2 / gap, y)]


def expmap0_add_lorentz(u: Sequence[Any], b: Sequence[Any] | None = None, c: Any = 1) -> Vec:
    """Lorentz coordinates (time first, length D+1) of ``exp_0(u) ⊕ exp_0(b)``:
    ``poincare_to_lorentz(expmap0_add(u, b))``, or ``poincare_to_lorentz(expmap0(u))`` when ``b``
    is None (what ``poincare.expmap0_add_lorentz`` fuses). Precision as :func:`expmap0_add`."""
    with _ctx():
        cc = _curv(c)
        uu = _vec(u, "u")
        bb = None if b is None else _vec(b, "b")
        if bb is not None:
            _same_dim(uu, bb, "u", "b")
        with _tangent_ctx(cc, uu, *([] if bb is None else [bb])):
            p = _expmap0(uu, cc)
            y = p if bb is None else _mobius_add(p, _expmap0(bb, cc), cc)
            return _lorentz(y, cc)


def midpoint_logmap0(
    points: Sequence[Sequence[Any]], weights: Sequence[Any] | None = None, c: Any = 1
) -> Vec:
    """``log_0`` of the weighted Einstein midpoint: ``logmap0(einstein_midpoint(points,
    weights))`` (what ``poincare._fused.midpoint_logmap0`` computes from the Lorentz sums
    ``Σ w_i h_i`` of the points). Arguments and errors as :func:`einstein_midpoint`."""
    with _ctx():
        cc = _curv(c)
        m = einstein_midpoint(points, weights, cc)
        return logmap0(m, cc)


def _score_of(d: Any, c: Any, score: str) -> Any:
    """``f(d)`` of a distance: ``d``, ``d^2`` or ``cosh(sqrt(c) d) - 1 = 2 sinh^2(sqrt(c) d/2)``
    (the last without cancellation for short distances)."""
    if score == "distance":
        return d
    if score == "squared":
        return d * d
    if score == "cosh":
        return 2 * mpmath.sinh(mpmath.sqrt(c) * d / 2) ** 2
    raise ValueError(f"score must be one of {', '.join(SCORES)}, got {score!r}")


def cosh_score(
    x: Sequence[Any], y: Sequence[Any], c: Any = 1, score: str = "distance", beta: Any = 1
) -> Any:
    """The attention score ``-β f(d(x, y))`` of two points, ``f(d) = d`` (``"distance"``),
    ``d^2`` (``"squared"``) or ``cosh(sqrt(c) d) - 1`` (``"cosh"``): what
    ``poincare._fused.cosh_score`` computes from ``g = cosh(sqrt(c) d)``. ``ValueError`` for an
    unknown ``score`` or points outside the ball."""
    with _ctx():
        cc = _curv(c)
        bb = _scalar(beta, "beta")
        if score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
        return -bb * _score_of(dist(x, y, cc), cc, score)


def score_from_cosh(g: Any, c: Any = 1, score: str = "distance", beta: Any = 1) -> Any:
    """The score ``-β f(d)`` of the distance ``d = arcosh(g) / sqrt(c)`` encoded by
    ``g = cosh(sqrt(c) d) >= 1``: the exact value of what ``poincare._fused.cosh_score``
    computes from a given ``g`` (its accuracy apart from how ``g`` was formed). ``ValueError``
    for ``g < 1`` or an unknown ``score``."""
    with _ctx():
        cc = _curv(c)
        gg = _scalar(g, "g")
        bb = _scalar(beta, "beta")
        if gg < 1:
            raise ValueError(f"g must be at least 1 (a cosh), got {g!r}")
        if score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
        if score == "cosh":
            return -bb * (gg - 1)
        return -bb * _score_of(mpmath.acosh(gg) / mpmath.sqrt(cc), cc, score)


# ----------------------------------------------------------------------------------------------
# Derivatives
# ----------------------------------------------------------------------------------------------


def numeric_grad(f: Callable[..., Any], args: Sequence[Sequence[Any]]) -> list[Vec]:
    """Gradient of a scalar function of several vectors by mpmath numerical differentiation.

    ``f(*vectors)`` must return a real; the result is one list of partial derivatives per
    argument, ``∂f/∂args[i][j]``, each computed by :func:`mpmath.diff` (a central difference at
    raised precision, accurate to far more than float64) at :data:`DPS` digits. ``f`` must be
    smooth in a neighbourhood of ``args``.
    """
    with _ctx():
        vecs = [_vec(a, f"args[{i}]") for i, a in enumerate(args)]
        grads: list[Vec] = []
        for i, vec in enumerate(vecs):
            g: Vec = []
            for j in range(len(vec)):

                def partial(t: Any, i: int = i, j: int = j) -> Any:
                    moved = [list(v) for v in vecs]
                    moved[i][j] = t
                    return f(*moved)

                g.append(mpmath.diff(partial, vec[j]))
            grads.append(g)
        return grads


def vjp(op: Callable[..., Vec], args: Sequence[Sequence[Any]], w: Sequence[Any]) -> list[Vec]:
    """Gradient of ``Σ_j w_j op(*args)_j`` with respect to every vector argument, numerically
    (:func:`numeric_grad`). ``w`` must have the length of ``op``'s output."""
    with _ctx():
        ww = _vec(w, "w")

        def scalar(*vecs: Vec) -> Any:
            out = op(*vecs)
            _same_dim(out, ww, "the output", "w")
            return dot(ww, out)

        return numeric_grad(scalar, args)


def grad_dist0(x: Sequence[Any], c: Any = 1) -> Vec:
    """Euclidean gradient of :func:`dist0`: ``λ_x x / |x|`` (zero at the origin, where the
    distance is not differentiable and zero is the smallest subgradient)."""
    with _ctx():
        cc = _curv(c)
        p = _point(x, cc, "x")
        n = norm(p)
        if n == 0:
            return [mpmath.mpf(0) for _ in p]
        lam = 2 / (1 - cc * dot(p, p))
        return _scale(lam / n, p)


def grad_dist(x: Sequence[Any], y: Sequence[Any], c: Any = 1) -> tuple[Vec, Vec]:
    """Euclidean gradients of :func:`dist` with respect to ``x`` and ``y``.

    The Riemannian gradient of ``d(x, y)`` in ``x`` is ``-log_x(y) / d(x, y)``; its Euclidean
    form (times ``λ_x^2``) is ``-λ_x log_x(y) / |log_x(y)|``, and likewise in ``y``. Both are zero
    at ``x == y``, where the distance is not differentiable and zero is the smallest subgradient.
    """
    with _ctx():
        cc = _curv(c)
        p = _point(x, cc, "x")
        q = _point(y, cc, "y")
        _same_dim(p, q, "x", "y")
        out: list[Vec] = []
        for a, b in ((p, q), (q, p)):
            v = _logmap(a, b, cc)
            n = norm(v)
            if p == q or n == 0:
                out.append([mpmath.mpf(0) for _ in v])
                continue
            lam = 2 / (1 - cc * dot(a, a))
            out.append(_scale(-lam / n, v))
        return out[0], out[1]


def grad_mobius_add(
    x: Sequence[Any], y: Sequence[Any], w: Sequence[Any], c: Any = 1
) -> tuple[Vec, Vec]:
    """Gradients of ``<w, x ⊕ y>`` with respect to ``x`` and ``y``, by the quotient rule.

    With ``A = 1 + 2c<x,y> + c|y|^2``, ``B = 1 - c|x|^2``, ``N = A x + B y`` and
    ``D = 1 + 2c<x,y> + c^2|x|^2|y|^2``, the gradient of ``<w, N>/D`` is
    ``∇<w, N>/D - <w, N> ∇D / D^2`` where
    ``∇_x<w,N> = A w + 2c<w,x> y - 2c<w,y> x``, ``∇_y<w,N> = B w + 2c<w,x>(x + y)``,
    ``∇_x D = 2c y + 2c^2|y|^2 x`` and ``∇_y D = 2c x + 2c^2|x|^2 y``.
    """
    with _ctx():
        cc = _curv(c)
        p = _point(x, cc, "x")
        q = _point(y, cc, "y")
        ww = _vec(w, "w")
        _same_dim(p, q, "x", "y")
        _same_dim(p, ww, "x", "w")
        pq = dot(p, q)
        p2 = dot(p, p)
        q2 = dot(q, q)
        a = 1 + 2 * cc * pq + cc * q2
        b = 1 - cc * p2
        den = 1 + 2 * cc * pq + cc * cc * p2 * q2
        wp = dot(ww, p)
        wq = dot(ww, q)
        wn = a * wp + b * wq
        gn_x = [
            a * wi + 2 * cc * wp * qi - 2 * cc * wq * pi
            for wi, pi, qi in zip(ww, p, q, strict=True)
        ]
        gn_y = [b * wi + 2 * cc * wp * (pi + qi) for wi, pi, qi in zip(ww, p, q, strict=True)]
        gd_x = [2 * cc * qi + 2 * cc * cc * q2 * pi for pi, qi in zip(p, q, strict=True)]
        gd_y = [2 * cc * pi + 2 * cc * cc * p2 * qi for pi, qi in zip(p, q, strict=True)]
        dx = [gn / den - wn * gd / (den * den) for gn, gd in zip(gn_x, gd_x, strict=True)]
        dy = [gn / den - wn * gd / (den * den) for gn, gd in zip(gn_y, gd_y, strict=True)]
        return dx, dy


def _radial_vjp(u: Vec, ww: Vec, g: Any, dg: Any) -> Vec:
    """Gradient of ``<w, g(|u|) u>``: ``g w + g'(|u|) <w, u> u / |u|`` (``g(0) w`` at 0)."""
    n = norm(u)
    if n == 0:
        return _scale(g, ww)
    wu = dot(ww, u)
    return [g * wi + dg * wu * ui / n for wi, ui in zip(ww, u, strict=True)]


def grad_expmap0(v: Sequence[Any], w: Sequence[Any], c: Any = 1) -> Vec:
    """Gradient of ``<w, exp_0(v)>`` in ``v``. With ``t = sqrt(c)|v|`` and
    ``g = tanh(t)/t`` (``g(0) = 1``): ``g w + sqrt(c) g'(t) <w, v> v / |v|``,
    ``g'(t) = (t sech^2 t - tanh t) / t^2``."""
    with _ctx():
        cc = _curv(c)
        u = _vec(v, "v")
        ww = _vec(w, "w")
        _same_dim(u, ww, "v", "w")
        sc = mpmath.sqrt(cc)
        t = sc * norm(u)
        if t == 0:
            return list(ww)
        g = mpmath.tanh(t) / t
        dg = (t * mpmath.sech(t) ** 2 - mpmath.tanh(t)) / (t * t)
        return _radial_vjp(u, ww, g, sc * dg)


def grad_logmap0(y: Sequence[Any], w: Sequence[Any], c: Any = 1) -> Vec:
    """Gradient of ``<w, log_0(y)>`` in ``y``. With ``t = sqrt(c)|y|`` and
    ``g = artanh(t)/t`` (``g(0) = 1``): ``g w + sqrt(c) g'(t) <w, y> y / |y|``,
    ``g'(t) = (t / (1 - t^2) - artanh t) / t^2``."""
    with _ctx():
        cc = _curv(c)
        p = _point(y, cc, "y")
        ww = _vec(w, "w")
        _same_dim(p, ww, "y", "w")
        sc = mpmath.sqrt(cc)
        t = sc * norm(p)
        if t == 0:
            return list(ww)
        g = mpmath.atanh(t) / t
        dg = (t / (1 - t * t) - mpmath.atanh(t)) / (t * t)
        return _radial_vjp(p, ww, g, sc * dg)


def grad_expmap(
    x: Sequence[Any], v: Sequence[Any], w: Sequence[Any], c: Any = 1
) -> tuple[Vec, Vec]:
    """Gradients of ``<w, exp_x(v)>`` in ``x`` and ``v`` (numerical, :func:`vjp`). ``v`` must
    be nonzero (``|v|`` is not differentiable at 0 in the formula's parametrisation)."""
    with _ctx():
        cc = _curv(c)
        p = _point(x, cc, "x")
        u = _vec(v, "v")
        if norm(u) == 0:
            raise ValueError("v must be nonzero for grad_expmap")
        dx, dv = vjp(lambda a, b: expmap(a, b, cc), [p, u], w)
        return dx, dv


def grad_logmap(
    x: Sequence[Any], y: Sequence[Any], w: Sequence[Any], c: Any = 1
) -> tuple[Vec, Vec]:
    """Gradients of ``<w, log_x(y)>`` in ``x`` and ``y`` (numerical, :func:`vjp`). ``x`` and
    ``y`` must differ."""
    with _ctx():
        cc = _curv(c)
        p = _point(x, cc, "x")
        q = _point(y, cc, "y")
        if all(a == b for a, b in zip(p, q, strict=True)):
            raise ValueError("x and y must differ for grad_logmap")
        dx, dy = vjp(lambda a, b: logmap(a, b, cc), [p, q], w)
        return dx, dy


def grad_einstein_midpoint(
    points: Sequence[Sequence[Any]], weights: Sequence[Any], w: Sequence[Any], c: Any = 1
) -> tuple[list[Vec], Vec]:
    """Gradients of ``<w, einstein_midpoint(points, weights)>`` with respect to every point and
    to the weights (numerical, :func:`numeric_grad`); returns ``(d_points, d_weights)``.
    The weights must be positive (the midpoint is only one-sidedly differentiable in a zero
    weight)."""
    with _ctx():
        cc = _curv(c)
        ps = [_point(p, cc, f"points[{i}]") for i, p in enumerate(points)]
        ws = _vec(weights, "weights")
        if any(v <= 0 for v in ws):
            raise ValueError("weights must be positive for grad_einstein_midpoint")
        n = len(ps)
        ww = _vec(w, "w")

        def scalar(*vecs: Vec) -> Any:
            return dot(ww, einstein_midpoint(list(vecs[:n]), vecs[n], cc))

        grads = numeric_grad(scalar, [*ps, ws])
        return grads[:n], grads[n]


def grad_expmap0_add(
    u: Sequence[Any], b: Sequence[Any], w: Sequence[Any], c: Any = 1
) -> tuple[Vec, Vec, Any]:
    """Gradients of ``<w, expmap0_add(u, b)>`` with respect to ``u``, ``b`` and the curvature
    ``c`` (numerical, :func:`vjp`); returns ``(d_u, d_b, d_c)``."""
    with _ctx():
        cc = _curv(c)
        uu = _vec(u, "u")
        bb = _vec(b, "b")
        _same_dim(uu, bb, "u", "b")
        du, db, dc = vjp(lambda p, q, k: expmap0_add(p, q, k[0]), [uu, bb, [cc]], w)
        return du, db, dc[0]


def grad_expmap0_add_lorentz(
    u: Sequence[Any], b: Sequence[Any] | None, w: Sequence[Any], c: Any = 1
) -> tuple[Vec, Vec | None, Any]:
    """Gradients of ``<w, expmap0_add_lorentz(u, b)>`` (``w`` of length D+1) with respect to
    ``u``, ``b`` (None when ``b`` is None) and ``c`` (numerical, :func:`vjp`); returns
    ``(d_u, d_b, d_c)``."""
    with _ctx():
        cc = _curv(c)
        uu = _vec(u, "u")
        if b is None:
            du, dc = vjp(lambda p, k: expmap0_add_lorentz(p, None, k[0]), [uu, [cc]], w)
            return du, None, dc[0]
        bb = _vec(b, "b")
        _same_dim(uu, bb, "u", "b")
        du, db, dc = vjp(lambda p, q, k: expmap0_add_lorentz(p, q, k[0]), [uu, bb, [cc]], w)
        return du, db, dc[0]
