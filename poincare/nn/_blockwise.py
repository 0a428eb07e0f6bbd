r"""Attention with explicit scores, block by block, holding no ``N x M`` matrix for backward.

For queries :math:`q_i`, keys :math:`k_j`, values :math:`v_j` and any differentiable score
function :math:`s_{ij} = S(q_i, k_j)` (plus an additive mask), the output is
:math:`o_i = \sum_j w_{ij} v_j` with :math:`w_{ij} = \operatorname{softmax}_j s_{ij}`.

Forward: per block of query rows, the scores, their row maximum :math:`m_i`, the weights and
the log-sum-exp :math:`\ell_i = m_i + \log\sum_j e^{s_{ij} - m_i}`; only :math:`o` and
:math:`\ell` (per row) are kept. Backward, per block again: the scores are recomputed with
autograd, :math:`w_{ij} = e^{s_{ij} - \ell_i}` (the forward weights, to the rounding of
:math:`\ell`), and with :math:`\bar o` the incoming gradient,

* :math:`\bar v_j = \sum_i w_{ij}\bar o_i`;
* :math:`\bar s_{ij} = w_{ij}(\langle\bar o_i, v_j\rangle - \langle\bar o_i, o_i\rangle)`
  (the softmax's backward, with :math:`\sum_j w_{ij}\langle\bar o_i, v_j\rangle =
  \langle\bar o_i, o_i\rangle`);
* the gradients of the score function's inputs are those of
  :math:`\sum_{ij}\bar s_{ij}s_{ij}` (``torch.autograd.grad`` of the block's scores).

A block's working set is a few ``rows x M`` matrices, so every pass stays in cache, and the
output is written into one buffer (which also keeps the heap from fragmenting into one small
block output between large temporaries). The recomputation costs one more evaluation of the
scores; it replaces the storage of the scores, the weights and every intermediate of the score
function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._checks import _broadcast

#: ``score_fn(q_block, k, beta, c) -> (..., rows, M)`` scores (``c`` a tensor or None).
ScoreFn = Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor]


def _block_mask(
    mask: Tensor | None, causal: bool, start: int, rows: int, m: int, device: torch.device
) -> Tensor | None:
    """The additive mask (or the causal bool mask) of query rows ``start ... start + rows``."""
    if mask is not None:
        return mask[..., start : start + rows, :] if mask.shape[-2] != 1 else mask
    if causal:
        return torch.ones(rows, m, dtype=torch.bool, device=device).triu(start + 1)
    return None


def _masked(s: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return s
    if mask.dtype == torch.bool:
        return s.masked_fill(mask, float("-inf"))
    return s + mask.to(s.dtype)


class _BlockwiseAttention(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        score_fn: ScoreFn,
        rows: int,
        causal: bool,
        mask: Tensor | None,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        beta: Tensor,
        c: Tensor | None,
    ) -> Tensor:
        n, m = q.shape[-2], k.shape[-2]
        lead = tuple(q.shape[:-2])
        for t in (k, beta, v):
            lead = _broadcast(lead, tuple(t.shape[:-2]))
        out = torch.empty((*lead, n, v.shape[-1]), dtype=v.dtype, device=v.device)
        lse = torch.empty((*lead, n, 1), dtype=v.dtype, device=v.device)
        for start in range(0, n, rows):
            qb = q[..., start : start + rows, :]
            s = _masked(
                score_fn(qb, k, beta, c),
                _block_mask(mask, causal, start, qb.shape[-2], m, q.device),
            ).to(v.dtype)
            top = s.amax(dim=-1, keepdim=True)
            w = torch.exp(s - top)
            total = w.sum(dim=-1, keepdim=True)
            torch.matmul(w, v, out=out[..., start : start + rows, :])
            out[..., start : start + rows, :].div_(total)
            lse[..., start : start + rows, :] = top + total.log()
        ctx.score_fn, ctx.rows, ctx.causal = score_fn, rows, causal
        ctx.save_for_backward(q, k, v, beta, c, mask, out, lse)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        q, k, v, beta, c, mask, out, lse = ctx.saved_tensors
        score_fn: ScoreFn = ctx.score_fn
        rows: int = ctx.rows
        n, m = q.shape[-2], k.shape[-2]
        need_q, need_k, need_v, need_beta, need_c = ctx.needs_input_grad[4:9]
        grad_q = torch.zeros_like(q) if need_q else None
        grad_v = torch.zeros_like(v) if need_v else None
        grad_k = torch.zeros_like(k) if need_k else None
        grad_beta = torch.zeros_like(beta) if need_beta else None
        grad_c = torch.zeros_like(c) if need_c and c is not None else None
        # <grad_o_i, o_i> of every row, once
        row_dot = (grad_out * out).sum(dim=-1, keepdim=True)
        k_leaf = k.detach().requires_grad_(need_k)
        beta_leaf = beta.detach().requires_grad_(need_beta)
        c_leaf = None if c is None else c.detach().requires_grad_(grad_c is not None)
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            q_leaf = q[..., start:stop, :].detach().requires_grad_(need_q)
            go = grad_out[..., start:stop, :]
            with torch.enable_grad():
                s = _masked(
                    score_fn(q_leaf, k_leaf, beta_leaf, c_leaf),
                    _block_mask(mask, ctx.causal, start, stop - start, m, q.device),
                )
            w = torch.exp(s.detach().to(v.dtype) - lse[..., start:stop, :])
            if grad_v is not None:
                grad_v += torch.matmul(w.transpose(-1, -2), go).sum_to_size(grad_v.shape)
            grad_s = (torch.matmul(go, v.transpose(-1, -2)) - row_dot[..., start:stop, :]).mul_(w)
            inputs = [
                t for t in (q_leaf, k_leaf, beta_leaf, c_leaf) if t is not None and t.requires_grad
            ]
            if not inputs:
                continue
            found: list[Tensor | None] = list(
                torch.autograd.grad(s, inputs, grad_s.to(s.dtype), allow_unused=True)
            )
            grads = iter(found)
            for leaf, acc in ((q_leaf, None), (k_leaf, grad_k), (beta_leaf, grad_beta)):
                if not leaf.requires_grad:
                    continue
                g = next(grads)
                if g is None:
                    continue
                if leaf is q_leaf:
                    assert grad_q is not None
                    grad_q[..., start:stop, :] = g
                elif acc is not None:
                    acc += g
            if c_leaf is not None and c_leaf.requires_grad:
                g = next(grads)
                if g is not None and grad_c is not None:
                    grad_c += g
        return None, None, None, None, grad_q, grad_k, grad_v, grad_beta, grad_c


def blockwise_attention(
    score_fn: ScoreFn,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    c: Tensor | None,
    *,
    rows: int,
    mask: Tensor | None = None,
    causal: bool = False,
) -> Tensor:
    r""":math:`\operatorname{softmax}_j(S(q_i, k_j) + \text{mask}_{ij})\,v`, ``rows`` queries
    at a time (see the module docstring).

    Args:
        score_fn: ``(q_block (..., r, D), k (..., M, D), beta, c) -> (..., r, M)`` scores,
            differentiable in its tensor arguments.
        q: (..., N, D) queries; k: (..., M, D) keys; v: (..., M, Dv) values (the dtype of the
            weights and of the output).
        beta: a temperature (or any tensor parameter of ``score_fn``), broadcastable.
        c: a tensor curvature passed to ``score_fn``, or None (a float curvature belongs in
            ``score_fn``'s closure).
        rows: queries per block, at least 1.
        mask: additive float mask broadcastable to (..., N, M) (no gradient), or None.
        causal: with no ``mask``, forbid key ``j > i`` for query ``i``.

    Returns:
        (..., N, Dv) in the dtype of ``v``. A row whose every key is masked gives NaN: callers
        unmask such rows first (as :func:`poincare.nn.functional.hyperbolic_attention` does).
    """
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    out: Tensor = _BlockwiseAttention.apply(score_fn, rows, causal, mask, q, k, v, beta, c)  # type: ignore[no-untyped-call]
    return out
