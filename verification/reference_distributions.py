"""High-precision references of the distributions of :mod:`poincare.distributions`.

The wrapped normal :class:`poincare.distributions.WrappedNormal` with mean ``loc`` (a point of
the ball of curvature ``-c``) and scale ``σ`` (a list of 1 value, isotropic, or ``D`` values)
samples ``v ~ N(0, diag σ²)`` in the orthonormal coordinates of the tangent space at the origin
and returns ``z = exp_loc(P_{0→loc}(v / λ_0))`` (``λ_0 = 2``). Two references of its log-density
with respect to the Riemannian volume ``λ_x^D dx`` are computed here in mpmath at
:data:`verification.reference.DPS` digits, from the textbook ops of
:mod:`verification.reference`:

* :func:`log_prob`: the Gaussian density of ``v = λ_0 P_{loc→0}(log_loc x)`` divided by the
  closed-form volume distortion ``(sinh(√c r)/(√c r))^(D-1)`` of the exponential map,
  ``r = |v| = d_c(loc, x)``;
* :func:`log_prob_from_jacobian`: the same density from its definition as the push-forward of
  the Gaussian by the sampler, ``N(v) / (λ_z^D |det ∂z/∂v|)``, with the Jacobian matrix of the
  sampler ``v ↦ z`` taken by central differences at twice the working precision. It knows
  nothing of the closed form, so the two agreeing checks the convention (the factors of 2 and
  ``√c``) and the closed form together.

Besides, :func:`radial_cdf` is the exact law of ``r = d_c(loc, z)`` for an isotropic scale
(``r = |v|`` has the chi law with ``D`` degrees of freedom scaled by ``σ``),
:func:`sphere_area` the area of a geodesic sphere, and :func:`log_prob_terms` /
:func:`log_prob_sensitivity` the sizes that the accuracy scores of
:mod:`verification.report_distributions` are measured against.

Inputs are sequences of floats or mpf (tensors of one dimension are accepted), checked like the
ones of :mod:`verification.reference`: ``ValueError`` naming the argument for points outside the
ball, non-positive scales, mismatched lengths or ``c <= 0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mpmath
import torch

from verification import reference as ref

__all__ = [
    "log_prob",
    "log_prob_from_jacobian",
    "log_prob_sensitivity",
    "log_prob_terms",
    "log_sinhc",
    "radial_cdf",
    "sample_map",
    "sphere_area",
    "tangent_coordinates",
]

_LAMBDA_0 = 2
"""The conformal factor at the origin (independent of ``c``)."""


def _ctx(extra: int = 0) -> Any:
    return mpmath.workdps(max(ref.DPS, mpmath.mp.dps) + extra)


def _floats(x: Any, name: str) -> list[Any]:
    if isinstance(x, torch.Tensor):
        if x.dim() != 1:
            raise ValueError(f"{name} must be a vector, got a tensor of shape {tuple(x.shape)}")
        x = x.detach().to(torch.float64).tolist()
    if isinstance(x, (str, bytes)) or not isinstance(x, Sequence) or len(x) == 0:
        raise ValueError(f"{name} must be a non-empty sequence of numbers")
    out = [mpmath.mpf(v) for v in x]
    if not all(mpmath.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite")
    return out


def _curv(c: Any) -> Any:
    cc = mpmath.mpf(c)
    if not mpmath.isfinite(cc) or cc <= 0:
        raise ValueError(f"c must be positive and finite, got {c!r}")
    return cc


def _point(x: Any, c: Any, name: str) -> list[Any]:
    p = _floats(x, name)
    if not ref.in_ball(p, c):
        raise ValueError(f"{name} must lie strictly inside the ball c|{name}|^2 < 1")
    return p


def _scales(scale: Any, dim: int) -> list[Any]:
    """The ``D`` standard deviations of a scale given as 1 (isotropic) or ``D`` values."""
    s = _floats(scale, "scale")
    if len(s) not in (1, dim):
        raise ValueError(f"scale must have 1 or {dim} values, got {len(s)}")
    if any(v <= 0 for v in s):
        raise ValueError("scale must be positive")
    return s * dim if len(s) == 1 else s


def log_sinhc(s: Any) -> Any:
    """``log(sinh(s) / s)`` for ``s >= 0`` (0 at ``s = 0``)."""
    with _ctx():
        ss = mpmath.mpf(s)
        if ss == 0:
            return mpmath.mpf(0)
        return mpmath.log(mpmath.sinh(ss) / ss)


def tangent_coordinates(x: Any, loc: Any, c: Any = 1) -> list[Any]:
    """The orthonormal coordinates at the origin of ``log_loc(x)``:
    ``v = λ_0 · P_{loc→0}(log_loc x)`` (of Euclidean norm ``d_c(loc, x)``)."""
    with _ctx():
        cc = _curv(c)
        p = _point(loc, cc, "loc")
        q = _point(x, cc, "x")
        if len(p) != len(q):
            raise ValueError(f"x has length {len(q)} but loc has {len(p)}")
        w = ref.logmap(p, q, cc)
        origin = [mpmath.mpf(0)] * len(p)
        return [_LAMBDA_0 * a for a in ref.transp(p, origin, w, cc)]


def sample_map(loc: Any, v: Any, c: Any = 1) -> list[Any]:
    """The sampler's map ``z = exp_loc(P_{0→loc}(v / λ_0))`` of orthonormal coordinates ``v``."""
    with _ctx():
        cc = _curv(c)
        p = _point(loc, cc, "loc")
        u = _floats(v, "v")
        if len(p) != len(u):
            raise ValueError(f"v has length {len(u)} but loc has {len(p)}")
        return ref.expmap(p, ref.transp0(p, [a / _LAMBDA_0 for a in u], cc), cc)


