"""High-precision references of the gyroplane, geodesic and Möbius-function ops, and their
error allowances.

As in :mod:`verification.reference`, every function evaluates the textbook formula at
:data:`verification.reference.DPS` digits (more where the result lies so close to the boundary
that its gap needs them), on vectors given as sequences of floats or mpf:

* :func:`dist2plane`: Ganea et al. (2018), eq. 22,
  ``1/sqrt(c) · asinh(2 sqrt(c) <z, a> / ((1 - c|z|^2)|a|))`` with ``z = (-p) ⊕ x``;
* :func:`geodesic`: ``x ⊕ (t ⊗ ((-x) ⊕ y))``; :func:`geodesic_unit`:
  ``exp_x(t v / (λ_x |v|))``; :func:`mobius_fn_apply`: ``exp_0(f(log_0(x)))``;
* :func:`mlr_logits`: the logits of Ganea et al. (2018), eq. 25, of a
  :class:`poincare.nn.HyperbolicMLR`'s parameters.

Derivatives (:func:`grad_dist2plane`, :func:`grad_geodesic`, :func:`grad_geodesic_unit`) are
mpmath numerical derivatives (:func:`verification.reference.numeric_grad`).

The allowances (:func:`dist2plane_allowance`, :func:`geodesic_allowance`,
:func:`geodesic_unit_allowance`) state what one float step of each input changes in the exact
result, in the units of :mod:`verification.metrics` (lengths times ``sqrt(c)``). They are the
contract's ``Σ hulp(input)`` where the op is well conditioned, and add the problem's own
conditioning where it is not:

* a gyroplane's normal is a *direction*: one float step rotates it by up to ``eps`` radians,
  which moves the plane, at the foot of ``x``, by ``F·eps`` with
  ``F = 2 sqrt(c) |z_⊥| / ((1 - c|z|^2) cosh(sqrt(c) d))`` (``z_⊥``: the part of ``z``
  orthogonal to ``a``; ``F`` is about ``sinh(sqrt(c) d(p, x))`` for points near the plane and 0
  on the normal geodesic). Moving ``p`` by one float step translates the plane by ``hulp(p)``
  and turns the Euclidean normal against the transported one by at most ``hulp(p)`` radians
  (the connection of the ball rotates frames by ``c|p|`` per unit length), hence
  ``hulp(p)·(1 + F)``;
* a geodesic *extrapolated* beyond its endpoints (``t`` outside ``[0, 1]``) magnifies the
  displacement of an endpoint by the Jacobi-field factors ``|sinh((1 - t)u)/sinh u|`` (for ``x``)
  and ``|sinh(tu)/sinh u|`` (for ``y``), ``u = sqrt(c) d(x, y)`` (``|1 - t|``, ``|t|`` along the
  geodesic); inside ``[0, 1]`` both are at most 1 and the plain ``hulp`` is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import mpmath
import torch

from verification import metrics
from verification import reference as ref

__all__ = [
    "dist2plane",
    "dist2plane_allowance",
    "geodesic",
    "geodesic_allowance",
    "geodesic_unit",
    "geodesic_unit_allowance",
    "grad_dist2plane",
    "grad_geodesic",
    "grad_geodesic_unit",
    "mlr_logits",
    "mobius_fn_apply",
    "normal_sensitivity",
]

Vec = ref.Vec

#: The most decimal digits a reference adds for results extremely close to the boundary.
MAX_EXTRA_DPS = 400


def _ctx(extra: int = 0) -> Any:
    return mpmath.workdps(max(ref.DPS, mpmath.mp.dps) + extra)


def _curv(c: Any) -> Any:
    value = mpmath.mpf(float(c)) if isinstance(c, torch.Tensor) else mpmath.mpf(c)
    if not mpmath.isfinite(value) or value <= 0:
        raise ValueError(f"c must be positive and finite, got {c!r}")
    return value


def _vec(x: Any, name: str) -> Vec:
    if isinstance(x, torch.Tensor):
        if x.dim() != 1:
            raise ValueError(f"{name} must be a vector, got a tensor of shape {tuple(x.shape)}")
        x = x.detach().to(torch.float64).tolist()
    if isinstance(x, (str, bytes)) or not isinstance(x, Sequence):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(x).__name__}")
    if len(x) == 0:
        raise ValueError(f"{name} must not be empty")
    out = [mpmath.mpf(v) for v in x]
    if not all(mpmath.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite")
    return out


def _point(x: Any, c: Any, name: str) -> Vec:
    v = _vec(x, name)
    if c * ref.dot(v, v) >= 1:
        raise ValueError(f"{name} must lie strictly inside the ball c|{name}|^2 < 1")
    return v


def _same(a: Vec, b: Vec, na: str, nb: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{na} and {nb} must have the same length, got {len(a)} and {len(b)}")


def _scalar(t: Any, name: str) -> Any:
    value = mpmath.mpf(float(t)) if isinstance(t, torch.Tensor) else mpmath.mpf(t)
    if not mpmath.isfinite(value):
        raise ValueError(f"{name} must be finite, got {t!r}")
    return value


def _extra_digits(*scaled_radii: Any) -> int:
    """Digits that keep the gap ``~4 e^{-2r}`` of a point at scaled radius ``r`` exact."""
    r = mpmath.fsum(abs(v) for v in scaled_radii)
    return min(MAX_EXTRA_DPS, int(mpmath.ceil(2 * r / mpmath.ln(10))) + 5)


# ----------------------------------------------------------------------------------------------
# The operations
# ----------------------------------------------------------------------------------------------


def _dist2plane(x: Vec, p: Vec, a: Vec, c: Any, signed: bool) -> Any:
    na = ref.norm(a)
    if na == 0:
        return mpmath.mpf(0)
    sc = mpmath.sqrt(c)
    # z = (-p) ⊕ x = N / D with N = B_p (x - p) - c|x - p|^2 p, D = c|x - p|^2 + B_p B_x, and
    # 1 - c|z|^2 = B_p B_x / D: the same value as the textbook form, but N is exactly 0 when
    # x == p (Möbius addition's two terms would leave a rounding residue of the working
    # precision there, which a numerical derivative in a would read as a gradient).
    s = [u - v for u, v in zip(x, p, strict=True)]
    bp, bx, ss = 1 - c * ref.dot(p, p), 1 - c * ref.dot(x, x), ref.dot(s, s)
    n = [bp * u - c * ss * v for u, v in zip(s, p, strict=True)]
    arg = 2 * sc * ref.dot(n, a) / (bp * bx * na)
    d = mpmath.asinh(arg) / sc
    return d if signed else abs(d)


def dist2plane(
    x: Sequence[Any], p: Sequence[Any], a: Sequence[Any], c: Any = 1, signed: bool = True
) -> Any:
    """Distance from ``x`` to the gyroplane through ``p`` with normal ``a``:
    ``1/sqrt(c) · asinh(2 sqrt(c) <z, a> / ((1 - c|z|^2)|a|))``, ``z = (-p) ⊕ x`` (signed by
    ``<z, a>`` unless ``signed=False``); 0 for ``a = 0``. ``x`` and ``p`` must lie in the ball."""
    with _ctx():
        cc = _curv(c)
        xx = _point(x, cc, "x")
        pp = _point(p, cc, "p")
        aa = _vec(a, "a")
        _same(xx, pp, "x", "p")
        _same(xx, aa, "x", "a")
        return _dist2plane(xx, pp, aa, cc, signed)


def geodesic(t: Any, x: Sequence[Any], y: Sequence[Any], c: Any = 1) -> Vec:
    """The point at fraction ``t`` of the geodesic from ``x`` to ``y``:
    ``x ⊕ (t ⊗ ((-x) ⊕ y))`` (``x`` itself when ``x == y``), for any real ``t``."""
    with _ctx():
        cc = _curv(c)
        tt = _scalar(t, "t")
        xx = _point(x, cc, "x")
        yy = _point(y, cc, "y")
        _same(xx, yy, "x", "y")
        sc = mpmath.sqrt(cc)
        u = sc * ref.dist(xx, yy, cc)
        with _ctx(_extra_digits(sc * ref.dist0(xx, cc), tt * u)):
            z = ref.mobius_add([-v for v in xx], yy, cc)
            nz = ref.norm(z)
            if nz == 0:
                return list(xx)
            w = [mpmath.tanh(tt * mpmath.atanh(sc * nz)) / (sc * nz) * v for v in z]
            return ref.mobius_add(xx, w, cc)


def geodesic_unit(t: Any, x: Sequence[Any], v: Sequence[Any], c: Any = 1) -> Vec:
    """The unit-speed geodesic from ``x`` in the direction ``v`` at time ``t``:
    ``exp_x(t v / (λ_x |v|))`` (``x`` itself for ``v = 0``), for any real ``t``."""
    with _ctx():
        cc = _curv(c)
        tt = _scalar(t, "t")
        xx = _point(x, cc, "x")
        vv = _vec(v, "v")
        _same(xx, vv, "x", "v")
        nv = ref.norm(vv)
        if nv == 0:
            return list(xx)
        sc = mpmath.sqrt(cc)
        with _ctx(_extra_digits(sc * ref.dist0(xx, cc), sc * tt)):
            lam = ref.conformal_factor(xx, cc)
            return ref.expmap(xx, [tt / (lam * nv) * a for a in vv], cc)


def mobius_fn_apply(fn: Callable[[Vec], Sequence[Any]], x: Sequence[Any], c: Any = 1) -> Vec:
    """``exp_0(fn(log_0(x)))`` for a function ``fn`` of a list of mpf (the Möbius version of a
    Euclidean map). The precision is raised with the norm of ``fn``'s output."""
    with _ctx():
        cc = _curv(c)
        xx = _point(x, cc, "x")
        u = _vec(list(fn(ref.logmap0(xx, cc))), "fn(log_0(x))")
        with _ctx(_extra_digits(mpmath.sqrt(cc) * ref.norm(u))):
            return ref.expmap0(u, cc)


