"""Numerical building blocks: safe ratio functions, boundary gaps and exact containment tests.

Everything here acts on tensors already in the compute dtype. The ratio functions
``tanh(t)/t``, ``artanh(u)/u`` and ``asinh(a)/a`` are even, equal 1 at 0, and are evaluated by
a Taylor polynomial below a small threshold so that values and gradients are exact and finite
at the origin (no ``0/0`` in the forward pass, no ``NaN`` leaking through an unused branch of
``torch.where`` in the backward pass).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from . import _dd as dd
from ._checks import host_branches

__all__ = [
    "acosh1p",
    "artanh_over",
    "asinh",
    "asinh_over",
    "dd_expmap",
    "dot",
    "exact_beyond",
    "exact_outside",
    "gap",
    "gap_precise",
    "gap_wide",
    "max_norm",
    "norm",
    "onto_shell",
    "pow2_factors",
    "sech2",
    "shell_divisor",
    "sqnorm",
    "tanh",
    "tanh_over",
]


def max_norm(dtype: torch.dtype) -> float:
    """The largest float strictly below 1 in ``dtype``: ``1 - eps/2``."""
    return 1.0 - torch.finfo(dtype).eps / 2


def _small(t: Tensor) -> float:
    # Below this the quadratic Taylor term is exact to well under one ulp.
    return math.sqrt(torch.finfo(t.dtype).eps) / 4


def sech2(t: Tensor) -> Tensor:
    r""":math:`\operatorname{sech}^2 t = 1 - \tanh^2 t`, formed as :math:`4q/(1+q)^2` with
    :math:`q = e^{-2|t|}`: accurate to a few ulps relative for every ``t``, where ``1 - tanh^2``
    of a rounded ``tanh`` keeps no relative accuracy once ``|t|`` exceeds a few units (its
    error ``eps`` against a value of ``4 e^{-2|t|}``), and finite (0) for huge ``t``."""
    q = torch.exp(-2 * t.abs())
    return 4 * q / ((1 + q) * (1 + q))


class _Tanh(torch.autograd.Function):
    r""":func:`torch.tanh` with the derivative :func:`sech2`.

    PyTorch differentiates ``tanh`` as ``1 - y^2`` from the rounded result ``y``: at
    ``t = 15`` (a point 30 curvature radii out) that derivative is off by ``1.7e-4``
    relatively in float64, and it is the whole radial derivative of the maps there. The
    backward is written in differentiable ops (higher derivatives, ``torch.func``)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(t: Tensor) -> Tensor:
        return torch.tanh(t)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor], output: Tensor) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:
        (t,) = ctx.saved_tensors
        return g * sech2(t)


def tanh(t: Tensor) -> Tensor:
    """``tanh(t)`` whose gradient keeps its relative accuracy for every ``t`` (:class:`_Tanh`)."""
    out: Tensor = _Tanh.apply(t)  # type: ignore[no-untyped-call]
    return out


def tanh_over(t: Tensor) -> Tensor:
    """``tanh(t) / t`` (1 at 0), for any real ``t``."""
    a = t.abs()
    small = a < _small(t)
    safe = torch.where(small, torch.ones_like(a), a)
    return torch.where(small, 1 - a * a / 3, torch.tanh(safe) / safe)


def artanh_over(u: Tensor) -> Tensor:
    """``artanh(u) / u`` (1 at 0), for ``0 <= u < 1``."""
    small = u < _small(u)
    safe = torch.where(small, torch.full_like(u, 0.5), u)
    return torch.where(small, 1 + u * u / 3, torch.atanh(safe) / safe)


def asinh(t: Tensor) -> Tensor:
    """``asinh(t)`` for ``t >= 0`` as ``log1p(t + t^2 / (1 + sqrt(1 + t^2)))``.

    Every term is non-negative, so the result is accurate to a few ulps for all ``t``, and it is
    several times faster than ``torch.asinh`` on the CPU. Beyond ``t = 1/sqrt(eps)``, where
    ``t^2`` could overflow, ``asinh(t) = log(2t) + O(1/t^2)`` is exact to rounding.
    """
    limit = 1 / math.sqrt(torch.finfo(t.dtype).eps)
    if host_branches(t) and (t.numel() == 0 or not bool(t.detach().amax() > limit)):
        t2 = t * t
        return torch.log1p(t + t2 / (1 + torch.sqrt(1 + t2)))
    big = t > limit
    ts = torch.where(big, torch.ones_like(t), t)
    t2 = ts * ts
    near = torch.log1p(ts + t2 / (1 + torch.sqrt(1 + t2)))
    return torch.where(big, torch.log(torch.where(big, t, torch.ones_like(t))) + math.log(2), near)


