"""Containment: every point-valued op returns finite points strictly inside the ball.

(``gyration`` is a rotation of any vector, not a point-valued op: see the gyrogroup tests.)
Inputs cover the whole representable radius, including the outermost shell, and results whose
exact value lies beyond the representable radius (which the ops must pull back inside).
"""

from __future__ import annotations

import math

import mpmath
import pytest
import torch
from conftest import DTYPE_PARAMS, assert_in_ball, note_tensors
from hypothesis import given
from hypothesis import strategies as st

import poincare
from verification import reference as ref
from verification.strategies import (
    curvatures,
    dims,
    directions,
    matrices,
    points,
    scalars,
    tangent_vectors,
    weights,
)

#: Every property runs on both paths of the ops (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("path")

B = 8


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_containment_mobius_add_sub(dtype: torch.dtype, data: st.DataObject) -> None:
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    x = data.draw(points(dtype, d, (B,), c=c), label="x")
    y = data.draw(points(dtype, d, (B,), c=c), label="y")
    note_tensors(x=x, y=y)
    assert_in_ball(poincare.mobius_add(x, y, c=c), c, "mobius_add")
    assert_in_ball(poincare.mobius_sub(x, y, c=c), c, "mobius_sub")
    assert_in_ball(poincare.mobius_add(x, -x, c=c), c, "mobius_add(x, -x)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_containment_scalar_mul(dtype: torch.dtype, data: st.DataObject) -> None:
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    x = data.draw(points(dtype, d, (B,), c=c), label="x")
    r = data.draw(scalars(max_abs=20.0), label="r")
    rs = torch.tensor(
        data.draw(st.lists(scalars(max_abs=20.0), min_size=B, max_size=B)), dtype=dtype
    ).unsqueeze(-1)
    note_tensors(x=x, rs=rs)
    assert_in_ball(poincare.mobius_scalar_mul(r, x, c=c), c, "mobius_scalar_mul (float r)")
    assert_in_ball(poincare.mobius_scalar_mul(rs, x, c=c), c, "mobius_scalar_mul (tensor r)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_containment_matvec(dtype: torch.dtype, data: st.DataObject) -> None:
    c = data.draw(curvatures(), label="c")
    d_in = data.draw(dims(), label="in")
    d_out = data.draw(dims(), label="out")
    m = data.draw(matrices(d_out, d_in, dtype), label="m")
    x = data.draw(points(dtype, d_in, (B,), c=c), label="x")
    note_tensors(m=m, x=x)
    assert_in_ball(poincare.mobius_matvec(m, x, c=c), c, "mobius_matvec")
    assert_in_ball(poincare.mobius_matvec(m * 1e3, x, c=c), c, "mobius_matvec (large m)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_containment_expmap0(dtype: torch.dtype, data: st.DataObject) -> None:
    """expmap0 of tangent vectors up to twice the representable radius (and far beyond)."""
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    r_max = poincare.max_radius(dtype, c=c)
    u = data.draw(directions(d, (B,)), label="u")
    lengths = data.draw(
        st.lists(st.floats(0.0, 2.0 * r_max), min_size=B, max_size=B), label="lengths"
    )
    # The Riemannian length of v at the origin is 2|v|.
    v = (u * torch.tensor(lengths, dtype=torch.float64).unsqueeze(-1) / 2.0).to(dtype)
    note_tensors(v=v)
    assert_in_ball(poincare.expmap0(v, c=c), c, "expmap0")
    assert_in_ball(poincare.expmap0(v * 1e20, c=c), c, "expmap0 (huge v)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_containment_expmap(dtype: torch.dtype, data: st.DataObject) -> None:
    """expmap(x, v) for representable targets and for v stretched up to 3x beyond them."""
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    x = data.draw(points(dtype, d, (B,), c=c), label="x")
    v = data.draw(tangent_vectors(x, c=c), label="v")
    stretch = data.draw(st.floats(1.0, 3.0), label="stretch")
    note_tensors(x=x, v=v)
    assert_in_ball(poincare.expmap(x, v, c=c), c, "expmap")
    assert_in_ball(poincare.expmap(x, v * stretch, c=c), c, "expmap (stretched v)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_containment_project(dtype: torch.dtype, data: st.DataObject) -> None:
    """project of arbitrary finite vectors (inside, on, and far outside the ball)."""
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    u = data.draw(directions(d, (B,)), label="u")
    exps = data.draw(st.lists(st.floats(-30.0, 30.0), min_size=B, max_size=B), label="log2|x|")
    norms = torch.tensor([2.0**e for e in exps], dtype=torch.float64).unsqueeze(-1)
    x = (u * norms / math.sqrt(c)).to(dtype)
    note_tensors(x=x)
    p = poincare.project(x, c=c)
    assert_in_ball(p, c, "project")
    # Points within the representable radius (those the exact projection keeps) are left alone.
    for i, row in enumerate(ref.to_mp(x)):
        if ref.project(row, c, dtype) == row:
            assert bool((p[i] == x[i]).all()), f"project moved point {i}, inside the radius"


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_containment_einstein_midpoint(dtype: torch.dtype, data: st.DataObject) -> None:
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    n = data.draw(st.integers(1, 6), label="n")
    x = data.draw(points(dtype, d, (B, n), c=c), label="x")
    w = data.draw(weights((B, n), dtype), label="w")
    note_tensors(x=x, w=w)
    assert_in_ball(poincare.einstein_midpoint(x, w, c=c), c, "einstein_midpoint")
    assert_in_ball(poincare.einstein_midpoint(x, c=c), c, "einstein_midpoint (no weights)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_containment_conversions(dtype: torch.dtype, data: st.DataObject) -> None:
    """Klein points lie in the Klein ball, and both round trips land strictly inside the ball."""
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    x = data.draw(points(dtype, d, (B,), c=c), label="x")
    note_tensors(x=x)
    k = poincare.poincare_to_klein(x, c=c)
    assert_in_ball(k, c, "poincare_to_klein")
    assert_in_ball(poincare.klein_to_poincare(k, c=c), c, "klein_to_poincare")
    h = poincare.poincare_to_lorentz(x, c=c)
    assert bool(torch.isfinite(h).all()), "poincare_to_lorentz: non-finite"
    assert bool((h[..., 0] > 0).all()), "poincare_to_lorentz: time coordinate not positive"
    assert_in_ball(poincare.lorentz_to_poincare(h, c=c), c, "lorentz_to_poincare")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_project_lands_within_the_outermost_shell(
    dtype: torch.dtype, data: st.DataObject
) -> None:
    """Points on or beyond the boundary are projected onto the outermost shell, never beyond
    it (``sqrt(c)|p| <= 1 - eps/2`` exactly), so that a projected point is its own projection;
    points within the shell come back bit for bit."""
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    u = data.draw(directions(d, (B,)), label="direction")
    factor = data.draw(st.floats(1.0, 1e6), label="|x| sqrt(c)")
    outside = (u * (factor / math.sqrt(c))).to(dtype)
    p = poincare.project(outside, c=c)
    assert_in_ball(p, c, "project")
    shell = 1 - float(torch.finfo(dtype).eps) / 2
    with mpmath.workdps(ref.DPS):
        for row in ref.to_mp(p.double()):
            scaled = ref.norm(row) * mpmath.sqrt(mpmath.mpf(c))
            assert scaled <= shell, "a projected point beyond the outermost shell"
    assert torch.equal(poincare.project(p, c=c), p)
    x = data.draw(points(dtype, d, (B,), c=c), label="x")
    assert torch.equal(poincare.project(x, c=c), x)
