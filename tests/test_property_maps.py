"""Exponential and logarithmic maps: inverse pairs and consistency, in hULP.

A tangent vector at ``x`` is compared through its Riemannian length ``λ_x |v|``. The logarithm is
1-Lipschitz from the ball to the tangent space (negative curvature), so an error of a point
reaches the tangent vector at most unchanged; the exponential stretches *directions* by up to
``sinh(r)/r``, but the float grid at the target is equally coarse there, so the target's hULP
absorbs it. The budget of a composition is 16 hULP of every point touched, with a tangent
vector counted through the point it reaches (see ``conftest.budget``).
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import (
    DTYPE_PARAMS,
    HULP_BOUND,
    assert_points_close,
    assert_scalars_close,
    budget,
    note_tensors,
    rows,
    scalar_budget,
    tangent_ulp_length,
)
from hypothesis import given
from hypothesis import strategies as st

import poincare
from verification import reference as ref
from verification.strategies import (
    curvatures,
    dims,
    nearby_points,
    point_and_tangent,
    points,
)

#: Every property runs on both paths of the ops (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("path")

B = 8
#: Longest geodesic (in units of the curvature radius) of the expmap(logmap) round trip.
ROUNDTRIP_MAX_LENGTH = 3.0


def _draw_points(
    data: st.DataObject, dtype: torch.dtype, n: int
) -> tuple[float, list[torch.Tensor]]:
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    pts = [data.draw(points(dtype, d, (B,), c=c), label=f"p{i}") for i in range(n)]
    note_tensors(**{f"p{i}": p for i, p in enumerate(pts)})
    return c, pts


def _lam(x: torch.Tensor, c: float) -> torch.Tensor:
    """The exact λ_x (mpmath, on the exact values of x) in float64 ``(...)``: the metric is not
    under test here, so it must not add the conformal factor's own error."""
    vals = [float(ref.conformal_factor(r, c)) for r in rows(x, x.dim() - 1)]  # type: ignore[arg-type]
    return torch.tensor(vals, dtype=torch.float64).reshape(x.shape[:-1])