def _gauss_terms(v: list[Any], sigma: list[Any]) -> tuple[Any, Any, Any]:
    """``(½ Σ v_i²/σ_i², Σ log σ_i, D/2 · log 2π)``."""
    quad = mpmath.fsum((a / s) ** 2 for a, s in zip(v, sigma, strict=True)) / 2
    logs = mpmath.fsum(mpmath.log(s) for s in sigma)
    return quad, logs, len(v) * mpmath.log(2 * mpmath.pi) / 2


def log_prob_terms(x: Any, loc: Any, scale: Any, c: Any = 1) -> tuple[Any, Any, Any, Any]:
    """The four terms of the log-density, ``log p = -(a) - (b) - (c) - (d)``:
    ``(½ Σ v_i²/σ_i², Σ log σ_i, D/2 · log 2π, (D-1) log(sinh(√c r)/(√c r)))``."""
    with _ctx():
        cc = _curv(c)
        v = tangent_coordinates(x, loc, cc)
        sigma = _scales(scale, len(v))
        quad, logs, const = _gauss_terms(v, sigma)
        r = ref.norm(v)
        jac = (len(v) - 1) * log_sinhc(mpmath.sqrt(cc) * r)
        return quad, logs, const, jac


def log_prob(x: Any, loc: Any, scale: Any, c: Any = 1) -> Any:
    """The log-density of the wrapped normal at ``x`` with respect to the Riemannian volume:
    ``log N(v; 0, diag σ²) - (D-1) log(sinh(√c r)/(√c r))``, ``v`` of
    :func:`tangent_coordinates`, ``r = |v|``."""
    with _ctx():
        quad, logs, const, jac = log_prob_terms(x, loc, scale, c)
        return -quad - logs - const - jac