def acosh1p(x: Tensor) -> Tensor:
    """``arcosh(1 + x)`` for ``x >= 0`` as ``log1p(x + sqrt(x (x + 2)))`` (a new tensor).

    ``x = cosh(d) - 1`` formed without cancellation gives ``d`` to a few ulps: every term is
    non-negative, and ``log1p`` keeps the relative accuracy of small distances (``arcosh`` of
    ``1 + x`` rounded would lose all of it for ``x`` below ``eps``).
    """
    return (x + 2).mul_(x).sqrt_().add_(x).log1p_()


def asinh_over(a: Tensor) -> Tensor:
    """``asinh(a) / a`` (1 at 0), for ``a >= 0``."""
    small = a < _small(a)
    safe = torch.where(small, torch.ones_like(a), a)
    return torch.where(small, 1 - a * a / 6, asinh(safe) / safe)


def dot(x: Tensor, y: Tensor) -> Tensor:
    """Inner product over the last dimension, keeping it: ``(..., 1)``."""
    return (x * y).sum(dim=-1, keepdim=True)


def sqnorm(x: Tensor) -> Tensor:
    """Squared norm over the last dimension, keeping it: ``(..., 1)``."""
    return (x * x).sum(dim=-1, keepdim=True)


#: Per float dtype: (integer type of its width, mantissa bits, exponent bias of frexp's
#: convention ``a = m 2^e`` with ``m`` in [1/2, 1)), for reading exponents from the bits.
_BITS = {
    torch.float32: (torch.int32, 23, 126),
    torch.float64: (torch.int64, 52, 1022),
}


def _exponent(a: Tensor) -> Tensor:
    """frexp's exponent ``e`` of ``a`` (``a = m 2^e``, ``|m|`` in [1/2, 1); 0 for 0), as an
    integer tensor of ``a``'s width.

    Read from the bits: the biased exponent field, less the bias; a subnormal (field 0) is
    first scaled by ``2^(mantissa bits + 2)`` (exact) and the scaling subtracted. Integers of the
    float's own width keep one lane per element, which Inductor vectorises for float64 as well
    (``torch.frexp``'s int32 exponent of float64 data does not compile there in torch 2.13).
    """
    itype, mant, bias = _BITS[a.dtype]
    lift = mant + 2
    tiny = a.abs() < torch.finfo(a.dtype).tiny
    scaled = torch.where(tiny, a * (2.0**lift), a)
    field = torch.bitwise_and(
        torch.bitwise_right_shift(scaled.view(itype), mant), 0xFF if mant == 23 else 0x7FF
    )
    e = field - bias - torch.where(tiny, lift, 0).to(itype)
    return torch.where(a == 0, torch.zeros_like(e), e)


def _pow2(k: Tensor, dtype: torch.dtype) -> Tensor:
    """``2^k`` for integers ``k`` in the normal range of ``dtype``, built from the bits."""
    itype, mant, bias = _BITS[dtype]
    return torch.bitwise_left_shift(k + (bias + 1), mant).to(itype).view(dtype)


def pow2_factors(a: Tensor) -> tuple[Tensor, Tensor]:
    """Two powers of two ``s1, s2`` (shaped like ``a``, no gradient) with ``s1 s2 a`` in
    ``[1/2, 1)`` for every finite non-zero ``a`` (1 and 1 where ``a`` is 0).

    With frexp's exponent ``e`` of ``a``, ``s1 = 2^-floor(e/2)`` and ``s2 = 2^(floor(e/2) - e)``:
    multiplying by ``s1`` then ``s2`` is exact, and neither factor nor its inverse overflows,
    even for subnormal ``a`` (whose single factor ``2^1074`` would).
    """
    with torch.no_grad():
        x = a.detach()
        if x.dtype not in _BITS:
            _, e = torch.frexp(x)
            half = torch.div(e, 2, rounding_mode="floor")
            one = torch.ones_like(x)
            return torch.ldexp(one, -half), torch.ldexp(one, half - e)
        e = _exponent(x)
        half = torch.bitwise_right_shift(e, 1)  # floor(e / 2): an arithmetic shift
        return _pow2(-half, x.dtype), _pow2(half - e, x.dtype)