def mlr_logits(
    x: Sequence[Any],
    biases: Sequence[Sequence[Any]],
    normals: Sequence[Sequence[Any]],
    c: Any = 1,
) -> Vec:
    """The logits of multinomial hyperbolic logistic regression (Ganea et al. 2018, eq. 25):
    per class ``k``, ``p_k = exp_0(b_k)``, ``a_k = P_{0 -> p_k}(a0_k) = (1 - c|p_k|^2) a0_k`` and
    ``λ_{p_k} |a_k| / sqrt(c) · asinh(2 sqrt(c) <z_k, a_k> / ((1 - c|z_k|^2)|a_k|))``,
    ``z_k = (-p_k) ⊕ x``; ``biases`` and ``normals`` are ``K`` vectors ``b_k``, ``a0_k``."""
    with _ctx():
        cc = _curv(c)
        xx = _point(x, cc, "x")
        out: Vec = []
        for k, (b, a0) in enumerate(zip(biases, normals, strict=True)):
            bb = _vec(b, f"biases[{k}]")
            aa0 = _vec(a0, f"normals[{k}]")
            _same(xx, bb, "x", f"biases[{k}]")
            _same(xx, aa0, "x", f"normals[{k}]")
            with _ctx(_extra_digits(mpmath.sqrt(cc) * ref.norm(bb))):
                p = ref.expmap0(bb, cc)
                gap = 1 - cc * ref.dot(p, p)
                a = [gap * v for v in aa0]
                lam = 2 / gap
                out.append(+(lam * ref.norm(a) * _dist2plane(xx, p, a, cc, True)))
        return out


