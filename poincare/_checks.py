"""Argument validation and dtype plumbing shared by every op."""

from __future__ import annotations

import functools
import math
import numbers
import threading
from collections.abc import Callable
from typing import Any, TypeGuard, TypeVar, cast

import torch
from torch import Tensor
from torch.nn import Parameter

from ._precision import compute_dtype

Curvature = float | Tensor

_F = TypeVar("_F", bound=Callable[..., Any])

__all__ = [
    "Curvature",
    "as_curvature",
    "branch_free",
    "check_broadcast",
    "check_curvature",
    "check_curvature_batch",
    "check_dim",
    "check_last_dims",
    "check_tensor",
    "common_dtype",
    "curvature_range",
    "host_branches",
    "is_real",
    "prepare",
]


#: ``torch._C._functorch.is_functorch_wrapped_tensor`` (whether a tensor belongs to a
#: ``torch.func`` transform), looked up once; absent, every tensor is treated as wrapped.
_WRAPPED = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)


class _BranchFree(threading.local):
    """How many :func:`branch_free` scopes are active in this thread."""

    def __init__(self) -> None:
        self.depth = 0


_BRANCH_FREE = _BranchFree()


class branch_free:  # noqa: N801 - used like a function, as a context manager or decorator
    """Run every op in its branch-free form within the scope, in eager CPU code too.

    The branch-free form is the one that ``torch.compile``, ``torch.export``, ``torch.func``
    transforms and accelerators take (:func:`host_branches` is false there): no op reads a
    tensor value back to the host to skip work that most rows do not need. Eager CPU code
    otherwise takes a few such shortcuts. Both forms meet the same numerical contract, and this
    switch is how the test suite and the accuracy report check the branch-free one on the CPU;
    it also reproduces, eagerly, the numerics of compiled code (up to the rounding of
    Inductor's fused kernels). Checks of tensor values that only eager code makes (a tensor
    curvature that is not positive, negative midpoint weights) are skipped inside the scope,
    as they are in traced code. Scopes nest and are thread-local.

    Usable as ``with poincare.branch_free(): ...`` or as a decorator.
    """

    def __enter__(self) -> None:
        _BRANCH_FREE.depth += 1

    def __exit__(self, *exc: object) -> None:
        _BRANCH_FREE.depth -= 1

    def __call__(self, fn: _F) -> _F:
        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with branch_free():
                return fn(*args, **kwargs)

        return cast(_F, wrapped)


def host_branches(*tensors: Tensor) -> bool:
    """Whether an op may branch in Python on the values of ``tensors`` (eager code only).

    True only for plain tensors (or parameters) on the CPU, outside ``torch.compile``/
    ``torch.export`` tracing and outside ``torch.func`` transforms: there a reduction read back
    to the host costs no device synchronisation, and it lets an op skip work that most inputs
    do not need (the rescaling of tiny norms, the exact containment test of a few rows, value
    checks with a clear error). Everywhere else (Dynamo resolves this test at trace time) the
    ops take their branch-free form: the same contract, with no graph break and no sync.
    Inside :class:`branch_free` it is false for every tensor.
    """
    if torch.compiler.is_compiling() or _WRAPPED is None or _BRANCH_FREE.depth:
        return False
    for t in tensors:
        if not t.is_cpu or not (type(t) is Tensor or isinstance(t, Parameter)) or _WRAPPED(t):
            return False
    return True


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
    if x.shape[-1] == 0:
        raise ValueError(
            f"{name} must have a non-empty last dimension (the vector dimension), "
            f"got shape {tuple(x.shape)}"
        )
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


