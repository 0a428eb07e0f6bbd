r"""The functional API of the Poincaré ball, in the style of :mod:`torch.nn.functional`.

Conventions shared by every op:

* Vectors live on the **last dimension**; leading dimensions broadcast.
* The curvature ``c > 0`` is keyword-only: a positive finite float, or a positive tensor that
  broadcasts against ``x[..., :1]`` (0-d, or a trailing dimension of size 1). The ball is
  :math:`\{x : c\,|x|^2 < 1\}`; write :math:`s_c = \sqrt{c}`.
* Inputs must be real floating tensors. ``float32`` and ``float64`` compute in their own dtype,
  ``float16``/``bfloat16`` in ``float32``; under :func:`poincare.upcast` every op computes in the
  requested dtype. The maps and transports, whose condition number grows like :math:`e^{r}`,
  take the gap :math:`1 - c|x|^2` of ``float64`` inputs from a double-double norm and that of
  ``float32`` inputs from a float64 norm (:func:`poincare._numerics.gap_wide`); :func:`logmap`
  then computes ``float32`` in ``float32``, and :func:`expmap` (eager CPU code) too on its
  short and its saturated steps; otherwise (Möbius addition, :func:`gyration`, :func:`transp`,
  :func:`transp0`, :func:`egrad2rgrad`, traced code, half-precision data) ``float32`` work is
  computed in ``float64``. Results always come back
  in the (promoted) dtype of the inputs, and point-valued results are passed through
  :func:`project` in that dtype, so they are strictly inside the ball *as stored*.
* Bad arguments raise ``TypeError``/``ValueError`` naming the argument: a non-tensor or an
  integer/complex dtype, ``c <= 0`` or non-finite ``c`` (any real number is a number: NumPy
  scalars included, ``bool`` not), a tensor ``c`` or batch shapes that do not broadcast,
  mismatched last dimensions.
* Points on or outside the ball are a caller's error (:func:`check_point` detects them). Every op
  still returns finite values for them, whatever their size: the conformal factor is evaluated
  with the point's scaled norm clamped to the outermost representable shell ``1 - eps/2``, and
  a point outside the ball is moved radially onto that shell before any product of its
  coordinates is formed (:func:`poincare._numerics.onto_shell`), so that the ops that document
  it (:func:`logmap0`, :func:`logmap`, :func:`expmap`, the model conversions, the gyroplane
  distance, geodesics, the Fréchet mean) give the result of :func:`project` of the point.

Numerics. Every formula below is written so that no subtraction of nearly equal quantities
occurs anywhere in the ball. The key identities (with :math:`B_x = 1 - c|x|^2`, always formed as
:math:`(1 - s_c|x|)(1 + s_c|x|)`):

* :math:`1 + 2c\langle x,y\rangle + c^2|x|^2|y|^2 = c|x+y|^2 + B_x B_y`,
* :math:`1 + 2c\langle x,y\rangle + c|y|^2 = c|x+y|^2 + B_x`,
* :math:`1 - c\langle x,y\rangle = (B_x + B_y + c|x-y|^2)/2`,
* :math:`\cosh d(x,y) - 1 = 2c|x-y|^2/(B_x B_y)`, hence
  :math:`d(x,y) = \tfrac{2}{s_c}\operatorname{asinh}\big(s_c|x-y|/\sqrt{B_x B_y}\big)`,

which together keep every op within a few hyperbolic ULPs up to the last representable shell.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _dd as dd
from ._checks import (
    Curvature,
    as_curvature,
    check_curvature,
    check_curvature_batch,
    check_dim,
    check_last_dims,
    check_tensor,
    host_branches,
    is_real,
    prepare,
)
from ._fused import (
    expmap0_add_from_lorentz,
    expmap0_add_lorentz_raw,
    expmap0_add_raw,
    saturation,
)
from ._numerics import (
    artanh_over,
    asinh,
    asinh_over,
    dd_expmap,
    dot,
    exact_beyond,
    exact_outside,
    gap,
    gap_precise,
    gap_wide,
    max_norm,
    norm,
    onto_shell,
    pow2_factors,
    sech2,
    shell_divisor,
    sqnorm,
    tanh,
    tanh_over,
)

__all__ = [
    "check_point",
    "conformal_factor",
    "dist",
    "dist0",
    "dist2plane",
    "egrad2rgrad",
    "einstein_midpoint",
    "expmap",
    "expmap0",
    "expmap0_add",
    "expmap0_add_lorentz",
    "frechet_mean",
    "geodesic",
    "geodesic_unit",
    "gyration",
    "klein_to_poincare",
    "logmap",
    "logmap0",
    "lorentz_to_poincare",
    "max_radius",
    "mobius_add",
    "mobius_fn_apply",
    "mobius_matvec",
    "mobius_scalar_mul",
    "mobius_sub",
    "pairwise_dist",
    "poincare_to_klein",
    "poincare_to_lorentz",
    "project",
    "transp",
    "transp0",
]


# ---------------------------------------------------------------------------------------------
# Projection and containment
# ---------------------------------------------------------------------------------------------


def _project(x: Tensor, c: Tensor) -> Tensor:
    """Project ``x`` (in its own dtype) onto ``{sqrt(c)|x| <= 1 - eps/2}``, strictly inside."""
    dtype = x.dtype
    m = max_norm(dtype)
    host = host_branches(x, c)
    if host:
        # Fast path: a computed norm is within a few ulps of the exact one, so rows with
        # sqrt(c)|x| <= 1 - 16 eps in their own dtype are strictly inside and left as they are.
        with torch.no_grad():
            # (a plain norm: one that overflows sends the call to the exact path below, and one
            # that underflows belongs to a point near the origin, which is inside)
            scaled = torch.linalg.vector_norm(x.detach(), dim=-1, keepdim=True) * c.detach().sqrt()
            if not bool((scaled > 1 - 16 * torch.finfo(dtype).eps).any()):
                return x
    xd, cd = x.to(torch.float64), c.to(torch.float64)
    n = norm(xd) * torch.sqrt(cd)
    # Beyond the outermost shell, decided exactly: a rounded norm could move a point that lies
    # exactly on or inside the shell (which must come back bit for bit).
    over = exact_beyond(xd, cd, m, strict=True)
    if host and not bool(over.any()):
        # No row beyond: the traced form below gives x itself, bit for bit (scale 1, and the
        # retries test the same rows against the same shell).
        return x
    scale = torch.where(over, m / torch.where(over, n, torch.ones_like(n)), torch.ones_like(n))
    y = (xd * scale).to(dtype)
    # Rounding the rescaled coordinates can carry a point beyond the outermost shell (or across
    # the boundary): retry those with targets 1, 2, 4, then 64 half-ulps further in until the
    # stored point lies on or within the shell, so that a projected point is its own
    # projection. Eager code retries and tests again only the rows still beyond, and stops when
    # none is left; traced code (which cannot stop early) takes every step on every row,
    # changing the same rows, so the two agree bit for bit.
    out = exact_beyond(y, cd, m, strict=True)
    if host:
        return _retry_rows(y, xd, n, cd, out, m)
    for i, target in enumerate(_targets(m, dtype)):
        if i:
            out = exact_beyond(y, cd, m, strict=True)
        y = torch.where(out, _rescaled(xd, n, target, dtype), y)
    return y


def _targets(m: float, dtype: torch.dtype) -> list[float]:
    """The retry targets of :func:`_project`: ``m`` less 1, 2, 4 and 64 half-ulps of ``dtype``."""
    step = torch.finfo(dtype).eps / 2
    return [m * (1 - k * step) for k in (1, 2, 4, 64)]


def _retry_rows(y: Tensor, xd: Tensor, n: Tensor, cd: Tensor, out: Tensor, m: float) -> Tensor:
    """The retries of :func:`_project` in eager code, on the rows still beyond only: ``y``
    (fresh, rewritten in place), ``xd`` its float64 source, ``n`` the scaled norms, ``cd`` the
    curvature, ``out`` the rows of ``y`` beyond the shell ``m`` (all ``(..., 1)`` but ``xd``)."""
    lead, dim = y.shape[:-1], y.shape[-1]
    y2, xd2 = y.view(-1, dim), xd.reshape(-1, dim)
    n2, cd2 = (t.expand(*lead, 1).reshape(-1, 1) for t in (n, cd))
    idx = out.reshape(-1).nonzero().squeeze(-1)
    for target in _targets(m, y.dtype):
        if not idx.numel():
            break
        retry = _rescaled(xd2[idx], n2[idx], target, y.dtype)
        y2[idx] = retry
        idx = idx[exact_beyond(retry, cd2[idx], m, strict=True).reshape(-1)]
    return y


def _rescaled(xd: Tensor, n: Tensor, target: float, dtype: torch.dtype) -> Tensor:
    """Rows ``xd`` (float64) with scaled norm ``n > target`` rescaled to ``target``, in
    ``dtype``; the others unchanged."""
    big = n > target
    return (xd * torch.where(big, target / torch.where(big, n, torch.ones_like(n)), 1.0)).to(dtype)


def _limit(out: torch.dtype) -> float | None:
    """The clamp of the scaled norm for data of dtype ``out``: the outermost shell of a
    half-precision dtype (computed in float32, a boundary point of float16 data would get a
    conformal factor of 3e7, which overflows float16), else that of the compute dtype."""
    return max_norm(out) if out in (torch.float16, torch.bfloat16) else None


def _exact_c(c: object, device: torch.device) -> Tensor:
    """The caller's (already validated) curvature as float64, without validating it again."""
    if isinstance(c, Tensor):
        return c.detach().to(dtype=torch.float64, device=device)
    return torch.tensor(float(c), dtype=torch.float64, device=device)  # type: ignore[arg-type]


