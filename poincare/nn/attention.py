"""Multi-head attention between points of the Poincaré ball (the module; the pipeline is
:func:`poincare.nn.functional.multi_head_attention_forward`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import BallLike, check_positive_int, check_probability, compute_dtype
from .functional import Score, canonical_score, multi_head_attention_forward
from .layers import HyperbolicLinear, _OnBall

__all__ = ["HyperbolicMultiHeadAttention"]


class HyperbolicMultiHeadAttention(_OnBall):
    """Multi-head attention between points of the Poincaré ball.

    For head ``h`` the query, key and value points are ``expmap0(W_h logmap0(x)) ⊕_c
    expmap0(b_h)`` (a Möbius linear map ``E -> E / heads`` per head); scores
    ``-beta_h f(d(q_i, k_j))`` (see "Scores" in :mod:`poincare.nn.functional`) with a learnable
    temperature ``beta_h = softplus(beta_raw_h)`` (initially 1) give the weights, the values are
    aggregated by their weighted Einstein midpoint, the heads are merged in the tangent space
    at the origin and the output projection gives ``expmap0(W_o t) ⊕_c expmap0(b_o)``.
    :meth:`forward` is a thin call of
    :func:`poincare.nn.functional.multi_head_attention_forward`, which documents the paths.

    Args:
        embed_dim: point size E (divisible by ``num_heads``).
        num_heads: number of heads.
        dropout: dropout probability on the attention weights.
        c: curvature (a positive float or a shared :class:`poincare.PoincareBall`).
        score: ``"distance"`` (or ``"regular"``), ``"squared"`` or ``"cosh"``.
        bias: Möbius biases on the projections.
        batch_first: inputs are (B, L, E) if true, else (L, B, E).
        kdim, vdim: key and value point sizes (default ``embed_dim``).
        memory_efficient: when gradients are recorded, recompute the elementwise hyperbolic
            maps (projections, Lorentz coordinates, midpoint, merge) in the backward pass
            instead of storing their intermediates: same results, less memory, more time.

    ``forward`` mirrors :class:`torch.nn.MultiheadAttention` and returns
    ``(output, weights or None)``; with ``tangent=True`` (or through :meth:`forward_tangent`,
    for self-attention) it takes tangent vectors at the origin instead of points (a layer
    norm's :meth:`~poincare.nn.HyperbolicLayerNorm.forward_tangent`).

    Hooks: :class:`~poincare.nn.HyperbolicTransformerBlock` (and every stack built of it) calls
    the module itself, never one of its methods, so hooks registered with
    ``register_forward_pre_hook`` and ``register_forward_hook`` (``with_kwargs=True`` too) fire
    once per run of the block and see that call as it is made (the blocks pass every option
    as a keyword, ``need_weights=False`` included, so a pre-hook with keywords can change it):

    - pre-norm blocks (``norm_first=True``, the default): ``args == (u, u, u)``, the tangent
      vectors at the origin (B, T, E) that the first layer norm gives, with ``tangent=True``;
    - post-norm blocks, and a direct ``attn(q, k, v)``: ``args == (q, k, v)``, points of the
      ball, with ``tangent`` absent or False.

    The output is ``(output, weights or None)`` in both modes, the output being points of the
    ball; a forward hook that returns another ``(output, weights)`` pair replaces what the block
    adds to its residual. The blocks ask for no weights; to record them, a pre-hook with
    keywords asks for them and a forward hook keeps them (asking for weights takes the path
    that forms them, blockwise instead of the fused kernel or ``scaled_dot_product_attention``,
    so the output may change by rounding)::

        weights = []
        attn = block.self_attn
        ask = attn.register_forward_pre_hook(
            lambda m, args, kwargs: (args, {**kwargs, "need_weights": True}),
            with_kwargs=True,
        )
        keep = attn.register_forward_hook(lambda m, args, out: weights.append(out[1]))
        block(x)  # weights[-1]: (B, T, T), each row summing to 1 (0 if all keys masked)
        ask.remove()
        keep.remove()
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        dropout: float = 0.0,
        c: BallLike = 1.0,
        score: str = "distance",
        bias: bool = True,
        batch_first: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        self.embed_dim = check_positive_int(embed_dim, "embed_dim")
        self.num_heads = check_positive_int(num_heads, "num_heads")
        if embed_dim % num_heads != 0:
            raise ValueError(
                f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})"
            )
        self.score: Score = canonical_score(score)
        self.head_dim = embed_dim // num_heads
        self.kdim = check_positive_int(embed_dim if kdim is None else kdim, "kdim")
        self.vdim = check_positive_int(embed_dim if vdim is None else vdim, "vdim")
        self.dropout = check_probability(dropout, "dropout")
        self._set_ball(c)
        self.batch_first = batch_first
        self.memory_efficient = memory_efficient
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
        self.out_proj = HyperbolicLinear(embed_dim, embed_dim, c=self.ball, bias=bias)
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
        tangent: bool = False,
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
            tangent: ``query``, ``key`` and ``value`` are not points but their tangent vectors
                at the origin (same shapes): the result is that of the points ``expmap0`` of
                them, without the round trip through the ball (see :meth:`forward_tangent`).
                A Python flag, never a test of tensor values.

        Returns:
            ``(output, weights)``: output points (B, N, E) (or (N, B, E)) in the ball, in the
            dtype of ``query``, in both modes; weights as above, or None. A query whose keys
            are all masked gets zero weights and the output of the output projection at the
            origin.

        Raises:
            TypeError/ValueError naming the argument on wrong types, ranks, sizes or mask
            shapes.
        """
        # the temperatures in the compute dtype (the functional validates the inputs)
        floating = isinstance(query, Tensor) and query.is_floating_point()
        dtype = compute_dtype(query.dtype) if floating else self.beta_raw.dtype
        return multi_head_attention_forward(
            query,
            key,
            value,
            num_heads=self.num_heads,
            in_proj_weight=self.in_proj_weight,
            in_proj_bias=self.in_proj_bias,
            out_proj_weight=self.out_proj.weight,
            out_proj_bias=self.out_proj.bias,
            beta=F.softplus(self.beta_raw.to(dtype)),
            c=self.c,
            score=self.score,
            dropout_p=self.dropout,
            training=self.training,
            key_padding_mask=key_padding_mask,
            attn_mask=attn_mask,
            is_causal=is_causal,
            need_weights=need_weights,
            average_attn_weights=average_attn_weights,
            q_proj_weight=self.q_proj_weight,
            k_proj_weight=self.k_proj_weight,
            v_proj_weight=self.v_proj_weight,
            batch_first=self.batch_first,
            memory_efficient=self.memory_efficient,
            tangent=tangent,
        )

    def forward_tangent(
        self,
        u: Tensor,
        *,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
        average_attn_weights: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """Self-attention of the points ``expmap0(u)``, from their tangent vectors ``u``
        (B, L, E) at the origin (``forward(p, p, p)`` with ``p = expmap0(u)``, without the
        round trip through the ball). Arguments and result as :meth:`forward`.

        The same as ``self(u, u, u, tangent=True, ...)``, which it calls: hooks fire and see
        ``args == (u, u, u)`` and ``tangent=True`` among the keywords."""
        out: tuple[Tensor, Tensor | None] = self(
            u,
            u,
            u,
            key_padding_mask=key_padding_mask,
            attn_mask=attn_mask,
            is_causal=is_causal,
            need_weights=need_weights,
            average_attn_weights=average_attn_weights,
            tangent=True,
        )
        return out

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, score={self.score!r}, "
            f"dropout={self.dropout}, batch_first={self.batch_first}"
        )
