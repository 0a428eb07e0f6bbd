"""Error metrics of the numerical contract, in hyperbolic ULPs (hULP).

The exact result ``e`` of an operation is its :mod:`verification.reference` value on the exact
floating-point inputs; a computed result ``p`` is scored against it relative to the hyperbolic
length of one float step at the output plus one at each input:

* a point ``q`` of the ball: ``hulp(q) = λ_q · eps · max(|q|, eps) · sqrt(c)``
  (``eps = torch.finfo(dtype).eps``, ``λ_q = 2 / (1 - c|q|^2)``);
* a tangent vector ``v`` at ``x``: ``eps · λ_x · |v| · sqrt(c)``;
* a point of the Klein model ``k``: ``eps · max(sqrt(c)|k|, eps) / (1 - c|k|^2)`` (the radial step,
  the longest one: the Klein metric is not conformal);
* a point ``h`` of the hyperboloid: ``eps · sqrt(c) · |h|``.

Lengths are measured in units of the curvature radius ``1/sqrt(c)``: a geodesic distance ``d``
enters as ``sqrt(c)·d``. This is the reading of ``herr = d_H(p, e) / (hulp(e) + Σ hulp(input))``
under which the score does not depend on ``c`` (the ``sqrt(c)`` of ``hulp`` is matched by the one
of the numerator): a one-ulp relative perturbation of a point scores about 1 hULP at every
curvature. With ``c = 1`` it is the formula verbatim.

* point error: ``sqrt(c)·d_H(p, e) / (hulp(e) + Σ_inputs hulp(input))``;
* scalar (length) error: ``sqrt(c)·|p - e| / (eps·sqrt(c)·|e| + Σ_inputs hulp(input))``;
* squared length error (``d^2``): ``c·|p - e| / (eps·c·e + 2·sqrt(c)·d·Σ_inputs hulp(input))``;
* relative error, for a quantity such as ``λ_x`` or ``g / λ_x^2`` whose logarithm moves by at
  most the hyperbolic displacement of its input: ``|p - e| / (eps·|e| + |e|·Σ_inputs hulp(input))``;
* tangent error for vectors at ``x``:
  ``sqrt(c)·λ_x|p - e| / (eps·sqrt(c)·λ_x·|e| + Σ_inputs hulp(input))``.

A computed value that is not finite, or a point that is not strictly inside its model, scores
``inf``. All arithmetic is done in mpmath at :data:`verification.reference.DPS` digits; the
scores are returned as Python floats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from poincare._optional import optional_imports

with optional_imports("mpmath", extra="verify", purpose="verification"):
    import mpmath

from verification import reference as ref

__all__ = [
    "HULP_LIMIT",
    "BandResult",
    "hulp",
    "hulp_klein",
    "hulp_lorentz",
    "hulp_tangent",
    "machine_eps",
    "point_error",
    "relative_error",
    "scalar_error",
    "squared_length_error",
    "tangent_error",
    "usable_radius",
]

HULP_LIMIT = 16.0
"""The contract's bound on the error of every operation, in hULP."""


