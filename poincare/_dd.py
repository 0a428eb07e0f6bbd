"""Double-double arithmetic on float64 tensors (values only, no gradients).

A double-double number is an unevaluated sum ``hi + lo`` of two float64 tensors with
``|lo| <= ulp(hi)/2``, carrying about 106 bits. The error-free transformations are Knuth's
two-sum and Dekker's two-product (Veltkamp splitting, no fused multiply-add needed). Used where
a float64 op's condition number grows like ``exp(radius)``: there the working precision must
exceed the representation precision by as many bits as the amplification.
"""

from __future__ import annotations

import torch
from torch import Tensor

DD = tuple[Tensor, Tensor]

_SPLIT = 134217729.0  # 2**27 + 1


def two_sum(a: Tensor, b: Tensor) -> DD:
    """``a + b = s + e`` exactly."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def fast_two_sum(a: Tensor, b: Tensor) -> DD:
    """``a + b = s + e`` exactly, assuming ``|a| >= |b|`` (or ``a == 0``)."""
    s = a + b
    return s, b - (s - a)


def two_prod(a: Tensor, b: Tensor) -> DD:
    """``a * b = p + e`` exactly (barring overflow)."""
    p = a * b
    ta, tb = a * _SPLIT, b * _SPLIT
    ah, bh = ta - (ta - a), tb - (tb - b)
    al, bl = a - ah, b - bh
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def add(a: DD, b: DD) -> DD:
    """Double-double sum."""
    s, e = two_sum(a[0], b[0])
    return fast_two_sum(s, e + (a[1] + b[1]))


def mul(a: DD, b: DD) -> DD:
    """Double-double product."""
    p, e = two_prod(a[0], b[0])
    return fast_two_sum(p, e + (a[0] * b[1] + a[1] * b[0]))


def div(a: DD, b: DD) -> DD:
    """Double-double quotient (``b`` non-zero)."""
    q1 = a[0] / b[0]
    r = add(a, neg(mul((q1, torch.zeros_like(q1)), b)))
    q2 = r[0] / b[0]
    return fast_two_sum(q1, q2)


def sqrt(a: DD) -> DD:
    """Double-double square root (``a >= 0``; 0 maps to 0)."""
    s = torch.sqrt(a[0])
    p, e = two_prod(s, s)
    safe = torch.where(s > 0, s, torch.ones_like(s))
    corr = torch.where(s > 0, ((a[0] - p) - e + a[1]) / (2 * safe), torch.zeros_like(s))
    return fast_two_sum(s, corr)


def neg(a: DD) -> DD:
    """Negation."""
    return -a[0], -a[1]


def const(x: Tensor) -> DD:
    """A float64 tensor as a double-double."""
    return x, torch.zeros_like(x)


def sum_last(a: DD) -> DD:
    """Sum over the last dimension (kept, size 1), by a pairwise tree of two-sums."""
    hi, lo = a
    acc = lo.sum(dim=-1, keepdim=True)
    while hi.shape[-1] > 1:
        if hi.shape[-1] % 2:
            hi = torch.cat([hi, torch.zeros_like(hi[..., :1])], dim=-1)
        s, e = two_sum(hi[..., 0::2], hi[..., 1::2])
        acc = acc + e.sum(dim=-1, keepdim=True)
        hi = s
    return fast_two_sum(hi, acc)


def sqnorm(a: DD) -> DD:
    """``|a|^2`` over the last dimension."""
    p, e = two_prod(a[0], a[0])
    return sum_last((p, e + 2 * a[0] * a[1]))


def round_(a: DD) -> Tensor:
    """Round to float64."""
    return a[0] + a[1]
