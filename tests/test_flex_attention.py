r"""The FlexAttention path of the explicit scores (:func:`poincare.nn._flex.flex_lorentz_attention`)
against the ``"gram"`` path and the point-based :func:`poincare.nn.functional.hyperbolic_attention`.

FlexAttention runs forward only on the CPU (torch 2.13), uncompiled: its reference
implementation, the same score formula (the module's ``score_mod``) on the same Gram product in
the same dtype as the CUDA kernel, with the softmax and the value sums unfused.

Tolerances are bounds derived from the error of the Gram product, not fitted to the results.
With :math:`u` the unit roundoff (:math:`\epsilon/2`), the product of ``W`` terms, each rounded
twice (coordinates to the run dtype, ``cJ`` applied), has an error of at most
:math:`(W + 4)\,u\,\sum|\text{terms}| \le (W + 4)\,\epsilon\,c\,h_{q0}h_{k0} =: \delta g` (because
:math:`|h_s| \le h_0`). Then, per pair, with :math:`x = g - 1` from the float64 reference:

* ``distance``: :math:`\operatorname{arcosh}(1 + x)` is concave, increasing, and
  :math:`\le\sqrt{2x}`, so its error is at most
  :math:`\min(\sqrt{2\delta g},\ \delta g/\sqrt{x_-(x_-+2)})` with
  :math:`x_- = \max(x - \delta g, 0)`;
* ``squared``: the slope of :math:`\operatorname{arcosh}^2(1 + x)` is at most 2: :math:`2\delta g`;
* ``cosh``: :math:`\delta g`;

each times the score's factor (:math:`\beta/s_c`, :math:`\beta/c`, :math:`\beta`) plus a few
roundings of the result. Scores within :math:`\Delta_i` of row ``i`` move its weights by at most
a factor :math:`e^{\pm 2\Delta_i}`, and the value sums by the weights' moves times the values.
The measured errors are a third to a tenth of these bounds (close pairs; see the table in the
docstring of :func:`~poincare.nn._flex.flex_lorentz_attention`).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

import poincare
import poincare.functional as PF
from poincare._fused import lorentz_cosh_minus_one, midpoint_logmap0
from poincare._precision import compute_dtype
from poincare.nn import _flex as flex_module
from poincare.nn._flex import _encode, _score_mod, flex_lorentz_attention
from poincare.nn.functional import (
    Score,
    _attend,
    _Encoded,
    _prepare_mask,
    _scores,
    hyperbolic_attention,
)

F32, F64 = torch.float32, torch.float64
SCORES: tuple[Score, ...] = ("distance", "squared", "cosh")

pytestmark = [
    pytest.mark.usefixtures("one_thread", "flex_available"),
    pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile"),
]


@pytest.fixture(scope="module")
def flex_available() -> Iterator[None]:
    """Skip the module (with the reason) where FlexAttention cannot run at all."""
    try:
        from torch.nn.attention.flex_attention import flex_attention

        x = torch.zeros(1, 1, 2, 16)
        with torch.no_grad():
            flex_attention(x, x, x)
    except Exception as exc:  # pragma: no cover - depends on the installed torch
        pytest.skip(f"FlexAttention is unavailable here: {type(exc).__name__}: {exc}")
    yield


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def _ball(shape: tuple[int, ...], radius: float, c: float, gen: torch.Generator) -> Tensor:
    """Float64 points at hyperbolic radius up to ``radius`` (one row on that radius)."""
    u = torch.nn.functional.normalize(torch.randn(*shape, dtype=F64, generator=gen), dim=-1)
    r = torch.rand(*shape[:-1], 1, dtype=F64, generator=gen) * radius
    r[..., 0, :] = radius
    return PF.expmap0(u * r / 2, c=c)  # d(0, expmap0(v)) = 2|v|


def _heads(
    c: float, seed: int, *, b: int = 2, h: int = 3, n: int = 6, m: int = 9, d: int = 6
) -> tuple[Tensor, Tensor, Tensor]:
    """Float64 query, key and value head points at radius up to ``2.5/sqrt(c)``; the first
    ``n`` keys are the queries moved by 0, 1e-8, ..., 1e-1 (over ``sqrt(c)``): close pairs."""
    gen = torch.Generator().manual_seed(seed)
    s = math.sqrt(c)
    radius = 2.5 / s
    q = _ball((b, h, n, d), radius, c, gen)
    steps = torch.tensor([0.0, 1e-8, 1e-6, 1e-4, 1e-2, 1e-1, 0.5, 1.0], dtype=F64)[:n] / s
    dirs = torch.nn.functional.normalize(torch.randn(b, h, n, d, dtype=F64, generator=gen), dim=-1)
    near = PF.expmap(q, dirs * steps[:, None] / PF.conformal_factor(q, c=c), c=c)
    k = torch.cat([near, _ball((b, h, m - n, d), radius, c, gen)], dim=-2)
    return q, k, _ball((b, h, m, d), radius, c, gen)


def _lorentz(*points: Tensor, c: float) -> list[Tensor]:
    return [PF.poincare_to_lorentz(p, c=c) for p in points]


def _beta(score: str, c: float, shape: tuple[int, ...], seed: int) -> Tensor:
    """Temperatures in [0.5, 2] in the units of the score: ``beta_0 s_c`` for ``distance``,
    ``beta_0 c`` for ``squared`` (so that every curvature sees scores of the same size)."""
    gen = torch.Generator().manual_seed(seed)
    beta0 = 0.5 + 1.5 * torch.rand(shape, dtype=F64, generator=gen)
    return beta0 * {"distance": math.sqrt(c), "squared": c, "cosh": 1.0}[score]


# ---------------------------------------------------------------------------------------------
# The derived bounds (see the module docstring)
# ---------------------------------------------------------------------------------------------


def _score_bound(
    hq: Tensor, hk: Tensor, beta: Tensor, c: float, score: str, dtype: torch.dtype
) -> Tensor:
    """(B, H, N, M) bound on the error of the scores computed in ``dtype``."""
    eps = torch.finfo(dtype).eps
    width = hq.shape[-1]
    x = lorentz_cosh_minus_one(hq, hk, c=c).clamp(min=0.0)
    dg = (width + 4) * eps * (c * hq[..., :1] * hk[..., :1].transpose(-1, -2))
    beta = beta.abs()
    if score == "cosh":
        return beta * (dg + 4 * eps * (x + 1))
    sd = torch.log1p(x + torch.sqrt(x * (x + 2)))
    if score == "squared":
        return beta / c * (2 * dg + 8 * eps * (sd * sd + 1))
    low = (x - dg).clamp(min=0.0)
    slope = torch.where(low > 0, dg / torch.sqrt(low * (low + 2)).clamp(min=1e-300), math.inf)
    return beta / math.sqrt(c) * (torch.minimum(torch.sqrt(2 * dg), slope) + 8 * eps * (sd + 1))


def _weight_bound(
    w_ref: Tensor, score_bound: Tensor, allowed: Tensor, dtype: torch.dtype
) -> Tensor:
    """Scores within ``Delta_i`` of row ``i`` move each weight by a factor ``exp(+-2 Delta_i)``;
    the softmax itself rounds each weight by ``(M + 4) eps`` relatively, or as many steps of
    the smallest subnormal, ``eps * tiny``, below the normal range."""
    fi = torch.finfo(dtype)
    delta = torch.where(allowed, score_bound, 0.0).amax(dim=-1, keepdim=True)
    rounding = (w_ref.shape[-1] + 4) * fi.eps
    return w_ref * (torch.expm1(2 * delta) + rounding) + rounding * fi.tiny


def _output_bound(w_ref: Tensor, w_bound: Tensor, hv: Tensor, dtype: torch.dtype) -> Tensor:
    """``|sum_j dw_ij h_vj| + (M + 2) eps sum_j w_ij |h_vj|`` (value sums and their rounding)."""
    eps = torch.finfo(dtype).eps
    return w_bound @ hv.abs() + (hv.shape[-2] + 2) * eps * (w_ref @ hv.abs())


def _flex_scores(hq: Tensor, hk: Tensor, beta: Tensor, c: float, score: str) -> Tensor:
    """The scores that FlexAttention's reference implementation forms on the CPU: the module's
    ``score_mod`` on the Gram product of its encoded queries and keys, in their dtype (for
    ``cosh``, whose query folds ``-beta``, plus ``beta``: the constant the softmax cancels)."""
    b, h, n, m = hq.shape[0], hq.shape[1], hq.shape[2], hk.shape[2]
    beta4 = beta.reshape((1,) * (4 - beta.dim()) + tuple(beta.shape))
    q, k, _, beta_eff = _encode(hq, hk, hk, beta4, c, score, hq.dtype)
    gram = q @ k.transpose(-1, -2)
    mod = _score_mod(score, beta_eff, None)
    idx = [
        torch.arange(x).view([x if i == j else 1 for j in range(4)])
        for i, x in enumerate((b, h, n, m))
    ]
    return gram + beta4.to(hq.dtype) if mod is None else mod(gram, *idx)


def _flex(
    hq: Tensor,
    hk: Tensor,
    hv: Tensor,
    beta: Tensor,
    c: float | Tensor,
    score: str,
    mask: Tensor | None = None,
    causal: bool = False,
) -> Tensor:
    with torch.no_grad():
        return flex_lorentz_attention(hq, hk, hv, beta, c=c, score=score, mask=mask, causal=causal)


def _weights(
    hq: Tensor,
    hk: Tensor,
    beta: Tensor,
    c: float,
    score: str,
    mask: Tensor | None = None,
    causal: bool = False,
) -> Tensor:
    """The weights through FlexAttention itself: the values are the identity, ``w @ I = w``."""
    b, h, m = hk.shape[0], hk.shape[1], hk.shape[2]
    eye = torch.eye(m, dtype=hq.dtype).expand(b, h, m, m)
    return _flex(hq, hk, eye, beta, c, score, mask, causal)


# ---------------------------------------------------------------------------------------------
# Against the "gram" path
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("c", [1e-4, 0.1, 1.0, 100.0])
def test_scores_weights_and_sums_match_the_gram_path(
    dtype: torch.dtype, score: Score, c: float
) -> None:
    """Close pairs (down to equal points) at radius up to 2.5/sqrt(c), per-head temperatures:
    the scores, the weights and ``w @ h_v`` within the bounds derived from the Gram product's
    error, against the ``"gram"`` path in float64 (close pairs corrected)."""
    hq, hk, hv = _lorentz(*_heads(c, seed=7), c=c)
    beta = _beta(score, c, (hq.shape[1], 1, 1), seed=3)
    ref_s = _scores(hq, hk, hv, path="gram", beta=beta, c=c, score=score)
    ref_w = torch.softmax(ref_s, dim=-1)
    ref_agg, _ = _attend(
        _Encoded("gram", hq, hk, hv),
        beta=beta,
        c=c,
        score=score,
        mask=None,
        is_causal=False,
        dropout_p=0.0,
        need_weights=False,
    )
    args = [t.to(dtype) for t in (hq, hk, hv)]
    bd = beta.to(dtype)
    s_bound = _score_bound(hq, hk, beta, c, score, dtype)
    s = _flex_scores(args[0], args[1], bd, c, score)
    assert s.dtype == dtype
    assert bool(((s.double() - ref_s).abs() <= s_bound).all()), float(
        ((s.double() - ref_s).abs() / s_bound).max()
    )
    w_bound = _weight_bound(ref_w, s_bound, torch.ones_like(ref_w, dtype=torch.bool), dtype)
    w = _weights(args[0], args[1], bd, c, score)
    assert bool(((w.double() - ref_w).abs() <= w_bound).all())
    agg = _flex(args[0], args[1], args[2], bd, c, score)
    assert agg.dtype == dtype and agg.shape == ref_agg.shape
    o_bound = _output_bound(ref_w, w_bound, hv, dtype)
    assert bool(((agg.double() - ref_agg).abs() <= o_bound).all())


def test_close_pairs_carry_the_cancellation_of_the_product() -> None:
    """The documented limit is real (the bounds above are not vacuous): equal float32 points
    at radius up to 2.5 get distances of order ``sqrt(eps) cosh(r)``, not 0, within the bound
    ``sqrt(2 (W + 4) eps) cosh(2.5)``; in float64 over a thousand times smaller (the ratio
    of the square roots of the two epsilons is 4e-5)."""
    c = 1.0
    hq, hk, _ = _lorentz(*_heads(c, seed=1), c=c)
    beta = torch.ones(1, dtype=F64)
    ref = _scores(hq, hk, hk, path="gram", beta=beta, c=c, score="distance")
    err32 = float(
        (_flex_scores(hq.float(), hk.float(), beta.float(), c, "distance").double() - ref)
        .abs()
        .max()
    )
    err64 = float((_flex_scores(hq, hk, beta, c, "distance") - ref).abs().max())
    bound = math.sqrt(2 * (hq.shape[-1] + 4) * torch.finfo(F32).eps) * math.cosh(2.5)
    assert 1e-4 < err32 < bound, (err32, bound)
    assert err64 < err32 * 1e-3, (err32, err64)


# ---------------------------------------------------------------------------------------------
# Masks, temperatures, widths, curvature as a tensor
# ---------------------------------------------------------------------------------------------


def _masks(b: int, h: int, n: int, m: int) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(5)
    padding = torch.zeros(b, 1, 1, m, dtype=torch.bool)
    padding[0, ..., -3:] = True
    additive = torch.randn(n, m, dtype=F64, generator=gen)
    additive[1, ::2] = -math.inf
    per_head = torch.rand(b, h, n, m, generator=gen) < 0.4
    per_head[1, 2, 3] = True  # a row with every key forbidden
    return {"padding": padding, "additive": additive, "per_head": per_head}


def _assert_matches_gram(
    heads: tuple[Tensor, Tensor, Tensor],
    beta: Tensor,
    c: float,
    score: Score,
    dtype: torch.dtype,
    mask: Tensor | None,
    causal: bool,
) -> None:
    """FlexAttention's weights and value sums in ``dtype`` against the ``"gram"`` pipeline of
    the float64 Lorentz coordinates ``heads`` with the same mask, within the derived bounds;
    rows whose keys are all forbidden give zeros."""
    hq, hk, hv = heads
    b, h, n, m = hq.shape[0], hq.shape[1], hq.shape[2], hk.shape[2]
    merged = mask if mask is not None else (torch.zeros(n, m, dtype=F64) if causal else None)
    additive, dead = _prepare_mask(merged, causal, (b, h, n, m), F64, hq.device)
    ref_agg, _ = _attend(
        _Encoded("gram", hq, hk, hv),
        beta=beta,
        c=c,
        score=score,
        mask=additive,
        is_causal=causal,
        dropout_p=0.0,
        need_weights=False,
    )
    ref_s = _scores(hq, hk, hv, path="gram", beta=beta, c=c, score=score)
    allowed = torch.ones(b, h, n, m, dtype=torch.bool)
    if additive is not None:
        ref_s = ref_s + additive
        allowed = ~torch.isneginf(additive).expand(b, h, n, m)
    ref_w = torch.softmax(ref_s, dim=-1)
    live = torch.ones(b, h, n, 1, dtype=torch.bool) if dead is None else ~dead.expand(b, h, n, 1)
    q, k, v = (t.to(dtype) for t in heads)
    bd = beta.to(dtype)
    md = mask if mask is None or mask.dtype == torch.bool else mask.to(dtype)
    agg = _flex(q, k, v, bd, c, score, md, causal)
    assert agg.dtype == compute_dtype(dtype) and agg.shape == ref_agg.shape
    w_bound = _weight_bound(ref_w, _score_bound(hq, hk, beta, c, score, dtype), allowed, dtype)
    o_bound = _output_bound(ref_w, w_bound, hv, dtype)
    err = (agg.double() - ref_agg).abs()
    assert bool(torch.where(live, err <= o_bound, True).all())
    assert bool(torch.where(live, True, agg == 0).all())
    w = _weights(q, k, bd, c, score, md, causal)
    assert bool(torch.where(live, (w.double() - ref_w).abs() <= w_bound, w == 0).all())


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("kind", ["none", "padding", "additive", "per_head"])
@pytest.mark.parametrize("causal", [False, True])
def test_masks_and_causality_match_the_gram_path(
    dtype: torch.dtype, score: Score, kind: str, causal: bool
) -> None:
    """Boolean masks (block masks), an additive float mask (in the score_mod) and causality,
    with per-(batch, head) temperatures, against the ``"gram"`` pipeline with the same mask;
    a row whose keys are all forbidden gives zeros."""
    c = 0.5
    heads = _lorentz(*_heads(c, seed=11), c=c)
    b, h, n, m = heads[0].shape[0], heads[0].shape[1], heads[0].shape[2], heads[1].shape[2]
    beta = _beta(score, c, (b, h, 1, 1), seed=2)
    mask = None if kind == "none" else _masks(b, h, n, m)[kind]
    _assert_matches_gram((heads[0], heads[1], heads[2]), beta, c, score, dtype, mask, causal)


def test_curvature_tensor_wide_heads_padding_columns_and_half_inputs() -> None:
    """A 0-d tensor curvature gives the float curvature's result (to rounding); heads wider
    than the kernel's minimum width are right, and a trailing zero column changes nothing;
    float16 inputs run in float32."""
    c = 2.0
    hq, hk, hv = _lorentz(*_heads(c, seed=4, d=20), c=c)
    beta = _beta("distance", c, (3, 1, 1), seed=1)
    _assert_matches_gram((hq, hk, hv), beta, c, "distance", F64, None, True)
    ref = _flex(hq, hk, hv, beta, c, "distance")
    tiny = 16 * torch.finfo(F64).eps * float(hv.abs().max())
    as_tensor = _flex(hq, hk, hv, beta, torch.tensor(c, dtype=F64), "distance")
    assert torch.allclose(as_tensor, ref, rtol=0, atol=tiny)
    pad = [torch.nn.functional.pad(t, (0, 1)) for t in (hq, hk)]
    assert torch.allclose(_flex(pad[0], pad[1], hv, beta, c, "distance"), ref, rtol=0, atol=tiny)
    _assert_matches_gram((hq, hk, hv), beta, c, "squared", torch.float16, None, False)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_the_compiled_route_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The route CUDA takes (a ``torch.compile``-d FlexAttention per score, captured
    temperatures and additive mask, a causal or boolean block mask, a recompilation for a new
    length), here compiled by inductor for the CPU, forward only, within the same bounds.
    Static lengths: inductor's CPU FlexAttention kernel fails to compile for dynamic ones
    (torch 2.13: ``cur_kvSplitSize3`` undeclared), which CUDA's Triton kernel does not share."""
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("no C++ compiler for inductor's CPU kernels")
    monkeypatch.setattr(flex_module, "_compiled_route", lambda q, dtype: True)
    c = 1.0
    score: Score = "distance"
    cases: list[tuple[int, int, tuple[str, ...]]] = [(6, 9, ("additive", "per_head"))]
    cases.append((7, 11, ("additive",)))
    with torch._dynamo.config.patch(automatic_dynamic_shapes=False):
        for n, m, kinds in cases:
            heads = _lorentz(*_heads(c, seed=n, n=6, m=m), c=c)
            hq = torch.cat([heads[0], heads[0][..., :1, :]], dim=-2)[..., :n, :]
            b, h = hq.shape[0], hq.shape[1]
            beta = _beta(score, c, (h, 1, 1), seed=n)
            masks = _masks(b, h, n, m)
            for kind in kinds:
                mask, causal = masks[kind], kind == "additive"
                _assert_matches_gram((hq, heads[1], heads[2]), beta, c, score, F32, mask, causal)


