r"""Geodesics of the Poincaré ball, and Möbius versions of Euclidean functions.

* :func:`geodesic`: the point at fraction ``t`` of the geodesic from ``x`` to ``y``,
  :math:`\gamma_{x\to y}(t) = x \oplus_c \big(t \otimes_c ((-x) \oplus_c y)\big)`;
* :func:`geodesic_unit`: the unit-speed geodesic from ``x`` in the direction ``v``,
  :math:`\exp_x\big(t\,v/|v|_x\big)` with the Riemannian norm :math:`|v|_x = \lambda_x|v|`;
* :func:`mobius_fn_apply`: :math:`\exp_0(f(\log_0 x))`, the Möbius version of ``f``.

Numerics of :func:`geodesic`. The textbook composition rounds the intermediate point
:math:`(-x) \oplus y`, whose float step is :math:`e^{s_c d(x,y)}` times longer than those of
``x`` and ``y`` when they lie far apart near the boundary: the midpoint of two opposite points
of the outermost shell would be off by :math:`e^{r}` hULP. Instead, in the hyperboloid
:math:`h_q = \big((1 + c|q|^2)/s_c,\ 2q\big)/B_q` (:math:`B_q = 1 - c|q|^2`), the geodesic is the
combination

.. math:: h(t) = \alpha\,h_x + \beta\,h_y,\qquad
          \alpha = \frac{\sinh((1-t)u)}{\sinh u},\quad \beta = \frac{\sinh(tu)}{\sinh u},\quad
          u = s_c\,d(x, y),

(the two exact points span the geodesic's plane, and :math:`-\langle h, h\rangle = 1/c` for
these weights), mapped back by :math:`h_{1:}/(1 + s_c h_0)`. Multiplying through by
:math:`B_x B_y`:

.. math:: \gamma(t) = \frac{2\,(\alpha B_y\,x + \beta B_x\,y)}
          {B_x B_y + \alpha B_y (1 + c|x|^2) + \beta B_x (1 + c|y|^2)},

with no gap of a rounded intermediate point: for ``t`` in ``[0, 1]`` every term is
non-negative except in the numerator's cancellation, whose error is that of moving ``x`` and
``y`` by a float step. A long extrapolation of a short (or null) segment would cancel in
:math:`\alpha \approx -\beta` (at ``x == y`` the weights :math:`1 - t` and :math:`t` of a
huge ``t`` sum to 0 in floating point); such rows take the equivalent form

.. math:: \gamma(t) = \frac{2\,\big(\sigma B_y\,x + \beta\,(B_x (y - x) + (B_x - B_y)\,x)\big)}
          {B_x B_y + \sigma B_y (1 + c|x|^2) + 2\beta\,(B_x - B_y)},\qquad
          \sigma = \alpha + \beta = \frac{\cosh((1 - 2t)u/2)}{\cosh(u/2)},

whose differences vanish exactly at ``x == y`` (the result is then ``x``, to rounding, for
every ``t``) but which cancels where :math:`\sigma \approx \beta` (far-out ``x``, inward
results). Each row takes the form whose terms cancel less, by the ratios
:math:`(|\alpha| + |\beta|)/\sigma` and :math:`(\sigma + |\beta|)/|\alpha|`.
:math:`\beta = t\operatorname{shc}(tu)/\operatorname{shc}(u)` with
:math:`\operatorname{shc}(z) = \sinh z / z` is exact at ``u = 0``, and ``t = 0`` and ``t = 1``
give :math:`(\sigma, \beta) = (1, 0)` and :math:`(1, 1)` exactly. Extrapolations whose
exponents exceed :data:`EXPONENT_LIMIT` (points far beyond any representable radius) are
evaluated at the parameter where the exponent reaches it, on the same geodesic, and land on
the outermost shell.

Numerics of :func:`geodesic_unit`. :math:`\exp_x(t\,v/|v|_x) = x \oplus_c
\tanh(s_c t/2)\,\hat v/s_c`: the argument of ``tanh`` is :math:`s_c t/2` exactly (no rounded
tangent vector), and the gap of the second summand is :math:`\operatorname{sech}^2(s_c t/2)`,
taken from ``t`` itself; the sum uses the stable form of :func:`poincare.mobius_add`. In float64
the value is evaluated in double-double (the direction :math:`\hat v` carries its rounding
:math:`\sinh(s_c|t|)` times further), as :func:`poincare.expmap` does.

``float32`` inputs are computed in ``float64`` (as the maps are: their condition numbers grow
like :math:`e^{r}`), ``float64`` inputs take their gaps from double-double norms.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ._checks import Curvature, check_last_dims, check_tensor, prepare
from ._gyroplane import pow2_scale, unit_direction
from ._numerics import (
    asinh,
    dd_expmap,
    gap_precise,
    max_norm,
    norm,
    onto_shell,
    sech2,
    sqnorm,
    tanh,
)
from ._precision import compute_dtype
from .functional import _finish_point, _scalar, expmap0, logmap0

__all__ = ["EXPONENT_LIMIT", "geodesic", "geodesic_unit", "mobius_fn_apply"]

EXPONENT_LIMIT = 4.0 * math.atanh(max_norm(torch.float64)) + 10.0
r"""The largest :math:`|t u|` and :math:`|(1 - t) u|` of :func:`geodesic` (about 84.9): twice
the float64 representable radius (:math:`u` never exceeds it) plus a margin of 10, beyond
which the point lies far outside every representable radius."""


def _check_parameter_shape(name: str, t: Tensor, *points: Tensor) -> None:
    """``ValueError`` naming ``name`` unless ``t`` broadcasts against the points' ``(..., 1)``."""
    batch = torch.broadcast_shapes(*(p.shape[:-1] for p in points))  # type: ignore[no-untyped-call]
    if t.dim() > 0:
        try:
            torch.broadcast_shapes(t.shape, (*batch, 1))  # type: ignore[no-untyped-call]
        except RuntimeError:
            raise ValueError(
                f"{name} of shape {tuple(t.shape)} does not broadcast against the points' "
                f"{(*batch, 1)} (x[..., :1])"
            ) from None