# ----------------------------------------------------------------------------------------------
# Derivatives
# ----------------------------------------------------------------------------------------------


def grad_dist2plane(
    x: Sequence[Any], p: Sequence[Any], a: Sequence[Any], c: Any = 1
) -> tuple[Vec, Vec, Vec]:
    """Gradients of the *signed* :func:`dist2plane` in ``x``, ``p`` and ``a`` (numerical,
    :func:`verification.reference.numeric_grad`); ``a`` must be nonzero."""
    with _ctx():
        cc = _curv(c)
        xx = _point(x, cc, "x")
        pp = _point(p, cc, "p")
        aa = _vec(a, "a")
        if ref.norm(aa) == 0:
            raise ValueError("a must be nonzero for grad_dist2plane")
        dx, dp, da = ref.numeric_grad(lambda q, r, s: _dist2plane(q, r, s, cc, True), [xx, pp, aa])
        return dx, dp, da


def grad_geodesic(
    t: Any, x: Sequence[Any], y: Sequence[Any], w: Sequence[Any], c: Any = 1
) -> tuple[Any, Vec, Vec]:
    """Gradients of ``<w, geodesic(t, x, y)>`` in ``t``, ``x`` and ``y`` (numerical); ``x`` and
    ``y`` must differ."""
    with _ctx():
        cc = _curv(c)
        xx = _point(x, cc, "x")
        yy = _point(y, cc, "y")
        if xx == yy:
            raise ValueError("x and y must differ for grad_geodesic")
        dt, dx, dy = ref.vjp(
            lambda s, q, r: geodesic(s[0], q, r, cc), [[_scalar(t, "t")], xx, yy], w
        )
        return dt[0], dx, dy


