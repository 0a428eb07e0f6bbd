"""The video future-prediction model of this repository, built on :mod:`poincare.nn`.

Holds the 3-D block encoder, the ConvGRU, :class:`VideoFuturePredictor` and its contrastive
loss, and re-exports the :mod:`poincare.nn` modules the model uses.
"""

from poincare.nn import (
    ConvHyperbolicTransformer,
    HyperbolicMultiHeadAttention,
    HyperbolicTransformer,
)

from .convgru import ConvGRU, ConvGRUCell
from .encoder import BlockEncoder3D
from .loss import ContrastiveOutput, contrastive_loss, group_top1, score_matrix
from .video import VideoFuturePredictor

__all__ = [
    "BlockEncoder3D",
    "ContrastiveOutput",
    "ConvGRU",
    "ConvGRUCell",
    "ConvHyperbolicTransformer",
    "HyperbolicMultiHeadAttention",
    "HyperbolicTransformer",
    "VideoFuturePredictor",
    "contrastive_loss",
    "group_top1",
    "score_matrix",
]
