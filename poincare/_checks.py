"""Argument validation and dtype plumbing shared by every op."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._precision import compute_dtype

Curvature = float | Tensor

__all__ = [
    "Curvature",
    "as_curvature",
    "check_curvature",
    "check_dim",
    "check_last_dims",
    "check_tensor",
    "common_dtype",
    "prepare",
]


def check_tensor(name: str, x: object) -> Tensor:
    """Return ``x`` if it is a real floating tensor with at least one dimension, else raise.

    Raises:
        TypeError: ``x`` is not a tensor, or has an integer, boolean or complex dtype.
        ValueError: ``x`` is zero-dimensional (the ops act on the last dimension).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(
            f"{name} must have a real floating dtype (float16, bfloat16, float32 or float64), "
            f"got {x.dtype}"
        )
    if x.dim() == 0:
        raise ValueError(f"{name} must have at least one dimension (the vector dimension)")
    return x


def check_last_dims(**tensors: Tensor) -> None:
    """Raise ``ValueError`` unless every tensor has the same last dimension (and
    ``TypeError``/``ValueError`` from :func:`check_tensor` for anything that is not a real
    floating tensor with a dimension)."""
    for name, t in tensors.items():
        check_tensor(name, t)
    items = list(tensors.items())
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.shape[-1] != first.shape[-1]:
            raise ValueError(
                f"{name} has last dimension {t.shape[-1]}, but {first_name} has "
                f"{first.shape[-1]}: the vectors must have the same dimension"
            )


def check_dim(name: str, dim: int, ndim: int) -> int:
    """Normalise ``dim`` for a tensor with ``ndim`` dimensions; ``ValueError`` if invalid."""
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{name} must be an int, got {type(dim).__name__}")
    if not -ndim <= dim < ndim:
        raise ValueError(f"{name}={dim} is out of range for a tensor with {ndim} dimensions")
    return dim % ndim


def common_dtype(*tensors: Tensor) -> torch.dtype:
    """The promoted floating dtype of ``tensors`` (the dtype results are returned in)."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


_CURVATURE_MESSAGE = "c must be a finite, strictly positive curvature"


def check_curvature(c: object) -> float:
    """Return a Python curvature as a float, raising unless it is finite and positive.

    This is the one check of a curvature given as a number, used by every op, module and loss.

    Raises:
        TypeError: ``c`` is not a real number (``bool`` included).
        ValueError: ``c`` is not finite or not strictly positive.
    """
    if isinstance(c, bool) or not isinstance(c, (int, float)):
        raise TypeError(
            f"{_CURVATURE_MESSAGE} (a float, a tensor or a PoincareBall), got {type(c).__name__}"
        )
    value = float(c)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{_CURVATURE_MESSAGE}, got {c!r}")
    return value


def as_curvature(c: object, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Validate a curvature and return it as a tensor of ``dtype`` ready to broadcast.

    A Python number becomes a 0-d tensor; a tensor is kept with its shape (it must broadcast
    against ``x[..., :1]``, i.e. have a trailing dimension of size 1 or be 0-d).

    Raises:
        TypeError: ``c`` is not a real number or a real floating tensor.
        ValueError: ``c`` is not finite or not strictly positive.
    """
    if isinstance(c, Tensor):
        if not c.dtype.is_floating_point:
            raise TypeError(f"c must be a float or a floating tensor, got a tensor of {c.dtype}")
        if c.dim() > 0 and c.shape[-1] != 1:
            raise ValueError(
                f"c must be a scalar or broadcast against x[..., :1] (trailing size 1), "
                f"got shape {tuple(c.shape)}"
            )
        with torch.no_grad():
            bad = ~(torch.isfinite(c) & (c > 0))
            if bool(bad.any()):
                raise ValueError(f"{_CURVATURE_MESSAGE}, got a tensor with other values")
        return c.to(dtype=dtype, device=device)
    return torch.tensor(check_curvature(c), dtype=dtype, device=device)


def prepare(
    c: object, *, wide: bool = False, **tensors: Tensor
) -> tuple[torch.dtype, torch.dtype, Tensor, list[Tensor]]:
    """Validate tensors and curvature; return (out dtype, compute dtype, c, cast tensors).

    ``wide=True`` computes float32 work in float64: for the ops whose condition number grows
    like ``exp(radius)`` (the maps and transports along long geodesics), the 29 extra bits absorb
    the amplification of rounding errors over the whole float32 range.
    """
    for name, t in tensors.items():
        check_tensor(name, t)
    values = list(tensors.values())
    out = common_dtype(*values)
    comp = compute_dtype(out)
    if wide and comp == torch.float32:
        comp = torch.float64
    device = values[0].device
    cc = as_curvature(c, comp, device)
    return out, comp, cc, [t.to(comp) for t in values]
