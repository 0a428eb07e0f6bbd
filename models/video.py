"""The self-supervised video future-prediction model, Euclidean or hyperbolic.

A video is cut into ``num_seq`` blocks of ``seq_len`` frames. Each block is encoded into a
feature map ``z_t (D, h, w)`` by :class:`~models.encoder.BlockEncoder3D`. An aggregator reads
the first ``num_seq - pred_step`` blocks — a :class:`~models.convgru.ConvGRU` (Euclidean) or a
causal ``ConvHyperbolicTransformer`` (whose states lie in the Poincaré ball) — and a predictor
rolls out ``pred_step`` future feature maps autoregressively: at each step a 1×1-conv head maps
the recurrent state ``h`` to a prediction ``p_k``, and ``p_k`` is fed back as the next input of
the recurrence. With the ConvGRU the recurrence is the aggregator itself (as in DPC); with the
transformer, which reads the past once, it is a ConvGRU cell started at
``h_0 = logmap0(context)`` of the transformer's last state. Predictions and the
encoded future blocks (the targets) are then mapped into the ball, ``x ↦ expmap0(x)``
(hyperbolic model) or kept as they are (Euclidean model), and compared by the contrastive
loss of :mod:`models.loss`.

Precision follows the policy of :mod:`poincare`: inside ``poincare.upcast(torch.float64)``
(what the trainer's ``--fp64_hyper`` enters) every hyperbolic computation (the map into the
ball, the transformer's hyperbolic parts, the scores of the loss) runs in float64, and its
float64 values go on to the next hyperbolic step without a round trip through float32; the
encoder, the ConvGRU and the predictor stay float32.

Curvature: one :class:`poincare.PoincareBall` (``model.ball``) is shared by the transformer,
the map into the ball and the loss; a learnable one trains with the model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

import poincare
from models.convgru import ConvGRU, ConvGRUCell
from models.encoder import BlockEncoder3D
from models.loss import ContrastiveOutput, contrastive_loss, group_top1
from poincare.nn import ConvHyperbolicTransformer
from poincare.nn.functional import canonical_score

__all__ = ["VideoFuturePredictor"]


class VideoFuturePredictor(nn.Module):
    """Predict the representations of future video blocks (see the module docstring).

    Args:
        num_seq: blocks per video (``N``).
        seq_len: frames per block (``L``).
        pred_step: future blocks to predict (``P``, ``1 <= P < N``).
        img_dim: frame side in pixels (a multiple of 8; the feature maps are ``img_dim/8``).
        feature_dim: channels ``D`` of the feature maps (= the ball's dimension).
        encoder_width: channels of the encoder's first stage.
        hyperbolic: map predictions and targets into the Poincaré ball.
        use_transformer: aggregate with the causal hyperbolic transformer (requires
            ``hyperbolic``) instead of the ConvGRU.
        space_time: the transformer also attends across the feature map's locations
            (factorised space-time attention of ``ConvHyperbolicTransformer``; requires
            ``use_transformer``).
        num_heads, transformer_layers, transformer_dropout: the transformer's shape.
        c: curvature magnitude of the ball (``> 0``), or a :class:`poincare.PoincareBall`
            (learnable or not) shared by every hyperbolic part.
        score: ``"distance"`` (alias ``"regular"``), ``"squared"`` or ``"cosh"`` (see
            :func:`models.loss.score_matrix`).
        gru_layers, gru_kernel: the ConvGRU's depth and kernel size.

    ``forward(video (B, N, 3, L, H, W))`` returns ``(pred, target)``, both ``(B, P, h, w, D)``:
    points in the ball (in the compute dtype of the policy: float64 inside
    ``poincare.upcast(torch.float64)``) or Euclidean vectors.
    :meth:`loss` returns the :class:`~models.loss.ContrastiveOutput` of a video batch.

    Raises:
        ValueError: non-positive sizes, ``pred_step >= num_seq``, ``img_dim`` not a multiple of
            8, ``use_transformer`` without ``hyperbolic``, ``num_heads`` not dividing
            ``feature_dim``, ``space_time`` without ``use_transformer``, an invalid ``c`` or an
            unknown ``score``; in ``forward``, a video of
            the wrong shape.
    """

    ball: poincare.PoincareBall

    def __init__(
        self,
        *,
        num_seq: int,
        seq_len: int,
        pred_step: int,
        img_dim: int,
        feature_dim: int = 64,
        encoder_width: int = 16,
        hyperbolic: bool = True,
        use_transformer: bool = True,
        space_time: bool = False,
        num_heads: int = 8,
        transformer_layers: int = 4,
        transformer_dropout: float = 0.1,
        c: float | poincare.PoincareBall = 1.0,
        score: str = "distance",
        gru_layers: int = 1,
        gru_kernel: int = 3,
    ) -> None:
        super().__init__()
        sizes = {
            "num_seq": num_seq,
            "seq_len": seq_len,
            "pred_step": pred_step,
            "img_dim": img_dim,
            "feature_dim": feature_dim,
            "encoder_width": encoder_width,
            "num_heads": num_heads,
            "transformer_layers": transformer_layers,
            "gru_layers": gru_layers,
            "gru_kernel": gru_kernel,
        }
        for name, value in sizes.items():
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if pred_step >= num_seq:
            raise ValueError(f"pred_step ({pred_step}) must be smaller than num_seq ({num_seq})")
        if img_dim % 8:
            raise ValueError(f"img_dim must be a multiple of 8, got {img_dim}")
        if use_transformer and not hyperbolic:
            raise ValueError("use_transformer requires hyperbolic (the transformer is hyperbolic)")
        if space_time and not use_transformer:
            raise ValueError("space_time requires use_transformer (it is an attention layer)")
        if use_transformer and feature_dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide feature_dim ({feature_dim})")
        self.ball = c if isinstance(c, poincare.PoincareBall) else poincare.PoincareBall(c)
        self.score = canonical_score(score)
        if not 0.0 <= transformer_dropout < 1.0:
            raise ValueError(f"transformer_dropout must be in [0, 1), got {transformer_dropout}")
        self.num_seq = num_seq
        self.seq_len = seq_len
        self.pred_step = pred_step
        self.img_dim = img_dim
        self.feature_dim = feature_dim
        self.hyperbolic = hyperbolic
        self.use_transformer = use_transformer
        self.space_time = space_time
        self.encoder = BlockEncoder3D(encoder_width, feature_dim)
        self.aggregator: nn.Module
        if use_transformer:
            self.aggregator = ConvHyperbolicTransformer(
                feature_dim,
                feature_dim,
                num_heads,
                transformer_layers,
                transformer_dropout,
                c=self.ball,
                causal=True,
                space_time=space_time,
            )
        else:
            self.aggregator = ConvGRU(feature_dim, feature_dim, gru_kernel, gru_layers)
        # The transformer reads the past once; the rollout then advances a ConvGRU cell started
        # at logmap0 of the transformer's context (the ConvGRU aggregator rolls out itself).
        self.rollout_cell: ConvGRUCell | None = (
            ConvGRUCell(feature_dim, feature_dim, gru_kernel)
            if use_transformer and pred_step > 1
            else None
        )
        self.predictor = nn.Sequential(
            nn.Conv2d(feature_dim, feature_dim, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(feature_dim, feature_dim, 1),
        )

    def encode(self, video: Tensor) -> Tensor:
        """``video (B, N, 3, L, H, W)`` -> Euclidean features ``(B, N, D, h, w)``."""
        expected = (self.num_seq, 3, self.seq_len, self.img_dim, self.img_dim)
        if video.dim() != 6 or tuple(video.shape[1:]) != expected:
            raise ValueError(
                f"video must have shape (B, {', '.join(map(str, expected))}), "
                f"got {tuple(video.shape)}"
            )
        b, n = video.shape[:2]
        z: Tensor = self.encoder(video.reshape(b * n, *video.shape[2:]))
        return z.reshape(b, n, *z.shape[1:])

    def to_ball(self, x: Tensor) -> Tensor:
        """Map feature vectors ``x (..., D)`` to the model's space.

        Hyperbolic: ``expmap0(x)`` in the ball (strictly inside: ``expmap0`` projects), in the
        compute dtype of the policy (:func:`poincare.compute_dtype`); Euclidean: ``x``
        unchanged.
        """
        if not self.hyperbolic:
            return x
        return poincare.expmap0(x.to(poincare.compute_dtype(x.dtype)), c=self.ball.curvature)

    def _rollout_gru(self, z_ctx: Tensor) -> Tensor:
        gru = self.aggregator
        assert isinstance(gru, ConvGRU)
        hidden: list[Tensor] | None = None
        for t in range(z_ctx.shape[1]):
            hidden = gru.step(z_ctx[:, t], hidden)
        assert hidden is not None
        preds: list[Tensor] = []
        for k in range(self.pred_step):
            p = self.predictor(hidden[-1])
            preds.append(p)
            if k + 1 < self.pred_step:
                hidden = gru.step(p, hidden)
        return torch.stack(preds, dim=1)

    def _rollout_transformer(self, z_ctx: Tensor) -> Tensor:
        aggregator = self.aggregator
        assert isinstance(aggregator, ConvHyperbolicTransformer)
        # logmap0 of the context, straight from the transformer's last layer norm (in the
        # compute dtype), narrowed once for the Euclidean rollout cell.
        _, context = aggregator.forward_tangent(z_ctx)
        hidden = context.to(z_ctx.dtype)
        preds: list[Tensor] = []
        for k in range(self.pred_step):
            p = self.predictor(hidden)
            preds.append(p)
            if k + 1 < self.pred_step:
                assert self.rollout_cell is not None
                hidden = self.rollout_cell(p, hidden)
        return torch.stack(preds, dim=1)

    def forward(self, video: Tensor) -> tuple[Tensor, Tensor]:
        """``video (B, N, 3, L, H, W)`` -> ``(pred, target)``, each ``(B, P, h, w, D)``."""
        z = self.encode(video)
        n_ctx = self.num_seq - self.pred_step
        z_ctx, z_future = z[:, :n_ctx], z[:, n_ctx:]
        if self.use_transformer:
            pred = self._rollout_transformer(z_ctx)
        else:
            pred = self._rollout_gru(z_ctx)
        pred = self.to_ball(pred.permute(0, 1, 3, 4, 2))
        target = self.to_ball(z_future.permute(0, 1, 3, 4, 2))
        return pred, target

    def loss(self, video: Tensor) -> ContrastiveOutput:
        """The contrastive loss of :mod:`models.loss` on a batch ``video (B, N, 3, L, H, W)``."""
        pred, target = self(video)
        return self.loss_of(pred, target)

    def group_top1(self, pred: Tensor, target: Tensor, group_size: int) -> Tensor:
        """:func:`models.loss.group_top1` of ``forward``'s output with this model's scores."""
        return group_top1(
            pred, target, group_size, hyperbolic=self.hyperbolic, score=self.score, c=self.ball
        )

    def loss_of(
        self,
        pred: Tensor,
        target: Tensor,
        *,
        candidates: Tensor | None = None,
        offset: int = 0,
    ) -> ContrastiveOutput:
        """The contrastive loss of ``forward``'s output ``(pred, target)`` (float32 loss).

        ``candidates (M, D)`` and ``offset``: rank the predictions against these targets
        instead, the positive of flattened prediction ``i`` being ``candidates[offset + i]``
        (see :func:`models.loss.contrastive_loss`; used to score against every rank's
        targets).
        """
        out = contrastive_loss(
            pred,
            target,
            hyperbolic=self.hyperbolic,
            score=self.score,
            c=self.ball,
            candidates=candidates,
            offset=offset,
        )
        return ContrastiveOutput(
            loss=out.loss.to(torch.float32),
            top1=out.top1,
            top5=out.top5,
            num_candidates=out.num_candidates,
        )
