"""Gyro-equivariance of hyperbolic attention.

Distances are invariant under left gyro-translations ``x -> a ⊕ x`` and the Einstein midpoint is
gyro-covariant, so translating every query, key and value by the same point ``a`` must leave the
attention weights unchanged and translate the output by ``a``:

    weights(a ⊕ q, a ⊕ k, a ⊕ v) = weights(q, k, v)
    out(a ⊕ q, a ⊕ k, a ⊕ v)     = a ⊕ out(q, k, v)
"""

from __future__ import annotations

import pytest
import torch
from conftest import DTYPE_PARAMS, note_tensors
from hypothesis import given
from hypothesis import strategies as st

import poincare
from poincare.nn.functional import hyperbolic_attention
from verification.strategies import FIXED_CURVATURES, points

#: Every property runs on both paths of the ops (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("path")

# Radii (from the origin, before translation) and tolerances per dtype, in units of the curvature
# radius 1/sqrt(c). Translated points reach twice the radius; the scores and the midpoint are
# then still far from the half of the representable radius where the Klein coordinates of the
# aggregation saturate. The temperature is scaled the same way (beta sqrt(c) for the distance,
# beta c for its square), so that every curvature attends with the same weights.
RADIUS = {torch.float32: 2.0, torch.float64: 5.0}
WEIGHT_ATOL = {torch.float32: 2e-4, torch.float64: 1e-8}
DIST_TOL = {torch.float32: 2e-3, torch.float64: 1e-7}


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize("score", ["distance", "squared", "cosh"])
@given(data=st.data())
def test_property_attention_is_gyro_equivariant(
    dtype: torch.dtype, score: str, data: st.DataObject
) -> None:
    c = data.draw(st.sampled_from(FIXED_CURVATURES), label="c")
    heads = data.draw(st.integers(1, 2), label="heads")
    n = data.draw(st.integers(1, 5), label="n")
    m = data.draw(st.integers(1, 5), label="m")
    d = data.draw(st.integers(1, 6), label="d")
    causal = data.draw(st.booleans(), label="is_causal")
    sc = c**0.5
    r = RADIUS[dtype] / sc
    q = data.draw(points(dtype, d, (heads, n), c=c, max_radius=r), label="q")
    k = data.draw(points(dtype, d, (heads, m), c=c, max_radius=r), label="k")
    v = data.draw(points(dtype, d, (heads, m), c=c, max_radius=r), label="v")
    a = data.draw(points(dtype, d, (), c=c, max_radius=r), label="a")
    betas = data.draw(st.lists(st.floats(0.1, 3.0), min_size=heads, max_size=heads), label="beta")
    unit = {"distance": sc, "squared": c, "cosh": 1.0}[score]
    beta = torch.tensor([b * unit for b in betas], dtype=dtype).view(heads, 1, 1)
    note_tensors(q=q, k=k, v=v, a=a)

    def attend(qq: torch.Tensor, kk: torch.Tensor, vv: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, w = hyperbolic_attention(
            qq,
            kk,
            vv,
            c=c,
            beta=beta,
            score=score,  # type: ignore[arg-type]
            is_causal=causal,
            need_weights=True,
        )
        fast, _ = hyperbolic_attention(
            qq,
            kk,
            vv,
            c=c,
            beta=beta,
            score=score,  # type: ignore[arg-type]
            is_causal=causal,
        )
        assert w is not None
        return out, w, fast

    out, w, fast = attend(q, k, v)
    shifted = [poincare.mobius_add(a, t, c=c) for t in (q, k, v)]
    out_t, w_t, fast_t = attend(*shifted)

    torch.testing.assert_close(w_t, w, atol=WEIGHT_ATOL[dtype], rtol=0.0)
    expected = poincare.mobius_add(a, out, c=c)
    for got in (out_t, fast_t):
        err = poincare.dist(got, expected, c=c) * sc
        assert float(err.max()) <= DIST_TOL[dtype], f"d(out_t, a ⊕ out) √c = {float(err.max())}"
    # the fast path (no explicit weights) computes the same attention
    assert float(poincare.dist(fast, out, c=c).max()) * sc <= DIST_TOL[dtype]
