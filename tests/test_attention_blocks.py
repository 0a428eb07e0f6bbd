"""The blockwise explicit-score attention: blocks of queries, each recomputed in the backward
pass, against the same computation in one block (values, gradients, masks, dropout), and the
memory it holds for backward."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

import poincare
import poincare.nn.functional as NF
from poincare.nn import HyperbolicMultiHeadAttention

F64 = torch.float64


@pytest.fixture(autouse=True)
def _thin_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks as thin as BLOCK_ELEMENTS makes them (a few rows here, several blocks per call)."""
    monkeypatch.setattr(NF, "MIN_ROWS", 1)


pytestmark = pytest.mark.usefixtures("one_thread")


def _points(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float32) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return poincare.expmap0(torch.randn(*shape, generator=g, dtype=F64) * 0.6).to(dtype)


def _run(
    m: HyperbolicMultiHeadAttention, x: Tensor, block_elements: int, **kwargs: Any
) -> tuple[Tensor, ...]:
    """Output and gradients (input, in-projection, beta) of ``m(x, x, x).square().sum()``."""
    before = NF.BLOCK_ELEMENTS
    NF.BLOCK_ELEMENTS = block_elements
    try:
        m.zero_grad()
        xx = x.detach().requires_grad_(True)
        out = m(xx, xx, xx, **kwargs)[0]
        out.square().sum().backward()  # type: ignore[no-untyped-call]
    finally:
        NF.BLOCK_ELEMENTS = before
    assert xx.grad is not None and m.in_proj_weight is not None
    assert m.in_proj_weight.grad is not None and m.beta_raw.grad is not None
    return out.detach(), xx.grad, m.in_proj_weight.grad.clone(), m.beta_raw.grad.clone()


def _close(a: tuple[Tensor, ...], b: tuple[Tensor, ...], rtol: float) -> None:
    for u, v in zip(a, b, strict=True):
        scale = v.abs().max().clamp(min=1e-30)
        assert ((u - v).abs().max() / scale).item() <= rtol


@pytest.mark.parametrize("score", ["distance", "squared", "cosh"])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("mask", ["none", "causal", "padding"])
def test_blocks_match_one_block(score: str, dtype: torch.dtype, mask: str) -> None:
    """Blocks of 3 query rows (with a ragged last block) give the one-block values and
    gradients, up to rounding (float32 on the Lorentz "gram" path, float64 on the "points"
    path; ``cosh`` with weights also takes the explicit path): the blocks' backward pass forms
    the weights from a log-sum-exp and the softmax's gradient in closed form, which rounds
    differently from autograd's softmax."""
    torch.manual_seed(0)
    m = HyperbolicMultiHeadAttention(16, 2, score=score).to(dtype)
    x = _points((2, 23, 16), seed=1, dtype=dtype)
    kwargs: dict[str, Any] = {"need_weights": score == "cosh"}
    if mask == "causal":
        kwargs["is_causal"] = True
        kwargs["attn_mask"] = torch.ones(23, 23, dtype=torch.bool).triu(1)
    elif mask == "padding":
        pad = torch.zeros(2, 23, dtype=torch.bool)
        pad[1, 17:] = True
        kwargs["key_padding_mask"] = pad
    one = _run(m, x, 1 << 30, **kwargs)
    blocks = _run(m, x, 2 * 23 * 3, **kwargs)
    rtol = 1e-5 if dtype == torch.float32 else 1e-10
    _close(blocks, one, rtol)


def test_blocks_causal_without_a_mask_tensor() -> None:
    """``is_causal`` alone (no mask tensor) offsets each block's causal mask by its first row."""
    torch.manual_seed(0)
    q, k, v = (_points((2, 3, 19, 8), seed=s) for s in (1, 2, 3))
    outs = []
    for elements in (1 << 30, 2 * 3 * 19 * 4):
        NF.BLOCK_ELEMENTS, before = elements, NF.BLOCK_ELEMENTS
        try:
            qq = q.detach().requires_grad_(True)
            o = NF.hyperbolic_attention(qq, k, v, score="distance", is_causal=True)[0]
            o.square().sum().backward()  # type: ignore[no-untyped-call]
        finally:
            NF.BLOCK_ELEMENTS = before
        assert qq.grad is not None
        outs.append((o.detach(), qq.grad))
    _close(outs[1], outs[0], 1e-5)
    # the first query sees only the first key: its output is the first value
    assert poincare.dist(outs[0][0][..., 0, :], v[..., 0, :]).max().item() < 1e-5