class _ScaledNorm(torch.autograd.Function):
    r"""``|x|`` over the last dimension (kept) from the exactly scaled row ``u = s_1 s_2 x``:
    :math:`|x| = |u| / (s_1 s_2)`, with the derivative :math:`\partial|x|/\partial x = x/|x|
    = u/|u|` (0 for a zero row) also taken from ``u``.

    Autograd's chain rule through the scaling would hand the norm's backward the incoming
    gradient divided by :math:`s_1 s_2`: for a row of tiny coordinates (``2^-139`` in float32)
    that quotient is a subnormal number with a few significant bits, and the gradient of
    :func:`poincare.dist` there lost all but 11 of its bits. Here the unit vector ``u/|u|`` is
    formed at unit scale and multiplied by the incoming gradient directly. The backward is
    written in differentiable ops, so higher derivatives and ``torch.func`` transforms work.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, s1: Tensor, s2: Tensor) -> Tensor:
        n: Tensor = torch.linalg.vector_norm(x * s1 * s2, dim=-1, keepdim=True)
        return n / s1 / s2

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, Tensor, Tensor], output: Tensor) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None]:
        x, s1, s2 = ctx.saved_tensors
        u = x * s1 * s2
        n = torch.linalg.vector_norm(u, dim=-1, keepdim=True)
        return g * (u / torch.where(n > 0, n, torch.ones_like(n))), None, None


def _scaled_norm(x: Tensor) -> Tensor:
    """``|x|`` after an exact scaling of each row by a power of two that brings its largest
    coordinate into ``[1/2, 1)``: no square underflows or overflows, whatever the row's size,
    and a gradient formed at that scale too (:class:`_ScaledNorm`)."""
    s1, s2 = pow2_factors(x.detach().abs().amax(dim=-1, keepdim=True))
    n: Tensor = _ScaledNorm.apply(x, s1, s2)  # type: ignore[no-untyped-call]
    return n


def norm(x: Tensor) -> Tensor:
    """Euclidean norm over the last dimension, kept: ``(..., 1)``, without underflow or overflow.

    ``torch.linalg.vector_norm`` squares the coordinates, so norms below about
    ``sqrt(tiny)/eps`` (1e-12 in float32) lose accuracy or come out as 0 with a zero gradient,
    and norms beyond ``sqrt(max)`` (1.8e19 in float32) overflow to ``inf``. Those rows are
    recomputed after an exact scaling by a power of two (see :func:`_scaled_norm`), so value
    and gradient are exact for every finite row. Eager CPU code rescales only when some row
    needs it; traced code (see :func:`poincare._checks.host_branches`) always takes the
    rescaled form.
    """
    if not host_branches(x):
        return _scaled_norm(x)
    n: Tensor = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    if n.numel() == 0:
        return n
    info = torch.finfo(x.dtype)
    limit = math.sqrt(info.tiny) / info.eps
    lo, hi = torch.aminmax(n.detach())
    if bool((lo < limit) | torch.isinf(hi)):
        bad = (n < limit) | torch.isinf(n)
        n = torch.where(bad, _scaled_norm(x), n)
    return n


def gap(x: Tensor, sc: Tensor, limit: float | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Return ``(|x|, u, B)`` with ``u = min(sqrt(c)|x|, 1 - eps/2)`` and ``B = 1 - c|x|^2``.

    ``B`` is formed as ``(1 - u)(1 + u)``: with ``u`` accurate to a relative ulp, ``1 - u`` is
    exact (Sterbenz), so ``B`` carries no cancellation even on the outermost shell. Clamping
    ``u`` keeps ``B >= eps/2`` for points on or beyond the boundary, so conformal factors stay
    finite for every input. ``limit`` replaces ``1 - eps/2`` (for half-precision data computed
    in float32: their own outermost shell, so that results fit their dtype).
    """
    n = norm(x)
    u = (sc * n).clamp(max=max_norm(x.dtype) if limit is None else limit)
    return n, u, (1 - u) * (1 + u)


