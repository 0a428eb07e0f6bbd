r"""Fused closed forms of compositions of ball ops, each one autograd node.

Each kernel here replaces a composition of public ops (named in its docstring) by one closed
form that never forms the gap of a rounded point, with a hand-written backward pass that keeps
only its inputs and per-row scalars. They are the building blocks of the modules of
:mod:`poincare.nn` (the linear layer's bias, the attention's Lorentz coordinates, its midpoint
and its scores); :mod:`poincare.functional` exposes the ones a user would call
(:func:`~poincare.functional.expmap0_add`, :func:`~poincare.functional.expmap0_add_lorentz`).

Notation shared by every kernel. ``c`` is the curvature (a Python float, or a tensor that
broadcasts against the per-row scalars ``(..., 1)``; a tensor that requires grad receives its
gradient), :math:`s = \sqrt c`. For a tangent vector ``z`` at the origin,
:math:`t = s|z|` is its *scaled norm*, and with :math:`t_c = \min(\max(t, \tau), t_{max})`
(:data:`TINY` :math:`= \tau`, ``t_max`` the scaled norm of the outermost representable shell,
:func:`saturation`, or :func:`far_saturation` for the tangent vector of
:func:`expmap0_add_raw`) the *tangent terms* are

* :math:`a = \tanh(t_c)/\max(t, \tau)`, so that :math:`\exp_0(z) = a z`;
* :math:`C = \cosh^2 t_c`, so that the gap of :math:`\exp_0(z)` is :math:`1 - c|a z|^2 = 1/C`;
* :math:`g = \sinh(t_c)\cosh(t_c)/\max(t, \tau)`, so that :math:`C\,\exp_0(z) = g z`.

They are sums and products of positive quantities, exact to a few ulps for every ``t``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ._checks import host_branches
from ._numerics import acosh1p, dot, max_norm, norm

__all__ = [
    "TINY",
    "TangentTerms",
    "cosh_score",
    "expmap0_add_from_lorentz",
    "expmap0_add_lorentz_raw",
    "expmap0_add_raw",
    "expmap0_with_gap",
    "far_saturation",
    "lorentz_cosh_minus_one",
    "midpoint_logmap0",
    "saturation",
    "tangent_terms",
]

#: Lower clamp of scaled tangent norms used as divisors: below it ``tanh(t)/t`` and
#: ``sinh(t) cosh(t)/t`` equal 1 to the last bit in float32 and float64, so the clamp changes
#: neither values nor gradients (and keeps them finite at the zero vector).
TINY = 1e-12

CurvatureArg = float | Tensor


def saturation(dtype: torch.dtype) -> float:
    r"""The scaled tangent norm of the outermost representable shell of ``dtype``.

    :math:`t_{max} = \operatorname{artanh}(1 - \epsilon/2)`: ``expmap0`` of any tangent vector
    with :math:`s|z| \ge t_{max}` rounds onto that shell (about 9.0 in float32, 18.7 in float64).
    """
    return math.atanh(max_norm(dtype))


def far_saturation(dtype: torch.dtype) -> float:
    r"""The largest scaled norm ``t`` at which :func:`expmap0_add_raw` forms the tangent terms of
    its tangent vector: :math:`\log(\text{max})/4` of ``dtype`` (177.4 in float64, 22.2 in
    float32).

    There :math:`\cosh^2 t` and its products with the other terms (at most 4) stay finite, and
    the gap :math:`1/\cosh^2 t \approx 4e^{-2t}` of :math:`\exp_0(z)` is so small that the
    Möbius sum with any representable point is on the outermost shell: its gap is at most that
    gap times :math:`2/B_b \le 4/\epsilon`, far below :math:`\epsilon` (``1e-138`` in
    float64). So clamping ``t`` there changes no result, while clamping it at
    :func:`saturation` (the shell of :math:`\exp_0(z)` itself) would move the sum inwards
    by up to the bias's distance from the origin.
    """
    return math.log(torch.finfo(dtype).max) / 4


def _sqrt(c: CurvatureArg) -> CurvatureArg:
    return c.sqrt() if isinstance(c, Tensor) else math.sqrt(c)


def _grad_c(value: Tensor, c: CurvatureArg) -> Tensor | None:
    """``value`` summed to the shape of a tensor curvature (None for a float curvature)."""
    if not isinstance(c, Tensor):
        return None
    return value.sum_to_size(c.shape) if c.dim() > 0 else value.sum().reshape(())


def scaled_norm(z: Tensor, c: CurvatureArg) -> Tensor:
    """``t = sqrt(c)|z|`` over the last dimension, kept: (..., 1).

    ``|z|`` is :func:`poincare._numerics.norm`, whose squares neither overflow nor underflow:
    a tangent vector of any finite size (1e20 in float32, 1e155 in float64) has its finite
    ``t`` and lands on the outermost shell in its own direction, not at the origin (whose
    ``tanh(t_c)/t`` a ``t = inf`` would give)."""
    n = norm(z)
    if isinstance(c, Tensor) or c != 1.0:
        n = n * _sqrt(c)
    return n


class TangentTerms(NamedTuple):
    """The tangent terms of scaled norms ``t`` (see the module docstring)."""

    tt: Tensor  # max(t, TINY): the divisor
    a: Tensor  # tanh(t_c) / tt
    cc: Tensor  # cosh^2 t_c
    g: Tensor  # sinh(t_c) cosh(t_c) / tt
    sh: Tensor  # sinh t_c


def tangent_terms(t: Tensor, t_max: float) -> TangentTerms:
    """The tangent terms ``(tt, a, C, g, sinh t_c)`` of scaled norms ``t`` (..., 1)."""
    tt = t.clamp(min=TINY)
    tc = tt.clamp(max=t_max)
    ch = torch.cosh(tc)
    sh = torch.sinh(tc)
    return TangentTerms(tt, sh / (ch * tt), ch * ch, sh * ch / tt, sh)


def tangent_derivatives(t: Tensor, t_max: float, k: TangentTerms) -> tuple[Tensor, Tensor, Tensor]:
    r"""Derivatives in ``t`` of ``(a, C, g)``, clamps included.

    Inside :math:`\tau \le t \le t_{max}`: :math:`a' = (1/C - a)/t` (from
    :math:`(\tanh t)' = 1/\cosh^2 t`), :math:`C' = 2\sinh t\cosh t = 2 g t` and
    :math:`g' = (\cosh^2 t + \sinh^2 t - g)/t`. Beyond :math:`t_{max}` only the divisors vary
    (:math:`a' = -a/t`, :math:`C' = 0`, :math:`g' = -g/t`). Below :math:`\tau` the formulas
    give 0 by themselves (:math:`a = C = g = 1` to the last bit there).
    """
    inner = (t <= t_max).to(t.dtype)
    da = (inner / k.cc - k.a) / k.tt
    dc = (k.g * k.tt) * (2 * inner)
    dg = (inner * torch.addcmul(k.cc, k.sh, k.sh) - k.g) / k.tt
    return da, dc, dg


# ---------------------------------------------------------------------------------------------
# expmap0 with its gap or conformal factor
# ---------------------------------------------------------------------------------------------


class _ExpmapGap(torch.autograd.Function):
    r"""``(exp_0(v), w)`` with :math:`w = 1/C` (the gap :math:`1 - c|\exp_0 v|^2`) if ``gap``
    else :math:`w = 2C` (the conformal factor :math:`\lambda`).

    Backward: with :math:`\bar b` and :math:`\bar w` the incoming gradients and
    :math:`\bar C = -\bar w/C^2` (gap) or :math:`2\bar w` (conformal factor), the gradient in
    the scaled norm is :math:`\bar t = \langle\bar b, v\rangle a' + \bar C C'`, and
    :math:`\partial t/\partial v = c v/t`, :math:`\partial t/\partial c = t/(2c)`, so
    :math:`\bar v = a\bar b + \bar t\,(c/t)\,v` and :math:`\bar c = \bar t\,t/(2c)`;
    evaluated with :math:`w = v/t` as :math:`\bar t = \langle\bar b, w\rangle\,(t a') +
    \bar C C'` and :math:`\bar v = a\bar b + c\,\bar t\,w`, which form no product with
    ``v`` itself (finite for tangent vectors of any size).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(v: Tensor, c: CurvatureArg, t_max: float, gap: bool) -> tuple[Tensor, Tensor]:
        k = tangent_terms(scaled_norm(v, c), t_max)
        return k.a * v, (torch.reciprocal(k.cc) if gap else 2 * k.cc)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        v, c, t_max, gap = inputs
        ctx.save_for_backward(v, c if isinstance(c, Tensor) else None)
        ctx.c_float, ctx.t_max, ctx.gap = (None if isinstance(c, Tensor) else c), t_max, gap

    @staticmethod
    def backward(ctx: Any, grad_b: Tensor, grad_w: Tensor) -> tuple[Tensor | None, ...]:
        v, c_t = ctx.saved_tensors
        c: CurvatureArg = c_t if c_t is not None else ctx.c_float
        t = scaled_norm(v, c)
        k = tangent_terms(t, ctx.t_max)
        da, dc, _ = tangent_derivatives(t, ctx.t_max, k)
        grad_cc = -grad_w / (k.cc * k.cc) if ctx.gap else 2 * grad_w
        # v/t (of norm 1/s) in place of v: <b̄, v> of a huge v (1e30 in float32) against a
        # large incoming gradient would overflow, and its product with a' (about a/t) is finite
        w = v / k.tt
        grad_t = dot(grad_b, w) * (da * k.tt) + grad_cc * dc
        grad_v = torch.addcmul(k.a * grad_b, grad_t * c, w)
        grad_c = _grad_c(grad_t * t / (2 * c), c) if ctx.needs_input_grad[1] else None
        return grad_v, grad_c, None, None


