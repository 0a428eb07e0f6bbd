"""Tests of the hyperbolic layers, attention, transformer and ConvHyperbolicTransformer."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

import poincare
from poincare.nn import (
    ConvHyperbolicTransformer,
    HyperbolicActivation,
    HyperbolicFeedForward,
    HyperbolicLayerNorm,
    HyperbolicLinear,
    HyperbolicMultiHeadAttention,
    HyperbolicPositionalEncoding,
    HyperbolicTransformer,
    HyperbolicTransformerBlock,
)
from poincare.nn.functional import hyperbolic_attention
from verification.strategies import points_at_radii

pytestmark = pytest.mark.usefixtures("one_thread")


DTYPES = [pytest.param(torch.float32, id="float32"), pytest.param(torch.float64, id="float64")]
SCORES = ["distance", "squared", "cosh"]


def sweep_points(
    shape: tuple[int, ...], dtype: torch.dtype, *, c: float = 1.0, seed: int = 0
) -> Tensor:
    """Points of shape ``shape`` whose hyperbolic radii sweep [0, max_radius] and the shell."""
    g = torch.Generator().manual_seed(seed)
    *lead, d = shape
    n = math.prod(lead)
    r_max = poincare.max_radius(dtype, c=c)
    radii = torch.linspace(0.0, r_max, n, dtype=torch.float64)
    radii = radii[torch.randperm(n, generator=g)]
    radii[0] = math.inf  # the outermost representable shell
    if n > 1:
        radii[1] = 0.0
    u = torch.randn(n, d, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=-1, keepdim=True)
    return points_at_radii(radii, u, dtype, c=c).reshape(shape)


def random_points(
    shape: tuple[int, ...], dtype: torch.dtype, *, radius: float, c: float = 1.0, seed: int = 0
) -> Tensor:
    """Points with hyperbolic radii uniform in [0, radius]."""
    g = torch.Generator().manual_seed(seed)
    *lead, d = shape
    n = math.prod(lead)
    radii = torch.rand(n, generator=g, dtype=torch.float64) * radius
    u = torch.randn(n, d, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=-1, keepdim=True)
    return points_at_radii(radii, u, dtype, c=c).reshape(shape)


def assert_in_ball(y: Tensor, c: float, what: str) -> None:
    """Finite and strictly inside: ``c|y|^2 < 1`` evaluated exactly (float64 squares are exact
    for float32 and half points; ``poincare.check_point`` decides exactly for every dtype)."""
    assert torch.isfinite(y).all(), f"{what}: non-finite output"
    if y.dtype != torch.float64:
        sq = c * y.detach().to(torch.float64).pow(2).sum(-1)
        assert bool((sq < 1.0).all()), f"{what}: output on or outside the ball (max {sq.max()})"
    try:
        poincare.check_point(y.detach(), c=c)
    except ValueError as err:
        raise AssertionError(f"{what}: {err}") from err


def mha_call(m: nn.Module) -> Callable[[Tensor], Tensor]:
    def f(x: Tensor) -> Tensor:
        out: Tensor = m(x, x, x)[0]
        return out

    return f


# ----------------------------------------------------------------------------------- containment


def _modules(c: float) -> list[tuple[str, nn.Module, Callable[[Tensor], Tensor] | None]]:
    d = 16
    mods: list[tuple[str, nn.Module, Callable[[Tensor], Tensor] | None]] = [
        ("linear", HyperbolicLinear(d, 8, c=c), None),
        ("linear-nobias", HyperbolicLinear(d, 24, c=c, bias=False), None),
        ("activation", HyperbolicActivation(torch.tanh, c=c), None),
        ("activation-saturating", HyperbolicActivation(lambda u: 50.0 * u, c=c), None),
        ("layernorm", HyperbolicLayerNorm(d, c=c), None),
        ("feedforward", HyperbolicFeedForward(d, 32, 0.0, c=c), None),
        ("posenc", HyperbolicPositionalEncoding(d, 16, c=c), None),
        ("posenc-learned", HyperbolicPositionalEncoding(d, 16, c=c, learnable=True), None),
        ("block-postnorm", HyperbolicTransformerBlock(d, 4, 32, 0.0, c=c, norm_first=False), None),
        ("block", HyperbolicTransformerBlock(d, 4, 32, 0.0, c=c), None),
        (
            "transformer",
            HyperbolicTransformer(d, 4, 2, 32, 0.0, c=c, max_len=16, causal=True),
            None,
        ),
    ]
    for score in SCORES:
        m = HyperbolicMultiHeadAttention(d, 4, c=c, score=score)
        mods.append((f"mha-{score}", m, mha_call(m)))
    return mods


@pytest.mark.parametrize("c", [1.0, 0.3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_module_output_strictly_inside_the_ball(dtype: torch.dtype, c: float) -> None:
    torch.manual_seed(0)
    x = sweep_points((4, 12, 16), dtype, c=c)
    for name, module, call in _modules(c):
        module.to(dtype).eval()
        with torch.no_grad():
            y = (call or module)(x)
        assert y.dtype == dtype, name
        assert_in_ball(y, c, f"{name} ({dtype})")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_return_points_in_their_dtype(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    x = poincare.project(sweep_points((2, 12, 16), torch.float32).to(dtype))
    for name, module, call in _modules(1.0):
        module.eval()
        with torch.no_grad():
            y = (call or module)(x)
        assert y.dtype == dtype, name
        assert_in_ball(y, 1.0, f"{name} ({dtype})")


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_transformer_shapes_and_containment(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    m = ConvHyperbolicTransformer(3, 16, 4, 2, 0.0).to(dtype).eval()
    x = torch.randn(2, 5, 3, 4, 6, dtype=dtype) * torch.logspace(-3, 4, 6, dtype=dtype)
    out, ctx = m(x)
    assert out.shape == (2, 5, 16, 4, 6) and ctx.shape == (2, 16, 4, 6)
    assert out.dtype == dtype
    assert_in_ball(out.movedim(2, -1), 1.0, "conv transformer output")
    torch.testing.assert_close(ctx, out[:, -1])


def test_conv_transformer_is_one_batched_transformer_call() -> None:
    """Each location's output is the transformer applied to that location's sequence."""
    torch.manual_seed(0)
    m = ConvHyperbolicTransformer(3, 8, 2, 1, 0.0).double().eval()
    x = torch.randn(2, 4, 3, 3, 2, dtype=torch.float64)
    out, _ = m(x)
    seq = x[1, :, :, 2, 1]
    ref = m.transformer(m.to_ball(seq.unsqueeze(0)))[0]
    torch.testing.assert_close(out[1, :, :, 2, 1], ref)
    # causal by default: the first step depends only on the first input step
    x2 = x.clone()
    x2[:, 1:] += 1.0
    torch.testing.assert_close(m(x2)[0][:, 0], out[:, 0])


@pytest.mark.parametrize("d_model", [16, 64, 256, 1024])
def test_layernorm_radius_is_controlled_at_init(d_model: int) -> None:
    c = 1.0
    ln = HyperbolicLayerNorm(d_model, c=c)
    for dtype in (torch.float32, torch.float64):
        x = sweep_points((64, d_model), dtype, c=c, seed=d_model)
        with torch.no_grad():
            r = poincare.dist0(ln.to(dtype)(x), c=c)
        median = float(r.median())
        r_max = poincare.max_radius(dtype, c=c)
        # the normalised tangent has norm ~1, so dist0 ~ 2: far from the boundary for every d
        assert 1.0 < median < 3.0, (d_model, dtype, median)
        assert float(r.max()) < 0.25 * r_max


# -------------------------------------------------------------------------------------- attention


@pytest.mark.parametrize("score", SCORES)
def test_attention_matches_einstein_midpoint(score: str) -> None:
    torch.manual_seed(0)
    dtype = torch.float64
    q = random_points((2, 3, 5, 4), dtype, radius=4.0, seed=1)
    k = random_points((2, 3, 7, 4), dtype, radius=4.0, seed=2)
    v = random_points((2, 3, 7, 6), dtype, radius=6.0, seed=3)
    beta = torch.tensor([0.5, 1.0, 2.0], dtype=dtype).view(3, 1, 1)
    out_w, w = hyperbolic_attention(q, k, v, beta=beta, score=score, need_weights=True)  # type: ignore[arg-type]
    out, none = hyperbolic_attention(q, k, v, beta=beta, score=score)  # type: ignore[arg-type]
    assert w is not None and none is None
    ref = poincare.einstein_midpoint(v.unsqueeze(-3), w, c=1.0, dim=-2)
    torch.testing.assert_close(out_w, ref, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-9)
    # the weights follow the score from the geodesic distance
    d = poincare.dist(q.unsqueeze(-2), k.unsqueeze(-3), c=1.0)
    f = {"distance": d, "squared": d * d, "cosh": torch.cosh(d) - 1.0}[score]
    torch.testing.assert_close(w, torch.softmax(-beta * f, dim=-1), atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize(
    ("score", "radius", "tol"),
    [("distance", None, 1e-2), ("cosh", None, 1e-3), ("cosh", 4.0, 1e-3)],
)
def test_float32_attention_accuracy(score: str, radius: float | None, tol: float) -> None:
    """float32 outputs against the float64 Einstein midpoint of the same weights, for points up
    to the representable radius (the fused cosh path switches to float64 for far-out points)."""
    r = poincare.max_radius(torch.float32) if radius is None else radius
    q, k, v = (
        random_points((4, 2, 16, 8), torch.float32, radius=r, seed=s).double() for s in (1, 2, 3)
    )
    _, w64 = hyperbolic_attention(q, k, v, score=score, need_weights=True)  # type: ignore[arg-type]
    assert w64 is not None
    ref = poincare.einstein_midpoint(v.unsqueeze(-3), w64)
    out, _ = hyperbolic_attention(q.float(), k.float(), v.float(), score=score)  # type: ignore[arg-type]
    assert float(poincare.dist(out.double(), ref).max()) < tol


def test_attention_curvature_scales_cosh_score() -> None:
    dtype = torch.float64
    c = 0.25
    q = random_points((1, 3, 4), dtype, radius=3.0, c=c, seed=4)
    k = random_points((1, 5, 4), dtype, radius=3.0, c=c, seed=5)
    _, w = hyperbolic_attention(q, k, k, c=c, score="cosh", need_weights=True)
    d = poincare.dist(q.unsqueeze(-2), k.unsqueeze(-3), c=c)
    ref = torch.softmax(-(torch.cosh(math.sqrt(c) * d) - 1.0), dim=-1)
    assert w is not None
    torch.testing.assert_close(w, ref)


@pytest.mark.parametrize("score", SCORES)
def test_weights_shapes_like_nn_multihead_attention(score: str) -> None:
    torch.manual_seed(0)
    b, n, m, e, h = 2, 5, 7, 16, 4
    ref = nn.MultiheadAttention(e, h, batch_first=True)
    hyp = HyperbolicMultiHeadAttention(e, h, score=score, dropout=0.3).eval()  # type: ignore[arg-type]
    q = random_points((b, n, e), torch.float32, radius=3.0, seed=1)
    kv = random_points((b, m, e), torch.float32, radius=3.0, seed=2)
    for avg in (True, False):
        o_ref, w_ref = ref(q, kv, kv, need_weights=True, average_attn_weights=avg)
        o, w = hyp(q, kv, kv, need_weights=True, average_attn_weights=avg)
        assert w is not None and w_ref is not None
        assert o.shape == o_ref.shape and w.shape == w_ref.shape
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
        assert bool((w >= 0).all())
    assert hyp(q, kv, kv)[1] is None


def test_sequence_first_layout_and_kdim_vdim() -> None:
    torch.manual_seed(0)
    m = HyperbolicMultiHeadAttention(8, 2, batch_first=False, kdim=6, vdim=10).double()
    q = random_points((5, 3, 8), torch.float64, radius=3.0, seed=1)
    k = random_points((7, 3, 6), torch.float64, radius=3.0, seed=2)
    v = random_points((7, 3, 10), torch.float64, radius=3.0, seed=3)
    out, w = m(q, k, v, need_weights=True)
    assert out.shape == (5, 3, 8) and w is not None and w.shape == (3, 5, 7)
    m.batch_first = True
    out_bf, _ = m(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1))
    torch.testing.assert_close(out_bf, out.transpose(0, 1))
    # self-attention (the fused projection) in both layouts
    sa = HyperbolicMultiHeadAttention(8, 2, batch_first=False, score="cosh").double()
    out_sf, _ = sa(q, q, q)
    sa.batch_first = True
    qt = q.transpose(0, 1)
    torch.testing.assert_close(sa(qt, qt, qt)[0], out_sf.transpose(0, 1))


@pytest.mark.parametrize("score", SCORES)
def test_fast_and_explicit_paths_agree_in_the_module(score: str) -> None:
    torch.manual_seed(0)
    m = HyperbolicMultiHeadAttention(16, 4, score=score).double()  # type: ignore[arg-type]
    x = random_points((2, 6, 16), torch.float64, radius=5.0)
    mask = torch.rand(6, 6) < 0.3
    a, _ = m(x, x, x, attn_mask=mask)
    b, w = m(x, x, x, attn_mask=mask, need_weights=True)
    assert w is not None
    torch.testing.assert_close(a, b)


def test_fused_cosh_path_is_accurate_for_far_out_heads_in_float32() -> None:
    """Head points beyond the float32 Lorentz range: the fused path switches to float64 and
    matches the explicit path, whose sums are in float64."""
    torch.manual_seed(0)
    m = HyperbolicMultiHeadAttention(16, 4, score="cosh")
    with torch.no_grad():
        assert m.in_proj_weight is not None
        m.in_proj_weight.mul_(8.0)
    x = random_points((2, 6, 16), torch.float32, radius=10.0)
    with torch.no_grad():
        fast, _ = m(x, x, x)
        ref, _ = m(x, x, x, need_weights=True)
    assert float(poincare.dist(fast.double(), ref.double()).max()) < 1e-3


@pytest.mark.parametrize("score", SCORES)
def test_memory_efficient_mode_gives_the_same_values_and_gradients(score: str) -> None:
    torch.manual_seed(0)
    plain = HyperbolicMultiHeadAttention(16, 4, score=score).double()  # type: ignore[arg-type]
    lean = HyperbolicMultiHeadAttention(16, 4, score=score, memory_efficient=True).double()  # type: ignore[arg-type]
    lean.load_state_dict(plain.state_dict())
    x = random_points((2, 6, 16), torch.float64, radius=5.0)
    pad = torch.tensor([[False] * 5 + [True], [False] * 6])
    grads = []
    for m in (plain, lean):
        xx = x.clone().requires_grad_(True)
        out, _ = m(xx, xx, xx, key_padding_mask=pad, is_causal=True)
        poincare.dist0(out).sum().backward()
        grads.append((out.detach(), xx.grad, *(p.grad for p in m.parameters())))
    for a, b in zip(*grads, strict=True):
        assert a is not None and b is not None
        torch.testing.assert_close(a, b)


def test_head_split_merge_keeps_points_in_ball_for_many_heads() -> None:
    """Concatenated head coordinates could leave the ball; a tangent-space merge cannot."""
    torch.manual_seed(0)
    m = HyperbolicMultiHeadAttention(64, 16, score="cosh")
    with torch.no_grad():
        assert m.in_proj_weight is not None
        m.in_proj_weight.mul_(50.0)  # every head lands near its boundary
    x = sweep_points((2, 10, 64), torch.float32)
    out, _ = m(x, x, x)
    assert_in_ball(out, 1.0, "16 heads")


def test_masks_bool_and_float_agree_and_shapes() -> None:
    torch.manual_seed(0)
    b, n, m_, e, h = 2, 4, 6, 8, 2
    mha = HyperbolicMultiHeadAttention(e, h, score="squared").double()
    q = random_points((b, n, e), torch.float64, radius=3.0, seed=1)
    kv = random_points((b, m_, e), torch.float64, radius=3.0, seed=2)
    bool_mask = torch.rand(n, m_) < 0.4
    bool_mask[:, 0] = False
    float_mask = torch.zeros(n, m_, dtype=torch.float64).masked_fill(bool_mask, -math.inf)
    o1, w1 = mha(q, kv, kv, attn_mask=bool_mask, need_weights=True)
    o2, w2 = mha(q, kv, kv, attn_mask=float_mask, need_weights=True)
    torch.testing.assert_close(o1, o2)
    assert w1 is not None and w2 is not None
    assert bool((w1[:, bool_mask] == 0).all())
    per_head = bool_mask.expand(b * h, n, m_)
    o3, _ = mha(q, kv, kv, attn_mask=per_head)
    torch.testing.assert_close(o1, o3)


def test_fully_masked_rows_are_defined() -> None:
    torch.manual_seed(0)
    for score in SCORES:
        mha = HyperbolicMultiHeadAttention(8, 2, score=score)  # type: ignore[arg-type]
        x = random_points((2, 4, 8), torch.float32, radius=3.0)
        mask = torch.zeros(4, 4, dtype=torch.bool)
        mask[1] = True  # query 1 may attend to nothing
        x.requires_grad_(True)
        for need in (False, True):
            out, w = mha(x, x, x, attn_mask=mask, need_weights=need)
            assert torch.isfinite(out).all()
            # the head outputs are the origin: the result is the output projection of the origin
            origin = mha.out_proj(torch.zeros(1, 8))
            torch.testing.assert_close(out[:, 1], origin.expand(2, 8))
            if w is not None:
                assert bool((w[:, 1] == 0).all())
            out.sum().backward()
            assert x.grad is not None and torch.isfinite(x.grad).all()
            x.grad = None
        # a fully padded batch element
        pad = torch.zeros(2, 4, dtype=torch.bool)
        pad[0] = True
        out, _ = mha(x, x, x, key_padding_mask=pad)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("score", SCORES)
def test_key_padding_mask_ignores_padded_keys(score: str) -> None:
    torch.manual_seed(0)
    mha = HyperbolicMultiHeadAttention(8, 2, score=score).double()  # type: ignore[arg-type]
    q = random_points((2, 3, 8), torch.float64, radius=3.0, seed=1)
    kv = random_points((2, 5, 8), torch.float64, radius=3.0, seed=2)
    pad = torch.tensor([[False, False, False, True, True], [False, True, False, False, True]])
    out, _ = mha(q, kv, kv, key_padding_mask=pad)
    kv2 = kv.clone()
    kv2[pad] = random_points((int(pad.sum()), 8), torch.float64, radius=6.0, seed=9)
    out2, _ = mha(q, kv2, kv2, key_padding_mask=pad)
    torch.testing.assert_close(out, out2)
    # equal to attending over the unpadded keys only
    ref0, _ = mha(q[:1], kv[:1, :3], kv[:1, :3])
    torch.testing.assert_close(out[:1], ref0)


@pytest.mark.parametrize("score", SCORES)
def test_causal_attention_ignores_the_future(score: str) -> None:
    torch.manual_seed(0)
    x = random_points((2, 8, 16), torch.float64, radius=4.0)
    model = HyperbolicTransformer(
        16,
        4,
        2,
        32,
        0.0,
        c=1.0,
        max_len=8,
        causal=True,
        score=score,  # type: ignore[arg-type]
    ).double()
    y = model(x)
    for t in (0, 3, 6):
        x2 = x.clone()
        x2[:, t + 1 :] = random_points((2, 7 - t, 16), torch.float64, radius=6.0, seed=t + 5)
        y2 = model(x2)
        torch.testing.assert_close(y2[:, : t + 1], y[:, : t + 1])
        assert not torch.allclose(y2[:, t + 1 :], y[:, t + 1 :])
    mha = HyperbolicMultiHeadAttention(16, 4, score=score).double()  # type: ignore[arg-type]
    a, _ = mha(x, x, x, is_causal=True)
    b, _ = mha(x, x, x, attn_mask=torch.ones(8, 8, dtype=torch.bool).triu(1))
    torch.testing.assert_close(a, b)


def test_transformer_is_permutation_equivariant_without_positions() -> None:
    torch.manual_seed(0)
    for score in SCORES:
        model = HyperbolicTransformer(
            16,
            4,
            2,
            32,
            0.0,
            c=1.0,
            max_len=10,
            positional=False,
            score=score,  # type: ignore[arg-type]
        ).double()
        x = random_points((3, 10, 16), torch.float64, radius=5.0)
        perm = torch.randperm(10)
        torch.testing.assert_close(model(x[:, perm]), model(x)[:, perm])
        # and the positional encoding breaks the symmetry
        with_pos = HyperbolicTransformer(16, 4, 1, 32, 0.0, c=1.0, max_len=10).double()
        assert not torch.allclose(with_pos(x[:, perm]), with_pos(x)[:, perm])


def test_attention_rows_sum_to_one_in_eval_mode_with_dropout() -> None:
    torch.manual_seed(0)
    mha = HyperbolicMultiHeadAttention(8, 2, dropout=0.5)
    x = random_points((2, 6, 8), torch.float32, radius=3.0)
    mha.eval()
    _, w = mha(x, x, x, need_weights=True, average_attn_weights=False)
    assert w is not None
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 6))
    mha.train()
    _, w = mha(x, x, x, need_weights=True, average_attn_weights=False)
    assert w is not None
    assert bool((w == 0).any())  # dropout acts on the weights in training


def test_upcast_runs_the_hyperbolic_parts_in_float64() -> None:
    torch.manual_seed(0)
    model = HyperbolicTransformer(16, 4, 2, 32, 0.0, c=1.0, max_len=8, causal=True)
    x32 = sweep_points((2, 8, 16), torch.float32)
    with poincare.upcast(torch.float64):
        y_up = model(x32)
    assert y_up.dtype == torch.float32
    y64 = model.double()(x32.double())
    torch.testing.assert_close(y_up, y64.float(), atol=0.0, rtol=0.0)
    mha = HyperbolicMultiHeadAttention(16, 4, score="cosh")
    with poincare.upcast(torch.float64):
        o_up, w_up = mha(x32, x32, x32, need_weights=True)
    assert o_up.dtype == torch.float32 and w_up is not None and w_up.dtype == torch.float32
    o64, _ = mha.double()(x32.double(), x32.double(), x32.double(), need_weights=True)
    torch.testing.assert_close(o_up, o64.float(), atol=0.0, rtol=0.0)


# -------------------------------------------------------------------------- gradients, learning


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradients_finite_near_the_boundary(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = HyperbolicTransformer(16, 4, 2, 32, 0.1, c=1.0, max_len=12, causal=True).to(dtype)
    shell = points_at_radii(
        torch.full((2, 12), math.inf, dtype=torch.float64),
        torch.nn.functional.normalize(torch.randn(2, 12, 16, dtype=torch.float64), dim=-1),
        dtype,
    )
    for x in (shell, sweep_points((2, 12, 16), dtype)):
        x = x.clone().requires_grad_(True)
        y = model(x)
        loss = poincare.dist0(y).sum() + y.sum()
        loss.backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        model.zero_grad()
    for score in SCORES:
        mha = HyperbolicMultiHeadAttention(16, 4, score=score).to(dtype)  # type: ignore[arg-type]
        x = shell.clone().requires_grad_(True)
        out, _ = mha(x, x, x)
        poincare.dist0(out).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all(), score


def test_300_steps_pushing_points_outward_stay_finite() -> None:
    torch.manual_seed(0)
    model = HyperbolicTransformer(8, 2, 1, 16, 0.1, c=1.0, max_len=6, causal=True)
    tangent = nn.Parameter(torch.randn(2, 6, 8))
    opt = torch.optim.Adam([*model.parameters(), tangent], lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        y = model(poincare.expmap0(tangent))
        loss = -poincare.dist0(y).mean()  # push outward, towards the boundary
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
        for p in (*model.parameters(), tangent):
            assert torch.isfinite(p).all()
    y = model(poincare.expmap0(tangent))
    assert_in_ball(y, 1.0, "after 300 outward steps")
    assert float(poincare.dist0(y).mean().detach()) > 4.0  # it did move outward


def _tree_task(seed: int) -> tuple[Tensor, Tensor, Tensor, int]:
    """A complete ternary tree of depth 3 (40 nodes); sequences are root-to-leaf paths
    with shuffled order; the target of a token is the position of its parent in the sequence
    (the root points to itself)."""
    g = torch.Generator().manual_seed(seed)
    branching, depth = 3, 3
    parent = [0]
    level = [0]
    for _ in range(depth):
        nxt = []
        for p in level:
            for _ in range(branching):
                parent.append(p)
                nxt.append(len(parent) - 1)
        level = nxt
    leaves = level
    n_nodes = len(parent)
    seqs, targets = [], []
    for _ in range(512):
        leaf = leaves[int(torch.randint(len(leaves), (1,), generator=g))]
        path = [leaf]
        while path[-1] != 0:
            path.append(parent[path[-1]])
        order = torch.randperm(len(path), generator=g).tolist()
        tokens = [path[i] for i in order]
        pos = {node: i for i, node in enumerate(tokens)}
        seqs.append(tokens)
        targets.append([pos[parent[t]] if t != 0 else pos[0] for t in tokens])
    return torch.tensor(seqs), torch.tensor(targets), torch.tensor(parent), n_nodes


class _PointerModel(nn.Module):
    """Embeddings in the ball, a hyperbolic transformer, logits ``-scale * d(W ⊗ z_i, z_j)``."""

    def __init__(self, n_nodes: int, d: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(n_nodes, d)
        self.body = HyperbolicTransformer(d, 2, 1, 2 * d, 0.0, c=1.0, max_len=8, positional=False)
        self.query = HyperbolicLinear(d, d, c=1.0, init_scale=1.0)
        self.scale = nn.Parameter(torch.tensor(3.0))

    def forward(self, tokens: Tensor) -> Tensor:
        z = self.body(poincare.expmap0(self.embed(tokens)))
        # where does token i's parent sit? scores over the positions j of the sequence
        return -self.scale * poincare.pairwise_dist(self.query(z), z)


def test_transformer_learns_parent_pointers_in_a_tree() -> None:
    """Chance is 1/4 (paths have 4 tokens); the model must reach >= 90% on held-out paths."""
    torch.manual_seed(0)
    seqs, targets, _, n_nodes = _tree_task(seed=0)
    model = _PointerModel(n_nodes, 16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_x, train_y = seqs[:384], targets[:384]
    for step in range(60):
        idx = torch.randint(0, 384, (64,), generator=torch.Generator().manual_seed(step))
        logits = model(train_x[idx])
        loss = nn.functional.cross_entropy(logits.reshape(-1, 4), train_y[idx].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(seqs[384:]).argmax(-1)
    acc = float((pred == targets[384:]).float().mean())
    assert acc >= 0.9, f"accuracy {acc:.3f} (chance 0.25)"


# ------------------------------------------------------------------------------------- bad input


def test_bad_input_raises_clear_errors() -> None:
    with pytest.raises(ValueError, match="divisible"):
        HyperbolicMultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="score"):
        HyperbolicMultiHeadAttention(8, 2, score="dot")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="c must"):
        HyperbolicLinear(4, 4, c=-1.0)
    with pytest.raises(ValueError, match="dropout"):
        HyperbolicFeedForward(4, 8, 1.5)
    mha = HyperbolicMultiHeadAttention(8, 2)
    x = random_points((2, 4, 8), torch.float32, radius=2.0)
    with pytest.raises(ValueError, match="query must be 3-D"):
        mha(x[0], x[0], x[0])
    with pytest.raises(ValueError, match="last dimension"):
        mha(x[..., :6], x, x)
    with pytest.raises(TypeError, match="floating"):
        mha(x.long(), x, x)
    with pytest.raises(ValueError, match="attn_mask"):
        mha(x, x, x, attn_mask=torch.zeros(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="attn_mask"):
        mha(x, x, x, attn_mask=torch.zeros(3, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="key_padding_mask"):
        mha(x, x, x, key_padding_mask=torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="attn_mask"):
        mha(x, x, x, attn_mask=torch.zeros(4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="batch"):
        mha(x, x[:1], x[:1])
    with pytest.raises(ValueError, match="attn_mask"):
        hyperbolic_attention(x, x, x, attn_mask=torch.zeros(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="k and v"):
        hyperbolic_attention(x, x, x[:, :3])
    with pytest.raises(ValueError, match="q must have shape"):
        hyperbolic_attention(x[0, 0], x, x)
    model = HyperbolicTransformer(8, 2, 1, 16, 0.0, c=1.0, max_len=3)
    with pytest.raises(ValueError, match="max_len"):
        model(x)
    with pytest.raises(ValueError, match=r"\(B, T, d_model\)"):
        model(x[0])
    conv = ConvHyperbolicTransformer(3, 8, 2, 1, 0.0)
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        conv(torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="channels"):
        conv(torch.randn(2, 3, 5, 4, 4))