def test_blocks_with_dropout_recompute_the_same_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """With dropout, the recomputation of a block draws the dropout mask of its forward pass:
    the gradients equal those of the same blocks kept by autograd (no recomputation)."""
    torch.manual_seed(0)
    m = HyperbolicMultiHeadAttention(16, 2, score="distance", dropout=0.3)
    x = _points((2, 23, 16), seed=1)
    torch.manual_seed(5)
    recomputed = _run(m, x, 2 * 23 * 4)

    def kept(fn: Callable[..., Tensor], *args: Any, **_: Any) -> Tensor:
        return fn(*args)

    monkeypatch.setattr(NF, "checkpoint", kept)
    torch.manual_seed(5)
    stored = _run(m, x, 2 * 23 * 4)
    _close(recomputed, stored, 1e-6)


def _saved_bytes(m: HyperbolicMultiHeadAttention, x: Tensor) -> int:
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t

    xx = x.detach().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = m(xx, xx, xx)[0]
    out.sum().backward()  # type: ignore[no-untyped-call]
    return sum(seen.values())


@pytest.mark.parametrize("score", ["distance", "squared", "cosh"])
def test_no_n_by_n_matrix_is_saved_for_backward(score: str) -> None:
    """Doubling N doubles (not quadruples) what a training step holds for backward: the
    largest saved storage is per token, and the total is below one N x N float32 matrix per
    head."""
    torch.manual_seed(0)
    m = HyperbolicMultiHeadAttention(16, 4, score=score)
    sizes = [_saved_bytes(m, _points((1, n, 16), seed=n)) for n in (512, 1024)]
    assert sizes[1] < 2.2 * sizes[0]
    assert sizes[1] < 4 * 1024 * 1024 * 4


@pytest.mark.parametrize("score", ["distance", "cosh"])
def test_blocks_compile_in_one_graph(score: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The blocks (checkpointed, with their recomputation) trace into one graph with
    ``fullgraph=True`` and give the eager values and gradients."""
    monkeypatch.setattr(NF, "BLOCK_ELEMENTS", 2 * 2 * 11 * 4)
    torch.manual_seed(0)
    m = HyperbolicMultiHeadAttention(8, 2, score=score)
    x = _points((2, 11, 8), seed=3)

    def step(xx: Tensor) -> Tensor:
        out: Tensor = m(xx, xx, xx, need_weights=False)[0]
        return out.square().sum()

    torch._dynamo.reset()
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    results = []
    for fn in (step, compiled):
        m.zero_grad()
        xx = x.detach().requires_grad_(True)
        loss = fn(xx)
        loss.backward()  # type: ignore[no-untyped-call]
        assert xx.grad is not None and m.in_proj_weight is not None
        assert m.in_proj_weight.grad is not None
        results.append((loss.detach(), xx.grad, m.in_proj_weight.grad.clone()))
    _close(results[1], results[0], 1e-5)


def test_blocks_under_vmap_match_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside ``torch.func`` transforms (no saved-tensor hooks there) the blocks run without
    recomputation: ``vmap`` of the per-sample gradient equals the loop over samples."""
    monkeypatch.setattr(NF, "BLOCK_ELEMENTS", 2 * 13 * 3)
    q, k, v = (_points((3, 2, 13, 8), seed=s) for s in (4, 5, 6))

    def loss(qi: Tensor, ki: Tensor, vi: Tensor) -> Tensor:
        return NF.hyperbolic_attention(qi, ki, vi, score="squared")[0].square().sum()

    batched = torch.func.vmap(torch.func.grad(loss))(q, k, v)
    looped = torch.stack([torch.func.grad(loss)(q[i], k[i], v[i]) for i in range(3)])
    _close((batched,), (looped,), 1e-5)
