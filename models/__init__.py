"""Hyperbolic neural network modules built on :mod:`poincare`."""

from .attention import HyperbolicMultiHeadAttention, hyperbolic_attention
from .conv_transformer import ConvHyperbolicTransformer
from .layers import (
    HyperbolicActivation,
    HyperbolicFeedForward,
    HyperbolicLayerNorm,
    HyperbolicLinear,
    HyperbolicPositionalEncoding,
)
from .transformer import HyperbolicTransformer, HyperbolicTransformerBlock

__all__ = [
    "ConvHyperbolicTransformer",
    "HyperbolicActivation",
    "HyperbolicFeedForward",
    "HyperbolicLayerNorm",
    "HyperbolicLinear",
    "HyperbolicMultiHeadAttention",
    "HyperbolicPositionalEncoding",
    "HyperbolicTransformer",
    "HyperbolicTransformerBlock",
    "hyperbolic_attention",
]