def shell_divisor(x: Tensor, n: Tensor, sc: Tensor, shell: float | None = None) -> Tensor | None:
    r"""The row divisor of :func:`onto_shell` (..., 1): :math:`s_c|x|/m` on the rows outside
    the ball (:math:`s_c|x| > 1` as computed), 1 elsewhere, with ``m = shell`` (default
    ``1 - eps/2`` of ``x``'s dtype); None (in eager CPU code) when no row is outside.
    ``n = |x|`` (with its gradient), ``sc`` :math:`= \sqrt c`.

    Divide the vector by it (not multiply by its inverse): the backward pass of a quotient
    forms the derivative in the divisor from the quotient, :math:`-\bar q\,(v/d)/d`, while
    that of a product would form :math:`\langle\bar q, v\rangle` with the huge vector itself,
    which overflows."""
    m = max_norm(x.dtype) if shell is None else shell
    scaled = sc * n
    outside = scaled > 1
    if host_branches(x, sc) and not bool(outside.any()):
        return None
    return torch.where(outside, scaled / m, torch.ones_like(scaled))


def onto_shell(
    x: Tensor, sc: Tensor, shell: float | None = None, n: Tensor | None = None
) -> Tensor:
    r"""``x`` with every row outside the ball moved radially onto the outermost shell.

    The rows with :math:`s_c|x| > 1` as computed (``sc`` :math:`= \sqrt c`: points outside
    the ball, a caller's error) become :math:`m\,x/(s_c|x|)`, ``m = shell`` (by default
    ``1 - eps/2`` of ``x``'s dtype): the point :func:`poincare.project` gives (up to its last
    rounding), with the derivative of that radial map. The other rows are unchanged, bit for
    bit, those within a rounding of the boundary included (their gap, from :func:`gap`, is
    already that of the shell). An op that takes its vectors from this result and its gaps from
    :func:`gap` treats a point outside the ball as lying on the outermost shell in its
    direction, and forms no product of the size of its (possibly huge) norm. For data computed
    in a wider dtype than its own, ``shell`` is the shell of the data's dtype (float32 points
    outside the ball then land where ``project`` puts them in float32) and the op takes its
    gaps from the result.

    ``n = |x|`` (..., 1), as :func:`gap` returns it, saves a pass over ``x``; without it eager
    CPU code tests the rows with a plain norm (one that overflows counts as outside). Eager CPU
    code returns ``x`` itself when no row is outside; traced code divides every row by its
    divisor (:func:`shell_divisor`, 1 for the rows inside).
    """
    if n is None:
        if host_branches(x, sc):
            with torch.no_grad():
                plain = torch.linalg.vector_norm(x.detach(), dim=-1, keepdim=True)
                if not bool((plain * sc.detach() > 1).any()):
                    return x
        n = norm(x)
    d = shell_divisor(x, n, sc, shell)
    return x if d is None else x / d


def _exact_sqnorm(x: Tensor) -> tuple[Tensor, Tensor]:
    """``|x|^2`` of float64 rows as ``hi + lo``, accurate to about 2^-100 relative."""
    return dd.sqnorm(dd.const(x))


def exact_beyond(x: Tensor, c: Tensor, m: float = 1.0, *, strict: bool = False) -> Tensor:
    r"""Boolean ``(..., 1)``: ``c |x|^2 >= m^2`` (``>`` if ``strict``) decided in (almost) exact
    arithmetic.

    ``m`` is a float64 number (the boundary 1, or the outermost shell ``1 - eps/2``). The rows
    far from the threshold are decided by an ordinary float64 sum; only the rows within
    :math:`(2D + 4)\,2^{-53}` of it (``D`` the dimension) are re-evaluated with an exactly
    rounded double-double sum of squares, against the exact double-double square of ``m``.

    Why that band suffices: with ``u = 2^-53``, each float64 square is within ``u`` of the
    exact one (exact for float32 or narrower data), a sum of ``D`` nonnegative terms in any
    order is within ``(D - 1) u`` of the exact one relatively, and the product by ``c`` adds
    ``u``: so :math:`|s - c|x|^2| \le (D + 1)\,u\,s`, at most ``2(D + 1) u`` for the
    ``s <= 2`` that can lie near ``m^2 <= 1``, and ``m * m`` rounds by at most ``u``. A row
    outside the band is decided correctly by the float64 sum. Points rounded onto the outermost
    float32 shell lie about ``2^-24`` from it, far outside the band, and skip the double-double
    pass; float64 ones lie within it.
    """
    with torch.no_grad():
        xd = x.detach().to(torch.float64)
        cd = c.detach().to(torch.float64).expand((*xd.shape[:-1], 1))
        s = sqnorm(xd) * cd
        out = s > m * m if strict else s >= m * m
        near = (s - m * m).abs() <= (2 * xd.shape[-1] + 4) * 2.0**-53
        if host_branches(x, c):
            if not bool(near.any()):
                return out
            rows = near.squeeze(-1)
            return out.masked_scatter(near, _exact_compare(xd[rows], cd[rows], m, strict))
        return torch.where(near, _exact_compare(xd, cd, m, strict), out)