def expmap0_with_gap(
    v: Tensor, *, c: CurvatureArg, t_max: float, gap: bool
) -> tuple[Tensor, Tensor]:
    r"""``exp_0(v)`` (not projected) and its gap :math:`1 - c|\exp_0 v|^2 = 1/\cosh^2 t` (if
    ``gap``) or its conformal factor :math:`2\cosh^2 t`, from tangent vectors ``v`` (..., D);
    returns ((..., D), (..., 1)). Replaces ``expmap0`` followed by ``conformal_factor``."""
    b, w = _ExpmapGap.apply(v, c, t_max, gap)  # type: ignore[no-untyped-call]
    return b, w


# ---------------------------------------------------------------------------------------------
# expmap0(z) ⊕ b
# ---------------------------------------------------------------------------------------------


class _Expmap0Add(torch.autograd.Function):
    r""":math:`y = \exp_0(z) \oplus_c b` from the tangent vector ``z``, the point ``b`` and its
    gap :math:`B_b`.

    Forward: with :math:`S = b + a z` and :math:`q = c|S|^2`,
    :math:`y = (S + q g z)/D`, :math:`D = B_b + q C`. ``S`` is rounded as a product and a sum
    (not a fused multiply-add), so that exactly opposite inputs, ``b = exp_0(-z)``, give
    exactly ``S = 0`` and the origin.

    Backward, with :math:`\gamma = \bar y/D`: the gradient in ``q`` is
    :math:`\bar q = g\langle\gamma, z\rangle - C\langle\gamma, y\rangle`; in ``S`` (directly and
    through ``q``) :math:`\bar S = \gamma + 2c\,\bar q\,S`; in the scaled norm
    :math:`\bar t = \langle\bar S, z\rangle a' + q(\langle\gamma, z\rangle g' -
    \langle\gamma, y\rangle C')`. Then :math:`\bar z = a\bar S + q g\gamma + \bar t(c/t)z`,
    :math:`\bar b = \bar S`, :math:`\bar B_b = -\langle\gamma, y\rangle` and
    :math:`\bar c = \bar t\,t/(2c) + \bar q\,q/c`.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        z: Tensor,
        b: Tensor,
        gap_b: Tensor,
        c: CurvatureArg,
        t_max: float,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        # Returns (y, t, q, den): the last three are saved for the backward pass.
        t = scaled_norm(z, c)
        k = tangent_terms(t, t_max)
        s = b + k.a * z
        q = dot(s, s) * c
        den = torch.addcmul(gap_b, q, k.cc)
        return torch.addcmul(s, q * k.g, z) / den, t, q, den

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        z, b, gap_b, c, t_max = inputs
        _, t, q, den = output
        ctx.mark_non_differentiable(t, q, den)
        c_t = c if isinstance(c, Tensor) else None
        ctx.save_for_backward(z, b, gap_b, t, q, den, c_t)
        ctx.c_float, ctx.t_max = (None if c_t is not None else c), t_max

    @staticmethod
    def backward(ctx: Any, gy: Tensor, *_: Any) -> tuple[Tensor | None, ...]:
        z, b, gap_b, t, q, den, c_t = ctx.saved_tensors
        c: CurvatureArg = c_t if c_t is not None else ctx.c_float
        k = tangent_terms(t, ctx.t_max)
        s = b + k.a * z
        y = torch.addcmul(s, q * k.g, z) / den
        gam = gy / den
        gyy = dot(gam, y)
        gz = dot(gam, z)
        grad_q = k.g * gz - gyy * k.cc
        grad_s = torch.addcmul(gam, grad_q * (2 * c), s)
        da, dc, dg = tangent_derivatives(t, ctx.t_max, k)
        grad_t = dot(grad_s, z) * da + q * (gz * dg - gyy * dc)
        grad_z = torch.addcmul(torch.addcmul(k.a * grad_s, q * k.g, gam), grad_t * (c / k.tt), z)
        grad_b = grad_s.sum_to_size(b.shape) if ctx.needs_input_grad[1] else None
        grad_gap = (-gyy).sum_to_size(gap_b.shape) if ctx.needs_input_grad[2] else None
        grad_c = None
        if ctx.needs_input_grad[3]:
            grad_c = _grad_c(grad_t * t / (2 * c) + grad_q * q / c, c)
        return grad_z, grad_b, grad_gap, grad_c, None


def expmap0_add_raw(z: Tensor, bias: Tensor, *, c: CurvatureArg) -> Tensor:
    r""":math:`\exp_0(z) \oplus_c \exp_0(\text{bias})` in one closed form (not projected).

    With :math:`t = s|z|`, :math:`p = \exp_0(z)`, :math:`S = p + \exp_0(\text{bias})` and
    :math:`q = c|S|^2`, the Möbius sum :math:`(B_p S + q p)/(q + B_p B_b)` divided through by
    :math:`B_p = 1/\cosh^2 t` is

    .. math:: \frac{S + q\,\frac{\sinh t\cosh t}{t}\,z}{q\cosh^2 t + 1/\cosh^2 t_b},

    a ratio of sums of non-negative terms that never forms the gap of a rounded point. The
    tangent terms of ``z`` are clamped at :func:`far_saturation`, not at the representable
    shell: a ``z`` beyond it puts the sum on the outermost shell in the direction of ``z``, as
    the exact sum is, whatever the bias (the bias's own terms are those of the stored point
    :math:`\exp_0(\text{bias})`, clamped at :func:`saturation`). ``z``: (..., D); ``bias``:
    (..., D), broadcastable; both in the compute dtype. For float64 data, see
    :func:`expmap0_add_from_lorentz`.
    """
    bp, gap_b = expmap0_with_gap(bias, c=c, t_max=saturation(z.dtype), gap=True)
    out: Tensor = _Expmap0Add.apply(z, bp, gap_b, c, far_saturation(z.dtype))[0]  # type: ignore[no-untyped-call]
    return out


def expmap0_add_from_lorentz(z: Tensor, bias: Tensor, *, c: CurvatureArg) -> Tensor:
    r""":math:`\exp_0(z) \oplus_c \exp_0(\text{bias})` (not projected) from the space part
    :math:`h_s` of its Lorentz coordinates (:func:`expmap0_add_lorentz_raw`, the tangent terms of
    ``z`` clamped at :func:`far_saturation`, the bias's at :func:`saturation`):

    .. math:: y = \frac{h_s}{1 + \sqrt{1 + c|h_s|^2}},\qquad
              h_s = \lambda_b\Big(S + q\frac{\sinh t\cosh t}{t}\,z\Big).

    The form for float64 data, which has no wider type to absorb the rounding of the bias's
    point :math:`b = \exp_0(\text{bias})`. :math:`h_s` is a sum of two terms accurate to a few
    ulps relatively, and the map back divides by a sum of non-negative terms (at least 2),
    taken without overflow (``hypot``), while the ball's closed form
    (:func:`expmap0_add_raw`) adds the gap :math:`1/\cosh^2 t_b` of the bias to
    :math:`q\cosh^2 t`, and :math:`h_0 = (1 + \lambda_b q\cosh^2 t)/s` of the raw coordinates
    pairs the exact :math:`\lambda_b` with the rounded point: both lose the gap of a bias near
    the shell. Measured by the accuracy report on float64 data (64 samples per band): at most
    1.7 hULP at curvatures 1e-4, 1e-3, 0.1, 1 and 100; on opposed far-out inputs whose sum
    comes back in, where the sum of the two rounded points (the composition
    ``mobius_add(expmap0(z), expmap0(bias))``) is off by up to 33 hULP, below 1 hULP.
    ``z``: (..., D); ``bias``: (..., D), broadcastable; both in the compute dtype.
    """
    b, lam_b = expmap0_with_gap(bias, c=c, t_max=saturation(z.dtype), gap=False)
    h: Tensor = _Expmap0AddLorentz.apply(z, b, lam_b, c, far_saturation(z.dtype), False)[0]  # type: ignore[no-untyped-call]
    hs = h[..., 1:]
    n = norm(hs) * _sqrt(c)
    return hs / (1 + torch.hypot(torch.ones_like(n), n))


# ---------------------------------------------------------------------------------------------
# Lorentz coordinates of expmap0(z) ⊕ b
# ---------------------------------------------------------------------------------------------


class _Expmap0AddLorentz(torch.autograd.Function):
    r"""Lorentz coordinates of :math:`\exp_0(z) \oplus_c b` from the tangent vector ``z``, the
    point ``b`` and its conformal factor :math:`\lambda_b`.

    Forward: with :math:`S = b + a z` and :math:`q = c|S|^2`,
    :math:`h_0 = (1 + \lambda_b q C)/s` and :math:`h_s = \lambda_b(S + q g z)`; with ``pad`` a
    zero column is appended.

    Backward, with :math:`\bar h_0`, :math:`\bar h_s` the incoming gradients and
    :math:`\bar\theta = \bar h_0/s`: the gradient in ``q`` is
    :math:`\bar q = \lambda_b(\bar\theta C + g\langle\bar h_s, z\rangle)`; in ``S``,
    :math:`\bar S = \lambda_b\bar h_s + 2c\,\bar q\,S`; in the scaled norm,
    :math:`\bar t = \langle\bar S, z\rangle a' + \lambda_b q(\bar\theta C' +
    \langle\bar h_s, z\rangle g')`. Then :math:`\bar z = a\bar S + \lambda_b q g\bar h_s +
    \bar t(c/t)z`, :math:`\bar b = \bar S`, :math:`\bar\lambda_b = q(\bar\theta C +
    g\langle\bar h_s, z\rangle) + \langle\bar h_s, S\rangle`, and, since
    :math:`\partial h_0/\partial c|_{q,t} = -h_0/(2c)`,
    :math:`\bar c = \bar t\,t/(2c) + \bar q\,q/c - \bar\theta(1 + \lambda_b q C)/(2c)`.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        z: Tensor,
        b: Tensor,
        lam_b: Tensor,
        c: CurvatureArg,
        t_max: float,
        pad: bool,
    ) -> tuple[Tensor, Tensor, Tensor]:
        # Returns (h, t, q): the last two are saved for the backward pass.
        t = scaled_norm(z, c)
        k = tangent_terms(t, t_max)
        s = b + k.a * z
        q = dot(s, s) * c
        h0 = (lam_b * q * k.cc).add_(1.0)
        if isinstance(c, Tensor) or c != 1.0:
            h0 = h0 / _sqrt(c)
        hs = torch.addcmul(s, q * k.g, z) * lam_b
        parts = [h0, hs, torch.zeros_like(h0)] if pad else [h0, hs]
        return torch.cat(parts, dim=-1), t, q

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        z, b, lam_b, c, t_max, _ = inputs
        _, t, q = output
        ctx.mark_non_differentiable(t, q)
        c_t = c if isinstance(c, Tensor) else None
        ctx.save_for_backward(z, b, lam_b, t, q, c_t)
        ctx.c_float, ctx.t_max = (None if c_t is not None else c), t_max

    @staticmethod
    def backward(ctx: Any, grad: Tensor, *_: Any) -> tuple[Tensor | None, ...]:
        z, b, lam_b, t, q, c_t = ctx.saved_tensors
        c: CurvatureArg = c_t if c_t is not None else ctx.c_float
        k = tangent_terms(t, ctx.t_max)
        d = z.shape[-1]
        theta = grad[..., :1]
        if isinstance(c, Tensor) or c != 1.0:
            theta = theta / _sqrt(c)
        gs = grad[..., 1 : d + 1]
        s = b + k.a * z
        sig_s = dot(gs, s)
        sig_z = dot(gs, z)
        inner = torch.addcmul(theta * k.cc, k.g, sig_z)
        grad_q = lam_b * inner
        grad_s = torch.addcmul(lam_b * gs, grad_q * (2 * c), s)
        da, dc, dg = tangent_derivatives(t, ctx.t_max, k)
        lq = lam_b * q
        grad_t = dot(grad_s, z) * da + lq * (theta * dc + sig_z * dg)
        grad_z = torch.addcmul(torch.addcmul(k.a * grad_s, lq * k.g, gs), grad_t * (c / k.tt), z)
        grad_b = grad_s.sum_to_size(b.shape) if ctx.needs_input_grad[1] else None
        grad_lam = None
        if ctx.needs_input_grad[2]:
            grad_lam = (q * inner + sig_s).sum_to_size(lam_b.shape)
        grad_c = None
        if ctx.needs_input_grad[3]:
            time = torch.addcmul(torch.ones_like(q), lq, k.cc)
            grad_c = _grad_c((grad_t * t / 2 + grad_q * q - theta * time / 2) / c, c)
        return grad_z, grad_b, grad_lam, grad_c, None, None