def _shc(z: Tensor) -> Tensor:
    """``sinh(z) / z`` (1 at 0), even, for any real ``z``."""
    a = z.abs()
    small = a < math.sqrt(torch.finfo(z.dtype).eps) / 4
    safe = torch.where(small, torch.ones_like(a), a)
    return torch.where(small, 1 + a * a / 6, torch.sinh(safe) / safe)


def _geodesic(t: Tensor, x: Tensor, y: Tensor, c: Tensor, precise: bool) -> Tensor:
    """The closed form of the module docstring, in the compute dtype (no projection)."""
    sc = c.sqrt()
    bx = gap_precise(x, c, precise)
    by = gap_precise(y, c, precise)
    u = 2 * asinh(sc * norm(x - y) / torch.sqrt(bx * by))  # s_c d(x, y)
    # Keep |t u| and |(1 - t) u| within the exponent limit (u <= EXPONENT_LIMIT always): the
    # bounds only bind far beyond every representable radius, and carry no gradient.
    with torch.no_grad():
        lim = EXPONENT_LIMIT / u.detach()  # inf where x == y: no bound
        lo, hi = 1 - lim, lim
    tt = torch.minimum(torch.maximum(t, lo), hi)
    # Two evaluations of one closed form (module docstring): with the weights alpha, beta
    # themselves (every term non-negative for t in [0, 1]), and with beta and their sum sigma
    # (nothing cancels for long extrapolations of short or null segments, where alpha ~ -beta).
    # Each row takes the one whose terms cancel less: (|alpha| + |beta|)/sigma against
    # (sigma + |beta|)/|alpha|.
    shu = _shc(u)
    alpha = (1 - tt) * _shc((1 - tt) * u) / shu
    beta = tt * _shc(tt * u) / shu
    sigma = torch.cosh((1 - 2 * tt) * u / 2) / torch.cosh(u / 2)
    with torch.no_grad():
        a, b, g = alpha.abs(), beta.abs(), sigma.detach()
        by_sum = (a + b) * a > (g + b) * g  # the weights cancel more than the differences
    bxy = bx * by
    xx, yy = 1 + c * sqnorm(x), 1 + c * sqnorm(y)
    num_w = alpha * by * x + beta * bx * y
    den_w = bxy + alpha * by * xx + beta * bx * yy
    dxy = bx - by  # B_x y - B_y x = B_x (y - x) + (B_x - B_y) x; B_x yy - B_y xx = 2 (B_x - B_y)
    num_s = sigma * by * x + beta * (bx * (y - x) + dxy * x)
    den_s = bxy + sigma * by * xx + 2 * beta * dxy
    num = 2 * torch.where(by_sum, num_s, num_w)
    den = torch.where(by_sum, den_s, den_w)
    # The exact denominator is B_x B_y (1 + s_c h_0) >= 2 B_x B_y; only an extrapolation so
    # ill-conditioned that no digit of its result is known could round it below B_x B_y.
    den = torch.maximum(den, bxy)
    res = num / den
    # Far extrapolations lie beyond the boundary: bring them onto it (radially) before any
    # narrowing cast, which could overflow; the final projection puts them on the shell.
    n = sc * norm(res.detach())
    over = n > 1
    return res * torch.where(over, 1 / torch.where(over, n, torch.ones_like(n)), 1.0)


