"""Hyperbolic neural-network modules on the Poincaré ball, in the style of :mod:`torch.nn`.

Every module takes and returns points of the ball (the last dimension), holds its curvature as
a :class:`poincare.PoincareBall` (pass one ball as ``c`` to share it, learnable or not, across
a model), reads the precision policy of :func:`poincare.compute_dtype`, and keeps its
parameters Euclidean. Their stateless parts (the attention pipeline, the scores, tangent
dropout, the Möbius linear map) are in :mod:`poincare.nn.functional`.
"""

from . import functional
from .attention import HyperbolicMultiHeadAttention
from .layers import (
    HyperbolicActivation,
    HyperbolicFeedForward,
    HyperbolicLayerNorm,
    HyperbolicLinear,
    HyperbolicPositionalEncoding,
)
from .mlr import HyperbolicMLR
from .transformer import (
    ConvHyperbolicTransformer,
    HyperbolicTransformer,
    HyperbolicTransformerBlock,
)

__all__ = [
    "ConvHyperbolicTransformer",
    "HyperbolicActivation",
    "HyperbolicFeedForward",
    "HyperbolicLayerNorm",
    "HyperbolicLinear",
    "HyperbolicMLR",
    "HyperbolicMultiHeadAttention",
    "HyperbolicPositionalEncoding",
    "HyperbolicTransformer",
    "HyperbolicTransformerBlock",
    "functional",
]