def expmap0_add_lorentz_raw(
    z: Tensor, bias: Tensor | None, *, c: CurvatureArg, t_max: float, pad: bool = False
) -> Tensor:
    r"""Lorentz coordinates of :math:`y = \exp_0(z) \oplus_c \exp_0(\text{bias})`.

    With :math:`S = \exp_0(z) + b`, :math:`b = \exp_0(\text{bias})` and :math:`q = c|S|^2`, the
    Möbius sum has the gap :math:`B_y = B_p B_b/(q + B_p B_b)` with :math:`1/B_p = \cosh^2 t`,
    so its Lorentz coordinates :math:`h = ((1 + c|y|^2)/(s B_y), 2y/B_y)` are

    .. math:: h_0 = \frac{1 + \lambda_b q \cosh^2 t}{s},\quad
              h_s = \lambda_b\Big(S + q\frac{\sinh t\cosh t}{t} z\Big)

    (:math:`\lambda_b = 2\cosh^2 t_b`; without a bias :math:`b = 0`, :math:`\lambda_b = 2`).
    Every term is a sum of non-negative quantities and no gap of a rounded point is formed, so
    the coordinates are accurate to a few ulps relative. ``z``: (..., D); ``bias``: (..., D)
    broadcastable, or None; returns (..., D + 1), or (..., D + 2) with a zero last column when
    ``pad`` (an even width for the fused attention kernel).
    """
    if bias is None:
        b = torch.zeros((1,) * z.dim(), dtype=z.dtype, device=z.device)
        lam_b = torch.full_like(b, 2.0)
    else:
        b, lam_b = expmap0_with_gap(bias, c=c, t_max=t_max, gap=False)
    out: Tensor = _Expmap0AddLorentz.apply(z, b, lam_b, c, t_max, pad)[0]  # type: ignore[no-untyped-call]
    return out


