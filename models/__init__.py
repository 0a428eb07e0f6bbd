"""Hyperbolic neural network modules built on :mod:`poincare`, and the video model."""

from .attention import HyperbolicMultiHeadAttention, hyperbolic_attention
from .conv_transformer import ConvHyperbolicTransformer
from .convgru import ConvGRU, ConvGRUCell
from .encoder import BlockEncoder3D
from .layers import (
    HyperbolicActivation,
    HyperbolicFeedForward,
    HyperbolicLayerNorm,
    HyperbolicLinear,
    HyperbolicPositionalEncoding,
)
from .loss import DISTANCES, ContrastiveOutput, contrastive_loss, group_top1, score_matrix
from .transformer import HyperbolicTransformer, HyperbolicTransformerBlock
from .video import VideoFuturePredictor

__all__ = [
    "DISTANCES",
    "BlockEncoder3D",
    "ContrastiveOutput",
    "ConvGRU",
    "ConvGRUCell",
    "ConvHyperbolicTransformer",
    "HyperbolicActivation",
    "HyperbolicFeedForward",
    "HyperbolicLayerNorm",
    "HyperbolicLinear",
    "HyperbolicMultiHeadAttention",
    "HyperbolicPositionalEncoding",
    "HyperbolicTransformer",
    "HyperbolicTransformerBlock",
    "VideoFuturePredictor",
    "contrastive_loss",
    "group_top1",
    "hyperbolic_attention",
    "score_matrix",
]