def _finish_point(r: Tensor, dtype: torch.dtype, c: object) -> Tensor:
    """Cast a computed point to the caller's dtype and make it strictly interior there.

    ``c`` is the caller's curvature: the ball is decided with its exact (float64) value, not
    with the compute dtype's rounding of it. The projection acts here as the last rounding of
    the result onto the representable ball: its value is kept, but gradients are those of the
    op's formula (a straight-through step), so a result that rounds onto the outermost shell
    still has the derivative of the exact op rather than that of a radial clamp.
    """
    cast = r.to(dtype)
    values = cast.detach()
    projected = _project(values, _exact_c(c, r.device))
    if projected is values:
        # Every row was already strictly inside (the eager fast path of _project returns its
        # argument itself): the straight-through sum below would add exact zeros.
        return cast
    return projected + (cast - values)  # exactly the projected values


def project(x: Tensor, *, c: Curvature = 1.0) -> Tensor:
    r"""Pull ``x`` strictly inside the ball, onto the largest representable norm.

    Points with :math:`s_c|x| \le 1 - \epsilon/2` (``eps`` of ``x``'s dtype) that are strictly
    inside are returned unchanged, bit for bit. Points beyond that shell, on the boundary or
    outside it are rescaled radially onto the shell :math:`s_c|x| = 1 - \epsilon/2`: the
    outermost float norm below the boundary, whose distance from the origin is
    :func:`max_radius`. Containment is decided in (almost) exact arithmetic, so the result
    satisfies :math:`c|x|^2 < 1` for the exact values of its stored coordinates.

    Args:
        x: ``(..., D)`` points.
        c: curvature.

    Returns:
        ``(..., D)`` in ``x``'s dtype. Non-finite coordinates are not repaired (use
        :func:`check_point` to reject them).

    Raises:
        TypeError, ValueError: on a non-floating ``x`` or an invalid ``c`` (a tensor ``c`` must
            broadcast against ``x[..., :1]``).
    """
    check_tensor("x", x)
    cc = as_curvature(c, torch.float64, x.device)
    check_curvature_batch(c, tuple(x.shape[:-1]), "x's", "x[..., :1]")
    return _project(x, cc)


def check_point(x: Tensor, *, c: Curvature = 1.0) -> None:
    r"""Raise ``ValueError`` unless every point of ``x`` is finite and strictly inside the ball.

    The test :math:`c|x|^2 < 1` is evaluated in (almost) exact arithmetic on the stored values.

    Args:
        x: ``(..., D)`` points.
        c: curvature.

    Raises:
        TypeError: ``x`` is not a real floating tensor.
        ValueError: some coordinate is NaN or infinite, or some point is on or outside the
            boundary (the message counts them and gives the largest :math:`s_c|x|`).
    """
    check_tensor("x", x)
    cc = as_curvature(c, torch.float64, x.device)
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).any(dim=-1).sum())
        raise ValueError(f"x has {bad} point(s) with non-finite coordinates")
    out = exact_outside(x, cc)
    if bool(out.any()):
        worst = float(
            (torch.linalg.vector_norm(x.double(), dim=-1, keepdim=True) * cc.sqrt()).max()
        )
        raise ValueError(
            f"x has {int(out.sum())} point(s) on or outside the Poincaré ball "
            f"(largest sqrt(c)*|x| = {worst!r}; points must satisfy c*|x|^2 < 1)"
        )