# ---------------------------------------------------------------------------------------------
# logmap0 of the Einstein midpoint, from Lorentz sums
# ---------------------------------------------------------------------------------------------


class _MidpointLogmap0(torch.autograd.Function):
    r"""Tangent vector at the origin of the midpoint whose Lorentz sums are
    :math:`A = (A_0, A_s) = (\sum w h_0, \sum w h_s)`.

    Forward: :math:`u = |A_s|/A_0` (the scaled norm of the Klein midpoint, clamped to
    :math:`[\tau, 1 - \epsilon/2]`), :math:`\rho = \min(\operatorname{artanh}(u)/2,
    r_{out})/u`, and the result :math:`\rho A_s/(s A_0)` (``A_0 <= 0``, all weights zero, is
    read as ``A_0 = 1``).

    Backward, with :math:`\phi = \langle\bar o, A_s\rangle`, :math:`\omega = \phi/(s A_0^2)` and
    :math:`\rho' = d\rho/du = (1/(2(1-u^2)) - \rho)/u` (inside the clamps; :math:`-\rho/u`
    beyond :math:`r_{out}`; 0 where ``u`` is clamped):
    :math:`\bar A_s = \rho\bar o/(s A_0) + \omega\rho' A_s/(u A_0)`,
    :math:`\bar A_0 = -\omega(\rho + \rho' u)`, and, the result being proportional to
    :math:`1/s`, :math:`\bar c = -\langle\bar o, o\rangle/(2c)`.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(agg: Tensor, c: CurvatureArg, dim: int, r_out: float) -> tuple[Tensor, ...]:
        # Returns (o, den, u_raw, u, half, ratio): all but o are saved for the backward pass.
        a0 = agg[..., :1]
        a_s = agg[..., 1 : dim + 1]
        den = torch.where(a0 > 0, a0, torch.ones_like(a0))
        u_raw = dot(a_s, a_s).sqrt() / den
        u = u_raw.clamp(min=TINY, max=max_norm(agg.dtype))
        half = torch.atanh(u) * 0.5
        ratio = half.clamp(max=r_out) / u
        f = ratio / (den * _sqrt(c))
        return a_s * f, den, u_raw, u, half, ratio

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        agg, c, dim, r_out = inputs
        _, den, u_raw, u, half, ratio = output
        ctx.mark_non_differentiable(den, u_raw, u, half, ratio)
        c_t = c if isinstance(c, Tensor) else None
        ctx.save_for_backward(agg, den, u_raw, u, half, ratio, c_t)
        ctx.c_float, ctx.dim, ctx.r_out = (None if c_t is not None else c), dim, r_out

    @staticmethod
    def backward(ctx: Any, grad: Tensor, *_: Any) -> tuple[Tensor | None, ...]:
        agg, den, u_raw, u, half, ratio, c_t = ctx.saved_tensors
        c: CurvatureArg = c_t if c_t is not None else ctx.c_float
        dim: int = ctx.dim
        sc = _sqrt(c)
        a_s = agg[..., 1 : dim + 1]
        f = ratio / (den * sc)
        phi = dot(grad, a_s)
        gap = (1 - u) * (1 + u)
        # (below TINY the first form gives 0 by itself: ratio = 1/2 and gap = 1 there)
        inner = (half <= ctx.r_out).to(u.dtype)
        dratio = (inner * 0.5 / gap - ratio) / u * (u_raw <= max_norm(agg.dtype)).to(u.dtype)
        w = phi / (den * den * sc)
        grad_a = torch.addcmul(f * grad, w * dratio / (u * den), a_s)
        grad_den = -w * (ratio + dratio * u)
        grad_a0 = torch.where(agg[..., :1] > 0, grad_den, 0.0)
        parts = [grad_a0, grad_a]
        if agg.shape[-1] > dim + 1:
            parts.append(torch.zeros_like(agg[..., dim + 1 :]))
        grad_c = None
        if ctx.needs_input_grad[1]:
            grad_c = _grad_c(-(phi * f) / (2 * c), c)
        return torch.cat(parts, dim=-1), grad_c, None, None


def midpoint_logmap0(
    agg: Tensor, dead: Tensor | None, *, c: CurvatureArg, dim: int, dtype: torch.dtype
) -> Tensor:
    r"""``logmap0`` of the Einstein midpoint whose Lorentz sums are ``agg``.

    The weighted Einstein midpoint of points with Lorentz coordinates :math:`h_j` is the Klein
    point :math:`k = \sum w h_s/(s\sum w h_0)`; with :math:`u = s|k|`, its tangent vector at
    the origin is :math:`\operatorname{artanh}(u)\,\sum w h_s/(2 s u \sum w h_0)` (``u``
    clamped to the outermost shell of ``agg``'s dtype and the norm to the representable radius
    of ``dtype``, as ``logmap0`` of the stored point would be). It replaces
    ``logmap0(klein_to_poincare(k))``. Rows with :math:`\sum w h_0 = 0` (every weight zero) and
    ``dead`` rows ((..., 1) booleans) give the zero vector. ``agg``: (..., >= dim + 1), time
    coordinate first; returns (..., dim) in ``dtype``.
    """
    r_out = saturation(dtype)
    out: Tensor = _MidpointLogmap0.apply(agg, c, dim, r_out)[0]  # type: ignore[no-untyped-call]
    out = out.to(dtype)
    if dead is not None:
        out = out.masked_fill(dead, 0.0)
    return out


# ---------------------------------------------------------------------------------------------
# Scores from cosh of the distance
# ---------------------------------------------------------------------------------------------


class _CoshScore(torch.autograd.Function):
    r"""Scores :math:`-\beta f(d)` from :math:`g - 1 = \cosh(s d) - 1` (see :func:`cosh_score`;
    the derivatives in :math:`g - 1` are those in :math:`g`).

    Backward, with :math:`\bar\sigma` the incoming gradient: for ``"cosh"``,
    :math:`\bar g = -\beta\bar\sigma`, :math:`\bar\beta = -\sum\bar\sigma(g - 1)` and no
    curvature term; otherwise :math:`\partial d/\partial g = 1/(s\sinh(s d)) =
    1/(s\sqrt{(g-1)(g+1)})` (0 where :math:`d = 0`), :math:`f' = 1` or :math:`2d`,
    :math:`\bar g = -\beta\bar\sigma f'\,\partial d/\partial g`,
    :math:`\bar\beta = -\sum\bar\sigma f(d)`, and, ``g`` held fixed,
    :math:`\partial f/\partial c = -f'd/(2c)`, so :math:`\bar c = \sum\bar\sigma\beta f' d/(2c)`.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        g_minus_1: Tensor, beta: Tensor, c: CurvatureArg, score: str, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        # Returns (scores, g - 1 clamped in dtype): the second is saved for the backward pass.
        gm1 = g_minus_1.to(dtype).clamp(min=0.0)
        neg_beta = -beta.to(dtype)
        if score == "cosh":
            return gm1 * neg_beta, gm1
        if torch.finfo(g_minus_1.dtype).tiny < torch.finfo(dtype).tiny:
            # g - 1 given in a wider range than dtype's: below dtype's smallest normal it would
            # round to (or lose its bits as) a subnormal, while the distance, about
            # sqrt(2 (g - 1)), is a normal number. arcosh(1 + x) = log1p(x + sqrt(x) sqrt(x + 2))
            # with sqrt(x) taken before the rounding keeps it.
            root = g_minus_1.clamp(min=0.0).sqrt().to(dtype)
            sd = torch.log1p(torch.addcmul(gm1, root, (gm1 + 2).sqrt_()))
        else:
            sd = acosh1p(gm1)
        d = _distance(sd, c)
        return (d.mul_(d) if score == "squared" else d).mul_(neg_beta), gm1

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        g_minus_1, beta, c, score, _ = inputs
        gm1 = output[1]
        ctx.mark_non_differentiable(gm1)
        c_t = c if isinstance(c, Tensor) else None
        ctx.save_for_backward(gm1, beta, c_t)
        ctx.c_float, ctx.score = (None if c_t is not None else c), score
        ctx.g_dtype = g_minus_1.dtype

    @staticmethod
    def backward(ctx: Any, grad: Tensor, *_: Any) -> tuple[Tensor | None, ...]:
        gm1, beta, c_t = ctx.saved_tensors
        c: CurvatureArg = c_t if c_t is not None else ctx.c_float
        score: str = ctx.score
        neg_beta = -beta.to(grad.dtype)
        grad_g = grad_beta = grad_c = None
        if score == "cosh":
            if ctx.needs_input_grad[0]:
                grad_g = grad * neg_beta
            if ctx.needs_input_grad[1]:
                grad_beta = -(grad * gm1).sum_to_size(beta.shape)
        else:
            # sinh(s d) = sqrt((g - 1)(g + 1)), s d = log1p((g - 1) + sinh(s d)): one root
            sinh_sd = (gm1 + 2).mul_(gm1).sqrt_()
            d = _distance(torch.log1p(gm1 + sinh_sd), c)
            f = d * d if score == "squared" else d
            if score == "squared":
                # f'(d) dd/dg = 2d/(s sinh(s d)) = (2/c) (s d)/sinh(s d), whose limit at d = 0
                # is 2/c: (s d)/sinh(s d) is 1 to the last bit below TINY
                # (held here as s f'(d) dd/dg = 2 (s d)/(s sinh(s d)); the 1/s comes below)
                sd = torch.log1p(gm1 + sinh_sd)
                ratio = torch.where(sinh_sd > TINY, sd / sinh_sd.clamp(min=TINY), 1.0)
                ddg = ratio.mul_(2.0)
                if isinstance(c, Tensor) or c != 1.0:
                    ddg = ddg / _sqrt(c)
            else:
                # dd/dg = 1/(s sinh(s d)), 0 where d is 0 (the distance is not differentiable
                # there; 0 is its subgradient of least norm)
                ddg = sinh_sd.clamp_(min=TINY).reciprocal_().masked_fill_(gm1 <= 2 * TINY**2, 0.0)
            if ctx.needs_input_grad[0]:
                scale = neg_beta / _sqrt(c) if isinstance(c, Tensor) or c != 1.0 else neg_beta
                grad_g = (grad * ddg).mul_(scale)
            if ctx.needs_input_grad[1]:
                grad_beta = -(grad * f).sum_to_size(beta.shape)
            if ctx.needs_input_grad[2]:
                # d f / d c at fixed g: -f' d/(2c) = -f/(2c) (distance) or -f/c (squared)
                per = f / (2 * c) if score == "distance" else f / c
                grad_c = _grad_c(grad * per * (-neg_beta), c)
        if grad_g is not None:
            grad_g = grad_g.to(ctx.g_dtype)
        if grad_beta is not None:
            grad_beta = grad_beta.to(beta.dtype)
        if grad_c is not None and isinstance(c, Tensor):
            grad_c = grad_c.to(c.dtype)
        return grad_g, grad_beta, grad_c, None, None


