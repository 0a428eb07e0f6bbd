"""Gyrogroup laws of Möbius addition, checked in hULP of the points involved.

Left gyrotranslations ``y -> a ⊕ y`` and gyrations are isometries of the ball, so an error made
in an intermediate point reaches the final result unchanged; the budget of each identity is then
16 hULP of every point touched by every op (see ``conftest.budget``).
"""

from __future__ import annotations

import pytest
import torch
from conftest import (
    DTYPE_PARAMS,
    assert_points_close,
    budget,
    eps,
    note_tensors,
)
from hypothesis import given
from hypothesis import strategies as st

import poincare
from verification.strategies import curvatures, dims, directions, points, translated_points

#: Every property runs on both paths of the ops (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("path")

B = 8
RADIUS_FRACTION_GYROASSOC = 1.0 / 3.0


def _setup(
    data: st.DataObject,
    dtype: torch.dtype,
    n: int,
    max_radius: float | None = None,
    c: float | None = None,
) -> tuple[float, list[torch.Tensor]]:
    if c is None:
        c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    pts = [
        data.draw(points(dtype, d, (B,), c=c, max_radius=max_radius), label=f"p{i}")
        for i in range(n)
    ]
    note_tensors(**{f"p{i}": p for i, p in enumerate(pts)})
    return c, pts


