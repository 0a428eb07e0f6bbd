"""Möbius matrix-vector multiplication M ⊗ x, in hULP.

The matrices are drawn first and the points within the radius ``R / max(1, ||M||_2)`` (``R`` the
representable radius), so that the exact result ``M ⊗ x``, at distance
``|M log0(x)| / |log0(x)| · dist0(x) <= ||M||_2 dist0(x)``, is representable.
"""

from __future__ import annotations

import pytest
import torch
from conftest import (
    DTYPE_PARAMS,
    assert_points_close,
    assert_scalars_close,
    budget,
    note_tensors,
    scalar_budget,
)
from hypothesis import given
from hypothesis import strategies as st

import poincare
from verification.strategies import curvatures, dims, matrices, points

#: Every property runs on both paths of the ops (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("path")

B = 8


def _opnorm(m: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(m.to(torch.float64), ord=2))


def _draw(
    data: st.DataObject, dtype: torch.dtype, kinds: tuple[str, ...] | None = None
) -> tuple[float, torch.Tensor, torch.Tensor]:
    c = data.draw(curvatures(), label="c")
    d_in = data.draw(dims(), label="in")
    d_out = data.draw(dims(), label="out")
    if kinds is None:
        m = data.draw(matrices(d_out, d_in, dtype), label="m")
    else:
        m = data.draw(matrices(d_out, d_in, dtype, kinds=kinds), label="m")
    r = poincare.max_radius(dtype, c=c) / max(1.0, _opnorm(m))
    x = data.draw(points(dtype, d_in, (B,), c=c, max_radius=r), label="x")
    note_tensors(m=m, x=x)
    return c, m, x


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_matvec_through_tangent_space(dtype: torch.dtype, data: st.DataObject) -> None:
    """M ⊗ x = expmap0(M logmap0(x)).

    The right side rounds ``logmap0(x)`` and the product ``M v`` (``in·eps`` relative per
    component); both are tangent vectors at the origin whose rounding is a relative one, i.e. a
    few float steps of the target, which the target's hULP covers.
    """
    c, m, x = _draw(data, dtype)
    lhs = poincare.mobius_matvec(m, x, c=c)
    v = poincare.logmap0(x, c=c)
    rhs = poincare.expmap0(v @ m.T, c=c)
    steps = (m.shape[1] + 16) / 16
    bound = budget(c, dtype, (x, lhs), (x, x), (rhs,)) + steps * budget(c, dtype, (rhs,))
    assert_points_close(lhs, rhs, c, bound, "M ⊗ x vs expmap0(M logmap0 x)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_matvec_composes(dtype: torch.dtype, data: st.DataObject) -> None:
    """(M M') ⊗ x = M ⊗ (M' ⊗ x), with ``||M||_2 <= 1``.

    ``y -> M ⊗ y`` stretches a perturbation of ``y`` across its direction by up to
    ``sinh(||M|| d) / sinh(d)``, which is at most 1 when ``||M||_2 <= 1``: the outer matrix is
    rescaled to norm at most 1 (a larger one makes the identity ill-conditioned far out).
    """
    c = data.draw(curvatures(), label="c")
    d0 = data.draw(dims(), label="in")
    d1 = data.draw(dims(), label="mid")
    d2 = data.draw(dims(), label="out")
    inner = data.draw(matrices(d1, d0, dtype), label="m_inner")
    outer = data.draw(matrices(d2, d1, dtype), label="m_outer").to(torch.float64)
    outer = (outer / max(1.0, _opnorm(outer))).to(dtype)
    r = poincare.max_radius(dtype, c=c) / max(1.0, _opnorm(inner))
    x = data.draw(points(dtype, d0, (B,), c=c, max_radius=r), label="x")
    note_tensors(inner=inner, outer=outer, x=x)
    prod = (outer.to(torch.float64) @ inner.to(torch.float64)).to(dtype)
    lhs = poincare.mobius_matvec(prod, x, c=c)
    y = poincare.mobius_matvec(inner, x, c=c)
    rhs = poincare.mobius_matvec(outer, y, c=c)
    steps = (d1 + 16) / 16
    bound = budget(c, dtype, (x, lhs), (x, y), (y, rhs)) + steps * budget(c, dtype, (lhs,))
    assert_points_close(lhs, rhs, c, bound, "(M M') ⊗ x vs M ⊗ (M' ⊗ x)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_matvec_orthogonal_preserves_dist0(
    dtype: torch.dtype, data: st.DataObject
) -> None:
    """dist0(Q ⊗ x) = dist0(x) for Q with orthonormal columns (out >= in)."""
    c = data.draw(curvatures(), label="c")
    d_in = data.draw(dims(), label="in")
    d_out = data.draw(dims(min_dim=d_in), label="out")
    q = data.draw(matrices(d_out, d_in, dtype, kinds=("orthogonal",)), label="q")
    x = data.draw(points(dtype, d_in, (B,), c=c), label="x")
    note_tensors(q=q, x=x)
    y = poincare.mobius_matvec(q, x, c=c)
    a = poincare.dist0(y, c=c).to(torch.float64)
    b = poincare.dist0(x, c=c).to(torch.float64)
    steps = (d_in + 16) / 16
    bound = scalar_budget(c, dtype, [a, b], [x, y]) + steps * budget(c, dtype, (x, y))
    assert_scalars_close(a, b, bound, "dist0(Q ⊗ x) vs dist0(x)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_matvec_zero_rows_give_zero(dtype: torch.dtype, data: st.DataObject) -> None:
    """Zero rows of M give exactly zero coordinates; the zero matrix gives exactly the origin."""
    c, m, x = _draw(data, dtype, kinds=("zero_rows", "zero"))
    y = poincare.mobius_matvec(m, x, c=c)
    zero_rows = (m == 0).all(dim=-1)
    assert bool((y[..., zero_rows] == 0).all()), "a zero row gave a nonzero coordinate"
    z = poincare.mobius_matvec(torch.zeros_like(m), x, c=c)
    assert bool((z == 0).all()), "the zero matrix did not give the origin"
    assert bool(torch.isfinite(y).all())


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_matvec_identity(dtype: torch.dtype, data: st.DataObject) -> None:
    """I ⊗ x = x, and (s I) ⊗ x = s ⊗ x for a scalar s."""
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    s = data.draw(st.integers(-16, 16).map(lambda k: k / 8.0), label="s")
    r = poincare.max_radius(dtype, c=c) / max(1.0, abs(s))
    x = data.draw(points(dtype, d, (B,), c=c, max_radius=r), label="x")
    note_tensors(x=x)
    eye = torch.eye(d, dtype=dtype)
    y = poincare.mobius_matvec(eye, x, c=c)
    assert_points_close(y, x, c, budget(c, dtype, (x, y)), "I ⊗ x")
    a = poincare.mobius_matvec(s * eye, x, c=c)
    b = poincare.mobius_scalar_mul(s, x, c=c)
    assert_points_close(a, b, c, budget(c, dtype, (x, a), (x, b)), f"({s} I) ⊗ x vs {s} ⊗ x")
