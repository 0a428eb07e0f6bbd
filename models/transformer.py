"""Transformer blocks and stacks on the Poincaré ball with Möbius residual connections."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

import poincare as P

from .attention import HyperbolicMultiHeadAttention, Score
from .layers import (
    HyperbolicFeedForward,
    HyperbolicLayerNorm,
    HyperbolicPositionalEncoding,
    _check_curvature,
    _check_points,
    _check_positive_int,
    _check_probability,
    cast_point,
    compute_dtype,
    tangent_dropout,
)

__all__ = ["HyperbolicTransformer", "HyperbolicTransformerBlock"]


class HyperbolicTransformerBlock(nn.Module):
    """One transformer layer in the ball, with Möbius residuals ``x ⊕_c sublayer(x)``.

    ``norm_first=True``::

        x = x ⊕ drop(attn(norm1(x)))
        x = x ⊕ drop(ff(norm2(x)))

    ``norm_first=False``: ``x = norm1(x ⊕ drop(attn(x)))``, ``x = norm2(x ⊕ drop(ff(x)))``.
    ``drop`` is dropout in the tangent space at the origin; ``attn`` is
    :class:`HyperbolicMultiHeadAttention` (self-attention; ``score`` and ``memory_efficient``
    are passed to it), ``ff`` is
    :class:`HyperbolicFeedForward`, the norms are :class:`HyperbolicLayerNorm`.

    Shapes: (B, T, d_model) points -> (B, T, d_model) points.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dim_feedforward: int,
        dropout: float = 0.0,
        *,
        c: float = 1.0,
        norm_first: bool = True,
        score: Score = "distance",
        activation: Callable[[Tensor], Tensor] = torch.relu,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        self.d_model = _check_positive_int(d_model, "d_model")
        self.c = _check_curvature(c)
        self.dropout = _check_probability(dropout, "dropout")
        self.norm_first = norm_first
        self.self_attn = HyperbolicMultiHeadAttention(
            d_model,
            num_heads,
            dropout=dropout,
            c=self.c,
            score=score,
            batch_first=True,
            memory_efficient=memory_efficient,
        )
        self.ff = HyperbolicFeedForward(
            d_model, dim_feedforward, dropout, c=self.c, activation=activation
        )
        self.norm1 = HyperbolicLayerNorm(d_model, c=self.c)
        self.norm2 = HyperbolicLayerNorm(d_model, c=self.c)

    def _attn(
        self,
        x: Tensor,
        key_padding_mask: Tensor | None,
        attn_mask: Tensor | None,
        is_causal: bool,
    ) -> Tensor:
        out, _ = self.self_attn(
            x,
            x,
            x,
            key_padding_mask=key_padding_mask,
            attn_mask=attn_mask,
            is_causal=is_causal,
        )
        return tangent_dropout(out, self.dropout, self.training, c=self.c)

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
        _check_points(x, self.d_model, "x")
        if x.dim() != 3:
            raise ValueError(f"x must have shape (B, T, d_model), got {tuple(x.shape)}")
        in_dtype = x.dtype
        x = x.to(compute_dtype(in_dtype))
        c = self.c
        if self.norm_first:
            x = P.mobius_add(
                x, self._attn(self.norm1(x), key_padding_mask, attn_mask, is_causal), c=c
            )
            ff = tangent_dropout(self.ff(self.norm2(x)), self.dropout, self.training, c=c)
            x = P.mobius_add(x, ff, c=c)
        else:
            x = self.norm1(
                P.mobius_add(x, self._attn(x, key_padding_mask, attn_mask, is_causal), c=c)
            )
            ff = tangent_dropout(self.ff(x), self.dropout, self.training, c=c)
            x = self.norm2(P.mobius_add(x, ff, c=c))
        return cast_point(x, in_dtype, c=self.c)


class HyperbolicTransformer(nn.Module):
    """A stack of :class:`HyperbolicTransformerBlock` over sequences of ball points.

    ``y = norm(block_L(... block_1(pe(x))))`` with the positional encoding
    ``pe(x)_t = x_t ⊕_c expmap0(p_t)`` (:class:`HyperbolicPositionalEncoding`; skipped when
    ``positional=False``) and a final :class:`HyperbolicLayerNorm` (so the output radius is
    controlled). With ``causal=True`` every block masks keys after the query.

    Args:
        d_model, num_heads, num_layers, dim_feedforward, dropout: as in
            :class:`torch.nn.TransformerEncoder`.
        c: curvature.
        max_len: longest sequence accepted.
        causal: causal self-attention.
        score: attention score (see :func:`models.attention.hyperbolic_attention`).
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
        c: float = 1.0,
        max_len: int = 512,
        causal: bool = False,
        score: Score = "distance",
        norm_first: bool = True,
        learnable_positions: bool = False,
        positional: bool = True,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        self.d_model = _check_positive_int(d_model, "d_model")
        self.num_layers = _check_positive_int(num_layers, "num_layers")
        self.c = _check_curvature(c)
        self.max_len = _check_positive_int(max_len, "max_len")
        self.causal = causal
        self.pos_encoding: HyperbolicPositionalEncoding | None = (
            HyperbolicPositionalEncoding(d_model, max_len, c=self.c, learnable=learnable_positions)
            if positional
            else None
        )
        self.layers = nn.ModuleList(
            HyperbolicTransformerBlock(
                d_model,
                num_heads,
                dim_feedforward,
                dropout,
                c=self.c,
                norm_first=norm_first,
                score=score,
                memory_efficient=memory_efficient,
            )
            for _ in range(num_layers)
        )
        self.norm = HyperbolicLayerNorm(d_model, c=self.c)

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
        _check_points(x, self.d_model, "x")
        if x.dim() != 3:
            raise ValueError(f"x must have shape (B, T, d_model), got {tuple(x.shape)}")
        if x.shape[1] > self.max_len:
            raise ValueError(f"sequence length {x.shape[1]} exceeds max_len={self.max_len}")
        in_dtype = x.dtype
        x = x.to(compute_dtype(in_dtype))
        if self.pos_encoding is not None:
            x = self.pos_encoding(x)
        for layer in self.layers:
            x = layer(
                x,
                key_padding_mask=key_padding_mask,
                attn_mask=attn_mask,
                is_causal=self.causal,
            )
        out: Tensor = self.norm(x)
        return cast_point(out, in_dtype, c=self.c)