def _distance(sd: Tensor, c: CurvatureArg) -> Tensor:
    """``d = (s d) / s`` in place on the fresh tensor ``sd`` (no division at ``c = 1``)."""
    if isinstance(c, Tensor):
        return sd.div_(c.sqrt())
    return sd.div_(math.sqrt(c)) if c != 1.0 else sd


def cosh_score(
    g_minus_1: Tensor, beta: Tensor, *, c: CurvatureArg, score: str, dtype: torch.dtype
) -> Tensor:
    r"""Attention scores :math:`-\beta f(d)` from :math:`g - 1 = \cosh(s\,d) - 1` of pairs.

    :math:`f(d) = d = \operatorname{arcosh}(g)/s` (``"distance"``), :math:`d^2`
    (``"squared"``) or :math:`g - 1` (``"cosh"``), with
    :math:`\operatorname{arcosh}(1 + x) = \log(1 + x + \sqrt{x(x+2)})` (:func:`acosh1p`: a sum
    of non-negative terms). ``g - 1`` is taken as given (form it without cancellation, e.g.
    with :func:`lorentz_cosh_minus_one`), rounded to ``dtype``, and everything after (values and
    the backward pass, which keeps only :math:`g - 1`) runs in ``dtype``; negative values
    (rounding) count as 0. Where ``g - 1`` comes in a dtype of wider range (float64 for float32
    scores), :math:`\sqrt{g - 1}` is taken before the rounding, so that a ``g - 1`` below the
    normal range of ``dtype`` (about ``1e-38`` in float32) still gives its distance
    :math:`\approx\sqrt{2(g - 1)}/s`, which is a normal number down to ``g - 1`` of about
    ``1e-76``. Replaces ``-beta * f(pairwise_dist(x, y))``. ``g_minus_1``:
    (..., N, M); ``beta``: broadcastable; returns (..., N, M) in ``dtype``.
    """
    out: Tensor = _CoshScore.apply(g_minus_1, beta, c, score, dtype)[0]  # type: ignore[no-untyped-call]
    return out


