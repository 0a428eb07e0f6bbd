"""Forward hooks and pre-hooks on the attention of the transformer blocks, the stacks and the
video model fire once per run of a block, see the call as it is made (tangent vectors at the
origin in a pre-norm block, points in a post-norm one), and act on the block as PyTorch's
semantics say: a hook's returned output is what the block adds to its residual, a pre-hook
can ask for the weights."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

import poincare
from models.video import VideoFuturePredictor
from poincare.nn import (
    ConvHyperbolicTransformer,
    HyperbolicMultiHeadAttention,
    HyperbolicTransformer,
    HyperbolicTransformerBlock,
)

pytestmark = pytest.mark.usefixtures("one_thread")

B, T, E, HEADS = 2, 5, 8, 2
C = 0.7

Call = dict[str, Any]


def _points(*shape: int, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return poincare.expmap0(torch.randn(*shape, generator=g), c=C)


def _block(norm_first: bool = True, score: str = "distance") -> HyperbolicTransformerBlock:
    torch.manual_seed(0)
    return HyperbolicTransformerBlock(E, HEADS, 16, c=C, norm_first=norm_first, score=score).eval()


class Recorder:
    """Pre-hooks and forward hooks (with keywords) on every attention module under ``root``:
    each call appended as ``{"module", "args", "kwargs", "output"}``, the pre-hook's view in
    ``pre``."""

    def __init__(self, root: nn.Module) -> None:
        self.pre: list[Call] = []
        self.calls: list[Call] = []
        self.handles: list[RemovableHandle] = []
        for m in root.modules():
            if isinstance(m, HyperbolicMultiHeadAttention):
                self.handles.append(m.register_forward_pre_hook(self._pre, with_kwargs=True))
                self.handles.append(m.register_forward_hook(self._post, with_kwargs=True))

    def _pre(self, m: nn.Module, args: tuple[Any, ...], kwargs: Call) -> None:
        self.pre.append({"module": m, "args": args, "kwargs": dict(kwargs)})

    def _post(self, m: nn.Module, args: tuple[Any, ...], kwargs: Call, output: Any) -> None:
        self.calls.append({"module": m, "args": args, "kwargs": dict(kwargs), "output": output})

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@pytest.fixture
def recorder() -> Iterator[type[Recorder]]:
    made: list[Recorder] = []

    class Made(Recorder):
        def __init__(self, root: nn.Module) -> None:
            super().__init__(root)
            made.append(self)

    yield Made
    for r in made:
        r.remove()


def _rest_of_block(block: HyperbolicTransformerBlock, x: Tensor, a: Tensor) -> Tensor:
    """A pre-norm block in eval mode after its attention gave ``a`` (the block's own steps)."""
    y = poincare.mobius_add(x, a, c=C)
    return poincare.mobius_add(y, block.ff.forward_tangent(block.norm2.forward_tangent(y)), c=C)


def test_pre_norm_block_hooks_see_tangent_vectors_and_the_output_used(
    recorder: type[Recorder],
) -> None:
    block, x = _block(), _points(B, T, E)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[1, -1] = True
    rec = recorder(block)
    out = block(x, key_padding_mask=mask, is_causal=True)
    assert len(rec.pre) == 1 and len(rec.calls) == 1
    call = rec.calls[0]
    assert call["module"] is block.self_attn
    u = block.norm1.forward_tangent(x)
    assert len(call["args"]) == 3 and all(a is call["args"][0] for a in call["args"])
    assert torch.equal(call["args"][0], u)  # tangent vectors at the origin, not points
    kw = call["kwargs"]
    assert kw["tangent"] is True and kw["is_causal"] is True and kw["need_weights"] is False
    assert kw["key_padding_mask"] is mask and kw["attn_mask"] is None
    assert rec.pre[0]["args"] == call["args"] and rec.pre[0]["kwargs"] == kw
    a, weights = call["output"]
    assert a.shape == (B, T, E) and weights is None
    assert torch.equal(
        a, block.self_attn(u, u, u, tangent=True, key_padding_mask=mask, is_causal=True)[0]
    )
    torch.testing.assert_close(out, _rest_of_block(block, x, a), rtol=0, atol=0)


def test_post_norm_block_hooks_see_points(recorder: type[Recorder]) -> None:
    block, x = _block(norm_first=False), _points(B, T, E)
    rec = recorder(block)
    block(x)
    (call,) = rec.calls
    assert all(torch.equal(a, x) for a in call["args"]) and not call["kwargs"].get("tangent")
    assert call["output"][0].shape == (B, T, E)
    poincare.check_point(call["output"][0], c=C)


def test_forward_tangent_goes_through_the_hooks(recorder: type[Recorder]) -> None:
    block = _block()
    u = torch.randn(B, T, E)
    rec = recorder(block)
    got = block.self_attn.forward_tangent(u)
    (call,) = rec.calls
    assert call["kwargs"]["tangent"] is True and call["output"] is got
    p = poincare.expmap0(u, c=C)
    torch.testing.assert_close(got[0], block.self_attn(p, p, p)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm_first", [True, False])
def test_a_hook_that_returns_an_output_changes_the_block(norm_first: bool) -> None:
    block, x = _block(norm_first), _points(B, T, E)
    plain = block(x)
    # the origin as the attention's output: x ⊕ 0 = x, the block keeps only the feed-forward
    h = block.self_attn.register_forward_hook(lambda m, a, out: (torch.zeros_like(out[0]), None))
    try:
        hooked = block(x)
    finally:
        h.remove()
    assert not torch.allclose(hooked, plain)
    if norm_first:
        want = _rest_of_block(block, x, torch.zeros_like(x))
    else:
        want = block.norm2(poincare.mobius_add(y := block.norm1(x), block.ff(y), c=C))
    torch.testing.assert_close(hooked, want, rtol=0, atol=0)
    assert torch.equal(block(x), plain)  # removed: no trace left


def test_a_pre_hook_that_changes_the_inputs_changes_the_block() -> None:
    block, x = _block(), _points(B, T, E)
    plain = block(x)

    def zero_inputs(m: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return tuple(torch.zeros_like(a) for a in args)

    h = block.self_attn.register_forward_pre_hook(zero_inputs)
    try:
        hooked = block(x)
    finally:
        h.remove()
    z = torch.zeros(B, T, E)
    a = block.self_attn(z, z, z, tangent=True)[0]
    assert not torch.allclose(hooked, plain)
    torch.testing.assert_close(hooked, _rest_of_block(block, x, a), rtol=0, atol=0)


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("per_head", [True, False])
def test_recorded_weights_sum_to_one_over_keys(norm_first: bool, per_head: bool) -> None:
    """The recipe of the attention's docstring: a pre-hook asks for the weights, a forward
    hook keeps them; the block's output changes by no more than rounding (asking for weights
    takes the blockwise path instead of the fused kernel)."""
    block, x = _block(norm_first), _points(B, T, E)
    plain = block(x, is_causal=True)
    extra = {"average_attn_weights": False} if per_head else {}
    weights: list[Tensor] = []
    attn = block.self_attn
    ask = attn.register_forward_pre_hook(
        lambda m, args, kwargs: (args, {**kwargs, "need_weights": True, **extra}),
        with_kwargs=True,
    )
    keep = attn.register_forward_hook(lambda m, args, out: weights.append(out[1]))
    try:
        out = block(x, is_causal=True)
    finally:
        ask.remove()
        keep.remove()
    (w,) = weights
    shape = (B, HEADS, T, T) if per_head else (B, T, T)
    assert w.shape == shape
    torch.testing.assert_close(w.sum(-1), torch.ones(shape[:-1]))
    assert torch.all(w.triu(1) == 0)  # causal: no weight on later keys
    torch.testing.assert_close(out, plain, rtol=1e-6, atol=1e-6)


def test_hooks_fire_once_per_block_of_a_stack(recorder: type[Recorder]) -> None:
    torch.manual_seed(0)
    stack = HyperbolicTransformer(E, HEADS, 3, 16, c=C, causal=True).eval()
    x = _points(B, T, E)
    rec = recorder(stack)
    stack(x)
    stack.forward_tangent(x)
    attns = [layer.self_attn for layer in stack.layers]
    assert [c["module"] for c in rec.calls] == attns * 2
    assert [c["module"] for c in rec.pre] == attns * 2
    for call in rec.calls:
        assert call["args"][0].shape == (B, T, E) and call["output"][0].shape == (B, T, E)
        assert call["kwargs"]["is_causal"] is True and call["kwargs"]["tangent"] is True


@pytest.mark.parametrize("space_time", [False, True])
def test_hooks_fire_in_the_conv_transformer(recorder: type[Recorder], space_time: bool) -> None:
    torch.manual_seed(0)
    conv = ConvHyperbolicTransformer(3, E, HEADS, 2, space_time=space_time).eval()
    x = torch.randn(B, T, 3, 2, 4)  # (B, T, C, H, W)
    rec = recorder(conv)
    conv(x)
    temporal = [(layer.self_attn, (B * 8, T, E)) for layer in conv.transformer.layers]
    spatial = [(layer.self_attn, (B * T, 8, E)) for layer in conv.spatial_layers]
    if space_time:  # every layer: across locations, then over time
        order = [p for pair in zip(spatial, temporal, strict=True) for p in pair]
    else:
        order = temporal
    assert [(c["module"], tuple(c["args"][0].shape)) for c in rec.calls] == order


@pytest.mark.parametrize("space_time", [False, True])
def test_hooks_fire_in_the_video_model(recorder: type[Recorder], space_time: bool) -> None:
    torch.manual_seed(0)
    model = VideoFuturePredictor(
        num_seq=3,
        seq_len=2,
        pred_step=1,
        img_dim=16,
        feature_dim=E,
        encoder_width=4,
        hyperbolic=True,
        use_transformer=True,
        space_time=space_time,
        num_heads=HEADS,
        transformer_layers=1,
    ).eval()
    video = torch.rand(B, 3, 3, 2, 16, 16)
    plain, _ = model(video)
    rec = recorder(model)
    pred, _ = model(video)
    n_ctx, side = 2, 2  # num_seq - pred_step blocks; 16 px / 8
    shapes = [tuple(c["args"][0].shape) for c in rec.calls]
    want = [(B * n_ctx, side * side, E)] * space_time + [(B * side * side, n_ctx, E)]
    assert shapes == want and len(rec.pre) == len(want)
    assert all(c["kwargs"]["tangent"] is True for c in rec.calls)
    assert torch.equal(pred, plain)  # hooks that return nothing change nothing


def test_hooks_fire_inside_a_compiled_block() -> None:
    """``torch.compile(fullgraph=True)`` traces the hooks with the block, in one graph."""
    torch._dynamo.reset()
    block, x = _block(), _points(B, T, E)
    seen: list[Tensor] = []
    h = block.self_attn.register_forward_hook(lambda m, args, out: seen.append(out[0]))
    try:
        compiled = torch.compile(block, fullgraph=True, backend="eager")
        out = compiled(x)
    finally:
        h.remove()
    (a,) = seen
    assert a.shape == (B, T, E)
    torch.testing.assert_close(out, block(x))
    torch.testing.assert_close(out, _rest_of_block(block, x, a))
