r"""The fused CPU kernel of the attention's explicit scores, and its custom operator.

For query and key Lorentz coordinates :math:`h_q, h_k` (float64), value coordinates
:math:`h_v` (float32, or float64 for far-out points), a temperature :math:`\beta` per slice
and a curvature :math:`c`, the operator computes, slice by slice (a slice is one batch entry
and head),

.. math::
    o_i = \sum_j \operatorname{softmax}_j\big(-\beta f(d_{ij}) + m_{ij}\big)\,h_{v,j},\qquad
    \cosh(\sqrt c\,d_{ij}) - 1 = g_{ij} - 1 = c(h_{q0}h_{k0} - \langle h_{qs}, h_{ks}\rangle) - 1,

with :math:`f(d) = d`, :math:`d^2` or :math:`g - 1` (``score`` 0, 1, 2), an additive mask
:math:`m` and optionally the causal mask (key :math:`j > i` forbidden). It is the pipeline of
the ``"gram"`` path of :func:`poincare.nn.functional._attend` in one pass over each block of
32 queries and 256 keys (``poincare/csrc/lorentz_attention.cpp``):

* the Gram entries in float64 (BLAS ``dgemm``), the close pairs (:math:`g - 1 \le 2^{-24}
  c\,h_{q0}h_{k0}`, where the product cancels) recomputed from the coordinate differences,
  as :func:`poincare._fused.lorentz_cosh_minus_one` does;
* the scores in float32 from :math:`g - 1` rounded once, with :math:`\sqrt{g - 1}` taken before
  the rounding, as :func:`poincare._fused.cosh_score` does (so the scores agree with the
  unfused path to float32 rounding);
* an online softmax and the value sums (``sgemm``, or ``dgemm`` for float64 values); only the
  output and the log-sum-exp per row are kept;
* dropout on the weights (optional): a weight is kept where a counter-based hash of (seed,
  slice, query, key) clears the threshold, so that the backward pass regenerates the mask;
* a backward pass that recomputes each block's scores and applies the closed-form softmax
  gradient: :math:`\bar s_{ij} = w_{ij}(\langle\bar o_i, h_{v,j}\rangle - \langle\bar o_i,
  o_i\rangle)`, then :math:`\bar g_{ij} = \bar s_{ij}\,\partial s/\partial g`, and the
  products :math:`\bar h_q = c\,\bar G h_k J`, :math:`\bar h_k = c\,\bar G^T h_q J`,
  :math:`\bar h_v = W^T\bar O` (in the values' dtype), with the gradients of :math:`\beta`
  and :math:`c`.
  As in FlashAttention, :math:`\langle\bar o_i, o_i\rangle` comes from the rounded output:
  in a row whose softmax saturates on one huge score, the gradients of :math:`\beta` and
  :math:`c` (exactly near 0 there) carry an absolute error of about
  :math:`\epsilon\,|\bar o_i|\,|h_{v,j}|\,f(d_{ij})`.

Memory is :math:`O(N)` per slice: no :math:`N\times M` matrix exists in either pass.

The kernel is C++ compiled with ``torch.utils.cpp_extension`` at first use (about a minute,
then cached in torch's extension directory). Where it cannot be built or loaded (no compiler,
a torch without the BLAS symbols), :func:`available` is False and the attention takes its
pure-PyTorch blockwise path, whose results agree within the numerical contract. Setting the
environment variable ``POINCARE_FUSED_ATTENTION=0`` turns the kernel off.

The operator ``poincare::lorentz_attention`` is registered with :mod:`torch.library`, with a
fake (meta) implementation and its autograd formula (the operator
``poincare::lorentz_attention_backward``), so that ``torch.compile(fullgraph=True)`` and
``torch.export`` see one node.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._checks import _broadcast

__all__ = [
    "available",
    "build",
    "dropout_mask",
    "fused_lorentz_attention",
    "kernel_scores",
    "unavailable_reason",
]

SCORE_CODES = {"distance": 0, "squared": 1, "cosh": 2}
_SOURCE = Path(__file__).resolve().parent.parent / "csrc" / "lorentz_attention.cpp"
_reason: list[str] = []
#: ``{"available": bool}`` once :func:`_module` has run (what traced code reads).
_STATE: dict[str, bool] = {}


def _flags() -> list[str]:
    """Compiler flags for the vectorised types of the running CPU (as Inductor chooses them)."""
    flags = ["-O3", "-fno-math-errno", "-fno-trapping-math"]
    capability = torch.backends.cpu.get_cpu_capability()
    if capability.startswith("AVX512"):
        flags += ["-DCPU_CAPABILITY_AVX512", "-mavx512f", "-mavx512dq", "-mavx512vl"]
        flags += ["-mavx512bw", "-mfma"]
    elif capability == "AVX2":
        flags += ["-DCPU_CAPABILITY_AVX2", "-mavx2", "-mfma"]
    return flags


@functools.cache
def _module() -> Any:
    """The compiled extension, or None (the reason in :func:`unavailable_reason`)."""
    if os.environ.get("POINCARE_FUSED_ATTENTION", "1") == "0":
        _reason.append("turned off by POINCARE_FUSED_ATTENTION=0")
        _STATE["available"] = False
        return None
    try:
        from torch.utils import cpp_extension

        source = _SOURCE.read_bytes()
        flags = _flags()
        digest = hashlib.sha256(source + " ".join(flags).encode()).hexdigest()[:12]
        cpp_extension.load(
            name=f"poincare_lorentz_attention_{digest}",
            sources=[str(_SOURCE)],
            extra_cflags=flags,
            is_python_module=False,
            verbose=False,
        )
        module: Any = torch.ops.poincare_kernels
        _STATE["available"] = True
        return module
    except Exception as exc:  # no compiler, missing symbols, unwritable cache: the fallback
        _reason.append(f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1:]}")
        _STATE["available"] = False
        return None


def available() -> bool:
    """Whether the fused CPU kernel is built and loaded (building it on the first call). Traced
    by ``torch.compile``, it answers from the state of eager calls (False before any)."""
    if torch.compiler.is_compiling():
        return _STATE.get("available", False)
    return _module() is not None


def build() -> bool:
    """Build and load the kernel if that has not been tried yet; whether it is available.
    (Unlike :func:`available`, it builds even when called while ``torch.compile`` traces, as
    a constant-result function does.)"""
    return _module() is not None


def unavailable_reason() -> str | None:
    """Why the kernel is not available (None when it is, or before the first attempt)."""
    return _reason[0] if _reason else None


@torch.library.custom_op("poincare::lorentz_attention", mutates_args=())
def _lorentz_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    c: Tensor,
    mask: Tensor | None,
    mask_base: Tensor | None,
    mask_sn: int,
    mask_sm: int,
    score: int,
    causal: bool,
    dropout_p: float,
    seed: Tensor,
) -> tuple[Tensor, Tensor]:
    module = _module()
    if module is None:
        raise RuntimeError(f"the fused attention kernel is not available: {unavailable_reason()}")
    out, lse = module.forward(
        q,
        k,
        v,
        beta,
        float(c),
        mask,
        mask_base,
        mask_sn,
        mask_sm,
        score,
        causal,
        dropout_p,
        int(seed),
    )
    return out, lse


@_lorentz_attention.register_fake
def _(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    c: Tensor,
    mask: Tensor | None,
    mask_base: Tensor | None,
    mask_sn: int,
    mask_sm: int,
    score: int,
    causal: bool,
    dropout_p: float,
    seed: Tensor,
) -> tuple[Tensor, Tensor]:
    bh, n = q.shape[0], q.shape[1]
    return v.new_empty((bh, n, v.shape[2])), v.new_empty((bh, n), dtype=torch.float32)


@torch.library.custom_op("poincare::lorentz_attention_backward", mutates_args=())
def _lorentz_attention_backward(
    grad_out: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    c: Tensor,
    mask: Tensor | None,
    mask_base: Tensor | None,
    mask_sn: int,
    mask_sm: int,
    score: int,
    causal: bool,
    dropout_p: float,
    seed: Tensor,
    out: Tensor,
    lse: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    module = _module()
    if module is None:
        raise RuntimeError(f"the fused attention kernel is not available: {unavailable_reason()}")
    gq, gk, gv, gbeta, gc = module.backward(
        grad_out.contiguous(),
        q,
        k,
        v,
        beta,
        float(c),
        mask,
        mask_base,
        mask_sn,
        mask_sm,
        score,
        causal,
        dropout_p,
        int(seed),
        out,
        lse,
    )
    return gq, gk, gv, gbeta, gc


@_lorentz_attention_backward.register_fake
def _(
    grad_out: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    c: Tensor,
    mask: Tensor | None,
    mask_base: Tensor | None,
    mask_sn: int,
    mask_sm: int,
    score: int,
    causal: bool,
    dropout_p: float,
    seed: Tensor,
    out: Tensor,
    lse: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    f32 = torch.float32
    return (
        q.new_empty(q.shape, dtype=f32),
        k.new_empty(k.shape, dtype=f32),
        v.new_empty(v.shape),
        q.new_empty((q.shape[0],)),
        q.new_empty((q.shape[0],)),
    )


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
    q, k, v, beta, c, mask, mask_base, mask_sn, mask_sm, score, causal, dropout_p, seed = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, beta, c, mask, mask_base, seed, out, lse)
    ctx.rest = (mask_sn, mask_sm, score, causal, dropout_p)


def _backward(ctx: Any, grad_out: Tensor, _grad_lse: Tensor) -> tuple[Tensor | None, ...]:
    q, k, v, beta, c, mask, mask_base, seed, out, lse = ctx.saved_tensors
    mask_sn, mask_sm, score, causal, dropout_p = ctx.rest
    gq, gk, gv, gbeta, gc = _lorentz_attention_backward(
        grad_out,
        q,
        k,
        v,
        beta,
        c,
        mask,
        mask_base,
        mask_sn,
        mask_sm,
        score,
        causal,
        dropout_p,
        seed,
        out,
        lse,
    )
    return (
        gq.to(q.dtype),
        gk.to(k.dtype),
        gv,
        gbeta.to(beta.dtype),
        gc.sum().to(c.dtype).reshape(c.shape),
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
    )


_lorentz_attention.register_autograd(_backward, setup_context=_setup_context)


def _signed(hq: Tensor) -> Tensor:
    """``hq J``: the query coordinates with their space part negated (the kernel's Gram product
    is then a plain dot product)."""
    sign = torch.full((hq.shape[-1],), -1.0, dtype=hq.dtype, device=hq.device)
    sign[0] = 1.0
    return hq * sign


def _flat_mask(mask: Tensor, lead: tuple[int, ...], n: int, m: int) -> tuple[Tensor, Tensor]:
    """The float32 additive mask broadcast to ``(*lead, n, m)`` without copying, and the
    element offset of each leading index (flattened) into it."""
    full = mask.to(torch.float32).expand(*lead, n, m)
    base = torch.zeros((), dtype=torch.int64, device=mask.device)
    for size, stride in zip(lead, full.stride()[: len(lead)], strict=True):
        base = base.unsqueeze(-1) + torch.arange(size, device=mask.device) * stride
    return full, base.reshape(-1).contiguous()


def fused_lorentz_attention(
    hq: Tensor,
    hk: Tensor,
    hv: Tensor,
    beta: Tensor,
    *,
    c: float | Tensor,
    score: str,
    mask: Tensor | None,
    causal: bool,
    dropout_p: float = 0.0,
) -> Tensor:
    r"""``softmax_j(-beta f(d(q_i, k_j)) + mask_ij) @ hv`` in one fused pass (see the module
    docstring), with dropout on the weights if ``dropout_p > 0``.

    Args:
        hq: ``(..., N, W)`` float64 Lorentz coordinates of the queries (time first; extra zero
            columns are allowed).
        hk: ``(..., M, W)`` float64 Lorentz coordinates of the keys.
        hv: ``(..., M, V)`` float32 or float64 values (Lorentz coordinates of the value
            points; float64 for far-out ones, whose sums then stay in float64).
        beta: positive temperature broadcastable to ``(..., 1, 1)``.
        c: curvature, a float or a 0-d tensor (differentiable).
        score: ``"distance"``, ``"squared"`` or ``"cosh"``.
        mask: additive float mask broadcastable to ``(..., N, M)``, or None.
        causal: forbid key ``j > i`` for query ``i``.
        dropout_p: the probability, in ``[0, 1)``, that a weight is zeroed (the others are
            scaled by ``1/(1 - p)``, as :func:`torch.nn.functional.dropout` does). The mask is
            drawn from a seed that this call takes from torch's default generator (so
            ``torch.manual_seed`` makes it reproducible) through a counter-based hash of
            (seed, slice, query, key), which the backward pass evaluates again instead of
            storing an ``N x M`` mask. Its bits differ from those ``F.dropout`` would draw.

    Returns:
        ``(..., N, V)`` in ``hv``'s dtype: the weighted sums (rows whose keys are all masked
        give zeros).

    Raises:
        RuntimeError: if the kernel is not available (check :func:`available` first).
        ValueError: on dtypes or shapes other than the above.
    """
    if hq.dtype != torch.float64 or hk.dtype != torch.float64:
        raise ValueError(f"hq and hk must be float64, got {hq.dtype} and {hk.dtype}")
    if hv.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"hv must be float32 or float64, got {hv.dtype}")
    if score not in SCORE_CODES:
        raise ValueError(f"score must be one of {tuple(SCORE_CODES)}, got {score!r}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    n, m, w = hq.shape[-2], hk.shape[-2], hq.shape[-1]
    lead: tuple[int, ...] = ()
    for t in (hq, hk, hv, beta):
        lead = _broadcast(lead, tuple(t.shape[:-2]))
    bh = 1
    for size in lead:
        bh *= size
    q = _signed(hq).expand(*lead, n, w).reshape(bh, n, w).contiguous()
    k = hk.expand(*lead, m, w).reshape(bh, m, w).contiguous()
    v = hv.expand(*lead, m, hv.shape[-1]).reshape(bh, m, hv.shape[-1]).contiguous()
    b = beta.to(torch.float32).expand(*lead, 1, 1).reshape(bh).contiguous()
    c_t = (c if isinstance(c, Tensor) else torch.tensor(float(c))).to(torch.float64).reshape(())
    full: Tensor | None = None
    base: Tensor | None = None
    sn = sm = 0
    if mask is not None:
        full, base = _flat_mask(mask, tuple(lead), n, m)
        sn, sm = full.stride()[-2], full.stride()[-1]
    seed = _seed(hq.device) if dropout_p > 0.0 else torch.zeros((), dtype=torch.int64)
    out: Tensor = _lorentz_attention(
        q, k, v, b, c_t, full, base, sn, sm, SCORE_CODES[score], causal, dropout_p, seed
    )[0]
    return out.reshape(*lead, n, hv.shape[-1])


def _seed(device: torch.device) -> Tensor:
    """A 0-d int64 seed for the dropout hash, drawn from torch's default generator of
    ``device`` (a graph node under ``torch.compile``, not a Python number)."""
    return torch.randint(-(2**62), 2**62, (), dtype=torch.int64, device=device).cpu()


def dropout_mask(bh: int, n: int, m: int, dropout_p: float, seed: int) -> Tensor:
    """The factors ``z`` (0 or ``1/(1 - p)``) of every pair, ``(bh, n, m)`` float32, that the
    kernel applies to the weights for this ``seed`` (for tests against an unfused reference).

    Raises:
        RuntimeError: if the kernel is not available.
    """
    module = _module()
    if module is None:
        raise RuntimeError(f"the fused attention kernel is not available: {unavailable_reason()}")
    z: Tensor = module.dropout_mask(bh, n, m, dropout_p, seed)
    return z


def kernel_scores(hq: Tensor, hk: Tensor, beta: Tensor, *, c: float, score: str) -> Tensor:
    r"""The scores :math:`-\beta f(d_{ij})` of every pair exactly as the kernel forms them
    block by block (for tests of the kernel against exact references; the attention never
    forms this ``N x M`` matrix).

    Args:
        hq: ``(BH, N, W)`` and hk: ``(BH, M, W)`` float64 Lorentz coordinates (time first).
        beta: ``(BH,)`` float32 temperatures.
        c: the curvature.
        score: ``"distance"``, ``"squared"`` or ``"cosh"``.

    Returns:
        ``(BH, N, M)`` float32 scores.

    Raises:
        RuntimeError: if the kernel is not available.
    """
    module = _module()
    if module is None:
        raise RuntimeError(f"the fused attention kernel is not available: {unavailable_reason()}")
    out: Tensor = module.scores(
        _signed(hq).contiguous(), hk.contiguous(), beta.contiguous(), float(c), SCORE_CODES[score]
    )
    return out