# ---------------------------------------------------------------------------------------------
# Against the point-based attention (float64)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "c", "causal"),
    [
        ("distance", 1.0, False),
        ("squared", 0.1, True),
        ("cosh", 100.0, False),
        ("distance", 1e-4, True),
    ],
)
def test_float64_pipeline_matches_point_based_attention(
    score: Score, c: float, causal: bool
) -> None:
    """The weights and the midpoints from FlexAttention's value sums against
    :func:`hyperbolic_attention` of the float64 head points (its ``"points"`` path, distances
    from the points). The midpoint bound: the Lorentz sums move by at most
    ``2 sum_j |dw_ij| h_j0``, the Klein point by ``s_c`` times that, and a Klein step ``du`` at
    ``|u| <= tanh(s_c R)`` is at most ``cosh^2(s_c R) du / s_c`` of distance."""
    q, k, v = _heads(c, seed=21, n=5, m=7)
    hq, hk, hv = _lorentz(q, k, v, c=c)
    h = q.shape[1]
    beta = _beta(score, c, (h, 1, 1), seed=9)
    out_ref, w_ref = hyperbolic_attention(
        q, k, v, c=c, beta=beta, score=score, is_causal=causal, need_weights=True
    )
    assert w_ref is not None
    allowed = torch.ones_like(w_ref, dtype=torch.bool)
    if causal:
        allowed = ~torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).triu(1)
    w_bound = _weight_bound(w_ref, _score_bound(hq, hk, beta, c, score, F64), allowed, F64)
    w = _weights(hq, hk, beta, c, score, causal=causal)
    assert bool(((w - w_ref).abs() <= w_bound).all())
    agg = _flex(hq, hk, hv, beta, c, score, causal=causal)
    out = PF.expmap0(midpoint_logmap0(agg, None, c=c, dim=v.shape[-1], dtype=F64), c=c)
    s = math.sqrt(c)
    cosh2 = math.cosh(2.5) ** 2
    bound = 2 * cosh2 * (w_bound @ hv[..., :1]).squeeze(-1) + 64 * torch.finfo(F64).eps * cosh2 / s
    assert bool((poincare.dist(out, out_ref, c=c) <= bound).all())


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def _good() -> dict[str, object]:
    hq, hk, hv = (torch.zeros(1, 2, 3, 4) for _ in range(3))
    hq[..., 0] = hk[..., 0] = hv[..., 0] = 1.0
    return {
        "hq": hq,
        "hk": hk,
        "hv": hv,
        "beta": torch.ones(2, 1, 1),
        "c": 1.0,
        "score": "distance",
        "mask": None,
        "causal": False,
    }


