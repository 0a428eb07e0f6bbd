"""High-precision reference of the weighted Fréchet (Karcher) mean and of its derivatives.

The mean of points ``x_i`` of the ball of curvature ``-c`` with weights ``w_i >= 0`` (not all
zero) is the minimiser of ``f(m) = Σ_i w_i d(m, x_i)^2``, characterised by the vanishing of the
Riemannian gradient: ``G(m) = Σ_i w_i log_m(x_i) = 0``. Everything here is built on the textbook
maps of :mod:`verification.reference` (``log_m`` through Möbius addition and ``artanh``,
``exp_m``, ``d``), evaluated in mpmath at :data:`verification.reference.DPS` digits (or the
caller's higher precision):

* :func:`frechet_mean` solves ``G(m) = 0`` by Newton's method with a backtracking line search on
  ``f`` (exact arithmetic makes the descent test reliable until the quadratic regime, where the
  full step is taken), from the best of the Einstein midpoint and the input points, until the
  Newton step is below ``10^-(DPS - 10)`` of the curvature radius. The Newton matrix is the
  closed-form Riemannian Hessian ``Σ w_i (u_i u_i^T + t_i coth t_i (I - u_i u_i^T))``; it only
  decides how fast the iteration converges, while the result is decided by ``G`` alone.
* :func:`grad_frechet_mean` differentiates the mean by the implicit function theorem with
  *numerical* Jacobians of ``G`` (central differences at twice the working precision): ``dm =
  -(∂G/∂m)^{-1} ∂G/∂θ`` for ``θ`` the points, the weights and ``c``. It shares no formula with
  the closed-form backward pass it checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mpmath

from verification import reference as ref

__all__ = ["frechet_gradient", "frechet_mean", "frechet_objective", "grad_frechet_mean"]

_MAX_ITERATIONS = 200
_HALVINGS = 80


def _ctx() -> Any:
    return mpmath.workdps(max(ref.DPS, mpmath.mp.dps))


def _check(
    points: Sequence[Sequence[Any]], weights: Sequence[Any] | None, c: Any
) -> tuple[list[ref.Vec], ref.Vec, Any]:
    """Points (non-empty, one length, strictly inside the ball), weights (``N`` of them,
    ``>= 0``, not all zero; default ones) and ``c`` as mpf, or ``ValueError``."""
    cc = mpmath.mpf(c)
    if not mpmath.isfinite(cc) or cc <= 0:
        raise ValueError(f"c must be positive and finite, got {c!r}")
    if isinstance(points, (str, bytes)) or not isinstance(points, Sequence) or not points:
        raise ValueError("points must be a non-empty sequence of points")
    ps: list[ref.Vec] = []
    for i, p in enumerate(points):
        v = [mpmath.mpf(a) for a in p]
        if not v or len(v) != len(points[0]):
            raise ValueError(f"points[{i}] must be a non-empty vector of the length of points[0]")
        if not ref.in_ball(v, cc):
            raise ValueError(f"points[{i}] must lie strictly inside the ball c|x|^2 < 1")
        ps.append(v)
    ws = [mpmath.mpf(1) for _ in ps] if weights is None else [mpmath.mpf(a) for a in weights]
    if len(ws) != len(ps):
        raise ValueError(f"weights has {len(ws)} entries but there are {len(ps)} points")
    if any(not mpmath.isfinite(a) or a < 0 for a in ws) or all(a == 0 for a in ws):
        raise ValueError("weights must be finite, nonnegative and not all zero")
    return ps, ws, cc


def frechet_objective(
    m: Sequence[Any], points: Sequence[Sequence[Any]], weights: Sequence[Any], c: Any = 1
) -> Any:
    """``f(m) = Σ_i w_i d(m, x_i)^2`` (an mpf)."""
    with _ctx():
        return mpmath.fsum(w * ref.dist(m, p, c) ** 2 for p, w in zip(points, weights, strict=True))


def frechet_gradient(
    m: Sequence[Any], points: Sequence[Sequence[Any]], weights: Sequence[Any], c: Any = 1
) -> ref.Vec:
    """``G(m) = Σ_i w_i log_m(x_i)`` in ball coordinates (``-1/2`` of the Riemannian gradient of
    :func:`frechet_objective`; zero exactly at the mean)."""
    with _ctx():
        dim = len(m)
        total = [mpmath.mpf(0)] * dim
        for p, w in zip(points, weights, strict=True):
            if w == 0:
                continue
            v = ref.logmap(m, p, c)
            total = [a + w * b for a, b in zip(total, v, strict=True)]
        return total


def _hessian(m: ref.Vec, ps: list[ref.Vec], ws: ref.Vec, c: Any) -> Any:
    """The Riemannian Hessian of ``f/2`` in orthonormal coordinates at ``m`` (an mpmath matrix)."""
    dim = len(m)
    sc = mpmath.sqrt(c)
    lam = ref.conformal_factor(m, c)
    h = mpmath.zeros(dim, dim)
    for p, w in zip(ps, ws, strict=True):
        if w == 0:
            continue
        v = [lam * a for a in ref.logmap(m, p, c)]
        r = ref.norm(v)
        t = sc * r
        a = t * mpmath.coth(t) if t != 0 else mpmath.mpf(1)
        for i in range(dim):
            h[i, i] += w * a
            if r != 0:
                for j in range(dim):
                    h[i, j] -= w * (a - 1) * v[i] * v[j] / (r * r)
    return h


def frechet_mean(
    points: Sequence[Sequence[Any]], weights: Sequence[Any] | None = None, c: Any = 1
) -> ref.Vec:
    """The weighted Fréchet mean ``argmin_m Σ_i w_i d(m, x_i)^2`` (a list of mpf).

    ``points``: ``N`` points of one length strictly inside the ball; ``weights``: ``N``
    nonnegative numbers, not all zero (default all ones); only their ratios matter. Raises
    ``ValueError`` on invalid input and ``RuntimeError`` if Newton's method has not converged
    after 200 iterations (it always has, in practice, in a few dozen).
    """
    with _ctx():
        ps, ws, cc = _check(points, weights, c)
        digits = mpmath.mp.dps
        tol = mpmath.mpf(10) ** (-(digits - 10))
        # Points near the boundary lose about 2 log10(1/(1 - c|x|^2)) digits in log_m: add them.
        gap = min(1 - cc * ref.dot(p, p) for p in ps)
        extra = 2 * int(mpmath.ceil(-mpmath.log10(gap))) + 10
    with mpmath.workdps(digits + extra):
        top = max(ws)
        ws = [a / top for a in ws]
        sc = mpmath.sqrt(cc)
        starts = [ref.einstein_midpoint(ps, ws, cc)] + [p for p, w in zip(ps, ws, strict=True)]
        m = min(starts, key=lambda q: frechet_objective(q, ps, ws, cc))
        f = frechet_objective(m, ps, ws, cc)
        for _ in range(_MAX_ITERATIONS):
            lam = ref.conformal_factor(m, cc)
            g = [lam * a for a in frechet_gradient(m, ps, ws, cc)]
            sigma = mpmath.lu_solve(_hessian(m, ps, ws, cc), mpmath.matrix(g))
            step = [sigma[i] / lam for i in range(len(m))]
            length = sc * ref.norm(list(sigma))
            if length <= tol:
                return ref.expmap(m, step, cc)
            alpha = mpmath.mpf(1)
            for _ in range(_HALVINGS):
                cand = ref.expmap(m, [alpha * a for a in step], cc)
                fc = frechet_objective(cand, ps, ws, cc)
                # the quadratic regime: the full step, whose decrease f may no longer resolve
                if fc < f or alpha * length < mpmath.mpf(10) ** (-(mpmath.mp.dps // 4)):
                    break
                alpha /= 2
            m, f = cand, fc
        raise RuntimeError("frechet_mean: Newton's method did not converge")


def _jacobian(fn: Any, at: ref.Vec) -> list[ref.Vec]:
    """Columns ``∂fn/∂at[j]`` (each a vector) by central differences at twice the precision."""
    with mpmath.workdps(2 * max(ref.DPS, mpmath.mp.dps)):
        h = mpmath.mpf(10) ** (-(mpmath.mp.dps // 3))
        cols = []
        for j in range(len(at)):
            up = list(at)
            down = list(at)
            up[j] += h
            down[j] -= h
            fu, fd = fn(up), fn(down)
            cols.append([(a - b) / (2 * h) for a, b in zip(fu, fd, strict=True)])
        return cols


def grad_frechet_mean(
    points: Sequence[Sequence[Any]],
    weights: Sequence[Any] | None,
    w: Sequence[Any],
    c: Any = 1,
) -> tuple[list[ref.Vec], ref.Vec, Any]:
    """Gradients of ``<w, frechet_mean(points, weights, c)>`` with respect to every point, the
    weights and the curvature, by the implicit function theorem (module docstring); returns
    ``(d_points, d_weights, d_c)``. ``weights=None`` means equal weights (their gradient is
    still returned). Zero weights are allowed (``G`` is linear in the weights, so the formula
    gives the derivative of the mean extended to weights of either sign)."""
    with _ctx():
        ps, ws, cc = _check(points, weights, c)
        n, dim = len(ps), len(ps[0])
        ww = [mpmath.mpf(a) for a in w]
        if len(ww) != dim:
            raise ValueError(f"w must have {dim} entries, got {len(ww)}")
        m = frechet_mean(ps, ws, cc)

        def g_of(theta: ref.Vec) -> ref.Vec:
            mm = theta[:dim]
            xs = [theta[dim + i * dim : dim + (i + 1) * dim] for i in range(n)]
            wts = theta[dim + n * dim : dim + n * dim + n]
            return frechet_gradient(mm, xs, wts, theta[-1])

        theta = [*m, *(a for p in ps for a in p), *ws, cc]
        cols = _jacobian(g_of, theta)
        jm = mpmath.matrix(dim, dim)
        for j in range(dim):
            for i in range(dim):
                jm[i, j] = cols[j][i]
        # θ̄ = -(∂G/∂θ)^T z with (∂G/∂m)^T z = w
        z = mpmath.lu_solve(jm.T, mpmath.matrix(ww))
        grads = [-mpmath.fsum(cols[k][i] * z[i] for i in range(dim)) for k in range(len(theta))]
        d_points = [grads[dim + i * dim : dim + (i + 1) * dim] for i in range(n)]
        d_weights = grads[dim + n * dim : dim + n * dim + n]
        return d_points, d_weights, grads[-1]