def _exact_compare(xd: Tensor, cd: Tensor, m: float, strict: bool) -> Tensor:
    """``c |x|^2 >= m^2`` (``>`` if ``strict``) of float64 rows, in double-double."""
    hi, lo = _exact_sqnorm(xd)
    t, te = dd.two_prod(cd, hi)  # c * hi exactly
    mm = torch.full_like(cd, m)
    q, qe = dd.two_prod(mm, mm)  # m^2 exactly
    diff = (t - q) + (te - qe + cd * lo)
    return diff > 0 if strict else diff >= 0


def exact_outside(x: Tensor, c: Tensor) -> Tensor:
    """Boolean ``(..., 1)``: ``c |x|^2 >= 1`` decided in (almost) exact arithmetic
    (:func:`exact_beyond` with the boundary)."""
    return exact_beyond(x, c, 1.0)


def gap_precise(
    x: Tensor,
    c: Tensor,
    enabled: bool = True,
    limit: float | None = None,
    plain: Tensor | None = None,
) -> Tensor:
    """``B = 1 - c|x|^2`` accurate to a relative ulp of ``B`` itself (not of 1).

    The plain form (:func:`gap`) rounds ``|x|`` to a relative ulp, which leaves ``B`` with a
    relative error of about ``eps / B``: harmless for the well-conditioned ops, but amplified by
    ``exp(radius)`` in the maps and transports. In float64 this evaluates ``|x|^2`` and
    ``c |x|^2`` in double-double arithmetic; the value is the precise one while the gradient is
    that of the plain formula (the two differ by rounding only). Other dtypes, and
    ``enabled=False`` (float64 work on float32 data, where the plain form already has 29 spare
    bits), use :func:`gap` (with ``limit``). ``plain``, when given, is that plain gap, already
    computed by the caller (``gap(x, sqrt(c), limit)[2]``).
    """
    if plain is None:
        _, _, plain = gap(x, c.sqrt(), limit)
    if x.dtype != torch.float64 or not enabled:
        return plain
    with torch.no_grad():
        hi, lo = _exact_sqnorm(x.detach())
        cd = c.detach().expand_as(hi)  # c itself: sqrt(c)^2 would be off by an ulp
        p, pe = dd.two_prod(cd, hi)
        precise = ((1 - p) - pe) - cd * lo
        # Points beyond the boundary (a caller's error) get the outermost shell's gap.
        m = max_norm(x.dtype)
        precise = torch.where(precise > 0, precise, torch.full_like(precise, (1 - m) * (1 + m)))
    return plain + (precise - plain).detach()


def gap_wide(
    x: Tensor, c: Tensor, limit: float | None = None, plain: Tensor | None = None
) -> Tensor:
    """``B = 1 - c|x|^2`` of ``float32`` rows accurate to a relative ulp of ``B`` itself, the
    vectors staying in ``float32``.

    The plain form (:func:`gap`) rounds ``sqrt(c)|x|`` to a float32 ulp, which leaves ``B`` a
    relative error of ``eps / B``; the maps and transports multiply it by the length of the
    geodesic. Here ``|x|`` is reduced in float64 (``vector_norm`` with a float64 accumulator,
    no float64 copy of ``x``): the float32 coordinates are exact in float64, so ``u = sqrt(c)|x|``
    carries a relative error of about ``2^-52``, ``(1 - u)(1 + u)`` is free of cancellation
    (Sterbenz) and its rounding to float32 is the only error of size ``eps``. The value is the
    precise one, the gradient that of the plain float32 formula (they differ by rounding).
    Points beyond the boundary (a caller's error) get the gap of the outermost shell of the
    compute dtype (or of ``limit``). Other dtypes: :func:`gap_precise`. ``plain``: as there.
    """
    if x.dtype != torch.float32:
        return gap_precise(x, c, True, limit, plain)
    if plain is None:
        _, _, plain = gap(x, c.sqrt(), limit)
    with torch.no_grad():
        n: Tensor = torch.linalg.vector_norm(x.detach(), dim=-1, keepdim=True, dtype=torch.float64)
        m = max_norm(x.dtype) if limit is None else limit
        u = (c.detach().double().sqrt() * n).clamp(max=m)
        precise = ((1 - u) * (1 + u)).to(x.dtype)
    return plain + (precise - plain).detach()