def max_radius(dtype: torch.dtype, *, c: float = 1.0) -> float:
    r"""The largest hyperbolic distance from the origin that ``dtype`` can represent.

    :math:`R = \tfrac{2}{s_c}\operatorname{artanh}(1 - \epsilon/2)`, the distance of the outermost
    shell that :func:`project` maps onto: about 17.33 for ``float32`` and 37.43 for ``float64``
    at ``c = 1`` (8.3 for ``float16``, 6.2 for ``bfloat16``).

    Raises:
        TypeError: ``dtype`` is not a floating dtype.
        ValueError: ``c`` is not a positive finite number.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    return 2.0 / math.sqrt(check_curvature(c)) * math.atanh(max_norm(dtype))


def conformal_factor(x: Tensor, *, c: Curvature = 1.0, keepdim: bool = True) -> Tensor:
    r"""The conformal factor :math:`\lambda_x = 2 / (1 - c|x|^2)`.

    Args:
        x: ``(..., D)`` points.
        c: curvature.
        keepdim: keep the reduced last dimension (``(..., 1)``, the default) or drop it.

    Returns:
        ``(..., 1)`` (or ``(...)``), at most :math:`4/\epsilon` on the outermost shell.
    """
    out, _, cc, (xx,) = prepare(c, x=x)
    _, _, b = gap(xx, cc.sqrt(), _limit(out))
    lam = (2 / b).to(out)
    return lam if keepdim else lam.squeeze(-1)


# ---------------------------------------------------------------------------------------------
# Gyrovector operations
# ---------------------------------------------------------------------------------------------


def _shell_gaps(
    x: Tensor, c: Tensor, precise: bool, limit: float | None = None
) -> tuple[Tensor, Tensor]:
    """The gap of ``x`` (:func:`poincare._numerics.gap_precise`) and ``x`` with its rows outside
    the ball moved onto the outermost shell (:func:`poincare._numerics.onto_shell`; their gap
    is the shell's), from one norm: the points of an op that treats points outside the ball as
    lying on the outermost shell, and forms no square of their (possibly huge) norms."""
    sc = c.sqrt()
    n, _, plain = gap(x, sc, limit)
    return gap_precise(x, c, precise, limit, plain), onto_shell(x, sc, limit, n)


def _mobius_add(x: Tensor, y: Tensor, c: Tensor, precise: bool = False) -> Tensor:
    bx, x = _shell_gaps(x, c, precise)
    by, y = _shell_gaps(y, c, precise)
    s = x + y
    css = c * sqnorm(s)
    return (bx * s + css * x) / (css + bx * by)


def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    """``<a, b>`` over the last dimension, kept: ``(..., 1)``, as a batched matrix product (no
    ``(..., D)`` temporary: the product of a large elementwise ``a * b`` costs more than the
    whole reduction)."""
    return torch.matmul(a.unsqueeze(-2), b.unsqueeze(-1)).squeeze(-1)


class _MobiusAdd(torch.autograd.Function):
    r"""``x ⊕ y = (B_x s + q x) / D`` with ``s = x + y``, ``q = c|s|^2``, ``D = q + B_x B_y``
    (the stable form of :func:`mobius_add`), with its derivative written down, for eager CPU
    code with a constant curvature.

    The forward pass is the same formula as :func:`_mobius_add`, arranged as two row scalars
    times two vectors, ``p = (B_x/D) s + (q/D) x``: both coefficients are quotients of sums of
    non-negative terms, so each is accurate to a few ulps, and the vector sum is that of the
    stable form. Given the gaps ``B_x``, ``B_y`` (values; ``dB_x = -2c<x, dx>``) and
    :math:`L = \langle g, p\rangle`, with :math:`g_p = \langle g,p\rangle`,
    :math:`g_s = \langle g,s\rangle`, :math:`g_x = \langle g,x\rangle`:

    .. math::
        \nabla_y L = \frac{B_x}{D} g + \frac{2c(g_x - g_p)}{D} s + \frac{2c\,g_p B_x}{D} y,
        \qquad
        \nabla_x L = \frac{B_x + q}{D} g + \frac{2c(g_x - g_p)}{D} s
                     - \frac{2c(g_s - g_p B_y)}{D} x,

    from :math:`dL = \langle g, dN\rangle/D - g_p\,dD/D` with :math:`N = B_x s + q x`. The
    only differences, :math:`g_x - g_p = \langle g, x - p\rangle` and
    :math:`g_s - g_p B_y`, are of row scalars of size :math:`|g|`: their rounding moves the
    gradient by ``eps |g| |s| / D``, at most the change of the exact gradient when an input moves
    by one float step (``eps / B``), which is what a backward-stable gradient may differ by.
    Every vector is formed once, in place where it is not saved (three ``(..., D)`` tensors in
    all, against a dozen for the composition of autograd's ops).
    """

    @staticmethod
    def forward(x: Tensor, y: Tensor, bx: Tensor, by: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        s = x + y
        q = c * _rowdot(s, s)
        den = q + bx * by
        p = torch.mul(s, bx / den).addcmul_(x, q / den)
        return p, s

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        x, y, bx, by, c = inputs
        p, s = output
        ctx.save_for_backward(x, y, bx, by, c, p, s)
        ctx.mark_non_differentiable(s)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: Tensor, _: Any) -> tuple[Tensor | None, ...]:
        x, y, bx, by, c, p, s = ctx.saved_tensors
        gp, gs, gx = _rowdot(g, p), _rowdot(g, s), _rowdot(g, x)
        q = c * _rowdot(s, s)
        inv = 1 / (q + bx * by)
        two_c = 2 * c * inv
        common = torch.mul(s, two_c * (gx - gp)).addcmul_(g, bx * inv)
        grad_x = torch.addcmul(common, g, q * inv).addcmul_(x, -two_c * (gs - gp * by))
        grad_y = common.addcmul_(y, two_c * gp * bx)
        return grad_x, grad_y, None, None, None


def _mobius_add_eager(x: Tensor, y: Tensor, c: Tensor, precise: bool) -> Tensor | None:
    """:func:`_mobius_add` through :class:`_MobiusAdd` where it applies (eager CPU code, a
    curvature without gradient, every point within twice the ball's radius, so that no square
    overflows); None elsewhere (the caller then takes the autograd composition)."""
    if c.requires_grad or not host_branches(x, y, c):
        return None
    sc = c.sqrt()
    nx, _, bx = gap(x, sc)
    ny, _, by = gap(y, sc)
    # (per-row scaled norms: a per-row curvature scales each row by its own sqrt(c))
    if x.numel() == 0 or y.numel() == 0 or bool(((nx * sc).amax() > 2) | ((ny * sc).amax() > 2)):
        return None
    if precise:
        bx, by = gap_precise(x, c), gap_precise(y, c)
    same = x.shape == y.shape and c.dim() == 0
    shape = x.shape if same else torch.broadcast_shapes(x.shape, y.shape, c.shape)  # type: ignore[no-untyped-call]
    batch = (*shape[:-1], 1)
    bx, by = bx.detach().expand(batch), by.detach().expand(batch)
    p: Tensor = _MobiusAdd.apply(x.expand(shape), y.expand(shape), bx, by, c.detach())[0]  # type: ignore[no-untyped-call]
    return p


def mobius_add(x: Tensor, y: Tensor, *, c: Curvature = 1.0) -> Tensor:
    r"""Möbius addition :math:`x \oplus_c y`.

    .. math::
        x \oplus y = \frac{(1 + 2c\langle x,y\rangle + c|y|^2)\,x + (1 - c|x|^2)\,y}
                          {1 + 2c\langle x,y\rangle + c^2|x|^2|y|^2}
                   = \frac{B_x (x+y) + c|x+y|^2\,x}{c|x+y|^2 + B_x B_y},

    the second form (used here) having only sums of non-negative terms. ``float32`` inputs are
    computed in ``float64``: opposed inputs far out lose their cancelling terms in float32. Eager
    CPU code with a constant curvature computes through :class:`_MobiusAdd`, whose derivative
    is written down (its only differences are of row scalars, whose rounding is within what one
    float step of an input changes) and which forms three vectors instead of a dozen.

    Args:
        x: ``(..., D)`` points.
        y: ``(..., D)`` points (broadcast against ``x``).
        c: curvature.

    Returns:
        ``(..., D)`` point strictly inside the ball.

    Raises:
        TypeError, ValueError: bad dtypes, mismatched last dimensions, invalid ``c``.
    """
    check_last_dims(x=x, y=y)
    return _finish_point(*_mobius_add_op(x, y, c), c)


def _mobius_add_op(x: Tensor, y: Tensor, c: Curvature) -> tuple[Tensor, torch.dtype]:
    """``x ⊕ y`` in the compute dtype, and the dtype of the result: ``float32`` data computed in
    ``float64`` (opposed far-out inputs lose their cancelling terms in float32), through
    :class:`_MobiusAdd` in eager CPU code, through autograd's composition in traced code."""
    out, _, cc, (xx, yy) = prepare(c, wide=True, x=x, y=y)
    fast = _mobius_add_eager(xx, yy, cc, out == torch.float64)
    if fast is not None:
        return fast, out
    return _mobius_add(xx, yy, cc, out == torch.float64), out


def mobius_sub(x: Tensor, y: Tensor, *, c: Curvature = 1.0) -> Tensor:
    r"""Möbius subtraction :math:`x \ominus_c y = x \oplus_c (-y)`. Shapes as :func:`mobius_add`."""
    check_last_dims(x=x, y=y)
    return _finish_point(*_mobius_add_op(x, -y, c), c)


def _scalar(name: str, r: object, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A scalar argument ``name`` (a real number, or a floating tensor that is 0-d or has a
    trailing size 1) as a tensor of ``dtype``, clamped to its finite range: a factor or time
    beyond it saturates every op anyway, so a Python integer beyond the float range is taken as
    the largest float of its sign.

    Raises:
        TypeError: ``r`` is neither a real number (:func:`poincare._checks.is_real`) nor a
            floating tensor.
        ValueError: ``r`` is not finite (a tensor's values are checked where
            :func:`poincare._checks.host_branches` allows it), or a tensor ``r`` has a trailing
            size other than 1.
    """
    if isinstance(r, Tensor):
        if not r.dtype.is_floating_point:
            raise TypeError(f"{name} must be a float or a floating tensor, got {r.dtype}")
        if r.dim() > 0 and r.shape[-1] != 1:
            raise ValueError(
                f"{name} must be a scalar or broadcast against x[..., :1] (trailing size 1), "
                f"got shape {tuple(r.shape)}"
            )
        if host_branches(r):
            with torch.no_grad():
                if not bool(torch.isfinite(r).all()):
                    raise ValueError(f"{name} must be finite, got a tensor with other values")
        big = torch.finfo(dtype).max
        return r.to(dtype=dtype, device=device).clamp(-big, big)
    if not is_real(r):
        raise TypeError(f"{name} must be a real number or a tensor, got {type(r).__name__}")
    try:
        value = float(r)
    except OverflowError:  # an integer beyond the float range: finite, and saturates like one
        value = torch.finfo(torch.float64).max * (-1.0 if r < 0 else 1.0)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {r}")
    # Beyond the dtype's range every factor saturates anyway: clamp rather than overflow to inf.
    big = torch.finfo(dtype).max
    return torch.tensor(max(-big, min(big, value)), dtype=dtype, device=device)


def mobius_scalar_mul(r: float | Tensor, x: Tensor, *, c: Curvature = 1.0) -> Tensor:
    r"""Möbius scalar multiplication :math:`r \otimes_c x`.

    .. math::
        r \otimes x = \tanh\!\big(r \operatorname{artanh}(s_c|x|)\big)\,\frac{x}{s_c|x|}
                    = r\,h\big(r \operatorname{artanh}(s_c|x|)\big)\,g(s_c|x|)\,x,

    with :math:`h(t) = \tanh(t)/t` and :math:`g(u) = \operatorname{artanh}(u)/u`, both equal to
    1 at 0, so the origin needs no special case. The hyperbolic radius is scaled by ``|r|``.

    Args:
        r: a real number, or a tensor broadcastable to ``x[..., :1]``.
        x: ``(..., D)`` points.
        c: curvature.

    Returns:
        ``(..., D)`` point strictly inside the ball (radii beyond :func:`max_radius` are clipped
        to the outermost shell).
    """
    out, comp, cc, (xx,) = prepare(c, x=x)
    rr = _scalar("r", r, comp, xx.device)
    if isinstance(r, Tensor):
        out = torch.promote_types(out, r.dtype)
    _, u, _ = gap(xx, cc.sqrt())
    a = torch.atanh(u)
    ra = rr * a
    # |r a| > 1: tanh(r a) x/u, so that no huge r (whose r a overflows) multiplies a vanishing
    # tanh(r a)/(r a); the other form is exact at x = 0 and r = 0. Both at safe arguments.
    big = ra.abs() > 1
    short = rr * tanh_over(torch.where(big, torch.zeros_like(ra), ra)) * artanh_over(u)
    long = tanh(ra) / torch.where(big, u, torch.ones_like(u))
    return _finish_point(torch.where(big, long, short) * xx, out, c)


def mobius_matvec(m: Tensor, x: Tensor, *, c: Curvature = 1.0) -> Tensor:
    r"""Möbius matrix-vector product :math:`M \otimes_c x`.

    .. math::
        M \otimes x = \tanh\!\Big(\frac{|Mx|}{|x|}\operatorname{artanh}(s_c|x|)\Big)
                      \frac{Mx}{s_c|Mx|} = h(t)\,g(s_c|x|)\,Mx,\quad
        t = s_c |Mx|\, g(s_c|x|),

    equal to :math:`\exp_0(M \log_0 x)`; it is the origin when :math:`Mx = 0`.

    Args:
        m: ``(out, in)`` matrix, laid out like the weight of :func:`torch.nn.functional.linear`.
        x: ``(..., in)`` points.
        c: curvature.

    Returns:
        ``(..., out)`` point strictly inside the ball.

    Raises:
        ValueError: ``m`` is not 2-D, ``m.shape[1] != x.shape[-1]``, or a tensor ``c`` does not
            broadcast against ``x[..., :1]``.
    """
    check_tensor("m", m)
    check_tensor("x", x)
    if m.dim() != 2:
        raise ValueError(f"m must be a 2-D (out, in) matrix, got shape {tuple(m.shape)}")
    if m.shape[1] != x.shape[-1]:
        raise ValueError(f"m has {m.shape[1]} input columns but x has last dimension {x.shape[-1]}")
    out, _, cc, (mm, xx) = prepare(c, broadcast=False, m=m, x=x)
    check_curvature_batch(c, tuple(x.shape[:-1]), "x's", "x[..., :1]")
    sc = cc.sqrt()
    _, u, _ = gap(xx, sc)
    # M scaled by an exact power of two (undone in the length, never in the direction): a
    # matrix of any finite size gives a finite product.
    s1, s2 = pow2_factors(mm.detach().abs().amax())
    # and each row of x by an exact power of two too (undone in the length): a subnormal x
    # would otherwise give a product M x that keeps only the few bits of x
    r1, r2 = pow2_factors(xx.detach().abs().amax(dim=-1, keepdim=True))
    gmx = artanh_over(u) * F.linear(xx * r1 * r2, mm * s1 * s2)
    sigma = 1 / (s1 * s2) / r1 / r2  # (r1 r2 of a subnormal row would overflow)
    return _finish_point(_tanh_map(gmx, norm(gmx), sc, sigma), out, c)


def _gyration(a: Tensor, b: Tensor, u: Tensor, c: Tensor, precise: bool) -> Tensor:
    # gyr[a,b] is the rotation, in the plane spanned by a and b, by twice the argument of
    # z = (1 + c<a,b>) + i c |a ^ b|. Written with s = a + b (so that a ~ -b cancels nothing):
    #   Re z = 1 + c<a,b> = (B_a + B_b + c|s|^2) / 2,
    #   |z|^2 = (1 + c<a,b>)^2 + c^2 |a ^ b|^2 = 1 + 2c<a,b> + c^2|a|^2|b|^2 = c|s|^2 + B_a B_b
    # (a sum of non-negative terms, where the Lagrange form |a|^2|s|^2 - <a,s>^2 of the wedge
    # would cancel). Points outside the ball (a caller's error) act from the outermost shell.
    ba, a = _shell_gaps(a, c, precise)
    bb, b = _shell_gaps(b, c, precise)
    s = a + b
    ss = sqnorm(s)
    aa = sqnorm(a)
    as_ = dot(a, s)
    re = (ba + bb + c * ss) / 2
    den = c * ss + ba * bb
    au = dot(a, u)
    su = dot(s, u)
    rot = re * (a * su - s * au)
    proj = a * (ss * au - as_ * su) + s * (aa * su - as_ * au)
    return u + (2 * c / den) * (rot - c * proj)


def gyration(a: Tensor, b: Tensor, u: Tensor, *, c: Curvature = 1.0) -> Tensor:
    r"""The gyration :math:`\operatorname{gyr}[a,b]\,u = \ominus(a \oplus b) \oplus (a \oplus (b
    \oplus u))`.

    It is the rotation, in the plane spanned by ``a`` and ``b``, by the angle
    :math:`2\arg\big(1 + c\langle a,b\rangle + i\,c|a\wedge b|\big)`; equivalently (Ungar)

    .. math::
        \operatorname{gyr}[a,b]u = u + 2\frac{\alpha a + \beta b}{1 + 2c\langle a,b\rangle +
        c^2|a|^2|b|^2},\ \alpha = -c^2\langle a,u\rangle|b|^2 + c\langle b,u\rangle +
        2c^2\langle a,b\rangle\langle b,u\rangle,\ \beta = -c^2\langle b,u\rangle|a|^2 -
        c\langle a,u\rangle,

    evaluated here in terms of ``s = a + b`` so that nearly opposite ``a``, ``b`` near the
    boundary lose nothing. ``u`` is any vector (a tangent vector or a point); its norm is
    preserved to rounding, and when ``u`` is a point strictly inside the ball so is the result
    (a rounding that would carry it past the outermost shell is undone by :func:`project`).

    Args:
        a, b: ``(..., D)`` points.
        u: ``(..., D)`` vectors.
        c: curvature.

    Returns:
        ``(..., D)``.
    """
    check_last_dims(a=a, b=b, u=u)
    out, _, cc, (aa, bb, uu) = prepare(c, wide=True, a=a, b=b, u=u)
    r = _gyration(aa, bb, uu, cc, out == torch.float64).to(out)
    # A rotation never leaves the ball: keep rotated points strictly inside after rounding.
    c64 = _exact_c(c, r.device)
    inside = ~exact_outside(u, c64)
    return torch.where(inside, _project(r, c64), r)


# ---------------------------------------------------------------------------------------------
# Exponential and logarithmic maps
# ---------------------------------------------------------------------------------------------


def _tanh_map(v: Tensor, n: Tensor, sc: Tensor, sigma: Tensor | None = None) -> Tensor:
    r""":math:`\tanh(t)\,\hat v/s_c` with :math:`t = s_c\sigma n` and :math:`\hat v = v/n`
    (``n = |v|``, ``sigma`` an exact power-of-two scale of ``v``, default 1): the point at
    hyperbolic radius :math:`2t/s_c` in the direction of ``v``.

    Short steps (``t <= 1``) use the factor :math:`\tanh(t)/t \cdot \sigma`, exact at
    ``v = 0``; long ones :math:`\tanh(t)/(s_c n)`, which never multiplies a vanishing
    :math:`\tanh(t)/t` by a huge vector: any finite ``t`` (even one that overflows to ``inf``)
    gives a point on the outermost shell, not the origin. Both factors are evaluated at safe
    arguments, so gradients stay finite; the vector is multiplied once.
    """
    t = sc * n if sigma is None else sc * sigma * n
    big = t > 1
    one = torch.ones_like(t)
    short = tanh_over(torch.where(big, 0 * one, t))
    if sigma is not None:
        short = short * sigma
    # a norm whose product with s_c overflows (|v| near the largest float) is taken with v
    # scaled by the exact power of two 2^-64 (else s_c |v| = inf would give the origin)
    huge = sc * n > torch.finfo(n.dtype).max / 2
    if host_branches(v, n) and not bool(huge.any()):
        # eager code without such a row: one factor per row, the vector multiplied once
        return torch.where(big, tanh(t) / (sc * torch.where(big, n, one)), short) * v
    p = torch.where(huge, 2.0**-64 * one, one)
    # one factor per row, so that the vector is multiplied once (by an exact power of two
    # before, where huge)
    long = tanh(t) / (sc * torch.where(big, n * p, one))
    return torch.where(big, long, short) * (v * p)


def expmap0(v: Tensor, *, c: Curvature = 1.0) -> Tensor:
    r"""Exponential map at the origin: :math:`\exp_0(v) = \tanh(s_c|v|)\,v/(s_c|v|)`.

    The hyperbolic distance of the result from the origin is :math:`2|v|`.

    Args:
        v: ``(..., D)`` tangent vectors at the origin (any size: long vectors land on the
            outermost representable shell).
        c: curvature.

    Returns:
        ``(..., D)`` point strictly inside the ball.
    """
    out, _, cc, (vv,) = prepare(c, v=v)
    return _finish_point(_tanh_map(vv, norm(vv), cc.sqrt()), out, c)


def expmap0_add(u: Tensor, b: Tensor, *, c: Curvature = 1.0) -> Tensor:
    r"""The point :math:`\exp_0(u) \oplus_c \exp_0(b)` of two tangent vectors at the origin.

    It is ``mobius_add(expmap0(u), expmap0(b))`` (the Möbius linear layer
    :math:`(W \otimes x) \oplus \exp_0(\text{bias})` with :math:`u = W\log_0 x`), in one
    closed form: with :math:`t = s_c|u|`, :math:`p = \exp_0(u)`, :math:`S = p + \exp_0(b)` and
    :math:`q = c|S|^2`,

    .. math:: \exp_0(u) \oplus_c \exp_0(b) = \frac{S + q\,\frac{\sinh t\cosh t}{t}\,u}
              {q\cosh^2 t + 1/\cosh^2(s_c|b|)},

    a ratio of sums of non-negative terms: no gap of a rounded point is formed, so nothing
    saturates when :math:`|u|` exceeds the representable radius (the result then lies on the
    outermost shell, as ``expmap0`` of such a vector does). One autograd node, whose backward
    pass (written down in :mod:`poincare._fused`) also differentiates ``c``. As in
    :func:`mobius_add`, ``float32`` inputs are computed in ``float64`` (far out, the radial
    derivative comes out of terms :math:`\lambda` times larger); ``float64`` inputs take the
    same form multiplied through by :math:`\lambda_b`, the Lorentz coordinates of the sum
    mapped back (:func:`poincare._fused.expmap0_add_from_lorentz`).

    Args:
        u: ``(..., D)`` tangent vectors at the origin.
        b: ``(..., D)`` tangent vectors at the origin (broadcast against ``u``).
        c: curvature.

    Returns:
        ``(..., D)`` point strictly inside the ball.

    Raises:
        TypeError, ValueError: bad dtypes, mismatched last dimensions, invalid ``c``.
    """
    check_last_dims(u=u, b=b)
    out, _, cc, (uu, bb) = prepare(c, wide=True, u=u, b=b)
    ck = _kernel_c(c, cc)
    if out == torch.float64:
        return _finish_point(expmap0_add_from_lorentz(uu, bb, c=ck), out, c)
    return _finish_point(expmap0_add_raw(uu, bb, c=ck), out, c)


def _kernel_c(c: object, cc: Tensor) -> float | Tensor:
    """The curvature for the fused kernels: the caller's Python number as a float (the kernels
    then skip the factors of ``c = 1`` and keep it off the autograd graph), else the validated
    tensor ``cc``."""
    return cc if isinstance(c, Tensor) else float(c)  # type: ignore[arg-type]


def expmap0_add_lorentz(u: Tensor, b: Tensor | None = None, *, c: Curvature = 1.0) -> Tensor:
    r"""Lorentz coordinates of :math:`y = \exp_0(u) \oplus_c \exp_0(b)`, straight from the
    tangent vectors.

    It is ``poincare_to_lorentz(expmap0_add(u, b))`` (``poincare_to_lorentz(expmap0(u))``
    without ``b``) in one closed form: with :math:`S = \exp_0(u) + \exp_0(b)`,
    :math:`q = c|S|^2`, :math:`t = s_c|u|` and :math:`\lambda_b = 2\cosh^2(s_c|b|)` (2
    without ``b``),

    .. math:: h_0 = \frac{1 + \lambda_b q\cosh^2 t}{s_c},\qquad
              h_{1:} = \lambda_b\Big(S + q\,\frac{\sinh t\cosh t}{t}\,u\Big),

    sums of non-negative terms accurate to a few ulps relative; as in
    :func:`poincare_to_lorentz`, the stored time coordinate is then taken from the stored space
    coordinates, rounded upwards, so that the stored point is never space-like (its gradient
    is that of the closed form). The point is never formed in
    the ball, so the coordinates of points beyond the representable radius of the ball's
    coordinates are still exact (up to the saturation of ``expmap0`` itself at
    :math:`t = \operatorname{artanh}(1 - \epsilon/2)`). One autograd node (backward in
    :mod:`poincare._fused`, ``c`` included).

    Args:
        u: ``(..., D)`` tangent vectors at the origin.
        b: ``(..., D)`` tangent vectors at the origin (broadcast against ``u``), or None.
        c: curvature.

    Returns:
        ``(..., D + 1)``, the time coordinate first.

    Raises:
        TypeError, ValueError: bad dtypes, mismatched last dimensions, invalid ``c``.
    """
    if b is None:
        out, comp, cc, (uu,) = prepare(c, u=u)
        bb = None
    else:
        check_last_dims(u=u, b=b)
        out, comp, cc, (uu, bb) = prepare(c, u=u, b=b)
    h = expmap0_add_lorentz_raw(uu, bb, c=_kernel_c(c, cc), t_max=saturation(comp))
    return _on_upper_sheet(h[..., :1], h[..., 1:].to(out), cc, out)


def logmap0(y: Tensor, *, c: Curvature = 1.0) -> Tensor:
    r"""Logarithmic map at the origin: :math:`\log_0(y) = \operatorname{artanh}(s_c|y|)\,
    y/(s_c|y|)`.

    Args:
        y: ``(..., D)`` points (points on or beyond the boundary are treated as lying on the
            outermost representable shell, in their direction: the result is that of
            ``project(y)``, of norm ``max_radius / 2``).
        c: curvature.

    Returns:
        ``(..., D)`` tangent vector at the origin, of norm :math:`d(0, y)/2`.
    """
    out, _, cc, (yy,) = prepare(c, y=y)
    sc = cc.sqrt()
    n, u, _ = gap(yy, sc)
    v = artanh_over(u) * yy
    onto = shell_divisor(yy, n, sc)  # points outside the ball: from the shell
    return (v if onto is None else v / onto).to(out)


def expmap(x: Tensor, v: Tensor, *, c: Curvature = 1.0) -> Tensor:
    r"""Exponential map at ``x``: :math:`\exp_x(v) = x \oplus \tanh(s_c\lambda_x|v|/2)\,
    v/(s_c|v|)`.

    Fused: with :math:`t = s_c|v|/B_x`, the second summand is :math:`w = h(t)\,v/B_x`
    (:math:`h(t) = \tanh t/t`) and its gap :math:`1 - c|w|^2 = \operatorname{sech}^2 t` is taken
    from ``t`` directly rather than from the rounded ``w``, so long steps towards the boundary
    keep their accuracy; the addition then uses the stable form of :func:`mobius_add`.
    ``float32`` inputs are computed in ``float64`` (in eager CPU code: the rows that need it,
    see :func:`_expmap_narrow`): the map's condition number grows like :math:`e^{r}` along a
    long geodesic, and the 29 extra bits absorb it over the whole float32 range. ``float64``
    values come from a double-double evaluation (in eager CPU code: on the rows whose result
    may be representable, see :func:`_expmap_precise`).

    Args:
        x: ``(..., D)`` base points (points on or beyond the boundary are treated as lying on
            the outermost representable shell: the result is that of ``project(x)``).
        v: ``(..., D)`` tangent vectors at ``x`` (Riemannian length :math:`\lambda_x|v|`).
        c: curvature.

    Returns:
        ``(..., D)`` point strictly inside the ball.
    """
    check_last_dims(x=x, v=v)
    out, comp, cc, (xx, vv) = prepare(c, x=x, v=v)
    if comp == torch.float32:
        c64 = _wide_c(c, cc)
        if out == torch.float32 and host_branches(xx, vv, cc):
            fast = _expmap_narrow(xx, vv, cc, c64)
            if fast is not None:
                return _finish_point(fast, out, c)
        cc, xx, vv = c64, xx.double(), vv.double()
    # Base points outside the ball (a caller's error) act from the outermost shell of the
    # data's dtype, with its gap: the point project(x) gives, as in the narrow form.
    sc, lim = cc.sqrt(), max_norm(out)
    n, _, plain = gap(xx, sc, lim)
    bx = gap_precise(xx, cc, out == torch.float64, lim, plain)
    xx = onto_shell(xx, sc, lim, n)
    res, t = _expmap_formula(xx, vv, cc, bx)
    if out == torch.float64:
        # Values in double-double; gradients from the formula above (they differ by rounding).
        res = res + (_expmap_precise(xx, vv, cc, t, res) - res).detach()
    return _finish_point(res, out, c)


def _wide_c(c: object, cc: Tensor) -> Tensor:
    """The caller's (already validated) curvature in float64, for float64 work on float32 data.

    Not ``cc.double()``: ``cc`` is the curvature rounded to float32, and a curvature such as 0.1
    is not a float32 number. Its rounding (a relative error up to ``2^-24``) moves
    :math:`B_x = 1 - c|x|^2` by up to ``2^-24 / B_x`` relatively, an error that a long step of
    :func:`expmap` amplifies like :math:`e^{r}`: at ``c = 0.1`` it put results hundreds of hULP
    (up to 12 units of distance) away from the exact map. A tensor curvature keeps its graph.
    """
    if isinstance(c, Tensor):
        return c.to(dtype=torch.float64, device=cc.device)
    return torch.tensor(float(c), dtype=torch.float64, device=cc.device)  # type: ignore[arg-type]


def _expmap_narrow(x: Tensor, v: Tensor, c: Tensor, c64: Tensor) -> Tensor | None:
    """``expmap`` of ``float32`` data in ``float32`` (eager CPU code), where that suffices.

    Two kinds of rows do not need the 29 extra bits of a float64 evaluation: short steps
    (``t <= 1/2``, a Riemannian length of at most ``1/s_c``), whose condition number is of
    order 1, and steps whose exact result lies beyond the float32 representable radius by more
    than ``4/s_c`` (the triangle inequality of :func:`_expmap_precise`): those land on the
    outermost shell whatever the precision. When every row is of these kinds the float32
    formula (with the gap of :func:`poincare._numerics.gap_wide`) is the result; otherwise the
    remaining rows are evaluated in float64, with the exact curvature ``c64`` (see
    :func:`_wide_c`), and put in their place. None when no row is.

    Both tests are in units of the curvature radius (``t`` and ``artanh(s_c|x|)`` are
    dimensionless), so the decision holds at every curvature: the rounding of ``c`` to float32
    moves ``B_x`` relatively by at most ``2^-24 / B_x``; a step of ``t <= 1/2`` carries that into
    the result as a distance of at most ``1.3 * 2^-24 / (s_c B_x)`` (the step's length moves by
    ``t sech^2(t)`` times it, and the gyrotranslation by ``x`` is an isometry), which is a third
    of one hULP of ``x`` (``2 eps |x| / B_x`` with ``s_c|x|`` close to 1 wherever ``B_x`` is
    small).
    """
    sc = c.sqrt()
    n, u, plain = gap(x, sc)
    bx = gap_wide(x, c, plain=plain)
    x = onto_shell(x, sc, n=n)  # points outside the ball act from the shell (bx is its gap)
    res, t = _expmap_formula(x, v, c, bx)
    with torch.no_grad():
        u = u.detach()
        td = t.detach()
        narrow = (td <= 0.5) | (td - torch.atanh(u) > math.atanh(max_norm(x.dtype)) + 2)
        if bool(narrow.all()):
            return res
        if not bool(narrow.any()):
            return None
    shape, dim = res.shape, res.shape[-1]
    batch = (*shape[:-1], 1)
    rows = (~narrow).expand(batch).reshape(-1).nonzero().squeeze(-1)
    xw = x.expand(shape).reshape(-1, dim)[rows].double()
    vw = v.expand(shape).reshape(-1, dim)[rows].double()
    cw = c64.expand(batch).reshape(-1, 1)[rows]
    wide, _ = _expmap_formula(xw, vw, cw, gap_precise(xw, cw, False))
    return res.reshape(-1, dim).index_put((rows,), wide.to(x.dtype)).reshape(shape)


def _expmap_formula(xx: Tensor, vv: Tensor, cc: Tensor, bx: Tensor) -> tuple[Tensor, Tensor]:
    """The stable closed form of :func:`expmap` in the dtype of its arguments, given the gap
    ``bx`` of ``xx``; returns the point and the step's argument ``t = s_c|v|/B_x``."""
    sc = cc.sqrt()
    n = norm(vv)
    t = sc * n / bx
    # w = tanh(t) v/(s_c |v|): from the unit vector for long steps (no v/B_x, which overflows
    # for huge v), from tanh(t)/t for short ones (exact at v = 0); both at safe arguments.
    big = t > 1
    one = torch.ones_like(t)
    short = tanh_over(torch.where(big, 0 * one, t)) / bx
    w = torch.where(big, tanh(t) / (sc * torch.where(big, n, one)), short) * vv
    bw = sech2(t)  # 1 - c|w|^2, with finite gradients for huge t
    s = xx + w
    css = cc * sqnorm(s)
    den = (css + bx * bw).clamp(min=torch.finfo(xx.dtype).tiny)
    return (bx * s + css * xx) / den, t


def _expmap_precise(x: Tensor, v: Tensor, c: Tensor, t: Tensor, res: Tensor) -> Tensor:
    r"""The values of ``expmap(x, v)`` (float64) from :func:`dd_expmap`, on the rows that need it.

    Those are the rows whose exact result may lie within the representable radius. A step of
    Riemannian length :math:`2t/s_c` from a point at distance :math:`d_x = 2\operatorname{artanh}
    (s_c|x|)/s_c` lands at least :math:`(2t - 2\operatorname{artanh}(s_c|x|))/s_c` from the
    origin (triangle inequality); beyond the outermost shell by a margin of 4/s_c, the exact
    result is not representable and the double-double value would be projected onto the shell
    as the plain value ``res`` is, so eager CPU code keeps ``res`` on those rows. Traced code
    evaluates every row.
    """
    with torch.no_grad():
        s1, s2 = pow2_factors(v.detach().abs().amax(dim=-1, keepdim=True))
        vs, scale = v.detach() * s1 * s2, 1 / (s1 * s2)
        xd, cd = x.detach(), c.detach()
        if not host_branches(x, v, c):
            return dd_expmap(xd, vs, cd, scale)
        _, u, _ = gap(xd, cd.sqrt())
        need = t.detach() - torch.atanh(u) <= math.atanh(max_norm(torch.float64)) + 2
        if bool(need.all()):
            return dd_expmap(xd, vs, cd, scale)
        out = res.detach().clone()
        if not bool(need.any()):
            return out
        shape, dim = out.shape, out.shape[-1]
        batch = (*shape[:-1], 1)
        rows = need.expand(batch).reshape(-1)
        flat = out.view(-1, dim)
        flat[rows] = dd_expmap(
            xd.expand(shape).reshape(-1, dim)[rows],
            vs.expand(shape).reshape(-1, dim)[rows],
            cd.expand(batch).reshape(-1, 1)[rows],
            scale.expand(batch).reshape(-1, 1)[rows],
        )
        return out


def logmap(x: Tensor, y: Tensor, *, c: Curvature = 1.0) -> Tensor:
    r"""Logarithmic map at ``x``: :math:`\log_x(y) = \frac{2}{s_c\lambda_x}
    \operatorname{artanh}(s_c|u|)\frac{u}{|u|}`, :math:`u = (-x) \oplus y`.

    Fused: with :math:`s = y - x`, :math:`u \propto N = B_x s - c|s|^2 x` and
    :math:`|N| = |s|\,Q` where :math:`Q^2 = (1 - c\langle x,y\rangle)^2 + c^2|x \wedge y|^2
    = 1 - 2c\langle x,y\rangle + c^2|x|^2|y|^2 = c|s|^2 + B_x B_y`, a sum of non-negative
    terms (the Lagrange form of the wedge would cancel, in value and in gradient, on the scale
    :math:`|x|^2|s|^2`); the length comes from the stable distance formula, giving

    .. math::
        \log_x(y) = \sqrt{B_x/B_y}\;\frac{\operatorname{asinh}(a)}{a}\;\frac{N}{Q},\quad
        a = \frac{s_c|s|}{\sqrt{B_x B_y}},

    smooth at ``y = x`` (where it equals ``y - x`` to first order) and free of the saturation of
    :math:`\operatorname{artanh}` near 1.

    Args:
        x: ``(..., D)`` base points.
        y: ``(..., D)`` points.
        c: curvature.

    Returns:
        ``(..., D)`` tangent vector at ``x`` of Riemannian length :math:`d(x, y)`. Points on or
        beyond the boundary (a caller's error) are treated as lying on the outermost shell (the
        result is that of ``project`` of them): it stays finite.
    """
    check_last_dims(x=x, y=y)
    out, _, cc, (xx, yy) = _prepare_map(c, x=x, y=y)
    sc = cc.sqrt()
    (bx, xx), (by, yy) = _map_gap(xx, cc, out), _map_gap(yy, cc, out)
    s = yy - xx
    ss = _rowdot(s, s)
    q = torch.sqrt(cc * ss + bx * by)
    a = sc * norm(s) / torch.sqrt(bx * by)
    # the factor of N = B_x s - c|s|^2 x distributed over its two terms: two row scalars
    # times two vectors (the same products, one (..., D) temporary fewer)
    f = torch.sqrt(bx / by) * asinh_over(a) / q
    return (f * bx * s - f * cc * ss * xx).to(out)


def _prepare_map(
    c: object, **tensors: Tensor
) -> tuple[torch.dtype, torch.dtype, Tensor, list[Tensor]]:
    """:func:`poincare._checks.prepare` for the logarithmic map and the transport: ``float32``
    data computed in ``float32`` (their gaps from :func:`poincare._numerics.gap_wide`), other
    data as before (half precision in ``float64``, where its boundary points keep their own
    outermost shell)."""
    out, comp, cc, values = prepare(c, **tensors)  # type: ignore[arg-type]
    if comp == torch.float32 and out != torch.float32:
        out, comp, cc, values = prepare(c, wide=True, **tensors)  # type: ignore[arg-type]
    return out, comp, cc, values


def _map_gap(x: Tensor, c: Tensor, out: torch.dtype) -> tuple[Tensor, Tensor]:
    """The gap ``1 - c|x|^2`` of the points of :func:`logmap`, accurate to a relative ulp of
    itself (double-double for ``float64`` data, a float64 norm for ``float32`` data computed in
    ``float32``, the plain form, with 29 spare bits, for data computed in a wider dtype), and
    the points themselves, those outside the ball moved onto the outermost shell
    (:func:`poincare._numerics.onto_shell`; the gap is then the shell's)."""
    lim = _limit(out)
    sc = c.sqrt()
    n, _, plain = gap(x, sc, lim)
    if x.dtype == torch.float32:
        b = gap_wide(x, c, lim, plain)
    else:
        b = gap_precise(x, c, out == torch.float64, lim, plain)
    return b, onto_shell(x, sc, lim, n)


# ---------------------------------------------------------------------------------------------
# Distances
# ---------------------------------------------------------------------------------------------


def _dist(x: Tensor, y: Tensor, c: Tensor) -> Tensor:
    sc = c.sqrt()
    _, _, bx = gap(x, sc)
    _, _, by = gap(y, sc)
    e = norm(x - y)
    return 2 / sc * asinh(sc * e / torch.sqrt(bx * by))


def dist(x: Tensor, y: Tensor, *, c: Curvature = 1.0, keepdim: bool = False) -> Tensor:
    r"""Geodesic distance.

    .. math::
        d(x,y) = \frac{2}{s_c}\operatorname{artanh}(s_c|(-x)\oplus y|)
               = \frac{1}{s_c}\operatorname{arcosh}\!\Big(1 + \frac{2c|x-y|^2}{B_x B_y}\Big)
               = \frac{2}{s_c}\operatorname{asinh}\!\Big(\frac{s_c|x-y|}{\sqrt{B_x B_y}}\Big).

    The last form is used: no :math:`\operatorname{arcosh}` near 1 (whose derivative is
    infinite there), exactly 0 for equal points, and a finite gradient (zero) at ``x == y``.

    Args:
        x, y: ``(..., D)`` points (broadcast).
        c: curvature.
        keepdim: keep the reduced last dimension.

    Returns:
        ``(...)`` (or ``(..., 1)``) non-negative distances.
    """
    check_last_dims(x=x, y=y)
    out, _, cc, (xx, yy) = prepare(c, x=x, y=y)
    d = _dist(xx, yy, cc).to(out)
    return d if keepdim else d.squeeze(-1)


def dist0(x: Tensor, *, c: Curvature = 1.0, keepdim: bool = False) -> Tensor:
    r"""Distance from the origin: :math:`d(0,x) = \tfrac{2}{s_c}\operatorname{artanh}(s_c|x|)`.

    Args:
        x: ``(..., D)`` points.
        c: curvature.
        keepdim: keep the reduced last dimension.

    Returns:
        ``(...)`` (or ``(..., 1)``), at most :func:`max_radius` of the compute dtype.
    """
    out, _, cc, (xx,) = prepare(c, x=x)
    sc = cc.sqrt()
    _, u, _ = gap(xx, sc)
    d = (2 / sc * torch.atanh(u)).to(out)
    return d if keepdim else d.squeeze(-1)


def _pairwise_batch(x: Tensor, y: Tensor, c: object) -> tuple[int, ...]:
    """The broadcast batch shape of :func:`pairwise_dist`'s ``x`` (..., N, D) and ``y``
    (..., M, D), with a ``ValueError`` naming the argument unless they, and a tensor ``c``
    against the distances' ``(..., 1, 1)``, broadcast."""
    try:
        batch: tuple[int, ...] = torch.broadcast_shapes(  # type: ignore[no-untyped-call]
            x.shape[:-2], y.shape[:-2]
        )
    except RuntimeError:
        raise ValueError(
            f"y of shape {tuple(y.shape)} does not broadcast against x {tuple(x.shape)} (the "
            "dimensions before the last two must broadcast)"
        ) from None
    if isinstance(c, Tensor) and c.dim() > 1 and c.shape[-2] != 1:
        raise ValueError(
            f"c of shape {tuple(c.shape)} must broadcast to the distances' (..., 1, 1): one "
            "curvature per matrix of distances"
        )
    check_curvature_batch(c, (*batch, 1), "the distances'", "(..., 1, 1)")
    return batch


# Pairs whose squared Euclidean distance is below TAU * (|x|^2 + |y|^2) are recomputed from the
# coordinate differences: the Gram expansion |x|^2 + |y|^2 - 2<x,y> loses about log2(1/TAU) bits
# on them. For float32 inputs the Gram matrix is formed in float64, which leaves 29 spare bits.
_TAU = {torch.float32: 2.0**-40, torch.float64: 2.0**-8}
_PAIR_CHUNK = 1 << 22


def pairwise_dist(x: Tensor, y: Tensor, *, c: Curvature = 1.0, squared: bool = False) -> Tensor:
    r"""All pairwise geodesic distances, like :func:`torch.cdist`.

    :math:`D_{ij} = d(x_i, y_j)` by the formula of :func:`dist`, with
    :math:`|x_i - y_j|^2/(B_{x_i}B_{y_j})` taken from one matrix product of augmented vectors,
    :math:`(|x_i|^2 + |y_j|^2 - 2\langle x_i, y_j\rangle)/(B_{x_i}B_{y_j})`, and no
    ``N x M x D`` tensor. That expansion cancels for close pairs, so (a) for ``float32`` inputs
    the product is formed in ``float64``, and (b) the pairs where the expansion has lost more than
    a few bits are detected and recomputed from their coordinate differences, in chunks of
    bounded memory. The result is as accurate as :func:`dist` applied pair by pair.

    Args:
        x: ``(..., N, D)`` points.
        y: ``(..., M, D)`` points; leading dimensions broadcast against ``x``'s.
        c: curvature: a float, or a tensor broadcastable to ``(..., 1, 1)``.
        squared: return :math:`d^2` instead of :math:`d`.

    Returns:
        ``(..., N, M)``.

    Raises:
        ValueError: ``x`` or ``y`` has fewer than 2 dimensions, the last dimensions differ, the
            leading dimensions do not broadcast, or a tensor ``c`` does not broadcast to
            ``(..., 1, 1)``.
    """
    check_tensor("x", x)
    check_tensor("y", y)
    for name, t in (("x", x), ("y", y)):
        if t.dim() < 2:
            raise ValueError(f"{name} must have shape (..., N, D), got {tuple(t.shape)}")
    check_last_dims(x=x, y=y)
    out, comp, cc, (xx, yy) = prepare(c, broadcast=False, x=x, y=y)
    batch = _pairwise_batch(x, y, c)
    n, m, d = xx.shape[-2], yy.shape[-2], xx.shape[-1]
    xx = xx.expand((*batch, n, d))
    yy = yy.expand((*batch, m, d))
    sc = cc.sqrt()
    nx, _, bx = gap(xx, sc)  # (..., N, 1)
    ny, _, by = gap(yy, sc)  # (..., M, 1)
    # points outside the ball (a caller's error) act from the outermost shell, with its gap
    xx, yy = onto_shell(xx, sc, n=nx), onto_shell(yy, sc, n=ny)

    # One matrix product gives z_ij = c|x_i - y_j|^2 / (B_i B_j) (so cosh d - 1 = 2 z), through
    # augmented vectors [|x|^2 a, a, -2 a x] . [b, |y|^2 b, b y] with a = c/B_x, b = 1/B_y; a
    # second, of width 2, gives the scale (|x|^2 + |y|^2) a b against which cancellation is judged.
    xd, yd = xx.to(torch.float64), yy.to(torch.float64)
    a, b = cc.to(torch.float64) / bx.to(torch.float64), 1 / by.to(torch.float64)
    nxa, nyb = sqnorm(xd) * a, sqnorm(yd) * b
    z = torch.matmul(
        torch.cat([nxa, a, -2 * a * xd], dim=-1), torch.cat([b, nyb, b * yd], dim=-1).mT
    )  # c |x_i - y_j|^2 / (B_i B_j)
    scale = torch.matmul(torch.cat([nxa, a], dim=-1), torch.cat([b, nyb], dim=-1).mT)
    close = z <= _TAU[comp] * scale
    del scale
    grad = torch.is_grad_enabled() and (xx.requires_grad or yy.requires_grad or cc.requires_grad)
    # Clamping at the smallest normal keeps sqrt's derivative finite at the recomputed pairs.
    # (Out of place: torch.func.vmap has no batching rule for an in-place clamp.)
    tiny = torch.finfo(torch.float64).tiny
    t = z.clamp(min=tiny)
    t = (t.sqrt() if grad else t.sqrt_()).to(comp)
    if not host_branches(xx, yy, cc):
        # Branch-free (traced) form: every pair's difference, in chunks of rows of bounded
        # memory, taken where the expansion has cancelled.
        rows = max(1, _PAIR_CHUNK // max(1, m * d * math.prod(batch)))
        ratio = torch.sqrt((cc / bx) * (1 / by).mT)  # (..., N, M)
        parts = []
        for start in range(0, n, rows):
            xs = xx[..., start : start + rows, :].unsqueeze(-2)
            parts.append(norm(xs - yy.unsqueeze(-3)).squeeze(-1))
        e = torch.cat(parts, dim=-2) if parts else ratio
        t = torch.where(close, (e * ratio).to(t.dtype), t)
    elif bool(close.any()):
        idx = close.reshape(-1).nonzero().squeeze(-1)
        xf, yf = xx.reshape(-1, n, d), yy.reshape(-1, m, d)
        rbx = (cc / bx).expand(*batch, n, 1).reshape(-1, n)
        rby = (1 / by).reshape(-1, m)
        vals = []
        step = max(1, _PAIR_CHUNK // max(d, 1))
        for start in range(0, idx.numel(), step):
            lin = idx[start : start + step]
            k, rem = lin // (n * m), lin % (n * m)
            i, j = rem // m, rem % m
            e = norm(xf[k, i] - yf[k, j]).squeeze(-1)
            vals.append(e * torch.sqrt(rbx[k, i] * rby[k, j]))
        t = t.reshape(-1).index_put((idx,), torch.cat(vals)).reshape(z.shape)
    dd = asinh(t)
    dd = dd * (2 / sc) if grad else dd.mul_(2 / sc)
    if squared:
        dd = dd * dd
    return dd.to(out)


# ---------------------------------------------------------------------------------------------
# Transport and gradients
# ---------------------------------------------------------------------------------------------


def transp(x: Tensor, y: Tensor, v: Tensor, *, c: Curvature = 1.0) -> Tensor:
    r"""Parallel transport of ``v`` from :math:`T_x` to :math:`T_y` along the geodesic.

    .. math:: P_{x\to y}(v) = \frac{\lambda_x}{\lambda_y}\operatorname{gyr}[y, -x]\,v
              = \frac{B_y}{B_x}\operatorname{gyr}[y, -x]\,v.

    It preserves the Riemannian inner product: :math:`\langle P u, P v\rangle_y =
    \langle u, v\rangle_x`.

    Args:
        x, y: ``(..., D)`` points.
        v: ``(..., D)`` tangent vectors at ``x``.
        c: curvature.

    Returns:
        ``(..., D)`` tangent vectors at ``y``.
    """
    check_last_dims(x=x, y=y, v=v)
    out, _, cc, (xx, yy, vv) = prepare(c, wide=True, x=x, y=y, v=v)
    bx, xx = _shell_gaps(xx, cc, out == torch.float64, _limit(out))
    by, yy = _shell_gaps(yy, cc, out == torch.float64, _limit(out))
    return (by / bx * _gyration(yy, -xx, vv, cc, out == torch.float64)).to(out)


def transp0(y: Tensor, v: Tensor, *, c: Curvature = 1.0) -> Tensor:
    r"""Parallel transport from the origin: :math:`P_{0\to y}(v) = (1 - c|y|^2)\,v`.

    Args:
        y: ``(..., D)`` points.
        v: ``(..., D)`` tangent vectors at the origin.
        c: curvature.

    Returns:
        ``(..., D)`` tangent vectors at ``y``.
    """
    check_last_dims(y=y, v=v)
    out, _, cc, (yy, vv) = prepare(c, wide=True, y=y, v=v)
    by = gap_precise(yy, cc, out == torch.float64)
    return (by * vv).to(out)


def egrad2rgrad(x: Tensor, g: Tensor, *, c: Curvature = 1.0) -> Tensor:
    r"""Riemannian gradient from a Euclidean one: :math:`g / \lambda_x^2 = (B_x/2)^2\,g`.

    Args:
        x: ``(..., D)`` points.
        g: ``(..., D)`` Euclidean gradients at ``x``.
        c: curvature.

    Returns:
        ``(..., D)`` tangent vectors at ``x``.
    """
    check_last_dims(x=x, g=g)
    out, _, cc, (xx, gg) = prepare(c, wide=True, x=x, g=g)
    bx = gap_precise(xx, cc, out == torch.float64)
    h = bx / 2
    return (h * h * gg).to(out)


# ---------------------------------------------------------------------------------------------
# Midpoint and model conversions
# ---------------------------------------------------------------------------------------------


def _points_and_weights(
    x: Tensor, weights: Tensor | None, dim: int
) -> tuple[int, Tensor, Tensor | None]:
    """Validate the arguments of a weighted mean of points along ``dim``: returns the normalised
    ``dim``, ``x`` with its points on dimension -2, and the weights broadcast against ``x``
    without its last dimension with the points last (None without weights). The weights may add
    leading dimensions (the points' dimension is counted from the end). Raises as
    :func:`einstein_midpoint` documents; negative or non-finite weights are detected where a
    check costs no synchronisation (:func:`poincare._checks.host_branches`)."""
    check_tensor("x", x)
    if x.dim() < 2:
        raise ValueError(f"x must have shape (..., N, D), got {tuple(x.shape)}")
    d = check_dim("dim", dim, x.dim())
    if d == x.dim() - 1:
        raise ValueError("dim must index the points, not the last (coordinate) dimension")
    xm = x.movedim(d, -2)
    if weights is None:
        return d, xm, None
    check_tensor("weights", weights)
    try:
        shape = torch.broadcast_shapes(weights.shape, x.shape[:-1])  # type: ignore[no-untyped-call]
    except RuntimeError as err:
        raise ValueError(
            f"weights of shape {tuple(weights.shape)} do not broadcast against the points' "
            f"shape {tuple(x.shape[:-1])} (x without its last dimension)"
        ) from err
    if host_branches(weights):
        with torch.no_grad():
            if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
                raise ValueError("weights must be finite and non-negative")
    return d, xm, weights.expand(shape).movedim(d - (x.dim() - 1), -1)


def einstein_midpoint(
    x: Tensor,
    weights: Tensor | None = None,
    *,
    c: Curvature = 1.0,
    dim: int = -2,
    keepdim: bool = False,
) -> Tensor:
    r"""Weighted Einstein midpoint, through the Klein model, returned in the Poincaré ball.

    In the Klein model :math:`k_i = 2x_i/(1 + c|x_i|^2)` with Lorentz factors
    :math:`\gamma_i = 1/\sqrt{1 - c|k_i|^2}`, the midpoint is
    :math:`m_K = \sum_i w_i\gamma_i k_i / \sum_i w_i\gamma_i`, mapped back by
    :math:`p = m_K / (1 + \sqrt{1 - c|m_K|^2})`. Forming :math:`m_K` loses the last half of the
    representable radius (Klein coordinates saturate twice as fast), and
    :math:`1 - c|m_K|^2` cancels catastrophically; the same point is computed here in closed
    form without either: with :math:`\omega_i = w_i/B_{x_i}`, :math:`\Omega = \sum\omega_i`,
    :math:`W = \sum w_i`, :math:`\bar x = \sum\omega_i x_i/\Omega` and the weighted spread
    :math:`V = \sum_i \omega_i|x_i - \bar x|^2`,

    .. math::
        p = \frac{2\Omega\,\bar x}{2\Omega - W + \sqrt{W^2 + 4c\,\Omega V}},

    which follows from :math:`\gamma_i k_i = \lambda_{x_i} x_i`,
    :math:`\gamma_i = 2/B_{x_i} - 1` and
    :math:`(\sum w\gamma)^2 - c|\sum w\gamma k|^2 = W^2 + 4c\,\Omega V`.

    Args:
        x: points, with the points to average along ``dim`` and coordinates on the last
            dimension, e.g. ``(..., N, D)`` for the default ``dim=-2``.
        weights: non-negative weights shaped like ``x`` without its last dimension (e.g.
            ``(..., N)``), broadcastable; zeros are allowed. ``None`` means equal weights. Where
            all the weights of a midpoint are zero the result is the origin.
        c: curvature, a float or a tensor broadcastable to the result's ``(..., 1)``.
        dim: the dimension of ``x`` that indexes the points (not the last one).
        keepdim: keep ``dim`` (with size 1) in the result.

    Returns:
        ``(..., D)``: ``x``'s shape without ``dim`` (broadcast against ``weights``).

    Raises:
        ValueError: ``dim`` is out of range or is the last dimension; ``weights`` does not
            broadcast, is negative or not finite; a tensor ``c`` does not broadcast against
            the result's ``(..., 1)``.
    """
    d, xm, w_full = _points_and_weights(x, weights, dim)
    means = tuple(xm.shape[:-2] if w_full is None else w_full.shape[:-1])
    check_curvature_batch(c, means, "the midpoints'", "the result's (..., 1)")
    if w_full is None:
        out, _, cc, (xm,) = prepare(c, broadcast=False, x=xm)
        w = torch.ones_like(xm[..., 0])
    else:
        out, _, cc, (xm, w) = prepare(c, broadcast=False, x=xm, weights=w_full)
        # The midpoint does not depend on the scale of the weights: divide them by the power of
        # two nearest their largest, so that neither huge nor subnormal weights lose anything.
        s1, s2 = pow2_factors(w.amax(dim=-1, keepdim=True))
        w = w * s1 * s2
    cx = cc.unsqueeze(-2) if cc.dim() > 0 else cc
    sx = cx.sqrt()
    n, _, b = gap(xm, sx)
    xm = onto_shell(xm, sx, n=n)  # points outside the ball (a caller's error): from the shell
    om = w.unsqueeze(-1) / b  # (..., N, 1)
    big_om = om.sum(dim=-2)  # (..., 1)
    big_w = w.sum(dim=-1, keepdim=True)
    # All-zero weights: the origin, with zero gradients (every square root and quotient below
    # is evaluated at a safe 1 there, so no 0 * inf reaches the backward pass).
    dead = big_om <= 0
    one = torch.ones_like(big_om)
    safe = torch.where(dead, one, big_om)
    xbar = (om * xm).sum(dim=-2) / safe
    spread = (om * sqnorm(xm - xbar.unsqueeze(-2))).sum(dim=-2)
    disc = torch.where(dead, one, big_w * big_w + 4 * cc * big_om * spread)
    den = torch.where(dead, one, 2 * big_om - big_w + torch.sqrt(disc))
    p = torch.where(dead, torch.zeros_like(xbar), 2 * big_om * xbar / den)
    res = _finish_point(p, out, c)
    return res.unsqueeze(d) if keepdim else res


def poincare_to_klein(x: Tensor, *, c: Curvature = 1.0) -> Tensor:
    r"""Poincaré ball to Klein model: :math:`k = 2x/(1 + c|x|^2)`.

    Klein coordinates reach the boundary twice as fast as Poincaré ones, so points beyond half
    of :func:`max_radius` round onto the outermost Klein shell; the result is kept strictly
    inside the Klein ball. Points on or beyond the boundary (a caller's error) are treated as
    lying on the outermost shell (the result is that of ``project(x)``).

    Returns:
        ``(..., D)`` Klein points.
    """
    out, _, cc, (xx,) = prepare(c, x=x)
    xx = onto_shell(xx, cc.sqrt())
    return _finish_point(2 * xx / (1 + cc * sqnorm(xx)), out, c)


def klein_to_poincare(k: Tensor, *, c: Curvature = 1.0) -> Tensor:
    r"""Klein model to Poincaré ball: :math:`x = k/(1 + \sqrt{1 - c|k|^2})`.

    :math:`1 - c|k|^2` is formed as :math:`(1 - s_c|k|)(1 + s_c|k|)`; Klein points on or outside
    the boundary are treated as lying on the outermost shell (the result is that of
    ``project(k)``).

    Returns:
        ``(..., D)`` point strictly inside the Poincaré ball.
    """
    out, _, cc, (kk,) = prepare(c, k=k)
    sc = cc.sqrt()
    n, _, bk = gap(kk, sc)
    res = kk / (1 + torch.sqrt(bk))
    onto = shell_divisor(kk, n, sc)  # Klein points outside the ball: from the shell
    return _finish_point(res if onto is None else res / onto, out, c)


def poincare_to_lorentz(x: Tensor, *, c: Curvature = 1.0) -> Tensor:
    r"""Poincaré ball to the hyperboloid :math:`-h_0^2 + |h_{1:}|^2 = -1/c`, :math:`h_0 > 0`.

    .. math:: h = \Big(\frac{1 + c|x|^2}{s_c B_x},\ \frac{2x}{B_x}\Big).

    Near the boundary the coordinates are huge (about :math:`e^{r}`) and their float steps can
    exceed :math:`1/s_c`; the time coordinate is therefore recomputed from the *stored* space
    coordinates, :math:`h_0 = \sqrt{1/c + |h_{1:}|^2}`, in double-double and rounded upwards, so
    that the stored point is never space-like (it maps back strictly inside the ball).

    Points on or beyond the boundary (a caller's error) are treated as lying on the outermost
    shell of their dtype (the result is that of ``project(x)``).

    Returns:
        ``(..., D + 1)``, the time coordinate first.
    """
    out, _, cc, (xx,) = prepare(c, wide=True, x=x)
    sc = cc.sqrt()
    # points outside the ball (a caller's error) act from the outermost shell of their dtype
    xx = onto_shell(xx, sc, shell=max_norm(out))
    b = gap_precise(xx, cc, out == torch.float64, _limit(out))
    h0 = (1 + cc * sqnorm(xx)) / (sc * b)
    return _on_upper_sheet(h0, (2 * xx / b).to(out), cc, out)


def _on_upper_sheet(h0: Tensor, hs: Tensor, c: Tensor, out: torch.dtype) -> Tensor:
    r"""``(h_0, h_s)`` stored in ``out`` with the time coordinate that keeps the stored point on
    or inside the upper sheet: the value of ``h_0`` is replaced by
    :math:`\sqrt{1/c + |h_s|^2}` of the *stored* space coordinates, in double-double, rounded
    upwards to ``out`` (so the stored point is never space-like and maps back strictly inside
    the ball); its gradient stays that of the formula ``h0`` (a straight-through rounding).
    """
    with torch.no_grad():
        hsd = hs.detach().to(torch.float64)
        cd = c.detach().to(torch.float64).expand((*hsd.shape[:-1], 1))
        inv_c = dd.div(dd.const(torch.ones_like(cd)), dd.const(cd))
        hi, lo = dd.sqrt(dd.add(inv_c, dd.sqnorm(dd.const(hsd))))
        up = hi.to(out)
        below = (up.to(torch.float64) < hi) | ((up.to(torch.float64) == hi) & (lo > 0))
        up = torch.where(below, torch.nextafter(up, torch.full_like(up, math.inf)), up)
    h0o = h0.to(out)
    # exactly ``up`` (not h0o + (up - h0o), which cancels when the two differ widely), with
    # the gradient of h0
    h0o = up + (h0o - h0o.detach())
    return torch.cat([h0o.expand((*hs.shape[:-1], 1)), hs], dim=-1)


def lorentz_to_poincare(h: Tensor, *, c: Curvature = 1.0) -> Tensor:
    r"""Hyperboloid to Poincaré ball: :math:`x = h_{1:}/(1 + s_c h_0)`.

    Args:
        h: ``(..., D + 1)`` points of the hyperboloid, time coordinate first (``D + 1 >= 2``).

    Returns:
        ``(..., D)`` point strictly inside the ball.
    """
    check_tensor("h", h)
    if h.shape[-1] < 2:
        raise ValueError(f"h must have last dimension >= 2 (time + space), got {h.shape[-1]}")
    out, _, cc, (hh,) = prepare(c, h=h)
    h0 = hh[..., :1]
    if host_branches(hh):
        with torch.no_grad():
            if not bool((h0 > 0).all()):
                raise ValueError(
                    "h must lie on the upper sheet of the hyperboloid (time coordinate h[..., 0] "
                    "> 0); got points with h[..., 0] <= 0"
                )
    # (Traced code does not check: a point of the lower sheet is read as its mirror image.)
    return _finish_point(hh[..., 1:] / (1 + cc.sqrt() * h0.abs()), out, c)


# Ops whose kernels live in their own modules (they build on the ops above, so they are
# imported last): the gyroplane distance, geodesics, Möbius versions of functions, the Fréchet
# mean.
from ._frechet import frechet_mean  # noqa: E402
from ._geodesic import geodesic, geodesic_unit, mobius_fn_apply  # noqa: E402
from ._gyroplane import dist2plane  # noqa: E402
