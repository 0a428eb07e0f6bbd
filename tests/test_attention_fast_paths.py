"""The closed-form paths of the hyperbolic attention: hand-written gradients and float32 accuracy.

The attention module forms the Lorentz coordinates of its head points straight from the tangent
projections, merges the heads from the Lorentz sums, adds the output bias in one closed form and
scores explicit attention from a float64 Gram product; each of these has its own backward pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import mpmath
import pytest
import torch
from torch import Tensor

import poincare
from models import HyperbolicLinear, HyperbolicMultiHeadAttention
from models.attention import (
    _LorentzScoreFunction,
    _MidpointTangentFunction,
    _tangent_to_lorentz,
    _TangentLorentzFunction,
)
from models.layers import _BiasPointFunction, _Exp0AddFunction

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------ hand-written grads


@pytest.mark.parametrize("c", [1.0, 0.7])
@pytest.mark.parametrize(("scale", "t_max"), [(0.3, 5.0), (2.0, 5.0), (3.0, 1.0)])
def test_tangent_functions_gradcheck(c: float, scale: float, t_max: float) -> None:
    """Small, large and saturated (``t > t_max``) tangent vectors, and a zero row."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 4, 5, dtype=F64, generator=g) * scale
    z[0, 0] = 0.0
    z.requires_grad_(True)
    b = (torch.randn(4, 5, dtype=F64, generator=g) * 0.2).requires_grad_(True)
    gap = 1 - c * (b.detach() ** 2).sum(-1, keepdim=True)
    lam = (2 / gap).requires_grad_(True)
    gap.requires_grad_(True)
    for pad in (False, True):
        assert torch.autograd.gradcheck(
            lambda z_, b_, l_, p=pad: _TangentLorentzFunction.apply(  # type: ignore[no-untyped-call]
                z_, b_, l_, c, t_max, p
            ),
            (z, b, lam),
        )
    assert torch.autograd.gradcheck(
        lambda z_, b_, g_: _Exp0AddFunction.apply(  # type: ignore[no-untyped-call]
            z_, b_, g_, c, t_max
        ),
        (z, b, gap),
    )


@pytest.mark.parametrize("c", [1.0, 0.7])
@pytest.mark.parametrize("gap", [False, True])
def test_bias_point_gradcheck(c: float, gap: bool) -> None:
    """Short, long and saturated (beyond ``t_max = 1.5``) tangent vectors, and a zero one."""
    g = torch.Generator().manual_seed(4)
    v = torch.randn(5, 4, dtype=F64, generator=g) * torch.tensor([[0.1], [0.5], [1.0], [3.0], [0]])
    v.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda v_: _BiasPointFunction.apply(v_, c, 1.5, gap),  # type: ignore[no-untyped-call]
        (v,),
    )


@pytest.mark.parametrize("c", [1.0, 0.7])
@pytest.mark.parametrize("r_out", [30.0, 0.8])
@pytest.mark.parametrize("width", [6, 7])
def test_midpoint_tangent_gradcheck(c: float, r_out: float, width: int) -> None:
    """Ordinary rows, a zero row, a row of zero weights and a row at the origin."""
    g = torch.Generator().manual_seed(1)
    a_s = torch.randn(3, 4, 5, dtype=F64, generator=g)
    a0 = a_s.norm(dim=-1, keepdim=True) * (1 + torch.rand(3, 4, 1, dtype=F64, generator=g))
    agg = torch.cat([a0, a_s, torch.zeros(3, 4, width - 6, dtype=F64)], dim=-1)
    agg[0, 0] = 0.0
    agg[0, 1, 1:] = 0.0
    agg.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a: _MidpointTangentFunction.apply(a, c, 5, r_out),  # type: ignore[no-untyped-call]
        (agg,),
    )


@pytest.mark.parametrize("score", ["cosh", "distance", "squared"])
@pytest.mark.parametrize("c", [1.0, 0.5])
def test_lorentz_score_gradcheck(score: str, c: float) -> None:
    g = torch.Generator().manual_seed(2)
    gram = (1 + torch.rand(2, 3, 4, 5, dtype=F64, generator=g) * 3).requires_grad_(True)
    beta = (torch.rand(3, 1, 1, dtype=F64, generator=g) + 0.5).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda g_, b_: _LorentzScoreFunction.apply(  # type: ignore[no-untyped-call]
            g_, b_, c, score, F64
        ),
        (gram, beta),
    )


