"""Hyperbolic building blocks on the Poincaré ball ``{x : c|x|^2 < 1}``.

Every module here takes and returns points of the ball in the last dimension (any leading
shape) and keeps its learnable parameters Euclidean (matrices, and tangent vectors at the
origin mapped into the ball with ``expmap0``), so that plain optimisers such as
:class:`torch.optim.Adam` train them.

Precision: float16/bfloat16 inputs are computed in float32; under
``poincare.upcast(torch.float64)`` every module computes in float64. Outputs always come
back in the input dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import poincare as P

__all__ = [
    "HyperbolicActivation",
    "HyperbolicFeedForward",
    "HyperbolicLayerNorm",
    "HyperbolicLinear",
    "HyperbolicPositionalEncoding",
    "cast_point",
    "compute_dtype",
    "tangent_dropout",
]


def _check_curvature(c: float) -> float:
    """Return ``c`` as a float, raising ``ValueError`` unless it is finite and positive."""
    if isinstance(c, bool) or not isinstance(c, (int, float)):
        raise TypeError(f"c must be a positive float, got {type(c).__name__}")
    c = float(c)
    if not math.isfinite(c) or c <= 0.0:
        raise ValueError(f"c must be finite and > 0, got {c}")
    return c


def _check_positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def _check_probability(p: float, name: str) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1), got {type(p).__name__}")
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {p}")
    return p


def _check_points(x: Tensor, dim: int, name: str) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``x`` is floating with last dimension ``dim``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.dim() < 1 or x.shape[-1] != dim:
        raise ValueError(f"{name} must have last dimension {dim}, got shape {tuple(x.shape)}")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype in which hyperbolic computations on inputs of ``dtype`` run.

    float64 under an active ``poincare.upcast(torch.float64)``; float32 for float16 and
    bfloat16 inputs; otherwise ``dtype`` itself.
    """
    current = getattr(P, "current_upcast", None)
    target = current() if callable(current) else None
    if isinstance(target, torch.dtype) and torch.finfo(target).bits > torch.finfo(dtype).bits:
        return target
    if dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return dtype


def cast_point(y: Tensor, dtype: torch.dtype, *, c: float) -> Tensor:
    """Points ``y`` (..., D) cast to ``dtype``, kept strictly inside the ball.

    A narrowing cast can round a point near the boundary onto it; the result is then passed
    through ``poincare.project`` in ``dtype``. Identity when ``y`` already has ``dtype``.
    """
    if y.dtype == dtype:
        return y
    return P.project(y.to(dtype), c=c)


#: Lower clamp of scaled tangent norms used as divisors: below it ``tanh(t)/t`` and
#: ``sinh(t)/t`` equal 1 to the last bit in float32 and float64, so the clamp changes neither
#: values nor gradients (and keeps them finite at the zero vector).
_TINY = 1e-12


def _saturation(dtype: torch.dtype) -> float:
    """``artanh(1 - eps/2)``: the scaled tangent norm of the outermost shell of ``dtype``."""
    return math.atanh(1.0 - torch.finfo(dtype).eps / 2)


def _dot(x: Tensor, y: Tensor) -> Tensor:
    """Inner product over the last dimension, kept: (..., 1)."""
    return (x * y).sum(dim=-1, keepdim=True)


def _scaled_norm(z: Tensor, c: float) -> Tensor:
    """``t = sqrt(c)|z|``, (..., 1)."""
    sq = _dot(z, z)
    return (sq * c if c != 1.0 else sq).sqrt()


