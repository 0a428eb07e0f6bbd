"""Compute-dtype policy: which floating dtype the hyperbolic ops compute in.

Half-precision inputs (float16, bfloat16) are computed in float32 and returned in their own
dtype. :func:`upcast` raises the compute dtype of every op inside its scope (for instance to
float64), while results still come back in the caller's dtype.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import torch

__all__ = ["compute_dtype", "current_upcast", "upcast"]


class _Policy(threading.local):
    """The active :func:`upcast` dtypes of this thread, innermost last.

    A thread-local object rather than a ``ContextVar``: Dynamo reads its attribute (and guards
    on it, so a compiled function recompiles when the policy changes), whereas it cannot trace
    ``ContextVar.get``.
    """

    def __init__(self) -> None:
        self.stack: list[torch.dtype] = []


_POLICY = _Policy()

_F = TypeVar("_F", bound=Callable[..., Any])

_RANK = {torch.float16: 0, torch.bfloat16: 0, torch.float32: 1, torch.float64: 2}


def current_upcast() -> torch.dtype | None:
    """Return the dtype set by the innermost active :func:`upcast`, or ``None``."""
    stack = _POLICY.stack
    return stack[-1] if stack else None


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype an op computes in for inputs of ``dtype``.

    ``float16``/``bfloat16`` compute in ``float32``; under :func:`upcast` the result is the wider
    of the input's compute dtype and the upcast dtype.
    """
    base = torch.float32 if _RANK.get(dtype, 1) < 1 else dtype
    up = current_upcast()
    if up is not None and _RANK[up] > _RANK[base]:
        return up
    return base


class upcast:  # noqa: N801 - used like a function, as a context manager or decorator
    """Compute every hyperbolic op in ``dtype`` within the scope; return the caller's dtype.

    Usable as a context manager::

        with poincare.upcast(torch.float64):
            d = poincare.dist(x, y)  # computed in float64, returned in x's dtype

    or as a decorator (``@poincare.upcast(torch.float64)``). Scopes nest; the innermost wins, and
    a narrower dtype never lowers the precision below the input's own compute dtype.

    Args:
        dtype: ``torch.float32`` or ``torch.float64``.

    Raises:
        TypeError: if ``dtype`` is not ``torch.float32`` or ``torch.float64``.
    """

    def __init__(self, dtype: torch.dtype) -> None:
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"upcast: dtype must be torch.float32 or torch.float64, got {dtype!r}")
        self.dtype = dtype
        self._depths: list[int] = []

    def __enter__(self) -> upcast:
        stack = _POLICY.stack
        self._depths.append(len(stack))
        stack.append(self.dtype)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        del _POLICY.stack[self._depths.pop() :]

    def __call__(self, fn: _F) -> _F:
        dtype = self.dtype

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with upcast(dtype):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]
