"""Attention on the Poincaré ball: distance scores and Einstein-midpoint aggregation.

For queries ``q_i``, keys ``k_j`` and values ``v_j`` (points of the ball), head by head:

* scores ``s_ij = -beta * f(d(q_i, k_j))`` with ``f(d) = d`` (``"distance"``), ``d^2``
  (``"squared"``) or ``cosh(sqrt(c) d) - 1`` (``"cosh"``);
* weights ``w_ij = softmax_j(s_ij + mask_ij)``;
* output ``o_i`` = the weighted Einstein midpoint of the ``v_j``: with the Lorentz
  coordinates ``h_j = (h_j0, h_js)`` of ``v_j`` (``h_j0 = γ_j / sqrt(c)`` and ``h_js = γ_j κ_j``
  for the Klein point ``κ_j`` and its Lorentz factor ``γ_j``), ``o_i`` is the Klein point
  ``Σ_j w_ij h_js / (sqrt(c) Σ_j w_ij h_j0)`` mapped back to the Poincaré ball.

Both the numerator and the denominator of the midpoint are linear in the weights, so the
aggregation is one matrix product ``w @ h`` per head. For the ``"cosh"`` score,
``cosh(sqrt(c) d(x, y)) = -c <h_x, h_y>_L`` (the Minkowski product of Lorentz coordinates), so
the score is a plain dot product of augmented vectors and the whole attention runs inside
:func:`torch.nn.functional.scaled_dot_product_attention`; no ``(..., N, M, D)`` tensor is formed
for any score.

Accuracy. The midpoint is formed from the Minkowski norm of the Lorentz sums, which cancels
for far-out values. On the explicit path (``"distance"``, ``"squared"``, or any score with
``need_weights=True``) the value coordinates and their sums are formed in float64, and the
output stays accurate for points over the whole representable radius of float32. The fused
``"cosh"`` path computes in the compute dtype while every point satisfies ``c|x|^2 <= 31/33``
(hyperbolic radius about 4.2 / sqrt(c)), where Lorentz coordinates lose at most about
``32^2 eps``; a call with a point beyond runs in float64. In float64 the Lorentz coordinates
saturate at about half the representable radius (18.7 at ``c = 1``), beyond every float32
input.

In :class:`HyperbolicMultiHeadAttention` the head points are not formed in the ball: the
Lorentz coordinates of ``expmap0(z) ⊕_c b`` come in closed form from the tangent vector ``z``
of the projection (:func:`_tangent_to_lorentz`, accurate to a few ulps relative), and the head
outputs go from the Lorentz sums straight to their tangent vectors at the origin
(:func:`_midpoint_tangent`), which the head merge and the output projection consume. The fused
``"cosh"`` path uses these coordinates in the compute dtype. Explicit scores of calls computing
below float64 (``"distance"``, ``"squared"``, ``need_weights=True``) take ``cosh(sqrt(c) d)``
from one float64 product of the same coordinates, ``g``, and
``d = log1p(g - 1 + sqrt((g - 1)(g + 1))) / sqrt(c)`` (``= acosh(g) / sqrt(c)``) with ``g - 1``
formed in float64; the value sums are in the compute dtype, as on the fused path
(:func:`_aggregate_lorentz`). Both switch to the head points as stored (with float64 Lorentz
sums, as above) when a head point lies beyond ``c|x|^2 = 31/33``; calls computing in float64
always take the points. The elementwise maps have hand-written backward passes that keep only
their inputs and per-row scalars.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

import poincare as P

from .layers import (
    _TINY,
    HyperbolicLinear,
    _bias_point,
    _check_curvature,
    _check_probability,
    _dot,
    _scaled_norm,
    _t_derivatives,
    _t_functions,
    cast_point,
    compute_dtype,
)

__all__ = ["HyperbolicMultiHeadAttention", "Score", "hyperbolic_attention"]

Score = Literal["distance", "squared", "cosh"]
_SCORES: tuple[str, ...] = get_args(Score)


def _check_score(score: str) -> None:
    if score not in _SCORES:
        raise ValueError(f"score must be one of {_SCORES}, got {score!r}")


def _additive_mask(mask: Tensor, dtype: torch.dtype, name: str) -> Tensor:
    """A boolean mask (True = not allowed) or a float additive mask as an additive float mask."""
    if mask.dtype == torch.bool:
        zeros = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
        return zeros.masked_fill(mask, float("-inf"))
    if mask.is_floating_point():
        return mask.to(dtype)
    raise TypeError(f"{name} must be a bool or floating tensor, got {mask.dtype}")


def _causal_mask(n: int, m: int, device: torch.device) -> Tensor:
    """Boolean (n, m) mask, True above the diagonal (key j > query i is not allowed)."""
    return torch.ones(n, m, dtype=torch.bool, device=device).triu(1)


def _lorentz_query(hq: Tensor, beta: Tensor | float, c: float) -> Tensor:
    """``beta * c * (-h_0, h_s)``, so that ``q~ · h_k = -beta cosh(sqrt(c) d)``."""
    qt = torch.cat((-hq[..., :1], hq[..., 1:]), dim=-1)
    return qt * (beta * c) if isinstance(beta, Tensor) else qt * (float(beta) * c)


def _max_norm(dtype: torch.dtype) -> float:
    """The outermost representable scaled norm ``1 - eps/2`` of ``dtype``."""
    return 1.0 - torch.finfo(dtype).eps / 2


@functools.lru_cache(maxsize=32)
def _minkowski_sign(width: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The constant ``(-1, 1, ..., 1)`` of length ``width`` (never modified in place)."""
    sign = torch.ones(width, dtype=dtype, device=device)
    sign[0] = -1.0
    return sign