def dd_expmap(
    x: Tensor, v: Tensor, c: Tensor, scale: Tensor | None = None, t: Tensor | None = None
) -> Tensor:
    """``expmap(x, v)`` for float64 rows, evaluated in double-double (values only).

    The exact map's condition number grows like ``exp(radius)``: the direction of the result
    magnifies any relative inconsistency between ``x``, the step ``w = tanh(t) v/(s_c|v|)`` and its
    gap ``1 - c|w|^2``. Here ``w`` is built from the gap ``g = 1 - tanh t = 2/(e^{2t}+1)`` (exact
    to a relative ulp whatever ``t``), ``|w|^2 = (1-g)^2/c`` and ``v/|v|`` in double-double, so
    that ``x (+) w`` is evaluated consistently to about 2^-100, and only the final quotient is
    rounded. ``scale`` (an exact power of two, default 1) is the factor by which the true
    tangent vector exceeds ``v``: a huge ``v`` is passed scaled down, so its squares stay finite.
    ``t`` (``>= 0``, (..., 1)), when given, is the step's argument itself (``x ⊕ tanh(t) v̂/s_c``,
    the unit-speed geodesic), instead of ``s_c |v| / B_x``. A base point on or beyond the
    boundary gets the gap of the outermost shell (as in :func:`gap_precise`).
    """
    with torch.no_grad():
        shape = torch.broadcast_shapes(x.shape, v.shape)  # type: ignore[no-untyped-call]
        if t is not None:
            shape = torch.broadcast_shapes(shape, t.shape)  # type: ignore[no-untyped-call]
        x, v = x.expand(shape), v.expand(shape)
        c = c.expand((*shape[:-1], 1))
        cdd = dd.const(c)
        one = dd.const(torch.ones_like(c))
        bx = dd.add(one, dd.neg(dd.mul(cdd, dd.sqnorm(dd.const(x)))))
        # Points on or beyond the boundary (a caller's error, or one moved onto the outermost
        # shell and rounded onto the boundary) get the shell's gap, as in gap_precise.
        m = max_norm(x.dtype)
        on = bx[0] <= 0
        bx = (torch.where(on, (1 - m) * (1 + m), bx[0]), torch.where(on, 0.0, bx[1]))
        nv = dd.sqrt(dd.sqnorm(dd.const(v)))
        if t is None:
            t = torch.sqrt(c) * dd.round_(nv) / dd.round_(bx)
            if scale is not None:
                t = t * scale
        else:
            t = t.expand((*shape[:-1], 1))
        e = torch.exp(-2 * t)
        g = 2 * e / (1 + e)
        # 1 - g = tanh t: from g in double-double for long steps (consistent with the gap), from
        # tanh itself for short ones (where g ~ 1 and 1 - g would lose its relative accuracy).
        omg = dd.add(one, dd.neg(dd.const(g)))
        short = t < 0.5
        omg = (torch.where(short, torch.tanh(t), omg[0]), torch.where(short, 0 * t, omg[1]))
        tau = dd.sqrt(dd.div(dd.mul(omg, omg), cdd))
        nz = nv[0] > 0
        safe = (torch.where(nz, nv[0], torch.ones_like(nv[0])), torch.where(nz, nv[1], 0 * nv[1]))
        vhat = dd.div(dd.const(v), safe)
        vhat = (torch.where(nz, vhat[0], 0 * v), torch.where(nz, vhat[1], 0 * v))
        s = dd.add(dd.const(x), dd.mul(tau, vhat))
        css = dd.mul(cdd, dd.sqnorm(s))
        num = dd.add(dd.mul(bx, s), dd.mul(css, dd.const(x)))
        den = dd.round_(css) + dd.round_(bx) * (g * (2 - g))
        den = den.clamp(min=torch.finfo(x.dtype).tiny)
        return dd.round_(num) / den