def geodesic(t: float | Tensor, x: Tensor, y: Tensor, *, c: Curvature = 1.0) -> Tensor:
    r"""The point at fraction ``t`` of the geodesic from ``x`` to ``y``.

    .. math:: \gamma_{x \to y}(t) = x \oplus_c \big(t \otimes_c ((-x) \oplus_c y)\big),

    at hyperbolic distance :math:`|t|\,d(x, y)` from ``x``: ``t = 0`` gives ``x``, ``t = 1``
    gives ``y``, ``t = 1/2`` the midpoint, and any real ``t`` extends the geodesic beyond its
    endpoints (points beyond the representable radius land on the outermost shell). Evaluated
    in the closed form of :mod:`poincare._geodesic` (a combination of the two points' Lorentz
    coordinates), accurate to a few hULP up to the outermost shell; ``x == y`` gives ``x``.

    Args:
        t: a real number, or a floating tensor broadcastable to ``x[..., :1]`` (``(..., 1)``).
        x: ``(..., D)`` start points.
        y: ``(..., D)`` end points (broadcast against ``x``).
        c: curvature.

    Returns:
        ``(..., D)`` point strictly inside the ball, in the promoted dtype of ``x``, ``y`` (and
        ``t`` when it is a tensor). Points on or outside the ball are treated as lying on the
        outermost shell of their dtype, in their direction (the result is that of ``project``
        of them).

    Raises:
        TypeError, ValueError: bad dtypes, a ``t`` that is not finite or not shaped like
            ``x[..., :1]``, mismatched last dimensions, shapes that do not broadcast, invalid
            ``c``.
    """
    check_last_dims(x=x, y=y)
    out, comp, cc, (xx, yy) = prepare(c, wide=True, x=x, y=y)
    tt = _scalar("t", t, comp, xx.device)
    _check_parameter_shape("t", tt, xx, yy)
    # points outside the ball (a caller's error) act from the outermost shell of their dtype
    sc, shell = cc.sqrt(), max_norm(out)
    xx, yy = onto_shell(xx, sc, shell=shell), onto_shell(yy, sc, shell=shell)
    if isinstance(t, Tensor):
        out = torch.promote_types(out, t.dtype)
    return _finish_point(_geodesic(tt, xx, yy, cc, out == torch.float64), out, c)


def _dd_geodesic_unit(x: Tensor, v: Tensor, tau: Tensor, c: Tensor) -> Tensor:
    """``x ⊕ tanh(tau) v̂ / s_c`` for float64 rows, in double-double (values only): as
    :func:`poincare._numerics.dd_expmap`, with the argument ``|tau|`` given instead of formed
    from ``|v|`` (and ``v`` reversed where ``tau < 0``)."""
    with torch.no_grad():
        s1, s2 = pow2_scale(v)
        one_t = torch.ones_like(tau)
        v = v * s1 * s2 * torch.where(tau < 0, -one_t, one_t)
        return dd_expmap(x, v, c, t=tau.abs())


def _geodesic_unit(
    t: Tensor, x: Tensor, v: Tensor, c: Tensor, precise: bool, storage: torch.dtype
) -> Tensor:
    """``x ⊕ tanh(s_c t/2) v̂/s_c`` in the compute dtype (no projection); ``storage`` is the
    dtype of ``v`` (the gradient cap of :func:`poincare._gyroplane.unit_direction`)."""
    sc = c.sqrt()
    bx = gap_precise(x, c, precise)
    vhat = unit_direction(v, storage)
    nonzero = sqnorm(vhat.detach()) > 0
    tau = torch.where(nonzero, sc * t / 2, torch.zeros_like(sc * t))  # v = 0: no step
    w = tanh(tau) * vhat / sc
    bw = sech2(tau)  # 1 - c|w|^2, finite gradients for huge tau
    s = x + w
    css = c * sqnorm(s)
    # den = 1 + 2c<x, w> + c^2|x|^2|w|^2 >= (1 - s_c|x| s_c|w|)^2 >= (B_x/2)^2 exactly (|w| <
    # 1/s_c); the floor (B_x/4)^2 only acts where rounding made it vanish: a start point on the
    # outermost shell and a long step straight through the origin, where x + w rounds to 0
    # (the value then comes from the double-double form, the gradient stays finite).
    floor = (bx * bx / 16).clamp(min=torch.finfo(x.dtype).tiny)
    den = torch.maximum(css + bx * bw, floor)
    res = (bx * s + css * x) / den
    if precise:
        res = res + (_dd_geodesic_unit(x, v, tau.detach(), c.detach()) - res).detach()
    return res


