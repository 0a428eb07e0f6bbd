r"""Stateless parts of the modules of :mod:`poincare.nn`, like :mod:`torch.nn.functional`.

Scores
------
One vocabulary names how close two points are, in the attention and in any contrastive loss
built on this library. With :math:`d = d_c(x, y)` the geodesic distance and :math:`s_c = \sqrt c`,
the score of a pair is :math:`-f(d)` with

=============  =================================  =============================================
``score``      :math:`f(d)`                        note
=============  =================================  =============================================
``distance``   :math:`d`                           also accepted as ``"regular"``
``squared``    :math:`d^2`
``cosh``       :math:`\cosh(s_c d) - 1`            :math:`= -c\langle h_x, h_y\rangle_L - 1` in
                                                   Lorentz coordinates: a dot product
=============  =================================  =============================================

(the attention multiplies it by a learnable temperature :math:`\beta > 0`). :func:`pairwise_score`
computes them for all pairs of two sets of points; the attention computes the same function
from Lorentz coordinates.

Attention
---------
For queries :math:`q_i`, keys :math:`k_j` and values :math:`v_j` (points of the ball), head by
head: weights :math:`w_{ij} = \operatorname{softmax}_j(-\beta f(d(q_i, k_j)) + m_{ij})` (``m`` the
additive mask), and the output is the weighted Einstein midpoint of the values. With the
Lorentz coordinates :math:`h_j = (h_{j0}, h_{js})` of :math:`v_j` it is the Klein point
:math:`\sum_j w_{ij} h_{js}/(s_c\sum_j w_{ij}h_{j0})`: both sums are linear in the weights, so
the aggregation is one matrix product ``w @ h`` and no ``(..., N, M, D)`` tensor is formed.

:func:`multi_head_attention_forward` (the module's forward) and :func:`hyperbolic_attention`
(per-head points) run one pipeline: encode the inputs as Lorentz coordinates or points, attend,
and take the tangent vector of each midpoint at the origin
(:func:`poincare._fused.midpoint_logmap0`). Its path is chosen in one place,
:func:`_choose_path`, from the score, ``need_weights`` and the compute dtype:

* ``"sdpa"``: the ``cosh`` score without weights. :math:`\cosh(s_c d) = -c\langle h_q,
  h_k\rangle_L`, so the score is a dot product of augmented vectors and the whole attention
  (mask, dropout and the value sums included) runs in
  :func:`torch.nn.functional.scaled_dot_product_attention`, in the compute dtype.
* ``"gram"``: explicit scores (``distance``, ``squared``, or any score with weights) of calls
  computing below float64: :math:`g - 1 = \cosh(s_c d) - 1` comes from one float64 product of
  the Lorentz coordinates, its close pairs (where the product cancels) from the differences of
  their coordinates (:func:`poincare._fused.lorentz_cosh_minus_one`), the scores from
  :func:`poincare._fused.cosh_score`, the value sums in the compute dtype. On the CPU, without
  weights and outside ``torch.func`` transforms, the whole pipeline (the Gram entries, the
  close-pair correction, the scores, an online softmax, dropout and the value sums, and a
  backward pass that recomputes them block by block) runs in one fused C++ kernel,
  :mod:`poincare.nn._kernel`, which holds no ``N x M`` matrix; elsewhere (and where the kernel
  cannot be built) it runs blockwise in PyTorch (:func:`_attend`).
* ``"points"``: explicit scores of calls computing in float64, whose accuracy needs the points:
  :func:`pairwise_score` of the head points, float64 value sums.

Lorentz coordinates of far-out points are huge (:math:`\cosh(s_c r)`): below float64 they lose
the scores and the midpoint. A call any of whose head points lies beyond
:math:`s_c h_0 = \cosh(s_c r) > 16` (:data:`FAR_COSH`, i.e. :math:`c|x|^2 > 15/17`, radius
about :math:`3.5/s_c`), where the midpoint from sums in the compute dtype would lose more
than about 16 hULP (the Klein norm carries a relative error of about :math:`\epsilon`, which
its artanh turns into about :math:`\cosh(s_c r)` hULP), forms its
head points in the compute dtype instead and runs ``"sdpa"`` on their float64 Lorentz
coordinates, and ``"gram"`` as ``"points"`` (the ``cosh`` score, which grows like
:math:`e^d`, as ``"gram"`` on float64 Lorentz coordinates of the points). Where the fused
CPU kernel runs the ``"gram"`` path, a far-out call stays on it with float64 values (the
scores already come from float64 coordinates; the sums, and so the midpoint, stay float64),
and traced code, which cannot test the values, does so for every call.

In the module, head points are not formed in the ball at all on the Lorentz paths: their
Lorentz coordinates come in closed form from the tangent vectors of the projections
(:func:`poincare.expmap0_add_lorentz`), and the heads are merged from the midpoints' tangent
vectors at the origin, which the output projection consumes
(:func:`hyperbolic_linear_tangent`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .. import functional as PF
from .._checks import _WRAPPED, _broadcast, host_branches, is_real
from .._fused import (
    _sqrt,
    cosh_score,
    expmap0_add_lorentz_raw,
    lorentz_cosh_minus_one,
    midpoint_logmap0,
    saturation,
)
from .._precision import compute_dtype
from ._blockwise import _block_mask, _masked, blockwise_attention
from ._common import cast_point, check_curvature_arg, check_probability
from ._kernel import build as build_kernel
from ._kernel import fused_lorentz_attention

__all__ = [
    "BLOCK_ELEMENTS",
    "FAR_COSH",
    "SCORES",
    "Score",
    "canonical_score",
    "hyperbolic_attention",
    "hyperbolic_linear",
    "hyperbolic_linear_tangent",
    "multi_head_attention_forward",
    "pairwise_score",
    "tangent_dropout",
]

Score = Literal["distance", "squared", "cosh"]
SCORES: tuple[str, ...] = get_args(Score)
_ALIASES = {"regular": "distance"}

#: Head points with ``sqrt(c) h_0 = cosh(sqrt(c) r)`` above this are *far out*: below float64
#: their Lorentz coordinates and sums lose about ``eps * FAR_COSH^2`` in the scores and about
#: ``FAR_COSH`` hULP in the midpoint (see the module docstring).
FAR_COSH = 16.0

Curv = float | Tensor


def canonical_score(score: str) -> Score:
    """The canonical name of a score: ``"regular"`` is ``"distance"``; raises on others.

    Raises:
        ValueError: ``score`` is not one of ``distance``, ``squared``, ``cosh``, ``regular``.
    """
    name = _ALIASES.get(score, score) if isinstance(score, str) else score
    if name not in SCORES:
        raise ValueError(f"score must be one of {SCORES} ('regular' is 'distance'), got {score!r}")
    return name  # type: ignore[return-value]


def _curvature_in(c: Curv, dtype: torch.dtype) -> Curv:
    """A tensor curvature in ``dtype`` (differentiably); a float unchanged."""
    return c.to(dtype) if isinstance(c, Tensor) else c


def pairwise_score(x: Tensor, y: Tensor, *, score: str = "distance", c: Curv = 1.0) -> Tensor:
    r"""Scores :math:`-f(d(x_i, y_j))` of all pairs (see "Scores" in the module docstring).

    ``distance``: :math:`-d`; ``squared``: :math:`-d^2`; ``cosh``:
    :math:`-(\cosh(s_c d) - 1) = -2\sinh^2(s_c d/2)` (formed without cancellation). The
    distances come from :func:`poincare.pairwise_dist` (no ``N x M x D`` tensor), in its
    precision (the active :func:`poincare.upcast` included).

    Args:
        x: ``(..., N, D)`` points.
        y: ``(..., M, D)`` points; leading dimensions broadcast.
        score: ``"distance"`` (or ``"regular"``), ``"squared"`` or ``"cosh"``.
        c: curvature (a float or a tensor broadcastable to ``(..., 1, 1)``).

    Returns:
        ``(..., N, M)`` in the promoted dtype of ``x`` and ``y``.

    Raises:
        ValueError: an unknown ``score``, or the errors of :func:`poincare.pairwise_dist`.
    """
    name = canonical_score(score)
    d = PF.pairwise_dist(x, y, c=c, squared=name == "squared")
    if name == "cosh":
        half = torch.sinh(d * (_sqrt(_curvature_in(c, d.dtype)) / 2))
        return -2 * half * half
    return -d


def tangent_dropout(x: Tensor, p: float, training: bool, *, c: Curv = 1.0) -> Tensor:
    r"""Dropout of points applied in the tangent space at the origin.

    :math:`\exp_0(\operatorname{dropout}(\log_0 x))`: the point is never scaled in ball
    coordinates, so the result stays in the ball. Identity when ``training`` is false or
    ``p == 0``. ``x``: (..., D) points; returns (..., D).

    Raises:
        ValueError: ``p`` is not in [0, 1).
    """
    p = check_probability(p, "p")
    if not training or p == 0.0:
        return x
    return PF.expmap0(F.dropout(PF.logmap0(x, c=c), p, True), c=c)


def hyperbolic_linear_tangent(
    u: Tensor, weight: Tensor, bias: Tensor | None = None, *, c: Curv = 1.0
) -> Tensor:
    r"""The Möbius linear layer applied to :math:`\exp_0(u)`: :math:`\exp_0(Wu) \oplus_c
    \exp_0(b)`.

    Equals :func:`hyperbolic_linear` of :math:`\exp_0(u)` (because
    :math:`W \otimes_c \exp_0(u) = \exp_0(Wu)`) without the round trip through the ball, so
    nothing saturates when :math:`|u|` exceeds the representable radius; the sum is one closed
    form (:func:`poincare.expmap0_add`). ``u``: (..., in); ``weight``: (out, in); ``bias``:
    (out,) tangent vector at the origin or None; returns (..., out) points in the compute
    dtype of ``u`` (see :func:`poincare.compute_dtype`).
    """
    dtype = compute_dtype(u.dtype)
    z = F.linear(u.to(dtype), weight.to(dtype))
    if bias is None:
        return PF.expmap0(z, c=c)
    return PF.expmap0_add(z, bias.to(dtype), c=c)


def hyperbolic_linear(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, *, c: Curv = 1.0
) -> Tensor:
    r"""The Möbius linear layer :math:`(W \otimes_c x) \oplus_c \exp_0(b)` of points ``x``.

    :math:`W \otimes_c x = \exp_0(W \log_0 x)`, so this is
    :func:`hyperbolic_linear_tangent` of :math:`\log_0 x`. Shapes as there; returns points in
    the compute dtype of ``x``.
    """
    dtype = compute_dtype(x.dtype)
    return hyperbolic_linear_tangent(PF.logmap0(x.to(dtype), c=c), weight, bias, c=c)


# ---------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------


def _additive_mask(mask: Tensor, dtype: torch.dtype, name: str) -> Tensor:
    """A boolean mask (True = not allowed) or a float additive mask as an additive float mask."""
    if mask.dtype == torch.bool:
        zeros = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
        return zeros.masked_fill(mask, float("-inf"))
    if mask.is_floating_point():
        return mask.to(dtype)
    raise TypeError(f"{name} must be a bool or floating tensor, got {mask.dtype}")


def _causal_mask(n: int, m: int, device: torch.device) -> Tensor:
    """Boolean (n, m) mask, True above the diagonal (key j > query i is not allowed)."""
    return torch.ones(n, m, dtype=torch.bool, device=device).triu(1)


def _prepare_mask(
    attn_mask: Tensor | None,
    is_causal: bool,
    score_shape: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[Tensor | None, Tensor | None]:
    """Validate ``attn_mask``; return (additive mask or None, fully-masked rows or None).

    With ``attn_mask`` given, ``is_causal`` is merged into it. Rows whose every key is masked
    are reported as a boolean (..., N, 1) tensor and unmasked in the returned mask (so that the
    softmax stays finite); the caller replaces their output.
    """
    if attn_mask is None:
        return None, None
    if not isinstance(attn_mask, Tensor):
        raise TypeError(f"attn_mask must be a tensor, got {type(attn_mask).__name__}")
    try:
        shape = torch.broadcast_shapes(attn_mask.shape, score_shape)  # type: ignore[no-untyped-call]
    except RuntimeError:
        shape = None
    if shape != torch.Size(score_shape):
        raise ValueError(
            f"attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to the scores "
            f"{score_shape}"
        )
    mask = _additive_mask(attn_mask, dtype, "attn_mask")
    n, m = score_shape[-2], score_shape[-1]
    if is_causal:
        mask = mask.masked_fill(_causal_mask(n, m, device), float("-inf"))
    dead_rows = torch.isneginf(mask).all(dim=-1, keepdim=True)
    if not host_branches(mask) or bool(dead_rows.any()):
        return mask.masked_fill(dead_rows, 0.0), dead_rows
    return mask, None


# ---------------------------------------------------------------------------------------------
# The pipeline: path, encode, attend, decode
# ---------------------------------------------------------------------------------------------

Path = Literal["sdpa", "gram", "points"]


def _choose_path(score: str, need_weights: bool, dtype: torch.dtype) -> Path:
    """The one choice of the attention's path (see the module docstring)."""
    if score == "cosh" and not need_weights:
        return "sdpa"
    return "points" if dtype == torch.float64 else "gram"