def _pair_with_representable_sum(
    data: st.DataObject, dtype: torch.dtype
) -> tuple[float, tuple[torch.Tensor, torch.Tensor]]:
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    a = data.draw(points(dtype, d, (B,), c=c), label="a")
    b = data.draw(translated_points(a, c=c), label="b")
    note_tensors(a=a, b=b)
    return c, (a, b)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_left_identity(dtype: torch.dtype, data: st.DataObject) -> None:
    """0 ⊕ x = x and x ⊕ 0 = x."""
    c, (x,) = _setup(data, dtype, 1)
    zero = torch.zeros_like(x)
    p = poincare.mobius_add(zero, x, c=c)
    assert_points_close(p, x, c, budget(c, dtype, (zero, x, p)), "0 ⊕ x")
    q = poincare.mobius_add(x, zero, c=c)
    assert_points_close(q, x, c, budget(c, dtype, (zero, x, q)), "x ⊕ 0")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_left_inverse(dtype: torch.dtype, data: st.DataObject) -> None:
    """(-x) ⊕ x = 0, and mobius_sub(x, x) = 0."""
    c, (x,) = _setup(data, dtype, 1)
    zero = torch.zeros_like(x)
    p = poincare.mobius_add(-x, x, c=c)
    assert_points_close(p, zero, c, budget(c, dtype, (x, x, p)), "(-x) ⊕ x")
    q = poincare.mobius_sub(x, x, c=c)
    assert_points_close(q, zero, c, budget(c, dtype, (x, x, q)), "x ⊖ x")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_mobius_sub_is_add_of_negation(dtype: torch.dtype, data: st.DataObject) -> None:
    """x ⊖ y = x ⊕ (-y)."""
    c, (x, y) = _setup(data, dtype, 2)
    p = poincare.mobius_sub(x, y, c=c)
    q = poincare.mobius_add(x, -y, c=c)
    assert_points_close(p, q, c, budget(c, dtype, (x, y, p), (x, y, q)), "x ⊖ y vs x ⊕ (-y)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_left_cancellation(dtype: torch.dtype, data: st.DataObject) -> None:
    """(-a) ⊕ (a ⊕ b) = b; the error of a ⊕ b is carried by the isometry y -> (-a) ⊕ y.

    ``b`` is drawn so that ``a ⊕ b`` is representable (else it is projected and ``b`` is lost).
    """
    c, (a, b) = _pair_with_representable_sum(data, dtype)
    ab = poincare.mobius_add(a, b, c=c)
    p = poincare.mobius_add(-a, ab, c=c)
    assert_points_close(p, b, c, budget(c, dtype, (a, b, ab), (a, ab, p)), "(-a) ⊕ (a ⊕ b)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_gyrocommutative(dtype: torch.dtype, data: st.DataObject) -> None:
    """a ⊕ b = gyr[a, b](b ⊕ a); the gyration is an isometry fixing the origin.

    ``a ⊕ b`` (and so ``b ⊕ a``, of the same norm) is drawn representable.
    """
    c, (a, b) = _pair_with_representable_sum(data, dtype)
    ab = poincare.mobius_add(a, b, c=c)
    ba = poincare.mobius_add(b, a, c=c)
    g = poincare.gyration(a, b, ba, c=c)
    bound = budget(c, dtype, (a, b, ab), (a, b, ba), (a, b, ba, g))
    assert_points_close(ab, g, c, bound, "a ⊕ b vs gyr[a,b](b ⊕ a)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_left_gyroassociative(dtype: torch.dtype, data: st.DataObject) -> None:
    """a ⊕ (b ⊕ c) = (a ⊕ b) ⊕ gyr[a, b] c.

    The three points are drawn within a third of the representable radius, so that every sum
    (at most ``dist0(a) + dist0(b) + dist0(c)`` from the origin) is representable and none is
    projected. On the right, the error of ``a ⊕ b`` enters as the *left* operand of the last
    addition, and ``y -> y ⊕ q`` is not an isometry (it turns ``y ⊕ q`` by the gyration
    ``gyr[y, q]``, which depends on ``y``); no case where that amplification exceeds the
    budget's slack has been found, and the budget is the plain sum over the five ops.
    """
    c = data.draw(curvatures(), label="c")
    r = RADIUS_FRACTION_GYROASSOC * poincare.max_radius(dtype, c=c)
    _, (a, b, w) = _setup(data, dtype, 3, max_radius=r, c=c)
    bw = poincare.mobius_add(b, w, c=c)
    lhs = poincare.mobius_add(a, bw, c=c)
    ab = poincare.mobius_add(a, b, c=c)
    gw = poincare.gyration(a, b, w, c=c)
    rhs = poincare.mobius_add(ab, gw, c=c)
    bound = budget(c, dtype, (b, w, bw), (a, bw, lhs), (a, b, ab), (a, b, w, gw), (ab, gw, rhs))
    assert_points_close(lhs, rhs, c, bound, "a ⊕ (b ⊕ c) vs (a ⊕ b) ⊕ gyr[a,b]c")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_gyration_preserves_norm(dtype: torch.dtype, data: st.DataObject) -> None:
    """|gyr[a, b] u| = |u| for any vector u (a gyration is an orthogonal map).

    Any perturbation of ``a`` and ``b`` still gives an orthogonal map, so only the rounding of
    ``u`` and of the output count: the bound is ``32 eps |u|``.
    """
    c, (a, b) = _setup(data, dtype, 2)
    u = data.draw(directions(a.shape[-1], (B,)), label="u")
    scale = data.draw(st.floats(1e-3, 1e3), label="scale")
    u = (u * scale).to(dtype)
    g = poincare.gyration(a, b, u, c=c)
    n_u = u.to(torch.float64).norm(dim=-1)
    n_g = g.to(torch.float64).norm(dim=-1)
    err = (n_g - n_u).abs()
    bound = 32.0 * eps(dtype) * n_u
    assert bool((err <= bound).all()), f"|gyr u| - |u| off by {float((err / bound).max()):.2f}x"


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_gyration_preserves_inner_product(dtype: torch.dtype, data: st.DataObject) -> None:
    """<gyr[a, b] u, gyr[a, b] v> = <u, v>; bound ``64 eps |u| |v|`` (see the norm test)."""
    c, (a, b) = _setup(data, dtype, 2)
    d = a.shape[-1]
    u = data.draw(directions(d, (B,)), label="u").to(dtype)
    v = data.draw(directions(d, (B,)), label="v").to(dtype)
    gu = poincare.gyration(a, b, u, c=c).to(torch.float64)
    gv = poincare.gyration(a, b, v, c=c).to(torch.float64)
    u64, v64 = u.to(torch.float64), v.to(torch.float64)
    err = ((gu * gv).sum(-1) - (u64 * v64).sum(-1)).abs()
    bound = 64.0 * eps(dtype) * u64.norm(dim=-1) * v64.norm(dim=-1)
    assert bool((err <= bound).all()), f"inner product off by {float((err / bound).max()):.2f}x"


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_gyration_trivial(dtype: torch.dtype, data: st.DataObject) -> None:
    """gyr[a, 0] = gyr[0, b] = gyr[a, a] = identity."""
    c, (a, u) = _setup(data, dtype, 2)
    zero = torch.zeros_like(a)
    for name, (p, q) in {"gyr[a,0]": (a, zero), "gyr[0,a]": (zero, a), "gyr[a,a]": (a, a)}.items():
        g = poincare.gyration(p, q, u, c=c)
        assert_points_close(g, u, c, budget(c, dtype, (p, q, u, g)), name)