def geodesic_unit(t: float | Tensor, x: Tensor, v: Tensor, *, c: Curvature = 1.0) -> Tensor:
    r"""The unit-speed geodesic from ``x`` in the direction ``v``, at time ``t``.

    .. math:: \gamma_{x, v}(t) = \exp_x\!\Big(t\,\frac{v}{|v|_x}\Big)
              = x \oplus_c \frac{\tanh(s_c t/2)}{s_c}\,\frac{v}{|v|},\qquad
              |v|_x = \lambda_x |v|,

    the point at signed hyperbolic distance ``t`` from ``x`` along the geodesic leaving ``x``
    in the direction of ``v`` (a tangent vector at ``x``; only its direction matters). ``v = 0``
    gives ``x`` for every ``t``. Any real ``t`` is accepted: points beyond the representable
    radius land on the outermost shell. Accurate forms: see :mod:`poincare._geodesic`.

    Args:
        t: a real number, or a floating tensor broadcastable to ``x[..., :1]`` (``(..., 1)``).
        x: ``(..., D)`` start points.
        v: ``(..., D)`` directions, tangent vectors at ``x`` of any finite size (broadcast).
        c: curvature.

    Returns:
        ``(..., D)`` point strictly inside the ball, in the promoted dtype of the inputs. A start
        point on or outside the ball is treated as lying on the outermost shell (as in
        :func:`geodesic`).

    Raises:
        TypeError, ValueError: as :func:`geodesic`.
    """
    check_last_dims(x=x, v=v)
    out, comp, cc, (xx, vv) = prepare(c, wide=True, x=x, v=v)
    tt = _scalar("t", t, comp, xx.device)
    _check_parameter_shape("t", tt, xx, vv)
    xx = onto_shell(xx, cc.sqrt(), shell=max_norm(out))  # as in geodesic
    if isinstance(t, Tensor):
        out = torch.promote_types(out, t.dtype)
    res = _geodesic_unit(tt, xx, vv, cc, out == torch.float64, v.dtype)
    return _finish_point(res, out, c)


def mobius_fn_apply(
    fn: Callable[..., Tensor], x: Tensor, *args: Any, c: Curvature = 1.0, **kwargs: Any
) -> Tensor:
    r"""The Möbius version of a Euclidean function: :math:`f^{\otimes_c}(x) =
    \exp_0\big(f(\log_0 x)\big)`.

    ``fn(logmap0(x), *args, **kwargs)`` is applied in the tangent space at the origin and its
    result mapped back into the ball (Ganea et al. 2018, sec. 3.2; geoopt's
    ``mobius_fn_apply``). For a linear ``f(v) = M v`` it is :func:`poincare.mobius_matvec`, for
    ``f(v) = r v`` it is :func:`poincare.mobius_scalar_mul`, and the identity returns ``x``.
    ``fn`` may change the last dimension (e.g. a linear map to another size) and the leading
    ones; its input is in the compute dtype of ``x`` (:func:`poincare.compute_dtype`: float32
    for half-precision points), and the result comes back in ``x``'s dtype (promoted with the
    dtype ``fn`` returns). Tangent vectors of any size are accepted: long ones land on the
    outermost shell.

    Args:
        fn: a callable taking a ``(..., D)`` tensor (and ``args``, ``kwargs``) and returning a
            floating tensor with at least one dimension.
        x: ``(..., D)`` points.
        *args, **kwargs: passed on to ``fn``.
        c: curvature (keyword-only; not passed to ``fn``).

    Returns:
        ``(..., D')`` point strictly inside the ball.

    Raises:
        TypeError: ``fn`` is not callable, or does not return a floating tensor.
        ValueError: ``fn`` returns a 0-d tensor; bad ``x`` or ``c`` (as :func:`logmap0`).
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    check_tensor("x", x)
    u = logmap0(x.to(compute_dtype(x.dtype)), c=c)
    fu = fn(u, *args, **kwargs)
    if not isinstance(fu, Tensor) or not fu.dtype.is_floating_point:
        got = fu.dtype if isinstance(fu, Tensor) else type(fu).__name__
        raise TypeError(f"fn must return a floating tensor, got {got}")
    check_tensor("fn(logmap0(x))", fu)
    y = expmap0(fu, c=c)
    # fn ran in the compute dtype: a result in that dtype comes back in x's own.
    out = x.dtype if fu.dtype == u.dtype else torch.promote_types(x.dtype, fu.dtype)
    return _finish_point(y, out, c) if y.dtype != out else y
