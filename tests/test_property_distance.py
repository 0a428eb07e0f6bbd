"""Geodesic distance: metric axioms and invariances, in hULP of the points involved.

A distance ``d`` computed from points ``x, y`` may be off by ``16 (eps·d + ulp(x) + ulp(y))``
(the scalar contract, with ``ulp`` the hyperbolic length of one float step); moving an input
point by ``δ`` moves a distance by at most ``δ`` (triangle inequality), which is how the errors
of intermediate points enter the budgets below.
"""

from __future__ import annotations

import pytest
import torch
from conftest import (
    DTYPE_PARAMS,
    assert_scalars_close,
    budget,
    note_tensors,
    rows,
    scalar_budget,
)
from hypothesis import given
from hypothesis import strategies as st

import poincare
from verification import reference as ref
from verification.strategies import (
    antipodal_pairs,
    curvatures,
    dims,
    matrices,
    nearly_equal_pairs,
    points,
    translated_points,
)

#: Every property runs on both paths of the ops (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("path")

B = 8


def _draw_points(
    data: st.DataObject, dtype: torch.dtype, n: int
) -> tuple[float, list[torch.Tensor]]:
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    pts = [data.draw(points(dtype, d, (B,), c=c), label=f"p{i}") for i in range(n)]
    note_tensors(**{f"p{i}": p for i, p in enumerate(pts)})
    return c, pts


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_dist_symmetric(dtype: torch.dtype, data: st.DataObject) -> None:
    """d(x, y) = d(y, x), for independent, nearly equal and antipodal pairs."""
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    kind = data.draw(st.sampled_from(["independent", "near", "antipodal"]), label="kind")
    if kind == "independent":
        x = data.draw(points(dtype, d, (B,), c=c), label="x")
        y = data.draw(points(dtype, d, (B,), c=c), label="y")
    elif kind == "near":
        x, y = data.draw(nearly_equal_pairs(dtype, d, (B,), c=c), label="x, y")
    else:
        x, y = data.draw(antipodal_pairs(dtype, d, (B,), c=c), label="x, y")
    note_tensors(x=x, y=y)
    a = poincare.dist(x, y, c=c)
    b = poincare.dist(y, x, c=c)
    assert bool((a >= 0).all()), "negative distance"
    bound = 2 * scalar_budget(c, dtype, [a], [x, y])
    assert_scalars_close(a, b, bound, "d(x, y) vs d(y, x)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_dist_zero_on_equal_points(dtype: torch.dtype, data: st.DataObject) -> None:
    """d(x, x) = 0 exactly, dist0(0) = 0 exactly, and d(x, y) > 0 for resolvably distinct x, y."""
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    x, y = data.draw(nearly_equal_pairs(dtype, d, (B,), c=c), label="x, y")
    note_tensors(x=x, y=y)
    assert bool((poincare.dist(x, x, c=c) == 0).all()), "d(x, x) != 0"
    assert bool((poincare.dist0(torch.zeros_like(x), c=c) == 0).all()), "dist0(0) != 0"
    dxy = poincare.dist(x, y, c=c)
    exact = torch.tensor(
        [float(ref.dist(a, b, c)) for a, b in zip(rows(x, 1), rows(y, 1), strict=True)],
        dtype=torch.float64,
    )
    # Distinct points whose exact distance exceeds the error budget (the hULP floor allows an
    # underflow to 0 for points within about eps^2 of each other) are at a positive distance.
    resolvable = exact > scalar_budget(c, dtype, [exact], [x, y])
    assert bool(torch.where(resolvable, dxy > 0, True).all()), "d(x, y) = 0 for x != y"
    assert bool((dxy >= 0).all()), "negative distance"


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_dist_triangle_inequality(dtype: torch.dtype, data: st.DataObject) -> None:
    """d(x, z) <= d(x, y) + d(y, z), up to the three distances' budgets."""
    c, (x, y, z) = _draw_points(data, dtype, 3)
    dxz = poincare.dist(x, z, c=c).to(torch.float64)
    dxy = poincare.dist(x, y, c=c).to(torch.float64)
    dyz = poincare.dist(y, z, c=c).to(torch.float64)
    slack = scalar_budget(c, dtype, [dxz, dxy, dyz], [x, z, x, y, y, z])
    excess = dxz - (dxy + dyz)
    assert bool((excess <= slack).all()), (
        f"triangle inequality violated by {float((excess / slack).max()):.2f}x its budget"
    )


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_dist_gyrotranslation_invariant(dtype: torch.dtype, data: st.DataObject) -> None:
    """d(a ⊕ x, a ⊕ y) = d(x, y): left gyrotranslations are isometries.

    ``x`` and ``y`` are drawn as ``(-a) ⊕ t`` for drawn ``t``, so that ``a ⊕ x`` and ``a ⊕ y``
    are representable (a projected sum would not be an isometric image).
    """
    c, (a,) = _draw_points(data, dtype, 1)
    x = data.draw(translated_points(a, c=c), label="x")
    y = data.draw(translated_points(a, c=c), label="y")
    note_tensors(x=x, y=y)
    ax = poincare.mobius_add(a, x, c=c)
    ay = poincare.mobius_add(a, y, c=c)
    lhs = poincare.dist(ax, ay, c=c).to(torch.float64)
    rhs = poincare.dist(x, y, c=c).to(torch.float64)
    bound = (
        scalar_budget(c, dtype, [lhs, rhs], [ax, ay, x, y])
        + budget(c, dtype, (a, x, ax))
        + budget(c, dtype, (a, y, ay))
    )
    assert_scalars_close(lhs, rhs, bound, "d(a ⊕ x, a ⊕ y) vs d(x, y)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_dist_orthogonal_invariant(dtype: torch.dtype, data: st.DataObject) -> None:
    """d(Qx, Qy) = d(x, y) for an orthogonal Q.

    ``Qx`` is a float matrix product (error at most ``D·eps|x|``, plus ``Q`` itself is orthogonal
    only to rounding), then projected into the ball; each image is allowed ``D + 16`` float steps.
    """
    c, (x, y) = _draw_points(data, dtype, 2)
    d = x.shape[-1]
    q = data.draw(matrices(d, d, dtype, kinds=("orthogonal",)), label="q")
    qx = poincare.project(x @ q.T, c=c)
    qy = poincare.project(y @ q.T, c=c)
    lhs = poincare.dist(qx, qy, c=c).to(torch.float64)
    rhs = poincare.dist(x, y, c=c).to(torch.float64)
    image_steps = (d + 16) / 16
    bound = scalar_budget(c, dtype, [lhs, rhs], [qx, qy, x, y]) + image_steps * (
        budget(c, dtype, (x, qx)) + budget(c, dtype, (y, qy))
    )
    assert_scalars_close(lhs, rhs, bound, "d(Qx, Qy) vs d(x, y)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_pairwise_dist_matches_dist(dtype: torch.dtype, data: st.DataObject) -> None:
    """pairwise_dist(x, y)[..., i, j] = dist(x_i, y_j), and squared=True gives its square."""
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    n = data.draw(st.integers(1, 5), label="n")
    m = data.draw(st.integers(1, 5), label="m")
    x = data.draw(points(dtype, d, (2, n), c=c), label="x")
    y = data.draw(points(dtype, d, (2, m), c=c), label="y")
    note_tensors(x=x, y=y)
    pw = poincare.pairwise_dist(x, y, c=c)
    assert pw.shape == (2, n, m)
    el = poincare.dist(x.unsqueeze(-2), y.unsqueeze(-3), c=c).to(torch.float64)
    xs = x.unsqueeze(-2).expand(2, n, m, d)
    ys = y.unsqueeze(-3).expand(2, n, m, d)
    bound = 2 * scalar_budget(c, dtype, [el], [xs, ys])
    assert_scalars_close(pw, el, bound, "pairwise_dist vs dist")
    sq = poincare.pairwise_dist(x, y, c=c, squared=True).to(torch.float64)
    bound_sq = 2 * el * bound + bound**2
    assert_scalars_close(sq, el**2, bound_sq, "pairwise_dist(squared=True) vs dist**2")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_dist0_is_dist_from_origin(dtype: torch.dtype, data: st.DataObject) -> None:
    """dist0(x) = dist(0, x) = dist(x, 0)."""
    c, (x,) = _draw_points(data, dtype, 1)
    zero = torch.zeros_like(x)
    a = poincare.dist0(x, c=c).to(torch.float64)
    b = poincare.dist(zero, x, c=c).to(torch.float64)
    e = poincare.dist(x, zero, c=c).to(torch.float64)
    bound = 2 * scalar_budget(c, dtype, [a], [x])
    assert_scalars_close(a, b, bound, "dist0(x) vs dist(0, x)")
    assert_scalars_close(a, e, bound, "dist0(x) vs dist(x, 0)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_dist_antipodal_adds_radii(dtype: torch.dtype, data: st.DataObject) -> None:
    """For exactly opposite points ``x = s u`` and ``y = -t u``: d(x, y) = dist0(x) + dist0(y)
    (the geodesic runs through the origin)."""
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    x = data.draw(points(dtype, d, (B,), c=c), label="x")
    r = data.draw(st.lists(st.floats(0.0, 1.0), min_size=B, max_size=B), label="ratio")
    # y = -r * x in float: an exact multiple of x by construction for r a power of two or 1.
    scale = torch.tensor([2.0 ** -round(8 * v) for v in r], dtype=dtype).unsqueeze(-1)
    y = -scale * x
    note_tensors(x=x, y=y)
    dxy = poincare.dist(x, y, c=c).to(torch.float64)
    s = (poincare.dist0(x, c=c) + poincare.dist0(y, c=c).to(x.dtype)).to(torch.float64)
    bound = scalar_budget(c, dtype, [dxy, s, s], [x, y, x, y])
    assert_scalars_close(dxy, s, bound, "d(x, -t x) vs dist0(x) + dist0(-t x)")