def _far_out(hs: list[Tensor], c: Curv) -> bool:
    """Whether a head point with Lorentz coordinates in ``hs`` lies beyond :data:`FAR_COSH`."""
    with torch.no_grad():
        flags = [(h[..., 0] * _sqrt(c) > FAR_COSH).any() for h in hs]
        return bool(torch.stack(flags).any())


def _minkowski_sign(width: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The constant ``(-1, 1, ..., 1)`` of length ``width`` (never modified in place): cached in
    eager code, built in place of the cache when traced (a constant of the graph)."""
    if torch.compiler.is_compiling():
        return _sign(width, dtype, device)
    return _cached_sign(width, dtype, device)


def _sign(width: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    sign = torch.ones(width, dtype=dtype, device=device)
    sign[0] = -1.0
    return sign


_cached_sign = functools.lru_cache(maxsize=32)(_sign)


def _even(h: Tensor) -> Tensor:
    """``h`` padded with a zero column to an even width (the fused CPU kernel is markedly slower
    for odd head sizes; a zero column changes neither the scores nor the sums)."""
    return F.pad(h, (0, 1)) if h.shape[-1] % 2 else h


class _Encoded:
    """The per-token inputs of :func:`_attend` on one path. ``widened``: float64 values of a
    call computing in float32 (far-out heads in the fused kernel, whose scores stay float32)."""

    def __init__(
        self, path: Path, q: Tensor, k: Tensor, v: Tensor, *, widened: bool = False
    ) -> None:
        self.path, self.q, self.k, self.v, self.widened = path, q, k, v, widened


def _encode_lorentz(
    hq: Tensor, hk: Tensor, hv: Tensor, beta: Tensor, c: Curv, path: Path, dtype: torch.dtype
) -> _Encoded:
    """Lorentz coordinates (..., L, >= D + 1) to the inputs of ``path`` (``"sdpa"``/``"gram"``).

    ``"sdpa"``: queries :math:`\\beta c(-h_0, h_s)` so that ``q · h_k = -beta cosh(s_c d)``;
    ``"gram"``: queries and keys as they are, in float64 (for
    :func:`poincare._fused.lorentz_cosh_minus_one`), values in ``dtype``.
    """
    sign = _minkowski_sign(hq.shape[-1], hq.dtype, hq.device)
    cq = _curvature_in(c, hq.dtype)
    if path == "sdpa":
        return _Encoded(path, hq * ((beta.to(hq.dtype) * cq) * sign), hk, hv)
    return _Encoded(path, hq, hk, hv.to(dtype))


def _encode_points(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    c: Curv,
    path: Path,
    dtype: torch.dtype,
    score: Score,
) -> _Encoded:
    """Head points (..., L, D) to the inputs of ``path``, taking far-out calls off the Lorentz
    paths of ``dtype`` (see the module docstring): ``"sdpa"`` then runs on float64 Lorentz
    coordinates of the points, ``"gram"`` becomes ``"points"`` (distances from the points,
    float64 value sums), except for the ``cosh`` score, which grows like ``e^d``: its float32
    distances would carry absolute errors of about ``eps d cosh(d)``, so it stays ``"gram"``
    on float64 Lorentz coordinates of the points (absolute errors of about ``eps h_0^2``)."""
    wide = torch.float64
    if path == "sdpa" or (path == "gram" and score == "cosh"):
        hq, hk, hv = (_even(PF.poincare_to_lorentz(p.to(wide), c=c)) for p in (q, k, v))
        return _encode_lorentz(hq, hk, hv, beta.to(wide), c, path, wide)
    return _Encoded("points", q, k, PF.poincare_to_lorentz(v.to(wide), c=c))


#: Score elements (over all heads and batch entries) that one block of queries forms at once
#: on the explicit-score paths: about 8 MiB of float64, so that a block's scores stay in cache
#: and a training step holds no ``N x M`` matrix (see :func:`_attend`).
BLOCK_ELEMENTS = 1 << 20
#: The fewest query rows of a block: each block's backward pass forms a gradient of every key
#: (``lead x M x D``), so thinner blocks of many heads cost more in those than they save.
MIN_ROWS = 16
#: The most blocks a call traced by ``torch.compile`` splits its queries into (each block is
#: unrolled into the graph, so more blocks cost compilation time rather than memory).
COMPILED_BLOCKS = 8


def _scores(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    path: Path,
    beta: Tensor,
    c: Curv,
    score: Score,
) -> Tensor:
    """The scores ``-beta f(d)`` (..., n, M) of the explicit paths, in the dtype of ``v``
    (``"gram"``) or of ``q`` (``"points"``)."""
    if path == "gram":
        gm1 = lorentz_cosh_minus_one(q, k, c=_curvature_in(c, q.dtype), dtype=v.dtype)
        return cosh_score(gm1, beta, c=_curvature_in(c, v.dtype), score=score, dtype=v.dtype)
    return pairwise_score(q, k, score=score, c=c) * beta.to(q.dtype)


def _attend_rows(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    mask: Tensor | None,
    *,
    path: Path,
    c: Curv,
    score: Score,
    causal_from: int | None,
    dropout_p: float,
) -> tuple[Tensor, Tensor]:
    """``(w @ h_v, w)`` of the queries ``q`` (rows ``causal_from ...`` of the call when causal)."""
    s = _scores(q, k, v, path=path, beta=beta, c=c, score=score)
    if mask is not None:
        s = s + mask.to(s.dtype)
    elif causal_from is not None:
        forbidden = _block_mask(None, True, causal_from, q.shape[-2], k.shape[-2], q.device)
        s = _masked(s, forbidden)
    w = torch.softmax(s, dim=-1)
    if dropout_p > 0.0:
        w = F.dropout(w, dropout_p, True)
    return torch.matmul(w.to(v.dtype), v), w


def _fused_kernel(enc: _Encoded) -> bool:
    """Whether the ``"gram"`` path of these inputs runs in the fused CPU kernel
    (:mod:`poincare.nn._kernel`): float64 coordinates and float32 values, or float64 values
    widened from a float32 call (:func:`_kernel_runs`)."""
    if enc.q.dtype != torch.float64 or enc.k.dtype != torch.float64:
        return False
    if enc.v.dtype != (torch.float64 if enc.widened else torch.float32):
        return False
    return _kernel_runs(enc.q, enc.k, enc.v)


def _kernel_runs(*tensors: Tensor) -> bool:
    """Whether the fused CPU kernel serves calls on these tensors: on the CPU, outside
    ``torch.func`` transforms, with the kernel built (built at the first call; traced code asks
    at trace time)."""
    if any(t.device.type != "cpu" for t in tensors):
        return False
    if not torch.compiler.is_compiling() and (
        _WRAPPED is None or any(_WRAPPED(t) for t in tensors)
    ):
        return False
    return _kernel_built()


def _kernel_built() -> bool:
    """:func:`poincare.nn._kernel.build`, a constant of a traced graph: ``torch.compile``
    evaluates it (building the kernel) when it traces the first call, instead of tracing it."""
    return build_kernel()


# What torch.compiler.assume_constant_result(_kernel_built) sets, without the decorator's
# import of torch._dynamo (1.6 s at every `import poincare.nn`);
# tests/test_fused_attention.py checks in a fresh process that a module compiled before any
# eager call still runs the kernel.
_kernel_built._dynamo_marked_constant = True  # type: ignore[attr-defined]


def _first(fn: Callable[..., tuple[Tensor, Tensor]], *args: Tensor | None) -> Tensor:
    """The first output of ``fn(*args)`` (what a checkpointed block keeps)."""
    return fn(*args)[0]


def _attend(
    enc: _Encoded,
    *,
    beta: Tensor,
    c: Curv,
    score: Score,
    mask: Tensor | None,
    is_causal: bool,
    dropout_p: float,
    need_weights: bool,
) -> tuple[Tensor, Tensor | None]:
    """``(w @ h_v, w or None)`` on the path of ``enc`` (see the module docstring).

    The explicit paths (``"gram"``, ``"points"``) work on blocks of queries of about
    :data:`BLOCK_ELEMENTS` scores each, and the backward pass recomputes a block's scores from
    its inputs: a training step holds the per-token inputs and outputs (and a log-sum-exp per
    row), never an ``N x M`` matrix per head, and every elementwise pass runs over a block that
    fits in cache. In eager code without dropout this is one autograd node,
    :func:`poincare.nn._blockwise.blockwise_attention`; with dropout, and when traced by
    ``torch.compile``, each block is a :func:`torch.utils.checkpoint.checkpoint` (its random
    state preserved, so the recomputation draws the same dropout mask); inside ``torch.func``
    transforms (which have no saved-tensor hooks) the blocks are kept by autograd. The blocks
    are rows of the unblocked computation, so the result is the same up to the rounding of
    the softmax and of the value sums. ``need_weights`` (which returns the ``N x M`` weights
    anyway) takes one block.
    """
    q, k, v = enc.q, enc.k, enc.v
    n, m = q.shape[-2], k.shape[-2]
    if enc.path == "sdpa":
        agg = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=None if mask is None else mask.to(q.dtype),
            dropout_p=dropout_p,
            is_causal=is_causal and mask is None,
            scale=1.0,
        )
        return agg, None
    causal = is_causal and mask is None
    if enc.path == "gram" and not need_weights and dropout_p < 1.0 and _fused_kernel(enc):
        agg = fused_lorentz_attention(
            q, k, v, beta, c=c, score=score, mask=mask, causal=causal, dropout_p=dropout_p
        )
        return agg, None
    lead = math.prod(
        _broadcast(_broadcast(tuple(q.shape[:-2]), tuple(k.shape[:-2])), tuple(beta.shape[:-2]))
    )
    rows = n if need_weights else max(MIN_ROWS, BLOCK_ELEMENTS // max(1, lead * m))
    if torch.compiler.is_compiling():
        # traced blocks unroll into the graph: at most COMPILED_BLOCKS of them
        rows = max(rows, -(-n // COMPILED_BLOCKS))
    if rows >= n:
        agg, w = _attend_rows(
            q,
            k,
            v,
            beta,
            mask,
            path=enc.path,
            c=c,
            score=score,
            causal_from=0 if causal else None,
            dropout_p=dropout_p,
        )
        return agg, (w if need_weights else None)
    compiling = torch.compiler.is_compiling()
    in_transform = not compiling and (_WRAPPED is None or any(_WRAPPED(t) for t in (q, k, v)))
    if dropout_p == 0.0 and not compiling and not in_transform:
        c_t = c if isinstance(c, Tensor) else None

        def score_fn(qb: Tensor, kk: Tensor, bb: Tensor, ct: Tensor | None) -> Tensor:
            cc = c if ct is None else ct
            return _scores(qb, kk, v, path=enc.path, beta=bb, c=cc, score=score)

        agg = blockwise_attention(score_fn, q, k, v, beta, c_t, rows=rows, mask=mask, causal=causal)
        return agg, None
    record = torch.is_grad_enabled() and any(
        t.requires_grad for t in (q, k, v, beta, *([c] if isinstance(c, Tensor) else []))
    )
    # saved-tensor hooks (the non-reentrant checkpoint) are not available inside torch.func
    # transforms; there the blocks still bound the working set of the forward pass
    recompute = record and not in_transform
    parts = []
    for start in range(0, n, rows):
        qb = q[..., start : start + rows, :]
        mb = mask
        if mask is not None and mask.shape[-2] != 1:
            mb = mask[..., start : start + rows, :]
        block = functools.partial(
            _attend_rows,
            path=enc.path,
            c=c,
            score=score,
            causal_from=start if causal else None,
            dropout_p=dropout_p,
        )
        if recompute:
            out = checkpoint(_first, block, qb, k, v, beta, mb, use_reentrant=False)
        else:
            out = block(qb, k, v, beta, mb)[0]
        parts.append(out)
    return torch.cat(parts, dim=-2), None


def hyperbolic_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    c: Curv = 1.0,
    beta: Tensor | float = 1.0,
    score: str = "distance",
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    need_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Hyperbolic attention of query points over key points, aggregating value points by their
    weighted Einstein midpoint (see "Attention" in the module docstring).

    ``o_i = midpoint_E({v_j}, w_ij)`` with ``w_ij = softmax_j(-beta f(d_c(q_i, k_j)) +
    mask_ij)``; the same pipeline as :func:`multi_head_attention_forward`, on points.

    Args:
        q: (..., N, D) query points in the ball.
        k: (..., M, D) key points, same leading shape as ``q``, ``M >= 1``.
        v: (..., M, Dv) value points.
        c: curvature (a float or a 0-d tensor).
        beta: positive temperature, a float or a tensor broadcastable to
            ``q.shape[:-2] + (1, 1)`` (e.g. ``(heads, 1, 1)``).
        score: ``"distance"`` (or ``"regular"``), ``"squared"`` or ``"cosh"``.
        attn_mask: bool (True = not allowed) or additive float mask broadcastable to
            ``(..., N, M)``.
        is_causal: forbid key ``j > i`` for query ``i`` (combined with ``attn_mask``).
        dropout_p: dropout probability on the attention weights (pass 0 in evaluation).
        need_weights: also return the weights ``(..., N, M)`` (after dropout).

    Returns:
        ``(output (..., N, Dv) in the ball, weights or None)``, in the dtype of ``q``. A row
        whose keys are all masked (or whose weights are all dropped) returns the origin and
        zero weights.

    Raises:
        TypeError/ValueError on non-tensors, integer dtypes, wrong ranks or shapes, an unknown
        ``score``, a mask of the wrong dtype or shape, an invalid ``c``, a non-positive
        ``beta`` or ``dropout_p`` outside [0, 1).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must have a floating dtype, got {t.dtype}")
        if t.dim() < 2:
            raise ValueError(f"{name} must have shape (..., L, D), got {tuple(t.shape)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same last dim, got {q.shape[-1]}, {k.shape[-1]}")
    if k.shape[:-1] != v.shape[:-1]:
        raise ValueError(
            f"k and v must agree in all but the last dim, got {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[:-2] != k.shape[:-2]:
        raise ValueError(
            f"q and k must have the same leading dims, got {tuple(q.shape)}, {tuple(k.shape)}"
        )
    if k.shape[-2] < 1:
        raise ValueError("k must hold at least one key")
    name = canonical_score(score)
    dropout_p = check_probability(dropout_p, "dropout_p")
    if isinstance(beta, Tensor):
        if beta.dim() >= 1 and (beta.shape[-1] != 1 or (beta.dim() >= 2 and beta.shape[-2] != 1)):
            raise ValueError(f"beta must be broadcastable to (..., 1, 1), got {tuple(beta.shape)}")
    elif not (is_real(beta) and math.isfinite(beta) and float(beta) > 0):
        raise ValueError(f"beta must be a positive finite float or a tensor, got {beta!r}")
    check_curvature_arg(c)
    in_dtype = q.dtype
    dtype = compute_dtype(in_dtype)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    beta_t = beta.to(dtype) if isinstance(beta, Tensor) else torch.tensor(float(beta), dtype=dtype)
    cc = _curvature_in(c, dtype)
    score_shape = (*q.shape[:-2], q.shape[-2], k.shape[-2])
    mask, dead = _prepare_mask(attn_mask, is_causal, score_shape, dtype, q.device)
    path = _choose_path(name, need_weights, dtype)
    enc: _Encoded | None = None
    # Lorentz coordinates in the compute dtype serve calls whose points all lie within
    # FAR_COSH: a data-dependent test, so traced code takes the far-out form straight away.
    if path != "points" and (dtype == torch.float64 or host_branches(q, k, v)):
        # "gram" takes g from float64 Lorentz coordinates of the queries and keys.
        wide = torch.float64 if path == "gram" else dtype
        hs = [_even(PF.poincare_to_lorentz(p.to(wide), c=cc)) for p in (q, k)]
        hs.append(_even(PF.poincare_to_lorentz(v, c=cc)))
        if dtype == torch.float64 or not _far_out(hs, cc):
            enc = _encode_lorentz(hs[0], hs[1], hs[2], beta_t, cc, path, dtype)
    if enc is None:
        enc = _encode_points(q, k, v, beta_t, cc, path, dtype, name)
    agg, weights = _attend(
        enc,
        beta=beta_t,
        c=cc,
        score=name,
        mask=mask,
        is_causal=is_causal,
        dropout_p=dropout_p,
        need_weights=need_weights,
    )
    # The midpoint is formed in the dtype of the sums (float64 for far-out float32 calls) and
    # rounded to the caller's dtype once, as a point.
    t = midpoint_logmap0(
        agg, dead, c=_curvature_in(cc, agg.dtype), dim=v.shape[-1], dtype=agg.dtype
    )
    out = PF.expmap0(t, c=_curvature_in(cc, agg.dtype))
    if weights is not None:
        if dead is not None:
            weights = weights.masked_fill(dead, 0.0)
        weights = weights.to(in_dtype)
    return cast_point(out, in_dtype, c=c), weights


def _heads_first(h: Tensor) -> Tensor:
    """(B, L, k, heads, W) -> (k, B, heads, L, W) (a view)."""
    return h.permute(2, 0, 3, 1, 4)


def multi_head_attention_forward(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    num_heads: int,
    in_proj_weight: Tensor | None,
    in_proj_bias: Tensor | None,
    out_proj_weight: Tensor,
    out_proj_bias: Tensor | None,
    beta: Tensor,
    c: Curv = 1.0,
    score: str = "distance",
    dropout_p: float = 0.0,
    training: bool = True,
    key_padding_mask: Tensor | None = None,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    need_weights: bool = False,
    average_attn_weights: bool = True,
    q_proj_weight: Tensor | None = None,
    k_proj_weight: Tensor | None = None,
    v_proj_weight: Tensor | None = None,
    batch_first: bool = True,
    memory_efficient: bool = False,
    tangent: bool = False,
) -> tuple[Tensor, Tensor | None]:
    r"""Hyperbolic multi-head attention, the forward pass of
    :class:`poincare.nn.HyperbolicMultiHeadAttention` (as
    :func:`torch.nn.functional.multi_head_attention_forward` is that of
    :class:`torch.nn.MultiheadAttention`).

    For head ``h``, the query, key and value points are :math:`\exp_0(W_h \log_0 x) \oplus_c
    \exp_0(b_h)` (a Möbius linear map :math:`E \to E/\text{heads}` per head); each head attends
    as :func:`hyperbolic_attention` with temperature :math:`\beta_h`; the heads are merged in
    the tangent space at the origin, :math:`t = \operatorname{concat}_h \log_0(o_h)`, and the
    output is :math:`\exp_0(W_o t) \oplus_c \exp_0(b_o)` (:func:`hyperbolic_linear_tangent`).
    Ball coordinates of different heads are never concatenated, so the merged point is in the
    ball. The path is chosen once per call (see the module docstring).

    Args:
        query: (B, N, E) points ((N, B, E) if not ``batch_first``), or their tangent vectors at
            the origin if ``tangent``.
        key, value: (B, M, kdim), (B, M, vdim), likewise. ``query is key is value`` (self
            attention) with ``in_proj_weight`` projects all three in one product.
        num_heads: heads; ``E`` must be divisible by it.
        in_proj_weight: (3E, E) packed projection, or None with the three ``*_proj_weight``.
        in_proj_bias: (3E,) tangent biases or None.
        out_proj_weight, out_proj_bias: (E, E) and (E,) or None.
        beta: (heads,) positive temperatures.
        c: curvature (a float, or a 0-d tensor that may require grad).
        score: ``"distance"`` (or ``"regular"``), ``"squared"`` or ``"cosh"``.
        dropout_p: dropout on the weights, applied when ``training``.
        key_padding_mask: (B, M), bool (True = ignore the key) or additive float.
        attn_mask: (N, M) or (B*heads, N, M), bool (True = not allowed) or additive float.
        is_causal: forbid key ``j > i`` for query ``i``.
        need_weights, average_attn_weights: return the weights, averaged over heads
            ((B, N, M)) or per head ((B, heads, N, M)).
        memory_efficient: when gradients are recorded, recompute the elementwise hyperbolic
            maps (projections, Lorentz coordinates, midpoint, merge) in the backward pass
            (:func:`torch.utils.checkpoint.checkpoint`) instead of storing their intermediates.
        tangent: the inputs are tangent vectors at the origin (e.g. a layer norm's
            :meth:`~poincare.nn.HyperbolicLayerNorm.forward_tangent`), not points.

    Returns:
        ``(output, weights or None)``: output points (B, N, E) (or (N, B, E)) in the ball, in
        the dtype of ``query``. A query whose keys are all masked gets zero weights and the
        output projection of the origin.

    Raises:
        TypeError/ValueError naming the argument on wrong types, ranks, sizes or mask shapes.
    """
    same_qkv = query is key and key is value
    shared_kv = value is key
    embed_dim = out_proj_weight.shape[0]
    if embed_dim % num_heads:
        raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
    head_dim = embed_dim // num_heads
    name = canonical_score(score)
    for arg, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{arg} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{arg} must have a floating dtype, got {t.dtype}")
        if t.dim() != 3:
            layout = "(B, L, E)" if batch_first else "(L, B, E)"
            raise ValueError(f"{arg} must be 3-D {layout}, got shape {tuple(t.shape)}")
    if not batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    if key.shape[:2] != value.shape[:2]:
        raise ValueError(
            f"key and value must have the same batch and length, got {tuple(key.shape)} "
            f"and {tuple(value.shape)}"
        )
    if query.shape[0] != key.shape[0]:
        raise ValueError(
            f"query and key must have the same batch size, got {query.shape[0]} and {key.shape[0]}"
        )
    weights_qkv = (
        [in_proj_weight[i * embed_dim : (i + 1) * embed_dim] for i in range(3)]
        if in_proj_weight is not None
        else [q_proj_weight, k_proj_weight, v_proj_weight]
    )
    for arg, t, w in zip(("query", "key", "value"), (query, key, value), weights_qkv, strict=True):
        if w is None:
            raise ValueError(f"the {arg} projection weight is missing")
        if t.shape[-1] != w.shape[1]:
            raise ValueError(f"{arg} must have last dimension {w.shape[1]}, got {t.shape[-1]}")
    in_dtype = query.dtype
    dtype = compute_dtype(in_dtype)
    b, n, m = query.shape[0], query.shape[1], key.shape[1]
    mask = _merge_masks(key_padding_mask, attn_mask, b, n, m, num_heads, dtype)
    mask, dead = _prepare_mask(mask, is_causal, (b, num_heads, n, m), dtype, query.device)
    beta_h = beta.to(dtype).view(num_heads, 1, 1)
    cc = _curvature_in(c, dtype)
    path = _choose_path(name, need_weights, dtype)
    fused = in_proj_weight is not None and same_qkv
    recompute = memory_efficient and torch.is_grad_enabled()
    t_max = saturation(dtype)
    # encode() takes the same steps on every call with the same inputs, as the recomputation
    # of checkpoint() requires; `taken` records the path it chose (and whether it widened the
    # values of a float32 call for the fused kernel).
    taken: dict[str, Any] = {"widened": False}

    def encode(x_q: Tensor, x_k: Tensor, x_v: Tensor, beta_: Tensor) -> tuple[Tensor, ...]:
        def tangent_of(x: Tensor) -> Tensor:
            return x.to(dtype) if tangent else PF.logmap0(x.to(dtype), c=cc)

        if fused:
            assert in_proj_weight is not None
            bias = None if in_proj_bias is None else in_proj_bias.to(dtype)
            zs = [(F.linear(tangent_of(x_q), in_proj_weight.to(dtype)), bias, 3)]
        else:
            uq, uk = tangent_of(x_q), tangent_of(x_k)
            uv = uk if shared_kv else tangent_of(x_v)
            zs = []
            for i, u in enumerate((uq, uk, uv)):
                w = weights_qkv[i]
                assert w is not None
                bias = None
                if in_proj_bias is not None:
                    bias = in_proj_bias[i * embed_dim : (i + 1) * embed_dim].to(dtype)
                zs.append((F.linear(u, w.to(dtype)), bias, 1))
        heads = []  # per group: (B, L, k, heads, head_dim) tangents, (k, heads, head_dim) biases
        for z, bias, k in zs:
            zh = z.view(z.shape[0], z.shape[1], k, num_heads, head_dim)
            heads.append((zh, None if bias is None else bias.view(k, num_heads, head_dim)))

        def unpack(per_group: list[Tensor]) -> list[Tensor]:
            first = [_heads_first(p) for p in per_group]
            return list(first[0].unbind(0)) if fused else [p[0] for p in first]

        # Float32 Lorentz coordinates serve calls whose points all lie within FAR_COSH; that is
        # a data-dependent test, so traced code (see poincare._checks.host_branches) takes the
        # far-out form, exact for every input, straight away. The fused kernel's far-out form
        # is its float64 values (its scores come from float64 coordinates anyway).
        kernel = path == "gram" and not need_weights and _kernel_runs(*(z for z, _ in heads))
        lorentz = path != "points" and (
            dtype == torch.float64 or kernel or host_branches(*(z for z, _ in heads))
        )
        if lorentz:
            wide = path == "gram"
            hs = [
                expmap0_add_lorentz_raw(
                    z.double() if wide else z,
                    None if bias is None else (bias.double() if wide else bias),
                    c=_curvature_in(cc, torch.float64) if wide else cc,
                    t_max=t_max,
                    pad=path == "sdpa" and (head_dim + 1) % 2 == 1,
                )
                for z, bias in heads
            ]
            values = dtype
            if kernel and dtype != torch.float64:
                far = not host_branches(*hs) or _far_out(hs, cc)
                values = torch.float64 if far else dtype
            if dtype == torch.float64 or kernel or not _far_out(hs, cc):
                hq, hk, hv = unpack(hs)
                enc = _encode_lorentz(hq, hk, hv, beta_, cc, path, values)
                taken["path"] = enc.path
                taken["widened"] = values != dtype
                return enc.q, enc.k, enc.v
        points = [
            PF.expmap0(z, c=cc) if bias is None else PF.expmap0_add(z, bias, c=cc)
            for z, bias in heads
        ]
        pq, pk, pv = unpack(points)
        enc = _encode_points(pq, pk, pv, beta_, cc, path, dtype, name)
        taken["path"] = enc.path
        return enc.q, enc.k, enc.v

    def decode(agg_: Tensor) -> Tensor:
        t = midpoint_logmap0(agg_, dead, c=cc, dim=head_dim, dtype=dtype)
        t = t.transpose(1, 2).reshape(b, n, embed_dim)
        return hyperbolic_linear_tangent(t, out_proj_weight, out_proj_bias, c=cc)

    run_encode: Callable[..., tuple[Tensor, ...]] = encode
    if recompute:
        qa, ka, va = checkpoint(run_encode, query, key, value, beta_h, use_reentrant=False)
    else:
        qa, ka, va = run_encode(query, key, value, beta_h)
    agg, weights = _attend(
        _Encoded(taken["path"], qa, ka, va, widened=taken["widened"]),
        beta=beta_h,
        c=cc,
        score=name,
        mask=mask,
        is_causal=is_causal,
        dropout_p=dropout_p if training else 0.0,
        need_weights=need_weights,
    )
    result: Tensor = checkpoint(decode, agg, use_reentrant=False) if recompute else decode(agg)
    result = cast_point(result, in_dtype, c=c)
    if weights is not None and dead is not None:
        weights = weights.masked_fill(dead, 0.0)
    if not batch_first:
        result = result.transpose(0, 1)
    if weights is not None:
        weights = weights.to(in_dtype)
        if average_attn_weights:
            weights = weights.mean(dim=1)
    return result, weights


def _merge_masks(
    key_padding_mask: Tensor | None,
    attn_mask: Tensor | None,
    b: int,
    n: int,
    m: int,
    num_heads: int,
    dtype: torch.dtype,
) -> Tensor | None:
    """Both masks as one additive float mask broadcastable to (B, heads, N, M)."""
    merged: Tensor | None = None
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, Tensor):
            raise TypeError("key_padding_mask must be a tensor")
        if key_padding_mask.shape != (b, m):
            raise ValueError(
                f"key_padding_mask must have shape (B, M) = {(b, m)}, got "
                f"{tuple(key_padding_mask.shape)}"
            )
        merged = _additive_mask(key_padding_mask, dtype, "key_padding_mask").view(b, 1, 1, m)
    if attn_mask is not None:
        if not isinstance(attn_mask, Tensor):
            raise TypeError("attn_mask must be a tensor")
        h = num_heads
        if attn_mask.shape == (n, m):
            am = _additive_mask(attn_mask, dtype, "attn_mask")
        elif attn_mask.shape == (b * h, n, m):
            am = _additive_mask(attn_mask, dtype, "attn_mask").view(b, h, n, m)
        else:
            raise ValueError(
                f"attn_mask must have shape (N, M) = {(n, m)} or (B*heads, N, M) = "
                f"{(b * h, n, m)}, got {tuple(attn_mask.shape)}"
            )
        merged = am if merged is None else merged + am
    return merged
