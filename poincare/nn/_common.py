"""Argument checks and the curvature and dtype plumbing shared by the modules."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import functional as PF
from .._checks import as_curvature, check_curvature, is_real
from .._precision import compute_dtype
from ..manifold import PoincareBall

__all__ = [
    "BallLike",
    "as_ball",
    "cast_point",
    "check_curvature_arg",
    "check_points",
    "check_positive_int",
    "check_probability",
    "compute_dtype",
]

BallLike = float | PoincareBall
"""What a module accepts as its curvature: a positive float or a (shared) :class:`PoincareBall`."""


def as_ball(c: BallLike) -> PoincareBall:
    """The ball of a module: ``c`` itself if it is a :class:`PoincareBall` (shared, not copied),
    else a fixed ``PoincareBall(c)``.

    Raises:
        TypeError, ValueError: ``c`` is neither a ball nor a finite positive number (the one
            curvature check of :func:`poincare._checks.check_curvature`).
    """
    if isinstance(c, PoincareBall):
        return c
    return PoincareBall(c)


def check_curvature_arg(c: object) -> None:
    """Validate a curvature given to a functional (a float or a tensor) with the one check.

    A tensor is checked by :func:`poincare._checks.as_curvature` (floating, broadcastable,
    positive and finite); anything else by :func:`poincare._checks.check_curvature`.
    """
    if isinstance(c, Tensor):
        as_curvature(c, c.dtype if c.is_floating_point() else torch.float64, c.device)
    else:
        check_curvature(c)


def check_positive_int(value: int, name: str) -> int:
    """Return ``value``, raising unless it is an ``int`` (not ``bool``) greater than 0."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def check_probability(p: float, name: str) -> float:
    """Return ``p`` as a float, raising unless it is a real number (NumPy's included, not
    ``bool``) in [0, 1)."""
    if not is_real(p):
        raise TypeError(f"{name} must be a float in [0, 1), got {type(p).__name__}")
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {p}")
    return p


def check_points(x: object, dim: int, name: str) -> Tensor:
    """Return ``x``, raising unless it is a floating tensor whose last dimension is ``dim``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.dim() < 1 or x.shape[-1] != dim:
        raise ValueError(f"{name} must have last dimension {dim}, got shape {tuple(x.shape)}")
    return x


def cast_point(y: Tensor, dtype: torch.dtype, *, c: float | Tensor) -> Tensor:
    """Points ``y`` (..., D) cast to ``dtype``, kept strictly inside the ball.

    A narrowing cast can round a point near the boundary onto it; the result is then passed
    through :func:`poincare.project` in ``dtype``. Identity when ``y`` already has ``dtype``.
    """
    if y.dtype == dtype:
        return y
    return PF.project(y.to(dtype), c=c)