def _t_functions(t: Tensor, t_max: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(tt, a, C, g, sh)`` for scaled norms ``t``: ``tt = max(t, _TINY)``, and with
    ``tc = min(tt, t_max)``: ``a = tanh(tc)/tt``, ``C = cosh^2 tc``, ``g = sinh(tc) cosh(tc)/tt``,
    ``sh = sinh tc`` (``expmap0(z) = a z``, its gap is ``1/C``, ``C expmap0(z) = g z``)."""
    tt = t.clamp(min=_TINY)
    tc = tt.clamp(max=t_max)
    ch = torch.cosh(tc)
    sh = torch.sinh(tc)
    return tt, sh / (ch * tt), ch * ch, sh * ch / tt, sh


def _t_derivatives(
    t: Tensor, t_max: float, tt: Tensor, a: Tensor, cc: Tensor, g: Tensor, sh: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Derivatives in ``t`` of ``(a, C, g)`` from :func:`_t_functions`, clamps included.

    Below ``_TINY`` the formulas give 0 by themselves (``a = C = g = 1`` to the last bit there);
    beyond ``t_max`` only the divisors vary (``a' = -a/t``, ``C' = 0``, ``g' = -g/t``).
    """
    inner = (t <= t_max).to(t.dtype)
    da = (inner / cc - a) / tt
    dc = (g * tt) * (2 * inner)
    dg = (inner * torch.addcmul(cc, sh, sh) - g) / tt
    return da, dc, dg


class _BiasPointFunction(torch.autograd.Function):
    """``(expmap0(v), w)`` for tangent vectors ``v`` (..., D), with ``w = 1/cosh^2 t`` (the
    point's gap ``1 - c|expmap0(v)|^2``) if ``gap`` else ``2 cosh^2 t`` (its conformal factor),
    ``t = sqrt(c)|v|`` clamped to ``t_max``; one autograd node with a hand-written backward."""

    @staticmethod
    def forward(ctx: Any, v: Tensor, c: float, t_max: float, gap: bool) -> tuple[Tensor, Tensor]:
        _, a, cc, _, _ = _t_functions(_scaled_norm(v, c), t_max)
        ctx.save_for_backward(v)
        ctx.c, ctx.t_max, ctx.gap = c, t_max, gap
        return a * v, (torch.reciprocal(cc) if gap else 2 * cc)

    @staticmethod
    def backward(ctx: Any, grad_b: Tensor, grad_w: Tensor) -> tuple[Tensor | None, ...]:
        (v,) = ctx.saved_tensors
        c: float = ctx.c
        t_max: float = ctx.t_max
        t = _scaled_norm(v, c)
        tt, a, cc, g, sh = _t_functions(t, t_max)
        da, dc, _ = _t_derivatives(t, t_max, tt, a, cc, g, sh)
        grad_cc = -grad_w / (cc * cc) if ctx.gap else 2 * grad_w
        coef = (_dot(grad_b, v) * da + grad_cc * dc) * (c / tt)
        return torch.addcmul(a * grad_b, coef, v), None, None, None


def _bias_point(v: Tensor, *, c: float, t_max: float, gap: bool) -> tuple[Tensor, Tensor]:
    """``expmap0(v)`` and its gap (``gap``) or conformal factor, see :class:`_BiasPointFunction`."""
    b, w = _BiasPointFunction.apply(v, c, t_max, gap)  # type: ignore[no-untyped-call]
    return b, w


class _Exp0AddFunction(torch.autograd.Function):
    """``expmap0(z) ⊕_c b`` from the tangent vector ``z``, the point ``b`` and its gap
    ``B_b = 1 - c|b|^2`` (see :func:`_expmap0_add`), with a hand-written backward pass that
    keeps only ``z``, ``b`` and per-row scalars."""

    @staticmethod
    def forward(
        ctx: Any,
        z: Tensor,
        b: Tensor,
        gap_b: Tensor,
        c: float,
        t_max: float,
    ) -> Tensor:
        t = _scaled_norm(z, c)
        tt, a, cc, g, sh = _t_functions(t, t_max)
        s = torch.addcmul(b, a, z)
        q = _dot(s, s) * c
        den = torch.addcmul(gap_b, q, cc)
        y = torch.addcmul(s, q * g, z) / den
        ctx.save_for_backward(z, b, gap_b, t, tt, a, cc, g, sh, q, den)
        ctx.c, ctx.t_max = c, t_max
        return y

    @staticmethod
    def backward(ctx: Any, gy: Tensor) -> tuple[Tensor | None, ...]:
        z, b, gap_b, t, tt, a, cc, g, sh, q, den = ctx.saved_tensors
        c: float = ctx.c
        t_max: float = ctx.t_max
        s = torch.addcmul(b, a, z)
        y = torch.addcmul(s, q * g, z) / den
        gam = gy / den
        gyy = _dot(gam, y)
        gz = _dot(gam, z)
        v = torch.addcmul(gam, (g * gz - gyy * cc) * (2 * c), s)
        da, dc, dg = _t_derivatives(t, t_max, tt, a, cc, g, sh)
        tau = _dot(v, z) * da + q * (gz * dg - gyy * dc)
        grad_z = torch.addcmul(torch.addcmul(a * v, q * g, gam), tau * (c / tt), z)
        grad_b = v.sum_to_size(b.shape) if ctx.needs_input_grad[1] else None
        grad_gap = (-gyy).sum_to_size(gap_b.shape) if ctx.needs_input_grad[2] else None
        return grad_z, grad_b, grad_gap, None, None


def _expmap0_add(z: Tensor, b: Tensor, *, c: float) -> Tensor:
    """``expmap0(z) ⊕_c expmap0(b)`` in one closed form (not projected).

    With ``t = sqrt(c)|z|``, ``p = expmap0(z)``, ``S = p + expmap0(b)`` and ``q = c|S|^2``, the
    Möbius sum ``(B_p S + q p) / (q + B_p B_b)`` divided through by ``B_p = 1/cosh^2 t`` is

        ``(S + q sinh(t) cosh(t)/t z) / (q cosh^2 t + 1/cosh^2 t_b)``,

    a ratio of sums of non-negative terms that never forms the gap of a rounded point.
    ``z``: (..., D) tangent vectors at the origin; ``b``: (..., D) broadcastable; returns
    (..., D) in the promoted dtype (up to rounding inside the ball: pass it through
    ``poincare.project`` to store it). Raises ``ValueError`` on mismatched last dimensions.
    """
    if z.shape[-1] != b.shape[-1]:
        raise ValueError(f"z and b must have the same last dimension, got {z.shape}, {b.shape}")
    t_max = _saturation(z.dtype)
    bp, gap_b = _bias_point(b, c=c, t_max=t_max, gap=True)
    out: Tensor = _Exp0AddFunction.apply(z, bp, gap_b, c, t_max)  # type: ignore[no-untyped-call]
    return out


def tangent_dropout(x: Tensor, p: float, training: bool, *, c: float) -> Tensor:
    """Dropout of a point applied in the tangent space at the origin.

    ``expmap0(dropout(logmap0(x)))``: the point is never scaled in ball coordinates, so the
    result stays in the ball. Identity when ``training`` is false or ``p == 0``.
    ``x``: (..., D) points; returns (..., D).
    """
    if not training or p == 0.0:
        return x
    return P.expmap0(F.dropout(P.logmap0(x, c=c), p, True), c=c)


class HyperbolicLinear(nn.Module):
    """Möbius linear layer ``y = (W ⊗_c x) ⊕_c expmap0(b)``.

    ``W ⊗_c x = expmap0(W logmap0(x))`` is the Möbius matrix-vector product and the bias
    ``b`` is kept as a tangent vector at the origin (a plain Euclidean parameter), mapped into
    the ball with ``expmap0``.

    Args:
        in_features: size of each input point (> 0).
        out_features: size of each output point (> 0).
        c: curvature (> 0, finite).
        bias: whether to add the Möbius bias.
        init_scale: the weight is drawn from N(0, (init_scale / sqrt(in_features))^2); the
            default 0.5 shrinks tangent norms by about half at initialisation. The bias is
            drawn from N(0, 1e-3^2).

    Shapes: input (..., in_features) points in the ball -> (..., out_features) points.
    Raises ``TypeError``/``ValueError`` on a non-floating input or a wrong last dimension.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        c: float = 1.0,
        bias: bool = True,
        init_scale: float = 0.5,
    ) -> None:
        super().__init__()
        self.in_features = _check_positive_int(in_features, "in_features")
        self.out_features = _check_positive_int(out_features, "out_features")
        self.c = _check_curvature(c)
        if not math.isfinite(init_scale) or init_scale <= 0.0:
            raise ValueError(f"init_scale must be finite and > 0, got {init_scale}")
        self.init_scale = float(init_scale)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias: nn.Parameter | None
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw the weight and bias as described in the class docstring."""
        with torch.no_grad():
            self.weight.normal_(0.0, self.init_scale / math.sqrt(self.in_features))
            if self.bias is not None:
                self.bias.normal_(0.0, 1e-3)

    def _add_bias(self, y: Tensor) -> Tensor:
        if self.bias is None:
            return y
        b = P.expmap0(self.bias.to(y.dtype), c=self.c)
        return P.mobius_add(y, b, c=self.c)

    def forward(self, x: Tensor) -> Tensor:
        """``(W ⊗_c x) ⊕_c expmap0(b)`` for points ``x`` of shape (..., in_features)."""
        _check_points(x, self.in_features, "x")
        in_dtype = x.dtype
        x = x.to(compute_dtype(in_dtype))
        y = P.mobius_matvec(self.weight.to(x.dtype), x, c=self.c)
        return cast_point(self._add_bias(y), in_dtype, c=self.c)

    def forward_tangent(self, u: Tensor) -> Tensor:
        """The layer applied to ``expmap0(u)`` for a tangent vector ``u`` at the origin.

        ``expmap0(W u) ⊕_c expmap0(b)``, which equals ``forward(expmap0(u))`` (because
        ``W ⊗_c expmap0(u) = expmap0(W u)``) without the round trip through the ball, so
        nothing saturates when ``|u|`` exceeds the representable radius. The sum is formed in
        one closed form (:func:`_expmap0_add`) and projected strictly inside the ball.
        ``u``: (..., in_features) -> (..., out_features) points.
        """
        _check_points(u, self.in_features, "u")
        in_dtype = u.dtype
        u = u.to(compute_dtype(in_dtype))
        z = F.linear(u, self.weight.to(u.dtype))
        if self.bias is None:
            return cast_point(P.expmap0(z, c=self.c), in_dtype, c=self.c)
        y = _expmap0_add(z, self.bias.to(z.dtype), c=self.c)
        return P.project(y.to(in_dtype), c=self.c)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"c={self.c}, bias={self.bias is not None}"
        )