def is_real(value: object) -> TypeGuard[numbers.Real]:
    """Whether ``value`` is a real number: any :class:`numbers.Real` (Python and NumPy integers
    and floats, ``np.float32`` included) except ``bool`` (NumPy's ``bool_`` is no
    :class:`numbers.Real` either)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_curvature(c: object) -> float:
    """Return a Python curvature as a float, raising unless it is finite and positive.

    This is the one check of a curvature given as a number, used by every op, module and loss.
    Any real number is accepted (:func:`is_real`: NumPy scalars included).

    Raises:
        TypeError: ``c`` is not a real number (``bool`` included).
        ValueError: ``c`` is not finite or not strictly positive (an integer too large for a
            float included).
    """
    if not is_real(c):
        raise TypeError(
            f"{_CURVATURE_MESSAGE} (a float, a tensor or a PoincareBall), got {type(c).__name__}"
        )
    try:
        value = float(c)
    except OverflowError:
        raise ValueError(f"{_CURVATURE_MESSAGE}, got an integer too large for a float") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{_CURVATURE_MESSAGE}, got {c!r}")
    return value


#: Binary exponent ``k`` of the usable curvatures ``[2^-k, 2^k]`` per storage dtype.
_RANGE_EXPONENT = {torch.float64: 400, torch.float32: 50, torch.bfloat16: 50, torch.float16: 24}


def curvature_range(dtype: torch.dtype) -> tuple[float, float]:
    """The curvatures ops accept for points stored in ``dtype``: ``[2^-k, 2^k]``.

    ``k`` is 400 for ``float64``, 50 for ``float32``/``bfloat16`` and 24 for ``float16``: inside
    this range the ball's radius ``1/sqrt(c)``, the squared norms of its points and the products
    ``c^2 |x|^2 |y|^2`` of the formulas stay normal numbers of the dtype, so every op computes
    with ``c`` as it does at ``c = 1``. (``float32`` work on ``float64`` data is not an issue:
    the range follows the data's dtype.)
    """
    k = _RANGE_EXPONENT.get(dtype, 50)
    return 2.0**-k, 2.0**k


def _range_error(c: object, dtype: torch.dtype) -> ValueError:
    lo, hi = curvature_range(dtype)
    return ValueError(
        f"c must be a curvature in [{lo:.3g}, {hi:.3g}] for {str(dtype).removeprefix('torch.')} "
        f"points (where the dtype can compute with it), got {c}"
    )


def as_curvature(
    c: object, dtype: torch.dtype, device: torch.device, storage: torch.dtype | None = None
) -> Tensor:
    """Validate a curvature and return it as a tensor of ``dtype`` ready to broadcast.

    A Python number becomes a 0-d tensor; a tensor is kept with its shape (it must broadcast
    against ``x[..., :1]``, i.e. have a trailing dimension of size 1 or be 0-d). ``storage``,
    the dtype of the points, selects the :func:`curvature_range` a number must lie in.

    The values of a tensor curvature are checked only where :func:`host_branches` allows it
    (eager CPU code); under ``torch.compile``, ``torch.func`` transforms and on accelerators the
    check would cost a synchronisation and is skipped (a learnable
    :class:`~poincare.PoincareBall` curvature is valid by construction).

    Raises:
        TypeError: ``c`` is not a real number or a real floating tensor.
        ValueError: ``c`` is not finite, not strictly positive, outside the range of
            ``storage``, or a tensor whose shape does not fit.
    """
    if isinstance(c, Tensor):
        if not c.dtype.is_floating_point:
            raise TypeError(f"c must be a float or a floating tensor, got a tensor of {c.dtype}")
        if c.dim() > 0 and c.shape[-1] != 1:
            raise ValueError(
                f"c must be a scalar or broadcast against x[..., :1] (trailing size 1), "
                f"got shape {tuple(c.shape)}"
            )
        if host_branches(c):
            with torch.no_grad():
                bad = ~(torch.isfinite(c) & (c > 0))
                if bool(bad.any()):
                    raise ValueError(f"{_CURVATURE_MESSAGE}, got a tensor with other values")
                if storage is not None:
                    lo, hi = curvature_range(storage)
                    if bool(((c < lo) | (c > hi)).any()):
                        raise _range_error("a tensor with values outside it", storage)
        return c.to(dtype=dtype, device=device)
    value = check_curvature(c)
    if storage is not None:
        lo, hi = curvature_range(storage)
        if not lo <= value <= hi:
            raise _range_error(c, storage)
    return torch.tensor(value, dtype=dtype, device=device)


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """The broadcast of two shapes (``ValueError`` if they do not broadcast), in plain Python:
    ``torch.broadcast_shapes`` costs a hundred times more per call."""
    if len(a) < len(b):
        a, b = b, a
    out = list(a)
    offset = len(a) - len(b)
    for i, n in enumerate(b):
        m = out[offset + i]
        if m == 1:
            out[offset + i] = n
        elif n != 1 and n != m:
            raise ValueError(f"shapes {a} and {b} do not broadcast")
    return tuple(out)


def check_broadcast(**tensors: Tensor) -> tuple[int, ...]:
    """The broadcast batch shape of ``tensors`` (all but their last dimension); ``ValueError``
    naming the arguments unless they broadcast together."""
    items = list(tensors.items())
    shape: tuple[int, ...] = ()
    seen: list[str] = []
    for name, t in items:
        try:
            shape = _broadcast(shape, tuple(t.shape[:-1]))
        except ValueError:
            others = ", ".join(f"{n} {tuple(tensors[n].shape)}" for n in seen)
            raise ValueError(
                f"{name} of shape {tuple(t.shape)} does not broadcast against {others} "
                "(the leading dimensions must broadcast; the last is the vector dimension)"
            ) from None
        seen.append(name)
    return shape


def prepare(
    c: object, *, wide: bool = False, broadcast: bool = True, **tensors: Tensor
) -> tuple[torch.dtype, torch.dtype, Tensor, list[Tensor]]:
    """Validate tensors and curvature; return (out dtype, compute dtype, c, cast tensors).

    ``wide=True`` computes float32 work in float64: for the ops whose condition number grows
    like ``exp(radius)`` (the maps and transports along long geodesics), the 29 extra bits absorb
    the amplification of rounding errors over the whole float32 range.

    ``broadcast=True`` also checks that the tensors' batch shapes (and a tensor ``c`` against
    ``x[..., :1]``) broadcast, with a ``ValueError`` naming the arguments; ops whose arguments
    have other layouts (``pairwise_dist``, ``einstein_midpoint``) check their own shapes.
    """
    for name, t in tensors.items():
        check_tensor(name, t)
    values = list(tensors.values())
    out = common_dtype(*values)
    comp = compute_dtype(out)
    if wide and comp == torch.float32:
        comp = torch.float64
    batch = check_broadcast(**tensors) if broadcast else None
    device = values[0].device
    cc = as_curvature(c, comp, device, storage=out)
    if batch is not None:
        check_curvature_batch(c, batch, "the inputs'", "x[..., :1]")
    return out, comp, cc, [t.to(comp) for t in values]


def check_curvature_batch(c: object, batch: tuple[int, ...], whose: str, what: str) -> None:
    """``ValueError`` naming ``c`` unless a tensor curvature broadcasts against
    ``(*batch, 1)``, the shape of the rows it applies to (``whose`` and ``what`` describe them in
    the message, e.g. ``"the inputs'"`` and ``"x[..., :1]"``). Numbers and 0-d tensors always
    fit."""
    if isinstance(c, Tensor) and c.dim() > 0:
        try:
            _broadcast(tuple(c.shape), (*batch, 1))
        except ValueError:
            raise ValueError(
                f"c of shape {tuple(c.shape)} does not broadcast against {whose} "
                f"{(*batch, 1)} ({what})"
            ) from None
