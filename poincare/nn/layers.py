"""Hyperbolic building blocks on the Poincaré ball ``{x : c|x|^2 < 1}``.

Every module here takes and returns points of the ball in the last dimension (any leading
shape) and keeps its learnable parameters Euclidean (matrices, and tangent vectors at the
origin mapped into the ball with ``expmap0``), so that plain optimisers such as
:class:`torch.optim.Adam` train them.

Curvature: every module takes ``c`` as a positive float or a :class:`poincare.PoincareBall`,
held as ``module.ball``; one ball can be shared by all the modules of a model, and a learnable
one trains with them. Precision: the modules read the policy of :func:`poincare.compute_dtype`:
float16/bfloat16 inputs are computed in float32, and under ``poincare.upcast(torch.float64)``
every module computes in float64. Outputs come back in the input dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import functional as PF
from .._checks import is_real
from ..manifold import PoincareBall
from ._common import (
    BallLike,
    as_ball,
    cast_point,
    check_points,
    check_positive_int,
    check_probability,
    compute_dtype,
)
from .functional import hyperbolic_linear_tangent

__all__ = [
    "HyperbolicActivation",
    "HyperbolicFeedForward",
    "HyperbolicLayerNorm",
    "HyperbolicLinear",
    "HyperbolicPositionalEncoding",
]


def _check_positive_float(value: float, name: str) -> float:
    if not is_real(value):
        raise TypeError(f"{name} must be a positive float, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return float(value)


class _OnBall(nn.Module):
    """A module computing on one (possibly shared) :class:`PoincareBall`."""

    ball: PoincareBall

    def _set_ball(self, c: BallLike) -> None:
        self.ball = as_ball(c)

    @property
    def c(self) -> float | Tensor:
        """The curvature as the ops take it (:attr:`poincare.PoincareBall.curvature`)."""
        return self.ball.curvature


class HyperbolicLinear(_OnBall):
    """Möbius linear layer ``y = (W ⊗_c x) ⊕_c expmap0(b)``.

    ``W ⊗_c x = expmap0(W logmap0(x))`` is the Möbius matrix-vector product and the bias
    ``b`` is kept as a tangent vector at the origin (a plain Euclidean parameter); the sum is
    formed in one closed form (:func:`poincare.expmap0_add`).

    Args:
        in_features: size of each input point (> 0).
        out_features: size of each output point (> 0).
        c: curvature (a positive float or a :class:`poincare.PoincareBall`).
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
        c: BallLike = 1.0,
        bias: bool = True,
        init_scale: float = 0.5,
    ) -> None:
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features")
        self.out_features = check_positive_int(out_features, "out_features")
        self._set_ball(c)
        self.init_scale = _check_positive_float(init_scale, "init_scale")
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

    def forward(self, x: Tensor) -> Tensor:
        """``(W ⊗_c x) ⊕_c expmap0(b)`` for points ``x`` of shape (..., in_features)."""
        check_points(x, self.in_features, "x")
        c = self.c
        u = PF.logmap0(x.to(compute_dtype(x.dtype)), c=c)
        return cast_point(hyperbolic_linear_tangent(u, self.weight, self.bias, c=c), x.dtype, c=c)

    def forward_tangent(self, u: Tensor) -> Tensor:
        """The layer applied to ``expmap0(u)`` for a tangent vector ``u`` at the origin.

        ``expmap0(W u) ⊕_c expmap0(b)`` (:func:`poincare.nn.functional.hyperbolic_linear_tangent`),
        which equals ``forward(expmap0(u))`` without the round trip through the ball, so
        nothing saturates when ``|u|`` exceeds the representable radius.
        ``u``: (..., in_features) -> (..., out_features) points.
        """
        check_points(u, self.in_features, "u")
        c = self.c
        return cast_point(hyperbolic_linear_tangent(u, self.weight, self.bias, c=c), u.dtype, c=c)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


