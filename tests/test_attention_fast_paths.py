"""The closed-form paths of the hyperbolic attention module: float32 against float64, the
memory-efficient recomputation, tangent inputs, and the curvature gradient of every path.

The kernels themselves (their hand-written backward passes and their accuracy against mpmath)
are tested in ``tests/test_fused.py`` and ``tests/test_property_fused.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torch.func import functional_call

import poincare
from poincare.nn import HyperbolicLinear, HyperbolicMultiHeadAttention, HyperbolicTransformerBlock

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _pair(score: str, c: float, bias: bool) -> tuple[HyperbolicMultiHeadAttention, ...]:
    torch.manual_seed(0)
    m32 = HyperbolicMultiHeadAttention(16, 4, score=score, c=c, bias=bias)
    m64 = HyperbolicMultiHeadAttention(16, 4, score=score, c=c, bias=bias).double()
    m64.load_state_dict({k: v.double() for k, v in m32.state_dict().items()})
    return m32, m64


def _points(shape: tuple[int, ...], radius: float, c: float, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.nn.functional.normalize(torch.randn(*shape, dtype=F64, generator=g), dim=-1)
    r = torch.rand(*shape[:-1], 1, dtype=F64, generator=g) * radius
    return poincare.project(poincare.expmap0(u * r / 2, c=c).float(), c=c)


@pytest.mark.parametrize("score", ["cosh", "distance", "squared"])
@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize(("c", "bias"), [(1.0, True), (0.5, True), (2.0, False)])
def test_float32_module_matches_float64_values_and_gradients(
    score: str, need_weights: bool, c: float, bias: bool
) -> None:
    """The float32 closed-form paths against the same module in float64 (self- and cross-
    attention, causal), values in hyperbolic distance and gradients relatively."""
    m32, m64 = _pair(score, c, bias)
    x = _points((2, 7, 16), 4.0 / math.sqrt(c), c, seed=1)
    kv = _points((2, 5, 16), 4.0 / math.sqrt(c), c, seed=2)
    for q_in, k_in, causal in ((x, x, True), (x, kv, False)):
        outs, grads = [], []
        for m, dt in ((m32, torch.float32), (m64, F64)):
            q = q_in.detach().to(dt).requires_grad_(True)
            k = q if k_in is q_in else k_in.detach().to(dt)
            out, w = m(q, k, k, need_weights=need_weights, is_causal=causal)
            assert (w is not None) == need_weights
            poincare.dist0(out, c=c).sum().backward()  # type: ignore[no-untyped-call]
            outs.append(out.detach().double())
            assert q.grad is not None
            grads.append(q.grad.double())
            m.zero_grad()
        err = float(poincare.dist(outs[0], outs[1], c=c).max())
        assert err < 1e-5, err
        rel = float((grads[0] - grads[1]).norm() / grads[1].norm())
        assert rel < 1e-4, rel


def test_linear_forward_tangent_matches_the_composition() -> None:
    """``expmap0(W u) ⊕ expmap0(b)`` in one closed form equals the poincare composition."""
    torch.manual_seed(0)
    for c in (1.0, 0.3):
        lin = HyperbolicLinear(16, 8, c=c).double()
        with torch.no_grad():
            assert lin.bias is not None
            lin.bias.normal_(0.0, 0.5)
        u = torch.randn(50, 16, dtype=F64)
        y = lin.forward_tangent(u)
        assert lin.bias is not None
        ref = poincare.mobius_add(
            poincare.expmap0(torch.nn.functional.linear(u, lin.weight), c=c),
            poincare.expmap0(lin.bias, c=c),
            c=c,
        )
        assert float(poincare.dist(y, ref, c=c).detach().max()) < 1e-12


@pytest.mark.parametrize("score", ["cosh", "distance", "squared"])
@pytest.mark.parametrize("far", [False, True])
def test_memory_efficient_float32_matches_plain(score: str, far: bool) -> None:
    """Recomputation in backward takes the same path as the forward pass, for head points
    within the closed-form range and beyond it (where the point path takes over)."""
    torch.manual_seed(0)
    plain = HyperbolicMultiHeadAttention(16, 4, score=score)
    lean = HyperbolicMultiHeadAttention(16, 4, score=score, memory_efficient=True)
    if far:
        with torch.no_grad():
            assert plain.in_proj_weight is not None
            plain.in_proj_weight.mul_(8.0)
    lean.load_state_dict(plain.state_dict())
    x = _points((2, 6, 16), 6.0 if far else 2.0, 1.0, seed=5)
    pad = torch.tensor([[False] * 5 + [True], [False] * 6])
    results = []
    for m in (plain, lean):
        xx = x.clone().requires_grad_(True)
        out, _ = m(xx, xx, xx, key_padding_mask=pad, is_causal=True)
        poincare.dist0(out).sum().backward()  # type: ignore[no-untyped-call]
        results.append((out.detach(), xx.grad, *(p.grad for p in m.parameters())))
    for a, b in zip(*results, strict=True):
        assert a is not None and b is not None
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("score", ["cosh", "distance", "squared"])
@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("far", [False, True])
def test_tangent_input_equals_the_point_input(score: str, need_weights: bool, far: bool) -> None:
    """``forward_tangent(u)`` is ``forward(p, p, p)`` with ``p = expmap0(u)`` on every path."""
    torch.manual_seed(0)
    m = HyperbolicMultiHeadAttention(16, 4, score=score)
    if far:
        with torch.no_grad():
            assert m.in_proj_weight is not None
            m.in_proj_weight.mul_(8.0)
    u = torch.randn(2, 6, 16) * 0.5
    p = poincare.expmap0(u)
    if far:
        # far-out heads make the weights follow scores of size cosh(d) ~ 1e7: compare on the
        # very tangent vectors the point input is mapped to, which must give the same bits
        u = poincare.logmap0(p)
    with torch.no_grad():
        a, wa = m.forward_tangent(u, need_weights=need_weights, is_causal=True)
        b, wb = m(p, p, p, need_weights=need_weights, is_causal=True)
    if far:
        assert torch.equal(a, b)
    assert float(poincare.dist(a.double(), b.double()).max()) < 1e-4
    if need_weights:
        assert wa is not None and wb is not None
        torch.testing.assert_close(wa, wb, atol=1e-5, rtol=1e-4)


def test_pre_norm_block_equals_the_point_composition() -> None:
    """The block hands tangent vectors from the norms to the sublayers: the result is the
    composition of the point-valued modules, ``x ⊕ attn(norm1(x))`` then ``⊕ ff(norm2(x))``."""
    torch.manual_seed(0)
    block = HyperbolicTransformerBlock(16, 4, 32, 0.0, c=0.7).double().eval()
    x = poincare.expmap0(torch.randn(2, 5, 16, dtype=F64) * 0.4, c=0.7)
    with torch.no_grad():
        y = block(x, is_causal=True)
        h = block.norm1(x)
        a, _ = block.self_attn(h, h, h, is_causal=True)
        ref = poincare.mobius_add(x, a, c=0.7)
        ref = poincare.mobius_add(ref, block.ff(block.norm2(ref)), c=0.7)
    assert float(poincare.dist(y, ref, c=0.7).max()) < 1e-10


@pytest.mark.parametrize("score", ["cosh", "distance", "squared"])
@pytest.mark.parametrize("need_weights", [False, True])
def test_curvature_gradient_of_every_path_is_exact(score: str, need_weights: bool) -> None:
    """The derivative in a learnable curvature through projections, Lorentz coordinates, scores,
    midpoint and output projection, against finite differences (float64, gradcheck)."""
    torch.manual_seed(0)
    ball = poincare.PoincareBall(0.8, learnable=True)
    m = HyperbolicMultiHeadAttention(4, 2, score=score, c=ball).double()
    x = poincare.expmap0(torch.randn(1, 3, 4, dtype=F64) * 0.6, c=0.8)
    w = torch.randn(1, 3, 4, dtype=F64)
    params = {k: v.detach() for k, v in m.named_parameters() if k != "ball.log_c"}

    def f(log_c: Tensor) -> Tensor:
        out, _ = functional_call(
            m, {**params, "ball.log_c": log_c}, (x, x, x), {"need_weights": need_weights}
        )
        return (out * w).sum()

    log_c = torch.tensor(math.log(0.8), dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (log_c,))


@pytest.mark.parametrize("far", [False, True])
@pytest.mark.parametrize("score", ["cosh", "distance"])
def test_curvature_gradient_reaches_the_shared_ball_in_float32(score: str, far: bool) -> None:
    """float32 calls, within the closed-form range and far out (the point paths): the learnable
    curvature gets a finite gradient that agrees with the float64 module's."""
    torch.manual_seed(0)
    grads = []
    for dtype in (torch.float32, F64):
        torch.manual_seed(0)
        ball = poincare.PoincareBall(0.5, learnable=True)
        m = HyperbolicMultiHeadAttention(16, 4, score=score, c=ball).to(dtype)
        if far:
            with torch.no_grad():
                assert m.in_proj_weight is not None
                m.in_proj_weight.mul_(4.0)
        x = _points((2, 6, 16), 2.0, 0.5, seed=3).to(dtype)
        out, _ = m(x, x, x)
        poincare.dist0(out, c=0.5).sum().backward()  # type: ignore[no-untyped-call]
        assert ball.log_c.grad is not None and bool(torch.isfinite(ball.log_c.grad))
        grads.append(float(ball.log_c.grad))
    assert abs(grads[0] - grads[1]) <= 1e-3 * abs(grads[1]) + 1e-3, grads