def _riemannian_gap(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    """``λ_x |a - b|`` in float64: the Riemannian length of the difference of two vectors at x."""
    return _lam(x, c) * (a.to(torch.float64) - b.to(torch.float64)).norm(dim=-1)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_expmap0_logmap0_roundtrip(dtype: torch.dtype, data: st.DataObject) -> None:
    """expmap0(logmap0(y)) = y over the full representable radius."""
    c, (y,) = _draw_points(data, dtype, 1)
    v = poincare.logmap0(y, c=c)
    p = poincare.expmap0(v, c=c)
    assert_points_close(p, y, c, budget(c, dtype, (y, y), (y, p)), "expmap0(logmap0(y))")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_logmap0_expmap0_roundtrip(dtype: torch.dtype, data: st.DataObject) -> None:
    """logmap0(expmap0(v)) = v for v whose image is representable; the error is measured as a
    Riemannian length at the origin against the hULP of the intermediate point."""
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    zero = torch.zeros((B, d), dtype=dtype)
    _, v = data.draw(point_and_tangent(dtype, d, (B,), c=c, max_radius=0.0), label="0, v")
    note_tensors(v=v)
    y = poincare.expmap0(v, c=c)
    w = poincare.logmap0(y, c=c)
    gap = _riemannian_gap(zero, w, v, c)
    bound = 2 * HULP_BOUND * tangent_ulp_length(zero, v, c, dtype) + budget(c, dtype, (y,), (y,))
    assert_scalars_close(gap, torch.zeros_like(gap), bound, "logmap0(expmap0(v))")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_logmap_expmap_roundtrip(dtype: torch.dtype, data: st.DataObject) -> None:
    """logmap_x(expmap_x(v)) = v.

    The intermediate ``expmap_x(v)`` may lie far out, where one float step is long; its hULP is
    part of the budget, so at large ``|v|_x`` the identity only holds to the resolution of the
    float grid at the far point (intrinsic: that point carries no more information).
    """
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    x, v = data.draw(point_and_tangent(dtype, d, (B,), c=c), label="x, v")
    note_tensors(x=x, v=v)
    y = poincare.expmap(x, v, c=c)
    w = poincare.logmap(x, y, c=c)
    gap = _riemannian_gap(x, w, v, c)
    bound = 2 * HULP_BOUND * tangent_ulp_length(x, v, c, dtype) + budget(c, dtype, (x, y), (x, y))
    assert_scalars_close(gap, torch.zeros_like(gap), bound, "logmap_x(expmap_x(v))")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_expmap_logmap_roundtrip(dtype: torch.dtype, data: st.DataObject) -> None:
    """expmap_x(logmap_x(y)) = y, for x over the full representable radius and d(x, y) <= 3.

    Intrinsically ill-conditioned for a long geodesic: the float rounding of the intermediate
    tangent vector (and the logarithm's error) is stretched across the geodesic by the
    exponential's Jacobian, ``sinh(sqrt(c) d) / (sqrt(c) d)`` at distance ``d`` (about 28000 at
    ``d = 13.6``, turning one float step of ``v`` into thousands of hULP at ``y``). The distance is
    bounded by ``3 / sqrt(c)`` and that factor (at most 3.34) multiplies the logarithm's budget.
    """
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    x = data.draw(points(dtype, d, (B,), c=c), label="x")
    length = ROUNDTRIP_MAX_LENGTH / c**0.5
    y = data.draw(nearby_points(x, c=c, max_distance=length), label="y")
    note_tensors(x=x, y=y)
    v = poincare.logmap(x, y, c=c)
    p = poincare.expmap(x, v, c=c)
    stretch = math.sinh(ROUNDTRIP_MAX_LENGTH) / ROUNDTRIP_MAX_LENGTH
    log_budget = budget(c, dtype, (x, y, y)) + HULP_BOUND * tangent_ulp_length(x, v, c, dtype)
    exp_budget = budget(c, dtype, (x, p)) + HULP_BOUND * tangent_ulp_length(x, v, c, dtype)
    bound = stretch * log_budget + exp_budget
    assert_points_close(p, y, c, bound, "expmap_x(logmap_x(y))")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_expmap_at_origin(dtype: torch.dtype, data: st.DataObject) -> None:
    """expmap(0, v) = expmap0(v) and logmap(0, y) = logmap0(y)."""
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    zero, v = data.draw(point_and_tangent(dtype, d, (B,), c=c, max_radius=0.0), label="0, v")
    y = data.draw(points(dtype, d, (B,), c=c), label="y")
    note_tensors(v=v, y=y)
    p = poincare.expmap(zero, v, c=c)
    q = poincare.expmap0(v, c=c)
    assert_points_close(p, q, c, budget(c, dtype, (p,), (q,)), "expmap(0, v) vs expmap0(v)")
    a = poincare.logmap(zero, y, c=c)
    b = poincare.logmap0(y, c=c)
    gap = _riemannian_gap(zero, a, b, c)
    bound = budget(c, dtype, (y,), (y,))
    assert_scalars_close(gap, torch.zeros_like(gap), bound, "logmap(0, y) vs logmap0(y)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_logmap_norm_is_distance(dtype: torch.dtype, data: st.DataObject) -> None:
    """|logmap_x(y)|_x = λ_x |logmap_x(y)| = dist(x, y)."""
    c, (x, y) = _draw_points(data, dtype, 2)
    v = poincare.logmap(x, y, c=c)
    lam = _lam(x, c)
    length = lam * v.to(torch.float64).norm(dim=-1)
    dxy = poincare.dist(x, y, c=c).to(torch.float64)
    bound = scalar_budget(c, dtype, [dxy, length], [x, y, x, y, x])
    assert_scalars_close(length, dxy, bound, "|logmap_x(y)|_x vs dist(x, y)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_expmap_travels_its_length(dtype: torch.dtype, data: st.DataObject) -> None:
    """dist(x, expmap_x(v)) = |v|_x = λ_x |v| for representable targets."""
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    x, v = data.draw(point_and_tangent(dtype, d, (B,), c=c), label="x, v")
    note_tensors(x=x, v=v)
    y = poincare.expmap(x, v, c=c)
    lam = _lam(x, c)
    length = lam * v.to(torch.float64).norm(dim=-1)
    dxy = poincare.dist(x, y, c=c).to(torch.float64)
    bound = scalar_budget(c, dtype, [dxy, length], [x, y, x, y]) + HULP_BOUND * (
        tangent_ulp_length(x, v, c, dtype)
    )
    assert_scalars_close(dxy, length, bound, "dist(x, expmap_x(v)) vs |v|_x")