class HyperbolicActivation(_OnBall):
    """A Euclidean activation applied in the tangent space at the origin.

    ``y = expmap0(fn(logmap0(x)))``. ``fn`` must be elementwise-shaped (returns a tensor of
    the shape of its input). Shapes: (..., D) points -> (..., D) points.
    Raises ``TypeError`` if ``fn`` is not callable.
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], *, c: BallLike = 1.0) -> None:
        super().__init__()
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self._set_ball(c)

    def forward(self, x: Tensor) -> Tensor:
        """``expmap0(fn(logmap0(x)))``; ``x``: (..., D) points."""
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() == 0:
            raise ValueError("x must have shape (..., D), got a 0-d tensor")
        check_points(x, x.shape[-1], "x")
        c = self.c
        u = self.fn(PF.logmap0(x.to(compute_dtype(x.dtype)), c=c))
        if u.shape != x.shape:
            raise ValueError(f"fn changed the shape from {tuple(x.shape)} to {tuple(u.shape)}")
        return cast_point(PF.expmap0(u, c=c), x.dtype, c=c)


class HyperbolicLayerNorm(_OnBall):
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

    def __init__(self, d_model: int, *, c: BallLike = 1.0, eps: float = 1e-5) -> None:
        super().__init__()
        self.d_model = check_positive_int(d_model, "d_model")
        self._set_ball(c)
        self.eps = _check_positive_float(eps, "eps")
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))

    def forward_tangent(self, x: Tensor) -> Tensor:
        """The normalised tangent vector ``g * (u - m) / sqrt(s^2 + eps) / sqrt(d) + b``.

        ``forward(x) == expmap0(forward_tangent(x))``; (..., d_model) points -> (..., d_model)
        tangent vectors at the origin, in the compute dtype of ``x``
        (:func:`poincare.compute_dtype`), so that a module that consumes them (the attention,
        the feed-forward network) needs no round trip through the ball.
        """
        check_points(x, self.d_model, "x")
        u = PF.logmap0(x.to(compute_dtype(x.dtype)), c=self.c)
        un = F.layer_norm(u, (self.d_model,), eps=self.eps)
        scale = self.weight.to(u.dtype) / math.sqrt(self.d_model)
        return torch.addcmul(self.bias.to(u.dtype), un, scale)

    def forward(self, x: Tensor) -> Tensor:
        """``expmap0`` of :meth:`forward_tangent`; (..., d_model) points -> points."""
        c = self.c
        return cast_point(PF.expmap0(self.forward_tangent(x), c=c), x.dtype, c=c)

    def extra_repr(self) -> str:
        return f"{self.d_model}, eps={self.eps}"


class HyperbolicFeedForward(_OnBall):
    """Position-wise feed-forward network in the ball.

    ``y = W2 ⊗_c expmap0(dropout(act(logmap0((W1 ⊗_c x) ⊕_c b1)))) ⊕_c b2``: two
    :class:`HyperbolicLinear` layers with the activation and the dropout applied to the tangent
    vector at the origin (dropout never scales a ball point).

    Args:
        d_model: point size (> 0).
        dim_feedforward: hidden size (> 0).
        dropout: dropout probability in [0, 1).
        c: curvature (a positive float or a :class:`poincare.PoincareBall`, shared with the
            two linear layers).
        activation: Euclidean activation (default ``torch.relu``).

    Shapes: (..., d_model) points -> (..., d_model) points.
    """

    def __init__(
        self,
        d_model: int,
        dim_feedforward: int,
        dropout: float = 0.0,
        *,
        c: BallLike = 1.0,
        activation: Callable[[Tensor], Tensor] = torch.relu,
    ) -> None:
        super().__init__()
        self._set_ball(c)
        self.dropout = check_probability(dropout, "dropout")
        if not callable(activation):
            raise TypeError(f"activation must be callable, got {type(activation).__name__}")
        self.activation = activation
        self.linear1 = HyperbolicLinear(d_model, dim_feedforward, c=self.ball)
        self.linear2 = HyperbolicLinear(dim_feedforward, d_model, c=self.ball)

    def _from_hidden(self, h: Tensor, in_dtype: torch.dtype) -> Tensor:
        u = self.activation(PF.logmap0(h, c=self.c))
        u = F.dropout(u, self.dropout, self.training)
        return cast_point(self.linear2.forward_tangent(u), in_dtype, c=self.c)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the network to (..., d_model) points."""
        return self._from_hidden(self.linear1(x.to(compute_dtype(x.dtype))), x.dtype)

    def forward_tangent(self, u: Tensor) -> Tensor:
        """The network applied to ``expmap0(u)`` (tangent vectors (..., d_model) at the origin),
        without the round trip through the ball; returns points."""
        return self._from_hidden(
            self.linear1.forward_tangent(u.to(compute_dtype(u.dtype))), u.dtype
        )


def _sinusoid(max_len: int, d_model: int) -> Tensor:
    """The classic sinusoidal table (max_len, d_model), with unit-norm (sin, cos) pairs."""
    pos = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
    half = (d_model + 1) // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) * 2 / d_model)
    table = torch.zeros(max_len, 2 * half, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    return table[:, :d_model]


class HyperbolicPositionalEncoding(_OnBall):
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
        c: BallLike = 1.0,
        learnable: bool = False,
        radius: float = 0.5,
    ) -> None:
        super().__init__()
        self.d_model = check_positive_int(d_model, "d_model")
        self.max_len = check_positive_int(max_len, "max_len")
        self._set_ball(c)
        radius = _check_positive_float(radius, "radius")
        table = _sinusoid(max_len, d_model)
        table = table * (radius / table.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        self.codes: Tensor
        if learnable:
            self.codes = nn.Parameter(table.to(torch.get_default_dtype()))
        else:
            self.register_buffer("codes", table.to(torch.get_default_dtype()))

    def forward(self, x: Tensor) -> Tensor:
        """``x_t ⊕_c expmap0(p_t)`` for (..., T, d_model) points."""
        check_points(x, self.d_model, "x")
        if x.dim() < 2:
            raise ValueError(f"x must have shape (..., T, d_model), got {tuple(x.shape)}")
        t = x.shape[-2]
        if t > self.max_len:
            raise ValueError(f"sequence length {t} exceeds max_len={self.max_len}")
        c = self.c
        xc = x.to(compute_dtype(x.dtype))
        p = PF.expmap0(self.codes[:t].to(xc.dtype), c=c)
        return cast_point(PF.mobius_add(xc, p, c=c), x.dtype, c=c)

    def extra_repr(self) -> str:
        return f"{self.d_model}, max_len={self.max_len}"