@pytest.mark.parametrize(
    ("change", "error", "name"),
    [
        ({"hq": [[1.0]]}, TypeError, "hq"),
        ({"hk": torch.zeros(1, 2, 3, 4, dtype=torch.int64)}, TypeError, "hk"),
        ({"hv": torch.zeros(2, 3, 4)}, ValueError, "hv"),
        ({"hk": torch.zeros(1, 2, 3, 5)}, ValueError, "hk"),
        ({"hv": torch.zeros(1, 2, 4, 4)}, ValueError, "hv"),
        ({"beta": 1.0}, TypeError, "beta"),
        ({"beta": torch.ones(3, 1, 1)}, ValueError, "beta"),
        ({"beta": torch.ones(2, 1, 1, dtype=torch.int32)}, TypeError, "beta"),
        ({"c": 0.0}, ValueError, "curvature"),
        ({"c": torch.ones(2)}, ValueError, "c "),
        ({"c": "1"}, TypeError, "curvature"),
        ({"score": "dot"}, ValueError, "score"),
        ({"mask": torch.zeros(1, 2, 3, 4, dtype=torch.int64)}, TypeError, "mask"),
        ({"mask": torch.zeros(2, 2, 3, 4)}, ValueError, "mask"),
        ({"mask": [[0.0]]}, TypeError, "mask"),
        ({"causal": 1}, TypeError, "causal"),
    ],
)
def test_bad_input_names_the_argument(
    change: dict[str, object], error: type[Exception], name: str
) -> None:
    kwargs = _good() | change
    with pytest.raises(error, match=name):
        flex_lorentz_attention(**kwargs)  # type: ignore[arg-type]


def test_backward_on_the_cpu_is_refused_clearly() -> None:
    kwargs = _good()
    kwargs["beta"] = torch.ones(2, 1, 1, requires_grad=True)
    with pytest.raises(NotImplementedError, match="no backward pass on cpu"):
        flex_lorentz_attention(**kwargs)  # type: ignore[arg-type]