class _TangentLorentzFunction(torch.autograd.Function):
    """Lorentz coordinates of ``expmap0(z) ⊕_c b`` (see :func:`_tangent_to_lorentz`) from the
    tangent vector ``z``, the point ``b`` and its conformal factor ``λ_b``, with a hand-written
    backward pass that keeps only ``z``, ``b``, ``λ_b`` and per-row scalars (``expmap0(z) + b`` is
    recomputed)."""

    @staticmethod
    def forward(
        ctx: Any,
        z: Tensor,
        b: Tensor,
        lam_b: Tensor,
        c: float,
        t_max: float,
        pad: bool,
    ) -> Tensor:
        t = _scaled_norm(z, c)
        tt, a, cc, g, sh = _t_functions(t, t_max)
        s_ = torch.addcmul(b, a, z)  # expmap0(z) + b
        q = _dot(s_, s_) * c
        h0 = (lam_b * q * cc).add_(1.0)
        if c != 1.0:
            h0 = h0 / math.sqrt(c)
        hs = torch.addcmul(s_, q * g, z) * lam_b
        ctx.save_for_backward(z, b, lam_b, t, tt, a, cc, g, sh, q)
        ctx.c, ctx.t_max = c, t_max
        parts = [h0, hs, torch.zeros_like(h0)] if pad else [h0, hs]
        return torch.cat(parts, dim=-1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        z, b, lam_b, t, tt, a, cc, g, sh, q = ctx.saved_tensors
        c: float = ctx.c
        t_max: float = ctx.t_max
        d = z.shape[-1]
        g0 = grad[..., :1] / math.sqrt(c) if c != 1.0 else grad[..., :1]
        gs = grad[..., 1 : d + 1]
        s_ = torch.addcmul(b, a, z)
        sig1 = _dot(gs, s_)
        sig2 = _dot(gs, z)
        kappa = lam_b * torch.addcmul(g0 * cc, g, sig2)
        v = torch.addcmul(lam_b * gs, kappa * (2 * c), s_)
        da, dc, dg = _t_derivatives(t, t_max, tt, a, cc, g, sh)
        lq = lam_b * q
        tau = _dot(v, z) * da + lq * (g0 * dc + sig2 * dg)
        grad_z = torch.addcmul(torch.addcmul(a * v, lq * g, gs), tau * (c / tt), z)
        grad_b = v.sum_to_size(b.shape) if ctx.needs_input_grad[1] else None
        grad_lam = None
        if ctx.needs_input_grad[2]:
            grad_lam = (q * (g0 * cc + g * sig2) + sig1).sum_to_size(lam_b.shape)
        return grad_z, grad_b, grad_lam, None, None, None


def _tangent_to_lorentz(
    z: Tensor, bias: Tensor | None, *, c: float, t_max: float, pad: bool
) -> Tensor:
    """Lorentz coordinates of ``y = expmap0(z) ⊕_c expmap0(bias)`` straight from tangent vectors.

    With ``s = sqrt(c)``, ``t = s|z|`` (clamped to ``t_max``, the representable shell, where
    ``expmap0`` saturates), ``p = expmap0(z) = tanh(t)/t z``, ``b = expmap0(bias)``,
    ``S = p + b`` and ``q = c|S|^2``, the Möbius sum has the gap
    ``1 - c|y|^2 = B_p B_b / (q + B_p B_b)`` with ``1/B_p = cosh^2 t``, so its Lorentz
    coordinates are

        ``h_0 = (1 + λ_b q cosh^2 t) / s``,  ``h_s = λ_b (S + q sinh(t) cosh(t)/t z)``

    (``λ_b = 2/B_b = 2 cosh^2 t_b``; without a bias ``b = 0``, ``λ_b = 2`` and
    ``h = (cosh 2t / s, sinh(2t)/t z)``). Every term is a sum of non-negative quantities and no
    gap of a rounded point is formed, so the coordinates are accurate to a few ulps relative.
    Shapes: ``z`` (..., D); ``bias`` (..., D) tangent vectors broadcast against it; returns
    (..., D + 1), or (..., D + 2) with a zero last column when ``pad`` (an even width for the
    fused attention kernel).
    """
    if bias is None:
        b = torch.zeros((1,) * z.dim(), dtype=z.dtype, device=z.device)
        lam_b = torch.full_like(b, 2.0)
    else:
        b, lam_b = _bias_point(bias, c=c, t_max=t_max, gap=False)
    out: Tensor = _TangentLorentzFunction.apply(z, b, lam_b, c, t_max, pad)  # type: ignore[no-untyped-call]
    return out


class _MidpointTangentFunction(torch.autograd.Function):
    """The tangent vector of :func:`_midpoint_tangent` (before the dtype cast), with a
    hand-written backward pass that keeps only ``agg`` and per-row scalars."""

    @staticmethod
    def forward(
        ctx: Any,
        agg: Tensor,
        c: float,
        dim: int,
        r_out: float,
    ) -> Tensor:
        a0 = agg[..., :1]
        a_s = agg[..., 1 : dim + 1]
        den = torch.where(a0 > 0, a0, torch.ones_like(a0))
        u_raw = _dot(a_s, a_s).sqrt() / den
        u = u_raw.clamp(min=_TINY, max=_max_norm(agg.dtype))
        half = torch.atanh(u) * 0.5
        ratio = half.clamp(max=r_out) / u  # (norm of the tangent vector) * s / u
        f = ratio / (den * math.sqrt(c))
        ctx.save_for_backward(agg, den, u_raw, u, half, ratio)
        ctx.c, ctx.dim, ctx.r_out = c, dim, r_out
        return a_s * f

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        agg, den, u_raw, u, half, ratio = ctx.saved_tensors
        c: float = ctx.c
        dim: int = ctx.dim
        r_out: float = ctx.r_out
        sc = math.sqrt(c)
        a_s = agg[..., 1 : dim + 1]
        f = ratio / (den * sc)
        phi = _dot(grad, a_s)
        # d ratio / du: (1/(2(1-u^2)) - ratio)/u on the unclamped branch, -ratio/u beyond r_out,
        # and 0 where u itself is clamped.
        gap = (1 - u) * (1 + u)
        # (below _TINY the first form gives 0 by itself: ratio = 1/2 and gap = 1 there)
        inner = (half <= r_out).to(u.dtype)
        dratio = (inner * 0.5 / gap - ratio) / u * (u_raw <= _max_norm(agg.dtype)).to(u.dtype)
        w = phi / (den * den * sc)
        grad_a = torch.addcmul(f * grad, w * dratio / (u * den), a_s)
        grad_den = -w * (ratio + dratio * u)
        grad_a0 = torch.where(agg[..., :1] > 0, grad_den, 0.0)
        parts = [grad_a0, grad_a]
        if agg.shape[-1] > dim + 1:
            parts.append(torch.zeros_like(agg[..., dim + 1 :]))
        return torch.cat(parts, dim=-1), None, None, None


def _midpoint_tangent(
    agg: Tensor, dead: Tensor | None, *, c: float, dim: int, dtype: torch.dtype
) -> Tensor:
    """``logmap0`` of the midpoint whose Lorentz sums are ``agg = (Σ w h_0, Σ w h_s, ...)``.

    The Klein point is ``k = Σ w h_s / (s Σ w h_0)``; with ``u = s|k|``, its tangent vector at
    the origin is ``artanh(u)/(2 s u Σ w h_0) Σ w h_s`` (``u`` clamped to the outermost shell of
    ``agg``'s dtype, the norm to the representable radius of ``dtype``, as ``logmap0`` of the
    stored point would). Rows with ``Σ w h_0 = 0`` (every weight zero) and ``dead`` rows give
    the zero vector. ``agg``: (..., >= dim + 1); returns (..., dim) in ``dtype``.
    """
    r_out = math.atanh(_max_norm(dtype))
    out: Tensor = _MidpointTangentFunction.apply(agg, c, dim, r_out)  # type: ignore[no-untyped-call]
    out = out.to(dtype)
    if dead is not None:
        out = out.masked_fill(dead, 0.0)
    return out


def hyperbolic_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    c: float = 1.0,
    beta: Tensor | float = 1.0,
    score: Score = "distance",
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    need_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Hyperbolic attention of queries over keys, aggregating values by Einstein midpoint.

    ``o_i = midpoint_E({v_j}, w_ij)`` with ``w_ij = softmax_j(-beta f(d_c(q_i, k_j)) + mask_ij)``
    (see the module docstring for ``f`` and the midpoint).

    Args:
        q: (..., N, D) query points in the ball.
        k: (..., M, D) key points, same leading shape as ``q``, ``M >= 1``.
        v: (..., M, Dv) value points.
        c: curvature (> 0).
        beta: positive temperature, a float or a tensor broadcastable to
            ``q.shape[:-2] + (1, 1)`` (e.g. ``(heads, 1, 1)``).
        score: ``"distance"``, ``"squared"`` or ``"cosh"``.
        attn_mask: bool (True = not allowed) or additive float mask broadcastable to
            ``(..., N, M)``.
        is_causal: forbid key ``j > i`` for query ``i`` (combined with ``attn_mask``).
        dropout_p: dropout probability on the attention weights (pass 0 in evaluation).
        need_weights: also return the weights ``(..., N, M)`` (after dropout).

    Returns:
        ``(output (..., N, Dv) in the ball, weights or None)``, in the dtype of ``q``. A row
        whose keys are all masked (or whose weights are all dropped) returns the origin and
        zero weights.

    Raises:
        TypeError/ValueError on non-tensors, integer dtypes, wrong ranks or shapes, an unknown
        ``score``, a mask of the wrong dtype or shape, ``c <= 0`` or ``dropout_p`` outside
        [0, 1).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must have a floating dtype, got {t.dtype}")
        if t.dim() < 2:
            raise ValueError(f"{name} must have shape (..., L, D), got {tuple(t.shape)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same last dim, got {q.shape[-1]}, {k.shape[-1]}")
    if k.shape[:-1] != v.shape[:-1]:
        raise ValueError(
            f"k and v must agree in all but the last dim, got {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[:-2] != k.shape[:-2]:
        raise ValueError(
            f"q and k must have the same leading dims, got {tuple(q.shape)}, {tuple(k.shape)}"
        )
    if k.shape[-2] < 1:
        raise ValueError("k must hold at least one key")
    _check_score(score)
    c = _check_curvature(c)
    dropout_p = _check_probability(dropout_p, "dropout_p")
    if isinstance(beta, Tensor):
        if beta.dim() >= 1 and (beta.shape[-1] != 1 or (beta.dim() >= 2 and beta.shape[-2] != 1)):
            raise ValueError(f"beta must be broadcastable to (..., 1, 1), got {tuple(beta.shape)}")
    elif not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a positive finite float or a tensor, got {beta!r}")

    in_dtype = q.dtype
    dtype = compute_dtype(in_dtype)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    if isinstance(beta, Tensor):
        beta = beta.to(dtype)
    score_shape = (*q.shape[:-2], q.shape[-2], k.shape[-2])
    mask, dead = _prepare_mask(attn_mask, is_causal, score_shape, dtype, q.device)
    fast = score == "cosh" and not need_weights
    qa, ka, va = _encode(q, k, v, c=c, beta=beta, score=score, fast=fast)
    agg, weights = _aggregate(
        qa,
        ka,
        va,
        c=c,
        beta=beta,
        score=score,
        mask=mask,
        is_causal=is_causal,
        dropout_p=dropout_p,
        need_weights=need_weights,
    )
    out = _decode(agg, dead, c=c, dtype=dtype)
    if weights is not None:
        if dead is not None:
            weights = weights.masked_fill(dead, 0.0)
        weights = weights.to(in_dtype)
    return cast_point(out, in_dtype, c=c), weights


def _prepare_mask(
    attn_mask: Tensor | None,
    is_causal: bool,
    score_shape: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[Tensor | None, Tensor | None]:
    """Validate ``attn_mask``; return (additive mask or None, fully-masked rows or None).

    With ``attn_mask`` given, ``is_causal`` is merged into it. Rows whose every key is masked
    are reported as a boolean (..., N, 1) tensor and unmasked in the returned mask (so that the
    softmax stays finite); the caller replaces their output.
    """
    if attn_mask is None:
        return None, None
    if not isinstance(attn_mask, Tensor):
        raise TypeError(f"attn_mask must be a tensor, got {type(attn_mask).__name__}")
    try:
        shape = torch.broadcast_shapes(attn_mask.shape, score_shape)  # type: ignore[no-untyped-call]
    except RuntimeError:
        shape = None
    if shape != torch.Size(score_shape):
        raise ValueError(
            f"attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to the scores "
            f"{score_shape}"
        )
    mask = _additive_mask(attn_mask, dtype, "attn_mask")
    n, m = score_shape[-2], score_shape[-1]
    if is_causal:
        mask = mask.masked_fill(_causal_mask(n, m, device), float("-inf"))
    dead_rows = torch.isneginf(mask).all(dim=-1, keepdim=True)
    if bool(dead_rows.any()):
        return mask.masked_fill(dead_rows, 0.0), dead_rows
    return mask, None


def _encode(
    q: Tensor, k: Tensor, v: Tensor, *, c: float, beta: Tensor | float, score: str, fast: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token inputs of :func:`_aggregate`: (queries, keys, values).

    For ``"cosh"`` the queries become ``beta c (-h_0, h_s)`` and the keys their Lorentz
    coordinates ``h``, so that ``qa · ka = -beta cosh(sqrt(c) d)``; otherwise q and k pass.
    On the fused path (``fast``) the values are their Lorentz coordinates, all in float64 if
    some point lies beyond ``c|x|^2 = 31/33``; otherwise they stay points and
    :func:`_aggregate` forms their Lorentz coordinates in float64.
    """
    if fast and q.dtype != torch.float64 and _far_out(q, k, v, c=c):
        # Lorentz coordinates of far-out points lose the scores and the midpoint below
        # float64 (see the module docstring): this call then runs in float64.
        q, k, v = q.double(), k.double(), v.double()
        if isinstance(beta, Tensor):
            beta = beta.double()
    hv = P.poincare_to_lorentz(v, c=c) if fast else v
    if score == "cosh":
        hq = _lorentz_query(P.poincare_to_lorentz(q, c=c), beta, c)
        return hq, P.poincare_to_lorentz(k, c=c), hv
    return q, k, hv


#: Points with ``c|x|^2`` above this (``sqrt(c) h_0 = cosh(sqrt(c) r) > 32``) make the fused
#: ``"cosh"`` path compute in float64: below it, Lorentz coordinates lose about ``eps * 32^2``.
_FAST_MAX_SQNORM = 31.0 / 33.0


def _far_out(*points: Tensor, c: float) -> bool:
    """Whether any of the (..., D) ``points`` has ``c|x|^2 > _FAST_MAX_SQNORM``."""
    with torch.no_grad():
        return any(bool((c * (x * x).sum(-1) > _FAST_MAX_SQNORM).any()) for x in points)


def _aggregate(
    qa: Tensor,
    ka: Tensor,
    v: Tensor,
    *,
    c: float,
    beta: Tensor | float,
    score: str,
    mask: Tensor | None,
    is_causal: bool,
    dropout_p: float,
    need_weights: bool,
) -> tuple[Tensor, Tensor | None]:
    """``(w @ h, w or None)``: ``w = softmax(scores + mask)`` (dropout applied) and ``h`` the
    Lorentz coordinates of the values (``v`` holds them already on the fused ``"cosh"`` path
    without weights, which runs in ``scaled_dot_product_attention``; otherwise ``v`` holds the
    value points and the product is formed in float64)."""
    n, m = qa.shape[-2], ka.shape[-2]
    if score == "cosh" and not need_weights:
        if mask is not None and mask.dtype != qa.dtype:
            mask = mask.to(qa.dtype)
        # The fused CPU kernel is markedly slower for odd head sizes: pad with a zero column,
        # which changes neither the scores nor the sums.
        pad_qk = qa.shape[-1] % 2
        pad_v = v.shape[-1] % 2
        agg = F.scaled_dot_product_attention(
            F.pad(qa, (0, pad_qk)) if pad_qk else qa,
            F.pad(ka, (0, pad_qk)) if pad_qk else ka,
            F.pad(v, (0, pad_v)) if pad_v else v,
            attn_mask=mask,
            dropout_p=dropout_p,
            is_causal=is_causal and mask is None,
            scale=1.0,
        )
        return (agg[..., : v.shape[-1]] if pad_v else agg), None
    if score == "cosh":
        s = torch.matmul(qa, ka.transpose(-1, -2))
    else:
        d = P.pairwise_dist(qa, ka, c=c, squared=score == "squared")
        s = d * (-beta)
    if mask is not None:
        s = s + mask
    elif is_causal:
        s = s.masked_fill(_causal_mask(n, m, qa.device), float("-inf"))
    w = torch.softmax(s, dim=-1)
    if dropout_p > 0.0:
        w = F.dropout(w, dropout_p, True)
    # The midpoint is formed from the Minkowski norm of the Lorentz sums, which cancels; below
    # float64 the Lorentz coordinates of the value points and their sums are therefore formed
    # in float64, which keeps the midpoint accurate over the whole representable radius.
    hv = P.poincare_to_lorentz(v.to(torch.float64), c=c)
    agg = torch.matmul(w.to(torch.float64), hv)
    return agg, (w if need_weights else None)


class _LorentzScoreFunction(torch.autograd.Function):
    """Scores ``-beta f(d)`` from ``g = cosh(sqrt(c) d)`` (see :func:`_aggregate_lorentz`).

    Only ``g - 1`` needs ``g``'s precision (it cancels for close pairs); it is formed there,
    rounded to ``dtype``, and everything after (values, the backward pass, which keeps only
    ``g - 1``) runs in ``dtype``, in place on fresh ``(..., N, M)`` buffers.
    """

    @staticmethod
    def forward(
        ctx: Any, g: Tensor, beta: Tensor, c: float, score: str, dtype: torch.dtype
    ) -> Tensor:
        gm1 = (g - 1).to(dtype).clamp_(min=0.0)
        ctx.save_for_backward(gm1, beta)
        ctx.c, ctx.score, ctx.g_dtype = c, score, g.dtype
        if score == "cosh":
            return gm1 * (-beta.to(dtype))
        return _distance_of(gm1, c, score).mul_(-beta.to(dtype))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        gm1, beta = ctx.saved_tensors
        c: float = ctx.c
        score: str = ctx.score
        neg_beta = -beta.to(grad.dtype)
        grad_g = grad_beta = None
        if score == "cosh":
            if ctx.needs_input_grad[0]:
                grad_g = grad * neg_beta
            if ctx.needs_input_grad[1]:
                grad_beta = -(grad * gm1).sum_to_size(beta.shape)
        else:
            # d d / d g = 1 / (s sinh(s d)) = 1 / (s sqrt((g - 1)(g + 1))); 0 where d is 0
            sinh_sd = (gm1 + 2).mul_(gm1).sqrt_()
            d = torch.log1p(gm1 + sinh_sd)
            if c != 1.0:
                d.div_(math.sqrt(c))
            df = sinh_sd.clamp_(min=_TINY).reciprocal_().masked_fill_(gm1 <= 2 * _TINY**2, 0.0)
            if score == "squared":
                df.mul_(d).mul_(2.0)
                d.mul_(d)
            if ctx.needs_input_grad[0]:
                grad_g = (grad * df).mul_(neg_beta / math.sqrt(c))
            if ctx.needs_input_grad[1]:
                grad_beta = -(grad * d).sum_to_size(beta.shape)
        if grad_g is not None:
            grad_g = grad_g.to(ctx.g_dtype)
        if grad_beta is not None:
            grad_beta = grad_beta.to(beta.dtype)
        return grad_g, grad_beta, None, None, None


def _distance_of(gm1: Tensor, c: float, score: str) -> Tensor:
    """``d = acosh(1 + gm1) / sqrt(c) = log1p(gm1 + sqrt(gm1 (gm1 + 2))) / sqrt(c)`` from
    ``gm1 = cosh(sqrt(c) d) - 1 >= 0`` (a sum of non-negative terms; ``log1p`` is vectorised
    where ``asinh``/``acosh`` are not), or ``d^2`` for ``score == "squared"``; a new tensor."""
    d = (gm1 + 2).mul_(gm1).sqrt_().add_(gm1).log1p_()
    if c != 1.0:
        d.div_(math.sqrt(c))
    return d.mul_(d) if score == "squared" else d


def _aggregate_lorentz(
    qa: Tensor,
    ka: Tensor,
    hv: Tensor,
    *,
    c: float,
    beta: Tensor | float,
    score: str,
    mask: Tensor | None,
    is_causal: bool,
    dropout_p: float,
    need_weights: bool,
) -> tuple[Tensor, Tensor | None]:
    """``(w @ h_v, w or None)`` with explicit scores from Lorentz coordinates.

    ``qa = c (h_0, -h_s)`` of the queries and ``ka`` the keys' coordinates (float64, (..., N, W)
    and (..., M, W)) give ``g = qa ka^T = cosh(sqrt(c) d)`` in one product; the score is
    ``-beta f(d)`` with ``f(d) = d = 2 asinh(sqrt((g - 1)/2)) / sqrt(c)``, ``d^2`` or ``g - 1``
    (:class:`_LorentzScoreFunction`), in ``hv``'s dtype. For points with
    ``sqrt(c) h_0 <= 32`` the float64 product loses at most about ``2^-40`` in ``g``, i.e.
    under ``1e-6`` in ``d`` even for coincident pairs, below the resolution of float32 scores.
    ``hv``: (..., M, W) Lorentz coordinates of the values; the sums are formed in its dtype,
    as on the fused path.
    """
    n, m = qa.shape[-2], ka.shape[-2]
    g = torch.matmul(qa, ka.transpose(-1, -2))
    beta_t = beta if isinstance(beta, Tensor) else torch.tensor(float(beta), dtype=hv.dtype)
    s: Tensor = _LorentzScoreFunction.apply(g, beta_t, c, score, hv.dtype)  # type: ignore[no-untyped-call]
    if mask is not None:
        s = s + mask.to(s.dtype)
    elif is_causal:
        s = s.masked_fill(_causal_mask(n, m, qa.device), float("-inf"))
    w = torch.softmax(s, dim=-1)
    if dropout_p > 0.0:
        w = F.dropout(w, dropout_p, True)
    return torch.matmul(w, hv), (w if need_weights else None)


def _decode(agg: Tensor, dead: Tensor | None, *, c: float, dtype: torch.dtype) -> Tensor:
    """The Poincaré point (in ``dtype``) of the Klein midpoint ``(Σ w h_s) / (sqrt(c) Σ w h_0)``.

    ``Σ w h_0 > 0`` unless every weight of the row is zero (then, and on ``dead`` rows, the
    result is the origin).
    """
    den = agg[..., :1]
    den = torch.where(den > 0, den, torch.ones_like(den))
    out = P.klein_to_poincare(agg[..., 1:] / (den * math.sqrt(c)), c=c)
    if out.dtype != dtype:
        out = P.project(out.to(dtype), c=c)
    if dead is not None:
        out = out.masked_fill(dead, 0.0)
    return out


class HyperbolicMultiHeadAttention(nn.Module):
    """Multi-head attention between points of the Poincaré ball.

    For head ``h`` the query, key and value points are ``expmap0(W_h logmap0(x)) ⊕_c
    expmap0(b_h)`` (a Möbius linear map ``E -> E / heads`` per head, i.e. the tangent vector
    at the origin is split into heads); :func:`hyperbolic_attention` runs per head with a
    learnable temperature ``beta_h = softplus(beta_raw_h)`` (initially 1); the head outputs are
    merged in the tangent space at the origin, ``t = concat_h logmap0(o_h)``, and the output
    projection gives ``expmap0(W_o t) ⊕_c expmap0(b_o)`` (``= W_o ⊗_c expmap0(t) ⊕_c ...``).
    Ball coordinates of different heads are never concatenated, so the merged point is in
    the ball.

    Args:
        embed_dim: point size E (divisible by ``num_heads``).
        num_heads: number of heads.
        dropout: dropout probability on the attention weights.
        c: curvature.
        score: ``"distance"``, ``"squared"`` or ``"cosh"`` (see :func:`hyperbolic_attention`).
        bias: Möbius biases on the projections.
        batch_first: inputs are (B, L, E) if true, else (L, B, E).
        kdim, vdim: key and value point sizes (default ``embed_dim``).
        memory_efficient: when gradients are recorded, recompute the elementwise hyperbolic
            maps (projections, Lorentz coordinates, midpoint, merge) in the backward pass
            (``torch.utils.checkpoint``) instead of storing their intermediates; only the
            attention's own inputs and outputs stay in memory. Same results, less memory,
            more time.

    ``forward`` mirrors :class:`torch.nn.MultiheadAttention` and returns
    ``(output, weights or None)``.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        dropout: float = 0.0,
        c: float = 1.0,
        score: Score = "distance",
        bias: bool = True,
        batch_first: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        self.memory_efficient = memory_efficient
        for name, value in (("embed_dim", embed_dim), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if embed_dim % num_heads != 0:
            raise ValueError(
                f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})"
            )
        _check_score(score)
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        for name, value in (("kdim", self.kdim), ("vdim", self.vdim)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.dropout = _check_probability(dropout, "dropout")
        self.c = _check_curvature(c)
        self.score: Score = score
        self.batch_first = batch_first
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim

        self.in_proj_weight: nn.Parameter | None
        self.q_proj_weight: nn.Parameter | None
        self.k_proj_weight: nn.Parameter | None
        self.v_proj_weight: nn.Parameter | None
        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.register_parameter("in_proj_weight", None)
            self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim))
            self.k_proj_weight = nn.Parameter(torch.empty(embed_dim, self.kdim))
            self.v_proj_weight = nn.Parameter(torch.empty(embed_dim, self.vdim))
        self.in_proj_bias: nn.Parameter | None
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = HyperbolicLinear(embed_dim, embed_dim, c=self.c, bias=bias)
        self.beta_raw = nn.Parameter(torch.empty(num_heads))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Projections N(0, 1/fan_in), biases N(0, 1e-3^2), every ``beta_h = 1``."""
        with torch.no_grad():
            for w in (self.in_proj_weight, self.q_proj_weight, self.k_proj_weight):
                if w is not None:
                    w.normal_(0.0, 1.0 / math.sqrt(w.shape[1]))
            if self.v_proj_weight is not None:
                self.v_proj_weight.normal_(0.0, 1.0 / math.sqrt(self.vdim))
            if self.in_proj_bias is not None:
                self.in_proj_bias.normal_(0.0, 1e-3)
            self.out_proj.reset_parameters()
            self.beta_raw.fill_(math.log(math.expm1(1.0)))

    @property
    def beta(self) -> Tensor:
        """The positive per-head temperatures ``softplus(beta_raw)``, shape (heads,)."""
        return F.softplus(self.beta_raw)

    def _weight(self, which: int) -> Tensor:
        if self.in_proj_weight is not None:
            e = self.embed_dim
            return self.in_proj_weight[which * e : (which + 1) * e]
        w = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)[which]
        assert w is not None
        return w

    def _heads(self, z: Tensor, bias: Tensor | None) -> Tensor:
        """Tangent (B, L, k*E) -> points (k, B, heads, L, head_dim): expmap0 per head ⊕ bias."""
        b, length = z.shape[0], z.shape[1]
        groups = z.shape[-1] // self.embed_dim
        z = z.view(b, length, groups, self.num_heads, self.head_dim)
        pts = P.expmap0(z, c=self.c)
        if bias is not None:
            bp = P.expmap0(bias.to(z.dtype).view(groups, self.num_heads, self.head_dim), c=self.c)
            pts = P.mobius_add(pts, bp, c=self.c)
        return pts.permute(2, 0, 3, 1, 4)

    def _lorentz_heads(self, z: Tensor, bias: Tensor | None, t_max: float) -> Tensor:
        """Tangent (B, L, k*E) -> Lorentz coordinates (k, B, heads, L, W) of the head points
        ``expmap0(z_h) ⊕_c expmap0(b_h)`` (``W = head_dim + 1``, padded to even)."""
        b, length = z.shape[0], z.shape[1]
        groups = z.shape[-1] // self.embed_dim
        z = z.view(b, length, groups, self.num_heads, self.head_dim)
        if bias is not None:
            bias = bias.to(z.dtype).view(groups, self.num_heads, self.head_dim)
        pad = (self.head_dim + 1) % 2 == 1
        h = _tangent_to_lorentz(z, bias, c=self.c, t_max=t_max, pad=pad)
        return h.permute(2, 0, 3, 1, 4)

    def _lorentz_encode(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        beta: Tensor,
        dtype: torch.dtype,
        *,
        fused: bool,
        shared_kv: bool,
        wide: bool,
    ) -> tuple[Tensor, Tensor, Tensor] | None:
        """Lorentz inputs of the attention, formed from the tangent projections.

        The Lorentz coordinates of the head points are taken from their tangent vectors at the
        origin (:func:`_tangent_to_lorentz`): no head point is formed in the ball.

        ``wide=False`` (the fused ``"cosh"`` kernel): returns ``(beta c (-h_0, h_s), h_k,
        h_v)``, each (B, heads, L, W). If a head point lies beyond ``c|x|^2 = 31/33``
        (``sqrt(c) h_0 > 32``) and ``dtype`` is narrower than float64, the call instead forms
        the head points in ``dtype`` (exactly as the explicit path does) and their Lorentz
        coordinates and the attention in float64.

        ``wide=True`` (explicit scores, :func:`_aggregate_lorentz`): returns
        ``c (h_0, -h_s)`` and ``h_k`` in float64 and ``h_v`` in ``dtype``, or None when a head
        point lies beyond that radius (the caller then takes the explicit path on points).
        """
        c = self.c
        t_max = math.atanh(_max_norm(dtype))
        if fused:
            assert self.in_proj_weight is not None
            u = P.logmap0(query.to(dtype), c=c)
            parts = [(F.linear(u, self.in_proj_weight.to(dtype)), self._bias(0, 3))]
        else:
            uq = P.logmap0(query.to(dtype), c=c)
            uk = P.logmap0(key.to(dtype), c=c)
            uv = uk if shared_kv else P.logmap0(value.to(dtype), c=c)
            parts = [
                (F.linear(x, self._weight(i).to(dtype)), self._bias(i, i + 1))
                for i, x in enumerate((uq, uk, uv))
            ]
        if wide:
            parts = [(z.double(), bias) for z, bias in parts]
        hs = [self._lorentz_heads(z, bias, t_max) for z, bias in parts]
        if dtype != torch.float64:
            limit = 32.0 / math.sqrt(c)
            with torch.no_grad():
                far = torch.stack([(h[..., 0] > limit).any() for h in hs]).any()
            is_far = bool(far)
            if is_far and wide:
                return None
            if is_far:
                # Lorentz coordinates of far-out points lose the scores and the midpoint below
                # float64 (see the module docstring): this call then takes the head points as
                # stored in ``dtype`` (as the explicit path does) and converts them in float64.
                pad = (self.head_dim + 1) % 2
                hs = [
                    F.pad(P.poincare_to_lorentz(self._heads(z, bias).double(), c=c), (0, pad))
                    for z, bias in parts
                ]
                beta = beta.double()
        if fused:
            hq, hk, hv = hs[0].unbind(0)
        else:
            hq, hk, hv = (h[0] for h in hs)
        sign = _minkowski_sign(hq.shape[-1], hq.dtype, hq.device)
        if wide:
            return hq * (-c * sign), hk, hv.to(dtype)
        return hq * ((beta * c) * sign), hk, hv

    def _fused_points(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        """Self-attention projections in one product: (3, B, heads, L, head_dim) points."""
        assert self.in_proj_weight is not None
        z = F.linear(P.logmap0(x.to(dtype), c=self.c), self.in_proj_weight.to(dtype))
        return self._heads(z, self._bias(0, 3))

    def _project(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        dtype: torch.dtype,
        *,
        fused: bool,
        shared_kv: bool,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Per-head query, key and value points, each (B, heads, L, head_dim)."""
        c = self.c
        if fused:
            q, k, v = self._fused_points(query, dtype).unbind(0)
            return q, k, v
        uq = P.logmap0(query.to(dtype), c=c)
        q = self._heads(F.linear(uq, self._weight(0).to(dtype)), self._bias(0, 1))[0]
        uk = P.logmap0(key.to(dtype), c=c)
        k = self._heads(F.linear(uk, self._weight(1).to(dtype)), self._bias(1, 2))[0]
        uv = uk if shared_kv else P.logmap0(value.to(dtype), c=c)
        v = self._heads(F.linear(uv, self._weight(2).to(dtype)), self._bias(2, 3))[0]
        return q, k, v

    def _bias(self, start: int, stop: int) -> Tensor | None:
        if self.in_proj_bias is None:
            return None
        e = self.embed_dim
        return self.in_proj_bias[start * e : stop * e]

    def _check_inputs(
        self, query: Tensor, key: Tensor, value: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        for name, t, dim in (
            ("query", query, self.embed_dim),
            ("key", key, self.kdim),
            ("value", value, self.vdim),
        ):
            if not isinstance(t, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if not t.is_floating_point():
                raise TypeError(f"{name} must have a floating dtype, got {t.dtype}")
            if t.dim() != 3:
                layout = "(B, L, E)" if self.batch_first else "(L, B, E)"
                raise ValueError(f"{name} must be 3-D {layout}, got shape {tuple(t.shape)}")
            if t.shape[-1] != dim:
                raise ValueError(f"{name} must have last dimension {dim}, got {t.shape[-1]}")
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        if key.shape[:2] != value.shape[:2]:
            raise ValueError(
                f"key and value must have the same batch and length, got {tuple(key.shape)} "
                f"and {tuple(value.shape)}"
            )
        if query.shape[0] != key.shape[0]:
            raise ValueError(
                f"query and key must have the same batch size, got {query.shape[0]} and "
                f"{key.shape[0]}"
            )
        return query, key, value

    def _merge_masks(
        self,
        key_padding_mask: Tensor | None,
        attn_mask: Tensor | None,
        b: int,
        n: int,
        m: int,
        dtype: torch.dtype,
    ) -> Tensor | None:
        """Both masks as one additive float mask broadcastable to (B, heads, N, M)."""
        merged: Tensor | None = None
        if key_padding_mask is not None:
            if not isinstance(key_padding_mask, Tensor):
                raise TypeError("key_padding_mask must be a tensor")
            if key_padding_mask.shape != (b, m):
                raise ValueError(
                    f"key_padding_mask must have shape (B, M) = {(b, m)}, got "
                    f"{tuple(key_padding_mask.shape)}"
                )
            merged = _additive_mask(key_padding_mask, dtype, "key_padding_mask").view(b, 1, 1, m)
        if attn_mask is not None:
            if not isinstance(attn_mask, Tensor):
                raise TypeError("attn_mask must be a tensor")
            h = self.num_heads
            if attn_mask.shape == (n, m):
                am = _additive_mask(attn_mask, dtype, "attn_mask")
            elif attn_mask.shape == (b * h, n, m):
                am = _additive_mask(attn_mask, dtype, "attn_mask").view(b, h, n, m)
            else:
                raise ValueError(
                    f"attn_mask must have shape (N, M) = {(n, m)} or (B*heads, N, M) = "
                    f"{(b * h, n, m)}, got {tuple(attn_mask.shape)}"
                )
            merged = am if merged is None else merged + am
        return merged

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        *,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
        average_attn_weights: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``query`` points to ``key``/``value`` points.

        Args:
            query: (B, N, E) points ((N, B, E) if not ``batch_first``).
            key: (B, M, kdim) points. value: (B, M, vdim) points.
            key_padding_mask: (B, M), bool (True = ignore the key) or additive float.
            attn_mask: (N, M) or (B*heads, N, M), bool (True = not allowed) or additive float.
            is_causal: forbid key ``j > i`` for query ``i`` (combined with ``attn_mask``).
            need_weights: return the attention weights.
            average_attn_weights: average the weights over heads ((B, N, M)) rather than
                returning them per head ((B, heads, N, M)).

        Returns:
            ``(output, weights)``: output points (B, N, E) (or (N, B, E)) in the ball, in the
            dtype of ``query``; weights as above, or None. A query whose keys are all masked
            gets zero weights and the output of the output projection at the origin.

        Raises:
            TypeError/ValueError naming the argument on wrong types, ranks, sizes or mask
            shapes.
        """
        same_qkv = query is key and key is value
        shared_kv = value is key
        query, key, value = self._check_inputs(query, key, value)
        in_dtype = query.dtype
        dtype = compute_dtype(in_dtype)
        b, n, m = query.shape[0], query.shape[1], key.shape[1]
        mask = self._merge_masks(key_padding_mask, attn_mask, b, n, m, dtype)

        beta = F.softplus(self.beta_raw.to(dtype)).view(self.num_heads, 1, 1)
        fused = self.in_proj_weight is not None and same_qkv
        score_shape = (b, self.num_heads, n, m)
        mask, dead = _prepare_mask(mask, is_causal, score_shape, dtype, query.device)
        recompute = self.memory_efficient and torch.is_grad_enabled()
        fast = self.score == "cosh" and not need_weights
        # Explicit scores from float64 Lorentz coordinates unless the call computes in float64
        # (whose accuracy needs the points) or a head point is far out (decided in encode).
        # (encode runs the same steps on every call, as checkpoint's recomputation requires.)
        wide = not fast and dtype != torch.float64
        lorentz = {"on": wide}

        def encode(x_q: Tensor, x_k: Tensor, x_v: Tensor, beta_: Tensor) -> tuple[Tensor, ...]:
            with P.upcast(dtype if dtype == torch.float64 else torch.float32):
                if fast or wide:
                    enc = self._lorentz_encode(
                        x_q, x_k, x_v, beta_, dtype, fused=fused, shared_kv=shared_kv, wide=wide
                    )
                    lorentz["on"] = wide and enc is not None
                    if enc is not None:
                        return enc
                q, k, v = self._project(x_q, x_k, x_v, dtype, fused=fused, shared_kv=shared_kv)
                return _encode(q, k, v, c=self.c, beta=beta_, score=self.score, fast=fast)

        def decode(agg_: Tensor) -> Tensor:
            with P.upcast(dtype if dtype == torch.float64 else torch.float32):
                t = _midpoint_tangent(agg_, dead, c=self.c, dim=self.head_dim, dtype=dtype)
                t = t.transpose(1, 2).reshape(b, n, self.embed_dim)
                return self.out_proj.forward_tangent(t)

        if recompute:
            qa, ka, va = checkpoint(encode, query, key, value, beta, use_reentrant=False)
        else:
            qa, ka, va = encode(query, key, value, beta)
        aggregate = _aggregate_lorentz if lorentz["on"] else _aggregate
        agg, weights = aggregate(
            qa,
            ka,
            va,
            c=self.c,
            beta=beta,
            score=self.score,
            mask=mask,
            is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0,
            need_weights=need_weights,
        )
        result: Tensor = checkpoint(decode, agg, use_reentrant=False) if recompute else decode(agg)
        result = cast_point(result, in_dtype, c=self.c)
        if weights is not None and dead is not None:
            weights = weights.masked_fill(dead, 0.0)
        if not self.batch_first:
            result = result.transpose(0, 1)
        if weights is not None:
            weights = weights.to(in_dtype)
            if average_attn_weights:
                weights = weights.mean(dim=1)
        return result, weights

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, c={self.c}, "
            f"score={self.score!r}, dropout={self.dropout}, batch_first={self.batch_first}"
        )
