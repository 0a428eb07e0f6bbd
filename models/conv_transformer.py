"""A hyperbolic transformer over time for every location of a feature map (ConvGRU layout)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import poincare as P

from .attention import Score
from .layers import _check_curvature, _check_positive_int, cast_point, compute_dtype
from .transformer import HyperbolicTransformer

__all__ = ["ConvHyperbolicTransformer"]


class ConvHyperbolicTransformer(nn.Module):
    """Temporal hyperbolic transformer applied independently at each spatial location.

    For input feature maps ``x`` of shape (B, T, C, H, W) (Euclidean), each location's
    sequence ``x[b, :, :, i, j]`` becomes a sequence of ball points

        ``p_t = expmap0(r(A x_t + a))``, ``r(u) = R tanh(|u| / R) u / |u|``

    (a Euclidean linear map ``C -> hidden_dim`` followed by a soft clip of the tangent norm to
    ``R = input_radius``, so ``dist0(p_t) < 2 R / sqrt(c)`` and ``expmap0`` never saturates).
    All ``B * H * W`` sequences then go through one :class:`HyperbolicTransformer` call
    (causal by default).

    Args:
        input_dim: channels C of the input (> 0).
        hidden_dim: point size of the transformer (divisible by ``num_heads``).
        num_heads, num_layers, dropout: transformer sizes.
        c: curvature.
        causal: causal attention over time (step t sees steps <= t).
        dim_feedforward: feed-forward size (default ``2 * hidden_dim``).
        max_len: longest sequence accepted.
        score: attention score.
        input_radius: ``R`` above.
        memory_efficient: recompute the attention's elementwise maps in the backward pass.

    Returns from ``forward``: ``(output (B, T, hidden_dim, H, W), context (B, hidden_dim, H, W))``
    where ``context = output[:, -1]`` (the last step), both points of the ball along the
    channel dimension, so the module can replace a ConvGRU (``out, ctx = module(x)``).
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        num_heads: int,
        num_layers: int,
        dropout: float = 0.0,
        *,
        c: float = 1.0,
        causal: bool = True,
        dim_feedforward: int | None = None,
        max_len: int = 512,
        score: Score = "distance",
        input_radius: float = 2.0,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        self.input_dim = _check_positive_int(input_dim, "input_dim")
        self.hidden_dim = _check_positive_int(hidden_dim, "hidden_dim")
        self.c = _check_curvature(c)
        if not math.isfinite(input_radius) or input_radius <= 0.0:
            raise ValueError(f"input_radius must be finite and > 0, got {input_radius}")
        self.input_radius = float(input_radius)
        self.input_proj = nn.Linear(input_dim, hidden_dim)
        self.transformer = HyperbolicTransformer(
            hidden_dim,
            num_heads,
            num_layers,
            2 * hidden_dim if dim_feedforward is None else dim_feedforward,
            dropout,
            c=self.c,
            max_len=max_len,
            causal=causal,
            score=score,
            memory_efficient=memory_efficient,
        )

    def to_ball(self, x: Tensor) -> Tensor:
        """Map (..., input_dim) Euclidean features to (..., hidden_dim) ball points."""
        dtype = compute_dtype(x.dtype)
        x = x.to(dtype)
        u = F.linear(x, self.input_proj.weight.to(dtype), self.input_proj.bias.to(dtype))
        n = torch.linalg.vector_norm(u, dim=-1, keepdim=True).clamp_min(1e-30)
        r = self.input_radius
        return P.expmap0(u * (r * torch.tanh(n / r) / n), c=self.c)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, C, H, W) features -> (output (B, T, hidden, H, W), context (B, hidden, H, W)).

        Raises ``TypeError`` for a non-floating input and ``ValueError`` for a wrong rank,
        channel count or a sequence longer than ``max_len``.
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must have a floating dtype, got {x.dtype}")
        if x.dim() != 5:
            raise ValueError(f"x must have shape (B, T, C, H, W), got {tuple(x.shape)}")
        b, t, ch, h, w = x.shape
        if ch != self.input_dim:
            raise ValueError(f"x must have {self.input_dim} channels, got {ch}")
        in_dtype = x.dtype
        dtype = compute_dtype(in_dtype)
        seq = x.permute(0, 3, 4, 1, 2).reshape(b * h * w, t, ch)
        y = cast_point(self.transformer(self.to_ball(seq.to(dtype))), in_dtype, c=self.c)
        out = y.reshape(b, h, w, t, self.hidden_dim).permute(0, 3, 4, 1, 2)
        return out, out[:, -1]