def grad_geodesic_unit(
    t: Any, x: Sequence[Any], v: Sequence[Any], w: Sequence[Any], c: Any = 1
) -> tuple[Any, Vec, Vec]:
    """Gradients of ``<w, geodesic_unit(t, x, v)>`` in ``t``, ``x`` and ``v`` (numerical);
    ``v`` must be nonzero."""
    with _ctx():
        cc = _curv(c)
        xx = _point(x, cc, "x")
        vv = _vec(v, "v")
        if ref.norm(vv) == 0:
            raise ValueError("v must be nonzero for grad_geodesic_unit")
        dt, dx, dv = ref.vjp(
            lambda s, q, r: geodesic_unit(s[0], q, r, cc), [[_scalar(t, "t")], xx, vv], w
        )
        return dt[0], dx, dv


# ----------------------------------------------------------------------------------------------
# Allowances
# ----------------------------------------------------------------------------------------------


def normal_sensitivity(x: Sequence[Any], p: Sequence[Any], a: Sequence[Any], c: Any = 1) -> Any:
    """``F = 2 sqrt(c) |z_⊥| / ((1 - c|z|^2) cosh(sqrt(c) d))``: the change of ``sqrt(c)·d``
    (``d`` the signed :func:`dist2plane`) per radian of rotation of the normal ``a``
    (``z = (-p) ⊕ x``, ``z_⊥`` its part orthogonal to ``a``; 0 for ``a = 0``)."""
    with _ctx():
        cc = _curv(c)
        xx = _point(x, cc, "x")
        pp = _point(p, cc, "p")
        aa = _vec(a, "a")
        na = ref.norm(aa)
        if na == 0:
            return mpmath.mpf(0)
        sc = mpmath.sqrt(cc)
        z = ref.mobius_add([-v for v in pp], xx, cc)
        ahat = [v / na for v in aa]
        za = ref.dot(z, ahat)
        perp = ref.norm([zi - za * ai for zi, ai in zip(z, ahat, strict=True)])
        d = _dist2plane(xx, pp, aa, cc, True)
        return 2 * sc * perp / ((1 - cc * ref.dot(z, z)) * mpmath.cosh(sc * d))


def dist2plane_allowance(
    x: Sequence[Any], p: Sequence[Any], a: Sequence[Any], c: Any, dtype: torch.dtype
) -> list[Any]:
    """The inputs' allowances of :func:`dist2plane` (see the module docstring):
    ``[hulp(x), hulp(p)·(1 + F), eps·F]`` with ``F`` from :func:`normal_sensitivity`."""
    with _ctx():
        f = normal_sensitivity(x, p, a, c)
        eps = metrics.machine_eps(dtype)
        return [metrics.hulp(x, c, dtype), metrics.hulp(p, c, dtype) * (1 + f), eps * f]


def _jacobi(s: Any, u: Any) -> Any:
    """``max(|s|, |sinh(s u)/sinh(u)|)`` (``|s|`` at ``u = 0``)."""
    if u == 0:
        return abs(s)
    return max(abs(s), abs(mpmath.sinh(s * u) / mpmath.sinh(u)))


def geodesic_allowance(
    t: Any, x: Sequence[Any], y: Sequence[Any], c: Any, dtype: torch.dtype
) -> list[Any]:
    """The inputs' allowances of :func:`geodesic`: ``hulp(x)`` and ``hulp(y)``, each times the
    Jacobi factor of the extrapolation when it exceeds 1 (``|sinh((1 - t)u)/sinh u|`` for ``x``,
    ``|sinh(tu)/sinh u|`` for ``y``, ``u = sqrt(c) d(x, y)``; see the module docstring)."""
    with _ctx():
        cc = _curv(c)
        tt = _scalar(t, "t")
        u = mpmath.sqrt(cc) * ref.dist(x, y, cc)
        kx = max(mpmath.mpf(1), _jacobi(1 - tt, u))
        ky = max(mpmath.mpf(1), _jacobi(tt, u))
        return [metrics.hulp(x, cc, dtype) * kx, metrics.hulp(y, cc, dtype) * ky]


def geodesic_unit_allowance(
    t: Any, x: Sequence[Any], v: Sequence[Any], c: Any, dtype: torch.dtype
) -> list[Any]:
    """The inputs' allowances of :func:`geodesic_unit`: ``hulp(x)`` and the float step of the
    tangent vector ``t v / |v|_x`` (Riemannian length ``|t|``), ``eps·sqrt(c)·|t|``: the
    contract's allowances of ``expmap(x, t v / |v|_x)``."""
    with _ctx():
        cc = _curv(c)
        tt = _scalar(t, "t")
        eps = metrics.machine_eps(dtype)
        return [metrics.hulp(x, cc, dtype), eps * mpmath.sqrt(cc) * abs(tt)]