class HyperbolicActivation(nn.Module):
    """A Euclidean activation applied in the tangent space at the origin.

    ``y = expmap0(fn(logmap0(x)))``. ``fn`` must be elementwise-shaped (returns a tensor of
    the shape of its input). Shapes: (..., D) points -> (..., D) points.
    Raises ``TypeError`` if ``fn`` is not callable.
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], *, c: float = 1.0) -> None:
        super().__init__()
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.c = _check_curvature(c)

    def forward(self, x: Tensor) -> Tensor:
        """``expmap0(fn(logmap0(x)))``; ``x``: (..., D) points."""
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() == 0:
            raise ValueError("x must have shape (..., D), got a 0-d tensor")
        _check_points(x, x.shape[-1], "x")
        in_dtype = x.dtype
        x = x.to(compute_dtype(in_dtype))
        u = self.fn(P.logmap0(x, c=self.c))
        if u.shape != x.shape:
            raise ValueError(f"fn changed the shape from {tuple(x.shape)} to {tuple(u.shape)}")
        return cast_point(P.expmap0(u, c=self.c), in_dtype, c=self.c)


class HyperbolicLayerNorm(nn.Module):
    """Layer normalisation in the tangent space at the origin, with a controlled radius.

    With ``u = logmap0(x)``, ``m = mean(u)``, ``s^2 = var(u)`` (biased, over the last dim):

        ``y = expmap0(g * (u - m) / sqrt(s^2 + eps) / sqrt(d) + b)``

    ``g`` (init 1) and ``b`` (init 0) are learnable tangent vectors. The normalised vector has
    norm about ``sqrt(d)``; dividing by ``sqrt(d)`` puts it at tangent norm about 1, i.e.
    ``dist0(y) ≈ 2 / sqrt(c)`` at initialisation for every ``d_model``, far inside the
    representable radius (a normaliser without the ``1/sqrt(d)`` would send every token to the
    boundary, where ``expmap0`` saturates and the norm loses its meaning).

    Shapes: (..., d_model) points -> (..., d_model) points. Raises on a wrong last dimension.
    """

    def __init__(self, d_model: int, *, c: float = 1.0, eps: float = 1e-5) -> None:
        super().__init__()
        self.d_model = _check_positive_int(d_model, "d_model")
        self.c = _check_curvature(c)
        if not math.isfinite(eps) or eps <= 0.0:
            raise ValueError(f"eps must be finite and > 0, got {eps}")
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))

    def forward_tangent(self, x: Tensor) -> Tensor:
        """The normalised tangent vector ``g * (u - m) / sqrt(s^2 + eps) / sqrt(d) + b``.

        ``forward(x) == expmap0(forward_tangent(x))``; (..., d_model) -> (..., d_model).
        """
        _check_points(x, self.d_model, "x")
        in_dtype = x.dtype
        x = x.to(compute_dtype(in_dtype))
        u = P.logmap0(x, c=self.c)
        un = F.layer_norm(u, (self.d_model,), eps=self.eps)
        scale = self.weight.to(u.dtype) / math.sqrt(self.d_model)
        return torch.addcmul(self.bias.to(u.dtype), un, scale).to(in_dtype)

    def forward(self, x: Tensor) -> Tensor:
        """``expmap0`` of :meth:`forward_tangent`; (..., d_model) points -> points."""
        in_dtype = x.dtype
        t = self.forward_tangent(x.to(compute_dtype(x.dtype)))
        return cast_point(P.expmap0(t, c=self.c), in_dtype, c=self.c)

    def extra_repr(self) -> str:
        return f"{self.d_model}, c={self.c}, eps={self.eps}"


class HyperbolicFeedForward(nn.Module):
    """Position-wise feed-forward network in the ball.

    ``y = W2 ⊗_c expmap0(dropout(act(logmap0((W1 ⊗_c x) ⊕_c b1)))) ⊕_c b2``: two
    :class:`HyperbolicLinear` layers with the activation and the dropout applied to the tangent
    vector at the origin (dropout never scales a ball point).

    Args:
        d_model: point size (> 0).
        dim_feedforward: hidden size (> 0).
        dropout: dropout probability in [0, 1).
        c: curvature.
        activation: Euclidean activation (default ``torch.relu``).

    Shapes: (..., d_model) points -> (..., d_model) points.
    """

    def __init__(
        self,
        d_model: int,
        dim_feedforward: int,
        dropout: float = 0.0,
        *,
        c: float = 1.0,
        activation: Callable[[Tensor], Tensor] = torch.relu,
    ) -> None:
        super().__init__()
        self.c = _check_curvature(c)
        self.dropout = _check_probability(dropout, "dropout")
        if not callable(activation):
            raise TypeError(f"activation must be callable, got {type(activation).__name__}")
        self.activation = activation
        self.linear1 = HyperbolicLinear(d_model, dim_feedforward, c=self.c)
        self.linear2 = HyperbolicLinear(dim_feedforward, d_model, c=self.c)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the network to (..., d_model) points."""
        in_dtype = x.dtype
        x = x.to(compute_dtype(in_dtype))
        h = self.linear1(x)
        u = self.activation(P.logmap0(h, c=self.c))
        u = F.dropout(u, self.dropout, self.training)
        return cast_point(self.linear2.forward_tangent(u), in_dtype, c=self.c)


