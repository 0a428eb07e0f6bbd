r"""Distance from points to a gyroplane of the Poincaré ball (Ganea, Bécigneul and Hofmann 2018).

The gyroplane through a point :math:`p` with normal :math:`a \in T_p` (a tangent vector at
:math:`p`, only its direction matters) is

.. math:: H_{p,a} = \{x : \langle (-p) \oplus_c x,\ a\rangle = 0\},

the totally geodesic hypersurface through :math:`p` orthogonal to the geodesic leaving
:math:`p` in the direction :math:`a`. Its distance from :math:`x` is, with
:math:`z = (-p) \oplus_c x`,

.. math:: d(x, H_{p,a}) = \frac{1}{s_c}\operatorname{asinh}\!\Big(
          \frac{2 s_c |\langle z, a\rangle|}{(1 - c|z|^2)\,|a|}\Big).

Numerics. That textbook form rounds :math:`z` and then forms :math:`1 - c|z|^2`, which cancels
as soon as :math:`x` or :math:`p` nears the boundary (the error grows like :math:`e^{r}`).
With :math:`s = x - p`, :math:`B_q = 1 - c|q|^2` and the numerator of Möbius addition
:math:`N = B_p s - c|s|^2 p` (so :math:`z = N / D`,
:math:`D = c|s|^2 + B_p B_x`), the identity :math:`1 - c|(-p) \oplus x|^2 = B_p B_x / D`
cancels :math:`D`:

.. math:: \sinh\!\big(s_c\, d_\pm\big) = \frac{2 s_c \langle N, \hat a\rangle}{B_p B_x},\qquad
          \hat a = a / |a|,

where every factor is formed without cancellation (``B`` as :math:`(1 - s_c|q|)(1 + s_c|q|)`;
the components of :math:`N` are sums whose terms are at most a few times :math:`|N|`, because
:math:`c|p||s| \le \sqrt{10}\,|N|/|s|` and :math:`B_p \le 2|N|/|s|`). The result is accurate to
a few hULP up to the outermost shell; the only loss left is the conditioning of the problem
itself: a rotation of the normal by one float step moves the plane, far from :math:`p`, by
:math:`\epsilon \sinh(s_c\,d(p, x))`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._checks import Curvature, check_last_dims, prepare
from ._numerics import asinh_over, dot, gap, onto_shell, pow2_factors, sqnorm

__all__ = ["dist2plane", "pow2_scale", "sinh_dist2plane", "unit_direction"]


def pow2_scale(a: Tensor) -> tuple[Tensor, Tensor]:
    """Two powers of two ``(s1, s2)`` of shape ``(..., 1)``, without gradient, such that
    ``a * s1 * s2`` has its largest absolute coordinate in ``[1/2, 1)`` (1 and 1 for a zero
    row). Both multiplications are exact, and neither factor overflows even for a subnormal
    row (whose single factor could)."""
    return pow2_factors(a.detach().abs().amax(dim=-1, keepdim=True))


def unit_direction(a: Tensor, storage: torch.dtype | None = None) -> Tensor:
    r"""``a / |a|`` over the last dimension, and 0 where ``a`` is the zero vector.

    ``a`` is first scaled exactly by powers of two (:func:`pow2_scale`, no gradient: the
    direction does not depend on the scale, so the gradient is still that of :math:`a/|a|`,
    :math:`(I - \hat a\hat a^\top)/|a|`), so that no square overflows or underflows, whatever
    the size of ``a`` (a norm of ``1e30`` in float32, subnormal coordinates). Where ``a = 0`` the
    result and its gradient are 0 (no ``0/0`` on either pass). For normals shorter than about
    ``2^(-maxexp/2)`` (``1e-154`` in float64, ``5e-20`` in float32), whose exact gradient would
    overflow, the gradient is that of a normal of that length (finite). ``storage``, the dtype
    the gradient is returned in (default ``a``'s), sets that length: ``2^(-maxexp/2)`` of the
    narrower of the two dtypes, so that a float32 normal computed in float64 still gets a
    gradient that float32 holds.
    """
    s1, s2 = pow2_scale(a)
    exact = a * s1 * s2
    # The gradient of a direction is (I - â âᵀ)/|a|, beyond the float range for the tiniest
    # normals: there the backward pass sees the scale capped at 2^(maxexp/2) (the value is
    # still the exact direction), so gradients stay finite.
    narrow = a.dtype if storage is None else storage
    maxexp = min(math.frexp(torch.finfo(t).max)[1] for t in (a.dtype, narrow))
    cap = 2.0 ** (maxexp // 2)
    capped = (s1 * s2) > cap
    y = a * cap
    b = torch.where(capped, exact.detach() + (y - y.detach()), exact)
    nb = torch.linalg.vector_norm(b, dim=-1, keepdim=True)  # in [1/2, sqrt(D)) where nonzero
    nonzero = nb > 0
    unit = b / torch.where(nonzero, nb, torch.ones_like(nb))
    return torch.where(nonzero, unit, torch.zeros_like(unit))


def sinh_dist2plane(x: Tensor, p: Tensor, ahat: Tensor, c: Tensor) -> Tensor:
    r"""``(..., 1)``: :math:`\sinh(s_c d_\pm) = 2 s_c \langle N, \hat a\rangle / (B_p B_x)`
    with :math:`N = B_p (x - p) - c|x - p|^2 p`, for tensors already in the compute dtype
    (``ahat`` a unit vector or 0). See the module docstring for why it does not cancel.
    Points on or beyond the boundary are treated as lying on the outermost shell
    (:func:`poincare._numerics.onto_shell`)."""
    sc = c.sqrt()
    nx, _, bx = gap(x, sc)
    np_, _, bp = gap(p, sc)
    # points outside the ball (a caller's error) act from the outermost shell, with its gap
    x, p = onto_shell(x, sc, n=nx), onto_shell(p, sc, n=np_)
    s = x - p
    n_a = bp * dot(s, ahat) - c * sqnorm(s) * dot(p, ahat)
    return 2 * sc * n_a / (bp * bx)


def dist2plane(
    x: Tensor,
    p: Tensor,
    a: Tensor,
    *,
    c: Curvature = 1.0,
    signed: bool = True,
    keepdim: bool = False,
) -> Tensor:
    r"""Distance from points ``x`` to the gyroplane through ``p`` with normal ``a``.

    .. math::
        d_\pm(x; p, a) = \frac{1}{s_c}\operatorname{asinh}\!\Big(
            \frac{2 s_c \langle z, a\rangle}{(1 - c|z|^2)\,|a|}\Big),\quad
            z = (-p) \oplus_c x,

    evaluated as :math:`\frac{1}{s_c}\operatorname{asinh}\big(2 s_c\langle N,\hat a\rangle/
    (B_p B_x)\big)` with :math:`N = B_p(x - p) - c|x - p|^2 p` (the numerator of
    :math:`(-p) \oplus x`), which stays accurate up to the outermost shell (see
    :mod:`poincare._gyroplane`). ``signed=True`` keeps the sign of :math:`\langle z, a\rangle`
    (positive on the side ``a`` points to); ``signed=False`` returns :math:`|d_\pm|`.

    The gyroplane is the set of points :math:`x` with :math:`\langle (-p)\oplus x, a\rangle = 0`;
    only the direction of ``a`` matters (the result is invariant under ``a -> k a``, ``k > 0``,
    and changes sign with ``a -> -a``). A zero normal defines no plane: its rows give 0, with a
    zero gradient for every input.

    Inputs are computed in their own compute dtype (float32 in float32): the closed form
    amplifies no rounding error, so values and gradients stay within a few ulps of the exact
    ones up to the outermost shell without a wider type.

    Gradients are finite everywhere: the signed distance is smooth (its gradient on the plane
    is the unit normal), the unsigned one has the zero subgradient on the plane (as
    :func:`poincare.dist` at ``x == y``).

    Args:
        x: ``(..., D)`` points.
        p: ``(..., D)`` points of the planes (broadcast against ``x``).
        a: ``(..., D)`` normals, tangent vectors at ``p`` (any finite size; broadcast).
        c: curvature.
        signed: keep the sign (default) or return the unsigned distance.
        keepdim: keep the reduced last dimension as size 1.

    Returns:
        ``(...)`` (or ``(..., 1)`` with ``keepdim``), in the promoted dtype of the inputs. Points
        ``x`` and ``p`` on or outside the ball are treated as lying on the outermost shell, in
        their direction (the result is that of ``project`` of them).

    Raises:
        TypeError: an argument is not a real floating tensor, or ``c`` is not a number/tensor.
        ValueError: mismatched last dimensions, batch shapes that do not broadcast, invalid
            ``c``.
    """
    check_last_dims(x=x, p=p, a=a)
    out, _, cc, (xx, pp, aa) = prepare(c, x=x, p=p, a=a)
    sc = cc.sqrt()
    s = sinh_dist2plane(xx, pp, unit_direction(aa, a.dtype), cc)
    # asinh is odd: the signed form s * asinh(|s|)/|s| is smooth at s = 0 (gradient 1 there);
    # the unsigned one, |s| * asinh(|s|)/|s|, is exactly its absolute value.
    q = asinh_over(s.abs())
    d = (s if signed else s.abs()) * q / sc
    d = d.to(out)
    return d if keepdim else d.squeeze(-1)
