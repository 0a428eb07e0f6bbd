"""Numerical building blocks: safe ratio functions, boundary gaps and exact containment tests.

Everything here acts on tensors already in the compute dtype. The ratio functions
``tanh(t)/t``, ``artanh(u)/u`` and ``asinh(a)/a`` are even, equal 1 at 0, and are evaluated by
a Taylor polynomial below a small threshold so that values and gradients are exact and finite
at the origin (no ``0/0`` in the forward pass, no ``NaN`` leaking through an unused branch of
``torch.where`` in the backward pass).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "artanh_over",
    "asinh_over",
    "dot",
    "exact_outside",
    "gap",
    "gap_precise",
    "max_norm",
    "sqnorm",
    "tanh_over",
]


def max_norm(dtype: torch.dtype) -> float:
    """The largest float strictly below 1 in ``dtype``: ``1 - eps/2``."""
    return 1.0 - torch.finfo(dtype).eps / 2


def _small(t: Tensor) -> float:
    # Below this the quadratic Taylor term is exact to well under one ulp.
    return math.sqrt(torch.finfo(t.dtype).eps) / 4


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


def asinh_over(a: Tensor) -> Tensor:
    """``asinh(a) / a`` (1 at 0), for ``a >= 0``."""
    small = a < _small(a)
    safe = torch.where(small, torch.ones_like(a), a)
    return torch.where(small, 1 - a * a / 6, torch.asinh(safe) / safe)


def dot(x: Tensor, y: Tensor) -> Tensor:
    """Inner product over the last dimension, keeping it: ``(..., 1)``."""
    return (x * y).sum(dim=-1, keepdim=True)


def sqnorm(x: Tensor) -> Tensor:
    """Squared norm over the last dimension, keeping it: ``(..., 1)``."""
    return (x * x).sum(dim=-1, keepdim=True)


def gap(x: Tensor, sc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Return ``(|x|, u, B)`` with ``u = min(sqrt(c)|x|, 1 - eps/2)`` and ``B = 1 - c|x|^2``.

    ``B`` is formed as ``(1 - u)(1 + u)``: with ``u`` accurate to a relative ulp, ``1 - u`` is
    exact (Sterbenz), so ``B`` carries no cancellation even on the outermost shell. Clamping
    ``u`` keeps ``B >= eps/2`` for points on or beyond the boundary, so conformal factors stay
    finite for every input.
    """
    n = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    u = (sc * n).clamp(max=max_norm(x.dtype))
    return n, u, (1 - u) * (1 + u)


def _split_sq(x: Tensor) -> tuple[Tensor, Tensor]:
    # Exact square of float64 values as an unevaluated sum hi + lo (Veltkamp splitting).
    p = x * x
    t = x * 134217729.0
    xh = t - (t - x)
    xl = x - xh
    e = ((xh * xh - p) + 2 * xh * xl) + xl * xl
    return p, e


def _exact_sqnorm(x: Tensor) -> tuple[Tensor, Tensor]:
    """``|x|^2`` of float64 rows as ``hi + lo``, accurate to about 2^-100 relative."""
    vals, lo_terms = _split_sq(x)
    lo = lo_terms.sum(dim=-1, keepdim=True)
    while vals.shape[-1] > 1:
        if vals.shape[-1] % 2:
            vals = torch.cat([vals, torch.zeros_like(vals[..., :1])], dim=-1)
        a, b = vals[..., 0::2], vals[..., 1::2]
        s = a + b
        bb = s - a
        err = (a - (s - bb)) + (b - bb)
        lo = lo + err.sum(dim=-1, keepdim=True)
        vals = s
    return vals, lo


def exact_outside(x: Tensor, c: Tensor) -> Tensor:
    """Boolean ``(..., 1)``: ``c |x|^2 >= 1`` decided in (almost) exact arithmetic.

    The rows far from the boundary are decided by an ordinary float64 sum; only the rows within
    2^-40 of it are re-evaluated with an exactly rounded double-double sum of squares.
    """
    with torch.no_grad():
        xd = x.detach().to(torch.float64)
        cd = c.detach().to(torch.float64).expand((*xd.shape[:-1], 1))
        s = sqnorm(xd) * cd
        out = s >= 1
        near = (s - 1).abs() <= 2.0**-40
        if bool(near.any()):
            rows = near.squeeze(-1)
            hi, lo = _exact_sqnorm(xd[rows])
            cr = cd[rows]
            t = cr * hi
            slack = torch.where(cr == 1, torch.zeros_like(t), t * 2.0**-52)
            out = out.clone()
            out[rows] = ((t - 1) + cr * lo) >= -slack
        return out


def _two_prod(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    # a * b = p + e exactly, for float64 (Dekker's product with Veltkamp splitting).
    p = a * b
    ta, tb = a * 134217729.0, b * 134217729.0
    ah, bh = ta - (ta - a), tb - (tb - b)
    al, bl = a - ah, b - bh
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


def gap_precise(x: Tensor, sc: Tensor) -> Tensor:
    """``B = 1 - c|x|^2`` accurate to a relative ulp of ``B`` itself (not of 1).

    The plain form (:func:`gap`) rounds ``|x|`` to a relative ulp, which leaves ``B`` with a
    relative error of about ``eps / B``: harmless for the well-conditioned ops, but amplified by
    ``exp(radius)`` in the maps and transports. In float64 this evaluates ``|x|^2`` and
    ``c |x|^2`` in double-double arithmetic; the value is the precise one while the gradient is
    that of the plain formula (the two differ by rounding only). Other dtypes use :func:`gap`.
    """
    _, _, plain = gap(x, sc)
    if x.dtype != torch.float64:
        return plain
    with torch.no_grad():
        hi, lo = _exact_sqnorm(x.detach())
        c = (sc.detach() * sc.detach()).expand_as(hi)
        p, pe = _two_prod(c, hi)
        precise = ((1 - p) - pe) - c * lo
        # Points beyond the boundary (a caller's error) get the outermost shell's gap.
        m = max_norm(x.dtype)
        precise = torch.where(precise > 0, precise, torch.full_like(precise, (1 - m) * (1 + m)))
    return plain + (precise - plain).detach()
