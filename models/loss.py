"""The contrastive (InfoNCE) loss of future prediction, Euclidean or hyperbolic.

Hyperbolic scores are those of the attention (:func:`poincare.nn.functional.pairwise_score`,
documented once under "Scores" in :mod:`poincare.nn.functional`), computed in the precision of
the active policy (:func:`poincare.upcast`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from poincare import PoincareBall
from poincare.nn.functional import canonical_score, pairwise_score

__all__ = [
    "ContrastiveOutput",
    "contrastive_loss",
    "group_top1",
    "score_matrix",
]


def _curvature(c: float | PoincareBall) -> float | Tensor:
    """The curvature the ops take: a ball's (differentiable when learnable) or the float."""
    return c.curvature if isinstance(c, PoincareBall) else c


@dataclass(frozen=True)
class ContrastiveOutput:
    """The result of :func:`contrastive_loss`.

    Attributes:
        loss: scalar mean cross-entropy, in the dtype of the predictions.
        top1: fraction of predictions whose own target scores highest (a 0-dim tensor).
        top5: fraction whose own target is among the five highest scores.
        num_candidates: ``M``, the number of targets each prediction is ranked against;
            chance level of top-1 is ``1 / M`` and of top-5 ``min(5, M) / M``.
    """

    loss: Tensor
    top1: Tensor
    top5: Tensor
    num_candidates: int


def score_matrix(
    pred: Tensor,
    target: Tensor,
    *,
    hyperbolic: bool,
    score: str = "distance",
    c: float | PoincareBall = 1.0,
) -> Tensor:
    """Scores ``s[i, j]`` of prediction ``i`` against target ``j``.

    Euclidean: ``s = <p_i, t_j>`` (dot product; ``score`` and ``c`` are ignored).
    Hyperbolic (points in the Poincaré ball of curvature ``-c``): the pairwise score
    ``-f(d(p_i, t_j))`` of :func:`poincare.nn.functional.pairwise_score` (``distance`` or its
    alias ``regular``: ``-d``; ``squared``: ``-d²``; ``cosh``: ``-(cosh(sqrt(c) d) - 1)``),
    without an ``N×M×D`` tensor, in the precision of the active :func:`poincare.upcast`.

    Shapes: ``pred (..., N, D)``, ``target (..., M, D)`` (leading dimensions broadcast) ->
    ``(..., N, M)``.

    Raises:
        ValueError: ``pred``/``target`` with fewer than 2 dimensions, mismatched ``D``, an
            unknown ``score`` or an invalid ``c``.
    """
    if pred.dim() < 2 or target.dim() < 2:
        raise ValueError(
            f"pred and target must be at least 2-D, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    if pred.shape[-1] != target.shape[-1]:
        raise ValueError(
            f"pred and target must share the last dimension, got {pred.shape[-1]} "
            f"and {target.shape[-1]}"
        )
    name = canonical_score(score)
    if not hyperbolic:
        return pred @ target.transpose(-1, -2)
    return pairwise_score(pred, target, score=name, c=_curvature(c))


def contrastive_loss(
    pred: Tensor,
    target: Tensor,
    *,
    hyperbolic: bool,
    score: str = "distance",
    c: float | PoincareBall = 1.0,
    candidates: Tensor | None = None,
    offset: int = 0,
) -> ContrastiveOutput:
    """InfoNCE over every (sample, future step, location) of future prediction.

    The ``N`` predictions ``pred (..., D)`` and the ``N`` targets ``target (..., D)`` (same
    leading shape, flattened in the same order) are scored all against all with
    :func:`score_matrix`; the positive of prediction ``i`` is target ``i`` and every other
    target is a negative::

        loss = mean_i [ -s[i, i] + log Σ_j exp(s[i, j]) ]

    Top-1 / top-5 are the retrieval accuracies of the positive among the ``N`` targets.

    With ``candidates (M, D)`` (for instance the targets of every rank of a distributed run,
    gathered), each prediction is ranked against those ``M`` targets instead, and the positive
    of prediction ``i`` is ``candidates[offset + i]``; ``target`` must then equal
    ``candidates[offset : offset + N]`` (it is only checked for its shape).

    Raises:
        ValueError: shapes of ``pred`` and ``target`` differ, are empty, ``score`` is
            unknown, or ``candidates`` has another last dimension or too few rows for
            ``offset + N``.
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )
    if pred.dim() < 1 or pred.numel() == 0:
        raise ValueError(f"pred must be non-empty with a last dimension, got {tuple(pred.shape)}")
    p = pred.reshape(-1, pred.shape[-1])
    t = target.reshape(-1, target.shape[-1])
    if candidates is not None:
        if candidates.dim() != 2 or candidates.shape[-1] != t.shape[-1]:
            raise ValueError(
                f"candidates must have shape (M, {t.shape[-1]}), got {tuple(candidates.shape)}"
            )
        if not 0 <= offset <= candidates.shape[0] - t.shape[0]:
            raise ValueError(
                f"offset must be in [0, {candidates.shape[0] - t.shape[0]}] for "
                f"{t.shape[0]} targets among {candidates.shape[0]} candidates, got {offset}"
            )
        t = candidates
    elif offset != 0:
        raise ValueError(f"offset needs candidates, got offset={offset}")
    scores = score_matrix(p, t, hyperbolic=hyperbolic, score=score, c=c)
    labels = torch.arange(offset, offset + p.shape[0], device=p.device)
    loss = F.cross_entropy(scores, labels).to(pred.dtype)
    with torch.no_grad():
        k = min(5, scores.shape[1])
        top = scores.topk(k, dim=1).indices
        hit = top == labels[:, None]
        top1 = hit[:, 0].float().mean()
        top5 = hit.any(dim=1).float().mean()
    return ContrastiveOutput(loss=loss, top1=top1, top5=top5, num_candidates=t.shape[0])


def group_top1(
    pred: Tensor,
    target: Tensor,
    group_size: int,
    *,
    hyperbolic: bool,
    score: str = "distance",
    c: float | PoincareBall = 1.0,
) -> Tensor:
    """Top-1 retrieval accuracy among the videos of a group, at the same step and location.

    The batch ``pred, target (B, ..., D)`` is cut into ``B // group_size`` groups of
    consecutive samples (a last partial group is left out). For every group, every
    (future step, location) and every member ``i``, the prediction of ``i`` is ranked against
    the ``group_size`` targets of the group's members at the same step and location, with
    :func:`score_matrix`; it is right when its own target scores highest. Chance is
    ``1 / group_size``. Returns a 0-dim float32 tensor.

    Raises:
        ValueError: shapes differ, fewer than 2 dimensions, ``group_size`` < 1 or larger than
            ``B``.
    """
    if pred.shape != target.shape or pred.dim() < 2:
        raise ValueError(
            f"pred and target must have the same shape (B, ..., D), got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )
    if not 1 <= group_size <= pred.shape[0]:
        raise ValueError(f"group_size must be in [1, {pred.shape[0]}], got {group_size}")
    g = pred.shape[0] // group_size
    d = pred.shape[-1]

    def grouped(x: Tensor) -> Tensor:
        x = x[: g * group_size].reshape(g, group_size, -1, d)
        return x.transpose(1, 2)  # (G, R, group_size, D)

    with torch.no_grad():
        s = score_matrix(grouped(pred), grouped(target), hyperbolic=hyperbolic, score=score, c=c)
        hit = s.argmax(dim=-1) == torch.arange(group_size, device=s.device)
        return hit.float().mean()
