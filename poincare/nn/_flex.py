r"""The explicit scores of the hyperbolic attention on FlexAttention (the CUDA path).

:func:`flex_lorentz_attention` runs :func:`torch.nn.attention.flex_attention.flex_attention`
with the Lorentz Gram entry as its dot product: the queries are multiplied by
:math:`cJ = (c, -c, \dots, -c)` and the scale is 1, so that
:math:`q_i \cdot k_j = g_{ij} = -c\langle h_{q_i}, h_{k_j}\rangle_L = \cosh(s_c d_{ij})`, and a
``score_mod`` turns :math:`g` into the score. Masks that are boolean (and the causal mask) go
into a block mask, so that FlexAttention skips the blocks they forbid; an additive float mask
is added in the ``score_mod``. It is the ``"gram"`` path of
:func:`poincare.nn.functional._attend` (the same scores, softmax and value sums) without its
``N x M`` score blocks and without its correction of close pairs (see the precision notes of
:func:`flex_lorentz_attention`).

FlexAttention fuses the scores, the softmax and the value sums into one kernel only when it
is compiled: on CUDA this module calls a ``torch.compile``-d FlexAttention (one compiled
function per score, so that their recompilations do not share one cache), or FlexAttention
itself inside code that ``torch.compile`` is already tracing. Elsewhere (the CPU, and float64)
it calls FlexAttention uncompiled, which runs its reference implementation: it forms the
``N x M`` scores, and on the CPU it has no backward pass (torch 2.13). Traced by
``torch.compile`` for the CPU, inductor's FlexAttention kernel (torch 2.13) rejects a captured
tensor computed inside the graph (``NoValidChoicesError``: the temperatures are) and fails to
compile for dynamic lengths; the CPU has its own fused kernel for these scores.

A boolean mask costs one evaluation of its ``mask_mod`` over the (broadcast) mask per call
(:func:`~torch.nn.attention.flex_attention.create_block_mask`); the causal block mask is
cached per length and device.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor

from .._precision import compute_dtype
from ._common import check_curvature_arg

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask

__all__ = ["MIN_WIDTH", "flex_lorentz_attention"]

#: The narrowest head FlexAttention's CUDA kernel takes (``tl.dot`` needs 16): narrower
#: coordinates get zero columns, which change neither the Gram entries nor the value sums.
MIN_WIDTH = 16

ScoreMod = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]
MaskMod = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


def _phi(g: Tensor, score: str) -> Tensor:
    r""":math:`s_c d` (``"distance"``) or :math:`(s_c d)^2` (``"squared"``) from
    :math:`g = \cosh(s_c d)`, elementwise (the body of the ``score_mod``).

    :math:`x = \max(g - 1, 0)` (``g - 1`` is exact near 1, Sterbenz) and
    :math:`\operatorname{arcosh}(1 + x) = \log(1 + x + \sqrt{x(x+2)})`, a sum of non-negative
    terms. At :math:`x = 0` the distance is not differentiable: it takes the gradient 0 there
    (the subgradient of least norm), and the squared distance its limit :math:`2` (through
    the first-order term :math:`2x`), as :func:`poincare._fused.cosh_score` does; the
    ``torch.where`` guards keep the infinite slope of the square root out of the backward pass.
    """
    x = torch.clamp(g - 1.0, min=0.0)
    pos = x > 0.0
    xs = torch.where(pos, x, 1.0)
    a = torch.log1p(xs + torch.sqrt(xs * (xs + 2.0)))
    if score == "distance":
        return torch.where(pos, a, 0.0)
    return torch.where(pos, a * a, 2.0 * x)


def _index(t: Tensor, *idx: Tensor) -> Tensor:
    """``t[idx]``, with index 0 along the dimensions of size 1 (broadcast ones): the choice is
    made from the shape, a Python fact, so the ``score_mod`` traces to a plain load."""
    return t[tuple(i if size > 1 else 0 for i, size in zip(idx, t.shape, strict=True))]


def _score_mod(score: str, beta_eff: Tensor | None, mask: Tensor | None) -> ScoreMod | None:
    """``g -> -beta_eff[b, h] phi(g) + mask[b, h, i, j]`` (each term where given)."""
    if beta_eff is None and mask is None:
        return None

    def score_mod(s: Tensor, b: Tensor, h: Tensor, i: Tensor, j: Tensor) -> Tensor:
        if beta_eff is not None:
            s = -_index(beta_eff, b, h) * _phi(s, score)
        if mask is not None:
            s = s + _index(mask, b, h, i, j)
        return s

    return score_mod


def _mask_mod(forbidden: Tensor | None, causal: bool) -> MaskMod:
    """``(b, h, i, j) -> allowed``: not ``forbidden[b, h, i, j]``, and ``j <= i`` if causal."""

    def mask_mod(b: Tensor, h: Tensor, i: Tensor, j: Tensor) -> Tensor:
        if forbidden is None:
            return j <= i
        allowed = ~_index(forbidden, b, h, i, j)
        return allowed & (j <= i) if causal else allowed

    return mask_mod


def _make_block_mask(
    forbidden: Tensor | None, causal: bool, n: int, m: int, device: torch.device
) -> BlockMask:
    from torch.nn.attention.flex_attention import create_block_mask

    b = forbidden.shape[0] if forbidden is not None and forbidden.shape[0] > 1 else None
    h = forbidden.shape[1] if forbidden is not None and forbidden.shape[1] > 1 else None
    return create_block_mask(_mask_mod(forbidden, causal), b, h, n, m, device=device)


@functools.lru_cache(maxsize=16)
def _causal_block_mask(n: int, m: int, device: torch.device) -> BlockMask:
    """The causal block mask of ``n`` queries and ``m`` keys (a constant: cached in eager code)."""
    return _make_block_mask(None, True, n, m, device)


def _block_mask(forbidden: Tensor | None, causal: bool, n: int, m: int, dev: torch.device) -> Any:
    """The block mask of a boolean mask and/or causality, or None (every key allowed)."""
    if forbidden is None and not causal:
        return None
    if forbidden is None and not torch.compiler.is_compiling():
        return _causal_block_mask(n, m, dev)
    return _make_block_mask(forbidden, causal, n, m, dev)


# One compiled FlexAttention per score: Dynamo keeps its compiled variants per code object
# (at most torch._dynamo.config.recompile_limit of them), and each score's variants (static
# then dynamic lengths, masks) would otherwise crowd out the others'.


def _flex(q: Tensor, k: Tensor, v: Tensor, mod: Any, block: Any, opts: Any) -> Tensor:
    from torch.nn.attention.flex_attention import flex_attention

    out: Tensor = flex_attention(
        q, k, v, score_mod=mod, block_mask=block, scale=1.0, kernel_options=opts
    )
    return out


def _flex_distance(q: Tensor, k: Tensor, v: Tensor, mod: Any, block: Any, opts: Any) -> Tensor:
    return _flex(q, k, v, mod, block, opts)


def _flex_squared(q: Tensor, k: Tensor, v: Tensor, mod: Any, block: Any, opts: Any) -> Tensor:
    return _flex(q, k, v, mod, block, opts)


def _flex_cosh(q: Tensor, k: Tensor, v: Tensor, mod: Any, block: Any, opts: Any) -> Tensor:
    return _flex(q, k, v, mod, block, opts)


_BY_SCORE = {"distance": _flex_distance, "squared": _flex_squared, "cosh": _flex_cosh}


@functools.cache
def _compiled(score: str) -> Callable[..., Tensor]:
    return cast(Callable[..., Tensor], torch.compile(_BY_SCORE[score]))


def _compiled_route(q: Tensor, dtype: torch.dtype) -> bool:
    """Whether a call outside ``torch.compile`` runs the compiled FlexAttention: on CUDA below
    float64 (the fused kernel). Elsewhere FlexAttention runs uncompiled (see the module
    docstring)."""
    return q.is_cuda and dtype != torch.float64


def _check_inputs(hq: Tensor, hk: Tensor, hv: Tensor) -> None:
    for name, t in (("hq", hq), ("hk", hk), ("hv", hv)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must have a floating dtype, got {t.dtype}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D (B, H, L, W), got shape {tuple(t.shape)}")
        if t.device != hq.device:
            raise ValueError(f"{name} is on {t.device}, hq on {hq.device}")
    if hq.shape[-1] != hk.shape[-1] or hq.shape[-1] < 2:
        raise ValueError(
            f"hq and hk must have the same width W >= 2 (time coordinate first), got "
            f"{hq.shape[-1]} and {hk.shape[-1]}"
        )
    if hq.shape[:2] != hk.shape[:2] or hk.shape[:3] != hv.shape[:3]:
        raise ValueError(
            f"hq (B, H, N, W), hk (B, H, M, W) and hv (B, H, M, Wv) must agree in B, H and M, "
            f"got {tuple(hq.shape)}, {tuple(hk.shape)}, {tuple(hv.shape)}"
        )
    if hk.shape[2] < 1:
        raise ValueError("hk must hold at least one key")


def _check_broadcast(t: Tensor, name: str, shape: tuple[int, ...]) -> Tensor:
    """``t`` as a 4-D tensor, raising unless it broadcasts to ``shape`` (4-D)."""
    if t.dim() > 4:
        raise ValueError(f"{name} of shape {tuple(t.shape)} does not broadcast to {shape}")
    t4 = t.reshape((1,) * (4 - t.dim()) + tuple(t.shape))
    if any(a not in (1, b) for a, b in zip(t4.shape, shape, strict=True)):
        raise ValueError(f"{name} of shape {tuple(t.shape)} does not broadcast to {shape}")
    return t4


def _check_options(
    beta: Tensor, c: float | Tensor, mask: Tensor | None, causal: bool, hq: Tensor
) -> None:
    if not isinstance(beta, Tensor):
        raise TypeError(f"beta must be a torch.Tensor, got {type(beta).__name__}")
    if not beta.is_floating_point():
        raise TypeError(f"beta must have a floating dtype, got {beta.dtype}")
    check_curvature_arg(c)
    if isinstance(c, Tensor) and c.dim() != 0:
        raise ValueError(f"c must be a float or a 0-d tensor, got shape {tuple(c.shape)}")
    if mask is not None:
        if not isinstance(mask, Tensor):
            raise TypeError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
        if not (mask.dtype == torch.bool or mask.is_floating_point()):
            raise TypeError(f"mask must be a bool or floating tensor, got {mask.dtype}")
        if mask.device != hq.device:
            raise ValueError(f"mask is on {mask.device}, hq on {hq.device}")
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")


def _no_backward_here(device: torch.device, *tensors: Tensor | float | None) -> None:
    """FlexAttention has no backward pass on the CPU (or MPS): say so before it is recorded."""
    if device.type not in ("cpu", "mps") or not torch.is_grad_enabled():
        return
    if any(isinstance(t, Tensor) and t.requires_grad for t in tensors):
        raise NotImplementedError(
            f"flex_lorentz_attention: FlexAttention has no backward pass on {device.type} "
            f"(torch {torch.__version__}); call it under torch.no_grad() there, or use the "
            f"'gram' path of the attention"
        )


def _encode(
    hq: Tensor,
    hk: Tensor,
    hv: Tensor,
    beta4: Tensor,
    c: float | Tensor,
    score: str,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """``(q, k, v, beta_eff)`` in ``dtype``, widths padded to :data:`MIN_WIDTH`.

    ``q = cJ h_q`` so that ``q . k = g``; for ``"cosh"``, whose score ``-beta (g - 1)`` is
    ``-beta g`` up to a constant of each row (which the softmax cancels), ``q = -beta cJ h_q``
    and no ``score_mod`` is needed (as on the ``"sdpa"`` path); otherwise ``beta_eff`` is
    ``beta / s_c`` (``"distance"``) or ``beta / c`` (``"squared"``), of shape (B or 1, H or 1),
    so that the ``score_mod`` needs only :math:`s_c d` and no curvature.
    """
    width = max(MIN_WIDTH, hq.shape[-1])
    cq = c.to(dtype) if isinstance(c, Tensor) else c
    sign = torch.full((hq.shape[-1],), -1.0, dtype=dtype, device=hq.device)
    sign[0] = 1.0
    beta_d = beta4.to(dtype)
    beta_eff: Tensor | None = None
    if score == "cosh":
        q = hq.to(dtype) * ((-beta_d * cq) * sign)
    else:
        q = hq.to(dtype) * (sign * cq)
        root = cq.sqrt() if isinstance(cq, Tensor) else math.sqrt(cq)
        beta_eff = beta_d[:, :, 0, 0] / (root if score == "distance" else cq)
    k = hk.to(dtype)
    pad = width - hq.shape[-1]
    if pad:
        q, k = (torch.nn.functional.pad(t, (0, pad)) for t in (q, k))
    v = hv.to(dtype)
    if v.shape[-1] < MIN_WIDTH:
        v = torch.nn.functional.pad(v, (0, MIN_WIDTH - v.shape[-1]))
    return q, k, v, beta_eff


def flex_lorentz_attention(
    hq: Tensor,
    hk: Tensor,
    hv: Tensor,
    beta: Tensor,
    *,
    c: float | Tensor,
    score: str,
    mask: Tensor | None,
    causal: bool,
) -> Tensor:
    r"""``w @ hv``: the value sums of the hyperbolic attention with explicit scores, on
    FlexAttention.

    With :math:`g_{ij} = -c\langle h_{q_i}, h_{k_j}\rangle_L = c(h_{q_i0}h_{k_j0} -
    \langle h_{q_is}, h_{k_js}\rangle) = \cosh(s_c d_{ij})` (:math:`s_c = \sqrt c`), the
    weights are :math:`w_{ij} = \operatorname{softmax}_j(-\beta f(d_{ij}) + m_{ij})` with
    :math:`f = d = \operatorname{arcosh}(g)/s_c` (``"distance"``), :math:`d^2` (``"squared"``)
    or :math:`g - 1` (``"cosh"``), and the result is :math:`\sum_j w_{ij} h_{v_j}`: the
    ``agg`` of the ``"gram"`` path of :func:`poincare.nn.functional._attend`, from which
    :func:`poincare._fused.midpoint_logmap0` forms the midpoints. The Gram entry is
    FlexAttention's dot product (queries :math:`cJh_q`, scale 1); a ``score_mod`` forms
    :math:`-(\beta_h/s_c)\operatorname{arcosh}(1 + \max(g - 1, 0))` (or
    :math:`-(\beta_h/c)\operatorname{arcosh}^2`) with
    :math:`\operatorname{arcosh}(1+x) = \log(1 + x + \sqrt{x(x+2)})`, indexing ``beta`` by batch
    and head. ``"cosh"`` folds :math:`-\beta` into the queries instead (its score is
    :math:`-\beta g` up to a constant per row) and needs no ``score_mod``. Causality and a
    boolean ``mask`` become a block mask (forbidden blocks are skipped); a float ``mask`` is
    added in the ``score_mod``.

    Precision. The Gram entry is a product in the run dtype (float32 on CUDA, see below) of
    terms of size :math:`c\,h_{q0}h_{k0} = \cosh(s_c r_q)\cosh(s_c r_k)`, so :math:`g - 1`
    carries an absolute error of about :math:`\epsilon\,c\,h_{q0}h_{k0}`: it cancels for close
    pairs (equal points get :math:`s_c d \approx \sqrt{2\epsilon}\cosh(s_c r)` instead of 0),
    which the ``"gram"`` path corrects from the differences of the coordinates and this path
    does not. Measured on the CPU forward (FlexAttention's reference implementation: the same
    product and ``score_mod`` in the same dtype as the CUDA kernel) against the ``"gram"`` path
    in float64, for 2 x 3 heads of 8 queries at hyperbolic radius up to :math:`2.5/s_c` (one on
    it: :math:`\cosh^2(s_c r) = 37.6`) and 12 keys, 8 of them the queries moved by 0,
    :math:`10^{-8}, \dots, 1` (over :math:`s_c`), :math:`c \in \{10^{-4}, 0.1, 1, 100\}`,
    ``beta`` 1 (``distance``, ``cosh``) or :math:`c` (``squared``), the float32 inputs being the
    float64 coordinates rounded: the largest absolute error of the scores :math:`-\beta f`
    (times :math:`s_c` for ``distance``: the error of :math:`s_c d`), of the weights, and of
    the sums ``w @ hv`` relative to the largest value coordinate:

    ==========  ========  ========  ========  ========  ========  ========
    score       scores    weights   sums      scores    weights   sums
                float32   float32   float32   float64   float64   float64
    ==========  ========  ========  ========  ========  ========  ========
    distance    3.7e-3    6.0e-4    3.4e-4    2.2e-7    3.7e-8    2.6e-8
    squared     1.4e-5    1.3e-6    8.1e-7    4.3e-14   1.5e-15   9.3e-16
    cosh        1.3e-5    6.6e-7    3.9e-7    2.3e-14   1.4e-15   1.3e-15
    ==========  ========  ========  ========  ========  ========  ========

    All of it comes from the closest pairs: :math:`\delta g \approx 1.5\,\epsilon\cosh^2(s_c r)`,
    which ``squared`` and ``cosh`` carry as it is (about :math:`2\delta g` and :math:`\delta g`)
    and ``distance`` as :math:`\sqrt{2\delta g}` (the square root of the cancellation: half the
    digits, :math:`3.7\cdot10^{-3}` in float32 where the ``"gram"`` path is within a few
    :math:`\epsilon`). Pairs at a distance :math:`d` carry about
    :math:`\epsilon\cosh^2(s_c r)/\sinh(s_c d)` instead, and far-out heads (beyond
    :data:`poincare.nn.functional.FAR_COSH`) lose :math:`\epsilon\,\cosh^2(s_c r)` in ``g``
    itself: keep them on the ``"points"`` path.

    dtype. It runs in the compute dtype of the inputs (:func:`poincare.compute_dtype`: float16
    and bfloat16 in float32). On CUDA that is float32, with the dot products forced to IEEE
    float32 (``kernel_options`` ``FLOAT32_PRECISION='ieee'``) whatever
    ``torch.backends.cuda.matmul`` allows: TF32's 10-bit mantissa would make the error of
    :math:`g - 1` about :math:`5\cdot10^{-4}\,c\,h_{q0}h_{k0}`. Not float64: FlexAttention's
    CUDA kernel keeps its softmax statistics and its accumulator in float32 whatever the
    inputs, so float64 inputs run its uncompiled reference implementation instead (the
    ``N x M`` scores formed, like the ``"points"`` path, which is where float64 calls belong).

    Args:
        hq: (B, H, N, W) Lorentz coordinates of the query head points, time coordinate first
            (trailing zero columns allowed).
        hk: (B, H, M, W) those of the keys, ``M >= 1``.
        hv: (B, H, M, Wv) those of the values.
        beta: positive temperatures, broadcastable to (B, H, 1, 1) (e.g. (H, 1, 1) or 0-d).
            Their sign is not checked (that would read a tensor back to the host).
        c: the curvature, a positive float or a 0-d tensor (which may require grad).
        score: ``"distance"`` (or ``"regular"``), ``"squared"`` or ``"cosh"``.
        mask: None, a boolean mask (True = forbidden) or an additive float mask (``-inf`` =
            forbidden), broadcastable to (B, H, N, M).
        causal: forbid key ``j > i`` for query ``i`` (combined with ``mask``).

    Returns:
        (B, H, N, Wv) in the run dtype: the weighted sums of the value coordinates. A row whose
        keys are all forbidden gets zeros (which :func:`poincare._fused.midpoint_logmap0`
        turns into the origin).

    Raises:
        TypeError: an argument that is not a tensor (``hq``, ``hk``, ``hv``, ``beta``,
            ``mask``), an integer dtype, a mask that is neither bool nor floating, a
            non-bool ``causal``, a curvature that is not a number or tensor.
        ValueError: wrong ranks or shapes (``hq``, ``hk``, ``hv`` not 4-D or disagreeing in B,
            H, M or W; ``beta`` or ``mask`` not broadcastable), tensors on different devices,
            an unknown ``score``, a curvature that is not positive and finite or not 0-d.
        NotImplementedError: a call recording gradients on the CPU (FlexAttention has no
            backward pass there).
    """
    from .functional import canonical_score

    _check_inputs(hq, hk, hv)
    name = canonical_score(score)
    _check_options(beta, c, mask, causal, hq)
    b, h, n, m = hq.shape[0], hq.shape[1], hq.shape[2], hk.shape[2]
    beta4 = _check_broadcast(beta, "beta", (b, h, 1, 1))
    mask4 = None if mask is None else _check_broadcast(mask, "mask", (b, h, n, m))
    _no_backward_here(hq.device, hq, hk, hv, beta, c, mask)
    dtype = compute_dtype(torch.promote_types(torch.promote_types(hq.dtype, hk.dtype), hv.dtype))
    q, k, v, beta_eff = _encode(hq, hk, hv, beta4, c, name, dtype)
    forbidden = mask4 if mask4 is not None and mask4.dtype == torch.bool else None
    additive = None if mask4 is None or forbidden is not None else mask4.to(dtype)
    mod = _score_mod(name, beta_eff, additive)
    block = _block_mask(forbidden, causal, n, m, q.device)
    opts = {"FLOAT32_PRECISION": "'ieee'"} if q.is_cuda and dtype == torch.float32 else None
    compiled = _compiled_route(q, dtype) and not torch.compiler.is_compiling()
    run = _compiled(name) if compiled else _BY_SCORE[name]
    out = run(q, k, v, mod, block, opts)
    return out[..., : hv.shape[-1]]