def _sinusoid(max_len: int, d_model: int) -> Tensor:
    """The classic sinusoidal table (max_len, d_model), with unit-norm (sin, cos) pairs."""
    pos = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
    half = (d_model + 1) // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) * 2 / d_model)
    table = torch.zeros(max_len, 2 * half, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    return table[:, :d_model]


class HyperbolicPositionalEncoding(nn.Module):
    """Positional codes in the ball applied by Möbius addition: ``y_t = x_t ⊕_c expmap0(p_t)``.

    ``p_t`` is a tangent vector at the origin: the sinusoidal code of position ``t`` scaled to
    Euclidean norm ``radius`` (so ``dist0(expmap0(p_t)) = 2 radius / sqrt(c)``), or, with
    ``learnable=True``, a learned table initialised from those codes.

    Shapes: (..., T, d_model) points with ``T <= max_len`` -> (..., T, d_model) points.
    Raises ``ValueError`` if ``T > max_len`` or on a wrong last dimension.
    """

    def __init__(
        self,
        d_model: int,
        max_len: int,
        *,
        c: float = 1.0,
        learnable: bool = False,
        radius: float = 0.5,
    ) -> None:
        super().__init__()
        self.d_model = _check_positive_int(d_model, "d_model")
        self.max_len = _check_positive_int(max_len, "max_len")
        self.c = _check_curvature(c)
        if not math.isfinite(radius) or radius <= 0.0:
            raise ValueError(f"radius must be finite and > 0, got {radius}")
        table = _sinusoid(max_len, d_model)
        table = table * (radius / table.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        self.codes: Tensor
        if learnable:
            self.codes = nn.Parameter(table.to(torch.get_default_dtype()))
        else:
            self.register_buffer("codes", table.to(torch.get_default_dtype()))

    def forward(self, x: Tensor) -> Tensor:
        """``x_t ⊕_c expmap0(p_t)`` for (..., T, d_model) points."""
        _check_points(x, self.d_model, "x")
        if x.dim() < 2:
            raise ValueError(f"x must have shape (..., T, d_model), got {tuple(x.shape)}")
        t = x.shape[-2]
        if t > self.max_len:
            raise ValueError(f"sequence length {t} exceeds max_len={self.max_len}")
        in_dtype = x.dtype
        x = x.to(compute_dtype(in_dtype))
        p = P.expmap0(self.codes[:t].to(x.dtype), c=self.c)
        return cast_point(P.mobius_add(x, p, c=self.c), in_dtype, c=self.c)

    def extra_repr(self) -> str:
        return f"{self.d_model}, max_len={self.max_len}, c={self.c}"