def log_prob_from_jacobian(x: Any, loc: Any, scale: Any, c: Any = 1) -> Any:
    """The log-density from its definition: ``log N(v) - log(λ_z^D |det ∂z/∂v|)`` at
    ``z = x``, ``v`` the preimage of ``x`` under :func:`sample_map`, the Jacobian matrix taken by
    central differences (step ``10^-(DPS/2)``) at ``2·DPS`` digits."""
    with _ctx(ref.DPS):
        cc = _curv(c)
        v = tangent_coordinates(x, loc, cc)
        sigma = _scales(scale, len(v))
        quad, logs, const = _gauss_terms(v, sigma)
        h = mpmath.mpf(10) ** (-(ref.DPS // 2))
        dim = len(v)
        jac = mpmath.matrix(dim, dim)
        for j in range(dim):
            up = list(v)
            down = list(v)
            up[j] += h
            down[j] -= h
            zp = sample_map(loc, up, cc)
            zm = sample_map(loc, down, cc)
            for i in range(dim):
                jac[i, j] = (zp[i] - zm[i]) / (2 * h)
        z = sample_map(loc, v, cc)
        lam = ref.conformal_factor(z, cc)
        log_vol = dim * mpmath.log(lam) + mpmath.log(abs(mpmath.det(jac)))
        return -quad - logs - const - log_vol


def log_prob_sensitivity(x: Any, loc: Any, scale: Any, c: Any = 1) -> tuple[Any, Any, Any]:
    """Bounds on how much ``log p`` moves per unit of input change: ``(L_x, L_loc, S)``.

    ``L_x``: per unit of hyperbolic displacement of ``x`` (the Riemannian gradient norm):
    ``|Σ⁻¹v| + (D-1)√c`` (``v(x)`` is 1-Lipschitz, the radial derivative of the Jacobian term
    is below ``(D-1)√c``). ``L_loc``: the same plus ``√c |v|² |1/σ_min² - 1/σ_max²|`` for a
    diagonal scale, whose frame turns by at most ``√c`` per unit displacement of ``loc``.
    ``S``: per relative change ``δ`` of every ``σ_i`` (one float step is ``δ = eps``):
    ``Σ_i |v_i²/σ_i² - 1|``.
    """
    with _ctx():
        cc = _curv(c)
        v = tangent_coordinates(x, loc, cc)
        sigma = _scales(scale, len(v))
        dim = len(v)
        sc = mpmath.sqrt(cc)
        grad = mpmath.sqrt(mpmath.fsum((a / (s * s)) ** 2 for a, s in zip(v, sigma, strict=True)))
        lx = grad + (dim - 1) * sc
        spread = abs(1 / min(sigma) ** 2 - 1 / max(sigma) ** 2)
        lloc = lx + sc * ref.dot(v, v) * spread
        s_term = mpmath.fsum(abs((a / s) ** 2 - 1) for a, s in zip(v, sigma, strict=True))
        return lx, lloc, s_term


def radial_cdf(r: Any, sigma: Any, dim: int) -> Any:
    """``P(d_c(loc, z) <= r)`` for an isotropic scale ``σ``: the chi law with ``dim`` degrees of
    freedom scaled by ``σ``, ``P(D/2, r²/(2σ²))`` (regularised lower incomplete gamma); it does
    not depend on ``c`` because ``d_c(loc, z) = |v|``."""
    with _ctx():
        rr = mpmath.mpf(r)
        if rr <= 0:
            return mpmath.mpf(0)
        s = mpmath.mpf(sigma)
        return mpmath.gammainc(mpmath.mpf(dim) / 2, 0, rr * rr / (2 * s * s), regularized=True)


def sphere_area(r: Any, dim: int, c: Any = 1) -> Any:
    """Area of the geodesic sphere of radius ``r`` in the ``dim``-dimensional ball of curvature
    ``-c``: ``(2π^(D/2)/Γ(D/2)) · (sinh(√c r)/√c)^(D-1)``."""
    with _ctx():
        cc = _curv(c)
        sc = mpmath.sqrt(cc)
        unit = 2 * mpmath.pi ** (mpmath.mpf(dim) / 2) / mpmath.gamma(mpmath.mpf(dim) / 2)
        return unit * (mpmath.sinh(sc * mpmath.mpf(r)) / sc) ** (dim - 1)
