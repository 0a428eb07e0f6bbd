"""Transformer blocks and stacks on the Poincaré ball with Möbius residual connections, and the
convolutional (per-location, over time) transformer that replaces a ConvGRU."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import functional as PF
from ._common import (
    BallLike,
    cast_point,
    check_points,
    check_positive_int,
    check_probability,
    compute_dtype,
)
from .attention import HyperbolicMultiHeadAttention
from .functional import tangent_dropout
from .layers import (
    HyperbolicFeedForward,
    HyperbolicLayerNorm,
    HyperbolicPositionalEncoding,
    _OnBall,
)

__all__ = ["ConvHyperbolicTransformer", "HyperbolicTransformer", "HyperbolicTransformerBlock"]


def _check_sequence(x: Tensor, d_model: int) -> None:
    check_points(x, d_model, "x")
    if x.dim() != 3:
        raise ValueError(f"x must have shape (B, T, d_model), got {tuple(x.shape)}")


class HyperbolicTransformerBlock(_OnBall):
    """One transformer layer in the ball, with Möbius residuals ``x ⊕_c sublayer(x)``.

    ``norm_first=True``::

        x = x ⊕ drop(attn(norm1(x)))
        x = x ⊕ drop(ff(norm2(x)))

    where each norm hands its tangent vector at the origin straight to the next sublayer
    (:meth:`HyperbolicLayerNorm.forward_tangent`, the attention called with ``tangent=True``,
    :meth:`HyperbolicFeedForward.forward_tangent`: no ``expmap0`` followed at once by a
    ``logmap0``). ``norm_first=False``: ``x = norm1(x ⊕ drop(attn(x)))``,
    ``x = norm2(x ⊕ drop(ff(x)))``. ``drop`` is dropout in the tangent space at the origin;
    ``attn`` is :class:`HyperbolicMultiHeadAttention` (self-attention; ``score`` and
    ``memory_efficient`` are passed to it), ``ff`` is :class:`HyperbolicFeedForward`, the norms
    are :class:`HyperbolicLayerNorm`. All share the block's ball.

    ``attn`` (``block.self_attn``) is called as a module, once per run, so its forward hooks and
    pre-hooks fire: in a pre-norm block they see ``(u, u, u)``, tangent vectors at the origin,
    with ``tangent=True``; in a post-norm block ``(x, x, x)``, points. See "Hooks" in
    :class:`HyperbolicMultiHeadAttention` (what they see, how to record the weights).

    Shapes: (B, T, d_model) points -> (B, T, d_model) points.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dim_feedforward: int,
        dropout: float = 0.0,
        *,
        c: BallLike = 1.0,
        norm_first: bool = True,
        score: str = "distance",
        activation: Callable[[Tensor], Tensor] = torch.relu,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        self.d_model = check_positive_int(d_model, "d_model")
        self._set_ball(c)
        self.dropout = check_probability(dropout, "dropout")
        self.norm_first = norm_first
        self.self_attn = HyperbolicMultiHeadAttention(
            d_model,
            num_heads,
            dropout=dropout,
            c=self.ball,
            score=score,
            batch_first=True,
            memory_efficient=memory_efficient,
        )
        self.ff = HyperbolicFeedForward(
            d_model, dim_feedforward, dropout, c=self.ball, activation=activation
        )
        self.norm1 = HyperbolicLayerNorm(d_model, c=self.ball)
        self.norm2 = HyperbolicLayerNorm(d_model, c=self.ball)

    def forward(
        self,
        x: Tensor,
        *,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """Apply the block to (B, T, d_model) points; masks as in
        :meth:`HyperbolicMultiHeadAttention.forward`."""
        _check_sequence(x, self.d_model)
        in_dtype = x.dtype
        x = x.to(compute_dtype(in_dtype))
        c = self.c

        def drop(y: Tensor) -> Tensor:
            return tangent_dropout(y, self.dropout, self.training, c=c)

        # The attention is called as a module (hooks fire), every option a keyword so that a
        # pre-hook with keywords can change it (e.g. ask for the weights).
        if self.norm_first:
            u = self.norm1.forward_tangent(x)
            a, _ = self.self_attn(
                u,
                u,
                u,
                key_padding_mask=key_padding_mask,
                attn_mask=attn_mask,
                is_causal=is_causal,
                need_weights=False,
                tangent=True,
            )
            x = PF.mobius_add(x, drop(a), c=c)
            x = PF.mobius_add(x, drop(self.ff.forward_tangent(self.norm2.forward_tangent(x))), c=c)
        else:
            a, _ = self.self_attn(
                x,
                x,
                x,
                key_padding_mask=key_padding_mask,
                attn_mask=attn_mask,
                is_causal=is_causal,
                need_weights=False,
            )
            x = self.norm1(PF.mobius_add(x, drop(a), c=c))
            x = self.norm2(PF.mobius_add(x, drop(self.ff(x)), c=c))
        return cast_point(x, in_dtype, c=c)


class HyperbolicTransformer(_OnBall):
    """A stack of :class:`HyperbolicTransformerBlock` over sequences of ball points.

    ``y = norm(block_L(... block_1(pe(x))))`` with the positional encoding
    ``pe(x)_t = x_t ⊕_c expmap0(p_t)`` (:class:`HyperbolicPositionalEncoding`; skipped when
    ``positional=False``) and a final :class:`HyperbolicLayerNorm` (so the output radius is
    controlled). With ``causal=True`` every block masks keys after the query. Every layer
    shares the transformer's ball.

    Args:
        d_model, num_heads, num_layers, dim_feedforward, dropout: as in
            :class:`torch.nn.TransformerEncoder`.
        c: curvature (a positive float or a shared :class:`poincare.PoincareBall`).
        max_len: longest sequence accepted.
        causal: causal self-attention.
        score: attention score (see "Scores" in :mod:`poincare.nn.functional`).
        norm_first: pre-norm blocks (default) or post-norm.
        learnable_positions: learn the positional codes.
        positional: add positional codes at all.
        memory_efficient: recompute the attention's elementwise maps in the backward pass
            (see :class:`HyperbolicMultiHeadAttention`).

    Shapes: (B, T, d_model) points, ``T <= max_len`` -> (B, T, d_model) points.
    Raises ``ValueError`` on a wrong rank, size or ``T > max_len``.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        num_layers: int,
        dim_feedforward: int,
        dropout: float = 0.0,
        *,
        c: BallLike = 1.0,
        max_len: int = 512,
        causal: bool = False,
        score: str = "distance",
        norm_first: bool = True,
        learnable_positions: bool = False,
        positional: bool = True,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        self.d_model = check_positive_int(d_model, "d_model")
        self.num_layers = check_positive_int(num_layers, "num_layers")
        self._set_ball(c)
        self.max_len = check_positive_int(max_len, "max_len")
        self.causal = causal
        self.pos_encoding: HyperbolicPositionalEncoding | None = (
            HyperbolicPositionalEncoding(
                d_model, max_len, c=self.ball, learnable=learnable_positions
            )
            if positional
            else None
        )
        self.layers = nn.ModuleList(
            HyperbolicTransformerBlock(
                d_model,
                num_heads,
                dim_feedforward,
                dropout,
                c=self.ball,
                norm_first=norm_first,
                score=score,
                memory_efficient=memory_efficient,
            )
            for _ in range(num_layers)
        )
        self.norm = HyperbolicLayerNorm(d_model, c=self.ball)

    def forward_tangent(
        self,
        x: Tensor,
        *,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        """The output's tangent vectors at the origin (the final norm's
        :meth:`~HyperbolicLayerNorm.forward_tangent`), in the compute dtype of ``x``:
        ``forward(x) == expmap0(forward_tangent(x))``. Arguments as :meth:`forward`."""
        _check_sequence(x, self.d_model)
        if x.shape[1] > self.max_len:
            raise ValueError(f"sequence length {x.shape[1]} exceeds max_len={self.max_len}")
        x = x.to(compute_dtype(x.dtype))
        if self.pos_encoding is not None:
            x = self.pos_encoding(x)
        for layer in self.layers:
            x = layer(
                x,
                key_padding_mask=key_padding_mask,
                attn_mask=attn_mask,
                is_causal=self.causal,
            )
        out: Tensor = self.norm.forward_tangent(x)
        return out

    def forward(
        self,
        x: Tensor,
        *,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        """Encode (B, T, d_model) points; ``key_padding_mask`` (B, T) True = padding,
        ``attn_mask`` (T, T) or (B*heads, T, T) as in
        :meth:`HyperbolicMultiHeadAttention.forward`."""
        u = self.forward_tangent(x, key_padding_mask=key_padding_mask, attn_mask=attn_mask)
        return cast_point(PF.expmap0(u, c=self.c), x.dtype, c=self.c)


class ConvHyperbolicTransformer(_OnBall):
    """Temporal hyperbolic transformer applied independently at each spatial location.

    For input feature maps ``x`` of shape (B, T, C, H, W) (Euclidean), each location's
    sequence ``x[b, :, :, i, j]`` becomes a sequence of ball points

        ``p_t = expmap0(r(A x_t + a))``, ``r(u) = R tanh(|u| / R) u / |u|``

    (a Euclidean linear map ``C -> hidden_dim`` followed by a soft clip of the tangent norm to
    ``R = input_radius``, so ``dist0(p_t) < 2 R / sqrt(c)`` and ``expmap0`` never saturates).
    All ``B * H * W`` sequences then go through one :class:`HyperbolicTransformer` call
    (causal by default).

    With ``space_time=True`` the attention is factorised over space and time (as in
    TimeSformer's divided attention): every layer first attends across the ``H * W`` locations
    within each time step (a non-causal :class:`HyperbolicTransformerBlock` over the ``B * T``
    maps, with its own positional codes of the flattened location), then over time at each
    location (the temporal block, causal by default). Both run as single batched calls, with
    no loop over locations or steps; step ``t``'s output still depends only on steps ``<= t``.
    ``max_locations`` bounds ``H * W``.

    Args:
        input_dim: channels C of the input (> 0).
        hidden_dim: point size of the transformer (divisible by ``num_heads``).
        num_heads, num_layers, dropout: transformer sizes.
        c: curvature (a positive float or a shared :class:`poincare.PoincareBall`).
        causal: causal attention over time (step t sees steps <= t).
        dim_feedforward: feed-forward size (default ``2 * hidden_dim``).
        max_len: longest sequence accepted.
        score: attention score.
        input_radius: ``R`` above.
        memory_efficient: recompute the attention's elementwise maps in the backward pass.
        space_time: also attend across locations (factorised space-time attention, above).
        max_locations: largest ``H * W`` accepted with ``space_time``.

    Returns from ``forward``: ``(output (B, T, hidden_dim, H, W), context (B, hidden_dim, H, W))``
    where ``context = output[:, -1]`` (the last step), both points of the ball along the
    channel dimension, so the module can replace a ConvGRU (``out, ctx = module(x)``);
    :meth:`forward_tangent` returns their tangent vectors at the origin.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        num_heads: int,
        num_layers: int,
        dropout: float = 0.0,
        *,
        c: BallLike = 1.0,
        causal: bool = True,
        dim_feedforward: int | None = None,
        max_len: int = 512,
        score: str = "distance",
        input_radius: float = 2.0,
        memory_efficient: bool = False,
        space_time: bool = False,
        max_locations: int = 1024,
    ) -> None:
        super().__init__()
        self.input_dim = check_positive_int(input_dim, "input_dim")
        self.hidden_dim = check_positive_int(hidden_dim, "hidden_dim")
        self._set_ball(c)
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
            c=self.ball,
            max_len=max_len,
            causal=causal,
            score=score,
            memory_efficient=memory_efficient,
        )
        self.space_time = bool(space_time)
        self.max_locations = check_positive_int(max_locations, "max_locations")
        self.spatial_pos: HyperbolicPositionalEncoding | None = None
        self.spatial_layers = nn.ModuleList()
        if self.space_time:
            self.spatial_pos = HyperbolicPositionalEncoding(hidden_dim, max_locations, c=self.ball)
            self.spatial_layers.extend(
                HyperbolicTransformerBlock(
                    hidden_dim,
                    num_heads,
                    2 * hidden_dim if dim_feedforward is None else dim_feedforward,
                    dropout,
                    c=self.ball,
                    score=score,
                    memory_efficient=memory_efficient,
                )
                for _ in range(num_layers)
            )

    def to_ball(self, x: Tensor) -> Tensor:
        """Map (..., input_dim) Euclidean features to (..., hidden_dim) ball points, in the
        compute dtype of ``x``."""
        dtype = compute_dtype(x.dtype)
        x = x.to(dtype)
        u = F.linear(x, self.input_proj.weight.to(dtype), self.input_proj.bias.to(dtype))
        n = torch.linalg.vector_norm(u, dim=-1, keepdim=True).clamp_min(1e-30)
        r = self.input_radius
        return PF.expmap0(u * (r * torch.tanh(n / r) / n), c=self.c)

    def _check(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must have a floating dtype, got {x.dtype}")
        if x.dim() != 5:
            raise ValueError(f"x must have shape (B, T, C, H, W), got {tuple(x.shape)}")
        if x.shape[1] == 0:
            raise ValueError(
                f"x must have at least one time step (T >= 1: the context is the last step), "
                f"got shape {tuple(x.shape)}"
            )
        if x.shape[2] != self.input_dim:
            raise ValueError(f"x must have {self.input_dim} channels, got {x.shape[2]}")
        if self.space_time and x.shape[3] * x.shape[4] > self.max_locations:
            raise ValueError(
                f"x has {x.shape[3] * x.shape[4]} locations, more than "
                f"max_locations={self.max_locations}"
            )

    def _space_time_tangent(self, seq: Tensor, b: int, hw: int) -> Tensor:
        """The factorised layers on ``seq (B*H*W, T, hidden)`` points; returns the final
        norm's tangent vectors, ``(B*H*W, T, hidden)``."""
        tr = self.transformer
        t, d = seq.shape[1], seq.shape[2]
        if t > tr.max_len:
            raise ValueError(f"sequence length {t} exceeds max_len={tr.max_len}")
        y = seq.to(compute_dtype(seq.dtype))
        if tr.pos_encoding is not None:
            y = tr.pos_encoding(y)

        def to_space(z: Tensor) -> Tensor:  # (B*HW, T, D) -> (B*T, HW, D)
            return z.reshape(b, hw, t, d).transpose(1, 2).reshape(b * t, hw, d)

        def to_time(z: Tensor) -> Tensor:  # (B*T, HW, D) -> (B*HW, T, D)
            return z.reshape(b, t, hw, d).transpose(1, 2).reshape(b * hw, t, d)

        assert self.spatial_pos is not None
        y = to_time(self.spatial_pos(to_space(y)))
        for spatial, temporal in zip(self.spatial_layers, tr.layers, strict=True):
            y = to_time(spatial(to_space(y)))
            y = temporal(y, is_causal=tr.causal)
        out: Tensor = tr.norm.forward_tangent(y)
        return out

    def forward_tangent(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Like :meth:`forward`, but the tangent vectors at the origin of the output and the
        context (``logmap0`` of them, without forming the points), in the compute dtype of
        ``x`` (float64 under ``poincare.upcast(torch.float64)``)."""
        self._check(x)
        b, t, ch, h, w = x.shape
        seq = x.permute(0, 3, 4, 1, 2).reshape(b * h * w, t, ch)
        if self.space_time:
            u = self._space_time_tangent(self.to_ball(seq), b, h * w)
        else:
            u = self.transformer.forward_tangent(self.to_ball(seq))
        out = u.reshape(b, h, w, t, self.hidden_dim).permute(0, 3, 4, 1, 2)
        return out, out[:, -1]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, C, H, W) features -> (output (B, T, hidden, H, W), context (B, hidden, H, W)).

        Raises ``TypeError`` for a non-floating input and ``ValueError`` for a wrong rank,
        channel count, an empty sequence (``T = 0``: there is no last step to be the context) or
        a sequence longer than ``max_len``.
        """
        self._check(x)
        b, t, ch, h, w = x.shape
        seq = x.permute(0, 3, 4, 1, 2).reshape(b * h * w, t, ch)
        if self.space_time:
            u = self._space_time_tangent(self.to_ball(seq), b, h * w)
            y = cast_point(PF.expmap0(u, c=self.c), x.dtype, c=self.c)
        else:
            y = cast_point(self.transformer(self.to_ball(seq)), x.dtype, c=self.c)
        out = y.reshape(b, h, w, t, self.hidden_dim).permute(0, 3, 4, 1, 2)
        return out, out[:, -1]