# ---------------------------------------------------------------------------------------- accuracy


def _reference_lorentz(z: list[float], b: list[float], c: float) -> list[float]:
    """Lorentz coordinates of expmap0(z) ⊕ expmap0(b) with 60 digits."""
    mpmath.mp.dps = 60
    cc = mpmath.mpf(c)
    s = mpmath.sqrt(cc)

    def exp0(v: list[float]) -> list[mpmath.mpf]:
        vv = [mpmath.mpf(t) for t in v]
        n = mpmath.sqrt(mpmath.fsum(t * t for t in vv))
        f = mpmath.tanh(s * n) / (s * n)
        return [f * t for t in vv]

    p, q = exp0(z), exp0(b)
    xy = mpmath.fsum(u * w for u, w in zip(p, q, strict=True))
    x2 = mpmath.fsum(u * u for u in p)
    y2 = mpmath.fsum(w * w for w in q)
    den = 1 + 2 * cc * xy + cc * cc * x2 * y2
    y = [
        ((1 + 2 * cc * xy + cc * y2) * u + (1 - cc * x2) * w) / den
        for u, w in zip(p, q, strict=True)
    ]
    r2 = mpmath.fsum(t * t for t in y)
    gap = 1 - cc * r2
    return [float((1 + cc * r2) / (s * gap))] + [float(2 * t / gap) for t in y]


@pytest.mark.parametrize("c", [1.0, 2.0])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_tangent_to_lorentz_is_accurate_to_a_few_ulps(c: float, dtype: torch.dtype) -> None:
    """Relative error of the Lorentz coordinates against mpmath, far out too (h_0 up to 1e7)."""
    g = torch.Generator().manual_seed(3)
    z = torch.randn(12, 6, dtype=F64, generator=g) * (2.0 / math.sqrt(c))
    b = torch.randn(6, dtype=F64, generator=g) * 0.3
    t_max = math.atanh(1 - torch.finfo(dtype).eps / 2)
    got = _tangent_to_lorentz(z.to(dtype), b.to(dtype), c=c, t_max=t_max, pad=False).double()
    ref = torch.tensor(
        [_reference_lorentz(z[i].tolist(), b.tolist(), c) for i in range(12)], dtype=F64
    )
    # the float32 inputs are rounded: compare against the reference of the rounded inputs
    if dtype == torch.float32:
        ref = torch.tensor(
            [
                _reference_lorentz(z[i].float().double().tolist(), b.float().double().tolist(), c)
                for i in range(12)
            ],
            dtype=F64,
        )
    rel = ((got - ref).norm(dim=-1) / ref.norm(dim=-1)).max()
    assert float(rel) < 64 * torch.finfo(dtype).eps, float(rel)


def _pair(score: str, c: float, bias: bool) -> tuple[HyperbolicMultiHeadAttention, ...]:
    torch.manual_seed(0)
    m32 = HyperbolicMultiHeadAttention(16, 4, score=score, c=c, bias=bias)  # type: ignore[arg-type]
    m64 = HyperbolicMultiHeadAttention(16, 4, score=score, c=c, bias=bias).double()  # type: ignore[arg-type]
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
        assert float(poincare.dist(y, ref, c=c).max()) < 1e-12


@pytest.mark.parametrize("score", ["cosh", "distance", "squared"])
@pytest.mark.parametrize("far", [False, True])
def test_memory_efficient_float32_matches_plain(score: str, far: bool) -> None:
    """Recomputation in backward takes the same path as the forward pass, for head points
    within the closed-form range and beyond it (where the point path takes over)."""
    torch.manual_seed(0)
    plain = HyperbolicMultiHeadAttention(16, 4, score=score)  # type: ignore[arg-type]
    lean = HyperbolicMultiHeadAttention(16, 4, score=score, memory_efficient=True)  # type: ignore[arg-type]
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