def machine_eps(dtype: torch.dtype) -> Any:
    """``torch.finfo(dtype).eps`` as an mpf; ``TypeError`` for a non-floating dtype."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch dtype, got {dtype!r}")
    return mpmath.mpf(torch.finfo(dtype).eps)


def _check_c(c: Any) -> Any:
    cc = mpmath.mpf(c)
    if not mpmath.isfinite(cc) or cc <= 0:
        raise ValueError(f"c must be positive and finite, got {c!r}")
    return cc


def _finite_vec(v: Sequence[Any]) -> bool:
    return all(mpmath.isfinite(mpmath.mpf(a)) for a in v)


def hulp(q: Sequence[Any], c: Any, dtype: torch.dtype) -> Any:
    """Hyperbolic length of one float step at a point ``q`` of the ball, in units of
    ``1/sqrt(c)``: ``λ_q · eps · max(|q|, eps) · sqrt(c)``. ``ValueError`` if ``q`` is not
    strictly inside the ball or ``c <= 0``."""
    with mpmath.workdps(ref.DPS):
        cc = _check_c(c)
        eps = machine_eps(dtype)
        lam = ref.conformal_factor(q, cc)
        return lam * eps * max(ref.norm(q), eps) * mpmath.sqrt(cc)


def hulp_tangent(x: Sequence[Any], v: Sequence[Any], c: Any, dtype: torch.dtype) -> Any:
    """The rounding allowance of a tangent vector ``v`` at ``x``: ``eps · λ_x · |v| · sqrt(c)``
    (its Riemannian length times ``eps``, in units of ``1/sqrt(c)``)."""
    with mpmath.workdps(ref.DPS):
        cc = _check_c(c)
        return machine_eps(dtype) * ref.conformal_factor(x, cc) * ref.norm(v) * mpmath.sqrt(cc)


def hulp_klein(k: Sequence[Any], c: Any, dtype: torch.dtype) -> Any:
    """Hyperbolic length of one radial float step at a point ``k`` of the Klein model, in units
    of ``1/sqrt(c)``: ``eps · max(sqrt(c)|k|, eps) / (1 - c|k|^2)``. ``ValueError`` if
    ``c|k|^2 >= 1``."""
    with mpmath.workdps(ref.DPS):
        cc = _check_c(c)
        eps = machine_eps(dtype)
        n = ref.norm(k)
        if cc * n * n >= 1:
            raise ValueError("k must lie strictly inside the Klein ball c|k|^2 < 1")
        return eps * max(mpmath.sqrt(cc) * n, eps) / (1 - cc * n * n)


def hulp_lorentz(h: Sequence[Any], c: Any, dtype: torch.dtype) -> Any:
    """Hyperbolic length of one float step at a point ``h`` of the hyperboloid, in units of
    ``1/sqrt(c)``: ``eps · sqrt(c) · |h|`` (Euclidean norm of all coordinates)."""
    with mpmath.workdps(ref.DPS):
        cc = _check_c(c)
        return machine_eps(dtype) * mpmath.sqrt(cc) * ref.norm(h)


def _ratio(num: Any, den: Any) -> float:
    if num == 0:
        return 0.0
    if den == 0:
        return math.inf
    return float(num / den)


def _sum(values: Iterable[Any]) -> Any:
    return mpmath.fsum(mpmath.mpf(v) for v in values)


def point_error(
    p: Sequence[Any],
    e: Sequence[Any],
    c: Any,
    dtype: torch.dtype,
    input_hulps: Iterable[Any] = (),
) -> float:
    """Error of a computed point ``p`` against the exact point ``e``, in hULP:
    ``sqrt(c)·d_H(p, e) / (hulp(e) + Σ input_hulps)``.

    ``p`` and ``e`` are vectors of one length (floats or mpf); ``input_hulps`` are the
    allowances of the inputs (:func:`hulp`, :func:`hulp_tangent`, ...). Returns ``inf`` if ``p``
    is not finite or not strictly inside the ball; ``ValueError`` if ``e`` is not in the ball or
    the lengths differ.
    """
    with mpmath.workdps(ref.DPS):
        cc = _check_c(c)
        if len(p) != len(e):
            raise ValueError(f"p and e must have the same length, got {len(p)} and {len(e)}")
        if not _finite_vec(p) or not ref.in_ball(p, cc):
            return math.inf
        num = mpmath.sqrt(cc) * ref.dist(p, e, cc)
        return _ratio(num, hulp(e, cc, dtype) + _sum(input_hulps))


def scalar_error(
    p: Any, e: Any, c: Any, dtype: torch.dtype, input_hulps: Iterable[Any] = ()
) -> float:
    """Error of a computed length ``p`` (a geodesic distance) against the exact ``e``, in hULP:
    ``sqrt(c)·|p - e| / (eps·sqrt(c)·|e| + Σ input_hulps)``; ``inf`` if ``p`` is not finite."""
    with mpmath.workdps(ref.DPS):
        cc = _check_c(c)
        pp = mpmath.mpf(p)
        if not mpmath.isfinite(pp):
            return math.inf
        ee = mpmath.mpf(e)
        sc = mpmath.sqrt(cc)
        return _ratio(sc * abs(pp - ee), machine_eps(dtype) * sc * abs(ee) + _sum(input_hulps))


def relative_error(p: Any, e: Any, dtype: torch.dtype, input_hulps: Iterable[Any] = ()) -> float:
    """Relative error of a computed quantity ``p`` against ``e``, in hULP:
    ``|p - e| / (eps·|e| + |e|·Σ input_hulps)``.

    ``p`` and ``e`` are both reals or both vectors (Euclidean norms then). It suits results
    whose logarithm moves by at most the hyperbolic displacement of the input points, such as
    ``λ_x`` or ``g / λ_x^2``. ``inf`` if ``p`` is not finite.
    """
    with mpmath.workdps(ref.DPS):
        if isinstance(p, (list, tuple)) or isinstance(e, (list, tuple)):
            if len(p) != len(e):
                raise ValueError(f"p and e must have the same length, got {len(p)} and {len(e)}")
            if not _finite_vec(p):
                return math.inf
            size = ref.norm(e)
            diff = ref.norm([mpmath.mpf(a) - mpmath.mpf(b) for a, b in zip(p, e, strict=True)])
        else:
            pp = mpmath.mpf(p)
            if not mpmath.isfinite(pp):
                return math.inf
            size = abs(mpmath.mpf(e))
            diff = abs(pp - mpmath.mpf(e))
        return _ratio(diff, machine_eps(dtype) * size + size * _sum(input_hulps))


def squared_length_error(
    p: Any, e: Any, c: Any, dtype: torch.dtype, input_hulps: Iterable[Any] = ()
) -> float:
    """Error of a computed squared distance ``p`` against the exact ``e = d^2``, in hULP:
    ``c·|p - e| / (eps·c·e + 2·sqrt(c)·d·Σ input_hulps)`` (moving an input by one allowance
    moves ``d`` by as much, and ``d^2`` by ``2d`` times as much); ``inf`` if ``p`` is not
    finite."""
    with mpmath.workdps(ref.DPS):
        cc = _check_c(c)
        pp = mpmath.mpf(p)
        if not mpmath.isfinite(pp):
            return math.inf
        ee = mpmath.mpf(e)
        den = machine_eps(dtype) * cc * ee + 2 * mpmath.sqrt(cc * ee) * _sum(input_hulps)
        return _ratio(cc * abs(pp - ee), den)


def tangent_error(
    x: Sequence[Any],
    p: Sequence[Any],
    e: Sequence[Any],
    c: Any,
    dtype: torch.dtype,
    input_hulps: Iterable[Any] = (),
) -> float:
    """Error of a computed tangent vector ``p`` at ``x`` against the exact ``e``, in hULP:
    ``sqrt(c)·λ_x|p - e| / (eps·sqrt(c)·λ_x·|e| + Σ input_hulps)``; ``inf`` if ``p`` is not
    finite. ``ValueError`` if ``x`` is not in the ball or the lengths differ."""
    with mpmath.workdps(ref.DPS):
        cc = _check_c(c)
        if len(p) != len(e):
            raise ValueError(f"p and e must have the same length, got {len(p)} and {len(e)}")
        if not _finite_vec(p):
            return math.inf
        sc = mpmath.sqrt(cc)
        lam = ref.conformal_factor(x, cc)
        diff = [mpmath.mpf(a) - mpmath.mpf(b) for a, b in zip(p, e, strict=True)]
        num = sc * lam * ref.norm(diff)
        den = machine_eps(dtype) * sc * lam * ref.norm(e) + _sum(input_hulps)
        return _ratio(num, den)


@dataclass(frozen=True)
class BandResult:
    """What was measured for one operation, dtype and radius band.

    ``radius``: the band's hyperbolic radius (every input and exact output lies within it);
    ``samples``: how many inputs were evaluated (0 if none could be drawn, e.g. a model that
    cannot represent the band); ``max_error``: the largest error in hULP (``inf`` for a
    non-finite result); ``finite``: every result was finite; ``in_ball``: every point result was
    strictly inside its model; ``grad_finite``: every gradient was finite.
    """

    radius: float
    samples: int
    max_error: float
    finite: bool
    in_ball: bool
    grad_finite: bool

    def passes(self, limit: float = HULP_LIMIT) -> bool:
        """Whether this band satisfies the contract: samples were drawn, every result was finite,
        in the ball, with finite gradients, and the largest error is at most ``limit``."""
        return (
            self.samples > 0
            and self.finite
            and self.in_ball
            and self.grad_finite
            and self.max_error <= limit
        )


def usable_radius(bands: Sequence[BandResult], limit: float = HULP_LIMIT) -> float:
    """The largest band radius ``R`` such that every band of radius ``<= R`` passes
    (:meth:`BandResult.passes`); 0.0 if the smallest band fails or ``bands`` is empty.

    The bands are taken in increasing radius whatever their order in ``bands``. ``ValueError``
    if two bands have the same radius or ``limit`` is not positive.
    """
    if not limit > 0:
        raise ValueError(f"limit must be positive, got {limit!r}")
    ordered = sorted(bands, key=lambda b: b.radius)
    radii = [b.radius for b in ordered]
    if len(set(radii)) != len(radii):
        raise ValueError("bands must have distinct radii")
    usable = 0.0
    for band in ordered:
        if not band.passes(limit):
            break
        usable = band.radius
    return usable