#: A pair is recomputed from the difference of its Lorentz coordinates when the Gram product
#: leaves ``g - 1`` below this fraction of ``c h_x0 h_y0`` (the size of the terms that cancel):
#: there the product's absolute error, about ``eps c h_x0 h_y0``, would exceed ``2^-28`` of
#: ``g - 1``, i.e. a sixteenth of a float32 ulp with float64 coordinates.
_CLOSE = 2.0**-24
#: Elements of the pair differences formed at once by the branch-free form.
_PAIR_CHUNK = 1 << 22


class _LorentzGram(torch.autograd.Function):
    r""":math:`c(h_{x0}h_{y0} - \langle h_{xs}, h_{ys}\rangle) - 1` of all pairs: the product in
    the dtype of the coordinates, the result and the backward pass in ``dtype``.

    With :math:`J = \operatorname{diag}(1, -1, \dots, -1)` and :math:`\bar G` the incoming
    gradient: :math:`\bar h_x = c\,\bar G\,h_y J`, :math:`\bar h_y = c\,\bar G^T h_x J` and
    :math:`\bar c = \sum \bar G\,(G + 1)/c = \sum \bar G\,h_x J h_y^T` (the first
    product again, reduced). The products of the backward pass run in
    ``dtype``: only the forward value cancels (for close pairs, which the caller recomputes),
    the gradient is a sum of the incoming gradients weighted by coordinates.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(hx: Tensor, hy: Tensor, c: CurvatureArg, dtype: torch.dtype) -> Tensor:
        width = hx.shape[-1]
        sign = torch.full((width,), -1.0, dtype=hx.dtype, device=hx.device)
        sign[0] = 1.0
        cq = c.to(hx.dtype) if isinstance(c, Tensor) else c
        return (torch.matmul(hx * (sign * cq), hy.transpose(-1, -2)) - 1).to(dtype)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        hx, hy, c, _ = inputs
        c_t = c if isinstance(c, Tensor) else None
        ctx.save_for_backward(hx, hy, c_t)
        ctx.c_float = None if c_t is not None else c

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        hx, hy, c_t = ctx.saved_tensors
        c: CurvatureArg = c_t if c_t is not None else ctx.c_float
        width = hx.shape[-1]
        sign = torch.full((width,), -1.0, dtype=grad.dtype, device=grad.device)
        sign[0] = 1.0
        cq = c.to(grad.dtype) if isinstance(c, Tensor) else c
        grad_x = grad_y = grad_c = None
        want_c = ctx.needs_input_grad[2] and isinstance(c, Tensor)
        if ctx.needs_input_grad[0] or want_c:
            gx = torch.matmul(grad, hy.to(grad.dtype)) * sign
            if want_c:
                # sum of grad * (G + 1)/c = sum of grad * (h_x J h_y^T): the same product
                grad_c = _grad_c((gx * hx.to(grad.dtype)).sum(-1, keepdim=True), c)
            grad_x = (gx * cq).sum_to_size(hx.shape).to(hx.dtype)
        if ctx.needs_input_grad[1]:
            gy = torch.matmul(grad.transpose(-1, -2), hx.to(grad.dtype)) * (sign * cq)
            grad_y = gy.sum_to_size(hy.shape).to(hy.dtype)
        if grad_c is not None and isinstance(c, Tensor):
            grad_c = grad_c.to(c.dtype)
        return grad_x, grad_y, grad_c, None


def lorentz_cosh_minus_one(
    hx: Tensor, hy: Tensor, *, c: CurvatureArg, dtype: torch.dtype | None = None
) -> Tensor:
    r""":math:`g - 1 = \cosh(s\,d(x_i, y_j)) - 1` of all pairs, from Lorentz coordinates.

    :math:`g = -c\langle h_x, h_y\rangle_L = c(h_{x0}h_{y0} - \langle h_{xs}, h_{ys}\rangle)`
    is one matrix product (in the dtype of the coordinates, float64 in the attention), but
    :math:`g - 1` cancels for close pairs (to about :math:`\epsilon\,c\,h_{x0}h_{y0}`: equal
    points get :math:`d \approx \sqrt\epsilon\cosh r` instead of 0). Those pairs
    (:math:`g - 1 < 2^{-24} c\,h_{x0}h_{y0}`) are recomputed from the difference of the
    coordinates, :math:`g - 1 = \tfrac c2\langle\Delta, \Delta\rangle_L =
    \tfrac c2(|\Delta_s|^2 - \Delta_0^2)` with :math:`\Delta = h_x - h_y` (exact for points of
    the hyperboloid: :math:`\langle h, h\rangle_L = -1/c`), which is exactly 0 for equal points
    and whose error is about :math:`\epsilon\,c\,h_0^2\,d` instead of
    :math:`\epsilon\,c\,h_0^2`. The result is rounded to ``dtype`` (default: the coordinates'
    dtype) once, and the backward pass of the product runs in ``dtype``. ``hx``: (..., N, W),
    ``hy``: (..., M, W), time coordinate first (extra zero columns are ignored); returns
    (..., N, M), differentiable.
    """
    out_dtype = hx.dtype if dtype is None else dtype
    width = hx.shape[-1]
    cq = c.to(hx.dtype) if isinstance(c, Tensor) else c
    gm1: Tensor = _LorentzGram.apply(hx, hy, cq, out_dtype)  # type: ignore[no-untyped-call]
    with torch.no_grad():
        # the test needs no precision: a float32 outer product of the time coordinates
        bound = (hx[..., :1].to(out_dtype) * (cq * _CLOSE)) * hy[..., :1].to(out_dtype).transpose(
            -1, -2
        )
        near_mask = gm1 <= bound
    sign = torch.full((width,), -1.0, dtype=hx.dtype, device=hx.device)
    sign[0] = 1.0
    if not host_branches(hx, hy):
        # Branch-free (traced) form: the Lorentz difference of every pair, in chunks of rows of
        # bounded memory, taken where the product has cancelled.
        n, m = hx.shape[-2], hy.shape[-2]
        rows = max(1, _PAIR_CHUNK // max(1, m * width * math.prod(gm1.shape[:-2])))
        parts = []
        for start in range(0, n, rows):
            delta = hx[..., start : start + rows, :].unsqueeze(-2) - hy.unsqueeze(-3)
            parts.append((delta * delta * (-sign)).sum(-1) * 0.5)
        near_all = torch.cat(parts, dim=-2) if parts else gm1
        if isinstance(cq, Tensor) or cq != 1.0:
            near_all = near_all * cq
        return torch.where(near_mask, near_all.to(out_dtype), gm1)
    with torch.no_grad():
        close = near_mask.nonzero(as_tuple=True)
    if close[0].numel() == 0:
        return gm1
    lead = close[:-2]
    i, j = close[-2], close[-1]
    hxb = hx.expand(*gm1.shape[:-2], hx.shape[-2], width)
    hyb = hy.expand(*gm1.shape[:-2], hy.shape[-2], width)
    delta = hxb[(*lead, i)] - hyb[(*lead, j)]
    near = (delta * delta * (-sign)).sum(-1) * 0.5
    if isinstance(cq, Tensor):
        near = near * cq.expand(gm1.shape)[close]
    elif cq != 1.0:
        near = near * cq
    # in place on the fresh product (its backward needs neither it nor its values)
    return gm1.index_put_(close, near.to(out_dtype))
